//! How a measurement runs: round trips timed into a histogram after a warm-up, rounds that
//! measurements take turns in, and progress on stderr (and to the watchdog).

use crate::watchdog;
use anyhow::Result;
use hdrhistogram::Histogram;
use std::{sync::OnceLock, time::Instant};

/// Measures `iters` round trips of `once`, after a warm-up.
pub(crate) fn measure(iters: u32, mut once: impl FnMut() -> Result<()>) -> Result<Histogram<u64>> {
    let mut h = Histogram::new(3)?;
    for _ in 0..iters / 10 {
        once()?;
        watchdog::beat();
    }
    for _ in 0..iters {
        let t = Instant::now();
        once()?;
        h.record(t.elapsed().as_nanos() as u64)?;
        watchdog::beat();
    }
    Ok(h)
}

/// Rounds the latency paths take turns in, so that slow phases of the emulator hit all of
/// them alike rather than whichever ran at that moment.
pub(crate) const ROUNDS: u32 = 20;

/// Says on stderr what is measured next, with the time since the first call: the place to
/// look when a run stalls.
pub(crate) fn progress(what: &str) {
    static START: OnceLock<Instant> = OnceLock::new();
    let t = START.get_or_init(Instant::now).elapsed();
    eprintln!("# {:7.1} s: {what}", t.as_secs_f64());
    watchdog::step(what);
}

/// The order of `n` measurements in round `round`: rotated by one each round, so that each
/// runs first, second, ... in turn.
pub(crate) fn turn(n: usize, round: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |i| (i + round) % n)
}
