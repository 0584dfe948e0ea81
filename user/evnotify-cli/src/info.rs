//! `evnotify info`: the device's version, features, limits and counters; and the text of
//! the counters and the worker that the other commands print too.

use crate::dev::Dev;
use crate::json::Output;
use crate::stat::{self, Worker};
use anyhow::{Context, Result};
use evnotify::{sys, Stats};
use serde_json::json;

fn feature_names(bits: u64) -> Vec<&'static str> {
    [
        (sys::F_NOTIFY, "notify"),
        (sys::F_SLOTS, "slots"),
        (sys::F_KICKFD, "kickfd"),
        (sys::F_FDINFO, "fdinfo"),
        (sys::F_TIMER, "timer"),
        (sys::F_SIGNAL, "signal"),
        (sys::F_BUSYPOLL, "busypoll"),
        (sys::F_WORKERS, "workers"),
        (sys::F_CGROUPS, "cgroups"),
        (sys::F_TIMER_ABSTIME, "timer-abstime"),
    ]
    .into_iter()
    .filter(|(b, _)| bits & b != 0)
    .map(|(_, n)| n)
    .collect()
}

/// Every counter, on two lines.
pub fn counters_text(s: &Stats) -> String {
    format!(
        "stats: kicks={} (by fd {}) timer_ticks={} handled={} notifies={} signals={} dropped={} \
         wakeups={} polled={} pending={} coalesced={} sig_refused={}\n\
         slots: attached={} kickfds={} timers={} signalling={}; thread pid {}, busy-poll limit {} ns",
        s.kicks,
        s.fd_kicks,
        s.timer_ticks,
        s.handled,
        s.notifies,
        s.signals,
        s.dropped,
        s.wakeups,
        s.polled,
        s.pending,
        s.coalesced,
        s.sig_refused,
        s.attached,
        s.kickfds,
        s.timers,
        s.signal_slots,
        s.thread_pid,
        s.busypoll_ns
    )
}

/// The worker line: `None` is a module before API version 3, which has no workers.
pub fn worker_text(w: Option<&Worker>) -> String {
    match w {
        None => "worker: not reported (the module predates API version 3)".to_owned(),
        Some(w) if w.worker_id == 0 => {
            "worker: none yet (it starts with the first kick, kick eventfd or timer)".to_owned()
        }
        Some(w) => format!(
            "worker: {} (thread evnotify/{}, pid {}), serving {} channel(s)",
            w.worker_id, w.worker_id, w.thread_pid, w.channels
        ),
    }
}

pub fn print_stats(dev: &Dev) -> Result<()> {
    println!("{}", counters_text(&dev.stats()?));
    Ok(())
}

pub fn info(dev: &Dev, out: Output) -> Result<()> {
    let v = dev.version()?;
    let stats = dev.stats()?;
    // An older module has no EVNOTIFY_IOC_WORKER (ENOTTY): ask only one that has workers.
    let worker = match v.features & sys::F_WORKERS {
        0 => None,
        _ => Some(dev.worker()?),
    };
    let fdinfo = dev.fdinfo()?;
    if out.json {
        let parsed = stat::parse_fdinfo(&fdinfo)
            .with_context(|| format!("{}: parse its fdinfo", dev.path))?;
        return out.emit(json!({
            "device": dev.path,
            "api_version": v.api_version,
            "cli_api_version": sys::API_VERSION,
            "nr_slots": v.nr_slots,
            "features": v.features,
            "feature_names": feature_names(v.features),
            "limits": {
                "max_kick": sys::MAX_KICK,
                "max_pending": sys::MAX_PENDING,
                "min_period_ns": sys::MIN_PERIOD_NS,
                "max_period_ns": sys::MAX_PERIOD_NS,
                "max_busypoll_ns": sys::MAX_BUSYPOLL_NS,
            },
            "stats": stats,
            "worker": worker,
            "slots": parsed.slots,
        }));
    }
    println!("api_version: {}", v.api_version);
    if v.api_version != sys::API_VERSION {
        println!(
            "  (this program was built for API version {}: rebuild one of them)",
            sys::API_VERSION
        );
    }
    println!("slots:       {}", v.nr_slots);
    println!(
        "features:    {:#x} ({})",
        v.features,
        feature_names(v.features).join(" ")
    );
    println!("max kick:    {}", sys::MAX_KICK);
    println!(
        "timer:       {} ms .. {} s",
        sys::MIN_PERIOD_NS / 1_000_000,
        sys::MAX_PERIOD_NS / 1_000_000_000
    );
    println!("{}", counters_text(&stats));
    println!("{}", worker_text(worker.as_ref()));
    println!("fdinfo:\n{}", fdinfo.trim_end().replace('\n', "\n  "));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_have_names() {
        let all = sys::F_NOTIFY
            | sys::F_SLOTS
            | sys::F_KICKFD
            | sys::F_FDINFO
            | sys::F_TIMER
            | sys::F_SIGNAL
            | sys::F_BUSYPOLL
            | sys::F_WORKERS
            | sys::F_CGROUPS
            | sys::F_TIMER_ABSTIME;
        assert_eq!(feature_names(all).len(), 10);
        assert_eq!(feature_names(sys::F_WORKERS), ["workers"]);
        assert!(feature_names(1 << 63).is_empty());
    }
}
