//! Hostile use of eventfds: semaphore eventfds, unbounded kick counts, feedback loops.

use crate::{collect, expect_errno, hang, start_thread, Test};
use anyhow::{ensure, Result};
use evnotify::{sys, Channel, Notifier};
use nix::{
    errno::Errno,
    sys::eventfd::{EfdFlags, EventFd},
};
use std::time::{Duration, Instant};

pub const TESTS: &[Test] = &[
    ("kickfd_semaphore_refused", kickfd_semaphore_refused),
    (
        "notify_semaphore_eventfd_exact",
        notify_semaphore_eventfd_exact,
    ),
    ("kickfd_huge_write_bounded", kickfd_huge_write_bounded),
    ("kickfd_huge_write_no_target", kickfd_huge_write_no_target),
    ("feedback_loop_bounded", feedback_loop_bounded),
    (
        "feedback_loop_two_channels_bounded",
        feedback_loop_two_channels_bounded,
    ),
    (
        "echoes_of_two_slots_wait_together",
        echoes_of_two_slots_wait_together,
    ),
];

/// A semaphore eventfd would give up its count one unit at a time: refused, count intact.
fn kickfd_semaphore_refused() -> Result<()> {
    let ch = Channel::open()?;
    let k = EventFd::from_value_and_flags(3, EfdFlags::EFD_SEMAPHORE | EfdFlags::EFD_NONBLOCK)?;
    expect_errno(
        ch.attach_kickfd(0, &k),
        Errno::EOPNOTSUPP,
        "semaphore kick eventfd",
    )?;
    for _ in 0..3 {
        ensure!(k.read()? == 1, "count changed");
    }
    expect_errno(k.read(), Errno::EAGAIN, "fourth read")?;
    let s = ch.stats()?;
    ensure!(s.kickfds == 0 && s.kicks == 0, "{s:?}");
    // A normal eventfd still works on the same slot.
    let n = Notifier::new()?;
    ch.attach_kickfd(0, &n)?;
    ensure!(ch.stats()?.kickfds == 1, "not hooked");
    Ok(())
}

/// A semaphore eventfd as a notify eventfd: N kicks are N reads of 1.
fn notify_semaphore_eventfd_exact() -> Result<()> {
    let ch = Channel::open()?;
    let n = EventFd::from_value_and_flags(0, EfdFlags::EFD_SEMAPHORE | EfdFlags::EFD_NONBLOCK)?;
    ch.attach(0, &n)?;
    ch.kick(0, 5)?;
    let s = crate::idle(&ch)?;
    ensure!(s.notifies == 5, "{s:?}");
    for i in 0..5 {
        ensure!(n.read()? == 1, "read {i}");
    }
    expect_errno(n.read(), Errno::EAGAIN, "sixth read")
}

const HUGE: u64 = 0xffff_ffff_ffff_fffe;

/// The largest eventfd write: at most `MAX_PENDING` kicks are delivered, the rest coalesced,
/// every one accounted for, in bounded time.
fn kickfd_huge_write_bounded() -> Result<()> {
    let ch = Channel::open()?;
    let (n, k) = (Notifier::new()?, Notifier::new()?);
    ch.attach(0, &n)?;
    ch.attach_kickfd(0, &k)?;
    k.post(HUGE)?;
    let s = ch.stats()?;
    ensure!(
        s.kicks == HUGE && s.fd_kicks == HUGE && s.coalesced == HUGE - sys::MAX_PENDING,
        "{s:?}"
    );
    collect(&n, sys::MAX_PENDING)?;
    let s = crate::idle(&ch)?;
    ensure!(
        s.handled == sys::MAX_PENDING && s.notifies == sys::MAX_PENDING && s.pending == 0,
        "{s:?}"
    );
    ensure!(n.drain()? == 0, "extra notifications");
    Ok(())
}

/// With no target the kicks are dropped at once, not in batches: a reader polling the stats
/// meanwhile never sees part of them pending.
fn kickfd_huge_write_no_target() -> Result<()> {
    let ch = Channel::open()?;
    let k = Notifier::new()?;
    start_thread(&ch)?;
    ch.attach_kickfd(1, &k)?;
    let seen = std::thread::scope(|sc| -> Result<Vec<u64>> {
        let reader = sc.spawn(|| -> Result<Vec<u64>> {
            let mut seen = Vec::new();
            let t = Instant::now();
            loop {
                let s = ch.stats()?;
                if !seen.contains(&s.pending) {
                    seen.push(s.pending);
                }
                if s.handled > 1 {
                    return Ok(seen);
                }
                ensure!(t.elapsed() < hang(), "never handled: {s:?}");
            }
        });
        k.post(HUGE)?;
        crate::join(reader, "stats reader")
    })?;
    let s = crate::idle(&ch)?;
    ensure!(
        s.handled == sys::MAX_PENDING + 1 && s.dropped == sys::MAX_PENDING + 1,
        "{s:?}"
    );
    ensure!(
        seen.iter().all(|p| *p == 0 || *p == sys::MAX_PENDING),
        "taken in pieces: pending went through {seen:?}"
    );
    Ok(())
}

/// One eventfd as both notify and kick eventfd of a slot: each round waits at least 1 ms, so
/// in any span the thread answers at most one kick per millisecond.
fn feedback_loop_bounded() -> Result<()> {
    let ch = Channel::open()?;
    let e = Notifier::new()?;
    ch.attach(0, &e)?;
    ch.attach_kickfd(0, &e)?;
    ch.kick(0, 5)?;
    std::thread::sleep(Duration::from_millis(50));
    let (t0, s0) = (Instant::now(), ch.stats()?);
    std::thread::sleep(Duration::from_millis(500));
    let (s1, span) = (ch.stats()?, t0.elapsed());
    let rounds = s1.handled - s0.handled;
    let most = span.as_millis() as u64 + 2;
    ensure!(rounds > 0, "the loop stopped: {s1:?}");
    ensure!(rounds <= most, "{rounds} rounds in {span:?}: {s0:?} {s1:?}");
    // Five kicks became one waiting echo: four were coalesced, and each later round carries one.
    ensure!(s1.coalesced >= 4, "{s1:?}");
    let id = s1.kicks + s1.timer_ticks;
    ensure!(id == s1.handled + s1.pending + s1.coalesced, "{s1:?}");
    ch.detach_kickfd(0)?;
    let s2 = crate::idle(&ch)?;
    std::thread::sleep(Duration::from_millis(20));
    ensure!(
        ch.stats()?.handled == s2.handled,
        "the loop went on after detach"
    );
    Ok(())
}

/// A loop through two channels: A's notify eventfd is B's kick eventfd and the other way
/// round. Each thread's kicks are echoes of the other's signals: one round per millisecond.
fn feedback_loop_two_channels_bounded() -> Result<()> {
    let (a, b) = (Channel::open()?, Channel::open()?);
    let (e1, e2) = (Notifier::new()?, Notifier::new()?);
    a.attach(0, &e1)?;
    a.attach_kickfd(0, &e2)?;
    b.attach(0, &e2)?;
    b.attach_kickfd(0, &e1)?;
    a.kick(0, 1000)?;
    // Measure the loop, not the burst: wait until A has delivered it (a slow host may take
    // longer than any fixed pause).
    let start = Instant::now();
    while a.stats()?.handled < 1000 {
        ensure!(
            start.elapsed() < hang(),
            "A never delivered its burst: {:?}",
            a.stats()?
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let (t0, a0, b0) = (Instant::now(), a.stats()?, b.stats()?);
    std::thread::sleep(Duration::from_millis(500));
    let (a1, b1, span) = (a.stats()?, b.stats()?, t0.elapsed());
    let most = span.as_millis() as u64 + 2;
    for (name, s0, s1) in [("A", a0, a1), ("B", b0, b1)] {
        let rounds = s1.handled - s0.handled;
        ensure!(rounds > 0, "the loop stopped at {name}: {s1:?}");
        ensure!(
            rounds <= most,
            "{name}: {rounds} kicks in {span:?}: {s0:?} {s1:?}"
        );
    }
    // A's burst reached B as echoes: most were coalesced (one may wait per slot and ms).
    ensure!(b1.coalesced > 0, "B took A's burst uncoalesced: {b1:?}");
    Ok(())
}

/// Echoes of two slots, queued within a moment of each other (so that they usually wait at
/// once: two slots in the channel's echo mask): slots 0 and 1 signal the kick eventfds of
/// slots 2 and 3. Each echo waits at least 1 ms (the header), then is delivered once: nothing
/// lost, nothing coalesced, each slot's count its own.
fn echoes_of_two_slots_wait_together() -> Result<()> {
    let ch = Channel::open()?;
    let (e2, e3, n2, n3) = (
        Notifier::new()?,
        Notifier::new()?,
        Notifier::new()?,
        Notifier::new()?,
    );
    ch.attach(0, &e2)?;
    ch.attach(1, &e3)?;
    ch.attach_kickfd(2, &e2)?;
    ch.attach_kickfd(3, &e3)?;
    ch.attach(2, &n2)?;
    ch.attach(3, &n3)?;
    start_thread(&ch)?;
    for _ in 0..20 {
        let s0 = ch.stats()?;
        let t0 = Instant::now();
        // Back to back: the second echo is queued within the first's millisecond.
        ch.kick(0, 1)?;
        ch.kick(1, 1)?;
        collect(&n2, 1)?;
        collect(&n3, 1)?;
        let took = t0.elapsed();
        let s = crate::idle(&ch)?;
        ensure!(
            took >= Duration::from_millis(1),
            "echoes delivered {took:?} after their kicks, before the 1 ms they wait"
        );
        ensure!(
            s.kicks - s0.kicks == 4
                && s.fd_kicks - s0.fd_kicks == 2
                && s.handled - s0.handled == 4
                && s.coalesced == s0.coalesced,
            "{s0:?} {s:?}"
        );
    }
    ensure!(n2.drain()? + n3.drain()? == 0, "an echo delivered twice");
    Ok(())
}
