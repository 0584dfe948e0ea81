//! `evnotify`: inspect and exercise `/dev/evnotify` channels.

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
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print the API version, features and a fresh channel's counters.
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
        /// Print only the summary.
        #[arg(short, long)]
        quiet: bool,
    },
}

fn features(bits: u64) -> String {
    let names = [(sys::F_NOTIFY, "notify"), (sys::F_SLOTS, "slots")];
    let known: Vec<_> = names
        .iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|(_, n)| *n)
        .collect();
    format!("{bits:#x} ({})", known.join(" "))
}

fn info(ch: &Channel) -> Result<()> {
    let v = ch.version()?;
    let s = ch.stats()?;
    println!("api_version: {}", v.api_version);
    println!("slots:       {}", v.nr_slots);
    println!("features:    {}", features(v.features));
    println!("thread_pid:  {}", s.thread_pid);
    println!(
        "stats:       kicks={} notifies={} dropped={} wakeups={} pending={} attached={}",
        s.kicks, s.notifies, s.dropped, s.wakeups, s.pending, s.attached
    );
    Ok(())
}

fn ping(ch: &Channel, count: u32, slot: u32, burst: u32, quiet: bool) -> Result<()> {
    let n = Notifier::new()?;
    ch.attach(slot, &n).context("attach")?;
    let mut hist = Histogram::<u64>::new(3)?;
    for i in 0..count {
        let t = Instant::now();
        ch.kick(slot, burst).context("kick")?;
        let mut got = 0;
        while got < u64::from(burst) {
            let v = n.wait_timeout(Duration::from_secs(10))?;
            ensure!(v > 0, "no notification within 10 s");
            got += v;
        }
        let ns = t.elapsed().as_nanos() as u64;
        hist.record(ns)?;
        if !quiet {
            println!(
                "kick {i}: slot {slot} +{burst} -> notified {got} in {:.1} us",
                ns as f64 / 1e3
            );
        }
    }
    let s = ch.stats()?;
    println!(
        "{count} round trips: min {:.1} us, p50 {:.1} us, p99 {:.1} us, max {:.1} us",
        hist.min() as f64 / 1e3,
        hist.value_at_quantile(0.5) as f64 / 1e3,
        hist.value_at_quantile(0.99) as f64 / 1e3,
        hist.max() as f64 / 1e3
    );
    println!(
        "channel: kicks={} notifies={} wakeups={} (thread pid {})",
        s.kicks, s.notifies, s.wakeups, s.thread_pid
    );
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let ch = Channel::open_path(&cli.device).with_context(|| format!("open {}", cli.device))?;
    match cli.cmd {
        Cmd::Info => info(&ch),
        Cmd::Ping {
            count,
            slot,
            burst,
            quiet,
        } => ping(&ch, count, slot, burst, quiet),
    }
}
