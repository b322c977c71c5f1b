#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# vm.harness.exit_status: the guest command's exit status comes back
# (exit 7 -> 7, true -> 0) and its output reaches the host's stdout.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
need_kernel release

out=$(mktemp)
trap 'rm -f "$out"' EXIT

vm_capture "$out" --kernel release --timeout 300 -- sh -c 'echo "to stderr" >&2; exit 7'
[ $rc = 7 ] || fail "exit 7 came back as $rc"
grep -q '^to stderr' "$out" || fail "guest stderr not on the host's stdout"

vm_capture "$out" --kernel release --timeout 300 --env FZC_PROBE="a 'quoted' value" -- \
	sh -c 'echo "probe=$FZC_PROBE cwd=$(pwd)"; true'
[ $rc = 0 ] || fail "true came back as $rc"
grep -qF "probe=a 'quoted' value cwd=$PWD" "$out" ||
	fail "guest stdout, --env or the working directory did not come through"
echo PASS
