#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Inside the VM on the patched kernel: passthrough_zc -o ring_read, where
# each worker reads /dev/fuse through its io_uring with its lendings
# (fuse-zc's opts.ring_read).  Requires:
#   - the right bytes: buffered and O_DIRECT reads of a file, random 4 KiB
#     and 128 KiB reads at queue depth 1 and 16 (fio, verified against the
#     source), writes read back; every read byte went zero copy;
#   - one idle worker waits in io_uring_enter() (a read armed in a ring is
#     a poll that every request wakes: one reader at a time), none in
#     read(2);
#   - the daemon ends within 10 s by umount, by SIGTERM (libfuse cancels its
#     workers, which io_uring_enter() does not see) and by a fusectl abort
#     with reads in flight, which return.
# Usage (as root in the guest): ring-read.sh PASSTHROUGH_ZC [ROUNDS]
set -u
. "$(dirname "$0")/../kernel/guest-lib.sh"
bin=${1:?usage: ring-read.sh PASSTHROUGH_ZC [ROUNDS]}
rounds=${2:-3}
EXIT_LIMIT=10

work=$(mktemp -d /tmp/ring-read.XXXXXX)
src=$work/src mnt=$work/mnt
mkdir -p "$src" "$mnt"
pid=

say() {
	echo "$*"
	echo "ring-read: $*" > /dev/kmsg 2>/dev/null
}

fail() {
	say "FAIL: $*"
	[ -n "$pid" ] && [ -r "$work/log" ] && tail -20 "$work/log"
	exit 1
}

cleanup() {
	umount -l "$mnt" 2>/dev/null
	[ -n "$pid" ] && kill -9 "$pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT

daemon_gone() { ! kill -0 "$pid" 2>/dev/null; }

mount_fs() {
	"$bin" -f -o zerocopy=required,ring_read,stats "$src" "$mnt" 2> "$work/log" &
	pid=$!
	wait_for 20 mountpoint -q "$mnt" || fail "$1: the mount did not come up"
	conn=$(conn_of "$mnt")
}

# end HOW: the daemon must exit with status 0 within EXIT_LIMIT s
end_daemon() {
	wait_for $EXIT_LIMIT daemon_gone || {
		for t in /proc/"$pid"/task/*; do
			echo "  $(cat "$t/comm") syscall $(cut -d' ' -f1 "$t/syscall") $(cat "$t/wchan")"
		done
		fail "$1: the daemon is still there ${EXIT_LIMIT} s later"
	}
	wait "$pid"
	rc=$?
	pid=
	[ "$rc" = 0 ] || [ "$2" = any ] || fail "$1: the daemon exited with status $rc"
}

# threads of the daemon blocked in a system call NR (0 read, 426
# io_uring_enter); not its io_uring's io-wq workers (iou-wrk-*, iou-sqp-*)
threads_in() {
	local n=0 t
	for t in /proc/"$pid"/task/*; do
		case $(cat "$t/comm" 2>/dev/null) in iou-*) continue ;; esac
		[ "$(cut -d' ' -f1 "$t/syscall" 2>/dev/null)" = "$1" ] && n=$((n + 1))
	done
	echo $n
}

threads_say() {
	local t
	for t in /proc/"$pid"/task/*; do
		echo "  $(cat "$t/comm") syscall $(cut -d' ' -f1 "$t/syscall") $(cat "$t/wchan")"
	done
}

dd if=/dev/urandom of="$src/data" bs=1M count=32 status=none || fail "cannot write the source"
for round in $(seq 1 "$rounds"); do
	mount_fs "round $round"
	echo 3 > /proc/sys/vm/drop_caches
	cmp -s "$src/data" "$mnt/data" || fail "round $round: buffered read: wrong bytes"
	dd if="$mnt/data" of="$work/direct" bs=1M iflag=direct status=none ||
		fail "round $round: O_DIRECT read failed"
	cmp -s "$src/data" "$work/direct" || fail "round $round: O_DIRECT read: wrong bytes"
	for job in "4k 1 1M" "128k 16 8M"; do
		set -- $job
		echo 3 > /proc/sys/vm/drop_caches
		fio --name=rr --filename="$mnt/data" --rw=randread --bs="$1" --iodepth="$2" \
			--ioengine=io_uring --direct=1 --size=32M --io_size="$3" --randrepeat=0 \
			--output="$work/fio.out" > /dev/null 2>&1 ||
			fail "round $round: fio randread bs=$1 qd=$2 failed: $(tail -3 "$work/fio.out")"
	done
	# the bytes of random ranges, read through the mount, against the source
	for i in $(seq 1 24); do
		off=$(( (RANDOM * 32768 + RANDOM) % (32 << 20) ))
		len=$(( 1 + RANDOM % 300000 ))
		cmp -s <(dd if="$mnt/data" iflag=skip_bytes,count_bytes skip=$off count=$len status=none) \
			<(dd if="$src/data" iflag=skip_bytes,count_bytes skip=$off count=$len status=none) ||
			fail "round $round: bytes at $off (+$len) differ"
	done
	dd if=/dev/urandom of="$work/w" bs=64k count=32 status=none
	dd if="$work/w" of="$mnt/w" bs=64k oflag=direct status=none || fail "round $round: write failed"
	cmp -s "$work/w" "$src/w" || fail "round $round: what was written differs"
	zc=$(stat_of "$conn" zc_read_bytes) copied=$(stat_of "$conn" copy_read_bytes)
	[ "$zc" -gt 0 ] && [ "$copied" = 0 ] ||
		fail "round $round: zero copy $zc bytes, copied $copied"
	sleep 1
	in_ring=$(threads_in 426) in_read=$(threads_in 0)
	[ "$in_ring" = 1 ] && [ "$in_read" = 0 ] || {
		threads_say
		fail "round $round: $in_ring threads wait in io_uring_enter(), $in_read in read(2)"
	}
	say "round $round: right bytes, $zc bytes zero copy; $in_ring worker waits in io_uring_enter()"

	case $((round % 3)) in
	1)
		umount "$mnt" || fail "round $round: umount failed"
		end_daemon "round $round: umount" 0
		grep -q "zc_bytes=" "$work/log" || fail "round $round: no stats line at exit"
		;;
	2)
		kill -TERM "$pid"
		end_daemon "round $round: SIGTERM" 0
		umount "$mnt" 2>/dev/null
		;;
	0)
		# readers in flight, the connection aborted under them
		dd if="$mnt/data" of=/dev/null bs=128k iflag=direct status=none 2>/dev/null &
		r1=$!
		echo 3 > /proc/sys/vm/drop_caches
		cat "$mnt/data" > /dev/null 2>&1 &
		r2=$!
		sleep 0.2
		echo 1 > "/sys/fs/fuse/connections/$conn/abort"
		wait_for $EXIT_LIMIT reader_done $r1 && wait_for $EXIT_LIMIT reader_done $r2 ||
			fail "round $round: readers still blocked after the abort"
		end_daemon "round $round: abort" any
		umount -l "$mnt" 2>/dev/null
		;;
	esac
done
echo "PASS: $rounds rounds of passthrough_zc -o ring_read"
