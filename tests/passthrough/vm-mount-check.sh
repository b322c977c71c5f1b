#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Inside the VM: `mount -t fuse.passthrough_zc SRC MNT -o zerocopy=required`
# through mount.fuse3, a 16 MiB file read and checked against the source,
# and the connection's zerocopy_stats showing the bytes went zero-copy
# (../fs-common/zc-mount-check.sh).
# Usage (as root in the guest): vm-mount-check.sh PASSTHROUGH_ZC
set -eu
bin=${1:?usage: vm-mount-check.sh PASSTHROUGH_ZC}
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT

dd if=/dev/urandom of="$src/data" bs=1M count=16 status=none
sh "$(dirname "$0")/../fs-common/zc-mount-check.sh" "$bin" "$src" data "$src/data"
