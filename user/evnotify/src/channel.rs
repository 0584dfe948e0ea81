//! [`Channel`]: one open `/dev/evnotify`, and [`WorkerInfo`], what it says of its worker.

use crate::{errno, sys, Result, Stats, Version, DEVICE};
use std::{
    os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd},
    path::Path,
    time::{Duration, Instant},
};

/// The unsafe ioctl wrappers: private, so that only [`Channel`]'s safe methods reach them.
mod ioctl {
    use crate::sys::*;
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
    /// - `EBUSY`: `efd` is the kick eventfd of another slot, of this or another channel, or a
    ///   KVM irqfd (API version 4);
    /// - `ENOMEM`, `EAGAIN` or `EINTR`: the worker's kernel thread, which this call starts on a channel that
    ///   has none yet, could not be created (`EINTR`: a fatal signal came while it waited for
    ///   `kthreadd`); or, with [`sys::F_CGROUPS`], the errno of moving it into the caller's
    ///   cgroups (`ENOMEM`, or a controller's or security module's refusal).
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
    /// - `ENOMEM`, `EAGAIN` or `EINTR`: the worker's kernel thread, which this call starts on a channel that
    ///   has none yet, could not be created (`EINTR`: a fatal signal came while it waited for
    ///   `kthreadd`); or, with [`sys::F_CGROUPS`], the errno of moving it into the caller's
    ///   cgroups (`ENOMEM`, or a controller's or security module's refusal).
    /// - `ENOTTY`: not a `/dev/evnotify` channel (a descriptor adopted with `From<OwnedFd>`).
    pub fn set_timer(&self, slot: u32, period: Duration, ticks: u64) -> Result<()> {
        self.timer(slot, period, ticks, None)
    }

    /// Starts a timer on `slot` whose first tick falls at `first`, a time on the kernel's
    /// `CLOCK_MONOTONIC` (outside a time namespace, as [`monotonic_now`] reads it: see there),
    /// then one every `period`, `ticks` times (0: until cancelled), each never before its
    /// time: as a timerfd set with `TFD_TIMER_ABSTIME`. Needs [`sys::F_TIMER_ABSTIME`]: an
    /// older module answers `EINVAL`. A
    /// `first` already past delivers at once every tick due since (signalled one by one: a
    /// read may see part of them).
    ///
    /// # Errors
    ///
    /// As [`Channel::set_timer`], and `EINVAL` for a zero `period` (use
    /// [`Channel::cancel_timer`]) or a `first` beyond [`sys::MAX_START_NS`] (found here).
    pub fn set_timer_at(
        &self,
        slot: u32,
        first: Duration,
        period: Duration,
        ticks: u64,
    ) -> Result<()> {
        self.timer(slot, period, ticks, Some(first))
    }

    /// The ioctl of [`Channel::set_timer`] and [`Channel::set_timer_at`].
    fn timer(
        &self,
        slot: u32,
        period: Duration,
        ticks: u64,
        first: Option<Duration>,
    ) -> Result<()> {
        let ns = |d: Duration| u64::try_from(d.as_nanos()).map_err(|_| errno(libc::EINVAL));
        let start_ns = first.map(ns).transpose()?;
        if start_ns.is_some_and(|s| s > sys::MAX_START_NS) {
            return Err(errno(libc::EINVAL));
        }
        let req = sys::Timer {
            slot,
            flags: if first.is_some() {
                sys::TIMER_ABSTIME
            } else {
                0
            },
            period_ns: ns(period)?,
            ticks,
            start_ns: start_ns.unwrap_or(0),
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
    /// - `ENOMEM`;
    /// - `ENOTTY`: not a `/dev/evnotify` channel (a descriptor adopted with `From<OwnedFd>`).
    ///
    /// [`catch_signal`]: crate::catch_signal
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
    /// one, and lives while any of them is open. On a kernel with [`sys::F_CGROUPS`], its
    /// thread runs in the cgroups of the task that started it, so this channel's work is
    /// charged there, whatever the caller's cgroups. Its busy-poll limit is shared: this channel
    /// takes the worker's, and [`Channel::set_busypoll`] on any of them sets it for all.
    ///
    /// # Errors
    ///
    /// - `EBADF`: `other` is an `O_PATH` descriptor;
    /// - `EINVAL`: `other` is not a `/dev/evnotify` channel, or is this very channel (also
    ///   through a duplicate of its descriptor);
    /// - `EBUSY`: this channel has a worker already;
    /// - `ENOMEM`, `EAGAIN` or `EINTR`: the worker's thread, which this call starts if `other` has
    ///   none, could not be created, or (with [`sys::F_CGROUPS`]) moved into the caller's
    ///   cgroups, with that errno;
    /// - `ENOTTY`: this is not a `/dev/evnotify` channel, or the module is older than API
    ///   version 3 (no [`sys::F_WORKERS`]).
    ///
    /// `other` is borrowed: passing a channel by value would close it at once.
    ///
    /// ```compile_fail,E0308
    /// # fn f(a: &evnotify::Channel) -> std::io::Result<()> {
    /// let b = evnotify::Channel::open()?;
    /// a.share_worker(b)?; // expected `&_`, found `Channel`
    /// # Ok(())
    /// # }
    /// ```
    pub fn share_worker(&self, other: &impl AsFd) -> Result<()> {
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
    /// - `ENOMEM`, `EAGAIN` or `EINTR`: the worker's kernel thread, which this call starts on a channel that
    ///   has none yet, could not be created (`EINTR`: a fatal signal came while it waited for
    ///   `kthreadd`); or, with [`sys::F_CGROUPS`], the errno of moving it into the caller's
    ///   cgroups (`ENOMEM`, or a controller's or security module's refusal).
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
    ///
    /// [`io::ErrorKind::TimedOut`]: std::io::ErrorKind::TimedOut
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

/// The time on `CLOCK_MONOTONIC` (`std::time::Instant` reads it too, but does not show its
/// value): outside a time namespace, the clock of [`Channel::set_timer_at`]. In a time
/// namespace with a monotonic offset (`unshare --time --monotonic`), this is the kernel's
/// clock plus that offset (shown by `/proc/<pid>/timens_offsets` of a process in the
/// namespace), and the module takes the kernel's: subtract it (a result below 0 is a time
/// before boot: 0 does as well).
///
/// # Panics
///
/// If the clock cannot be read, as `std::time::Instant::now` does: it exists on every kernel
/// this library runs on.
pub fn monotonic_now() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(Duration::from)
        .expect("CLOCK_MONOTONIC is readable")
}
