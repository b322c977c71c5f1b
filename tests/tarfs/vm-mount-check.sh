#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Inside the VM: `mount -t fuse.tarfs_zc ARCHIVE MNT -o zerocopy=required`
# through mount.fuse3, a member at an unaligned offset read and checked, and
# the connection's zerocopy_stats showing its bytes went zero copy
# (../fs-common/zc-mount-check.sh).
# Usage (as root in the guest): vm-mount-check.sh TARFS_ZC
set -eu
bin=${1:?usage: vm-mount-check.sh TARFS_ZC}
src=$(mktemp -d) ar=$(mktemp --suffix=.tar)
trap 'rm -rf "$src" "$ar"' EXIT

printf 'x' >"$src/small"	# the data member after it starts at 1536, not a page
dd if=/dev/urandom of="$src/data" bs=1M count=16 status=none
printf 'tail' >>"$src/data"	# and ends inside a page
tar -cf "$ar" -C "$src" small data
sh "$(dirname "$0")/../fs-common/zc-mount-check.sh" "$bin" "$ar" data "$src/data"
