// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * zc_kernel_writes: IORING_OP_WRITE_SPLICE_BUF on the pages of FUSE_WRITE
 * requests (patches 18-19).  Every shape of write lands byte for byte on
 * the backing file, through the write-back cache or not; a borrower only
 * reads a write's pages; a reply never claims bytes no lending wrote.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "zc_test.h"

enum write_how { W_BUFFERED, W_DIRECT, W_APPEND, W_MMAP };

static const struct {
	const char *what;
	enum write_how how;
	off_t off;		/* W_APPEND: ignored */
	size_t len;
} write_ops[] = {
	{ "aligned 64 KiB", W_BUFFERED, 0, 65536 },
	{ "unaligned", W_BUFFERED, 4097, 5000 },
	{ "sub-page", W_BUFFERED, 8000, 100 },
	{ "page-crossing", W_BUFFERED, 3 * 4096 - 1000, 3000 },
	{ "1 MiB", W_BUFFERED, 1 << 20, 1 << 20 },
	{ "1 MiB + 3 unaligned", W_BUFFERED, (2 << 20) + 5, (1 << 20) + 3 },
	{ "O_DIRECT 256 KiB", W_DIRECT, 3 << 20, 256 << 10 },
	{ "O_DIRECT 4 KiB", W_DIRECT, 7 * 4096, 4096 },
	{ "mmap + msync", W_MMAP, 40960 + 100, 20000 },
	{ "extending", W_BUFFERED, WFILE_SIZE - 1000, 5000 },
	{ "append", W_APPEND, 0, 7000 },
	{ "sub-page at the new end", W_BUFFERED, WFILE_SIZE + 4000 + 10, 10 },
};

/*
 * (k) IORING_OP_WRITE_SPLICE_BUF (59) is offered, and like opcode 58 it
 * never calls into a file that does not lend.
 */
static int t_write_op(void)
{
	struct io_uring_probe *probe;
	struct io_uring ring;
	int iofd, p[2], ret;
	bool listed;

	CHECK(!io_uring_queue_init(4, &ring, 0), "io_uring_queue_init");
	probe = io_uring_get_probe_ring(&ring);
	CHECK(probe, "io_uring probe");
	listed = io_uring_opcode_supported(probe, FUSEZC_IORING_OP_WRITE_SPLICE_BUF);
	io_uring_free_probe(probe);
	iofd = open_io_file();
	CHECK(iofd >= 0 && !pipe2(p, O_CLOEXEC), "io file, pipe");
	ret = lend_once(&ring, FUSEZC_IORING_OP_WRITE_SPLICE_BUF, iofd, p[0], 0, 4096, 20);
	close(p[0]);
	close(p[1]);
	close(iofd);
	io_uring_queue_exit(&ring);
	say("  opcode 59: probe says %s, a pipe as lender: %d (%s)\n",
	    listed ? "supported" : "not supported", ret, strerror(-ret));
	CHECK(listed, "IORING_OP_WRITE_SPLICE_BUF (59) is not offered");
	CHECK(ret == -EOPNOTSUPP, "a pipe as lender: %d, want -EOPNOTSUPP", ret);
	return T_PASS;
}

/* Write @len bytes of @src to @fd at @off, all of them; 0 or -errno. */
static int write_all(int fd, const unsigned char *src, size_t len, off_t off, bool append)
{
	while (len) {
		ssize_t n = append ? write(fd, src, len) : pwrite(fd, src, len, off);

		if (n < 0)
			return -errno;
		if (!n)
			return -EIO;
		src += n;
		off += n;
		len -= n;
	}
	return 0;
}

/* One entry of write_ops through the mount; @model follows. */
static int do_write_op(const char *path, int i, unsigned char *model, off_t *size)
{
	size_t len = write_ops[i].len;
	off_t off = write_ops[i].how == W_APPEND ? *size : write_ops[i].off;
	unsigned char *buf;
	int fd, flags, ret = 0;

	if (posix_memalign((void **)&buf, 4096, len + 4096))
		return -ENOMEM;
	fill_pattern(buf, len, i);
	switch (write_ops[i].how) {
	case W_MMAP: {
		off_t start = off & ~(off_t)4095;
		size_t maplen = (off + len - start + 4095) & ~(size_t)4095;
		unsigned char *map;

		fd = open(path, O_RDWR);
		if (fd < 0)
			break;
		map = mmap(NULL, maplen, PROT_READ | PROT_WRITE, MAP_SHARED, fd, start);
		if (map == MAP_FAILED) {
			ret = -errno;
			break;
		}
		memcpy(map + (off - start), buf, len);
		if (msync(map, maplen, MS_SYNC))
			ret = -errno;
		munmap(map, maplen);
		break;
	}
	default:
		flags = O_WRONLY;
		if (write_ops[i].how == W_DIRECT)
			flags |= O_DIRECT;
		if (write_ops[i].how == W_APPEND)
			flags |= O_APPEND;
		fd = open(path, flags);
		if (fd < 0)
			break;
		ret = write_all(fd, buf, len, off, write_ops[i].how == W_APPEND);
		if (!ret && fsync(fd))
			ret = -errno;
	}
	if (fd < 0)
		ret = -errno;
	else if (close(fd) && !ret)
		ret = -errno;
	if (!ret) {
		memcpy(model + off, buf, len);
		if (off + (off_t)len > *size)
			*size = off + len;
	}
	free(buf);
	return ret;
}

/* The backing file, read directly, against @model. */
static int check_write_backing(const unsigned char *model, off_t size, const char *what)
{
	unsigned char *buf = malloc(WMODEL_SIZE);
	struct stat st;
	ssize_t n;
	int fd;

	CHECK(buf, "malloc");
	fd = open(wbacking, O_RDONLY | O_CLOEXEC);
	CHECK(fd >= 0 && !fstat(fd, &st), "%s: open %s: %s", what, wbacking, strerror(errno));
	n = pread(fd, buf, WMODEL_SIZE, 0);
	close(fd);
	if (st.st_size != size || n != size) {
		say("  %s: backing file has %lld bytes (read %zd), want %lld\n", what,
		    (long long)st.st_size, n, (long long)size);
		free(buf);
		return T_FAIL;
	}
	if (memcmp(buf, model, size)) {
		off_t i = 0;

		while (buf[i] == model[i])
			i++;
		say("  %s: wrong byte at %lld on the backing file\n", what, (long long)i);
		free(buf);
		return T_FAIL;
	}
	__sync_fetch_and_add(&bytes_verified, size);
	free(buf);
	return T_PASS;
}

/*
 * Every shape of write through a mount whose server takes zero-copy
 * writes (@zc) or not, with the write-back cache or without: the backing
 * file must end up with exactly the bytes written, and the counters must
 * say which way they went.
 */
static int run_writes(bool zc, bool writeback, const char *label)
{
	struct server srv = { .cfg = { .writable = true, .accept_zc_write = zc,
				       .writeback_cache = writeback } };
	unsigned char *model = malloc(WMODEL_SIZE);
	uint64_t want_flags;
	struct zc_stats st;
	char path[300];
	off_t size;
	int i, ret;

	CHECK(model, "malloc");
	CHECK(!make_write_backing(model, &size), "write backing: %s", strerror(errno));
	CHECK(!server_start(&srv, mnt, wbacking, MF_READ_ZC), "server_start");
	file_path(path, sizeof(path), mnt);
	ret = T_PASS;
	if (zc && !srv.sh->zc_write_accepted) {
		say("  %s: the kernel did not offer FUSE_ZERO_COPY_WRITE\n", label);
		ret = T_FAIL;
	}
	for (i = 0; ret == T_PASS && i < (int)(sizeof(write_ops) / sizeof(write_ops[0])); i++) {
		int err = do_write_op(path, i, model, &size);

		if (err) {
			say("  %s: %s: %s\n", label, write_ops[i].what, strerror(-err));
			ret = T_FAIL;
		}
	}
	if (ret == T_PASS && server_quiesce(&srv))
		ret = T_FAIL;
	if (ret == T_PASS && read_stats(mnt, &st)) {
		say("  %s: zerocopy_stats unreadable\n", label);
		ret = T_FAIL;
	}
	server_stop(&srv);
	if (ret == T_PASS)
		ret = check_write_backing(model, size, label);
	free(model);
	if (ret != T_PASS)
		return ret;

	say("  %s: %llu writes (%llu zero copy, %llu copied), kernel: zc_write_bytes %lld "
	    "copy_write_bytes %lld zc_lent_pages %lld, flags seen %#llx\n", label,
	    (unsigned long long)srv.sh->writes, (unsigned long long)srv.sh->zc_writes,
	    (unsigned long long)srv.sh->copy_writes, st.zc_write_bytes, st.copy_write_bytes,
	    st.zc_lent_pages, (unsigned long long)srv.sh->write_flags_seen);
	CHECK(!srv.sh->write_failures, "%llu lendings wrote less than asked, last %d",
	      (unsigned long long)srv.sh->write_failures, srv.sh->write_error);
	CHECK(st.zc_lent_pages == 0, "%lld pages still lent", st.zc_lent_pages);
	/* FUSE_WRITE_CACHE: writeback (the mmap write, or every one) was seen */
	want_flags = 1;
	if (zc)
		want_flags |= FUSEZC_WRITE_ZERO_COPY;
	CHECK((srv.sh->write_flags_seen & want_flags) == want_flags,
	      "write_flags seen %#llx, want %#llx among them",
	      (unsigned long long)srv.sh->write_flags_seen, (unsigned long long)want_flags);
	if (zc && auto_complete) {
		/* -a: the kernel answers a write whose lending wrote it all */
		say("  %s: %llu writes answered by the kernel\n", label,
		    (unsigned long long)srv.sh->zc_writes_answered);
		CHECK(srv.sh->zc_writes_answered == srv.sh->zc_writes,
		      "-a: the kernel answered %llu of %llu complete writes",
		      (unsigned long long)srv.sh->zc_writes_answered,
		      (unsigned long long)srv.sh->zc_writes);
	}
	if (zc) {
		CHECK(srv.sh->zc_writes && !srv.sh->copy_writes,
		      "zero copy: %llu writes copied", (unsigned long long)srv.sh->copy_writes);
		CHECK(st.copy_write_bytes == 0 &&
		      (uint64_t)st.zc_write_bytes == srv.sh->zc_write_bytes,
		      "kernel counted %lld zero-copy bytes (server wrote %llu), %lld copied",
		      st.zc_write_bytes, (unsigned long long)srv.sh->zc_write_bytes,
		      st.copy_write_bytes);
	} else {
		CHECK(!srv.sh->zc_writes && st.zc_write_bytes == 0 && st.copy_write_bytes > 0,
		      "copy: %llu zero-copy writes, kernel zc_write_bytes %lld copy %lld",
		      (unsigned long long)srv.sh->zc_writes, st.zc_write_bytes,
		      st.copy_write_bytes);
	}
	return T_PASS;
}

static int t_write_correctness(void)
{
	if (run_writes(true, false, "zero copy, write-through") ||
	    run_writes(true, true, "zero copy, write-back cache") ||
	    run_writes(false, false, "copy (capability not accepted)"))
		return T_FAIL;
	return T_PASS;
}

/*
 * One write through a server that misbehaves as @mode; returns the
 * writer's errno (0 if the write succeeded) in *@werr.
 */
static int misbehave_and_write(enum mf_write_mode mode, struct server *srv, int *werr)
{
	unsigned char *model = malloc(WMODEL_SIZE);
	char path[300];
	off_t size;
	int ret;

	CHECK(model, "malloc");
	CHECK(!make_write_backing(model, &size), "write backing");
	srv->cfg.writable = true;
	srv->cfg.accept_zc_write = true;
	CHECK(!server_start(srv, mnt, wbacking, MF_READ_ZC), "server_start");
	srv->sh->write_mode = mode;
	file_path(path, sizeof(path), mnt);
	/* 0: W_BUFFERED 64 KiB at 0 */
	*werr = -do_write_op(path, 0, model, &size);
	ret = server_quiesce(srv) ? T_FAIL : T_PASS;
	server_stop(srv);
	if (ret == T_PASS && !*werr)
		ret = check_write_backing(model, size, "after the write");
	free(model);
	return ret;
}

/*
 * (l) A borrower only ever reads a write's pages: READ_SPLICE_BUF on a
 * FUSE_WRITE is refused, and what the writer wrote reaches the file.
 */
static int t_write_direction(void)
{
	struct server srv = { 0 };
	int werr;

	CHECK(misbehave_and_write(MF_WRITE_WRONG_DIR, &srv, &werr) == T_PASS,
	      "the write after the refused lending");
	say("  READ_SPLICE_BUF on a FUSE_WRITE: %d (%s), the write: %s\n",
	    srv.sh->wrong_dir_write_res, strerror(-srv.sh->wrong_dir_write_res),
	    werr ? strerror(werr) : "ok");
	CHECK(srv.sh->wrong_dir_write_res == -EOPNOTSUPP,
	      "READ_SPLICE_BUF on a FUSE_WRITE: %d, want -EOPNOTSUPP",
	      srv.sh->wrong_dir_write_res);
	CHECK(!werr, "the write failed: %s", strerror(werr));
	return T_PASS;
}

/*
 * (m) The server never had a borrowed write's data: a reply claiming more
 * than its lendings wrote out is refused, and the writer gets EIO, not a
 * success for bytes nobody wrote.
 */
static int t_write_overclaim(void)
{
	static const struct { enum mf_write_mode mode; const char *what; } cases[] = {
		{ MF_WRITE_OVERCLAIM, "a page more than written" },
		{ MF_WRITE_NO_LEND, "everything, nothing lent" },
	};

	for (unsigned int i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct server srv = { 0 };
		int werr;

		CHECK(misbehave_and_write(cases[i].mode, &srv, &werr) == T_PASS, "%s",
		      cases[i].what);
		say("  reply claiming %s: reply errno %d (%s), writer: %s\n", cases[i].what,
		    srv.sh->bad_write_reply_errno, strerror(srv.sh->bad_write_reply_errno),
		    werr ? strerror(werr) : "success");
		CHECK(srv.sh->bad_write_replies == 1 && srv.sh->bad_write_reply_errno == EINVAL,
		      "%s: reply errno %d, want EINVAL", cases[i].what,
		      srv.sh->bad_write_reply_errno);
		CHECK(werr == EIO, "%s: the writer got %s, want EIO", cases[i].what,
		      werr ? strerror(werr) : "success");
	}
	return T_PASS;
}

/*
 * One write-through pwrite() of @len bytes at @off (O_DIRECT if @direct),
 * sent as one FUSE_WRITE, with fuse.zerocopy_write_min at @knob (-1: left
 * as it is): by the kernel's and the server's counters it must have been
 * lent (@want_lent) or have come with its data.  @model follows.
 */
static int small_write_case(struct server *srv, const char *path, long knob, off_t off,
			    size_t len, bool direct, bool want_lent, unsigned char *model,
			    off_t *size)
{
	uint64_t zc0 = srv->sh->zc_writes, cp0 = srv->sh->copy_writes, zcn, cpn;
	long long dz, dc, ds;
	struct zc_stats a, b;
	unsigned char *buf;
	char knob_text[32];
	int fd, ret;

	if (knob >= 0) {
		ret = set_zc_write_min(knob);
		CHECK(!ret, "%s: %s", ZC_WRITE_MIN_KNOB, strerror(-ret));
		snprintf(knob_text, sizeof(knob_text), "%ld", knob);
	} else {
		snprintf(knob_text, sizeof(knob_text), "(no such parameter)");
	}
	CHECK(!read_stats(mnt, &a), "zerocopy_stats: %s", strerror(errno));
	CHECK(!posix_memalign((void **)&buf, 4096, len + 4096), "posix_memalign");
	fill_pattern(buf, len, (unsigned int)(off / 4096 + len));
	fd = open(path, O_WRONLY | (direct ? O_DIRECT : 0));
	ret = fd < 0 ? -errno : write_all(fd, buf, len, off, false);
	if (fd >= 0)
		close(fd);
	if (!ret) {
		memcpy(model + off, buf, len);
		if (off + (off_t)len > *size)
			*size = off + len;
	}
	free(buf);
	CHECK(!ret, "%zu bytes at %lld: %s", len, (long long)off, strerror(-ret));
	CHECK(!read_stats(mnt, &b), "zerocopy_stats: %s", strerror(errno));
	dz = b.zc_write_bytes - a.zc_write_bytes;
	dc = b.copy_write_bytes - a.copy_write_bytes;
	ds = b.copy_write_small - a.copy_write_small;
	zcn = srv->sh->zc_writes - zc0;
	cpn = srv->sh->copy_writes - cp0;
	say("  %zu bytes%s, zerocopy_write_min %s: kernel zc_write_bytes +%lld, "
	    "copy_write_bytes +%lld, copy_write_small %s%lld; server: %llu lent, %llu with data\n",
	    len, direct ? " O_DIRECT" : "", knob_text, dz, dc, b.copy_write_small < 0 ? "(absent) " : "+",
	    b.copy_write_small < 0 ? 0 : ds, (unsigned long long)zcn, (unsigned long long)cpn);
	if (want_lent) {
		CHECK(dz == (long long)len && dc == 0 && zcn == 1 && cpn == 0,
		      "%zu bytes with zerocopy_write_min %s: want it lent", len, knob_text);
		CHECK(b.copy_write_small < 0 || ds == 0, "copy_write_small +%lld, want +0", ds);
	} else {
		CHECK(dz == 0 && dc == (long long)len && zcn == 0 && cpn == 1,
		      "%zu bytes with zerocopy_write_min %s: lent, want it sent with its data",
		      len, knob_text);
		CHECK(b.copy_write_small >= 0 && ds == 1,
		      "zerocopy_stats copy_write_small %s, want +1",
		      b.copy_write_small < 0 ? "absent" : "not +1");
	}
	return T_PASS;
}

/*
 * Issue 26 step 5: lending a page to write a few bytes costs more than
 * copying them, so a FUSE_WRITE of fewer bytes than fuse.zerocopy_write_min
 * (buffered or O_DIRECT) comes with its data, and zerocopy_stats'
 * copy_write_small counts it; one of at least that many is still lent; the
 * parameter is read at each write, and 0 lends every write.  The backing
 * file holds every byte written.
 */
static int t_write_small(void)
{
	struct server srv = { .cfg = { .writable = true, .accept_zc_write = true } };
	long dflt = zc_write_min_initial;	/* the kernel's default; -1: none */
	long min = dflt > 0 ? dflt : 4096;	/* writes below it must come with data */
	unsigned char *model = malloc(WMODEL_SIZE);
	const off_t step = 512 << 10;
	char path[300];
	off_t size;
	int ret = T_FAIL;

	CHECK(model, "malloc");
	say("  %s: %ld%s\n", ZC_WRITE_MIN_KNOB, dflt,
	    dflt < 0 ? " (no such parameter)" : " at boot");
	CHECK(dflt != 0, "fuse.zerocopy_write_min is 0 by default: every 4-byte write is lent");
	CHECK(min > 4 && min <= (long)step, "fuse.zerocopy_write_min %ld: a test for 4 < it <= %lld",
	      min, (long long)step);
	CHECK(!make_write_backing(model, &size), "write backing: %s", strerror(errno));
	CHECK(!server_start(&srv, mnt, wbacking, MF_READ_ZC), "server_start");
	file_path(path, sizeof(path), mnt);
	if (!srv.sh->zc_write_accepted)
		say("  the kernel did not offer FUSE_ZERO_COPY_WRITE\n");
	else if (!small_write_case(&srv, path, dflt, 0, 4, false, false, model, &size) &&
		 !small_write_case(&srv, path, dflt, step, min - 1, false, false, model,
				   &size) &&
		 !small_write_case(&srv, path, dflt, 2 * step, min, false, true, model, &size) &&
		 !small_write_case(&srv, path, dflt, 3 * step, 512, true, 512 >= min, model,
				   &size) &&
		 !small_write_case(&srv, path, 0, 4 * step + 7, 4, false, true, model, &size) &&
		 !small_write_case(&srv, path, 0, 5 * step, 512, true, true, model, &size) &&
		 !small_write_case(&srv, path, 100, 6 * step, 99, false, false, model, &size) &&
		 !small_write_case(&srv, path, 100, 7 * step + 3, 100, false, true, model, &size))
		ret = T_PASS;
	if (zc_write_min_initial >= 0)
		set_zc_write_min(0);	/* the program's setting (zc_main()) */
	if (server_quiesce(&srv))
		ret = T_FAIL;
	server_stop(&srv);
	if (ret == T_PASS)
		ret = check_write_backing(model, size, "small writes");
	free(model);
	CHECK(!srv.sh->write_failures, "%llu lendings wrote less than asked",
	      (unsigned long long)srv.sh->write_failures);
	return ret;
}

static const struct zc_subtest subtests[] = {
	/* the v2 lending contract, one per finding of issue 9 */
	{ "write_op", t_write_op, true },			/* k */
	{ "write_correctness", t_write_correctness, true },
	{ "write_direction", t_write_direction, true },		/* l */
	{ "write_overclaim", t_write_overclaim, true },		/* m */
	{ "write_small", t_write_small, true },		/* issue 26 step 5 */
};

int main(int argc, char **argv)
{
	return zc_main(argc, argv, subtests, ZC_ARRAY_SIZE(subtests));
}
