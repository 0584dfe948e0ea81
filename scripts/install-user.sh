#!/usr/bin/env bash
# Install the evnotify command and its manual pages (generated from the command's own
# definitions): evnotify in $PREFIX/bin, evnotify.1 and evnotify-<command>.1 in
# $PREFIX/share/man/man1.
#   scripts/install-user.sh                 (make install-user)
# PREFIX (default /usr/local) and DESTDIR (a staging root) as usual. EVNOTIFY_BIN installs
# that binary instead of building one with cargo.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
prefix=${PREFIX:-/usr/local}
dest=${DESTDIR:-}
bin=${EVNOTIFY_BIN:-}
if [ -z "$bin" ]; then
	(cd "$repo/user" && cargo build --release --locked -p evnotify-cli)
	bin=$repo/user/target/release/evnotify
fi
man=$(mktemp -d)
trap 'rm -rf "$man"' EXIT
"$bin" manpage "$man"
install -D -m 755 "$bin" "$dest$prefix/bin/evnotify"
install -d "$dest$prefix/share/man/man1"
install -m 644 "$man"/*.1 "$dest$prefix/share/man/man1/"
echo "installed $dest$prefix/bin/evnotify and $(cd "$man" && echo *.1 | wc -w) manual pages in $dest$prefix/share/man/man1"
