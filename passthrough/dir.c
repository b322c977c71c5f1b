// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * passthrough_zc directories: opendir (as the caller), readdir and readdirplus (an entry
 * removed between readdir() and its lookup is left out, not an error),
 * releasedir, fsyncdir.
 */
#include "pzc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

static void pzc_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct pzc_fs *fs = pzc_fs(req);
	char path[PZC_PROCFD_LEN];
	struct pzc_creds creds;
	struct pzc_dir *d;
	int fd, err;

	d = calloc(1, sizeof(*d));
	if (!d)
		return (void)fuse_reply_err(req, ENOMEM);
	/* As the caller, who needs read permission (the source checks it);
	 * through /proc/self/fd, not ".", which would need search permission
	 * too. */
	fd = pzc_ifd(req, ino);
	if (fd < 0) {
		free(d);
		return (void)fuse_reply_err(req, -fd);
	}
	pzc_procfd(path, fd);
	err = pzc_creds_enter(req, &creds, PZC_CHECKING);
	if (!err) {
		fd = pzc_openat(fs, AT_FDCWD, path, O_RDONLY | O_DIRECTORY, 0);
		err = fd == -1 ? -errno : 0;
		pzc_creds_leave(req, &creds);
	}
	pzc_ifd_put(req, ino);
	if (err) {
		free(d);
		return (void)fuse_reply_err(req, -err);
	}
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
	/* A reply the kernel did not take (the opener is gone) brings no
	 * RELEASEDIR: the handle is ours to free. */
	if (fuse_reply_open(req, fi) != 0) {
		closedir(d->dp);
		free(d);
	}
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
				err = -errno;
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
				/* relative to the open directory: no inode
				 * fd needed */
				err = pzc_lookup_at(req, ino, dirfd(d->dp),
						    ent->d_name, &e);
				if (err == -ENOENT) {
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
		fuse_reply_err(req, -err);
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

void pzc_dir_ops(struct fuse_lowlevel_ops *ops)
{
	ops->opendir = pzc_opendir;
	ops->readdir = pzc_readdir;
	ops->readdirplus = pzc_readdirplus;
	ops->releasedir = pzc_releasedir;
	ops->fsyncdir = pzc_fsyncdir;
}
