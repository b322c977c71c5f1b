#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Inside the VM: `mount -t fuse.tarfs_zc ARCHIVE MNT -o zerocopy=required`
# through mount.fuse3, a member at an unaligned offset read and checked, and
# the connection's zerocopy_stats showing its bytes went zero copy.
# Usage (as root in the guest): vm-mount-check.sh TARFS_ZC
set -eu
bin=${1:?usage: vm-mount-check.sh TARFS_ZC}
src=$(mktemp -d) mnt=$(mktemp -d) ar=$(mktemp --suffix=.tar)
trap 'umount "$mnt" 2>/dev/null || true; rm -rf "$src" "$mnt" "$ar"' EXIT

ln -sf "$bin" /usr/local/sbin/tarfs_zc
printf 'x' >"$src/small"	# the data member after it starts at 1536, not a page
dd if=/dev/urandom of="$src/data" bs=1M count=16 status=none
printf 'tail' >>"$src/data"	# and ends inside a page
tar -cf "$ar" -C "$src" small data
mount -t fuse.tarfs_zc "$ar" "$mnt" -o zerocopy=required
grep " $mnt " /proc/mounts
echo 3 > /proc/sys/vm/drop_caches
cmp "$src/data" "$mnt/data"
dev=$(stat -c %d "$mnt")
minor=$(( (dev & 0xff) | ((dev >> 12) & 0xfff00) ))
stats=/sys/fs/fuse/connections/$minor/zerocopy_stats
cat "$stats"
zc=$(awk '$1 == "zc_read_bytes" { print $2 }' "$stats")
copied=$(awk '$1 == "copy_read_bytes" { print $2 }' "$stats")
[ "$zc" -ge $(((16 << 20) + 4)) ] || { echo "FAIL: zc_read_bytes $zc < 16 MiB + 4"; exit 1; }
[ "$copied" -eq 0 ] || { echo "FAIL: copy_read_bytes $copied"; exit 1; }
umount "$mnt"
echo "mount -t fuse.tarfs_zc: 16 MiB + 4 of an unaligned member read by zero copy"
