// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * zc_kernel_integrity: the kernel answers a read only when the server's
 * lendings asked it to (issue 24, Data integrity).  A server mapping one
 * FUSE file onto several backing files (stripes) lends one part asking the
 * kernel to answer and another: mixed_completion (the other does not ask),
 * eof_not_asked (it asks, but does not say its file's end ends the data),
 * eof_asked (it says so).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "zc_test.h"

/* -r N: N/10 reads (at least 1) */
static int tenth_rounds(void)
{
	return rounds / 10 ? rounds / 10 : 1;
}

enum mixed_expect {
	MIXED_SERVER_ANSWERS,	/* the kernel must leave the read to the server */
	MIXED_KERNEL_ANSWERS,	/* the kernel answers it short, at the stripe's end */
};

/*
 * Lend [0, 64K) of each read from the backing file with COMPLETE and EOF,
 * [64K, 128K) from @stripe (10 KiB) with
 * @stripe_ioprio, and check who answered and what the reader got.  The
 * stripe file holds the backing file's bytes [64K, 74K), so a read the
 * kernel answers short has the right bytes too.  @reads reads where the
 * server answers; one where the kernel does (the short answer shrinks the
 * file's cached size).
 */
static int mixed_run(const char *stripe, unsigned int stripe_ioprio,
		     enum mixed_expect expect, int reads)
{
	struct server srv = { .cfg = { .threads = 1 } };
	int r, nr = expect == MIXED_KERNEL_ANSWERS ? 1 : reads;
	int ret;
	char path[300];
	struct stat st0, st1;

	srv.cfg.stripe_path = stripe;
	srv.cfg.stripe_ioprio = stripe_ioprio;
	/* an O_DIRECT read of a file without FOPEN_DIRECT_IO that ends short
	 * reads the rest through the page cache: one FUSE_READ per read here */
	srv.cfg.open_direct_io = expect == MIXED_KERNEL_ANSWERS;
	ret = server_start(&srv, mnt, backing, MF_READ_MIXED);
	CHECK(!ret, "server: %s", strerror(-ret));
	file_path(path, sizeof(path), mnt);
	ret = T_PASS;
	if (stat(path, &st0))
		ret = T_FAIL;
	for (r = 0; r < nr && ret == T_PASS; r++) {
		struct one_read rd = { .path = path, .off = (off_t)r << 20, .len = 131072,
				       .direct = true };
		bool answered;

		if (one_read_start(&rd) || !one_read_wait(&rd, 60)) {
			say("  read %d did not return\n", r);
			ret = T_FAIL;
			break;
		}
		answered = srv.sh->mixed_answered != 0;
		say("  read %d: %llu FUSE_READs (%llu with the stripe short), halves lent "
		    "%d%s%s / %d%s%s, copy reply: %s; kernel answered %llu, replies refused "
		    "%llu, reader got %zd bytes\n", r, (unsigned long long)srv.sh->mixed_reads,
		    (unsigned long long)srv.sh->mixed_short, srv.sh->mixed_res[0],
		    srv.sh->mixed_completed[0] ? " (kernel answered)" : "",
		    srv.sh->mixed_cqe_flags[0] & FUSEZC_CQE_F_SPLICE_BUF_EOF ? " (EOF)" : "",
		    srv.sh->mixed_res[1],
		    srv.sh->mixed_completed[1] ? " (kernel answered)" : "",
		    srv.sh->mixed_cqe_flags[1] & FUSEZC_CQE_F_SPLICE_BUF_EOF ? " (EOF)" : "",
		    answered ? "none" : strerror(srv.sh->mixed_reply_errno),
		    (unsigned long long)srv.sh->mixed_answered,
		    (unsigned long long)srv.sh->mixed_refused, rd.n);
		if (srv.sh->mixed_failed || !srv.sh->mixed_short) {
			say("  FAIL: %llu lendings failed, %llu short stripes (want 0 and > 0)\n",
			    (unsigned long long)srv.sh->mixed_failed,
			    (unsigned long long)srv.sh->mixed_short);
			ret = T_FAIL;
		} else if (!(srv.sh->mixed_cqe_flags[1] & FUSEZC_CQE_F_SPLICE_BUF_EOF)) {
			say("  FAIL: the stripe's CQE lacks IORING_CQE_F_SPLICE_BUF_EOF\n");
			ret = T_FAIL;
		} else if (srv.sh->mixed_cqe_flags[0] & FUSEZC_CQE_F_SPLICE_BUF_EOF) {
			say("  FAIL: a lending that was not short has IORING_CQE_F_SPLICE_BUF_EOF\n");
			ret = T_FAIL;
		} else if (expect == MIXED_SERVER_ANSWERS && answered) {
			say("  FAIL: the kernel answered a read whose stripe lending did not "
			    "say its end ends the data\n");
			ret = T_FAIL;
		} else if (expect == MIXED_KERNEL_ANSWERS && !srv.sh->mixed_completed[1]) {
			say("  FAIL: the kernel did not answer a read whose lendings all asked "
			    "it to, the last one ending at its file's end with EOF\n");
			ret = T_FAIL;
		} else if (!answered && srv.sh->mixed_refused) {
			say("  FAIL: the server's reply was refused: %s\n",
			    strerror(srv.sh->mixed_reply_errno));
			ret = T_FAIL;
		} else if (check_read(&rd, expect == MIXED_KERNEL_ANSWERS ?
				      65536 + 10240 : rd.len, "striped read") != T_PASS) {
			ret = T_FAIL;
		}
	}
	if (expect == MIXED_SERVER_ANSWERS &&
	    (stat(path, &st1) || st1.st_size != st0.st_size)) {
		say("  FAIL: the file's size went from %lld to %lld\n", (long long)st0.st_size,
		    (long long)st1.st_size);
		ret = T_FAIL;
	}
	server_stop(&srv);
	return ret;
}

/*
 * A 10 KiB stripe file holding the backing file's bytes [64K, 74K), lent
 * with @stripe_ioprio into [64K, 128K) of each read.
 */
static int stripe_file_run(unsigned int stripe_ioprio, enum mixed_expect expect)
{
	char stripe[200], buf[10240];
	int fd, bfd, ret;

	snprintf(stripe, sizeof(stripe), "%s/stripe10k", workdir);
	bfd = open(backing, O_RDONLY | O_CLOEXEC);
	CHECK(bfd >= 0 && pread(bfd, buf, sizeof(buf), 65536) == (ssize_t)sizeof(buf),
	      "backing file: %s", strerror(errno));
	close(bfd);
	fd = open(stripe, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);
	CHECK(fd >= 0 && write(fd, buf, sizeof(buf)) == (ssize_t)sizeof(buf), "stripe file");
	close(fd);
	ret = mixed_run(stripe, stripe_ioprio, expect,
			expect == MIXED_KERNEL_ANSWERS ? 1 : tenth_rounds());
	unlink(stripe);
	return ret;
}

/*
 * The repro: [0, 64K) lent from the backing file with
 * IORING_SPLICE_BUF_COMPLETE, [64K, 128K) from a 10 KiB stripe file
 * without it.  On v6 the second CQE carried IORING_CQE_F_LENDER_COMPLETED
 * and the reader got 74 KiB (the backing EOF of the stripe ended the
 * read).  Now the second CQE must not say so (it says the stripe's file
 * ended: IORING_CQE_F_SPLICE_BUF_EOF), the server's copy reply must be
 * accepted, the reader must get 128 KiB of the right bytes, and the file's
 * size must stay.
 */
static int t_mixed_completion(void)
{
	return stripe_file_run(0, MIXED_SERVER_ANSWERS);
}

/*
 * Both lendings ask the kernel to answer, but the stripe's does not say
 * that its file's end ends the data (no IORING_SPLICE_BUF_EOF): the end of
 * one stripe is not the end of the FUSE file.  Before the flag existed the
 * kernel answered with 74 KiB and the file's cached size shrank.
 */
static int t_eof_not_asked(void)
{
	return stripe_file_run(FUSEZC_SPLICE_BUF_COMPLETE, MIXED_SERVER_ANSWERS);
}

/*
 * With IORING_SPLICE_BUF_EOF the same read ends at the stripe's end: the
 * kernel answers it with 74 KiB (the file is FOPEN_DIRECT_IO, so that the
 * short read is the reader's whole read).
 */
static int t_eof_asked(void)
{
	return stripe_file_run(FUSEZC_SPLICE_BUF_COMPLETE | FUSEZC_SPLICE_BUF_EOF,
			       MIXED_KERNEL_ANSWERS);
}

static const struct zc_subtest subtests[] = {
	{ "mixed_completion", t_mixed_completion, true },
	{ "eof_not_asked", t_eof_not_asked, true },
	{ "eof_asked", t_eof_asked, true },
};

int main(int argc, char **argv)
{
	return zc_main(argc, argv, subtests, ZC_ARRAY_SIZE(subtests));
}
