// SPDX-License-Identifier: LGPL-2.1-or-later
/* Lendings in flight and the reaper thread (see reaper.h). */
#include "reaper.h"

#include "ring.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

/*
 * w->lend_lock, taken with cancellation off: a thread cancelled while it
 * held the lock (in a fallback's pread() or writev()) would unwind into its
 * destructor, which takes the lock again.
 */
static int lend_lock(struct fusezc_worker *w)
{
	int old;

	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
	pthread_mutex_lock(&w->lend_lock);
	return old;
}

static void lend_unlock(struct fusezc_worker *w, int cancel_state)
{
	pthread_mutex_unlock(&w->lend_lock);
	pthread_setcancelstate(cancel_state, NULL);
}

/* ------------------------------------------------------------------ */
/* Helpers: the fallback replies the reaper hands off                  */

struct fzc_handoff {
	struct fusezc_worker *w;
	struct fzc_inflight p;
	int res;
	struct fzc_handoff *next;
};

static void *helper_main(void *arg)
{
	struct fusezc_session *zs = arg;
	struct fusezc_worker hw = { .zs = zs, .devfd = -1, .devref = -1, .memfd = -1 };
	struct fzc_handoff *job;

	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
	pthread_mutex_lock(&zs->reaper_lock);
	for (;;) {
		while (zs->handoff_head == NULL && !zs->helpers_stop) {
			zs->helpers_idle++;
			pthread_cond_wait(&zs->handoff_cond, &zs->reaper_lock);
			zs->helpers_idle--;
		}
		job = zs->handoff_head;
		if (job == NULL)
			break;		/* stopped, nothing left */
		zs->handoff_head = job->next;
		if (zs->handoff_head == NULL)
			zs->handoff_tail = NULL;
		zs->handoff_queued--;
		pthread_mutex_unlock(&zs->reaper_lock);
		job->p.done(job->w, &hw, &job->p, job->res, false);
		pthread_mutex_lock(&zs->reaper_lock);
		if (--job->w->handed_off == 0)
			pthread_cond_broadcast(&zs->handoff_done);
		free(job);
	}
	pthread_mutex_unlock(&zs->reaper_lock);
	free(hw.copybuf);
	return NULL;
}

/* Under zs->reaper_lock. */
static int helper_start(struct fusezc_session *zs)
{
	sigset_t all, old;
	int err;

	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	err = pthread_create(&zs->helper_threads[zs->helpers], NULL, helper_main, zs);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (err == 0)
		zs->helpers++;
	return -err;
}

/* The reaper, under w->lend_lock: have a helper answer @p's CQE.  false:
 * no helper can (out of memory, no thread), the caller answers it. */
static bool hand_off(struct fusezc_worker *w, const struct fzc_inflight *p, int res)
{
	struct fusezc_session *zs = w->zs;
	struct fzc_handoff *job = malloc(sizeof(*job));

	if (job == NULL)
		return false;
	*job = (struct fzc_handoff){ .w = w, .p = *p, .res = res };
	pthread_mutex_lock(&zs->reaper_lock);
	if (zs->handoff_queued + 1 > zs->helpers_idle && zs->helpers < FZC_HELPERS_MAX)
		helper_start(zs);
	if (zs->helpers == 0) {
		pthread_mutex_unlock(&zs->reaper_lock);
		free(job);
		return false;
	}
	if (zs->handoff_tail != NULL)
		zs->handoff_tail->next = job;
	else
		zs->handoff_head = job;
	zs->handoff_tail = job;
	zs->handoff_queued++;
	w->handed_off++;
	pthread_cond_signal(&zs->handoff_cond);
	pthread_mutex_unlock(&zs->reaper_lock);
	return true;
}

/* Under w->lend_lock: until no helper answers a CQE of @w's. */
static void wait_handed_off(struct fusezc_worker *w)
{
	struct fusezc_session *zs = w->zs;

	pthread_mutex_lock(&zs->reaper_lock);
	while (w->handed_off > 0)
		pthread_cond_wait(&zs->handoff_done, &zs->reaper_lock);
	pthread_mutex_unlock(&zs->reaper_lock);
}

static void helpers_stop(struct fusezc_session *zs)
{
	unsigned int i, n;

	pthread_mutex_lock(&zs->reaper_lock);
	zs->helpers_stop = true;
	pthread_cond_broadcast(&zs->handoff_cond);
	n = zs->helpers;
	pthread_mutex_unlock(&zs->reaper_lock);
	for (i = 0; i < n; i++)
		pthread_join(zs->helper_threads[i], NULL);
	pthread_mutex_lock(&zs->reaper_lock);
	zs->helpers = 0;
	zs->helpers_stop = false;
	pthread_mutex_unlock(&zs->reaper_lock);
}

/* ------------------------------------------------------------------ */
/* Answering CQEs                                                      */

/* Under w->lend_lock: free the slots of the request whose first piece is
 * in slot @lead. */
static void group_free(struct fusezc_worker *w, unsigned int lead)
{
	const struct fzc_inflight *g = &w->lends[lead];

	if (g->npieces <= 1) {
		w->lends[lead].busy = false;
		w->inflight--;
		return;
	}
	for (unsigned int k = 0; k < g->npieces; k++) {
		w->lends[g->slots[k]].busy = false;
		w->inflight--;
	}
}

/*
 * Under w->lend_lock: the CQE (*@res, *@answered) of the piece in slot @s.
 * false while other pieces of its request are out; true with what the
 * whole request got in *@res and *@answered once the last is in: the
 * kernel answered it (one piece's CQE says so; *@res: the bytes placed),
 * else the bytes placed without a hole from the start when all came back
 * whole or short, or the error of the first piece that did not.
 */
static bool piece_in(struct fusezc_worker *w, unsigned int s, int *res, bool *answered)
{
	struct fzc_inflight *g = &w->lends[w->lends[s].leader];
	int64_t placed = 0;

	if (g->npieces <= 1) {
		g->placed = *res > 0 ? (size_t)*res : 0;
		return true;
	}
	w->lends[s].res = *res;
	w->lends[s].answered = *answered;
	if (--g->pending > 0)
		return false;
	*answered = false;
	for (unsigned int k = 0; k < g->npieces; k++)
		*answered |= w->lends[g->slots[k]].answered;
	for (unsigned int k = 0; k < g->npieces; k++) {
		const struct fzc_inflight *q = &w->lends[g->slots[k]];

		if (*answered) {
			placed += q->res > 0 ? q->res : 0;
			continue;
		}
		if (q->res < 0) {
			*res = q->res;
			g->placed = (size_t)placed;
			return true;
		}
		placed += q->res;
		if ((size_t)q->res < q->piece_len)
			break;	/* short: a hole after it, or the file's end */
	}
	*res = (int)placed;
	g->placed = (size_t)placed;
	return true;
}

/*
 * Under w->lend_lock: answer one CQE; 1, 0 none, -errno of the ring.  The
 * reaper (@hand_off_fallbacks) only counts what the kernel answered and
 * hands the rest to a helper: a slow backing file stalls that helper,
 * never the reaper.  A write's other answers (the bytes written, an error,
 * "send it again with its data") are a write to /dev/fuse that touches no
 * backing file: the reaper gives them itself.
 */
static int reap_one_locked(struct fusezc_worker *w, struct fusezc_worker *cw, int wait_ms,
			   bool hand_off_fallbacks)
{
	struct fzc_inflight p;
	uint64_t ud;
	bool answered = false;
	unsigned int lead;
	int res = 0, got;

	got = fzc_kops->ring_next_cqe(w, wait_ms, &ud, &res, &answered);
	if (got <= 0)
		return got;
	if (ud == FZC_UD_DEVREAD && w->devread_armed) {
		/* the worker's read of /dev/fuse: fzc_lendings_read_request().
		 * CQEs come in the order things ended: lendings still in
		 * flight now ended after the request came. */
		w->devread_armed = false;
		w->devread_done = true;
		w->devread_res = res;
		w->devread_busy = w->inflight > 0;
		return 1;
	}
	if (ud == FZC_UD_DEVREAD_CANCEL)
		return 1;
	if (ud == 0 || ud > FZC_INFLIGHT_MAX || !w->lends[ud - 1].busy) {
		fzc_log(w->zs, FUSE_LOG_ERR, "a CQE for no lending in flight (%llu)",
			(unsigned long long)ud);
		return 1;
	}
	if (!piece_in(w, (unsigned int)ud - 1, &res, &answered))
		return 1;	/* more pieces of its request to come */
	lead = w->lends[ud - 1].leader;
	p = w->lends[lead];
	group_free(w, lead);
	if (!answered && hand_off_fallbacks && !p.write && hand_off(w, &p, res))
		return 1;
	p.done(w, cw, &p, res, answered);
	return 1;
}

/* Under w->lend_lock: answer every CQE there is; @cw lends its copy
 * buffer to fallbacks (NULL: the reaper, which hands them off).  With
 * @wait, until nothing is in flight. */
static void reap_locked(struct fusezc_worker *w, struct fusezc_worker *cw, bool wait)
{
	struct fusezc_worker *own = cw ? cw : &w->zs->reaper_worker;
	int got;

	if (!w->ring_ready)
		return;
	while (w->inflight > 0 || (w->devread_armed && !wait)) {
		got = reap_one_locked(w, own, wait ? FZC_WAIT_FOREVER : 0, cw == NULL);
		if (got < 0 && got != -EINTR) {
			fzc_log(w->zs, FUSE_LOG_ERR, "cannot reap zero-copy lendings (%s)",
				strerror(-got));
			return;
		}
		if (got == 0)
			return;
	}
}

/* Under w->lend_lock, after its ring is gone: lendings whose CQE was lost
 * with it are answered as cancelled (reads by copy, writes sent again with
 * their data). */
static void abandon_locked(struct fusezc_worker *w, struct fusezc_worker *cw)
{
	for (unsigned int i = 0; i < FZC_INFLIGHT_MAX && w->inflight > 0; i++) {
		struct fzc_inflight p = w->lends[i];

		if (!p.busy || p.leader != i)
			continue;	/* a piece: answered with its request */
		group_free(w, i);
		p.done(w, cw, &p, -ECANCELED, false);
	}
}

bool fzc_lend_async(struct fusezc_worker *w, int devfd, uint64_t unique, int fd,
		    off_t off, size_t size, bool write, fzc_lend_done_fn *done)
{
	struct fusezc_session *zs = w->zs;
	struct fzc_lending l[FZC_PIECES_MAX];
	uint64_t ud[FZC_PIECES_MAX];
	unsigned int i, k, n;
	size_t piece;
	int err, got, cancel_state, answer_fd;

	/*
	 * The lending may be issued (io-wq) and answered after libfuse has let
	 * go of the request and of its channel, which a retiring worker closes:
	 * only a file the library holds open may be named, never a number
	 * that may be reused.
	 * The session's fd outlives the loop; a worker's clone has w->devref.
	 * Requests of another clone are lent synchronously.
	 */
	if (devfd == zs->fuse_fd)
		answer_fd = devfd;
	else if (devfd == w->devfd && w->devref >= 0)
		answer_fd = w->devref;
	else
		return false;
	if (zs->opts.sync_lending || !atomic_load(&zs->kernel_answers) || size == 0 ||
	    fzc_kops->ring_submit_lends == NULL || fzc_file_refused(zs, fd, &err) ||
	    fzc_ring_get(w) < 0)
		return false;
	/* O_DIRECT to a block device that takes less in one bio: pieces */
	n = fzc_lend_split(w, fd, size, &piece);
	for (k = 0; k < n; k++) {
		l[k] = (struct fzc_lending){
			/* The SQE too: io-wq may look its lender up after
			 * libfuse closed it (a registered file holds its own
			 * reference). */
			.devfd = w->ring_fixed && devfd == w->ring_fd ? devfd : answer_fd,
			.fd = fd, .off = (uint64_t)off + k * piece,
			.len = (unsigned int)(k + 1 < n ? piece : size - k * piece),
			.unique = unique, .req_off = (uint32_t)(k * piece),
			.kernel_answers = true, .write = write,
		};
	}
	cancel_state = lend_lock(w);
	reap_locked(w, w, false);
	if (FZC_INFLIGHT_MAX - w->inflight < n)
		fzc_ring_read_yield(w);	/* it waits for a device */
	while (FZC_INFLIGHT_MAX - w->inflight < n &&
	       reap_one_locked(w, w, FZC_WAIT_FOREVER, false) > 0)
		;
	for (i = k = 0; i < FZC_INFLIGHT_MAX && k < n; i++)
		if (!w->lends[i].busy)
			ud[k++] = i + 1;
	if (k < n) {
		lend_unlock(w, cancel_state);
		return false;
	}
	got = fzc_kops->ring_submit_lends(w, l, ud, n);
	if (got > 0) {
		unsigned int lead = (unsigned int)ud[0] - 1;

		for (k = 0; k < n; k++) {
			struct fzc_inflight *q = &w->lends[ud[k] - 1];

			*q = (struct fzc_inflight){
				.done = done, .unique = unique, .devfd = answer_fd, .fd = fd,
				.off = off, .size = size, .busy = true, .write = write,
				.leader = lead,
				.piece_len = l[k].len,
				/* not submitted (the ring failed): cancelled */
				.res = k < (unsigned int)got ? 0 : -ECANCELED,
			};
			w->lends[lead].slots[k] = (unsigned char)(ud[k] - 1);
		}
		w->lends[lead].npieces = n;
		w->lends[lead].pending = (unsigned int)got;
		w->inflight += n;
	}
	if (got < 0 || (unsigned int)got < n) {
		/*
		 * A ring that failed a submission may still hold SQEs, which
		 * its next io_uring_enter() would issue: answer what is in
		 * flight (pieces that went: their request with them), then
		 * drop it (the caller answers a request none of whose pieces
		 * went).
		 */
		err = got < 0 ? got : -EIO;
		reap_locked(w, w, true);
		fzc_ring_failed(w, err);
		abandon_locked(w, w);
	}
	lend_unlock(w, cancel_state);
	return got > 0;
}

/* ------------------------------------------------------------------ */
/* The reaper: answers CQEs of workers that wait for requests          */

static void reaper_watch(struct fusezc_worker *w, struct fusezc_worker *cw);

static void *reaper_main(void *arg)
{
	struct fusezc_session *zs = arg;
	struct epoll_event ev[16];
	int n, i;

	/* stopped by its eventfd, never cancelled while answering a CQE */
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
	for (;;) {
		n = epoll_wait(zs->reaper_epfd, ev, 16, -1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			fzc_log(zs, FUSE_LOG_ERR, "reaper: epoll_wait: %s", strerror(errno));
			return NULL;
		}
		for (i = 0; i < n; i++) {
			struct fusezc_worker *w = ev[i].data.ptr;

			if (w == NULL)
				return NULL;	/* fzc_reaper_stop() */
			pthread_mutex_lock(&w->lend_lock);
			reap_locked(w, NULL, false);
			if (w->inflight > 0)
				reaper_watch(w, NULL);
			pthread_mutex_unlock(&w->lend_lock);
		}
	}
}

/* Under zs->reaper_lock. */
static int reaper_start(struct fusezc_session *zs)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
	sigset_t all, old;
	int err;

	zs->reaper_epfd = epoll_create1(EPOLL_CLOEXEC);
	if (zs->reaper_epfd < 0)
		return -errno;
	zs->reaper_stopfd = eventfd(0, EFD_CLOEXEC);
	if (zs->reaper_stopfd < 0 ||
	    epoll_ctl(zs->reaper_epfd, EPOLL_CTL_ADD, zs->reaper_stopfd, &ev) < 0) {
		err = -errno;
		goto fail;
	}
	zs->reaper_worker.zs = zs;
	/* signals are for the file system's main thread, as with libfuse's workers */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	err = -pthread_create(&zs->reaper, NULL, reaper_main, zs);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (err == 0) {
		zs->reaper_running = true;
		return 0;
	}
fail:
	if (zs->reaper_stopfd >= 0)
		close(zs->reaper_stopfd);
	close(zs->reaper_epfd);
	zs->reaper_epfd = zs->reaper_stopfd = -1;
	return err;
}

/* Under w->lend_lock, a worker about to block in read(2): let the reaper
 * watch its CQEs (without a reaper, they are waited for, @cw as in
 * reap_locked()). */
static void reaper_watch(struct fusezc_worker *w, struct fusezc_worker *cw)
{
	struct fusezc_session *zs = w->zs;
	struct epoll_event ev = { .events = EPOLLIN | EPOLLONESHOT, .data.ptr = w };
	int fd = fzc_kops->ring_poll_fd ? fzc_kops->ring_poll_fd(w) : -1;
	int err = fd < 0 ? -EOPNOTSUPP : 0;

	pthread_mutex_lock(&zs->reaper_lock);
	if (err == 0 && !zs->reaper_running)
		err = reaper_start(zs);
	if (err == 0) {
		int op = w->watched ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
		int res = epoll_ctl(zs->reaper_epfd, op, fd, &ev);

		/* a ring made since it was watched: epoll forgot the old one */
		if (res < 0 && op == EPOLL_CTL_MOD && errno == ENOENT)
			res = epoll_ctl(zs->reaper_epfd, EPOLL_CTL_ADD, fd, &ev);
		if (res < 0)
			err = -errno;
	}
	pthread_mutex_unlock(&zs->reaper_lock);
	if (err == 0) {
		w->watched = true;
		return;
	}
	if (fzc_note_once(zs, FZC_NOTE_RING, err))
		fzc_log(zs, FUSE_LOG_WARNING,
			"no reaper for zero-copy lendings (%s); workers wait for theirs",
			strerror(-err));
	reap_locked(w, cw, true);
}

/* CLOCK_MONOTONIC in ms */
static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void fzc_lendings_settle(struct fusezc_worker *w, unsigned int ms)
{
	int64_t deadline = ms ? now_ms() + ms : 0, left;
	int cancel_state = lend_lock(w);

	fzc_ring_flush(w);
	reap_locked(w, w, false);
	while (ms > 0 && w->inflight > 0 && w->ring_ready && (left = deadline - now_ms()) > 0 &&
	       reap_one_locked(w, w, (int)left, false) > 0)
		;
	if (w->inflight > 0)
		reaper_watch(w, w);
	lend_unlock(w, cancel_state);
}

void fzc_lendings_before_wait(struct fusezc_worker *w)
{
	fzc_lendings_settle(w, 0);
}

/* Under w->lend_lock: the reaper no longer watches @w's ring. */
static void reaper_unwatch(struct fusezc_worker *w)
{
	struct fusezc_session *zs = w->zs;
	int fd;

	if (!w->watched)
		return;
	fd = fzc_kops->ring_poll_fd(w);
	pthread_mutex_lock(&zs->reaper_lock);
	if (zs->reaper_running)
		epoll_ctl(zs->reaper_epfd, EPOLL_CTL_DEL, fd, NULL);
	pthread_mutex_unlock(&zs->reaper_lock);
	w->watched = false;
}

void fzc_lendings_drain(struct fusezc_worker *w)
{
	int cancel_state;

	fzc_ring_read_yield(w);
	cancel_state = lend_lock(w);
	reap_locked(w, w, true);
	wait_handed_off(w);
	reaper_unwatch(w);
	lend_unlock(w, cancel_state);
}

/* ------------------------------------------------------------------ */
/* Reading requests through the worker's ring (opts.ring_read)         */

/*
 * libfuse ends its loop by cancelling its workers, but io_uring_enter() is
 * no cancellation point, and the signal that pthread_cancel() sends only
 * restarts the wait: a waiting worker looks every so often.
 */
#define DEVREAD_CANCEL_CHECK_US	(1000 * 1000)

/*
 * The thread is cancelled (libfuse ends its loop) while its read of
 * /dev/fuse is in the ring: cancel that read, so that no request is taken
 * that nobody answers; one it took all the same gets an error.
 */
static void devread_cancel(void *arg)
{
	struct fusezc_worker *w = arg;
	struct io_uring_sqe *sqe;
	int cancel_state = lend_lock(w);

	if (w->devread_armed && (sqe = io_uring_get_sqe(&w->ring)) != NULL) {
		io_uring_prep_cancel64(sqe, FZC_UD_DEVREAD, 0);
		sqe->user_data = FZC_UD_DEVREAD_CANCEL;
		io_uring_submit(&w->ring);
		/* the read ends (cancelled, or with a request) */
		while (w->devread_armed && reap_one_locked(w, w, FZC_WAIT_FOREVER, false) > 0)
			;
	}
	if (w->devread_done && w->devread_res >= (int)sizeof(struct fuse_in_header)) {
		const struct fuse_in_header *in = (const void *)w->devread_buf;

		fzc_reply_error(w->devfd, in->unique, -EIO);
	}
	w->devread_done = false;
	lend_unlock(w, cancel_state);
}

/*
 * A leader that left /dev/fuse with a request this long ago is taken to
 * be blocked in a handler (one that does not answer through the library,
 * or a write that came with its data to a slow file): a waiting worker
 * takes its place.  What the library knows may block hands the role on
 * at once.
 */
#define RR_TAKEOVER_MS	100

void fzc_ring_read_yield(struct fusezc_worker *w)
{
	struct fusezc_session *zs = w->zs;

	if (zs == NULL || atomic_load_explicit(&zs->rr_leader, memory_order_relaxed) != w)
		return;
	pthread_mutex_lock(&zs->rr_lock);
	if (atomic_load(&zs->rr_leader) == w) {
		atomic_store(&zs->rr_leader, NULL);
		zs->rr_away_since = 0;
		if (zs->rr_waiting > 0) {
			pthread_cond_signal(&zs->rr_cond);
			fzc_add(&zs->rr_handoffs, 1);
		}
	}
	pthread_mutex_unlock(&zs->rr_lock);
}

void fzc_ring_read_away(struct fusezc_worker *w)
{
	struct fusezc_session *zs = w->zs;

	pthread_mutex_lock(&zs->rr_lock);
	if (atomic_load(&zs->rr_leader) == w)
		zs->rr_away_since = now_ms() | 1;	/* never 0 */
	pthread_mutex_unlock(&zs->rr_lock);
}

static void rr_wait_cancelled(void *arg)
{
	struct fusezc_session *zs = arg;

	zs->rr_waiting--;
	pthread_mutex_unlock(&zs->rr_lock);
}

/*
 * Apart from rr_lead(): the cleanup handler's setjmp() would make the
 * compiler doubt every local variable of its caller (-Wclobbered).
 */
static void rr_wait_until(struct fusezc_session *zs, const struct timespec *until)
{
	zs->rr_waiting++;
	pthread_cleanup_push(rr_wait_cancelled, zs);
	pthread_cond_timedwait(&zs->rr_cond, &zs->rr_lock, until);
	pthread_cleanup_pop(0);
	zs->rr_waiting--;
}

/*
 * Wait to be the leader.  A follower's lendings go on meanwhile: submitted
 * now, and answered by the reaper.  Cancellable while it waits.
 */
static void rr_lead(struct fusezc_worker *w)
{
	struct fusezc_session *zs = w->zs;
	struct fusezc_worker *leader;
	bool handed_over = false;
	struct timespec until;
	int64_t t;

	pthread_mutex_lock(&zs->rr_lock);
	for (;;) {
		leader = atomic_load(&zs->rr_leader);
		if (leader == NULL || leader == w)
			break;
		t = now_ms();
		if (zs->rr_away_since != 0 && t - zs->rr_away_since >= RR_TAKEOVER_MS) {
			fzc_add(&zs->rr_takeovers, 1);
			break;
		}
		if (!handed_over) {
			pthread_mutex_unlock(&zs->rr_lock);
			if (w->inflight > 0 || w->sq_deferred > 0)
				fzc_lendings_before_wait(w);
			handed_over = true;
			pthread_mutex_lock(&zs->rr_lock);
			continue;
		}
		/* until the leader has been away long enough, or to look again */
		t = (zs->rr_away_since != 0 ? zs->rr_away_since : t) + RR_TAKEOVER_MS;
		until.tv_sec = t / 1000;
		until.tv_nsec = (t % 1000) * 1000000;
		rr_wait_until(zs, &until);
	}
	atomic_store(&zs->rr_leader, w);
	zs->rr_away_since = 0;
	pthread_mutex_unlock(&zs->rr_lock);
}

ssize_t fzc_lendings_read_request(struct fusezc_worker *w, int fd, void *buf, size_t len)
{
	unsigned int wait_nr;
	int cancel_state, err = 0;

	rr_lead(w);
	cancel_state = lend_lock(w);
	reaper_unwatch(w);	/* this thread answers its CQEs while it waits */
	reap_locked(w, w, false);
	lend_unlock(w, cancel_state);

	/*
	 * Wait for the read's CQE and for those of the lendings submitted
	 * with it: a lending of cached data ends inside the submission, and
	 * its CQE alone would end the wait a system call too early.  Unless
	 * the last request came while lendings were still out (requests are
	 * queued, lendings wait for a device): then for the request only.
	 */
	wait_nr = 1 + (w->devread_busy ? 0 : w->sq_deferred);
	w->devread_buf = buf;
	w->devread_done = false;
	pthread_cleanup_push(devread_cancel, w);
	for (;;) {
		err = fzc_kops->ring_read_dev(w, fd, buf, len, wait_nr,
					      DEVREAD_CANCEL_CHECK_US);
		cancel_state = lend_lock(w);
		reap_locked(w, w, false);
		lend_unlock(w, cancel_state);
		if (w->devread_done)
			break;
		if (!w->ring_ready) {
			/* dropped (fzc_ring_failed()): libfuse reads again (only
			 * EINTR keeps its loop going), with read(2) */
			err = -EINTR;
			break;
		}
		if (err < 0 && err != -EINTR && err != -ETIME && err != -EAGAIN &&
		    err != -EBUSY)
			break;
		pthread_testcancel();
		wait_nr = 1;
	}
	pthread_cleanup_pop(0);
	if (!w->devread_done) {
		if (err != -EINTR && fzc_note_once(w->zs, FZC_NOTE_RING, err))
			fzc_log(w->zs, FUSE_LOG_ERR,
				"cannot read /dev/fuse through io_uring (%s)", strerror(-err));
		return err;
	}
	w->devread_done = false;
	return w->devread_res;
}

void fzc_reaper_stop(struct fusezc_session *zs)
{
	uint64_t one = 1;
	bool running;

	pthread_mutex_lock(&zs->reaper_lock);
	running = zs->reaper_running;
	zs->reaper_running = false;
	pthread_mutex_unlock(&zs->reaper_lock);
	if (!running)
		return;
	/* an eventfd's counter only fails to grow at 2^64 - 1 */
	while (write(zs->reaper_stopfd, &one, sizeof(one)) < 0 && errno == EINTR)
		;
	pthread_join(zs->reaper, NULL);
	helpers_stop(zs);
	close(zs->reaper_stopfd);
	close(zs->reaper_epfd);
	zs->reaper_epfd = zs->reaper_stopfd = -1;
	free(zs->reaper_worker.copybuf);
	zs->reaper_worker.copybuf = NULL;
}
