# SPDX-License-Identifier: GPL-2.0-or-later
# shellcheck shell=bash
#
# Shared helpers for the VM harness self-tests (sourced, not executed).

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VM="$REPO/tests/vm/run"
BUILD_DIR=${BUILD_DIR:-$REPO/build}
export BUILD_DIR

fail() {
	echo "FAIL: $*"
	exit 1
}

# need_kernel FLAVOUR: skip (77) when the image is missing, but fail under CI.
need_kernel() {
	local img="$BUILD_DIR/kernel/$1/bzImage"
	[ -f "$img" ] && return 0
	if [ "${CI:-}" = true ]; then
		fail "$img missing (CI=true: kernels must be built; run make kernel)"
	fi
	echo "SKIP: $img missing: run make kernel"
	exit 77
}

# vm_capture OUTFILE VM-ARGS...: run the harness, keep its stdout+stderr in
# OUTFILE (also shown), and set $rc to its exit status.
vm_capture() {
	local out=$1
	shift
	"$VM" "$@" > "$out" 2>&1
	rc=$?
	cat "$out"
	echo "harness exit status: $rc"
}
