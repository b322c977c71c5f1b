// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Read-ahead above what FUSE_INIT can grant: the kernel offers its bdi
 * default (128 KiB) and keeps the minimum of that and the reply, so a
 * server that wants larger FUSE_READs (fewer, larger lendings) writes the
 * mount's bdi read_ahead_kb itself, found through /proc/self/mountinfo.
 * Reads only /proc and /sys: nothing on the mount, which must stay free to
 * unmount at any time.
 */
#include "fuse_zc.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Undo the octal escapes (\040 ...) of a /proc/self/mountinfo path, in place. */
static void unescape_mountinfo(char *s)
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
		unescape_mountinfo(path);
		if (strcmp(path, mnt) == 0) {
			snprintf(devno, len, "%s", dev);
			found = 0;
		}
	}
	fclose(f);
	return found;
}

int fusezc_set_readahead(const char *mountpoint, unsigned int kb)
{
	char mnt[PATH_MAX], devno[64], path[128];
	int err;
	FILE *f;

	if (!realpath(mountpoint, mnt))
		return -errno;
	err = mount_devno(mnt, devno, sizeof(devno));
	if (err)
		return err;
	snprintf(path, sizeof(path), "/sys/class/bdi/%s/read_ahead_kb", devno);
	f = fopen(path, "we");
	if (!f)
		return -errno;
	if (fprintf(f, "%u\n", kb) < 0)
		err = -EIO;
	if (fclose(f) != 0 && !err)
		err = -errno;
	return err;
}
