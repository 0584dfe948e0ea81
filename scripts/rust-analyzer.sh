#!/usr/bin/env bash
# make rust-analyzer: writes rust-project.json for the module, against the cached test
# kernel (the kernel's own generator for external modules), so that an editor's
# rust-analyzer resolves `kernel::` and the bindings.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
. "$here/env.sh"
kdir=${KDIR:-$("$here/setup.sh")}
make -s -C "$kdir" M="$repo" "${KMAKE_VARS[@]}" rust-analyzer
echo "wrote $repo/rust-project.json" >&2
