# SPDX-License-Identifier: GPL-2.0-or-later
#
# Sourced by the guest-side scripts of tests/kernel/ (stalled-backing.sh,
# self-dependent.sh): waits bounded by wall time, and a FUSE connection's
# fusectl numbers.

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
