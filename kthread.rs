// SPDX-License-Identifier: GPL-2.0

//! A kernel thread bound to shared data, in the cgroups of the task that starts it: the only
//! user of the kthread and cgroup C APIs. It runs what implements its [`ThreadWork`] trait and
//! calls nothing of the module but the leaf `kcov` (the thread's start is recorded for the
//! starter's KCOV collector).

use crate::kcov;
use core::{
    marker::PhantomData,
    ptr::NonNull, //
};
use kernel::{
    bindings,
    error::{
        from_err_ptr,
        to_result, //
    },
    prelude::*,
    processor::cpu_relax,
    sync::{
        atomic::{
            Atomic,
            Relaxed, //
        },
        Arc,
        Completion, //
    },
    time::{
        Delta,
        Instant,
        Monotonic, //
    }, //
};
use pin_init::stack_pin_init;

extern "C" {
    // Exported by `kernel/sched/core.c` (KVM's halt polling uses it), but declared in
    // `linux/sched/stat.h`, which the 7.3 bindings do not include, and no Rust helper wraps it.
    fn single_task_running() -> bool;
}

/// Moves the calling thread into `owner`'s cgroups, in every hierarchy.
///
/// # Safety
///
/// `owner` must be a valid task for the duration of the call.
unsafe fn join_cgroups_of(owner: *mut bindings::task_struct) -> Result {
    #[cfg(CONFIG_CGROUPS)]
    {
        let this = kernel::current!().as_ptr();
        // The move takes global locks (`cgroup_threadgroup_rwsem` for writing, which waits out
        // forks and exits in flight): once per thread, never on a hot path. Whether the thread
        // is there already (a caller in the root cgroup, kthreadd's) cannot be asked first:
        // the bindings' `task_struct` does not match the kernel's layout, so its `cgroups` is
        // not read from Rust. (Nor can a shared worker be refused to callers of other cgroups.)
        // SAFETY: `owner` is valid (the function's safety requirement), and so is the calling
        // thread. It moves itself after `kthread()` has set its node affinity, as vhost's
        // workers do, so that a cpuset's CPU mask is not overwritten then (a later change of
        // the housekeeping CPUs resets the affinity of such kthreads, vhost's included). (Built with cgroups,
        // `kernel/cgroup/cgroup-v1.c` exports the function, for vhost; it acts on every
        // hierarchy, cgroup v2 included.)
        to_result(unsafe { bindings::cgroup_attach_task_all(owner, this) })
    }
    #[cfg(not(CONFIG_CGROUPS))]
    {
        let _ = owner;
        Ok(())
    }
}

/// The body of a [`KThread`].
pub(crate) trait ThreadWork: Send + Sync + 'static {
    /// Runs in the new thread. It must return soon after [`ThreadCtx::should_stop`] turns true,
    /// and must wait interruptibly, since `kthread_stop` wakes the thread with a notify signal.
    fn run(self: Pin<&Self>, ctx: &ThreadCtx);
}

/// How many times [`ThreadCtx::busy_poll`] looks between two checks of its budget, of other
/// tasks and of `kthread_stop` (calls into C and a clock read, which cost more than most looks;
/// the worker's look at its rings takes a mutex).
const LOOKS: u32 = 16;

/// Calls that are only valid from inside a [`KThread`]; only the trampoline creates one.
pub(crate) struct ThreadCtx {
    /// The spawner's KCOV common handle.
    cov: kcov::Handle,
    _not_send: PhantomData<*mut ()>,
}

impl ThreadCtx {
    /// The KCOV common handle of the task that started the thread, under which the thread
    /// records its own work (as it records its start).
    pub(crate) fn coverage(&self) -> kcov::Handle {
        self.cov
    }

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

    /// Whether this thread is the only runnable task of its CPU: a hint, stale if it migrates.
    pub(crate) fn alone(&self) -> bool {
        // SAFETY: `single_task_running` only reads the length of this CPU's run queue; if the
        // thread migrates meanwhile, the answer is merely stale, which is harmless here.
        unsafe { single_task_running() }
    }

    /// Spins until `done()` holds and returns true; gives up and returns false once `budget`
    /// has passed since `start` (the caller's clock read, which it usually has), the thread is
    /// asked to stop, or another task could run on this CPU.
    /// Preemption stays enabled, so the scheduler can take the CPU back at any time.
    pub(crate) fn busy_poll(
        &self,
        start: Instant<Monotonic>,
        budget: Delta,
        done: impl Fn() -> bool,
    ) -> bool {
        loop {
            // The other checks are calls into C, and read the clock: made once every few
            // looks, so that a spin sees what it waits for sooner.
            for _ in 0..LOOKS {
                if done() {
                    return true;
                }
                cpu_relax();
            }
            if !self.alone() || self.should_stop() || start.elapsed() >= budget {
                return false;
            }
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

/// Moves the calling thread into the cgroups of a task, valid for the duration of the call.
type Join = unsafe fn(*mut bindings::task_struct) -> Result;

/// What [`KThread::spawn`] hands its new thread, on the spawner's stack: valid until `done`.
#[pin_data]
struct Start<T> {
    /// The contents of the `Arc` the thread runs.
    work: *const T,
    /// The spawner, whose cgroups the thread joins; it waits on `done` meanwhile.
    owner: *mut bindings::task_struct,
    /// How it joins them: [`join_cgroups_of`], or a stand-in in tests.
    join: Join,
    /// The errno of joining them, 0 on success.
    result: Atomic<i32>,
    /// The spawner's KCOV common handle, under which the thread records its start.
    cov: kcov::Handle,
    #[pin]
    done: Completion,
}

/// # Safety
///
/// `arg` must point to a [`Start<T>`] that stays valid until its `done` is completed, whose
/// `owner` is valid until then, and whose `work` points to a `T` in an `Arc` (so pinned) that
/// stays valid until `kthread_stop` on this thread returns.
unsafe extern "C" fn trampoline<T: ThreadWork>(arg: *mut c_void) -> c_int {
    // SAFETY: By the function's safety requirement, `arg` is a valid `Start<T>` until `done`.
    let start = unsafe { &*arg.cast::<Start<T>>() };
    let (work, cov) = (start.work, start.cov);
    // SAFETY: A new kernel thread (its KCOV state reset by `kcov_task_init`), in task context,
    // holding no lock, in no section; the section is dropped before `run` and any return.
    let section = unsafe { kcov::Section::start(cov) };
    // SAFETY: `owner` is valid until `done` is completed, below.
    let joined = unsafe { (start.join)(start.owner) };
    start
        .result
        .store(joined.err().map_or(0, |e| e.to_errno()), Relaxed);
    start.done.complete_all();
    // `start` may be gone from here on.
    drop(section);
    if joined.is_err() {
        return 0;
    }
    // SAFETY: By the function's safety requirement, `work` points to a valid `T` for as long as
    // the thread runs, and `T: Sync` allows sharing it. It is the contents of an `Arc`, which
    // never moves them: so it is pinned.
    let work = unsafe { Pin::new_unchecked(&*work) };
    work.run(&ThreadCtx {
        cov,
        _not_send: PhantomData,
    });
    0
}

impl<T: ThreadWork> KThread<T> {
    /// Starts a thread named `evnotify/<id>` running `data.run()`, in the cgroups of the
    /// calling task (as vhost's kthread workers are), so that they are charged for its CPU
    /// time. Waits until the thread is there; fails with its errno if it cannot be moved.
    pub(crate) fn spawn(data: Arc<T>, id: u32) -> Result<Self> {
        Self::spawn_joining(data, id, join_cgroups_of)
    }

    /// [`KThread::spawn`], with `join` to move the thread into the caller's cgroups.
    fn spawn_joining(data: Arc<T>, id: u32, join: Join) -> Result<Self> {
        let (work, owner) = (Arc::as_ptr(&data), kernel::current!().as_ptr());
        stack_pin_init!(let start = pin_init!(Start::<T> {
            work,
            owner,
            join,
            result: Atomic::new(0),
            cov: kcov::Handle::current(),
            done <- Completion::new(),
        }));
        let arg = core::ptr::from_ref::<Start<T>>(&*start)
            .cast_mut()
            .cast::<c_void>();
        // SAFETY: `trampoline::<T>` has the C signature. `arg` is `start`, which stays valid until
        // its `done` is completed: once the thread exists we wait for that below, and if
        // creation fails, `kthread()` exits without calling `trampoline` (`kernel/kthread.c`:
        // `create->done` is taken back by the creator). So does its `owner`, the calling task.
        // Its `work` is the contents of the `Arc` `data`, so pinned, and stays valid until
        // `Drop` has stopped the thread, because `data` is dropped only after that. The format
        // string consumes exactly one `unsigned int`.
        let task = unsafe {
            bindings::kthread_create_on_node(
                Some(trampoline::<T>),
                arg,
                bindings::NUMA_NO_NODE,
                c"evnotify/%u".as_char_ptr(),
                id,
            )
        };
        // SAFETY: `kthread_create_on_node` returns a task or an `ERR_PTR`, never NULL
        // (`kernel/kthread.c`).
        let task = unsafe { NonNull::new_unchecked(from_err_ptr(task)?) };
        // SAFETY: The new thread has not been woken yet, so it cannot have exited and `task` is
        // valid.
        unsafe { bindings::get_task_struct(task.as_ptr()) };
        // SAFETY: `task` is valid, and we hold a reference to it.
        unsafe { bindings::wake_up_process(task.as_ptr()) };
        // INVARIANT: The thread was created with `trampoline::<T>` and `data`, and we took one
        // reference to its `task_struct` above.
        let thread = Self { task, _data: data };
        // Woken, and not asked to stop, the thread runs `trampoline`, which completes `done`.
        start.done.wait_for_completion();
        // On failure the thread has returned; dropping `thread` reaps it.
        to_result(start.result.load(Relaxed))?;
        Ok(thread)
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

#[kunit_tests(rust_evnotify_kthread)]
mod tests {
    use super::*;
    use kernel::time::delay::fsleep;

    /// Records whether it ran, then waits to be stopped.
    struct Probe {
        ran: Atomic<bool>,
    }

    impl ThreadWork for Probe {
        fn run(self: Pin<&Self>, ctx: &ThreadCtx) {
            self.ran.store(true, Relaxed);
            while !ctx.should_stop() {
                fsleep(Delta::from_millis(1));
            }
        }
    }

    /// # Safety
    ///
    /// None: it touches nothing.
    unsafe fn refuse(_: *mut bindings::task_struct) -> Result {
        Err(ENOSPC)
    }

    fn probe() -> Result<Arc<Probe>> {
        Ok(Arc::new(
            Probe {
                ran: Atomic::new(false),
            },
            GFP_KERNEL,
        )?)
    }

    /// A thread that cannot join its starter's cgroups never runs its work, and its errno is
    /// the spawn's; the next spawn works.
    #[test]
    fn spawn_fails_with_the_join_errno() -> Result {
        let p = probe()?;
        let r = KThread::spawn_joining(p.clone(), 0, refuse);
        assert_eq!(r.err().map(|e| e.to_errno()), Some(ENOSPC.to_errno()));
        // The failed thread has been reaped: it can no longer run anything.
        assert!(!p.ran.load(Relaxed));
        let p = probe()?;
        let t = KThread::spawn(p.clone(), 0)?;
        let mut waited = 0;
        while !p.ran.load(Relaxed) && waited < 10_000 {
            fsleep(Delta::from_millis(1));
            waited += 1;
        }
        assert!(p.ran.load(Relaxed));
        drop(t);
        Ok(())
    }
}
