/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * fusezc_reply_write(): a FUSE_WRITE written from the writer's pages, through
 * a memfd, or as it came.  The read hook calls fzc_record_zc_write() for
 * every FUSE_WRITE, the writev hook fzc_answer_write() for the write reply
 * fusezc_reply_write() lets libfuse send.
 */
#ifndef FZC_WRITE_H
#define FZC_WRITE_H

#include "core.h"

/* A write reply fusezc_reply_write() is sending through libfuse. */
struct fzc_write_reply {
	int fd;
	off_t off;
	const void *buf;	/* the data libfuse had (none for a zero-copy write) */
	size_t size;
	bool answered;		/* the writev hook took it */
};
extern __thread struct fzc_write_reply *fzc_tls_write_reply;

/* A FUSE_WRITE as read into @buf (@len bytes): one the kernel sent without
 * its data is made one libfuse accepts (size 0) and, when @zs is not NULL,
 * recorded. */
void fzc_record_zc_write(struct fusezc_session *zs, void *buf, size_t len);
/* Answer FUSE_WRITE @unique with @wr (the writev hook); 0 or -errno. */
int fzc_answer_write(struct fusezc_worker *w, int devfd, uint64_t unique,
		     const struct fzc_write_reply *wr);

#endif /* FZC_WRITE_H */
