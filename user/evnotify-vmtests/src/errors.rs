//! Every error path: each bad request gets its own errno and leaves the channel working.

use crate::{collect, expect_errno, settle, Test};
use anyhow::{ensure, Result};
use evnotify::{sys, Channel, Notifier};
use nix::{errno::Errno, unistd::pipe};
use std::{
    mem::size_of,
    os::fd::{AsFd, AsRawFd},
    time::{Duration, Instant},
};

pub const TESTS: &[Test] = &[
    ("err_attach_closed_fd_ebadf", err_attach_closed_fd_ebadf),
    ("err_attach_negative_fd_ebadf", err_attach_negative_fd_ebadf),
    (
        "err_attach_non_eventfd_einval",
        err_attach_non_eventfd_einval,
    ),
    ("err_attach_flags_einval", err_attach_flags_einval),
    ("err_attach_reserved_einval", err_attach_reserved_einval),
    ("err_attach_slot_range_einval", err_attach_slot_range_einval),
    (
        "err_kick_flags_reserved_einval",
        err_kick_flags_reserved_einval,
    ),
    ("err_kick_count_range_einval", err_kick_count_range_einval),
    ("err_kick_slot_range_einval", err_kick_slot_range_einval),
    ("err_unknown_ioctl_enotty", err_unknown_ioctl_enotty),
    ("err_wrong_size_enotty", err_wrong_size_enotty),
    ("err_wrong_direction_enotty", err_wrong_direction_enotty),
    ("err_bad_pointer_efault", err_bad_pointer_efault),
    ("misaligned_pointer_ok", misaligned_pointer_ok),
    ("errors_leave_channel_intact", errors_leave_channel_intact),
    (
        "errors_leave_timer_and_signal",
        errors_leave_timer_and_signal,
    ),
];

/// Issues a raw ioctl, as a buggy or hostile caller would.
pub fn raw(ch: &Channel, req: u64, arg: usize) -> nix::Result<i32> {
    // SAFETY: The device reads or writes at most `_IOC_SIZE(req)` bytes at `arg`, and every
    // caller passes either a buffer of that size or an address the kernel must reject.
    Errno::result(unsafe { libc::ioctl(ch.as_fd().as_raw_fd(), req as _, arg) })
}

fn attach(ch: &Channel, a: sys::Attach) -> nix::Result<i32> {
    raw(ch, sys::IOC_ATTACH, &a as *const _ as usize)
}

fn kick(ch: &Channel, k: sys::Kick) -> nix::Result<i32> {
    raw(ch, sys::IOC_KICK, &k as *const _ as usize)
}

/// Builds an `_IOC` number (x86 layout).
const fn ioc(dir: u64, nr: u64, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | ((sys::IOC_MAGIC as u64) << 8) | nr
}
const NONE: u64 = 0;
const WRITE: u64 = 1;
const READ: u64 = 2;

fn err_attach_closed_fd_ebadf() -> Result<()> {
    let ch = Channel::open()?;
    let a = sys::Attach {
        fd: 1000,
        ..Default::default()
    };
    expect_errno(attach(&ch, a), Errno::EBADF, "fd 1000 is not open")?;
    let n = Notifier::new()?;
    let fd = n.as_fd().as_raw_fd();
    drop(n);
    expect_errno(
        attach(&ch, sys::Attach { fd, ..a }),
        Errno::EBADF,
        "closed eventfd",
    )
}

fn err_attach_negative_fd_ebadf() -> Result<()> {
    let ch = Channel::open()?;
    for fd in [-2, i32::MIN] {
        expect_errno(
            attach(
                &ch,
                sys::Attach {
                    fd,
                    ..Default::default()
                },
            ),
            Errno::EBADF,
            "fd < -1",
        )?;
    }
    Ok(())
}

fn err_attach_non_eventfd_einval() -> Result<()> {
    let ch = Channel::open()?;
    let (r, _w) = pipe()?;
    expect_errno(ch.attach(0, &r), Errno::EINVAL, "a pipe")?;
    expect_errno(ch.attach(0, &ch), Errno::EINVAL, "the channel itself")?;
    let other = Channel::open()?;
    expect_errno(ch.attach(0, &other), Errno::EINVAL, "another channel")
}

fn with_eventfd(f: impl Fn(&Channel, i32) -> Result<()>) -> Result<()> {
    let ch = Channel::open()?;
    let n = Notifier::new()?;
    f(&ch, n.as_fd().as_raw_fd())?;
    ensure!(
        ch.stats()?.attached == 0,
        "a rejected attach attached something"
    );
    Ok(())
}

fn err_attach_flags_einval() -> Result<()> {
    with_eventfd(|ch, fd| {
        for flags in [1, 0x8000_0000] {
            expect_errno(
                attach(
                    ch,
                    sys::Attach {
                        fd,
                        flags,
                        ..Default::default()
                    },
                ),
                Errno::EINVAL,
                "flags",
            )?;
        }
        Ok(())
    })
}

fn err_attach_reserved_einval() -> Result<()> {
    with_eventfd(|ch, fd| {
        let a = sys::Attach {
            fd,
            reserved: 1,
            ..Default::default()
        };
        expect_errno(attach(ch, a), Errno::EINVAL, "reserved")
    })
}

fn err_attach_slot_range_einval() -> Result<()> {
    with_eventfd(|ch, fd| {
        for slot in [sys::NR_SLOTS, sys::NR_SLOTS + 1, u32::MAX] {
            let a = sys::Attach {
                fd,
                slot,
                ..Default::default()
            };
            expect_errno(attach(ch, a), Errno::EINVAL, &format!("slot {slot}"))?;
            expect_errno(
                ch.detach(slot),
                Errno::EINVAL,
                &format!("detach slot {slot}"),
            )?;
        }
        Ok(())
    })
}

fn no_kicks_taken(ch: &Channel) -> Result<()> {
    let s = ch.stats()?;
    ensure!(
        s.kicks == 0 && s.pending == 0,
        "a rejected kick was counted: {s:?}"
    );
    // Nor did a rejected request (a share among them) give the channel a worker.
    let w = ch.worker()?;
    ensure!(
        w.id == 0 && w.thread_pid == 0 && s.thread_pid == 0,
        "a rejected request started a worker: {w:?} {s:?}"
    );
    Ok(())
}

fn err_kick_flags_reserved_einval() -> Result<()> {
    let ch = Channel::open()?;
    let k = sys::Kick {
        count: 1,
        ..Default::default()
    };
    expect_errno(
        kick(&ch, sys::Kick { flags: 1, ..k }),
        Errno::EINVAL,
        "flags",
    )?;
    expect_errno(
        kick(&ch, sys::Kick { reserved: 1, ..k }),
        Errno::EINVAL,
        "reserved",
    )?;
    no_kicks_taken(&ch)
}

fn err_kick_count_range_einval() -> Result<()> {
    let ch = Channel::open()?;
    expect_errno(ch.kick(0, 0), Errno::EINVAL, "count 0")?;
    expect_errno(
        ch.kick(0, sys::MAX_KICK + 1),
        Errno::EINVAL,
        "count MAX_KICK+1",
    )?;
    expect_errno(ch.kick(0, u32::MAX), Errno::EINVAL, "count u32::MAX")?;
    no_kicks_taken(&ch)
}

fn err_kick_slot_range_einval() -> Result<()> {
    let ch = Channel::open()?;
    for slot in [sys::NR_SLOTS, u32::MAX] {
        expect_errno(ch.kick(slot, 1), Errno::EINVAL, &format!("slot {slot}"))?;
    }
    no_kicks_taken(&ch)
}

fn err_unknown_ioctl_enotty() -> Result<()> {
    let ch = Channel::open()?;
    let mut buf = [0u8; 64];
    let p = buf.as_mut_ptr() as usize;
    for req in [
        ioc(NONE, 0x1f, 0),
        ioc(READ, 0x04, 16),
        ioc(READ | WRITE, 0xff, 16),
        0x5401,                                   // TCGETS: not a tty.
        (0x4000_0000 | (16 << 16) | (0xE5 << 8)), // Another driver's magic.
    ] {
        expect_errno(
            raw(&ch, req, p),
            Errno::ENOTTY,
            &format!("request {req:#x}"),
        )?;
    }
    Ok(())
}

fn err_wrong_size_enotty() -> Result<()> {
    let ch = Channel::open()?;
    let mut buf = [0u8; 128];
    let p = buf.as_mut_ptr() as usize;
    for (dir, nr, size) in [
        (READ, 0, 8),
        (READ, 0, 24),
        (WRITE, 1, 8),
        (WRITE, 1, 32),
        (WRITE, 2, 12),
        (READ, 3, 40),
        (READ, 3, 56),
        // STATS before API version 2 (104 bytes): another number now (the header).
        (READ, 3, 104),
        (WRITE, 4, size_of::<sys::Attach>() + 8),
        (WRITE, 4, size_of::<sys::Attach>() - 4),
        (WRITE, 5, size_of::<sys::Timer>() + 8),
        (WRITE, 5, size_of::<sys::Timer>() - 8),
        (WRITE, 6, size_of::<sys::Signal>() + 8),
        (WRITE, 6, size_of::<sys::Signal>() - 4),
        (WRITE, 7, size_of::<sys::BusyPoll>() + 8),
        (WRITE, 7, size_of::<sys::BusyPoll>() - 4),
        (WRITE, 8, 8),
        (WRITE, 8, 24),
        (READ, 9, 8),
        (READ, 9, 24),
        (NONE, 0x0A, 8),
        (READ, 0x0B, 48),
        (READ, 0x0B, 64),
    ] {
        expect_errno(
            raw(&ch, ioc(dir, nr, size), p),
            Errno::ENOTTY,
            &format!("nr {nr} size {size}"),
        )?;
    }
    no_kicks_taken(&ch)
}

fn err_wrong_direction_enotty() -> Result<()> {
    let ch = Channel::open()?;
    let mut buf = [0u8; 64];
    let p = buf.as_mut_ptr() as usize;
    for (dir, nr, size) in [
        (WRITE, 0, size_of::<sys::Version>()),
        (NONE, 0, 0),
        (READ, 1, size_of::<sys::Attach>()),
        (READ | WRITE, 2, size_of::<sys::Kick>()),
        (WRITE, 3, size_of::<sys::Stats>()),
        (READ, 8, size_of::<sys::Share>()),
        (READ | WRITE, 8, size_of::<sys::Share>()),
        (READ, 5, size_of::<sys::Timer>()),
        (READ, 6, size_of::<sys::Signal>()),
        (READ, 7, size_of::<sys::BusyPoll>()),
        (WRITE, 9, size_of::<sys::Worker>()),
        (NONE, 9, 0),
        (WRITE, 0x0A, 0),
        (READ, 0x0A, 0),
        (WRITE, 0x0B, size_of::<sys::RingStats>()),
        (NONE, 0x0B, 0),
    ] {
        expect_errno(
            raw(&ch, ioc(dir, nr, size), p),
            Errno::ENOTTY,
            &format!("dir {dir} nr {nr}"),
        )?;
    }
    no_kicks_taken(&ch)
}

/// Addresses that are not valid user memory: NULL, an inaccessible page, a kernel address.
fn bad_addresses() -> Result<Vec<usize>> {
    // SAFETY: Maps a PROT_NONE page and never unmaps it, so no later mapping can reuse the
    // address while a request points at it.
    let page = unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        ensure!(p != libc::MAP_FAILED, "mmap");
        p as usize
    };
    Ok(vec![0, 8, page, 0xffff_ffff_8100_0000, usize::MAX - 7])
}

fn err_bad_pointer_efault() -> Result<()> {
    let ch = Channel::open()?;
    // With a ring, so that RING_STATS gets as far as writing its reply.
    let _ring = ch.map_ring()?;
    for addr in bad_addresses()? {
        // RING_ENTER takes no argument: any value is fine (`ring.rs` tests it).
        for req in sys::IOCTLS
            .into_iter()
            .filter(|&r| r != sys::IOC_RING_ENTER)
        {
            expect_errno(
                raw(&ch, req, addr),
                Errno::EFAULT,
                &format!("{req:#x} at {addr:#x}"),
            )?;
        }
    }
    no_kicks_taken(&ch)
}

fn misaligned_pointer_ok() -> Result<()> {
    let ch = Channel::open()?;
    let n = Notifier::new()?;
    let mut buf = [0u8; 64];
    let a = sys::Attach {
        fd: n.as_fd().as_raw_fd(),
        ..Default::default()
    };
    let k = sys::Kick {
        count: 2,
        ..Default::default()
    };
    // SAFETY: Both structs fit in `buf` at offset 1; the kernel copies bytes, not aligned words.
    unsafe {
        std::ptr::write_unaligned(buf.as_mut_ptr().add(1).cast(), a);
        raw(&ch, sys::IOC_ATTACH, buf.as_ptr() as usize + 1)?;
        std::ptr::write_unaligned(buf.as_mut_ptr().add(1).cast(), k);
        raw(&ch, sys::IOC_KICK, buf.as_ptr() as usize + 1)?;
        raw(&ch, sys::IOC_STATS, buf.as_mut_ptr() as usize + 3)?;
    }
    collect(&n, 2)?;
    settle(&ch, &n)?;
    Ok(())
}

fn errors_leave_channel_intact() -> Result<()> {
    let ch = Channel::open()?;
    let n = Notifier::new()?;
    ch.attach(5, &n)?;
    let (r, _w) = pipe()?;
    // A failed replacement keeps the eventfd that was attached.
    expect_errno(ch.attach(5, &r), Errno::EINVAL, "pipe")?;
    expect_errno(
        attach(
            &ch,
            sys::Attach {
                slot: 5,
                fd: 999,
                ..Default::default()
            },
        ),
        Errno::EBADF,
        "fd 999",
    )?;
    expect_errno(raw(&ch, sys::IOC_KICK, 0), Errno::EFAULT, "NULL kick")?;
    ch.kick(5, 3)?;
    collect(&n, 3)?;
    let s = settle(&ch, &n)?;
    ensure!(s.kicks == 3 && s.notifies == 3 && s.attached == 1, "{s:?}");
    Ok(())
}

/// A failed call changes no timer or signal (the header): rejected TIMER and SIGNAL calls on a
/// slot that has both leave its timer ticking and its signal sent, for every tick and kick.
fn errors_leave_timer_and_signal() -> Result<()> {
    let sig = libc::SIGRTMIN() + 9;
    let sfd = evnotify::catch_signal(sig)?;
    let ch = Channel::open()?;
    let n = Notifier::new()?;
    ch.attach(3, &n)?;
    ch.set_signal(3, sig)?;
    ch.set_timer(3, Duration::from_millis(5), 0)?;
    let timer = |t: sys::Timer| raw(&ch, sys::IOC_TIMER, &t as *const _ as usize);
    let signal = |g: sys::Signal| raw(&ch, sys::IOC_SIGNAL, &g as *const _ as usize);
    let t = sys::Timer {
        slot: 3,
        period_ns: sys::MIN_PERIOD_NS,
        ..Default::default()
    };
    let g = sys::Signal {
        slot: 3,
        signo: sig,
        ..Default::default()
    };
    for (what, r) in [
        ("TIMER flags 2", timer(sys::Timer { flags: 2, ..t })),
        ("TIMER period 1", timer(sys::Timer { period_ns: 1, ..t })),
        (
            "TIMER start without ABSTIME",
            timer(sys::Timer { start_ns: 1, ..t }),
        ),
        ("SIGNAL signo 65", signal(sys::Signal { signo: 65, ..g })),
        ("SIGNAL signo -2", signal(sys::Signal { signo: -2, ..g })),
        ("SIGNAL flags 1", signal(sys::Signal { flags: 1, ..g })),
        (
            "SIGNAL reserved 1",
            signal(sys::Signal { reserved: 1, ..g }),
        ),
    ] {
        expect_errno(r, Errno::EINVAL, what)?;
    }
    expect_errno(raw(&ch, sys::IOC_TIMER, 0), Errno::EFAULT, "NULL timer")?;
    expect_errno(raw(&ch, sys::IOC_SIGNAL, 0), Errno::EFAULT, "NULL signal")?;
    // The timer still ticks (a few more ticks), and the signal is still sent for each.
    let before = ch.stats()?.timer_ticks;
    let t0 = Instant::now();
    while ch.stats()?.timer_ticks < before + 3 {
        ensure!(
            t0.elapsed() < crate::hang(),
            "the timer stopped after the failed calls"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    ch.cancel_timer(3)?;
    ch.kick(3, 2)?;
    let s = crate::idle(&ch)?;
    let notified = n.drain()?;
    let mut got = 0;
    while sfd.wait_timeout(Duration::from_millis(100))?.is_some() {
        got += 1;
    }
    ensure!(
        s.signal_slots == 1
            && s.signals == s.timer_ticks + 2
            && got == s.signals
            && notified == s.signals
            && s.notifies == notified,
        "{got} signals received, {notified} notified: {s:?}"
    );
    Ok(())
}
