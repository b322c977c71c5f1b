# SPDX-License-Identifier: GPL-2.0-or-later
#
# Sourced by the guest-side scripts of tests/kernel/ (stalled-backing.sh,
# self-dependent.sh, async-writes.sh) and tests/passthrough/ring-read.sh:
# waits bounded by wall time, a FUSE connection's fusectl numbers, and the
# stallable backing store of stalled-backing.sh and async-writes.sh.

# wait_for SECONDS COMMAND...: poll until COMMAND succeeds, for SECONDS of
# wall time (not a count of polls, which a loaded machine stretches)
wait_for() {
	local deadline=$((SECONDS + $1))
	shift
	until "$@"; do
		[ $SECONDS -ge $deadline ] && return 1
		sleep 0.1
	done
}

# conn_of MOUNTPOINT: its connection's number under /sys/fs/fuse/connections
conn_of() {
	local dev
	dev=$(stat -c %d "$1") || return 1
	echo $(( (dev & 0xff) | ((dev >> 12) & 0xfff00) ))
}

stat_of() {	# stat_of CONN NAME: a zerocopy_stats counter
	awk -v n="$2" '$1 == n { print $2 }' "/sys/fs/fuse/connections/$1/zerocopy_stats"
}

waiting_of() { cat "/sys/fs/fuse/connections/$1/waiting"; }
none_waiting() { [ "$(waiting_of "$1")" -eq 0 ]; }
reader_done() { ! kill -0 "$1" 2>/dev/null; }

# The stallable backing store: passthrough_zc -o copy of $inner_src on
# $inner (its pid in inner_pid: SIGSTOP stalls every I/O below), an ext4
# image of SIZE in it on a loop device ($loop), mounted on $ext4 with
# MOUNT_OPTIONS.  Uses the caller's $bin, $WAIT_LIMIT and fail().
# stallable_store_up SIZE [MOUNT_OPTIONS]
stallable_store_up() {
	"$bin" -f -o copy "$inner_src" "$inner" &
	inner_pid=$!
	wait_for $WAIT_LIMIT mountpoint -q "$inner" || fail "inner mount did not come up"
	truncate -s "$1" "$inner/disk.img" || fail "cannot create the disk image"
	mkfs.ext4 -q -F "$inner/disk.img" || fail "mkfs.ext4 failed"
	loop=$(losetup -f --show "$inner/disk.img") || fail "losetup failed"
	mount -t ext4 ${2:+-o "$2"} "$loop" "$ext4" || fail "cannot mount ext4 on $loop"
}

# ... and taken down, $outer (the zero-copy mount over $ext4) first, then
# $work removed
stallable_store_down() {
	umount -l "$outer" 2>/dev/null
	umount "$ext4" 2>/dev/null || umount -l "$ext4" 2>/dev/null
	[ -n "$loop" ] && losetup -d "$loop" 2>/dev/null
	umount "$inner" 2>/dev/null || umount -l "$inner" 2>/dev/null
	rm -rf "$work"
}
