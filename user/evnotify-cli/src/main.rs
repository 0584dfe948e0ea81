//! `evnotify`: inspect and exercise `/dev/evnotify` channels.
//!
//! Each run opens its own channel (a channel lives as long as its file), sets it up as asked
//! and shows what flows through it; `stat` lists the channels of every process instead.

mod args;
mod error;
mod manpage;
mod stat;

use anyhow::{ensure, Context, Result};
use args::{Cli, Cmd, PingArgs};
use clap::{CommandFactory, Parser};
use error::DevError;
use evnotify::{sys, Channel, Notifier};
use hdrhistogram::Histogram;
use serde_json::json;
use stat::Counters;
use std::{
    io,
    os::fd::{AsFd, AsRawFd},
    path::Path,
    process::ExitCode,
    time::{Duration, Instant},
};

/// An open channel whose every failure names the device and the operation.
struct Dev {
    ch: Channel,
    path: String,
}

impl Dev {
    fn open(path: &str) -> Result<Self, DevError> {
        let ch = Channel::open_path(path).map_err(|e| DevError::new(path, "open", e))?;
        Ok(Self {
            ch,
            path: path.to_owned(),
        })
    }

    /// `r`, or a [`DevError`] for operation `op`.
    fn check<T, E: Into<io::Error>>(
        &self,
        r: Result<T, E>,
        op: impl FnOnce() -> String,
    ) -> Result<T> {
        r.map_err(|e| DevError::new(&self.path, op(), e).into())
    }

    fn version(&self) -> Result<sys::Version> {
        self.check(self.ch.version(), || "ioctl EVNOTIFY_IOC_VERSION".into())
    }

    fn stats(&self) -> Result<Counters> {
        let s = self.check(self.ch.stats(), || "ioctl EVNOTIFY_IOC_STATS".into())?;
        Ok(Counters::from(&s))
    }

    fn attach(&self, slot: u32, n: &Notifier) -> Result<()> {
        self.check(self.ch.attach(slot, n), || {
            format!("ioctl EVNOTIFY_IOC_ATTACH (slot {slot})")
        })
    }

    fn attach_kickfd(&self, slot: u32, n: &Notifier) -> Result<()> {
        self.check(self.ch.attach_kickfd(slot, n), || {
            format!("ioctl EVNOTIFY_IOC_KICKFD (slot {slot})")
        })
    }

    fn kick(&self, slot: u32, count: u32) -> Result<()> {
        self.check(self.ch.kick(slot, count), || {
            format!("ioctl EVNOTIFY_IOC_KICK (slot {slot}, count {count})")
        })
    }

    fn set_timer(&self, slot: u32, period: Duration, ticks: u64) -> Result<()> {
        self.check(self.ch.set_timer(slot, period, ticks), || {
            let ns = period.as_nanos();
            format!("ioctl EVNOTIFY_IOC_TIMER (slot {slot}, period {ns} ns, {ticks} ticks)")
        })
    }

    fn set_signal(&self, slot: u32, signo: i32) -> Result<()> {
        self.check(self.ch.set_signal(slot, signo), || {
            format!("ioctl EVNOTIFY_IOC_SIGNAL (slot {slot}, signal {signo})")
        })
    }

    fn set_busypoll(&self, limit: Duration) -> Result<()> {
        self.check(self.ch.set_busypoll(limit), || {
            format!("ioctl EVNOTIFY_IOC_BUSYPOLL ({} ns)", limit.as_nanos())
        })
    }

    fn wait_idle(&self, timeout: Duration) -> Result<()> {
        self.check(self.ch.wait_idle(timeout).map(drop), || {
            format!("wait {timeout:?} for the channel to go idle")
        })
    }

    fn fdinfo(&self) -> Result<String> {
        self.check(self.ch.fdinfo(), || "read its fdinfo".into())
    }

    fn fd(&self) -> i32 {
        self.ch.as_fd().as_raw_fd()
    }
}

fn feature_names(bits: u64) -> Vec<&'static str> {
    [
        (sys::F_NOTIFY, "notify"),
        (sys::F_SLOTS, "slots"),
        (sys::F_KICKFD, "kickfd"),
        (sys::F_FDINFO, "fdinfo"),
        (sys::F_TIMER, "timer"),
        (sys::F_SIGNAL, "signal"),
        (sys::F_BUSYPOLL, "busypoll"),
    ]
    .into_iter()
    .filter(|(b, _)| bits & b != 0)
    .map(|(_, n)| n)
    .collect()
}

/// Every counter, on two lines.
fn counters_text(s: &Counters) -> String {
    format!(
        "stats: kicks={} (by fd {}) timer_ticks={} handled={} notifies={} signals={} dropped={} \
         wakeups={} polled={} pending={} coalesced={} sig_refused={}\n\
         slots: attached={} kickfds={} timers={} signalling={}; thread pid {}, busy-poll limit {} ns",
        s.kicks,
        s.fd_kicks,
        s.timer_ticks,
        s.handled,
        s.notifies,
        s.signals,
        s.dropped,
        s.wakeups,
        s.polled,
        s.pending,
        s.coalesced,
        s.sig_refused,
        s.attached,
        s.kickfds,
        s.timers,
        s.signal_slots,
        s.thread_pid,
        s.busypoll_ns
    )
}

fn print_stats(dev: &Dev) -> Result<()> {
    println!("{}", counters_text(&dev.stats()?));
    Ok(())
}

fn print_json(v: &serde_json::Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn info(dev: &Dev, as_json: bool) -> Result<()> {
    let v = dev.version()?;
    let stats = dev.stats()?;
    let fdinfo = dev.fdinfo()?;
    if as_json {
        let parsed = stat::parse_fdinfo(&fdinfo)
            .with_context(|| format!("{}: parse its fdinfo", dev.path))?;
        return print_json(&json!({
            "device": dev.path,
            "api_version": v.api_version,
            "cli_api_version": sys::API_VERSION,
            "nr_slots": v.nr_slots,
            "features": v.features,
            "feature_names": feature_names(v.features),
            "limits": {
                "max_kick": sys::MAX_KICK,
                "max_pending": sys::MAX_PENDING,
                "min_period_ns": sys::MIN_PERIOD_NS,
                "max_period_ns": sys::MAX_PERIOD_NS,
                "max_busypoll_ns": sys::MAX_BUSYPOLL_NS,
            },
            "fd": dev.fd(),
            "stats": stats,
            "slots": parsed.slots,
        }));
    }
    println!("api_version: {}", v.api_version);
    if v.api_version != sys::API_VERSION {
        println!(
            "  (this program was built for API version {}: rebuild one of them)",
            sys::API_VERSION
        );
    }
    println!("slots:       {}", v.nr_slots);
    println!(
        "features:    {:#x} ({})",
        v.features,
        feature_names(v.features).join(" ")
    );
    println!("max kick:    {}", sys::MAX_KICK);
    println!(
        "timer:       {} ms .. {} s",
        sys::MIN_PERIOD_NS / 1_000_000,
        sys::MAX_PERIOD_NS / 1_000_000_000
    );
    println!("{}", counters_text(&stats));
    println!("fdinfo:\n{}", fdinfo.trim_end().replace('\n', "\n  "));
    Ok(())
}

/// Blocks until `want` notifications arrived on `n`.
fn collect(n: &Notifier, want: u64) -> Result<u64> {
    let mut got = 0;
    while got < want {
        let v = n.wait_timeout(Duration::from_secs(10))?;
        ensure!(v > 0, "no notification within 10 s ({got} of {want})");
        got += v;
    }
    Ok(got)
}

fn ping(dev: &Dev, a: &PingArgs) -> Result<()> {
    let (slot, burst) = (a.slot, a.burst);
    let n = Notifier::new()?;
    dev.attach(slot, &n)?;
    let kick = Notifier::new()?;
    if a.kickfd {
        dev.attach_kickfd(slot, &kick)?;
    }
    let how = if a.kickfd { "kickfd" } else { "ioctl" };
    let mut hist = Histogram::<u64>::new(3)?;
    for i in 0..a.count {
        let t = Instant::now();
        if a.kickfd {
            kick.post(burst.into())?;
        } else {
            dev.kick(slot, burst)?;
        }
        let got = collect(&n, burst.into())?;
        let ns = t.elapsed().as_nanos() as u64;
        hist.record(ns)?;
        if !a.quiet && !a.json {
            println!(
                "kick {i} ({how}): slot {slot} +{burst} -> notified {got} in {:.1} us",
                ns as f64 / 1e3
            );
        }
    }
    let (min, p50, p99, max) = (
        hist.min(),
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.99),
        hist.max(),
    );
    if a.json {
        return print_json(&json!({
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

fn timer(dev: &Dev, period: Duration, ticks: u64, slot: u32) -> Result<()> {
    let n = Notifier::new()?;
    dev.attach(slot, &n)?;
    dev.set_timer(slot, period, ticks)?;
    let start = Instant::now();
    let mut total = 0;
    while ticks == 0 || total < ticks {
        let v = n.wait_timeout(period * 10 + Duration::from_secs(1))?;
        ensure!(v > 0, "the timer stopped ticking");
        total += v;
        println!(
            "{:>10.3} ms  +{v} tick(s), {total} in all",
            start.elapsed().as_secs_f64() * 1e3
        );
    }
    print_stats(dev)
}

fn signal(dev: &Dev, signo: i32, count: u32, slot: u32) -> Result<()> {
    let sfd = evnotify::catch_signal(signo).with_context(|| format!("catch signal {signo}"))?;
    dev.set_signal(slot, signo)?;
    dev.kick(slot, count)?;
    dev.wait_idle(Duration::from_secs(10))?;
    let mut got = 0;
    while let Some(info) = sfd.try_read()? {
        got += 1;
        println!("signal {} from the kernel (code {})", info.signo, info.code);
        if got == count || signo < libc::SIGRTMIN() {
            break; // Standard signals coalesce: one is all that is queued.
        }
    }
    println!("{count} kicks -> {got} signal(s) received");
    print_stats(dev)
}

fn watch(
    dev: &Dev,
    timer: Option<Duration>,
    kick_every: Option<Duration>,
    dur: Duration,
) -> Result<()> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let (tn, kn, kick) = (Notifier::new()?, Notifier::new()?, Notifier::new()?);
    dev.attach(0, &tn)?;
    dev.attach(1, &kn)?;
    dev.attach_kickfd(1, &kick)?;
    if let Some(p) = timer {
        dev.set_timer(0, p, 0)?;
    }
    let start = Instant::now();
    let mut next_kick = kick_every.map(|d| start + d);
    while start.elapsed() < dur {
        let now = Instant::now();
        let until = next_kick.map_or(start + dur, |k| k.min(start + dur));
        let ms = until
            .saturating_duration_since(now)
            .as_millis()
            .min(u16::MAX.into()) as u16;
        let mut fds = [
            PollFd::new(tn.as_fd(), PollFlags::POLLIN),
            PollFd::new(kn.as_fd(), PollFlags::POLLIN),
        ];
        poll(&mut fds, PollTimeout::from(ms)).context("poll")?;
        let t = start.elapsed().as_secs_f64() * 1e3;
        for (name, n) in [("timer", &tn), ("kick ", &kn)] {
            let v = n.drain()?;
            if v > 0 {
                println!("{t:>10.3} ms  {name} +{v}");
            }
        }
        if let (Some(k), Some(every)) = (next_kick, kick_every) {
            if Instant::now() >= k {
                kick.post(1)?;
                next_kick = Some(k + every);
            }
        }
    }
    dev.set_timer(0, Duration::ZERO, 0)?;
    print_stats(dev)
}

fn slot_text(s: &stat::Slot) -> String {
    let timer = match &s.timer {
        None => "none".to_owned(),
        Some(t) if t.left == 0 => format!("every {} ns until cancelled", t.period_ns),
        Some(t) => format!("every {} ns, {} left", t.period_ns, t.left),
    };
    format!(
        "slot {}: notify {}, kickfd {}, pending {}, signal {}, timer {timer}",
        s.slot, s.notify, s.kickfd, s.pending, s.signal
    )
}

fn stat(device: &str, as_json: bool, verbose: bool) -> Result<()> {
    // The links in /proc name the node as it was opened: compare canonical paths.
    let path = Path::new(device);
    let device = path.canonicalize().unwrap_or_else(|_| path.to_owned());
    let scan = stat::scan(Path::new("/proc"), &device)?;
    for nc in &scan.not_channels {
        eprintln!(
            "evnotify: pid {} fd {} is linked to {} but is not a channel: {}",
            nc.pid,
            nc.fd,
            device.display(),
            nc.error
        );
    }
    if as_json {
        return print_json(&serde_json::to_value(&scan)?);
    }
    println!(
        "{:>7} {:>6} {:<15} {:>4} {:>7} {:>6} {:>6} {:>6} {:>6} {:>10} {:>10} {:>10} {:>8} {:>8}",
        "PID",
        "UID",
        "COMM",
        "FD",
        "THREAD",
        "NOTIFY",
        "KICKFD",
        "TIMER",
        "SIGNAL",
        "KICKS",
        "TICKS",
        "HANDLED",
        "PENDING",
        "DROPPED"
    );
    for e in &scan.channels {
        let s = &e.info.stats;
        println!(
            "{:>7} {:>6} {:<15} {:>4} {:>7} {:>6} {:>6} {:>6} {:>6} {:>10} {:>10} {:>10} {:>8} {:>8}",
            e.pid,
            e.uid,
            e.comm,
            e.fd,
            s.thread_pid,
            s.attached,
            s.kickfds,
            s.timers,
            s.signal_slots,
            s.kicks,
            s.timer_ticks,
            s.handled,
            s.pending,
            s.dropped
        );
        if verbose {
            println!("    {}", counters_text(s).replace('\n', "\n    "));
            for slot in &e.info.slots {
                println!("    {}", slot_text(slot));
            }
        }
    }
    let mut summary = format!(
        "{} channel(s); {} process(es) scanned",
        scan.channels.len(),
        scan.processes
    );
    if scan.unreadable > 0 {
        summary += &format!(
            "; {} not readable (other users' processes: run as root to see them)",
            scan.unreadable
        );
    }
    if scan.vanished > 0 {
        summary += &format!("; {} went away during the scan", scan.vanished);
    }
    println!("{summary}");
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Stat { json, verbose } => {
            if cli.busypoll.is_some() {
                Cli::command()
                    .error(
                        clap::error::ErrorKind::ArgumentConflict,
                        "--busypoll sets a channel's limit, and stat opens no channel",
                    )
                    .exit();
            }
            return stat(&cli.device, json, verbose);
        }
        Cmd::Manpage { dir } => return manpage::write(&dir),
        _ => {}
    }
    let dev = Dev::open(&cli.device)?;
    if let Some(limit) = cli.busypoll {
        dev.set_busypoll(limit)?;
    }
    match cli.cmd {
        Cmd::Info { json } => info(&dev, json),
        Cmd::Ping(a) => ping(&dev, &a),
        Cmd::Timer {
            period,
            ticks,
            slot,
        } => timer(&dev, period, ticks, slot),
        Cmd::Signal { signo, count, slot } => signal(&dev, signo, count, slot),
        Cmd::Watch {
            timer,
            kick_every,
            duration,
        } => watch(&dev, timer, kick_every, duration),
        Cmd::Stat { .. } | Cmd::Manpage { .. } => unreachable!("handled above"),
    }
}

fn main() -> ExitCode {
    // Like other filters (`evnotify stat | head`): a closed pipe ends the program quietly
    // instead of making `println!` panic. Rust starts with SIGPIPE ignored.
    // SAFETY: Restoring a signal's default disposition, before any other thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("evnotify: {e:#}");
            if let Some(hint) = e.downcast_ref::<DevError>().and_then(DevError::hint) {
                eprintln!("hint: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}
