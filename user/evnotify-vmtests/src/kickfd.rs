//! Kick eventfds: `write(2)` kicks a slot with no ioctl; and the fdinfo view of a channel.

use crate::{collect, expect_errno, hang, settle, Test};
use anyhow::{ensure, Context, Result};
use evnotify::{sys, Channel, Notifier};
use nix::{errno::Errno, unistd::pipe};
use std::{
    os::fd::{AsFd, AsRawFd},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::Instant,
};

pub const TESTS: &[Test] = &[
    ("kickfd_write_kicks", kickfd_write_kicks),
    (
        "kickfd_pending_at_attach_counts",
        kickfd_pending_at_attach_counts,
    ),
    ("kickfd_conservation_10000", kickfd_conservation_10000),
    ("kickfd_mixed_with_ioctl", kickfd_mixed_with_ioctl),
    ("kickfd_detach_stops_kicks", kickfd_detach_stops_kicks),
    ("kickfd_close_while_busy", kickfd_close_while_busy),
    ("kickfd_replace_under_load", kickfd_replace_under_load),
    ("kickfd_errors", kickfd_errors),
    (
        "fdinfo_shows_state_without_pointers",
        fdinfo_shows_state_without_pointers,
    ),
    ("kickfd_closed_not_counted", kickfd_closed_not_counted),
];

const TOTAL: u64 = 10_000;

/// A channel with a notify eventfd and a kick eventfd on `slot`.
fn pair(slot: u32) -> Result<(Channel, Notifier, Notifier)> {
    let ch = Channel::open()?;
    let (notify, kick) = (Notifier::new()?, Notifier::new()?);
    ch.attach(slot, &notify)?;
    ch.attach_kickfd(slot, &kick)?;
    Ok((ch, notify, kick))
}

fn kickfd_write_kicks() -> Result<()> {
    let (ch, notify, kick) = pair(2)?;
    kick.post(1)?;
    collect(&notify, 1)?;
    kick.post(5)?;
    collect(&notify, 5)?;
    let s = settle(&ch, &notify)?;
    ensure!(
        s.kicks == 6 && s.fd_kicks == 6 && s.notifies == 6 && s.kickfds == 1,
        "{s:?}"
    );
    ensure!(
        kick.drain()? == 0,
        "the kick eventfd's counter was not consumed"
    );
    Ok(())
}

fn kickfd_pending_at_attach_counts() -> Result<()> {
    let ch = Channel::open()?;
    let (notify, kick) = (Notifier::new()?, Notifier::new()?);
    ch.attach(0, &notify)?;
    kick.post(7)?;
    ch.attach_kickfd(0, &kick)?;
    collect(&notify, 7)?;
    let s = settle(&ch, &notify)?;
    ensure!(s.fd_kicks == 7, "{s:?}");
    Ok(())
}

fn kickfd_conservation_10000() -> Result<()> {
    let (ch, notify, kick) = pair(0)?;
    thread::scope(|s| -> Result<()> {
        let reader = s.spawn(|| collect(&notify, 2 * TOTAL));
        for _ in 0..TOTAL {
            kick.post(1)?;
        }
        // Then in bursts: a write of N is N kicks.
        let mut sent = 0;
        for n in (1..).cycle() {
            let n = n.min(TOTAL - sent);
            if n == 0 {
                break;
            }
            kick.post(n)?;
            sent += n;
        }
        crate::join(reader, "reader")?;
        Ok(())
    })?;
    let s = settle(&ch, &notify)?;
    ensure!(s.kicks == 2 * TOTAL && s.fd_kicks == 2 * TOTAL, "{s:?}");
    ensure!(s.notifies == 2 * TOTAL, "{s:?}");
    Ok(())
}

fn kickfd_mixed_with_ioctl() -> Result<()> {
    let (ch, notify, kick) = pair(0)?;
    thread::scope(|s| -> Result<()> {
        let reader = s.spawn(|| collect(&notify, 2 * TOTAL));
        let writer = s.spawn(|| (0..TOTAL).try_for_each(|_| kick.post(1)));
        for _ in 0..TOTAL {
            ch.kick(0, 1)?;
        }
        crate::join(writer, "writer")?;
        crate::join(reader, "reader")?;
        Ok(())
    })?;
    let s = settle(&ch, &notify)?;
    ensure!(s.kicks == 2 * TOTAL && s.fd_kicks == TOTAL, "{s:?}");
    Ok(())
}

fn kickfd_detach_stops_kicks() -> Result<()> {
    let (ch, notify, kick) = pair(0)?;
    kick.post(1)?;
    collect(&notify, 1)?;
    ch.detach_kickfd(0)?;
    ch.detach_kickfd(0)?; // Detaching an empty slot is a no-op.
    kick.post(4)?;
    let s = settle(&ch, &notify)?;
    ensure!(s.fd_kicks == 1 && s.kickfds == 0, "{s:?}");
    // The write stayed in the eventfd, untouched by the module.
    ensure!(kick.drain()? == 4, "the detached eventfd was consumed");
    Ok(())
}

/// Waits until the thread has released every kick eventfd that user space closed.
fn wait_kickfds(ch: &Channel, want: u32) -> Result<sys::Stats> {
    let t = Instant::now();
    loop {
        let s = ch.stats()?;
        if s.kickfds == want && !ch.fdinfo()?.contains("kickfd: closed") {
            return Ok(s);
        }
        ensure!(
            t.elapsed() < hang(),
            "closed kick eventfd never released: {s:?}"
        );
        thread::sleep(std::time::Duration::from_millis(1));
    }
}

fn kickfd_close_while_busy() -> Result<()> {
    let (ch, notify, kick) = pair(0)?;
    // Keep the thread busy signalling, then close the kick eventfd under it.
    ch.kick(0, 100_000)?;
    kick.post(3)?;
    drop(kick);
    wait_kickfds(&ch, 0)?;
    let s = crate::idle(&ch)?;
    ensure!(s.fd_kicks == 3 && s.kicks == 100_003, "{s:?}");
    ensure!(notify.drain()? == 100_003, "notifications lost");
    // A new kick eventfd works on the same slot.
    let kick = Notifier::new()?;
    ch.attach_kickfd(0, &kick)?;
    kick.post(2)?;
    collect(&notify, 2)?;
    settle(&ch, &notify)?;
    Ok(())
}

fn kickfd_replace_under_load() -> Result<()> {
    let ch = Channel::open()?;
    let notify = Notifier::new()?;
    ch.attach(0, &notify)?;
    let fds = (0..8)
        .map(|_| Notifier::new())
        .collect::<std::io::Result<Vec<_>>>()?;
    let stop = AtomicBool::new(false);
    // One writer per eventfd, each counting its writes, while the main thread keeps moving the
    // kick eventfd from one to the next.
    let written: Vec<u64> = thread::scope(|s| -> Result<Vec<u64>> {
        let writers: Vec<_> = fds
            .iter()
            .map(|fd| {
                let stop = &stop;
                s.spawn(move || -> std::io::Result<u64> {
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        fd.post(1)?;
                        n += 1;
                    }
                    Ok(n)
                })
            })
            .collect();
        for round in 0..200 {
            ch.attach_kickfd(0, &fds[round % fds.len()])?;
        }
        ch.detach_kickfd(0)?;
        stop.store(true, Ordering::Relaxed);
        writers
            .into_iter()
            .map(|w| crate::join(w, "writer"))
            .collect()
    })?;
    // Exact ledger: whatever the module did not consume is still in each eventfd.
    let left: u64 = fds
        .iter()
        .map(|f| f.drain())
        .sum::<std::io::Result<u64>>()?;
    let s = crate::idle(&ch)?;
    let sent: u64 = written.iter().sum();
    ensure!(
        s.fd_kicks + left == sent,
        "sent {sent}, consumed {} + left {left}: {s:?}",
        s.fd_kicks
    );
    ensure!(notify.drain()? == s.fd_kicks, "{s:?}");
    Ok(())
}

fn kickfd_errors() -> Result<()> {
    let ch = Channel::open()?;
    let raw = |a: sys::Attach| crate::errors::raw(&ch, sys::IOC_KICKFD, &a as *const _ as usize);
    let kick = Notifier::new()?;
    let fd = kick.as_fd().as_raw_fd();
    expect_errno(
        raw(sys::Attach {
            fd: 1000,
            ..Default::default()
        }),
        Errno::EBADF,
        "closed fd",
    )?;
    expect_errno(
        raw(sys::Attach {
            fd: -7,
            ..Default::default()
        }),
        Errno::EBADF,
        "fd < -1",
    )?;
    let (r, _w) = pipe()?;
    expect_errno(ch.attach_kickfd(0, &r), Errno::EINVAL, "a pipe")?;
    expect_errno(ch.attach_kickfd(0, &ch), Errno::EINVAL, "the channel")?;
    expect_errno(
        ch.attach_kickfd(sys::NR_SLOTS, &kick),
        Errno::EINVAL,
        "slot 64",
    )?;
    expect_errno(
        raw(sys::Attach {
            fd,
            flags: 1,
            ..Default::default()
        }),
        Errno::EINVAL,
        "flags",
    )?;
    expect_errno(
        raw(sys::Attach {
            fd,
            reserved: 1,
            ..Default::default()
        }),
        Errno::EINVAL,
        "reserved",
    )?;
    let null = crate::errors::raw(&ch, sys::IOC_KICKFD, 0);
    expect_errno(null, Errno::EFAULT, "NULL")?;
    let s = ch.stats()?;
    ensure!(
        s.kickfds == 0 && s.kicks == 0,
        "a rejected kick eventfd was hooked: {s:?}"
    );
    Ok(())
}

fn fdinfo_shows_state_without_pointers() -> Result<()> {
    let (ch, notify, kick) = pair(9)?;
    ch.attach(10, &notify)?;
    kick.post(3)?;
    collect(&notify, 3)?;
    settle(&ch, &notify)?;
    let info = ch.fdinfo().context("read fdinfo")?;
    let pid = ch.stats()?.thread_pid;
    for want in [
        format!("thread_pid:\t{pid}"),
        "kicks:\t3".into(),
        "fd_kicks:\t3".into(),
        "notifies:\t3".into(),
        "attached:\t2".into(),
        "kickfds:\t1".into(),
        "slot:\t9\tnotify: attached\tkickfd: attached\tpending: 0".into(),
        "slot:\t10\tnotify: attached\tkickfd: none\tpending: 0".into(),
    ] {
        ensure!(info.contains(&want), "fdinfo lacks {want:?}:\n{info}");
    }
    ensure!(
        !info.contains("slot:\t0\t"),
        "unused slots are listed:\n{info}"
    );
    // No kernel address: no long hex run and no 0xffff prefix anywhere.
    let hexrun = info
        .split(|c: char| !c.is_ascii_hexdigit())
        .any(|w| w.len() >= 12);
    ensure!(
        !hexrun && !info.contains("0xffff"),
        "fdinfo looks like it prints a pointer:\n{info}"
    );
    Ok(())
}

/// The header: `kickfds` counts the slots with a kick eventfd that user space has not closed,
/// and fdinfo shows a closed one as "closed" until the thread releases it. With the thread
/// held off its CPU, a closed kick eventfd is at once out of the count and "closed" (and a slot
/// with no other use still has its line), then "none" once the thread runs.
fn kickfd_closed_not_counted() -> Result<()> {
    let ch = crate::contract::pinned_channel()?;
    let (k1, k2) = (Notifier::new()?, Notifier::new()?);
    ch.attach_kickfd(3, &k1)?;
    ch.attach_kickfd(4, &k2)?;
    let st = ch.stats()?;
    ensure!(st.kickfds == 2, "{st:?}");
    let (s, info, ran) = crate::contract::with_cpu_held(|| {
        let before = crate::contract::context_switches(st.thread_pid)?;
        drop(k1);
        let (s, info) = (ch.stats()?, ch.fdinfo()?);
        Ok((
            s,
            info,
            crate::contract::context_switches(st.thread_pid)? != before,
        ))
    })?;
    // A throttled hog lets the thread run, which may release it before the reads above.
    ensure!(!ran, "the thread ran while held: nothing was tested");
    let line = |slot: u32| {
        info.lines()
            .find(|l| l.starts_with(&format!("slot:\t{slot}\t")))
            .map(str::to_owned)
    };
    ensure!(s.kickfds == 1, "a closed kick eventfd counted: {s:?}");
    ensure!(
        line(3).is_some_and(|l| l.contains("\tkickfd: closed\t"))
            && line(4).is_some_and(|l| l.contains("\tkickfd: attached\t")),
        "{info}"
    );
    let s = wait_kickfds(&ch, 1)?;
    ensure!(
        !ch.fdinfo()?.contains("slot:\t3\t"),
        "a released slot with no other use kept its line: {}",
        ch.fdinfo()?
    );
    ensure!(s.kickfds == 1, "{s:?}");
    Ok(())
}
