/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * rust_evnotify: eventfd notification channels between the kernel and user space.
 *
 * Each open file of /dev/evnotify is a channel with EVNOTIFY_NR_SLOTS numbered
 * notify slots, served by a kernel thread: its own, started on first use, or
 * one it shares with other channels (EVNOTIFY_IOC_SHARE_WORKER).  User space
 * attaches an eventfd to a slot, then kicks the slot; the kernel thread answers
 * every kick by signalling the slot's eventfd once (eventfd_signal(), which
 * adds 1).
 *
 * Rules, as in Documentation/process/botching-up-ioctls.rst:
 *  - every struct is a multiple of 64 bits, with explicit padding;
 *  - flags and reserved fields must be zero (but the flags each struct
 *    names), or the ioctl fails with EINVAL;
 *  - an unknown command, or a known number with another size or direction,
 *    fails with ENOTTY;
 *  - a call that fails changes no slot, hook, timer, signal or counter: it
 *    takes nothing from the eventfds it is given.  It may have started the
 *    channel's kernel thread, which any later call would start anyway.
 * A call that needs the channel's thread and has none starts it, and fails
 * with ENOMEM or EAGAIN if the thread cannot be created, or EINTR if the
 * caller is being killed meanwhile; on a kernel with cgroups, also with the
 * errno of moving the thread into the caller's cgroups (that of
 * cgroup_attach_task_all(): ENOMEM, or a controller's or security module's
 * refusal).
 *
 * The magic 0xE6 (commands 0x00-0x1F) is unused in
 * Documentation/userspace-api/ioctl/ioctl-number.rst as of Linux 7.3.
 */
#ifndef _UAPI_LINUX_EVNOTIFY_H
#define _UAPI_LINUX_EVNOTIFY_H

#include <linux/ioctl.h>
#include <linux/types.h>

/*
 * 2: evnotify_stats grew (coalesced, sig_refused), so EVNOTIFY_IOC_STATS has
 * another number; kick eventfds refuse EFD_SEMAPHORE; the thread starts on
 * first use.
 * 3: shared workers (EVNOTIFY_IOC_SHARE_WORKER, EVNOTIFY_IOC_WORKER).
 * 4: an eventfd is the kick eventfd of at most one slot (EBUSY); the batch
 * being delivered counts against EVNOTIFY_MAX_PENDING.
 * 5: a timer tick that falls due on an idle slot is signalled from the
 * timer's interrupt, without the channel's thread (see evnotify_timer).
 * 6: a worker's thread runs in the cgroups of the task that started it
 * (EVNOTIFY_F_CGROUPS).
 * 7: a read of a slot's notify eventfd by the process that attached it
 * moves the channel's timer to the reader's CPU and tops up to 16 the times
 * it may re-arm itself (see evnotify_timer).
 * 8: EVNOTIFY_TIMER_ABSTIME starts a timer at a given time
 * (EVNOTIFY_F_TIMER_ABSTIME); evnotify_timer's last field, reserved before,
 * is start_ns.
 * 9: the timer signals from its interrupt the lone ticks of every idle slot
 * that fall due together, one signal per eventfd, not of 8 slots at most.
 * 10: the event ring (EVNOTIFY_F_RING): mmap, EVNOTIFY_IOC_RING_ENTER,
 * EVNOTIFY_IOC_RING_STATS.
 */
#define EVNOTIFY_API_VERSION	10
/* Number of notify slots in every channel. */
#define EVNOTIFY_NR_SLOTS	64
/* Largest count a single EVNOTIFY_IOC_KICK accepts. */
#define EVNOTIFY_MAX_KICK	(1U << 20)
/*
 * Most kicks and ticks one slot holds pending, the batch the thread is
 * delivering (or the tick its timer is signalling) included.  Beyond it, further kicks and ticks on that slot are
 * coalesced: counted in evnotify_stats.coalesced and not delivered, never
 * silently lost.  So evnotify_stats.pending is at most EVNOTIFY_MAX_PENDING
 * times the number of slots with work.
 */
#define EVNOTIFY_MAX_PENDING	(1ULL << 20)

/* Feature bits reported in evnotify_version.features. */
#define EVNOTIFY_F_NOTIFY	(1ULL << 0)	/* attach, kick, stats */
#define EVNOTIFY_F_SLOTS	(1ULL << 1)	/* EVNOTIFY_NR_SLOTS slots per channel */
#define EVNOTIFY_F_KICKFD	(1ULL << 2)	/* EVNOTIFY_IOC_KICKFD: kick by write(2) */
#define EVNOTIFY_F_FDINFO	(1ULL << 3)	/* state in /proc/<pid>/fdinfo/<fd> */
#define EVNOTIFY_F_TIMER	(1ULL << 4)	/* EVNOTIFY_IOC_TIMER: kernel-originated ticks */
#define EVNOTIFY_F_SIGNAL	(1ULL << 5)	/* EVNOTIFY_IOC_SIGNAL: fasync-style signals */
#define EVNOTIFY_F_BUSYPOLL	(1ULL << 6)	/* EVNOTIFY_IOC_BUSYPOLL: thread spins before sleeping */
#define EVNOTIFY_F_WORKERS	(1ULL << 7)	/* EVNOTIFY_IOC_SHARE_WORKER, EVNOTIFY_IOC_WORKER */
#define EVNOTIFY_F_CGROUPS	(1ULL << 8)	/* workers run in their starter's cgroups
						 * (set on kernels with cgroups) */
#define EVNOTIFY_F_TIMER_ABSTIME (1ULL << 9)	/* EVNOTIFY_TIMER_ABSTIME */
#define EVNOTIFY_F_RING		(1ULL << 10)	/* mmap: the event ring */

/* Timer periods accepted by EVNOTIFY_IOC_TIMER, in nanoseconds (1 ms .. 1 day). */
#define EVNOTIFY_MIN_PERIOD_NS	1000000ULL
#define EVNOTIFY_MAX_PERIOD_NS	86400000000000ULL
/* evnotify_timer.flags: the first tick at start_ns, as TFD_TIMER_ABSTIME. */
#define EVNOTIFY_TIMER_ABSTIME	(1U << 0)
/* Latest evnotify_timer.start_ns: 2^62 ns, about 146 years after boot. */
#define EVNOTIFY_MAX_START_NS	(1ULL << 62)

/* Largest busy-poll limit accepted by EVNOTIFY_IOC_BUSYPOLL, in nanoseconds (1 ms). */
#define EVNOTIFY_MAX_BUSYPOLL_NS	1000000U

/* The event ring's mapping (see struct evnotify_ring). */
#define EVNOTIFY_RING_SIZE		4096U	/* mmap length: one page (or its start) */
#define EVNOTIFY_RING_SQ_ENTRIES	128U	/* struct evnotify_sqe ... */
#define EVNOTIFY_RING_CQ_ENTRIES	128U	/* struct evnotify_cqe ... */
#define EVNOTIFY_RING_SQ_OFFSET		64U	/* ... at these offsets in it */
#define EVNOTIFY_RING_CQ_OFFSET		1088U
/* evnotify_ring.flags: the thread sleeps; call EVNOTIFY_IOC_RING_ENTER. */
#define EVNOTIFY_RING_NEED_WAKEUP	(1U << 0)

struct evnotify_version {
	__u32 api_version;	/* out: EVNOTIFY_API_VERSION */
	__u32 nr_slots;		/* out: EVNOTIFY_NR_SLOTS */
	__u64 features;		/* out: EVNOTIFY_F_* */
};

/* For EVNOTIFY_IOC_ATTACH (notify eventfd) and EVNOTIFY_IOC_KICKFD (kick eventfd). */
struct evnotify_attach {
	__u32 slot;		/* in: 0 .. EVNOTIFY_NR_SLOTS-1 */
	__s32 fd;		/* in: the eventfd; -1 detaches */
	__u32 flags;		/* in: must be 0 */
	__u32 reserved;		/* in: must be 0 */
};

struct evnotify_kick {
	__u32 slot;		/* in: 0 .. EVNOTIFY_NR_SLOTS-1 */
	__u32 count;		/* in: 1 .. EVNOTIFY_MAX_KICK */
	__u32 flags;		/* in: must be 0 */
	__u32 reserved;		/* in: must be 0 */
};

/*
 * Channel counters.  Every kick and every timer tick is either coalesced or
 * handled once, so every EVNOTIFY_IOC_STATS reply (a consistent snapshot,
 * even while the channel is busy) satisfies, modulo 2^64 (counters wrap):
 *   kicks + timer_ticks == handled + pending + coalesced
 * and a kick that is being delivered still counts in pending.  fd_kicks is
 * the part of kicks that came from kick eventfds, so fd_kicks <= kicks until
 * kicks wraps.  Once pending == 0, every handled kick has been delivered: it
 * signalled the slot's eventfd (notifies) and/or its process (signals), or was
 * posted on the channel's event ring or counted lost there (the ring's section
 * below), or, with none of these, is counted in dropped.
 */
struct evnotify_stats {
	__u64 kicks;		/* kicks accepted: by ioctl and by kick eventfd */
	__u64 fd_kicks;		/* of which came from kick eventfd writes */
	__u64 timer_ticks;	/* ticks produced by timers */
	__u64 handled;		/* kicks and ticks delivered or dropped */
	__u64 notifies;		/* eventfd_signal() calls made (thread and timer) */
	__u64 signals;		/* process signals sent */
	__u64 dropped;		/* handled with no eventfd, no ring and no
				 * signal sent (a refused one counts here) */
	__u64 wakeups;		/* times the thread woke up from sleep and found work */
	__u64 polled;		/* times it found work while busy polling, without sleeping */
	__u64 pending;		/* kicks and ticks not yet handled */
	__s32 thread_pid;	/* pid of the channel's kernel thread, 0 until started
				 * (and always 0 seen from a child pid namespace) */
	__u32 attached;		/* slots with a notify eventfd */
	__u32 kickfds;		/* slots with a kick eventfd whose last
				 * descriptor user space has not closed
				 * (fdinfo shows such a closed one as
				 * "closed" until it is released) */
	__u32 timers;		/* slots with a running timer */
	__u32 signal_slots;	/* slots that signal a process */
	__u32 busypoll_ns;	/* the thread's busy-poll limit, 0 = off */
	__u64 coalesced;	/* kicks and ticks merged away: beyond EVNOTIFY_MAX_PENDING, or echoes */
	__u64 sig_refused;	/* signal sends refused: permission, LSM, or a full
				 * real-time signal queue (RLIMIT_SIGPENDING) */
};

/*
 * Start a periodic timer on a slot: one tick per period, delivered like a
 * kick, with no help from user space.  A tick that the channel's timer finds
 * due alone on a slot with nothing pending and no signal (every such slot of
 * an expiry, but one per eventfd: of slots that share one, the others'
 * ticks are the thread's) is signalled from the timer's interrupt, as
 * timerfd wakes its reader, and not counted in wakeups or polled; the channel's thread delivers
 * the others (several ticks due at once, slots with kicks pending, signals,
 * ticks it finds due first), and every tick of a channel with an event ring
 * (the ring's section below).  The channel's timer is armed on the CPU of the
 * caller that set it (unless the channel's timer is armed already, or firing,
 * for an expiry no later than the new first tick, or than 100 us after its
 * last expiry: it then stays on its CPU;
 * and the kernel may move a timer armed on a nohz_full CPU to a housekeeping
 * one); a read (that takes a count) of a timer slot's notify
 * eventfd by the process that attached that eventfd moves it, for the same
 * expiry, to the reader's CPU, unless it is expiring at that moment, as a
 * timerfd is re-armed by its reader: so the reader is usually woken where it
 * sleeps.  Reads by other processes that hold the eventfd do nothing here.
 * The timer re-arms itself where it expired, but at most 16 times after the
 * last run of the channel's thread or such a read (each tops the allowance
 * up to 16; the thread is woken for more once 8 or fewer are left), and twice per
 * EVNOTIFY_IOC_TIMER call: with no such read and a thread that cannot run,
 * the ticks stop after at most 17 expiries, and the thread catches up (a
 * read does not restart a timer that stopped) when it runs again.
 * Late ticks are delivered late, never skipped.  period_ns == 0 cancels: no tick is queued after the ioctl
 * returns (one taken just before may be signalled just after, as a batch in
 * flight is: wait for pending == 0).  Setting a timer replaces the slot's
 * timer.
 *
 * The first tick falls one period after the call, or, with
 * EVNOTIFY_TIMER_ABSTIME, at start_ns on CLOCK_MONOTONIC, and the next ones
 * every period_ns after it: never before their time, and later than start_ns
 * + k * period_ns only as any tick may be late, plus the time between two
 * reads of the kernel's clock as it places start_ns (retried up to 16 times
 * to keep it under 1 us).  A start_ns already past is not refused, as
 * timerfd's is not: every tick due since is taken at once, like late ticks
 * (within ticks, counted in timer_ticks together, coalesced beyond
 * EVNOTIFY_MAX_PENDING), and signalled with one eventfd_signal each, so a
 * read may see part of them.  start_ns is on the kernel's CLOCK_MONOTONIC,
 * that of the initial time namespace: timerfd converts a time given in a
 * time namespace, this module does not.  In a time namespace with a
 * monotonic offset (unshare --time --monotonic), clock_gettime reads the
 * kernel's clock plus that offset (shown by /proc/<pid>/timens_offsets of a
 * process in the namespace), which the caller subtracts (a result below 0
 * is a time before boot: 0 does as well).  EINVAL for
 * other flags, for EVNOTIFY_TIMER_ABSTIME with period_ns == 0 or with start_ns
 * beyond EVNOTIFY_MAX_START_NS, and for start_ns != 0 without it.
 */
struct evnotify_timer {
	__u32 slot;		/* in: 0 .. EVNOTIFY_NR_SLOTS-1 */
	__u32 flags;		/* in: 0 or EVNOTIFY_TIMER_ABSTIME */
	__u64 period_ns;	/* in: 0 cancels, else MIN..MAX_PERIOD_NS */
	__u64 ticks;		/* in: ticks to deliver, then stop; 0 = until cancelled */
	__u64 start_ns;		/* in: first tick (EVNOTIFY_TIMER_ABSTIME), else 0 */
};

/*
 * Make a slot also send a signal to the calling process for every kick or tick
 * it handles, as F_SETOWN + O_ASYNC do for fasync drivers.  The signal goes to
 * the process (thread group) that made this call, also after the calling
 * thread has exited.  While the process is exiting, and as a zombie until its
 * parent reaps it, sends still count in signals, though the kernel discards
 * them.  Once it is reaped, the slot's next kick or tick sends nothing,
 * counts in neither signals nor sig_refused (in dropped, if the slot has no
 * eventfd), and the slot stops signalling and releases the process.  The
 * caller's credentials are recorded here and checked at every send, as
 * kill(2) from the caller would be: the recorded uid or euid must equal the
 * target's uid or saved uid (no
 * capability overrides this), and the LSMs are asked.  A refused send is
 * counted in sig_refused (the kick is still handled); an unkillable target
 * (a pid namespace's init) is not forced.  Signals carry si_code SI_ASYNCIO,
 * with si_pid and si_uid 0 (a kernel-originated signal).
 */
struct evnotify_signal {
	__u32 slot;		/* in: 0 .. EVNOTIFY_NR_SLOTS-1 */
	__s32 signo;		/* in: 1.._NSIG; 0 = SIGIO; -1 = stop signalling */
	__u32 flags;		/* in: must be 0 */
	__u32 reserved;		/* in: must be 0 */
};

/*
 * Set the channel thread's busy-poll limit, like vhost's busyloop timeout.
 * After it runs out of work the thread spins, for an adaptive window of at
 * most limit_ns, before it sleeps: a kick that arrives meanwhile costs no
 * wake-up.  The window grows while kicks come soon after the thread went idle
 * and drops to zero when they do not, so an idle channel burns no CPU; the
 * spin also yields to any other runnable task.  New channels start with the
 * busypoll_ns module parameter (default 200000, as KVM's halt_poll_ns).
 */
struct evnotify_busypoll {
	__u32 limit_ns;		/* in: 0 (off) .. EVNOTIFY_MAX_BUSYPOLL_NS */
	__u32 flags;		/* in: must be 0 */
	__u64 reserved;		/* in: must be 0 */
};

/*
 * Shared workers, like vhost's VHOST_ATTACH_VRING_WORKER and io_uring's
 * IORING_SETUP_ATTACH_WQ.  A channel's kernel thread is its worker.  By
 * default each channel starts a worker of its own on first use (its first
 * kick, kick eventfd or timer).  EVNOTIFY_IOC_SHARE_WORKER makes this channel
 * use the worker of the channel open as fd instead, starting that worker if it
 * has none yet, so that many channels need few threads.  Only a process that
 * holds fd can do so, and sharing a worker shares its time: whoever holds any
 * of its channels can add channels to it, flood them, and set its busy-poll
 * limit (as with io_uring's ATTACH_WQ).  Two channels that share each other's
 * worker at once may both fail with EBUSY.
 * Errors: EBADF if fd is not open (or is an O_PATH descriptor); EINVAL if it
 * is not a /dev/evnotify channel, or is this channel (through any descriptor
 * of it, whether or not it has a worker); EBUSY if this channel has a worker
 * already; ENOMEM or EAGAIN, or EINTR for a caller being killed, if fd's
 * channel had no worker and one could not be started.
 *
 * Cgroups (EVNOTIFY_F_CGROUPS, on a kernel with cgroups), as vhost's kthread
 * workers: a worker's thread runs in the cgroups, in every hierarchy, of the
 * task whose call started it, so its CPU time counts in that cgroup's cpu.stat
 * and is taken from its cpu.max quota, not the root's (the kernel throttles
 * the cgroup's processes for it, never a kernel thread itself; ticks signalled
 * from the timer's interrupt are not the thread's work).  The thread stays
 * there (unless an administrator moves it), whoever uses its channels: a channel whose fd was
 * passed (SCM_RIGHTS) or inherited (fork) keeps its worker, started or not
 * yet (then the first call that needs it starts it, in the caller's cgroups),
 * and a channel that shares a worker, from any cgroup, has its work charged to
 * the worker's: holding a descriptor of one of its channels is the consent,
 * as it is for kicking them.
 * The thread is a kernel thread, not a task of the caller: it counts in the
 * cgroup's pids.current, but pids.max does not refuse it (what bounds threads
 * is max_user_channels); its stack and task_struct are not charged to the
 * memory cgroup (the channel's own memory is); cgroup.kill and cgroup.freeze
 * pass it by (neither its cgroup nor an ancestor reports frozen); and the
 * cgroup cannot be removed (EBUSY) while it holds a worker.
 *
 * A worker serves its channels round robin, one batch at a time (at most 1024
 * kicks of one slot), and a channel's slots round robin, so a flooded channel
 * cannot starve a quiet one: the quiet one waits at most one batch for each
 * channel ahead of it in the queue.  A worker lives while any channel uses
 * it: the channel that started it may close first, and the last one to close
 * stops it.
 * Closing a channel's last descriptor stops its deliveries before close(2)
 * returns (if its event ring is still mapped somewhere, the channel lives on
 * until the last mapping is gone: see the ring's section), waiting at
 * most for its own batch (or timer's signals) in progress, or for its busy
 * polling worker to see that close ended its spin for the channel's next
 * kick, never for the other channels' work.
 * Busy polling belongs to the worker and polls all its channels: the limit
 * set by EVNOTIFY_IOC_BUSYPOLL on any of its channels applies to the worker,
 * evnotify_stats.busypoll_ns shows it, and a channel that shares a worker
 * takes the worker's limit.  evnotify_stats.wakeups and polled count on the
 * first channel with work that the worker serves after a sleep or after a
 * busy poll that caught an event (a deadline that ends a poll counts in
 * neither).  Every
 * channel counts against the module's max_channels and max_user_channels,
 * whether or not it shares a worker.
 */
struct evnotify_share {
	__s32 fd;		/* in: another open /dev/evnotify channel */
	__u32 flags;		/* in: must be 0 */
	__u64 reserved;		/* in: must be 0 */
};

/* The worker a channel uses (EVNOTIFY_IOC_WORKER), also in fdinfo. */
struct evnotify_worker {
	__u32 worker_id;	/* out: 0 until the channel has a worker, then the
				 * worker's id: its thread is named evnotify/<id> */
	__s32 thread_pid;	/* out: as evnotify_stats.thread_pid */
	__u32 channels;		/* out: open channels that use the worker
				 * (0 while worker_id is 0) */
	__u32 reserved;		/* out: 0 */
};

/*
 * The event ring (EVNOTIFY_F_RING), after io_uring's SQ and CQ: kicks that
 * need no system call while the channel's thread is awake, and completions
 * read from memory.
 *
 * mmap(NULL, EVNOTIFY_RING_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, ch, 0)
 * maps the channel's ring: one page, created by the channel's first mmap and
 * kept until the channel is closed.  Every mmap of the channel, by any process
 * that holds it, maps the same page.  The page holds struct evnotify_ring at
 * offset 0, EVNOTIFY_RING_SQ_ENTRIES struct evnotify_sqe (the submission
 * queue, sq) at EVNOTIFY_RING_SQ_OFFSET and EVNOTIFY_RING_CQ_ENTRIES struct
 * evnotify_cqe (the completion queue, cq) at EVNOTIFY_RING_CQ_OFFSET; the
 * helpers below find them.  mmap fails with EINVAL for a length beyond one
 * page (any length up to EVNOTIFY_RING_SIZE maps the page), an offset other
 * than 0, or MAP_PRIVATE; with EPERM for PROT_EXEC (also for the PROT_EXEC
 * that a READ_IMPLIES_EXEC personality adds to PROT_READ, where /dev is not
 * mounted noexec); with EACCES for PROT_WRITE
 * on a descriptor opened O_RDONLY (as any shared mapping does: such a mapping
 * is read-only, PROT_READ works); with ENOMEM if the page cannot be
 * allocated.  A failed mmap creates no ring.  The mapping can never become
 * executable (mprotect: EACCES), cannot grow (mremap: EFAULT), and is not
 * inherited by a child (fork): the child has no mapping there.  As any
 * mapping holds its file, a mapping holds the channel: closing the channel's
 * last descriptor releases it (its thread's work, its hooks) only once its
 * last mapping is gone too.  munmap may come at any time, also while the
 * thread writes the page.
 *
 * Submissions.  User space writes sq[sq_tail % EVNOTIFY_RING_SQ_ENTRIES], then
 * stores sq_tail + 1 with release ordering (or several entries, then one
 * store).  An entry may be written again once sq_head, which the kernel
 * stores with release ordering, has passed it, so at most
 * EVNOTIFY_RING_SQ_ENTRIES are outstanding.  Each entry kicks slot `slot`
 * `count` times, as EVNOTIFY_IOC_KICK does (counted in evnotify_stats.kicks,
 * and in evnotify_ring_stats.sq_kicks).  An entry whose slot is not below
 * EVNOTIFY_NR_SLOTS, or whose count is 0 or above EVNOTIFY_MAX_KICK, is skipped
 * and counted in sq_dropped.  A sq_tail more than EVNOTIFY_RING_SQ_ENTRIES
 * ahead of the kernel's head is no queue of entries: the kernel takes none of
 * them, moves its head to that tail, and counts one in sq_dropped.
 *
 * Wake-ups, as io_uring's IORING_SQ_NEED_WAKEUP.  The channel's thread takes
 * submissions while it busy-polls (EVNOTIFY_IOC_BUSYPOLL) and after each batch
 * it delivers.  Before it sleeps it sets EVNOTIFY_RING_NEED_WAKEUP in flags,
 * then looks at sq_tail once more; awake, it clears it.  A new ring has it set.
 * After storing sq_tail, user space issues a full memory barrier
 * (__atomic_thread_fence(__ATOMIC_SEQ_CST)) and then reads flags: if the flag is
 * set it calls EVNOTIFY_IOC_RING_ENTER, which takes the submissions (starting
 * the channel's thread if it has none).  Then no submission waits for a thread
 * that sleeps.  RING_ENTER may be called at any time; it fails with ENXIO on a
 * channel that has no ring (never mapped).  The thread polls the rings of all
 * the channels it serves (EVNOTIFY_IOC_SHARE_WORKER).
 *
 * Completions.  Once the channel has a ring, its thread posts one completion
 * for every batch of a slot it takes (kicks from any source, and timer ticks:
 * the timer leaves them all to the thread then; a batch or tick taken before
 * the mmap that created the ring returned is delivered without one), as it
 * takes the batch and before it signals the slot's eventfd: the slot, the count of kicks and
 * ticks in the batch (1 .. 1024), and seq, which counts the completions
 * produced, from 0.  It writes cq[cq_tail % EVNOTIFY_RING_CQ_ENTRIES], then
 * stores cq_tail + 1 with release ordering.  User space reads cq_tail with
 * acquire ordering, then the entries before it, then stores cq_head with
 * release ordering.  A completion that finds the queue full (cq_tail - cq_head
 * >= EVNOTIFY_RING_CQ_ENTRIES, modulo 2^32: a cq_head ahead of cq_tail counts as
 * full) is not posted: it is counted in cq_overflow and its kicks in
 * lost_kicks, and the next posted seq shows the gap.  A batch posted or lost
 * is delivered: it is not counted in evnotify_stats.dropped, even on a slot
 * with no eventfd and no signal.  So for a channel whose ring was mapped
 * before its first kick or timer, once evnotify_stats.pending == 0:
 *   cq_kicks + lost_kicks == evnotify_stats.handled
 *   cq_events + cq_overflow == the seq of the next completion
 *
 * The page is user space's to write, at any time: the kernel keeps its own
 * copy of every index and counter, reads each entry once, and what user space
 * writes there can spoil its own submissions and completions, not the
 * kernel's state or another channel's.  sq_head, cq_tail, sq_dropped and
 * cq_overflow in the page are written by the kernel for user space to read
 * (the last two are the low 32 bits of evnotify_ring_stats'); flags too.
 * sq_head and sq_dropped are written when the kernel takes submissions (not
 * when it finds none new), cq_tail when it posts a completion, cq_overflow
 * when it loses one: a value user space wrote over one of them stays until
 * then.
 */
struct evnotify_ring {
	__u32 sq_head;		/* kernel: submissions taken */
	__u32 sq_tail;		/* user: submissions published */
	__u32 cq_head;		/* user: completions consumed */
	__u32 cq_tail;		/* kernel: completions posted */
	__u32 flags;		/* kernel: EVNOTIFY_RING_NEED_WAKEUP */
	__u32 sq_dropped;	/* kernel: evnotify_ring_stats.sq_dropped */
	__u32 cq_overflow;	/* kernel: evnotify_ring_stats.cq_overflow */
	__u32 reserved;		/* unused */
};

/* A submission: kick a slot count times. */
struct evnotify_sqe {
	__u32 slot;		/* 0 .. EVNOTIFY_NR_SLOTS-1 */
	__u32 count;		/* 1 .. EVNOTIFY_MAX_KICK */
};

/* A completion: a batch of a slot delivered. */
struct evnotify_cqe {
	__u32 slot;		/* the slot */
	__u32 count;		/* kicks and ticks in the batch */
	__u64 seq;		/* completions produced before this one */
};

/*
 * The ring's counters (EVNOTIFY_IOC_RING_STATS), one consistent snapshot as
 * evnotify_stats is; ENXIO on a channel with no ring.  They wrap at 2^64.
 */
struct evnotify_ring_stats {
	__u64 sq_kicks;		/* kicks taken from the submission queue */
	__u64 sq_dropped;	/* entries skipped: bad slot or count, or a wild sq_tail */
	__u64 cq_events;	/* completions posted */
	__u64 cq_kicks;		/* kicks and ticks they report */
	__u64 cq_overflow;	/* completions not posted: the queue was full */
	__u64 lost_kicks;	/* kicks and ticks those would have reported */
	__u32 sq_head;		/* the kernel's sq_head */
	__u32 cq_tail;		/* the kernel's cq_tail */
};

#define EVNOTIFY_IOC_MAGIC	0xE6

#define EVNOTIFY_IOC_VERSION	_IOR(EVNOTIFY_IOC_MAGIC, 0x00, struct evnotify_version)
#define EVNOTIFY_IOC_ATTACH	_IOW(EVNOTIFY_IOC_MAGIC, 0x01, struct evnotify_attach)
#define EVNOTIFY_IOC_KICK	_IOW(EVNOTIFY_IOC_MAGIC, 0x02, struct evnotify_kick)
#define EVNOTIFY_IOC_STATS	_IOR(EVNOTIFY_IOC_MAGIC, 0x03, struct evnotify_stats)
/*
 * Hook an eventfd so that a write(2) of N to it kicks the slot N times, with no
 * syscall into the driver (like KVM's irqfd).  A count already in the eventfd
 * is taken at once.  When user space closes it (its last descriptor, also
 * while this call runs), it is unhooked and released.  An eventfd is the kick
 * eventfd of at most one slot of all channels: hooking it to another slot, of
 * this channel or another, fails with EBUSY (unhook it there first, with fd
 * -1), as does an eventfd that is a KVM irqfd; hooking it again to the slot it
 * kicks succeeds and changes nothing.
 * Eventfds in EFD_SEMAPHORE mode fail with EOPNOTSUPP: they give up their count
 * one unit at a time, so taking a write of N as N kicks would cost N steps with
 * interrupts off.  Kicks beyond EVNOTIFY_MAX_PENDING are coalesced.  A kick
 * eventfd that a channel signals (its thread or its timer, this channel's or
 * another's: a feedback loop or chain, the same eventfd attached as a notify
 * eventfd) is an echo: it waits at least 1 ms, at most one waits per slot, and the rest are
 * coalesced.  An echo that finds kicks pending on its slot is coalesced into
 * them; a kick that arrives while an echo waits takes it along at once.
 */
#define EVNOTIFY_IOC_KICKFD	_IOW(EVNOTIFY_IOC_MAGIC, 0x04, struct evnotify_attach)
#define EVNOTIFY_IOC_TIMER	_IOW(EVNOTIFY_IOC_MAGIC, 0x05, struct evnotify_timer)
#define EVNOTIFY_IOC_SIGNAL	_IOW(EVNOTIFY_IOC_MAGIC, 0x06, struct evnotify_signal)
#define EVNOTIFY_IOC_BUSYPOLL	_IOW(EVNOTIFY_IOC_MAGIC, 0x07, struct evnotify_busypoll)
#define EVNOTIFY_IOC_SHARE_WORKER	_IOW(EVNOTIFY_IOC_MAGIC, 0x08, struct evnotify_share)
#define EVNOTIFY_IOC_WORKER	_IOR(EVNOTIFY_IOC_MAGIC, 0x09, struct evnotify_worker)
#define EVNOTIFY_IOC_RING_ENTER	_IO(EVNOTIFY_IOC_MAGIC, 0x0A)
#define EVNOTIFY_IOC_RING_STATS	_IOR(EVNOTIFY_IOC_MAGIC, 0x0B, struct evnotify_ring_stats)

#ifndef __KERNEL__
/*
 * Helpers for the ring, as liburing's for io_uring (GCC or Clang builtins).
 * `map` is what mmap returned.
 */
static __inline__ struct evnotify_ring *evnotify_ring_of(void *map)
{
	return (struct evnotify_ring *)map;
}

static __inline__ struct evnotify_sqe *evnotify_ring_sq(void *map)
{
	return (struct evnotify_sqe *)((char *)map + EVNOTIFY_RING_SQ_OFFSET);
}

static __inline__ struct evnotify_cqe *evnotify_ring_cq(void *map)
{
	return (struct evnotify_cqe *)((char *)map + EVNOTIFY_RING_CQ_OFFSET);
}

/*
 * Publishes a kick of `slot`, `count` times.  Returns 1 if the thread must be
 * woken (call EVNOTIFY_IOC_RING_ENTER), 0 if not, -1 if the submission queue
 * is full (nothing published).  One thread submits at a time.
 */
static __inline__ int evnotify_ring_submit(void *map, __u32 slot, __u32 count)
{
	struct evnotify_ring *r = evnotify_ring_of(map);
	__u32 tail = __atomic_load_n(&r->sq_tail, __ATOMIC_RELAXED);
	struct evnotify_sqe *e;

	if (tail - __atomic_load_n(&r->sq_head, __ATOMIC_ACQUIRE) >= EVNOTIFY_RING_SQ_ENTRIES)
		return -1;
	e = &evnotify_ring_sq(map)[tail % EVNOTIFY_RING_SQ_ENTRIES];
	e->slot = slot;
	e->count = count;
	__atomic_store_n(&r->sq_tail, tail + 1, __ATOMIC_RELEASE);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	return (__atomic_load_n(&r->flags, __ATOMIC_RELAXED) & EVNOTIFY_RING_NEED_WAKEUP) != 0;
}

/*
 * Takes the oldest completion not consumed into *cqe.  Returns 1, or 0 if
 * there is none.  One thread consumes at a time.
 */
static __inline__ int evnotify_ring_reap(void *map, struct evnotify_cqe *cqe)
{
	struct evnotify_ring *r = evnotify_ring_of(map);
	__u32 head = __atomic_load_n(&r->cq_head, __ATOMIC_RELAXED);

	if (head == __atomic_load_n(&r->cq_tail, __ATOMIC_ACQUIRE))
		return 0;
	*cqe = evnotify_ring_cq(map)[head % EVNOTIFY_RING_CQ_ENTRIES];
	__atomic_store_n(&r->cq_head, head + 1, __ATOMIC_RELEASE);
	return 1;
}
#endif /* !__KERNEL__ */

#endif /* _UAPI_LINUX_EVNOTIFY_H */
