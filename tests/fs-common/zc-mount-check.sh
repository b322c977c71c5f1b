#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Inside the VM, as root: `mount -t fuse.NAME SOURCE MNT -o zerocopy=required`
# through mount.fuse3 (NAME: BINARY's file name), MNT/FILE read with a cold
# page cache and compared with REFERENCE, and the connection's
# zerocopy_stats showing that at least REFERENCE's size went zero copy
# (zc_read_bytes) and nothing was copied (copy_read_bytes 0).  Run by
# tests/passthrough/vm-mount-check.sh and tests/tarfs/vm-mount-check.sh,
# which make SOURCE.
# Usage: zc-mount-check.sh BINARY SOURCE FILE REFERENCE
set -eu
usage="usage: zc-mount-check.sh BINARY SOURCE FILE REFERENCE"
bin=${1:?$usage} source=${2:?$usage} file=${3:?$usage} ref=${4:?$usage}
name=$(basename "$bin")
mnt=$(mktemp -d)
trap 'umount "$mnt" 2>/dev/null || true; rmdir "$mnt" 2>/dev/null || true' EXIT

# mount(8) runs mount.fuse3 with a fixed PATH; the guest root is an overlay.
ln -sf "$bin" "/usr/local/sbin/$name"
mount -t "fuse.$name" "$source" "$mnt" -o zerocopy=required
grep " $mnt " /proc/mounts
echo 3 > /proc/sys/vm/drop_caches
cmp "$ref" "$mnt/$file"
size=$(stat -c %s "$ref")
dev=$(stat -c %d "$mnt")
minor=$(( (dev & 0xff) | ((dev >> 12) & 0xfff00) ))
stats=/sys/fs/fuse/connections/$minor/zerocopy_stats
cat "$stats"
zc=$(awk '$1 == "zc_read_bytes" { print $2 }' "$stats")
copied=$(awk '$1 == "copy_read_bytes" { print $2 }' "$stats")
[ "$zc" -ge "$size" ] || { echo "FAIL: zc_read_bytes $zc < $size"; exit 1; }
[ "$copied" -eq 0 ] || { echo "FAIL: copy_read_bytes $copied"; exit 1; }
umount "$mnt"
echo "mount -t fuse.$name: $size bytes of $file read by zero copy"
