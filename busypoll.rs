// SPDX-License-Identifier: GPL-2.0

//! Adaptive busy polling for a channel's thread, after KVM's halt polling. Owns the window's
//! policy (pure arithmetic, with its KUnit cases); calls nothing of the module.
//!
//! A kick that finds the thread asleep pays a wake-up: on another CPU that is an IPI and the
//! idle exit, the largest part of a round trip. So when the thread runs out of work it first
//! spins for a short window, and only then sleeps. The window follows the traffic: it grows
//! (from [`GROW_START_NS`], doubling, up to the channel's limit) while kicks keep arriving
//! within the limit of going idle but after the window, and drops to zero as soon as an idle
//! spell outlasts the limit or ends with a timer, so that a quiet channel burns no CPU. The
//! spin also stops when another task wants the CPU.

use kernel::prelude::kunit_tests;

/// The first window, in nanoseconds, once polling looks worthwhile (as KVM's
/// `halt_poll_ns_grow_start`).
pub(crate) const GROW_START_NS: u64 = 10_000;

/// The current window of one thread, in nanoseconds.
#[derive(Default)]
pub(crate) struct Window {
    window_ns: u64,
}

impl Window {
    /// How long to spin before sleeping.
    pub(crate) fn ns(&self) -> u64 {
        self.window_ns
    }

    /// Adjusts the window after an idle spell of `idle_ns` (from going idle to finding work),
    /// under the channel's limit `limit_ns` (0 turns polling off). `caught` tells whether the
    /// spin saw the work arrive; `event` whether the spell ended with an event (a kick, a
    /// hang-up, a timer change) rather than with a timer falling due.
    pub(crate) fn adapt(&mut self, idle_ns: u64, limit_ns: u32, caught: bool, event: bool) {
        let limit = u64::from(limit_ns);
        self.window_ns = if caught {
            // The spin caught the work: the window is right.
            self.window_ns
        } else if event && idle_ns <= limit {
            // A longer spin, still within the limit, would have caught it.
            self.window_ns.saturating_mul(2).max(GROW_START_NS)
        } else {
            // Spinning would not have helped: the spell was long, or a timer (whose deadline
            // the thread sleeps until anyway) ended it.
            0
        }
        .min(limit);
    }
}

#[kunit_tests(rust_evnotify_busypoll)]
mod tests {
    use super::*;

    const LIMIT: u32 = 200_000;

    #[test]
    fn grows_by_doubling_up_to_the_limit() {
        let mut w = Window::default();
        assert_eq!(w.ns(), 0);
        // Kicks that come back within the limit but after the window: grow.
        let mut want = GROW_START_NS;
        for _ in 0..10 {
            w.adapt(LIMIT.into(), LIMIT, false, true);
            assert_eq!(w.ns(), want);
            want = (want * 2).min(LIMIT.into());
        }
        assert_eq!(w.ns(), u64::from(LIMIT));
    }

    #[test]
    fn kept_while_catching() {
        let mut w = Window::default();
        w.adapt(1_000, LIMIT, false, true);
        w.adapt(1_000, LIMIT, false, true);
        for _ in 0..5 {
            w.adapt(500, LIMIT, true, true);
            assert_eq!(w.ns(), 2 * GROW_START_NS);
        }
    }

    #[test]
    fn drops_to_zero() {
        // Each way down starts from a grown window.
        let grown = || {
            let mut w = Window::default();
            w.adapt(1_000, LIMIT, false, true);
            assert_eq!(w.ns(), GROW_START_NS);
            w
        };
        // An idle spell longer than the limit.
        let mut w = grown();
        w.adapt(u64::from(LIMIT) + 1, LIMIT, false, true);
        assert_eq!(w.ns(), 0);
        // A spell ended by a timer, however short.
        let mut w = grown();
        w.adapt(1, LIMIT, false, false);
        assert_eq!(w.ns(), 0);
        // Polling turned off, even when the spin caught the work.
        let mut w = grown();
        w.adapt(1, 0, true, true);
        assert_eq!(w.ns(), 0);
        let mut w = grown();
        w.adapt(u64::MAX, u32::MAX, false, true);
        assert_eq!(w.ns(), 0);
    }

    #[test]
    fn clamped_when_the_limit_falls() {
        let mut w = Window::default();
        for _ in 0..10 {
            w.adapt(1_000, LIMIT, false, true);
        }
        w.adapt(1_000, 15_000, true, true);
        assert_eq!(w.ns(), 15_000);
        w.adapt(1_000, u32::MAX, false, true);
        assert_eq!(w.ns(), 30_000);
    }
}
