// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * fusezc_reply_write(): answer a FUSE_WRITE from the writer's own pages.
 *
 * With FUSE_ZERO_COPY_WRITE the kernel sends a FUSE_WRITE whose data is in
 * pages as its headers only (FUSEZC_WRITE_ZERO_COPY in write_flags).  libfuse
 * 3.14 would take the bytes after the headers for the data, so the read hook
 * records the write (unique, size) and gives libfuse a write of size 0.
 * The file system's handler calls fusezc_reply_write(), which, as
 * fusezc_reply_read() does, only arms a thread-local reply and lets libfuse
 * send the reply of @req: the writev hook learns the request's unique id
 * from it and answers exactly that request here:
 *
 *  - recorded as a zero-copy write: IORING_OP_WRITE_SPLICE_BUF of its data
 *    to the file, then a fuse_write_out with the bytes written (or none:
 *    the kernel answers a write whose lending wrote everything).  Where
 *    the kernel answers, the lending is asynchronous, as a read's is: the
 *    worker submits it and goes back to /dev/fuse, and write_lend_done()
 *    answers what the kernel did not once the CQE is in (see "Ordering"
 *    below for why nothing has to wait for it);
 *  - the kernel refused that for the file (EXDEV, EOPNOTSUPP, an O_DIRECT
 *    misalignment: EINVAL): the data is borrowed into a memfd with the same
 *    opcode, read back and written with pwrite();
 *  - any other write came with its data: pwrite() of what libfuse had.
 *
 * Every path ends in exactly one reply.  The kernel holds a zero-copy
 * write's reply to what the lendings wrote out, so a lie cannot reach the
 * writer; a short write is reported as short.
 *
 * Ordering.  An asynchronous write is answered only once its lending's CQE
 * is in (by write_lend_done()), or by the kernel when the lending's I/O
 * completed, so a write is never answered before its bytes are in the
 * file.  Whatever must come after a write the kernel holds back until
 * that answer (fs/fuse/file.c, 6.12): a write(2) through the page cache
 * (write-through) or O_DIRECT holds the inode lock until its last
 * FUSE_WRITE is answered and sends them one after the other, or, with
 * async_dio, all at once for disjoint ranges; write-back sends a range
 * that overlaps one in flight only once that one is answered
 * (fuse_writepage_add()); a buffered write, read_folio, readahead,
 * page_mkwrite and O_DIRECT I/O wait for write-back in flight on their
 * range (fuse_wait_on_page_writeback(), fuse_sync_writes()); FSYNC, FLUSH
 * and a truncating SETATTR take the inode lock and wait for the write-back
 * in flight first (fuse_sync_writes(), fuse_set_nowrite()); RELEASE comes
 * when the file's last reference goes, which an unanswered write holds
 * (its syscall or aio, or write-back's fuse_file reference).  So no
 * request the kernel orders after a write reaches the server before the
 * write's bytes are in, and nothing here waits for a lending to keep
 * order.  A request that does reach the server meanwhile (another file's,
 * an aio O_DIRECT write of the same file, whose lock is dropped while it
 * is in flight, a write with its data of a disjoint range) is one the
 * kernel lets run in any order, as on any thread of a multi-threaded
 * server.  A lending's @fd stays open while its write is unanswered, which
 * is as long as write_lend_done() uses it (fzc_file_refusal() before the
 * reply).  A worker still answers its lendings before a handler that may
 * block (hooks.c, may_block(): FSYNC, FLUSH, SETATTR, RELEASE among them),
 * for their task work, not for order.
 */
#include "write.h"

#include "reaper.h"
#include "ring.h"
#include "worker.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

__thread struct fzc_write_reply *fzc_tls_write_reply;

void fzc_record_zc_write(struct fusezc_session *zs, void *buf, size_t len)
{
	struct fuse_in_header *in = buf;
	struct fuse_write_in *wi = (struct fuse_write_in *)(in + 1);
	struct fzc_request r;

	if (len < sizeof(*in) + sizeof(*wi) || !(wi->write_flags & FUSEZC_WRITE_ZERO_COPY))
		return;
	r.unique = in->unique;
	r.offset = wi->offset;
	r.size = wi->size;
	r.write = true;
	/* libfuse checks the data it was given against size: none, 0 */
	wi->size = 0;
	if (zs != NULL)
		fzc_requests_add(&zs->requests, &r);
}

static int reply_written(int devfd, uint64_t unique, size_t written)
{
	struct fuse_out_header out = { .unique = unique };
	struct fuse_write_out wo = { .size = (uint32_t)written };
	struct iovec iov[2] = {
		{ &out, sizeof(out) },
		{ &wo, sizeof(wo) },
	};

	out.len = sizeof(out) + sizeof(wo);
	return fzc_dev_write(devfd, iov, 2);
}

/* The answer to a write that wrote @n bytes (or failed with -errno @n). */
static int reply_result(int devfd, uint64_t unique, ssize_t n)
{
	if (n < 0)
		return fzc_reply_error(devfd, unique, (int)n);
	return reply_written(devfd, unique, (size_t)n);
}

/*
 * Ask the kernel to send write @unique again with its data: the worker
 * cannot take it by lending (no ring, a transient error that persisted, or
 * a refusal even for the memfd).  Nothing is lost: the resent write is
 * answered as any write with its data.  A kernel that refuses the request
 * leaves the writer EIO.
 */
static int reply_send_data(struct fusezc_session *zs, int devfd, uint64_t unique, int why)
{
	struct fuse_out_header out = {
		.unique = unique | FUSEZC_UNIQUE_ZC_REPLY,
	};
	struct fusezc_write_out wo = { .flags = FUSEZC_ZC_WRITE_SEND_DATA };
	struct iovec iov[2] = {
		{ &out, sizeof(out) },
		{ &wo, sizeof(wo) },
	};
	int res;

	out.len = sizeof(out) + sizeof(wo);
	if (fzc_note_once(zs, FZC_NOTE_RING, why))
		fzc_log(zs, FUSE_LOG_WARNING,
			"zero-copy write not lent (%s); the kernel sends it again with its data",
			strerror(-why));
	res = fzc_dev_write(devfd, iov, 2);
	if (res == 0) {
		fzc_add(&zs->resent_writes, 1);
		return 0;
	}
	if (res == -ENOENT)
		return res;
	if (fzc_note_once(zs, FZC_NOTE_REPLY, res))
		fzc_log(zs, FUSE_LOG_ERR,
			"the kernel refused to send a zero-copy write again (%s); the writer gets EIO",
			strerror(-res));
	return fzc_reply_error(devfd, unique, -EIO);
}

/*
 * The kernel would not write the pages to @fd: borrow them into the
 * worker's memfd (a tmpfs file, always a valid target) and write them from
 * there.  Two copies, as a copying server makes.  The written count or
 * -errno; FZC_LEND_UNAVAILABLE or _REFUSED of the memfd's lending in
 * *@how (the caller has the write sent again).
 */
static ssize_t write_via_memfd(struct fusezc_worker *w, const struct fzc_lending *to_fd,
			       enum fzc_lend_outcome *how)
{
	struct fzc_lending l = *to_fd;
	size_t got;
	void *buf;
	ssize_t n;
	int err;

	*how = FZC_LENT;
	if (w->memfd < 0) {
		w->memfd = memfd_create("fuse-zc-write", MFD_CLOEXEC);
		if (w->memfd < 0) {
			*how = FZC_LEND_UNAVAILABLE;
			return -errno;
		}
	}
	l.fd = w->memfd;
	l.off = 0;
	l.kernel_answers = false;
	*how = fzc_lend(w, &l, &got, &err);
	if (*how == FZC_LEND_IO_ERROR)
		return err;
	if (*how != FZC_LENT)
		return err ? err : -EIO;
	if (got != l.len)
		return -EIO;	/* a tmpfs file that took less than all */
	buf = fzc_copybuf(w, l.len);
	if (buf == NULL)
		return -ENOMEM;
	n = fzc_pread_full(w->memfd, buf, l.len, 0);
	if (n >= 0 && (size_t)n != l.len)
		n = -EIO;
	if (n < 0)
		return n;
	return fzc_pwrite_full(to_fd->fd, buf, l.len, (off_t)to_fd->off);
}

/*
 * The CQE of an asynchronous write lending (the reaper's or the worker's,
 * under its lend_lock).  The kernel answered the write, or the write is
 * still ours, answered here exactly once, as fzc_answer_write() answers the
 * same outcome of a synchronous lending: the bytes written when the file
 * took fewer (EIO for none), the file's error (or the bytes written before
 * it), and a refusal, a transient error or a lost ring by having the kernel
 * send the write again with its data (nothing is lost; the rest is not
 * lent again from here: the reaper may not submit on the worker's ring).
 */
static void write_lend_done(struct fusezc_worker *w, struct fusezc_worker *cw,
			    const struct fzc_inflight *p, int res, bool answered)
{
	struct fusezc_session *zs = w->zs;

	(void)cw;
	if (answered) {
		fzc_add(&zs->zcw_kernel_answered, 1);
		fzc_add(&zs->zcw_bytes, res > 0 ? (uint64_t)res : 0);
		fzc_add(&zs->zcw_requests, 1);
		return;
	}
	if (res >= 0) {
		fzc_add(&zs->zcw_bytes, (uint64_t)res);
		fzc_add(&zs->zcw_requests, 1);
		reply_result(p->devfd, p->unique, res ? (ssize_t)res : -EIO);
		return;
	}
	if (fzc_lend_class(res) == FZC_LEND_CLASS_IO) {
		fzc_add(&zs->zcw_bytes, p->placed);
		reply_result(p->devfd, p->unique, p->placed ? (ssize_t)p->placed : res);
		return;
	}
	/* before the reply: a RELEASE may follow it and close p->fd */
	fzc_file_refusal(zs, p->fd, res);
	reply_send_data(zs, p->devfd, p->unique, res);
}

int fzc_answer_write(struct fusezc_worker *w, int devfd, uint64_t unique,
		     const struct fzc_write_reply *wr)
{
	struct fusezc_session *zs = w->zs;
	struct fzc_lending l = {
		.devfd = devfd, .fd = wr->fd, .off = (uint64_t)wr->off, .unique = unique,
		.kernel_answers = atomic_load(&zs->kernel_answers), .write = true,
	};
	enum fzc_lend_outcome how;
	struct fzc_request ri;
	size_t written;
	ssize_t n;
	int err;

	if (!fzc_requests_take(&zs->requests, unique, &ri) || !ri.write) {
		/* A write that came with its data. */
		n = fzc_pwrite_full(wr->fd, wr->buf, wr->size, wr->off);
		if (n > 0) {
			fzc_add(&zs->copyw_bytes, (uint64_t)n);
			fzc_add(&zs->copyw_requests, 1);
		}
		return reply_result(devfd, unique, n);
	}

	if (ri.size == 0)
		return reply_written(devfd, unique, 0);
	if (fzc_lend_async(w, devfd, unique, wr->fd, wr->off, ri.size, true, write_lend_done))
		return 0;
	fzc_ring_read_yield(w);	/* a synchronous lending waits for a device */
	/*
	 * Synchronously (sync_lending, no kernel answers, a clone without the
	 * library's reference, a file refused for good: its memfd fallback,
	 * no ring).  The lending waits for its own CQE: none of the worker's
	 * asynchronous lendings may be in flight on the ring (their CQEs
	 * would come first, and the reaper may be watching it).
	 */
	if (w->inflight > 0)
		fzc_lendings_drain(w);
	l.len = ri.size;
	how = fzc_lend(w, &l, &written, &err);
	switch (how) {
	case FZC_LENT_ANSWERED:
		fzc_add(&zs->zcw_kernel_answered, 1);
		fzc_add(&zs->zcw_bytes, written);
		fzc_add(&zs->zcw_requests, 1);
		return 0;
	case FZC_LENT:
		/* the file stopped taking bytes: a short count, or EIO for none */
		fzc_add(&zs->zcw_bytes, written);
		fzc_add(&zs->zcw_requests, 1);
		return reply_result(devfd, unique, written ? (ssize_t)written : -EIO);
	case FZC_LEND_IO_ERROR:
		/* short: what went is the answer; nothing: the error */
		fzc_add(&zs->zcw_bytes, written);
		return reply_result(devfd, unique, written ? (ssize_t)written : err);
	case FZC_LEND_UNAVAILABLE:
		/* the bytes already written do not matter: the resent write has all */
		return reply_send_data(zs, devfd, unique, err);
	case FZC_LEND_REFUSED:
		if (written) {
			fzc_add(&zs->zcw_bytes, written);
			return reply_written(devfd, unique, written);
		}
		break;
	}
	if (fzc_note_once(zs, FZC_NOTE_LEND, err))
		fzc_log(zs, FUSE_LOG_WARNING,
			"zero-copy write refused by the kernel (%s)%s; writing through a memfd",
			strerror(-err), fzc_lend_hint(err));
	n = write_via_memfd(w, &l, &how);
	if (how == FZC_LEND_UNAVAILABLE || how == FZC_LEND_REFUSED)
		return reply_send_data(zs, devfd, unique, (int)n);
	if (n > 0) {
		fzc_add(&zs->memfdw_bytes, (uint64_t)n);
		fzc_add(&zs->memfdw_requests, 1);
	}
	return reply_result(devfd, unique, n);
}

size_t fusezc_write_size(fuse_req_t req, size_t size)
{
	struct fusezc_worker *w = fzc_tls_worker;
	struct fzc_request ri;

	(void)req;
	if (w == NULL || !w->in_valid || w->in.opcode != FUSE_WRITE || size != 0 ||
	    !fzc_requests_peek(&w->zs->requests, w->in.unique, &ri) || !ri.write)
		return size;
	return ri.size;
}

int fusezc_reply_write(fuse_req_t req, int fd, off_t off, const void *buf, size_t size)
{
	struct fzc_write_reply wr = { .fd = fd, .off = off, .buf = buf, .size = size };
	ssize_t n;
	int res;

	if (fzc_tls_worker == NULL) {
		/* not on a fusezc worker: the data is what libfuse had */
		n = fzc_pwrite_full(fd, buf, size, off);
		if (n < 0)
			return fuse_reply_err(req, (int)-n);
		return fuse_reply_write(req, (size_t)n);
	}
	fzc_tls_write_reply = &wr;
	res = fuse_reply_write(req, size);
	fzc_tls_write_reply = NULL;
	if (!wr.answered) {	/* libfuse sent nothing: nothing more we can do */
		fzc_log(fzc_tls_worker->zs, FUSE_LOG_ERR, "libfuse did not send a write reply");
		return res ? res : -EIO;
	}
	return res;
}
