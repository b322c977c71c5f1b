// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * zc_kernel_lifetimes: a loan meets io_uring cancellation, FUSE_INTERRUPT,
 * FUSE_NOTIFY_RESEND and an abort while it is out (parked in io-wq): the
 * loan comes back before its CQE, the request is neither answered nor
 * re-delivered while lent, and nothing is left waiting.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>

#include "zc_test.h"

static void sigusr1_handler(int sig)
{
	(void)sig;
}

/* SIGSTOP @pid (a child) and wait until it is stopped. */
static bool stop_child(pid_t pid)
{
	int status;

	return kill(pid, SIGSTOP) == 0 && waitpid(pid, &status, WUNTRACED) == pid &&
	       WIFSTOPPED(status);
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
	else if (!srv.sh->resent_zc || srv.sh->resent_old_name_reached)
		say("  FAIL: the resent read %s (its lending: %d)\n",
		    srv.sh->resent_old_name_reached ? "was reached by a lending under its old unique" :
		    "could not be lent", srv.sh->resent_lend_res);
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

/*
 * (j) An abort frees an O_DIRECT reader whose loan was parked in io-wq
 * when the server was stopped (SIGSTOP): the stop interrupts the gate's
 * open(2), so the lending's I/O runs and completes into a server that
 * cannot run its task work; the reader must get its error with the server
 * still stopped (v10: blocked until SIGCONT).  A round is left out if the
 * park ended before the stop.
 */
static int t_abort_stopped_server(void)
{
	struct server srv = { .cfg = { .slow_ms = 15000 } };
	int i, n = rounds < 3 ? rounds : 3, tested = 0, ret = T_PASS;
	char path[300], dir[200];

	if (parking_server(&srv, "abort_stopped_server"))
		return T_FAIL;
	for (i = 0; i < n && ret == T_PASS; i++) {
		struct one_read rd = { .off = (off_t)(i + 1) << 20, .len = 65536,
				       .direct = true };
		bool parked, stopped = false, freed = false;
		struct zc_stats s = { 0 };
		long waiting = -1;

		ret = server_start(&srv, mnt, backing, MF_READ_PARKED);
		CHECK(!ret, "server: %s", strerror(-ret));
		file_path(path, sizeof(path), mnt);
		conn_dir(mnt, dir, sizeof(dir));
		rd.path = path;
		one_read_start(&rd);
		parked = WAIT_UNTIL(srv.sh->parked, 30);
		stopped = parked && stop_child(srv.pid);
		if (stopped && srv.sh->parked) {
			tested++;
			abort_conn(mnt);
			freed = one_read_wait(&rd, 20);
			waiting = wait_no_waiting(dir, 5);
			read_stats_dir(dir, &s);
			say("  round %d: abort with the server stopped and its loan in io-wq: "
			    "reader %s (%s), %ld waiting, zc_lent_pages %lld\n", i,
			    freed ? "freed" : "still blocked 20 s later",
			    freed ? (rd.n < 0 ? strerror(rd.err) : "no error") : "-", waiting,
			    s.zc_lent_pages);
			if (!freed || waiting != 0)
				ret = T_FAIL;
			else if (rd.n >= 0 && !rd.right)
				ret = T_FAIL;
		} else {
			say("  round %d: %s; not counted\n", i,
			    !parked ? "no loan parked" : !stopped ? "the server did not stop" :
			    "the park ended before the server stopped");
			if (!parked)
				ret = T_FAIL;
		}
		if (stopped)
			kill(srv.pid, SIGCONT);
		if (!freed) {
			abort_conn(mnt);
			if (!one_read_wait(&rd, 60))
				zc_wedged("abort_stopped_server");
		}
		if (server_stop_when_idle(&srv, mnt, dir) != T_PASS)
			ret = T_FAIL;
	}
	CHECK(ret == T_PASS, "an aborted O_DIRECT reader waited for a stopped server");
	CHECK(tested > 0, "no round had the server stopped with its loan parked");
	return T_PASS;
}

/*
 * (k) The same for a loan whose I/O waits for a folio (IOCB_WAITQ): the
 * lending is a buffered read of uncached data from a loop device over a
 * file of a second FUSE mount whose server is stopped.  The outer server
 * is stopped next, then the inner one let go: the folio is unlocked, and
 * the read would be issued again by task work of the stopped server.  An
 * abort must free the O_DIRECT reader with the outer server still stopped.
 */
static int abort_stopped_waitq_round(int r)
{
	struct server inner = { 0 }, outer = { .cfg = { .threads = 2 } };
	/* not sector aligned: MF_READ_ASYNC lends it buffered, not O_DIRECT */
	struct one_read rd = { .off = ((off_t)(r % 4 + 1) << 20) + 100, .len = 65536,
			       .direct = true };
	char path[300], dir[200], inner_dir[200], loop[64];
	bool lent, stopped = false, freed = false;
	struct zc_stats s = { 0 };
	long waiting = -1;
	int ret, loop_fd;

	ret = start_inner_mount(&inner);
	CHECK(!ret, "round %d: inner server: %s", r, strerror(-ret));
	conn_dir(slow_mnt, inner_dir, sizeof(inner_dir));
	/* detached when the last fd closes: this one and the outer server's */
	loop_fd = loop_attach(slow_backing, loop, sizeof(loop));
	if (loop_fd < 0) {
		server_stop(&inner);
		CHECK(0, "round %d: loop device over %s: %s", r, slow_backing,
		      strerror(-loop_fd));
	}
	outer.cfg.loop_path = loop;
	ret = server_start(&outer, mnt, backing, MF_READ_ASYNC);
	close(loop_fd);
	if (ret) {
		server_stop(&inner);
		CHECK(0, "round %d: outer server: %s", r, strerror(-ret));
	}
	file_path(path, sizeof(path), mnt);
	conn_dir(mnt, dir, sizeof(dir));
	rd.fd = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);
	drop_caches();
	kill(inner.pid, SIGSTOP);
	rd.path = path;
	if (rd.fd > 0)
		one_read_start(&rd);
	lent = WAIT_UNTIL(!read_stats_dir(dir, &s) && s.zc_lent_pages > 0, 20);
	stopped = lent && stop_child(outer.pid);
	kill(inner.pid, SIGCONT);
	if (stopped) {
		/* the folio's I/O ends; its wake queues task work of the stopped server */
		wait_no_waiting(inner_dir, 10);
		sleep_ms(500);
		abort_conn_dir(dir);
		freed = one_read_wait(&rd, 20);
		waiting = wait_no_waiting(dir, 5);
		say("  round %d: abort with the server stopped, its lending waiting for a "
		    "folio: reader %s (%s), %ld waiting\n", r,
		    freed ? "freed" : "still blocked 20 s later",
		    freed ? (rd.n < 0 ? strerror(rd.err) : "no error") : "-", waiting);
		kill(outer.pid, SIGCONT);
	}
	abort_conn_dir(dir);
	if (!freed && rd.fd > 0 && !one_read_wait(&rd, 60))
		zc_wedged("abort_stopped_waitq");
	if (rd.fd > 0)
		close(rd.fd);
	if (server_stop_when_idle(&outer, mnt, dir) != T_PASS)
		ret = -EBUSY;
	server_stop(&inner);
	CHECK(rd.fd > 0, "round %d: open %s: %s", r, path, strerror(errno));
	CHECK(lent, "round %d: no pages lent to the stalled loop device", r);
	CHECK(stopped, "round %d: the outer server did not stop", r);
	CHECK(outer.sh->async_lends[1] > 0, "round %d: the lending was not buffered", r);
	CHECK(freed, "round %d: an aborted O_DIRECT reader waited for a stopped server", r);
	CHECK(waiting == 0, "round %d: %ld requests still waiting after the abort", r, waiting);
	CHECK(rd.n < 0 || rd.right, "round %d: wrong bytes", r);
	CHECK(!ret, "round %d: the outer mount did not become idle", r);
	return T_PASS;
}

static int t_abort_stopped_waitq(void)
{
	int r, n = rounds < 3 ? rounds : 3;

	for (r = 0; r < n; r++)
		if (abort_stopped_waitq_round(r))
			return T_FAIL;
	return T_PASS;
}

static const struct zc_subtest subtests[] = {
	/* the v2 lending contract, one per finding of issue 9 */
	{ "cancel", t_cancel, true },				/* g */
	{ "interrupt", t_interrupt, true },			/* h */
	{ "resend", t_resend, true },				/* i */
	{ "abort_stopped_server", t_abort_stopped_server, true },	/* j */
	{ "abort_stopped_waitq", t_abort_stopped_waitq, true },	/* k */
};

int main(int argc, char **argv)
{
	return zc_main(argc, argv, subtests, ZC_ARRAY_SIZE(subtests));
}
