#!/usr/bin/env bash
# A script of every construct scripts/commands.py must tell apart: testdata/commands-sample.expected
# lists the commands it finds. A comment: notacommand here.
set -euo pipefail
helper() { local x=() y; grep -q a "$1"; }
arr=(notcmd1 notcmd2 "$(cmdinarray)")
LC_ALL=C sort -u <in >out 2>&1
exec 8>"$HOME/lock" {fd}>"$HOME/lock2"
flock 8
if [[ "$a" =~ ^(0|[1-9])$ ]] && ((n > 1)); then echo "$(basename "$f") `uname`"; fi
case $x in
7.2) ksuite=sid ;;
-h|--help) usage | head -n 2 ;;
*) timeout --foreground -k 10 "$t" qemu-system-x86_64 -m 1 ;;
esac
for w in notcmd3 notcmd4; do printf '%s\n' "$w" | tr a b; done
x=$(( $(nproc) + 1 ))
command -v busybox >/dev/null || setsid env FOO=1 python3 - <<'PY'
import notcmd5
print("notcmd6")
PY
cat <<-EOF2 >"$x"
	notcmd7 inside a here-document
	EOF2
sh -c 'notcmd8; guest only' && "$here/script.sh" && scripts/other.sh
/usr/bin/rustc --version
helper file
