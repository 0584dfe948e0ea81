// SPDX-License-Identifier: GPL-2.0

//! A process to signal, as `F_SETOWN` records for fasync: the only user of the pid C API.

use core::ptr::NonNull;
use kernel::{
    bindings,
    prelude::*,
    task::Task, //
};

/// Signals accepted: 1 to `_NSIG`, as `F_SETSIG` allows.
pub(crate) const MAX_SIGNAL: i32 = bindings::_NSIG as i32;

/// A counted reference to the `struct pid` of a process, and the signal to send it.
///
/// The reference pins the `struct pid`, never the process: once the process exits, sending
/// fails with `ESRCH`, and a later process that reuses the number gets another `struct pid`.
///
/// # Invariants
///
/// `pid` is a valid `struct pid` on which this object owns one reference, and `signo` is in
/// `1..=MAX_SIGNAL`.
pub(crate) struct SigTarget {
    pid: NonNull<bindings::pid>,
    signo: i32,
}

// SAFETY: A `struct pid` reference may be used and released from any thread.
unsafe impl Send for SigTarget {}

// SAFETY: `send` only passes the pid to `kill_pid`, which is safe to call concurrently.
unsafe impl Sync for SigTarget {}

impl SigTarget {
    /// Targets the calling process (its thread group) with `signo`.
    pub(crate) fn current_process(signo: i32) -> Result<Self> {
        if !(1..=MAX_SIGNAL).contains(&signo) {
            return Err(EINVAL);
        }
        // SAFETY: `current` is valid; `get_task_pid` returns a new reference, or NULL if the
        // task is exiting.
        let pid =
            unsafe { bindings::get_task_pid(Task::current_raw(), bindings::pid_type_PIDTYPE_TGID) };
        // INVARIANT: `pid` carries the reference taken above, and `signo` was checked.
        Ok(Self {
            pid: NonNull::new(pid).ok_or(ESRCH)?,
            signo,
        })
    }

    /// Sends the signal. Returns `false` once the process is gone.
    pub(crate) fn send(&self) -> bool {
        // SAFETY: `pid` is valid by the type invariant; `priv = 1` marks the signal as sent by
        // the kernel, so no permission check applies.
        unsafe { bindings::kill_pid(self.pid.as_ptr(), self.signo, 1) != -(bindings::ESRCH as i32) }
    }

    /// The signal number.
    pub(crate) fn signo(&self) -> i32 {
        self.signo
    }
}

impl Drop for SigTarget {
    fn drop(&mut self) {
        // SAFETY: By the type invariant we own one reference, released exactly once.
        unsafe { bindings::put_pid(self.pid.as_ptr()) };
    }
}
