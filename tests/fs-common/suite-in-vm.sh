#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# A file system's pytest suite inside the VM on the patched kernel, zero copy
# required: first SUITE_DIR/vm-mount-check.sh BINARY (mount -t through
# mount.fuse3; the connection's zerocopy_stats), then, in SUITE_DIR,
# `PYTHON3 -m pytest --mode zerocopy=required [--pytest ARGs] PYTEST_ARGS...`
# with FUSEZC_EXPECT_ZC=1, NAME=BINARY for --bin-env NAME and each --env.
# Run by tests/passthrough/run-in-vm.sh and tests/tarfs/run-in-vm.sh, which
# name the kernel, the environment, the test files and the pytest tmp
# directory.
# Usage: suite-in-vm.sh [--kernel debug|release] [--bin-env NAME]
#                       [--env NAME=VALUE]... [--pytest ARG]...
#                       SUITE_DIR PYTHON3 BINARY [PYTEST_ARGS...]
# FUSEZC_VM_KERNEL overrides --kernel (default release); FUSEZC_VM_TIMEOUT
# (default 1800 s).
set -uo pipefail
. "$(dirname "$0")/../harness/lib.sh"

usage="usage: suite-in-vm.sh [--kernel K] [--bin-env NAME] [--env N=V]... [--pytest ARG]... SUITE_DIR PYTHON3 BINARY [PYTEST_ARGS...]"
kernel=release bin_env=
envs=(--env FUSEZC_EXPECT_ZC=1)
suite_args=()
while [ $# -gt 0 ]; do
	case $1 in
	--kernel) kernel=${2:?$usage}; shift 2 ;;
	--bin-env) bin_env=${2:?$usage}; shift 2 ;;
	--env) envs+=(--env "${2:?$usage}"); shift 2 ;;
	--pytest) suite_args+=("${2:?$usage}"); shift 2 ;;
	*) break ;;
	esac
done
[ $# -ge 3 ] || fail "$usage"
dir=$(cd "$1" && pwd) || fail "$1: no such directory"
py=$2 bin=$3
shift 3
[ -x "$bin" ] || fail "$bin is not built"
[ -z "$bin_env" ] || envs+=(--env "$bin_env=$bin")
kernel=${FUSEZC_VM_KERNEL:-$kernel}
need_kernel "$kernel"

"$VM" --kernel "$kernel" --timeout "${FUSEZC_VM_TIMEOUT:-1800}" "${envs[@]}" -- \
	sh -c 'cd "$1" && sh ./vm-mount-check.sh "$2" && shift 2 && exec "$@"' \
	sh "$dir" "$bin" \
	"$py" -m pytest -q -rs -p no:cacheprovider \
	"${suite_args[@]}" --mode zerocopy=required "$@"
rc=$?
[ $rc = 0 ] || fail "$(basename "$bin") zerocopy=required suite failed in the VM (exit status $rc)"
echo PASS
