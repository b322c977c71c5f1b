// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * zc_kernel_contract: what the series refuses, and that a refusal loses
 * nothing.  Lying, early and duplicate replies, bogus lendings, lenders
 * that did not opt in, I/O files that depend on a FUSE server, lendings
 * past the request, unprivileged servers: each gets its error, and the
 * reader still gets the right bytes.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zc_test.h"

/*
 * A zero-copy reply claiming bytes nobody placed is refused (EINVAL) and the
 * request stays in flight: the server's correct reply after it is accepted
 * and the reader gets the right bytes, never EIO.
 */
static int t_lies(void)
{
	struct mf_config second = { .second_reply_delay_ms = SECOND_REPLY_DELAY_MS };

	if (misbehave_and_read(MF_READ_LIE_MORE, "reply claims more than placed (errno)",
			       offsetof(struct mf_shared, reply_errno), EINVAL) ||
	    misbehave_and_read(MF_READ_LIE_PARTIAL, "placed half, claims all (errno)",
			       offsetof(struct mf_shared, reply_errno), EINVAL) ||
	    misbehave_and_read(MF_READ_LIE_FAILED_IO, "lent I/O failed, claims all (errno)",
			       offsetof(struct mf_shared, reply_errno), EINVAL))
		return T_FAIL;
	if (misbehave_and_read(MF_READ_NO_LEND, "zero-copy reply never lent (errno)",
			       offsetof(struct mf_shared, reply_errno), EINVAL) ||
	    misbehave_and_read_cfg(&second, MF_READ_SECOND_REPLY, "second reply (errno)",
				   offsetof(struct mf_shared, second_reply_errno), ENOENT) ||
	    /* a borrower that reads a read's pages would see their old bytes */
	    misbehave_and_read(MF_READ_WRONG_DIR, "WRITE_SPLICE_BUF on a FUSE_READ (res)",
			       offsetof(struct mf_shared, wrong_dir_res), -EOPNOTSUPP))
		return T_FAIL;
	return T_PASS;
}

/* Print the server's probes; the number that gave the wrong answer. */
static int check_probes(struct mf_shared *sh)
{
	int i, failed = 0;

	for (i = 0; i < sh->nr_probes; i++) {
		struct mf_probe *p = &sh->probes[i];
		bool ok = p->got == p->expected;

		say("  %-40s %-4s got %d want %d\n", p->name, ok ? "ok" : "FAIL",
		    p->got, p->expected);
		failed += !ok;
	}
	return failed;
}

static int t_probes(void)
{
	struct server srv = { .cfg = { .second_mountpoint = mnt2 } };
	char path[300], path2[300], *buf = malloc(1 << 20);
	struct stat st;
	int fd, ret, failed;

	ret = server_start(&srv, mnt, backing, MF_READ_PROBE);
	CHECK(!ret, "server: %s", strerror(-ret));
	file_path(path, sizeof(path), mnt);
	file_path(path2, sizeof(path2), mnt2);
	CHECK(!stat(path2, &st), "second mount: %s", strerror(errno));
	drop_caches();
	fd = open(path, O_RDONLY);
	ret = verify_range(fd, buf, 0, 65536, "probe 1");
	if (ret == T_PASS)
		ret = verify_range(fd, buf, 1 << 20, 65536, "probe 2");
	close(fd);
	CHECK(ret == T_PASS, "reads around the probes failed");
	CHECK(srv.sh->probes_done, "probes did not run");
	failed = check_probes(srv.sh);
	CHECK(srv.sh->nr_probes >= 15, "only %d probes ran", srv.sh->nr_probes);
	ret = check_all_zero_copy(mnt, "after probes");
	server_stop(&srv);
	free(buf);
	CHECK(!failed, "%d probes gave the wrong answer", failed);
	return ret;
}

static int t_busy(void)
{
	struct server srv = { 0 };
	char path[300], *buf = malloc(1 << 20);
	int ret;

	if (parking_server(&srv, "busy"))
		return T_FAIL;
	ret = server_start(&srv, mnt, backing, MF_READ_BUSY_REPLY);
	CHECK(!ret, "server: %s", strerror(-ret));
	file_path(path, sizeof(path), mnt);
	/*
	 * Under load a lending can complete inline (its range cached again
	 * before the park), and with -a the kernel then answers the read, so
	 * the server cannot lend it again: try further reads until one parks.
	 */
	for (int i = 0; i < 8 && srv.sh->parks == 0; i++) {
		ret = fresh_read(path, buf, (off_t)i << 20, 65536, "reply while lent");
		if (ret != T_PASS)
			break;
	}
	server_stop(&srv);
	free(buf);
	say("  %llu loans parked (%llu without a loan, %llu failed: %d); zero-copy reply "
	    "while lent: %s, copy reply: %s\n", (unsigned long long)srv.sh->parks,
	    (unsigned long long)srv.sh->parked_unlent,
	    (unsigned long long)srv.sh->park_failures, srv.sh->park_error,
	    strerror(srv.sh->reply_errno), strerror(srv.sh->second_reply_errno));
	CHECK(ret == T_PASS, "read failed");
	if (check_parked(srv.sh, "busy"))
		return T_FAIL;
	CHECK(srv.sh->reply_errno == EBUSY, "zero-copy reply while lent: errno %d, want EBUSY",
	      srv.sh->reply_errno);
	CHECK(srv.sh->second_reply_errno == EBUSY, "copy reply while lent: errno %d, want EBUSY",
	      srv.sh->second_reply_errno);
	say("  zero-copy and copy replies while the pages are lent: EBUSY\n");
	return T_PASS;
}

/* A zero-copy server, 1 MiB read through a fresh open, the counters in @s. */
static int serve_fresh_read(struct server *srv, const char *path, char *buf,
			    const char *what, struct zc_stats *s)
{
	int ret = server_start(srv, mnt, backing, MF_READ_ZC);

	CHECK(!ret, "%s: server: %s", what, strerror(-ret));
	ret = fresh_read(path, buf, 0, 1 << 20, what);
	if (ret == T_PASS && read_stats(mnt, s))
		ret = T_FAIL;
	server_stop(srv);
	CHECK(ret == T_PASS, "%s: read or stats failed", what);
	return T_PASS;
}

static int privilege_checks(void)
{
	const char *knob = "/sys/module/fuse/parameters/zerocopy_unprivileged";
	struct server srv = { .cfg = { .drop_privileges = true } };
	struct one_read rd = { .off = 1 << 20, .len = 1 << 20, .direct = true };
	char path[300], *buf = malloc(1 << 20);
	struct io_uring ring;
	struct zc_stats s;
	int ret, devfd, iofd;
	bool done;

	/* a /dev/fuse fd of no connection is not a lender of anything yet */
	devfd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
	iofd = open_io_file();
	CHECK(devfd >= 0 && iofd >= 0, "open /dev/fuse, %s: %s", io_path, strerror(errno));
	CHECK(!io_uring_queue_init(4, &ring, 0), "io_uring_queue_init");
	ret = lend_once(&ring, FUSEZC_IORING_OP_READ_SPLICE_BUF, iofd, devfd,
			fusezc_lend_pos(2, 0), 4096, 20);
	io_uring_queue_exit(&ring);
	close(devfd);
	close(iofd);
	CHECK(ret == -ENOTCONN, "unattached /dev/fuse as lender: %d (%s), want -ENOTCONN",
	      ret, strerror(-ret));
	say("  /dev/fuse of no connection as lender: ENOTCONN\n");

	chmod(workdir, 0755);
	file_path(path, sizeof(path), mnt);
	CHECK(!write_file(knob, "N"), "%s: %s", knob, strerror(errno));
	if (serve_fresh_read(&srv, path, buf, "unprivileged, refused", &s))
		return T_FAIL;
	CHECK(s.zc_read_bytes == 0 && s.zc_refused > 0 && srv.sh->last_lend_error == -EPERM,
	      "unprivileged server refused: zc_read_bytes %lld zc_refused %lld error %d",
	      s.zc_read_bytes, s.zc_refused, srv.sh->last_lend_error);
	say("  unprivileged server, zerocopy_unprivileged=N: EPERM, %lld refusals, copy fallback\n",
	    s.zc_refused);

	CHECK(!write_file(knob, "Y"), "%s: %s", knob, strerror(errno));
	if (serve_fresh_read(&srv, path, buf, "unprivileged, allowed", &s))
		return T_FAIL;
	CHECK(s.zc_read_bytes >= (1 << 20) && s.zc_refused == 0,
	      "unprivileged server allowed: zc_read_bytes %lld zc_refused %lld",
	      s.zc_read_bytes, s.zc_refused);
	say("  unprivileged server, zerocopy_unprivileged=Y: %lld bytes zero-copy\n",
	    s.zc_read_bytes);

	/*
	 * ... but not an O_DIRECT reader's own pages: an abort cannot take
	 * them back while the borrower's I/O runs, so lending them would let
	 * an unprivileged server hold the reader for as long as I/O it chose
	 * takes.  The read is served by copy.
	 */
	ret = server_start(&srv, mnt, backing, MF_READ_ZC);
	CHECK(!ret, "server: %s", strerror(-ret));
	rd.path = path;
	one_read_start(&rd);
	done = one_read_wait(&rd, 60);
	if (read_stats(mnt, &s))
		done = false;
	server_stop(&srv);
	CHECK(done, "unprivileged server: the O_DIRECT read did not return in 60 s");
	if (check_read(&rd, rd.len, "unprivileged server, O_DIRECT"))
		return T_FAIL;
	CHECK(s.zc_read_bytes == 0 && s.zc_refused > 0 && srv.sh->last_lend_error == -EPERM,
	      "unprivileged server, O_DIRECT reader: zc_read_bytes %lld zc_refused %lld "
	      "error %d, want 0, > 0, -EPERM (EPERM, then a copy)",
	      s.zc_read_bytes, s.zc_refused, srv.sh->last_lend_error);
	say("  unprivileged server, zerocopy_unprivileged=Y, O_DIRECT reader: EPERM, copy\n");

	/* root is not affected by the knob */
	CHECK(!write_file(knob, "N"), "%s", knob);
	srv.cfg.drop_privileges = false;
	ret = server_start(&srv, mnt, backing, MF_READ_ZC);
	CHECK(!ret, "server: %s", strerror(-ret));
	ret = fresh_read(path, buf, 0, 1 << 20, "privileged");
	CHECK(ret == T_PASS, "read failed");
	ret = check_all_zero_copy(mnt, "CAP_SYS_ADMIN server with the knob off");
	server_stop(&srv);
	free(buf);
	return ret;
}

static int t_privilege(void)
{
	const char *knob = "/sys/module/fuse/parameters/zerocopy_unprivileged";
	char initial[8] = "";
	FILE *f = fopen(knob, "r");
	int ret;

	if (f) {
		if (!fgets(initial, sizeof(initial), f))
			initial[0] = 0;
		fclose(f);
	}
	initial[strcspn(initial, "\n")] = 0;
	/* v2: lending is for CAP_SYS_ADMIN servers unless the admin says so */
	CHECK(!strcmp(initial, "N"), "%s defaults to '%s', want N", knob, initial);
	ret = privilege_checks();
	write_file(knob, initial);
	return ret;
}

/*
 * (a) Only a lender that opted in is ever called: a socket keeps its data,
 * a pty does not block, a FUSE file is not read, a pipe or a tmpfs file is
 * refused; all with -EOPNOTSUPP.
 */
static int lend_from_pty(int io_fd, const char *io_what)
{
	int master, slave, status, res = -EIO;
	pid_t pid;

	master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
	CHECK(master >= 0 && !grantpt(master) && !unlockpt(master), "pty: %s", strerror(errno));
	slave = open(ptsname(master), O_RDWR | O_NOCTTY | O_CLOEXEC);
	CHECK(slave >= 0, "pty slave: %s", strerror(errno));
	/* a child, as the lending may block in io_uring_enter() itself */
	pid = fork();
	CHECK(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		struct io_uring ring;

		if (io_uring_queue_init(4, &ring, 0))
			_exit(255);
		res = lend_once(&ring, FUSEZC_IORING_OP_READ_SPLICE_BUF, io_fd, slave,
				0, 4096, 60);
		_exit(res == -EOPNOTSUPP ? 0 : res == -ETIME ? 2 : 1);
	}
	if (!WAIT_UNTIL(waitpid(pid, &status, WNOHANG) == pid, 10)) {
		/* unblock it: a line for the tty read, then kill */
		if (write(master, "x\n", 2) != 2)
			perror("pty master");
		if (!WAIT_UNTIL(waitpid(pid, &status, WNOHANG) == pid, 20)) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
		}
		close(slave);
		close(master);
		CHECK(0, "a pty with no data as lender (I/O file %s) blocked for 10 s", io_what);
	}
	close(slave);
	close(master);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	      "a pty as lender (I/O file %s): not -EOPNOTSUPP (child status %#x)",
	      io_what, status);
	say("  %-44s EOPNOTSUPP at once\n", "pty with no data as lender");
	return T_PASS;
}

static int lend_from_socket(struct io_uring *ring, int iofd)
{
	char buf[16];
	int sv[2], ret;
	ssize_t n;

	CHECK(!socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), "socketpair");
	CHECK(write(sv[1], "hello", 5) == 5, "socket write");
	ret = lend_once(ring, FUSEZC_IORING_OP_READ_SPLICE_BUF, iofd, sv[0], 0, 4096, 20);
	n = recv(sv[0], buf, sizeof(buf), MSG_DONTWAIT);
	close(sv[0]);
	close(sv[1]);
	CHECK(ret == -EOPNOTSUPP, "unix socket as lender: %d (%s), want -EOPNOTSUPP",
	      ret, strerror(-ret));
	CHECK(n == 5 && !memcmp(buf, "hello", 5),
	      "unix socket as lender: its data was consumed (recv %zd)", n);
	say("  %-44s EOPNOTSUPP, \"hello\" still queued\n", "unix socket as lender");
	return T_PASS;
}

static int lend_from_pipe(struct io_uring *ring, int iofd)
{
	char buf[16];
	int p[2], ret;
	ssize_t n;

	CHECK(!pipe2(p, O_CLOEXEC | O_NONBLOCK), "pipe");
	CHECK(write(p[1], "hello", 5) == 5, "pipe write");
	ret = lend_once(ring, FUSEZC_IORING_OP_READ_SPLICE_BUF, iofd, p[0], 0, 4096, 20);
	n = read(p[0], buf, sizeof(buf));
	close(p[0]);
	close(p[1]);
	CHECK(ret == -EOPNOTSUPP, "pipe as lender: %d (%s), want -EOPNOTSUPP", ret, strerror(-ret));
	CHECK(n == 5 && !memcmp(buf, "hello", 5), "pipe as lender: data consumed (read %zd)", n);
	say("  %-44s EOPNOTSUPP, data still queued\n", "pipe as lender");
	return T_PASS;
}

static int lend_from_tmpfs(struct io_uring *ring, int iofd)
{
	char page[4096];
	int fd, ret;
	ssize_t n;

	fd = open(backing, O_RDONLY | O_CLOEXEC);
	CHECK(fd >= 0, "%s: %s", backing, strerror(errno));
	ret = lend_once(ring, FUSEZC_IORING_OP_READ_SPLICE_BUF, iofd, fd, 0, 4096, 20);
	n = pread(fd, page, sizeof(page), 0);
	close(fd);
	CHECK(ret == -EOPNOTSUPP, "tmpfs file as lender: %d (%s), want -EOPNOTSUPP",
	      ret, strerror(-ret));
	CHECK(n == (ssize_t)sizeof(page) && !memcmp(page, ref, sizeof(page)),
	      "tmpfs file as lender: its page changed");
	say("  %-44s EOPNOTSUPP, page untouched\n", "tmpfs file as lender");
	return T_PASS;
}

/* A file on a FUSE mount: not a single FUSE_READ at its server. */
static int lend_from_fuse_file(struct io_uring *ring, int iofd)
{
	struct server fuse_lender = { 0 };
	uint64_t reads;
	int fd, ret;

	ret = start_inner_mount(&fuse_lender);
	CHECK(!ret, "FUSE lender's server: %s", strerror(-ret));
	fd = open(slow_backing, O_RDONLY | O_CLOEXEC);
	drop_caches();
	reads = fuse_lender.sh->reads;
	ret = fd < 0 ? -errno :
	      lend_once(ring, FUSEZC_IORING_OP_READ_SPLICE_BUF, iofd, fd, 0, 65536, 20);
	reads = fuse_lender.sh->reads - reads;
	if (fd >= 0)
		close(fd);
	server_stop(&fuse_lender);
	CHECK(ret == -EOPNOTSUPP, "FUSE file as lender: %d (%s), want -EOPNOTSUPP",
	      ret, strerror(-ret));
	CHECK(reads == 0, "FUSE file as lender: %llu FUSE_READ at its server, want 0",
	      (unsigned long long)reads);
	say("  %-44s EOPNOTSUPP, no FUSE_READ at its server\n", "file on a FUSE mount as lender");
	return T_PASS;
}

/*
 * (a) Only a lender that opted in is ever called: a socket keeps its data,
 * a pty does not block, a FUSE file is not read, a pipe or a tmpfs file is
 * refused; all with -EOPNOTSUPP.  Every lender is tried, each failure said.
 */
static int t_lender_optin(void)
{
	struct io_uring ring;
	int iofd, fd, failed = 0;

	iofd = open_io_file();
	CHECK(iofd >= 0, "%s: %s", io_path, strerror(errno));
	CHECK(!io_uring_queue_init(8, &ring, 0), "io_uring_queue_init");
	failed += lend_from_socket(&ring, iofd) != T_PASS;
	failed += lend_from_pipe(&ring, iofd) != T_PASS;
	failed += lend_from_tmpfs(&ring, iofd) != T_PASS;
	failed += lend_from_fuse_file(&ring, iofd) != T_PASS;
	io_uring_queue_exit(&ring);

	/* a pty with no data: with a tmpfs and with a block device I/O file */
	failed += lend_from_pty(iofd, "tmpfs") != T_PASS;
	close(iofd);
	fd = park_loop() ? open(loop_node, O_RDONLY | O_CLOEXEC) : -1;
	CHECK(fd >= 0, "loop device: %s", strerror(errno));
	failed += lend_from_pty(fd, "block device (FMODE_NOWAIT)") != T_PASS;
	close(fd);
	CHECK(!failed, "%d lenders were called or not refused", failed);
	return T_PASS;
}

/*
 * (b) An I/O file on a FUSE superblock (another mount's, or the lender's
 * own: the lent read would wait for the folio lock its own readahead
 * holds) or on a stacking file system is refused with -EXDEV; nothing is
 * lent, and the request is then answered by copy.
 */
static int t_exdev(void)
{
	struct server inner = { 0 }, srv = { .cfg = { .threads = 3 } };
	char path[300], *buf = malloc(1 << 20), opts[400];
	struct zc_stats s;
	int ret, failed;

	ret = start_inner_mount(&inner);
	CHECK(!ret, "inner server: %s", strerror(-ret));
	snprintf(path, sizeof(path), "%s/file", ovl_lower[0]);
	unlink(path);
	CHECK(!link(backing, path), "link %s: %s", path, strerror(errno));
	snprintf(opts, sizeof(opts), "lowerdir=%s:%s", ovl_lower[0], ovl_lower[1]);
	CHECK(!mount("overlay", ovl_mnt, "overlay", MS_RDONLY, opts), "mount overlay: %s",
	      strerror(errno));
	srv.cfg.exdev_paths[0] = slow_backing;
	srv.cfg.exdev_paths[1] = ovl_file;
	/* the lender's own mount: a lend that waits for itself */
	file_path(path, sizeof(path), mnt);
	srv.cfg.exdev_paths[2] = path;
	ret = server_start(&srv, mnt, backing, MF_READ_PROBE_EXDEV);
	CHECK(!ret, "server: %s", strerror(-ret));
	ret = fresh_read(path, buf, 0, 65536, "after the refused lendings");
	if (read_stats(mnt, &s))
		ret = T_FAIL;
	server_stop(&srv);
	server_stop(&inner);
	umount2(ovl_mnt, MNT_DETACH);
	free(buf);
	CHECK(ret == T_PASS, "read failed");
	CHECK(srv.sh->probes_done, "probes did not run");
	failed = check_probes(srv.sh);
	CHECK(srv.sh->nr_probes == 3, "%d probes ran, want 3", srv.sh->nr_probes);
	CHECK(!failed, "%d I/O files were not refused with EXDEV", failed);
	say("  zc_read_bytes %lld zc_lent_pages %lld\n", s.zc_read_bytes, s.zc_lent_pages);
	CHECK(s.zc_read_bytes == 0 && s.zc_lent_pages == 0, "something was lent");
	return T_PASS;
}

/* (c) A lending must lie inside the request's data: -EINVAL otherwise. */
static int t_lend_range(void)
{
	struct server srv = { 0 };
	struct one_read rd = { .off = 1 << 20, .len = 65536, .direct = true };
	char path[300];
	int ret, failed;

	if (serve_one_read(&srv, MF_READ_PROBE_RANGE, &rd, path, sizeof(path),
			   "O_DIRECT 64 KiB"))
		return T_FAIL;
	server_stop(&srv);
	ret = check_read(&rd, rd.len, "O_DIRECT 64 KiB");
	CHECK(srv.sh->probes_done, "probes did not run");
	failed = check_probes(srv.sh);
	CHECK(!failed, "%d lendings past the request's end were not refused with EINVAL", failed);
	return ret;
}

/*
 * (f) A zero-copy reply claiming more than was placed, or more than was
 * asked, is refused with EINVAL and the request stays in flight; the correct
 * reply after it reaches the reader.
 */
static int t_overclaim(void)
{
	struct server srv = { 0 };
	static const struct { enum mf_read_mode mode; const char *what; } lies[] = {
		{ MF_READ_LIE_PARTIAL, "size > placed (half placed)" },
		{ MF_READ_LIE_MORE, "size > requested" },
	};
	struct one_read rd = { .off = 1 << 20, .len = 65536, .direct = true };
	char path[300];
	size_t i;

	for (i = 0; i < sizeof(lies) / sizeof(lies[0]); i++) {
		if (serve_one_read(&srv, lies[i].mode, &rd, path, sizeof(path),
				   lies[i].what))
			return T_FAIL;
		server_stop(&srv);
		say("  %-28s reply: %s; correct reply after it: %s; reader: %zd %s\n",
		    lies[i].what, strerror(srv.sh->reply_errno), strerror(srv.sh->recovery_errno),
		    rd.n, rd.n < 0 ? strerror(rd.err) : "bytes");
		CHECK(srv.sh->reply_errno == EINVAL, "%s: the bad reply got %s, want EINVAL",
		      lies[i].what, strerror(srv.sh->reply_errno));
		CHECK(srv.sh->recoveries == 1 && !srv.sh->recovery_errno,
		      "%s: the request did not stay in flight for the correct reply", lies[i].what);
		if (check_read(&rd, rd.len, lies[i].what))
			return T_FAIL;
	}
	return T_PASS;
}

static const struct zc_subtest subtests[] = {
	{ "lies", t_lies, true },
	{ "probes", t_probes, true },
	{ "busy", t_busy, true },
	{ "privilege", t_privilege, true },
	/* the v2 lending contract, one per finding of issue 9 */
	{ "lender_optin", t_lender_optin, true },		/* a */
	{ "exdev", t_exdev, true },				/* b */
	{ "lend_range", t_lend_range, true },			/* c */
	{ "overclaim", t_overclaim, true },			/* f */
};

int main(int argc, char **argv)
{
	return zc_main(argc, argv, subtests, ZC_ARRAY_SIZE(subtests));
}
