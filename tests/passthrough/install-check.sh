#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# cmake --install gives a working mount.fuse.passthrough_zc: install the
# build under a prefix and, with DESTDIR, under another one; the helper must
# find the passthrough_zc installed beside it, the installed binary must find
# its libfuse-zc, and (as root) "mount -t fuse.passthrough_zc" must mount
# through the helper, with mount(8) seeing it in /sbin as after a system
# install (a private mount namespace over /usr/sbin, nothing changes outside).
# Usage: install-check.sh BUILD_DIR WORK_DIR
# Exit 0 pass, 1 fail, 77 skip (the mount part needs root; not under CI=true).
set -uo pipefail

build=${1:?usage: install-check.sh BUILD_DIR WORK_DIR}
work=${2:?usage: install-check.sh BUILD_DIR WORK_DIR}
fail() { echo "FAIL: $*" >&2; exit 1; }

rm -rf "$work"
mkdir -p "$work" || fail "mkdir $work"
prefix=$work/prefix
cmake --install "$build" --prefix "$prefix" > "$work/install.log" ||
	{ cat "$work/install.log"; fail "cmake --install --prefix"; }
helper=$prefix/sbin/mount.fuse.passthrough_zc
[ -x "$helper" ] || fail "$helper not installed"
"$prefix/bin/passthrough_zc" --version > /dev/null ||
	fail "installed passthrough_zc does not run (libfuse-zc not found?)"

# DESTDIR staging: the helper resolves its binary relative to itself.
DESTDIR=$work/stage cmake --install "$build" --prefix /opt/pzc > /dev/null ||
	fail "DESTDIR install"
out=$("$work/stage/opt/pzc/sbin/mount.fuse.passthrough_zc" 2>&1)
case $out in
*"not found"*) fail "staged helper: $out" ;;
*usage*) ;;
*) fail "staged helper: unexpected: $out" ;;
esac
mv "$prefix/bin/passthrough_zc" "$prefix/bin/moved"
out=$("$helper" /src /mnt 2>&1) && fail "helper ran without its binary"
mv "$prefix/bin/moved" "$prefix/bin/passthrough_zc"
case $out in *"$prefix/bin/passthrough_zc not found"*) ;; *) fail "no clear error: $out" ;; esac
echo "installed: $helper -> $prefix/bin/passthrough_zc"

if [ "$(id -u)" != 0 ] || [ ! -c /dev/fuse ]; then
	[ "${CI:-}" = true ] && fail "mount checks need root and /dev/fuse (CI=true: not a skip)"
	echo "SKIP: mount checks need root and /dev/fuse"
	exit 77
fi
src=$work/src mnt=$work/mnt
mkdir -p "$src" "$mnt"
head -c 1048576 /dev/urandom > "$src/data"

# 1. The helper as mount(8) calls it, with fstab-only options.
"$helper" "$src" "$mnt" -o rw,nofail,_netdev || fail "helper mount"
grep -q " $mnt fuse.passthrough_zc " /proc/mounts ||
	{ grep " $mnt " /proc/mounts; fail "not mounted as fuse.passthrough_zc"; }
cmp "$src/data" "$mnt/data" || { umount "$mnt"; fail "content through the helper mount"; }
umount "$mnt" || fail "umount"

# 2. mount -t fuse.passthrough_zc, the helper linked into /sbin (= /usr/sbin
#    on Debian) inside a private mount namespace.
command -v unshare > /dev/null || fail "unshare missing (util-linux)"
unshare -m --propagation private bash -euc '
	helper=$1 src=$2 mnt=$3 over=$4 orig=$5
	sbin=$(readlink -f /sbin)
	mkdir -p "$over" "$orig"
	mount --bind "$sbin" "$orig"	# the real helpers, reachable below
	for f in "$sbin"/*; do ln -s "$orig/${f##*/}" "$over/"; done
	ln -sf "$helper" "$over/mount.fuse.passthrough_zc"
	mount --bind "$over" "$sbin"
	mount -t fuse.passthrough_zc "$src" "$mnt" -o ro
	grep " $mnt fuse.passthrough_zc " /proc/mounts
	cmp "$src/data" "$mnt/data"
	umount "$mnt"
' sh "$helper" "$src" "$mnt" "$work/sbin" "$work/sbin.orig" || fail "mount -t fuse.passthrough_zc"
echo "PASS"
