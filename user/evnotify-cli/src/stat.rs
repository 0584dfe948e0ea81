//! `evnotify stat`: every channel open on the system, found as ss and lsof find sockets and
//! files: the links in `/proc/<pid>/fd`, and the `fdinfo` text the module writes for each.

use anyhow::{bail, Context, Result};
// A channel's counters: the library's `struct evnotify_stats`, whose `serde` feature gives
// the JSON names (the header's, as fdinfo prints them).
use evnotify::Stats;
use serde::{Deserialize, Serialize};
use std::{
    fs, io,
    path::{Path, PathBuf},
};

/// The worker (kernel thread) a channel uses: `struct evnotify_worker` (the JSON names), from
/// `EVNOTIFY_IOC_WORKER` or from the fdinfo lines `worker:` and `worker_channels:`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Worker {
    /// 0 until the channel has a worker; its thread is named `evnotify/<worker_id>`.
    pub worker_id: u32,
    /// As [`Stats::thread_pid`].
    pub thread_pid: i32,
    /// Open channels that use the worker.
    pub channels: u32,
}

impl From<&evnotify::WorkerInfo> for Worker {
    fn from(w: &evnotify::WorkerInfo) -> Self {
        Self {
            worker_id: w.id,
            thread_pid: w.thread_pid,
            channels: w.channels,
        }
    }
}

/// The fdinfo lines of the worker, API version 3 on.
#[derive(Deserialize)]
struct WorkerLines {
    worker: u32,
    worker_channels: u32,
}

/// One `slot:` line of fdinfo: a slot in use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Slot {
    pub slot: u32,
    /// `attached` or `none`.
    pub notify: String,
    /// `attached`, `closed` (user space closed it; the thread will unhook it) or `none`.
    pub kickfd: String,
    pub pending: u64,
    /// The signal it sends, 0 for none.
    pub signal: i32,
    pub timer: Option<SlotTimer>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlotTimer {
    pub period_ns: u64,
    /// Ticks still to deliver; 0: until cancelled.
    pub left: u64,
}

/// What the module writes in a channel's fdinfo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FdInfo {
    pub stats: Stats,
    /// `None` (JSON `null`) from a module before API version 3, which has no workers.
    pub worker: Option<Worker>,
    pub slots: Vec<Slot>,
}

/// Parses a channel's `/proc/<pid>/fdinfo/<fd>`: `key:\tvalue` lines (the VFS's own `pos`,
/// `flags`... are skipped), then one `slot:` line per slot in use. The worker's two lines
/// (`worker:`, `worker_channels:`) come together or not at all (before API version 3).
pub fn parse_fdinfo(text: &str) -> Result<FdInfo> {
    let mut fields = serde_json::Map::new();
    let mut slots = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("slot:\t") {
            slots.push(parse_slot(rest).with_context(|| format!("bad slot line {line:?}"))?);
        } else if let Some((key, value)) = line.split_once(":\t") {
            // Only numbers are kept: the counters are, and the VFS fields need not be.
            if let Ok(n) = value.trim().parse::<i64>() {
                fields.insert(key.to_owned(), n.into());
            } else if let Ok(n) = value.trim().parse::<u64>() {
                fields.insert(key.to_owned(), n.into());
            }
        }
    }
    let fields = serde_json::Value::from(fields);
    let stats: Stats =
        serde_json::from_value(fields.clone()).context("not an evnotify channel's fdinfo")?;
    let worker = if fields.get("worker").is_some() || fields.get("worker_channels").is_some() {
        let w: WorkerLines = serde_json::from_value(fields)
            .context("bad worker lines (worker:, worker_channels:)")?;
        Some(Worker {
            worker_id: w.worker,
            thread_pid: stats.thread_pid,
            channels: w.worker_channels,
        })
    } else {
        None
    };
    Ok(FdInfo {
        stats,
        worker,
        slots,
    })
}

/// `9\tnotify: attached\tkickfd: none\tpending: 0\tsignal: 0\ttimer: 100000000ns left 0`.
fn parse_slot(rest: &str) -> Result<Slot> {
    let mut parts = rest.split('\t');
    let slot = parts.next().unwrap_or_default().parse()?;
    let mut get = |key: &str| -> Result<&str> {
        let part = parts.next().unwrap_or_default();
        match part.strip_prefix(key).and_then(|p| p.strip_prefix(": ")) {
            Some(v) => Ok(v),
            None => bail!("want {key}, found {part:?}"),
        }
    };
    let notify = get("notify")?.to_owned();
    let kickfd = get("kickfd")?.to_owned();
    let pending = get("pending")?.parse()?;
    let signal = get("signal")?.parse()?;
    let timer = match get("timer")? {
        "none" => None,
        t => {
            let Some((period, left)) = t.split_once("ns left ") else {
                bail!("bad timer {t:?}");
            };
            Some(SlotTimer {
                period_ns: period.parse()?,
                left: left.parse()?,
            })
        }
    };
    Ok(Slot {
        slot,
        notify,
        kickfd,
        pending,
        signal,
        timer,
    })
}

/// One channel found in `/proc`.
#[derive(Debug, Serialize)]
pub struct Entry {
    pub pid: u32,
    pub comm: String,
    /// The owner of `/proc/<pid>`: the process's effective uid.
    pub uid: u32,
    pub fd: u32,
    #[serde(flatten)]
    pub info: FdInfo,
}

/// The result of a scan: what was found, and what could not be looked at.
#[derive(Debug, Default, Serialize)]
pub struct Scan {
    pub channels: Vec<Entry>,
    /// Processes whose descriptors were looked at.
    pub processes: u32,
    /// Processes (or single descriptors) that could not be read: another user's, without root.
    pub unreadable: u32,
    /// Processes or descriptors that went away during the scan.
    pub vanished: u32,
    /// Descriptors linked to the device's path whose fdinfo is not a channel's (a file put
    /// in the device node's place), with the reason.
    pub not_channels: Vec<NotChannel>,
}

#[derive(Debug, Serialize)]
pub struct NotChannel {
    pub pid: u32,
    pub fd: u32,
    pub error: String,
}

/// Errors that mean the process or descriptor is gone, not that it is hidden from us.
fn gone(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ESRCH))
}

impl Scan {
    /// Counts a failed read as vanished or unreadable.
    fn failed(&mut self, e: &io::Error) {
        if gone(e) {
            self.vanished += 1;
        } else {
            self.unreadable += 1;
        }
    }
}

/// Scans `proc` (normally `/proc`) for descriptors whose link is `device`.
pub fn scan(proc: &Path, device: &Path) -> Result<Scan> {
    let mut scan = Scan::default();
    let dir = fs::read_dir(proc).with_context(|| format!("read {}", proc.display()))?;
    let mut pids: Vec<u32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    for pid in pids {
        let base = proc.join(pid.to_string());
        let fds = match fs::read_dir(base.join("fd")) {
            Ok(fds) => fds,
            Err(e) => {
                scan.failed(&e);
                continue;
            }
        };
        scan.processes += 1;
        let mut found: Vec<(u32, PathBuf)> = Vec::new();
        for fd in fds {
            let Ok(fd) = fd else { continue };
            let Some(n) = fd.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            // A descriptor closed since the listing is no loss: it was not a channel then.
            if let Ok(target) = fs::read_link(fd.path()) {
                if target == device {
                    found.push((n, fd.path()));
                }
            }
        }
        found.sort();
        if found.is_empty() {
            continue;
        }
        let comm = fs::read_to_string(base.join("comm")).unwrap_or_default();
        let uid = fs::metadata(&base).map_or(u32::MAX, |m| std::os::unix::fs::MetadataExt::uid(&m));
        for (fd, _) in found {
            let text = match fs::read_to_string(base.join("fdinfo").join(fd.to_string())) {
                Ok(t) => t,
                Err(e) => {
                    scan.failed(&e);
                    continue;
                }
            };
            let info = match parse_fdinfo(&text) {
                Ok(info) => info,
                Err(e) => {
                    let error = format!("{e:#}");
                    scan.not_channels.push(NotChannel { pid, fd, error });
                    continue;
                }
            };
            scan.channels.push(Entry {
                pid,
                comm: comm.trim_end().to_owned(),
                uid,
                fd,
                info,
            });
        }
    }
    Ok(scan)
}

#[cfg(test)]
pub mod tests {
    use super::*;

    const WATCH: &str = include_str!("../testdata/fdinfo-watch.txt");
    const TIMER: &str = include_str!("../testdata/fdinfo-timer.txt");
    /// API version 3: written by hand from the header's description (the worker's two lines
    /// right after `thread_pid:`), not captured in the VM like the two above.
    const SHARED: &str = include_str!("../testdata/fdinfo-shared.txt");

    #[test]
    fn parses_fdinfo_from_the_vm() {
        let info = parse_fdinfo(WATCH).unwrap();
        let s = &info.stats;
        assert_eq!(
            (s.thread_pid, s.kicks, s.fd_kicks, s.timer_ticks, s.handled),
            (48, 7, 7, 10, 17)
        );
        assert_eq!(
            (s.notifies, s.wakeups, s.attached, s.kickfds),
            (17, 14, 2, 1)
        );
        assert_eq!((s.timers, s.busypoll_ns, s.sig_refused), (1, 200000, 0));
        assert_eq!(
            info.slots,
            [
                Slot {
                    slot: 0,
                    notify: "attached".into(),
                    kickfd: "none".into(),
                    pending: 0,
                    signal: 0,
                    timer: Some(SlotTimer {
                        period_ns: 100_000_000,
                        left: 0
                    }),
                },
                Slot {
                    slot: 1,
                    notify: "attached".into(),
                    kickfd: "attached".into(),
                    pending: 0,
                    signal: 0,
                    timer: None,
                },
            ]
        );
        let info = parse_fdinfo(TIMER).unwrap();
        assert_eq!(info.stats.timer_ticks, 22);
        assert_eq!(info.slots[0].timer.as_ref().unwrap().left, 38);
        // Both are API version 2: no worker lines.
        assert_eq!(info.worker, None);
        assert_eq!(parse_fdinfo(WATCH).unwrap().worker, None);
    }

    #[test]
    fn parses_the_worker_lines() {
        let info = parse_fdinfo(SHARED).unwrap();
        assert_eq!(
            info.worker,
            Some(Worker {
                worker_id: 3,
                thread_pid: 52,
                channels: 2
            })
        );
        assert_eq!((info.stats.kicks, info.stats.thread_pid), (4, 52));
        assert_eq!(info.slots.len(), 1);
        // No worker yet.
        let text = SHARED
            .replace("worker:\t3", "worker:\t0")
            .replace("worker_channels:\t2", "worker_channels:\t0")
            .replace("thread_pid:\t52", "thread_pid:\t0");
        let w = parse_fdinfo(&text).unwrap().worker.unwrap();
        assert_eq!((w.worker_id, w.thread_pid, w.channels), (0, 0, 0));
        // One line without the other, or a value that does not fit.
        for (from, to) in [
            ("worker:\t3\n", ""),
            ("worker_channels:\t2\n", ""),
            ("worker:\t3", "worker:\t-3"),
            ("worker_channels:\t2", "worker_channels:\t4294967296"),
        ] {
            let text = SHARED.replacen(from, to, 1);
            assert_ne!(text, SHARED, "{from}");
            let e = parse_fdinfo(&text).unwrap_err();
            assert!(
                format!("{e:#}").contains("bad worker lines"),
                "{from}: {e:#}"
            );
        }
    }

    #[test]
    fn rejects_what_is_not_a_channel() {
        // A plain file's fdinfo: the VFS fields only.
        let e = parse_fdinfo("pos:\t0\nflags:\t02\nmnt_id:\t19\nino:\t5\n").unwrap_err();
        assert!(format!("{e:#}").contains("missing field"), "{e:#}");
        // A counter that does not fit its type.
        let text = WATCH.replace("attached:\t2", "attached:\t-2");
        assert!(parse_fdinfo(&text).is_err());
        for (from, to) in [
            ("slot:\t0\t", "slot:\tx\t"),
            (
                "pending: 0\tsignal: 0\ttimer: 1",
                "pending: 0\tsignal: 0\ttimer: soon",
            ),
            ("kickfd: none", "kickfd none"),
            ("\ttimer: none", ""),
        ] {
            let text = WATCH.replacen(from, to, 1);
            assert_ne!(text, WATCH, "{from}");
            let e = parse_fdinfo(&text).unwrap_err();
            assert!(format!("{e:#}").contains("bad slot line"), "{e:#}");
        }
    }

    #[test]
    fn json_names_are_the_headers() {
        let v = serde_json::to_value(parse_fdinfo(WATCH).unwrap()).unwrap();
        let keys: Vec<_> = v["stats"].as_object().unwrap().keys().cloned().collect();
        let mut want = [
            "kicks",
            "fd_kicks",
            "timer_ticks",
            "handled",
            "notifies",
            "signals",
            "dropped",
            "wakeups",
            "polled",
            "pending",
            "thread_pid",
            "attached",
            "kickfds",
            "timers",
            "signal_slots",
            "busypoll_ns",
            "coalesced",
            "sig_refused",
        ];
        want.sort_unstable();
        assert_eq!(keys, want);
        assert_eq!(v["slots"][0]["timer"]["period_ns"], 100_000_000);
        assert_eq!(v["slots"][1]["timer"], serde_json::Value::Null);
        assert_eq!(v["worker"], serde_json::Value::Null);
        // `struct evnotify_worker`'s names, without its reserved field.
        let v = serde_json::to_value(parse_fdinfo(SHARED).unwrap()).unwrap();
        let keys: Vec<_> = v["worker"].as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["channels", "thread_pid", "worker_id"]);
    }

    /// A fake `/proc` tree with one process holding a channel on fd 3 and a file on fd 4.
    fn fake_proc(root: &Path) {
        use std::os::unix::fs::symlink;
        let p = root.join("100");
        fs::create_dir_all(p.join("fd")).unwrap();
        fs::create_dir_all(p.join("fdinfo")).unwrap();
        fs::write(p.join("comm"), "server\n").unwrap();
        symlink("/dev/evnotify", p.join("fd/3")).unwrap();
        fs::write(p.join("fdinfo/3"), WATCH).unwrap();
        symlink("/etc/passwd", p.join("fd/4")).unwrap();
        // A channel whose fdinfo vanished between the listing and the read.
        symlink("/dev/evnotify", p.join("fd/5")).unwrap();
        // Linked to the device's path, but not a channel.
        symlink("/dev/evnotify", p.join("fd/6")).unwrap();
        fs::write(p.join("fdinfo/6"), "pos:\t0\nflags:\t02\n").unwrap();
        // Gone during the scan: its directory is listed, its fd table is not there.
        fs::create_dir_all(root.join("200")).unwrap();
        // Cannot be listed (not a directory; without root, another user's fd table).
        fs::create_dir_all(root.join("300")).unwrap();
        fs::write(root.join("300/fd"), "").unwrap();
        // Not a process.
        fs::create_dir_all(root.join("sys")).unwrap();
    }

    pub fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("evnotify-cli-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn scan_finds_channels_and_counts_what_it_cannot_see() {
        let root = temp_dir("proc");
        fake_proc(&root);
        let scan = scan(&root, Path::new("/dev/evnotify")).unwrap();
        fs::remove_dir_all(&root).unwrap();
        assert_eq!(scan.channels.len(), 1, "{scan:?}");
        let e = &scan.channels[0];
        assert_eq!((e.pid, e.fd, e.comm.as_str()), (100, 3, "server"));
        assert_eq!(e.info.stats.kicks, 7);
        assert_eq!((scan.processes, scan.vanished, scan.unreadable), (1, 2, 1));
        let [nc] = &scan.not_channels[..] else {
            panic!("{scan:?}")
        };
        assert_eq!((nc.pid, nc.fd), (100, 6));
    }

    #[test]
    fn scan_of_the_real_proc_finds_this_process() {
        // No device on the host: a file stands in for it, and is found by its link alone.
        let dir = temp_dir("real");
        let path = dir.join("node");
        let f = fs::File::create(&path).unwrap();
        let scan = scan(Path::new("/proc"), &path).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        // Found, then refused: a plain file's fdinfo is not a channel's.
        assert!(scan.channels.is_empty(), "{scan:?}");
        let [nc] = &scan.not_channels[..] else {
            panic!("{scan:?}")
        };
        assert_eq!(nc.pid, std::process::id());
        assert_eq!(nc.fd, std::os::fd::AsRawFd::as_raw_fd(&f) as u32);
        assert!(
            nc.error.contains("not an evnotify channel's fdinfo"),
            "{nc:?}"
        );
        assert!(scan.processes > 1, "{scan:?}");
    }
}
