/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * tarfs index: the members of a tar archive, built from its headers alone
 * (the data is seeked over, never read).  No FUSE here: tarfs_zc.c serves
 * it, tests/tarfs/tarfs_index_test.c checks and fuzzes it in-process.
 *
 * Nodes: node 0 is the root directory; every other node is one name in the
 * tree (a member, or a directory implied by a member's path).  A hard link
 * is a node whose @ino names the node it links to (the same inode); every
 * other node is its own inode (@ino == its index).
 *
 * Memory per name: a 72-byte node, 12 bytes of child tables, 8-16 bytes of
 * hash buckets (at most one node per two buckets), and the last path
 * component (and a symlink's target) with a NUL in the arena; the node
 * table and arena grow by doubling.  tarfs/README.md states the bound.
 */
#ifndef TARFS_INDEX_H
#define TARFS_INDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define TARFS_NONE UINT32_MAX

struct tarfs_node {
	uint64_t off;		/* regular file: its data in the archive */
	uint64_t size;		/* regular file: bytes; symlink: target length */
	int64_t mtime;		/* seconds */
	uint32_t mtime_nsec;
	uint32_t mode;		/* with the S_IFMT type */
	uint32_t uid, gid;
	uint32_t rdev;		/* devices: makedev(major, minor) */
	uint32_t parent;	/* node index of the directory */
	uint32_t name;		/* arena offset of the last path component */
	uint32_t target;	/* symlink: arena offset of the target */
	uint32_t ino;		/* the node holding the inode (hard links) */
	uint32_t nlink;		/* on an inode node */
	uint32_t hnext;		/* hash chain of (parent, name) */
};

struct tarfs_index {
	struct tarfs_node *nodes;
	uint32_t nnodes, cap;
	char *arena;		/* names and symlink targets, NUL-terminated */
	size_t arena_len, arena_cap;
	uint32_t *buckets;	/* (parent, name) -> node, chained by hnext */
	uint32_t nbuckets;
	/* after tarfs_index_finish(): the children of directory d are
	 * children[child_start[d] .. child_start[d] + child_count[d]) */
	uint32_t *children;
	uint32_t *child_start;	/* only for directory nodes meaningful */
	uint32_t *child_count;
	uint64_t archive_size;
	uint64_t members;	/* headers of members seen (not counting pax/GNU ones) */
	uint64_t skipped_dotdot; /* members not served: ".." in the name (as GNU tar) */
};

struct tarfs_index_opts {
	/* defaults for the root and implied directories */
	uint32_t uid, gid;
	int64_t mtime;
	/* called now and then while indexing (progress), may be NULL */
	void (*progress)(uint64_t members, uint64_t pos, uint64_t size, void *data);
	void *progress_data;
};

/*
 * Build the index of the archive open on @fd (regular file).  0, or -errno
 * with a one-line reason in @err (no trailing newline): -EINVAL for a
 * malformed archive (bad checksum, truncated header, size past the end,
 * a lying pax header), -EOPNOTSUPP for what tarfs does not serve (GNU
 * sparse or multi-volume members).
 */
int tarfs_index_build(int fd, const struct tarfs_index_opts *opts,
		      struct tarfs_index **out, char *err, size_t errlen);
void tarfs_index_free(struct tarfs_index *ix);

/* Node of @name in directory @parent, or TARFS_NONE. */
uint32_t tarfs_lookup(const struct tarfs_index *ix, uint32_t parent, const char *name);

static inline const char *tarfs_name(const struct tarfs_index *ix, uint32_t node)
{
	return ix->arena + ix->nodes[node].name;
}

/* Memory the index uses, bytes. */
size_t tarfs_index_bytes(const struct tarfs_index *ix);

#endif /* TARFS_INDEX_H */
