#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Inside the VM on the patched debug kernel: mount -t fuse.passthrough_zc
# with zerocopy=required (vm-mount-check.sh), then the passthrough_zc suite
# with -o zerocopy=required: every read must go zero-copy (daemon stats and the
# connection's zerocopy_stats), plus >= 1 GiB of random-range reads checked
# against the source.  The run itself: ../fs-common/suite-in-vm.sh.
# Usage: run-in-vm.sh PYTHON3 PASSTHROUGH_ZC [PYTEST ARGS...]
exec "$(dirname "$0")/../fs-common/suite-in-vm.sh" --kernel debug \
	--bin-env FUSEZC_BIN --env FUSEZC_BIG=1 --pytest --basetemp=/tmp/pzc-vm \
	--pytest test_ops.py --pytest test_io.py "$(dirname "$0")" "$@"
