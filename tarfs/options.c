// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * tarfs_zc options: the fuse_opt table into struct tarfs_config, and
 * --help from one table of option docs (the man page docs/tarfs_zc.1 and
 * tarfs/README.md list the same names; tests/tarfs/test_tarfs.py checks).
 */
#include "tarfs.h"

#include <errno.h>
#include <stddef.h>

#define TARFS_OPT(t, m, v) { t, offsetof(struct tarfs_cmdline, cfg.m), v }

static const struct fuse_opt tarfs_opts[] = {
	TARFS_OPT("source=%s", archive, 0),
	TARFS_OPT("zerocopy", mode, SRV_MODE_ZEROCOPY),
	TARFS_OPT("zerocopy=required", mode, SRV_MODE_ZEROCOPY_REQUIRED),
	TARFS_OPT("splice", mode, SRV_MODE_SPLICE),
	TARFS_OPT("copy", mode, SRV_MODE_COPY),
	TARFS_OPT("threads=%u", threads, 0),
	TARFS_OPT("max_readahead=%u", max_readahead, 0),
	TARFS_OPT("sync_lending", sync_lending, 1),
	TARFS_OPT("server_replies", server_replies, 1),
	TARFS_OPT("stats", stats, 1),
	TARFS_OPT("progress", progress, 1),
	TARFS_OPT("no_progress", progress, 0),
	{ "fsname=", offsetof(struct tarfs_cmdline, pos.has_fsname), 1 },
	FUSE_OPT_KEY("fsname=", FUSE_OPT_KEY_KEEP),
	FUSE_OPT_END
};

static const struct srv_option_doc tarfs_option_docs[] = {
	{ "source=ARCHIVE", "the tar archive (instead of ARCHIVE)" },
	{ "zerocopy", "zero-copy reads, falling back to splice (default)" },
	{ "zerocopy=required", "refuse to run unless the kernel offers zero copy" },
	{ "splice", "splice reads into /dev/fuse" },
	{ "copy", "read into a buffer and copy" },
	{ "threads=N", "worker threads (as -o max_threads=N)" },
	{ "max_readahead=N", "read-ahead (bytes; default 1 MiB as root, else 128 KiB)" },
	{ "sync_lending", "zerocopy: wait for each lending before the next request" },
	{ "server_replies", "zerocopy: the server writes each reply, not the kernel" },
	{ "[no_]progress", "indexing progress on stderr (default: on a terminal)" },
	{ "stats", "print read statistics to stderr at unmount" },
};

void tarfs_help(const char *prog)
{
	srv_help(prog, tarfs_option_docs,
		 sizeof(tarfs_option_docs) / sizeof(tarfs_option_docs[0]));
}

static int tarfs_opt_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
	struct tarfs_cmdline *cl = data;

	(void)outargs;
	return srv_args_proc(&cl->pos, arg, key);
}

/* Our -o options and the two arguments: ARCHIVE into cl->cfg.archive,
 * MOUNTPOINT left in @args for fuse_parse_cmdline().  0 or -EINVAL. */
int tarfs_parse_options(struct fuse_args *args, struct tarfs_cmdline *cl)
{
	cl->cfg.progress = -1;
	if (fuse_opt_parse(args, cl, tarfs_opts, tarfs_opt_proc) == -1)
		return -EINVAL;
	return srv_args_finish(&cl->pos, args, &cl->cfg.archive);
}
