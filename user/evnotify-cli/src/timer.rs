//! `evnotify timer`: a slot's periodic timer, each tick as it arrives.

use crate::dev::Dev;
use crate::info::print_stats;
use crate::json::{nanos, ticks_record, Output};
use anyhow::Result;
use serde_json::json;
use std::time::{Duration, Instant};

pub fn timer(dev: &Dev, period: Duration, ticks: u64, slot: u32, out: Output) -> Result<()> {
    let n = dev.notifier(slot, "notify")?;
    dev.attach(slot, &n)?;
    dev.set_timer(slot, period, ticks)?;
    let start = Instant::now();
    let mut total = 0;
    let patience = period * 10 + Duration::from_secs(1);
    while ticks == 0 || total < ticks {
        let v = dev.check(n.wait_timeout(patience), || {
            format!("wait for slot {slot}'s eventfd")
        })?;
        if v == 0 {
            let of = if ticks == 0 {
                String::new()
            } else {
                format!(" of {ticks}")
            };
            return Err(dev.stalled(format!(
                "slot {slot}: the timer (period {period:?}) stopped ticking: {total}{of} \
                 tick(s), then none for {patience:?}"
            )));
        }
        total += v;
        if out.json {
            out.emit(ticks_record(start.elapsed(), slot, v, total))?;
        } else {
            println!(
                "{:>10.3} ms  +{v} tick(s), {total} in all",
                start.elapsed().as_secs_f64() * 1e3
            );
        }
    }
    if out.json {
        return out.emit(json!({
            "type": "end",
            "device": dev.path,
            "slot": slot,
            "period_ns": nanos(period),
            "ticks": total,
            "stats": dev.stats()?,
        }));
    }
    print_stats(dev)
}
