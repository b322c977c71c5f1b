// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * libfuse-zc session: custom /dev/fuse I/O hooks, FUSE_INIT negotiation and
 * a multi-threaded request loop modelled on libfuse's fuse_loop_mt.c.
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
 */
#include "fuse_zc_int.h"

#include <errno.h>
#include <signal.h>
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
		fuse_log(FUSE_LOG_INFO, "fuse-zc: zero-copy reads active\n");
	} else if (want_zc) {
		atomic_store(&zs->zc_status, status_not_offered);
		if (zs->opts.zerocopy_required)
			goto refuse;
		fuse_log(FUSE_LOG_WARNING,
			 "fuse-zc: zero copy unavailable: %s; falling back to %s\n",
			 status_not_offered, atomic_load(&zs->splice_enabled) ? "splice" : "copy");
	} else {
		atomic_store(&zs->zc_status, status_disabled);
	}

	if (zs->opts.passthrough) {
		if (!(offered & FUSEZC_INIT_PASSTHROUGH)) {
			fuse_log(FUSE_LOG_WARNING,
				 "fuse-zc: passthrough unavailable: kernel does not offer FUSE_PASSTHROUGH\n");
		} else if (flags & FUSE_WRITEBACK_CACHE) {
			fuse_log(FUSE_LOG_WARNING,
				 "fuse-zc: passthrough unavailable: the kernel refuses it with writeback cache\n");
		} else {
			flags |= FUSEZC_INIT_EXT;
			flags2 |= (uint32_t)(FUSEZC_INIT_PASSTHROUGH >> 32);
			put32(arg + INIT_OUT_STACK_DEPTH, 1);
			atomic_store(&zs->pt_active, true);
		}
	}
	put32(arg + INIT_OUT_FLAGS, flags);
	put32(arg + INIT_OUT_FLAGS2, flags2);
	return true;

refuse:
	fuse_log(FUSE_LOG_ERR,
		 "fuse-zc: zero copy required but the kernel does not offer it (needs the fuse-zc patched kernel)\n");
	zs->init_error = -EOPNOTSUPP;
	return false;
}

/* ------------------------------------------------------------------ */
/* fuse_custom_io hooks                                                */

ssize_t fzc_io_read(int fd, void *buf, size_t len, void *userdata)
{
	struct fusezc_worker *w = fzc_tls_worker;
	const struct fuse_in_header *in = buf;
	ssize_t res;

	(void)userdata;
	res = read(fd, buf, len);
	if (w == NULL || res < (ssize_t)sizeof(*in))
		return res;
	if (in->opcode == FUSE_INIT) {
		note_init_request(w->zs, buf, (size_t)res);
	} else if (in->opcode == FUSE_READ && atomic_load(&w->zs->zc_active) &&
		   (size_t)res >= sizeof(*in) + sizeof(struct fuse_read_in)) {
		const struct fuse_read_in *ri = (const void *)(in + 1);
		struct fzc_read_in r = {
			.unique = in->unique, .offset = ri->offset, .size = ri->size,
		};

		fzc_reads_add(w->zs, &r);
	}
	return res;
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
	int i;

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

		if (zs != NULL && atomic_load(&zs->zc_active))
			fzc_reads_take(zs, hdr->unique, NULL);
		return writev(fd, iov, count);
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
	if (atomic_load(&w->zs->zc_active))
		fzc_reads_take(w->zs, hdr->unique, NULL);
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
			return res < 0 ? res : (ssize_t)total;
		}
		res = write_all(fd, w->msg, total);
		if (res >= 0)
			atomic_store(&zs->init_done, true);
		return res < 0 ? res : (ssize_t)total;
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

int fusezc_session_new(struct fuse_session *se, const struct fusezc_options *opts,
		       struct fusezc_session **zsp)
{
	static const struct fusezc_options defaults = { .read_mode = FUSEZC_READ_COPY };
	struct fusezc_session *zs;
	int fd, res;

	if (se == NULL || zsp == NULL)
		return -EINVAL;
	*zsp = NULL;
	if (opts == NULL)
		opts = &defaults;
	if (opts->read_mode > FUSEZC_READ_ZEROCOPY)
		return -EINVAL;
	if (opts->zerocopy_required && opts->read_mode != FUSEZC_READ_ZEROCOPY) {
		fuse_log(FUSE_LOG_ERR, "fuse-zc: zerocopy_required needs read mode zerocopy\n");
		return -EINVAL;
	}
	fd = fuse_session_fd(se);
	if (fd < 0)
		return -EBADF;	/* fuse_session_mount() first */

	zs = calloc(1, sizeof(*zs));
	if (zs == NULL)
		return -ENOMEM;
	zs->se = se;
	zs->opts = *opts;
	if (zs->opts.threads == 0)
		zs->opts.threads = FZC_DEFAULT_THREADS;
	if (zs->opts.threads > FZC_MAX_THREADS)
		zs->opts.threads = FZC_MAX_THREADS;
	if (zs->opts.ring_entries == 0)
		zs->opts.ring_entries = FZC_DEFAULT_RING;
	zs->fuse_fd = fd;
	atomic_init(&zs->zc_status, zs->opts.read_mode == FUSEZC_READ_ZEROCOPY ?
		    status_no_init : status_disabled);
	pthread_mutex_init(&zs->lock, NULL);
	pthread_mutex_init(&zs->reads.lock, NULL);

	res = fuse_session_custom_io(se, &fzc_io, fd);
	if (res != 0) {
		pthread_mutex_destroy(&zs->reads.lock);
		pthread_mutex_destroy(&zs->lock);
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
	fzc_reads_free(zs);
	pthread_mutex_destroy(&zs->reads.lock);
	pthread_mutex_destroy(&zs->lock);
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

void fusezc_get_stats(const struct fusezc_session *zs, struct fusezc_stats *st)
{
	struct fusezc_session *s = (struct fusezc_session *)zs;
	unsigned int i;

	memset(st, 0, sizeof(*st));
	if (s == NULL)
		return;
	st->zc_bytes = atomic_load(&s->zc_bytes);
	st->zc_requests = atomic_load(&s->zc_requests);
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

static void *fzc_worker_main(void *data)
{
	struct fusezc_worker *w = data;
	struct fusezc_session *zs = w->zs;
	struct fuse_session *se = zs->se;

	/* Cancellation only while blocked reading /dev/fuse, as in libfuse. */
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
	fzc_tls_worker = w;
	while (!fuse_session_exited(se)) {
		int res;

		pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, NULL);
		res = fuse_session_receive_buf(se, &w->fbuf);
		pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
		if (res == -EINTR)
			continue;
		if (res <= 0) {
			if (res < 0) {
				pthread_mutex_lock(&zs->lock);
				if (zs->loop_error == 0)
					zs->loop_error = res;
				pthread_mutex_unlock(&zs->lock);
				fuse_session_exit(se);
			}
			break;
		}
		w->in_valid = !(w->fbuf.flags & FUSE_BUF_IS_FD) &&
			      w->fbuf.size >= sizeof(w->in);
		if (w->in_valid)
			memcpy(&w->in, w->fbuf.mem, sizeof(w->in));
		w->pend = FZC_PEND_NONE;
		fuse_session_process_buf(se, &w->fbuf);
		w->in_valid = false;
		w->pend = FZC_PEND_NONE;
	}
	fzc_tls_worker = NULL;
	sem_post(&zs->finish);
	return NULL;
}

static int start_worker(struct fusezc_worker *w)
{
	sigset_t newset, oldset;
	int res;

	/* Disallow signal reception in workers (same set as libfuse). */
	sigemptyset(&newset);
	sigaddset(&newset, SIGTERM);
	sigaddset(&newset, SIGINT);
	sigaddset(&newset, SIGHUP);
	sigaddset(&newset, SIGQUIT);
	pthread_sigmask(SIG_BLOCK, &newset, &oldset);
	res = pthread_create(&w->thread, NULL, fzc_worker_main, w);
	pthread_sigmask(SIG_SETMASK, &oldset, NULL);
	if (res != 0) {
		fuse_log(FUSE_LOG_ERR, "fuse-zc: error creating thread: %s\n",
			 strerror(res));
		return -res;
	}
	w->started = true;
	return 0;
}

int fusezc_session_loop(struct fusezc_session *zs)
{
	struct fuse_session *se;
	unsigned int i, started = 0;
	int err = 0;

	if (zs == NULL)
		return -EINVAL;
	se = zs->se;
	zs->nworkers = zs->opts.threads;
	zs->workers = calloc(zs->nworkers, sizeof(*zs->workers));
	if (zs->workers == NULL)
		return -ENOMEM;
	if (sem_init(&zs->finish, 0, 0) != 0) {
		err = -errno;
		goto out_free;
	}
	zs->loop_error = 0;

	for (i = 0; i < zs->nworkers; i++) {
		zs->workers[i].zs = zs;
		err = start_worker(&zs->workers[i]);
		if (err)
			break;
		started++;
	}
	if (started > 0) {
		err = 0;
		/*
		 * sem_wait() is interruptible, so a signal handler calling
		 * fuse_session_exit() ends the loop; the timeout closes the
		 * window between the check and the wait.
		 */
		while (!fuse_session_exited(se)) {
			struct timespec ts;

			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_sec += 1;
			sem_timedwait(&zs->finish, &ts);
		}
	}

	for (i = 0; i < zs->nworkers; i++)
		if (zs->workers[i].started)
			pthread_cancel(zs->workers[i].thread);
	for (i = 0; i < zs->nworkers; i++) {
		struct fusezc_worker *w = &zs->workers[i];

		if (w->started)
			pthread_join(w->thread, NULL);
		if (w->ring_ready)
			fzc_kops->ring_exit(w);
		free(w->fbuf.mem);
		free(w->copybuf);
	}
	sem_destroy(&zs->finish);

	if (err == 0)
		err = zs->loop_error;
	if (err == 0)
		err = zs->init_error;
	fuse_session_reset(se);
out_free:
	free(zs->workers);
	zs->workers = NULL;
	zs->nworkers = 0;
	return err;
}
