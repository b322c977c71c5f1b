/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The content of zc_hellofs' files: byte i depends on all bits of i. */
#ifndef ZC_PATTERN_H
#define ZC_PATTERN_H

#include <stddef.h>
#include <stdint.h>

static inline unsigned char zc_pattern_byte(uint64_t pos)
{
	uint64_t x = (pos + 1) * 0x9E3779B97F4A7C15ULL;

	return (unsigned char)((x >> 56) ^ (pos >> 12));
}

static inline void zc_pattern_fill(unsigned char *buf, uint64_t pos, size_t len)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = zc_pattern_byte(pos + i);
}

#endif /* ZC_PATTERN_H */
