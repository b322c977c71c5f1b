// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * The harness every test program of tests/kernel/ shares: option parsing
 * (-a -v -r -d), the scratch directory and its mounts, minifuse servers,
 * fusectl and zerocopy_stats, checked reads, the watchdog, and the main
 * loop that runs a program's table of subtests (zc_main()).  It knows no
 * topic: a program is a table of { "name", fn, needs_zc } and a main().
 */
#ifndef ZC_TEST_H
#define ZC_TEST_H

#include <errno.h>
#include <liburing.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

#include "fuse_zc_kabi.h"
#include "minifuse.h"

#define T_PASS 0
#define T_FAIL 1
#define T_SKIP 77

#define FILE_SIZE	((off_t)(8 << 20) + 1234)	/* not page aligned */
#define HOLE_START	(2u << 20)
#define HOLE_END	(3u << 20)

/* A subtest fails with a message saying where and why. */
#define CHECK(cond, ...) do {						\
	if (!(cond)) {							\
		say("  FAIL %s:%d: ", __func__, __LINE__);		\
		say(__VA_ARGS__);					\
		say("\n");						\
		return T_FAIL;						\
	}								\
} while (0)

/* The write subtests' backing file (wbacking) and their model of it. */
#define WFILE_SIZE	((off_t)(4 << 20))
#define WMODEL_SIZE	(WFILE_SIZE + (1 << 20))

/* ------------------------------------------------------------- options */

extern int verbose;			/* -v */
extern int rounds;			/* -r: rounds of the loops (default 100) */
extern int stress_seconds;		/* -d: the stress's duration (default 60) */
/* -a: every server lends with IORING_SPLICE_BUF_COMPLETE */
extern bool auto_complete;

/*
 * Counted across subtests: the bytes checked (printed at the end).  Reads
 * the kernel answered although the contract left them to the server, and
 * parks whose gate did not open, are counted in server_stop() and fail
 * the subtest that ran the server.
 */
extern uint64_t bytes_verified;

/* ------------------------------------------------ the scratch directory */

extern char workdir[];
extern char backing[128], mnt[128], mnt2[128], slow_backing[160], slow_mnt[128];
extern char resend_mnt[128], io_path[128], loop_node[128];
extern char wbacking[128];	/* the write subtests' own backing file */
extern char wmnt[128];		/* stress: the mount of the writes */
extern char ovl_lower[2][128], ovl_mnt[128], ovl_file[160];
extern unsigned char *ref;	/* the backing file's bytes */

/* ------------------------------------------------------------- helpers */

void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void sleep_ms(unsigned int ms);
double now(void);
void drop_caches(void);
int write_file(const char *path, const char *text);
int read_direct(const char *path, unsigned char *out, size_t len);
int make_write_backing(unsigned char *model, off_t *size);	/* model, size may be NULL */
void fill_pattern(unsigned char *buf, size_t len, unsigned int seed);

/* Poll @cond every 2 ms for at most @seconds; its last value (evaluated once a try). */
#define WAIT_UNTIL(cond, seconds) ({					\
	double _t0 = now();						\
	bool _ok;							\
									\
	while (!(_ok = (cond)) && now() - _t0 < (seconds))		\
		sleep_ms(2);						\
	_ok;								\
})

/* --------------------------------------------- fusectl, zerocopy_stats */

struct zc_stats {
	long long zc_read_bytes, copy_read_bytes, zc_refused, zc_lent_pages;
	long long zc_completed, zc_lend_calls, zc_write_bytes, copy_write_bytes;
	long long copy_write_small;	/* -1: the kernel has no such counter */
};

int conn_dir(const char *mountpoint, char *dir, size_t len);
int read_stats_dir(const char *dir, struct zc_stats *s);
int read_stats(const char *mountpoint, struct zc_stats *s);
int abort_conn(const char *mountpoint);
int abort_conn_dir(const char *dir);
long wait_no_waiting(const char *dir, unsigned int seconds);
void mark_leaked(const char *mountpoint);
int check_all_zero_copy(const char *mountpoint, const char *what);

/*
 * fuse.zerocopy_write_min: a FUSE_WRITE of fewer bytes comes with its data.
 * zc_main() sets it to 0 for the program (every write is lent, as the
 * write tests expect) and puts zc_write_min_initial back at exit; -1: the
 * kernel has no such parameter.  set_zc_write_min(): 0 or -errno.
 */
#define ZC_WRITE_MIN_KNOB "/sys/module/fuse/parameters/zerocopy_write_min"
extern long zc_write_min_initial;
int set_zc_write_min(long bytes);

/* ------------------------------------------------------ minifuse servers */

struct server {
	struct mf_config cfg;
	struct mf_shared *sh;
	pid_t pid;
	const char *mountpoint;
};

int server_start(struct server *srv, const char *mountpoint,
		 const char *backing_path, enum mf_read_mode mode);
int server_stop(struct server *srv);
int server_stop_when_idle(struct server *srv, const char *mountpoint, const char *dir);
long server_quiesce(struct server *srv);
int file_path(char *out, size_t len, const char *mountpoint);
int start_inner_mount(struct server *inner);
const char *park_loop(void);
int parking_server(struct server *srv, const char *what);
int parked_write_server(struct server *srv, const char *what);
int check_parked(struct mf_shared *sh, const char *what);

/*
 * MF_READ_SECOND_REPLY's delay: the reader has its bytes long before the
 * server's second reply, as on a loaded machine.
 */
#define SECOND_REPLY_DELAY_MS 300

int misbehave_and_read_cfg(const struct mf_config *cfg, enum mf_read_mode mode,
			   const char *what, size_t field, int expected);
int misbehave_and_read(enum mf_read_mode mode, const char *what,
		       size_t field, int expected);

/* ----------------------------------- ext4 on a loop device, fsfreeze */

#define FREEZE_LIMIT_S		20	/* fsfreeze -f must finish within this */
#define FREEZE_IMAGE_SIZE	(64 << 20)

/* ext4 over a loop device, optionally over a stallable FUSE file */
struct freeze_fs {
	struct server inner;	/* the stallable device's server */
	char image[200], dir[200], data[240], other[240], node[64];
	int loop_fd;
	bool mounted;
};

int loop_attach(const char *path, char *node, size_t len);
int freeze_fs_setup(struct freeze_fs *f, bool stallable, size_t data_size);
void freeze_fs_teardown(struct freeze_fs *f);
pid_t fsfreeze_start(const char *dir, bool freeze);
int reap_within(pid_t pid, unsigned int seconds);
int fsfreeze_round_trip(const char *dir);
/*
 * Tasks are left in D state for good (a freeze that never finishes): no
 * cleanup can work, so say so and exit at once, failed.
 */
void zc_wedged(const char *subtest) __attribute__((noreturn));

/* ---------------------------------------------------------------- reads */

int verify_range(int fd, char *buf, off_t off, size_t len, const char *what);
int fresh_read(const char *path, char *buf, off_t off, size_t len,
	       const char *what);

struct reader_arg {
	const char *path;
	unsigned int seed;
	int iterations;
	int result;
	bool direct;
	bool tolerate_errors;	/* fault tests: errors fine, wrong bytes not */
	volatile int *stop;
};

void *reader_main(void *p);

/* A read in its own thread, so that the test can watch it block. */
struct one_read {
	const char *path;
	off_t off;
	size_t len;
	bool direct;
	int iovecs;		/* > 0: preadv of that many 512-byte pieces */
	int fd;			/* > 0: read this fd (opened beforehand), else open path */
	pthread_t tid;
	volatile int done;
	ssize_t n;
	int err;
	bool right;		/* the bytes read are the backing file's */
};

int one_read_start(struct one_read *r);
bool one_read_wait(struct one_read *r, unsigned int seconds);
int check_read(const struct one_read *r, size_t want, const char *what);
int serve_one_read(struct server *srv, enum mf_read_mode mode,
		   struct one_read *rd, char *path, size_t len,
		   const char *what);

/* ------------------------------------------------- lendings of our own */

int lend_once(struct io_uring *ring, int op, int io_fd, int lender,
	      uint64_t lend_pos, unsigned int len, unsigned int seconds);
int open_io_file(void);

/* ------------------------------------------------------------ main loop */

struct zc_subtest {
	const char *name;
	int (*fn)(void);
	bool needs_zc;	/* a kernel without zero copy: skip (fail if it is required) */
};

/*
 * Parse the options, set up the scratch directory and the watchdog, run
 * the subtests of @subtests named on the command line ("all": every one)
 * in the table's order; exit status 0 pass, 1 fail, 77 skip, 2 usage.
 */
int zc_main(int argc, char **argv, const struct zc_subtest *subtests, size_t nr);

/* Must the kernel have what a test needs (FUSEZC_REQUIRE_ZC=1, or CI)? */
bool zc_required(void);

#define ZC_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#endif
