// SPDX-License-Identifier: GPL-2.0

//! Periodic ticks that a channel delivers on its own: pure arithmetic on the monotonic clock,
//! with its KUnit cases; calls only `uapi` for the bounds. The channel's hrtimer (`alarm` in
//! `shared.rs`) fires at the earliest deadline and signals lone ticks itself, as timerfd's
//! wakes its reader.

use crate::uapi;
use core::num::NonZeroU64;
use kernel::{
    prelude::*,
    time::{
        ClockSource,
        Delta,
        Instant,
        Monotonic, //
    }, //
};

/// A timer started at a given time (`Timer::new`) is placed after it by the time between two
/// reads of the clock: read again, up to `PLACE_TRIES` times, while that may exceed
/// `PLACE_SLACK` nanoseconds, and the closest pair kept.
const PLACE_SLACK: i64 = 1000;
const PLACE_TRIES: u32 = 16;

/// The shortest period, as a divisor (the `None` arm, not taken, is checked below).
const MIN_PERIOD: NonZeroU64 = match NonZeroU64::new(uapi::MIN_PERIOD_NS) {
    Some(p) => p,
    None => NonZeroU64::MAX,
};
const _: () =
    assert!(MIN_PERIOD.get() == uapi::MIN_PERIOD_NS && uapi::MIN_PERIOD_NS <= uapi::MAX_PERIOD_NS);

/// A periodic timer on one slot.
///
/// # Invariants
///
/// `period` (nanoseconds) is in `uapi::MIN_PERIOD_NS..=uapi::MAX_PERIOD_NS`, and `remaining`,
/// if set, is non-zero until `take_due` reports the timer expired; a stopped timer
/// ([`Timer::stopped`]), never started, has zero from the start.
pub(crate) struct Timer {
    period: NonZeroU64,
    next: Instant<Monotonic>,
    remaining: Option<u64>,
}

impl Timer {
    /// A timer whose first tick is one period from now, or at `first_ns` on CLOCK_MONOTONIC
    /// (at most `uapi::MAX_START_NS`; it may be past); `ticks == 0` means unlimited.
    pub(crate) fn new(period_ns: u64, ticks: u64, first_ns: Option<u64>) -> Result<Self> {
        let Some(first_ns) = first_ns else {
            return Self::starting(Instant::now(), period_ns, ticks);
        };
        if first_ns > uapi::MAX_START_NS {
            return Err(EINVAL);
        }
        // The kernel crate makes an `Instant` only from the clock: `first_ns` is placed from a
        // raw reading taken before it, so the tick is never early, and later by the time
        // between the two. Bracketed by a third reading, and read again while that time may
        // exceed `PLACE_SLACK` (an interrupt, the scheduler or a slow clocksource came between
        // them). The sum is `first_ns` plus that time: neither negative (`ktime_get` does not
        // go back: `clocksource_delta`) nor near `KTIME_MAX` (2^63 - 1, with `first_ns` at
        // most 2^62).
        let place = || {
            let raw = Monotonic::ktime_get();
            let now = Instant::now();
            let slack = Monotonic::ktime_get() - raw;
            (slack, now + Delta::from_nanos(first_ns as i64 - raw))
        };
        let mut best = place();
        for _ in 1..PLACE_TRIES {
            if best.0 <= PLACE_SLACK {
                break;
            }
            let next = place();
            if next.0 < best.0 {
                best = next;
            }
        }
        Self::first_at(best.1, period_ns, ticks)
    }

    /// A timer that is not running, for a slot that has none (see `slots::Extra`), never to be
    /// read: the shortest period, no tick left (`take_due` gives none, and says it expired).
    pub(crate) fn stopped(at: Instant<Monotonic>) -> Self {
        // INVARIANT: `MIN_PERIOD_NS` is in range (and not zero); `remaining` is zero, as after
        // `take_due` reported the timer expired.
        Self {
            period: MIN_PERIOD,
            next: at,
            remaining: Some(0),
        }
    }

    /// A timer whose first tick is one period after `start`.
    pub(crate) fn starting(start: Instant<Monotonic>, period_ns: u64, ticks: u64) -> Result<Self> {
        let t = Self::first_at(start, period_ns, ticks)?;
        Ok(Self {
            next: start + Delta::from_nanos(t.period.get() as i64),
            ..t
        })
    }

    /// A timer whose first tick is at `first`.
    fn first_at(first: Instant<Monotonic>, period_ns: u64, ticks: u64) -> Result<Self> {
        let period = NonZeroU64::new(period_ns)
            .filter(|p| (uapi::MIN_PERIOD_NS..=uapi::MAX_PERIOD_NS).contains(&p.get()))
            .ok_or(EINVAL)?;
        // INVARIANT: The period was checked; `remaining` is `None` for zero ticks.
        Ok(Self {
            period,
            next: first,
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
        // `late` is not negative. A `NonZeroU64` divisor leaves no division-by-zero panic call,
        // which objtool (7.2's and 7.3's) takes for a fall-through.
        let mut due = late as u64 / self.period + 1;
        if let Some(left) = self.remaining {
            due = due.min(left);
            self.remaining = Some(left - due);
        }
        self.next = self.next + Delta::from_nanos((due * self.period.get()) as i64);
        (due, self.remaining == Some(0))
    }

    /// When the next tick is due.
    pub(crate) fn deadline(&self) -> Instant<Monotonic> {
        self.next
    }

    /// The period in nanoseconds and the ticks left (0: unlimited), for reports.
    pub(crate) fn describe(&self) -> (i64, u64) {
        (self.period.get() as i64, self.remaining.unwrap_or(0))
    }
}

#[kunit_tests(rust_evnotify_timer)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn same(a: Instant<Monotonic>, b: Instant<Monotonic>) -> bool {
        (a - b).as_nanos() == 0
    }

    /// `n` periods of `p` nanoseconds after `t`, plus `extra` nanoseconds.
    fn at(t: Instant<Monotonic>, n: u64, p: u64, extra: i64) -> Instant<Monotonic> {
        t + Delta::from_nanos((n * p) as i64 + extra)
    }

    #[test]
    fn period_bounds() {
        let t = Instant::now();
        for bad in [
            0,
            uapi::MIN_PERIOD_NS - 1,
            uapi::MAX_PERIOD_NS + 1,
            u64::MAX,
        ] {
            assert!(Timer::starting(t, bad, 0).is_err());
        }
        for good in [uapi::MIN_PERIOD_NS, uapi::MAX_PERIOD_NS] {
            assert!(Timer::starting(t, good, 0).is_ok());
        }
    }

    #[test]
    fn first_tick_one_period_after_start() -> Result {
        let t = Instant::now();
        let mut timer = Timer::starting(t, MS, 0)?;
        assert_eq!(timer.take_due(at(t, 1, MS, -1)), (0, false));
        assert_eq!(timer.take_due(at(t, 1, MS, 0)), (1, false));
        assert_eq!(timer.take_due(at(t, 1, MS, 0)), (0, false));
        assert!(same(timer.deadline(), at(t, 2, MS, 0)));
        Ok(())
    }

    #[test]
    fn first_tick_at_a_given_time() -> Result {
        let t = Instant::now();
        let mut soon = Timer::new(MS, 2, Some(Monotonic::ktime_get() as u64 + 5 * MS))?;
        let after = Instant::now();
        // Never before the time asked for, nor later than the call.
        assert!((soon.deadline() - at(t, 5, MS, 0)).as_nanos() >= 0);
        assert!((soon.deadline() - at(after, 5, MS, 0)).as_nanos() <= 0);
        assert_eq!(soon.take_due(at(soon.deadline(), 0, MS, -1)), (0, false));
        assert_eq!(soon.take_due(soon.deadline()), (1, false));
        // A start long past owes every tick since, up to the limit.
        let mut past = Timer::new(MS, 0, Some(0))?;
        let (due, done) = past.take_due(Instant::now());
        assert!(due >= 1 && !done);
        let mut capped = Timer::new(MS, 3, Some(0))?;
        assert!(capped.take_due(Instant::now()).1);
        assert!(Timer::new(MS, 0, Some(uapi::MAX_START_NS)).is_ok());
        assert!(Timer::new(MS, 0, Some(uapi::MAX_START_NS + 1)).is_err());
        assert!(Timer::new(0, 0, Some(0)).is_err());
        Ok(())
    }

    #[test]
    fn catches_up_without_drift() -> Result {
        let t = Instant::now();
        let mut timer = Timer::starting(t, 3 * MS, 0)?;
        // Ten and a half periods late: ten ticks, and the next stays on the grid.
        assert_eq!(timer.take_due(at(t, 10, 3 * MS, 1_500_000)), (10, false));
        assert!(same(timer.deadline(), at(t, 11, 3 * MS, 0)));
        // A year late at the shortest period: every tick, counted in one step.
        let year = 365 * 86_400_000 * MS / uapi::MIN_PERIOD_NS;
        let mut fast = Timer::starting(t, uapi::MIN_PERIOD_NS, 0)?;
        let now = at(t, year, uapi::MIN_PERIOD_NS, 0);
        assert_eq!(fast.take_due(now), (year, false));
        assert!(same(
            fast.deadline(),
            at(t, year + 1, uapi::MIN_PERIOD_NS, 0)
        ));
        Ok(())
    }

    #[test]
    fn tick_limit_is_exact() -> Result {
        let t = Instant::now();
        let mut timer = Timer::starting(t, MS, 3)?;
        assert_eq!(timer.describe(), (MS as i64, 3));
        assert_eq!(timer.take_due(at(t, 1, MS, 0)), (1, false));
        // Far behind: only the ticks left, and the timer is done.
        assert_eq!(timer.take_due(at(t, 1000, MS, 0)), (2, true));
        let mut once = Timer::starting(t, MS, 1)?;
        assert_eq!(once.take_due(at(t, 5, MS, 0)), (1, true));
        // The largest limit is never reached by catching up at once.
        let mut big = Timer::starting(t, MS, u64::MAX)?;
        assert_eq!(big.take_due(at(t, 7, MS, 0)), (7, false));
        assert_eq!(big.describe(), (MS as i64, u64::MAX - 7));
        Ok(())
    }
}
