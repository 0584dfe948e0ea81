//! Hostile use of descriptors: an attach that must not wake another watcher of the
//! eventfd, and fds passed over a unix socket to a process that never had them.

use crate::hostile::{child, exit_code};
use crate::{collect, hang, start_thread, Test};
use anyhow::{ensure, Context, Result};
use evnotify::{sys, Channel, Notifier};
use nix::{
    errno::Errno,
    sys::{
        eventfd::{EfdFlags, EventFd},
        socket::{
            recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned,
            MsgFlags, SockFlag, SockType,
        },
    },
};
use std::{
    io::{IoSlice, IoSliceMut},
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd},
    time::{Duration, Instant},
};

pub const TESTS: &[Test] = &[
    (
        "kickfd_attach_wakes_no_watcher",
        kickfd_attach_wakes_no_watcher,
    ),
    ("fds_passed_over_unix_socket", fds_passed_over_unix_socket),
];

/// Voluntary context switches of thread `tid` of this process.
fn ctxt_switches(tid: i32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .context("no voluntary_ctxt_switches")?
        .trim()
        .parse()
        .context("parse")
}

/// Hooking an eventfd that holds a count takes the count without an `EPOLLIN` wake-up of the
/// eventfd's other watchers: a thread blocked in `epoll_wait` on it for `EPOLLIN` sleeps on.
/// (The `EPOLLOUT` wake-up for blocked writers is not seen by it.)
fn kickfd_attach_wakes_no_watcher() -> Result<()> {
    let ch = Channel::open()?;
    start_thread(&ch)?;
    let k = EventFd::from_value_and_flags(5, EfdFlags::EFD_NONBLOCK)?;
    // Another eventfd in the same epoll set, to end the wait.
    let w = Notifier::new()?;
    // SAFETY: Plain syscalls; `ev` outlives the call.
    let ep = unsafe {
        let ep = Errno::result(libc::epoll_create1(libc::EPOLL_CLOEXEC))?;
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLET) as u32,
            u64: 1,
        };
        Errno::result(libc::epoll_ctl(
            ep,
            libc::EPOLL_CTL_ADD,
            k.as_fd().as_raw_fd(),
            &mut ev,
        ))?;
        ev.events = libc::EPOLLIN as u32;
        Errno::result(libc::epoll_ctl(
            ep,
            libc::EPOLL_CTL_ADD,
            w.as_fd().as_raw_fd(),
            &mut ev,
        ))?;
        OwnedFd::from_raw_fd(ep)
    };
    let wait = |ms: i32| -> nix::Result<i32> {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: `ev` is a valid buffer for one event.
        Errno::result(unsafe { libc::epoll_wait(ep.as_raw_fd(), &mut ev, 1, ms) })
    };
    ensure!(wait(0)? == 1, "the first edge is not reported");
    let tid = std::sync::atomic::AtomicI32::new(0);
    std::thread::scope(|sc| -> Result<()> {
        let h = sc.spawn(|| {
            tid.store(
                nix::unistd::gettid().as_raw(),
                std::sync::atomic::Ordering::SeqCst,
            );
            wait(hang().as_millis() as i32)
        });
        let t = Instant::now();
        let tid = loop {
            let tid = tid.load(std::sync::atomic::Ordering::SeqCst);
            if tid != 0 && crate::lifecycle::proc_state(tid).is_ok_and(|s| s == 'S') {
                break tid;
            }
            ensure!(t.elapsed() < hang(), "the watcher never slept");
            std::thread::sleep(Duration::from_millis(1));
        };
        std::thread::sleep(Duration::from_millis(20));
        let before = ctxt_switches(tid)?;
        ch.attach_kickfd(0, &k)?;
        std::thread::sleep(Duration::from_millis(50));
        let after = ctxt_switches(tid)?;
        let s = crate::idle(&ch)?;
        // End the wait through the other eventfd (writes to `k` are consumed by the channel).
        w.post(1)?;
        let woke = crate::join(h, "watcher")?;
        ensure!(s.fd_kicks == 5, "initial count not taken: {s:?}");
        ensure!(
            after == before,
            "the watcher woke {} times at attach",
            after - before
        );
        ensure!(
            woke == 1,
            "the watcher saw {woke} events for the other eventfd"
        );
        Ok(())
    })
}

/// A connected pair of unix stream sockets, to pass fds over (SCM_RIGHTS).
pub fn unix_pair() -> nix::Result<(OwnedFd, OwnedFd)> {
    socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
}

/// The descriptors that the SCM_RIGHTS messages of `msg` brought.
pub fn passed_fds(msg: &nix::sys::socket::RecvMsg<'_, '_, ()>) -> nix::Result<Vec<RawFd>> {
    Ok(msg
        .cmsgs()?
        .filter_map(|c| match c {
            ControlMessageOwned::ScmRights(fds) => Some(fds),
            _ => None,
        })
        .flatten()
        .collect())
}

/// A channel fd and a kick eventfd passed over a unix socket to a process that never had
/// them: both work there.
fn fds_passed_over_unix_socket() -> Result<()> {
    let (a, b) = unix_pair()?;
    // Forked before the fds exist, so it can only have them from the socket.
    let pid = child(|| {
        let run = || -> Result<()> {
            let mut buf = [0u8; 1];
            let mut iov = [IoSliceMut::new(&mut buf)];
            let mut space = nix::cmsg_space!([RawFd; 2]);
            let msg = recvmsg::<()>(b.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::empty())?;
            let fds = passed_fds(&msg)?;
            ensure!(fds.len() == 2, "received {fds:?}");
            let req = sys::Kick {
                slot: 0,
                count: 2,
                ..Default::default()
            };
            // SAFETY: `fds[0]` is the channel and `req` a valid `struct evnotify_kick`; `fds[1]`
            // is the eventfd, written with an 8-byte count.
            unsafe {
                Errno::result(libc::ioctl(fds[0], sys::IOC_KICK as _, &req))?;
                let three = 3u64.to_ne_bytes();
                ensure!(libc::write(fds[1], three.as_ptr().cast(), 8) == 8, "write");
            }
            Ok(())
        };
        i32::from(run().is_err())
    })?;
    let ch = Channel::open()?;
    let (n, k) = (Notifier::new()?, Notifier::new()?);
    ch.attach(0, &n)?;
    ch.attach_kickfd(0, &k)?;
    let fds = [ch.as_fd().as_raw_fd(), k.as_fd().as_raw_fd()];
    sendmsg::<()>(
        a.as_raw_fd(),
        &[IoSlice::new(b"x")],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )?;
    ensure!(exit_code(pid)? == 0, "the receiving process failed");
    collect(&n, 5)?;
    let s = crate::idle(&ch)?;
    ensure!(s.kicks == 5 && s.fd_kicks == 3 && s.notifies == 5, "{s:?}");
    Ok(())
}
