#!/usr/bin/env bash
# make rust-analyzer: writes rust-project.json for the module, against the cached test
# kernel (the kernel's own generator for external modules), so that an editor's
# rust-analyzer resolves `kernel::` and the bindings.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
. "$here/env.sh"
lock_checkout
kdir=${KDIR:-$("$here/setup.sh")}
make -s -C "$kdir" M="$repo" "${KMAKE_VARS[@]}" rust-analyzer
# The kernel's generator gives the module only the kernel's cfgs, not Kbuild's rustflags-y:
# add compat.rs's version cfg (Kbuild sets it below 7.3) so the editor sees what rustc sees.
release=$(cat "$kdir/include/config/kernel.release")
python3 - "$repo/rust-project.json" "$release" <<'PY'
import json, sys
path, release = sys.argv[1], sys.argv[2]
major, minor = (int(x) for x in release.split(".")[:2])
project = json.load(open(path))
if (major, minor) < (7, 3):
    for crate in project["crates"]:
        if crate["root_module"].endswith("rust_evnotify.rs"):
            crate["cfg"].append("evnotify_kernel_before_7_3")
json.dump(project, open(path, "w"), indent=4)
PY
echo "wrote $repo/rust-project.json" >&2
