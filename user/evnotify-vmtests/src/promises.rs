//! One test per promise of the header and README that an outside set of seeded bugs got past
//! (issue 28). Each is written from the contract's line, quoted in its doc comment, and holds
//! by counts: every wait has a deadline built on [`hang`] that only a hang reaches, and no
//! test reads the clock to decide what it expects.

use crate::{collect, errno, expect_errno, faults::reload, hang, idle, settle, start_thread, Test};
use anyhow::{bail, ensure, Context, Result};
use evnotify::{sys, Channel, Notifier, Stats};
use nix::{
    errno::Errno,
    sched::{sched_setaffinity, CpuSet},
    sys::wait::{waitpid, WaitPidFlag, WaitStatus},
    unistd::{dup, fork, setresuid, ForkResult, Pid, Uid},
};
use std::{
    os::unix::fs::PermissionsExt,
    sync::atomic::{AtomicBool, Ordering::Relaxed},
    time::{Duration, Instant},
};

pub const TESTS: &[Test] = &[
    ("promise_share_self_einval", promise_share_self_einval),
    (
        "promise_timers_keep_own_schedule",
        promise_timers_keep_own_schedule,
    ),
    ("promise_fd_kicks_with_echoes", promise_fd_kicks_with_echoes),
    ("promise_fdinfo_every_slot", promise_fdinfo_every_slot),
    (
        "promise_close_stops_shared_worker",
        promise_close_stops_shared_worker,
    ),
    ("promise_wakeups_whole_life", promise_wakeups_whole_life),
    (
        "promise_wakeups_once_per_wakeup",
        promise_wakeups_once_per_wakeup,
    ),
    (
        "promise_signal_outlives_thread",
        promise_signal_outlives_thread,
    ),
    ("promise_user_limit_by_euid", promise_user_limit_by_euid),
    (
        "promise_user_limit_zero_refuses",
        promise_user_limit_zero_refuses,
    ),
    (
        "promise_busypoll_after_deadlines",
        promise_busypoll_after_deadlines,
    ),
    (
        "promise_thread_pid_hidden_in_child_pid_ns",
        promise_thread_pid_hidden_in_child_pid_ns,
    ),
    (
        "promise_timer_start_ignores_time_namespace",
        promise_timer_start_ignores_time_namespace,
    ),
];

/// The longest timer period: a timer that never ticks within a test.
const DAY: Duration = Duration::from_nanos(sys::MAX_PERIOD_NS);

/// The CPU that a test pins a channel's thread to; the test's own thread runs on CPU 0.
const CPU: usize = 1;

/// Waits until `cond` holds, failing with `what` once [`hang`] has passed.
fn wait_for(what: &str, mut cond: impl FnMut() -> Result<bool>) -> Result<()> {
    let t = Instant::now();
    while !cond()? {
        ensure!(t.elapsed() < hang(), "hung waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// Waits until the kernel thread `pid` sleeps (state `S`: only its wait for work is
/// interruptible), so that the next kick wakes it from sleep.
fn asleep(pid: i32) -> Result<()> {
    wait_for(&format!("thread {pid} to sleep"), || {
        Ok(crate::lifecycle::proc_state(pid)? == 'S')
    })
}

/// Pins the calling thread to `cpu`.
fn pin_me(cpu: usize) -> Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu)?;
    Ok(sched_setaffinity(Pid::from_raw(0), &set)?)
}

/// Runs `f` while a `SCHED_FIFO` thread spins on [`CPU`], so that a channel thread pinned
/// there cannot run (see `contract.rs`: for a few hundred milliseconds at most, the fair
/// server does not let it); the spin ends when `f` returns, or after [`hang`] at the latest.
fn with_cpu_held<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    let (stop, ready) = (AtomicBool::new(false), AtomicBool::new(false));
    std::thread::scope(|sc| {
        let h = sc.spawn(|| -> Result<()> {
            pin_me(CPU)?;
            let p = libc::sched_param { sched_priority: 50 };
            // SAFETY: `p` is a valid `sched_param` for the call.
            Errno::result(unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &p) })?;
            ready.store(true, Relaxed);
            let t = Instant::now();
            while !stop.load(Relaxed) && t.elapsed() < hang() {
                std::hint::spin_loop();
            }
            Ok(())
        });
        let r =
            wait_for("the CPU hog", || Ok(ready.load(Relaxed) || h.is_finished())).and_then(|()| {
                ensure!(ready.load(Relaxed), "the CPU hog never started");
                f()
            });
        stop.store(true, Relaxed);
        crate::join(h, "CPU hog")?;
        r
    })
}

/// Runs `f` in a forked child and waits for it, at most [`hang`]; the child's error is
/// printed as a KTAP comment and fails the test.
pub(crate) fn in_child(what: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    // SAFETY: The test has no other thread when it forks; the child leaves with `_exit`.
    let pid = match unsafe { fork() }? {
        ForkResult::Child => {
            let code = crate::kcov::recorded(|| match f() {
                Ok(()) => 0,
                Err(e) => {
                    println!("# {what}: {e:#}");
                    1
                }
            });
            // SAFETY: Ends the child without running the parent's destructors twice.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => child,
    };
    let t = Instant::now();
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG))? {
            WaitStatus::Exited(_, 0) => return Ok(()),
            WaitStatus::StillAlive if t.elapsed() < hang() => {
                std::thread::sleep(Duration::from_millis(2))
            }
            WaitStatus::StillAlive => {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                let _ = waitpid(pid, None);
                bail!("{what}: hung");
            }
            other => bail!("{what}: {other:?}"),
        }
    }
}

/// "EINVAL if it [fd] is not a /dev/evnotify channel, or is this channel (through any
/// descriptor of it); EBUSY if this channel has a worker already". Sharing with oneself is
/// EINVAL whether or not the channel has a worker, by its own descriptor or a duplicate, and
/// changes nothing; EBUSY is for sharing another channel's.
fn promise_share_self_einval() -> Result<()> {
    let (a, b, other) = (Channel::open()?, Channel::open()?, Channel::open()?);
    // Without a worker yet.
    expect_errno(a.share_worker(&a), Errno::EINVAL, "itself, no worker")?;
    expect_errno(
        a.share_worker(&dup(&a)?),
        Errno::EINVAL,
        "a dup of itself, no worker",
    )?;
    ensure!(a.worker()?.id == 0, "a refused share started a worker");
    // With a worker of its own.
    start_thread(&a)?;
    let w = a.worker()?;
    let d = dup(&a)?;
    expect_errno(a.share_worker(&a), Errno::EINVAL, "itself, with a worker")?;
    expect_errno(a.share_worker(&d), Errno::EINVAL, "a dup, with a worker")?;
    // Through the dup, sharing the original.
    expect_errno(
        Channel::from(d).share_worker(&a),
        Errno::EINVAL,
        "from a dup to the original, with a worker",
    )?;
    // With a worker shared from another channel.
    b.share_worker(&a)?;
    expect_errno(b.share_worker(&b), Errno::EINVAL, "itself, sharing")?;
    expect_errno(
        b.share_worker(&dup(&b)?),
        Errno::EINVAL,
        "a dup of itself, sharing",
    )?;
    // Another channel, by contrast, is EBUSY once it has a worker.
    expect_errno(b.share_worker(&other), Errno::EBUSY, "another channel")?;
    for ch in [&a, &b] {
        let now = ch.worker()?;
        ensure!(
            now.id == w.id && now.channels == 2,
            "the worker changed: {w:?} -> {now:?}"
        );
    }
    ensure!(other.worker()?.id == 0, "{:?}", other.worker()?);
    Ok(())
}

/// "the channel's thread queues one tick per period" on each slot, and an echo "waits at
/// least 1 ms": a 1 ms timer beside a timer of one day on another slot delivers its ticks,
/// and an echo beside it is delivered, all before the long timer ticks once. A thread that
/// slept until the latest deadline would deliver neither within the test.
fn promise_timers_keep_own_schedule() -> Result<()> {
    const TICKS: u64 = 20;
    const ROUNDS: u64 = 20;
    let ch = Channel::open()?;
    let (short, long, late) = (Notifier::new()?, Notifier::new()?, Notifier::new()?);
    ch.attach(0, &short)?;
    ch.attach(1, &long)?;
    ch.attach(4, &late)?;
    // The long timer first, then the short one; and one more of each in the other order.
    ch.set_timer(1, DAY, 0)?;
    ch.set_timer(0, Duration::from_millis(1), TICKS)?;
    collect(&short, TICKS).context("the 1 ms timer beside a timer of one day")?;
    ch.set_timer(4, Duration::from_millis(1), TICKS)?;
    ch.set_timer(5, DAY, 0)?;
    collect(&late, TICKS).context("a 1 ms timer started before another of one day")?;
    // An echo beside the long timers: slot 2 signals `e`, which kicks slot 3.
    let (e, echoes) = (Notifier::new()?, Notifier::new()?);
    ch.attach(2, &e)?;
    ch.attach_kickfd(3, &e)?;
    ch.attach(3, &echoes)?;
    for round in 1..=ROUNDS {
        ch.kick(2, 1)?;
        collect(&echoes, 1).with_context(|| format!("echo {round} beside a long timer"))?;
    }
    let s = idle(&ch)?;
    ensure!(long.drain()? == 0, "the one-day timer ticked: {s:?}");
    ensure!(
        s.timer_ticks == 2 * TICKS
            && s.kicks == 2 * ROUNDS
            && s.fd_kicks == ROUNDS
            && s.coalesced == 0
            && s.timers == 2,
        "{s:?}"
    );
    ensure!(
        short.drain()? == 0 && late.drain()? == 0,
        "extra ticks: {s:?}"
    );
    Ok(())
}

/// "fd_kicks is the part of kicks that came from kick eventfds": writes to a kick eventfd, a
/// count already in it when it is hooked, and echoes (a channel thread's signal of an eventfd
/// that is a kick eventfd: this channel's, or another's) all count, exactly, also the echoes
/// of a burst that are coalesced into the one that waits.
fn promise_fd_kicks_with_echoes() -> Result<()> {
    let (a, b) = (Channel::open()?, Channel::open()?);
    // Writes: slot 0 of A.
    let (k, n0) = (Notifier::new()?, Notifier::new()?);
    a.attach(0, &n0)?;
    a.attach_kickfd(0, &k)?;
    k.post(5)?;
    collect(&n0, 5)?;
    // A count already there when hooked: slot 1.
    let (k1, n1) = (Notifier::new()?, Notifier::new()?);
    a.attach(1, &n1)?;
    k1.post(3)?;
    a.attach_kickfd(1, &k1)?;
    collect(&n1, 3)?;
    // Echoes of A's own thread: slot 2 signals `e`, the kick eventfd of slot 3.
    let (e, n3) = (Notifier::new()?, Notifier::new()?);
    a.attach(2, &e)?;
    a.attach_kickfd(3, &e)?;
    a.attach(3, &n3)?;
    for _ in 0..10 {
        a.kick(2, 1)?;
        collect(&n3, 1)?;
    }
    // Echoes of another channel's thread: B's slot 0 signals `f`, the kick eventfd of A's
    // slot 4.
    let (f, n4) = (Notifier::new()?, Notifier::new()?);
    b.attach(0, &f)?;
    a.attach_kickfd(4, &f)?;
    a.attach(4, &n4)?;
    for _ in 0..7 {
        b.kick(0, 1)?;
        collect(&n4, 1)?;
    }
    let s = idle(&a)?;
    let (ioctl, fd) = (10, 5 + 3 + 10 + 7);
    ensure!(
        s.kicks == ioctl + fd && s.fd_kicks == fd && s.coalesced == 0 && s.handled == s.kicks,
        "want {} kicks, {fd} of them from kick eventfds: {s:?}",
        ioctl + fd
    );
    let sb = idle(&b)?;
    ensure!(sb.kicks == 7 && sb.fd_kicks == 0, "{sb:?}");
    // A burst of echoes, one batch of 100 signals of `e`: "at most one waits per slot, and
    // the rest are coalesced", and every one counts in fd_kicks.
    a.kick(2, 100)?;
    collect(&n3, 1)?;
    let s2 = settle(&a, &n3)?;
    ensure!(
        s2.kicks - s.kicks == 200
            && s2.fd_kicks - s.fd_kicks == 100
            && s2.coalesced == 99
            && s2.handled - s.handled == 101,
        "100 echoes in one batch: {s:?} -> {s2:?}"
    );
    Ok(())
}

/// "one line per slot in use" in fdinfo (`EVNOTIFY_F_FDINFO`): a slot whose only use is a
/// timer, a signal, a kick eventfd or a notify eventfd each has its line, with its state,
/// and a slot in no use has none.
fn promise_fdinfo_every_slot() -> Result<()> {
    let sig = libc::SIGRTMIN() + 5;
    let ch = Channel::open()?;
    let (k, n, k2, n2) = (
        Notifier::new()?,
        Notifier::new()?,
        Notifier::new()?,
        Notifier::new()?,
    );
    ch.set_timer(5, DAY, 7)?;
    ch.set_signal(6, sig)?;
    ch.attach_kickfd(7, &k)?;
    ch.attach(8, &n)?;
    // Everything at once.
    ch.set_timer(9, DAY, 0)?;
    ch.set_signal(9, sig)?;
    ch.attach_kickfd(9, &k2)?;
    ch.attach(9, &n2)?;
    let day = sys::MAX_PERIOD_NS;
    let want = [
        format!("slot:\t5\tnotify: none\tkickfd: none\tpending: 0\tsignal: 0\ttimer: {day}ns left 7"),
        format!("slot:\t6\tnotify: none\tkickfd: none\tpending: 0\tsignal: {sig}\ttimer: none"),
        "slot:\t7\tnotify: none\tkickfd: attached\tpending: 0\tsignal: 0\ttimer: none".into(),
        "slot:\t8\tnotify: attached\tkickfd: none\tpending: 0\tsignal: 0\ttimer: none".into(),
        format!(
            "slot:\t9\tnotify: attached\tkickfd: attached\tpending: 0\tsignal: {sig}\ttimer: {day}ns left 0"
        ),
    ];
    let info = ch.fdinfo()?;
    let lines: Vec<&str> = info.lines().filter(|l| l.starts_with("slot:")).collect();
    ensure!(
        lines == want,
        "fdinfo's slot lines:\n{}\nwant:\n{}\nin:\n{info}",
        lines.join("\n"),
        want.join("\n")
    );
    // Once a slot is no longer used, its line goes.
    ch.cancel_timer(5)?;
    ch.set_signal(6, -1)?;
    ch.detach_kickfd(7)?;
    ch.detach(8)?;
    let info = ch.fdinfo()?;
    let lines: Vec<&str> = info.lines().filter(|l| l.starts_with("slot:")).collect();
    ensure!(lines == want[4..], "after the slots were cleared:\n{info}");
    Ok(())
}

/// "Closing a channel stops its deliveries before close(2) returns, waiting at most for its
/// own batch in progress", also on a shared worker that is serving it at that moment, while a
/// kick eventfd floods it: once close returns its eventfd grows no more, while the other
/// channel of the worker is answered (so the worker went on, and passed its run queue).
fn promise_close_stops_shared_worker() -> Result<()> {
    const ROUNDS: usize = 20;
    let b = Channel::open()?;
    let nb = Notifier::new()?;
    b.attach(0, &nb)?;
    start_thread(&b)?;
    for round in 0..ROUNDS {
        let a = Channel::open()?;
        a.share_worker(&b)?;
        let (n, k) = (Notifier::new()?, Notifier::new()?);
        for slot in 0..4 {
            a.attach(slot, &n)?;
            a.kick(slot, sys::MAX_KICK)?;
        }
        a.attach(4, &n)?;
        a.attach_kickfd(4, &k)?;
        let stop = AtomicBool::new(false);
        let got = std::thread::scope(|sc| -> Result<u64> {
            let writer = sc.spawn(|| -> Result<()> {
                while !stop.load(Relaxed) {
                    match k.post(1000) {
                        Ok(()) => {}
                        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                            std::thread::yield_now()
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(())
            });
            let res = (|| -> Result<u64> {
                // The worker is delivering A's batches.
                let first = n.wait_timeout(hang())?;
                ensure!(first > 0, "round {round}: A never served: {:?}", a.stats()?);
                let pending = a.stats()?.pending;
                ensure!(pending > 0, "round {round}: A idle before its close");
                drop(a);
                Ok(first + n.drain()?)
            })();
            stop.store(true, Relaxed);
            crate::join(writer, "kick eventfd writer")?;
            res
        })?;
        // The worker is still there for B, counts A out, and passed anything it had queued.
        let w = b.worker()?;
        ensure!(w.channels == 1, "round {round}: after A's close: {w:?}");
        for _ in 0..3 {
            b.kick(0, 1)?;
            collect(&nb, 1).with_context(|| format!("round {round}: B after A's close"))?;
        }
        let late = n.drain()?;
        ensure!(
            late == 0,
            "round {round}: {late} notifications after close returned ({got} before)"
        );
    }
    let s = settle(&b, &nb)?;
    ensure!(s.notifies == 3 * ROUNDS as u64, "{s:?}");
    Ok(())
}

/// "wakeups: times the thread woke up from sleep and found work", for the channel's whole
/// life: with busy polling off, each of many kicks that finds the thread asleep adds exactly
/// one, the last as the first.
fn promise_wakeups_whole_life() -> Result<()> {
    const ROUNDS: u64 = 20;
    let ch = Channel::open()?;
    let n = Notifier::new()?;
    ch.attach(0, &n)?;
    let pid = start_thread(&ch)?;
    ch.set_busypoll(Duration::ZERO)?;
    for round in 1..=ROUNDS {
        idle(&ch)?;
        asleep(pid)?;
        let before = ch.stats()?;
        ch.kick(0, 1)?;
        collect(&n, 1)?;
        let after = idle(&ch)?;
        ensure!(
            after.wakeups == before.wakeups + 1 && after.polled == before.polled,
            "round {round}: one kick to a sleeping thread: {before:?} -> {after:?}"
        );
    }
    Ok(())
}

/// "evnotify_stats.wakeups and polled count on the first channel with work that the worker
/// serves after a sleep": once per wake-up, however many batches (at most 1024 kicks each)
/// and channels it then serves before it sleeps again.
fn promise_wakeups_once_per_wakeup() -> Result<()> {
    const KICKS: u32 = 10 * 1024 + 1;
    pin_me(0)?;
    let (a, b) = (Channel::open()?, Channel::open()?);
    let (na, nb) = (Notifier::new()?, Notifier::new()?);
    a.attach(0, &na)?;
    b.attach(0, &nb)?;
    let pid = start_thread(&a)?;
    b.share_worker(&a)?;
    a.set_busypoll(Duration::ZERO)?;
    a.pin_thread(CPU)?;
    // One kick of eleven batches.
    idle(&a)?;
    asleep(pid)?;
    let (a0, b0) = (a.stats()?, b.stats()?);
    a.kick(0, KICKS)?;
    collect(&na, KICKS.into())?;
    let (a1, b1) = (settle(&a, &na)?, b.stats()?);
    ensure!(
        a1.wakeups == a0.wakeups + 1 && a1.polled == a0.polled,
        "{KICKS} kicks after one sleep: {a0:?} -> {a1:?}"
    );
    ensure!(b1.wakeups == b0.wakeups, "B had no work: {b0:?} -> {b1:?}");
    // Two channels queued while the thread cannot run: one wake-up serves both, and counts
    // on A, served first.
    asleep(pid)?;
    with_cpu_held(|| {
        a.kick(0, 3)?;
        b.kick(0, 2)?;
        Ok(())
    })?;
    collect(&na, 3)?;
    collect(&nb, 2)?;
    let (a2, b2) = (settle(&a, &na)?, settle(&b, &nb)?);
    ensure!(
        a2.wakeups == a1.wakeups + 1 && b2.wakeups == b1.wakeups,
        "one wake-up for A and B: A {a1:?} -> {a2:?}, B {b1:?} -> {b2:?}"
    );
    ensure!(
        a2.polled == a1.polled && b2.polled == b1.polled,
        "{a2:?} {b2:?}"
    );
    Ok(())
}

/// "The signal goes to the process (thread group) that made this call; once it exits, the
/// slot stops signalling": the process, not the thread. After the thread that made the call
/// has exited, with the process alive, every kick still signals it.
fn promise_signal_outlives_thread() -> Result<()> {
    let sig = libc::SIGRTMIN() + 9;
    // Blocked in this thread, and so in every thread it spawns.
    let sfd = evnotify::catch_signal(sig)?;
    let ch = Channel::open()?;
    let tid = std::thread::scope(|sc| {
        let h = sc.spawn(|| -> Result<i32> {
            ch.set_signal(0, sig)?;
            // SAFETY: A plain syscall.
            Ok(unsafe { libc::gettid() })
        });
        crate::join(h, "the thread that sets the signal")
    })?;
    // Joined, and also gone from the kernel's pid table.
    wait_for(&format!("thread {tid} to go"), || {
        Ok(!std::path::Path::new(&format!("/proc/self/task/{tid}")).exists())
    })?;
    ch.kick(0, 3)?;
    let s = idle(&ch)?;
    let mut got = 0;
    while let Some(info) = sfd.try_read()? {
        ensure!(info.signo == sig, "got signal {}", info.signo);
        got += 1;
    }
    ensure!(
        got == 3 && s.signals == 3 && s.dropped == 0 && s.sig_refused == 0 && s.signal_slots == 1,
        "received {got} signals for 3 kicks after the setter thread exited: {s:?}"
    );
    Ok(())
}

/// Sets the real, effective and saved uids of the (single-threaded) calling process; from
/// root, keeping a saved uid of 0 lets it become root again.
fn uids(real: u32, effective: u32) -> Result<()> {
    setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0)).context("back to root")?;
    setresuid(
        Uid::from_raw(real),
        Uid::from_raw(effective),
        Uid::from_raw(0),
    )
    .with_context(|| format!("setresuid({real}, {effective}, 0)"))?;
    Ok(())
}

/// Opens `n` channels; returns those opened and the error of the first that failed.
fn open_n(n: usize) -> (Vec<Channel>, Option<Errno>) {
    let mut chans = vec![];
    for _ in 0..n {
        match Channel::open() {
            Ok(c) => chans.push(c),
            Err(e) => return (chans, Some(errno(e))),
        }
    }
    (chans, None)
}

/// "max_user_channels: Most channels one user (effective uid) may have open at once", counted
/// by the euid at open: in a process whose real and effective uids differ, the channels count
/// for the effective one, and a close gives the place back to that uid, whoever closes.
fn promise_user_limit_by_euid() -> Result<()> {
    reload(c"max_user_channels=2")?;
    let r = (|| -> Result<()> {
        std::fs::set_permissions(evnotify::DEVICE, std::fs::Permissions::from_mode(0o666))?;
        in_child("the process with two uids", || {
            let expect = |what: &str,
                          got: (Vec<Channel>, Option<Errno>),
                          ok: usize|
             -> Result<Vec<Channel>> {
                let (chans, e) = got;
                ensure!(
                    chans.len() == ok && e == Some(Errno::EMFILE),
                    "{what}: opened {}, then {e:?}; want {ok}, then EMFILE",
                    chans.len()
                );
                Ok(chans)
            };
            // Real 1000, effective 2000: counted for 2000.
            uids(1000, 2000)?;
            let mixed = expect("real 1000, effective 2000", open_n(3), 2)?;
            // So uid 1000 has all its places, uid 2000 none.
            uids(1000, 1000)?;
            let plain = expect("uid 1000", open_n(3), 2)?;
            uids(2000, 2000)?;
            expect("uid 2000", open_n(1), 0)?;
            // Closed by root: the places go back to 2000, not to root.
            uids(0, 0)?;
            drop(mixed);
            uids(2000, 2000)?;
            let again = expect("uid 2000 after the close", open_n(3), 2)?;
            uids(0, 0)?;
            let root = expect("root", open_n(3), 2)?;
            // The last user in the table first: its close looks past the others.
            drop((root, again, plain));
            Ok(())
        })
    })();
    reload(c"")?;
    r
}

/// "max_user_channels=0" allows no channel to any user: every open fails with EMFILE, the
/// first as the last, root's as another user's; the module's defaults allow them again.
fn promise_user_limit_zero_refuses() -> Result<()> {
    reload(c"max_user_channels=0")?;
    let r = (|| -> Result<()> {
        std::fs::set_permissions(evnotify::DEVICE, std::fs::Permissions::from_mode(0o666))?;
        for i in 1..=3 {
            expect_errno(Channel::open(), Errno::EMFILE, &format!("root's open {i}"))?;
        }
        in_child("uid 1000", || {
            uids(1000, 1000)?;
            for i in 1..=2 {
                expect_errno(
                    Channel::open(),
                    Errno::EMFILE,
                    &format!("uid 1000's open {i}"),
                )?;
            }
            Ok(())
        })
    })();
    reload(c"")?;
    r?;
    let ch = Channel::open()?;
    start_thread(&ch)?;
    Ok(())
}

/// Kick-and-wait round trips on slot 0 of `ch`, whose thread is on [`CPU`] and this one on
/// CPU 0, in blocks of 50, until the thread's busy poll catches (`polled`) at least
/// half of a block's kicks: a kick is caught only if the thread spins between round trips,
/// which its adaptive window lets it do once round trips come back within the limit. (A
/// single catch would prove little: a kick that lands between the thread's last look at its
/// run queue and a spin that ends at once counts as caught too.) Fails only when no block
/// does so within [`hang`], on a host busy enough to slow every round trip past the limit.
fn caught_by_polling(ch: &Channel, n: &Notifier, what: &str) -> Result<Stats> {
    const BLOCK: u64 = 50;
    let t = Instant::now();
    let (mut best, mut blocks) = (0, 0);
    loop {
        let before = ch.stats()?;
        for _ in 0..BLOCK {
            ch.kick(0, 1)?;
            collect(n, 1)?;
        }
        let after = settle(ch, n)?;
        ensure!(
            after.notifies - before.notifies == BLOCK,
            "{what}: {before:?} -> {after:?}"
        );
        let caught = after.polled - before.polled;
        blocks += 1;
        if 2 * caught >= BLOCK {
            eprintln!("# {what}: {caught} of {BLOCK} caught in block {blocks}");
            return Ok(after);
        }
        best = best.max(caught);
        ensure!(
            t.elapsed() < hang(),
            "{what}: in no block of {BLOCK} round trips did polling catch half (at most \
             {best}): {after:?}"
        );
    }
}

/// Busy polling "spins, for an adaptive window of at most limit_ns, before it sleeps: a kick
/// that arrives meanwhile costs no wake-up", after the worker passed a timer's or an echo's
/// deadline as before: a ping-pong after an expired timer, and after an echo, is still
/// caught by polling (`polled` grows each time).
fn promise_busypoll_after_deadlines() -> Result<()> {
    pin_me(0)?;
    let ch = Channel::open()?;
    ch.set_busypoll(Duration::from_nanos(sys::MAX_BUSYPOLL_NS.into()))?;
    let n = Notifier::new()?;
    ch.attach(0, &n)?;
    start_thread(&ch)?;
    ch.pin_thread(CPU)?;
    caught_by_polling(&ch, &n, "before any deadline")?;
    // A timer that ticks once, and expires.
    let t = Notifier::new()?;
    ch.attach(1, &t)?;
    ch.set_timer(1, Duration::from_millis(1), 1)?;
    collect(&t, 1)?;
    wait_for("the timer to expire", || Ok(ch.stats()?.timers == 0))?;
    caught_by_polling(&ch, &n, "after a timer's deadline")?;
    // A timer that keeps running (on a slot with no eventfd, whose ticks are counted dropped):
    // with deadlines, the channel does not spin for its next kick itself, and the thread's own
    // spin catches the kicks, between the alarm's requests for more re-arms, each of which
    // ends a spin as a deadline.
    ch.set_timer(5, Duration::from_millis(1), 0)?;
    let caught = caught_by_polling(&ch, &n, "while a timer runs");
    ch.cancel_timer(5)?;
    caught?;
    // An echo: slot 2 signals `e`, the kick eventfd of slot 3.
    let (e, echoes) = (Notifier::new()?, Notifier::new()?);
    ch.attach(2, &e)?;
    ch.attach_kickfd(3, &e)?;
    ch.attach(3, &echoes)?;
    ch.kick(2, 1)?;
    collect(&echoes, 1)?;
    caught_by_polling(&ch, &n, "after an echo's deadline")?;
    Ok(())
}

/// "thread_pid: 0 until started (and always 0 seen from a child pid namespace)", and the
/// worker's "as evnotify_stats.thread_pid": the first process of a new pid namespace sees no
/// pid of the thread that the initial namespace sees.
fn promise_thread_pid_hidden_in_child_pid_ns() -> Result<()> {
    let ch = Channel::open()?;
    ch.kick(0, 1)?;
    idle(&ch)?;
    let (s, w) = (ch.stats()?, ch.worker()?);
    ensure!(
        s.thread_pid > 0 && w.thread_pid == s.thread_pid,
        "{s:?} {w:?}"
    );
    in_child("a process that made a pid namespace", || {
        // SAFETY: Puts this process's next children in a new pid namespace; no memory touched.
        Errno::result(unsafe { libc::unshare(libc::CLONE_NEWPID) })?;
        in_child("the namespace's first process", || {
            let (s, w) = (ch.stats()?, ch.worker()?);
            ensure!(
                std::process::id() == 1 && s.thread_pid == 0 && w.thread_pid == 0,
                "pid {} sees {s:?} {w:?}",
                std::process::id()
            );
            Ok(())
        })
    })
}

/// "start_ns is on the kernel's CLOCK_MONOTONIC, that of the initial time namespace: timerfd
/// converts a time given in a time namespace, this module does not", and the caller subtracts
/// the offset: a process whose namespace's clock runs 100 s ahead gets no tick for a start
/// 50 ms ahead on its own clock, and gets one, not early, for a start 50 ms ahead on the
/// kernel's.
fn promise_timer_start_ignores_time_namespace() -> Result<()> {
    const AHEAD: Duration = Duration::from_secs(100);
    const SOON: Duration = Duration::from_millis(50);
    let ch = Channel::open()?;
    let n = Notifier::new()?;
    ch.attach(0, &n)?;
    in_child("a process that made a time namespace", || {
        // SAFETY: Puts this process's next children in a new time namespace; no memory touched.
        Errno::result(unsafe { libc::unshare(libc::CLONE_NEWTIME) })?;
        std::fs::write(
            "/proc/self/timens_offsets",
            format!("monotonic {} 0", AHEAD.as_secs()),
        )
        .context("the namespace's offset")?;
        in_child("a process in it", || {
            let here = evnotify::monotonic_now();
            let kernel = here.checked_sub(AHEAD).context("no offset applied")?;
            ch.set_timer_at(0, here + SOON, Duration::from_millis(1), 1)?;
            ensure!(
                n.wait_timeout(SOON * 6)? == 0,
                "a start on the namespace's clock was taken as the kernel's"
            );
            ch.set_timer_at(0, kernel + SOON, Duration::from_millis(1), 1)?;
            ensure!(
                n.wait_timeout(hang())? == 1,
                "no tick for a start on the kernel's clock"
            );
            let now = evnotify::monotonic_now() - AHEAD;
            ensure!(
                now >= kernel + SOON,
                "the tick came early: {:?} before its start",
                kernel + SOON - now
            );
            Ok(())
        })
    })
}
