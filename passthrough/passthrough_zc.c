// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * passthrough_zc: a passthrough filesystem on the libfuse 3 low-level API
 * whose FUSE_READ replies go through libfuse-zc (zero copy where the kernel
 * offers it, else splice, else copy), optionally with kernel passthrough.
 *
 *	passthrough_zc [options] SOURCE MOUNTPOINT
 *	passthrough_zc [options] -o source=SOURCE MOUNTPOINT
 *
 * Inodes: see inode.c (keyed by st_dev/st_ino, O_PATH fds, nlookup apart
 * from nopen) and the lock order in pzc.h.  Each handler ends in exactly
 * one fuse_reply_*() (or fusezc_reply_*()); errors are errno values.
 */
#include "pzc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

_Static_assert(sizeof(fuse_ino_t) >= sizeof(uintptr_t),
	       "inode pointers must fit in fuse_ino_t");

#define PZC_PROCFD_LEN 32

/* ------------------------------------------------------------------ */
/* Options                                                             */
/* ------------------------------------------------------------------ */

/* Command-line state that is not configuration. */
struct pzc_cmdline {
	struct pzc_config cfg;
	char *nonopt[2];
	int nnonopt;
	int too_many;
	int has_fsname;
};

#define PZC_OPT(t, m, v) { t, offsetof(struct pzc_cmdline, cfg.m), v }

static const struct fuse_opt pzc_opts[] = {
	PZC_OPT("source=%s", source, 0),
	PZC_OPT("zerocopy", mode, PZC_MODE_ZEROCOPY),
	PZC_OPT("zerocopy=required", mode, PZC_MODE_ZEROCOPY_REQUIRED),
	PZC_OPT("splice", mode, PZC_MODE_SPLICE),
	PZC_OPT("copy", mode, PZC_MODE_COPY),
	PZC_OPT("passthrough", passthrough, 1),
	PZC_OPT("no_passthrough", passthrough, 0),
	PZC_OPT("cache=never", cache, PZC_CACHE_NEVER),
	PZC_OPT("cache=auto", cache, PZC_CACHE_AUTO),
	PZC_OPT("cache=always", cache, PZC_CACHE_ALWAYS),
	PZC_OPT("timeout=%lf", timeout, 0),
	PZC_OPT("timeout=", timeout_set, 1),
	PZC_OPT("direct_io", direct_io, 1),
	PZC_OPT("writeback", writeback, 1),
	PZC_OPT("no_writeback", writeback, 0),
	PZC_OPT("flock", flock, 1),
	PZC_OPT("no_flock", flock, 0),
	PZC_OPT("xattr", xattr, 1),
	PZC_OPT("no_xattr", xattr, 0),
	PZC_OPT("posix_acl", posix_acl, 1),
	PZC_OPT("no_posix_acl", posix_acl, 0),
	PZC_OPT("direct_source", direct_source, 1),
	PZC_OPT("no_direct_source", direct_source, 0),
	PZC_OPT("noatime", noatime, 1),
	FUSE_OPT_KEY("noatime", FUSE_OPT_KEY_KEEP),	/* also a mount option */
	PZC_OPT("max_read=%u", max_read, 0),
	FUSE_OPT_KEY("max_read=", FUSE_OPT_KEY_KEEP),	/* also a mount option */
	PZC_OPT("max_readahead=%u", max_readahead, 0),
	PZC_OPT("max_write=%u", max_write, 0),
	PZC_OPT("threads=%u", threads, 0),
	PZC_OPT("stats", stats, 1),
	{ "fsname=", offsetof(struct pzc_cmdline, has_fsname), 1 },
	FUSE_OPT_KEY("fsname=", FUSE_OPT_KEY_KEEP),
	FUSE_OPT_END
};

static void pzc_help(const char *prog)
{
	printf("usage: %s [options] SOURCE MOUNTPOINT\n"
	       "       %s [options] -o source=SOURCE MOUNTPOINT\n\n", prog, prog);
	printf("passthrough_zc options:\n"
"    -o source=DIR          directory to mirror (instead of SOURCE)\n"
"    -o zerocopy            zero-copy reads, falling back to splice (default)\n"
"    -o zerocopy=required   refuse to run unless the kernel offers zero copy\n"
"    -o splice              splice reads into /dev/fuse\n"
"    -o copy                read into a buffer and copy\n"
"    -o passthrough         kernel FUSE passthrough (Linux 6.9+, CAP_SYS_ADMIN)\n"
"    -o cache=never|auto|always  caching policy (default: auto)\n"
"    -o timeout=SECONDS     entry/attribute timeout (default from cache=)\n"
"    -o direct_io           bypass the page cache for all files\n"
"    -o writeback           writeback cache (not with passthrough)\n"
"    -o no_flock            leave flock() to the kernel (local locks)\n"
"    -o no_xattr            no extended attributes\n"
"    -o posix_acl           POSIX ACLs (default ACLs inherit; implies default_permissions)\n"
"    -o direct_source       read page-aligned ranges of the source with O_DIRECT\n"
"    -o noatime             do not update access times (source opened O_NOATIME)\n"
"    -o max_read=N          largest READ request (bytes)\n"
"    -o max_readahead=N     read-ahead (bytes); above the kernel's default\n"
"                           it is set on the mount's bdi (root only)\n"
"    -o max_write=N         largest WRITE request and READ size (bytes)\n"
"    -o threads=N           worker threads (default: library default)\n"
"    -o stats               print read statistics to stderr at unmount\n\n");
	fuse_cmdline_help();
	fuse_lowlevel_help();
}

/* ------------------------------------------------------------------ */
/* Accessors                                                           */
/* ------------------------------------------------------------------ */

static struct pzc_fs *pzc_fs(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static struct pzc_inode *pzc_inode(fuse_req_t req, fuse_ino_t ino)
{
	if (ino == FUSE_ROOT_ID)
		return &pzc_fs(req)->root;
	return (struct pzc_inode *)(uintptr_t)ino;
}

static int pzc_fd(fuse_req_t req, fuse_ino_t ino)
{
	return pzc_inode(req, ino)->fd;
}

static fuse_ino_t pzc_ino(struct pzc_fs *fs, struct pzc_inode *inode)
{
	return inode == &fs->root ? FUSE_ROOT_ID : (fuse_ino_t)(uintptr_t)inode;
}

static struct pzc_file *pzc_file(struct fuse_file_info *fi)
{
	return (struct pzc_file *)(uintptr_t)fi->fh;
}

static struct pzc_dir *pzc_dir(struct fuse_file_info *fi)
{
	return (struct pzc_dir *)(uintptr_t)fi->fh;
}

static bool pzc_debug(fuse_req_t req)
{
	return pzc_fs(req)->cfg.debug;
}

static void pzc_procfd(char buf[PZC_PROCFD_LEN], int fd)
{
	snprintf(buf, PZC_PROCFD_LEN, "/proc/self/fd/%d", fd);
}

static bool pzc_dio_aligned(const struct pzc_fs *fs, off_t off, size_t size)
{
	return !(((uint64_t)off | size) & (uint64_t)(fs->pagesize - 1));
}

static void pzc_entry_init(struct pzc_fs *fs, struct fuse_entry_param *e)
{
	memset(e, 0, sizeof(*e));
	e->attr_timeout = fs->cfg.timeout;
	e->entry_timeout = fs->cfg.timeout;
}

/* Startup state shared by the init handler, the ready thread and main. */
static atomic_int pzc_notify_fd = -1;	/* daemon mode: pipe to the parent */
static pthread_mutex_t pzc_ready_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pzc_ready_cond = PTHREAD_COND_INITIALIZER;
static bool pzc_init_seen, pzc_stopping;

static void pzc_ready_event(bool *flag)
{
	pthread_mutex_lock(&pzc_ready_lock);
	*flag = true;
	pthread_cond_broadcast(&pzc_ready_cond);
	pthread_mutex_unlock(&pzc_ready_lock);
}

/*
 * Library notes ("fuse-zc: ...") go to stderr with -d or -o stats only;
 * otherwise its last error is kept for main's one-line message.
 */
static bool pzc_verbose;
static char pzc_lib_error[256];

static void pzc_log(enum fuse_log_level level, const char *fmt, va_list ap)
{
	if (!pzc_verbose && !strncmp(fmt, "fuse-zc: ", 9)) {
		if (level <= FUSE_LOG_ERR)
			vsnprintf(pzc_lib_error, sizeof(pzc_lib_error), fmt + 9, ap);
		return;
	}
	vfprintf(stderr, fmt, ap);
}

static void pzc_report_error(int err)
{
	size_t n = strlen(pzc_lib_error);

	if (n && pzc_lib_error[n - 1] == '\n')
		pzc_lib_error[n - 1] = '\0';
	fprintf(stderr, "passthrough_zc: %s\n", *pzc_lib_error ? pzc_lib_error :
		strerror(-err));
}

/* ------------------------------------------------------------------ */
/* Helpers shared by handlers                                          */
/* ------------------------------------------------------------------ */

/* Look @name up in @parent, taking one lookup reference.  0 or errno. */
static int pzc_do_lookup(fuse_req_t req, fuse_ino_t parent, const char *name,
			 struct fuse_entry_param *e)
{
	struct pzc_fs *fs = pzc_fs(req);
	struct pzc_inode *inode;
	bool created;
	int fd, err;

	pzc_entry_init(fs, e);
	fd = openat(pzc_fd(req, parent), name, O_PATH | O_NOFOLLOW);
	if (fd == -1)
		return errno;
	if (fstatat(fd, "", &e->attr, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) == -1) {
		err = errno;
		close(fd);
		return err;
	}
	inode = pzc_inode_get(fs, fd, &e->attr, &created);
	if (!inode) {
		close(fd);
		return ENOMEM;
	}
	if (!created)
		close(fd);
	pzc_stat_ino(fs, &e->attr);
	e->ino = pzc_ino(fs, inode);
	e->generation = inode->generation;
	if (pzc_debug(req))
		fuse_log(FUSE_LOG_DEBUG, "  %" PRIu64 "/%s -> %" PRIu64 "\n",
			 (uint64_t)parent, name, (uint64_t)e->ino);
	return 0;
}

static void pzc_file_free(struct pzc_file *fh)
{
	if (fh->dio_fd >= 0)
		close(fh->dio_fd);
	if (fh->fd >= 0)
		close(fh->fd);
	free(fh);
}

/* Open flags for the source file: writeback needs to read what it writes
 * and does O_APPEND itself. */
static int pzc_open_flags(struct pzc_fs *fs, int flags)
{
	if (fs->writeback_on) {
		if ((flags & O_ACCMODE) == O_WRONLY)
			flags = (flags & ~O_ACCMODE) | O_RDWR;
		flags &= ~O_APPEND;
	}
	return flags & ~(O_NOFOLLOW | O_DIRECT);
}

/*
 * The FUSE client never updates atime itself: the source file system does,
 * when this server reads.  So a noatime mount is honoured by opening the
 * source with O_NOATIME, which the kernel allows only to the file's owner
 * or CAP_FOWNER; anyone else gets atime updates, as on any other mount.
 */
static int pzc_openat(struct pzc_fs *fs, int dirfd, const char *name,
		      int flags, mode_t mode)
{
	int fd;

	if (fs->cfg.noatime) {
		fd = openat(dirfd, name, flags | O_NOATIME, mode);
		if (fd != -1 || errno != EPERM)
			return fd;
	}
	return openat(dirfd, name, flags, mode);
}

/*
 * Finish an open whose @fh->fd is open: the O_DIRECT twin, the passthrough
 * backing id (shared by all opens of the inode), the caching flags, nopen.
 */
static void pzc_open_finish(fuse_req_t req, struct pzc_inode *inode,
			   struct pzc_file *fh, struct fuse_file_info *fi)
{
	struct pzc_fs *fs = pzc_fs(req);
	char path[PZC_PROCFD_LEN];

	fh->direct_writes = fi->flags & O_DIRECT;
	if (fh->direct_writes ||
	    (fs->cfg.direct_source && (fi->flags & O_ACCMODE) != O_WRONLY)) {
		pzc_procfd(path, fh->fd);
		fh->dio_fd = pzc_openat(fs, AT_FDCWD, path,
					(pzc_open_flags(fs, fi->flags) &
					 ~(O_CREAT | O_EXCL | O_TRUNC)) | O_DIRECT, 0);
		if (fh->dio_fd == -1 && pzc_debug(req))
			fuse_log(FUSE_LOG_DEBUG, "  O_DIRECT not honoured by the "
				 "source: %s\n", strerror(errno));
	}

	if (fs->cfg.passthrough && atomic_load(&fs->passthrough_ok) &&
	    fusezc_passthrough_active(fs->zs)) {
		pthread_mutex_lock(&inode->lock);
		if (!inode->backing_id) {
			int id = fusezc_backing_open(fs->zs, fh->fd);

			if (id > 0) {
				inode->backing_id = id;
			} else if (atomic_exchange(&fs->passthrough_ok, false)) {
				fuse_log(FUSE_LOG_ERR, "passthrough_zc: passthrough "
					 "refused (%s), the read mode serves files "
					 "from now on\n", strerror(-id));
			}
		}
		if (inode->backing_id) {
			inode->backing_refs++;
			fh->backing_id = inode->backing_id;
		}
		pthread_mutex_unlock(&inode->lock);
	}

	fi->fh = (uintptr_t)fh;
	if (!fh->backing_id) {
		if (fs->cfg.direct_io || fs->cfg.cache == PZC_CACHE_NEVER)
			fi->direct_io = 1;
		else if (fs->cfg.cache == PZC_CACHE_ALWAYS)
			fi->keep_cache = 1;
	}
	/* Read-only, uncached files have nothing to flush. */
	fi->noflush = fs->cfg.cache == PZC_CACHE_NEVER &&
		      (fi->flags & O_ACCMODE) == O_RDONLY;
	pzc_inode_open(fs, inode);
}

static void pzc_backing_put(struct pzc_fs *fs, struct pzc_inode *inode,
			    struct pzc_file *fh)
{
	if (!fh->backing_id)
		return;
	pthread_mutex_lock(&inode->lock);
	if (!--inode->backing_refs) {
		fusezc_backing_close(fs->zs, inode->backing_id);
		inode->backing_id = 0;
	}
	pthread_mutex_unlock(&inode->lock);
}

/* ------------------------------------------------------------------ */
/* Handlers                                                            */
/* ------------------------------------------------------------------ */

static void pzc_init(void *userdata, struct fuse_conn_info *conn)
{
	struct pzc_fs *fs = userdata;

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
	if (fs->cfg.posix_acl) {
		const unsigned int acl = FUSE_CAP_POSIX_ACL | FUSE_CAP_DONT_MASK;

		if ((conn->capable & acl) == acl) {
			conn->want |= acl;
			fs->acl_on = true;
		} else {
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
	if (fs->cfg.max_readahead && fs->cfg.max_readahead < conn->max_readahead)
		conn->max_readahead = fs->cfg.max_readahead;
	else if (fs->cfg.max_readahead > conn->max_readahead)
		fs->raise_readahead_kb = fs->cfg.max_readahead / 1024;
	conn->max_read = fs->cfg.max_read;	/* must match the mount option */

	if (fs->cfg.debug)
		fuse_log(FUSE_LOG_DEBUG, "pzc_init: max_write=%u max_readahead=%u "
			 "max_read=%u writeback=%d\n", conn->max_write,
			 conn->max_readahead, conn->max_read, fs->writeback_on);
	pzc_ready_event(&pzc_init_seen);
}

static void pzc_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct pzc_fs *fs = pzc_fs(req);
	struct fuse_entry_param e;
	int err;

	err = pzc_do_lookup(req, parent, name, &e);
	if (err == ENOENT && fs->cfg.timeout > 0) {
		/* negative entry, cached for the entry timeout */
		pzc_entry_init(fs, &e);
		return (void)fuse_reply_entry(req, &e);
	}
	if (err)
		return (void)fuse_reply_err(req, err);
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
	struct stat st;

	(void)fi;
	if (fstatat(pzc_fd(req, ino), "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) == -1)
		return (void)fuse_reply_err(req, errno);
	pzc_stat_ino(pzc_fs(req), &st);
	fuse_reply_attr(req, &st, pzc_fs(req)->cfg.timeout);
}

static int pzc_utimens(int ifd, struct fuse_file_info *fi,
		       const struct timespec tv[2])
{
	char path[PZC_PROCFD_LEN];

	if (fi)
		return futimens(pzc_file(fi)->fd, tv);
	if (utimensat(ifd, "", tv, AT_EMPTY_PATH) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOENT)
		return -1;
	pzc_procfd(path, ifd);
	return utimensat(AT_FDCWD, path, tv, 0);
}

static void pzc_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
			int valid, struct fuse_file_info *fi)
{
	int ifd = pzc_fd(req, ino);
	char path[PZC_PROCFD_LEN];
	struct stat st;
	int res = 0;

	pzc_procfd(path, ifd);
	if (valid & FUSE_SET_ATTR_MODE) {
		if (fi)
			res = fchmod(pzc_file(fi)->fd, attr->st_mode);
		else
			res = chmod(path, attr->st_mode);
		if (res == -1)
			goto out_err;
	}
	if (valid & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
		uid_t uid = (valid & FUSE_SET_ATTR_UID) ? attr->st_uid : (uid_t)-1;
		gid_t gid = (valid & FUSE_SET_ATTR_GID) ? attr->st_gid : (gid_t)-1;

		if (fchownat(ifd, "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) == -1)
			goto out_err;
	}
	if (valid & FUSE_SET_ATTR_SIZE) {
		if (fi)
			res = ftruncate(pzc_file(fi)->fd, attr->st_size);
		else
			res = truncate(path, attr->st_size);
		if (res == -1)
			goto out_err;
	}
	if (valid & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME)) {
		struct timespec tv[2] = {
			{ .tv_nsec = UTIME_OMIT }, { .tv_nsec = UTIME_OMIT },
		};

		if (valid & FUSE_SET_ATTR_ATIME_NOW)
			tv[0].tv_nsec = UTIME_NOW;
		else if (valid & FUSE_SET_ATTR_ATIME)
			tv[0] = attr->st_atim;
		if (valid & FUSE_SET_ATTR_MTIME_NOW)
			tv[1].tv_nsec = UTIME_NOW;
		else if (valid & FUSE_SET_ATTR_MTIME)
			tv[1] = attr->st_mtim;
		if (pzc_utimens(ifd, fi, tv) == -1)
			goto out_err;
	}
	if (fstatat(ifd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) == -1)
		goto out_err;
	pzc_stat_ino(pzc_fs(req), &st);
	return (void)fuse_reply_attr(req, &st, pzc_fs(req)->cfg.timeout);

out_err:
	fuse_reply_err(req, errno);
}

static void pzc_readlink(fuse_req_t req, fuse_ino_t ino)
{
	char buf[PATH_MAX + 1];
	ssize_t res;

	res = readlinkat(pzc_fd(req, ino), "", buf, sizeof(buf));
	if (res == -1)
		return (void)fuse_reply_err(req, errno);
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
static int pzc_caller_begin(fuse_req_t req, struct pzc_creds *creds)
{
	int err = pzc_umask_begin(req);

	if (err)
		return err;
	err = pzc_creds_enter(req, creds);
	if (err)
		pzc_umask_end(req);
	return err;
}

static void pzc_caller_end(fuse_req_t req, struct pzc_creds *creds)
{
	pzc_creds_leave(req, creds);
	pzc_umask_end(req);
}

/* mkdir, mknod and symlink: create as the caller, look up as the server.
 * None of them follows a symlink in the last component. */
static void pzc_make_node(fuse_req_t req, fuse_ino_t parent, const char *name,
			  mode_t mode, dev_t rdev, const char *link)
{
	int dfd = pzc_fd(req, parent);
	struct fuse_entry_param e;
	struct pzc_creds creds;
	int res, err;

	err = pzc_caller_begin(req, &creds);
	if (err)
		return (void)fuse_reply_err(req, -err);
	if (link)
		res = symlinkat(link, dfd, name);
	else if (S_ISDIR(mode))
		res = mkdirat(dfd, name, mode);
	else
		res = mknodat(dfd, name, mode, rdev);
	err = errno;
	pzc_caller_end(req, &creds);
	if (res == -1)
		return (void)fuse_reply_err(req, err);
	err = pzc_do_lookup(req, parent, name, &e);
	if (err)
		return (void)fuse_reply_err(req, err);
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

static void pzc_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t parent,
		     const char *name)
{
	struct pzc_fs *fs = pzc_fs(req);
	struct pzc_inode *inode = pzc_inode(req, ino);
	char path[PZC_PROCFD_LEN];
	struct fuse_entry_param e;
	struct pzc_creds creds;
	int res, err;

	pzc_entry_init(fs, &e);
	err = pzc_creds_enter(req, &creds);
	if (err)
		return (void)fuse_reply_err(req, -err);
	/* AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH, which a caller usually
	 * lacks; the /proc/self/fd link names the same inode (the source's
	 * protected_hardlinks rules then apply to the caller). */
	res = linkat(inode->fd, "", pzc_fd(req, parent), name, AT_EMPTY_PATH);
	if (res == -1 && (errno == ENOENT || errno == EINVAL || errno == EPERM)) {
		pzc_procfd(path, inode->fd);
		res = linkat(AT_FDCWD, path, pzc_fd(req, parent), name,
			     AT_SYMLINK_FOLLOW);
	}
	err = errno;
	pzc_creds_leave(req, &creds);
	if (res == -1)
		return (void)fuse_reply_err(req, err);
	if (fstatat(inode->fd, "", &e.attr, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) == -1)
		return (void)fuse_reply_err(req, errno);
	pzc_stat_ino(fs, &e.attr);
	pzc_inode_ref(fs, inode);
	e.ino = pzc_ino(fs, inode);
	e.generation = inode->generation;
	fuse_reply_entry(req, &e);
}

static void pzc_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	int res = unlinkat(pzc_fd(req, parent), name, 0);

	fuse_reply_err(req, res == -1 ? errno : 0);
}

static void pzc_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	int res = unlinkat(pzc_fd(req, parent), name, AT_REMOVEDIR);

	fuse_reply_err(req, res == -1 ? errno : 0);
}

static void pzc_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
		       fuse_ino_t newparent, const char *newname, unsigned int flags)
{
	int res;

	if (flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE | RENAME_WHITEOUT))
		return (void)fuse_reply_err(req, EINVAL);
	res = renameat2(pzc_fd(req, parent), name, pzc_fd(req, newparent),
			newname, flags);
	fuse_reply_err(req, res == -1 ? errno : 0);
}

static void pzc_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct statvfs sv;

	if (fstatvfs(pzc_fd(req, ino), &sv) == -1)
		return (void)fuse_reply_err(req, errno);
	fuse_reply_statfs(req, &sv);
}

static void pzc_access(fuse_req_t req, fuse_ino_t ino, int mask)
{
	char path[PZC_PROCFD_LEN];
	int res;

	pzc_procfd(path, pzc_fd(req, ino));
	res = faccessat(AT_FDCWD, path, mask, 0);
	fuse_reply_err(req, res == -1 ? errno : 0);
}

/* --- directories --- */

static void pzc_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct pzc_fs *fs = pzc_fs(req);
	struct pzc_dir *d;
	int fd, err;

	d = calloc(1, sizeof(*d));
	if (!d)
		return (void)fuse_reply_err(req, ENOMEM);
	fd = pzc_openat(fs, pzc_fd(req, ino), ".", O_RDONLY | O_DIRECTORY, 0);
	if (fd == -1)
		goto out_errno;
	d->dp = fdopendir(fd);
	if (!d->dp) {
		err = errno;
		close(fd);
		free(d);
		return (void)fuse_reply_err(req, err);
	}
	fi->fh = (uintptr_t)d;
	if (fs->cfg.cache == PZC_CACHE_ALWAYS)
		fi->cache_readdir = 1;
	return (void)fuse_reply_open(req, fi);

out_errno:
	err = errno;
	free(d);
	fuse_reply_err(req, err);
}

static bool pzc_is_dot(const char *name)
{
	return name[0] == '.' && (!name[1] || (name[1] == '.' && !name[2]));
}

static void pzc_do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size,
			   off_t offset, struct fuse_file_info *fi, bool plus)
{
	struct pzc_fs *fs = pzc_fs(req);
	struct pzc_dir *d = pzc_dir(fi);
	dev_t dir_dev = pzc_inode(req, ino)->dev;
	size_t rem = size;
	char *buf, *p;
	int err = 0;

	buf = malloc(size);
	if (!buf)
		return (void)fuse_reply_err(req, ENOMEM);
	p = buf;
	if (offset != d->offset) {
		seekdir(d->dp, offset);
		d->entry = NULL;
		d->offset = offset;
	}
	for (;;) {
		struct dirent *ent = d->entry;
		fuse_ino_t entry_ino = 0;
		size_t entsize;

		if (!ent) {
			errno = 0;
			ent = readdir(d->dp);
			if (!ent) {
				err = errno;
				break;
			}
			d->entry = ent;
		}
		if (plus) {
			struct fuse_entry_param e;

			if (pzc_is_dot(ent->d_name)) {
				pzc_entry_init(fs, &e);
				e.attr.st_ino = ent->d_ino;
				e.attr.st_mode = DTTOIF(ent->d_type);
			} else {
				err = pzc_do_lookup(req, ino, ent->d_name, &e);
				if (err == ENOENT) {
					/* removed since readdir() saw it */
					err = 0;
					d->entry = NULL;
					d->offset = ent->d_off;
					continue;
				}
				if (err)
					break;
				entry_ino = e.ino;
			}
			entsize = fuse_add_direntry_plus(req, p, rem, ent->d_name,
							 &e, ent->d_off);
		} else {
			struct stat st = {
				.st_ino = pzc_ino_number(fs, dir_dev, ent->d_ino),
				.st_mode = DTTOIF(ent->d_type),
			};

			entsize = fuse_add_direntry(req, p, rem, ent->d_name,
						    &st, ent->d_off);
		}
		if (entsize > rem) {
			if (entry_ino)
				pzc_inode_unref(fs, pzc_inode(req, entry_ino), 1);
			break;
		}
		p += entsize;
		rem -= entsize;
		d->entry = NULL;
		d->offset = ent->d_off;
	}
	/* An error after entries were added would lose their lookup counts:
	 * return what we have and let the next call report it. */
	if (err && rem == size)
		fuse_reply_err(req, err);
	else
		fuse_reply_buf(req, buf, size - rem);
	free(buf);
}

static void pzc_readdir(fuse_req_t req, fuse_ino_t ino, size_t size,
			off_t offset, struct fuse_file_info *fi)
{
	pzc_do_readdir(req, ino, size, offset, fi, false);
}

static void pzc_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size,
			    off_t offset, struct fuse_file_info *fi)
{
	pzc_do_readdir(req, ino, size, offset, fi, true);
}

static void pzc_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct pzc_dir *d = pzc_dir(fi);

	(void)ino;
	closedir(d->dp);
	free(d);
	fuse_reply_err(req, 0);
}

static void pzc_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync,
			 struct fuse_file_info *fi)
{
	int fd = dirfd((DIR *)pzc_dir(fi)->dp);
	int res;

	(void)ino;
	res = datasync ? fdatasync(fd) : fsync(fd);
	fuse_reply_err(req, res == -1 ? errno : 0);
}

/* --- files --- */

static void pzc_create(fuse_req_t req, fuse_ino_t parent, const char *name,
		       mode_t mode, struct fuse_file_info *fi)
{
	struct pzc_fs *fs = pzc_fs(req);
	int dfd = pzc_fd(req, parent);
	struct fuse_entry_param e;
	struct pzc_creds creds;
	struct pzc_file *fh;
	int err;

	fh = calloc(1, sizeof(*fh));
	if (!fh)
		return (void)fuse_reply_err(req, ENOMEM);
	fh->dio_fd = -1;
	err = pzc_caller_begin(req, &creds);
	if (err) {
		free(fh);
		return (void)fuse_reply_err(req, -err);
	}
	/* The kernel sends CREATE for a name it believes absent; whatever was
	 * put there since (a symlink to a file outside SOURCE) is not
	 * followed: O_NOFOLLOW fails it with ELOOP. */
	fh->fd = pzc_openat(fs, dfd, name, pzc_open_flags(fs, fi->flags) |
			    O_CREAT | O_NOFOLLOW, mode);
	err = errno;
	pzc_caller_end(req, &creds);
	if (fh->fd == -1) {
		free(fh);
		return (void)fuse_reply_err(req, err);
	}
	err = pzc_do_lookup(req, parent, name, &e);
	if (err) {
		pzc_file_free(fh);
		return (void)fuse_reply_err(req, err);
	}
	pzc_open_finish(req, pzc_inode(req, e.ino), fh, fi);
	if (fh->backing_id)
		return (void)fusezc_reply_create_passthrough(req, &e, fi,
							     fh->backing_id);
	fuse_reply_create(req, &e, fi);
}

static void pzc_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct pzc_fs *fs = pzc_fs(req);
	struct pzc_inode *inode = pzc_inode(req, ino);
	char path[PZC_PROCFD_LEN];
	struct pzc_file *fh;
	int err;

	fh = calloc(1, sizeof(*fh));
	if (!fh)
		return (void)fuse_reply_err(req, ENOMEM);
	fh->dio_fd = -1;
	pzc_procfd(path, inode->fd);
	fh->fd = pzc_openat(fs, AT_FDCWD, path,
			    pzc_open_flags(fs, fi->flags) & ~O_CREAT, 0);
	if (fh->fd == -1) {
		err = errno;
		free(fh);
		return (void)fuse_reply_err(req, err);
	}
	pzc_open_finish(req, inode, fh, fi);
	if (fh->backing_id)
		return (void)fusezc_reply_open_passthrough(req, fi, fh->backing_id);
	fuse_reply_open(req, fi);
}

static void pzc_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct pzc_fs *fs = pzc_fs(req);
	struct pzc_inode *inode = pzc_inode(req, ino);
	struct pzc_file *fh = pzc_file(fi);

	pzc_backing_put(fs, inode, fh);
	pzc_file_free(fh);
	pzc_inode_close(fs, inode);
	fuse_reply_err(req, 0);
}

static void pzc_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	int res;

	(void)ino;
	/* what close() would report (e.g. NFS write-back errors) */
	res = close(dup(pzc_file(fi)->fd));
	fuse_reply_err(req, res == -1 ? errno : 0);
}

static void pzc_fsync(fuse_req_t req, fuse_ino_t ino, int datasync,
		      struct fuse_file_info *fi)
{
	int fd = pzc_file(fi)->fd;
	int res;

	(void)ino;
	res = datasync ? fdatasync(fd) : fsync(fd);
	fuse_reply_err(req, res == -1 ? errno : 0);
}

static void pzc_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	struct pzc_fs *fs = pzc_fs(req);
	struct pzc_file *fh = pzc_file(fi);
	int fd = fh->fd;

	(void)ino;
	/* fuse-zc reads into page-aligned memory in every mode */
	if (fh->dio_fd >= 0 && pzc_dio_aligned(fs, off, size))
		fd = fh->dio_fd;
	fusezc_reply_read(req, fd, off, size);
}

/* An aligned write to an O_DIRECT file: through an aligned bounce buffer
 * (the request data sits at an arbitrary offset in libfuse's buffer). */
static ssize_t pzc_write_direct(struct pzc_fs *fs, struct pzc_file *fh,
				struct fuse_bufvec *in_buf, size_t size, off_t off)
{
	struct fuse_bufvec mb = FUSE_BUFVEC_INIT(size);
	ssize_t res;
	void *mem;

	if (posix_memalign(&mem, fs->pagesize, size))
		return -ENOMEM;
	mb.buf[0].mem = mem;
	res = fuse_buf_copy(&mb, in_buf, 0);
	if (res >= 0) {
		size_t len = res;

		res = pwrite(fh->dio_fd, mem, len, off);
		if (res == -1 && errno == EINVAL)
			res = pwrite(fh->fd, mem, len, off);
		if (res == -1)
			res = -errno;
	}
	free(mem);
	return res;
}

static void pzc_write_buf(fuse_req_t req, fuse_ino_t ino, struct fuse_bufvec *in_buf,
			  off_t off, struct fuse_file_info *fi)
{
	struct pzc_fs *fs = pzc_fs(req);
	struct pzc_file *fh = pzc_file(fi);
	size_t size = fuse_buf_size(in_buf);
	struct fuse_bufvec out = FUSE_BUFVEC_INIT(size);
	ssize_t res;

	(void)ino;
	if (fh->direct_writes && fh->dio_fd >= 0 && pzc_dio_aligned(fs, off, size)) {
		res = pzc_write_direct(fs, fh, in_buf, size, off);
	} else {
		out.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
		out.buf[0].fd = fh->fd;
		out.buf[0].pos = off;
		res = fuse_buf_copy(&out, in_buf, 0);
	}
	if (res < 0)
		return (void)fuse_reply_err(req, -res);
	fuse_reply_write(req, res);
}

static void pzc_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset,
			  off_t length, struct fuse_file_info *fi)
{
	int res;

	(void)ino;
	res = fallocate(pzc_file(fi)->fd, mode, offset, length);
	fuse_reply_err(req, res == -1 ? errno : 0);
}

static void pzc_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in,
				struct fuse_file_info *fi_in, fuse_ino_t ino_out,
				off_t off_out, struct fuse_file_info *fi_out,
				size_t len, int flags)
{
	ssize_t res;

	(void)ino_in;
	(void)ino_out;
	res = copy_file_range(pzc_file(fi_in)->fd, &off_in, pzc_file(fi_out)->fd,
			      &off_out, len, flags);
	if (res == -1)
		return (void)fuse_reply_err(req, errno);
	fuse_reply_write(req, res);
}

static void pzc_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
		      struct fuse_file_info *fi)
{
	off_t res;

	(void)ino;
	res = lseek(pzc_file(fi)->fd, off, whence);
	if (res == -1)
		return (void)fuse_reply_err(req, errno);
	fuse_reply_lseek(req, res);
}

/* flock(2): waits that block are served off the worker pool (lock.c). */
static void pzc_flock(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
		      int op)
{
	(void)ino;
	pzc_lock_flock(req, pzc_file(fi)->fd, op);
}

/* --- extended attributes, through /proc/self/fd as O_PATH cannot --- */

static void pzc_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			 size_t size)
{
	char path[PZC_PROCFD_LEN];
	char *value;
	ssize_t res;
	int err;

	if (!pzc_fs(req)->cfg.xattr)
		return (void)fuse_reply_err(req, ENOTSUP);
	pzc_procfd(path, pzc_fd(req, ino));
	if (!size) {
		res = getxattr(path, name, NULL, 0);
		if (res == -1)
			return (void)fuse_reply_err(req, errno);
		return (void)fuse_reply_xattr(req, res);
	}
	value = malloc(size);
	if (!value)
		return (void)fuse_reply_err(req, ENOMEM);
	res = getxattr(path, name, value, size);
	err = errno;
	if (res == -1)
		fuse_reply_err(req, err);
	else
		fuse_reply_buf(req, value, res);
	free(value);
}

static void pzc_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	char path[PZC_PROCFD_LEN];
	char *value;
	ssize_t res;
	int err;

	if (!pzc_fs(req)->cfg.xattr)
		return (void)fuse_reply_err(req, ENOTSUP);
	pzc_procfd(path, pzc_fd(req, ino));
	if (!size) {
		res = listxattr(path, NULL, 0);
		if (res == -1)
			return (void)fuse_reply_err(req, errno);
		return (void)fuse_reply_xattr(req, res);
	}
	value = malloc(size);
	if (!value)
		return (void)fuse_reply_err(req, ENOMEM);
	res = listxattr(path, value, size);
	err = errno;
	if (res == -1)
		fuse_reply_err(req, err);
	else
		fuse_reply_buf(req, value, res);
	free(value);
}

static void pzc_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			 const char *value, size_t size, int flags)
{
	char path[PZC_PROCFD_LEN];
	int res;

	if (!pzc_fs(req)->cfg.xattr)
		return (void)fuse_reply_err(req, ENOTSUP);
	pzc_procfd(path, pzc_fd(req, ino));
	res = setxattr(path, name, value, size, flags);
	fuse_reply_err(req, res == -1 ? errno : 0);
}

static void pzc_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	char path[PZC_PROCFD_LEN];
	int res;

	if (!pzc_fs(req)->cfg.xattr)
		return (void)fuse_reply_err(req, ENOTSUP);
	pzc_procfd(path, pzc_fd(req, ino));
	res = removexattr(path, name);
	fuse_reply_err(req, res == -1 ? errno : 0);
}

static void pzc_destroy(void *userdata)
{
	(void)userdata;	/* inodes are freed by main after the loop */
}

static const struct fuse_lowlevel_ops pzc_ops = {
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
	.opendir	= pzc_opendir,
	.readdir	= pzc_readdir,
	.readdirplus	= pzc_readdirplus,
	.releasedir	= pzc_releasedir,
	.fsyncdir	= pzc_fsyncdir,
	.create		= pzc_create,
	.open		= pzc_open,
	.release	= pzc_release,
	.flush		= pzc_flush,
	.fsync		= pzc_fsync,
	.read		= pzc_read,
	.write_buf	= pzc_write_buf,
	.fallocate	= pzc_fallocate,
	.copy_file_range = pzc_copy_file_range,
	.lseek		= pzc_lseek,
	.flock		= pzc_flock,
	.getxattr	= pzc_getxattr,
	.listxattr	= pzc_listxattr,
	.setxattr	= pzc_setxattr,
	.removexattr	= pzc_removexattr,
};

/* ------------------------------------------------------------------ */
/* Startup: arguments, validation, daemon, loop                        */
/* ------------------------------------------------------------------ */

static int pzc_opt_proc(void *data, const char *arg, int key,
			struct fuse_args *outargs)
{
	struct pzc_cmdline *cl = data;

	(void)outargs;
	if (key != FUSE_OPT_KEY_NONOPT)
		return 1;
	if (cl->nnonopt == 2) {
		cl->too_many = 1;
		return 0;
	}
	cl->nonopt[cl->nnonopt] = strdup(arg);
	if (!cl->nonopt[cl->nnonopt])
		return -1;
	cl->nnonopt++;
	return 0;
}

static const char *pzc_mode_name(enum pzc_mode mode)
{
	switch (mode) {
	case PZC_MODE_COPY:
		return "copy";
	case PZC_MODE_SPLICE:
		return "splice";
	case PZC_MODE_ZEROCOPY_REQUIRED:
		return "zerocopy=required";
	default:
		return "zerocopy";
	}
}

/* Whether real path @inner is @outer or lies under it. */
static bool pzc_path_within(const char *inner, const char *outer)
{
	size_t n = strlen(outer);

	if (strncmp(inner, outer, n))
		return false;
	return !inner[n] || inner[n] == '/' || (n == 1 && outer[0] == '/');
}

/*
 * A SOURCE that contains the MOUNTPOINT would have the server look itself
 * up (a worker waiting on its own mount: a deadlock, and loops for find);
 * a MOUNTPOINT that contains SOURCE hides SOURCE behind the mount.  0, or
 * one line and -1.  /dev/fd/N (a mount.fuse3 pre-mounted fd) is no path.
 */
static int pzc_check_nesting(const struct pzc_config *cfg)
{
	char src[PATH_MAX], mnt[PATH_MAX];

	if (!strncmp(cfg->mountpoint, "/dev/fd/", 8))
		return 0;
	if (!realpath(cfg->source, src) || !realpath(cfg->mountpoint, mnt))
		return 0;	/* checked and reported by the caller */
	if (pzc_path_within(mnt, src)) {
		fprintf(stderr, "passthrough_zc: source %s contains the mountpoint "
			"%s (the file system would serve itself)\n", src, mnt);
		return -1;
	}
	if (pzc_path_within(src, mnt)) {
		fprintf(stderr, "passthrough_zc: mountpoint %s contains the source "
			"%s (the mount would hide it)\n", mnt, src);
		return -1;
	}
	return 0;
}

/* Everything checked before mounting: nothing is mounted or touched when
 * this fails.  Prints one line and returns -1. */
static int pzc_validate(struct pzc_config *cfg, int *root_fd)
{
	struct statx stx;
	struct stat st;
	int fd;

	if (!cfg->source) {
		fprintf(stderr, "passthrough_zc: no source directory "
			"(usage: passthrough_zc [options] SOURCE MOUNTPOINT)\n");
		return -1;
	}
	fd = open(cfg->source, O_PATH | O_DIRECTORY);
	if (fd == -1) {
		fprintf(stderr, "passthrough_zc: source %s: %s\n", cfg->source,
			errno == ENOTDIR ? "not a directory" : strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) == -1 || !S_ISDIR(st.st_mode)) {
		fprintf(stderr, "passthrough_zc: source %s: not a directory\n",
			cfg->source);
		close(fd);
		return -1;
	}
	if (statx(AT_FDCWD, cfg->mountpoint, 0, STATX_TYPE | STATX_INO, &stx) == -1) {
		fprintf(stderr, "passthrough_zc: mountpoint %s: %s\n",
			cfg->mountpoint, strerror(errno));
		close(fd);
		return -1;
	}
	if (!S_ISDIR(stx.stx_mode)) {
		fprintf(stderr, "passthrough_zc: mountpoint %s: not a directory\n",
			cfg->mountpoint);
		close(fd);
		return -1;
	}
	if ((stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) &&
	    (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT)) {
		fprintf(stderr, "passthrough_zc: mountpoint %s is busy "
			"(already a mount point)\n", cfg->mountpoint);
		close(fd);
		return -1;
	}
	if (pzc_check_nesting(cfg) == -1) {
		close(fd);
		return -1;
	}
	if (access("/dev/fuse", R_OK | W_OK) == -1) {
		fprintf(stderr, "passthrough_zc: cannot use /dev/fuse: %s\n",
			strerror(errno));
		close(fd);
		return -1;
	}
	if (cfg->posix_acl && !cfg->xattr) {
		fprintf(stderr, "passthrough_zc: -o posix_acl needs extended "
			"attributes (drop -o no_xattr)\n");
		close(fd);
		return -1;
	}
	if (cfg->passthrough && cfg->writeback) {
		fprintf(stderr, "passthrough_zc: -o passthrough and -o writeback "
			"cannot be combined (the kernel refuses passthrough "
			"with a writeback cache)\n");
		close(fd);
		return -1;
	}
	if (cfg->timeout_set && cfg->timeout < 0) {
		fprintf(stderr, "passthrough_zc: negative timeout\n");
		close(fd);
		return -1;
	}
	*root_fd = fd;
	return 0;
}

/* -o fsname=SOURCE with libfuse's option escapes. */
static int pzc_add_fsname(struct fuse_args *args, const char *source)
{
	size_t len = strlen(source);
	char *opt = malloc(len * 2 + sizeof("-ofsname="));
	char *p;
	int res;

	if (!opt)
		return -1;
	p = stpcpy(opt, "-ofsname=");
	for (; *source; source++) {
		if (*source == ',' || *source == '\\')
			*p++ = '\\';
		*p++ = *source;
	}
	*p = '\0';
	res = fuse_opt_add_arg(args, opt);
	free(opt);
	return res;
}

/*
 * Daemon mode: the parent stays until the child reports that the file
 * system answers (INIT done) or failed, and exits with that status, so
 * that mount(8), mount.fuse3 and scripts see failures such as
 * -o zerocopy=required on a kernel without zero copy.
 */
static void pzc_notify(unsigned char status)
{
	int fd = atomic_exchange(&pzc_notify_fd, -1);

	if (fd < 0)
		return;
	(void)!write(fd, &status, 1);
	close(fd);
}

static int pzc_fork_daemon(void)
{
	unsigned char status = 1;
	int pfd[2];
	pid_t pid;

	if (pipe2(pfd, O_CLOEXEC) == -1) {
		fprintf(stderr, "passthrough_zc: pipe: %s\n", strerror(errno));
		return -1;
	}
	pid = fork();
	if (pid == -1) {
		fprintf(stderr, "passthrough_zc: fork: %s\n", strerror(errno));
		return -1;
	}
	if (pid) {
		close(pfd[1]);
		if (read(pfd[0], &status, 1) != 1)
			status = 1;	/* the child died before reporting */
		_exit(status);
	}
	close(pfd[0]);
	atomic_store(&pzc_notify_fd, pfd[1]);
	if (setsid() == -1)
		return -1;
	return 0;
}

static void pzc_detach_stdio(void)
{
	int nullfd = open("/dev/null", O_RDWR);

	if (nullfd == -1)
		return;
	(void)dup2(nullfd, STDIN_FILENO);
	(void)dup2(nullfd, STDOUT_FILENO);
	(void)dup2(nullfd, STDERR_FILENO);
	if (nullfd > STDERR_FILENO)
		close(nullfd);
}

static void pzc_log_mode(struct pzc_fs *fs)
{
	const char *reason = fusezc_zerocopy_status(fs->zs);
	bool zc = fusezc_zerocopy_active(fs->zs);
	const char *fb = fs->cfg.mode == PZC_MODE_COPY ? "copy" : "splice";

	if (fs->cfg.mode == PZC_MODE_COPY || fs->cfg.mode == PZC_MODE_SPLICE)
		fprintf(stderr, "passthrough_zc: read mode %s\n",
			pzc_mode_name(fs->cfg.mode));
	else if (zc)
		fprintf(stderr, "passthrough_zc: read mode zerocopy (active)\n");
	else
		fprintf(stderr, "passthrough_zc: read mode zerocopy unavailable "
			"(%s), falling back to %s\n", reason && *reason ? reason :
			"not offered by the kernel", fb);
	if (fs->cfg.passthrough)
		fprintf(stderr, "passthrough_zc: passthrough %s\n",
			fusezc_passthrough_active(fs->zs) ? "active" :
			"unavailable, using the read mode");
}

/*
 * Daemon mode: report success to the waiting parent once INIT has been
 * answered.  The init handler wakes this thread; with zerocopy=required it
 * then waits for the library to accept zero copy in the INIT reply (else
 * the loop ends with -EOPNOTSUPP and main reports the failure).  No file
 * system access here: a STATFS in flight would make an early unmount fail
 * with EBUSY.
 */
static void *pzc_ready_thread(void *arg)
{
	struct pzc_fs *fs = arg;
	const struct timespec tick = { .tv_nsec = 1000000 };
	int waited;

	pthread_mutex_lock(&pzc_ready_lock);
	while (!pzc_init_seen && !pzc_stopping)
		pthread_cond_wait(&pzc_ready_cond, &pzc_ready_lock);
	pthread_mutex_unlock(&pzc_ready_lock);
	if (fs->cfg.mode == PZC_MODE_ZEROCOPY_REQUIRED) {
		for (waited = 0; !fusezc_zerocopy_active(fs->zs); waited++) {
			if (waited > 30000 || __atomic_load_n(&pzc_stopping, __ATOMIC_ACQUIRE))
				return NULL;
			nanosleep(&tick, NULL);
		}
	}
	pthread_mutex_lock(&pzc_ready_lock);
	if (!pzc_stopping) {
		if (!fs->cfg.debug)
			pzc_detach_stdio();
		pzc_notify(0);
	}
	pthread_mutex_unlock(&pzc_ready_lock);
	return NULL;
}

/* Undo the octal escapes (\040 ...) of a /proc/self/mountinfo path, in place. */
static void pzc_unescape(char *s)
{
	char *d = s;

	for (; *s; s++, d++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' &&
		    s[2] <= '7' && s[3] >= '0' && s[3] <= '7') {
			*d = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
			s += 3;
		} else {
			*d = *s;
		}
	}
	*d = '\0';
}

/* "major:minor" of the newest mount on @mnt, from mountinfo; -errno. */
static int pzc_mount_devno(const char *mnt, char *devno, size_t len)
{
	char line[4096], dev[64], path[PATH_MAX];
	int found = -ENOENT;
	FILE *f;

	f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%*s %*s %63s %*s %4095s", dev, path) != 2)
			continue;
		pzc_unescape(path);
		if (strcmp(path, mnt) == 0) {
			snprintf(devno, len, "%s", dev);
			found = 0;
		}
	}
	fclose(f);
	return found;
}

/*
 * -o max_readahead above what FUSE_INIT can grant (the kernel offers its
 * bdi default, 128 KiB, and keeps the minimum): raise the mount's bdi
 * read_ahead_kb once the kernel has processed the INIT reply, which would
 * lower it again.  Needs root; otherwise one line and the kernel's value.
 * Reads only /proc and /sys: nothing on the mount, which must stay free to
 * unmount at any time.
 */
static void *pzc_readahead_thread(void *arg)
{
	struct pzc_fs *fs = arg;
	const struct timespec tick = { .tv_nsec = 1000000 };
	char mnt[PATH_MAX], devno[64], path[128];
	int waited, err = 0;
	FILE *f;

	for (waited = 0; !fusezc_init_done(fs->zs); waited++) {
		if (waited > 60000 || __atomic_load_n(&pzc_stopping, __ATOMIC_ACQUIRE))
			return NULL;
		nanosleep(&tick, NULL);
	}
	if (!fs->raise_readahead_kb)
		return NULL;
	if (!realpath(fs->cfg.mountpoint, mnt))
		err = -errno;
	if (!err)
		err = pzc_mount_devno(mnt, devno, sizeof(devno));
	if (!err) {
		snprintf(path, sizeof(path), "/sys/class/bdi/%s/read_ahead_kb", devno);
		f = fopen(path, "we");
		if (!f)
			err = -errno;
		else if (fprintf(f, "%u\n", fs->raise_readahead_kb) < 0)
			err = -EIO;
		if (f && fclose(f) != 0 && !err)
			err = -errno;
	}
	if (err)
		fuse_log(FUSE_LOG_ERR, "passthrough_zc: cannot raise the read-ahead "
			 "to %u KiB (%s); the kernel's stays\n",
			 fs->raise_readahead_kb, strerror(-err));
	else if (fs->cfg.debug)
		fuse_log(FUSE_LOG_DEBUG, "passthrough_zc: read-ahead of bdi %s: %u KiB\n",
			 devno, fs->raise_readahead_kb);
	return NULL;
}

static void pzc_print_stats(struct pzc_fs *fs)
{
	struct fusezc_stats st;

	fusezc_get_stats(fs->zs, &st);
	fprintf(stderr, "passthrough_zc: stats: zc_bytes=%" PRIu64
		" zc_requests=%" PRIu64 " splice_bytes=%" PRIu64
		" splice_requests=%" PRIu64 " copy_bytes=%" PRIu64
		" copy_requests=%" PRIu64 " fallbacks=%" PRIu64
		" fallback_eopnotsupp=%" PRIu64 " fallback_eperm=%" PRIu64
		" fallback_enoent_einval=%" PRIu64 " fallback_other=%" PRIu64
		" zerocopy_active=%d passthrough_active=%d\n",
		st.zc_bytes, st.zc_requests, st.splice_bytes, st.splice_requests,
		st.copy_bytes, st.copy_requests, st.fallbacks,
		st.fallback_errno_counts[0], st.fallback_errno_counts[1],
		st.fallback_errno_counts[2], st.fallback_errno_counts[3],
		fusezc_zerocopy_active(fs->zs), fusezc_passthrough_active(fs->zs));
}

/*
 * Every inode the kernel knows holds an O_PATH fd, so the default soft limit
 * of 1024 would turn a big tree into EMFILE: take the hard limit.
 */
static void pzc_raise_fd_limit(void)
{
	struct rlimit lim;

	if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
		lim.rlim_cur = lim.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &lim) == -1)
			fprintf(stderr, "passthrough_zc: cannot raise the open file limit: %s\n",
				strerror(errno));
	}
}

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct fusezc_options zopts = { 0 };
	static struct pzc_cmdline cl;
	static struct pzc_fs fs;
	struct fuse_cmdline_opts opts = { 0 };
	struct fuse_session *se;
	pthread_t ready, ra;
	bool ra_started = false;
	int root_fd = -1;
	int ret = 1, res;

	umask(0);	/* the kernel applied the caller's umask already */
	cl.cfg.cache = PZC_CACHE_AUTO;
	cl.cfg.flock = 1;
	cl.cfg.xattr = 1;

	if (fuse_opt_parse(&args, &cl, pzc_opts, pzc_opt_proc) == -1)
		goto out_args;
	if (cl.too_many) {
		fprintf(stderr, "passthrough_zc: too many arguments "
			"(usage: passthrough_zc [options] SOURCE MOUNTPOINT)\n");
		goto out_args;
	}
	if (cl.nnonopt == 2) {
		if (cl.cfg.source) {
			fprintf(stderr, "passthrough_zc: source given twice "
				"(argument and -o source=)\n");
			goto out_args;
		}
		cl.cfg.source = cl.nonopt[0];
		cl.nonopt[0] = NULL;
	}
	if (cl.nnonopt && fuse_opt_add_arg(&args, cl.nonopt[cl.nnonopt - 1]) == -1)
		goto out_args;
	if (fuse_parse_cmdline(&args, &opts) != 0)
		goto out_args;
	if (opts.show_help) {
		pzc_help(argv[0]);
		ret = 0;
		goto out_args;
	}
	if (opts.show_version) {
		printf("passthrough_zc version %s\n", PZC_VERSION);
		printf("libfuse version %s\n", fuse_pkgversion());
		fflush(stdout);
		fuse_lowlevel_version();
		ret = 0;
		goto out_args;
	}
	if (!opts.mountpoint) {
		fprintf(stderr, "passthrough_zc: no mountpoint "
			"(usage: passthrough_zc [options] SOURCE MOUNTPOINT)\n");
		goto out_args;
	}

	fs.cfg = cl.cfg;
	fs.cfg.debug = opts.debug;
	fs.cfg.foreground = opts.foreground;
	fs.cfg.singlethread = opts.singlethread;
	fs.cfg.mountpoint = opts.mountpoint;
	fs.pagesize = sysconf(_SC_PAGESIZE);
	atomic_store(&fs.passthrough_ok, true);
	if (!fs.cfg.timeout_set)
		fs.cfg.timeout = fs.cfg.cache == PZC_CACHE_NEVER ? 0.0 :
				 fs.cfg.cache == PZC_CACHE_ALWAYS ? 86400.0 : 1.0;
	pzc_verbose = fs.cfg.debug || fs.cfg.stats;
	fuse_set_log_func(pzc_log);
	if (pzc_validate(&fs.cfg, &root_fd) == -1)
		goto out_args;
	pzc_raise_fd_limit();
	res = pzc_creds_init(&fs);
	if (res) {
		fprintf(stderr, "passthrough_zc: %s\n", strerror(-res));
		close(root_fd);
		goto out_args;
	}
	res = pzc_itable_init(&fs, root_fd);
	if (res) {
		fprintf(stderr, "passthrough_zc: %s\n", strerror(-res));
		close(root_fd);
		goto out_args;
	}

	/* The daemon acts for every user: let the kernel check permissions. */
	if (fuse_opt_add_arg(&args, "-odefault_permissions") == -1 ||
	    (!cl.has_fsname && pzc_add_fsname(&args, fs.cfg.source) == -1))
		goto out_itable;

	switch (fs.cfg.mode) {
	case PZC_MODE_COPY:
		zopts.read_mode = FUSEZC_READ_COPY;
		break;
	case PZC_MODE_SPLICE:
		zopts.read_mode = FUSEZC_READ_SPLICE;
		break;
	case PZC_MODE_ZEROCOPY_REQUIRED:
		zopts.zerocopy_required = true;
		/* fall through */
	default:
		zopts.read_mode = FUSEZC_READ_ZEROCOPY;
		break;
	}
	zopts.passthrough = fs.cfg.passthrough;
	zopts.threads = fs.cfg.singlethread ? 1 : fs.cfg.threads;

	se = fuse_session_new(&args, &pzc_ops, sizeof(pzc_ops), &fs);
	if (!se)
		goto out_itable;	/* libfuse said why (e.g. unknown option) */
	fs.se = se;
	if (!fs.cfg.foreground && pzc_fork_daemon() == -1)
		goto out_session;
	if (fuse_set_signal_handlers(se) != 0)
		goto out_session;
	if (fuse_session_mount(se, fs.cfg.mountpoint) != 0)
		goto out_signals;
	res = fusezc_session_new(se, &zopts, &fs.zs);
	if (res) {
		pzc_report_error(res);
		goto out_unmount;
	}
	res = pzc_lock_init(&fs);
	if (res) {
		pzc_report_error(res);
		goto out_zc;
	}
	if (!fs.cfg.foreground && chdir("/") == -1)
		goto out_zc;
	if (!fs.cfg.foreground &&
	    pthread_create(&ready, NULL, pzc_ready_thread, &fs) == 0)
		pthread_detach(ready);
	ra_started = fs.cfg.max_readahead &&
		     pthread_create(&ra, NULL, pzc_readahead_thread, &fs) == 0;

	res = fusezc_session_loop(fs.zs);
	pzc_lock_shutdown(&fs);
	pzc_ready_event(&pzc_stopping);
	if (ra_started)
		pthread_join(ra, NULL);	/* it polls fs.zs: done before that goes */
	if (res == -EOPNOTSUPP && zopts.zerocopy_required) {
		const char *why = fusezc_zerocopy_status(fs.zs);

		fprintf(stderr, "passthrough_zc: zero copy required but not "
			"available: %s\n", why && *why ? why :
			"the kernel does not offer it");
	} else if (res < 0) {
		pzc_report_error(res);
	} else {
		ret = 0;	/* unmounted, or a signal number: a clean stop */
	}
	if (fs.cfg.stats || fs.cfg.debug) {
		pzc_log_mode(&fs);
		pzc_print_stats(&fs);
	}

out_zc:
	fuse_session_unmount(se);
	fusezc_session_destroy(fs.zs);
	fs.zs = NULL;
	goto out_signals;
out_unmount:
	fuse_session_unmount(se);
out_signals:
	fuse_remove_signal_handlers(se);
out_session:
	fuse_session_destroy(se);
out_itable:
	pzc_itable_destroy(&fs);
	close(root_fd);
out_args:
	pzc_creds_destroy(&fs);
	pzc_notify(ret ? 1 : 0);
	free(cl.nonopt[0]);
	free(cl.nonopt[1]);
	free(cl.cfg.source);
	free(opts.mountpoint);
	fuse_opt_free_args(&args);
	return ret;
}
