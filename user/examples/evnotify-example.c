// SPDX-License-Identifier: GPL-2.0
/*
 * A user of /dev/evnotify through the UAPI header alone: two slots, each with
 * a notify eventfd and a kick eventfd.  Writing N to a kick eventfd makes the
 * kernel thread signal that slot's notify eventfd N times, with no ioctl.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <linux/evnotify.h>

static int attach(int ch, unsigned long req, unsigned int slot, int fd)
{
	struct evnotify_attach at = { .slot = slot, .fd = fd };

	return ioctl(ch, req, &at);
}

static uint64_t collect(int efd, uint64_t want)
{
	uint64_t n, sum = 0;

	while (sum < want && read(efd, &n, sizeof(n)) == sizeof(n))
		sum += n;
	return sum;
}

int main(void)
{
	const unsigned int slots[2] = { 0, EVNOTIFY_NR_SLOTS - 1 };
	const uint64_t writes[2] = { 3, 5 };
	struct evnotify_version ver;
	struct evnotify_kick kick = { .slot = slots[0], .count = 2 };
	struct evnotify_stats st;
	int ch, notify[2], kickfd[2], i;
	uint64_t got[2];

	ch = open("/dev/evnotify", O_RDWR | O_CLOEXEC);
	if (ch < 0 || ioctl(ch, EVNOTIFY_IOC_VERSION, &ver)) {
		perror("/dev/evnotify");
		return 1;
	}
	if (!(ver.features & EVNOTIFY_F_KICKFD)) {
		fprintf(stderr, "no kick eventfd support\n");
		return 1;
	}
	printf("evnotify api %u, %u slots, features %#llx\n", ver.api_version,
	       ver.nr_slots, (unsigned long long)ver.features);
	for (i = 0; i < 2; i++) {
		notify[i] = eventfd(0, EFD_CLOEXEC);
		kickfd[i] = eventfd(0, EFD_CLOEXEC);
		if (notify[i] < 0 || kickfd[i] < 0 ||
		    attach(ch, EVNOTIFY_IOC_ATTACH, slots[i], notify[i]) ||
		    attach(ch, EVNOTIFY_IOC_KICKFD, slots[i], kickfd[i])) {
			perror("attach");
			return 1;
		}
	}
	/* Kick both slots by write(2), and slot 0 once more by ioctl. */
	for (i = 0; i < 2; i++)
		if (write(kickfd[i], &writes[i], sizeof(writes[i])) != sizeof(writes[i])) {
			perror("write");
			return 1;
		}
	if (ioctl(ch, EVNOTIFY_IOC_KICK, &kick)) {
		perror("EVNOTIFY_IOC_KICK");
		return 1;
	}
	got[0] = collect(notify[0], writes[0] + kick.count);
	got[1] = collect(notify[1], writes[1]);
	if (ioctl(ch, EVNOTIFY_IOC_STATS, &st)) {
		perror("EVNOTIFY_IOC_STATS");
		return 1;
	}
	printf("slot %u: received %llu notifications\n", slots[0], (unsigned long long)got[0]);
	printf("slot %u: received %llu notifications\n", slots[1], (unsigned long long)got[1]);
	printf("kicks=%llu (by write %llu) notifies=%llu\n", (unsigned long long)st.kicks,
	       (unsigned long long)st.fd_kicks, (unsigned long long)st.notifies);
	close(ch);
	return got[0] == writes[0] + kick.count && got[1] == writes[1] &&
	       st.fd_kicks == writes[0] + writes[1] ? 0 : 1;
}
