// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * minifuse: raw /dev/fuse server for the kernel tests (see minifuse.h).
 * It talks the protocol itself rather than through libfuse so that it can
 * send the replies a broken or hostile server would.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fuse.h>
#include <liburing.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fuse_zc_kabi.h"
#include "minifuse.h"

#define MF_MAX_WRITE	(1U << 20)
#define MF_BUF_SIZE	(MF_MAX_WRITE + 4096)
#define MF_ROOT_INO	1
#define MF_FILE_INO	2
#define MF_FILE_NAME	"file"

#ifndef FUSE_NOTIFY_RESEND		/* Linux 6.9; the host's headers may be older */
#define FUSE_NOTIFY_RESEND	7
#endif
#define MF_UNIQUE_RESEND	(1ULL << 63)	/* FUSE_UNIQUE_RESEND */

/* user_data of the parked-loan ring's operations */
enum { MF_UD_BLOCKER = 1, MF_UD_PARKED, MF_UD_CANCEL, MF_UD_NR };
#define MF_UD_LEND		200
/* a read lending that lets the kernel answer: the backing file's end is the
 * end of the read's data (the file is mapped one to one) */
#define MF_READ_COMPLETE	(FUSEZC_SPLICE_BUF_COMPLETE | FUSEZC_SPLICE_BUF_EOF)
#define MF_UD_AFTER_LEND	201
/* user_data of the NOPs queued in io-wq ahead of a parked lending */
#define MF_UD_FILLER		100
#define MF_UD_FILLER_CANCEL	101
#define MF_UD_GATE_CANCEL	102	/* mf_park_force_open() */
#define MF_PARK_FILLERS		1024
#define MF_PARK_CQ_ENTRIES	2048

struct mf_instance {
	const struct mf_config *cfg;
	struct mf_shared *sh;
	int fuse_fd;
	int backing_fd;
	int backing_wronly_fd;	/* for MF_READ_LIE_FAILED_IO */
	int backing_rw_fd;	/* FUSE_WRITE, with cfg->writable */
	int loop_fd;		/* cfg->loop_path, buffered */
	int loop_dio_fd;	/* ... O_DIRECT: parked loans */
	int loop_rw_fd;		/* ... buffered, to dirty a parked loan's range */
	int loop_dio_rw_fd;	/* ... O_DIRECT, read-write: parked write loans */
	int freeze_fd;		/* MF_WRITE_FREEZE: cfg->freeze_path, O_DIRECT */
	int freeze_pwrite_fd;	/* ... cfg->freeze_pwrite_path */
	/*
	 * The largest O_DIRECT read of the loop device that needs no split
	 * of its bio: the block layer fails a REQ_NOWAIT bio it would have to
	 * split with -EAGAIN, which sends the lending to io-wq.
	 */
	uint32_t loop_dio_max;
	off_t file_size;
	bool copy_only;		/* the second connection */
	struct mf_instance *peer;
	char stats_path[96];	/* this connection's fusectl zerocopy_stats */
};

struct mf_worker {
	struct mf_instance *in;
	struct io_uring ring;
	char *buf;
	char *data;		/* copy replies */
	int pipe[2];		/* splice_receive */
	/*
	 * Parked loans: a ring whose io-wq (this thread's) has one worker for
	 * bound work (block devices count as bound), kept busy by an open of
	 * the FIFO @fifo that no writer has opened, so that a READ_SPLICE_BUF
	 * punted there waits in the queue with its loan.
	 */
	struct io_uring park;
	bool park_ready;
	unsigned int fillers_out;	/* MF_UD_FILLER CQEs not reaped yet */
	char fifo[64];
	uint64_t rnd;		/* MF_READ_RANDOM */
	/* auto_complete: lend with IORING_SPLICE_BUF_COMPLETE for this read */
	bool auto_lend;
	/* a lending's CQE of this read said the kernel answered the read */
	bool lender_completed;
	/* the last lending's CQE flags */
	unsigned int cqe_flags;
	/* sqe->ioprio for the next mf_lend_into() instead of auto_lend's */
	int next_ioprio;
	/* MF_READ_ASYNC: a DEFER_TASKRUN ring, so no completion is posted
	 * before the worker waits for it */
	struct io_uring aring;
	bool aring_ready;
};

/* The bytes of a FUSE_READ that lie inside the file. */
static uint32_t mf_read_avail(const struct mf_instance *in, const struct fuse_read_in *ri)
{
	if (ri->offset >= (uint64_t)in->file_size)
		return 0;
	return (uint32_t)(in->file_size - ri->offset < ri->size ?
			  in->file_size - ri->offset : ri->size);
}

/* A range an O_DIRECT read of the loop device (512-byte sectors) can take. */
static bool mf_dio_aligned(uint64_t off, uint32_t len)
{
	return !((off | len) % 512);
}

static void mf_sleep_ms(unsigned int ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

static int mf_reply_iov(struct mf_instance *in, uint64_t unique, int error,
			struct iovec *iov, int cnt)
{
	struct fuse_out_header oh = { .unique = unique, .error = error };
	struct iovec v[4];
	ssize_t n;
	int i;

	v[0].iov_base = &oh;
	v[0].iov_len = sizeof(oh);
	oh.len = sizeof(oh);
	for (i = 0; i < cnt; i++) {
		v[i + 1] = iov[i];
		oh.len += iov[i].iov_len;
	}
	n = writev(in->fuse_fd, v, cnt + 1);
	return n < 0 ? -errno : 0;
}

static int mf_reply(struct mf_instance *in, uint64_t unique, int error,
		    const void *arg, size_t len)
{
	struct iovec iov = { (void *)arg, len };

	return mf_reply_iov(in, unique, error, &iov, len ? 1 : 0);
}

static int mf_reply_zc(struct mf_instance *in, uint64_t unique, uint64_t size)
{
	struct fusezc_read_out out = { .size = size };

	return mf_reply(in, unique | FUSEZC_UNIQUE_ZC_REPLY, 0, &out, sizeof(out));
}

/*
 * MF_READ_SECOND_REPLY: the same zero-copy reply again, after the request
 * was answered (by us or by the kernel).  The reader may have its bytes
 * before this runs: the count tells the test when the errno is there.
 */
static void mf_second_reply(struct mf_instance *in, uint64_t unique, uint64_t size)
{
	int ret;

	mf_sleep_ms(in->cfg->second_reply_delay_ms);
	ret = mf_reply_zc(in, unique, size);
	in->sh->second_reply_errno = ret < 0 ? -ret : 0;
	__sync_fetch_and_add(&in->sh->second_replies, 1);	/* a full barrier */
}

static void mf_fill_attr(struct mf_instance *in, uint64_t ino, struct fuse_attr *a)
{
	struct stat st;

	memset(a, 0, sizeof(*a));
	a->ino = ino;
	a->nlink = 1;
	a->blksize = 4096;
	if (ino == MF_ROOT_INO) {
		a->mode = S_IFDIR | 0755;
		a->nlink = 2;
		return;
	}
	if (fstat(in->backing_fd, &st) == 0) {
		a->size = st.st_size;
		a->blocks = st.st_blocks;
	}
	a->mode = S_IFREG | (in->cfg->writable ? 0644 : 0444);
}

static void mf_drop_privileges(void);

static void mf_do_init(struct mf_instance *in, struct fuse_in_header *h, void *arg)
{
	struct fuse_init_in *ii = arg;
	struct fuse_init_out out = { 0 };
	uint64_t offered = ii->flags;

	if (ii->minor >= 36 && (ii->flags & FUSE_INIT_EXT))
		offered |= (uint64_t)ii->flags2 << 32;
	if (!in->copy_only)
		in->sh->zc_offered = !!(offered & FUSEZC_INIT_ZC_READ);

	out.major = FUSE_KERNEL_VERSION;
	out.minor = ii->minor < FUSE_KERNEL_MINOR_VERSION ? ii->minor : FUSE_KERNEL_MINOR_VERSION;
	out.max_readahead = ii->max_readahead;
	out.flags = FUSE_ASYNC_READ | FUSE_BIG_WRITES | FUSE_MAX_PAGES | FUSE_INIT_EXT;
	if (in->cfg->accept_zc && (offered & FUSEZC_INIT_ZC_READ)) {
		out.flags2 = (uint32_t)(FUSEZC_INIT_ZC_READ >> 32);
		if (!in->copy_only)
			in->sh->zc_accepted = 1;
	}
	if (in->cfg->writeback_cache && (offered & FUSE_WRITEBACK_CACHE))
		out.flags |= FUSE_WRITEBACK_CACHE;
	if (in->cfg->accept_zc_write && !in->copy_only &&
	    (offered & FUSEZC_INIT_ZC_WRITE)) {
		out.flags2 |= (uint32_t)(FUSEZC_INIT_ZC_WRITE >> 32);
		in->sh->zc_write_accepted = 1;
	}
	out.max_background = 64;
	out.congestion_threshold = 48;
	out.max_write = MF_MAX_WRITE;
	out.time_gran = 1;
	out.max_pages = 256;
	/*
	 * Publish before replying: the kernel lets the mount's first
	 * operations (the test's stat()) complete as soon as it has the reply,
	 * possibly before this thread runs again.
	 */
	if (!in->copy_only) {
		__sync_synchronize();
		in->sh->init_done = 1;
	}
	mf_reply(in, h->unique, 0, &out, sizeof(out));
	if (in->cfg->drop_privileges_after_init && !in->copy_only) {
		mf_drop_privileges();	/* every thread's (glibc) */
		__sync_synchronize();
		in->sh->privileges_dropped = 1;
	}
}

/* Submit what is queued and take the first CQE: 0 and its fields, or -errno. */
static int mf_ring_submit_one(struct mf_worker *w, uint64_t *user_data, int *res,
			      unsigned int *flags)
{
	struct io_uring_cqe *cqe;
	int ret;

	ret = io_uring_submit_and_wait(&w->ring, 1);
	if (ret < 0)
		return ret;
	ret = io_uring_wait_cqe(&w->ring, &cqe);
	if (ret < 0)
		return ret;
	*user_data = cqe->user_data;
	*res = cqe->res;
	*flags = cqe->flags;
	io_uring_cqe_seen(&w->ring, cqe);
	return 0;
}

/* Submit one SQE and wait for it; returns cqe->res. */
static int mf_ring_run(struct mf_worker *w, struct io_uring_sqe *sqe)
{
	unsigned int flags;
	uint64_t ud;
	int ret, res;

	(void)sqe;
	ret = mf_ring_submit_one(w, &ud, &res, &flags);
	if (ret < 0)
		return ret;
	w->cqe_flags = flags;
	if (flags & FUSEZC_CQE_F_LENDER_COMPLETED)
		w->lender_completed = true;
	return res;
}

static void mf_auto_forbidden(struct mf_shared *sh, const char *what);

/*
 * Run a lending asking the kernel to answer, with IOSQE_CQE_SKIP_SUCCESS
 * and a NOP linked after it: only the NOP's CQE means the kernel answered
 * (@len then stands for the result nobody posted); the lending's own CQE
 * means it did not, and the read is still ours.
 */
static int mf_ring_run_skip(struct mf_worker *w, struct io_uring_sqe *sqe,
			    unsigned int len)
{
	unsigned int flags;
	uint64_t ud;
	int ret, res;

	sqe->flags |= IOSQE_CQE_SKIP_SUCCESS | IOSQE_IO_LINK;
	sqe->user_data = MF_UD_LEND;
	sqe = io_uring_get_sqe(&w->ring);
	if (!sqe)
		return -EBUSY;
	io_uring_prep_nop(sqe);
	sqe->user_data = MF_UD_AFTER_LEND;
	ret = mf_ring_submit_one(w, &ud, &res, &flags);
	if (ret < 0)
		return ret;
	if (ud == MF_UD_AFTER_LEND) {
		w->lender_completed = true;
		return (int)len;
	}
	if (flags & FUSEZC_CQE_F_LENDER_COMPLETED)
		mf_auto_forbidden(w->in->sh, "a skipped lending posting an answered CQE");
	return res;
}

static struct io_uring_sqe *mf_prep_splice_buf(struct mf_worker *w, int op,
					       int fd, uint64_t off, unsigned int len,
					       int lender, uint64_t lend_pos)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);

	io_uring_prep_rw(op, sqe, fd, NULL, len, off);
	sqe->splice_fd_in = lender;
	sqe->splice_off_in = lend_pos;
	sqe->splice_flags = 0;
	return sqe;
}

/*
 * READ_SPLICE_BUF of @fd at @off into request @unique from @lend_off of its
 * data on; cqe->res.
 */
static int mf_lend_into(struct mf_worker *w, uint64_t unique, uint32_t lend_off,
			int fd, uint64_t off, unsigned int len)
{
	const struct mf_config *cfg = w->in->cfg;
	struct io_uring_sqe *sqe;

	sqe = mf_prep_splice_buf(w, FUSEZC_IORING_OP_READ_SPLICE_BUF,
				 cfg->fixed_target && fd == w->in->backing_fd ? 1 : fd,
				 off, len, cfg->fixed_lender ? 0 : w->in->fuse_fd,
				 fusezc_lend_pos(unique, lend_off));
	if (cfg->fixed_lender)
		sqe->splice_flags = FUSEZC_SPLICE_F_FD_IN_FIXED;
	if (cfg->fixed_target && fd == w->in->backing_fd)
		sqe->flags |= IOSQE_FIXED_FILE;
	if (w->auto_lend)
		sqe->ioprio = MF_READ_COMPLETE;
	if (w->next_ioprio >= 0) {
		sqe->ioprio = (unsigned int)w->next_ioprio;
		w->next_ioprio = -1;
	}
	if (w->auto_lend && cfg->skip_success)
		return mf_ring_run_skip(w, sqe, len);
	return mf_ring_run(w, sqe);
}

/* The same from the start of the request's data. */
static int mf_lend_read(struct mf_worker *w, uint64_t unique, int fd,
			uint64_t off, unsigned int len)
{
	return mf_lend_into(w, unique, 0, fd, off, len);
}

/* pread + ordinary reply; returns the reply's result (0 or -errno). */
static int mf_reply_copy(struct mf_worker *w, uint64_t unique, uint64_t off,
			 uint32_t size)
{
	ssize_t n = pread(w->in->backing_fd, w->data, size, off);
	int ret;

	if (n < 0)
		return mf_reply(w->in, unique, -errno, NULL, 0);
	ret = mf_reply(w->in, unique, 0, w->data, n);
	if (!ret)
		__sync_fetch_and_add(&w->in->sh->copy_replies, 1);
	return ret;
}

/* The correct reply after the kernel refused a wrong one. */
static void mf_recover(struct mf_worker *w, uint64_t unique, uint64_t off,
		       uint32_t size)
{
	int ret = mf_reply_copy(w, unique, off, size);

	w->in->sh->recovery_errno = -ret;
	if (!ret)
		__sync_fetch_and_add(&w->in->sh->recoveries, 1);
}

static long long mf_lent_pages(struct mf_instance *in)
{
	char name[64];
	long long v, lent = -1;
	FILE *f = fopen(in->stats_path, "r");

	if (!f)
		return -1;
	while (fscanf(f, "%63s %lld", name, &v) == 2)
		if (!strcmp(name, "zc_lent_pages"))
			lent = v;
	fclose(f);
	return lent;
}

static int mf_park_init(struct mf_worker *w)
{
	unsigned int limits[2] = { 1, 1 };	/* bound, unbound io-wq workers */
	struct io_uring_params p = { .flags = IORING_SETUP_CQSIZE,
				     .cq_entries = MF_PARK_CQ_ENTRIES };
	int ret;

	if (w->park_ready)
		return 0;
	if (w->in->loop_fd < 0)
		return -ENODEV;
	snprintf(w->fifo, sizeof(w->fifo), "/tmp/minifuse-park-%d-%d", getpid(), gettid());
	unlink(w->fifo);
	if (mkfifo(w->fifo, 0600))
		return -errno;
	ret = io_uring_queue_init_params(8, &w->park, &p);
	if (ret < 0)
		goto fail;
	ret = io_uring_register_iowq_max_workers(&w->park, limits);
	if (ret < 0) {
		io_uring_queue_exit(&w->park);
		goto fail;
	}
	w->park_ready = true;
	return 0;
fail:
	unlink(w->fifo);
	return ret;
}

/*
 * The gate stayed shut: count it (the test fails on it) and cancel the
 * blocked open, which interrupts it, so that the parked op runs and
 * nothing waits for ever.
 */
static void mf_park_force_open(struct mf_worker *w, int error)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&w->park);

	__sync_fetch_and_add(&w->in->sh->park_release_failures, 1);
	w->in->sh->park_release_error = error;
	fprintf(stderr, "minifuse: a park's gate did not open (%s): cancelling its blocker\n",
		strerror(-error));
	if (!sqe) {
		io_uring_submit(&w->park);
		sqe = io_uring_get_sqe(&w->park);
	}
	if (sqe) {
		io_uring_prep_cancel64(sqe, MF_UD_BLOCKER, 0);
		sqe->user_data = MF_UD_GATE_CANCEL;
		io_uring_submit(&w->park);
	}
}

/*
 * Wait for the park ring's CQEs named in @mask (1 << MF_UD_*); res[ud].
 * Bounded: a gate that does not open within 60 s is forced open, and
 * after another 60 s without a CQE the wait fails.
 */
static int mf_park_reap(struct mf_worker *w, unsigned int mask, int res[MF_UD_NR])
{
	struct __kernel_timespec ts = { .tv_sec = 60 };
	bool forced = false;

	while (mask) {
		struct io_uring_cqe *cqe;
		int ret = io_uring_wait_cqe_timeout(&w->park, &cqe, &ts);

		if (ret == -ETIME && !forced && (mask & 1u << MF_UD_BLOCKER)) {
			mf_park_force_open(w, ret);
			forced = true;
			continue;
		}
		if (ret < 0)
			return ret;
		if (cqe->user_data < MF_UD_NR) {
			res[cqe->user_data] = cqe->res;
			if (cqe->user_data == MF_UD_PARKED &&
			    (cqe->flags & FUSEZC_CQE_F_LENDER_COMPLETED))
				w->lender_completed = true;
			mask &= ~(1u << cqe->user_data);
		} else if (cqe->user_data == MF_UD_FILLER && w->fillers_out) {
			w->fillers_out--;
		}
		io_uring_cqe_seen(&w->park, cqe);
	}
	return 0;
}

/*
 * Reap every filler CQE (bounded): left in the ring they would fill it,
 * and a parked lending's CQE would then wait in the kernel's overflow
 * list, where a thread watching the ring never sees it.
 */
static void mf_park_drain_fillers(struct mf_worker *w)
{
	struct __kernel_timespec ts = { .tv_sec = 60 };

	while (w->fillers_out) {
		struct io_uring_cqe *cqe;

		if (io_uring_wait_cqe_timeout(&w->park, &cqe, &ts) < 0)
			break;
		if (cqe->user_data == MF_UD_FILLER)
			w->fillers_out--;
		io_uring_cqe_seen(&w->park, cqe);
	}
}

int mf_gate_release(const char *fifo)
{
	/*
	 * A writer lets an open(2) for reading through, the one waiting now
	 * and any that starts while the fd is held.  O_RDWR, because a
	 * non-blocking O_WRONLY open fails with ENXIO while no reader has
	 * the FIFO open: a release that came before the opener reached
	 * fifo_open() (a loaded machine) would then never happen.  An
	 * O_RDWR open of a FIFO never waits.
	 */
	int fd = open(fifo, O_RDWR | O_NONBLOCK | O_CLOEXEC);

	return fd < 0 ? -errno : fd;
}

/* Let the blocker finish (the parked op then runs); reap @mask + blocker. */
static int mf_park_unblock(struct mf_worker *w, unsigned int mask, int res[MF_UD_NR])
{
	int ret, wfd = mf_gate_release(w->fifo);

	if (wfd < 0)
		mf_park_force_open(w, wfd);
	ret = mf_park_reap(w, mask | 1u << MF_UD_BLOCKER, res);
	if (wfd >= 0)
		close(wfd);
	if (res[MF_UD_BLOCKER] >= 0)
		close(res[MF_UD_BLOCKER]);
	return ret;
}

/*
 * Uncached, so that a non-blocking buffered read of the range has to wait
 * for I/O.  One POSIX_FADV_DONTNEED is not enough on a loaded machine: a
 * folio still locked by the previous read's readahead is skipped and
 * becomes cached right after; so drop until mincore() sees none of the
 * range (bounded).
 */
static void mf_uncache(int fd, uint64_t off, uint32_t len)
{
	const uint64_t pg = 4096;
	uint64_t start = off & ~(pg - 1);
	size_t span = (size_t)((off + len - start + pg - 1) & ~(pg - 1));
	unsigned char *vec = malloc(span / pg);
	void *map = mmap(NULL, span, PROT_READ, MAP_SHARED, fd, (off_t)start);
	int tries;

	for (tries = 0; tries < 300; tries++) {
		size_t i;

		posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
		if (!vec || map == MAP_FAILED || mincore(map, span, vec))
			break;
		for (i = 0; i < span / pg && !(vec[i] & 1); i++)
			;
		if (i == span / pg)
			break;
		mf_sleep_ms(10);
	}
	if (map != MAP_FAILED)
		munmap(map, span);
	free(vec);
}

/*
 * A dirty page in the range makes an O_DIRECT read under IOCB_NOWAIT return
 * -EAGAIN (it would have to write the page back first), and an O_DIRECT
 * read cannot wait for a folio the way a buffered one does: so the lending
 * takes its loan at the first issue and goes to io-wq with it.  The bytes
 * written are those already there.
 */
static int mf_park_dirty(struct mf_instance *in, uint64_t off, uint32_t len)
{
	char page[4096];
	size_t n = len < sizeof(page) ? len : sizeof(page);

	if (pread(in->backing_fd, page, n, (off_t)off) != (ssize_t)n ||
	    pwrite(in->loop_rw_fd, page, n, (off_t)off) != (ssize_t)n)
		return -EIO;
	return 0;
}

/*
 * Lend [@lend_off, +@len) of request @unique into a READ_SPLICE_BUF from the
 * loop device at @file_off that stays queued in io-wq, loan taken, until
 * mf_park_unblock().  Returns 0 when parked; else the lending did not stay
 * out: its result (> 0: it completed at once, the bytes are placed).
 */
/*
 * The same for a parked WRITE_SPLICE_BUF: an O_DIRECT write under
 * IOCB_NOWAIT of a range with a dirty page returns -EAGAIN too.  The page
 * is written back with the bytes the device holds there.
 */
static int mf_park_dirty_own(struct mf_instance *in, uint64_t off)
{
	char page[4096];

	off &= ~(uint64_t)4095;
	if (pread(in->loop_rw_fd, page, sizeof(page), (off_t)off) != (ssize_t)sizeof(page) ||
	    pwrite(in->loop_rw_fd, page, sizeof(page), (off_t)off) != (ssize_t)sizeof(page))
		return -EIO;
	return 0;
}

/* Park @op (READ_ or WRITE_SPLICE_BUF) of the loop device: mf_park_try(). */
static int mf_park_try_op(struct mf_worker *w, int op, uint64_t unique, uint32_t lend_off,
			  uint64_t file_off, uint32_t len, unsigned int nr_fillers)
{
	struct mf_instance *in = w->in;
	bool write = op == FUSEZC_IORING_OP_WRITE_SPLICE_BUF;
	struct io_uring_sqe *sqe;
	struct io_uring_cqe *cqe;
	int res[MF_UD_NR] = { 0 };
	unsigned int i;
	int ret = mf_park_init(w);

	if (ret)
		return ret;
	ret = write ? mf_park_dirty_own(in, file_off) : mf_park_dirty(in, file_off, len);
	if (ret)
		return ret;
	sqe = io_uring_get_sqe(&w->park);
	io_uring_prep_openat(sqe, AT_FDCWD, w->fifo, O_RDONLY | O_CLOEXEC, 0);
	sqe->flags |= IOSQE_ASYNC;
	sqe->user_data = MF_UD_BLOCKER;
	for (i = 0; i < nr_fillers; i++) {
		sqe = io_uring_get_sqe(&w->park);
		if (!sqe) {
			io_uring_submit(&w->park);
			sqe = io_uring_get_sqe(&w->park);
		}
		io_uring_prep_nop(sqe);
		sqe->flags |= IOSQE_ASYNC;
		sqe->user_data = MF_UD_FILLER;
		w->fillers_out++;
	}
	if (nr_fillers) {
		ret = io_uring_submit(&w->park);
		if (ret < 0)
			return ret;
	}
	sqe = io_uring_get_sqe(&w->park);
	io_uring_prep_rw(op, sqe, write ? in->loop_dio_rw_fd : in->loop_dio_fd, NULL,
			 len, file_off);
	sqe->splice_fd_in = in->fuse_fd;
	sqe->splice_off_in = fusezc_lend_pos(unique, lend_off);
	sqe->user_data = MF_UD_PARKED;
	if (w->auto_lend)
		sqe->ioprio = write ? FUSEZC_SPLICE_BUF_COMPLETE : MF_READ_COMPLETE;
	ret = io_uring_submit(&w->park);
	if (ret != (nr_fillers ? 1 : 2))
		return ret < 0 ? ret : -EIO;
	if (io_uring_peek_cqe(&w->park, &cqe) == 0 && cqe->user_data != MF_UD_FILLER) {
		/* the lending finished (or failed) inline: nothing is parked */
		ret = mf_park_unblock(w, 1u << MF_UD_PARKED, res);
		mf_park_drain_fillers(w);
		return ret ? ret : res[MF_UD_PARKED] ? res[MF_UD_PARKED] : -ENODATA;
	}
	return 0;
}

static int mf_park_try(struct mf_worker *w, uint64_t unique, uint32_t lend_off,
		       uint64_t file_off, uint32_t len, unsigned int nr_fillers)
{
	return mf_park_try_op(w, FUSEZC_IORING_OP_READ_SPLICE_BUF, unique, lend_off,
			      file_off, len, nr_fillers);
}

/*
 * Park a lending; 0 when parked.  Should the dirty page be written back
 * before the submission, the lending completes inline; the request is
 * still the server's (unless the kernel answered it), so lend it again, a
 * few times.  A range O_DIRECT cannot read (the file's unaligned tail) is
 * lent at once instead: its result, as for a park that did not hold.
 */
static int mf_park_lend_behind(struct mf_worker *w, uint64_t unique, uint32_t lend_off,
			       uint64_t file_off, uint32_t len, unsigned int nr_fillers)
{
	struct mf_instance *in = w->in;
	int ret, attempt;

	if (!mf_dio_aligned(file_off, len))
		return mf_lend_into(w, unique, lend_off, in->loop_fd, file_off, len);
	for (attempt = 0; attempt < 10; attempt++) {
		ret = mf_park_try(w, unique, lend_off, file_off, len, nr_fillers);
		if (ret <= 0 || w->lender_completed)
			break;
	}
	if (ret) {
		__sync_fetch_and_add(&in->sh->park_failures, 1);
		in->sh->park_error = ret;
		return ret;
	}
	__sync_fetch_and_add(&in->sh->parks, 1);
	/* the contract: the borrow happens at that first, non-blocking issue */
	if (mf_lent_pages(in) == 0)
		__sync_fetch_and_add(&in->sh->parked_unlent, 1);
	return 0;
}

static int mf_park_lend(struct mf_worker *w, uint64_t unique, uint32_t lend_off,
			uint64_t file_off, uint32_t len)
{
	return mf_park_lend_behind(w, unique, lend_off, file_off, len, 0);
}

/* Let a parked lending run; returns its result. */
static int mf_park_finish(struct mf_worker *w)
{
	int res[MF_UD_NR] = { 0 };
	int ret = mf_park_unblock(w, 1u << MF_UD_PARKED, res);

	return ret ? ret : res[MF_UD_PARKED];
}

/* Wait (bounded) until @flag is set; false on timeout. */
static bool mf_wait_flag(volatile int *flag, unsigned int seconds)
{
	struct timespec t0, t;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (!*flag) {
		clock_gettime(CLOCK_MONOTONIC, &t);
		if (t.tv_sec - t0.tv_sec >= seconds)
			return false;
		mf_sleep_ms(1);
	}
	return true;
}

static void mf_probe(struct mf_worker *w, const char *name, int expected, int got)
{
	struct mf_shared *sh = w->in->sh;
	int i = sh->nr_probes;

	if (i >= MF_MAX_PROBES)
		return;
	snprintf(sh->probes[i].name, sizeof(sh->probes[i].name), "%s", name);
	sh->probes[i].expected = expected;
	sh->probes[i].got = got;
	sh->nr_probes = i + 1;
}

static int mf_probe_sqe(struct mf_worker *w, int op, int fd, uint64_t off,
			unsigned int len, int lender, uint64_t pos,
			void (*tweak)(struct io_uring_sqe *))
{
	struct io_uring_sqe *sqe = mf_prep_splice_buf(w, op, fd, off, len, lender, pos);

	if (tweak)
		tweak(sqe);
	return mf_ring_run(w, sqe);
}

static void tweak_ioprio(struct io_uring_sqe *s) { s->ioprio = 4; /* not a flag */ }
static void tweak_eof(struct io_uring_sqe *s) { s->ioprio = FUSEZC_SPLICE_BUF_EOF; }
static void tweak_buf_index(struct io_uring_sqe *s) { s->buf_index = 1; }
static void tweak_addr3(struct io_uring_sqe *s) { s->addr3 = 1; }
static void tweak_splice_move(struct io_uring_sqe *s) { s->splice_flags = 1; /* SPLICE_F_MOVE */ }
static void tweak_fixed_bad(struct io_uring_sqe *s)
{
	s->splice_flags = FUSEZC_SPLICE_F_FD_IN_FIXED;
	s->splice_fd_in = 1000;
}

/*
 * Identity and direction probes on a live FUSE_READ.  None may lend: the
 * request is served correctly afterwards and the reader checks its bytes.
 */
static void mf_run_probes(struct mf_worker *w, uint64_t unique, uint64_t off,
			  uint32_t size, uint64_t prev_unique)
{
	struct mf_instance *in = w->in;
	const int rd = FUSEZC_IORING_OP_READ_SPLICE_BUF;
	uint64_t pos = fusezc_lend_pos(unique, 0);
	char tmpl[] = "/tmp/mf-probe-XXXXXX";
	char before[4096], after[4096];
	int plain, pfd[2], ret;

	mf_probe(w, "not in flight", -ENOENT,
		 mf_probe_sqe(w, rd, in->backing_fd, off, size, in->fuse_fd,
			      fusezc_lend_pos(unique + 2000, 0), NULL));
	if (prev_unique)
		mf_probe(w, "stale (answered) request", -ENOENT,
			 mf_probe_sqe(w, rd, in->backing_fd, off, size, in->fuse_fd,
				      fusezc_lend_pos(prev_unique, 0), NULL));
	mf_probe(w, "offset past the request", -EINVAL,
		 mf_probe_sqe(w, rd, in->backing_fd, off, 4096, in->fuse_fd,
			      fusezc_lend_pos(unique, size), NULL));
	/* not a lender (v1 said EBADF: v2 refuses every non-lender alike) */
	mf_probe(w, "io_uring fd as lender", -EOPNOTSUPP,
		 mf_probe_sqe(w, rd, in->backing_fd, off, size, w->ring.ring_fd,
			      pos, NULL));
	/* a borrower that reads a read's pages would see what they held before */
	mf_probe(w, "WRITE_SPLICE_BUF on a FUSE_READ", -EOPNOTSUPP,
		 mf_probe_sqe(w, FUSEZC_IORING_OP_WRITE_SPLICE_BUF, in->backing_fd,
			      off, size, in->fuse_fd, pos, NULL));
	/* a short write is never the end of the data */
	mf_probe(w, "WRITE_SPLICE_BUF with IORING_SPLICE_BUF_EOF", -EINVAL,
		 mf_probe_sqe(w, FUSEZC_IORING_OP_WRITE_SPLICE_BUF, in->backing_fd,
			      off, size, in->fuse_fd, pos, tweak_eof));
	mf_probe(w, "ioprio with an unknown flag", -EINVAL,
		 mf_probe_sqe(w, rd, in->backing_fd, off, size, in->fuse_fd, pos,
			      tweak_ioprio));
	mf_probe(w, "buf_index set", -EINVAL,
		 mf_probe_sqe(w, rd, in->backing_fd, off, size, in->fuse_fd, pos,
			      tweak_buf_index));
	mf_probe(w, "addr3 set", -EINVAL,
		 mf_probe_sqe(w, rd, in->backing_fd, off, size, in->fuse_fd, pos,
			      tweak_addr3));
	mf_probe(w, "splice flag other than FD_IN_FIXED", -EINVAL,
		 mf_probe_sqe(w, rd, in->backing_fd, off, size, in->fuse_fd, pos,
			      tweak_splice_move));
	mf_probe(w, "bad fixed lender index", -EBADF,
		 mf_probe_sqe(w, rd, in->backing_fd, off, size, in->fuse_fd, pos,
			      tweak_fixed_bad));
	mf_probe(w, "zero length", -EINVAL,
		 mf_probe_sqe(w, rd, in->backing_fd, off, 0, in->fuse_fd, pos, NULL));
	mf_probe(w, "longer than 256 pages", -EINVAL,
		 mf_probe_sqe(w, rd, in->backing_fd, off, (256 << 12) + 4096,
			      in->fuse_fd, pos, NULL));

	if (pipe(pfd) == 0) {
		mf_probe(w, "pipe as the I/O file", -EINVAL,
			 mf_probe_sqe(w, rd, pfd[0], 0, size, in->fuse_fd, pos, NULL));
		close(pfd[0]);
		close(pfd[1]);
	}

	/* a lender that does not lend: page cache pages of a plain file */
	plain = mkstemp(tmpl);
	if (plain >= 0) {
		memset(before, 'P', sizeof(before));
		if (pwrite(plain, before, sizeof(before), 0) == (ssize_t)sizeof(before)) {
			mf_probe(w, "regular file as lender", -EOPNOTSUPP,
				 mf_probe_sqe(w, rd, in->backing_fd, off, 4096, plain,
					      0, NULL));
			ret = pread(plain, after, sizeof(after), 0);
			mf_probe(w, "non-lender's pages untouched", 0,
				 ret == (int)sizeof(after) &&
				 !memcmp(before, after, sizeof(after)) ? 0 : -EIO);
		}
		close(plain);
		unlink(tmpl);
	}

	if (in->peer && in->peer->fuse_fd >= 0)
		mf_probe(w, "request of another connection", -ENOENT,
			 mf_probe_sqe(w, rd, in->backing_fd, off, size,
				      in->peer->fuse_fd, pos, NULL));
}

/* Lendings reaching past the request's data: none may lend. */
static void mf_run_range_probes(struct mf_worker *w, uint64_t unique, uint64_t off,
				uint32_t size)
{
	struct mf_instance *in = w->in;
	const int rd = FUSEZC_IORING_OP_READ_SPLICE_BUF;

	mf_probe(w, "length past the request's end", -EINVAL,
		 mf_probe_sqe(w, rd, in->backing_fd, off, size + 4096, in->fuse_fd,
			      fusezc_lend_pos(unique, 0), NULL));
	mf_probe(w, "from mid-request past its end", -EINVAL,
		 mf_probe_sqe(w, rd, in->backing_fd, off + 4096, size, in->fuse_fd,
			      fusezc_lend_pos(unique, 4096), NULL));
	mf_probe(w, "one byte past the end", -EINVAL,
		 mf_probe_sqe(w, rd, in->backing_fd, off + size - 1, 2, in->fuse_fd,
			      fusezc_lend_pos(unique, size - 1), NULL));
}

/*
 * I/O files on a FUSE or stacking file system: the lending would make this
 * request wait for I/O another server controls.
 */
static void mf_run_exdev_probes(struct mf_worker *w, uint64_t unique, uint64_t off,
				uint32_t size)
{
	struct mf_instance *in = w->in;
	const struct mf_config *cfg = in->cfg;
	const int rd = FUSEZC_IORING_OP_READ_SPLICE_BUF;
	char path[300], name[48];
	int i, fd;

	for (i = 0; i < MF_MAX_EXDEV && cfg->exdev_paths[i]; i++) {
		const char *p = cfg->exdev_paths[i], *base = strrchr(p, '/');

		while (base && base > p && base[-1] != '/')
			base--;		/* the last two components */
		snprintf(path, sizeof(path), "%s", p);
		snprintf(name, sizeof(name), "I/O file %.36s", base ? base : p);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			mf_probe(w, name, -EXDEV, -errno);
			continue;
		}
		mf_probe(w, name, -EXDEV,
			 mf_probe_sqe(w, rd, fd, off, size, in->fuse_fd,
				      fusezc_lend_pos(unique, 0), NULL));
		close(fd);
	}
}

struct mf_spinner {
	struct mf_worker *w;
	uint64_t unique;
	size_t len;		/* of the copy reply, in w->data */
	int cqe_res, reply_errno;
	bool ebusy;
	long long lent;
};

/*
 * Watch the park ring's CQ without entering the kernel, and answer the
 * request by copy the moment the cancelled lending's CQE is visible: its
 * loan must be back by then.
 */
static void *mf_cancel_spinner(void *arg)
{
	struct mf_spinner *s = arg;
	struct io_uring *ring = &s->w->park;
	struct timespec t0, t;
	int ret, tries;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		unsigned int head = *ring->cq.khead;
		unsigned int tail = io_uring_smp_load_acquire(ring->cq.ktail);

		for (; head != tail; head++) {
			struct io_uring_cqe *cqe = &ring->cq.cqes[head & ring->cq.ring_mask];

			if (cqe->user_data == MF_UD_PARKED) {
				s->cqe_res = cqe->res;
				goto seen;
			}
		}
		clock_gettime(CLOCK_MONOTONIC, &t);
		if (t.tv_sec - t0.tv_sec > 20) {
			s->cqe_res = -ETIMEDOUT;
			return NULL;
		}
	}
seen:
	ret = mf_reply(s->w->in, s->unique, 0, s->w->data, s->len);
	s->ebusy = ret == -EBUSY;
	/* a kernel that refused: answer once the loan is back, bounded */
	for (tries = 0; ret == -EBUSY && tries < 10000; tries++) {
		mf_sleep_ms(1);
		ret = mf_reply(s->w->in, s->unique, 0, s->w->data, s->len);
	}
	s->reply_errno = -ret;
	s->lent = mf_lent_pages(s->w->in);
	return NULL;
}

/* io-wq workers ("iou-wrk-<tid>" threads) of process @pid, of its thread
 * @owner only if > 0; -errno if @pid's tasks cannot be read. */
int mf_iowq_workers(pid_t pid, pid_t owner)
{
	char dir[64], want[32];
	struct dirent *e;
	DIR *d;
	int n = 0;

	snprintf(dir, sizeof(dir), "/proc/%d/task", (int)pid);
	snprintf(want, sizeof(want), "iou-wrk-%d\n", (int)owner);
	d = opendir(dir);
	if (!d)
		return -errno;
	while ((e = readdir(d))) {
		char path[330], comm[32] = "";
		FILE *f;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s/comm", dir, e->d_name);
		f = fopen(path, "re");
		if (!f)
			continue;
		if (fgets(comm, sizeof(comm), f) && !strncmp(comm, "iou-wrk-", 8) &&
		    (owner <= 0 || !strcmp(comm, want)))
			n++;
		fclose(f);
	}
	closedir(d);
	return n;
}

/*
 * MF_READ_ASYNC: lend the request's bytes from the loop device, every other
 * aligned read O_DIRECT, the rest buffered from uncached data, on a ring
 * that posts nothing before it is waited on.  Returns cqe->res; 0 with
 * nothing lent when the request asks for no data inside the file.
 */
static int mf_async_lend(struct mf_worker *w, struct fuse_in_header *h,
			 struct fuse_read_in *ri)
{
	struct io_uring_params p = { .flags = IORING_SETUP_SINGLE_ISSUER |
					      IORING_SETUP_DEFER_TASKRUN };
	struct __kernel_timespec ts = { .tv_sec = 60 };
	struct mf_instance *in = w->in;
	struct mf_shared *sh = in->sh;
	struct io_uring_sqe *sqe;
	struct io_uring_cqe *cqe;
	uint32_t len;
	bool direct, in_submit;
	int ret, ret2, kind, fd;

	len = mf_read_avail(in, ri);
	if (!len)
		return 0;
	if (!w->aring_ready) {
		ret = io_uring_queue_init_params(8, &w->aring, &p);
		if (ret < 0)
			goto fail;
		w->aring_ready = true;
	}
	direct = mf_dio_aligned(ri->offset, len) && len <= in->loop_dio_max &&
		 (sh->async_lends[0] <= sh->async_lends[1]);
	kind = direct ? 0 : 1;
	fd = direct ? in->loop_dio_fd : in->loop_fd;
	if (!direct)
		mf_uncache(in->loop_fd, ri->offset, len);
	sqe = io_uring_get_sqe(&w->aring);
	io_uring_prep_rw(FUSEZC_IORING_OP_READ_SPLICE_BUF, sqe, fd, NULL, len, ri->offset);
	sqe->splice_fd_in = in->fuse_fd;
	sqe->splice_off_in = fusezc_lend_pos(h->unique, 0);
	if (w->auto_lend)
		sqe->ioprio = MF_READ_COMPLETE;
	ret = io_uring_submit(&w->aring);
	if (ret != 1) {
		ret = ret < 0 ? ret : -EIO;
		goto fail;
	}
	in_submit = io_uring_peek_cqe(&w->aring, &cqe) == 0;
	ret = io_uring_wait_cqe_timeout(&w->aring, &cqe, &ts);
	if (ret < 0)
		goto fail;
	ret = cqe->res;
	if (cqe->flags & FUSEZC_CQE_F_LENDER_COMPLETED)
		w->lender_completed = true;
	io_uring_cqe_seen(&w->aring, cqe);
	__sync_fetch_and_add(&sh->async_lends[kind], 1);
	if (in_submit)
		__sync_fetch_and_add(&sh->async_in_submit[kind], 1);
	ret2 = mf_iowq_workers(getpid(), 0);
	if (ret2) {
		if (!__sync_fetch_and_add(&sh->async_iowq, 1))
			sh->async_iowq_kind = kind;
		sh->async_iowq_workers = ret2;
	}
	if (ret < 0)
		goto fail;
	return ret;
fail:
	__sync_fetch_and_add(&sh->async_failed, 1);
	sh->async_error = ret;
	return ret;
}

/* The kernel answered a read that the contract leaves to the server. */
static void mf_auto_forbidden(struct mf_shared *sh, const char *what)
{
	__sync_fetch_and_add(&sh->auto_forbidden, 1);
	snprintf(sh->auto_forbidden_what, sizeof(sh->auto_forbidden_what), "%s", what);
}

/* Park a loan, cancel it with IORING_OP_ASYNC_CANCEL, reply on its CQE. */
static void mf_cancel_parked(struct mf_worker *w, struct fuse_in_header *h,
			     struct fuse_read_in *ri)
{
	struct mf_instance *in = w->in;
	struct mf_shared *sh = in->sh;
	struct mf_spinner s = { .w = w, .unique = h->unique };
	int res[MF_UD_NR] = { 0 };
	struct io_uring_sqe *sqe;
	pthread_t tid;
	ssize_t n;
	int ret;

	/*
	 * The fillers are cancelled in the same submission, just before the
	 * lending, so their completions share its task-work batch: all their
	 * CQEs become visible together, and a kernel that returns the loan
	 * only when it frees the request (after freeing the fillers) leaves
	 * the spinner a window of 1024 frees to see the CQE first.
	 */
	ret = mf_park_lend_behind(w, h->unique, 0, ri->offset, ri->size, MF_PARK_FILLERS);
	if (ret) {
		/* not parked: nothing to cancel; answer correctly */
		if (ret < 0 || mf_reply_zc(in, h->unique, ret) < 0)
			mf_reply_copy(w, h->unique, ri->offset, ri->size);
		return;
	}
	n = pread(in->backing_fd, w->data, ri->size, ri->offset);
	s.len = n > 0 ? n : 0;
	if (pthread_create(&tid, NULL, mf_cancel_spinner, &s)) {
		mf_park_finish(w);
		mf_park_drain_fillers(w);
		mf_reply_copy(w, h->unique, ri->offset, ri->size);
		return;
	}
	sqe = io_uring_get_sqe(&w->park);
	io_uring_prep_cancel64(sqe, MF_UD_FILLER, IORING_ASYNC_CANCEL_ALL);
	sqe->user_data = MF_UD_FILLER_CANCEL;
	sqe = io_uring_get_sqe(&w->park);
	io_uring_prep_cancel64(sqe, MF_UD_PARKED, 0);
	sqe->user_data = MF_UD_CANCEL;
	io_uring_submit(&w->park);
	pthread_join(tid, NULL);
	mf_park_unblock(w, 1u << MF_UD_PARKED | 1u << MF_UD_CANCEL, res);
	mf_park_drain_fillers(w);
	if (w->lender_completed)
		mf_auto_forbidden(sh, "a cancelled lending");

	__sync_fetch_and_add(&sh->cancels, 1);
	sh->cancel_last_res = s.cqe_res;
	if (s.cqe_res != -ECANCELED)
		__sync_fetch_and_add(&sh->cancel_bad_res, 1);
	if (s.ebusy)
		__sync_fetch_and_add(&sh->cancel_ebusy, 1);
	if (s.lent > sh->lent_after_cqe)
		sh->lent_after_cqe = s.lent;
	sh->reply_errno = s.reply_errno;
	if (s.cqe_res == -ETIMEDOUT)	/* the spinner gave up: still answer */
		mf_reply_copy(w, h->unique, ri->offset, ri->size);
}

/* ------------------------------------------------ MF_READ_RANDOM (stress) */

static uint32_t mf_rand(uint64_t *state)
{
	*state ^= *state << 13;
	*state ^= *state >> 7;
	*state ^= *state << 17;
	return (uint32_t)(*state >> 32);
}

static void mf_unexpected(struct mf_stress *st, const char *what, int got)
{
	__sync_fetch_and_add(&st->unexpected, 1);
	snprintf(st->last_unexpected, sizeof(st->last_unexpected), "%s: got %d", what, got);
}

struct mf_chunk {
	uint32_t off, len;
	int res;
};

static int mf_chunk_cmp(const void *a, const void *b)
{
	const struct mf_chunk *x = a, *y = b;

	return x->off < y->off ? -1 : x->off > y->off;
}

/*
 * Answer a read in a random way a server may legally choose, and check
 * every kernel answer against the v2 contract: lend in 1-4 chunks of any
 * size, all in flight at once (they complete in any order), sometimes
 * cancel them, sometimes reply while they are still out (EBUSY, or taken
 * once they are done), over-claim first (EINVAL), reply twice (ENOENT),
 * reply zero copy without lending (EINVAL), lend from a file that is not a
 * lender (EOPNOTSUPP), send FUSE_NOTIFY_RESEND.  The reader checks the
 * bytes; anything the contract forbids counts in st->unexpected.
 */
static void mf_random_read(struct mf_worker *w, struct fuse_in_header *h,
			   struct fuse_read_in *ri)
{
	struct mf_instance *in = w->in;
	struct mf_stress *st = &in->sh->stress;
	uint32_t avail = mf_read_avail(in, ri);
	uint32_t dice = mf_rand(&w->rnd) % 100;
	struct mf_chunk ch[4];
	int order[4], n, i, ret, pending, io_fd, io_src;
	bool cancel, early, replied = false, completed = false;
	/* half of the reads let the kernel answer when the last chunk is back */
	bool autoc = in->cfg->auto_complete || mf_rand(&w->rnd) % 2;
	uint32_t placed;

	__sync_fetch_and_add(&st->reads, 1);
	if (dice < 2) {
		struct io_uring_sqe *sqe = mf_prep_splice_buf(w,
				FUSEZC_IORING_OP_READ_SPLICE_BUF, in->backing_fd,
				ri->offset, 4096, in->backing_fd,
				fusezc_lend_pos(h->unique, 0));

		ret = mf_ring_run(w, sqe);
		if (ret == -EOPNOTSUPP)
			__sync_fetch_and_add(&st->nonlenders_refused, 1);
		else
			mf_unexpected(st, "regular file as lender", ret);
	} else if (dice < 4) {
		struct fuse_out_header oh = { .len = sizeof(oh), .error = FUSE_NOTIFY_RESEND };

		if (write(in->fuse_fd, &oh, sizeof(oh)) == sizeof(oh))
			__sync_fetch_and_add(&st->resends, 1);
	}

	if (!avail || dice >= 85) {
		ret = mf_reply_copy(w, h->unique, ri->offset, ri->size);
		goto copied;
	}
	if (dice >= 80) {
		ret = mf_reply_zc(in, h->unique, avail);
		if (ret == -EINVAL)
			__sync_fetch_and_add(&st->unlent_refused, 1);
		else if (ret != -ENOENT)
			mf_unexpected(st, "zero-copy reply without a lending", ret);
		ret = mf_reply_copy(w, h->unique, ri->offset, ri->size);
		goto copied;
	}

	/* 1-4 chunks with random (byte) boundaries, lent in random order */
	n = 1 + mf_rand(&w->rnd) % 4;
	if ((uint32_t)n > avail)
		n = 1;
	for (i = 0; i < n; i++) {
		ch[i].off = i ? 1 + mf_rand(&w->rnd) % (avail - 1) : 0;
		order[i] = i;
	}
	qsort(ch, n, sizeof(ch[0]), mf_chunk_cmp);
	for (i = 0; i < n; i++) {
		ch[i].len = (i + 1 < n ? ch[i + 1].off : avail) - ch[i].off;
		ch[i].res = -EINPROGRESS;
	}
	for (i = n - 1; i > 0; i--) {
		int j = mf_rand(&w->rnd) % (i + 1), t = order[i];

		order[i] = order[j];
		order[j] = t;
	}
	cancel = dice >= 70;
	early = dice >= 60 && dice < 70;
	/*
	 * The I/O file: the backing file (no FMODE_NOWAIT on tmpfs: io-wq),
	 * or the loop device over a copy of it, whose reads are asynchronous:
	 * buffered after dropping the range from the cache (a folio wait), or
	 * O_DIRECT when there is one chunk it can read (a bio in flight).
	 */
	io_fd = in->backing_fd;
	io_src = in->loop_fd >= 0 ? mf_rand(&w->rnd) % 3 : 0;
	if (io_src) {
		io_fd = in->loop_fd;
		if (io_src == 2 && n == 1 && mf_dio_aligned(ri->offset, avail) &&
		    avail <= in->loop_dio_max) {
			io_fd = in->loop_dio_fd;
			__sync_fetch_and_add(&st->loop_dio_chunks, 1);
		} else {
			posix_fadvise(in->loop_fd, (off_t)ri->offset, avail, POSIX_FADV_DONTNEED);
		}
		__sync_fetch_and_add(&st->loop_chunks, n);
	}
	pending = 0;
	for (i = 0; i < n; i++) {
		struct mf_chunk *c = &ch[order[i]];
		struct io_uring_sqe *sqe;

		if (!c->len) {
			c->res = 0;
			continue;
		}
		sqe = mf_prep_splice_buf(w, FUSEZC_IORING_OP_READ_SPLICE_BUF,
					 io_fd, ri->offset + c->off, c->len,
					 in->fuse_fd, fusezc_lend_pos(h->unique, c->off));
		io_uring_sqe_set_data64(sqe, order[i]);
		if (autoc)
			sqe->ioprio = MF_READ_COMPLETE;
		pending++;
	}
	__sync_fetch_and_add(&st->chunks, pending);
	if (cancel) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);

		io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY);
		io_uring_sqe_set_data64(sqe, 100);
		pending++;
		__sync_fetch_and_add(&st->cancels, 1);
	}
	ret = io_uring_submit(&w->ring);
	if (ret < 0) {
		mf_unexpected(st, "io_uring_submit", ret);
		return;	/* nothing more can be trusted on this ring */
	}
	if (early) {
		ret = mf_reply_zc(in, h->unique, avail);
		if (!ret) {
			replied = true;
			__sync_fetch_and_add(&st->early_accepted, 1);
		} else if (ret == -EBUSY || ret == -EINVAL) {
			/* still lent, or already back but a chunk failed */
			__sync_fetch_and_add(&st->early_busy, 1);
		} else if (ret != -ENOENT) {
			mf_unexpected(st, "reply while lending", ret);
		}
	}
	while (pending) {
		struct io_uring_cqe *cqe;
		uint64_t ud;

		ret = io_uring_wait_cqe(&w->ring, &cqe);
		if (ret == -EINTR)
			continue;
		if (ret < 0) {
			mf_unexpected(st, "io_uring_wait_cqe", ret);
			return;
		}
		ud = io_uring_cqe_get_data64(cqe);
		if (ud < 4)
			ch[ud].res = cqe->res;
		if (ud < 4 && (cqe->flags & FUSEZC_CQE_F_LENDER_COMPLETED))
			completed = true;
		io_uring_cqe_seen(&w->ring, cqe);
		pending--;
	}

	placed = 0;
	for (i = 0; i < n; i++) {
		if (ch[i].res != (int)ch[i].len) {
			__sync_fetch_and_add(&st->chunks_failed, 1);
			break;
		}
		placed += ch[i].len;
	}
	if (completed) {
		__sync_fetch_and_add(&st->auto_completed, 1);
		if (!autoc || replied || placed != avail)
			mf_unexpected(st, "the kernel answered a read it had to leave", placed);
		/* answered: a reply of ours must find it gone */
		ret = mf_reply_zc(in, h->unique, avail);
		if (ret != -ENOENT)
			mf_unexpected(st, "reply after the kernel answered", ret);
		return;
	}
	if (replied) {
		/* taken: so every byte claimed had been placed */
		if (placed != avail)
			mf_unexpected(st, "early reply taken with a chunk unplaced", placed);
		__sync_fetch_and_add(&st->zc_replies, 1);
		return;
	}
	if (placed != avail) {
		ret = mf_reply_copy(w, h->unique, ri->offset, ri->size);
		goto copied;
	}
	if (dice >= 50 && dice < 60) {
		ret = mf_reply_zc(in, h->unique, avail + 1 + mf_rand(&w->rnd) % 8192);
		if (ret == -EINVAL)
			__sync_fetch_and_add(&st->overclaims_refused, 1);
		else if (ret != -ENOENT)
			mf_unexpected(st, "over-claiming reply", ret);
	}
	ret = mf_reply_zc(in, h->unique, avail);
	if (ret == -ENOENT) {
		__sync_fetch_and_add(&st->replies_gone, 1);	/* resent or aborted */
		return;
	}
	if (ret) {
		/* after every CQE no loan is out: EBUSY here is a broken contract */
		mf_unexpected(st, "zero-copy reply after all completions", ret);
		mf_reply_copy(w, h->unique, ri->offset, ri->size);
		return;
	}
	__sync_fetch_and_add(&st->zc_replies, 1);
	if (dice >= 40 && dice < 50) {
		ret = mf_reply_zc(in, h->unique, avail);
		if (ret == -ENOENT)
			__sync_fetch_and_add(&st->duplicates_refused, 1);
		else
			mf_unexpected(st, "duplicate reply", ret);
	}
	return;
copied:
	if (!ret)
		__sync_fetch_and_add(&st->copy_replies, 1);
	else if (ret == -ENOENT)
		__sync_fetch_and_add(&st->replies_gone, 1);
	else
		mf_unexpected(st, "copy reply", ret);
}

/*
 * MF_READ_FAILOVER: daemon A, a child sharing this /dev/fuse file, lends
 * the read to a READ_SPLICE_BUF parked in its own ring's io-wq; this
 * daemon (B) sends FUSE_NOTIFY_RESEND, then A is killed, its loan with it.
 * The read must come again (FUSE_UNIQUE_RESEND, lent again in
 * mf_serve_resent()); nothing here answers it.
 */
static void mf_failover_read(struct mf_worker *w, struct fuse_in_header *h,
			     const struct fuse_read_in *ri, uint32_t len)
{
	struct fuse_out_header oh = { .len = sizeof(oh), .error = FUSE_NOTIFY_RESEND };
	struct mf_instance *in = w->in;
	struct mf_shared *sh = in->sh;
	struct timespec t;
	char fifo[64];
	pid_t pid;
	int ret;

	sh->failover_parked = 0;
	pid = fork();
	if (pid < 0) {
		sh->park_error = -errno;
		mf_reply_copy(w, h->unique, ri->offset, ri->size);
		return;
	}
	if (!pid) {
		/* A: a park ring of its own (the parent's rings are shared memory) */
		w->park_ready = false;
		w->fillers_out = 0;
		ret = mf_park_lend(w, h->unique, 0, ri->offset, len);
		if (ret) {
			sh->park_error = ret;
			sh->failover_parked = -1;
			_exit(1);
		}
		sh->failover_parked = 1;
		for (;;)
			pause();
	}
	snprintf(fifo, sizeof(fifo), "/tmp/minifuse-park-%d-%d", pid, pid);
	if (!mf_wait_flag(&sh->failover_parked, 30) || sh->failover_parked < 0) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		unlink(fifo);
		__sync_fetch_and_add(&sh->park_failures, 1);
		mf_reply_copy(w, h->unique, ri->offset, ri->size);
		return;
	}
	sh->notify_errno = write(in->fuse_fd, &oh, sizeof(oh)) < 0 ? errno : 0;
	clock_gettime(CLOCK_MONOTONIC, &t);
	sh->failover_kill_time = t.tv_sec + t.tv_nsec / 1e9;
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	unlink(fifo);
	__sync_fetch_and_add(&sh->failover_kills, 1);
}

/*
 * MF_READ_FLOOD: the same 1-byte range (offset 1) of the read lent
 * flood_n times, in batches; then the read is held unanswered until the
 * test has looked (release), and answered by copy.
 */
static void mf_flood_read(struct mf_worker *w, struct fuse_in_header *h,
			  const struct fuse_read_in *ri)
{
	struct mf_instance *in = w->in;
	struct mf_shared *sh = in->sh;
	uint64_t done = 0, n = sh->flood_n;
	/* a block device has FMODE_NOWAIT: the lendings are issued inline */
	int fd = in->loop_fd >= 0 ? in->loop_fd : in->backing_fd;

	while (done < n) {
		unsigned int batch = n - done < 8 ? (unsigned int)(n - done) : 8, i;
		struct io_uring_cqe *cqe;

		for (i = 0; i < batch; i++)
			mf_prep_splice_buf(w, FUSEZC_IORING_OP_READ_SPLICE_BUF, fd,
					   ri->offset + 1, 1, in->fuse_fd,
					   fusezc_lend_pos(h->unique, 1));
		if (io_uring_submit_and_wait(&w->ring, batch) < 0)
			break;
		for (i = 0; i < batch; i++) {
			if (io_uring_wait_cqe(&w->ring, &cqe))
				break;
			if (cqe->res == 1)
				__sync_fetch_and_add(&sh->flood_ok, 1);
			else if (cqe->res == -EEXIST)
				__sync_fetch_and_add(&sh->flood_eexist, 1);
			else {
				__sync_fetch_and_add(&sh->flood_other, 1);
				sh->flood_other_res = cqe->res;
			}
			io_uring_cqe_seen(&w->ring, cqe);
		}
		done += batch;
	}
	sh->flood_held = 1;
	mf_wait_flag(&sh->release, 300);
	mf_reply_copy(w, h->unique, ri->offset, ri->size);
}

/*
 * MF_READ_MIXED: a server mapping one FUSE file onto two backing files
 * (stripes): [0, half) from the backing file asking the kernel to answer,
 * [half, size) from the stripe file (shorter) with cfg->stripe_ioprio.
 * Unless the kernel answered, the server does.
 */
static void mf_mixed_read(struct mf_worker *w, struct fuse_in_header *h,
			  const struct fuse_read_in *ri)
{
	struct mf_instance *in = w->in;
	struct mf_shared *sh = in->sh;
	uint32_t half = ri->size / 2;
	int fd = open(in->cfg->stripe_path, O_RDONLY | O_CLOEXEC);

	__sync_fetch_and_add(&sh->mixed_reads, 1);
	w->auto_lend = true;
	w->lender_completed = false;
	sh->mixed_res[0] = mf_lend_into(w, h->unique, 0, in->backing_fd, ri->offset, half);
	sh->mixed_completed[0] = w->lender_completed;
	sh->mixed_cqe_flags[0] = w->cqe_flags;
	w->auto_lend = false;
	w->lender_completed = false;
	w->cqe_flags = 0;
	w->next_ioprio = (int)in->cfg->stripe_ioprio;
	sh->mixed_res[1] = fd < 0 ? -errno :
			   mf_lend_into(w, h->unique, half, fd, 0, ri->size - half);
	w->next_ioprio = -1;
	sh->mixed_completed[1] = w->lender_completed;
	sh->mixed_cqe_flags[1] = w->cqe_flags;
	if (fd >= 0)
		close(fd);
	if (sh->mixed_res[0] != (int)half || sh->mixed_res[1] <= 0)
		__sync_fetch_and_add(&sh->mixed_failed, 1);
	else if ((uint32_t)sh->mixed_res[1] < ri->size - half)
		__sync_fetch_and_add(&sh->mixed_short, 1);
	if (sh->mixed_completed[0] || sh->mixed_completed[1]) {
		/* the kernel answered: a reply would get ENOENT */
		__sync_fetch_and_add(&sh->mixed_answered, 1);
		return;
	}
	sh->mixed_reply_errno = -mf_reply_copy(w, h->unique, ri->offset, ri->size);
	if (sh->mixed_reply_errno)
		__sync_fetch_and_add(&sh->mixed_refused, 1);
}

static void mf_do_read(struct mf_worker *w, struct fuse_in_header *h,
		       struct fuse_read_in *ri)
{
	struct mf_instance *in = w->in;
	struct mf_shared *sh = in->sh;
	enum mf_read_mode mode = in->copy_only ? MF_READ_COPY : sh->mode;
	static uint64_t prev_unique;
	struct io_uring_sqe *sqe;
	uint32_t half, len;
	int res, ret;

	__sync_fetch_and_add(&sh->reads, 1);
	w->lender_completed = false;
	/* LIE_MORE's lie would never be sent: the kernel answers first */
	w->auto_lend = in->cfg->auto_complete && mode != MF_READ_LIE_MORE;
	if (mode == MF_READ_SLOW_COPY) {
		mf_sleep_ms(sh->slow_ms);
		mode = MF_READ_COPY;
	}
	/* MF_READ_NO_LEND lends nothing: its bit 62 reply goes out regardless */
	if (mode == MF_READ_COPY || (!sh->zc_accepted && mode != MF_READ_NO_LEND)) {
		mf_reply_copy(w, h->unique, ri->offset, ri->size);
		return;
	}
	if (mode == MF_READ_RANDOM) {
		mf_random_read(w, h, ri);
		return;
	}

	switch (mode) {
	case MF_READ_PROBE:
		/* from the second read on, so that a stale request exists */
		if (prev_unique && !__sync_lock_test_and_set(&sh->probes_done, 1))
			mf_run_probes(w, h->unique, ri->offset, ri->size, prev_unique);
		break;
	case MF_READ_PROBE_RANGE:
		if (!__sync_lock_test_and_set(&sh->probes_done, 1))
			mf_run_range_probes(w, h->unique, ri->offset, ri->size);
		break;
	case MF_READ_PROBE_EXDEV:
		if (!__sync_lock_test_and_set(&sh->probes_done, 1))
			mf_run_exdev_probes(w, h->unique, ri->offset, ri->size);
		mf_reply_copy(w, h->unique, ri->offset, ri->size);
		return;
	case MF_READ_OUT_OF_ORDER:
		half = (ri->size / 2) & ~4095u;
		if (!half)
			break;
		res = mf_lend_into(w, h->unique, half, in->backing_fd,
				   ri->offset + half, ri->size - half);
		sh->lend_order_res[0] = res;
		sh->lend_order_completed[0] = w->lender_completed;
		if (res >= 0) {
			ret = res;
			res = mf_lend_into(w, h->unique, 0, in->backing_fd,
					   ri->offset, half);
			sh->lend_order_res[1] = res;
			sh->lend_order_completed[1] = w->lender_completed;
			if (res == (int)half)
				res += ret;
			else if (res >= 0)
				res = -EIO;	/* short: answer by copy */
		}
		goto reply;
	case MF_READ_FLOOD:
		mf_flood_read(w, h, ri);
		return;
	case MF_READ_MIXED:
		mf_mixed_read(w, h, ri);
		return;
	case MF_READ_FAILOVER:
		len = mf_read_avail(in, ri);
		if (!len)
			mf_reply_copy(w, h->unique, ri->offset, ri->size);
		else
			mf_failover_read(w, h, ri, len);
		return;
	case MF_READ_PARKED:
	case MF_READ_PARK_CLOSE:
	case MF_READ_BUSY_REPLY:
	case MF_READ_INTERRUPT:
	case MF_READ_RESEND:
		len = mf_read_avail(in, ri);
		if (!len) {
			mf_reply_copy(w, h->unique, ri->offset, ri->size);
			return;
		}
		res = mf_park_lend(w, h->unique, 0, ri->offset, len);
		if (res)	/* not parked: its result, or a failure */
			goto reply;
		sh->parked = 1;
		if (mode == MF_READ_PARKED) {
			mf_sleep_ms(sh->slow_ms);
		} else if (mode == MF_READ_BUSY_REPLY) {
			ret = mf_reply_zc(in, h->unique, 0);
			if (ret < 0 && !sh->reply_errno)
				sh->reply_errno = -ret;
			ret = mf_reply(in, h->unique, 0, NULL, 0);
			if (ret < 0 && !sh->second_reply_errno)
				sh->second_reply_errno = -ret;
		} else if (mode == MF_READ_INTERRUPT) {
			mf_wait_flag(&sh->interrupt_replies, 20);
		} else if (mode == MF_READ_PARK_CLOSE) {
			if (mf_wait_flag(&sh->close_dev, 60)) {
				int fd = in->fuse_fd;

				/* replies and reads after this fail with EBADF */
				in->fuse_fd = -1;
				close(fd);
				sh->dev_closed = 1;
			}
			mf_wait_flag(&sh->release, 60);
		} else {
			struct fuse_out_header oh = { .len = sizeof(oh),
						      .error = FUSE_NOTIFY_RESEND };

			sh->notify_errno = write(in->fuse_fd, &oh, sizeof(oh)) < 0 ? errno : 0;
			mf_wait_flag(&sh->release, 60);
		}
		res = mf_park_finish(w);
		sh->parked = 0;
		if (w->lender_completed && mode == MF_READ_INTERRUPT)
			mf_auto_forbidden(sh, "an interrupted read");
		if (w->lender_completed && mode == MF_READ_RESEND)
			mf_auto_forbidden(sh, "a read asked for again by a resend");
		if (mode == MF_READ_RESEND) {
			ret = res > 0 ? mf_reply_zc(in, h->unique, res) : res;
			sh->resend_reply_errno = -ret;
			if (ret < 0)
				mf_reply_copy(w, h->unique, ri->offset, ri->size);
			else
				__sync_fetch_and_add(&sh->zc_replies, 1);
			return;
		}
		goto reply;
	case MF_READ_CANCEL:
		mf_cancel_parked(w, h, ri);
		return;
	case MF_READ_ASYNC:
		res = mf_async_lend(w, h, ri);
		if (!res) {
			mf_reply_copy(w, h->unique, ri->offset, ri->size);
			return;
		}
		goto reply;
	case MF_READ_NO_LEND:
		ret = mf_reply_zc(in, h->unique, ri->size);
		sh->reply_errno = -ret;
		if (ret < 0)	/* refused: the request is still ours to answer */
			mf_recover(w, h->unique, ri->offset, ri->size);
		return;
	case MF_READ_WRONG_DIR:
		sqe = mf_prep_splice_buf(w, FUSEZC_IORING_OP_WRITE_SPLICE_BUF,
					 in->backing_fd, ri->offset, ri->size,
					 in->fuse_fd, fusezc_lend_pos(h->unique, 0));
		sh->wrong_dir_res = mf_ring_run(w, sqe);
		mf_reply_copy(w, h->unique, ri->offset, ri->size);
		return;
	case MF_READ_LIE_PARTIAL:
		/* places half of the request (of any retry too), then claims all */
		res = mf_lend_read(w, h->unique, in->backing_fd, ri->offset,
				   ri->size > 1 ? ri->size / 2 : 1);
		if (res >= 0)
			res = ri->size;
		goto reply;
	case MF_READ_LIE_FAILED_IO:
		res = mf_lend_read(w, h->unique, in->backing_wronly_fd,
				   ri->offset, ri->size);
		sh->last_lend_error = res;
		res = ri->size;
		goto reply;
	default:
		break;
	}

	res = mf_lend_read(w, h->unique, in->backing_fd, ri->offset, ri->size);
	sh->last_lend_res = res;
	/* short, yet not at the end of the file: the lender lent less */
	if (res >= 0 && (uint32_t)res < ri->size &&
	    ri->offset + res < (uint64_t)in->file_size) {
		__sync_fetch_and_add(&sh->short_lends, 1);
		sh->short_lend_res = res;
		sh->short_lend_size = ri->size;
	}
	if (res >= 0 && mode == MF_READ_LIE_MORE)
		res += 4096;
reply:
	prev_unique = h->unique;
	if (w->lender_completed) {
		/* the kernel answered; ours, as for SECOND_REPLY, gets ENOENT */
		__sync_fetch_and_add(&sh->auto_completed, 1);
		__sync_fetch_and_add(&sh->zc_replies, 1);
		if (res < 0)
			mf_auto_forbidden(sh, "a read whose lending failed");
		if (mode == MF_READ_SECOND_REPLY)
			mf_second_reply(in, h->unique, res);
		return;
	}
	if (res < 0) {
		sh->last_lend_error = res;
		__sync_fetch_and_add(&sh->fallbacks, 1);
		mf_reply_copy(w, h->unique, ri->offset, ri->size);
		return;
	}
	ret = mf_reply_zc(in, h->unique, res);
	if (ret < 0) {
		sh->reply_errno = -ret;
		/* refused, so still in flight: answer it correctly */
		if (ret == -EBUSY || ret == -EINVAL)
			mf_recover(w, h->unique, ri->offset, ri->size);
		return;
	}
	__sync_fetch_and_add(&sh->zc_replies, 1);
	if (mode == MF_READ_SECOND_REPLY)
		mf_second_reply(in, h->unique, res);
}

/* WRITE_SPLICE_BUF of request @unique's data to @fd at @off; cqe->res. */
static int mf_lend_out(struct mf_worker *w, uint64_t unique, int fd, uint64_t off,
		       unsigned int len)
{
	struct io_uring_sqe *sqe;

	sqe = mf_prep_splice_buf(w, FUSEZC_IORING_OP_WRITE_SPLICE_BUF, fd, off, len,
				 w->in->fuse_fd, fusezc_lend_pos(unique, 0));
	if (w->auto_lend)
		sqe->ioprio = FUSEZC_SPLICE_BUF_COMPLETE;
	return mf_ring_run(w, sqe);
}

static int mf_reply_write(struct mf_instance *in, uint64_t unique, uint32_t size)
{
	struct fuse_write_out out = { .size = size };

	return mf_reply(in, unique, 0, &out, sizeof(out));
}

/* A FUSEZC_ZC_WRITE_SEND_DATA reply (@flags) to write @unique; 0 or -errno. */
static int mf_reply_send_data(struct mf_instance *in, uint64_t unique, uint32_t flags)
{
	struct fusezc_write_out out = { .flags = flags };

	return mf_reply(in, unique | FUSEZC_UNIQUE_ZC_REPLY, 0, &out, sizeof(out));
}

/*
 * MF_WRITE_PARKED: write to the loop device instead of the backing file,
 * the loan parked in io-wq for slow_ms first (a slow backing store) when
 * the range suits O_DIRECT; the bytes written.
 */
static int mf_park_write(struct mf_worker *w, struct fuse_in_header *h,
			 const struct fuse_write_in *wi)
{
	struct mf_instance *in = w->in;
	struct mf_shared *sh = in->sh;
	int ret = -EIO, attempt;

	if (!wi->size)
		return 0;
	if (in->loop_dio_rw_fd < 0)
		return -ENODEV;
	if (!mf_dio_aligned(wi->offset, wi->size))
		return mf_lend_out(w, h->unique, in->loop_rw_fd, wi->offset, wi->size);
	for (attempt = 0; attempt < 10; attempt++) {
		ret = mf_park_try_op(w, FUSEZC_IORING_OP_WRITE_SPLICE_BUF, h->unique, 0,
				     wi->offset, wi->size, 0);
		if (ret <= 0 || w->lender_completed)
			break;
	}
	if (ret)	/* not parked: what it wrote inline, or its error */
		return ret;
	__sync_fetch_and_add(&sh->parks, 1);
	if (mf_lent_pages(in) == 0)
		__sync_fetch_and_add(&sh->parked_unlent, 1);
	sh->parked = 1;
	if (sh->write_mode == MF_WRITE_SEND_DATA_BUSY)
		sh->send_data_busy_errno =
			-mf_reply_send_data(in, h->unique, FUSEZC_ZC_WRITE_SEND_DATA);
	mf_sleep_ms(sh->slow_ms);
	ret = mf_park_finish(w);
	sh->parked = 0;
	return ret;
}

/* The reply the kernel must refuse; the writer then gets EIO. */
static void mf_bad_write_reply(struct mf_instance *in, uint64_t unique, uint32_t size)
{
	in->sh->bad_write_reply_errno = -mf_reply_write(in, unique, size);
	__sync_fetch_and_add(&in->sh->bad_write_replies, 1);
}

/*
 * MF_WRITE_RANDOM: a FUSE_WRITE sent without its data, written in 1-3
 * chunks of random byte boundaries, lent in random order, half of the
 * writes letting the kernel answer; now and then first a READ_SPLICE_BUF
 * on it (refused), a reply claiming more than written or everything
 * without a lending (refused: the writer gets EIO).
 */
static void mf_random_write(struct mf_worker *w, struct fuse_in_header *h,
			    const struct fuse_write_in *wi)
{
	struct mf_instance *in = w->in;
	struct mf_stress *st = &in->sh->stress;
	uint32_t dice = mf_rand(&w->rnd) % 100, size = wi->size, cut[4];
	bool autoc = mf_rand(&w->rnd) % 2, failed = false;
	int n, i, ret, order[3];

	__sync_fetch_and_add(&st->writes, 1);
	if (dice < 5) {
		struct io_uring_sqe *sqe =
			mf_prep_splice_buf(w, FUSEZC_IORING_OP_READ_SPLICE_BUF, in->backing_fd,
					   0, size ? size : 1, in->fuse_fd,
					   fusezc_lend_pos(h->unique, 0));

		ret = mf_ring_run(w, sqe);
		if (ret == -EOPNOTSUPP)
			__sync_fetch_and_add(&st->write_wrong_dir_refused, 1);
		else if (ret != -ENOENT)
			mf_unexpected(st, "READ_SPLICE_BUF on a FUSE_WRITE", ret);
	}
	if (dice >= 90 || !size) {
		ret = mf_reply_write(in, h->unique, size);
		if (!size && ret && ret != -ENOENT)
			mf_unexpected(st, "reply to an empty write", ret);
		else if (size && ret == -EINVAL)
			__sync_fetch_and_add(&st->write_unlent_refused, 1);
		else if (size && ret != -ENOENT)
			mf_unexpected(st, "write reply without a lending", ret);
		return;
	}

	n = 1 + mf_rand(&w->rnd) % 3;
	if ((uint32_t)n > size)
		n = 1;
	cut[0] = 0;
	for (i = 1; i < n; i++)
		cut[i] = 1 + mf_rand(&w->rnd) % (size - 1);
	cut[n] = size;
	for (i = 1; i < n; i++) {	/* sort the inner cuts */
		for (int j = i; j > 1 && cut[j] < cut[j - 1]; j--) {
			uint32_t t = cut[j];

			cut[j] = cut[j - 1];
			cut[j - 1] = t;
		}
	}
	for (i = 0; i < n; i++)
		order[i] = i;
	for (i = n - 1; i > 0; i--) {
		int j = mf_rand(&w->rnd) % (i + 1), t = order[i];

		order[i] = order[j];
		order[j] = t;
	}
	w->auto_lend = autoc;
	w->lender_completed = false;
	for (i = 0; i < n; i++) {
		int c = order[i];
		uint32_t len = cut[c + 1] - cut[c];
		struct io_uring_sqe *sqe;

		if (!len)
			continue;
		sqe = mf_prep_splice_buf(w, FUSEZC_IORING_OP_WRITE_SPLICE_BUF, in->backing_rw_fd,
					 wi->offset + cut[c], len, in->fuse_fd,
					 fusezc_lend_pos(h->unique, cut[c]));
		if (autoc)
			sqe->ioprio = FUSEZC_SPLICE_BUF_COMPLETE;
		ret = mf_ring_run(w, sqe);
		__sync_fetch_and_add(&st->write_chunks, 1);
		if (ret != (int)len)
			failed = true;
		if (ret == -ENOENT)
			return;		/* the request is gone (aborted) */
	}
	w->auto_lend = false;
	if (w->lender_completed) {
		__sync_fetch_and_add(&st->write_auto_completed, 1);
		if (failed || !autoc)
			mf_unexpected(st, "the kernel answered a write not all written", 0);
		return;
	}
	if (failed) {
		__sync_fetch_and_add(&st->write_failed, 1);
		ret = mf_reply(in, h->unique, -EIO, NULL, 0);
	} else if (dice >= 85) {
		ret = mf_reply_write(in, h->unique, size + 1 + mf_rand(&w->rnd) % 4096);
		if (ret == -EINVAL)
			__sync_fetch_and_add(&st->write_overclaims_refused, 1);
		else if (ret != -ENOENT)
			mf_unexpected(st, "write reply claiming more than written", ret);
		return;
	} else {
		ret = mf_reply_write(in, h->unique, size);
		if (!ret)
			__sync_fetch_and_add(&st->write_replies, 1);
	}
	if (ret == -ENOENT)
		__sync_fetch_and_add(&st->replies_gone, 1);
	else if (ret)
		mf_unexpected(st, "write reply", ret);
}

/*
 * MF_WRITE_FREEZE: the whole request written O_DIRECT into in->freeze_fd on
 * a ring of its own, submitted without waiting (the test has stalled the
 * device under that file, so the write stays in flight).  When the test
 * sets freeze_go (a freeze of that file system has started), this thread
 * either pwrite()s another file of it, as a server serving two requests
 * may, and only then waits for the lending's CQE; or closes the ring (the
 * lending's CQE is never seen) and waits until the loan is back.  The bytes
 * written, or -errno.
 */
static int mf_freeze_write(struct mf_worker *w, struct fuse_in_header *h,
			   const struct fuse_write_in *wi)
{
	struct mf_instance *in = w->in;
	struct mf_shared *sh = in->sh;
	struct __kernel_timespec ts = { .tv_sec = 120 };
	struct io_uring_sqe *sqe;
	struct io_uring_cqe *cqe;
	struct io_uring ring;
	char page[4096];
	int ret, i;

	if (in->freeze_fd < 0 || in->freeze_pwrite_fd < 0)
		return -EBADF;
	ret = io_uring_queue_init(4, &ring, 0);
	if (ret)
		return ret;
	sqe = io_uring_get_sqe(&ring);
	io_uring_prep_rw(FUSEZC_IORING_OP_WRITE_SPLICE_BUF, sqe, in->freeze_fd, NULL,
			 wi->size, wi->offset);
	sqe->splice_fd_in = in->fuse_fd;
	sqe->splice_off_in = fusezc_lend_pos(h->unique, 0);
	ret = io_uring_submit(&ring);
	if (ret != 1) {
		io_uring_queue_exit(&ring);
		return ret < 0 ? ret : -EIO;
	}
	sh->freeze_tid = gettid();
	__sync_fetch_and_add(&sh->freeze_submitted, 1);	/* a full barrier */
	mf_wait_flag(&sh->freeze_go, 120);
	if (sh->freeze_close_ring) {
		io_uring_queue_exit(&ring);
		__sync_fetch_and_add(&sh->freeze_ring_closed, 1);
		/* the loan comes back when the lent write is over */
		for (i = 0; i < 120000 && mf_lent_pages(in) > 0; i++)
			mf_sleep_ms(1);
		return -EIO;
	}
	memset(page, 'f', sizeof(page));
	ret = pwrite(in->freeze_pwrite_fd, page, sizeof(page), 0);
	sh->freeze_pwrite_res = ret < 0 ? -errno : ret;
	__sync_fetch_and_add(&sh->freeze_pwrite_done, 1);
	ret = io_uring_wait_cqe_timeout(&ring, &cqe, &ts);
	if (!ret) {
		ret = cqe->res;
		io_uring_cqe_seen(&ring, cqe);
	}
	sh->freeze_cqe_res = ret;
	io_uring_queue_exit(&ring);
	return ret;
}

static void mf_do_write(struct mf_worker *w, struct fuse_in_header *h,
			const struct fuse_write_in *wi)
{
	struct mf_instance *in = w->in;
	struct mf_shared *sh = in->sh;
	int fd = in->backing_rw_fd;
	int res;

	__sync_fetch_and_add(&sh->writes, 1);
	__sync_fetch_and_or(&sh->write_flags_seen, wi->write_flags);
	/* -a: the kernel answers a write whose lending wrote it all */
	w->lender_completed = false;
	w->auto_lend = in->cfg->auto_complete &&
		       (sh->write_mode == MF_WRITE_ZC || sh->write_mode == MF_WRITE_PARKED);
	if (h->nodeid != MF_FILE_INO || fd < 0) {
		mf_reply(in, h->unique, -EBADF, NULL, 0);
		return;
	}
	if ((wi->write_flags & FUSEZC_WRITE_ZERO_COPY) && sh->write_mode == MF_WRITE_RANDOM) {
		mf_random_write(w, h, wi);
		return;
	}
	if (!(wi->write_flags & FUSEZC_WRITE_ZERO_COPY)) {
		bool send_data = sh->write_mode == MF_WRITE_SEND_DATA ||
				 sh->write_mode == MF_WRITE_SEND_DATA_BUSY;
		ssize_t n;

		if (send_data) {
			/* it came with its data: nothing to send again */
			__sync_fetch_and_add(&sh->send_data_resent, 1);
			sh->send_data_inline_errno =
				-mf_reply_send_data(in, h->unique, FUSEZC_ZC_WRITE_SEND_DATA);
		}
		n = pwrite(fd, wi + 1, wi->size, wi->offset);
		if (n < 0) {
			mf_reply(in, h->unique, -errno, NULL, 0);
			return;
		}
		__sync_fetch_and_add(&sh->copy_writes, 1);
		mf_reply_write(in, h->unique, n);
		if (send_data)
			sh->send_data_gone_errno =
				-mf_reply_send_data(in, h->unique, FUSEZC_ZC_WRITE_SEND_DATA);
		return;
	}

	if (sh->write_mode == MF_WRITE_SEND_DATA) {
		sh->send_data_bad_flags_errno = -mf_reply_send_data(in, h->unique, 1U << 7);
		res = mf_reply_send_data(in, h->unique, FUSEZC_ZC_WRITE_SEND_DATA);
		sh->send_data_errno = -res;
		if (!res)
			__sync_fetch_and_add(&sh->send_data_asked, 1);
		else	/* refused: the write must still be answered */
			mf_reply(in, h->unique, -EIO, NULL, 0);
		return;
	}

	if (sh->write_mode == MF_WRITE_NO_LEND) {
		mf_bad_write_reply(in, h->unique, wi->size);
		return;
	}
	if (sh->write_mode == MF_WRITE_WRONG_DIR) {
		/* would overwrite the writer's data with the backing file's */
		struct io_uring_sqe *sqe =
			mf_prep_splice_buf(w, FUSEZC_IORING_OP_READ_SPLICE_BUF,
					   in->backing_fd, 0, wi->size ? wi->size : 1,
					   in->fuse_fd, fusezc_lend_pos(h->unique, 0));

		sh->wrong_dir_write_res = mf_ring_run(w, sqe);
	}
	if (wi->write_flags & FUSE_WRITE_CACHE)
		__sync_fetch_and_add(&sh->cache_writes, 1);
	if ((sh->write_mode == MF_WRITE_PARKED &&
	     !(sh->park_no_cache_writes && (wi->write_flags & FUSE_WRITE_CACHE))) ||
	    sh->write_mode == MF_WRITE_SEND_DATA_BUSY)
		res = mf_park_write(w, h, wi);
	else if (sh->write_mode == MF_WRITE_FREEZE)
		res = mf_freeze_write(w, h, wi);
	else
		res = wi->size ? mf_lend_out(w, h->unique, fd, wi->offset, wi->size) : 0;
	if (res < 0 || (uint32_t)res < wi->size) {
		__sync_fetch_and_add(&sh->write_failures, 1);
		sh->write_error = res;
	}
	if (res < 0) {
		mf_reply(in, h->unique, res, NULL, 0);
		return;
	}
	if (sh->write_mode == MF_WRITE_SEND_DATA_BUSY) {
		/* its loan came back (to the loop device): send it again all the same */
		res = mf_reply_send_data(in, h->unique, FUSEZC_ZC_WRITE_SEND_DATA);
		sh->send_data_errno = -res;
		if (!res)
			__sync_fetch_and_add(&sh->send_data_asked, 1);
		else
			mf_reply(in, h->unique, -EIO, NULL, 0);
		return;
	}
	__sync_fetch_and_add(&sh->zc_writes, 1);
	__sync_fetch_and_add(&sh->zc_write_bytes, res);
	if (w->lender_completed) {
		if ((uint32_t)res != wi->size)
			mf_auto_forbidden(sh, "a short write");
		__sync_fetch_and_add(&sh->zc_writes_answered, 1);
		return;
	}
	if (sh->write_mode == MF_WRITE_OVERCLAIM)
		mf_bad_write_reply(in, h->unique, res + 4096);
	else
		mf_reply_write(in, h->unique, res);
}

/*
 * A resent read (FUSE_UNIQUE_RESEND): lent under the unique it came with,
 * after a lending under its unique from before the resend, which must not
 * reach it; answered by copy when the lending is refused or short.
 */
static void mf_serve_resent(struct mf_worker *w, struct fuse_in_header *h,
			    struct fuse_read_in *ri)
{
	struct mf_instance *in = w->in;
	uint32_t len = mf_read_avail(in, ri);
	int res;

	if (len) {
		w->next_ioprio = 0;
		res = mf_lend_read(w, h->unique & ~MF_UNIQUE_RESEND, in->backing_fd,
				   ri->offset, len);
		if (res != -ENOENT)
			__sync_fetch_and_add(&in->sh->resent_old_name_reached, 1);
		w->next_ioprio = 0;
		res = mf_lend_read(w, h->unique, in->backing_fd, ri->offset, len);
		in->sh->resent_lend_res = res;
		if (res == (int)len && mf_reply_zc(in, h->unique, res) == 0) {
			__sync_fetch_and_add(&in->sh->resent_zc, 1);
			__sync_fetch_and_add(&in->sh->zc_replies, 1);
			return;
		}
	}
	mf_reply_copy(w, h->unique, ri->offset, ri->size);
}

static void mf_dispatch(struct mf_worker *w, struct fuse_in_header *h, void *arg)
{
	struct mf_instance *in = w->in;

	switch (h->opcode) {
	case FUSE_INIT:
		mf_do_init(in, h, arg);
		return;
	case FUSE_LOOKUP: {
		struct fuse_entry_out e = { 0 };

		if (h->nodeid != MF_ROOT_INO || strcmp(arg, MF_FILE_NAME)) {
			mf_reply(in, h->unique, -ENOENT, NULL, 0);
			return;
		}
		e.nodeid = MF_FILE_INO;
		e.attr_valid = 1;
		mf_fill_attr(in, MF_FILE_INO, &e.attr);
		mf_reply(in, h->unique, 0, &e, sizeof(e));
		return;
	}
	case FUSE_GETATTR: {
		struct fuse_attr_out a = { .attr_valid = 1 };

		mf_fill_attr(in, h->nodeid, &a.attr);
		mf_reply(in, h->unique, 0, &a, sizeof(a));
		return;
	}
	case FUSE_OPEN:
	case FUSE_OPENDIR: {
		struct fuse_open_out o = { 0 };

		if (h->opcode == FUSE_OPEN && in->sh->mode == MF_READ_PROBE &&
		    !in->copy_only && in->sh->zc_accepted) {
			/* a request that is not a read must not be lent */
			mf_probe(w, "OPEN request as lender", -EOPNOTSUPP,
				 mf_probe_sqe(w, FUSEZC_IORING_OP_READ_SPLICE_BUF,
					      in->backing_fd, 0, 4096, in->fuse_fd,
					      fusezc_lend_pos(h->unique, 0), NULL));
		}
		/*
		 * The exdev probe opens this mount's own file while serving a
		 * readahead of it: without KEEP_CACHE that open would wait for
		 * the very folio lock the probing read holds.
		 */
		if (in->sh->mode == MF_READ_PROBE_EXDEV)
			o.open_flags |= FOPEN_KEEP_CACHE;
		if (in->cfg->open_direct_io)
			o.open_flags |= FOPEN_DIRECT_IO;
		mf_reply(in, h->unique, 0, &o, sizeof(o));
		return;
	}
	case FUSE_READ:
		if (h->nodeid != MF_FILE_INO) {
			mf_reply(in, h->unique, -EISDIR, NULL, 0);
			return;
		}
		if (h->unique & MF_UNIQUE_RESEND) {
			struct fuse_read_in *ri = arg;

			/* a resent read: once the lender is done, answer it */
			__sync_fetch_and_add(&in->sh->resent, 1);
			if (mf_lent_pages(in) > 0)	/* the kernel's word, not ours */
				__sync_fetch_and_add(&in->sh->resent_while_lent, 1);
			while (in->sh->parked)
				mf_sleep_ms(1);
			mf_serve_resent(w, h, ri);
			return;
		}
		mf_do_read(w, h, arg);
		return;
	case FUSE_WRITE:
		mf_do_write(w, h, arg);
		return;
	case FUSE_SETATTR: {
		const struct fuse_setattr_in *si = arg;
		struct fuse_attr_out a = { .attr_valid = 1 };

		/* only the size is kept (write-back cache flushes times too) */
		if ((si->valid & FATTR_SIZE) &&
		    (in->backing_rw_fd < 0 || ftruncate(in->backing_rw_fd, si->size))) {
			mf_reply(in, h->unique, in->backing_rw_fd < 0 ? -EPERM : -errno,
				 NULL, 0);
			return;
		}
		mf_fill_attr(in, h->nodeid, &a.attr);
		mf_reply(in, h->unique, 0, &a, sizeof(a));
		return;
	}
	case FUSE_FSYNC:
	case FUSE_READDIR:
		mf_reply(in, h->unique, 0, NULL, 0);
		return;
	case FUSE_STATFS: {
		struct fuse_statfs_out s = { .st = { .bsize = 4096, .namelen = 255 } };

		mf_reply(in, h->unique, 0, &s, sizeof(s));
		return;
	}
	case FUSE_RELEASE:
	case FUSE_RELEASEDIR:
	case FUSE_FLUSH:
	case FUSE_DESTROY:
		mf_reply(in, h->unique, 0, NULL, 0);
		return;
	case FUSE_INTERRUPT:
		if (in->sh->mode == MF_READ_INTERRUPT && !in->copy_only) {
			int n = __sync_add_and_fetch(&in->sh->interrupts, 1);

			/* "try again later" (the kernel re-sends it), then "no" */
			if (n <= 2) {
				int ret = mf_reply(in, h->unique, n == 1 ? -EAGAIN : -ENOSYS,
						   NULL, 0);

				in->sh->interrupt_errno[n - 1] = -ret;
				in->sh->interrupt_replies = n;
			}
		}
		return;
	case FUSE_FORGET:
	case FUSE_BATCH_FORGET:
		return;	/* no reply */
	default:
		mf_reply(in, h->unique, -ENOSYS, NULL, 0);
	}
}

static ssize_t mf_receive(struct mf_worker *w)
{
	ssize_t n;

	if (!w->in->cfg->splice_receive || w->in->copy_only)
		return read(w->in->fuse_fd, w->buf, MF_BUF_SIZE);

	/* libfuse's way: splice the request into a pipe, then read it */
	n = splice(w->in->fuse_fd, NULL, w->pipe[1], NULL, MF_BUF_SIZE, 0);
	if (n <= 0)
		return n;
	return read(w->pipe[0], w->buf, n);
}

static void *mf_worker_main(void *arg)
{
	struct mf_worker *w = arg;
	struct mf_instance *in = w->in;
	unsigned int flags = 0;

	if (io_uring_queue_init(8, &w->ring, flags) < 0)
		return NULL;
	if (in->cfg->fixed_lender || in->cfg->fixed_target) {
		int files[2] = { in->fuse_fd, in->backing_fd };

		if (io_uring_register_files(&w->ring, files, 2) < 0)
			return NULL;
	}
	for (;;) {
		ssize_t n = mf_receive(w);
		struct fuse_in_header *h = (void *)w->buf;

		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN || errno == ENOENT)
				continue;
			break;	/* ENODEV: unmounted or aborted */
		}
		if (n < (ssize_t)sizeof(*h))
			break;
		mf_dispatch(w, h, h + 1);
	}
	io_uring_queue_exit(&w->ring);
	if (w->park_ready) {
		io_uring_queue_exit(&w->park);
		unlink(w->fifo);
	}
	return NULL;
}

static int mf_mount(const char *mountpoint, int *fdp)
{
	char opts[128];
	int fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	snprintf(opts, sizeof(opts),
		 "fd=%d,rootmode=40000,user_id=0,group_id=0,allow_other", fd);
	if (mount("minifuse", mountpoint, "fuse.minifuse", MS_NOSUID | MS_NODEV, opts)) {
		int err = -errno;

		close(fd);
		return err;
	}
	*fdp = fd;
	return 0;
}

static int mf_start_workers(struct mf_instance *in, int nr, pthread_t *tids)
{
	int i;

	for (i = 0; i < nr; i++) {
		struct mf_worker *w = calloc(1, sizeof(*w));

		if (!w)
			return -ENOMEM;
		w->in = in;
		w->next_ioprio = -1;
		w->rnd = 0x9e3779b97f4a7c15ull ^ ((uint64_t)getpid() << 16) ^ (uint64_t)i;
		w->buf = malloc(MF_BUF_SIZE);
		w->data = malloc(MF_MAX_WRITE);
		if (!w->buf || !w->data || pipe(w->pipe))
			return -ENOMEM;
		fcntl(w->pipe[0], F_SETPIPE_SZ, MF_BUF_SIZE);
		if (pthread_create(&tids[i], NULL, mf_worker_main, w))
			return -EAGAIN;
	}
	return 0;
}

static void mf_drop_privileges(void)
{
	if (setresgid(65534, 65534, 65534) || setresuid(65534, 65534, 65534)) {
		perror("minifuse: dropping privileges");
		_exit(2);
	}
}

/* Bytes of the block device @fd's queue limit, from sysfs; 0 if unknown. */
static uint64_t mf_queue_limit(int fd, const char *name, uint64_t unit)
{
	char path[128];
	unsigned long long v = 0;
	struct stat st;
	FILE *f;

	if (fstat(fd, &st))
		return 0;
	snprintf(path, sizeof(path), "/sys/dev/block/%u:%u/queue/%s",
		 major(st.st_rdev), minor(st.st_rdev), name);
	f = fopen(path, "re");
	if (!f)
		return 0;
	if (fscanf(f, "%llu", &v) != 1)
		v = 0;
	fclose(f);
	return v * unit;
}

/*
 * The largest O_DIRECT read of the loop device whose bio needs no split,
 * even with every page a segment of its own.
 */
static uint32_t mf_loop_dio_max(int fd)
{
	uint64_t segs = mf_queue_limit(fd, "max_segments", 4096);
	uint64_t kb = mf_queue_limit(fd, "max_sectors_kb", 1024);

	return (uint32_t)(segs < kb ? segs : kb);
}

static int mf_serve(const struct mf_config *cfg, struct mf_shared *sh)
{
	struct mf_instance main_in = { .cfg = cfg, .sh = sh, .fuse_fd = -1,
				       .loop_fd = -1, .loop_dio_fd = -1, .loop_rw_fd = -1,
				       .loop_dio_rw_fd = -1, .freeze_fd = -1,
				       .freeze_pwrite_fd = -1 };
	struct mf_instance second = { .cfg = cfg, .sh = sh, .fuse_fd = -1,
				      .loop_fd = -1, .loop_dio_fd = -1, .loop_rw_fd = -1,
				      .loop_dio_rw_fd = -1, .freeze_fd = -1,
				      .freeze_pwrite_fd = -1, .copy_only = true };
	struct stat st;
	pthread_t tids[16], tids2[1];
	int nr = cfg->threads > 0 ? cfg->threads : 2;
	int ret, i, oflags = O_RDONLY;

	if (nr > 16)
		nr = 16;
	if (cfg->direct_io_backing)
		oflags |= O_DIRECT;
	main_in.backing_fd = open(cfg->backing_path, oflags);
	main_in.backing_wronly_fd = open(cfg->backing_path, O_WRONLY);
	main_in.backing_rw_fd = cfg->writable ?
				open(cfg->backing_path, O_RDWR | O_CLOEXEC) : -1;
	if (main_in.backing_fd < 0) {
		perror("minifuse: backing file");
		return 2;
	}
	if (!fstat(main_in.backing_fd, &st))
		main_in.file_size = st.st_size;
	if (cfg->freeze_path) {
		main_in.freeze_fd = open(cfg->freeze_path, O_RDWR | O_DIRECT | O_CLOEXEC);
		main_in.freeze_pwrite_fd = open(cfg->freeze_pwrite_path,
						O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
		if (main_in.freeze_fd < 0 || main_in.freeze_pwrite_fd < 0) {
			perror("minifuse: freeze files");
			return 2;
		}
	}
	if (cfg->loop_path) {
		main_in.loop_fd = open(cfg->loop_path, O_RDONLY | O_CLOEXEC);
		main_in.loop_dio_fd = open(cfg->loop_path, O_RDONLY | O_DIRECT | O_CLOEXEC);
		main_in.loop_rw_fd = open(cfg->loop_path, O_RDWR | O_CLOEXEC);
		main_in.loop_dio_rw_fd = open(cfg->loop_path, O_RDWR | O_DIRECT | O_CLOEXEC);
		if (main_in.loop_fd < 0 || main_in.loop_dio_fd < 0 || main_in.loop_rw_fd < 0 ||
		    main_in.loop_dio_rw_fd < 0) {
			perror("minifuse: loop device");
			return 2;
		}
		/*
		 * No readahead past what an asynchronous lending reads: its
		 * I/O, still in flight when the next one starts, would cache
		 * that one's range behind mf_uncache()'s back.
		 */
		posix_fadvise(main_in.loop_fd, 0, 0, POSIX_FADV_RANDOM);
		main_in.loop_dio_max = mf_loop_dio_max(main_in.loop_fd);
		sh->async_dio_max = main_in.loop_dio_max;
	}
	second.backing_fd = main_in.backing_fd;
	ret = mf_mount(cfg->mountpoint, &main_in.fuse_fd);
	if (ret) {
		fprintf(stderr, "minifuse: mount %s: %s\n", cfg->mountpoint, strerror(-ret));
		return 2;
	}
	if (cfg->second_mountpoint) {
		ret = mf_mount(cfg->second_mountpoint, &second.fuse_fd);
		if (ret) {
			fprintf(stderr, "minifuse: mount %s: %s\n",
				cfg->second_mountpoint, strerror(-ret));
			return 2;
		}
		main_in.peer = &second;
	}
	if (cfg->drop_privileges)
		mf_drop_privileges();
	if (mf_start_workers(&main_in, nr, tids))
		return 2;
	if (cfg->second_mountpoint && mf_start_workers(&second, 1, tids2))
		return 2;
	/* served by the workers: not before they run */
	if (!stat(cfg->mountpoint, &st))
		snprintf(main_in.stats_path, sizeof(main_in.stats_path),
			 "/sys/fs/fuse/connections/%u/zerocopy_stats", minor(st.st_dev));
	sh->ready = 1;
	for (i = 0; i < nr; i++)
		pthread_join(tids[i], NULL);
	return 0;
}

struct mf_shared *mf_shared_new(void)
{
	struct mf_shared *sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE,
				    MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	return sh == MAP_FAILED ? NULL : sh;
}

pid_t mf_start(const struct mf_config *cfg, struct mf_shared *sh)
{
	struct timespec t0, t;
	pid_t pid;

	sh->mode = cfg->mode;
	if (cfg->slow_ms)
		sh->slow_ms = cfg->slow_ms;
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		_exit(mf_serve(cfg, sh));
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (!sh->ready) {
		int status;

		if (waitpid(pid, &status, WNOHANG) == pid)
			return -EIO;
		clock_gettime(CLOCK_MONOTONIC, &t);
		if (t.tv_sec - t0.tv_sec > 20) {
			kill(pid, SIGKILL);
			return -ETIMEDOUT;
		}
		mf_sleep_ms(2);
	}
	return pid;
}
