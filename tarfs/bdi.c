// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * tarfs_zc read-ahead above what FUSE_INIT can grant (as passthrough_zc's
 * bdi.c): the mount's bdi, found through /proc/self/mountinfo, gets
 * read_ahead_kb in sysfs once the kernel has processed the INIT reply.
 */
#include "tarfs.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Undo the octal escapes (\040 ...) of a /proc/self/mountinfo path, in place. */
static void unescape(char *s)
{
	char *d = s;

	for (; *s; s++, d++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' &&
		    s[2] <= '7' && s[3] >= '0' && s[3] <= '7') {
			*d = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
			s += 3;
		} else {
			*d = *s;
		}
	}
	*d = '\0';
}

/* "major:minor" of the newest mount on @mnt, from mountinfo; -errno. */
static int mount_devno(const char *mnt, char *devno, size_t len)
{
	char line[4096], dev[64], path[PATH_MAX];
	int found = -ENOENT;
	FILE *f;

	f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%*s %*s %63s %*s %4095s", dev, path) != 2)
			continue;
		unescape(path);
		if (strcmp(path, mnt) == 0) {
			snprintf(devno, len, "%s", dev);
			found = 0;
		}
	}
	fclose(f);
	return found;
}

/*
 * -o max_readahead (or, without it, a root server's default of 1 MiB: one
 * FUSE_READ of 256 pages per window) above the kernel's INIT offer: write
 * the bdi's read_ahead_kb.  Needs root with a writable sysfs; otherwise one
 * line (only with -d for the default) and the kernel's value stays.
 * Reads only /proc and /sys, nothing on the mount.
 */
void tarfs_raise_readahead(struct tarfs_fs *fs)
{
	char mnt[PATH_MAX], devno[64], path[128];
	int err = 0;
	FILE *f;

	if (!fs->raise_readahead_kb)
		return;
	if (!realpath(fs->cfg.mountpoint, mnt))
		err = -errno;
	if (!err)
		err = mount_devno(mnt, devno, sizeof(devno));
	if (!err) {
		snprintf(path, sizeof(path), "/sys/class/bdi/%s/read_ahead_kb", devno);
		f = fopen(path, "we");
		if (!f)
			err = -errno;
		else if (fprintf(f, "%u\n", fs->raise_readahead_kb) < 0)
			err = -EIO;
		if (f && fclose(f) != 0 && !err)
			err = -errno;
	}
	if (err && (fs->cfg.max_readahead || fs->cfg.debug))
		fprintf(stderr, "tarfs_zc: cannot raise the read-ahead to %u KiB (%s); "
			"the kernel's stays\n", fs->raise_readahead_kb, strerror(-err));
}
