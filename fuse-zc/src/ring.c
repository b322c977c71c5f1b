// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * The kernel side: a worker's io_uring and the writes to /dev/fuse (see
 * ring.h).
 */
#include "ring.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#define NSEC_PER_SEC		1000000000ULL
#define RING_BACKOFF_MIN	(1 * NSEC_PER_SEC)
#define RING_BACKOFF_MAX	(64 * NSEC_PER_SEC)

/* ------------------------------------------------------------------ */
/* The kernel side (replaced by the unit tests)                        */

static int real_ring_setup(struct fusezc_worker *w)
{
	struct fusezc_session *zs = w->zs;
	struct io_uring_params p;
	int res;

	memset(&p, 0, sizeof(p));
	/*
	 * Not DEFER_TASKRUN: an asynchronous lending's file I/O completes in
	 * this worker's task work, which returns the loan (and may answer
	 * the read).  Deferred, that would wait until the worker enters the
	 * ring, while it sits in read() of /dev/fuse; plain task work
	 * interrupts that read, runs, and the read restarts.
	 */
#ifdef IORING_SETUP_SINGLE_ISSUER
	p.flags = IORING_SETUP_SINGLE_ISSUER;	/* only this worker submits */
#endif
#ifdef IORING_SETUP_SUBMIT_ALL
	/* the pieces of a lending go in one submission: all of them, even
	 * when one fails at once (its CQE says so) */
	p.flags |= IORING_SETUP_SUBMIT_ALL;
#endif
	/* room for the CQE of every lending in flight, beyond the SQ's 2x */
	p.flags |= IORING_SETUP_CQSIZE;
	p.cq_entries = 2 * zs->opts.ring_entries;
	if (p.cq_entries < FZC_INFLIGHT_MAX + zs->opts.ring_entries)
		p.cq_entries = FZC_INFLIGHT_MAX + zs->opts.ring_entries;
	res = io_uring_queue_init_params(zs->opts.ring_entries, &w->ring, &p);
	if (res == -EINVAL && (p.flags & ~IORING_SETUP_CQSIZE)) {
		/* an older kernel: without them (a lending in pieces whose
		 * submission stops early drops the ring) */
		p.flags = IORING_SETUP_CQSIZE;
		res = io_uring_queue_init_params(zs->opts.ring_entries, &w->ring, &p);
	}
	if (res < 0)
		return res;
	if (zs->opts.register_fuse_fd) {
		/* The file this worker reads; a deferred reply to a request of
		 * another clone lends through the plain fd. */
		res = io_uring_register_files(&w->ring, &w->devfd, 1);
		if (res == 0) {
			w->ring_fixed = true;
			w->ring_fd = w->devfd;
		} else if (fzc_note_once(zs, FZC_NOTE_RING, res)) {
			fzc_log(zs, FUSE_LOG_WARNING,
				"cannot register /dev/fuse with io_uring (%s); using the plain fd",
				strerror(-res));
		}
	}
	return 0;
}

static int real_ring_probe(void)
{
	struct io_uring ring;
	int res = io_uring_queue_init(1, &ring, 0);

	if (res == 0)
		io_uring_queue_exit(&ring);
	return res;
}

static void real_ring_exit(struct fusezc_worker *w)
{
	io_uring_queue_exit(&w->ring);
}

static void prep_lending(struct fusezc_worker *w, struct io_uring_sqe *sqe,
			 const struct fzc_lending *l)
{
	bool fixed = w->ring_fixed && l->devfd == w->ring_fd;

	fzc_prep_lend_op(sqe, l->write ? FUSEZC_IORING_OP_WRITE_SPLICE_BUF :
			 FUSEZC_IORING_OP_READ_SPLICE_BUF, l->fd, l->off, l->len,
			 fixed ? 0 : l->devfd, fixed, l->unique);
	sqe->splice_off_in = fusezc_lend_pos(l->unique, l->req_off);
	/* fusezc_reply_read() maps the read onto one range of one file: its
	 * end is the end of the read's data, as for a copy */
	if (l->kernel_answers)
		sqe->ioprio = l->write ? FUSEZC_SPLICE_BUF_COMPLETE :
			      FUSEZC_SPLICE_BUF_COMPLETE | FUSEZC_SPLICE_BUF_EOF;
}

/* One io_uring_enter() submits and waits; the CQE is reaped here. */
static int real_ring_lend(struct fusezc_worker *w, const struct fzc_lending *l,
			  int *cqe_res, bool *answered)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);
	struct io_uring_cqe *cqe;
	int res, tries = 0;

	if (sqe == NULL)	/* cannot happen: the ring is idle between lendings */
		return -EBUSY;
	prep_lending(w, sqe, l);
	do
		res = io_uring_submit_and_wait(&w->ring, 1);
	while ((res == -EINTR || res == -EAGAIN) && ++tries < 1000);
	if (res != 1)
		return res < 0 ? res : -EIO;
	do
		res = io_uring_wait_cqe(&w->ring, &cqe);
	while (res == -EINTR);
	if (res < 0)
		return res;
	*cqe_res = cqe->res;
	*answered = cqe->flags & FUSEZC_CQE_F_LENDER_COMPLETED;
	io_uring_cqe_seen(&w->ring, cqe);
	return 0;
}

static ssize_t real_dev_writev(int fd, const struct iovec *iov, int count)
{
	return writev(fd, iov, count);
}

static int real_ring_submit_lends(struct fusezc_worker *w, const struct fzc_lending *l,
				  const uint64_t *user_data, unsigned int n)
{
	int res, tries = 0;

	for (unsigned int i = 0; i < n; i++) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);

		/* cannot happen: the SQ is empty, and a lending has no more
		 * pieces than it has entries (fzc_lend_split()) */
		if (sqe == NULL)
			return -EBUSY;
		prep_lending(w, sqe, &l[i]);
		sqe->user_data = user_data[i];
	}
	if (w->ring_reading) {
		/* the worker's next read of /dev/fuse submits them */
		w->sq_deferred += n;
		return (int)n;
	}
	do
		res = io_uring_submit(&w->ring);
	while ((res == -EINTR || res == -EAGAIN) && ++tries < 1000);
	return res;
}

static int real_ring_next_cqe(struct fusezc_worker *w, int wait_ms, uint64_t *user_data,
			      int *res, bool *answered)
{
	struct __kernel_timespec ts = {
		.tv_sec = wait_ms / 1000, .tv_nsec = (wait_ms % 1000) * 1000000LL,
	};
	struct io_uring_cqe *cqe;
	int err;

	if (wait_ms != 0 && io_uring_sq_ready(&w->ring) > 0) {
		/* a CQE waited for may be one of a lending not submitted yet */
		err = io_uring_submit(&w->ring);
		if (err < 0)
			return err;
		w->sq_deferred = 0;
	}
	do {
		if (wait_ms == 0)
			err = io_uring_peek_cqe(&w->ring, &cqe);
		else if (wait_ms < 0)
			err = io_uring_wait_cqe(&w->ring, &cqe);
		else
			err = io_uring_wait_cqe_timeout(&w->ring, &cqe, &ts);
	} while (err == -EINTR);
	if (err == -EAGAIN || err == -ETIME)
		return 0;
	if (err < 0)
		return err;
	*user_data = cqe->user_data;
	*res = cqe->res;
	*answered = cqe->flags & FUSEZC_CQE_F_LENDER_COMPLETED;
	io_uring_cqe_seen(&w->ring, cqe);
	return 1;
}

static int real_ring_read_dev(struct fusezc_worker *w, int fd, void *buf, size_t len,
			      unsigned int wait_nr, unsigned int timeout_us)
{
	struct __kernel_timespec ts = {
		.tv_sec = timeout_us / 1000000, .tv_nsec = (timeout_us % 1000000) * 1000LL,
	};
	struct io_uring_cqe *cqe;
	int res;

	if (!w->devread_armed) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);
		bool fixed = w->ring_fixed && fd == w->ring_fd;

		if (sqe == NULL) {
			/* the SQ is full of prepared lendings: submit them first */
			res = io_uring_submit(&w->ring);
			if (res < 0)
				return res;
			w->sq_deferred = 0;
			sqe = io_uring_get_sqe(&w->ring);
			if (sqe == NULL)
				return -EBUSY;
		}
		/* /dev/fuse has no file position: 0, not the shared f_pos (-1) */
		io_uring_prep_read(sqe, fixed ? 0 : fd, buf, (unsigned int)len, 0);
		if (fixed)
			sqe->flags |= IOSQE_FIXED_FILE;
		sqe->user_data = FZC_UD_DEVREAD;
		w->devread_armed = true;
		w->devread_done = false;
	}
	if (timeout_us > 0)
		res = io_uring_submit_and_wait_timeout(&w->ring, &cqe, wait_nr, &ts, NULL);
	else
		res = io_uring_submit_and_wait(&w->ring, wait_nr);
	/* what a failed call left in the SQ goes with the next */
	w->sq_deferred = io_uring_sq_ready(&w->ring);
	return res < 0 ? res : 0;
}

static int real_ring_poll_fd(struct fusezc_worker *w)
{
	return w->ring.ring_fd;
}

/* Queue limit @name of block device @dev (0: none), from sysfs; a
 * partition has no queue of its own: its disk's, one directory up. */
static uint64_t queue_limit(dev_t dev, const char *name)
{
	static const char *const where[] = { "", "../" };
	unsigned long long v = 0;
	char path[96];
	FILE *f = NULL;

	for (size_t i = 0; i < 2 && f == NULL; i++) {
		snprintf(path, sizeof(path), "/sys/dev/block/%u:%u/%squeue/%s",
			 major(dev), minor(dev), where[i], name);
		f = fopen(path, "re");
	}
	if (f == NULL)
		return 0;
	if (fscanf(f, "%llu", &v) != 1)
		v = 0;
	fclose(f);
	return v;
}

/*
 * Only a block device opened O_DIRECT marks its bios REQ_NOWAIT when
 * issued inline (block/fops.c), so only its lendings fail a split with
 * -EAGAIN and go to io-wq.  An O_DIRECT regular file of ext4, xfs, btrfs
 * or f2fs builds its bios with iomap, without REQ_NOWAIT (6.12): the
 * block layer splits them as any bio, and pieces would only cost another
 * loan and completion a request (docs/performance.md, issue 26 step 2).
 * (ocfs2's fs/direct-io.c bios carry REQ_NOWAIT; not split, not measured.)
 */
static size_t real_piece_max(struct fusezc_session *zs, int fd)
{
	size_t piece = 0;
	struct stat st;
	dev_t dev;
	unsigned int i;
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0 || !(fl & O_DIRECT) || fstat(fd, &st) != 0 || !S_ISBLK(st.st_mode))
		return 0;
	dev = st.st_rdev;
	pthread_mutex_lock(&zs->limits_lock);
	for (i = 0; i < zs->dev_limits_n && zs->dev_limits[i].dev != dev; i++)
		;
	if (i < zs->dev_limits_n) {
		piece = zs->dev_limits[i].piece_max;
	} else {
		piece = fzc_piece_limit(queue_limit(dev, "max_sectors_kb"),
					queue_limit(dev, "max_segments"),
					(size_t)sysconf(_SC_PAGESIZE));
		/* full: one of them goes */
		i = zs->dev_limits_n < FZC_DEV_LIMITS ? zs->dev_limits_n++ :
		    (unsigned int)(dev % FZC_DEV_LIMITS);
		zs->dev_limits[i] = (struct fzc_dev_limit){ .dev = dev, .piece_max = piece };
	}
	pthread_mutex_unlock(&zs->limits_lock);
	return piece;
}

const struct fzc_kernel_ops fzc_real_kops = {
	.ring_probe = real_ring_probe,
	.ring_setup = real_ring_setup,
	.ring_exit = real_ring_exit,
	.ring_lend = real_ring_lend,
	.dev_writev = real_dev_writev,
	.ring_submit_lends = real_ring_submit_lends,
	.ring_next_cqe = real_ring_next_cqe,
	.ring_poll_fd = real_ring_poll_fd,
	.piece_max = real_piece_max,
	.ring_read_dev = real_ring_read_dev,
};
const struct fzc_kernel_ops *fzc_kops = &fzc_real_kops;

/* ------------------------------------------------------------------ */
/* The worker's io_uring                                               */

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * NSEC_PER_SEC + (uint64_t)ts.tv_nsec;
}

/* Drop a failed ring; a new one is tried after a growing back-off. */
void fzc_ring_failed(struct fusezc_worker *w, int err)
{
	if (w->ring_ready)
		fzc_kops->ring_exit(w);
	w->ring_ready = false;
	w->ring_fixed = false;
	/* epoll forgets a closed ring: the next ring is added anew */
	w->watched = false;
	/* what was in it is gone with it (its lendings: abandon_locked()) */
	w->devread_armed = false;
	w->sq_deferred = 0;
	w->ring_err = err;
	w->ring_backoff = w->ring_backoff ? w->ring_backoff * 2 : RING_BACKOFF_MIN;
	if (w->ring_backoff > RING_BACKOFF_MAX)
		w->ring_backoff = RING_BACKOFF_MAX;
	w->ring_retry_at = now_ns() + w->ring_backoff;
	if (fzc_note_once(w->zs, FZC_NOTE_RING, err))
		fzc_log(w->zs, FUSE_LOG_WARNING,
			"io_uring failed (%s); copying reads on this worker until a new ring works",
			strerror(-err));
}

int fzc_ring_get(struct fusezc_worker *w)
{
	int res;

	if (w->ring_ready)
		return 0;
	if (w->ring_retry_at != 0 && now_ns() < w->ring_retry_at)
		return w->ring_err ? w->ring_err : -EAGAIN;
	res = fzc_kops->ring_setup(w);
	if (res < 0) {
		fzc_ring_failed(w, res);
		return res;
	}
	w->ring_ready = true;
	w->ring_err = 0;
	w->ring_backoff = 0;
	w->ring_retry_at = 0;
	return 0;
}

void fzc_ring_flush(struct fusezc_worker *w)
{
	int res, tries = 0;

	if (w->sq_deferred == 0)	/* (only the real kernel's ring defers) */
		return;
	do
		res = io_uring_submit(&w->ring);
	while ((res == -EINTR || res == -EAGAIN) && ++tries < 1000);
	w->sq_deferred = io_uring_sq_ready(&w->ring);
}

int fzc_ring_probe(void)
{
	return fzc_kops->ring_probe ? fzc_kops->ring_probe() : 0;
}

/* ------------------------------------------------------------------ */
/* One lending, and what its errors mean                               */

/*
 * Every error a lending's CQE may carry that is not the file's own I/O
 * failing, for reads and writes alike.  A refusal is answered another way
 * (reads by copy, writes through a memfd or sent again with their data);
 * an I/O error is the answer; a transient error is tried again.
 */
static const struct {
	int err;
	enum fzc_lend_class class;
	const char *hint;
	bool for_good;		/* the file's for good: remembered */
} lend_policy[] = {
	{ EOPNOTSUPP, FZC_LEND_CLASS_REFUSED, " (not a lender, not negotiated, or the wrong direction)", false },
	{ EPERM, FZC_LEND_CLASS_REFUSED, " (the server lacks CAP_SYS_ADMIN)", false },
	{ EXDEV, FZC_LEND_CLASS_REFUSED, " (backing file on a FUSE or stacked file system)", true },
	{ E2BIG, FZC_LEND_CLASS_REFUSED, " (more segments than a lending takes)", false },
	{ EINVAL, FZC_LEND_CLASS_REFUSED, " (O_DIRECT alignment, a file that is no regular file or block device, or a range outside the request)", false },
	{ ENOENT, FZC_LEND_CLASS_REFUSED, " (the request is no longer in flight)", false },
	{ EEXIST, FZC_LEND_CLASS_REFUSED, " (the range overlaps bytes already placed or lent)", false },
	{ ENOTCONN, FZC_LEND_CLASS_REFUSED, " (the connection is gone)", false },
	{ EBADF, FZC_LEND_CLASS_REFUSED, "", false },
	{ EFAULT, FZC_LEND_CLASS_REFUSED, "", false },
	{ ENOSYS, FZC_LEND_CLASS_REFUSED, " (a kernel without the zero-copy opcodes)", false },
	{ ECANCELED, FZC_LEND_CLASS_REFUSED, " (cancelled)", false },
	{ EAGAIN, FZC_LEND_CLASS_RETRY, "", false },
	{ EINTR, FZC_LEND_CLASS_RETRY, "", false },
	{ ENOMEM, FZC_LEND_CLASS_RETRY, "", false },
	{ EBUSY, FZC_LEND_CLASS_RETRY, "", false },
};

#define LEND_TRIES	3	/* of one lending with a transient error */

enum fzc_lend_class fzc_lend_class(int err)
{
	for (size_t i = 0; i < sizeof(lend_policy) / sizeof(lend_policy[0]); i++)
		if (lend_policy[i].err == -err)
			return lend_policy[i].class;
	return FZC_LEND_CLASS_IO;
}

const char *fzc_lend_hint(int err)
{
	for (size_t i = 0; i < sizeof(lend_policy) / sizeof(lend_policy[0]); i++)
		if (lend_policy[i].err == -err)
			return lend_policy[i].hint;
	return "";
}

void fzc_file_refusal(struct fusezc_session *zs, int fd, int err)
{
	struct fzc_refused_file *e = NULL;
	struct stat st;
	size_t i;

	for (i = 0; i < sizeof(lend_policy) / sizeof(lend_policy[0]); i++)
		if (lend_policy[i].err == -err)
			break;
	if (i == sizeof(lend_policy) / sizeof(lend_policy[0]) || !lend_policy[i].for_good ||
	    fstat(fd, &st) != 0)
		return;
	pthread_mutex_lock(&zs->refused_lock);
	for (i = 0; i < atomic_load(&zs->refused_count) && e == NULL; i++)
		if (zs->refused[i].fd == fd)
			e = &zs->refused[i];
	if (e == NULL && atomic_load(&zs->refused_count) < FZC_REFUSED_FILES)
		e = &zs->refused[atomic_fetch_add(&zs->refused_count, 1)];
	if (e == NULL)		/* full: the oldest goes */
		e = &zs->refused[zs->refused_next++ % FZC_REFUSED_FILES];
	*e = (struct fzc_refused_file){
		.fd = fd, .dev = st.st_dev, .ino = st.st_ino, .err = err,
	};
	pthread_mutex_unlock(&zs->refused_lock);
}

bool fzc_file_refused(struct fusezc_session *zs, int fd, int *err)
{
	bool refused = false;
	struct stat st;
	unsigned int i, n;

	if (atomic_load(&zs->refused_count) == 0)
		return false;
	pthread_mutex_lock(&zs->refused_lock);
	n = atomic_load(&zs->refused_count);
	for (i = 0; i < n && zs->refused[i].fd != fd; i++)
		;
	if (i < n) {
		/* the number may name another file since: then forget it */
		refused = fstat(fd, &st) == 0 && st.st_dev == zs->refused[i].dev &&
			  st.st_ino == zs->refused[i].ino;
		if (refused)
			*err = zs->refused[i].err;
		else
			zs->refused[i].fd = -1;
	}
	pthread_mutex_unlock(&zs->refused_lock);
	return refused;
}

/* ------------------------------------------------------------------ */
/* Lendings in pieces                                                  */

size_t fzc_piece_limit(uint64_t max_sectors_kb, uint64_t max_segments, size_t page)
{
	uint64_t max = 0;

	if (page == 0)
		return 0;
	if (max_sectors_kb > 0)
		max = max_sectors_kb * 1024;
	if (max_segments > 0 && (max == 0 || max_segments * page < max))
		max = max_segments * page;
	if (max == 0 || max >= SIZE_MAX / 2)
		return 0;
	max -= max % page;
	return max ? (size_t)max : page;
}

unsigned int fzc_pieces(size_t len, size_t max, size_t page, size_t *piece)
{
	size_t n, each;

	*piece = len;
	if (max == 0 || len <= max || page == 0)
		return 1;
	n = (len + max - 1) / max;
	if (n > FZC_PIECES_MAX)
		return 1;
	/* equal pieces, each on a page boundary: no smaller than needed */
	each = (len + n - 1) / n;
	each = (each + page - 1) / page * page;
	*piece = each;
	/* each <= max (a multiple of @page) and (n - 1) * each < len */
	return (unsigned int)n;
}

unsigned int fzc_lend_split(struct fusezc_worker *w, int fd, size_t len, size_t *piece)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	unsigned int n;

	*piece = len;
	/* a page is never split: no system call for small lendings */
	if (len <= page || fzc_kops->piece_max == NULL)
		return 1;
	n = fzc_pieces(len, fzc_kops->piece_max(w->zs, fd), page, piece);
	/* one submission: no more than the SQ's room */
	if (n > (w->zs->opts.ring_entries ? w->zs->opts.ring_entries : FZC_DEFAULT_RING)) {
		*piece = len;
		return 1;
	}
	return n;
}

struct piece {
	size_t len, done;
	int tries;
	int err;		/* a refusal, an I/O error, a transient error kept */
	bool more;		/* bytes still to lend */
};

/* What the pieces did, in order: the bytes without a hole from the start
 * and the outcome of the first piece that did not place all of its own. */
static enum fzc_lend_outcome pieces_outcome(const struct piece *p, unsigned int n,
					    int stop_err, size_t *done, int *err)
{
	*done = 0;
	for (unsigned int i = 0; i < n; i++) {
		*done += p[i].done;
		if (p[i].done == p[i].len)
			continue;
		*err = p[i].err ? p[i].err : stop_err;
		if (*err == 0)
			return FZC_LENT;	/* the end of the file */
		switch (fzc_lend_class(*err)) {
		case FZC_LEND_CLASS_RETRY:
			return FZC_LEND_UNAVAILABLE;
		case FZC_LEND_CLASS_REFUSED:
			return FZC_LEND_REFUSED;
		case FZC_LEND_CLASS_IO:
			return FZC_LEND_IO_ERROR;
		}
	}
	return FZC_LENT;
}

/*
 * fzc_lend() of @n pieces of @piece bytes (the last: the rest): all
 * submitted in one system call, then their CQEs; a piece that came back
 * short or with a transient error is lent on as fzc_lend() does, with the
 * others that need it, until each is done.  A piece refused or failed stops
 * the rest from being lent again.
 */
static enum fzc_lend_outcome lend_pieces(struct fusezc_worker *w, const struct fzc_lending *l,
					 unsigned int n, size_t piece, size_t *done, int *err)
{
	struct fzc_lending part[FZC_PIECES_MAX];
	uint64_t ud[FZC_PIECES_MAX];
	struct piece p[FZC_PIECES_MAX];
	bool answered = false;
	int got, stop_err = 0, sleep_tries = 0;
	unsigned int i, k;

	for (i = 0; i < n; i++)
		p[i] = (struct piece){
			.len = i + 1 < n ? piece : l->len - (n - 1) * piece, .more = true,
		};
	for (;;) {
		for (k = 0, i = 0; i < n && !answered && stop_err == 0; i++) {
			if (!p[i].more)
				continue;
			part[k] = *l;
			part[k].off = l->off + i * piece + p[i].done;
			part[k].len = (unsigned int)(p[i].len - p[i].done);
			part[k].req_off = l->req_off + (uint32_t)(i * piece + p[i].done);
			ud[k++] = i + 1;
		}
		if (k == 0)
			break;
		if (sleep_tries > 0)
			usleep(1000U << sleep_tries);
		sleep_tries = 0;
		got = fzc_kops->ring_submit_lends(w, part, ud, k);
		if (got >= 0 && (unsigned int)got != k)
			got = -EIO;	/* fewer went: the ring failed */
		while (got >= 0 && k > 0) {
			uint64_t u = 0;
			bool ans = false;
			int res = 0;

			got = fzc_kops->ring_next_cqe(w, FZC_WAIT_FOREVER, &u, &res, &ans);
			if (got <= 0) {
				got = got < 0 ? got : -EIO;
				break;
			}
			if (u == 0 || u > n)
				continue;	/* not a piece's: cannot happen */
			k--;
			i = (unsigned int)u - 1;
			if (res > 0 && (size_t)res > p[i].len - p[i].done)
				res = -EIO;	/* a kernel bug: trust nothing it placed */
			answered |= ans;
			p[i].more = false;
			p[i].err = res < 0 ? res : 0;
			if (res > 0) {
				p[i].done += (size_t)res;
				p[i].tries = 0;
				p[i].more = p[i].done < p[i].len;
			}
			if (res >= 0)
				continue;	/* 0: this piece's end is the file's */
			switch (fzc_lend_class(res)) {
			case FZC_LEND_CLASS_RETRY:
				if (++p[i].tries < LEND_TRIES) {
					p[i].more = true;
					if (res != -EINTR && p[i].tries > sleep_tries)
						sleep_tries = p[i].tries;
				} else {
					stop_err = res;
				}
				break;
			case FZC_LEND_CLASS_REFUSED:
				fzc_file_refusal(w->zs, l->fd, res);
				stop_err = res;
				break;
			case FZC_LEND_CLASS_IO:
				stop_err = res;
				break;
			}
		}
		if (got < 0) {
			/* the ring failed: its exit takes back what it holds */
			*err = got;
			fzc_ring_failed(w, got);
			return FZC_LEND_UNAVAILABLE;
		}
	}
	*err = 0;
	if (answered) {
		for (i = 0; i < n; i++)
			*done += p[i].done;
		return FZC_LENT_ANSWERED;
	}
	return pieces_outcome(p, n, stop_err, done, err);
}

enum fzc_lend_outcome fzc_lend(struct fusezc_worker *w, const struct fzc_lending *l,
			       size_t *done, int *err)
{
	struct fzc_lending part = *l;
	unsigned int n;
	size_t piece;
	int tries = 0;

	*done = 0;
	if (fzc_file_refused(w->zs, l->fd, err))
		return FZC_LEND_REFUSED;
	*err = fzc_ring_get(w);
	if (*err < 0)
		return FZC_LEND_UNAVAILABLE;
	n = fzc_lend_split(w, l->fd, l->len, &piece);
	if (n > 1)
		return lend_pieces(w, l, n, piece, done, err);
	while (*done < l->len) {
		bool answered = false;
		int res;

		part.off = l->off + *done;
		part.len = l->len - (unsigned int)*done;
		part.req_off = l->req_off + (uint32_t)*done;
		*err = fzc_kops->ring_lend(w, &part, &res, &answered);
		if (*err < 0) {
			fzc_ring_failed(w, *err);
			return FZC_LEND_UNAVAILABLE;
		}
		if (res > 0 && (unsigned int)res > part.len)
			res = -EIO;	/* a kernel bug: trust nothing it placed */
		if (answered) {
			*done += res > 0 ? (size_t)res : 0;
			return FZC_LENT_ANSWERED;
		}
		if (res == 0)
			break;		/* the end of the file */
		if (res > 0) {
			*done += (size_t)res;
			tries = 0;
			continue;
		}
		*err = res;
		switch (fzc_lend_class(res)) {
		case FZC_LEND_CLASS_RETRY:
			if (++tries < LEND_TRIES) {
				if (res != -EINTR)
					usleep(1000U << tries);
				continue;
			}
			return FZC_LEND_UNAVAILABLE;
		case FZC_LEND_CLASS_REFUSED:
			fzc_file_refusal(w->zs, l->fd, res);
			return FZC_LEND_REFUSED;
		case FZC_LEND_CLASS_IO:
			return FZC_LEND_IO_ERROR;
		}
	}
	return FZC_LENT;
}

/* ------------------------------------------------------------------ */
/* Writes to /dev/fuse                                                 */

int fzc_dev_write(int devfd, const struct iovec *iov, int count)
{
	ssize_t res;

	do
		res = fzc_kops->dev_writev(devfd, iov, count);
	while (res < 0 && errno == EINTR);
	return res < 0 ? -errno : 0;
}

int fzc_reply_error(int devfd, uint64_t unique, int err)
{
	struct fuse_out_header out = {
		.len = sizeof(out), .error = err, .unique = unique,
	};
	struct iovec iov = { &out, sizeof(out) };

	return fzc_dev_write(devfd, &iov, 1);
}
