/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Lendings in flight: a worker submits a lending without waiting, keeps
 * what answering its request needs in one of its FZC_INFLIGHT_MAX slots,
 * and returns to /dev/fuse.  Each CQE is answered exactly once, by the
 * slot's done function: on the worker before it reads its next request, or,
 * while it waits in read(2), on the session's reaper thread, which watches
 * the worker's ring with epoll.  w->lend_lock keeps the two apart; it is
 * never held where the thread can be cancelled (libfuse cancels its
 * workers inside the read hook; answering a CQE calls pread()/writev()),
 * or the thread's destructor, which drains under it, would deadlock.
 */
#ifndef FZC_REAPER_H
#define FZC_REAPER_H

#include "core.h"

/* Submit the lending of @size bytes of @fd at @off to request @unique of
 * /dev/fuse @devfd (a FUSE_WRITE's pages to @fd when @write), with
 * IORING_SPLICE_BUF_COMPLETE; @done answers its CQE.  false: not
 * submitted, the caller answers the request itself. */
bool fzc_lend_async(struct fusezc_worker *w, int devfd, uint64_t unique, int fd,
		    off_t off, size_t size, bool write, fzc_lend_done_fn *done);
/* @w is about to wait for a request: answer what finished, and let the
 * reaper watch the rest (without a reaper, wait for it). */
void fzc_lendings_before_wait(struct fusezc_worker *w);
/* @w is about to run a handler that may block: answer what ends within
 * @ms, and let the reaper watch the rest (their I/O may need that very
 * request answered). */
void fzc_lendings_settle(struct fusezc_worker *w, unsigned int ms);
/* Answer everything @w has in flight and stop watching it (its thread
 * ends, its ring goes, or it lends synchronously next). */
void fzc_lendings_drain(struct fusezc_worker *w);
/*
 * opts.ring_read: read the next request from /dev/fuse @fd into @buf
 * through @w's ring, submitting the lendings prepared since the last
 * submission with it, and answer @w's CQEs while waiting; first wait to
 * be the session's one reader (see zs->rr_leader).  Bytes read or -errno
 * (the read's, or the ring's).
 */
ssize_t fzc_lendings_read_request(struct fusezc_worker *w, int fd, void *buf, size_t len);
/*
 * opts.ring_read: @w, which read its request as the leader, hands the role
 * on (it is about to do what may block; a no-op for any other worker) ...
 */
void fzc_ring_read_yield(struct fusezc_worker *w);
/* ... or keeps it while it answers a request that cannot block. */
void fzc_ring_read_away(struct fusezc_worker *w);
/* End the reaper thread (the loop has ended; nothing is in flight). */
void fzc_reaper_stop(struct fusezc_session *zs);

#endif /* FZC_REAPER_H */
