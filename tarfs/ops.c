// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * tarfs_zc operations: a read-only tree from the index.  FUSE node ids are
 * index node numbers + 1 (the root, node 0, is FUSE_ROOT_ID); a hard link
 * answers with the node that holds its inode.  Nothing is ever forgotten:
 * the index lives as long as the mount, so FORGET has nothing to do.
 *
 * Reads: fusezc_reply_read() of the archive at the member's offset, the
 * length clipped to the member's end, so no lending ever reaches past it
 * (and the archive's end of file never stands for the member's).
 */
#include "tarfs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define TARFS_TIMEOUT 86400.0	/* nothing ever changes */

static struct tarfs_fs *tfs(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

/* The inode node of FUSE node id @ino, or TARFS_NONE. */
static uint32_t node_of(const struct tarfs_fs *fs, fuse_ino_t ino)
{
	if (ino == 0 || ino > fs->ix->nnodes)
		return TARFS_NONE;
	return fs->ix->nodes[ino - 1].ino;
}

static void fill_stat(const struct tarfs_fs *fs, uint32_t n, struct stat *st)
{
	const struct tarfs_node *in = &fs->ix->nodes[n];

	memset(st, 0, sizeof(*st));
	st->st_ino = (ino_t)n + 1;
	st->st_mode = in->mode;
	st->st_nlink = in->nlink;
	st->st_uid = in->uid;
	st->st_gid = in->gid;
	st->st_rdev = in->rdev;
	st->st_size = (off_t)in->size;
	st->st_blksize = 4096;
	st->st_blocks = (blkcnt_t)((in->size + 511) / 512);
	st->st_mtim.tv_sec = in->mtime;
	st->st_mtim.tv_nsec = in->mtime_nsec;
	st->st_atim = st->st_mtim;
	st->st_ctim = st->st_mtim;
}

static void tarfs_init(void *userdata, struct fuse_conn_info *conn)
{
	struct tarfs_fs *fs = userdata;

	unsigned int want = fs->cfg.max_readahead ? fs->cfg.max_readahead :
			    geteuid() == 0 ? TARFS_DEFAULT_READAHEAD : 0;

	fusezc_conn_init(NULL, conn);
	/* INIT can only lower the kernel's offer (its bdi default, 128 KiB):
	 * more is written to the bdi once INIT is done (tarfs_zc.c) */
	if (want && want < conn->max_readahead)
		conn->max_readahead = want;
	else if (want > conn->max_readahead)
		fs->raise_readahead_kb = want / 1024;
	/*
	 * Zero-message opens: nothing is kept per open (reads name the
	 * archive), so the first OPEN is answered ENOSYS and the kernel sends
	 * no OPEN or RELEASE again, keeping the page cache across opens
	 * (FOPEN_KEEP_CACHE, as tarfs_open() asks).  Half the round trips of
	 * a small member.  The mount is read-only: no write open gets here.
	 */
	fs->no_open = conn->capable & FUSE_CAP_NO_OPEN_SUPPORT;
	fs->no_opendir = conn->capable & FUSE_CAP_NO_OPENDIR_SUPPORT;
	/* the kernel's cache is always right: nothing changes under it */
	if (conn->capable & FUSE_CAP_AUTO_INVAL_DATA)
		conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
}

static void tarfs_lookup_op(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct tarfs_fs *fs = tfs(req);
	uint32_t d = node_of(fs, parent), n;
	struct fuse_entry_param e;

	if (d == TARFS_NONE)
		return (void)fuse_reply_err(req, ESTALE);
	if (!S_ISDIR(fs->ix->nodes[d].mode))
		return (void)fuse_reply_err(req, ENOTDIR);
	n = tarfs_lookup(fs->ix, d, name);
	if (n == TARFS_NONE)
		return (void)fuse_reply_err(req, ENOENT);
	n = fs->ix->nodes[n].ino;
	memset(&e, 0, sizeof(e));
	e.ino = (fuse_ino_t)n + 1;
	e.generation = 1;
	e.attr_timeout = TARFS_TIMEOUT;
	e.entry_timeout = TARFS_TIMEOUT;
	fill_stat(fs, n, &e.attr);
	fuse_reply_entry(req, &e);
}

static void tarfs_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct tarfs_fs *fs = tfs(req);
	uint32_t n = node_of(fs, ino);
	struct stat st;

	(void)fi;
	if (n == TARFS_NONE)
		return (void)fuse_reply_err(req, ESTALE);
	fill_stat(fs, n, &st);
	fuse_reply_attr(req, &st, TARFS_TIMEOUT);
}

static void tarfs_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct tarfs_fs *fs = tfs(req);
	uint32_t n = node_of(fs, ino);

	if (n == TARFS_NONE)
		return (void)fuse_reply_err(req, ESTALE);
	if (!S_ISLNK(fs->ix->nodes[n].mode))
		return (void)fuse_reply_err(req, EINVAL);
	fuse_reply_readlink(req, fs->ix->arena + fs->ix->nodes[n].target);
}

static void tarfs_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct tarfs_fs *fs = tfs(req);
	uint32_t n = node_of(fs, ino);

	if (n == TARFS_NONE)
		return (void)fuse_reply_err(req, ESTALE);
	if (!S_ISDIR(fs->ix->nodes[n].mode))
		return (void)fuse_reply_err(req, ENOTDIR);
	if (fs->no_opendir)	/* success, and no OPENDIR again (see init) */
		return (void)fuse_reply_err(req, ENOSYS);
	fi->keep_cache = 1;
	fi->cache_readdir = 1;
	fuse_reply_open(req, fi);
}

/* Offsets: 1 ".", 2 "..", 3 + i the i-th child. */
static void tarfs_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			  struct fuse_file_info *fi)
{
	struct tarfs_fs *fs = tfs(req);
	const struct tarfs_index *ix = fs->ix;
	uint32_t d = node_of(fs, ino);
	char *buf;
	size_t used = 0;

	(void)fi;
	if (d == TARFS_NONE)
		return (void)fuse_reply_err(req, ESTALE);
	buf = malloc(size);
	if (!buf)
		return (void)fuse_reply_err(req, ENOMEM);
	for (;; off++) {
		struct stat st = { 0 };
		const char *name;
		size_t ent;

		if (off == 0) {
			name = ".";
			st.st_ino = (ino_t)d + 1;
			st.st_mode = S_IFDIR;
		} else if (off == 1) {
			uint32_t p = d == 0 ? 0 : ix->nodes[d].parent;

			name = "..";
			st.st_ino = (ino_t)(p == TARFS_NONE ? 0 : p) + 1;
			st.st_mode = S_IFDIR;
		} else if ((uint64_t)off - 2 < ix->child_count[d]) {
			uint32_t c = ix->children[ix->child_start[d] + (uint32_t)(off - 2)];

			name = tarfs_name(ix, c);
			st.st_ino = (ino_t)ix->nodes[c].ino + 1;
			st.st_mode = ix->nodes[ix->nodes[c].ino].mode & S_IFMT;
		} else {
			break;
		}
		ent = fuse_add_direntry(req, buf + used, size - used, name, &st, off + 1);
		if (ent > size - used)
			break;
		used += ent;
	}
	fuse_reply_buf(req, buf, used);
	free(buf);
}

static void tarfs_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct tarfs_fs *fs = tfs(req);
	uint32_t n = node_of(fs, ino);

	if (n == TARFS_NONE)
		return (void)fuse_reply_err(req, ESTALE);
	if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC))
		return (void)fuse_reply_err(req, EROFS);
	if (S_ISDIR(fs->ix->nodes[n].mode))
		return (void)fuse_reply_err(req, EISDIR);
	if (fs->no_open)	/* success, and no OPEN again (see init) */
		return (void)fuse_reply_err(req, ENOSYS);
	fi->keep_cache = 1;	/* the archive does not change under the mount */
	fi->noflush = 1;
	fuse_reply_open(req, fi);
}

static void tarfs_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	struct tarfs_fs *fs = tfs(req);
	uint32_t n = node_of(fs, ino);
	const struct tarfs_node *in;

	(void)fi;
	if (n == TARFS_NONE)
		return (void)fuse_reply_err(req, ESTALE);
	in = &fs->ix->nodes[n];
	if (!S_ISREG(in->mode))
		return (void)fuse_reply_err(req, EINVAL);
	if (off < 0)
		return (void)fuse_reply_err(req, EINVAL);
	if ((uint64_t)off >= in->size || size == 0)
		return (void)fuse_reply_buf(req, NULL, 0);
	/* never past the member's end: the archive's bytes after it are
	 * another member's header or data */
	if (size > in->size - (uint64_t)off)
		size = (size_t)(in->size - (uint64_t)off);
	fusezc_reply_read(req, fs->archive_fd, (off_t)(in->off + (uint64_t)off), size);
}

static void tarfs_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct tarfs_fs *fs = tfs(req);
	struct statvfs sv;

	(void)ino;
	memset(&sv, 0, sizeof(sv));
	sv.f_bsize = 512;
	sv.f_frsize = 512;
	sv.f_blocks = (fsblkcnt_t)((fs->ix->archive_size + 511) / 512);
	sv.f_files = fs->ix->nnodes;
	sv.f_namemax = 255;
	sv.f_flag = ST_RDONLY;
	fuse_reply_statfs(req, &sv);
}

void tarfs_ops_init(struct fuse_lowlevel_ops *ops)
{
	memset(ops, 0, sizeof(*ops));
	ops->init = tarfs_init;
	ops->lookup = tarfs_lookup_op;
	ops->getattr = tarfs_getattr;
	ops->readlink = tarfs_readlink;
	ops->opendir = tarfs_opendir;
	ops->readdir = tarfs_readdir;
	ops->open = tarfs_open;
	ops->read = tarfs_read;
	ops->statfs = tarfs_statfs;
}
