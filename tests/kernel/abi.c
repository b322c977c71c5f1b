// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * zc_kernel_abi: the series' marks in the FUSE protocol stay where zero
 * copy was negotiated (issue 24, ABI): FUSE_UNIQUE_ZC_REPLY (bit 62 of a
 * reply's unique) means nothing on a connection without zero copy, as on
 * a kernel without the series, where bit 62 may one day mean something else.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include "zc_test.h"

/*
 * A server that does not accept zero copy at INIT: a reply with bit 62 set
 * names no request (ENOENT, as on a stock kernel); it is not taken for a
 * zero-copy reply (EINVAL on v6).
 */
static int t_zc_bit_unclaimed(void)
{
	struct mf_config cfg = { .decline_zc = true };

	return misbehave_and_read_cfg(&cfg, MF_READ_NO_LEND,
				      "bit 62 on a connection without zero copy (errno)",
				      offsetof(struct mf_shared, reply_errno), ENOENT);
}

static const struct zc_subtest subtests[] = {
	{ "zc_bit_unclaimed", t_zc_bit_unclaimed, true },
};

int main(int argc, char **argv)
{
	return zc_main(argc, argv, subtests, ZC_ARRAY_SIZE(subtests));
}
