#!/bin/bash
# A real, Keystone-less Nova 34 control plane for corral's end-to-end tests:
# placement, nova-api, nova-conductor, nova-scheduler, glance (file store) and Neutron
# (API under gunicorn, neutron-rpc-server, ML2/openvswitch with neutron-openvswitch-agent
# and neutron-dhcp-agent on Open vSwitch's userspace datapath), from PyPI venvs pinned by
# tox-harness/constraints/.
# Every listener is on 127.0.0.1. RabbitMQ and MariaDB already running on this
# machine are reused (started only when absent); the stack gets its own RabbitMQ
# vhost and its own databases, so it cannot disturb anything else on them.
#
#   scripts/nova-stack.sh up       # idempotent; reuses venvs, DBs and running services
#   scripts/nova-stack.sh status   # exit 0 when every service answers
#   scripts/nova-stack.sh down     # stop what `up` (and the test harness) started
#   scripts/nova-stack.sh clean    # down, drop the stack's databases and vhost, remove
#                                  # configs/state/logs (venvs are kept)
#
# Environment (all optional):
#   CORRAL_STACK_BASE      state dir (venvs, configs, logs, pids)  [/var/tmp/corral-novastack]
#   CORRAL_STACK_PYTHON    interpreter for the venvs (>= 3.11)      [python3]
#   CORRAL_STACK_DB_PREFIX prefix of the database names             [corral_]
#   CORRAL_STACK_VHOST     RabbitMQ vhost                           [corral_nova_test]
#   CORRAL_STACK_PORT_{PLACEMENT,NOVA,GLANCE,NEUTRON}               [18778,18774,19292,19696]
#   CORRAL_STACK_PIP_OPTS  extra pip options (e.g. --no-cache-dir)
#   CORRAL_STACK_AGENT_HOST  `host` of the OVS and DHCP agents: ports bound to it get
#                          vif_type ovs (the harness names a corral host so)  [corral-ovs]
#   CORRAL_STACK_BR_INT    integration bridge of the agents                 [br-int]
#   CORRAL_STACK_BR_TUN    tunnel bridge of the OVS agent                   [br-tun]
#   CORRAL_STACK_PORT_OPENFLOW  the OVS agent's OpenFlow controller port    [16633]
#   CORRAL_STACK_OVSDB     OVSDB the agents use        [unix:/var/run/openvswitch/db.sock]
#   CORRAL_STACK_PCI_ALIAS [pci] alias of nova-api and the scheduler (JSON; the PCI
#                          scenario's "rng" = the virtio-rng 1af4:1044 of the test VMs)
#
# What `up` writes for the tests: $BASE/stack.json (URLs, venv, config paths,
# transport_url) and $BASE/stack.env (the same as shell variables).
# Logs: $BASE/logs/*.log; pids: $BASE/run/*.pid.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BASE=${CORRAL_STACK_BASE:-/var/tmp/corral-novastack}
PY=${CORRAL_STACK_PYTHON:-python3}
DBP=${CORRAL_STACK_DB_PREFIX:-corral_}
VHOST=${CORRAL_STACK_VHOST:-corral_nova_test}
P_PLACEMENT=${CORRAL_STACK_PORT_PLACEMENT:-18778}
P_NOVA=${CORRAL_STACK_PORT_NOVA:-18774}
P_GLANCE=${CORRAL_STACK_PORT_GLANCE:-19292}
P_NEUTRON=${CORRAL_STACK_PORT_NEUTRON:-19696}
PIP_OPTS=${CORRAL_STACK_PIP_OPTS:-}
AGENT_HOST=${CORRAL_STACK_AGENT_HOST:-corral-ovs}
BR_INT=${CORRAL_STACK_BR_INT:-br-int}
BR_TUN=${CORRAL_STACK_BR_TUN:-br-tun}
P_OPENFLOW=${CORRAL_STACK_PORT_OPENFLOW:-16633}
OVSDB=${CORRAL_STACK_OVSDB:-unix:/var/run/openvswitch/db.sock}
PCI_ALIAS=${CORRAL_STACK_PCI_ALIAS:-'{"name": "rng", "vendor_id": "1af4", "product_id": "1044"}'}
# nova 34's default filters (nova/conf/scheduler.py) plus PciPassthroughFilter, so that
# flavors with pci_passthrough:alias land only where nova-compute/corral reported the devices
SCHED_FILTERS="ComputeFilter,ComputeCapabilitiesFilter,ImagePropertiesFilter,ServerGroupAntiAffinityFilter,ServerGroupAffinityFilter,PciPassthroughFilter"
CONSTRAINTS=$ROOT/tox-harness/constraints
WSGI_SRC=$ROOT/tox-harness/nova/stack/wsgi
DB_USER=corral_stack
DB_PASS=corral_stack
DB="mysql+pymysql://$DB_USER:$DB_PASS@127.0.0.1:3306"
RABBIT_URL="rabbit://guest:guest@127.0.0.1:5672/$VHOST"
ROOT_SQL="mariadb -h127.0.0.1 -P3306 -uroot"
# gunicorn-served services: name venv port module threads
GUNICORN_SERVICES="placement:venv:$P_PLACEMENT:placement_app:8
nova-api:venv:$P_NOVA:nova_api_app:8
glance:venv-glance:$P_GLANCE:glance_app:4
neutron:venv-neutron:$P_NEUTRON:neutron_app:4"
# neutron's RPC side and agents (not gunicorn-served)
NEUTRON_DAEMONS="neutron-rpc neutron-ovs-agent neutron-dhcp-agent"
ALL_SERVICES="placement nova-api nova-conductor nova-scheduler glance neutron $NEUTRON_DAEMONS"

T0=$(date +%s.%N)
STEP=start
elapsed() { printf '%.1f' "$(echo "$(date +%s.%N) - $T0" | bc)"; }
log() { echo "[nova-stack $(printf '%6s' "$(elapsed)")s] $*"; }
DIED=0
die() {
    DIED=1
    echo "nova-stack: FAILED during '$STEP' after $(elapsed) s: $*" >&2
    echo "nova-stack: logs are in $BASE/logs" >&2
    exit 1
}
on_exit() {
    local rc=$?
    if [ $rc -ne 0 ] && [ "$DIED" = 0 ]; then
        echo "nova-stack: FAILED during '$STEP' after $(elapsed) s (exit $rc); logs are in $BASE/logs" >&2
    fi
}

# ------------------------------------------------------------------ helpers
pidfile() { echo "$BASE/run/$1.pid"; }

# Alive only if the pid runs and belongs to this stack (guards against pid reuse).
alive() {
    local f pid
    f=$(pidfile "$1")
    [ -s "$f" ] || return 1
    pid=$(cat "$f")
    kill -0 "$pid" 2>/dev/null || return 1
    # gunicorn rewrites its process title, but runs with --chdir $BASE/wsgi
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$BASE" ||
        case "$(readlink "/proc/$pid/cwd" 2>/dev/null)" in "$BASE"/*) true ;; *) false ;; esac
}

# SIGTERM every named process at once, wait up to $STOP_GRACE s (30) for all, then SIGKILL the rest
stop_pidfiles() { # names...
    local n pid pids=() names=()
    for n in "$@"; do
        if alive "$n"; then
            pid=$(cat "$(pidfile "$n")")
            kill "$pid" 2>/dev/null || true
            pids+=("$pid")
            names+=("$n")
        fi
        rm -f "$(pidfile "$n")" "$BASE/run/$n.session"
    done
    local i left
    for _ in $(seq 1 $((${STOP_GRACE:-30} * 5))); do
        left=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && left=1; done
        [ $left = 0 ] && break
        sleep 0.2
    done
    for i in "${!pids[@]}"; do
        if kill -0 "${pids[$i]}" 2>/dev/null; then
            kill -9 "${pids[$i]}" 2>/dev/null || true
            echo "nova-stack: killed -9 ${names[$i]} (pid ${pids[$i]})"
        else
            echo "nova-stack: stopped ${names[$i]} (pid ${pids[$i]})"
        fi
    done
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

http_ok() { curl -sf -o /dev/null --max-time 5 "$1"; }

wait_http() { # url seconds name
    local i
    for i in $(seq 1 $(($2 * 5))); do
        http_ok "$1" && return 0
        sleep 0.2
    done
    die "$3 did not answer on $1 within $2 s; log tail:
$(tail -n 30 "$BASE/logs/$3.log" 2>/dev/null; tail -n 30 "$BASE/logs/$3-gunicorn.log" 2>/dev/null)"
}

rotate() { # file: keep logs bounded across runs
    if [ -f "$1" ] && [ "$(stat -c %s "$1")" -gt $((50 << 20)) ]; then mv -f "$1" "$1.1"; fi
}

# ------------------------------------------------------------------ down / status / clean
do_down() {
    STEP=down
    local f hosts=()
    # test-harness compute hosts first (conftest writes host-<name>.pid), then the services
    for f in "$BASE"/run/host-*.pid; do
        [ -e "$f" ] && hosts+=("$(basename "$f" .pid)")
    done
    [ ${#hosts[@]} -eq 0 ] || stop_pidfiles "${hosts[@]}"
    # the OVS agent ignores SIGTERM for 30 s and more; what it leaves, neutron_net_cleanup removes
    STOP_GRACE=3 stop_pidfiles neutron-dhcp-agent neutron-ovs-agent
    stop_pidfiles nova-scheduler nova-conductor nova-api placement glance neutron neutron-rpc
    neutron_net_cleanup
    rm -f "$BASE/run/config.hash"
}

# What the agents made on this machine: the dnsmasq of every network the DHCP agent
# served (their command lines name this stack's dhcp dir), its qdhcp-<network>
# namespaces (one dhcp dir per network) and the stack's OVS bridges with every port on them.
neutron_net_cleanup() {
    local dhcp=$BASE/state/neutron/dhcp pid d ns
    # the agents' privsep daemons outlive a killed agent
    for pid in $(pgrep -f "^$BASE/venv-neutron/bin/python3? $BASE/venv-neutron/bin/privsep-helper " 2>/dev/null); do
        kill "$pid" 2>/dev/null && echo "nova-stack: stopped privsep-helper (pid $pid)"
    done
    for pid in $(pgrep -x dnsmasq 2>/dev/null); do
        tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$dhcp/" || continue
        kill "$pid" 2>/dev/null && echo "nova-stack: stopped dnsmasq (pid $pid)"
    done
    if [ -d "$dhcp" ]; then
        for d in "$dhcp"/*/; do
            [ -d "$d" ] || continue
            ns=qdhcp-$(basename "$d")
            if ip netns list 2>/dev/null | awk '{print $1}' | grep -qx "$ns"; then
                ip netns delete "$ns" && echo "nova-stack: deleted namespace $ns"
            fi
            rm -rf "$d"
        done
    fi
    if command -v ovs-vsctl >/dev/null && ovs-vsctl --timeout=5 show >/dev/null 2>&1; then
        for d in "$BR_INT" "$BR_TUN"; do
            if ovs-vsctl --timeout=5 br-exists "$d"; then
                # host ends of veth pairs stay behind when their OVS port goes
                for pid in $(ovs-vsctl --timeout=5 list-ports "$d"); do
                    [ "$(ovs-vsctl --timeout=5 get Interface "$pid" type 2>/dev/null)" = '""' ] &&
                        [ -e "/sys/class/net/$pid" ] && ip link delete "$pid" 2>/dev/null
                done
                ovs-vsctl --timeout=5 del-br "$d" && echo "nova-stack: deleted OVS bridge $d"
            fi
        done
    fi
}

do_status() {
    local bad=0 n
    for n in $ALL_SERVICES; do
        if alive "$n"; then
            printf '%-15s running (pid %s)\n' "$n" "$(cat "$(pidfile "$n")")"
        else
            printf '%-15s NOT running\n' "$n"
            bad=1
        fi
    done
    for spec in "placement:$P_PLACEMENT/" "nova-api:$P_NOVA/" "glance:$P_GLANCE/" "neutron:$P_NEUTRON/"; do
        if http_ok "http://127.0.0.1:${spec#*:}"; then
            printf '%-15s http://127.0.0.1:%s answers\n' "${spec%%:*}" "${spec#*:}"
        else
            printf '%-15s http://127.0.0.1:%s does NOT answer\n' "${spec%%:*}" "${spec#*:}"
            bad=1
        fi
    done
    for f in "$BASE"/run/host-*.pid; do
        [ -e "$f" ] || continue
        n=$(basename "$f" .pid)
        alive "$n" && printf '%-15s running (pid %s)\n' "$n" "$(cat "$f")"
    done
    if http_ok "http://127.0.0.1:$P_NEUTRON/"; then
        neutron_agents_alive || bad=1
    fi
    echo "base: $BASE   logs: $BASE/logs"
    return $bad
}

do_clean() {
    do_down
    STEP=clean
    if $ROOT_SQL -e 'select 1' >/dev/null 2>&1; then
        $ROOT_SQL -e "DROP DATABASE IF EXISTS ${DBP}nova_api; DROP DATABASE IF EXISTS ${DBP}nova_cell0;
            DROP DATABASE IF EXISTS ${DBP}nova; DROP DATABASE IF EXISTS ${DBP}placement;
            DROP DATABASE IF EXISTS ${DBP}glance; DROP DATABASE IF EXISTS ${DBP}neutron;"
        echo "nova-stack: dropped the ${DBP}* databases"
    fi
    if rabbitmqctl -q list_vhosts name 2>/dev/null | grep -qx "$VHOST"; then
        rabbitmqctl -q delete_vhost "$VHOST" >/dev/null && echo "nova-stack: deleted vhost $VHOST"
    fi
    rm -rf "$BASE/etc" "$BASE/state" "$BASE/logs" "$BASE/run" "$BASE/wsgi" "$BASE/hosts" \
        "$BASE/stack.json" "$BASE/stack.env" "$BASE/images"
}

# ------------------------------------------------------------------ up
ensure_packages() {
    STEP=packages
    local need=()
    command -v rabbitmq-server >/dev/null || need+=(rabbitmq-server)
    command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] || need+=(mariadb-server)
    command -v mariadb >/dev/null || need+=(mariadb-client)
    command -v curl >/dev/null || need+=(curl)
    command -v bc >/dev/null || need+=(bc)
    command -v dnsmasq >/dev/null || [ -x /usr/sbin/dnsmasq ] || need+=(dnsmasq-base)
    command -v ovs-vsctl >/dev/null || need+=(openvswitch-switch)
    if [ ${#need[@]} -gt 0 ]; then
        log "apt-get install ${need[*]}"
        apt-get update -qq || die "apt-get update failed"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >"$BASE/logs/apt.log" 2>&1 ||
            die "apt-get install ${need[*]} failed; see $BASE/logs/apt.log"
    fi
    "$PY" -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null ||
        die "$PY must be Python >= 3.11 with the venv module (nova 34 needs 3.11); set CORRAL_STACK_PYTHON"
}

# venv dir constraints-file packages... ; skips pip when the stamp matches
ensure_venv() {
    local d=$BASE/$1 c=$CONSTRAINTS/$2 stamp
    shift 2
    stamp=$( (cat "$c"; echo "$*"; "$PY" -V) | sha256sum | cut -c1-16)
    if [ -x "$d/bin/python" ] && [ "$(cat "$d/.corral-stamp" 2>/dev/null)" = "$stamp" ]; then
        return 0
    fi
    rm -rf "$d"
    "$PY" -m venv "$d" || return 1
    # shellcheck disable=SC2086
    "$d/bin/pip" install -q --disable-pip-version-check $PIP_OPTS -c "$c" "$@" || return 1
    echo "$stamp" >"$d/.corral-stamp"
}

ensure_venvs() {
    STEP=venvs
    local pids=() names=(venv venv-glance venv-neutron) i rc=0
    log "venvs (pip; cold about 75 s, warm instant)"
    ensure_venv venv constraints-nova-venv.txt nova==34.0.0 openstack-placement==16.0.0 PyMySQL gunicorn pika \
        >"$BASE/logs/pip-venv.log" 2>&1 &
    pids+=($!)
    ensure_venv venv-glance constraints-glance-venv.txt glance==33.0.0 PyMySQL gunicorn \
        >"$BASE/logs/pip-venv-glance.log" 2>&1 &
    pids+=($!)
    # neutron 29 breaks on SQLAlchemy 2.1 (Port.port_forwardings); the constraints pin 2.0.58
    ensure_venv venv-neutron constraints-neutron-venv.txt neutron==29.0.0 PyMySQL gunicorn \
        >"$BASE/logs/pip-venv-neutron.log" 2>&1 &
    pids+=($!)
    for i in 0 1 2; do
        if ! wait "${pids[$i]}"; then
            echo "nova-stack: pip failed for ${names[$i]}:" >&2
            tail -n 20 "$BASE/logs/pip-${names[$i]}.log" >&2
            rc=1
        fi
    done
    [ $rc -eq 0 ] || die "installing the venvs failed (logs: $BASE/logs/pip-*.log)"
    log "venvs ready"
}

ensure_rabbit() {
    STEP=rabbitmq
    if ! port_open 5672; then
        log "RabbitMQ is not running: rabbitmq-server -detached"
        rabbitmq-server -detached >"$BASE/logs/rabbitmq-start.log" 2>&1 9>&- || die "rabbitmq-server -detached failed"
        for _ in $(seq 1 90); do port_open 5672 && break; sleep 1; done
        port_open 5672 || die "RabbitMQ did not open 127.0.0.1:5672 within 90 s"
    fi
    command -v rabbitmqctl >/dev/null || die "rabbitmqctl is missing (needed to create the vhost $VHOST)"
    if ! rabbitmqctl -q list_vhosts name 2>/dev/null | grep -qx "$VHOST"; then
        rabbitmqctl -q add_vhost "$VHOST" >/dev/null || die "rabbitmqctl add_vhost $VHOST failed"
    fi
    rabbitmqctl -q set_permissions -p "$VHOST" guest '.*' '.*' '.*' >/dev/null ||
        die "rabbitmqctl set_permissions -p $VHOST guest failed"
}

ensure_mariadb() {
    STEP=mariadb
    if ! $ROOT_SQL -e 'select 1' >/dev/null 2>&1; then
        if port_open 3306; then
            die "something listens on 127.0.0.1:3306 but does not accept root without a password"
        fi
        log "MariaDB is not running: starting /usr/sbin/mariadbd"
        start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd 9>&- ||
            die "start-stop-daemon mariadbd failed"
        for _ in $(seq 1 120); do $ROOT_SQL -e 'select 1' >/dev/null 2>&1 && break; sleep 0.5; done
        $ROOT_SQL -e 'select 1' >/dev/null 2>&1 || die "MariaDB did not answer on 127.0.0.1:3306 within 60 s"
    fi
    local sql="" d
    for d in nova_api nova_cell0 nova placement glance neutron; do
        sql+="CREATE DATABASE IF NOT EXISTS \`${DBP}$d\`;"
    done
    for h in 127.0.0.1 localhost; do
        sql+="CREATE USER IF NOT EXISTS '$DB_USER'@'$h' IDENTIFIED BY '$DB_PASS';"
        for d in nova_api nova_cell0 nova placement glance neutron; do
            sql+="GRANT ALL ON \`${DBP}$d\`.* TO '$DB_USER'@'$h';"
        done
    done
    $ROOT_SQL -e "$sql FLUSH PRIVILEGES;" || die "creating the ${DBP}* databases failed"
}

write_configs() {
    STEP=configs
    mkdir -p "$BASE"/{etc/nova,etc/placement,etc/glance,etc/neutron/plugins/ml2,wsgi} \
        "$BASE"/state/{nova,locks,glance/images,glance/staging,glance/tasks,neutron/dhcp}
    cp "$WSGI_SRC"/*.py "$BASE/wsgi/"
    cat >"$BASE/etc/placement/placement.conf" <<EOF
[DEFAULT]
debug = False
log_file = $BASE/logs/placement.log
[api]
auth_strategy = noauth2
[placement_database]
connection = $DB/${DBP}placement?charset=utf8
EOF
    # shared by nova-api/conductor/scheduler/nova-manage and (through conftest) the reference computes
    NOVA_COMMON="transport_url = $RABBIT_URL
my_ip = 127.0.0.1
# default 60 => periodic tasks (incl. the scheduler's host discovery) start up to 60 s late
periodic_fuzzy_delay = 0
# default 180 s; nova-compute's graceful shutdown otherwise takes ~12 s even when idle
graceful_shutdown_timeout = 10"
    SVC_SECTIONS="[placement]
auth_type = admin_token
token = admin
endpoint = http://127.0.0.1:$P_PLACEMENT
region_name = RegionOne

[glance]
endpoint_override = http://127.0.0.1:$P_GLANCE

[neutron]
auth_type = admin_token
token = admin
endpoint = http://127.0.0.1:$P_NEUTRON
endpoint_override = http://127.0.0.1:$P_NEUTRON

[oslo_messaging_notifications]
driver = noop

[vnc]
enabled = False"
    cat >"$BASE/etc/nova/nova.conf" <<EOF
[DEFAULT]
debug = False
$NOVA_COMMON
state_path = $BASE/state/nova

[api]
auth_strategy = keystone

[wsgi]
api_paste_config = $BASE/etc/nova/api-paste.ini

[api_database]
connection = $DB/${DBP}nova_api?charset=utf8

[database]
connection = $DB/${DBP}nova?charset=utf8

[quota]
driver = nova.quota.NoopQuotaDriver

[scheduler]
discover_hosts_in_cells_interval = 2
workers = 1

[filter_scheduler]
enabled_filters = $SCHED_FILTERS

[pci]
# nova-api turns a flavor's pci_passthrough:alias into InstancePCIRequests with it
alias = $PCI_ALIAS

[conductor]
workers = 1

[oslo_concurrency]
lock_path = $BASE/state/locks

$SVC_SECTIONS
EOF
    printf '[DEFAULT]\nlog_file = %s\n' "$BASE/logs/nova-api.log" >"$BASE/etc/nova/nova-api.conf"
    # the snippets conftest reuses for compute hosts
    printf '%s\n' "$NOVA_COMMON" >"$BASE/etc/nova/compute-common.snippet"
    printf '%s\n' "$SVC_SECTIONS" >"$BASE/etc/nova/compute-services.snippet"
    # api-paste.ini: nova 34 ships only the keystone pipeline; swap authtoken for the noauth filter
    "$BASE/venv/bin/python" - "$BASE" <<'EOF'
import sys
b = sys.argv[1]
src = open(b + '/venv/etc/nova/api-paste.ini').read()
assert 'authtoken keystonecontext' in src, 'api-paste.ini has no authtoken keystonecontext pipeline'
src = src.replace('authtoken keystonecontext', 'noauth keystonecontext')
src += '\n[filter:noauth]\npaste.filter_factory = nova_noauth:NoAuth.factory\n'
open(b + '/etc/nova/api-paste.ini', 'w').write(src)
EOF
    cp "$BASE/venv-glance/etc/glance/glance-api-paste.ini" "$BASE/etc/glance/"
    cat >"$BASE/etc/glance/glance-api.conf" <<EOF
[DEFAULT]
log_file = $BASE/logs/glance.log
enabled_backends = fs:file
worker_self_reference_url = http://127.0.0.1:$P_GLANCE
[database]
connection = $DB/${DBP}glance?charset=utf8
[paste_deploy]
# empty flavor => the unauthenticated-context pipeline
flavor =
[glance_store]
default_backend = fs
[fs]
filesystem_store_datadir = $BASE/state/glance/images
[os_glance_staging_store]
filesystem_store_datadir = $BASE/state/glance/staging
[os_glance_tasks_store]
filesystem_store_datadir = $BASE/state/glance/tasks
[oslo_concurrency]
lock_path = $BASE/state/locks
[oslo_policy]
enforce_new_defaults = False
enforce_scope = False
policy_file = $BASE/etc/glance/policy.yaml
EOF
    # the unauthenticated context has no roles: allow every glance rule
    "$BASE/venv-glance/bin/python" - "$BASE/etc/glance/policy.yaml" <<'EOF'
import sys
from glance import policies
names = sorted({r.name for r in policies.list_rules()})
open(sys.argv[1], 'w').write(''.join('"%s": "@"\n' % n for n in names))
EOF
    cp "$BASE/venv-neutron/etc/neutron/api-paste.ini" "$BASE/etc/neutron/"
    cat >"$BASE/etc/neutron/neutron.conf" <<EOF
[DEFAULT]
log_file = $BASE/logs/neutron.log
core_plugin = ml2
service_plugins = router,port_forwarding
auth_strategy = noauth
transport_url = $RABBIT_URL
api_paste_config = $BASE/etc/neutron/api-paste.ini
api_workers = 1
# the API runs under gunicorn; neutron-rpc-server serves the agents (one RPC worker,
# which also takes the agents' state reports)
rpc_workers = 1
rpc_state_report_workers = 0
state_path = $BASE/state/neutron
# port status changes -> nova-api os-server-external-events (network-vif-plugged)
notify_nova_on_port_status_changes = True
notify_nova_on_port_data_changes = True
[nova]
auth_type = admin_token
token = admin
endpoint = http://127.0.0.1:$P_NOVA/v2.1
region_name = RegionOne
[database]
connection = $DB/${DBP}neutron?charset=utf8
[oslo_concurrency]
lock_path = $BASE/state/locks
[oslo_policy]
enforce_new_defaults = False
enforce_scope = False
EOF
    cat >"$BASE/etc/neutron/plugins/ml2/ml2_conf.ini" <<EOF
[ml2]
type_drivers = flat,local,vxlan
# vxlan on one host: no tunnel leaves the machine (the only endpoint is 127.0.0.1)
tenant_network_types = vxlan
mechanism_drivers = openvswitch
extension_drivers = port_security
[ml2_type_vxlan]
vni_ranges = 1000:1999
[securitygroup]
enable_security_group = True
firewall_driver = openvswitch
EOF
    # both agents run as root here: no rootwrap and no sudo ("env" keeps privsep from
    # prefixing sudo; privsep-helper comes from the venv's PATH)
    local agent_common="[agent]
root_helper = env
root_helper_daemon =
[ovs]
integration_bridge = $BR_INT
ovsdb_connection = $OVSDB"
    cat >"$BASE/etc/neutron/openvswitch_agent.ini" <<EOF
[DEFAULT]
host = $AGENT_HOST
$agent_common
tunnel_bridge = $BR_TUN
# no kernel openvswitch module here: the userspace datapath
datapath_type = netdev
local_ip = 127.0.0.1
of_listen_address = 127.0.0.1
of_listen_port = $P_OPENFLOW
[agent]
tunnel_types = vxlan
[securitygroup]
enable_security_group = True
firewall_driver = openvswitch
EOF
    cat >"$BASE/etc/neutron/dhcp_agent.ini" <<EOF
[DEFAULT]
host = $AGENT_HOST
interface_driver = openvswitch
# a veth pair (ns-*/tap*) instead of an OVS internal port moved into the namespace:
# internal ports of the userspace datapath do not work from inside a namespace
ovs_use_veth = True
enable_isolated_metadata = False
dhcp_confs = $BASE/state/neutron/dhcp
$agent_common
EOF
    "$PY" - "$BASE/stack.json" <<EOF
import json, sys
json.dump({
    "base": "$BASE",
    "repo": "$ROOT",
    "venv": "$BASE/venv",
    "nova_conf": "$BASE/etc/nova/nova.conf",
    "compute_common_snippet": "$BASE/etc/nova/compute-common.snippet",
    "compute_services_snippet": "$BASE/etc/nova/compute-services.snippet",
    "logs": "$BASE/logs",
    "run": "$BASE/run",
    "hosts": "$BASE/hosts",
    "transport_url": "$RABBIT_URL",
    "vhost": "$VHOST",
    "db_prefix": "$DBP",
    "db_user": "$DB_USER",
    "db_password": "$DB_PASS",
    "placement_url": "http://127.0.0.1:$P_PLACEMENT",
    "nova_url": "http://127.0.0.1:$P_NOVA/v2.1",
    "glance_url": "http://127.0.0.1:$P_GLANCE",
    "neutron_url": "http://127.0.0.1:$P_NEUTRON",
    "neutron_agent_host": "$AGENT_HOST",
    "br_int": "$BR_INT",
    "br_tun": "$BR_TUN",
    "ovsdb": "$OVSDB",
}, open(sys.argv[1], "w"), indent=2)
EOF
    cat >"$BASE/stack.env" <<EOF
CORRAL_STACK_BASE=$BASE
NOVA_URL=http://127.0.0.1:$P_NOVA/v2.1
PLACEMENT_URL=http://127.0.0.1:$P_PLACEMENT
GLANCE_URL=http://127.0.0.1:$P_GLANCE
NEUTRON_URL=http://127.0.0.1:$P_NEUTRON
NEUTRON_AGENT_HOST=$AGENT_HOST
BR_INT=$BR_INT
TRANSPORT_URL=$RABBIT_URL
NOVA_CONF=$BASE/etc/nova/nova.conf
NOVA_VENV=$BASE/venv
EOF
}

config_hash() {
    (cat "$BASE"/etc/nova/*.conf "$BASE"/etc/nova/api-paste.ini "$BASE"/etc/placement/*.conf \
        "$BASE"/etc/glance/*.conf "$BASE"/etc/neutron/*.conf "$BASE"/etc/neutron/*.ini \
        "$BASE"/etc/neutron/plugins/ml2/*.ini "$BASE"/wsgi/*.py \
        "$BASE"/venv*/.corral-stamp) | sha256sum | cut -c1-16
}

db_sync() {
    STEP=db-sync
    local stamp nm cells
    stamp=$( (config_hash; echo "$DBP") | sha256sum | cut -c1-16)
    if [ "$(cat "$BASE/run/db-synced" 2>/dev/null)" = "$stamp" ] &&
        $ROOT_SQL -N -e "select 1 from ${DBP}nova.instances limit 1; select 1 from ${DBP}nova_api.cell_mappings limit 1;
                         select 1 from ${DBP}placement.resource_providers limit 1; select 1 from ${DBP}glance.images limit 1;
                         select 1 from ${DBP}neutron.ports limit 1" >/dev/null 2>&1; then
        log "databases already synced (stamp $stamp)"
        return 0
    fi
    log "db sync (placement, nova api/cell0/cell1, glance, neutron)"
    "$BASE/venv/bin/placement-manage" --config-file "$BASE/etc/placement/placement.conf" db sync \
        >"$BASE/logs/placement-manage.log" 2>&1 || die "placement-manage db sync failed; see $BASE/logs/placement-manage.log"
    # glance and neutron in the background while nova-manage runs (2 cores)
    "$BASE/venv-glance/bin/glance-manage" --config-file "$BASE/etc/glance/glance-api.conf" db_sync \
        >"$BASE/logs/glance-manage.log" 2>&1 &
    local pg=$!
    "$BASE/venv-neutron/bin/neutron-db-manage" --config-file "$BASE/etc/neutron/neutron.conf" \
        --config-file "$BASE/etc/neutron/plugins/ml2/ml2_conf.ini" upgrade heads >"$BASE/logs/neutron-db-manage.log" 2>&1 &
    local pn=$!
    nm="$BASE/venv/bin/nova-manage --config-file $BASE/etc/nova/nova.conf"
    {
        $nm api_db sync &&
            $nm cell_v2 map_cell0 --database_connection "$DB/${DBP}nova_cell0?charset=utf8"
    } >"$BASE/logs/nova-manage.log" 2>&1 || die "nova-manage api_db sync / map_cell0 failed; see $BASE/logs/nova-manage.log"
    cells=$($nm cell_v2 list_cells --verbose 2>>"$BASE/logs/nova-manage.log") || die "nova-manage cell_v2 list_cells failed"
    if ! echo "$cells" | grep -q ' cell1 '; then
        $nm cell_v2 create_cell --name cell1 --transport-url "$RABBIT_URL" \
            --database_connection "$DB/${DBP}nova?charset=utf8" >>"$BASE/logs/nova-manage.log" 2>&1 ||
            die "nova-manage cell_v2 create_cell failed; see $BASE/logs/nova-manage.log"
    elif ! echo "$cells" | grep ' cell1 ' | grep -qF "$RABBIT_URL"; then
        # cell1 exists with another transport_url (vhost changed): the conductor casts to computes through it
        local uuid
        uuid=$(echo "$cells" | grep ' cell1 ' | awk -F'|' '{gsub(/ /,"",$3); print $3}')
        $nm cell_v2 update_cell --cell_uuid "$uuid" --transport-url "$RABBIT_URL" \
            --database_connection "$DB/${DBP}nova?charset=utf8" >>"$BASE/logs/nova-manage.log" 2>&1 ||
            die "nova-manage cell_v2 update_cell failed; see $BASE/logs/nova-manage.log"
    fi
    $nm db sync >>"$BASE/logs/nova-manage.log" 2>&1 || die "nova-manage db sync failed; see $BASE/logs/nova-manage.log"
    wait $pg || die "glance-manage db_sync failed; see $BASE/logs/glance-manage.log"
    wait $pn || die "neutron-db-manage upgrade heads failed; see $BASE/logs/neutron-db-manage.log"
    echo "$stamp" >"$BASE/run/db-synced"
    log "databases synced"
}

# prints the agents of $AGENT_HOST; true when the OVS and the DHCP agent are both alive
# (and, given a UTC "YYYY-MM-DD HH:MM:SS", (re)started since then: the rows of agents
# that were just stopped stay "alive" for agent_down_time)
neutron_agents_alive() { # [since]
    curl -sf --max-time 10 "http://127.0.0.1:$P_NEUTRON/v2.0/agents?host=$AGENT_HOST" | "$PY" -c '
import json, sys
since = sys.argv[1] if len(sys.argv) > 1 else ""
agents = json.load(sys.stdin)["agents"]
alive = {a["agent_type"] for a in agents if a["alive"] and a["started_at"] >= since}
for a in agents:
    print("%-15s %s on %s: %s" % ("agent", a["agent_type"], a["host"], "alive" if a["alive"] else "DOWN"))
sys.exit(not {"Open vSwitch agent", "DHCP agent"} <= alive)' "$@"
}

start_neutron_daemons() { # names...
    STEP=neutron-agents
    local n=$BASE/etc/neutron name
    for name in "$@"; do
        alive "$name" && continue
        rotate "$BASE/logs/$name.log"
        local cmd=()
        case $name in
            neutron-rpc) cmd=(neutron-rpc-server --config-file "$n/neutron.conf"
                --config-file "$n/plugins/ml2/ml2_conf.ini") ;;
            neutron-ovs-agent) cmd=(neutron-openvswitch-agent --config-file "$n/neutron.conf"
                --config-file "$n/openvswitch_agent.ini") ;;
            neutron-dhcp-agent) cmd=(neutron-dhcp-agent --config-file "$n/neutron.conf"
                --config-file "$n/dhcp_agent.ini") ;;
        esac
        # privsep-helper from the venv; dnsmasq, ip, ovs-vsctl from the system
        PATH=$BASE/venv-neutron/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            setsid nohup "$BASE/venv-neutron/bin/${cmd[0]}" "${cmd[@]:1}" --log-file "$BASE/logs/$name.log" \
            >"$BASE/logs/$name.out" 2>&1 </dev/null 9>&- &
        echo $! >"$(pidfile "$name")"
    done
}

wait_neutron_agents() { # since
    STEP=neutron-agents
    local name
    for _ in $(seq 1 120); do
        if neutron_agents_alive "$1" >/dev/null; then
            log "neutron agents alive on host $AGENT_HOST"
            return 0
        fi
        for name in $NEUTRON_DAEMONS; do
            alive "$name" || die "$name exited; log tail:
$(tail -n 30 "$BASE/logs/$name.log" "$BASE/logs/$name.out" 2>/dev/null)"
        done
        sleep 0.5
    done
    die "the OVS and DHCP agents of host $AGENT_HOST are not alive after 60 s:
$(neutron_agents_alive)
see $BASE/logs/neutron-{rpc,ovs-agent,dhcp-agent}.log"
}

start_services() {
    STEP=start
    local line name venv port mod threads envvar
    export CORRAL_STACK_BASE=$BASE
    for line in $GUNICORN_SERVICES; do
        IFS=: read -r name venv port mod threads <<<"$line"
        alive "$name" && continue
        if port_open "$port"; then
            die "127.0.0.1:$port (for $name) is taken by a process this stack did not start
$(ss -ltnp "sport = :$port" 2>/dev/null | tail -n +2)
stop it, or pick another port with CORRAL_STACK_PORT_*"
        fi
        case $name in
            placement) envvar=OS_PLACEMENT_CONFIG_DIR=$BASE/etc/placement ;;
            nova-api) envvar=OS_NOVA_CONFIG_DIR=$BASE/etc/nova ;;
            glance) envvar=OS_GLANCE_CONFIG_DIR=$BASE/etc/glance ;;
            neutron) envvar=OS_NEUTRON_CONFIG_DIR=$BASE/etc/neutron ;;
        esac
        rotate "$BASE/logs/$name.log"
        rotate "$BASE/logs/$name-requests.jsonl"
        env "$envvar" "$BASE/$venv/bin/gunicorn" --chdir "$BASE/wsgi" -b "127.0.0.1:$port" -w 1 \
            --threads "$threads" -k gthread --timeout 120 --access-logfile "$BASE/logs/$name-access.log" \
            --error-logfile "$BASE/logs/$name-gunicorn.log" --pid "$(pidfile "$name")" -D "$mod:application" 9>&- ||
            die "gunicorn for $name did not start; see $BASE/logs/$name-gunicorn.log"
    done
    for name in conductor scheduler; do
        alive "nova-$name" && continue
        rotate "$BASE/logs/nova-$name.log"
        setsid nohup "$BASE/venv/bin/nova-$name" --config-file "$BASE/etc/nova/nova.conf" \
            --log-file "$BASE/logs/nova-$name.log" >"$BASE/logs/nova-$name.out" 2>&1 </dev/null 9>&- &
        echo $! >"$(pidfile "nova-$name")"
    done
    wait_http "http://127.0.0.1:$P_PLACEMENT/" 60 placement
    wait_http "http://127.0.0.1:$P_NOVA/" 60 nova-api
    wait_http "http://127.0.0.1:$P_GLANCE/" 60 glance
    wait_http "http://127.0.0.1:$P_NEUTRON/" 60 neutron
    # neutron answers / before its app loaded the plugins: probe the call nova makes on every GET /servers/{id}
    curl -sf -o /dev/null --max-time 20 "http://127.0.0.1:$P_NEUTRON/v2.0/ports?device_id=x&fields=security_groups" ||
        die "neutron GET /v2.0/ports fails; log tail:
$(tail -n 30 "$BASE/logs/neutron.log" 2>/dev/null)"
    start_neutron_daemons neutron-rpc
    # conductor and scheduler are ready when their RPC servers consume their topic queues in our vhost
    STEP=rpc-ready
    local q ok
    for _ in $(seq 1 60); do
        ok=1
        # the agents' first calls are lost unless neutron-rpc-server consumes its topics
        for q in conductor scheduler q-plugin q-reports-plugin; do
            rabbitmqctl -q list_queues -p "$VHOST" name consumers 2>/dev/null |
                awk -v q="$q" '$1==q && $2>0 {f=1} END {exit !f}' || ok=0
        done
        [ $ok = 1 ] && break
        for name in nova-conductor nova-scheduler neutron-rpc; do
            alive "$name" || die "$name exited; log tail:
$(tail -n 30 "$BASE/logs/$name.log" "$BASE/logs/$name.out" 2>/dev/null)"
        done
        sleep 1
    done
    [ $ok = 1 ] || die "nova-conductor/nova-scheduler/neutron-rpc do not consume their queues in vhost $VHOST after 60 s; see $BASE/logs/{nova-conductor,nova-scheduler,neutron-rpc}.log"
    log "services answer; starting the neutron agents"
    local since=""
    alive neutron-ovs-agent && alive neutron-dhcp-agent || since=$(date -u -d '-2 seconds' '+%F %T')
    start_neutron_daemons neutron-ovs-agent neutron-dhcp-agent
    wait_neutron_agents "$since"
}

do_up() {
    trap on_exit EXIT
    mkdir -p "$BASE"/{logs,run}
    # (every long-lived child is started with 9>&- so that it does not inherit the lock)
    exec 9>"$BASE/run/lock"
    flock -w 900 9 || die "another nova-stack.sh holds $BASE/run/lock"
    log "base $BASE"
    ensure_packages
    ensure_rabbit &
    local prab=$!
    ensure_mariadb
    wait $prab || exit 1
    ensure_venvs
    write_configs
    local h
    h=$(config_hash)
    if [ "$(cat "$BASE/run/config.hash" 2>/dev/null)" != "$h" ]; then
        for n in $ALL_SERVICES; do
            if alive "$n"; then
                # only the services: compute hosts of a test session that runs now
                # keep running and reconnect (do_down would kill them)
                log "configuration changed: restarting the stack's services"
                STEP=restart
                # the OVS agent ignores SIGTERM for 30 s and more; what it leaves, neutron_net_cleanup removes
    STOP_GRACE=3 stop_pidfiles neutron-dhcp-agent neutron-ovs-agent
                stop_pidfiles nova-scheduler nova-conductor nova-api placement glance neutron neutron-rpc
                rm -f "$BASE/run/config.hash"
                break
            fi
        done
    fi
    db_sync
    start_services
    echo "$h" >"$BASE/run/config.hash"
    STEP=done
    log "stack up: nova-api http://127.0.0.1:$P_NOVA/v2.1, placement :$P_PLACEMENT, glance :$P_GLANCE, neutron :$P_NEUTRON, vhost $VHOST"
    echo "nova-stack: up in $(elapsed) s"
}

case "${1:-}" in
    up) do_up ;;
    down)
        mkdir -p "$BASE/run"
        do_down
        echo "nova-stack: down in $(elapsed) s"
        ;;
    status) do_status ;;
    clean)
        do_clean
        echo "nova-stack: cleaned in $(elapsed) s"
        ;;
    *)
        echo "usage: $0 up|down|status|clean   (base: \$CORRAL_STACK_BASE, default /var/tmp/corral-novastack)" >&2
        exit 2
        ;;
esac
