// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * passthrough_zc read-ahead above what FUSE_INIT can grant: the mount's
 * bdi, found through /proc/self/mountinfo, gets read_ahead_kb in sysfs.
 */
#include "pzc.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Undo the octal escapes (\040 ...) of a /proc/self/mountinfo path, in place. */
static void pzc_unescape(char *s)
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
static int pzc_mount_devno(const char *mnt, char *devno, size_t len)
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
		pzc_unescape(path);
		if (strcmp(path, mnt) == 0) {
			snprintf(devno, len, "%s", dev);
			found = 0;
		}
	}
	fclose(f);
	return found;
}

/*
 * -o max_readahead (or, without it, a root server's default) above what
 * FUSE_INIT can grant (the kernel offers its bdi default, 128 KiB, and
 * keeps the minimum): raise the mount's bdi read_ahead_kb once the kernel
 * has processed the INIT reply, which would lower it again.  Needs root
 * with a writable sysfs; otherwise one line (a debug line for the default)
 * and the kernel's value.
 * Reads only /proc and /sys: nothing on the mount, which must stay free to
 * unmount at any time.
 */
void pzc_raise_readahead(struct pzc_fs *fs)
{
	char mnt[PATH_MAX], devno[64], path[128];
	int err = 0;
	FILE *f;

	if (!realpath(fs->cfg.mountpoint, mnt))
		err = -errno;
	if (!err)
		err = pzc_mount_devno(mnt, devno, sizeof(devno));
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
	if (err && (!fs->readahead_default || fs->cfg.debug))
		fuse_log(fs->readahead_default ? FUSE_LOG_DEBUG : FUSE_LOG_ERR,
			 "passthrough_zc: cannot raise the read-ahead "
			 "to %u KiB (%s); the kernel's stays\n",
			 fs->raise_readahead_kb, strerror(-err));
	else if (fs->cfg.debug)
		fuse_log(FUSE_LOG_DEBUG, "passthrough_zc: read-ahead of bdi %s: %u KiB\n",
			 devno, fs->raise_readahead_kb);
}
