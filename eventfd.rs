// SPDX-License-Identifier: GPL-2.0

//! A counted reference to an eventfd context: the only user of the eventfd C API.

use core::ptr::NonNull;
use kernel::{
    bindings,
    error::from_err_ptr,
    prelude::*, //
};

/// A reference to a `struct eventfd_ctx`, taken from a file descriptor of the caller.
///
/// The context stays valid after user space closes the descriptor; the close only wakes the
/// eventfd's waiters with `EPOLLHUP`.
///
/// # Invariants
///
/// `ctx` points to a valid `struct eventfd_ctx` and this object owns one reference to it.
pub(crate) struct EventFd {
    ctx: NonNull<bindings::eventfd_ctx>,
}

// SAFETY: An eventfd context is reference counted and its functions may be called from any
// thread, so the owned reference may move between threads.
unsafe impl Send for EventFd {}

// SAFETY: The only `&self` method, `signal`, takes the context's own spinlock.
unsafe impl Sync for EventFd {}

impl EventFd {
    /// Takes a reference to the eventfd open as `fd` in the current process.
    ///
    /// Fails with `EBADF` if `fd` is not open and `EINVAL` if it is not an eventfd.
    pub(crate) fn from_fd(fd: i32) -> Result<Self> {
        // SAFETY: `eventfd_ctx_fdget` accepts any integer and looks it up in the current task's
        // file table.
        let ctx = from_err_ptr(unsafe { bindings::eventfd_ctx_fdget(fd) })?;
        let ctx = NonNull::new(ctx).ok_or(EINVAL)?;
        // INVARIANT: On success `eventfd_ctx_fdget` returned a valid context with a new
        // reference, which `Self` now owns.
        Ok(Self { ctx })
    }

    /// Adds one to the eventfd's counter and wakes its readers.
    ///
    /// Must not be called from an eventfd wake-up callback (the C function warns on that).
    pub(crate) fn signal(&self) {
        // SAFETY: `ctx` is valid by the type invariant.
        unsafe { bindings::eventfd_signal_mask(self.ctx.as_ptr(), 0) };
    }
}

impl Drop for EventFd {
    fn drop(&mut self) {
        // SAFETY: By the type invariant we own one reference, which is released exactly once.
        unsafe { bindings::eventfd_ctx_put(self.ctx.as_ptr()) };
    }
}
