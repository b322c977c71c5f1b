// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * zc_check FILE SIZE: verify a zc_hellofs file byte for byte: a sequential
 * read in 1 MiB chunks, preads at unaligned offsets, reads crossing and
 * past EOF, 1 MiB preads, and concurrent random preads from four threads.
 * zc_check --direct=N FILE SIZE: N threads, each with its own O_DIRECT
 * descriptor, 64 preads of 128 KiB at random aligned offsets each (the
 * reader's own pages are lent).
 * Exit 0 when every byte matches.
 */
#include "zc_pattern.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MIB (1024 * 1024)

static const char *path;
static uint64_t size;
static int fd;

static int verify(const unsigned char *buf, uint64_t off, size_t len, const char *what)
{
	for (size_t i = 0; i < len; i++) {
		if (buf[i] != zc_pattern_byte(off + i)) {
			fprintf(stderr, "zc_check: %s: %s: byte %" PRIu64
				" is 0x%02x, want 0x%02x\n", path, what, off + i,
				buf[i], zc_pattern_byte(off + i));
			return -1;
		}
	}
	return 0;
}

/* pread @len at @off, expect min(len, size - off) bytes of the pattern. */
static int check_pread(int fd, uint64_t off, size_t len, unsigned char *buf)
{
	size_t want = off >= size ? 0 : (size - off < len ? (size_t)(size - off) : len);
	size_t got = 0;

	while (got < len) {
		ssize_t n = pread(fd, buf + got, len - got, (off_t)(off + got));

		if (n < 0) {
			if (errno == EINTR)
				continue;
			fprintf(stderr, "zc_check: %s: pread(%" PRIu64 ", %zu): %s\n",
				path, off, len, strerror(errno));
			return -1;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	if (got != want) {
		fprintf(stderr, "zc_check: %s: pread(%" PRIu64 ", %zu) gave %zu bytes, want %zu\n",
			path, off, len, got, want);
		return -1;
	}
	return verify(buf, off, got, "pread");
}

static int check_sequential(unsigned char *buf)
{
	uint64_t total = 0;
	ssize_t n;

	if (lseek(fd, 0, SEEK_SET) != 0)
		return -1;
	while ((n = read(fd, buf, MIB)) > 0) {
		if (verify(buf, total, (size_t)n, "sequential read") != 0)
			return -1;
		total += (uint64_t)n;
	}
	if (n < 0) {
		fprintf(stderr, "zc_check: %s: read: %s\n", path, strerror(errno));
		return -1;
	}
	if (total != size) {
		fprintf(stderr, "zc_check: %s: read %" PRIu64 " bytes, want %" PRIu64 "\n",
			path, total, size);
		return -1;
	}
	return 0;
}

#define DIRECT_CHUNK	(128 * 1024)
static bool direct;	/* --direct: aligned 128 KiB preads with O_DIRECT */

/* 100 random preads (64 aligned ones with --direct) on a descriptor of its own. */
static void *random_reader(void *arg)
{
	unsigned int seed = (unsigned int)(uintptr_t)arg;
	uint64_t chunks = (size + DIRECT_CHUNK - 1) / DIRECT_CHUNK;
	int lfd = open(path, O_RDONLY | (direct ? O_DIRECT : 0));
	intptr_t res = 0;
	void *buf = NULL;

	if (lfd < 0 || posix_memalign(&buf, 4096, 256 * 1024) != 0) {
		fprintf(stderr, "zc_check: %s: %s\n", path, strerror(errno));
		res = -1;
		goto out;
	}
	for (int i = 0; i < (direct ? 64 : 100) && res == 0; i++) {
		uint64_t off = (uint64_t)rand_r(&seed) % (size + 8192);
		size_t len = (size_t)rand_r(&seed) % (256 * 1024) + 1;

		if (direct) {
			off = (uint64_t)rand_r(&seed) % chunks * DIRECT_CHUNK;
			len = DIRECT_CHUNK;
		}
		if (check_pread(lfd, off, len, buf) != 0)
			res = -1;
	}
out:
	if (lfd >= 0)
		close(lfd);
	free(buf);
	return (void *)res;
}

static int check_direct(unsigned int nthreads)
{
	pthread_t threads[64];
	int failed = 0;

	if (nthreads == 0 || nthreads > 64)
		return -1;
	for (uintptr_t i = 0; i < nthreads; i++)
		if (pthread_create(&threads[i], NULL, random_reader,
				   (void *)(i + 1 + (uintptr_t)getpid())) != 0)
			return -1;
	for (unsigned int i = 0; i < nthreads; i++) {
		void *res;

		pthread_join(threads[i], &res);
		failed |= res != NULL;
	}
	return failed ? -1 : 0;
}

int main(int argc, char *argv[])
{
	const struct { uint64_t off; size_t len; } cases[] = {
		{ 0, 1 }, { 1, 4095 }, { 4095, 2 }, { 4097, 65536 },
		{ 123457, MIB }, { MIB - 1, MIB + 2 }, { 0, MIB }, { 2 * MIB, MIB },
	};
	unsigned char *buf = malloc(2 * MIB + 4096);
	pthread_t threads[4];
	struct stat st;
	int failed = 0;

	unsigned int nthreads_direct = 0;

	if (argc == 4 && sscanf(argv[1], "--direct=%u", &nthreads_direct) == 1) {
		argv++;
		argc--;
	}
	if (argc != 3 || buf == NULL) {
		fprintf(stderr, "usage: zc_check [--direct=THREADS] FILE SIZE\n");
		return 2;
	}
	path = argv[1];
	size = strtoull(argv[2], NULL, 0);
	fd = open(path, O_RDONLY);
	if (fd < 0 || fstat(fd, &st) != 0) {
		fprintf(stderr, "zc_check: %s: %s\n", path, strerror(errno));
		return 1;
	}
	if ((uint64_t)st.st_size != size) {
		fprintf(stderr, "zc_check: %s: size %lld, want %" PRIu64 "\n",
			path, (long long)st.st_size, size);
		return 1;
	}

	if (nthreads_direct) {
		close(fd);
		free(buf);
		direct = true;
		if (check_direct(nthreads_direct) != 0)
			return 1;
		printf("zc_check: %s: O_DIRECT, %u threads: ok\n", path, nthreads_direct);
		return 0;
	}
	failed |= check_sequential(buf);
	posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		failed |= check_pread(fd, cases[i].off, cases[i].len, buf);
	/* Around and past EOF. */
	failed |= check_pread(fd, size - 100, 4096, buf);
	failed |= check_pread(fd, size - 1, MIB, buf);
	failed |= check_pread(fd, size - 4097, 8192, buf);
	failed |= check_pread(fd, size, 4096, buf);
	failed |= check_pread(fd, size + 4096, 10, buf);

	posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
	for (uintptr_t i = 0; i < 4; i++)
		if (pthread_create(&threads[i], NULL, random_reader, (void *)(i + 1)) != 0)
			return 1;
	for (int i = 0; i < 4; i++) {
		void *res;

		pthread_join(threads[i], &res);
		failed |= res != NULL;
	}
	close(fd);
	free(buf);
	if (failed)
		return 1;
	printf("zc_check: %s: ok\n", path);
	return 0;
}
