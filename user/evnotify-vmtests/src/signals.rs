//! Signal delivery, fasync style: exact counts with a queued real-time signal, via signalfd.

use crate::{expect_errno, Test};
use anyhow::{ensure, Context, Result};
use evnotify::{sys, Channel, Notifier, SignalCatcher};
use nix::{
    errno::Errno,
    sys::{signal::Signal, wait::waitpid},
    unistd::{fork, ForkResult},
};
use std::time::Duration;

pub const TESTS: &[Test] = &[
    ("signal_rt_exact_count", signal_rt_exact_count),
    ("signal_default_sigio", signal_default_sigio),
    ("signal_with_eventfd", signal_with_eventfd),
    (
        "signal_stops_after_process_exit",
        signal_stops_after_process_exit,
    ),
    ("signal_errors", signal_errors),
    (
        "signal_siginfo_and_timer_ticks",
        signal_siginfo_and_timer_ticks,
    ),
];

fn catch(signo: i32) -> Result<SignalCatcher> {
    Ok(evnotify::catch_signal(signo)?)
}

/// Reads every queued signal of `sfd` until none arrives for a moment; returns the count.
fn count(sfd: &SignalCatcher, signo: i32) -> Result<u64> {
    let mut n = 0;
    while let Some(info) = sfd.wait_timeout(Duration::from_millis(100))? {
        ensure!(info.signo == signo, "got signal {}", info.signo);
        n += 1;
    }
    Ok(n)
}

fn rt(n: i32) -> i32 {
    libc::SIGRTMIN() + n
}

fn signal_rt_exact_count() -> Result<()> {
    let sig = rt(2);
    let sfd = catch(sig)?;
    let ch = Channel::open()?;
    ch.set_signal(0, sig)?;
    ch.kick(0, 5)?;
    let s = crate::idle(&ch)?;
    let got = count(&sfd, sig)?;
    ensure!(got == 5, "received {got} signals for 5 kicks");
    ensure!(
        s.signals == 5 && s.dropped == 0 && s.notifies == 0 && s.signal_slots == 1,
        "{s:?}"
    );
    // Stopping it: no more signals.
    ch.set_signal(0, -1)?;
    ch.kick(0, 2)?;
    let s = crate::idle(&ch)?;
    ensure!(
        count(&sfd, sig)? == 0 && s.dropped == 2 && s.signal_slots == 0,
        "{s:?}"
    );
    Ok(())
}

/// What the header promises of every signal a slot sends, for a kick and for a timer's ticks:
/// one per kick or tick, kernel-originated (si_code SI_ASYNCIO, si_pid and si_uid 0).
fn signal_siginfo_and_timer_ticks() -> Result<()> {
    let sig = rt(4);
    let sfd = catch(sig)?;
    let ch = Channel::open()?;
    ch.set_signal(2, sig)?;
    let kernel_sent = |what: &str| -> Result<()> {
        let info = sfd
            .wait_timeout(crate::hang())?
            .with_context(|| format!("no signal for {what}"))?;
        ensure!(
            info.signo == sig && info.code == libc::SI_ASYNCIO && info.pid == 0 && info.uid == 0,
            "{what}: {info:?}"
        );
        Ok(())
    };
    ch.kick(2, 1)?;
    kernel_sent("a kick")?;
    crate::idle(&ch)?;
    // Five ticks: five signals, whoever delivers them (the thread or the timer's interrupt).
    ch.set_timer(2, Duration::from_millis(2), 5)?;
    for tick in 1..=5 {
        kernel_sent(&format!("tick {tick}"))?;
    }
    ensure!(count(&sfd, sig)? == 0, "more than 5 signals for 5 ticks");
    let s = crate::idle(&ch)?;
    ensure!(
        s.timer_ticks == 5 && s.signals == 6 && s.dropped == 0 && s.notifies == 0,
        "{s:?}"
    );
    Ok(())
}

fn signal_default_sigio() -> Result<()> {
    let sfd = catch(libc::SIGIO)?;
    let ch = Channel::open()?;
    ch.set_signal(4, 0)?;
    ch.kick(4, 1)?;
    crate::idle(&ch)?;
    let got = count(&sfd, libc::SIGIO)?;
    ensure!(got == 1, "received {got} SIGIO for one kick");
    Ok(())
}

fn signal_with_eventfd() -> Result<()> {
    let sig = rt(3);
    let sfd = catch(sig)?;
    let ch = Channel::open()?;
    let n = Notifier::new()?;
    ch.attach(1, &n)?;
    ch.set_signal(1, sig)?;
    ch.kick(1, 3)?;
    let s = crate::idle(&ch)?;
    ensure!(n.drain()? == 3 && count(&sfd, sig)? == 3, "{s:?}");
    ensure!(s.notifies == 3 && s.signals == 3, "{s:?}");
    Ok(())
}

fn signal_stops_after_process_exit() -> Result<()> {
    let ch = Channel::open()?;
    // SAFETY: The child only makes one ioctl and exits; it touches no lock of the parent.
    match unsafe { fork() }? {
        ForkResult::Child => {
            let rc =
                crate::kcov::recorded(|| ch.set_signal(0, Signal::SIGUSR1 as i32).map_or(1, |_| 0));
            // SAFETY: Exits the child at once, without running the parent's destructors.
            unsafe { libc::_exit(rc) }
        }
        ForkResult::Parent { child } => {
            let st = waitpid(child, None).context("waitpid")?;
            ensure!(
                matches!(st, nix::sys::wait::WaitStatus::Exited(_, 0)),
                "child failed: {st:?}"
            );
        }
    }
    ensure!(
        ch.stats()?.signal_slots == 1,
        "the child's request was not kept"
    );
    ch.kick(0, 3)?;
    let s = crate::idle(&ch)?;
    ensure!(
        s.signals == 0 && s.dropped == 3,
        "signalled a dead process: {s:?}"
    );
    ensure!(
        s.signal_slots == 0,
        "the dead process is still referenced: {s:?}"
    );
    Ok(())
}

fn signal_errors() -> Result<()> {
    let ch = Channel::open()?;
    let raw = |r: sys::Signal| crate::errors::raw(&ch, sys::IOC_SIGNAL, &r as *const _ as usize);
    for signo in [65, -2, i32::MIN, i32::MAX] {
        let r = sys::Signal {
            signo,
            ..Default::default()
        };
        expect_errno(raw(r), Errno::EINVAL, &format!("signal {signo}"))?;
    }
    let ok = sys::Signal {
        signo: libc::SIGUSR2,
        ..Default::default()
    };
    expect_errno(
        raw(sys::Signal {
            slot: sys::NR_SLOTS,
            ..ok
        }),
        Errno::EINVAL,
        "slot 64",
    )?;
    expect_errno(raw(sys::Signal { flags: 1, ..ok }), Errno::EINVAL, "flags")?;
    expect_errno(
        raw(sys::Signal { reserved: 1, ..ok }),
        Errno::EINVAL,
        "reserved",
    )?;
    expect_errno(
        crate::errors::raw(&ch, sys::IOC_SIGNAL, 0),
        Errno::EFAULT,
        "NULL",
    )?;
    ensure!(ch.stats()?.signal_slots == 0, "a rejected request was kept");
    Ok(())
}
