#!/usr/bin/env bash
# Install the evnotify command, its manual pages and its shell completions (generated from the
# command's own definitions): evnotify in $PREFIX/bin, evnotify.1 and evnotify-<command>.1 in
# $PREFIX/share/man/man1, and the completions of bash, zsh and fish where each looks for them:
# $PREFIX/share/bash-completion/completions/evnotify, $PREFIX/share/zsh/site-functions/_evnotify
# and $PREFIX/share/fish/vendor_completions.d/evnotify.fish.
#   scripts/install-user.sh                 (make install-user)
# PREFIX (default /usr/local) and DESTDIR (a staging root) as usual. EVNOTIFY_BIN installs
# that binary instead of building one with cargo.
# The build runs as the calling user, with that user's cargo: run it as yourself with a
# PREFIX you can write; for a system-wide install, build as yourself and install as root
# with EVNOTIFY_BIN (see the README), so that root builds nothing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
prefix=${PREFIX:-/usr/local}
dest=${DESTDIR:-}
bin=${EVNOTIFY_BIN:-}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ -z "$bin" ]; then
	# cargo install puts the binary it has just built into a root of our own, wherever the
	# target directory is (CARGO_TARGET_DIR, build.target-dir) and for whatever target
	# (CARGO_BUILD_TARGET): no guessed path, no stale binary.
	cargo install --locked --path "$repo/user/evnotify-cli" --root "$work/root"
	bin=$work/root/bin/evnotify
fi
"$bin" manpage "$work/man"
completions=(bash:share/bash-completion/completions/evnotify zsh:share/zsh/site-functions/_evnotify
	fish:share/fish/vendor_completions.d/evnotify.fish)
for c in "${completions[@]}"; do
	"$bin" completions "${c%%:*}" >"$work/completion.${c%%:*}"
done
# The pages and completions first, then the binary under a temporary name renamed over the
# old one: an interrupted install leaves no new binary without them, nor a half-written binary.
install -d "$dest$prefix/share/man/man1" "$dest$prefix/bin"
install -m 644 "$work/man"/*.1 "$dest$prefix/share/man/man1/"
for c in "${completions[@]}"; do
	install -D -m 644 "$work/completion.${c%%:*}" "$dest$prefix/${c#*:}"
done
install -m 755 "$bin" "$dest$prefix/bin/.evnotify.new"
mv -f "$dest$prefix/bin/.evnotify.new" "$dest$prefix/bin/evnotify"
echo "installed $dest$prefix/bin/evnotify, $(cd "$work/man" && echo *.1 | wc -w) manual pages in $dest$prefix/share/man/man1, and the completions of bash, zsh and fish"
