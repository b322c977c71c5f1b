/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The requests the read hook recorded: every FUSE_READ of a zero-copy
 * session and every FUSE_WRITE the kernel sent without its data, by unique
 * id, until their reply is sent.  A reply of fusezc_reply_read() or
 * fusezc_reply_write() lends only to a request found here, and only inside
 * the size recorded here.  Depends on nothing else of the library.
 */
#ifndef FZC_TABLE_H
#define FZC_TABLE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What the library saw of a recorded request. */
struct fzc_request {
	uint64_t unique;	/* 0: free slot */
	uint64_t offset;
	uint32_t size;		/* the request's data: a lending must stay inside */
	bool write;		/* a FUSE_WRITE sent without its data */
};

/* Open addressing, linear probing; grows to FZC_REQUESTS_MAX entries. */
struct fzc_request_table {
	pthread_mutex_t lock;
	struct fzc_request *slots;
	size_t cap;			/* a power of two, or 0 */
	size_t used;
};
#define FZC_REQUESTS_MAX	(1U << 16)	/* beyond: never lent to */

void fzc_requests_init(struct fzc_request_table *t);
void fzc_requests_destroy(struct fzc_request_table *t);
/* Record @r (a request beyond the limit, or out of memory: not recorded). */
void fzc_requests_add(struct fzc_request_table *t, const struct fzc_request *r);
/* Take request @unique out into *@r (may be NULL); false: not there. */
bool fzc_requests_take(struct fzc_request_table *t, uint64_t unique, struct fzc_request *r);
/* Look request @unique up without taking it out. */
bool fzc_requests_peek(struct fzc_request_table *t, uint64_t unique, struct fzc_request *r);

#endif /* FZC_TABLE_H */
