//! Shared workers: each bad `EVNOTIFY_IOC_SHARE_WORKER` request has its errno, and shares
//! racing each other end without deadlock, their channel counts adding up.
//!
//! Every wait has a deadline ([`hang`](crate::hang)); none asserts a speed.

use crate::workers::{share_raw, worker};
use crate::{errno, errors::raw, expect_errno, hang, Test};
use anyhow::{bail, ensure, Result};
use evnotify::{sys, Channel, Notifier};
use nix::{
    errno::Errno,
    unistd::{dup, pipe},
};
use std::{
    os::{
        fd::{AsFd, AsRawFd, OwnedFd},
        unix::fs::OpenOptionsExt,
    },
    time::Instant,
};

pub const TESTS: &[Test] = &[
    ("workers_share_errors", workers_share_errors),
    ("workers_share_races", workers_share_races),
];

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
    // An O_PATH descriptor of the device is no open channel (the header: EBADF).
    let path: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(evnotify::DEVICE)?
        .into();
    expect_errno(
        share_raw(
            &ch,
            sys::Share {
                fd: path.as_raw_fd(),
                ..ok
            },
        ),
        Errno::EBADF,
        "an O_PATH descriptor of the device",
    )?;
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
        expect_errno(ch.share_worker(&fd), Errno::EINVAL, what)?;
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
