// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * The shared harness of the kernel series' test programs (zc_test.h says
 * what it offers; README.md which program holds which subtests).
 * Needs root (mounts, drop_caches, fusectl).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <liburing.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "zc_test.h"

int verbose;
int rounds = 100;
int stress_seconds = 60;
/* -a: every server lends with IORING_SPLICE_BUF_COMPLETE */
bool auto_complete;
/* reads the kernel answered although the contract left them to the server */
static unsigned long long auto_forbidden;
/* parks whose gate did not open on release: the run fails, never hangs */
static unsigned long long park_release_failures;
char workdir[] = "/tmp/zc-kernel-test-XXXXXX";
char backing[128], mnt[128], mnt2[128], slow_backing[160], slow_mnt[128];
char resend_mnt[128], io_path[128], loop_node[128];
static char loop_backing[128];
char wbacking[128];	/* the write subtests' own backing file */
char wmnt[128];		/* stress: the mount of the writes */
char ovl_lower[2][128], ovl_mnt[128], ovl_file[160];
static int loop_fd = -1;
/*
 * Mounts whose connection still counts waiting requests after the test: a
 * kernel bug.  Unmounting them would block the unmounting task for good
 * (fuse_wait_aborted()), so they stay mounted until power-off.
 */
static const char *leaked[8];
static int nr_leaked;
unsigned char *ref;	/* the backing file's bytes */
uint64_t bytes_verified;
static const char *prog = "zc_kernel_test";	/* argv[0]'s base name */

void say(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	fflush(stdout);
}

bool zc_required(void)
{
	const char *r = getenv("FUSEZC_REQUIRE_ZC"), *ci = getenv("CI");

	return (r && !strcmp(r, "1")) || (ci && !strcmp(ci, "true"));
}

void sleep_ms(unsigned int ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

void drop_caches(void)
{
	int fd = open("/proc/sys/vm/drop_caches", O_WRONLY);

	if (fd >= 0) {
		if (write(fd, "3", 1) < 0)
			perror("drop_caches");
		close(fd);
	}
}

int write_file(const char *path, const char *text)
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

/* A fresh backing file for the write subtests; @model gets its bytes. */
int make_write_backing(unsigned char *model, off_t *size)
{
	int fd = open(wbacking, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);

	if (fd < 0)
		return -errno;
	if (model) {
		memset(model, 0, WMODEL_SIZE);
		memcpy(model, ref, WFILE_SIZE);
	}
	if (pwrite(fd, ref, WFILE_SIZE, 0) != WFILE_SIZE) {
		close(fd);
		return -EIO;
	}
	close(fd);
	if (size)
		*size = WFILE_SIZE;
	return 0;
}

void fill_pattern(unsigned char *buf, size_t len, unsigned int seed)
{
	uint64_t x = 0x2545f4914f6cdd1dull * (seed + 1);

	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		buf[i] = (unsigned char)x;
	}
}

int conn_dir(const char *mountpoint, char *dir, size_t len)
{
	struct stat st;

	if (stat(mountpoint, &st))
		return -errno;
	snprintf(dir, len, "/sys/fs/fuse/connections/%u", minor(st.st_dev));
	return 0;
}

int read_stats_dir(const char *dir, struct zc_stats *s)
{
	char path[300], name[64];
	long long v;
	FILE *f;

	memset(s, 0, sizeof(*s));
	s->copy_write_small = -1;
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
		else if (!strcmp(name, "copy_write_small"))
			s->copy_write_small = v;
	}
	fclose(f);
	return 0;
}

int read_stats(const char *mountpoint, struct zc_stats *s)
{
	char dir[200];
	int ret = conn_dir(mountpoint, dir, sizeof(dir));

	return ret ? ret : read_stats_dir(dir, s);
}

/* A fusectl file of the connection of @mountpoint (abort, waiting). */
static int conn_file(const char *mountpoint, const char *name, char *out, size_t len)
{
	char dir[200];
	int ret = conn_dir(mountpoint, dir, sizeof(dir));

	if (!ret)
		snprintf(out, len, "%s/%s", dir, name);
	return ret;
}

int abort_conn(const char *mountpoint)
{
	char f[300];
	int ret = conn_file(mountpoint, "abort", f, sizeof(f));

	return ret ? ret : write_file(f, "1");
}

/* By fusectl directory: stat() of a mount whose server is stopped blocks. */
int abort_conn_dir(const char *dir)
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
long wait_no_waiting(const char *dir, unsigned int seconds)
{
	char f[300];
	double t0 = now();
	long v;

	snprintf(f, sizeof(f), "%s/waiting", dir);
	while ((v = read_long(f)) > 0 && now() - t0 < seconds)
		sleep_ms(20);
	return v;
}

void mark_leaked(const char *mountpoint)
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
const char *park_loop(void)
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

int server_start(struct server *srv, const char *mountpoint,
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
	srv->cfg.accept_zc = !srv->cfg.decline_zc;
	if (auto_complete)
		srv->cfg.auto_complete = true;
	srv->mountpoint = mountpoint;
	srv->pid = mf_start(&srv->cfg, srv->sh);
	return srv->pid < 0 ? (int)srv->pid : 0;
}

/* Unmount and reap the server; returns its exit status or -1. */
int server_stop(struct server *srv)
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
 * Stop @srv, mounted at @mountpoint (connection @dir), once no request of it
 * waits; one still waiting after 20 s fails the subtest: the connection is
 * aborted, the server killed and the mount left, marked leaked.
 */
int server_stop_when_idle(struct server *srv, const char *mountpoint, const char *dir)
{
	long waiting = wait_no_waiting(dir, 20);

	if (waiting == 0) {
		server_stop(srv);
		return T_PASS;
	}
	abort_conn(mountpoint);
	kill(srv->pid, SIGKILL);
	waitpid(srv->pid, NULL, 0);
	mark_leaked(mountpoint);
	say("  %ld requests still waiting: %s left mounted\n", waiting, mountpoint);
	return T_FAIL;
}

/*
 * Wait (bounded) until @srv has answered every request its mount sent:
 * a reader can have its bytes while readahead it started is still in
 * flight, and unmounting then ends that readahead under the server, whose
 * late replies and lendings fail (ENOENT).  The server's counters are
 * checked after server_stop(), so stop only once it is idle.  Returns
 * the requests still waiting after 20 s.
 */
long server_quiesce(struct server *srv)
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
int verify_range(int fd, char *buf, off_t off, size_t len, const char *what)
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
int fresh_read(const char *path, char *buf, off_t off, size_t len,
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

void *reader_main(void *p)
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

int file_path(char *out, size_t len, const char *mountpoint)
{
	return snprintf(out, len, "%s/file", mountpoint);
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

int check_all_zero_copy(const char *mountpoint, const char *what)
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
 * Serve a 64 KiB read with a server that misbehaves in @mode, check the
 * reader still gets the right bytes, and return what the server recorded
 * about the kernel's answer to the misbehaviour (@field of its shared state).
 */
int misbehave_and_read_cfg(const struct mf_config *cfg, enum mf_read_mode mode,
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

int misbehave_and_read(enum mf_read_mode mode, const char *what,
		       size_t field, int expected)
{
	struct mf_config cfg = { 0 };

	return misbehave_and_read_cfg(&cfg, mode, what, field, expected);
}

/* A second FUSE mount (slow_mnt, file slow_backing) serving the backing file by copy. */
int start_inner_mount(struct server *inner)
{
	inner->cfg.threads = 4;
	return server_start(inner, slow_mnt, backing, MF_READ_COPY);
}

/* [0, @len) of @path read O_DIRECT into @out; 0 or -errno. */
int read_direct(const char *path, unsigned char *out, size_t len)
{
	unsigned char *b;
	ssize_t n;
	int fd, ret = 0;

	if (posix_memalign((void **)&b, 4096, len))
		return -ENOMEM;
	fd = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);
	n = fd < 0 ? -1 : pread(fd, b, len, 0);
	if (n < 0)
		ret = -errno;
	else if ((size_t)n != len)
		ret = -EIO;
	else
		memcpy(out, b, len);
	if (fd >= 0)
		close(fd);
	free(b);
	return ret;
}

/* ------------------------------------- ext4 on a loop device, fsfreeze */

/* Attach a loop device (autoclear) over @path; a read-only fd of it, or -errno. */
int loop_attach(const char *path, char *node, size_t len)
{
	struct loop_config lc = { .info.lo_flags = LO_FLAGS_AUTOCLEAR };
	int ctl, nr, bfd, fd, err;

	bfd = open(path, O_RDWR | O_CLOEXEC);
	if (bfd < 0)
		return -errno;
	ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
	nr = ctl < 0 ? -1 : ioctl(ctl, LOOP_CTL_GET_FREE);
	err = errno;
	if (ctl >= 0)
		close(ctl);
	if (nr < 0) {
		close(bfd);
		return -err;
	}
	snprintf(node, len, "/dev/loop%d", nr);
	if (!WAIT_UNTIL(access(node, F_OK) == 0, 2) &&
	    mknod(node, S_IFBLK | 0600, makedev(7, nr)) && errno != EEXIST) {
		err = errno;
		close(bfd);
		return -err;
	}
	fd = open(node, O_RDWR | O_CLOEXEC);
	lc.fd = bfd;
	if (fd < 0 || ioctl(fd, LOOP_CONFIGURE, &lc)) {
		err = errno;
		if (fd >= 0)
			close(fd);
		close(bfd);
		return -err;
	}
	close(bfd);
	/*
	 * Keep a read-only fd (closing the last one detaches the device):
	 * a file system is not mounted on a device open for writing
	 * (CONFIG_BLK_DEV_WRITE_MOUNTED=n: EBUSY).
	 */
	bfd = open(node, O_RDONLY | O_CLOEXEC);
	err = errno;
	close(fd);
	return bfd >= 0 ? bfd : -err;
}

static int run_quiet(const char *cmd)
{
	int st = system(cmd);

	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/*
 * ext4 on a loop device over @stallable ? a file of a copying FUSE mount
 * (f->inner, SIGSTOP stalls it) : a tmpfs file; with a file "data" of
 * @data_size bytes written and synced (a lent write to it is an
 * overwrite), and "other".
 */
int freeze_fs_setup(struct freeze_fs *f, bool stallable, size_t data_size)
{
	char cmd[400], path[300], *buf;
	int fd, ret;

	memset(f, 0, sizeof(*f));
	f->loop_fd = -1;
	snprintf(f->image, sizeof(f->image), "%s/ext4.img", workdir);
	snprintf(f->dir, sizeof(f->dir), "%s/ext4", workdir);
	snprintf(f->data, sizeof(f->data), "%s/data", f->dir);
	snprintf(f->other, sizeof(f->other), "%s/other", f->dir);
	if (mkdir(f->dir, 0755) && errno != EEXIST)
		return -errno;
	fd = open(f->image, O_CREAT | O_TRUNC | O_RDWR | O_CLOEXEC, 0644);
	if (fd < 0 || ftruncate(fd, FREEZE_IMAGE_SIZE)) {
		say("  image: %s\n", strerror(errno));
		return -EIO;
	}
	close(fd);
	snprintf(cmd, sizeof(cmd), "mkfs.ext4 -q -F %s >/dev/null 2>&1", f->image);
	if (run_quiet(cmd)) {
		say("  mkfs.ext4 failed\n");
		return -EIO;
	}
	if (stallable) {
		f->inner.cfg.threads = 4;
		f->inner.cfg.writable = true;
		ret = server_start(&f->inner, slow_mnt, f->image, MF_READ_COPY);
		if (ret) {
			say("  inner server: %s\n", strerror(-ret));
			return ret;
		}
		file_path(path, sizeof(path), slow_mnt);
	} else {
		snprintf(path, sizeof(path), "%s", f->image);
	}
	f->loop_fd = loop_attach(path, f->node, sizeof(f->node));
	if (f->loop_fd < 0) {
		say("  loop device over %s: %s\n", path, strerror(-f->loop_fd));
		return f->loop_fd;
	}
	if (mount(f->node, f->dir, "ext4", 0, NULL)) {
		say("  mount ext4: %s\n", strerror(errno));
		return -errno;
	}
	f->mounted = true;
	buf = malloc(data_size);
	if (!buf)
		return -ENOMEM;
	memset(buf, 'o', data_size);
	fd = open(f->data, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);
	ret = fd < 0 || pwrite(fd, buf, data_size, 0) != (ssize_t)data_size || fsync(fd) ? -EIO : 0;
	/* an O_DIRECT write under IOCB_NOWAIT fails (-EAGAIN) over cached pages */
	if (!ret && posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED))
		ret = -EIO;
	if (fd >= 0)
		close(fd);
	free(buf);
	fd = open(f->other, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);
	if (fd < 0 || fsync(fd))
		ret = -EIO;
	if (fd >= 0)
		close(fd);
	sync();
	return ret;
}

void freeze_fs_teardown(struct freeze_fs *f)
{
	if (f->inner.pid > 0)
		kill(f->inner.pid, SIGCONT);
	if (f->mounted && umount2(f->dir, 0))
		umount2(f->dir, MNT_DETACH);
	f->mounted = false;
	if (f->loop_fd >= 0)
		close(f->loop_fd);
	f->loop_fd = -1;
	if (f->inner.pid > 0)
		server_stop(&f->inner);
	unlink(f->image);
}

/* A child process that freezes (FIFREEZE) or thaws @dir; exits 0 or errno. */
pid_t fsfreeze_start(const char *dir, bool freeze)
{
	pid_t pid = fork();

	if (pid == 0) {
		int fd = open(dir, O_RDONLY | O_CLOEXEC);

		if (fd < 0 || ioctl(fd, freeze ? FIFREEZE : FITHAW, 0))
			_exit(errno ? errno : 255);
		_exit(0);
	}
	return pid;
}

/* Reap @pid within @seconds: its exit status, -ETIME, or -errno. */
int reap_within(pid_t pid, unsigned int seconds)
{
	int status = 0;
	pid_t r = 0;

	if (pid <= 0)
		return -ECHILD;
	if (!WAIT_UNTIL((r = waitpid(pid, &status, WNOHANG)) != 0, seconds))
		return -ETIME;
	if (r < 0)
		return -errno;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/*
 * fsfreeze -f, then -u, of @dir: 0; -ETIME if the freeze did not finish
 * within FREEZE_LIMIT_S (the file system is then wedged: a task waits in
 * freeze_super() for good); another -errno or a positive errno else.
 */
int fsfreeze_round_trip(const char *dir)
{
	int ret = reap_within(fsfreeze_start(dir, true), FREEZE_LIMIT_S);

	if (ret)
		return ret;
	return reap_within(fsfreeze_start(dir, false), FREEZE_LIMIT_S);
}

/*
 * The kernel is wedged (tasks in D state for good): no cleanup can work,
 * so report and leave at once, as the watchdog does.
 */
void zc_wedged(const char *subtest)
{
	say("  FAIL %s: tasks are left in D state for good; exiting without cleanup\n",
	    subtest);
	say("0 passed, 1 failed (%s wedged the file system), 0 skipped\n", subtest);
	_exit(T_FAIL);
}

/* A server config whose loans can be parked (see park_loop()). */
int parking_server(struct server *srv, const char *what)
{
	srv->cfg.loop_path = park_loop();
	if (!srv->cfg.loop_path) {
		say("  FAIL %s: no loop device to park loans on\n", what);
		return T_FAIL;
	}
	return T_PASS;
}

/*
 * A fresh write backing file (wbacking) and a server config whose write
 * loans can be parked (MF_WRITE_PARKED), for a test that needs no model.
 */
int parked_write_server(struct server *srv, const char *what)
{
	int ret = make_write_backing(NULL, NULL);

	if (ret) {
		say("  FAIL %s: write backing: %s\n", what, strerror(-ret));
		return T_FAIL;
	}
	return parking_server(srv, what);
}

/* The server parked at least one loan (else the test proved nothing). */
int check_parked(struct mf_shared *sh, const char *what)
{
	CHECK(sh->parks > 0, "%s: no loan could be parked in io-wq (%llu failures, last %d)",
	      what, (unsigned long long)sh->park_failures, sh->park_error);
	CHECK(sh->parked_unlent == 0, "%s: %llu ops parked in io-wq held no loan", what,
	      (unsigned long long)sh->parked_unlent);
	return T_PASS;
}

/*
 * One READ_SPLICE_BUF from the test process itself: @len bytes of @io_fd at
 * 0 into what @lender lends at @lend_pos.  Returns cqe->res, or -ETIME when
 * no CQE came within @seconds (the ring is then left to *ringp, still
 * holding the op, for the caller to unblock and reap).
 */
int lend_once(struct io_uring *ring, int op, int io_fd, int lender,
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
int open_io_file(void)
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

int one_read_start(struct one_read *r)
{
	r->done = 0;
	return -pthread_create(&r->tid, NULL, one_read_main, r);
}

/* Join the read if it ends within @seconds; a read still blocked is left. */
bool one_read_wait(struct one_read *r, unsigned int seconds)
{
	if (!WAIT_UNTIL(r->done, seconds))
		return false;
	pthread_join(r->tid, NULL);
	return true;
}

/* The read returned all @want bytes, right. */
int check_read(const struct one_read *r, size_t want, const char *what)
{
	CHECK(r->n >= 0, "%s: read: %s", what, strerror(r->err));
	CHECK(r->right, "%s: wrong bytes", what);
	CHECK((size_t)r->n == want, "%s: read returned %zd, want %zu", what, r->n, want);
	return T_PASS;
}

/*
 * Start a server answering in @mode on mnt and read @rd through it in a
 * thread.  T_PASS: the read returned, the server is still up; T_FAIL: the
 * server did not start, or the read blocked for 60 s (the server is stopped).
 */
int serve_one_read(struct server *srv, enum mf_read_mode mode,
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

long zc_write_min_initial = -1;

int set_zc_write_min(long bytes)
{
	char text[32];

	snprintf(text, sizeof(text), "%ld", bytes);
	return write_file(ZC_WRITE_MIN_KNOB, text);
}

/* Remember fuse.zerocopy_write_min and lend every write (0) from now on. */
static void zc_write_min_setup(void)
{
	FILE *f = fopen(ZC_WRITE_MIN_KNOB, "r");
	int ret;

	if (!f)
		return;
	if (fscanf(f, "%ld", &zc_write_min_initial) != 1)
		zc_write_min_initial = -1;
	fclose(f);
	ret = zc_write_min_initial > 0 ? set_zc_write_min(0) : 0;
	if (ret)
		fprintf(stderr, "%s: %s: %s\n", prog, ZC_WRITE_MIN_KNOB, strerror(-ret));
}

static void cleanup(void)
{
	char cmd[600];

	if (zc_write_min_initial >= 0)
		set_zc_write_min(zc_write_min_initial);

	const char *mounts[] = { mnt, mnt2, wmnt, slow_mnt, resend_mnt, ovl_mnt };

	for (size_t i = 0; i < sizeof(mounts) / sizeof(mounts[0]); i++)
		if (!is_leaked(mounts[i]))
			umount2(mounts[i], MNT_DETACH);
	if (loop_fd >= 0)
		close(loop_fd);
	if (nr_leaked) {
		fprintf(stderr, "%s: left %d leaked mount(s) in %s\n",
			prog, nr_leaked, workdir);
		return;
	}
	snprintf(cmd, sizeof(cmd), "rm -rf %s", workdir);
	if (system(cmd) != 0)
		fprintf(stderr, "%s: could not remove %s\n", prog, workdir);
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

int zc_main(int argc, char **argv, const struct zc_subtest *subtests, size_t nr)
{
	int opt, i, j, status = T_PASS, ran = 0, passed = 0, failed = 0, skipped = 0;
	bool all = false;

	prog = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
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
	/* a name of another program's subtest must not be left out silently */
	for (j = optind; j < argc; j++) {
		for (i = 0; i < (int)nr && strcmp(argv[j], subtests[i].name); i++)
			;
		if (i == (int)nr && strcmp(argv[j], "all")) {
			fprintf(stderr, "%s: no subtest '%s'\n", prog, argv[j]);
			goto usage;
		}
	}
	if (geteuid() != 0) {
		fprintf(stderr, "%s: needs root\n", prog);
		return zc_required() ? T_FAIL : T_SKIP;
	}
	if (access("/dev/fuse", R_OK | W_OK)) {
		fprintf(stderr, "%s: no /dev/fuse\n", prog);
		return zc_required() ? T_FAIL : T_SKIP;
	}
	signal(SIGPIPE, SIG_IGN);
	if (setup()) {
		fprintf(stderr, "%s: setup: %s\n", prog, strerror(errno));
		return T_FAIL;
	}
	zc_write_min_setup();
	atexit(cleanup);
	{
		pthread_t wd;

		if (pthread_create(&wd, NULL, watchdog_main, NULL) == 0)
			pthread_detach(wd);
	}
	all = !strcmp(argv[optind], "all");

	for (i = 0; i < (int)nr; i++) {
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
	say("%s: %llu bytes verified\n", prog, (unsigned long long)bytes_verified);
	say("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
	if (failed)
		status = T_FAIL;
	else if (!passed)
		status = T_SKIP;
	return status;
usage:
	fprintf(stderr, "usage: %s [-a] [-v] [-r ROUNDS] [-d STRESS_SECONDS] all|SUBTEST...\n"
		"  -a  every server lets the kernel answer its reads (IORING_SPLICE_BUF_COMPLETE)\nsubtests:",
		prog);
	for (i = 0; i < (int)nr; i++)
		fprintf(stderr, " %s", subtests[i].name);
	fprintf(stderr, "\n");
	return 2;
}
