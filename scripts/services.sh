#!/bin/bash
# Starts the services the tests talk to when they are not running yet:
# RabbitMQ on 127.0.0.1:5672, Open vSwitch (ovsdb-server and ovs-vswitchd;
# bridges use the userspace datapath where the kernel has no openvswitch
# module) and, with --mariadb, MariaDB on 3306.
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
OVS_CTL=/usr/share/openvswitch/scripts/ovs-ctl
if [ -x "$OVS_CTL" ] && ! ovs-vsctl --timeout=5 show >/dev/null 2>&1; then
    echo "starting Open vSwitch"
    "$OVS_CTL" --no-ovs-vswitchd --system-id=random start >/dev/null
    # No kernel module is loaded: ovs-vswitchd serves netdev bridges without one.
    "$OVS_CTL" --no-ovsdb-server --no-mlockall start >/dev/null 2>&1 || true
    ovs-vsctl --timeout=10 show >/dev/null
fi
if [ "${1:-}" = "--mariadb" ] && ! up 3306; then
    if ! command -v mariadbd >/dev/null 2>&1; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mariadb-server >/dev/null
    fi
    echo "starting mariadb"
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
    wait_port 3306
fi
