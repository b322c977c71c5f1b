// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * tarfs_zc options: the fuse_opt table into struct tarfs_config, and
 * --help from one table of option docs (the man page docs/tarfs_zc.1 and
 * tarfs/README.md list the same names; tests/tarfs/test_tarfs.py checks).
 */
#include "tarfs.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TARFS_OPT(t, m, v) { t, offsetof(struct tarfs_cmdline, cfg.m), v }

static const struct fuse_opt tarfs_opts[] = {
	TARFS_OPT("source=%s", archive, 0),
	TARFS_OPT("zerocopy", mode, TARFS_MODE_ZEROCOPY),
	TARFS_OPT("zerocopy=required", mode, TARFS_MODE_ZEROCOPY_REQUIRED),
	TARFS_OPT("splice", mode, TARFS_MODE_SPLICE),
	TARFS_OPT("copy", mode, TARFS_MODE_COPY),
	TARFS_OPT("threads=%u", threads, 0),
	TARFS_OPT("max_readahead=%u", max_readahead, 0),
	TARFS_OPT("sync_lending", sync_lending, 1),
	TARFS_OPT("server_replies", server_replies, 1),
	TARFS_OPT("stats", stats, 1),
	TARFS_OPT("progress", progress, 1),
	TARFS_OPT("no_progress", progress, 0),
	{ "fsname=", offsetof(struct tarfs_cmdline, has_fsname), 1 },
	FUSE_OPT_KEY("fsname=", FUSE_OPT_KEY_KEEP),
	FUSE_OPT_END
};

static const struct {
	const char *usage;
	const char *help;
} tarfs_option_docs[] = {
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
	printf("usage: %s [options] ARCHIVE MOUNTPOINT\n"
	       "       %s [options] -o source=ARCHIVE MOUNTPOINT\n\n", prog, prog);
	printf("tarfs_zc options:\n");
	for (size_t i = 0; i < sizeof(tarfs_option_docs) / sizeof(tarfs_option_docs[0]); i++)
		printf("    -o %-24s %s\n", tarfs_option_docs[i].usage,
		       tarfs_option_docs[i].help);
	printf("\n");
	fuse_cmdline_help();
	fuse_lowlevel_help();
}

static int tarfs_opt_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
	struct tarfs_cmdline *cl = data;

	(void)outargs;
	if (key != FUSE_OPT_KEY_NONOPT)
		return 1;
	if (cl->nnonopt == 2) {
		cl->too_many = 1;
		return 0;
	}
	cl->nonopt[cl->nnonopt] = strdup(arg);
	if (!cl->nonopt[cl->nnonopt])
		return -1;
	cl->nnonopt++;
	return 0;
}

/* Our -o options and the two arguments: ARCHIVE into cl->cfg.archive,
 * MOUNTPOINT left in @args for fuse_parse_cmdline().  0 or -EINVAL. */
int tarfs_parse_options(struct fuse_args *args, struct tarfs_cmdline *cl)
{
	cl->cfg.progress = -1;
	if (fuse_opt_parse(args, cl, tarfs_opts, tarfs_opt_proc) == -1)
		return -EINVAL;
	if (cl->too_many) {
		fprintf(stderr, "tarfs_zc: too many arguments "
			"(usage: tarfs_zc [options] ARCHIVE MOUNTPOINT)\n");
		return -EINVAL;
	}
	if (cl->nnonopt == 2) {
		if (cl->cfg.archive) {
			fprintf(stderr, "tarfs_zc: archive given twice (argument and -o source=)\n");
			return -EINVAL;
		}
		cl->cfg.archive = cl->nonopt[0];
		cl->nonopt[0] = NULL;
	}
	if (cl->nnonopt && fuse_opt_add_arg(args, cl->nonopt[cl->nnonopt - 1]) == -1)
		return -ENOMEM;
	return 0;
}

const char *tarfs_mode_name(int mode)
{
	switch (mode) {
	case TARFS_MODE_COPY:
		return "copy";
	case TARFS_MODE_SPLICE:
		return "splice";
	case TARFS_MODE_ZEROCOPY_REQUIRED:
		return "zerocopy=required";
	default:
		return "zerocopy";
	}
}

/* -o fsname=SOURCE with libfuse's option escapes; 0 or -ENOMEM. */
int tarfs_add_fsname(struct fuse_args *args, const char *source)
{
	size_t len = strlen(source);
	char *opt = malloc(len * 2 + sizeof("-ofsname="));
	char *p;
	int res;

	if (!opt)
		return -ENOMEM;
	p = stpcpy(opt, "-ofsname=");
	for (; *source; source++) {
		if (*source == ',' || *source == '\\')
			*p++ = '\\';
		*p++ = *source;
	}
	*p = '\0';
	res = fuse_opt_add_arg(args, opt);
	free(opt);
	return res == -1 ? -ENOMEM : 0;
}
