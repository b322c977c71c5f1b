#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Run zc_kernel_test inside the VM on the debug kernel, where the series
# must be present: a kernel without zero copy fails instead of skipping.
# Usage: run-in-vm.sh ZC_KERNEL_TEST [ARGS...]
set -uo pipefail
. "$(dirname "$0")/../harness/lib.sh"

bin=${1:?usage: run-in-vm.sh ZC_KERNEL_TEST [ARGS...]}
shift
[ -x "$bin" ] || fail "$bin is not built"
need_kernel debug

"$VM" --kernel debug --timeout "${FUSEZC_VM_TIMEOUT:-1500}" \
	--env FUSEZC_REQUIRE_ZC=1 -- "$bin" "$@"
rc=$?
[ $rc = 0 ] || fail "zc_kernel_test $* failed in the VM (exit status $rc)"
echo PASS
