// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * passthrough_zc operations on nodes: INIT, lookup and forget, attributes,
 * creating and removing names, statfs, access, extended attributes; and
 * the operations table (directories: dir.c, open files: file.c).
 *
 * Inodes: see inode.c (keyed by st_dev/st_ino, O_PATH fds, nlookup apart
 * from nopen) and the lock order in pzc.h.  Each handler ends in exactly
 * one fuse_reply_*().
 */
#include "pzc.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

_Static_assert(sizeof(fuse_ino_t) >= sizeof(uintptr_t),
	       "inode pointers must fit in fuse_ino_t");

void pzc_entry_init(struct pzc_fs *fs, struct fuse_entry_param *e)
{
	memset(e, 0, sizeof(*e));
	e->attr_timeout = fs->cfg.timeout;
	e->entry_timeout = fs->cfg.timeout;
}

/* Look @name up in the directory @dirfd (inode @parent), taking one
 * lookup reference.  0 or -errno. */
int pzc_lookup_at(fuse_req_t req, fuse_ino_t parent, int dirfd, const char *name,
		  struct fuse_entry_param *e)
{
	struct pzc_fs *fs = pzc_fs(req);
	struct file_handle *handle;
	struct pzc_inode *inode;
	int fd, err, mount_id;

	pzc_entry_init(fs, e);
	fd = openat(dirfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (fd == -1)
		return -errno;
	if (fstatat(fd, "", &e->attr, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) == -1) {
		err = -errno;
		close(fd);
		return err;
	}
	handle = pzc_handle_of(fs, fd, &mount_id);
	if (handle && S_ISDIR(e->attr.st_mode))
		pzc_note_mount(fs, mount_id, fd, handle);
	inode = pzc_inode_get(fs, fd, &e->attr, handle, mount_id,
			      pzc_inode(req, parent), name);
	if (!inode)
		return -ENOMEM;
	pzc_stat_ino(fs, &e->attr);
	e->ino = pzc_ino(fs, inode);
	e->generation = inode->generation;
	if (pzc_debug(req))
		fuse_log(FUSE_LOG_DEBUG, "  %d/%s -> %" PRIu64 "\n", dirfd, name,
			 (uint64_t)e->ino);
	return 0;
}

/* Look @name up in @parent, taking one lookup reference.  0 or -errno. */
int pzc_do_lookup(fuse_req_t req, fuse_ino_t parent, const char *name,
		  struct fuse_entry_param *e)
{
	int dfd = pzc_ifd(req, parent);
	int err;

	if (dfd < 0)
		return dfd;
	err = pzc_lookup_at(req, parent, dfd, name, e);
	pzc_ifd_put(req, parent);
	return err;
}

static void pzc_init(void *userdata, struct fuse_conn_info *conn)
{
	struct pzc_fs *fs = userdata;
	unsigned int readahead;

	if (fs->cfg.writeback && (conn->capable & FUSE_CAP_WRITEBACK_CACHE)) {
		conn->want |= FUSE_CAP_WRITEBACK_CACHE;
		fs->writeback_on = true;
	}
	if (fs->cfg.flock && (conn->capable & FUSE_CAP_FLOCK_LOCKS))
		conn->want |= FUSE_CAP_FLOCK_LOCKS;
	else
		conn->want &= ~FUSE_CAP_FLOCK_LOCKS;
	/* splice (and the zerocopy fallback) need FUSE_CAP_SPLICE_WRITE */
	fusezc_conn_init(fs->zs, conn);
	/* By default with xattrs: the kernel's permission checks (the path
	 * walk, exec, access) then see the ACLs the source applies. */
	if (fs->cfg.posix_acl > 0 || (fs->cfg.posix_acl < 0 && fs->cfg.xattr)) {
		const unsigned int acl = FUSE_CAP_POSIX_ACL | FUSE_CAP_DONT_MASK;

		if ((conn->capable & acl) == acl) {
			conn->want |= acl;
			fs->acl_on = true;
		} else if (fs->cfg.posix_acl > 0) {
			fuse_log(FUSE_LOG_ERR, "passthrough_zc: the kernel does not "
				 "offer POSIX ACLs; -o posix_acl ignored\n");
		}
	}
	/* The daemon writes with CAP_FSETID: let the kernel kill suid/sgid. */
	conn->want &= ~FUSE_CAP_HANDLE_KILLPRIV;
	if (fs->cfg.cache == PZC_CACHE_ALWAYS &&
	    (conn->capable & FUSE_CAP_CACHE_SYMLINKS))
		conn->want |= FUSE_CAP_CACHE_SYMLINKS;

	/* libfuse 3.14 derives max_pages from max_write (1 MiB by default);
	 * READ requests are bounded by max_pages and by max_read. */
	if (fs->cfg.max_write && fs->cfg.max_write < conn->max_write)
		conn->max_write = fs->cfg.max_write;
	readahead = fs->cfg.max_readahead;
	if (!readahead && geteuid() == 0) {
		/* Only root can write the bdi; others keep the kernel's. */
		readahead = PZC_DEFAULT_READAHEAD;
		fs->readahead_default = true;
	}
	if (readahead && readahead < conn->max_readahead)
		conn->max_readahead = readahead;
	else if (readahead > conn->max_readahead)
		fs->raise_readahead_kb = readahead / 1024;
	conn->max_read = fs->cfg.max_read;	/* must match the mount option */

	if (fs->cfg.debug)
		fuse_log(FUSE_LOG_DEBUG, "pzc_init: max_write=%u max_readahead=%u "
			 "max_read=%u writeback=%d\n", conn->max_write,
			 conn->max_readahead, conn->max_read, fs->writeback_on);
}


static void pzc_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct pzc_fs *fs = pzc_fs(req);
	struct fuse_entry_param e;
	int err;

	err = pzc_do_lookup(req, parent, name, &e);
	if (err == -ENOENT && fs->cfg.timeout > 0) {
		/* negative entry, cached for the entry timeout */
		pzc_entry_init(fs, &e);
		return (void)fuse_reply_entry(req, &e);
	}
	if (err)
		return (void)fuse_reply_err(req, -err);
	fuse_reply_entry(req, &e);
}

static void pzc_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	pzc_inode_unref(pzc_fs(req), pzc_inode(req, ino), nlookup);
	fuse_reply_none(req);
}

static void pzc_forget_multi(fuse_req_t req, size_t count,
			     struct fuse_forget_data *forgets)
{
	struct pzc_fs *fs = pzc_fs(req);
	size_t i;

	for (i = 0; i < count; i++)
		pzc_inode_unref(fs, pzc_inode(req, forgets[i].ino),
				forgets[i].nlookup);
	fuse_reply_none(req);
}

static void pzc_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	int ifd = pzc_ifd(req, ino);
	struct stat st;
	int res;

	(void)fi;
	if (ifd < 0)
		return (void)fuse_reply_err(req, -ifd);
	res = fstatat(ifd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW);
	pzc_ifd_put(req, ino);
	if (res == -1)
		return (void)fuse_reply_err(req, errno);
	pzc_stat_ino(pzc_fs(req), &st);
	fuse_reply_attr(req, &st, pzc_fs(req)->cfg.timeout);
}

/* utimensat on an O_PATH fd needs the /proc/self/fd detour on some
 * kernels and for symlinks; -1 and errno like the calls it wraps. */
static int pzc_utimens(int ifd, const char *path, struct pzc_file *fh,
		       const struct timespec tv[2])
{
	if (fh)
		return futimens(fh->fd, tv);
	if (utimensat(ifd, "", tv, AT_EMPTY_PATH) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOENT)
		return -1;
	return utimensat(AT_FDCWD, path, tv, 0);
}

/* The times of a SETATTR: UTIME_OMIT for what is not set. */
static void pzc_setattr_times(const struct stat *attr, int valid,
			      struct timespec tv[2])
{
	tv[0].tv_sec = tv[1].tv_sec = 0;
	tv[0].tv_nsec = tv[1].tv_nsec = UTIME_OMIT;
	if (valid & FUSE_SET_ATTR_ATIME_NOW)
		tv[0].tv_nsec = UTIME_NOW;
	else if (valid & FUSE_SET_ATTR_ATIME)
		tv[0] = attr->st_atim;
	if (valid & FUSE_SET_ATTR_MTIME_NOW)
		tv[1].tv_nsec = UTIME_NOW;
	else if (valid & FUSE_SET_ATTR_MTIME)
		tv[1] = attr->st_mtim;
}

/*
 * With the writeback cache the kernel keeps mtime itself and sends touch(1)
 * (utimensat with no times) as "atime now, mtime = its clock": an explicit
 * time, which only the owner may set, where the caller asked for "now",
 * which anyone who may write can.  Such a request (mtime within a second
 * of now) is taken for "now" when the explicit one is refused.
 */
static bool pzc_writeback_touch(fuse_req_t req, int valid, const struct timespec tv[2])
{
	struct timespec now;

	if (!pzc_fs(req)->writeback_on || tv[0].tv_nsec != UTIME_NOW ||
	    !(valid & FUSE_SET_ATTR_MTIME) || (valid & FUSE_SET_ATTR_MTIME_NOW))
		return false;
	clock_gettime(CLOCK_REALTIME, &now);
	return tv[1].tv_sec >= now.tv_sec - 1 && tv[1].tv_sec <= now.tv_sec + 1;
}

/*
 * Whether @mode differs from the source's mode of @ifd only in set-id bits
 * it drops: what the kernel asks for after a write or truncate by someone
 * who may write but does not own the file (FUSE_CAP_HANDLE_KILLPRIV is
 * off), and what the source would do itself for that writer.
 */
static bool pzc_drops_setid_only(int ifd, mode_t mode)
{
	const mode_t setid = S_ISUID | S_ISGID;
	struct stat st;

	if (fstatat(ifd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) == -1)
		return false;
	return (st.st_mode & 07777 & ~setid) == (mode & 07777 & ~setid) &&
	       !(mode & setid & ~st.st_mode) && (st.st_mode & setid & ~mode);
}

/*
 * Each attribute through the open file when the kernel names one (@fi),
 * else through the inode's O_PATH fd (or its /proc/self/fd link), as the
 * caller: the source decides who may chmod, chown, truncate and set times.
 * Two requests come from the kernel itself rather than from a caller's
 * choice, and get the server's rights when the caller's fall short: the
 * set-id bits a write drops (pzc_drops_setid_only), and the times of an
 * open file (only ftruncate and the writeback of times name one; futimens
 * does not).  0 or -errno.
 */
static int pzc_do_setattr(fuse_req_t req, int ifd, struct pzc_file *fh,
			  const struct stat *attr, int valid)
{
	char path[PZC_PROCFD_LEN];
	struct pzc_creds creds;
	struct timespec tv[2];
	int res = 0, err;

	pzc_procfd(path, ifd);
	pzc_setattr_times(attr, valid, tv);
	err = pzc_creds_enter(req, &creds, PZC_CHECKING);
	if (err)
		return err;
	if (valid & FUSE_SET_ATTR_MODE) {
		res = fh ? fchmod(fh->fd, attr->st_mode) : chmod(path, attr->st_mode);
		if (res == -1 && errno == EPERM && creds.switched &&
		    pzc_drops_setid_only(ifd, attr->st_mode)) {
			pzc_creds_leave(req, &creds);
			res = chmod(path, attr->st_mode);
			err = res == -1 ? -errno : 0;
			if (!err)
				err = pzc_creds_enter(req, &creds, PZC_CHECKING);
			if (err)
				return err;
		}
	}
	if (!res && (valid & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)))
		res = fchownat(ifd, "",
			       (valid & FUSE_SET_ATTR_UID) ? attr->st_uid : (uid_t)-1,
			       (valid & FUSE_SET_ATTR_GID) ? attr->st_gid : (gid_t)-1,
			       AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW);
	if (!res && (valid & FUSE_SET_ATTR_SIZE))
		res = fh ? ftruncate(fh->fd, attr->st_size) : truncate(path, attr->st_size);
	if (!res && !fh && (valid & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME))) {
		res = pzc_utimens(ifd, path, NULL, tv);
		if (res == -1 && errno == EPERM && pzc_writeback_touch(req, valid, tv)) {
			tv[1].tv_sec = 0;
			tv[1].tv_nsec = UTIME_NOW;
			res = pzc_utimens(ifd, path, NULL, tv);
		}
	}
	err = res == -1 ? -errno : 0;
	pzc_creds_leave(req, &creds);
	if (!err && fh && (valid & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME)) &&
	    pzc_utimens(ifd, path, fh, tv) == -1)
		err = -errno;
	return err;
}

static void pzc_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
			int valid, struct fuse_file_info *fi)
{
	int ifd = pzc_ifd(req, ino);
	struct stat st;
	int err;

	if (ifd < 0)
		return (void)fuse_reply_err(req, -ifd);
	err = pzc_do_setattr(req, ifd, fi ? pzc_file(fi) : NULL, attr, valid);
	if (!err && fstatat(ifd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) == -1)
		err = -errno;
	pzc_ifd_put(req, ino);
	if (err)
		return (void)fuse_reply_err(req, -err);
	pzc_stat_ino(pzc_fs(req), &st);
	fuse_reply_attr(req, &st, pzc_fs(req)->cfg.timeout);
}

static void pzc_readlink(fuse_req_t req, fuse_ino_t ino)
{
	int ifd = pzc_ifd(req, ino);
	char buf[PATH_MAX + 1];
	ssize_t res;

	if (ifd < 0)
		return (void)fuse_reply_err(req, -ifd);
	res = readlinkat(ifd, "", buf, sizeof(buf));
	if (res == -1)
		res = -errno;
	pzc_ifd_put(req, ino);
	if (res < 0)
		return (void)fuse_reply_err(req, -res);
	if (res == sizeof(buf))
		return (void)fuse_reply_err(req, ENAMETOOLONG);
	buf[res] = '\0';
	fuse_reply_readlink(req, buf);
}

/*
 * With POSIX ACLs the kernel leaves the caller's umask to us (FUSE_DONT_MASK):
 * the source applies it, or the parent's default ACL instead, when this
 * thread's umask is the caller's.  umask is per fs_struct, so each worker
 * thread gets its own first.  Without ACLs the kernel has masked the mode
 * and the server's umask stays 0.
 */
static int pzc_umask_begin(fuse_req_t req)
{
	static __thread bool unshared;

	if (!pzc_fs(req)->acl_on)
		return 0;
	if (!unshared) {
		if (unshare(CLONE_FS) == -1)
			return -errno;
		unshared = true;
	}
	umask(fuse_req_ctx(req)->umask);
	return 0;
}

static void pzc_umask_end(fuse_req_t req)
{
	if (pzc_fs(req)->acl_on)
		umask(0);
}

/*
 * Creating operations run with the caller's credentials (creds.c) and, with
 * POSIX ACLs, the caller's umask.  0 or -errno; after 0, pzc_caller_end()
 * must follow (it may change errno).
 */
int pzc_caller_begin(fuse_req_t req, struct pzc_creds *creds)
{
	int err = pzc_umask_begin(req);

	if (err)
		return err;
	err = pzc_creds_enter(req, creds, PZC_CREATING);
	if (err)
		pzc_umask_end(req);
	return err;
}

void pzc_caller_end(fuse_req_t req, struct pzc_creds *creds)
{
	pzc_creds_leave(req, creds);
	pzc_umask_end(req);
}

/* mkdir, mknod and symlink: create as the caller, look up as the server.
 * None of them follows a symlink in the last component. */
static void pzc_make_node(fuse_req_t req, fuse_ino_t parent, const char *name,
			  mode_t mode, dev_t rdev, const char *link)
{
	int dfd = pzc_ifd(req, parent);
	struct fuse_entry_param e;
	struct pzc_creds creds;
	int res, err;

	if (dfd < 0)
		return (void)fuse_reply_err(req, -dfd);
	err = pzc_caller_begin(req, &creds);
	if (err)
		goto out;
	if (link)
		res = symlinkat(link, dfd, name);
	else if (S_ISDIR(mode))
		res = mkdirat(dfd, name, mode);
	else
		res = mknodat(dfd, name, mode, rdev);
	err = res == -1 ? -errno : 0;
	pzc_caller_end(req, &creds);
	if (!err)
		err = pzc_lookup_at(req, parent, dfd, name, &e);
out:
	pzc_ifd_put(req, parent);
	if (err)
		return (void)fuse_reply_err(req, -err);
	fuse_reply_entry(req, &e);
}

static void pzc_mknod(fuse_req_t req, fuse_ino_t parent, const char *name,
		      mode_t mode, dev_t rdev)
{
	pzc_make_node(req, parent, name, mode, rdev, NULL);
}

static void pzc_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name,
		      mode_t mode)
{
	pzc_make_node(req, parent, name, S_IFDIR | mode, 0, NULL);
}

static void pzc_symlink(fuse_req_t req, const char *link, fuse_ino_t parent,
			const char *name)
{
	pzc_make_node(req, parent, name, S_IFLNK, 0, link);
}

/* Pin the fds of inodes @a and @b (which may be one): 0, or -errno with
 * neither pinned. */
static int pzc_ifd_pair(fuse_req_t req, fuse_ino_t a, fuse_ino_t b, int fds[2])
{
	fds[0] = pzc_ifd(req, a);
	if (fds[0] < 0)
		return fds[0];
	fds[1] = pzc_ifd(req, b);
	if (fds[1] < 0) {
		pzc_ifd_put(req, a);
		return fds[1];
	}
	return 0;
}

static void pzc_ifd_pair_put(fuse_req_t req, fuse_ino_t a, fuse_ino_t b)
{
	pzc_ifd_put(req, b);
	pzc_ifd_put(req, a);
}

static void pzc_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t parent,
		     const char *name)
{
	struct pzc_fs *fs = pzc_fs(req);
	struct pzc_inode *inode = pzc_inode(req, ino);
	char path[PZC_PROCFD_LEN];
	struct fuse_entry_param e;
	struct pzc_creds creds;
	int fds[2], ifd, dfd, res, err;

	pzc_entry_init(fs, &e);
	err = pzc_ifd_pair(req, ino, parent, fds);
	if (err)
		return (void)fuse_reply_err(req, -err);
	ifd = fds[0];
	dfd = fds[1];
	err = pzc_creds_enter(req, &creds, PZC_CREATING);
	if (err)
		goto out;
	/* AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH, which a caller usually
	 * lacks; the /proc/self/fd link names the same inode (the source's
	 * protected_hardlinks rules then apply to the caller). */
	res = linkat(ifd, "", dfd, name, AT_EMPTY_PATH);
	if (res == -1 && (errno == ENOENT || errno == EINVAL || errno == EPERM)) {
		pzc_procfd(path, ifd);
		res = linkat(AT_FDCWD, path, dfd, name, AT_SYMLINK_FOLLOW);
	}
	err = res == -1 ? -errno : 0;
	pzc_creds_leave(req, &creds);
	if (!err && fstatat(ifd, "", &e.attr, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) == -1)
		err = -errno;
out:
	pzc_ifd_pair_put(req, ino, parent);
	if (err)
		return (void)fuse_reply_err(req, -err);
	pzc_stat_ino(fs, &e.attr);
	pzc_inode_ref(fs, inode);
	e.ino = pzc_ino(fs, inode);
	e.generation = inode->generation;
	fuse_reply_entry(req, &e);
}

/* unlink, rmdir: as the caller (write and search on the parent, the
 * sticky bit).  0 or -errno. */
static int pzc_remove(fuse_req_t req, fuse_ino_t parent, const char *name, int flags)
{
	int dfd = pzc_ifd(req, parent);
	struct pzc_creds creds;
	int err;

	if (dfd < 0)
		return dfd;
	pzc_inode_unnamed(pzc_fs(req), pzc_inode(req, parent), dfd, name);
	err = pzc_creds_enter(req, &creds, PZC_CHECKING);
	if (!err) {
		err = unlinkat(dfd, name, flags) == -1 ? -errno : 0;
		pzc_creds_leave(req, &creds);
	}
	pzc_ifd_put(req, parent);
	return err;
}

static void pzc_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	fuse_reply_err(req, -pzc_remove(req, parent, name, 0));
}

static void pzc_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	fuse_reply_err(req, -pzc_remove(req, parent, name, AT_REMOVEDIR));
}

static void pzc_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
		       fuse_ino_t newparent, const char *newname, unsigned int flags)
{
	struct pzc_fs *fs = pzc_fs(req);
	struct pzc_creds creds;
	int fds[2], err;

	if (flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE | RENAME_WHITEOUT))
		return (void)fuse_reply_err(req, EINVAL);
	err = pzc_ifd_pair(req, parent, newparent, fds);
	if (err)
		return (void)fuse_reply_err(req, -err);
	/* inodes reopened by name follow (inode.c) */
	if (!(flags & (RENAME_EXCHANGE | RENAME_NOREPLACE)))
		pzc_inode_unnamed(fs, pzc_inode(req, newparent), fds[1], newname);
	err = pzc_creds_enter(req, &creds, PZC_CHECKING);
	if (!err) {
		err = renameat2(fds[0], name, fds[1], newname, flags) == -1 ? -errno : 0;
		pzc_creds_leave(req, &creds);
	}
	if (!err) {
		pzc_inode_named(fs, pzc_inode(req, newparent), fds[1], newname);
		if (flags & RENAME_EXCHANGE)
			pzc_inode_named(fs, pzc_inode(req, parent), fds[0], name);
	}
	pzc_ifd_pair_put(req, parent, newparent);
	fuse_reply_err(req, -err);
}

static void pzc_statfs(fuse_req_t req, fuse_ino_t ino)
{
	int ifd = pzc_ifd(req, ino);
	struct statvfs sv;
	int res;

	if (ifd < 0)
		return (void)fuse_reply_err(req, -ifd);
	res = fstatvfs(ifd, &sv);
	pzc_ifd_put(req, ino);
	if (res == -1)
		return (void)fuse_reply_err(req, errno);
	fuse_reply_statfs(req, &sv);
}

static void pzc_access(fuse_req_t req, fuse_ino_t ino, int mask)
{
	int ifd = pzc_ifd(req, ino);
	char path[PZC_PROCFD_LEN];
	int err;

	if (ifd < 0)
		return (void)fuse_reply_err(req, -ifd);
	pzc_procfd(path, ifd);
	err = faccessat(AT_FDCWD, path, mask, 0) == -1 ? errno : 0;
	pzc_ifd_put(req, ino);
	fuse_reply_err(req, err);
}

/* --- extended attributes, through /proc/self/fd as O_PATH cannot --- */

/*
 * With FUSE_POSIX_ACL the kernel asks for the ACLs of every inode it
 * checks, and takes any error but "none" for a failed check: a source
 * without ACLs (EOPNOTSUPP) has none.
 */
static bool pzc_no_acls(struct pzc_fs *fs, const char *name, int err)
{
	return fs->acl_on && err == EOPNOTSUPP &&
	       (!strcmp(name, "system.posix_acl_access") ||
		!strcmp(name, "system.posix_acl_default"));
}

/* Whether reading xattr @name needs no permission (as natively): the
 * kernel reads ACLs for its checks, on any inode it walks through. */
static bool pzc_xattr_readable(const char *name)
{
	return !strcmp(name, "system.posix_acl_access") ||
	       !strcmp(name, "system.posix_acl_default");
}

/*
 * getxattr (@name) and listxattr (@name NULL), as the caller (reading
 * user.* needs read permission, listing trusted.* CAP_SYS_ADMIN), ACLs as
 * the server: the size when @size is 0, else the value or list.
 */
static void pzc_reply_xattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			    size_t size)
{
	struct pzc_fs *fs = pzc_fs(req);
	char path[PZC_PROCFD_LEN];
	struct pzc_creds creds;
	char *value = NULL;
	ssize_t res = -1;
	int ifd, err;

	if (!fs->cfg.xattr)
		return (void)fuse_reply_err(req, ENOTSUP);
	if (size) {
		value = malloc(size);
		if (!value)
			return (void)fuse_reply_err(req, ENOMEM);
	}
	ifd = pzc_ifd(req, ino);
	if (ifd < 0) {
		free(value);
		return (void)fuse_reply_err(req, -ifd);
	}
	pzc_procfd(path, ifd);
	creds.switched = false;
	err = name && pzc_xattr_readable(name) ? 0 :
	      -pzc_creds_enter(req, &creds, PZC_CHECKING);
	if (!err) {
		res = name ? getxattr(path, name, value, size) :
		      listxattr(path, value, size);
		err = res == -1 ? errno : 0;
		pzc_creds_leave(req, &creds);
	}
	pzc_ifd_put(req, ino);
	if (err && name && pzc_no_acls(fs, name, err))
		err = ENODATA;
	if (err)
		fuse_reply_err(req, err);
	else if (!size)
		fuse_reply_xattr(req, res);
	else
		fuse_reply_buf(req, value, res);
	free(value);
}

static void pzc_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			 size_t size)
{
	pzc_reply_xattr(req, ino, name, size);
}

static void pzc_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	pzc_reply_xattr(req, ino, NULL, size);
}

/* setxattr (@value) and removexattr, as the caller. */
static void pzc_change_xattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			     const char *value, size_t size, int flags)
{
	char path[PZC_PROCFD_LEN];
	struct pzc_creds creds;
	int ifd, res, err;

	if (!pzc_fs(req)->cfg.xattr)
		return (void)fuse_reply_err(req, ENOTSUP);
	ifd = pzc_ifd(req, ino);
	if (ifd < 0)
		return (void)fuse_reply_err(req, -ifd);
	pzc_procfd(path, ifd);
	err = -pzc_creds_enter(req, &creds, PZC_CHECKING);
	if (!err) {
		res = value ? setxattr(path, name, value, size, flags) :
		      removexattr(path, name);
		err = res == -1 ? errno : 0;
		pzc_creds_leave(req, &creds);
	}
	pzc_ifd_put(req, ino);
	fuse_reply_err(req, err);
}

static void pzc_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			 const char *value, size_t size, int flags)
{
	/* an empty value still names a buffer */
	pzc_change_xattr(req, ino, name, value ? value : "", size, flags);
}

static void pzc_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	pzc_change_xattr(req, ino, name, NULL, 0, 0);
}

static void pzc_destroy(void *userdata)
{
	(void)userdata;	/* inodes are freed by main after the loop */
}

void pzc_ops_init(struct fuse_lowlevel_ops *ops)
{
	*ops = (struct fuse_lowlevel_ops){
		.init		= pzc_init,
		.destroy	= pzc_destroy,
		.lookup		= pzc_lookup,
		.forget		= pzc_forget,
		.forget_multi	= pzc_forget_multi,
		.getattr	= pzc_getattr,
		.setattr	= pzc_setattr,
		.readlink	= pzc_readlink,
		.mknod		= pzc_mknod,
		.mkdir		= pzc_mkdir,
		.symlink	= pzc_symlink,
		.link		= pzc_link,
		.unlink		= pzc_unlink,
		.rmdir		= pzc_rmdir,
		.rename		= pzc_rename,
		.statfs		= pzc_statfs,
		.access		= pzc_access,
		.getxattr	= pzc_getxattr,
		.listxattr	= pzc_listxattr,
		.setxattr	= pzc_setxattr,
		.removexattr	= pzc_removexattr,
	};
	pzc_dir_ops(ops);
	pzc_file_ops(ops);
}
