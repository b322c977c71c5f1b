# SPDX-License-Identifier: GPL-2.0-or-later
#
# Thin entry points; the real work is in CMake, kernel/build and tests/vm/run.
#   make            build the user-space code (build/)
#   make kernel     build the patched release and debug kernels (build/kernel/)
#   make check      deps + build + kernels + ctest (what CI runs)
#   make demo       show zero-copy reads against the copy path
#   make bench      run the benchmarks
#   make deps       install missing Debian packages (needs root)

NPROC := $(shell nproc)
DEPS := build-essential cmake pkg-config libfuse3-dev fuse3 liburing-dev \
	qemu-system-x86 busybox-static python3-pytest fio gnuplot-nox ccache

.PHONY: all kernel check demo bench deps clean

all:
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

# demo builds what is missing itself and shows its progress.
demo: all
	tests/bench/demo

bench: all
	kernel/build release
	tests/bench/run

deps:
	@missing=$$(for p in $(DEPS); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | \
			grep -q '^install ok installed$$' || echo $$p; \
	done); \
	if [ -z "$$missing" ]; then echo "deps: all installed"; exit 0; fi; \
	echo "deps: installing" $$missing; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends $$missing

# The kernel images come back from ~/.cache/fuse-zc on the next `make kernel`.
clean:
	rm -rf build
