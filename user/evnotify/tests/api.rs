//! The public API as a user crate sees it: std types only (errors are `std::io::Error` with
//! the errno), the descriptor traits, non-blocking reads, close-on-exec, and signal catching.
//! Nothing here needs the device: the notifier and the catcher are plain eventfds and
//! signalfds, and a "channel" on `/dev/null` has a real descriptor whose ioctls fail.

use evnotify::{catch_signal, Channel, Notifier, SignalCatcher};
use std::{
    fs::File,
    io::{self, Read},
    os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd},
    sync::mpsc,
    time::{Duration, Instant},
};

/// Every test's waits give up after this long.
const DEADLINE: Duration = Duration::from_secs(30);

/// Runs `f` on a thread of its own and fails the test if it has not finished by [`DEADLINE`].
fn within<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(f()));
    rx.recv_timeout(DEADLINE).expect("did not finish in time")
}

fn errno<T: std::fmt::Debug>(r: evnotify::Result<T>) -> i32 {
    let e: io::Error = r.expect_err("succeeded");
    e.raw_os_error().expect("an error with no errno")
}

/// The `flags:` field of the descriptor's fdinfo (octal open flags).
fn open_flags(fd: RawFd) -> i32 {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap();
    let line = info.lines().find(|l| l.starts_with("flags:")).unwrap();
    i32::from_str_radix(line["flags:".len()..].trim(), 8).unwrap()
}

/// Whether descriptor `fd` is open in a program this process executes.
fn survives_exec(fd: RawFd) -> bool {
    std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("[ -e /proc/self/fd/{fd} ]"))
        .status()
        .unwrap()
        .success()
}

/// A channel on a node that is no evnotify device: a real descriptor, every ioctl `ENOTTY`.
fn null_channel() -> Channel {
    Channel::open_path("/dev/null").unwrap()
}

#[test]
fn errors_are_io_errors_with_the_errno() {
    let r: Result<Channel, io::Error> = Channel::open_path("/nonexistent/evnotify");
    let e = r.unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
    assert_eq!(e.kind(), io::ErrorKind::NotFound);
    let ch = null_channel();
    assert_eq!(errno(ch.version()), libc::ENOTTY);
    assert_eq!(errno(ch.stats()), libc::ENOTTY);
    assert_eq!(errno(ch.kick(0, 1)), libc::ENOTTY);
    assert_eq!(errno(ch.attach(0, &Notifier::new().unwrap())), libc::ENOTTY);
    assert_eq!(errno(ch.detach_kickfd(0)), libc::ENOTTY);
    assert_eq!(errno(ch.set_signal(0, 0)), libc::ENOTTY);
    assert_eq!(errno(ch.wait_idle(Duration::ZERO)), libc::ENOTTY);
    assert_eq!(errno(ch.worker()), libc::ENOTTY);
    let other = null_channel();
    assert_eq!(errno(ch.share_worker(&other)), libc::ENOTTY);
}

#[test]
fn share_worker_takes_a_channel_or_any_borrowed_descriptor() {
    let ch = null_channel();
    let other = null_channel();
    // A `&Channel`, its `BorrowedFd` (as of a descriptor received over a Unix socket), and an
    // owned descriptor all reach the ioctl (ENOTTY: /dev/null is no evnotify device).
    assert_eq!(errno(ch.share_worker(&other)), libc::ENOTTY);
    assert_eq!(errno(ch.share_worker(&other.as_fd())), libc::ENOTTY);
    assert_eq!(errno(ch.share_worker(&OwnedFd::from(other))), libc::ENOTTY);
    // The worker description is the crate's own type, comparable and printable.
    let w: Result<evnotify::WorkerInfo, io::Error> = ch.worker();
    assert_eq!(errno(w), libc::ENOTTY);
}

#[test]
fn out_of_range_arguments_fail_with_einval_before_any_ioctl() {
    let ch = null_channel();
    // ENOTTY would mean the call reached the (wrong) device.
    assert_eq!(errno(ch.set_timer(0, Duration::MAX, 1)), libc::EINVAL);
    assert_eq!(
        errno(ch.set_timer(0, Duration::from_millis(5), 1)),
        libc::ENOTTY
    );
    assert_eq!(errno(ch.set_busypoll(Duration::from_secs(5))), libc::EINVAL);
    assert_eq!(errno(ch.set_busypoll(Duration::ZERO)), libc::ENOTTY);
    assert_eq!(errno(ch.pin_thread(1 << 20)), libc::EINVAL);
    assert_eq!(errno(ch.pin_thread(0)), libc::ENOTTY);
}

#[test]
fn notifier_reads_never_block() {
    let n = Notifier::new().unwrap();
    assert_ne!(
        open_flags(n.as_raw_fd()) & libc::O_NONBLOCK,
        0,
        "the eventfd blocks"
    );
    let t = Instant::now();
    assert_eq!(n.try_read().unwrap(), None);
    assert_eq!(n.drain().unwrap(), 0);
    assert_eq!(n.wait_timeout(Duration::ZERO).unwrap(), 0);
    assert!(t.elapsed() < DEADLINE);
    n.post(6).unwrap();
    assert_eq!(n.try_read().unwrap(), Some(6));
    assert_eq!(n.try_read().unwrap(), None);
}

#[test]
fn notifier_post_fails_instead_of_blocking() {
    let n = Notifier::new().unwrap();
    n.post(u64::MAX - 1).unwrap();
    // A blocking eventfd would wait here for a reader.
    assert_eq!(errno(within(move || n.post(1))), libc::EAGAIN);
    assert_eq!(errno(Notifier::new().unwrap().post(u64::MAX)), libc::EINVAL);
}

#[test]
fn drain_and_waits_never_block_with_a_second_reader() {
    const POSTS: u64 = 2000;
    let total = within(|| {
        let n = Notifier::new().unwrap();
        std::thread::scope(|sc| {
            // Two readers race for every count: whichever loses a readiness report to the
            // other must come back empty-handed, not block.
            let readers: Vec<_> = (0..2)
                .map(|i| {
                    let n = &n;
                    sc.spawn(move || {
                        let mut got = 0;
                        let mut idle = Instant::now();
                        while idle.elapsed() < Duration::from_millis(300) {
                            let v = if i == 0 {
                                n.drain().unwrap()
                            } else {
                                n.wait_timeout(Duration::from_millis(1)).unwrap()
                            };
                            if v > 0 {
                                got += v;
                                idle = Instant::now();
                            }
                        }
                        got
                    })
                })
                .collect();
            for _ in 0..POSTS {
                n.post(1).unwrap();
            }
            readers.into_iter().map(|r| r.join().unwrap()).sum::<u64>()
        })
    });
    assert_eq!(total, POSTS);
}

#[test]
fn descriptors_are_close_on_exec() {
    let n = Notifier::new().unwrap();
    let ch = null_channel();
    let sig = catch_in_thread(libc::SIGRTMIN() + 8);
    for fd in [n.as_raw_fd(), ch.as_raw_fd(), sig.as_raw_fd()] {
        assert_ne!(open_flags(fd) & libc::O_CLOEXEC, 0, "fd {fd}");
        assert!(!survives_exec(fd), "fd {fd} survives exec");
    }
    // The check itself can fail: a descriptor without the flag does survive.
    let plain = dup_without_cloexec(n.as_raw_fd());
    assert!(survives_exec(plain.as_raw_fd()));
}

fn dup_without_cloexec(fd: RawFd) -> OwnedFd {
    // SAFETY: `dup` of an open descriptor returns a new one that nothing else owns.
    let new = unsafe { libc::dup(fd) };
    assert!(new >= 0);
    // SAFETY: `new` is open and owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(new) }
}

#[test]
fn into_raw_fd_hands_over_the_open_descriptor() {
    // The count posted before is read through the handed-over descriptor: it is still open
    // (a double close would make the read fail with EBADF).
    let read_count = |fd: OwnedFd| {
        let mut b = [0u8; 8];
        File::from(fd).read_exact(&mut b).unwrap();
        u64::from_ne_bytes(b)
    };
    let n = Notifier::new().unwrap();
    n.post(3).unwrap();
    let raw = n.into_raw_fd();
    // SAFETY: `into_raw_fd` gave up ownership of `raw`.
    assert_eq!(read_count(unsafe { OwnedFd::from_raw_fd(raw) }), 3);
    let n = Notifier::new().unwrap();
    n.post(4).unwrap();
    assert_eq!(read_count(OwnedFd::from(n)), 4);

    let ch = null_channel();
    let raw = ch.into_raw_fd();
    // SAFETY: As above.
    let f = File::from(unsafe { OwnedFd::from_raw_fd(raw) });
    assert_eq!(f.metadata().unwrap().len(), 0); // Still /dev/null.
    let ch = null_channel();
    assert!(File::from(OwnedFd::from(ch)).metadata().is_ok());
    let sig = catch_in_thread(libc::SIGRTMIN() + 9);
    assert!(File::from(OwnedFd::from(sig)).metadata().is_ok());
}

#[test]
fn adopted_descriptors_work_and_a_notifier_becomes_non_blocking() {
    // A blocking eventfd, as another library would create it.
    // SAFETY: Plain syscall; the new descriptor is owned by nobody else.
    let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    assert!(raw >= 0);
    // SAFETY: As above.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    assert_eq!(open_flags(fd.as_raw_fd()) & libc::O_NONBLOCK, 0);
    let n = Notifier::from(fd);
    assert_ne!(open_flags(n.as_raw_fd()) & libc::O_NONBLOCK, 0);
    // Empty: answered at once, not a blocking read (which `within` would time out).
    let (n, empty) = within(move || {
        let v = n.try_read().unwrap();
        (n, v)
    });
    assert_eq!(empty, None);
    n.post(7).unwrap();
    assert_eq!(n.drain().unwrap(), 7);
    // A channel adopted from a descriptor of something else: its ioctls fail with ENOTTY.
    let ch = Channel::from(OwnedFd::from(File::open("/dev/null").unwrap()));
    assert_eq!(errno(ch.version()), libc::ENOTTY);
    assert_eq!(errno(ch.attach(0, &n)), libc::ENOTTY);
}

/// The calling thread's blocked-signal mask, from `/proc/thread-self/status`.
fn blocked_here() -> u64 {
    let st = std::fs::read_to_string("/proc/thread-self/status").unwrap();
    let line = st.lines().find(|l| l.starts_with("SigBlk:")).unwrap();
    u64::from_str_radix(line["SigBlk:".len()..].trim(), 16).unwrap()
}

fn bit(signo: i32) -> u64 {
    1 << (signo - 1)
}

/// A catcher made in a thread of its own, which then exits (the signal stays blocked there
/// only).
fn catch_in_thread(signo: i32) -> SignalCatcher {
    within(move || catch_signal(signo).unwrap())
}

#[test]
fn catch_signal_rejects_bad_numbers() {
    // In a thread of its own: a wrongly accepted number must not stay blocked in the runner.
    let reserved = 32..libc::SIGRTMIN();
    let (refused, blocked) = within(move || {
        let mut bad = vec![
            0,
            -1,
            65,
            libc::SIGRTMAX() + 1,
            libc::SIGKILL,
            libc::SIGSTOP,
        ];
        bad.extend(reserved);
        let refused: Vec<_> = bad.iter().map(|&s| (s, errno(catch_signal(s)))).collect();
        (refused, blocked_here())
    });
    for (signo, e) in refused {
        assert_eq!(e, libc::EINVAL, "catch_signal({signo})");
    }
    assert_eq!(blocked, 0, "a refused number was blocked");
    // The edges of what is accepted.
    for ok in [1, libc::SIGIO, libc::SIGRTMIN(), libc::SIGRTMAX()] {
        assert_eq!(catch_in_thread(ok).try_read().unwrap(), None, "{ok}");
    }
}

#[test]
fn catch_signal_blocks_in_the_calling_thread_only() {
    let sig = libc::SIGRTMIN() + 5;
    let (info, blocked_there, late) = within(move || {
        let c = catch_signal(sig).unwrap();
        let blocked = blocked_here() & bit(sig) != 0;
        assert_eq!(c.try_read().unwrap(), None);
        // SAFETY: Sends a signal this thread blocks to this thread.
        let rc = unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), libc::gettid(), sig) };
        assert_eq!(rc, 0);
        let info = c.wait_timeout(DEADLINE).unwrap();
        let t = Instant::now();
        let late = c.wait_timeout(Duration::from_millis(20)).unwrap();
        assert!(t.elapsed() >= Duration::from_millis(20));
        (info, blocked, late)
    });
    assert!(blocked_there, "not blocked in the calling thread");
    assert_eq!(blocked_here() & bit(sig), 0, "blocked in another thread");
    let info = info.expect("no signal");
    assert_eq!(info.signo, sig);
    assert_eq!(info.code, libc::SI_TKILL);
    assert_eq!(info.pid, std::process::id());
    assert_eq!(late, None);
}

/// Whether `signo` is blocked in the calling thread, asked of `pthread_sigmask` (no
/// allocation: the forked child below may call it).
fn is_blocked(signo: i32) -> bool {
    // SAFETY: `set` is written by `pthread_sigmask` before it is read; a null `set` argument
    // only queries the mask.
    unsafe {
        let mut set = std::mem::zeroed::<libc::sigset_t>();
        assert_eq!(
            libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut set),
            0
        );
        libc::sigismember(&set, signo) == 1
    }
}

/// With no descriptor left (`RLIMIT_NOFILE`), `catch_signal` fails with `EMFILE` from
/// `signalfd(2)` and leaves the signal mask as it was: a signal it was asked for is not left
/// blocked, and one that was blocked before stays blocked. In a forked child, since the limit
/// is the whole process's; the child makes only system calls, and says with its exit status
/// what it found.
#[test]
fn catch_signal_that_fails_leaves_the_mask_as_it_was() {
    use nix::{
        sys::wait::{waitpid, WaitStatus},
        unistd::{fork, ForkResult},
    };
    const WHAT: [&str; 5] = [
        "",
        "catch_signal succeeded with no descriptor left",
        "catch_signal failed, but not with EMFILE",
        "a failed catch_signal left the signal blocked",
        "a failed catch_signal unblocked a signal that was blocked before",
    ];
    // SAFETY: The child makes only async-signal-safe calls (no allocation: `catch_signal`'s
    // error is an errno) and leaves with `_exit`.
    match unsafe { fork() }.unwrap() {
        ForkResult::Child => {
            let code = (|| {
                // SAFETY: Plain system calls on descriptors and limits of this child alone.
                unsafe {
                    // The lowest free descriptor: the limit makes it and every higher one
                    // unavailable.
                    let free = libc::dup(0);
                    libc::close(free);
                    let lim = libc::rlimit {
                        rlim_cur: free as libc::rlim_t,
                        rlim_max: free as libc::rlim_t,
                    };
                    if free < 0 || libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return 10;
                    }
                }
                match catch_signal(libc::SIGUSR1) {
                    Ok(_) => return 1,
                    Err(e) if e.raw_os_error() != Some(libc::EMFILE) => return 2,
                    Err(_) if is_blocked(libc::SIGUSR1) => return 3,
                    Err(_) => {}
                }
                // SAFETY: Blocks SIGUSR2 in this thread of the child.
                unsafe {
                    let mut set = std::mem::zeroed::<libc::sigset_t>();
                    libc::sigemptyset(&mut set);
                    libc::sigaddset(&mut set, libc::SIGUSR2);
                    libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
                }
                match catch_signal(libc::SIGUSR2) {
                    Ok(_) => 1,
                    Err(_) if !is_blocked(libc::SIGUSR2) => 4,
                    Err(_) => 0,
                }
            })();
            // SAFETY: Leaves the forked child at once.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => match waitpid(child, None).unwrap() {
            WaitStatus::Exited(_, 0) => {}
            WaitStatus::Exited(_, code) => panic!(
                "exit {code}: {}",
                WHAT.get(code as usize)
                    .unwrap_or(&"the child could not lower its limit")
            ),
            status => panic!("the child died: {status:?}"),
        },
    }
}

#[test]
fn dropping_the_catcher_keeps_the_signal_blocked() {
    let sig = libc::SIGRTMIN() + 10;
    let still_blocked = within(move || {
        drop(catch_signal(sig).unwrap());
        blocked_here() & bit(sig) != 0
    });
    assert!(still_blocked);
}

#[test]
fn signal_catcher_wait_blocks_until_a_signal() {
    let sig = libc::SIGRTMIN() + 6;
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let c = catch_signal(sig).unwrap();
        // SAFETY: Plain syscall.
        tx.send(unsafe { libc::gettid() }).unwrap();
        c.wait().unwrap()
    });
    let tid = rx.recv_timeout(DEADLINE).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert!(!waiter.is_finished(), "wait returned with nothing pending");
    // SAFETY: Signals the waiting thread, which blocks `sig`.
    let rc = unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, sig) };
    assert_eq!(rc, 0);
    let t = Instant::now();
    while !waiter.is_finished() {
        assert!(t.elapsed() < DEADLINE, "wait never returned");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(waiter.join().unwrap().signo, sig);
}

#[test]
fn borrowed_descriptors_work_with_std() {
    // `AsFd` is all an event loop needs: a `BorrowedFd` std can duplicate.
    let n = Notifier::new().unwrap();
    let dup = n.as_fd().try_clone_to_owned().unwrap();
    n.post(9).unwrap();
    let mut b = [0u8; 8];
    File::from(dup).read_exact(&mut b).unwrap();
    assert_eq!(u64::from_ne_bytes(b), 9);
}

/// `map_ring` asks the version first: on a file that is not a channel it fails with the
/// version's `ENOTTY`, and maps nothing (no page of a regular file to scribble over).
#[test]
fn map_ring_refuses_what_is_not_a_channel() {
    assert_eq!(errno(null_channel().map_ring()), libc::ENOTTY);
    let path = std::env::temp_dir().join(format!("evnotify-ring-{}", std::process::id()));
    std::fs::write(&path, vec![0u8; 4096]).unwrap();
    let file = Channel::open_path(&path).unwrap();
    assert_eq!(errno(file.map_ring()), libc::ENOTTY);
    std::fs::remove_file(&path).unwrap();
}
