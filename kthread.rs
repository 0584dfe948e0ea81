// SPDX-License-Identifier: GPL-2.0

//! A kernel thread bound to shared data: the only user of the kthread C API. A leaf: it runs
//! what implements its [`ThreadWork`] trait and calls nothing of the module.

use core::{
    marker::PhantomData,
    ptr::NonNull, //
};
use kernel::{
    bindings,
    error::from_err_ptr,
    prelude::*,
    processor::cpu_relax,
    sync::Arc,
    time::{
        Delta,
        Instant,
        Monotonic, //
    }, //
};

extern "C" {
    // Exported by `kernel/sched/core.c` (KVM's halt polling uses it), but declared in
    // `linux/sched/stat.h`, which the 7.3 bindings do not include, and no Rust helper wraps it.
    fn single_task_running() -> bool;
}

/// The body of a [`KThread`].
pub(crate) trait ThreadWork: Send + Sync + 'static {
    /// Runs in the new thread. It must return soon after [`ThreadCtx::should_stop`] turns true,
    /// and must wait interruptibly, since `kthread_stop` wakes the thread with a notify signal.
    fn run(self: Pin<&Self>, ctx: &ThreadCtx);
}

/// Calls that are only valid from inside a [`KThread`]; only the trampoline creates one.
pub(crate) struct ThreadCtx {
    _not_send: PhantomData<*mut ()>,
}

impl ThreadCtx {
    /// Whether `kthread_stop` has been called on this thread.
    pub(crate) fn should_stop(&self) -> bool {
        // SAFETY: A `ThreadCtx` exists only on a thread created by `kthread_create_on_node`.
        unsafe { bindings::kthread_should_stop() }
    }

    /// Calls `schedule()` while runnable: the scheduler may give the CPU to another task
    /// first (unlike `cond_resched()`, which only does so when a reschedule is already due).
    pub(crate) fn yield_now(&self) {
        // SAFETY: The thread is `TASK_RUNNING` and holds no lock, so it may call `schedule()`;
        // it stays runnable and returns here.
        unsafe { bindings::schedule() };
    }

    /// Spins until `done()` holds and returns true; gives up and returns false once `budget`
    /// has passed, the thread is asked to stop, or another task could run on this CPU.
    /// Preemption stays enabled, so the scheduler can take the CPU back at any time.
    pub(crate) fn busy_poll(&self, budget: Delta, done: impl Fn() -> bool) -> bool {
        let start = Instant::<Monotonic>::now();
        loop {
            if done() {
                return true;
            }
            // SAFETY: `single_task_running` only reads the length of this CPU's run queue; if
            // the thread migrates meanwhile, the answer is merely stale, which is harmless here.
            let alone = unsafe { single_task_running() };
            if !alone || self.should_stop() || start.elapsed() >= budget {
                return false;
            }
            cpu_relax();
        }
    }
}

/// A running kernel thread that executes `T::run` on data it shares with its owner.
///
/// The thread may never run at all if it is stopped before it is first scheduled, so the data
/// is owned here and only borrowed by the thread.
///
/// # Invariants
///
/// `task` is a kernel thread created by `kthread_create_on_node` with `trampoline::<T>` and a
/// pointer to the contents of `data`; this object owns one reference to its `task_struct` and
/// has not stopped it yet.
pub(crate) struct KThread<T: ThreadWork> {
    task: NonNull<bindings::task_struct>,
    /// Kept alive here, since the thread only borrows it.
    _data: Arc<T>,
}

// SAFETY: The thread may be stopped from any thread, and `T: Send + Sync`.
unsafe impl<T: ThreadWork> Send for KThread<T> {}

// SAFETY: The `&self` methods only read the immutable pid and share `&T`, and `T: Sync`.
unsafe impl<T: ThreadWork> Sync for KThread<T> {}

/// # Safety
///
/// `data` must point to a `T` in an `Arc` (so pinned) that stays valid until `kthread_stop` on
/// this thread returns.
unsafe extern "C" fn trampoline<T: ThreadWork>(data: *mut c_void) -> c_int {
    // SAFETY: By the function's safety requirement, `data` points to a valid `T` for as long as
    // the thread runs, and `T: Sync` allows sharing it. It is the contents of an `Arc`, which
    // never moves them: so it is pinned.
    let work = unsafe { Pin::new_unchecked(&*data.cast::<T>()) };
    work.run(&ThreadCtx {
        _not_send: PhantomData,
    });
    0
}

impl<T: ThreadWork> KThread<T> {
    /// Starts a thread named `evnotify/<id>` running `data.run()`.
    pub(crate) fn spawn(data: Arc<T>, id: u32) -> Result<Self> {
        let arg = Arc::as_ptr(&data).cast_mut().cast::<c_void>();
        // SAFETY: `trampoline::<T>` has the C signature; `arg` is the contents of the `Arc` `data`,
        // so pinned, and stays valid until `Drop` has
        // stopped the thread, because `data` is dropped only after that. The format string
        // consumes exactly one `unsigned int`.
        let task = unsafe {
            bindings::kthread_create_on_node(
                Some(trampoline::<T>),
                arg,
                bindings::NUMA_NO_NODE,
                c"evnotify/%u".as_char_ptr(),
                id,
            )
        };
        let task = NonNull::new(from_err_ptr(task)?).ok_or(ENOMEM)?;
        // SAFETY: The new thread has not been woken yet, so it cannot have exited and `task` is
        // valid.
        unsafe { bindings::get_task_struct(task.as_ptr()) };
        // SAFETY: `task` is valid, and we hold a reference to it.
        unsafe { bindings::wake_up_process(task.as_ptr()) };
        // INVARIANT: The thread was created with `trampoline::<T>` and `data`, and we took one
        // reference to its `task_struct` above.
        Ok(Self { task, _data: data })
    }

    /// The thread's pid, as seen from the calling task's pid namespace.
    pub(crate) fn pid(&self) -> i32 {
        // SAFETY: The type invariant keeps the `task_struct` alive; a null namespace means the
        // caller's, which is what user space must see.
        unsafe {
            bindings::__task_pid_nr_ns(
                self.task.as_ptr(),
                bindings::pid_type_PIDTYPE_PID,
                core::ptr::null_mut(),
            )
        }
    }
}

impl<T: ThreadWork> Drop for KThread<T> {
    fn drop(&mut self) {
        // SAFETY: By the type invariant the thread has not been stopped and we own one reference
        // to its `task_struct`; `kthread_stop_put` waits for the thread to exit, then drops it.
        unsafe { bindings::kthread_stop_put(self.task.as_ptr()) };
    }
}
