//! Tests that need the module: run inside the test VM, one after another, printing KTAP.
//!
//! Usage: `evnotify-vmtests [FILTER]`. Runs every test whose name contains FILTER. Exits 1 if
//! any test failed. On a host without `/dev/evnotify` every test is reported as skipped, and
//! says why; inside the VM (`EVNOTIFY_IN_VM=1`, set by its init) nothing may skip, so a missing
//! device fails every test.

mod busypoll;
mod errors;
mod faults;
mod hostile;
mod kickfd;
mod lifecycle;
mod notify;
mod signals;
mod stress;
mod timers;

use anyhow::{bail, ensure, Context, Result};
use evnotify::{Channel, Notifier, Stats};
use nix::errno::Errno;
use std::{fmt::Debug, panic, time::Duration};

/// A test case: its KTAP name and body.
type Test = (&'static str, fn() -> Result<()>);

/// How long any single wait may block before the test counts as hung (a guard, not a timing
/// assertion: the VM is emulated and may be slow).
pub const HANG: Duration = Duration::from_secs(30);

/// Asserts that `r` failed with exactly `want`.
pub fn expect_errno<T: Debug>(r: nix::Result<T>, want: Errno, what: &str) -> Result<()> {
    match r {
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
        let v = n.wait_timeout(HANG)?;
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
    let s = ch.wait_idle(HANG).context("thread never answered")?;
    ensure!(s.thread_pid > 0, "no thread after a kick: {s:?}");
    Ok(s.thread_pid)
}

/// Waits for the channel to go quiet, then checks nothing more than `want` reached `n`.
pub fn settle(ch: &Channel, n: &Notifier) -> Result<Stats> {
    let s = ch.wait_idle(HANG).context("channel never went idle")?;
    let extra = n.drain()?;
    ensure!(extra == 0, "{extra} notifications beyond the kicks");
    Ok(s)
}

fn main() {
    let tests: Vec<Test> = [
        lifecycle::TESTS,
        notify::TESTS,
        kickfd::TESTS,
        timers::TESTS,
        signals::TESTS,
        faults::TESTS,
        stress::TESTS,
        busypoll::TESTS,
        errors::TESTS,
        hostile::TESTS,
    ]
    .concat();
    let filter = std::env::args().nth(1).unwrap_or_default();
    if filter == "--suid-helper" {
        std::process::exit(hostile::suid_helper());
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
        let res = panic::catch_unwind(f).unwrap_or_else(|p| {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(anyhow::anyhow!("panicked: {msg}"))
        });
        match res {
            Ok(()) => println!("ok {} {name}", i + 1),
            Err(e) => {
                failed += 1;
                for line in format!("{e:#}").lines() {
                    println!("# {name}: {line}");
                }
                println!("not ok {} {name}", i + 1);
            }
        }
    }
    std::process::exit(i32::from(failed > 0));
}
