//! Round-trip latency: the links between two user threads, the round-trip paths (the
//! module's, the echo threads', io_uring's) and their interleaved measure per pinning.

use crate::{
    cpu::{own_thread_cpu, pin, tasks_cpu, thread_cpu, Pin},
    measure::{progress, turn, ROUNDS},
    peers::{self, Mode, NopRing},
    watchdog,
};
use anyhow::{ensure, Context, Result};
use evnotify::{Channel, Notifier, Ring};
use hdrhistogram::Histogram;
use nix::unistd::{gettid, pipe, read, write};
use std::{
    os::fd::OwnedFd,
    sync::OnceLock,
    thread,
    time::{Duration, Instant},
};

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

/// The result, or the end of the process: for a failure on either end of a ping-pong, whose
/// other end would wait for ever for a message that will not come.
fn or_exit<T>(r: Result<T>) -> T {
    r.unwrap_or_else(|e| {
        eprintln!("Error: {e:?}");
        std::process::exit(1)
    })
}

/// A round-trip path: what one round trip does, and what it costs the task that answers.
pub(crate) trait RoundTrip {
    fn once(&mut self) -> Result<()>;
    /// CPU time the answering task(s) have used so far; `None` if the caller answers itself.
    fn responder_cpu(&self) -> Result<Option<Duration>>;
    /// Called after each batch: waits until the responder stops spinning, so that it does not
    /// spin into the next path's batch.
    fn settle(&mut self) {}
}

/// A channel kicked by ioctl or through its kick eventfd, answering on its notify eventfd.
pub(crate) struct ModulePath {
    pub(crate) ch: Channel,
    n: Notifier,
    kick: Option<Notifier>,
    pid: i32,
}

impl ModulePath {
    /// A channel whose thread runs on `cpu`, with busy-poll limit `limit` (the module's
    /// default if `None`).
    pub(crate) fn new(kickfd: bool, limit: Option<Duration>, cpu: usize) -> Result<Self> {
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

/// A channel's event ring: one submission, then the completion, which the caller spins for
/// on the completion queue (`spin`) or sleeps for on the slot's eventfd.
pub(crate) struct RingPath<'a> {
    ring: Ring<'a>,
    n: Option<&'a Notifier>,
    pid: i32,
    /// The spinning caller yields between looks (on the thread's own CPU: `spin_wait`).
    yields: bool,
}

impl<'a> RingPath<'a> {
    /// `ch`'s ring, its thread on `cpu` with the default busy-poll limit; `n` is the eventfd
    /// attached to slot 0 to wait on, if the caller sleeps.
    pub(crate) fn new(
        ch: &'a Channel,
        n: Option<&'a Notifier>,
        cpu: usize,
        yields: bool,
    ) -> Result<Self> {
        let ring = ch.map_ring()?;
        if let Some(n) = n {
            ch.attach(0, n)?;
        }
        let mut p = Self {
            ring,
            n,
            pid: 0,
            yields,
        };
        // The warm-up round trip starts the thread.
        p.once()?;
        ch.pin_thread(cpu)?;
        p.pid = ch.stats()?.thread_pid;
        Ok(p)
    }
}

impl RoundTrip for RingPath<'_> {
    fn once(&mut self) -> Result<()> {
        ensure!(self.ring.submit(0, 1)?, "submission queue full");
        let c = match self.n {
            Some(n) => {
                ensure!(n.wait()? == 1, "coalesced round trip");
                self.ring.reap().context("no completion")?
            }
            None => {
                let mut got = None;
                peers::spin_wait(self.yields, || {
                    got = self.ring.reap();
                    Ok(got.is_some().into())
                })?;
                got.context("no completion")?
            }
        };
        ensure!(
            c.count == 1 && self.ring.reap().is_none(),
            "coalesced round trip"
        );
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
            Mode::SqPoll | Mode::SqPollSpin => tasks_cpu("iou-sqp-").map(Some),
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
pub(crate) struct Row {
    pub(crate) name: &'static str,
    pub(crate) hist: Histogram<u64>,
    pub(crate) cpu_share: Option<f64>,
}

/// Measures the paths interleaved: a warm-up round, then `ROUNDS` rounds, each path `per`
/// round trips per round, in an order that rotates from round to round.
pub(crate) fn interleaved(
    per: u32,
    paths: &mut [(&'static str, &mut dyn RoundTrip)],
) -> Result<Vec<Row>> {
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
pub(crate) const PATHS: [&str; 13] = [
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
    "evnotify_ring_spin",
    "io_uring_sqpoll_spin",
    "evnotify_ring_eventfd",
];

pub(crate) const PINNINGS: [(&str, Pin); 2] = [("same_cpu", Pin::Same), ("cross_cpu", Pin::Cross)];

/// Every path of `PATHS` with both ends on the CPUs of `p`. `limit` is the module's busy-poll
/// limit, which the spin responder and the SQ thread get too.
pub(crate) fn latency(iters: u32, p: Pin, limit: Duration) -> Result<Vec<Row>> {
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
    // On one CPU the spinning callers yield, or they would measure the scheduler's tick.
    let yields = me == other;
    let mut sqpoll_spin = NopRing::new(Mode::SqPollSpin, Some(other), limit)?.yielding(yields);
    let (ring_ch, ring_efd_ch, ring_n) = (Channel::open()?, Channel::open()?, Notifier::new()?);
    let mut ring_spin = RingPath::new(&ring_ch, None, other, yields)?;
    let mut ring_efd = RingPath::new(&ring_efd_ch, Some(&ring_n), other, false)?;
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
            (PATHS[10], &mut ring_spin),
            (PATHS[11], &mut sqpoll_spin),
            (PATHS[12], &mut ring_efd),
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

/// `evnotify-bench profile`: the polling round trips that `scripts/profile.sh` counts the
/// guest's instructions of, across CPUs, each path's `iters` round trips between two marks
/// (after a warm-up, so that its responder spins in steady state): the ring's spinning caller,
/// io_uring SQPOLL's, and the polled ioctl. Prints the marks' order and the kernel's addresses
/// the report needs (its text, which KASLR moves, and the module's).
pub(crate) fn profile(iters: u32, limit: Duration) -> Result<()> {
    let (me, other) = Pin::Cross.cpus();
    let ch = Channel::open()?;
    let mut paths: [(&str, Box<dyn RoundTrip + '_>); 3] = [
        (
            "evnotify_ring_spin",
            Box::new(RingPath::new(&ch, None, other, false)?),
        ),
        (
            "io_uring_sqpoll_spin",
            Box::new(NopRing::new(Mode::SqPollSpin, Some(other), limit)?),
        ),
        (
            "evnotify_ioctl",
            Box::new(ModulePath::new(false, None, other)?),
        ),
    ];
    pin(0, me)?;
    let kallsyms = std::fs::read_to_string("/proc/kallsyms")?;
    let stext = kallsyms
        .lines()
        .find(|l| l.ends_with(" _stext"))
        .context("no _stext in /proc/kallsyms")?;
    println!("profile: kernel {stext}");
    let text = std::fs::read_to_string("/sys/module/rust_evnotify/sections/.text")?;
    println!("profile: module .text {}", text.trim());
    // Where this (static, maybe position-independent) program runs, for its own symbols.
    println!(
        "profile: user mark_phase {:#x}",
        mark_phase as *const () as usize
    );
    for (mark, (name, p)) in paths.iter_mut().enumerate() {
        for _ in 0..1000 {
            p.once()?;
        }
        mark_phase();
        let mut ns = Vec::with_capacity(iters as usize);
        for _ in 0..iters {
            let t = Instant::now();
            p.once()?;
            ns.push(t.elapsed().as_nanos());
        }
        mark_phase();
        ns.sort_unstable();
        // The time too (without the plugin, a load of module builds in one boot compares by it).
        println!(
            "profile: path {name} marks {} {} round trips {iters} p50 {} ns",
            2 * mark,
            2 * mark + 1,
            ns.get(ns.len() / 2).copied().unwrap_or_default()
        );
        p.settle();
    }
    Ok(())
}

/// The mark the TCG plugin of `scripts/profile.sh` takes: a user-mode CPUID of a leaf no CPU
/// defines ("EVNT"), which it knows by the `mov eax, imm32` before it.
#[inline(never)]
fn mark_phase() {
    let _ = std::arch::x86_64::__cpuid(0x4556_4e54);
}
