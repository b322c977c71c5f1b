/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * minifuse: a deliberately small FUSE server speaking the raw /dev/fuse
 * protocol, for testing the kernel series.  It serves one regular file,
 * /file, whose data comes from a backing fd, and answers FUSE_READ in one
 * of several ways, some of them wrong on purpose.
 */
#ifndef MINIFUSE_H
#define MINIFUSE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

enum mf_read_mode {
	MF_READ_ZC,		/* READ_SPLICE_BUF, zero-copy reply */
	MF_READ_COPY,		/* pread + ordinary reply */
	MF_READ_SLOW_COPY,	/* like COPY after a delay (a slow backing store) */
	MF_READ_LIE_MORE,	/* zero copy, reply claims a page more than placed */
	MF_READ_LIE_PARTIAL,	/* lend all, place half, claim all */
	MF_READ_LIE_FAILED_IO,	/* the lent I/O fails, claim all */
	MF_READ_NO_LEND,	/* zero-copy reply without any lending */
	MF_READ_SECOND_REPLY,	/* zero copy, then the same reply again */
	MF_READ_WRONG_DIR,	/* WRITE_SPLICE_BUF on a FUSE_READ */
	MF_READ_BUSY_REPLY,	/* reply while the lent I/O is in flight */
	MF_READ_PROBE,		/* run the identity probes, then zero copy */
	MF_READ_PROBE_RANGE,	/* lend ranges reaching past the request, then zero copy */
	MF_READ_PROBE_EXDEV,	/* lend into cfg->exdev_paths files, then copy */
	MF_READ_OUT_OF_ORDER,	/* lend the second half, then the first, zero copy */
	MF_READ_PARKED,		/* hold a loan for slow_ms (parked in io-wq), zero copy */
	MF_READ_CANCEL,		/* park a loan, cancel it, reply by copy on its CQE */
	MF_READ_INTERRUPT,	/* park a loan until a FUSE_INTERRUPT was answered */
	MF_READ_RESEND,		/* park a loan, FUSE_NOTIFY_RESEND, wait for release */
	MF_READ_RANDOM,		/* stress: a random mix of all of the above */
	MF_READ_ASYNC,		/* zero copy from the loop device: O_DIRECT or uncached */
	/*
	 * Failover: a second daemon (a child process sharing the /dev/fuse
	 * file) parks a loan of the read; this one sends FUSE_NOTIFY_RESEND
	 * and kills it, then answers the read when it comes again.
	 */
	MF_READ_FAILOVER,
	/*
	 * Lend byte 1 of the read flood_n times over, then hold the read
	 * (unanswered) until release, then answer it by copy.
	 */
	MF_READ_FLOOD,
	/*
	 * Stripes: the first half of the read lent from the backing file with
	 * IORING_SPLICE_BUF_COMPLETE, the second from cfg->stripe_path
	 * with cfg->stripe_ioprio; then, unless the kernel answered, a copy
	 * reply.
	 */
	MF_READ_MIXED,
	/*
	 * Park a loan like MF_READ_PARKED; when the test sets close_dev,
	 * close the /dev/fuse file (the loan then outlives every file of
	 * the connection); let the loan go on release.
	 */
	MF_READ_PARK_CLOSE,
};

/* How a FUSE_WRITE sent without its data (FUSEZC_WRITE_ZERO_COPY) is served. */
enum mf_write_mode {
	MF_WRITE_ZC,		/* WRITE_SPLICE_BUF into the backing file, then reply */
	MF_WRITE_WRONG_DIR,	/* READ_SPLICE_BUF into the write's pages first */
	MF_WRITE_OVERCLAIM,	/* zero copy, reply a page more than written */
	MF_WRITE_NO_LEND,	/* reply the whole size without writing anything */
	MF_WRITE_PARKED,	/* to the loop device, the loan parked for slow_ms first */
	MF_WRITE_RANDOM,	/* stress: a random mix of the above, in chunks */
	/*
	 * Answer with FUSEZC_ZC_WRITE_SEND_DATA (after one with unknown flags),
	 * then the write again, which comes with its data: a SEND_DATA reply to
	 * it, then pwrite and reply, then a SEND_DATA for it once answered.
	 */
	MF_WRITE_SEND_DATA,
	/* like MF_WRITE_PARKED, a SEND_DATA reply while parked; SEND_DATA after */
	MF_WRITE_SEND_DATA_BUSY,
	/*
	 * WRITE_SPLICE_BUF into cfg->freeze_path (O_DIRECT, on a file system
	 * the test freezes), not waited for; then, when the test sets
	 * freeze_go, pwrite() cfg->freeze_pwrite_path from the same thread
	 * (or, with freeze_close_ring, close the ring instead), then reply.
	 */
	MF_WRITE_FREEZE,
};

/* MF_READ_RANDOM: what the server did, and what the kernel said. */
struct mf_stress {
	volatile uint64_t reads, chunks, zc_replies, copy_replies;
	volatile uint64_t early_accepted, early_busy;	/* reply while lending */
	volatile uint64_t overclaims_refused, duplicates_refused;
	volatile uint64_t unlent_refused, nonlenders_refused, resends;
	volatile uint64_t cancels, chunks_failed, replies_gone;
	volatile uint64_t auto_completed;	/* answered by the kernel */
	/* chunks read from the loop device: buffered after dropping the range, O_DIRECT */
	volatile uint64_t loop_chunks, loop_dio_chunks;
	/* MF_WRITE_RANDOM */
	volatile uint64_t writes, write_chunks, write_replies, write_auto_completed;
	volatile uint64_t write_overclaims_refused, write_unlent_refused;
	volatile uint64_t write_wrong_dir_refused, write_failed;
	volatile uint64_t unexpected;	/* a kernel answer the contract forbids */
	char last_unexpected[96];
};

#define MF_MAX_PROBES 24
#define MF_MAX_EXDEV 4

struct mf_probe {
	char name[48];
	int expected;		/* -errno, or >= 0 for success */
	int got;
};

/* Shared (MAP_SHARED) between the server process and the test. */
struct mf_shared {
	volatile int ready;		/* mounted */
	volatile int init_done;
	volatile int zc_offered;	/* INIT offered FUSE_ZERO_COPY_READ */
	volatile int zc_accepted;
	volatile enum mf_read_mode mode;
	volatile uint64_t reads, zc_replies, copy_replies, fallbacks;
	volatile int last_lend_error;	/* -errno of the last refused lending */
	volatile int reply_errno;	/* errno of the last deliberately bad reply */
	volatile int second_reply_errno;
	volatile uint64_t second_replies;	/* sent, their errno recorded */
	volatile int wrong_dir_res;
	volatile int nr_probes;
	struct mf_probe probes[MF_MAX_PROBES];
	volatile int probes_done;
	volatile unsigned int slow_ms;	/* MF_READ_SLOW_COPY delay, changeable */
	volatile int last_lend_res;	/* cqe->res of the last whole-request lending */
	volatile uint64_t short_lends;	/* whole-request lendings that placed less, not at EOF */
	volatile int short_lend_res;
	volatile uint32_t short_lend_size;
	volatile int recovery_errno;	/* errno of the correct reply after a refused one */
	volatile uint64_t recoveries;	/* correct replies after a refused one */
	volatile uint64_t lend_order_res[2];	/* MF_READ_OUT_OF_ORDER: second half, first half */
	volatile int lend_order_completed[2];	/* and whether its CQE said "answered" */
	/* auto_complete: reads the kernel answered at the loan's end (also in zc_replies) */
	volatile uint64_t auto_completed;
	/* ... and those it answered although the contract leaves them to the server */
	volatile uint64_t auto_forbidden;
	char auto_forbidden_what[64];
	/* parked loans (a READ_SPLICE_BUF held in io-wq with its loan) */
	volatile int parked;		/* a loan is parked right now */
	volatile int release;		/* the test lets the parked loan go */
	volatile int close_dev, dev_closed;	/* MF_READ_PARK_CLOSE */
	/*
	 * MF_WRITE_PARKED: write-back writes (FUSE_WRITE_CACHE) go to the
	 * backing file, unparked, when set; counted either way
	 */
	volatile int park_no_cache_writes;
	volatile uint64_t cache_writes;
	volatile uint64_t parks, park_failures;
	volatile uint64_t parked_unlent;	/* parked, but zc_lent_pages was 0 */
	volatile int park_error;	/* why the last park failed */
	/* a park's gate that its release did not open (cancelled after a bound) */
	volatile uint64_t park_release_failures;
	volatile int park_release_error;
	/* MF_READ_CANCEL */
	volatile uint64_t cancels, cancel_ebusy, cancel_bad_res;
	volatile int cancel_last_res;	/* cqe->res of the cancelled lending */
	volatile long long lent_after_cqe;	/* zc_lent_pages right after that CQE */
	/* MF_READ_INTERRUPT */
	volatile int interrupts;	/* FUSE_INTERRUPT requests seen */
	volatile int interrupt_errno[2];	/* replies -EAGAIN, then -ENOSYS */
	volatile int interrupt_replies;
	/* MF_READ_RESEND */
	volatile int notify_errno;	/* of the FUSE_NOTIFY_RESEND write */
	volatile uint64_t resent, resent_while_lent;
	/* resent reads answered by a zero-copy lending; lent under the old name */
	volatile uint64_t resent_zc, resent_old_name_reached;
	volatile int resent_lend_res;	/* the last resent read's lending */
	volatile int resend_reply_errno;	/* of the lender's reply after release */
	volatile int privileges_dropped;	/* drop_privileges_after_init done */
	/* MF_READ_MIXED: the last read's halves' cqe->res and LENDER_COMPLETED */
	volatile int mixed_res[2], mixed_completed[2];
	volatile unsigned int mixed_cqe_flags[2];
	volatile int mixed_reply_errno;		/* of the last copy reply after them */
	volatile uint64_t mixed_reads;
	volatile uint64_t mixed_short;		/* second half ended short (the stripe's end) */
	volatile uint64_t mixed_answered;	/* a CQE said the kernel answered */
	volatile uint64_t mixed_refused;	/* the copy reply was refused */
	volatile uint64_t mixed_failed;		/* a lending failed or placed nothing */
	/* MF_READ_FLOOD */
	volatile uint64_t flood_n;		/* lendings to try */
	volatile uint64_t flood_ok, flood_eexist, flood_other;
	volatile int flood_other_res;		/* the last other result */
	volatile int flood_held;		/* done lending, the read held */
	/* MF_READ_FAILOVER */
	volatile int failover_parked;		/* 1: the child parked its loan, -1: failed */
	volatile uint64_t failover_kills;	/* children killed with their loan parked */
	volatile double failover_kill_time;	/* CLOCK_MONOTONIC of the last kill */
	struct mf_stress stress;	/* MF_READ_RANDOM */
	/* FUSE_WRITE */
	volatile enum mf_write_mode write_mode;
	volatile int zc_write_accepted;
	volatile uint64_t writes, zc_writes, copy_writes, zc_write_bytes;
	volatile uint64_t zc_writes_answered;	/* of zc_writes: answered by the kernel */
	volatile uint64_t write_failures;	/* a lending that wrote less than asked */
	volatile int write_error;		/* its result */
	volatile uint64_t write_flags_seen;	/* OR of every FUSE_WRITE's write_flags */
	volatile int wrong_dir_write_res;	/* READ_SPLICE_BUF on a FUSE_WRITE */
	volatile int bad_write_reply_errno;	/* of an overclaiming or unlent reply */
	volatile uint64_t bad_write_replies;
	/* MF_WRITE_SEND_DATA[_BUSY]: errno (0: accepted) of each SEND_DATA reply */
	volatile int send_data_bad_flags_errno;	/* unknown flags */
	volatile int send_data_busy_errno;	/* while a loan of the write is out */
	volatile int send_data_errno;		/* the good one (the last) */
	volatile int send_data_inline_errno;	/* to a write that came with its data */
	volatile int send_data_gone_errno;	/* to a write already answered */
	volatile uint64_t send_data_asked;	/* SEND_DATA replies accepted */
	volatile uint64_t send_data_resent;	/* writes that came again with data */
	/*
	 * MF_READ_ASYNC, by kind: [0] O_DIRECT, [1] buffered of uncached
	 * data.  in_submit: the CQE was there when io_uring_submit() returned
	 * (on a DEFER_TASKRUN ring only an I/O done inside it posts one).
	 */
	volatile uint64_t async_lends[2], async_in_submit[2];
	volatile uint64_t async_iowq;	/* lendings after which an io-wq worker existed */
	volatile int async_iowq_kind;	/* the kind of the first of them */
	volatile uint32_t async_dio_max;	/* O_DIRECT only up to this many bytes */
	volatile int async_iowq_workers;	/* how many, the last time */
	volatile uint64_t async_failed;
	volatile int async_error;
	/* MF_WRITE_FREEZE (the test sets freeze_close_ring and freeze_go) */
	volatile int freeze_close_ring;
	volatile int freeze_submitted;	/* the lending is in flight */
	volatile int freeze_tid;	/* the thread that submitted it */
	volatile int freeze_go;
	volatile int freeze_ring_closed;
	volatile int freeze_pwrite_done, freeze_pwrite_res;
	volatile int freeze_cqe_res;	/* -ETIME: no CQE within 120 s */
};

struct mf_config {
	const char *mountpoint;
	const char *backing_path;	/* the file served as /file */
	enum mf_read_mode mode;
	int threads;			/* default 2 */
	bool accept_zc;			/* accept the INIT capability */
	bool decline_zc;		/* server_start(): do not set accept_zc */
	bool writable;			/* /file is 0644, FUSE_WRITE goes to the backing file */
	bool accept_zc_write;		/* accept FUSEZC_INIT_ZC_WRITE too */
	bool writeback_cache;		/* accept FUSE_WRITEBACK_CACHE */
	bool fixed_lender;		/* /dev/fuse as a registered file */
	bool fixed_target;		/* backing file as a registered file */
	bool splice_receive;		/* read requests with splice(2) + a pipe */
	bool drop_privileges;		/* serve as nobody, without CAP_SYS_ADMIN */
	/*
	 * Answer INIT as root, then serve as nobody (a privileged helper
	 * handing the connection to an unprivileged daemon).
	 */
	bool drop_privileges_after_init;
	bool direct_io_backing;		/* open the backing file O_DIRECT */
	/*
	 * FOPEN_DIRECT_IO: a short read ends the reader's read(2) (the page
	 * cache does not read the rest again)
	 */
	bool open_direct_io;
	/* lend with IORING_SPLICE_BUF_COMPLETE: the kernel may answer reads */
	bool auto_complete;
	/*
	 * ... and submit those lendings with IOSQE_CQE_SKIP_SUCCESS and a
	 * linked NOP: a lending the kernel answered posts no CQE (the NOP's
	 * says it is over), every other one must post its own.
	 */
	bool skip_success;
	unsigned int slow_ms;		/* MF_READ_SLOW_COPY delay */
	/*
	 * MF_READ_SECOND_REPLY: wait this long before the second reply, as a
	 * loaded machine may; the reader has its bytes by then.
	 */
	unsigned int second_reply_delay_ms;
	/*
	 * A loop block device over a copy of the backing file (read-write:
	 * parking dirties pages with the bytes they hold), for parked loans
	 * and MF_READ_ASYNC.
	 */
	const char *loop_path;
	/* MF_READ_MIXED: the second stripe's file, and sqe->ioprio lending it */
	const char *stripe_path;
	unsigned int stripe_ioprio;
	/* MF_READ_PROBE_EXDEV: files on a FUSE or stacking fs to lend into */
	const char *exdev_paths[MF_MAX_EXDEV];
	/* also serve a second connection here (copy mode), for a probe */
	const char *second_mountpoint;
	/* MF_WRITE_FREEZE: the file lent writes go to, the one pwrite() hits */
	const char *freeze_path, *freeze_pwrite_path;
};

/*
 * The gate that parks a loan: an io-wq worker held in open(2) of a FIFO for
 * reading, with the lending queued behind it.  mf_gate_release() lets the
 * opener through whether its open(2) is already waiting or has not started
 * yet: it returns an fd that holds both ends of the FIFO (keep it open
 * until the opener's CQE is reaped), or -errno.
 */
int mf_gate_release(const char *fifo);

/* Fork a server process; returns its pid after the mount is up, or -errno. */
pid_t mf_start(const struct mf_config *cfg, struct mf_shared *shared);
struct mf_shared *mf_shared_new(void);

/* io-wq workers ("iou-wrk-<tid>" threads) of process @pid, of its thread
 * @owner only if > 0; -errno if @pid's tasks cannot be read. */
int mf_iowq_workers(pid_t pid, pid_t owner);

#endif
