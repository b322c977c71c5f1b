// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Unit checks of libfuse-zc that need no FUSE mount: the
 * IORING_OP_READ_SPLICE_BUF SQE encoding, the ABI struct layouts and the
 * argument checks of the public API.
 */
#include "fuse_zc_int.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
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
	CHECK(fusezc_lend_pos(1, 0) == (1ULL << 24));
	CHECK(fusezc_lend_pos(1, 4096) == ((1ULL << 24) | 4096));
	/* Only the low 39 bits of the unique id are encoded. */
	CHECK(fusezc_lend_pos((1ULL << 39) | 5, 0) == (5ULL << 24));
	CHECK(fusezc_lend_pos(~0ULL, 0) == (((1ULL << 39) - 1) << 24));
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
	CHECK(sqe.splice_off_in == 1ULL << 24);
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

/* ---- the writev hook's rewrites, through a pipe ---- */

static struct fuse_session *test_se;
static int pfd[2];
static struct fusezc_worker worker;

static struct fusezc_session *mk_session(enum fusezc_read_mode mode, bool required,
					 bool passthrough)
{
	static struct fusezc_session zs;

	memset(&zs, 0, sizeof(zs));
	zs.se = test_se;
	zs.opts.read_mode = mode;
	zs.opts.zerocopy_required = required;
	zs.opts.passthrough = passthrough;
	atomic_init(&zs.zc_status, "unset");
	memset(&worker, 0, sizeof(worker));
	worker.zs = &zs;
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
	struct fusezc_read_out ro = { .size = 4000 };
	struct fuse_open_out oo = { .fh = 42, .open_flags = FOPEN_KEEP_CACHE };
	struct fuse_open_in oi = { .flags = 0 };
	struct fzc_open_out got;
	size_t n;

	mk_session(FUSEZC_READ_ZEROCOPY, false, true);

	/* Zero-copy read reply: unique gets FUSEZC_UNIQUE_ZC_REPLY. */
	feed_request(FUSE_READ, 77, &ri, sizeof(ri));
	worker.pend = FZC_PEND_ZC_READ;
	n = send_reply(77, 0, &ro, sizeof(ro), out);
	memcpy(&hdr, out, sizeof(hdr));
	CHECK(n == 24 && hdr.len == 24 && hdr.error == 0);
	CHECK(hdr.unique == (77 | FUSEZC_UNIQUE_ZC_REPLY));
	CHECK(memcmp(out + sizeof(hdr), &ro, sizeof(ro)) == 0);

	/* An ordinary read reply on the same thread is left alone. */
	worker.pend = FZC_PEND_NONE;
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
	};
	static const struct fuse_lowlevel_ops no_ops;
	char *argv[] = { "zc_unit", NULL };
	struct fuse_args args = FUSE_ARGS_INIT(1, argv);

	test_se = fuse_session_new(&args, &no_ops, sizeof(no_ops), NULL);
	if (test_se == NULL || pipe(pfd) != 0) {
		fprintf(stderr, "zc_unit: setup failed\n");
		return 1;
	}

	for (size_t i = 0; i < sizeof(tests) / sizeof(tests[0]); i++) {
		int before = failures;

		tests[i].fn();
		printf("%s: %s\n", tests[i].name, failures == before ? "ok" : "FAIL");
	}
	fuse_session_destroy(test_se);
	fuse_opt_free_args(&args);
	return failures ? 1 : 0;
}
