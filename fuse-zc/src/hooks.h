/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libfuse's custom I/O hooks (fuse_session_custom_io()): the read hook sees
 * every request libfuse reads, the writev hook every reply it sends, each
 * with the fd of the channel involved.  They record requests, rewrite the
 * INIT reply and passthrough OPEN/CREATE replies, and hand the replies of
 * fusezc_reply_read() and fusezc_reply_write() to read.c and write.c.
 */
#ifndef FZC_HOOKS_H
#define FZC_HOOKS_H

#include "core.h"

/* fuse_init_out offsets (include/uapi/linux/fuse.h, 7.40+ layout). */
#define INIT_OUT_FLAGS		12
#define INIT_OUT_FLAGS2		32
#define INIT_OUT_STACK_DEPTH	36
#define INIT_OUT_MIN		40

/* fuse_open_out: fh, open_flags, backing_id (was padding before 7.40). */
struct fzc_open_out {
	uint64_t fh;
	uint32_t open_flags;
	int32_t backing_id;
};

extern const struct fuse_custom_io fzc_io;
/* Install the hooks on @se's /dev/fuse fd @fd (fuse_session_custom_io()). */
int fzc_hooks_install(struct fuse_session *se, int fd);

/* fusezc_zerocopy_status() before INIT, and when zero copy is not asked for. */
extern const char fzc_status_no_init[];
extern const char fzc_status_disabled[];

/* The hooks themselves (for the unit tests). */
ssize_t fzc_io_read(int fd, void *buf, size_t len, void *userdata);
ssize_t fzc_io_writev(int fd, struct iovec *iov, int count, void *userdata);

#endif /* FZC_HOOKS_H */
