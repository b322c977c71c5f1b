// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Unit checks of libfuse-zc that need no FUSE mount: the
 * IORING_OP_READ_SPLICE_BUF SQE encoding, the ABI struct layouts and the
 * argument checks of the public API.
 */
#include "core.h"
#include "hooks.h"
#include "read.h"
#include "reaper.h"
#include "ring.h"
#include "table.h"
#include "worker.h"
#include "write.h"

#include "zc_pattern.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <stddef.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failures;

#define CHECK(cond) do {						\
	if (!(cond)) {							\
		fprintf(stderr, "%s:%d: check failed: %s\n",		\
			__FILE__, __LINE__, #cond);			\
		failures++;						\
	}								\
} while (0)

static void test_lend_pos(void)
{
	CHECK(fusezc_lend_pos(1, 0) == (1ULL << 32));
	CHECK(fusezc_lend_pos(1, 4096) == ((1ULL << 32) | 4096));
	/* Only the low 31 bits of the unique id are encoded. */
	CHECK(fusezc_lend_pos((1ULL << 31) | 5, 0) == (5ULL << 32));
	CHECK(fusezc_lend_pos(~0ULL, 0) == (((1ULL << 31) - 1) << 32));
	/* FUSE_UNIQUE_RESEND (bit 63) goes into bit 0, which a unique never has */
	CHECK(fusezc_lend_pos((1ULL << 63) | 6, 8) == ((7ULL << 32) | 8));
	CHECK(fusezc_lend_pos(6, 8) == ((6ULL << 32) | 8));
	/* 6.13+ requests reach 65535 pages: offsets past 16 MiB stay offsets */
	CHECK(fusezc_lend_pos(3, 65535u * 4096) == ((3ULL << 32) | (65535ULL * 4096)));
	CHECK(fusezc_lend_pos(3, ~0u) >> 32 == 3);
	/* a file position: never negative */
	CHECK((int64_t)fusezc_lend_pos(~0ULL, ~0u) >= 0);
}

static void test_sqe(void)
{
	struct io_uring_sqe sqe;
	uint64_t unique = 0x123456789aULL;

	memset(&sqe, 0xa5, sizeof(sqe));
	fzc_prep_lend(&sqe, 7, 12345, 1 << 20, 3, false, unique);
	CHECK(sqe.opcode == FUSEZC_IORING_OP_READ_SPLICE_BUF);
	CHECK(sqe.opcode == 58);
	CHECK(sqe.flags == 0);
	CHECK(sqe.ioprio == 0);
	CHECK(sqe.fd == 7);
	CHECK(sqe.off == 12345);
	CHECK(sqe.len == 1 << 20);
	CHECK(sqe.splice_fd_in == 3);
	CHECK(sqe.splice_off_in == fusezc_lend_pos(unique, 0));
	CHECK(sqe.splice_flags == 0);
	CHECK(sqe.buf_index == 0);
	CHECK(sqe.personality == 0);
	CHECK(sqe.addr3 == 0);
	CHECK(sqe.__pad2[0] == 0);
	CHECK(sqe.user_data == unique);

	fzc_prep_lend(&sqe, 9, 0, 4096, 0, true, 1);
	CHECK(sqe.splice_fd_in == 0);
	CHECK(sqe.splice_flags == FUSEZC_SPLICE_F_FD_IN_FIXED);
	CHECK(sqe.splice_off_in == 1ULL << 32);
}

static void test_abi(void)
{
	CHECK(sizeof(struct fusezc_read_out) == 8);
	CHECK(sizeof(struct fusezc_backing_map) == 16);
	CHECK(sizeof(struct fzc_open_out) == sizeof(struct fuse_open_out));
	CHECK(FUSEZC_DEV_IOC_BACKING_OPEN == 0x4010e501);
	CHECK(FUSEZC_DEV_IOC_BACKING_CLOSE == 0x4004e502);
	CHECK(offsetof(struct fuse_init_out, flags) == INIT_OUT_FLAGS);
	CHECK(offsetof(struct fuse_init_out, flags2) == INIT_OUT_FLAGS2);
	/* max_stack_depth (7.40) took the first unused word after flags2. */
	CHECK(offsetof(struct fuse_init_out, unused) == INIT_OUT_STACK_DEPTH);
	CHECK(INIT_OUT_MIN == INIT_OUT_STACK_DEPTH + 4);
	CHECK(sizeof(struct fuse_init_out) >= INIT_OUT_MIN);
	CHECK(offsetof(struct fuse_init_in, flags2) == 16);
	CHECK(FUSEZC_INIT_EXT == FUSE_INIT_EXT);
	/* Bits 32..42 are used by Linux up to 6.18; ours must not collide. */
	CHECK((FUSEZC_INIT_ZC_READ >> 32) > (1ULL << 10));
	CHECK(FUSEZC_INIT_PASSTHROUGH == (1ULL << 37));
	CHECK((FUSEZC_UNIQUE_ZC_REPLY & ((1ULL << FUSEZC_POS_UNIQUE_BITS) - 1)) == 0);
	CHECK(FUSEZC_POS_OFFSET_BITS + FUSEZC_POS_UNIQUE_BITS == 63);
	CHECK(sizeof(struct fusezc_write_out) == 8);
}

static void test_api_args(void)
{
	struct fusezc_session *zs = (void *)1;
	struct fusezc_stats st;

	CHECK(fusezc_session_new(NULL, NULL, &zs) == -EINVAL);
	CHECK(fusezc_session_loop(NULL) == -EINVAL);
	fusezc_session_destroy(NULL);
	CHECK(!fusezc_zerocopy_active(NULL));
	CHECK(!fusezc_passthrough_active(NULL));
	CHECK(fusezc_zerocopy_status(NULL) != NULL);
	memset(&st, 0xff, sizeof(st));
	fusezc_get_stats(NULL, &st);
	CHECK(st.zc_requests == 0 && st.copy_bytes == 0 && st.fallbacks == 0);
	CHECK(fusezc_backing_open(NULL, 0) == -EINVAL);
	CHECK(fusezc_backing_close(NULL, 1) == -EINVAL);
	CHECK(fusezc_req_session(NULL) == NULL);
}

/* ---- the writev hook's rewrites, through a fake device ---- */

static struct fuse_session *test_se;
static int pfd[2];
static struct fusezc_worker worker;

static struct fusezc_session *mk_session(enum fusezc_read_mode mode, bool required,
					 bool passthrough)
{
	static struct fusezc_session zs;

	fzc_sessions_del(&zs);
	fzc_reaper_stop(&zs);
	if (zs.requests.cap)
		fzc_requests_destroy(&zs.requests);
	free(worker.copybuf);
	memset(&zs, 0, sizeof(zs));
	fzc_requests_init(&zs.requests);
	zs.se = test_se;
	zs.opts.read_mode = mode;
	zs.opts.zerocopy_required = required;
	zs.opts.passthrough = passthrough;
	atomic_init(&zs.zc_status, "unset");
	if (worker.memfd > 0)
		close(worker.memfd);
	if (worker.zs != NULL && worker.devref >= 0)
		close(worker.devref);
	memset(&worker, 0, sizeof(worker));
	worker.memfd = -1;
	worker.devref = -1;
	worker.zs = &zs;
	worker.devfd = pfd[0];	/* the file its read hook reads */
	fzc_tls_worker = &worker;
	fuse_session_reset(test_se);
	return &zs;
}

/* Feed a request to the read hook and make it the worker's current one. */
static void feed_request(uint32_t opcode, uint64_t unique, const void *arg, size_t len)
{
	unsigned char buf[256];
	struct fuse_in_header in = {
		.len = (uint32_t)(sizeof(in) + len), .opcode = opcode, .unique = unique,
	};
	ssize_t n;

	memcpy(buf, &in, sizeof(in));
	if (len)
		memcpy(buf + sizeof(in), arg, len);
	CHECK(write(pfd[1], buf, sizeof(in) + len) == (ssize_t)(sizeof(in) + len));
	n = fzc_io_read(pfd[0], buf, sizeof(buf), NULL);
	CHECK(n == (ssize_t)(sizeof(in) + len));
	memcpy(&worker.in, buf, sizeof(worker.in));
	worker.in_valid = true;
}

/* Send a reply through the writev hook; read back what reached the "device". */
static size_t send_reply(uint64_t unique, int32_t error, const void *arg, size_t len,
			 unsigned char *out)
{
	struct fuse_out_header hdr = {
		.len = (uint32_t)(sizeof(hdr) + len), .error = error, .unique = unique,
	};
	struct iovec iov[2] = {
		{ .iov_base = &hdr, .iov_len = sizeof(hdr) },
		{ .iov_base = (void *)arg, .iov_len = len },
	};
	ssize_t res = fzc_io_writev(pfd[1], iov, len ? 2 : 1, NULL);
	ssize_t n;

	CHECK(res == (ssize_t)(sizeof(hdr) + len));
	n = read(pfd[0], out, 512);
	CHECK(n >= (ssize_t)sizeof(hdr));
	return n < 0 ? 0 : (size_t)n;
}

static void do_init(struct fusezc_session *zs, uint64_t offered, uint32_t reply_flags,
		    struct fuse_out_header *hdr, struct fuse_init_out *io)
{
	struct fuse_init_in ii = {
		.major = 7, .minor = 41, .max_readahead = 131072,
		.flags = (uint32_t)offered | FUSE_INIT_EXT, .flags2 = (uint32_t)(offered >> 32),
	};
	struct fuse_init_out o = {
		.major = 7, .minor = 38, .flags = reply_flags | FUSE_INIT_EXT, .max_write = 1 << 20,
	};
	unsigned char out[512];
	size_t n;

	(void)zs;
	feed_request(FUSE_INIT, 2, &ii, sizeof(ii));
	n = send_reply(2, 0, &o, sizeof(o), out);
	memcpy(hdr, out, sizeof(*hdr));
	memset(io, 0, sizeof(*io));
	if (n >= sizeof(*hdr) + sizeof(*io))
		memcpy(io, out + sizeof(*hdr), sizeof(*io));
	CHECK(hdr->len == n);
}

static uint32_t stack_depth(const struct fuse_init_out *io)
{
	uint32_t v;

	memcpy(&v, (const char *)io + INIT_OUT_STACK_DEPTH, sizeof(v));
	return v;
}

static void test_init_rewrite(void)
{
	const uint32_t zc2 = (uint32_t)(FUSEZC_INIT_ZC_READ >> 32);
	const uint32_t pt2 = (uint32_t)(FUSEZC_INIT_PASSTHROUGH >> 32);
	struct fusezc_session *zs;
	struct fuse_out_header hdr;
	struct fuse_init_out io;

	/* Offered and wanted (with passthrough): both accepted. */
	zs = mk_session(FUSEZC_READ_ZEROCOPY, true, true);
	do_init(zs, FUSEZC_INIT_ZC_READ | FUSEZC_INIT_PASSTHROUGH, FUSE_ASYNC_READ, &hdr, &io);
	CHECK(hdr.error == 0 && hdr.unique == 2);
	CHECK(io.flags2 & zc2);
	CHECK(io.flags2 & pt2);
	CHECK(io.flags & FUSE_INIT_EXT);
	CHECK(io.flags & FUSE_ASYNC_READ);
	CHECK(io.max_write == 1 << 20);
	CHECK(stack_depth(&io) == 1);
	CHECK(fusezc_zerocopy_active(zs) && fusezc_passthrough_active(zs));
	CHECK(strcmp(fusezc_zerocopy_status(zs), "") == 0);
	CHECK(zs->init_error == 0 && !fuse_session_exited(test_se));

	/* Offered but not wanted: not accepted. */
	zs = mk_session(FUSEZC_READ_SPLICE, false, false);
	do_init(zs, FUSEZC_INIT_ZC_READ | FUSEZC_INIT_PASSTHROUGH, 0, &hdr, &io);
	CHECK(!(io.flags2 & (zc2 | pt2)) && stack_depth(&io) == 0);
	CHECK(!fusezc_zerocopy_active(zs) && !fusezc_passthrough_active(zs));
	CHECK(strcmp(fusezc_zerocopy_status(zs), "disabled by options") == 0);

	/* Wanted, not offered (stock kernel): fall back. */
	zs = mk_session(FUSEZC_READ_ZEROCOPY, false, true);
	do_init(zs, FUSEZC_INIT_PASSTHROUGH, 0, &hdr, &io);
	CHECK(hdr.error == 0 && !(io.flags2 & zc2) && (io.flags2 & pt2));
	CHECK(!fusezc_zerocopy_active(zs));
	CHECK(strstr(fusezc_zerocopy_status(zs), "does not offer") != NULL);
	CHECK(!fuse_session_exited(test_se));

	/* Passthrough with writeback cache: the kernel would refuse; don't ask. */
	zs = mk_session(FUSEZC_READ_COPY, false, true);
	do_init(zs, FUSEZC_INIT_PASSTHROUGH, FUSE_WRITEBACK_CACHE, &hdr, &io);
	CHECK(!(io.flags2 & pt2) && !fusezc_passthrough_active(zs));

	/* Required, not offered: INIT fails with EPROTO, session exits. */
	zs = mk_session(FUSEZC_READ_ZEROCOPY, true, false);
	do_init(zs, 0, 0, &hdr, &io);
	CHECK(hdr.error == -EPROTO && hdr.len == sizeof(hdr) && hdr.unique == 2);
	CHECK(zs->init_error == -EOPNOTSUPP);
	CHECK(fuse_session_exited(test_se));
	CHECK(!fusezc_zerocopy_active(zs));

	/* A kernel without flags2 (minor < 36) offers nothing. */
	zs = mk_session(FUSEZC_READ_ZEROCOPY, false, false);
	{
		struct fuse_init_in ii = { .major = 7, .minor = 31, .flags = FUSE_INIT_EXT,
					   .flags2 = zc2 };

		feed_request(FUSE_INIT, 2, &ii, sizeof(ii));
		CHECK(zs->init_offered == FUSE_INIT_EXT);
	}
	fuse_session_reset(test_se);
}

static void test_reply_rewrites(void)
{
	unsigned char out[512], arg[256];
	struct fuse_out_header hdr;
	struct fuse_read_in ri = { .size = 4096 };
	struct fuse_open_out oo = { .fh = 42, .open_flags = FOPEN_KEEP_CACHE };
	struct fuse_open_in oi = { .flags = 0 };
	struct fzc_open_out got;
	size_t n;

	mk_session(FUSEZC_READ_ZEROCOPY, false, true);

	/* A read reply not sent by fusezc_reply_read() is left alone (the
	 * zero-copy replies are tested through libfuse below). */
	feed_request(FUSE_READ, 77, &ri, sizeof(ri));
	memset(arg, 0x5a, sizeof(arg));
	n = send_reply(77, 0, arg, sizeof(arg), out);
	memcpy(&hdr, out, sizeof(hdr));
	CHECK(n == sizeof(hdr) + sizeof(arg) && hdr.unique == 77);
	CHECK(worker.written_bytes == (ssize_t)sizeof(arg));

	/* OPEN reply marked passthrough. */
	feed_request(FUSE_OPEN, 9, &oi, sizeof(oi));
	worker.pend = FZC_PEND_OPEN;
	worker.pend_backing_id = 3;
	n = send_reply(9, 0, &oo, sizeof(oo), out);
	CHECK(n == sizeof(hdr) + sizeof(oo));
	memcpy(&got, out + sizeof(hdr), sizeof(got));
	CHECK(got.fh == 42 && got.backing_id == 3);
	CHECK(got.open_flags == (FOPEN_KEEP_CACHE | FUSEZC_FOPEN_PASSTHROUGH));

	/* An OPEN error reply is not touched. */
	n = send_reply(9, -ENOENT, NULL, 0, out);
	memcpy(&hdr, out, sizeof(hdr));
	CHECK(n == sizeof(hdr) && hdr.error == -ENOENT && hdr.unique == 9);

	/* CREATE: fuse_entry_out then fuse_open_out; only the latter changes. */
	{
		unsigned char cr[sizeof(struct fuse_entry_out) + sizeof(oo)];

		memset(cr, 0x11, sizeof(struct fuse_entry_out));
		memcpy(cr + sizeof(struct fuse_entry_out), &oo, sizeof(oo));
		feed_request(FUSE_CREATE, 10, &oi, sizeof(oi));
		worker.pend = FZC_PEND_OPEN;
		worker.pend_backing_id = 7;
		n = send_reply(10, 0, cr, sizeof(cr), out);
		CHECK(n == sizeof(hdr) + sizeof(cr));
		CHECK(memcmp(out + sizeof(hdr), cr, sizeof(struct fuse_entry_out)) == 0);
		memcpy(&got, out + n - sizeof(got), sizeof(got));
		CHECK(got.backing_id == 7 && (got.open_flags & FUSEZC_FOPEN_PASSTHROUGH));
	}

	/* Notifications (unique 0) pass through. */
	worker.pend = FZC_PEND_OPEN;
	n = send_reply(0, FUSE_NOTIFY_INVAL_INODE, &oo, sizeof(oo), out);
	CHECK(n == sizeof(hdr) + sizeof(oo));
	CHECK(memcmp(out + sizeof(hdr), &oo, sizeof(oo)) == 0);
	worker.pend = FZC_PEND_NONE;
	fzc_tls_worker = NULL;
}


/* ---- read replies through libfuse, against a fake patched kernel ---- */

/*
 * A fuse_session with a read handler, whose replies go through the hooks to
 * a pipe: the requests are real libfuse requests (fuse_req_t), processed the
 * way a worker processes them, and the "kernel" is fake_kops below.
 */
enum read_plan {
	PLAN_NOW,		/* reply from the handler */
	PLAN_DEFER,		/* keep the request for a later reply */
	PLAN_ANSWER_DEFERRED,	/* reply to the deferred request, then to this one */
	PLAN_THREAD_DEFERRED,	/* another thread replies to the deferred one, then this */
};

static struct fuse_session *proc_se;
static int content_fd;
static enum read_plan plan;
static size_t read_clip;	/* > 0: the handler serves at most this many bytes */
static struct {
	fuse_req_t req;
	off_t off;
	size_t size;
} deferred;

/* The fake kernel: what it was asked to lend, and what it answers. */
#define MAX_LENDINGS 64
static struct fzc_lending lendings[MAX_LENDINGS];
static int nlendings;
static int lend_results[MAX_LENDINGS];	/* scripted CQE res; 0 = all of it */
static int lend_placed[MAX_LENDINGS];	/* the res each lending got */
static bool lend_answers[MAX_LENDINGS];	/* scripted: the kernel answers the read */
#define CQE_ZERO	INT_MIN		/* script a CQE res of 0 (end of file) */
static int ring_setup_errors;		/* fail this many ring setups */
static int ring_setups, ring_exits;
static int zc_write_errno;		/* refuse zero-copy replies with this */

static int ring_probe_error;		/* io_uring cannot be set up at all */
static int ring_lend_errors;		/* fail the ring itself on this many lendings */

static int fake_ring_probe(void)
{
	return ring_probe_error;
}

/* Each fake ring has a file of its own for the reaper's epoll, an eventfd
 * in ring.ring_fd (the real ring's field, unused by the fake). */
static int fake_ring_setup(struct fusezc_worker *w)
{
	ring_setups++;
	if (ring_setup_errors > 0) {
		ring_setup_errors--;
		return -ENOMEM;
	}
	w->ring.ring_fd = eventfd(0, EFD_CLOEXEC);
	return w->ring.ring_fd < 0 ? -errno : 0;
}

static void fake_ring_exit(struct fusezc_worker *w)
{
	ring_exits++;
	if (w->ring.ring_fd > 0)
		close(w->ring.ring_fd);
	w->ring.ring_fd = -1;
}

/* The scripted CQE of lending @i (lendings[i]); its res is also lend_placed[i]. */
static void scripted_cqe(int i, int *res, bool *answered)
{
	const struct fzc_lending *l = &lendings[i];

	*answered = l->kernel_answers && lend_answers[i];
	*res = lend_results[i] ? lend_results[i] : (int)l->len;
	if (*res == CQE_ZERO)
		*res = 0;
	if (*res > (int)l->len)
		*res = (int)l->len;
	lend_placed[i] = *res;
}

/*
 * The writer's data of the zero-copy write being served: the pattern as at
 * file offset write_data_pos.  A write lending that succeeds puts it where
 * the lending says.
 */
static uint64_t write_data_pos;
/* ... and that of each lending, as it was when the lending was made (an
 * asynchronous one is written out when its CQE is posted) */
static uint64_t lend_data_pos[MAX_LENDINGS];
/*
 * Synchronous lendings submitted while asynchronous ones were in flight on
 * the same ring: the real kernel would hand the waiting worker another
 * lending's CQE, and the reaper could take its own (a hang).
 */
static int sync_lend_while_inflight;

/* A write lending that wrote @res bytes put the writer's data there (the
 * data of the write at @pos). */
static bool fake_write_data(const struct fzc_lending *l, int res, uint64_t pos)
{
	static unsigned char data[1 << 16];

	if (!l->write || res <= 0)
		return true;
	zc_pattern_fill(data, pos + l->req_off, (size_t)res);
	return pwrite(l->fd, data, (size_t)res, (off_t)l->off) == res;
}

static int fake_ring_lend(struct fusezc_worker *w, const struct fzc_lending *l, int *res,
			  bool *answered)
{
	if (w->inflight > 0)
		sync_lend_while_inflight++;
	if (ring_lend_errors > 0) {
		ring_lend_errors--;
		return -EBADF;	/* the ring itself failed: no CQE */
	}
	if (nlendings >= MAX_LENDINGS)
		return -EIO;
	lendings[nlendings] = *l;
	scripted_cqe(nlendings++, res, answered);
	return fake_write_data(l, *res, write_data_pos) ? 0 : -EIO;
}

static ssize_t fake_dev_writev(int fd, const struct iovec *iov, int count)
{
	struct fuse_out_header hdr;	/* the library's buffer is not aligned for it */

	memcpy(&hdr, iov[0].iov_base, sizeof(hdr));
	if (zc_write_errno && (hdr.unique & FUSEZC_UNIQUE_ZC_REPLY)) {
		errno = zc_write_errno;
		return -1;
	}
	return writev(fd, iov, count);
}

/*
 * Asynchronous lending: the fake kernel keeps each submitted lending's CQE
 * until the test releases it (cqes_released), or until the library waits
 * for one; the CQE's res and flags come from the same script.
 */
static uint64_t lend_user_data[MAX_LENDINGS];
static int cqes_posted, cqes_released;
/* The ring fails: submissions and CQE waits get this error (0: works). */
static int ring_broken;

static int fake_ring_submit_lends(struct fusezc_worker *w, const struct fzc_lending *l,
				  const uint64_t *user_data, unsigned int n)
{
	(void)w;
	if (ring_broken)
		return ring_broken;
	for (unsigned int i = 0; i < n; i++) {
		if (nlendings >= MAX_LENDINGS)
			return i ? (int)i : -EIO;
		lend_user_data[nlendings] = user_data[i];
		lend_data_pos[nlendings] = write_data_pos;
		lendings[nlendings++] = l[i];
	}
	return (int)n;
}

/* The largest piece a lending goes in (0: whole), for every file. */
static size_t fake_piece;

static size_t fake_piece_max(struct fusezc_session *zs, int fd)
{
	(void)zs;
	(void)fd;
	return fake_piece;
}

/* Slots a test fills itself: fd says whether their CQE is there. */
#define INJECTED_CQE		(-2)
#define INJECTED_NO_CQE_YET	(-3)

/* A bounded wait ends with no CQE: the lendings need more time. */
static bool lendings_stuck;

static int fake_ring_next_cqe(struct fusezc_worker *w, int wait_ms, uint64_t *user_data,
			      int *res, bool *answered)
{
	int i = cqes_posted;
	bool wait = wait_ms != 0;

	if (wait_ms > 0 && lendings_stuck)
		return 0;

	if (w->lends[0].busy && w->lends[0].fd == INJECTED_CQE) {
		*user_data = 1;		/* a lending a test put in a slot */
		*res = -EOPNOTSUPP;
		*answered = false;
		return 1;
	}
	if (w->lends[0].busy && w->lends[0].fd == INJECTED_NO_CQE_YET)
		return 0;
	if (ring_broken)
		return ring_broken;
	if (i >= nlendings || (!wait && i >= cqes_released))
		return 0;
	scripted_cqe(i, res, answered);
	*user_data = lend_user_data[i];
	cqes_posted++;
	return fake_write_data(&lendings[i], *res, lend_data_pos[i]) ? 1 : -EIO;
}

/* Watched by the library's reaper, readable when a test writes to it. */
static int fake_ring_poll_fd(struct fusezc_worker *w)
{
	return w->ring.ring_fd;
}

static const struct fzc_kernel_ops fake_kops = {
	.ring_probe = fake_ring_probe,
	.ring_setup = fake_ring_setup,
	.ring_exit = fake_ring_exit,
	.ring_lend = fake_ring_lend,
	.dev_writev = fake_dev_writev,
	.ring_submit_lends = fake_ring_submit_lends,
	.ring_next_cqe = fake_ring_next_cqe,
	.ring_poll_fd = fake_ring_poll_fd,
	.piece_max = fake_piece_max,
};

static void *reply_deferred_thread(void *arg)
{
	(void)arg;
	fusezc_reply_read(deferred.req, content_fd, deferred.off, deferred.size);
	return NULL;
}

static void unit_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		      struct fuse_file_info *fi)
{
	pthread_t t;

	(void)ino;
	(void)fi;
	switch (plan) {
	case PLAN_DEFER:
		deferred.req = req;
		deferred.off = off;
		deferred.size = size;
		return;
	case PLAN_ANSWER_DEFERRED:
		fusezc_reply_read(deferred.req, content_fd, deferred.off, deferred.size);
		break;
	case PLAN_THREAD_DEFERRED:
		CHECK(pthread_create(&t, NULL, reply_deferred_thread, NULL) == 0);
		pthread_join(t, NULL);
		break;
	case PLAN_NOW:
		break;
	}
	if (read_clip && size > read_clip)
		size = read_clip;	/* a file that ends inside the request */
	fusezc_reply_read(req, content_fd, off, size);
}

/* Zero-copy writes: the handler answers with fusezc_reply_write() to
 * write_target_fd, or, "unaware" of zero copy, with fuse_reply_write(). */
static int write_target_fd = -1;
static bool write_unaware;
static size_t write_size_seen, write_size_given;

static void unit_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size,
		       off_t off, struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	write_size_given = size;	/* what libfuse passes */
	write_size_seen = fusezc_write_size(req, size);
	if (write_unaware)
		fuse_reply_write(req, 4096);
	else
		fusezc_reply_write(req, write_target_fd, off, buf, size);
}

static const struct fuse_lowlevel_ops unit_ops = { .read = unit_read, .write = unit_write };

static const struct fuse_custom_io unit_io = {
	.read = fzc_io_read, .writev = fzc_io_writev,
};

/* Hand a raw request to libfuse the way a worker does. */
static void process(uint32_t opcode, uint64_t unique, const void *arg, size_t len)
{
	unsigned char buf[512];
	struct fuse_in_header in = {
		.len = (uint32_t)(sizeof(in) + len), .opcode = opcode, .unique = unique,
		.nodeid = 2,
	};
	struct fuse_buf fbuf = { .mem = buf };
	ssize_t n;

	memcpy(buf, &in, sizeof(in));
	if (len)
		memcpy(buf + sizeof(in), arg, len);
	CHECK(write(pfd[1], buf, sizeof(in) + len) == (ssize_t)(sizeof(in) + len));
	n = fzc_io_read(pfd[0], buf, sizeof(buf), NULL);
	CHECK(n == (ssize_t)(sizeof(in) + len));
	fbuf.size = n < 0 ? 0 : (size_t)n;
	memcpy(&worker.in, buf, sizeof(worker.in));
	worker.in_valid = true;
	worker.pend = FZC_PEND_NONE;
	fuse_session_process_buf(proc_se, &fbuf);
	worker.in_valid = false;
}

static void process_read(uint64_t unique, off_t off, uint32_t size)
{
	struct fuse_read_in ri = { .fh = 1, .offset = (uint64_t)off, .size = size };

	process(FUSE_READ, unique, &ri, sizeof(ri));
}

/* zc_session(): the kernel offers, and the session asks for, zero-copy writes */
static bool want_zc_writes;

/* A zero-copy session of proc_se after a real INIT through libfuse. */
static bool pipe_empty(void);

static struct fusezc_session *zc_session(void)
{
	struct fuse_init_in ii = {
		.major = 7, .minor = 38, .max_readahead = 131072,
		.flags = FUSE_INIT_EXT | FUSE_ASYNC_READ,
		.flags2 = (uint32_t)(FUSEZC_INIT_ZC_READ >> 32) |
			  (want_zc_writes ? (uint32_t)(FUSEZC_INIT_ZC_WRITE >> 32) : 0),
	};
	struct fusezc_session *zs;
	unsigned char out[512];

	/* what a failed test left unread must not fail the next one */
	while (!pipe_empty() && read(pfd[0], out, sizeof(out)) > 0)
		;
	/* libfuse takes one INIT a session: a new session each time. */
	if (proc_se != NULL)
		fuse_session_destroy(proc_se);
	{
		char *argv[] = { "zc_unit", NULL };
		struct fuse_args args = FUSE_ARGS_INIT(1, argv);

		proc_se = fuse_session_new(&args, &unit_ops, sizeof(unit_ops), NULL);
		fuse_opt_free_args(&args);
	}
	CHECK(proc_se != NULL);
	zs = mk_session(FUSEZC_READ_ZEROCOPY, false, false);
	zs->opts.zerocopy_writes = want_zc_writes;
	zs->opts.server_replies = true;	/* async_session(): the kernel answers */
	zs->se = proc_se;
	zs->fuse_fd = dup(pfd[1]);
	CHECK(fuse_session_custom_io(proc_se, &unit_io, zs->fuse_fd) == 0);
	fzc_sessions_add(zs);	/* as fusezc_session_new() does */
	process(FUSE_INIT, 1, &ii, sizeof(ii));
	CHECK(read(pfd[0], out, sizeof(out)) >= (ssize_t)sizeof(struct fuse_out_header));
	CHECK(fusezc_zerocopy_active(zs));
	nlendings = 0;
	memset(lend_results, 0, sizeof(lend_results));
	memset(lend_answers, 0, sizeof(lend_answers));
	cqes_posted = cqes_released = 0;
	ring_setup_errors = ring_setups = ring_exits = 0;
	ring_probe_error = ring_lend_errors = ring_broken = 0;
	zc_write_errno = 0;
	plan = PLAN_NOW;
	read_clip = 0;
	fake_piece = 0;
	return zs;
}

struct reply {
	struct fuse_out_header hdr;
	uint64_t zc_size;		/* zero-copy reply: the size it claims */
	unsigned char data[1 << 16];	/* copy reply: the data */
	size_t data_len;
};

/* The next reply written to the "device". */
static void next_reply(struct reply *r)
{
	static unsigned char buf[sizeof(struct fuse_out_header) + (1 << 16)];
	ssize_t n = read(pfd[0], buf, sizeof(buf));

	memset(r, 0, sizeof(*r));
	CHECK(n >= (ssize_t)sizeof(r->hdr));
	if (n < (ssize_t)sizeof(r->hdr))
		return;
	memcpy(&r->hdr, buf, sizeof(r->hdr));
	CHECK(r->hdr.len == (uint32_t)n);
	r->data_len = (size_t)n - sizeof(r->hdr);
	memcpy(r->data, buf + sizeof(r->hdr), r->data_len);
	if ((r->hdr.unique & FUSEZC_UNIQUE_ZC_REPLY) && r->data_len == sizeof(r->zc_size))
		memcpy(&r->zc_size, r->data, sizeof(r->zc_size));
}

static bool pipe_empty(void)
{
	int avail = -1;

	return ioctl(pfd[0], FIONREAD, &avail) == 0 && avail == 0;
}

/* Is @r a correct answer to READ @unique of @size bytes at @off?  Either a
 * zero-copy reply whose lendings all named @unique at @off, or a copy. */
static bool answers(const struct reply *r, uint64_t unique, off_t off, size_t size)
{
	unsigned char want[1 << 16];

	if (r->hdr.error != 0)
		return false;
	if (r->hdr.unique == (unique | FUSEZC_UNIQUE_ZC_REPLY)) {
		uint64_t placed = 0;

		for (int i = 0; i < nlendings; i++) {
			if (lendings[i].unique != unique)
				continue;
			if (lendings[i].off != (uint64_t)off + lendings[i].req_off ||
			    lendings[i].req_off != placed)
				return false;
			placed += (uint64_t)(lend_placed[i] > 0 ? lend_placed[i] : 0);
		}
		return r->data_len == sizeof(r->zc_size) && r->zc_size == size &&
		       placed >= size;
	}
	if (r->hdr.unique != unique || r->data_len != size)
		return false;
	zc_pattern_fill(want, (uint64_t)off, size);
	return memcmp(r->data, want, size) == 0;
}

/* No lending named a request with another request's file range. */
static bool lendings_match(uint64_t unique, off_t off)
{
	for (int i = 0; i < nlendings; i++)
		if (lendings[i].unique == unique &&
		    lendings[i].off != (uint64_t)off + lendings[i].req_off)
			return false;
	return true;
}

static void process_write(uint64_t unique, off_t off, uint32_t size, bool zc)
{
	struct {
		struct fuse_write_in wi;
		unsigned char data[256];
	} arg = { .wi = { .fh = 1, .offset = (uint64_t)off, .size = size,
			  .write_flags = zc ? FUSEZC_WRITE_ZERO_COPY : 0 } };

	if (zc) {
		write_data_pos = (uint64_t)off;
		process(FUSE_WRITE, unique, &arg.wi, sizeof(arg.wi));
		return;
	}
	CHECK(size <= sizeof(arg.data));
	zc_pattern_fill(arg.data, (uint64_t)off, size);
	process(FUSE_WRITE, unique, &arg, sizeof(arg.wi) + size);
}

/* The reply to WRITE @unique says @size bytes were written. */
static bool wrote(const struct reply *r, uint64_t unique, uint32_t size)
{
	struct fuse_write_out wo;

	if (r->hdr.unique != unique || r->hdr.error != 0 || r->data_len != sizeof(wo))
		return false;
	memcpy(&wo, r->data, sizeof(wo));
	return wo.size == size;
}

/* @fd holds the pattern of [@off, @off + @len). */
static bool holds_pattern(int fd, off_t off, size_t len)
{
	static unsigned char want[1 << 16], got[1 << 16];

	if (len > sizeof(got) || pread(fd, got, len, off) != (ssize_t)len)
		return false;
	zc_pattern_fill(want, (uint64_t)off, len);
	return memcmp(got, want, len) == 0;
}

/* A session with zero-copy writes to write_target_fd, a fresh memfd. */
static struct fusezc_session *async_session(void);

static struct fusezc_session *zcw_session(bool async)
{
	struct fusezc_session *zs;

	write_target_fd = memfd_create("zc_unit_write_target", MFD_CLOEXEC);
	CHECK(write_target_fd >= 0);
	want_zc_writes = true;
	zs = async ? async_session() : zc_session();
	want_zc_writes = false;
	CHECK(fusezc_zerocopy_writes_active(zs));
	return zs;
}

static void zcw_session_end(void)
{
	close(write_target_fd);
	write_target_fd = -1;
}

/*
 * Zero-copy writes: a FUSE_WRITE without its data is written by lending
 * (to the handler's fd, or through a memfd when that is refused), answered
 * with what was written, never by what the handler was given; one with its
 * data is a pwrite().
 */
static void test_zc_writes(void)
{
	struct fusezc_write_stats ws;
	struct fusezc_session *zs;
	struct reply r;

	zs = zcw_session(false);
	atomic_store(&zs->kernel_answers, false);
	zs->opts.sync_lending = true;	/* asynchronous: test_async_writes */

	/* the handler sees size 0 from libfuse (never bytes the kernel did not
	 * send), the real size from the library */
	process_write(300, 4096, 8192, true);
	CHECK(write_size_given == 0 && write_size_seen == 8192);
	next_reply(&r);
	CHECK(wrote(&r, 300, 8192));
	CHECK(nlendings == 1 && lendings[0].write && lendings[0].unique == 300 &&
	      lendings[0].fd == write_target_fd && lendings[0].off == 4096 &&
	      lendings[0].len == 8192 && lendings[0].req_off == 0);
	CHECK(holds_pattern(write_target_fd, 4096, 8192));

	/* short, then the rest at the next offset of the request */
	nlendings = 0;
	lend_results[0] = 1000;
	process_write(302, 20000, 3000, true);
	next_reply(&r);
	CHECK(wrote(&r, 302, 3000));
	CHECK(nlendings == 2 && lendings[1].req_off == 1000 && lendings[1].off == 21000 &&
	      lendings[1].len == 2000);
	CHECK(holds_pattern(write_target_fd, 20000, 3000));

	/* short, then the file fails: the short count is the answer */
	nlendings = 0;
	memset(lend_results, 0, sizeof(lend_results));
	lend_results[0] = 1000;
	lend_results[1] = -ENOSPC;
	process_write(304, 30000, 3000, true);
	next_reply(&r);
	CHECK(wrote(&r, 304, 1000));

	/* the file fails at once: its error */
	nlendings = 0;
	memset(lend_results, 0, sizeof(lend_results));
	lend_results[0] = -ENOSPC;
	process_write(306, 0, 4096, true);
	next_reply(&r);
	CHECK(r.hdr.unique == 306 && r.hdr.error == -ENOSPC);

	/* refused for this write (EINVAL: O_DIRECT alignment): borrowed into
	 * a memfd, then written */
	nlendings = 0;
	memset(lend_results, 0, sizeof(lend_results));
	lend_results[0] = -EINVAL;
	process_write(308, 40960, 5000, true);
	next_reply(&r);
	CHECK(wrote(&r, 308, 5000));
	CHECK(nlendings == 2 && lendings[1].write && lendings[1].fd != write_target_fd &&
	      lendings[1].off == 0 && !lendings[1].kernel_answers);
	CHECK(holds_pattern(write_target_fd, 40960, 5000));

	/* the kernel answers a write whose lending wrote it all */
	nlendings = 0;
	memset(lend_results, 0, sizeof(lend_results));
	atomic_store(&zs->kernel_answers, true);
	lend_answers[0] = true;
	process_write(310, 0, 4096, true);
	CHECK(nlendings == 1 && lendings[0].kernel_answers && pipe_empty());
	memset(lend_answers, 0, sizeof(lend_answers));

	/* a write that came with its data: written as it came, nothing lent */
	nlendings = 0;
	process_write(312, 50000, 200, false);
	CHECK(write_size_seen == 200);
	next_reply(&r);
	CHECK(wrote(&r, 312, 200) && nlendings == 0);
	CHECK(holds_pattern(write_target_fd, 50000, 200));

	/* a handler unaware of zero copy: its reply passes (the kernel refuses
	 * it and fails the write), and is counted */
	write_unaware = true;
	process_write(314, 0, 4096, true);
	write_unaware = false;
	next_reply(&r);
	CHECK(r.hdr.unique == 314 && nlendings == 0);

	fusezc_get_write_stats(zs, &ws);
	CHECK(ws.zc_requests == 3 && ws.zc_kernel_answered == 1);
	CHECK(ws.zc_bytes == 8192 + 3000 + 1000 + 4096);
	CHECK(ws.memfd_requests == 1 && ws.memfd_bytes == 5000);
	CHECK(ws.copy_requests == 1 && ws.copy_bytes == 200 && ws.unanswered_zc == 1);
	CHECK(zs->requests.used == 0 && pipe_empty());
	zcw_session_end();
}

/*
 * A zero-copy write lent synchronously on a worker with asynchronous read
 * lendings in flight: the write's lending must not share the ring with
 * them (their CQEs are answered first).  Before the fix the worker waited
 * for a CQE the reaper took, and fsstress hung in the VM.  Writes are
 * asynchronous too now; a file refused for good (EXDEV) still takes the
 * synchronous path, through the memfd.
 */
static void test_zc_write_after_async_reads(void)
{
	struct fusezc_session *zs;
	struct reply r;

	zs = zcw_session(true);
	fzc_file_refusal(zs, write_target_fd, -EXDEV);
	sync_lend_while_inflight = 0;
	lend_answers[0] = lend_answers[1] = true;
	process_read(40, 0, 8192);
	process_read(41, 8192, 8192);
	CHECK(worker.inflight == 2 && pipe_empty());
	/* their CQEs not there yet: still in flight when the write comes */
	process_write(42, 4096, 4096, true);
	CHECK(nlendings == 3 && lendings[2].write && lendings[2].fd != write_target_fd);
	CHECK(sync_lend_while_inflight == 0);
	if (sync_lend_while_inflight)
		fprintf(stderr, "zc_write_after_async_reads: the write lent with %d asynchronous "
			"lendings in flight\n", worker.inflight + 0);
	CHECK(worker.inflight == 0);
	next_reply(&r);
	CHECK(wrote(&r, 42, 4096));
	CHECK(holds_pattern(write_target_fd, 4096, 4096));
	CHECK(pipe_empty() && zs->requests.used == 0);
	zcw_session_end();
}

/*
 * Item 4: a worker cancelled (libfuse's loop ending) inside the read hook,
 * while it answers a lending's CQE: the fallback's pread()/writev() are
 * cancellation points.  Before the fix the thread unwound holding its
 * lend_lock and deadlocked in its own destructor, which drains its
 * lendings under that lock: the daemon never exited.
 */
static struct {
	sem_t ready, go, in_done;
	int release[2];		/* blocking_done waits until this is written */
	int dev[2];		/* the cancelled worker's /dev/fuse */
	struct fusezc_worker *worker;	/* its state */
} cancel_test;

/* A fallback reply that blocks in a cancellation point (a slow pread). */
static void blocking_done(struct fusezc_worker *w, struct fusezc_worker *cw,
			  const struct fzc_inflight *p, int res, bool answered)
{
	char c;

	(void)w, (void)cw, (void)p, (void)res, (void)answered;
	sem_post(&cancel_test.in_done);
	if (read(cancel_test.release[0], &c, 1) != 1)
		fprintf(stderr, "cancel_in_hook: release pipe: %s\n", strerror(errno));
}

static void *cancelled_worker(void *arg)
{
	unsigned char buf[256];

	(void)arg;
	/* libfuse's receive: cancellable inside the read hook only */
	pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, NULL);
	fzc_io_read(cancel_test.dev[0], buf, sizeof(buf), NULL);	/* its first request */
	cancel_test.worker = fzc_tls_worker;
	sem_post(&cancel_test.ready);
	sem_wait(&cancel_test.go);
	fzc_io_read(cancel_test.dev[0], buf, sizeof(buf), NULL);	/* never returns */
	return NULL;
}

static void test_cancel_in_hook(void)
{
	static struct fusezc_session zs;
	struct fuse_in_header in = { .len = sizeof(in), .opcode = FUSE_GETATTR, .unique = 2 };
	struct fusezc_worker *w;
	struct timespec deadline;
	pthread_t t;
	int joined;

	CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, cancel_test.dev) == 0);
	CHECK(pipe2(cancel_test.release, O_CLOEXEC) == 0);
	sem_init(&cancel_test.ready, 0, 0);
	sem_init(&cancel_test.go, 0, 0);
	sem_init(&cancel_test.in_done, 0, 0);
	memset(&zs, 0, sizeof(zs));
	fzc_requests_init(&zs.requests);
	pthread_mutex_init(&zs.reaper_lock, NULL);
	zs.se = test_se;
	zs.fuse_fd = cancel_test.dev[0];
	zs.reaper_epfd = zs.reaper_stopfd = -1;
	atomic_init(&zs.init_seen, true);
	CHECK(fzc_workers_init() == 0);
	fzc_sessions_add(&zs);

	CHECK(write(cancel_test.dev[1], &in, sizeof(in)) == sizeof(in));
	CHECK(pthread_create(&t, NULL, cancelled_worker, NULL) == 0);
	sem_wait(&cancel_test.ready);
	/* a lending in flight on its ring, whose CQE needs a fallback reply */
	w = cancel_test.worker;
	CHECK(w != NULL);
	if (w == NULL)
		return;
	pthread_mutex_lock(&w->lend_lock);
	w->ring_ready = true;
	w->ring.ring_fd = -1;
	w->lends[0] = (struct fzc_inflight){
		.done = blocking_done, .busy = true, .fd = INJECTED_CQE,
	};
	w->inflight = 1;
	pthread_mutex_unlock(&w->lend_lock);
	sem_post(&cancel_test.go);
	sem_wait(&cancel_test.in_done);
	pthread_cancel(t);
	usleep(100 * 1000);
	CHECK(write(cancel_test.release[1], "x", 1) == 1);	/* the slow pread ends */
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += 10;
	joined = pthread_timedjoin_np(t, NULL, &deadline);
	if (joined != 0)
		fprintf(stderr, "cancel_in_hook: the cancelled worker did not end within 10 s "
			"(its destructor waits for the lend_lock it holds)\n");
	CHECK(joined == 0);
	fzc_sessions_del(&zs);
	if (joined != 0)
		return;		/* leave the stuck thread's state alone */
	fzc_workers_free_retired(&zs);
	fzc_requests_destroy(&zs.requests);
	close(cancel_test.dev[0]);
	close(cancel_test.dev[1]);
	close(cancel_test.release[0]);
	close(cancel_test.release[1]);
}

/*
 * Item 2: once zero-copy writes are negotiated, a write's data reaches the
 * server only by lending.  So INIT accepts them only when this process can
 * set up an io_uring (io_uring_disabled=2 refuses every ring); before the
 * fix INIT accepted them and every write failed with EIO.
 */
static void test_zc_writes_need_a_ring(void)
{
	const uint32_t zcw2 = (uint32_t)(FUSEZC_INIT_ZC_WRITE >> 32);
	const uint32_t zc2 = (uint32_t)(FUSEZC_INIT_ZC_READ >> 32);
	struct fuse_out_header hdr;
	struct fuse_init_out io;
	struct fusezc_session *zs;

	zs = mk_session(FUSEZC_READ_ZEROCOPY, false, false);
	zs->opts.zerocopy_writes = true;
	ring_probe_error = -EPERM;
	do_init(zs, FUSEZC_INIT_ZC_READ | FUSEZC_INIT_ZC_WRITE, 0, &hdr, &io);
	ring_probe_error = 0;
	CHECK(hdr.error == 0 && !(io.flags2 & (zcw2 | zc2)));
	CHECK(!fusezc_zerocopy_writes_active(zs) && !fusezc_zerocopy_active(zs));
	CHECK(strstr(fusezc_zerocopy_status(zs), "io_uring") != NULL);

	/* required: refused as when the kernel does not offer it */
	zs = mk_session(FUSEZC_READ_ZEROCOPY, true, false);
	ring_probe_error = -EPERM;
	do_init(zs, FUSEZC_INIT_ZC_READ, 0, &hdr, &io);
	ring_probe_error = 0;
	CHECK(hdr.error == -EPROTO && zs->init_error == -EOPNOTSUPP);
	fuse_session_reset(test_se);
}

/* The reply asking the kernel to send WRITE @unique again with its data. */
static bool asks_resend(const struct reply *r, uint64_t unique)
{
	struct fusezc_write_out wo;

	if (r->hdr.unique != (unique | FUSEZC_UNIQUE_ZC_REPLY) || r->hdr.error != 0 ||
	    r->data_len != sizeof(wo))
		return false;
	memcpy(&wo, r->data, sizeof(wo));
	return wo.flags == FUSEZC_ZC_WRITE_SEND_DATA && wo.padding == 0;
}

/*
 * Item 2: a zero-copy write the worker cannot lend loses nothing.  A
 * transient CQE error (EAGAIN, EINTR, ENOMEM) is retried; a worker without
 * a ring (it failed, or is backing off) asks the kernel to send the write
 * again with its data, and that delivery is written as it came.  Before
 * the fix the writer got the transient error, or ENOMEM/EIO, and the data
 * was lost (silently so with the write-back cache).
 */
static void test_zc_write_no_loss(void)
{
	static const int transient[] = { EAGAIN, EINTR, ENOMEM };
	struct fusezc_session *zs;
	struct reply r;

	zs = zcw_session(false);

	for (size_t i = 0; i < sizeof(transient) / sizeof(transient[0]); i++) {
		nlendings = 0;
		memset(lend_results, 0, sizeof(lend_results));
		lend_results[0] = -transient[i];
		process_write(400 + 2 * i, 8192 * (off_t)i, 4096, true);
		next_reply(&r);
		if (!wrote(&r, 400 + 2 * i, 4096))
			fprintf(stderr, "zc_write_no_loss: %s: reply error %d\n",
				strerror(transient[i]), r.hdr.error);
		CHECK(wrote(&r, 400 + 2 * i, 4096) && nlendings == 2);
		CHECK(holds_pattern(write_target_fd, 8192 * (off_t)i, 4096));
	}

	/* no ring (setup failed, then the back-off): sent again with its data */
	for (int how = 0; how < 2; how++) {
		uint64_t unique = 420 + 2 * (uint64_t)how;
		off_t off = 65536 + 8192 * how;

		nlendings = 0;
		memset(lend_results, 0, sizeof(lend_results));
		if (how == 0) {
			fzc_ring_failed(&worker, -ENOMEM);	/* backing off */
		} else {
			worker.ring_retry_at = 0;
			ring_lend_errors = 2;	/* the ring fails under the lending */
		}
		process_write(unique, off, 4096, true);
		next_reply(&r);
		if (!asks_resend(&r, unique))
			fprintf(stderr, "zc_write_no_loss: no ring (%d): reply unique %#llx error %d\n",
				how, (unsigned long long)r.hdr.unique, r.hdr.error);
		CHECK(asks_resend(&r, unique));
		/* the kernel sends it again, with its data */
		process_write(unique, off, 200, false);
		next_reply(&r);
		CHECK(wrote(&r, unique, 200) && holds_pattern(write_target_fd, off, 200));
	}
	CHECK(zs->requests.used == 0 && pipe_empty());
	zcw_session_end();
}

/* A transient error of a read's lending is retried, not copied. */
static void test_read_transient(void)
{
	struct fusezc_stats st;
	struct reply r;

	zc_session();
	lend_results[0] = -EAGAIN;
	process_read(60, 0, 4096);
	next_reply(&r);
	CHECK(answers(&r, 60, 0, 4096) && (r.hdr.unique & FUSEZC_UNIQUE_ZC_REPLY));
	fusezc_get_stats(worker.zs, &st);
	CHECK(st.fallbacks == 0 && nlendings == 2);
}

/*
 * Item 1: with clone_fd, libfuse's retiring worker (max_idle_threads)
 * closes its clone before the library's thread destructor runs.  A
 * lending in flight must still be answered on that clone, and never
 * through the fd number, which a backing file's open() may take next.
 * Before the fix the fallback reply went into the regular file that took
 * the number (on the patched kernel the clone's close aborted every lent
 * read: ECONNABORTED).
 */
static void test_clone_closed_under_lending(void)
{
	struct fusezc_session *zs = async_session();
	struct fuse_in_header in = { .len = sizeof(in), .opcode = FUSE_GETATTR, .unique = 502 };
	struct fzc_read_reply rr = { .fd = content_fd, .off = 4096, .size = 4096 };
	struct fuse_out_header hdr = { .len = sizeof(hdr), .unique = 500 };
	struct iovec iov = { &hdr, sizeof(hdr) };
	struct timeval tv = { .tv_sec = 5 };
	unsigned char buf[256];
	int clone[2], clone_fd, reg;
	struct stat st;
	struct reply r;
	ssize_t n;

	plan = PLAN_DEFER;
	process_read(500, 4096, 4096);		/* kept for a reply on the clone */
	CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, clone) == 0);
	CHECK(setsockopt(clone[1], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) == 0);
	clone_fd = clone[0];
	CHECK(fzc_claim_clone_fds(zs, true) == 0);
	/* the worker reads its next request from its clone ... */
	CHECK(write(clone[1], &in, sizeof(in)) == sizeof(in));
	CHECK(fzc_io_read(clone_fd, buf, sizeof(buf), NULL) == sizeof(in));
	CHECK(worker.devfd == clone_fd);
	/* ... and answers READ 500 there: lent asynchronously */
	lend_results[0] = -EPERM;		/* its CQE: a refusal, answered by copy */
	fzc_tls_read_reply = &rr;
	CHECK(fzc_io_writev(clone_fd, &iov, 1, NULL) == sizeof(hdr));
	fzc_tls_read_reply = NULL;
	CHECK(worker.inflight == 1);
	/* io-wq may issue the SQE after the clone closed: it names the
	 * library's own descriptor too */
	CHECK(nlendings == 1 && lendings[0].devfd == worker.devref && worker.devref >= 0);
	/* libfuse's retiring worker closes the clone; a backing file's open()
	 * takes the number */
	close(clone_fd);
	reg = memfd_create("zc_unit_backing", MFD_CLOEXEC);
	CHECK(reg >= 0 && dup2(reg, clone_fd) == clone_fd);
	if (reg != clone_fd)
		close(reg);
	fzc_lendings_drain(&worker);		/* the thread destructor's drain */
	CHECK(fstat(clone_fd, &st) == 0);
	if (st.st_size != 0)
		fprintf(stderr, "clone_closed: the fallback reply went into the file that took "
			"the clone's number (%lld bytes)\n", (long long)st.st_size);
	CHECK(st.st_size == 0);
	n = read(clone[1], buf, sizeof(buf));
	CHECK(n > 0);	/* the copy reply reached the clone's file */
	memcpy(&r.hdr, buf, sizeof(r.hdr));
	CHECK(n > 0 && r.hdr.unique == 500 && r.hdr.error == 0 &&
	      r.hdr.len == sizeof(r.hdr) + 4096);
	close(clone_fd);
	close(clone[1]);
	fzc_claim_clone_fds(zs, false);
	fuse_reply_err(deferred.req, EIO);	/* free libfuse's request */
	next_reply(&r);
	worker.devfd = pfd[0];
}

/*
 * Item 11: the real ring's completion queue holds every lending a worker
 * may have in flight (FZC_INFLIGHT_MAX), whatever ring_entries says: the
 * default 8 gave a CQ of 16 for 32 lendings.  Needs io_uring on the host.
 */
static void test_ring_cq_size(void)
{
	struct fusezc_session zs = { .opts = { .ring_entries = FZC_DEFAULT_RING } };
	struct fusezc_worker w = { .zs = &zs, .devfd = -1, .devref = -1, .memfd = -1 };
	int res = fzc_real_kops.ring_setup(&w);

	if (res < 0) {
		printf("ring_cq_size: no io_uring here (%s): not checked\n", strerror(-res));
		return;
	}
	if (*w.ring.cq.kring_entries < FZC_INFLIGHT_MAX)
		fprintf(stderr, "ring_cq_size: CQ of %u entries for %d lendings in flight\n",
			*w.ring.cq.kring_entries, FZC_INFLIGHT_MAX);
	CHECK(*w.ring.cq.kring_entries >= FZC_INFLIGHT_MAX);
	fzc_real_kops.ring_exit(&w);
}

/*
 * Item 11: a worker whose ring failed gets a new ring, and the reaper
 * watches that one.  Before the fix its "watched" flag outlived the old
 * ring: EPOLL_CTL_MOD of the new ring's fd failed (ENOENT), and from then
 * on the worker waited for its own lendings before each request.
 */
static void test_ring_failed_rewatch(void)
{
	/* FORGETs (no reply, no drain) make the worker wait for requests */
	static const struct fuse_forget_in forget = { .nlookup = 1 };
	struct fusezc_session *zs = async_session();
	struct reply r;

	lend_answers[0] = lend_answers[1] = true;	/* the kernel answers 70, 78 */
	process_read(70, 0, 4096);			/* lent asynchronously */
	process(FUSE_FORGET, 72, &forget, sizeof(forget));	/* watched */
	CHECK(worker.inflight == 1 && worker.watched);
	cqes_released = 1;
	process(FUSE_FORGET, 74, &forget, sizeof(forget));	/* reaped */
	CHECK(worker.inflight == 0);
	/* the ring fails under a synchronous lending, and is made again */
	zs->opts.sync_lending = true;
	ring_lend_errors = 1;
	process_read(76, 4096, 4096);
	next_reply(&r);
	CHECK(answers(&r, 76, 4096, 4096) && r.hdr.unique == 76);	/* a copy */
	zs->opts.sync_lending = false;
	CHECK(!worker.ring_ready);
	worker.ring_retry_at = 0;
	process_read(78, 0, 4096);			/* a new ring */
	process(FUSE_FORGET, 80, &forget, sizeof(forget));
	if (worker.inflight != 1)
		fprintf(stderr, "ring_failed_rewatch: the worker waited for its lending "
			"(the reaper did not watch its new ring)\n");
	CHECK(worker.inflight == 1 && worker.watched && ring_setups == 2);
	fzc_lendings_drain(&worker);
}

/*
 * Issue 24 (self-dependent targets): a request that may block (here a
 * GETATTR) waits for the worker's lendings only for a while, not until
 * they end: their I/O may need it (erofs mounted from an image file of the
 * same mount revalidates the image before reading it, and a worker that
 * waited for its lending never answered that GETATTR:
 * vm.kernel.self_dependent_erofs hung with two server threads).  The
 * lending stays in flight, watched by the reaper.
 */
static void test_may_block_no_wait(void)
{
	static const struct fuse_getattr_in gi;
	struct reply r;

	async_session();
	lend_answers[0] = true;
	process_read(90, 0, 4096);			/* lent asynchronously */
	CHECK(worker.inflight == 1);
	lendings_stuck = true;
	process(FUSE_GETATTR, 92, &gi, sizeof(gi));
	lendings_stuck = false;
	if (worker.inflight != 1)
		fprintf(stderr, "may_block_no_wait: the worker waited for its lending "
			"before it handed libfuse a GETATTR\n");
	CHECK(worker.inflight == 1 && worker.watched);
	next_reply(&r);
	CHECK(r.hdr.unique == 92);
	cqes_released = 1;
	fzc_lendings_drain(&worker);
	CHECK(worker.inflight == 0);
}

/*
 * opts.ring_read, one reader at a time: a read armed in a ring is a poll of
 * /dev/fuse that every request wakes, so with one in each idle worker's
 * ring every request woke them all (server context switches per FUSE_READ
 * 1.17 -> 1.97 at queue depth 1).  Workers that read through their ring
 * take turns: never two in the read at once; a leader that goes to a
 * handler that may block hands the role on at once, one that stays away
 * with a request loses it after a while; a waiting worker can be
 * cancelled.  The fake ring read takes a byte from a pipe for a request.
 */
static struct {
	int req[2];			/* a byte: a request for the reader */
	atomic_int readers, max_readers;
	atomic_int got[2];
	sem_t blocked;			/* a "handler" that does not return */
} rr;

static int rr_fake_read_dev(struct fusezc_worker *w, int fd, void *buf, size_t len,
			    unsigned int wait_nr, unsigned int timeout_us)
{
	struct pollfd pfd = { .fd = rr.req[0], .events = POLLIN };
	int n, in = atomic_fetch_add(&rr.readers, 1) + 1, max, cs;
	char c;

	(void)fd;
	(void)wait_nr;
	max = atomic_load(&rr.max_readers);
	while (in > max && !atomic_compare_exchange_weak(&rr.max_readers, &max, in))
		;
	/* like io_uring_enter(), no cancellation point */
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cs);
	n = poll(&pfd, 1, (int)(timeout_us / 1000));
	if (n == 1 && read(rr.req[0], &c, 1) == 1) {
		memset(buf, 0, len);
		pthread_mutex_lock(&w->lend_lock);
		w->devread_done = true;
		w->devread_res = (int)sizeof(struct fuse_in_header);
		pthread_mutex_unlock(&w->lend_lock);
	}
	atomic_fetch_sub(&rr.readers, 1);
	pthread_setcancelstate(cs, NULL);
	return n == 1 ? 0 : -ETIME;
}

enum rr_handler { RR_QUICK, RR_YIELD_AND_BLOCK, RR_AWAY_AND_BLOCK };
struct rr_worker {
	struct fusezc_worker w;
	int idx;
	enum rr_handler handler;
	pthread_t t;
};

static void *rr_worker_main(void *arg)
{
	struct rr_worker *rw = arg;
	char buf[256];

	for (;;) {
		if (fzc_lendings_read_request(&rw->w, 0, buf, sizeof(buf)) <= 0)
			continue;
		atomic_fetch_add(&rr.got[rw->idx], 1);
		switch (rw->handler) {
		case RR_QUICK:
			fzc_ring_read_away(&rw->w);
			break;
		case RR_YIELD_AND_BLOCK:
			fzc_ring_read_yield(&rw->w);
			sem_wait(&rr.blocked);
			break;
		case RR_AWAY_AND_BLOCK:
			fzc_ring_read_away(&rw->w);
			sem_wait(&rr.blocked);
			break;
		}
	}
	return NULL;
}

/* wait up to 10 s for @cond */
#define RR_EVENTUALLY(cond) do {					\
	for (int i_ = 0; i_ < 1000 && !(cond); i_++)			\
		usleep(10 * 1000);					\
	CHECK(cond);							\
} while (0)

static void rr_request(void)
{
	CHECK(write(rr.req[1], "r", 1) == 1);
}

static void test_ring_read_one_reader(void)
{
	static struct fzc_kernel_ops kops;
	const struct fzc_kernel_ops *saved = fzc_kops;
	static struct fusezc_session zs;
	static struct rr_worker rw[2];
	pthread_condattr_t ca;
	int before;

	kops = *fzc_kops;
	kops.ring_read_dev = rr_fake_read_dev;
	fzc_kops = &kops;
	memset(&zs, 0, sizeof(zs));
	memset(&rr, 0, sizeof(rr));
	CHECK(pipe2(rr.req, O_CLOEXEC) == 0);
	sem_init(&rr.blocked, 0, 0);
	pthread_mutex_init(&zs.rr_lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&zs.rr_cond, &ca);
	pthread_mutex_init(&zs.reaper_lock, NULL);
	zs.reaper_epfd = zs.reaper_stopfd = -1;
	for (int i = 0; i < 2; i++) {
		memset(&rw[i], 0, sizeof(rw[i]));
		rw[i].idx = i;
		rw[i].w.zs = &zs;
		rw[i].w.ring_ready = true;
		rw[i].w.ring.ring_fd = -1;
		rw[i].w.memfd = -1;
		rw[i].w.devref = -1;
		pthread_mutex_init(&rw[i].w.lend_lock, NULL);
		rw[i].handler = RR_QUICK;
		CHECK(pthread_create(&rw[i].t, NULL, rr_worker_main, &rw[i]) == 0);
	}

	/* taking turns: one reads, the other waits for the role */
	RR_EVENTUALLY(atomic_load(&rr.readers) == 1 && zs.rr_waiting == 1);
	for (int i = 0; i < 200; i++)
		rr_request();
	RR_EVENTUALLY(atomic_load(&rr.got[0]) + atomic_load(&rr.got[1]) == 200);
	if (atomic_load(&rr.max_readers) != 1)
		fprintf(stderr, "ring_read_one_reader: %d workers read /dev/fuse at once\n",
			atomic_load(&rr.max_readers));
	CHECK(atomic_load(&rr.max_readers) == 1);

	/* a leader off to a handler that may block hands the role on at once */
	before = atomic_load(&rr.got[0]) + atomic_load(&rr.got[1]);
	rw[0].handler = rw[1].handler = RR_YIELD_AND_BLOCK;
	rr_request();
	RR_EVENTUALLY(atomic_load(&rr.got[0]) + atomic_load(&rr.got[1]) == before + 1);
	RR_EVENTUALLY(atomic_load(&rr.readers) == 1);
	CHECK(atomic_load(&zs.rr_handoffs) >= 1 && atomic_load(&zs.rr_takeovers) == 0);
	rw[0].handler = rw[1].handler = RR_AWAY_AND_BLOCK;
	rr_request();
	RR_EVENTUALLY(atomic_load(&rr.got[0]) + atomic_load(&rr.got[1]) == before + 2);
	/* both in a "handler" now: nobody reads */
	usleep(300 * 1000);
	CHECK(atomic_load(&rr.readers) == 0);
	/* the first comes back; the one that stays away loses the role */
	rw[0].handler = rw[1].handler = RR_QUICK;
	sem_post(&rr.blocked);
	RR_EVENTUALLY(atomic_load(&rr.readers) == 1);
	if (atomic_load(&zs.rr_takeovers) != 1)
		fprintf(stderr, "ring_read_one_reader: a leader away with a request kept the role\n");
	CHECK(atomic_load(&zs.rr_takeovers) == 1);
	rr_request();
	RR_EVENTUALLY(atomic_load(&rr.got[0]) + atomic_load(&rr.got[1]) == before + 3);

	/* the blocked one returns and waits for the role; cancel both */
	sem_post(&rr.blocked);
	RR_EVENTUALLY(atomic_load(&rr.readers) == 1 && zs.rr_waiting == 1);
	for (int i = 0; i < 2; i++) {
		struct timespec deadline;

		pthread_cancel(rw[i].t);
		clock_gettime(CLOCK_REALTIME, &deadline);
		deadline.tv_sec += 10;
		CHECK(pthread_timedjoin_np(rw[i].t, NULL, &deadline) == 0);
	}
	CHECK(zs.rr_waiting == 0);
	CHECK(atomic_load(&rr.readers) == 0);
	CHECK(pthread_mutex_trylock(&zs.rr_lock) == 0);
	pthread_mutex_unlock(&zs.rr_lock);
	close(rr.req[0]);
	close(rr.req[1]);
	fzc_kops = saved;
}

/*
 * Item 11: a refusal that is the file's for good (EXDEV: a backing file on
 * FUSE or a stacked file system) is remembered for that file, so its next
 * reads are copied without a lending; another file, or another file that
 * took the same fd number, is lent again.  Before the fix every read of
 * such a file paid a refused lending first.
 */
static void test_refused_file(void)
{
	static unsigned char data[1 << 16];
	int saved = content_fd, other;
	struct reply r;

	zc_session();
	lend_results[0] = -EXDEV;
	process_read(90, 0, 4096);
	next_reply(&r);
	CHECK(answers(&r, 90, 0, 4096) && r.hdr.unique == 90 && nlendings == 1);
	process_read(92, 4096, 4096);
	next_reply(&r);
	CHECK(answers(&r, 92, 4096, 4096) && r.hdr.unique == 92);
	if (nlendings != 1)
		fprintf(stderr, "refused_file: the refused file was lent again (%d lendings)\n",
			nlendings);
	CHECK(nlendings == 1);

	/* another file with the same bytes: lent */
	other = memfd_create("zc_unit_other", MFD_CLOEXEC);
	zc_pattern_fill(data, 0, sizeof(data));
	CHECK(other >= 0 && pwrite(other, data, sizeof(data), 0) == (ssize_t)sizeof(data));
	content_fd = other;
	process_read(94, 0, 4096);
	next_reply(&r);
	CHECK(answers(&r, 94, 0, 4096) && (r.hdr.unique & FUSEZC_UNIQUE_ZC_REPLY) && nlendings == 2);
	/* the refused file's number taken by another file: lent */
	CHECK(dup2(other, saved) == saved);
	content_fd = saved;
	process_read(96, 0, 4096);
	next_reply(&r);
	CHECK(answers(&r, 96, 0, 4096) && (r.hdr.unique & FUSEZC_UNIQUE_ZC_REPLY) && nlendings == 3);
	close(other);
}

/*
 * Item 11: the reaper answers the lendings of every worker waiting for a
 * request; a fallback reply that blocks (a slow backing file's pread) must
 * not stall the others'.  Before the fix the reaper ran every fallback
 * itself: worker B's waited for worker A's.
 */
static struct {
	sem_t slow_started, fast_done;
	int release[2];
} handoff_test;

static void slow_done(struct fusezc_worker *w, struct fusezc_worker *cw,
		      const struct fzc_inflight *p, int res, bool answered)
{
	char c;

	(void)w, (void)cw, (void)p, (void)res, (void)answered;
	sem_post(&handoff_test.slow_started);
	if (read(handoff_test.release[0], &c, 1) != 1)
		fprintf(stderr, "reaper_hands_off: release pipe: %s\n", strerror(errno));
}

static void fast_done(struct fusezc_worker *w, struct fusezc_worker *cw,
		      const struct fzc_inflight *p, int res, bool answered)
{
	(void)w, (void)cw, (void)p, (void)res, (void)answered;
	sem_post(&handoff_test.fast_done);
}

static bool sem_wait_s(sem_t *sem, int seconds)
{
	struct timespec deadline;

	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += seconds;
	while (sem_timedwait(sem, &deadline) != 0)
		if (errno != EINTR)
			return false;
	return true;
}

static void test_reaper_hands_off(void)
{
	struct fusezc_session *zs = async_session();
	static struct fusezc_worker a, b;
	struct fusezc_worker *ws[2] = { &a, &b };
	uint64_t one = 1;
	bool fast;

	sem_init(&handoff_test.slow_started, 0, 0);
	sem_init(&handoff_test.fast_done, 0, 0);
	CHECK(pipe2(handoff_test.release, O_CLOEXEC) == 0);
	for (int i = 0; i < 2; i++) {
		struct fusezc_worker *w = ws[i];

		memset(w, 0, sizeof(*w));
		pthread_mutex_init(&w->lend_lock, NULL);
		w->zs = zs;
		w->devfd = w->devref = w->memfd = -1;
		CHECK(fake_ring_setup(w) == 0);
		w->ring_ready = true;
		w->lends[0] = (struct fzc_inflight){
			.done = i == 0 ? slow_done : fast_done, .busy = true,
			.fd = INJECTED_NO_CQE_YET, .devfd = -1,
		};
		w->inflight = 1;
		fzc_lendings_before_wait(w);	/* both wait for requests */
		CHECK(w->watched && w->inflight == 1);
	}
	/* A's CQE: its fallback blocks on the reaper (or a helper) */
	a.lends[0].fd = INJECTED_CQE;
	CHECK(write(a.ring.ring_fd, &one, sizeof(one)) == sizeof(one));
	CHECK(sem_wait_s(&handoff_test.slow_started, 10));
	/* B's CQE must be answered meanwhile */
	b.lends[0].fd = INJECTED_CQE;
	CHECK(write(b.ring.ring_fd, &one, sizeof(one)) == sizeof(one));
	fast = sem_wait_s(&handoff_test.fast_done, 5);
	if (!fast)
		fprintf(stderr, "reaper_hands_off: worker B's CQE waited for worker A's slow "
			"fallback\n");
	CHECK(fast);
	CHECK(write(handoff_test.release[1], "x", 1) == 1);
	if (!fast)
		CHECK(sem_wait_s(&handoff_test.fast_done, 10));
	for (int i = 0; i < 2; i++) {
		fzc_lendings_drain(ws[i]);
		CHECK(ws[i]->inflight == 0);
		fake_ring_exit(ws[i]);
	}
	fzc_reaper_stop(zs);
	close(handoff_test.release[0]);
	close(handoff_test.release[1]);
}

/*
 * Item 11: an asynchronous lending completes in its worker's task work
 * (the kernel's ->ki_complete), which runs while the worker waits in
 * read(2) of /dev/fuse but not while a handler sleeps uninterruptibly
 * (a stat or fsync of the source on a slow disk).  So a worker with
 * lendings in flight answers them before it hands libfuse a request whose
 * handler may block; reads, writes, interrupts and forgets go on at once.
 * Before the fix the GETATTR's handler ran with the lending in flight.
 */
static void test_no_blocking_handler_with_lendings(void)
{
	static const char getattr_in[16];
	static const struct fuse_forget_in forget = { .nlookup = 1 };
	struct reply r;

	async_session();
	lend_answers[0] = lend_answers[1] = true;
	process_read(110, 0, 4096);
	CHECK(worker.inflight == 1);
	process(FUSE_FORGET, 112, &forget, sizeof(forget));	/* no reply */
	process_read(114, 4096, 4096);
	CHECK(worker.inflight == 2);
	process(FUSE_GETATTR, 116, getattr_in, sizeof(getattr_in));
	next_reply(&r);
	CHECK(r.hdr.unique == 116);
	if (worker.inflight != 0)
		fprintf(stderr, "no_blocking_handler: GETATTR handled with %u lendings in flight\n",
			worker.inflight);
	CHECK(worker.inflight == 0 && cqes_posted == 2 && pipe_empty());
}

/* Not offered, or not asked for: INIT leaves the capability out. */
static void test_zc_writes_negotiation(void)
{
	const uint32_t zcw2 = (uint32_t)(FUSEZC_INIT_ZC_WRITE >> 32);
	struct fuse_out_header hdr;
	struct fuse_init_out io;
	struct fusezc_session *zs;

	for (int asked = 0; asked < 2; asked++) {
		for (int offered = 0; offered < 2; offered++) {
			zs = mk_session(FUSEZC_READ_ZEROCOPY, false, false);
			zs->opts.zerocopy_writes = asked;
			do_init(zs, FUSEZC_INIT_ZC_READ | (offered ? FUSEZC_INIT_ZC_WRITE : 0),
				0, &hdr, &io);
			CHECK(!!(io.flags2 & zcw2) == (asked && offered));
			CHECK(fusezc_zerocopy_writes_active(zs) == (asked && offered));
		}
	}
}

/* Item 6: a deferred READ B answered while the worker serves READ A. */
static void test_deferred_reply(void)
{
	struct reply r;

	for (int variant = 0; variant < 2; variant++) {
		zc_session();
		plan = PLAN_DEFER;
		process_read(200, 8192, 4096);		/* B: deferred */
		CHECK(pipe_empty());
		plan = variant ? PLAN_THREAD_DEFERRED : PLAN_ANSWER_DEFERRED;
		process_read(100, 0, 4096);		/* A: answers B, then A */
		next_reply(&r);
		if (!answers(&r, 200, 8192, 4096))
			fprintf(stderr, "deferred(%s): reply to B: unique %#llx len %u error %d\n",
				variant ? "thread" : "worker",
				(unsigned long long)r.hdr.unique, r.hdr.len, r.hdr.error);
		CHECK(answers(&r, 200, 8192, 4096));
		next_reply(&r);
		CHECK(answers(&r, 100, 0, 4096));
		CHECK(lendings_match(100, 0) && lendings_match(200, 8192));
		CHECK(worker.zs->requests.used == 0);
		if (!lendings_match(100, 0))
			fprintf(stderr, "deferred(%s): READ A's pages were lent B's range\n",
				variant ? "thread" : "worker");
		CHECK(pipe_empty());
	}
}

/* The FUSE_READ table: many in flight, taken in any order, none lost. */
static void test_read_table(void)
{
	struct fusezc_session *zs = zc_session();
	struct fzc_request r;
	const int n = 5000;

	for (int i = 1; i <= n; i++) {
		r = (struct fzc_request){ .unique = 2 * (uint64_t)i, .offset = (uint64_t)i, .size = 4096 };
		fzc_requests_add(&zs->requests, &r);
	}
	CHECK(zs->requests.used == (size_t)n);
	for (int i = 1; i <= n; i += 3)
		CHECK(fzc_requests_take(&zs->requests, 2 * (uint64_t)i, &r) && r.offset == (uint64_t)i);
	CHECK(!fzc_requests_take(&zs->requests, 2, NULL) && !fzc_requests_take(&zs->requests, 3, NULL));
	for (int i = 1; i <= n; i++)
		if (i % 3 != 1)
			CHECK(fzc_requests_take(&zs->requests, 2 * (uint64_t)i, &r) && r.offset == (uint64_t)i);
	CHECK(zs->requests.used == 0);

	/* A READ answered by fuse_reply_err() leaves nothing behind. */
	plan = PLAN_DEFER;
	process_read(40, 0, 4096);
	CHECK(zs->requests.used == 1);
	fuse_reply_err(deferred.req, EIO);
	CHECK(zs->requests.used == 0);
	{
		struct reply rep;

		next_reply(&rep);
		CHECK(rep.hdr.unique == 40 && rep.hdr.error == -EIO);
	}
}

/* Item 7: a short completion is not EOF: the rest is lent too. */
static void test_short_cqe(void)
{
	struct fusezc_stats st;
	struct reply r;

	zc_session();
	lend_results[0] = 1000;
	process_read(7, 4096, 8192);
	next_reply(&r);
	CHECK(answers(&r, 7, 4096, 8192));
	CHECK(nlendings == 2 && lendings[1].req_off == 1000 && lendings[1].len == 8192 - 1000);
	if (r.zc_size != 8192)
		fprintf(stderr, "short_cqe: zero-copy reply claims %llu of 8192 bytes\n",
			(unsigned long long)r.zc_size);
	fusezc_get_stats(worker.zs, &st);
	CHECK(st.zc_requests == 1 && st.zc_bytes == 8192 && st.fallbacks == 0);
	CHECK(pipe_empty());

	/* A completion of 0 bytes is the end of the backing file. */
	zc_session();
	lend_results[0] = 100;
	lend_results[1] = CQE_ZERO;
	process_read(8, 0, 4096);
	next_reply(&r);
	CHECK(r.hdr.error == 0 && r.hdr.unique == (8 | FUSEZC_UNIQUE_ZC_REPLY));
	CHECK(r.zc_size == 100 && nlendings == 2);
	CHECK(pipe_empty());

	/* Nothing at all: an empty reply, not a refusal. */
	zc_session();
	lend_results[0] = CQE_ZERO;
	process_read(9, 1 << 20, 4096);
	next_reply(&r);
	CHECK(r.hdr.error == 0 && r.hdr.unique == 9 && r.data_len == 0);
	fusezc_get_stats(worker.zs, &st);
	CHECK(st.fallbacks == 0);
	CHECK(pipe_empty());
}

/*
 * IORING_SPLICE_BUF_COMPLETE: a read the kernel answered gets no reply
 * from the server.  Whether the kernel answers is the INIT capability's
 * to say: an EINVAL (a misaligned O_DIRECT read, which any local user can
 * send) refuses that one read, never the flag for the session.  Before the
 * fix one such read switched every later read to the server's replies.
 */
static void test_kernel_answers(void)
{
	struct fusezc_session *zs;
	struct fusezc_stats st;
	struct reply r;

	zs = zc_session();
	atomic_store(&zs->kernel_answers, true);
	zs->opts.sync_lending = true;	/* asynchronous: test_async_* */
	lend_results[0] = 1000;		/* short: the rest is lent again */
	lend_answers[1] = true;
	process_read(20, 4096, 8192);
	CHECK(nlendings == 2 && lendings[0].kernel_answers && lendings[1].kernel_answers);
	CHECK(pipe_empty());
	fusezc_get_stats(zs, &st);
	CHECK(st.zc_requests == 1 && st.zc_kernel_answered == 1 && st.zc_bytes == 8192);
	CHECK(st.fallbacks == 0 && st.copy_requests == 0);

	zs = zc_session();
	atomic_store(&zs->kernel_answers, true);
	zs->opts.sync_lending = true;
	lend_results[0] = -EINVAL;
	lend_answers[1] = true;
	process_read(21, 0, 4096);
	next_reply(&r);
	CHECK(answers(&r, 21, 0, 4096) && r.hdr.unique == 21);	/* a copy */
	process_read(23, 4096, 4096);
	CHECK(nlendings == 2 && lendings[0].kernel_answers && lendings[1].kernel_answers);
	CHECK(atomic_load(&zs->kernel_answers));
	fusezc_get_stats(zs, &st);
	CHECK(st.zc_requests == 1 && st.zc_kernel_answered == 1 && st.fallbacks == 1);
	CHECK(pipe_empty());
}

/* A session whose kernel answers reads, lending asynchronously. */
static struct fusezc_session *async_session(void)
{
	struct fusezc_session *zs = zc_session();

	zs->opts.server_replies = false;
	atomic_store(&zs->kernel_answers, true);
	return zs;
}

/*
 * Asynchronous lending: the worker submits and returns at once; a read the
 * kernel answered gets nothing from the server, every other outcome gets
 * exactly one reply when its CQE is reaped (here: before the next request
 * is read): short or refused lendings a copy, backing errors the error.
 */
static void test_async_lending(void)
{
	struct fusezc_session *zs = async_session();
	struct fusezc_stats st;
	struct reply r;

	lend_answers[0] = true;
	lend_results[1] = 1000;		/* short before EOF: not answered */
	lend_results[2] = -EPERM;	/* refused */
	lend_results[3] = -EIO;		/* the backing file failed */
	process_read(30, 0, 8192);
	process_read(31, 8192, 8192);
	process_read(32, 16384, 4096);
	process_read(33, 0, 4096);
	CHECK(nlendings == 4 && worker.inflight == 4 && cqes_posted == 0);
	CHECK(pipe_empty());		/* nothing answered before its CQE */
	for (int i = 0; i < 4; i++)
		CHECK(lendings[i].kernel_answers && lendings[i].len == (i < 2 ? 8192u : 4096u));

	cqes_released = 4;
	process(FUSE_GETATTR, 34, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 16);
	CHECK(worker.inflight == 0 && cqes_posted == 4);
	next_reply(&r);
	CHECK(answers(&r, 31, 8192, 8192) && r.hdr.unique == 31);	/* a copy */
	next_reply(&r);
	CHECK(answers(&r, 32, 16384, 4096) && r.hdr.unique == 32);
	next_reply(&r);
	CHECK(r.hdr.unique == 33 && r.hdr.error == -EIO && r.data_len == 0);
	next_reply(&r);
	CHECK(r.hdr.unique == 34);	/* GETATTR's ENOSYS: nothing else */
	CHECK(pipe_empty());
	fusezc_get_stats(zs, &st);
	CHECK(st.zc_requests == 1 && st.zc_kernel_answered == 1 && st.zc_bytes == 8192);
	CHECK(st.copy_requests == 2 && st.fallbacks == 2);
	CHECK(zs->requests.used == 0);
}

/*
 * A handler that serves fewer bytes than the read asked for (a member of an
 * archive that ends inside the request: tarfs_zc): the lending covers those
 * bytes only, the kernel does not answer the read (its data is not all
 * there), and the server's zero-copy reply claims what was placed.  Before
 * the fix the asynchronous lending's CQE, short of the request's size, fell
 * back to a copy.  The synchronous path must do the same.
 */
static void test_async_clipped(void)
{
	struct fusezc_session *zs;
	struct fusezc_stats st;
	struct reply r;

	for (int sync = 0; sync < 2; sync++) {
		zs = async_session();
		zs->opts.sync_lending = sync;
		read_clip = 3000;
		process_read(40, 4096, 8192);
		fzc_lendings_drain(&worker);
		next_reply(&r);
		CHECK(nlendings == 1 && lendings[0].len == 3000 && lendings[0].off == 4096);
		CHECK(r.hdr.error == 0 && r.hdr.unique == (40 | FUSEZC_UNIQUE_ZC_REPLY));
		CHECK(r.zc_size == 3000);
		if (r.hdr.unique != (40 | FUSEZC_UNIQUE_ZC_REPLY))
			fprintf(stderr, "async_clipped (%s): reply unique %#llx, %zu data bytes "
				"(a copy, not a zero-copy reply)\n", sync ? "sync" : "async",
				(unsigned long long)r.hdr.unique, r.data_len);
		fusezc_get_stats(zs, &st);
		CHECK(st.zc_requests == 1 && st.zc_bytes == 3000);
		CHECK(st.fallbacks == 0 && st.copy_requests == 0);
		CHECK(pipe_empty());
		CHECK(zs->requests.used == 0);
	}
	read_clip = 0;
}

/* More reads than a worker keeps in flight: it waits for the oldest. */
static void test_async_full(void)
{
	struct fusezc_session *zs = async_session();
	struct fusezc_stats st;
	int n = FZC_INFLIGHT_MAX + 3;

	for (int i = 0; i < n; i++)
		lend_answers[i] = true;
	for (int i = 0; i < n; i++) {
		process_read(100 + 2 * (uint64_t)i, 0, 4096);
		CHECK(worker.inflight <= FZC_INFLIGHT_MAX);
	}
	CHECK(nlendings == n && cqes_posted == 3);
	fzc_lendings_drain(&worker);
	CHECK(worker.inflight == 0 && cqes_posted == n);
	fusezc_get_stats(zs, &st);
	CHECK(st.zc_kernel_answered == (uint64_t)n && st.copy_requests == 0);
	CHECK(pipe_empty());
}

/*
 * An asynchronous lending refused with EINVAL (a misaligned O_DIRECT read)
 * is that read's copy; the next read is lent asynchronously again, for the
 * kernel to answer.  Before the fix the session went synchronous for good
 * (zc_kernel_answered stopped while zc_requests went on).  sync_lending
 * lends synchronously from the start.
 */
static void test_async_einval_one_read(void)
{
	struct fusezc_session *zs = async_session();
	struct fusezc_stats st;
	struct reply r;

	lend_results[0] = -EINVAL;
	lend_answers[1] = true;
	process_read(40, 0, 4096);
	CHECK(nlendings == 1 && worker.inflight == 1 && pipe_empty());
	fzc_lendings_drain(&worker);
	next_reply(&r);
	CHECK(answers(&r, 40, 0, 4096) && r.hdr.unique == 40);
	CHECK(atomic_load(&zs->kernel_answers));
	process_read(42, 4096, 4096);	/* asynchronous again: the kernel answers */
	CHECK(nlendings == 2 && worker.inflight == 1 && lendings[1].kernel_answers);
	fzc_lendings_drain(&worker);
	CHECK(worker.inflight == 0 && pipe_empty());
	fusezc_get_stats(zs, &st);
	CHECK(st.zc_kernel_answered == 1 && st.copy_requests == 1);

	zs = async_session();
	zs->opts.sync_lending = true;
	lend_answers[0] = true;
	process_read(44, 0, 4096);
	CHECK(nlendings == 1 && worker.inflight == 0 && cqes_posted == 0 && pipe_empty());
	fusezc_get_stats(zs, &st);
	CHECK(st.zc_kernel_answered == 1);
}

/* ---- O_DIRECT lendings in pieces the device takes whole ---- */

/* The largest piece from a queue's limits, and the pieces of a range. */
static void test_piece_sizes(void)
{
	static const size_t lens[] = {
		4096, 8192, 8193, 12288, 65536, 131072, 524288, 1048575, 1048576,
		1052672, 4 << 20,
	};
	static const size_t maxes[] = {
		0, 4096, 8192, 65536, 131072, 512 << 10, 1016 << 10, 1280 << 10,
	};
	const size_t pg = 4096;
	size_t piece;

	/* virtio-blk in the bench VM: 1280 KiB, 254 segments */
	CHECK(fzc_piece_limit(1280, 254, pg) == 1016 << 10);
	/* a loop device: 128 segments, 512 KiB */
	CHECK(fzc_piece_limit(512, 128, pg) == 512 << 10);
	CHECK(fzc_piece_limit(0, 0, pg) == 0);			/* no queue */
	CHECK(fzc_piece_limit(0, 254, pg) == 254 * pg);
	CHECK(fzc_piece_limit(1280, 0, pg) == 1280 << 10);
	CHECK(fzc_piece_limit(2, 0, pg) == pg);			/* never below a page */
	CHECK(fzc_piece_limit(6, 0, pg) == pg);			/* a page multiple */
	CHECK(fzc_piece_limit(1280, 254, 0) == 0);

	CHECK(fzc_pieces(1 << 20, 1016 << 10, pg, &piece) == 2 && piece == 512 << 10);
	CHECK(fzc_pieces(1 << 20, 0, pg, &piece) == 1 && piece == 1 << 20);
	CHECK(fzc_pieces(1 << 20, 1 << 20, pg, &piece) == 1 && piece == 1 << 20);
	CHECK(fzc_pieces(12288, 8192, pg, &piece) == 2 && piece == 8192);
	CHECK(fzc_pieces(9216, 4096, pg, &piece) == 3 && piece == 4096);
	CHECK(fzc_pieces(1 << 20, 300 << 10, pg, &piece) == 4 && piece == 256 << 10);
	/* more than FZC_PIECES_MAX: whole, as before */
	CHECK(fzc_pieces(1 << 20, pg, pg, &piece) == 1 && piece == 1 << 20);

	/* every piece within the limit, on a page boundary, none empty */
	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		for (size_t j = 0; j < sizeof(maxes) / sizeof(maxes[0]); j++) {
			size_t len = lens[i], max = maxes[j];
			unsigned int n = fzc_pieces(len, max, pg, &piece);

			CHECK(n >= 1 && n <= FZC_PIECES_MAX);
			if (n == 1) {
				CHECK(piece == len);
				CHECK(max == 0 || len <= max || (len + max - 1) / max > FZC_PIECES_MAX);
				continue;
			}
			CHECK(piece % pg == 0 && piece <= max);
			CHECK((n - 1) * piece < len && len - (n - 1) * piece <= max);
			CHECK(n == (len + max - 1) / max);
		}
	}
}

/* @n lendings of request @unique: pieces of @piece bytes from @off, in order. */
static bool lent_in_pieces(int first, int n, uint64_t unique, off_t off, size_t len,
			   size_t piece, bool write)
{
	for (int k = 0; k < n; k++) {
		const struct fzc_lending *l = &lendings[first + k];
		size_t want = k + 1 < n ? piece : len - (size_t)(n - 1) * piece;

		if (l->unique != unique || l->write != write || !l->kernel_answers ||
		    l->req_off != k * piece || l->off != (uint64_t)off + k * piece ||
		    l->len != want)
			return false;
	}
	return true;
}

/*
 * Asynchronous reads in pieces: all submitted at once, the request answered
 * once, when the last piece's CQE is in: nothing when the kernel answered
 * it, else a zero-copy reply when every piece placed all of its own, a
 * copy when one was refused, the error when the file failed.
 */
static void test_pieces_async(void)
{
	struct fusezc_session *zs = async_session();
	struct fusezc_stats st;
	struct reply r;

	fake_piece = 8192;
	lend_answers[1] = true;			/* 50: the kernel answers */
	lend_results[5] = -EOPNOTSUPP;		/* 52: the second piece refused */
	lend_results[6] = -EIO;			/* 53: the first piece failed */
	process_read(50, 0, 16384);
	process_read(51, 16384, 12288);		/* 51: all placed, not answered */
	process_read(52, 0, 16384);
	process_read(53, 4096, 16384);
	CHECK(nlendings == 8 && worker.inflight == 8 && pipe_empty());
	CHECK(lent_in_pieces(0, 2, 50, 0, 16384, 8192, false));
	CHECK(lent_in_pieces(2, 2, 51, 16384, 12288, 8192, false));
	CHECK(lent_in_pieces(4, 2, 52, 0, 16384, 8192, false));
	CHECK(lent_in_pieces(6, 2, 53, 4096, 16384, 8192, false));

	/* one piece's CQE is not its request's answer: its slot stays */
	cqes_released = 1;
	fzc_lendings_before_wait(&worker);
	CHECK(cqes_posted == 1 && worker.inflight == 8 && pipe_empty());
	cqes_released = 8;
	fzc_lendings_drain(&worker);
	CHECK(worker.inflight == 0);
	next_reply(&r);
	CHECK(answers(&r, 51, 16384, 12288) && r.hdr.unique == (51 | FUSEZC_UNIQUE_ZC_REPLY));
	next_reply(&r);
	CHECK(answers(&r, 52, 0, 16384) && r.hdr.unique == 52);	/* a copy */
	next_reply(&r);
	CHECK(r.hdr.unique == 53 && r.hdr.error == -EIO);
	CHECK(pipe_empty());
	fusezc_get_stats(zs, &st);
	CHECK(st.zc_requests == 2 && st.zc_kernel_answered == 1);
	CHECK(st.zc_bytes == 16384 + 12288 && st.copy_requests == 1 && st.fallbacks == 1);
	CHECK(zs->requests.used == 0);

	/* the slots of pieces count: a worker full of them waits for the oldest */
	zs = async_session();
	fake_piece = 8192;
	for (int i = 0; i < MAX_LENDINGS; i++)
		lend_answers[i] = i % 2 == 1;
	for (int i = 0; i < FZC_INFLIGHT_MAX / 2 + 1; i++) {
		process_read(200 + 2 * (uint64_t)i, 0, 16384);
		CHECK(worker.inflight <= FZC_INFLIGHT_MAX);
	}
	CHECK(cqes_posted == 2);
	fzc_lendings_drain(&worker);
	fusezc_get_stats(zs, &st);
	CHECK(st.zc_kernel_answered == FZC_INFLIGHT_MAX / 2 + 1 && st.copy_requests == 0);
	CHECK(worker.inflight == 0 && pipe_empty());
}

/*
 * Synchronous lendings in pieces (writes; reads with sync_lending): a
 * piece that came back short is lent on from where it stopped, the others
 * not again; the answer is what went without a hole from the start.
 */
static void test_pieces_sync(void)
{
	struct fusezc_write_stats ws;
	struct fusezc_session *zs;
	struct reply r;

	zs = zcw_session(false);
	atomic_store(&zs->kernel_answers, true);
	zs->opts.sync_lending = true;
	fake_piece = 8192;
	/* the kernel answers the write when its last piece is back */
	lend_answers[1] = true;
	process_write(400, 4096, 16384, true);
	CHECK(pipe_empty() && nlendings == 2);
	CHECK(lent_in_pieces(0, 2, 400, 4096, 16384, 8192, true));
	CHECK(holds_pattern(write_target_fd, 4096, 16384));

	/* the first piece short: its rest is lent again, at its own offset */
	nlendings = 0;
	cqes_posted = 0;
	memset(lend_answers, 0, sizeof(lend_answers));
	lend_results[0] = 1000;
	lend_answers[2] = true;
	process_write(402, 40960, 16384, true);
	CHECK(pipe_empty() && nlendings == 3);
	CHECK(lendings[2].req_off == 1000 && lendings[2].off == 40960 + 1000 &&
	      lendings[2].len == 8192 - 1000);
	CHECK(holds_pattern(write_target_fd, 40960, 16384));

	/* the second piece: no space; the first went: a short write */
	nlendings = 0;
	cqes_posted = 0;
	memset(lend_answers, 0, sizeof(lend_answers));
	memset(lend_results, 0, sizeof(lend_results));
	lend_results[1] = -ENOSPC;
	process_write(404, 0, 16384, true);
	next_reply(&r);
	CHECK(wrote(&r, 404, 8192) && nlendings == 2);
	fusezc_get_write_stats(zs, &ws);
	CHECK(ws.zc_requests == 2 && ws.zc_kernel_answered == 2 && ws.memfd_requests == 0);
	CHECK(zs->requests.used == 0 && pipe_empty());
	zcw_session_end();

	/* a read, the kernel not answering: the server's zero-copy reply */
	zs = zc_session();
	fake_piece = 8192;
	lend_results[1] = 5000;		/* the second piece short: lent on */
	process_read(406, 8192, 16384);
	next_reply(&r);
	CHECK(nlendings == 3 && lendings[2].req_off == 8192 + 5000);
	CHECK(answers(&r, 406, 8192, 16384) && r.hdr.unique == (406 | FUSEZC_UNIQUE_ZC_REPLY));
	/* ... the end of the file inside the first piece: what it placed */
	nlendings = 0;
	cqes_posted = 0;
	memset(lend_results, 0, sizeof(lend_results));
	lend_results[0] = 3000;
	lend_results[1] = CQE_ZERO;
	lend_results[2] = CQE_ZERO;
	process_read(408, 0, 16384);
	next_reply(&r);
	CHECK(nlendings == 3 && r.hdr.unique == (408 | FUSEZC_UNIQUE_ZC_REPLY) &&
	      r.zc_size == 3000);
	CHECK(pipe_empty() && zs->requests.used == 0);
}

/*
 * Issue 26 step 3: zero-copy writes are lent asynchronously, as reads are.
 * The worker submits each write's lending and reads its next request; the
 * kernel answers a write whose lending wrote it all, and every other CQE
 * is answered exactly once when it is reaped: the bytes written when the
 * file took fewer (EIO for none), the file's error, and a refusal or a
 * transient error by asking the kernel for the write again with its data.
 * A handler that may block (FSYNC) runs only after the answers.  Before:
 * each write waited for its lending in the worker (nothing in flight).
 */
static void test_async_writes(void)
{
	static const struct fuse_fsync_in fsync_in = { .fh = 1 };
	struct fusezc_write_stats ws;
	struct fusezc_session *zs;
	struct reply r;

	zs = zcw_session(true);
	lend_answers[0] = true;		/* 600: written, the kernel answers */
	lend_results[1] = 3000;		/* 602: the file took 3000 bytes */
	lend_results[2] = CQE_ZERO;	/* 604: none */
	lend_results[3] = -ENOSPC;	/* 606: the file failed */
	lend_results[4] = -EPERM;	/* 608: refused */
	lend_results[5] = -EAGAIN;	/* 610: transient */
	for (int i = 0; i < 6; i++)
		process_write(600 + 2 * (uint64_t)i, 16384 * (off_t)i, 8192, true);
	if (worker.inflight != 6)
		fprintf(stderr, "async_writes: %u of 6 writes in flight (lent synchronously?)\n",
			worker.inflight + 0);
	CHECK(nlendings == 6 && worker.inflight == 6 && cqes_posted == 0);
	CHECK(pipe_empty());		/* nothing answered before its CQE */
	for (int i = 0; i < 6; i++)
		CHECK(lendings[i].write && lendings[i].kernel_answers &&
		      lendings[i].unique == 600 + 2 * (uint64_t)i &&
		      lendings[i].fd == write_target_fd &&
		      lendings[i].off == 16384 * (uint64_t)i && lendings[i].len == 8192);

	cqes_released = 6;
	process(FUSE_FSYNC, 612, &fsync_in, sizeof(fsync_in));
	CHECK(worker.inflight == 0 && cqes_posted == 6);
	next_reply(&r);
	CHECK(wrote(&r, 602, 3000));
	next_reply(&r);
	CHECK(r.hdr.unique == 604 && r.hdr.error == -EIO);
	next_reply(&r);
	CHECK(r.hdr.unique == 606 && r.hdr.error == -ENOSPC);
	next_reply(&r);
	CHECK(asks_resend(&r, 608));
	next_reply(&r);
	CHECK(asks_resend(&r, 610));
	next_reply(&r);
	CHECK(r.hdr.unique == 612);	/* FSYNC's, after every write's */
	CHECK(pipe_empty());
	CHECK(holds_pattern(write_target_fd, 0, 8192) &&
	      holds_pattern(write_target_fd, 16384, 3000));
	/* the kernel sends 608 and 610 again, with their data */
	process_write(608, 4 * 16384, 200, false);
	next_reply(&r);
	CHECK(wrote(&r, 608, 200));
	process_write(610, 5 * 16384, 200, false);
	next_reply(&r);
	CHECK(wrote(&r, 610, 200) && holds_pattern(write_target_fd, 5 * 16384, 200));
	CHECK(nlendings == 6 && pipe_empty() && zs->requests.used == 0);
	fusezc_get_write_stats(zs, &ws);
	CHECK(ws.zc_requests == 3 && ws.zc_kernel_answered == 1 && ws.zc_bytes == 8192 + 3000);
	CHECK(ws.copy_requests == 2 && ws.memfd_requests == 0);
	CHECK(atomic_load(&zs->resent_writes) == 2);

	/* in pieces: one CQE a piece, the write answered after the last; a
	 * file that failed after the first piece: the bytes before */
	fake_piece = 8192;
	nlendings = cqes_posted = cqes_released = 0;
	memset(lend_results, 0, sizeof(lend_results));
	memset(lend_answers, 0, sizeof(lend_answers));
	lend_answers[1] = true;		/* 620 */
	lend_results[3] = -ENOSPC;	/* 622: its second piece */
	lend_results[4] = -ENOSPC;	/* 624: its first */
	process_write(620, 0, 16384, true);
	process_write(622, 32768, 16384, true);
	process_write(624, 65536, 16384, true);
	CHECK(nlendings == 6 && worker.inflight == 6 && pipe_empty());
	CHECK(lent_in_pieces(0, 2, 620, 0, 16384, 8192, true));
	CHECK(lent_in_pieces(2, 2, 622, 32768, 16384, 8192, true));
	CHECK(lent_in_pieces(4, 2, 624, 65536, 16384, 8192, true));
	fzc_lendings_drain(&worker);
	next_reply(&r);
	CHECK(wrote(&r, 622, 8192));
	next_reply(&r);
	CHECK(r.hdr.unique == 624 && r.hdr.error == -ENOSPC);
	CHECK(pipe_empty() && holds_pattern(write_target_fd, 0, 16384) &&
	      holds_pattern(write_target_fd, 32768, 8192));
	fake_piece = 0;

	/* refused for good (EXDEV): sent again, and the file's next writes
	 * take the synchronous path with its memfd */
	nlendings = cqes_posted = cqes_released = 0;
	memset(lend_results, 0, sizeof(lend_results));
	lend_results[0] = -EXDEV;
	process_write(630, 0, 8192, true);
	CHECK(worker.inflight == 1);
	fzc_lendings_drain(&worker);
	next_reply(&r);
	CHECK(asks_resend(&r, 630));
	process_write(632, 8192, 8192, true);
	CHECK(worker.inflight == 0 && nlendings == 2 && lendings[1].fd != write_target_fd &&
	      !lendings[1].kernel_answers);
	next_reply(&r);
	CHECK(wrote(&r, 632, 8192) && holds_pattern(write_target_fd, 8192, 8192));
	fusezc_get_write_stats(zs, &ws);
	CHECK(ws.memfd_requests == 1 && pipe_empty());
	process_write(630, 0, 200, false);	/* 630 again, with its data */
	next_reply(&r);
	CHECK(wrote(&r, 630, 200) && zs->requests.used == 0);
	zcw_session_end();

	/* the ring lost with a write in flight: cancelled, sent again; the
	 * next write, without a ring, too */
	zs = zcw_session(true);
	process_write(640, 0, 8192, true);
	CHECK(worker.inflight == 1);
	ring_broken = -EBADF;
	process_write(642, 8192, 8192, true);
	ring_broken = 0;
	CHECK(worker.inflight == 0 && !worker.ring_ready);
	next_reply(&r);
	if (!asks_resend(&r, 640))
		fprintf(stderr, "async_writes: ring lost: reply unique %#llx error %d\n",
			(unsigned long long)r.hdr.unique, r.hdr.error);
	CHECK(asks_resend(&r, 640));
	next_reply(&r);
	CHECK(asks_resend(&r, 642));
	CHECK(pipe_empty());
	process_write(640, 0, 200, false);
	next_reply(&r);
	CHECK(wrote(&r, 640, 200));
	process_write(642, 8192, 200, false);
	next_reply(&r);
	CHECK(wrote(&r, 642, 200) && pipe_empty() && zs->requests.used == 0);
	worker.ring_retry_at = 0;
	zcw_session_end();

	/* no kernel answers (server_replies) or sync_lending: synchronous */
	for (int how = 0; how < 2; how++) {
		zs = zcw_session(true);
		if (how)
			zs->opts.sync_lending = true;
		else
			atomic_store(&zs->kernel_answers, false);
		process_write(650, 0, 8192, true);
		CHECK(worker.inflight == 0 && nlendings == 1 && cqes_posted == 0);
		next_reply(&r);
		CHECK(wrote(&r, 650, 8192) && pipe_empty());
		zcw_session_end();
	}
}

/*
 * The reaper answers a write's CQE itself while the worker waits for a
 * request: the answer is a write to /dev/fuse, which no slow backing file
 * can hold up, so no helper thread is started for it.
 */
static void test_reaper_answers_writes(void)
{
	struct fusezc_session *zs;
	uint64_t one = 1;
	unsigned int helpers;
	struct reply r;

	zs = zcw_session(true);
	lend_results[0] = -EPERM;
	process_write(660, 0, 8192, true);
	CHECK(worker.inflight == 1);
	fzc_lendings_before_wait(&worker);	/* waits for a request */
	CHECK(worker.watched && worker.inflight == 1);
	cqes_released = 1;
	CHECK(write(worker.ring.ring_fd, &one, sizeof(one)) == sizeof(one));
	next_reply(&r);			/* the reaper's answer (10 s at most) */
	CHECK(asks_resend(&r, 660));
	pthread_mutex_lock(&zs->reaper_lock);
	helpers = zs->helpers;
	pthread_mutex_unlock(&zs->reaper_lock);
	if (helpers != 0)
		fprintf(stderr, "reaper_answers_writes: %u helper thread(s) for a write's answer\n",
			helpers);
	CHECK(helpers == 0);
	fzc_lendings_drain(&worker);
	CHECK(worker.inflight == 0 && pipe_empty());
	fzc_reaper_stop(zs);
	process_write(660, 0, 200, false);
	next_reply(&r);
	CHECK(wrote(&r, 660, 200) && pipe_empty() && zs->requests.used == 0);
	zcw_session_end();
}

/* Item 7: errors of the backing file reach the reader, once, unretried. */
static void test_backing_error(void)
{
	struct fusezc_stats st;
	struct reply r;

	zc_session();
	lend_results[0] = -EIO;
	process_read(9, 0, 4096);
	next_reply(&r);
	if (r.hdr.error != -EIO)
		fprintf(stderr, "backing_error: reply error %d, want %d (EIO)\n",
			r.hdr.error, -EIO);
	CHECK(r.hdr.unique == 9 && r.hdr.error == -EIO && r.data_len == 0);
	CHECK(nlendings == 1);
	fusezc_get_stats(worker.zs, &st);
	CHECK(st.fallbacks == 0 && st.copy_requests == 0);
	CHECK(pipe_empty());
}

/* Item 7: every kernel refusal of a lending falls back to one copy reply. */
static void test_lend_refusals(void)
{
	static const int refusals[] = { EOPNOTSUPP, EPERM, EXDEV, E2BIG, EINVAL, ENOENT, EEXIST };
	struct fusezc_stats st;
	struct reply r;

	for (size_t i = 0; i < sizeof(refusals) / sizeof(refusals[0]); i++) {
		zc_session();
		lend_results[0] = -refusals[i];
		process_read(11, 12288, 4096);
		next_reply(&r);
		if (!answers(&r, 11, 12288, 4096))
			fprintf(stderr, "refusal %s: unique %#llx error %d len %u\n",
				strerror(refusals[i]), (unsigned long long)r.hdr.unique,
				r.hdr.error, r.hdr.len);
		CHECK(answers(&r, 11, 12288, 4096) && !(r.hdr.unique & FUSEZC_UNIQUE_ZC_REPLY));
		fusezc_get_stats(worker.zs, &st);
		CHECK(st.fallbacks == 1 && st.copy_requests == 1 && st.zc_requests == 0);
		CHECK(pipe_empty());
	}
}

/* Item 7 / contract v2: a zero-copy reply refused by write() (EINVAL: more
 * than was placed; EBUSY) is followed by a copy reply to the same request. */
static void test_reply_refused(void)
{
	static const int errs[] = { EINVAL, EBUSY };
	struct fusezc_stats st;
	struct reply r;

	for (size_t i = 0; i < sizeof(errs) / sizeof(errs[0]); i++) {
		zc_session();
		zc_write_errno = errs[i];
		process_read(12, 0, 4096);
		next_reply(&r);
		if (!answers(&r, 12, 0, 4096))
			fprintf(stderr, "reply refused (%s): unique %#llx error %d len %u\n",
				strerror(errs[i]), (unsigned long long)r.hdr.unique,
				r.hdr.error, r.hdr.len);
		CHECK(answers(&r, 12, 0, 4096) && r.hdr.unique == 12);
		fusezc_get_stats(worker.zs, &st);
		CHECK(st.fallbacks == 1 && st.copy_requests == 1 && st.zc_requests == 0);
		CHECK(pipe_empty());
	}
}

/* Item 7: a worker whose io_uring failed gets a new one later. */
static void test_ring_retry(void)
{
	struct reply r;

	zc_session();
	ring_setup_errors = 1;
	process_read(13, 0, 4096);
	next_reply(&r);
	CHECK(answers(&r, 13, 0, 4096) && nlendings == 0);
	/* Later (the back-off has passed): a new ring, zero copy again. */
	worker.ring_retry_at = 0;
	process_read(14, 0, 4096);
	next_reply(&r);
	if (!(r.hdr.unique & FUSEZC_UNIQUE_ZC_REPLY))
		fprintf(stderr, "ring_retry: no zero copy after the ring failed once (%d setups)\n",
			ring_setups);
	CHECK(r.hdr.unique == (14 | FUSEZC_UNIQUE_ZC_REPLY) && answers(&r, 14, 0, 4096));
	CHECK(ring_setups == 2);
	CHECK(pipe_empty());
}

/*
 * Item 8: a lending names the /dev/fuse file the request's reply goes to,
 * which libfuse takes from the request's channel (a clone with clone_fd):
 * the kernel looks the request up on that file only.
 */
static void test_lend_through_request_fd(void)
{
	struct fusezc_session *zs = zc_session();
	struct fzc_read_reply rr = { .fd = content_fd, .off = 4096, .size = 4096 };
	struct fuse_out_header hdr = { .len = sizeof(hdr), .unique = 300 };
	struct iovec iov = { &hdr, sizeof(hdr) };
	struct reply r;

	process_read(100, 0, 4096);		/* replied by libfuse on se's fd */
	next_reply(&r);
	CHECK(answers(&r, 100, 0, 4096));
	CHECK(nlendings == 1 && lendings[0].devfd == zs->fuse_fd);

	plan = PLAN_DEFER;
	process_read(300, 4096, 4096);
	CHECK(pipe_empty());
	/* Its reply written to another file (pfd[1] stands for a clone). */
	fzc_tls_read_reply = &rr;
	CHECK(fzc_io_writev(pfd[1], &iov, 1, NULL) == (ssize_t)sizeof(hdr));
	fzc_tls_read_reply = NULL;
	CHECK(rr.answered);
	next_reply(&r);
	CHECK(answers(&r, 300, 4096, 4096));
	CHECK(nlendings == 2 && lendings[1].devfd == pfd[1]);
	if (nlendings == 2 && lendings[1].devfd != pfd[1])
		fprintf(stderr, "lend_fd: lent through fd %d, the reply went to %d\n",
			lendings[1].devfd, pfd[1]);
	fuse_reply_err(deferred.req, EIO);	/* free libfuse's request */
	next_reply(&r);
	CHECK(pipe_empty());
}

static int init_events, init_event_error;
static struct fusezc_session *init_event_zs;
static char logged[256];

static void on_init_done(struct fusezc_session *zs, int error, void *data)
{
	CHECK(data == &init_events);
	init_events++;
	init_event_error = error;
	init_event_zs = zs;
}

static void on_log(enum fuse_log_level level, const char *msg, void *data)
{
	(void)level;
	CHECK(data == &init_events);
	snprintf(logged, sizeof(logged), "%s", msg);
}

/* Item 8: INIT and messages are events, not states to poll or text to parse. */
static void test_events(void)
{
	struct fusezc_session *zs;
	struct fuse_out_header hdr;
	struct fuse_init_out io;

	/* init_done once, after the INIT reply was written; log without prefix. */
	zs = mk_session(FUSEZC_READ_ZEROCOPY, false, false);
	zs->opts.init_done = on_init_done;
	zs->opts.log = on_log;
	zs->opts.event_data = &init_events;
	init_events = 0;
	do_init(zs, FUSEZC_INIT_ZC_READ, 0, &hdr, &io);
	CHECK(init_events == 1 && init_event_error == 0 && init_event_zs == zs);
	CHECK(fusezc_init_done(zs) && fusezc_zerocopy_active(zs));
	CHECK(strcmp(logged, "zero-copy reads active") == 0);

	/* Required but not offered: the event says so, with -EOPNOTSUPP. */
	zs = mk_session(FUSEZC_READ_ZEROCOPY, true, false);
	zs->opts.init_done = on_init_done;
	zs->opts.log = on_log;
	zs->opts.event_data = &init_events;
	init_events = 0;
	do_init(zs, 0, 0, &hdr, &io);
	CHECK(hdr.error == -EPROTO);
	CHECK(init_events == 1 && init_event_error == -EOPNOTSUPP);
	CHECK(strncmp(logged, "zero copy required", 18) == 0);

	/* A request before any INIT (libfuse answered INIT itself): said, and
	 * with zero copy required the loop ends with -EOPNOTSUPP. */
	zs = mk_session(FUSEZC_READ_ZEROCOPY, true, false);
	zs->opts.log = on_log;
	zs->opts.event_data = &init_events;
	logged[0] = '\0';
	feed_request(FUSE_GETATTR, 4, NULL, 0);
	CHECK(zs->init_error == -EOPNOTSUPP);
	CHECK(strstr(logged, "answered before fuse-zc was attached") != NULL);
	CHECK(strcmp(fusezc_zerocopy_status(zs), "") != 0 && !fusezc_zerocopy_active(zs));
	fuse_session_reset(test_se);
}

/*
 * libfuse 3.18's io_uring transport (-o io_uring, on kernels that offer
 * FUSE_OVER_IO_URING) answers requests without the custom-I/O hooks, so
 * zero copy, the INIT rewrite and passthrough replies would be lost in
 * silence.  The read hook takes the offer out of the INIT request, so
 * libfuse stays on /dev/fuse, and says so in one line.  Before: the offer
 * reached libfuse (and 3.18 was refused at compile time).
 */
static void test_io_uring_transport_refused(void)
{
	struct {
		struct fuse_in_header h;
		struct fuse_init_in i;
	} req = {
		.h = { .len = sizeof(req), .opcode = FUSE_INIT, .unique = 2 },
		.i = { .major = 7, .minor = 42, .flags = FUSE_INIT_EXT,
		       .flags2 = (uint32_t)((FUSEZC_INIT_OVER_IO_URING | FUSEZC_INIT_ZC_READ) >> 32) },
	}, got;
	struct fusezc_session *zs = mk_session(FUSEZC_READ_ZEROCOPY, false, false);

	zs->opts.log = on_log;
	zs->opts.event_data = &init_events;
	logged[0] = '\0';
	CHECK(write(pfd[1], &req, sizeof(req)) == sizeof(req));
	CHECK(fzc_io_read(pfd[0], &got, sizeof(got), NULL) == sizeof(got));
	CHECK(!(got.i.flags2 & (uint32_t)(FUSEZC_INIT_OVER_IO_URING >> 32)));
	CHECK(got.i.flags2 & (uint32_t)(FUSEZC_INIT_ZC_READ >> 32));
	CHECK(strstr(logged, "io_uring") != NULL);
	if (strstr(logged, "io_uring") == NULL)
		fprintf(stderr, "io_uring_transport_refused: no line said why\n");
	fuse_session_reset(test_se);
}

/* Item 8: the options are versioned by their size. */
static void test_versioned_options(void)
{
	struct {
		struct fusezc_options o;
		unsigned char newer[16];
	} big;
	struct fusezc_session *zs = (void *)1;

	memset(&big, 0, sizeof(big));
	big.newer[3] = 1;	/* a field this library does not know */
	CHECK(fusezc_session_new_versioned(test_se, &big.o, sizeof(big), &zs) == -EINVAL);
	CHECK(zs == NULL);
	/* Loop limits beyond libfuse's are refused, not ignored. */
	memset(&big, 0, sizeof(big));
	big.o.max_threads = 200000;
	zs = (void *)1;
	CHECK(fusezc_session_new_versioned(test_se, &big.o, sizeof(big.o), &zs) == -EINVAL);
	CHECK(zs == NULL);
}

/*
 * The fake /dev/fuse: a SOCK_SEQPACKET pair keeps the boundaries of
 * requests and replies, as the device does; a missing reply times out
 * instead of hanging the test.
 */
static int open_device(void)
{
	struct timeval tv = { .tv_sec = 10 };

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pfd) != 0)
		return -1;
	return setsockopt(pfd[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

int main(void)
{
	static const struct {
		const char *name;
		void (*fn)(void);
	} tests[] = {
		{ "lend_pos", test_lend_pos },
		{ "sqe", test_sqe },
		{ "abi", test_abi },
		{ "api_args", test_api_args },
		{ "init_rewrite", test_init_rewrite },
		{ "reply_rewrites", test_reply_rewrites },
		{ "deferred_reply", test_deferred_reply },
		{ "read_table", test_read_table },
		{ "short_cqe", test_short_cqe },
		{ "kernel_answers", test_kernel_answers },
		{ "backing_error", test_backing_error },
		{ "async_lending", test_async_lending },
		{ "async_full", test_async_full },
		{ "async_clipped", test_async_clipped },
		{ "async_einval_one_read", test_async_einval_one_read },
		{ "lend_refusals", test_lend_refusals },
		{ "reply_refused", test_reply_refused },
		{ "ring_retry", test_ring_retry },
		{ "lend_through_request_fd", test_lend_through_request_fd },
		{ "events", test_events },
		{ "versioned_options", test_versioned_options },
		{ "io_uring_transport_refused", test_io_uring_transport_refused },
		{ "zc_writes", test_zc_writes },
		{ "zc_writes_negotiation", test_zc_writes_negotiation },
		{ "zc_write_after_async_reads", test_zc_write_after_async_reads },
		{ "cancel_in_hook", test_cancel_in_hook },
		{ "zc_writes_need_a_ring", test_zc_writes_need_a_ring },
		{ "zc_write_no_loss", test_zc_write_no_loss },
		{ "read_transient", test_read_transient },
		{ "clone_closed_under_lending", test_clone_closed_under_lending },
		{ "ring_cq_size", test_ring_cq_size },
		{ "ring_failed_rewatch", test_ring_failed_rewatch },
		{ "may_block_no_wait", test_may_block_no_wait },
		{ "ring_read_one_reader", test_ring_read_one_reader },
		{ "refused_file", test_refused_file },
		{ "reaper_hands_off", test_reaper_hands_off },
		{ "no_blocking_handler_with_lendings", test_no_blocking_handler_with_lendings },
		{ "piece_sizes", test_piece_sizes },
		{ "pieces_async", test_pieces_async },
		{ "pieces_sync", test_pieces_sync },
		{ "async_writes", test_async_writes },
		{ "reaper_answers_writes", test_reaper_answers_writes },
	};
	static const struct fuse_lowlevel_ops no_ops;
	char *argv[] = { "zc_unit", NULL };
	struct fuse_args args = FUSE_ARGS_INIT(1, argv);

	test_se = fuse_session_new(&args, &no_ops, sizeof(no_ops), NULL);
	content_fd = memfd_create("zc_unit", MFD_CLOEXEC);
	if (test_se == NULL || content_fd < 0 || open_device() != 0) {
		fprintf(stderr, "zc_unit: setup failed\n");
		return 1;
	}
	{
		static unsigned char buf[1 << 16];

		zc_pattern_fill(buf, 0, sizeof(buf));
		if (pwrite(content_fd, buf, sizeof(buf), 0) != (ssize_t)sizeof(buf))
			return 1;
	}
	fzc_kops = &fake_kops;

	for (size_t i = 0; i < sizeof(tests) / sizeof(tests[0]); i++) {
		int before = failures;

		tests[i].fn();
		printf("%s: %s\n", tests[i].name, failures == before ? "ok" : "FAIL");
	}
	mk_session(FUSEZC_READ_COPY, false, false);
	free(worker.copybuf);
	fuse_session_destroy(test_se);
	if (proc_se != NULL)
		fuse_session_destroy(proc_se);
	fuse_opt_free_args(&args);
	return failures ? 1 : 0;
}
