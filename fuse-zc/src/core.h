/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libfuse-zc internals: the session, the state of a worker (a thread of
 * libfuse's loop), the lendings in flight, and what every part of the
 * library shares: messages, counters and buffers (core.c).
 *
 * Modules, each a .c with its .h, lower ones never including higher ones
 * (tests/zc_layout.py layering checks it):
 *
 *   table    recorded requests (read and write)
 *   core     these types; messages, counters, buffers
 *   ring     the kernel side: a worker's io_uring, one lending, the
 *            error policy of lendings, writes to /dev/fuse
 *   reaper   lendings in flight, answered by their worker or the reaper
 *   worker   the sessions by /dev/fuse fd, a thread's worker state
 *   read     fusezc_reply_read(): zero copy, splice or copy
 *   write    fusezc_reply_write(): from the writer's pages, a memfd, or copy
 *   passthrough  backing ids and passthrough OPEN/CREATE replies
 *   hooks    libfuse's custom I/O hooks, the INIT rewrite
 *   session  the public session API and the loop
 */
#ifndef FZC_CORE_H
#define FZC_CORE_H

#include "fuse_zc.h"
#include "fuse_zc_kabi.h"
#include "table.h"

#include <liburing.h>
#include <linux/fuse.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/types.h>

#define FZC_DEFAULT_RING	8
#define FZC_MSGBUF		512	/* small replies we rewrite (INIT, OPEN, CREATE) */
#define FZC_ERRNO_MAX		4096

/* Which one-line-per-reason log a note belongs to. */
enum fzc_note {
	FZC_NOTE_LEND,		/* a lending was refused */
	FZC_NOTE_REPLY,		/* the zero-copy reply was refused */
	FZC_NOTE_RING,		/* io_uring setup/submit failed */
	FZC_NOTE_IO,		/* the backing file failed a lent read */
	FZC_NOTE_NR,
};

enum fzc_pending {
	FZC_PEND_NONE,
	FZC_PEND_OPEN,		/* add FOPEN_PASSTHROUGH + backing_id */
};

enum fzc_splice_state {
	FZC_SPLICE_UNKNOWN,
	FZC_SPLICE_SEEN,	/* libfuse really spliced */
	FZC_SPLICE_WARNED,	/* libfuse copied instead; said so once */
};

struct fusezc_worker;
struct fzc_inflight;

/*
 * The CQE of an asynchronous lending of @w's: counts what the kernel
 * answered (@answered), answers the request otherwise (a refusal, a short
 * or failed lending).  @cw is the calling thread's worker state (its copy
 * buffer): @w's own, or the reaper's.
 */
typedef void fzc_lend_done_fn(struct fusezc_worker *w, struct fusezc_worker *cw,
			      const struct fzc_inflight *p, int res, bool answered);

/*
 * A lending submitted without waiting: what its CQE needs to answer the
 * request when the kernel did not.  @fd must stay open until then, which it
 * does when it is the open file's descriptor: the kernel sends no RELEASE
 * while a read or a write of the file is unanswered.
 */
#define FZC_PIECES_MAX		8	/* pieces of one lending, at most */
struct fzc_inflight {
	fzc_lend_done_fn *done;
	uint64_t unique;
	int devfd;
	int fd;
	off_t off;
	size_t size;
	bool busy;
	bool write;		/* IORING_OP_WRITE_SPLICE_BUF: a FUSE_WRITE's pages */
	/*
	 * A request lent in pieces (an O_DIRECT file on a device that takes
	 * less in one bio): a slot a piece, each with its own CQE.  The
	 * first piece's slot is the request's (the fields above, for the
	 * whole request) and keeps the group; the request is answered once,
	 * when the last piece's CQE is in.  A whole lending is a group of 1.
	 */
	unsigned int leader;		/* slot of the group's first piece */
	unsigned int npieces;		/* leader: pieces in the group */
	unsigned int pending;		/* leader: CQEs still to come */
	unsigned char slots[FZC_PIECES_MAX];		/* leader: each piece's slot, in order */
	size_t piece_len;		/* this piece's bytes */
	int res;			/* this piece's CQE res, once in */
	bool answered;			/* ... and whether the kernel answered */
	/* leader, once its last CQE is in: the bytes its pieces placed
	 * without a hole from the start, even where a later piece failed
	 * (a write that failed after some bytes reports those) */
	size_t placed;
};
#define FZC_INFLIGHT_MAX	32	/* lendings in flight per worker */
#define FZC_DEV_LIMITS		8	/* block devices whose limits are kept */
#define FZC_REFUSED_FILES	16	/* files remembered as refused */
#define FZC_HELPERS_MAX		8	/* threads answering the reaper's fallbacks */

/*
 * What the library keeps for a thread of libfuse's loop: created by the read
 * hook on the first request a thread reads, retired when the thread exits
 * (libfuse's loop cancels and joins its workers before it returns; with
 * max_idle_threads, idle workers exit earlier).
 */
struct fusezc_worker {
	struct fusezc_session *zs;
	int devfd;			/* the /dev/fuse file (or clone) it reads */
	/*
	 * The library's own descriptor of that clone (-1 for the session's
	 * fd, which outlives the loop): a retiring libfuse worker closes its
	 * clone before its thread ends, so lendings in flight answer through
	 * this one, closed only when none is left.
	 */
	int devref;

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
	unsigned int handed_off;	/* CQEs a helper answers (zs->reaper_lock) */
	bool watched;				/* its ring fd is in the reaper's epoll */

	/*
	 * opts.ring_read: lendings are prepared, not submitted, while the
	 * worker answers a request it read through its ring; the next read
	 * of /dev/fuse submits them with itself.
	 */
	bool ring_reading;		/* this worker reads /dev/fuse through its ring */
	unsigned int sq_deferred;	/* lendings prepared since the last submission */
	bool devread_armed;		/* its read of /dev/fuse is in the ring */
	bool devread_done;		/* ... and its CQE is in: */
	int devread_res;
	/* the last read found requests queued while lendings were still out:
	 * wait for the next request only, not for the new lendings too */
	bool devread_busy;
	void *devread_buf;		/* where the read puts the request */
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
	atomic_bool init_done;		/* the kernel took our INIT reply */
	atomic_bool zc_active;
	atomic_bool zcw_active;		/* zero-copy writes negotiated */
	atomic_bool pt_active;
	const char *_Atomic zc_status;
	char zc_status_buf[96];		/* a status made at INIT */
	int init_error;			/* -errno the loop returns */
	atomic_bool splice_enabled;	/* fusezc_conn_init() enabled SPLICE_WRITE */
	/* lend with IORING_SPLICE_BUF_COMPLETE: set at INIT when zero copy is
	 * negotiated, unless opts.server_replies */
	atomic_bool kernel_answers;
	atomic_int splice_state;

	/* FUSE_READs and data-less FUSE_WRITEs in flight. */
	struct fzc_request_table requests;

	/* Files the kernel refuses to lend to for good (EXDEV), by fd and
	 * identity (ring.c): their requests are not lent again. */
	pthread_mutex_t refused_lock;
	struct fzc_refused_file {
		int fd;
		dev_t dev;
		ino_t ino;
		int err;
	} refused[FZC_REFUSED_FILES];
	unsigned int refused_next;
	atomic_uint refused_count;

	/*
	 * The largest piece an O_DIRECT lending to a file of each block
	 * device is cut into (ring.c): read from the device's queue limits
	 * once, 0 for a device without them.
	 */
	pthread_mutex_t limits_lock;
	struct fzc_dev_limit {
		dev_t dev;
		size_t piece_max;
	} dev_limits[FZC_DEV_LIMITS];
	unsigned int dev_limits_n;

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
	/*
	 * The reaper answers what the kernel answered and hands every other
	 * CQE (a copy or error reply, which may block on a slow backing file)
	 * to helper threads, up to FZC_HELPERS_MAX, started when no helper is
	 * idle.  Under reaper_lock.
	 */
	struct fzc_handoff *handoff_head, *handoff_tail;
	unsigned int handoff_queued;
	pthread_cond_t handoff_cond;		/* a job, or stop */
	pthread_cond_t handoff_done;		/* a worker's handed_off went 0 */
	unsigned int helpers, helpers_idle;
	bool helpers_stop;
	pthread_t helper_threads[FZC_HELPERS_MAX];

	/*
	 * opts.ring_read: one worker at a time, the leader, reads /dev/fuse
	 * through its ring; the others wait here.  A read in a ring waits as
	 * a poll of the device, which every request wakes: with one armed in
	 * each idle worker's ring, every request would wake them all.  The
	 * leader keeps the role while it answers a request that cannot block
	 * (the lendings it prepares go with its next read), and hands it on
	 * before anything that may (fzc_ring_read_yield()); a leader away
	 * from /dev/fuse longer than the library allows loses it.
	 */
	pthread_mutex_t rr_lock;
	pthread_cond_t rr_cond;			/* on CLOCK_MONOTONIC */
	struct fusezc_worker *_Atomic rr_leader;
	int64_t rr_away_since;			/* ms: the leader left with a
						 * request; 0 while it reads */
	unsigned int rr_waiting;
	_Atomic uint64_t rr_handoffs, rr_takeovers;

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
	_Atomic uint64_t resent_writes;		/* asked to be sent again with data */

	/* One log line per (kind, errno). */
	_Atomic uint64_t noted[FZC_NOTE_NR][FZC_ERRNO_MAX / 64];
	/* One line each: fusezc_reply_read() of a request not recorded as a
	 * FUSE_READ; a data-less FUSE_WRITE answered without fusezc_reply_write(). */
	atomic_bool warned_unrecorded_read;
	atomic_bool warned_unanswered_write;

	struct fusezc_session *next_session;	/* fzc_session_by_fd() list */
};

/* A library message: to opts.log when set, else fuse_log("fuse-zc: ..."). */
void fzc_log(struct fusezc_session *zs, enum fuse_log_level level,
	     const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* The same, before a session exists. */
void fzc_log_opts(const struct fusezc_options *o, enum fuse_log_level level,
		  const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Log one line per session and (kind, errno); returns true when it logged. */
bool fzc_note_once(struct fusezc_session *zs, enum fzc_note kind, int err);
void fzc_count_fallback(struct fusezc_session *zs, int err);

ssize_t fzc_pread_full(int fd, void *buf, size_t size, off_t off);
ssize_t fzc_pwrite_full(int fd, const void *buf, size_t size, off_t off);
/* Page-aligned, so that a read into it may use an O_DIRECT descriptor. */
void *fzc_alloc_aligned(size_t size);
/* @w's copy buffer, grown to @size; NULL when out of memory. */
void *fzc_copybuf(struct fusezc_worker *w, size_t size);

static inline void fzc_add(_Atomic uint64_t *ctr, uint64_t v)
{
	atomic_fetch_add_explicit(ctr, v, memory_order_relaxed);
}

/* The table of recorded requests is in use when either zero copy is. */
static inline bool fzc_table_active(struct fusezc_session *zs)
{
	return atomic_load(&zs->zc_active) || atomic_load(&zs->zcw_active);
}

#endif /* FZC_CORE_H */
