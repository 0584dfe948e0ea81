//! Timer lateness: each tick's delivery time against its ideal time (start + k·period), for the
//! module's slot timers and for timerfd, read two ways: by a `SCHED_FIFO` thread pinned to one
//! CPU with the channel's thread, so that what is measured is the producer's lateness, not the
//! reader's; and by a plain thread (default policy and affinity, its channel's thread not
//! pinned either), as an ordinary program reads. Two more rows tick 64 timers at once, read
//! by the pinned reader with one `ppoll` on all 64 descriptors: a timer on each of a
//! channel's 64 slots, each with its own eventfd, and its peer, 64 timerfds, started on one grid
//! (their ticks fall due together) and read
//! the same way.

use anyhow::{anyhow, bail, ensure, Context, Result};
use evnotify::{monotonic_now, sys::NR_SLOTS, Channel, Notifier};
use hdrhistogram::Histogram;
use nix::{
    errno::Errno,
    poll::{ppoll, PollFd, PollFlags},
    sys::{
        time::TimeSpec,
        timerfd::{ClockId as TimerClock, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags},
    },
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
/// Ticks per period, source and reader, split over `ROUNDS` rounds that take turns, like the
/// latency paths: 4,000 at 1 ms and 1,000 at 10 ms, about 28 s per reader (at 400 ticks a
/// p99 was the fourth-latest tick, and moved by a third between runs).
const TICKS: [u64; 2] = [4000, 1000];
const ROUNDS: u64 = 4;
/// The reader's real-time priority.
const PRIO: i32 = 50;
/// The row of every slot of one channel ticking at once, and its peer of as many timerfds:
/// their period (`PERIODS`' second, 6,400 ticks/s in all: at 1 ms, 64,000 ticks/s with a
/// `ppoll` of 64 descriptors each were more than the reader kept up with in the emulated VM,
/// so the row measured the reader's overload), and their ticks per timer over the rounds: 10
/// a round, about 0.1 s a round, 0.4 s a row.
pub const SLOTS_SOURCE: &str = "evnotify_64slots";
pub const SLOTS_PEER: &str = "timerfd_64";
pub const SLOTS_PERIOD: (&str, Duration) = PERIODS[1];
const SLOTS_TICKS: u64 = 40;
// The rows' names say 64; every round has the same ticks.
const _: () = assert!(NR_SLOTS == 64 && SLOTS_TICKS.is_multiple_of(ROUNDS));

/// How the ticks are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reader {
    /// A `SCHED_FIFO` thread pinned to the CPU of the channel's thread: the producer's
    /// lateness (`timer_lateness_ns`).
    Pinned,
    /// A new thread of default policy and affinity, its channel's thread not pinned either:
    /// what an ordinary program sees (`timer_lateness_plain_ns`).
    Plain,
}

/// The lateness of every tick of one source at one period, read one way.
pub struct Lateness {
    pub source: &'static str,
    pub period: &'static str,
    pub reader: Reader,
    /// Nanoseconds late, per tick.
    pub hist: Histogram<u64>,
    /// Ticks delivered before their ideal time (recorded as 0 late); none are expected.
    pub early: u64,
    /// For a row read from many descriptors with one `ppoll` (the 64 slots, the 64 timerfds):
    /// the polls that found ticks to read. 0 for the others.
    pub wakeups: u64,
}

impl Lateness {
    pub fn new(source: &'static str, period: &'static str, reader: Reader) -> Result<Self> {
        Ok(Self {
            source,
            period,
            reader,
            hist: Histogram::new(3)?,
            early: 0,
            wakeups: 0,
        })
    }
}

/// Something that ticks: a channel's slot or a timerfd.
trait Ticker {
    /// Starts `ticks` ticks, one every `period`, the first at `first` (CLOCK_MONOTONIC): both
    /// kinds start at a given time, so that no ideal time depends on how long a call took.
    fn start(&self, first: Duration, period: Duration, ticks: u64) -> Result<()>;
    fn stop(&self) -> Result<()>;
    /// Whether it stops by itself after `ticks` ticks (so that more would be a miscount).
    fn limited(&self) -> bool;
    /// Readable when ticks have arrived; a read of 8 bytes returns how many.
    fn fd(&self) -> BorrowedFd<'_>;
}

/// One slot of a channel, with the eventfd its ticks are signalled on.
struct Slot<'c> {
    ch: &'c Channel,
    slot: u32,
    n: Notifier,
}

impl Ticker for Slot<'_> {
    fn start(&self, first: Duration, period: Duration, ticks: u64) -> Result<()> {
        Ok(self.ch.set_timer_at(self.slot, first, period, ticks)?)
    }
    fn stop(&self) -> Result<()> {
        Ok(self.ch.cancel_timer(self.slot)?)
    }
    fn limited(&self) -> bool {
        true
    }
    fn fd(&self) -> BorrowedFd<'_> {
        self.n.as_fd()
    }
}

impl Ticker for TimerFd {
    fn start(&self, first: Duration, period: Duration, _ticks: u64) -> Result<()> {
        let first = TimeSpec::from_duration(first);
        let p = TimeSpec::from_duration(period);
        let e = Expiration::IntervalDelayed(first, p);
        Ok(self.set(e, TimerSetTimeFlags::TFD_TIMER_ABSTIME)?)
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

/// Reads the ticks that have arrived on a non-blocking `fd` (the eventfd's count or the
/// timerfd's expirations): `None` if there are none.
fn try_read_ticks(fd: BorrowedFd<'_>) -> Result<Option<u64>> {
    let mut b = [0u8; 8];
    match read(fd, &mut b) {
        Ok(8) => Ok(Some(u64::from_ne_bytes(b))),
        Ok(n) => bail!("short read of {n} bytes"),
        Err(Errno::EAGAIN) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The time left until `deadline`; fails once it has passed.
fn left(deadline: Instant) -> Result<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .context("no tick before the deadline")
}

/// Waits for ticks on a non-blocking `fd` and returns how many arrived; fails at `deadline`.
fn read_ticks(fd: BorrowedFd<'_>, deadline: Instant) -> Result<u64> {
    loop {
        if let Some(n) = try_read_ticks(fd)? {
            return Ok(n);
        }
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        match ppoll(
            &mut fds,
            Some(TimeSpec::from_duration(left(deadline)?)),
            None,
        ) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Records in `l` ticks `k + 1 ..= k + n` (none past `ticks`) of a ticker started at `start`,
/// read at `now`: each against its own ideal time, so that in a read of n > 1 ticks all but
/// the first count as later than the read shows for them.
fn record(
    l: &mut Lateness,
    now: Duration,
    start: Duration,
    period: Duration,
    k: u64,
    n: u64,
    ticks: u64,
) -> Result<()> {
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
    Ok(())
}

/// How long a run of `ticks` ticks may take before it counts as broken: generous, a run is
/// broken only if ticks stop coming altogether.
fn allowance(period: Duration, ticks: u64) -> Duration {
    period * (4 * ticks as u32) + Duration::from_secs(10)
}

/// Starts `t` with its first tick one period after a time just taken, which it returns.
fn start(t: &dyn Ticker, period: Duration, ticks: u64) -> Result<Duration> {
    let start = monotonic_now();
    t.start(start + period, period, ticks)?;
    Ok(start)
}

/// Runs `ticks` ticks of `t` and records each one's lateness in `l`.
fn measure(t: &dyn Ticker, period: Duration, ticks: u64, l: &mut Lateness) -> Result<()> {
    let start = start(t, period, ticks)?;
    let deadline = Instant::now() + allowance(period, ticks);
    let mut k = 0;
    while k < ticks {
        let n = read_ticks(t.fd(), deadline)?;
        let now = monotonic_now();
        record(l, now, start, period, k, n, ticks)?;
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

/// The tickers of `measure_many`, each with its start and its ticks read so far.
struct Many<'a, T> {
    ts: &'a [T],
    starts: Vec<Duration>,
    got: Vec<u64>,
    period: Duration,
    ticks: u64,
}

impl<T: Ticker> Many<'_, T> {
    /// Polls, with one `ppoll` waiting up to `wait`, every started ticker that has ticks still
    /// to come, reads each one found readable and records its ticks in `l`. A poll that finds
    /// some counts as one wake-up; the readable ones are read one after the other, from a
    /// different one each wake-up, each tick timed just after its own read.
    fn poll_read(&mut self, wait: Duration, l: &mut Lateness) -> Result<()> {
        let open: Vec<usize> = (0..self.starts.len())
            .filter(|&i| self.got[i] < self.ticks)
            .collect();
        let mut fds: Vec<PollFd> = open
            .iter()
            .map(|&i| PollFd::new(self.ts[i].fd(), PollFlags::POLLIN))
            .collect();
        match ppoll(&mut fds, Some(TimeSpec::from_duration(wait)), None) {
            Ok(0) | Err(Errno::EINTR) => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(e.into()),
        }
        let first = l.wakeups as usize;
        l.wakeups += 1;
        for j in 0..fds.len() {
            let j = (first + j) % fds.len();
            let ev = fds[j].revents().unwrap_or(PollFlags::empty());
            ensure!(
                !ev.intersects(PollFlags::POLLERR | PollFlags::POLLNVAL),
                "{} {}: poll answered {ev:?}",
                l.source,
                open[j]
            );
            if !ev.contains(PollFlags::POLLIN) {
                continue;
            }
            let i = open[j];
            let Some(n) = try_read_ticks(self.ts[i].fd())? else {
                continue;
            };
            let now = monotonic_now();
            record(
                l,
                now,
                self.starts[i],
                self.period,
                self.got[i],
                n,
                self.ticks,
            )?;
            self.got[i] += n;
        }
        Ok(())
    }
}

/// Runs `ticks` ticks of each of `ts`, all of one `period` and on one grid: every first tick
/// is one period after a time taken before the first start, so that their ticks fall due
/// together, as those of a program's timers of one period started together would (starting
/// 64 takes a few milliseconds, well within the period). Records the lateness of every tick
/// in `l`. They are read together, one `ppoll` on all their descriptors at a time.
fn measure_many<T: Ticker>(ts: &[T], period: Duration, ticks: u64, l: &mut Lateness) -> Result<()> {
    let grid = monotonic_now();
    let mut m = Many {
        ts,
        starts: vec![grid; ts.len()],
        got: vec![0; ts.len()],
        period,
        ticks,
    };
    for t in ts {
        t.start(grid + period, period, ticks)?;
    }
    ensure!(
        monotonic_now() < grid + period,
        "starting {} timers took longer than their period, {period:?}",
        ts.len()
    );
    let deadline = Instant::now() + allowance(period, ticks);
    while m.got.iter().any(|&k| k < ticks) {
        m.poll_read(left(deadline)?, l)?;
    }
    for t in ts {
        t.stop()?;
    }
    for (i, (t, k)) in ts.iter().zip(&m.got).enumerate() {
        ensure!(
            !t.limited() || *k == ticks,
            "{} {i} delivered {k} ticks, {ticks} asked",
            l.source
        );
    }
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

/// Makes the calling thread what a new thread of an ordinary program is: `SCHED_OTHER`,
/// allowed on every CPU (it is already, spawned by a thread that is; this makes sure).
fn plain() -> Result<()> {
    crate::cpu::unpin()?;
    let p = libc::sched_param { sched_priority: 0 };
    // SAFETY: A plain syscall with a valid struct, for the calling thread.
    Errno::result(unsafe { libc::sched_setscheduler(0, libc::SCHED_OTHER, &p) })
        .context("SCHED_OTHER")?;
    Ok(())
}

/// What a row reads: one ticker, or many of one kind read together (`measure_many`): every
/// slot of a channel, or as many timerfds.
enum Tickers<'a> {
    One(&'a (dyn Ticker + Sync)),
    Slots(&'a [Slot<'a>]),
    TimerFds(&'a [TimerFd]),
}

/// One row of the results: a source at a period, read one way.
struct Row<'a> {
    source: &'static str,
    period: (&'static str, Duration),
    reader: Reader,
    /// Ticks in all (per ticker), over the rounds.
    ticks: u64,
    tickers: Tickers<'a>,
}

/// Runs one round of `row` in a new reader thread, recording in `l`; the pinned reader runs on
/// `cpu`.
fn run_round(row: &Row<'_>, cpu: usize, l: &mut Lateness) -> Result<()> {
    let ticks = row.ticks / ROUNDS;
    thread::scope(|s| {
        s.spawn(|| {
            match row.reader {
                Reader::Pinned => realtime(cpu, PRIO)?,
                Reader::Plain => plain()?,
            }
            match row.tickers {
                Tickers::One(t) => measure(t, row.period.1, ticks, l),
                Tickers::Slots(ts) => measure_many(ts, row.period.1, ticks, l),
                Tickers::TimerFds(ts) => measure_many(ts, row.period.1, ticks, l),
            }
        })
        .join()
        .map_err(|_| anyhow!("timer reader panicked"))?
    })
}

/// A new channel with a notifier on each of its first `slots` slots, and its thread started
/// (by a kick on slot 0, read back).
fn channel(slots: u32) -> Result<(Channel, Vec<Notifier>)> {
    let ch = Channel::open()?;
    let ns = (0..slots)
        .map(|slot| {
            let n = Notifier::new()?;
            ch.attach(slot, &n)?;
            Ok(n)
        })
        .collect::<Result<Vec<_>>>()?;
    ch.kick(0, 1)?;
    ensure!(
        ns[0].wait_timeout(Duration::from_secs(10))? == 1,
        "warm-up kick not delivered within 10 s"
    );
    Ok((ch, ns))
}

fn slots(ch: &Channel, ns: Vec<Notifier>) -> Vec<Slot<'_>> {
    (0..)
        .zip(ns)
        .map(|(slot, n)| Slot { ch, slot, n })
        .collect()
}

fn timerfd() -> Result<TimerFd> {
    Ok(TimerFd::new(
        TimerClock::CLOCK_MONOTONIC,
        TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
    )?)
}

/// Every source at every period with each reader, and the 64 slots and the 64 timerfds, in
/// rounds that take turns; each round of each row in a new reader thread. For the pinned
/// reader, the reader, the channels' threads and (since they are armed there) the timerfds'
/// hrtimers all run on `cpu`; the plain reader reads a channel of its own, whose thread is not
/// pinned, and a timerfd of its own.
pub fn lateness(cpu: usize) -> Result<Vec<Lateness>> {
    // The threads start with the warm-up kick: the pinned ones are pinned where the reader
    // runs.
    let (pinned_ch, pinned_n) = channel(1)?;
    pinned_ch.pin_thread(cpu)?;
    let (plain_ch, plain_n) = channel(1)?;
    let (many_ch, many_n) = channel(NR_SLOTS)?;
    many_ch.pin_thread(cpu)?;
    let pinned = slots(&pinned_ch, pinned_n);
    let plain_slot = slots(&plain_ch, plain_n);
    let many = slots(&many_ch, many_n);
    let (pinned_tfd, plain_tfd) = (timerfd()?, timerfd()?);
    let many_tfd = (0..NR_SLOTS)
        .map(|_| timerfd())
        .collect::<Result<Vec<_>>>()?;
    let mut rows = Vec::new();
    for (reader, module, tfd) in [
        (Reader::Pinned, &pinned[0], &pinned_tfd),
        (Reader::Plain, &plain_slot[0], &plain_tfd),
    ] {
        let sources: [(&str, &(dyn Ticker + Sync)); 2] = [("evnotify", module), ("timerfd", tfd)];
        for (source, t) in sources {
            for (period, ticks) in PERIODS.into_iter().zip(TICKS) {
                rows.push(Row {
                    source,
                    period,
                    reader,
                    ticks,
                    tickers: Tickers::One(t),
                });
            }
        }
    }
    for (source, tickers) in [
        (SLOTS_SOURCE, Tickers::Slots(&many)),
        (SLOTS_PEER, Tickers::TimerFds(&many_tfd)),
    ] {
        rows.push(Row {
            source,
            period: SLOTS_PERIOD,
            reader: Reader::Pinned,
            ticks: SLOTS_TICKS,
            tickers,
        });
    }
    let mut all = rows
        .iter()
        .map(|r| Lateness::new(r.source, r.period.0, r.reader))
        .collect::<Result<Vec<_>>>()?;
    for round in 0..ROUNDS as usize {
        for i in crate::measure::turn(rows.len(), round) {
            let what = format!(
                "{} {}, {:?} reader",
                rows[i].source, rows[i].period.0, rows[i].reader
            );
            if round == 0 {
                crate::measure::progress(&format!("first round: {what}"));
            } else {
                crate::watchdog::step(&format!("round {round}: {what}"));
            }
            run_round(&rows[i], cpu, &mut all[i]).with_context(|| what.clone())?;
        }
    }
    Ok(all)
}

#[cfg(test)]
mod tests;
