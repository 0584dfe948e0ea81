# SPDX-License-Identifier: GPL-2.0
#
# The module alone:     make KDIR=/path/to/rust-enabled/linux   (default: the running kernel)
# The project targets:  make demo | check | stress | bench | mutants | rust-analyzer | vm          (see README.md)
# The evnotify command and its manual pages:  make install-user [PREFIX=/usr/local] [DESTDIR=]

KDIR ?= /lib/modules/`uname -r`/build

# scripts/kbuild.sh passes the rustc the kernel was built with (the first in PATH may differ).
default:
	+scripts/kbuild.sh $(KDIR)

modules_install: default
	+scripts/kbuild.sh $(KDIR) modules_install

clean:
	$(MAKE) -C $(KDIR) M=$$PWD clean

# Everything below uses the cached test kernel that scripts/setup.sh builds.
demo:
	scripts/vm.sh --demo

check:
	scripts/check.sh

vm:
	scripts/vm.sh -- /bin/sh

bench:
	scripts/bench.sh

stress:
	scripts/stress.sh

mutants:
	scripts/mutants.sh

rust-analyzer:
	scripts/rust-analyzer.sh

PREFIX ?= /usr/local
install-user:
	PREFIX="$(PREFIX)" DESTDIR="$(DESTDIR)" scripts/install-user.sh

.PHONY: install-user

.PHONY: default modules_install clean demo check vm bench stress mutants rust-analyzer
