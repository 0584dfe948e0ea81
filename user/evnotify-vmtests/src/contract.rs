//! Promises of the README and header that need a controlled schedule: round robin with a
//! bounded batch, timer catch-up, every documented range at both ends, and the counters with
//! several slots busy at once. The channel's thread is held off its CPU by a `SCHED_FIFO`
//! thread where a test needs it quiet, so each check is on counts, never on timing.

use crate::{collect, expect_errno, hang, start_thread, Test};
use anyhow::{bail, ensure, Context, Result};
use evnotify::{sys, Channel, Notifier};
use nix::{
    errno::Errno,
    sched::{sched_setaffinity, CpuSet},
    sys::eventfd::{EfdFlags, EventFd},
    unistd::Pid,
};
use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

pub const TESTS: &[Test] = &[
    ("round_robin_bounded_batch", round_robin_bounded_batch),
    ("timer_catch_up_exact", timer_catch_up_exact),
    ("timer_catch_up_unlimited", timer_catch_up_unlimited),
    ("ranges_at_both_ends", ranges_at_both_ends),
    ("stats_across_slots", stats_across_slots),
    (
        "timer_alarm_paced_by_the_thread",
        timer_alarm_paced_by_the_thread,
    ),
    ("timer_alarm_paced_by_reads", timer_alarm_paced_by_reads),
    (
        "timer_alarm_not_paced_by_other_readers",
        timer_alarm_not_paced_by_other_readers,
    ),
    (
        "timer_alarm_follows_its_reader",
        timer_alarm_follows_its_reader,
    ),
    (
        "timer_armed_where_set_while_spinning",
        timer_armed_where_set_while_spinning,
    ),
];

/// The CPU the channel's thread is pinned to; the test's own thread runs on CPU 0.
const CPU: usize = 1;

/// Pins the calling thread to `cpu`.
fn pin_me(cpu: usize) -> Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu)?;
    Ok(sched_setaffinity(Pid::from_raw(0), &set)?)
}

/// Makes the calling thread `SCHED_FIFO` at `prio`.
fn fifo(prio: i32) -> Result<()> {
    let p = libc::sched_param {
        sched_priority: prio,
    };
    // SAFETY: `p` is a valid `sched_param` for the call.
    Errno::result(unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &p) })?;
    Ok(())
}

/// A channel with its thread started and pinned to [`CPU`], and the caller on CPU 0.
///
/// A real-time thread then holds [`CPU`] for at most a few hundred milliseconds: the fair
/// server that protects normal tasks from real-time ones (50 ms a second in Linux 7.3) is
/// deferred until they have starved for most of a second, so it does not let the channel's
/// thread run meanwhile.
pub(crate) fn pinned_channel() -> Result<Channel> {
    pin_me(0)?;
    let ch = Channel::open()?;
    start_thread(&ch)?;
    ch.pin_thread(CPU)?;
    // Busy polling would keep the thread spinning where the hog wants the CPU.
    ch.set_busypoll(Duration::ZERO)?;
    Ok(ch)
}

/// Runs `f` while a `SCHED_FIFO` thread spins on [`CPU`], so that the channel's thread cannot
/// run there; the spin ends when `f` returns, or after [`hang`] at the latest.
pub(crate) fn with_cpu_held<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    let stop = AtomicBool::new(false);
    let ready = AtomicBool::new(false);
    std::thread::scope(|sc| {
        let h = sc.spawn(|| -> Result<()> {
            pin_me(CPU)?;
            fifo(50)?;
            ready.store(true, Ordering::SeqCst);
            let t = Instant::now();
            while !stop.load(Ordering::Relaxed) && t.elapsed() < hang() {
                std::hint::spin_loop();
            }
            Ok(())
        });
        let t = Instant::now();
        while !ready.load(Ordering::SeqCst) && !h.is_finished() && t.elapsed() < hang() {
            std::thread::sleep(Duration::from_millis(1));
        }
        let r = if ready.load(Ordering::SeqCst) {
            f()
        } else {
            Err(anyhow::anyhow!("the CPU hog never started"))
        };
        stop.store(true, Ordering::Relaxed);
        crate::join(h, "CPU hog")?;
        r
    })
}

/// Slot 0 holds a backlog of 2^20 kicks, slot 1 gets one. A real-time reader on the thread's
/// CPU wakes the moment slot 1 is signalled and counts slot 0's notifications: round robin
/// with at most 1024 kicks of a slot at a time allows one batch before slot 1 is served.
fn round_robin_bounded_batch() -> Result<()> {
    const BATCH: u64 = 1024;
    let ch = pinned_channel()?;
    let n0 = EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK)?;
    let n1 = Notifier::new()?;
    ch.attach(0, &n0)?;
    ch.attach(1, &n1)?;
    let armed = AtomicBool::new(false);
    let seen = std::thread::scope(|sc| -> Result<u64> {
        let reader = sc.spawn(|| -> Result<u64> {
            pin_me(CPU)?;
            fifo(60)?;
            armed.store(true, Ordering::SeqCst);
            ensure!(n1.wait_timeout(hang())? == 1, "slot 1 was never answered");
            // Nothing else runs on this CPU until this read: slot 0's count is what the
            // thread delivered before slot 1.
            Ok(n0.read().unwrap_or(0))
        });
        let t = Instant::now();
        while !armed.load(Ordering::SeqCst) {
            ensure!(t.elapsed() < hang(), "the reader never started");
            std::thread::sleep(Duration::from_millis(1));
        }
        with_cpu_held(|| {
            ch.kick(0, sys::MAX_KICK)?;
            ch.kick(1, 1)?;
            Ok(())
        })?;
        crate::join(reader, "reader")
    })?;
    ensure!(
        seen <= BATCH,
        "slot 0 got {seen} notifications before slot 1's one (batch {BATCH})"
    );
    let s = crate::idle(&ch)?;
    ensure!(s.notifies == u64::from(sys::MAX_KICK) + 1, "{s:?}");
    Ok(())
}

/// Waits until the channel has queued at least `want` ticks (the thread's catch-up once it
/// runs again), and returns its counters then: the first snapshot that has them, so a
/// catch-up in one step shows as one.
fn ticks_at_least(ch: &Channel, want: u64) -> Result<sys::Stats> {
    let t = Instant::now();
    loop {
        let s = ch.stats()?;
        if s.timer_ticks >= want {
            return Ok(s);
        }
        ensure!(
            t.elapsed() < hang(),
            "{} of {want} ticks after the thread was let run: {s:?}",
            s.timer_ticks
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A timer whose thread is kept off the CPU for longer than all its periods: the timer signals
/// ticks itself for as long as the thread lets it re-arm (16 times), and the thread queues the
/// rest in one catch-up when it runs again: exactly the limit in all, none skipped or doubled.
fn timer_catch_up_exact() -> Result<()> {
    const PERIOD: Duration = Duration::from_millis(1);
    const TICKS: u64 = 40;
    let ch = pinned_channel()?;
    let n = Notifier::new()?;
    ch.attach(0, &n)?;
    let held = with_cpu_held(|| {
        ch.set_timer(0, PERIOD, TICKS)?;
        std::thread::sleep(PERIOD * (TICKS as u32 + 3));
        Ok(ch.stats()?)
    })?;
    // The timer stopped for want of the thread; the thread queues all the rest in one step.
    let s = ticks_at_least(&ch, held.timer_ticks + 1)?;
    ensure!(
        s.timer_ticks == TICKS,
        "one catch-up queued {} ticks after {} from the timer, want {TICKS}: {s:?}",
        s.timer_ticks - held.timer_ticks,
        held.timer_ticks
    );
    // Every tick, from the timer and then the thread's catch-up, each once.
    collect(&n, TICKS)?;
    // The limit holds: nothing more comes, and the timer is gone.
    std::thread::sleep(PERIOD * 3);
    let s = crate::idle(&ch)?;
    ensure!(
        n.drain()? == 0 && s.timer_ticks == TICKS && s.timers == 0,
        "{s:?}"
    );
    Ok(())
}

/// The timer expires at most 17 times (the armed expiry and 16 re-arms) per run of the
/// channel's thread, twice more per `EVNOTIFY_IOC_TIMER` call, and needs no thread in between:
/// with the threads of two channels held off their CPU for 100 periods, channel A's timer
/// delivers at most 17 ticks, and keeps expiring meanwhile: at least 4 ticks fall due (its
/// thread had left at least 8 re-arms: it is woken for more at every expiry once 8 or fewer
/// are left; a tick that finds its slot busy, the thread held mid-batch, is queued rather
/// than delivered, so the count is of ticks, not deliveries). Channel B's timer, whose owner
/// makes 20 calls meanwhile, delivers at most 17 + 2 × 20. Then the threads catch up, and
/// every tick is counted once.
fn timer_alarm_paced_by_the_thread() -> Result<()> {
    const PERIOD: Duration = Duration::from_millis(1);
    const MOST: u64 = 17;
    const CALLS: u64 = 20;
    let (a, b) = (pinned_channel()?, pinned_channel()?);
    let (na, nb) = (Notifier::new()?, Notifier::new()?);
    a.attach(0, &na)?;
    b.attach(0, &nb)?;
    // Armed from this CPU, where they stay: not the threads'.
    a.set_timer(0, PERIOD, 0)?;
    b.set_timer(0, PERIOD, 0)?;
    first_more(&na)?;
    first_more(&nb)?;
    let (da, db, ta) = with_cpu_held(|| {
        na.drain()?;
        nb.drain()?;
        let before = a.stats()?.timer_ticks;
        for _ in 0..CALLS {
            std::thread::sleep(PERIOD * 4);
            // Right after one of B's ticks, so that the call finds none due (one it found
            // would be queued, and leave the slot busy for the rest of the hold), seen in the
            // counters: a read of B's eventfd would grant re-arms too. A call that changes
            // nothing: cancelling a slot with no timer.
            let ticks = b.stats()?.timer_ticks;
            let t = Instant::now();
            while b.stats()?.timer_ticks == ticks && t.elapsed() < PERIOD * 5 {
                std::hint::spin_loop();
            }
            b.cancel_timer(63)?;
        }
        let due = a.stats()?.timer_ticks - before;
        Ok((na.drain()?, nb.drain()?, due))
    })?;
    ensure!(
        da <= MOST && ta >= 4,
        "{da} ticks delivered, {ta} fell due while the thread could not run: {:?}",
        a.stats()?
    );
    ensure!(
        db <= MOST + 2 * CALLS,
        "{db} ticks in {CALLS} calls while the thread could not run: {:?}",
        b.stats()?
    );
    for (ch, n) in [(&a, &na), (&b, &nb)] {
        first_more(n).context("no tick once the thread ran again")?;
        ch.cancel_timer(0)?;
        let s = crate::idle(ch)?;
        ensure!(s.notifies == s.timer_ticks, "{s:?}");
    }
    Ok(())
}

/// A read of a timer slot's eventfd grants the alarm its re-arms, as a run of the thread does
/// (API version 7), as a timerfd is re-armed by its reader: with the thread held off its CPU
/// for 60 periods, a reader that reads every tick keeps the timer going well past the 17
/// expiries a run of the thread allows. (At 10 ms, so that no tick is late by a whole period,
/// which would be a catch-up for the held thread.) The counts stay exact.
fn timer_alarm_paced_by_reads() -> Result<()> {
    const PERIOD: Duration = Duration::from_millis(10);
    const HELD: u32 = 60;
    let ch = pinned_channel()?;
    let n = Notifier::new()?;
    ch.attach(0, &n)?;
    ch.set_timer(0, PERIOD, 0)?;
    let first = first_more(&n)?;
    let pid = ch.stats()?.thread_pid;
    let (read, before, after) = with_cpu_held(|| {
        let before = context_switches(pid)?;
        let t = Instant::now();
        let mut read = 0;
        while t.elapsed() < PERIOD * HELD {
            read += n.wait_timeout(PERIOD * 2)?;
        }
        Ok((read, before, context_switches(pid)?))
    })?;
    // The hold worked: the thread did not run meanwhile, not even to grant re-arms.
    ensure!(
        after == before,
        "the thread ran while held: context switches {before} -> {after}"
    );
    ensure!(
        read >= u64::from(HELD) / 2,
        "{read} ticks read in {HELD} periods while the thread could not run: {:?}",
        ch.stats()?
    );
    ch.cancel_timer(0)?;
    let s = crate::idle(&ch)?;
    ensure!(
        s.notifies == s.timer_ticks && first + read + n.drain()? == s.timer_ticks,
        "{s:?}"
    );
    Ok(())
}

/// "Reads by other processes that hold the eventfd do nothing here": with the thread held off
/// its CPU and only another process reading the slot's eventfd, the timer stops after its
/// allowance, as with no read at all (at most 17 expiries after the last grant, the drain
/// below; `timer_alarm_paced_by_reads` has the attacher's reads keep it going).
///
/// The thread must not run during the hold, or it would grant re-arms itself; a hold in which
/// it ran anyway (a CI run and one of mine on 7.2 saw one context switch, with 62 ticks read
/// and with 17: the real-time hog throttled, or a wake-up it took before the hold) tests
/// nothing, and is tried again, up to three holds in all.
fn timer_alarm_not_paced_by_other_readers() -> Result<()> {
    const PERIOD: Duration = Duration::from_millis(10);
    const HELD: u32 = 60;
    const MOST: i32 = 17;
    let ch = pinned_channel()?;
    let n = Notifier::new()?;
    ch.attach(0, &n)?;
    ch.set_timer(0, PERIOD, 0)?;
    first_more(&n)?;
    let pid = ch.stats()?.thread_pid;
    for _ in 0..3 {
        // A hold right after another (this test's or another test's) would take the hog past
        // the real-time budget (sched_rt_runtime_us: 950 ms a second), and a throttled hog lets
        // the thread run: let a whole budget period pass first.
        std::thread::sleep(Duration::from_millis(1100));
        let (read, before, after) = with_cpu_held(|| {
            let before = context_switches(pid)?;
            n.drain()?;
            // The reader is a child process: it inherits the eventfd, did not attach it. The
            // hog thread only spins, holding no lock the child could need.
            let reader = crate::hostile::child(|| {
                let t = Instant::now();
                let mut read = 0;
                while t.elapsed() < PERIOD * HELD {
                    match n.wait_timeout(PERIOD * 2) {
                        Ok(v) => read += v,
                        Err(_) => return 255,
                    }
                }
                read.min(250) as i32
            })?;
            let read = crate::hostile::exit_code(reader)?;
            Ok((read, before, context_switches(pid)?))
        })?;
        println!(
            "# another process read {read} ticks while the thread was held \
             (context switches {before} -> {after})"
        );
        if after != before {
            continue;
        }
        // Some: the timer's own re-arms deliver to the eventfd while the thread cannot run.
        ensure!(
            (1..=MOST).contains(&read),
            "another process read {read} ticks in {HELD} periods while the thread could not \
             run (at most {MOST} without the attacher's reads; 255: a read failed): {:?}",
            ch.stats()?
        );
        first_more(&n).context("no tick once the thread ran again")?;
        ch.cancel_timer(0)?;
        return Ok(());
    }
    bail!("the thread ran during each of three holds: nothing was tested")
}

/// How many times thread `pid` was switched out, voluntarily or not (`/proc/<pid>/status`).
pub(crate) fn context_switches(pid: i32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let counts: Vec<u64> = status
        .lines()
        .filter(|l| l.contains("ctxt_switches:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
        .collect();
    ensure!(counts.len() == 2, "no context switch counts in:\n{status}");
    Ok(counts.iter().sum())
}

/// The local timer interrupts of each CPU (the `LOC` line of `/proc/interrupts`).
fn local_timer_interrupts() -> Result<Vec<u64>> {
    let text = std::fs::read_to_string("/proc/interrupts")?;
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("LOC:"))
        .context("/proc/interrupts has no LOC line")?;
    line.trim_start()["LOC:".len()..]
        .split_whitespace()
        .map_while(|w| w.parse::<u64>().ok())
        .map(Ok)
        .collect()
}

/// Pins the caller to `cpu`, reads `ticks` ticks from `n` and returns how many local timer
/// interrupts CPU 0 and [`CPU`] took meanwhile.
fn read_on_cpu(n: &Notifier, ticks: u64, cpu: usize) -> Result<(u64, u64)> {
    pin_me(cpu)?;
    first_more(n)?;
    let before = local_timer_interrupts()?;
    let mut got = 0;
    while got < ticks {
        got += first_more(n)?;
    }
    let after = local_timer_interrupts()?;
    ensure!(
        before.len() > CPU && after.len() > CPU,
        "{before:?} {after:?}"
    );
    Ok((after[0] - before[0], after[CPU] - before[CPU]))
}

/// The timer follows its reader (API version 7), as a timerfd, which its reader re-arms, does:
/// armed from CPU 0 and read on CPU 1 by the process that attached the eventfd, it expires on
/// CPU 1 once read there, so the reader is woken where it sleeps. Read by another process
/// (a child holding the eventfd), it stays where it is: others' reads are theirs. Seen in the
/// local timer interrupts: over 300 ticks, the CPU with the alarm takes them beside its
/// scheduler ticks (as many on both CPUs: the test kernels tick periodically, `HZ_PERIODIC`
/// at 250 Hz, about 75 each), the other does not.
fn timer_alarm_follows_its_reader() -> Result<()> {
    const PERIOD: Duration = Duration::from_millis(1);
    const TICKS: u64 = 300;
    // A quarter of the ticks: a late alarm delivers the ticks it missed together, so a slow
    // kernel takes fewer expiries than ticks (the debug kernel of `make stress` saw 257
    // against 118, a lead of 139), but the CPU without the timer never leads.
    const LEAD: u64 = TICKS / 4;
    pin_me(0)?;
    let ch = Channel::open()?;
    // The thread on CPU 0 too: when the alarm stops for want of re-arms (another process's
    // reads grant none), the thread restarts it where it runs.
    start_thread(&ch)?;
    ch.pin_thread(0)?;
    let n = Notifier::new()?;
    ch.attach(0, &n)?;
    ch.set_timer(0, PERIOD, 0)?;
    crate::promises::in_child("a reader in another process", || {
        let (d0, d1) = read_on_cpu(&n, TICKS, CPU)?;
        ensure!(
            d0 >= d1 + LEAD,
            "local timer interrupts while another process read {TICKS} ticks on CPU {CPU}: \
             CPU 0 {d0}, CPU {CPU} {d1}"
        );
        Ok(())
    })?;
    // Read by this thread itself (which `make coverage` records), moved to the other CPU.
    let (d0, d1) = read_on_cpu(&n, TICKS, CPU)?;
    ch.cancel_timer(0)?;
    ensure!(
        d1 >= d0 + LEAD,
        "local timer interrupts while {TICKS} ticks were read on CPU {CPU}: CPU 0 {d0}, \
         CPU {CPU} {d1}"
    );
    Ok(())
}

/// The timer is armed on the CPU of the caller that sets it, also when the call lands while the
/// thread spins for the channel's next kick (right after a polled answer): set from CPU 0,
/// the thread on [`CPU`], and read on CPU 0 by another process (whose reads do not move it),
/// its expiries are CPU 0's local timer interrupts, as in `timer_alarm_follows_its_reader`.
///
/// Up to three tries, each of which must show it. Why more than one: the alarm re-arms itself
/// only within the credit its thread grants (one from the ioctl, then 16 per run), and an
/// alarm that ran out is restarted by the thread, where it runs (the header leaves that CPU
/// open). By the code (not traced), a thread held off for a millisecond right after the first
/// expiry, or for eight later, moves the timer to [`CPU`] for the rest of a try: a vCPU the
/// emulator's host did not run meanwhile. One try failed so in 2 of 6 full runs, each after a
/// disturbance (a compile on the host, a throttled real-time hog). Only a try whose interrupt
/// counts miss the lead is tried again; any other failure fails the test at once. A timer
/// armed on the thread's CPU fails every try.
fn timer_armed_where_set_while_spinning() -> Result<()> {
    let mut missed = Vec::new();
    for _ in 0..3 {
        match armed_where_set_while_spinning()? {
            None => return Ok(()),
            Some(counts) => missed.push(counts),
        }
    }
    bail!(
        "local timer interrupts while 300 ticks set from CPU 0 were read there, in each of three \
         tries: {}",
        missed.join("; ")
    )
}

/// One try: `None` if CPU 0 took the lead, else the interrupt counts.
fn armed_where_set_while_spinning() -> Result<Option<String>> {
    const TICKS: u64 = 300;
    pin_me(0)?;
    let ch = Channel::open()?;
    ch.set_busypoll(Duration::from_nanos(sys::MAX_BUSYPOLL_NS.into()))?;
    start_thread(&ch)?;
    ch.pin_thread(CPU)?;
    let (k, n) = (Notifier::new()?, Notifier::new()?);
    ch.attach(0, &k)?;
    ch.attach(1, &n)?;
    // Kicks that come back after the window but within the limit grow it: the thread spins
    // for most of a millisecond after each answer.
    for _ in 0..50 {
        std::thread::sleep(Duration::from_micros(500));
        ch.kick(0, 1)?;
        collect(&k, 1)?;
    }
    ch.set_timer(1, Duration::from_millis(1), 0)?;
    // The reader, another process, exits with 0 if CPU 0 took the lead, 2 if not, 1 on an
    // error. A quarter, as in `timer_alarm_follows_its_reader` (a loaded host saw 159
    // against 71 and 219 against 77 here).
    let reader = crate::hostile::child(|| match read_on_cpu(&n, TICKS, 0) {
        Ok((d0, d1)) => {
            println!("# CPU 0 {d0}, CPU {CPU} {d1}");
            if d0 >= d1 + TICKS / 4 {
                0
            } else {
                2
            }
        }
        Err(e) => {
            println!("# the reader: {e:#}");
            1
        }
    })?;
    let code = crate::hostile::exit_code(reader);
    ch.cancel_timer(1)?;
    match code? {
        0 => Ok(None),
        2 => Ok(Some("see the counts printed above".into())),
        c => bail!("the reader failed ({c})"),
    }
}

/// Waits for one more notification on `n` (it may bring several).
fn first_more(n: &Notifier) -> Result<u64> {
    let v = n.wait_timeout(hang())?;
    ensure!(v > 0, "none within {:?}", hang());
    Ok(v)
}

/// The same without a limit: after the thread was held off for `k` periods, at least `k` ticks
/// were queued (by the timer, then the thread's catch-up), and in all never more than the
/// periods that have passed.
fn timer_catch_up_unlimited() -> Result<()> {
    const PERIOD: Duration = Duration::from_millis(1);
    const HELD: u32 = 60;
    let ch = pinned_channel()?;
    let n = Notifier::new()?;
    ch.attach(0, &n)?;
    let t0 = Instant::now();
    let held = with_cpu_held(|| {
        ch.set_timer(0, PERIOD, 0)?;
        std::thread::sleep(PERIOD * HELD);
        Ok(ch.stats()?)
    })?;
    let s = ticks_at_least(&ch, held.timer_ticks + 1)?;
    ensure!(
        s.timer_ticks + 1 >= u64::from(HELD),
        "one catch-up queued {} ticks after {} from the timer, {HELD} periods held off: {s:?}",
        s.timer_ticks - held.timer_ticks,
        held.timer_ticks
    );
    ch.cancel_timer(0)?;
    let elapsed = t0.elapsed();
    let s = crate::idle(&ch)?;
    let total = collect(&n, s.timer_ticks)?;
    let most = (elapsed.as_nanos() / PERIOD.as_nanos()) as u64;
    ensure!(
        total <= most,
        "{total} ticks in {elapsed:?} ({most} periods): {s:?}"
    );
    Ok(())
}

/// Every documented range at both ends: the extremes work, one past them fails with EINVAL.
fn ranges_at_both_ends() -> Result<()> {
    let ch = Channel::open()?;
    let n = Notifier::new()?;
    let last = sys::NR_SLOTS - 1;
    // Slots.
    ch.attach(last, &n)?;
    expect_errno(
        ch.attach(sys::NR_SLOTS, &n),
        Errno::EINVAL,
        "attach slot 64",
    )?;
    ch.attach_kickfd(last, &Notifier::new()?)?;
    expect_errno(
        ch.attach_kickfd(sys::NR_SLOTS, &n),
        Errno::EINVAL,
        "kickfd slot 64",
    )?;
    expect_errno(ch.kick(sys::NR_SLOTS, 1), Errno::EINVAL, "kick slot 64")?;
    // Kick counts: 1 ..= MAX_KICK.
    expect_errno(ch.kick(last, 0), Errno::EINVAL, "kick count 0")?;
    expect_errno(
        ch.kick(last, sys::MAX_KICK + 1),
        Errno::EINVAL,
        "kick count MAX_KICK + 1",
    )?;
    ch.kick(last, 1)?;
    collect(&n, 1)?;
    // (Both at once could pass EVNOTIFY_MAX_PENDING, 2^20, and be coalesced.)
    ch.kick(last, sys::MAX_KICK)?;
    collect(&n, u64::from(sys::MAX_KICK))?;
    // Timer periods: MIN ..= MAX; ticks: any, 0 = unlimited.
    let ns = Duration::from_nanos;
    for (period, ticks) in [
        (sys::MIN_PERIOD_NS, 1),
        (sys::MAX_PERIOD_NS, 0),
        (sys::MAX_PERIOD_NS, u64::MAX),
    ] {
        ch.set_timer(1, ns(period), ticks)
            .with_context(|| format!("timer {period} ns, {ticks} ticks"))?;
    }
    for period in [sys::MIN_PERIOD_NS - 1, sys::MAX_PERIOD_NS + 1, 1] {
        expect_errno(
            ch.set_timer(2, ns(period), 1),
            Errno::EINVAL,
            "timer period",
        )?;
    }
    expect_errno(
        ch.set_timer(sys::NR_SLOTS, ns(sys::MIN_PERIOD_NS), 1),
        Errno::EINVAL,
        "timer slot 64",
    )?;
    ch.cancel_timer(1)?;
    ensure!(ch.stats()?.timers == 0, "cancel left a timer");
    // Signals: 1 ..= 64, 0 (SIGIO) and -1 (stop); nothing else.
    for signo in [1, 64, 0, -1] {
        ch.set_signal(3, signo)
            .with_context(|| format!("signal {signo}"))?;
    }
    for signo in [65, -2, i32::MAX, i32::MIN] {
        expect_errno(ch.set_signal(3, signo), Errno::EINVAL, "signal number")?;
    }
    expect_errno(
        ch.set_signal(sys::NR_SLOTS, 1),
        Errno::EINVAL,
        "signal slot 64",
    )?;
    // Busy-poll limit: 0 ..= MAX_BUSYPOLL_NS.
    for limit in [0, sys::MAX_BUSYPOLL_NS] {
        ch.set_busypoll(ns(limit.into()))?;
        ensure!(ch.stats()?.busypoll_ns == limit, "busy-poll limit {limit}");
    }
    expect_errno(
        ch.set_busypoll(ns(u64::from(sys::MAX_BUSYPOLL_NS) + 1)),
        Errno::EINVAL,
        "busy-poll limit MAX + 1",
    )?;
    let s = crate::idle(&ch)?;
    ensure!(
        s.kicks == u64::from(sys::MAX_KICK) + 1 && s.signal_slots == 0,
        "{s:?}"
    );
    Ok(())
}

/// Six slots with different targets are kicked while the thread is held off: `pending` sums
/// them all, fdinfo shows each, and afterwards every counter has each slot's share.
fn stats_across_slots() -> Result<()> {
    let sig = libc::SIGRTMIN() + 4;
    let sfd = evnotify::catch_signal(sig)?;
    let ch = pinned_channel()?;
    let efds = (0..6)
        .map(|_| Notifier::new())
        .collect::<std::io::Result<Vec<_>>>()?;
    let k = Notifier::new()?;
    ch.attach(0, &efds[0])?; // notify only
    ch.set_signal(1, sig)?; // signal only
    ch.attach(2, &efds[2])?; // both
    ch.set_signal(2, sig)?;
    ch.attach(4, &efds[4])?; // slot 3: neither
    ch.attach(5, &efds[5])?;
    ch.attach_kickfd(5, &k)?;
    let base = ch.stats()?;
    let held = with_cpu_held(|| {
        for slot in 0..5 {
            ch.kick(slot, slot + 1)?;
        }
        k.post(6)?;
        Ok((ch.stats()?, ch.fdinfo()?))
    })?;
    let (s, info) = held;
    ensure!(
        s.pending == 21,
        "pending {} with 21 kicks on 6 slots: {s:?}",
        s.pending
    );
    ensure!(
        s.kicks - base.kicks == 21 && s.fd_kicks - base.fd_kicks == 6 && s.handled == base.handled,
        "{s:?}"
    );
    for slot in 0..6 {
        let want = format!("slot:\t{slot}\t");
        let line = info
            .lines()
            .find(|l| l.starts_with(&want))
            .with_context(|| format!("fdinfo has no line for slot {slot}:\n{info}"))?;
        ensure!(
            line.contains(&format!("\tpending: {}\t", slot + 1)),
            "slot {slot}: {line}"
        );
    }
    let s = crate::idle(&ch)?;
    let d = |a: u64, b: u64| a - b;
    ensure!(d(s.handled, base.handled) == 21, "{s:?}");
    ensure!(
        d(s.notifies, base.notifies) == 1 + 3 + 5 + 6,
        "notifies: {s:?}"
    );
    ensure!(d(s.signals, base.signals) == 2 + 3, "signals: {s:?}");
    ensure!(d(s.dropped, base.dropped) == 4, "dropped: {s:?}");
    // Kicks written while the thread signals other eventfds are no echoes.
    ensure!(s.coalesced == base.coalesced, "coalesced: {s:?}");
    for (slot, want) in [(0, 1), (2, 3), (4, 5), (5, 6)] {
        collect(&efds[slot], want).with_context(|| format!("slot {slot}"))?;
    }
    let mut signals = 0;
    while sfd.try_read()?.is_some() {
        signals += 1;
    }
    ensure!(signals == 5, "{signals} signals, want 5");
    Ok(())
}
