// SPDX-License-Identifier: GPL-2.0

//! Adaptive busy polling for a channel's thread, after KVM's halt polling.
//!
//! A kick that finds the thread asleep pays a wake-up: on another CPU that is an IPI and the
//! idle exit, the largest part of a round trip. So when the thread runs out of work it first
//! spins for a short window, and only then sleeps. The window follows the traffic: it grows
//! (from [`GROW_START_NS`], doubling, up to the channel's limit) while kicks keep arriving
//! within the limit of going idle but after the window, and drops to zero as soon as an idle
//! spell outlasts the limit or ends with a timer, so that a quiet channel burns no CPU. The
//! spin also stops when another task wants the CPU.

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
