// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * passthrough_zc open files: create and open (with an O_DIRECT twin and a
 * shared passthrough backing id), release, flush, fsync, read through
 * fuse-zc, write, fallocate, copy_file_range, lseek, flock (lock.c).
 */
#include "pzc.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/sysmacros.h>
#include <unistd.h>

/* An OPEN carries the file's f_flags, where execve(2) sets __FMODE_EXEC
 * (FMODE_EXEC, 1 << 5: no O_ flag uses that bit). */
#define PZC_FMODE_EXEC 0x20

static bool pzc_dio_aligned(const struct pzc_fs *fs, off_t off, size_t size)
{
	return !(((uint64_t)off | size) & (uint64_t)(fs->pagesize - 1));
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
 * Every fd is close-on-exec: nothing the server runs (fusermount3 at
 * unmount) may inherit a file of SOURCE.
 */
int pzc_openat(struct pzc_fs *fs, int dirfd, const char *name, int flags,
	       mode_t mode)
{
	int fd;

	flags |= O_CLOEXEC;
	if (fs->cfg.noatime) {
		fd = openat(dirfd, name, flags | O_NOATIME, mode);
		if (fd != -1 || errno != EPERM)
			return fd;
	}
	return openat(dirfd, name, flags, mode);
}

/*
 * Whether an open of @inode with @flags reads the source through an O_DIRECT
 * twin.  Without -o [no_]direct_source: where that drops a second cached
 * copy of every byte, i.e. the file lives on a block device (tmpfs, network
 * and other anonymous-device file systems keep their data in their page
 * cache: there O_DIRECT only loses read-ahead) and FUSE caches the file
 * (with cache=never or direct_io the source's page cache is the only cache
 * there is).  It also drops a copy: the disk DMAs into the lent pages (zero
 * copy) or fuse-zc's aligned buffer (copy).  Kernel passthrough reads its
 * own backing file.  An O_DIRECT open has its twin anyway.
 */
static bool pzc_direct_source(struct pzc_fs *fs, const struct pzc_inode *inode,
			      int flags)
{
	if ((flags & O_ACCMODE) == O_WRONLY)
		return false;
	if (fs->cfg.direct_source >= 0)
		return fs->cfg.direct_source;
	if (major(inode->dev) == 0)
		return false;
	if (fs->cfg.passthrough && atomic_load(&fs->passthrough_ok))
		return false;
	return !fs->cfg.direct_io && fs->cfg.cache != PZC_CACHE_NEVER;
}

/*
 * The kernel refused @err to make an open file a passthrough backing file.
 * EPERM (no CAP_SYS_ADMIN), EOPNOTSUPP, ENOTTY and EINVAL hold for every
 * file: the read mode serves all from now on.  Anything else holds for
 * this file (ELOOP: it lives on a stacked file system such as overlayfs or
 * FUSE; ENOMEM, ENOSPC: no id now), which the read mode serves; one line
 * for the first.
 */
static void pzc_passthrough_refused(struct pzc_fs *fs, int err)
{
	static atomic_bool noted;

	if (err == EPERM || err == EOPNOTSUPP || err == ENOTTY || err == EINVAL) {
		if (atomic_exchange(&fs->passthrough_ok, false))
			fuse_log(FUSE_LOG_ERR, "passthrough_zc: passthrough "
				 "refused (%s), the read mode serves files "
				 "from now on\n", strerror(err));
	} else if (!atomic_exchange(&noted, true)) {
		fuse_log(FUSE_LOG_ERR, "passthrough_zc: passthrough refused for "
			 "some files (%s): the read mode serves them\n",
			 strerror(err));
	}
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
	if (fh->direct_writes || pzc_direct_source(fs, inode, fi->flags)) {
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

			if (id > 0)
				inode->backing_id = id;
			else
				pzc_passthrough_refused(fs, -id);
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

/* Undo pzc_open_finish(): at RELEASE, or when the OPEN/CREATE reply was
 * not taken by the kernel (which then never sends RELEASE). */
static void pzc_file_close(struct pzc_fs *fs, struct pzc_inode *inode,
			   struct pzc_file *fh)
{
	pzc_backing_put(fs, inode, fh);
	pzc_file_free(fh);
	pzc_inode_close(fs, inode);
}

/*
 * Open @name (relative to @dirfd) for the user's open flags @uflags, plus
 * @extra, as the caller (@act): the source checks the caller's permission,
 * O_TRUNC included.  The writeback cache reads what it caches, so a write-only
 * open is made read-write: when the caller may write but not read, the
 * file is opened as the caller asked (the check), then read-write as the
 * server through it.  An fd or -errno.
 */
static int pzc_open_as_caller(fuse_req_t req, int dirfd, const char *name,
			      int uflags, int extra, mode_t mode, enum pzc_act act)
{
	struct pzc_fs *fs = pzc_fs(req);
	int flags = pzc_open_flags(fs, uflags) | extra;
	char path[PZC_PROCFD_LEN];
	struct pzc_creds creds;
	bool as_asked = false, for_exec = false;
	int fd, err;

	err = act == PZC_CREATING ? pzc_caller_begin(req, &creds) :
	      pzc_creds_enter(req, &creds, act);
	if (err)
		return err;
	fd = pzc_openat(fs, dirfd, name, flags, mode);
	if (fd == -1 && errno == EACCES && (flags & O_ACCMODE) != (uflags & O_ACCMODE)) {
		fd = pzc_openat(fs, dirfd, name, (flags & ~O_ACCMODE) | O_WRONLY, mode);
		as_asked = fd != -1;
	}
	/* execve(2) needs execute permission, not read, and open(2) cannot
	 * ask for that: the source decides with access(X_OK) as the caller,
	 * then the server opens it. */
	if (fd == -1 && errno == EACCES && act != PZC_CREATING &&
	    (uflags & PZC_FMODE_EXEC) && (uflags & O_ACCMODE) == O_RDONLY) {
		for_exec = faccessat(dirfd, name, X_OK, AT_EACCESS) == 0;
		if (!for_exec)
			errno = EACCES;		/* as open(2) said */
	}
	err = fd == -1 && !for_exec ? -errno : 0;
	if (act == PZC_CREATING)
		pzc_caller_end(req, &creds);
	else
		pzc_creds_leave(req, &creds);
	if (for_exec) {
		fd = pzc_openat(fs, dirfd, name, flags, mode);
		return fd == -1 ? -errno : fd;
	}
	if (err || !as_asked)
		return err ? err : fd;
	pzc_procfd(path, fd);
	err = pzc_openat(fs, AT_FDCWD, path,
			 flags & ~(O_CREAT | O_EXCL | O_TRUNC | O_NOFOLLOW), 0);
	if (err == -1)
		err = -errno;
	close(fd);
	return err;
}

static void pzc_create(fuse_req_t req, fuse_ino_t parent, const char *name,
		       mode_t mode, struct fuse_file_info *fi)
{
	struct pzc_fs *fs = pzc_fs(req);
	struct fuse_entry_param e;
	struct pzc_inode *inode;
	struct pzc_file *fh;
	int dfd, err;

	fh = calloc(1, sizeof(*fh));
	if (!fh)
		return (void)fuse_reply_err(req, ENOMEM);
	fh->dio_fd = -1;
	dfd = pzc_ifd(req, parent);
	if (dfd < 0) {
		free(fh);
		return (void)fuse_reply_err(req, -dfd);
	}
	/* The kernel sends CREATE for a name it believes absent; whatever was
	 * put there since (a symlink to a file outside SOURCE) is not
	 * followed: O_NOFOLLOW fails it with ELOOP. */
	fh->fd = pzc_open_as_caller(req, dfd, name, fi->flags, O_CREAT | O_NOFOLLOW,
				    mode, PZC_CREATING);
	err = fh->fd < 0 ? fh->fd : pzc_lookup_at(req, parent, dfd, name, &e);
	pzc_ifd_put(req, parent);
	if (fh->fd < 0) {
		free(fh);
		return (void)fuse_reply_err(req, -err);
	}
	if (err) {
		pzc_file_free(fh);
		return (void)fuse_reply_err(req, -err);
	}
	inode = pzc_inode(req, e.ino);
	pzc_open_finish(req, inode, fh, fi);
	if (fh->backing_id)
		err = fusezc_reply_create_passthrough(req, &e, fi, fh->backing_id);
	else
		err = fuse_reply_create(req, &e, fi);
	if (err) {
		/* not taken: no RELEASE and no FORGET will come for it */
		pzc_file_close(fs, inode, fh);
		pzc_inode_unref(fs, inode, 1);
	}
}

static void pzc_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct pzc_fs *fs = pzc_fs(req);
	struct pzc_inode *inode = pzc_inode(req, ino);
	char path[PZC_PROCFD_LEN];
	struct pzc_file *fh;
	int ifd, err;

	fh = calloc(1, sizeof(*fh));
	if (!fh)
		return (void)fuse_reply_err(req, ENOMEM);
	fh->dio_fd = -1;
	ifd = pzc_ifd(req, ino);
	if (ifd < 0) {
		free(fh);
		return (void)fuse_reply_err(req, -ifd);
	}
	pzc_procfd(path, ifd);
	fh->fd = pzc_open_as_caller(req, AT_FDCWD, path, fi->flags & ~O_CREAT, 0, 0,
				    PZC_CHECKING);
	pzc_ifd_put(req, ino);
	if (fh->fd < 0) {
		err = fh->fd;
		free(fh);
		return (void)fuse_reply_err(req, -err);
	}
	pzc_open_finish(req, inode, fh, fi);
	if (fh->backing_id)
		err = fusezc_reply_open_passthrough(req, fi, fh->backing_id);
	else
		err = fuse_reply_open(req, fi);
	if (err)	/* not taken: no RELEASE will come for it */
		pzc_file_close(fs, inode, fh);
}

static void pzc_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct pzc_fs *fs = pzc_fs(req);
	struct pzc_inode *inode = pzc_inode(req, ino);
	struct pzc_file *fh = pzc_file(fi);

	/*
	 * Closing fh->fd alone need not end its flock(): the passthrough
	 * backing id may have been opened from this very descriptor, and the
	 * kernel keeps that open file (and the lock on it) for the inode's
	 * other opens.
	 */
	if (fi->flock_release)
		flock(fh->fd, LOCK_UN);
	pzc_file_close(fs, inode, fh);
	fuse_reply_err(req, 0);
}

static void pzc_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	int dup, err = 0;

	(void)ino;
	/* What close() would report (e.g. NFS write-back errors), through a
	 * duplicate.  With no fd to spare (EMFILE) there is nothing to ask:
	 * the writes' own errors were replied. */
	dup = fcntl(pzc_file(fi)->fd, F_DUPFD_CLOEXEC, 0);
	if (dup >= 0 && close(dup) == -1)
		err = errno;
	fuse_reply_err(req, err);
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
	if (size == 0 && fusezc_zerocopy_writes_active(fs->zs)) {
		/*
		 * Sent without its data: fuse-zc writes it from the writer's
		 * pages.  Aligned, through the O_DIRECT twin, so that the
		 * device reads those pages by DMA.
		 */
		size_t len = fusezc_write_size(req, size);
		int fd = fh->fd;

		if (fh->dio_fd >= 0 && len && pzc_dio_aligned(fs, off, len))
			fd = fh->dio_fd;
		return (void)fusezc_reply_write(req, fd, off, NULL, 0);
	}
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

void pzc_file_ops(struct fuse_lowlevel_ops *ops)
{
	ops->create = pzc_create;
	ops->open = pzc_open;
	ops->release = pzc_release;
	ops->flush = pzc_flush;
	ops->fsync = pzc_fsync;
	ops->read = pzc_read;
	ops->write_buf = pzc_write_buf;
	ops->fallocate = pzc_fallocate;
	ops->copy_file_range = pzc_copy_file_range;
	ops->lseek = pzc_lseek;
	ops->flock = pzc_flock;
}
