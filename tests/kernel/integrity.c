// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * zc_kernel_integrity: the kernel answers a read only when the server's
 * lendings asked it to (issue 24, Data integrity).  A server mapping one
 * FUSE file onto several backing files (stripes) lends one part asking the
 * kernel to answer and another: mixed_completion (the other does not ask),
 * eof_not_asked (it asks, but does not say its file's end ends the data),
 * eof_asked (it says so).  write_stable: a write-through write's page cache
 * pages do not change while a borrower writes them out.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/mman.h>
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

#define STABLE_LEN	(4 * 4096)
#define STABLE_STORE	'S'

struct stable_writer {
	int fd;
	unsigned char fill;
	pthread_t tid;
	volatile int done;
	int err;
};

static void *stable_writer_main(void *p)
{
	struct stable_writer *w = p;
	unsigned char buf[STABLE_LEN];
	ssize_t n;

	memset(buf, w->fill, sizeof(buf));
	n = pwrite(w->fd, buf, sizeof(buf), 0);
	w->err = n < 0 ? errno : n == (ssize_t)sizeof(buf) ? 0 : EIO;
	__sync_synchronize();
	w->done = 1;
	return NULL;
}

struct stable_store {
	volatile unsigned char *at;
	const struct stable_writer *writer;
	const volatile int *parked;	/* the server's: the write's loan is out */
	pthread_t tid;
	volatile int done;
	int before_write_returned;	/* the store ended while the write was out */
	int during_loan;		/* ... while its loan was out */
};

static void *stable_store_main(void *p)
{
	struct stable_store *s = p;

	*s->at = STABLE_STORE;
	__sync_synchronize();
	s->during_loan = *s->parked;
	s->before_write_returned = !s->writer->done;
	s->done = 1;
	return NULL;
}

/*
 * One round: a buffered write of STABLE_LEN bytes of @fill at 0 through the
 * page cache (write-through) is lent to a WRITE_SPLICE_BUF parked on the
 * loop device; while it is parked, another thread stores STABLE_STORE into
 * page @page through a shared mapping, one already writable and dirty if
 * @mapped_dirty, else one the store faults in.  A copying server has the
 * write's bytes as they were when it read the request, so the device must
 * hold @fill only: a page a borrower is writing out must not change under
 * it (with md raid1 or dm-integrity below, that is corruption).
 * The store is kept: the file has it afterwards.
 */
static int stable_round(int r, bool mapped_dirty)
{
	const char *what = mapped_dirty ? "a writable mapping" : "a store that faults";
	struct server srv = { .cfg = { .slow_ms = 1000, .writable = true,
				       .accept_zc_write = true } };
	unsigned char dev[STABLE_LEN], back;
	struct stable_writer w = { .fill = (unsigned char)('a' + r % 26) };
	struct stable_store st = { .writer = &w };
	size_t page = 1 + (size_t)r % 3, at = page * 4096 + 7 * (size_t)r % 4000, i, bad;
	volatile unsigned char *map;
	char path[300];
	bool parked;
	int ret;

	if (parked_write_server(&srv, what))
		return T_FAIL;
	ret = server_start(&srv, mnt, wbacking, MF_READ_ZC);
	CHECK(!ret, "server: %s", strerror(-ret));
	file_path(path, sizeof(path), mnt);
	w.fd = open(path, O_RDWR | O_CLOEXEC);
	CHECK(w.fd >= 0, "open %s: %s", path, strerror(errno));
	map = mmap(NULL, STABLE_LEN, PROT_READ | PROT_WRITE, MAP_SHARED, w.fd, 0);
	CHECK(map != MAP_FAILED, "mmap: %s", strerror(errno));
	if (mapped_dirty)
		map[at] = map[at];
	st.at = map + at;
	st.parked = &srv.sh->parked;
	/* write-back may write the stored page out (to the backing file) */
	srv.sh->park_no_cache_writes = 1;
	srv.sh->write_mode = MF_WRITE_PARKED;
	CHECK(!pthread_create(&w.tid, NULL, stable_writer_main, &w), "writer thread");
	parked = WAIT_UNTIL(srv.sh->parked || w.done, 60) && srv.sh->parked;
	if (parked)
		CHECK(!pthread_create(&st.tid, NULL, stable_store_main, &st), "store thread");
	/* the threads use this frame: if an abort does not end them, nothing can */
	if (!WAIT_UNTIL(w.done, 60)) {
		say("  FAIL %s: the write never returned\n", what);
		abort_conn(mnt);
		if (!WAIT_UNTIL(w.done, 30))
			zc_wedged(__func__);
		ret = T_FAIL;
	}
	if (parked && !WAIT_UNTIL(st.done, 60)) {
		say("  FAIL %s: the store never ended\n", what);
		abort_conn(mnt);
		if (!WAIT_UNTIL(st.done, 30))
			zc_wedged(__func__);
		ret = T_FAIL;
	}
	/* before anything can write the stored page back */
	if (!ret)
		ret = read_direct(srv.cfg.loop_path, dev, sizeof(dev)) ? T_FAIL : T_PASS;
	srv.sh->write_mode = MF_WRITE_ZC;
	back = map[at];
	munmap((void *)map, STABLE_LEN);
	close(w.fd);
	pthread_join(w.tid, NULL);
	if (parked)
		pthread_join(st.tid, NULL);
	if (server_quiesce(&srv))
		ret = T_FAIL;
	server_stop(&srv);
	if (ret)
		return ret;
	for (i = 0, bad = 0; i < sizeof(dev); i++)
		bad += dev[i] != w.fill;
	say("  round %d, %s: write %s; store at %zu ended %s the write returned%s; "
	    "the device holds %zu bytes that are not the write's%s; %llu write-back "
	    "writes\n", r, what, parked ? "parked" : "not lent", at,
	    st.before_write_returned ? "before" : "after",
	    st.during_loan ? ", while its loan was out" : "", bad,
	    bad && dev[at] == STABLE_STORE ? " (the store is among them)" : "",
	    (unsigned long long)srv.sh->cache_writes);
	CHECK(!w.err, "%s: the write failed: %s", what, strerror(w.err));
	CHECK(parked, "%s: the write could not be parked", what);
	CHECK(!st.during_loan, "%s: a store into a lent page went through while a borrower "
	      "was to write it out", what);
	CHECK(!bad, "%s: a page changed while a borrower wrote it out: the device has "
	      "%#x at %zu, the write was %#x", what, dev[at], at, w.fill);
	CHECK(back == STABLE_STORE, "%s: the store was lost (%#x)", what, back);
	return T_PASS;
}

/*
 * Issue 24: the page cache pages of a write-through FUSE_WRITE were lent
 * unlocked, so a store through a shared mapping could change a page while
 * the borrower wrote it out.  -r N: N/10 rounds (at least 1) of each kind.
 */
static int t_write_stable(void)
{
	static const char *flusher = "/proc/sys/vm/dirty_writeback_centisecs";
	char initial[16] = "";
	FILE *f = fopen(flusher, "r");
	int r, ret = T_PASS;

	/* no periodic write-back of the stored page before the device is read */
	CHECK(f && fgets(initial, sizeof(initial), f), "%s: %s", flusher, strerror(errno));
	fclose(f);
	initial[strcspn(initial, "\n")] = 0;
	CHECK(!write_file(flusher, "0"), "set %s", flusher);
	for (r = 0; r < tenth_rounds() && ret == T_PASS; r++) {
		ret = stable_round(r, false);
		if (ret == T_PASS)
			ret = stable_round(r, true);
	}
	write_file(flusher, initial);
	return ret;
}

static const struct zc_subtest subtests[] = {
	{ "mixed_completion", t_mixed_completion, true },
	{ "eof_not_asked", t_eof_not_asked, true },
	{ "eof_asked", t_eof_asked, true },
	{ "write_stable", t_write_stable, true },
};

int main(int argc, char **argv)
{
	return zc_main(argc, argv, subtests, ZC_ARRAY_SIZE(subtests));
}
