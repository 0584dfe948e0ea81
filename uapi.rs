// SPDX-License-Identifier: GPL-2.0

//! Rust mirror of `include/uapi/linux/evnotify.h`, the one definition of the ABI. A leaf: it
//! calls nothing of the module.
//!
//! The sizes are asserted at compile time. The host test `user/evnotify-abi` compiles this very
//! file against a stand-in for the few `kernel` items it uses and compares every constant,
//! size, offset and ioctl number with the C header.

use kernel::{
    ioctl::{
        _IO,
        _IOR,
        _IOW, //
    },
    prelude::*,
    transmute, //
};

pub(crate) const API_VERSION: u32 = 10;
pub(crate) const NR_SLOTS: usize = 64;
pub(crate) const MAX_KICK: u32 = 1 << 20;
pub(crate) const MAX_PENDING: u64 = 1 << 20;
/// Shortest timer period, in nanoseconds (1 ms), kept from the jiffy-timer days: shorter
/// periods would be a compatible change, not yet measured.
pub(crate) const MIN_PERIOD_NS: u64 = 1_000_000;
/// Longest timer period, in nanoseconds (one day).
pub(crate) const MAX_PERIOD_NS: u64 = 86_400_000_000_000;
/// `evnotify_timer.flags`: the first tick at `start_ns`, on CLOCK_MONOTONIC.
pub(crate) const TIMER_ABSTIME: u32 = 1 << 0;
/// Latest `start_ns` (about 146 years after boot): a tick a period past it still fits `ktime_t`.
pub(crate) const MAX_START_NS: u64 = 1 << 62;
/// Largest busy-poll limit, in nanoseconds.
pub(crate) const MAX_BUSYPOLL_NS: u32 = 1_000_000;
/// The ring's mapping: its length, its queues' lengths and where they are in it.
pub(crate) const RING_SIZE: u32 = 4096;
pub(crate) const RING_SQ_ENTRIES: u32 = 128;
pub(crate) const RING_CQ_ENTRIES: u32 = 128;
pub(crate) const RING_SQ_OFFSET: u32 = 64;
pub(crate) const RING_CQ_OFFSET: u32 = 1088;
/// `evnotify_ring.flags`: the worker sleeps; a submission needs `IOC_RING_ENTER`.
pub(crate) const RING_NEED_WAKEUP: u32 = 1 << 0;

pub(crate) const F_NOTIFY: u64 = 1 << 0;
pub(crate) const F_SLOTS: u64 = 1 << 1;
pub(crate) const F_KICKFD: u64 = 1 << 2;
pub(crate) const F_FDINFO: u64 = 1 << 3;
pub(crate) const F_TIMER: u64 = 1 << 4;
pub(crate) const F_SIGNAL: u64 = 1 << 5;
pub(crate) const F_BUSYPOLL: u64 = 1 << 6;
pub(crate) const F_WORKERS: u64 = 1 << 7;
pub(crate) const F_CGROUPS: u64 = 1 << 8;
pub(crate) const F_TIMER_ABSTIME: u64 = 1 << 9;
pub(crate) const F_RING: u64 = 1 << 10;

/// The default signal of `IOC_SIGNAL`.
pub(crate) const SIGIO: i32 = kernel::bindings::SIGIO as i32;

pub(crate) const IOC_MAGIC: u32 = 0xE6;

/// `struct evnotify_version`.
#[repr(C)]
pub(crate) struct Version {
    pub(crate) api_version: u32,
    pub(crate) nr_slots: u32,
    pub(crate) features: u64,
}

/// `struct evnotify_attach`.
#[repr(C)]
pub(crate) struct Attach {
    pub(crate) slot: u32,
    pub(crate) fd: i32,
    pub(crate) flags: u32,
    pub(crate) reserved: u32,
}

/// `struct evnotify_kick`.
#[repr(C)]
pub(crate) struct Kick {
    pub(crate) slot: u32,
    pub(crate) count: u32,
    pub(crate) flags: u32,
    pub(crate) reserved: u32,
}

/// `struct evnotify_stats`.
#[repr(C)]
#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) kicks: u64,
    pub(crate) fd_kicks: u64,
    pub(crate) timer_ticks: u64,
    pub(crate) handled: u64,
    pub(crate) notifies: u64,
    pub(crate) signals: u64,
    pub(crate) dropped: u64,
    pub(crate) wakeups: u64,
    pub(crate) polled: u64,
    pub(crate) pending: u64,
    pub(crate) thread_pid: i32,
    pub(crate) attached: u32,
    pub(crate) kickfds: u32,
    pub(crate) timers: u32,
    pub(crate) signal_slots: u32,
    pub(crate) busypoll_ns: u32,
    pub(crate) coalesced: u64,
    pub(crate) sig_refused: u64,
}

/// `struct evnotify_timer`.
#[repr(C)]
pub(crate) struct TimerReq {
    pub(crate) slot: u32,
    pub(crate) flags: u32,
    pub(crate) period_ns: u64,
    pub(crate) ticks: u64,
    pub(crate) start_ns: u64,
}

/// `struct evnotify_signal`.
#[repr(C)]
pub(crate) struct SignalReq {
    pub(crate) slot: u32,
    pub(crate) signo: i32,
    pub(crate) flags: u32,
    pub(crate) reserved: u32,
}

/// `struct evnotify_busypoll`.
#[repr(C)]
pub(crate) struct BusyPollReq {
    pub(crate) limit_ns: u32,
    pub(crate) flags: u32,
    pub(crate) reserved: u64,
}

/// `struct evnotify_share`.
#[repr(C)]
pub(crate) struct ShareReq {
    pub(crate) fd: i32,
    pub(crate) flags: u32,
    pub(crate) reserved: u64,
}

/// `struct evnotify_worker`.
#[repr(C)]
#[derive(Default)]
pub(crate) struct WorkerInfo {
    pub(crate) worker_id: u32,
    pub(crate) thread_pid: i32,
    pub(crate) channels: u32,
    pub(crate) reserved: u32,
}

/// `struct evnotify_ring`: the control words at the start of the ring's page (`ring.rs`
/// accesses them as atomics, at these offsets).
#[repr(C)]
pub(crate) struct Ring {
    pub(crate) sq_head: u32,
    pub(crate) sq_tail: u32,
    pub(crate) cq_head: u32,
    pub(crate) cq_tail: u32,
    pub(crate) flags: u32,
    pub(crate) sq_dropped: u32,
    pub(crate) cq_overflow: u32,
    pub(crate) reserved: u32,
}

/// `struct evnotify_sqe`.
#[repr(C)]
pub(crate) struct Sqe {
    pub(crate) slot: u32,
    pub(crate) count: u32,
}

/// `struct evnotify_cqe`.
#[repr(C)]
pub(crate) struct Cqe {
    pub(crate) slot: u32,
    pub(crate) count: u32,
    pub(crate) seq: u64,
}

/// `struct evnotify_ring_stats`.
#[repr(C)]
#[derive(Default, Clone)]
pub(crate) struct RingStats {
    pub(crate) sq_kicks: u64,
    pub(crate) sq_dropped: u64,
    pub(crate) cq_events: u64,
    pub(crate) cq_kicks: u64,
    pub(crate) cq_overflow: u64,
    pub(crate) lost_kicks: u64,
    pub(crate) sq_head: u32,
    pub(crate) cq_tail: u32,
}

// SAFETY: `Version` is `repr(C)` with only integer fields and no padding.
unsafe impl transmute::AsBytes for Version {}
// SAFETY: `Attach` is `repr(C)` with only integer fields: every bit pattern is valid.
unsafe impl transmute::FromBytes for Attach {}
// SAFETY: `Kick` is `repr(C)` with only integer fields: every bit pattern is valid.
unsafe impl transmute::FromBytes for Kick {}
// SAFETY: `Stats` is `repr(C)` with only integer fields and no padding.
unsafe impl transmute::AsBytes for Stats {}
// SAFETY: `TimerReq` is `repr(C)` with only integer fields: every bit pattern is valid.
unsafe impl transmute::FromBytes for TimerReq {}
// SAFETY: `SignalReq` is `repr(C)` with only integer fields: every bit pattern is valid.
unsafe impl transmute::FromBytes for SignalReq {}
// SAFETY: `BusyPollReq` is `repr(C)` with only integer fields: every bit pattern is valid.
unsafe impl transmute::FromBytes for BusyPollReq {}
// SAFETY: `ShareReq` is `repr(C)` with only integer fields: every bit pattern is valid.
unsafe impl transmute::FromBytes for ShareReq {}
// SAFETY: `WorkerInfo` is `repr(C)` with only integer fields and no padding.
unsafe impl transmute::AsBytes for WorkerInfo {}
// SAFETY: `RingStats` is `repr(C)` with only integer fields and no padding.
unsafe impl transmute::AsBytes for RingStats {}

// No implicit padding may reach user space: each size is the sum of its fields.
const _: () = assert!(size_of::<Version>() == 16);
const _: () = assert!(size_of::<Attach>() == 16);
const _: () = assert!(size_of::<Kick>() == 16);
const _: () = assert!(size_of::<Stats>() == 120);
const _: () = assert!(size_of::<TimerReq>() == 32);
const _: () = assert!(size_of::<SignalReq>() == 16);
const _: () = assert!(size_of::<BusyPollReq>() == 16);
const _: () = assert!(size_of::<ShareReq>() == 16);
const _: () = assert!(size_of::<WorkerInfo>() == 16);
const _: () = assert!(size_of::<Ring>() == 32);
const _: () = assert!(size_of::<Sqe>() == 8);
const _: () = assert!(size_of::<Cqe>() == 16);
const _: () = assert!(size_of::<RingStats>() == 56);

pub(crate) const IOC_VERSION: u32 = _IOR::<Version>(IOC_MAGIC, 0x00);
pub(crate) const IOC_ATTACH: u32 = _IOW::<Attach>(IOC_MAGIC, 0x01);
pub(crate) const IOC_KICK: u32 = _IOW::<Kick>(IOC_MAGIC, 0x02);
pub(crate) const IOC_STATS: u32 = _IOR::<Stats>(IOC_MAGIC, 0x03);
pub(crate) const IOC_KICKFD: u32 = _IOW::<Attach>(IOC_MAGIC, 0x04);
pub(crate) const IOC_TIMER: u32 = _IOW::<TimerReq>(IOC_MAGIC, 0x05);
pub(crate) const IOC_SIGNAL: u32 = _IOW::<SignalReq>(IOC_MAGIC, 0x06);
pub(crate) const IOC_BUSYPOLL: u32 = _IOW::<BusyPollReq>(IOC_MAGIC, 0x07);
pub(crate) const IOC_SHARE_WORKER: u32 = _IOW::<ShareReq>(IOC_MAGIC, 0x08);
pub(crate) const IOC_WORKER: u32 = _IOR::<WorkerInfo>(IOC_MAGIC, 0x09);
pub(crate) const IOC_RING_ENTER: u32 = _IO(IOC_MAGIC, 0x0A);
pub(crate) const IOC_RING_STATS: u32 = _IOR::<RingStats>(IOC_MAGIC, 0x0B);

/// Checks a slot number from user space.
pub(crate) fn slot(slot: u32) -> Result<usize> {
    let slot = usize::try_from(slot).map_err(|_| EINVAL)?;
    if slot < NR_SLOTS {
        Ok(slot)
    } else {
        Err(EINVAL)
    }
}

/// The time of the first tick that a timer request asks for, on CLOCK_MONOTONIC, if it asks
/// for one (`TIMER_ABSTIME`; `Timer::new` checks the time). Only a start takes it: a cancel
/// (`period_ns == 0`) has no flags.
pub(crate) fn timer_start(req: &TimerReq) -> Result<Option<u64>> {
    match req.flags {
        0 => must_be_zero(0, req.start_ns).map(|()| None),
        TIMER_ABSTIME if req.period_ns != 0 => Ok(Some(req.start_ns)),
        _ => Err(EINVAL),
    }
}

/// Checks that the flags and reserved fields of a request are zero.
pub(crate) fn must_be_zero(flags: u32, reserved: impl Into<u64>) -> Result {
    if flags == 0 && reserved.into() == 0 {
        Ok(())
    } else {
        Err(EINVAL)
    }
}
