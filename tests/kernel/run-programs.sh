#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Run several test programs of tests/kernel/ one after another, with the
# same options, as one test (so that a ctest test can span topics in one VM
# boot).  A PROGRAM is a path (it has a '/'), the words after it up to the
# next PROGRAM are its subtests; a program without any runs all of its own.
#
# Usage: run-programs.sh [-a] [-v] [-r ROUNDS] [-d SECONDS] PROGRAM [SUBTEST...]...
# Exit status: 1 if a program failed, else 0 if one passed, else 77 (all skipped).
set -uo pipefail

usage() {
	echo "usage: run-programs.sh [-a] [-v] [-r ROUNDS] [-d SECONDS] PROGRAM [SUBTEST...]..." >&2
	exit 2
}

opts=()
while [ $# -gt 0 ]; do
	case $1 in
	-a | -v) opts+=("$1"); shift ;;
	-r | -d) [ $# -ge 2 ] || usage; opts+=("$1" "$2"); shift 2 ;;
	-*) usage ;;
	*) break ;;
	esac
done
if [ $# -eq 0 ] || [[ $1 != */* ]]; then
	usage
fi

passed=() failed=() skipped=()
run() {
	local prog=$1 rc
	shift
	[ $# -gt 0 ] || set -- all
	"$prog" "${opts[@]}" "$@"
	rc=$?
	case $rc in
	0) passed+=("${prog##*/}") ;;
	77) skipped+=("${prog##*/}") ;;
	*) failed+=("${prog##*/} (exit status $rc)") ;;
	esac
}

prog=$1
shift
args=()
for arg in "$@"; do
	if [[ $arg == */* ]]; then
		run "$prog" "${args[@]}"
		prog=$arg
		args=()
	else
		args+=("$arg")
	fi
done
run "$prog" "${args[@]}"

echo "run-programs: passed: ${passed[*]:-none}; failed: ${failed[*]:-none}; skipped: ${skipped[*]:-none}"
[ ${#failed[@]} -eq 0 ] || exit 1
[ ${#passed[@]} -gt 0 ] || exit 77
exit 0
