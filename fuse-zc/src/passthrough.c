// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * FUSE passthrough (Linux 6.9+) through libfuse 3.14, which has no API for
 * it: backing files are registered with the /dev/fuse ioctls, and the
 * OPEN/CREATE reply is marked FOPEN_PASSTHROUGH by the writev hook.
 */
#include "core.h"

#include "worker.h"

#include <errno.h>
#include <sys/ioctl.h>

int fusezc_backing_open(struct fusezc_session *zs, int fd)
{
	struct fusezc_backing_map map = { .fd = fd };
	int id;

	if (zs == NULL || fd < 0)
		return -EINVAL;
	if (!atomic_load(&zs->pt_active))
		return -EOPNOTSUPP;
	id = ioctl(zs->fuse_fd, FUSEZC_DEV_IOC_BACKING_OPEN, &map);
	if (id < 0)
		return -errno;
	if (id == 0)		/* not a valid backing id */
		return -EIO;
	return id;
}

int fusezc_backing_close(struct fusezc_session *zs, int backing_id)
{
	uint32_t id = (uint32_t)backing_id;

	if (zs == NULL || backing_id <= 0)
		return -EINVAL;
	if (ioctl(zs->fuse_fd, FUSEZC_DEV_IOC_BACKING_CLOSE, &id) < 0)
		return -errno;
	return 0;
}

/* Arm the OPEN/CREATE rewrite when passthrough can be used, else do nothing. */
static bool arm_open(int backing_id)
{
	struct fusezc_worker *w = fzc_tls_worker;

	if (w == NULL || backing_id <= 0 || !atomic_load(&w->zs->pt_active) ||
	    !w->in_valid)
		return false;
	w->pend = FZC_PEND_OPEN;
	w->pend_backing_id = backing_id;
	return true;
}

static void disarm(bool armed)
{
	if (armed)
		fzc_tls_worker->pend = FZC_PEND_NONE;
}

int fusezc_reply_open_passthrough(fuse_req_t req, struct fuse_file_info *fi,
				  int backing_id)
{
	bool armed = arm_open(backing_id);
	int res = fuse_reply_open(req, fi);

	disarm(armed);
	return res;
}

int fusezc_reply_create_passthrough(fuse_req_t req, const struct fuse_entry_param *e,
				    struct fuse_file_info *fi, int backing_id)
{
	bool armed = arm_open(backing_id);
	int res = fuse_reply_create(req, e, fi);

	disarm(armed);
	return res;
}
