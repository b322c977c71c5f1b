// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * zc_kernel_nowait: tmpfs under IOCB_NOWAIT (issue 26, "Cached data read
 * inline", patches 34-36).  shmem_file_read_iter() honours IOCB_NOWAIT and
 * tmpfs files are opened with FMODE_NOWAIT, so io_uring reads cached tmpfs
 * data inside io_uring_submit() instead of handing every read to an io-wq
 * worker; a read that would have to wait (a swapped out or locked folio)
 * is still answered, from io-wq; a write is never done under IOCB_NOWAIT.
 * And /dev/fuse read through io_uring (issue 26, "One system call per
 * request", patch 43): inline when a request is pending, by poll when
 * not, never sleeping inside io_uring_submit().
 */
#include <fcntl.h>
#include <linux/fuse.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/swap.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "zc_test.h"

#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif
#ifndef RWF_NOWAIT
#define RWF_NOWAIT 0x00000008
#endif

#define MIB (1u << 20)

static char tdir[160];		/* our own tmpfs */

/* Run a subtest's @body with a tmpfs of its own mounted on tdir. */
static int on_own_tmpfs(int (*body)(void))
{
	int ret;

	snprintf(tdir, sizeof(tdir), "%s/nowait-tmpfs", workdir);
	CHECK(!mkdir(tdir, 0755) || errno == EEXIST, "mkdir %s: %s", tdir, strerror(errno));
	CHECK(!mount("tmpfs", tdir, "tmpfs", 0, "size=256m"), "mount tmpfs on %s: %s",
	      tdir, strerror(errno));
	ret = body();
	if (umount2(tdir, 0))
		umount2(tdir, MNT_DETACH);
	rmdir(tdir);
	return ret;
}

/* A file of our tmpfs holding @len bytes of @data (NULL: @len of a hole). */
static int tmpfs_file(char *path, size_t plen, const char *name,
		      const unsigned char *data, off_t len)
{
	int fd;

	snprintf(path, plen, "%s/%s", tdir, name);
	fd = open(path, O_CREAT | O_TRUNC | O_RDWR | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	if (ftruncate(fd, len) ||
	    (data && pwrite(fd, data, len, 0) != len)) {
		close(fd);
		return -EIO;
	}
	return fd;
}

/*
 * Does tmpfs take RWF_NOWAIT reads (FMODE_NOWAIT, patch 36)?  1 yes, 0 no
 * (EOPNOTSUPP, as on a kernel without it), or -errno.
 */
static int tmpfs_takes_nowait(int fd)
{
	char c;
	struct iovec iov = { &c, 1 };

	if (preadv2(fd, &iov, 1, 0, RWF_NOWAIT) >= 0)
		return 1;
	return errno == EOPNOTSUPP ? 0 : -errno;
}

static size_t want_len(off_t off, size_t len, off_t size)
{
	if (off >= size)
		return 0;
	return off + (off_t)len > size ? (size_t)(size - off) : len;
}

/* Say where @got first differs from @want. */
static int first_diff(const unsigned char *got, const unsigned char *want, size_t n)
{
	size_t i = 0;

	while (i < n && got[i] == want[i])
		i++;
	return (int)i;
}

static const struct { off_t off; size_t len; } ranges[] = {
	{ 0, 4096 }, { 4096, 8192 }, { 1, 100 }, { 4095, 2 }, { 100, 4096 },
	{ 12345, 54321 }, { 0, 131072 }, { 65536, MIB }, { 3 << 20, MIB },
	{ 777777, 300000 }, { HOLE_START - 100, 8192 }, { HOLE_START, 65536 },
	{ FILE_SIZE - 1000, 4096 }, { FILE_SIZE - 1, 1 }, { FILE_SIZE, 4096 },
	{ FILE_SIZE - 70000, MIB }, { 5 << 20, 4096 * 3 + 7 },
};
#define NR_RANGES (sizeof(ranges) / sizeof(ranges[0]))

/* ------------------------------------------------ (a) tmpfs_read_inline */

#define INLINE_BATCH	8
#define INLINE_READS	512

struct inline_arg {
	const char *path;
	int result;
	pid_t tid;
	unsigned long reads, in_submit;
	int workers_before, workers_after;
};

/*
 * Plain IORING_OP_READs of cached tmpfs data from a fresh thread (its own
 * io-wq) on a SUBMIT_ALL | SINGLE_ISSUER | DEFER_TASKRUN ring: task work
 * runs there only when the thread waits, so a CQE that is in the ring when
 * io_uring_submit() returns is one of a read done inside the submit.
 */
static int inline_reads(struct inline_arg *a)
{
	struct io_uring_params p = { .flags = IORING_SETUP_SUBMIT_ALL |
					      IORING_SETUP_SINGLE_ISSUER |
					      IORING_SETUP_DEFER_TASKRUN };
	unsigned char *bufs[INLINE_BATCH] = { 0 };
	struct { off_t off; size_t len; } io[INLINE_BATCH];
	unsigned int seed = 26;
	struct io_uring ring;
	int fd, i, ret;

	a->tid = (pid_t)syscall(SYS_gettid);
	ret = io_uring_queue_init_params(2 * INLINE_BATCH, &ring, &p);
	CHECK(!ret, "io_uring_queue_init_params: %s", strerror(-ret));
	fd = open(a->path, O_RDONLY | O_CLOEXEC);
	CHECK(fd >= 0, "open %s: %s", a->path, strerror(errno));
	for (i = 0; i < INLINE_BATCH; i++)
		CHECK((bufs[i] = malloc(MIB)), "malloc");
	a->workers_before = mf_iowq_workers(getpid(), a->tid);

	while (a->reads < INLINE_READS) {
		unsigned int ready;

		for (i = 0; i < INLINE_BATCH; i++) {
			struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
			unsigned long k = a->reads + i;

			if (k < NR_RANGES) {
				io[i].off = ranges[k].off;
				io[i].len = ranges[k].len;
			} else {
				io[i].off = rand_r(&seed) % (FILE_SIZE + 4096);
				io[i].len = 1 + rand_r(&seed) % MIB;
			}
			io_uring_prep_read(sqe, fd, bufs[i], io[i].len, io[i].off);
			sqe->user_data = i;
		}
		ret = io_uring_submit(&ring);
		CHECK(ret == INLINE_BATCH, "io_uring_submit: %d", ret);
		ready = io_uring_cq_ready(&ring);
		a->in_submit += ready;
		for (i = 0; i < INLINE_BATCH; i++) {
			struct io_uring_cqe *cqe;
			size_t want;
			int j;

			ret = io_uring_wait_cqe(&ring, &cqe);
			CHECK(!ret, "io_uring_wait_cqe: %s", strerror(-ret));
			j = (int)cqe->user_data;
			want = want_len(io[j].off, io[j].len, FILE_SIZE);
			CHECK(cqe->res == (int)want, "read %zu @ %lld: res %d, want %zu",
			      io[j].len, (long long)io[j].off, cqe->res, want);
			CHECK(!memcmp(bufs[j], ref + io[j].off, want),
			      "read %zu @ %lld: wrong byte at %lld", io[j].len,
			      (long long)io[j].off, (long long)io[j].off +
			      first_diff(bufs[j], ref + io[j].off, want));
			bytes_verified += want;
			io_uring_cqe_seen(&ring, cqe);
		}
		a->reads += INLINE_BATCH;
	}
	a->workers_after = mf_iowq_workers(getpid(), a->tid);
	for (i = 0; i < INLINE_BATCH; i++)
		free(bufs[i]);
	close(fd);
	io_uring_queue_exit(&ring);
	return T_PASS;
}

static void *inline_main(void *p)
{
	struct inline_arg *a = p;

	a->result = inline_reads(a);
	return NULL;
}

/* Zero-copy FUSE reads whose lendings read a tmpfs file. */
static int zc_reads_from_tmpfs(const char *tfile)
{
	struct server srv = { 0 };
	char path[300], *buf;
	int ret, fd, before, after, i;

	if (posix_memalign((void **)&buf, 4096, 2 * MIB))
		return T_FAIL;
	ret = server_start(&srv, mnt, tfile, MF_READ_ZC);
	if (ret) {
		free(buf);
		CHECK(0, "server: %s", strerror(-ret));
	}
	file_path(path, sizeof(path), mnt);
	before = mf_iowq_workers(srv.pid, 0);
	ret = T_PASS;
	for (i = 0; i < (int)NR_RANGES && ret == T_PASS; i++)
		ret = fresh_read(path, buf, ranges[i].off, ranges[i].len,
				 "zero copy from tmpfs, buffered");
	fd = open(path, O_RDONLY | O_DIRECT);
	if (fd < 0) {
		say("  open O_DIRECT %s: %s\n", path, strerror(errno));
		ret = T_FAIL;
	}
	for (off_t off = 0; ret == T_PASS && off < FILE_SIZE; off += MIB)
		ret = verify_range(fd, buf, off, MIB, "zero copy from tmpfs, O_DIRECT");
	if (fd >= 0)
		close(fd);
	server_quiesce(&srv);
	after = mf_iowq_workers(srv.pid, 0);
	if (ret == T_PASS)
		ret = check_all_zero_copy(mnt, "tmpfs backing");
	say("  server: %llu reads, %llu zero-copy replies, io-wq workers %d -> %d\n",
	    (unsigned long long)srv.sh->reads, (unsigned long long)srv.sh->zc_replies,
	    before, after);
	if (server_stop(&srv) && ret == T_PASS) {
		say("  the server failed\n");
		ret = T_FAIL;
	}
	free(buf);
	if (ret != T_PASS)
		return ret;
	CHECK(srv.sh->zc_replies > 0, "no read was answered zero copy");
	/* every lending read tmpfs inline: none was handed to io-wq */
	CHECK(after == 0, "the server has %d io-wq worker(s) after lending from tmpfs",
	      after);
	return T_PASS;
}

static int read_inline(void)
{
	struct inline_arg a = { 0 };
	char tfile[300];
	pthread_t tid;
	int fd, ret;

	fd = tmpfs_file(tfile, sizeof(tfile), "cached", NULL, FILE_SIZE);
	CHECK(fd >= 0, "tmpfs file: %s", strerror(-fd));
	/* ref's bytes, the hole left a hole */
	ret = pwrite(fd, ref, HOLE_START, 0) == HOLE_START &&
	      pwrite(fd, ref + HOLE_END, FILE_SIZE - HOLE_END, HOLE_END) ==
	      (ssize_t)(FILE_SIZE - HOLE_END);
	CHECK(ret, "writing %s", tfile);
	ret = tmpfs_takes_nowait(fd);
	close(fd);
	CHECK(ret >= 0, "preadv2(RWF_NOWAIT) of tmpfs: %s", strerror(-ret));
	CHECK(ret == 1, "tmpfs refuses RWF_NOWAIT (EOPNOTSUPP): no FMODE_NOWAIT (patch 36)");

	a.path = tfile;
	CHECK(!pthread_create(&tid, NULL, inline_main, &a), "pthread_create");
	pthread_join(tid, NULL);
	say("  %lu plain reads, %lu done inside io_uring_submit(), io-wq workers %d -> %d\n",
	    a.reads, a.in_submit, a.workers_before, a.workers_after);
	if (a.result != T_PASS)
		return a.result;
	CHECK(a.workers_before == 0 && a.workers_after == 0,
	      "io-wq workers of the reading thread: %d before, %d after",
	      a.workers_before, a.workers_after);
	CHECK(a.in_submit == a.reads, "%lu of %lu reads of cached tmpfs data were not done inline",
	      a.reads - a.in_submit, a.reads);

	return zc_reads_from_tmpfs(tfile);
}

static int t_tmpfs_read_inline(void)
{
	return on_own_tmpfs(read_inline);
}

/* ---------------------------------------------- (b) tmpfs_read_uncached */

/*
 * Read [@off, @off + @len) of @fd through @ring (with @rw_flags) in pieces
 * of at most 1 MiB and compare with @model (@size bytes): all of it, with
 * or without RWF_NOWAIT (nothing here waits for anything).
 */
static int ring_check(struct io_uring *ring, int fd, const unsigned char *model,
		      off_t size, off_t off, size_t len, int rw_flags,
		      const char *what)
{
	unsigned char *buf = malloc(MIB);
	int ret = T_PASS;

	CHECK(buf, "malloc");
	while (len && ret == T_PASS) {
		size_t n = len > MIB ? MIB : len, want = want_len(off, n, size);
		struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
		struct io_uring_cqe *cqe;
		int res;

		io_uring_prep_read(sqe, fd, buf, n, off);
		sqe->rw_flags = rw_flags;
		io_uring_submit(ring);
		res = io_uring_wait_cqe(ring, &cqe);
		if (res) {
			say("  %s: io_uring_wait_cqe: %s\n", what, strerror(-res));
			ret = T_FAIL;
			break;
		}
		res = cqe->res;
		io_uring_cqe_seen(ring, cqe);
		if (res != (int)want) {
			say("  %s: read %zu @ %lld%s: res %d, want %zu\n", what, n,
			    (long long)off, rw_flags ? " (RWF_NOWAIT)" : "", res, want);
			ret = T_FAIL;
		} else if (memcmp(buf, model + off, want)) {
			say("  %s: read %zu @ %lld: wrong byte at %lld\n", what, n,
			    (long long)off, (long long)off + first_diff(buf, model + off, want));
			ret = T_FAIL;
		}
		bytes_verified += want;
		off += n;
		len -= n;
	}
	free(buf);
	return ret;
}

/* Every range of ranges[] and the whole file, with and without RWF_NOWAIT. */
static int ring_check_all(struct io_uring *ring, int fd, const unsigned char *model,
			  off_t size, bool nowait, const char *what)
{
	int pass, ret = T_PASS;

	for (pass = 0; pass < (nowait ? 2 : 1) && ret == T_PASS; pass++) {
		int flags = pass ? RWF_NOWAIT : 0;

		for (size_t i = 0; i < NR_RANGES && ret == T_PASS; i++)
			if (ranges[i].off < size + 4096)
				ret = ring_check(ring, fd, model, size, ranges[i].off,
						 ranges[i].len, flags, what);
		if (ret == T_PASS)
			ret = ring_check(ring, fd, model, size, 0, size + 4096, flags, what);
	}
	return ret;
}

/* Holes, fallocated and punched ranges, a truncated and re-extended tail. */
static int sparse_reads(struct io_uring *ring, unsigned char *model, bool nowait)
{
	char path[300];
	int fd, ret;

	/* "sparse": data, holes, a fallocated range, a punched one */
	memset(model, 0, FILE_SIZE);
	fd = tmpfs_file(path, sizeof(path), "sparse", NULL, FILE_SIZE);
	CHECK(fd >= 0, "tmpfs file: %s", strerror(-fd));
	memcpy(model, ref, MIB);
	memcpy(model + (3 << 20) + 5, ref + (3 << 20) + 5, MIB + 95);
	memcpy(model + (6 << 20), ref + (6 << 20), MIB);
	memcpy(model + FILE_SIZE - 5000, ref + FILE_SIZE - 5000, 5000);
	ret = pwrite(fd, model, MIB, 0) == MIB &&
	      pwrite(fd, model + (3 << 20) + 5, MIB + 95, (3 << 20) + 5) == MIB + 95 &&
	      pwrite(fd, model + (6 << 20), MIB, 6 << 20) == MIB &&
	      pwrite(fd, model + FILE_SIZE - 5000, 5000, FILE_SIZE - 5000) == 5000;
	CHECK(ret, "writing %s: %s", path, strerror(errno));
	/* allocated, never written: !uptodate folios that read as zeroes */
	CHECK(!fallocate(fd, 0, 5 << 20, MIB), "fallocate: %s", strerror(errno));
	CHECK(!fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			 (6 << 20) + 40960 + 100, 200000), "punch: %s", strerror(errno));
	memset(model + (6 << 20) + 40960 + 100, 0, 200000);
	ret = ring_check_all(ring, fd, model, FILE_SIZE, nowait, "sparse");
	close(fd);
	if (ret != T_PASS)
		return ret;

	/* "truncated": 2 MiB written, cut to 1 MiB + 777, extended again */
	memset(model, 0, FILE_SIZE);
	memcpy(model, ref, MIB + 777);
	fd = tmpfs_file(path, sizeof(path), "truncated", ref, 2 * MIB);
	CHECK(fd >= 0, "tmpfs file: %s", strerror(-fd));
	CHECK(!ftruncate(fd, MIB + 777) && !ftruncate(fd, 2 * MIB), "ftruncate: %s",
	      strerror(errno));
	ret = ring_check_all(ring, fd, model, 2 * MIB, nowait, "truncated");
	close(fd);
	return ret;
}

/*
 * A swap device of our own: a loop device over a file of the scratch
 * directory.  Its node in @node and the loop fd (closing it detaches the
 * device), or -errno (no swap here: the swap-in part is skipped).
 */
static int swap_up(char *node, size_t len)
{
	char img[200], cmd[300];
	int fd, lfd;

	snprintf(img, sizeof(img), "%s/nowait-swap.img", workdir);
	fd = open(img, O_CREAT | O_TRUNC | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	if (fallocate(fd, 0, 0, 64 * MIB) && ftruncate(fd, 64 * MIB)) {
		close(fd);
		return -errno;
	}
	close(fd);
	lfd = loop_attach(img, node, len);
	unlink(img);
	if (lfd < 0)
		return lfd;
	snprintf(cmd, sizeof(cmd), "mkswap %s >/dev/null 2>&1", node);
	if (system(cmd) != 0) {
		close(lfd);
		return -ENOEXEC;
	}
	if (swapon(node, 0)) {
		int err = errno;

		close(lfd);
		return -err;
	}
	return lfd;
}

/*
 * The real case: a tmpfs file whose pages were swapped out (MADV_PAGEOUT).
 * RWF_NOWAIT must not swap them in (EAGAIN, or a short read of what is in
 * memory); an io_uring read must still get every byte (punted to io-wq).
 */
static int swapped_reads(struct io_uring *ring, bool nowait)
{
	const size_t size = 4 * MIB;
	char path[300], node[64];
	unsigned char *p, c[4096];
	struct iovec iov = { c, sizeof(c) };
	volatile unsigned int sum = 0;
	ssize_t n;
	int fd, lfd, ret = T_PASS;

	lfd = swap_up(node, sizeof(node));
	if (lfd < 0) {
		say("  no swap (%s): swapped out tmpfs pages not tried\n", strerror(-lfd));
		return T_PASS;
	}
	fd = tmpfs_file(path, sizeof(path), "swapped", ref, size);
	if (fd < 0) {
		say("  tmpfs file: %s\n", strerror(-fd));
		ret = T_FAIL;
		goto out;
	}
	p = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		say("  mmap: %s\n", strerror(errno));
		ret = T_FAIL;
		goto out_close;
	}
	/* MADV_PAGEOUT reclaims what is mapped: map every page first */
	for (size_t i = 0; i < size; i += 4096)
		sum += p[i];
	(void)sum;
	if (madvise(p, size, MADV_PAGEOUT))
		say("  madvise(MADV_PAGEOUT): %s\n", strerror(errno));
	munmap(p, size);
	n = preadv2(fd, &iov, 1, 0, RWF_NOWAIT);
	if (n < 0 && errno == EAGAIN)
		say("  RWF_NOWAIT read of swapped out tmpfs data: EAGAIN\n");
	else if (n < 0 && !nowait && errno == EOPNOTSUPP)
		say("  RWF_NOWAIT read: EOPNOTSUPP (tmpfs without FMODE_NOWAIT)\n");
	else if (n < 0) {
		say("  RWF_NOWAIT read of swapped out tmpfs data: %s\n", strerror(errno));
		ret = T_FAIL;
	} else if (memcmp(c, ref, n)) {
		say("  RWF_NOWAIT read of swapped out tmpfs data: wrong bytes\n");
		ret = T_FAIL;
	} else {
		say("  RWF_NOWAIT read got %zd bytes: the first page was not swapped out\n", n);
	}
	/* io_uring: whatever was swapped out comes back, from io-wq */
	if (ret == T_PASS)
		ret = ring_check(ring, fd, ref, size, 0, size, 0, "swapped out");
out_close:
	close(fd);
out:
	if (swapoff(node)) {
		say("  swapoff %s: %s\n", node, strerror(errno));
		ret = T_FAIL;
	}
	close(lfd);
	return ret;
}

static int read_uncached(void)
{
	struct io_uring_params p = { .flags = IORING_SETUP_SUBMIT_ALL };
	unsigned char *model = malloc(FILE_SIZE + 4096);
	struct io_uring ring;
	char path[300];
	int fd, ret, nowait;

	CHECK(model, "malloc");
	fd = tmpfs_file(path, sizeof(path), "probe", ref, 4096);
	CHECK(fd >= 0, "tmpfs file: %s", strerror(-fd));
	nowait = tmpfs_takes_nowait(fd);
	close(fd);
	CHECK(nowait >= 0, "preadv2(RWF_NOWAIT) of tmpfs: %s", strerror(-nowait));
	if (!nowait)
		say("  tmpfs refuses RWF_NOWAIT: a kernel without patch 36, RWF_NOWAIT reads left out\n");
	ret = io_uring_queue_init_params(8, &ring, &p);
	CHECK(!ret, "io_uring_queue_init_params: %s", strerror(-ret));
	ret = sparse_reads(&ring, model, nowait);
	if (ret == T_PASS)
		ret = swapped_reads(&ring, nowait);
	io_uring_queue_exit(&ring);
	free(model);
	return ret;
}

static int t_tmpfs_read_uncached(void)
{
	return on_own_tmpfs(read_uncached);
}

/* ------------------------------------------------ (c) tmpfs_write_nowait */

/*
 * Writers and readers of one tmpfs file, all through io_uring, buffered.
 * The file is WBLOCKS blocks of 4 KiB; a write fills a block with its
 * generation (1..WGEN_MAX, every byte).  A read of a block racing with
 * writes of it may see some bytes of one generation and some of another,
 * but every byte must be of a generation no older than the newest write
 * of the block completed before the read was submitted, and no newer than
 * the newest submitted by the time the read completed.
 */
#define WBLOCKS		1024
#define WGEN_MAX	250
#define WBATCH		16

static volatile int wgen_submitted[WBLOCKS], wgen_completed[WBLOCKS];
static volatile int writers_done;

struct rw_arg {
	const char *path;
	unsigned int seed;
	int result;
	unsigned long ops, in_submit;
};

static int writer(struct rw_arg *a)
{
	static unsigned char blocks[WBATCH][4096];
	struct io_uring ring;
	int fd, ret, b[WBATCH], g[WBATCH], i, rounds_left = 600;

	ret = io_uring_queue_init(2 * WBATCH, &ring, 0);
	CHECK(!ret, "writer: io_uring_queue_init: %s", strerror(-ret));
	fd = open(a->path, O_WRONLY | O_CLOEXEC);
	CHECK(fd >= 0, "writer: open: %s", strerror(errno));
	while (rounds_left--) {
		/* WBATCH distinct blocks: no two writes of a block in flight */
		for (i = 0; i < WBATCH; i++) {
			struct io_uring_sqe *sqe;
			int j;

			do {
				b[i] = rand_r(&a->seed) % WBLOCKS;
				for (j = 0; j < i && b[j] != b[i]; j++)
					;
			} while (j < i);
			g[i] = wgen_submitted[b[i]] + 1;
			if (g[i] > WGEN_MAX) {
				g[i] = 0;	/* this block is done */
				continue;
			}
			memset(blocks[i], g[i], 4096);
			wgen_submitted[b[i]] = g[i];
			__sync_synchronize();
			sqe = io_uring_get_sqe(&ring);
			io_uring_prep_write(sqe, fd, blocks[i], 4096, (off_t)b[i] * 4096);
			sqe->user_data = i;
		}
		ret = io_uring_submit(&ring);
		CHECK(ret >= 0, "writer: io_uring_submit: %s", strerror(-ret));
		a->in_submit += io_uring_cq_ready(&ring);
		while (ret-- > 0) {
			struct io_uring_cqe *cqe;
			int k;

			CHECK(!io_uring_wait_cqe(&ring, &cqe), "writer: wait_cqe");
			k = (int)cqe->user_data;
			CHECK(cqe->res == 4096, "writer: write of block %d: res %d",
			      b[k], cqe->res);
			wgen_completed[b[k]] = g[k];
			__sync_synchronize();
			io_uring_cqe_seen(&ring, cqe);
			a->ops++;
		}
	}
	close(fd);
	io_uring_queue_exit(&ring);
	return T_PASS;
}

static int reader(struct rw_arg *a)
{
	struct io_uring_params p = { .flags = IORING_SETUP_SUBMIT_ALL |
					      IORING_SETUP_SINGLE_ISSUER |
					      IORING_SETUP_DEFER_TASKRUN };
	unsigned char (*buf)[4 * 4096] = malloc(WBATCH * 4 * 4096);
	int lo[WBATCH][4], b[WBATCH], nb[WBATCH], i, fd, ret;
	struct io_uring ring;

	CHECK(buf, "reader: malloc");
	ret = io_uring_queue_init_params(2 * WBATCH, &ring, &p);
	CHECK(!ret, "reader: io_uring_queue_init_params: %s", strerror(-ret));
	fd = open(a->path, O_RDONLY | O_CLOEXEC);
	CHECK(fd >= 0, "reader: open: %s", strerror(errno));
	while (!writers_done) {
		for (i = 0; i < WBATCH; i++) {
			struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);

			nb[i] = 1 + rand_r(&a->seed) % 4;
			b[i] = rand_r(&a->seed) % (WBLOCKS - nb[i] + 1);
			for (int k = 0; k < nb[i]; k++)
				lo[i][k] = wgen_completed[b[i] + k];
			__sync_synchronize();
			io_uring_prep_read(sqe, fd, buf[i], nb[i] * 4096,
					   (off_t)b[i] * 4096);
			sqe->user_data = i;
		}
		ret = io_uring_submit(&ring);
		CHECK(ret == WBATCH, "reader: io_uring_submit: %d", ret);
		a->in_submit += io_uring_cq_ready(&ring);
		for (i = 0; i < WBATCH; i++) {
			struct io_uring_cqe *cqe;
			int j;

			CHECK(!io_uring_wait_cqe(&ring, &cqe), "reader: wait_cqe");
			j = (int)cqe->user_data;
			CHECK(cqe->res == nb[j] * 4096, "reader: read of %d blocks at %d: res %d",
			      nb[j], b[j], cqe->res);
			__sync_synchronize();
			for (int k = 0; k < nb[j]; k++) {
				int hi = wgen_submitted[b[j] + k];

				for (int x = 0; x < 4096; x++) {
					int v = buf[j][k * 4096 + x];

					CHECK(v >= lo[j][k] && v <= hi,
					      "reader: block %d byte %d is generation %d, not in [%d, %d]",
					      b[j] + k, x, v, lo[j][k], hi);
				}
			}
			io_uring_cqe_seen(&ring, cqe);
			a->ops++;
		}
	}
	close(fd);
	io_uring_queue_exit(&ring);
	free(buf);
	return T_PASS;
}

static void *writer_main(void *p)
{
	struct rw_arg *a = p;

	a->result = writer(a);
	return NULL;
}

static void *reader_main_rw(void *p)
{
	struct rw_arg *a = p;

	a->result = reader(a);
	return NULL;
}

/* What a NOWAIT write may do to tmpfs: succeed, or refuse; never sleep. */
static int nowait_writes(const char *path, const unsigned char *model)
{
	unsigned char blk[4096], back[4096];
	struct iovec iov = { blk, sizeof(blk) };
	struct io_uring ring;
	struct io_uring_sqe *sqe;
	struct io_uring_cqe *cqe;
	ssize_t n;
	int fd, ret, res;

	fd = open(path, O_RDWR | O_CLOEXEC);
	CHECK(fd >= 0, "open: %s", strerror(errno));
	memset(blk, 0xfe, sizeof(blk));
	/* pwritev2(RWF_NOWAIT): refused (EOPNOTSUPP, or EAGAIN), or done */
	n = pwritev2(fd, &iov, 1, 0, RWF_NOWAIT);
	say("  pwritev2(RWF_NOWAIT) to tmpfs: %zd (%s)\n", n, n < 0 ? strerror(errno) : "written");
	CHECK(n == 4096 || (n < 0 && (errno == EOPNOTSUPP || errno == EAGAIN)),
	      "pwritev2(RWF_NOWAIT): %zd (%s)", n, strerror(errno));
	if (n < 0)
		memcpy(blk, model, 4096);	/* block 0 unchanged */
	CHECK(pread(fd, back, 4096, 0) == 4096 && !memcmp(back, blk, 4096),
	      "block 0 after pwritev2(RWF_NOWAIT)");
	/* the same through io_uring: res 4096, or -EAGAIN (never punted) */
	ret = io_uring_queue_init(4, &ring, 0);
	CHECK(!ret, "io_uring_queue_init: %s", strerror(-ret));
	memset(blk, 0xfd, sizeof(blk));
	sqe = io_uring_get_sqe(&ring);
	io_uring_prep_write(sqe, fd, blk, 4096, 4096);
	sqe->rw_flags = RWF_NOWAIT;
	io_uring_submit(&ring);
	ret = io_uring_wait_cqe(&ring, &cqe);
	res = ret ? ret : cqe->res;
	if (!ret)
		io_uring_cqe_seen(&ring, cqe);
	io_uring_queue_exit(&ring);
	say("  io_uring write with RWF_NOWAIT to tmpfs: %d\n", res);
	CHECK(res == 4096 || res == -EAGAIN || res == -EOPNOTSUPP,
	      "io_uring write with RWF_NOWAIT: %d", res);
	if (res != 4096)
		memcpy(blk, model + 4096, 4096);
	CHECK(pread(fd, back, 4096, 4096) == 4096 && !memcmp(back, blk, 4096),
	      "block 1 after the io_uring RWF_NOWAIT write");
	close(fd);
	return T_PASS;
}

/* io_uring writes to an O_DIRECT tmpfs file (tried inline under IOCB_NOWAIT). */
static int direct_writes(const char *path, unsigned char *model)
{
	struct io_uring ring;
	unsigned char *blk;
	int fd, ret, i;

	fd = open(path, O_RDWR | O_DIRECT | O_CLOEXEC);
	CHECK(fd >= 0, "open O_DIRECT: %s", strerror(errno));
	CHECK(!posix_memalign((void **)&blk, 4096, 8 * 4096), "posix_memalign");
	ret = io_uring_queue_init(16, &ring, 0);
	CHECK(!ret, "io_uring_queue_init: %s", strerror(-ret));
	for (i = 0; i < 8; i++) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
		off_t off = (off_t)(16 + 3 * i) * 4096;

		fill_pattern(blk + i * 4096, 4096, 100 + i);
		memcpy(model + off, blk + i * 4096, 4096);
		io_uring_prep_write(sqe, fd, blk + i * 4096, 4096, off);
	}
	CHECK(io_uring_submit(&ring) == 8, "io_uring_submit");
	for (i = 0; i < 8; i++) {
		struct io_uring_cqe *cqe;

		CHECK(!io_uring_wait_cqe(&ring, &cqe), "wait_cqe");
		CHECK(cqe->res == 4096, "O_DIRECT io_uring write to tmpfs: res %d", cqe->res);
		io_uring_cqe_seen(&ring, cqe);
	}
	io_uring_queue_exit(&ring);
	free(blk);
	close(fd);
	return T_PASS;
}

static int write_nowait(void)
{
	struct rw_arg w, r[2];
	pthread_t wt, rt[2];
	bool started[2];
	unsigned char *model, *back;
	char path[300];
	int fd, i, ret = T_PASS;
	unsigned long reads = 0, reads_inline = 0, writes = 0;

	model = calloc(1, (size_t)WBLOCKS * 4096);
	back = malloc((size_t)WBLOCKS * 4096);
	CHECK(model && back, "malloc");
	fd = tmpfs_file(path, sizeof(path), "written", NULL, (off_t)WBLOCKS * 4096);
	CHECK(fd >= 0, "tmpfs file: %s", strerror(-fd));
	close(fd);
	memset((void *)wgen_submitted, 0, sizeof(wgen_submitted));
	memset((void *)wgen_completed, 0, sizeof(wgen_completed));
	writers_done = 0;
	/* one writer (a block's generations complete in order), two readers */
	w = (struct rw_arg){ .path = path, .seed = 7 };
	for (i = 0; i < 2; i++)
		r[i] = (struct rw_arg){ .path = path, .seed = 70 + i };
	CHECK(!pthread_create(&wt, NULL, writer_main, &w), "pthread_create");
	for (i = 0; i < 2; i++) {
		started[i] = !pthread_create(&rt[i], NULL, reader_main_rw, &r[i]);
		if (!started[i])
			r[i].result = T_FAIL;
	}
	pthread_join(wt, NULL);
	writers_done = 1;
	for (i = 0; i < 2; i++)
		if (started[i])
			pthread_join(rt[i], NULL);
	writes = w.ops;
	for (i = 0; i < 2; i++) {
		reads += r[i].ops;
		reads_inline += r[i].in_submit;
	}
	say("  %lu writes (%lu done inside io_uring_submit()), %lu racing reads (%lu inline)\n",
	    writes, w.in_submit, reads, reads_inline);
	if (w.result != T_PASS || r[0].result != T_PASS || r[1].result != T_PASS)
		ret = T_FAIL;
	CHECK(ret == T_PASS, "a writer or reader failed");
	CHECK(writes > 0 && reads > 0, "nothing was written or read");

	/* every block holds its last generation */
	for (i = 0; i < WBLOCKS; i++)
		memset(model + (size_t)i * 4096, wgen_completed[i], 4096);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	CHECK(fd >= 0, "open: %s", strerror(errno));
	CHECK(pread(fd, back, (size_t)WBLOCKS * 4096, 0) == WBLOCKS * 4096,
	      "pread: %s", strerror(errno));
	close(fd);
	CHECK(!memcmp(back, model, (size_t)WBLOCKS * 4096), "the file differs at %d",
	      first_diff(back, model, (size_t)WBLOCKS * 4096));
	bytes_verified += (uint64_t)WBLOCKS * 4096;

	ret = nowait_writes(path, model);
	if (ret == T_PASS) {
		/* blocks 0 and 1 as they are now */
		fd = open(path, O_RDONLY | O_CLOEXEC);
		CHECK(fd >= 0 && pread(fd, model, 2 * 4096, 0) == 2 * 4096, "pread");
		close(fd);
		ret = direct_writes(path, model);
	}
	if (ret == T_PASS) {
		struct io_uring ring;

		CHECK(!io_uring_queue_init(8, &ring, 0), "io_uring_queue_init");
		fd = open(path, O_RDONLY | O_CLOEXEC);
		CHECK(fd >= 0, "open: %s", strerror(errno));
		ret = ring_check(&ring, fd, model, (off_t)WBLOCKS * 4096, 0,
				 (size_t)WBLOCKS * 4096, 0, "after the writes");
		close(fd);
		io_uring_queue_exit(&ring);
	}
	free(model);
	free(back);
	return ret;
}

static int t_tmpfs_write_nowait(void)
{
	return on_own_tmpfs(write_nowait);
}

/* ---------------------------------------------- (d) devfuse_read_nowait */

/*
 * A connection served by hand: the subtest reads /dev/fuse through its own
 * io_uring with a buffer of FUSE_MIN_READ_BUFFER bytes (max_write 4096).
 */
struct devfuse {
	int fd;
	char mp[200];
	char abort_file[96];
	bool mounted;
};

#define DF_BUF	FUSE_MIN_READ_BUFFER
#define DF_ROOT_MODE	(S_IFDIR | 0755)

static int df_reply(int fd, uint64_t unique, int error, const void *arg, size_t len)
{
	struct fuse_out_header out = {
		.len = (uint32_t)(sizeof(out) + len), .error = error, .unique = unique,
	};
	struct iovec iov[2] = { { &out, sizeof(out) }, { (void *)arg, len } };

	return writev(fd, iov, arg ? 2 : 1) == (ssize_t)out.len ? 0 : -errno;
}

/* Answer one request read into @buf: the root's attributes, no entries. */
static int df_answer(int fd, const void *buf, ssize_t n, uint32_t *opcode)
{
	const struct fuse_in_header *in = buf;
	struct fuse_attr_out ao;

	if (n < (ssize_t)sizeof(*in))
		return -EIO;
	*opcode = in->opcode;
	switch (in->opcode) {
	case FUSE_GETATTR:
		memset(&ao, 0, sizeof(ao));
		ao.attr_valid = 3600;
		ao.attr.ino = FUSE_ROOT_ID;
		ao.attr.mode = DF_ROOT_MODE;
		ao.attr.nlink = 2;
		return df_reply(fd, in->unique, 0, &ao, sizeof(ao));
	case FUSE_FORGET:
	case FUSE_BATCH_FORGET:
		return 0;
	case FUSE_LOOKUP:
		return df_reply(fd, in->unique, -ENOENT, NULL, 0);
	default:
		return df_reply(fd, in->unique, -ENOSYS, NULL, 0);
	}
}

/* The connection's number: the minor of the mount's device, from
 * mountinfo (a stat() of the mount would be a request nobody serves). */
static int df_conn(const char *mp, unsigned int *minor)
{
	char line[1024], point[512];
	unsigned int maj, min;
	FILE *f = fopen("/proc/self/mountinfo", "re");
	int ret = -ENOENT;

	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%*u %*u %u:%u %*s %511s", &maj, &min, point) == 3 &&
		    !strcmp(point, mp)) {
			*minor = min;
			ret = 0;
		}
	}
	fclose(f);
	return ret;
}

static int df_mount(struct devfuse *d)
{
	struct fuse_init_out io = { .major = FUSE_KERNEL_VERSION, .minor = 31,
				    .max_write = 4096 };
	char opts[128], *buf;
	unsigned int minor = 0;
	ssize_t n;
	int ret;

	snprintf(d->mp, sizeof(d->mp), "%s/devfuse-nowait", workdir);
	CHECK(!mkdir(d->mp, 0755) || errno == EEXIST, "mkdir %s: %s", d->mp, strerror(errno));
	d->fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
	CHECK(d->fd >= 0, "open /dev/fuse: %s", strerror(errno));
	snprintf(opts, sizeof(opts), "fd=%d,rootmode=40000,user_id=0,group_id=0", d->fd);
	CHECK(!mount("zc-nowait", d->mp, "fuse.zc-nowait", MS_NOSUID | MS_NODEV, opts),
	      "mount: %s", strerror(errno));
	d->mounted = true;
	buf = malloc(1 << 20);
	CHECK(buf, "malloc");
	n = read(d->fd, buf, 1 << 20);
	ret = n >= (ssize_t)sizeof(struct fuse_in_header) &&
	      ((struct fuse_in_header *)buf)->opcode == FUSE_INIT;
	if (ret)
		ret = !df_reply(d->fd, ((struct fuse_in_header *)buf)->unique, 0, &io,
				sizeof(io));
	free(buf);
	CHECK(ret, "FUSE_INIT not read or not answered (%zd: %s)", n, strerror(errno));
	ret = df_conn(d->mp, &minor);
	CHECK(!ret, "no connection number for %s: %s", d->mp, strerror(-ret));
	snprintf(d->abort_file, sizeof(d->abort_file),
		 "/sys/fs/fuse/connections/%u/abort", minor);
	return T_PASS;
}

static void df_unmount(struct devfuse *d)
{
	if (d->mounted) {
		write_file(d->abort_file, "1");
		umount2(d->mp, MNT_DETACH);
	}
	if (d->fd >= 0)
		close(d->fd);
	rmdir(d->mp);
}

/* Threads that make requests of the connection. */
struct df_poke {
	const char *mp;
	unsigned int delay_ms;
	int err;		/* what the call returned: 0 or errno */
	double at;		/* when it was made */
};

static void *df_setxattr_main(void *p)
{
	struct df_poke *k = p;
	size_t len = 60000;	/* far more than the server's read buffer */
	char *val = calloc(1, len);

	sleep_ms(k->delay_ms);
	k->at = now();
	k->err = val && setxattr(k->mp, "user.zc-nowait", val, len, 0) ? errno : 0;
	free(val);
	return NULL;
}

static void *df_lookup_main(void *p)
{
	struct df_poke *k = p;
	char path[260];
	struct stat st;

	sleep_ms(k->delay_ms);
	snprintf(path, sizeof(path), "%s/nothing-%u", k->mp, k->delay_ms);
	k->at = now();
	k->err = stat(path, &st) ? errno : 0;
	return NULL;
}

/* Wait up to @ms for the CQE of the read of @buf and answer its request. */
static int df_reap(struct devfuse *d, struct io_uring *ring, char *buf, unsigned int ms,
		   int *res, uint32_t *opcode)
{
	struct __kernel_timespec ts = { ms / 1000, (ms % 1000) * 1000000LL };
	struct io_uring_cqe *cqe;
	int ret = io_uring_wait_cqe_timeout(ring, &cqe, &ts);

	if (ret)
		return ret;
	*res = cqe->res;
	io_uring_cqe_seen(ring, cqe);
	*opcode = 0;
	if (*res > 0)
		return df_answer(d->fd, buf, *res, opcode);
	return 0;
}

static void df_prep_read(struct io_uring *ring, int fd, char *buf)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(ring);

	io_uring_prep_read(sqe, fd, buf, DF_BUF, 0);
}

/*
 * (1) A FUSE_SETXATTR too large for the read buffer is pending: ->poll()
 * says readable, the read dequeues the request, ends it (E2BIG) and finds
 * nothing else.  io_uring_submit() must come back at once (patch 43: the
 * read gets -EAGAIN under IOCB_NOWAIT and io_uring polls), not when the
 * next request comes 3 s later; the read then completes with that request.
 */
static int df_too_large(struct devfuse *d, struct io_uring *ring, char *buf)
{
	struct df_poke sx = { .mp = d->mp }, lk = { .mp = d->mp, .delay_ms = 3000 };
	struct pollfd pfd = { .fd = d->fd, .events = POLLIN };
	pthread_t st, lt;
	uint32_t opcode = 0;
	double t0, took, done_at;
	int res = 0, ret;

	CHECK(!pthread_create(&st, NULL, df_setxattr_main, &sx), "pthread_create");
	ret = poll(&pfd, 1, 10000);
	if (ret != 1) {
		write_file(d->abort_file, "1");
		pthread_join(st, NULL);
		CHECK(0, "no FUSE_SETXATTR came (poll: %d)", ret);
	}
	CHECK(!pthread_create(&lt, NULL, df_lookup_main, &lk), "pthread_create");
	df_prep_read(ring, d->fd, buf);
	t0 = now();
	ret = io_uring_submit(ring);
	took = now() - t0;
	if (ret == 1)
		ret = df_reap(d, ring, buf, 10000, &res, &opcode);
	done_at = now();
	pthread_join(st, NULL);
	pthread_join(lt, NULL);
	say("  a too large request pending: io_uring_submit() took %.3f s, the read "
	    "completed %.1f s after the next request came (res %d, opcode %u); "
	    "setxattr: %s\n", took, done_at - lk.at, res, opcode, strerror(sx.err));
	CHECK(ret == 0, "the read: %s", strerror(-ret));
	CHECK(took < 1.5, "io_uring_submit() slept %.1f s in a read of /dev/fuse: the "
	      "request ->poll() saw was too large and ended, and the read waited for the "
	      "next one under IOCB_NOWAIT", took);
	CHECK(opcode == FUSE_LOOKUP, "the read completed with res %d, opcode %u, want the "
	      "FUSE_LOOKUP that came next", res, opcode);
	CHECK(sx.err == E2BIG, "setxattr of more than the server reads: %s, want E2BIG",
	      strerror(sx.err));
	CHECK(lk.err == ENOENT, "the lookup: %s, want ENOENT", strerror(lk.err));
	return T_PASS;
}

/*
 * (2) Reads with nothing pending are polled, not handed to io-wq: the
 * CQE comes when a request does, and the thread has no io-wq worker.
 * (3) An abort completes a polled read with an error.
 */
static int df_polled(struct devfuse *d, struct io_uring *ring, char *buf)
{
	uint32_t opcode;
	int i, res, ret, workers;

	for (i = 0; i < 5; i++) {
		struct df_poke lk = { .mp = d->mp, .delay_ms = 200 + (unsigned int)i };
		pthread_t lt;

		df_prep_read(ring, d->fd, buf);
		CHECK(io_uring_submit(ring) == 1, "io_uring_submit");
		CHECK(io_uring_cq_ready(ring) == 0,
		      "a read of /dev/fuse with no request pending completed at once");
		CHECK(!pthread_create(&lt, NULL, df_lookup_main, &lk), "pthread_create");
		ret = df_reap(d, ring, buf, 10000, &res, &opcode);
		pthread_join(lt, NULL);
		CHECK(ret == 0 && opcode == FUSE_LOOKUP,
		      "round %d: the polled read: %s, res %d, opcode %u", i, strerror(-ret), res,
		      ret ? 0 : opcode);
		CHECK(lk.err == ENOENT, "round %d: the lookup: %s", i, strerror(lk.err));
	}
	workers = mf_iowq_workers(getpid(), (pid_t)syscall(SYS_gettid));
	say("  5 polled reads answered, io-wq workers of this thread: %d\n", workers);
	CHECK(workers == 0, "%d io-wq worker(s) read /dev/fuse", workers);

	df_prep_read(ring, d->fd, buf);
	CHECK(io_uring_submit(ring) == 1, "io_uring_submit");
	CHECK(!write_file(d->abort_file, "1"), "abort: %s", strerror(errno));
	ret = df_reap(d, ring, buf, 10000, &res, &opcode);
	CHECK(ret == 0, "a polled read was not completed 10 s after the abort (%s)",
	      strerror(-ret));
	CHECK(res == -ECONNABORTED || res == -ENODEV,
	      "a polled read completed with %d after the abort", res);
	return T_PASS;
}

static int devfuse_read_nowait(void)
{
	struct devfuse d = { .fd = -1 };
	struct io_uring ring;
	char *buf = NULL;
	int ret;

	ret = io_uring_queue_init(8, &ring, 0);
	CHECK(!ret, "io_uring_queue_init: %s", strerror(-ret));
	ret = posix_memalign((void **)&buf, 4096, DF_BUF) ? T_FAIL : df_mount(&d);
	if (ret == T_PASS)
		ret = df_too_large(&d, &ring, buf);
	if (ret == T_PASS)
		ret = df_polled(&d, &ring, buf);
	df_unmount(&d);
	io_uring_queue_exit(&ring);
	free(buf);
	return ret;
}

static void *devfuse_main(void *p)
{
	*(int *)p = devfuse_read_nowait();
	return NULL;
}

/* On a fresh thread: io-wq is per task, and earlier subtests' rings gave
 * this one workers. */
static int t_devfuse_read_nowait(void)
{
	pthread_t tid;
	int ret = T_FAIL;

	CHECK(!pthread_create(&tid, NULL, devfuse_main, &ret), "pthread_create");
	pthread_join(tid, NULL);
	return ret;
}

static const struct zc_subtest subtests[] = {
	{ "tmpfs_read_inline", t_tmpfs_read_inline, true },
	{ "tmpfs_read_uncached", t_tmpfs_read_uncached, false },
	{ "tmpfs_write_nowait", t_tmpfs_write_nowait, false },
	{ "devfuse_read_nowait", t_devfuse_read_nowait, false },
};

int main(int argc, char **argv)
{
	return zc_main(argc, argv, subtests, ZC_ARRAY_SIZE(subtests));
}
