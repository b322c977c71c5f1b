#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Inside the VM on the patched release kernel: `mount -t fuse.tarfs_zc` with
# zerocopy=required (the connection's zc_read_bytes must show the member's
# bytes went zero copy), then the tarfs_zc suite with -o zerocopy=required
# and FUSEZC_EXPECT_ZC=1 (tar -x comparison, readers, kill/abort loops).
# The run itself: ../fs-common/suite-in-vm.sh; tarfs_index_test is taken
# from beside TARFS_ZC (tarutil.index_test()).
# Usage: run-in-vm.sh PYTHON3 TARFS_ZC [PYTEST ARGS...]
exec "$(dirname "$0")/../fs-common/suite-in-vm.sh" --kernel release \
	--bin-env TARFS_BIN --pytest --basetemp=/tmp/tarfs-vm \
	--pytest test_tarfs.py --pytest test_abort.py "$(dirname "$0")" "$@"
