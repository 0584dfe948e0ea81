// SPDX-License-Identifier: GPL-2.0
/*
 * evnotify-probe-rtt: the polled round trip, for profiling (docs/design.md). Kicks slot 0 by
 * ioctl from CPU 0; the channel's thread, pinned to CPU 1, busy polls; the caller reads its
 * eventfd, spinning on a non-blocking read ("spin"), blocking in read(2) ("block"), or as
 * make bench's callers wait ("poll": a non-blocking read, then ppoll(2) and the read; it also
 * prints how many round trips the first read ended, and the p50 of those and of the others).
 * With "marks", each round trip writes "K" to the ftrace marker first.
 *
 * With a fifth argument "eventfd", the peer answers instead of the module: a thread pinned
 * to CPU 1 blocks in read(2) on one eventfd and writes another (make bench's eventfd
 * ping-pong); BUSYPOLL_NS must then be 0. Traced side by side with the module's path.
 *
 *   evnotify-probe-rtt ROUND_TRIPS BUSYPOLL_NS spin|block|poll|marks [eventfd]
 *
 * Prints the round trip's p50, p90 and p99 in ns. Not a benchmark (make bench is): a load
 * to trace, whose figures are comparable only within one boot.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>
#include <linux/evnotify.h>
#include "probe.h"

static int fail(const char *what)
{
	return fail_as("evnotify-probe-rtt", what);
}

/* Reads one notification: spins on EAGAIN if spin is set. */
static int wait_one(int fd, int spin)
{
	uint64_t v;
	ssize_t r;

	while ((r = read(fd, &v, sizeof(v))) != sizeof(v))
		if (!spin || errno != EAGAIN)
			return -1;
	return v == 1 ? 0 : -1;
}

/* Reads one notification as make bench's callers do; *first: the first read found it. */
static int wait_polled(int fd, int *first)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	uint64_t v;

	*first = read(fd, &v, sizeof(v)) == sizeof(v);
	if (!*first) {
		if (errno != EAGAIN)
			return -1;
		for (;;) {
			if (ppoll(&p, 1, NULL, NULL) < 0)
				return -1;
			if (read(fd, &v, sizeof(v)) == sizeof(v))
				break;
			if (errno != EAGAIN)
				return -1;
		}
	}
	return v == 1 ? 0 : -1;
}

/* The p50 of the n values of lat whose flag in first is want (0 if none). */
static uint64_t p50_of(const uint64_t *lat, const char *first, int n, int want)
{
	uint64_t *v = calloc((size_t)n, sizeof(*v));
	int k = 0;
	uint64_t r;

	if (!v)
		return 0;
	for (int i = 0; i < n; i++)
		if (first[i] == want)
			v[k++] = lat[i];
	qsort(v, (size_t)k, sizeof(*v), cmp_u64);
	r = k ? v[k / 2] : 0;
	free(v);
	return r;
}

/* The eventfd peer's two descriptors: it reads kicks from the first, answers on the second. */
static int peer_fds[2];

/* The eventfd peer: pinned to CPU 1, answers each kick until its read fails. */
static void *peer(void *arg)
{
	cpu_set_t cpus;
	uint64_t v;

	(void)arg;
	CPU_ZERO(&cpus);
	CPU_SET(1, &cpus);
	if (sched_setaffinity(0, sizeof(cpus), &cpus))
		exit(fail("pinning the peer to CPU 1"));
	while (read(peer_fds[0], &v, sizeof(v)) == sizeof(v))
		if (write(peer_fds[1], &(uint64_t){ 1 }, sizeof(uint64_t)) != sizeof(uint64_t))
			exit(fail("the peer's write"));
	return NULL;
}

int main(int argc, char **argv)
{
	struct evnotify_kick kick = { .slot = 0, .count = 1 };
	struct evnotify_stats st;
	cpu_set_t cpus;
	uint64_t *lat;
	int n, spin, marks, polled, mk = -1, dev, fd;
	char *first;

	if (argc < 4 || argc > 5 || (n = atoi(argv[1])) <= 0 ||
	    (argc == 5 && strcmp(argv[4], "eventfd"))) {
		fprintf(stderr, "usage: %s ROUND_TRIPS BUSYPOLL_NS spin|block|poll|marks [eventfd]\n",
			argv[0]);
		return 2;
	}
	int efd = argc == 5;
	spin = !strcmp(argv[3], "spin");
	marks = !strcmp(argv[3], "marks");
	polled = !strcmp(argv[3], "poll");
	if (!spin && !marks && !polled && strcmp(argv[3], "block")) {
		fprintf(stderr, "%s: the mode is spin, block, poll or marks, not '%s'\n", argv[0],
			argv[3]);
		return 2;
	}
	struct evnotify_busypoll bp = { .limit_ns = (uint32_t)strtoul(argv[2], NULL, 0) };

	if (marks && (mk = open("/sys/kernel/tracing/trace_marker", O_WRONLY)) < 0)
		return fail("/sys/kernel/tracing/trace_marker");
	dev = efd ? -1 : open("/dev/evnotify", O_RDWR);
	if (!efd && dev < 0)
		return fail("/dev/evnotify");
	fd = eventfd(0, spin || polled ? EFD_NONBLOCK : 0);
	if (fd < 0)
		return fail("eventfd");
	struct evnotify_attach at = { .slot = 0, .fd = fd };

	if (efd) {
		pthread_t t;

		if (bp.limit_ns) {
			fprintf(stderr, "%s: the eventfd peer does not poll: BUSYPOLL_NS must be 0\n",
				argv[0]);
			return 2;
		}
		peer_fds[0] = eventfd(0, 0);
		peer_fds[1] = fd;
		if (peer_fds[0] < 0 || pthread_create(&t, NULL, peer, NULL))
			return fail("the eventfd peer");
	} else {
		if (ioctl(dev, EVNOTIFY_IOC_ATTACH, &at) || ioctl(dev, EVNOTIFY_IOC_BUSYPOLL, &bp))
			return fail("EVNOTIFY_IOC_ATTACH/BUSYPOLL");
		/* The first kick starts the thread; then it is pinned, and the caller too. */
		int f;

		if (ioctl(dev, EVNOTIFY_IOC_KICK, &kick) ||
		    (polled ? wait_polled(fd, &f) : wait_one(fd, spin)))
			return fail("warm-up kick");
		if (ioctl(dev, EVNOTIFY_IOC_STATS, &st))
			return fail("EVNOTIFY_IOC_STATS");
		CPU_ZERO(&cpus);
		CPU_SET(1, &cpus);
		if (sched_setaffinity(st.thread_pid, sizeof(cpus), &cpus))
			return fail("pinning the channel's thread to CPU 1");
	}
	CPU_ZERO(&cpus);
	CPU_SET(0, &cpus);
	if (sched_setaffinity(0, sizeof(cpus), &cpus))
		return fail("pinning to CPU 0");
	lat = calloc((size_t)n, sizeof(*lat));
	first = calloc((size_t)n, 1);
	if (!lat || !first)
		return fail("calloc");
	for (int i = -1000; i < n; i++) {
		uint64_t t;

		if (mk >= 0 && i >= 0 && write(mk, "K\n", 2) != 2)
			return fail("trace_marker");
		t = mono_ns();
		if (efd ? write(peer_fds[0], &(uint64_t){ 1 }, sizeof(uint64_t)) != sizeof(uint64_t) :
			  ioctl(dev, EVNOTIFY_IOC_KICK, &kick) != 0)
			return fail("kick");
		int f = 0;

		if (polled ? wait_polled(fd, &f) : wait_one(fd, spin))
			return fail("round trip");
		if (i >= 0) {
			lat[i] = mono_ns() - t;
			first[i] = (char)f;
		}
	}
	if (polled) {
		int k = 0;

		for (int i = 0; i < n; i++)
			k += first[i];
		printf("poll: the first read found the answer in %d of %d round trips (p50 %llu ns; "
		       "the others' p50 %llu ns)\n",
		       k, n, (unsigned long long)p50_of(lat, first, n, 1),
		       (unsigned long long)p50_of(lat, first, n, 0));
	}
	qsort(lat, (size_t)n, sizeof(*lat), cmp_u64);
	printf("%s %s rtt ns: p50 %llu p90 %llu p99 %llu (n %d, busypoll %u ns)\n",
	       efd ? "eventfd" : "evnotify", argv[3],
	       (unsigned long long)lat[n / 2], (unsigned long long)lat[n * 9 / 10],
	       (unsigned long long)lat[n * 99 / 100], n, bp.limit_ns);
	return 0;
}
