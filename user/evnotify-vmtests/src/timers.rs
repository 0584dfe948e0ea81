//! Kernel-originated ticks. No wall-clock assertion but one that holds on any machine: no
//! tick before its time. Otherwise counts, and that a timer stops.

use crate::{collect, expect_errno, hang, settle, Test};
use anyhow::{ensure, Context, Result};
use evnotify::{monotonic_now, sys, Channel, Notifier};
use nix::errno::Errno;
use std::{thread, time::Duration};

pub const TESTS: &[Test] = &[
    ("timer_tick_limited_exact", timer_tick_limited_exact),
    ("timer_cancel_stops", timer_cancel_stops),
    ("timer_runs_beside_kicks", timer_runs_beside_kicks),
    ("timer_close_stops", timer_close_stops),
    ("timer_errors", timer_errors),
    (
        "timer_ticks_delivered_by_the_timer",
        timer_ticks_delivered_by_the_timer,
    ),
    (
        "timer_slots_due_together_by_the_timer",
        timer_slots_due_together_by_the_timer,
    ),
    (
        "timer_ticks_echo_from_the_timer",
        timer_ticks_echo_from_the_timer,
    ),
    ("timer_alarm_hostile_use", timer_alarm_hostile_use),
    ("timer_abstime_never_early", timer_abstime_never_early),
    (
        "timer_abstime_past_catches_up",
        timer_abstime_past_catches_up,
    ),
];

const MS: Duration = Duration::from_millis(1);

/// Checks that nothing more arrives on `n` for a while: the timer really stopped.
fn stays_quiet(ch: &Channel, n: &Notifier) -> Result<()> {
    settle(ch, n)?;
    thread::sleep(50 * MS);
    let late = n.drain()?;
    ensure!(late == 0, "{late} ticks after the timer stopped");
    Ok(())
}

fn timer_tick_limited_exact() -> Result<()> {
    let ch = Channel::open()?;
    let n = Notifier::new()?;
    ch.attach(0, &n)?;
    ch.set_timer(0, MS, 50)?;
    collect(&n, 50)?;
    stays_quiet(&ch, &n)?;
    let s = ch.stats()?;
    ensure!(
        s.timer_ticks == 50 && s.notifies == 50 && s.kicks == 0 && s.timers == 0,
        "{s:?}"
    );
    Ok(())
}

fn timer_cancel_stops() -> Result<()> {
    let ch = Channel::open()?;
    let n = Notifier::new()?;
    ch.attach(3, &n)?;
    ch.set_timer(3, 2 * MS, 0)?;
    let mut got = 0;
    while got < 5 {
        let v = n.wait_timeout(hang())?;
        ensure!(v > 0, "no tick from a running timer");
        got += v;
    }
    ensure!(ch.stats()?.timers == 1, "timer not listed as running");
    ch.cancel_timer(3)?;
    let s = crate::idle(&ch)?;
    got += n.drain()?;
    stays_quiet(&ch, &n)?;
    ensure!(
        s.timer_ticks == got && s.timers == 0,
        "received {got}: {s:?}"
    );
    ch.cancel_timer(3)?; // Cancelling nothing is a no-op.
    Ok(())
}

fn timer_runs_beside_kicks() -> Result<()> {
    const KICKS: u64 = 10_000;
    let ch = Channel::open()?;
    let (nk, nt) = (Notifier::new()?, Notifier::new()?);
    ch.attach(0, &nk)?;
    ch.attach(1, &nt)?;
    ch.set_timer(1, MS, 0)?;
    thread::scope(|s| -> Result<()> {
        let reader = s.spawn(|| collect(&nk, KICKS));
        for _ in 0..KICKS {
            ch.kick(0, 1)?;
        }
        crate::join(reader, "reader")?;
        Ok(())
    })?;
    // The timer kept ticking while the thread served the kicks.
    let v = nt.wait_timeout(hang())?;
    ensure!(v > 0, "no tick while serving kicks");
    ch.cancel_timer(1)?;
    let s = crate::idle(&ch)?;
    let ticks = v + nt.drain()?;
    ensure!(
        s.kicks == KICKS && s.timer_ticks == ticks,
        "ticks read {ticks}: {s:?}"
    );
    ensure!(s.notifies == KICKS + ticks && nk.drain()? == 0, "{s:?}");
    Ok(())
}

/// Waits for the channel's timers to run out of ticks and everything to be delivered.
fn ended(ch: &Channel) -> Result<sys::Stats> {
    let deadline = std::time::Instant::now() + hang();
    loop {
        let s = ch.stats()?;
        if s.timers == 0 && s.pending == 0 {
            return Ok(s);
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "timers never ended: {s:?}"
        );
        thread::sleep(10 * MS);
    }
}

/// A tick the timer delivers itself into an eventfd that is the kick eventfd of another slot
/// is an echo, as one from the thread is: each tick kicks that slot once, counted in
/// `fd_kicks`, and is delivered (or, if one already waits, coalesced) after its delay. With
/// the same channel on both ends, a timer that signalled under the channel's lock would
/// deadlock here.
fn timer_ticks_echo_from_the_timer() -> Result<()> {
    const TICKS: u64 = 20;
    let ch = Channel::open()?;
    let (e, f) = (Notifier::new()?, Notifier::new()?);
    ch.attach(0, &e)?;
    ch.attach_kickfd(1, &e)?;
    ch.attach(1, &f)?;
    ch.set_timer(0, 10 * MS, TICKS)?;
    let s = ended(&ch)?;
    let echoed = f.drain()?;
    ensure!(
        s.timer_ticks == TICKS
            && s.kicks == TICKS
            && s.fd_kicks == TICKS
            && echoed + s.coalesced == TICKS
            && s.notifies == TICKS + echoed
            && e.drain()? == 0,
        "{echoed} echoes read: {s:?}"
    );
    Ok(())
}

/// The timer's own deliveries under hostile use, for lockdep and the splat check: a slot whose
/// notify eventfd is its own kick eventfd (a loop), one whose notify eventfd is another
/// channel's kick eventfd (a chain), a notify eventfd detached and closed while it ticks (the
/// timer may hold its last reference), then the channel closed while all tick. The other
/// channel's counts stay exact.
fn timer_alarm_hostile_use() -> Result<()> {
    let (a, b) = (Channel::open()?, Channel::open()?);
    let own = Notifier::new()?;
    a.attach(0, &own)?;
    a.attach_kickfd(0, &own)?;
    let (chain, echoes) = (Notifier::new()?, Notifier::new()?);
    a.attach(1, &chain)?;
    b.attach_kickfd(0, &chain)?;
    b.attach(0, &echoes)?;
    for slot in 0..3 {
        a.set_timer(slot, MS, 0)?;
    }
    for _ in 0..50 {
        let n = Notifier::new()?;
        a.attach(2, &n)?;
        thread::sleep(2 * MS);
        a.detach(2)?;
        drop(n);
    }
    let first = at_least(&echoes, 1).context("no echo of A's ticks reached B")?;
    drop(a);
    let s = crate::idle(&b)?;
    let read = first + echoes.drain()?;
    ensure!(
        s.kicks == s.fd_kicks
            && s.kicks == s.handled + s.coalesced
            && s.notifies == s.handled
            && read == s.notifies,
        "{read} echoes read: {s:?}"
    );
    thread::sleep(20 * MS);
    ensure!(
        b.stats()?.kicks == s.kicks,
        "echoes after A was closed: {:?}",
        b.stats()?
    );
    Ok(())
}

/// Waits for at least `want` ticks on `n`; returns how many came.
fn at_least(n: &Notifier, want: u64) -> Result<u64> {
    let mut got = 0;
    while got < want {
        let v = n.wait_timeout(hang())?;
        ensure!(v > 0, "hung with {got} of {want} ticks");
        got += v;
    }
    Ok(got)
}

/// A tick that falls due alone on an idle slot is signalled by the timer itself (API version
/// 5), with an eventfd (`notifies`) or without (`dropped`): the thread, which only grants the
/// timer its re-arms, finds no work for it (`wakeups`, `polled`). Counted, not timed: a tick late by a
/// whole period is a catch-up, which is the thread's, so up to half of them may go through it.
fn timer_ticks_delivered_by_the_timer() -> Result<()> {
    const TICKS: u64 = 20;
    let woke = |s: &sys::Stats| s.wakeups + s.polled;
    let ch = Channel::open()?;
    let n = Notifier::new()?;
    ch.attach(0, &n)?;
    ch.set_timer(0, 10 * MS, 0)?;
    at_least(&n, 1)?;
    let before = ch.stats()?;
    at_least(&n, TICKS)?;
    let after = ch.stats()?;
    let woken = woke(&after) - woke(&before);
    ensure!(
        woken * 2 <= TICKS,
        "the thread woke {woken} times for {TICKS} ticks: {before:?} -> {after:?}"
    );
    ch.cancel_timer(0)?;
    let s = crate::idle(&ch)?;
    ensure!(s.notifies == s.timer_ticks && s.dropped == 0, "{s:?}");
    // Without an eventfd, a tick is handled and dropped, by the timer too.
    let quiet = Channel::open()?;
    quiet.kick(63, 1)?;
    let before = crate::idle(&quiet)?;
    quiet.set_timer(1, 10 * MS, TICKS)?;
    let s = ended(&quiet)?;
    ensure!(
        s.timer_ticks == TICKS && s.dropped == TICKS + 1 && s.notifies == 0,
        "{s:?}"
    );
    let woken = woke(&s) - woke(&before);
    ensure!(
        woken * 2 <= TICKS,
        "the thread woke {woken} times for {TICKS} dropped ticks: {s:?}"
    );
    Ok(())
}

/// The ticks of every slot that fall due together are all signalled by the timer (API version
/// 9; 8 slots at most before, the rest left to the thread at every expiry), one signal per
/// eventfd: 64 timers started on one grid (`EVNOTIFY_TIMER_ABSTIME`), each slot with its own
/// eventfd and a tick limit, read one slot after the other; then 8 slots sharing one eventfd,
/// of which the thread delivers all but one tick per period, so it wakes for most of them (at
/// least 3 of 10 asked: it may take two periods' ticks at once). Counted, as above: a late expiry may leave a catch-up to the thread, so with 64
/// eventfds it may wake for up to half of the periods. Last, 9 slots (more than the timer's
/// batch of 8 eventfds held on its stack), one without an eventfd: its ticks are dropped, the
/// others' all signalled.
fn timer_slots_due_together_by_the_timer() -> Result<()> {
    const TICKS: u64 = 10;
    const PERIOD: Duration = Duration::from_millis(10);
    let woke = |s: &sys::Stats| s.wakeups + s.polled;
    // Started on a grid far enough ahead for 64 calls in the emulated VM (checked).
    let start = |ch: &Channel, slots: std::ops::Range<u32>| -> Result<()> {
        let first = monotonic_now() + 20 * PERIOD;
        for slot in slots {
            ch.set_timer_at(slot, first, PERIOD, TICKS)?;
        }
        ensure!(
            monotonic_now() < first,
            "starting the timers took more than {:?}",
            20 * PERIOD
        );
        Ok(())
    };
    let ch = Channel::open()?;
    // The thread is started (and slot 63's kick dropped) before: not in the window.
    crate::start_thread(&ch)?;
    let ns = (0..sys::NR_SLOTS)
        .map(|_| Notifier::new())
        .collect::<Result<Vec<_>, _>>()?;
    for (slot, n) in (0..).zip(&ns) {
        ch.attach(slot, n)?;
    }
    let before = crate::idle(&ch)?;
    start(&ch, 0..sys::NR_SLOTS)?;
    for (slot, n) in ns.iter().enumerate() {
        let got = at_least(n, TICKS).with_context(|| format!("slot {slot}"))?;
        ensure!(got == TICKS, "slot {slot}: {got} ticks, {TICKS} asked");
    }
    let s = ended(&ch)?;
    let all = u64::from(sys::NR_SLOTS) * TICKS;
    ensure!(
        s.timer_ticks - before.timer_ticks == all && s.notifies - before.notifies == all,
        "{all} ticks asked: {before:?} -> {s:?}"
    );
    let woken = woke(&s) - woke(&before);
    ensure!(
        woken * 2 <= TICKS,
        "the thread woke {woken} times for {TICKS} periods of 64 ticks: {before:?} -> {s:?}"
    );
    // One eventfd on 8 slots: signalled once per expiry by the timer, 7 times by the thread.
    let ch = Channel::open()?;
    crate::start_thread(&ch)?;
    let n = Notifier::new()?;
    for slot in 0..8 {
        ch.attach(slot, &n)?;
    }
    let before = crate::idle(&ch)?;
    start(&ch, 0..8)?;
    let got = at_least(&n, 8 * TICKS)?;
    let s = ended(&ch)?;
    ensure!(
        got == 8 * TICKS && s.notifies - before.notifies == 8 * TICKS,
        "{got} ticks read, {} asked: {before:?} -> {s:?}",
        8 * TICKS
    );
    // About once a period; fewer when it takes two periods' ticks at once, on a host that ran
    // its vCPU late (5 of 10 in a CI run). A timer that signalled all 8 would leave it only
    // catch-ups.
    let woken = woke(&s) - woke(&before);
    ensure!(
        woken * 10 >= TICKS * 3,
        "the thread woke {woken} times for {TICKS} periods of 8 ticks on one eventfd: \
         {before:?} -> {s:?}"
    );
    let ch = Channel::open()?;
    crate::start_thread(&ch)?;
    for (slot, n) in (0..8).zip(&ns) {
        ch.attach(slot, n)?;
    }
    let before = crate::idle(&ch)?;
    start(&ch, 0..9)?;
    for (slot, n) in ns[..8].iter().enumerate() {
        let got = at_least(n, TICKS).with_context(|| format!("slot {slot} of 9"))?;
        ensure!(got == TICKS, "slot {slot} of 9: {got} ticks, {TICKS} asked");
    }
    let s = ended(&ch)?;
    let d = |f: fn(&sys::Stats) -> u64| f(&s) - f(&before);
    ensure!(
        d(|s| s.timer_ticks) == 9 * TICKS
            && d(|s| s.notifies) == 8 * TICKS
            && d(|s| s.dropped) == TICKS
            && d(|s| s.handled) == 9 * TICKS,
        "9 slots, one without an eventfd: {before:?} -> {s:?}"
    );
    Ok(())
}

fn timer_close_stops() -> Result<()> {
    for _ in 0..16 {
        let ch = Channel::open()?;
        let n = Notifier::new()?;
        ch.attach(0, &n)?;
        for slot in 0..sys::NR_SLOTS {
            ch.set_timer(slot, MS, 0)?;
        }
        ensure!(n.wait_timeout(hang())? > 0, "no tick from 64 timers");
        // Closing with 64 running timers stops them all with the thread.
    }
    Ok(())
}

fn timer_errors() -> Result<()> {
    let ch = Channel::open()?;
    let raw = |t: sys::Timer| crate::errors::raw(&ch, sys::IOC_TIMER, &t as *const _ as usize);
    let ok = sys::Timer {
        period_ns: sys::MIN_PERIOD_NS,
        ..Default::default()
    };
    for period_ns in [1, sys::MIN_PERIOD_NS - 1, sys::MAX_PERIOD_NS + 1, u64::MAX] {
        expect_errno(
            raw(sys::Timer { period_ns, ..ok }),
            Errno::EINVAL,
            &format!("period {period_ns}"),
        )?;
    }
    expect_errno(
        raw(sys::Timer {
            slot: sys::NR_SLOTS,
            ..ok
        }),
        Errno::EINVAL,
        "slot 64",
    )?;
    let abs = sys::Timer {
        flags: sys::TIMER_ABSTIME,
        ..ok
    };
    for (bad, what) in [
        (sys::Timer { flags: 2, ..ok }, "flags 2"),
        (sys::Timer { flags: !0, ..ok }, "every flag"),
        (
            sys::Timer { start_ns: 1, ..ok },
            "start_ns without the flag",
        ),
        (
            sys::Timer {
                period_ns: 0,
                ..abs
            },
            "a cancel with the flag",
        ),
        (
            sys::Timer {
                period_ns: sys::MIN_PERIOD_NS - 1,
                ..abs
            },
            "the flag, a short period",
        ),
        (
            sys::Timer {
                start_ns: sys::MAX_START_NS + 1,
                ..abs
            },
            "start_ns past the bound",
        ),
        (
            sys::Timer {
                start_ns: u64::MAX,
                ..abs
            },
            "start_ns u64::MAX",
        ),
        (
            sys::Timer {
                slot: sys::NR_SLOTS,
                ..abs
            },
            "the flag, slot 64",
        ),
    ] {
        expect_errno(raw(bad), Errno::EINVAL, what)?;
    }
    // The library's call answers a start beyond the bound as the kernel does.
    expect_errno(
        ch.set_timer_at(0, Duration::from_nanos(sys::MAX_START_NS + 1), MS, 0),
        Errno::EINVAL,
        "set_timer_at past the bound",
    )?;
    expect_errno(
        crate::errors::raw(&ch, sys::IOC_TIMER, 0),
        Errno::EFAULT,
        "NULL",
    )?;
    let s = ch.stats()?;
    ensure!(s.timers == 0, "a rejected timer runs: {s:?}");
    // The bounds themselves are accepted.
    raw(sys::Timer {
        period_ns: sys::MAX_PERIOD_NS,
        ..ok
    })?;
    ensure!(
        ch.stats()?.timers == 1,
        "the longest period was not accepted"
    );
    raw(sys::Timer {
        slot: 1,
        start_ns: sys::MAX_START_NS,
        ..abs
    })?;
    ensure!(ch.stats()?.timers == 2, "the latest start was not accepted");
    Ok(())
}

/// Reads the ticks of a timer whose first tick is at `first`, every `period`, from `got` read
/// already until `want` have come, checking that each read comes no earlier than its last
/// tick's time. Returns the counts read.
fn read_on_time(
    n: &Notifier,
    first: Duration,
    period: Duration,
    mut got: u64,
    want: u64,
) -> Result<Vec<u64>> {
    let mut reads = vec![];
    while got < want {
        let v = n.wait_timeout(hang())?;
        let now = monotonic_now();
        ensure!(v > 0, "hung with {got} of {want} ticks");
        got += v;
        let due = first + period * (got - 1) as u32;
        ensure!(
            now >= due,
            "tick {got} read at {now:?}, before its time {due:?}"
        );
        reads.push(v);
    }
    Ok(reads)
}

fn timer_abstime_never_early() -> Result<()> {
    let ch = Channel::open()?;
    let n = Notifier::new()?;
    ch.attach(0, &n)?;
    // Ahead by more than the call takes, on a period the alarm's spacing does not round.
    let period = 3 * MS;
    let first = monotonic_now() + 40 * MS;
    ch.set_timer_at(0, first, period, 20)?;
    let reads = read_on_time(&n, first, period, 0, 20)?;
    ensure!(reads.iter().sum::<u64>() == 20, "reads {reads:?}");
    stays_quiet(&ch, &n)?;
    let s = ch.stats()?;
    ensure!(s.timer_ticks == 20 && s.timers == 0, "{s:?}");
    // A running timer replaced by one started at a given time: the ticks the first owes
    // come first (read here), then the new grid's, none early.
    ch.set_timer(0, 2 * MS, 0)?;
    ensure!(n.wait_timeout(hang())? > 0, "no tick from a running timer");
    let first = monotonic_now() + 40 * MS;
    ch.set_timer_at(0, first, period, 0)?;
    crate::idle(&ch)?;
    n.drain()?;
    read_on_time(&n, first, period, 0, 5)?;
    ch.cancel_timer(0)?;
    Ok(())
}

fn timer_abstime_past_catches_up() -> Result<()> {
    let ch = Channel::open()?;
    let n = Notifier::new()?;
    ch.attach(0, &n)?;
    // A second ago (or at boot), unlimited: every tick since, taken at once (counted in
    // `timer_ticks` by the first one read; the thread signals them one by one, so a read may
    // see part of them).
    let before = monotonic_now();
    let start = before.saturating_sub(Duration::from_secs(1));
    ch.set_timer_at(0, start, 10 * MS, 0)?;
    let owed = ((before - start).as_nanos() / (10 * MS).as_nanos()) as u64 + 1;
    let first = n.wait_timeout(hang())?;
    let s = ch.stats()?;
    ensure!(
        first > 0 && s.timer_ticks >= owed,
        "first read {first}, {owed} ticks due since {start:?}: {s:?}"
    );
    read_on_time(&n, start, 10 * MS, first, owed + 3)?;
    ch.cancel_timer(0)?;
    let base = crate::idle(&ch)?.timer_ticks;
    n.drain()?;
    // 100 ms past, limited to 5: the 5 at once, then nothing.
    ch.set_timer_at(0, monotonic_now().saturating_sub(100 * MS), 10 * MS, 5)?;
    let first = n.wait_timeout(hang())?;
    let s2 = ch.stats()?;
    ensure!(
        first > 0 && s2.timer_ticks - base == 5 && s2.timers == 0,
        "a timer of 5 ticks, 10 due: first read {first}, {s2:?}"
    );
    collect(&n, 5 - first)?;
    stays_quiet(&ch, &n)?;
    Ok(())
}
