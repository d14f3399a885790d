#!/bin/sh
# corral's main job on its embedded default: build, start the daemon (state in
# /var/lib/corral, API on /run/corral/corral.sock, no RabbitMQ), import a busybox
# image and launch a container with limits, then show the limits from inside.
#
#   sudo scripts/demo.sh            # leaves the daemon and the container running
#   sudo scripts/demo.sh --clean    # removes the demo container and stops the daemon
set -eu

cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
say() { printf '\n==> %s\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
    echo "error: run as root (containers, cgroups and mounts need it)" >&2
    exit 1
fi

bin=target/release/corral
sock=/run/corral/corral.sock

if [ "${1:-}" = "--clean" ]; then
    "$bin" delete --force demo 2>/dev/null || true
    [ -f /run/corral/daemon.pid ] && kill "$(cat /run/corral/daemon.pid)" 2>/dev/null || true
    echo "demo removed"
    exit 0
fi

say "installing runc, busybox-static and build tools (apt-get, if missing)"
scripts/install-deps.sh

say "building corral (cargo build --release)"
cargo build --release --quiet
install -m 0755 "$bin" /usr/local/bin/corral

if ! "$bin" status >/dev/null 2>&1; then
    say "starting the daemon on the embedded default (log: /var/log/corral.log)"
    mkdir -p /run/corral
    nohup "$bin" daemon >>/var/log/corral.log 2>&1 &
    echo $! >/run/corral/daemon.pid
    i=0
    until [ -S "$sock" ] && "$bin" status >/dev/null 2>&1; do
        i=$((i + 1))
        if [ "$i" -gt 100 ]; then
            echo "error: the daemon did not start; see /var/log/corral.log" >&2
            tail -n 20 /var/log/corral.log >&2
            exit 1
        fi
        sleep 0.1
    done
else
    say "the daemon is already running on $sock"
fi
"$bin" status

if ! "$bin" image info busybox >/dev/null 2>&1; then
    say "building a busybox root tarball and importing it as 'busybox'"
    tmp=$(mktemp -d)
    openstack/images/build-busybox-rootfs.sh "$tmp/busybox.tar.gz"
    "$bin" image import "$tmp/busybox.tar.gz" --alias busybox
    rm -rf "$tmp"
fi
"$bin" image list

"$bin" delete --force demo >/dev/null 2>&1 || true
say "launching 'demo': corral launch busybox demo --cpus 0.5 --memory 128MiB --pids 100"
"$bin" launch busybox demo --cpus 0.5 --memory 128MiB --pids 100
"$bin" list

say "limits, as the container sees them in its own cgroup"
"$bin" exec demo -- sh -c '
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  echo "memory.max       = $(cat /sys/fs/cgroup/memory.max)"
  echo "cpu.max          = $(cat /sys/fs/cgroup/cpu.max)"
  echo "pids.max         = $(cat /sys/fs/cgroup/pids.max)"
else
  echo "memory limit     = $(cat /sys/fs/cgroup/memory/memory.limit_in_bytes)"
  echo "cpu quota/period = $(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us)/$(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us)"
  echo "pids.max         = $(cat /sys/fs/cgroup/pids/pids.max)"
fi'
say "user namespace (container id, host id, count): root inside is not root outside"
"$bin" exec demo -- cat /proc/self/uid_map
say "console log (what init printed)"
"$bin" console-log demo
uuid=$("$bin" info demo --format json | sed -n 's/.*"uuid": "\(.*\)".*/\1/p' | head -n1)
say "the runtime's view: runc --root /run/corral/runc list"
runc --root /run/corral/runc list | grep -E "^ID|$uuid"

cat <<MSG

Done. The daemon and the container 'demo' keep running:
  corral list | corral exec demo -- sh | corral stop demo | corral delete --force demo
Remove the demo with: sudo scripts/demo.sh --clean
MSG
