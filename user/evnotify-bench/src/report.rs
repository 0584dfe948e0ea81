//! The report: everything a run measured as the JSON of `bench/results.json`, the keys it must
//! have, and its printing between the marker lines.

use crate::{
    peers,
    rtt::{Row, PATHS, PINNINGS},
    scaling::ScaleRow,
    shared, start,
    sweep::{SweepRow, SWEEP_NS},
    throughput::Throughput,
    timers,
};
use anyhow::{ensure, Context, Result};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::time::Duration;

fn summary(h: &Histogram<u64>) -> Value {
    json!({
        "p50": h.value_at_quantile(0.5),
        "p90": h.value_at_quantile(0.9),
        "p99": h.value_at_quantile(0.99),
        "p999": h.value_at_quantile(0.999),
        "max": h.max(),
        "mean": h.mean().round() as u64,
        "samples": h.len(),
        // The distribution itself, for the chart: value at each percentile 0..=100.
        "percentiles": (0..=100).map(|p| h.value_at_percentile(p as f64)).collect::<Vec<_>>(),
    })
}

/// One timer row: the lateness per tick, and for the rows read from many descriptors at once,
/// the ticks read per wake-up of the reader.
fn lateness(l: &timers::Lateness) -> Value {
    let h = &l.hist;
    let mut v = json!({
        "p50": h.value_at_quantile(0.5),
        "p90": h.value_at_quantile(0.9),
        "p99": h.value_at_quantile(0.99),
        "p999": h.value_at_quantile(0.999),
        "max": h.max(),
        "mean": h.mean().round() as u64,
        "ticks": h.len(),
        "early": l.early,
    });
    if l.wakeups > 0 {
        v["wakeups"] = json!(l.wakeups);
        v["ticks_per_wakeup"] = json!(h.len() as f64 / l.wakeups as f64);
    }
    v
}

/// The quantiles of the timer ratios.
const TIMER_RATIOS: [&str; 2] = ["p50", "p99"];

/// `a`'s figure `q` at `period` over `b`'s, in `table` (by source and period): null where
/// `b`'s is 0 or either is missing.
fn timer_ratio(table: &Value, a: &str, b: &str, period: &str, q: &str) -> Value {
    match (table[a][period][q].as_f64(), table[b][period][q].as_f64()) {
        (Some(a), Some(b)) if b > 0.0 => json!(a / b),
        _ => Value::Null,
    }
}

/// The module's lateness over timerfd's, read the same way (`table`, by source and period):
/// `<quantile>_<period>`; and with `many` (the pinned reader's table, which has them), the 64
/// slots' over the 64 timerfds': `<quantile>_64slots_<period>`.
fn timer_ratios(table: &Value, many: bool) -> Value {
    let mut out = json!({});
    for (period, _) in timers::PERIODS {
        for q in TIMER_RATIOS {
            out[format!("{q}_{period}")] = timer_ratio(table, "evnotify", "timerfd", period, q);
        }
    }
    if many {
        let period = timers::SLOTS_PERIOD.0;
        for q in TIMER_RATIOS {
            out[format!("{q}_64slots_{period}")] =
                timer_ratio(table, timers::SLOTS_SOURCE, timers::SLOTS_PEER, period, q);
        }
    }
    out
}

/// The p50 ratios reported per pinning: (name, numerator path, denominator path).
const RATIOS: [(&str, &str, &str); 15] = [
    ("ioctl_vs_eventfd", "evnotify_ioctl", "eventfd_threads"),
    ("kickfd_vs_eventfd", "evnotify_kickfd", "eventfd_threads"),
    (
        "ioctl_nopoll_vs_eventfd",
        "evnotify_ioctl_nopoll",
        "eventfd_threads",
    ),
    (
        "kickfd_nopoll_vs_eventfd",
        "evnotify_kickfd_nopoll",
        "eventfd_threads",
    ),
    (
        "ioctl_vs_spin_responder",
        "evnotify_ioctl",
        "spin_responder",
    ),
    (
        "kickfd_vs_spin_responder",
        "evnotify_kickfd",
        "spin_responder",
    ),
    (
        "ioctl_vs_io_uring_sqpoll",
        "evnotify_ioctl",
        "io_uring_sqpoll",
    ),
    (
        "kickfd_vs_io_uring_sqpoll",
        "evnotify_kickfd",
        "io_uring_sqpoll",
    ),
    (
        "ioctl_nopoll_vs_io_uring",
        "evnotify_ioctl_nopoll",
        "io_uring",
    ),
    (
        "kickfd_nopoll_vs_io_uring",
        "evnotify_kickfd_nopoll",
        "io_uring",
    ),
    (
        "ioctl_nopoll_vs_io_uring_iowq",
        "evnotify_ioctl_nopoll",
        "io_uring_iowq",
    ),
    (
        "kickfd_nopoll_vs_io_uring_iowq",
        "evnotify_kickfd_nopoll",
        "io_uring_iowq",
    ),
    // Both callers spin on a completion queue, with no syscall while the thread polls.
    (
        "ring_vs_io_uring_sqpoll_cq",
        "evnotify_ring_spin",
        "io_uring_sqpoll_spin",
    ),
    (
        "ring_vs_spin_responder",
        "evnotify_ring_spin",
        "spin_responder",
    ),
    // Both callers sleep on an eventfd for the completion.
    (
        "ring_eventfd_vs_io_uring_sqpoll",
        "evnotify_ring_eventfd",
        "io_uring_sqpoll",
    ),
];

/// Everything one run measured.
pub(crate) struct Results {
    pub(crate) vm: Value,
    /// The module's default busy-poll limit, which the spin responder and the SQ thread get.
    pub(crate) busypoll_ns: u32,
    /// Per pinning (`PINNINGS`), a row per path of `PATHS`.
    pub(crate) rtt: Vec<(&'static str, Vec<Row>)>,
    pub(crate) throughput: Throughput,
    pub(crate) scaling: Vec<ScaleRow>,
    pub(crate) bytes_per_channel: i64,
    /// `start::thread_start`'s rows.
    pub(crate) thread_start: Vec<(&'static str, Histogram<u64>)>,
    pub(crate) shared: shared::Results,
    pub(crate) sweep: Vec<SweepRow>,
    pub(crate) timers: Vec<timers::Lateness>,
}

/// The results as JSON (`bench/results.json`).
pub(crate) fn report(r: &Results) -> Result<Value> {
    let (mut by_pin, mut ratio) = (Value::Null, Value::Null);
    for (pin, rows) in &r.rtt {
        let p50 = |name: &str| -> Result<f64> {
            let row = rows.iter().find(|r| r.name == name);
            Ok(row.context("path missing")?.hist.value_at_quantile(0.5) as f64)
        };
        for (k, a, b) in RATIOS {
            ratio[pin][k] = json!(p50(a)? / p50(b)?);
        }
        for row in rows {
            let mut s = summary(&row.hist);
            if let Some(share) = row.cpu_share {
                s["thread_cpu_share"] = json!(share);
            }
            by_pin[pin][row.name] = s;
        }
    }
    let (mut pinned, mut plain) = (Value::Null, Value::Null);
    for l in &r.timers {
        let table = match l.reader {
            timers::Reader::Pinned => &mut pinned,
            timers::Reader::Plain => &mut plain,
        };
        table[l.source][l.period] = lateness(l);
    }
    let mut out = json!({
        "vm": r.vm,
        "limits": {
            "busypoll_ns": r.busypoll_ns,
            "spin_responder_ns": r.busypoll_ns,
            "sq_thread_idle_ms": peers::sq_idle_ms(Duration::from_nanos(r.busypoll_ns.into())),
        },
        "rtt_ns": by_pin["cross_cpu"],
        "ratio": {
            "ioctl_vs_eventfd": ratio["cross_cpu"]["ioctl_vs_eventfd"],
            "kickfd_vs_eventfd": ratio["cross_cpu"]["kickfd_vs_eventfd"],
            "same_cpu": ratio["same_cpu"],
            "cross_cpu": ratio["cross_cpu"],
            "timer": timer_ratios(&pinned, true),
            "timer_plain": timer_ratios(&plain, false),
        },
        "rtt_ns_by_pinning": by_pin,
        "throughput": r.throughput,
        "scaling": r.scaling,
        "bytes_per_channel": r.bytes_per_channel,
        "thread_start_ns": r
            .thread_start
            .iter()
            .map(|(name, h)| (name.to_string(), summary(h)))
            .collect::<serde_json::Map<_, _>>(),
        "busypoll_sweep": r.sweep,
        "timer_lateness_ns": pinned,
        "timer_lateness_plain_ns": plain,
    });
    if let (Value::Object(out), Value::Object(more)) = (&mut out, shared_report(&r.shared)) {
        out.extend(more);
    }
    Ok(out)
}

/// The top-level keys of the shared-workers measurement (`required` lists their contents).
pub(crate) const SHARED_KEYS: [&str; 4] = [
    "/scaling_shared",
    "/bytes_per_channel_shared",
    "/bytes_per_channel_dedicated",
    "/shared_workers",
];

/// The shared-workers measurement's part of the results.
pub(crate) fn shared_report(r: &shared::Results) -> Value {
    json!({
        "scaling_shared": r.scaling,
        "bytes_per_channel_shared": r.memory.shared.bytes_per_channel,
        "bytes_per_channel_dedicated": r.memory.dedicated.bytes_per_channel,
        "shared_workers": r,
    })
}

/// The path that has no responder besides the caller (so no CPU share).
const CALLER_ONLY: &str = "io_uring";

/// Every key the results must have, as JSON pointers: what `bench.sh`, the chart and the
/// README read. Written out here, apart from `report`, so that a key `report` drops is caught.
fn required() -> Vec<String> {
    let mut keys: Vec<String> = [
        "accel",
        "cpus",
        "kernel",
        "lockdep",
        "iters",
        "clocksource",
        "compiler",
        "rust_inline_helpers",
    ]
    .iter()
    .map(|k| format!("/vm/{k}"))
    .collect();
    keys.extend(["/limits/busypoll_ns", "/limits/sq_thread_idle_ms"].map(String::from));
    let stats = ["p50", "p90", "p99", "p999", "max", "percentiles"];
    for (pin, _) in PINNINGS {
        for path in PATHS {
            for k in stats {
                keys.push(format!("/rtt_ns_by_pinning/{pin}/{path}/{k}"));
            }
            if path != CALLER_ONLY {
                keys.push(format!("/rtt_ns_by_pinning/{pin}/{path}/thread_cpu_share"));
            }
        }
        for (k, _, _) in RATIOS {
            keys.push(format!("/ratio/{pin}/{k}"));
        }
    }
    for path in PATHS {
        for k in stats {
            keys.push(format!("/rtt_ns/{path}/{k}"));
        }
    }
    keys.extend(["/ratio/ioctl_vs_eventfd", "/ratio/kickfd_vs_eventfd"].map(String::from));
    for k in [
        "kicks_per_s",
        "kicks_per_wakeup",
        "notifications_read_per_s",
        "notifications_per_read",
        "timer_ticks_per_s",
        "io_uring_nops_per_s",
        "io_uring_sqpoll_nops_per_s",
    ] {
        keys.push(format!("/throughput/{k}"));
    }
    for i in 0..4 {
        for k in ["channels", "rtt_p50_ns", "rtt_p99_ns"] {
            keys.push(format!("/scaling/{i}/{k}"));
        }
    }
    keys.push("/bytes_per_channel".into());
    // The cgroup rows need cgroup v2, which a kernel may lack.
    for (name, in_child, _) in start::ROWS {
        if !in_child {
            keys.extend(["p50", "p99"].map(|k| format!("/thread_start_ns/{name}/{k}")));
        }
    }
    for i in 0..shared::ROWS {
        for k in ["channels", "rtt_p50_ns", "rtt_p99_ns"] {
            keys.push(format!("/scaling_shared/{i}/{k}"));
        }
    }
    keys.extend(["/bytes_per_channel_shared", "/bytes_per_channel_dedicated"].map(String::from));
    for k in [
        "workers",
        "channels",
        "open_all_ns",
        "kick_all_ns",
        "close_all_ns",
        "rtt_p50_ratio",
        "rtt_p99_ratio",
    ] {
        keys.push(format!("/shared_workers/{k}"));
    }
    for m in ["shared", "dedicated", "eventfd"] {
        for k in ["channels", "bytes_per_channel", "memfree_bytes_per_channel"] {
            keys.push(format!("/shared_workers/memory/{m}/{k}"));
        }
    }
    for i in 0..SWEEP_NS.len() {
        for k in [
            "limit_ns",
            "p50_ns",
            "p99_ns",
            "thread_cpu_share",
            "polled_share",
        ] {
            keys.push(format!("/busypoll_sweep/{i}/{k}"));
        }
    }
    let lateness = ["p50", "p90", "p99", "p999", "max", "mean", "ticks", "early"];
    for table in ["timer_lateness_ns", "timer_lateness_plain_ns"] {
        for src in ["evnotify", "timerfd"] {
            for (period, _) in timers::PERIODS {
                for k in lateness {
                    keys.push(format!("/{table}/{src}/{period}/{k}"));
                }
            }
        }
    }
    let period = timers::SLOTS_PERIOD.0;
    for src in [timers::SLOTS_SOURCE, timers::SLOTS_PEER] {
        for k in lateness.iter().chain(&["wakeups", "ticks_per_wakeup"]) {
            keys.push(format!("/timer_lateness_ns/{src}/{period}/{k}"));
        }
    }
    for ratio in ["timer", "timer_plain"] {
        for (period, _) in timers::PERIODS {
            for q in TIMER_RATIOS {
                keys.push(format!("/ratio/{ratio}/{q}_{period}"));
            }
        }
    }
    for q in TIMER_RATIOS {
        keys.push(format!("/ratio/timer/{q}_64slots_{period}"));
    }
    keys
}

/// The required keys `v` lacks.
fn missing(v: &Value) -> Vec<String> {
    required()
        .into_iter()
        .filter(|k| v.pointer(k).is_none())
        .collect()
}

/// Prints `out` between the marker lines that `bench.sh` looks for, once it has every key of
/// `required` that starts with one of `only` (all of them if `only` is empty).
pub(crate) fn print_results(out: &Value, only: &[&str]) -> Result<()> {
    let lacks: Vec<_> = missing(out)
        .into_iter()
        .filter(|k| only.is_empty() || only.iter().any(|p| k.starts_with(p)))
        .collect();
    ensure!(lacks.is_empty(), "results lack {lacks:?}");
    println!("--- evnotify-bench results ---");
    println!("{}", serde_json::to_string_pretty(out)?);
    println!("--- end ---");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Results as a run would give them, with made-up figures.
    fn results() -> Results {
        let hist = || {
            let mut h = Histogram::new(3).unwrap();
            for v in 1..=100 {
                h.record(v * 1000).unwrap();
            }
            h
        };
        let rows = || {
            PATHS
                .iter()
                .map(|&name| Row {
                    name,
                    hist: hist(),
                    cpu_share: (name != CALLER_ONLY).then_some(0.5),
                })
                .collect()
        };
        Results {
            vm: json!({"accel": "tcg", "cpus": 2, "kernel": "7.3", "lockdep": false, "iters": 100,
                "clocksource": "tsc", "compiler": "clang version 22.1.8",
                "rust_inline_helpers": true}),
            busypoll_ns: 200_000,
            rtt: PINNINGS.iter().map(|&(name, _)| (name, rows())).collect(),
            throughput: Throughput::default(),
            scaling: (0..4).map(|_| ScaleRow::default()).collect(),
            bytes_per_channel: 1,
            thread_start: start::ROWS
                .iter()
                .map(|(name, ..)| (*name, hist()))
                .collect(),
            shared: shared::Results {
                scaling: (0..shared::ROWS).map(|_| ScaleRow::default()).collect(),
                ..Default::default()
            },
            sweep: SWEEP_NS.iter().map(|_| SweepRow::default()).collect(),
            timers: [timers::Reader::Pinned, timers::Reader::Plain]
                .into_iter()
                .flat_map(|reader| {
                    ["evnotify", "timerfd"].into_iter().flat_map(move |source| {
                        timers::PERIODS.map(|(period, _)| (source, period, reader))
                    })
                })
                .chain(
                    [timers::SLOTS_SOURCE, timers::SLOTS_PEER]
                        .map(|source| (source, timers::SLOTS_PERIOD.0, timers::Reader::Pinned)),
                )
                .map(|(source, period, reader)| {
                    let mut l = timers::Lateness::new(source, period, reader).unwrap();
                    l.hist = hist();
                    l.wakeups = match source {
                        timers::SLOTS_SOURCE => 25,
                        timers::SLOTS_PEER => 50,
                        _ => 0,
                    };
                    l
                })
                .collect(),
        }
    }

    #[test]
    fn results_have_every_required_key() {
        let out = report(&results()).unwrap();
        assert_eq!(missing(&out), Vec::<String>::new());
        // Ratios are computed from the named paths: equal made-up histograms give 1.
        assert_eq!(out["ratio"]["cross_cpu"]["ioctl_vs_io_uring_sqpoll"], 1.0);
        assert_eq!(out["ratio"]["timer_plain"]["p99_10ms"], 1.0);
        assert_eq!(out["ratio"]["timer"]["p99_64slots_10ms"], 1.0);
        // The plain reader has no 64-timer rows, so no ratio of them.
        assert!(out["ratio"]["timer_plain"]
            .get("p50_64slots_10ms")
            .is_none());
        // 100 ticks read in 25 wake-ups, and in 50; the rows read one descriptor at a time
        // have no such figure.
        let many = &out["timer_lateness_ns"];
        let period = timers::SLOTS_PERIOD.0;
        assert_eq!(many[timers::SLOTS_SOURCE][period]["ticks_per_wakeup"], 4.0);
        assert_eq!(many[timers::SLOTS_PEER][period]["ticks_per_wakeup"], 2.0);
        assert!(out["timer_lateness_ns"]["evnotify"]["1ms"]
            .get("ticks_per_wakeup")
            .is_none());
    }

    #[test]
    fn a_timer_ratio_over_zero_is_null() {
        let mut r = results();
        for l in &mut r.timers {
            if (l.source == "timerfd" && l.reader == timers::Reader::Plain)
                || l.source == timers::SLOTS_PEER
            {
                l.hist.reset();
                l.hist.record(0).unwrap();
            }
        }
        let out = report(&r).unwrap();
        assert_eq!(out["ratio"]["timer_plain"]["p50_1ms"], Value::Null);
        assert_eq!(out["ratio"]["timer"]["p50_1ms"], 1.0);
        assert_eq!(out["ratio"]["timer"]["p50_64slots_10ms"], Value::Null);
    }

    #[test]
    fn a_missing_key_is_reported() {
        let full = report(&results()).unwrap();
        for key in required() {
            let mut v = full.clone();
            let (parent, last) = key.rsplit_once('/').unwrap();
            let p = v.pointer_mut(parent).unwrap();
            match p {
                Value::Object(m) => drop(m.remove(last)),
                Value::Array(a) => drop(a.remove(last.parse().unwrap())),
                _ => panic!("{parent} is not a container"),
            }
            assert!(missing(&v).contains(&key), "{key} not reported missing");
        }
    }

    #[test]
    fn the_shared_run_alone_has_its_keys() {
        let out = shared_report(&results().shared);
        let lacks: Vec<_> = missing(&out)
            .into_iter()
            .filter(|k| SHARED_KEYS.iter().any(|p| k.starts_with(p)))
            .collect();
        assert_eq!(lacks, Vec::<String>::new());
        // And nothing else: the filter keeps only its own keys.
        assert!(missing(&out).iter().any(|k| k.starts_with("/scaling/")));
    }
}
