// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * libfuse's custom I/O hooks and the FUSE_INIT negotiation (see hooks.h).
 *
 * libfuse 3.14 gives no access to a request's unique id and does not forward
 * INIT flags it does not know.  Its public fuse_session_custom_io() does: the
 * read hook sees every raw request, the writev hook every reply.  The read
 * hook records each FUSE_READ of a zero-copy session (unique, offset, size)
 * in the table of requests; a reply's header carries its request's unique,
 * so the writev hook knows which request a reply is for whatever thread
 * sends it, and read.c answers exactly that one.  INIT and the passthrough
 * OPEN/CREATE rewrites use the raw header of the request the worker is
 * processing, and a rewrite armed on that thread by
 * fusezc_reply_*_passthrough().
 *
 * libfuse hands every hook the fd of the worker's channel and replies on
 * the channel the request came from, so a lending made from the writev
 * hook names the right file.
 */
#include "hooks.h"

#include "read.h"
#include "reaper.h"
#include "ring.h"
#include "worker.h"
#include "write.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

static const char fzc_status_not_offered[] =
	"kernel does not offer FUSE zero copy (stock kernel)";
const char fzc_status_disabled[] = "disabled by options";
const char fzc_status_no_init[] = "FUSE INIT not seen yet";
static const char fzc_status_short_init[] =
	"FUSE INIT reply too short to carry flags2";
static const char fzc_status_init_missed[] =
	"FUSE INIT was answered before fuse-zc was attached";

/* ------------------------------------------------------------------ */
/* FUSE_INIT                                                           */

/*
 * The INIT request as read into @buf: keep what the kernel offers, and take
 * FUSE_OVER_IO_URING out of it.  libfuse 3.18's io_uring transport
 * (-o io_uring) answers requests without the custom-I/O hooks: zero copy,
 * the INIT rewrite and passthrough replies would be lost in silence, so
 * libfuse must not see the offer and stays on /dev/fuse.
 */
static void note_init_request(struct fusezc_session *zs, void *buf, size_t len)
{
	struct fuse_init_in *in = (void *)((char *)buf + sizeof(struct fuse_in_header));
	size_t inlen = len - sizeof(struct fuse_in_header);
	uint64_t offered;

	if (inlen < offsetof(struct fuse_init_in, flags) + sizeof(in->flags))
		return;
	offered = in->flags;
	if (in->major == 7 && in->minor >= 36 && (in->flags & FUSEZC_INIT_EXT) &&
	    inlen >= offsetof(struct fuse_init_in, flags2) + sizeof(in->flags2))
		offered |= (uint64_t)in->flags2 << 32;
	zs->init_offered = offered;
	if (offered & FUSEZC_INIT_OVER_IO_URING) {
		in->flags2 &= ~(uint32_t)(FUSEZC_INIT_OVER_IO_URING >> 32);
		fzc_log(zs, FUSE_LOG_INFO,
			"FUSE over io_uring not used (libfuse -o io_uring): its requests bypass fuse-zc; they stay on /dev/fuse");
	}
}

static inline uint32_t get32(const unsigned char *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof(v));
	return v;
}

static inline void put32(unsigned char *p, uint32_t v)
{
	memcpy(p, &v, sizeof(v));
}

/* Rewrite the INIT reply in @msg (@len bytes); returns false to send an error. */
static bool rewrite_init_reply(struct fusezc_session *zs, unsigned char *msg,
			       size_t len)
{
	struct fuse_out_header out;	/* @msg need not be aligned for it */
	unsigned char *arg = msg + sizeof(out);
	size_t arglen = len - sizeof(out);
	uint64_t offered = zs->init_offered;
	bool want_zc = zs->opts.read_mode == FUSEZC_READ_ZEROCOPY;
	bool has_zc = offered & FUSEZC_INIT_ZC_READ;
	uint32_t flags, flags2;
	int ring_err;

	memcpy(&out, msg, sizeof(out));
	if (out.error != 0) {
		zs->init_error = out.error;
		atomic_store(&zs->zc_status, "FUSE INIT failed");
		return true;
	}
	if (arglen < INIT_OUT_MIN) {
		atomic_store(&zs->zc_status, want_zc ? fzc_status_short_init : fzc_status_disabled);
		if (want_zc && zs->opts.zerocopy_required)
			goto refuse;
		return true;
	}
	flags = get32(arg + INIT_OUT_FLAGS);
	flags2 = get32(arg + INIT_OUT_FLAGS2);

	if (want_zc && has_zc && (ring_err = fzc_ring_probe()) < 0) {
		/* Zero-copy writes reach the server only by lending: never
		 * accept zero copy without a ring (io_uring_disabled, a
		 * seccomp filter, RLIMIT_MEMLOCK). */
		snprintf(zs->zc_status_buf, sizeof(zs->zc_status_buf),
			 "io_uring cannot be set up (%s)", strerror(-ring_err));
		atomic_store(&zs->zc_status, (const char *)zs->zc_status_buf);
		if (zs->opts.zerocopy_required)
			goto refuse;
		fzc_log(zs, FUSE_LOG_WARNING, "zero copy unavailable: %s; falling back to %s",
			zs->zc_status_buf, atomic_load(&zs->splice_enabled) ? "splice" : "copy");
	} else if (want_zc && has_zc) {
		flags |= FUSEZC_INIT_EXT;
		flags2 |= (uint32_t)(FUSEZC_INIT_ZC_READ >> 32);
		atomic_store(&zs->zc_status, "");
		atomic_store(&zs->zc_active, true);
		/* Every kernel that offers the capability answers a read its
		 * lendings completed (IORING_SPLICE_BUF_COMPLETE): decided
		 * here, never from one lending's error. */
		atomic_store(&zs->kernel_answers, !zs->opts.server_replies);
		fzc_log(zs, FUSE_LOG_INFO, "zero-copy reads active");
		if (zs->opts.zerocopy_writes && (offered & FUSEZC_INIT_ZC_WRITE)) {
			flags2 |= (uint32_t)(FUSEZC_INIT_ZC_WRITE >> 32);
			atomic_store(&zs->zcw_active, true);
			fzc_log(zs, FUSE_LOG_INFO, "zero-copy writes active");
		} else if (zs->opts.zerocopy_writes) {
			fzc_log(zs, FUSE_LOG_INFO,
				"zero-copy writes unavailable: the kernel does not offer FUSE_ZERO_COPY_WRITE; writes are copied");
		}
	} else if (want_zc) {
		atomic_store(&zs->zc_status, fzc_status_not_offered);
		if (zs->opts.zerocopy_required)
			goto refuse;
		fzc_log(zs, FUSE_LOG_WARNING,
			"zero copy unavailable: %s; falling back to %s",
			 fzc_status_not_offered, atomic_load(&zs->splice_enabled) ? "splice" : "copy");
	} else {
		atomic_store(&zs->zc_status, fzc_status_disabled);
	}

	if (zs->opts.passthrough) {
		if (!(offered & FUSEZC_INIT_PASSTHROUGH)) {
			fzc_log(zs, FUSE_LOG_WARNING,
				"passthrough unavailable: kernel does not offer FUSE_PASSTHROUGH");
		} else if (flags & FUSE_WRITEBACK_CACHE) {
			fzc_log(zs, FUSE_LOG_WARNING,
				"passthrough unavailable: the kernel refuses it with writeback cache");
		} else {
			flags |= FUSEZC_INIT_EXT;
			flags2 |= (uint32_t)(FUSEZC_INIT_PASSTHROUGH >> 32);
			put32(arg + INIT_OUT_STACK_DEPTH, 1);
			atomic_store(&zs->pt_active, true);
		}
	}
	if (zs->opts.no_export_support && (offered & FUSEZC_INIT_EXT)) {
		flags |= FUSEZC_INIT_EXT;
		flags2 |= (uint32_t)(FUSEZC_INIT_NO_EXPORT_SUPPORT >> 32);
	}
	put32(arg + INIT_OUT_FLAGS, flags);
	put32(arg + INIT_OUT_FLAGS2, flags2);
	return true;

refuse:
	fzc_log(zs, FUSE_LOG_ERR, "zero copy required but %s",
		has_zc ? atomic_load(&zs->zc_status) :
		"the kernel does not offer it (needs the fuse-zc patched kernel)");
	zs->init_error = -EOPNOTSUPP;
	return false;
}

/*
 * A request before INIT was seen: libfuse answered INIT before the hooks
 * were installed (fusezc_session_new() after the first request, or a
 * libfuse that processes INIT during the mount).  Zero copy was then never
 * negotiated: say so once, and end the loop when it is required.
 */
static void init_missed(struct fusezc_session *zs)
{
	if (atomic_exchange(&zs->init_seen, true))
		return;
	atomic_store(&zs->zc_status, zs->opts.read_mode == FUSEZC_READ_ZEROCOPY ?
		     fzc_status_init_missed : fzc_status_disabled);
	if (zs->opts.read_mode != FUSEZC_READ_ZEROCOPY)
		return;
	if (zs->opts.zerocopy_required) {
		fzc_log(zs, FUSE_LOG_ERR, "zero copy required but %s",
			fzc_status_init_missed);
		zs->init_error = -EOPNOTSUPP;
		fuse_session_exit(zs->se);
	} else {
		fzc_log(zs, FUSE_LOG_WARNING, "zero copy unavailable: %s",
			fzc_status_init_missed);
	}
}

/*
 * A reply that was not fusezc_reply_read()'s or fusezc_reply_write()'s:
 * the request leaves the table.  A zero-copy write answered so is counted
 * (its writer gets EIO, or the error the reply carries).
 */
static void forget_request(struct fusezc_session *zs, uint64_t unique)
{
	struct fzc_request r;

	if (fzc_requests_take(&zs->requests, unique, &r) && r.write) {
		fzc_add(&zs->zcw_unanswered, 1);
		if (!atomic_exchange(&zs->warned_unanswered_write, true))
			fzc_log(zs, FUSE_LOG_WARNING,
				"a FUSE_WRITE sent without its data was answered without fusezc_reply_write()");
	}
}

/*
 * A handler that may sleep in the kernel where task work cannot run (a
 * stat or fsync of the source on a slow disk).  An asynchronous lending
 * completes in its worker's task work, so a worker answers its lendings
 * before it runs such a handler, rather than hold their readers up; but
 * only those that end within SETTLE_MS: a lending's I/O may need this very
 * request answered (a file system mounted from a file of this mount
 * revalidates that file's attributes before reading it: a GETATTR the
 * lending's io-wq worker waits for), and the reaper answers the rest.
 * Read and write handlers only reply through the library; interrupts and
 * forgets are quick.
 */
#define SETTLE_MS	100

static bool may_block(uint32_t opcode)
{
	switch (opcode) {
	case FUSE_READ:
	case FUSE_WRITE:
	case FUSE_INTERRUPT:
	case FUSE_FORGET:
	case FUSE_BATCH_FORGET:
		return false;
	default:
		return true;
	}
}

/*
 * Does @w read its next request from @fd through its ring (opts.ring_read)?
 * Only once zero copy is on (the ring is the lendings'), and only where
 * its lendings are deferred to that read (ring.c).
 */
static bool ring_read_ok(struct fusezc_worker *w, int fd)
{
	struct fusezc_session *zs = w->zs;

	w->ring_reading = zs->opts.ring_read && w->devfd == fd && atomic_load(&zs->zc_active) &&
			  fzc_kops->ring_read_dev != NULL && fzc_ring_get(w) == 0;
	return w->ring_reading;
}

ssize_t fzc_io_read(int fd, void *buf, size_t len, void *userdata)
{
	const struct fuse_in_header *in = buf;
	struct fusezc_worker *w;
	struct fusezc_session *zs;
	ssize_t res;

	(void)userdata;
	w = fzc_tls_worker;
	if (w != NULL && ring_read_ok(w, fd)) {
		res = fzc_lendings_read_request(w, fd, buf, len);
		/* the one reader keeps the role while it answers what cannot
		 * block: its lendings go with its next read */
		if (res < (ssize_t)sizeof(*in) || may_block(in->opcode))
			fzc_ring_read_yield(w);
		else
			fzc_ring_read_away(w);
		if (res < 0) {
			errno = (int)-res;
			return -1;
		}
	} else {
		if (w != NULL) {
			fzc_ring_read_yield(w);
			if (w->inflight > 0 || w->sq_deferred > 0)
				fzc_lendings_before_wait(w);
		}
		res = read(fd, buf, len);
	}
	if (res < (ssize_t)sizeof(*in))
		return res;
	w = fzc_worker_for_fd(fd);
	if (w == NULL) {
		/* never let libfuse take a data-less write for a full one */
		if (in->opcode == FUSE_WRITE)
			fzc_record_zc_write(NULL, buf, (size_t)res);
		return res;
	}
	zs = w->zs;
	if (w->inflight > 0 && may_block(in->opcode))
		fzc_lendings_settle(w, SETTLE_MS);
	/* A new request on this thread: the INIT/OPEN rewrites key on it. */
	memcpy(&w->in, in, sizeof(w->in));
	w->in_valid = true;
	w->pend = FZC_PEND_NONE;
	if (in->opcode == FUSE_INIT) {
		note_init_request(zs, buf, (size_t)res);
	} else if (!atomic_load(&zs->init_seen)) {
		init_missed(zs);
	} else if (in->opcode == FUSE_WRITE) {
		fzc_record_zc_write(zs, buf, (size_t)res);
	} else if (in->opcode == FUSE_READ && atomic_load(&zs->zc_active) &&
		   (size_t)res >= sizeof(*in) + sizeof(struct fuse_read_in)) {
		const struct fuse_read_in *ri = (const void *)(in + 1);
		struct fzc_request r = {
			.unique = in->unique, .offset = ri->offset, .size = ri->size,
		};

		fzc_requests_add(&zs->requests, &r);
	}
	return res;
}

/* Tell the application, once, how INIT ended (opts.init_done). */
static void report_init(struct fusezc_session *zs, int error)
{
	if (error == 0)
		atomic_store(&zs->init_done, true);
	if (zs->opts.init_done != NULL && !atomic_exchange(&zs->init_reported, true))
		zs->opts.init_done(zs, error, zs->opts.event_data);
}

static ssize_t write_all(int fd, const void *buf, size_t len)
{
	ssize_t res;

	struct iovec iov = { (void *)buf, len };

	do
		res = fzc_kops->dev_writev(fd, &iov, 1);
	while (res < 0 && errno == EINTR);
	return res;
}

/* What the writev hook tells libfuse of a reply it answered itself. */
static ssize_t sent(int res, size_t total)
{
	if (res < 0) {
		errno = -res;
		return -1;
	}
	return (ssize_t)total;
}

ssize_t fzc_io_writev(int fd, struct iovec *iov, int count, void *userdata)
{
	struct fusezc_worker *w = fzc_tls_worker;
	struct fuse_out_header hdr;	/* a copy: neither the caller's buffer
					 * nor w->msg is aligned for it */
	size_t total = 0, off = 0;
	ssize_t res;
	int i, err;

	(void)userdata;
	if (count < 1 || iov[0].iov_len < sizeof(struct fuse_out_header))
		return writev(fd, iov, count);
	memcpy(&hdr, iov[0].iov_base, sizeof(hdr));
	for (i = 0; i < count; i++)
		total += iov[i].iov_len;
	if (hdr.unique == 0)
		return writev(fd, iov, count);	/* a notification */

	if (w == NULL) {
		/* A reply from a thread of the file system: forget the request. */
		struct fusezc_session *zs = fzc_session_by_fd(fd);

		if (zs != NULL && fzc_table_active(zs))
			forget_request(zs, hdr.unique);
		return writev(fd, iov, count);
	}
	/* fusezc_reply_write() or _read(): answer the request this reply is for. */
	if (fzc_tls_write_reply != NULL && !fzc_tls_write_reply->answered &&
	    hdr.error == 0) {
		fzc_tls_write_reply->answered = true;
		return sent(fzc_answer_write(w, fd, hdr.unique, fzc_tls_write_reply), total);
	}
	if (fzc_tls_read_reply != NULL && !fzc_tls_read_reply->answered &&
	    hdr.error == 0) {
		fzc_tls_read_reply->answered = true;
		return sent(fzc_answer_read(w, fd, hdr.unique, fzc_tls_read_reply), total);
	}
	if (fzc_table_active(w->zs))
		forget_request(w->zs, hdr.unique);
	w->written_bytes = hdr.error ? -1 : (ssize_t)(total - sizeof(hdr));
	if (!w->in_valid || hdr.unique != w->in.unique)
		return writev(fd, iov, count);

	if (!(w->in.opcode == FUSE_INIT ||
	      (w->pend == FZC_PEND_OPEN && hdr.error == 0 &&
	       (w->in.opcode == FUSE_OPEN || w->in.opcode == FUSE_CREATE))) ||
	    total > sizeof(w->msg))
		return writev(fd, iov, count);

	/* A small reply we rewrite: flatten it. */
	for (i = 0; i < count; i++) {
		memcpy(w->msg + off, iov[i].iov_base, iov[i].iov_len);
		off += iov[i].iov_len;
	}

	if (w->in.opcode == FUSE_INIT) {
		struct fusezc_session *zs = w->zs;
		bool ok = rewrite_init_reply(zs, w->msg, total);

		atomic_store(&zs->init_seen, true);
		if (!ok) {
			/* Like libfuse on a capability mismatch: EPROTO, exit. */
			hdr.len = sizeof(hdr);
			hdr.error = -EPROTO;
			memcpy(w->msg, &hdr, sizeof(hdr));
			res = write_all(fd, w->msg, sizeof(hdr));
			fuse_session_exit(zs->se);
			report_init(zs, zs->init_error);
			return res < 0 ? res : (ssize_t)total;
		}
		res = write_all(fd, w->msg, total);
		/* The kernel processes an INIT reply within the write. */
		memcpy(&hdr, w->msg, sizeof(hdr));
		err = res < 0 ? -errno : hdr.error;
		report_init(zs, err);
		if (res < 0) {
			errno = -err;
			return -1;
		}
		return (ssize_t)total;
	}

	/* FZC_PEND_OPEN: fuse_open_out is the last part of OPEN and CREATE replies. */
	if (total >= sizeof(hdr) + sizeof(struct fzc_open_out)) {
		struct fzc_open_out oo;
		unsigned char *p = w->msg + total - sizeof(oo);

		memcpy(&oo, p, sizeof(oo));
		oo.open_flags |= FUSEZC_FOPEN_PASSTHROUGH;
		oo.backing_id = w->pend_backing_id;
		memcpy(p, &oo, sizeof(oo));
	}
	res = write_all(fd, w->msg, total);
	return res < 0 ? res : (ssize_t)total;
}

static ssize_t fzc_io_splice_send(int fdin, off_t *offin, int fdout, off_t *offout,
				  size_t len, unsigned int flags, void *userdata)
{
	struct fusezc_worker *w = fzc_tls_worker;
	ssize_t res;

	(void)userdata;
	res = splice(fdin, offin, fdout, offout, len, flags);
	if (w != NULL && res >= (ssize_t)sizeof(struct fuse_out_header)) {
		w->spliced = true;
		w->spliced_bytes = res - (ssize_t)sizeof(struct fuse_out_header);
	}
	return res;
}

#if FUSE_MINOR_VERSION >= 17
/*
 * libfuse 3.17 clones a custom-I/O session's fd only through this hook (it
 * gives up -o clone_fd without it): what libfuse does for its own fds.
 */
static int fzc_io_clone_fd(int master_fd)
{
	uint32_t master = (uint32_t)master_fd;
	int fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);

	if (fd < 0)
		return -1;
	if (ioctl(fd, FUSE_DEV_IOC_CLONE, &master) < 0) {
		int err = errno;

		close(fd);
		errno = err;
		return -1;
	}
	return fd;
}
#endif

const struct fuse_custom_io fzc_io = {
	.read = fzc_io_read,
	.writev = fzc_io_writev,
	.splice_receive = NULL,
	.splice_send = fzc_io_splice_send,
#if FUSE_MINOR_VERSION >= 17
	.clone_fd = fzc_io_clone_fd,
#endif
};

int fzc_hooks_install(struct fuse_session *se, int fd)
{
#if FUSE_MINOR_VERSION >= 17
	/* the 3-argument form (FUSE_USE_VERSION < 317) leaves clone_fd out */
	return fuse_session_custom_io_317(se, &fzc_io, sizeof(fzc_io), fd);
#else
	return fuse_session_custom_io(se, &fzc_io, fd);
#endif
}
