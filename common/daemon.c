// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Start-up: stdio, the daemon's fork and its waiting parent, and what
 * follows the kernel's acceptance of FUSE_INIT (the server's own step,
 * such as the bdi read-ahead, then success to the parent), on one start-up
 * thread that main joins before it frees anything.
 */
#include "server.h"
#include "srv.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* State shared by the init_done event, the start-up thread and main. */
static pthread_mutex_t srv_startup_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t srv_startup_cond = PTHREAD_COND_INITIALIZER;
static bool srv_init_done;	/* the kernel processed the INIT reply */
static int srv_init_error;	/* how INIT ended (fusezc init_done event) */
static bool srv_stopping;	/* the loop has ended */
static atomic_int srv_notify_fd = -1;	/* daemon mode: pipe to the parent */

struct srv_startup {
	void (*after_init)(void *data);
	void *data;
	bool daemon;
	bool keep_stderr;
};
static struct srv_startup srv_startup;

/*
 * Started with fd 0, 1 or 2 closed, the first fd opened (a root fd, the
 * daemon's status pipe) would take its number, and /dev/null dup'ed over
 * stdio at detach would replace it.  Fill the gaps with /dev/null first.
 * 0 or -errno.
 */
int srv_reserve_stdio(void)
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
 * libfuse stops its workers with pthread_cancel(), and glibc loads the
 * unwinder (libgcc_s) on the first cancellation: with the fd table full at
 * that moment (every fd taken by files open through the mount) it cannot,
 * and aborts the daemon.  Loaded now, glibc finds it loaded then.  Kept
 * for the life of the process (the handle is never closed).
 */
void srv_load_unwinder(void)
{
	if (!dlopen("libgcc_s.so.1", RTLD_NOW | RTLD_NODELETE))
		fprintf(stderr, "%s: cannot load libgcc_s.so.1 (%s): a stop "
			"with every fd in use would abort\n", srv_name, dlerror());
}

/*
 * Daemon mode: the parent stays until the child reports that the kernel
 * accepted INIT or that start-up failed, and exits with that status, so
 * that mount(8), mount.fuse3 and scripts see failures such as
 * -o zerocopy=required on a kernel without zero copy.  Once only; a
 * no-op in the foreground.
 */
void srv_notify_parent(bool ok)
{
	int fd = atomic_exchange(&srv_notify_fd, -1);
	unsigned char status = ok ? 0 : 1;

	if (fd < 0)
		return;
	(void)!write(fd, &status, 1);
	close(fd);
}

/* Fork; the parent waits for srv_notify_parent() and exits with its word.
 * In the child: 0, or one line and -errno. */
int srv_fork_daemon(void)
{
	unsigned char status = 1;
	int pfd[2], err;
	pid_t pid;

	if (pipe2(pfd, O_CLOEXEC) == -1) {
		err = -errno;
		fprintf(stderr, "%s: pipe: %s\n", srv_name, strerror(-err));
		return err;
	}
	pid = fork();
	if (pid == -1) {
		err = -errno;
		fprintf(stderr, "%s: fork: %s\n", srv_name, strerror(-err));
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
	atomic_store(&srv_notify_fd, pfd[1]);
	if (setsid() == -1) {
		err = -errno;
		fprintf(stderr, "%s: setsid: %s\n", srv_name, strerror(-err));
		return err;
	}
	return 0;
}

static void srv_detach_stdio(bool keep_stderr)
{
	int nullfd = open("/dev/null", O_RDWR | O_CLOEXEC);

	if (nullfd == -1)
		return;
	(void)dup2(nullfd, STDIN_FILENO);
	(void)dup2(nullfd, STDOUT_FILENO);
	if (!keep_stderr)
		(void)dup2(nullfd, STDERR_FILENO);
	close(nullfd);
}

/* The kernel has processed the INIT reply (@error 0), or INIT failed
 * (-errno): from libfuse-zc's init_done event, once. */
void srv_init_replied(int error)
{
	pthread_mutex_lock(&srv_startup_lock);
	srv_init_error = error;
	srv_init_done = true;
	pthread_cond_broadcast(&srv_startup_cond);
	pthread_mutex_unlock(&srv_startup_lock);
}

/*
 * After the kernel has accepted INIT: the server's step, then, in daemon
 * mode, success to the waiting parent, so that the parent returns with
 * the mount complete.  When INIT failed (zerocopy=required on a kernel
 * without it) the loop ends with -EOPNOTSUPP and main reports the failure.
 * Not on a worker: the step may wait, and the workers must serve.  It must
 * not touch the mount: a STATFS in flight would make an early unmount
 * fail with EBUSY.
 */
static void *srv_startup_thread(void *arg)
{
	const struct srv_startup *st = arg;
	bool accepted;

	pthread_mutex_lock(&srv_startup_lock);
	while (!srv_init_done && !srv_stopping)
		pthread_cond_wait(&srv_startup_cond, &srv_startup_lock);
	accepted = !srv_stopping && srv_init_error == 0;
	pthread_mutex_unlock(&srv_startup_lock);
	if (!accepted)
		return NULL;
	if (st->after_init)
		st->after_init(st->data);
	if (!st->daemon)
		return NULL;
	pthread_mutex_lock(&srv_startup_lock);
	if (!srv_stopping) {
		srv_detach_stdio(st->keep_stderr);
		srv_notify_parent(true);
	}
	pthread_mutex_unlock(&srv_startup_lock);
	return NULL;
}

/* Before the loop; 0 or -errno after one line. */
int srv_startup_start(void (*after_init)(void *data), void *data,
		      bool daemon, bool keep_stderr, pthread_t *thread)
{
	int err;

	srv_startup = (struct srv_startup){ after_init, data, daemon, keep_stderr };
	err = pthread_create(thread, NULL, srv_startup_thread, &srv_startup);
	if (err)
		fprintf(stderr, "%s: start-up thread: %s\n", srv_name, strerror(err));
	return -err;
}

/* After the loop: wake the thread if INIT never came, and wait for it. */
void srv_startup_stop(pthread_t thread)
{
	pthread_mutex_lock(&srv_startup_lock);
	srv_stopping = true;
	pthread_cond_broadcast(&srv_startup_cond);
	pthread_mutex_unlock(&srv_startup_lock);
	pthread_join(thread, NULL);
}

/*
 * A read-ahead of @kb KiB above what FUSE_INIT can grant (the kernel
 * offers its bdi default, 128 KiB, and keeps the minimum), set on the
 * mount's bdi once the kernel has processed the INIT reply, which would
 * lower it again.  Needs root with a writable sysfs; otherwise one line
 * (only with -d when the user did not @asked for it) and the kernel's
 * value stays.  Reads only /proc and /sys: nothing on the mount.
 */
void srv_raise_readahead(const char *mountpoint, unsigned int kb, bool asked,
			 bool debug)
{
	int err = fusezc_set_readahead(mountpoint, kb);

	if (err && (asked || debug))
		fprintf(stderr, "%s: cannot raise the read-ahead to %u KiB (%s); "
			"the kernel's stays\n", srv_name, kb, strerror(-err));
	else if (!err && debug)
		fprintf(stderr, "%s: read-ahead of %s: %u KiB\n", srv_name, mountpoint, kb);
}
