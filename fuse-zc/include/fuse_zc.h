/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libfuse-zc: zero-copy FUSE_READ and FUSE_WRITE for libfuse 3 low-level
 * filesystems.
 *
 * Usage (see passthrough/ for a complete filesystem):
 *
 *	se = fuse_session_new(&args, &ops, sizeof(ops), fs);
 *	fuse_session_mount(se, mountpoint);
 *	fusezc_session_new(se, &zopts, &zs);     // before the loop: INIT is seen by it
 *	fusezc_session_loop(zs);                 // multi-threaded, one io_uring a worker
 *	...
 *	static void fs_read(fuse_req_t req, fuse_ino_t ino, size_t size,
 *			    off_t off, struct fuse_file_info *fi)
 *	{
 *		fusezc_reply_read(req, fi->fh, off, size);
 *	}
 *	static void fs_write(fuse_req_t req, fuse_ino_t ino, const char *buf,
 *			     size_t size, off_t off, struct fuse_file_info *fi)
 *	{
 *		fusezc_reply_write(req, fi->fh, off, buf, size);
 *	}
 *
 * All functions returning int return 0 or a negative errno.
 */
#ifndef FUSE_ZC_H
#define FUSE_ZC_H

#ifndef FUSE_USE_VERSION
#define FUSE_USE_VERSION 314
#endif
#include <fuse_lowlevel.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

enum fusezc_read_mode {
	FUSEZC_READ_COPY,	/* pread into a buffer, reply with a copy */
	FUSEZC_READ_SPLICE,	/* splice the file into /dev/fuse */
	FUSEZC_READ_ZEROCOPY,	/* IORING_OP_READ_SPLICE_BUF into the reader's pages */
};

/*
 * libfuse versions: fuse-zc hooks libfuse's reply path through the public
 * fuse_session_custom_io() (3.14+).  Tested with 3.14, 3.17 and 3.18
 * (docs/design.md, "libfuse versions").  libfuse 3.18's io_uring transport
 * (-o io_uring) would answer requests without those hooks: fuse-zc keeps
 * the kernel's offer of it from libfuse at INIT, with one line.
 */
#if !defined(FUSE_MAJOR_VERSION) || FUSE_MAJOR_VERSION != 3 || FUSE_MINOR_VERSION < 14
#error "fuse-zc needs libfuse 3.14 or newer 3.x (fuse_session_custom_io)"
#endif

struct fusezc_session;

/*
 * Versioned by size: fusezc_session_new() passes the sizeof of the struct
 * the caller was compiled with, so fields appended later read as 0 (their
 * default) for an older caller.  Zero-initialise, then set what you need.
 */
struct fusezc_options {
	enum fusezc_read_mode read_mode;
	/* Zero copy only: fail fusezc_session_loop() with -EOPNOTSUPP when the
	 * kernel does not offer the capability, instead of falling back. */
	bool zerocopy_required;
	/* Negotiate FUSE passthrough (FOPEN_PASSTHROUGH); needs CAP_SYS_ADMIN. */
	bool passthrough;
	unsigned int ring_entries;	/* io_uring SQ size a worker; 0 = default */
	bool register_fuse_fd;		/* use /dev/fuse as a registered (fixed) file */

	/* The loop is libfuse's fuse_session_loop_mt(): these are its
	 * fuse_loop_config (values of fuse_parse_cmdline() fit as they are). */
	unsigned int max_threads;	/* 0 = libfuse's default (10) */
	unsigned int max_idle_threads;	/* 0 or UINT_MAX = libfuse's default (no limit) */
	bool clone_fd;			/* a /dev/fuse clone per worker */

	/*
	 * Events, called on a worker thread; @data is event_data.
	 * init_done: the kernel has processed the FUSE_INIT reply (@error 0;
	 * the connection's limits are final and fusezc_zerocopy_active() tells
	 * what was negotiated), or INIT failed (-EOPNOTSUPP: zero copy required
	 * but not offered; the loop then ends).  Called once.
	 * log: the library's one-line messages (without a trailing newline or
	 * prefix) instead of fuse_log() with a "fuse-zc: " prefix.
	 */
	void (*init_done)(struct fusezc_session *zs, int error, void *data);
	void (*log)(enum fuse_log_level level, const char *msg, void *data);
	void *event_data;

	/*
	 * Tell the kernel (FUSE_NO_EXPORT_SUPPORT, Linux 6.9+) that the file
	 * system cannot open its nodes by file handle, so name_to_handle_at()
	 * fails with EOPNOTSUPP instead of handing out handles that go stale
	 * (ESTALE) once the inode leaves the cache.  libfuse 3.14 cannot send
	 * this flag; the library adds it to the INIT reply.
	 */
	bool no_export_support;

	/*
	 * Zero copy: the server writes every read reply itself.  By default
	 * the kernel answers a read whose lendings brought all of its data
	 * (IORING_SPLICE_BUF_COMPLETE), which saves a write(2) a read; this
	 * is for comparison.  Every kernel that offers zero copy at INIT
	 * can answer; a lending's error never turns it off.
	 */
	bool server_replies;

	/*
	 * Zero copy: wait for each lending before the worker reads its next
	 * request (one io_uring_enter() that submits and waits).  By default,
	 * where the kernel answers reads, a worker submits the lending and
	 * goes back to /dev/fuse at once; a CQE the kernel did not answer is
	 * answered later, by that worker or by the library's reaper thread.
	 * Zero-copy writes are lent the same way.  The file descriptor given
	 * to fusezc_reply_read() or fusezc_reply_write() must then stay open
	 * until the request is answered (an open file's descriptor, closed at
	 * RELEASE, does).
	 */
	bool sync_lending;

	/*
	 * Zero-copy writes: accept FUSE_ZERO_COPY_WRITE when the kernel
	 * offers it (zero-copy read mode only).  The kernel then sends a
	 * FUSE_WRITE whose data is in pages without the data; libfuse hands
	 * it to the write handler with size 0, and only fusezc_reply_write()
	 * can answer it (it writes the data from the writer's pages).  Set
	 * this only if every FUSE_WRITE is answered with fusezc_reply_write():
	 * any other answer gets the writer EIO, never wrong bytes.
	 */
	bool zerocopy_writes;

	/*
	 * Zero copy: a worker reads its next request through its own io_uring
	 * (IORING_OP_READ of /dev/fuse, polled), in the same io_uring_enter()
	 * that submits the lendings of the requests it has just answered: one
	 * system call a request instead of a read(2) and an io_uring_enter().
	 * The worker answers its own lendings' CQEs while it waits (no
	 * reaper).  One worker of the session reads at a time (a read armed
	 * in a ring is a poll that every request wakes); it keeps the role
	 * while it answers READ, WRITE, INTERRUPT and FORGET, and hands it on
	 * before anything else, or before the library blocks for it; a READ
	 * or WRITE handler that blocks on its own holds other requests up
	 * until another worker takes over, after 100 ms.  Needs a kernel
	 * whose /dev/fuse reads honour IOCB_NOWAIT (the fuse-zc series'
	 * patch 43); on others a read can sleep inside io_uring_enter() until
	 * the next request.  Off by default (docs/performance.md, "One system
	 * call per request").
	 */
	bool ring_read;
};

struct fusezc_stats {
	uint64_t zc_bytes, zc_requests;
	uint64_t splice_bytes, splice_requests;
	uint64_t copy_bytes, copy_requests;
	uint64_t fallbacks;		/* requests that fell back from zero copy */
	uint64_t fallback_errno_counts[4]; /* EOPNOTSUPP, EPERM, ENOENT/EINVAL, other */
	uint64_t zc_kernel_answered;	/* of zc_requests: answered by the kernel */
};

/* Attach to a session created (and mounted) by the caller.  Must be called
 * before the first request is received.  @opts may be NULL (copy mode). */
int fusezc_session_new_versioned(struct fuse_session *se,
				 const struct fusezc_options *opts, size_t opts_size,
				 struct fusezc_session **zsp);
static inline int fusezc_session_new(struct fuse_session *se,
				     const struct fusezc_options *opts,
				     struct fusezc_session **zsp)
{
	return fusezc_session_new_versioned(se, opts, sizeof(struct fusezc_options), zsp);
}
/* Run libfuse's multi-threaded loop (fuse_session_loop_mt() with the
 * options' loop config) until the filesystem is unmounted or
 * fuse_session_exit() is called.  Returns 0 or -errno. */
int fusezc_session_loop(struct fusezc_session *zs);
void fusezc_session_destroy(struct fusezc_session *zs);

/*
 * Optional, from the filesystem's init handler: in splice and zerocopy
 * modes, enable FUSE_CAP_SPLICE_WRITE so that libfuse really splices (the
 * splice mode, and the fallback of the zerocopy mode).  Without it splice
 * mode replies are copied by libfuse and zerocopy falls back to copy.
 * @zs may be NULL (the session of the calling worker).
 */
void fusezc_conn_init(struct fusezc_session *zs, struct fuse_conn_info *conn);

/* The fusezc session a request belongs to (valid inside op handlers). */
struct fusezc_session *fusezc_req_session(fuse_req_t req);

/*
 * The kernel has processed our FUSE_INIT reply (the connection's limits,
 * e.g. the bdi read-ahead it lowered to max_readahead, are final).
 */
bool fusezc_init_done(const struct fusezc_session *zs);

/* What INIT negotiated: zero copy really in use for this connection. */
bool fusezc_zerocopy_active(const struct fusezc_session *zs);
bool fusezc_passthrough_active(const struct fusezc_session *zs);
/* Human-readable reason why zero copy is not active ("" when it is). */
const char *fusezc_zerocopy_status(const struct fusezc_session *zs);

/*
 * Answer the FUSE_READ @req with up to @size bytes of @fd at @off: zero
 * copy when the connection has it, else splice, else copy; a refused
 * zero-copy lending or reply falls back to a copy for that request (one log
 * line per reason), an error of @fd is the reply.  Replies exactly once.
 * May be called later and from any thread (a deferred reply): on a fusezc
 * worker it is zero copy of @req itself, elsewhere a copy.  Every mode
 * reads into page-aligned memory, so @fd may be an O_DIRECT descriptor
 * when @off and @size suit the file's direct I/O alignment.  Zero copy may
 * answer after this returns (see sync_lending): @fd must stay open until
 * the read is answered, as an open file's descriptor closed at RELEASE
 * does.  Returns 0, or -errno when the reply could not be sent (as
 * fuse_reply_*() do: -ENOENT when the request is gone, interrupted or
 * aborted); 0 also when zero copy answers later.
 */
int fusezc_reply_read(fuse_req_t req, int fd, off_t off, size_t size);

/*
 * FUSE passthrough: register @fd as a backing file (>0 id) / release it.
 * -EOPNOTSUPP when INIT did not negotiate passthrough.  Keep an id
 * registered until RELEASE (or later): the kernel looks it up after the
 * OPEN reply has been written, so closing it right after replying races.
 */
int fusezc_backing_open(struct fusezc_session *zs, int fd);
int fusezc_backing_close(struct fusezc_session *zs, int backing_id);
/* Reply to OPEN/CREATE so that reads and writes go to @backing_id directly.
 * Without negotiated passthrough, or with @backing_id <= 0, this is a plain
 * fuse_reply_open/create (the FS's read/write handlers then serve the file).
 * Must be called from the op handler's thread. */
int fusezc_reply_open_passthrough(fuse_req_t req, struct fuse_file_info *fi,
				  int backing_id);
int fusezc_reply_create_passthrough(fuse_req_t req, const struct fuse_entry_param *e,
				    struct fuse_file_info *fi, int backing_id);

void fusezc_get_stats(const struct fusezc_session *zs, struct fusezc_stats *st);

/* What INIT negotiated: the kernel sends FUSE_WRITEs without their data. */
bool fusezc_zerocopy_writes_active(const struct fusezc_session *zs);

/*
 * Answer the FUSE_WRITE @req by writing its data to @fd at @off.  @buf and
 * @size are what libfuse gave the write handler.  A write the kernel sent
 * without its data (opts.zerocopy_writes) comes with @size 0 and is
 * written from the writer's own pages (IORING_OP_WRITE_SPLICE_BUF); when
 * the kernel refuses that for @fd (a FUSE or stacked file system, an
 * O_DIRECT misalignment), the data is borrowed into a memfd and written
 * from there.  Any other write is a pwrite() of @buf.  Replies exactly once,
 * with the bytes written (short only if @fd wrote short) or the error.
 * Call it from the write handler, on the thread libfuse called it on.
 * Zero copy may answer after this returns, once the data is in @fd (see
 * sync_lending): @fd must stay open until then, as an open file's
 * descriptor closed at RELEASE does.
 * Returns 0, or -errno when the reply could not be sent (as fuse_reply_*());
 * 0 also when zero copy answers later.
 */
int fusezc_reply_write(fuse_req_t req, int fd, off_t off, const void *buf, size_t size);

/*
 * In the write handler (on libfuse's thread, before replying): the size of
 * the write's data, @size for a write that came with it, the size the
 * kernel announced for one that did not.  To choose @fd for
 * fusezc_reply_write() by alignment, for instance.  @req is not used yet.
 */
size_t fusezc_write_size(fuse_req_t req, size_t size);

struct fusezc_write_stats {
	uint64_t zc_bytes, zc_requests;	/* written from the writer's pages */
	uint64_t zc_kernel_answered;	/* of zc_requests: answered by the kernel */
	uint64_t memfd_bytes, memfd_requests;	/* borrowed into a memfd first */
	uint64_t copy_bytes, copy_requests;	/* came with their data */
	uint64_t unanswered_zc;		/* answered without fusezc_reply_write() */
};
void fusezc_get_write_stats(const struct fusezc_session *zs, struct fusezc_write_stats *st);

/*
 * Set the read-ahead of the FUSE mount on @mountpoint to @kb KiB through its
 * bdi (/sys/class/bdi/<dev>/read_ahead_kb), above what FUSE_INIT can grant.
 * Call it once the kernel has processed the INIT reply (which would lower it
 * again), e.g. from the session loop's start.  Needs root and a writable
 * sysfs.  0 or -errno.
 */
int fusezc_set_readahead(const char *mountpoint, unsigned int kb);

#ifdef __cplusplus
}
#endif
#endif /* FUSE_ZC_H */
