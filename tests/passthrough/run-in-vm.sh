#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Inside the VM on the patched debug kernel: mount -t fuse.passthrough_zc
# with zerocopy=required (vm-mount-check.sh), then the passthrough_zc suite
# with -o zerocopy=required: every read must go zero-copy (daemon stats and the
# connection's zerocopy_stats), plus >= 1 GiB of random-range reads checked
# against the source.
# Usage: run-in-vm.sh PYTHON3 PASSTHROUGH_ZC [PYTEST ARGS...]
set -uo pipefail
. "$(dirname "$0")/../harness/lib.sh"

py=${1:?usage: run-in-vm.sh PYTHON3 PASSTHROUGH_ZC}
bin=${2:?usage: run-in-vm.sh PYTHON3 PASSTHROUGH_ZC}
shift 2
[ -x "$bin" ] || fail "$bin is not built"
need_kernel "${FUSEZC_VM_KERNEL:-debug}"

"$VM" --kernel "${FUSEZC_VM_KERNEL:-debug}" --timeout "${FUSEZC_VM_TIMEOUT:-1800}" \
	--env FUSEZC_EXPECT_ZC=1 --env FUSEZC_BIG=1 --env "FUSEZC_BIN=$bin" -- \
	sh -c 'cd "$1" && sh ./vm-mount-check.sh "$2" && shift 2 && exec "$@"' \
	sh "$REPO/tests/passthrough" "$bin" \
	"$py" -m pytest -q -rs -p no:cacheprovider --basetemp=/tmp/pzc-vm \
	test_ops.py test_io.py --mode zerocopy=required "$@"
rc=$?
[ $rc = 0 ] || fail "passthrough_zc zerocopy=required suite failed in the VM (exit status $rc)"
echo PASS
