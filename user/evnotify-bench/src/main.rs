//! `evnotify-bench run`: measures, in one run and one VM, the module's notification paths side
//! by side with what a user would pick instead (two user threads ping-ponging over eventfds or
//! pipes, a user thread that busy-polls, io_uring, timerfd), and prints the results as JSON.
//! `evnotify-bench chart` draws them. It reports; it never fails on a slow run.

mod chart;
mod peers;
mod shared;
mod timers;
mod watchdog;

use anyhow::{ensure, Context, Result};
use clap::{Parser, Subcommand};
use evnotify::{Channel, Notifier};
use hdrhistogram::Histogram;
use nix::{
    sched::{sched_setaffinity, CpuSet},
    unistd::{gettid, pipe, read, write, Pid},
};
use peers::{Mode, NopRing};
use serde::Serialize;
use serde_json::{json, Value};
use std::{
    os::fd::OwnedFd,
    path::PathBuf,
    sync::OnceLock,
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
        /// Channels of the shared-workers measurement (the module's max_channels and
        /// max_user_channels must allow them).
        #[arg(long, default_value_t = shared::CHANNELS)]
        channels: usize,
    },
    /// Only the shared-workers measurement (many channels on a few kernel threads), its JSON
    /// between the same marker lines.
    Shared {
        /// Round trips in all, over the four channel counts.
        #[arg(long, default_value_t = 20_000)]
        iters: u32,
        /// Channels at the largest count.
        #[arg(long, default_value_t = shared::CHANNELS)]
        channels: usize,
    },
    /// Draw the latency distributions, the busy-poll sweep, timer lateness and the scaling
    /// from a results file.
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

/// CPU time a task has used, from its `stat` file (utime + stime, in clock ticks).
fn task_cpu(stat: &str) -> Result<Duration> {
    let stat = std::fs::read_to_string(stat).with_context(|| format!("read {stat}"))?;
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

/// A process's CPU time: for a kernel thread, its own.
fn thread_cpu(pid: i32) -> Result<Duration> {
    task_cpu(&format!("/proc/{pid}/stat"))
}

/// One thread's CPU time (`/proc/<tid>/stat` would give its whole process's).
fn own_thread_cpu(tid: i32) -> Result<Duration> {
    task_cpu(&format!("/proc/self/task/{tid}/stat"))
}

/// This process's tasks whose name starts with `prefix` (io_uring's "iou-sqp-<pid>" SQ
/// threads, "iou-wrk-<tid>" io-wq workers): their `/proc` directories.
fn tasks_named(prefix: &str) -> Result<Vec<PathBuf>> {
    let mut found = vec![];
    for task in std::fs::read_dir("/proc/self/task")? {
        let dir = task?.path();
        // A task that exits meanwhile is left out.
        if std::fs::read_to_string(dir.join("comm")).is_ok_and(|c| c.starts_with(prefix)) {
            found.push(dir);
        }
    }
    Ok(found)
}

/// CPU time used by the tasks `tasks_named(prefix)` finds.
fn tasks_cpu(prefix: &str) -> Result<Duration> {
    Ok(tasks_named(prefix)?
        .iter()
        .filter_map(|dir| task_cpu(&dir.join("stat").to_string_lossy()).ok())
        .sum())
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

/// An eventfd link whose responder (the receiver of direction 0) spins on a non-blocking read
/// for up to the limit before it blocks.
struct SpinLink(EventfdLink, Duration);

impl Link for SpinLink {
    fn send(&self, dir: usize) -> Result<()> {
        self.0.send(dir)
    }
    fn recv(&self, dir: usize) -> Result<()> {
        match dir {
            0 => peers::spin_recv(&self.0 .0[0], self.1),
            _ => self.0.recv(dir),
        }
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

/// The result, or the end of the process: for a failure on either end of a ping-pong, whose
/// other end would wait for ever for a message that will not come.
fn or_exit<T>(r: Result<T>) -> T {
    r.unwrap_or_else(|e| {
        eprintln!("Error: {e:?}");
        std::process::exit(1)
    })
}

/// Says on stderr what is measured next, with the time since the first call: the place to
/// look when a run stalls.
fn progress(what: &str) {
    static START: OnceLock<Instant> = OnceLock::new();
    let t = START.get_or_init(Instant::now).elapsed();
    eprintln!("# {:7.1} s: {what}", t.as_secs_f64());
    watchdog::step(what);
}

/// The order of `n` measurements in round `round`: rotated by one each round, so that each
/// runs first, second, ... in turn.
fn turn(n: usize, round: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |i| (i + round) % n)
}

/// A round-trip path: what one round trip does, and what it costs the task that answers.
trait RoundTrip {
    fn once(&mut self) -> Result<()>;
    /// CPU time the answering task(s) have used so far; `None` if the caller answers itself.
    fn responder_cpu(&self) -> Result<Option<Duration>>;
    /// Called after each batch: waits until the responder stops spinning, so that it does not
    /// spin into the next path's batch.
    fn settle(&mut self) {}
}

/// A channel kicked by ioctl or through its kick eventfd, answering on its notify eventfd.
struct ModulePath {
    ch: Channel,
    n: Notifier,
    kick: Option<Notifier>,
    pid: i32,
}

impl ModulePath {
    /// A channel whose thread runs on `cpu`, with busy-poll limit `limit` (the module's
    /// default if `None`).
    fn new(kickfd: bool, limit: Option<Duration>, cpu: usize) -> Result<Self> {
        let ch = Channel::open()?;
        let n = Notifier::new()?;
        ch.attach(0, &n)?;
        let kick = if kickfd {
            let k = Notifier::new()?;
            ch.attach_kickfd(0, &k)?;
            Some(k)
        } else {
            None
        };
        if let Some(limit) = limit {
            ch.set_busypoll(limit)?;
        }
        // The thread starts with the first kick; the warm-up is not measured.
        ch.kick(0, 1)?;
        ensure!(n.wait()? == 1, "warm-up kick");
        ch.pin_thread(cpu)?;
        let pid = ch.stats()?.thread_pid;
        Ok(Self { ch, n, kick, pid })
    }
}

impl RoundTrip for ModulePath {
    fn once(&mut self) -> Result<()> {
        match &self.kick {
            Some(k) => k.post(1)?,
            None => self.ch.kick(0, 1)?,
        }
        ensure!(self.n.wait()? == 1, "coalesced round trip");
        Ok(())
    }
    fn responder_cpu(&self) -> Result<Option<Duration>> {
        thread_cpu(self.pid).map(Some)
    }
}

/// Two user threads: the measuring one and an echo thread (whose tid is set once it runs).
struct EchoPath<'a>(&'a dyn Link, &'a OnceLock<i32>);

impl RoundTrip for EchoPath<'_> {
    fn once(&mut self) -> Result<()> {
        self.0.send(0)?;
        self.0.recv(1)
    }
    fn responder_cpu(&self) -> Result<Option<Duration>> {
        let tid = self.1.get().context("echo thread not started")?;
        own_thread_cpu(*tid).map(Some)
    }
}

impl RoundTrip for NopRing {
    fn once(&mut self) -> Result<()> {
        self.round_trip()
    }
    fn responder_cpu(&self) -> Result<Option<Duration>> {
        match self.mode() {
            Mode::SqPoll => tasks_cpu("iou-sqp-").map(Some),
            Mode::Iowq => tasks_cpu("iou-wrk-").map(Some),
            Mode::Enter => Ok(None),
        }
    }
    fn settle(&mut self) {
        NopRing::settle(self)
    }
}

/// A path's results: its round trips, and the share of one CPU its responder used while the
/// path ran (spinning included).
struct Row {
    name: &'static str,
    hist: Histogram<u64>,
    cpu_share: Option<f64>,
}

/// Measures the paths interleaved: a warm-up round, then `ROUNDS` rounds, each path `per`
/// round trips per round, in an order that rotates from round to round.
fn interleaved(per: u32, paths: &mut [(&'static str, &mut dyn RoundTrip)]) -> Result<Vec<Row>> {
    let mut rows = paths
        .iter()
        .map(|(name, _)| {
            Ok(Row {
                name,
                hist: Histogram::new(3)?,
                cpu_share: None,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    // Wall time and responder CPU time per path, warm-up included.
    let mut wall = vec![Duration::ZERO; paths.len()];
    let mut cpu = vec![Duration::ZERO; paths.len()];
    for round in 0..=ROUNDS as usize {
        for k in turn(paths.len(), round) {
            if round == 0 {
                progress(&format!("warm-up: {}", paths[k].0));
            } else {
                watchdog::step(&format!("round {round}: {}", paths[k].0));
            }
            let p = &mut paths[k].1;
            // A task's CPU time is exact only while it sleeps (a running one's is brought up
            // to date at each scheduler tick): read it before the batch and once the responder
            // sleeps again, so that its spin after the last round trip counts too.
            let cpu0 = p.responder_cpu()?;
            let t0 = Instant::now();
            for _ in 0..per {
                let t = Instant::now();
                p.once()?;
                if round > 0 {
                    rows[k].hist.record(t.elapsed().as_nanos() as u64)?;
                }
            }
            p.settle();
            wall[k] += t0.elapsed();
            // Longer than any busy-poll window: the responder sleeps after it.
            thread::sleep(Duration::from_millis(2));
            if let (Some(a), Some(b)) = (cpu0, p.responder_cpu()?) {
                cpu[k] += b.saturating_sub(a);
                rows[k].cpu_share = Some(cpu[k].as_secs_f64() / wall[k].as_secs_f64());
            }
        }
    }
    Ok(rows)
}

/// The round-trip paths, in the order `latency` measures them. The module's paths run with
/// the default busy-poll limit, and again with busy polling off.
const PATHS: [&str; 10] = [
    "evnotify_ioctl",
    "evnotify_kickfd",
    "eventfd_threads",
    "pipe_threads",
    "evnotify_ioctl_nopoll",
    "evnotify_kickfd_nopoll",
    "spin_responder",
    "io_uring_sqpoll",
    "io_uring",
    "io_uring_iowq",
];

/// The p50 ratios reported per pinning: (name, numerator path, denominator path).
const RATIOS: [(&str, &str, &str); 12] = [
    ("ioctl_vs_eventfd", "evnotify_ioctl", "eventfd_threads"),
    ("kickfd_vs_eventfd", "evnotify_kickfd", "eventfd_threads"),
    (
        "ioctl_nopoll_vs_eventfd",
        "evnotify_ioctl_nopoll",
        "eventfd_threads",
    ),
    (
        "kickfd_nopoll_vs_eventfd",
        "evnotify_kickfd_nopoll",
        "eventfd_threads",
    ),
    (
        "ioctl_vs_spin_responder",
        "evnotify_ioctl",
        "spin_responder",
    ),
    (
        "kickfd_vs_spin_responder",
        "evnotify_kickfd",
        "spin_responder",
    ),
    (
        "ioctl_vs_io_uring_sqpoll",
        "evnotify_ioctl",
        "io_uring_sqpoll",
    ),
    (
        "kickfd_vs_io_uring_sqpoll",
        "evnotify_kickfd",
        "io_uring_sqpoll",
    ),
    (
        "ioctl_nopoll_vs_io_uring",
        "evnotify_ioctl_nopoll",
        "io_uring",
    ),
    (
        "kickfd_nopoll_vs_io_uring",
        "evnotify_kickfd_nopoll",
        "io_uring",
    ),
    (
        "ioctl_nopoll_vs_io_uring_iowq",
        "evnotify_ioctl_nopoll",
        "io_uring_iowq",
    ),
    (
        "kickfd_nopoll_vs_io_uring_iowq",
        "evnotify_kickfd_nopoll",
        "io_uring_iowq",
    ),
];

const PINNINGS: [(&str, Pin); 2] = [("same_cpu", Pin::Same), ("cross_cpu", Pin::Cross)];

/// Every path of `PATHS` with both ends on the CPUs of `p`. `limit` is the module's busy-poll
/// limit, which the spin responder and the SQ thread get too.
fn latency(iters: u32, p: Pin, limit: Duration) -> Result<Vec<Row>> {
    let (me, other) = p.cpus();
    let per = iters / ROUNDS;
    let total = per * (ROUNDS + 1);
    let mut ioctl = ModulePath::new(false, None, other)?;
    let mut kickfd = ModulePath::new(true, None, other)?;
    let mut ioctl_nopoll = ModulePath::new(false, Some(Duration::ZERO), other)?;
    let mut kickfd_nopoll = ModulePath::new(true, Some(Duration::ZERO), other)?;
    let mut sqpoll = NopRing::new(Mode::SqPoll, Some(other), limit)?;
    let mut enter = NopRing::new(Mode::Enter, None, limit)?;
    let mut iowq = NopRing::new(Mode::Iowq, Some(other), limit)?;
    let efd = EventfdLink([Notifier::new()?, Notifier::new()?]);
    let pipes = PipeLink([pipe()?, pipe()?]);
    let spin = SpinLink(EventfdLink([Notifier::new()?, Notifier::new()?]), limit);
    let tids: [OnceLock<i32>; 3] = Default::default();
    // The echo threads stay until every CPU time has been read.
    let done = std::sync::Barrier::new(tids.len() + 1);
    thread::scope(|s| -> Result<Vec<Row>> {
        // The echo threads, each answering every round trip of its link.
        let echoes: Vec<_> = [&efd as &dyn Link, &pipes, &spin]
            .into_iter()
            .zip(&tids)
            .map(|(link, tid)| {
                let done = &done;
                s.spawn(move || {
                    or_exit((|| {
                        pin(0, other)?;
                        tid.get_or_init(|| gettid().as_raw());
                        for _ in 0..total {
                            link.recv(0)?;
                            link.send(1)?;
                        }
                        Ok(())
                    })());
                    done.wait();
                })
            })
            .collect();
        pin(0, me)?;
        let mut paths: [(&'static str, &mut dyn RoundTrip); PATHS.len()] = [
            (PATHS[0], &mut ioctl),
            (PATHS[1], &mut kickfd),
            (PATHS[2], &mut EchoPath(&efd, &tids[0])),
            (PATHS[3], &mut EchoPath(&pipes, &tids[1])),
            (PATHS[4], &mut ioctl_nopoll),
            (PATHS[5], &mut kickfd_nopoll),
            (PATHS[6], &mut EchoPath(&spin, &tids[2])),
            (PATHS[7], &mut sqpoll),
            (PATHS[8], &mut enter),
            (PATHS[9], &mut iowq),
        ];
        let rows = (|| {
            // The echo threads must have started for their CPU time to be read.
            let deadline = Instant::now() + Duration::from_secs(30);
            while tids.iter().any(|t| t.get().is_none()) {
                ensure!(Instant::now() < deadline, "echo threads did not start");
                thread::sleep(Duration::from_millis(1));
            }
            interleaved(per, &mut paths)
        })();
        let rows = or_exit(rows);
        done.wait();
        for e in echoes {
            e.join()
                .map_err(|_| anyhow::anyhow!("echo thread panicked"))?;
        }
        Ok(rows)
    })
}

/// Busy-poll limits of the sweep.
const SWEEP_NS: [u32; 4] = [0, 50_000, 200_000, 1_000_000];

#[derive(Serialize, Default)]
struct SweepRow {
    limit_ns: u32,
    p50_ns: u64,
    p99_ns: u64,
    thread_cpu_share: f64,
    /// Of the kicks the thread found, the share a spin caught (the rest needed a wake-up).
    polled_share: f64,
}

/// The different-CPU ioctl round trip at each busy-poll limit, interleaved like the paths.
fn sweep(iters: u32) -> Result<Vec<SweepRow>> {
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

#[derive(Serialize, Default)]
struct Throughput {
    kicks_per_s: f64,
    kicks_per_wakeup: f64,
    notifications_read_per_s: f64,
    notifications_per_read: f64,
    timer_ticks_per_s: f64,
    timer_min_period_ns: u64,
    /// NOPs through a ring without SQPOLL, one `io_uring_enter` each (as one ioctl per kick).
    io_uring_nops_per_s: f64,
    /// NOPs through an SQPOLL ring, published one at a time, with no syscall.
    io_uring_sqpoll_nops_per_s: f64,
}

fn throughput(secs: f64, limit: Duration) -> Result<Throughput> {
    unpin()?;
    let dur = Duration::from_secs_f64(secs);
    // Kicks absorbed: one thread kicks as fast as it can; nobody reads, so eventfd counts pile up.
    let ch = Channel::open()?;
    let n = Notifier::new()?;
    ch.attach(0, &n)?;
    watchdog::step("throughput: kicks");
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

    // The same for io_uring NOPs: nobody reads the CQ eventfd either.
    watchdog::step("throughput: io_uring NOPs");
    let io_uring_nops_per_s = NopRing::new(Mode::Enter, None, limit)?.nops_per_s(dur)?;
    watchdog::step("throughput: io_uring SQPOLL NOPs");
    let io_uring_sqpoll_nops_per_s = NopRing::new(Mode::SqPoll, None, limit)?.nops_per_s(dur)?;

    // Notifications read: a reader drains the eventfd while bursts of 1024 keep it fed.
    watchdog::step("throughput: notifications read");
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
    watchdog::step("throughput: timer ticks");
    let ch = Channel::open()?;
    let n = Notifier::new()?;
    ch.attach(0, &n)?;
    ch.set_timer(0, Duration::from_nanos(evnotify::sys::MIN_PERIOD_NS), 0)?;
    thread::sleep(dur);
    ch.cancel_timer(0)?;
    let ticks = ch.wait_idle(Duration::from_secs(10))?.timer_ticks;

    Ok(Throughput {
        kicks_per_s: kicks_per_s.round(),
        kicks_per_wakeup,
        notifications_read_per_s: (read_total as f64 / el).round(),
        notifications_per_read: read_total as f64 / reads.max(1) as f64,
        timer_ticks_per_s: (ticks as f64 / secs).round(),
        timer_min_period_ns: evnotify::sys::MIN_PERIOD_NS,
        io_uring_nops_per_s: io_uring_nops_per_s.round(),
        io_uring_sqpoll_nops_per_s: io_uring_sqpoll_nops_per_s.round(),
    })
}

fn mem_free_kib() -> Result<i64> {
    let m = std::fs::read_to_string("/proc/meminfo")?;
    m.lines()
        .find_map(|l| l.strip_prefix("MemFree:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("MemFree in /proc/meminfo")
}

#[derive(Serialize, Default)]
struct ScaleRow {
    channels: usize,
    rtt_p50_ns: u64,
    rtt_p99_ns: u64,
}

impl ScaleRow {
    /// One row per channel count, from the round trips measured at it.
    fn rows(counts: &[usize], hs: &[Histogram<u64>]) -> Vec<Self> {
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
fn scaling(iters: u32) -> Result<(Vec<ScaleRow>, i64)> {
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

/// Everything one run measured.
struct Results {
    vm: Value,
    /// The module's default busy-poll limit, which the spin responder and the SQ thread get.
    busypoll_ns: u32,
    /// Per pinning (`PINNINGS`), a row per path of `PATHS`.
    rtt: Vec<(&'static str, Vec<Row>)>,
    throughput: Throughput,
    scaling: Vec<ScaleRow>,
    bytes_per_channel: i64,
    shared: shared::Results,
    sweep: Vec<SweepRow>,
    timers: Vec<timers::Lateness>,
}

/// The results as JSON (`bench/results.json`).
fn report(r: &Results) -> Result<Value> {
    let (mut by_pin, mut ratio) = (Value::Null, Value::Null);
    for (pin, rows) in &r.rtt {
        let p50 = |name: &str| -> Result<f64> {
            let row = rows.iter().find(|r| r.name == name);
            Ok(row.context("path missing")?.hist.value_at_quantile(0.5) as f64)
        };
        for (k, a, b) in RATIOS {
            ratio[pin][k] = json!(p50(a)? / p50(b)?);
        }
        for row in rows {
            let mut s = summary(&row.hist);
            if let Some(share) = row.cpu_share {
                s["thread_cpu_share"] = json!(share);
            }
            by_pin[pin][row.name] = s;
        }
    }
    let mut lateness = Value::Null;
    for l in &r.timers {
        let h = &l.hist;
        lateness[l.source][l.period] = json!({
            "p50": h.value_at_quantile(0.5),
            "p90": h.value_at_quantile(0.9),
            "p99": h.value_at_quantile(0.99),
            "max": h.max(),
            "mean": h.mean().round() as u64,
            "ticks": h.len(),
            "early": l.early,
            "start_uncertainty_ns": l.start_uncertainty_ns,
        });
    }
    let mut out = json!({
        "vm": r.vm,
        "limits": {
            "busypoll_ns": r.busypoll_ns,
            "spin_responder_ns": r.busypoll_ns,
            "sq_thread_idle_ms": peers::sq_idle_ms(Duration::from_nanos(r.busypoll_ns.into())),
        },
        "rtt_ns": by_pin["cross_cpu"],
        "ratio": {
            "ioctl_vs_eventfd": ratio["cross_cpu"]["ioctl_vs_eventfd"],
            "kickfd_vs_eventfd": ratio["cross_cpu"]["kickfd_vs_eventfd"],
            "same_cpu": ratio["same_cpu"],
            "cross_cpu": ratio["cross_cpu"],
        },
        "rtt_ns_by_pinning": by_pin,
        "throughput": r.throughput,
        "scaling": r.scaling,
        "bytes_per_channel": r.bytes_per_channel,
        "busypoll_sweep": r.sweep,
        "timer_lateness_ns": lateness,
    });
    if let (Value::Object(out), Value::Object(more)) = (&mut out, shared_report(&r.shared)) {
        out.extend(more);
    }
    Ok(out)
}

/// The top-level keys of the shared-workers measurement (`required` lists their contents).
const SHARED_KEYS: [&str; 4] = [
    "/scaling_shared",
    "/bytes_per_channel_shared",
    "/bytes_per_channel_dedicated",
    "/shared_workers",
];

/// The shared-workers measurement's part of the results.
fn shared_report(r: &shared::Results) -> Value {
    json!({
        "scaling_shared": r.scaling,
        "bytes_per_channel_shared": r.memory.shared.bytes_per_channel,
        "bytes_per_channel_dedicated": r.memory.dedicated.bytes_per_channel,
        "shared_workers": r,
    })
}

/// The path that has no responder besides the caller (so no CPU share).
const CALLER_ONLY: &str = "io_uring";

/// Every key the results must have, as JSON pointers: what `bench.sh`, the chart and the
/// README read. Written out here, apart from `report`, so that a key `report` drops is caught.
fn required() -> Vec<String> {
    let mut keys: Vec<String> = ["accel", "cpus", "kernel", "lockdep", "iters"]
        .iter()
        .map(|k| format!("/vm/{k}"))
        .collect();
    keys.extend(["/limits/busypoll_ns", "/limits/sq_thread_idle_ms"].map(String::from));
    let stats = ["p50", "p90", "p99", "p999", "max", "percentiles"];
    for (pin, _) in PINNINGS {
        for path in PATHS {
            for k in stats {
                keys.push(format!("/rtt_ns_by_pinning/{pin}/{path}/{k}"));
            }
            if path != CALLER_ONLY {
                keys.push(format!("/rtt_ns_by_pinning/{pin}/{path}/thread_cpu_share"));
            }
        }
        for (k, _, _) in RATIOS {
            keys.push(format!("/ratio/{pin}/{k}"));
        }
    }
    for path in PATHS {
        for k in stats {
            keys.push(format!("/rtt_ns/{path}/{k}"));
        }
    }
    keys.extend(["/ratio/ioctl_vs_eventfd", "/ratio/kickfd_vs_eventfd"].map(String::from));
    for k in [
        "kicks_per_s",
        "kicks_per_wakeup",
        "notifications_read_per_s",
        "notifications_per_read",
        "timer_ticks_per_s",
        "io_uring_nops_per_s",
        "io_uring_sqpoll_nops_per_s",
    ] {
        keys.push(format!("/throughput/{k}"));
    }
    for i in 0..4 {
        for k in ["channels", "rtt_p50_ns", "rtt_p99_ns"] {
            keys.push(format!("/scaling/{i}/{k}"));
        }
    }
    keys.push("/bytes_per_channel".into());
    for i in 0..shared::ROWS {
        for k in ["channels", "rtt_p50_ns", "rtt_p99_ns"] {
            keys.push(format!("/scaling_shared/{i}/{k}"));
        }
    }
    keys.extend(["/bytes_per_channel_shared", "/bytes_per_channel_dedicated"].map(String::from));
    for k in [
        "workers",
        "channels",
        "open_all_ns",
        "kick_all_ns",
        "close_all_ns",
        "rtt_p50_ratio",
        "rtt_p99_ratio",
    ] {
        keys.push(format!("/shared_workers/{k}"));
    }
    for m in ["shared", "dedicated", "eventfd"] {
        for k in ["channels", "bytes_per_channel", "memfree_bytes_per_channel"] {
            keys.push(format!("/shared_workers/memory/{m}/{k}"));
        }
    }
    for i in 0..SWEEP_NS.len() {
        for k in [
            "limit_ns",
            "p50_ns",
            "p99_ns",
            "thread_cpu_share",
            "polled_share",
        ] {
            keys.push(format!("/busypoll_sweep/{i}/{k}"));
        }
    }
    for src in ["evnotify", "timerfd"] {
        for (period, _) in timers::PERIODS {
            for k in ["p50", "p99", "max", "start_uncertainty_ns"] {
                keys.push(format!("/timer_lateness_ns/{src}/{period}/{k}"));
            }
        }
    }
    keys
}

/// The required keys `v` lacks.
fn missing(v: &Value) -> Vec<String> {
    required()
        .into_iter()
        .filter(|k| v.pointer(k).is_none())
        .collect()
}

/// Prints `out` between the marker lines that `bench.sh` looks for, once it has every key of
/// `required` that starts with one of `only` (all of them if `only` is empty).
fn print_results(out: &Value, only: &[&str]) -> Result<()> {
    let lacks: Vec<_> = missing(out)
        .into_iter()
        .filter(|k| only.is_empty() || only.iter().any(|p| k.starts_with(p)))
        .collect();
    ensure!(lacks.is_empty(), "results lack {lacks:?}");
    println!("--- evnotify-bench results ---");
    println!("{}", serde_json::to_string_pretty(out)?);
    println!("--- end ---");
    Ok(())
}

fn run(iters: u32, secs: f64, channels: usize) -> Result<()> {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")?;
    // The module's default busy-poll limit, as a new channel reports it.
    let busypoll_ns = Channel::open()?.stats()?.busypoll_ns;
    let limit = Duration::from_nanos(busypoll_ns.into());
    let rtt = PINNINGS
        .iter()
        .map(|&(name, p)| {
            progress(&format!("round trips, {name}"));
            Ok((name, latency(iters, p, limit)?))
        })
        .collect::<Result<Vec<_>>>()?;
    progress("busy-poll sweep");
    let sweep = sweep(iters)?;
    progress("timer lateness");
    let timers = timers::lateness(cpus() - 1)?;
    progress("throughput");
    let throughput = throughput(secs, limit)?;
    progress("scaling");
    let (scaling, bytes_per_channel) = scaling(iters)?;
    let shared = shared::run(channels, iters)?;
    let out = report(&Results {
        vm: json!({
            "accel": std::env::var("EVNOTIFY_ACCEL").unwrap_or_else(|_| "tcg".into()),
            "cpus": cpus(),
            "kernel": kernel.trim(),
            // Lockdep makes every lock several times dearer, and larger (README: Performance).
            "lockdep": std::path::Path::new("/proc/lockdep").exists(),
            "iters": iters,
        }),
        busypoll_ns,
        rtt,
        throughput,
        scaling,
        bytes_per_channel,
        shared,
        sweep,
        timers,
    })?;
    print_results(&out, &[])
}

/// `evnotify-bench shared`: the shared-workers keys alone.
fn run_shared(iters: u32, channels: usize) -> Result<()> {
    let out = shared_report(&shared::run(channels, iters)?);
    print_results(&out, &SHARED_KEYS)
}

/// The watchdog's look: a run with no progress for a whole look fails (see `watchdog`). Far
/// more than any step takes here, and more than the steps' own deadlines (60 s at most),
/// whose errors say more; the throughput steps add their own length (`--secs`).
const STALL: Duration = Duration::from_secs(120);

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Run {
            iters,
            secs,
            channels,
        } => {
            let steps = Duration::try_from_secs_f64(secs).unwrap_or_default();
            watchdog::start(STALL + steps, watchdog::abort);
            run(iters, secs, channels)
        }
        Cmd::Shared { iters, channels } => {
            watchdog::start(STALL, watchdog::abort);
            run_shared(iters, channels)
        }
        Cmd::Chart { results, png } => chart::draw(&results, &png),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Results as a run would give them, with made-up figures.
    fn results() -> Results {
        let hist = || {
            let mut h = Histogram::new(3).unwrap();
            for v in 1..=100 {
                h.record(v * 1000).unwrap();
            }
            h
        };
        let rows = || {
            PATHS
                .iter()
                .map(|&name| Row {
                    name,
                    hist: hist(),
                    cpu_share: (name != CALLER_ONLY).then_some(0.5),
                })
                .collect()
        };
        Results {
            vm: json!({"accel": "tcg", "cpus": 2, "kernel": "7.3", "lockdep": false, "iters": 100}),
            busypoll_ns: 200_000,
            rtt: PINNINGS.iter().map(|&(name, _)| (name, rows())).collect(),
            throughput: Throughput::default(),
            scaling: (0..4).map(|_| ScaleRow::default()).collect(),
            bytes_per_channel: 1,
            shared: shared::Results {
                scaling: (0..shared::ROWS).map(|_| ScaleRow::default()).collect(),
                ..Default::default()
            },
            sweep: SWEEP_NS.iter().map(|_| SweepRow::default()).collect(),
            timers: ["evnotify", "timerfd"]
                .into_iter()
                .flat_map(|source| {
                    timers::PERIODS.map(|(period, _)| timers::Lateness {
                        source,
                        period,
                        hist: hist(),
                        early: 0,
                        start_uncertainty_ns: 0,
                    })
                })
                .collect(),
        }
    }

    #[test]
    fn results_have_every_required_key() {
        let out = report(&results()).unwrap();
        assert_eq!(missing(&out), Vec::<String>::new());
        // Ratios are computed from the named paths: equal made-up histograms give 1.
        assert_eq!(out["ratio"]["cross_cpu"]["ioctl_vs_io_uring_sqpoll"], 1.0);
    }

    #[test]
    fn a_missing_key_is_reported() {
        let full = report(&results()).unwrap();
        for key in required() {
            let mut v = full.clone();
            let (parent, last) = key.rsplit_once('/').unwrap();
            let p = v.pointer_mut(parent).unwrap();
            match p {
                Value::Object(m) => drop(m.remove(last)),
                Value::Array(a) => drop(a.remove(last.parse().unwrap())),
                _ => panic!("{parent} is not a container"),
            }
            assert!(missing(&v).contains(&key), "{key} not reported missing");
        }
    }

    #[test]
    fn the_shared_run_alone_has_its_keys() {
        let out = shared_report(&results().shared);
        let lacks: Vec<_> = missing(&out)
            .into_iter()
            .filter(|k| SHARED_KEYS.iter().any(|p| k.starts_with(p)))
            .collect();
        assert_eq!(lacks, Vec::<String>::new());
        // And nothing else: the filter keeps only its own keys.
        assert!(missing(&out).iter().any(|k| k.starts_with("/scaling/")));
    }

    #[test]
    fn sq_thread_idle_rounds_up_to_whole_milliseconds() {
        assert_eq!(peers::sq_idle_ms(Duration::ZERO), 1);
        assert_eq!(peers::sq_idle_ms(Duration::from_micros(200)), 1);
        assert_eq!(peers::sq_idle_ms(Duration::from_micros(1000)), 1);
        assert_eq!(peers::sq_idle_ms(Duration::from_micros(1001)), 2);
    }
}
