//! The same object twice, an fd closed under the ioctl that uses it, and the bounds as the
//! header states them: one eventfd as the kick eventfd of two slots or two channels, a close
//! racing `EVNOTIFY_IOC_KICKFD`, the pending bound with a batch in flight, and a signal target
//! that is a zombie, then reaped.

use crate::{collect, expect_errno, hang, settle, Test};
use anyhow::{bail, ensure, Context, Result};
use evnotify::{sys, Channel, Notifier};
use nix::{
    errno::Errno,
    sys::{
        signal::Signal,
        wait::{waitpid, WaitStatus},
    },
    unistd::{dup, fork, ForkResult, Pid},
};
use std::{
    os::fd::{AsFd, BorrowedFd},
    thread,
    time::{Duration, Instant},
};

pub const TESTS: &[Test] = &[
    (
        "kickfd_one_eventfd_two_slots_ebusy",
        kickfd_one_eventfd_two_slots_ebusy,
    ),
    (
        "kickfd_one_eventfd_two_channels_ebusy",
        kickfd_one_eventfd_two_channels_ebusy,
    ),
    ("kickfd_racing_hooks_one_wins", kickfd_racing_hooks_one_wins),
    (
        "kickfd_close_racing_hook_released",
        kickfd_close_racing_hook_released,
    ),
    (
        "kickfd_close_racing_first_hook_released",
        kickfd_close_racing_first_hook_released,
    ),
    (
        "pending_bound_counts_batch_in_flight",
        pending_bound_counts_batch_in_flight,
    ),
    (
        "signal_zombie_target_kept_until_reaped",
        signal_zombie_target_kept_until_reaped,
    ),
    ("first_calls_at_once", first_calls_at_once),
];

/// Two first calls at once on a new channel, from threads on two CPUs: `EVNOTIFY_IOC_TIMER`
/// on slot 0, which needs the channel's worker and its slots' extra state, and on slot 1 the
/// same, or (every other round) `EVNOTIFY_IOC_SIGNAL`, which needs only the state. Both take
/// effect, on one worker and in one state: both timers tick, or the signal is kept. (The second
/// call waits while the first starts the worker, or allocates the state, and finds it there.)
fn first_calls_at_once() -> Result<()> {
    for round in 0..60 {
        let ch = Channel::open()?;
        let barrier = std::sync::Barrier::new(2);
        let timers = round % 2 == 0;
        let start = |slot: u32| {
            pin(slot as usize, false)?;
            barrier.wait();
            let r = match slot {
                1 if !timers => {
                    // Later by 0 to 1.8 ms, so that some rounds come while the timer's call
                    // starts the worker (holding what the state's allocation takes).
                    thread::sleep(Duration::from_micros(200 * (round / 2 % 10)));
                    ch.set_signal(1, Signal::SIGUSR1 as i32)
                }
                _ => ch.set_timer(slot, Duration::from_millis(1), 1),
            };
            Ok::<_, anyhow::Error>(r?)
        };
        thread::scope(|s| -> Result<()> {
            let other = s.spawn(|| start(1));
            let mine = start(0);
            crate::join(other, "second caller")?;
            mine.with_context(|| format!("round {round}"))
        })?;
        let ticks = if timers { 2 } else { 1 };
        let t = Instant::now();
        let s = loop {
            let s = ch.stats()?;
            if s.handled == ticks || t.elapsed() > hang() {
                break s;
            }
            thread::sleep(Duration::from_millis(1));
        };
        ensure!(
            (s.timer_ticks, s.handled, s.timers) == (ticks, ticks, 0)
                && s.signal_slots == u32::from(!timers),
            "round {round}: want {ticks} ticks, one of each timer, and the signal kept: {s:?}"
        );
        let w = ch.worker()?;
        ensure!(w.id != 0 && w.channels == 1, "round {round}: {w:?}");
    }
    Ok(())
}

/// Posts `n` to `kick` and checks that exactly `n` notifications reach `got` and none `not`.
fn kicks_reach(
    ch: &Channel,
    kick: &Notifier,
    n: u64,
    got: &Notifier,
    not: &Notifier,
) -> Result<()> {
    kick.post(n)?;
    collect(got, n)?;
    settle(ch, got)?;
    ensure!(not.drain()? == 0, "a kick reached the other slot");
    Ok(())
}

/// The header: an eventfd is the kick eventfd of at most one slot; another slot gets `EBUSY`,
/// and hooking it again where it is hooked changes nothing. (Before, both hooks were kept, and
/// only the newest ever fired.)
fn kickfd_one_eventfd_two_slots_ebusy() -> Result<()> {
    let ch = Channel::open()?;
    let (n1, n2, k) = (Notifier::new()?, Notifier::new()?, Notifier::new()?);
    ch.attach(1, &n1)?;
    ch.attach(2, &n2)?;
    ch.attach_kickfd(1, &k)?;
    expect_errno(
        ch.attach_kickfd(2, &k),
        Errno::EBUSY,
        "the same eventfd on slot 2",
    )?;
    // Through another descriptor of the same eventfd, too.
    let k2 = dup(k.as_fd())?;
    expect_errno(ch.attach_kickfd(2, &k2), Errno::EBUSY, "a dup on slot 2")?;
    kicks_reach(&ch, &k, 5, &n1, &n2)?;
    // Again on its own slot: still one hook, still every kick.
    ch.attach_kickfd(1, &k2)?;
    kicks_reach(&ch, &k, 3, &n1, &n2)?;
    let s = ch.stats()?;
    ensure!(
        s.kickfds == 1 && s.fd_kicks == 8 && s.notifies == 8,
        "{s:?}"
    );
    // Unhooked from slot 1, it may go to slot 2.
    ch.detach_kickfd(1)?;
    ch.attach_kickfd(2, &k)?;
    kicks_reach(&ch, &k, 2, &n2, &n1)?;
    let s = ch.stats()?;
    ensure!(s.kickfds == 1 && s.fd_kicks == 10, "{s:?}");
    Ok(())
}

/// The same across channels: the second channel gets `EBUSY` until the first lets go (by
/// unhooking, or by closing).
fn kickfd_one_eventfd_two_channels_ebusy() -> Result<()> {
    let (a, b) = (Channel::open()?, Channel::open()?);
    let (na, nb, k) = (Notifier::new()?, Notifier::new()?, Notifier::new()?);
    a.attach(0, &na)?;
    b.attach(0, &nb)?;
    a.attach_kickfd(0, &k)?;
    expect_errno(
        b.attach_kickfd(0, &k),
        Errno::EBUSY,
        "hooked by another channel",
    )?;
    // A failed hook takes nothing: the write goes to channel a whole.
    kicks_reach(&a, &k, 4, &na, &nb)?;
    ensure!(b.stats()?.kicks == 0, "channel b was kicked");
    drop(a);
    b.attach_kickfd(0, &k)?;
    k.post(6)?;
    collect(&nb, 6)?;
    let s = settle(&b, &nb)?;
    ensure!(s.kickfds == 1 && s.fd_kicks == 6, "{s:?}");
    Ok(())
}

/// Two threads hook one eventfd on two channels at once, many times: exactly one wins, and
/// the eventfd's writes all go to the winner.
fn kickfd_racing_hooks_one_wins() -> Result<()> {
    let (a, b) = (Channel::open()?, Channel::open()?);
    let (na, nb) = (Notifier::new()?, Notifier::new()?);
    a.attach(0, &na)?;
    b.attach(0, &nb)?;
    let mut wins = [0u32; 2];
    for round in 0..200 {
        let k = Notifier::new()?;
        let barrier = std::sync::Barrier::new(2);
        let hook = |ch: &Channel| {
            barrier.wait();
            ch.attach_kickfd(0, &k).map_err(crate::errno)
        };
        let (ra, rb) = thread::scope(|s| {
            let ta = s.spawn(|| hook(&a));
            let rb = hook(&b);
            (ta.join(), rb)
        });
        let ra = ra.map_err(|_| anyhow::anyhow!("hooking thread panicked"))?;
        let winner = match (ra, rb) {
            (Ok(()), Err(Errno::EBUSY)) => 0,
            (Err(Errno::EBUSY), Ok(())) => 1,
            r => bail!("round {round}: want one hook and one EBUSY, got {r:?}"),
        };
        wins[winner] += 1;
        let (ch, n) = if winner == 0 { (&a, &na) } else { (&b, &nb) };
        k.post(2)?;
        collect(n, 2)?;
        ch.detach_kickfd(0)?;
    }
    let (sa, sb) = (settle(&a, &na)?, settle(&b, &nb)?);
    ensure!(
        sa.fd_kicks == 2 * u64::from(wins[0]) && sb.fd_kicks == 2 * u64::from(wins[1]),
        "wins {wins:?}: {sa:?} {sb:?}"
    );
    println!("# kickfd_racing_hooks_one_wins: wins {wins:?}");
    Ok(())
}

/// Pins the calling thread to `cpu`, optionally at `SCHED_FIFO`.
fn pin(cpu: usize, fifo: bool) -> Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu)?;
    nix::sched::sched_setaffinity(Pid::from_raw(0), &set)?;
    if fifo {
        let param = libc::sched_param { sched_priority: 50 };
        // SAFETY: Sets the calling thread's policy; `param` is a valid sched_param.
        let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
        ensure!(rc == 0, "SCHED_FIFO: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// The slot's kick eventfd, as fdinfo shows it ("none" when the slot has no line).
fn kickfd_state(ch: &Channel, slot: u32) -> Result<String> {
    let info = ch.fdinfo()?;
    let prefix = format!("slot:\t{slot}\t");
    Ok(info
        .lines()
        .find(|l| l.starts_with(&prefix))
        .and_then(|l| l.split('\t').find_map(|f| f.strip_prefix("kickfd: ")))
        .unwrap_or("none")
        .to_string())
}

/// The header: a kick eventfd closed by user space is unhooked and released, also when the
/// close comes while `EVNOTIFY_IOC_KICKFD` runs. A `SCHED_FIFO` thread on the ioctl's CPU
/// closes the last descriptor from a timer, at delays swept over the ioctl's length, so it
/// lands at every point of the ioctl, the moment between the module letting go of the file
/// and storing the hook included (where a hang-up used to be lost, leaving the hook for ever).
/// A thread on the other CPU reads the channel's fdinfo meanwhile, which takes the lock the
/// ioctl stores the hook under, and so widens that moment.
fn kickfd_close_racing_hook_released() -> Result<()> {
    let ch = Channel::open()?;
    let cpu = 0;
    pin(cpu, false)?;
    let stop = std::sync::atomic::AtomicBool::new(false);
    thread::scope(|s| -> Result<()> {
        let hammer = s.spawn(|| -> Result<()> {
            pin(1, false)?;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                ch.fdinfo()?;
            }
            Ok(())
        });
        let r = close_racing_rounds(&ch, cpu);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        crate::join(hammer, "fdinfo reader")?;
        r
    })
}

/// The rounds of a close racing `EVNOTIFY_IOC_KICKFD`: how each ended.
#[derive(Default)]
struct Sweep {
    hooked: u32,
    ebadf: u32,
    closed_first: u32,
}

impl Sweep {
    /// Counts the ioctl's result `r`, then, if it hooked the eventfd, waits for its release
    /// ([`released`]); any other errno fails the round.
    /// `closed` are the errnos of a close that came first: `EBADF`, and `EINVAL` where another
    /// thread may open a file meanwhile (the number reused by a file that is no eventfd).
    fn round(
        &mut self,
        ch: &Channel,
        r: std::io::Result<()>,
        closed: &[Errno],
        what: &str,
    ) -> Result<()> {
        match r.map_err(crate::errno) {
            Ok(()) => self.hooked += 1,
            Err(e) if closed.contains(&e) => {
                self.ebadf += 1;
                return Ok(());
            }
            Err(e) => bail!("{what}: KICKFD failed with {e}"),
        }
        self.closed_first += u32::from(released(ch, what)?);
        Ok(())
    }

    /// The sweep must reach both sides of the ioctl, or it proves nothing about the middle.
    fn finish(&self, test: &str, rounds: u32, span: Duration) -> Result<()> {
        let Sweep {
            hooked,
            ebadf,
            closed_first,
        } = self;
        ensure!(
            *hooked > 0 && *ebadf > 0,
            "the sweep missed the ioctl: {hooked} hooked, {ebadf} closed before it took the file"
        );
        println!(
            "# {test}: {rounds} rounds over {span:?}: {hooked} hooked, {ebadf} closed before \
             the ioctl took the file, {closed_first} seen closed first"
        );
        Ok(())
    }
}

/// Waits until slot 0's kick eventfd, hooked and then closed by user space, is released, as the
/// header promises whichever came first in the kernel; returns whether it was first seen
/// hooked and closed (the close came late enough that the hook was seen stored and hung up).
fn released(ch: &Channel, what: &str) -> Result<bool> {
    let t = Instant::now();
    let mut first = None;
    loop {
        let state = kickfd_state(ch, 0)?;
        if state == "none" {
            return Ok(first.unwrap_or(false));
        }
        first.get_or_insert(state == "closed");
        ensure!(
            t.elapsed() < hang() / 3,
            "{what}: a closed kick eventfd stayed hooked ({state}): {:?}",
            ch.stats()?
        );
        thread::sleep(Duration::from_micros(200));
    }
}

/// The same on a fresh channel each round, whose first `EVNOTIFY_IOC_KICKFD` starts its worker
/// and allocates its slot state and hook table after it took the file: a far longer moment
/// between the module letting go of the file and storing the hook than on a channel in use.
/// The closer (`SCHED_FIFO`, on the ioctl's CPU) is one thread for all rounds, which records
/// its calls under `make coverage`: the hang-up's wake-up of the hook runs in its close.
fn kickfd_close_racing_first_hook_released() -> Result<()> {
    const ROUNDS: u32 = 300;
    let cpu = 0;
    pin(cpu, false)?;
    let mut lens = Vec::new();
    for _ in 0..10 {
        let (ch, k) = (Channel::open()?, Notifier::new()?);
        let t = Instant::now();
        ch.attach_kickfd(0, &k)?;
        lens.push(t.elapsed());
    }
    lens.sort();
    let span = lens[lens.len() / 2] * 3 / 2;
    let (to_closer, jobs) = std::sync::mpsc::channel::<(i32, Duration)>();
    let (closed, done) = std::sync::mpsc::channel::<()>();
    let mut sweep = Sweep::default();
    thread::scope(|s| -> Result<()> {
        let closer = s.spawn(move || {
            crate::kcov::recorded(|| -> Result<()> {
                pin(cpu, true)?;
                for (raw, delay) in jobs {
                    thread::sleep(delay);
                    // SAFETY: `raw` is the round's; the hooking thread only borrows the number.
                    unsafe { libc::close(raw) };
                    closed.send(())?;
                }
                Ok(())
            })
        });
        let r = (|| -> Result<()> {
            for round in 0..ROUNDS {
                let ch = Channel::open()?;
                // SAFETY: `eventfd` has no memory-safety preconditions.
                let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
                ensure!(raw >= 0, "eventfd: {}", std::io::Error::last_os_error());
                let delay = span * (round % 61) / 60;
                to_closer.send((raw, delay))?;
                // SAFETY: The number may be closed meanwhile: the kernel then reports `EBADF`
                // (nothing else opens a file meanwhile to reuse it).
                let r = ch.attach_kickfd(0, &unsafe { BorrowedFd::borrow_raw(raw) });
                done.recv_timeout(hang()).context("the closer")?;
                let what = format!("round {round}, close after {delay:?} of {span:?}");
                sweep.round(&ch, r, &[Errno::EBADF], &what)?;
                let st = ch.stats()?;
                ensure!(st.kickfds == 0, "{what}: {st:?}");
            }
            Ok(())
        })();
        drop(to_closer);
        crate::join(closer, "closer")?;
        r
    })?;
    sweep.finish("kickfd_close_racing_first_hook_released", ROUNDS, span)
}

/// The rounds of [`kickfd_close_racing_hook_released`].
fn close_racing_rounds(ch: &Channel, cpu: usize) -> Result<()> {
    // How long the ioctl takes here: the sweep's range. (Timing only spreads the closes; no
    // expectation depends on it.)
    let mut lens = Vec::new();
    for _ in 0..20 {
        let k = Notifier::new()?;
        let t = Instant::now();
        ch.attach_kickfd(0, &k)?;
        lens.push(t.elapsed());
        ch.detach_kickfd(0)?;
    }
    lens.sort();
    let span = (lens[lens.len() / 2] * 3 / 2).max(Duration::from_micros(20));
    let mut sweep = Sweep::default();
    let rounds = 3000u32;
    for round in 0..rounds {
        // SAFETY: `eventfd` has no memory-safety preconditions.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        ensure!(raw >= 0, "eventfd: {}", std::io::Error::last_os_error());
        let delay = span * (round % 97) / 96;
        let r = thread::scope(|s| -> Result<std::io::Result<()>> {
            let closer = s.spawn(move || -> Result<()> {
                pin(cpu, true)?;
                thread::sleep(delay);
                // SAFETY: `raw` is ours; the hooking thread only borrows the number.
                unsafe { libc::close(raw) };
                Ok(())
            });
            // SAFETY: The number may be closed meanwhile; the kernel then reports `EBADF` (or
            // a reused number refers to another file, which gives `EINVAL`).
            let r = ch.attach_kickfd(0, &unsafe { BorrowedFd::borrow_raw(raw) });
            crate::join(closer, "closer")?;
            Ok(r)
        })?;
        let what = format!("round {round}, close after {delay:?}");
        sweep.round(ch, r, &[Errno::EBADF, Errno::EINVAL], &what)?;
    }
    let s = ch.stats()?;
    ensure!(s.kickfds == 0, "{s:?}");
    sweep.finish("kickfd_close_racing_hook_released", rounds, span)
}

/// The header: a slot holds at most `EVNOTIFY_MAX_PENDING` kicks, the batch being delivered
/// included, so with one slot at work every snapshot shows `pending <= EVNOTIFY_MAX_PENDING`.
/// The channel's thread is stopped mid-batch by a `SCHED_FIFO` hog on its CPU (it spends most
/// of its time in a batch), and the slot is filled meanwhile. (Slot 5, not 0: the bound must
/// follow the slot the batch came from.)
fn pending_bound_counts_batch_in_flight() -> Result<()> {
    let ch = crate::contract::pinned_channel()?;
    let n = Notifier::new()?;
    ch.attach(5, &n)?;
    let mut full = 0;
    for _ in 0..24 {
        ch.kick(5, sys::MAX_KICK)?;
        let s = crate::contract::with_cpu_held(|| {
            ch.kick(5, sys::MAX_KICK)?;
            Ok(ch.stats()?)
        })?;
        ensure!(
            s.pending <= sys::MAX_PENDING,
            "pending {} > EVNOTIFY_MAX_PENDING: {s:?}",
            s.pending
        );
        full += u32::from(s.coalesced > 0);
    }
    ensure!(full > 0, "the slot never filled: the bound was not reached");
    let s = crate::idle(&ch)?;
    ensure!(
        // The thread was started with one kick on slot 63, which has no target.
        s.kicks == 48 * u64::from(sys::MAX_KICK) + 1
            && s.kicks == s.handled + s.coalesced
            && s.notifies + s.dropped == s.handled
            && s.dropped == 1,
        "{s:?}"
    );
    Ok(())
}

/// Waits until process `pid` is a zombie (state `Z` in `/proc/<pid>/stat`).
fn wait_zombie(pid: Pid) -> Result<()> {
    let t = Instant::now();
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // The state follows the command name, which is in parentheses.
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next());
        if state == Some("Z") {
            return Ok(());
        }
        ensure!(
            t.elapsed() < hang(),
            "child {pid} never became a zombie: {stat}"
        );
        thread::sleep(Duration::from_millis(1));
    }
}

/// The header: a zombie still counts sends in `signals` (the kernel discards them) and is
/// kept; once reaped, the slot's next kick sends nothing and releases it.
fn signal_zombie_target_kept_until_reaped() -> Result<()> {
    let ch = Channel::open()?;
    let n = Notifier::new()?;
    ch.attach(1, &n)?;
    // SAFETY: The child makes two ioctls and exits; it touches no lock of the parent.
    let child = match unsafe { fork() }? {
        ForkResult::Child => {
            let rc = crate::kcov::recorded(|| -> evnotify::Result<()> {
                ch.set_signal(0, Signal::SIGUSR1 as i32)?;
                ch.set_signal(1, Signal::SIGUSR2 as i32)
            })
            .map_or(1, |_| 0);
            // SAFETY: Exits the child at once, without running the parent's destructors.
            unsafe { libc::_exit(rc) }
        }
        ForkResult::Parent { child } => child,
    };
    let as_zombie = (|| -> Result<()> {
        wait_zombie(child)?;
        ensure!(
            ch.stats()?.signal_slots == 2,
            "the child's requests were not kept"
        );
        ch.kick(0, 3)?;
        ch.kick(1, 2)?;
        collect(&n, 2)?;
        let s = settle(&ch, &n)?;
        ensure!(
            s.signals == 5 && s.sig_refused == 0 && s.dropped == 0 && s.signal_slots == 2,
            "sends to a zombie: {s:?}"
        );
        Ok(())
    })();
    let st = waitpid(child, None).context("waitpid")?;
    as_zombie?;
    ensure!(
        matches!(st, WaitStatus::Exited(_, 0)),
        "child failed: {st:?}"
    );
    ch.kick(0, 3)?;
    ch.kick(1, 2)?;
    collect(&n, 2)?;
    let s = settle(&ch, &n)?;
    ensure!(
        s.signals == 5 && s.sig_refused == 0 && s.dropped == 3 && s.notifies == 4,
        "sends to a reaped process: {s:?}"
    );
    ensure!(
        s.signal_slots == 0,
        "the reaped process is still referenced: {s:?}"
    );
    Ok(())
}
