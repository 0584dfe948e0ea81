// SPDX-License-Identifier: GPL-2.0
/*
 * evnotify-probe-timer: a reader of a slot timer or of a timerfd, for profiling the timer's
 * lateness (docs/design.md): plain (default policy and affinity), or pinned, as the bench's
 * pinned reader (SCHED_FIFO 50 on CPU 0, the channel's thread pinned there too). Both start
 * at an absolute time (EVNOTIFY_TIMER_ABSTIME, TFD_TIMER_ABSTIME), and each tick's lateness
 * is measured against start + k * period; a tick later than THRESHOLD_US is written to the
 * ftrace marker ("probe: LATE tick ..."), if tracefs is mounted.
 *
 *   evnotify-probe-timer evnotify|timerfd PERIOD_US TICKS THRESHOLD_US [pinned]
 *
 * Prints p50, p90, p99 and max lateness in µs, and for the module the channel's counters.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>
#include <linux/evnotify.h>
#include "probe.h"

static int fail(const char *what)
{
	return fail_as("evnotify-probe-timer", what);
}

int main(int argc, char **argv)
{
	uint64_t period, ticks, thresh, start, k = 0, *lat;
	int module, marker, fd, pinned, dev = -1;
	cpu_set_t cpu0;

	if (argc < 5 || argc > 6 || (strcmp(argv[1], "evnotify") && strcmp(argv[1], "timerfd")) ||
	    (argc == 6 && strcmp(argv[5], "pinned"))) {
		fprintf(stderr, "usage: %s evnotify|timerfd PERIOD_US TICKS THRESHOLD_US [pinned]\n",
			argv[0]);
		return 2;
	}
	pinned = argc == 6;
	module = !strcmp(argv[1], "evnotify");
	period = strtoull(argv[2], NULL, 0) * 1000;
	ticks = strtoull(argv[3], NULL, 0);
	thresh = strtoull(argv[4], NULL, 0) * 1000;
	if (!period || !ticks)
		return 2;
	marker = open("/sys/kernel/tracing/trace_marker", O_WRONLY);
	lat = calloc(ticks, sizeof(*lat));
	if (!lat)
		return fail("calloc");
	CPU_ZERO(&cpu0);
	CPU_SET(0, &cpu0);
	if (pinned) {
		struct sched_param sp = { .sched_priority = 50 };

		if (sched_setaffinity(0, sizeof(cpu0), &cpu0) ||
		    sched_setscheduler(0, SCHED_FIFO, &sp))
			return fail("pinning to CPU 0 at SCHED_FIFO 50");
	}
	if (module) {
		struct evnotify_kick kick = { .slot = 0, .count = 1 };
		struct pollfd p;
		uint64_t v;

		dev = open("/dev/evnotify", O_RDWR);
		fd = eventfd(0, EFD_NONBLOCK);
		if (dev < 0 || fd < 0)
			return fail("/dev/evnotify or eventfd");
		struct evnotify_attach at = { .slot = 0, .fd = fd };

		if (ioctl(dev, EVNOTIFY_IOC_ATTACH, &at) || ioctl(dev, EVNOTIFY_IOC_KICK, &kick))
			return fail("EVNOTIFY_IOC_ATTACH/KICK");
		/* The warm-up kick starts the channel's thread, as the bench's does. */
		p = (struct pollfd){ .fd = fd, .events = POLLIN };
		if (poll(&p, 1, 10000) != 1 || read(fd, &v, sizeof(v)) != sizeof(v))
			return fail("warm-up kick");
		if (pinned) {
			struct evnotify_stats s;

			if (ioctl(dev, EVNOTIFY_IOC_STATS, &s) ||
			    sched_setaffinity((pid_t)s.thread_pid, sizeof(cpu0), &cpu0))
				return fail("pinning the channel's thread to CPU 0");
		}
		start = mono_ns();
		struct evnotify_timer t = { .slot = 0, .flags = EVNOTIFY_TIMER_ABSTIME,
					    .period_ns = period, .ticks = ticks,
					    .start_ns = start + period };

		if (ioctl(dev, EVNOTIFY_IOC_TIMER, &t))
			return fail("EVNOTIFY_IOC_TIMER");
	} else {
		struct itimerspec its = { 0 };
		uint64_t first;

		fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
		if (fd < 0)
			return fail("timerfd_create");
		its.it_interval.tv_sec = (time_t)(period / 1000000000);
		its.it_interval.tv_nsec = (long)(period % 1000000000);
		start = mono_ns();
		first = start + period;
		its.it_value.tv_sec = (time_t)(first / 1000000000);
		its.it_value.tv_nsec = (long)(first % 1000000000);
		if (timerfd_settime(fd, TFD_TIMER_ABSTIME, &its, NULL))
			return fail("timerfd_settime");
	}
	while (k < ticks) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		uint64_t v, now;

		if (read(fd, &v, sizeof(v)) != sizeof(v)) {
			if (errno != EAGAIN)
				return fail("read");
			if (poll(&p, 1, 10000) != 1)
				return fail("no tick within 10 s");
			continue;
		}
		now = mono_ns();
		for (uint64_t j = k + 1; j <= k + v && j <= ticks; j++) {
			uint64_t ideal = start + period * j, l = now > ideal ? now - ideal : 0;

			lat[j - 1] = l;
			if (l > thresh && marker >= 0) {
				char b[160];
				int len = snprintf(b, sizeof(b),
						   "probe: LATE tick %llu by %llu us, read %llu, cpu %d\n",
						   (unsigned long long)j, (unsigned long long)(l / 1000),
						   (unsigned long long)v, sched_getcpu());

				if (write(marker, b, (size_t)len) != len)
					return fail("trace_marker");
			}
		}
		k += v;
	}
	qsort(lat, ticks, sizeof(*lat), cmp_u64);
	printf("%s period %llu us: p50 %llu p90 %llu p99 %llu max %llu us\n", argv[1],
	       (unsigned long long)(period / 1000), (unsigned long long)(lat[ticks / 2] / 1000),
	       (unsigned long long)(lat[ticks * 9 / 10] / 1000),
	       (unsigned long long)(lat[ticks * 99 / 100] / 1000),
	       (unsigned long long)(lat[ticks - 1] / 1000));
	if (module) {
		struct evnotify_stats s;

		if (ioctl(dev, EVNOTIFY_IOC_STATS, &s))
			return fail("EVNOTIFY_IOC_STATS");
		printf("stats: wakeups %llu notifies %llu timer_ticks %llu handled %llu\n",
		       (unsigned long long)s.wakeups, (unsigned long long)s.notifies,
		       (unsigned long long)s.timer_ticks, (unsigned long long)s.handled);
	}
	return 0;
}
