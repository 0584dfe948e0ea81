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
//!
//! [`AsFd`]: std::os::fd::AsFd
//! [`AsRawFd`]: std::os::fd::AsRawFd
//! [`IntoRawFd`]: std::os::fd::IntoRawFd

#![deny(missing_docs)]
// Every fallible public function says which errors it returns and when.
#![deny(clippy::missing_errors_doc)]
#![cfg_attr(docsrs, feature(doc_cfg))]

use nix::{
    errno::Errno,
    poll::{ppoll, PollFd, PollFlags},
    sys::time::TimeSpec,
};
use std::{
    io,
    os::fd::BorrowedFd,
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
pub mod sys;

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

mod channel;
mod notifier;
mod ring;
mod signals;

pub use channel::{monotonic_now, Channel, WorkerInfo};
pub use notifier::Notifier;
pub use ring::{Completion, CompletionQueue, Ring, SubmitQueue};
pub use signals::{catch_signal, SignalCatcher, SignalInfo};

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

#[cfg(test)]
mod tests {
    use super::sys::*;

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
}
