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

#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

/*
 * Library notes go to stderr with -d or -o stats only; otherwise its last
 * error is kept for main's one-line message.
 */
static bool pzc_verbose;
static pthread_mutex_t pzc_lib_error_lock = PTHREAD_MUTEX_INITIALIZER;
static char pzc_lib_error[256];	/* pzc_lib_error_lock: workers log */

static void pzc_log(enum fuse_log_level level, const char *fmt, va_list ap)
{
	(void)level;
	vfprintf(stderr, fmt, ap);
}

/* The library's messages (fusezc_options.log), without prefix or newline. */
static void pzc_lib_log(enum fuse_log_level level, const char *msg, void *data)
{
	(void)data;
	if (pzc_verbose)
		fprintf(stderr, "fuse-zc: %s\n", msg);
	else if (level <= FUSE_LOG_ERR) {
		pthread_mutex_lock(&pzc_lib_error_lock);
		snprintf(pzc_lib_error, sizeof(pzc_lib_error), "%s", msg);
		pthread_mutex_unlock(&pzc_lib_error_lock);
	}
}

/* fusezc_options.init_done: on a worker, once. */
static void pzc_lib_init_done(struct fusezc_session *zs, int error, void *data)
{
	(void)zs;
	(void)data;
	pzc_startup_init_replied(error);
}

static void pzc_report_error(int err)
{
	char msg[sizeof(pzc_lib_error)];
	size_t n;

	pthread_mutex_lock(&pzc_lib_error_lock);
	memcpy(msg, pzc_lib_error, sizeof(msg));
	pthread_mutex_unlock(&pzc_lib_error_lock);
	n = strlen(msg);
	if (n && msg[n - 1] == '\n')
		msg[n - 1] = '\0';
	fprintf(stderr, "passthrough_zc: %s\n", *msg ? msg : strerror(-err));
}

/* -d or -o stats, at exit: the read mode in use and the statistics. */
static void pzc_print_report(struct pzc_fs *fs)
{
	const char *reason = fusezc_zerocopy_status(fs->zs);
	const char *fb = fs->cfg.mode == PZC_MODE_COPY ? "copy" : "splice";
	struct fusezc_write_stats wst;
	struct fusezc_stats st;
	struct rusage ru;

	if (fs->cfg.mode == PZC_MODE_COPY || fs->cfg.mode == PZC_MODE_SPLICE)
		fprintf(stderr, "passthrough_zc: read mode %s\n",
			pzc_mode_name(fs->cfg.mode));
	else if (fusezc_zerocopy_active(fs->zs))
		fprintf(stderr, "passthrough_zc: read mode zerocopy (active)\n");
	else
		fprintf(stderr, "passthrough_zc: read mode zerocopy unavailable "
			"(%s), falling back to %s\n", reason && *reason ? reason :
			"not offered by the kernel", fb);
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

/*
 * libfuse stops its workers with pthread_cancel(), and glibc loads the
 * unwinder (libgcc_s) on the first cancellation: with the fd table full at
 * that moment (every fd taken by files open through the mount) it cannot,
 * and aborts the daemon.  Loaded now, glibc finds it loaded then.  Kept
 * for the life of the process (the handle is never closed).
 */
static void pzc_load_unwinder(void)
{
	if (!dlopen("libgcc_s.so.1", RTLD_NOW | RTLD_NODELETE))
		fprintf(stderr, "passthrough_zc: cannot load libgcc_s.so.1 (%s): a stop "
			"with every fd in use would abort\n", dlerror());
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
	switch (fs->cfg.mode) {
	case PZC_MODE_COPY:
		zopts->read_mode = FUSEZC_READ_COPY;
		break;
	case PZC_MODE_SPLICE:
		zopts->read_mode = FUSEZC_READ_SPLICE;
		break;
	case PZC_MODE_ZEROCOPY_REQUIRED:
		zopts->zerocopy_required = true;
		/* fall through */
	default:
		zopts->read_mode = FUSEZC_READ_ZEROCOPY;
		break;
	}
	zopts->passthrough = fs->cfg.passthrough;
	zopts->server_replies = fs->cfg.server_replies;
	zopts->sync_lending = fs->cfg.sync_lending;
	zopts->zerocopy_writes = fs->cfg.zerocopy_write != 0;
	/*
	 * Node ids are inode pointers, valid only while the kernel holds a
	 * lookup: a file handle could not be opened again after the inode left
	 * its cache or after a remount.  Refuse handles instead of handing out
	 * ones that go stale.
	 */
	zopts->no_export_support = true;
	/* libfuse's loop: -s is one thread, -o threads=N is -o max_threads=N. */
	zopts->max_threads = fs->cfg.singlethread ? 1 :
			     fs->cfg.threads ? fs->cfg.threads : opts->max_threads;
	zopts->max_idle_threads = opts->max_idle_threads;
	zopts->clone_fd = opts->clone_fd;
	zopts->init_done = pzc_lib_init_done;
	zopts->log = pzc_lib_log;
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
	pthread_t startup;
	int root_fd = -1;
	int ret = 1, res;

	if (pzc_reserve_stdio() != 0)
		return 1;	/* not even /dev/null: no stderr to say so */
	umask(0);	/* the kernel applied the caller's umask already */

	if (pzc_parse_options(&args, &cl) != 0)
		goto out_args;
	if (fuse_parse_cmdline(&args, &opts) != 0)
		goto out_args;
	if (opts.show_help) {
		pzc_help(argv[0]);
		ret = 0;
		goto out_args;
	}
	if (opts.show_version) {
		printf("passthrough_zc version %s\n", PZC_VERSION);
		printf("libfuse version %s\n", fuse_pkgversion());
		fflush(stdout);
		fuse_lowlevel_version();
		ret = 0;
		goto out_args;
	}
	if (!opts.mountpoint) {
		fprintf(stderr, "passthrough_zc: no mountpoint "
			"(usage: passthrough_zc [options] SOURCE MOUNTPOINT)\n");
		goto out_args;
	}

	pzc_config_init(&fs, &cl, &opts);
	pzc_verbose = fs.cfg.debug || fs.cfg.stats;
	fuse_set_log_func(pzc_log);
	if (pzc_validate(&fs.cfg, &root_fd) != 0)
		goto out_args;
	pzc_raise_fd_limit();
	pzc_load_unwinder();
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
	    (!cl.has_fsname && pzc_add_fsname(&args, fs.cfg.source) != 0))
		goto out_itable;
	pzc_zc_options(&fs, &opts, &zopts);

	pzc_ops_init(&ops);
	se = fuse_session_new(&args, &ops, sizeof(ops), &fs);
	if (!se)
		goto out_itable;	/* libfuse said why (e.g. unknown option) */
	fs.se = se;
	if (!fs.cfg.foreground && pzc_fork_daemon() != 0)
		goto out_session;
	if (fuse_set_signal_handlers(se) != 0)
		goto out_session;
	if (fuse_session_mount(se, fs.cfg.mountpoint) != 0)
		goto out_signals;
	res = fusezc_session_new(se, &zopts, &fs.zs);
	if (res) {
		pzc_report_error(res);
		goto out_unmount;
	}
	res = pzc_lock_init(&fs);
	if (res) {
		pzc_report_error(res);
		goto out_zc;
	}
	if (!fs.cfg.foreground && chdir("/") == -1)
		goto out_zc;
	res = pzc_startup_start(&fs, &startup);
	if (res) {
		fprintf(stderr, "passthrough_zc: start-up thread: %s\n", strerror(-res));
		goto out_zc;
	}

	res = fusezc_session_loop(fs.zs);
	pzc_lock_shutdown(&fs);
	pzc_startup_stop(startup);	/* it uses fs: done before that goes */
	if (res == -EOPNOTSUPP && zopts.zerocopy_required) {
		const char *why = fusezc_zerocopy_status(fs.zs);

		fprintf(stderr, "passthrough_zc: zero copy required but not "
			"available: %s\n", why && *why ? why :
			"the kernel does not offer it");
	} else if (res < 0) {
		pzc_report_error(res);
	} else {
		ret = 0;	/* unmounted, or a signal number: a clean stop */
	}
	if (fs.cfg.stats || fs.cfg.debug)
		pzc_print_report(&fs);

out_zc:
	fuse_session_unmount(se);
	fusezc_session_destroy(fs.zs);
	fs.zs = NULL;
	goto out_signals;
out_unmount:
	fuse_session_unmount(se);
out_signals:
	fuse_remove_signal_handlers(se);
out_session:
	fuse_session_destroy(se);
out_itable:
	pzc_itable_destroy(&fs);
	close(root_fd);
out_args:
	pzc_creds_destroy(&fs);
	pzc_notify_parent(ret == 0);
	free(cl.nonopt[0]);
	free(cl.nonopt[1]);
	free(cl.cfg.source);
	free(opts.mountpoint);
	fuse_opt_free_args(&args);
	return ret;
}
