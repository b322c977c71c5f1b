// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * passthrough_zc: flock() waits off the worker pool, in bounded threads.
 *
 * A blocking FUSE_SETLKW for flock() may last as long as another process
 * holds the lock.  Waiting in a worker takes one of libfuse's workers (at
 * most max_threads, 1 with -s): with as many waiters as workers nobody is
 * left to serve the holder's unlock, FLUSH or RELEASE, nor the
 * FUSE_INTERRUPT of a waiter's Ctrl-C, and the mount hangs.  So a worker
 * only ever tries without blocking; when the lock is taken, the wait is
 * handed over:
 *
 *  - to a thread of its own, which blocks in flock() and replies, while
 *    fewer than PZC_LOCK_THREADS such threads exist (any user can start
 *    waits: their threads must be bounded);
 *  - else to the queue, which one poller thread tries without blocking
 *    every PZC_LOCK_POLL_NS (a lock that is free is granted however many
 *    waits block on another), and from which a wait thread that is done
 *    takes the oldest wait to block on.
 *
 * A wait ends with the lock, or an error of flock(), or cancelled: by
 * FUSE_INTERRUPT (the waiting process got a signal) with EINTR, which the
 * kernel turns into a restart or EINTR for that signal; at shutdown with
 * ENOLCK.  Never EINTR at shutdown: the waiter has no signal pending, and
 * the kernel's -ERESTARTSYS for a lock would reach it as errno 512.
 * A thread is cancelled with PZC_LOCK_WAKE, whose handler does nothing
 * but make flock() fail with EINTR; the signal can land just before the
 * thread enters flock() and be lost, so it is repeated until the thread
 * has answered, as libfuse's own high-level interrupt handling does.
 *
 * libfuse may run an interrupt callback after the request was answered
 * (it picks the callback up before the reply clears it), so the callback
 * gets the file system, never the wait, and looks the wait up by request
 * in a list that a wait leaves before its reply.  Nothing replies from
 * the callback itself: called from fuse_req_interrupt_func(), a reply
 * would free the request under its own lock.
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
#define PZC_LOCK_POLL_NS	10000000L	/* 10 ms between queue sweeps */
#define PZC_LOCK_THREADS	8		/* threads blocked in flock() */

enum pzc_wait_state {
	PZC_WAIT_NEW,		/* being handed over by the worker */
	PZC_WAIT_THREAD,	/* a thread blocks on it */
	PZC_WAIT_QUEUED,	/* the poller tries it */
};

struct pzc_lock_wait {
	struct pzc_lock_wait *next;	/* locks->waits, newest first */
	struct pzc_locks *locks;
	fuse_req_t req;
	int fd;
	int op;				/* LOCK_SH or LOCK_EX, blocking */
	enum pzc_wait_state state;
	int cancel;			/* errno to answer instead, or 0 */
	pthread_t thread;		/* PZC_WAIT_THREAD */
};

static void pzc_lock_wake_handler(int sig)
{
	(void)sig;	/* only here to interrupt flock() */
}

int pzc_lock_init(struct pzc_fs *fs)
{
	struct pzc_locks *locks = &fs->locks;
	struct sigaction sa;

	memset(locks, 0, sizeof(*locks));
	pthread_mutex_init(&locks->lock, NULL);
	pthread_cond_init(&locks->left, NULL);
	pthread_cond_init(&locks->poll, NULL);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = pzc_lock_wake_handler;	/* no SA_RESTART: EINTR */
	sigemptyset(&sa.sa_mask);
	return sigaction(PZC_LOCK_WAKE, &sa, NULL) == -1 ? -errno : 0;
}

static void pzc_deadline(struct timespec *ts, long ns)
{
	clock_gettime(CLOCK_REALTIME, ts);
	ts->tv_nsec += ns;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

/* Called with locks->lock held. */
static struct pzc_lock_wait *pzc_lock_find(struct pzc_locks *locks, fuse_req_t req)
{
	struct pzc_lock_wait *w;

	for (w = locks->waits; w && w->req != req; w = w->next)
		;
	return w;
}

/* Called with locks->lock held; after this @w may be answered. */
static void pzc_lock_unlink(struct pzc_locks *locks, struct pzc_lock_wait *w)
{
	struct pzc_lock_wait **pp;

	for (pp = &locks->waits; *pp != w; pp = &(*pp)->next)
		;
	*pp = w->next;
	if (w->state == PZC_WAIT_QUEUED)
		locks->nqueued--;
	pthread_cond_broadcast(&locks->left);
}

/* The oldest queued wait, or NULL.  Called with locks->lock held. */
static struct pzc_lock_wait *pzc_lock_oldest_queued(struct pzc_locks *locks)
{
	struct pzc_lock_wait *w, *oldest = NULL;

	for (w = locks->waits; w; w = w->next)
		if (w->state == PZC_WAIT_QUEUED)
			oldest = w;
	return oldest;
}

/*
 * Cancel @w with @err and wait until it has been answered (and left the
 * list).  A wait still being handed over by its worker is only marked
 * unless @wait_new (the interrupt callback may run in that very worker,
 * from fuse_req_interrupt_func()): its thread or the poller sees the
 * cancel first thing.  Called with locks->lock held; @w may be freed when
 * this returns.
 */
static void pzc_lock_cancel(struct pzc_locks *locks, struct pzc_lock_wait *w, int err,
			    bool wait_new)
{
	fuse_req_t req = w->req;

	w->cancel = err;
	while ((w = pzc_lock_find(locks, req)) && (wait_new || w->state != PZC_WAIT_NEW)) {
		struct timespec until;

		if (w->state == PZC_WAIT_THREAD)
			pthread_kill(w->thread, PZC_LOCK_WAKE);
		else if (w->state == PZC_WAIT_QUEUED)
			pthread_cond_signal(&locks->poll);
		pzc_deadline(&until, PZC_LOCK_RESEND_NS);
		pthread_cond_timedwait(&locks->left, &locks->lock, &until);
	}
}

/* FUSE_INTERRUPT for a request: cancel its wait, if it still has one. */
static void pzc_lock_interrupted(fuse_req_t req, void *data)
{
	struct pzc_locks *locks = data;
	struct pzc_lock_wait *w;

	pthread_mutex_lock(&locks->lock);
	w = pzc_lock_find(locks, req);
	if (w)
		pzc_lock_cancel(locks, w, EINTR, false);
	pthread_mutex_unlock(&locks->lock);
}

/* Signals for the process (SIGINT, SIGTERM: unmount) go to other threads. */
static void pzc_lock_block_signals(bool wake)
{
	sigset_t mask;

	sigfillset(&mask);
	if (wake)
		sigdelset(&mask, PZC_LOCK_WAKE);
	pthread_sigmask(SIG_SETMASK, &mask, NULL);
}

/* Block in flock() for @w: 0 (granted, even if cancelled meanwhile) or
 * the errno to answer. */
static int pzc_lock_block(struct pzc_locks *locks, struct pzc_lock_wait *w)
{
	int cancel;

	for (;;) {
		pthread_mutex_lock(&locks->lock);
		cancel = w->cancel;
		pthread_mutex_unlock(&locks->lock);
		if (cancel)
			return cancel;
		if (flock(w->fd, w->op) == 0)
			return 0;
		if (errno != EINTR)
			return errno;
	}
}

/* A wait thread: blocks for its wait, then for queued ones while any. */
static void *pzc_lock_thread(void *arg)
{
	struct pzc_lock_wait *w = arg;
	struct pzc_locks *locks = w->locks;
	int err;

	pzc_lock_block_signals(true);
	while (w) {
		err = pzc_lock_block(locks, w);
		pthread_mutex_lock(&locks->lock);
		pzc_lock_unlink(locks, w);
		pthread_mutex_unlock(&locks->lock);
		fuse_reply_err(w->req, err);
		free(w);

		pthread_mutex_lock(&locks->lock);
		w = locks->stopping ? NULL : pzc_lock_oldest_queued(locks);
		if (w) {
			locks->nqueued--;
			w->state = PZC_WAIT_THREAD;
			w->thread = pthread_self();
		} else {
			locks->nthreads--;
			pthread_cond_broadcast(&locks->left);
		}
		pthread_mutex_unlock(&locks->lock);
	}
	return NULL;
}

/*
 * The poller: while waits are queued, every PZC_LOCK_POLL_NS (or when one
 * is cancelled), try each without blocking; answer what is granted,
 * failed or cancelled.
 */
static void *pzc_lock_poller(void *arg)
{
	struct pzc_locks *locks = arg;
	struct pzc_lock_wait *w, *next, *done;
	struct timespec until;

	pzc_lock_block_signals(false);
	pthread_mutex_lock(&locks->lock);
	while (!locks->stopping || locks->nqueued) {
		if (!locks->nqueued) {
			pthread_cond_wait(&locks->poll, &locks->lock);
			continue;
		}
		done = NULL;
		for (w = locks->waits; w; w = next) {
			next = w->next;
			if (w->state != PZC_WAIT_QUEUED)
				continue;
			if (!w->cancel) {
				int res = flock(w->fd, w->op | LOCK_NB);

				if (res == -1 && (errno == EWOULDBLOCK || errno == EINTR))
					continue;
				w->cancel = res == -1 ? errno : 0;
			}
			pzc_lock_unlink(locks, w);
			w->next = done;
			done = w;
		}
		if (!done) {
			pzc_deadline(&until, PZC_LOCK_POLL_NS);
			pthread_cond_timedwait(&locks->poll, &locks->lock, &until);
			continue;
		}
		pthread_mutex_unlock(&locks->lock);
		for (w = done; w; w = next) {
			next = w->next;
			fuse_reply_err(w->req, w->cancel);
			free(w);
		}
		pthread_mutex_lock(&locks->lock);
	}
	pthread_mutex_unlock(&locks->lock);
	return NULL;
}

/* A thread of its own for @w while there are fewer than PZC_LOCK_THREADS,
 * else the queue.  0, or -errno and @w still PZC_WAIT_NEW.  Called with
 * locks->lock held. */
static int pzc_lock_hand_over(struct pzc_locks *locks, struct pzc_lock_wait *w)
{
	pthread_attr_t attr;
	int err;

	if (locks->nthreads < PZC_LOCK_THREADS) {
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		err = pthread_create(&w->thread, &attr, pzc_lock_thread, w);
		pthread_attr_destroy(&attr);
		if (!err) {
			w->state = PZC_WAIT_THREAD;
			locks->nthreads++;
			return 0;
		}
	}
	if (!locks->poller_started) {
		err = pthread_create(&locks->poller, NULL, pzc_lock_poller, locks);
		if (err)
			return -err;
		locks->poller_started = true;
	}
	w->state = PZC_WAIT_QUEUED;
	locks->nqueued++;
	pthread_cond_signal(&locks->poll);
	return 0;
}

/*
 * flock(2) maps one to one: a FUSE open is one open file description here
 * (@fd).  The worker answers everything that does not block.
 */
void pzc_lock_flock(fuse_req_t req, int fd, int op)
{
	struct pzc_fs *fs = fuse_req_userdata(req);
	struct pzc_locks *locks = &fs->locks;
	struct pzc_lock_wait *w;
	int err;

	if (flock(fd, op | LOCK_NB) == 0)
		return (void)fuse_reply_err(req, 0);
	if (errno != EWOULDBLOCK || (op & LOCK_NB))
		return (void)fuse_reply_err(req, errno);

	w = calloc(1, sizeof(*w));
	if (!w)
		return (void)fuse_reply_err(req, ENOLCK);
	w->locks = locks;
	w->req = req;
	w->fd = fd;
	w->op = op;
	w->state = PZC_WAIT_NEW;
	pthread_mutex_lock(&locks->lock);
	w->next = locks->waits;
	locks->waits = w;
	pthread_mutex_unlock(&locks->lock);
	/* Before anyone can answer it: no callback may be set on an answered
	 * request.  An interrupt that came first calls back from here and
	 * only marks the wait cancelled. */
	fuse_req_interrupt_func(req, pzc_lock_interrupted, locks);

	pthread_mutex_lock(&locks->lock);
	err = pzc_lock_hand_over(locks, w);
	if (err)
		pzc_lock_unlink(locks, w);
	pthread_mutex_unlock(&locks->lock);
	if (err) {
		free(w);
		fuse_reply_err(req, ENOLCK);
	}
}

/* After the session loop: answer every wait (ENOLCK) and wait for every
 * lock thread to end, before the session goes away. */
void pzc_lock_shutdown(struct pzc_fs *fs)
{
	struct pzc_locks *locks = &fs->locks;
	bool poller;

	pthread_mutex_lock(&locks->lock);
	locks->stopping = true;
	while (locks->waits)
		pzc_lock_cancel(locks, locks->waits, ENOLCK, true);
	while (locks->nthreads)
		pthread_cond_wait(&locks->left, &locks->lock);
	poller = locks->poller_started;
	pthread_cond_broadcast(&locks->poll);
	pthread_mutex_unlock(&locks->lock);
	if (poller)
		pthread_join(locks->poller, NULL);
	pthread_cond_destroy(&locks->poll);
	pthread_cond_destroy(&locks->left);
	pthread_mutex_destroy(&locks->lock);
}
