// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * The kernel side: a worker's io_uring and the writes to /dev/fuse (see
 * ring.h).
 */
#include "ring.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>
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
	/* room for the CQE of every lending in flight, beyond the SQ's 2x */
	p.flags |= IORING_SETUP_CQSIZE;
	p.cq_entries = 2 * zs->opts.ring_entries;
	if (p.cq_entries < FZC_INFLIGHT_MAX + zs->opts.ring_entries)
		p.cq_entries = FZC_INFLIGHT_MAX + zs->opts.ring_entries;
	res = io_uring_queue_init_params(zs->opts.ring_entries, &w->ring, &p);
#ifdef IORING_SETUP_SINGLE_ISSUER
	if (res == -EINVAL) {
		p.flags &= ~IORING_SETUP_SINGLE_ISSUER;
		res = io_uring_queue_init_params(zs->opts.ring_entries, &w->ring, &p);
	}
#endif
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

/* One io_uring_enter() submits and waits; the CQE is reaped here. */
static int real_ring_lend(struct fusezc_worker *w, const struct fzc_lending *l,
			  int *cqe_res, bool *answered)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);
	struct io_uring_cqe *cqe;
	int res, tries = 0;
	bool fixed = w->ring_fixed && l->devfd == w->ring_fd;

	if (sqe == NULL)	/* cannot happen: the ring is idle between lendings */
		return -EBUSY;
	fzc_prep_lend_op(sqe, l->write ? FUSEZC_IORING_OP_WRITE_SPLICE_BUF :
			 FUSEZC_IORING_OP_READ_SPLICE_BUF, l->fd, l->off, l->len,
			 fixed ? 0 : l->devfd, fixed, l->unique);
	sqe->splice_off_in = fusezc_lend_pos(l->unique, l->req_off);
	/* fusezc_reply_read() maps the read onto one range of one file: its
	 * end is the end of the read's data, as for a copy */
	if (l->kernel_answers)
		sqe->ioprio = l->write ? FUSEZC_SPLICE_BUF_COMPLETE :
			      FUSEZC_SPLICE_BUF_COMPLETE | FUSEZC_SPLICE_BUF_EOF;
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

static int real_ring_submit_lend(struct fusezc_worker *w, const struct fzc_lending *l,
				 uint64_t user_data)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);
	bool fixed = w->ring_fixed && l->devfd == w->ring_fd;
	int res, tries = 0;

	if (sqe == NULL)	/* cannot happen: at most FZC_INFLIGHT_MAX in flight */
		return -EBUSY;
	fzc_prep_lend(sqe, l->fd, l->off, l->len, fixed ? 0 : l->devfd, fixed,
		      l->unique);
	sqe->splice_off_in = fusezc_lend_pos(l->unique, l->req_off);
	sqe->ioprio = FUSEZC_SPLICE_BUF_COMPLETE | FUSEZC_SPLICE_BUF_EOF;
	sqe->user_data = user_data;
	do
		res = io_uring_submit(&w->ring);
	while ((res == -EINTR || res == -EAGAIN) && ++tries < 1000);
	return res == 1 ? 0 : res < 0 ? res : -EIO;
}

static int real_ring_next_cqe(struct fusezc_worker *w, bool wait, uint64_t *user_data,
			      int *res, bool *answered)
{
	struct io_uring_cqe *cqe;
	int err;

	do
		err = wait ? io_uring_wait_cqe(&w->ring, &cqe) : io_uring_peek_cqe(&w->ring, &cqe);
	while (err == -EINTR);
	if (err == -EAGAIN)
		return 0;
	if (err < 0)
		return err;
	*user_data = cqe->user_data;
	*res = cqe->res;
	*answered = cqe->flags & FUSEZC_CQE_F_LENDER_COMPLETED;
	io_uring_cqe_seen(&w->ring, cqe);
	return 1;
}

static int real_ring_poll_fd(struct fusezc_worker *w)
{
	return w->ring.ring_fd;
}

const struct fzc_kernel_ops fzc_real_kops = {
	.ring_probe = real_ring_probe,
	.ring_setup = real_ring_setup,
	.ring_exit = real_ring_exit,
	.ring_lend = real_ring_lend,
	.dev_writev = real_dev_writev,
	.ring_submit_lend = real_ring_submit_lend,
	.ring_next_cqe = real_ring_next_cqe,
	.ring_poll_fd = real_ring_poll_fd,
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

enum fzc_lend_outcome fzc_lend(struct fusezc_worker *w, const struct fzc_lending *l,
			       size_t *done, int *err)
{
	struct fzc_lending part = *l;
	int tries = 0;

	*done = 0;
	if (fzc_file_refused(w->zs, l->fd, err))
		return FZC_LEND_REFUSED;
	*err = fzc_ring_get(w);
	if (*err < 0)
		return FZC_LEND_UNAVAILABLE;
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
