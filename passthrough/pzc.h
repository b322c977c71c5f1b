/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * passthrough_zc: shared types of the filesystem (options, inodes, handles).
 *
 * Lock order (outer first):
 *	pzc_inode.lock  ->  pzc_fs.lock
 * An inode's lock may be held while the table lock is taken, never the
 * reverse.  No lock is held across a reply or a blocking file operation
 * other than FUSE_DEV_IOC_BACKING_{OPEN,CLOSE} (under the inode's lock, so
 * that all opens of one inode share one backing id).
 */
#ifndef PZC_H
#define PZC_H

#include "fuse_zc.h"
#include "server.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/types.h>

#define PZC_VERSION "0.1.0"

/*
 * Read-ahead a root server sets when -o max_readahead is not given: one
 * FUSE_READ of max_pages (256 pages, libfuse's default max_write) per
 * read-ahead window, so sequential reads cost one round trip per MiB.
 */
#define PZC_DEFAULT_READAHEAD (1024 * 1024)

enum pzc_cache {
	PZC_CACHE_NEVER,
	PZC_CACHE_AUTO,
	PZC_CACHE_ALWAYS,
};

/* Everything -o and the command line set; filled by one fuse_opt table. */
struct pzc_config {
	char *source;
	int mode;		/* enum srv_mode (common/server.h) */
	int passthrough;
	int cache;		/* enum pzc_cache */
	double timeout;
	int timeout_set;
	int direct_io;
	int writeback;
	int flock;
	int xattr;
	int noatime;		/* the mount's noatime, honoured on the source */
	int direct_source;	/* aligned reads with O_DIRECT: 1, 0, -1 auto */
	int server_replies;	/* no IORING_SPLICE_BUF_COMPLETE: reply ourselves */
	int sync_lending;	/* one lending in flight a worker, waited for */
	int ring_read;		/* requests read through the worker's io_uring */
	int zerocopy_write;	/* zerocopy: writes from the writer's pages: 1, 0, -1 default */
	int posix_acl;		/* kernel POSIX ACLs, caller's umask on the source: 1, 0, -1 default */
	unsigned int max_read;
	unsigned int max_readahead;	/* 0: PZC_DEFAULT_READAHEAD as root */
	unsigned int max_write;
	int max_write_set;
	unsigned int threads;
	int stats;
	/* from fuse_parse_cmdline */
	int debug;
	int foreground;
	int singlethread;
	char *mountpoint;
};

struct pzc_inode {
	struct pzc_inode *hnext;	/* hash chain or stale list; pzc_fs.lock */
	struct pzc_inode *lru_prev;	/* fd cache (inode.c); pzc_fs.lock */
	struct pzc_inode *lru_next;
	dev_t dev;			/* key, immutable */
	ino_t ino;			/* key, immutable */
	struct file_handle *handle;	/* immutable; NULL: reopened by name */
	int mount_fd;			/* for open_by_handle_at, with handle */
	int fd;				/* O_PATH or -1: pzc_inode_fd(); pzc_fs.lock */
	unsigned int fd_users;		/* pins on fd; pzc_fs.lock */
	struct pzc_inode *parent;	/* no handle: directory of name, held; pzc_fs.lock */
	char *name;			/* no handle: its name there, NULL: none; pzc_fs.lock */
	unsigned int nholds;		/* children naming it parent, users unlocked; pzc_fs.lock */
	bool hashed;			/* pzc_fs.lock */
	uint64_t generation;		/* immutable */
	uint64_t nlookup;		/* pzc_fs.lock */
	uint64_t nopen;			/* pzc_fs.lock */
	pthread_mutex_t lock;		/* backing_id, backing_refs */
	int backing_id;			/* FUSE passthrough id, 0 = none */
	unsigned int backing_refs;
};

/* flock() waits that block (lock.c). */
struct pzc_locks {
	pthread_mutex_t lock;		/* everything here, each wait's state */
	pthread_cond_t left;		/* a wait left waits, or a thread ended */
	pthread_cond_t poll;		/* wake the poller */
	struct pzc_lock_wait *waits;
	unsigned int nthreads;		/* wait threads */
	unsigned int nqueued;		/* waits for the poller */
	bool poller_started;
	bool stopping;
	pthread_t poller;
};

struct pzc_fs {
	struct pzc_config cfg;
	pthread_mutex_t lock;		/* inode table, nlookup, nopen */
	struct pzc_inode **buckets;
	size_t nbuckets;
	size_t ninodes;
	uint64_t next_generation;
	struct pzc_inode root;
	struct pzc_inode *stale;	/* unhashed, still known to the kernel */
	bool handles;			/* may reopen inodes by file handle */
	struct pzc_inode *lru_head;	/* inode fds that may be closed (inode.c) */
	struct pzc_inode *lru_tail;
	size_t nfds_cached;
	size_t nnamed;			/* inodes reopened by name (inode.c) */
	size_t fd_cap;
	struct pzc_mount_fd *mounts;	/* open_by_handle_at's mount fds */
	size_t nmounts;
	dev_t *other_devs;		/* file systems under SOURCE; lock */
	size_t nother_devs;
	struct fuse_session *se;
	struct fusezc_session *zs;
	atomic_bool passthrough_ok;	/* cleared on the first refusal */
	bool writeback_on;		/* negotiated in init */
	bool acl_on;			/* FUSE_POSIX_ACL + FUSE_DONT_MASK negotiated */
	unsigned int raise_readahead_kb; /* set in init: more than INIT could give */
	bool readahead_default;		/* not asked for: a failure is no error */
	long pagesize;
	bool as_caller;			/* root: create with the caller's creds */
	gid_t *server_groups;		/* restored after acting as a caller */
	int nserver_groups;
	struct pzc_locks locks;		/* blocked flock()s (lock.c) */
};

/* An open regular file.  fd is a normal (buffered) descriptor; dio_fd is
 * the same file opened with O_DIRECT when the user asked for it or
 * direct source reads are on for it (pzc_direct_source()), and the source
 * supports it, else -1. */
struct pzc_file {
	int fd;
	int dio_fd;
	bool direct_writes;		/* the user opened with O_DIRECT */
	int backing_id;
};

struct pzc_dir {
	void *dp;			/* DIR * */
	void *entry;			/* struct dirent * pending */
	off_t offset;
};

/* Whether a worker thread took a caller's credentials (creds.c). */
struct pzc_creds {
	bool switched;
	bool caps_dropped;		/* effective capabilities cleared */
};

/* What a worker acts as the caller for (creds.c). */
enum pzc_act {
	PZC_CREATING,		/* new objects: the caller's ids, even root's */
	PZC_CHECKING,		/* the source checks the caller's permission */
};

/* Command-line state that is not configuration (options.c). */
struct pzc_cmdline {
	struct pzc_config cfg;
	struct srv_args pos;	/* SOURCE MOUNTPOINT, -o fsname */
};

/* inode.c, for the accessors below */
int pzc_inode_fd(struct pzc_fs *fs, struct pzc_inode *inode);
void pzc_inode_fd_put(struct pzc_fs *fs, struct pzc_inode *inode);

/* --- accessors for handlers ---------------------------------------- */

#define PZC_PROCFD_LEN 32

static inline struct pzc_fs *pzc_fs(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static inline struct pzc_inode *pzc_inode(fuse_req_t req, fuse_ino_t ino)
{
	if (ino == FUSE_ROOT_ID)
		return &pzc_fs(req)->root;
	return (struct pzc_inode *)(uintptr_t)ino;
}

/* The O_PATH fd of inode @ino, pinned until pzc_ifd_put(): >= 0 or
 * -errno (inode.c).  Taken as the server, before acting as a caller. */
static inline int pzc_ifd(fuse_req_t req, fuse_ino_t ino)
{
	return pzc_inode_fd(fuse_req_userdata(req), pzc_inode(req, ino));
}

static inline void pzc_ifd_put(fuse_req_t req, fuse_ino_t ino)
{
	pzc_inode_fd_put(fuse_req_userdata(req), pzc_inode(req, ino));
}

static inline fuse_ino_t pzc_ino(struct pzc_fs *fs, struct pzc_inode *inode)
{
	return inode == &fs->root ? FUSE_ROOT_ID : (fuse_ino_t)(uintptr_t)inode;
}

static inline struct pzc_file *pzc_file(struct fuse_file_info *fi)
{
	return (struct pzc_file *)(uintptr_t)fi->fh;
}

static inline struct pzc_dir *pzc_dir(struct fuse_file_info *fi)
{
	return (struct pzc_dir *)(uintptr_t)fi->fh;
}

static inline bool pzc_debug(fuse_req_t req)
{
	return pzc_fs(req)->cfg.debug;
}

/* /proc/self/fd/N: reaches the object of an O_PATH fd for the calls that
 * take no fd (xattrs, chmod, truncate, access, re-open). */
static inline void pzc_procfd(char buf[PZC_PROCFD_LEN], int fd)
{
	snprintf(buf, PZC_PROCFD_LEN, "/proc/self/fd/%d", fd);
}

/*
 * Errors: internal functions return 0 (or a count) or -errno; handlers turn
 * that into exactly one fuse_reply_*() (or fusezc_reply_*()).
 */

/* ops.c: the operations table, nodes and attributes */
void pzc_ops_init(struct fuse_lowlevel_ops *ops);
void pzc_entry_init(struct pzc_fs *fs, struct fuse_entry_param *e);
int pzc_lookup_at(fuse_req_t req, fuse_ino_t parent, int dirfd, const char *name,
		  struct fuse_entry_param *e);
int pzc_do_lookup(fuse_req_t req, fuse_ino_t parent, const char *name,
		  struct fuse_entry_param *e);
int pzc_caller_begin(fuse_req_t req, struct pzc_creds *creds);
void pzc_caller_end(fuse_req_t req, struct pzc_creds *creds);

/* dir.c, file.c: their handlers into the operations table */
void pzc_dir_ops(struct fuse_lowlevel_ops *ops);
void pzc_file_ops(struct fuse_lowlevel_ops *ops);
int pzc_openat(struct pzc_fs *fs, int dirfd, const char *name, int flags,
	       mode_t mode);

/* options.c */
void pzc_help(const char *prog);
int pzc_parse_options(struct fuse_args *args, struct pzc_cmdline *cl);
int pzc_validate(struct pzc_config *cfg, int *root_fd);

/* creds.c */
int pzc_creds_init(struct pzc_fs *fs);
void pzc_creds_destroy(struct pzc_fs *fs);
int pzc_creds_enter(fuse_req_t req, struct pzc_creds *saved, enum pzc_act act);
void pzc_creds_leave(fuse_req_t req, struct pzc_creds *saved);

/* lock.c */
int pzc_lock_init(struct pzc_fs *fs);
void pzc_lock_flock(fuse_req_t req, int fd, int op);
void pzc_lock_shutdown(struct pzc_fs *fs);

/* inode.c */
int pzc_itable_init(struct pzc_fs *fs, int root_fd);
void pzc_itable_destroy(struct pzc_fs *fs);
struct file_handle *pzc_handle_of(struct pzc_fs *fs, int fd, int *mount_id);
void pzc_note_mount(struct pzc_fs *fs, int mount_id, int fd,
		    struct file_handle *handle);
struct pzc_inode *pzc_inode_get(struct pzc_fs *fs, int fd, const struct stat *st,
				struct file_handle *handle, int mount_id,
				struct pzc_inode *parent, const char *name);
void pzc_inode_unnamed(struct pzc_fs *fs, struct pzc_inode *parent, int dfd,
		       const char *name);
void pzc_inode_named(struct pzc_fs *fs, struct pzc_inode *parent, int dfd,
		     const char *name);
void pzc_inode_ref(struct pzc_fs *fs, struct pzc_inode *inode);
void pzc_inode_unref(struct pzc_fs *fs, struct pzc_inode *inode, uint64_t n);
void pzc_inode_open(struct pzc_fs *fs, struct pzc_inode *inode);
void pzc_inode_close(struct pzc_fs *fs, struct pzc_inode *inode);
ino_t pzc_ino_number(struct pzc_fs *fs, dev_t dev, ino_t ino);
void pzc_stat_ino(struct pzc_fs *fs, struct stat *st);

#endif /* PZC_H */
