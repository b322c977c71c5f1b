// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * hello_fuse - a minimal libfuse3 low-level file system for the VM harness
 * self-test: one read-only file, /hello, containing "Hello World!\n".
 *
 * Usage: hello_fuse [-f] [-d] MOUNTPOINT
 */

#define FUSE_USE_VERSION 34

#include <fuse_lowlevel.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char hello_name[] = "hello";
static const char hello_str[] = "Hello World!\n";

static int hello_stat(fuse_ino_t ino, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	switch (ino) {
	case FUSE_ROOT_ID:
		st->st_mode = S_IFDIR | 0755;
		st->st_nlink = 2;
		return 0;
	case 2:
		st->st_mode = S_IFREG | 0444;
		st->st_nlink = 1;
		st->st_size = sizeof(hello_str) - 1;
		return 0;
	default:
		return -1;
	}
}

static void hello_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param e;

	if (parent != FUSE_ROOT_ID || strcmp(name, hello_name) != 0)
		return (void) fuse_reply_err(req, ENOENT);

	memset(&e, 0, sizeof(e));
	e.ino = 2;
	e.attr_timeout = 1.0;
	e.entry_timeout = 1.0;
	hello_stat(e.ino, &e.attr);
	fuse_reply_entry(req, &e);
}

static void hello_getattr(fuse_req_t req, fuse_ino_t ino,
			  struct fuse_file_info *fi)
{
	struct stat st;

	(void) fi;
	if (hello_stat(ino, &st) == -1)
		return (void) fuse_reply_err(req, ENOENT);
	fuse_reply_attr(req, &st, 1.0);
}

struct dirbuf {
	char *p;
	size_t size;
};

static int dirbuf_add(fuse_req_t req, struct dirbuf *b, const char *name,
		      fuse_ino_t ino)
{
	struct stat st = { .st_ino = ino };
	size_t old = b->size;
	char *p;

	b->size += fuse_add_direntry(req, NULL, 0, name, NULL, 0);
	p = realloc(b->p, b->size);
	if (!p)
		return -1;
	b->p = p;
	fuse_add_direntry(req, b->p + old, b->size - old, name, &st, b->size);
	return 0;
}

static void hello_readdir(fuse_req_t req, fuse_ino_t ino, size_t size,
			  off_t off, struct fuse_file_info *fi)
{
	struct dirbuf b = { 0 };

	(void) fi;
	if (ino != FUSE_ROOT_ID)
		return (void) fuse_reply_err(req, ENOTDIR);
	if (dirbuf_add(req, &b, ".", 1) || dirbuf_add(req, &b, "..", 1) ||
	    dirbuf_add(req, &b, hello_name, 2)) {
		free(b.p);
		return (void) fuse_reply_err(req, ENOMEM);
	}
	if ((size_t) off < b.size)
		fuse_reply_buf(req, b.p + off,
			       b.size - off < size ? b.size - off : size);
	else
		fuse_reply_buf(req, NULL, 0);
	free(b.p);
}

static void hello_open(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	if (ino != 2)
		return (void) fuse_reply_err(req, EISDIR);
	if ((fi->flags & O_ACCMODE) != O_RDONLY)
		return (void) fuse_reply_err(req, EACCES);
	fuse_reply_open(req, fi);
}

static void hello_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	size_t len = sizeof(hello_str) - 1;

	(void) ino;
	(void) fi;
	if ((size_t) off >= len)
		return (void) fuse_reply_buf(req, NULL, 0);
	fuse_reply_buf(req, hello_str + off,
		       len - off < size ? len - off : size);
}

static const struct fuse_lowlevel_ops hello_ops = {
	.lookup = hello_lookup,
	.getattr = hello_getattr,
	.readdir = hello_readdir,
	.open = hello_open,
	.read = hello_read,
};

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct fuse_cmdline_opts opts;
	struct fuse_session *se;
	int ret = 1;

	if (fuse_parse_cmdline(&args, &opts) != 0)
		return 1;
	if (opts.show_help || !opts.mountpoint) {
		printf("usage: %s [-f] [-d] MOUNTPOINT\n", argv[0]);
		ret = opts.show_help ? 0 : 1;
		goto err_out1;
	}

	se = fuse_session_new(&args, &hello_ops, sizeof(hello_ops), NULL);
	if (!se)
		goto err_out1;
	if (fuse_set_signal_handlers(se) != 0)
		goto err_out2;
	if (fuse_session_mount(se, opts.mountpoint) != 0)
		goto err_out3;
	fuse_daemonize(opts.foreground);
	ret = fuse_session_loop(se) ? 1 : 0;
	fuse_session_unmount(se);
err_out3:
	fuse_remove_signal_handlers(se);
err_out2:
	fuse_session_destroy(se);
err_out1:
	free(opts.mountpoint);
	fuse_opt_free_args(&args);
	return ret;
}
