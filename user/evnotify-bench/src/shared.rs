//! Many channels on a few shared workers (issue 11: 100,000 channels on one machine).
//!
//! `WORKERS` leader channels each start a worker (kernel thread); every other channel shares
//! one of them, round robin (`Channel::share_worker`). Each channel gets an eventfd and one
//! kick whose delivery is read back, so every channel has been active once. Measured: the
//! round trip on one channel (the first leader, its worker pinned) with 1, N/100, N/10 and N
//! channels open, the kernel memory each channel adds (against channels with a worker
//! each), and the time to open, first kick and close them all.
//!
//! Needs the module loaded with `max_channels` and `max_user_channels` of at least N (they
//! default to 4096 and 1024) and 2 descriptors per channel, which the run raises itself as
//! root (`RLIMIT_NOFILE`, `fs.nr_open`).

use crate::{
    cpu::{pin, unpin},
    measure::{measure, progress},
    scaling::ScaleRow,
};
use anyhow::{ensure, Context, Result};
use evnotify::{Channel, Notifier};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::{
    collections::BTreeMap,
    thread,
    time::{Duration, Instant},
};

/// Workers (kernel threads) the channels share.
pub const WORKERS: usize = 4;
/// Channels of the full run.
pub const CHANNELS: usize = 100_000;
/// Channels with a worker each, for the memory comparison.
pub const DEDICATED: usize = 1_000;
/// Eventfds alone, for the memory comparison.
pub const EVENTFDS: usize = 10_000;
/// Channel counts of the round-trip rows, as fractions of the full count.
pub const ROWS: usize = 4;

/// The /proc/meminfo fields recorded, in kB.
const FIELDS: [&str; 9] = [
    "MemFree",
    "MemAvailable",
    "Slab",
    "SUnreclaim",
    "KernelStack",
    "PageTables",
    "VmallocUsed",
    "Percpu",
    "AnonPages",
];
/// The fields whose sum is the kernel's own memory, with KernelStack and whatever VmallocUsed
/// grew beyond it: with `CONFIG_VMAP_STACK` thread stacks are vmalloc pages, in both fields
/// (unless reused from the stack cache, which VmallocUsed then does not see grow), and a
/// descriptor table too large for kmalloc is vmalloc'd.
const KERNEL: [&str; 4] = ["Slab", "PageTables", "Percpu", "KernelStack"];

/// What `n` channels added to the kernel's memory.
#[derive(Serialize, Default, Clone)]
pub struct Memory {
    pub channels: usize,
    /// Growth of Slab + PageTables + Percpu + KernelStack (+ VmallocUsed beyond KernelStack),
    /// over `channels`.
    pub bytes_per_channel: i64,
    /// Growth of MemFree's complement over `channels`: everything, the bench's own memory too.
    pub memfree_bytes_per_channel: i64,
    /// Growth of each /proc/meminfo field recorded, in kB.
    pub delta_kib: BTreeMap<&'static str, i64>,
}

fn meminfo() -> Result<BTreeMap<&'static str, i64>> {
    let m = std::fs::read_to_string("/proc/meminfo")?;
    FIELDS
        .iter()
        .map(|&f| {
            let v = m
                .lines()
                .find_map(|l| l.strip_prefix(f)?.strip_prefix(':'))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .with_context(|| format!("{f} in /proc/meminfo"))?;
            Ok((f, v))
        })
        .collect()
}

impl Memory {
    fn between(
        before: &BTreeMap<&'static str, i64>,
        after: &BTreeMap<&'static str, i64>,
        channels: usize,
    ) -> Self {
        let delta_kib: BTreeMap<_, _> = FIELDS.iter().map(|&f| (f, after[f] - before[f])).collect();
        let kernel = KERNEL.iter().map(|f| delta_kib[f]).sum::<i64>()
            + (delta_kib["VmallocUsed"] - delta_kib["KernelStack"]).max(0);
        let per = |kib: i64| kib * 1024 / channels.max(1) as i64;
        Self {
            channels,
            bytes_per_channel: per(kernel),
            memfree_bytes_per_channel: per(-delta_kib["MemFree"]),
            delta_kib,
        }
    }
}

/// The whole measurement.
#[derive(Serialize, Default)]
pub struct Results {
    pub workers: usize,
    /// Channels open at the largest row.
    pub channels: usize,
    /// Opening them all: open(2), eventfd(2), `EVNOTIFY_IOC_ATTACH` and (all but the leaders)
    /// `EVNOTIFY_IOC_SHARE_WORKER`, for each.
    pub open_all_ns: u64,
    /// One kick to each (the leaders' start their workers) and reading each one's delivery.
    pub kick_all_ns: u64,
    /// Closing every channel (its eventfd is closed afterwards, not timed).
    pub close_all_ns: u64,
    /// The round trip on the measured channel by channels open (`scaling_shared`).
    #[serde(skip)]
    pub scaling: Vec<ScaleRow>,
    /// p50 and p99 at the largest count over those with the measured channel alone.
    pub rtt_p50_ratio: f64,
    pub rtt_p99_ratio: f64,
    /// The channels' memory.
    pub memory: Memories,
}

#[derive(Serialize, Default)]
pub struct Memories {
    /// `channels` channels on the shared workers.
    pub shared: Memory,
    /// `DEDICATED` channels with a worker each.
    pub dedicated: Memory,
    /// `EVENTFDS` eventfds alone, no channel: the part of a channel's cost that is its
    /// eventfd (and one of its two descriptors).
    pub eventfd: Memory,
}

/// Lets this process hold `fds` descriptors: raises `fs.nr_open` if needed, then
/// `RLIMIT_NOFILE` (root may raise both).
fn allow_fds(fds: u64) -> Result<()> {
    let nr_open: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open")?
        .trim()
        .parse()?;
    if nr_open < fds {
        std::fs::write("/proc/sys/fs/nr_open", fds.to_string()).context("raise fs.nr_open")?;
    }
    let limit = libc::rlimit {
        rlim_cur: fds,
        rlim_max: fds,
    };
    // SAFETY: Plain setrlimit call with a valid struct.
    ensure!(
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } == 0,
        "raise RLIMIT_NOFILE to {fds}: {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

/// Names what to do when the module refuses a channel for its limits.
fn open(i: usize, n: usize) -> Result<Channel> {
    Channel::open().with_context(|| {
        format!(
            "open channel {} of {n} (EMFILE: load the module with max_channels and \
             max_user_channels of at least {n}; bench.sh passes them in \
             EVNOTIFY_MODULE_PARAMS)",
            i + 1
        )
    })
}

/// Kicks slot 0 of each channel once, then reads each delivery: every channel has been
/// active.
fn kick_all(chans: &[(Channel, Notifier)]) -> Result<()> {
    for (c, _) in chans {
        c.kick(0, 1)?;
    }
    for (i, (_, n)) in chans.iter().enumerate() {
        let got = n.wait_timeout(Duration::from_secs(60))?;
        ensure!(got == 1, "channel {i}: {got} notifications for one kick");
        if i % 1024 == 0 {
            crate::watchdog::beat();
        }
    }
    Ok(())
}

/// Memory of `n` eventfds.
fn eventfds(n: usize) -> Result<Memory> {
    let before = meminfo()?;
    let efds = (0..n)
        .map(|_| Notifier::new())
        .collect::<Result<Vec<_>, _>>()?;
    let after = meminfo()?;
    drop(efds);
    Ok(Memory::between(&before, &after, n))
}

/// Memory of `n` channels with a worker (kernel thread) each, started by their kick.
fn dedicated(n: usize) -> Result<Memory> {
    let before = meminfo()?;
    let chans = (0..n)
        .map(|i| {
            let (c, e) = (open(i, n)?, Notifier::new()?);
            c.attach(0, &e)?;
            Ok((c, e))
        })
        .collect::<Result<Vec<_>>>()?;
    kick_all(&chans)?;
    // Every new thread has run (it delivered): its stack and state are counted.
    thread::sleep(Duration::from_millis(200));
    let after = meminfo()?;
    let threads = chans
        .iter()
        .map(|(c, _)| c.worker().map(|w| w.id))
        .collect::<Result<std::collections::BTreeSet<_>, _>>()?;
    ensure!(
        threads.len() == n,
        "{} workers for {n} channels",
        threads.len()
    );
    Ok(Memory::between(&before, &after, n))
}

/// The measurement with `total` channels at the largest row and `iters` round trips per row.
pub fn run(total: usize, iters: u32) -> Result<Results> {
    ensure!(
        total >= 100,
        "at least 100 channels (the rows are 1, 1%, 10% and all)"
    );
    // Two descriptors a channel, and some to spare.
    allow_fds(2 * total.max(DEDICATED).max(EVENTFDS) as u64 + 1024)?;
    unpin()?;
    progress(&format!(
        "memory: {EVENTFDS} eventfds, {DEDICATED} channels with a worker each"
    ));
    let eventfd = eventfds(EVENTFDS)?;
    let dedicated = dedicated(DEDICATED)?;
    // Their workers stop as they close; let the freed memory settle.
    thread::sleep(Duration::from_millis(500));

    let sizes: [usize; ROWS] = [1, total / 100, total / 10, total];
    let mut r = Results {
        workers: WORKERS,
        channels: total,
        ..Default::default()
    };
    let (mut open_t, mut kick_t, mut close_t) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let before = meminfo()?;
    // Channel 0 is the measured one and the first leader; channel i uses worker i % WORKERS.
    let mut chans: Vec<(Channel, Notifier)> = Vec::with_capacity(total);
    let grow = |chans: &mut Vec<(Channel, Notifier)>,
                to: usize,
                open_t: &mut Duration,
                kick_t: &mut Duration|
     -> Result<()> {
        let from = chans.len();
        let t = Instant::now();
        for i in from..to {
            let (c, e) = (open(i, total)?, Notifier::new()?);
            c.attach(0, &e)?;
            if i >= WORKERS {
                c.share_worker(&chans[i % WORKERS].0)
                    .with_context(|| format!("channel {i} shares worker {}", i % WORKERS))?;
            }
            chans.push((c, e));
            // Far apart enough to cost nothing next to the opens, close enough for millions.
            if i % 1024 == 0 {
                crate::watchdog::beat();
            }
        }
        *open_t += t.elapsed();
        let t = Instant::now();
        kick_all(&chans[from..])?;
        *kick_t += t.elapsed();
        Ok(())
    };
    grow(&mut chans, 1, &mut open_t, &mut kick_t)?;
    // The measured channel's worker on the other CPU, as in the latency paths.
    chans[0].0.pin_thread(1)?;
    let per = iters / ROWS as u32 / 2;
    let mut hs = sizes
        .iter()
        .map(|_| Histogram::<u64>::new(3))
        .collect::<Result<Vec<_>, _>>()?;
    let rtt = |ch: &(Channel, Notifier)| -> Result<Histogram<u64>> {
        pin(0, 0)?;
        let h = measure(per, || {
            ch.0.kick(0, 1)?;
            ensure!(ch.1.wait()? == 1, "coalesced round trip");
            Ok(())
        });
        unpin()?;
        h
    };
    // Up, measuring at each count, then down, measuring again as they close: each count is
    // measured at two moments of the run, half of its round trips each.
    for (k, &size) in sizes.iter().enumerate() {
        if chans.len() < size {
            progress(&format!("shared workers: opening up to {size} channels"));
            grow(&mut chans, size, &mut open_t, &mut kick_t)?;
        }
        if size == total {
            thread::sleep(Duration::from_millis(200));
            r.memory.shared = Memory::between(&before, &meminfo()?, total);
            // Every channel is on one of the leaders' workers.
            let mut on = 0;
            for (i, (c, _)) in chans.iter().take(WORKERS).enumerate() {
                let w = c.worker()?;
                let want = (total - i).div_ceil(WORKERS) as u32;
                ensure!(
                    w.channels == want,
                    "worker {i} serves {} channels, not {want}",
                    w.channels
                );
                on += w.channels as usize;
            }
            ensure!(on == total, "{on} channels on the workers, not {total}");
        }
        progress(&format!(
            "shared workers: round trips with {size} channels open"
        ));
        hs[k].add(rtt(&chans[0])?)?;
    }
    for (k, &size) in sizes.iter().enumerate().rev() {
        if chans.len() > size {
            progress(&format!("shared workers: closing down to {size} channels"));
            let (cs, es): (Vec<_>, Vec<_>) = chans.split_off(size).into_iter().unzip();
            let t = Instant::now();
            drop(cs);
            close_t += t.elapsed();
            drop(es);
        }
        hs[k].add(rtt(&chans[0])?)?;
    }
    let (cs, es): (Vec<_>, Vec<_>) = chans.into_iter().unzip();
    let t = Instant::now();
    drop(cs);
    close_t += t.elapsed();
    drop(es);
    r.scaling = ScaleRow::rows(&sizes, &hs);
    let first = &r.scaling[0];
    let last = &r.scaling[ROWS - 1];
    r.rtt_p50_ratio = last.rtt_p50_ns as f64 / first.rtt_p50_ns.max(1) as f64;
    r.rtt_p99_ratio = last.rtt_p99_ns as f64 / first.rtt_p99_ns.max(1) as f64;
    r.open_all_ns = open_t.as_nanos() as u64;
    r.kick_all_ns = kick_t.as_nanos() as u64;
    r.close_all_ns = close_t.as_nanos() as u64;
    r.memory.dedicated = dedicated;
    r.memory.eventfd = eventfd;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_memory_counts_the_stacks_once() {
        let before: BTreeMap<_, _> = FIELDS.iter().map(|&f| (f, 1000)).collect();
        let mut after = before.clone();
        for (f, grew) in [
            ("MemFree", -40),
            ("Slab", 10),
            ("PageTables", 1),
            ("VmallocUsed", 16),
            ("Percpu", 2),
            // Inside VmallocUsed with CONFIG_VMAP_STACK.
            ("KernelStack", 16),
            ("MemAvailable", -30),
        ] {
            *after.get_mut(f).unwrap() += grew;
        }
        let m = Memory::between(&before, &after, 2);
        assert_eq!(m.bytes_per_channel, (10 + 1 + 16 + 2) * 1024 / 2);
        // Stacks from the cache: VmallocUsed does not grow.
        *after.get_mut("VmallocUsed").unwrap() -= 16;
        let m = Memory::between(&before, &after, 2);
        assert_eq!(m.bytes_per_channel, (10 + 1 + 16 + 2) * 1024 / 2);
        // A vmalloc'd descriptor table on top of the stacks.
        *after.get_mut("VmallocUsed").unwrap() += 16 + 8;
        let m = Memory::between(&before, &after, 2);
        assert_eq!(m.bytes_per_channel, (10 + 1 + 16 + 2 + 8) * 1024 / 2);
        assert_eq!(m.memfree_bytes_per_channel, 40 * 1024 / 2);
        assert_eq!(m.delta_kib["KernelStack"], 16);
        assert_eq!(m.channels, 2);
    }

    #[test]
    fn every_field_is_read_from_meminfo() {
        // The host's own /proc/meminfo has every field the VM's has.
        let m = meminfo().unwrap();
        assert_eq!(m.len(), FIELDS.len());
        assert!(m["MemFree"] > 0);
    }
}
