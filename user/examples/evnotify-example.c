// SPDX-License-Identifier: GPL-2.0
/*
 * The smallest user of /dev/evnotify, through the UAPI header alone:
 * attach an eventfd to slot 0, kick it three times, read the three notifications.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <linux/evnotify.h>

int main(void)
{
	struct evnotify_version ver;
	struct evnotify_attach at = { .slot = 0 };
	struct evnotify_kick kick = { .slot = 0, .count = 3 };
	struct evnotify_stats st;
	uint64_t n, sum = 0;
	int ch, efd;

	ch = open("/dev/evnotify", O_RDWR | O_CLOEXEC);
	efd = eventfd(0, EFD_CLOEXEC);
	if (ch < 0 || efd < 0) {
		perror("open");
		return 1;
	}
	if (ioctl(ch, EVNOTIFY_IOC_VERSION, &ver)) {
		perror("EVNOTIFY_IOC_VERSION");
		return 1;
	}
	printf("evnotify api %u, %u slots, features %#llx\n", ver.api_version,
	       ver.nr_slots, (unsigned long long)ver.features);
	at.fd = efd;
	if (ioctl(ch, EVNOTIFY_IOC_ATTACH, &at) || ioctl(ch, EVNOTIFY_IOC_KICK, &kick)) {
		perror("attach/kick");
		return 1;
	}
	while (sum < kick.count) {
		if (read(efd, &n, sizeof(n)) != sizeof(n)) {
			perror("read");
			return 1;
		}
		sum += n;
	}
	if (ioctl(ch, EVNOTIFY_IOC_STATS, &st)) {
		perror("EVNOTIFY_IOC_STATS");
		return 1;
	}
	printf("received %llu notifications; kicks=%llu notifies=%llu\n",
	       (unsigned long long)sum, (unsigned long long)st.kicks,
	       (unsigned long long)st.notifies);
	close(efd);
	close(ch);
	return sum == kick.count ? 0 : 1;
}
