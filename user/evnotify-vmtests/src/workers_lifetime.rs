//! Shared workers over their channels' lifetimes: a worker outliving the channel that
//! started it, a close that waits only for its own channel, timers and kick eventfds on a
//! shared worker, and a channel's fd passed to another process that shares its worker.
//!
//! Every wait has a deadline ([`hang`](crate::hang)); none asserts a speed.

use crate::workers::{pool, thread_gone, worker};
use crate::{
    collect, hang, hostile::readable_within, hostile_fds::unix_pair, idle, settle, start_thread,
    Test,
};
use anyhow::{bail, ensure, Context, Result};
use evnotify::{sys, Channel, Notifier};
use nix::{
    sys::{
        signal::{kill, Signal},
        socket::{recvmsg, sendmsg, ControlMessage, MsgFlags},
        wait::{waitpid, WaitPidFlag, WaitStatus},
    },
    unistd::{fork, ForkResult, Pid},
};
use std::{
    io::{IoSlice, IoSliceMut},
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd},
    time::{Duration, Instant},
};

pub const TESTS: &[Test] = &[
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
];

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
            let code = crate::kcov::recorded(|| match f() {
                Ok(()) => 0,
                Err(e) => {
                    println!("# child: {e:#}");
                    1
                }
            });
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
        let fds = crate::hostile_fds::passed_fds(&msg)?;
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
