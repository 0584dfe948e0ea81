//! The `tokio` feature's `AsyncNotifier` against the device: one task awaits many slots.

use crate::{hang, Test};
use anyhow::{anyhow, ensure, Result};
use evnotify::{AsyncNotifier, Channel};
use std::{future::poll_fn, task::Poll, thread};
use tokio::time::timeout;

pub const TESTS: &[Test] = &[("async_notifier_exact_counts", async_notifier_exact_counts)];

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
