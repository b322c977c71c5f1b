/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * What the project's file systems (passthrough_zc, tarfs_zc) share around
 * their FUSE operations: the command line's two arguments and read-mode
 * words, the daemon whose parent waits for the kernel's answer to INIT,
 * libfuse-zc's messages, and the end of the loop.  One file system per
 * process: the state here is global, set once by srv_init().
 */
#ifndef FZC_SERVER_H
#define FZC_SERVER_H

#include "fuse_zc.h"

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

/* Read-mode words of -o; SRV_MODE_DEFAULT is zero copy with fallback. */
enum srv_mode {
	SRV_MODE_DEFAULT,
	SRV_MODE_ZEROCOPY,
	SRV_MODE_ZEROCOPY_REQUIRED,
	SRV_MODE_SPLICE,
	SRV_MODE_COPY,
};

/* One line of --help. */
struct srv_option_doc {
	const char *usage;
	const char *help;
};

/* The command line's non-options (SOURCE MOUNTPOINT), from a fuse_opt proc. */
struct srv_args {
	char *nonopt[2];
	int nnonopt;
	int too_many;
	int has_fsname;		/* -o fsname= given: set by the fuse_opt table */
};

/* A server's steps in srv_serve(), each optional, each given its data. */
struct srv_hooks {
	int (*before_loop)(void *data);		/* mounted; 0 or -errno */
	void (*after_loop)(void *data);		/* when before_loop succeeded */
	void (*after_init)(void *data);		/* start-up thread, after INIT */
	void (*report)(void *data);		/* the loop ran: -d / -o stats */
	bool keep_stderr;			/* daemon: stderr not detached */
};

/* args.c */
void srv_init(const char *name, const char *version, const char *source_word);
int srv_args_proc(struct srv_args *pa, const char *arg, int key);
int srv_args_finish(struct srv_args *pa, struct fuse_args *args, char **source);
void srv_args_free(struct srv_args *pa);
int srv_add_fsname(struct fuse_args *args, const char *source);
void srv_help(const char *prog, const struct srv_option_doc *docs, size_t ndocs);
void srv_read_mode_options(int mode, struct fusezc_options *zopts);
void srv_thread_options(bool singlethread, unsigned int threads,
			const struct fuse_cmdline_opts *opts,
			struct fusezc_options *zopts);
int srv_parse_cmdline(struct fuse_args *args, struct fuse_cmdline_opts *opts,
		      void (*help)(const char *prog), const char *prog,
		      const char *no_source);

/* serve.c */
int srv_serve(struct fuse_session *se, const char *mountpoint, bool foreground,
	      struct fusezc_options *zopts, struct fusezc_session **zs,
	      const struct srv_hooks *hooks, void *data);

/* daemon.c */
void srv_notify_parent(bool ok);
int srv_reserve_stdio(void);
void srv_load_unwinder(void);
void srv_raise_readahead(const char *mountpoint, unsigned int kb, bool asked,
			 bool debug);

/* messages.c */
void srv_log_init(bool verbose);
void srv_print_read_mode(struct fusezc_session *zs, int mode);

#endif /* FZC_SERVER_H */
