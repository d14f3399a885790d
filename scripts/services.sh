#!/bin/bash
# Starts the services the tests talk to when they are not running yet:
# RabbitMQ on 127.0.0.1:5672 (and, with --mariadb, MariaDB on 3306).
set -eu
up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {
    for _ in $(seq 1 90); do up "$1" && return 0; sleep 1; done
    echo "error: nothing listens on 127.0.0.1:$1 after 90 s" >&2
    return 1
}
if ! up 5672; then
    if ! command -v rabbitmq-server >/dev/null 2>&1; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
    fi
    echo "starting rabbitmq-server"
    rabbitmq-server -detached
    wait_port 5672
fi
if [ "${1:-}" = "--mariadb" ] && ! up 3306; then
    if ! command -v mariadbd >/dev/null 2>&1; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mariadb-server >/dev/null
    fi
    echo "starting mariadb"
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
    wait_port 3306
fi
