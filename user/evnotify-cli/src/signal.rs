//! `evnotify signal`: the signals a slot sends for its kicks, received through a signalfd.

use crate::dev::Dev;
use crate::error::Failure;
use crate::info::counters_text;
use crate::json::{signal_record, Output};
use anyhow::Result;
use evnotify::Stats;
use serde_json::json;
use std::time::{Duration, Instant};

pub fn signal(dev: &Dev, signo: i32, count: u32, slot: u32, out: Output) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error;

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
