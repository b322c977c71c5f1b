/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The kernel side of the library: a worker's io_uring (created lazily,
 * dropped when it fails, created again after a back-off), one lending, and
 * the writes to /dev/fuse.  The unit tests replace fzc_kops to play the
 * patched kernel (short completions, refusals, failing rings) on any host.
 */
#ifndef FZC_RING_H
#define FZC_RING_H

#include "core.h"

#include <string.h>
#include <sys/uio.h>

/* One IORING_OP_READ_SPLICE_BUF: @len bytes of @fd at @off into the data of
 * FUSE request @unique, from byte @req_off of that data.  @devfd is the
 * /dev/fuse file the request was read from (a clone with clone_fd): the
 * kernel finds the request on that file's processing queue only. */
struct fzc_lending {
	int devfd;
	int fd;
	uint64_t off;
	unsigned int len;
	uint64_t unique;
	uint32_t req_off;
	bool kernel_answers;	/* IORING_SPLICE_BUF_COMPLETE */
	bool write;		/* IORING_OP_WRITE_SPLICE_BUF: the pages to @fd */
};

struct fzc_kernel_ops {
	/* Can this process set up an io_uring at all (io_uring_disabled,
	 * RLIMIT_MEMLOCK, seccomp)?  0 or -errno.  Asked at INIT. */
	int (*ring_probe)(void);
	int (*ring_setup)(struct fusezc_worker *w);	/* 0 or -errno */
	void (*ring_exit)(struct fusezc_worker *w);
	/* Submit @l and wait for it: 0, the CQE's res in *res and whether the
	 * kernel answered the request in *answered, or -errno when the ring
	 * itself failed (the ring is then dropped). */
	int (*ring_lend)(struct fusezc_worker *w, const struct fzc_lending *l, int *res,
			 bool *answered);
	ssize_t (*dev_writev)(int fd, const struct iovec *iov, int count);
	/* Submit the @n lendings of @l without waiting, in one system call,
	 * the CQE of @l[i] to carry @user_data[i]: how many were submitted
	 * (fewer than @n: the ring failed), or -errno of the ring ... */
	int (*ring_submit_lends)(struct fusezc_worker *w, const struct fzc_lending *l,
				 const uint64_t *user_data, unsigned int n);
	/* ... and take the next CQE: 1 with its user_data, res and whether the
	 * kernel answered; 0 none (after waiting @wait_ms for one: 0 not at
	 * all, FZC_WAIT_FOREVER until one comes); -errno. */
	int (*ring_next_cqe)(struct fusezc_worker *w, int wait_ms, uint64_t *user_data,
			     int *res, bool *answered);
	/* A file descriptor readable while CQEs wait, for the reaper's epoll
	 * (-1: none; the worker then waits for its lendings itself). */
	int (*ring_poll_fd)(struct fusezc_worker *w);
	/* The largest piece a lending to @fd should be: 0 for any size, or
	 * what the device takes in one bio when @fd is a block device opened
	 * O_DIRECT. */
	size_t (*piece_max)(struct fusezc_session *zs, int fd);
	/*
	 * opts.ring_read (NULL: not supported, read(2) is used): submit the
	 * lendings prepared since the last submission and, unless it is in
	 * the ring already, a read of @len bytes of /dev/fuse @fd into @buf
	 * (its CQE's user_data FZC_UD_DEVREAD); wait until @wait_nr CQEs are
	 * in the ring, for at most @timeout_us (0: no limit).  0, or -errno
	 * (-EINTR: a signal, -ETIME: the time ran out).
	 */
	int (*ring_read_dev)(struct fusezc_worker *w, int fd, void *buf, size_t len,
			     unsigned int wait_nr, unsigned int timeout_us);
};
#define FZC_WAIT_FOREVER	(-1)
/* The user_data of a worker's read of /dev/fuse (lendings use 1..FZC_INFLIGHT_MAX). */
#define FZC_UD_DEVREAD	UINT64_MAX
/* ... and of the cancellation of that read (its CQE is ignored) */
#define FZC_UD_DEVREAD_CANCEL	(UINT64_MAX - 1)
extern const struct fzc_kernel_ops *fzc_kops;
/* The real kernel's (the unit tests check what it sets up). */
extern const struct fzc_kernel_ops fzc_real_kops;

/*
 * What a lending's error means: one table (ring.c) for reads and writes.
 */
enum fzc_lend_class {
	FZC_LEND_CLASS_IO,	/* the file's own I/O failed: the answer */
	FZC_LEND_CLASS_RETRY,	/* transient (EAGAIN, EINTR, ENOMEM, EBUSY): again */
	FZC_LEND_CLASS_REFUSED,	/* the kernel will not lend this request to this file */
};
enum fzc_lend_class fzc_lend_class(int err);
/* A hint for the log line of a refusal ("" when none). */
const char *fzc_lend_hint(int err);

/*
 * A refusal that is the file's for good (EXDEV) is remembered for @fd and
 * the file it names; fzc_file_refused() says whether @fd still names a
 * remembered file (*err: the refusal), for a request not to be lent.
 */
void fzc_file_refusal(struct fusezc_session *zs, int fd, int err);
bool fzc_file_refused(struct fusezc_session *zs, int fd, int *err);

enum fzc_lend_outcome {
	FZC_LENT,		/* *done bytes went: all, or (reads) up to the file's end */
	FZC_LENT_ANSWERED,	/* ... and the kernel answered the request with them */
	FZC_LEND_REFUSED,	/* refused (*err) after *done bytes */
	FZC_LEND_UNAVAILABLE,	/* no working ring, or a transient error persisted */
	FZC_LEND_IO_ERROR,	/* the file failed (*err) after *done bytes */
};

/*
 * Lend @l->len bytes of request @l->unique from @l->req_off, again after a
 * short completion (at the next offset of the request and the file) until
 * all went or a completion of 0 (the end of the file); a transient error is
 * tried again, up to three times.  Nothing else may be in flight on the
 * worker's ring: the lending waits for its own CQEs.  A block device opened
 * O_DIRECT that takes less in one bio is lent in pieces (fzc_lend_split()),
 * all submitted at once and each carried on as above; *done counts the
 * bytes that went without a hole from the start.
 */
enum fzc_lend_outcome fzc_lend(struct fusezc_worker *w, const struct fzc_lending *l,
			       size_t *done, int *err);

/*
 * O_DIRECT lendings in pieces the device takes whole.  The block layer
 * fails a REQ_NOWAIT bio it would have to split (bio_split_rw_at()) with
 * -EAGAIN, so a lending to a block device opened O_DIRECT of more pages
 * than its queue's max_segments, or more bytes than its max_sectors_kb, is
 * not issued inline but retried in io-wq.  Such a lending goes as several,
 * each a range of the request of at most what one bio takes (every page a
 * segment of its own), submitted together; the kernel answers the request
 * when the last comes back.
 */

/* The largest piece for a queue's max_sectors_kb and max_segments (0:
 * unknown) with pages of @page bytes: a multiple of @page, 0 for no limit. */
size_t fzc_piece_limit(uint64_t max_sectors_kb, uint64_t max_segments, size_t page);
/*
 * How many pieces @len bytes are lent in with pieces of at most @max bytes
 * (0: no limit): 1, or up to FZC_PIECES_MAX of equal size (*@piece, a
 * multiple of @page; the last takes the rest).  1 with *@piece = @len when
 * more pieces would be needed: that lending goes whole, as before.
 */
unsigned int fzc_pieces(size_t len, size_t max, size_t page, size_t *piece);
/* The pieces of a lending of @len bytes to @fd on @w's ring (fzc_pieces()
 * with the file's limit, no more than the ring's SQ takes at once). */
unsigned int fzc_lend_split(struct fusezc_worker *w, int fd, size_t len, size_t *piece);

/* Submit the lendings prepared for a read through the ring (opts.ring_read)
 * that has not come: the worker reads with read(2) this time. */
void fzc_ring_flush(struct fusezc_worker *w);
/* Can this process set up an io_uring?  0 or -errno (asked at INIT). */
int fzc_ring_probe(void);
/* The worker's ring: 0 when it has one, else -errno (failed, backing off). */
int fzc_ring_get(struct fusezc_worker *w);
/* Drop a ring that failed with @err; a new one after a growing back-off. */
void fzc_ring_failed(struct fusezc_worker *w, int err);

/* Write a reply to /dev/fuse @devfd (EINTR retried): 0 or -errno. */
int fzc_dev_write(int devfd, const struct iovec *iov, int count);
/* An error reply @err (-errno) to request @unique. */
int fzc_reply_error(int devfd, uint64_t unique, int err);

/*
 * The IORING_OP_READ_SPLICE_BUF SQE: read @len bytes of @fd at @off into the
 * data pages of the in-flight FUSE request @unique of /dev/fuse @fuse_fd
 * (@fuse_fd is a registered file index when @fixed).  Every other field 0.
 * With @op IORING_OP_WRITE_SPLICE_BUF: write those pages to @fd at @off.
 */
static inline void fzc_prep_lend_op(struct io_uring_sqe *sqe, int op, int fd,
				    uint64_t off, unsigned int len, int fuse_fd,
				    bool fixed, uint64_t unique)
{
	memset(sqe, 0, sizeof(*sqe));
	io_uring_prep_rw(op, sqe, fd, NULL, len, off);
	sqe->splice_fd_in = fuse_fd;
	sqe->splice_off_in = fusezc_lend_pos(unique, 0);
	sqe->splice_flags = fixed ? FUSEZC_SPLICE_F_FD_IN_FIXED : 0;
	sqe->user_data = unique;
}

static inline void fzc_prep_lend(struct io_uring_sqe *sqe, int fd, uint64_t off,
				 unsigned int len, int fuse_fd, bool fixed,
				 uint64_t unique)
{
	fzc_prep_lend_op(sqe, FUSEZC_IORING_OP_READ_SPLICE_BUF, fd, off, len, fuse_fd,
			 fixed, unique);
}

#endif /* FZC_RING_H */
