// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * fusezc_reply_read(): answer a FUSE_READ by zero copy (io_uring
 * IORING_OP_READ_SPLICE_BUF into the request's pages, then a small
 * FUSEZC_UNIQUE_ZC_REPLY reply), by splice, or by copy.
 */
#include "fuse_zc_int.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

static void ring_teardown(struct fusezc_worker *w, int err)
{
	if (w->ring_ready)
		io_uring_queue_exit(&w->ring);
	w->ring_ready = false;
	w->ring_fixed = false;
	w->ring_err = err;
	if (fzc_note_once(w->zs, FZC_NOTE_RING, err))
		fuse_log(FUSE_LOG_WARNING,
			 "fuse-zc: io_uring failed (%s); zero copy off for this worker\n",
			 strerror(-err));
}

static int ring_setup(struct fusezc_worker *w)
{
	struct fusezc_session *zs = w->zs;
	struct io_uring_params p;
	int res;

	memset(&p, 0, sizeof(p));
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
	w->ring_ready = true;
	if (zs->opts.register_fuse_fd) {
		res = io_uring_register_files(&w->ring, &zs->fuse_fd, 1);
		if (res == 0)
			w->ring_fixed = true;
		else if (fzc_note_once(zs, FZC_NOTE_RING, res))
			fuse_log(FUSE_LOG_WARNING,
				 "fuse-zc: cannot register /dev/fuse with io_uring (%s); using the plain fd\n",
				 strerror(-res));
	}
	return 0;
}

/*
 * Lend the pages of the request being processed to one READ_SPLICE_BUF and
 * wait for its completion.  Returns the bytes placed or -errno; *kernel is
 * true when the errno is the CQE's (the kernel refused the lending).
 */
static int lend(struct fusezc_worker *w, int fd, off_t off, size_t size,
		bool *kernel)
{
	struct fusezc_session *zs = w->zs;
	struct io_uring_sqe *sqe;
	struct io_uring_cqe *cqe;
	int res, tries = 0;

	*kernel = false;
	if (w->ring_err)
		return w->ring_err;
	if (!w->ring_ready) {
		res = ring_setup(w);
		if (res < 0) {
			ring_teardown(w, res);
			return res;
		}
	}
	sqe = io_uring_get_sqe(&w->ring);
	if (sqe == NULL)	/* cannot happen: the ring is idle between requests */
		return -EBUSY;
	fzc_prep_lend(sqe, fd, (uint64_t)off, size > UINT_MAX ? UINT_MAX : (unsigned int)size,
		      w->ring_fixed ? 0 : zs->fuse_fd, w->ring_fixed, w->in.unique);
	/* One io_uring_enter() submits and waits; the CQE is reaped below. */
	do
		res = io_uring_submit_and_wait(&w->ring, 1);
	while ((res == -EINTR || res == -EAGAIN) && ++tries < 1000);
	if (res != 1) {
		/* Never leave a stale lending queued: drop the ring. */
		res = res < 0 ? res : -EIO;
		ring_teardown(w, res);
		return res;
	}
	do
		res = io_uring_wait_cqe(&w->ring, &cqe);
	while (res == -EINTR);
	if (res < 0) {
		ring_teardown(w, res);
		return res;
	}
	res = cqe->res;
	io_uring_cqe_seen(&w->ring, cqe);
	*kernel = true;
	if (res >= 0 && (size_t)res > size)
		res = -EIO;
	return res;
}

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
			fuse_log(FUSE_LOG_WARNING,
				 "fuse-zc: libfuse answered a read by copy, not splice (%s)\n",
				 atomic_load(&zs->splice_enabled) ? "pipe limits" :
				 "FUSE_CAP_SPLICE_WRITE not enabled: call fusezc_conn_init() from the init handler");
	}
}

/* 0: replied (zero copy, or copy after a refused reply); <0: caller falls back. */
static int reply_zerocopy(struct fusezc_worker *w, fuse_req_t req, int fd, off_t off,
			  size_t size)
{
	struct fusezc_session *zs = w->zs;
	struct fusezc_read_out ro;
	bool kernel;
	int res;

	if (!w->in_valid || w->in.opcode != FUSE_READ) {
		if (!atomic_exchange(&zs->noted_misuse, true))
			fuse_log(FUSE_LOG_WARNING,
				 "fuse-zc: fusezc_reply_read() called outside a FUSE_READ handler; not using zero copy\n");
		fzc_count_fallback(zs, EINVAL);
		return -EINVAL;
	}
	res = lend(w, fd, off, size, &kernel);
	if (res < 0) {
		fzc_count_fallback(zs, res);
		if (kernel && fzc_note_once(zs, FZC_NOTE_LEND, res))
			fuse_log(FUSE_LOG_WARNING,
				 "fuse-zc: zero-copy read refused by the kernel (%s); falling back to %s\n",
				 strerror(-res), atomic_load(&zs->splice_enabled) ? "splice" : "copy");
		return res;
	}

	memset(&ro, 0, sizeof(ro));
	ro.size = (uint64_t)res;
	w->pend = FZC_PEND_ZC_READ;
	w->pend_fd = fd;
	w->pend_off = off;
	w->pend_size = size;
	w->pend_fell_back = false;
	w->pend_copy_bytes = 0;
	/* The writev hook adds FUSEZC_UNIQUE_ZC_REPLY (and copies on EBUSY). */
	if (fuse_reply_buf(req, (const char *)&ro, sizeof(ro)) == 0) {
		if (w->pend_fell_back) {
			fzc_add(&zs->copy_bytes, (uint64_t)w->pend_copy_bytes);
			fzc_add(&zs->copy_requests, 1);
		} else {
			fzc_add(&zs->zc_bytes, (uint64_t)res);
			fzc_add(&zs->zc_requests, 1);
		}
	}
	w->pend = FZC_PEND_NONE;
	return 0;
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
		if (atomic_load(&zs->zc_active) &&
		    reply_zerocopy(w, req, fd, off, size) == 0)
			break;
		if (atomic_load(&zs->splice_enabled))
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
