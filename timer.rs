// SPDX-License-Identifier: GPL-2.0

//! Periodic ticks that a channel's thread delivers on its own: pure arithmetic on the
//! monotonic clock, driven by the thread's timed waits.

use crate::uapi;
use kernel::{
    prelude::*,
    time::{
        Delta,
        Instant,
        Monotonic, //
    }, //
};

/// A periodic timer on one slot.
///
/// # Invariants
///
/// `period` is in `uapi::MIN_PERIOD_NS..=uapi::MAX_PERIOD_NS`, and `remaining`, if set, is
/// non-zero.
pub(crate) struct Timer {
    period: Delta,
    next: Instant<Monotonic>,
    remaining: Option<u64>,
}

impl Timer {
    /// A timer whose first tick is one period from now; `ticks == 0` means unlimited.
    pub(crate) fn new(period_ns: u64, ticks: u64) -> Result<Self> {
        if !(uapi::MIN_PERIOD_NS..=uapi::MAX_PERIOD_NS).contains(&period_ns) {
            return Err(EINVAL);
        }
        let period = Delta::from_nanos(period_ns as i64);
        // INVARIANT: The period was checked; `remaining` is `None` for zero ticks.
        Ok(Self {
            period,
            next: Instant::now() + period,
            remaining: (ticks != 0).then_some(ticks),
        })
    }

    /// The ticks due at `now`, late ones included, so none is ever skipped. Returns the count
    /// and whether the timer has expired for good.
    pub(crate) fn take_due(&mut self, now: Instant<Monotonic>) -> (u64, bool) {
        let late = (now - self.next).as_nanos();
        if late < 0 {
            return (0, false);
        }
        let mut due = (late / self.period.as_nanos()) as u64 + 1;
        if let Some(left) = self.remaining {
            due = due.min(left);
            self.remaining = Some(left - due);
        }
        self.next = self.next + Delta::from_nanos(due as i64 * self.period.as_nanos());
        (due, self.remaining == Some(0))
    }

    /// When the next tick is due.
    pub(crate) fn deadline(&self) -> Instant<Monotonic> {
        self.next
    }

    /// The period in nanoseconds and the ticks left (0: unlimited), for reports.
    pub(crate) fn describe(&self) -> (i64, u64) {
        (self.period.as_nanos(), self.remaining.unwrap_or(0))
    }
}
