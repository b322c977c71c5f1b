#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Runs inside the VM (see uname.sh): uname -r must end in $2, and a FUSE
# file system served by $1 (hello_fuse) must mount, read and unmount cleanly.
set -u
hello=$1
suffix=$2

fail() {
	echo "guest FAIL: $*"
	exit 1
}

release=$(uname -r)
echo "uname -r: $release"
case "$release" in
*"$suffix") ;;
*) fail "kernel release '$release' does not end in '$suffix'" ;;
esac

[ -c /dev/fuse ] || fail "/dev/fuse missing"
mountpoint -q /sys/fs/fuse/connections || fail "fusectl not mounted"

mnt=$(mktemp -d)
"$hello" -f "$mnt" &
pid=$!
i=0
until grep -q " $mnt fuse" /proc/self/mounts; do
	kill -0 $pid 2>/dev/null || fail "hello_fuse died before mounting"
	i=$((i + 1))
	[ $i -lt 200 ] || fail "hello_fuse did not mount within 20 s"
	sleep 0.1
done

ls "$mnt"
content=$(cat "$mnt/hello") || fail "cannot read $mnt/hello"
[ "$content" = "Hello World!" ] || fail "read '$content', want 'Hello World!'"
echo "read through FUSE: $content"
[ -n "$(ls /sys/fs/fuse/connections)" ] || fail "no FUSE connection in fusectl"

umount "$mnt" || fail "umount $mnt"
wait $pid
st=$?
[ $st = 0 ] || fail "hello_fuse exited with status $st after unmount"
echo "guest PASS"
