#!/bin/sh
# Build a Debian 12 (bookworm) root tarball with systemd as init and cloud-init,
# the way a distribution cloud image is made, for corral's system containers.
#
#   openstack/images/build-debian-rootfs.sh OUT.tar.gz
#
# debootstrap --variant=minbase from Debian's mirror (MIRROR, default
# http://deb.debian.org/debian), as root.  The result is cached under
# CORRAL_IMAGE_CACHE (default /var/cache/corral-images), keyed by this script's
# content and the mirror, so a second run only copies the cached tarball.
#
# Exit status 3: the mirror cannot be reached (tests skip on it); any other
# failure is an error.
set -eu

out=${1:?usage: $0 OUT.tar.gz}
mirror=${MIRROR:-http://deb.debian.org/debian}
cache=${CORRAL_IMAGE_CACHE:-/var/cache/corral-images}
suite=bookworm
# python3-cffi-backend: cloud-init's python3-cryptography needs it through a virtual
# package debootstrap's resolver does not follow.
packages=systemd-sysv,cloud-init,python3-cffi-backend,iproute2,iputils-ping,netbase,ifupdown,isc-dhcp-client,procps

if ! command -v debootstrap >/dev/null 2>&1; then
    echo "error: debootstrap is missing; install it with: apt-get install -y debootstrap" >&2
    exit 1
fi
if [ "$(id -u)" != 0 ]; then
    echo "error: debootstrap needs root" >&2
    exit 1
fi

key=$( (cat "$0"; echo "$mirror") | sha256sum | cut -c1-16)
cached=$cache/debian-12-$key.tar.gz
if [ -s "$cached" ]; then
    cp "$cached" "$out"
    exit 0
fi

if ! curl -fsS -o /dev/null --max-time 20 "$mirror/dists/$suite/Release"; then
    echo "error: the Debian mirror $mirror cannot be reached" >&2
    exit 3
fi

mkdir -p "$cache"
work=$(mktemp -d "$cache/.build-XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/rootfs

debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || {
    cp "$root/debootstrap/debootstrap.log" "$cache/last-failure.log" 2>/dev/null || true
    tail -n 30 "$work/debootstrap.log" >&2
    echo "error: debootstrap failed" >&2
    exit 1
}

# A container gets its devices from the runtime: corral refuses device nodes
# in an image, and debootstrap made some.
find "$root/dev" -mindepth 1 -delete

chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/log/*.log

echo "debian-12" >"$root/etc/hostname"
# The machine id is made at first boot, one per instance.
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"

# Network: eth0 (a corral network's interface) asks for an address by DHCP.
mkdir -p "$root/etc/network/interfaces.d"
cat >"$root/etc/network/interfaces.d/eth0" <<'EOF'
allow-hotplug eth0
iface eth0 inet dhcp
EOF

# Nothing in a container has a kernel console, a getty's terminal or a clock
# to set: units that wait on these only make the boot degraded or slow.
for unit in getty@tty1.service serial-getty@.service systemd-timesyncd.service \
    console-getty.service; do
    ln -sf /dev/null "$root/etc/systemd/system/$unit"
done

# cloud-init: the config drive corral gives an instance is mounted read-only at
# /var/lib/cloud/seed/config_drive, which cloud-init's ConfigDrive datasource
# reads as its seed directory (no block device labelled config-2 is needed).
cat >"$root/etc/cloud/cloud.cfg.d/90-corral.cfg" <<'EOF'
# corral: the OpenStack config drive is at /var/lib/cloud/seed/config_drive.
datasource_list: [ ConfigDrive, NoCloud, None ]
# minbase has no locales package: update-locale would fail the boot stage.
locale: false
EOF

tar --numeric-owner --xattrs -C "$root" -czf "$work/image.tar.gz" .
mv "$work/image.tar.gz" "$cached"
cp "$cached" "$out"
