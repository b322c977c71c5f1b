// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * zc_kernel_module: a loan holds its lender's module.  With fuse built as a
 * module (the debug kernel; distributions build it so), a loan can outlive
 * every file and mount of fuse: the loan of a read ended by an abort or by
 * the release of /dev/fuse, parked in io-wq, once the server closed
 * /dev/fuse and the mount and fusectl are gone.  Unloading fuse must then fail until the loan is back (else
 * the loan's end runs in freed module text), and succeed once it is.
 * Each round unloads and reloads fuse (from FUSEZC_VM_MODULE_DIR, which
 * tests/vm/run sets); -r sets the rounds.
 */
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zc_test.h"

#define FUSECTL "/sys/fs/fuse/connections"

/* fuse's module reference count; -1 if fuse is not a loaded module */
static long fuse_refcnt(void)
{
	FILE *f = fopen("/sys/module/fuse/refcnt", "r");
	long n = -1;

	if (!f)
		return -1;
	if (fscanf(f, "%ld", &n) != 1)
		n = -1;
	fclose(f);
	return n;
}

static int fuse_unload(void)
{
	return syscall(SYS_delete_module, "fuse", O_NONBLOCK) ? -errno : 0;
}

/* Load fuse.ko again and mount fusectl, as the VM had them. */
static int fuse_load(void)
{
	const char *dir = getenv("FUSEZC_VM_MODULE_DIR");
	char path[PATH_MAX];
	int fd, ret = 0;

	snprintf(path, sizeof(path), "%s/fuse.ko", dir ? dir : ".");
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (syscall(SYS_finit_module, fd, "", 0))
		ret = -errno;
	close(fd);
	if (!ret && mount("fusectl", FUSECTL, "fusectl", 0, NULL))
		ret = -errno;
	return ret;
}

/* fuse must be a module we can load again; else skip, or fail if required. */
static int module_preconditions(void)
{
	const char *dir = getenv("FUSEZC_VM_MODULE_DIR");

	if (fuse_refcnt() >= 0 && dir)
		return T_PASS;
	say("  %s: fuse is %s (the debug flavour builds it as a module: "
	    "kernel/config/debug.config; tests/vm/run sets FUSEZC_VM_MODULE_DIR)\n",
	    zc_required() ? "FAIL" : "SKIP",
	    fuse_refcnt() < 0 ? "not a loaded module" : "a module, but FUSEZC_VM_MODULE_DIR is unset");
	return zc_required() ? T_FAIL : T_SKIP;
}

/*
 * Everything of fuse is gone but the loan (if the kernel still has it):
 * the mount (the reader's file closed with it), and fusectl.
 */
static int drop_fuse_users(int r)
{
	umount2(mnt, MNT_DETACH);
	CHECK(!umount2(FUSECTL, 0), "round %d: umount fusectl: %s", r, strerror(errno));
	return T_PASS;
}

/* Unload fuse once it is unused (bounded), then load it again. */
static int fuse_cycle(int r, const char *when)
{
	int ret = -EBUSY;

	if (WAIT_UNTIL(fuse_refcnt() == 0, 20))
		ret = fuse_unload();
	CHECK(!ret, "round %d: fuse could not be unloaded %s (refcnt %ld): %s", r, when,
	      fuse_refcnt(), strerror(-ret));
	ret = fuse_load();
	CHECK(!ret, "round %d: loading fuse again: %s", r, strerror(-ret));
	return T_PASS;
}

/* Wait (bounded) for the server process to exit. */
static bool server_gone(struct server *srv, unsigned int seconds)
{
	bool gone = WAIT_UNTIL(waitpid(srv->pid, NULL, WNOHANG) == srv->pid, seconds);

	if (!gone) {
		kill(srv->pid, SIGKILL);
		waitpid(srv->pid, NULL, 0);
	}
	srv->pid = 0;
	return gone;
}

/* A buffered read of @srv's file whose loan the server parks. */
static int park_a_read(struct server *srv, struct one_read *rd, char *path, size_t plen,
		       char *dir, size_t dlen, int r)
{
	struct zc_stats s = { 0 };
	int ret = server_start(srv, mnt, backing, MF_READ_PARK_CLOSE);

	CHECK(!ret, "round %d: server: %s", r, strerror(-ret));
	CHECK(WAIT_UNTIL(srv->sh->ready, 20), "round %d: the server never mounted", r);
	file_path(path, plen, mnt);
	CHECK(!conn_dir(mnt, dir, dlen), "round %d: no fusectl directory for %s", r, mnt);
	*rd = (struct one_read){ .path = path, .off = (off_t)(r % 6) << 20, .len = 64 << 10 };
	CHECK(!one_read_start(rd), "round %d: reader thread", r);
	CHECK(WAIT_UNTIL(srv->sh->parked, 20),
	      "round %d: no loan parked (parks %llu, failures %llu, last error %d)", r,
	      (unsigned long long)srv->sh->parks, (unsigned long long)srv->sh->park_failures,
	      srv->sh->park_error);
	CHECK(!read_stats_dir(dir, &s) && s.zc_lent_pages > 0,
	      "round %d: parked, but no page is lent", r);
	return T_PASS;
}

/*
 * The request ends at once (its page cache pages leave the cache), by a
 * fusectl abort, or (@abort_first false) by the release of the server's
 * /dev/fuse file as when a server dies; the server has closed /dev/fuse,
 * the mount and fusectl go: the loan, parked in the server's io-wq, is
 * all that is left of fuse.  (A kill -9 is no such case: the dying task
 * cancels its io_uring requests, loans returned, before it exits.)
 */
static int orphan_loan_round(int r, bool abort_first)
{
	struct server srv = { .cfg = { .threads = 1 } };
	struct one_read rd;
	char path[300], dir[200];
	long refs;
	int unload;

	if (parking_server(&srv, "orphan loan"))
		return T_FAIL;
	if (park_a_read(&srv, &rd, path, sizeof(path), dir, sizeof(dir), r)) {
		srv.sh->release = 1;
		server_stop(&srv);
		return T_FAIL;
	}
	if (abort_first)
		CHECK(!abort_conn_dir(dir), "round %d: abort: %s", r, strerror(errno));
	srv.sh->close_dev = 1;
	CHECK(WAIT_UNTIL(srv.sh->dev_closed, 20), "round %d: the server did not close /dev/fuse",
	      r);
	CHECK(one_read_wait(&rd, 20), "round %d: the reader was still blocked 20 s after the %s",
	      r, abort_first ? "abort" : "release of /dev/fuse");
	if (drop_fuse_users(r))
		return T_FAIL;

	refs = fuse_refcnt();
	unload = fuse_unload();
	if (!unload) {
		/* the loan's end would now run in freed text: say so first */
		say("  FAIL: round %d: fuse was unloaded with a loan out (refcnt was %ld)\n", r,
		    refs);
		return T_FAIL;
	}
	CHECK(unload == -EWOULDBLOCK || unload == -EBUSY,
	      "round %d: unloading fuse with a loan out: %s", r, strerror(-unload));
	CHECK(refs >= 1, "round %d: fuse's refcnt %ld with a loan out", r, refs);

	srv.sh->release = 1;
	CHECK(server_gone(&srv, 30), "round %d: the server did not exit after its release", r);
	return fuse_cycle(r, "after the loan came back");
}

static int abort_round(int r) { return orphan_loan_round(r, true); }
static int release_round(int r) { return orphan_loan_round(r, false); }

static int module_loop(int (*round)(int), const char *what)
{
	int r, n = rounds, ret = module_preconditions();
	double t0 = now();

	if (ret)
		return ret;
	for (r = 0; r < n; r++)
		if (round(r))
			return T_FAIL;
	say("  %s: %d rounds, fuse unloaded and loaded again in each, %.1f s\n", what, n,
	    now() - t0);
	return T_PASS;
}

static int t_unload_abort_loop(void)
{
	return module_loop(abort_round, "fusectl abort, /dev/fuse closed, loan parked");
}

static int t_unload_release_loop(void)
{
	return module_loop(release_round, "/dev/fuse closed (released), loan parked");
}

static const struct zc_subtest subtests[] = {
	{ "unload_abort_loop", t_unload_abort_loop, true },
	{ "unload_release_loop", t_unload_release_loop, true },
};

int main(int argc, char **argv)
{
	return zc_main(argc, argv, subtests, ZC_ARRAY_SIZE(subtests));
}
