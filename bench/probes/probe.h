/* SPDX-License-Identifier: GPL-2.0 */
/* What the probes share: the clock, sorting, and failing with the call that failed. */
#ifndef EVNOTIFY_PROBE_H
#define EVNOTIFY_PROBE_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static inline uint64_t mono_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static inline int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Prints "PROG: WHAT: strerror(errno)" and returns 1, for main to return. */
static inline int fail_as(const char *prog, const char *what)
{
	fprintf(stderr, "%s: %s: %s\n", prog, what, strerror(errno));
	return 1;
}

#endif
