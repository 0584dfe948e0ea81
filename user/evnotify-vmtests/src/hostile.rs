//! Hostile use, from an outside review: signal permissions across set-uid exec, semaphore
//! eventfds, unbounded kick counts, feedback loops, thread start outside `open`, per-user
//! limits, the stats identity under load, spurious wake-ups, and fds passed over a socket.

use crate::{
    collect, expect_errno,
    faults::{each_allocation, reload},
    hang, start_thread, Test,
};
use anyhow::{bail, ensure, Context, Result};
use evnotify::{sys, Channel, Notifier};
use nix::{
    errno::Errno,
    sys::{
        eventfd::{EfdFlags, EventFd},
        signal::{kill, Signal},
        socket::{
            recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned,
            MsgFlags, SockFlag, SockType,
        },
        wait::{waitpid, WaitPidFlag, WaitStatus},
    },
    unistd::{fork, ForkResult, Pid},
};
use std::{
    io::{BufRead, BufReader, IoSlice, IoSliceMut, Write},
    os::{
        fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::fs::PermissionsExt,
    },
    time::{Duration, Instant},
};

pub const TESTS: &[Test] = &[
    (
        "signal_refused_after_setuid_exec",
        signal_refused_after_setuid_exec,
    ),
    ("signal_same_user_delivered", signal_same_user_delivered),
    ("kickfd_semaphore_refused", kickfd_semaphore_refused),
    (
        "notify_semaphore_eventfd_exact",
        notify_semaphore_eventfd_exact,
    ),
    ("kickfd_huge_write_bounded", kickfd_huge_write_bounded),
    ("kickfd_huge_write_no_target", kickfd_huge_write_no_target),
    ("feedback_loop_bounded", feedback_loop_bounded),
    (
        "feedback_loop_two_channels_bounded",
        feedback_loop_two_channels_bounded,
    ),
    ("signal_queue_full_counted", signal_queue_full_counted),
    ("fault_inject_thread_start", fault_inject_thread_start),
    ("limit_per_user_two_uids", limit_per_user_two_uids),
    ("stats_identity_under_load", stats_identity_under_load),
    (
        "kickfd_attach_wakes_no_watcher",
        kickfd_attach_wakes_no_watcher,
    ),
    ("fds_passed_over_unix_socket", fds_passed_over_unix_socket),
];

/// An unprivileged uid for the tests.
pub(crate) const USER: u32 = 1000;

/// The signal the permission tests send.
fn sig() -> i32 {
    libc::SIGRTMIN() + 7
}

/// Runs `f` in a forked child, which exits with its return value.
fn child(f: impl FnOnce() -> i32) -> Result<Pid> {
    // SAFETY: The tests run one at a time and join their helper threads, so the child is a
    // copy of a single-threaded process; it leaves with `_exit`.
    match unsafe { fork() }? {
        ForkResult::Child => {
            let code = f();
            // SAFETY: Ends the child without running the parent's destructors twice.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => Ok(child),
    }
}

/// Waits for `pid` to exit, at most [`hang()`], and returns its exit code.
fn exit_code(pid: Pid) -> Result<i32> {
    let t = Instant::now();
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG))? {
            WaitStatus::Exited(_, code) => return Ok(code),
            WaitStatus::StillAlive => {
                if t.elapsed() > hang() {
                    let _ = kill(pid, Signal::SIGKILL);
                    let _ = waitpid(pid, None);
                    bail!("child {pid} hung");
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            other => bail!("child {pid}: {other:?}"),
        }
    }
}

/// Sets all three uids of the calling thread only (a raw syscall: glibc would change every
/// thread), or, with `keep_saved`, only the real and effective ones, so root can return.
fn set_thread_uids(uid: u32, keep_saved: bool) -> nix::Result<()> {
    let saved = if keep_saved { u32::MAX } else { uid };
    // SAFETY: A plain syscall with integer arguments.
    Errno::result(unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, saved) }).map(drop)
}

/// A set-uid root copy of this binary, in a directory of its own that only root can list,
/// removed when dropped.
struct SuidCopy {
    dir: std::path::PathBuf,
    path: std::ffi::CString,
}

impl SuidCopy {
    fn new() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("evnotify-suid.{}", std::process::id()));
        std::fs::create_dir(&dir).context("private directory")?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))?;
        let this = Self {
            path: std::ffi::CString::new(dir.join("helper").into_os_string().into_encoded_bytes())?,
            dir,
        };
        let path = this.dir.join("helper");
        std::fs::copy(std::env::current_exe()?, &path).context("copy the test binary")?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o4755))?;
        Ok(this)
    }
}

impl Drop for SuidCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits until `fd` is readable, at most [`hang`].
pub(crate) fn readable_within(fd: std::os::fd::BorrowedFd<'_>, what: &str) -> Result<()> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let ms = PollTimeout::from(u16::try_from(hang().as_millis()).unwrap_or(u16::MAX));
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    ensure!(
        poll(&mut fds, ms)? == 1,
        "nothing from {what} within {:?}",
        hang()
    );
    Ok(())
}

/// Reads a line from `r`, failing if none starts within [`hang`].
fn line_within(r: &mut BufReader<std::fs::File>, what: &str) -> Result<String> {
    if r.buffer().is_empty() {
        readable_within(r.get_ref().as_fd(), what)?;
    }
    let mut line = String::new();
    r.read_line(&mut line)?;
    Ok(line)
}

/// `evnotify-vmtests --suid-helper`, run set-uid root from a uid-1000 process: becomes root in
/// all its uids, as su does, reports `ready`, waits for a line on stdin, then prints how many
/// of `sig()` it has received.
pub fn suid_helper() -> i32 {
    let run = || -> Result<u64> {
        let sfd = evnotify::catch_signal(sig())?;
        set_thread_uids(0, false).context("setresuid(0, 0, 0)")?;
        println!("ready");
        std::io::stdout().flush()?;
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        let mut n = 0;
        while sfd.try_read()?.is_some() {
            n += 1;
        }
        Ok(n)
    };
    match run() {
        Ok(n) => {
            println!("got {n}");
            0
        }
        Err(e) => {
            println!("error {e:#}");
            1
        }
    }
}

/// The review's scenario: a user sets a signal on a slot, then the process execs a set-uid
/// program that becomes root. The user can no longer `kill()` it, so a kick must not
/// signal it either: the send is refused and counted.
fn signal_refused_after_setuid_exec() -> Result<()> {
    let helper = SuidCopy::new()?;
    let ch = Channel::open()?;
    let (to_r, to_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (from_r, from_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let ch_fd = ch.as_fd().as_raw_fd();
    let target = child(|| {
        let path = helper.path.as_c_str();
        let argv = [path.as_ptr(), c"--suid-helper".as_ptr(), std::ptr::null()];
        let req = sys::Signal {
            slot: 0,
            signo: sig(),
            ..Default::default()
        };
        // SAFETY: Plain syscalls on fds this process owns; `req` outlives the ioctl, and
        // `argv` is a NULL-terminated array of C strings.
        unsafe {
            if libc::dup2(to_r.as_raw_fd(), 0) < 0
                || libc::dup2(from_w.as_raw_fd(), 1) < 0
                || libc::syscall(libc::SYS_setresuid, USER, USER, USER) != 0
                || libc::ioctl(ch_fd, sys::IOC_SIGNAL as _, &req) != 0
            {
                return 2;
            }
            libc::execv(path.as_ptr(), argv.as_ptr());
        }
        3
    })?;
    drop((to_r, from_w));
    let mut out = BufReader::new(std::fs::File::from(from_r));
    let mut to = std::fs::File::from(to_w);
    let line = line_within(&mut out, "the set-uid helper")?;
    ensure!(line == "ready\n", "helper said {line:?}");
    // The user's own kill() is refused now...
    let user = child(|| {
        if set_thread_uids(USER, false).is_err() {
            return 2;
        }
        // SAFETY: A plain syscall (`Signal` has no real-time variants).
        match Errno::result(unsafe { libc::kill(target.as_raw(), sig()) }) {
            Err(Errno::EPERM) => 0,
            _ => 1,
        }
    })?;
    let code = exit_code(user)?;
    ensure!(
        code == 0,
        "uid {USER} could kill() the set-uid process (code {code})"
    );
    // ...so the kick's signal must be refused too.
    ch.kick(0, 1)?;
    let s = crate::idle(&ch)?;
    writeln!(to, "go")?;
    let line = line_within(&mut out, "the set-uid helper")?;
    ensure!(exit_code(target)? == 0, "helper failed: {line:?}");
    ensure!(
        line == "got 0\n",
        "the set-uid process received: {line:?}; {s:?}"
    );
    ensure!(
        s.sig_refused == 1 && s.signals == 0 && s.dropped == 1,
        "{s:?}"
    );
    let info = ch.fdinfo()?;
    ensure!(info.contains("sig_refused:\t1\n"), "fdinfo: {info}");
    Ok(())
}

/// The check refuses nothing it should allow: a uid-1000 setter still signals itself.
fn signal_same_user_delivered() -> Result<()> {
    let ch = Channel::open()?;
    let (r, w) = nix::unistd::pipe()?;
    let pid = child(|| {
        let run = || -> Result<()> {
            let sfd = evnotify::catch_signal(sig())?;
            set_thread_uids(USER, false)?;
            ch.set_signal(0, sig())?;
            nix::unistd::write(&w, b"r")?;
            let t = Instant::now();
            while sfd.try_read()?.is_none() {
                ensure!(t.elapsed() < hang(), "no signal");
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(())
        };
        i32::from(run().is_err())
    })?;
    drop(w);
    readable_within(r.as_fd(), "the child")?;
    let mut b = [0u8; 1];
    ensure!(
        nix::unistd::read(&r, &mut b)? == 1,
        "child did not get ready"
    );
    ch.kick(0, 1)?;
    ensure!(exit_code(pid)? == 0, "the signal did not arrive");
    let s = crate::idle(&ch)?;
    ensure!(s.signals == 1 && s.sig_refused == 0, "{s:?}");
    Ok(())
}

/// A semaphore eventfd would give up its count one unit at a time: refused, count intact.
fn kickfd_semaphore_refused() -> Result<()> {
    let ch = Channel::open()?;
    let k = EventFd::from_value_and_flags(3, EfdFlags::EFD_SEMAPHORE | EfdFlags::EFD_NONBLOCK)?;
    expect_errno(
        ch.attach_kickfd(0, &k),
        Errno::EOPNOTSUPP,
        "semaphore kick eventfd",
    )?;
    for _ in 0..3 {
        ensure!(k.read()? == 1, "count changed");
    }
    expect_errno(k.read(), Errno::EAGAIN, "fourth read")?;
    let s = ch.stats()?;
    ensure!(s.kickfds == 0 && s.kicks == 0, "{s:?}");
    // A normal eventfd still works on the same slot.
    let n = Notifier::new()?;
    ch.attach_kickfd(0, &n)?;
    ensure!(ch.stats()?.kickfds == 1, "not hooked");
    Ok(())
}

/// A semaphore eventfd as a notify eventfd: N kicks are N reads of 1.
fn notify_semaphore_eventfd_exact() -> Result<()> {
    let ch = Channel::open()?;
    let n = EventFd::from_value_and_flags(0, EfdFlags::EFD_SEMAPHORE | EfdFlags::EFD_NONBLOCK)?;
    ch.attach(0, &n)?;
    ch.kick(0, 5)?;
    let s = crate::idle(&ch)?;
    ensure!(s.notifies == 5, "{s:?}");
    for i in 0..5 {
        ensure!(n.read()? == 1, "read {i}");
    }
    expect_errno(n.read(), Errno::EAGAIN, "sixth read")
}

const HUGE: u64 = 0xffff_ffff_ffff_fffe;

/// The largest eventfd write: at most `MAX_PENDING` kicks are delivered, the rest coalesced,
/// every one accounted for, in bounded time.
fn kickfd_huge_write_bounded() -> Result<()> {
    let ch = Channel::open()?;
    let (n, k) = (Notifier::new()?, Notifier::new()?);
    ch.attach(0, &n)?;
    ch.attach_kickfd(0, &k)?;
    k.post(HUGE)?;
    let s = ch.stats()?;
    ensure!(
        s.kicks == HUGE && s.fd_kicks == HUGE && s.coalesced == HUGE - sys::MAX_PENDING,
        "{s:?}"
    );
    collect(&n, sys::MAX_PENDING)?;
    let s = crate::idle(&ch)?;
    ensure!(
        s.handled == sys::MAX_PENDING && s.notifies == sys::MAX_PENDING && s.pending == 0,
        "{s:?}"
    );
    ensure!(n.drain()? == 0, "extra notifications");
    Ok(())
}

/// With no target the kicks are dropped at once, not in batches: a reader polling the stats
/// meanwhile never sees part of them pending.
fn kickfd_huge_write_no_target() -> Result<()> {
    let ch = Channel::open()?;
    let k = Notifier::new()?;
    start_thread(&ch)?;
    ch.attach_kickfd(1, &k)?;
    let seen = std::thread::scope(|sc| -> Result<Vec<u64>> {
        let reader = sc.spawn(|| -> Result<Vec<u64>> {
            let mut seen = Vec::new();
            let t = Instant::now();
            loop {
                let s = ch.stats()?;
                if !seen.contains(&s.pending) {
                    seen.push(s.pending);
                }
                if s.handled > 1 {
                    return Ok(seen);
                }
                ensure!(t.elapsed() < hang(), "never handled: {s:?}");
            }
        });
        k.post(HUGE)?;
        crate::join(reader, "stats reader")
    })?;
    let s = crate::idle(&ch)?;
    ensure!(
        s.handled == sys::MAX_PENDING + 1 && s.dropped == sys::MAX_PENDING + 1,
        "{s:?}"
    );
    ensure!(
        seen.iter().all(|p| *p == 0 || *p == sys::MAX_PENDING),
        "taken in pieces: pending went through {seen:?}"
    );
    Ok(())
}

/// One eventfd as both notify and kick eventfd of a slot: each round waits at least 1 ms, so
/// in any span the thread answers at most one kick per millisecond.
fn feedback_loop_bounded() -> Result<()> {
    let ch = Channel::open()?;
    let e = Notifier::new()?;
    ch.attach(0, &e)?;
    ch.attach_kickfd(0, &e)?;
    ch.kick(0, 5)?;
    std::thread::sleep(Duration::from_millis(50));
    let (t0, s0) = (Instant::now(), ch.stats()?);
    std::thread::sleep(Duration::from_millis(500));
    let (s1, span) = (ch.stats()?, t0.elapsed());
    let rounds = s1.handled - s0.handled;
    let most = span.as_millis() as u64 + 2;
    ensure!(rounds > 0, "the loop stopped: {s1:?}");
    ensure!(rounds <= most, "{rounds} rounds in {span:?}: {s0:?} {s1:?}");
    // Five kicks became one waiting echo: four were coalesced, and each later round carries one.
    ensure!(s1.coalesced >= 4, "{s1:?}");
    let id = s1.kicks + s1.timer_ticks;
    ensure!(id == s1.handled + s1.pending + s1.coalesced, "{s1:?}");
    ch.detach_kickfd(0)?;
    let s2 = crate::idle(&ch)?;
    std::thread::sleep(Duration::from_millis(20));
    ensure!(
        ch.stats()?.handled == s2.handled,
        "the loop went on after detach"
    );
    Ok(())
}

/// A loop through two channels: A's notify eventfd is B's kick eventfd and the other way
/// round. Each thread's kicks are echoes of the other's signals: one round per millisecond.
fn feedback_loop_two_channels_bounded() -> Result<()> {
    let (a, b) = (Channel::open()?, Channel::open()?);
    let (e1, e2) = (Notifier::new()?, Notifier::new()?);
    a.attach(0, &e1)?;
    a.attach_kickfd(0, &e2)?;
    b.attach(0, &e2)?;
    b.attach_kickfd(0, &e1)?;
    a.kick(0, 1000)?;
    // Measure the loop, not the burst: wait until A has delivered it (a slow host may take
    // longer than any fixed pause).
    let start = Instant::now();
    while a.stats()?.handled < 1000 {
        ensure!(
            start.elapsed() < hang(),
            "A never delivered its burst: {:?}",
            a.stats()?
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let (t0, a0, b0) = (Instant::now(), a.stats()?, b.stats()?);
    std::thread::sleep(Duration::from_millis(500));
    let (a1, b1, span) = (a.stats()?, b.stats()?, t0.elapsed());
    let most = span.as_millis() as u64 + 2;
    for (name, s0, s1) in [("A", a0, a1), ("B", b0, b1)] {
        let rounds = s1.handled - s0.handled;
        ensure!(rounds > 0, "the loop stopped at {name}: {s1:?}");
        ensure!(
            rounds <= most,
            "{name}: {rounds} kicks in {span:?}: {s0:?} {s1:?}"
        );
    }
    // A's burst reached B as echoes: most were coalesced (one may wait per slot and ms).
    ensure!(b1.coalesced > 0, "B took A's burst uncoalesced: {b1:?}");
    Ok(())
}

/// A real-time signal that finds the target's queue full (`RLIMIT_SIGPENDING`) is counted
/// in `sig_refused`, and every kick is accounted for.
fn signal_queue_full_counted() -> Result<()> {
    let ch = Channel::open()?;
    let pid = child(|| {
        let run = || -> Result<()> {
            let sfd = evnotify::catch_signal(sig())?;
            let lim = libc::rlimit {
                rlim_cur: 2,
                rlim_max: 2,
            };
            // SAFETY: `lim` is a valid `rlimit`.
            Errno::result(unsafe { libc::setrlimit(libc::RLIMIT_SIGPENDING, &lim) })?;
            ch.set_signal(0, sig())?;
            ch.kick(0, 5)?;
            let s = crate::idle(&ch)?;
            let mut got = 0;
            while sfd.try_read()?.is_some() {
                got += 1;
            }
            ensure!(
                s.signals + s.sig_refused == 5 && s.sig_refused >= 3,
                "{s:?}"
            );
            ensure!(
                got == s.signals && s.dropped == s.sig_refused,
                "got {got}: {s:?}"
            );
            Ok(())
        };
        match run() {
            Ok(()) => 0,
            Err(e) => {
                println!("# signal_queue_full_counted: {e:#}");
                1
            }
        }
    })?;
    ensure!(exit_code(pid)? == 0, "the child's check failed");
    Ok(())
}

/// A failure to create the thread is the errno of the call that needed it; the channel stays
/// usable, and the next call starts the thread.
fn fault_inject_thread_start() -> Result<()> {
    let chans = (0..64)
        .map(|_| Channel::open())
        .collect::<std::io::Result<Vec<_>>>()?;
    let next = std::cell::Cell::new(0);
    let faults = each_allocation(
        "first kick",
        &[Errno::ENOMEM],
        || {
            let ch = &chans[next.get()];
            next.set(next.get() + 1);
            ch.kick(0, 1)
        },
        |ok| {
            let ch = &chans[next.get() - 1];
            if !ok {
                ensure!(ch.stats()?.thread_pid == 0, "a thread after a failed start");
            }
            let n = Notifier::new()?;
            ch.attach(1, &n)?;
            ch.kick(1, 1)?;
            collect(&n, 1)?;
            Ok(())
        },
    )?;
    ensure!(faults >= 1, "no allocation to fail");
    println!("# fault_inject_thread_start: {faults} faults injected");
    Ok(())
}

/// `max_user_channels` per euid, `max_channels` in all: EMFILE past either, for each user.
fn limit_per_user_two_uids() -> Result<()> {
    reload(c"max_channels=5 max_user_channels=2")?;
    std::fs::set_permissions(evnotify::DEVICE, std::fs::Permissions::from_mode(0o666))?;
    let open_as = |uid: u32, n: usize| -> Result<(Vec<Channel>, Option<Errno>)> {
        std::thread::scope(|sc| {
            let h = sc.spawn(move || -> Result<(Vec<Channel>, Option<Errno>)> {
                set_thread_uids(uid, true)?;
                let mut chans = Vec::new();
                let mut err = None;
                for _ in 0..n {
                    match Channel::open() {
                        Ok(c) => chans.push(c),
                        Err(e) => err = Some(crate::errno(e)),
                    }
                }
                set_thread_uids(0, true)?;
                Ok((chans, err))
            });
            crate::join(h, "opener")
        })
    };
    let r = (|| -> Result<()> {
        let (root, e) = open_as(0, 3)?;
        ensure!(
            root.len() == 2 && e == Some(Errno::EMFILE),
            "root: {} {e:?}",
            root.len()
        );
        let (user, e) = open_as(USER, 3)?;
        ensure!(
            user.len() == 2 && e == Some(Errno::EMFILE),
            "uid {USER}: {} {e:?}",
            user.len()
        );
        // The global ceiling: 5 in all.
        let (other, e) = open_as(USER + 1, 2)?;
        ensure!(
            other.len() == 1 && e == Some(Errno::EMFILE),
            "third uid: {} {e:?}",
            other.len()
        );
        // Closing gives places back to their user.
        drop(user);
        let (user, e) = open_as(USER, 2)?;
        ensure!(
            user.len() == 2 && e.is_none(),
            "after close: {} {e:?}",
            user.len()
        );
        Ok(())
    })();
    reload(c"")?;
    r
}

/// The header's identity holds in every snapshot, read while kicks, kick eventfd writes and
/// timer ticks flow and a reader drains the notifications.
fn stats_identity_under_load() -> Result<()> {
    let ch = Channel::open()?;
    let n = Notifier::new()?;
    let k = Notifier::new()?;
    for slot in 0..4 {
        ch.attach(slot, &n)?;
    }
    ch.attach_kickfd(4, &k)?;
    ch.attach(4, &n)?;
    ch.set_timer(5, Duration::from_millis(1), 0)?;
    let stop = std::sync::atomic::AtomicBool::new(false);
    let snapshots = std::thread::scope(|sc| -> Result<u64> {
        let kickers: Vec<_> = (0..2u32)
            .map(|i| {
                let (ch, stop) = (&ch, &stop);
                sc.spawn(move || -> Result<()> {
                    let mut j = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        ch.kick((i + j) % 4, 1 + j % 64)?;
                        j += 1;
                    }
                    Ok(())
                })
            })
            .collect();
        let writer = sc.spawn(|| -> Result<()> {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                k.post(3)?;
            }
            Ok(())
        });
        let reader = sc.spawn(|| -> Result<()> {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n.wait_timeout(Duration::from_millis(10))?;
            }
            Ok(())
        });
        let mut prev = ch.stats()?;
        let mut count = 0;
        let t = Instant::now();
        let res = (|| -> Result<()> {
            while t.elapsed() < Duration::from_secs(2) {
                let s = ch.stats()?;
                count += 1;
                ensure!(
                    s.kicks + s.timer_ticks == s.handled + s.pending + s.coalesced,
                    "identity broken: {s:?}"
                );
                ensure!(s.fd_kicks <= s.kicks, "fd_kicks > kicks: {s:?}");
                ensure!(
                    s.handled >= prev.handled && s.kicks >= prev.kicks,
                    "went back: {prev:?} {s:?}"
                );
                prev = s;
            }
            Ok(())
        })();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for h in kickers {
            crate::join(h, "kicker")?;
        }
        crate::join(writer, "writer")?;
        crate::join(reader, "reader")?;
        res.map(|()| count)
    })?;
    ch.cancel_timer(5)?;
    let s = crate::idle(&ch)?;
    ensure!(
        s.kicks + s.timer_ticks == s.handled + s.coalesced && s.pending == 0,
        "{s:?}"
    );
    eprintln!("# {snapshots} snapshots checked");
    Ok(())
}

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
            let fds: Vec<RawFd> = msg
                .cmsgs()?
                .filter_map(|c| match c {
                    ControlMessageOwned::ScmRights(fds) => Some(fds),
                    _ => None,
                })
                .flatten()
                .collect();
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
