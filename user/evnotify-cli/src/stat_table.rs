//! `evnotify stat`'s output: the table of every channel open on the system (found by
//! `stat.rs`), and the device node it looks for.

use crate::error::{self, DevError, Failure};
use crate::info::{counters_text, worker_text};
use crate::json::Output;
use crate::stat::{self, Worker};
use anyhow::Result;
use std::path::Path;

fn slot_text(s: &stat::Slot) -> String {
    let timer = match &s.timer {
        None => "none".to_owned(),
        Some(t) if t.left == 0 => format!("every {} ns until cancelled", t.period_ns),
        Some(t) => format!("every {} ns, {} left", t.period_ns, t.left),
    };
    format!(
        "slot {}: notify {}, kickfd {}, pending {}, signal {}, timer {timer}",
        s.slot, s.notify, s.kickfd, s.pending, s.signal
    )
}

/// The WORKER and SERVES cells of `stat`'s table: the worker's id and how many channels it
/// serves, `-` without a worker (none yet, or a module before API version 3).
fn worker_columns(w: Option<&Worker>) -> (String, String) {
    match w {
        Some(w) if w.worker_id != 0 => (w.worker_id.to_string(), w.channels.to_string()),
        _ => ("-".to_owned(), "-".to_owned()),
    }
}

/// The device node `stat` looks for, made canonical (the links in /proc name the node as it
/// was opened). A path that does not exist, or is not a character device, is an error: it
/// would list no channel, which reads as "none open".
fn device_node(device: &str) -> Result<std::path::PathBuf> {
    use std::os::unix::fs::FileTypeExt;
    let fail = |e| DevError::new(device, error::LOOKUP, e);
    let path = Path::new(device).canonicalize().map_err(fail)?;
    let meta = std::fs::metadata(&path).map_err(fail)?;
    if !meta.file_type().is_char_device() {
        return Err(Failure {
            what: format!("{device}: not a character device"),
            hint: format!(
                "stat lists the descriptors open on a device node: give --device the node \
                 the module created ({})",
                evnotify::DEVICE
            ),
        }
        .into());
    }
    Ok(path)
}

/// The columns of `stat`'s table. COMM, the process's name, comes last, as in `ps`: it may
/// hold spaces, so every column before it stays one word.
const STAT_COLUMNS: [&str; 16] = [
    "PID", "UID", "FD", "THREAD", "WORKER", "SERVES", "NOTIFY", "KICKFD", "TIMER", "SIGNAL",
    "KICKS", "TICKS", "HANDLED", "PENDING", "DROPPED", "COMM",
];

/// The widths of the columns but the last: numbers are right-aligned.
const STAT_WIDTHS: [usize; 15] = [7, 6, 4, 7, 6, 6, 6, 6, 6, 6, 10, 10, 10, 8, 8];

fn stat_line(cells: &[String]) -> String {
    let mut line = String::new();
    for (cell, width) in cells.iter().zip(STAT_WIDTHS) {
        line += &format!("{cell:>width$} ");
    }
    line + &cells[STAT_WIDTHS.len()]
}

fn stat_header() -> String {
    stat_line(&STAT_COLUMNS.map(String::from))
}

/// One channel's row of `stat`'s table, in [`STAT_COLUMNS`]' order.
fn stat_row(e: &stat::Entry) -> String {
    let s = &e.info.stats;
    let (worker, serves) = worker_columns(e.info.worker.as_ref());
    stat_line(&[
        e.pid.to_string(),
        e.uid.to_string(),
        e.fd.to_string(),
        s.thread_pid.to_string(),
        worker,
        serves,
        s.attached.to_string(),
        s.kickfds.to_string(),
        s.timers.to_string(),
        s.signal_slots.to_string(),
        s.kicks.to_string(),
        s.timer_ticks.to_string(),
        s.handled.to_string(),
        s.pending.to_string(),
        s.dropped.to_string(),
        e.comm.clone(),
    ])
}

pub fn stat(device: &str, out: Output, verbose: bool) -> Result<()> {
    let device = device_node(device)?;
    let scan = stat::scan(Path::new("/proc"), &device)?;
    for nc in &scan.not_channels {
        eprintln!(
            "evnotify: pid {} fd {} is linked to {} but is not a channel: {}",
            nc.pid,
            nc.fd,
            device.display(),
            nc.error
        );
    }
    // Descriptors linked to it and none a channel: not the evnotify device (a typo, /dev/null).
    if scan.channels.is_empty() && !scan.not_channels.is_empty() {
        anyhow::bail!(
            "{}: {} descriptor(s) are open on it and none is an evnotify channel: it is not \
             /dev/evnotify (give --device the evnotify device node)",
            device.display(),
            scan.not_channels.len()
        );
    }
    if out.json {
        return out.emit(serde_json::to_value(&scan)?);
    }
    println!("{}", stat_header());
    for e in &scan.channels {
        let s = &e.info.stats;
        println!("{}", stat_row(e));
        if verbose {
            println!("    {}", counters_text(s).replace('\n', "\n    "));
            println!("    {}", worker_text(e.info.worker.as_ref()));
            for slot in &e.info.slots {
                println!("    {}", slot_text(slot));
            }
        }
    }
    let mut summary = format!(
        "{} channel(s); {} process(es) scanned",
        scan.channels.len(),
        scan.processes
    );
    if scan.unreadable > 0 {
        summary += &format!(
            "; {} not readable (other users' processes: run as root to see them)",
            scan.unreadable
        );
    }
    if scan.vanished > 0 {
        summary += &format!("; {} went away during the scan", scan.vanished);
    }
    println!("{summary}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_text_and_columns() {
        let w = |worker_id, thread_pid, channels| Worker {
            worker_id,
            thread_pid,
            channels,
        };
        assert_eq!(
            worker_text(Some(&w(3, 52, 2))),
            "worker: 3 (thread evnotify/3, pid 52), serving 2 channel(s)"
        );
        assert!(worker_text(Some(&w(0, 0, 0))).contains("none yet"));
        assert!(worker_text(None).contains("API version 3"));
        assert_eq!(worker_columns(Some(&w(3, 52, 2))), ("3".into(), "2".into()));
        for none in [Some(&w(0, 0, 0)), None] {
            assert_eq!(worker_columns(none), ("-".into(), "-".into()));
        }
    }

    #[test]
    fn stat_puts_comm_last_so_that_spaces_in_it_split_nothing() {
        let header = stat_header();
        let cols: Vec<_> = header.split_whitespace().collect();
        assert_eq!(cols, STAT_COLUMNS, "{header}");
        assert!(
            header.starts_with("    PID    UID   FD  THREAD WORKER SERVES"),
            "{header}"
        );
        let info = stat::parse_fdinfo(include_str!("../testdata/fdinfo-shared.txt")).unwrap();
        let e = stat::Entry {
            pid: 4242,
            comm: "my server 2".into(),
            uid: 1000,
            fd: 7,
            info,
        };
        let row = stat_row(&e);
        let cells: Vec<_> = row.split_whitespace().collect();
        assert_eq!(cells[..6], ["4242", "1000", "7", "52", "3", "2"], "{row}");
        assert_eq!(cells[15..].join(" "), "my server 2", "{row}");
        assert!(row.ends_with(" my server 2"), "{row}");
        // Every column starts where its header does: the numbers end under their names.
        assert_eq!(
            row.find(" my server").unwrap(),
            header.find(" COMM").unwrap()
        );
    }
}
