// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * tarfs_index_test: the tarfs index parser without a mount.
 *
 *	tarfs_index_test check ARCHIVE       index it: 0, or 1 and the reason
 *	tarfs_index_test dump ARCHIVE        one line a name (for the tests)
 *	tarfs_index_test fuzz [-t SECONDS] [-s SEED] ARCHIVE...
 *
 * fuzz mutates the given archives (bit flips, bytes, truncation, size
 * fields, pax records; a mutated header's checksum is usually fixed so the
 * mutation gets past it), indexes each mutant from a memfd in-process, and
 * checks that the parser either refuses it or yields an index whose every
 * reachable member lies inside the archive: data ranges within the file
 * and in whole blocks after a header, parents that are directories,
 * names without '/', '.', '..' or empty.  Exit 1 on the first violation,
 * with the mutant saved as fuzz-failure.tar in the current directory.
 */
#include "index.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *type_name(uint32_t mode)
{
	switch (mode & S_IFMT) {
	case S_IFDIR: return "dir";
	case S_IFREG: return "file";
	case S_IFLNK: return "symlink";
	case S_IFCHR: return "chr";
	case S_IFBLK: return "blk";
	case S_IFIFO: return "fifo";
	default: return "?";
	}
}

static void print_path(const struct tarfs_index *ix, uint32_t n, FILE *f)
{
	if (n == 0 || n == TARFS_NONE)
		return;
	if (ix->nodes[n].parent != 0) {
		print_path(ix, ix->nodes[n].parent, f);
		fputc('/', f);
	}
	fputs(tarfs_name(ix, n), f);
}

static void dump_dir(const struct tarfs_index *ix, uint32_t d)
{
	for (uint32_t i = 0; i < ix->child_count[d]; i++) {
		uint32_t n = ix->children[ix->child_start[d] + i];
		const struct tarfs_node *in = &ix->nodes[ix->nodes[n].ino];

		print_path(ix, n, stdout);
		printf("\t%s\t%04o\t%u\t%u\t%" PRId64 ".%09u\t%" PRIu64 "\t%" PRIu64
		       "\t%u\t%u", type_name(in->mode), in->mode & 07777, in->uid,
		       in->gid, in->mtime, in->mtime_nsec, in->size, in->off, in->nlink,
		       ix->nodes[n].ino);
		if (S_ISLNK(in->mode))
			printf("\t%s", ix->arena + in->target);
		printf("\n");
		if (S_ISDIR(in->mode) && ix->nodes[n].ino == n)
			dump_dir(ix, n);
	}
}

static int load(const char *path, struct tarfs_index **ix)
{
	char err[512];
	int fd = open(path, O_RDONLY | O_CLOEXEC), res;

	if (fd < 0) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return -errno;
	}
	res = tarfs_index_build(fd, NULL, ix, err, sizeof(err));
	close(fd);
	if (res)
		fprintf(stderr, "%s: %s\n", path, err);
	return res;
}

/* ------------------------------------------------------------------ */
/* The invariants                                                      */

static const char *violation(const struct tarfs_index *ix)
{
	static char why[256];

	for (uint32_t d = 0; d < ix->nnodes; d++) {
		if (!S_ISDIR(ix->nodes[d].mode) || ix->nodes[d].ino != d)
			continue;
		if (d != 0 && ix->nodes[d].parent == TARFS_NONE)
			continue;	/* replaced: unreachable */
		for (uint32_t i = 0; i < ix->child_count[d]; i++) {
			uint32_t n = ix->children[ix->child_start[d] + i];
			const struct tarfs_node *in;
			const char *name;

			if (n >= ix->nnodes || ix->nodes[n].parent != d)
				return "a child that is not in its directory";
			name = tarfs_name(ix, n);
			if (!*name || strchr(name, '/') || !strcmp(name, ".") ||
			    !strcmp(name, "..")) {
				snprintf(why, sizeof(why), "bad name '%s'", name);
				return why;
			}
			if (tarfs_lookup(ix, d, name) != n)
				return "lookup does not find a listed child";
			if (ix->nodes[n].ino >= ix->nnodes)
				return "inode out of range";
			in = &ix->nodes[ix->nodes[n].ino];
			if (in->nlink == 0)
				return "nlink 0 on a reachable inode";
			if (S_ISREG(in->mode)) {
				if (in->off > ix->archive_size ||
				    in->size > ix->archive_size - in->off) {
					snprintf(why, sizeof(why), "member %s: [%" PRIu64 ", +%"
						 PRIu64 ") outside the archive (%" PRIu64 ")",
						 name, in->off, in->size, ix->archive_size);
					return why;
				}
				if (in->off % 512 || in->off < 512)
					return "data not after a header block";
			}
			if (S_ISLNK(in->mode) &&
			    (in->target >= ix->arena_len ||
			     strlen(ix->arena + in->target) != in->size))
				return "symlink target outside the arena";
		}
	}
	return NULL;
}

/* ------------------------------------------------------------------ */
/* Mutations                                                           */

static uint64_t rng;

static uint64_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

/* @v in octal into a field of @width bytes (width - 1 digits and a NUL) */
static void put_octal(unsigned char *dst, int width, uint64_t v)
{
	char tmp[32];

	snprintf(tmp, sizeof(tmp), "%0*" PRIo64, width - 1, v);
	memcpy(dst, tmp + strlen(tmp) - (size_t)(width - 1), (size_t)width - 1);
	dst[width - 1] = '\0';
}

static void fix_checksum(unsigned char *h)
{
	unsigned long sum = 0;

	memset(h + 148, ' ', 8);
	for (int i = 0; i < 512; i++)
		sum += h[i];
	put_octal(h + 148, 7, sum & 0777777);
	h[155] = ' ';
}

/* A header block of @buf (one that looks like one), or a random block. */
static size_t some_header(const unsigned char *buf, size_t len)
{
	size_t nblocks = len / 512;

	for (int tries = 0; tries < 16 && nblocks; tries++) {
		size_t b = (size_t)(rnd() % nblocks) * 512;

		if (!memcmp(buf + b + 257, "ustar", 5))
			return b;
	}
	return nblocks ? (size_t)(rnd() % nblocks) * 512 : 0;
}

static size_t mutate(unsigned char *buf, size_t len, size_t cap)
{
	size_t h = some_header(buf, len);
	int kind = (int)(rnd() % 8), n;
	bool fix = rnd() % 5 != 0;

	if (len < 512)
		return len;
	switch (kind) {
	case 0:		/* bit flips in a header */
		n = 1 + (int)(rnd() % 4);
		while (n--)
			buf[h + rnd() % 512] ^= (unsigned char)(1u << (rnd() % 8));
		break;
	case 1:		/* bit flips anywhere */
		n = 1 + (int)(rnd() % 8);
		while (n--)
			buf[rnd() % len] ^= (unsigned char)(1u << (rnd() % 8));
		fix = false;
		break;
	case 2:		/* truncation */
		return (size_t)(rnd() % len);
	case 3: {	/* the size field: octal */
		uint64_t v = rnd() % 3 ? rnd() % (len * 2 + 1) : rnd() >> (rnd() % 64);

		put_octal(buf + h + 124, 12, v & 077777777777ULL);
		break;
	}
	case 4:		/* the size field: base-256 */
		buf[h + 124] = rnd() % 2 ? 0x80 : 0xff;
		for (int i = 1; i < 12; i++)
			buf[h + 124 + i] = (unsigned char)rnd();
		break;
	case 5:		/* a typeflag */
		buf[h + 156] = "0125673LKxgSMV\0A"[rnd() % 16];
		break;
	case 6: {	/* pax records that lie: a size, a path, a length */
		static const char *recs[] = {
			"30 size=99999999999999999999\n", "11 size=0\n", "20 size=1048576\n",
			"15 path=../../x\n", "9 path=/\n", "99 path=short\n", "12 mtime=-1.5\n",
			"16 uid=4294967296\n", "5 a\n", "18 GNU.sparse.map=\n", "0 \n",
			"13 linkpath=\n",
		};
		const char *r = recs[rnd() % (sizeof(recs) / sizeof(recs[0]))];
		size_t at = h + 512;

		/* into a data block after a header, as a pax header's body */
		if (at + strlen(r) <= len) {
			memcpy(buf + at, r, strlen(r));
			if (rnd() % 2) {
				buf[h + 156] = 'x';
				put_octal(buf + h + 124, 12, strlen(r));
			}
		}
		break;
	}
	default:	/* random bytes in a header field */
		n = (int)(rnd() % 512);
		for (int i = 0; i < 1 + (int)(rnd() % 12) && n + i < 512; i++)
			buf[h + (size_t)n + (size_t)i] = (unsigned char)rnd();
		break;
	}
	if (fix)
		fix_checksum(buf + h);
	(void)cap;
	return len;
}

static int fuzz(int argc, char **argv)
{
	double seconds = 60;
	uint64_t seed = (uint64_t)time(NULL);
	unsigned char **seeds;
	size_t *lens, nseeds = 0;
	unsigned long iters = 0, refused = 0;
	struct timespec t0, t;
	int opt, memfd;

	while ((opt = getopt(argc, argv, "t:s:")) != -1) {
		if (opt == 't')
			seconds = atof(optarg);
		else if (opt == 's')
			seed = strtoull(optarg, NULL, 0);
		else
			return 2;
	}
	if (optind >= argc) {
		fprintf(stderr, "fuzz: no seed archives\n");
		return 2;
	}
	rng = seed ? seed : 1;
	printf("fuzz: seed %" PRIu64 ", %.0f s\n", seed, seconds);
	seeds = calloc((size_t)(argc - optind), sizeof(*seeds));
	lens = calloc((size_t)(argc - optind), sizeof(*lens));
	for (int i = optind; i < argc; i++) {
		FILE *f = fopen(argv[i], "rb");
		struct stat st;

		if (!f || fstat(fileno(f), &st) || !(seeds[nseeds] = malloc((size_t)st.st_size)) ||
		    fread(seeds[nseeds], 1, (size_t)st.st_size, f) != (size_t)st.st_size) {
			fprintf(stderr, "fuzz: %s: cannot read\n", argv[i]);
			return 2;
		}
		lens[nseeds++] = (size_t)st.st_size;
		fclose(f);
	}
	memfd = memfd_create("fuzz", MFD_CLOEXEC);
	if (memfd < 0)
		return 2;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		size_t s = (size_t)(rnd() % nseeds), len = lens[s];
		unsigned char *buf = malloc(len);
		struct tarfs_index *ix = NULL;
		const char *why;
		char err[512];
		int rounds = 1 + (int)(rnd() % 3), res;

		memcpy(buf, seeds[s], len);
		while (rounds--)
			len = mutate(buf, len, lens[s]);
		if (ftruncate(memfd, 0) || pwrite(memfd, buf, len, 0) != (ssize_t)len)
			return 2;
		res = tarfs_index_build(memfd, NULL, &ix, err, sizeof(err));
		iters++;
		if (res) {
			refused++;
			if (!*err) {
				fprintf(stderr, "fuzz: refused (%s) without a reason\n",
					strerror(-res));
				why = "no reason";
				goto bad;
			}
		} else if ((why = violation(ix)) != NULL) {
			fprintf(stderr, "fuzz: %s\n", why);
bad:
			{
				FILE *f = fopen("fuzz-failure.tar", "wb");

				if (f) {
					fwrite(buf, 1, len, f);
					fclose(f);
				}
			}
			fprintf(stderr, "fuzz: FAIL after %lu mutants (seed %" PRIu64
				"), mutant in fuzz-failure.tar\n", iters, seed);
			return 1;
		}
		tarfs_index_free(ix);
		free(buf);
		clock_gettime(CLOCK_MONOTONIC, &t);
		if ((double)(t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) / 1e9 >= seconds)
			break;
	}
	for (size_t i = 0; i < nseeds; i++)
		free(seeds[i]);
	free(seeds);
	free(lens);
	close(memfd);
	printf("fuzz: %lu mutants, %lu refused, %lu indexed; every indexed member "
	       "inside its archive\n", iters, refused, iters - refused);
	return 0;
}

int main(int argc, char **argv)
{
	struct tarfs_index *ix;

	if (argc >= 2 && !strcmp(argv[1], "fuzz"))
		return fuzz(argc - 1, argv + 1);
	if (argc != 3 || (strcmp(argv[1], "check") && strcmp(argv[1], "dump"))) {
		fprintf(stderr, "usage: %s check|dump ARCHIVE | fuzz [-t SECONDS] [-s SEED] "
			"ARCHIVE...\n", argv[0]);
		return 2;
	}
	if (load(argv[2], &ix))
		return 1;
	if (!strcmp(argv[1], "dump")) {
		dump_dir(ix, 0);
	} else {
		const char *why = violation(ix);

		printf("%" PRIu64 " members, %u nodes, %zu bytes of index\n", ix->members,
		       ix->nnodes, tarfs_index_bytes(ix));
		if (why) {
			fprintf(stderr, "%s: %s\n", argv[2], why);
			tarfs_index_free(ix);
			return 1;
		}
	}
	tarfs_index_free(ix);
	return 0;
}
