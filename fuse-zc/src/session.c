// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * libfuse-zc session: the public API of a session, its counters and its
 * loop, which is libfuse's own fuse_session_loop_mt(): its pool grows up to
 * max_threads, idle workers exit beyond max_idle_threads, and with clone_fd
 * each worker reads its own /dev/fuse clone.
 */
#include "core.h"

#include "hooks.h"
#include "reaper.h"
#include "worker.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* libfuse's FUSE_LOOP_MT_MAX_THREADS: its setters ignore larger values. */
#define FZC_LOOP_MAX_THREADS	(100U * 1000)

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
				fzc_log_opts(NULL, FUSE_LOG_ERR,
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
		fzc_log_opts(&o, FUSE_LOG_ERR, "zerocopy_required needs read mode zerocopy");
		return -EINVAL;
	}
	if (o.max_threads > FZC_LOOP_MAX_THREADS ||
	    (o.max_idle_threads > FZC_LOOP_MAX_THREADS && o.max_idle_threads != UINT_MAX)) {
		fzc_log_opts(&o, FUSE_LOG_ERR, "max_threads=%u max_idle_threads=%u: at most %u",
			 o.max_threads, o.max_idle_threads, FZC_LOOP_MAX_THREADS);
		return -EINVAL;
	}
	res = fzc_workers_init();
	if (res < 0)
		return res;
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
	atomic_init(&zs->zc_status, zs->opts.read_mode == FUSEZC_READ_ZEROCOPY ?
		    fzc_status_no_init : fzc_status_disabled);
	fzc_requests_init(&zs->requests);
	pthread_mutex_init(&zs->reaper_lock, NULL);
	pthread_mutex_init(&zs->refused_lock, NULL);
	pthread_mutex_init(&zs->limits_lock, NULL);
	pthread_cond_init(&zs->handoff_cond, NULL);
	pthread_cond_init(&zs->handoff_done, NULL);
	pthread_mutex_init(&zs->rr_lock, NULL);
	{
		pthread_condattr_t ca;

		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&zs->rr_cond, &ca);
		pthread_condattr_destroy(&ca);
	}
	zs->reaper_epfd = zs->reaper_stopfd = -1;

	res = fzc_hooks_install(se, fd);
	if (res != 0) {
		pthread_cond_destroy(&zs->rr_cond);
		pthread_mutex_destroy(&zs->rr_lock);
		pthread_cond_destroy(&zs->handoff_done);
		pthread_cond_destroy(&zs->handoff_cond);
		pthread_mutex_destroy(&zs->limits_lock);
		pthread_mutex_destroy(&zs->refused_lock);
		pthread_mutex_destroy(&zs->reaper_lock);
		fzc_requests_destroy(&zs->requests);
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
	fzc_workers_free_retired(zs);
	fzc_requests_destroy(&zs->requests);
	pthread_cond_destroy(&zs->rr_cond);
	pthread_mutex_destroy(&zs->rr_lock);
	pthread_cond_destroy(&zs->handoff_done);
	pthread_cond_destroy(&zs->handoff_cond);
	pthread_mutex_destroy(&zs->limits_lock);
	pthread_mutex_destroy(&zs->refused_lock);
	pthread_mutex_destroy(&zs->reaper_lock);
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

int fusezc_session_loop(struct fusezc_session *zs)
{
	struct fuse_loop_config *cfg;
	int res;

	if (zs == NULL)
		return -EINVAL;
	if (atomic_exchange(&zs->looping, true))
		return -EBUSY;
	if (zs->opts.clone_fd && fzc_claim_clone_fds(zs, true) != 0) {
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
		fzc_claim_clone_fds(zs, false);
out:
	atomic_store(&zs->looping, false);
	return res;
}
