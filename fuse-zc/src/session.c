// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * libfuse-zc session: custom /dev/fuse I/O hooks, FUSE_INIT negotiation, the
 * per-thread state of libfuse's multi-threaded loop, which runs the session.
 *
 * libfuse 3.14 gives no access to a request's unique id and does not forward
 * INIT flags it does not know.  Its public fuse_session_custom_io() does: the
 * read hook sees every raw request, the writev hook every reply.  The read
 * hook records each FUSE_READ of a zero-copy session (unique, offset, size)
 * in a table; a reply's header carries its request's unique, so the writev
 * hook knows which request a reply is for whatever thread sends it, and
 * read.c answers exactly that one.  INIT and the passthrough OPEN/CREATE
 * rewrites use the raw header of the request the worker is processing, and
 * a rewrite armed on that thread by fusezc_reply_*_passthrough().
 *
 * The loop is libfuse's own fuse_session_loop_mt(): its pool grows up to
 * max_threads, idle workers exit beyond max_idle_threads, and with clone_fd
 * each worker reads its own /dev/fuse clone.  libfuse hands every hook the
 * fd of the worker's channel and replies on the channel the request came
 * from, so a lending made from the writev hook names the right file.
 */
#include "fuse_zc_int.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

__thread struct fusezc_worker *fzc_tls_worker;

static const char status_not_offered[] =
	"kernel does not offer FUSE zero copy (stock kernel)";
static const char status_disabled[] = "disabled by options";
static const char status_no_init[] = "FUSE INIT not seen yet";
static const char status_short_init[] =
	"FUSE INIT reply too short to carry flags2";
static const char status_init_missed[] =
	"FUSE INIT was answered before fuse-zc was attached";

/* libfuse's FUSE_LOOP_MT_MAX_THREADS: its setters ignore larger values. */
#define FZC_LOOP_MAX_THREADS	(100U * 1000)

static void opts_vlog(const struct fusezc_options *o, enum fuse_log_level level,
		      const char *fmt, va_list ap)
{
	char msg[512];
	size_t n;

	vsnprintf(msg, sizeof(msg), fmt, ap);
	n = strlen(msg);
	while (n > 0 && msg[n - 1] == '\n')
		msg[--n] = '\0';
	if (o != NULL && o->log != NULL)
		o->log(level, msg, o->event_data);
	else
		fuse_log(level, "fuse-zc: %s\n", msg);
}

static void __attribute__((format(printf, 3, 4)))
opts_log(const struct fusezc_options *o, enum fuse_log_level level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	opts_vlog(o, level, fmt, ap);
	va_end(ap);
}

void fzc_log(struct fusezc_session *zs, enum fuse_log_level level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	opts_vlog(zs ? &zs->opts : NULL, level, fmt, ap);
	va_end(ap);
}

/* ------------------------------------------------------------------ */
/* Notes and counters                                                  */

bool fzc_note_once(struct fusezc_session *zs, enum fzc_note kind, int err)
{
	unsigned int e = err < 0 ? (unsigned int)-err : (unsigned int)err;
	uint64_t bit;

	if (e >= FZC_ERRNO_MAX)
		e = 0;
	bit = 1ULL << (e % 64);
	return !(atomic_fetch_or(&zs->noted[kind][e / 64], bit) & bit);
}

void fzc_count_fallback(struct fusezc_session *zs, int err)
{
	int e = err < 0 ? -err : err;
	int idx;

	if (e == EOPNOTSUPP)
		idx = 0;
	else if (e == EPERM)
		idx = 1;
	else if (e == ENOENT || e == EINVAL)
		idx = 2;
	else
		idx = 3;
	fzc_add(&zs->fallbacks, 1);
	fzc_add(&zs->fallback_errno_counts[idx], 1);
}

ssize_t fzc_pread_full(int fd, void *buf, size_t size, off_t off)
{
	size_t done = 0;

	while (done < size) {
		ssize_t n = pread(fd, (char *)buf + done, size - done,
				  off + (off_t)done);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		done += (size_t)n;
	}
	return (ssize_t)done;
}

/* Page-aligned, so that a read into it may use an O_DIRECT descriptor. */
void *fzc_alloc_aligned(size_t size)
{
	long pagesize = sysconf(_SC_PAGESIZE);
	void *p;

	return posix_memalign(&p, pagesize > 0 ? (size_t)pagesize : 4096,
			      size ? size : 1) ? NULL : p;
}

void *fzc_copybuf(struct fusezc_worker *w, size_t size)
{
	if (w->copybuf == NULL || size > w->copybuf_size) {
		size_t want = size < 128 * 1024 ? 128 * 1024 : size;
		void *p = fzc_alloc_aligned(want);

		if (p == NULL)
			return NULL;
		free(w->copybuf);
		w->copybuf = p;
		w->copybuf_size = want;
	}
	return w->copybuf;
}

/* ------------------------------------------------------------------ */
/* FUSE_READ requests in flight                                        */

static size_t read_slot(const struct fzc_read_table *t, uint64_t unique)
{
	/* unique ids step by 2 (FUSE_REQ_ID_STEP): mix before masking. */
	return (size_t)((unique * 0x9E3779B97F4A7C15ULL) >> 32) & (t->cap - 1);
}

static int reads_grow(struct fzc_read_table *t)
{
	size_t cap = t->cap ? t->cap * 2 : 64, i;
	struct fzc_read_in *old = t->slots, *slots = calloc(cap, sizeof(*slots));

	if (slots == NULL)
		return -ENOMEM;
	t->slots = slots;
	t->cap = cap;
	for (i = 0; old != NULL && i < cap / 2; i++) {
		if (old[i].unique != 0) {
			size_t j = read_slot(t, old[i].unique);

			while (slots[j].unique != 0)
				j = (j + 1) & (cap - 1);
			slots[j] = old[i];
		}
	}
	free(old);
	return 0;
}

void fzc_reads_add(struct fusezc_session *zs, const struct fzc_read_in *r)
{
	struct fzc_read_table *t = &zs->reads;
	size_t i;

	pthread_mutex_lock(&t->lock);
	if (t->used >= FZC_READS_MAX ||
	    ((t->used + 1) * 2 > t->cap && reads_grow(t) != 0)) {
		/* Unrecorded: its reply is a copy (fzc_answer_read). */
		pthread_mutex_unlock(&t->lock);
		return;
	}
	i = read_slot(t, r->unique);
	while (t->slots[i].unique != 0 && t->slots[i].unique != r->unique)
		i = (i + 1) & (t->cap - 1);
	if (t->slots[i].unique == 0)
		t->used++;
	t->slots[i] = *r;
	pthread_mutex_unlock(&t->lock);
}

bool fzc_reads_take(struct fusezc_session *zs, uint64_t unique, struct fzc_read_in *r)
{
	struct fzc_read_table *t = &zs->reads;
	size_t i, j;

	pthread_mutex_lock(&t->lock);
	if (t->used == 0) {
		pthread_mutex_unlock(&t->lock);
		return false;
	}
	i = read_slot(t, unique);
	while (t->slots[i].unique != unique) {
		if (t->slots[i].unique == 0) {
			pthread_mutex_unlock(&t->lock);
			return false;
		}
		i = (i + 1) & (t->cap - 1);
	}
	if (r != NULL)
		*r = t->slots[i];
	/* Backward-shift deletion keeps every probe chain unbroken. */
	for (j = (i + 1) & (t->cap - 1); t->slots[j].unique != 0; j = (j + 1) & (t->cap - 1)) {
		size_t home = read_slot(t, t->slots[j].unique);

		if (((j - home) & (t->cap - 1)) >= ((j - i) & (t->cap - 1))) {
			t->slots[i] = t->slots[j];
			i = j;
		}
	}
	t->slots[i].unique = 0;
	t->used--;
	pthread_mutex_unlock(&t->lock);
	return true;
}

bool fzc_reads_peek(struct fusezc_session *zs, uint64_t unique, struct fzc_read_in *r)
{
	struct fzc_read_table *t = &zs->reads;
	bool found = false;
	size_t i;

	pthread_mutex_lock(&t->lock);
	if (t->used != 0) {
		i = read_slot(t, unique);
		while (t->slots[i].unique != 0 && t->slots[i].unique != unique)
			i = (i + 1) & (t->cap - 1);
		if (t->slots[i].unique == unique) {
			*r = t->slots[i];
			found = true;
		}
	}
	pthread_mutex_unlock(&t->lock);
	return found;
}

void fzc_reads_free(struct fusezc_session *zs)
{
	free(zs->reads.slots);
	zs->reads.slots = NULL;
	zs->reads.cap = zs->reads.used = 0;
}

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

/* ------------------------------------------------------------------ */
/* FUSE_INIT                                                           */

static void note_init_request(struct fusezc_session *zs, const void *buf,
			      size_t len)
{
	const struct fuse_init_in *in = (const void *)
		((const char *)buf + sizeof(struct fuse_in_header));
	size_t inlen = len - sizeof(struct fuse_in_header);
	uint64_t offered;

	if (inlen < offsetof(struct fuse_init_in, flags) + sizeof(in->flags))
		return;
	offered = in->flags;
	if (in->major == 7 && in->minor >= 36 && (in->flags & FUSEZC_INIT_EXT) &&
	    inlen >= offsetof(struct fuse_init_in, flags2) + sizeof(in->flags2))
		offered |= (uint64_t)in->flags2 << 32;
	zs->init_offered = offered;
}

static inline uint32_t get32(const unsigned char *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof(v));
	return v;
}

static inline void put32(unsigned char *p, uint32_t v)
{
	memcpy(p, &v, sizeof(v));
}

/* Rewrite the INIT reply in @msg (@len bytes); returns false to send an error. */
static bool rewrite_init_reply(struct fusezc_session *zs, unsigned char *msg,
			       size_t len)
{
	struct fuse_out_header *out = (struct fuse_out_header *)msg;
	unsigned char *arg = msg + sizeof(*out);
	size_t arglen = len - sizeof(*out);
	uint64_t offered = zs->init_offered;
	bool want_zc = zs->opts.read_mode == FUSEZC_READ_ZEROCOPY;
	bool has_zc = offered & FUSEZC_INIT_ZC_READ;
	uint32_t flags, flags2;

	if (out->error != 0) {
		zs->init_error = out->error;
		atomic_store(&zs->zc_status, "FUSE INIT failed");
		return true;
	}
	if (arglen < INIT_OUT_MIN) {
		atomic_store(&zs->zc_status, want_zc ? status_short_init : status_disabled);
		if (want_zc && zs->opts.zerocopy_required)
			goto refuse;
		return true;
	}
	flags = get32(arg + INIT_OUT_FLAGS);
	flags2 = get32(arg + INIT_OUT_FLAGS2);

	if (want_zc && has_zc) {
		flags |= FUSEZC_INIT_EXT;
		flags2 |= (uint32_t)(FUSEZC_INIT_ZC_READ >> 32);
		atomic_store(&zs->zc_status, "");
		atomic_store(&zs->zc_active, true);
		fzc_log(zs, FUSE_LOG_INFO, "zero-copy reads active");
		if (zs->opts.zerocopy_writes && (offered & FUSEZC_INIT_ZC_WRITE)) {
			flags2 |= (uint32_t)(FUSEZC_INIT_ZC_WRITE >> 32);
			atomic_store(&zs->zcw_active, true);
			fzc_log(zs, FUSE_LOG_INFO, "zero-copy writes active");
		} else if (zs->opts.zerocopy_writes) {
			fzc_log(zs, FUSE_LOG_INFO,
				"zero-copy writes unavailable: the kernel does not offer FUSE_ZERO_COPY_WRITE; writes are copied");
		}
	} else if (want_zc) {
		atomic_store(&zs->zc_status, status_not_offered);
		if (zs->opts.zerocopy_required)
			goto refuse;
		fzc_log(zs, FUSE_LOG_WARNING,
			"zero copy unavailable: %s; falling back to %s",
			 status_not_offered, atomic_load(&zs->splice_enabled) ? "splice" : "copy");
	} else {
		atomic_store(&zs->zc_status, status_disabled);
	}

	if (zs->opts.passthrough) {
		if (!(offered & FUSEZC_INIT_PASSTHROUGH)) {
			fzc_log(zs, FUSE_LOG_WARNING,
				"passthrough unavailable: kernel does not offer FUSE_PASSTHROUGH");
		} else if (flags & FUSE_WRITEBACK_CACHE) {
			fzc_log(zs, FUSE_LOG_WARNING,
				"passthrough unavailable: the kernel refuses it with writeback cache");
		} else {
			flags |= FUSEZC_INIT_EXT;
			flags2 |= (uint32_t)(FUSEZC_INIT_PASSTHROUGH >> 32);
			put32(arg + INIT_OUT_STACK_DEPTH, 1);
			atomic_store(&zs->pt_active, true);
		}
	}
	if (zs->opts.no_export_support && (offered & FUSEZC_INIT_EXT)) {
		flags |= FUSEZC_INIT_EXT;
		flags2 |= (uint32_t)(FUSEZC_INIT_NO_EXPORT_SUPPORT >> 32);
	}
	put32(arg + INIT_OUT_FLAGS, flags);
	put32(arg + INIT_OUT_FLAGS2, flags2);
	return true;

refuse:
	fzc_log(zs, FUSE_LOG_ERR,
		"zero copy required but the kernel does not offer it (needs the fuse-zc patched kernel)");
	zs->init_error = -EOPNOTSUPP;
	return false;
}

/* ------------------------------------------------------------------ */
/* fuse_custom_io hooks                                                */

/* ------------------------------------------------------------------ */
/* The state of a thread of libfuse's loop                             */

static pthread_key_t worker_key;
static pthread_once_t worker_key_once = PTHREAD_ONCE_INIT;
static int worker_key_error;

/* At the exit of a thread that read requests: nothing here uses its
 * session, which libfuse's loop outlives. */
static void worker_free(void *data)
{
	struct fusezc_worker *w = data;
	struct fusezc_session *zs = w->zs;

	if (fzc_tls_worker == w)
		fzc_tls_worker = NULL;
	fzc_worker_drain(w);
	if (w->ring_ready)
		fzc_kops->ring_exit(w);
	w->ring_ready = false;
	w->ring_fixed = false;
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
	}
	return w;
}

static void workers_free_retired(struct fusezc_session *zs)
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

static void worker_drop_ring(struct fusezc_worker *w)
{
	fzc_worker_drain(w);
	if (w->ring_ready)
		fzc_kops->ring_exit(w);
	w->ring_ready = false;
	w->ring_fixed = false;
	w->ring_err = 0;
	w->ring_retry_at = 0;
	w->ring_backoff = 0;
}

/*
 * The state of the calling thread, which has just read a request from
 * /dev/fuse file @fd; created on a thread's first request.  NULL when @fd
 * belongs to no fusezc session, or out of memory (then this thread's read
 * replies are copies and its OPEN replies plain).
 */
static struct fusezc_worker *worker_for_fd(int fd)
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
	} else if (w->zs != zs || w->ring_fixed) {
		worker_drop_ring(w);	/* made for another session or file */
	}
	w->zs = zs;
	w->devfd = fd;
	return w;
}

/*
 * A request before INIT was seen: libfuse answered INIT before the hooks
 * were installed (fusezc_session_new() after the first request, or a
 * libfuse that processes INIT during the mount).  Zero copy was then never
 * negotiated: say so once, and end the loop when it is required.
 */
static void init_missed(struct fusezc_session *zs)
{
	if (atomic_exchange(&zs->init_seen, true))
		return;
	atomic_store(&zs->zc_status, zs->opts.read_mode == FUSEZC_READ_ZEROCOPY ?
		     status_init_missed : status_disabled);
	if (zs->opts.read_mode != FUSEZC_READ_ZEROCOPY)
		return;
	if (zs->opts.zerocopy_required) {
		fzc_log(zs, FUSE_LOG_ERR, "zero copy required but %s",
			status_init_missed);
		zs->init_error = -EOPNOTSUPP;
		fuse_session_exit(zs->se);
	} else {
		fzc_log(zs, FUSE_LOG_WARNING, "zero copy unavailable: %s",
			status_init_missed);
	}
}

/*
 * A reply that was not fusezc_reply_read()'s or fusezc_reply_write()'s:
 * the request leaves the table.  A zero-copy write answered so is counted
 * (its writer gets EIO, or the error the reply carries).
 */
static void fzc_forget_request(struct fusezc_session *zs, uint64_t unique)
{
	struct fzc_read_in r;

	if (fzc_reads_take(zs, unique, &r) && r.write) {
		fzc_add(&zs->zcw_unanswered, 1);
		if (!atomic_exchange(&zs->noted_misuse, true))
			fzc_log(zs, FUSE_LOG_WARNING,
				"a FUSE_WRITE sent without its data was answered without fusezc_reply_write()");
	}
}

ssize_t fzc_io_read(int fd, void *buf, size_t len, void *userdata)
{
	const struct fuse_in_header *in = buf;
	struct fusezc_worker *w;
	struct fusezc_session *zs;
	ssize_t res;

	(void)userdata;
	w = fzc_tls_worker;
	if (w != NULL && w->inflight > 0) {
		/* Lendings in flight: answer what finished, leave the rest to
		 * the reaper while this thread waits for a request. */
		pthread_mutex_lock(&w->lend_lock);
		fzc_reap_locked(w, w, false);
		if (w->inflight > 0)
			fzc_reaper_watch(w, w);
		pthread_mutex_unlock(&w->lend_lock);
	}
	res = read(fd, buf, len);
	if (res < (ssize_t)sizeof(*in))
		return res;
	w = worker_for_fd(fd);
	if (w == NULL) {
		/* never let libfuse take a data-less write for a full one */
		if (in->opcode == FUSE_WRITE)
			fzc_note_zc_write(NULL, buf, (size_t)res);
		return res;
	}
	zs = w->zs;
	/* A new request on this thread: the INIT/OPEN rewrites key on it. */
	memcpy(&w->in, in, sizeof(w->in));
	w->in_valid = true;
	w->pend = FZC_PEND_NONE;
	if (in->opcode == FUSE_INIT) {
		note_init_request(zs, buf, (size_t)res);
	} else if (!atomic_load(&zs->init_seen)) {
		init_missed(zs);
	} else if (in->opcode == FUSE_WRITE) {
		fzc_note_zc_write(zs, buf, (size_t)res);
	} else if (in->opcode == FUSE_READ && atomic_load(&zs->zc_active) &&
		   (size_t)res >= sizeof(*in) + sizeof(struct fuse_read_in)) {
		const struct fuse_read_in *ri = (const void *)(in + 1);
		struct fzc_read_in r = {
			.unique = in->unique, .offset = ri->offset, .size = ri->size,
		};

		fzc_reads_add(zs, &r);
	}
	return res;
}

/* Tell the application, once, how INIT ended (opts.init_done). */
static void report_init(struct fusezc_session *zs, int error)
{
	if (error == 0)
		atomic_store(&zs->init_done, true);
	if (zs->opts.init_done != NULL && !atomic_exchange(&zs->init_reported, true))
		zs->opts.init_done(zs, error, zs->opts.event_data);
}

static ssize_t write_all(int fd, const void *buf, size_t len)
{
	ssize_t res;

	struct iovec iov = { (void *)buf, len };

	do
		res = fzc_kops->dev_writev(fd, &iov, 1);
	while (res < 0 && errno == EINTR);
	return res;
}

ssize_t fzc_io_writev(int fd, struct iovec *iov, int count, void *userdata)
{
	struct fusezc_worker *w = fzc_tls_worker;
	struct fuse_out_header *hdr;
	size_t total = 0, off = 0;
	ssize_t res;
	int i, err;

	(void)userdata;
	if (count < 1 || iov[0].iov_len < sizeof(struct fuse_out_header))
		return writev(fd, iov, count);
	hdr = iov[0].iov_base;
	for (i = 0; i < count; i++)
		total += iov[i].iov_len;
	if (hdr->unique == 0)
		return writev(fd, iov, count);	/* a notification */

	if (w == NULL) {
		/* A reply from a thread of the file system: forget the request. */
		struct fusezc_session *zs = fzc_session_by_fd(fd);

		if (zs != NULL && fzc_table_active(zs))
			fzc_forget_request(zs, hdr->unique);
		return writev(fd, iov, count);
	}
	if (fzc_tls_write_reply != NULL && !fzc_tls_write_reply->answered &&
	    hdr->error == 0) {
		/* fusezc_reply_write(): answer the request this reply is for. */
		fzc_tls_write_reply->answered = true;
		res = fzc_answer_write(w, fd, hdr->unique, fzc_tls_write_reply);
		if (res < 0) {
			errno = (int)-res;
			return -1;
		}
		return (ssize_t)total;
	}
	if (fzc_tls_read_reply != NULL && !fzc_tls_read_reply->answered &&
	    hdr->error == 0) {
		/* fusezc_reply_read(): answer the request this reply is for. */
		fzc_tls_read_reply->answered = true;
		res = fzc_answer_read(w, fd, hdr->unique, fzc_tls_read_reply);
		if (res < 0) {
			errno = (int)-res;
			return -1;
		}
		return (ssize_t)total;
	}
	if (fzc_table_active(w->zs))
		fzc_forget_request(w->zs, hdr->unique);
	w->written_bytes = hdr->error ? -1 : (ssize_t)(total - sizeof(*hdr));
	if (!w->in_valid || hdr->unique != w->in.unique)
		return writev(fd, iov, count);

	if (!(w->in.opcode == FUSE_INIT ||
	      (w->pend == FZC_PEND_OPEN && hdr->error == 0 &&
	       (w->in.opcode == FUSE_OPEN || w->in.opcode == FUSE_CREATE))) ||
	    total > sizeof(w->msg))
		return writev(fd, iov, count);

	/* A small reply we rewrite: flatten it. */
	for (i = 0; i < count; i++) {
		memcpy(w->msg + off, iov[i].iov_base, iov[i].iov_len);
		off += iov[i].iov_len;
	}
	hdr = (struct fuse_out_header *)w->msg;

	if (w->in.opcode == FUSE_INIT) {
		struct fusezc_session *zs = w->zs;
		bool ok = rewrite_init_reply(zs, w->msg, total);

		atomic_store(&zs->init_seen, true);
		if (!ok) {
			/* Like libfuse on a capability mismatch: EPROTO, exit. */
			hdr->len = sizeof(*hdr);
			hdr->error = -EPROTO;
			res = write_all(fd, w->msg, sizeof(*hdr));
			fuse_session_exit(zs->se);
			report_init(zs, zs->init_error);
			return res < 0 ? res : (ssize_t)total;
		}
		res = write_all(fd, w->msg, total);
		/* The kernel processes an INIT reply within the write. */
		err = res < 0 ? -errno : hdr->error;
		report_init(zs, err);
		if (res < 0) {
			errno = -err;
			return -1;
		}
		return (ssize_t)total;
	}

	/* FZC_PEND_OPEN: fuse_open_out is the last part of OPEN and CREATE replies. */
	if (total >= sizeof(*hdr) + sizeof(struct fzc_open_out)) {
		struct fzc_open_out oo;
		unsigned char *p = w->msg + total - sizeof(oo);

		memcpy(&oo, p, sizeof(oo));
		oo.open_flags |= FUSEZC_FOPEN_PASSTHROUGH;
		oo.backing_id = w->pend_backing_id;
		memcpy(p, &oo, sizeof(oo));
	}
	res = write_all(fd, w->msg, total);
	return res < 0 ? res : (ssize_t)total;
}

static ssize_t fzc_io_splice_send(int fdin, off_t *offin, int fdout, off_t *offout,
				  size_t len, unsigned int flags, void *userdata)
{
	struct fusezc_worker *w = fzc_tls_worker;
	ssize_t res;

	(void)userdata;
	res = splice(fdin, offin, fdout, offout, len, flags);
	if (w != NULL && res >= (ssize_t)sizeof(struct fuse_out_header)) {
		w->spliced = true;
		w->spliced_bytes = res - (ssize_t)sizeof(struct fuse_out_header);
	}
	return res;
}

static const struct fuse_custom_io fzc_io = {
	.read = fzc_io_read,
	.writev = fzc_io_writev,
	.splice_receive = NULL,
	.splice_send = fzc_io_splice_send,
};

/* ------------------------------------------------------------------ */
/* Session                                                             */

int fusezc_session_new_versioned(struct fuse_session *se,
				 const struct fusezc_options *opts, size_t opts_size,
				 struct fusezc_session **zsp)
{
	struct fusezc_options o = { .read_mode = FUSEZC_READ_COPY };
	struct fusezc_session *zs;
	size_t i;
	int fd, res;

	if (se == NULL || zsp == NULL)
		return -EINVAL;
	*zsp = NULL;
	if (opts != NULL) {
		/* A caller built against a newer header: what it set beyond
		 * what this library knows would be ignored, so refuse it. */
		for (i = sizeof(o); i < opts_size; i++) {
			if (((const unsigned char *)opts)[i] != 0) {
				opts_log(NULL, FUSE_LOG_ERR,
					 "options of a newer fuse-zc (%zu bytes, this one knows %zu)",
					 opts_size, sizeof(o));
				return -EINVAL;
			}
		}
		memcpy(&o, opts, opts_size < sizeof(o) ? opts_size : sizeof(o));
	}
	if (o.read_mode > FUSEZC_READ_ZEROCOPY)
		return -EINVAL;
	if (o.zerocopy_required && o.read_mode != FUSEZC_READ_ZEROCOPY) {
		opts_log(&o, FUSE_LOG_ERR, "zerocopy_required needs read mode zerocopy");
		return -EINVAL;
	}
	if (o.max_threads > FZC_LOOP_MAX_THREADS ||
	    (o.max_idle_threads > FZC_LOOP_MAX_THREADS && o.max_idle_threads != UINT_MAX)) {
		opts_log(&o, FUSE_LOG_ERR, "max_threads=%u max_idle_threads=%u: at most %u",
			 o.max_threads, o.max_idle_threads, FZC_LOOP_MAX_THREADS);
		return -EINVAL;
	}
	pthread_once(&worker_key_once, worker_key_create);
	if (worker_key_error)
		return -worker_key_error;
	fd = fuse_session_fd(se);
	if (fd < 0)
		return -EBADF;	/* fuse_session_mount() first */

	zs = calloc(1, sizeof(*zs));
	if (zs == NULL)
		return -ENOMEM;
	zs->se = se;
	zs->opts = o;
	if (zs->opts.ring_entries == 0)
		zs->opts.ring_entries = FZC_DEFAULT_RING;
	zs->fuse_fd = fd;
	atomic_init(&zs->kernel_answers, !zs->opts.server_replies);
	atomic_init(&zs->zc_status, zs->opts.read_mode == FUSEZC_READ_ZEROCOPY ?
		    status_no_init : status_disabled);
	pthread_mutex_init(&zs->reads.lock, NULL);
	pthread_mutex_init(&zs->reaper_lock, NULL);
	zs->reaper_epfd = zs->reaper_stopfd = -1;

	res = fuse_session_custom_io(se, &fzc_io, fd);
	if (res != 0) {
		pthread_mutex_destroy(&zs->reaper_lock);
		pthread_mutex_destroy(&zs->reads.lock);
		free(zs);
		return res < 0 ? res : -EIO;
	}
	fzc_sessions_add(zs);
	*zsp = zs;
	return 0;
}

void fusezc_session_destroy(struct fusezc_session *zs)
{
	if (zs == NULL)
		return;
	fzc_sessions_del(zs);
	fzc_reaper_stop(zs);
	workers_free_retired(zs);
	fzc_reads_free(zs);
	pthread_mutex_destroy(&zs->reaper_lock);
	pthread_mutex_destroy(&zs->reads.lock);
	free(zs);
}

void fusezc_conn_init(struct fusezc_session *zs, struct fuse_conn_info *conn)
{
	if (zs == NULL && fzc_tls_worker != NULL)
		zs = fzc_tls_worker->zs;
	if (zs == NULL || conn == NULL)
		return;
	if (zs->opts.read_mode != FUSEZC_READ_COPY &&
	    (conn->capable & FUSE_CAP_SPLICE_WRITE)) {
		conn->want |= FUSE_CAP_SPLICE_WRITE;
		atomic_store(&zs->splice_enabled, true);
	}
}

struct fusezc_session *fusezc_req_session(fuse_req_t req)
{
	(void)req;
	return fzc_tls_worker ? fzc_tls_worker->zs : NULL;
}

bool fusezc_zerocopy_active(const struct fusezc_session *zs)
{
	return zs != NULL && atomic_load(&zs->zc_active);
}

bool fusezc_init_done(const struct fusezc_session *zs)
{
	return zs != NULL && atomic_load(&zs->init_done);
}

bool fusezc_passthrough_active(const struct fusezc_session *zs)
{
	return zs != NULL && atomic_load(&zs->pt_active);
}

const char *fusezc_zerocopy_status(const struct fusezc_session *zs)
{
	return zs != NULL ? atomic_load(&zs->zc_status) : "no fuse-zc session";
}

bool fusezc_zerocopy_writes_active(const struct fusezc_session *zs)
{
	return zs != NULL && atomic_load(&((struct fusezc_session *)zs)->zcw_active);
}

void fusezc_get_write_stats(const struct fusezc_session *zs, struct fusezc_write_stats *st)
{
	struct fusezc_session *s = (struct fusezc_session *)zs;

	memset(st, 0, sizeof(*st));
	if (s == NULL)
		return;
	st->zc_bytes = atomic_load(&s->zcw_bytes);
	st->zc_requests = atomic_load(&s->zcw_requests);
	st->zc_kernel_answered = atomic_load(&s->zcw_kernel_answered);
	st->memfd_bytes = atomic_load(&s->memfdw_bytes);
	st->memfd_requests = atomic_load(&s->memfdw_requests);
	st->copy_bytes = atomic_load(&s->copyw_bytes);
	st->copy_requests = atomic_load(&s->copyw_requests);
	st->unanswered_zc = atomic_load(&s->zcw_unanswered);
}

void fusezc_get_stats(const struct fusezc_session *zs, struct fusezc_stats *st)
{
	struct fusezc_session *s = (struct fusezc_session *)zs;
	unsigned int i;

	memset(st, 0, sizeof(*st));
	if (s == NULL)
		return;
	st->zc_bytes = atomic_load(&s->zc_bytes);
	st->zc_requests = atomic_load(&s->zc_requests);
	st->zc_kernel_answered = atomic_load(&s->zc_kernel_answered);
	st->splice_bytes = atomic_load(&s->splice_bytes);
	st->splice_requests = atomic_load(&s->splice_requests);
	st->copy_bytes = atomic_load(&s->copy_bytes);
	st->copy_requests = atomic_load(&s->copy_requests);
	st->fallbacks = atomic_load(&s->fallbacks);
	for (i = 0; i < 4; i++)
		st->fallback_errno_counts[i] = atomic_load(&s->fallback_errno_counts[i]);
}

/* ------------------------------------------------------------------ */
/* Loop                                                                */

/* With clone_fd the hooks see clone fds: claim them for @zs (see
 * clone_fd_session).  0, or -EBUSY when another session has them. */
static int claim_clone_fds(struct fusezc_session *zs, bool claim)
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

int fusezc_session_loop(struct fusezc_session *zs)
{
	struct fuse_loop_config *cfg;
	int res;

	if (zs == NULL)
		return -EINVAL;
	if (atomic_exchange(&zs->looping, true))
		return -EBUSY;
	if (zs->opts.clone_fd && claim_clone_fds(zs, true) != 0) {
		fzc_log(zs, FUSE_LOG_ERR,
			"clone_fd: another fuse-zc session of this process runs with clone_fd (one at a time)");
		res = -EBUSY;
		goto out;
	}
	cfg = fuse_loop_cfg_create();
	if (cfg == NULL) {
		res = -ENOMEM;
		goto out_clone;
	}
	if (zs->opts.max_threads != 0)
		fuse_loop_cfg_set_max_threads(cfg, zs->opts.max_threads);
	/* libfuse 3.14 logs an error for UINT_MAX, its own default. */
	if (zs->opts.max_idle_threads != 0 && zs->opts.max_idle_threads != UINT_MAX)
		fuse_loop_cfg_set_idle_threads(cfg, zs->opts.max_idle_threads);
	fuse_loop_cfg_set_clone_fd(cfg, zs->opts.clone_fd);

	/* Threads it starts block the signals fuse_set_signal_handlers()
	 * catches; it cancels and joins them before it returns. */
	res = fuse_session_loop_mt(zs->se, cfg);
	fuse_loop_cfg_destroy(cfg);
	/* its workers have answered their lendings as they ended */
	fzc_reaper_stop(zs);
	if (res > 0)
		res = 0;	/* the signal that ended it */
	if (res == 0)
		res = zs->init_error;
out_clone:
	if (zs->opts.clone_fd)
		claim_clone_fds(zs, false);
out:
	atomic_store(&zs->looping, false);
	return res;
}
