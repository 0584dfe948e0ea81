//! Host tests of the timer lateness measure, with fake tickers and real timerfds.
use super::*;

fn lateness(source: &'static str) -> Lateness {
    Lateness::new(source, "1ms", Reader::Pinned).unwrap()
}

#[test]
fn timerfd_ticks_are_each_counted_and_none_early() {
    let tfd = timerfd().unwrap();
    let mut l = lateness("timerfd");
    measure(&tfd, Duration::from_millis(1), 30, &mut l).unwrap();
    // Counted again from a new start, with nothing left over from the first run.
    measure(&tfd, Duration::from_millis(1), 30, &mut l).unwrap();
    assert_eq!(l.hist.len(), 60);
    assert_eq!(l.early, 0);
    // Read one at a time: no wake-ups counted.
    assert_eq!(l.wakeups, 0);
}

#[test]
fn a_plain_reader_round_runs_in_a_thread_of_its_own() {
    let tfd = timerfd().unwrap();
    let row = Row {
        source: "timerfd",
        period: PERIODS[0],
        reader: Reader::Plain,
        ticks: 20 * ROUNDS,
        tickers: Tickers::One(&tfd),
    };
    let mut l = Lateness::new("timerfd", "1ms", Reader::Plain).unwrap();
    run_round(&row, 0, &mut l).unwrap();
    assert_eq!((l.hist.len(), l.early), (20, 0));
}

/// Delivers all its ticks, and `extra` more, at once when started, and keeps the first
/// tick's time it was given.
struct Burst(Notifier, u64, std::sync::Mutex<Option<Duration>>);

impl Ticker for Burst {
    fn start(&self, first: Duration, _period: Duration, ticks: u64) -> Result<()> {
        *self.2.lock().unwrap() = Some(first);
        self.0.post(ticks + self.1)?;
        Ok(())
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

fn bursts(n: usize, extra: u64) -> Vec<Burst> {
    (0..n)
        .map(|_| Burst(Notifier::new().unwrap(), extra, Default::default()))
        .collect()
}

#[test]
fn every_tick_of_one_read_is_counted_against_its_own_ideal_time() {
    // Ten ticks read at once, right after the start: each one before its ideal time.
    let mut l = lateness("burst");
    measure(&bursts(1, 0)[0], Duration::from_secs(1), 10, &mut l).unwrap();
    assert_eq!((l.hist.len(), l.early), (10, 10));
}

#[test]
fn a_limited_ticker_that_delivers_more_fails_the_run() {
    let mut l = lateness("burst");
    let err = measure(&bursts(1, 1)[0], Duration::from_secs(1), 10, &mut l).unwrap_err();
    assert!(err.to_string().contains("11 ticks, 10 asked"), "{err}");
}

#[test]
fn no_tick_by_the_deadline_fails() {
    let n = Notifier::new().unwrap();
    let err = read_ticks(n.as_fd(), Instant::now() + Duration::from_millis(5)).unwrap_err();
    assert!(err.to_string().contains("deadline"), "{err}");
}

#[test]
fn tickers_started_on_one_grid_are_read_together() {
    // Every burst is delivered when its ticker starts, and read once all have started: one
    // wake-up, every tick counted once.
    let mut l = lateness("bursts");
    let ts = bursts(5, 0);
    measure_many(&ts, Duration::from_secs(1), 7, &mut l).unwrap();
    assert_eq!((l.hist.len(), l.early, l.wakeups), (35, 35, 1));
    // Nothing left unread.
    assert!(ts.iter().all(|t| t.0.try_read().unwrap().is_none()));
}

#[test]
fn every_ticker_starts_on_the_same_grid() {
    let ts = bursts(8, 0);
    let before = monotonic_now();
    measure_many(&ts, Duration::from_secs(1), 2, &mut lateness("bursts")).unwrap();
    let firsts: Vec<Duration> = ts.iter().map(|t| t.2.lock().unwrap().unwrap()).collect();
    assert!(firsts.iter().all(|&f| f == firsts[0]), "{firsts:?}");
    // One period after a time taken before the first start.
    assert!(firsts[0] >= before + Duration::from_secs(1), "{firsts:?}");
    assert!(
        firsts[0] <= monotonic_now() + Duration::from_secs(1),
        "{firsts:?}"
    );
}

#[test]
fn a_limited_ticker_among_many_that_delivers_more_fails_the_run() {
    let mut l = lateness("bursts");
    let err = measure_many(&bursts(3, 1), Duration::from_secs(1), 4, &mut l).unwrap_err();
    assert!(
        err.to_string()
            .contains("bursts 0 delivered 5 ticks, 4 asked"),
        "{err}"
    );
}

/// Delivers `ticks` ticks on each of `on_start` when started, none on its own.
struct Posts<'a> {
    n: &'a Notifier,
    on_start: &'a [Notifier],
}

impl Ticker for Posts<'_> {
    fn start(&self, _first: Duration, _period: Duration, ticks: u64) -> Result<()> {
        for n in self.on_start {
            n.post(ticks)?;
        }
        Ok(())
    }
    fn stop(&self) -> Result<()> {
        Ok(())
    }
    fn limited(&self) -> bool {
        true
    }
    fn fd(&self) -> BorrowedFd<'_> {
        self.n.as_fd()
    }
}

#[test]
fn ticks_of_many_ready_at_once_are_all_read_in_one_wakeup() {
    // The last one to start delivers everyone's ticks: one poll finds all 64 readable.
    let ns: Vec<Notifier> = (0..64).map(|_| Notifier::new().unwrap()).collect();
    let ts: Vec<Posts> = (0..ns.len())
        .map(|i| Posts {
            n: &ns[i],
            on_start: if i == ns.len() - 1 { &ns } else { &[] },
        })
        .collect();
    let mut l = lateness("posts");
    measure_many(&ts, Duration::from_secs(1), 3, &mut l).unwrap();
    assert_eq!((l.hist.len(), l.early, l.wakeups), (192, 192, 1));
}

/// Delivers its one tick when started, then takes `STAGGER` before it returns: the next
/// ticker starts that much later.
struct Staggered(Notifier);

const STAGGER: Duration = Duration::from_millis(60);

impl Ticker for Staggered {
    fn start(&self, _first: Duration, _period: Duration, ticks: u64) -> Result<()> {
        self.0.post(ticks)?;
        thread::sleep(STAGGER);
        Ok(())
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
fn starting_for_longer_than_the_period_fails_the_run() {
    // Four starts of 60 ms each against a period of 40 ms: the first ticks would be late
    // before the last timer started.
    let ts: Vec<Staggered> = (0..4)
        .map(|_| Staggered(Notifier::new().unwrap()))
        .collect();
    let mut l = lateness("staggered");
    let err = measure_many(&ts, Duration::from_millis(40), 1, &mut l).unwrap_err();
    assert!(
        err.to_string().contains("took longer than their period"),
        "{err}"
    );
}

#[test]
fn a_round_of_the_64_timerfds_row_reads_them_all_together() {
    // The row as the bench has it, but for the reader (`SCHED_FIFO` needs privileges):
    // every timerfd's ticks counted, none early, each started at an exact time.
    let ts: Vec<TimerFd> = (0..NR_SLOTS).map(|_| timerfd().unwrap()).collect();
    let row = Row {
        source: SLOTS_PEER,
        period: SLOTS_PERIOD,
        reader: Reader::Plain,
        ticks: 3 * ROUNDS,
        tickers: Tickers::TimerFds(&ts),
    };
    let mut l = Lateness::new(SLOTS_PEER, SLOTS_PERIOD.0, Reader::Plain).unwrap();
    run_round(&row, 0, &mut l).unwrap();
    assert_eq!((l.hist.len(), l.early), (3 * 64, 0));
    assert!((1..=3 * 64).contains(&l.wakeups), "{} wake-ups", l.wakeups);
}

#[test]
fn timerfds_read_together_tick_on_time() {
    // Real tickers: every tick counted, none before its own ideal time.
    let ts: Vec<TimerFd> = (0..8).map(|_| timerfd().unwrap()).collect();
    let mut l = lateness("timerfds");
    measure_many(&ts, Duration::from_millis(1), 20, &mut l).unwrap();
    assert_eq!(l.hist.len(), 160);
    assert_eq!(l.early, 0);
    assert!(l.wakeups > 0);
}
