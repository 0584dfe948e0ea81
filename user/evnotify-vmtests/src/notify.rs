//! Kick → notify: attach, replace, detach, slots and exact count conservation.

use crate::{collect, settle, Test};
use anyhow::{ensure, Result};
use evnotify::{sys, Channel, Notifier};
use std::thread;

pub const TESTS: &[Test] = &[
    ("attach_kick_notify", attach_kick_notify),
    ("attach_replace", attach_replace),
    ("detach_then_kicks_dropped", detach_then_kicks_dropped),
    ("no_eventfd_kicks_dropped", no_eventfd_kicks_dropped),
    ("conservation_single_10000", conservation_single_10000),
    ("conservation_burst_10000", conservation_burst_10000),
    (
        "conservation_concurrent_kickers",
        conservation_concurrent_kickers,
    ),
    ("slots_independent", slots_independent),
    (
        "user_closes_eventfd_while_attached",
        user_closes_eventfd_while_attached,
    ),
];

const TOTAL: u64 = 10_000;

fn attach_kick_notify() -> Result<()> {
    let ch = Channel::open()?;
    let n = Notifier::new()?;
    ch.attach(0, &n)?;
    ch.kick(0, 1)?;
    collect(&n, 1)?;
    let s = settle(&ch, &n)?;
    ensure!(
        s.kicks == 1 && s.notifies == 1 && s.dropped == 0 && s.attached == 1,
        "{s:?}"
    );
    Ok(())
}

fn attach_replace() -> Result<()> {
    let ch = Channel::open()?;
    let (a, b) = (Notifier::new()?, Notifier::new()?);
    ch.attach(0, &a)?;
    ch.kick(0, 3)?;
    collect(&a, 3)?;
    settle(&ch, &a)?;
    ch.attach(0, &b)?;
    ch.kick(0, 4)?;
    collect(&b, 4)?;
    let s = settle(&ch, &b)?;
    ensure!(a.drain()? == 0, "the replaced eventfd was still signalled");
    ensure!(s.notifies == 7 && s.attached == 1, "{s:?}");
    Ok(())
}

fn detach_then_kicks_dropped() -> Result<()> {
    let ch = Channel::open()?;
    let n = Notifier::new()?;
    ch.attach(0, &n)?;
    ch.detach(0)?;
    ch.detach(0)?; // Detaching an empty slot is a no-op.
    ch.kick(0, 5)?;
    let s = settle(&ch, &n)?;
    ensure!(
        s.kicks == 5 && s.dropped == 5 && s.notifies == 0 && s.attached == 0,
        "{s:?}"
    );
    Ok(())
}

fn no_eventfd_kicks_dropped() -> Result<()> {
    let ch = Channel::open()?;
    ch.kick(3, 10)?;
    let s = ch.wait_idle(crate::hang())?;
    ensure!(s.kicks == 10 && s.dropped == 10 && s.notifies == 0, "{s:?}");
    // Dropped kicks are not replayed to an eventfd attached later.
    let n = Notifier::new()?;
    ch.attach(3, &n)?;
    ch.kick(3, 1)?;
    collect(&n, 1)?;
    settle(&ch, &n)?;
    Ok(())
}

/// Kicks `slot` with `counts` from this thread while another thread reads the notifications.
fn kick_and_read(ch: &Channel, n: &Notifier, counts: impl Iterator<Item = u32>) -> Result<()> {
    let total = thread::scope(|s| -> Result<u64> {
        let reader = s.spawn(|| collect(n, TOTAL));
        let mut sent = 0u64;
        for c in counts {
            ch.kick(0, c)?;
            sent += u64::from(c);
        }
        ensure!(sent == TOTAL, "sent {sent}");
        crate::join(reader, "reader")
    })?;
    let s = settle(ch, n)?;
    ensure!(total == TOTAL, "read {total}");
    ensure!(
        s.kicks == TOTAL && s.notifies == TOTAL && s.dropped == 0,
        "{s:?}"
    );
    // None if the thread never slept while the kicks came (its start counts only if its
    // first look finds them: the coverage VM once saw 10,000 kicks so).
    ensure!(s.wakeups <= TOTAL, "{s:?}");
    Ok(())
}

fn conservation_single_10000() -> Result<()> {
    let ch = Channel::open()?;
    let n = Notifier::new()?;
    ch.attach(0, &n)?;
    kick_and_read(&ch, &n, std::iter::repeat_n(1, TOTAL as usize))
}

/// Deterministic burst sizes 1..=97 summing to exactly `TOTAL`.
fn bursts() -> impl Iterator<Item = u32> {
    let mut left = TOTAL as u32;
    let mut x = 12345u32;
    std::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        x = x.wrapping_mul(1103515245).wrapping_add(12345);
        let c = (x >> 16) % 97 + 1;
        let c = c.min(left);
        left -= c;
        Some(c)
    })
}

fn conservation_burst_10000() -> Result<()> {
    let ch = Channel::open()?;
    let n = Notifier::new()?;
    ch.attach(0, &n)?;
    kick_and_read(&ch, &n, bursts())?;
    // One big burst too: handled in bounded batches, still exact.
    ch.kick(0, TOTAL as u32)?;
    collect(&n, TOTAL)?;
    let s = settle(&ch, &n)?;
    ensure!(s.notifies == 2 * TOTAL, "{s:?}");
    Ok(())
}

fn conservation_concurrent_kickers() -> Result<()> {
    const THREADS: u32 = 4;
    let ch = Channel::open()?;
    let ns = (0..THREADS)
        .map(|_| Notifier::new())
        .collect::<std::io::Result<Vec<_>>>()?;
    for (slot, n) in ns.iter().enumerate() {
        ch.attach(slot as u32, n)?;
    }
    let per = TOTAL / u64::from(THREADS);
    thread::scope(|s| -> Result<()> {
        let kickers: Vec<_> = (0..THREADS)
            .map(|t| {
                let ch = &ch;
                // Every thread kicks every slot, so the slots see concurrent kickers.
                s.spawn(move || (0..per).try_for_each(|i| ch.kick((t + i as u32) % THREADS, 1)))
            })
            .collect();
        let readers: Vec<_> = ns
            .iter()
            .map(|n| s.spawn(move || collect(n, per)))
            .collect();
        for k in kickers {
            crate::join(k, "kicker")?;
        }
        for r in readers {
            crate::join(r, "reader")?;
        }
        Ok(())
    })?;
    for n in &ns {
        settle(&ch, n)?;
    }
    let s = ch.stats()?;
    ensure!(s.kicks == TOTAL && s.notifies == TOTAL, "{s:?}");
    Ok(())
}

fn slots_independent() -> Result<()> {
    let ch = Channel::open()?;
    let slots = [0u32, 1, 7, 31, 32, 63];
    let ns = slots
        .iter()
        .map(|_| Notifier::new())
        .collect::<std::io::Result<Vec<_>>>()?;
    for (&slot, n) in slots.iter().zip(&ns) {
        ch.attach(slot, n)?;
    }
    // Interleave kicks so several slots are pending at once.
    for round in 0..10 {
        for (i, &slot) in slots.iter().enumerate() {
            ch.kick(slot, (i as u32 + 1) * (round % 3 + 1))?;
        }
    }
    ch.wait_idle(crate::hang())?;
    for (i, n) in ns.iter().enumerate() {
        let want = (i as u64 + 1) * (0..10).map(|r| r % 3 + 1).sum::<u64>();
        let got = n.drain()?;
        ensure!(got == want, "slot {}: got {got}, want {want}", slots[i]);
    }
    let s = ch.stats()?;
    ensure!(
        s.attached == slots.len() as u32 && s.notifies == s.kicks,
        "{s:?}"
    );
    ensure!(sys::NR_SLOTS >= 64, "too few slots");
    Ok(())
}

fn user_closes_eventfd_while_attached() -> Result<()> {
    let ch = Channel::open()?;
    let n = Notifier::new()?;
    ch.attach(0, &n)?;
    // The kernel holds its own reference: signalling the closed eventfd is harmless.
    drop(n);
    ch.kick(0, 100)?;
    let s = ch.wait_idle(crate::hang())?;
    ensure!(s.notifies == 100, "{s:?}");
    // Close it in the middle of a stream of kicks too.
    let n = Notifier::new()?;
    ch.attach(0, &n)?;
    ch.kick(0, 100_000)?;
    drop(n);
    ch.kick(0, 1000)?;
    ch.wait_idle(crate::hang())?;
    // The channel keeps working with a new eventfd.
    let n = Notifier::new()?;
    ch.attach(0, &n)?;
    ch.kick(0, 2)?;
    collect(&n, 2)?;
    settle(&ch, &n)?;
    Ok(())
}
