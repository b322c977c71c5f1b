// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * passthrough_zc: acting as the caller.
 *
 * A root server mounted with allow_other acts for every local user.  The
 * kernel checks what it can model (default_permissions: the mode, and
 * POSIX ACLs with FUSE_POSIX_ACL) against attributes it caches for up to
 * the timeout; a server acting as root would then let everything past
 * that the source would refuse: a permission changed on the source since,
 * an ACL the kernel does not know (NFSv4, richacls), the sticky bit of a
 * directory whose entries changed owner.  (Security modules see the
 * server's security context either way.)  And it would
 * create as root: a symlink planted in SOURCE behind the kernel's negative
 * dentry is followed to a file anywhere, set-id bits are lost in a chown,
 * set-gid inheritance is guessed.
 *
 * Instead, the worker thread takes the caller's fs uid, fs gid and
 * supplementary groups for the duration of every operation the source
 * checks: creating (create, mknod, mkdir, symlink, link: PZC_CREATING),
 * and opening, listing, removing, renaming, setting attributes and
 * extended attributes (PZC_CHECKING), so the source file system decides
 * ownership, inheritance, set-id bits and permission exactly as for the
 * caller working on it directly (as virtiofsd does).  A root caller needs
 * no switch to be checked as itself (the server's rights are root's), only
 * to create with its own fs gid.
 *
 * All three are per thread in the kernel, but glibc's setgroups() changes
 * every thread of the process: the raw system call is used instead.
 * Taking a non-zero fs uid drops the file-system capabilities
 * (CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_FSETID, CAP_CHOWN, ...) from the
 * thread's effective set; going back to fs uid 0 raises them again.  For a
 * caller other than root the thread also clears the rest of its effective
 * set (capset(2) is per thread; the permitted set stays, to raise them
 * again): otherwise the source would still see CAP_SYS_ADMIN, and list
 * trusted.* xattrs, say, to a user who may not see them.  (The kernel
 * checks the caller's own capabilities before it sends such requests.)
 *
 * An unprivileged server cannot switch and acts as itself, which is what
 * such a mount (without allow_other) is for.
 */
#include "pzc.h"

#include <errno.h>
#include <linux/capability.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/fsuid.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Groups read onto the stack; callers in more groups take the heap. */
#define PZC_STACK_GROUPS 64

int pzc_creds_init(struct pzc_fs *fs)
{
	int n;

	fs->as_caller = geteuid() == 0;
	if (!fs->as_caller)
		return 0;
	n = getgroups(0, NULL);
	if (n < 0)
		return -errno;
	fs->server_groups = calloc(n ? n : 1, sizeof(gid_t));
	if (!fs->server_groups)
		return -ENOMEM;
	n = getgroups(n, fs->server_groups);
	if (n < 0)
		return -errno;
	fs->nserver_groups = n;
	return 0;
}

void pzc_creds_destroy(struct pzc_fs *fs)
{
	free(fs->server_groups);
	fs->server_groups = NULL;
}

static int pzc_set_groups(size_t n, const gid_t *groups)
{
	return syscall(SYS_setgroups, n, groups) == -1 ? -errno : 0;
}

/* The caller's supplementary groups on this thread: 0 or -errno. */
static int pzc_take_caller_groups(fuse_req_t req)
{
	gid_t stack[PZC_STACK_GROUPS], *groups = stack;
	int n, err;

	n = fuse_req_getgroups(req, PZC_STACK_GROUPS, stack);
	if (n > PZC_STACK_GROUPS) {
		groups = calloc(n, sizeof(*groups));
		if (!groups)
			return -ENOMEM;
		n = fuse_req_getgroups(req, n, groups);
	}
	/* The caller is gone, or its pid is not visible here: the request
	 * gets no supplementary group rather than the server's. */
	if (n < 0)
		n = 0;
	err = pzc_set_groups(n, groups);
	if (groups != stack)
		free(groups);
	return err;
}

/* This thread's effective capabilities: none (@raise false), or all it
 * is permitted (@raise true).  0 or -errno. */
static int pzc_set_effective_caps(bool raise)
{
	struct __user_cap_header_struct hdr = {
		.version = _LINUX_CAPABILITY_VERSION_3,
	};
	struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];
	size_t i;

	if (syscall(SYS_capget, &hdr, data) == -1)
		return -errno;
	for (i = 0; i < _LINUX_CAPABILITY_U32S_3; i++)
		data[i].effective = raise ? data[i].permitted : 0;
	return syscall(SYS_capset, &hdr, data) == -1 ? -errno : 0;
}

/* Back to the server's identity.  A thread that cannot return would serve
 * later requests with a user's rights (or root's with a user's groups). */
static void pzc_creds_restore(struct pzc_fs *fs, bool caps_dropped)
{
	uid_t uid = geteuid();
	gid_t gid = getegid();

	if (caps_dropped && pzc_set_effective_caps(true))
		uid = (uid_t)-1;	/* cannot go on: abort below */
	setfsuid(uid);
	setfsgid(gid);
	if ((uid_t)setfsuid(-1) != uid || (gid_t)setfsgid(-1) != gid ||
	    pzc_set_groups(fs->nserver_groups, fs->server_groups)) {
		fprintf(stderr, "passthrough_zc: internal error: cannot restore "
			"the server's credentials on a worker thread\n");
		abort();
	}
}

int pzc_creds_enter(fuse_req_t req, struct pzc_creds *saved, enum pzc_act act)
{
	struct pzc_fs *fs = fuse_req_userdata(req);
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	int err;

	saved->switched = false;
	saved->caps_dropped = false;
	if (!fs->as_caller || (act == PZC_CHECKING && ctx->uid == 0))
		return 0;
	err = pzc_take_caller_groups(req);
	if (err)
		return err;
	saved->switched = true;
	/* setfsuid/setfsgid report the previous value, never an error: ask
	 * again to see whether the switch happened. */
	setfsgid(ctx->gid);
	setfsuid(ctx->uid);
	if ((gid_t)setfsgid(-1) != ctx->gid || (uid_t)setfsuid(-1) != ctx->uid) {
		pzc_creds_leave(req, saved);
		return -EPERM;
	}
	/* last: the switches above need CAP_SETUID and CAP_SETGID */
	if (ctx->uid != 0) {
		err = pzc_set_effective_caps(false);
		saved->caps_dropped = true;
		if (err) {
			pzc_creds_leave(req, saved);
			return err;
		}
	}
	return 0;
}

void pzc_creds_leave(fuse_req_t req, struct pzc_creds *saved)
{
	if (!saved->switched)
		return;
	pzc_creds_restore(fuse_req_userdata(req), saved->caps_dropped);
	saved->switched = false;
	saved->caps_dropped = false;
}
