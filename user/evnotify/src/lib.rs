//! Safe user-space API for `/dev/evnotify`, the eventfd notification channels of the
//! `rust_evnotify` Linux kernel module.
//!
//! A [`Channel`] is one open file of the device, with its own kernel thread and
//! [`sys::NR_SLOTS`] notify slots. Attach a [`Notifier`] (an eventfd) to a slot, then
//! [`Channel::kick`] the slot: the kernel thread signals the notifier once per kick.
//! Many channels can share one thread (their *worker*): see [`Channel::share_worker`].
//!
//! ```no_run
//! use evnotify::{Channel, Notifier};
//! use std::time::Duration;
//!
//! let ch = Channel::open()?;
//! let n = Notifier::new()?;
//! ch.attach(0, &n)?;
//! ch.kick(0, 3)?;
//! let mut got = 0;
//! while got < 3 {
//!     let v = n.wait_timeout(Duration::from_secs(5))?;
//!     assert!(v > 0, "timed out");
//!     got += v;
//! }
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # Guarantees
//!
//! - **Errors** are [`std::io::Error`]s carrying the kernel's errno:
//!   [`io::Error::raw_os_error`] is `Some(errno)` for every failure this crate reports,
//!   including the ones it detects itself (`EINVAL` for an out-of-range duration, `ETIMEDOUT`
//!   from [`Channel::wait_idle`]). No dependency's type appears in the API, except the
//!   `futures_core::Stream` trait implemented with the `tokio` feature.
//! - **Never waits:** [`Notifier::try_read`], [`Notifier::drain`], [`Notifier::post`] and
//!   [`SignalCatcher::try_read`] return at once. The notifier's and the catcher's descriptors
//!   are non-blocking (`O_NONBLOCK`), so they can be registered with `mio`, `tokio`, `calloop`
//!   or a plain `epoll`; a reader that finds nothing gets `Ok(None)` (or 0 from `drain`), even
//!   when another reader took the count between a readiness report and the read.
//! - **May sleep, briefly, never for an event:** each [`Channel`] call is one ioctl, answered
//!   without waiting for a kick, a tick or another process (only [`Channel::wait_idle`]
//!   waits, for the channel to go idle). But the kernel may put the caller to sleep while it
//!   answers, as any system call may:
//!   - the first [`Channel::kick`], [`Channel::attach_kickfd`] or [`Channel::set_timer`] of a
//!     channel that has no worker yet, and [`Channel::share_worker`] when the other channel
//!     has none, create the worker's kernel thread, and wait until `kthreadd` has made it;
//!   - [`Channel::open`] and the first [`Channel::set_signal`], [`Channel::set_timer`] or
//!     [`Channel::attach_kickfd`] of a channel allocate (and may reclaim memory); `open` runs
//!     under the kernel's global `misc_mtx`, which every misc device's `open` takes;
//!   - every call takes the channel's own locks, which its worker holds only briefly (one
//!     batch: at most 1024 kicks of one slot);
//!   - [`Channel::pin_thread`] waits for the thread to move to its CPU.
//!
//!   **Dropping a [`Channel`]** (closing its last descriptor) waits until its worker has
//!   finished the batch it is delivering for it, and its timers' callbacks; dropping the last
//!   channel of a worker also waits for the worker's thread to stop (`kthread_stop`). None of
//!   these waits for user space.
//! - **Waits** ([`Notifier::wait`], [`Notifier::wait_timeout`], [`SignalCatcher::wait`],
//!   [`SignalCatcher::wait_timeout`]) sleep in `ppoll` with a nanosecond deadline of any
//!   length ([`Duration::MAX`] is "for ever") and keep that deadline across signal handlers
//!   (`EINTR` is retried with the time left). One `ppoll` sleeps at most `time_t::MAX`
//!   seconds (about 68 years on 32-bit targets); a longer wait is clamped to that and polls
//!   again.
//! - **Descriptors are close-on-exec** (`O_CLOEXEC`, `EFD_CLOEXEC`, `SFD_CLOEXEC`), and each
//!   type owns its descriptor: [`AsFd`]/[`AsRawFd`] lend it, [`IntoRawFd`] and
//!   `From<..> for OwnedFd` hand it over without closing it, and [`Channel`] and [`Notifier`]
//!   adopt one with `From<OwnedFd>`.
//! - **Signals** ([`catch_signal`]) are blocked in the calling thread only; see there how to
//!   catch them process-wide.
//!
//! # Async (feature `tokio`)
//!
//! With the `tokio` feature, `AsyncNotifier` wraps a [`Notifier`] in Tokio's reactor:
//! `wait().await` returns the count (any number of tasks may await one notifier at once), and
//! it is a `futures_core::Stream` of counts, so many slots can be served from one task. `examples/async_slots.rs` serves all 64 slots of a
//! channel that way.
//!
//! # Serde (feature `serde`)
//!
//! With the `serde` feature, [`Stats`] implements `serde::Serialize` and `Deserialize`, with
//! the field names of `struct evnotify_stats` (which fdinfo uses too).

#![deny(missing_docs)]
// Every fallible public function says which errors it returns and when.
#![deny(clippy::missing_errors_doc)]
#![cfg_attr(docsrs, feature(doc_cfg))]

use nix::{
    errno::Errno,
    poll::{ppoll, PollFd, PollFlags},
    sys::{
        eventfd::{EfdFlags, EventFd},
        signalfd::SignalFd,
        time::TimeSpec,
    },
};
use std::{
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd},
    path::Path,
    time::{Duration, Instant},
};

#[cfg(feature = "tokio")]
mod async_notifier;
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub use async_notifier::AsyncNotifier;

/// The README's example must compile too.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// The result of every fallible call of this crate: errors are [`std::io::Error`]s with the
/// errno in [`io::Error::raw_os_error`].
pub type Result<T> = io::Result<T>;

/// The ABI of `include/uapi/linux/evnotify.h`, mirrored one to one (a test compares every
/// constant, ioctl number and struct layout with the C header).
pub mod sys {
    use std::mem::size_of;

    /// `EVNOTIFY_API_VERSION`: the version this crate speaks.
    pub const API_VERSION: u32 = 4;
    /// `EVNOTIFY_NR_SLOTS`: notify slots per channel.
    pub const NR_SLOTS: u32 = 64;
    /// `EVNOTIFY_MAX_KICK`: the largest count one kick accepts.
    pub const MAX_KICK: u32 = 1 << 20;
    /// `EVNOTIFY_MAX_PENDING`: the most kicks and ticks one slot holds; more are coalesced.
    pub const MAX_PENDING: u64 = 1 << 20;
    /// `EVNOTIFY_F_NOTIFY`: attach, kick, stats.
    pub const F_NOTIFY: u64 = 1 << 0;
    /// `EVNOTIFY_F_SLOTS`: [`NR_SLOTS`] slots per channel.
    pub const F_SLOTS: u64 = 1 << 1;
    /// `EVNOTIFY_F_KICKFD`: kick eventfds.
    pub const F_KICKFD: u64 = 1 << 2;
    /// `EVNOTIFY_F_FDINFO`: state in `/proc/<pid>/fdinfo/<fd>`.
    pub const F_FDINFO: u64 = 1 << 3;
    /// `EVNOTIFY_F_TIMER`: kernel timers.
    pub const F_TIMER: u64 = 1 << 4;
    /// `EVNOTIFY_F_SIGNAL`: fasync-style signals.
    pub const F_SIGNAL: u64 = 1 << 5;
    /// `EVNOTIFY_F_BUSYPOLL`: the thread spins before it sleeps.
    pub const F_BUSYPOLL: u64 = 1 << 6;
    /// `EVNOTIFY_F_WORKERS`: shared workers ([`IOC_SHARE_WORKER`], [`IOC_WORKER`]).
    pub const F_WORKERS: u64 = 1 << 7;
    /// `EVNOTIFY_MIN_PERIOD_NS`: the shortest timer period (1 ms).
    pub const MIN_PERIOD_NS: u64 = 1_000_000;
    /// `EVNOTIFY_MAX_PERIOD_NS`: the longest timer period (1 day).
    pub const MAX_PERIOD_NS: u64 = 86_400_000_000_000;
    /// `EVNOTIFY_MAX_BUSYPOLL_NS`: the largest busy-poll limit (1 ms).
    pub const MAX_BUSYPOLL_NS: u32 = 1_000_000;
    /// `EVNOTIFY_IOC_MAGIC`: the ioctl type byte.
    pub const IOC_MAGIC: u8 = 0xE6;

    /// `struct evnotify_version`.
    #[repr(C)]
    #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
    pub struct Version {
        /// [`API_VERSION`].
        pub api_version: u32,
        /// [`NR_SLOTS`].
        pub nr_slots: u32,
        /// `F_*` bits.
        pub features: u64,
    }

    /// `struct evnotify_attach`, for both `IOC_ATTACH` and `IOC_KICKFD`.
    #[repr(C)]
    #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
    pub struct Attach {
        /// 0 .. [`NR_SLOTS`] - 1.
        pub slot: u32,
        /// The eventfd; -1 detaches.
        pub fd: i32,
        /// Must be 0.
        pub flags: u32,
        /// Must be 0.
        pub reserved: u32,
    }

    /// `struct evnotify_kick`.
    #[repr(C)]
    #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
    pub struct Kick {
        /// 0 .. [`NR_SLOTS`] - 1.
        pub slot: u32,
        /// 1 ..= [`MAX_KICK`].
        pub count: u32,
        /// Must be 0.
        pub flags: u32,
        /// Must be 0.
        pub reserved: u32,
    }

    /// `struct evnotify_stats`: a consistent snapshot of a channel's counters, in which
    /// `kicks + timer_ticks == handled + pending + coalesced` (modulo 2^64).
    ///
    /// With the `serde` feature it is `Serialize` and `Deserialize`, with the header's field
    /// names (those of `/proc/<pid>/fdinfo/<fd>` too): a stable format.
    #[repr(C)]
    #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
    #[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
    pub struct Stats {
        /// Kicks accepted, by ioctl and by kick eventfd.
        pub kicks: u64,
        /// Of which came from kick eventfd writes.
        pub fd_kicks: u64,
        /// Ticks queued by timers.
        pub timer_ticks: u64,
        /// Kicks and ticks taken by the thread.
        pub handled: u64,
        /// `eventfd_signal()` calls made by the thread.
        pub notifies: u64,
        /// Process signals sent.
        pub signals: u64,
        /// Handled with no eventfd and no signal sent.
        pub dropped: u64,
        /// Times the thread woke up from sleep and found work (on a shared worker: counted on
        /// the first channel with work it serves after the sleep, so others may show 0).
        pub wakeups: u64,
        /// Times it found work while busy polling, without sleeping (counted like `wakeups`).
        pub polled: u64,
        /// Kicks and ticks not yet handled (or being delivered).
        pub pending: u64,
        /// The kernel thread's pid: 0 until it starts (and in a child pid namespace).
        pub thread_pid: i32,
        /// Slots with a notify eventfd.
        pub attached: u32,
        /// Slots with a kick eventfd.
        pub kickfds: u32,
        /// Slots with a running timer.
        pub timers: u32,
        /// Slots that signal a process.
        pub signal_slots: u32,
        /// The thread's busy-poll limit in nanoseconds, 0 = off.
        pub busypoll_ns: u32,
        /// Kicks and ticks merged away: beyond [`MAX_PENDING`], or echoes.
        pub coalesced: u64,
        /// Signal sends refused: permission, LSM, or a full real-time signal queue.
        pub sig_refused: u64,
    }

    /// `struct evnotify_timer`.
    #[repr(C)]
    #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
    pub struct Timer {
        /// 0 .. [`NR_SLOTS`] - 1.
        pub slot: u32,
        /// Must be 0.
        pub flags: u32,
        /// 0 cancels, else [`MIN_PERIOD_NS`] ..= [`MAX_PERIOD_NS`].
        pub period_ns: u64,
        /// Ticks to deliver, then stop; 0 = until cancelled.
        pub ticks: u64,
        /// Must be 0.
        pub reserved: u64,
    }

    /// `struct evnotify_signal`.
    #[repr(C)]
    #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
    pub struct Signal {
        /// 0 .. [`NR_SLOTS`] - 1.
        pub slot: u32,
        /// 1 ..= 64; 0 = `SIGIO`; -1 = stop signalling.
        pub signo: i32,
        /// Must be 0.
        pub flags: u32,
        /// Must be 0.
        pub reserved: u32,
    }

    /// `struct evnotify_busypoll`.
    #[repr(C)]
    #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
    pub struct BusyPoll {
        /// 0 (off) ..= [`MAX_BUSYPOLL_NS`].
        pub limit_ns: u32,
        /// Must be 0.
        pub flags: u32,
        /// Must be 0.
        pub reserved: u64,
    }

    /// `struct evnotify_share`, for `IOC_SHARE_WORKER`.
    #[repr(C)]
    #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
    pub struct Share {
        /// Another open `/dev/evnotify` channel, whose worker this channel is to use.
        pub fd: i32,
        /// Must be 0.
        pub flags: u32,
        /// Must be 0.
        pub reserved: u64,
    }

    /// `struct evnotify_worker`, from `IOC_WORKER`: the worker (kernel thread) a channel uses.
    #[repr(C)]
    #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
    pub struct Worker {
        /// 0 until the channel has a worker, then its id: its thread is named
        /// `evnotify/<id>`.
        pub worker_id: u32,
        /// The worker thread's pid, as [`Stats::thread_pid`].
        pub thread_pid: i32,
        /// Open channels that use the worker.
        pub channels: u32,
        /// 0.
        pub reserved: u32,
    }

    /// `EVNOTIFY_IOC_VERSION`.
    pub const IOC_VERSION: u64 =
        nix::request_code_read!(IOC_MAGIC, 0x00, size_of::<Version>()) as u64;
    /// `EVNOTIFY_IOC_ATTACH`.
    pub const IOC_ATTACH: u64 =
        nix::request_code_write!(IOC_MAGIC, 0x01, size_of::<Attach>()) as u64;
    /// `EVNOTIFY_IOC_KICK`.
    pub const IOC_KICK: u64 = nix::request_code_write!(IOC_MAGIC, 0x02, size_of::<Kick>()) as u64;
    /// `EVNOTIFY_IOC_STATS`.
    pub const IOC_STATS: u64 = nix::request_code_read!(IOC_MAGIC, 0x03, size_of::<Stats>()) as u64;
    /// `EVNOTIFY_IOC_KICKFD`.
    pub const IOC_KICKFD: u64 =
        nix::request_code_write!(IOC_MAGIC, 0x04, size_of::<Attach>()) as u64;
    /// `EVNOTIFY_IOC_TIMER`.
    pub const IOC_TIMER: u64 = nix::request_code_write!(IOC_MAGIC, 0x05, size_of::<Timer>()) as u64;
    /// `EVNOTIFY_IOC_SIGNAL`.
    pub const IOC_SIGNAL: u64 =
        nix::request_code_write!(IOC_MAGIC, 0x06, size_of::<Signal>()) as u64;
    /// `EVNOTIFY_IOC_BUSYPOLL`.
    pub const IOC_BUSYPOLL: u64 =
        nix::request_code_write!(IOC_MAGIC, 0x07, size_of::<BusyPoll>()) as u64;
    /// `EVNOTIFY_IOC_SHARE_WORKER`.
    pub const IOC_SHARE_WORKER: u64 =
        nix::request_code_write!(IOC_MAGIC, 0x08, size_of::<Share>()) as u64;
    /// `EVNOTIFY_IOC_WORKER`.
    pub const IOC_WORKER: u64 =
        nix::request_code_read!(IOC_MAGIC, 0x09, size_of::<Worker>()) as u64;
}

/// The unsafe ioctl wrappers: private, so that only [`Channel`]'s safe methods reach them.
mod ioctl {
    use super::sys::*;
    nix::ioctl_read!(version, IOC_MAGIC, 0x00, Version);
    nix::ioctl_write_ptr!(attach, IOC_MAGIC, 0x01, Attach);
    nix::ioctl_write_ptr!(kick, IOC_MAGIC, 0x02, Kick);
    nix::ioctl_read!(stats, IOC_MAGIC, 0x03, Stats);
    nix::ioctl_write_ptr!(kickfd, IOC_MAGIC, 0x04, Attach);
    nix::ioctl_write_ptr!(timer, IOC_MAGIC, 0x05, Timer);
    nix::ioctl_write_ptr!(signal, IOC_MAGIC, 0x06, Signal);
    nix::ioctl_write_ptr!(busypoll, IOC_MAGIC, 0x07, BusyPoll);
    nix::ioctl_write_ptr!(share_worker, IOC_MAGIC, 0x08, Share);
    nix::ioctl_read!(worker, IOC_MAGIC, 0x09, Worker);
}

pub use sys::{Stats, Version};

/// The device node.
pub const DEVICE: &str = "/dev/evnotify";

fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

/// Implements the descriptor traits for a type whose field `$f` owns its descriptor.
macro_rules! owns_fd {
    ($t:ty, $f:ident) => {
        impl AsFd for $t {
            fn as_fd(&self) -> BorrowedFd<'_> {
                self.$f.as_fd()
            }
        }
        impl AsRawFd for $t {
            fn as_raw_fd(&self) -> RawFd {
                self.$f.as_fd().as_raw_fd()
            }
        }
        impl From<$t> for OwnedFd {
            fn from(v: $t) -> OwnedFd {
                v.$f.into()
            }
        }
        impl IntoRawFd for $t {
            fn into_raw_fd(self) -> RawFd {
                OwnedFd::from(self).into_raw_fd()
            }
        }
    };
}

/// One open `/dev/evnotify`: a channel with its own kernel thread, its worker, unless it
/// shares another channel's ([`Channel::share_worker`]).
///
/// Its descriptor is close-on-exec. Every call is answered without waiting for an event, but
/// the first one that needs the worker creates its thread, and dropping the channel waits
/// for its worker's batch in progress (and for the thread to stop, if it was the worker's last
/// channel): see the crate's documentation, "May sleep".
#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
}

owns_fd!(Channel, fd);

/// Adopts a descriptor of `/dev/evnotify` opened elsewhere (inherited, passed over a Unix
/// socket, or opened with other flags). The caller vouches that it is one: nothing is checked
/// here, and on any other file every ioctl fails with `ENOTTY` (or whatever that file's
/// driver answers).
impl From<OwnedFd> for Channel {
    fn from(fd: OwnedFd) -> Self {
        Self { fd }
    }
}

impl Channel {
    /// Opens a new channel on [`DEVICE`].
    ///
    /// # Errors
    ///
    /// As [`Channel::open_path`].
    pub fn open() -> Result<Self> {
        Self::open_path(DEVICE)
    }

    /// Opens a new channel on the device node at `path` (read-write, close-on-exec).
    ///
    /// # Errors
    ///
    /// - `open(2)`'s: `ENOENT` when there is no such node (the module is not loaded, or another
    ///   path);
    /// - `EACCES`: the node is root's (mode 0600) unless a udev rule gives it to a group;
    /// - `EMFILE`: the module's `max_channels` or `max_user_channels` limit, or this process's
    ///   open-file limit (`RLIMIT_NOFILE`);
    /// - `ENFILE`, `ENOMEM`: the system's file table or memory.
    pub fn open_path(path: impl AsRef<Path>) -> Result<Self> {
        // std opens with O_CLOEXEC.
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        Ok(Self { fd: f.into() })
    }

    /// The API version, slot count and feature bits.
    ///
    /// # Errors
    ///
    /// `ENOTTY`: not a `/dev/evnotify` channel (a descriptor adopted with `From<OwnedFd>`).
    pub fn version(&self) -> Result<Version> {
        let mut v = Version::default();
        // SAFETY: `v` is a valid, writable `struct evnotify_version`.
        unsafe { ioctl::version(self.as_raw_fd(), &mut v) }?;
        Ok(v)
    }

    /// Attaches an eventfd to `slot`; the kernel keeps its own reference to it.
    ///
    /// `efd` is borrowed (`&notifier`, `&async_notifier`, `&owned_fd`, `&borrowed_fd`): the
    /// caller keeps its descriptor. Passing one by value, which would close the caller's only
    /// handle as the call returns, does not compile:
    ///
    /// ```compile_fail,E0308
    /// # fn f(ch: &evnotify::Channel) -> std::io::Result<()> {
    /// let n = evnotify::Notifier::new()?;
    /// ch.attach(0, n)?; // expected `&_`, found `Notifier`
    /// # Ok(())
    /// # }
    /// ```
    /// ```no_run
    /// # fn f(ch: &evnotify::Channel) -> std::io::Result<()> {
    /// let n = evnotify::Notifier::new()?;
    /// ch.attach(0, &n)?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// - `EINVAL`: `slot` is not below [`sys::NR_SLOTS`] (64), or `efd` is not an eventfd;
    /// - `EBADF`: `efd` is not open (an `O_PATH` descriptor);
    /// - `ENOMEM`;
    /// - `ENOTTY`: not a `/dev/evnotify` channel (a descriptor adopted with `From<OwnedFd>`).
    pub fn attach(&self, slot: u32, efd: &impl AsFd) -> Result<()> {
        self.attach_raw(slot, efd.as_fd().as_raw_fd())
    }

    /// Detaches the eventfd of `slot`, if any.
    ///
    /// # Errors
    ///
    /// - `EINVAL`: `slot` is not below [`sys::NR_SLOTS`] (64).
    /// - `ENOTTY`: not a `/dev/evnotify` channel (a descriptor adopted with `From<OwnedFd>`).
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
        unsafe { ioctl::attach(self.as_raw_fd(), &req) }?;
        Ok(())
    }

    /// Hooks an eventfd so that writing N to it kicks `slot` N times, with no ioctl.
    ///
    /// `efd` is borrowed, as in [`Channel::attach`]: the caller keeps it, to write to it.
    ///
    /// ```compile_fail,E0308
    /// # fn f(ch: &evnotify::Channel) -> std::io::Result<()> {
    /// let kick = evnotify::Notifier::new()?;
    /// ch.attach_kickfd(0, kick)?; // expected `&_`, found `Notifier`
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// - As [`Channel::attach`], and:
    /// - `EOPNOTSUPP`: `efd` is an `EFD_SEMAPHORE` eventfd (a write of N would cost N steps under
    ///   its lock);
    /// - `ENOMEM` or `EINTR`: the worker's kernel thread, which this call starts on a channel that
    ///   has none yet, could not be created (`EINTR`: a fatal signal came while it waited for
    ///   `kthreadd`).
    pub fn attach_kickfd(&self, slot: u32, efd: &impl AsFd) -> Result<()> {
        self.kickfd_raw(slot, efd.as_fd().as_raw_fd())
    }

    /// Unhooks the kick eventfd of `slot`, if any.
    ///
    /// # Errors
    ///
    /// - `EINVAL`: `slot` is not below [`sys::NR_SLOTS`] (64).
    /// - `ENOTTY`: not a `/dev/evnotify` channel (a descriptor adopted with `From<OwnedFd>`).
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
        unsafe { ioctl::kickfd(self.as_raw_fd(), &req) }?;
        Ok(())
    }

    /// Starts a timer on `slot`: one tick every `period`, `ticks` times (0: until cancelled).
    /// A `period` beyond `u64::MAX` nanoseconds fails with `EINVAL`, as the kernel answers
    /// any period out of range.
    ///
    /// # Errors
    ///
    /// - `EINVAL`: `period` is neither zero nor in [`sys::MIN_PERIOD_NS`]..=[`sys::MAX_PERIOD_NS`]
    ///   (1 ms to 1 day), found here, before any ioctl, when it does not fit `u64` nanoseconds; or
    ///   `slot` is not below 64;
    /// - `ENOMEM`: the channel's timer state (allocated by its first timer, signal or kick
    ///   eventfd);
    /// - `ENOMEM` or `EINTR`: the worker's kernel thread, which this call starts on a channel that
    ///   has none yet, could not be created (`EINTR`: a fatal signal came while it waited for
    ///   `kthreadd`).
    /// - `ENOTTY`: not a `/dev/evnotify` channel (a descriptor adopted with `From<OwnedFd>`).
    pub fn set_timer(&self, slot: u32, period: Duration, ticks: u64) -> Result<()> {
        let req = sys::Timer {
            slot,
            period_ns: period
                .as_nanos()
                .try_into()
                .map_err(|_| errno(libc::EINVAL))?,
            ticks,
            ..Default::default()
        };
        // SAFETY: `req` is a valid `struct evnotify_timer`.
        unsafe { ioctl::timer(self.as_raw_fd(), &req) }?;
        Ok(())
    }

    /// Cancels the timer of `slot`; no tick is queued once this returns.
    ///
    /// # Errors
    ///
    /// - `EINVAL`: `slot` is not below [`sys::NR_SLOTS`] (64).
    /// - `ENOTTY`: not a `/dev/evnotify` channel (a descriptor adopted with `From<OwnedFd>`).
    pub fn cancel_timer(&self, slot: u32) -> Result<()> {
        self.set_timer(slot, Duration::ZERO, 0)
    }

    /// Makes `slot` send `signo` (1 ..= 64; 0 means `SIGIO`) to this process for every kick
    /// or tick it handles; -1 stops it. The kernel takes any of 1 ..= 64, but
    /// [`catch_signal`], the way to receive them, refuses 0 and some numbers: see there.
    ///
    /// # Errors
    ///
    /// - `EINVAL`: `signo` is not in -1..=64, or `slot` is not below 64;
    /// - `ESRCH`: this process is exiting (no pid to record);
    /// - `ENOMEM`;
    /// - `ENOTTY`: not a `/dev/evnotify` channel (a descriptor adopted with `From<OwnedFd>`).
    pub fn set_signal(&self, slot: u32, signo: i32) -> Result<()> {
        let req = sys::Signal {
            slot,
            signo,
            ..Default::default()
        };
        // SAFETY: `req` is a valid `struct evnotify_signal`.
        unsafe { ioctl::signal(self.as_raw_fd(), &req) }?;
        Ok(())
    }

    /// Sets how long, at most, the channel's worker (the thread it shares with any other
    /// channels on it: the limit is theirs too) spins for new work before it sleeps
    /// (an adaptive window, up to [`sys::MAX_BUSYPOLL_NS`]); zero turns busy polling off.
    /// A limit beyond `u32::MAX` nanoseconds fails with `EINVAL`.
    ///
    /// # Errors
    ///
    /// - `EINVAL`: `limit` is above [`sys::MAX_BUSYPOLL_NS`] (1 ms); found here, before any ioctl,
    ///   when it does not fit `u32` nanoseconds;
    /// - `ENOTTY`: not a `/dev/evnotify` channel (a descriptor adopted with `From<OwnedFd>`).
    pub fn set_busypoll(&self, limit: Duration) -> Result<()> {
        let req = sys::BusyPoll {
            limit_ns: limit
                .as_nanos()
                .try_into()
                .map_err(|_| errno(libc::EINVAL))?,
            ..Default::default()
        };
        // SAFETY: `req` is a valid `struct evnotify_busypoll`.
        unsafe { ioctl::busypoll(self.as_raw_fd(), &req) }?;
        Ok(())
    }

    /// Pins the channel's kernel thread (its worker, with every channel that shares it) to
    /// `cpu`, as `taskset` would.
    ///
    /// # Errors
    ///
    /// - `ESRCH`: the thread has not started (it starts with the first kick, kick eventfd or
    ///   timer, or [`Channel::share_worker`]) or is not visible in this pid namespace;
    /// - `EINVAL`: `cpu` is beyond the CPU set (found before any call) or not online;
    /// - `EPERM`: the caller lacks `CAP_SYS_NICE`: the kernel thread runs with root's
    ///   credentials, and `sched_setaffinity` lets only a task's owner or a process with that
    ///   capability change its CPUs;
    /// - [`Channel::stats`]'s.
    pub fn pin_thread(&self, cpu: usize) -> Result<()> {
        let mut set = nix::sched::CpuSet::new();
        set.set(cpu)?;
        match self.stats()?.thread_pid {
            0 => Err(errno(libc::ESRCH)),
            pid => Ok(nix::sched::sched_setaffinity(
                nix::unistd::Pid::from_raw(pid),
                &set,
            )?),
        }
    }

    /// Makes this channel use the worker (kernel thread) of `other`, another open channel,
    /// instead of starting one of its own, and starts that worker if it has none yet: many
    /// channels, few threads. `other` is any channel descriptor this process holds: a
    /// `&Channel`, or the [`BorrowedFd`] of one received over a Unix socket. Call it before
    /// this channel's first kick, kick eventfd or timer, which would start a worker of its
    /// own.
    ///
    /// The worker serves its channels round robin, so a flooded channel cannot starve a quiet
    /// one, and lives while any of them is open. Its busy-poll limit is shared: this channel
    /// takes the worker's, and [`Channel::set_busypoll`] on any of them sets it for all.
    ///
    /// # Errors
    ///
    /// - `EBADF`: `other` is an `O_PATH` descriptor;
    /// - `EINVAL`: `other` is not a `/dev/evnotify` channel, or is this very channel (also
    ///   through a duplicate of its descriptor);
    /// - `EBUSY`: this channel has a worker already;
    /// - `ENOMEM` or `EINTR`: the worker's thread, which this call starts if `other` has
    ///   none, could not be created;
    /// - `ENOTTY`: this is not a `/dev/evnotify` channel, or the module is older than API
    ///   version 3 (no [`sys::F_WORKERS`]).
    pub fn share_worker(&self, other: impl AsFd) -> Result<()> {
        let req = sys::Share {
            fd: other.as_fd().as_raw_fd(),
            ..Default::default()
        };
        // SAFETY: `req` is a valid `struct evnotify_share`.
        unsafe { ioctl::share_worker(self.as_raw_fd(), &req) }?;
        Ok(())
    }

    /// The worker (kernel thread) this channel uses: its id (0 until the channel has one),
    /// its thread's pid, and how many open channels use it. The same values are in the
    /// [`Channel::fdinfo`] lines `worker:` and `worker_channels:`.
    ///
    /// # Errors
    ///
    /// `ENOTTY`: this is not a `/dev/evnotify` channel, or the module is older than API
    /// version 3 (no [`sys::F_WORKERS`]).
    pub fn worker(&self) -> Result<WorkerInfo> {
        let mut w = sys::Worker::default();
        // SAFETY: `w` is a valid, writable `struct evnotify_worker`.
        unsafe { ioctl::worker(self.as_raw_fd(), &mut w) }?;
        Ok(WorkerInfo {
            id: w.worker_id,
            thread_pid: w.thread_pid,
            channels: w.channels,
        })
    }

    /// The channel's `/proc/self/fdinfo` text.
    ///
    /// # Errors
    ///
    /// Reading `/proc/self/fdinfo/<fd>`: `ENOENT` without `/proc`; `InvalidData` for a text that
    /// is not UTF-8 (never the module's).
    pub fn fdinfo(&self) -> Result<String> {
        std::fs::read_to_string(format!("/proc/self/fdinfo/{}", self.as_raw_fd()))
    }

    /// Kicks `slot` `count` times: its eventfd will be signalled `count` times.
    ///
    /// # Errors
    ///
    /// - `EINVAL`: `count` is 0 or above [`sys::MAX_KICK`], or `slot` is not below 64;
    /// - `ENOMEM` or `EINTR`: the worker's kernel thread, which this call starts on a channel that
    ///   has none yet, could not be created (`EINTR`: a fatal signal came while it waited for
    ///   `kthreadd`).
    /// - `ENOTTY`: not a `/dev/evnotify` channel (a descriptor adopted with `From<OwnedFd>`).
    pub fn kick(&self, slot: u32, count: u32) -> Result<()> {
        let req = sys::Kick {
            slot,
            count,
            ..Default::default()
        };
        // SAFETY: `req` is a valid `struct evnotify_kick`.
        unsafe { ioctl::kick(self.as_raw_fd(), &req) }?;
        Ok(())
    }

    /// The channel's counters.
    ///
    /// # Errors
    ///
    /// `ENOTTY`: not a `/dev/evnotify` channel (a descriptor adopted with `From<OwnedFd>`).
    pub fn stats(&self) -> Result<Stats> {
        let mut s = Stats::default();
        // SAFETY: `s` is a valid, writable `struct evnotify_stats`.
        unsafe { ioctl::stats(self.as_raw_fd(), &mut s) }?;
        Ok(s)
    }

    /// Waits until every accepted kick has been handled (or coalesced) and delivered: polls the
    /// stats every millisecond until `pending` is 0, and fails with `ETIMEDOUT` (kind
    /// [`io::ErrorKind::TimedOut`]) after `timeout`. With a timer running, this can return
    /// between two ticks.
    ///
    /// # Errors
    ///
    /// - `ETIMEDOUT` (kind [`io::ErrorKind::TimedOut`]): still busy after `timeout`;
    /// - [`Channel::stats`]'s.
    pub fn wait_idle(&self, timeout: Duration) -> Result<Stats> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            let s = self.stats()?;
            if s.pending == 0 {
                return Ok(s);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(errno(libc::ETIMEDOUT));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// `left` as `ppoll`'s timeout, clamped to the largest `time_t` (about 68 years where
/// `time_t` has 32 bits): `TimeSpec::from_duration` would wrap to a negative, invalid time.
/// The caller polls again until its deadline.
fn poll_timeout(left: Duration) -> TimeSpec {
    let max = Duration::from_secs(libc::time_t::MAX.try_into().unwrap_or(u64::MAX));
    TimeSpec::from_duration(left.min(max))
}

/// Waits for `read` to return something: reads, and while it finds nothing, sleeps in
/// `ppoll` until `fd` is readable. `None` once `deadline` (for ever if `None`) has passed.
/// A readiness report is only a hint (another reader may take the count first), and a signal
/// handler (`EINTR`) only makes it check the time left.
fn wait_readable<T>(
    fd: BorrowedFd<'_>,
    deadline: Option<Instant>,
    mut read: impl FnMut() -> Result<Option<T>>,
) -> Result<Option<T>> {
    loop {
        if let Some(v) = read()? {
            return Ok(Some(v));
        }
        let left = match deadline {
            None => None,
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => Some(poll_timeout(left)),
                _ => return Ok(None),
            },
        };
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        match ppoll(&mut fds, left, None) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

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

/// The worker a channel uses, from [`Channel::worker`] (`struct evnotify_worker`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerInfo {
    /// The worker's id, 0 until the channel has a worker (it starts with the channel's first
    /// kick, kick eventfd or timer, or with [`Channel::share_worker`]). Its thread is named
    /// `evnotify/<id>`.
    pub id: u32,
    /// The worker thread's pid, as [`Stats::thread_pid`]: 0 until it starts, and always 0
    /// seen from a child pid namespace.
    pub thread_pid: i32,
    /// Open channels that use the worker, this one included.
    pub channels: u32,
}

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
            size_of::<Share>(),
            size_of::<Worker>(),
        ] {
            assert_eq!(size % 8, 0, "size {size}");
        }
    }

    /// Only where the generic `_IOC` layout holds: mips, powerpc, sparc and alpha have 13 size
    /// bits and other direction values.
    #[test]
    #[cfg(any(
        target_arch = "x86",
        target_arch = "x86_64",
        target_arch = "arm",
        target_arch = "aarch64",
        target_arch = "riscv32",
        target_arch = "riscv64",
        target_arch = "loongarch64",
        target_arch = "s390x"
    ))]
    fn ioctl_numbers_encode_direction_size_and_magic() {
        // The generic _IOC layout: dir(2) << 30 | size(14) << 16 | type(8) << 8 | nr(8), with
        // _IOC_WRITE 1 and _IOC_READ 2.
        let dec = |n: u64| (n >> 30, (n >> 16) & 0x3fff, (n >> 8) & 0xff, n & 0xff);
        assert_eq!(dec(IOC_VERSION), (2, 16, 0xE6, 0));
        assert_eq!(dec(IOC_ATTACH), (1, 16, 0xE6, 1));
        assert_eq!(dec(IOC_KICK), (1, 16, 0xE6, 2));
        assert_eq!(dec(IOC_STATS), (2, 120, 0xE6, 3));
        assert_eq!(dec(IOC_KICKFD), (1, 16, 0xE6, 4));
        assert_eq!(dec(IOC_TIMER), (1, 32, 0xE6, 5));
        assert_eq!(dec(IOC_SIGNAL), (1, 16, 0xE6, 6));
        assert_eq!(dec(IOC_BUSYPOLL), (1, 16, 0xE6, 7));
        assert_eq!(dec(IOC_SHARE_WORKER), (1, 16, 0xE6, 8));
        assert_eq!(dec(IOC_WORKER), (2, 16, 0xE6, 9));
    }

    /// The serde names are the header's, as fdinfo prints them, and a round trip keeps
    /// every value.
    #[cfg(feature = "serde")]
    #[test]
    fn stats_serialize_with_the_headers_names() {
        let s = Stats {
            kicks: 1,
            fd_kicks: 2,
            thread_pid: -3,
            busypoll_ns: 4,
            sig_refused: u64::MAX,
            ..Default::default()
        };
        let v = serde_json::to_value(s).unwrap();
        let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        let mut want = [
            "kicks",
            "fd_kicks",
            "timer_ticks",
            "handled",
            "notifies",
            "signals",
            "dropped",
            "wakeups",
            "polled",
            "pending",
            "thread_pid",
            "attached",
            "kickfds",
            "timers",
            "signal_slots",
            "busypoll_ns",
            "coalesced",
            "sig_refused",
        ];
        want.sort();
        assert_eq!(keys, want);
        assert_eq!(v["thread_pid"], -3);
        assert_eq!(serde_json::from_value::<Stats>(v).unwrap(), s);
    }

    /// What a reader of the README on crates.io and docs.rs must find: the kernels the module
    /// supports, the API version, every feature, and the minimum Rust version.
    #[test]
    fn readme_names_kernels_features_and_versions() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        let features = manifest
            .split("[features]")
            .nth(1)
            .unwrap()
            .split("\n[")
            .next()
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once(" = ").map(|(name, _)| name.trim()))
            .collect::<Vec<_>>();
        assert!(!features.is_empty());
        let mut want: Vec<String> = features.iter().map(|f| format!("- `{f}`:")).collect();
        want.push("Linux 7.2 and 7.3".into());
        want.push(format!("API version {}", API_VERSION));
        want.push(format!(
            "Minimum Rust version: {}",
            env!("CARGO_PKG_RUST_VERSION")
        ));
        for w in want {
            assert!(readme.contains(&w), "README.md lacks {w:?}");
        }
    }

    #[test]
    fn package_is_publishable() {
        // `cargo package` only warns about missing metadata: check it here.
        assert_eq!(env!("CARGO_PKG_LICENSE"), "MIT OR Apache-2.0");
        assert_eq!(
            env!("CARGO_PKG_REPOSITORY"),
            "https://github.com/rust-evnotify/rust_evnotify"
        );
        assert!(!env!("CARGO_PKG_DESCRIPTION").is_empty());
        assert_eq!(env!("CARGO_PKG_README"), "README.md");
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        for f in ["README.md", "LICENSE-MIT", "LICENSE-APACHE"] {
            assert!(dir.join(f).is_file(), "{f} missing");
        }
        // Cargo exposes no variable for these two, and `cargo package` rewrites the manifest
        // (one array element per line): compare with all whitespace taken out.
        let manifest: String = std::fs::read_to_string(dir.join("Cargo.toml"))
            .unwrap()
            .split_whitespace()
            .collect();
        for key in ["keywords=[\"", "categories=[\""] {
            assert!(manifest.contains(key), "no {key}");
        }
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
    fn poll_timeouts_keep_nanoseconds_and_clamp_to_time_t() {
        use std::time::Duration;
        let t = super::poll_timeout(Duration::from_nanos(1_500));
        assert_eq!((t.tv_sec(), t.tv_nsec()), (0, 1_500));
        // Cast to `time_t`, u64::MAX seconds would be -1: an EINVAL from ppoll.
        let t = super::poll_timeout(Duration::MAX);
        assert_eq!(t.tv_sec(), libc::time_t::MAX);
        let max = u64::try_from(libc::time_t::MAX).unwrap();
        let t = super::poll_timeout(Duration::from_secs(max) + Duration::from_secs(1));
        assert_eq!(t.tv_sec(), libc::time_t::MAX);
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
