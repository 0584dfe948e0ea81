//! `evnotify-bench run`: measures, in one run and one VM, the module's notification paths side
//! by side with what a user would pick instead (two user threads ping-ponging over eventfds or
//! pipes, a user thread that busy-polls, io_uring, timerfd), and prints the results as JSON.
//! `evnotify-bench chart` draws them. It reports; it never fails on a slow run.

mod chart;
mod cpu;
mod measure;
mod peers;
mod report;
mod rtt;
mod scaling;
mod shared;
mod start;
mod sweep;
mod throughput;
mod timers;
mod watchdog;

use anyhow::Result;
use clap::{Parser, Subcommand};
use cpu::cpus;
use evnotify::Channel;
use measure::progress;
use report::{print_results, report, shared_report, Results, SHARED_KEYS};
use rtt::{latency, PINNINGS};
use scaling::scaling;
use serde_json::json;
use std::{path::PathBuf, time::Duration};
use sweep::sweep;
use throughput::throughput;

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
    /// The polling round trips `scripts/profile.sh` counts the instructions of, between marks
    /// its TCG plugin sees (not a measurement of time).
    Profile {
        /// Round trips per path between its two marks.
        #[arg(long, default_value_t = 20_000)]
        iters: u32,
    },
    /// Draw the latency distributions, the busy-poll sweep, timer lateness and the scaling
    /// from a results file.
    Chart { results: PathBuf, png: PathBuf },
}

/// The compiler of a `/proc/version` line: its second parenthesised group up to the first
/// comma ("Linux version V (user@host) (COMPILER, LINKER) #1 ..."), or "?".
fn compiler(version: &str) -> String {
    let (mut depth, mut groups, mut start) = (0, 0, None);
    for (i, c) in version.char_indices() {
        match (c, start) {
            ('(', _) => {
                depth += 1;
                if depth == 1 {
                    groups += 1;
                    if groups == 2 {
                        start = Some(i + 1);
                    }
                }
            }
            (')' | ',', Some(s)) if depth == 1 => return version[s..i].trim().to_string(),
            (')', _) => depth -= 1,
            _ => {}
        }
    }
    "?".into()
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
    progress("thread start");
    let thread_start = start::thread_start(START_ITERS)?;
    let shared = shared::run(channels, iters)?;
    let out = report(&Results {
        vm: json!({
            "accel": std::env::var("EVNOTIFY_ACCEL").unwrap_or_else(|_| "tcg".into()),
            "cpus": cpus(),
            "kernel": kernel.trim(),
            // Lockdep makes every lock several times dearer, and larger (README: Performance).
            "lockdep": std::path::Path::new("/proc/lockdep").exists(),
            // Which compiler built the kernel, and whether its C helpers are inlined into Rust
            // code (with CONFIG_RUST_INLINE_HELPERS, vmlinux has no `rust_helper_atomic_read`):
            // under gcc, each of the kernel crate's atomics and locks is a call
            // (docs/design.md). Read at the end: "?" and null rather than lose the run.
            "compiler": std::fs::read_to_string("/proc/version")
                .map_or_else(|_| "?".into(), |v| compiler(&v)),
            "rust_inline_helpers": std::fs::read_to_string("/proc/kallsyms")
                .ok()
                .map(|k| !k.contains(" rust_helper_atomic_read\n")),
            "iters": iters,
            // Read at the end: under TCG the clocksource watchdog may have left the TSC for the
            // emulated HPET, which makes every clock read a device access (scripts/vm.sh).
            "clocksource": std::fs::read_to_string(
                "/sys/devices/system/clocksource/clocksource0/current_clocksource"
            )
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "?".into()),
        }),
        busypoll_ns,
        rtt,
        throughput,
        scaling,
        bytes_per_channel,
        thread_start,
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

/// Starts per row of the thread-start measurement: each creates and stops a kernel thread,
/// after a quiet gap (50 ms).
const START_ITERS: u32 = 100;

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
        Cmd::Profile { iters } => {
            watchdog::start(STALL, watchdog::abort);
            let limit = Duration::from_nanos(Channel::open()?.stats()?.busypoll_ns.into());
            rtt::profile(iters, limit)
        }
        Cmd::Chart { results, png } => chart::draw(&results, &png),
    }
}

#[cfg(test)]
mod tests {
    use super::compiler;

    #[test]
    fn compiler_of_proc_version() {
        let clang = "Linux version 7.3.4 (root@vm) (Debian clang version 22.1.8 (1~deb12u1), \
                     Debian LLD 22.1.8) #1 SMP PREEMPT_DYNAMIC Mon Dec  7 09:00:00 UTC 2026\n";
        assert_eq!(compiler(clang), "Debian clang version 22.1.8 (1~deb12u1)");
        let gcc = "Linux version 7.3.4 (root@vm) (gcc (Debian 12.2.0-14+deb12u1) 12.2.0, GNU ld \
                   (GNU Binutils for Debian) 2.40) #1 SMP\n";
        assert_eq!(compiler(gcc), "gcc (Debian 12.2.0-14+deb12u1) 12.2.0");
        assert_eq!(compiler("Linux version 7.3.4 (root@vm)"), "?");
    }
}
