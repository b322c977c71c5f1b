// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * zc_kernel_faults: kill -9 of the server and fusectl abort of its
 * connection while loans are out (parked, or with their I/O in flight
 * asynchronously; for reads and for writes), and an abort while the lent
 * I/O waits for a stopped FUSE server: readers never see a wrong byte,
 * acknowledged writes are on the device, every loan comes back.  -r sets
 * the rounds of each loop.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zc_test.h"

/*
 * Kill the server, or abort the connection, while zero-copy reads are in
 * flight.  MF_READ_PARKED: each loan stays out 30 ms, parked in io-wq (a
 * slow backing store); MF_READ_ASYNC: the loans are out while their file
 * I/O is in flight asynchronously (an O_DIRECT bio, or a folio being read
 * with the lending waiting for it), for as long as the loop device takes.
 */
/* The fault loops' strike: wait (bounded) until a loan is out; whether one is. */
static bool fault_wait_lent(const char *dir)
{
	struct zc_stats s = { 0 };

	for (int i = 0; i < 200; i++) {
		if (!read_stats_dir(dir, &s) && s.zc_lent_pages > 0)
			return true;
		sleep_ms(2);
	}
	return false;
}

/* kill -9 the server of @srv, or abort its connection (fusectl @dir). */
static int fault_strike(struct server *srv, const char *dir, bool abort_conn, int r)
{
	char f[256];

	if (!abort_conn) {
		kill(srv->pid, SIGKILL);
		return T_PASS;
	}
	snprintf(f, sizeof(f), "%s/abort", dir);
	CHECK(!write_file(f, "1"), "round %d: abort: %s", r, strerror(errno));
	return T_PASS;
}

/* After the strike: every loan comes back, nothing stays lent; the server goes. */
static int fault_settle(struct server *srv, const char *dir, bool abort_conn, int r)
{
	struct zc_stats s = { 0 };
	int i, status;

	for (i = 0; i < 500; i++) {
		if (read_stats_dir(dir, &s) || s.zc_lent_pages == 0)
			break;
		sleep_ms(10);
	}
	CHECK(s.zc_lent_pages == 0, "round %d: %lld pages still lent", r, s.zc_lent_pages);
	if (abort_conn) {
		server_stop(srv);
	} else {
		waitpid(srv->pid, &status, 0);
		srv->pid = -1;
		umount2(mnt, MNT_DETACH);
	}
	srv->pid = 0;
	return T_PASS;
}

static int fault_loop(bool abort_conn, enum mf_read_mode mode)
{
	const char *what = abort_conn ? "abort" : "kill -9";
	struct server srv = { .cfg = { .threads = 4, .slow_ms = 30 } };
	int r, in_flight = 0, ret;
	char path[300], dir[200];
	double t0 = now();

	/* the loans stay out 30 ms each, parked in io-wq: a slow backing store */
	if (parking_server(&srv, what))
		return T_FAIL;
	file_path(path, sizeof(path), mnt);

	for (r = 0; r < rounds; r++) {
		struct reader_arg args[4];
		pthread_t tids[4];
		volatile int stop = 0;
		int i;

		ret = server_start(&srv, mnt, backing, mode);
		CHECK(!ret, "round %d: server: %s", r, strerror(-ret));
		CHECK(!conn_dir(mnt, dir, sizeof(dir)), "conn dir");
		for (i = 0; i < 4; i++) {
			args[i] = (struct reader_arg){ .path = path, .seed = r * 7 + i,
				.iterations = 1000, .direct = i & 1,
				.tolerate_errors = true, .stop = &stop };
			pthread_create(&tids[i], NULL, reader_main, &args[i]);
		}
		/* wait until a loan is out, then strike */
		in_flight += fault_wait_lent(dir);
		sleep_ms(rand() % 20);
		if (fault_strike(&srv, dir, abort_conn, r))
			return T_FAIL;
		stop = 1;
		for (i = 0; i < 4; i++) {
			pthread_join(tids[i], NULL);
			CHECK(args[i].result == T_PASS, "round %d: a reader saw wrong bytes", r);
		}
		if (fault_settle(&srv, dir, abort_conn, r))
			return T_FAIL;
		if (verbose)
			say("  round %d done\n", r);
	}
	say("  %s%s: %d rounds, %d with lent pages in flight at the strike, %.1f s, 0 pages left lent\n",
	    what, mode == MF_READ_ASYNC ? " (asynchronous lendings)" : "", rounds, in_flight,
	    now() - t0);
	/* an asynchronous loan is out for a moment only: some rounds must catch one */
	CHECK(in_flight * (mode == MF_READ_ASYNC ? 10 : 2) >= rounds,
	      "only %d of %d rounds had lending in flight", in_flight, rounds);
	return T_PASS;
}

static int t_kill_loop(void) { return fault_loop(false, MF_READ_PARKED); }
static int t_abort_loop(void) { return fault_loop(true, MF_READ_PARKED); }

static int t_async_faults(void)
{
	if (fault_loop(false, MF_READ_ASYNC))
		return T_FAIL;
	return fault_loop(true, MF_READ_ASYNC);
}

/*
 * (b) The outer server lends into reads of a file on a second FUSE mount
 * whose server is stopped (SIGSTOP).  A fusectl abort of the outer
 * connection must free an O_DIRECT reader within seconds, not when the
 * stopped server's I/O returns.
 */
static int abort_stopped_round(int r, double *freed_after)
{
	struct server inner = { 0 }, outer = { .cfg = { .threads = 4 } };
	struct one_read rd = { .len = 1 << 20, .direct = true };
	char path[300], dir[200], inner_dir[200];
	struct zc_stats s = { 0 };
	bool lending, freed;
	double t0;
	long waiting;
	int ret;

	ret = start_inner_mount(&inner);
	CHECK(!ret, "round %d: inner server: %s", r, strerror(-ret));
	ret = server_start(&outer, mnt, slow_backing, MF_READ_ZC);
	if (ret) {
		server_stop(&inner);
		CHECK(0, "round %d: outer server: %s", r, strerror(-ret));
	}
	file_path(path, sizeof(path), mnt);
	conn_dir(mnt, dir, sizeof(dir));
	conn_dir(slow_mnt, inner_dir, sizeof(inner_dir));
	/* opened before the stop, so that only the read meets the stopped server */
	rd.fd = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);
	drop_caches();
	kill(inner.pid, SIGSTOP);
	rd.path = path;
	rd.off = (off_t)(r % 6) << 20;
	if (rd.fd > 0)
		one_read_start(&rd);
	/* the outer server has the request and is reading the stopped mount */
	lending = WAIT_UNTIL(outer.sh->reads > 0 &&
			     ((!read_stats_dir(dir, &s) && s.zc_lent_pages > 0) ||
			      outer.sh->fallbacks > 0), 20);
	t0 = now();
	abort_conn_dir(dir);
	freed = one_read_wait(&rd, 20);
	*freed_after = now() - t0;

	/* clean up whatever happened: the inner I/O ends by abort */
	abort_conn_dir(inner_dir);
	kill(inner.pid, SIGKILL);
	kill(inner.pid, SIGCONT);
	if (!freed && rd.fd > 0)
		one_read_wait(&rd, 20);	/* the abort of the inner mount ends it */
	if (!rd.done && rd.fd > 0)
		pthread_detach(rd.tid);
	else if (rd.fd > 0)
		close(rd.fd);
	waitpid(inner.pid, NULL, 0);
	inner.pid = 0;
	waiting = wait_no_waiting(dir, 20);
	if (waiting == 0) {
		server_stop(&outer);
		umount2(slow_mnt, MNT_DETACH);
	} else {
		kill(outer.pid, SIGKILL);
		waitpid(outer.pid, NULL, 0);
		mark_leaked(mnt);
		mark_leaked(slow_mnt);
	}
	CHECK(rd.fd > 0, "round %d: open %s: %s", r, path, strerror(errno));
	CHECK(lending, "round %d: the outer server never got to the stopped backing", r);
	CHECK(freed, "round %d: the O_DIRECT reader was still blocked 20 s after the abort "
	      "(%s)", r, s.zc_lent_pages > 0 ? "its pages were lent" : "copy mode");
	CHECK(waiting == 0, "round %d: %ld requests still waiting after the abort", r, waiting);
	return T_PASS;
}

static int t_abort_stopped_backing(void)
{
	int r, n = rounds >= 10 ? rounds / 10 : 1;
	double worst = 0, t;

	for (r = 0; r < n; r++) {
		if (abort_stopped_round(r, &t))
			return T_FAIL;
		if (t > worst)
			worst = t;
		if (verbose)
			say("  round %d: reader freed %.2f s after the abort\n", r, t);
	}
	say("  %d rounds: every reader freed within %.2f s of the abort\n", n, worst);
	return T_PASS;
}

/* A writer of write_fault_loop(): its own 1 MiB region, write after write. */
struct writer_arg {
	const char *path;
	int idx;
	bool direct;
	unsigned int seed;
	volatile int *stop;
	struct { off_t off; size_t len; unsigned int gen; } acked[256];
	int nacked;
};

static void *writer_main(void *p)
{
	struct writer_arg *a = p;
	off_t off = (off_t)a->idx << 20, end = off + (1 << 20);
	unsigned char *buf;
	int fd;

	if (posix_memalign((void **)&buf, 4096, 65536))
		return NULL;
	fd = open(a->path, O_WRONLY | (a->direct ? O_DIRECT : 0));
	while (fd >= 0 && !*a->stop && a->nacked < 256) {
		size_t len = 4096 * (1 + rand_r(&a->seed) % 16);
		unsigned int gen = a->seed * 1000 + a->nacked;
		ssize_t n;

		if (off + (off_t)len > end)
			break;
		fill_pattern(buf, len, gen);
		n = pwrite(fd, buf, len, off);
		if (n <= 0)
			break;		/* the strike */
		a->acked[a->nacked].off = off;
		a->acked[a->nacked].len = (size_t)n;
		a->acked[a->nacked].gen = gen;
		a->nacked++;
		off += n;
	}
	if (fd >= 0)
		close(fd);
	free(buf);
	return NULL;
}

/* Every write the writers had acknowledged is on the device, byte for byte. */
static int check_acked(const char *dev, struct writer_arg *args, int nr, int round)
{
	unsigned char *got, *want = malloc(65536);
	int fd = open(dev, O_RDONLY | O_DIRECT | O_CLOEXEC), ret = T_PASS;

	CHECK(want && fd >= 0 && !posix_memalign((void **)&got, 4096, 65536),
	      "open %s: %s", dev, strerror(errno));
	for (int i = 0; i < nr && ret == T_PASS; i++) {
		for (int k = 0; k < args[i].nacked; k++) {
			size_t len = args[i].acked[k].len;
			size_t rlen = (len + 4095) & ~(size_t)4095;

			fill_pattern(want, 65536, args[i].acked[k].gen);
			if (pread(fd, got, rlen, args[i].acked[k].off) < (ssize_t)len ||
			    memcmp(got, want, len)) {
				say("  round %d: writer %d's acknowledged write %lld+%zu is not on "
				    "the device\n", round, i, (long long)args[i].acked[k].off, len);
				ret = T_FAIL;
				break;
			}
			__sync_fetch_and_add(&bytes_verified, len);
		}
	}
	close(fd);
	free(got);
	free(want);
	return ret;
}

/*
 * kill -9 / fusectl abort of a server whose write lendings are parked in
 * io-wq (30 ms each, writing to the loop device): every write the writers
 * saw acknowledged is on the device, nothing stays lent.
 */
static int write_fault_loop(bool abort_conn, bool on_file)
{
	const char *what = abort_conn ? "abort" : "kill -9";
	struct freeze_fs f;
	const char *dev;
	struct server srv = { .cfg = { .threads = 4, .slow_ms = 30, .writable = true,
				       .accept_zc_write = true } };
	int r, in_flight = 0, ret;
	uint64_t acked = 0, parks = 0;
	unsigned char *model = malloc(WMODEL_SIZE);
	char path[300], dir[200];
	double t0 = now();
	off_t size;

	CHECK(model && !make_write_backing(model, &size), "write backing");
	free(model);
	if (on_file) {
		/* parked on a regular file of ext4, which a freeze waits for */
		ret = freeze_fs_setup(&f, false, 4 << 20);
		CHECK(!ret, "ext4 on a loop device: %s", strerror(-ret));
		srv.cfg.loop_path = dev = f.data;
	} else {
		if (parking_server(&srv, what))
			return T_FAIL;
		dev = loop_node;
	}
	file_path(path, sizeof(path), mnt);

	for (r = 0; r < rounds; r++) {
		struct writer_arg args[4];
		pthread_t tids[4];
		volatile int stop = 0;
		int i;

		ret = server_start(&srv, mnt, wbacking, MF_READ_ZC);
		CHECK(!ret, "round %d: server: %s", r, strerror(-ret));
		srv.sh->write_mode = MF_WRITE_PARKED;
		CHECK(srv.sh->zc_write_accepted, "zero-copy writes not offered");
		CHECK(!conn_dir(mnt, dir, sizeof(dir)), "conn dir");
		for (i = 0; i < 4; i++) {
			args[i] = (struct writer_arg){ .path = path, .idx = i, .direct = i & 1,
				.seed = r * 7 + i + 1, .stop = &stop };
			pthread_create(&tids[i], NULL, writer_main, &args[i]);
		}
		/* some writes acknowledged first (each is parked 30 ms), then
		 * strike while a loan is out */
		sleep_ms(50 + rand() % 150);
		in_flight += fault_wait_lent(dir);
		if (fault_strike(&srv, dir, abort_conn, r))
			return T_FAIL;
		stop = 1;
		for (i = 0; i < 4; i++)
			pthread_join(tids[i], NULL);
		if (fault_settle(&srv, dir, abort_conn, r))
			return T_FAIL;
		parks += srv.sh->parks;
		/* the server is gone: no write of it can land any more */
		if (check_acked(dev, args, 4, r) != T_PASS)
			return T_FAIL;
		/* nothing of the dead server may hold the file system's freeze */
		ret = on_file ? fsfreeze_round_trip(f.dir) : 0;
		if (ret == -ETIME) {
			say("  FAIL %s: round %d: fsfreeze -f still waiting after %d s\n",
			    __func__, r, FREEZE_LIMIT_S);
			zc_wedged(__func__);
		}
		CHECK(!ret, "round %d: fsfreeze -f/-u: %d", r, ret);
		for (i = 0; i < 4; i++)
			acked += args[i].nacked;
	}
	say("  %s with writes: %d rounds, %d with lent pages in flight at the strike, "
	    "%llu writes parked, %llu acknowledged writes all on the device, %.1f s\n",
	    what, rounds, in_flight, (unsigned long long)parks, (unsigned long long)acked,
	    now() - t0);
	CHECK(in_flight * 2 >= rounds, "only %d of %d rounds had lending in flight",
	      in_flight, rounds);
	CHECK(acked > 0, "no write was acknowledged");
	if (on_file)
		freeze_fs_teardown(&f);
	return T_PASS;
}

static int t_write_kill_loop(void) { return write_fault_loop(false, false); }
static int t_write_abort_loop(void) { return write_fault_loop(true, false); }
static int t_write_kill_loop_file(void) { return write_fault_loop(false, true); }
static int t_write_abort_loop_file(void) { return write_fault_loop(true, true); }

static const struct zc_subtest subtests[] = {
	{ "kill_loop", t_kill_loop, true },
	{ "abort_loop", t_abort_loop, true },
	{ "async_faults", t_async_faults, true },
	/* the v2 lending contract, one per finding of issue 9 */
	{ "abort_stopped_backing", t_abort_stopped_backing, true },	/* b */
	{ "write_kill_loop", t_write_kill_loop, true },
	{ "write_abort_loop", t_write_abort_loop, true },
	/* parked on a regular file, fsfreeze -f/-u after each round (issue 24) */
	{ "write_kill_loop_file", t_write_kill_loop_file, true },
	{ "write_abort_loop_file", t_write_abort_loop_file, true },
};

int main(int argc, char **argv)
{
	return zc_main(argc, argv, subtests, ZC_ARRAY_SIZE(subtests));
}
