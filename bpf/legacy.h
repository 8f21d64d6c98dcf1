/* SPDX-License-Identifier: GPL-2.0 */
/* String work for the legacy objects (EW_LEGACY, kernel.h), whose loops the verifier walks one iteration at a
 * time: 5.10's keeps every branch it has yet to explore, at most 8192, so a loop over a 4096-byte value with a
 * branch on each byte is refused. These compare and hash a word at a time with no branch on the data: the
 * verifier then walks each loop once, straight, and the work is done in full whatever the data. */
#ifndef EW_LEGACY_H
#define EW_LEGACY_H

#include "kernel.h"

/* EW_OPAQUE hides x's value from the compiler, which would otherwise turn the masks below back into branches
 * (a select, which BPF has only as a jump). It emits nothing. */
#define EW_OPAQUE(x) asm volatile("" : "+r"(x))

/* ew_words_equal says whether the first n bytes of a and b are equal, both in map memory of 8 * words bytes
 * (words a constant). n outside [1, 8 * words] is never equal. */
static __always_inline int ew_words_equal(const char *a, const char *b, long n, int words)
{
	if (n <= 0 || n > 8 * words)
		return 0;
	__u64 diff = 0;
	for (int j = 0; j < words; j++) {
		/* k, the bytes of word j below n: n - 8j clamped to [0, 8], without a comparison. */
		long d = n - 8 * j - 8;
		long below = d >> 63; /* all ones when fewer than 8 */
		EW_OPAQUE(below);
		long k = 8 + (d & below);
		long negative = k >> 63;
		EW_OPAQUE(negative);
		k &= ~negative;
		/* The low k bytes (the first ones in memory: both targets are little-endian); two shifts, since one
		 * by 64 would be undefined. */
		__u64 mask = ((1ULL << (4 * k)) << (4 * k)) - 1;
		diff |= (((const __u64 *)a)[j] ^ ((const __u64 *)b)[j]) & mask;
	}
	return diff == 0;
}

/* ew_words_hash continues FNV-1a hash h (hash.h) over the NUL-terminated string s in map memory of 8 * words
 * bytes: the bytes after the NUL leave h as it is. */
static __always_inline __u64 ew_words_hash(__u64 h, const char *s, int words, __u64 prime)
{
	__u64 live = ~0ULL; /* all ones until the NUL */
	for (int j = 0; j < words; j++) {
		__u64 w = ((const __u64 *)s)[j];
		for (int i = 0; i < 8; i++) {
			__u64 c = w & 0xff;
			w >>= 8;
			__u64 ends = ((c + 0xff) >> 8) - 1; /* all ones at the NUL */
			EW_OPAQUE(ends);
			live &= ~ends;
			h ^= (((h ^ c) * prime) ^ h) & live;
		}
	}
	return h;
}

#endif
