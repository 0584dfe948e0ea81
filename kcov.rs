// SPDX-License-Identifier: GPL-2.0

//! KCOV remote coverage sections (`kernel/kcov.c`, `Documentation/dev-tools/kcov.rst`): the only
//! user of the KCOV C API. A leaf. On a kernel without `CONFIG_KCOV` every item here is a no-op.
//!
//! KCOV records the code a task runs only for a task that asked for it; a kernel thread's work
//! is recorded by wrapping it in a *remote section* under a handle that a user process
//! registered (`KCOV_REMOTE_ENABLE`). As vhost does, a worker's thread takes the *common handle*
//! of the task that started it, which that task inherited from the process that registered it:
//! a fuzzer's threads started by its programs are recorded as the fuzzer's.
//!
//! A task that enabled KCOV for itself (`KCOV_ENABLE`, as syzkaller's executors do) must not
//! open a section (kcov WARNs: sections do not nest), so file operations open one only when the
//! module parameter `kcov_syscalls` asks for it: `make coverage` sets it, so that a whole test
//! suite, its forked children and helper threads included, is recorded by one registration
//! without enabling KCOV in every thread.

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

/// The handle (`KCOV_SUBSYSTEM_COMMON`, instance `0x65766e79`, "evny") under which the module's
/// KUnit cases record what they run: they run in threads no user task started, so there is no
/// common handle to inherit. A collector registers it as its common handle (`user/evnotify-kcov`
/// does); otherwise their sections record nothing.
pub(crate) const KUNIT_HANDLE: Handle = Handle(0x6576_6e79);

/// A KCOV common handle: 0 when the task that took it collects no remote coverage.
#[derive(Clone, Copy, Default)]
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
/// When `open`, `kcov_remote_start` was called on this task in task context, and
/// `kcov_remote_stop` has not been called since. It is neither `Send` nor `Sync`, so it ends on
/// the task that opened it; it must not span that task's exit (kcov WARNs), which a value on
/// its stack does not.
pub(crate) struct Section {
    open: bool,
    _not_send: PhantomData<*mut ()>,
}

impl Section {
    /// Opens a section under `handle` (none for the 0 handle, which no collector can register).
    ///
    /// The current task must not be in a section already (they do not nest) nor have KCOV
    /// enabled for itself: kernel threads the module runs, and tasks calling with
    /// `kcov_syscalls` set (see [`Section::syscall`]).
    pub(crate) fn start(handle: Handle) -> Self {
        #[cfg(CONFIG_KCOV)]
        if handle.0 != 0 {
            // SAFETY: A common handle (subsystem 0), which `kcov_check_handle` accepts; the
            // caller is in task context, in no section, and has no KCOV of its own (the
            // function's requirements), which kcov would WARN about. An unregistered handle
            // starts nothing, and `kcov_remote_stop` then returns at once.
            unsafe { ffi::kcov_remote_start(handle.0) };
            // INVARIANT: Started above, on this task.
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

    /// The section of a file operation: under the caller's common handle, if `enabled` (the
    /// module parameter `kcov_syscalls`).
    pub(crate) fn syscall(enabled: bool) -> Self {
        Self::start(if enabled {
            Handle::current()
        } else {
            Handle::default()
        })
    }
}

impl Drop for Section {
    fn drop(&mut self) {
        #[cfg(CONFIG_KCOV)]
        if self.open {
            // SAFETY: By the type invariant, this task opened a section and has not closed it.
            unsafe { ffi::kcov_remote_stop() };
        }
    }
}
