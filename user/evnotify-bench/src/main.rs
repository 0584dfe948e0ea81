//! `evnotify-bench run`: measures, in one run and one VM, the module's notification paths side
//! by side with the user-space floor (two threads ping-ponging over eventfds or pipes), and
//! prints the results as JSON. `evnotify-bench chart` draws them. It reports; it never fails
//! on a slow run.

mod chart;

use anyhow::{ensure, Context, Result};
use clap::{Parser, Subcommand};
use evnotify::{Channel, Notifier};
use hdrhistogram::Histogram;
use nix::{
    sched::{sched_setaffinity, CpuSet},
    unistd::{pipe, read, write, Pid},
};
use serde_json::{json, Value};
use std::{
    os::fd::OwnedFd,
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

#[derive(Parser)]
#[command(about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run every measurement and print the JSON results between marker lines.
    Run {
        /// Round trips per latency measurement.
        #[arg(long, default_value_t = 20_000)]
        iters: u32,
        /// Seconds per throughput measurement.
        #[arg(long, default_value_t = 1.0)]
        secs: f64,
    },
    /// Draw the latency distributions and the scaling from a results file.
    Chart { results: PathBuf, png: PathBuf },
}

/// Where the two ends of a round trip run.
#[derive(Clone, Copy)]
enum Pin {
    Same,
    Cross,
}

impl Pin {
    /// CPUs for (the measuring thread, the other end).
    fn cpus(self) -> (usize, usize) {
        match self {
            Pin::Same => (0, 0),
            Pin::Cross => (0, 1),
        }
    }
}

/// CPUs online (not the calling thread's affinity, which pinning narrows).
fn cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize
}

/// Lets the calling thread run on every CPU again.
fn unpin() -> Result<()> {
    let mut set = CpuSet::new();
    for cpu in 0..cpus() {
        set.set(cpu)?;
    }
    Ok(sched_setaffinity(Pid::from_raw(0), &set)?)
}

fn pin(pid: i32, cpu: usize) -> Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu)?;
    sched_setaffinity(Pid::from_raw(pid), &set).with_context(|| format!("pin {pid} to CPU {cpu}"))
}

/// Measures `iters` round trips of `once`, after a warm-up.
fn measure(iters: u32, mut once: impl FnMut() -> Result<()>) -> Result<Histogram<u64>> {
    let mut h = Histogram::new(3)?;
    for _ in 0..iters / 10 {
        once()?;
    }
    for _ in 0..iters {
        let t = Instant::now();
        once()?;
        h.record(t.elapsed().as_nanos() as u64)?;
    }
    Ok(h)
}

/// CPU time a task has used, from `/proc/<pid>/stat` (utime + stime, in clock ticks).
fn thread_cpu(pid: i32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("stat format")?
        .1
        .split_whitespace()
        .collect();
    // Fields 14 and 15 of proc(5), counted from the state (field 3) at index 0.
    let field = |i: usize| -> Result<u64> { Ok(fields.get(i).context("stat fields")?.parse()?) };
    let ticks = field(11)? + field(12)?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_nanos(ticks * 1_000_000_000 / hz))
}

fn summary(h: &Histogram<u64>) -> Value {
    json!({
        "p50": h.value_at_quantile(0.5),
        "p90": h.value_at_quantile(0.9),
        "p99": h.value_at_quantile(0.99),
        "p999": h.value_at_quantile(0.999),
        "max": h.max(),
        "mean": h.mean().round() as u64,
        "samples": h.len(),
        // The distribution itself, for the chart: value at each percentile 0..=100.
        "percentiles": (0..=100).map(|p| h.value_at_percentile(p as f64)).collect::<Vec<_>>(),
    })
}

/// A pair of one-way channels between two user threads.
trait Link: Sync {
    fn send(&self, dir: usize) -> Result<()>;
    fn recv(&self, dir: usize) -> Result<()>;
}

struct EventfdLink([Notifier; 2]);

impl Link for EventfdLink {
    fn send(&self, dir: usize) -> Result<()> {
        Ok(self.0[dir].post(1)?)
    }
    fn recv(&self, dir: usize) -> Result<()> {
        ensure!(self.0[dir].wait()? == 1, "coalesced");
        Ok(())
    }
}

struct PipeLink([(OwnedFd, OwnedFd); 2]);

impl Link for PipeLink {
    fn send(&self, dir: usize) -> Result<()> {
        ensure!(write(&self.0[dir].1, b"x")? == 1, "short write");
        Ok(())
    }
    fn recv(&self, dir: usize) -> Result<()> {
        let mut b = [0u8; 1];
        ensure!(read(&self.0[dir].0, &mut b)? == 1, "short read");
        Ok(())
    }
}

/// Rounds the latency paths take turns in, so that slow phases of the emulator hit all of
/// them alike rather than whichever ran at that moment.
const ROUNDS: u32 = 20;

/// The round-trip paths, in the order `interleaved` returns them. The module's paths run with
/// the default busy-poll limit, and again with busy polling off.
const PATHS: [&str; 6] = [
    "evnotify_ioctl",
    "evnotify_kickfd",
    "eventfd_threads",
    "pipe_threads",
    "evnotify_ioctl_nopoll",
    "evnotify_kickfd_nopoll",
];

/// Measures the paths interleaved: `ROUNDS` rounds, each path `iters / ROUNDS` round trips per
/// round, in an order that rotates from round to round.
/// Returns each path's histogram and, for the module's paths, the share of one CPU that the
/// channel's thread used while its path ran (spinning included).
fn interleaved(iters: u32, p: Pin) -> Result<Vec<(Histogram<u64>, Option<f64>)>> {
    let (me, other) = p.cpus();
    let per = iters / ROUNDS;
    let total = per * ROUNDS + per; // One extra round warms every path up.
                                    // A channel with its thread on `other`, kicked by ioctl or through a kick eventfd (the
                                    // channel must stay open while its kick eventfd is used).
    let setup = |kickfd: bool, poll: bool| -> Result<(Channel, Notifier, Notifier)> {
        let ch = Channel::open()?;
        let (n, k) = (Notifier::new()?, Notifier::new()?);
        ch.attach(0, &n)?;
        if kickfd {
            ch.attach_kickfd(0, &k)?;
        }
        if !poll {
            ch.set_busypoll(Duration::ZERO)?;
        }
        // The thread starts with the first kick; the warm-up is not measured.
        ch.kick(0, 1)?;
        ensure!(n.wait()? == 1, "warm-up kick");
        ch.pin_thread(other)?;
        Ok((ch, n, k))
    };
    let chans = [
        setup(false, true)?,
        setup(true, true)?,
        setup(false, false)?,
        setup(true, false)?,
    ];
    let efd = EventfdLink([Notifier::new()?, Notifier::new()?]);
    let pipes = PipeLink([pipe()?, pipe()?]);
    thread::scope(|s| -> Result<Vec<(Histogram<u64>, Option<f64>)>> {
        // The floor's echo threads, each answering every round trip of its link.
        let echoes: Vec<_> = [&efd as &dyn Link, &pipes]
            .into_iter()
            .map(|link| {
                s.spawn(move || -> Result<()> {
                    pin(0, other)?;
                    for _ in 0..total {
                        link.recv(0)?;
                        link.send(1)?;
                    }
                    Ok(())
                })
            })
            .collect();
        pin(0, me)?;
        let module = |i: usize| -> Box<dyn FnMut() -> Result<()> + '_> {
            let (ch, n, k) = &chans[i];
            let kickfd = i % 2 == 1;
            Box::new(move || {
                if kickfd {
                    k.post(1)?;
                } else {
                    ch.kick(0, 1)?;
                }
                ensure!(n.wait()? == 1, "coalesced round trip");
                Ok(())
            })
        };
        let mut once: [Box<dyn FnMut() -> Result<()> + '_>; PATHS.len()] = [
            module(0),
            module(1),
            Box::new(|| {
                efd.send(0)?;
                efd.recv(1)
            }),
            Box::new(|| {
                pipes.send(0)?;
                pipes.recv(1)
            }),
            module(2),
            module(3),
        ];
        let mut hs = PATHS
            .iter()
            .map(|_| Histogram::new(3))
            .collect::<Result<Vec<Histogram<u64>>, _>>()?;
        // Wall time spent on each path, warm-up included, for the threads' CPU share.
        let mut wall = [Duration::ZERO; PATHS.len()];
        for (f, w) in once.iter_mut().zip(&mut wall) {
            let t = Instant::now();
            for _ in 0..per {
                f()?;
            }
            *w += t.elapsed();
        }
        for round in 0..ROUNDS as usize {
            for k in (0..PATHS.len()).map(|i| (i + round) % PATHS.len()) {
                for _ in 0..per {
                    let t = Instant::now();
                    once[k]()?;
                    let el = t.elapsed();
                    wall[k] += el;
                    hs[k].record(el.as_nanos() as u64)?;
                }
            }
        }
        drop(once);
        for e in echoes {
            e.join()
                .map_err(|_| anyhow::anyhow!("echo thread panicked"))??;
        }
        // Which channel serves each path: see `PATHS` and `module` above.
        let chan_of = [Some(0), Some(1), None, None, Some(2), Some(3)];
        hs.into_iter()
            .zip(chan_of)
            .zip(wall)
            .map(|((h, c), w)| {
                let share = c
                    .map(|c| -> Result<f64> {
                        let cpu = thread_cpu(chans[c].0.stats()?.thread_pid)?;
                        Ok(cpu.as_secs_f64() / w.as_secs_f64())
                    })
                    .transpose()?;
                Ok((h, share))
            })
            .collect()
    })
}

fn latency(iters: u32) -> Result<(Value, Value)> {
    let mut all = serde_json::Map::new();
    let mut ratio = serde_json::Map::new();
    for (pname, p) in [("same_cpu", Pin::Same), ("cross_cpu", Pin::Cross)] {
        let hs = interleaved(iters, p)?;
        let p50 = |i: usize| hs[i].0.value_at_quantile(0.5) as f64;
        ratio.insert(
            pname.into(),
            json!({
                "ioctl_vs_eventfd": p50(0) / p50(2),
                "kickfd_vs_eventfd": p50(1) / p50(2),
                "ioctl_nopoll_vs_eventfd": p50(4) / p50(2),
                "kickfd_nopoll_vs_eventfd": p50(5) / p50(2),
            }),
        );
        let rows = PATHS.iter().zip(&hs).map(|(k, (h, share))| {
            let mut row = summary(h);
            if let Some(share) = share {
                row["thread_cpu_share"] = json!(share);
            }
            (k.to_string(), row)
        });
        all.insert(pname.into(), Value::Object(rows.collect()));
    }
    Ok((Value::Object(all), Value::Object(ratio)))
}

fn throughput(secs: f64) -> Result<Value> {
    unpin()?;
    let dur = Duration::from_secs_f64(secs);
    // Kicks absorbed: one thread kicks as fast as it can; nobody reads, so eventfd counts pile up.
    let ch = Channel::open()?;
    let n = Notifier::new()?;
    ch.attach(0, &n)?;
    let t = Instant::now();
    let mut kicks = 0u64;
    while t.elapsed() < dur {
        ch.kick(0, 1)?;
        kicks += 1;
    }
    let el = t.elapsed().as_secs_f64();
    let s = ch.wait_idle(Duration::from_secs(60))?;
    let kicks_per_s = kicks as f64 / el;
    // Each time the thread found work, after sleeping or while spinning.
    let kicks_per_wakeup = s.handled as f64 / (s.wakeups + s.polled).max(1) as f64;

    // Notifications read: a reader drains the eventfd while bursts of 1024 keep it fed.
    let ch = Channel::open()?;
    let n = Notifier::new()?;
    ch.attach(0, &n)?;
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (read_total, reads, el) = thread::scope(|sc| -> Result<(u64, u64, f64)> {
        let kicker = sc.spawn(|| -> Result<()> {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if ch.stats()?.pending < 4096 {
                    ch.kick(0, 1024)?;
                } else {
                    thread::yield_now();
                }
            }
            Ok(())
        });
        let t = Instant::now();
        let (mut total, mut reads) = (0, 0);
        while t.elapsed() < dur {
            total += n.wait()?;
            reads += 1;
        }
        let el = t.elapsed().as_secs_f64();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        kicker
            .join()
            .map_err(|_| anyhow::anyhow!("kicker panicked"))??;
        Ok((total, reads, el))
    })?;

    // Timer ticks at the minimum period.
    let ch = Channel::open()?;
    let n = Notifier::new()?;
    ch.attach(0, &n)?;
    ch.set_timer(0, Duration::from_nanos(evnotify::sys::MIN_PERIOD_NS), 0)?;
    thread::sleep(dur);
    ch.cancel_timer(0)?;
    let ticks = ch.wait_idle(Duration::from_secs(10))?.timer_ticks;

    Ok(json!({
        "kicks_per_s": kicks_per_s.round(),
        "kicks_per_wakeup": kicks_per_wakeup,
        "notifications_read_per_s": (read_total as f64 / el).round(),
        "notifications_per_read": read_total as f64 / reads.max(1) as f64,
        "timer_ticks_per_s": (ticks as f64 / secs).round(),
        "timer_min_period_ns": evnotify::sys::MIN_PERIOD_NS,
    }))
}

fn mem_free_kib() -> Result<i64> {
    let m = std::fs::read_to_string("/proc/meminfo")?;
    m.lines()
        .find_map(|l| l.strip_prefix("MemFree:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("MemFree in /proc/meminfo")
}

/// Round trip on one channel while `n - 1` others are open and active: each has an eventfd and
/// a 1 s timer, so each kernel thread wakes once a second.
fn scaling(iters: u32) -> Result<(Value, Value)> {
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
        for k in (0..SIZES.len()).map(|i| (i + round) % SIZES.len()) {
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
    drop(bg);
    let rows = SIZES
        .iter()
        .zip(&hs)
        .map(|(n, h)| json!({ "channels": n, "rtt_p50_ns": h.value_at_quantile(0.5), "rtt_p99_ns": h.value_at_quantile(0.99) }))
        .collect();
    // Memory: bare channels (a kernel thread each), MemFree before and after.
    const N: i64 = 1024;
    let before = mem_free_kib()?;
    let chans = (0..N)
        .map(|_| Channel::open())
        .collect::<std::io::Result<Vec<_>>>()?;
    // Let every new thread run once, so its stack and state are counted.
    thread::sleep(Duration::from_millis(200));
    let after = mem_free_kib()?;
    drop(chans);
    Ok((Value::Array(rows), json!((before - after) * 1024 / N)))
}

fn run(iters: u32, secs: f64) -> Result<()> {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")?;
    let (rtt, ratio) = latency(iters)?;
    let tput = throughput(secs)?;
    let (scale, bytes) = scaling(iters)?;
    let head = rtt["cross_cpu"].clone();
    let headline = ratio["cross_cpu"].clone();
    let out = json!({
        "vm": {
            "accel": std::env::var("EVNOTIFY_ACCEL").unwrap_or_else(|_| "tcg".into()),
            "cpus": cpus(),
            "kernel": kernel.trim(),
            "iters": iters,
        },
        "rtt_ns": head,
        "ratio": {
            "ioctl_vs_eventfd": headline["ioctl_vs_eventfd"],
            "kickfd_vs_eventfd": headline["kickfd_vs_eventfd"],
            "same_cpu": ratio["same_cpu"],
            "cross_cpu": ratio["cross_cpu"],
        },
        "rtt_ns_by_pinning": rtt,
        "throughput": tput,
        "scaling": scale,
        "bytes_per_channel": bytes,
    });
    println!("--- evnotify-bench results ---");
    println!("{}", serde_json::to_string_pretty(&out)?);
    println!("--- end ---");
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Run { iters, secs } => run(iters, secs),
        Cmd::Chart { results, png } => chart::draw(&results, &png),
    }
}
