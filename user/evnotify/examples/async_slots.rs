//! Serves every slot of one channel from a single Tokio task.
//!
//! Attaches an `AsyncNotifier` to each of the 64 slots, kicks slot `i` `i + 1` times, then
//! awaits all the notifications in one task with a `StreamMap` and prints a summary. Needs
//! `/dev/evnotify` (try it in the test VM):
//!
//! ```sh
//! cargo run -p evnotify --features tokio --example async_slots
//! ```

use evnotify::{sys::NR_SLOTS, AsyncNotifier, Channel};
use std::time::{Duration, Instant};
use tokio_stream::{StreamExt, StreamMap};

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let ch = Channel::open()?;
    let mut slots = StreamMap::new();
    for slot in 0..NR_SLOTS {
        let n = AsyncNotifier::new()?;
        ch.attach(slot, &n)?;
        slots.insert(slot, n);
    }
    let start = Instant::now();
    for slot in 0..NR_SLOTS {
        ch.kick(slot, slot + 1)?;
    }
    let want: u64 = (1..=u64::from(NR_SLOTS)).sum();
    let mut got = vec![0u64; NR_SLOTS as usize];
    let (mut total, mut wakeups) = (0, 0);
    while total < want {
        // Every wait has a deadline: a lost notification ends the example with an error.
        let next = tokio::time::timeout(Duration::from_secs(30), slots.next()).await;
        let Ok(Some((slot, count))) = next else {
            return Err(std::io::Error::other(format!(
                "timed out with {total} of {want} notifications"
            )));
        };
        let count = count?;
        got[slot as usize] += count;
        total += count;
        wakeups += 1;
    }
    let exact = got.iter().enumerate().all(|(i, &n)| n == i as u64 + 1);
    println!(
        "{NR_SLOTS} slots, one task: {total} notifications in {wakeups} reads, {:.1} ms, {}",
        start.elapsed().as_secs_f64() * 1e3,
        if exact {
            "every slot exact"
        } else {
            "MISMATCH"
        }
    );
    println!("{:?}", ch.wait_idle(Duration::from_secs(30))?);
    if exact {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("per-slot counts {got:?}")))
    }
}
