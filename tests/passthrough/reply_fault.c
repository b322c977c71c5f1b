// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * LD_PRELOAD fault injection for the passthrough_zc tests: with
 * PZC_FAIL_OPEN_REPLIES=1, every successful OPEN/OPENDIR or CREATE reply
 * written to /dev/fuse is turned into an EIO reply for the kernel, and the
 * writer is told the reply failed with ENOENT, which is what a reply for a
 * request the kernel has already given up on gets.  The kernel then never
 * sends RELEASE for that open: whatever the server allocated for it must be
 * freed by the server itself.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <linux/fuse.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

ssize_t writev(int fd, const struct iovec *iov, int count)
{
	static ssize_t (*real_writev)(int, const struct iovec *, int);
	const char *fail = getenv("PZC_FAIL_OPEN_REPLIES");
	struct fuse_out_header hdr;
	struct iovec err_iov;
	size_t len = 0;
	int i;

	if (!real_writev)
		real_writev = (ssize_t (*)(int, const struct iovec *, int))
			dlsym(RTLD_NEXT, "writev");
	if (!fail || strcmp(fail, "1") || count < 1 || iov[0].iov_len < sizeof(hdr))
		return real_writev(fd, iov, count);
	for (i = 0; i < count; i++)
		len += iov[i].iov_len;
	memcpy(&hdr, iov[0].iov_base, sizeof(hdr));
	/* A reply of exactly these sizes with no error is OPEN/OPENDIR or CREATE. */
	if (hdr.error || hdr.len != len ||
	    (len != sizeof(hdr) + sizeof(struct fuse_open_out) &&
	     len != sizeof(hdr) + sizeof(struct fuse_entry_out) +
		    sizeof(struct fuse_open_out)))
		return real_writev(fd, iov, count);
	hdr.len = sizeof(hdr);
	hdr.error = -EIO;
	err_iov.iov_base = &hdr;
	err_iov.iov_len = sizeof(hdr);
	if (real_writev(fd, &err_iov, 1) == -1)
		return -1;
	errno = ENOENT;
	return -1;
}
