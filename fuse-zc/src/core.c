// SPDX-License-Identifier: LGPL-2.1-or-later
/* Messages, notes, counters and buffers every part of the library uses. */
#include "core.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

void fzc_log_opts(const struct fusezc_options *o, enum fuse_log_level level,
		  const char *fmt, ...)
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

/* A short count when the file stopped taking bytes; -errno if none went. */
ssize_t fzc_pwrite_full(int fd, const void *buf, size_t size, off_t off)
{
	size_t done = 0;

	while (done < size) {
		ssize_t n = pwrite(fd, (const char *)buf + done, size - done, off + (off_t)done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return done ? (ssize_t)done : -errno;
		if (n == 0)
			break;
		done += (size_t)n;
	}
	return (ssize_t)done;
}

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
