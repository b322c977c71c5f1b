// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * passthrough_zc start-up: stdio, the daemon's fork and its waiting
 * parent, and what follows the kernel's acceptance of FUSE_INIT (the bdi
 * read-ahead, then success to the parent), on one start-up thread that
 * main joins before it frees anything.
 */
#include "pzc.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* State shared by the init_done event, the start-up thread and main. */
static pthread_mutex_t pzc_startup_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pzc_startup_cond = PTHREAD_COND_INITIALIZER;
static bool pzc_init_replied;	/* the kernel processed the INIT reply */
static int pzc_init_error;	/* how INIT ended (fusezc init_done event) */
static bool pzc_stopping;	/* the loop has ended */
static atomic_int pzc_notify_fd = -1;	/* daemon mode: pipe to the parent */

/*
 * Started with fd 0, 1 or 2 closed, the root fd or the daemon's status pipe
 * would take its number, and /dev/null dup'ed over stdio at detach would
 * replace it.  Fill the gaps with /dev/null first.  0 or -errno.
 */
int pzc_reserve_stdio(void)
{
	int fd;

	for (fd = STDIN_FILENO; fd <= STDERR_FILENO; fd++) {
		if (fcntl(fd, F_GETFD) != -1 || errno != EBADF)
			continue;
		/* the lowest free number: this one */
		if (open("/dev/null", O_RDWR) == -1)
			return -errno;
	}
	return 0;
}

/*
 * Daemon mode: the parent stays until the child reports that the kernel
 * accepted INIT or that start-up failed, and exits with that status, so
 * that mount(8), mount.fuse3 and scripts see failures such as
 * -o zerocopy=required on a kernel without zero copy.  Once only.
 */
void pzc_notify_parent(bool ok)
{
	int fd = atomic_exchange(&pzc_notify_fd, -1);
	unsigned char status = ok ? 0 : 1;

	if (fd < 0)
		return;
	(void)!write(fd, &status, 1);
	close(fd);
}

/* Fork; the parent waits for pzc_notify_parent() and exits.  In the child:
 * 0, or one line and -errno. */
int pzc_fork_daemon(void)
{
	unsigned char status = 1;
	int pfd[2], err;
	pid_t pid;

	if (pipe2(pfd, O_CLOEXEC) == -1) {
		err = -errno;
		fprintf(stderr, "passthrough_zc: pipe: %s\n", strerror(-err));
		return err;
	}
	pid = fork();
	if (pid == -1) {
		err = -errno;
		fprintf(stderr, "passthrough_zc: fork: %s\n", strerror(-err));
		close(pfd[0]);
		close(pfd[1]);
		return err;
	}
	if (pid) {
		close(pfd[1]);
		if (read(pfd[0], &status, 1) != 1)
			status = 1;	/* the child died before reporting */
		_exit(status);
	}
	close(pfd[0]);
	atomic_store(&pzc_notify_fd, pfd[1]);
	if (setsid() == -1) {
		err = -errno;
		fprintf(stderr, "passthrough_zc: setsid: %s\n", strerror(-err));
		return err;
	}
	return 0;
}

static void pzc_detach_stdio(void)
{
	int nullfd = open("/dev/null", O_RDWR | O_CLOEXEC);

	if (nullfd == -1)
		return;
	(void)dup2(nullfd, STDIN_FILENO);
	(void)dup2(nullfd, STDOUT_FILENO);
	(void)dup2(nullfd, STDERR_FILENO);
	close(nullfd);
}

/* The kernel has processed the INIT reply (@error 0), or INIT failed
 * (-errno); from libfuse-zc's init_done event, once. */
void pzc_startup_init_replied(int error)
{
	pthread_mutex_lock(&pzc_startup_lock);
	pzc_init_error = error;
	pzc_init_replied = true;
	pthread_cond_broadcast(&pzc_startup_cond);
	pthread_mutex_unlock(&pzc_startup_lock);
}

/*
 * After the kernel has accepted INIT: the bdi read-ahead, then, in daemon
 * mode, success to the waiting parent, so that the parent returns with
 * the mount complete.  When INIT failed (zerocopy=required on a kernel
 * without it) the loop ends with -EOPNOTSUPP and main reports the failure.
 * No file system access here: a STATFS in flight would make an early
 * unmount fail with EBUSY.
 */
static void *pzc_startup_thread(void *arg)
{
	struct pzc_fs *fs = arg;
	bool accepted;

	pthread_mutex_lock(&pzc_startup_lock);
	while (!pzc_init_replied && !pzc_stopping)
		pthread_cond_wait(&pzc_startup_cond, &pzc_startup_lock);
	accepted = !pzc_stopping && pzc_init_error == 0;
	pthread_mutex_unlock(&pzc_startup_lock);
	if (!accepted)
		return NULL;
	if (fs->raise_readahead_kb)
		pzc_raise_readahead(fs);
	if (fs->cfg.foreground)
		return NULL;
	pthread_mutex_lock(&pzc_startup_lock);
	if (!pzc_stopping) {
		if (!fs->cfg.debug)
			pzc_detach_stdio();
		pzc_notify_parent(true);
	}
	pthread_mutex_unlock(&pzc_startup_lock);
	return NULL;
}

int pzc_startup_start(struct pzc_fs *fs, pthread_t *thread)
{
	return -pthread_create(thread, NULL, pzc_startup_thread, fs);
}

/* After the loop: wake the thread if INIT never came, and wait for it. */
void pzc_startup_stop(pthread_t thread)
{
	pthread_mutex_lock(&pzc_startup_lock);
	pzc_stopping = true;
	pthread_cond_broadcast(&pzc_startup_cond);
	pthread_mutex_unlock(&pzc_startup_lock);
	pthread_join(thread, NULL);
}
