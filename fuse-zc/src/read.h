/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * fusezc_reply_read(): a FUSE_READ answered by zero copy, splice or copy.
 * The writev hook calls fzc_answer_read() for the read reply
 * fusezc_reply_read() lets libfuse send.
 */
#ifndef FZC_READ_H
#define FZC_READ_H

#include "core.h"

/*
 * A read reply fusezc_reply_read() is sending through libfuse.  libfuse puts
 * the request's unique id in the reply header, so the writev hook learns
 * which request the reply belongs to, and answers exactly that request:
 * lending its pages, or by copy.  A reply can therefore not name another
 * request than the req it was given, whichever thread sends it.
 */
struct fzc_read_reply {
	int fd;
	off_t off;
	size_t size;
	bool answered;		/* the writev hook took it */
};
extern __thread struct fzc_read_reply *fzc_tls_read_reply;

/* Answer FUSE_READ @unique with @rr on /dev/fuse @devfd (the writev hook).
 * 0, or -errno of the last reply write. */
int fzc_answer_read(struct fusezc_worker *w, int devfd, uint64_t unique,
		    const struct fzc_read_reply *rr);

#endif /* FZC_READ_H */
