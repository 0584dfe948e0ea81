//! The busy-poll sweep: the different-CPU ioctl round trip at each busy-poll limit.

use crate::{
    cpu::{pin, unpin, Pin},
    measure::ROUNDS,
    rtt::{interleaved, ModulePath, RoundTrip},
};
use anyhow::Result;
use serde::Serialize;
use std::time::Duration;

/// Busy-poll limits of the sweep.
pub(crate) const SWEEP_NS: [u32; 4] = [0, 50_000, 200_000, 1_000_000];

#[derive(Serialize, Default)]
pub(crate) struct SweepRow {
    limit_ns: u32,
    p50_ns: u64,
    p99_ns: u64,
    thread_cpu_share: f64,
    /// Of the kicks the thread found, the share a spin caught (the rest needed a wake-up).
    polled_share: f64,
}

/// The different-CPU ioctl round trip at each busy-poll limit, interleaved like the paths.
pub(crate) fn sweep(iters: u32) -> Result<Vec<SweepRow>> {
    let per = iters / 2 / ROUNDS;
    let (me, other) = Pin::Cross.cpus();
    let mut chans = SWEEP_NS
        .iter()
        .map(|&ns| ModulePath::new(false, Some(Duration::from_nanos(ns.into())), other))
        .collect::<Result<Vec<_>>>()?;
    let before = chans
        .iter()
        .map(|c| Ok(c.ch.stats()?))
        .collect::<Result<Vec<_>>>()?;
    pin(0, me)?;
    let mut paths: Vec<(&'static str, &mut dyn RoundTrip)> = chans
        .iter_mut()
        .map(|c| ("evnotify_ioctl", c as &mut dyn RoundTrip))
        .collect();
    let rows = interleaved(per, &mut paths)?;
    unpin()?;
    SWEEP_NS
        .iter()
        .zip(rows)
        .zip(chans.iter().zip(before))
        .map(|((&limit_ns, row), (c, b))| {
            let s = c.ch.stats()?;
            let polled = s.polled - b.polled;
            let found = polled + (s.wakeups - b.wakeups);
            Ok(SweepRow {
                limit_ns,
                p50_ns: row.hist.value_at_quantile(0.5),
                p99_ns: row.hist.value_at_quantile(0.99),
                thread_cpu_share: row.cpu_share.unwrap_or_default(),
                polled_share: polled as f64 / found.max(1) as f64,
            })
        })
        .collect()
}
