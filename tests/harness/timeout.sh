#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# vm.harness.timeout: --timeout 20 -- sleep 1000 must exit 124.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
need_kernel release

out=$(mktemp)
trap 'rm -f "$out"' EXIT
start=$SECONDS
vm_capture "$out" --kernel release --timeout 20 -- sleep 1000
[ $rc = 124 ] || fail "harness exit status $rc, want 124"
grep -q '^vm: timed out after 20 s' "$out" || fail "no timeout message"
[ $((SECONDS - start)) -lt 60 ] || fail "took $((SECONDS - start)) s to time out"
echo PASS
