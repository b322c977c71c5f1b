// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * fusezc_reply_read(): answer a FUSE_READ by zero copy (io_uring
 * IORING_OP_READ_SPLICE_BUF into the request's pages, then a small
 * FUSEZC_UNIQUE_ZC_REPLY reply), by splice, or by copy.
 *
 * Zero copy is bound to the request, not to the thread: fusezc_reply_read()
 * only arms a thread-local fzc_read_reply and lets libfuse send the reply
 * of @req; the writev hook sees the request's unique id in that reply's
 * header and calls fzc_answer_read() for exactly that request, which must be
 * a FUSE_READ the read hook recorded (its size bounds the lending).
 *
 * Every path ends in exactly one reply: a zero-copy reply, else a copy
 * reply, else an error reply.
 */
#include "fuse_zc_int.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

__thread struct fzc_read_reply *fzc_tls_read_reply;

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
	res = io_uring_queue_init_params(zs->opts.ring_entries, &w->ring, &p);
	if (res == -EINVAL && p.flags != 0) {
		memset(&p, 0, sizeof(p));
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
	if (l->kernel_answers)
		sqe->ioprio = FUSEZC_SPLICE_BUF_COMPLETE;
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
	sqe->ioprio = FUSEZC_SPLICE_BUF_COMPLETE;
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

static const struct fzc_kernel_ops real_kops = {
	.ring_setup = real_ring_setup,
	.ring_exit = real_ring_exit,
	.ring_lend = real_ring_lend,
	.dev_writev = real_dev_writev,
	.ring_submit_lend = real_ring_submit_lend,
	.ring_next_cqe = real_ring_next_cqe,
	.ring_poll_fd = real_ring_poll_fd,
};
const struct fzc_kernel_ops *fzc_kops = &real_kops;

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

/* ------------------------------------------------------------------ */
/* Answering a FUSE_READ from the writev hook                          */

/*
 * A lending the kernel refused, as opposed to an error of the backing
 * file's read: refusals fall back to a copy reply, backing errors are the
 * reader's answer.  EINVAL is both (a range outside the request, or an
 * O_DIRECT misalignment); the copy's pread() then tells which.
 */
static bool lend_refused(int err)
{
	switch (-err) {
	case EOPNOTSUPP:	/* not a lender, not a regular file or block device */
	case EPERM:		/* contract v2: CAP_SYS_ADMIN only by default */
	case EXDEV:		/* backing file on FUSE or a stacked file system */
	case E2BIG:
	case EINVAL:
	case ENOENT:		/* no such request in flight */
	case EBADF:
	case EBUSY:
	case EAGAIN:
	case EINTR:
	case ENOMEM:
	case EFAULT:
	case ENOSYS:
	case ECANCELED:
		return true;
	default:
		return false;
	}
}

static const char *refusal_hint(int err)
{
	switch (-err) {
	case EPERM:
		return " (the server lacks CAP_SYS_ADMIN)";
	case EXDEV:
		return " (backing file on a FUSE or stacked file system)";
	case EOPNOTSUPP:
		return " (backing file cannot be lent to)";
	default:
		return "";
	}
}

enum lend_outcome {
	LEND_PLACED,		/* *placed bytes are in the request's pages */
	LEND_ANSWERED,		/* ... and the kernel answered the read with them */
	LEND_REFUSED,		/* reply by copy */
	LEND_IO_ERROR,		/* the backing file failed: reply the error */
};

/*
 * Lend @size bytes of @fd at @off to request @unique.  A short completion
 * is not the end of the file: the rest is lent at the next offset of the
 * request, until all is placed or a completion of 0 (end of file).  Each
 * lending lets the kernel answer the read once its data is complete.
 */
static enum lend_outcome lend_all(struct fusezc_worker *w, int devfd, uint64_t unique, int fd,
				  off_t off, size_t size, size_t *placed, int *err)
{
	struct fusezc_session *zs = w->zs;

	*placed = 0;
	*err = fzc_ring_get(w);
	if (*err < 0)
		return LEND_REFUSED;
	while (*placed < size) {
		struct fzc_lending l = {
			.devfd = devfd,
			.fd = fd,
			.off = (uint64_t)off + *placed,
			.len = (unsigned int)(size - *placed),
			.unique = unique,
			.req_off = (uint32_t)*placed,
			.kernel_answers = atomic_load(&zs->kernel_answers),
		};
		bool answered = false;
		int res;

		*err = fzc_kops->ring_lend(w, &l, &res, &answered);
		if (*err < 0) {
			fzc_ring_failed(w, *err);
			return LEND_REFUSED;
		}
		if (res == -EINVAL && l.kernel_answers) {
			/* a series kernel before IORING_SPLICE_BUF_COMPLETE */
			if (atomic_exchange(&zs->kernel_answers, false))
				fzc_log(zs, FUSE_LOG_INFO,
					"the kernel cannot answer zero-copy reads itself; the server replies");
			continue;
		}
		if (answered) {
			*placed += res > 0 ? (size_t)res : 0;
			return LEND_ANSWERED;
		}
		if (res == 0)
			break;		/* end of the backing file */
		if (res > 0 && (unsigned int)res > l.len)
			res = -EIO;	/* a kernel bug: trust nothing it placed */
		if (res < 0) {
			*err = res;
			if (!lend_refused(res)) {
				if (fzc_note_once(zs, FZC_NOTE_IO, res))
					fzc_log(zs, FUSE_LOG_WARNING,
						"backing file read failed (%s); replied to the reader",
						strerror(-res));
				return LEND_IO_ERROR;
			}
			if (fzc_note_once(zs, FZC_NOTE_LEND, res))
				fzc_log(zs, FUSE_LOG_WARNING,
					"zero-copy read refused by the kernel (%s)%s; falling back to copy",
					strerror(-res), refusal_hint(res));
			return LEND_REFUSED;
		}
		*placed += (size_t)res;
	}
	return LEND_PLACED;
}

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

/* A copy reply; if the kernel refuses even that, an error reply.  @w's
 * copy buffer is used: it must be the calling thread's. */
static int reply_copy_raw(struct fusezc_worker *w, int devfd, uint64_t unique,
			  int fd, off_t off, size_t size)
{
	struct fuse_out_header out = { .unique = unique };
	struct iovec iov[2];
	void *buf = fzc_copybuf(w, size);
	ssize_t n;
	int res;

	n = buf ? fzc_pread_full(fd, buf, size, off) : -ENOMEM;
	if (n < 0)
		return fzc_reply_error(devfd, unique, (int)n);
	out.len = (uint32_t)(sizeof(out) + (size_t)n);
	iov[0].iov_base = &out;
	iov[0].iov_len = sizeof(out);
	iov[1].iov_base = buf;
	iov[1].iov_len = (size_t)n;
	res = fzc_dev_write(devfd, iov, 2);
	if (res == 0) {
		fzc_add(&w->zs->copy_bytes, (uint64_t)n);
		fzc_add(&w->zs->copy_requests, 1);
		return 0;
	}
	if (res == -ENOENT)	/* the request is gone (interrupted, aborted) */
		return res;
	return fzc_reply_error(devfd, unique, -EIO);
}

int fzc_answer_read(struct fusezc_worker *w, int devfd, uint64_t unique,
		    const struct fzc_read_reply *rr)
{
	struct fusezc_session *zs = w->zs;
	struct fusezc_read_out ro;
	struct fuse_out_header out;
	struct fzc_read_in ri;
	struct iovec iov[2];
	enum lend_outcome how;
	size_t size = rr->size, placed;
	int err, res;

	if (!fzc_reads_take(zs, unique, &ri)) {
		/* Not a FUSE_READ the read hook recorded: never lend. */
		if (!atomic_exchange(&zs->noted_misuse, true))
			fzc_log(zs, FUSE_LOG_WARNING,
				"fusezc_reply_read() for a request that is not a FUSE_READ in flight; replying by copy");
		return reply_copy_raw(w, devfd, unique, rr->fd, rr->off, size);
	}
	/* The lending must lie inside the request's data. */
	if (size > ri.size)
		size = ri.size;

	if (fzc_lend_async(w, devfd, unique, rr->fd, rr->off, size))
		return 0;
	if (w->inflight > 0)
		fzc_worker_drain(w);	/* the synchronous lending waits for its own CQE */
	how = lend_all(w, devfd, unique, rr->fd, rr->off, size, &placed, &err);
	if (how == LEND_ANSWERED) {
		fzc_add(&zs->zc_bytes, placed);
		fzc_add(&zs->zc_requests, 1);
		fzc_add(&zs->zc_kernel_answered, 1);
		return 0;
	}
	if (how == LEND_IO_ERROR)
		return fzc_reply_error(devfd, unique, err);
	if (how == LEND_PLACED && placed == 0)	/* at or past the end of file */
		return reply_copy_raw(w, devfd, unique, rr->fd, rr->off, size);
	if (how == LEND_PLACED) {
		memset(&ro, 0, sizeof(ro));
		ro.size = placed;
		out.len = sizeof(out) + sizeof(ro);
		out.error = 0;
		out.unique = unique | FUSEZC_UNIQUE_ZC_REPLY;
		iov[0].iov_base = &out;
		iov[0].iov_len = sizeof(out);
		iov[1].iov_base = &ro;
		iov[1].iov_len = sizeof(ro);
		res = fzc_dev_write(devfd, iov, 2);
		if (res == 0) {
			fzc_add(&zs->zc_bytes, placed);
			fzc_add(&zs->zc_requests, 1);
			return 0;
		}
		if (res == -ENOENT)
			return res;
		/* Refused (contract v2: EINVAL, the request stays in flight). */
		err = res;
		if (fzc_note_once(zs, FZC_NOTE_REPLY, err))
			fzc_log(zs, FUSE_LOG_WARNING,
				"zero-copy reply refused by the kernel (%s); falling back to copy",
				strerror(-err));
	}
	fzc_count_fallback(zs, err);
	return reply_copy_raw(w, devfd, unique, rr->fd, rr->off, size);
}

/* ------------------------------------------------------------------ */
/* Asynchronous lending                                                */

/*
 * The CQE of an asynchronous lending.  The kernel answered the read, or it
 * did not and the read is still ours: a refusal, a short or failed lending
 * (the rest is not lent again: the copy replaces it all), an error of the
 * backing file.  @cw is the calling thread's worker state (its copy buffer).
 */
static void async_complete(struct fusezc_worker *w, struct fusezc_worker *cw,
			   const struct fzc_inflight *p, int res, bool answered)
{
	struct fusezc_session *zs = w->zs;
	int err = res < 0 ? res : -ENODATA;

	if (answered) {
		fzc_add(&zs->zc_bytes, res > 0 ? (uint64_t)res : 0);
		fzc_add(&zs->zc_requests, 1);
		fzc_add(&zs->zc_kernel_answered, 1);
		return;
	}
	if (res == -EINVAL && atomic_exchange(&zs->kernel_answers, false)) {
		/* a series kernel before IORING_SPLICE_BUF_COMPLETE */
		fzc_log(zs, FUSE_LOG_INFO,
			"the kernel cannot answer zero-copy reads itself; the server replies");
	} else if (res < 0 && !lend_refused(res)) {
		if (fzc_note_once(zs, FZC_NOTE_IO, res))
			fzc_log(zs, FUSE_LOG_WARNING,
				"backing file read failed (%s); replied to the reader",
				strerror(-res));
		fzc_reply_error(p->devfd, p->unique, res);
		return;
	} else if (res < 0 && fzc_note_once(zs, FZC_NOTE_LEND, res)) {
		fzc_log(zs, FUSE_LOG_WARNING,
			"zero-copy read refused by the kernel (%s)%s; falling back to copy",
			strerror(-res), refusal_hint(res));
	}
	/* also a lending short before the end of the file (-ENODATA) */
	fzc_count_fallback(zs, err);
	reply_copy_raw(cw, p->devfd, p->unique, p->fd, p->off, p->size);
}

/* Under w->lend_lock: answer one CQE; 1, 0 none, -errno of the ring. */
static int reap_one_locked(struct fusezc_worker *w, struct fusezc_worker *cw, bool wait)
{
	struct fzc_inflight p;
	uint64_t ud;
	bool answered = false;
	int res = 0, got;

	got = fzc_kops->ring_next_cqe(w, wait, &ud, &res, &answered);
	if (got <= 0)
		return got;
	if (ud == 0 || ud > FZC_INFLIGHT_MAX || !w->lends[ud - 1].busy) {
		fzc_log(w->zs, FUSE_LOG_ERR, "a CQE for no lending in flight (%llu)",
			(unsigned long long)ud);
		return 1;
	}
	p = w->lends[ud - 1];
	w->lends[ud - 1].busy = false;
	w->inflight--;
	async_complete(w, cw, &p, res, answered);
	return 1;
}

void fzc_reap_locked(struct fusezc_worker *w, struct fusezc_worker *cw, bool wait)
{
	int got;

	if (!w->ring_ready)
		return;
	while (w->inflight > 0) {
		got = reap_one_locked(w, cw, wait);
		if (got < 0 && got != -EINTR) {
			fzc_log(w->zs, FUSE_LOG_ERR, "cannot reap zero-copy lendings (%s)",
				strerror(-got));
			return;
		}
		if (got == 0)
			return;
	}
}

bool fzc_lend_async(struct fusezc_worker *w, int devfd, uint64_t unique, int fd,
		    off_t off, size_t size)
{
	struct fusezc_session *zs = w->zs;
	struct fzc_lending l = {
		.devfd = devfd, .fd = fd, .off = (uint64_t)off,
		.len = (unsigned int)size, .unique = unique, .kernel_answers = true,
	};
	unsigned int i;
	int err;

	if (zs->opts.sync_lending || !atomic_load(&zs->kernel_answers) || size == 0 ||
	    fzc_kops->ring_submit_lend == NULL || fzc_ring_get(w) < 0)
		return false;
	pthread_mutex_lock(&w->lend_lock);
	fzc_reap_locked(w, w, false);
	while (w->inflight == FZC_INFLIGHT_MAX && reap_one_locked(w, w, true) > 0)
		;
	for (i = 0; i < FZC_INFLIGHT_MAX && w->lends[i].busy; i++)
		;
	if (i == FZC_INFLIGHT_MAX) {
		pthread_mutex_unlock(&w->lend_lock);
		return false;
	}
	err = fzc_kops->ring_submit_lend(w, &l, i + 1);
	if (err == 0) {
		w->lends[i] = (struct fzc_inflight){
			.unique = unique, .devfd = devfd, .fd = fd, .off = off,
			.size = size, .busy = true,
		};
		w->inflight++;
	}
	pthread_mutex_unlock(&w->lend_lock);
	if (err < 0 && fzc_note_once(zs, FZC_NOTE_RING, err))
		fzc_log(zs, FUSE_LOG_WARNING,
			"io_uring submission failed (%s); lending synchronously", strerror(-err));
	return err == 0;
}

/* ------------------------------------------------------------------ */
/* The reaper: answers CQEs of workers that wait for requests          */

static void *reaper_main(void *arg)
{
	struct fusezc_session *zs = arg;
	struct epoll_event ev[16];
	int n, i;

	for (;;) {
		n = epoll_wait(zs->reaper_epfd, ev, 16, -1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			fzc_log(zs, FUSE_LOG_ERR, "reaper: epoll_wait: %s", strerror(errno));
			return NULL;
		}
		for (i = 0; i < n; i++) {
			struct fusezc_worker *w = ev[i].data.ptr;

			if (w == NULL)
				return NULL;	/* fzc_reaper_stop() */
			pthread_mutex_lock(&w->lend_lock);
			fzc_reap_locked(w, &zs->reaper_worker, false);
			if (w->inflight > 0)
				fzc_reaper_watch(w, &zs->reaper_worker);
			pthread_mutex_unlock(&w->lend_lock);
		}
	}
}

/* Under zs->reaper_lock. */
static int reaper_start(struct fusezc_session *zs)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
	sigset_t all, old;
	int err;

	zs->reaper_epfd = epoll_create1(EPOLL_CLOEXEC);
	if (zs->reaper_epfd < 0)
		return -errno;
	zs->reaper_stopfd = eventfd(0, EFD_CLOEXEC);
	if (zs->reaper_stopfd < 0 ||
	    epoll_ctl(zs->reaper_epfd, EPOLL_CTL_ADD, zs->reaper_stopfd, &ev) < 0) {
		err = -errno;
		goto fail;
	}
	zs->reaper_worker.zs = zs;
	/* signals are for the file system's main thread, as with libfuse's workers */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	err = -pthread_create(&zs->reaper, NULL, reaper_main, zs);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (err == 0) {
		zs->reaper_running = true;
		return 0;
	}
fail:
	if (zs->reaper_stopfd >= 0)
		close(zs->reaper_stopfd);
	close(zs->reaper_epfd);
	zs->reaper_epfd = zs->reaper_stopfd = -1;
	return err;
}

/* Under w->lend_lock.  Without a reaper, the caller (@cw) waits itself. */
void fzc_reaper_watch(struct fusezc_worker *w, struct fusezc_worker *cw)
{
	struct fusezc_session *zs = w->zs;
	struct epoll_event ev = { .events = EPOLLIN | EPOLLONESHOT, .data.ptr = w };
	int fd = fzc_kops->ring_poll_fd ? fzc_kops->ring_poll_fd(w) : -1;
	int err = fd < 0 ? -EOPNOTSUPP : 0;

	pthread_mutex_lock(&zs->reaper_lock);
	if (err == 0 && !zs->reaper_running)
		err = reaper_start(zs);
	if (err == 0 &&
	    epoll_ctl(zs->reaper_epfd, w->watched ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev) < 0)
		err = -errno;
	pthread_mutex_unlock(&zs->reaper_lock);
	if (err == 0) {
		w->watched = true;
		return;
	}
	if (fzc_note_once(zs, FZC_NOTE_RING, err))
		fzc_log(zs, FUSE_LOG_WARNING,
			"no reaper for zero-copy lendings (%s); workers wait for theirs",
			strerror(-err));
	fzc_reap_locked(w, cw, true);
}

void fzc_worker_drain(struct fusezc_worker *w)
{
	struct fusezc_session *zs = w->zs;
	int fd;

	pthread_mutex_lock(&w->lend_lock);
	fzc_reap_locked(w, w, true);
	if (w->watched) {
		fd = fzc_kops->ring_poll_fd(w);
		pthread_mutex_lock(&zs->reaper_lock);
		if (zs->reaper_running)
			epoll_ctl(zs->reaper_epfd, EPOLL_CTL_DEL, fd, NULL);
		pthread_mutex_unlock(&zs->reaper_lock);
		w->watched = false;
	}
	pthread_mutex_unlock(&w->lend_lock);
}

void fzc_reaper_stop(struct fusezc_session *zs)
{
	uint64_t one = 1;
	bool running;

	pthread_mutex_lock(&zs->reaper_lock);
	running = zs->reaper_running;
	zs->reaper_running = false;
	pthread_mutex_unlock(&zs->reaper_lock);
	if (!running)
		return;
	if (write(zs->reaper_stopfd, &one, sizeof(one)) != sizeof(one))
		pthread_cancel(zs->reaper);
	pthread_join(zs->reaper, NULL);
	close(zs->reaper_stopfd);
	close(zs->reaper_epfd);
	zs->reaper_epfd = zs->reaper_stopfd = -1;
	free(zs->reaper_worker.copybuf);
	zs->reaper_worker.copybuf = NULL;
}

/* ------------------------------------------------------------------ */
/* fusezc_reply_read                                                   */

static void reply_copy(struct fusezc_worker *w, fuse_req_t req, int fd, off_t off,
		       size_t size)
{
	void *buf, *tmp = NULL;
	ssize_t n;

	buf = w ? fzc_copybuf(w, size) : (tmp = fzc_alloc_aligned(size));
	if (buf == NULL) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	n = fzc_pread_full(fd, buf, size, off);
	if (n < 0)
		fuse_reply_err(req, (int)-n);
	else if (fuse_reply_buf(req, buf, (size_t)n) == 0 && w) {
		fzc_add(&w->zs->copy_bytes, (uint64_t)n);
		fzc_add(&w->zs->copy_requests, 1);
	}
	free(tmp);
}

static void reply_splice(struct fusezc_worker *w, fuse_req_t req, int fd, off_t off,
			 size_t size)
{
	struct fuse_bufvec bv = FUSE_BUFVEC_INIT(size);
	struct fusezc_session *zs = w->zs;
	int expect = FZC_SPLICE_UNKNOWN;

	bv.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	bv.buf[0].fd = fd;
	bv.buf[0].pos = off;
	w->spliced = false;
	w->spliced_bytes = 0;
	w->written_bytes = -1;
	if (fuse_reply_data(req, &bv, FUSE_BUF_SPLICE_MOVE) != 0)
		return;
	if (w->spliced) {
		fzc_add(&zs->splice_bytes, (uint64_t)w->spliced_bytes);
		fzc_add(&zs->splice_requests, 1);
		atomic_store(&zs->splice_state, FZC_SPLICE_SEEN);
	} else if (w->written_bytes >= 0) {
		/* libfuse copied: SPLICE_WRITE not wanted, or a pipe limit. */
		fzc_add(&zs->copy_bytes, (uint64_t)w->written_bytes);
		fzc_add(&zs->copy_requests, 1);
		if (atomic_compare_exchange_strong(&zs->splice_state, &expect,
						   FZC_SPLICE_WARNED))
			fzc_log(zs, FUSE_LOG_WARNING,
				"libfuse answered a read by copy, not splice (%s)",
				atomic_load(&zs->splice_enabled) ? "pipe limits" :
				"FUSE_CAP_SPLICE_WRITE not enabled: call fusezc_conn_init() from the init handler");
	}
}

/*
 * Let libfuse send @req's reply; the writev hook answers it (see the top of
 * this file).  The placeholder body is never written.
 */
static void reply_zerocopy(fuse_req_t req, int fd, off_t off, size_t size)
{
	struct fzc_read_reply rr = { .fd = fd, .off = off, .size = size };

	fzc_tls_read_reply = &rr;
	fuse_reply_buf(req, NULL, 0);
	fzc_tls_read_reply = NULL;
	if (!rr.answered)	/* libfuse sent nothing: nothing more we can do */
		fzc_log(fzc_tls_worker ? fzc_tls_worker->zs : NULL, FUSE_LOG_ERR,
			"libfuse did not send a read reply");
}

void fusezc_reply_read(fuse_req_t req, int fd, off_t off, size_t size)
{
	struct fusezc_worker *w = fzc_tls_worker;
	struct fusezc_session *zs = w ? w->zs : NULL;

	if (zs == NULL) {	/* not on a fusezc worker: plain copy */
		reply_copy(NULL, req, fd, off, size);
		return;
	}
	switch (zs->opts.read_mode) {
	case FUSEZC_READ_ZEROCOPY:
		if (atomic_load(&zs->zc_active))
			reply_zerocopy(req, fd, off, size);
		else if (atomic_load(&zs->splice_enabled))
			reply_splice(w, req, fd, off, size);
		else
			reply_copy(w, req, fd, off, size);
		break;
	case FUSEZC_READ_SPLICE:
		reply_splice(w, req, fd, off, size);
		break;
	case FUSEZC_READ_COPY:
	default:
		reply_copy(w, req, fd, off, size);
		break;
	}
}
