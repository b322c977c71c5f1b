#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# vm.harness.uname: boot the debug kernel, check uname -r carries the
# series' LOCALVERSION and mount/read a FUSE file system inside the guest.
# Usage: uname.sh HELLO_FUSE_BINARY
set -uo pipefail
. "$(dirname "$0")/lib.sh"

hello=${1:?usage: uname.sh HELLO_FUSE_BINARY}
[ -x "$hello" ] || fail "$hello is not built"
need_kernel debug

"$VM" --kernel debug --timeout 900 -- \
	sh "$REPO/tests/harness/guest-uname.sh" "$hello" -fuse-zc-debug
rc=$?
[ $rc = 0 ] || fail "guest check failed (harness exit status $rc)"
echo PASS
