// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * zc_kernel_lifetimes: a loan meets io_uring cancellation, FUSE_INTERRUPT,
 * FUSE_NOTIFY_RESEND and an abort while it is out (parked in io-wq): the
 * loan comes back before its CQE, the request is neither answered nor
 * re-delivered while lent, and nothing is left waiting.
 */
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>

#include "zc_test.h"

static void sigusr1_handler(int sig)
{
	(void)sig;
}

/*
 * (g) A READ_SPLICE_BUF cancelled while queued in io-wq has returned its
 * loan by the time its CQE is visible: a copy reply sent on that CQE (by a
 * thread watching the CQ ring) is never refused with EBUSY.
 */
static int t_cancel(void)
{
	struct server srv = { 0 };
	struct one_read rd = { .len = 1 << 20, .direct = true };
	char path[300];
	struct zc_stats s;
	int i, n = 60, ret = T_PASS;

	if (parking_server(&srv, "cancel"))
		return T_FAIL;
	ret = server_start(&srv, mnt, backing, MF_READ_CANCEL);
	CHECK(!ret, "server: %s", strerror(-ret));
	file_path(path, sizeof(path), mnt);
	rd.path = path;
	for (i = 0; i < n && ret == T_PASS; i++) {
		rd.off = (off_t)(i % 7) << 20;
		one_read_start(&rd);
		if (!one_read_wait(&rd, 60)) {
			say("  read %d blocked\n", i);
			ret = T_FAIL;
			break;
		}
		ret = check_read(&rd, rd.len, "O_DIRECT 1 MiB around a cancelled lending");
	}
	if (read_stats(mnt, &s))
		s.zc_lent_pages = -1;
	server_stop(&srv);
	say("  %llu lendings cancelled in io-wq: %llu replies on the CQE refused with EBUSY, "
	    "%llu CQEs not -ECANCELED (last %d), zc_lent_pages right after a CQE: %lld, "
	    "at the end: %lld\n",
	    (unsigned long long)srv.sh->cancels, (unsigned long long)srv.sh->cancel_ebusy,
	    (unsigned long long)srv.sh->cancel_bad_res, srv.sh->cancel_last_res,
	    srv.sh->lent_after_cqe, s.zc_lent_pages);
	if (ret)
		return ret;
	if (check_parked(srv.sh, "cancel"))
		return T_FAIL;
	/* a lending finds its data cached now and then, and is not parked */
	CHECK(srv.sh->cancels * 2 >= (uint64_t)n, "only %llu of %d lendings could be parked",
	      (unsigned long long)srv.sh->cancels, n);
	CHECK(srv.sh->cancel_bad_res == 0, "a cancelled lending's CQE was %d, want -ECANCELED",
	      srv.sh->cancel_last_res);
	CHECK(srv.sh->cancel_ebusy == 0, "%llu replies sent on the CQE got EBUSY: the loan "
	      "was returned after the CQE", (unsigned long long)srv.sh->cancel_ebusy);
	CHECK(srv.sh->lent_after_cqe == 0 && s.zc_lent_pages == 0, "pages still lent");
	return T_PASS;
}

/*
 * (h) A FUSE_INTERRUPT for a request whose pages are lent can be answered
 * (-EAGAIN, then -ENOSYS): the interrupt reply is not a reply to the read.
 */
static int t_interrupt(void)
{
	struct server srv = { 0 };
	struct one_read rd = { .off = 1 << 20, .len = 65536, .direct = true };
	struct sigaction sa = { .sa_handler = sigusr1_handler };
	char path[300];
	bool parked, answered, done;
	int ret;

	if (parking_server(&srv, "interrupt"))
		return T_FAIL;
	sigaction(SIGUSR1, &sa, NULL);	/* no SA_RESTART: the wait is interrupted */
	ret = server_start(&srv, mnt, backing, MF_READ_INTERRUPT);
	CHECK(!ret, "server: %s", strerror(-ret));
	file_path(path, sizeof(path), mnt);
	rd.path = path;
	/* O_DIRECT without FUSE_ASYNC_DIO: a synchronous, interruptible request */
	one_read_start(&rd);
	parked = WAIT_UNTIL(srv.sh->parked, 30);
	if (parked)
		pthread_kill(rd.tid, SIGUSR1);
	answered = WAIT_UNTIL(srv.sh->interrupt_replies > 0, 20);
	done = one_read_wait(&rd, 60);
	server_stop(&srv);
	if (!done)
		pthread_detach(rd.tid);
	say("  %d FUSE_INTERRUPT while lent; replies: -EAGAIN -> %s, -ENOSYS -> %s\n",
	    srv.sh->interrupts, strerror(srv.sh->interrupt_errno[0]),
	    srv.sh->interrupts > 1 ? strerror(srv.sh->interrupt_errno[1]) : "(not sent)");
	if (check_parked(srv.sh, "interrupt"))
		return T_FAIL;
	CHECK(parked && answered, "no FUSE_INTERRUPT reached the server while lent");
	CHECK(done, "the interrupted reader did not return");
	CHECK(srv.sh->interrupt_errno[0] == 0, "the -EAGAIN interrupt reply got %s",
	      strerror(srv.sh->interrupt_errno[0]));
	CHECK(srv.sh->interrupts < 2 || srv.sh->interrupt_errno[1] == 0,
	      "the -ENOSYS interrupt reply got %s", strerror(srv.sh->interrupt_errno[1]));
	return check_read(&rd, rd.len, "interrupted O_DIRECT read");
}

/*
 * (i) FUSE_NOTIFY_RESEND while a request is lent: it is not re-delivered
 * while lent, stays answerable once its loan is back; and an abort while
 * lent (after a resend) frees the reader and leaves nothing waiting.
 */
static int t_resend(void)
{
	struct server srv = { .cfg = { .threads = 2 } };
	struct one_read rd = { .off = 1 << 20, .len = 65536, .direct = true };
	char path[300], dir[200];
	bool parked, freed;
	long waiting;
	int ret;

	if (parking_server(&srv, "resend"))
		return T_FAIL;
	ret = server_start(&srv, resend_mnt, backing, MF_READ_RESEND);
	CHECK(!ret, "server: %s", strerror(-ret));
	file_path(path, sizeof(path), resend_mnt);
	conn_dir(resend_mnt, dir, sizeof(dir));
	rd.path = path;

	/* 1: resend while lent, then let the loan return and reply */
	one_read_start(&rd);
	parked = WAIT_UNTIL(srv.sh->parked, 30);
	/* a re-delivery would come at once: watch for it a while */
	WAIT_UNTIL(srv.sh->resent > 0, 3);
	srv.sh->release = 1;
	freed = one_read_wait(&rd, 60);
	say("  resend while lent: notify %s, %llu re-delivered while lent, %llu after, "
	    "the lender's reply after its loan: %s\n",
	    strerror(srv.sh->notify_errno), (unsigned long long)srv.sh->resent_while_lent,
	    (unsigned long long)srv.sh->resent, strerror(srv.sh->resend_reply_errno));
	ret = T_FAIL;
	if (!parked || !freed)
		say("  FAIL: %s\n", !parked ? "no loan parked" : "the reader did not return");
	else if (srv.sh->notify_errno)
		say("  FAIL: FUSE_NOTIFY_RESEND: %s\n", strerror(srv.sh->notify_errno));
	else if (srv.sh->resent_while_lent)
		say("  FAIL: the lent request was re-delivered while lent\n");
	/*
	 * Once its loan is back, the request is sent again (FUSE_UNIQUE_RESEND),
	 * as every other request was at the resend: the lender's own reply with
	 * the old unique then finds it gone, as a reply to any resent request does.
	 */
	else if (!srv.sh->resent)
		say("  FAIL: the lent request was not sent again after its loan\n");
	else if (srv.sh->resend_reply_errno != ENOENT)
		say("  FAIL: the lender's reply after the resend: %s, want ENOENT\n",
		    strerror(srv.sh->resend_reply_errno));
	else if (check_read(&rd, rd.len, "read across a resend") == T_PASS)
		ret = T_PASS;

	/* 2: resend while lent, abort while lent */
	if (ret == T_PASS) {
		srv.sh->release = 0;
		srv.sh->parked = 0;
		rd.off = 3 << 20;
		one_read_start(&rd);
		parked = WAIT_UNTIL(srv.sh->parked, 30);
		WAIT_UNTIL(srv.sh->resent > 0, 1);
		abort_conn(resend_mnt);
		/*
		 * An O_DIRECT read's end may wait for its loan (the reader's own
		 * pages are being written): let the loan return, then the read
		 * and every request must end.
		 */
		srv.sh->release = 1;
		freed = one_read_wait(&rd, 20);
		if (!rd.done)
			pthread_detach(rd.tid);
		waiting = wait_no_waiting(dir, 20);
		say("  abort while lent after a resend: reader %s, %ld waiting after the loan\n",
		    freed ? "freed" : "still blocked 20 s after the loan's return", waiting);
		if (!parked || !freed || waiting != 0)
			ret = T_FAIL;
	}
	if (server_stop_when_idle(&srv, resend_mnt, dir) != T_PASS)
		ret = T_FAIL;
	return ret;
}

static const struct zc_subtest subtests[] = {
	/* the v2 lending contract, one per finding of issue 9 */
	{ "cancel", t_cancel, true },				/* g */
	{ "interrupt", t_interrupt, true },			/* h */
	{ "resend", t_resend, true },				/* i */
};

int main(int argc, char **argv)
{
	return zc_main(argc, argv, subtests, ZC_ARRAY_SIZE(subtests));
}
