//! `evnotify`: inspect and exercise `/dev/evnotify` channels.
//!
//! Each run opens its own channel (a channel lives as long as its file), sets it up as asked
//! and shows what flows through it.

use anyhow::{ensure, Context, Result};
use clap::{Parser, Subcommand};
use evnotify::{sys, Channel, Notifier};
use hdrhistogram::Histogram;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// The device node.
    #[arg(long, default_value = evnotify::DEVICE)]
    device: String,
    /// Busy-poll limit of the channel's thread, e.g. 50us (0 turns polling off; default: the
    /// module's busypoll_ns).
    #[arg(long, value_parser = humantime::parse_duration)]
    busypoll: Option<Duration>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print the API version, features, limits, and a channel's counters and fdinfo.
    Info,
    /// Kick a slot, wait for its notification, and print round-trip times.
    Ping {
        /// Number of round trips.
        #[arg(short = 'n', long, default_value_t = 10)]
        count: u32,
        /// Slot to use.
        #[arg(short, long, default_value_t = 0)]
        slot: u32,
        /// Kicks per round trip (a burst); the wait collects all of them.
        #[arg(short, long, default_value_t = 1)]
        burst: u32,
        /// Kick by writing to a kick eventfd instead of by ioctl.
        #[arg(long)]
        kickfd: bool,
        /// Print only the summary.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Start a kernel timer on a slot and print its ticks as they arrive.
    Timer {
        /// Period, e.g. 10ms (minimum 1ms).
        #[arg(short, long, value_parser = humantime::parse_duration, default_value = "100ms")]
        period: Duration,
        /// Ticks to deliver (0: until interrupted).
        #[arg(short = 'n', long, default_value_t = 10)]
        ticks: u64,
        #[arg(short, long, default_value_t = 0)]
        slot: u32,
    },
    /// Have a slot signal this process for each kick, and count the signals received.
    Signal {
        /// Signal number (default: SIGIO).
        #[arg(long, default_value_t = libc::SIGIO)]
        signo: i32,
        /// Kicks to send.
        #[arg(short = 'n', long, default_value_t = 5)]
        count: u32,
        #[arg(short, long, default_value_t = 0)]
        slot: u32,
    },
    /// Print notifications as they arrive, with timestamps: from a timer, from kicks, or both.
    Watch {
        /// Run a timer with this period on slot 0.
        #[arg(long, value_parser = humantime::parse_duration)]
        timer: Option<Duration>,
        /// Also kick slot 1 this often, through a kick eventfd.
        #[arg(long, value_parser = humantime::parse_duration)]
        kick_every: Option<Duration>,
        /// How long to watch.
        #[arg(short, long, value_parser = humantime::parse_duration, default_value = "1s")]
        duration: Duration,
    },
}

fn features(bits: u64) -> String {
    let names = [
        (sys::F_NOTIFY, "notify"),
        (sys::F_SLOTS, "slots"),
        (sys::F_KICKFD, "kickfd"),
        (sys::F_FDINFO, "fdinfo"),
        (sys::F_TIMER, "timer"),
        (sys::F_SIGNAL, "signal"),
        (sys::F_BUSYPOLL, "busypoll"),
    ];
    let known: Vec<_> = names
        .iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|(_, n)| *n)
        .collect();
    format!("{bits:#x} ({})", known.join(" "))
}

fn print_stats(ch: &Channel) -> Result<()> {
    let s = ch.stats()?;
    println!(
        "stats: kicks={} (by fd {}) timer_ticks={} handled={} notifies={} signals={} dropped={} \
         wakeups={} polled={} pending={} coalesced={} sig_refused={}",
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
        s.sig_refused
    );
    println!(
        "slots: attached={} kickfds={} timers={} signalling={}; thread pid {}, busy-poll limit {} ns",
        s.attached, s.kickfds, s.timers, s.signal_slots, s.thread_pid, s.busypoll_ns
    );
    Ok(())
}

fn info(ch: &Channel) -> Result<()> {
    let v = ch.version()?;
    println!("api_version: {}", v.api_version);
    println!("slots:       {}", v.nr_slots);
    println!("features:    {}", features(v.features));
    println!("max kick:    {}", sys::MAX_KICK);
    println!(
        "timer:       {} ms .. {} s",
        sys::MIN_PERIOD_NS / 1_000_000,
        sys::MAX_PERIOD_NS / 1_000_000_000
    );
    print_stats(ch)?;
    println!("fdinfo:\n{}", ch.fdinfo()?.trim_end().replace('\n', "\n  "));
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

fn ping(ch: &Channel, count: u32, slot: u32, burst: u32, kickfd: bool, quiet: bool) -> Result<()> {
    let n = Notifier::new()?;
    ch.attach(slot, &n).context("attach")?;
    let kick = Notifier::new()?;
    if kickfd {
        ch.attach_kickfd(slot, &kick)
            .context("attach kick eventfd")?;
    }
    let mut hist = Histogram::<u64>::new(3)?;
    for i in 0..count {
        let t = Instant::now();
        if kickfd {
            kick.post(burst.into())?;
        } else {
            ch.kick(slot, burst).context("kick")?;
        }
        let got = collect(&n, burst.into())?;
        let ns = t.elapsed().as_nanos() as u64;
        hist.record(ns)?;
        if !quiet {
            let how = if kickfd { "write" } else { "ioctl" };
            println!(
                "kick {i} ({how}): slot {slot} +{burst} -> notified {got} in {:.1} us",
                ns as f64 / 1e3
            );
        }
    }
    println!(
        "{count} round trips: min {:.1} us, p50 {:.1} us, p99 {:.1} us, max {:.1} us",
        hist.min() as f64 / 1e3,
        hist.value_at_quantile(0.5) as f64 / 1e3,
        hist.value_at_quantile(0.99) as f64 / 1e3,
        hist.max() as f64 / 1e3
    );
    print_stats(ch)
}

fn timer(ch: &Channel, period: Duration, ticks: u64, slot: u32) -> Result<()> {
    let n = Notifier::new()?;
    ch.attach(slot, &n)?;
    ch.set_timer(slot, period, ticks).context("start timer")?;
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
    print_stats(ch)
}

fn signal(ch: &Channel, signo: i32, count: u32, slot: u32) -> Result<()> {
    let sfd = evnotify::catch_signal(signo).with_context(|| format!("catch signal {signo}"))?;
    ch.set_signal(slot, signo).context("set signal")?;
    ch.kick(slot, count)?;
    ch.wait_idle(Duration::from_secs(10))?;
    let mut got = 0;
    while let Some(info) = sfd.try_read()? {
        got += 1;
        println!("signal {} from the kernel (code {})", info.signo, info.code);
        if got == count || signo < libc::SIGRTMIN() {
            break; // Standard signals coalesce: one is all that is queued.
        }
    }
    println!("{count} kicks -> {got} signal(s) received");
    print_stats(ch)
}

fn watch(
    ch: &Channel,
    timer: Option<Duration>,
    kick_every: Option<Duration>,
    dur: Duration,
) -> Result<()> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let (tn, kn, kick) = (Notifier::new()?, Notifier::new()?, Notifier::new()?);
    ch.attach(0, &tn)?;
    ch.attach(1, &kn)?;
    ch.attach_kickfd(1, &kick)?;
    if let Some(p) = timer {
        ch.set_timer(0, p, 0)?;
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
        poll(&mut fds, PollTimeout::from(ms))?;
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
    ch.cancel_timer(0)?;
    print_stats(ch)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let ch = Channel::open_path(&cli.device).with_context(|| format!("open {}", cli.device))?;
    if let Some(limit) = cli.busypoll {
        ch.set_busypoll(limit).context("set busy-poll limit")?;
    }
    match cli.cmd {
        Cmd::Info => info(&ch),
        Cmd::Ping {
            count,
            slot,
            burst,
            kickfd,
            quiet,
        } => ping(&ch, count, slot, burst, kickfd, quiet),
        Cmd::Timer {
            period,
            ticks,
            slot,
        } => timer(&ch, period, ticks, slot),
        Cmd::Signal { signo, count, slot } => signal(&ch, signo, count, slot),
        Cmd::Watch {
            timer,
            kick_every,
            duration,
        } => watch(&ch, timer, kick_every, duration),
    }
}
