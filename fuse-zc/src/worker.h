/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Which session a /dev/fuse fd belongs to, and the state of each thread of
 * libfuse's loop (a worker): made on the first request a thread reads,
 * retired when it exits, kept until its session is destroyed.
 */
#ifndef FZC_WORKER_H
#define FZC_WORKER_H

#include "core.h"

/* The calling thread's worker state; NULL on a thread that is none. */
extern __thread struct fusezc_worker *fzc_tls_worker;

/* The session of /dev/fuse fd @fd (or of a clone of it), for the hooks. */
void fzc_sessions_add(struct fusezc_session *zs);
void fzc_sessions_del(struct fusezc_session *zs);
struct fusezc_session *fzc_session_by_fd(int fd);
/* With clone_fd the hooks see clone fds, whose numbers do not name their
 * session: claim them for @zs (or give them up).  0, or -EBUSY when
 * another session has them. */
int fzc_claim_clone_fds(struct fusezc_session *zs, bool claim);

/* Once per process, before any worker: 0 or -errno. */
int fzc_workers_init(void);
/* The state of the calling thread, which has just read a request from
 * /dev/fuse file @fd.  NULL when @fd belongs to no session, or out of
 * memory (this thread's read replies are then copies). */
struct fusezc_worker *fzc_worker_for_fd(int fd);
/* Free the states of @zs's exited threads (the loop has ended). */
void fzc_workers_free_retired(struct fusezc_session *zs);

#endif /* FZC_WORKER_H */
