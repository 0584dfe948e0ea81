// SPDX-License-Identifier: GPL-2.0

//! A process to signal, as `F_SETOWN` records for fasync: the only user of the pid and signal
//! C API. A leaf: it calls nothing of the module.

use core::ptr::NonNull;
use kernel::{
    bindings,
    cred::Credential,
    prelude::*,
    sync::{
        aref::ARef,
        rcu, //
    },
    task::Task, //
};

/// A counted reference to the `struct pid` of a process (its thread group), to tell it from
/// others: a later process that reuses its number gets another `struct pid`.
///
/// # Invariants
///
/// `pid` is a valid `struct pid` on which this object owns one reference, or NULL: a process
/// gone before it was recorded, which every C function given it takes as a pid with no task
/// (`pid_task` and `put_pid` check for NULL; `kill_pid_usb_asyncio` calls `pid_task` first).
pub(crate) struct Process {
    pid: *mut bindings::pid,
}

// SAFETY: A `struct pid` reference may be used and released from any thread.
unsafe impl Send for Process {}

// SAFETY: `is_current` only reads, under the RCU read lock; `SigTarget::send` passes the pid to
// `kill_pid_usb_asyncio`, which is safe to call concurrently.
unsafe impl Sync for Process {}

impl Process {
    /// The calling process: in a system call, never one that is gone (its thread group's pid
    /// is detached only when the whole group is dead, `group_dead` in `__unhash_process` of
    /// `kernel/exit.c`, which no thread of it outlives in a system call).
    pub(crate) fn current() -> Self {
        // SAFETY: `current` is valid while it runs; `get_task_pid` returns a new reference, or
        // NULL once the thread group's pid is detached.
        let pid =
            unsafe { bindings::get_task_pid(Task::current_raw(), bindings::pid_type_PIDTYPE_TGID) };
        // INVARIANT: `pid` carries the reference taken above, or is NULL.
        Self { pid }
    }

    /// Whether the calling task belongs to this process. Any context with a current task
    /// (a wake-up callback in a reading task included), and it writes nothing: under the RCU
    /// read lock, the process's leader (none once it is reaped), and the two thread groups'
    /// ids in the initial pid namespace, where an id is not reused while its process is
    /// there. (Not fields of `task_struct` read from Rust: bindgen's layout of it is not C's
    /// here, see `SigTarget::send`, and `CurrentTask::group_leader`, which reads one, tripped
    /// the debug assertions' misaligned-pointer check on the test kernel.)
    pub(crate) fn is_current(&self) -> bool {
        let _rcu = rcu::read_lock();
        // SAFETY: `pid` is valid or NULL by the type invariant; under the RCU read lock
        // `pid_task` returns the task attached to it, valid until the lock is released, or NULL.
        let leader = unsafe { bindings::pid_task(self.pid, bindings::pid_type_PIDTYPE_TGID) };
        if leader.is_null() {
            return false;
        }
        let ns = &raw mut bindings::init_pid_ns;
        // SAFETY: `leader` is valid (above) and `current` while it runs; `init_pid_ns` is a
        // static of the kernel, only read.
        unsafe {
            bindings::task_tgid_nr_ns(leader, ns)
                == bindings::task_tgid_nr_ns(Task::current_raw(), ns)
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // SAFETY: By the type invariant we own one reference (or none, NULL, which `put_pid`
        // ignores), released exactly once.
        unsafe { bindings::put_pid(self.pid) };
    }
}

/// Signals accepted: 1 to `_NSIG`, as `F_SETSIG` allows.
pub(crate) const MAX_SIGNAL: i32 = bindings::_NSIG as i32;

/// What became of one send.
pub(crate) enum Sent {
    /// The signal was queued (or merged with a pending one, as for any standard signal).
    Delivered,
    /// The target's credentials no longer allow the setter to signal it (or an LSM said no).
    Refused,
    /// The process is gone.
    Gone,
}

/// A counted reference to the `struct pid` of a process, the signal to send it, and the
/// credentials of whoever asked for it.
///
/// The reference pins the `struct pid`, never the process: once the process exits, sending
/// fails with `ESRCH`, and a later process that reuses the number gets another `struct pid`.
///
/// # Invariants
///
/// `signo` is in `1..=MAX_SIGNAL`.
pub(crate) struct SigTarget {
    process: Process,
    signo: i32,
    cred: ARef<Credential>,
}

impl SigTarget {
    /// Targets the calling process (its thread group) with `signo`, on behalf of the caller's
    /// credentials as they are now.
    pub(crate) fn current_process(signo: i32) -> Result<Self> {
        if !(1..=MAX_SIGNAL).contains(&signo) {
            return Err(EINVAL);
        }
        let task = Task::current_raw();
        // SAFETY: `current` is valid; `get_task_cred` returns a new reference to its objective
        // credentials, never NULL (`kernel/cred.c`: it retries until it has one).
        let cred = unsafe { NonNull::new_unchecked(bindings::get_task_cred(task).cast_mut()) };
        // SAFETY: `cred` carries the reference taken above, now owned by the `ARef`;
        // `Credential` is a transparent wrapper of `struct cred`.
        let cred = unsafe { ARef::from_raw(cred.cast::<Credential>()) };
        // INVARIANT: `signo` was checked.
        Ok(Self {
            process: Process::current(),
            signo,
            cred,
        })
    }

    /// Sends the signal, as the setter could with `kill(2)`: the setter's uid or euid must
    /// match the target's uid or saved uid now (the checks of `kill_pid_usb_asyncio`, which
    /// also asks the LSMs), and an unkillable target (a pid namespace's init) is not forced.
    /// The signal carries `si_code == SI_ASYNCIO`.
    ///
    /// `kill_pid_usb_asyncio` is the one exported send that takes recorded credentials. It
    /// finds the process by its leader's pid until the process is reaped, and returns 0 for a
    /// process that is exiting or a zombie (`prepare_signal` discards the signal): such a send
    /// counts as delivered. Telling those apart would mean reading `task_struct` fields, whose
    /// layout as bindgen sees it differs from C's in the test kernel (`signal` at 0x6f8 against
    /// 0x728: with `SCHEDSTATS` off, `struct sched_statistics` is empty but cacheline-aligned,
    /// and bindgen drops the alignment), so the header states this instead.
    pub(crate) fn send(&self) -> Sent {
        // SAFETY: Zero is a valid `sigval_t` (a union of an int and a pointer).
        let value: bindings::sigval_t = unsafe { core::mem::zeroed() };
        // SAFETY: The pid is valid or NULL (a pid with no task: `ESRCH`) by `Process`'s type
        // invariant, and `cred` is valid by `ARef`'s; `signo` is a valid signal number.
        let ret = unsafe {
            bindings::kill_pid_usb_asyncio(
                self.signo,
                0,
                value,
                self.process.pid,
                self.cred.as_ptr(),
            )
        };
        match ret {
            0 => Sent::Delivered,
            r if r == -(bindings::ESRCH as i32) => Sent::Gone,
            _ => Sent::Refused,
        }
    }

    /// The signal number.
    pub(crate) fn signo(&self) -> i32 {
        self.signo
    }
}
