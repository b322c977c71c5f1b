// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Tests of the fuse-zc kernel series: IORING_OP_READ_SPLICE_BUF on the
 * pages of in-flight FUSE reads, IORING_OP_WRITE_SPLICE_BUF on those of
 * FUSE writes, and every safety rule of the series.
 *
 *   zc_kernel_test [-v] [-r ROUNDS] [-d STRESS_SECONDS] SUBTEST...   (or "all")
 *
 * Exit status: 0 pass, 1 fail, 77 skip (the kernel does not offer zero
 * copy; a failure instead when FUSEZC_REQUIRE_ZC=1 or CI=true).
 * Needs root (mounts, drop_caches, fusectl).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/loop.h>
#include <liburing.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fuse_zc_kabi.h"
#include "minifuse.h"

#define T_PASS 0
#define T_FAIL 1
#define T_SKIP 77

#define FILE_SIZE	((off_t)(8 << 20) + 1234)	/* not page aligned */
#define HOLE_START	(2u << 20)
#define HOLE_END	(3u << 20)

static int verbose;
static int rounds = 100;
/* -a: every server lends with IORING_SPLICE_BUF_COMPLETE */
static bool auto_complete;
/* reads the kernel answered although the contract left them to the server */
static unsigned long long auto_forbidden;
/* parks whose gate did not open on release: the run fails, never hangs */
static unsigned long long park_release_failures;
static char workdir[] = "/tmp/zc-kernel-test-XXXXXX";
static char backing[128], mnt[128], mnt2[128], slow_backing[160], slow_mnt[128];
static char resend_mnt[128], io_path[128], loop_backing[128], loop_node[128];
static char wbacking[128];	/* the write subtests' own backing file */
static char wmnt[128];		/* stress: the mount of the writes */
static char ovl_lower[2][128], ovl_mnt[128], ovl_file[160];
static int loop_fd = -1;
/*
 * Mounts whose connection still counts waiting requests after the test: a
 * kernel bug.  Unmounting them would block the unmounting task for good
 * (fuse_wait_aborted()), so they stay mounted until power-off.
 */
static const char *leaked[8];
static int nr_leaked;
static unsigned char *ref;	/* the backing file's bytes */
static uint64_t bytes_verified;

static void say(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	fflush(stdout);
}

#define CHECK(cond, ...) do {						\
	if (!(cond)) {							\
		say("  FAIL %s:%d: ", __func__, __LINE__);		\
		say(__VA_ARGS__);					\
		say("\n");						\
		return T_FAIL;						\
	}								\
} while (0)

static bool zc_required(void)
{
	const char *r = getenv("FUSEZC_REQUIRE_ZC"), *ci = getenv("CI");

	return (r && !strcmp(r, "1")) || (ci && !strcmp(ci, "true"));
}

static void sleep_ms(unsigned int ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static void drop_caches(void)
{
	int fd = open("/proc/sys/vm/drop_caches", O_WRONLY);

	if (fd >= 0) {
		if (write(fd, "3", 1) < 0)
			perror("drop_caches");
		close(fd);
	}
}

static int write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = write(fd, text, strlen(text));
	close(fd);
	return n < 0 ? -errno : 0;
}

static int make_backing(const char *path)
{
	uint64_t x = 0x9e3779b97f4a7c15ull;
	size_t i;
	int fd;

	ref = malloc(FILE_SIZE);
	if (!ref)
		return -ENOMEM;
	for (i = 0; i < FILE_SIZE; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		ref[i] = (i >= HOLE_START && i < HOLE_END) ? 0 : (unsigned char)x;
	}
	fd = open(path, O_CREAT | O_TRUNC | O_RDWR, 0644);
	if (fd < 0)
		return -errno;
	if (ftruncate(fd, FILE_SIZE) ||
	    pwrite(fd, ref, HOLE_START, 0) != HOLE_START ||
	    pwrite(fd, ref + HOLE_END, FILE_SIZE - HOLE_END, HOLE_END) !=
	    (ssize_t)(FILE_SIZE - HOLE_END)) {
		close(fd);
		return -EIO;
	}
	fsync(fd);
	close(fd);
	return 0;
}

/* ---------------------------------------- the write subtests' files */

#define WFILE_SIZE	((off_t)(4 << 20))
#define WMODEL_SIZE	(WFILE_SIZE + (1 << 20))

enum write_how { W_BUFFERED, W_DIRECT, W_APPEND, W_MMAP };

static const struct {
	const char *what;
	enum write_how how;
	off_t off;		/* W_APPEND: ignored */
	size_t len;
} write_ops[] = {
	{ "aligned 64 KiB", W_BUFFERED, 0, 65536 },
	{ "unaligned", W_BUFFERED, 4097, 5000 },
	{ "sub-page", W_BUFFERED, 8000, 100 },
	{ "page-crossing", W_BUFFERED, 3 * 4096 - 1000, 3000 },
	{ "1 MiB", W_BUFFERED, 1 << 20, 1 << 20 },
	{ "1 MiB + 3 unaligned", W_BUFFERED, (2 << 20) + 5, (1 << 20) + 3 },
	{ "O_DIRECT 256 KiB", W_DIRECT, 3 << 20, 256 << 10 },
	{ "O_DIRECT 4 KiB", W_DIRECT, 7 * 4096, 4096 },
	{ "mmap + msync", W_MMAP, 40960 + 100, 20000 },
	{ "extending", W_BUFFERED, WFILE_SIZE - 1000, 5000 },
	{ "append", W_APPEND, 0, 7000 },
	{ "sub-page at the new end", W_BUFFERED, WFILE_SIZE + 4000 + 10, 10 },
};

/* A fresh backing file for the write subtests; @model gets its bytes. */
static int make_write_backing(unsigned char *model, off_t *size)
{
	int fd = open(wbacking, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);

	if (fd < 0)
		return -errno;
	memset(model, 0, WMODEL_SIZE);
	memcpy(model, ref, WFILE_SIZE);
	if (pwrite(fd, model, WFILE_SIZE, 0) != WFILE_SIZE) {
		close(fd);
		return -EIO;
	}
	close(fd);
	*size = WFILE_SIZE;
	return 0;
}

static void fill_pattern(unsigned char *buf, size_t len, unsigned int seed)
{
	uint64_t x = 0x2545f4914f6cdd1dull * (seed + 1);

	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		buf[i] = (unsigned char)x;
	}
}

struct zc_stats {
	long long zc_read_bytes, copy_read_bytes, zc_refused, zc_lent_pages;
	long long zc_completed, zc_lend_calls, zc_write_bytes, copy_write_bytes;
};

static int conn_dir(const char *mountpoint, char *dir, size_t len)
{
	struct stat st;

	if (stat(mountpoint, &st))
		return -errno;
	snprintf(dir, len, "/sys/fs/fuse/connections/%u", minor(st.st_dev));
	return 0;
}

static int read_stats_dir(const char *dir, struct zc_stats *s)
{
	char path[300], name[64];
	long long v;
	FILE *f;

	memset(s, 0, sizeof(*s));
	snprintf(path, sizeof(path), "%s/zerocopy_stats", dir);
	f = fopen(path, "r");
	if (!f)
		return -errno;
	while (fscanf(f, "%63s %lld", name, &v) == 2) {
		if (!strcmp(name, "zc_read_bytes"))
			s->zc_read_bytes = v;
		else if (!strcmp(name, "copy_read_bytes"))
			s->copy_read_bytes = v;
		else if (!strcmp(name, "zc_refused"))
			s->zc_refused = v;
		else if (!strcmp(name, "zc_lent_pages"))
			s->zc_lent_pages = v;
		else if (!strcmp(name, "zc_completed"))
			s->zc_completed = v;
		else if (!strcmp(name, "zc_lend_calls"))
			s->zc_lend_calls = v;
		else if (!strcmp(name, "zc_write_bytes"))
			s->zc_write_bytes = v;
		else if (!strcmp(name, "copy_write_bytes"))
			s->copy_write_bytes = v;
	}
	fclose(f);
	return 0;
}

static int read_stats(const char *mountpoint, struct zc_stats *s)
{
	char dir[200];
	int ret = conn_dir(mountpoint, dir, sizeof(dir));

	return ret ? ret : read_stats_dir(dir, s);
}

/* Poll @cond every 2 ms for at most @seconds; its last value (evaluated once a try). */
#define WAIT_UNTIL(cond, seconds) ({					\
	double _t0 = now();						\
	bool _ok;							\
									\
	while (!(_ok = (cond)) && now() - _t0 < (seconds))		\
		sleep_ms(2);						\
	_ok;								\
})

/* A fusectl file of the connection of @mountpoint (abort, waiting). */
static int conn_file(const char *mountpoint, const char *name, char *out, size_t len)
{
	char dir[200];
	int ret = conn_dir(mountpoint, dir, sizeof(dir));

	if (!ret)
		snprintf(out, len, "%s/%s", dir, name);
	return ret;
}

static int abort_conn(const char *mountpoint)
{
	char f[300];
	int ret = conn_file(mountpoint, "abort", f, sizeof(f));

	return ret ? ret : write_file(f, "1");
}

/* By fusectl directory: stat() of a mount whose server is stopped blocks. */
static int abort_conn_dir(const char *dir)
{
	char f[300];

	snprintf(f, sizeof(f), "%s/abort", dir);
	return write_file(f, "1");
}

static long read_long(const char *path)
{
	long v = -1;
	FILE *f = fopen(path, "r");

	if (f) {
		if (fscanf(f, "%ld", &v) != 1)
			v = -1;
		fclose(f);
	}
	return v;
}

/* Poll (bounded) until the connection in @dir has no waiting request. */
static long wait_no_waiting(const char *dir, unsigned int seconds)
{
	char f[300];
	double t0 = now();
	long v;

	snprintf(f, sizeof(f), "%s/waiting", dir);
	while ((v = read_long(f)) > 0 && now() - t0 < seconds)
		sleep_ms(20);
	return v;
}

static void mark_leaked(const char *mountpoint)
{
	if (nr_leaked < (int)(sizeof(leaked) / sizeof(leaked[0])))
		leaked[nr_leaked++] = mountpoint;
}

static bool is_leaked(const char *mountpoint)
{
	for (int i = 0; i < nr_leaked; i++)
		if (!strcmp(leaked[i], mountpoint))
			return true;
	return false;
}

/*
 * The loop device over a copy of the backing file (padded to whole pages)
 * that minifuse parks its loans on (an O_DIRECT read of a range with a dirty
 * page returns -EAGAIN under IOCB_NOWAIT, so the READ_SPLICE_BUF takes its
 * loan at the first issue and waits in io-wq) and lends from in
 * MF_READ_ASYNC.  Read-write: parking dirties pages with their own bytes.
 */
static const char *park_loop(void)
{
	struct loop_config lc = { .info.lo_flags = LO_FLAGS_AUTOCLEAR };
	off_t padded = (FILE_SIZE + 4095) & ~(off_t)4095;
	int ctl, nr, bfd, fd;

	if (loop_fd >= 0)
		return loop_node;
	bfd = open(loop_backing, O_CREAT | O_TRUNC | O_RDWR | O_CLOEXEC, 0644);
	if (bfd < 0 || ftruncate(bfd, padded) ||
	    pwrite(bfd, ref, FILE_SIZE, 0) != (ssize_t)FILE_SIZE) {
		say("  loop backing: %s\n", strerror(errno));
		goto fail_backing;
	}
	ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
	nr = ctl < 0 ? -1 : ioctl(ctl, LOOP_CTL_GET_FREE);
	if (ctl >= 0)
		close(ctl);
	if (nr < 0) {
		say("  /dev/loop-control: %s\n", strerror(errno));
		goto fail_backing;
	}
	/* devtmpfs creates the node asynchronously; make it if it is late */
	snprintf(loop_node, sizeof(loop_node), "/dev/loop%d", nr);
	if (!WAIT_UNTIL(access(loop_node, F_OK) == 0, 2) &&
	    mknod(loop_node, S_IFBLK | 0600, makedev(7, nr)) && errno != EEXIST) {
		say("  mknod %s: %s\n", loop_node, strerror(errno));
		goto fail_backing;
	}
	/* the loop device is read-only if configured through a read-only fd */
	fd = open(loop_node, O_RDWR | O_CLOEXEC);
	lc.fd = bfd;
	if (fd < 0 || ioctl(fd, LOOP_CONFIGURE, &lc)) {
		say("  LOOP_CONFIGURE %s: %s\n", loop_node, strerror(errno));
		if (fd >= 0)
			close(fd);
		goto fail_backing;
	}
	close(bfd);
	loop_fd = fd;	/* closing it at exit detaches the device (autoclear) */
	return loop_node;
fail_backing:
	if (bfd >= 0)
		close(bfd);
	return NULL;
}

struct server {
	struct mf_config cfg;
	struct mf_shared *sh;
	pid_t pid;
	const char *mountpoint;
};

static int server_start(struct server *srv, const char *mountpoint,
			const char *backing_path, enum mf_read_mode mode)
{
	if (!srv->sh)
		srv->sh = mf_shared_new();
	if (!srv->sh)
		return -ENOMEM;
	memset((void *)srv->sh, 0, sizeof(*srv->sh));
	srv->cfg.mountpoint = mountpoint;
	srv->cfg.backing_path = backing_path;
	srv->cfg.mode = mode;
	if (!srv->cfg.threads)
		srv->cfg.threads = 2;
	srv->cfg.accept_zc = true;
	if (auto_complete)
		srv->cfg.auto_complete = true;
	srv->mountpoint = mountpoint;
	srv->pid = mf_start(&srv->cfg, srv->sh);
	return srv->pid < 0 ? (int)srv->pid : 0;
}

/* Unmount and reap the server; returns its exit status or -1. */
static int server_stop(struct server *srv)
{
	int status = -1, i;

	if (srv->pid <= 0)
		return -1;
	if (srv->sh->auto_forbidden) {
		say("  FAIL: the kernel answered %llu read(s) the contract leaves to the server, last: %s\n",
		    (unsigned long long)srv->sh->auto_forbidden, srv->sh->auto_forbidden_what);
		auto_forbidden += srv->sh->auto_forbidden;
	}
	if (srv->sh->park_release_failures) {
		say("  FAIL: %llu parked loan(s) not released by their gate (%s): forced open\n",
		    (unsigned long long)srv->sh->park_release_failures,
		    strerror(-srv->sh->park_release_error));
		park_release_failures += srv->sh->park_release_failures;
	}
	if (umount2(srv->mountpoint, 0) && umount2(srv->mountpoint, MNT_DETACH))
		perror("umount");
	if (srv->cfg.second_mountpoint)
		umount2(srv->cfg.second_mountpoint, MNT_DETACH);
	for (i = 0; i < 1000; i++) {
		if (waitpid(srv->pid, &status, WNOHANG) == srv->pid)
			break;
		sleep_ms(10);
	}
	if (i == 1000) {
		kill(srv->pid, SIGKILL);
		waitpid(srv->pid, &status, 0);
		status = -1;
	}
	srv->pid = 0;
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/*
 * Wait (bounded) until @srv has answered every request its mount sent:
 * a reader can have its bytes while readahead it started is still in
 * flight, and unmounting then ends that readahead under the server, whose
 * late replies and lendings fail (ENOENT).  The server's counters are
 * checked after server_stop(), so stop only once it is idle.  Returns
 * the requests still waiting after 20 s.
 */
static long server_quiesce(struct server *srv)
{
	char dir[200];
	long waiting;

	if (conn_dir(srv->mountpoint, dir, sizeof(dir)))
		return -1;
	waiting = wait_no_waiting(dir, 20);
	if (waiting > 0)
		say("  %ld requests still unanswered 20 s after the readers finished\n", waiting);
	return waiting;
}

/* Read [off, off+len) of the mounted file and compare with the backing file. */
static int verify_range(int fd, char *buf, off_t off, size_t len, const char *what)
{
	size_t want = off >= FILE_SIZE ? 0 :
		      (off + (off_t)len > FILE_SIZE ? (size_t)(FILE_SIZE - off) : len);
	ssize_t n = pread(fd, buf, len, off);

	if (n < 0) {
		say("  %s: pread(%zu @ %lld): %s\n", what, len, (long long)off,
		    strerror(errno));
		return T_FAIL;
	}
	if ((size_t)n != want) {
		say("  %s: pread(%zu @ %lld) = %zd, want %zu\n", what, len,
		    (long long)off, n, want);
		return T_FAIL;
	}
	if (memcmp(buf, ref + off, n)) {
		size_t i = 0;

		while (buf[i] == (char)ref[off + i])
			i++;
		say("  %s: wrong byte at %lld (read %zu @ %lld)\n", what,
		    (long long)(off + i), len, (long long)off);
		return T_FAIL;
	}
	__sync_fetch_and_add(&bytes_verified, n);
	return T_PASS;
}

/* Drop the page cache, then read and check a range through a fresh open. */
static int fresh_read(const char *path, char *buf, off_t off, size_t len,
		      const char *what)
{
	int fd, ret;

	drop_caches();
	fd = open(path, O_RDONLY);
	CHECK(fd >= 0, "%s: open %s: %s", what, path, strerror(errno));
	ret = verify_range(fd, buf, off, len, what);
	close(fd);
	return ret;
}

static const struct { off_t off; size_t len; } ranges[] = {
	{ 0, 4096 }, { 4096, 8192 }, { 1, 100 }, { 4095, 2 }, { 100, 4096 },
	{ 12345, 54321 }, { 0, 131072 }, { 65536, 1 << 20 }, { 3 << 20, 1 << 20 },
	{ 777777, 300000 }, { HOLE_START - 100, 8192 }, { HOLE_START, 65536 },
	{ FILE_SIZE - 1000, 4096 }, { FILE_SIZE - 1, 1 }, { FILE_SIZE, 4096 },
	{ FILE_SIZE - 70000, 1 << 20 }, { 5 << 20, 4096 * 3 + 7 },
};

static int check_buffered(const char *path)
{
	char *buf = malloc(2 << 20);
	size_t i;
	int fd, ret = T_PASS;

	for (i = 0; i < sizeof(ranges) / sizeof(ranges[0]) && ret == T_PASS; i++) {
		drop_caches();
		fd = open(path, O_RDONLY);
		CHECK(fd >= 0, "open %s: %s", path, strerror(errno));
		ret = verify_range(fd, buf, ranges[i].off, ranges[i].len, "buffered");
		close(fd);
	}
	/* and the whole file sequentially, through readahead */
	drop_caches();
	fd = open(path, O_RDONLY);
	for (off_t off = 0; ret == T_PASS && off < FILE_SIZE; off += 1 << 20)
		ret = verify_range(fd, buf, off, 1 << 20, "sequential");
	close(fd);
	free(buf);
	return ret;
}

static int check_direct(const char *path)
{
	static const struct { off_t off; size_t len; } dio[] = {
		{ 0, 4096 }, { 4096, 1 << 20 }, { 8192, 65536 }, { HOLE_START, 131072 },
		{ (FILE_SIZE & ~4095u) - 8192, 65536 }, { 1 << 20, 4096 * 5 },
	};
	char *buf;
	size_t i;
	int fd, ret = T_PASS;

	if (posix_memalign((void **)&buf, 4096, 2 << 20))
		return T_FAIL;
	fd = open(path, O_RDONLY | O_DIRECT);
	CHECK(fd >= 0, "open O_DIRECT: %s", strerror(errno));
	for (i = 0; i < sizeof(dio) / sizeof(dio[0]) && ret == T_PASS; i++)
		ret = verify_range(fd, buf, dio[i].off, dio[i].len, "O_DIRECT");
	/* an unaligned user buffer: the request's pages start mid-page */
	if (ret == T_PASS)
		ret = verify_range(fd, buf + 512, 4096, 65536, "O_DIRECT unaligned buffer");
	close(fd);
	free(buf);
	return ret;
}

static int check_mmap(const char *path)
{
	unsigned char *p;
	int fd;

	drop_caches();
	fd = open(path, O_RDONLY);
	CHECK(fd >= 0, "open: %s", strerror(errno));
	p = mmap(NULL, FILE_SIZE, PROT_READ, MAP_SHARED, fd, 0);
	CHECK(p != MAP_FAILED, "mmap: %s", strerror(errno));
	CHECK(!memcmp(p, ref, FILE_SIZE), "mmap contents differ");
	/* the tail of the last page must be zero, not stale memory */
	for (size_t i = FILE_SIZE; i < ((FILE_SIZE + 4095) & ~4095u); i++)
		CHECK(p[i] == 0, "byte %zu past EOF in the last page is %#x", i, p[i]);
	bytes_verified += FILE_SIZE;
	munmap(p, FILE_SIZE);
	close(fd);
	return T_PASS;
}

struct reader_arg {
	const char *path;
	unsigned int seed;
	int iterations;
	int result;
	bool direct;
	bool tolerate_errors;	/* fault tests: errors fine, wrong bytes not */
	volatile int *stop;
};

static void *reader_main(void *p)
{
	struct reader_arg *a = p;
	char *buf;
	int fd, i;

	a->result = T_PASS;
	if (posix_memalign((void **)&buf, 4096, 1 << 20)) {
		a->result = T_FAIL;
		return NULL;
	}
	fd = open(a->path, O_RDONLY | (a->direct ? O_DIRECT : 0));
	if (fd < 0) {
		if (!a->tolerate_errors)
			a->result = T_FAIL;
		free(buf);
		return NULL;
	}
	for (i = 0; i < a->iterations && !(a->stop && *a->stop); i++) {
		off_t off = (rand_r(&a->seed) % (FILE_SIZE / 4096)) * 4096ull;
		size_t len = 4096 * (1 + rand_r(&a->seed) % 256);
		size_t want = off + (off_t)len > FILE_SIZE ? (size_t)(FILE_SIZE - off) : len;
		ssize_t n;

		if (!a->direct && !(i % 8))
			posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
		n = pread(fd, buf, len, off);
		if (n < 0) {
			if (a->tolerate_errors)
				break;
			say("  reader: pread: %s\n", strerror(errno));
			a->result = T_FAIL;
			break;
		}
		if ((size_t)n > want || memcmp(buf, ref + off, n) ||
		    (!a->tolerate_errors && (size_t)n != want)) {
			say("  reader: wrong data at %lld+%zu (got %zd)\n",
			    (long long)off, len, n);
			a->result = T_FAIL;
			break;
		}
		__sync_fetch_and_add(&bytes_verified, n);
	}
	close(fd);
	free(buf);
	return NULL;
}

static int check_concurrent(const char *path, int nr, int iterations)
{
	struct reader_arg args[8];
	pthread_t tids[8];
	int i, ret = T_PASS;

	for (i = 0; i < nr; i++) {
		args[i] = (struct reader_arg){ .path = path, .seed = 1234 + i,
					       .iterations = iterations,
					       .direct = i % 2 };
		pthread_create(&tids[i], NULL, reader_main, &args[i]);
	}
	for (i = 0; i < nr; i++) {
		pthread_join(tids[i], NULL);
		if (args[i].result != T_PASS)
			ret = T_FAIL;
	}
	return ret;
}

static int file_path(char *out, size_t len, const char *mountpoint)
{
	return snprintf(out, len, "%s/file", mountpoint);
}

/* ---------------------------------------------------------------- subtests */

static int t_capability(void)
{
	struct server srv = { 0 };
	struct utsname u;
	char path[300];
	struct stat st;
	bool patched;
	int ret;

	uname(&u);
	patched = strstr(u.release, "-fuse-zc") != NULL;
	ret = server_start(&srv, mnt, backing, MF_READ_COPY);
	CHECK(!ret, "server: %s", strerror(-ret));
	file_path(path, sizeof(path), mnt);
	CHECK(!stat(path, &st), "stat: %s", strerror(errno));
	CHECK(srv.sh->init_done, "INIT not seen");
	say("  kernel %s: INIT %s FUSE zero copy\n", u.release,
	    srv.sh->zc_offered ? "offers" : "does not offer");
	server_stop(&srv);
	if (patched)
		CHECK(srv.sh->zc_offered, "the fuse-zc kernel must offer the capability");
	else
		CHECK(!srv.sh->zc_offered, "a stock kernel must not look zero-copy capable");
	return T_PASS;
}

/*
 * The park machinery's gate (minifuse.c): a loan is parked behind an io-wq
 * worker blocked in open(2) of a FIFO.  On a loaded machine the worker may
 * not have reached that open(2) when the test releases the gate; the
 * release must let it through all the same, or the parked lending waits
 * for ever.  Gate B's opener is queued behind gate A's (one io-wq worker),
 * so B is released before its open(2) has started, every time.
 */
static int t_park_gate(void)
{
	unsigned int limits[2] = { 1, 1 };	/* bound, unbound io-wq workers */
	struct __kernel_timespec ts = { .tv_sec = 10 };
	char fifo[2][64];
	int hold[2] = { -1, -1 }, opened[2] = { -1, -1 }, seen = 0, ret, i;
	struct io_uring ring;
	int status = T_FAIL;

	ret = io_uring_queue_init(8, &ring, 0);
	CHECK(!ret, "io_uring_queue_init: %s", strerror(-ret));
	ret = io_uring_register_iowq_max_workers(&ring, limits);
	if (ret) {
		say("  FAIL io_uring_register_iowq_max_workers: %s\n", strerror(-ret));
		io_uring_queue_exit(&ring);
		return T_FAIL;
	}
	for (i = 0; i < 2; i++) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);

		snprintf(fifo[i], sizeof(fifo[i]), "/tmp/zc-park-gate-%d-%c", getpid(), 'A' + i);
		unlink(fifo[i]);
		if (mkfifo(fifo[i], 0600)) {
			say("  FAIL mkfifo %s: %s\n", fifo[i], strerror(errno));
			goto out;
		}
		io_uring_prep_openat(sqe, AT_FDCWD, fifo[i], O_RDONLY | O_CLOEXEC, 0);
		sqe->flags |= IOSQE_ASYNC;
		sqe->user_data = i;
	}
	ret = io_uring_submit(&ring);
	if (ret != 2) {
		say("  FAIL submit: %d\n", ret);
		goto out;
	}
	sleep_ms(200);	/* A's opener blocks in fifo_open(); B's waits in the queue */
	hold[1] = mf_gate_release(fifo[1]);
	if (hold[1] < 0) {
		say("  FAIL releasing a gate whose opener has not started: %s\n",
		    strerror(-hold[1]));
		goto out;
	}
	hold[0] = mf_gate_release(fifo[0]);
	if (hold[0] < 0) {
		say("  FAIL releasing a gate whose opener waits: %s\n", strerror(-hold[0]));
		goto out;
	}
	while (seen != 3) {
		struct io_uring_cqe *cqe;

		ret = io_uring_wait_cqe_timeout(&ring, &cqe, &ts);
		if (ret) {
			say("  FAIL gate %s not passed within %lld s\n",
			    seen & 1 ? "B" : "A", (long long)ts.tv_sec);
			goto out;
		}
		if (cqe->user_data < 2) {
			opened[cqe->user_data] = cqe->res;
			seen |= 1 << cqe->user_data;
		}
		io_uring_cqe_seen(&ring, cqe);
	}
	if (opened[0] < 0 || opened[1] < 0) {
		say("  FAIL the gates' opens: %d, %d\n", opened[0], opened[1]);
		goto out;
	}
	say("  both gates passed, B released before its open(2) started\n");
	status = T_PASS;
out:
	/* a gate left shut: cancel its opener, so that the ring can go */
	if (seen != 3) {
		io_uring_prep_cancel64(io_uring_get_sqe(&ring), 0, IORING_ASYNC_CANCEL_ANY);
		io_uring_submit(&ring);
	}
	for (i = 0; i < 2; i++) {
		if (hold[i] >= 0)
			close(hold[i]);
		if (opened[i] >= 0)
			close(opened[i]);
		unlink(fifo[i]);
	}
	io_uring_queue_exit(&ring);
	return status;
}

static bool zc_available(void)
{
	static int cached = -1;
	struct server srv = { 0 };
	char path[300];
	struct stat st;

	if (cached >= 0)
		return cached;
	if (server_start(&srv, mnt, backing, MF_READ_COPY))
		return false;
	file_path(path, sizeof(path), mnt);
	stat(path, &st);
	cached = srv.sh->zc_offered;
	server_stop(&srv);
	return cached;
}

static int check_all_zero_copy(const char *mountpoint, const char *what)
{
	struct zc_stats s;

	CHECK(!read_stats(mountpoint, &s), "zerocopy_stats: %s", strerror(errno));
	say("  %s: zc_read_bytes %lld copy_read_bytes %lld zc_refused %lld zc_lent_pages %lld\n",
	    what, s.zc_read_bytes, s.copy_read_bytes, s.zc_refused, s.zc_lent_pages);
	CHECK(s.zc_read_bytes > 0, "no read went zero-copy");
	CHECK(s.copy_read_bytes == 0, "%lld bytes were copied", s.copy_read_bytes);
	CHECK(s.zc_lent_pages == 0, "%lld pages still lent", s.zc_lent_pages);
	return T_PASS;
}

/*
 * Start @srv in MF_READ_ZC on mnt and check the buffered and O_DIRECT
 * ranges through it; the server stays up.  @path receives the file's path.
 */
static int serve_and_check_reads(struct server *srv, char *path, size_t len)
{
	int ret = server_start(srv, mnt, backing, MF_READ_ZC);

	CHECK(!ret, "server: %s", strerror(-ret));
	file_path(path, len, mnt);
	ret = check_buffered(path);
	if (ret == T_PASS)
		ret = check_direct(path);
	return ret;
}

static int run_correctness(struct server *srv, const char *what)
{
	char path[300];
	long waiting;
	int ret;

	ret = serve_and_check_reads(srv, path, sizeof(path));
	if (srv->pid <= 0)
		return T_FAIL;	/* no server */
	if (ret == T_PASS)
		ret = check_mmap(path);
	if (ret == T_PASS)
		ret = check_concurrent(path, 8, 40);
	if (ret == T_PASS)
		ret = check_all_zero_copy(mnt, what);
	/*
	 * The server counts a read after the reader has its bytes (after the
	 * CQE, when the kernel answered it): its counters are final only once
	 * it has exited, after answering the readahead still in flight.
	 */
	waiting = server_quiesce(srv);
	CHECK(server_stop(srv) == 0, "server did not exit cleanly");
	CHECK(waiting == 0, "the server left requests unanswered");
	if (ret == T_PASS)
		CHECK(srv->sh->fallbacks == 0, "%llu reads fell back (last error %d)",
		      (unsigned long long)srv->sh->fallbacks, srv->sh->last_lend_error);
	if (ret == T_PASS && srv->cfg.auto_complete) {
		say("  %llu of %llu zero-copy reads answered by the kernel\n",
		    (unsigned long long)srv->sh->auto_completed,
		    (unsigned long long)srv->sh->zc_replies);
		CHECK(srv->sh->auto_completed == srv->sh->zc_replies,
		      "the kernel left complete reads to the server");
	}
	return ret;
}

static int t_correctness(void)
{
	struct server srv = { 0 };

	return run_correctness(&srv, "plain fds");
}

static int t_fixed_files(void)
{
	struct server srv = { .cfg = { .fixed_lender = true, .fixed_target = true } };

	return run_correctness(&srv, "fixed lender and target");
}

static int t_splice_receive(void)
{
	/* libfuse reads requests with splice(2): must work as before */
	struct server srv = { .cfg = { .splice_receive = true } };

	return run_correctness(&srv, "requests read by splice(2)");
}

static int t_direct_backing(void)
{
	struct server srv = { .cfg = { .direct_io_backing = true } };
	char path[300];
	long waiting;
	int ret;

	ret = serve_and_check_reads(&srv, path, sizeof(path));
	if (srv.pid <= 0)
		return T_FAIL;	/* no server */
	waiting = server_quiesce(&srv);
	CHECK(server_stop(&srv) == 0, "server did not exit cleanly");
	CHECK(waiting == 0, "the server left requests unanswered");
	/* O_DIRECT on the backing file may refuse unaligned I/O: fallbacks ok */
	say("  O_DIRECT backing: %llu zero-copy replies, %llu fallbacks\n",
	    (unsigned long long)srv.sh->zc_replies, (unsigned long long)srv.sh->fallbacks);
	if (ret == T_PASS)
		CHECK(srv.sh->zc_replies > 0, "no zero-copy reply");
	return ret;
}

/*
 * MF_READ_SECOND_REPLY's delay: the reader has its bytes long before the
 * server's second reply, as on a loaded machine.
 */
#define SECOND_REPLY_DELAY_MS 300

/*
 * Serve a 64 KiB read with a server that misbehaves in @mode, check the
 * reader still gets the right bytes, and return what the server recorded
 * about the kernel's answer to the misbehaviour (@field of its shared state).
 */
static int misbehave_and_read_cfg(const struct mf_config *cfg, enum mf_read_mode mode,
				  const char *what, size_t field, int expected)
{
	struct server srv = { .cfg = *cfg };
	char path[300], *buf = malloc(65536);
	bool second_reply = field == offsetof(struct mf_shared, second_reply_errno);
	bool all_sent = true;
	int ret, got;

	ret = server_start(&srv, mnt, backing, mode);
	CHECK(!ret, "server: %s", strerror(-ret));
	file_path(path, sizeof(path), mnt);
	ret = fresh_read(path, buf, 0, 65536, what);
	free(buf);
	/* a second reply follows the answer the reader already has: wait for it */
	if (second_reply)
		all_sent = WAIT_UNTIL(srv.sh->zc_replies &&
				      srv.sh->second_replies >= srv.sh->zc_replies, 10);
	/* its readahead too: the recoveries are checked after the stop */
	server_quiesce(&srv);
	got = *(volatile int *)((char *)srv.sh + field);
	server_stop(&srv);
	CHECK(ret == T_PASS, "%s: read failed", what);
	if (second_reply)
		CHECK(all_sent, "%s: %llu second replies for %llu reads after 10 s", what,
		      (unsigned long long)srv.sh->second_replies,
		      (unsigned long long)srv.sh->zc_replies);
	CHECK(got == expected, "%s: got %d (%s), want %d (%s)", what, got,
	      strerror(got < 0 ? -got : got), expected,
	      strerror(expected < 0 ? -expected : expected));
	if (field == offsetof(struct mf_shared, reply_errno) && expected)
		CHECK(srv.sh->recoveries > 0 && srv.sh->recovery_errno == 0,
		      "%s: the correct reply after the refused one: %s (%llu accepted)",
		      what, strerror(srv.sh->recovery_errno),
		      (unsigned long long)srv.sh->recoveries);
	say("  %s: %d, the reader got the right bytes\n", what, got);
	return T_PASS;
}

static int misbehave_and_read(enum mf_read_mode mode, const char *what,
			      size_t field, int expected)
{
	struct mf_config cfg = { 0 };

	return misbehave_and_read_cfg(&cfg, mode, what, field, expected);
}

/*
 * A zero-copy reply claiming bytes nobody placed is refused (EINVAL) and the
 * request stays in flight: the server's correct reply after it is accepted
 * and the reader gets the right bytes, never EIO.
 */
static int t_lies(void)
{
	struct mf_config second = { .second_reply_delay_ms = SECOND_REPLY_DELAY_MS };

	if (misbehave_and_read(MF_READ_LIE_MORE, "reply claims more than placed (errno)",
			       offsetof(struct mf_shared, reply_errno), EINVAL) ||
	    misbehave_and_read(MF_READ_LIE_PARTIAL, "placed half, claims all (errno)",
			       offsetof(struct mf_shared, reply_errno), EINVAL) ||
	    misbehave_and_read(MF_READ_LIE_FAILED_IO, "lent I/O failed, claims all (errno)",
			       offsetof(struct mf_shared, reply_errno), EINVAL))
		return T_FAIL;
	if (misbehave_and_read(MF_READ_NO_LEND, "zero-copy reply never lent (errno)",
			       offsetof(struct mf_shared, reply_errno), EINVAL) ||
	    misbehave_and_read_cfg(&second, MF_READ_SECOND_REPLY, "second reply (errno)",
				   offsetof(struct mf_shared, second_reply_errno), ENOENT) ||
	    /* a borrower that reads a read's pages would see their old bytes */
	    misbehave_and_read(MF_READ_WRONG_DIR, "WRITE_SPLICE_BUF on a FUSE_READ (res)",
			       offsetof(struct mf_shared, wrong_dir_res), -EOPNOTSUPP))
		return T_FAIL;
	return T_PASS;
}

/* Print the server's probes; the number that gave the wrong answer. */
static int check_probes(struct mf_shared *sh)
{
	int i, failed = 0;

	for (i = 0; i < sh->nr_probes; i++) {
		struct mf_probe *p = &sh->probes[i];
		bool ok = p->got == p->expected;

		say("  %-40s %-4s got %d want %d\n", p->name, ok ? "ok" : "FAIL",
		    p->got, p->expected);
		failed += !ok;
	}
	return failed;
}

static int t_probes(void)
{
	struct server srv = { .cfg = { .second_mountpoint = mnt2 } };
	char path[300], path2[300], *buf = malloc(1 << 20);
	struct stat st;
	int fd, ret, failed;

	ret = server_start(&srv, mnt, backing, MF_READ_PROBE);
	CHECK(!ret, "server: %s", strerror(-ret));
	file_path(path, sizeof(path), mnt);
	file_path(path2, sizeof(path2), mnt2);
	CHECK(!stat(path2, &st), "second mount: %s", strerror(errno));
	drop_caches();
	fd = open(path, O_RDONLY);
	ret = verify_range(fd, buf, 0, 65536, "probe 1");
	if (ret == T_PASS)
		ret = verify_range(fd, buf, 1 << 20, 65536, "probe 2");
	close(fd);
	CHECK(ret == T_PASS, "reads around the probes failed");
	CHECK(srv.sh->probes_done, "probes did not run");
	failed = check_probes(srv.sh);
	CHECK(srv.sh->nr_probes >= 15, "only %d probes ran", srv.sh->nr_probes);
	ret = check_all_zero_copy(mnt, "after probes");
	server_stop(&srv);
	free(buf);
	CHECK(!failed, "%d probes gave the wrong answer", failed);
	return ret;
}

/* A second FUSE mount (slow_mnt, file slow_backing) serving the backing file by copy. */
static int start_inner_mount(struct server *inner)
{
	inner->cfg.threads = 4;
	return server_start(inner, slow_mnt, backing, MF_READ_COPY);
}

/* A server config whose loans can be parked (see park_loop()). */
static int parking_server(struct server *srv, const char *what)
{
	srv->cfg.loop_path = park_loop();
	if (!srv->cfg.loop_path) {
		say("  FAIL %s: no loop device to park loans on\n", what);
		return T_FAIL;
	}
	return T_PASS;
}

/* The server parked at least one loan (else the test proved nothing). */
static int check_parked(struct mf_shared *sh, const char *what)
{
	CHECK(sh->parks > 0, "%s: no loan could be parked in io-wq (%llu failures, last %d)",
	      what, (unsigned long long)sh->park_failures, sh->park_error);
	CHECK(sh->parked_unlent == 0, "%s: %llu ops parked in io-wq held no loan", what,
	      (unsigned long long)sh->parked_unlent);
	return T_PASS;
}

static int t_busy(void)
{
	struct server srv = { 0 };
	char path[300], *buf = malloc(1 << 20);
	int ret;

	if (parking_server(&srv, "busy"))
		return T_FAIL;
	ret = server_start(&srv, mnt, backing, MF_READ_BUSY_REPLY);
	CHECK(!ret, "server: %s", strerror(-ret));
	file_path(path, sizeof(path), mnt);
	/*
	 * Under load a lending can complete inline (its range cached again
	 * before the park), and with -a the kernel then answers the read, so
	 * the server cannot lend it again: try further reads until one parks.
	 */
	for (int i = 0; i < 8 && srv.sh->parks == 0; i++) {
		ret = fresh_read(path, buf, (off_t)i << 20, 65536, "reply while lent");
		if (ret != T_PASS)
			break;
	}
	server_stop(&srv);
	free(buf);
	say("  %llu loans parked (%llu without a loan, %llu failed: %d); zero-copy reply "
	    "while lent: %s, copy reply: %s\n", (unsigned long long)srv.sh->parks,
	    (unsigned long long)srv.sh->parked_unlent,
	    (unsigned long long)srv.sh->park_failures, srv.sh->park_error,
	    strerror(srv.sh->reply_errno), strerror(srv.sh->second_reply_errno));
	CHECK(ret == T_PASS, "read failed");
	if (check_parked(srv.sh, "busy"))
		return T_FAIL;
	CHECK(srv.sh->reply_errno == EBUSY, "zero-copy reply while lent: errno %d, want EBUSY",
	      srv.sh->reply_errno);
	CHECK(srv.sh->second_reply_errno == EBUSY, "copy reply while lent: errno %d, want EBUSY",
	      srv.sh->second_reply_errno);
	say("  zero-copy and copy replies while the pages are lent: EBUSY\n");
	return T_PASS;
}

/*
 * One READ_SPLICE_BUF from the test process itself: @len bytes of @io_fd at
 * 0 into what @lender lends at @lend_pos.  Returns cqe->res, or -ETIME when
 * no CQE came within @seconds (the ring is then left to *ringp, still
 * holding the op, for the caller to unblock and reap).
 */
static int lend_once(struct io_uring *ring, int op, int io_fd, int lender,
		     uint64_t lend_pos, unsigned int len, unsigned int seconds)
{
	struct __kernel_timespec ts = { .tv_sec = seconds };
	struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
	struct io_uring_cqe *cqe;
	int ret;

	io_uring_prep_rw(op, sqe, io_fd, NULL, len, 0);
	sqe->splice_fd_in = lender;
	sqe->splice_off_in = lend_pos;
	sqe->splice_flags = 0;
	ret = io_uring_submit(ring);
	if (ret != 1)
		return ret < 0 ? ret : -EIO;
	ret = io_uring_wait_cqe_timeout(ring, &cqe, &ts);
	if (ret)
		return ret == -ETIME ? -ETIME : ret;
	ret = cqe->res;
	io_uring_cqe_seen(ring, cqe);
	return ret;
}

/* A tmpfs file to read from (the I/O file of lendings with odd lenders). */
static int open_io_file(void)
{
	char data[65536];
	int fd = open(io_path, O_CREAT | O_RDWR | O_CLOEXEC, 0644);

	memset(data, 'I', sizeof(data));
	if (fd >= 0 && pwrite(fd, data, sizeof(data), 0) != (ssize_t)sizeof(data)) {
		close(fd);
		return -1;
	}
	return fd;
}

/*
 * Kill the server, or abort the connection, while zero-copy reads are in
 * flight.  MF_READ_PARKED: each loan stays out 30 ms, parked in io-wq (a
 * slow backing store); MF_READ_ASYNC: the loans are out while their file
 * I/O is in flight asynchronously (an O_DIRECT bio, or a folio being read
 * with the lending waiting for it), for as long as the loop device takes.
 */
/* The fault loops' strike: wait (bounded) until a loan is out; whether one is. */
static bool fault_wait_lent(const char *dir)
{
	struct zc_stats s = { 0 };

	for (int i = 0; i < 200; i++) {
		if (!read_stats_dir(dir, &s) && s.zc_lent_pages > 0)
			return true;
		sleep_ms(2);
	}
	return false;
}

/* kill -9 the server of @srv, or abort its connection (fusectl @dir). */
static int fault_strike(struct server *srv, const char *dir, bool abort_conn, int r)
{
	char f[256];

	if (!abort_conn) {
		kill(srv->pid, SIGKILL);
		return T_PASS;
	}
	snprintf(f, sizeof(f), "%s/abort", dir);
	CHECK(!write_file(f, "1"), "round %d: abort: %s", r, strerror(errno));
	return T_PASS;
}

/* After the strike: every loan comes back, nothing stays lent; the server goes. */
static int fault_settle(struct server *srv, const char *dir, bool abort_conn, int r)
{
	struct zc_stats s = { 0 };
	int i, status;

	for (i = 0; i < 500; i++) {
		if (read_stats_dir(dir, &s) || s.zc_lent_pages == 0)
			break;
		sleep_ms(10);
	}
	CHECK(s.zc_lent_pages == 0, "round %d: %lld pages still lent", r, s.zc_lent_pages);
	if (abort_conn) {
		server_stop(srv);
	} else {
		waitpid(srv->pid, &status, 0);
		srv->pid = -1;
		umount2(mnt, MNT_DETACH);
	}
	srv->pid = 0;
	return T_PASS;
}

static int fault_loop(bool abort_conn, enum mf_read_mode mode)
{
	const char *what = abort_conn ? "abort" : "kill -9";
	struct server srv = { .cfg = { .threads = 4, .slow_ms = 30 } };
	int r, in_flight = 0, ret;
	char path[300], dir[200];
	double t0 = now();

	/* the loans stay out 30 ms each, parked in io-wq: a slow backing store */
	if (parking_server(&srv, what))
		return T_FAIL;
	file_path(path, sizeof(path), mnt);

	for (r = 0; r < rounds; r++) {
		struct reader_arg args[4];
		pthread_t tids[4];
		volatile int stop = 0;
		int i;

		ret = server_start(&srv, mnt, backing, mode);
		CHECK(!ret, "round %d: server: %s", r, strerror(-ret));
		CHECK(!conn_dir(mnt, dir, sizeof(dir)), "conn dir");
		for (i = 0; i < 4; i++) {
			args[i] = (struct reader_arg){ .path = path, .seed = r * 7 + i,
				.iterations = 1000, .direct = i & 1,
				.tolerate_errors = true, .stop = &stop };
			pthread_create(&tids[i], NULL, reader_main, &args[i]);
		}
		/* wait until a loan is out, then strike */
		in_flight += fault_wait_lent(dir);
		sleep_ms(rand() % 20);
		if (fault_strike(&srv, dir, abort_conn, r))
			return T_FAIL;
		stop = 1;
		for (i = 0; i < 4; i++) {
			pthread_join(tids[i], NULL);
			CHECK(args[i].result == T_PASS, "round %d: a reader saw wrong bytes", r);
		}
		if (fault_settle(&srv, dir, abort_conn, r))
			return T_FAIL;
		if (verbose)
			say("  round %d done\n", r);
	}
	say("  %s%s: %d rounds, %d with lent pages in flight at the strike, %.1f s, 0 pages left lent\n",
	    what, mode == MF_READ_ASYNC ? " (asynchronous lendings)" : "", rounds, in_flight,
	    now() - t0);
	/* an asynchronous loan is out for a moment only: some rounds must catch one */
	CHECK(in_flight * (mode == MF_READ_ASYNC ? 10 : 2) >= rounds,
	      "only %d of %d rounds had lending in flight", in_flight, rounds);
	return T_PASS;
}

/* ------------------------------------------------ randomized stress */

static int stress_seconds = 60;

struct stress_reader {
	const char *paths[2];
	unsigned int seed;
	volatile int *stop;
	pthread_t tid;
	uint64_t reads, bytes, errors, wrong;
};

static void stress_signal(int sig) { (void)sig; }

/*
 * Random reads from either mount, buffered or O_DIRECT with a random iovec
 * shape; every byte that comes back is checked.  Errors are expected (the
 * servers are killed and aborted under it), wrong bytes never.
 */
static void *stress_reader_main(void *p)
{
	struct stress_reader *r = p;
	char *buf;
	int fd = -1, cur = -1;

	if (posix_memalign((void **)&buf, 4096, 1 << 20))
		return NULL;
	while (!*r->stop) {
		int which = rand_r(&r->seed) % 2;
		bool direct = rand_r(&r->seed) % 2;
		off_t off;
		size_t len;
		ssize_t n;

		if (fd >= 0 && (which != cur || !(rand_r(&r->seed) % 64))) {
			close(fd);
			fd = -1;
		}
		if (fd < 0) {
			fd = open(r->paths[which], O_RDONLY | (direct ? O_DIRECT : 0));
			if (fd < 0) {
				sleep_ms(5);
				continue;
			}
			cur = which;
			direct = fcntl(fd, F_GETFL) & O_DIRECT;
		} else {
			direct = fcntl(fd, F_GETFL) & O_DIRECT;
		}
		if (direct) {
			struct iovec iov[16];
			int i, cnt = 1 + rand_r(&r->seed) % 16;
			size_t at = 0;

			off = (rand_r(&r->seed) % (FILE_SIZE / 512)) * 512;
			for (i = 0; i < cnt; i++) {
				size_t seg = 512 * (1 + rand_r(&r->seed) % 128);

				if (at + seg > (1 << 20))
					break;
				iov[i].iov_base = buf + at;
				iov[i].iov_len = seg;
				at += seg;
			}
			len = at;
			n = preadv(fd, iov, i, off);
		} else {
			off = rand_r(&r->seed) % FILE_SIZE;
			len = 1 + rand_r(&r->seed) % (1 << 20);
			if (!(rand_r(&r->seed) % 8))
				posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
			n = pread(fd, buf, len, off);
		}
		if (n < 0) {
			r->errors++;
			close(fd);
			fd = -1;
			continue;
		}
		r->reads++;
		if (off + n > FILE_SIZE || memcmp(buf, ref + off, n)) {
			if (!r->wrong)
				say("  stress reader: wrong bytes at %lld+%zd (%s)\n",
				    (long long)off, n, direct ? "O_DIRECT" : "buffered");
			r->wrong++;
		}
		r->bytes += n;
	}
	if (fd >= 0)
		close(fd);
	free(buf);
	return NULL;
}

/*
 * Stress writes: each writer has its own 2 MiB of the write file and writes
 * whole 4 KiB blocks there, buffered or O_DIRECT; a block's content says
 * which write it came from.  What a write that was acknowledged put there
 * must be on the backing file at the end; a block a failed write touched is
 * never written again (the killed server's I/O may still land on it).
 */
#define SW_BLOCKS	512

struct stress_writer {
	const char *path;
	int idx;
	unsigned int seed;
	volatile int *stop;
	pthread_t tid;
	uint32_t gen[SW_BLOCKS];	/* 0: never acknowledged */
	bool poisoned[SW_BLOCKS];
	uint64_t writes, acked, errors;
};

static void sw_fill(unsigned char *blk, int writer, uint32_t gen, int block)
{
	fill_pattern(blk, 4096, (unsigned int)(writer << 24) ^ (gen << 10) ^ (unsigned int)block);
}

static void *stress_writer_main(void *p)
{
	struct stress_writer *sw = p;
	unsigned char *buf;
	uint32_t gen = 0;
	int fd = -1;

	if (posix_memalign((void **)&buf, 4096, 8 * 4096))
		return NULL;
	while (!*sw->stop) {
		unsigned int nb = 1 + rand_r(&sw->seed) % 8, first, i;
		bool bad = false;
		ssize_t n;

		if (fd < 0) {
			fd = open(sw->path, O_WRONLY | (rand_r(&sw->seed) % 2 ? O_DIRECT : 0));
			if (fd < 0) {
				sleep_ms(5);
				continue;
			}
		}
		first = (unsigned int)rand_r(&sw->seed) % (SW_BLOCKS - nb + 1);
		for (i = 0; i < nb; i++)
			bad |= sw->poisoned[first + i];
		if (bad)
			continue;
		gen++;
		for (i = 0; i < nb; i++)
			sw_fill(buf + i * 4096, sw->idx, gen, first + i);
		sw->writes++;
		n = pwrite(fd, buf, (size_t)nb * 4096,
			   ((off_t)sw->idx * SW_BLOCKS + first) * 4096);
		for (i = 0; i < nb; i++) {
			if (n >= (ssize_t)(i + 1) * 4096)
				sw->gen[first + i] = gen;
			else
				sw->poisoned[first + i] = true;
		}
		if (n == (ssize_t)nb * 4096) {
			sw->acked++;
		} else {
			sw->errors++;
			close(fd);
			fd = -1;
		}
	}
	if (fd >= 0)
		close(fd);
	free(buf);
	return NULL;
}

/* Every acknowledged block of @sw on the backing file; wrong blocks. */
static uint64_t stress_writer_check(const struct stress_writer *sw, int bfd)
{
	unsigned char got[4096], want[4096];
	uint64_t wrong = 0;

	for (int b = 0; b < SW_BLOCKS; b++) {
		if (!sw->gen[b] || sw->poisoned[b])
			continue;
		sw_fill(want, sw->idx, sw->gen[b], b);
		if (pread(bfd, got, 4096, ((off_t)sw->idx * SW_BLOCKS + b) * 4096) != 4096 ||
		    memcmp(got, want, 4096)) {
			if (!wrong)
				say("  stress writer %d: block %d is not what its acknowledged write put there\n",
				    sw->idx, b);
			wrong++;
		} else {
			__sync_fetch_and_add(&bytes_verified, 4096);
		}
	}
	return wrong;
}

static void stress_add(struct mf_stress *sum, const struct mf_stress *st)
{
	sum->reads += st->reads;
	sum->chunks += st->chunks;
	sum->zc_replies += st->zc_replies;
	sum->copy_replies += st->copy_replies;
	sum->early_accepted += st->early_accepted;
	sum->early_busy += st->early_busy;
	sum->overclaims_refused += st->overclaims_refused;
	sum->duplicates_refused += st->duplicates_refused;
	sum->unlent_refused += st->unlent_refused;
	sum->nonlenders_refused += st->nonlenders_refused;
	sum->resends += st->resends;
	sum->cancels += st->cancels;
	sum->chunks_failed += st->chunks_failed;
	sum->replies_gone += st->replies_gone;
	sum->auto_completed += st->auto_completed;
	sum->loop_chunks += st->loop_chunks;
	sum->loop_dio_chunks += st->loop_dio_chunks;
	sum->writes += st->writes;
	sum->write_chunks += st->write_chunks;
	sum->write_replies += st->write_replies;
	sum->write_auto_completed += st->write_auto_completed;
	sum->write_overclaims_refused += st->write_overclaims_refused;
	sum->write_unlent_refused += st->write_unlent_refused;
	sum->write_wrong_dir_refused += st->write_wrong_dir_refused;
	sum->write_failed += st->write_failed;
	sum->unexpected += st->unexpected;
	if (st->unexpected)
		say("  server: unexpected kernel answer: %s\n", st->last_unexpected);
}

/* Wait (bounded) until a connection has nothing lent and nothing waiting. */
static int stress_settled(const char *dir)
{
	char path[300], text[32];
	struct zc_stats s;
	int i, fd;
	ssize_t n;

	for (i = 0; i < 1000; i++) {
		if (read_stats_dir(dir, &s))
			return 0;	/* connection gone: nothing can be left */
		snprintf(path, sizeof(path), "%s/waiting", dir);
		fd = open(path, O_RDONLY);
		n = fd < 0 ? -1 : read(fd, text, sizeof(text) - 1);
		if (fd >= 0)
			close(fd);
		if (s.zc_lent_pages == 0 && n > 0 && atoi(text) == 0)
			return 0;
		sleep_ms(10);
	}
	say("  %s: zc_lent_pages %lld, waiting %s after 10 s\n", dir, s.zc_lent_pages,
	    n > 0 ? text : "?");
	return -1;
}

/* Start stress server @k: 0 and 1 serve reads, 2 writes. */
static int stress_server_start(struct server *srv, int k, const char *mp)
{
	int ret;

	if (k < 2)
		return server_start(srv, mp, backing, MF_READ_RANDOM);
	ret = server_start(srv, mp, wbacking, MF_READ_ZC);
	if (!ret)
		srv->sh->write_mode = MF_WRITE_RANDOM;
	return ret;
}

static int t_stress(void)
{
	struct server srv[3] = { { .cfg = { .threads = 3 } }, { .cfg = { .threads = 3 } },
				 { .cfg = { .threads = 2, .writable = true,
					    .accept_zc_write = true } } };
	const char *mps[3] = { mnt, mnt2, wmnt };
	char paths[3][300], dir[200];
	struct stress_reader readers[6];
	struct stress_writer writers[2];
	uint64_t writes = 0, acked = 0, werrors = 0, wwrong = 0;
	unsigned char *model = malloc(WMODEL_SIZE);
	off_t wsize;
	int bfd;
	struct mf_stress sum = { 0 };
	uint64_t kills = 0, aborts = 0, signals = 0, leaks = 0;
	uint64_t reads = 0, bytes = 0, errors = 0, wrong = 0;
	volatile int stop = 0;
	struct sigaction sa = { .sa_handler = stress_signal };
	double t0 = now(), deadline = t0 + stress_seconds;
	unsigned int seed = (unsigned int)time(NULL);
	int i, k, ret;

	sigaction(SIGUSR1, &sa, NULL);	/* no SA_RESTART: reads see EINTR */
	CHECK(model && !make_write_backing(model, &wsize), "write backing");
	free(model);
	for (k = 0; k < 3; k++) {
		if (parking_server(&srv[k], "stress"))	/* the loop device */
			return T_FAIL;
		ret = stress_server_start(&srv[k], k, mps[k]);
		CHECK(!ret, "server %d: %s", k, strerror(-ret));
		file_path(paths[k], sizeof(paths[k]), mps[k]);
	}
	CHECK(srv[2].sh->zc_write_accepted, "zero-copy writes not offered");
	for (i = 0; i < 6; i++) {
		readers[i] = (struct stress_reader){ .paths = { paths[0], paths[1] },
			.seed = seed + i, .stop = &stop };
		pthread_create(&readers[i].tid, NULL, stress_reader_main, &readers[i]);
	}
	for (i = 0; i < 2; i++) {
		memset(&writers[i], 0, sizeof(writers[i]));
		writers[i].path = paths[2];
		writers[i].idx = i;
		writers[i].seed = seed + 100 + i;
		writers[i].stop = &stop;
		pthread_create(&writers[i].tid, NULL, stress_writer_main, &writers[i]);
	}
	say("  %d s, seed %u, 2 read servers x 3 threads, 6 readers; 1 write server x 2 "
	    "threads, 2 writers\n", stress_seconds, seed);
	while (now() < deadline) {
		int event = rand_r(&seed) % 10;

		sleep_ms(100 + rand_r(&seed) % 900);
		if (event >= 4) {
			for (i = 0; i < 6; i++)
				if (rand_r(&seed) % 2 && !pthread_kill(readers[i].tid, SIGUSR1))
					signals++;
			continue;
		}
		k = rand_r(&seed) % 3;
		if (conn_dir(mps[k], dir, sizeof(dir)))
			dir[0] = 0;
		stress_add(&sum, &srv[k].sh->stress);
		if (event < 2) {
			kill(srv[k].pid, SIGKILL);
			waitpid(srv[k].pid, NULL, 0);
			srv[k].pid = 0;
			umount2(mps[k], MNT_DETACH);
			kills++;
		} else {
			char f[256];

			snprintf(f, sizeof(f), "%s/abort", dir);
			if (dir[0] && !write_file(f, "1"))
				aborts++;
			server_stop(&srv[k]);
		}
		/* every loan comes back and nothing is left waiting */
		if (dir[0] && stress_settled(dir))
			leaks++;
		ret = stress_server_start(&srv[k], k, mps[k]);
		CHECK(!ret, "server %d restart: %s", k, strerror(-ret));
	}
	stop = 1;
	for (i = 0; i < 2; i++)
		pthread_join(writers[i].tid, NULL);
	for (i = 0; i < 6; i++) {
		pthread_join(readers[i].tid, NULL);
		reads += readers[i].reads;
		bytes += readers[i].bytes;
		errors += readers[i].errors;
		wrong += readers[i].wrong;
	}
	for (k = 0; k < 3; k++) {
		if (conn_dir(mps[k], dir, sizeof(dir)))
			dir[0] = 0;
		stress_add(&sum, &srv[k].sh->stress);
		server_stop(&srv[k]);
		if (dir[0] && stress_settled(dir))
			leaks++;
	}
	/* every server is gone: nothing can land on the write file any more */
	bfd = open(wbacking, O_RDONLY | O_CLOEXEC);
	CHECK(bfd >= 0, "open %s: %s", wbacking, strerror(errno));
	for (i = 0; i < 2; i++) {
		writes += writers[i].writes;
		acked += writers[i].acked;
		werrors += writers[i].errors;
		wwrong += stress_writer_check(&writers[i], bfd);
	}
	close(bfd);
	__sync_fetch_and_add(&bytes_verified, bytes);
	say("  readers: %llu reads, %llu bytes checked, %llu errors (kills/aborts), %llu with wrong bytes\n",
	    (unsigned long long)reads, (unsigned long long)bytes,
	    (unsigned long long)errors, (unsigned long long)wrong);
	say("  events: %llu kill -9, %llu fusectl aborts, %llu signals to readers, %llu FUSE_NOTIFY_RESEND\n",
	    (unsigned long long)kills, (unsigned long long)aborts,
	    (unsigned long long)signals, (unsigned long long)sum.resends);
	say("  server: %llu reads, %llu chunks lent (%llu from the loop device, %llu O_DIRECT), %llu zero-copy and %llu copy replies, %llu answered by the kernel\n",
	    (unsigned long long)sum.reads, (unsigned long long)sum.chunks,
	    (unsigned long long)sum.loop_chunks, (unsigned long long)sum.loop_dio_chunks,
	    (unsigned long long)sum.zc_replies, (unsigned long long)sum.copy_replies,
	    (unsigned long long)sum.auto_completed);
	say("  refused as the contract says: %llu over-claims, %llu duplicates, %llu unlent zero-copy replies, %llu non-lenders; replies while lending: %llu taken, %llu refused\n",
	    (unsigned long long)sum.overclaims_refused, (unsigned long long)sum.duplicates_refused,
	    (unsigned long long)sum.unlent_refused, (unsigned long long)sum.nonlenders_refused,
	    (unsigned long long)sum.early_accepted, (unsigned long long)sum.early_busy);
	say("  %llu cancels (%llu chunks failed or cancelled), %llu replies to requests gone (resent/aborted)\n",
	    (unsigned long long)sum.cancels, (unsigned long long)sum.chunks_failed,
	    (unsigned long long)sum.replies_gone);
	say("  writers: %llu writes, %llu acknowledged (every block of them checked), %llu failed "
	    "(kills/aborts/refused replies), %llu blocks not as acknowledged\n",
	    (unsigned long long)writes, (unsigned long long)acked,
	    (unsigned long long)werrors, (unsigned long long)wwrong);
	say("  write server: %llu writes, %llu chunks lent, %llu replies, %llu answered by the "
	    "kernel; refused as the contract says: %llu over-claims, %llu replies without a "
	    "lending, %llu READ_SPLICE_BUF on a write; %llu lendings failed\n",
	    (unsigned long long)sum.writes, (unsigned long long)sum.write_chunks,
	    (unsigned long long)sum.write_replies, (unsigned long long)sum.write_auto_completed,
	    (unsigned long long)sum.write_overclaims_refused,
	    (unsigned long long)sum.write_unlent_refused,
	    (unsigned long long)sum.write_wrong_dir_refused,
	    (unsigned long long)sum.write_failed);
	say("  unexpected kernel answers %llu, connections left with loans or waiters %llu, %.0f s\n",
	    (unsigned long long)sum.unexpected, (unsigned long long)leaks, now() - t0);
	CHECK(!wrong, "%llu reads returned wrong bytes", (unsigned long long)wrong);
	CHECK(!wwrong, "%llu acknowledged blocks lost or wrong", (unsigned long long)wwrong);
	CHECK(acked && sum.write_chunks && sum.write_auto_completed && sum.write_replies &&
	      sum.write_overclaims_refused && sum.write_unlent_refused &&
	      sum.write_wrong_dir_refused,
	      "the writes did not exercise every event (acknowledged %llu, chunks %llu, "
	      "kernel-answered %llu, replies %llu, over-claims %llu, unlent %llu, wrong "
	      "direction %llu)", (unsigned long long)acked,
	      (unsigned long long)sum.write_chunks, (unsigned long long)sum.write_auto_completed,
	      (unsigned long long)sum.write_replies,
	      (unsigned long long)sum.write_overclaims_refused,
	      (unsigned long long)sum.write_unlent_refused,
	      (unsigned long long)sum.write_wrong_dir_refused);
	CHECK(!sum.unexpected, "%llu kernel answers broke the contract", (unsigned long long)sum.unexpected);
	CHECK(!leaks, "%llu connections kept loans or waiters", (unsigned long long)leaks);
	/* a stress that exercised nothing proves nothing */
	CHECK(reads && sum.zc_replies && sum.chunks && sum.overclaims_refused &&
	      sum.duplicates_refused && sum.cancels && sum.resends && kills + aborts &&
	      sum.auto_completed && sum.loop_chunks && sum.loop_dio_chunks,
	      "the run did not exercise every event (reads %llu, zc %llu, kernel-answered %llu, loop-device chunks %llu, O_DIRECT %llu, overclaims %llu, duplicates %llu, cancels %llu, resends %llu, faults %llu)",
	      (unsigned long long)reads, (unsigned long long)sum.zc_replies,
	      (unsigned long long)sum.auto_completed, (unsigned long long)sum.loop_chunks,
	      (unsigned long long)sum.loop_dio_chunks,
	      (unsigned long long)sum.overclaims_refused, (unsigned long long)sum.duplicates_refused,
	      (unsigned long long)sum.cancels, (unsigned long long)sum.resends,
	      (unsigned long long)(kills + aborts));
	return T_PASS;
}

static int t_kill_loop(void) { return fault_loop(false, MF_READ_PARKED); }
static int t_abort_loop(void) { return fault_loop(true, MF_READ_PARKED); }

static int t_async_faults(void)
{
	if (fault_loop(false, MF_READ_ASYNC))
		return T_FAIL;
	return fault_loop(true, MF_READ_ASYNC);
}

/* ------------------------------------------------ the v2 lending contract */


/* A read in its own thread, so that the test can watch it block. */
struct one_read {
	const char *path;
	off_t off;
	size_t len;
	bool direct;
	int iovecs;		/* > 0: preadv of that many 512-byte pieces */
	int fd;			/* > 0: read this fd (opened beforehand), else open path */
	pthread_t tid;
	volatile int done;
	ssize_t n;
	int err;
	bool right;		/* the bytes read are the backing file's */
};

static void *one_read_main(void *p)
{
	struct one_read *r = p;
	struct iovec iov[64];
	char *buf;
	int fd, i;

	r->n = -1;
	r->err = ENOMEM;
	if (posix_memalign((void **)&buf, 4096, r->iovecs ? (size_t)r->iovecs * 1024 : r->len))
		goto out;
	fd = r->fd > 0 ? r->fd : open(r->path, O_RDONLY | O_CLOEXEC | (r->direct ? O_DIRECT : 0));
	if (fd < 0) {
		r->err = errno;
		free(buf);
		goto out;
	}
	if (r->iovecs) {
		/* 512-byte pieces, 512-aligned, each on its own half page */
		for (i = 0; i < r->iovecs; i++)
			iov[i] = (struct iovec){ buf + i * 1024, 512 };
		r->n = preadv(fd, iov, r->iovecs, r->off);
	} else {
		r->n = pread(fd, buf, r->len, r->off);
	}
	r->err = r->n < 0 ? errno : 0;
	r->right = r->n >= 0;
	for (i = 0; r->right && r->iovecs && i < r->n / 512; i++)
		r->right = !memcmp(buf + i * 1024, ref + r->off + i * 512, 512);
	if (r->right && !r->iovecs)
		r->right = !memcmp(buf, ref + r->off, r->n);
	if (r->right && r->n > 0)
		__sync_fetch_and_add(&bytes_verified, r->n);
	if (fd != r->fd)
		close(fd);
	free(buf);
out:
	r->done = 1;
	return NULL;
}

static int one_read_start(struct one_read *r)
{
	r->done = 0;
	return -pthread_create(&r->tid, NULL, one_read_main, r);
}

/* Join the read if it ends within @seconds; a read still blocked is left. */
static bool one_read_wait(struct one_read *r, unsigned int seconds)
{
	if (!WAIT_UNTIL(r->done, seconds))
		return false;
	pthread_join(r->tid, NULL);
	return true;
}

/* The read returned all @want bytes, right. */
static int check_read(const struct one_read *r, size_t want, const char *what)
{
	CHECK(r->n >= 0, "%s: read: %s", what, strerror(r->err));
	CHECK(r->right, "%s: wrong bytes", what);
	CHECK((size_t)r->n == want, "%s: read returned %zd, want %zu", what, r->n, want);
	return T_PASS;
}

/* A zero-copy server, 1 MiB read through a fresh open, the counters in @s. */
static int serve_fresh_read(struct server *srv, const char *path, char *buf,
			    const char *what, struct zc_stats *s)
{
	int ret = server_start(srv, mnt, backing, MF_READ_ZC);

	CHECK(!ret, "%s: server: %s", what, strerror(-ret));
	ret = fresh_read(path, buf, 0, 1 << 20, what);
	if (ret == T_PASS && read_stats(mnt, s))
		ret = T_FAIL;
	server_stop(srv);
	CHECK(ret == T_PASS, "%s: read or stats failed", what);
	return T_PASS;
}

static int privilege_checks(void)
{
	const char *knob = "/sys/module/fuse/parameters/zerocopy_unprivileged";
	struct server srv = { .cfg = { .drop_privileges = true } };
	struct one_read rd = { .off = 1 << 20, .len = 1 << 20, .direct = true };
	char path[300], *buf = malloc(1 << 20);
	struct io_uring ring;
	struct zc_stats s;
	int ret, devfd, iofd;
	bool done;

	/* a /dev/fuse fd of no connection is not a lender of anything yet */
	devfd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
	iofd = open_io_file();
	CHECK(devfd >= 0 && iofd >= 0, "open /dev/fuse, %s: %s", io_path, strerror(errno));
	CHECK(!io_uring_queue_init(4, &ring, 0), "io_uring_queue_init");
	ret = lend_once(&ring, FUSEZC_IORING_OP_READ_SPLICE_BUF, iofd, devfd,
			fusezc_lend_pos(2, 0), 4096, 20);
	io_uring_queue_exit(&ring);
	close(devfd);
	close(iofd);
	CHECK(ret == -ENOTCONN, "unattached /dev/fuse as lender: %d (%s), want -ENOTCONN",
	      ret, strerror(-ret));
	say("  /dev/fuse of no connection as lender: ENOTCONN\n");

	chmod(workdir, 0755);
	file_path(path, sizeof(path), mnt);
	CHECK(!write_file(knob, "N"), "%s: %s", knob, strerror(errno));
	if (serve_fresh_read(&srv, path, buf, "unprivileged, refused", &s))
		return T_FAIL;
	CHECK(s.zc_read_bytes == 0 && s.zc_refused > 0 && srv.sh->last_lend_error == -EPERM,
	      "unprivileged server refused: zc_read_bytes %lld zc_refused %lld error %d",
	      s.zc_read_bytes, s.zc_refused, srv.sh->last_lend_error);
	say("  unprivileged server, zerocopy_unprivileged=N: EPERM, %lld refusals, copy fallback\n",
	    s.zc_refused);

	CHECK(!write_file(knob, "Y"), "%s: %s", knob, strerror(errno));
	if (serve_fresh_read(&srv, path, buf, "unprivileged, allowed", &s))
		return T_FAIL;
	CHECK(s.zc_read_bytes >= (1 << 20) && s.zc_refused == 0,
	      "unprivileged server allowed: zc_read_bytes %lld zc_refused %lld",
	      s.zc_read_bytes, s.zc_refused);
	say("  unprivileged server, zerocopy_unprivileged=Y: %lld bytes zero-copy\n",
	    s.zc_read_bytes);

	/*
	 * ... but not an O_DIRECT reader's own pages: an abort cannot take
	 * them back while the borrower's I/O runs, so lending them would let
	 * an unprivileged server hold the reader for as long as I/O it chose
	 * takes.  The read is served by copy.
	 */
	ret = server_start(&srv, mnt, backing, MF_READ_ZC);
	CHECK(!ret, "server: %s", strerror(-ret));
	rd.path = path;
	one_read_start(&rd);
	done = one_read_wait(&rd, 60);
	if (read_stats(mnt, &s))
		done = false;
	server_stop(&srv);
	CHECK(done, "unprivileged server: the O_DIRECT read did not return in 60 s");
	if (check_read(&rd, rd.len, "unprivileged server, O_DIRECT"))
		return T_FAIL;
	CHECK(s.zc_read_bytes == 0 && s.zc_refused > 0 && srv.sh->last_lend_error == -EPERM,
	      "unprivileged server, O_DIRECT reader: zc_read_bytes %lld zc_refused %lld "
	      "error %d, want 0, > 0, -EPERM (EPERM, then a copy)",
	      s.zc_read_bytes, s.zc_refused, srv.sh->last_lend_error);
	say("  unprivileged server, zerocopy_unprivileged=Y, O_DIRECT reader: EPERM, copy\n");

	/* root is not affected by the knob */
	CHECK(!write_file(knob, "N"), "%s", knob);
	srv.cfg.drop_privileges = false;
	ret = server_start(&srv, mnt, backing, MF_READ_ZC);
	CHECK(!ret, "server: %s", strerror(-ret));
	ret = fresh_read(path, buf, 0, 1 << 20, "privileged");
	CHECK(ret == T_PASS, "read failed");
	ret = check_all_zero_copy(mnt, "CAP_SYS_ADMIN server with the knob off");
	server_stop(&srv);
	free(buf);
	return ret;
}

static int t_privilege(void)
{
	const char *knob = "/sys/module/fuse/parameters/zerocopy_unprivileged";
	char initial[8] = "";
	FILE *f = fopen(knob, "r");
	int ret;

	if (f) {
		if (!fgets(initial, sizeof(initial), f))
			initial[0] = 0;
		fclose(f);
	}
	initial[strcspn(initial, "\n")] = 0;
	/* v2: lending is for CAP_SYS_ADMIN servers unless the admin says so */
	CHECK(!strcmp(initial, "N"), "%s defaults to '%s', want N", knob, initial);
	ret = privilege_checks();
	write_file(knob, initial);
	return ret;
}

static void sigusr1_handler(int sig)
{
	(void)sig;
}

/*
 * (a) Only a lender that opted in is ever called: a socket keeps its data,
 * a pty does not block, a FUSE file is not read, a pipe or a tmpfs file is
 * refused; all with -EOPNOTSUPP.
 */
static int lend_from_pty(int io_fd, const char *io_what)
{
	int master, slave, status, res = -EIO;
	pid_t pid;

	master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
	CHECK(master >= 0 && !grantpt(master) && !unlockpt(master), "pty: %s", strerror(errno));
	slave = open(ptsname(master), O_RDWR | O_NOCTTY | O_CLOEXEC);
	CHECK(slave >= 0, "pty slave: %s", strerror(errno));
	/* a child, as the lending may block in io_uring_enter() itself */
	pid = fork();
	CHECK(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		struct io_uring ring;

		if (io_uring_queue_init(4, &ring, 0))
			_exit(255);
		res = lend_once(&ring, FUSEZC_IORING_OP_READ_SPLICE_BUF, io_fd, slave,
				0, 4096, 60);
		_exit(res == -EOPNOTSUPP ? 0 : res == -ETIME ? 2 : 1);
	}
	if (!WAIT_UNTIL(waitpid(pid, &status, WNOHANG) == pid, 10)) {
		/* unblock it: a line for the tty read, then kill */
		if (write(master, "x\n", 2) != 2)
			perror("pty master");
		if (!WAIT_UNTIL(waitpid(pid, &status, WNOHANG) == pid, 20)) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
		}
		close(slave);
		close(master);
		CHECK(0, "a pty with no data as lender (I/O file %s) blocked for 10 s", io_what);
	}
	close(slave);
	close(master);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	      "a pty as lender (I/O file %s): not -EOPNOTSUPP (child status %#x)",
	      io_what, status);
	say("  %-44s EOPNOTSUPP at once\n", "pty with no data as lender");
	return T_PASS;
}

static int lend_from_socket(struct io_uring *ring, int iofd)
{
	char buf[16];
	int sv[2], ret;
	ssize_t n;

	CHECK(!socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), "socketpair");
	CHECK(write(sv[1], "hello", 5) == 5, "socket write");
	ret = lend_once(ring, FUSEZC_IORING_OP_READ_SPLICE_BUF, iofd, sv[0], 0, 4096, 20);
	n = recv(sv[0], buf, sizeof(buf), MSG_DONTWAIT);
	close(sv[0]);
	close(sv[1]);
	CHECK(ret == -EOPNOTSUPP, "unix socket as lender: %d (%s), want -EOPNOTSUPP",
	      ret, strerror(-ret));
	CHECK(n == 5 && !memcmp(buf, "hello", 5),
	      "unix socket as lender: its data was consumed (recv %zd)", n);
	say("  %-44s EOPNOTSUPP, \"hello\" still queued\n", "unix socket as lender");
	return T_PASS;
}

static int lend_from_pipe(struct io_uring *ring, int iofd)
{
	char buf[16];
	int p[2], ret;
	ssize_t n;

	CHECK(!pipe2(p, O_CLOEXEC | O_NONBLOCK), "pipe");
	CHECK(write(p[1], "hello", 5) == 5, "pipe write");
	ret = lend_once(ring, FUSEZC_IORING_OP_READ_SPLICE_BUF, iofd, p[0], 0, 4096, 20);
	n = read(p[0], buf, sizeof(buf));
	close(p[0]);
	close(p[1]);
	CHECK(ret == -EOPNOTSUPP, "pipe as lender: %d (%s), want -EOPNOTSUPP", ret, strerror(-ret));
	CHECK(n == 5 && !memcmp(buf, "hello", 5), "pipe as lender: data consumed (read %zd)", n);
	say("  %-44s EOPNOTSUPP, data still queued\n", "pipe as lender");
	return T_PASS;
}

static int lend_from_tmpfs(struct io_uring *ring, int iofd)
{
	char page[4096];
	int fd, ret;
	ssize_t n;

	fd = open(backing, O_RDONLY | O_CLOEXEC);
	CHECK(fd >= 0, "%s: %s", backing, strerror(errno));
	ret = lend_once(ring, FUSEZC_IORING_OP_READ_SPLICE_BUF, iofd, fd, 0, 4096, 20);
	n = pread(fd, page, sizeof(page), 0);
	close(fd);
	CHECK(ret == -EOPNOTSUPP, "tmpfs file as lender: %d (%s), want -EOPNOTSUPP",
	      ret, strerror(-ret));
	CHECK(n == (ssize_t)sizeof(page) && !memcmp(page, ref, sizeof(page)),
	      "tmpfs file as lender: its page changed");
	say("  %-44s EOPNOTSUPP, page untouched\n", "tmpfs file as lender");
	return T_PASS;
}

/* A file on a FUSE mount: not a single FUSE_READ at its server. */
static int lend_from_fuse_file(struct io_uring *ring, int iofd)
{
	struct server fuse_lender = { 0 };
	uint64_t reads;
	int fd, ret;

	ret = start_inner_mount(&fuse_lender);
	CHECK(!ret, "FUSE lender's server: %s", strerror(-ret));
	fd = open(slow_backing, O_RDONLY | O_CLOEXEC);
	drop_caches();
	reads = fuse_lender.sh->reads;
	ret = fd < 0 ? -errno :
	      lend_once(ring, FUSEZC_IORING_OP_READ_SPLICE_BUF, iofd, fd, 0, 65536, 20);
	reads = fuse_lender.sh->reads - reads;
	if (fd >= 0)
		close(fd);
	server_stop(&fuse_lender);
	CHECK(ret == -EOPNOTSUPP, "FUSE file as lender: %d (%s), want -EOPNOTSUPP",
	      ret, strerror(-ret));
	CHECK(reads == 0, "FUSE file as lender: %llu FUSE_READ at its server, want 0",
	      (unsigned long long)reads);
	say("  %-44s EOPNOTSUPP, no FUSE_READ at its server\n", "file on a FUSE mount as lender");
	return T_PASS;
}

/*
 * (a) Only a lender that opted in is ever called: a socket keeps its data,
 * a pty does not block, a FUSE file is not read, a pipe or a tmpfs file is
 * refused; all with -EOPNOTSUPP.  Every lender is tried, each failure said.
 */
static int t_lender_optin(void)
{
	struct io_uring ring;
	int iofd, fd, failed = 0;

	iofd = open_io_file();
	CHECK(iofd >= 0, "%s: %s", io_path, strerror(errno));
	CHECK(!io_uring_queue_init(8, &ring, 0), "io_uring_queue_init");
	failed += lend_from_socket(&ring, iofd) != T_PASS;
	failed += lend_from_pipe(&ring, iofd) != T_PASS;
	failed += lend_from_tmpfs(&ring, iofd) != T_PASS;
	failed += lend_from_fuse_file(&ring, iofd) != T_PASS;
	io_uring_queue_exit(&ring);

	/* a pty with no data: with a tmpfs and with a block device I/O file */
	failed += lend_from_pty(iofd, "tmpfs") != T_PASS;
	close(iofd);
	fd = park_loop() ? open(loop_node, O_RDONLY | O_CLOEXEC) : -1;
	CHECK(fd >= 0, "loop device: %s", strerror(errno));
	failed += lend_from_pty(fd, "block device (FMODE_NOWAIT)") != T_PASS;
	close(fd);
	CHECK(!failed, "%d lenders were called or not refused", failed);
	return T_PASS;
}

/*
 * (b) An I/O file on a FUSE superblock (another mount's, or the lender's
 * own: the lent read would wait for the folio lock its own readahead
 * holds) or on a stacking file system is refused with -EXDEV; nothing is
 * lent, and the request is then answered by copy.
 */
static int t_exdev(void)
{
	struct server inner = { 0 }, srv = { .cfg = { .threads = 3 } };
	char path[300], *buf = malloc(1 << 20), opts[400];
	struct zc_stats s;
	int ret, failed;

	ret = start_inner_mount(&inner);
	CHECK(!ret, "inner server: %s", strerror(-ret));
	snprintf(path, sizeof(path), "%s/file", ovl_lower[0]);
	unlink(path);
	CHECK(!link(backing, path), "link %s: %s", path, strerror(errno));
	snprintf(opts, sizeof(opts), "lowerdir=%s:%s", ovl_lower[0], ovl_lower[1]);
	CHECK(!mount("overlay", ovl_mnt, "overlay", MS_RDONLY, opts), "mount overlay: %s",
	      strerror(errno));
	srv.cfg.exdev_paths[0] = slow_backing;
	srv.cfg.exdev_paths[1] = ovl_file;
	/* the lender's own mount: a lend that waits for itself */
	file_path(path, sizeof(path), mnt);
	srv.cfg.exdev_paths[2] = path;
	ret = server_start(&srv, mnt, backing, MF_READ_PROBE_EXDEV);
	CHECK(!ret, "server: %s", strerror(-ret));
	ret = fresh_read(path, buf, 0, 65536, "after the refused lendings");
	if (read_stats(mnt, &s))
		ret = T_FAIL;
	server_stop(&srv);
	server_stop(&inner);
	umount2(ovl_mnt, MNT_DETACH);
	free(buf);
	CHECK(ret == T_PASS, "read failed");
	CHECK(srv.sh->probes_done, "probes did not run");
	failed = check_probes(srv.sh);
	CHECK(srv.sh->nr_probes == 3, "%d probes ran, want 3", srv.sh->nr_probes);
	CHECK(!failed, "%d I/O files were not refused with EXDEV", failed);
	say("  zc_read_bytes %lld zc_lent_pages %lld\n", s.zc_read_bytes, s.zc_lent_pages);
	CHECK(s.zc_read_bytes == 0 && s.zc_lent_pages == 0, "something was lent");
	return T_PASS;
}

/*
 * (b) The outer server lends into reads of a file on a second FUSE mount
 * whose server is stopped (SIGSTOP).  A fusectl abort of the outer
 * connection must free an O_DIRECT reader within seconds, not when the
 * stopped server's I/O returns.
 */
static int abort_stopped_round(int r, double *freed_after)
{
	struct server inner = { 0 }, outer = { .cfg = { .threads = 4 } };
	struct one_read rd = { .len = 1 << 20, .direct = true };
	char path[300], dir[200], inner_dir[200];
	struct zc_stats s = { 0 };
	bool lending, freed;
	double t0;
	long waiting;
	int ret;

	ret = start_inner_mount(&inner);
	CHECK(!ret, "round %d: inner server: %s", r, strerror(-ret));
	ret = server_start(&outer, mnt, slow_backing, MF_READ_ZC);
	if (ret) {
		server_stop(&inner);
		CHECK(0, "round %d: outer server: %s", r, strerror(-ret));
	}
	file_path(path, sizeof(path), mnt);
	conn_dir(mnt, dir, sizeof(dir));
	conn_dir(slow_mnt, inner_dir, sizeof(inner_dir));
	/* opened before the stop, so that only the read meets the stopped server */
	rd.fd = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);
	drop_caches();
	kill(inner.pid, SIGSTOP);
	rd.path = path;
	rd.off = (off_t)(r % 6) << 20;
	if (rd.fd > 0)
		one_read_start(&rd);
	/* the outer server has the request and is reading the stopped mount */
	lending = WAIT_UNTIL(outer.sh->reads > 0 &&
			     ((!read_stats_dir(dir, &s) && s.zc_lent_pages > 0) ||
			      outer.sh->fallbacks > 0), 20);
	t0 = now();
	abort_conn_dir(dir);
	freed = one_read_wait(&rd, 20);
	*freed_after = now() - t0;

	/* clean up whatever happened: the inner I/O ends by abort */
	abort_conn_dir(inner_dir);
	kill(inner.pid, SIGKILL);
	kill(inner.pid, SIGCONT);
	if (!freed && rd.fd > 0)
		one_read_wait(&rd, 20);	/* the abort of the inner mount ends it */
	if (!rd.done && rd.fd > 0)
		pthread_detach(rd.tid);
	else if (rd.fd > 0)
		close(rd.fd);
	waitpid(inner.pid, NULL, 0);
	inner.pid = 0;
	waiting = wait_no_waiting(dir, 20);
	if (waiting == 0) {
		server_stop(&outer);
		umount2(slow_mnt, MNT_DETACH);
	} else {
		kill(outer.pid, SIGKILL);
		waitpid(outer.pid, NULL, 0);
		mark_leaked(mnt);
		mark_leaked(slow_mnt);
	}
	CHECK(rd.fd > 0, "round %d: open %s: %s", r, path, strerror(errno));
	CHECK(lending, "round %d: the outer server never got to the stopped backing", r);
	CHECK(freed, "round %d: the O_DIRECT reader was still blocked 20 s after the abort "
	      "(%s)", r, s.zc_lent_pages > 0 ? "its pages were lent" : "copy mode");
	CHECK(waiting == 0, "round %d: %ld requests still waiting after the abort", r, waiting);
	return T_PASS;
}

static int t_abort_stopped_backing(void)
{
	int r, n = rounds >= 10 ? rounds / 10 : 1;
	double worst = 0, t;

	for (r = 0; r < n; r++) {
		if (abort_stopped_round(r, &t))
			return T_FAIL;
		if (t > worst)
			worst = t;
		if (verbose)
			say("  round %d: reader freed %.2f s after the abort\n", r, t);
	}
	say("  %d rounds: every reader freed within %.2f s of the abort\n", n, worst);
	return T_PASS;
}

/*
 * Start a server answering in @mode on mnt and read @rd through it in a
 * thread.  T_PASS: the read returned, the server is still up; T_FAIL: the
 * server did not start, or the read blocked for 60 s (the server is stopped).
 */
static int serve_one_read(struct server *srv, enum mf_read_mode mode,
			  struct one_read *rd, char *path, size_t len,
			  const char *what)
{
	int ret = server_start(srv, mnt, backing, mode);

	CHECK(!ret, "%s: server: %s", what, strerror(-ret));
	file_path(path, len, mnt);
	rd->path = path;
	one_read_start(rd);
	if (!one_read_wait(rd, 60)) {
		server_stop(srv);
		CHECK(0, "%s: read blocked", what);
	}
	return T_PASS;
}

/*
 * (l) IORING_SPLICE_BUF_COMPLETE: the kernel answers a read when its last
 * lending brings the data complete, across the end of the file too, and
 * the server sends nothing (a reply sent anyway gets ENOENT); a lending
 * that leaves a hole, or fails, leaves the answer to the server.
 */
static int auto_complete_checks(bool skip_success)
{
	struct server srv = { .cfg = { .auto_complete = true, .skip_success = skip_success } };
	struct mf_config second;
	struct one_read rd = { .off = 256 << 10, .len = 128 << 10, .direct = true };
	unsigned long long answered;
	struct zc_stats st;
	char path[300];
	long waiting;
	int ret;

	ret = serve_and_check_reads(&srv, path, sizeof(path));
	if (srv.pid <= 0)
		return T_FAIL;	/* no server */
	if (ret == T_PASS)
		ret = check_all_zero_copy(mnt, "kernel-answered reads");
	if (read_stats(mnt, &st))
		st.zc_completed = -1;
	/* the server's counters are final once it has exited (run_correctness) */
	waiting = server_quiesce(&srv);
	CHECK(server_stop(&srv) == 0, "server did not exit cleanly");
	CHECK(waiting == 0, "the server left requests unanswered");
	answered = srv.sh->auto_completed;
	say("  %llu reads answered by the kernel (zc_completed %lld), %llu zero-copy replies, %llu fallbacks\n",
	    answered, st.zc_completed, (unsigned long long)srv.sh->zc_replies,
	    (unsigned long long)srv.sh->fallbacks);
	CHECK(ret == T_PASS, "the readers did not get the right bytes");
	CHECK(answered > 0 && answered == srv.sh->zc_replies && !srv.sh->fallbacks,
	      "not every zero-copy read was answered by the kernel");
	CHECK(st.zc_completed == (long long)answered,
	      "zc_completed %lld, the server saw %llu", st.zc_completed, answered);

	/* the first lending leaves a hole: only the second one answers */
	if (serve_one_read(&srv, MF_READ_OUT_OF_ORDER, &rd, path, sizeof(path),
			   "O_DIRECT 128 KiB, halves back to front"))
		return T_FAIL;
	server_stop(&srv);
	say("  halves lent back to front: CQE flags say answered %d, then %d\n",
	    srv.sh->lend_order_completed[0], srv.sh->lend_order_completed[1]);
	ret = check_read(&rd, rd.len, "O_DIRECT 128 KiB, halves back to front");
	if (ret != T_PASS)
		return ret;
	CHECK(!srv.sh->lend_order_completed[0] && srv.sh->lend_order_completed[1],
	      "want the read answered by the second lending only");

	/* the kernel's answer came first: the server's gets ENOENT */
	second = srv.cfg;
	second.second_reply_delay_ms = SECOND_REPLY_DELAY_MS;
	ret = misbehave_and_read_cfg(&second, MF_READ_SECOND_REPLY,
				     "reply after the kernel answered (errno)",
				     offsetof(struct mf_shared, second_reply_errno), ENOENT);
	/* a failed lending: the server answers (its lie refused, then a copy) */
	if (ret == T_PASS)
		ret = misbehave_and_read_cfg(&srv.cfg, MF_READ_LIE_FAILED_IO,
					     "lent I/O failed (errno of the claim)",
					     offsetof(struct mf_shared, reply_errno), EINVAL);
	return ret;
}

static int t_auto_complete(void)
{
	return auto_complete_checks(false);
}

/*
 * The same with IOSQE_CQE_SKIP_SUCCESS on every lending: a lending the
 * kernel did not answer (the first of two halves, a failed one) must post
 * its CQE, or the server would take the read for answered and the reader
 * would wait for ever.
 */
static int t_skip_success(void)
{
	return auto_complete_checks(true);
}

/* (c) A lending must lie inside the request's data: -EINVAL otherwise. */
static int t_lend_range(void)
{
	struct server srv = { 0 };
	struct one_read rd = { .off = 1 << 20, .len = 65536, .direct = true };
	char path[300];
	int ret, failed;

	if (serve_one_read(&srv, MF_READ_PROBE_RANGE, &rd, path, sizeof(path),
			   "O_DIRECT 64 KiB"))
		return T_FAIL;
	server_stop(&srv);
	ret = check_read(&rd, rd.len, "O_DIRECT 64 KiB");
	CHECK(srv.sh->probes_done, "probes did not run");
	failed = check_probes(srv.sh);
	CHECK(!failed, "%d lendings past the request's end were not refused with EINVAL", failed);
	return ret;
}

/* (d) Loans completed in any order: [64K,128K) then [0,64K), reply 128K. */
static int t_out_of_order(void)
{
	struct server srv = { 0 };
	struct one_read rd = { .off = 256 << 10, .len = 128 << 10, .direct = true };
	char path[300], *buf = malloc(1 << 20);
	int ret;

	if (serve_one_read(&srv, MF_READ_OUT_OF_ORDER, &rd, path, sizeof(path),
			   "O_DIRECT 128 KiB")) {
		free(buf);
		return T_FAIL;
	}
	ret = check_read(&rd, rd.len, "O_DIRECT 128 KiB, halves lent back to front");
	if (ret == T_PASS)
		ret = fresh_read(path, buf, 2 << 20, 1 << 20, "buffered 1 MiB, back to front");
	if (server_quiesce(&srv) != 0)
		ret = T_FAIL;
	server_stop(&srv);
	free(buf);
	say("  second half lent: %d, first half: %d; %llu zero-copy replies, %llu refused (%s)\n",
	    (int)srv.sh->lend_order_res[0], (int)srv.sh->lend_order_res[1],
	    (unsigned long long)srv.sh->zc_replies, (unsigned long long)srv.sh->fallbacks,
	    strerror(srv.sh->reply_errno));
	CHECK(ret == T_PASS, "the reader did not get the right bytes");
	CHECK(srv.sh->zc_replies > 0 && srv.sh->fallbacks == 0 && !srv.sh->reply_errno,
	      "the out-of-order zero-copy replies were not all accepted");
	return T_PASS;
}

/*
 * (e) An O_DIRECT preadv() of 16 pieces of 512 bytes: one lending of the
 * whole request places all 8192 bytes (the CQE says so), the reader gets
 * them all.
 */
static int t_subpage_segments(void)
{
	struct server srv = { 0 };
	struct one_read rd = { .off = 40960, .len = 8192, .direct = true, .iovecs = 16 };
	char path[300];

	if (serve_one_read(&srv, MF_READ_ZC, &rd, path, sizeof(path),
			   "O_DIRECT preadv 16 x 512"))
		return T_FAIL;
	server_stop(&srv);
	say("  %llu FUSE_READ, last lending CQE %d, preadv returned %zd\n",
	    (unsigned long long)srv.sh->reads, srv.sh->last_lend_res, rd.n);
	/*
	 * A short O_DIRECT read falls back to a buffered read of the rest,
	 * which hides the short lending from the reader: count them.
	 */
	CHECK(srv.sh->short_lends == 0, "a lending of %u bytes placed only %d (the reader's "
	      "O_DIRECT read came back short and the rest was read buffered)",
	      srv.sh->short_lend_size, srv.sh->short_lend_res);
	CHECK(srv.sh->reads == 1, "%llu FUSE_READ for one O_DIRECT preadv, want 1",
	      (unsigned long long)srv.sh->reads);
	return check_read(&rd, 8192, "O_DIRECT preadv 16 x 512");
}

/*
 * Issued inline, a lending does its file I/O asynchronously: an O_DIRECT
 * read of the loop device completes through ->ki_complete and a buffered
 * read of uncached data waits for its folio (IOCB_WAITQ), both finishing
 * in task work, so the submitter never waits for the I/O and no io-wq
 * worker is needed.  The server's ring is DEFER_TASKRUN: a CQE present when
 * io_uring_submit() returns means the I/O ran inside it.  Every byte the
 * readers get is checked; with -a the kernel answers the reads.
 */
static int t_async_lend(void)
{
	struct server srv = { 0 };
	struct mf_shared *sh;
	char path[300], *buf = NULL;
	int ret, fd;

	if (parking_server(&srv, "async_lend"))
		return T_FAIL;
	ret = server_start(&srv, mnt, backing, MF_READ_ASYNC);
	CHECK(!ret, "server: %s", strerror(-ret));
	file_path(path, sizeof(path), mnt);
	ret = check_buffered(path);
	if (ret == T_PASS)
		ret = check_direct(path);
	if (ret == T_PASS && posix_memalign((void **)&buf, 4096, 1 << 20))
		ret = T_FAIL;
	for (int direct = 0; direct < 2 && ret == T_PASS; direct++) {
		drop_caches();
		fd = open(path, O_RDONLY | (direct ? O_DIRECT : 0));
		CHECK(fd >= 0, "open %s: %s", path, strerror(errno));
		for (off_t off = 0; off < FILE_SIZE && ret == T_PASS; off += 1 << 20)
			ret = verify_range(fd, buf, off, 1 << 20,
					   direct ? "O_DIRECT whole file" : "whole file");
		close(fd);
	}
	free(buf);
	if (ret == T_PASS)
		ret = check_all_zero_copy(mnt, "async lendings");
	if (server_quiesce(&srv) != 0)
		ret = T_FAIL;
	server_stop(&srv);
	sh = srv.sh;
	say("  lendings: %llu O_DIRECT of up to %u bytes (%llu done inside the submit), %llu "
	    "buffered of uncached data (%llu inside); %llu failed (last %d); io-wq workers "
	    "seen after %llu (%d, first after a%s lending)\n",
	    (unsigned long long)sh->async_lends[0], sh->async_dio_max,
	    (unsigned long long)sh->async_in_submit[0],
	    (unsigned long long)sh->async_lends[1], (unsigned long long)sh->async_in_submit[1],
	    (unsigned long long)sh->async_failed, sh->async_error,
	    (unsigned long long)sh->async_iowq, sh->async_iowq_workers,
	    sh->async_iowq_kind ? " buffered" : "n O_DIRECT");
	CHECK(ret == T_PASS, "reads failed");
	CHECK(!sh->async_failed, "%llu lendings failed, last: %s",
	      (unsigned long long)sh->async_failed, strerror(-sh->async_error));
	CHECK(sh->async_lends[0] >= 8 && sh->async_lends[1] >= 8,
	      "too few lendings of a kind to tell: %llu O_DIRECT, %llu buffered",
	      (unsigned long long)sh->async_lends[0], (unsigned long long)sh->async_lends[1]);
	CHECK(!sh->async_in_submit[0],
	      "%llu O_DIRECT lendings completed inside io_uring_submit(): the submitter waited for the I/O",
	      (unsigned long long)sh->async_in_submit[0]);
	CHECK(sh->async_in_submit[1] < sh->async_lends[1],
	      "every buffered lending of uncached data completed inside io_uring_submit()");
	CHECK(!sh->async_iowq,
	      "an io-wq worker existed after %llu lendings: a NOWAIT-capable file's read went to io-wq",
	      (unsigned long long)sh->async_iowq);
	return T_PASS;
}

/*
 * A request's pages are lent in one call of the lender, not one per 16
 * pages (the default size of the direct pipe they travel through).
 */
static int t_lend_calls(void)
{
	struct server srv = { 0 };
	struct one_read rd = { .off = 1 << 20, .len = 1 << 20, .direct = true };
	unsigned long long lendings;
	struct zc_stats st;
	char path[300];
	int ret;

	if (serve_one_read(&srv, MF_READ_ZC, &rd, path, sizeof(path), "O_DIRECT 1 MiB"))
		return T_FAIL;
	ret = read_stats(mnt, &st);
	server_stop(&srv);
	if (check_read(&rd, rd.len, "O_DIRECT 1 MiB"))
		return T_FAIL;
	CHECK(!ret, "zerocopy_stats: %s", strerror(-ret));
	lendings = srv.sh->zc_replies;
	say("  %llu FUSE_READ, %llu lendings, %lld bytes, %lld calls into the lender\n",
	    (unsigned long long)srv.sh->reads, lendings, st.zc_read_bytes, st.zc_lend_calls);
	CHECK(lendings > 0 && st.zc_read_bytes == (long long)rd.len && !srv.sh->fallbacks,
	      "the read was not all zero copy: %llu lendings, %lld bytes, %llu fallbacks",
	      lendings, st.zc_read_bytes, (unsigned long long)srv.sh->fallbacks);
	/* else one call per request would be all there is to see */
	CHECK(st.zc_read_bytes / (long long)lendings > (16 << 12),
	      "requests of %lld bytes: too small to tell", st.zc_read_bytes / (long long)lendings);
	CHECK(st.zc_lend_calls == (long long)lendings,
	      "%lld calls into the lender for %llu lendings, want one each",
	      st.zc_lend_calls, lendings);
	return T_PASS;
}

/*
 * (f) A zero-copy reply claiming more than was placed, or more than was
 * asked, is refused with EINVAL and the request stays in flight; the correct
 * reply after it reaches the reader.
 */
static int t_overclaim(void)
{
	struct server srv = { 0 };
	static const struct { enum mf_read_mode mode; const char *what; } lies[] = {
		{ MF_READ_LIE_PARTIAL, "size > placed (half placed)" },
		{ MF_READ_LIE_MORE, "size > requested" },
	};
	struct one_read rd = { .off = 1 << 20, .len = 65536, .direct = true };
	char path[300];
	size_t i;

	for (i = 0; i < sizeof(lies) / sizeof(lies[0]); i++) {
		if (serve_one_read(&srv, lies[i].mode, &rd, path, sizeof(path),
				   lies[i].what))
			return T_FAIL;
		server_stop(&srv);
		say("  %-28s reply: %s; correct reply after it: %s; reader: %zd %s\n",
		    lies[i].what, strerror(srv.sh->reply_errno), strerror(srv.sh->recovery_errno),
		    rd.n, rd.n < 0 ? strerror(rd.err) : "bytes");
		CHECK(srv.sh->reply_errno == EINVAL, "%s: the bad reply got %s, want EINVAL",
		      lies[i].what, strerror(srv.sh->reply_errno));
		CHECK(srv.sh->recoveries == 1 && !srv.sh->recovery_errno,
		      "%s: the request did not stay in flight for the correct reply", lies[i].what);
		if (check_read(&rd, rd.len, lies[i].what))
			return T_FAIL;
	}
	return T_PASS;
}

/*
 * (g) A READ_SPLICE_BUF cancelled while queued in io-wq has returned its
 * loan by the time its CQE is visible: a copy reply sent on that CQE (by a
 * thread watching the CQ ring) is never refused with EBUSY.
 */
static int t_cancel(void)
{
	struct server srv = { 0 };
	struct one_read rd = { .len = 1 << 20, .direct = true };
	char path[300];
	struct zc_stats s;
	int i, n = 60, ret = T_PASS;

	if (parking_server(&srv, "cancel"))
		return T_FAIL;
	ret = server_start(&srv, mnt, backing, MF_READ_CANCEL);
	CHECK(!ret, "server: %s", strerror(-ret));
	file_path(path, sizeof(path), mnt);
	rd.path = path;
	for (i = 0; i < n && ret == T_PASS; i++) {
		rd.off = (off_t)(i % 7) << 20;
		one_read_start(&rd);
		if (!one_read_wait(&rd, 60)) {
			say("  read %d blocked\n", i);
			ret = T_FAIL;
			break;
		}
		ret = check_read(&rd, rd.len, "O_DIRECT 1 MiB around a cancelled lending");
	}
	if (read_stats(mnt, &s))
		s.zc_lent_pages = -1;
	server_stop(&srv);
	say("  %llu lendings cancelled in io-wq: %llu replies on the CQE refused with EBUSY, "
	    "%llu CQEs not -ECANCELED (last %d), zc_lent_pages right after a CQE: %lld, "
	    "at the end: %lld\n",
	    (unsigned long long)srv.sh->cancels, (unsigned long long)srv.sh->cancel_ebusy,
	    (unsigned long long)srv.sh->cancel_bad_res, srv.sh->cancel_last_res,
	    srv.sh->lent_after_cqe, s.zc_lent_pages);
	if (ret)
		return ret;
	if (check_parked(srv.sh, "cancel"))
		return T_FAIL;
	/* a lending finds its data cached now and then, and is not parked */
	CHECK(srv.sh->cancels * 2 >= (uint64_t)n, "only %llu of %d lendings could be parked",
	      (unsigned long long)srv.sh->cancels, n);
	CHECK(srv.sh->cancel_bad_res == 0, "a cancelled lending's CQE was %d, want -ECANCELED",
	      srv.sh->cancel_last_res);
	CHECK(srv.sh->cancel_ebusy == 0, "%llu replies sent on the CQE got EBUSY: the loan "
	      "was returned after the CQE", (unsigned long long)srv.sh->cancel_ebusy);
	CHECK(srv.sh->lent_after_cqe == 0 && s.zc_lent_pages == 0, "pages still lent");
	return T_PASS;
}

/*
 * (h) A FUSE_INTERRUPT for a request whose pages are lent can be answered
 * (-EAGAIN, then -ENOSYS): the interrupt reply is not a reply to the read.
 */
static int t_interrupt(void)
{
	struct server srv = { 0 };
	struct one_read rd = { .off = 1 << 20, .len = 65536, .direct = true };
	struct sigaction sa = { .sa_handler = sigusr1_handler };
	char path[300];
	bool parked, answered, done;
	int ret;

	if (parking_server(&srv, "interrupt"))
		return T_FAIL;
	sigaction(SIGUSR1, &sa, NULL);	/* no SA_RESTART: the wait is interrupted */
	ret = server_start(&srv, mnt, backing, MF_READ_INTERRUPT);
	CHECK(!ret, "server: %s", strerror(-ret));
	file_path(path, sizeof(path), mnt);
	rd.path = path;
	/* O_DIRECT without FUSE_ASYNC_DIO: a synchronous, interruptible request */
	one_read_start(&rd);
	parked = WAIT_UNTIL(srv.sh->parked, 30);
	if (parked)
		pthread_kill(rd.tid, SIGUSR1);
	answered = WAIT_UNTIL(srv.sh->interrupt_replies > 0, 20);
	done = one_read_wait(&rd, 60);
	server_stop(&srv);
	if (!done)
		pthread_detach(rd.tid);
	say("  %d FUSE_INTERRUPT while lent; replies: -EAGAIN -> %s, -ENOSYS -> %s\n",
	    srv.sh->interrupts, strerror(srv.sh->interrupt_errno[0]),
	    srv.sh->interrupts > 1 ? strerror(srv.sh->interrupt_errno[1]) : "(not sent)");
	if (check_parked(srv.sh, "interrupt"))
		return T_FAIL;
	CHECK(parked && answered, "no FUSE_INTERRUPT reached the server while lent");
	CHECK(done, "the interrupted reader did not return");
	CHECK(srv.sh->interrupt_errno[0] == 0, "the -EAGAIN interrupt reply got %s",
	      strerror(srv.sh->interrupt_errno[0]));
	CHECK(srv.sh->interrupts < 2 || srv.sh->interrupt_errno[1] == 0,
	      "the -ENOSYS interrupt reply got %s", strerror(srv.sh->interrupt_errno[1]));
	return check_read(&rd, rd.len, "interrupted O_DIRECT read");
}

/*
 * (i) FUSE_NOTIFY_RESEND while a request is lent: it is not re-delivered
 * while lent, stays answerable once its loan is back; and an abort while
 * lent (after a resend) frees the reader and leaves nothing waiting.
 */
static int t_resend(void)
{
	struct server srv = { .cfg = { .threads = 2 } };
	struct one_read rd = { .off = 1 << 20, .len = 65536, .direct = true };
	char path[300], dir[200];
	bool parked, freed;
	long waiting;
	int ret;

	if (parking_server(&srv, "resend"))
		return T_FAIL;
	ret = server_start(&srv, resend_mnt, backing, MF_READ_RESEND);
	CHECK(!ret, "server: %s", strerror(-ret));
	file_path(path, sizeof(path), resend_mnt);
	conn_dir(resend_mnt, dir, sizeof(dir));
	rd.path = path;

	/* 1: resend while lent, then let the loan return and reply */
	one_read_start(&rd);
	parked = WAIT_UNTIL(srv.sh->parked, 30);
	/* a re-delivery would come at once: watch for it a while */
	WAIT_UNTIL(srv.sh->resent > 0, 3);
	srv.sh->release = 1;
	freed = one_read_wait(&rd, 60);
	say("  resend while lent: notify %s, %llu re-delivered while lent, "
	    "the lender's reply after its loan: %s\n",
	    strerror(srv.sh->notify_errno), (unsigned long long)srv.sh->resent_while_lent,
	    strerror(srv.sh->resend_reply_errno));
	ret = T_FAIL;
	if (!parked || !freed)
		say("  FAIL: %s\n", !parked ? "no loan parked" : "the reader did not return");
	else if (srv.sh->notify_errno)
		say("  FAIL: FUSE_NOTIFY_RESEND: %s\n", strerror(srv.sh->notify_errno));
	else if (srv.sh->resent_while_lent)
		say("  FAIL: the lent request was re-delivered while lent\n");
	else if (srv.sh->resend_reply_errno)
		say("  FAIL: the lent request was not answerable after its loan\n");
	else if (check_read(&rd, rd.len, "read across a resend") == T_PASS)
		ret = T_PASS;

	/* 2: resend while lent, abort while lent */
	if (ret == T_PASS) {
		srv.sh->release = 0;
		srv.sh->parked = 0;
		rd.off = 3 << 20;
		one_read_start(&rd);
		parked = WAIT_UNTIL(srv.sh->parked, 30);
		WAIT_UNTIL(srv.sh->resent > 0, 1);
		abort_conn(resend_mnt);
		/*
		 * An O_DIRECT read's end may wait for its loan (the reader's own
		 * pages are being written): let the loan return, then the read
		 * and every request must end.
		 */
		srv.sh->release = 1;
		freed = one_read_wait(&rd, 20);
		if (!rd.done)
			pthread_detach(rd.tid);
		waiting = wait_no_waiting(dir, 20);
		say("  abort while lent after a resend: reader %s, %ld waiting after the loan\n",
		    freed ? "freed" : "still blocked 20 s after the loan's return", waiting);
		if (!parked || !freed || waiting != 0)
			ret = T_FAIL;
	}
	waiting = wait_no_waiting(dir, 20);
	if (waiting == 0) {
		server_stop(&srv);
	} else {
		abort_conn(resend_mnt);
		kill(srv.pid, SIGKILL);
		waitpid(srv.pid, NULL, 0);
		mark_leaked(resend_mnt);
		say("  %ld requests still waiting: %s left mounted\n", waiting, resend_mnt);
		ret = T_FAIL;
	}
	return ret;
}

/*
 * (k) IORING_OP_WRITE_SPLICE_BUF (59) is offered, and like opcode 58 it
 * never calls into a file that does not lend.
 */
static int t_write_op(void)
{
	struct io_uring_probe *probe;
	struct io_uring ring;
	int iofd, p[2], ret;
	bool listed;

	CHECK(!io_uring_queue_init(4, &ring, 0), "io_uring_queue_init");
	probe = io_uring_get_probe_ring(&ring);
	CHECK(probe, "io_uring probe");
	listed = io_uring_opcode_supported(probe, FUSEZC_IORING_OP_WRITE_SPLICE_BUF);
	io_uring_free_probe(probe);
	iofd = open_io_file();
	CHECK(iofd >= 0 && !pipe2(p, O_CLOEXEC), "io file, pipe");
	ret = lend_once(&ring, FUSEZC_IORING_OP_WRITE_SPLICE_BUF, iofd, p[0], 0, 4096, 20);
	close(p[0]);
	close(p[1]);
	close(iofd);
	io_uring_queue_exit(&ring);
	say("  opcode 59: probe says %s, a pipe as lender: %d (%s)\n",
	    listed ? "supported" : "not supported", ret, strerror(-ret));
	CHECK(listed, "IORING_OP_WRITE_SPLICE_BUF (59) is not offered");
	CHECK(ret == -EOPNOTSUPP, "a pipe as lender: %d, want -EOPNOTSUPP", ret);
	return T_PASS;
}

/* ------------------------------------------------------ zero-copy writes */


/* Write @len bytes of @src to @fd at @off, all of them; 0 or -errno. */
static int write_all(int fd, const unsigned char *src, size_t len, off_t off, bool append)
{
	while (len) {
		ssize_t n = append ? write(fd, src, len) : pwrite(fd, src, len, off);

		if (n < 0)
			return -errno;
		if (!n)
			return -EIO;
		src += n;
		off += n;
		len -= n;
	}
	return 0;
}

/* One entry of write_ops through the mount; @model follows. */
static int do_write_op(const char *path, int i, unsigned char *model, off_t *size)
{
	size_t len = write_ops[i].len;
	off_t off = write_ops[i].how == W_APPEND ? *size : write_ops[i].off;
	unsigned char *buf;
	int fd, flags, ret = 0;

	if (posix_memalign((void **)&buf, 4096, len + 4096))
		return -ENOMEM;
	fill_pattern(buf, len, i);
	switch (write_ops[i].how) {
	case W_MMAP: {
		off_t start = off & ~(off_t)4095;
		size_t maplen = (off + len - start + 4095) & ~(size_t)4095;
		unsigned char *map;

		fd = open(path, O_RDWR);
		if (fd < 0)
			break;
		map = mmap(NULL, maplen, PROT_READ | PROT_WRITE, MAP_SHARED, fd, start);
		if (map == MAP_FAILED) {
			ret = -errno;
			break;
		}
		memcpy(map + (off - start), buf, len);
		if (msync(map, maplen, MS_SYNC))
			ret = -errno;
		munmap(map, maplen);
		break;
	}
	default:
		flags = O_WRONLY;
		if (write_ops[i].how == W_DIRECT)
			flags |= O_DIRECT;
		if (write_ops[i].how == W_APPEND)
			flags |= O_APPEND;
		fd = open(path, flags);
		if (fd < 0)
			break;
		ret = write_all(fd, buf, len, off, write_ops[i].how == W_APPEND);
		if (!ret && fsync(fd))
			ret = -errno;
	}
	if (fd < 0)
		ret = -errno;
	else if (close(fd) && !ret)
		ret = -errno;
	if (!ret) {
		memcpy(model + off, buf, len);
		if (off + (off_t)len > *size)
			*size = off + len;
	}
	free(buf);
	return ret;
}

/* The backing file, read directly, against @model. */
static int check_write_backing(const unsigned char *model, off_t size, const char *what)
{
	unsigned char *buf = malloc(WMODEL_SIZE);
	struct stat st;
	ssize_t n;
	int fd;

	CHECK(buf, "malloc");
	fd = open(wbacking, O_RDONLY | O_CLOEXEC);
	CHECK(fd >= 0 && !fstat(fd, &st), "%s: open %s: %s", what, wbacking, strerror(errno));
	n = pread(fd, buf, WMODEL_SIZE, 0);
	close(fd);
	if (st.st_size != size || n != size) {
		say("  %s: backing file has %lld bytes (read %zd), want %lld\n", what,
		    (long long)st.st_size, n, (long long)size);
		free(buf);
		return T_FAIL;
	}
	if (memcmp(buf, model, size)) {
		off_t i = 0;

		while (buf[i] == model[i])
			i++;
		say("  %s: wrong byte at %lld on the backing file\n", what, (long long)i);
		free(buf);
		return T_FAIL;
	}
	__sync_fetch_and_add(&bytes_verified, size);
	free(buf);
	return T_PASS;
}

/*
 * Every shape of write through a mount whose server takes zero-copy
 * writes (@zc) or not, with the write-back cache or without: the backing
 * file must end up with exactly the bytes written, and the counters must
 * say which way they went.
 */
static int run_writes(bool zc, bool writeback, const char *label)
{
	struct server srv = { .cfg = { .writable = true, .accept_zc_write = zc,
				       .writeback_cache = writeback } };
	unsigned char *model = malloc(WMODEL_SIZE);
	uint64_t want_flags;
	struct zc_stats st;
	char path[300];
	off_t size;
	int i, ret;

	CHECK(model, "malloc");
	CHECK(!make_write_backing(model, &size), "write backing: %s", strerror(errno));
	CHECK(!server_start(&srv, mnt, wbacking, MF_READ_ZC), "server_start");
	file_path(path, sizeof(path), mnt);
	ret = T_PASS;
	if (zc && !srv.sh->zc_write_accepted) {
		say("  %s: the kernel did not offer FUSE_ZERO_COPY_WRITE\n", label);
		ret = T_FAIL;
	}
	for (i = 0; ret == T_PASS && i < (int)(sizeof(write_ops) / sizeof(write_ops[0])); i++) {
		int err = do_write_op(path, i, model, &size);

		if (err) {
			say("  %s: %s: %s\n", label, write_ops[i].what, strerror(-err));
			ret = T_FAIL;
		}
	}
	if (ret == T_PASS && server_quiesce(&srv))
		ret = T_FAIL;
	if (ret == T_PASS && read_stats(mnt, &st)) {
		say("  %s: zerocopy_stats unreadable\n", label);
		ret = T_FAIL;
	}
	server_stop(&srv);
	if (ret == T_PASS)
		ret = check_write_backing(model, size, label);
	free(model);
	if (ret != T_PASS)
		return ret;

	say("  %s: %llu writes (%llu zero copy, %llu copied), kernel: zc_write_bytes %lld "
	    "copy_write_bytes %lld zc_lent_pages %lld, flags seen %#llx\n", label,
	    (unsigned long long)srv.sh->writes, (unsigned long long)srv.sh->zc_writes,
	    (unsigned long long)srv.sh->copy_writes, st.zc_write_bytes, st.copy_write_bytes,
	    st.zc_lent_pages, (unsigned long long)srv.sh->write_flags_seen);
	CHECK(!srv.sh->write_failures, "%llu lendings wrote less than asked, last %d",
	      (unsigned long long)srv.sh->write_failures, srv.sh->write_error);
	CHECK(st.zc_lent_pages == 0, "%lld pages still lent", st.zc_lent_pages);
	/* FUSE_WRITE_CACHE: writeback (the mmap write, or every one) was seen */
	want_flags = 1;
	if (zc)
		want_flags |= FUSEZC_WRITE_ZERO_COPY;
	CHECK((srv.sh->write_flags_seen & want_flags) == want_flags,
	      "write_flags seen %#llx, want %#llx among them",
	      (unsigned long long)srv.sh->write_flags_seen, (unsigned long long)want_flags);
	if (zc && auto_complete) {
		/* -a: the kernel answers a write whose lending wrote it all */
		say("  %s: %llu writes answered by the kernel\n", label,
		    (unsigned long long)srv.sh->zc_writes_answered);
		CHECK(srv.sh->zc_writes_answered == srv.sh->zc_writes,
		      "-a: the kernel answered %llu of %llu complete writes",
		      (unsigned long long)srv.sh->zc_writes_answered,
		      (unsigned long long)srv.sh->zc_writes);
	}
	if (zc) {
		CHECK(srv.sh->zc_writes && !srv.sh->copy_writes,
		      "zero copy: %llu writes copied", (unsigned long long)srv.sh->copy_writes);
		CHECK(st.copy_write_bytes == 0 &&
		      (uint64_t)st.zc_write_bytes == srv.sh->zc_write_bytes,
		      "kernel counted %lld zero-copy bytes (server wrote %llu), %lld copied",
		      st.zc_write_bytes, (unsigned long long)srv.sh->zc_write_bytes,
		      st.copy_write_bytes);
	} else {
		CHECK(!srv.sh->zc_writes && st.zc_write_bytes == 0 && st.copy_write_bytes > 0,
		      "copy: %llu zero-copy writes, kernel zc_write_bytes %lld copy %lld",
		      (unsigned long long)srv.sh->zc_writes, st.zc_write_bytes,
		      st.copy_write_bytes);
	}
	return T_PASS;
}

static int t_write_correctness(void)
{
	if (run_writes(true, false, "zero copy, write-through") ||
	    run_writes(true, true, "zero copy, write-back cache") ||
	    run_writes(false, false, "copy (capability not accepted)"))
		return T_FAIL;
	return T_PASS;
}

/*
 * One write through a server that misbehaves as @mode; returns the
 * writer's errno (0 if the write succeeded) in *@werr.
 */
static int misbehave_and_write(enum mf_write_mode mode, struct server *srv, int *werr)
{
	unsigned char *model = malloc(WMODEL_SIZE);
	char path[300];
	off_t size;
	int ret;

	CHECK(model, "malloc");
	CHECK(!make_write_backing(model, &size), "write backing");
	srv->cfg.writable = true;
	srv->cfg.accept_zc_write = true;
	CHECK(!server_start(srv, mnt, wbacking, MF_READ_ZC), "server_start");
	srv->sh->write_mode = mode;
	file_path(path, sizeof(path), mnt);
	/* 0: W_BUFFERED 64 KiB at 0 */
	*werr = -do_write_op(path, 0, model, &size);
	ret = server_quiesce(srv) ? T_FAIL : T_PASS;
	server_stop(srv);
	if (ret == T_PASS && !*werr)
		ret = check_write_backing(model, size, "after the write");
	free(model);
	return ret;
}

/* A writer of write_fault_loop(): its own 1 MiB region, write after write. */
struct writer_arg {
	const char *path;
	int idx;
	bool direct;
	unsigned int seed;
	volatile int *stop;
	struct { off_t off; size_t len; unsigned int gen; } acked[256];
	int nacked;
};

static void *writer_main(void *p)
{
	struct writer_arg *a = p;
	off_t off = (off_t)a->idx << 20, end = off + (1 << 20);
	unsigned char *buf;
	int fd;

	if (posix_memalign((void **)&buf, 4096, 65536))
		return NULL;
	fd = open(a->path, O_WRONLY | (a->direct ? O_DIRECT : 0));
	while (fd >= 0 && !*a->stop && a->nacked < 256) {
		size_t len = 4096 * (1 + rand_r(&a->seed) % 16);
		unsigned int gen = a->seed * 1000 + a->nacked;
		ssize_t n;

		if (off + (off_t)len > end)
			break;
		fill_pattern(buf, len, gen);
		n = pwrite(fd, buf, len, off);
		if (n <= 0)
			break;		/* the strike */
		a->acked[a->nacked].off = off;
		a->acked[a->nacked].len = (size_t)n;
		a->acked[a->nacked].gen = gen;
		a->nacked++;
		off += n;
	}
	if (fd >= 0)
		close(fd);
	free(buf);
	return NULL;
}

/* Every write the writers had acknowledged is on the device, byte for byte. */
static int check_acked(const char *dev, struct writer_arg *args, int nr, int round)
{
	unsigned char *got, *want = malloc(65536);
	int fd = open(dev, O_RDONLY | O_DIRECT | O_CLOEXEC), ret = T_PASS;

	CHECK(want && fd >= 0 && !posix_memalign((void **)&got, 4096, 65536),
	      "open %s: %s", dev, strerror(errno));
	for (int i = 0; i < nr && ret == T_PASS; i++) {
		for (int k = 0; k < args[i].nacked; k++) {
			size_t len = args[i].acked[k].len;
			size_t rlen = (len + 4095) & ~(size_t)4095;

			fill_pattern(want, 65536, args[i].acked[k].gen);
			if (pread(fd, got, rlen, args[i].acked[k].off) < (ssize_t)len ||
			    memcmp(got, want, len)) {
				say("  round %d: writer %d's acknowledged write %lld+%zu is not on "
				    "the device\n", round, i, (long long)args[i].acked[k].off, len);
				ret = T_FAIL;
				break;
			}
			__sync_fetch_and_add(&bytes_verified, len);
		}
	}
	close(fd);
	free(got);
	free(want);
	return ret;
}

/*
 * kill -9 / fusectl abort of a server whose write lendings are parked in
 * io-wq (30 ms each, writing to the loop device): every write the writers
 * saw acknowledged is on the device, nothing stays lent.
 */
static int write_fault_loop(bool abort_conn)
{
	const char *what = abort_conn ? "abort" : "kill -9";
	struct server srv = { .cfg = { .threads = 4, .slow_ms = 30, .writable = true,
				       .accept_zc_write = true } };
	int r, in_flight = 0, ret;
	uint64_t acked = 0, parks = 0;
	unsigned char *model = malloc(WMODEL_SIZE);
	char path[300], dir[200];
	double t0 = now();
	off_t size;

	CHECK(model && !make_write_backing(model, &size), "write backing");
	free(model);
	if (parking_server(&srv, what))
		return T_FAIL;
	file_path(path, sizeof(path), mnt);

	for (r = 0; r < rounds; r++) {
		struct writer_arg args[4];
		pthread_t tids[4];
		volatile int stop = 0;
		int i;

		ret = server_start(&srv, mnt, wbacking, MF_READ_ZC);
		CHECK(!ret, "round %d: server: %s", r, strerror(-ret));
		srv.sh->write_mode = MF_WRITE_PARKED;
		CHECK(srv.sh->zc_write_accepted, "zero-copy writes not offered");
		CHECK(!conn_dir(mnt, dir, sizeof(dir)), "conn dir");
		for (i = 0; i < 4; i++) {
			args[i] = (struct writer_arg){ .path = path, .idx = i, .direct = i & 1,
				.seed = r * 7 + i + 1, .stop = &stop };
			pthread_create(&tids[i], NULL, writer_main, &args[i]);
		}
		/* some writes acknowledged first (each is parked 30 ms), then
		 * strike while a loan is out */
		sleep_ms(50 + rand() % 150);
		in_flight += fault_wait_lent(dir);
		if (fault_strike(&srv, dir, abort_conn, r))
			return T_FAIL;
		stop = 1;
		for (i = 0; i < 4; i++)
			pthread_join(tids[i], NULL);
		if (fault_settle(&srv, dir, abort_conn, r))
			return T_FAIL;
		parks += srv.sh->parks;
		/* the server is gone: no write of it can land any more */
		if (check_acked(loop_node, args, 4, r) != T_PASS)
			return T_FAIL;
		for (i = 0; i < 4; i++)
			acked += args[i].nacked;
	}
	say("  %s with writes: %d rounds, %d with lent pages in flight at the strike, "
	    "%llu writes parked, %llu acknowledged writes all on the device, %.1f s\n",
	    what, rounds, in_flight, (unsigned long long)parks, (unsigned long long)acked,
	    now() - t0);
	CHECK(in_flight * 2 >= rounds, "only %d of %d rounds had lending in flight",
	      in_flight, rounds);
	CHECK(acked > 0, "no write was acknowledged");
	return T_PASS;
}

static int t_write_kill_loop(void) { return write_fault_loop(false); }
static int t_write_abort_loop(void) { return write_fault_loop(true); }

/*
 * (l) A borrower only ever reads a write's pages: READ_SPLICE_BUF on a
 * FUSE_WRITE is refused, and what the writer wrote reaches the file.
 */
static int t_write_direction(void)
{
	struct server srv = { 0 };
	int werr;

	CHECK(misbehave_and_write(MF_WRITE_WRONG_DIR, &srv, &werr) == T_PASS,
	      "the write after the refused lending");
	say("  READ_SPLICE_BUF on a FUSE_WRITE: %d (%s), the write: %s\n",
	    srv.sh->wrong_dir_write_res, strerror(-srv.sh->wrong_dir_write_res),
	    werr ? strerror(werr) : "ok");
	CHECK(srv.sh->wrong_dir_write_res == -EOPNOTSUPP,
	      "READ_SPLICE_BUF on a FUSE_WRITE: %d, want -EOPNOTSUPP",
	      srv.sh->wrong_dir_write_res);
	CHECK(!werr, "the write failed: %s", strerror(werr));
	return T_PASS;
}

/*
 * (m) The server never had a borrowed write's data: a reply claiming more
 * than its lendings wrote out is refused, and the writer gets EIO, not a
 * success for bytes nobody wrote.
 */
static int t_write_overclaim(void)
{
	static const struct { enum mf_write_mode mode; const char *what; } cases[] = {
		{ MF_WRITE_OVERCLAIM, "a page more than written" },
		{ MF_WRITE_NO_LEND, "everything, nothing lent" },
	};

	for (unsigned int i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct server srv = { 0 };
		int werr;

		CHECK(misbehave_and_write(cases[i].mode, &srv, &werr) == T_PASS, "%s",
		      cases[i].what);
		say("  reply claiming %s: reply errno %d (%s), writer: %s\n", cases[i].what,
		    srv.sh->bad_write_reply_errno, strerror(srv.sh->bad_write_reply_errno),
		    werr ? strerror(werr) : "success");
		CHECK(srv.sh->bad_write_replies == 1 && srv.sh->bad_write_reply_errno == EINVAL,
		      "%s: reply errno %d, want EINVAL", cases[i].what,
		      srv.sh->bad_write_reply_errno);
		CHECK(werr == EIO, "%s: the writer got %s, want EIO", cases[i].what,
		      werr ? strerror(werr) : "success");
	}
	return T_PASS;
}

static const struct {
	const char *name;
	int (*fn)(void);
	bool needs_zc;
} subtests[] = {
	{ "capability", t_capability, false },
	{ "park_gate", t_park_gate, false },
	{ "correctness", t_correctness, true },
	{ "auto_complete", t_auto_complete, true },
	{ "skip_success", t_skip_success, true },
	{ "fixed_files", t_fixed_files, true },
	{ "splice_receive", t_splice_receive, true },
	{ "direct_backing", t_direct_backing, true },
	{ "lies", t_lies, true },
	{ "probes", t_probes, true },
	{ "busy", t_busy, true },
	{ "privilege", t_privilege, true },
	{ "kill_loop", t_kill_loop, true },
	{ "abort_loop", t_abort_loop, true },
	{ "async_faults", t_async_faults, true },
	/* the v2 lending contract, one per finding of issue 9 */
	{ "lender_optin", t_lender_optin, true },		/* a */
	{ "exdev", t_exdev, true },				/* b */
	{ "abort_stopped_backing", t_abort_stopped_backing, true },	/* b */
	{ "lend_range", t_lend_range, true },			/* c */
	{ "out_of_order", t_out_of_order, true },		/* d */
	{ "subpage_segments", t_subpage_segments, true },	/* e */
	{ "lend_calls", t_lend_calls, true },
	{ "async_lend", t_async_lend, true },
	{ "overclaim", t_overclaim, true },			/* f */
	{ "cancel", t_cancel, true },				/* g */
	{ "interrupt", t_interrupt, true },			/* h */
	{ "resend", t_resend, true },				/* i */
	{ "write_op", t_write_op, true },			/* k */
	{ "write_correctness", t_write_correctness, true },
	{ "write_direction", t_write_direction, true },		/* l */
	{ "write_overclaim", t_write_overclaim, true },		/* m */
	{ "write_kill_loop", t_write_kill_loop, true },
	{ "write_abort_loop", t_write_abort_loop, true },
	{ "stress", t_stress, true },		/* everything at once, -d SECONDS */
};

/*
 * The watchdog: a subtest that has not finished in its time fails with a
 * picture of every task that sleeps in the guest (name, state, wait
 * channel, kernel stack) and of each FUSE connection, instead of hanging
 * until the VM's timeout with nothing to show.
 */
static const char *watched_subtest;
static volatile double watchdog_deadline;

static void dump_file(const char *path, const char *prefix)
{
	char line[256];
	FILE *f = fopen(path, "r");

	if (!f)
		return;
	while (fgets(line, sizeof(line), f))
		say("%s%s", prefix, line);
	fclose(f);
}

static void watchdog_dump(void)
{
	char path[600], comm[64], state[64];
	DIR *procs = opendir("/proc"), *tasks;
	struct dirent *p, *t;

	while (procs && (p = readdir(procs))) {
		if (p->d_name[0] < '0' || p->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/task", p->d_name);
		tasks = opendir(path);
		while (tasks && (t = readdir(tasks))) {
			FILE *f;

			if (t->d_name[0] == '.')
				continue;
			snprintf(path, sizeof(path), "/proc/%s/task/%s/status", p->d_name, t->d_name);
			f = fopen(path, "r");
			comm[0] = state[0] = 0;
			while (f && fgets(state, sizeof(state), f) && strncmp(state, "State:", 6))
				if (!strncmp(state, "Name:", 5))
					snprintf(comm, sizeof(comm), "%s", state + 6);
			if (f)
				fclose(f);
			/* kernel threads say little unless they are stuck */
			snprintf(path, sizeof(path), "/proc/%s/cmdline", p->d_name);
			f = fopen(path, "r");
			if (!strchr(state, 'D') && (!f || fgetc(f) == EOF)) {
				if (f)
					fclose(f);
				continue;
			}
			if (f)
				fclose(f);
			say("  task %s/%s %.*s %s", p->d_name, t->d_name,
			    (int)strcspn(comm, "\n"), comm, state[0] ? state + 7 : "?\n");
			snprintf(path, sizeof(path), "/proc/%s/task/%s/stack", p->d_name, t->d_name);
			dump_file(path, "      ");
		}
		if (tasks)
			closedir(tasks);
	}
	if (procs)
		closedir(procs);
	procs = opendir("/sys/fs/fuse/connections");
	while (procs && (p = readdir(procs))) {
		if (p->d_name[0] == '.')
			continue;
		say("  fuse connection %s:\n", p->d_name);
		snprintf(path, sizeof(path), "/sys/fs/fuse/connections/%s/waiting", p->d_name);
		dump_file(path, "    waiting ");
		snprintf(path, sizeof(path), "/sys/fs/fuse/connections/%s/zerocopy_stats", p->d_name);
		dump_file(path, "    ");
	}
	if (procs)
		closedir(procs);
}

static void *watchdog_main(void *arg)
{
	(void)arg;
	for (;;) {
		sleep_ms(1000);
		if (watchdog_deadline && now() > watchdog_deadline) {
			say("  FAIL: WATCHDOG: %s still running after its time; sleeping tasks:\n",
			    watched_subtest);
			watchdog_dump();
			say("%d passed, 1 failed (hung), 0 skipped\n", 0);
			_exit(T_FAIL);
		}
	}
	return NULL;
}

static void cleanup(void)
{
	char cmd[600];

	const char *mounts[] = { mnt, mnt2, wmnt, slow_mnt, resend_mnt, ovl_mnt };

	for (size_t i = 0; i < sizeof(mounts) / sizeof(mounts[0]); i++)
		if (!is_leaked(mounts[i]))
			umount2(mounts[i], MNT_DETACH);
	if (loop_fd >= 0)
		close(loop_fd);
	if (nr_leaked) {
		fprintf(stderr, "zc_kernel_test: left %d leaked mount(s) in %s\n",
			nr_leaked, workdir);
		return;
	}
	snprintf(cmd, sizeof(cmd), "rm -rf %s", workdir);
	if (system(cmd) != 0)
		fprintf(stderr, "zc_kernel_test: could not remove %s\n", workdir);
}

static int setup(void)
{
	if (!mkdtemp(workdir))
		return -errno;
	snprintf(backing, sizeof(backing), "%s/backing", workdir);
	snprintf(mnt, sizeof(mnt), "%s/mnt", workdir);
	snprintf(mnt2, sizeof(mnt2), "%s/mnt2", workdir);
	snprintf(slow_mnt, sizeof(slow_mnt), "%s/slow", workdir);
	snprintf(slow_backing, sizeof(slow_backing), "%s/file", slow_mnt);
	snprintf(resend_mnt, sizeof(resend_mnt), "%s/resend", workdir);
	snprintf(io_path, sizeof(io_path), "%s/io", workdir);
	snprintf(loop_backing, sizeof(loop_backing), "%s/loop-backing", workdir);
	snprintf(wbacking, sizeof(wbacking), "%s/wbacking", workdir);
	snprintf(wmnt, sizeof(wmnt), "%s/wmnt", workdir);
	snprintf(ovl_lower[0], sizeof(ovl_lower[0]), "%s/ovl-lower0", workdir);
	snprintf(ovl_lower[1], sizeof(ovl_lower[1]), "%s/ovl-lower1", workdir);
	snprintf(ovl_mnt, sizeof(ovl_mnt), "%s/ovl", workdir);
	snprintf(ovl_file, sizeof(ovl_file), "%s/file", ovl_mnt);
	if (mkdir(mnt, 0755) || mkdir(mnt2, 0755) || mkdir(wmnt, 0755) || mkdir(slow_mnt, 0755) ||
	    mkdir(resend_mnt, 0755) || mkdir(ovl_lower[0], 0755) ||
	    mkdir(ovl_lower[1], 0755) || mkdir(ovl_mnt, 0755))
		return -errno;
	return make_backing(backing);
}

int main(int argc, char **argv)
{
	int opt, i, j, status = T_PASS, ran = 0, passed = 0, failed = 0, skipped = 0;
	bool all = false;

	while ((opt = getopt(argc, argv, "avr:d:")) != -1) {
		if (opt == 'a')
			auto_complete = true;
		else if (opt == 'v')
			verbose = 1;
		else if (opt == 'r')
			rounds = atoi(optarg);
		else if (opt == 'd')
			stress_seconds = atoi(optarg);
		else
			goto usage;
	}
	if (optind >= argc)
		goto usage;
	if (geteuid() != 0) {
		fprintf(stderr, "zc_kernel_test: needs root\n");
		return zc_required() ? T_FAIL : T_SKIP;
	}
	if (access("/dev/fuse", R_OK | W_OK)) {
		fprintf(stderr, "zc_kernel_test: no /dev/fuse\n");
		return zc_required() ? T_FAIL : T_SKIP;
	}
	signal(SIGPIPE, SIG_IGN);
	if (setup()) {
		perror("zc_kernel_test: setup");
		return T_FAIL;
	}
	atexit(cleanup);
	{
		pthread_t wd;

		if (pthread_create(&wd, NULL, watchdog_main, NULL) == 0)
			pthread_detach(wd);
	}
	all = !strcmp(argv[optind], "all");

	for (i = 0; i < (int)(sizeof(subtests) / sizeof(subtests[0])); i++) {
		bool wanted = all;
		int ret;

		for (j = optind; j < argc && !wanted; j++)
			wanted = !strcmp(argv[j], subtests[i].name);
		if (!wanted)
			continue;
		ran++;
		say("== %s\n", subtests[i].name);
		if (subtests[i].needs_zc && !zc_available()) {
			if (zc_required()) {
				say("  FAIL: the kernel does not offer FUSE zero copy\n");
				ret = T_FAIL;
			} else {
				say("  SKIP: the kernel does not offer FUSE zero copy\n");
				ret = T_SKIP;
			}
		} else {
			unsigned long long forbidden = auto_forbidden;
			unsigned long long unreleased = park_release_failures;
			double t = now();

			/* generous: the loops run -r rounds, the stress -d seconds */
			watched_subtest = subtests[i].name;
			watchdog_deadline = t + (getenv("FUSEZC_WATCHDOG_S") ?
						 atof(getenv("FUSEZC_WATCHDOG_S")) :
						 600 + 3.0 * rounds + stress_seconds);
			ret = subtests[i].fn();
			watchdog_deadline = 0;
			if ((auto_forbidden != forbidden ||
			     park_release_failures != unreleased) && ret == T_PASS)
				ret = T_FAIL;
			say("  %s (%.1f s)\n", ret == T_PASS ? "ok" : "FAILED", now() - t);
		}
		if (ret == T_PASS)
			passed++;
		else if (ret == T_SKIP)
			skipped++;
		else
			failed++;
	}
	if (!ran)
		goto usage;
	say("zc_kernel_test: %llu bytes verified\n", (unsigned long long)bytes_verified);
	say("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
	if (failed)
		status = T_FAIL;
	else if (!passed)
		status = T_SKIP;
	return status;
usage:
	fprintf(stderr, "usage: zc_kernel_test [-a] [-v] [-r ROUNDS] [-d STRESS_SECONDS] all|SUBTEST...\n"
		"  -a  every server lets the kernel answer its reads (IORING_SPLICE_BUF_COMPLETE)\nsubtests:");
	for (i = 0; i < (int)(sizeof(subtests) / sizeof(subtests[0])); i++)
		fprintf(stderr, " %s", subtests[i].name);
	fprintf(stderr, "\n");
	return 2;
}
