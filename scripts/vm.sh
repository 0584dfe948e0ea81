#!/usr/bin/env bash
# Boot the test kernel in QEMU with rust_evnotify loaded, run a command (or an
# interactive shell), unload the module, and exit with the command's status.
#
#   scripts/vm.sh [OPTIONS] [--] CMD [ARGS...]
#   scripts/vm.sh [OPTIONS] --shell | --demo
#
#   --add FILE      copy FILE into the guest's /add (on PATH, the working directory); repeatable
#   --timeout SECS  kill the VM after SECS seconds: default 600, none with --shell; 0 = none
#   --kvm           KVM instead of TCG emulation (where KVM works)
#   --shell         an interactive shell on the console instead of CMD: `exit N` ends the run
#                   with status N, Ctrl-A X kills QEMU (Ctrl-A H lists the other keys)
#   --demo          the CLI demo instead of CMD
#   -h, --help      this text and the exit codes
#
#   EVNOTIFY_MODULE_PARAMS  module parameters for the guest's insmod, e.g.
#                   "max_channels=200000 max_user_channels=200000" (set only at load time)
#   EVNOTIFY_VM_MEM  the guest's memory in MB (1024)
#   EVNOTIFY_QEMU_PLUGIN  a TCG plugin with its arguments, for QEMU's -plugin (scripts/profile.sh)
#   EVNOTIFY_KMEMLEAK  the guest's kmemleak file, checked even on a kernel without kmemleak
#                   (for the runner's self-tests; default /sys/kernel/debug/kmemleak)
#
# The guest is a busybox initramfs holding the module, the static user tools
# (evnotify, evnotify-vmtests, evnotify-example, ...) in /bin and any --add FILE
# in /add.  CMD runs as root; its output reaches our stdout (and $EVNOTIFY_OUT/console.log).
# The kernel's own log goes to $EVNOTIFY_OUT/kernel.log and is scanned for splats.
#
# Exit status: 0-199 is CMD's own (a status above 199 is reported as 199); 200 and above are
# the runner's own, listed by --help (scripts/lib.sh defines them).  A kernel splat, a failed
# insmod or module unload, a leak or a kmemleak scan that did not run (on a kernel with
# kmemleak), a guest that never reports and a timeout each fail the run even if CMD passed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
. "$here/lib.sh"
kver_exit=$VM_USAGE
. "$here/env.sh"

usage() {
	sed -n '2,20p' "$0" | cut -c3-
	echo; echo "Exit codes of the runner itself:"
	for c in $(seq "$VM_USAGE" "$VM_LAST"); do echo "  $c  $(vm_fault "$c")"; done
}
bad_usage() {
	{ echo "vm.sh: $*"; echo "usage:"; sed -n '5,6p' "$0" | cut -c2-; echo "(vm.sh --help: the options and exit codes)"; } >&2
	exit "$VM_USAGE"
}

kvm=0 demo=0 shell=0 timeout='' adds=()
while (($#)); do
	case "$1" in
	--kvm) kvm=1; shift ;;
	--demo) demo=1; shift ;;
	--shell) shell=1; shift ;;
	--add)
		(($# >= 2)) && [ -f "$2" ] || bad_usage "--add needs an existing file (got '${2:-}')"
		[[ "$2" != *[[:space:]]* ]] || bad_usage "--add: no spaces in file names (initramfs spec): '$2'"
		adds+=("$(realpath "$2")"); shift 2 ;;
	--timeout)
		(($# >= 2)) && [[ "$2" =~ ^(0|[1-9][0-9]*)$ ]] || bad_usage "--timeout needs a number of seconds"
		timeout=$2; shift 2 ;;
	--) shift; break ;;
	-h|--help) usage; exit 0 ;;
	-*) bad_usage "unknown option $1" ;;
	*) break ;;
	esac
done
if ((demo + shell > 1)) || { ((demo + shell)) && (($#)); }; then
	bad_usage "give one of CMD, --shell and --demo"
fi
if ((demo)); then
	set -- sh -c 'set -e; for c in "info" "ping -n 20" "ping -n 20 --kickfd" "ping -n 5 --burst 100" \
		"timer --period 20ms -n 5" "signal --signo 35 -n 3" "watch --timer 100ms --kick-every 150ms --duration 500ms"; do
		echo "\$ evnotify $c"; evnotify $c; echo; done; echo "\$ evnotify-example"; evnotify-example'
fi
((shell)) || (($#)) || bad_usage "no command given"
# Interactive use has no deadline unless asked; anything else has one.
: "${timeout:=$((shell ? 0 : 600))}"

[ -z "${EVNOTIFY_VM_TIMEOUT:-}" ] || bad_usage "EVNOTIFY_VM_TIMEOUT is gone: use --timeout SECS"
# Words of name=value, where a value is digits, letters, '_', ',', '.' or '-': they go into the
# guest's init script as they are.
params=${EVNOTIFY_MODULE_PARAMS:-}
[[ "$params" != *$'\n'* ]] || bad_usage "EVNOTIFY_MODULE_PARAMS: one line of name=value words"
[[ "$params" =~ ^[[:space:]]*([a-z_][a-z0-9_]*=[A-Za-z0-9_,.-]+[[:space:]]*)*$ ]] ||
	bad_usage "EVNOTIFY_MODULE_PARAMS: give words of name=value (got '$params')"
read -ra words <<<"$params"
params=${words[*]+"${words[*]}"}
# kmemleak's file in the guest: it goes into the init script as it is.
leaks=${EVNOTIFY_KMEMLEAK:-/sys/kernel/debug/kmemleak}
[[ "$leaks" =~ ^/[A-Za-z0-9/_.-]+$ ]] || bad_usage "EVNOTIFY_KMEMLEAK: an absolute path of letters, digits and /_.- (got '$leaks')"
# One run at a time in this checkout (build/ and the builds are shared): a second waits.
lock_checkout
out=${EVNOTIFY_OUT:-$repo/build/vm}
mkdir -p "$out"
# A run that fails before QEMU must not leave the last run's logs to be read as its own.
rm -f "$out/kernel.log" "$out/console.log"
kdir=$("$here/setup.sh") || { echo "vm.sh: setup failed" >&2; exit "$VM_SETUP"; }
# A kernel with kmemleak must scan: without its file, or if it refuses to scan, leaks would go
# unseen, so the run fails ($VM_NOSCAN).
want_leaks=0
if grep -q '^CONFIG_DEBUG_KMEMLEAK=y' "$kdir/.config" || [ -n "${EVNOTIFY_KMEMLEAK:-}" ]; then want_leaks=1; fi
# EVNOTIFY_KO: boot this prebuilt module (the user tools must be built already), as the
# mutation runner does; otherwise build everything first.
ko=${EVNOTIFY_KO:-$repo/rust_evnotify.ko}
if [ -z "${EVNOTIFY_KO:-}" ]; then
	"$here/build.sh" "$kdir" >&2 || { echo "vm.sh: build failed" >&2; exit "$VM_SETUP"; }
fi

# --- initramfs ----------------------------------------------------------------
# Any failure from here to the boot is the runner's, with its own code.
trap 'echo "vm.sh: making the initramfs failed" >&2; exit "$VM_SETUP"' ERR
root=$out/root
rm -rf "$root" && mkdir -p "$root/add"
for f in ${adds[@]+"${adds[@]}"}; do cp "$f" "$root/add/"; done
if ((shell)); then
	# The console's size, so that line editing wraps where the terminal does.
	size=$(stty size 2>/dev/null || echo "24 80")
	run="echo 'vm: rust_evnotify is loaded. exit [N] ends the run with status N; Ctrl-A X kills QEMU.'
	stty rows ${size% *} cols ${size#* }
	setsid -c sh"
	io='</dev/ttyS1 >/dev/ttyS1 2>&1'
else
	run="( $(printf '%q ' "$@") )"
	io='</dev/null >/dev/ttyS1 2>&1'
fi
cat >"$root/init" <<EOF
#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox mount -t tmpfs tmpfs /tmp
/bin/busybox --install -s /bin
export PATH=/add:/bin HOME=/tmp EVNOTIFY_IN_VM=1
report() { printf "\\\\x\$(printf %02x "\$1")" | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null; }
# others: is a process other than init and the kernel's threads still there (not a zombie)?
others() {
	for s in /proc/[0-9]*/status; do
		[ "\$s" = /proc/1/status ] && continue
		st= kt=
		while read -r k v _; do case \$k in State:) st=\$v ;; Kthread:) kt=\$v ;; esac; done 2>/dev/null <"\$s"
		[ "\$kt" = 1 ] || [ "\$st" = Z ] || [ -z "\$st" ] || return 0
	done
	return 1
}
leaks=$leaks
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
# cgroup v2 with the cpu, memory and pids controllers enabled for the root's children, for the
# cgroup tests; a kernel without cgroups has no /sys/fs/cgroup (the tests say so).
[ -d /sys/fs/cgroup ] && mount -t cgroup2 cgroup2 /sys/fs/cgroup &&
	echo "+cpu +memory +pids" >/sys/fs/cgroup/cgroup.subtree_control
# Debug kernel: forget what boot allocated, so only this run's leaks count.
[ -e \$leaks ] && echo clear >\$leaks
# Our output goes to the second serial port, the kernel log stays on the first. Each block
# below opens the port and closes it at its end: a last close waits until every byte has
# left, so the status line is never lost. (A shell that had the port as its terminal hangs
# it up when it exits, hence the second open.)
{
if insmod /lib/modules/rust_evnotify.ko${params:+ $params}; then
	cd /add
	$run
	rc=\$?
else
	echo "vm: insmod failed"; rc=
fi
} $io
{
if [ -z "\$rc" ]; then
	code=$VM_INSMOD
else
	code=\$rc
	if [ \$rc -gt 199 ]; then echo "vm: the command exited \$rc, reported as 199"; code=199; fi
	# Unloading must work once CMD has closed every channel.
	if grep -q '^rust_evnotify ' /proc/modules && ! rmmod rust_evnotify; then
		echo "vm: rmmod rust_evnotify failed after the command (which exited \$rc)"
		code=$VM_RMMOD
	fi
	if [ -e \$leaks ] || [ $want_leaks = 1 ]; then
		# Two scans, as Documentation/dev-tools/kmemleak.rst advises against transient false
		# reports. Each must be accepted: a disabled kmemleak refuses with EPERM and would
		# then report nothing, which is no proof of no leaks.
		if ! { echo scan >\$leaks && sleep 6 && echo scan >\$leaks; } 2>/tmp/kmemleak.err; then
			echo "vm: kmemleak: the scan did not run (\$(cat /tmp/kmemleak.err)): disabled at boot, or by an error of its own (look for 'kmemleak' in the kernel log)"
			[ \$code -lt 200 ] && code=$VM_NOSCAN
		# debugfs reports size 0: copy the report before testing for content.
		elif ! cat \$leaks >/tmp/kmemleak.txt 2>/tmp/kmemleak.err; then
			echo "vm: kmemleak: its report could not be read (\$(cat /tmp/kmemleak.err))"
			[ \$code -lt 200 ] && code=$VM_NOSCAN
		elif [ -s /tmp/kmemleak.txt ]; then
			echo "vm: kmemleak reports leaks:"; head -n 40 /tmp/kmemleak.txt
			[ \$code -lt 200 ] && code=$VM_LEAK
		else
			echo "vm: kmemleak: no leaks"
		fi
	fi
fi
# Processes CMD left behind would hold the port open, and a killed one drops what it has not
# sent yet: end them, and wait (5 s at most) until they have let go.
kill -KILL -1 2>/dev/null
n=0
while others && [ \$n -lt 50 ]; do sleep 0.1; n=\$((n + 1)); done
# The runner takes its exit status from this line, checked against the value reported below.
echo "vm: exit \$code"
} </dev/null >/dev/ttyS1 2>&1
report \$((code & 127))
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
	for b in evnotify evnotify-vmtests evnotify-bench evnotify-fuzz evnotify-kcov; do
		echo "file /bin/$b $repo/user/target/$RUST_TARGET/release/$b 755 0 0"
	done
	for b in evnotify-example evnotify-probe-rtt evnotify-probe-timer; do
		echo "file /bin/$b $repo/build/$b 755 0 0"
	done
	for f in "$root"/add/*; do
		[ -e "$f" ] && echo "file /add/$(basename "$f") $f 755 0 0"
	done
} >"$spec"
"$kdir/usr/gen_init_cpio" "$spec" | gzip -1 >"$out/initramfs.gz"
trap - ERR

# --- boot ---------------------------------------------------------------------
klog=$out/kernel.log
clog=$out/console.log
: >"$clog"
accel=(-machine accel=tcg -cpu max,la57=off)
((kvm)) && accel=(-machine accel=kvm -cpu host)
if ((shell)); then
	# The console and QEMU's monitor share the terminal (Ctrl-A C switches); Ctrl-C goes to the guest.
	console=(-chardev "stdio,id=con,mux=on,signal=off,logfile=$clog" -serial "file:$klog"
		-serial chardev:con -mon chardev=con)
	stdin=/dev/stdin
else
	# No input: QEMU must not read (or take over) the caller's terminal.
	console=(-chardev "stdio,id=con,logfile=$clog" -serial "file:$klog" -serial chardev:con)
	stdin=/dev/null
fi
# The debug kernels leave the TSC alone: 7.2's (KASAN, clang) hangs under TCG when it
# switches to the TSC clocksource, and boots with the HPET.
# The bench kernels keep the TSC: under TCG the clocksource watchdog may find it skewed against
# the emulated HPET minutes into a boot and switch every clock read to the HPET (an emulated
# device read, several µs), part-way through a bench that compares clocks and timers. QEMU
# derives both from the host's clock.
kargs=
[ "${EVNOTIFY_DEBUG:-0}" = 1 ] && kargs=" tsc=unstable"
[ "${EVNOTIFY_BENCH:-0}" = 1 ] && kargs=" tsc=reliable"
plugin=()
[ -z "${EVNOTIFY_QEMU_PLUGIN:-}" ] || plugin=(-plugin "$EVNOTIFY_QEMU_PLUGIN")
start=$SECONDS
set +e
timeout --foreground -k 10 "$timeout" qemu-system-x86_64 "${accel[@]}" ${plugin[@]+"${plugin[@]}"} \
	-smp 2 -m "${EVNOTIFY_VM_MEM:-1024}" -no-reboot -display none -monitor none \
	"${console[@]}" -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
	-kernel "$kdir/arch/x86/boot/bzImage" -initrd "$out/initramfs.gz" \
	-append "console=ttyS0 panic=-1 oops=panic ignore_loglevel printk.time=1 kunit.filter_glob=rust_evnotify* kunit.stats_enabled=2$kargs" <"$stdin"
qrc=$?
set -e

# isa-debug-exit makes QEMU exit with (value << 1) | 1, of which 7 bits survive: the status
# itself is the guest's last "vm: exit N" line, and must agree with them.
status=$(tr -d '\r' <"$clog" | sed -n 's/.*vm: exit \([0-9]\{1,3\}\)$/\1/p' | tail -n1)
if ((qrc == 124 || (qrc == 137 && timeout > 0 && SECONDS - start >= timeout))); then
	echo "vm: timed out after ${timeout}s (--timeout)" >&2
	rc=$VM_TIMEOUT
elif ((qrc & 1)) && [ -n "$status" ] && (((status & 127) == qrc >> 1)); then
	rc=$status
else
	echo "vm: the guest did not report an exit status (qemu exited $qrc)" >&2
	rc=$VM_NOREPORT
fi
splats=$("$here/splats.sh" "$klog" || true)
if [ -n "$splats" ]; then
	echo "vm: kernel splat in $klog:" >&2
	# Not through a pipe: under pipefail, head's early exit would kill echo, and vm.sh with it.
	head -n 40 <<<"$splats" >&2
	((rc < VM_USAGE || rc > VM_SPLAT)) && rc=$VM_SPLAT
fi
exit "$rc"
