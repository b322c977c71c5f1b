/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Kernel ABI of the fuse-zc series (kernel/patches), for userspace built
 * against headers that predate it.  These values mirror the series'
 * include/uapi/linux/fuse.h and include/uapi/linux/io_uring.h additions;
 * kernel/patches is the authority and must be changed together with this file.
 */
#ifndef FUSE_ZC_KABI_H
#define FUSE_ZC_KABI_H

#include <stdint.h>

/*
 * FUSE_INIT capability (flags2 bit 28, i.e. bit 60 of the 64-bit flags):
 * the kernel offers it in the INIT request; the server accepts it by setting
 * it in the INIT reply (with FUSE_INIT_EXT).  Never probe io_uring opcodes to
 * detect zero copy: 58/59 mean RECV_ZC/EPOLL_WAIT on Linux 6.15+.
 */
#define FUSEZC_INIT_EXT			(1U << 30)	/* FUSE_INIT_EXT */
#define FUSEZC_INIT_ZC_READ		(1ULL << 60)
/*
 * Zero-copy writes (flags2 bit 29): a FUSE_WRITE whose data is in pages
 * comes as its headers only, with FUSEZC_WRITE_ZERO_COPY in write_flags;
 * the server writes the data out with IORING_OP_WRITE_SPLICE_BUF and
 * answers with an ordinary fuse_write_out, whose size the kernel holds to
 * what those operations wrote out.
 */
#define FUSEZC_INIT_ZC_WRITE		(1ULL << 61)
#define FUSEZC_WRITE_ZERO_COPY		(1U << 31)

/* io_uring opcodes added by the series to Linux 6.12 (after IORING_OP_LISTEN). */
#define FUSEZC_IORING_OP_READ_SPLICE_BUF	58
#define FUSEZC_IORING_OP_WRITE_SPLICE_BUF	59

/* sqe->splice_flags: splice_fd_in is an index into the registered files. */
#define FUSEZC_SPLICE_F_FD_IN_FIXED	(1U << 31)

/*
 * sqe->ioprio: let the kernel answer the FUSE_READ itself when this lending
 * (the last one out) brings its data complete: every byte asked for, or all
 * up to where the backing file ended (with FUSEZC_SPLICE_BUF_EOF), without a
 * hole, no lending of it
 * failed, no FUSE_INTERRUPT or FUSE_NOTIFY_RESEND concerns it.  The CQE then
 * has FUSEZC_CQE_F_LENDER_COMPLETED and the server must not reply (a reply
 * gets ENOENT); without it the reply is the server's, as without the flag.
 */
#define FUSEZC_SPLICE_BUF_COMPLETE	(1U << 0)
#define FUSEZC_CQE_F_LENDER_COMPLETED	(1U << 12)

/*
 * sqe->ioprio, READ_SPLICE_BUF only: a read that ends short at the end of
 * the backing file ends the FUSE_READ's data (the kernel may answer it
 * short, as a copying server would).  Without it a short lending never lets
 * the kernel answer: for servers mapping one FUSE file onto several backing
 * files.  The CQE of a read that stopped at the end of its file has
 * FUSEZC_CQE_F_SPLICE_BUF_EOF; a short one without it was cut by something
 * else (an error of the backing file included).
 */
#define FUSEZC_SPLICE_BUF_EOF		(1U << 1)
#define FUSEZC_CQE_F_SPLICE_BUF_EOF	(1U << 13)

/*
 * sqe->splice_off_in for a /dev/fuse lender: the low 31 bits of the request's
 * unique id above a 32-bit byte offset into that request's data buffer (a
 * request reaches 65535 pages, 256 MiB, from Linux 6.13 on; uniques advance
 * by 2, so 31 bits tell 2^30 requests in flight apart).  Their bit 0, never
 * set in a request's unique, carries FUSE_UNIQUE_RESEND (bit 63): a resent
 * request is lent under the unique it came with, and a name from before the
 * resend gets -ENOENT (series patch 42; without it both get -ENOENT).
 * Bit 63 stays clear: a file position is never negative.  The lent
 * range (offset + len) must lie inside the request's data, else the CQE is
 * -EINVAL.  Lending may be refused with -EOPNOTSUPP, -EPERM (contract v2:
 * CAP_SYS_ADMIN only by default), -EXDEV (backing file on FUSE or a stacked
 * file system) or -E2BIG; the server then answers by copy.
 */
#define FUSEZC_POS_OFFSET_BITS		32
#define FUSEZC_POS_UNIQUE_BITS		31

static inline uint64_t fusezc_lend_pos(uint64_t unique, uint32_t offset)
{
	return (((unique & ((1ULL << FUSEZC_POS_UNIQUE_BITS) - 1)) | (unique >> 63)) <<
		FUSEZC_POS_OFFSET_BITS) | offset;
}

/*
 * Zero-copy reply to a FUSE_READ whose pages were filled by
 * IORING_OP_READ_SPLICE_BUF: fuse_out_header with this bit set in unique,
 * error 0, followed by struct fusezc_read_out.  The kernel accepts it only
 * for a FUSE_READ that was lent, once no lending is in flight, and only for
 * size <= the bytes placed contiguously from offset 0.  Contract v2: a reply
 * claiming more is refused by write() with EINVAL and the request stays in
 * flight, so the server must still answer it (fuse-zc sends a copy).
 */
#define FUSEZC_UNIQUE_ZC_REPLY		(1ULL << 62)	/* 63 is FUSE_UNIQUE_RESEND */

struct fusezc_read_out {
	uint64_t size;
};

/*
 * A zero-copy FUSE_WRITE whose data the server cannot take by lending (its
 * io_uring failed or cannot be set up, a transient error) is answered with
 * fuse_out_header{unique | FUSEZC_UNIQUE_ZC_REPLY, error 0} followed by
 * struct fusezc_write_out with FUSEZC_ZC_WRITE_SEND_DATA: the kernel queues
 * the same write again with its data inline (FUSEZC_WRITE_ZERO_COPY clear),
 * which the server answers as any write.  Refused with EBUSY while a loan
 * of the write is out, EINVAL for a write that came with its data or
 * unknown flags, ENOENT when the request is gone.  (Interface agreed with
 * the kernel side in /work/briefs/interfaces.md; kernel/patches is the
 * authority once it lands.)
 */
#define FUSEZC_ZC_WRITE_SEND_DATA	(1U << 0)

struct fusezc_write_out {
	uint32_t flags;
	uint32_t padding;
};

/* FUSE passthrough (Linux 6.9+), for -o passthrough. */
#define FUSEZC_INIT_PASSTHROUGH		(1ULL << 37)
/* FUSE_NO_EXPORT_SUPPORT (Linux 6.9+): no file handles for this mount. */
/* FUSE_OVER_IO_URING (Linux 6.14+): requests over io_uring, not /dev/fuse. */
#define FUSEZC_INIT_OVER_IO_URING	(1ULL << 41)
#define FUSEZC_INIT_NO_EXPORT_SUPPORT	(1ULL << 38)
#define FUSEZC_FOPEN_PASSTHROUGH	(1U << 7)

struct fusezc_backing_map {
	int32_t fd;
	uint32_t flags;
	uint64_t padding;
};
#define FUSEZC_DEV_IOC_MAGIC		229
#define FUSEZC_DEV_IOC_BACKING_OPEN	_IOW(FUSEZC_DEV_IOC_MAGIC, 1, struct fusezc_backing_map)
#define FUSEZC_DEV_IOC_BACKING_CLOSE	_IOW(FUSEZC_DEV_IOC_MAGIC, 2, uint32_t)

#endif /* FUSE_ZC_KABI_H */
