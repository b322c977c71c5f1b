// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * zc_kernel_freeze: a zero-copy write (IORING_OP_WRITE_SPLICE_BUF) in
 * flight on a file system that is being frozen.  An asynchronous O_DIRECT
 * write holds the file system's freeze protection (sb_start_write) until it
 * completes; io_uring/rw.c drops it in ->ki_complete, because the ring's
 * task may be blocked in that very freeze when the I/O ends, or may never
 * run the request's task work again (ring closed, task exiting).
 *
 * The file system is ext4 on a loop device over a file of a second FUSE
 * mount (minifuse, copying): SIGSTOP of that server stalls the device, so
 * the lent write stays in flight exactly as long as the test wants.  The
 * outer minifuse serves FUSE_WRITE in MF_WRITE_FREEZE mode: one
 * WRITE_SPLICE_BUF of the request into a file of the ext4, O_DIRECT, not
 * waited for.
 *
 * A kernel that leaves the freeze protection to task work hangs here for
 * good (tasks in D state that nothing can wake): such a subtest fails after
 * its bound, prints the stacks, and the program exits at once (no cleanup
 * can work then).
 */
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zc_test.h"

#define WAIT_LIMIT_S	30	/* any other bounded wait */

/* Does task @pid (/@tid) sleep with a kernel stack naming one of @fns? */
static bool task_in(pid_t pid, pid_t tid, const char *const *fns)
{
	char path[100], line[200];
	bool found = false;
	FILE *f;

	if (tid)
		snprintf(path, sizeof(path), "/proc/%d/task/%d/stack", pid, tid);
	else
		snprintf(path, sizeof(path), "/proc/%d/stack", pid);
	f = fopen(path, "r");
	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f))
		for (int i = 0; fns[i]; i++)
			if (strstr(line, fns[i]))
				found = true;
	fclose(f);
	return found;
}

static void dump_stack(const char *what, pid_t pid, pid_t tid)
{
	char path[300], line[200];
	FILE *f;

	if (tid)
		snprintf(path, sizeof(path), "/proc/%d/task/%d/stack", pid, tid);
	else
		snprintf(path, sizeof(path), "/proc/%d/stack", pid);
	say("  %s (%s):\n", what, path);
	f = fopen(path, "r");
	while (f && fgets(line, sizeof(line), f))
		say("      %s", line);
	if (f)
		fclose(f);
}

/* -v: every thread of @pid with its kernel stack */
static void dump_threads(const char *what, pid_t pid)
{
	char path[400], comm[64];
	struct dirent *t;
	DIR *d;

	if (!verbose)
		return;
	snprintf(path, sizeof(path), "/proc/%d/task", pid);
	d = opendir(path);
	while (d && (t = readdir(d))) {
		FILE *f;

		if (t->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/%d/task/%s/comm", pid, t->d_name);
		f = fopen(path, "r");
		comm[0] = 0;
		if (f && fgets(comm, sizeof(comm), f))
			comm[strcspn(comm, "\n")] = 0;
		if (f)
			fclose(f);
		snprintf(path, sizeof(path), "%s thread %s (%s)", what, t->d_name, comm);
		dump_stack(path, pid, atoi(t->d_name));
	}
	if (d)
		closedir(d);
}

/*
 * Are writers of @fd's file system held off by a freeze right now?  A
 * zero-length O_DIRECT write with RWF_NOWAIT through io_uring takes the
 * freeze protection with a trylock, which fails (-EAGAIN) only once
 * freeze_super() blocks new writers; before that, while the freeze waits
 * for an RCU grace period, writers still get through without waiting.
 */
static bool writers_blocked(struct io_uring *ring, int fd)
{
	static char page[4096] __attribute__((aligned(4096)));
	struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
	struct io_uring_cqe *cqe;
	int res;

	io_uring_prep_write(sqe, fd, page, 0, 0);
	sqe->rw_flags = RWF_NOWAIT;
	if (io_uring_submit_and_wait(ring, 1) < 1 || io_uring_peek_cqe(ring, &cqe))
		return false;
	res = cqe->res;
	io_uring_cqe_seen(ring, cqe);
	return res == -EAGAIN;
}

/* The FUSE write of the test, in a child process: 0 if all written, else errno. */
static pid_t writer_start(const char *path)
{
	pid_t pid = fork();

	if (pid == 0) {
		void *buf;
		int fd = open(path, O_WRONLY | O_DIRECT | O_CLOEXEC);

		if (fd < 0 || posix_memalign(&buf, 4096, 4096))
			_exit(errno ? errno : 255);
		memset(buf, 'W', 4096);
		if (pwrite(fd, buf, 4096, 0) != 4096)
			_exit(errno ? errno : 254);
		_exit(0);
	}
	return pid;
}

/* The outer server: FUSE_WRITE lent into f->data by MF_WRITE_FREEZE. */
static int freeze_server(struct server *srv, struct freeze_fs *f, bool close_ring)
{
	int ret;

	srv->cfg.threads = 1;
	srv->cfg.writable = true;
	srv->cfg.accept_zc_write = true;
	srv->cfg.freeze_path = f->data;
	srv->cfg.freeze_pwrite_path = f->other;
	ret = server_start(srv, mnt, backing, MF_READ_ZC);
	if (ret)
		return ret;
	srv->sh->freeze_close_ring = close_ring;
	srv->sh->write_mode = MF_WRITE_FREEZE;
	return srv->sh->zc_write_accepted ? 0 : -EOPNOTSUPP;
}

static const char *const in_sb_start_write[] = { "percpu_rwsem_wait", "__percpu_down_read",
						 NULL };

/*
 * (a) An O_DIRECT WRITE_SPLICE_BUF to ext4 is in flight (the device
 * stalled); fsfreeze -f starts and waits for it; the thread that submitted
 * it then pwrite()s another file of that ext4 (blocked by the freeze); the
 * device resumes.  The write's completion must release the freeze: on a
 * kernel that drops the freeze protection only in the submitter's task
 * work, the freeze and the pwrite() wait for each other for ever.
 */
static int t_freeze_pwrite(void)
{
	struct server srv = { 0 };
	struct freeze_fs f;
	pid_t writer, freezer;
	char path[300], buf[4096];
	struct io_uring ring;
	int ret, fd, probe_fd;

	ret = freeze_fs_setup(&f, true, 1 << 20);
	CHECK(!ret, "ext4 over a stallable loop device: %s", strerror(-ret));
	ret = freeze_server(&srv, &f, false);
	CHECK(!ret, "outer server: %s", strerror(-ret));
	file_path(path, sizeof(path), mnt);
	probe_fd = open(f.other, O_WRONLY | O_DIRECT | O_CLOEXEC);
	CHECK(probe_fd >= 0 && !io_uring_queue_init(4, &ring, 0), "probe ring");
	CHECK(!writers_blocked(&ring, probe_fd), "writers held off before any freeze");

	CHECK(!kill(f.inner.pid, SIGSTOP), "SIGSTOP the device's server");
	writer = writer_start(path);
	CHECK(writer > 0, "fork");
	CHECK(WAIT_UNTIL(srv.sh->freeze_submitted, WAIT_LIMIT_S),
	      "the server never submitted the lending (writes %llu)",
	      (unsigned long long)srv.sh->writes);
	freezer = fsfreeze_start(f.dir, true);
	CHECK(freezer > 0, "fork");
	if (!WAIT_UNTIL(writers_blocked(&ring, probe_fd), WAIT_LIMIT_S)) {
		dump_stack("fsfreeze", freezer, 0);
		CHECK(0, "fsfreeze -f never held off writers");
	}
	say("  write lent and in flight, fsfreeze -f waiting for it\n");
	dump_threads("server", srv.pid);
	if (verbose)
		dump_stack("fsfreeze", freezer, 0);
	srv.sh->freeze_go = 1;
	if (!WAIT_UNTIL(task_in(srv.pid, srv.sh->freeze_tid, in_sb_start_write) ||
			srv.sh->freeze_pwrite_done, WAIT_LIMIT_S)) {
		dump_stack("server thread", srv.pid, srv.sh->freeze_tid);
		CHECK(0, "the server's pwrite() never blocked on the freeze");
	}
	say("  the lending's thread %s; device resumed\n",
	    srv.sh->freeze_pwrite_done ? "finished its pwrite() (not blocked?)" :
	    "blocked in pwrite() by the freeze");
	CHECK(!kill(f.inner.pid, SIGCONT), "SIGCONT the device's server");

	ret = reap_within(freezer, FREEZE_LIMIT_S);
	if (ret == -ETIME) {
		say("  FAIL %s:%d: fsfreeze -f still waiting %d s after the lent write's device resumed\n",
		    __func__, __LINE__, FREEZE_LIMIT_S);
		dump_stack("fsfreeze", freezer, 0);
		dump_stack("server thread", srv.pid, srv.sh->freeze_tid);
		zc_wedged(__func__);
	}
	CHECK(ret == 0, "fsfreeze -f: %s", strerror(ret));
	ret = reap_within(fsfreeze_start(f.dir, false), WAIT_LIMIT_S);
	CHECK(ret == 0, "fsfreeze -u: %d", ret);
	CHECK(WAIT_UNTIL(srv.sh->freeze_pwrite_done, WAIT_LIMIT_S), "pwrite() after the thaw");
	CHECK(srv.sh->freeze_pwrite_res == 4096, "pwrite(): %d", srv.sh->freeze_pwrite_res);
	ret = reap_within(writer, WAIT_LIMIT_S);
	CHECK(ret == 0, "the FUSE write: %s", ret < 0 ? strerror(-ret) : strerror(ret));
	CHECK(srv.sh->freeze_cqe_res == 4096, "the lending's CQE: %d", srv.sh->freeze_cqe_res);
	fd = open(f.data, O_RDONLY | O_CLOEXEC);
	CHECK(fd >= 0 && pread(fd, buf, sizeof(buf), 0) == sizeof(buf), "read back");
	close(fd);
	for (size_t i = 0; i < sizeof(buf); i++)
		CHECK(buf[i] == 'W', "byte %zu of the written file: %#x", i, buf[i]);
	bytes_verified += sizeof(buf);
	io_uring_queue_exit(&ring);
	close(probe_fd);
	server_stop(&srv);
	freeze_fs_teardown(&f);
	return T_PASS;
}

/*
 * (b) An O_DIRECT WRITE_SPLICE_BUF in flight, the ring closed before it
 * completes: once its device resumed, `timeout 20 fsfreeze -f` must
 * succeed.  On a kernel that drops the freeze protection only when task
 * work issues the request again, a closed ring fails the request instead,
 * and the protection is never dropped.
 */
static int t_freeze_closed_ring(void)
{
	struct server srv = { 0 };
	struct freeze_fs f;
	pid_t writer, freezer;
	char path[300], dir[200];
	int ret;

	ret = freeze_fs_setup(&f, true, 1 << 20);
	CHECK(!ret, "ext4 over a stallable loop device: %s", strerror(-ret));
	ret = freeze_server(&srv, &f, true);
	CHECK(!ret, "outer server: %s", strerror(-ret));
	file_path(path, sizeof(path), mnt);
	CHECK(!conn_dir(mnt, dir, sizeof(dir)), "conn dir");

	CHECK(!kill(f.inner.pid, SIGSTOP), "SIGSTOP the device's server");
	writer = writer_start(path);
	CHECK(writer > 0, "fork");
	CHECK(WAIT_UNTIL(srv.sh->freeze_submitted, WAIT_LIMIT_S),
	      "the server never submitted the lending (writes %llu)",
	      (unsigned long long)srv.sh->writes);
	srv.sh->freeze_go = 1;
	CHECK(WAIT_UNTIL(srv.sh->freeze_ring_closed, WAIT_LIMIT_S), "the ring never closed");
	say("  write lent and in flight, ring closed; device resumed\n");
	CHECK(!kill(f.inner.pid, SIGCONT), "SIGCONT the device's server");
	/* the loan comes back when the write is over: the server then replies */
	ret = reap_within(writer, WAIT_LIMIT_S);
	CHECK(ret != -ETIME, "the FUSE write never returned");
	say("  the FUSE write returned %s\n", ret ? strerror(ret) : "success");

	freezer = fsfreeze_start(f.dir, true);
	CHECK(freezer > 0, "fork");
	ret = reap_within(freezer, FREEZE_LIMIT_S);
	if (ret == -ETIME) {
		say("  FAIL %s:%d: fsfreeze -f still waiting after %d s (the closed ring's write is long over)\n",
		    __func__, __LINE__, FREEZE_LIMIT_S);
		dump_stack("fsfreeze", freezer, 0);
		zc_wedged(__func__);
	}
	CHECK(ret == 0, "fsfreeze -f: %s", strerror(ret));
	ret = reap_within(fsfreeze_start(f.dir, false), WAIT_LIMIT_S);
	CHECK(ret == 0, "fsfreeze -u: %d", ret);
	CHECK(wait_no_waiting(dir, WAIT_LIMIT_S) == 0, "requests left waiting");
	server_stop(&srv);
	freeze_fs_teardown(&f);
	return T_PASS;
}

static const struct zc_subtest subtests[] = {
	{ "freeze_pwrite", t_freeze_pwrite, true },
	{ "freeze_closed_ring", t_freeze_closed_ring, true },
};

int main(int argc, char **argv)
{
	return zc_main(argc, argv, subtests, ZC_ARRAY_SIZE(subtests));
}
