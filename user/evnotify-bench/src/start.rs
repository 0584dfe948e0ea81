//! Thread start: from nothing to the first answer. A fresh channel's first kick creates its
//! worker's kernel thread (on a kernel with cgroups, moved into the caller's cgroups before
//! it serves); its peer is a fresh io_uring whose SQPOLL thread `io_uring_setup` creates (a
//! thread of the caller, so in its cgroups). Each is timed in the root cgroup and in a child
//! cgroup, where a move is real work, the four taking turns. Each start comes after [`GAP`]
//! of quiet, with the previous one's thread gone: a move that follows another within an RCU
//! grace period skips the grace period that taking `cgroup_threadgroup_rwsem` for writing
//! otherwise waits for, and io_uring stops its SQPOLL thread after `close` returns.

use crate::{
    measure::{turn, ROUNDS},
    peers::{Mode, NopRing},
};
use anyhow::{ensure, Context, Result};
use evnotify::{Channel, Notifier};
use hdrhistogram::Histogram;
use std::{
    path::Path,
    time::{Duration, Instant},
};

/// The rows, as `thread_start_ns` names them: (who, in a child cgroup, after [`GAP`]). The
/// back-to-back rows start each thread as soon as the previous one is gone: what a program
/// that starts many pays per start.
pub(crate) const ROWS: [(&str, bool, bool); 6] = [
    ("evnotify_root", false, true),
    ("evnotify_cgroup", true, true),
    ("io_uring_sqpoll_root", false, true),
    ("io_uring_sqpoll_cgroup", true, true),
    ("evnotify_cgroup_back_to_back", true, false),
    ("io_uring_sqpoll_cgroup_back_to_back", true, false),
];

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The quiet before each start: several RCU grace periods, even under TCG.
const GAP: Duration = Duration::from_millis(50);

/// The threads of this process: io_uring's SQPOLL thread is one of them while it lives.
fn threads() -> Result<usize> {
    Ok(std::fs::read_dir("/proc/self/task")?.count())
}

/// Waits (at most 10 s) until this process has `n` threads again, then for [`GAP`] if `gap`.
fn quiet(n: usize, gap: bool) -> Result<()> {
    let t = Instant::now();
    while threads()? > n {
        ensure!(
            t.elapsed() < Duration::from_secs(10),
            "a thread outlived its ring"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    if gap {
        std::thread::sleep(GAP);
    }
    Ok(())
}

/// Opens a channel, attaches an eventfd, kicks it once and reads the notification: its
/// thread created on the way. The channel closes (and its thread stops) after the timing.
fn evnotify_once() -> Result<u64> {
    let t = Instant::now();
    let ch = Channel::open()?;
    let n = Notifier::new()?;
    ch.attach(0, &n)?;
    ch.kick(0, 1)?;
    ensure!(n.wait_timeout(Duration::from_secs(10))? == 1, "no answer");
    Ok(t.elapsed().as_nanos() as u64)
}

/// Sets up an SQPOLL ring with its CQ eventfd and takes one NOP's round trip.
fn sqpoll_once() -> Result<u64> {
    let t = Instant::now();
    let mut ring = NopRing::new(Mode::SqPoll, None, Duration::from_millis(1))?;
    ring.round_trip()?;
    Ok(t.elapsed().as_nanos() as u64)
}

fn move_self(dir: &Path) -> Result<()> {
    std::fs::write(dir.join("cgroup.procs"), "0")
        .with_context(|| format!("move the bench to {}", dir.display()))
}

/// `n` starts per row, in rounds. Without cgroup v2 (a kernel without cgroups) the cgroup
/// rows are left out.
pub(crate) fn thread_start(n: u32) -> Result<Vec<(&'static str, Histogram<u64>)>> {
    let root = Path::new(CGROUP_ROOT);
    let child = root.join(format!("evnotify-bench-{}", std::process::id()));
    let cgroups = root.join("cgroup.procs").exists();
    if cgroups {
        std::fs::create_dir(&child).with_context(|| format!("mkdir {}", child.display()))?;
    }
    let mut hs = ROWS
        .iter()
        .map(|_| Histogram::new(3))
        .collect::<Result<Vec<_>, _>>()?;
    let per_round = n.div_ceil(ROUNDS);
    let baseline = threads()?;
    let run = |hs: &mut Vec<Histogram<u64>>| -> Result<()> {
        for round in 0..ROUNDS as usize {
            for i in turn(ROWS.len(), round) {
                let (name, in_child, gap) = ROWS[i];
                if in_child && !cgroups {
                    continue;
                }
                if cgroups {
                    move_self(if in_child { &child } else { root })?;
                }
                for _ in 0..per_round {
                    quiet(baseline, gap)?;
                    let ns = if name.starts_with("evnotify") {
                        evnotify_once()?
                    } else {
                        sqpoll_once()?
                    };
                    hs[i].record(ns)?;
                }
            }
        }
        Ok(())
    };
    let res = run(&mut hs);
    if cgroups {
        let _ = move_self(root);
        // The last threads stop asynchronously: the removal may have to wait for them.
        let t = Instant::now();
        while std::fs::remove_dir(&child).is_err() && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    res?;
    Ok(ROWS
        .iter()
        .zip(hs)
        .filter(|((_, in_child, _), _)| cgroups || !in_child)
        .map(|((name, _, _), h)| (*name, h))
        .collect())
}
