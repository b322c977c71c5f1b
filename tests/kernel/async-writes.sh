#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Inside the VM: a zero-copy FUSE_WRITE lent to a backing store that does
# not answer must not keep a single-threaded server from answering a read
# (issue 26 step 3, asynchronous zero-copy writes).  The stall is that of
# stalled-backing.sh:
#
#   outer  passthrough_zc -s -o zerocopy=required, SOURCE = ext4
#   ext4   on /dev/loopN (noatime)
#   loopN  backed by a file on "inner", a passthrough_zc -o copy mount
#   inner  its server SIGSTOPped: every write of ext4 to the device hangs
#
# A 1 MiB O_DIRECT write to outer/w is lent to its O_DIRECT twin on ext4,
# whose bios hang in the loop device.  Meanwhile a reader that opened
# outer/r before reads 64 KiB of it: ext4 has r's pages cached, so its
# lending completes at once, if the only server thread reads the request.
# Only the reader holds outer/r open: a close of it (a forked child of this
# script exiting) sends FLUSH, which waits for the parked write; the reader
# says it has read with a file, not by exiting.
#
#   sync   -o sync_lending (the control, and how every zero-copy write
#          went before): the thread waits for the write's lending, so the
#          read must still be blocked CONTROL_WAIT s later; this proves
#          that the write really is parked.
#   async  the default: the thread lent the write and went back to
#          /dev/fuse, so the read must be answered (right bytes) within
#          READ_LIMIT s while the write is still parked.
#
# Then the inner server runs again: the write must complete with the right
# bytes on ext4, and the outer server's stats must show the write written
# from the writer's pages (answered by the kernel in the async round).
#
# Usage (as root in the guest): async-writes.sh PASSTHROUGH_ZC [sync|async]...
set -u
. "$(dirname "$0")/guest-lib.sh"
bin=${1:?usage: async-writes.sh PASSTHROUGH_ZC [sync|async]...}
shift
rounds=("$@")
[ ${#rounds[@]} -gt 0 ] || rounds=(sync async)
READ_LIMIT=10		# seconds the read may take with the write parked
CONTROL_WAIT=5		# seconds the sync round's read must stay blocked
WAIT_LIMIT=30		# any other bounded wait

work=$(mktemp -d /tmp/asyncw.XXXXXX)
inner_src=$work/inner-src inner=$work/inner ext4=$work/ext4 outer=$work/outer
mkdir -p "$inner_src" "$inner" "$ext4" "$outer"
inner_pid= outer_pid= loop= writer= reader=

say() {
	echo "$*"
	echo "async-writes: $*" > /dev/kmsg 2>/dev/null
}

fail() {
	say "FAIL: $*"
	exit 1
}

cleanup() {
	[ -n "$inner_pid" ] && kill -CONT "$inner_pid" 2>/dev/null
	for pid in $writer $reader; do kill -9 "$pid" 2>/dev/null; done
	stallable_store_down
}
trap cleanup EXIT

stallable_store_up 128M noatime
dd if=/dev/urandom of="$work/wdata" bs=1M count=1 status=none || fail "cannot make the write's data"

lent() { [ "$(stat_of "$conn" zc_lent_pages)" -gt 0 ]; }
ready() { [ -e "$work/reader.ready" ]; }
has_read() { [ -e "$work/reader.done" ]; }

# start_reader FILE: open FILE, then, once $work/reader.go exists, read 64
# KiB at 256 KiB into $work/r.out and say so in $work/reader.done
start_reader() {
	rm -f "$work/reader.ready" "$work/reader.go" "$work/reader.done" "$work/r.out"
	python3 - "$1" "$work" <<-'EOF' &
	import os, sys, time
	path, work = sys.argv[1], sys.argv[2]
	fd = os.open(path, os.O_RDONLY)
	open(work + "/reader.ready", "w").close()
	while not os.path.exists(work + "/reader.go"):
	    time.sleep(0.05)
	data = os.pread(fd, 65536, 4 * 65536)
	with open(work + "/r.out", "wb") as f:
	    f.write(data)
	open(work + "/reader.done", "w").close()
	os.close(fd)
	EOF
	reader=$!
}

for mode in "${rounds[@]}"; do
	case $mode in
	sync) opts=zerocopy=required,no_direct_source,timeout=3600,sync_lending ;;
	async) opts=zerocopy=required,no_direct_source,timeout=3600 ;;
	*) fail "unknown round '$mode' (sync or async)" ;;
	esac
	# w: allocated blocks to overwrite; r: cached by ext4 (written, synced)
	dd if=/dev/zero of="$ext4/w" bs=1M count=4 status=none || fail "cannot write $ext4/w"
	dd if=/dev/urandom of="$ext4/r" bs=1M count=1 status=none || fail "cannot write $ext4/r"
	sync
	"$bin" -f -s -o "$opts",stats "$ext4" "$outer" 2> "$work/outer.log" &
	outer_pid=$!
	wait_for $WAIT_LIMIT mountpoint -q "$outer" || fail "$mode: outer mount did not come up"
	conn=$(conn_of "$outer")
	# every lookup and open before the stall: each of those handlers
	# would wait for the worker's lendings first (hooks.c, may_block())
	stat "$outer/w" "$outer/r" > /dev/null || fail "$mode: cannot stat the files"
	start_reader "$outer/r"
	wait_for $WAIT_LIMIT ready || fail "$mode: the reader could not open $outer/r"

	kill -STOP "$inner_pid"
	dd if="$work/wdata" of="$outer/w" bs=1M count=1 oflag=direct conv=notrunc \
		status=none &
	writer=$!
	wait_for $WAIT_LIMIT lent ||
		fail "$mode: the write's pages are not lent while the backing is stopped"
	sleep 1
	reader_done "$writer" && fail "$mode: the write completed with the backing stopped"
	say "$mode: write parked ($(stat_of "$conn" zc_lent_pages) pages lent); reading"
	t0=$(date +%s.%N)
	touch "$work/reader.go"
	if [ "$mode" = sync ]; then
		wait_for $CONTROL_WAIT has_read &&
			fail "sync: the read was answered while the only thread waited for the write (is the write parked?)"
		say "sync: the read is still blocked after $CONTROL_WAIT s, as expected"
	else
		wait_for $READ_LIMIT has_read ||
			fail "async: the read was not answered within $READ_LIMIT s: the only thread waits for the parked write"
		say "async: read answered in $(echo "$(date +%s.%N) - $t0" | bc) s with the write parked"
		reader_done "$writer" && fail "async: the write completed with the backing stopped"
	fi

	kill -CONT "$inner_pid"
	wait_for $WAIT_LIMIT reader_done "$writer" ||
		fail "$mode: the write did not complete $WAIT_LIMIT s after the backing resumed"
	wait "$writer" || fail "$mode: the write failed"
	writer=
	wait_for $WAIT_LIMIT reader_done "$reader" ||
		fail "$mode: the reader did not end after the write"
	wait "$reader" || fail "$mode: the reader failed"
	reader=
	cmp -s -n 65536 -i $((4 * 65536)):0 "$ext4/r" "$work/r.out" ||
		fail "$mode: the read got wrong bytes"
	umount "$outer" || fail "$mode: umount of $outer failed"
	wait "$outer_pid" || fail "$mode: the outer server failed: $(cat "$work/outer.log")"
	outer_pid=
	cmp -s -n $((1 << 20)) "$work/wdata" "$ext4/w" || fail "$mode: $ext4/w does not hold the write's bytes"
	stats=$(grep 'stats:' "$work/outer.log")
	num() { sed -n "s/.* $1=\([0-9]*\).*/\1/p" <<< "$stats"; }
	say "$mode: zc_write_bytes=$(num zc_write_bytes) zc_write_requests=$(num zc_write_requests) zc_write_kernel_answered=$(num zc_write_kernel_answered) memfd_write_bytes=$(num memfd_write_bytes)"
	[ "$(num zc_write_bytes)" -ge $((1 << 20)) ] ||
		fail "$mode: the write did not go from the writer's pages: $stats"
	[ "$(num memfd_write_bytes)" -eq 0 ] || fail "$mode: a write went through the memfd: $stats"
	if [ "$mode" = async ]; then
		[ "$(num zc_write_kernel_answered)" -ge 1 ] ||
			fail "async: no write answered by the kernel: $stats"
	fi
done
echo "PASS: ${rounds[*]}: a single-threaded server answered a read while a zero-copy write it lent was parked"
