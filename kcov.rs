// SPDX-License-Identifier: GPL-2.0

//! KCOV remote coverage sections (`kernel/kcov.c`, `Documentation/dev-tools/kcov.rst`): the only
//! user of the KCOV C API. A leaf. On a kernel without `CONFIG_KCOV` every item here is a no-op.
//!
//! KCOV records the code a task runs only for a task that asked for it; work done in a kernel
//! thread is recorded by wrapping it in a *remote section* under a handle that a user process
//! registered (`KCOV_REMOTE_ENABLE`). As vhost does, the module takes the *common handle* of
//! the task whose call causes the work, which that task inherited from the process that
//! registered it: a channel's opener's, for serving the channel; the spawner's, for a thread's
//! start. So a fuzzer such as syzkaller sees what its programs make the module's threads do.
//!
//! File operations run in the caller's own task, which records them itself if it enabled KCOV
//! (`KCOV_ENABLE`). For `make coverage`, which records a whole test suite (forked children,
//! helper threads and all) without enabling KCOV in each thread, the module parameter
//! `kcov_syscalls=1` also wraps file operations in sections, but only for tasks under
//! [`COLLECTOR`], the handle `evnotify-kcov` registers: a task with KCOV of its own, or inside
//! another subsystem's section (io_uring's workers run requests in one), must never open one
//! (kcov WARNs, and `kcov_remote_stop` would then end the other), and no other collector uses
//! that handle.

use core::marker::PhantomData;

#[cfg(CONFIG_KCOV)]
mod ffi {
    extern "C" {
        // `include/linux/kcov.h`, which the bindings do not include; exported by `kernel/kcov.c`.
        //   void kcov_remote_start(u64 handle);
        //   void kcov_remote_stop(void);
        //   struct kcov_common_handle_id kcov_common_handle(void);
        pub(super) fn kcov_remote_start(handle: u64);
        pub(super) fn kcov_remote_stop();
        pub(super) fn kcov_common_handle() -> kernel::bindings::kcov_common_handle_id;
    }
}

/// `evnotify-kcov`'s common handle (`KCOV_SUBSYSTEM_COMMON`, instance `0x65766e79`, "evny"):
/// the only one under which `kcov_syscalls=1` opens sections for file operations.
pub(crate) const COLLECTOR: Handle = Handle(0x6576_6e79);

/// A KCOV common handle: 0 when the task that took it collects no remote coverage.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Handle(u64);

impl Handle {
    /// The calling task's common handle (0 outside task context, or with no KCOV).
    pub(crate) fn current() -> Self {
        #[cfg(CONFIG_KCOV)]
        {
            // SAFETY: `kcov_common_handle` only reads `current->kcov_handle`; any context.
            Self(unsafe { ffi::kcov_common_handle() }.val)
        }
        #[cfg(not(CONFIG_KCOV))]
        Self(0)
    }
}

/// A remote coverage section, open until dropped: what the current task runs meanwhile is
/// recorded for the collector that registered its handle, if any.
///
/// # Invariants
///
/// When `open`, `kcov_remote_start` was called on this task, in task context, which was then
/// in no section and had no KCOV of its own, and `kcov_remote_stop` has not been called since.
/// Neither `Send` nor `Sync`: it ends on the task that opened it.
pub(crate) struct Section {
    // Read only by the drop of a kernel with KCOV.
    #[cfg_attr(not(CONFIG_KCOV), allow(dead_code))]
    open: bool,
    _not_send: PhantomData<*mut ()>,
}

impl Section {
    /// Opens a section under `handle` (none for the 0 handle, which no collector can register).
    ///
    /// For the module's own kernel threads, which never enable KCOV themselves: the caller must
    /// be in task context and in no section, and must not exit before the section is dropped
    /// (kcov WARNs on each).
    pub(crate) fn start(handle: Handle) -> Self {
        #[cfg(CONFIG_KCOV)]
        if handle.0 != 0 {
            // SAFETY: A common handle (subsystem 0), which `kcov_check_handle` accepts. The
            // caller is in task context, in no section, and has no KCOV of its own (the
            // function's requirements): so `kcov_remote_start` either starts a section, or,
            // the handle not being registered, leaves the task's KCOV mode off, in which case
            // `kcov_remote_stop` does nothing.
            unsafe { ffi::kcov_remote_start(handle.0) };
            // INVARIANT: Started above, on this task, under the function's requirements.
            return Self {
                open: true,
                _not_send: PhantomData,
            };
        }
        let _ = handle;
        Self {
            open: false,
            _not_send: PhantomData,
        }
    }

    /// The section of a file operation: with `enabled` (`kcov_syscalls=1`) and a caller under
    /// [`COLLECTOR`] only, whose tasks neither enable KCOV themselves nor run requests inside
    /// another subsystem's section (see the module's doc); else none.
    pub(crate) fn syscall(enabled: bool) -> Self {
        let handle = Handle::current();
        Self::start(if enabled && handle == COLLECTOR {
            handle
        } else {
            Handle::default()
        })
    }
}

impl Drop for Section {
    fn drop(&mut self) {
        #[cfg(CONFIG_KCOV)]
        if self.open {
            // SAFETY: By the type invariant, this task called `kcov_remote_start` under the
            // conditions in which a section either started and is still open, or did not start
            // and the task's KCOV mode is off, so that this returns at once.
            unsafe { ffi::kcov_remote_stop() };
        }
    }
}
