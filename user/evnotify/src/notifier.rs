//! [`Notifier`]: an eventfd to receive notifications on, or to post kicks through.

use crate::{wait_readable, Result};
use nix::{
    errno::Errno,
    sys::eventfd::{EfdFlags, EventFd},
};
use std::{
    os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd},
    time::{Duration, Instant},
};

/// An eventfd to receive notifications on (or to post kicks through, as a kick eventfd).
///
/// The eventfd is always non-blocking (`O_NONBLOCK`) and close-on-exec. Its non-blocking
/// reads are [`Notifier::try_read`] and [`Notifier::drain`]; for an event loop, register
/// [`AsRawFd::as_raw_fd`] for readability and call `try_read` when it reports ready. The
/// waits sleep in `ppoll` first, so that no read blocks even when another reader of the same
/// eventfd takes the count first, and they keep their deadline across signals (`EINTR`).
#[derive(Debug)]
pub struct Notifier {
    efd: EventFd,
}

owns_fd!(Notifier, efd);

/// Adopts an eventfd created elsewhere, and makes it non-blocking (`O_NONBLOCK`), as every
/// notifier is: the flag belongs to the open file, so duplicates of the descriptor, in this
/// or another process, become non-blocking too. The caller vouches that it is an eventfd:
/// nothing is checked here, and on another file the reads and writes fail or return
/// nonsense, and [`Channel::attach`] fails with `EINVAL`.
///
/// [`Channel::attach`]: crate::Channel::attach
impl From<OwnedFd> for Notifier {
    fn from(fd: OwnedFd) -> Self {
        use nix::fcntl::{fcntl, FcntlArg, OFlag};
        // F_GETFL and F_SETFL of O_NONBLOCK fail only on a closed descriptor, which an
        // `OwnedFd` is not.
        if let Ok(bits) = fcntl(&fd, FcntlArg::F_GETFL) {
            let flags = OFlag::from_bits_retain(bits) | OFlag::O_NONBLOCK;
            let _ = fcntl(&fd, FcntlArg::F_SETFL(flags));
        }
        // SAFETY: Not a memory-safety matter: `EventFd` only reads and writes 8 bytes through
        // the descriptor; the caller vouches that it is an eventfd (see above).
        let efd = unsafe { EventFd::from_owned_fd(fd) };
        Self { efd }
    }
}

impl Notifier {
    /// A new eventfd with a zero counter (`EFD_NONBLOCK | EFD_CLOEXEC`).
    ///
    /// # Errors
    ///
    /// `eventfd(2)`'s: `EMFILE` (this process's open-file limit, `RLIMIT_NOFILE`), `ENFILE` (the
    /// system's), `ENOMEM`.
    pub fn new() -> Result<Self> {
        let efd = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        Ok(Self { efd })
    }

    /// Returns and clears the counter if it is non-zero; `Ok(None)` at once if it is zero.
    ///
    /// # Errors
    ///
    /// `read(2)`'s other than `EAGAIN` (which is `Ok(None)`): none for an eventfd; an adopted
    /// descriptor that is not one answers as its file does.
    pub fn try_read(&self) -> Result<Option<u64>> {
        match self.efd.read() {
            Ok(v) => Ok(Some(v)),
            Err(Errno::EAGAIN) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads whatever has arrived so far; never blocks (0 if nothing).
    ///
    /// # Errors
    ///
    /// As [`Notifier::try_read`].
    pub fn drain(&self) -> Result<u64> {
        Ok(self.try_read()?.unwrap_or(0))
    }

    /// Blocks until the counter is non-zero, then returns and clears it.
    ///
    /// # Errors
    ///
    /// As [`Notifier::try_read`], and `ppoll(2)`'s (`ENOMEM`); `EINTR` is not an error: the wait
    /// goes on.
    pub fn wait(&self) -> Result<u64> {
        loop {
            if let Some(v) = wait_readable(self.as_fd(), None, || self.try_read())? {
                return Ok(v);
            }
        }
    }

    /// Like [`Notifier::wait`], but gives up after `timeout` (to the nanosecond; any length)
    /// and returns 0.
    ///
    /// # Errors
    ///
    /// As [`Notifier::wait`].
    pub fn wait_timeout(&self, timeout: Duration) -> Result<u64> {
        let deadline = Instant::now().checked_add(timeout);
        Ok(wait_readable(self.as_fd(), deadline, || self.try_read())?.unwrap_or(0))
    }

    /// Adds `n` to the counter: on a kick eventfd, this is `n` kicks. Fails with `EAGAIN`
    /// rather than block if the counter would pass `u64::MAX - 1`, and with `EINVAL` for
    /// `n == u64::MAX`.
    ///
    /// # Errors
    ///
    /// - `EAGAIN`: the counter would pass `u64::MAX - 1` (a kick eventfd whose channel no longer
    ///   takes its kicks);
    /// - `EINVAL`: `n` is `u64::MAX`.
    pub fn post(&self, n: u64) -> Result<()> {
        self.efd.write(n)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn notifier_timeouts_below_a_millisecond_and_long_ones() {
        use std::time::{Duration, Instant};
        let n = super::Notifier::new().unwrap();
        // A sub-millisecond timeout still waits (it used to round to 0 and return at once).
        let t = Instant::now();
        assert_eq!(n.wait_timeout(Duration::from_micros(500)).unwrap(), 0);
        assert!(t.elapsed() >= Duration::from_micros(500));
        // A long timeout is not capped: with a count present it returns it at once.
        n.post(2).unwrap();
        assert_eq!(n.wait_timeout(Duration::from_secs(100_000)).unwrap(), 2);
        n.post(3).unwrap();
        assert_eq!(n.wait_timeout(Duration::MAX).unwrap(), 3);
    }

    #[test]
    fn notifier_wait_survives_a_signal() {
        use std::time::{Duration, Instant};
        extern "C" fn nothing(_: libc::c_int) {}
        // SAFETY: Installs a handler that does nothing, without SA_RESTART, so that a blocked
        // ppoll sees EINTR.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = nothing as extern "C" fn(libc::c_int) as usize;
            assert_eq!(libc::sigaction(libc::SIGUSR2, &sa, std::ptr::null_mut()), 0);
        }
        let n = super::Notifier::new().unwrap();
        let tid = std::sync::atomic::AtomicI32::new(0);
        std::thread::scope(|sc| {
            let h = sc.spawn(|| {
                // SAFETY: Plain syscall.
                tid.store(
                    unsafe { libc::gettid() },
                    std::sync::atomic::Ordering::SeqCst,
                );
                let t = Instant::now();
                let v = n.wait_timeout(Duration::from_millis(300)).unwrap();
                (v, t.elapsed())
            });
            while tid.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                std::thread::yield_now();
            }
            std::thread::sleep(Duration::from_millis(50));
            let t = tid.load(std::sync::atomic::Ordering::SeqCst);
            // SAFETY: Signals the waiting thread of this process.
            assert_eq!(
                unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), t, libc::SIGUSR2) },
                0
            );
            let (v, took) = h.join().unwrap();
            assert_eq!(v, 0);
            assert!(took >= Duration::from_millis(300), "gave up after {took:?}");
        });
    }

    #[test]
    fn notifier_counts_and_times_out() {
        let n = super::Notifier::new().unwrap();
        assert_eq!(n.drain().unwrap(), 0);
        n.post(5).unwrap();
        assert_eq!(n.wait().unwrap(), 5);
        assert_eq!(
            n.wait_timeout(std::time::Duration::from_millis(20))
                .unwrap(),
            0
        );
    }
}
