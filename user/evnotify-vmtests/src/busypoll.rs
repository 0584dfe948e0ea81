//! Busy polling: the limit's bounds, and that the thread spins only when it is allowed to.

use crate::{collect, expect_errno, settle, Test};
use anyhow::{ensure, Result};
use evnotify::{sys, Channel, Notifier};
use nix::{
    errno::Errno,
    sched::{sched_setaffinity, CpuSet},
    unistd::Pid,
};
use std::time::Duration;

pub const TESTS: &[Test] = &[
    ("busypoll_default_and_set", busypoll_default_and_set),
    ("busypoll_errors", busypoll_errors),
    ("busypoll_off_never_polls", busypoll_off_never_polls),
    ("busypoll_catches_ping_pong", busypoll_catches_ping_pong),
    (
        "busypoll_timer_alone_never_polls",
        busypoll_timer_alone_never_polls,
    ),
    ("busypoll_module_parameter", busypoll_module_parameter),
    (
        "busypoll_deadline_in_spin_never_polls",
        busypoll_deadline_in_spin_never_polls,
    ),
    (
        "busypoll_polls_every_channel_of_its_worker",
        busypoll_polls_every_channel_of_its_worker,
    ),
    (
        "busypoll_other_channels_ticks_in_spin",
        busypoll_other_channels_ticks_in_spin,
    ),
    ("busypoll_echo_in_spin", busypoll_echo_in_spin),
    (
        "busypoll_spin_after_last_signalled_tick",
        busypoll_spin_after_last_signalled_tick,
    ),
];

/// The `busypoll_ns` module parameter's default.
const DEFAULT_NS: u32 = 200_000;
const ROUND_TRIPS: u64 = 500;

fn busypoll_default_and_set() -> Result<()> {
    let ch = Channel::open()?;
    ensure!(ch.stats()?.busypoll_ns == DEFAULT_NS, "{:?}", ch.stats()?);
    ensure!(
        ch.fdinfo()?
            .contains(&format!("busypoll_ns:\t{DEFAULT_NS}\n")),
        "{}",
        ch.fdinfo()?
    );
    for ns in [0, 1, sys::MAX_BUSYPOLL_NS] {
        ch.set_busypoll(Duration::from_nanos(ns.into()))?;
        ensure!(ch.stats()?.busypoll_ns == ns, "{:?}", ch.stats()?);
    }
    Ok(())
}

fn busypoll_errors() -> Result<()> {
    let ch = Channel::open()?;
    let raw =
        |r: sys::BusyPoll| crate::errors::raw(&ch, sys::IOC_BUSYPOLL, &r as *const _ as usize);
    let ok = sys::BusyPoll {
        limit_ns: 1000,
        ..Default::default()
    };
    for limit_ns in [sys::MAX_BUSYPOLL_NS + 1, u32::MAX] {
        expect_errno(
            raw(sys::BusyPoll { limit_ns, ..ok }),
            Errno::EINVAL,
            &format!("limit {limit_ns}"),
        )?;
    }
    expect_errno(
        raw(sys::BusyPoll { flags: 1, ..ok }),
        Errno::EINVAL,
        "flags",
    )?;
    expect_errno(
        raw(sys::BusyPoll { reserved: 1, ..ok }),
        Errno::EINVAL,
        "reserved",
    )?;
    expect_errno(
        crate::errors::raw(&ch, sys::IOC_BUSYPOLL, 0),
        Errno::EFAULT,
        "NULL",
    )?;
    expect_errno(
        ch.set_busypoll(Duration::from_secs(5)),
        Errno::EINVAL,
        "5 s through the library",
    )?;
    let s = ch.stats()?;
    ensure!(
        s.busypoll_ns == DEFAULT_NS,
        "a rejected limit was kept: {s:?}"
    );
    Ok(())
}

/// Runs `ROUND_TRIPS` kick-and-wait round trips, this thread on CPU 0 and the channel's thread on
/// CPU 1, where a kick can only be caught by polling if the thread spins between round trips.
fn ping_pong_across_cpus(ch: &Channel) -> Result<sys::Stats> {
    let n = Notifier::new()?;
    ch.attach(0, &n)?;
    let mut me = CpuSet::new();
    me.set(0)?;
    sched_setaffinity(Pid::from_raw(0), &me)?;
    // The thread starts with the first kick.
    ch.kick(0, 1)?;
    collect(&n, 1)?;
    ch.pin_thread(1)?;
    for _ in 0..ROUND_TRIPS {
        ch.kick(0, 1)?;
        collect(&n, 1)?;
    }
    me.set(1)?;
    sched_setaffinity(Pid::from_raw(0), &me)?;
    let s = settle(ch, &n)?;
    ensure!(
        s.handled == ROUND_TRIPS + 1 && s.notifies == ROUND_TRIPS + 1,
        "{s:?}"
    );
    Ok(s)
}

fn busypoll_off_never_polls() -> Result<()> {
    let ch = Channel::open()?;
    ch.set_busypoll(Duration::ZERO)?;
    let s = ping_pong_across_cpus(&ch)?;
    ensure!(s.polled == 0, "polled with polling off: {s:?}");
    ensure!(s.wakeups >= 1, "{s:?}");
    Ok(())
}

fn busypoll_catches_ping_pong() -> Result<()> {
    // Each round trip leaves the thread idle for one wake-up of this thread: far below 1 ms
    // even under emulation, so the adaptive window grows until its spins catch the kicks. A
    // host busy enough to stall the guest's CPUs past the limit can spoil a whole block, so
    // blocks are tried on fresh channels until one catches, until a hang's deadline (a
    // module that never polls reaches it).
    let t = std::time::Instant::now();
    // The channel stays open for the check of its idle thread below.
    let (_ch, s) = loop {
        let ch = Channel::open()?;
        ch.set_busypoll(Duration::from_nanos(sys::MAX_BUSYPOLL_NS.into()))?;
        let s = ping_pong_across_cpus(&ch)?;
        if s.polled > 0 {
            break (ch, s);
        }
        ensure!(
            t.elapsed() < crate::hang(),
            "never caught a kick by polling: {s:?}"
        );
    };
    ensure!(s.polled + s.wakeups <= ROUND_TRIPS + 2, "{s:?}");
    // Once the traffic stops, the thread stops spinning and sleeps.
    std::thread::sleep(Duration::from_millis(100));
    let st = crate::lifecycle::proc_state(s.thread_pid)?;
    ensure!(st == 'S', "idle thread is in state {st}, want S");
    Ok(())
}

/// Timer ticks alone never count as caught by a spin, and never keep the window open: the
/// thread sleeps until their deadlines, even right after a ping-pong grew the window.
fn busypoll_timer_alone_never_polls() -> Result<()> {
    let ch = Channel::open()?;
    ch.set_busypoll(Duration::from_nanos(sys::MAX_BUSYPOLL_NS.into()))?;
    let before = ping_pong_across_cpus(&ch)?;
    let n = Notifier::new()?;
    ch.attach(1, &n)?;
    ch.set_timer(1, Duration::from_millis(1), 50)?;
    collect(&n, 50)?;
    let after = ch.wait_idle(crate::hang())?;
    ensure!(
        after.polled == before.polled,
        "timer ticks counted as polled: {before:?} {after:?}"
    );
    Ok(())
}

/// Ticks that the alarm queues for the thread while it spins for the channel's next kick (a
/// timer whose first ticks are long past, set right after a polled answer: more than one tick
/// due is the thread's to deliver) end the spin as a deadline does, not as an event: they are
/// not counted in `polled`.
fn busypoll_deadline_in_spin_never_polls() -> Result<()> {
    let ch = Channel::open()?;
    ch.set_busypoll(Duration::from_nanos(sys::MAX_BUSYPOLL_NS.into()))?;
    let (k, n) = (Notifier::new()?, Notifier::new()?);
    ch.attach(0, &k)?;
    ch.attach(1, &n)?;
    for round in 0..10 {
        // Kicks that come back after the window but within the limit grow it: the thread
        // spins for most of a millisecond after each answer.
        for _ in 0..20 {
            std::thread::sleep(Duration::from_micros(500));
            ch.kick(0, 1)?;
            collect(&k, 1)?;
        }
        let before = ch.stats()?;
        let past = evnotify::monotonic_now().saturating_sub(Duration::from_millis(5));
        ch.set_timer_at(1, past, Duration::from_millis(1), 3)?;
        collect(&n, 3)?;
        let after = crate::idle(&ch)?;
        ensure!(
            after.polled == before.polled,
            "round {round}: ticks counted as polled: {before:?} {after:?}"
        );
    }
    Ok(())
}

/// New channels take the `busypoll_ns` module parameter, clamped to the maximum.
fn busypoll_module_parameter() -> Result<()> {
    let r = (|| -> Result<()> {
        for (param, want) in [
            (c"busypoll_ns=0", 0),
            (c"busypoll_ns=5000000", sys::MAX_BUSYPOLL_NS),
        ] {
            crate::faults::reload(param)?;
            let s = Channel::open()?.stats()?;
            ensure!(s.busypoll_ns == want, "{param:?}: {s:?}");
        }
        Ok(())
    })();
    crate::faults::reload(c"")?;
    r?;
    ensure!(Channel::open()?.stats()?.busypoll_ns == DEFAULT_NS);
    Ok(())
}

/// Channel A and channel B, which shares A's worker (on CPU 1), each with a notify eventfd on
/// slot 0; the caller on CPU 0.
fn shared_pair() -> Result<(Channel, Channel, Notifier, Notifier)> {
    let mut me = CpuSet::new();
    me.set(0)?;
    sched_setaffinity(Pid::from_raw(0), &me)?;
    let a = Channel::open()?;
    a.set_busypoll(Duration::from_nanos(sys::MAX_BUSYPOLL_NS.into()))?;
    let b = Channel::open()?;
    b.share_worker(&a)?;
    let (na, nb) = (Notifier::new()?, Notifier::new()?);
    a.attach(0, &na)?;
    b.attach(0, &nb)?;
    a.pin_thread(1)?;
    Ok((a, b, na, nb))
}

/// Back-to-back round trips on `a`, which grow its worker's window: after each, the worker
/// spins for `a`'s next kick.
fn ping_pong(a: &Channel, na: &Notifier, n: usize) -> Result<()> {
    for _ in 0..n {
        a.kick(0, 1)?;
        collect(na, 1)?;
    }
    Ok(())
}

/// Round trips on `a` for 300 ms while slot 0 of `ticker` ticks every millisecond; then the
/// timer is cancelled and both are left to go idle. Returns their stats (the ticker's, `a`'s),
/// once `a`'s worker is seen to have spun. The ticker's last signal reaches its target before
/// the ticker is idle (a kick eventfd's hook takes it in the signal), and an echo that waits
/// counts in its channel's pending.
fn ping_pong_while_ticking(
    a: &Channel,
    na: &Notifier,
    ticker: &Channel,
) -> Result<(sys::Stats, sys::Stats)> {
    ticker.set_timer(0, Duration::from_millis(1), 0)?;
    let t0 = std::time::Instant::now();
    while t0.elapsed() < Duration::from_millis(300) {
        ping_pong(a, na, 10)?;
    }
    ticker.cancel_timer(0)?;
    let st = crate::idle(ticker)?;
    let sa = crate::idle(a)?;
    ensure!(sa.polled > 0, "the worker never spun for A: {sa:?}");
    Ok((st, sa))
}

/// "Busy polling belongs to the worker and polls all its channels", and `polled` counts "on
/// the first channel with work that the worker serves after ... a busy poll that caught an
/// event": a kick of B while the worker spins for A's next kick ends that spin and is served
/// at once, counted in B's `polled`. Each B kick is counted once at most, in `polled` or
/// `wakeups` (neither when the worker was busy, not spinning or asleep, when it came).
fn busypoll_polls_every_channel_of_its_worker() -> Result<()> {
    const ROUNDS: u64 = 20;
    const TRIES: u64 = 5;
    let (a, b, na, nb) = shared_pair()?;
    // Until the window has grown: a slow kernel (make stress's debug build) may need more
    // round trips than the test kernels' 200 (it once caught none in 200).
    for _ in 0..5 {
        ping_pong(&a, &na, 200)?;
        if a.stats()?.polled > 0 {
            break;
        }
    }
    let a0 = a.stats()?;
    ensure!(
        a0.polled > 0,
        "the worker never spun for A in 1000 round trips: {a0:?}"
    );
    // Up to TRIES rounds, until a spin caught one: the coverage VM (KCOV on, its collector
    // draining meanwhile) once saw none in 20, where the test kernels see 17 to 20.
    let mut sent = 0;
    let mut s = crate::idle(&b)?;
    for _ in 0..TRIES {
        for _ in 0..ROUNDS {
            ping_pong(&a, &na, 20)?;
            b.kick(0, 1)?;
            collect(&nb, 1)?;
        }
        sent += ROUNDS;
        s = crate::idle(&b)?;
        if s.polled > 0 {
            break;
        }
    }
    println!(
        "# B's {sent} kicks after A's round trips: polled {}, wakeups {}",
        s.polled, s.wakeups
    );
    ensure!(
        s.handled == sent && s.notifies == sent && s.polled + s.wakeups <= sent,
        "{s:?}"
    );
    ensure!(
        s.polled > 0,
        "no kick of B was caught by the spins for A's next kick in {sent} tries: B {s:?}, \
         A {:?}",
        a.stats()?
    );
    ensure!(nb.drain()? == 0, "B's kicks delivered twice");
    Ok(())
}

/// Ticks of B (a 1 ms timer whose slot signals a process too, so that its alarm queues them on
/// the worker rather than signalling them itself) that fall due while the worker spins for A's
/// next kick end the spin as a deadline, and are all delivered: each tick one signal and one
/// eventfd count, none lost, and A's round trips exact meanwhile.
fn busypoll_other_channels_ticks_in_spin() -> Result<()> {
    let sig = nix::libc::SIGRTMIN() + 3;
    let sfd = evnotify::catch_signal(sig)?;
    let (a, b, na, nb) = shared_pair()?;
    b.set_signal(0, sig)?;
    let (s, _) = ping_pong_while_ticking(&a, &na, &b)?;
    ensure!(
        s.timer_ticks > 0 && s.handled == s.timer_ticks && s.dropped == 0,
        "{s:?}"
    );
    ensure!(
        s.signals == s.timer_ticks && s.notifies == s.timer_ticks,
        "{s:?}"
    );
    let got = collect(&nb, s.timer_ticks)?;
    ensure!(got == s.timer_ticks, "{got} counts for {s:?}");
    let mut signals = 0;
    while sfd.try_read()?.is_some() {
        signals += 1;
    }
    // Real-time signals queue: one each.
    ensure!(signals == s.timer_ticks, "{signals} signals for {s:?}");
    Ok(())
}

/// Echoes that arrive while the worker spins for the channel's next kick: channel C's 1 ms
/// timer signals A's kick eventfd (an echo, which waits at least 1 ms: A stays idle meanwhile,
/// and its spin is poked for nothing) while A's round trips keep its worker spinning. Every
/// signal of C becomes one kick of A's slot 1, delivered or coalesced, and A's round trips
/// stay exact.
fn busypoll_echo_in_spin() -> Result<()> {
    let (a, _b, na, _nb) = shared_pair()?;
    let (k, n1) = (Notifier::new()?, Notifier::new()?);
    a.attach_kickfd(1, &k)?;
    a.attach(1, &n1)?;
    let c = Channel::open()?;
    c.attach(0, &k)?;
    let (sc, sa) = ping_pong_while_ticking(&a, &na, &c)?;
    ensure!(
        sc.notifies > 0 && sc.notifies == sc.timer_ticks,
        "C: {sc:?}"
    );
    ensure!(
        sa.fd_kicks == sc.notifies,
        "C signalled A's kick eventfd {} times, A took {} kicks from it: {sa:?}",
        sc.notifies,
        sa.fd_kicks
    );
    ensure!(
        sa.kicks == sa.handled + sa.coalesced && sa.pending == 0 && sa.dropped == 0,
        "{sa:?}"
    );
    let got = n1.drain()?;
    ensure!(
        got + sa.coalesced == sc.notifies,
        "slot 1 got {got} of {} echoes ({} coalesced): {sa:?}",
        sc.notifies,
        sa.coalesced
    );
    println!(
        "# busypoll_echo_in_spin: {} echoes, {got} delivered, {} coalesced; A polled {}",
        sc.notifies, sa.coalesced, sa.polled
    );
    Ok(())
}

/// A finite timer whose slot also signals a process (so that the alarm queues every tick on the
/// thread, a deadline): after its last tick the channel has no deadline, and the thread spins
/// for its next kick if its window is open (a deadline that ends a spin closes it, so it
/// usually is not: 0 of 20 such kicks were caught, on both kernels). Each round: all ticks
/// delivered (an eventfd count and a signal each), and the next round trip exact.
fn busypoll_spin_after_last_signalled_tick() -> Result<()> {
    const TICKS: u64 = 2;
    let sig = nix::libc::SIGRTMIN() + 3;
    let sfd = evnotify::catch_signal(sig)?;
    let (a, _b, na, _nb) = shared_pair()?;
    let n1 = Notifier::new()?;
    a.attach(1, &n1)?;
    a.set_signal(1, sig)?;
    let mut caught = 0;
    for round in 0..20 {
        ping_pong(&a, &na, 20)?;
        a.set_timer(1, Duration::from_millis(1), TICKS)?;
        collect(&n1, TICKS)?;
        for i in 0..TICKS {
            ensure!(
                sfd.wait_timeout(crate::hang())?.is_some(),
                "round {round}: signal {i} of {TICKS} never came"
            );
        }
        let polled = a.stats()?.polled;
        ping_pong(&a, &na, 1)?;
        caught += u32::from(a.stats()?.polled > polled);
    }
    let s = crate::idle(&a)?;
    ensure!(
        s.timer_ticks == 20 * TICKS && s.signals == s.timer_ticks,
        "{s:?}"
    );
    println!("# busypoll_spin_after_last_signalled_tick: {caught} of 20 kicks caught");
    ensure!(
        n1.drain()? == 0 && sfd.try_read()?.is_none(),
        "a tick twice"
    );
    Ok(())
}
