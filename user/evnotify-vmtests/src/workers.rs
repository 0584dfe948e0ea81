//! Shared workers (API v3): `EVNOTIFY_IOC_SHARE_WORKER` and `EVNOTIFY_IOC_WORKER`, the
//! fdinfo lines, a worker outliving the channel that started it, fds passed to another
//! process, conservation while channels of one worker close under load, fairness between a
//! flooded and a quiet channel, the per-worker busy-poll limit, the channel limits and rmmod.
//!
//! Every wait has a deadline ([`hang`]); none asserts a speed.

use crate::{
    collect, errno,
    errors::raw,
    expect_errno,
    faults::reload,
    hang,
    hostile::{readable_within, unix_pair},
    idle, settle, start_thread, Test,
};
use anyhow::{bail, ensure, Context, Result};
use evnotify::{sys, Channel, Notifier, Stats, WorkerInfo};
use nix::{
    errno::Errno,
    kmod::{delete_module, DeleteModuleFlags},
    sys::{
        signal::{kill, Signal},
        socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags},
        wait::{waitpid, WaitPidFlag, WaitStatus},
    },
    unistd::{dup, fork, pipe, ForkResult, Pid},
};
use std::{
    io::{IoSlice, IoSliceMut},
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
        Mutex,
    },
    time::{Duration, Instant},
};

pub const TESTS: &[Test] = &[
    ("workers_fresh_then_own", workers_fresh_then_own),
    ("workers_share_same_worker", workers_share_same_worker),
    ("workers_share_starts_worker", workers_share_starts_worker),
    ("workers_share_ebusy", workers_share_ebusy),
    ("workers_share_errors", workers_share_errors),
    ("workers_share_races", workers_share_races),
    ("workers_outlive_creator", workers_outlive_creator),
    (
        "workers_close_waits_only_for_own",
        workers_close_waits_only_for_own,
    ),
    ("workers_timers_and_kickfds", workers_timers_and_kickfds),
    (
        "workers_share_over_unix_socket",
        workers_share_over_unix_socket,
    ),
    (
        "workers_conservation_with_closes",
        workers_conservation_with_closes,
    ),
    (
        "workers_fairness_flood_vs_ping",
        workers_fairness_flood_vs_ping,
    ),
    ("workers_busypoll_per_worker", workers_busypoll_per_worker),
    ("workers_limits_count_sharers", workers_limits_count_sharers),
    (
        "workers_rmmod_busy_then_succeeds",
        workers_rmmod_busy_then_succeeds,
    ),
];

/// The value of `key:\t` in the channel's fdinfo.
fn fdinfo_field(ch: &Channel, key: &str) -> Result<String> {
    let text = ch.fdinfo()?;
    let prefix = format!("{key}:\t");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(str::to_string)
        .with_context(|| format!("no {key:?} in fdinfo:\n{text}"))
}

/// Checks that fdinfo's `thread_pid`, `worker` and `worker_channels` lines, in that order
/// and one after another, say what `EVNOTIFY_IOC_WORKER` says.
fn fdinfo_matches(ch: &Channel, w: &WorkerInfo) -> Result<()> {
    let text = ch.fdinfo()?;
    let want = format!(
        "thread_pid:\t{}\nworker:\t{}\nworker_channels:\t{}\n",
        w.thread_pid, w.id, w.channels
    );
    ensure!(
        text.contains(&want),
        "fdinfo does not match {w:?}: want\n{want}in\n{text}"
    );
    Ok(())
}

/// The worker of `ch`, checked against its stats and fdinfo and, if it has one, its thread's
/// name.
fn worker(ch: &Channel) -> Result<WorkerInfo> {
    let w = ch.worker()?;
    let s = ch.stats()?;
    // The two reads are not one snapshot, but nothing changes the worker between them here.
    ensure!(
        w.thread_pid == s.thread_pid,
        "EVNOTIFY_IOC_WORKER {w:?} and stats {s:?} disagree on the pid"
    );
    if w.id == 0 {
        ensure!(w.thread_pid == 0 && w.channels == 0, "no worker, yet {w:?}");
    } else {
        ensure!(w.thread_pid > 0 && w.channels >= 1, "{w:?}");
        let comm = crate::lifecycle::comm(w.thread_pid)?;
        let want: String = format!("evnotify/{}", w.id).chars().take(15).collect();
        ensure!(comm == want, "worker {w:?}'s thread is called {comm:?}");
    }
    fdinfo_matches(ch, &w)?;
    Ok(w)
}

/// `EVNOTIFY_IOC_SHARE_WORKER` with a request built by hand.
fn share_raw(ch: &Channel, req: sys::Share) -> nix::Result<i32> {
    raw(ch, sys::IOC_SHARE_WORKER, &req as *const _ as usize)
}

/// Waits until the kernel thread `pid` has exited (its reaping is asynchronous).
fn thread_gone(pid: i32, what: &str) -> Result<()> {
    let t = Instant::now();
    while crate::lifecycle::comm(pid).is_ok_and(|c| c.starts_with("evnotify/")) {
        ensure!(t.elapsed() < hang(), "thread {pid} outlived {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// Opens `n` channels that all use one worker, started by the first; returns them and it.
fn pool(n: usize) -> Result<(Vec<Channel>, WorkerInfo)> {
    let chans = (0..n)
        .map(|_| Channel::open())
        .collect::<std::io::Result<Vec<_>>>()?;
    start_thread(&chans[0])?;
    for (i, ch) in chans.iter().enumerate().skip(1) {
        ch.share_worker(&chans[0])
            .with_context(|| format!("channel {i} shares channel 0's worker"))?;
    }
    let w = worker(&chans[0])?;
    ensure!(w.channels == n as u32, "{n} channels, yet {w:?}");
    for ch in &chans {
        ensure!(ch.worker()? == w, "{:?} != {w:?}", ch.worker()?);
    }
    Ok((chans, w))
}

/// A fresh channel has no worker; its first kick starts one of its own, named after its id.
fn workers_fresh_then_own() -> Result<()> {
    let (a, b) = (Channel::open()?, Channel::open()?);
    for ch in [&a, &b] {
        let w = worker(ch)?;
        ensure!(
            w.id == 0 && w.thread_pid == 0 && w.channels == 0,
            "fresh: {w:?}"
        );
        ensure!(fdinfo_field(ch, "worker")? == "0", "{}", ch.fdinfo()?);
        ensure!(fdinfo_field(ch, "worker_channels")? == "0");
    }
    let pa = start_thread(&a)?;
    let wa = worker(&a)?;
    ensure!(
        wa.id != 0 && wa.thread_pid == pa && wa.channels == 1,
        "after the first kick: {wa:?}, thread {pa}"
    );
    // The other channel is still without one; then it gets its own.
    ensure!(worker(&b)?.id == 0, "{:?}", b.worker()?);
    let pb = start_thread(&b)?;
    let wb = worker(&b)?;
    ensure!(
        wb.id != 0 && wb.id != wa.id && wb.thread_pid == pb && pb != pa && wb.channels == 1,
        "{wa:?} {wb:?}"
    );
    // Later kicks keep the worker.
    a.kick(0, 3)?;
    idle(&a)?;
    ensure!(worker(&a)? == wa, "the worker changed: {:?}", a.worker()?);
    Ok(())
}

/// B shares A's worker: one id, one thread, two channels, and each is delivered exactly; a
/// third shares through B, and a close counts down.
fn workers_share_same_worker() -> Result<()> {
    let (a, b, c) = (Channel::open()?, Channel::open()?, Channel::open()?);
    let pid = start_thread(&a)?;
    let before = worker(&a)?;
    b.share_worker(&a)?;
    let (wa, wb) = (worker(&a)?, worker(&b)?);
    ensure!(
        wa == wb && wa.id == before.id && wa.thread_pid == pid && wa.channels == 2,
        "{before:?} {wa:?} {wb:?}"
    );
    ensure!(b.stats()?.thread_pid == pid, "{:?}", b.stats()?);
    // Sharing through B names the same worker.
    c.share_worker(&b)?;
    let wc = worker(&c)?;
    ensure!(wc.id == wa.id && wc.channels == 3, "{wa:?} {wc:?}");
    ensure!(worker(&a)?.channels == 3 && worker(&b)?.channels == 3);
    let (na, nb, nc) = (Notifier::new()?, Notifier::new()?, Notifier::new()?);
    a.attach(0, &na)?;
    b.attach(0, &nb)?;
    c.attach(7, &nc)?;
    a.kick(0, 5)?;
    b.kick(0, 7)?;
    c.kick(7, 11)?;
    collect(&na, 5)?;
    collect(&nb, 7)?;
    collect(&nc, 11)?;
    for (ch, n, k) in [(&a, &na, 5), (&b, &nb, 7), (&c, &nc, 11)] {
        let s = settle(ch, n)?;
        // A's start kick (slot 63, no target) is its own, dropped.
        let dropped = u64::from(std::ptr::eq(ch, &a));
        ensure!(
            s.kicks == k + dropped && s.notifies == k && s.dropped == dropped,
            "{s:?}"
        );
    }
    drop(c);
    ensure!(worker(&a)?.channels == 2 && worker(&b)?.channels == 2);
    ensure!(worker(&a)?.thread_pid == pid, "the thread changed");
    Ok(())
}

/// Sharing the worker of a channel that has none starts it, for both.
fn workers_share_starts_worker() -> Result<()> {
    let (a, b) = (Channel::open()?, Channel::open()?);
    b.share_worker(&a)?;
    let (wa, wb) = (worker(&a)?, worker(&b)?);
    ensure!(
        wa.id != 0 && wa.thread_pid > 0 && wa.channels == 2 && wa == wb,
        "{wa:?} {wb:?}"
    );
    // A's first kick uses it and starts no other.
    let n = Notifier::new()?;
    a.attach(0, &n)?;
    a.kick(0, 4)?;
    collect(&n, 4)?;
    settle(&a, &n)?;
    ensure!(worker(&a)? == wa, "{:?} {wa:?}", a.worker()?);
    Ok(())
}

/// A channel that has a worker cannot take another: EBUSY, whichever way it got it.
fn workers_share_ebusy() -> Result<()> {
    let (a, other) = (Channel::open()?, Channel::open()?);
    start_thread(&other)?;
    // Every way to start a worker of one's own.
    for way in 0..3 {
        let b = Channel::open()?;
        let k = Notifier::new()?;
        match way {
            0 => b.kick(0, 1)?,
            1 => b.attach_kickfd(0, &k)?,
            _ => b.set_timer(0, Duration::from_secs(3600), 1)?,
        }
        let own = worker(&b)?;
        ensure!(own.id != 0 && own.channels == 1, "way {way}: {own:?}");
        expect_errno(b.share_worker(&a), Errno::EBUSY, "share after own start")?;
        expect_errno(
            b.share_worker(&other),
            Errno::EBUSY,
            "share after own start, a running worker",
        )?;
        ensure!(
            worker(&b)? == own,
            "way {way}: changed to {:?}",
            b.worker()?
        );
    }
    // A channel that shares already cannot share again, not even the same worker.
    let b = Channel::open()?;
    b.share_worker(&other)?;
    let w = worker(&b)?;
    expect_errno(b.share_worker(&other), Errno::EBUSY, "share twice")?;
    expect_errno(b.share_worker(&a), Errno::EBUSY, "share another")?;
    ensure!(worker(&b)? == w && worker(&other)?.channels == 2);
    // Once sharing, its first kick keeps the shared worker.
    b.kick(0, 1)?;
    idle(&b)?;
    ensure!(worker(&b)? == w, "{:?} {w:?}", b.worker()?);
    Ok(())
}

/// Each bad request has its errno, and none gives either channel a worker.
fn workers_share_errors() -> Result<()> {
    let ch = Channel::open()?;
    let other = Channel::open()?;
    let ok = sys::Share {
        fd: other.as_fd().as_raw_fd(),
        ..Default::default()
    };
    // Itself, by its own descriptor and by a duplicate of it.
    expect_errno(ch.share_worker(&ch), Errno::EINVAL, "itself")?;
    let d = dup(ch.as_fd())?;
    expect_errno(ch.share_worker(&d), Errno::EINVAL, "a dup of itself")?;
    // Descriptors that are not open.
    let n = Notifier::new()?;
    let closed = n.as_fd().as_raw_fd();
    drop(n);
    for fd in [closed, 1000, -1, -2, i32::MIN] {
        expect_errno(
            share_raw(&ch, sys::Share { fd, ..ok }),
            Errno::EBADF,
            &format!("fd {fd}"),
        )?;
    }
    // Open files that are not channels.
    let efd = Notifier::new()?;
    let null = std::fs::File::open("/dev/null")?;
    let (r, w) = pipe()?;
    let dir = std::fs::File::open("/")?;
    for (what, fd) in [
        ("an eventfd", efd.as_fd()),
        ("/dev/null", null.as_fd()),
        ("a pipe's read end", r.as_fd()),
        ("a pipe's write end", w.as_fd()),
        ("a directory", dir.as_fd()),
    ] {
        expect_errno(ch.share_worker(fd), Errno::EINVAL, what)?;
    }
    // Flags and reserved.
    for (what, req) in [
        ("flags 1", sys::Share { flags: 1, ..ok }),
        (
            "flags MSB",
            sys::Share {
                flags: 1 << 31,
                ..ok
            },
        ),
        ("reserved 1", sys::Share { reserved: 1, ..ok }),
        (
            "reserved MSB",
            sys::Share {
                reserved: 1 << 63,
                ..ok
            },
        ),
    ] {
        expect_errno(share_raw(&ch, req), Errno::EINVAL, what)?;
    }
    // Bad pointers, and the wrong size or direction.
    for addr in [0, 8, 0xffff_ffff_8100_0000, usize::MAX - 7] {
        expect_errno(
            raw(&ch, sys::IOC_SHARE_WORKER, addr),
            Errno::EFAULT,
            &format!("share at {addr:#x}"),
        )?;
        expect_errno(
            raw(&ch, sys::IOC_WORKER, addr),
            Errno::EFAULT,
            &format!("worker at {addr:#x}"),
        )?;
    }
    let mut buf = [0u8; 64];
    let p = buf.as_mut_ptr() as usize;
    // A well-formed request with another size, to a real channel: it would succeed.
    // SAFETY: `buf` has room for a `struct evnotify_share` at its start.
    unsafe { std::ptr::write_unaligned(buf.as_mut_ptr().cast(), ok) };
    let ioc = |dir: u64, nr: u64, size: u64| {
        (dir << 30) | (size << 16) | (u64::from(sys::IOC_MAGIC) << 8) | nr
    };
    for (dir, nr, size) in [
        (1, 8, 8),
        (1, 8, 24),
        (1, 8, 32),
        (3, 8, 16),
        (2, 9, 8),
        (2, 9, 32),
    ] {
        expect_errno(
            raw(&ch, ioc(dir, nr, size), p),
            Errno::ENOTTY,
            &format!("dir {dir} nr {nr} size {size}"),
        )?;
    }
    for c in [&ch, &other] {
        let w = worker(c)?;
        ensure!(w.id == 0, "a rejected share started a worker: {w:?}");
    }
    // And the channel still shares, once asked properly.
    share_raw(&ch, ok)?;
    ensure!(worker(&ch)?.channels == 2);
    Ok(())
}

/// Two channels sharing each other's worker at once, and many channels sharing one that is
/// just starting: no deadlock (every call returns within the deadline), each call succeeds
/// or fails with EBUSY, and the workers' channel counts add up.
fn workers_share_races() -> Result<()> {
    use std::sync::{mpsc, Arc};
    const ROUNDS: usize = 50;
    const CROWD: usize = 6;
    for round in 0..ROUNDS {
        let a = Arc::new(Channel::open()?);
        let b = Arc::new(Channel::open()?);
        let crowd: Vec<_> = (0..CROWD)
            .map(|_| Channel::open().map(Arc::new))
            .collect::<std::io::Result<_>>()?;
        let (tx, rx) = mpsc::channel();
        // Not scoped: a call stuck in the kernel must not keep the test from reporting it.
        let spawn = |who: String, f: Box<dyn FnOnce() -> std::io::Result<()> + Send>| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let _ = tx.send((who, f().map_err(errno)));
            });
        };
        let (a1, b1) = (a.clone(), b.clone());
        spawn("a shares b".into(), Box::new(move || a1.share_worker(&*b1)));
        let (a2, b2) = (a.clone(), b.clone());
        spawn("b shares a".into(), Box::new(move || b2.share_worker(&*a2)));
        for (i, c) in crowd.iter().enumerate() {
            let (c, target) = (c.clone(), if i % 2 == 0 { a.clone() } else { b.clone() });
            spawn(
                format!("crowd {i}"),
                Box::new(move || c.share_worker(&*target)),
            );
        }
        drop(tx);
        let deadline = Instant::now() + hang();
        let mut results = vec![];
        for _ in 0..CROWD + 2 {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(r) => results.push(r),
                Err(_) => bail!("round {round}: share calls hung; returned: {results:?}"),
            }
        }
        // The crowd had no worker, so nothing can make its shares fail; a and b may both
        // fail with EBUSY, if each got its own worker through the other's call.
        for (who, r) in &results {
            match r {
                Ok(()) => {}
                Err(Errno::EBUSY) if !who.starts_with("crowd") => {}
                Err(e) => bail!("round {round}: {who}: {e}"),
            }
        }
        // Each of ours has a worker, and each worker counts exactly ours.
        let mut counts = std::collections::BTreeMap::<u32, (u32, u32)>::new();
        for ch in [&a, &b].into_iter().chain(&crowd) {
            let w = worker(ch)?;
            ensure!(
                w.id != 0,
                "round {round}: no worker after the shares: {results:?}"
            );
            let e = counts.entry(w.id).or_insert((0, w.channels));
            e.0 += 1;
        }
        ensure!(
            counts.len() <= 2,
            "round {round}: {} workers for two: {counts:?}",
            counts.len()
        );
        for (id, (n, channels)) in &counts {
            ensure!(
                n == channels,
                "round {round}: worker {id} serves {n} of ours but counts {channels}: {results:?}"
            );
        }
        let ok = |who: &str| results.iter().any(|(w, r)| w == who && r.is_ok());
        if ok("a shares b") || ok("b shares a") {
            ensure!(
                a.worker()? == b.worker()?,
                "round {round}: a share succeeded, yet {:?} {:?}",
                a.worker()?,
                b.worker()?
            );
        }
        for (i, c) in crowd.iter().enumerate() {
            let target = if i % 2 == 0 { &a } else { &b };
            ensure!(
                c.worker()?.id == target.worker()?.id,
                "round {round}: crowd {i} shared {}, yet has {:?}, it {:?}",
                if i % 2 == 0 { "a" } else { "b" },
                c.worker()?,
                target.worker()?
            );
        }
    }
    Ok(())
}

/// The worker lives while any channel uses it: A starts it, B shares it, A closes with work
/// pending, B is still delivered exactly; B's close stops the thread.
fn workers_outlive_creator() -> Result<()> {
    let (a, b) = (Channel::open()?, Channel::open()?);
    let pid = start_thread(&a)?;
    b.share_worker(&a)?;
    let w = worker(&b)?;
    let (na, nb) = (Notifier::new()?, Notifier::new()?);
    a.attach(0, &na)?;
    b.attach(0, &nb)?;
    // A closes with kicks pending on it, while the worker delivers them.
    a.kick(0, sys::MAX_KICK)?;
    ensure!(na.wait_timeout(hang())? > 0, "A's kicks never came");
    drop(a);
    let na_at_close = na.drain()?;
    let after = worker(&b)?;
    ensure!(
        after.id == w.id && after.thread_pid == pid && after.channels == 1,
        "after the creator closed: {w:?} -> {after:?}"
    );
    for round in 1..=20u32 {
        b.kick(round % 4, round)?;
    }
    // Slots 1..3 have no eventfd: only slot 0's kicks (4, 8, ..., 20) are notified.
    let want: u64 = (1..=20u64).filter(|r| r % 4 == 0).sum();
    collect(&nb, want)?;
    let s = settle(&b, &nb)?;
    ensure!(
        s.kicks == (1..=20).sum::<u64>() && s.notifies == want && s.thread_pid == pid,
        "{s:?}"
    );
    // Nothing reaches the closed channel's eventfd once its close returned.
    let late = na_at_close;
    std::thread::sleep(Duration::from_millis(50));
    ensure!(
        na.drain()? == 0,
        "A's eventfd grew after its close ({late} before)"
    );
    ensure!(
        crate::lifecycle::comm(pid)? == format!("evnotify/{}", w.id),
        "the thread is gone"
    );
    drop(b);
    thread_gone(pid, "the last channel of its worker")
}

/// Closing a channel does not wait for the other channels of its worker: with a few million
/// kicks to deliver on F, a close of X (with work of its own) returns while F still has most
/// of them pending. (No time is measured: a close that drained the worker first would find
/// F idle, and one that waited for it for ever would hang past the test's limit.)
fn workers_close_waits_only_for_own() -> Result<()> {
    let (mut chans, _) = pool(3)?;
    let (nf, nx) = (Notifier::new()?, Notifier::new()?);
    let f = chans.remove(0);
    for slot in 0..4 {
        f.attach(slot, &nf)?;
        f.kick(slot, sys::MAX_KICK)?;
    }
    let x = chans.remove(0);
    x.attach(0, &nx)?;
    x.kick(0, sys::MAX_KICK)?;
    // The worker is at it: F's first deliveries came.
    let first = nf.wait_timeout(hang())?;
    ensure!(first > 0, "F's kicks never came");
    drop(x);
    let s = f.stats()?;
    ensure!(s.pending > 0, "closing X waited for all of F's work: {s:?}");
    eprintln!(
        "# F had {} of {} kicks pending after X closed",
        s.pending,
        4 * sys::MAX_KICK
    );
    // The last one is still served; F drains quickly once its eventfds are detached.
    let last = chans.remove(0);
    let n = Notifier::new()?;
    last.attach(0, &n)?;
    last.kick(0, 2)?;
    collect(&n, 2)?;
    for slot in 0..4 {
        f.detach(slot)?;
    }
    let s = idle(&f)?;
    let got = first + nf.drain()?;
    ensure!(
        s.handled + s.coalesced == s.kicks
            && s.pending == 0
            && s.notifies + s.dropped == s.handled
            && got == s.notifies,
        "read {got}: {s:?}"
    );
    Ok(())
}

/// Timers and kick eventfds work on channels that share a worker, each exactly: the
/// per-channel alarms are armed by the one worker.
fn workers_timers_and_kickfds() -> Result<()> {
    let (chans, w) = pool(4)?;
    let notifiers = (0..4)
        .map(|_| Notifier::new())
        .collect::<std::io::Result<Vec<_>>>()?;
    let kickfds = (0..4)
        .map(|_| Notifier::new())
        .collect::<std::io::Result<Vec<_>>>()?;
    let ticks = [40u64, 25, 10, 1];
    for (i, ch) in chans.iter().enumerate() {
        ch.attach(1, &notifiers[i])?;
        ch.attach(2, &notifiers[i])?;
        ch.attach_kickfd(2, &kickfds[i])?;
        ch.set_timer(1, Duration::from_millis(1 + i as u64), ticks[i])?;
    }
    for round in 1..=10u64 {
        for k in &kickfds {
            k.post(round)?;
        }
    }
    for (i, ch) in chans.iter().enumerate() {
        let want = ticks[i] + 55;
        collect(&notifiers[i], want).with_context(|| format!("channel {i}"))?;
        let s = settle(ch, &notifiers[i])?;
        ensure!(
            s.timer_ticks == ticks[i] && s.fd_kicks == 55 && s.notifies == want && s.timers == 0,
            "channel {i}: {s:?}"
        );
        ensure!(s.thread_pid == w.thread_pid, "channel {i}: {s:?} {w:?}");
    }
    // One channel's periodic timer, cancelled, leaves the others' alone.
    chans[0].set_timer(1, Duration::from_millis(2), 0)?;
    chans[1].set_timer(1, Duration::from_millis(3), 5)?;
    collect(&notifiers[1], 5)?;
    chans[0].cancel_timer(1)?;
    let s = idle(&chans[0])?;
    let got = notifiers[0].drain()?;
    ensure!(
        got == s.timer_ticks - ticks[0],
        "channel 0: read {got} after the cancel: {s:?}"
    );
    std::thread::sleep(Duration::from_millis(20));
    ensure!(notifiers[0].drain()? == 0, "ticks after the cancel");
    Ok(())
}

/// Runs `f` in a forked child, which exits with 0 if it returned `Ok`, and prints the error.
fn child(f: impl FnOnce() -> Result<()>) -> Result<Pid> {
    // SAFETY: The test has no other thread when it forks; the child leaves with `_exit`.
    match unsafe { fork() }? {
        ForkResult::Child => {
            let code = match f() {
                Ok(()) => 0,
                Err(e) => {
                    println!("# child: {e:#}");
                    1
                }
            };
            // SAFETY: Ends the child without running the parent's destructors twice.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => Ok(child),
    }
}

/// Waits for `pid` to exit, at most [`hang`]; fails unless it exited with 0.
fn child_ok(pid: Pid, what: &str) -> Result<()> {
    let t = Instant::now();
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG))? {
            WaitStatus::Exited(_, 0) => return Ok(()),
            WaitStatus::StillAlive if t.elapsed() < hang() => {
                std::thread::sleep(Duration::from_millis(2))
            }
            WaitStatus::StillAlive => {
                let _ = kill(pid, Signal::SIGKILL);
                let _ = waitpid(pid, None);
                bail!("{what} hung");
            }
            other => bail!("{what}: {other:?}"),
        }
    }
}

/// A process that receives a channel's fd over a unix socket (SCM_RIGHTS) can share its
/// worker. (One that never had the fd cannot name it: `workers_share_errors` has EBADF for
/// a number that is not open.)
fn workers_share_over_unix_socket() -> Result<()> {
    let (sa, sb) = unix_pair()?;
    // Forked before the channel exists, so it can only have it from the socket.
    let pid = child(|| {
        let mine = Channel::open()?;
        let mut id = [0u8; 4];
        let mut iov = [IoSliceMut::new(&mut id)];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        readable_within(sb.as_fd(), "the parent")?;
        let msg = recvmsg::<()>(
            sb.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::empty(),
        )?;
        ensure!(msg.bytes == 4, "short message");
        let fds: Vec<RawFd> = msg
            .cmsgs()?
            .filter_map(|c| match c {
                ControlMessageOwned::ScmRights(fds) => Some(fds),
                _ => None,
            })
            .flatten()
            .collect();
        ensure!(fds.len() == 1, "received {fds:?}");
        let want_id = u32::from_ne_bytes(id);
        // SAFETY: SCM_RIGHTS installed this descriptor for us; nothing else owns it.
        let theirs = unsafe { OwnedFd::from_raw_fd(fds[0]) };
        ensure!(mine.worker()?.id == 0, "started by a failed share");
        mine.share_worker(&theirs)?;
        let w = mine.worker()?;
        ensure!(
            w.id == want_id && w.channels == 2,
            "{w:?}, want id {want_id}"
        );
        let n = Notifier::new()?;
        mine.attach(0, &n)?;
        mine.kick(0, 9)?;
        collect(&n, 9)?;
        // Its own descriptor of the parent's channel kicks the parent's channel.
        Channel::from(theirs).kick(1, 2)?;
        Ok(())
    })?;
    let ch = Channel::open()?;
    let n = Notifier::new()?;
    ch.attach(1, &n)?;
    start_thread(&ch)?;
    let w = worker(&ch)?;
    let payload = w.id.to_ne_bytes();
    let fds = [ch.as_fd().as_raw_fd()];
    sendmsg::<()>(
        sa.as_raw_fd(),
        &[IoSlice::new(&payload)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )?;
    child_ok(pid, "the receiving process")?;
    collect(&n, 2)?;
    settle(&ch, &n)?;
    // The child's channel closed when it exited.
    let after = worker(&ch)?;
    ensure!(
        after.id == w.id && after.channels == 1,
        "{w:?} -> {after:?}"
    );
    Ok(())
}

/// Sums what a closed channel's eventfd received after its close: nothing may arrive.
fn no_late_deliveries(n: &Notifier, i: usize) -> Result<()> {
    std::thread::sleep(Duration::from_millis(50));
    let late = n.drain()?;
    ensure!(
        late == 0,
        "channel {i}: {late} notifications after close returned"
    );
    Ok(())
}

/// Conservation on one worker: several threads kick every channel with exact counts while
/// some channels (the creator among them) close; every surviving channel receives exactly its
/// kicks, the stats identity holds, and a closed channel's eventfd receives nothing once its
/// close has returned.
fn workers_conservation_with_closes() -> Result<()> {
    const N: usize = 16;
    const KICKERS: usize = 4;
    const KICKS_EACH: u64 = 3000;
    const SLOTS: u32 = 4;
    /// The channels closed under load, in this order, one per tenth of the kicks.
    const CLOSED: [usize; 6] = [0, 5, 10, 15, 3, 8];
    let (chans, w) = pool(N)?;
    let notifiers = (0..N)
        .map(|_| Notifier::new())
        .collect::<std::io::Result<Vec<_>>>()?;
    for (ch, n) in chans.iter().zip(&notifiers) {
        for slot in 0..SLOTS {
            ch.attach(slot, n)?;
        }
    }
    // A's start kick (slot 63, no target) was channel 0's only one before the test.
    let base: Vec<Stats> = chans
        .iter()
        .map(Channel::stats)
        .collect::<std::io::Result<_>>()?;
    let lanes: Vec<Mutex<Option<Channel>>> =
        chans.into_iter().map(|c| Mutex::new(Some(c))).collect();
    let sent: Vec<AtomicU64> = (0..N).map(|_| AtomicU64::new(0)).collect();
    let done = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    // Per closed channel: what its eventfd had at close.
    let closed_at = std::thread::scope(|sc| -> Result<Vec<(usize, u64)>> {
        let kickers: Vec<_> = (0..KICKERS)
            .map(|t| {
                let (lanes, sent, done, stop) = (&lanes, &sent, &done, &stop);
                sc.spawn(move || -> Result<()> {
                    for j in 0..KICKS_EACH {
                        if stop.load(Relaxed) {
                            break;
                        }
                        let i = (t * 7 + j as usize) % N;
                        let count = 1 + ((j as u32 * 13 + t as u32) % 64);
                        let slot = (j as u32 + t as u32) % SLOTS;
                        let lane = lanes[i].lock().unwrap_or_else(|e| e.into_inner());
                        if let Some(ch) = lane.as_ref() {
                            ch.kick(slot, count)
                                .with_context(|| format!("kick channel {i}"))?;
                            sent[i].fetch_add(count.into(), Relaxed);
                        }
                        drop(lane);
                        done.fetch_add(1, Relaxed);
                    }
                    Ok(())
                })
            })
            .collect();
        let closer = (|| -> Result<Vec<(usize, u64)>> {
            let total = KICKERS as u64 * KICKS_EACH;
            let mut closed = vec![];
            for (k, &i) in CLOSED.iter().enumerate() {
                let at = total * (k as u64 + 1) / 10;
                let t = Instant::now();
                while done.load(Relaxed) < at {
                    ensure!(
                        t.elapsed() < hang(),
                        "kickers stalled at {done:?} of {total}"
                    );
                    std::thread::sleep(Duration::from_millis(1));
                }
                let ch = lanes[i].lock().unwrap_or_else(|e| e.into_inner()).take();
                let ch = ch.context("closed twice")?;
                // Give it the worker's longest batches (the kickers' leave short ones), and
                // close it as soon as a notification shows the worker delivering one of
                // its batches: most likely in the middle of it.
                let mut got = notifiers[i].drain()?;
                ch.kick(0, sys::MAX_KICK)?;
                sent[i].fetch_add(sys::MAX_KICK.into(), Relaxed);
                let first = notifiers[i].wait_timeout(hang())?;
                ensure!(first > 0, "channel {i} never served: {:?}", ch.stats()?);
                got += first;
                let pending = ch.stats()?.pending;
                drop(ch);
                // Close has returned: whatever is in the eventfd now is all it gets.
                closed.push((i, got + notifiers[i].drain()?));
                eprintln!("# channel {i} closed with {pending} kicks pending");
            }
            Ok(closed)
        })();
        if closer.is_err() {
            stop.store(true, Relaxed);
        }
        for h in kickers {
            crate::join(h, "kicker")?;
        }
        closer
    })?;
    for &(i, got) in &closed_at {
        let sent = sent[i].load(Relaxed);
        ensure!(got <= sent, "channel {i}: received {got} of {sent} kicks");
        no_late_deliveries(&notifiers[i], i)?;
    }
    let survivors: Vec<usize> = (0..N).filter(|i| !CLOSED.contains(i)).collect();
    for &i in &survivors {
        let lane = lanes[i].lock().unwrap_or_else(|e| e.into_inner());
        let ch = lane.as_ref().context("a survivor closed")?;
        let want = sent[i].load(Relaxed);
        collect(&notifiers[i], want).with_context(|| format!("channel {i}"))?;
        let s = settle(ch, &notifiers[i]).with_context(|| format!("channel {i}"))?;
        let b = &base[i];
        ensure!(
            s.kicks - b.kicks == want
                && s.notifies - b.notifies == want
                && s.coalesced == 0
                && s.pending == 0
                && s.kicks + s.timer_ticks == s.handled + s.pending + s.coalesced,
            "channel {i}: sent {want}, {s:?}"
        );
        let now = worker(ch)?;
        ensure!(
            now.id == w.id && now.channels == survivors.len() as u32,
            "channel {i}: {w:?} -> {now:?}"
        );
    }
    // A while later, still nothing for the closed ones.
    for &(i, _) in &closed_at {
        ensure!(
            notifiers[i].drain()? == 0,
            "channel {i}: late notifications"
        );
    }
    Ok(())
}

/// Fairness on one worker: channel F flooded (the largest kicks, back to back, and a kick
/// eventfd written as fast as it takes them), channel Q in a ping-pong of single kicks: all
/// of Q's rounds are answered within one deadline. No speed is asserted, but a worker that
/// let F's whole backlog go first (a million kicks a batch, seconds each under emulation)
/// cannot answer 50 rounds within it.
fn workers_fairness_flood_vs_ping() -> Result<()> {
    const ROUNDS: u32 = 50;
    let (chans, _) = pool(3)?;
    let (f1, f2, q) = (&chans[0], &chans[1], &chans[2]);
    let (nf1, nf2, nq) = (Notifier::new()?, Notifier::new()?, Notifier::new()?);
    let k = Notifier::new()?;
    f1.attach(0, &nf1)?;
    f2.attach(0, &nf2)?;
    f2.attach_kickfd(0, &k)?;
    q.attach(0, &nq)?;
    let stop = AtomicBool::new(false);
    let busy_rounds = std::thread::scope(|sc| -> Result<u32> {
        let flood = sc.spawn(|| -> Result<u64> {
            let mut n = 0;
            while !stop.load(Relaxed) {
                f1.kick(0, sys::MAX_KICK)?;
                n += 1;
            }
            Ok(n)
        });
        let writer = sc.spawn(|| -> Result<()> {
            while !stop.load(Relaxed) {
                match k.post(sys::MAX_KICK.into()) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => std::thread::yield_now(),
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(())
        });
        let res = (|| -> Result<u32> {
            // The flood has begun before the first round.
            let t = Instant::now();
            while f1.stats()?.pending == 0 || f2.stats()?.pending == 0 {
                ensure!(t.elapsed() < hang(), "the flood never began");
                std::thread::yield_now();
            }
            let mut busy = 0;
            let deadline = Instant::now() + hang();
            for round in 1..=ROUNDS {
                q.kick(0, 1)?;
                let got = nq.wait_timeout(deadline.saturating_duration_since(Instant::now()))?;
                ensure!(
                    got == 1,
                    "round {round}: Q received {got}, with {ROUNDS} rounds due within {:?} while F \
                     is flooded: Q {:?}, F {:?}",
                    hang(),
                    q.stats()?,
                    f1.stats()?
                );
                busy += u32::from(f1.stats()?.pending > 0 && f2.stats()?.pending > 0);
            }
            Ok(busy)
        })();
        stop.store(true, Relaxed);
        let floods = crate::join(flood, "flooder")?;
        crate::join(writer, "kick eventfd writer")?;
        eprintln!("# {floods} flood kicks of {}", sys::MAX_KICK);
        res
    })?;
    // The rounds ran while the flood was on, not after it.
    ensure!(
        busy_rounds > 0,
        "F was never busy after a round: the test did not test fairness"
    );
    eprintln!("# F busy after {busy_rounds} of {ROUNDS} rounds");
    let s = settle(q, &nq)?;
    ensure!(
        s.kicks == u64::from(ROUNDS) && s.notifies == u64::from(ROUNDS),
        "{s:?}"
    );
    // The flooded channels drain, and nothing is lost: delivered, dropped or coalesced. (Their
    // eventfds are detached first, so that what is left is dropped at once, not signalled
    // a million times under emulation; a batch already taken still goes to them.)
    f1.detach(0)?;
    f2.detach(0)?;
    for (f, n) in [(f1, &nf1), (f2, &nf2)] {
        let s = idle(f)?;
        let got = n.drain()?;
        ensure!(
            s.kicks + s.timer_ticks == s.handled + s.coalesced
                && s.notifies + s.dropped == s.handled
                && got == s.notifies,
            "read {got}: {s:?}"
        );
    }
    Ok(())
}

/// Busy polling belongs to the worker: a limit set through any channel shows on all of them,
/// and a channel that shares takes the worker's limit, whatever it had.
fn workers_busypoll_per_worker() -> Result<()> {
    let (chans, _) = pool(2)?;
    let (a, b) = (&chans[0], &chans[1]);
    let lone = Channel::open()?;
    start_thread(&lone)?;
    let before = lone.stats()?.busypoll_ns;
    for (k, ns) in [1234u32, 0, sys::MAX_BUSYPOLL_NS, 777]
        .into_iter()
        .enumerate()
    {
        let (set, other) = if k % 2 == 0 { (a, b) } else { (b, a) };
        set.set_busypoll(Duration::from_nanos(ns.into()))?;
        for ch in [a, b] {
            ensure!(ch.stats()?.busypoll_ns == ns, "{ns}: {:?}", ch.stats()?);
            ensure!(fdinfo_field(ch, "busypoll_ns")? == ns.to_string());
        }
        ensure!(other.stats()?.busypoll_ns == ns);
    }
    ensure!(
        lone.stats()?.busypoll_ns == before,
        "another worker's limit changed: {:?}",
        lone.stats()?
    );
    // A channel with a limit of its own takes the worker's when it shares; then its setting
    // applies to the worker.
    let c = Channel::open()?;
    c.set_busypoll(Duration::from_nanos(4321))?;
    ensure!(c.stats()?.busypoll_ns == 4321);
    c.share_worker(a)?;
    ensure!(c.stats()?.busypoll_ns == 777, "{:?}", c.stats()?);
    ensure!(
        a.stats()?.busypoll_ns == 777,
        "the sharer changed the worker's limit"
    );
    c.set_busypoll(Duration::ZERO)?;
    ensure!(a.stats()?.busypoll_ns == 0 && b.stats()?.busypoll_ns == 0);
    // A share that starts the worker: the worker takes its starter's limit.
    let (d, e) = (Channel::open()?, Channel::open()?);
    d.set_busypoll(Duration::from_nanos(999))?;
    e.set_busypoll(Duration::from_nanos(5))?;
    e.share_worker(&d)?;
    ensure!(
        d.stats()?.busypoll_ns == 999 && e.stats()?.busypoll_ns == 999,
        "{:?} {:?}",
        d.stats()?,
        e.stats()?
    );
    ensure!(lone.stats()?.busypoll_ns == before);
    Ok(())
}

/// Channels that share a worker count against max_user_channels and max_channels like any.
fn workers_limits_count_sharers() -> Result<()> {
    reload(c"max_channels=4 max_user_channels=3")?;
    let r = (|| -> Result<()> {
        let (chans, _) = pool(3)?;
        expect_errno(Channel::open(), Errno::EMFILE, "a 4th channel of root")?;
        drop(chans);
        let (chans, w) = pool(3)?;
        ensure!(w.channels == 3);
        expect_errno(Channel::open(), Errno::EMFILE, "a 4th after reopening")?;
        // A closed sharer gives its place back.
        let mut chans = chans;
        chans.pop();
        let again = Channel::open()?;
        again.share_worker(&chans[0])?;
        ensure!(worker(&again)?.channels == 3);
        expect_errno(Channel::open(), Errno::EMFILE, "a 4th again")?;
        Ok(())
    })();
    reload(c"")?;
    r
}

/// The module cannot unload while a channel that shares a worker is open, even after the
/// channel that started it closed; it can once all are closed (then it is loaded again).
fn workers_rmmod_busy_then_succeeds() -> Result<()> {
    let name = c"rust_evnotify";
    let (mut chans, w) = pool(3)?;
    expect_errno(
        delete_module(name, DeleteModuleFlags::O_NONBLOCK),
        Errno::EWOULDBLOCK,
        "rmmod with shared channels open",
    )?;
    // The creator goes first; one sharer is left.
    chans.remove(0);
    chans.remove(0);
    expect_errno(
        delete_module(name, DeleteModuleFlags::O_NONBLOCK),
        Errno::EWOULDBLOCK,
        "rmmod with the last sharer open",
    )?;
    let last = chans.pop().context("no channel left")?;
    let n = Notifier::new()?;
    last.attach(0, &n)?;
    last.kick(0, 3)?;
    collect(&n, 3)?;
    ensure!(worker(&last)?.channels == 1);
    drop(last);
    thread_gone(w.thread_pid, "its channels")?;
    // `reload` unloads (failing if the module is busy) and loads it again.
    reload(c"")?;
    let ch = Channel::open()?;
    ch.kick(0, 1)?;
    idle(&ch)?;
    Ok(())
}
