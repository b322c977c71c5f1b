#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Fuzz the tarfs index parser in-process: seed archives made here by GNU
# tar (and bsdtar when installed), mutated by tarfs_index_test fuzz.
# Usage: fuzz.sh TARFS_INDEX_TEST [SECONDS]   (default 120; TARFS_FUZZ_SECONDS too)
# A longer run: tests/tarfs/fuzz.sh build/bin/tarfs_index_test 3600
set -euo pipefail
bin=${1:?usage: fuzz.sh TARFS_INDEX_TEST [SECONDS]}
secs=${2:-${TARFS_FUZZ_SECONDS:-120}}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
src=$work/src
mkdir -p "$src/d/e" "$src/$(printf 'l%.0s' {1..110})"
printf 'hello' >"$src/a"
head -c 70000 /dev/zero | tr '\0' 'z' >"$src/d/big"
ln -s ../a "$src/d/sl"
ln -s "/$(printf 't%.0s' {1..150})" "$src/longlink"
ln "$src/a" "$src/d/hl"
mkfifo "$src/fifo"
echo x >"$src/$(printf 'l%.0s' {1..110})/$(printf 'n%.0s' {1..120})"
for f in gnu oldgnu posix ustar v7; do
	tar --format=$f -cf "$work/$f.tar" -C "$src" . 2>/dev/null || true
done
if command -v bsdtar >/dev/null; then
	bsdtar --format=pax -cf "$work/bsd-pax.tar" -C "$src" .
fi
cd "$work"
for a in *.tar; do "$bin" check "$a" >/dev/null; done
exec "$bin" fuzz -t "$secs" "$work"/*.tar
