#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Inside the VM on the patched release kernel: `mount -t fuse.tarfs_zc` with
# zerocopy=required (the connection's zc_read_bytes must show the member's
# bytes went zero copy), then the tarfs_zc suite with -o zerocopy=required
# and FUSEZC_EXPECT_ZC=1 (tar -x comparison, readers, kill/abort loops).
# Usage: run-in-vm.sh PYTHON3 TARFS_ZC [PYTEST ARGS...]
set -uo pipefail
. "$(dirname "$0")/../harness/lib.sh"

py=${1:?usage: run-in-vm.sh PYTHON3 TARFS_ZC}
bin=${2:?usage: run-in-vm.sh PYTHON3 TARFS_ZC}
shift 2
[ -x "$bin" ] || fail "$bin is not built"
need_kernel "${FUSEZC_VM_KERNEL:-release}"

"$VM" --kernel "${FUSEZC_VM_KERNEL:-release}" --timeout "${FUSEZC_VM_TIMEOUT:-1800}" \
	--env FUSEZC_EXPECT_ZC=1 --env "TARFS_BIN=$bin" \
	--env "TARFS_INDEX_TEST=$(dirname "$bin")/tarfs_index_test" -- \
	sh -c 'cd "$1" && sh ./vm-mount-check.sh "$2" && shift 2 && exec "$@"' \
	sh "$REPO/tests/tarfs" "$bin" \
	"$py" -m pytest -q -rs -p no:cacheprovider --basetemp=/tmp/tarfs-vm \
	test_tarfs.py test_abort.py --mode zerocopy=required "$@"
rc=$?
[ $rc = 0 ] || fail "tarfs_zc zerocopy=required suite failed in the VM (exit status $rc)"
echo PASS
