//! The `evnotify` command against the real device: `stat` sees a channel this process holds,
//! as root and (less) as another user, and which channels share a worker; `--json` of `info`,
//! `stat` and `ping` parses and holds the right numbers; the error hints that need the module
//! loaded.

use crate::{collect, hang, idle, start_thread, Test};
use anyhow::{bail, ensure, Context, Result};
use evnotify::{sys, Channel, Notifier};
use serde_json::Value;
use std::{
    fs::File,
    os::{
        fd::{AsFd, AsRawFd},
        unix::process::CommandExt,
    },
    process::Command,
    time::{Duration, Instant},
};

pub const TESTS: &[Test] = &[
    (
        "cli_stat_sees_a_channel_of_another_process",
        cli_stat_sees_channel,
    ),
    ("cli_stat_as_a_user_shows_what_it_can", cli_stat_as_user),
    ("cli_stat_shows_who_shares_a_worker", cli_stat_workers),
    ("cli_info_and_ping_json", cli_info_and_ping_json),
    ("cli_error_hints_with_the_module_loaded", cli_error_hints),
    ("cli_signal_counts_exactly", cli_signal_counts),
    (
        "cli_signal_fails_when_signals_are_refused",
        cli_signal_refused,
    ),
];

use crate::hostile::USER;

/// How `evnotify` ran: its exit code, stdout and stderr.
struct Run {
    code: i32,
    out: String,
    err: String,
}

impl Run {
    fn json(&self) -> Result<Value> {
        ensure!(self.code == 0, "exit {}: {}", self.code, self.err);
        serde_json::from_str(&self.out).with_context(|| format!("not JSON: {}", self.out))
    }
}

/// A resource limit: `RLIMIT_*` and its value.
type Limit = (libc::__rlimit_resource_t, u64);

/// At most `n` open descriptors.
fn nofile(n: u64) -> Option<Limit> {
    Some((libc::RLIMIT_NOFILE, n))
}

/// Runs `evnotify ARGS` (from PATH), as `uid` if given and under `limit`, and gives up after
/// [`hang`]. Output goes through files, so a full pipe cannot stall it.
fn evnotify(args: &[&str], uid: Option<u32>, limit: Option<Limit>) -> Result<Run> {
    let dir = std::env::temp_dir();
    let tag = format!("evnotify-cli.{}", std::process::id());
    let (out_path, err_path) = (
        dir.join(format!("{tag}.out")),
        dir.join(format!("{tag}.err")),
    );
    let mut cmd = Command::new("evnotify");
    cmd.args(args)
        .stdout(File::create(&out_path)?)
        .stderr(File::create(&err_path)?);
    if let Some(uid) = uid {
        cmd.uid(uid).gid(uid);
    }
    if let Some((resource, n)) = limit {
        // SAFETY: setrlimit is async-signal-safe, as pre_exec requires.
        unsafe {
            cmd.pre_exec(move || {
                let lim = libc::rlimit {
                    rlim_cur: n,
                    rlim_max: n,
                };
                if libc::setrlimit(resource, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().context("spawn evnotify")?;
    let t = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if t.elapsed() > hang() {
            let _ = child.kill();
            let _ = child.wait();
            bail!("evnotify {args:?} still running after {:?}", hang());
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let out = std::fs::read_to_string(&out_path)?;
    let err = std::fs::read_to_string(&err_path)?;
    let _ = std::fs::remove_file(&out_path);
    let _ = std::fs::remove_file(&err_path);
    let Some(code) = status.code() else {
        bail!("evnotify {args:?} died: {status}; stderr: {err}");
    };
    Ok(Run { code, out, err })
}

/// This process's channel in a `stat --json` listing, if it is there.
fn find(v: &Value, fd: i32) -> Option<&Value> {
    v["channels"]
        .as_array()?
        .iter()
        .find(|c| c["pid"] == std::process::id() && c["fd"] == fd)
}

fn cli_stat_sees_channel() -> Result<()> {
    let ch = Channel::open()?;
    let (n, kick) = (Notifier::new()?, Notifier::new()?);
    ch.attach(5, &n)?;
    ch.attach_kickfd(6, &kick)?;
    ch.kick(5, 3)?;
    collect(&n, 3)?;
    ch.kick(6, 2)?; // no eventfd on slot 6: dropped
    let s = idle(&ch)?;
    let fd = ch.as_fd().as_raw_fd();
    let v = evnotify(&["stat", "--json"], None, None)?.json()?;
    let c = find(&v, fd).with_context(|| format!("fd {fd} of this process not listed: {v}"))?;
    let comm = std::fs::read_to_string("/proc/self/comm")?;
    ensure!(c["comm"] == comm.trim_end(), "comm: {c}");
    ensure!(c["uid"] == 0, "uid: {c}");
    let st = &c["stats"];
    for (key, want) in [
        ("kicks", 5),
        ("handled", 5),
        ("notifies", 3),
        ("dropped", 2),
        ("pending", 0),
        ("attached", 1),
        ("kickfds", 1),
        ("thread_pid", i64::from(s.thread_pid)),
    ] {
        ensure!(st[key] == want, "{key}: want {want}: {c}");
    }
    let slots: Vec<_> = c["slots"]
        .as_array()
        .context("slots")?
        .iter()
        .map(|s| (s["slot"].clone(), s["notify"].clone(), s["kickfd"].clone()))
        .collect();
    ensure!(
        slots
            == [
                (5.into(), "attached".into(), "none".into()),
                (6.into(), "none".into(), "attached".into())
            ],
        "slots: {c}"
    );
    // Only channels are listed: the stat process itself holds none.
    for other in v["channels"].as_array().into_iter().flatten() {
        ensure!(other["comm"] != "evnotify", "stat listed itself: {v}");
    }
    // The table has a row for it: pid, uid, fd, thread, ..., and comm last.
    let run = evnotify(&["stat"], None, None)?;
    ensure!(run.code == 0, "stat: {}", run.err);
    let want = [
        std::process::id().to_string(),
        "0".into(),
        fd.to_string(),
        s.thread_pid.to_string(),
    ];
    ensure!(
        run.out.lines().any(|l| l
            .split_whitespace()
            .take(4)
            .eq(want.iter().map(String::as_str))
            && l.ends_with(&format!(" {}", comm.trim_end()))),
        "no row {want:?} ... {comm:?} in:\n{}",
        run.out
    );
    Ok(())
}

/// Two channels on one worker, one on its own and one with none yet: `stat` shows each one's
/// worker in its JSON and in the table's WORKER and SERVES columns.
fn cli_stat_workers() -> Result<()> {
    let (a, b, c, d) = (
        Channel::open()?,
        Channel::open()?,
        Channel::open()?,
        Channel::open()?,
    );
    b.share_worker(&a)?;
    start_thread(&c)?;
    let (wa, wc) = (a.worker()?, c.worker()?);
    ensure!(
        wa.id != 0 && wa.channels == 2 && wc.id != 0 && wc.id != wa.id && wc.channels == 1,
        "{wa:?} {wc:?}"
    );
    let v = evnotify(&["stat", "--json"], None, None)?.json()?;
    let table = evnotify(&["stat"], None, None)?;
    ensure!(table.code == 0, "stat: {}", table.err);
    let pid = std::process::id().to_string();
    for (name, ch, want) in [
        ("a", &a, wa),
        ("b", &b, wa),
        ("c", &c, wc),
        ("d", &d, d.worker()?),
    ] {
        let fd = ch.as_fd().as_raw_fd();
        let e = find(&v, fd).with_context(|| format!("{name}: fd {fd} not listed: {v}"))?;
        let w = &e["worker"];
        ensure!(
            w["worker_id"] == want.id
                && w["thread_pid"] == want.thread_pid
                && w["channels"] == want.channels,
            "{name}: want {want:?}: {e}"
        );
        // PID UID FD THREAD WORKER SERVES ...: a channel without a worker shows `-`.
        let cells = if want.id == 0 {
            ["-".to_owned(), "-".to_owned()]
        } else {
            [want.id.to_string(), want.channels.to_string()]
        };
        let row = table
            .out
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|r| {
                r.first() == Some(&pid.as_str()) && r.get(2) == Some(&fd.to_string().as_str())
            })
            .with_context(|| format!("{name}: no row for fd {fd}:\n{}", table.out))?;
        ensure!(
            row.get(4..6) == Some(&[cells[0].as_str(), cells[1].as_str()][..]),
            "{name}: want WORKER {} SERVES {}: {row:?}",
            cells[0],
            cells[1]
        );
    }
    ensure!(d.worker()?.id == 0, "d has a worker");
    Ok(())
}

fn cli_stat_as_user() -> Result<()> {
    let ch = Channel::open()?;
    let fd = ch.as_fd().as_raw_fd();
    // Root holds the channel; another user can neither list root's descriptors nor fail.
    let v = evnotify(&["stat", "--json"], Some(USER), None)?.json()?;
    ensure!(find(&v, fd).is_none(), "uid {USER} saw root's channel: {v}");
    ensure!(
        v["unreadable"].as_u64() > Some(0),
        "nothing counted unreadable: {v}"
    );
    ensure!(
        v["processes"].as_u64() > Some(0),
        "not even its own process: {v}"
    );
    let run = evnotify(&["stat"], Some(USER), None)?;
    ensure!(
        run.code == 0 && run.out.contains("not readable (other users' processes"),
        "exit {}: {}{}",
        run.code,
        run.out,
        run.err
    );
    // As root, the same channel is there: the test tells the two apart.
    let v = evnotify(&["stat", "--json"], None, None)?.json()?;
    ensure!(find(&v, fd).is_some(), "root did not see it either: {v}");
    ensure!(v["unreadable"] == 0, "root could not read everything: {v}");
    Ok(())
}

/// The JSON Lines of a run: every line one object of the schema version, the last of type
/// `end`.
fn json_lines(run: &Run) -> Result<Vec<Value>> {
    ensure!(run.code == 0, "exit {}: {}", run.code, run.err);
    let lines = run
        .out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).with_context(|| format!("not JSON: {l:?}")))
        .collect::<Result<Vec<_>>>()?;
    ensure!(
        lines.iter().all(|v| v["schema_version"] == 1),
        "{}",
        run.out
    );
    ensure!(
        lines.last().is_some_and(|v| v["type"] == "end"),
        "no end: {}",
        run.out
    );
    Ok(lines)
}

fn cli_info_and_ping_json() -> Result<()> {
    let v = evnotify(&["info", "--json"], None, None)?.json()?;
    ensure!(v["schema_version"] == 1, "{v}");
    // The descriptor is this run's own business, not the channel's.
    ensure!(v.get("fd").is_none(), "{v}");
    ensure!(v["api_version"] == sys::API_VERSION, "{v}");
    ensure!(v["cli_api_version"] == sys::API_VERSION, "{v}");
    ensure!(v["nr_slots"] == sys::NR_SLOTS, "{v}");
    let features = v["features"].as_u64().context("features")?;
    ensure!(features & sys::F_BUSYPOLL != 0, "{v}");
    let names = 9 + usize::from(crate::lifecycle::cgroups_feature() != 0);
    ensure!(
        v["feature_names"].as_array().map(Vec::len) == Some(names),
        "{v}"
    );
    ensure!(v["limits"]["max_kick"] == sys::MAX_KICK, "{v}");
    ensure!(
        v["stats"]["kicks"] == 0 && v["stats"]["thread_pid"] == 0,
        "{v}"
    );
    ensure!(v["slots"].as_array().is_some_and(Vec::is_empty), "{v}");
    let v = evnotify(
        &["ping", "-n", "3", "--burst", "2", "--slot", "9", "--json"],
        None,
        None,
    )?
    .json()?;
    ensure!(
        v["round_trips"] == 3 && v["burst"] == 2 && v["slot"] == 9,
        "{v}"
    );
    ensure!(v["kick"] == "ioctl", "{v}");
    let st = &v["stats"];
    ensure!(
        st["kicks"] == 6 && st["notifies"] == 6 && st["fd_kicks"] == 0,
        "{v}"
    );
    let rtt = |q: &str| v["rtt_ns"][q].as_u64().unwrap_or(0);
    ensure!(
        0 < rtt("min") && rtt("min") <= rtt("p50") && rtt("p50") <= rtt("max"),
        "{v}"
    );
    let v = evnotify(&["ping", "-n", "4", "--kickfd", "--json"], None, None)?.json()?;
    ensure!(v["kick"] == "kickfd" && v["stats"]["fd_kicks"] == 4, "{v}");
    ensure!(v["stats"]["notifies"] == 4, "{v}");
    // timer, signal and watch: JSON Lines, each event as it comes, then the end.
    let run = evnotify(
        &["-j", "timer", "-p", "5ms", "-n", "4", "-s", "2"],
        None,
        None,
    )?;
    let lines = json_lines(&run)?;
    let (end, ticks) = lines.split_last().context("no lines")?;
    let total: u64 = ticks.iter().map(|v| v["ticks"].as_u64().unwrap_or(0)).sum();
    ensure!(
        total == 4 && ticks.iter().all(|v| v["type"] == "ticks" && v["slot"] == 2),
        "{}",
        run.out
    );
    ensure!(
        end["ticks"] == 4 && end["stats"]["timer_ticks"] == 4 && end["period_ns"] == 5_000_000,
        "{}",
        run.out
    );
    let run = evnotify(
        &["signal", "--json", "--signo", "RTMIN+1", "-n", "3"],
        None,
        None,
    )?;
    let lines = json_lines(&run)?;
    let (end, signals) = lines.split_last().context("no lines")?;
    ensure!(
        signals.len() == 3 && signals.iter().all(|v| v["type"] == "signal"),
        "{}",
        run.out
    );
    ensure!(
        end["signals_received"] == 3 && end["stats"]["signals"] == 3,
        "{}",
        run.out
    );
    let run = evnotify(
        &["watch", "-j", "--kick-every", "20ms", "-d", "200ms"],
        None,
        None,
    )?;
    let lines = json_lines(&run)?;
    let (end, events) = lines.split_last().context("no lines")?;
    let kicks: u64 = events
        .iter()
        .map(|v| v["count"].as_u64().unwrap_or(0))
        .sum();
    ensure!(
        kicks > 0
            && events
                .iter()
                .all(|v| v["type"] == "notify" && v["source"] == "kick"),
        "{}",
        run.out
    );
    ensure!(
        end["stats"]["fd_kicks"].as_u64() >= Some(kicks),
        "{}",
        run.out
    );
    Ok(())
}

fn cli_error_hints() -> Result<()> {
    let check = |run: Run, first: &str, hint: &str| -> Result<()> {
        ensure!(run.code == 1, "exit {}: {}", run.code, run.err);
        ensure!(
            run.err.starts_with(first) && run.err.contains(hint),
            "want {first:?} and {hint:?}: {}",
            run.err
        );
        Ok(())
    };
    check(
        evnotify(&["--device", "/dev/nonexistent", "info"], None, None)?,
        "evnotify: /dev/nonexistent: open: No such file or directory\n",
        "hint: the module rust_evnotify is loaded, but there is no /dev/nonexistent",
    )?;
    check(
        evnotify(&["ping"], Some(USER), None)?,
        "evnotify: /dev/evnotify: open: Permission denied\n",
        "MODE=\"0660\"",
    )?;
    // Descriptors 0, 1 and 2 are all a process may have: the channel would be the fourth.
    check(
        evnotify(&["info"], None, nofile(3))?,
        "evnotify: /dev/evnotify: open: Too many open files\n",
        "max_user_channels",
    )?;
    Ok(())
}

/// The `signal N from the kernel` lines of a run, as signal numbers.
fn signals_printed(out: &str) -> Vec<i32> {
    out.lines()
        .filter_map(|l| l.strip_prefix("signal ")?.split(' ').next()?.parse().ok())
        .collect()
}

fn cli_signal_counts() -> Result<()> {
    // A real-time signal is queued once per kick: exactly as many as kicks.
    let rt = libc::SIGRTMIN() + 2;
    let run = evnotify(
        &["signal", "--signo", "RTMIN+2", "-n", "5", "--slot", "3"],
        None,
        None,
    )?;
    ensure!(run.code == 0, "exit {}: {}", run.code, run.err);
    ensure!(signals_printed(&run.out) == [rt; 5], "{}", run.out);
    ensure!(
        run.out.contains("5 kicks -> 5 signal(s) received"),
        "{}",
        run.out
    );
    ensure!(
        run.out.contains(" signals=5 ") && run.out.contains("sig_refused=0"),
        "{}",
        run.out
    );
    // SIGIO, the default, is a standard signal: pending once however many kicks.
    let run = evnotify(&["signal", "-n", "3"], None, None)?;
    ensure!(run.code == 0, "exit {}: {}", run.code, run.err);
    ensure!(signals_printed(&run.out) == [libc::SIGIO], "{}", run.out);
    ensure!(
        run.out.contains("3 kicks -> 1 signal(s) received"),
        "{}",
        run.out
    );
    Ok(())
}

/// With room for 2 queued signals (RLIMIT_SIGPENDING), the other kicks' signals are refused:
/// the command fails and says so.
fn cli_signal_refused() -> Result<()> {
    let run = evnotify(
        &["signal", "--signo", "RTMIN+2", "-n", "5", "--slot", "3"],
        None,
        Some((libc::RLIMIT_SIGPENDING, 2)),
    )?;
    ensure!(run.code == 1, "exit {}: {} {}", run.code, run.out, run.err);
    let got = signals_printed(&run.out).len();
    ensure!(got < 5, "{}", run.out);
    let want = format!(
        "evnotify: /dev/evnotify: slot 3: 5 kick(s) brought {got} of the 5 signal {} expected \
         (the channel sent {got}, and {} were refused: sig_refused)",
        libc::SIGRTMIN() + 2,
        5 - got
    );
    ensure!(run.err.starts_with(&want), "want {want:?}: {}", run.err);
    ensure!(
        run.err.contains("hint: sig_refused counts") && run.err.contains("ulimit -i"),
        "{}",
        run.err
    );
    Ok(())
}
