//! Hostile use of limits: a full signal queue, the thread's start failing outside `open`,
//! per-user limits, and the stats identity under load.

use crate::hostile::{child, exit_code, set_thread_uids, sig, USER};
use crate::{
    collect,
    faults::{each_allocation, reload},
    Test,
};
use anyhow::{ensure, Result};
use evnotify::{Channel, Notifier};
use nix::errno::Errno;
use std::{
    os::unix::fs::PermissionsExt,
    time::{Duration, Instant},
};

pub const TESTS: &[Test] = &[
    ("signal_queue_full_counted", signal_queue_full_counted),
    ("fault_inject_thread_start", fault_inject_thread_start),
    ("limit_per_user_two_uids", limit_per_user_two_uids),
    ("fault_inject_open_new_user", fault_inject_open_new_user),
    ("stats_identity_under_load", stats_identity_under_load),
];

/// A real-time signal that finds the target's queue full (`RLIMIT_SIGPENDING`) is counted
/// in `sig_refused`, and every kick is accounted for.
fn signal_queue_full_counted() -> Result<()> {
    let ch = Channel::open()?;
    let pid = child(|| {
        let run = || -> Result<()> {
            let sfd = evnotify::catch_signal(sig())?;
            let lim = libc::rlimit {
                rlim_cur: 2,
                rlim_max: 2,
            };
            // SAFETY: `lim` is a valid `rlimit`.
            Errno::result(unsafe { libc::setrlimit(libc::RLIMIT_SIGPENDING, &lim) })?;
            ch.set_signal(0, sig())?;
            ch.kick(0, 5)?;
            let s = crate::idle(&ch)?;
            let mut got = 0;
            while sfd.try_read()?.is_some() {
                got += 1;
            }
            ensure!(
                s.signals + s.sig_refused == 5 && s.sig_refused >= 3,
                "{s:?}"
            );
            ensure!(
                got == s.signals && s.dropped == s.sig_refused,
                "got {got}: {s:?}"
            );
            Ok(())
        };
        match run() {
            Ok(()) => 0,
            Err(e) => {
                println!("# signal_queue_full_counted: {e:#}");
                1
            }
        }
    })?;
    ensure!(exit_code(pid)? == 0, "the child's check failed");
    Ok(())
}

/// A failure to create the thread is the errno of the call that needed it; the channel stays
/// usable, and the next call starts the thread.
fn fault_inject_thread_start() -> Result<()> {
    let chans = (0..64)
        .map(|_| Channel::open())
        .collect::<std::io::Result<Vec<_>>>()?;
    let next = std::cell::Cell::new(0);
    let faults = each_allocation(
        "first kick",
        &[Errno::ENOMEM],
        || {
            let ch = &chans[next.get()];
            next.set(next.get() + 1);
            ch.kick(0, 1)
        },
        |ok| {
            let ch = &chans[next.get() - 1];
            if !ok {
                ensure!(ch.stats()?.thread_pid == 0, "a thread after a failed start");
            }
            let n = Notifier::new()?;
            ch.attach(1, &n)?;
            ch.kick(1, 1)?;
            collect(&n, 1)?;
            Ok(())
        },
    )?;
    ensure!(faults >= 1, "no allocation to fail");
    println!("# fault_inject_thread_start: {faults} faults injected");
    Ok(())
}

/// Opens `n` channels as `uid` (from a thread that takes that uid meanwhile): those opened, and
/// the last error.
fn open_as(uid: u32, n: usize) -> Result<(Vec<Channel>, Option<Errno>)> {
    std::thread::scope(|sc| {
        let h = sc.spawn(move || -> Result<(Vec<Channel>, Option<Errno>)> {
            set_thread_uids(uid, true)?;
            let mut chans = Vec::new();
            let mut err = None;
            for _ in 0..n {
                match Channel::open() {
                    Ok(c) => chans.push(c),
                    Err(e) => err = Some(crate::errno(e)),
                }
            }
            set_thread_uids(0, true)?;
            Ok((chans, err))
        });
        crate::join(h, "opener")
    })
}

/// A user's first channel adds the user to the module's table of users, which grows when it is
/// full. With 0 to 16 other users holding a channel each, root (with none) opens one with each
/// of its allocations failing in turn: each failure a clean errno, and the others' channels
/// usable after. Nothing else opens a root channel meanwhile (one opened after a failure in
/// the file layer would grow the table without a fault). In a VM that ran this test alone, 4
/// allocations failed at every number of users, though root's first channel must grow the
/// full table at some of them (not understood); in the whole suite of `make coverage` the
/// growth's error arm was reached (2026-12-07), in the one run of four since this test.
fn fault_inject_open_new_user() -> Result<()> {
    let mode = std::fs::metadata(evnotify::DEVICE)?.permissions();
    std::fs::set_permissions(evnotify::DEVICE, std::fs::Permissions::from_mode(0o666))?;
    let r = (|| -> Result<()> {
        let mut others = Vec::new();
        let mut faults = Vec::new();
        for k in 0..=16 {
            faults.push(each_allocation(
                &format!("open as a new user, {k} others"),
                &[Errno::ENOMEM, Errno::ENFILE],
                Channel::open,
                |_| Ok(()),
            )?);
            let (mut c, e) = open_as(USER + k, 1)?;
            ensure!(c.len() == 1, "uid {}: {e:?}", USER + k);
            others.append(&mut c);
        }
        let n = Notifier::new()?;
        for (slot, ch) in others.iter().enumerate() {
            ch.attach(0, &n)?;
            ch.kick(0, 1)?;
            collect(&n, 1)?;
            // Counted once the batch is done, after the signal.
            let st = crate::idle(ch)?;
            ensure!(st.handled == 1, "channel {slot}: {st:?}");
        }
        println!(
            "# fault_inject_open_new_user: faults injected at 0 to 16 other users: {faults:?}"
        );
        Ok(())
    })();
    std::fs::set_permissions(evnotify::DEVICE, mode)?;
    r
}

/// `max_user_channels` per euid, `max_channels` in all: EMFILE past either, for each user.
fn limit_per_user_two_uids() -> Result<()> {
    reload(c"max_channels=5 max_user_channels=2")?;
    std::fs::set_permissions(evnotify::DEVICE, std::fs::Permissions::from_mode(0o666))?;
    let r = (|| -> Result<()> {
        let (root, e) = open_as(0, 3)?;
        ensure!(
            root.len() == 2 && e == Some(Errno::EMFILE),
            "root: {} {e:?}",
            root.len()
        );
        let (user, e) = open_as(USER, 3)?;
        ensure!(
            user.len() == 2 && e == Some(Errno::EMFILE),
            "uid {USER}: {} {e:?}",
            user.len()
        );
        // The global ceiling: 5 in all.
        let (other, e) = open_as(USER + 1, 2)?;
        ensure!(
            other.len() == 1 && e == Some(Errno::EMFILE),
            "third uid: {} {e:?}",
            other.len()
        );
        // Closing gives places back to their user.
        drop(user);
        let (user, e) = open_as(USER, 2)?;
        ensure!(
            user.len() == 2 && e.is_none(),
            "after close: {} {e:?}",
            user.len()
        );
        Ok(())
    })();
    reload(c"")?;
    r
}

/// The header's identity holds in every snapshot, read while kicks, kick eventfd writes and
/// timer ticks flow and a reader drains the notifications.
fn stats_identity_under_load() -> Result<()> {
    let ch = Channel::open()?;
    let n = Notifier::new()?;
    let k = Notifier::new()?;
    for slot in 0..4 {
        ch.attach(slot, &n)?;
    }
    ch.attach_kickfd(4, &k)?;
    ch.attach(4, &n)?;
    ch.set_timer(5, Duration::from_millis(1), 0)?;
    let stop = std::sync::atomic::AtomicBool::new(false);
    let snapshots = std::thread::scope(|sc| -> Result<u64> {
        let kickers: Vec<_> = (0..2u32)
            .map(|i| {
                let (ch, stop) = (&ch, &stop);
                sc.spawn(move || -> Result<()> {
                    let mut j = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        ch.kick((i + j) % 4, 1 + j % 64)?;
                        j += 1;
                    }
                    Ok(())
                })
            })
            .collect();
        let writer = sc.spawn(|| -> Result<()> {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                k.post(3)?;
            }
            Ok(())
        });
        let reader = sc.spawn(|| -> Result<()> {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n.wait_timeout(Duration::from_millis(10))?;
            }
            Ok(())
        });
        let mut prev = ch.stats()?;
        let mut count = 0;
        let t = Instant::now();
        let res = (|| -> Result<()> {
            while t.elapsed() < Duration::from_secs(2) {
                let s = ch.stats()?;
                count += 1;
                ensure!(
                    s.kicks + s.timer_ticks == s.handled + s.pending + s.coalesced,
                    "identity broken: {s:?}"
                );
                ensure!(s.fd_kicks <= s.kicks, "fd_kicks > kicks: {s:?}");
                ensure!(
                    s.handled >= prev.handled && s.kicks >= prev.kicks,
                    "went back: {prev:?} {s:?}"
                );
                prev = s;
            }
            Ok(())
        })();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for h in kickers {
            crate::join(h, "kicker")?;
        }
        crate::join(writer, "writer")?;
        crate::join(reader, "reader")?;
        res.map(|()| count)
    })?;
    ch.cancel_timer(5)?;
    let s = crate::idle(&ch)?;
    ensure!(
        s.kicks + s.timer_ticks == s.handled + s.coalesced && s.pending == 0,
        "{s:?}"
    );
    eprintln!("# {snapshots} snapshots checked");
    Ok(())
}
