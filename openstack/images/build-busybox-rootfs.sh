#!/bin/sh
# Build a small system-container root tarball from the host's busybox-static.
#
#   openstack/images/build-busybox-rootfs.sh OUT.tar.gz
#
# The image boots busybox init, which runs /etc/init.d/rcS once and keeps a
# respawned idle process so the container stays up.  Everything init prints goes
# to the container's console (stdout/stderr), which corral keeps as the console log.
set -eu

out=${1:?usage: $0 OUT.tar[.gz|.xz]}
busybox=${BUSYBOX:-/bin/busybox}

if [ ! -x "$busybox" ] || ! "$busybox" --list >/dev/null 2>&1; then
    echo "error: $busybox is missing; install it with: apt-get install -y busybox-static" >&2
    exit 1
fi
if ldd "$busybox" >/dev/null 2>&1; then
    echo "error: $busybox is dynamically linked; busybox-static is needed" >&2
    exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
mkdir -p "$root"/bin "$root"/sbin "$root"/usr/bin "$root"/usr/sbin "$root"/etc/init.d \
    "$root"/proc "$root"/sys "$root"/dev "$root"/tmp "$root"/root "$root"/run \
    "$root"/var/log "$root"/home
chmod 1777 "$root"/tmp
cp "$busybox" "$root"/bin/busybox
for applet in $("$busybox" --list-full); do
    case "$applet" in
        bin/busybox) continue ;;
    esac
    mkdir -p "$root/$(dirname "$applet")"
    ln -sf /bin/busybox "$root/$applet"
done

cat >"$root"/etc/inittab <<'INITTAB'
::sysinit:/etc/init.d/rcS
::respawn:/bin/sleep 2147483647
::ctrlaltdel:/sbin/reboot
::shutdown:/bin/echo corral-image: shutting down
INITTAB

cat >"$root"/etc/init.d/rcS <<'RCS'
#!/bin/sh
echo "corral-image: booting $(hostname)"
[ -f /etc/hostname ] || hostname > /etc/hostname
# Every interface there at boot asks for an address by DHCP (a corral
# network's dnsmasq answers); in the background, so boot never waits.
for dev in /sys/class/net/*; do
    i=${dev##*/}
    [ "$i" = lo ] || [ ! -e "$dev" ] && continue
    udhcpc -f -i "$i" -s /usr/share/udhcpc/default.script -p "/run/udhcpc.$i.pid" \
        -x "hostname:$(hostname)" -t 5 -T 1 -A 3 >/dev/null 2>&1 &
done
echo "corral-image: init done"
RCS
chmod 0755 "$root"/etc/init.d/rcS

mkdir -p "$root"/usr/share/udhcpc
cat >"$root"/usr/share/udhcpc/default.script <<'DHCP'
#!/bin/sh
# busybox udhcpc's hook: applies a lease (address, default route, DNS).
# Nothing is removed before a lease comes, so static addresses stay.
case "$1" in
    deconfig)
        ip link set "$interface" up
        ;;
    bound)
        ip -4 addr flush dev "$interface" scope global
        ip -4 addr add "$ip/${mask:-24}" dev "$interface"
        ;;
    renew)
        ip -4 addr replace "$ip/${mask:-24}" dev "$interface"
        ;;
esac
case "$1" in
    bound | renew)
        if [ -n "$router" ]; then
            ip -4 route replace default via "${router%% *}" dev "$interface"
        fi
        if [ -n "$dns" ]; then
            { for s in $dns; do echo "nameserver $s"; done; } >/etc/resolv.conf 2>/dev/null
        fi
        echo "udhcpc: $interface has $ip/${mask:-24}" >/dev/console 2>/dev/null
        ;;
esac
exit 0
DHCP
chmod 0755 "$root"/usr/share/udhcpc/default.script

printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root"/etc/passwd
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root"/etc/group
printf 'NAME="corral busybox"\nID=busybox\nVERSION_ID=%s\n' \
    "$("$busybox" | head -n1 | awk '{print $2}')" >"$root"/etc/os-release

case "$out" in
    *.tar.gz | *.tgz) tar --numeric-owner --owner=0 --group=0 -C "$root" -czf "$out" . ;;
    *.tar.xz) tar --numeric-owner --owner=0 --group=0 -C "$root" -cJf "$out" . ;;
    *.tar) tar --numeric-owner --owner=0 --group=0 -C "$root" -cf "$out" . ;;
    *) echo "error: $out must end in .tar, .tar.gz, .tgz or .tar.xz" >&2; exit 1 ;;
esac
echo "built $out ($(du -h "$out" | cut -f1))"
