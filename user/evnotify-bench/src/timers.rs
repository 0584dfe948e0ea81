//! Timer lateness: each tick's delivery time against its ideal time (start + k·period), for the
//! module's slot timers and for timerfd, read by a `SCHED_FIFO` thread pinned to one CPU so
//! that what is measured is the producer's lateness, not the reader's.

use anyhow::{ensure, Context, Result};
use evnotify::{Channel, Notifier};
use hdrhistogram::Histogram;
use nix::{
    errno::Errno,
    poll::{ppoll, PollFd, PollFlags},
    sys::{
        time::TimeSpec,
        timerfd::{ClockId as TimerClock, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags},
    },
    time::{clock_gettime, ClockId},
    unistd::read,
};
use std::{
    os::fd::{AsFd, BorrowedFd},
    thread,
    time::{Duration, Instant},
};

/// The periods measured, with their names in the results.
pub const PERIODS: [(&str, Duration); 2] = [
    ("1ms", Duration::from_millis(1)),
    ("10ms", Duration::from_millis(10)),
];
/// Ticks per period and source, split over `ROUNDS` rounds that take turns, like the latency
/// paths: 2,000 at 1 ms and 400 at 10 ms, about 12 s in all.
const TICKS: [u64; 2] = [2000, 400];
const ROUNDS: u64 = 4;
/// The reader's real-time priority.
const PRIO: i32 = 50;

/// The lateness of every tick of one source at one period.
pub struct Lateness {
    pub source: &'static str,
    pub period: &'static str,
    /// Nanoseconds late, per tick.
    pub hist: Histogram<u64>,
    /// Ticks delivered before their ideal time (recorded as 0 late); none are expected.
    pub early: u64,
    /// For a ticker that cannot be started at a given time (the module's), the longest its
    /// arming call took: the ideal times are taken from just before it, so each figure may
    /// overstate the lateness by up to this much. 0 for one started at an exact time.
    pub start_uncertainty_ns: u64,
}

/// Something that ticks: a channel's slot 0 or a timerfd.
trait Ticker {
    /// Starts `ticks` ticks, one every `period`, from `now` (CLOCK_MONOTONIC, just taken):
    /// exactly from then if it returns true, from some time during the call if false.
    fn start(&self, now: Duration, period: Duration, ticks: u64) -> Result<bool>;
    fn stop(&self) -> Result<()>;
    /// Whether it stops by itself after `ticks` ticks (so that more would be a miscount).
    fn limited(&self) -> bool;
    /// Readable when ticks have arrived; a read of 8 bytes returns how many.
    fn fd(&self) -> BorrowedFd<'_>;
}

struct Module(Channel, Notifier);

impl Ticker for Module {
    fn start(&self, _now: Duration, period: Duration, ticks: u64) -> Result<bool> {
        self.0.set_timer(0, period, ticks)?;
        Ok(false)
    }
    fn stop(&self) -> Result<()> {
        Ok(self.0.cancel_timer(0)?)
    }
    fn limited(&self) -> bool {
        true
    }
    fn fd(&self) -> BorrowedFd<'_> {
        self.1.as_fd()
    }
}

impl Ticker for TimerFd {
    fn start(&self, now: Duration, period: Duration, _ticks: u64) -> Result<bool> {
        // The first expiry at an absolute time: no uncertainty about the start.
        let first = TimeSpec::from_duration(now + period);
        let p = TimeSpec::from_duration(period);
        let e = Expiration::IntervalDelayed(first, p);
        self.set(e, TimerSetTimeFlags::TFD_TIMER_ABSTIME)?;
        Ok(true)
    }
    fn stop(&self) -> Result<()> {
        Ok(self.unset()?)
    }
    fn limited(&self) -> bool {
        false
    }
    fn fd(&self) -> BorrowedFd<'_> {
        self.as_fd()
    }
}

/// Waits for ticks on a non-blocking `fd` and returns how many arrived (the eventfd's count or
/// the timerfd's expirations); fails at `deadline`.
fn read_ticks(fd: BorrowedFd<'_>, deadline: Instant) -> Result<u64> {
    loop {
        let mut b = [0u8; 8];
        match read(fd, &mut b) {
            Ok(8) => return Ok(u64::from_ne_bytes(b)),
            Ok(n) => anyhow::bail!("short read of {n} bytes"),
            Err(Errno::EAGAIN) => {}
            Err(e) => return Err(e.into()),
        }
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .context("no tick before the deadline")?;
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        match ppoll(&mut fds, Some(TimeSpec::from_duration(left)), None) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// CLOCK_MONOTONIC, which timerfd's absolute times use.
fn mono() -> Result<Duration> {
    Ok(clock_gettime(ClockId::CLOCK_MONOTONIC)?.into())
}

/// Runs `ticks` ticks of `t` and records each one's lateness in `l`.
fn measure(t: &dyn Ticker, period: Duration, ticks: u64, l: &mut Lateness) -> Result<()> {
    let start = mono()?;
    if !t.start(start, period, ticks)? {
        let armed = mono()?.saturating_sub(start).as_nanos() as u64;
        l.start_uncertainty_ns = l.start_uncertainty_ns.max(armed);
    }
    // Generous: a run is broken only if ticks stop coming altogether.
    let deadline = Instant::now() + period * (4 * ticks as u32) + Duration::from_secs(10);
    let mut k = 0;
    while k < ticks {
        let n = read_ticks(t.fd(), deadline)?;
        let now = mono()?;
        // A read of n > 1 ticks: all but the first are later than this read shows for them.
        for j in k + 1..=(k + n).min(ticks) {
            let ideal = start + period * j as u32;
            match now.checked_sub(ideal) {
                Some(late) => l.hist.record(late.as_nanos() as u64)?,
                None => {
                    l.early += 1;
                    l.hist.record(0)?;
                }
            }
        }
        k += n;
    }
    t.stop()?;
    // A timerfd may have expired again before it was stopped.
    ensure!(
        !t.limited() || k == ticks,
        "{} delivered {k} ticks, {ticks} asked",
        l.source
    );
    Ok(())
}

/// Makes the calling thread `SCHED_FIFO` at `prio`, pinned to `cpu`.
fn realtime(cpu: usize, prio: i32) -> Result<()> {
    crate::cpu::pin(0, cpu)?;
    let p = libc::sched_param {
        sched_priority: prio,
    };
    // SAFETY: A plain syscall with a valid struct, for the calling thread.
    Errno::result(unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &p) })
        .context("SCHED_FIFO")?;
    Ok(())
}

/// Every source at every period, in rounds that take turns. The reader, the channel's thread
/// and (since it is armed there) the timerfd's hrtimer all run on `cpu`.
pub fn lateness(cpu: usize) -> Result<Vec<Lateness>> {
    let ch = Channel::open()?;
    let n = Notifier::new()?;
    ch.attach(0, &n)?;
    // The thread starts with the first kick; pin it where the reader runs.
    ch.kick(0, 1)?;
    ensure!(n.wait()? == 1, "warm-up kick");
    ch.pin_thread(cpu)?;
    let module = Module(ch, n);
    let tfd = TimerFd::new(
        TimerClock::CLOCK_MONOTONIC,
        TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
    )?;
    let sources: [(&str, &(dyn Ticker + Sync)); 2] = [("evnotify", &module), ("timerfd", &tfd)];
    thread::scope(|s| {
        s.spawn(|| -> Result<Vec<Lateness>> {
            realtime(cpu, PRIO)?;
            let mut all = Vec::new();
            for (source, _) in sources {
                for (period, _) in PERIODS {
                    all.push(Lateness {
                        source,
                        period,
                        hist: Histogram::new(3)?,
                        early: 0,
                        start_uncertainty_ns: 0,
                    });
                }
            }
            for round in 0..ROUNDS as usize {
                for i in crate::measure::turn(all.len(), round) {
                    let (src, per) = (i / PERIODS.len(), i % PERIODS.len());
                    let ticks = TICKS[per] / ROUNDS;
                    if round == 0 {
                        crate::measure::progress(&format!(
                            "first round: {} {}",
                            all[i].source, all[i].period
                        ));
                    } else {
                        crate::watchdog::step(&format!(
                            "round {round}: {} {}",
                            all[i].source, all[i].period
                        ));
                    }
                    measure(sources[src].1, PERIODS[per].1, ticks, &mut all[i])?;
                }
            }
            Ok(all)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("timer reader panicked"))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lateness(source: &'static str) -> Lateness {
        Lateness {
            source,
            period: "1ms",
            hist: Histogram::new(3).unwrap(),
            early: 0,
            start_uncertainty_ns: 0,
        }
    }

    #[test]
    fn timerfd_ticks_are_each_counted_and_none_early() {
        let tfd = TimerFd::new(
            TimerClock::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )
        .unwrap();
        let mut l = lateness("timerfd");
        measure(&tfd, Duration::from_millis(1), 30, &mut l).unwrap();
        // Counted again from a new start, with nothing left over from the first run.
        measure(&tfd, Duration::from_millis(1), 30, &mut l).unwrap();
        assert_eq!(l.hist.len(), 60);
        assert_eq!(l.early, 0);
        // Started at an exact time.
        assert_eq!(l.start_uncertainty_ns, 0);
    }

    /// Delivers all its ticks, and `extra` more, at once when started.
    struct Burst(Notifier, u64);

    impl Ticker for Burst {
        fn start(&self, _now: Duration, _period: Duration, ticks: u64) -> Result<bool> {
            self.0.post(ticks + self.1)?;
            Ok(false)
        }
        fn stop(&self) -> Result<()> {
            Ok(())
        }
        fn limited(&self) -> bool {
            true
        }
        fn fd(&self) -> BorrowedFd<'_> {
            self.0.as_fd()
        }
    }

    #[test]
    fn every_tick_of_one_read_is_counted_against_its_own_ideal_time() {
        // Ten ticks read at once, right after the start: each one before its ideal time.
        let mut l = lateness("burst");
        measure(
            &Burst(Notifier::new().unwrap(), 0),
            Duration::from_secs(1),
            10,
            &mut l,
        )
        .unwrap();
        assert_eq!((l.hist.len(), l.early), (10, 10));
    }

    #[test]
    fn a_limited_ticker_that_delivers_more_fails_the_run() {
        let mut l = lateness("burst");
        let err = measure(
            &Burst(Notifier::new().unwrap(), 1),
            Duration::from_secs(1),
            10,
            &mut l,
        )
        .unwrap_err();
        assert!(err.to_string().contains("11 ticks, 10 asked"), "{err}");
    }

    #[test]
    fn no_tick_by_the_deadline_fails() {
        let n = Notifier::new().unwrap();
        let err = read_ticks(n.as_fd(), Instant::now() + Duration::from_millis(5)).unwrap_err();
        assert!(err.to_string().contains("deadline"), "{err}");
    }
}
