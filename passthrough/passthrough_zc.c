// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * passthrough_zc: a passthrough filesystem on the libfuse 3 low-level API
 * whose FUSE_READ replies go through libfuse-zc (zero copy where the kernel
 * offers it, else splice, else copy), optionally with kernel passthrough.
 *
 *	passthrough_zc [options] SOURCE MOUNTPOINT
 *	passthrough_zc [options] -o source=SOURCE MOUNTPOINT
 *
 * This file: main, messages and the report at exit.  Options and checks:
 * options.c; operations: ops.c, dir.c, file.c (inodes: inode.c, caller
 * credentials: creds.c, flock waits: lock.c); start-up and the daemon:
 * daemon.c; read-ahead: bdi.c.
 */
#include "pzc.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

/* After INIT, on the start-up thread: the read-ahead INIT could not give. */
static void pzc_after_init(void *data)
{
	struct pzc_fs *fs = data;

	if (fs->raise_readahead_kb)
		srv_raise_readahead(fs->cfg.mountpoint, fs->raise_readahead_kb,
				    !fs->readahead_default, fs->cfg.debug);
}

/* -d or -o stats, at exit: the read mode in use and the statistics. */
static void pzc_print_report(struct pzc_fs *fs)
{
	struct fusezc_write_stats wst;
	struct fusezc_stats st;
	struct rusage ru;

	srv_print_read_mode(fs->zs, fs->cfg.mode);
	if (fusezc_zerocopy_active(fs->zs) && fs->cfg.zerocopy_write != 0)
		fprintf(stderr, "passthrough_zc: zero-copy writes %s\n",
			fusezc_zerocopy_writes_active(fs->zs) ? "active" :
			"not offered by the kernel, writes are copied");
	if (fs->cfg.passthrough)
		fprintf(stderr, "passthrough_zc: passthrough %s\n",
			fusezc_passthrough_active(fs->zs) ? "active" :
			"unavailable, using the read mode");

	fusezc_get_stats(fs->zs, &st);
	fusezc_get_write_stats(fs->zs, &wst);
	/* All threads, io-wq workers and exited ones included: the bench's
	 * context switches per request. */
	if (getrusage(RUSAGE_SELF, &ru))
		memset(&ru, 0, sizeof(ru));
	fprintf(stderr, "passthrough_zc: stats: zc_bytes=%" PRIu64
		" zc_requests=%" PRIu64 " zc_kernel_answered=%" PRIu64
		" splice_bytes=%" PRIu64
		" splice_requests=%" PRIu64 " copy_bytes=%" PRIu64
		" copy_requests=%" PRIu64 " fallbacks=%" PRIu64
		" fallback_eopnotsupp=%" PRIu64 " fallback_eperm=%" PRIu64
		" fallback_enoent_einval=%" PRIu64 " fallback_other=%" PRIu64
		" zerocopy_active=%d passthrough_active=%d"
		" zc_write_bytes=%" PRIu64 " zc_write_requests=%" PRIu64
		" zc_write_kernel_answered=%" PRIu64 " memfd_write_bytes=%" PRIu64
		" copy_write_bytes=%" PRIu64 " zerocopy_writes_active=%d"
		" voluntary_ctxsw=%ld involuntary_ctxsw=%ld\n",
		st.zc_bytes, st.zc_requests, st.zc_kernel_answered,
		st.splice_bytes, st.splice_requests,
		st.copy_bytes, st.copy_requests, st.fallbacks,
		st.fallback_errno_counts[0], st.fallback_errno_counts[1],
		st.fallback_errno_counts[2], st.fallback_errno_counts[3],
		fusezc_zerocopy_active(fs->zs), fusezc_passthrough_active(fs->zs),
		wst.zc_bytes, wst.zc_requests, wst.zc_kernel_answered, wst.memfd_bytes,
		wst.copy_bytes, fusezc_zerocopy_writes_active(fs->zs),
		ru.ru_nvcsw, ru.ru_nivcsw);
}

/*
 * Every open file holds a fd of the source, and inodes without a file handle
 * an O_PATH fd each (inode.c): the default soft limit of 1024 would turn a
 * big tree into EMFILE.  Take the hard limit.
 */
static void pzc_raise_fd_limit(void)
{
	struct rlimit lim;

	if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
		lim.rlim_cur = lim.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &lim) == -1)
			fprintf(stderr, "passthrough_zc: cannot raise the open file limit: %s\n",
				strerror(errno));
	}
}

/* Mounted, before the loop: the flock waiters' state (lock.c). */
static int pzc_before_loop(void *data)
{
	return pzc_lock_init(data);
}

static void pzc_after_loop(void *data)
{
	pzc_lock_shutdown(data);
}

static void pzc_report(void *data)
{
	struct pzc_fs *fs = data;

	if (fs->cfg.stats || fs->cfg.debug)
		pzc_print_report(fs);
}

/* The configuration from our options and libfuse's command line. */
static void pzc_config_init(struct pzc_fs *fs, const struct pzc_cmdline *cl,
			    const struct fuse_cmdline_opts *opts)
{
	fs->cfg = cl->cfg;
	fs->cfg.debug = opts->debug;
	fs->cfg.foreground = opts->foreground;
	fs->cfg.singlethread = opts->singlethread;
	fs->cfg.mountpoint = opts->mountpoint;
	fs->pagesize = sysconf(_SC_PAGESIZE);
	atomic_store(&fs->passthrough_ok, true);
	if (!fs->cfg.timeout_set)
		fs->cfg.timeout = fs->cfg.cache == PZC_CACHE_NEVER ? 0.0 :
				  fs->cfg.cache == PZC_CACHE_ALWAYS ? 86400.0 : 1.0;
}

/* What libfuse-zc is asked for. */
static void pzc_zc_options(const struct pzc_fs *fs,
			   const struct fuse_cmdline_opts *opts,
			   struct fusezc_options *zopts)
{
	srv_read_mode_options(fs->cfg.mode, zopts);
	zopts->passthrough = fs->cfg.passthrough;
	zopts->server_replies = fs->cfg.server_replies;
	zopts->sync_lending = fs->cfg.sync_lending;
	zopts->ring_read = fs->cfg.ring_read;
	zopts->zerocopy_writes = fs->cfg.zerocopy_write != 0;
	/*
	 * Node ids are inode pointers, valid only while the kernel holds a
	 * lookup: a file handle could not be opened again after the inode left
	 * its cache or after a remount.  Refuse handles instead of handing out
	 * ones that go stale.
	 */
	zopts->no_export_support = true;
	srv_thread_options(fs->cfg.singlethread, fs->cfg.threads, opts, zopts);
}

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct fusezc_options zopts = { 0 };
	static struct pzc_cmdline cl;
	static struct pzc_fs fs;
	struct fuse_cmdline_opts opts = { 0 };
	struct fuse_lowlevel_ops ops;
	struct fuse_session *se;
	struct srv_hooks hooks;
	int root_fd = -1;
	int ret = 1, res;

	srv_init("passthrough_zc", PZC_VERSION, "SOURCE");
	if (srv_reserve_stdio() != 0)
		return 1;	/* not even /dev/null: no stderr to say so */
	umask(0);	/* the kernel applied the caller's umask already */

	if (pzc_parse_options(&args, &cl) != 0)
		goto out_args;
	res = srv_parse_cmdline(&args, &opts, pzc_help, argv[0], NULL);
	if (res <= 0) {
		ret = -res;
		goto out_args;
	}

	pzc_config_init(&fs, &cl, &opts);
	srv_log_init(fs.cfg.debug || fs.cfg.stats);
	if (pzc_validate(&fs.cfg, &root_fd) != 0)
		goto out_args;
	pzc_raise_fd_limit();
	srv_load_unwinder();
	res = pzc_creds_init(&fs);
	if (!res)
		res = pzc_itable_init(&fs, root_fd);
	if (res) {
		fprintf(stderr, "passthrough_zc: %s\n", strerror(-res));
		close(root_fd);
		goto out_args;
	}

	/* The daemon acts for every user: let the kernel check permissions. */
	if (fuse_opt_add_arg(&args, "-odefault_permissions") == -1 ||
	    (!cl.pos.has_fsname && srv_add_fsname(&args, fs.cfg.source) != 0))
		goto out_itable;
	pzc_zc_options(&fs, &opts, &zopts);

	pzc_ops_init(&ops);
	se = fuse_session_new(&args, &ops, sizeof(ops), &fs);
	if (!se)
		goto out_itable;	/* libfuse said why (e.g. unknown option) */
	fs.se = se;
	hooks = (struct srv_hooks){
		.before_loop = pzc_before_loop,
		.after_loop = pzc_after_loop,
		.after_init = pzc_after_init,
		.report = pzc_report,
		.keep_stderr = fs.cfg.debug,
	};
	ret = srv_serve(se, fs.cfg.mountpoint, fs.cfg.foreground, &zopts, &fs.zs,
			&hooks, &fs);
	fuse_session_destroy(se);
out_itable:
	pzc_itable_destroy(&fs);
	close(root_fd);
out_args:
	pzc_creds_destroy(&fs);
	srv_notify_parent(ret == 0);
	srv_args_free(&cl.pos);
	free(cl.cfg.source);
	free(opts.mountpoint);
	fuse_opt_free_args(&args);
	return ret;
}
