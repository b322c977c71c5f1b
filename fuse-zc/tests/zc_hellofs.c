// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * zc_hellofs: a read-only low-level FUSE filesystem for testing libfuse-zc.
 * It serves two files with the same generated content (zc_pattern.h):
 * "data" through the page cache and "direct" with FOPEN_DIRECT_IO; every
 * read is answered by fusezc_reply_read().  On exit it prints the fuse-zc
 * counters to stderr.
 *
 *	zc_hellofs [--mode=copy|splice|zerocopy] [--required] [--threads=N]
 *		   [--size=BYTES] [--register-fd] [--passthrough]
 *		   [--defer=worker|thread] [--sync-lending] [--zerocopy-writes]
 *		   [--backing=PATH] [fuse options] MOUNTPOINT
 *	zc_hellofs --version	(prints the libfuse it runs with)
 *
 * "scratch" (empty at start) is writable: its writes are answered by
 * fusezc_reply_write(), zero copy with --zerocopy-writes.
 *
 * With --backing=PATH the content is written to PATH (a file or a block
 * device of at least --size bytes) and read from it with O_DIRECT, so
 * reads are lent from PATH's device: --size and the readers' offsets and
 * lengths must then be multiples of its logical block size.
 *
 * With --passthrough (needs CAP_SYS_ADMIN and Linux 6.9+) "data" is opened
 * with FOPEN_PASSTHROUGH, so its reads never reach the daemon.
 *
 * With --defer=worker|thread, reads of "direct" are answered out of order,
 * the pattern of a server that defers replies: a READ B is kept, and the
 * next READ A first has B answered (worker: by A's handler on A's worker
 * thread; thread: by another thread while A's handler waits), then A.  A B
 * left alone for 20 ms is answered by that other thread.  The pairs made
 * are printed on exit ("zc_hellofs: defer pairs=N alone=M").
 *
 * Requests that block, to test the loop: a GETATTR of "block-*" waits until
 * "release" is looked up (both then answer ENOENT); "blocked" has the
 * number of GETATTRs waiting as its size.  (GETATTR, not LOOKUP: libfuse
 * 3.14 never grants FUSE_PARALLEL_DIROPS, so the kernel serialises the
 * lookups of a directory.)  On exit it
 * prints how many threads served requests ("zc_hellofs: threads=N").
 * --threads=N (or -o max_threads=N), -o max_idle_threads=N and -o clone_fd
 * configure libfuse's loop.
 * Runs in the foreground.  Exit 0 after a normal unmount or SIGTERM.
 */
#include "fuse_zc.h"
#include "zc_pattern.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define INO_DATA	2
#define INO_DIRECT	3
#define INO_SCRATCH	5	/* writable: "scratch" */

struct hello_cfg {
	char *mode;
	int required;
	int register_fd;
	int passthrough;
	unsigned int threads;
	char *size;
	char *defer;
	int sync_lending;
	int zerocopy_writes;
	char *backing;
};

enum defer_mode { DEFER_NONE, DEFER_WORKER, DEFER_THREAD };

/* The deferred READ B, and the thread that answers it in thread mode. */
struct deferral {
	enum defer_mode mode;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	pthread_t thread;
	bool stop;
	bool kept;			/* B is waiting */
	fuse_req_t req;
	size_t size;
	off_t off;
	struct timespec since;
	bool handoff;			/* thread mode: answer B now, then clear */
	unsigned int pairs, alone;
};

struct hello {
	int fd;			/* memfd with the content */
	int scratch_fd;		/* memfd of "scratch" */
	off_t size;
	struct fusezc_session *zs;
	atomic_uint pt_opens;
	pthread_mutex_t lock;
	int backing_id;		/* > 0 once registered */
};

static struct hello hello = { .lock = PTHREAD_MUTEX_INITIALIZER };
static struct deferral dfr = {
	.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER,
};

#define HELLO_OPT(t, p) { t, offsetof(struct hello_cfg, p), 1 }
static const struct fuse_opt hello_opts[] = {
	HELLO_OPT("--mode=%s", mode),
	HELLO_OPT("--required", required),
	HELLO_OPT("--register-fd", register_fd),
	HELLO_OPT("--passthrough", passthrough),
	HELLO_OPT("--threads=%u", threads),
	HELLO_OPT("--size=%s", size),
	HELLO_OPT("--defer=%s", defer),
	HELLO_OPT("--sync-lending", sync_lending),
	HELLO_OPT("--zerocopy-writes", zerocopy_writes),
	HELLO_OPT("--backing=%s", backing),
	FUSE_OPT_END
};

static const char *const names[] = {
	[INO_DATA] = "data", [INO_DIRECT] = "direct", [INO_SCRATCH] = "scratch",
};

/* GETATTRs of "block-*" waiting for "release"; threads that served requests. */
#define INO_BLOCKED	4
#define INO_GATE	100	/* "block-*" */
#define MAX_SEEN	1024
static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned int waiting;
	bool released;
	pid_t seen[MAX_SEEN];
	unsigned int nseen;
} gate = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };

static void note_thread(void)
{
	pid_t tid = (pid_t)syscall(SYS_gettid);
	unsigned int i;

	pthread_mutex_lock(&gate.lock);
	for (i = 0; i < gate.nseen && gate.seen[i] != tid; i++)
		;
	if (i == gate.nseen && gate.nseen < MAX_SEEN)
		gate.seen[gate.nseen++] = tid;
	pthread_mutex_unlock(&gate.lock);
}

/* A GETATTR of "block-*": wait for "release". */
static void gate_wait(fuse_req_t req)
{
	pthread_mutex_lock(&gate.lock);
	gate.waiting++;
	while (!gate.released)
		pthread_cond_wait(&gate.cond, &gate.lock);
	gate.waiting--;
	pthread_mutex_unlock(&gate.lock);
	fuse_reply_err(req, ENOENT);
}

/* The gate's lookups; false for any other name. */
static bool gate_lookup(fuse_req_t req, const char *name)
{
	struct fuse_entry_param e;

	if (strncmp(name, "block-", 6) == 0) {
		/* Timeouts 0: stat(2) then asks GETATTR, which waits. */
		memset(&e, 0, sizeof(e));
		e.ino = INO_GATE;
		e.attr.st_ino = INO_GATE;
		e.attr.st_mode = S_IFREG | 0444;
		e.attr.st_nlink = 1;
		fuse_reply_entry(req, &e);
		return true;
	} else if (strcmp(name, "release") == 0) {
		pthread_mutex_lock(&gate.lock);
		gate.released = true;
		pthread_cond_broadcast(&gate.cond);
		pthread_mutex_unlock(&gate.lock);
	} else if (strcmp(name, "blocked") == 0) {
		memset(&e, 0, sizeof(e));
		e.ino = INO_BLOCKED;
		e.attr.st_ino = INO_BLOCKED;
		e.attr.st_mode = S_IFREG | 0444;
		e.attr.st_nlink = 1;
		pthread_mutex_lock(&gate.lock);
		e.attr.st_size = gate.waiting;
		pthread_mutex_unlock(&gate.lock);
		fuse_reply_entry(req, &e);	/* timeouts 0: asked anew each time */
		return true;
	} else {
		return false;
	}
	fuse_reply_err(req, ENOENT);
	return true;
}

static int hello_stat(fuse_ino_t ino, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	if (ino == FUSE_ROOT_ID) {
		st->st_mode = S_IFDIR | 0755;
		st->st_nlink = 2;
	} else if (ino == INO_DATA || ino == INO_DIRECT) {
		st->st_mode = S_IFREG | 0444;
		st->st_nlink = 1;
		st->st_size = hello.size;
	} else if (ino == INO_SCRATCH) {
		struct stat sst;

		if (fstat(hello.scratch_fd, &sst) != 0)
			return -1;
		st->st_mode = S_IFREG | 0666;
		st->st_nlink = 1;
		st->st_size = sst.st_size;
	} else {
		return -1;
	}
	return 0;
}

static void hello_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)userdata;
	fusezc_conn_init(hello.zs, conn);
}

static void hello_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param e;
	fuse_ino_t ino;

	note_thread();
	if (parent != FUSE_ROOT_ID)
		return (void)fuse_reply_err(req, ENOENT);
	if (gate_lookup(req, name))
		return;
	if (strcmp(name, names[INO_DATA]) == 0)
		ino = INO_DATA;
	else if (strcmp(name, names[INO_DIRECT]) == 0)
		ino = INO_DIRECT;
	else if (strcmp(name, names[INO_SCRATCH]) == 0)
		ino = INO_SCRATCH;
	else
		return (void)fuse_reply_err(req, ENOENT);
	memset(&e, 0, sizeof(e));
	e.ino = ino;
	e.attr_timeout = ino == INO_SCRATCH ? 0 : 1.0;	/* its size changes */
	e.entry_timeout = 1.0;
	hello_stat(ino, &e.attr);
	fuse_reply_entry(req, &e);
}

static void hello_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st;

	(void)fi;
	note_thread();
	if (ino == INO_GATE)
		return gate_wait(req);
	if (ino == INO_BLOCKED) {
		memset(&st, 0, sizeof(st));
		st.st_ino = ino;
		st.st_mode = S_IFREG | 0444;
		st.st_nlink = 1;
		pthread_mutex_lock(&gate.lock);
		st.st_size = gate.waiting;
		pthread_mutex_unlock(&gate.lock);
		return (void)fuse_reply_attr(req, &st, 0);
	}
	if (hello_stat(ino, &st) != 0)
		return (void)fuse_reply_err(req, ENOENT);
	fuse_reply_attr(req, &st, ino == INO_SCRATCH ? 0 : 1.0);
}

/* "scratch" only: a truncate (O_TRUNC comes as a SETATTR of the size). */
static void hello_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
			  struct fuse_file_info *fi)
{
	struct stat st;

	(void)fi;
	if (ino != INO_SCRATCH)
		return (void)fuse_reply_err(req, EPERM);
	if ((to_set & FUSE_SET_ATTR_SIZE) && ftruncate(hello.scratch_fd, attr->st_size) != 0)
		return (void)fuse_reply_err(req, errno);
	if (hello_stat(ino, &st) != 0)
		return (void)fuse_reply_err(req, EIO);
	fuse_reply_attr(req, &st, 0);
}

/* "scratch": every write through fuse-zc (zero copy with --zerocopy-writes). */
static void hello_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size,
			off_t off, struct fuse_file_info *fi)
{
	(void)fi;
	note_thread();
	if (ino != INO_SCRATCH)
		return (void)fuse_reply_err(req, EBADF);
	fusezc_reply_write(req, hello.scratch_fd, off, buf, size);
}

static void hello_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			  struct fuse_file_info *fi)
{
	static const struct { const char *name; fuse_ino_t ino; } ents[] = {
		{ ".", FUSE_ROOT_ID }, { "..", FUSE_ROOT_ID },
		{ "data", INO_DATA }, { "direct", INO_DIRECT },
	};
	char buf[512];
	size_t used = 0;

	(void)fi;
	if (ino != FUSE_ROOT_ID)
		return (void)fuse_reply_err(req, ENOTDIR);
	for (off_t i = off; i < (off_t)(sizeof(ents) / sizeof(ents[0])); i++) {
		struct stat st = { .st_ino = ents[i].ino };
		size_t len;

		st.st_mode = ents[i].ino == FUSE_ROOT_ID ? S_IFDIR : S_IFREG;
		len = fuse_add_direntry(req, buf + used, sizeof(buf) - used,
					ents[i].name, &st, i + 1);
		if (len > sizeof(buf) - used || used + len > size)
			break;
		used += len;
	}
	fuse_reply_buf(req, buf, used);
}

/*
 * One backing id for the content, registered on first use and kept until
 * exit: the kernel looks the id up after the OPEN reply was written, so it
 * must not be closed right after replying.
 */
static int backing_id(void)
{
	int id;

	pthread_mutex_lock(&hello.lock);
	if (hello.backing_id == 0)
		hello.backing_id = fusezc_backing_open(hello.zs, hello.fd);
	id = hello.backing_id;
	if (id < 0)
		hello.backing_id = 0;
	pthread_mutex_unlock(&hello.lock);
	return id;
}

static void hello_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if (ino == INO_SCRATCH)
		return (void)fuse_reply_open(req, fi);
	if (ino != INO_DATA && ino != INO_DIRECT)
		return (void)fuse_reply_err(req, EISDIR);
	if ((fi->flags & O_ACCMODE) != O_RDONLY)
		return (void)fuse_reply_err(req, EACCES);
	fi->direct_io = ino == INO_DIRECT;
	fi->keep_cache = 0;
	if (ino == INO_DATA && fusezc_passthrough_active(hello.zs)) {
		int id = backing_id();

		if (id > 0) {
			fusezc_reply_open_passthrough(req, fi, id);
			atomic_fetch_add(&hello.pt_opens, 1);
			return;
		}
		fprintf(stderr, "zc_hellofs: backing open: %s\n", strerror(-id));
	}
	fuse_reply_open(req, fi);
}

static double ms_since(const struct timespec *t)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - t->tv_sec) * 1e3 + (double)(now.tv_nsec - t->tv_nsec) / 1e6;
}

/* Answer the kept READ B (called with dfr.lock held; drops it meanwhile). */
static void answer_kept(void)
{
	fuse_req_t req = dfr.req;
	size_t size = dfr.size;
	off_t off = dfr.off;

	dfr.kept = false;
	pthread_mutex_unlock(&dfr.lock);
	fusezc_reply_read(req, hello.fd, off, size);
	pthread_mutex_lock(&dfr.lock);
}

/* Not a fuse-zc worker: answers handed-off and lone deferred reads. */
static void *deferral_thread(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&dfr.lock);
	while (!dfr.stop || dfr.kept) {
		struct timespec ts;

		if (dfr.handoff) {
			answer_kept();
			dfr.handoff = false;
			pthread_cond_broadcast(&dfr.cond);
			continue;
		}
		if (dfr.kept && (dfr.stop || ms_since(&dfr.since) >= 20)) {
			dfr.alone++;
			answer_kept();
			continue;
		}
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 5 * 1000 * 1000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&dfr.cond, &dfr.lock, &ts);
	}
	pthread_mutex_unlock(&dfr.lock);
	return NULL;
}

static void hello_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	(void)fi;
	note_thread();
	if (ino == INO_SCRATCH)
		return (void)fusezc_reply_read(req, hello.scratch_fd, off, size);
	if (dfr.mode == DEFER_NONE || ino != INO_DIRECT) {
		fusezc_reply_read(req, hello.fd, off, size);
		return;
	}
	pthread_mutex_lock(&dfr.lock);
	/* A handed-off B still being answered: wait, then pair anew. */
	while (dfr.handoff)
		pthread_cond_wait(&dfr.cond, &dfr.lock);
	if (!dfr.kept) {
		/* This is B: keep it, reply later. */
		dfr.kept = true;
		dfr.req = req;
		dfr.size = size;
		dfr.off = off;
		clock_gettime(CLOCK_MONOTONIC, &dfr.since);
		pthread_cond_broadcast(&dfr.cond);
		pthread_mutex_unlock(&dfr.lock);
		return;
	}
	/* This is A: B is answered first, while A is being served. */
	dfr.pairs++;
	if (dfr.mode == DEFER_WORKER) {
		answer_kept();
	} else {
		dfr.handoff = true;
		pthread_cond_broadcast(&dfr.cond);
		while (dfr.handoff)
			pthread_cond_wait(&dfr.cond, &dfr.lock);
	}
	pthread_mutex_unlock(&dfr.lock);
	fusezc_reply_read(req, hello.fd, off, size);
}

static const struct fuse_lowlevel_ops hello_ops = {
	.init = hello_init,
	.lookup = hello_lookup,
	.getattr = hello_getattr,
	.readdir = hello_readdir,
	.open = hello_open,
	.read = hello_read,
	.setattr = hello_setattr,
	.write = hello_write,
};

/* The content in a memfd, or written to @path and opened O_DIRECT. */
static int make_content(off_t size, const char *path)
{
	static unsigned char buf[1 << 16];
	int fd = path ? open(path, O_WRONLY | O_CLOEXEC) : memfd_create("zc_hellofs", MFD_CLOEXEC);

	if (fd < 0)
		return -1;
	for (off_t pos = 0; pos < size; ) {
		size_t n = size - pos < (off_t)sizeof(buf) ? (size_t)(size - pos) : sizeof(buf);

		zc_pattern_fill(buf, (uint64_t)pos, n);
		if (pwrite(fd, buf, n, pos) != (ssize_t)n) {
			close(fd);
			return -1;
		}
		pos += (off_t)n;
	}
	if (path == NULL)
		return fd;
	if (fsync(fd) != 0) {
		close(fd);
		return -1;
	}
	close(fd);
	return open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);
}

static void print_stats(const char *mode)
{
	struct fusezc_write_stats ws;
	struct fusezc_stats st;

	fusezc_get_stats(hello.zs, &st);
	fprintf(stderr,
		"zc_hellofs: stats mode=%s zc_active=%d zc_requests=%llu zc_bytes=%llu"
		" splice_requests=%llu splice_bytes=%llu copy_requests=%llu copy_bytes=%llu"
		" fallbacks=%llu fb_eopnotsupp=%llu fb_eperm=%llu fb_enoent_einval=%llu"
		" fb_other=%llu kernel_answered=%llu\n",
		mode, fusezc_zerocopy_active(hello.zs),
		(unsigned long long)st.zc_requests, (unsigned long long)st.zc_bytes,
		(unsigned long long)st.splice_requests, (unsigned long long)st.splice_bytes,
		(unsigned long long)st.copy_requests, (unsigned long long)st.copy_bytes,
		(unsigned long long)st.fallbacks,
		(unsigned long long)st.fallback_errno_counts[0],
		(unsigned long long)st.fallback_errno_counts[1],
		(unsigned long long)st.fallback_errno_counts[2],
		(unsigned long long)st.fallback_errno_counts[3],
		(unsigned long long)st.zc_kernel_answered);
	fprintf(stderr, "zc_hellofs: zerocopy status: \"%s\"\n",
		fusezc_zerocopy_status(hello.zs));
	fprintf(stderr, "zc_hellofs: passthrough active=%d opens=%u\n",
		fusezc_passthrough_active(hello.zs), atomic_load(&hello.pt_opens));
	fusezc_get_write_stats(hello.zs, &ws);
	fprintf(stderr, "zc_hellofs: write stats zcw_active=%d zcw_requests=%llu"
		" zcw_bytes=%llu memfd_requests=%llu copyw_requests=%llu copyw_bytes=%llu"
		" unanswered_zc=%llu\n", fusezc_zerocopy_writes_active(hello.zs),
		(unsigned long long)ws.zc_requests, (unsigned long long)ws.zc_bytes,
		(unsigned long long)ws.memfd_requests, (unsigned long long)ws.copy_requests,
		(unsigned long long)ws.copy_bytes, (unsigned long long)ws.unanswered_zc);
}

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct fuse_cmdline_opts opts;
	struct hello_cfg cfg = { 0 };
	struct fusezc_options zopts = { 0 };
	struct fuse_session *se;
	char *end;
	int ret = 1, res;

	if (fuse_opt_parse(&args, &cfg, hello_opts, NULL) != 0)
		return 1;
	if (fuse_parse_cmdline(&args, &opts) != 0)
		return 1;
	if (opts.show_version) {
		printf("zc_hellofs: libfuse %s\n", fuse_pkgversion());
		ret = 0;
		goto err_out1;
	}
	if (opts.show_help || opts.mountpoint == NULL) {
		fprintf(stderr, "usage: %s [--mode=copy|splice|zerocopy] [--required] "
			"[--threads=N] [--size=BYTES] [--register-fd] [--passthrough] "
			"[--defer=worker|thread] [--sync-lending] [--zerocopy-writes] MOUNTPOINT\n",
			argv[0]);
		goto err_out1;
	}
	if (cfg.mode == NULL || strcmp(cfg.mode, "copy") == 0)
		zopts.read_mode = FUSEZC_READ_COPY;
	else if (strcmp(cfg.mode, "splice") == 0)
		zopts.read_mode = FUSEZC_READ_SPLICE;
	else if (strcmp(cfg.mode, "zerocopy") == 0)
		zopts.read_mode = FUSEZC_READ_ZEROCOPY;
	else {
		fprintf(stderr, "zc_hellofs: unknown mode %s\n", cfg.mode);
		goto err_out1;
	}
	zopts.zerocopy_required = cfg.required;
	zopts.register_fuse_fd = cfg.register_fd;
	zopts.passthrough = cfg.passthrough;
	zopts.sync_lending = cfg.sync_lending;
	zopts.zerocopy_writes = cfg.zerocopy_writes;
	/* --threads=N, else libfuse's -o max_threads (default 10). */
	zopts.max_threads = cfg.threads ? cfg.threads : opts.max_threads;
	zopts.max_idle_threads = opts.max_idle_threads;
	zopts.clone_fd = opts.clone_fd;
	if (cfg.defer == NULL)
		dfr.mode = DEFER_NONE;
	else if (strcmp(cfg.defer, "worker") == 0)
		dfr.mode = DEFER_WORKER;
	else if (strcmp(cfg.defer, "thread") == 0)
		dfr.mode = DEFER_THREAD;
	else {
		fprintf(stderr, "zc_hellofs: unknown --defer=%s\n", cfg.defer);
		goto err_out1;
	}

	hello.size = 3 * 1024 * 1024 + 4321;
	if (cfg.size != NULL) {
		hello.size = (off_t)strtoull(cfg.size, &end, 0);
		if (*end != '\0') {
			fprintf(stderr, "zc_hellofs: bad size %s\n", cfg.size);
			goto err_out1;
		}
	}
	hello.fd = make_content(hello.size, cfg.backing);
	hello.scratch_fd = make_content(0, NULL);
	if (hello.fd < 0 || hello.scratch_fd < 0) {
		perror("zc_hellofs: content");
		goto err_out1;
	}

	se = fuse_session_new(&args, &hello_ops, sizeof(hello_ops), &hello);
	if (se == NULL)
		goto err_out2;
	if (fuse_set_signal_handlers(se) != 0)
		goto err_out3;
	if (fuse_session_mount(se, opts.mountpoint) != 0)
		goto err_out4;
	res = fusezc_session_new(se, &zopts, &hello.zs);
	if (res != 0) {
		fprintf(stderr, "zc_hellofs: fusezc_session_new: %s\n", strerror(-res));
		goto err_out5;
	}
	if (dfr.mode != DEFER_NONE &&
	    pthread_create(&dfr.thread, NULL, deferral_thread, NULL) != 0) {
		fprintf(stderr, "zc_hellofs: cannot start the deferral thread\n");
		fusezc_session_destroy(hello.zs);
		goto err_out5;
	}
	res = fusezc_session_loop(hello.zs);
	if (res != 0)
		fprintf(stderr, "zc_hellofs: loop: %s\n", strerror(-res));
	if (dfr.mode != DEFER_NONE) {
		pthread_mutex_lock(&dfr.lock);
		dfr.stop = true;
		pthread_cond_broadcast(&dfr.cond);
		pthread_mutex_unlock(&dfr.lock);
		pthread_join(dfr.thread, NULL);
		fprintf(stderr, "zc_hellofs: defer pairs=%u alone=%u\n", dfr.pairs, dfr.alone);
	}
	if (hello.backing_id > 0)
		fusezc_backing_close(hello.zs, hello.backing_id);
	print_stats(cfg.mode ? cfg.mode : "copy");
	fprintf(stderr, "zc_hellofs: threads=%u\n", gate.nseen);
	ret = res == 0 ? 0 : 1;
	fusezc_session_destroy(hello.zs);
err_out5:
	fuse_session_unmount(se);
err_out4:
	fuse_remove_signal_handlers(se);
err_out3:
	fuse_session_destroy(se);
err_out2:
	close(hello.fd);
	close(hello.scratch_fd);
err_out1:
	free(opts.mountpoint);
	fuse_opt_free_args(&args);
	free(cfg.mode);
	free(cfg.size);
	free(cfg.backing);
	free(cfg.defer);
	return ret;
}
