//! `sys`: the raw ABI of `include/uapi/linux/evnotify.h` (see the crate root).

use std::mem::size_of;

/// `EVNOTIFY_API_VERSION`: the version this crate speaks.
pub const API_VERSION: u32 = 10;
/// `EVNOTIFY_NR_SLOTS`: notify slots per channel.
pub const NR_SLOTS: u32 = 64;
/// `EVNOTIFY_MAX_KICK`: the largest count one kick accepts.
pub const MAX_KICK: u32 = 1 << 20;
/// `EVNOTIFY_MAX_PENDING`: the most kicks and ticks one slot holds; more are coalesced.
pub const MAX_PENDING: u64 = 1 << 20;
/// `EVNOTIFY_F_NOTIFY`: attach, kick, stats.
pub const F_NOTIFY: u64 = 1 << 0;
/// `EVNOTIFY_F_SLOTS`: [`NR_SLOTS`] slots per channel.
pub const F_SLOTS: u64 = 1 << 1;
/// `EVNOTIFY_F_KICKFD`: kick eventfds.
pub const F_KICKFD: u64 = 1 << 2;
/// `EVNOTIFY_F_FDINFO`: state in `/proc/<pid>/fdinfo/<fd>`.
pub const F_FDINFO: u64 = 1 << 3;
/// `EVNOTIFY_F_TIMER`: kernel timers.
pub const F_TIMER: u64 = 1 << 4;
/// `EVNOTIFY_F_SIGNAL`: fasync-style signals.
pub const F_SIGNAL: u64 = 1 << 5;
/// `EVNOTIFY_F_BUSYPOLL`: the thread spins before it sleeps.
pub const F_BUSYPOLL: u64 = 1 << 6;
/// `EVNOTIFY_F_WORKERS`: shared workers ([`IOC_SHARE_WORKER`], [`IOC_WORKER`]).
pub const F_WORKERS: u64 = 1 << 7;
/// `EVNOTIFY_F_CGROUPS`: a worker's thread runs in the cgroups of the task that started it
/// (set by kernels with cgroups).
pub const F_CGROUPS: u64 = 1 << 8;
/// `EVNOTIFY_F_TIMER_ABSTIME`: timers started at a given time ([`TIMER_ABSTIME`]).
pub const F_TIMER_ABSTIME: u64 = 1 << 9;
/// `EVNOTIFY_F_RING`: the event ring (`mmap`, [`IOC_RING_ENTER`], [`IOC_RING_STATS`]).
pub const F_RING: u64 = 1 << 10;
/// `EVNOTIFY_MIN_PERIOD_NS`: the shortest timer period (1 ms).
pub const MIN_PERIOD_NS: u64 = 1_000_000;
/// `EVNOTIFY_MAX_PERIOD_NS`: the longest timer period (1 day).
pub const MAX_PERIOD_NS: u64 = 86_400_000_000_000;
/// `EVNOTIFY_TIMER_ABSTIME`: [`Timer::flags`] for a first tick at [`Timer::start_ns`].
pub const TIMER_ABSTIME: u32 = 1 << 0;
/// `EVNOTIFY_MAX_START_NS`: the latest [`Timer::start_ns`] (2^62 ns after boot).
pub const MAX_START_NS: u64 = 1 << 62;
/// `EVNOTIFY_MAX_BUSYPOLL_NS`: the largest busy-poll limit (1 ms).
pub const MAX_BUSYPOLL_NS: u32 = 1_000_000;
/// `EVNOTIFY_RING_SIZE`: the length of the ring's mapping (one page).
pub const RING_SIZE: u32 = 4096;
/// `EVNOTIFY_RING_SQ_ENTRIES`: the submission queue's length.
pub const RING_SQ_ENTRIES: u32 = 128;
/// `EVNOTIFY_RING_CQ_ENTRIES`: the completion queue's length.
pub const RING_CQ_ENTRIES: u32 = 128;
/// `EVNOTIFY_RING_SQ_OFFSET`: where the submission queue starts in the mapping.
pub const RING_SQ_OFFSET: u32 = 64;
/// `EVNOTIFY_RING_CQ_OFFSET`: where the completion queue starts in the mapping.
pub const RING_CQ_OFFSET: u32 = 1088;
/// `EVNOTIFY_RING_NEED_WAKEUP`: [`Ring::flags`]: the thread sleeps; call [`IOC_RING_ENTER`].
pub const RING_NEED_WAKEUP: u32 = 1 << 0;
/// `EVNOTIFY_IOC_MAGIC`: the ioctl type byte.
pub const IOC_MAGIC: u8 = 0xE6;

/// `struct evnotify_version`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    /// [`API_VERSION`].
    pub api_version: u32,
    /// [`NR_SLOTS`].
    pub nr_slots: u32,
    /// `F_*` bits.
    pub features: u64,
}

/// `struct evnotify_attach`, for both `IOC_ATTACH` and `IOC_KICKFD`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Attach {
    /// 0 .. [`NR_SLOTS`] - 1.
    pub slot: u32,
    /// The eventfd; -1 detaches.
    pub fd: i32,
    /// Must be 0.
    pub flags: u32,
    /// Must be 0.
    pub reserved: u32,
}

/// `struct evnotify_kick`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Kick {
    /// 0 .. [`NR_SLOTS`] - 1.
    pub slot: u32,
    /// 1 ..= [`MAX_KICK`].
    pub count: u32,
    /// Must be 0.
    pub flags: u32,
    /// Must be 0.
    pub reserved: u32,
}

/// `struct evnotify_stats`: a consistent snapshot of a channel's counters, in which
/// `kicks + timer_ticks == handled + pending + coalesced` (modulo 2^64).
///
/// With the `serde` feature it is `Serialize` and `Deserialize`, with the header's field
/// names (those of `/proc/<pid>/fdinfo/<fd>` too): a stable format.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Stats {
    /// Kicks accepted, by ioctl and by kick eventfd.
    pub kicks: u64,
    /// Of which came from kick eventfd writes.
    pub fd_kicks: u64,
    /// Ticks queued by timers.
    pub timer_ticks: u64,
    /// Kicks and ticks taken by the thread.
    pub handled: u64,
    /// `eventfd_signal()` calls made by the thread.
    pub notifies: u64,
    /// Process signals sent.
    pub signals: u64,
    /// Handled with no eventfd, no signal and no event ring to deliver to.
    pub dropped: u64,
    /// Times the thread woke up from sleep and found work (on a shared worker: counted on
    /// the first channel with work it serves after the sleep, so others may show 0).
    pub wakeups: u64,
    /// Times it found work while busy polling, without sleeping (counted like `wakeups`).
    pub polled: u64,
    /// Kicks and ticks not yet handled (or being delivered).
    pub pending: u64,
    /// The kernel thread's pid: 0 until it starts (and in a child pid namespace).
    pub thread_pid: i32,
    /// Slots with a notify eventfd.
    pub attached: u32,
    /// Slots with a kick eventfd whose last descriptor user space has not closed (fdinfo shows
    /// such a closed one as "closed" until it is released).
    pub kickfds: u32,
    /// Slots with a running timer.
    pub timers: u32,
    /// Slots that signal a process.
    pub signal_slots: u32,
    /// The thread's busy-poll limit in nanoseconds, 0 = off.
    pub busypoll_ns: u32,
    /// Kicks and ticks merged away: beyond [`MAX_PENDING`], or echoes.
    pub coalesced: u64,
    /// Signal sends refused: permission, LSM, or a full real-time signal queue.
    pub sig_refused: u64,
}

/// `struct evnotify_timer`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Timer {
    /// 0 .. [`NR_SLOTS`] - 1.
    pub slot: u32,
    /// 0, or [`TIMER_ABSTIME`] (with a period, not a cancel).
    pub flags: u32,
    /// 0 cancels, else [`MIN_PERIOD_NS`] ..= [`MAX_PERIOD_NS`].
    pub period_ns: u64,
    /// Ticks to deliver, then stop; 0 = until cancelled.
    pub ticks: u64,
    /// With [`TIMER_ABSTIME`], the first tick's time on the kernel's `CLOCK_MONOTONIC` (that of
    /// the initial time namespace), at most
    /// [`MAX_START_NS`]; else 0.
    pub start_ns: u64,
}

/// `struct evnotify_signal`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Signal {
    /// 0 .. [`NR_SLOTS`] - 1.
    pub slot: u32,
    /// 1 ..= 64; 0 = `SIGIO`; -1 = stop signalling.
    pub signo: i32,
    /// Must be 0.
    pub flags: u32,
    /// Must be 0.
    pub reserved: u32,
}

/// `struct evnotify_busypoll`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BusyPoll {
    /// 0 (off) ..= [`MAX_BUSYPOLL_NS`].
    pub limit_ns: u32,
    /// Must be 0.
    pub flags: u32,
    /// Must be 0.
    pub reserved: u64,
}

/// `struct evnotify_share`, for `IOC_SHARE_WORKER`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    /// Another open `/dev/evnotify` channel, whose worker this channel is to use.
    pub fd: i32,
    /// Must be 0.
    pub flags: u32,
    /// Must be 0.
    pub reserved: u64,
}

/// `struct evnotify_worker`, from `IOC_WORKER`: the worker (kernel thread) a channel uses.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Worker {
    /// 0 until the channel has a worker, then its id: its thread is named
    /// `evnotify/<id>`.
    pub worker_id: u32,
    /// The worker thread's pid, as [`Stats::thread_pid`].
    pub thread_pid: i32,
    /// Open channels that use the worker.
    pub channels: u32,
    /// 0.
    pub reserved: u32,
}

/// `struct evnotify_ring`: the control words at the start of the ring's mapping.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Ring {
    /// Kernel: submissions taken.
    pub sq_head: u32,
    /// User: submissions published.
    pub sq_tail: u32,
    /// User: completions consumed.
    pub cq_head: u32,
    /// Kernel: completions posted.
    pub cq_tail: u32,
    /// Kernel: [`RING_NEED_WAKEUP`].
    pub flags: u32,
    /// Kernel: the low 32 bits of [`RingStats::sq_dropped`].
    pub sq_dropped: u32,
    /// Kernel: the low 32 bits of [`RingStats::cq_overflow`].
    pub cq_overflow: u32,
    /// Unused.
    pub reserved: u32,
}

/// `struct evnotify_sqe`: a submission.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sqe {
    /// The slot to kick.
    pub slot: u32,
    /// 1 ..= [`MAX_KICK`] kicks.
    pub count: u32,
}

/// `struct evnotify_cqe`: a completion.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Cqe {
    /// The slot of the batch.
    pub slot: u32,
    /// Kicks and ticks in the batch.
    pub count: u32,
    /// Completions produced before this one.
    pub seq: u64,
}

/// `struct evnotify_ring_stats`, from `IOC_RING_STATS`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RingStats {
    /// Kicks taken from the submission queue.
    pub sq_kicks: u64,
    /// Entries skipped: bad slot or count, or a wild `sq_tail`.
    pub sq_dropped: u64,
    /// Completions posted.
    pub cq_events: u64,
    /// Kicks and ticks they report.
    pub cq_kicks: u64,
    /// Completions not posted: the queue was full.
    pub cq_overflow: u64,
    /// Kicks and ticks those would have reported.
    pub lost_kicks: u64,
    /// The kernel's `sq_head`.
    pub sq_head: u32,
    /// The kernel's `cq_tail`.
    pub cq_tail: u32,
}

/// `EVNOTIFY_IOC_VERSION`.
pub const IOC_VERSION: u64 = nix::request_code_read!(IOC_MAGIC, 0x00, size_of::<Version>()) as u64;
/// `EVNOTIFY_IOC_ATTACH`.
pub const IOC_ATTACH: u64 = nix::request_code_write!(IOC_MAGIC, 0x01, size_of::<Attach>()) as u64;
/// `EVNOTIFY_IOC_KICK`.
pub const IOC_KICK: u64 = nix::request_code_write!(IOC_MAGIC, 0x02, size_of::<Kick>()) as u64;
/// `EVNOTIFY_IOC_STATS`.
pub const IOC_STATS: u64 = nix::request_code_read!(IOC_MAGIC, 0x03, size_of::<Stats>()) as u64;
/// `EVNOTIFY_IOC_KICKFD`.
pub const IOC_KICKFD: u64 = nix::request_code_write!(IOC_MAGIC, 0x04, size_of::<Attach>()) as u64;
/// `EVNOTIFY_IOC_TIMER`.
pub const IOC_TIMER: u64 = nix::request_code_write!(IOC_MAGIC, 0x05, size_of::<Timer>()) as u64;
/// `EVNOTIFY_IOC_SIGNAL`.
pub const IOC_SIGNAL: u64 = nix::request_code_write!(IOC_MAGIC, 0x06, size_of::<Signal>()) as u64;
/// `EVNOTIFY_IOC_BUSYPOLL`.
pub const IOC_BUSYPOLL: u64 =
    nix::request_code_write!(IOC_MAGIC, 0x07, size_of::<BusyPoll>()) as u64;
/// `EVNOTIFY_IOC_SHARE_WORKER`.
pub const IOC_SHARE_WORKER: u64 =
    nix::request_code_write!(IOC_MAGIC, 0x08, size_of::<Share>()) as u64;
/// `EVNOTIFY_IOC_WORKER`.
pub const IOC_WORKER: u64 = nix::request_code_read!(IOC_MAGIC, 0x09, size_of::<Worker>()) as u64;
/// `EVNOTIFY_IOC_RING_ENTER`.
#[allow(
    clippy::unnecessary_cast,
    reason = "nix's ioctl number type is u64 with glibc, not with every libc"
)]
pub const IOC_RING_ENTER: u64 = nix::request_code_none!(IOC_MAGIC, 0x0A) as u64;
/// `EVNOTIFY_IOC_RING_STATS`.
pub const IOC_RING_STATS: u64 =
    nix::request_code_read!(IOC_MAGIC, 0x0B, size_of::<RingStats>()) as u64;
/// Every ioctl number of the header, in order.
pub const IOCTLS: [u64; 12] = [
    IOC_VERSION,
    IOC_ATTACH,
    IOC_KICK,
    IOC_STATS,
    IOC_KICKFD,
    IOC_TIMER,
    IOC_SIGNAL,
    IOC_BUSYPOLL,
    IOC_SHARE_WORKER,
    IOC_WORKER,
    IOC_RING_ENTER,
    IOC_RING_STATS,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_sizes_are_multiples_of_64_bits() {
        for size in [
            size_of::<Version>(),
            size_of::<Attach>(),
            size_of::<Kick>(),
            size_of::<Stats>(),
            size_of::<Timer>(),
            size_of::<Signal>(),
            size_of::<BusyPoll>(),
            size_of::<Share>(),
            size_of::<Worker>(),
            size_of::<Ring>(),
            size_of::<Sqe>(),
            size_of::<Cqe>(),
            size_of::<RingStats>(),
        ] {
            assert_eq!(size % 8, 0, "size {size}");
        }
    }

    /// Only where the generic `_IOC` layout holds: mips, powerpc, sparc and alpha have 13 size
    /// bits and other direction values.
    #[test]
    #[cfg(any(
        target_arch = "x86",
        target_arch = "x86_64",
        target_arch = "arm",
        target_arch = "aarch64",
        target_arch = "riscv32",
        target_arch = "riscv64",
        target_arch = "loongarch64",
        target_arch = "s390x"
    ))]
    fn ioctl_numbers_encode_direction_size_and_magic() {
        // The generic _IOC layout: dir(2) << 30 | size(14) << 16 | type(8) << 8 | nr(8), with
        // _IOC_WRITE 1 and _IOC_READ 2.
        let dec = |n: u64| (n >> 30, (n >> 16) & 0x3fff, (n >> 8) & 0xff, n & 0xff);
        assert_eq!(dec(IOC_VERSION), (2, 16, 0xE6, 0));
        assert_eq!(dec(IOC_ATTACH), (1, 16, 0xE6, 1));
        assert_eq!(dec(IOC_KICK), (1, 16, 0xE6, 2));
        assert_eq!(dec(IOC_STATS), (2, 120, 0xE6, 3));
        assert_eq!(dec(IOC_KICKFD), (1, 16, 0xE6, 4));
        assert_eq!(dec(IOC_TIMER), (1, 32, 0xE6, 5));
        assert_eq!(dec(IOC_SIGNAL), (1, 16, 0xE6, 6));
        assert_eq!(dec(IOC_BUSYPOLL), (1, 16, 0xE6, 7));
        assert_eq!(dec(IOC_SHARE_WORKER), (1, 16, 0xE6, 8));
        assert_eq!(dec(IOC_WORKER), (2, 16, 0xE6, 9));
        assert_eq!(dec(IOC_RING_ENTER), (0, 0, 0xE6, 10));
        assert_eq!(dec(IOC_RING_STATS), (2, 56, 0xE6, 11));
    }

    /// The serde names are the header's, as fdinfo prints them, and a round trip keeps
    /// every value.
    #[cfg(feature = "serde")]
    #[test]
    fn stats_serialize_with_the_headers_names() {
        let s = Stats {
            kicks: 1,
            fd_kicks: 2,
            thread_pid: -3,
            busypoll_ns: 4,
            sig_refused: u64::MAX,
            ..Default::default()
        };
        let v = serde_json::to_value(s).unwrap();
        let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        let mut want = [
            "kicks",
            "fd_kicks",
            "timer_ticks",
            "handled",
            "notifies",
            "signals",
            "dropped",
            "wakeups",
            "polled",
            "pending",
            "thread_pid",
            "attached",
            "kickfds",
            "timers",
            "signal_slots",
            "busypoll_ns",
            "coalesced",
            "sig_refused",
        ];
        want.sort();
        assert_eq!(keys, want);
        assert_eq!(v["thread_pid"], -3);
        assert_eq!(serde_json::from_value::<Stats>(v).unwrap(), s);
    }
}
