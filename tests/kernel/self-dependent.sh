#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Inside the VM: a lending target whose I/O needs the lending server itself
# (issue 24's "self-dependent targets"), which /dev/fuse's -EXDEV checks do
# not see.  TARGET says which:
#
#   ext4-loop   ext4 on a loop device over mnt/disk.img: its I/O is bios
#               the loop device turns into FUSE_READs of mnt
#   erofs-file  erofs mounted from the regular file mnt/disk.erofs (6.12's
#               file-backed mounts: no block device, s_stack_depth 0): its
#               I/O is kiocbs on that FUSE file
#
#   src    a tmpfs directory with the image and an empty e/
#   mnt    passthrough_zc -o zerocopy=required src, single-threaded (-s)
#          and lending synchronously (-o sync_lending)
#   ext    the target file system, read-only, bind-mounted onto src/e
#
# A read of mnt/e/data is lent to the target, whose I/O comes back to mnt,
# where the only thread waits for that lending: a deadlock that only an
# abort can break.  Each round, with caches dropped, starts a buffered and
# an O_DIRECT reader, waits until pages are lent and the connection has
# requests waiting behind the stuck one, aborts the connection and
# requires: both readers return within ABORT_LIMIT s (an error or the right
# bytes), nothing counts as waiting, no page stays lent once the server has
# seen its lending fail, and the stack comes apart: the server exits, the
# target lets go of the image (see teardown() for why umount of mnt alone
# cannot).  Before the abort, the first round also checks that the setup
# works: with a second server thread the same reads are served, zero copy,
# with the right bytes.
#
# Usage (as root in the guest): self-dependent.sh PASSTHROUGH_ZC [ROUNDS [TARGET]]
set -u
. "$(dirname "$0")/guest-lib.sh"
bin=${1:?usage: self-dependent.sh PASSTHROUGH_ZC [ROUNDS [ext4-loop|erofs-file]]}
rounds=${2:-3}
target=${3:-ext4-loop}
ABORT_LIMIT=20
WAIT_LIMIT=30

work=$(mktemp -d /tmp/selfdep.XXXXXX)
src=$work/src mnt=$work/mnt ext=$work/ext ref=$work/ref
mkdir -p "$src/e" "$mnt" "$ext"
srv_pid= loop= readers=()

# progress on stdout and in the kernel log (the console shows it at once)
say() {
	echo "$*"
	echo "self-dependent ($target): $*" > /dev/kmsg 2>/dev/null
}

fail() {
	say "FAIL: $*"
	exit 1
}

# Deadlocked: pages lent, and besides the lent request the one the target's
# I/O sent back to this connection waiting (the other reader's may be there
# too, or may have been served before the deadlock), with no lending ending
# for 2 s.
stuck() { [ "$(stat_of "$1" zc_lent_pages)" -gt 0 ] && [ "$(waiting_of "$1")" -ge 2 ]; }
deadlocked() {
	local before
	stuck "$1" || return 1
	before="$(stat_of "$1" zc_completed) $(waiting_of "$1")"
	sleep 2
	stuck "$1" && [ "$(stat_of "$1" zc_completed) $(waiting_of "$1")" = "$before" ]
}
server_gone() { ! kill -0 "$srv_pid" 2>/dev/null; }

# The server's own fds pin the target (its inodes under src/e), the target
# pins a file of mnt (through the loop device, or itself): umount of mnt is
# busy, for good, and only an abort of mnt breaks that circle (the server
# then exits and closes its fds).  So everything is detached lazily, then
# mnt is aborted.
teardown() {
	umount -l "$src/e" 2>/dev/null
	umount -l "$ext" 2>/dev/null
	[ -n "$loop" ] && losetup -d "$loop" 2>/dev/null
}

cleanup() {
	for pid in "${readers[@]}"; do kill -9 "$pid" 2>/dev/null; done
	teardown
	umount -l "$mnt" 2>/dev/null
	[ -n "$srv_pid" ] && kill -9 "$srv_pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT

# the image, made directly (not through the mount) from a directory
mkdir -p "$work/tree"
dd if=/dev/urandom of="$work/tree/data" bs=1M count=16 status=none || fail "cannot write test data"
cp "$work/tree/data" "$ref"
case $target in
ext4-loop)
	image=disk.img
	truncate -s 64M "$src/$image" || fail "cannot create the image"
	mkfs.ext4 -q -F -d "$work/tree" "$src/$image" || fail "mkfs.ext4 -d failed"
	;;
erofs-file)
	image=disk.erofs
	grep -qw erofs /proc/filesystems ||
		fail "the kernel has no erofs (CONFIG_EROFS_FS, kernel/config/debug.config)"
	command -v mkfs.erofs > /dev/null || fail "mkfs.erofs missing (erofs-utils: make deps)"
	# uncompressed, so that O_DIRECT reads of its files work
	mkfs.erofs --quiet "$src/$image" "$work/tree" > /dev/null || fail "mkfs.erofs failed"
	;;
*)
	fail "unknown target '$target' (ext4-loop or erofs-file)"
	;;
esac

# mount(2) itself: mount(8) would put a loop device under a regular file
mount_file_backed() {
	python3 - "$1" "$2" <<'PY'
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
MS_RDONLY = 1
if libc.mount(sys.argv[1].encode(), sys.argv[2].encode(), b"erofs", MS_RDONLY, None):
    sys.exit("mount -t erofs %s: %s" % (sys.argv[1], os.strerror(ctypes.get_errno())))
PY
}

# the target on mnt's image, read-only, onto $ext
attach_target() {
	case $target in
	ext4-loop)
		loop=$(losetup -f --show -r "$mnt/$image") || fail "round $round: losetup failed"
		mount -t ext4 -o ro,noload "$loop" "$ext" ||
			fail "round $round: cannot mount ext4 on $loop"
		;;
	erofs-file)
		mount_file_backed "$mnt/$image" "$ext" || fail "round $round: cannot mount erofs"
		# file-backed: the source is the image, not a block device
		awk -v m="$ext" '$5 == m { print $NF, $(NF-1) }' /proc/self/mountinfo |
			grep -q "^[^ ]* $mnt/$image\$" ||
			fail "round $round: erofs is not file-backed: $(grep " $ext " /proc/self/mountinfo)"
		;;
	esac
}

# mount [OPTIONS...]: the server over src, the target on its image, bound
# onto src/e
mount_stack() {
	"$bin" -f "$@" -o zerocopy=required "$src" "$mnt" &
	srv_pid=$!
	wait_for $WAIT_LIMIT mountpoint -q "$mnt" || fail "round $round: the mount did not come up"
	conn=$(conn_of "$mnt")
	attach_target
	mount --bind "$ext" "$src/e" || fail "round $round: cannot bind the target into the source"
}

loop_gone() { ! losetup "$1" > /dev/null 2>&1; }
# /sys/fs/erofs has a directory per erofs superblock, beside "features"
erofs_released() { [ -z "$(ls /sys/fs/erofs | grep -vx features)" ]; }

unmount_stack() {
	say "round $round: taking the stack down"
	teardown
	umount -l "$mnt" || fail "round $round: umount -l of $mnt failed"
	# (gone already if the round's abort let the server exit)
	[ -e "/sys/fs/fuse/connections/$conn/abort" ] &&
		echo 1 > "/sys/fs/fuse/connections/$conn/abort" 2>/dev/null
	wait_for $WAIT_LIMIT server_gone || fail "round $round: the server did not exit after the abort"
	wait "$srv_pid"
	srv_pid=
	if [ -n "$loop" ]; then
		wait_for $WAIT_LIMIT loop_gone "$loop" ||
			fail "round $round: $loop is still attached: $(losetup "$loop" 2>&1)"
	fi
	loop=
	# erofs: its superblock (and so its file of mnt) is gone
	if [ "$target" = erofs-file ]; then
		wait_for $WAIT_LIMIT erofs_released ||
			fail "round $round: an erofs superblock is still there: $(ls /sys/fs/erofs)"
	fi
}

for round in $(seq 1 "$rounds"); do
	if [ "$round" = 1 ]; then
		# the setup itself: two threads serve what one cannot
		mount_stack -o threads=2
		echo 3 > /proc/sys/vm/drop_caches
		cmp -s "$mnt/e/data" "$ref" || fail "buffered read through the stack: wrong bytes"
		echo 3 > /proc/sys/vm/drop_caches
		dd if="$mnt/e/data" of="$work/direct.out" bs=1M iflag=direct status=none ||
			fail "O_DIRECT read through the stack failed"
		cmp -s "$work/direct.out" "$ref" || fail "O_DIRECT read through the stack: wrong bytes"
		[ "$(stat_of "$conn" zc_read_bytes)" -gt 0 ] ||
			fail "nothing went zero copy through the stack"
		say "setup: $(stat_of "$conn" zc_read_bytes) bytes zero copy through a target that reads the same mount"
		unmount_stack
	fi

	mount_stack -s -o sync_lending
	say "round $round: mounted"
	# The deadlock must be the lending's, not a lookup's, which any
	# single-threaded server over such a stack has, zero copy or not: the
	# target looks the file up first (directly, its I/O served by the idle
	# thread), then the mount does from the cache; only the page cache is
	# dropped after that.
	stat "$ext/data" > /dev/null || fail "round $round: cannot stat $ext/data"
	stat "$mnt/e/data" > /dev/null || fail "round $round: cannot stat $mnt/e/data"
	echo 1 > /proc/sys/vm/drop_caches
	readers=()
	dd if="$mnt/e/data" of=/dev/null bs=1M skip=$((round % 8)) count=4 status=none 2>/dev/null &
	readers+=($!)
	dd if="$mnt/e/data" of="$work/direct.out" bs=1M skip=$((8 + round % 8)) count=2 \
		iflag=direct status=none 2>/dev/null &
	direct=$!
	readers+=($direct)
	wait_for $WAIT_LIMIT deadlocked "$conn" ||
		fail "round $round: no deadlock: zc_lent_pages $(stat_of "$conn" zc_lent_pages), waiting $(waiting_of "$conn")"
	say "round $round: $(stat_of "$conn" zc_lent_pages) pages lent, $(waiting_of "$conn") waiting, the server stuck on itself; aborting"
	echo 1 > "/sys/fs/fuse/connections/$conn/abort"
	for pid in "${readers[@]}"; do
		wait_for $ABORT_LIMIT reader_done "$pid" ||
			fail "round $round: reader $pid still blocked ${ABORT_LIMIT} s after the abort"
	done
	if wait "$direct"; then
		cmp -s -n $((2 << 20)) -i $(((8 + round % 8) << 20)):0 "$ref" "$work/direct.out" ||
			fail "round $round: the O_DIRECT reader got wrong bytes"
	fi
	readers=()
	wait_for 5 none_waiting "$conn" ||
		fail "round $round: $(waiting_of "$conn") requests still waiting after the readers returned"
	no_lent() { [ "$(stat_of "$conn" zc_lent_pages)" -eq 0 ]; }
	wait_for $WAIT_LIMIT no_lent ||
		fail "round $round: $(stat_of "$conn" zc_lent_pages) pages still lent"
	say "round $round: readers freed, nothing waiting or lent"
	unmount_stack
done
echo "PASS: $rounds rounds ($target); a server stuck on a target that reads its own mount was freed by an abort"
