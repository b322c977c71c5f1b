/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * tarfs_zc: shared types (options, the file system).  The index is
 * immutable once built, so the handlers take no lock.
 */
#ifndef TARFS_H
#define TARFS_H

#include "fuse_zc.h"
#include "server.h"
#include "index.h"

#include <stdbool.h>
#include <stdint.h>

#define TARFS_VERSION "0.1.0"

/* Everything -o and the command line set; filled by one fuse_opt table. */
struct tarfs_config {
	char *archive;
	int mode;		/* enum srv_mode (common/server.h) */
	unsigned int threads;
	unsigned int max_readahead;
	int sync_lending;
	int server_replies;
	int stats;
	int progress;		/* 1 on, 0 off, -1 on a terminal */
	/* from fuse_parse_cmdline */
	int debug;
	int foreground;
	int singlethread;
	char *mountpoint;
};

struct tarfs_cmdline {
	struct tarfs_config cfg;
	struct srv_args pos;	/* ARCHIVE MOUNTPOINT, -o fsname */
};

struct tarfs_fs {
	struct tarfs_config cfg;
	struct tarfs_index *ix;
	int archive_fd;		/* buffered (never O_DIRECT): byte-granular lending */
	struct fuse_session *se;
	struct fusezc_session *zs;
	unsigned int raise_readahead_kb; /* set in init: more than INIT could give */
	bool no_open;		/* set in init: OPEN answered ENOSYS, no RELEASE */
	bool no_opendir;
};

/* A root server's read-ahead without -o max_readahead: one FUSE_READ of
 * 256 pages (libfuse's largest) per window. */
#define TARFS_DEFAULT_READAHEAD (1024 * 1024)

/* options.c */
void tarfs_help(const char *prog);
int tarfs_parse_options(struct fuse_args *args, struct tarfs_cmdline *cl);


/* ops.c */
void tarfs_ops_init(struct fuse_lowlevel_ops *ops);

#endif /* TARFS_H */
