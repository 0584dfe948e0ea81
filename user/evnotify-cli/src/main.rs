//! `evnotify`: inspect and exercise `/dev/evnotify` channels.
//!
//! Each run opens its own channel (a channel lives as long as its file), sets it up as asked
//! and shows what flows through it; `stat` lists the channels of every process instead.

mod args;
mod error;
mod manpage;
mod stat;

use anyhow::{Context, Result};
use args::{Cli, Cmd, PingArgs};
use clap::{CommandFactory, Parser};
use error::{DevError, Failure};
use evnotify::{sys, Channel, Notifier, Stats};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use stat::Worker;
use std::{
    io,
    os::fd::AsFd,
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

    fn stats(&self) -> Result<Stats> {
        self.check(self.ch.stats(), || "ioctl EVNOTIFY_IOC_STATS".into())
    }

    fn worker(&self) -> Result<Worker> {
        let w = self.check(self.ch.worker(), || "ioctl EVNOTIFY_IOC_WORKER".into())?;
        Ok(Worker::from(&w))
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

    /// A new eventfd for `slot` (`role`: what it is for), failing like the device's calls.
    fn notifier(&self, slot: u32, role: &str) -> Result<Notifier> {
        self.check(Notifier::new(), || {
            format!("eventfd(2) for slot {slot} ({role})")
        })
    }

    fn wait_idle(&self, timeout: Duration) -> Result<()> {
        match self.ch.wait_idle(timeout) {
            Err(e) if e.raw_os_error() == Some(libc::ETIMEDOUT) => Err(self.stalled(format!(
                "the channel did not go idle within {timeout:?}: kicks still pending"
            ))),
            r => self.check(r.map(drop), || {
                format!("wait {timeout:?} for the channel to go idle")
            }),
        }
    }

    /// A [`Failure`] for a channel that stopped delivering: `what` after the device's name,
    /// and its counters in the hint (which say whether the thread handled the work).
    fn stalled(&self, what: String) -> anyhow::Error {
        let counters = match self.stats() {
            Ok(s) => counters_text(&s),
            Err(e) => format!("(no counters: {e:#})"),
        };
        Failure {
            what: format!("{}: {what}", self.path),
            hint: format!(
                "if `pending` stays above 0, the channel's kernel thread is not running (look \
                 for the module's warnings in `dmesg`); if `handled` grew but not `notifies`, \
                 the slot lost its eventfd; if `notifies` grew, another reader of the eventfd \
                 took the count. The channel's counters now:\n{counters}"
            ),
        }
        .into()
    }

    fn fdinfo(&self) -> Result<String> {
        self.check(self.ch.fdinfo(), || "read its fdinfo".into())
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
        (sys::F_WORKERS, "workers"),
    ]
    .into_iter()
    .filter(|(b, _)| bits & b != 0)
    .map(|(_, n)| n)
    .collect()
}

/// Every counter, on two lines.
fn counters_text(s: &Stats) -> String {
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

/// The worker line: `None` is a module before API version 3, which has no workers.
fn worker_text(w: Option<&Worker>) -> String {
    match w {
        None => "worker: not reported (the module predates API version 3)".to_owned(),
        Some(w) if w.worker_id == 0 => {
            "worker: none yet (it starts with the first kick, kick eventfd or timer)".to_owned()
        }
        Some(w) => format!(
            "worker: {} (thread evnotify/{}, pid {}), serving {} channel(s)",
            w.worker_id, w.worker_id, w.thread_pid, w.channels
        ),
    }
}

fn print_stats(dev: &Dev) -> Result<()> {
    println!("{}", counters_text(&dev.stats()?));
    Ok(())
}

/// The version of the JSON output's layout, in every object as `schema_version`: within a
/// version the field names and their meaning are stable (a field may be added); renaming or
/// removing one bumps it.
const SCHEMA_VERSION: u32 = 1;

/// How results are printed: text, or JSON (`-j`), compact unless `--pretty`.
#[derive(Debug, Clone, Copy)]
struct Output {
    json: bool,
    pretty: bool,
}

impl Output {
    /// One JSON object, with `schema_version`, on one line (or indented with `--pretty`).
    fn render(self, mut v: Value) -> Result<String> {
        if let Value::Object(m) = &mut v {
            m.insert("schema_version".into(), SCHEMA_VERSION.into());
        }
        Ok(if self.pretty {
            serde_json::to_string_pretty(&v)?
        } else {
            serde_json::to_string(&v)?
        })
    }

    /// Prints [`Output::render`]'s object (stdout is flushed at each line: a reader of the
    /// JSON Lines gets each event as it comes).
    fn emit(self, v: Value) -> Result<()> {
        println!("{}", self.render(v)?);
        Ok(())
    }
}

/// Nanoseconds, for the JSON's `_ns` fields (saturating: a day is far below 2^64 ns).
fn nanos(d: Duration) -> u64 {
    d.as_nanos().try_into().unwrap_or(u64::MAX)
}

/// A JSON Lines event of `timer`: `count` ticks arrived on `slot`, `total` in all.
fn ticks_record(elapsed: Duration, slot: u32, count: u64, total: u64) -> Value {
    json!({"type": "ticks", "elapsed_ns": nanos(elapsed), "slot": slot, "ticks": count, "total": total})
}

/// A JSON Lines event of `watch`: `count` notifications on `slot`, from its `source`.
fn notify_record(elapsed: Duration, source: &str, slot: u32, count: u64) -> Value {
    json!({"type": "notify", "elapsed_ns": nanos(elapsed), "source": source, "slot": slot, "count": count})
}

/// A JSON Lines event of `signal`: one signal received, with its `si_code`.
fn signal_record(elapsed: Duration, signo: i32, code: i32) -> Value {
    json!({"type": "signal", "elapsed_ns": nanos(elapsed), "signo": signo, "code": code})
}

fn info(dev: &Dev, out: Output) -> Result<()> {
    let v = dev.version()?;
    let stats = dev.stats()?;
    // An older module has no EVNOTIFY_IOC_WORKER (ENOTTY): ask only one that has workers.
    let worker = match v.features & sys::F_WORKERS {
        0 => None,
        _ => Some(dev.worker()?),
    };
    let fdinfo = dev.fdinfo()?;
    if out.json {
        let parsed = stat::parse_fdinfo(&fdinfo)
            .with_context(|| format!("{}: parse its fdinfo", dev.path))?;
        return out.emit(json!({
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
            "stats": stats,
            "worker": worker,
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
    println!("{}", worker_text(worker.as_ref()));
    println!("fdinfo:\n{}", fdinfo.trim_end().replace('\n', "\n  "));
    Ok(())
}

/// The operation of a write of `n` kicks to `slot`'s kick eventfd, for its error.
fn kick_write(slot: u32, n: u64) -> String {
    format!("write(2) of {n} to slot {slot}'s kick eventfd")
}

/// The operation of a read of `slot`'s notify eventfd, for its error.
fn notify_read(slot: u32) -> String {
    format!("read(2) of slot {slot}'s notify eventfd")
}

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

fn ping(dev: &Dev, a: &PingArgs, out: Output) -> Result<()> {
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

fn timer(dev: &Dev, period: Duration, ticks: u64, slot: u32, out: Output) -> Result<()> {
    let n = dev.notifier(slot, "notify")?;
    dev.attach(slot, &n)?;
    dev.set_timer(slot, period, ticks)?;
    let start = Instant::now();
    let mut total = 0;
    let patience = period * 10 + Duration::from_secs(1);
    while ticks == 0 || total < ticks {
        let v = dev.check(n.wait_timeout(patience), || {
            format!("wait for slot {slot}'s eventfd")
        })?;
        if v == 0 {
            let of = if ticks == 0 {
                String::new()
            } else {
                format!(" of {ticks}")
            };
            return Err(dev.stalled(format!(
                "slot {slot}: the timer (period {period:?}) stopped ticking: {total}{of} \
                 tick(s), then none for {patience:?}"
            )));
        }
        total += v;
        if out.json {
            out.emit(ticks_record(start.elapsed(), slot, v, total))?;
        } else {
            println!(
                "{:>10.3} ms  +{v} tick(s), {total} in all",
                start.elapsed().as_secs_f64() * 1e3
            );
        }
    }
    if out.json {
        return out.emit(json!({
            "type": "end",
            "device": dev.path,
            "slot": slot,
            "period_ns": nanos(period),
            "ticks": total,
            "stats": dev.stats()?,
        }));
    }
    print_stats(dev)
}

fn signal(dev: &Dev, signo: i32, count: u32, slot: u32, out: Output) -> Result<()> {
    let start = Instant::now();
    let sfd = dev.check(evnotify::catch_signal(signo), || {
        format!("signalfd(2) for signal {signo}")
    })?;
    dev.set_signal(slot, signo)?;
    dev.kick(slot, count)?;
    dev.wait_idle(Duration::from_secs(10))?;
    let want = signals_wanted(signo, count);
    let mut got = 0;
    while got < want {
        let read = sfd.try_read();
        let Some(info) = dev.check(read, || {
            format!("read(2) of the signalfd for signal {signo}")
        })?
        else {
            break;
        };
        got += 1;
        if out.json {
            out.emit(signal_record(start.elapsed(), info.signo, info.code))?;
        } else {
            println!("signal {} from the kernel (code {})", info.signo, info.code);
        }
    }
    let s = dev.stats()?;
    if out.json {
        out.emit(json!({
            "type": "end",
            "device": dev.path,
            "slot": slot,
            "signo": signo,
            "kicks": count,
            "signals_expected": want,
            "signals_received": got,
            "stats": s,
        }))?;
    } else {
        println!("{count} kicks -> {got} signal(s) received");
        println!("{}", counters_text(&s));
    }
    check_signals(&dev.path, slot, signo, count, got, &s)
}

/// How many signals `count` kicks must bring: a real-time signal is queued once per send,
/// a standard one is pending at most once.
fn signals_wanted(signo: i32, count: u32) -> u32 {
    if signo >= libc::SIGRTMIN() {
        count
    } else {
        1
    }
}

/// Fails unless `got` signals are all that `count` kicks must bring.
fn check_signals(path: &str, slot: u32, signo: i32, count: u32, got: u32, s: &Stats) -> Result<()> {
    let want = signals_wanted(signo, count);
    if got >= want {
        return Ok(());
    }
    Err(Failure {
        what: format!(
            "{path}: slot {slot}: {count} kick(s) brought {got} of the {want} signal {signo} \
             expected (the channel sent {}, and {} were refused: sig_refused)",
            s.signals, s.sig_refused
        ),
        hint: "sig_refused counts sends the kernel refused: permission, a security module, \
               or a full real-time signal queue (`ulimit -i`, RLIMIT_SIGPENDING); a signal \
               that another thread of this process does not block may have gone there"
            .to_owned(),
    }
    .into())
}

fn watch(
    dev: &Dev,
    timer: Option<Duration>,
    kick_every: Option<Duration>,
    dur: Duration,
    out: Output,
) -> Result<()> {
    use nix::poll::{ppoll, PollFd, PollFlags};
    let (tn, kn, kick) = (
        dev.notifier(0, "notify")?,
        dev.notifier(1, "notify")?,
        dev.notifier(1, "kick")?,
    );
    dev.attach(0, &tn)?;
    dev.attach(1, &kn)?;
    dev.attach_kickfd(1, &kick)?;
    if let Some(p) = timer {
        dev.set_timer(0, p, 0)?;
    }
    // The parser bounds both durations (a day), so these cannot overflow.
    let later = |t: Instant, d: Duration| t.checked_add(d).context("a deadline beyond the clock");
    let start = Instant::now();
    let end = later(start, dur)?;
    let mut next_kick = kick_every.map(|d| later(start, d)).transpose()?;
    while Instant::now() < end {
        let until = next_kick.map_or(end, |k| k.min(end));
        let mut fds = [
            PollFd::new(tn.as_fd(), PollFlags::POLLIN),
            PollFd::new(kn.as_fd(), PollFlags::POLLIN),
        ];
        match ppoll(&mut fds, Some(poll_timeout(Instant::now(), until)), None) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                return Err(DevError::new(
                    &dev.path,
                    "ppoll(2) on the notify eventfds of slots 0 and 1",
                    e,
                )
                .into())
            }
        }
        let elapsed = start.elapsed();
        for (slot, name, n) in [(0, "timer", &tn), (1, "kick", &kn)] {
            let v = dev.check(n.drain(), || notify_read(slot))?;
            if v > 0 && out.json {
                out.emit(notify_record(elapsed, name, slot, v))?;
            } else if v > 0 {
                let t = elapsed.as_secs_f64() * 1e3;
                println!("{t:>10.3} ms  {name:<5} +{v}");
            }
        }
        if let (Some(k), Some(every)) = (next_kick, kick_every) {
            if Instant::now() >= k {
                dev.check(kick.post(1), || kick_write(1, 1))?;
                next_kick = Some(later(k, every)?);
            }
        }
    }
    dev.set_timer(0, Duration::ZERO, 0)?;
    if out.json {
        return out.emit(json!({
            "type": "end",
            "device": dev.path,
            "duration_ns": nanos(dur),
            "timer_period_ns": timer.map(nanos),
            "kick_every_ns": kick_every.map(nanos),
            "stats": dev.stats()?,
        }));
    }
    print_stats(dev)
}

/// `ppoll`'s timeout until `until`, to the nanosecond: rounded down to milliseconds, the
/// last millisecond before a deadline would be a busy loop of zero-timeout polls.
fn poll_timeout(now: Instant, until: Instant) -> nix::sys::time::TimeSpec {
    nix::sys::time::TimeSpec::from_duration(until.saturating_duration_since(now))
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

/// The WORKER and SERVES cells of `stat`'s table: the worker's id and how many channels it
/// serves, `-` without a worker (none yet, or a module before API version 3).
fn worker_columns(w: Option<&Worker>) -> (String, String) {
    match w {
        Some(w) if w.worker_id != 0 => (w.worker_id.to_string(), w.channels.to_string()),
        _ => ("-".to_owned(), "-".to_owned()),
    }
}

/// The device node `stat` looks for, made canonical (the links in /proc name the node as it
/// was opened). A path that does not exist, or is not a character device, is an error: it
/// would list no channel, which reads as "none open".
fn device_node(device: &str) -> Result<std::path::PathBuf> {
    use std::os::unix::fs::FileTypeExt;
    let fail = |e| DevError::new(device, error::LOOKUP, e);
    let path = Path::new(device).canonicalize().map_err(fail)?;
    let meta = std::fs::metadata(&path).map_err(fail)?;
    if !meta.file_type().is_char_device() {
        return Err(Failure {
            what: format!("{device}: not a character device"),
            hint: format!(
                "stat lists the descriptors open on a device node: give --device the node \
                 the module created ({})",
                evnotify::DEVICE
            ),
        }
        .into());
    }
    Ok(path)
}

/// The columns of `stat`'s table. COMM, the process's name, comes last, as in `ps`: it may
/// hold spaces, so every column before it stays one word.
const STAT_COLUMNS: [&str; 16] = [
    "PID", "UID", "FD", "THREAD", "WORKER", "SERVES", "NOTIFY", "KICKFD", "TIMER", "SIGNAL",
    "KICKS", "TICKS", "HANDLED", "PENDING", "DROPPED", "COMM",
];

/// The widths of the columns but the last: numbers are right-aligned.
const STAT_WIDTHS: [usize; 15] = [7, 6, 4, 7, 6, 6, 6, 6, 6, 6, 10, 10, 10, 8, 8];

fn stat_line(cells: &[String]) -> String {
    let mut line = String::new();
    for (cell, width) in cells.iter().zip(STAT_WIDTHS) {
        line += &format!("{cell:>width$} ");
    }
    line + &cells[STAT_WIDTHS.len()]
}

fn stat_header() -> String {
    stat_line(&STAT_COLUMNS.map(String::from))
}

/// One channel's row of `stat`'s table, in [`STAT_COLUMNS`]' order.
fn stat_row(e: &stat::Entry) -> String {
    let s = &e.info.stats;
    let (worker, serves) = worker_columns(e.info.worker.as_ref());
    stat_line(&[
        e.pid.to_string(),
        e.uid.to_string(),
        e.fd.to_string(),
        s.thread_pid.to_string(),
        worker,
        serves,
        s.attached.to_string(),
        s.kickfds.to_string(),
        s.timers.to_string(),
        s.signal_slots.to_string(),
        s.kicks.to_string(),
        s.timer_ticks.to_string(),
        s.handled.to_string(),
        s.pending.to_string(),
        s.dropped.to_string(),
        e.comm.clone(),
    ])
}

fn stat(device: &str, out: Output, verbose: bool) -> Result<()> {
    let device = device_node(device)?;
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
    if out.json {
        return out.emit(serde_json::to_value(&scan)?);
    }
    println!("{}", stat_header());
    for e in &scan.channels {
        let s = &e.info.stats;
        println!("{}", stat_row(e));
        if verbose {
            println!("    {}", counters_text(s).replace('\n', "\n    "));
            println!("    {}", worker_text(e.info.worker.as_ref()));
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
    let out = Output {
        json: cli.json || cli.pretty,
        pretty: cli.pretty,
    };
    match cli.cmd {
        Cmd::Stat { verbose } => {
            if cli.busypoll.is_some() {
                Cli::command()
                    .error(
                        clap::error::ErrorKind::ArgumentConflict,
                        "--busypoll sets a channel's limit, and stat opens no channel",
                    )
                    .exit();
            }
            return stat(&cli.device, out, verbose);
        }
        Cmd::Manpage { dir } => return manpage::write(&dir),
        Cmd::Completions { shell } => {
            let mut cmd = args::completion_command();
            clap_complete::generate(shell, &mut cmd, "evnotify", &mut io::stdout());
            return Ok(());
        }
        _ => {}
    }
    let dev = Dev::open(&cli.device)?;
    if let Some(limit) = cli.busypoll {
        dev.set_busypoll(limit)?;
    }
    match cli.cmd {
        Cmd::Info => info(&dev, out),
        Cmd::Ping(a) => ping(&dev, &a, out),
        Cmd::Timer {
            period,
            ticks,
            slot,
        } => timer(&dev, period, ticks, slot, out),
        Cmd::Signal { signo, count, slot } => signal(&dev, signo, count, slot, out),
        Cmd::Watch {
            timer,
            kick_every,
            duration,
        } => watch(&dev, timer, kick_every, duration, out),
        Cmd::Stat { .. } | Cmd::Manpage { .. } | Cmd::Completions { .. } => {
            unreachable!("handled above")
        }
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
            if let Some(hint) = error::hint(&e) {
                eprintln!("hint: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_timeout_keeps_the_last_millisecond() {
        let now = Instant::now();
        let t = poll_timeout(now, now + Duration::from_micros(500));
        assert_eq!((t.tv_sec(), t.tv_nsec()), (0, 500_000));
        let t = poll_timeout(now, now + Duration::from_millis(1500));
        assert_eq!((t.tv_sec(), t.tv_nsec()), (1, 500_000_000));
        let t = poll_timeout(now + Duration::from_secs(1), now);
        assert_eq!((t.tv_sec(), t.tv_nsec()), (0, 0));
    }

    #[test]
    fn worker_text_and_columns() {
        let w = |worker_id, thread_pid, channels| Worker {
            worker_id,
            thread_pid,
            channels,
        };
        assert_eq!(
            worker_text(Some(&w(3, 52, 2))),
            "worker: 3 (thread evnotify/3, pid 52), serving 2 channel(s)"
        );
        assert!(worker_text(Some(&w(0, 0, 0))).contains("none yet"));
        assert!(worker_text(None).contains("API version 3"));
        assert_eq!(worker_columns(Some(&w(3, 52, 2))), ("3".into(), "2".into()));
        for none in [Some(&w(0, 0, 0)), None] {
            assert_eq!(worker_columns(none), ("-".into(), "-".into()));
        }
    }

    #[test]
    fn stat_puts_comm_last_so_that_spaces_in_it_split_nothing() {
        let header = stat_header();
        let cols: Vec<_> = header.split_whitespace().collect();
        assert_eq!(cols, STAT_COLUMNS, "{header}");
        assert!(
            header.starts_with("    PID    UID   FD  THREAD WORKER SERVES"),
            "{header}"
        );
        let info = stat::parse_fdinfo(include_str!("../testdata/fdinfo-shared.txt")).unwrap();
        let e = stat::Entry {
            pid: 4242,
            comm: "my server 2".into(),
            uid: 1000,
            fd: 7,
            info,
        };
        let row = stat_row(&e);
        let cells: Vec<_> = row.split_whitespace().collect();
        assert_eq!(cells[..6], ["4242", "1000", "7", "52", "3", "2"], "{row}");
        assert_eq!(cells[15..].join(" "), "my server 2", "{row}");
        assert!(row.ends_with(" my server 2"), "{row}");
        // Every column starts where its header does: the numbers end under their names.
        assert_eq!(
            row.find(" my server").unwrap(),
            header.find(" COMM").unwrap()
        );
    }

    /// The eventfd calls of `ping` and `watch` fail naming the device, the call and the
    /// slot, with a hint of what to do.
    #[test]
    fn eventfd_errors_name_the_call_and_say_what_to_do() {
        use nix::errno::Errno;
        let e = DevError::new("/dev/evnotify", kick_write(3, 2), Errno::EAGAIN);
        assert_eq!(
            e.to_string(),
            "/dev/evnotify: write(2) of 2 to slot 3's kick eventfd: \
             Resource temporarily unavailable"
        );
        let hint = e.hint().unwrap();
        for part in ["counter is full", "evnotify stat -v", "dmesg"] {
            assert!(hint.contains(part), "{hint:?} lacks {part:?}");
        }
        let e = DevError::new("/dev/evnotify", notify_read(1), Errno::EBADF);
        assert_eq!(
            e.to_string(),
            "/dev/evnotify: read(2) of slot 1's notify eventfd: Bad file descriptor"
        );
        assert!(e.hint().unwrap().contains("report it"), "{:?}", e.hint());
        let e = DevError::new("/dev/evnotify", "signalfd(2) for signal 10", Errno::EMFILE);
        assert!(e.hint().unwrap().contains("ulimit -n"), "{:?}", e.hint());
    }

    /// Compact JSON is one line per object, pretty JSON several; both carry the schema
    /// version. The events of timer, signal and watch have their type, and integer times.
    #[test]
    fn json_is_compact_or_pretty_and_versioned() {
        let compact = Output {
            json: true,
            pretty: false,
        };
        let pretty = Output {
            json: true,
            pretty: true,
        };
        let t = Duration::from_micros(1500);
        let line = compact.render(ticks_record(t, 3, 2, 7)).unwrap();
        assert!(!line.contains('\n'), "{line}");
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            v,
            json!({"schema_version": SCHEMA_VERSION, "type": "ticks", "elapsed_ns": 1_500_000,
                   "slot": 3, "ticks": 2, "total": 7})
        );
        let text = pretty.render(notify_record(t, "kick", 1, 4)).unwrap();
        assert!(text.lines().count() > 3, "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            json!({"schema_version": SCHEMA_VERSION, "type": "notify", "elapsed_ns": 1_500_000,
                   "source": "kick", "slot": 1, "count": 4})
        );
        let v = compact.render(signal_record(t, 35, -4)).unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&v).unwrap(),
            json!({"schema_version": SCHEMA_VERSION, "type": "signal", "elapsed_ns": 1_500_000,
                   "signo": 35, "code": -4})
        );
    }

    #[test]
    fn features_have_names() {
        let all = sys::F_NOTIFY
            | sys::F_SLOTS
            | sys::F_KICKFD
            | sys::F_FDINFO
            | sys::F_TIMER
            | sys::F_SIGNAL
            | sys::F_BUSYPOLL
            | sys::F_WORKERS;
        assert_eq!(feature_names(all).len(), 8);
        assert_eq!(feature_names(sys::F_WORKERS), ["workers"]);
        assert!(feature_names(1 << 63).is_empty());
    }

    #[test]
    fn too_few_signals_fail_with_the_counters_and_a_hint() {
        let rt = libc::SIGRTMIN() + 1;
        let s = Stats {
            signals: 3,
            sig_refused: 2,
            ..Default::default()
        };
        assert!(check_signals("/dev/evnotify", 4, rt, 5, 5, &s).is_ok());
        // A standard signal coalesces: one is enough, none is not.
        assert!(check_signals("/dev/evnotify", 4, libc::SIGIO, 5, 1, &s).is_ok());
        for (signo, got, want) in [(rt, 3, 5), (libc::SIGIO, 0, 1)] {
            let e = check_signals("/dev/evnotify", 4, signo, 5, got, &s).unwrap_err();
            let msg = e.to_string();
            for part in [
                "/dev/evnotify: slot 4: 5 kick(s)",
                &format!("brought {got} of the {want} signal {signo}"),
                "sent 3",
                "2 were refused: sig_refused",
            ] {
                assert!(msg.contains(part), "{msg:?} lacks {part:?}");
            }
            let hint = error::hint(&e).unwrap();
            assert!(hint.contains("ulimit -i"), "{hint}");
        }
    }
}
