# SPDX-License-Identifier: GPL-2.0
#
# The module alone:     make KDIR=/path/to/rust-enabled/linux   (default: the running kernel)
# Everything else:      make help                                (see README.md)
#
# Each target's "## " comment is its line in `make help`.

KDIR ?= /lib/modules/`uname -r`/build

# scripts/kbuild.sh passes the rustc the kernel was built with (the first in PATH may differ).
default: ## build rust_evnotify.ko against KDIR (default: the running kernel's build tree)
	+scripts/kbuild.sh $(KDIR)

modules_install: default ## install the module into KDIR's module directory
	+scripts/kbuild.sh $(KDIR) modules_install

# Kbuild cleans when there is a kernel tree; the module's products are removed by name in
# any case, so that clean works without one (or with another kernel than the build used).
clean: ## remove the module's build products and build/ (the VM runs' files and logs)
	@if [ -d "$(KDIR)" ]; then $(MAKE) -C $(KDIR) M=$$PWD clean; \
	else echo "make clean: no kernel tree at KDIR=$(KDIR); removing the module's products by name"; fi
	rm -rf *.ko *.o *.bc *.mod *.mod.c *.rmeta .*.cmd Module.symvers modules.order build

distclean: clean ## clean, and also user/target and rust-project.json (not the kernel cache)
	rm -rf user/target rust-project.json

help: ## list the targets
	@awk -F ':.*## ' '/^[a-z_-]+:.*## / { printf "  %-16s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)
	@echo "The kernel cache (\$${EVNOTIFY_CACHE:-~/.cache/evnotify}) is never removed by make."

# Everything below uses a kernel that scripts/setup.sh builds and caches: the test kernel, but
# the debug kernel for stress and the bench kernel for bench.
demo: ## boot the VM and show kicks and notifications flowing
	scripts/vm.sh --demo

check: ## the whole test suite: lints, host tests, device tests in the VM
	scripts/check.sh

shell: ## an interactive shell in the VM with the module loaded (`exit` leaves)
	scripts/vm.sh --shell

vm: shell ## the same as make shell

bench: ## latency, throughput and scaling in one VM boot (bench/)
	scripts/bench.sh

profile: ## guest instructions per polling round trip, per function, on the bench kernel (build/profile/)
	scripts/profile.sh

stress: ## the reliability run in the KASAN/kmemleak debug kernel
	scripts/stress.sh

mutants: ## seeded bugs, each of which a device test must catch
	scripts/mutants.sh

coverage: ## KCOV coverage of the module by the VM tests, KUnit and the guided fuzzer (build/coverage/)
	scripts/coverage.sh

rust-analyzer: ## write rust-project.json for the module against the cached kernel
	scripts/rust-analyzer.sh

PREFIX ?= /usr/local
install-user: ## install the evnotify command and its manual pages (PREFIX, DESTDIR)
	PREFIX="$(PREFIX)" DESTDIR="$(DESTDIR)" scripts/install-user.sh

.PHONY: default modules_install clean distclean help demo check shell vm bench profile stress mutants coverage rust-analyzer install-user
