// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * zc_kernel_failover: a server that cannot serve a request the way it was
 * sent gets it again, and nothing is lost.  send_data: a zero-copy
 * FUSE_WRITE whose data the server cannot borrow (its ring failed) is asked
 * for again with its data (FUSEZC_ZC_WRITE_SEND_DATA, issue 25 item 2);
 * resend_failover: FUSE_NOTIFY_RESEND from a second daemon on the same
 * /dev/fuse file re-delivers a request whose lender died with its loan out
 * (issue 24, Hangs).
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zc_test.h"

/*
 * One write of @len bytes at @off (O_DIRECT if @direct) through a server in
 * write mode @mode; the backing file must then hold exactly what was
 * written.  The writer's errno (0: success) in *@werr.
 */
static int write_through(struct server *srv, enum mf_write_mode mode, off_t off, size_t len,
			 bool direct, int *werr)
{
	unsigned char *model = malloc(WMODEL_SIZE), *buf = NULL, *back = NULL;
	char path[300];
	struct stat st;
	off_t size;
	ssize_t n;
	int fd, ret = T_FAIL;

	CHECK(model, "malloc");
	CHECK(!make_write_backing(model, &size), "write backing");
	srv->cfg.writable = true;
	srv->cfg.accept_zc_write = true;
	CHECK(!server_start(srv, mnt, wbacking, MF_READ_ZC), "server_start");
	srv->sh->write_mode = mode;
	if (!srv->sh->zc_write_accepted) {
		say("  the kernel did not offer FUSE_ZERO_COPY_WRITE\n");
		goto out_stop;
	}
	file_path(path, sizeof(path), mnt);
	if (posix_memalign((void **)&buf, 4096, len))
		goto out_stop;
	fill_pattern(buf, len, (unsigned int)off + 7);
	*werr = 0;
	fd = open(path, O_WRONLY | (direct ? O_DIRECT : 0));
	if (fd < 0) {
		*werr = errno;
	} else {
		n = pwrite(fd, buf, len, off);
		if (n < 0)
			*werr = errno;
		else if ((size_t)n != len)
			*werr = EIO;
		if (!*werr && fsync(fd))
			*werr = errno;
		if (close(fd) && !*werr)
			*werr = errno;
	}
	if (server_quiesce(srv))
		goto out_stop;
	ret = T_PASS;
out_stop:
	server_stop(srv);
	if (ret != T_PASS || *werr)
		goto out;
	memcpy(model + off, buf, len);
	if (off + (off_t)len > size)
		size = off + len;
	back = malloc(WMODEL_SIZE);
	fd = open(wbacking, O_RDONLY | O_CLOEXEC);
	if (!back || fd < 0 || fstat(fd, &st)) {
		say("  open %s: %s\n", wbacking, strerror(errno));
		ret = T_FAIL;
	} else if (st.st_size != size || pread(fd, back, size, 0) != size ||
		   memcmp(back, model, size)) {
		say("  the backing file does not hold what was written (size %lld, want %lld)\n",
		    (long long)st.st_size, (long long)size);
		ret = T_FAIL;
	} else {
		__sync_fetch_and_add(&bytes_verified, len);
	}
	if (fd >= 0)
		close(fd);
out:
	free(back);
	free(buf);
	free(model);
	return ret;
}

/*
 * FUSEZC_ZC_WRITE_SEND_DATA: a zero-copy write answered "send it again with
 * its data" comes again, same unique, with its data, and lands; refused
 * with EINVAL for unknown flags and for the write that came with its data,
 * ENOENT once answered, EBUSY while a loan of it is out (parked in io-wq),
 * accepted once the loan is back (what it wrote is forgotten: the write
 * comes again whole).
 */
static int t_send_data(void)
{
	static const struct { off_t off; size_t len; bool direct; const char *what; } ops[] = {
		{ 0, 65536, false, "buffered 64 KiB" },
		{ 4097, 5000, false, "buffered unaligned" },
		{ 1 << 20, 256 << 10, true, "O_DIRECT 256 KiB" },
	};
	int werr;

	for (unsigned int i = 0; i < ZC_ARRAY_SIZE(ops); i++) {
		struct server srv = { 0 };

		CHECK(write_through(&srv, MF_WRITE_SEND_DATA, ops[i].off, ops[i].len,
				    ops[i].direct, &werr) == T_PASS, "%s", ops[i].what);
		say("  %s: SEND_DATA: %s; unknown flags: %s; to the write with data: %s; "
		    "once answered: %s; writes sent again %llu; writer: %s\n", ops[i].what,
		    strerror(srv.sh->send_data_errno), strerror(srv.sh->send_data_bad_flags_errno),
		    strerror(srv.sh->send_data_inline_errno),
		    strerror(srv.sh->send_data_gone_errno),
		    (unsigned long long)srv.sh->send_data_resent,
		    werr ? strerror(werr) : "ok");
		CHECK(srv.sh->send_data_errno == 0 && srv.sh->send_data_asked > 0,
		      "%s: SEND_DATA refused: %s", ops[i].what, strerror(srv.sh->send_data_errno));
		CHECK(!werr, "%s: the writer got %s", ops[i].what, strerror(werr));
		CHECK(srv.sh->send_data_resent >= srv.sh->send_data_asked,
		      "%s: %llu SEND_DATA accepted, %llu writes came again", ops[i].what,
		      (unsigned long long)srv.sh->send_data_asked,
		      (unsigned long long)srv.sh->send_data_resent);
		CHECK(srv.sh->send_data_bad_flags_errno == EINVAL,
		      "%s: SEND_DATA with unknown flags: %s, want EINVAL", ops[i].what,
		      strerror(srv.sh->send_data_bad_flags_errno));
		CHECK(srv.sh->send_data_inline_errno == EINVAL,
		      "%s: SEND_DATA to a write with its data: %s, want EINVAL", ops[i].what,
		      strerror(srv.sh->send_data_inline_errno));
		CHECK(srv.sh->send_data_gone_errno == ENOENT,
		      "%s: SEND_DATA to an answered write: %s, want ENOENT", ops[i].what,
		      strerror(srv.sh->send_data_gone_errno));
		CHECK(!srv.sh->zc_writes, "%s: %llu writes served by lending", ops[i].what,
		      (unsigned long long)srv.sh->zc_writes);
	}

	/* EBUSY while the loan is parked; accepted once it is back */
	{
		struct server srv = { .cfg = { .slow_ms = 300 } };

		if (parking_server(&srv, "send_data busy"))
			return T_FAIL;
		CHECK(write_through(&srv, MF_WRITE_SEND_DATA_BUSY, 0, 65536, false, &werr) ==
		      T_PASS, "busy");
		say("  parked: SEND_DATA while lent: %s; after the loan: %s; writer: %s\n",
		    strerror(srv.sh->send_data_busy_errno), strerror(srv.sh->send_data_errno),
		    werr ? strerror(werr) : "ok");
		if (check_parked(srv.sh, "send_data busy") != T_PASS)
			return T_FAIL;
		CHECK(srv.sh->send_data_busy_errno == EBUSY,
		      "SEND_DATA while lent: %s, want EBUSY", strerror(srv.sh->send_data_busy_errno));
		CHECK(srv.sh->send_data_errno == 0, "SEND_DATA after the loan: %s",
		      strerror(srv.sh->send_data_errno));
		CHECK(!werr, "the writer got %s", strerror(werr));
		CHECK(srv.sh->send_data_resent >= 1, "the write never came again");
	}
	return T_PASS;
}

/*
 * FUSE_NOTIFY_RESEND failover: daemons A and B share one /dev/fuse file; A
 * lends a read to a parked READ_SPLICE_BUF, B sends FUSE_NOTIFY_RESEND, A
 * is killed.  B must get the read again (FUSE_UNIQUE_RESEND) once A's loan
 * ended with A, and the reader must return with the right bytes.  -r N
 * rounds (at most 20).
 */
static int t_resend_failover(void)
{
	struct server srv = { .cfg = { .threads = 2 } };
	int r, nr = rounds < 20 ? rounds : 20, ret = T_PASS;
	double worst = 0;
	char path[300], dir[200];

	if (parking_server(&srv, "resend_failover"))
		return T_FAIL;
	ret = server_start(&srv, resend_mnt, backing, MF_READ_FAILOVER);
	CHECK(!ret, "server: %s", strerror(-ret));
	file_path(path, sizeof(path), resend_mnt);
	conn_dir(resend_mnt, dir, sizeof(dir));

	for (r = 0; r < nr && ret == T_PASS; r++) {
		struct one_read rd = { .path = path, .off = (off_t)((r % 6) + 1) << 20,
				       .len = 65536, .direct = true };
		uint64_t kills = srv.sh->failover_kills, resent = srv.sh->resent;
		bool killed, freed;
		double waited;

		CHECK(!one_read_start(&rd), "reader thread");
		killed = WAIT_UNTIL(srv.sh->failover_kills > kills, 60);
		freed = one_read_wait(&rd, 20);
		waited = now() - srv.sh->failover_kill_time;
		if (freed && waited > worst)
			worst = waited;
		if (!killed || !freed || srv.sh->notify_errno) {
			say("  round %d: %s; FUSE_NOTIFY_RESEND %s, re-delivered %llu, "
			    "park failures %llu (last %d)\n", r,
			    !killed ? "daemon A never held a parked loan" :
			    "the reader is still blocked 20 s after daemon A died",
			    strerror(srv.sh->notify_errno),
			    (unsigned long long)(srv.sh->resent - resent),
			    (unsigned long long)srv.sh->park_failures, srv.sh->park_error);
			ret = T_FAIL;
			abort_conn(resend_mnt);
			if (!one_read_wait(&rd, 20))
				pthread_detach(rd.tid);
			break;
		}
		if (check_read(&rd, rd.len, "read after failover") != T_PASS ||
		    srv.sh->resent == resent) {
			say("  round %d: re-delivered %llu\n", r,
			    (unsigned long long)(srv.sh->resent - resent));
			ret = T_FAIL;
		}
	}
	if (ret == T_PASS)
		say("  %d failovers: each read came again and its reader returned, "
		    "at most %.2f s after daemon A died; %llu resent reads lent (last %d), "
		    "%llu lendings under the old unique reached them\n", nr, worst,
		    (unsigned long long)srv.sh->resent_zc, srv.sh->resent_lend_res,
		    (unsigned long long)srv.sh->resent_old_name_reached);
	if (server_stop_when_idle(&srv, resend_mnt, dir) != T_PASS)
		ret = T_FAIL;
	if (ret)
		return ret;
	/* FUSE_ZC_POS() names a resent request with FUSE_UNIQUE_RESEND in bit 0 */
	CHECK(srv.sh->resent_zc == srv.sh->resent, "%llu of %llu resent reads were lent "
	      "(last lending %d)", (unsigned long long)srv.sh->resent_zc,
	      (unsigned long long)srv.sh->resent, srv.sh->resent_lend_res);
	CHECK(srv.sh->resent_old_name_reached == 0, "%llu lendings under a unique from before "
	      "the resend reached the resent request",
	      (unsigned long long)srv.sh->resent_old_name_reached);
	return T_PASS;
}

static const struct zc_subtest subtests[] = {
	{ "send_data", t_send_data, true },
	{ "resend_failover", t_resend_failover, true },
};

int main(int argc, char **argv)
{
	return zc_main(argc, argv, subtests, ZC_ARRAY_SIZE(subtests));
}
