# SPDX-License-Identifier: GPL-2.0-or-later
#
# Thin entry points; the real work is in CMake, kernel/build and tests/vm/run.
#   make            build the user-space code (build/)
#   make kernel     build the patched release and debug kernels (build/kernel/)
#   make check      deps + build + kernels + ctest (what CI runs)
#   make demo       deps + build + zero-copy demo and short benchmark in a VM
#                   (builds the release kernel first: minutes, first run only)
#   make bench      deps + build + release kernel + the benchmarks (read/write, metadata, archive)
#   make deps       install missing Debian packages (needs root)
# `make demo` and `make check` each work as the first command on a fresh
# Debian 12, in either order: each installs what is missing first.

NPROC := $(shell nproc)
DEPS := build-essential cmake pkg-config libfuse3-dev fuse3 liburing-dev \
	qemu-system-x86 busybox-static python3-pytest fio gnuplot-nox ccache file \
	libarchive-tools archivemount erofs-utils

.PHONY: all kernel check demo bench deps clean

all:
	@command -v cmake >/dev/null && command -v pkg-config >/dev/null || \
		{ echo "make: cmake or pkg-config missing: run 'make deps' (as root) first"; exit 1; }
	cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo
	cmake --build build --parallel $(NPROC)

kernel:
	kernel/build all

# Sequential on purpose (safe under make -j): deps, then code, then kernels.
check:
	$(MAKE) deps
	$(MAKE) all
	$(MAKE) kernel
	cd build && ctest --output-on-failure

# Sequential like check.  tests/bench/demo says up front what it will build
# (the kernel: several minutes the first time) and shows its progress.
demo:
	@echo "make demo: 1) missing packages  2) user space  3) tests/bench/demo:" \
		"release kernel if not built yet (several minutes, first run only), VM demo, short benchmark"
	$(MAKE) deps
	$(MAKE) all
	tests/bench/demo

bench:
	$(MAKE) deps
	$(MAKE) all
	kernel/build release
	tests/bench/run
	tests/bench/meta
	tests/bench/tar

deps:
	@missing=$$(for p in $(DEPS); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | \
			grep -q '^install ok installed$$' || echo $$p; \
	done); \
	if [ -z "$$missing" ]; then echo "deps: all installed"; exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then \
		echo "deps: missing:" $$missing; \
		echo "deps: run as root (sudo make deps), or: sudo apt-get install" $$missing; \
		exit 1; \
	fi; \
	echo "deps: installing" $$missing "(apt-get; a minute or more on a fresh machine)"; \
	apt-get update && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y --no-install-recommends $$missing

# The kernel images come back from ~/.cache/fuse-zc on the next `make kernel`.
clean:
	rm -rf build
