// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Tests of the fuse-zc kernel series: IORING_OP_READ_SPLICE_BUF on the
 * pages of in-flight FUSE reads, and every safety rule of the series.
 *
 *   zc_kernel_test [-v] [-r ROUNDS] SUBTEST...   (or "all")
 *
 * Exit status: 0 pass, 1 fail, 77 skip (the kernel does not offer zero
 * copy; a failure instead when FUSEZC_REQUIRE_ZC=1 or CI=true).
 * Needs root (mounts, drop_caches, fusectl).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "minifuse.h"

#define T_PASS 0
#define T_FAIL 1
#define T_SKIP 77

#define FILE_SIZE	((off_t)(8 << 20) + 1234)	/* not page aligned */
#define HOLE_START	(2u << 20)
#define HOLE_END	(3u << 20)

static int verbose;
static int rounds = 100;
static char workdir[] = "/tmp/zc-kernel-test-XXXXXX";
static char backing[128], mnt[128], mnt2[128], slow_backing[160], slow_mnt[128];
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

struct zc_stats {
	long long zc_read_bytes, copy_read_bytes, zc_refused, zc_lent_pages;
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

static int run_correctness(struct server *srv, const char *what)
{
	char path[300];
	int ret;

	ret = server_start(srv, mnt, backing, MF_READ_ZC);
	CHECK(!ret, "server: %s", strerror(-ret));
	file_path(path, sizeof(path), mnt);
	ret = check_buffered(path);
	if (ret == T_PASS)
		ret = check_direct(path);
	if (ret == T_PASS)
		ret = check_mmap(path);
	if (ret == T_PASS)
		ret = check_concurrent(path, 8, 40);
	if (ret == T_PASS)
		ret = check_all_zero_copy(mnt, what);
	if (ret == T_PASS)
		CHECK(srv->sh->fallbacks == 0, "%llu reads fell back (last error %d)",
		      (unsigned long long)srv->sh->fallbacks, srv->sh->last_lend_error);
	CHECK(server_stop(srv) == 0, "server did not exit cleanly");
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
	int ret;

	ret = server_start(&srv, mnt, backing, MF_READ_ZC);
	CHECK(!ret, "server: %s", strerror(-ret));
	file_path(path, sizeof(path), mnt);
	ret = check_buffered(path);
	if (ret == T_PASS)
		ret = check_direct(path);
	/* O_DIRECT on the backing file may refuse unaligned I/O: fallbacks ok */
	say("  O_DIRECT backing: %llu zero-copy replies, %llu fallbacks\n",
	    (unsigned long long)srv.sh->zc_replies, (unsigned long long)srv.sh->fallbacks);
	if (ret == T_PASS)
		CHECK(srv.sh->zc_replies > 0, "no zero-copy reply");
	CHECK(server_stop(&srv) == 0, "server did not exit cleanly");
	return ret;
}

/* A read through @mode must fail with EIO, and leave nothing stale behind. */
static int expect_read_eio(enum mf_read_mode mode, const char *what)
{
	struct server srv = { 0 };
	char path[300], *buf = malloc(1 << 20);
	ssize_t n;
	int fd, ret;

	ret = server_start(&srv, mnt, backing, mode);
	CHECK(!ret, "server: %s", strerror(-ret));
	file_path(path, sizeof(path), mnt);
	drop_caches();
	fd = open(path, O_RDONLY);
	CHECK(fd >= 0, "open: %s", strerror(errno));
	n = pread(fd, buf, 65536, 1 << 20);
	CHECK(n < 0 && errno == EIO, "%s: pread = %zd (%s), want EIO", what, n,
	      n < 0 ? strerror(errno) : "success");
	/* an honest server now: the pages must not have become uptodate */
	srv.sh->mode = MF_READ_ZC;
	ret = verify_range(fd, buf, 1 << 20, 65536, what);
	close(fd);
	CHECK(ret == T_PASS, "data after the failed read is wrong");
	CHECK(server_stop(&srv) == 0, "server did not exit cleanly");
	free(buf);
	say("  %s: EIO, nothing stale\n", what);
	return T_PASS;
}

/*
 * Serve a 64 KiB read with a server that misbehaves in @mode, check the
 * reader still gets the right bytes, and return what the server recorded
 * about the kernel's answer to the misbehaviour (@field of its shared state).
 */
static int misbehave_and_read(enum mf_read_mode mode, const char *what,
			      size_t field, int expected)
{
	struct server srv = { 0 };
	char path[300], *buf = malloc(65536);
	int ret, got;

	ret = server_start(&srv, mnt, backing, mode);
	CHECK(!ret, "server: %s", strerror(-ret));
	file_path(path, sizeof(path), mnt);
	ret = fresh_read(path, buf, 0, 65536, what);
	free(buf);
	got = *(volatile int *)((char *)srv.sh + field);
	server_stop(&srv);
	CHECK(ret == T_PASS, "%s: read failed", what);
	CHECK(got == expected, "%s: got %d, want %d", what, got, expected);
	say("  %s: %d, the reader got the right bytes\n", what, got);
	return T_PASS;
}

static int t_lies(void)
{
	if (expect_read_eio(MF_READ_LIE_MORE, "reply claims more than placed") ||
	    expect_read_eio(MF_READ_LIE_PARTIAL, "placed half, claims all") ||
	    expect_read_eio(MF_READ_LIE_FAILED_IO, "lent I/O failed, claims all"))
		return T_FAIL;
	if (misbehave_and_read(MF_READ_NO_LEND, "zero-copy reply never lent (errno)",
			       offsetof(struct mf_shared, reply_errno), EINVAL) ||
	    misbehave_and_read(MF_READ_SECOND_REPLY, "second reply (errno)",
			       offsetof(struct mf_shared, second_reply_errno), ENOENT) ||
	    misbehave_and_read(MF_READ_WRONG_DIR, "WRITE_SPLICE_BUF on read pages (res)",
			       offsetof(struct mf_shared, wrong_dir_res), -EOPNOTSUPP))
		return T_FAIL;
	return T_PASS;
}

static int t_probes(void)
{
	struct server srv = { .cfg = { .second_mountpoint = mnt2 } };
	char path[300], path2[300], *buf = malloc(1 << 20);
	struct stat st;
	int fd, i, ret, failed = 0;

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
	for (i = 0; i < srv.sh->nr_probes; i++) {
		struct mf_probe *p = &srv.sh->probes[i];
		bool ok = p->got == p->expected;

		say("  %-40s %-4s got %d want %d\n", p->name, ok ? "ok" : "FAIL",
		    p->got, p->expected);
		failed += !ok;
	}
	CHECK(srv.sh->nr_probes >= 15, "only %d probes ran", srv.sh->nr_probes);
	ret = check_all_zero_copy(mnt, "after probes");
	server_stop(&srv);
	free(buf);
	CHECK(!failed, "%d probes gave the wrong answer", failed);
	return ret;
}

static int start_slow_backing(struct server *slow, unsigned int ms)
{
	slow->cfg.slow_ms = ms;
	slow->cfg.threads = 4;
	return server_start(slow, slow_mnt, backing, MF_READ_SLOW_COPY);
}

static int t_busy(void)
{
	struct server slow = { 0 }, srv = { 0 };
	char path[300], *buf = malloc(1 << 20);
	int ret;

	ret = start_slow_backing(&slow, 200);
	CHECK(!ret, "slow server: %s", strerror(-ret));
	srv.cfg.slow_ms = 200;
	ret = server_start(&srv, mnt, slow_backing, MF_READ_BUSY_REPLY);
	CHECK(!ret, "server: %s", strerror(-ret));
	file_path(path, sizeof(path), mnt);
	ret = fresh_read(path, buf, 0, 65536, "reply while lent");
	CHECK(ret == T_PASS, "read failed");
	CHECK(srv.sh->reply_errno == EBUSY, "reply while lent: errno %d, want EBUSY",
	      srv.sh->reply_errno);
	say("  reply while the pages are lent: EBUSY\n");
	ret = check_all_zero_copy(mnt, "busy");
	server_stop(&srv);
	server_stop(&slow);
	free(buf);
	return ret;
}

static int t_privilege(void)
{
	const char *knob = "/sys/module/fuse/parameters/zerocopy_unprivileged";
	struct server srv = { .cfg = { .drop_privileges = true } };
	char path[300], *buf = malloc(1 << 20);
	struct zc_stats s;
	int ret;

	chmod(workdir, 0755);
	CHECK(!write_file(knob, "Y"), "%s: %s", knob, strerror(errno));
	ret = server_start(&srv, mnt, backing, MF_READ_ZC);
	CHECK(!ret, "server: %s", strerror(-ret));
	file_path(path, sizeof(path), mnt);
	ret = fresh_read(path, buf, 0, 1 << 20, "unprivileged, allowed");
	CHECK(ret == T_PASS, "read failed");
	CHECK(!read_stats(mnt, &s), "stats");
	CHECK(s.zc_read_bytes >= (1 << 20) && s.zc_refused == 0,
	      "unprivileged server allowed: zc_read_bytes %lld zc_refused %lld",
	      s.zc_read_bytes, s.zc_refused);
	server_stop(&srv);
	say("  unprivileged server, zerocopy_unprivileged=Y: %lld bytes zero-copy\n",
	    s.zc_read_bytes);

	CHECK(!write_file(knob, "N"), "%s: %s", knob, strerror(errno));
	ret = server_start(&srv, mnt, backing, MF_READ_ZC);
	CHECK(!ret, "server: %s", strerror(-ret));
	ret = fresh_read(path, buf, 0, 1 << 20, "unprivileged, refused");
	write_file(knob, "Y");
	CHECK(ret == T_PASS, "read failed");
	CHECK(!read_stats(mnt, &s), "stats");
	CHECK(s.zc_read_bytes == 0 && s.zc_refused > 0 && srv.sh->last_lend_error == -EPERM,
	      "unprivileged server refused: zc_read_bytes %lld zc_refused %lld error %d",
	      s.zc_read_bytes, s.zc_refused, srv.sh->last_lend_error);
	server_stop(&srv);
	say("  unprivileged server, zerocopy_unprivileged=N: EPERM, %lld refusals, copy fallback\n",
	    s.zc_refused);

	/* root is not affected by the knob */
	CHECK(!write_file(knob, "N"), "%s", knob);
	srv.cfg.drop_privileges = false;
	ret = server_start(&srv, mnt, backing, MF_READ_ZC);
	CHECK(!ret, "server: %s", strerror(-ret));
	ret = fresh_read(path, buf, 0, 1 << 20, "privileged");
	write_file(knob, "Y");
	CHECK(ret == T_PASS, "read failed");
	ret = check_all_zero_copy(mnt, "CAP_SYS_ADMIN server with the knob off");
	server_stop(&srv);
	free(buf);
	return ret;
}

/*
 * Kill the server, or abort the connection, while zero-copy reads are in
 * flight (the backing store is slow, so lent pages are out for a while).
 */
static int fault_loop(bool abort_conn)
{
	const char *what = abort_conn ? "abort" : "kill -9";
	struct server slow = { 0 }, srv = { .cfg = { .threads = 4 } };
	int r, in_flight = 0, ret;
	char path[300], dir[200];
	double t0 = now();

	ret = start_slow_backing(&slow, 30);
	CHECK(!ret, "slow server: %s", strerror(-ret));
	file_path(path, sizeof(path), mnt);

	for (r = 0; r < rounds; r++) {
		struct reader_arg args[4];
		pthread_t tids[4];
		volatile int stop = 0;
		struct zc_stats s;
		int i, status;

		ret = server_start(&srv, mnt, slow_backing, MF_READ_ZC);
		CHECK(!ret, "round %d: server: %s", r, strerror(-ret));
		CHECK(!conn_dir(mnt, dir, sizeof(dir)), "conn dir");
		for (i = 0; i < 4; i++) {
			args[i] = (struct reader_arg){ .path = path, .seed = r * 7 + i,
				.iterations = 1000, .direct = i & 1,
				.tolerate_errors = true, .stop = &stop };
			pthread_create(&tids[i], NULL, reader_main, &args[i]);
		}
		/* wait until a loan is out, then strike */
		for (i = 0; i < 200; i++) {
			if (!read_stats_dir(dir, &s) && s.zc_lent_pages > 0)
				break;
			sleep_ms(2);
		}
		in_flight += s.zc_lent_pages > 0;
		sleep_ms(rand() % 20);
		if (abort_conn) {
			char f[256];

			snprintf(f, sizeof(f), "%s/abort", dir);
			CHECK(!write_file(f, "1"), "round %d: abort: %s", r, strerror(errno));
		} else {
			kill(srv.pid, SIGKILL);
		}
		stop = 1;
		for (i = 0; i < 4; i++) {
			pthread_join(tids[i], NULL);
			CHECK(args[i].result == T_PASS, "round %d: a reader saw wrong bytes", r);
		}
		/* every loan comes back, and nothing stays lent */
		for (i = 0; i < 500; i++) {
			if (read_stats_dir(dir, &s) || s.zc_lent_pages == 0)
				break;
			sleep_ms(10);
		}
		CHECK(s.zc_lent_pages == 0, "round %d: %lld pages still lent", r, s.zc_lent_pages);
			if (abort_conn) {
			server_stop(&srv);
		} else {
			waitpid(srv.pid, &status, 0);
			srv.pid = -1;
			umount2(mnt, MNT_DETACH);
		}
		srv.pid = 0;
		if (verbose)
			say("  round %d done\n", r);
	}
	server_stop(&slow);
	say("  %s: %d rounds, %d with lent pages in flight at the strike, %.1f s, 0 pages left lent\n",
	    what, rounds, in_flight, now() - t0);
	CHECK(in_flight * 2 >= rounds, "only %d of %d rounds had lending in flight", in_flight, rounds);
	return T_PASS;
}

static int t_kill_loop(void) { return fault_loop(false); }
static int t_abort_loop(void) { return fault_loop(true); }

static const struct {
	const char *name;
	int (*fn)(void);
	bool needs_zc;
} subtests[] = {
	{ "capability", t_capability, false },
	{ "correctness", t_correctness, true },
	{ "fixed_files", t_fixed_files, true },
	{ "splice_receive", t_splice_receive, true },
	{ "direct_backing", t_direct_backing, true },
	{ "lies", t_lies, true },
	{ "probes", t_probes, true },
	{ "busy", t_busy, true },
	{ "privilege", t_privilege, true },
	{ "kill_loop", t_kill_loop, true },
	{ "abort_loop", t_abort_loop, true },
};

static void cleanup(void)
{
	char cmd[600];

	umount2(mnt, MNT_DETACH);
	umount2(mnt2, MNT_DETACH);
	umount2(slow_mnt, MNT_DETACH);
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
	if (mkdir(mnt, 0755) || mkdir(mnt2, 0755) || mkdir(slow_mnt, 0755))
		return -errno;
	return make_backing(backing);
}

int main(int argc, char **argv)
{
	int opt, i, j, status = T_PASS, ran = 0, passed = 0, failed = 0, skipped = 0;
	bool all = false;

	while ((opt = getopt(argc, argv, "vr:")) != -1) {
		if (opt == 'v')
			verbose = 1;
		else if (opt == 'r')
			rounds = atoi(optarg);
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
			double t = now();

			ret = subtests[i].fn();
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
	fprintf(stderr, "usage: zc_kernel_test [-v] [-r ROUNDS] all|SUBTEST...\nsubtests:");
	for (i = 0; i < (int)(sizeof(subtests) / sizeof(subtests[0])); i++)
		fprintf(stderr, " %s", subtests[i].name);
	fprintf(stderr, "\n");
	return 2;
}
