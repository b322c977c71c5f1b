// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * zc_kernel_integrity: the kernel answers a read only when the server's
 * lendings asked it to (issue 24, Data integrity).  mixed_completion: a
 * server mapping one FUSE file onto several backing files lends one part
 * asking the kernel to answer and another not: the kernel must leave the
 * read to the server.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "zc_test.h"

/*
 * The repro: [0, 64K) lent from the backing file with
 * IORING_SPLICE_BUF_COMPLETE, [64K, 128K) from a 10 KiB stripe file
 * without it.  On v6 the second CQE carried IORING_CQE_F_LENDER_COMPLETED
 * and the reader got 74 KiB (the backing EOF of the stripe ended the
 * read).  Now the second CQE must not say so, the server's copy reply must
 * be accepted, the reader must get 128 KiB of the right bytes, and the
 * file's size must stay.  -r N: N/10 reads (at least 1).
 */
static int t_mixed_completion(void)
{
	struct server srv = { .cfg = { .threads = 1 } };
	char path[300], stripe[200];
	int r, nr = rounds / 10 ? rounds / 10 : 1, ret, fd;
	struct stat st0, st1;
	char buf[10240];

	snprintf(stripe, sizeof(stripe), "%s/stripe10k", workdir);
	memset(buf, 'x', sizeof(buf));
	fd = open(stripe, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);
	CHECK(fd >= 0 && write(fd, buf, sizeof(buf)) == (ssize_t)sizeof(buf), "stripe file");
	close(fd);
	srv.cfg.stripe_path = stripe;
	ret = server_start(&srv, mnt, backing, MF_READ_MIXED);
	CHECK(!ret, "server: %s", strerror(-ret));
	file_path(path, sizeof(path), mnt);
	ret = T_PASS;
	if (stat(path, &st0))
		ret = T_FAIL;
	for (r = 0; r < nr && ret == T_PASS; r++) {
		struct one_read rd = { .path = path, .off = (off_t)r << 20, .len = 131072,
				       .direct = true };

		if (one_read_start(&rd) || !one_read_wait(&rd, 60)) {
			say("  read %d did not return\n", r);
			ret = T_FAIL;
			break;
		}
		say("  read %d: %llu FUSE_READs (%llu with the stripe short), last halves lent "
		    "%d%s / %d%s, copy reply: %s; kernel answered %llu, replies refused %llu, "
		    "reader got %zd bytes\n", r, (unsigned long long)srv.sh->mixed_reads,
		    (unsigned long long)srv.sh->mixed_short, srv.sh->mixed_res[0],
		    srv.sh->mixed_completed[0] ? " (kernel answered)" : "", srv.sh->mixed_res[1],
		    srv.sh->mixed_completed[1] ? " (kernel answered)" : "",
		    strerror(srv.sh->mixed_reply_errno),
		    (unsigned long long)srv.sh->mixed_answered,
		    (unsigned long long)srv.sh->mixed_refused, rd.n);
		if (srv.sh->mixed_failed || !srv.sh->mixed_short) {
			say("  FAIL: %llu lendings failed, %llu short stripes (want 0 and > 0)\n",
			    (unsigned long long)srv.sh->mixed_failed,
			    (unsigned long long)srv.sh->mixed_short);
			ret = T_FAIL;
		} else if (srv.sh->mixed_answered) {
			say("  FAIL: the kernel answered a read whose second lending did not ask it to\n");
			ret = T_FAIL;
		} else if (srv.sh->mixed_refused) {
			say("  FAIL: the server's reply was refused: %s\n",
			    strerror(srv.sh->mixed_reply_errno));
			ret = T_FAIL;
		} else if (check_read(&rd, rd.len, "striped read") != T_PASS) {
			ret = T_FAIL;
		}
	}
	if (stat(path, &st1) || st1.st_size != st0.st_size) {
		say("  FAIL: the file's size went from %lld to %lld\n", (long long)st0.st_size,
		    (long long)st1.st_size);
		ret = T_FAIL;
	}
	server_stop(&srv);
	unlink(stripe);
	return ret;
}

static const struct zc_subtest subtests[] = {
	{ "mixed_completion", t_mixed_completion, true },
};

int main(int argc, char **argv)
{
	return zc_main(argc, argv, subtests, ZC_ARRAY_SIZE(subtests));
}
