// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * passthrough_zc: the inode table.
 *
 * An inode is one source object, keyed by (st_dev, st_ino), holding an
 * O_PATH descriptor that pins it (so the key cannot be reused while the
 * inode is hashed).  The kernel's lookup count (nlookup) and our open
 * count (nopen) are kept apart: a FORGET may overtake the RELEASE of the
 * same inode, so the inode lives until both are zero.  The root inode is
 * hashed like the others but never freed.
 *
 * The mount is one st_dev, so the inode numbers it reports must be unique
 * across every file system mounted under SOURCE (see pzc_ino_number).
 */
#include "pzc.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define PZC_MIN_BUCKETS 1024

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
			fs->ninodes--;
			return;
		}
	}
	fprintf(stderr, "passthrough_zc: internal error: inode %llu not hashed\n",
		(unsigned long long)inode->ino);
	abort();
}

int pzc_itable_init(struct pzc_fs *fs, int root_fd)
{
	struct stat st;

	if (fstat(root_fd, &st) == -1)
		return -errno;
	fs->nbuckets = PZC_MIN_BUCKETS;
	fs->buckets = calloc(fs->nbuckets, sizeof(*fs->buckets));
	if (!fs->buckets)
		return -ENOMEM;
	pthread_mutex_init(&fs->lock, NULL);
	fs->next_generation = 1;
	fs->root.fd = root_fd;
	fs->root.dev = st.st_dev;
	fs->root.ino = st.st_ino;
	fs->root.nlookup = 2;
	pthread_mutex_init(&fs->root.lock, NULL);
	pzc_insert(fs, &fs->root);
	return 0;
}

void pzc_itable_destroy(struct pzc_fs *fs)
{
	size_t i;

	if (!fs->buckets)
		return;
	for (i = 0; i < fs->nbuckets; i++) {
		struct pzc_inode *p = fs->buckets[i], *next;

		for (; p; p = next) {
			next = p->hnext;
			if (p == &fs->root)
				continue;
			close(p->fd);
			pthread_mutex_destroy(&p->lock);
			free(p);
		}
	}
	free(fs->buckets);
	fs->buckets = NULL;
	free(fs->other_devs);
	fs->other_devs = NULL;
	pthread_mutex_destroy(&fs->root.lock);
	pthread_mutex_destroy(&fs->lock);
}

/*
 * Find or create the inode for @st and take one lookup reference.  @fd is
 * an O_PATH descriptor of the object: on success it is owned by the table
 * when *@created, else the caller must close it.  NULL means ENOMEM.
 */
struct pzc_inode *pzc_inode_get(struct pzc_fs *fs, int fd, const struct stat *st,
				bool *created)
{
	struct pzc_inode *p;

	*created = false;
	pthread_mutex_lock(&fs->lock);
	for (p = fs->buckets[pzc_hash(fs, st->st_dev, st->st_ino)]; p; p = p->hnext) {
		if (p->ino == st->st_ino && p->dev == st->st_dev) {
			p->nlookup++;
			pthread_mutex_unlock(&fs->lock);
			return p;
		}
	}
	p = calloc(1, sizeof(*p));
	if (p) {
		p->dev = st->st_dev;
		p->ino = st->st_ino;
		p->fd = fd;
		p->nlookup = 1;
		p->generation = fs->next_generation++;
		pthread_mutex_init(&p->lock, NULL);
		pzc_maybe_grow(fs);
		pzc_insert(fs, p);
		*created = true;
	}
	pthread_mutex_unlock(&fs->lock);
	return p;
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
	pzc_unhash(fs, inode);
	pthread_mutex_unlock(&fs->lock);
	close(inode->fd);
	pthread_mutex_destroy(&inode->lock);
	free(inode);
}

void pzc_inode_unref(struct pzc_fs *fs, struct pzc_inode *inode, uint64_t n)
{
	pthread_mutex_lock(&fs->lock);
	if (n > inode->nlookup) {
		fprintf(stderr, "passthrough_zc: internal error: negative lookup "
			"count for inode %llu\n", (unsigned long long)inode->ino);
		abort();
	}
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
	if (!inode->nopen) {
		fprintf(stderr, "passthrough_zc: internal error: negative open "
			"count for inode %llu\n", (unsigned long long)inode->ino);
		abort();
	}
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
