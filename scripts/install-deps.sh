#!/bin/sh
# Installs what corral needs on Debian 12 (as root): the OCI runtimes, busybox-static
# and debootstrap for the test images, btrfs-progs (the btrfs pool), xfsprogs (project id tests), the disk image tools (qemu-img, zstd; mksquashfs
# and sfdisk for the tests), and the build tools. Safe to run again.
set -eu

need=""
for pkg in runc crun busybox-static debootstrap uidmap xz-utils e2fsprogs btrfs-progs xfsprogs util-linux tar ca-certificates curl gcc pkg-config libssl-dev python3 python3-venv sqlite3 iproute2 nftables iptables openvswitch-switch dnsmasq-base conntrack squashfs-tools qemu-utils fdisk zstd; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need="$need $pkg"
done
if [ -n "$need" ]; then
    echo "installing:$need"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
        :
    else
        echo "error: no Rust toolchain: install rustup (https://rustup.rs) or Debian's cargo" >&2
        exit 1
    fi
fi
