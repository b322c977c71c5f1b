#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# vm.harness.kernel_warning: a command that exits 0 but provokes a kernel
# WARNING (LKDTM) must make the harness fail and name the warning.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
need_kernel release

out=$(mktemp)
trap 'rm -f "$out"' EXIT
vm_capture "$out" --kernel release --timeout 300 -- \
	sh -c 'echo WARNING > /sys/kernel/debug/provoke-crash/DIRECT; echo "command done"; exit 0'

grep -q '^command done' "$out" || fail "the guest command did not run"
[ $rc = 1 ] || fail "harness exit status $rc, want 1 (kernel WARNING must fail the run)"
grep -q '^vm: .*WARNING:' "$out" || fail "the harness message does not name the WARNING line"
echo PASS
