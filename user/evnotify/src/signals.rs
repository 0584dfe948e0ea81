//! [`catch_signal`]: receive the signals a channel sends through a signalfd, as
//! [`SignalInfo`]s read from a [`SignalCatcher`].

use crate::{errno, wait_readable, Result};
use nix::sys::signalfd::SignalFd;
use std::{
    os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd},
    time::{Duration, Instant},
};

/// One signal received by a [`SignalCatcher`] (a subset of `struct signalfd_siginfo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SignalInfo {
    /// The signal number.
    pub signo: i32,
    /// `si_code`: `SI_ASYNCIO` (-4) for the signals a channel sends.
    pub code: i32,
    /// `si_pid`: the sender; 0 for the kernel.
    pub pid: u32,
    /// `si_uid`: the sender's real uid; 0 for the kernel.
    pub uid: u32,
}

/// Receives one signal through a signalfd, instead of a handler: see [`catch_signal`].
///
/// The descriptor is non-blocking and close-on-exec. Dropping the catcher closes it but does
/// not unblock the signal (whatever is still pending would then be delivered at once).
#[derive(Debug)]
pub struct SignalCatcher {
    sfd: SignalFd,
}

owns_fd!(SignalCatcher, sfd);

impl SignalCatcher {
    /// Takes one pending signal; `Ok(None)` at once if none is pending.
    ///
    /// # Errors
    ///
    /// `read(2)`'s other than `EAGAIN` (which is `Ok(None)`): none expected for a signalfd.
    pub fn try_read(&self) -> Result<Option<SignalInfo>> {
        Ok(self.sfd.read_signal()?.map(|i| SignalInfo {
            signo: i.ssi_signo as i32,
            code: i.ssi_code,
            pid: i.ssi_pid,
            uid: i.ssi_uid,
        }))
    }

    /// Blocks until a signal is pending, then takes it.
    ///
    /// # Errors
    ///
    /// As [`SignalCatcher::try_read`], and `ppoll(2)`'s (`ENOMEM`); `EINTR` is not an error: the
    /// wait goes on.
    pub fn wait(&self) -> Result<SignalInfo> {
        loop {
            if let Some(v) = wait_readable(self.as_fd(), None, || self.try_read())? {
                return Ok(v);
            }
        }
    }

    /// Like [`SignalCatcher::wait`], but gives up after `timeout` (any length) with
    /// `Ok(None)`.
    ///
    /// # Errors
    ///
    /// As [`SignalCatcher::wait`].
    pub fn wait_timeout(&self, timeout: Duration) -> Result<Option<SignalInfo>> {
        let deadline = Instant::now().checked_add(timeout);
        wait_readable(self.as_fd(), deadline, || self.try_read())
    }
}

/// Blocks signal `signo` **in the calling thread only** and returns a [`SignalCatcher`] that
/// receives it: the way to count what [`Channel::set_signal`] sends.
///
/// `signo` is a signal a signalfd can receive: 1 ..= `SIGRTMAX()` (64 on Linux), except
/// `SIGKILL` (9) and `SIGSTOP` (19), which can never be blocked nor caught, and the real-time
/// signals the C library keeps for itself, 32 ..= `SIGRTMIN() - 1` (32 and 33 with glibc).
/// Any other number fails with `EINVAL`, and blocks nothing. Unlike [`Channel::set_signal`],
/// where 0 means `SIGIO`, 0 is no signal here: pass `libc::SIGIO`.
///
/// A channel signals the *process*, and the kernel delivers a process signal to any thread
/// that does not block it (for `SIGIO`, whose default action ends the process, that is
/// fatal). So the signal must be blocked in every thread of the process: call this in the
/// main thread **before spawning any thread** (new threads inherit the signal mask), or in
/// each thread. The catcher may then be read from any thread, since a process signal stays
/// pending for the whole process.
///
/// # Errors
///
/// A call that fails leaves the thread's signal mask as it was:
/// - `EINVAL`: `signo` is not one of the numbers above;
/// - `EMFILE`, `ENFILE`, `ENOMEM`: from `signalfd(2)` (the process's or the system's
///   open-file limit, or memory).
///
/// ```no_run
/// use evnotify::{catch_signal, Channel};
/// use std::time::Duration;
///
/// // First thing in `main`, so that every thread spawned later blocks it too.
/// let signo = libc::SIGRTMIN() + 1;
/// let sig = catch_signal(signo)?;
/// let ch = Channel::open()?;
/// ch.set_signal(0, signo)?;
/// ch.kick(0, 2)?;
/// for _ in 0..2 {
///     let info = sig.wait_timeout(Duration::from_secs(5))?.expect("timed out");
///     assert_eq!(info.signo, signo);
/// }
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// [`Channel::set_signal`]: crate::Channel::set_signal
pub fn catch_signal(signo: i32) -> Result<SignalCatcher> {
    use nix::sys::{signal::SigSet, signalfd::SfdFlags};
    // The kernel's first real-time signal: the C library reserves those up to SIGRTMIN().
    const KERNEL_SIGRTMIN: i32 = 32;
    // sigaddset takes 9 and 19 (blocking them is silently ignored): refuse them here, and
    // the reserved ones too, as not every C library's sigaddset does.
    if !(1..=libc::SIGRTMAX()).contains(&signo)
        || signo == libc::SIGKILL
        || signo == libc::SIGSTOP
        || (KERNEL_SIGRTMIN..libc::SIGRTMIN()).contains(&signo)
    {
        return Err(errno(libc::EINVAL));
    }
    // Real-time signals have no `Signal` variant: build the set with libc.
    // SAFETY: `raw` is initialised by `sigemptyset` before `sigaddset` and the conversion.
    let set = unsafe {
        let mut raw = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut raw);
        if libc::sigaddset(&mut raw, signo) != 0 {
            return Err(errno(libc::EINVAL));
        }
        SigSet::from_sigset_t_unchecked(raw)
    };
    // The signalfd first: it can fail (`EMFILE`, `ENFILE`, `ENOMEM`), and then nothing may
    // have been blocked. Blocking after it changes nothing for the signal: one that arrives in
    // between is delivered as it would have been before the call.
    let sfd = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
    // The old mask, restored should the block fail (`pthread_sigmask` fails only for a bad
    // `how`, but a failed call must leave nothing changed whatever the cause).
    let old = SigSet::thread_get_mask()?;
    if let Err(e) = set.thread_block() {
        let _ = old.thread_set_mask();
        return Err(e.into());
    }
    Ok(SignalCatcher { sfd })
}
