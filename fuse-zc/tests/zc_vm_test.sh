#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# zc_host_test.sh inside the VM on the patched debug kernel, with
# FUSEZC_REQUIRE_ZC=1: zero copy must be offered and used, with no fallback,
# including replies deferred to another request's handler or thread.
# Usage: zc_vm_test.sh ZC_HELLOFS ZC_CHECK
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../../tests/harness/lib.sh"

fs=${1:?usage: zc_vm_test.sh ZC_HELLOFS ZC_CHECK}
check=${2:?usage: zc_vm_test.sh ZC_HELLOFS ZC_CHECK}
[ -x "$fs" ] && [ -x "$check" ] || fail "$fs or $check is not built"
need_kernel debug

"$VM" --kernel debug --timeout "${FUSEZC_VM_TIMEOUT:-1500}" \
	--env FUSEZC_REQUIRE_ZC=1 -- bash "$here/zc_host_test.sh" "$fs" "$check"
rc=$?
[ $rc = 0 ] || fail "zc_host_test.sh failed in the VM (exit status $rc)"
echo PASS
