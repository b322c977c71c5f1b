#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# harness.missing_kernel: a missing bzImage fails fast with a hint (no VM).
set -uo pipefail
. "$(dirname "$0")/lib.sh"

out=$(mktemp)
trap 'rm -f "$out"' EXIT
vm_capture "$out" --kernel /nonexistent/bzImage -- true
[ $rc = 1 ] || fail "harness exit status $rc, want 1"
grep -q 'build it with make kernel' "$out" || fail "no hint to run make kernel"
echo PASS
