# SPDX-License-Identifier: GPL-2.0-or-later
#
# tests/bench/rows.sh - which runs a bench has, sourced by tests/bench/run
# (to count them for the VM's timeout) and tests/bench/guest (to run them),
# so that the two never disagree.  Plain bash functions, no side effects.

# bench_wl_jobs WORKLOAD JOBS...: the job counts WORKLOAD runs with.
bench_wl_jobs() {
	case $1 in
	qd1-* | qd16-*) echo 1 ;;
	wapp-* | wrand-4k) echo 1 ;; # a fixed number of small writes
	up-*) echo 2 ;; # upstream's zero-copy-over-io-uring comparison
	*) shift; echo "$@" ;;
	esac
}

# bench_runs_mode MODE WORKLOAD: whether MODE has a row for WORKLOAD.
# zerocopy-dio (another caching policy) is a seq-1m row; zerocopy-default
# (no tuning options) repeats the main 1 MiB rows.
bench_runs_mode() {
	case $1 in
	zerocopy-dio) [ "$2" = seq-1m ] ;;
	zerocopy-default) [ "$2" = seq-1m ] || [ "$2" = dio-1m ] ;;
	*) true ;;
	esac
}

# bench_count_runs "BACKINGS" "WORKLOADS" "JOBS" "MODES" REPS: fio runs.
bench_count_runs() {
	local backing wl jobs mode n=0
	for backing in $1; do
		for wl in $2; do
			for jobs in $(bench_wl_jobs "$wl" $3); do
				for mode in $4; do
					bench_runs_mode "$mode" "$wl" && n=$((n + $5))
				done
			done
		done
	done
	echo "$n"
}
