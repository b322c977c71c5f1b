// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * passthrough_zc options: the fuse_opt table, --help from one table of
 * option docs (the man page and README follow it; tests/passthrough/
 * test_docs.py checks all three agree), and the checks made before
 * anything is mounted.
 */
#include "pzc.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The kernel takes a max_write below 4096 as 4096 (fuse_init's clamp) and
 * sends WRITEs of that size. */
#define PZC_MIN_MAX_WRITE 4096

#define PZC_OPT(t, m, v) { t, offsetof(struct pzc_cmdline, cfg.m), v }

static const struct fuse_opt pzc_opts[] = {
	PZC_OPT("source=%s", source, 0),
	PZC_OPT("zerocopy", mode, SRV_MODE_ZEROCOPY),
	PZC_OPT("zerocopy=required", mode, SRV_MODE_ZEROCOPY_REQUIRED),
	PZC_OPT("splice", mode, SRV_MODE_SPLICE),
	PZC_OPT("copy", mode, SRV_MODE_COPY),
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
	PZC_OPT("server_replies", server_replies, 1),
	PZC_OPT("sync_lending", sync_lending, 1),
	PZC_OPT("ring_read", ring_read, 1),
	PZC_OPT("zerocopy_write", zerocopy_write, 1),
	PZC_OPT("no_zerocopy_write", zerocopy_write, 0),
	PZC_OPT("noatime", noatime, 1),
	FUSE_OPT_KEY("noatime", FUSE_OPT_KEY_KEEP),	/* also a mount option */
	PZC_OPT("max_read=%u", max_read, 0),
	FUSE_OPT_KEY("max_read=", FUSE_OPT_KEY_KEEP),	/* also a mount option */
	PZC_OPT("max_readahead=%u", max_readahead, 0),
	PZC_OPT("max_write=%u", max_write, 0),
	PZC_OPT("max_write=", max_write_set, 1),
	PZC_OPT("threads=%u", threads, 0),
	PZC_OPT("stats", stats, 1),
	{ "fsname=", offsetof(struct pzc_cmdline, pos.has_fsname), 1 },
	FUSE_OPT_KEY("fsname=", FUSE_OPT_KEY_KEEP),
	FUSE_OPT_END
};

/*
 * The one source of the option docs: --help prints it; the man page
 * (docs/passthrough_zc.1) and passthrough/README.md document the same
 * names, which tests/passthrough/test_docs.py checks against this table
 * and pzc_opts.  "[no_]x" stands for x and no_x.
 */
static const struct srv_option_doc pzc_option_docs[] = {
	{ "source=DIR", "directory to mirror (instead of SOURCE)" },
	{ "zerocopy", "zero-copy reads and writes, falling back to splice/copy (default)" },
	{ "zerocopy=required", "refuse to run unless the kernel offers zero copy" },
	{ "splice", "splice reads into /dev/fuse" },
	{ "copy", "read into a buffer and copy" },
	{ "[no_]passthrough", "kernel FUSE passthrough (Linux 6.9+, CAP_SYS_ADMIN)" },
	{ "cache=never|auto|always", "caching policy (default: auto)" },
	{ "timeout=SECONDS", "entry/attribute timeout (default from cache=)" },
	{ "direct_io", "bypass the page cache for all files" },
	{ "[no_]writeback", "writeback cache (not with passthrough)" },
	{ "[no_]flock", "flock() on the source (default) or in the kernel only" },
	{ "[no_]xattr", "extended attributes (default: on)" },
	{ "[no_]posix_acl", "POSIX ACLs checked by the kernel too (default: on with xattr)" },
	{ "[no_]direct_source", "O_DIRECT reads of the source (default: on a block device)" },
	{ "server_replies", "zerocopy: the server writes each reply, not the kernel" },
	{ "sync_lending", "zerocopy: wait for each lending before the next request" },
	{ "ring_read", "zerocopy: read requests through io_uring with the lendings (one system call)" },
	{ "[no_]zerocopy_write", "zerocopy: writes from the writer's pages too (default: on)" },
	{ "noatime", "do not update access times (source opened O_NOATIME)" },
	{ "max_read=N", "largest READ request (bytes)" },
	{ "max_readahead=N", "read-ahead (bytes; default 1 MiB as root, else 128 KiB)" },
	{ "max_write=N", "largest WRITE request and READ size (bytes)" },
	{ "threads=N", "worker threads (as -o max_threads=N)" },
	{ "stats", "print read statistics to stderr at unmount" },
};

void pzc_help(const char *prog)
{
	srv_help(prog, pzc_option_docs, sizeof(pzc_option_docs) / sizeof(pzc_option_docs[0]));
}

static int pzc_opt_proc(void *data, const char *arg, int key,
			struct fuse_args *outargs)
{
	struct pzc_cmdline *cl = data;

	(void)outargs;
	return srv_args_proc(&cl->pos, arg, key);
}

/*
 * Parse our -o options and the non-option arguments: SOURCE moves into
 * cl->cfg.source, MOUNTPOINT is left in @args for fuse_parse_cmdline().
 * 0, or -EINVAL after one line on stderr (libfuse prints its own).
 */
int pzc_parse_options(struct fuse_args *args, struct pzc_cmdline *cl)
{
	cl->cfg.cache = PZC_CACHE_AUTO;
	cl->cfg.flock = 1;
	cl->cfg.xattr = 1;
	cl->cfg.direct_source = -1;
	cl->cfg.zerocopy_write = -1;
	cl->cfg.posix_acl = -1;
	if (fuse_opt_parse(args, cl, pzc_opts, pzc_opt_proc) == -1)
		return -EINVAL;
	return srv_args_finish(&cl->pos, args, &cl->cfg.source);
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
 * MOUNTPOINT /dev/fd/N: a /dev/fuse fd the caller has mounted already
 * (mount.fuse3 -o drop_privileges); libfuse serves it instead of mounting.
 * It is no path: there is no directory to check.
 */
static bool pzc_premounted(const char *mountpoint)
{
	return !strncmp(mountpoint, "/dev/fd/", 8);
}

/*
 * A SOURCE that contains the MOUNTPOINT would have the server look itself
 * up (a worker waiting on its own mount: a deadlock, and loops for find);
 * a MOUNTPOINT that contains SOURCE hides SOURCE behind the mount.  0, or
 * one line and -EINVAL.
 */
static int pzc_check_nesting(const struct pzc_config *cfg)
{
	char src[PATH_MAX], mnt[PATH_MAX];

	if (!realpath(cfg->source, src) || !realpath(cfg->mountpoint, mnt))
		return 0;	/* checked and reported by the caller */
	if (pzc_path_within(mnt, src)) {
		fprintf(stderr, "passthrough_zc: source %s contains the mountpoint "
			"%s (the file system would serve itself)\n", src, mnt);
		return -EINVAL;
	}
	if (pzc_path_within(src, mnt)) {
		fprintf(stderr, "passthrough_zc: mountpoint %s contains the source "
			"%s (the mount would hide it)\n", mnt, src);
		return -EINVAL;
	}
	return 0;
}

/* The mountpoint is a directory, not a mount already; 0 or one line and
 * -errno. */
static int pzc_check_mountpoint(const struct pzc_config *cfg)
{
	struct statx stx;

	if (statx(AT_FDCWD, cfg->mountpoint, 0, STATX_TYPE | STATX_INO, &stx) == -1) {
		int err = errno;

		fprintf(stderr, "passthrough_zc: mountpoint %s: %s\n",
			cfg->mountpoint, strerror(err));
		return -err;
	}
	if (!S_ISDIR(stx.stx_mode)) {
		fprintf(stderr, "passthrough_zc: mountpoint %s: not a directory\n",
			cfg->mountpoint);
		return -ENOTDIR;
	}
	if ((stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) &&
	    (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT)) {
		fprintf(stderr, "passthrough_zc: mountpoint %s is busy "
			"(already a mount point)\n", cfg->mountpoint);
		return -EBUSY;
	}
	return pzc_check_nesting(cfg);
}

/* The options that cannot go together; 0 or one line and -EINVAL. */
static int pzc_check_combinations(const struct pzc_config *cfg)
{
	if (cfg->posix_acl > 0 && !cfg->xattr) {
		fprintf(stderr, "passthrough_zc: -o posix_acl needs extended "
			"attributes (drop -o no_xattr)\n");
		return -EINVAL;
	}
	if (cfg->passthrough && cfg->writeback) {
		fprintf(stderr, "passthrough_zc: -o passthrough and -o writeback "
			"cannot be combined (the kernel refuses passthrough "
			"with a writeback cache)\n");
		return -EINVAL;
	}
	if (cfg->timeout_set && cfg->timeout < 0) {
		fprintf(stderr, "passthrough_zc: negative timeout\n");
		return -EINVAL;
	}
	/* The kernel sends a page per WRITE at least: libfuse's buffer would
	 * be too small for the first one, and the loop would end. */
	if (cfg->max_write_set && cfg->max_write < PZC_MIN_MAX_WRITE) {
		fprintf(stderr, "passthrough_zc: -o max_write=%u is below %u bytes "
			"(the kernel's smallest WRITE)\n", cfg->max_write,
			PZC_MIN_MAX_WRITE);
		return -EINVAL;
	}
	return 0;
}

/*
 * Everything checked before mounting: nothing is mounted or touched when
 * this fails.  0 with the source's O_PATH fd in *@root_fd, or one line on
 * stderr and -errno.
 */
int pzc_validate(struct pzc_config *cfg, int *root_fd)
{
	struct stat st;
	int fd, err;

	if (!cfg->source) {
		fprintf(stderr, "passthrough_zc: no source directory "
			"(usage: passthrough_zc [options] SOURCE MOUNTPOINT)\n");
		return -EINVAL;
	}
	fd = open(cfg->source, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fd == -1) {
		err = errno;
		fprintf(stderr, "passthrough_zc: source %s: %s\n", cfg->source,
			err == ENOTDIR ? "not a directory" : strerror(err));
		return -err;
	}
	/* Opening by path needs no permission on the last component: another
	 * user's FUSE mount (no allow_other) opens, and then refuses fstat. */
	if (fstat(fd, &st) == -1) {
		err = errno;
		fprintf(stderr, "passthrough_zc: source %s: cannot stat it: %s%s\n",
			cfg->source, strerror(err), err == EACCES ?
			" (another user's FUSE mount?)" : "");
		close(fd);
		return -err;
	}
	if (!S_ISDIR(st.st_mode)) {
		fprintf(stderr, "passthrough_zc: source %s: not a directory\n",
			cfg->source);
		close(fd);
		return -ENOTDIR;
	}
	err = pzc_premounted(cfg->mountpoint) ? 0 : pzc_check_mountpoint(cfg);
	if (!err && access("/dev/fuse", R_OK | W_OK) == -1) {
		err = -errno;
		fprintf(stderr, "passthrough_zc: cannot use /dev/fuse: %s\n",
			strerror(-err));
	}
	if (!err)
		err = pzc_check_combinations(cfg);
	if (err) {
		close(fd);
		return err;
	}
	*root_fd = fd;
	return 0;
}
