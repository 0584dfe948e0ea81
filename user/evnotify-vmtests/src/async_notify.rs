//! The `tokio` feature's `AsyncNotifier` against the device: one task awaits many slots, and
//! many tasks, of two runtimes, await one slot.

use crate::{hang, Test};
use anyhow::{anyhow, ensure, Result};
use evnotify::{AsyncNotifier, Channel};
use std::{future::poll_fn, sync::mpsc, sync::Arc, task::Poll, thread, time::Duration};
use tokio::time::timeout;

pub const TESTS: &[Test] = &[
    ("async_notifier_exact_counts", async_notifier_exact_counts),
    (
        "async_notifier_many_waiters_one_kick_each",
        async_notifier_many_waiters,
    ),
];

/// Slots 0..16 are kicked by another thread, slot `i` `ROUNDS * (i + 1)` times in all, while
/// one task awaits all 16 async notifiers: each must receive exactly its kicks, and no more.
fn async_notifier_exact_counts() -> Result<()> {
    const SLOTS: usize = 16;
    const ROUNDS: u64 = 50;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let _guard = rt.enter();
    let ch = Channel::open()?;
    let ns = (0..SLOTS)
        .map(|_| AsyncNotifier::new())
        .collect::<std::io::Result<Vec<_>>>()?;
    for (slot, n) in (0..).zip(&ns) {
        ch.attach(slot, n)?;
    }
    let want: Vec<u64> = (1..=SLOTS as u64).map(|i| i * ROUNDS).collect();
    let got = thread::scope(|sc| -> Result<Vec<u64>> {
        let kicker = sc.spawn(|| -> Result<()> {
            for _ in 0..ROUNDS {
                for slot in 0..SLOTS as u32 {
                    ch.kick(slot, slot + 1)?;
                }
            }
            Ok(())
        });
        let got = rt.block_on(async {
            let mut got = vec![0u64; SLOTS];
            while got != want {
                // Whichever notifier has a count: one task serves them all.
                let next = poll_fn(|cx| {
                    for (slot, n) in ns.iter().enumerate() {
                        if let Poll::Ready(r) = n.poll_wait(cx) {
                            return Poll::Ready((slot, r));
                        }
                    }
                    Poll::Pending
                });
                let (slot, v) = timeout(hang(), next)
                    .await
                    .map_err(|_| anyhow!("hung with {got:?} of {want:?}"))?;
                got[slot] += v?;
                ensure!(got[slot] <= want[slot], "slot {slot}: {got:?} of {want:?}");
            }
            Ok(got)
        });
        crate::join(kicker, "kicker")?;
        got
    })?;
    let s = crate::idle(&ch)?;
    for (slot, n) in ns.iter().enumerate() {
        let extra = n.get_ref().drain()?;
        ensure!(extra == 0, "slot {slot}: {extra} beyond {}", got[slot]);
    }
    let total: u64 = want.iter().sum();
    ensure!(
        s.kicks == total && s.notifies == total && s.dropped == 0,
        "{s:?}"
    );
    // `wait` on its own, after the stream of counts has gone quiet.
    ch.kick(3, 2)?;
    let mut v = 0;
    while v < 2 {
        v += rt
            .block_on(async { timeout(hang(), ns[3].wait()).await })
            .map_err(|_| anyhow!("wait hung with {v} of 2"))??;
    }
    ensure!(v == 2, "slot 3: {v} of 2");
    Ok(())
}

/// One notifier on slot 2, awaited at once by 6 tasks of the multi-thread runtime it is
/// registered with and by 2 tasks of a current-thread runtime in another thread, after a 9th
/// waiter was cancelled. The slot is kicked once at a time, each kick after the last one was
/// taken: every waiter must wake for one, exactly 1 each, and nothing may be left over.
fn async_notifier_many_waiters() -> Result<()> {
    const HOME: usize = 6;
    const AWAY: usize = 2;
    let home = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let ch = Channel::open()?;
    let n = Arc::new(home.block_on(async { AsyncNotifier::new() })?);
    ch.attach(2, &*n)?;
    let (tx, rx) = mpsc::channel::<(String, std::io::Result<u64>)>();
    // Cancelled while it waits: it must neither take a kick nor keep the others from waking.
    let cancelled = home.spawn({
        let n = n.clone();
        async move { n.wait().await }
    });
    for i in 0..HOME {
        let (n, tx) = (n.clone(), tx.clone());
        home.spawn(async move {
            let _ = tx.send((format!("home {i}"), n.wait().await));
        });
    }
    let away = thread::spawn({
        let (n, tx) = (n.clone(), tx.clone());
        move || -> Result<()> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let tasks: Vec<_> = (0..AWAY)
                    .map(|i| {
                        let (n, tx) = (n.clone(), tx.clone());
                        tokio::spawn(async move {
                            let _ = tx.send((format!("away {i}"), n.wait().await));
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await?;
                }
                Ok(())
            })
        }
    });
    drop(tx);
    // Let every waiter reach its wait (a late one would find the count at once: no harm).
    thread::sleep(Duration::from_millis(200));
    cancelled.abort();
    let _ = home.block_on(cancelled);
    let mut woke = Vec::new();
    for kick in 0..HOME + AWAY {
        ch.kick(2, 1)?;
        let (who, v) = rx
            .recv_timeout(hang())
            .map_err(|_| anyhow!("kick {kick}: no waiter woke; these did: {woke:?}"))?;
        ensure!(v? == 1, "{who}: more than one kick");
        woke.push(who);
    }
    away.join()
        .map_err(|_| anyhow!("the current-thread runtime's thread panicked"))??;
    woke.sort();
    woke.dedup();
    ensure!(woke.len() == HOME + AWAY, "a waiter woke twice: {woke:?}");
    let s = crate::idle(&ch)?;
    let extra = n.get_ref().drain()?;
    ensure!(extra == 0, "{extra} left over");
    let want = (HOME + AWAY) as u64;
    ensure!(s.kicks == want && s.notifies == want, "{s:?}");
    Ok(())
}
