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
 * never closed.  Without a handle (an unprivileged server, a source that
 * cannot export them: FUSE, some overlayfs) the fd stays open, as does the
 * root's.
 *
 * Without its fd an inode no longer pins its object, so its (st_dev,
 * st_ino) may come back for another object: a lookup that finds the key
 * with another handle unhashes the old inode (it lives on, unreachable by
 * key, until the kernel forgets it) and makes a new one.
 *
 * The mount is one st_dev, so the inode numbers it reports must be unique
 * across every file system mounted under SOURCE (see pzc_ino_number).
 */
#include "pzc.h"

#include <errno.h>
#include <fcntl.h>
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

/* --- the fd cache: inodes with a handle and an open fd, most recent first */

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

/*
 * Find or create the inode for @st and take one lookup reference.  @fd is
 * an O_PATH descriptor of the object and @handle its file handle (or NULL)
 * on @mount_id; the table takes both, whatever the outcome (a known inode
 * whose fd was closed takes the fd as its own).  NULL means ENOMEM.
 */
struct pzc_inode *pzc_inode_get(struct pzc_fs *fs, int fd, const struct stat *st,
				struct file_handle *handle, int mount_id)
{
	int closing[PZC_EVICT_BATCH + 1];
	struct pzc_inode *p;
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
		if (p->fd < 0) {
			p->fd = fd;
			pzc_lru_push(fs, p);
		} else {
			closing[nclose++] = fd;
		}
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
			pzc_lru_push(fs, p);
		}
	}
	pzc_maybe_grow(fs);
	pzc_insert(fs, p);
out:
	nclose += pzc_lru_evict(fs, closing + nclose, PZC_EVICT_BATCH);
	pthread_mutex_unlock(&fs->lock);
	pzc_close_all(closing, nclose);
	if (!p || p->handle != handle)
		free(handle);
	return p;
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
		if (inode->handle && fs->lru_head != inode) {
			pzc_lru_unlink(fs, inode);
			pzc_lru_push(fs, inode);
		}
		pthread_mutex_unlock(&fs->lock);
		return fd;
	}
	pthread_mutex_unlock(&fs->lock);

	fd = open_by_handle_at(inode->mount_fd, inode->handle, O_PATH | O_CLOEXEC);
	if (fd == -1)
		return errno == ESTALE ? -ENOENT : -errno;
	/* A mount id can be reused by another file system mounted under
	 * SOURCE: the handle must name the same object there. */
	if (fstat(fd, &st) == -1 || st.st_dev != inode->dev || st.st_ino != inode->ino) {
		close(fd);
		return -ENOENT;
	}

	pthread_mutex_lock(&fs->lock);
	if (inode->fd >= 0) {
		close(fd);	/* reopened meanwhile */
		fd = inode->fd;
	} else {
		inode->fd = fd;
		pzc_lru_push(fs, inode);
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
	if (inode->nlookup || inode->nopen || inode == &fs->root) {
		pthread_mutex_unlock(&fs->lock);
		return;
	}
	if (inode->hashed)
		pzc_unhash(fs, inode);
	else
		pzc_unlink_stale(fs, inode);
	if (pzc_lru_linked(fs, inode))
		pzc_lru_unlink(fs, inode);
	pthread_mutex_unlock(&fs->lock);
	pzc_inode_free(inode);
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
