// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * passthrough_zc read-ahead above what FUSE_INIT can grant: the mount's
 * bdi, found through /proc/self/mountinfo, gets read_ahead_kb in sysfs.
 */
#include "pzc.h"

#include <string.h>

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
	int err = fusezc_set_readahead(fs->cfg.mountpoint, fs->raise_readahead_kb);

	if (err && (!fs->readahead_default || fs->cfg.debug))
		fuse_log(fs->readahead_default ? FUSE_LOG_DEBUG : FUSE_LOG_ERR,
			 "passthrough_zc: cannot raise the read-ahead "
			 "to %u KiB (%s); the kernel's stays\n",
			 fs->raise_readahead_kb, strerror(-err));
	else if (fs->cfg.debug)
		fuse_log(FUSE_LOG_DEBUG, "passthrough_zc: read-ahead of %s: %u KiB\n",
			 fs->cfg.mountpoint, fs->raise_readahead_kb);
}
