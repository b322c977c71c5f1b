// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * zc_kernel_capability: the INIT flag of FUSE zero copy is offered by the
 * series' kernel and by no other, and the gate minifuse parks loans behind
 * opens however late its opener starts.  Both run on any kernel (also on
 * the host: host.kernel.capability, host.kernel.park_gate).
 */
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "zc_test.h"

static int t_capability(void)
{
	struct server srv = { 0 };
	struct utsname u;
	char path[300];
	struct stat st;
	bool patched;
	int ret;

	uname(&u);
	patched = strstr(u.release, "-fuse-zc") != NULL;
	ret = server_start(&srv, mnt, backing, MF_READ_COPY);
	CHECK(!ret, "server: %s", strerror(-ret));
	file_path(path, sizeof(path), mnt);
	CHECK(!stat(path, &st), "stat: %s", strerror(errno));
	CHECK(srv.sh->init_done, "INIT not seen");
	say("  kernel %s: INIT %s FUSE zero copy\n", u.release,
	    srv.sh->zc_offered ? "offers" : "does not offer");
	server_stop(&srv);
	if (patched)
		CHECK(srv.sh->zc_offered, "the fuse-zc kernel must offer the capability");
	else
		CHECK(!srv.sh->zc_offered, "a stock kernel must not look zero-copy capable");
	return T_PASS;
}

/*
 * The park machinery's gate (minifuse.c): a loan is parked behind an io-wq
 * worker blocked in open(2) of a FIFO.  On a loaded machine the worker may
 * not have reached that open(2) when the test releases the gate; the
 * release must let it through all the same, or the parked lending waits
 * for ever.  Gate B's opener is queued behind gate A's (one io-wq worker),
 * so B is released before its open(2) has started, every time.
 */
static int t_park_gate(void)
{
	unsigned int limits[2] = { 1, 1 };	/* bound, unbound io-wq workers */
	struct __kernel_timespec ts = { .tv_sec = 10 };
	char fifo[2][64];
	int hold[2] = { -1, -1 }, opened[2] = { -1, -1 }, seen = 0, ret, i;
	struct io_uring ring;
	int status = T_FAIL;

	ret = io_uring_queue_init(8, &ring, 0);
	CHECK(!ret, "io_uring_queue_init: %s", strerror(-ret));
	ret = io_uring_register_iowq_max_workers(&ring, limits);
	if (ret) {
		say("  FAIL io_uring_register_iowq_max_workers: %s\n", strerror(-ret));
		io_uring_queue_exit(&ring);
		return T_FAIL;
	}
	for (i = 0; i < 2; i++) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);

		snprintf(fifo[i], sizeof(fifo[i]), "/tmp/zc-park-gate-%d-%c", getpid(), 'A' + i);
		unlink(fifo[i]);
		if (mkfifo(fifo[i], 0600)) {
			say("  FAIL mkfifo %s: %s\n", fifo[i], strerror(errno));
			goto out;
		}
		io_uring_prep_openat(sqe, AT_FDCWD, fifo[i], O_RDONLY | O_CLOEXEC, 0);
		sqe->flags |= IOSQE_ASYNC;
		sqe->user_data = i;
	}
	ret = io_uring_submit(&ring);
	if (ret != 2) {
		say("  FAIL submit: %d\n", ret);
		goto out;
	}
	sleep_ms(200);	/* A's opener blocks in fifo_open(); B's waits in the queue */
	hold[1] = mf_gate_release(fifo[1]);
	if (hold[1] < 0) {
		say("  FAIL releasing a gate whose opener has not started: %s\n",
		    strerror(-hold[1]));
		goto out;
	}
	hold[0] = mf_gate_release(fifo[0]);
	if (hold[0] < 0) {
		say("  FAIL releasing a gate whose opener waits: %s\n", strerror(-hold[0]));
		goto out;
	}
	while (seen != 3) {
		struct io_uring_cqe *cqe;

		ret = io_uring_wait_cqe_timeout(&ring, &cqe, &ts);
		if (ret) {
			say("  FAIL gate %s not passed within %lld s\n",
			    seen & 1 ? "B" : "A", (long long)ts.tv_sec);
			goto out;
		}
		if (cqe->user_data < 2) {
			opened[cqe->user_data] = cqe->res;
			seen |= 1 << cqe->user_data;
		}
		io_uring_cqe_seen(&ring, cqe);
	}
	if (opened[0] < 0 || opened[1] < 0) {
		say("  FAIL the gates' opens: %d, %d\n", opened[0], opened[1]);
		goto out;
	}
	say("  both gates passed, B released before its open(2) started\n");
	status = T_PASS;
out:
	/* a gate left shut: cancel its opener, so that the ring can go */
	if (seen != 3) {
		io_uring_prep_cancel64(io_uring_get_sqe(&ring), 0, IORING_ASYNC_CANCEL_ANY);
		io_uring_submit(&ring);
	}
	for (i = 0; i < 2; i++) {
		if (hold[i] >= 0)
			close(hold[i]);
		if (opened[i] >= 0)
			close(opened[i]);
		unlink(fifo[i]);
	}
	io_uring_queue_exit(&ring);
	return status;
}

static const struct zc_subtest subtests[] = {
	{ "capability", t_capability, false },
	{ "park_gate", t_park_gate, false },
};

int main(int argc, char **argv)
{
	return zc_main(argc, argv, subtests, ZC_ARRAY_SIZE(subtests));
}
