//! Stress with an exact ledger: many threads kick many channels and slots by ioctl and by kick
//! eventfd, while others attach, replace and detach eventfds, start and stop timers, and open
//! and close channels with work pending. Every kick is accounted for at the end.
//!
//! Stable channels (never detached): every kick sent is read, exactly. Churned channels: every
//! handled kick went to the eventfd attached when the thread took it, or was dropped, so the
//! reads over every eventfd ever attached equal `notifies`, and `notifies + dropped` equals
//! the kicks and ticks handled. `EVNOTIFY_STRESS_SECS` sets the duration (default 2 s).

use crate::Test;
use anyhow::{ensure, Result};
use evnotify::{Channel, Notifier};
use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
        Mutex,
    },
    thread,
    time::{Duration, Instant},
};

pub const TESTS: &[Test] = &[("stress_ledger", stress_ledger)];

const STABLE: usize = 6;
const CHURN: usize = 3;
const SLOTS: u32 = 4;
/// The slot that carries a timer on every channel (its ticks are counted like kicks).
const TIMER_SLOT: u32 = SLOTS;

/// Eventfds each slot rotates through (bounded, so a long run does not run out of files).
const ROTATION: usize = 4;

/// One channel under stress and everything sent to it.
struct Lane {
    ch: Channel,
    /// Notify eventfds per slot; any of them may be attached, or none.
    notify: Vec<Vec<Notifier>>,
    /// Kick eventfds, and which one is attached (the writer writes only to that one).
    kick: Vec<Notifier>,
    kick_cur: Mutex<usize>,
    ioctl_kicks: AtomicU64,
    writes: AtomicU64,
    read: AtomicU64,
}

impl Lane {
    fn new() -> Result<Self> {
        let ch = Channel::open()?;
        let fds = || {
            (0..ROTATION)
                .map(|_| Notifier::new())
                .collect::<std::io::Result<Vec<_>>>()
        };
        let mut notify = vec![];
        for slot in 0..=TIMER_SLOT {
            let ns = fds()?;
            ch.attach(slot, &ns[0])?;
            notify.push(ns);
        }
        let kick = fds()?;
        ch.attach_kickfd(0, &kick[0])?;
        ch.set_timer(TIMER_SLOT, Duration::from_millis(1), 0)?;
        Ok(Self {
            ch,
            notify,
            kick,
            kick_cur: Mutex::new(0),
            ioctl_kicks: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            read: AtomicU64::new(0),
        })
    }

    /// Reads every notify eventfd of every slot, attached or not.
    fn drain_all(&self) -> Result<u64> {
        self.notify.iter().flatten().map(|n| Ok(n.drain()?)).sum()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn stress_ledger() -> Result<()> {
    let secs: f64 = std::env::var("EVNOTIFY_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let lanes = (0..STABLE + CHURN)
        .map(|_| Lane::new())
        .collect::<Result<Vec<_>>>()?;
    let stop = AtomicBool::new(false);
    let closes = AtomicU64::new(0);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    thread::scope(|s| -> Result<()> {
        let mut jobs = vec![];
        // Kickers: ioctl kicks of 1..8 on every slot of every lane.
        for t in 0..3u64 {
            let (lanes, stop) = (&lanes, &stop);
            jobs.push(s.spawn(move || -> Result<()> {
                let mut i = t;
                while !stop.load(Relaxed) {
                    let lane = &lanes[(i as usize) % lanes.len()];
                    let count = (i % 8 + 1) as u32;
                    lane.ch.kick((i % u64::from(SLOTS)) as u32, count)?;
                    lane.ioctl_kicks.fetch_add(count.into(), Relaxed);
                    i = i
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407)
                        >> 1;
                }
                Ok(())
            }));
        }
        // Writers: kick eventfd writes on every lane.
        {
            let (lanes, stop) = (&lanes, &stop);
            jobs.push(s.spawn(move || -> Result<()> {
                let mut i = 0usize;
                while !stop.load(Relaxed) {
                    let lane = &lanes[i % lanes.len()];
                    let n = (i % 5 + 1) as u64;
                    let cur = lock(&lane.kick_cur);
                    lane.kick[*cur].post(n)?;
                    drop(cur);
                    lane.writes.fetch_add(n, Relaxed);
                    i += 1;
                }
                Ok(())
            }));
        }
        // Readers: drain every current notify eventfd.
        {
            let (lanes, stop) = (&lanes, &stop);
            jobs.push(s.spawn(move || -> Result<()> {
                while !stop.load(Relaxed) {
                    for lane in lanes {
                        lane.read.fetch_add(lane.drain_all()?, Relaxed);
                    }
                }
                Ok(())
            }));
        }
        // Churn: replace and detach notify eventfds, replace kick eventfds, restart timers.
        {
            let (lanes, stop) = (&lanes, &stop);
            jobs.push(s.spawn(move || -> Result<()> {
                let mut i = 0u32;
                while !stop.load(Relaxed) {
                    let lane = &lanes[STABLE + (i as usize % CHURN)];
                    let slot = i % SLOTS;
                    let next = (i as usize / 4) % ROTATION;
                    match i % 4 {
                        0 => lane.ch.detach(slot)?,
                        1 | 2 => lane.ch.attach(slot, &lane.notify[slot as usize][next])?,
                        _ => {
                            // Under the writer's lock: writes go only to the attached one;
                            // what reached the replaced one stays in its counter, and is
                            // taken when it is attached again.
                            let mut cur = lock(&lane.kick_cur);
                            lane.ch.attach_kickfd(0, &lane.kick[next])?;
                            *cur = next;
                        }
                    }
                    if i.is_multiple_of(16) {
                        lane.ch.set_timer(
                            TIMER_SLOT,
                            Duration::from_millis(1 + u64::from(i % 3)),
                            0,
                        )?;
                    }
                    i += 1;
                    thread::sleep(Duration::from_micros(200));
                }
                Ok(())
            }));
        }
        // Closer: channels opened, kicked and closed with work pending.
        {
            let (stop, closes) = (&stop, &closes);
            jobs.push(s.spawn(move || -> Result<()> {
                while !stop.load(Relaxed) {
                    let ch = Channel::open()?;
                    let n = Notifier::new()?;
                    ch.attach(0, &n)?;
                    ch.attach_kickfd(1, &n)?;
                    ch.set_timer(2, Duration::from_millis(1), 0)?;
                    ch.kick(0, 1000)?;
                    drop(ch);
                    closes.fetch_add(1, Relaxed);
                }
                Ok(())
            }));
        }
        while Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        stop.store(true, Relaxed);
        for j in jobs {
            crate::join(j, "a stress thread")?;
        }
        Ok(())
    })?;
    // Quiesce: stop the timers, let every thread finish, then settle the ledger.
    let (mut sent, mut received) = (0u64, 0u64);
    for (i, lane) in lanes.iter().enumerate() {
        lane.ch.cancel_timer(TIMER_SLOT)?;
        let st = crate::idle(&lane.ch)?;
        let read = lane.read.load(Relaxed) + lane.drain_all()?;
        let left: u64 = lane
            .kick
            .iter()
            .map(|k| k.drain())
            .sum::<std::io::Result<u64>>()?;
        let kicks = lane.ioctl_kicks.load(Relaxed) + lane.writes.load(Relaxed) - left;
        ensure!(
            st.kicks == kicks,
            "lane {i}: module took {} kicks, ledger says {kicks}",
            st.kicks
        );
        ensure!(st.handled == st.kicks + st.timer_ticks, "lane {i}: {st:?}");
        ensure!(
            read == st.notifies,
            "lane {i}: read {read}, notified {}: {st:?}",
            st.notifies
        );
        ensure!(st.notifies + st.dropped == st.handled, "lane {i}: {st:?}");
        if i < STABLE {
            ensure!(
                st.dropped == 0 && read == kicks + st.timer_ticks,
                "stable lane {i}: read {read}: {st:?}"
            );
        }
        sent += kicks + st.timer_ticks;
        received += read;
    }
    println!(
        "# stress: {secs} s, {} channels, sent {sent} (kicks and ticks), received {received}, dropped {}, {} channels closed busy",
        lanes.len(),
        sent - received,
        closes.load(Relaxed)
    );
    Ok(())
}
