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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* After INIT, on the start-up thread: the read-ahead INIT could not give. */
static void tarfs_after_init(void *data)
{
	struct tarfs_fs *fs = data;

	if (fs->raise_readahead_kb)
		srv_raise_readahead(fs->cfg.mountpoint, fs->raise_readahead_kb,
				    fs->cfg.max_readahead != 0, fs->cfg.debug);
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

/* -d or -o stats, at exit: the read mode in use and the statistics. */
static void tarfs_report(void *data)
{
	struct tarfs_fs *fs = data;
	struct fusezc_stats st;

	if (!fs->cfg.stats && !fs->cfg.debug)
		return;
	srv_print_read_mode(fs->zs, fs->cfg.mode);
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
	srv_read_mode_options(fs->cfg.mode, z);
	z->sync_lending = fs->cfg.sync_lending;
	z->server_replies = fs->cfg.server_replies;
	z->no_export_support = true;
	srv_thread_options(fs->cfg.singlethread, fs->cfg.threads, opts, z);
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
	struct srv_hooks hooks;
	int ret = 1, res;

	srv_init("tarfs_zc", TARFS_VERSION, "ARCHIVE");
	if (srv_reserve_stdio() != 0)
		return 1;	/* not even /dev/null: no stderr to say so */

	if (tarfs_parse_options(&args, &cl) != 0)
		goto out_args;
	res = srv_parse_cmdline(&args, &opts, tarfs_help, argv[0],
				cl.cfg.archive ? NULL : "no archive");
	if (res <= 0) {
		ret = -res;
		goto out_args;
	}
	fs.cfg = cl.cfg;
	fs.cfg.debug = opts.debug;
	fs.cfg.foreground = opts.foreground;
	fs.cfg.singlethread = opts.singlethread;
	fs.cfg.mountpoint = opts.mountpoint;
	srv_log_init(fs.cfg.debug || fs.cfg.stats);
	srv_load_unwinder();

	/* the index before anything is mounted: a bad archive fails here */
	if (tarfs_load(&fs) != 0)
		goto out_fs;
	if (access("/dev/fuse", R_OK | W_OK) == -1) {
		fprintf(stderr, "tarfs_zc: cannot use /dev/fuse: %s\n", strerror(errno));
		goto out_fs;
	}
	if (fuse_opt_add_arg(&args, "-oro") == -1 ||
	    fuse_opt_add_arg(&args, "-odefault_permissions") == -1 ||
	    (!cl.pos.has_fsname && srv_add_fsname(&args, fs.cfg.archive) != 0))
		goto out_fs;
	tarfs_zc_options(&fs, &opts, &zopts);
	tarfs_ops_init(&ops);
	se = fuse_session_new(&args, &ops, sizeof(ops), &fs);
	if (!se)
		goto out_fs;
	fs.se = se;
	hooks = (struct srv_hooks){
		.after_init = tarfs_after_init,
		.report = tarfs_report,
		.keep_stderr = fs.cfg.debug || fs.cfg.stats,	/* the report */
	};
	ret = srv_serve(se, fs.cfg.mountpoint, fs.cfg.foreground, &zopts, &fs.zs,
			&hooks, &fs);
	fuse_session_destroy(se);
out_fs:
	tarfs_index_free(fs.ix);
	if (fs.archive_fd >= 0)
		close(fs.archive_fd);
out_args:
	srv_notify_parent(ret == 0);
	srv_args_free(&cl.pos);
	free(cl.cfg.archive);
	free(opts.mountpoint);
	fuse_opt_free_args(&args);
	return ret;
}
