//! Shared workers under load: conservation while channels of one worker close, and
//! fairness between a flooded and a quiet channel.
//!
//! Every wait has a deadline ([`hang`](crate::hang)); none asserts a speed.

use crate::workers::{pool, worker};
use crate::{collect, hang, idle, settle, Test};
use anyhow::{ensure, Context, Result};
use evnotify::{sys, Channel, Notifier, Stats};
use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
        Mutex,
    },
    time::{Duration, Instant},
};

pub const TESTS: &[Test] = &[
    (
        "workers_conservation_with_closes",
        workers_conservation_with_closes,
    ),
    (
        "workers_fairness_flood_vs_ping",
        workers_fairness_flood_vs_ping,
    ),
];

/// Sums what a closed channel's eventfd received after its close: nothing may arrive.
fn no_late_deliveries(n: &Notifier, i: usize) -> Result<()> {
    std::thread::sleep(Duration::from_millis(50));
    let late = n.drain()?;
    ensure!(
        late == 0,
        "channel {i}: {late} notifications after close returned"
    );
    Ok(())
}

/// Conservation on one worker: several threads kick every channel with exact counts while
/// some channels (the creator among them) close; every surviving channel receives exactly its
/// kicks, the stats identity holds, and a closed channel's eventfd receives nothing once its
/// close has returned.
fn workers_conservation_with_closes() -> Result<()> {
    const N: usize = 16;
    const KICKERS: usize = 4;
    const KICKS_EACH: u64 = 3000;
    const SLOTS: u32 = 4;
    /// The channels closed under load, in this order, one per tenth of the kicks.
    const CLOSED: [usize; 6] = [0, 5, 10, 15, 3, 8];
    let (chans, w) = pool(N)?;
    let notifiers = (0..N)
        .map(|_| Notifier::new())
        .collect::<std::io::Result<Vec<_>>>()?;
    for (ch, n) in chans.iter().zip(&notifiers) {
        for slot in 0..SLOTS {
            ch.attach(slot, n)?;
        }
    }
    // A's start kick (slot 63, no target) was channel 0's only one before the test.
    let base: Vec<Stats> = chans
        .iter()
        .map(Channel::stats)
        .collect::<std::io::Result<_>>()?;
    let lanes: Vec<Mutex<Option<Channel>>> =
        chans.into_iter().map(|c| Mutex::new(Some(c))).collect();
    let sent: Vec<AtomicU64> = (0..N).map(|_| AtomicU64::new(0)).collect();
    let done = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    // Per closed channel: what its eventfd had at close.
    let closed_at = std::thread::scope(|sc| -> Result<Vec<(usize, u64)>> {
        let kickers: Vec<_> = (0..KICKERS)
            .map(|t| {
                let (lanes, sent, done, stop) = (&lanes, &sent, &done, &stop);
                sc.spawn(move || -> Result<()> {
                    for j in 0..KICKS_EACH {
                        if stop.load(Relaxed) {
                            break;
                        }
                        let i = (t * 7 + j as usize) % N;
                        let count = 1 + ((j as u32 * 13 + t as u32) % 64);
                        let slot = (j as u32 + t as u32) % SLOTS;
                        let lane = lanes[i].lock().unwrap_or_else(|e| e.into_inner());
                        if let Some(ch) = lane.as_ref() {
                            ch.kick(slot, count)
                                .with_context(|| format!("kick channel {i}"))?;
                            sent[i].fetch_add(count.into(), Relaxed);
                        }
                        drop(lane);
                        done.fetch_add(1, Relaxed);
                    }
                    Ok(())
                })
            })
            .collect();
        let closer = (|| -> Result<Vec<(usize, u64)>> {
            let total = KICKERS as u64 * KICKS_EACH;
            let mut closed = vec![];
            for (k, &i) in CLOSED.iter().enumerate() {
                let at = total * (k as u64 + 1) / 10;
                let t = Instant::now();
                while done.load(Relaxed) < at {
                    ensure!(
                        t.elapsed() < hang(),
                        "kickers stalled at {done:?} of {total}"
                    );
                    std::thread::sleep(Duration::from_millis(1));
                }
                let ch = lanes[i].lock().unwrap_or_else(|e| e.into_inner()).take();
                let ch = ch.context("closed twice")?;
                // Give it the worker's longest batches (the kickers' leave short ones), and
                // close it as soon as a notification shows the worker delivering one of
                // its batches: most likely in the middle of it.
                let mut got = notifiers[i].drain()?;
                ch.kick(0, sys::MAX_KICK)?;
                sent[i].fetch_add(sys::MAX_KICK.into(), Relaxed);
                let first = notifiers[i].wait_timeout(hang())?;
                ensure!(first > 0, "channel {i} never served: {:?}", ch.stats()?);
                got += first;
                let pending = ch.stats()?.pending;
                drop(ch);
                // Close has returned: whatever is in the eventfd now is all it gets.
                closed.push((i, got + notifiers[i].drain()?));
                eprintln!("# channel {i} closed with {pending} kicks pending");
            }
            Ok(closed)
        })();
        if closer.is_err() {
            stop.store(true, Relaxed);
        }
        for h in kickers {
            crate::join(h, "kicker")?;
        }
        closer
    })?;
    for &(i, got) in &closed_at {
        let sent = sent[i].load(Relaxed);
        ensure!(got <= sent, "channel {i}: received {got} of {sent} kicks");
        no_late_deliveries(&notifiers[i], i)?;
    }
    let survivors: Vec<usize> = (0..N).filter(|i| !CLOSED.contains(i)).collect();
    for &i in &survivors {
        let lane = lanes[i].lock().unwrap_or_else(|e| e.into_inner());
        let ch = lane.as_ref().context("a survivor closed")?;
        let want = sent[i].load(Relaxed);
        collect(&notifiers[i], want).with_context(|| format!("channel {i}"))?;
        let s = settle(ch, &notifiers[i]).with_context(|| format!("channel {i}"))?;
        let b = &base[i];
        ensure!(
            s.kicks - b.kicks == want
                && s.notifies - b.notifies == want
                && s.coalesced == 0
                && s.pending == 0
                && s.kicks + s.timer_ticks == s.handled + s.pending + s.coalesced,
            "channel {i}: sent {want}, {s:?}"
        );
        let now = worker(ch)?;
        ensure!(
            now.id == w.id && now.channels == survivors.len() as u32,
            "channel {i}: {w:?} -> {now:?}"
        );
    }
    // A while later, still nothing for the closed ones.
    for &(i, _) in &closed_at {
        ensure!(
            notifiers[i].drain()? == 0,
            "channel {i}: late notifications"
        );
    }
    Ok(())
}

/// Fairness on one worker: channel F flooded (the largest kicks, back to back, and a kick
/// eventfd written as fast as it takes them), channel Q in a ping-pong of single kicks: all
/// of Q's rounds are answered within one deadline. No speed is asserted, but a worker that
/// let F's whole backlog go first (a million kicks a batch, seconds each under emulation)
/// cannot answer 50 rounds within it.
fn workers_fairness_flood_vs_ping() -> Result<()> {
    const ROUNDS: u32 = 50;
    let (chans, _) = pool(3)?;
    let (f1, f2, q) = (&chans[0], &chans[1], &chans[2]);
    let (nf1, nf2, nq) = (Notifier::new()?, Notifier::new()?, Notifier::new()?);
    let k = Notifier::new()?;
    f1.attach(0, &nf1)?;
    f2.attach(0, &nf2)?;
    f2.attach_kickfd(0, &k)?;
    q.attach(0, &nq)?;
    let stop = AtomicBool::new(false);
    let busy_rounds = std::thread::scope(|sc| -> Result<u32> {
        let flood = sc.spawn(|| -> Result<u64> {
            let mut n = 0;
            while !stop.load(Relaxed) {
                f1.kick(0, sys::MAX_KICK)?;
                n += 1;
            }
            Ok(n)
        });
        let writer = sc.spawn(|| -> Result<()> {
            while !stop.load(Relaxed) {
                match k.post(sys::MAX_KICK.into()) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => std::thread::yield_now(),
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(())
        });
        let res = (|| -> Result<u32> {
            // The flood has begun before the first round.
            let t = Instant::now();
            while f1.stats()?.pending == 0 || f2.stats()?.pending == 0 {
                ensure!(t.elapsed() < hang(), "the flood never began");
                std::thread::yield_now();
            }
            let mut busy = 0;
            let deadline = Instant::now() + hang();
            for round in 1..=ROUNDS {
                q.kick(0, 1)?;
                let got = nq.wait_timeout(deadline.saturating_duration_since(Instant::now()))?;
                ensure!(
                    got == 1,
                    "round {round}: Q received {got}, with {ROUNDS} rounds due within {:?} while F \
                     is flooded: Q {:?}, F {:?}",
                    hang(),
                    q.stats()?,
                    f1.stats()?
                );
                busy += u32::from(f1.stats()?.pending > 0 && f2.stats()?.pending > 0);
            }
            Ok(busy)
        })();
        stop.store(true, Relaxed);
        let floods = crate::join(flood, "flooder")?;
        crate::join(writer, "kick eventfd writer")?;
        eprintln!("# {floods} flood kicks of {}", sys::MAX_KICK);
        res
    })?;
    // The rounds ran while the flood was on, not after it.
    ensure!(
        busy_rounds > 0,
        "F was never busy after a round: the test did not test fairness"
    );
    eprintln!("# F busy after {busy_rounds} of {ROUNDS} rounds");
    let s = settle(q, &nq)?;
    ensure!(
        s.kicks == u64::from(ROUNDS) && s.notifies == u64::from(ROUNDS),
        "{s:?}"
    );
    // The flooded channels drain, and nothing is lost: delivered, dropped or coalesced. (Their
    // eventfds are detached first, so that what is left is dropped at once, not signalled
    // a million times under emulation; a batch already taken still goes to them.)
    f1.detach(0)?;
    f2.detach(0)?;
    for (f, n) in [(f1, &nf1), (f2, &nf2)] {
        let s = idle(f)?;
        let got = n.drain()?;
        ensure!(
            s.kicks + s.timer_ticks == s.handled + s.coalesced
                && s.notifies + s.dropped == s.handled
                && got == s.notifies,
            "read {got}: {s:?}"
        );
    }
    Ok(())
}
