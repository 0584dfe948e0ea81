//! Scaling: the round trip on one channel while many others are open and active, and the
//! memory a channel with its own kernel thread takes.

use crate::{
    cpu::{pin, unpin},
    measure::{measure, turn, ROUNDS},
};
use anyhow::{ensure, Context, Result};
use evnotify::{Channel, Notifier};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::{thread, time::Duration};

fn mem_free_kib() -> Result<i64> {
    let m = std::fs::read_to_string("/proc/meminfo")?;
    m.lines()
        .find_map(|l| l.strip_prefix("MemFree:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("MemFree in /proc/meminfo")
}

#[derive(Serialize, Default)]
pub(crate) struct ScaleRow {
    channels: usize,
    pub(crate) rtt_p50_ns: u64,
    pub(crate) rtt_p99_ns: u64,
}

impl ScaleRow {
    /// One row per channel count, from the round trips measured at it.
    pub(crate) fn rows(counts: &[usize], hs: &[Histogram<u64>]) -> Vec<Self> {
        counts
            .iter()
            .zip(hs)
            .map(|(&channels, h)| ScaleRow {
                channels,
                rtt_p50_ns: h.value_at_quantile(0.5),
                rtt_p99_ns: h.value_at_quantile(0.99),
            })
            .collect()
    }
}

/// Round trip on one channel while `n - 1` others are open and active: each has an eventfd and
/// a 1 s timer, so each kernel thread wakes once a second.
pub(crate) fn scaling(iters: u32) -> Result<(Vec<ScaleRow>, i64)> {
    let limit = libc::rlimit {
        rlim_cur: 8192,
        rlim_max: 8192,
    };
    // SAFETY: Plain setrlimit call with a valid struct.
    ensure!(
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } == 0,
        "raise RLIMIT_NOFILE"
    );
    unpin()?;
    // One measured channel throughout; the others are opened and closed around it. The sizes
    // take turns over `ROUNDS / 4` rounds, like the latency paths, so that a slow phase of
    // the emulator does not land on one size alone.
    const SIZES: [usize; 4] = [1, 16, 256, 1024];
    let rounds = (ROUNDS / 4) as usize;
    let per = iters / 4 / rounds as u32;
    let (ch, n) = (Channel::open()?, Notifier::new()?);
    ch.attach(0, &n)?;
    ch.kick(0, 1)?;
    ensure!(n.wait()? == 1, "warm-up kick");
    ch.pin_thread(1)?;
    let mut hs = SIZES
        .iter()
        .map(|_| Histogram::<u64>::new(3))
        .collect::<Result<Vec<_>, _>>()?;
    let mut bg: Vec<(Channel, Notifier)> = vec![];
    for round in 0..rounds {
        for k in turn(SIZES.len(), round) {
            let size = SIZES[k];
            bg.truncate(size - 1);
            while bg.len() < size - 1 {
                let (c, e) = (Channel::open()?, Notifier::new()?);
                c.attach(0, &e)?;
                // Spread the timers' phases so they do not all fire together.
                thread::sleep(Duration::from_micros(1000 / size as u64));
                c.set_timer(0, Duration::from_secs(1), 0)?;
                bg.push((c, e));
            }
            pin(0, 0)?;
            let h = measure(per, || {
                ch.kick(0, 1)?;
                ensure!(n.wait()? == 1, "coalesced round trip");
                Ok(())
            })?;
            unpin()?;
            hs[k].add(h)?;
        }
    }
    // The memory measure needs every channel of the per-user limit (1024 by default).
    drop((bg, ch, n));
    let rows = ScaleRow::rows(&SIZES, &hs);
    // Memory: channels with a kernel thread each (started by a first kick) and nothing
    // attached, MemFree before and after.
    const N: i64 = 1024;
    let before = mem_free_kib()?;
    let chans = (0..N)
        .map(|_| -> Result<Channel> {
            let c = Channel::open()?;
            c.kick(0, 1)?;
            Ok(c)
        })
        .collect::<Result<Vec<_>>>()?;
    // Let every new thread run once, so its stack and state are counted.
    thread::sleep(Duration::from_millis(200));
    let after = mem_free_kib()?;
    drop(chans);
    Ok((rows, (before - after) * 1024 / N))
}
