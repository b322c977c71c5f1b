// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * zc_kernel_reads: bytes read through IORING_OP_READ_SPLICE_BUF are the
 * backing file's, whatever the read's shape, the server's fds, the order
 * of its lendings, or who answers the read (the server, or the kernel at
 * the loan's end: IORING_SPLICE_BUF_COMPLETE), synchronous or asynchronous.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "zc_test.h"

static const struct { off_t off; size_t len; } ranges[] = {
	{ 0, 4096 }, { 4096, 8192 }, { 1, 100 }, { 4095, 2 }, { 100, 4096 },
	{ 12345, 54321 }, { 0, 131072 }, { 65536, 1 << 20 }, { 3 << 20, 1 << 20 },
	{ 777777, 300000 }, { HOLE_START - 100, 8192 }, { HOLE_START, 65536 },
	{ FILE_SIZE - 1000, 4096 }, { FILE_SIZE - 1, 1 }, { FILE_SIZE, 4096 },
	{ FILE_SIZE - 70000, 1 << 20 }, { 5 << 20, 4096 * 3 + 7 },
};

static int check_buffered(const char *path)
{
	char *buf = malloc(2 << 20);
	size_t i;
	int fd, ret = T_PASS;

	for (i = 0; i < sizeof(ranges) / sizeof(ranges[0]) && ret == T_PASS; i++) {
		drop_caches();
		fd = open(path, O_RDONLY);
		CHECK(fd >= 0, "open %s: %s", path, strerror(errno));
		ret = verify_range(fd, buf, ranges[i].off, ranges[i].len, "buffered");
		close(fd);
	}
	/* and the whole file sequentially, through readahead */
	drop_caches();
	fd = open(path, O_RDONLY);
	for (off_t off = 0; ret == T_PASS && off < FILE_SIZE; off += 1 << 20)
		ret = verify_range(fd, buf, off, 1 << 20, "sequential");
	close(fd);
	free(buf);
	return ret;
}

static int check_direct(const char *path)
{
	static const struct { off_t off; size_t len; } dio[] = {
		{ 0, 4096 }, { 4096, 1 << 20 }, { 8192, 65536 }, { HOLE_START, 131072 },
		{ (FILE_SIZE & ~4095u) - 8192, 65536 }, { 1 << 20, 4096 * 5 },
	};
	char *buf;
	size_t i;
	int fd, ret = T_PASS;

	if (posix_memalign((void **)&buf, 4096, 2 << 20))
		return T_FAIL;
	fd = open(path, O_RDONLY | O_DIRECT);
	CHECK(fd >= 0, "open O_DIRECT: %s", strerror(errno));
	for (i = 0; i < sizeof(dio) / sizeof(dio[0]) && ret == T_PASS; i++)
		ret = verify_range(fd, buf, dio[i].off, dio[i].len, "O_DIRECT");
	/* an unaligned user buffer: the request's pages start mid-page */
	if (ret == T_PASS)
		ret = verify_range(fd, buf + 512, 4096, 65536, "O_DIRECT unaligned buffer");
	close(fd);
	free(buf);
	return ret;
}

static int check_mmap(const char *path)
{
	unsigned char *p;
	int fd;

	drop_caches();
	fd = open(path, O_RDONLY);
	CHECK(fd >= 0, "open: %s", strerror(errno));
	p = mmap(NULL, FILE_SIZE, PROT_READ, MAP_SHARED, fd, 0);
	CHECK(p != MAP_FAILED, "mmap: %s", strerror(errno));
	CHECK(!memcmp(p, ref, FILE_SIZE), "mmap contents differ");
	/* the tail of the last page must be zero, not stale memory */
	for (size_t i = FILE_SIZE; i < ((FILE_SIZE + 4095) & ~4095u); i++)
		CHECK(p[i] == 0, "byte %zu past EOF in the last page is %#x", i, p[i]);
	bytes_verified += FILE_SIZE;
	munmap(p, FILE_SIZE);
	close(fd);
	return T_PASS;
}

static int check_concurrent(const char *path, int nr, int iterations)
{
	struct reader_arg args[8];
	pthread_t tids[8];
	int i, ret = T_PASS;

	for (i = 0; i < nr; i++) {
		args[i] = (struct reader_arg){ .path = path, .seed = 1234 + i,
					       .iterations = iterations,
					       .direct = i % 2 };
		pthread_create(&tids[i], NULL, reader_main, &args[i]);
	}
	for (i = 0; i < nr; i++) {
		pthread_join(tids[i], NULL);
		if (args[i].result != T_PASS)
			ret = T_FAIL;
	}
	return ret;
}

/*
 * Start @srv in MF_READ_ZC on mnt and check the buffered and O_DIRECT
 * ranges through it; the server stays up.  @path receives the file's path.
 */
static int serve_and_check_reads(struct server *srv, char *path, size_t len)
{
	int ret = server_start(srv, mnt, backing, MF_READ_ZC);

	CHECK(!ret, "server: %s", strerror(-ret));
	file_path(path, len, mnt);
	ret = check_buffered(path);
	if (ret == T_PASS)
		ret = check_direct(path);
	return ret;
}

static int run_correctness(struct server *srv, const char *what)
{
	char path[300];
	long waiting;
	int ret;

	ret = serve_and_check_reads(srv, path, sizeof(path));
	if (srv->pid <= 0)
		return T_FAIL;	/* no server */
	if (ret == T_PASS)
		ret = check_mmap(path);
	if (ret == T_PASS)
		ret = check_concurrent(path, 8, 40);
	if (ret == T_PASS)
		ret = check_all_zero_copy(mnt, what);
	/*
	 * The server counts a read after the reader has its bytes (after the
	 * CQE, when the kernel answered it): its counters are final only once
	 * it has exited, after answering the readahead still in flight.
	 */
	waiting = server_quiesce(srv);
	CHECK(server_stop(srv) == 0, "server did not exit cleanly");
	CHECK(waiting == 0, "the server left requests unanswered");
	if (ret == T_PASS)
		CHECK(srv->sh->fallbacks == 0, "%llu reads fell back (last error %d)",
		      (unsigned long long)srv->sh->fallbacks, srv->sh->last_lend_error);
	if (ret == T_PASS && srv->cfg.auto_complete) {
		say("  %llu of %llu zero-copy reads answered by the kernel\n",
		    (unsigned long long)srv->sh->auto_completed,
		    (unsigned long long)srv->sh->zc_replies);
		CHECK(srv->sh->auto_completed == srv->sh->zc_replies,
		      "the kernel left complete reads to the server");
	}
	return ret;
}

static int t_correctness(void)
{
	struct server srv = { 0 };

	return run_correctness(&srv, "plain fds");
}

static int t_fixed_files(void)
{
	struct server srv = { .cfg = { .fixed_lender = true, .fixed_target = true } };

	return run_correctness(&srv, "fixed lender and target");
}

static int t_splice_receive(void)
{
	/* libfuse reads requests with splice(2): must work as before */
	struct server srv = { .cfg = { .splice_receive = true } };

	return run_correctness(&srv, "requests read by splice(2)");
}

static int t_direct_backing(void)
{
	struct server srv = { .cfg = { .direct_io_backing = true } };
	char path[300];
	long waiting;
	int ret;

	ret = serve_and_check_reads(&srv, path, sizeof(path));
	if (srv.pid <= 0)
		return T_FAIL;	/* no server */
	waiting = server_quiesce(&srv);
	CHECK(server_stop(&srv) == 0, "server did not exit cleanly");
	CHECK(waiting == 0, "the server left requests unanswered");
	/* O_DIRECT on the backing file may refuse unaligned I/O: fallbacks ok */
	say("  O_DIRECT backing: %llu zero-copy replies, %llu fallbacks\n",
	    (unsigned long long)srv.sh->zc_replies, (unsigned long long)srv.sh->fallbacks);
	if (ret == T_PASS)
		CHECK(srv.sh->zc_replies > 0, "no zero-copy reply");
	return ret;
}

/*
 * (l) IORING_SPLICE_BUF_COMPLETE: the kernel answers a read when its last
 * lending brings the data complete, across the end of the file too, and
 * the server sends nothing (a reply sent anyway gets ENOENT); a lending
 * that leaves a hole, or fails, leaves the answer to the server.
 */
static int auto_complete_checks(bool skip_success)
{
	struct server srv = { .cfg = { .auto_complete = true, .skip_success = skip_success } };
	struct mf_config second;
	struct one_read rd = { .off = 256 << 10, .len = 128 << 10, .direct = true };
	unsigned long long answered;
	struct zc_stats st;
	char path[300];
	long waiting;
	int ret;

	ret = serve_and_check_reads(&srv, path, sizeof(path));
	if (srv.pid <= 0)
		return T_FAIL;	/* no server */
	if (ret == T_PASS)
		ret = check_all_zero_copy(mnt, "kernel-answered reads");
	if (read_stats(mnt, &st))
		st.zc_completed = -1;
	/* the server's counters are final once it has exited (run_correctness) */
	waiting = server_quiesce(&srv);
	CHECK(server_stop(&srv) == 0, "server did not exit cleanly");
	CHECK(waiting == 0, "the server left requests unanswered");
	answered = srv.sh->auto_completed;
	say("  %llu reads answered by the kernel (zc_completed %lld), %llu zero-copy replies, %llu fallbacks\n",
	    answered, st.zc_completed, (unsigned long long)srv.sh->zc_replies,
	    (unsigned long long)srv.sh->fallbacks);
	CHECK(ret == T_PASS, "the readers did not get the right bytes");
	CHECK(answered > 0 && answered == srv.sh->zc_replies && !srv.sh->fallbacks,
	      "not every zero-copy read was answered by the kernel");
	CHECK(st.zc_completed == (long long)answered,
	      "zc_completed %lld, the server saw %llu", st.zc_completed, answered);

	/* the first lending leaves a hole: only the second one answers */
	if (serve_one_read(&srv, MF_READ_OUT_OF_ORDER, &rd, path, sizeof(path),
			   "O_DIRECT 128 KiB, halves back to front"))
		return T_FAIL;
	server_stop(&srv);
	say("  halves lent back to front: CQE flags say answered %d, then %d\n",
	    srv.sh->lend_order_completed[0], srv.sh->lend_order_completed[1]);
	ret = check_read(&rd, rd.len, "O_DIRECT 128 KiB, halves back to front");
	if (ret != T_PASS)
		return ret;
	CHECK(!srv.sh->lend_order_completed[0] && srv.sh->lend_order_completed[1],
	      "want the read answered by the second lending only");

	/* the kernel's answer came first: the server's gets ENOENT */
	second = srv.cfg;
	second.second_reply_delay_ms = SECOND_REPLY_DELAY_MS;
	ret = misbehave_and_read_cfg(&second, MF_READ_SECOND_REPLY,
				     "reply after the kernel answered (errno)",
				     offsetof(struct mf_shared, second_reply_errno), ENOENT);
	/* a failed lending: the server answers (its lie refused, then a copy) */
	if (ret == T_PASS)
		ret = misbehave_and_read_cfg(&srv.cfg, MF_READ_LIE_FAILED_IO,
					     "lent I/O failed (errno of the claim)",
					     offsetof(struct mf_shared, reply_errno), EINVAL);
	return ret;
}

static int t_auto_complete(void)
{
	return auto_complete_checks(false);
}

/*
 * The same with IOSQE_CQE_SKIP_SUCCESS on every lending: a lending the
 * kernel did not answer (the first of two halves, a failed one) must post
 * its CQE, or the server would take the read for answered and the reader
 * would wait for ever.
 */
static int t_skip_success(void)
{
	return auto_complete_checks(true);
}

/* (d) Loans completed in any order: [64K,128K) then [0,64K), reply 128K. */
static int t_out_of_order(void)
{
	struct server srv = { 0 };
	struct one_read rd = { .off = 256 << 10, .len = 128 << 10, .direct = true };
	char path[300], *buf = malloc(1 << 20);
	int ret;

	if (serve_one_read(&srv, MF_READ_OUT_OF_ORDER, &rd, path, sizeof(path),
			   "O_DIRECT 128 KiB")) {
		free(buf);
		return T_FAIL;
	}
	ret = check_read(&rd, rd.len, "O_DIRECT 128 KiB, halves lent back to front");
	if (ret == T_PASS)
		ret = fresh_read(path, buf, 2 << 20, 1 << 20, "buffered 1 MiB, back to front");
	if (server_quiesce(&srv) != 0)
		ret = T_FAIL;
	server_stop(&srv);
	free(buf);
	say("  second half lent: %d, first half: %d; %llu zero-copy replies, %llu refused (%s)\n",
	    (int)srv.sh->lend_order_res[0], (int)srv.sh->lend_order_res[1],
	    (unsigned long long)srv.sh->zc_replies, (unsigned long long)srv.sh->fallbacks,
	    strerror(srv.sh->reply_errno));
	CHECK(ret == T_PASS, "the reader did not get the right bytes");
	CHECK(srv.sh->zc_replies > 0 && srv.sh->fallbacks == 0 && !srv.sh->reply_errno,
	      "the out-of-order zero-copy replies were not all accepted");
	return T_PASS;
}

/*
 * (e) An O_DIRECT preadv() of 16 pieces of 512 bytes: one lending of the
 * whole request places all 8192 bytes (the CQE says so), the reader gets
 * them all.
 */
static int t_subpage_segments(void)
{
	struct server srv = { 0 };
	struct one_read rd = { .off = 40960, .len = 8192, .direct = true, .iovecs = 16 };
	char path[300];

	if (serve_one_read(&srv, MF_READ_ZC, &rd, path, sizeof(path),
			   "O_DIRECT preadv 16 x 512"))
		return T_FAIL;
	server_stop(&srv);
	say("  %llu FUSE_READ, last lending CQE %d, preadv returned %zd\n",
	    (unsigned long long)srv.sh->reads, srv.sh->last_lend_res, rd.n);
	/*
	 * A short O_DIRECT read falls back to a buffered read of the rest,
	 * which hides the short lending from the reader: count them.
	 */
	CHECK(srv.sh->short_lends == 0, "a lending of %u bytes placed only %d (the reader's "
	      "O_DIRECT read came back short and the rest was read buffered)",
	      srv.sh->short_lend_size, srv.sh->short_lend_res);
	CHECK(srv.sh->reads == 1, "%llu FUSE_READ for one O_DIRECT preadv, want 1",
	      (unsigned long long)srv.sh->reads);
	return check_read(&rd, 8192, "O_DIRECT preadv 16 x 512");
}

/*
 * Issued inline, a lending does its file I/O asynchronously: an O_DIRECT
 * read of the loop device completes through ->ki_complete and a buffered
 * read of uncached data waits for its folio (IOCB_WAITQ), both finishing
 * in task work, so the submitter never waits for the I/O and no io-wq
 * worker is needed.  The server's ring is DEFER_TASKRUN: a CQE present when
 * io_uring_submit() returns means the I/O ran inside it.  Every byte the
 * readers get is checked; with -a the kernel answers the reads.
 */
static int t_async_lend(void)
{
	struct server srv = { 0 };
	struct mf_shared *sh;
	char path[300], *buf = NULL;
	int ret, fd;

	if (parking_server(&srv, "async_lend"))
		return T_FAIL;
	ret = server_start(&srv, mnt, backing, MF_READ_ASYNC);
	CHECK(!ret, "server: %s", strerror(-ret));
	file_path(path, sizeof(path), mnt);
	ret = check_buffered(path);
	if (ret == T_PASS)
		ret = check_direct(path);
	if (ret == T_PASS && posix_memalign((void **)&buf, 4096, 1 << 20))
		ret = T_FAIL;
	for (int direct = 0; direct < 2 && ret == T_PASS; direct++) {
		drop_caches();
		fd = open(path, O_RDONLY | (direct ? O_DIRECT : 0));
		CHECK(fd >= 0, "open %s: %s", path, strerror(errno));
		for (off_t off = 0; off < FILE_SIZE && ret == T_PASS; off += 1 << 20)
			ret = verify_range(fd, buf, off, 1 << 20,
					   direct ? "O_DIRECT whole file" : "whole file");
		close(fd);
	}
	free(buf);
	if (ret == T_PASS)
		ret = check_all_zero_copy(mnt, "async lendings");
	if (server_quiesce(&srv) != 0)
		ret = T_FAIL;
	server_stop(&srv);
	sh = srv.sh;
	say("  lendings: %llu O_DIRECT of up to %u bytes (%llu done inside the submit), %llu "
	    "buffered of uncached data (%llu inside); %llu failed (last %d); io-wq workers "
	    "seen after %llu (%d, first after a%s lending)\n",
	    (unsigned long long)sh->async_lends[0], sh->async_dio_max,
	    (unsigned long long)sh->async_in_submit[0],
	    (unsigned long long)sh->async_lends[1], (unsigned long long)sh->async_in_submit[1],
	    (unsigned long long)sh->async_failed, sh->async_error,
	    (unsigned long long)sh->async_iowq, sh->async_iowq_workers,
	    sh->async_iowq_kind ? " buffered" : "n O_DIRECT");
	CHECK(ret == T_PASS, "reads failed");
	CHECK(!sh->async_failed, "%llu lendings failed, last: %s",
	      (unsigned long long)sh->async_failed, strerror(-sh->async_error));
	CHECK(sh->async_lends[0] >= 8 && sh->async_lends[1] >= 8,
	      "too few lendings of a kind to tell: %llu O_DIRECT, %llu buffered",
	      (unsigned long long)sh->async_lends[0], (unsigned long long)sh->async_lends[1]);
	CHECK(!sh->async_in_submit[0],
	      "%llu O_DIRECT lendings completed inside io_uring_submit(): the submitter waited for the I/O",
	      (unsigned long long)sh->async_in_submit[0]);
	CHECK(sh->async_in_submit[1] < sh->async_lends[1],
	      "every buffered lending of uncached data completed inside io_uring_submit()");
	CHECK(!sh->async_iowq,
	      "an io-wq worker existed after %llu lendings: a NOWAIT-capable file's read went to io-wq",
	      (unsigned long long)sh->async_iowq);
	return T_PASS;
}

/*
 * A request's pages are lent in one call of the lender, not one per 16
 * pages (the default size of the direct pipe they travel through).
 */
static int t_lend_calls(void)
{
	struct server srv = { 0 };
	struct one_read rd = { .off = 1 << 20, .len = 1 << 20, .direct = true };
	unsigned long long lendings;
	struct zc_stats st;
	char path[300];
	int ret;

	if (serve_one_read(&srv, MF_READ_ZC, &rd, path, sizeof(path), "O_DIRECT 1 MiB"))
		return T_FAIL;
	ret = read_stats(mnt, &st);
	server_stop(&srv);
	if (check_read(&rd, rd.len, "O_DIRECT 1 MiB"))
		return T_FAIL;
	CHECK(!ret, "zerocopy_stats: %s", strerror(-ret));
	lendings = srv.sh->zc_replies;
	say("  %llu FUSE_READ, %llu lendings, %lld bytes, %lld calls into the lender\n",
	    (unsigned long long)srv.sh->reads, lendings, st.zc_read_bytes, st.zc_lend_calls);
	CHECK(lendings > 0 && st.zc_read_bytes == (long long)rd.len && !srv.sh->fallbacks,
	      "the read was not all zero copy: %llu lendings, %lld bytes, %llu fallbacks",
	      lendings, st.zc_read_bytes, (unsigned long long)srv.sh->fallbacks);
	/* else one call per request would be all there is to see */
	CHECK(st.zc_read_bytes / (long long)lendings > (16 << 12),
	      "requests of %lld bytes: too small to tell", st.zc_read_bytes / (long long)lendings);
	CHECK(st.zc_lend_calls == (long long)lendings,
	      "%lld calls into the lender for %llu lendings, want one each",
	      st.zc_lend_calls, lendings);
	return T_PASS;
}

static const struct zc_subtest subtests[] = {
	{ "correctness", t_correctness, true },
	{ "auto_complete", t_auto_complete, true },
	{ "skip_success", t_skip_success, true },
	{ "fixed_files", t_fixed_files, true },
	{ "splice_receive", t_splice_receive, true },
	{ "direct_backing", t_direct_backing, true },
	/* the v2 lending contract, one per finding of issue 9 */
	{ "out_of_order", t_out_of_order, true },		/* d */
	{ "subpage_segments", t_subpage_segments, true },	/* e */
	{ "lend_calls", t_lend_calls, true },
	{ "async_lend", t_async_lend, true },
};

int main(int argc, char **argv)
{
	return zc_main(argc, argv, subtests, ZC_ARRAY_SIZE(subtests));
}
