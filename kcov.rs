// SPDX-License-Identifier: GPL-2.0

//! KCOV remote coverage sections (`kernel/kcov.c`, `Documentation/dev-tools/kcov.rst`): the only
//! user of the KCOV C API. A leaf. On a kernel without `CONFIG_KCOV` every item here is a no-op.
//!
//! KCOV records the code a task runs only for a task that asked for it: a caller's system
//! calls, by its own KCOV (`KCOV_ENABLE`). Work done in a kernel thread is recorded by wrapping
//! it in a *remote section* under a handle that a user process registered
//! (`KCOV_REMOTE_ENABLE`). As vhost and io_uring do, the module's threads take a *common handle*
//! that a task inherited from the process that registered it: a channel's opener's, for serving
//! the channel (whoever kicks it, and after the channel is passed to another process); the
//! spawner's, for a thread's start. So a fuzzer such as syzkaller sees what its programs make
//! the module's threads do. A handle outlives its registration (kcov clears it only in the
//! registering task): a later collector that registers the same one gets these records too.
//!
//! Only the module's own kernel threads open task sections: they never enable KCOV themselves,
//! and open one at a time, so sections never nest (kcov WARNs, and a stop would end the other
//! section) and never span the thread's exit. The other kind, a softirq section, is opened only
//! by the channel's alarm, which in the coverage build expires in softirq context so that it is
//! recorded (see `alarm`).

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

/// A KCOV common handle: 0 when the task that took it collects no remote coverage. Empty
/// without KCOV.
#[derive(Clone, Copy, Default)]
pub(crate) struct Handle {
    #[cfg(CONFIG_KCOV)]
    id: u64,
}

impl Handle {
    /// Whether it is a handle, which a collector may have registered (never without KCOV).
    pub(crate) fn is_set(&self) -> bool {
        #[cfg(CONFIG_KCOV)]
        {
            self.id != 0
        }
        #[cfg(not(CONFIG_KCOV))]
        {
            false
        }
    }

    /// The calling task's common handle (0 outside task context, or with no KCOV).
    pub(crate) fn current() -> Self {
        #[cfg(CONFIG_KCOV)]
        {
            // SAFETY: `kcov_common_handle` only reads `current->kcov_handle`; any context.
            let id = unsafe { ffi::kcov_common_handle() }.val;
            Self { id }
        }
        #[cfg(not(CONFIG_KCOV))]
        Self {}
    }
}

/// A remote coverage section, open until dropped: what the current task runs meanwhile is
/// recorded for the collector that registered its handle, if any.
///
/// # Invariants
///
/// When `open`, `kcov_remote_start` was called in the current context, and `kcov_remote_stop`
/// has not been called since: on this task, one of the module's kernel threads, in task
/// context, which was then in no section and had no KCOV of its own; or in the softirq still
/// being served, in no section of it. Neither `Send` nor `Sync`: it ends where it was opened.
pub(crate) struct Section {
    // Read only by the drop of a kernel with KCOV.
    #[cfg_attr(not(CONFIG_KCOV), allow(dead_code))]
    open: bool,
    _not_send: PhantomData<*mut ()>,
}

impl Section {
    /// Opens a section under `handle` (none for the 0 handle, which no collector can register).
    ///
    /// # Safety
    ///
    /// The caller must be one of the module's kernel threads (which never enable KCOV
    /// themselves), in task context and able to sleep (kcov may `vmalloc` the section's area),
    /// in no section, and must drop the section before it exits or opens another. kcov WARNs on
    /// a nested section or an exit inside one, and if the task were in another section or had
    /// KCOV of its own, the drop's `kcov_remote_stop` would end that one, handing its buffer
    /// (mapped into user space, for `KCOV_ENABLE`) to kcov's pool of remote areas.
    pub(crate) unsafe fn start(handle: Handle) -> Self {
        // SAFETY: The caller is a kernel thread in task context, in no section and with no KCOV
        // of its own (the function's safety requirements): so `kcov_remote_start` either starts
        // a section or (the handle not registered, no memory for the area) leaves the task's
        // KCOV mode off, in which case `kcov_remote_stop` does nothing.
        unsafe { Self::open(handle) }
    }

    /// Opens a section under `handle` in a softirq: what it runs until the section is dropped
    /// is recorded (kcov records softirqs only in such sections), whatever task it
    /// interrupted; kcov sets that task's own coverage aside until then.
    ///
    /// # Safety
    ///
    /// The caller must be serving a softirq (not a hard interrupt taken during one), in no
    /// softirq section, and must drop the section before the softirq's handler returns.
    #[cfg(evnotify_coverage)]
    pub(crate) unsafe fn start_in_softirq(handle: Handle) -> Self {
        // SAFETY: In a softirq, in no section of it (the function's safety requirements),
        // `kcov_remote_start` either starts one, on one of kcov's preallocated interrupt
        // buffers, or leaves the softirq unrecorded (`kcov_softirq` unset), in which case
        // `kcov_remote_stop` returns at once (`kernel/kcov.c`: "check if the corresponding
        // kcov_remote_start() actually found the remote handle").
        unsafe { Self::open(handle) }
    }

    /// # Safety
    ///
    /// `kcov_remote_start` must be valid in the caller's context, as `start` or
    /// `start_in_softirq` require.
    unsafe fn open(handle: Handle) -> Self {
        #[cfg(CONFIG_KCOV)]
        if handle.id != 0 {
            // SAFETY: A common handle (subsystem 0), which `kcov_check_handle` accepts, in a
            // context the caller vouches for.
            unsafe { ffi::kcov_remote_start(handle.id) };
            // INVARIANT: Started above, in this context, under the function's requirements.
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

    /// Ends the section, if open: what runs from here on is not recorded. A task section ends
    /// outside any lock: the end may free the collector's buffer (`vfree`), which can sleep.
    pub(crate) fn end(&mut self) {
        #[cfg(CONFIG_KCOV)]
        if self.open {
            self.open = false;
            // SAFETY: By the type invariant, this context called `kcov_remote_start` under the
            // conditions in which a section either started and is still open, or did not start,
            // in which case this returns at once: in a task, whose KCOV mode is then off; in a
            // softirq, whose `kcov_softirq` is then unset (the interrupted task's mode may be
            // on, and is left alone).
            unsafe { ffi::kcov_remote_stop() };
        }
    }

    /// Whether a section was opened and has not ended (never without KCOV).
    pub(crate) fn is_open(&self) -> bool {
        #[cfg(CONFIG_KCOV)]
        {
            self.open
        }
        #[cfg(not(CONFIG_KCOV))]
        {
            false
        }
    }
}

impl Drop for Section {
    fn drop(&mut self) {
        self.end();
    }
}
