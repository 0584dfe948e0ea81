//! `evnotify ping`: kick a slot and time each round trip to its eventfd.

use crate::args::PingArgs;
use crate::dev::{kick_write, Dev};
use crate::info::print_stats;
use crate::json::Output;
use anyhow::Result;
use evnotify::Notifier;
use hdrhistogram::Histogram;
use serde_json::json;
use std::time::{Duration, Instant};

/// Blocks until `want` notifications arrived on `n`, attached to `slot`.
fn collect(dev: &Dev, n: &Notifier, slot: u32, want: u64) -> Result<u64> {
    let mut got = 0;
    while got < want {
        let v = dev.check(n.wait_timeout(Duration::from_secs(10)), || {
            format!("wait for slot {slot}'s eventfd")
        })?;
        if v == 0 {
            return Err(dev.stalled(format!(
                "slot {slot}: no notification within 10 s ({got} of {want} arrived)"
            )));
        }
        got += v;
    }
    Ok(got)
}

pub fn ping(dev: &Dev, a: &PingArgs, out: Output) -> Result<()> {
    let (slot, burst) = (a.slot, a.burst);
    let n = dev.notifier(slot, "notify")?;
    dev.attach(slot, &n)?;
    let kick = dev.notifier(slot, "kick")?;
    if a.kickfd {
        dev.attach_kickfd(slot, &kick)?;
    }
    let how = if a.kickfd { "kickfd" } else { "ioctl" };
    let mut hist = Histogram::<u64>::new(3)?;
    for i in 0..a.count {
        let t = Instant::now();
        if a.kickfd {
            dev.check(kick.post(burst.into()), || kick_write(slot, burst.into()))?;
        } else {
            dev.kick(slot, burst)?;
        }
        let got = collect(dev, &n, slot, burst.into())?;
        let ns = t.elapsed().as_nanos() as u64;
        hist.record(ns)?;
        if !a.quiet && !out.json {
            println!(
                "kick {i} ({how}): slot {slot} +{burst} -> notified {got} in {:.1} us",
                ns as f64 / 1e3
            );
        }
    }
    // The last notification can come before the thread has retired its batch: the counters
    // shown are those of a quiet channel, every delivery counted.
    dev.wait_idle(Duration::from_secs(10))?;
    let (min, p50, p99, max) = (
        hist.min(),
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.99),
        hist.max(),
    );
    if out.json {
        return out.emit(json!({
            "device": dev.path,
            "slot": slot,
            "burst": burst,
            "kick": how,
            "round_trips": a.count,
            "rtt_ns": { "min": min, "p50": p50, "p99": p99, "max": max, "mean": hist.mean() },
            "stats": dev.stats()?,
        }));
    }
    let us = |ns: u64| ns as f64 / 1e3;
    println!(
        "{} round trips: min {:.1} us, p50 {:.1} us, p99 {:.1} us, max {:.1} us",
        a.count,
        us(min),
        us(p50),
        us(p99),
        us(max)
    );
    print_stats(dev)
}
