/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libfuse-zc: zero-copy FUSE_READ replies for libfuse 3 low-level filesystems.
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

struct fusezc_options {
	enum fusezc_read_mode read_mode;
	/* Zero copy only: fail fusezc_session_loop() with -EOPNOTSUPP when the
	 * kernel does not offer the capability, instead of falling back. */
	bool zerocopy_required;
	/* Negotiate FUSE passthrough (FOPEN_PASSTHROUGH); needs CAP_SYS_ADMIN. */
	bool passthrough;
	unsigned int threads;		/* worker threads; 0 = default (4) */
	unsigned int ring_entries;	/* io_uring SQ size a worker; 0 = default */
	bool register_fuse_fd;		/* use /dev/fuse as a registered (fixed) file */
};

struct fusezc_stats {
	uint64_t zc_bytes, zc_requests;
	uint64_t splice_bytes, splice_requests;
	uint64_t copy_bytes, copy_requests;
	uint64_t fallbacks;		/* requests that fell back from zero copy */
	uint64_t fallback_errno_counts[4]; /* EOPNOTSUPP, EPERM, ENOENT/EINVAL, other */
};

struct fusezc_session;

/* Attach to a session created (and mounted) by the caller.  Must be called
 * before the first request is received. */
int fusezc_session_new(struct fuse_session *se, const struct fusezc_options *opts,
		       struct fusezc_session **zsp);
/* Run the request loop until the filesystem is unmounted or
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
 * when @off and @size suit the file's direct I/O alignment.
 */
void fusezc_reply_read(fuse_req_t req, int fd, off_t off, size_t size);

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

#ifdef __cplusplus
}
#endif
#endif /* FUSE_ZC_H */
