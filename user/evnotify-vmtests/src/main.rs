//! Tests that need the module: run inside the test VM, one after another, printing KTAP.
//!
//! Usage: `evnotify-vmtests [FILTER]`. Runs every test whose name contains FILTER. Exits 1 if
//! any test failed. On a host without `/dev/evnotify` every test is reported as skipped, and
//! says why; inside the VM (`EVNOTIFY_IN_VM=1`, set by its init) nothing may skip, so a missing
//! device fails every test.

mod async_notify;
mod busypoll;
mod cgroups;
mod cli;
mod contract;
mod errors;
mod faults;
mod hostile;
mod hostile_eventfds;
mod hostile_fds;
mod hostile_limits;
mod kcov;
mod kickfd;
mod lifecycle;
mod notify;
mod promises;
mod ring;
mod signals;
mod stress;
mod timers;
mod twice;
mod workers;
mod workers_lifetime;
mod workers_limits;
mod workers_load;
mod workers_share;

use anyhow::{bail, ensure, Context, Result};
use evnotify::{Channel, Notifier, Stats};
use nix::errno::Errno;
use std::{fmt::Debug, panic, time::Duration};

/// A test case: its KTAP name and body.
type Test = (&'static str, fn() -> Result<()>);

/// How long any single wait may block before the test counts as hung: a guard, not a timing
/// assertion (the VM is emulated and may be slow). `EVNOTIFY_HANG_SECS` scales it (30 s).
pub fn hang() -> Duration {
    static H: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *H.get_or_init(|| {
        let secs = std::env::var("EVNOTIFY_HANG_SECS")
            .ok()
            .and_then(|s| s.parse().ok());
        Duration::from_secs(secs.unwrap_or(30))
    })
}

/// The errno of an error from the library (`io::Error`), as nix's `Errno` (`UnknownErrno`
/// for an error that carries none).
pub fn errno(e: impl Into<std::io::Error>) -> Errno {
    Errno::from_raw(e.into().raw_os_error().unwrap_or(0))
}

/// Asserts that `r` (from the library or from nix) failed with exactly `want`.
pub fn expect_errno<T: Debug, E: Into<std::io::Error>>(
    r: std::result::Result<T, E>,
    want: Errno,
    what: &str,
) -> Result<()> {
    match r.map_err(errno) {
        Err(e) if e == want => Ok(()),
        Err(e) => bail!("{what}: got {e} ({}), want {want}", e as i32),
        Ok(v) => bail!("{what}: succeeded with {v:?}, want {want}"),
    }
}

/// Joins a test's helper thread, turning its panic into an error naming it.
pub fn join<T, E>(h: std::thread::ScopedJoinHandle<'_, Result<T, E>>, who: &str) -> Result<T>
where
    E: Into<anyhow::Error>,
{
    h.join()
        .map_err(|_| anyhow::anyhow!("{who} panicked"))?
        .map_err(Into::into)
}

/// Reads `n` until exactly `want` notifications have arrived, failing on a hang.
pub fn collect(n: &Notifier, want: u64) -> Result<u64> {
    let mut got = 0;
    while got < want {
        let v = n.wait_timeout(hang())?;
        ensure!(v > 0, "hung with {got} of {want} notifications");
        got += v;
    }
    ensure!(got == want, "received {got}, want {want}");
    Ok(got)
}

/// Starts the channel's thread (the first kick does) with a kick on slot 63, which has no
/// target and is dropped; returns the thread's pid.
pub fn start_thread(ch: &Channel) -> Result<i32> {
    ch.kick(63, 1)?;
    let s = idle(ch).context("thread never answered")?;
    ensure!(s.thread_pid > 0, "no thread after a kick: {s:?}");
    Ok(s.thread_pid)
}

/// Waits for the channel to go quiet (nothing pending); on a hang, the error shows its stats.
pub fn idle(ch: &Channel) -> Result<Stats> {
    ch.wait_idle(hang())
        .map_err(|e| anyhow::anyhow!("channel never went idle ({e}): {:?}", ch.stats()))
}

/// Waits for the channel to go quiet, then checks nothing more than `want` reached `n`.
pub fn settle(ch: &Channel, n: &Notifier) -> Result<Stats> {
    let s = idle(ch)?;
    let extra = n.drain()?;
    ensure!(extra == 0, "{extra} notifications beyond the kicks");
    Ok(s)
}

/// Runs one test, printing its diagnostics as KTAP comments; the error says how it failed.
fn run_test(name: &str, f: fn() -> Result<()>) -> bool {
    let res = panic::catch_unwind(f).unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        Err(anyhow::anyhow!("panicked: {msg}"))
    });
    if let Err(e) = &res {
        for line in format!("{e:#}").lines() {
            println!("# {name}: {line}");
        }
    }
    res.is_ok()
}

/// Runs a test in a child process of its own group, so that a test that hangs past
/// [`test_limit`] is killed (with everything it forked) and the suite goes on.
fn isolated(name: &str, f: fn() -> Result<()>) -> Result<(), String> {
    use nix::{
        sys::{
            signal::{killpg, Signal},
            wait::{waitpid, WaitPidFlag, WaitStatus},
        },
        unistd::{fork, setpgid, ForkResult, Pid},
    };
    use std::io::Write;
    let _ = std::io::stdout().flush();
    // SAFETY: The runner is single-threaded here; the child runs one test and `_exit`s.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            let _ = setpgid(Pid::from_raw(0), Pid::from_raw(0));
            let ok = match kcov::start(name).transpose() {
                Ok(rec) => {
                    let ok = run_test(name, f);
                    match rec.map(kcov::Recording::finish).transpose() {
                        Ok(_) => ok,
                        Err(e) => {
                            println!("# {name}: kcov: {e:#}");
                            false
                        }
                    }
                }
                Err(e) => {
                    println!("# {name}: kcov: {e:#}");
                    false
                }
            };
            let _ = std::io::stdout().flush();
            // SAFETY: Leaves the child at once, as a forked child should.
            unsafe { libc::_exit(i32::from(!ok)) }
        }
        ForkResult::Parent { child } => {
            let _ = setpgid(child, child);
            let limit = test_limit();
            let t = std::time::Instant::now();
            let res = loop {
                match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(_, 0)) => break Ok(()),
                    Ok(WaitStatus::Exited(_, _)) => break Err("failed".into()),
                    Ok(WaitStatus::Signaled(_, sig, _)) => break Err(format!("killed by {sig}")),
                    Ok(_) if t.elapsed() < limit => std::thread::sleep(Duration::from_millis(5)),
                    Ok(_) => break Err(format!("hung: still running after {limit:?}")),
                    Err(e) => break Err(format!("waitpid: {e}")),
                }
            };
            // Whatever the test forked goes with it, so that no leftover holds a channel.
            let _ = killpg(child, Signal::SIGKILL);
            if let Err(why) = res {
                // A test stuck in the kernel cannot die: give it a moment, not for ever.
                let t = std::time::Instant::now();
                while matches!(
                    waitpid(child, Some(WaitPidFlag::WNOHANG)),
                    Ok(WaitStatus::StillAlive)
                ) {
                    if t.elapsed() > Duration::from_secs(10) {
                        return Err(format!("{why}; and it does not die"));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                return Err(why);
            }
            Ok(())
        }
    }
}

/// How long one test may run in all: `EVNOTIFY_TEST_SECS`, else four of [`hang`]'s waits.
fn test_limit() -> Duration {
    std::env::var("EVNOTIFY_TEST_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(hang() * 4, Duration::from_secs)
}

fn main() {
    let tests: Vec<Test> = [
        lifecycle::TESTS,
        promises::TESTS,
        notify::TESTS,
        async_notify::TESTS,
        kickfd::TESTS,
        twice::TESTS,
        timers::TESTS,
        signals::TESTS,
        faults::TESTS,
        stress::TESTS,
        busypoll::TESTS,
        workers::TESTS,
        workers_share::TESTS,
        workers_lifetime::TESTS,
        workers_load::TESTS,
        workers_limits::TESTS,
        cgroups::TESTS,
        errors::TESTS,
        hostile::TESTS,
        hostile_eventfds::TESTS,
        hostile_limits::TESTS,
        hostile_fds::TESTS,
        contract::TESTS,
        ring::TESTS,
        cli::TESTS,
    ]
    .concat();
    let filter = std::env::args().nth(1).unwrap_or_default();
    if filter == "--suid-helper" {
        std::process::exit(hostile::suid_helper());
    }
    // A set-uid copy (see `hostile.rs`) must run nothing else with its privilege.
    if nix::unistd::getuid() != nix::unistd::geteuid() {
        eprintln!("evnotify-vmtests: refusing to run tests set-uid");
        std::process::exit(2);
    }
    let tests: Vec<_> = tests
        .into_iter()
        .filter(|t| t.0.contains(&filter))
        .collect();
    // Keep panic messages inside the KTAP diagnostics.
    panic::set_hook(Box::new(|_| {}));
    println!("KTAP version 1");
    println!("1..{}", tests.len());
    if !std::path::Path::new(evnotify::DEVICE).exists()
        && std::env::var_os("EVNOTIFY_IN_VM").is_none()
    {
        for (i, (name, _)) in tests.iter().enumerate() {
            println!(
                "ok {} {name} # SKIP no {} on this host: run scripts/vm.sh -- evnotify-vmtests",
                i + 1,
                evnotify::DEVICE
            );
        }
        return;
    }
    let mut failed = 0;
    for (i, (name, f)) in tests.iter().enumerate() {
        match isolated(name, *f) {
            Ok(()) => println!("ok {} {name}", i + 1),
            Err(why) => {
                failed += 1;
                println!("# {name}: {why}");
                println!("not ok {} {name}", i + 1);
            }
        }
    }
    std::process::exit(i32::from(failed > 0));
}
