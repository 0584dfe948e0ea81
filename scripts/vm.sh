#!/usr/bin/env bash
# Boot the test kernel in QEMU with rust_evnotify loaded, run a command, and
# exit with its status.
#
#   scripts/vm.sh [--kvm] [--add FILE]... [--] CMD [ARGS...]
#   scripts/vm.sh --demo
#
# The guest is a busybox initramfs holding the module, the static user tools
# (evnotify, evnotify-vmtests, evnotify-example) in /bin and any --add FILE
# in /add.  CMD runs as root with /add and /bin on PATH; its output reaches our
# stdout.  The kernel's own log goes to $EVNOTIFY_OUT/kernel.log and is
# scanned for splats: any WARNING, BUG, Oops, lockdep report or panic, or a
# failed module unload after CMD, makes the run fail even if CMD passed.
# A guest that never reports an exit code is a failure too.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
. "$here/env.sh"

kvm=0 demo=0 adds=()
while (($#)); do
	case "$1" in
	--kvm) kvm=1; shift ;;
	--demo) demo=1; shift ;;
	--add) adds+=("$(realpath "$2")"); shift 2 ;;
	--) shift; break ;;
	-h|--help) sed -n '2,14p' "$0"; exit 0 ;;
	*) break ;;
	esac
done
if ((demo)); then
	set -- sh -c 'set -e; for c in "info" "ping -n 20" "ping -n 20 --kickfd" "ping -n 5 --burst 100" \
		"timer --period 20ms -n 5" "signal --signo 35 -n 3" "watch --timer 100ms --kick-every 150ms --duration 500ms"; do
		echo "\$ evnotify $c"; evnotify $c; echo; done; echo "\$ evnotify-example"; evnotify-example'
fi
(($#)) || { echo "vm.sh: no command given" >&2; exit 2; }

out=${EVNOTIFY_OUT:-$repo/build/vm}
mkdir -p "$out"
kdir=$("$here/setup.sh")
# EVNOTIFY_KO: boot this prebuilt module (the user tools must be built already), as the
# mutation runner does; otherwise build everything first.
ko=${EVNOTIFY_KO:-$repo/rust_evnotify.ko}
[ -n "${EVNOTIFY_KO:-}" ] || "$here/build.sh" "$kdir" >&2

# --- initramfs ----------------------------------------------------------------
root=$out/root
rm -rf "$root" && mkdir -p "$root/add"
for f in ${adds[@]+"${adds[@]}"}; do cp "$f" "$root/add/"; done
quoted=$(printf '%q ' "$@")
cat >"$root/init" <<EOF
#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox mount -t tmpfs tmpfs /tmp
/bin/busybox --install -s /bin
export PATH=/add:/bin HOME=/tmp EVNOTIFY_IN_VM=1
# Our output goes to the second serial port; the kernel log stays on the first.
exec </dev/null >/dev/ttyS1 2>&1
report() { printf "\\\\x\$(printf %02x "\$1")" | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null; }
leaks=/sys/kernel/debug/kmemleak
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
# Debug kernel: forget what boot allocated, so only this run's leaks count.
[ -e \$leaks ] && echo clear >\$leaks
if ! insmod /lib/modules/rust_evnotify.ko; then echo "vm: insmod failed"; report 125; fi
cd /add
$quoted
rc=\$?
# Unloading must work once CMD has closed every channel.
if grep -q '^rust_evnotify ' /proc/modules && ! rmmod rust_evnotify; then
	echo "vm: rmmod rust_evnotify failed after the command"
	[ \$rc -ne 0 ] || rc=124
fi
if [ -e \$leaks ]; then
	# Two scans, as Documentation/dev-tools/kmemleak.rst advises against transient false reports.
	echo scan >\$leaks; sleep 6; echo scan >\$leaks
	# debugfs reports size 0: copy the report before testing for content.
	cat \$leaks >/tmp/kmemleak.txt
	if [ -s /tmp/kmemleak.txt ]; then
		echo "vm: kmemleak reports leaks:"; head -n 40 /tmp/kmemleak.txt
		[ \$rc -ne 0 ] || rc=123
	else
		echo "vm: kmemleak: no leaks"
	fi
fi
echo "vm: exit \$rc"
report \$rc
reboot -f
EOF
chmod +x "$root/init"
spec=$out/initramfs.spec
{
	echo "dir /bin 755 0 0"
	echo "dir /lib 755 0 0"
	echo "dir /lib/modules 755 0 0"
	echo "dir /add 755 0 0"
	echo "file /init $root/init 755 0 0"
	echo "file /bin/busybox $(command -v busybox) 755 0 0"
	echo "file /lib/modules/rust_evnotify.ko $ko 644 0 0"
	for b in evnotify evnotify-vmtests evnotify-bench evnotify-fuzz; do
		echo "file /bin/$b $repo/user/target/$RUST_TARGET/release/$b 755 0 0"
	done
	echo "file /bin/evnotify-example $repo/build/evnotify-example 755 0 0"
	for f in "$root"/add/*; do
		[ -e "$f" ] && echo "file /add/$(basename "$f") $f 755 0 0"
	done
} >"$spec"
"$kdir/usr/gen_init_cpio" "$spec" | gzip -1 >"$out/initramfs.gz"

# --- boot ---------------------------------------------------------------------
klog=$out/kernel.log
accel=(-machine accel=tcg -cpu max,la57=off)
((kvm)) && accel=(-machine accel=kvm -cpu host)
set +e
timeout --foreground "${EVNOTIFY_VM_TIMEOUT:-1800}" qemu-system-x86_64 "${accel[@]}" \
	-smp 2 -m "${EVNOTIFY_VM_MEM:-1024}" -no-reboot -display none -monitor none \
	-serial "file:$klog" -serial stdio \
	-device isa-debug-exit,iobase=0xf4,iosize=0x04 \
	-kernel "$kdir/arch/x86/boot/bzImage" -initrd "$out/initramfs.gz" \
	-append "console=ttyS0 panic=-1 oops=panic ignore_loglevel printk.time=1 kunit.filter_glob=rust_evnotify*"
qrc=$?
set -e

# isa-debug-exit makes QEMU exit with (rc << 1) | 1; anything else means the
# guest never reported (crash, panic, hang).
if ((qrc & 1)); then rc=$((qrc >> 1)); else
	echo "vm: the guest did not report an exit status (qemu exited $qrc)" >&2
	rc=125
fi
splats=$("$here/splats.sh" "$klog" || true)
if [ -n "$splats" ]; then
	echo "vm: kernel splat in $klog:" >&2
	echo "$splats" | head -n 40 >&2
	((rc)) || rc=126
fi
exit "$rc"
