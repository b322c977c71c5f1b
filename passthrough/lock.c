// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * passthrough_zc: flock() waits off the worker pool.
 *
 * A blocking FUSE_SETLKW for flock() may last as long as another process
 * holds the lock.  Waiting in a worker takes one of the library's fixed
 * pool (4 workers, 1 with -s): with as many waiters as workers nobody is
 * left to serve the holder's unlock, FLUSH or RELEASE, nor the
 * FUSE_INTERRUPT of a waiter's Ctrl-C, and the mount hangs.  So a worker
 * only ever tries without blocking; when the lock is taken, a thread of
 * the request's own does the blocking flock() and replies.
 *
 * FUSE_INTERRUPT (the waiting process got a signal) is honoured: the
 * interrupt callback marks the wait cancelled and sends the waiter thread
 * PZC_LOCK_WAKE, whose handler does nothing but make flock() fail with
 * EINTR; the request is then answered with EINTR.  The signal can land
 * just before the thread enters flock() and be lost, so the callback
 * repeats it until the thread has answered (the first one nearly always
 * suffices), as libfuse's own high-level interrupt handling does.
 *
 * libfuse may run an interrupt callback after the request was answered
 * (it picks the callback up before the reply clears it), so the callback
 * gets the file system, never the wait, and looks the wait up by request
 * in a list that a wait leaves before its reply.
 *
 * POSIX locks (fcntl) need no such care: without a setlk handler the
 * kernel keeps them locally and never sends them here.
 */
#include "pzc.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>

#define PZC_LOCK_WAKE		SIGRTMIN
#define PZC_LOCK_RESEND_NS	10000000L	/* 10 ms between wake signals */

struct pzc_lock_wait {
	struct pzc_lock_wait *next;	/* fs->lock_waits; fs->lock_waits_lock */
	struct pzc_fs *fs;
	fuse_req_t req;
	int fd;
	int op;				/* LOCK_SH or LOCK_EX, blocking */
	bool started;			/* thread is valid; lock_waits_lock */
	bool cancelled;			/* lock_waits_lock */
	pthread_t thread;
};

static void pzc_lock_wake_handler(int sig)
{
	(void)sig;	/* only here to interrupt flock() */
}

int pzc_lock_init(struct pzc_fs *fs)
{
	struct sigaction sa;

	pthread_mutex_init(&fs->lock_waits_lock, NULL);
	pthread_cond_init(&fs->lock_waits_cond, NULL);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = pzc_lock_wake_handler;	/* no SA_RESTART: EINTR */
	sigemptyset(&sa.sa_mask);
	return sigaction(PZC_LOCK_WAKE, &sa, NULL) == -1 ? -errno : 0;
}

/* Called with lock_waits_lock held. */
static struct pzc_lock_wait *pzc_lock_find(struct pzc_fs *fs, fuse_req_t req)
{
	struct pzc_lock_wait *w;

	for (w = fs->lock_waits; w && w->req != req; w = w->next)
		;
	return w;
}

/* Called with lock_waits_lock held. */
static void pzc_lock_unlink(struct pzc_fs *fs, struct pzc_lock_wait *w)
{
	struct pzc_lock_wait **pp;

	for (pp = &fs->lock_waits; *pp != w; pp = &(*pp)->next)
		;
	*pp = w->next;
}

/*
 * Cancel @w and wait until its thread has answered (and left the list).
 * Called with lock_waits_lock held; @w may be freed when this returns.
 */
static void pzc_lock_cancel(struct pzc_fs *fs, struct pzc_lock_wait *w)
{
	fuse_req_t req = w->req;

	w->cancelled = true;
	if (!w->started)
		return;		/* the thread will see it before blocking */
	while ((w = pzc_lock_find(fs, req))) {
		struct timespec until;

		pthread_kill(w->thread, PZC_LOCK_WAKE);
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += PZC_LOCK_RESEND_NS;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&fs->lock_waits_cond, &fs->lock_waits_lock,
				       &until);
	}
}

/* FUSE_INTERRUPT for a request: cancel its wait, if it still has one. */
static void pzc_lock_interrupted(fuse_req_t req, void *data)
{
	struct pzc_fs *fs = data;
	struct pzc_lock_wait *w;

	pthread_mutex_lock(&fs->lock_waits_lock);
	w = pzc_lock_find(fs, req);
	if (w)
		pzc_lock_cancel(fs, w);
	pthread_mutex_unlock(&fs->lock_waits_lock);
}

static void *pzc_lock_thread(void *arg)
{
	struct pzc_lock_wait *w = arg;
	struct pzc_fs *fs = w->fs;
	sigset_t mask;
	bool cancelled;
	int err;

	/* Process signals (SIGINT, SIGTERM: unmount) go to other threads. */
	sigfillset(&mask);
	sigdelset(&mask, PZC_LOCK_WAKE);
	pthread_sigmask(SIG_SETMASK, &mask, NULL);
	for (;;) {
		pthread_mutex_lock(&fs->lock_waits_lock);
		cancelled = w->cancelled;
		pthread_mutex_unlock(&fs->lock_waits_lock);
		if (cancelled) {
			err = EINTR;
			break;
		}
		if (flock(w->fd, w->op) == 0) {
			err = 0;	/* granted, even if cancelled meanwhile */
			break;
		}
		if (errno != EINTR) {
			err = errno;
			break;
		}
	}
	pthread_mutex_lock(&fs->lock_waits_lock);
	pzc_lock_unlink(fs, w);
	pthread_cond_broadcast(&fs->lock_waits_cond);
	pthread_mutex_unlock(&fs->lock_waits_lock);
	fuse_reply_err(w->req, err);
	free(w);
	return NULL;
}

/*
 * flock(2) maps one to one: a FUSE open is one open file description here
 * (@fd).  The worker answers everything that does not block.
 */
void pzc_lock_flock(fuse_req_t req, int fd, int op)
{
	struct pzc_fs *fs = fuse_req_userdata(req);
	struct pzc_lock_wait *w;
	pthread_attr_t attr;
	int err;

	if (flock(fd, op | LOCK_NB) == 0)
		return (void)fuse_reply_err(req, 0);
	if (errno != EWOULDBLOCK || (op & LOCK_NB))
		return (void)fuse_reply_err(req, errno);

	w = calloc(1, sizeof(*w));
	if (!w)
		return (void)fuse_reply_err(req, ENOLCK);
	w->fs = fs;
	w->req = req;
	w->fd = fd;
	w->op = op;
	pthread_mutex_lock(&fs->lock_waits_lock);
	w->next = fs->lock_waits;
	fs->lock_waits = w;
	pthread_mutex_unlock(&fs->lock_waits_lock);
	/* Before the thread exists: it answers, and no callback may be set
	 * on an answered request.  An interrupt that came first calls back
	 * from here. */
	fuse_req_interrupt_func(req, pzc_lock_interrupted, fs);

	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_mutex_lock(&fs->lock_waits_lock);
	err = pthread_create(&w->thread, &attr, pzc_lock_thread, w);
	w->started = !err;
	if (err)
		pzc_lock_unlink(fs, w);
	pthread_mutex_unlock(&fs->lock_waits_lock);
	pthread_attr_destroy(&attr);
	if (err) {
		free(w);
		fuse_reply_err(req, ENOLCK);
	}
}

/* After the session loop: answer every wait (EINTR) before the session
 * goes away. */
void pzc_lock_shutdown(struct pzc_fs *fs)
{
	pthread_mutex_lock(&fs->lock_waits_lock);
	while (fs->lock_waits)
		pzc_lock_cancel(fs, fs->lock_waits);
	pthread_mutex_unlock(&fs->lock_waits_lock);
	pthread_cond_destroy(&fs->lock_waits_cond);
	pthread_mutex_destroy(&fs->lock_waits_lock);
}
