#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Inside the VM: a fusectl abort of a zero-copy mount must free its readers
# while the lent I/O is stuck in a backing store the server chose and that
# never answers.  /dev/fuse refuses a FUSE or stacked file as the I/O file
# (-EXDEV), so the stall goes through a block device instead:
#
#   outer  passthrough_zc -o zerocopy=required, SOURCE = ext4
#   ext4   on /dev/loopN
#   loopN  backed by a file on "inner", a passthrough_zc -o copy mount
#   inner  its server SIGSTOPped: every read of uncached ext4 data hangs
#
# Each round mounts "outer" afresh, starts readers, waits until the
# connection shows pages lent (the borrower is stuck in ext4), aborts it and
# requires:
#   * buffered readers (page cache pages are lent) return within
#     ABORT_LIMIT seconds, with an error, not wrong bytes;
#   * an O_DIRECT reader (its own pages are lent: they can only come back
#     when the stuck I/O does) returns once the inner server runs again,
#     with an error or the right bytes;
#   * in odd rounds, without the O_DIRECT reader: the buffered readers'
#     requests stop counting as `waiting` at once, though their loans are
#     still out;
#   * in every fourth round, the outer server is SIGSTOPped before the
#     abort and stays stopped until the O_DIRECT reader has returned: the
#     stuck I/O completes into a borrower whose task cannot run (io_uring
#     completes it by task work), and the reader must not wait for that
#     task: its pages are free once the I/O is over, not once the server
#     looks at the completion.  Rounds 4, 12, ... abort while that I/O is
#     stuck (its completion ends the request); rounds 8, 16, ... let the
#     I/O end first, then abort (the abort ends the request itself);
#   * zc_lent_pages drops to 0 and the connection's `waiting` to 0.
#
# Usage (as root in the guest): stalled-backing.sh PASSTHROUGH_ZC [ROUNDS]
set -u
. "$(dirname "$0")/guest-lib.sh"
bin=${1:?usage: stalled-backing.sh PASSTHROUGH_ZC [ROUNDS]}
rounds=${2:-3}
ABORT_LIMIT=10		# seconds a buffered reader may take after the abort
WAIT_LIMIT=30		# any other bounded wait

work=$(mktemp -d /tmp/stalled.XXXXXX)
inner_src=$work/inner-src inner=$work/inner ext4=$work/ext4 outer=$work/outer
mkdir -p "$inner_src" "$inner" "$ext4" "$outer"
inner_pid= outer_pid= stopped= loop= readers=()

fail() {
	echo "FAIL: $*"
	exit 1
}

cleanup() {
	[ -n "$inner_pid" ] && kill -CONT "$inner_pid" 2>/dev/null
	[ -n "$outer_pid" ] && kill -CONT "$outer_pid" 2>/dev/null
	for pid in "${readers[@]}"; do kill -9 "$pid" 2>/dev/null; done
	stallable_store_down
}
trap cleanup EXIT

stallable_store_up 256M
inner_conn=$(conn_of "$inner")
dd if=/dev/urandom of="$ext4/data" bs=1M count=64 status=none || fail "cannot write test data"
sync

nonzero_lent() { [ "$(stat_of "$1" zc_lent_pages)" -gt 0 ]; }
idle_conn() { [ "$(stat_of "$1" zc_lent_pages)" -eq 0 ] && none_waiting "$1"; }

for round in $(seq 1 "$rounds"); do
	"$bin" -f -o zerocopy=required "$ext4" "$outer" &
	outer_pid=$!
	wait_for $WAIT_LIMIT mountpoint -q "$outer" || fail "round $round: outer mount did not come up"
	conn=$(conn_of "$outer")

	# Look the file up while ext4 metadata can still be read, then drop
	# the page cache only (ext4, the loop device, the image on "inner"):
	# the data reads must stall, not the lookups.
	stat "$outer/data" > /dev/null || fail "round $round: cannot stat $outer/data"
	echo 1 > /proc/sys/vm/drop_caches
	kill -STOP "$inner_pid"

	# Odd rounds have no O_DIRECT reader, so that nothing may still
	# count as waiting once the buffered readers are freed.  In the
	# others it goes first, and the abort comes only once its pages
	# are lent too.
	direct= lent_before=0
	if [ $((round % 2)) = 0 ]; then
		dd if="$outer/data" of="$work/direct.out" bs=1M skip=40 count=4 \
			iflag=direct status=none 2>/dev/null &
		direct=$!
		wait_for $WAIT_LIMIT nonzero_lent "$conn" ||
			fail "round $round: the O_DIRECT reader's pages are not lent while the backing is stopped"
		lent_before=$(stat_of "$conn" zc_lent_pages)
	fi
	readers=()
	for i in 1 2; do
		# buffered, from different places so both lend
		dd if="$outer/data" of=/dev/null bs=1M skip=$((i * 16)) count=8 \
			status=none 2>/dev/null &
		readers+=($!)
	done
	more_lent() { [ "$(stat_of "$1" zc_lent_pages)" -gt "$lent_before" ]; }
	wait_for $WAIT_LIMIT more_lent "$conn" ||
		fail "round $round: no buffered reader's pages lent while the backing is stopped"
	stopped=
	if [ -n "$direct" ] && [ $((round % 4)) = 0 ]; then
		kill -STOP "$outer_pid"
		stopped=1
		if [ $((round % 8)) = 0 ]; then
			# the stuck I/O ends into the stopped server first
			kill -CONT "$inner_pid"
			wait_for $WAIT_LIMIT none_waiting "$inner_conn" ||
				fail "round $round: the inner server does not serve its $(waiting_of "$inner_conn") requests"
			sleep 1
			echo "round $round: the backing I/O is over with the server stopped"
		fi
	fi
	echo "round $round: $(stat_of "$conn" zc_lent_pages) pages lent, backing stopped${stopped:+, server stopped}; aborting"
	t0=$(date +%s.%N)
	echo 1 > "/sys/fs/fuse/connections/$conn/abort"
	for pid in "${readers[@]}"; do
		wait_for $ABORT_LIMIT reader_done "$pid" ||
			fail "round $round: buffered reader $pid still blocked ${ABORT_LIMIT} s after the abort"
		wait "$pid" && fail "round $round: buffered reader $pid succeeded on an aborted mount"
	done
	echo "round $round: buffered readers returned $(echo "$(date +%s.%N) - $t0" | bc) s after the abort"
	# Their requests are over, though their loans are still out with the
	# borrower stuck: they must not count as waiting (unmount waits for
	# those that do).
	if [ -z "$direct" ]; then
		# (bounded: a request being copied ends when its copy does)
		wait_for 5 none_waiting "$conn"
		lent=$(stat_of "$conn" zc_lent_pages)
		waiting=$(waiting_of "$conn")
		echo "round $round: waiting $waiting, zc_lent_pages $lent with the backing still stopped"
		[ "$lent" -gt 0 ] ||
			fail "round $round: no loan left out after the abort: nothing was cut off"
		[ "$waiting" -eq 0 ] ||
			fail "round $round: $waiting requests still waiting 5 s after the buffered readers returned"
	fi

	kill -CONT "$inner_pid"
	if [ -n "$direct" ]; then
		wait_for $WAIT_LIMIT reader_done "$direct" ||
			fail "round $round: O_DIRECT reader still blocked $WAIT_LIMIT s after the backing resumed${stopped:+ (the server stopped)}"
		if wait "$direct"; then
			cmp -s -n $((4 << 20)) -i $((40 << 20)):0 "$ext4/data" "$work/direct.out" ||
				fail "round $round: O_DIRECT reader got wrong bytes"
		fi
		echo "round $round: O_DIRECT reader returned${stopped:+ with the server stopped}"
	fi
	if [ -n "$stopped" ]; then
		# Its requests are over; only the loans wait for the server.
		wait_for 5 none_waiting "$conn" ||
			fail "round $round: $(waiting_of "$conn") requests still waiting with the I/O over and the server stopped"
		kill -CONT "$outer_pid"
		stopped=
	fi
	wait_for $WAIT_LIMIT idle_conn "$conn" ||
		fail "round $round: zc_lent_pages $(stat_of "$conn" zc_lent_pages), waiting $(waiting_of "$conn") after the abort"
	umount "$outer" || fail "round $round: umount of the aborted mount failed"
	wait_for $WAIT_LIMIT reader_done "$outer_pid" ||
		fail "round $round: the outer server did not exit after its mount was aborted"
	wait "$outer_pid"
	readers=()
done
echo "PASS: $rounds rounds; readers of an aborted mount returned while its backing I/O was stuck"
