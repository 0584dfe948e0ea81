//! Hostile use, from an outside review: signal permissions across set-uid exec, with the
//! helpers the other `hostile_*.rs` files use. Those test semaphore eventfds, unbounded kick
//! counts and feedback loops (`hostile_eventfds.rs`), a full signal queue, thread start
//! outside `open`, per-user limits and the stats identity under load (`hostile_limits.rs`),
//! spurious wake-ups and fds passed over a socket (`hostile_fds.rs`).

use crate::{hang, Test};
use anyhow::{bail, ensure, Context, Result};
use evnotify::{sys, Channel};
use nix::{
    errno::Errno,
    sys::{
        signal::{kill, Signal},
        wait::{waitpid, WaitPidFlag, WaitStatus},
    },
    unistd::{fork, ForkResult, Pid},
};
use std::{
    io::{BufRead, BufReader, Write},
    os::{
        fd::{AsFd, AsRawFd},
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
    (
        "signal_root_setter_dropped_refused",
        signal_root_setter_dropped_refused,
    ),
];

/// An unprivileged uid for the tests.
pub(crate) const USER: u32 = 1000;

/// The signal the permission tests send.
pub(crate) fn sig() -> i32 {
    libc::SIGRTMIN() + 7
}

/// Runs `f` in a forked child, which exits with its return value.
pub(crate) fn child(f: impl FnOnce() -> i32) -> Result<Pid> {
    // SAFETY: The tests run one at a time and join their helper threads, so the child is a
    // copy of a single-threaded process; it leaves with `_exit`.
    match unsafe { fork() }? {
        ForkResult::Child => {
            let code = crate::kcov::recorded(f);
            // SAFETY: Ends the child without running the parent's destructors twice.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => Ok(child),
    }
}

/// Waits for `pid` to exit, at most [`hang()`], and returns its exit code.
pub(crate) fn exit_code(pid: Pid) -> Result<i32> {
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
pub(crate) fn set_thread_uids(uid: u32, keep_saved: bool) -> nix::Result<()> {
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
/// A root setter that then drops every uid to another user is refused too: the recorded uid
/// (0) is neither the process's uid nor its saved uid any more, and no capability overrides
/// the check (the header, SECURITY.md). Were the signal sent, its default action would kill
/// the child.
fn signal_root_setter_dropped_refused() -> Result<()> {
    let ch = Channel::open()?;
    let (to_r, to_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (from_r, from_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let ch_fd = ch.as_fd().as_raw_fd();
    let target = child(|| {
        let req = sys::Signal {
            slot: 0,
            signo: sig(),
            ..Default::default()
        };
        let mut go = [0u8; 1];
        // SAFETY: Plain syscalls on fds this process owns; `req` and `go` outlive them.
        unsafe {
            if libc::ioctl(ch_fd, sys::IOC_SIGNAL as _, &req) != 0
                || libc::syscall(libc::SYS_setresuid, USER, USER, USER) != 0
                || libc::write(from_w.as_raw_fd(), b"d".as_ptr().cast(), 1) != 1
                || libc::read(to_r.as_raw_fd(), go.as_mut_ptr().cast(), 1) != 1
            {
                return 2;
            }
        }
        0
    })?;
    drop((to_r, from_w));
    let mut out = BufReader::new(std::fs::File::from(from_r));
    let mut buf = [0u8; 1];
    std::io::Read::read_exact(&mut out, &mut buf).context("the child's uids dropped")?;
    ch.kick(0, 1)?;
    let s = crate::idle(&ch)?;
    std::fs::File::from(to_w).write_all(b"g")?;
    let code = exit_code(target)?;
    ensure!(code == 0, "the child failed (code {code})");
    ensure!(
        s.sig_refused == 1 && s.signals == 0 && s.dropped == 1,
        "a root setter now uid {USER}: {s:?}"
    );
    Ok(())
}

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
