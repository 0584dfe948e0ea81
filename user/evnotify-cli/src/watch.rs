//! `evnotify watch`: a timer slot and a kick eventfd slot, every notification as it comes.

use crate::dev::{kick_write, notify_read, Dev};
use crate::error::DevError;
use crate::info::print_stats;
use crate::json::{nanos, notify_record, Output};
use anyhow::{Context, Result};
use serde_json::json;
use std::{
    os::fd::AsFd,
    time::{Duration, Instant},
};

pub fn watch(
    dev: &Dev,
    timer: Option<Duration>,
    kick_every: Option<Duration>,
    dur: Duration,
    out: Output,
) -> Result<()> {
    use nix::poll::{ppoll, PollFd, PollFlags};
    let (tn, kn, kick) = (
        dev.notifier(0, "notify")?,
        dev.notifier(1, "notify")?,
        dev.notifier(1, "kick")?,
    );
    dev.attach(0, &tn)?;
    dev.attach(1, &kn)?;
    dev.attach_kickfd(1, &kick)?;
    if let Some(p) = timer {
        dev.set_timer(0, p, 0)?;
    }
    // The parser bounds both durations (a day), so these cannot overflow.
    let later = |t: Instant, d: Duration| t.checked_add(d).context("a deadline beyond the clock");
    let start = Instant::now();
    let end = later(start, dur)?;
    let mut next_kick = kick_every.map(|d| later(start, d)).transpose()?;
    while Instant::now() < end {
        let until = next_kick.map_or(end, |k| k.min(end));
        let mut fds = [
            PollFd::new(tn.as_fd(), PollFlags::POLLIN),
            PollFd::new(kn.as_fd(), PollFlags::POLLIN),
        ];
        match ppoll(&mut fds, Some(poll_timeout(Instant::now(), until)), None) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                return Err(DevError::new(
                    &dev.path,
                    "ppoll(2) on the notify eventfds of slots 0 and 1",
                    e,
                )
                .into())
            }
        }
        let elapsed = start.elapsed();
        for (slot, name, n) in [(0, "timer", &tn), (1, "kick", &kn)] {
            let v = dev.check(n.drain(), || notify_read(slot))?;
            if v > 0 && out.json {
                out.emit(notify_record(elapsed, name, slot, v))?;
            } else if v > 0 {
                let t = elapsed.as_secs_f64() * 1e3;
                println!("{t:>10.3} ms  {name:<5} +{v}");
            }
        }
        if let (Some(k), Some(every)) = (next_kick, kick_every) {
            if Instant::now() >= k {
                dev.check(kick.post(1), || kick_write(1, 1))?;
                // From now if the loop fell behind (a stop, a suspend): no burst to catch up.
                next_kick = Some(later(k.max(Instant::now()), every)?);
            }
        }
    }
    dev.set_timer(0, Duration::ZERO, 0)?;
    if out.json {
        return out.emit(json!({
            "type": "end",
            "device": dev.path,
            "duration_ns": nanos(dur),
            "timer_period_ns": timer.map(nanos),
            "kick_every_ns": kick_every.map(nanos),
            "stats": dev.stats()?,
        }));
    }
    print_stats(dev)
}

/// `ppoll`'s timeout until `until`, to the nanosecond: rounded down to milliseconds, the
/// last millisecond before a deadline would be a busy loop of zero-timeout polls.
fn poll_timeout(now: Instant, until: Instant) -> nix::sys::time::TimeSpec {
    nix::sys::time::TimeSpec::from_duration(until.saturating_duration_since(now))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_timeout_keeps_the_last_millisecond() {
        let now = Instant::now();
        let t = poll_timeout(now, now + Duration::from_micros(500));
        assert_eq!((t.tv_sec(), t.tv_nsec()), (0, 500_000));
        let t = poll_timeout(now, now + Duration::from_millis(1500));
        assert_eq!((t.tv_sec(), t.tv_nsec()), (1, 500_000_000));
        let t = poll_timeout(now + Duration::from_secs(1), now);
        assert_eq!((t.tv_sec(), t.tv_nsec()), (0, 0));
    }
}
