//! Safe user-space API for `/dev/evnotify`.
//!
//! A [`Channel`] is one open file of the device, with its own kernel thread and
//! [`sys::NR_SLOTS`] notify slots. Attach a [`Notifier`] (an eventfd) to a slot, then
//! [`Channel::kick`] the slot: the kernel thread signals the notifier once per kick.
//!
//! ```no_run
//! use evnotify::{Channel, Notifier};
//! let ch = Channel::open()?;
//! let n = Notifier::new()?;
//! ch.attach(0, &n)?;
//! ch.kick(0, 3)?;
//! let mut got = 0;
//! while got < 3 {
//!     got += n.wait()?;
//! }
//! # Ok::<(), nix::Error>(())
//! ```

use nix::{
    errno::Errno,
    fcntl::{open, OFlag},
    poll::{ppoll, PollFd, PollFlags},
    sys::{
        eventfd::{EfdFlags, EventFd},
        stat::Mode,
        time::TimeSpec,
    },
};
use std::{
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
    path::Path,
    time::Duration,
};

pub use nix::Result;

/// The ABI of `include/uapi/linux/evnotify.h`, mirrored one to one.
pub mod sys {
    use std::mem::size_of;

    pub const API_VERSION: u32 = 2;
    pub const NR_SLOTS: u32 = 64;
    pub const MAX_KICK: u32 = 1 << 20;
    pub const MAX_PENDING: u64 = 1 << 20;
    pub const F_NOTIFY: u64 = 1 << 0;
    pub const F_SLOTS: u64 = 1 << 1;
    pub const F_KICKFD: u64 = 1 << 2;
    pub const F_FDINFO: u64 = 1 << 3;
    pub const F_TIMER: u64 = 1 << 4;
    pub const F_SIGNAL: u64 = 1 << 5;
    pub const F_BUSYPOLL: u64 = 1 << 6;
    pub const MIN_PERIOD_NS: u64 = 1_000_000;
    pub const MAX_PERIOD_NS: u64 = 86_400_000_000_000;
    pub const MAX_BUSYPOLL_NS: u32 = 1_000_000;
    pub const IOC_MAGIC: u8 = 0xE6;

    /// `struct evnotify_version`.
    #[repr(C)]
    #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
    pub struct Version {
        pub api_version: u32,
        pub nr_slots: u32,
        pub features: u64,
    }

    /// `struct evnotify_attach`, for both `IOC_ATTACH` and `IOC_KICKFD`.
    #[repr(C)]
    #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
    pub struct Attach {
        pub slot: u32,
        pub fd: i32,
        pub flags: u32,
        pub reserved: u32,
    }

    /// `struct evnotify_kick`.
    #[repr(C)]
    #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
    pub struct Kick {
        pub slot: u32,
        pub count: u32,
        pub flags: u32,
        pub reserved: u32,
    }

    /// `struct evnotify_stats`.
    #[repr(C)]
    #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
    pub struct Stats {
        pub kicks: u64,
        pub fd_kicks: u64,
        pub timer_ticks: u64,
        pub handled: u64,
        pub notifies: u64,
        pub signals: u64,
        pub dropped: u64,
        pub wakeups: u64,
        pub polled: u64,
        pub pending: u64,
        pub thread_pid: i32,
        pub attached: u32,
        pub kickfds: u32,
        pub timers: u32,
        pub signal_slots: u32,
        pub busypoll_ns: u32,
        pub coalesced: u64,
        pub sig_refused: u64,
    }

    /// `struct evnotify_timer`.
    #[repr(C)]
    #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
    pub struct Timer {
        pub slot: u32,
        pub flags: u32,
        pub period_ns: u64,
        pub ticks: u64,
        pub reserved: u64,
    }

    /// `struct evnotify_signal`.
    #[repr(C)]
    #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
    pub struct Signal {
        pub slot: u32,
        pub signo: i32,
        pub flags: u32,
        pub reserved: u32,
    }

    /// `struct evnotify_busypoll`.
    #[repr(C)]
    #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
    pub struct BusyPoll {
        pub limit_ns: u32,
        pub flags: u32,
        pub reserved: u64,
    }

    nix::ioctl_read!(ioc_version, IOC_MAGIC, 0x00, Version);
    nix::ioctl_write_ptr!(ioc_attach, IOC_MAGIC, 0x01, Attach);
    nix::ioctl_write_ptr!(ioc_kick, IOC_MAGIC, 0x02, Kick);
    nix::ioctl_read!(ioc_stats, IOC_MAGIC, 0x03, Stats);
    nix::ioctl_write_ptr!(ioc_kickfd, IOC_MAGIC, 0x04, Attach);
    nix::ioctl_write_ptr!(ioc_timer, IOC_MAGIC, 0x05, Timer);
    nix::ioctl_write_ptr!(ioc_signal, IOC_MAGIC, 0x06, Signal);
    nix::ioctl_write_ptr!(ioc_busypoll, IOC_MAGIC, 0x07, BusyPoll);

    /// The ioctl numbers, for tests that issue raw ioctls.
    pub const IOC_VERSION: u64 =
        nix::request_code_read!(IOC_MAGIC, 0x00, size_of::<Version>()) as u64;
    pub const IOC_ATTACH: u64 =
        nix::request_code_write!(IOC_MAGIC, 0x01, size_of::<Attach>()) as u64;
    pub const IOC_KICK: u64 = nix::request_code_write!(IOC_MAGIC, 0x02, size_of::<Kick>()) as u64;
    pub const IOC_STATS: u64 = nix::request_code_read!(IOC_MAGIC, 0x03, size_of::<Stats>()) as u64;
    pub const IOC_KICKFD: u64 =
        nix::request_code_write!(IOC_MAGIC, 0x04, size_of::<Attach>()) as u64;
    pub const IOC_TIMER: u64 = nix::request_code_write!(IOC_MAGIC, 0x05, size_of::<Timer>()) as u64;
    pub const IOC_SIGNAL: u64 =
        nix::request_code_write!(IOC_MAGIC, 0x06, size_of::<Signal>()) as u64;
    pub const IOC_BUSYPOLL: u64 =
        nix::request_code_write!(IOC_MAGIC, 0x07, size_of::<BusyPoll>()) as u64;
}

pub use sys::{Stats, Version};

/// The device node.
pub const DEVICE: &str = "/dev/evnotify";

/// One open `/dev/evnotify`: a channel with its own kernel thread.
#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
}

impl Channel {
    /// Opens a new channel on [`DEVICE`].
    pub fn open() -> Result<Self> {
        Self::open_path(DEVICE)
    }

    /// Opens a new channel on the device node at `path`.
    pub fn open_path(path: impl AsRef<Path>) -> Result<Self> {
        let fd = open(
            path.as_ref(),
            OFlag::O_RDWR | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Self { fd })
    }

    /// The API version, slot count and feature bits.
    pub fn version(&self) -> Result<Version> {
        let mut v = Version::default();
        // SAFETY: `v` is a valid, writable `struct evnotify_version`.
        unsafe { sys::ioc_version(self.fd.as_raw_fd(), &mut v) }?;
        Ok(v)
    }

    /// Attaches an eventfd to `slot`; the kernel keeps its own reference to it.
    pub fn attach(&self, slot: u32, efd: impl AsFd) -> Result<()> {
        self.attach_raw(slot, efd.as_fd().as_raw_fd())
    }

    /// Detaches the eventfd of `slot`, if any.
    pub fn detach(&self, slot: u32) -> Result<()> {
        self.attach_raw(slot, -1)
    }

    fn attach_raw(&self, slot: u32, fd: i32) -> Result<()> {
        let req = sys::Attach {
            slot,
            fd,
            ..Default::default()
        };
        // SAFETY: `req` is a valid `struct evnotify_attach`.
        unsafe { sys::ioc_attach(self.fd.as_raw_fd(), &req) }.map(drop)
    }

    /// Hooks an eventfd so that writing N to it kicks `slot` N times, with no ioctl.
    pub fn attach_kickfd(&self, slot: u32, efd: impl AsFd) -> Result<()> {
        self.kickfd_raw(slot, efd.as_fd().as_raw_fd())
    }

    /// Unhooks the kick eventfd of `slot`, if any.
    pub fn detach_kickfd(&self, slot: u32) -> Result<()> {
        self.kickfd_raw(slot, -1)
    }

    fn kickfd_raw(&self, slot: u32, fd: i32) -> Result<()> {
        let req = sys::Attach {
            slot,
            fd,
            ..Default::default()
        };
        // SAFETY: `req` is a valid `struct evnotify_attach`.
        unsafe { sys::ioc_kickfd(self.fd.as_raw_fd(), &req) }.map(drop)
    }

    /// Starts a timer on `slot`: one tick every `period`, `ticks` times (0: until cancelled).
    pub fn set_timer(&self, slot: u32, period: Duration, ticks: u64) -> Result<()> {
        let req = sys::Timer {
            slot,
            period_ns: u64::try_from(period.as_nanos()).map_err(|_| Errno::EINVAL)?,
            ticks,
            ..Default::default()
        };
        // SAFETY: `req` is a valid `struct evnotify_timer`.
        unsafe { sys::ioc_timer(self.fd.as_raw_fd(), &req) }.map(drop)
    }

    /// Cancels the timer of `slot`; no tick is queued once this returns.
    pub fn cancel_timer(&self, slot: u32) -> Result<()> {
        self.set_timer(slot, Duration::ZERO, 0)
    }

    /// Makes `slot` send `signo` (0: `SIGIO`) to this process for every kick or tick it
    /// handles; -1 stops it.
    pub fn set_signal(&self, slot: u32, signo: i32) -> Result<()> {
        let req = sys::Signal {
            slot,
            signo,
            ..Default::default()
        };
        // SAFETY: `req` is a valid `struct evnotify_signal`.
        unsafe { sys::ioc_signal(self.fd.as_raw_fd(), &req) }.map(drop)
    }

    /// Sets how long, at most, the channel's thread spins for new work before it sleeps
    /// (an adaptive window, up to `sys::MAX_BUSYPOLL_NS`); zero turns busy polling off.
    pub fn set_busypoll(&self, limit: Duration) -> Result<()> {
        let req = sys::BusyPoll {
            limit_ns: limit.as_nanos().try_into().map_err(|_| Errno::EINVAL)?,
            ..Default::default()
        };
        // SAFETY: `req` is a valid `struct evnotify_busypoll`.
        unsafe { sys::ioc_busypoll(self.fd.as_raw_fd(), &req) }.map(drop)
    }

    /// Pins the channel's kernel thread to `cpu`, as `taskset` would. Fails with `ESRCH`
    /// while the thread has not started (it starts with the first kick, kick eventfd or
    /// timer) or is not visible in this pid namespace.
    pub fn pin_thread(&self, cpu: usize) -> Result<()> {
        let mut set = nix::sched::CpuSet::new();
        set.set(cpu)?;
        match self.stats()?.thread_pid {
            0 => Err(Errno::ESRCH),
            pid => nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(pid), &set),
        }
    }

    /// The channel's `/proc/self/fdinfo` text.
    pub fn fdinfo(&self) -> std::io::Result<String> {
        std::fs::read_to_string(format!("/proc/self/fdinfo/{}", self.fd.as_raw_fd()))
    }

    /// Kicks `slot` `count` times: its eventfd will be signalled `count` times.
    pub fn kick(&self, slot: u32, count: u32) -> Result<()> {
        let req = sys::Kick {
            slot,
            count,
            ..Default::default()
        };
        // SAFETY: `req` is a valid `struct evnotify_kick`.
        unsafe { sys::ioc_kick(self.fd.as_raw_fd(), &req) }.map(drop)
    }

    /// The channel's counters.
    pub fn stats(&self) -> Result<Stats> {
        let mut s = Stats::default();
        // SAFETY: `s` is a valid, writable `struct evnotify_stats`.
        unsafe { sys::ioc_stats(self.fd.as_raw_fd(), &mut s) }?;
        Ok(s)
    }

    /// Waits until every accepted kick has been handled (or coalesced) and delivered: polls the
    /// stats every millisecond until `pending` is 0, and fails with `ETIMEDOUT` after
    /// `timeout`. With a timer running, this can return between two ticks.
    pub fn wait_idle(&self, timeout: Duration) -> Result<Stats> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let s = self.stats()?;
            if s.pending == 0 {
                return Ok(s);
            }
            if std::time::Instant::now() >= deadline {
                return Err(Errno::ETIMEDOUT);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// An eventfd to receive notifications on.
///
/// The eventfd is non-blocking underneath: every read that would block waits in `ppoll` first,
/// so that [`Notifier::drain`] never blocks even when another reader of the same eventfd takes
/// the count first, and waits keep their deadline across signals (`EINTR`).
#[derive(Debug)]
pub struct Notifier {
    efd: EventFd,
}

impl Notifier {
    /// A new eventfd with a zero counter.
    pub fn new() -> Result<Self> {
        let efd = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        Ok(Self { efd })
    }

    /// Blocks until the counter is non-zero, then returns and clears it.
    pub fn wait(&self) -> Result<u64> {
        loop {
            let v = self.wait_until(None)?;
            if v != 0 {
                return Ok(v);
            }
        }
    }

    /// Like [`Notifier::wait`], but gives up after `timeout` (to the nanosecond; any length)
    /// and returns 0.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<u64> {
        self.wait_until(std::time::Instant::now().checked_add(timeout))
    }

    /// Waits until `deadline` (for ever if `None`) for a non-zero count; 0 at the deadline.
    fn wait_until(&self, deadline: Option<std::time::Instant>) -> Result<u64> {
        loop {
            let v = self.drain()?;
            if v != 0 {
                return Ok(v);
            }
            let left = match deadline {
                None => None,
                Some(d) => match d.checked_duration_since(std::time::Instant::now()) {
                    Some(left) if !left.is_zero() => Some(TimeSpec::from_duration(left)),
                    _ => return Ok(0),
                },
            };
            let mut fds = [PollFd::new(self.efd.as_fd(), PollFlags::POLLIN)];
            match ppoll(&mut fds, left, None) {
                // Readable, timed out or interrupted: the loop reads, or checks the time left.
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads whatever has arrived so far; never blocks (0 if nothing).
    pub fn drain(&self) -> Result<u64> {
        match self.efd.read() {
            Ok(v) => Ok(v),
            Err(Errno::EAGAIN) => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Adds `n` to the counter: on a kick eventfd, this is `n` kicks.
    pub fn post(&self, n: u64) -> Result<()> {
        self.efd.write(n).map(drop)
    }
}

impl AsFd for Notifier {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.efd.as_fd()
    }
}

/// Blocks signal `signo` (real-time ones included) in the calling thread and returns a
/// nonblocking signalfd that receives it: the way to count what `Channel::set_signal` sends.
pub fn catch_signal(signo: i32) -> Result<nix::sys::signalfd::SignalFd> {
    use nix::sys::{
        signal::SigSet,
        signalfd::{SfdFlags, SignalFd},
    };
    // Real-time signals have no `Signal` variant: build the set with libc.
    // SAFETY: `raw` is initialised by `sigemptyset` before `sigaddset` and the conversion.
    let set = unsafe {
        let mut raw = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut raw);
        if libc::sigaddset(&mut raw, signo) != 0 {
            return Err(Errno::EINVAL);
        }
        SigSet::from_sigset_t_unchecked(raw)
    };
    set.thread_block()?;
    SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
}

#[cfg(test)]
mod tests {
    use super::sys::*;
    use std::mem::size_of;

    #[test]
    fn struct_sizes_are_multiples_of_64_bits() {
        for size in [
            size_of::<Version>(),
            size_of::<Attach>(),
            size_of::<Kick>(),
            size_of::<Stats>(),
            size_of::<Timer>(),
            size_of::<Signal>(),
            size_of::<BusyPoll>(),
        ] {
            assert_eq!(size % 8, 0, "size {size}");
        }
    }

    #[test]
    fn ioctl_numbers_encode_direction_size_and_magic() {
        // _IOC layout on x86: dir(2) << 30 | size(14) << 16 | type(8) << 8 | nr(8).
        let dec = |n: u64| (n >> 30, (n >> 16) & 0x3fff, (n >> 8) & 0xff, n & 0xff);
        assert_eq!(dec(IOC_VERSION), (2, 16, 0xE6, 0));
        assert_eq!(dec(IOC_ATTACH), (1, 16, 0xE6, 1));
        assert_eq!(dec(IOC_KICK), (1, 16, 0xE6, 2));
        assert_eq!(dec(IOC_STATS), (2, 120, 0xE6, 3));
        assert_eq!(dec(IOC_KICKFD), (1, 16, 0xE6, 4));
        assert_eq!(dec(IOC_TIMER), (1, 32, 0xE6, 5));
        assert_eq!(dec(IOC_SIGNAL), (1, 16, 0xE6, 6));
        assert_eq!(dec(IOC_BUSYPOLL), (1, 16, 0xE6, 7));
    }

    #[test]
    fn open_missing_device_reports_enoent() {
        let err = super::Channel::open_path("/nonexistent/evnotify").unwrap_err();
        assert_eq!(err, nix::errno::Errno::ENOENT);
    }

    #[test]
    fn catch_signal_rejects_bad_numbers_and_catches_rt() {
        assert_eq!(
            super::catch_signal(0).unwrap_err(),
            nix::errno::Errno::EINVAL
        );
        assert_eq!(
            super::catch_signal(65).unwrap_err(),
            nix::errno::Errno::EINVAL
        );
        let sig = libc::SIGRTMIN() + 5;
        let sfd = super::catch_signal(sig).unwrap();
        assert!(sfd.read_signal().unwrap().is_none());
        // SAFETY: Sends a blocked signal to this thread.
        assert_eq!(
            unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), libc::gettid(), sig) },
            0
        );
        assert_eq!(
            sfd.read_signal().unwrap().map(|i| i.ssi_signo as i32),
            Some(sig)
        );
    }

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
    fn notifier_drain_cannot_block() {
        use std::os::fd::{AsFd, AsRawFd};
        let n = super::Notifier::new().unwrap();
        // A read never blocks, so a drain that loses the count to another reader between
        // ppoll and read returns 0 instead of hanging (the race cannot be staged here).
        // SAFETY: Plain fcntl on our own descriptor.
        let flags = unsafe { libc::fcntl(n.as_fd().as_raw_fd(), libc::F_GETFL) };
        assert!(flags & libc::O_NONBLOCK != 0, "the eventfd is blocking");
        assert_eq!(n.drain().unwrap(), 0);
        n.post(4).unwrap();
        assert_eq!(n.drain().unwrap(), 4);
        assert_eq!(n.drain().unwrap(), 0);
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
