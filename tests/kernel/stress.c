// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * zc_kernel_stress: -d SECONDS (default 60) of everything at once, two
 * read servers and a write server lending at random and misbehaving at
 * random, killed and aborted under readers and writers that check every
 * byte (README.md says what a run must have exercised).
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "zc_test.h"

struct stress_reader {
	const char *paths[2];
	unsigned int seed;
	volatile int *stop;
	pthread_t tid;
	uint64_t reads, bytes, errors, wrong;
};

static void stress_signal(int sig) { (void)sig; }

/*
 * Random reads from either mount, buffered or O_DIRECT with a random iovec
 * shape; every byte that comes back is checked.  Errors are expected (the
 * servers are killed and aborted under it), wrong bytes never.
 */
static void *stress_reader_main(void *p)
{
	struct stress_reader *r = p;
	char *buf;
	int fd = -1, cur = -1;

	if (posix_memalign((void **)&buf, 4096, 1 << 20))
		return NULL;
	while (!*r->stop) {
		int which = rand_r(&r->seed) % 2;
		bool direct = rand_r(&r->seed) % 2;
		off_t off;
		size_t len;
		ssize_t n;

		if (fd >= 0 && (which != cur || !(rand_r(&r->seed) % 64))) {
			close(fd);
			fd = -1;
		}
		if (fd < 0) {
			fd = open(r->paths[which], O_RDONLY | (direct ? O_DIRECT : 0));
			if (fd < 0) {
				sleep_ms(5);
				continue;
			}
			cur = which;
			direct = fcntl(fd, F_GETFL) & O_DIRECT;
		} else {
			direct = fcntl(fd, F_GETFL) & O_DIRECT;
		}
		if (direct) {
			struct iovec iov[16];
			int i, cnt = 1 + rand_r(&r->seed) % 16;
			size_t at = 0;

			off = (rand_r(&r->seed) % (FILE_SIZE / 512)) * 512;
			for (i = 0; i < cnt; i++) {
				size_t seg = 512 * (1 + rand_r(&r->seed) % 128);

				if (at + seg > (1 << 20))
					break;
				iov[i].iov_base = buf + at;
				iov[i].iov_len = seg;
				at += seg;
			}
			len = at;
			n = preadv(fd, iov, i, off);
		} else {
			off = rand_r(&r->seed) % FILE_SIZE;
			len = 1 + rand_r(&r->seed) % (1 << 20);
			if (!(rand_r(&r->seed) % 8))
				posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
			n = pread(fd, buf, len, off);
		}
		if (n < 0) {
			r->errors++;
			close(fd);
			fd = -1;
			continue;
		}
		r->reads++;
		if (off + n > FILE_SIZE || memcmp(buf, ref + off, n)) {
			if (!r->wrong)
				say("  stress reader: wrong bytes at %lld+%zd (%s)\n",
				    (long long)off, n, direct ? "O_DIRECT" : "buffered");
			r->wrong++;
		}
		r->bytes += n;
	}
	if (fd >= 0)
		close(fd);
	free(buf);
	return NULL;
}

/*
 * Stress writes: each writer has its own 2 MiB of the write file and writes
 * whole 4 KiB blocks there, buffered or O_DIRECT; a block's content says
 * which write it came from.  What a write that was acknowledged put there
 * must be on the backing file at the end; a block a failed write touched is
 * never written again (the killed server's I/O may still land on it).
 */
#define SW_BLOCKS	512

struct stress_writer {
	const char *path;
	int idx;
	unsigned int seed;
	volatile int *stop;
	pthread_t tid;
	uint32_t gen[SW_BLOCKS];	/* 0: never acknowledged */
	bool poisoned[SW_BLOCKS];
	uint64_t writes, acked, errors;
};

static void sw_fill(unsigned char *blk, int writer, uint32_t gen, int block)
{
	fill_pattern(blk, 4096, (unsigned int)(writer << 24) ^ (gen << 10) ^ (unsigned int)block);
}

static void *stress_writer_main(void *p)
{
	struct stress_writer *sw = p;
	unsigned char *buf;
	uint32_t gen = 0;
	int fd = -1;

	if (posix_memalign((void **)&buf, 4096, 8 * 4096))
		return NULL;
	while (!*sw->stop) {
		unsigned int nb = 1 + rand_r(&sw->seed) % 8, first, i;
		bool bad = false;
		ssize_t n;

		if (fd < 0) {
			fd = open(sw->path, O_WRONLY | (rand_r(&sw->seed) % 2 ? O_DIRECT : 0));
			if (fd < 0) {
				sleep_ms(5);
				continue;
			}
		}
		first = (unsigned int)rand_r(&sw->seed) % (SW_BLOCKS - nb + 1);
		for (i = 0; i < nb; i++)
			bad |= sw->poisoned[first + i];
		if (bad)
			continue;
		gen++;
		for (i = 0; i < nb; i++)
			sw_fill(buf + i * 4096, sw->idx, gen, first + i);
		sw->writes++;
		n = pwrite(fd, buf, (size_t)nb * 4096,
			   ((off_t)sw->idx * SW_BLOCKS + first) * 4096);
		for (i = 0; i < nb; i++) {
			if (n >= (ssize_t)(i + 1) * 4096)
				sw->gen[first + i] = gen;
			else
				sw->poisoned[first + i] = true;
		}
		if (n == (ssize_t)nb * 4096) {
			sw->acked++;
		} else {
			sw->errors++;
			close(fd);
			fd = -1;
		}
	}
	if (fd >= 0)
		close(fd);
	free(buf);
	return NULL;
}

/* Every acknowledged block of @sw on the backing file; wrong blocks. */
static uint64_t stress_writer_check(const struct stress_writer *sw, int bfd)
{
	unsigned char got[4096], want[4096];
	uint64_t wrong = 0;

	for (int b = 0; b < SW_BLOCKS; b++) {
		if (!sw->gen[b] || sw->poisoned[b])
			continue;
		sw_fill(want, sw->idx, sw->gen[b], b);
		if (pread(bfd, got, 4096, ((off_t)sw->idx * SW_BLOCKS + b) * 4096) != 4096 ||
		    memcmp(got, want, 4096)) {
			if (!wrong)
				say("  stress writer %d: block %d is not what its acknowledged write put there\n",
				    sw->idx, b);
			wrong++;
		} else {
			__sync_fetch_and_add(&bytes_verified, 4096);
		}
	}
	return wrong;
}

static void stress_add(struct mf_stress *sum, const struct mf_stress *st)
{
	sum->reads += st->reads;
	sum->chunks += st->chunks;
	sum->zc_replies += st->zc_replies;
	sum->copy_replies += st->copy_replies;
	sum->early_accepted += st->early_accepted;
	sum->early_busy += st->early_busy;
	sum->overclaims_refused += st->overclaims_refused;
	sum->duplicates_refused += st->duplicates_refused;
	sum->unlent_refused += st->unlent_refused;
	sum->nonlenders_refused += st->nonlenders_refused;
	sum->resends += st->resends;
	sum->cancels += st->cancels;
	sum->chunks_failed += st->chunks_failed;
	sum->replies_gone += st->replies_gone;
	sum->auto_completed += st->auto_completed;
	sum->loop_chunks += st->loop_chunks;
	sum->loop_dio_chunks += st->loop_dio_chunks;
	sum->writes += st->writes;
	sum->write_chunks += st->write_chunks;
	sum->write_replies += st->write_replies;
	sum->write_auto_completed += st->write_auto_completed;
	sum->write_overclaims_refused += st->write_overclaims_refused;
	sum->write_unlent_refused += st->write_unlent_refused;
	sum->write_wrong_dir_refused += st->write_wrong_dir_refused;
	sum->write_failed += st->write_failed;
	sum->unexpected += st->unexpected;
	if (st->unexpected)
		say("  server: unexpected kernel answer: %s\n", st->last_unexpected);
}

/* Wait (bounded) until a connection has nothing lent and nothing waiting. */
static int stress_settled(const char *dir)
{
	char path[300], text[32];
	struct zc_stats s;
	int i, fd;
	ssize_t n;

	for (i = 0; i < 1000; i++) {
		if (read_stats_dir(dir, &s))
			return 0;	/* connection gone: nothing can be left */
		snprintf(path, sizeof(path), "%s/waiting", dir);
		fd = open(path, O_RDONLY);
		n = fd < 0 ? -1 : read(fd, text, sizeof(text) - 1);
		if (fd >= 0)
			close(fd);
		if (s.zc_lent_pages == 0 && n > 0 && atoi(text) == 0)
			return 0;
		sleep_ms(10);
	}
	say("  %s: zc_lent_pages %lld, waiting %s after 10 s\n", dir, s.zc_lent_pages,
	    n > 0 ? text : "?");
	return -1;
}

/* Start stress server @k: 0 and 1 serve reads, 2 writes. */
static int stress_server_start(struct server *srv, int k, const char *mp)
{
	int ret;

	if (k < 2)
		return server_start(srv, mp, backing, MF_READ_RANDOM);
	ret = server_start(srv, mp, wbacking, MF_READ_ZC);
	if (!ret)
		srv->sh->write_mode = MF_WRITE_RANDOM;
	return ret;
}

static int t_stress(void)
{
	struct server srv[3] = { { .cfg = { .threads = 3 } }, { .cfg = { .threads = 3 } },
				 { .cfg = { .threads = 2, .writable = true,
					    .accept_zc_write = true } } };
	const char *mps[3] = { mnt, mnt2, wmnt };
	char paths[3][300], dir[200];
	struct stress_reader readers[6];
	struct stress_writer writers[2];
	uint64_t writes = 0, acked = 0, werrors = 0, wwrong = 0;
	unsigned char *model = malloc(WMODEL_SIZE);
	off_t wsize;
	int bfd;
	struct mf_stress sum = { 0 };
	uint64_t kills = 0, aborts = 0, signals = 0, leaks = 0;
	uint64_t reads = 0, bytes = 0, errors = 0, wrong = 0;
	volatile int stop = 0;
	struct sigaction sa = { .sa_handler = stress_signal };
	double t0 = now(), deadline = t0 + stress_seconds;
	unsigned int seed = (unsigned int)time(NULL);
	int i, k, ret;

	sigaction(SIGUSR1, &sa, NULL);	/* no SA_RESTART: reads see EINTR */
	CHECK(model && !make_write_backing(model, &wsize), "write backing");
	free(model);
	for (k = 0; k < 3; k++) {
		if (parking_server(&srv[k], "stress"))	/* the loop device */
			return T_FAIL;
		ret = stress_server_start(&srv[k], k, mps[k]);
		CHECK(!ret, "server %d: %s", k, strerror(-ret));
		file_path(paths[k], sizeof(paths[k]), mps[k]);
	}
	CHECK(srv[2].sh->zc_write_accepted, "zero-copy writes not offered");
	for (i = 0; i < 6; i++) {
		readers[i] = (struct stress_reader){ .paths = { paths[0], paths[1] },
			.seed = seed + i, .stop = &stop };
		pthread_create(&readers[i].tid, NULL, stress_reader_main, &readers[i]);
	}
	for (i = 0; i < 2; i++) {
		memset(&writers[i], 0, sizeof(writers[i]));
		writers[i].path = paths[2];
		writers[i].idx = i;
		writers[i].seed = seed + 100 + i;
		writers[i].stop = &stop;
		pthread_create(&writers[i].tid, NULL, stress_writer_main, &writers[i]);
	}
	say("  %d s, seed %u, 2 read servers x 3 threads, 6 readers; 1 write server x 2 "
	    "threads, 2 writers\n", stress_seconds, seed);
	while (now() < deadline) {
		int event = rand_r(&seed) % 10;

		sleep_ms(100 + rand_r(&seed) % 900);
		if (event >= 4) {
			for (i = 0; i < 6; i++)
				if (rand_r(&seed) % 2 && !pthread_kill(readers[i].tid, SIGUSR1))
					signals++;
			continue;
		}
		k = rand_r(&seed) % 3;
		if (conn_dir(mps[k], dir, sizeof(dir)))
			dir[0] = 0;
		stress_add(&sum, &srv[k].sh->stress);
		if (event < 2) {
			kill(srv[k].pid, SIGKILL);
			waitpid(srv[k].pid, NULL, 0);
			srv[k].pid = 0;
			umount2(mps[k], MNT_DETACH);
			kills++;
		} else {
			char f[256];

			snprintf(f, sizeof(f), "%s/abort", dir);
			if (dir[0] && !write_file(f, "1"))
				aborts++;
			server_stop(&srv[k]);
		}
		/* every loan comes back and nothing is left waiting */
		if (dir[0] && stress_settled(dir))
			leaks++;
		ret = stress_server_start(&srv[k], k, mps[k]);
		CHECK(!ret, "server %d restart: %s", k, strerror(-ret));
	}
	stop = 1;
	for (i = 0; i < 2; i++)
		pthread_join(writers[i].tid, NULL);
	for (i = 0; i < 6; i++) {
		pthread_join(readers[i].tid, NULL);
		reads += readers[i].reads;
		bytes += readers[i].bytes;
		errors += readers[i].errors;
		wrong += readers[i].wrong;
	}
	for (k = 0; k < 3; k++) {
		if (conn_dir(mps[k], dir, sizeof(dir)))
			dir[0] = 0;
		stress_add(&sum, &srv[k].sh->stress);
		server_stop(&srv[k]);
		if (dir[0] && stress_settled(dir))
			leaks++;
	}
	/* every server is gone: nothing can land on the write file any more */
	bfd = open(wbacking, O_RDONLY | O_CLOEXEC);
	CHECK(bfd >= 0, "open %s: %s", wbacking, strerror(errno));
	for (i = 0; i < 2; i++) {
		writes += writers[i].writes;
		acked += writers[i].acked;
		werrors += writers[i].errors;
		wwrong += stress_writer_check(&writers[i], bfd);
	}
	close(bfd);
	__sync_fetch_and_add(&bytes_verified, bytes);
	say("  readers: %llu reads, %llu bytes checked, %llu errors (kills/aborts), %llu with wrong bytes\n",
	    (unsigned long long)reads, (unsigned long long)bytes,
	    (unsigned long long)errors, (unsigned long long)wrong);
	say("  events: %llu kill -9, %llu fusectl aborts, %llu signals to readers, %llu FUSE_NOTIFY_RESEND\n",
	    (unsigned long long)kills, (unsigned long long)aborts,
	    (unsigned long long)signals, (unsigned long long)sum.resends);
	say("  server: %llu reads, %llu chunks lent (%llu from the loop device, %llu O_DIRECT), %llu zero-copy and %llu copy replies, %llu answered by the kernel\n",
	    (unsigned long long)sum.reads, (unsigned long long)sum.chunks,
	    (unsigned long long)sum.loop_chunks, (unsigned long long)sum.loop_dio_chunks,
	    (unsigned long long)sum.zc_replies, (unsigned long long)sum.copy_replies,
	    (unsigned long long)sum.auto_completed);
	say("  refused as the contract says: %llu over-claims, %llu duplicates, %llu unlent zero-copy replies, %llu non-lenders; replies while lending: %llu taken, %llu refused\n",
	    (unsigned long long)sum.overclaims_refused, (unsigned long long)sum.duplicates_refused,
	    (unsigned long long)sum.unlent_refused, (unsigned long long)sum.nonlenders_refused,
	    (unsigned long long)sum.early_accepted, (unsigned long long)sum.early_busy);
	say("  %llu cancels (%llu chunks failed or cancelled), %llu replies to requests gone (resent/aborted)\n",
	    (unsigned long long)sum.cancels, (unsigned long long)sum.chunks_failed,
	    (unsigned long long)sum.replies_gone);
	say("  writers: %llu writes, %llu acknowledged (every block of them checked), %llu failed "
	    "(kills/aborts/refused replies), %llu blocks not as acknowledged\n",
	    (unsigned long long)writes, (unsigned long long)acked,
	    (unsigned long long)werrors, (unsigned long long)wwrong);
	say("  write server: %llu writes, %llu chunks lent, %llu replies, %llu answered by the "
	    "kernel; refused as the contract says: %llu over-claims, %llu replies without a "
	    "lending, %llu READ_SPLICE_BUF on a write; %llu lendings failed\n",
	    (unsigned long long)sum.writes, (unsigned long long)sum.write_chunks,
	    (unsigned long long)sum.write_replies, (unsigned long long)sum.write_auto_completed,
	    (unsigned long long)sum.write_overclaims_refused,
	    (unsigned long long)sum.write_unlent_refused,
	    (unsigned long long)sum.write_wrong_dir_refused,
	    (unsigned long long)sum.write_failed);
	say("  unexpected kernel answers %llu, connections left with loans or waiters %llu, %.0f s\n",
	    (unsigned long long)sum.unexpected, (unsigned long long)leaks, now() - t0);
	CHECK(!wrong, "%llu reads returned wrong bytes", (unsigned long long)wrong);
	CHECK(!wwrong, "%llu acknowledged blocks lost or wrong", (unsigned long long)wwrong);
	CHECK(acked && sum.write_chunks && sum.write_auto_completed && sum.write_replies &&
	      sum.write_overclaims_refused && sum.write_unlent_refused &&
	      sum.write_wrong_dir_refused,
	      "the writes did not exercise every event (acknowledged %llu, chunks %llu, "
	      "kernel-answered %llu, replies %llu, over-claims %llu, unlent %llu, wrong "
	      "direction %llu)", (unsigned long long)acked,
	      (unsigned long long)sum.write_chunks, (unsigned long long)sum.write_auto_completed,
	      (unsigned long long)sum.write_replies,
	      (unsigned long long)sum.write_overclaims_refused,
	      (unsigned long long)sum.write_unlent_refused,
	      (unsigned long long)sum.write_wrong_dir_refused);
	CHECK(!sum.unexpected, "%llu kernel answers broke the contract", (unsigned long long)sum.unexpected);
	CHECK(!leaks, "%llu connections kept loans or waiters", (unsigned long long)leaks);
	/* a stress that exercised nothing proves nothing */
	CHECK(reads && sum.zc_replies && sum.chunks && sum.overclaims_refused &&
	      sum.duplicates_refused && sum.cancels && sum.resends && kills + aborts &&
	      sum.auto_completed && sum.loop_chunks && sum.loop_dio_chunks,
	      "the run did not exercise every event (reads %llu, zc %llu, kernel-answered %llu, loop-device chunks %llu, O_DIRECT %llu, overclaims %llu, duplicates %llu, cancels %llu, resends %llu, faults %llu)",
	      (unsigned long long)reads, (unsigned long long)sum.zc_replies,
	      (unsigned long long)sum.auto_completed, (unsigned long long)sum.loop_chunks,
	      (unsigned long long)sum.loop_dio_chunks,
	      (unsigned long long)sum.overclaims_refused, (unsigned long long)sum.duplicates_refused,
	      (unsigned long long)sum.cancels, (unsigned long long)sum.resends,
	      (unsigned long long)(kills + aborts));
	return T_PASS;
}

static const struct zc_subtest subtests[] = {
	{ "stress", t_stress, true },		/* everything at once, -d SECONDS */
};

int main(int argc, char **argv)
{
	return zc_main(argc, argv, subtests, ZC_ARRAY_SIZE(subtests));
}
