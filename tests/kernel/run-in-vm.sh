#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Run a test program of tests/kernel/ (or run-programs.sh, or a script)
# inside the VM on the debug kernel, where the series must be present: a
# kernel without zero copy fails instead of skipping.
# Usage: run-in-vm.sh PROGRAM [ARGS...]
set -uo pipefail
. "$(dirname "$0")/../harness/lib.sh"

bin=${1:?usage: run-in-vm.sh PROGRAM [ARGS...]}
shift
[ -x "$bin" ] || fail "$bin is not built"
need_kernel debug

"$VM" --kernel debug --timeout "${FUSEZC_VM_TIMEOUT:-1500}" \
	--env FUSEZC_REQUIRE_ZC=1 -- "$bin" "$@"
rc=$?
[ $rc = 0 ] || fail "${bin##*/} $* failed in the VM (exit status $rc)"
echo PASS
