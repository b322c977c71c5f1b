/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libfuse-zc internals: the session, its workers, the FUSE_READ and
 * zero-copy FUSE_WRITE requests in flight, and the thread-local state that
 * ties libfuse's reply path (our fuse_custom_io hooks) to the reply a thread
 * is sending.
 */
#ifndef FUSE_ZC_INT_H
#define FUSE_ZC_INT_H

#include "fuse_zc.h"
#include "fuse_zc_kabi.h"

#include <liburing.h>
#include <linux/fuse.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/uio.h>

#define FZC_DEFAULT_RING	8
#define FZC_MSGBUF		512	/* small replies we rewrite (INIT, OPEN, CREATE, ZC) */
#define FZC_ERRNO_MAX		4096

/* fuse_init_out offsets (include/uapi/linux/fuse.h, 7.40+ layout). */
#define INIT_OUT_FLAGS		12
#define INIT_OUT_FLAGS2		32
#define INIT_OUT_STACK_DEPTH	36
#define INIT_OUT_MIN		40

/* fuse_open_out: fh, open_flags, backing_id (was padding before 7.40). */
struct fzc_open_out {
	uint64_t fh;
	uint32_t open_flags;
	int32_t backing_id;
};

enum fzc_pending {
	FZC_PEND_NONE,
	FZC_PEND_OPEN,		/* add FOPEN_PASSTHROUGH + backing_id */
};

/*
 * A read reply fusezc_reply_read() is sending through libfuse.  libfuse puts
 * the request's unique id in the reply header, so the writev hook learns
 * which request the reply belongs to, and answers exactly that request:
 * lending its pages, or by copy.  A reply can therefore not name another
 * request than the req it was given, whichever thread sends it.
 */
struct fzc_read_reply {
	int fd;
	off_t off;
	size_t size;
	bool answered;		/* the writev hook took it */
};

/* A write reply fusezc_reply_write() is sending through libfuse. */
struct fzc_write_reply {
	int fd;
	off_t off;
	const void *buf;	/* the data libfuse had (none for a zero-copy write) */
	size_t size;
	bool answered;		/* the writev hook took it */
};

/* What the library saw of a FUSE_READ, or of a FUSE_WRITE sent without
 * its data, in flight. */
struct fzc_read_in {
	uint64_t unique;	/* 0: free slot */
	uint64_t offset;
	uint32_t size;		/* the request's data: a lending must stay inside */
	bool write;		/* a zero-copy FUSE_WRITE */
};

/* FUSE_READ requests in flight, by unique id (zero-copy sessions only). */
struct fzc_read_table {
	pthread_mutex_t lock;
	struct fzc_read_in *slots;	/* open addressing, linear probing */
	size_t cap;			/* a power of two, or 0 */
	size_t used;
};
#define FZC_READS_MAX		(1U << 16)	/* beyond: replies are copies */

/* Which one-line-per-reason log a note belongs to. */
enum fzc_note {
	FZC_NOTE_LEND,		/* IORING_OP_READ_SPLICE_BUF failed */
	FZC_NOTE_REPLY,		/* the zero-copy reply was refused */
	FZC_NOTE_RING,		/* io_uring setup/submit failed */
	FZC_NOTE_IO,		/* the backing file failed a lent read */
	FZC_NOTE_NR,
};

enum fzc_splice_state {
	FZC_SPLICE_UNKNOWN,
	FZC_SPLICE_SEEN,	/* libfuse really spliced */
	FZC_SPLICE_WARNED,	/* libfuse copied instead; said so once */
};

/*
 * A lending submitted without waiting (asynchronous lending): what its CQE
 * needs to answer the read when the kernel did not.  @fd must stay open
 * until then, which it does when it is the open file's descriptor: the
 * kernel sends no RELEASE while a read of the file is unanswered.
 */
struct fzc_inflight {
	uint64_t unique;
	int devfd;
	int fd;
	off_t off;
	size_t size;
	bool busy;
};
#define FZC_INFLIGHT_MAX	32	/* lendings in flight per worker */

/*
 * What the library keeps for a thread of libfuse's loop: created by the read
 * hook on the first request a thread reads, freed when the thread exits
 * (libfuse's loop cancels and joins its workers before it returns; with
 * max_idle_threads, idle workers exit earlier).
 */
struct fusezc_worker {
	struct fusezc_session *zs;
	int devfd;			/* the /dev/fuse file (or clone) it reads */

	/* The raw header of the request this worker is processing. */
	struct fuse_in_header in;
	bool in_valid;

	/* OPEN/CREATE rewrite armed by fusezc_reply_*_passthrough(). */
	enum fzc_pending pend;
	int pend_backing_id;

	/* What libfuse's reply path did (for counting). */
	bool spliced;
	ssize_t spliced_bytes;		/* payload bytes of the spliced reply */
	ssize_t written_bytes;		/* payload bytes of the last writev reply */

	/* Lazily created io_uring (zero copy only).  A failed ring is dropped
	 * and created again after a back-off (1 s, doubling up to 64 s). */
	struct io_uring ring;
	bool ring_ready;
	bool ring_fixed;		/* ring_fd is registered as fixed file 0 */
	int ring_fd;
	int ring_err;			/* why the last ring failed */
	uint64_t ring_retry_at;		/* CLOCK_MONOTONIC ns: no new ring before */
	uint64_t ring_backoff;		/* ns; 0 after a working ring */

	/* Asynchronous lending: the ring's CQ and @lends are shared with the
	 * session's reaper, which answers them while this thread waits for a
	 * request; @lend_lock serialises the two. */
	pthread_mutex_t lend_lock;
	struct fzc_inflight lends[FZC_INFLIGHT_MAX];
	unsigned int inflight;
	bool watched;				/* its ring fd is in the reaper's epoll */
	struct fusezc_worker *next_retired;	/* zs->retired list */

	char *copybuf;
	size_t copybuf_size;
	/* zero-copy writes a backing file refused: borrowed into this first */
	int memfd;			/* -1 until needed */
	unsigned char msg[FZC_MSGBUF];
};

struct fusezc_session {
	struct fuse_session *se;
	struct fusezc_options opts;
	int fuse_fd;

	/* FUSE_INIT, filled in by the read hook and the INIT reply rewrite. */
	uint64_t init_offered;
	atomic_bool init_seen;
	atomic_bool init_done;	/* the kernel took our INIT reply */
	atomic_bool zc_active;
	atomic_bool zcw_active;		/* zero-copy writes negotiated */
	atomic_bool pt_active;
	const char *_Atomic zc_status;
	int init_error;			/* -errno the loop returns */
	atomic_bool splice_enabled;	/* fusezc_conn_init() enabled SPLICE_WRITE */
	/* lend with IORING_SPLICE_BUF_COMPLETE (off: opts.server_replies, or
	 * a series kernel that refused it) */
	atomic_bool kernel_answers;
	atomic_int splice_state;

	struct fzc_read_table reads;

	/*
	 * Asynchronous lending (default when the kernel answers reads; off
	 * with opts.sync_lending): a thread that answers the CQEs of workers
	 * blocked in read(2) of /dev/fuse.  Started by the first such lending.
	 * Worker states outlive their threads on @retired (the reaper may hold
	 * an event for one) and are reused by new threads.
	 */
	pthread_mutex_t reaper_lock;
	pthread_t reaper;
	bool reaper_running;
	int reaper_epfd;
	int reaper_stopfd;		/* eventfd: the reaper exits */
	struct fusezc_worker reaper_worker;	/* its copy buffer, for fallbacks */
	struct fusezc_worker *retired;

	/* Loop. */
	atomic_bool looping;
	atomic_bool init_reported;	/* opts.init_done called */

	/* Counters. */
	_Atomic uint64_t zc_bytes, zc_requests, zc_kernel_answered;
	_Atomic uint64_t splice_bytes, splice_requests;
	_Atomic uint64_t copy_bytes, copy_requests;
	_Atomic uint64_t fallbacks;
	_Atomic uint64_t fallback_errno_counts[4];
	_Atomic uint64_t zcw_bytes, zcw_requests, zcw_kernel_answered;
	_Atomic uint64_t memfdw_bytes, memfdw_requests;
	_Atomic uint64_t copyw_bytes, copyw_requests, zcw_unanswered;

	/* One log line per (kind, errno). */
	_Atomic uint64_t noted[FZC_NOTE_NR][FZC_ERRNO_MAX / 64];
	atomic_bool noted_misuse;

	struct fusezc_session *next_session;	/* fzc_session_by_fd() list */
};

extern __thread struct fusezc_worker *fzc_tls_worker;

/* A library message: to opts.log when set, else fuse_log("fuse-zc: ..."). */
void fzc_log(struct fusezc_session *zs, enum fuse_log_level level,
	     const char *fmt, ...) __attribute__((format(printf, 3, 4)));
extern __thread struct fzc_read_reply *fzc_tls_read_reply;
extern __thread struct fzc_write_reply *fzc_tls_write_reply;

/* The FUSE_READ table also holds zero-copy writes: in use when either is. */
static inline bool fzc_table_active(struct fusezc_session *zs)
{
	return atomic_load(&zs->zc_active) || atomic_load(&zs->zcw_active);
}

/* The FUSE_READ table: record a request / take it out (false: not there). */
void fzc_reads_add(struct fusezc_session *zs, const struct fzc_read_in *r);
bool fzc_reads_take(struct fusezc_session *zs, uint64_t unique, struct fzc_read_in *r);
bool fzc_reads_peek(struct fusezc_session *zs, uint64_t unique, struct fzc_read_in *r);
void fzc_reads_free(struct fusezc_session *zs);
/* The session of /dev/fuse fd @fd (or of a clone of it), for the hooks. */
void fzc_sessions_add(struct fusezc_session *zs);
void fzc_sessions_del(struct fusezc_session *zs);
struct fusezc_session *fzc_session_by_fd(int fd);
/* Answer FUSE_READ @unique with @rr on /dev/fuse @devfd (the writev hook).
 * 0, or -errno of the last reply write. */
int fzc_answer_read(struct fusezc_worker *w, int devfd, uint64_t unique,
		    const struct fzc_read_reply *rr);
/* Answer FUSE_WRITE @unique with @wr (the writev hook); 0 or -errno. */
int fzc_answer_write(struct fusezc_worker *w, int devfd, uint64_t unique,
		     const struct fzc_write_reply *wr);
/* A FUSE_WRITE the kernel sent without its data, as read into @buf: make it
 * one libfuse accepts (size 0) and record it.  From the read hook. */
void fzc_note_zc_write(struct fusezc_session *zs, void *buf, size_t len);
/* Shared with write.c (read.c) */
int fzc_ring_get(struct fusezc_worker *w);
void fzc_ring_failed(struct fusezc_worker *w, int err);
int fzc_dev_write(int devfd, const struct iovec *iov, int count);
int fzc_reply_error(int devfd, uint64_t unique, int err);

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

/*
 * The kernel side of the library: the io_uring of a worker and the reply
 * writes to /dev/fuse.  The unit tests replace it to play the patched
 * kernel (short completions, refusals, failing rings) on any host.
 */
struct fzc_kernel_ops {
	int (*ring_setup)(struct fusezc_worker *w);	/* 0 or -errno */
	void (*ring_exit)(struct fusezc_worker *w);
	/* Submit @l and wait for it: 0, the CQE's res in *res and whether the
	 * kernel answered the read in *answered, or -errno when the ring
	 * itself failed (the ring is then dropped). */
	int (*ring_lend)(struct fusezc_worker *w, const struct fzc_lending *l, int *res,
			 bool *answered);
	ssize_t (*dev_writev)(int fd, const struct iovec *iov, int count);
	/* Asynchronous lending: submit @l without waiting, its CQE to carry
	 * @user_data (0 or -errno of the ring) ... */
	int (*ring_submit_lend)(struct fusezc_worker *w, const struct fzc_lending *l,
				uint64_t user_data);
	/* ... and take the next CQE: 1 with its user_data, res and whether the
	 * kernel answered; 0 none (after waiting for one when @wait); -errno. */
	int (*ring_next_cqe)(struct fusezc_worker *w, bool wait, uint64_t *user_data,
			     int *res, bool *answered);
	/* A file descriptor readable while CQEs wait, for the reaper's epoll
	 * (-1: none; the worker then waits for its lendings itself). */
	int (*ring_poll_fd)(struct fusezc_worker *w);
};
extern const struct fzc_kernel_ops *fzc_kops;

/* Log one line per session and (kind, errno); returns true when it logged. */
bool fzc_note_once(struct fusezc_session *zs, enum fzc_note kind, int err);
void fzc_count_fallback(struct fusezc_session *zs, int err);
ssize_t fzc_pread_full(int fd, void *buf, size_t size, off_t off);
void *fzc_copybuf(struct fusezc_worker *w, size_t size);
void *fzc_alloc_aligned(size_t size);

/* Asynchronous lending (read.c): true when @l was submitted and its CQE
 * will answer the read; false: answer it synchronously. */
bool fzc_lend_async(struct fusezc_worker *w, int devfd, uint64_t unique, int fd,
		    off_t off, size_t size);
/* Answer every CQE there is (under w->lend_lock); @cw lends its copy
 * buffer to fallbacks.  With @wait, until nothing is in flight. */
void fzc_reap_locked(struct fusezc_worker *w, struct fusezc_worker *cw, bool wait);
/* A worker about to block in read(2): let the reaper watch its CQEs
 * (under w->lend_lock; without a reaper, @cw waits for them). */
void fzc_reaper_watch(struct fusezc_worker *w, struct fusezc_worker *cw);
/* A worker whose thread ends or whose ring goes: answer what is in flight. */
void fzc_worker_drain(struct fusezc_worker *w);
void fzc_reaper_stop(struct fusezc_session *zs);

/* The fuse_custom_io hooks (exposed for the unit tests). */
ssize_t fzc_io_read(int fd, void *buf, size_t len, void *userdata);
ssize_t fzc_io_writev(int fd, struct iovec *iov, int count, void *userdata);

static inline void fzc_add(_Atomic uint64_t *ctr, uint64_t v)
{
	atomic_fetch_add_explicit(ctr, v, memory_order_relaxed);
}

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

#endif /* FUSE_ZC_INT_H */
