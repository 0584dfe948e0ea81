//! [`Dev`]: the channel a command opens, whose every failure names the device and the
//! operation.

use crate::error::{DevError, Failure};
use crate::info::counters_text;
use crate::stat::Worker;
use anyhow::Result;
use evnotify::{sys, Channel, Notifier, Stats};
use std::{io, time::Duration};

/// An open channel whose every failure names the device and the operation.
pub struct Dev {
    pub ch: Channel,
    pub path: String,
}

impl Dev {
    pub fn open(path: &str) -> Result<Self, DevError> {
        let ch = Channel::open_path(path).map_err(|e| DevError::new(path, "open", e))?;
        // Another API version may answer as its own version does, not only with ENOTTY.
        if let Ok(v) = ch.version() {
            if v.api_version != sys::API_VERSION {
                eprintln!(
                    "evnotify: warning: {path} speaks API version {}, this command version {}: \
                     results may differ from its manual; build both from one tree",
                    v.api_version,
                    sys::API_VERSION
                );
            }
        }
        Ok(Self {
            ch,
            path: path.to_owned(),
        })
    }

    /// `r`, or a [`DevError`] for operation `op`.
    pub fn check<T, E: Into<io::Error>>(
        &self,
        r: Result<T, E>,
        op: impl FnOnce() -> String,
    ) -> Result<T> {
        r.map_err(|e| DevError::new(&self.path, op(), e).into())
    }

    pub fn version(&self) -> Result<sys::Version> {
        self.check(self.ch.version(), || "ioctl EVNOTIFY_IOC_VERSION".into())
    }

    pub fn stats(&self) -> Result<Stats> {
        self.check(self.ch.stats(), || "ioctl EVNOTIFY_IOC_STATS".into())
    }

    pub fn worker(&self) -> Result<Worker> {
        let w = self.check(self.ch.worker(), || "ioctl EVNOTIFY_IOC_WORKER".into())?;
        Ok(Worker::from(&w))
    }

    pub fn attach(&self, slot: u32, n: &Notifier) -> Result<()> {
        self.check(self.ch.attach(slot, n), || {
            format!("ioctl EVNOTIFY_IOC_ATTACH (slot {slot})")
        })
    }

    pub fn attach_kickfd(&self, slot: u32, n: &Notifier) -> Result<()> {
        self.check(self.ch.attach_kickfd(slot, n), || {
            format!("ioctl EVNOTIFY_IOC_KICKFD (slot {slot})")
        })
    }

    pub fn kick(&self, slot: u32, count: u32) -> Result<()> {
        self.check(self.ch.kick(slot, count), || {
            format!("ioctl EVNOTIFY_IOC_KICK (slot {slot}, count {count})")
        })
    }

    pub fn set_timer(&self, slot: u32, period: Duration, ticks: u64) -> Result<()> {
        self.check(self.ch.set_timer(slot, period, ticks), || {
            let ns = period.as_nanos();
            format!("ioctl EVNOTIFY_IOC_TIMER (slot {slot}, period {ns} ns, {ticks} ticks)")
        })
    }

    pub fn set_signal(&self, slot: u32, signo: i32) -> Result<()> {
        self.check(self.ch.set_signal(slot, signo), || {
            format!("ioctl EVNOTIFY_IOC_SIGNAL (slot {slot}, signal {signo})")
        })
    }

    pub fn set_busypoll(&self, limit: Duration) -> Result<()> {
        self.check(self.ch.set_busypoll(limit), || {
            format!("ioctl EVNOTIFY_IOC_BUSYPOLL ({} ns)", limit.as_nanos())
        })
    }

    /// A new eventfd for `slot` (`role`: what it is for), failing like the device's calls.
    pub fn notifier(&self, slot: u32, role: &str) -> Result<Notifier> {
        self.check(Notifier::new(), || {
            format!("eventfd(2) for slot {slot} ({role})")
        })
    }

    pub fn wait_idle(&self, timeout: Duration) -> Result<()> {
        match self.ch.wait_idle(timeout) {
            Err(e) if e.raw_os_error() == Some(libc::ETIMEDOUT) => Err(self.stalled(format!(
                "the channel did not go idle within {timeout:?}: kicks still pending"
            ))),
            r => self.check(r.map(drop), || {
                format!("wait {timeout:?} for the channel to go idle")
            }),
        }
    }

    /// A [`Failure`] for a channel that stopped delivering: `what` after the device's name,
    /// and its counters in the hint (which say whether the thread handled the work).
    pub fn stalled(&self, what: String) -> anyhow::Error {
        let counters = match self.stats() {
            Ok(s) => counters_text(&s),
            Err(e) => format!("(no counters: {e:#})"),
        };
        Failure {
            what: format!("{}: {what}", self.path),
            hint: format!(
                "if `pending` stays above 0, the channel's kernel thread is not running (look \
                 for the module's warnings in `dmesg`); if `handled` grew but not `notifies`, \
                 the slot lost its eventfd; if `notifies` grew, another reader of the eventfd \
                 took the count. The channel's counters now:\n{counters}"
            ),
        }
        .into()
    }

    pub fn fdinfo(&self) -> Result<String> {
        self.check(self.ch.fdinfo(), || "read its fdinfo".into())
    }
}

/// The operation of a write of `n` kicks to `slot`'s kick eventfd, for its error.
pub fn kick_write(slot: u32, n: u64) -> String {
    format!("write(2) of {n} to slot {slot}'s kick eventfd")
}

/// The operation of a read of `slot`'s notify eventfd, for its error.
pub fn notify_read(slot: u32) -> String {
    format!("read(2) of slot {slot}'s notify eventfd")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The eventfd calls of `ping` and `watch` fail naming the device, the call and the
    /// slot, with a hint of what to do.
    #[test]
    fn eventfd_errors_name_the_call_and_say_what_to_do() {
        use nix::errno::Errno;
        let e = DevError::new("/dev/evnotify", kick_write(3, 2), Errno::EAGAIN);
        assert_eq!(
            e.to_string(),
            "/dev/evnotify: write(2) of 2 to slot 3's kick eventfd: \
             Resource temporarily unavailable"
        );
        let hint = e.hint().unwrap();
        for part in ["counter is full", "evnotify stat -v", "dmesg"] {
            assert!(hint.contains(part), "{hint:?} lacks {part:?}");
        }
        let e = DevError::new("/dev/evnotify", notify_read(1), Errno::EBADF);
        assert_eq!(
            e.to_string(),
            "/dev/evnotify: read(2) of slot 1's notify eventfd: Bad file descriptor"
        );
        assert!(e.hint().unwrap().contains("report it"), "{:?}", e.hint());
        let e = DevError::new("/dev/evnotify", "signalfd(2) for signal 10", Errno::EMFILE);
        assert!(e.hint().unwrap().contains("ulimit -n"), "{:?}", e.hint());
    }
}
