#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# cmake --install gives a working mount.fuse.FS for FS = passthrough_zc or
# tarfs_zc: install the build under a prefix and, with DESTDIR, under
# another one; the helper must find the FS installed beside it, the
# installed binary must find its libfuse-zc, and (as root) "mount -t
# fuse.FS" must mount through the helper, with mount(8) seeing it in /sbin
# as after a system install (a private mount namespace over /usr/sbin,
# nothing changes outside).  The source is a directory for passthrough_zc,
# a tar archive of that directory for tarfs_zc.
# Usage: install-check.sh BUILD_DIR WORK_DIR FS
# Exit 0 pass, 1 fail, 77 skip (the mount part needs root; not under CI=true).
set -uo pipefail

usage="usage: install-check.sh BUILD_DIR WORK_DIR passthrough_zc|tarfs_zc"
build=${1:?$usage}
work=${2:?$usage}
fs=${3:?$usage}
fail() { echo "FAIL: $*" >&2; exit 1; }
case $fs in
passthrough_zc | tarfs_zc) ;;
*) fail "unknown file system '$fs' ($usage)" ;;
esac

rm -rf "$work"
mkdir -p "$work" || fail "mkdir $work"
prefix=$work/prefix
cmake --install "$build" --prefix "$prefix" > "$work/install.log" ||
	{ cat "$work/install.log"; fail "cmake --install --prefix"; }
helper=$prefix/sbin/mount.fuse.$fs
[ -x "$helper" ] || fail "$helper not installed"
"$prefix/bin/$fs" --version > /dev/null ||
	fail "installed $fs does not run (libfuse-zc not found?)"
[ -f "$prefix/share/man/man1/$fs.1" ] || fail "man page $fs.1 not installed"

# DESTDIR staging: the helper resolves its binary relative to itself.
DESTDIR=$work/stage cmake --install "$build" --prefix /opt/fzc > /dev/null ||
	fail "DESTDIR install"
out=$("$work/stage/opt/fzc/sbin/mount.fuse.$fs" 2>&1)
case $out in
*"not found"*) fail "staged helper: $out" ;;
*usage*) ;;
*) fail "staged helper: unexpected: $out" ;;
esac
mv "$prefix/bin/$fs" "$prefix/bin/moved"
out=$("$helper" /src /mnt 2>&1) && fail "helper ran without its binary"
mv "$prefix/bin/moved" "$prefix/bin/$fs"
case $out in *"$prefix/bin/$fs not found"*) ;; *) fail "no clear error: $out" ;; esac
echo "installed: $helper -> $prefix/bin/$fs"

if [ "$(id -u)" != 0 ] || [ ! -c /dev/fuse ]; then
	[ "${CI:-}" = true ] && fail "mount checks need root and /dev/fuse (CI=true: not a skip)"
	echo "SKIP: mount checks need root and /dev/fuse"
	exit 77
fi
dir=$work/src mnt=$work/mnt
mkdir -p "$dir" "$mnt"
head -c 1048576 /dev/urandom > "$dir/data"
if [ "$fs" = tarfs_zc ]; then
	src=$work/src.tar
	tar -cf "$src" -C "$dir" data || fail "tar"
	fstab_opts=nofail,_netdev
else
	src=$dir
	fstab_opts=rw,nofail,_netdev
fi

# 1. The helper as mount(8) calls it, with fstab-only options.
"$helper" "$src" "$mnt" -o "$fstab_opts" || fail "helper mount"
grep -q " $mnt fuse.$fs " /proc/mounts ||
	{ grep " $mnt " /proc/mounts; fail "not mounted as fuse.$fs"; }
cmp "$dir/data" "$mnt/data" || { umount "$mnt"; fail "content through the helper mount"; }
umount "$mnt" || fail "umount"

# 2. mount -t fuse.FS, the helper linked into /sbin (= /usr/sbin on
#    Debian) inside a private mount namespace.
command -v unshare > /dev/null || fail "unshare missing (util-linux)"
unshare -m --propagation private bash -euc '
	helper=$1 src=$2 mnt=$3 over=$4 orig=$5 fs=$6 data=$7
	sbin=$(readlink -f /sbin)
	mkdir -p "$over" "$orig"
	mount --bind "$sbin" "$orig"	# the real helpers, reachable below
	for f in "$sbin"/*; do ln -s "$orig/${f##*/}" "$over/"; done
	ln -sf "$helper" "$over/mount.fuse.$fs"
	mount --bind "$over" "$sbin"
	mount -t "fuse.$fs" "$src" "$mnt" -o ro
	grep " $mnt fuse.$fs " /proc/mounts
	cmp "$data" "$mnt/data"
	umount "$mnt"
' sh "$helper" "$src" "$mnt" "$work/sbin" "$work/sbin.orig" "$fs" "$dir/data" ||
	fail "mount -t fuse.$fs"
echo "PASS"
