// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * tarfs_zc: a tar archive mounted read-only, each FUSE_READ served from
 * the archive file through libfuse-zc (zero copy where the kernel offers
 * it, else splice, else copy).
 *
 *	tarfs_zc [options] ARCHIVE MOUNTPOINT
 *
 * This file: main, the daemon and its waiting parent, the report at exit.
 * The index: index.c; options: options.c; operations: ops.c.
 */
#include "tarfs.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static bool tarfs_verbose;
static pthread_mutex_t tarfs_err_lock = PTHREAD_MUTEX_INITIALIZER;
static char tarfs_lib_error[256];
static atomic_int tarfs_notify_fd = -1;

static void tarfs_log(enum fuse_log_level level, const char *fmt, va_list ap)
{
	(void)level;
	vfprintf(stderr, fmt, ap);
}

static void tarfs_lib_log(enum fuse_log_level level, const char *msg, void *data)
{
	(void)data;
	if (tarfs_verbose)
		fprintf(stderr, "fuse-zc: %s\n", msg);
	else if (level <= FUSE_LOG_ERR) {
		pthread_mutex_lock(&tarfs_err_lock);
		snprintf(tarfs_lib_error, sizeof(tarfs_lib_error), "%s", msg);
		pthread_mutex_unlock(&tarfs_err_lock);
	}
}

/* Daemon mode: tell the waiting parent how start-up ended; once. */
static void tarfs_notify_parent(bool ok)
{
	int fd = atomic_exchange(&tarfs_notify_fd, -1);
	unsigned char status = ok ? 0 : 1;

	if (fd < 0)
		return;
	if (ok) {
		int nullfd = open("/dev/null", O_RDWR | O_CLOEXEC);

		if (nullfd >= 0) {
			(void)dup2(nullfd, STDIN_FILENO);
			(void)dup2(nullfd, STDOUT_FILENO);
			if (!tarfs_verbose)
				(void)dup2(nullfd, STDERR_FILENO);
			close(nullfd);
		}
	}
	(void)!write(fd, &status, 1);
	close(fd);
}

/*
 * -o max_readahead (or, without it, a root server's default of 1 MiB: one
 * FUSE_READ of 256 pages per window) above the kernel's INIT offer.  Needs
 * root with a writable sysfs; otherwise one line (only with -d for the
 * default) and the kernel's value stays.
 */
static void tarfs_raise_readahead(struct tarfs_fs *fs)
{
	int err;

	if (!fs->raise_readahead_kb)
		return;
	err = fusezc_set_readahead(fs->cfg.mountpoint, fs->raise_readahead_kb);
	if (err && (fs->cfg.max_readahead || fs->cfg.debug))
		fprintf(stderr, "tarfs_zc: cannot raise the read-ahead to %u KiB (%s); "
			"the kernel's stays\n", fs->raise_readahead_kb, strerror(-err));
}

/* fusezc_options.init_done: the kernel took INIT (0) or INIT failed. */
static void tarfs_init_done(struct fusezc_session *zs, int error, void *data)
{
	(void)zs;
	if (error)
		return;
	tarfs_raise_readahead(data);
	tarfs_notify_parent(true);
}

/* Fork; the parent waits for the child's word and exits with it. */
static int tarfs_fork_daemon(void)
{
	unsigned char status = 1;
	int pfd[2];
	pid_t pid;

	if (pipe2(pfd, O_CLOEXEC) == -1)
		return -errno;
	pid = fork();
	if (pid == -1) {
		close(pfd[0]);
		close(pfd[1]);
		return -errno;
	}
	if (pid) {
		close(pfd[1]);
		if (read(pfd[0], &status, 1) != 1)
			status = 1;	/* the child died before reporting */
		_exit(status);
	}
	close(pfd[0]);
	atomic_store(&tarfs_notify_fd, pfd[1]);
	if (setsid() == -1)
		return -errno;
	return 0;
}

struct progress {
	const char *archive;
	struct timespec start, last;
	bool shown;
	bool forced;		/* -o progress: also for quick archives */
};

/* A progress line on a terminal, for archives that take a while. */
static void tarfs_progress(uint64_t members, uint64_t pos, uint64_t size, void *data)
{
	struct progress *pr = data;
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	if (pos < size && (now.tv_sec - pr->last.tv_sec) * 1000 +
	    (now.tv_nsec - pr->last.tv_nsec) / 1000000 < 500)
		return;
	if (!pr->forced && !pr->shown && (pos >= size || now.tv_sec - pr->start.tv_sec < 1))
		return;		/* quick archives show nothing on a terminal */
	pr->last = now;
	pr->shown = true;
	fprintf(stderr, "\rtarfs_zc: indexing %s: %" PRIu64 " members, %3.0f%%%s",
		pr->archive, members, size ? 100.0 * (double)pos / (double)size : 100.0,
		pos >= size ? "\n" : "");
}

static void tarfs_print_report(struct tarfs_fs *fs)
{
	const char *reason = fusezc_zerocopy_status(fs->zs);
	struct fusezc_stats st;

	if (fs->cfg.mode == TARFS_MODE_COPY || fs->cfg.mode == TARFS_MODE_SPLICE)
		fprintf(stderr, "tarfs_zc: read mode %s\n", tarfs_mode_name(fs->cfg.mode));
	else if (fusezc_zerocopy_active(fs->zs))
		fprintf(stderr, "tarfs_zc: read mode zerocopy (active)\n");
	else
		fprintf(stderr, "tarfs_zc: read mode zerocopy unavailable (%s), falling "
			"back to splice\n", reason && *reason ? reason :
			"not offered by the kernel");
	fusezc_get_stats(fs->zs, &st);
	fprintf(stderr, "tarfs_zc: stats: zc_bytes=%" PRIu64 " zc_requests=%" PRIu64
		" zc_kernel_answered=%" PRIu64 " splice_bytes=%" PRIu64
		" splice_requests=%" PRIu64 " copy_bytes=%" PRIu64 " copy_requests=%" PRIu64
		" fallbacks=%" PRIu64 " zerocopy_active=%d members=%" PRIu64
		" index_bytes=%zu\n", st.zc_bytes, st.zc_requests, st.zc_kernel_answered,
		st.splice_bytes, st.splice_requests, st.copy_bytes, st.copy_requests,
		st.fallbacks, fusezc_zerocopy_active(fs->zs), fs->ix->members,
		tarfs_index_bytes(fs->ix));
}

static void tarfs_zc_options(struct tarfs_fs *fs, const struct fuse_cmdline_opts *opts,
			     struct fusezc_options *z)
{
	switch (fs->cfg.mode) {
	case TARFS_MODE_COPY:
		z->read_mode = FUSEZC_READ_COPY;
		break;
	case TARFS_MODE_SPLICE:
		z->read_mode = FUSEZC_READ_SPLICE;
		break;
	case TARFS_MODE_ZEROCOPY_REQUIRED:
		z->zerocopy_required = true;
		/* fall through */
	default:
		z->read_mode = FUSEZC_READ_ZEROCOPY;
		break;
	}
	z->sync_lending = fs->cfg.sync_lending;
	z->server_replies = fs->cfg.server_replies;
	z->no_export_support = true;
	z->max_threads = fs->cfg.singlethread ? 1 :
			 fs->cfg.threads ? fs->cfg.threads : opts->max_threads;
	z->max_idle_threads = opts->max_idle_threads;
	z->clone_fd = opts->clone_fd;
	z->init_done = tarfs_init_done;
	z->event_data = fs;
	z->log = tarfs_lib_log;
}

/* Open the archive and build the index; one line on stderr when not. */
static int tarfs_load(struct tarfs_fs *fs)
{
	struct tarfs_index_opts io = { .uid = getuid(), .gid = getgid() };
	struct progress pr = { .archive = fs->cfg.archive };
	char err[512];
	struct stat st;
	int res;

	/* buffered: a lending reads the page cache, byte-granular, so members
	 * at any 512-byte offset are lent as they are (O_DIRECT is not) */
	fs->archive_fd = open(fs->cfg.archive, O_RDONLY | O_CLOEXEC);
	if (fs->archive_fd < 0) {
		res = -errno;
		fprintf(stderr, "tarfs_zc: %s: %s\n", fs->cfg.archive, strerror(-res));
		return res;
	}
	if (fstat(fs->archive_fd, &st) == -1 || !S_ISREG(st.st_mode)) {
		fprintf(stderr, "tarfs_zc: %s: not a regular file\n", fs->cfg.archive);
		return -EINVAL;
	}
	io.mtime = st.st_mtim.tv_sec;
	clock_gettime(CLOCK_MONOTONIC, &pr.start);
	pr.last = pr.start;
	pr.forced = fs->cfg.progress > 0;
	if (fs->cfg.progress > 0 || (fs->cfg.progress < 0 && isatty(STDERR_FILENO))) {
		io.progress = tarfs_progress;
		io.progress_data = &pr;
	}
	res = tarfs_index_build(fs->archive_fd, &io, &fs->ix, err, sizeof(err));
	if (res) {
		if (pr.shown)
			fputc('\n', stderr);
		fprintf(stderr, "tarfs_zc: %s: %s\n", fs->cfg.archive, err);
	} else if (fs->ix->skipped_dotdot) {
		fprintf(stderr, "tarfs_zc: %s: %" PRIu64 " member(s) with '..' in the "
			"name not served (GNU tar does not extract them either)\n",
			fs->cfg.archive, fs->ix->skipped_dotdot);
	}
	return res;
}

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct fusezc_options zopts = { 0 };
	static struct tarfs_cmdline cl;
	static struct tarfs_fs fs = { .archive_fd = -1 };
	struct fuse_cmdline_opts opts = { 0 };
	struct fuse_lowlevel_ops ops;
	struct fuse_session *se;
	int ret = 1, res;

	if (tarfs_parse_options(&args, &cl) != 0)
		goto out_args;
	if (fuse_parse_cmdline(&args, &opts) != 0)
		goto out_args;
	if (opts.show_help) {
		tarfs_help(argv[0]);
		ret = 0;
		goto out_args;
	}
	if (opts.show_version) {
		printf("tarfs_zc version %s\n", TARFS_VERSION);
		printf("libfuse version %s\n", fuse_pkgversion());
		fflush(stdout);
		fuse_lowlevel_version();
		ret = 0;
		goto out_args;
	}
	if (!cl.cfg.archive) {
		fprintf(stderr, "tarfs_zc: no archive "
			"(usage: tarfs_zc [options] ARCHIVE MOUNTPOINT)\n");
		goto out_args;
	}
	if (!opts.mountpoint) {
		fprintf(stderr, "tarfs_zc: no mountpoint "
			"(usage: tarfs_zc [options] ARCHIVE MOUNTPOINT)\n");
		goto out_args;
	}
	fs.cfg = cl.cfg;
	fs.cfg.debug = opts.debug;
	fs.cfg.foreground = opts.foreground;
	fs.cfg.singlethread = opts.singlethread;
	fs.cfg.mountpoint = opts.mountpoint;
	tarfs_verbose = fs.cfg.debug || fs.cfg.stats;
	fuse_set_log_func(tarfs_log);

	/* the index before anything is mounted: a bad archive fails here */
	if (tarfs_load(&fs) != 0)
		goto out_fs;
	if (access("/dev/fuse", R_OK | W_OK) == -1) {
		fprintf(stderr, "tarfs_zc: cannot use /dev/fuse: %s\n", strerror(errno));
		goto out_fs;
	}
	if (fuse_opt_add_arg(&args, "-oro") == -1 ||
	    fuse_opt_add_arg(&args, "-odefault_permissions") == -1 ||
	    (!cl.has_fsname && tarfs_add_fsname(&args, fs.cfg.archive) != 0))
		goto out_fs;
	tarfs_zc_options(&fs, &opts, &zopts);
	tarfs_ops_init(&ops);
	se = fuse_session_new(&args, &ops, sizeof(ops), &fs);
	if (!se)
		goto out_fs;
	fs.se = se;
	if (!fs.cfg.foreground && tarfs_fork_daemon() != 0) {
		fprintf(stderr, "tarfs_zc: cannot start the daemon: %s\n", strerror(errno));
		goto out_session;
	}
	if (fuse_set_signal_handlers(se) != 0)
		goto out_session;
	if (fuse_session_mount(se, fs.cfg.mountpoint) != 0)
		goto out_signals;
	res = fusezc_session_new(se, &zopts, &fs.zs);
	if (res) {
		fprintf(stderr, "tarfs_zc: %s\n", *tarfs_lib_error ? tarfs_lib_error :
			strerror(-res));
		goto out_unmount;
	}
	if (!fs.cfg.foreground && chdir("/") == -1)
		goto out_zc;
	res = fusezc_session_loop(fs.zs);
	if (res == -EOPNOTSUPP && zopts.zerocopy_required) {
		const char *why = fusezc_zerocopy_status(fs.zs);

		fprintf(stderr, "tarfs_zc: zero copy required but not available: %s\n",
			why && *why ? why : "the kernel does not offer it");
	} else if (res < 0) {
		fprintf(stderr, "tarfs_zc: %s\n", *tarfs_lib_error ? tarfs_lib_error :
			strerror(-res));
	} else {
		ret = 0;
	}
	if (fs.cfg.stats || fs.cfg.debug)
		tarfs_print_report(&fs);
out_zc:
	fuse_session_unmount(se);
	fusezc_session_destroy(fs.zs);
	goto out_signals;
out_unmount:
	fuse_session_unmount(se);
out_signals:
	fuse_remove_signal_handlers(se);
out_session:
	fuse_session_destroy(se);
out_fs:
	tarfs_index_free(fs.ix);
	if (fs.archive_fd >= 0)
		close(fs.archive_fd);
out_args:
	tarfs_notify_parent(ret == 0);
	free(cl.nonopt[0]);
	free(cl.nonopt[1]);
	free(cl.cfg.archive);
	free(opts.mountpoint);
	fuse_opt_free_args(&args);
	return ret;
}
