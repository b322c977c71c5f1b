#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Inside the VM: `mount -t fuse.passthrough_zc SRC MNT -o zerocopy=required`
# through mount.fuse3, a read checked against the source, and the
# connection's zerocopy_stats showing the bytes went zero-copy.
# Usage (as root in the guest): vm-mount-check.sh PASSTHROUGH_ZC
set -eu
bin=${1:?usage: vm-mount-check.sh PASSTHROUGH_ZC}
src=$(mktemp -d) mnt=$(mktemp -d)
trap 'umount "$mnt" 2>/dev/null || true; rm -rf "$src" "$mnt"' EXIT

# mount(8) runs mount.fuse3 with a fixed PATH; the guest root is an overlay.
ln -sf "$bin" /usr/local/sbin/passthrough_zc
dd if=/dev/urandom of="$src/data" bs=1M count=16 status=none
mount -t fuse.passthrough_zc "$src" "$mnt" -o zerocopy=required
grep " $mnt " /proc/mounts
echo 3 > /proc/sys/vm/drop_caches
cmp "$src/data" "$mnt/data"
dev=$(stat -c %d "$mnt")
minor=$(( (dev & 0xff) | ((dev >> 12) & 0xfff00) ))
stats=/sys/fs/fuse/connections/$minor/zerocopy_stats
cat "$stats"
zc=$(awk '$1 == "zc_read_bytes" { print $2 }' "$stats")
copied=$(awk '$1 == "copy_read_bytes" { print $2 }' "$stats")
[ "$zc" -ge $((16 << 20)) ] || { echo "FAIL: zc_read_bytes $zc < 16 MiB"; exit 1; }
[ "$copied" -eq 0 ] || { echo "FAIL: copy_read_bytes $copied"; exit 1; }
umount "$mnt"
echo "mount -t fuse.passthrough_zc: 16 MiB read by zero copy"
