//! The command line: every value is checked against the header's limits here, so a bad one is
//! a usage error (exit status 2) naming the accepted range, before the device is opened.

use clap::{builder::RangedU64ValueParser, Args, Parser, Subcommand};
use evnotify::sys;
use std::time::Duration;

/// What `--version` prints after the name: the command's version and the module API version
/// it speaks (`EVNOTIFY_API_VERSION`; a test keeps the two in step).
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (API version 10)");

#[derive(Parser, Debug)]
#[command(
    name = "evnotify",
    version = VERSION,
    propagate_version = true,
    about = "Inspect and exercise /dev/evnotify channels",
    long_about = "Inspect and exercise /dev/evnotify channels.\n\n\
        Each command except `stat` opens a channel of its own (a channel lives as long as its \
        file), sets it up as asked and shows what flows through it. `stat` opens none: it \
        lists the channels other processes have open.",
    after_long_help = after_help()
)]
pub struct Cli {
    /// The device node.
    #[arg(long, global = true, default_value = evnotify::DEVICE)]
    pub device: String,
    /// Busy-poll limit of the channel's thread, 0..=1ms, e.g. 50us (0 turns polling off;
    /// default: the module's busypoll_ns; not with stat, which opens no channel).
    #[arg(long, global = true, value_parser = busypoll)]
    pub busypoll: Option<Duration>,
    /// Print JSON instead of text: one object (info, stat, ping), or JSON Lines, one object
    /// per event as it comes and a last one with the counters (timer, signal, watch).
    /// Compact, one line per object, unless --pretty.
    #[arg(short, long, global = true)]
    pub json: bool,
    /// Print JSON, pretty: indented, several lines per object (implies --json).
    #[arg(long, global = true)]
    pub pretty: bool,
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// Sections after the options, for `--help` and the manual page: (heading, text).
pub const SECTIONS: &[(&str, &str)] = &[
    (
        "EXIT STATUS",
        "0 on success, 1 when an operation fails, 2 for a usage error. A value out of range is \
         a usage error: nothing is sent to the device then.",
    ),
    (
        "ERRORS",
        "Errors name the device and the operation, e.g. \
         \"/dev/evnotify: ioctl EVNOTIFY_IOC_TIMER (slot 3): Invalid argument\", and add a hint \
         where the cause is usually elsewhere: ENOENT on open (the module is not loaded: \
         insmod rust_evnotify.ko, or modprobe rust_evnotify), EACCES (the device is root's, \
         mode 0600: a udev rule can give it to a group), EMFILE (the module's max_channels and \
         max_user_channels parameters, or the open-file limit), ENOTTY (not an evnotify \
         device, or another API version).",
    ),
    (
        "JSON",
        "With -j/--json every command prints JSON: info, stat and ping one object, timer, \
         signal and watch JSON Lines (one object per line: each event as it arrives, with a \
         \"type\" of \"ticks\", \"signal\" or \"notify\", then one of type \"end\" with the \
         channel's counters), as `ip -j monitor` does. --pretty indents them (then the lines are \
         no longer one object each). Every object has \"schema_version\" (1): within a \
         version the field names and their meaning are stable, new fields may be added; a \
         field renamed or removed bumps it. The counters are under \"stats\", with the names of \
         struct evnotify_stats. Times are integers in nanoseconds (fields ending in _ns). \
         Errors still go to standard error as text, with exit status 1.",
    ),
    (
        "FILES",
        "/dev/evnotify: the device. /proc/PID/fdinfo/FD: a channel's counters, worker and \
         slots, which stat reads. The module's parameters max_channels, max_user_channels and \
         busypoll_ns are set when it is loaded (insmod rust_evnotify.ko max_channels=N); \
         they do not appear in /sys/module.",
    ),
];

fn after_help() -> String {
    SECTIONS
        .iter()
        .map(|(heading, text)| format!("{heading}:\n  {text}"))
        .collect::<Vec<_>>()
        .join("\n\n")
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Print the API version, features, limits, and a channel's counters, worker and fdinfo.
    Info,
    /// List every channel open on the system, with its process, thread, worker and counters
    /// (as ss or lsof do, from /proc/*/fd and the fdinfo the module writes). `evnotify list`
    /// is the same command.
    ///
    /// WORKER is the id of the kernel thread that serves the channel (named evnotify/ID;
    /// channels can share one), SERVES how many open channels it serves; both are `-` while
    /// the channel has no worker yet.
    #[command(visible_alias = "list")]
    Stat {
        /// Also print every counter and one line per slot in use.
        #[arg(short, long)]
        verbose: bool,
    },
    /// Kick a slot, wait for its notification, and print round-trip times.
    Ping(PingArgs),
    /// Start a kernel timer on a slot and print its ticks as they arrive.
    Timer {
        /// Period, 1ms..=1day, e.g. 10ms.
        #[arg(short, long, value_parser = period, default_value = "100ms")]
        period: Duration,
        /// Ticks to deliver (0: until interrupted).
        #[arg(short = 'n', long, default_value_t = 10)]
        ticks: u64,
        /// Slot to use, 0..=63.
        #[arg(short, long, default_value_t = 0, value_parser = slot())]
        slot: u32,
    },
    /// Have a slot signal this process for each kick, and count the signals received.
    Signal {
        /// Signal: a number 1..=SIGRTMAX or a name (USR1, SIGIO, RTMIN+3), except SIGKILL and
        /// SIGSTOP, which cannot be caught to count them, and the C library's own real-time
        /// signals (32 and 33 with glibc).
        #[arg(long, default_value = "SIGIO", value_parser = signo, allow_negative_numbers = true)]
        signo: i32,
        /// Kicks to send, 1..=1048576.
        #[arg(short = 'n', long, default_value_t = 5, value_parser = kick_count())]
        count: u32,
        /// Slot to use, 0..=63.
        #[arg(short, long, default_value_t = 0, value_parser = slot())]
        slot: u32,
    },
    /// Print notifications as they arrive, with timestamps: from a timer, from kicks, or both.
    Watch {
        /// Run a timer with this period (1ms..=1day) on slot 0.
        #[arg(long, value_parser = period)]
        timer: Option<Duration>,
        /// Also kick slot 1 this often (1ms..=1day), through a kick eventfd.
        #[arg(long, value_parser = kick_interval)]
        kick_every: Option<Duration>,
        /// How long to watch, 0s..=1day.
        #[arg(short, long, value_parser = watch_duration, default_value = "1s")]
        duration: Duration,
    },
    /// Write the manual pages (evnotify.1, one per command) into DIR.
    #[command(hide = true)]
    Manpage { dir: std::path::PathBuf },
    /// Print the completion script for SHELL (bash, zsh, fish, elvish, powershell) on
    /// standard output: `make install-user` installs those of bash, zsh and fish.
    #[command(hide = true)]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Args, Debug)]
pub struct PingArgs {
    /// Number of round trips, at least 1.
    #[arg(short = 'n', long, default_value_t = 10, value_parser = RangedU64ValueParser::<u32>::new().range(1..=u64::from(u32::MAX)))]
    pub count: u32,
    /// Slot to use, 0..=63.
    #[arg(short, long, default_value_t = 0, value_parser = slot())]
    pub slot: u32,
    /// Kicks per round trip (a burst), 1..=1048576; the wait collects all of them.
    #[arg(short, long, default_value_t = 1, value_parser = kick_count())]
    pub burst: u32,
    /// Kick by writing to a kick eventfd instead of by ioctl.
    #[arg(long)]
    pub kickfd: bool,
    /// Print only the summary (with --json, which prints only the summary, it changes
    /// nothing).
    #[arg(short, long)]
    pub quiet: bool,
}

/// The command as the shells' completions see it: its options and visible commands, without
/// the hidden ones (clap_complete lists hidden commands too).
pub fn completion_command() -> clap::Command {
    use clap::CommandFactory;
    let cli = Cli::command();
    clap::Command::new("evnotify")
        .version(VERSION)
        .args(cli.get_arguments().cloned())
        .subcommands(cli.get_subcommands().filter(|c| !c.is_hide_set()).cloned())
}

fn slot() -> RangedU64ValueParser<u32> {
    RangedU64ValueParser::new().range(0..u64::from(sys::NR_SLOTS))
}

fn kick_count() -> RangedU64ValueParser<u32> {
    RangedU64ValueParser::new().range(1..=u64::from(sys::MAX_KICK))
}

/// Parses a duration (humantime: `20ms`, `1.5s`, `2h`) within `min..=max`.
fn duration_in(s: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let range = format!(
        "{}..={}",
        humantime::format_duration(min),
        humantime::format_duration(max)
    );
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{e}: want a duration such as 20ms, in {range}"))?;
    if d < min || d > max {
        return Err(format!("{s} is not in {range}"));
    }
    Ok(d)
}

/// `EVNOTIFY_MIN_PERIOD_NS..=EVNOTIFY_MAX_PERIOD_NS`.
pub fn period(s: &str) -> Result<Duration, String> {
    duration_in(
        s,
        Duration::from_nanos(sys::MIN_PERIOD_NS),
        Duration::from_nanos(sys::MAX_PERIOD_NS),
    )
}

/// `0..=EVNOTIFY_MAX_BUSYPOLL_NS`.
pub fn busypoll(s: &str) -> Result<Duration, String> {
    duration_in(
        s,
        Duration::ZERO,
        Duration::from_nanos(sys::MAX_BUSYPOLL_NS.into()),
    )
}

/// The longest `watch --kick-every` and `--duration`: bounded, so that deadlines cannot
/// overflow `Instant`.
const MAX_WATCH: Duration = Duration::from_secs(86_400);

/// The shortest `watch --kick-every`: the shortest timer period. Shorter, the command would
/// spin a CPU writing the kick eventfd (at 1ns, 100% of one), and what it prints could not be
/// read anyway.
const MIN_KICK_INTERVAL: Duration = Duration::from_nanos(sys::MIN_PERIOD_NS);

/// [`MIN_KICK_INTERVAL`]..=[`MAX_WATCH`].
fn kick_interval(s: &str) -> Result<Duration, String> {
    duration_in(s, MIN_KICK_INTERVAL, MAX_WATCH)
}

/// At most [`MAX_WATCH`].
fn watch_duration(s: &str) -> Result<Duration, String> {
    duration_in(s, Duration::ZERO, MAX_WATCH)
}

/// The kernel's first real-time signal; glibc keeps the ones below `SIGRTMIN()` for itself.
const KERNEL_SIGRTMIN: i32 = 32;

/// A signal the `signal` command can catch: the module takes 1..=_NSIG (SIGKILL and SIGSTOP
/// included, for other users of the ioctl), but this process counts what arrives through a
/// signalfd, which cannot take SIGKILL or SIGSTOP, nor the signals the C library keeps.
pub fn signo(s: &str) -> Result<i32, String> {
    let (rtmin, rtmax) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    let reserved = KERNEL_SIGRTMIN..rtmin;
    let accepted = format!(
        "accepted: 1..={rtmax} or a name, except SIGKILL (9), SIGSTOP (19) and {}..={}",
        reserved.start,
        reserved.end - 1
    );
    let n = match s.parse::<i32>() {
        Ok(n) => n,
        Err(_) => {
            let upper = s.to_ascii_uppercase();
            let name = upper.strip_prefix("SIG").unwrap_or(&upper);
            // RTMIN, RTMIN+k, RTMAX, RTMAX-k, as kill(1) takes them: k is digits only (no
            // sign of its own), and a k too large is out of range, not an overflow.
            let offset = |rest: &str, sign: char| match rest {
                "" => Some(0),
                r => {
                    let k = r.strip_prefix(sign)?;
                    if k.is_empty() || !k.bytes().all(|b| b.is_ascii_digit()) {
                        return None;
                    }
                    Some(k.parse::<i32>().unwrap_or(i32::MAX))
                }
            };
            let n = if let Some(rest) = name.strip_prefix("RTMIN") {
                offset(rest, '+').map(|k| rtmin.checked_add(k).unwrap_or(i32::MAX))
            } else if let Some(rest) = name.strip_prefix("RTMAX") {
                offset(rest, '-').map(|k| rtmax.checked_sub(k).unwrap_or(i32::MIN))
            } else {
                format!("SIG{name}")
                    .parse::<nix::sys::signal::Signal>()
                    .ok()
                    .map(|sig| sig as i32)
            };
            n.ok_or_else(|| format!("unknown signal {s:?}; {accepted}"))?
        }
    };
    if n == libc::SIGKILL || n == libc::SIGSTOP {
        return Err(format!(
            "{s} cannot be caught, so this command could not count it; {accepted}"
        ));
    }
    if !(1..=rtmax).contains(&n) || reserved.contains(&n) {
        return Err(format!(
            "{s} is not a signal this command can catch; {accepted}"
        ));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{error::ErrorKind, CommandFactory};

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("evnotify").chain(args.iter().copied()))
    }

    /// `args` is rejected as an invalid value, with `range` in the message.
    fn rejected(args: &[&str], range: &str) {
        let e = parse(args).expect_err(&format!("{args:?} accepted"));
        assert_eq!(e.kind(), ErrorKind::ValueValidation, "{args:?}: {e}");
        let msg = e.to_string();
        assert!(msg.contains(range), "{args:?}: {msg:?} lacks {range:?}");
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn version_names_the_api_version_the_command_speaks() {
        assert!(
            VERSION.ends_with(&format!(" (API version {})", sys::API_VERSION)),
            "{VERSION}"
        );
        let v = Cli::command().render_version();
        assert_eq!(v.trim(), format!("evnotify {}", VERSION));
    }

    #[test]
    fn period_range_is_the_headers() {
        for bad in ["999us", "999999ns", "1day 1ns", "2days", "0s"] {
            rejected(&["timer", "--period", bad], "1ms..=1day");
            rejected(&["watch", "--timer", bad], "1ms..=1day");
        }
        rejected(&["timer", "--period", "soon"], "1ms..=1day");
        for (good, ns) in [("1ms", sys::MIN_PERIOD_NS), ("24h", sys::MAX_PERIOD_NS)] {
            match parse(&["timer", "--period", good]).unwrap().cmd {
                Cmd::Timer { period, .. } => assert_eq!(period.as_nanos(), u128::from(ns)),
                c => panic!("{c:?}"),
            }
        }
    }

    #[test]
    fn busypoll_range_is_the_headers() {
        rejected(&["--busypoll", "1001us", "info"], "0s..=1ms");
        rejected(&["--busypoll", "1ms 1ns", "info"], "0s..=1ms");
        for good in ["0", "1ms", "50us"] {
            assert!(parse(&["--busypoll", good, "info"]).is_ok(), "{good}");
        }
    }

    #[test]
    fn counts_and_slots_are_in_range() {
        let max = sys::MAX_KICK.to_string();
        let over = (sys::MAX_KICK + 1).to_string();
        rejected(&["ping", "--burst", "0"], &format!("1..={max}"));
        rejected(&["ping", "--burst", &over], &format!("1..={max}"));
        rejected(&["signal", "-n", "0"], &format!("1..={max}"));
        rejected(&["signal", "-n", &over], &format!("1..={max}"));
        rejected(&["ping", "-n", "0"], "1..=4294967295");
        for cmd in ["ping", "timer", "signal"] {
            rejected(&[cmd, "--slot", "64"], "0..64");
        }
        assert!(parse(&["ping", "--burst", &max, "--slot", "63"]).is_ok());
        assert!(parse(&["signal", "-n", &max, "--slot", "0"]).is_ok());
    }

    #[test]
    fn signals_by_number_and_name() {
        let max = libc::SIGRTMAX();
        for (s, n) in [
            ("10", libc::SIGUSR1),
            ("usr1", libc::SIGUSR1),
            ("SIGIO", libc::SIGIO),
            ("RTMIN", libc::SIGRTMIN()),
            ("SIGRTMIN+3", libc::SIGRTMIN() + 3),
            ("rtmax-1", max - 1),
            ("1", 1),
            (&max.to_string(), max),
        ] {
            assert_eq!(signo(s), Ok(n), "{s}");
        }
        let accepted = format!("1..={max}");
        for bad in [
            "0",
            "-1",
            &(max + 1).to_string(),
            "9",
            "KILL",
            "SIGSTOP",
            "19",
        ] {
            rejected(&["signal", "--signo", bad], &accepted);
        }
        for reserved in KERNEL_SIGRTMIN..libc::SIGRTMIN() {
            rejected(&["signal", "--signo", &reserved.to_string()], &accepted);
        }
        for bad in [
            "NOPE", "RTMIN-1", "RTMAX+1", "RTMIN+x", "RTMINé", "RTMIN+-3", "RTMIN++3", "RTMAX--1",
            "RTMIN+", "RTMIN+ 3",
        ] {
            rejected(&["signal", "--signo", bad], "unknown signal");
        }
        // Offsets that would overflow an i32 are out of range, not a panic.
        for big in [
            "RTMIN+2147483647",
            "RTMIN+99999999999999999999",
            "RTMAX-2147483647",
            "RTMAX-99999999999999999999",
            "RTMIN+31",
        ] {
            rejected(
                &["signal", "--signo", big],
                "not a signal this command can catch",
            );
        }
    }

    #[test]
    fn watch_intervals_are_bounded() {
        // Below a millisecond the command would spin (at 1ns, a whole CPU).
        for bad in [
            "0s",
            "1ns",
            "999us",
            "999999ns",
            "1day 1ns",
            "18446744073709551615s",
        ] {
            rejected(&["watch", "--kick-every", bad], "1ms..=1day");
        }
        rejected(&["watch", "--kick-every", "often"], "1ms..=1day");
        for bad in ["1day 1ns", "18446744073709551615s", "forever"] {
            rejected(&["watch", "--duration", bad], "0s..=1day");
        }
        for good in ["1ms", "1day"] {
            assert!(parse(&["watch", "--kick-every", good, "-d", good]).is_ok());
        }
        assert!(parse(&["watch", "-d", "0s"]).is_ok());
    }

    #[test]
    fn busypoll_is_global() {
        for args in [
            &["--busypoll", "50us", "info"][..],
            &["info", "--busypoll", "50us"],
        ] {
            let cli = parse(args).unwrap();
            assert_eq!(cli.busypoll, Some(Duration::from_micros(50)), "{args:?}");
        }
    }

    /// -j/--json and --pretty go before or after any command.
    #[test]
    fn json_is_global() {
        for cmd in ["info", "stat", "ping", "timer", "signal", "watch"] {
            for args in [
                &["-j", cmd][..],
                &[cmd, "--json"],
                &["--pretty", cmd],
                &[cmd, "-j"],
            ] {
                let cli = parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
                assert!(cli.json || cli.pretty, "{args:?}");
            }
        }
        assert!(!parse(&["info"]).unwrap().json);
    }

    #[test]
    fn help_says_each_default_once() {
        let mut cmd = Cli::command();
        let help = cmd
            .find_subcommand_mut("signal")
            .unwrap()
            .render_long_help()
            .to_string();
        assert_eq!(help.matches("SIGIO").count(), 2, "{help}"); // the name list, the default
        assert!(!help.contains("Default: SIGIO"), "{help}");
    }
}
