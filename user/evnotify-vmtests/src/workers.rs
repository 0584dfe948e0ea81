//! Shared workers (API v3): `EVNOTIFY_IOC_SHARE_WORKER` and `EVNOTIFY_IOC_WORKER`, the
//! fdinfo lines, a fresh channel's own worker, sharing one and EBUSY; with the helpers the
//! other `workers_*.rs` files use. Those test bad requests and races (`workers_share.rs`), a
//! worker outliving the channel that started it and fds passed to another process
//! (`workers_lifetime.rs`), conservation while channels of one worker close under load and
//! fairness between a flooded and a quiet channel (`workers_load.rs`), the per-worker
//! busy-poll limit, the channel limits and rmmod (`workers_limits.rs`).
//!
//! Every wait has a deadline ([`hang`]); none asserts a speed.

use crate::{collect, errors::raw, expect_errno, hang, idle, settle, start_thread, Test};
use anyhow::{ensure, Context, Result};
use evnotify::{sys, Channel, Notifier, WorkerInfo};
use nix::errno::Errno;
use std::time::{Duration, Instant};

pub const TESTS: &[Test] = &[
    ("workers_fresh_then_own", workers_fresh_then_own),
    ("workers_share_same_worker", workers_share_same_worker),
    ("workers_share_starts_worker", workers_share_starts_worker),
    ("workers_share_ebusy", workers_share_ebusy),
];

/// The value of `key:\t` in the channel's fdinfo.
pub(crate) fn fdinfo_field(ch: &Channel, key: &str) -> Result<String> {
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
pub(crate) fn worker(ch: &Channel) -> Result<WorkerInfo> {
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
pub(crate) fn share_raw(ch: &Channel, req: sys::Share) -> nix::Result<i32> {
    raw(ch, sys::IOC_SHARE_WORKER, &req as *const _ as usize)
}

/// Waits until the kernel thread `pid` has exited (its reaping is asynchronous).
pub(crate) fn thread_gone(pid: i32, what: &str) -> Result<()> {
    let t = Instant::now();
    while crate::lifecycle::comm(pid).is_ok_and(|c| c.starts_with("evnotify/")) {
        ensure!(t.elapsed() < hang(), "thread {pid} outlived {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// Opens `n` channels that all use one worker, started by the first; returns them and it.
pub(crate) fn pool(n: usize) -> Result<(Vec<Channel>, WorkerInfo)> {
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
