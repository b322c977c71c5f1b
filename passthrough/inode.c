// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * passthrough_zc: the inode table.
 *
 * An inode is one source object, keyed by (st_dev, st_ino).  The kernel's
 * lookup count (nlookup) and our open count (nopen) are kept apart: a
 * FORGET may overtake the RELEASE of the same inode, so the inode lives
 * until both are zero.  The root inode is hashed like the others but never
 * freed.
 *
 * Descriptors.  Each inode reaches its object through an O_PATH fd.  The
 * kernel may know any number of inodes (ls -l of a big directory), so a
 * fd per inode would fill the fd table, after which every user gets
 * EMFILE.  Where the server can reopen an object by its file handle
 * (name_to_handle_at(2); open_by_handle_at needs CAP_DAC_READ_SEARCH, so
 * a root server, and a source file system that exports handles), the
 * inode keeps the handle and its fd is a cache: at most fd_cap such fds
 * stay open, the least recently used closed first, reopened on the next
 * use (as virtiofsd's --inode-file-handles).  A fd in use (pinned by
 * pzc_inode_fd() until pzc_inode_fd_put()) or of an inode that is open is
 * never closed; nor is the root's.
 *
 * Without a handle (an unprivileged server, a source that cannot export
 * them: FUSE, overlayfs without nfs_export) an inode keeps the directory
 * it was last seen in (parent, held: it outlives the kernel's FORGET
 * while a child names it) and its name there, and its fd is in the same
 * cache: reopened by openat(parent's fd, name), the parent reopened the
 * same way if need be.  Every lookup renews the name; a rename through the
 * mount moves it; before an unlink, or a rename onto it, through the mount
 * the inode named reopens its fd, loses the name and keeps the fd until a
 * lookup names it again (a second hard link, or an open file).  A reopen
 * that finds no object, or another (st_dev, st_ino), under the name (the
 * source was changed behind the mount) fails with ESTALE.
 *
 * Without its fd an inode no longer pins its object, so its (st_dev,
 * st_ino) may come back for another object: a lookup that finds the key
 * with another handle unhashes the old inode (it lives on, unreachable by
 * key, until the kernel forgets it) and makes a new one.  Without a handle
 * there is nothing to compare: an object deleted behind the mount whose
 * inode number the source gives to a new one at the same or another name
 * is taken for the old one (the kernel then sees a changed size and
 * mtime, as with any file changed behind a FUSE mount).  Only an inode
 * whose fd was closed is exposed, which happens only once more than
 * fd_cap inodes are known: never with the usual RLIMIT_NOFILE.
 *
 * The mount is one st_dev, so the inode numbers it reports must be unique
 * across every file system mounted under SOURCE (see pzc_ino_number).
 */
#include "pzc.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/capability.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#define PZC_MIN_BUCKETS 1024
#define PZC_MIN_FD_CAP	16
#define PZC_MAX_FD_CAP	65536

/* The file systems handles are opened on: one fd per mount id, -1 where
 * handles do not reopen. */
struct pzc_mount_fd {
	int mount_id;
	int fd;
};

static size_t pzc_hash(const struct pzc_fs *fs, dev_t dev, ino_t ino)
{
	uint64_t h = (uint64_t)ino * 0x9e3779b97f4a7c15ULL ^ (uint64_t)dev;

	return (size_t)(h ^ (h >> 29)) & (fs->nbuckets - 1);
}

static void pzc_insert(struct pzc_fs *fs, struct pzc_inode *inode)
{
	size_t b = pzc_hash(fs, inode->dev, inode->ino);

	inode->hnext = fs->buckets[b];
	fs->buckets[b] = inode;
	inode->hashed = true;
	fs->ninodes++;
}

/* Called with fs->lock held; growing is best effort. */
static void pzc_maybe_grow(struct pzc_fs *fs)
{
	struct pzc_inode **old = fs->buckets;
	size_t oldn = fs->nbuckets, i;
	struct pzc_inode **nb;

	if (fs->ninodes < fs->nbuckets * 2)
		return;
	nb = calloc(oldn * 4, sizeof(*nb));
	if (!nb)
		return;
	fs->buckets = nb;
	fs->nbuckets = oldn * 4;
	fs->ninodes = 0;
	for (i = 0; i < oldn; i++) {
		struct pzc_inode *p = old[i], *next;

		for (; p; p = next) {
			next = p->hnext;
			pzc_insert(fs, p);
		}
	}
	free(old);
}

static void pzc_unhash(struct pzc_fs *fs, struct pzc_inode *inode)
{
	struct pzc_inode **pp = &fs->buckets[pzc_hash(fs, inode->dev, inode->ino)];

	for (; *pp; pp = &(*pp)->hnext) {
		if (*pp == inode) {
			*pp = inode->hnext;
			inode->hashed = false;
			fs->ninodes--;
			return;
		}
	}
	fprintf(stderr, "passthrough_zc: internal error: inode %llu not hashed\n",
		(unsigned long long)inode->ino);
	abort();
}

/* A count of @inode would go below zero: a bug the table cannot survive. */
static void pzc_underflow(const char *count, const struct pzc_inode *inode)
{
	fprintf(stderr, "passthrough_zc: internal error: negative %s of inode %llu\n",
		count, (unsigned long long)inode->ino);
	abort();
}

/* --- the fd cache: reopenable inodes with an open fd, most recent first */

static bool pzc_lru_linked(const struct pzc_fs *fs, const struct pzc_inode *inode)
{
	return inode->lru_prev || fs->lru_head == inode;
}

static void pzc_lru_unlink(struct pzc_fs *fs, struct pzc_inode *inode)
{
	if (inode->lru_prev)
		inode->lru_prev->lru_next = inode->lru_next;
	else
		fs->lru_head = inode->lru_next;
	if (inode->lru_next)
		inode->lru_next->lru_prev = inode->lru_prev;
	else
		fs->lru_tail = inode->lru_prev;
	inode->lru_prev = inode->lru_next = NULL;
	fs->nfds_cached--;
}

static void pzc_lru_push(struct pzc_fs *fs, struct pzc_inode *inode)
{
	inode->lru_prev = NULL;
	inode->lru_next = fs->lru_head;
	if (fs->lru_head)
		fs->lru_head->lru_prev = inode;
	else
		fs->lru_tail = inode;
	fs->lru_head = inode;
	fs->nfds_cached++;
}

/* Whether @inode's fd can be closed and reopened: by handle or by name. */
static bool pzc_reopenable(const struct pzc_inode *inode)
{
	return inode->handle || inode->name;
}

/* Put @inode on the fd cache (most recent) if its fd is open and can be
 * reopened, else off it.  Called with fs->lock held. */
static void pzc_lru_update(struct pzc_fs *fs, struct pzc_inode *inode)
{
	bool want = inode->fd >= 0 && pzc_reopenable(inode);

	if (pzc_lru_linked(fs, inode))
		pzc_lru_unlink(fs, inode);
	if (want)
		pzc_lru_push(fs, inode);
}

/*
 * Close cached fds beyond fd_cap, least recently used first, skipping
 * those in use and those of open inodes.  Called with fs->lock held; the
 * fds are handed back in @closing (at most @max) for the caller to close
 * after unlocking.  Returns their number.
 */
static size_t pzc_lru_evict(struct pzc_fs *fs, int *closing, size_t max)
{
	struct pzc_inode *p = fs->lru_tail, *prev;
	size_t n = 0;

	for (; p && fs->nfds_cached > fs->fd_cap && n < max; p = prev) {
		prev = p->lru_prev;
		if (p->fd_users || p->nopen)
			continue;
		pzc_lru_unlink(fs, p);
		closing[n++] = p->fd;
		p->fd = -1;
	}
	return n;
}

#define PZC_EVICT_BATCH 8

static void pzc_close_all(const int *fds, size_t n)
{
	while (n--)
		close(fds[n]);
}

/* Whether this process may open by handle: CAP_DAC_READ_SEARCH. */
static bool pzc_can_open_handles(void)
{
	struct __user_cap_header_struct hdr = {
		.version = _LINUX_CAPABILITY_VERSION_3,
	};
	struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];

	if (syscall(SYS_capget, &hdr, data) == -1)
		return false;
	return data[CAP_TO_INDEX(CAP_DAC_READ_SEARCH)].effective &
	       CAP_TO_MASK(CAP_DAC_READ_SEARCH);
}

/*
 * The file handle of O_PATH @fd and its mount id, when the server can
 * reopen by handle and the file system exports them; NULL otherwise (the
 * inode then keeps its fd).
 */
struct file_handle *pzc_handle_of(struct pzc_fs *fs, int fd, int *mount_id)
{
	struct file_handle *h, *fit;

	if (!fs->handles)
		return NULL;
	h = malloc(sizeof(*h) + MAX_HANDLE_SZ);
	if (!h)
		return NULL;
	h->handle_bytes = MAX_HANDLE_SZ;
	if (name_to_handle_at(fd, "", h, mount_id, AT_EMPTY_PATH) == -1) {
		free(h);
		return NULL;
	}
	fit = realloc(h, sizeof(*h) + h->handle_bytes);
	return fit ? fit : h;
}

static bool pzc_same_handle(const struct file_handle *a, const struct file_handle *b)
{
	return a->handle_type == b->handle_type && a->handle_bytes == b->handle_bytes &&
	       !memcmp(a->f_handle, b->f_handle, a->handle_bytes);
}

/* @mount_id's entry, or NULL.  Called with fs->lock held. */
static struct pzc_mount_fd *pzc_mount(struct pzc_fs *fs, int mount_id)
{
	size_t i;

	for (i = 0; i < fs->nmounts; i++)
		if (fs->mounts[i].mount_id == mount_id)
			return &fs->mounts[i];
	return NULL;
}

/* The fd open_by_handle_at() takes for @mount_id, or -1.  Called with
 * fs->lock held. */
static int pzc_mount_fd(struct pzc_fs *fs, int mount_id)
{
	struct pzc_mount_fd *m = pzc_mount(fs, mount_id);

	return m ? m->fd : -1;
}

/* Whether @handle of directory @dirfd reopens it, through @dirfd. */
static bool pzc_handle_reopens(int dirfd, struct file_handle *handle)
{
	struct stat a, b;
	int fd;

	fd = open_by_handle_at(dirfd, handle, O_PATH | O_CLOEXEC);
	if (fd == -1)
		return false;
	if (fstat(fd, &a) == -1 || fstat(dirfd, &b) == -1)
		a.st_ino = b.st_ino + 1;
	close(fd);
	return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

/*
 * Directory @fd (O_PATH, file handle @handle) is on @mount_id: the first
 * time, keep a fd of it for opening handles there, if a handle reopens
 * there (some file systems make handles they cannot open: their inodes
 * keep their fds).  open_by_handle_at() takes no O_PATH fd, so it is
 * reopened for reading, which only a directory allows without side
 * effects (a FIFO would block): files are reopened through the mount fd
 * of their directory; a file that is a mount point itself keeps its fd.
 */
void pzc_note_mount(struct pzc_fs *fs, int mount_id, int fd,
		    struct file_handle *handle)
{
	struct pzc_mount_fd *grown;
	char path[PZC_PROCFD_LEN];
	bool known;
	int dirfd;

	pthread_mutex_lock(&fs->lock);
	known = pzc_mount(fs, mount_id);
	pthread_mutex_unlock(&fs->lock);
	if (known)
		return;
	pzc_procfd(path, fd);
	dirfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd == -1)
		return;		/* not recorded: tried again next time */
	if (!pzc_handle_reopens(dirfd, handle)) {
		close(dirfd);
		dirfd = -1;
	}
	pthread_mutex_lock(&fs->lock);
	grown = pzc_mount(fs, mount_id) ? NULL :
		realloc(fs->mounts, (fs->nmounts + 1) * sizeof(*grown));
	if (grown) {
		fs->mounts = grown;
		fs->mounts[fs->nmounts].mount_id = mount_id;
		fs->mounts[fs->nmounts].fd = dirfd;
		fs->nmounts++;
		dirfd = -1;
	}
	pthread_mutex_unlock(&fs->lock);
	if (dirfd >= 0)
		close(dirfd);
}

/* RLIMIT_NOFILE (raised to the hard limit by main) / 4 cached fds: the
 * rest for open files, directories and the library's rings. */
static size_t pzc_fd_cap(void)
{
	struct rlimit lim;
	rlim_t cap;

	if (getrlimit(RLIMIT_NOFILE, &lim) == -1 || lim.rlim_cur == RLIM_INFINITY)
		return PZC_MAX_FD_CAP;
	cap = lim.rlim_cur / 4;
	return cap < PZC_MIN_FD_CAP ? PZC_MIN_FD_CAP :
	       cap > PZC_MAX_FD_CAP ? PZC_MAX_FD_CAP : (size_t)cap;
}

int pzc_itable_init(struct pzc_fs *fs, int root_fd)
{
	struct stat st;
	int mount_id;

	if (fstat(root_fd, &st) == -1)
		return -errno;
	fs->nbuckets = PZC_MIN_BUCKETS;
	fs->buckets = calloc(fs->nbuckets, sizeof(*fs->buckets));
	if (!fs->buckets)
		return -ENOMEM;
	pthread_mutex_init(&fs->lock, NULL);
	fs->next_generation = 1;
	fs->handles = pzc_can_open_handles();
	fs->fd_cap = pzc_fd_cap();
	fs->root.fd = root_fd;
	fs->root.dev = st.st_dev;
	fs->root.ino = st.st_ino;
	fs->root.nlookup = 2;
	pthread_mutex_init(&fs->root.lock, NULL);
	pzc_insert(fs, &fs->root);
	if (fs->handles) {
		struct file_handle *h = pzc_handle_of(fs, root_fd, &mount_id);

		if (h)
			pzc_note_mount(fs, mount_id, root_fd, h);
		free(h);
	}
	return 0;
}

static void pzc_inode_free(struct pzc_inode *inode)
{
	if (inode->fd >= 0)
		close(inode->fd);
	free(inode->name);
	free(inode->handle);
	pthread_mutex_destroy(&inode->lock);
	free(inode);
}

void pzc_itable_destroy(struct pzc_fs *fs)
{
	struct pzc_inode *stale;
	size_t i;

	if (!fs->buckets)
		return;
	while ((stale = fs->stale)) {
		fs->stale = stale->hnext;
		pzc_inode_free(stale);
	}
	for (i = 0; i < fs->nbuckets; i++) {
		struct pzc_inode *p = fs->buckets[i], *next;

		for (; p; p = next) {
			next = p->hnext;
			if (p != &fs->root)
				pzc_inode_free(p);
		}
	}
	free(fs->buckets);
	fs->buckets = NULL;
	for (i = 0; i < fs->nmounts; i++)
		if (fs->mounts[i].fd >= 0)
			close(fs->mounts[i].fd);
	free(fs->mounts);
	fs->mounts = NULL;
	free(fs->other_devs);
	fs->other_devs = NULL;
	pthread_mutex_destroy(&fs->root.lock);
	pthread_mutex_destroy(&fs->lock);
}

/* Take @inode off its hash chain for good: its object is gone and its key
 * reused.  It stays on the stale list until it is freed.  Called with
 * fs->lock held. */
static void pzc_unhash_stale(struct pzc_fs *fs, struct pzc_inode *inode)
{
	pzc_unhash(fs, inode);
	inode->hnext = fs->stale;
	fs->stale = inode;
}

static void pzc_unlink_stale(struct pzc_fs *fs, struct pzc_inode *inode)
{
	struct pzc_inode **pp;

	for (pp = &fs->stale; *pp != inode; pp = &(*pp)->hnext)
		;
	*pp = inode->hnext;
}

static void pzc_release(struct pzc_inode *inode)
{
	if (!inode->nholds)
		pzc_underflow("hold count", inode);
	inode->nholds--;
}

/*
 * Take @inode out of the table if nothing holds it any more (no lookup
 * reference, no open, no hold), then its parent likewise.  Called with
 * fs->lock held; the inodes taken out are chained on *@dead through hnext,
 * for pzc_free_dead() once unlocked.
 */
static void pzc_reap(struct pzc_fs *fs, struct pzc_inode *inode,
		     struct pzc_inode **dead)
{
	struct pzc_inode *parent;

	while (inode && inode != &fs->root && !inode->nlookup && !inode->nopen &&
	       !inode->nholds) {
		if (inode->hashed)
			pzc_unhash(fs, inode);
		else
			pzc_unlink_stale(fs, inode);
		if (pzc_lru_linked(fs, inode))
			pzc_lru_unlink(fs, inode);
		if (inode->name)
			fs->nnamed--;
		parent = inode->parent;
		inode->parent = NULL;
		inode->hnext = *dead;
		*dead = inode;
		if (parent)
			pzc_release(parent);
		inode = parent;
	}
}

static void pzc_free_dead(struct pzc_inode *dead)
{
	struct pzc_inode *next;

	for (; dead; dead = next) {
		next = dead->hnext;
		pzc_inode_free(dead);
	}
}

/*
 * Record that @inode (no handle) is @name (malloc'd, taken; NULL: no name)
 * in @parent, and put it on or off the fd cache accordingly.  A parent
 * that has @inode among its own parents (records of different times, the
 * source changed behind the mount) would make a loop: no name then.
 * Called with fs->lock held; an old parent nothing holds any more goes
 * to *@dead.
 */
static void pzc_set_name(struct pzc_fs *fs, struct pzc_inode *inode,
			 struct pzc_inode *parent, char *name, struct pzc_inode **dead)
{
	struct pzc_inode *old = inode->parent, *p;

	for (p = parent; p && name; p = p->parent) {
		if (p == inode) {
			free(name);
			name = NULL;
		}
	}
	if (!name)
		parent = NULL;
	if (parent)
		parent->nholds++;
	fs->nnamed += !!name - !!inode->name;
	free(inode->name);
	inode->name = name;
	inode->parent = parent;
	if (old) {
		pzc_release(old);
		pzc_reap(fs, old, dead);
	}
	pzc_lru_update(fs, inode);
}

/* Whether @inode takes names: not the root, not one with a handle. */
static bool pzc_takes_names(struct pzc_fs *fs, const struct pzc_inode *inode)
{
	return inode != &fs->root && !inode->handle;
}

/*
 * Find or create the inode for @st and take one lookup reference.  @fd is
 * an O_PATH descriptor of the object, found as @name in directory @parent,
 * and @handle its file handle (or NULL) on @mount_id; the table takes fd
 * and handle, whatever the outcome (a known inode whose fd was closed
 * takes the fd as its own).  NULL means ENOMEM.
 */
struct pzc_inode *pzc_inode_get(struct pzc_fs *fs, int fd, const struct stat *st,
				struct file_handle *handle, int mount_id,
				struct pzc_inode *parent, const char *name)
{
	int closing[PZC_EVICT_BATCH + 1];
	struct pzc_inode *p, *dead = NULL;
	char *nm = strdup(name);	/* NULL: the fd is not closed */
	size_t nclose = 0;

	pthread_mutex_lock(&fs->lock);
	for (p = fs->buckets[pzc_hash(fs, st->st_dev, st->st_ino)]; p; p = p->hnext) {
		if (p->ino != st->st_ino || p->dev != st->st_dev)
			continue;
		if (p->handle && handle && !pzc_same_handle(p->handle, handle)) {
			pzc_unhash_stale(fs, p);
			break;
		}
		p->nlookup++;
		if (p->fd < 0)
			p->fd = fd;
		else
			closing[nclose++] = fd;
		if (pzc_takes_names(fs, p) &&
		    (p->parent != parent || !p->name || !nm || strcmp(p->name, nm))) {
			pzc_set_name(fs, p, parent, nm, &dead);
			nm = NULL;
		}
		pzc_lru_update(fs, p);
		goto out;
	}
	p = calloc(1, sizeof(*p));
	if (!p) {
		closing[nclose++] = fd;
		goto out;
	}
	p->dev = st->st_dev;
	p->ino = st->st_ino;
	p->fd = fd;
	p->nlookup = 1;
	p->generation = fs->next_generation++;
	pthread_mutex_init(&p->lock, NULL);
	if (handle) {
		p->mount_fd = pzc_mount_fd(fs, mount_id);
		if (p->mount_fd >= 0) {
			p->handle = handle;
			handle = NULL;
		}
	}
	pzc_maybe_grow(fs);
	pzc_insert(fs, p);
	if (pzc_takes_names(fs, p)) {
		pzc_set_name(fs, p, parent, nm, &dead);
		nm = NULL;
	}
	pzc_lru_update(fs, p);
out:
	nclose += pzc_lru_evict(fs, closing + nclose, PZC_EVICT_BATCH);
	pthread_mutex_unlock(&fs->lock);
	pzc_close_all(closing, nclose);
	pzc_free_dead(dead);
	free(nm);
	if (!p || p->handle != handle)
		free(handle);
	return p;
}

/*
 * Reopen @inode (no handle) through its parent's fd and its name: the fd,
 * or -errno (ESTALE: the name leads nowhere).  The parent is held while
 * unlocked, and its fd reopened the same way if it was closed.
 */
static int pzc_reopen_by_name(struct pzc_fs *fs, struct pzc_inode *inode)
{
	struct pzc_inode *parent, *dead = NULL;
	char name[NAME_MAX + 1];
	int pfd, fd;

	pthread_mutex_lock(&fs->lock);
	parent = inode->parent;
	if (!parent || !inode->name || strlen(inode->name) > NAME_MAX) {
		pthread_mutex_unlock(&fs->lock);
		return -ESTALE;
	}
	strcpy(name, inode->name);
	parent->nholds++;
	pthread_mutex_unlock(&fs->lock);

	pfd = pzc_inode_fd(fs, parent);
	if (pfd >= 0) {
		fd = openat(pfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
		if (fd == -1)
			fd = errno == ENOENT ? -ESTALE : -errno;
		pzc_inode_fd_put(fs, parent);
	} else {
		fd = pfd == -ENOENT ? -ESTALE : pfd;
	}

	pthread_mutex_lock(&fs->lock);
	pzc_release(parent);
	pzc_reap(fs, parent, &dead);
	pthread_mutex_unlock(&fs->lock);
	pzc_free_dead(dead);
	return fd;
}

/*
 * The O_PATH fd of @inode, reopened by its handle if it was closed, and
 * pinned until pzc_inode_fd_put(): >= 0, or -errno (ENOENT: the object is
 * gone).  Not while acting as a caller: reopening needs the server's
 * CAP_DAC_READ_SEARCH.
 */
int pzc_inode_fd(struct pzc_fs *fs, struct pzc_inode *inode)
{
	int closing[PZC_EVICT_BATCH];
	struct stat st;
	size_t nclose;
	int fd;

	pthread_mutex_lock(&fs->lock);
	fd = inode->fd;
	if (fd >= 0) {
		inode->fd_users++;
		if (pzc_lru_linked(fs, inode) && fs->lru_head != inode) {
			pzc_lru_unlink(fs, inode);
			pzc_lru_push(fs, inode);
		}
		pthread_mutex_unlock(&fs->lock);
		return fd;
	}
	pthread_mutex_unlock(&fs->lock);

	if (inode->handle) {
		fd = open_by_handle_at(inode->mount_fd, inode->handle, O_PATH | O_CLOEXEC);
		if (fd == -1)
			return errno == ESTALE ? -ENOENT : -errno;
	} else {
		fd = pzc_reopen_by_name(fs, inode);
		if (fd < 0)
			return fd;
	}
	/* A mount id can be reused by another file system mounted under
	 * SOURCE, a name by another object: it must be the same object. */
	if (fstat(fd, &st) == -1 || st.st_dev != inode->dev || st.st_ino != inode->ino) {
		close(fd);
		return inode->handle ? -ENOENT : -ESTALE;
	}

	pthread_mutex_lock(&fs->lock);
	if (inode->fd >= 0) {
		close(fd);	/* reopened meanwhile */
		fd = inode->fd;
	} else {
		inode->fd = fd;
		pzc_lru_update(fs, inode);
	}
	inode->fd_users++;
	nclose = pzc_lru_evict(fs, closing, PZC_EVICT_BATCH);
	pthread_mutex_unlock(&fs->lock);
	pzc_close_all(closing, nclose);
	return fd;
}

void pzc_inode_fd_put(struct pzc_fs *fs, struct pzc_inode *inode)
{
	pthread_mutex_lock(&fs->lock);
	if (!inode->fd_users)
		pzc_underflow("fd pin count", inode);
	inode->fd_users--;
	pthread_mutex_unlock(&fs->lock);
}

void pzc_inode_ref(struct pzc_fs *fs, struct pzc_inode *inode)
{
	pthread_mutex_lock(&fs->lock);
	inode->nlookup++;
	pthread_mutex_unlock(&fs->lock);
}

/* Called with fs->lock held; unlocks it. */
static void pzc_put_locked(struct pzc_fs *fs, struct pzc_inode *inode)
{
	struct pzc_inode *dead = NULL;

	pzc_reap(fs, inode, &dead);
	pthread_mutex_unlock(&fs->lock);
	pzc_free_dead(dead);
}

void pzc_inode_unref(struct pzc_fs *fs, struct pzc_inode *inode, uint64_t n)
{
	pthread_mutex_lock(&fs->lock);
	if (n > inode->nlookup)
		pzc_underflow("lookup count", inode);
	inode->nlookup -= n;
	pzc_put_locked(fs, inode);
}

void pzc_inode_open(struct pzc_fs *fs, struct pzc_inode *inode)
{
	pthread_mutex_lock(&fs->lock);
	inode->nopen++;
	pthread_mutex_unlock(&fs->lock);
}

void pzc_inode_close(struct pzc_fs *fs, struct pzc_inode *inode)
{
	pthread_mutex_lock(&fs->lock);
	if (!inode->nopen)
		pzc_underflow("open count", inode);
	inode->nopen--;
	pzc_put_locked(fs, inode);
}

/* The inode of what @name in directory @dfd is now, if known and reopened
 * by name, held; or NULL.  Nothing to find while no inode has a name. */
static struct pzc_inode *pzc_named_inode(struct pzc_fs *fs, int dfd, const char *name)
{
	struct pzc_inode *p = NULL;
	struct stat st;
	bool any;

	pthread_mutex_lock(&fs->lock);
	any = fs->nnamed;
	pthread_mutex_unlock(&fs->lock);
	if (!any || fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == -1)
		return NULL;
	pthread_mutex_lock(&fs->lock);
	for (p = fs->buckets[pzc_hash(fs, st.st_dev, st.st_ino)]; p; p = p->hnext)
		if (p->ino == st.st_ino && p->dev == st.st_dev)
			break;
	if (p && pzc_takes_names(fs, p))
		p->nholds++;
	else
		p = NULL;
	pthread_mutex_unlock(&fs->lock);
	return p;
}

static void pzc_named_put(struct pzc_fs *fs, struct pzc_inode *inode)
{
	pthread_mutex_lock(&fs->lock);
	pzc_release(inode);
	pzc_put_locked(fs, inode);
}

/*
 * @name in directory @parent (fd @dfd) is about to be removed, or replaced
 * by a rename, through the mount.  If the inode it names is recorded under
 * that name, its fd is reopened while the name still leads to it, and
 * kept: the inode loses the name (a later lookup by another name, a
 * second hard link, gives it one again).  As the server; best effort.
 */
void pzc_inode_unnamed(struct pzc_fs *fs, struct pzc_inode *parent, int dfd,
		       const char *name)
{
	struct pzc_inode *p = pzc_named_inode(fs, dfd, name), *dead = NULL;
	bool same;

	if (!p)
		return;
	pthread_mutex_lock(&fs->lock);
	same = p->parent == parent && p->name && !strcmp(p->name, name);
	pthread_mutex_unlock(&fs->lock);
	if (same && pzc_inode_fd(fs, p) >= 0) {
		pthread_mutex_lock(&fs->lock);
		if (p->parent == parent && p->name && !strcmp(p->name, name))
			pzc_set_name(fs, p, NULL, NULL, &dead);
		pthread_mutex_unlock(&fs->lock);
		pzc_free_dead(dead);
		pzc_inode_fd_put(fs, p);
	}
	pzc_named_put(fs, p);
}

/* @name in directory @parent (fd @dfd) was just made, by a rename through
 * the mount: the inode it names, if known and reopened by name, is
 * recorded under it.  As the server; best effort. */
void pzc_inode_named(struct pzc_fs *fs, struct pzc_inode *parent, int dfd,
		     const char *name)
{
	struct pzc_inode *p = pzc_named_inode(fs, dfd, name), *dead = NULL;
	char *nm;

	if (!p)
		return;
	nm = strdup(name);
	pthread_mutex_lock(&fs->lock);
	pzc_set_name(fs, p, parent, nm, &dead);
	pthread_mutex_unlock(&fs->lock);
	pzc_free_dead(dead);
	pzc_named_put(fs, p);
}

/*
 * The inode number the mount reports for source object (@dev, @ino).
 * SOURCE's own file system keeps its numbers.  Another file system mounted
 * under SOURCE (a bind mount of another device, a tmpfs, a btrfs subvolume)
 * numbers its inodes independently, so its numbers would collide with
 * SOURCE's and with each other's on the one st_dev of the mount, and
 * find, du, tar and rsync -H would see false hard links and loops.  Each
 * such file system gets an index k (1, 2, ... in the order first seen,
 * stable while the server runs) and its inodes the numbers
 *	1 << 63 | k << 48 | ino
 * which no source file system hands out in practice (they count up from
 * small numbers).  An inode number at or above 2^48 on such a file system,
 * or more than 32767 of them, is folded in and may collide.
 */
#define PZC_INO_OTHER	(1ULL << 63)
#define PZC_INO_SHIFT	48
#define PZC_INO_MAX_FS	((1U << (63 - PZC_INO_SHIFT)) - 1)

ino_t pzc_ino_number(struct pzc_fs *fs, dev_t dev, ino_t ino)
{
	uint64_t low = (uint64_t)ino, k;
	size_t i;

	if (dev == fs->root.dev)
		return ino;
	pthread_mutex_lock(&fs->lock);
	for (i = 0; i < fs->nother_devs && fs->other_devs[i] != dev; i++)
		;
	if (i == fs->nother_devs && i < PZC_INO_MAX_FS) {
		dev_t *grown = realloc(fs->other_devs, (i + 1) * sizeof(*grown));

		if (grown) {
			grown[i] = dev;
			fs->other_devs = grown;
			fs->nother_devs++;
		}
	}
	k = i < fs->nother_devs ? i + 1 :
	    ((uint64_t)dev * 0x9e3779b97f4a7c15ULL >> 49) % PZC_INO_MAX_FS + 1;
	pthread_mutex_unlock(&fs->lock);
	if (low >> PZC_INO_SHIFT)
		low ^= low >> PZC_INO_SHIFT;
	low &= (1ULL << PZC_INO_SHIFT) - 1;
	return (ino_t)(PZC_INO_OTHER | k << PZC_INO_SHIFT | low);
}

/* st_ino as the mount reports it (see pzc_ino_number). */
void pzc_stat_ino(struct pzc_fs *fs, struct stat *st)
{
	st->st_ino = pzc_ino_number(fs, st->st_dev, st->st_ino);
}
