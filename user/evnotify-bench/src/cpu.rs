//! Where threads run and what CPU time they use: pinning, the CPUs online, and the CPU time
//! of a task, a thread or this process's tasks of a name.

use anyhow::{Context, Result};
use nix::{
    sched::{sched_setaffinity, CpuSet},
    unistd::Pid,
};
use std::{path::PathBuf, time::Duration};

/// Where the two ends of a round trip run.
#[derive(Clone, Copy)]
pub(crate) enum Pin {
    Same,
    Cross,
}

impl Pin {
    /// CPUs for (the measuring thread, the other end).
    pub(crate) fn cpus(self) -> (usize, usize) {
        match self {
            Pin::Same => (0, 0),
            Pin::Cross => (0, 1),
        }
    }
}

/// CPUs online (not the calling thread's affinity, which pinning narrows).
pub(crate) fn cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize
}

/// Lets the calling thread run on every CPU again.
pub(crate) fn unpin() -> Result<()> {
    let mut set = CpuSet::new();
    for cpu in 0..cpus() {
        set.set(cpu)?;
    }
    Ok(sched_setaffinity(Pid::from_raw(0), &set)?)
}

pub(crate) fn pin(pid: i32, cpu: usize) -> Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu)?;
    sched_setaffinity(Pid::from_raw(pid), &set).with_context(|| format!("pin {pid} to CPU {cpu}"))
}

/// CPU time a task has used, from its `stat` file (utime + stime, in clock ticks).
fn task_cpu(stat: &str) -> Result<Duration> {
    let stat = std::fs::read_to_string(stat).with_context(|| format!("read {stat}"))?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("stat format")?
        .1
        .split_whitespace()
        .collect();
    // Fields 14 and 15 of proc(5), counted from the state (field 3) at index 0.
    let field = |i: usize| -> Result<u64> { Ok(fields.get(i).context("stat fields")?.parse()?) };
    let ticks = field(11)? + field(12)?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_nanos(ticks * 1_000_000_000 / hz))
}

/// A process's CPU time: for a kernel thread, its own.
pub(crate) fn thread_cpu(pid: i32) -> Result<Duration> {
    task_cpu(&format!("/proc/{pid}/stat"))
}

/// One thread's CPU time (`/proc/<tid>/stat` would give its whole process's).
pub(crate) fn own_thread_cpu(tid: i32) -> Result<Duration> {
    task_cpu(&format!("/proc/self/task/{tid}/stat"))
}

/// This process's tasks whose name starts with `prefix` (io_uring's "iou-sqp-<pid>" SQ
/// threads, "iou-wrk-<tid>" io-wq workers): their `/proc` directories.
pub(crate) fn tasks_named(prefix: &str) -> Result<Vec<PathBuf>> {
    let mut found = vec![];
    for task in std::fs::read_dir("/proc/self/task")? {
        let dir = task?.path();
        // A task that exits meanwhile is left out.
        if std::fs::read_to_string(dir.join("comm")).is_ok_and(|c| c.starts_with(prefix)) {
            found.push(dir);
        }
    }
    Ok(found)
}

/// CPU time used by the tasks `tasks_named(prefix)` finds.
pub(crate) fn tasks_cpu(prefix: &str) -> Result<Duration> {
    Ok(tasks_named(prefix)?
        .iter()
        .filter_map(|dir| task_cpu(&dir.join("stat").to_string_lossy()).ok())
        .sum())
}
