// SPDX-License-Identifier: LGPL-2.1-or-later
/* Sessions by /dev/fuse fd, and the state of each worker (see worker.h). */
#include "worker.h"

#include "reaper.h"
#include "ring.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

__thread struct fusezc_worker *fzc_tls_worker;

/* ------------------------------------------------------------------ */
/* Sessions by /dev/fuse fd                                            */

static pthread_mutex_t sessions_lock = PTHREAD_MUTEX_INITIALIZER;
static struct fusezc_session *sessions;
/*
 * The session whose loop runs with clone_fd: libfuse opens the clones, so
 * a clone's fd number says nothing of its session.  One such loop at a
 * time per process (fusezc_session_loop() refuses a second one).
 */
static struct fusezc_session *clone_fd_session;

void fzc_sessions_add(struct fusezc_session *zs)
{
	pthread_mutex_lock(&sessions_lock);
	zs->next_session = sessions;
	sessions = zs;
	pthread_mutex_unlock(&sessions_lock);
}

void fzc_sessions_del(struct fusezc_session *zs)
{
	struct fusezc_session **p;

	pthread_mutex_lock(&sessions_lock);
	if (clone_fd_session == zs)
		clone_fd_session = NULL;
	for (p = &sessions; *p != NULL; p = &(*p)->next_session) {
		if (*p == zs) {
			*p = zs->next_session;
			break;
		}
	}
	pthread_mutex_unlock(&sessions_lock);
}

struct fusezc_session *fzc_session_by_fd(int fd)
{
	struct fusezc_session *zs;

	pthread_mutex_lock(&sessions_lock);
	for (zs = sessions; zs != NULL && zs->fuse_fd != fd; zs = zs->next_session)
		;
	if (zs == NULL)
		zs = clone_fd_session;
	pthread_mutex_unlock(&sessions_lock);
	return zs;
}

int fzc_claim_clone_fds(struct fusezc_session *zs, bool claim)
{
	int res = 0;

	pthread_mutex_lock(&sessions_lock);
	if (!claim) {
		if (clone_fd_session == zs)
			clone_fd_session = NULL;
	} else if (clone_fd_session != NULL && clone_fd_session != zs) {
		res = -EBUSY;
	} else {
		clone_fd_session = zs;
	}
	pthread_mutex_unlock(&sessions_lock);
	return res;
}

/* ------------------------------------------------------------------ */
/* The state of a thread of libfuse's loop                             */

static pthread_key_t worker_key;
static pthread_once_t worker_key_once = PTHREAD_ONCE_INIT;
static int worker_key_error;

/*
 * Answer what @w has in flight, then let go of its ring and of its own
 * descriptor of its clone (only now: a lending's answer may use it).
 */
static void worker_release(struct fusezc_worker *w)
{
	fzc_lendings_drain(w);
	if (w->ring_ready)
		fzc_kops->ring_exit(w);
	w->ring_ready = false;
	w->ring_fixed = false;
	if (w->devref >= 0)
		close(w->devref);
	w->devref = -1;
}

/* At the exit of a thread that read requests: nothing here uses its
 * session, which libfuse's loop outlives. */
static void worker_free(void *data)
{
	struct fusezc_worker *w = data;
	struct fusezc_session *zs = w->zs;

	if (fzc_tls_worker == w)
		fzc_tls_worker = NULL;
	worker_release(w);
	free(w->copybuf);
	w->copybuf = NULL;
	w->copybuf_size = 0;
	if (w->memfd >= 0)
		close(w->memfd);
	w->memfd = -1;
	/* The reaper may still hold an event for it: kept for reuse. */
	pthread_mutex_lock(&zs->reaper_lock);
	w->next_retired = zs->retired;
	zs->retired = w;
	pthread_mutex_unlock(&zs->reaper_lock);
}

/* A worker state for a new thread of @zs: a retired one, or a new one. */
static struct fusezc_worker *worker_new(struct fusezc_session *zs)
{
	struct fusezc_worker *w;

	pthread_mutex_lock(&zs->reaper_lock);
	w = zs->retired;
	if (w != NULL)
		zs->retired = w->next_retired;
	pthread_mutex_unlock(&zs->reaper_lock);
	if (w != NULL) {
		pthread_mutex_lock(&w->lend_lock);
		w->next_retired = NULL;
		w->in_valid = false;
		w->pend = FZC_PEND_NONE;
		w->ring_err = 0;
		w->ring_retry_at = 0;
		w->ring_backoff = 0;
		pthread_mutex_unlock(&w->lend_lock);
		return w;
	}
	w = calloc(1, sizeof(*w));
	if (w != NULL) {
		pthread_mutex_init(&w->lend_lock, NULL);
		w->memfd = -1;
		w->devref = -1;
	}
	return w;
}

void fzc_workers_free_retired(struct fusezc_session *zs)
{
	struct fusezc_worker *w;

	while ((w = zs->retired) != NULL) {
		zs->retired = w->next_retired;
		pthread_mutex_destroy(&w->lend_lock);
		free(w);
	}
}

static void worker_key_create(void)
{
	worker_key_error = pthread_key_create(&worker_key, worker_free);
}

int fzc_workers_init(void)
{
	pthread_once(&worker_key_once, worker_key_create);
	return -worker_key_error;
}

struct fusezc_worker *fzc_worker_for_fd(int fd)
{
	struct fusezc_worker *w = fzc_tls_worker;
	struct fusezc_session *zs;

	if (w != NULL && w->devfd == fd)
		return w;
	zs = fzc_session_by_fd(fd);
	if (zs == NULL)
		return NULL;
	if (w == NULL) {
		w = worker_new(zs);
		if (w == NULL)
			return NULL;
		w->zs = zs;
		if (pthread_setspecific(worker_key, w) != 0) {
			worker_free(w);
			return NULL;
		}
		fzc_tls_worker = w;
	} else {
		/* a ring and lendings made for another session or file */
		worker_release(w);
		w->ring_err = 0;
		w->ring_retry_at = 0;
		w->ring_backoff = 0;
	}
	w->zs = zs;
	w->devfd = fd;
	/* a clone: libfuse may close it while lendings are in flight
	 * (none are made asynchronously without this reference) */
	if (fd != zs->fuse_fd)
		w->devref = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	return w;
}
