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
#include "read.h"

#include "reaper.h"
#include "ring.h"
#include "worker.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

__thread struct fzc_read_reply *fzc_tls_read_reply;

/* ------------------------------------------------------------------ */
/* Answering a FUSE_READ from the writev hook                          */

/* One line per errno: a refusal, answered by copy ... */
static void note_refused(struct fusezc_session *zs, int err)
{
	if (fzc_note_once(zs, FZC_NOTE_LEND, err))
		fzc_log(zs, FUSE_LOG_WARNING,
			"zero-copy read refused by the kernel (%s)%s; falling back to copy",
			strerror(-err), fzc_lend_hint(err));
}

/* ... or an error of the backing file, which is the reader's answer. */
static void note_io_error(struct fusezc_session *zs, int err)
{
	if (fzc_note_once(zs, FZC_NOTE_IO, err))
		fzc_log(zs, FUSE_LOG_WARNING,
			"backing file read failed (%s); replied to the reader", strerror(-err));
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

	fzc_ring_read_yield(w);	/* a backing file may be slow */
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

/*
 * The server's zero-copy reply: @placed bytes are in the request's pages.
 * 0, -ENOENT (the request is gone) or the kernel's refusal.
 */
static int reply_zc_placed(struct fusezc_session *zs, int devfd, uint64_t unique,
			   size_t placed)
{
	struct fusezc_read_out ro;
	struct fuse_out_header out;
	struct iovec iov[2];
	int res;

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
	} else if (res != -ENOENT && fzc_note_once(zs, FZC_NOTE_REPLY, res)) {
		fzc_log(zs, FUSE_LOG_WARNING,
			"zero-copy reply refused by the kernel (%s); falling back to copy",
			strerror(-res));
	}
	return res;
}

/* ------------------------------------------------------------------ */
/* Asynchronous lending                                                */

/*
 * The CQE of an asynchronous lending.  The kernel answered the read, or it
 * did not and the read is still ours: a refusal, a short or failed lending
 * (the rest is not lent again: the copy replaces it all), an error of the
 * backing file.  @cw is the calling thread's worker state (its copy buffer).
 */
static void read_lend_done(struct fusezc_worker *w, struct fusezc_worker *cw,
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
	if (res < 0 && fzc_lend_class(res) == FZC_LEND_CLASS_IO) {
		note_io_error(zs, res);
		fzc_reply_error(p->devfd, p->unique, res);
		return;
	}
	/*
	 * All that was lent was placed, but the kernel did not answer: the
	 * lending was shorter than the request (the caller's data ends inside
	 * it, e.g. a member of an archive), so the request is not complete in
	 * the kernel's eyes.  Its data is: the server answers zero copy.
	 */
	if (res > 0 && (size_t)res == p->size) {
		int r = reply_zc_placed(zs, p->devfd, p->unique, (size_t)res);

		if (r == 0 || r == -ENOENT)
			return;
		err = r;
	}
	/* a refusal, a transient error (the reaper may not submit on this
	 * worker's ring), or a lending short before the end of the file */
	if (res < 0) {
		note_refused(zs, res);
		fzc_file_refusal(zs, p->fd, res);
	}
	fzc_count_fallback(zs, err);
	reply_copy_raw(cw, p->devfd, p->unique, p->fd, p->off, p->size);
}

int fzc_answer_read(struct fusezc_worker *w, int devfd, uint64_t unique,
		    const struct fzc_read_reply *rr)
{
	struct fusezc_session *zs = w->zs;
	struct fzc_request ri;
	struct fzc_lending l = {
		.devfd = devfd, .fd = rr->fd, .off = (uint64_t)rr->off,
		.unique = unique, .kernel_answers = atomic_load(&zs->kernel_answers),
	};
	size_t size = rr->size, placed;
	int err, res;

	if (!fzc_requests_take(&zs->requests, unique, &ri) || ri.write) {
		/* Not a FUSE_READ the read hook recorded: never lend. */
		if (!atomic_exchange(&zs->warned_unrecorded_read, true))
			fzc_log(zs, FUSE_LOG_WARNING,
				"fusezc_reply_read() for a request that is not a FUSE_READ in flight; replying by copy");
		return reply_copy_raw(w, devfd, unique, rr->fd, rr->off, size);
	}
	/* The lending must lie inside the request's data. */
	if (size > ri.size)
		size = ri.size;

	if (fzc_lend_async(w, devfd, unique, rr->fd, rr->off, size, false, read_lend_done))
		return 0;
	fzc_ring_read_yield(w);	/* a synchronous lending waits for a device */
	if (w->inflight > 0)
		fzc_lendings_drain(w);	/* the synchronous lending waits for its own CQE */
	l.len = (unsigned int)size;
	switch (fzc_lend(w, &l, &placed, &err)) {
	case FZC_LENT_ANSWERED:
		fzc_add(&zs->zc_bytes, placed);
		fzc_add(&zs->zc_requests, 1);
		fzc_add(&zs->zc_kernel_answered, 1);
		return 0;
	case FZC_LEND_IO_ERROR:
		note_io_error(zs, err);
		return fzc_reply_error(devfd, unique, err);
	case FZC_LEND_REFUSED:
		note_refused(zs, err);
		break;
	case FZC_LEND_UNAVAILABLE:	/* fzc_ring_failed() said why */
		break;
	case FZC_LENT:
		if (placed == 0)	/* at or past the end of file */
			return reply_copy_raw(w, devfd, unique, rr->fd, rr->off, size);
		res = reply_zc_placed(zs, devfd, unique, placed);
		if (res == 0 || res == -ENOENT)
			return res;
		/* Refused (contract v2: EINVAL, the request stays in flight). */
		err = res;
		break;
	}
	fzc_count_fallback(zs, err);
	return reply_copy_raw(w, devfd, unique, rr->fd, rr->off, size);
}

/* ------------------------------------------------------------------ */
/* fusezc_reply_read                                                   */

static int reply_copy(struct fusezc_worker *w, fuse_req_t req, int fd, off_t off,
		      size_t size)
{
	void *buf, *tmp = NULL;
	ssize_t n;
	int res;

	buf = w ? fzc_copybuf(w, size) : (tmp = fzc_alloc_aligned(size));
	if (buf == NULL)
		return fuse_reply_err(req, ENOMEM);
	n = fzc_pread_full(fd, buf, size, off);
	if (n < 0) {
		res = fuse_reply_err(req, (int)-n);
	} else {
		res = fuse_reply_buf(req, buf, (size_t)n);
		if (res == 0 && w) {
			fzc_add(&w->zs->copy_bytes, (uint64_t)n);
			fzc_add(&w->zs->copy_requests, 1);
		}
	}
	free(tmp);
	return res;
}

static int reply_splice(struct fusezc_worker *w, fuse_req_t req, int fd, off_t off,
			size_t size)
{
	struct fuse_bufvec bv = FUSE_BUFVEC_INIT(size);
	struct fusezc_session *zs = w->zs;
	int expect = FZC_SPLICE_UNKNOWN;
	int res;

	bv.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	bv.buf[0].fd = fd;
	bv.buf[0].pos = off;
	w->spliced = false;
	w->spliced_bytes = 0;
	w->written_bytes = -1;
	res = fuse_reply_data(req, &bv, FUSE_BUF_SPLICE_MOVE);
	if (res != 0)
		return res;
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
	return 0;
}

/*
 * Let libfuse send @req's reply; the writev hook answers it (see the top of
 * this file).  The placeholder body is never written.
 */
static int reply_zerocopy(fuse_req_t req, int fd, off_t off, size_t size)
{
	struct fzc_read_reply rr = { .fd = fd, .off = off, .size = size };
	int res;

	fzc_tls_read_reply = &rr;
	res = fuse_reply_buf(req, NULL, 0);
	fzc_tls_read_reply = NULL;
	if (!rr.answered) {	/* libfuse sent nothing: nothing more we can do */
		fzc_log(fzc_tls_worker ? fzc_tls_worker->zs : NULL, FUSE_LOG_ERR,
			"libfuse did not send a read reply");
		return res ? res : -EIO;
	}
	return res;
}

int fusezc_reply_read(fuse_req_t req, int fd, off_t off, size_t size)
{
	struct fusezc_worker *w = fzc_tls_worker;
	struct fusezc_session *zs = w ? w->zs : NULL;

	if (zs == NULL)		/* not on a fusezc worker: plain copy */
		return reply_copy(NULL, req, fd, off, size);
	switch (zs->opts.read_mode) {
	case FUSEZC_READ_ZEROCOPY:
		if (atomic_load(&zs->zc_active))
			return reply_zerocopy(req, fd, off, size);
		if (atomic_load(&zs->splice_enabled))
			return reply_splice(w, req, fd, off, size);
		return reply_copy(w, req, fd, off, size);
	case FUSEZC_READ_SPLICE:
		return reply_splice(w, req, fd, off, size);
	case FUSEZC_READ_COPY:
	default:
		return reply_copy(w, req, fd, off, size);
	}
}
