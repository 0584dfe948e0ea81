// SPDX-License-Identifier: GPL-2.0

//! The only user of the eventfd C API: [`EventFd`] signals an eventfd, [`KickFd`] listens to
//! one's writes, [`ReadHook`] to its reads. A leaf: it calls only `compat` (for the wait-queue
//! lock), and delivers through the [`KickSink`] and [`ReadSink`] traits it defines.

use crate::compat;
use core::ptr::NonNull;
use kernel::{
    bindings,
    container_of,
    error::from_err_ptr,
    fs::file::LocalFile,
    prelude::*,
    sync::{
        aref::ARef,
        atomic::{
            Acquire,
            Atomic,
            Relaxed,
            Release, //
        },
        Arc,
    },
    types::Opaque, //
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
    /// Adds one to the eventfd's counter and wakes its readers, with [`ECHO`] in the wake-up
    /// key, so that a [`KickFd`] on the same eventfd knows the kick came from a channel (its
    /// thread, or its alarm).
    ///
    /// Must not be called from an eventfd wake-up callback (the C function warns on that). May
    /// be called from hard interrupt context, as VFIO's interrupt handlers do.
    pub(crate) fn signal(&self) {
        // SAFETY: `ctx` is valid by the type invariant.
        unsafe { bindings::eventfd_signal_mask(self.ctx.as_ptr(), ECHO as u32) };
    }

    /// Whether `other` is the same eventfd (each attach takes its own reference to it).
    pub(crate) fn same(&self, other: &EventFd) -> bool {
        self.ctx == other.ctx
    }
}

impl Drop for EventFd {
    fn drop(&mut self) {
        // SAFETY: By the type invariant we own one reference, which is released exactly once.
        unsafe { bindings::eventfd_ctx_put(self.ctx.as_ptr()) };
    }
}

/// Poll bits from `include/uapi/linux/eventpoll.h`.
const EPOLLIN: usize = 0x0001;
const EPOLLOUT: usize = 0x0004;
const EPOLLHUP: usize = 0x0010;
/// A wake-up key bit of our own, in the range that `eventpoll.h` and `poll.h` leave unused
/// (bits 16 to 26), the way io_uring tags its own eventfd wake-ups with `EPOLL_URING_WAKE`.
/// Other waiters only test the bits they asked for, so they ignore it. No interface tells a
/// channel's wake-up from another, so this is the one place that relies on the bit
/// being free: Kbuild refuses a kernel whose poll headers define it.
const ECHO: usize = 1 << 26;
const _: () = assert!(
    ECHO & (EPOLLIN | EPOLLOUT | EPOLLHUP) == 0
        && ECHO as u32 & (bindings::POLLRDHUP | bindings::POLLMSG | bindings::POLLREMOVE) == 0
);

/// A wait-queue entry's wake function, and the `poll_queue_proc` that links it.
type WakeFn =
    unsafe extern "C" fn(*mut bindings::wait_queue_entry, c_uint, c_int, *mut c_void) -> c_int;
type QueueFn = unsafe extern "C" fn(
    *mut bindings::file,
    *mut bindings::wait_queue_head,
    *mut bindings::poll_table_struct,
);

/// Initialises the entry `wait` with `wake`, unlinked (`private` null, self-linked), and the
/// poll table `pt` with `queue`, then calls the eventfd `file`'s `poll` with `pt`: `vfs_poll`,
/// an inline function that the bindings lack. An eventfd's `poll` calls `queue` once,
/// synchronously, with its wait queue (`eventfd_poll`'s one `poll_wait`), for `queue` to link
/// `wait` there (or decline). `wait` is initialised on return, so its owner's drop may read
/// `private`.
///
/// # Safety
///
/// - `wait` and `pt` must be the `wait` and `pt` fields of one pinned object, not yet shared
///   with C, which unlinks `wait` (if linked) before it goes.
/// - That object must hold its own reference to `file`'s eventfd context (whose wait queue
///   the entry is linked on) until it has unlinked `wait`.
/// - `file` must be an eventfd (`eventfd_ctx_fileget` succeeded on it), so that `poll` calls
///   `queue` once.
/// - `queue`'s requirements must hold for `pt` during the call, and `wake`'s for `wait` from
///   when it is linked until it is unlinked.
unsafe fn link(
    file: &LocalFile,
    wait: *mut bindings::wait_queue_entry,
    pt: *mut bindings::poll_table_struct,
    wake: WakeFn,
    queue: QueueFn,
) {
    // SAFETY: By the safety requirements, plain writes to `wait` and `pt` are fine, and `file`
    // is a valid eventfd: its `f_op` is `eventfd_fops` (which `eventfd_ctx_fileget` checked),
    // whose `poll` is set (`fs/eventfd.c`: `eventfd_poll`) and calls `queue` once, with `pt`,
    // whose requirements hold; `wake` may run once `queue` has linked `wait`, and its
    // requirements hold from then on.
    unsafe {
        wait.write(bindings::wait_queue_entry {
            flags: 0,
            private: core::ptr::null_mut(),
            func: Some(wake),
            entry: bindings::list_head {
                next: &raw mut (*wait).entry,
                prev: &raw mut (*wait).entry,
            },
        });
        pt.write(bindings::poll_table_struct {
            _qproc: Some(queue),
            _key: !0,
        });
        let poll = (*(*file.as_ptr()).f_op).poll.unwrap_unchecked();
        poll(file.as_ptr(), pt);
    }
}

/// Receives the kicks of a [`KickFd`]. Both methods may run in atomic context, under the
/// eventfd's wait-queue lock with interrupts off, also in hard interrupt context (a channel's
/// alarm signals from its hrtimer callback): they must not sleep or signal an eventfd, and
/// their work must be bounded.
pub(crate) trait KickSink: Send + Sync {
    /// `count` was written to the eventfd (its counter is already consumed); `echo` tells
    /// whether the write was a channel's [`EventFd::signal`].
    fn kicked(&self, count: u64, echo: bool);
    /// User space closed the eventfd; no more kicks will come. The owner should drop the
    /// [`KickFd`] soon, from process context. Only an armed hook reports it.
    fn hangup(&self);
}

/// An eventfd whose writes become kicks, with no syscall into the driver: a wait-queue entry
/// with its own wake function on the eventfd's wait queue, as KVM's irqfd does.
///
/// The wake function consumes the eventfd counter under the wait-queue lock, so a write of N
/// is delivered as exactly N kicks, once. Eventfds in `EFD_SEMAPHORE` mode are refused: they
/// give up their count one at a time, so taking a count of up to 2^64 - 2 at once under that
/// lock (interrupts off) is impossible.
///
/// The entry is linked as the wait queue's one exclusive priority waiter
/// (`add_wait_queue_priority_exclusive`), as KVM links an irqfd: so it is the first entry a
/// wake-up meets, and an eventfd that already has such a waiter (another kick hook, of any
/// channel, or a KVM, Xen or MSHV irqfd) is refused with `EBUSY`. Two consumers of one counter
/// would each drain it, and only the first met would ever fire. The wake function returns 0,
/// so the eventfd's other waiters are still woken.
///
/// A hook is linked disarmed: it takes no count and reports no hang-up until [`KickFd::arm`],
/// so that a call that fails after linking takes nothing.
///
/// # Invariants
///
/// - `wait` is initialised with `wake::<S>` and, once `new` returns, linked on the wait queue
///   of `ctx`, which its `private` field points to, until `drop` removes it (also after a
///   hang-up, as KVM's irqfd does).
/// - While linked, `wake::<S>` may run at any time; it only touches `ctx`, `sink`, `armed`,
///   `hung_up` and the entry itself, all valid for the lifetime of `self`.
/// - `armed` is only written under the lock of that wait queue.
#[pin_data(PinnedDrop)]
pub(crate) struct KickFd<S: KickSink> {
    #[pin]
    wait: Opaque<bindings::wait_queue_entry>,
    #[pin]
    pt: Opaque<bindings::poll_table_struct>,
    ctx: EventFd,
    sink: S,
    /// The wake function takes counts and reports a hang-up only once this is set.
    armed: Atomic<bool>,
    /// Set by `queue::<S>` when the eventfd had an exclusive priority waiter already.
    busy: Atomic<bool>,
    hung_up: Atomic<bool>,
}

// SAFETY: Once `new` returns, the raw C entry is only written under the eventfd's wait-queue
// lock (its `private` field, read without it, is never written after `new`), and `S` is
// `Send`.
unsafe impl<S: KickSink> Send for KickFd<S> {}

// SAFETY: `&self` methods read atomics, take the wait-queue lock to change the entry's state or
// the eventfd's count, and call `S`'s methods, which are `Sync`.
unsafe impl<S: KickSink> Sync for KickFd<S> {}

/// Whether the eventfd `file` may be in `EFD_SEMAPHORE` mode, read from its fdinfo text
/// (`eventfd-semaphore: 0` or `1`): the flag lives in the private `struct eventfd_ctx`, and
/// fdinfo is the only interface that shows it (7.2 and 7.3 alike). The mode is fixed when the
/// eventfd is created. Only a text that says `0` tells it is not: Kbuild checks that
/// `fs/eventfd.c` still prints that key, and where it cannot (a tree without sources), a text
/// without it (or no fdinfo, without `CONFIG_PROC_FS`) refuses every kick eventfd with
/// `EOPNOTSUPP`, which the VM tests show loudly, rather than lose kicks.
fn is_semaphore(file: &LocalFile) -> bool {
    const NOT: &[u8] = b"eventfd-semaphore: 0";
    let mut buf = [0u8; 128];
    // SAFETY: All-zero gives null pointers and empty counters; the `struct mutex` in it is left
    // uninitialised, which is fine because `seq_printf`, the only user of `m`, never takes it.
    let mut m: bindings::seq_file = unsafe { core::mem::zeroed() };
    m.buf = buf.as_mut_ptr().cast();
    m.size = buf.len();
    // SAFETY: `file` is a valid eventfd (the caller got its context). Its `show_fdinfo` only
    // takes the eventfd's lock and prints into `m`, which writes at most `m.size` bytes to
    // `buf` (`seq_printf`), both alive for the call.
    unsafe {
        if let Some(show) = (*(*file.as_ptr()).f_op).show_fdinfo {
            show(&mut m, file.as_ptr());
        }
    }
    // The whole buffer: past what was printed, zeros.
    !buf.windows(NOT.len()).any(|w| w == NOT)
}

impl EventFd {
    /// Takes a reference to the eventfd open as `fd` in the current process, with its file.
    ///
    /// Fails with `EBADF` if `fd` is not open and `EINVAL` if it is not an eventfd.
    fn with_file(fd: i32) -> Result<(Self, ARef<LocalFile>)> {
        let file = LocalFile::fget(u32::try_from(fd).map_err(|_| EBADF)?)?;
        Ok((Self::from_file(&file)?, file))
    }

    /// Takes a reference to the eventfd that `file` is; `EINVAL` if it is not one.
    fn from_file(file: &LocalFile) -> Result<Self> {
        // SAFETY: `file` is a valid file, kept alive by the caller's reference.
        let ctx = from_err_ptr(unsafe { bindings::eventfd_ctx_fileget(file.as_ptr()) })?;
        // INVARIANT: `eventfd_ctx_fileget` returned a new reference, now owned by `Self`.
        Ok(Self {
            // SAFETY: `eventfd_ctx_fileget` returns a context or an `ERR_PTR`, never NULL
            // (`fs/eventfd.c`).
            ctx: unsafe { NonNull::new_unchecked(ctx) },
        })
    }
}

/// An eventfd open in the current process, looked up once: its context, to share, and its file.
///
/// # Invariants
///
/// `file` is the eventfd whose context `efd` holds a reference to.
pub(crate) struct OpenEventFd {
    efd: Arc<EventFd>,
    file: ARef<LocalFile>,
}

impl OpenEventFd {
    /// Looks up `fd`: `EBADF` if it is not open, `EINVAL` if it is not an eventfd.
    pub(crate) fn new(fd: i32) -> Result<Self> {
        let (efd, file) = EventFd::with_file(fd)?;
        // INVARIANT: `with_file` took `efd` from `file`.
        Ok(Self {
            efd: Arc::new(efd, GFP_KERNEL_ACCOUNT)?,
            file,
        })
    }

    /// Its context.
    pub(crate) fn efd(&self) -> Arc<EventFd> {
        self.efd.clone()
    }
}

/// Takes a reference to the eventfd open as `fd`, with its file, if it can be a kick eventfd.
fn kick_eventfd(fd: i32) -> Result<(EventFd, ARef<LocalFile>)> {
    let (ctx, file) = EventFd::with_file(fd)?;
    if is_semaphore(&file) {
        return Err(compat::eopnotsupp());
    }
    Ok((ctx, file))
}

impl<S: KickSink> KickFd<S> {
    /// Links a disarmed hook on the eventfd open as `fd` in the current process, for `sink`.
    ///
    /// Fails with `EBADF` if `fd` is not open, `EINVAL` if it is not an eventfd, `EOPNOTSUPP`
    /// if it is in semaphore mode and `EBUSY` if it is hooked already (by a kick hook or a
    /// KVM irqfd), unless `hooked_here` says that eventfd is hooked where this one would go:
    /// then it returns `None`. Nothing is taken from the eventfd until [`KickFd::arm`].
    pub(crate) fn new(
        fd: i32,
        sink: S,
        hooked_here: impl FnOnce(&EventFd) -> bool,
    ) -> Result<Option<Pin<KBox<Self>>>> {
        let (ctx, file) = kick_eventfd(fd)?;
        let this = KBox::pin_init(
            pin_init!(Self {
                wait: Opaque::uninit(),
                pt: Opaque::uninit(),
                ctx,
                sink,
                armed: Atomic::new(false),
                busy: Atomic::new(false),
                hung_up: Atomic::new(false),
            }),
            GFP_KERNEL_ACCOUNT,
        )?;
        // SAFETY: `wait` and `pt` are pinned fields of `this`, not yet shared with C, which
        // holds `ctx` (from `file`, by `eventfd_ctx_fileget` in `kick_eventfd`: an eventfd)
        // until its drop has unlinked `wait`. `queue::<S>` and `wake::<S>` need a `KickFd<S>`
        // around `pt` and `wait`; `queue::<S>` links `wait` unless the queue has a priority
        // waiter.
        unsafe { link(&file, this.wait.get(), this.pt.get(), wake::<S>, queue::<S>) };
        if this.busy.load(Relaxed) {
            // Looked at through the same reference, so that a `dup2` over `fd` meanwhile
            // cannot turn the answer into another eventfd's.
            return match hooked_here(&this.ctx) {
                true => Ok(None),
                false => Err(EBUSY),
            };
        }
        // Linked: `queue::<S>` ran (an eventfd's `poll` always offers its wait queue) and did
        // not find the queue busy.
        Ok(Some(this))
    }

    /// The wait queue the entry is linked on, if it is: always, once `new` returned the hook.
    fn queue_head(&self) -> Option<NonNull<bindings::wait_queue_head>> {
        // SAFETY: `wait` is initialised (by `link`, in `new`), and `private` is written only
        // there: null by `link`, the queue by `queue::<S>`.
        NonNull::new(unsafe { (*self.wait.get()).private.cast() })
    }

    /// Arms the hook: from now on every write is delivered, and the count already in the
    /// eventfd is delivered at once. Call it from process context, with interrupts on.
    pub(crate) fn arm(&self) {
        // SAFETY: As in `queue_head`.
        let wqh: *mut bindings::wait_queue_head = unsafe { (*self.wait.get()).private.cast() };
        let mut count = 0u64;
        // SAFETY: `wqh` is the eventfd's wait queue, by the type invariant (only a hook that
        // `new` returned can be armed: it is linked), valid while we hold `ctx`. Its lock is
        // taken with interrupts off, as every user of that lock does; we are in process
        // context with interrupts on, as `c_lock_irq` requires.
        unsafe {
            let lock = &raw mut (*wqh).lock;
            compat::c_lock_irq(lock);
            // INVARIANT: Written under the queue's lock.
            self.armed.store(true, Relaxed);
            // Take the count that was there before, under the same lock as the wake function,
            // so that each unit is taken exactly once, by one of the two.
            //
            // Writers that wait for room in the counter are not woken, as the wake function
            // and KVM's irqfd do not wake them either: `eventfd_read` does so with the task
            // marked as in an eventfd wake-up (`current->in_eventfd`), which nothing here can
            // set, and without the mark 7.2's AIO poll completes inline from that wake-up and
            // signals its result eventfd, which may be this one, whose lock we hold. (A writer
            // waits only if its write would take the counter to 2^64 - 1, and its wait is
            // interruptible; once armed, the hook keeps the counter at 0.)
            bindings::eventfd_ctx_do_read(self.ctx.ctx.as_ptr(), &mut count);
            compat::c_unlock_irq(lock);
        }
        if count != 0 {
            self.sink.kicked(count, false);
        }
    }

    /// Whether user space closed the eventfd.
    pub(crate) fn hung_up(&self) -> bool {
        self.hung_up.load(Acquire)
    }

    /// Whether this hooks the eventfd `efd` (the same `struct eventfd_ctx`).
    pub(crate) fn hooks(&self, efd: &EventFd) -> bool {
        self.ctx.ctx == efd.ctx
    }
}

/// `poll_queue_proc`: links the entry on the eventfd's wait queue as its exclusive priority
/// waiter, or notes that the queue has one already.
///
/// # Safety
///
/// `pt` must be the `pt` field of a pinned `KickFd<S>`, and `wqh` a valid wait queue head.
unsafe extern "C" fn queue<S: KickSink>(
    _file: *mut bindings::file,
    wqh: *mut bindings::wait_queue_head,
    pt: *mut bindings::poll_table_struct,
) {
    // SAFETY: By the safety requirement `pt` lives in a `KickFd<S>`; `Opaque` is transparent.
    let this = unsafe { &*container_of!(pt.cast::<Opaque<_>>(), KickFd<S>, pt) };
    let wait = this.wait.get();
    // SAFETY: `this` is pinned and its entry initialised; `wqh` is valid by the safety
    // requirement. On success the entry is linked, and `private` records the queue for `new`.
    unsafe {
        if bindings::add_wait_queue_priority_exclusive(wqh, wait) == 0 {
            (*wait).private = wqh.cast();
        } else {
            this.busy.store(true, Relaxed);
        }
    }
}

/// `wait_queue_func_t`: runs for every wake-up of the eventfd, under its wait-queue lock.
///
/// # Safety
///
/// `wait` must be the `wait` field of a live `KickFd<S>`, and the caller must hold the lock of
/// the wait queue it is linked on.
unsafe extern "C" fn wake<S: KickSink>(
    wait: *mut bindings::wait_queue_entry,
    _mode: c_uint,
    _sync: c_int,
    key: *mut c_void,
) -> c_int {
    // SAFETY: By the safety requirement `wait` lives in a `KickFd<S>`.
    let this = unsafe { &*container_of!(wait.cast::<Opaque<_>>(), KickFd<S>, wait) };
    let mask = key as usize;
    // A disarmed hook leaves the count to `arm`, and a hang-up to its owner.
    let armed = this.armed.load(Relaxed);
    if mask & EPOLLIN != 0 && armed {
        let mut count = 0u64;
        // SAFETY: `ctx` is valid and its wait-queue lock is held by our caller.
        unsafe { bindings::eventfd_ctx_do_read(this.ctx.ctx.as_ptr(), &mut count) };
        if count != 0 {
            this.sink.kicked(count, mask & ECHO != 0);
        }
    }
    // The entry stays linked: `drop` removes it under the lock, as KVM's irqfd shutdown does.
    // The context cannot go away meanwhile, since `ctx` holds a reference to it. A disarmed
    // hook notes the hang-up, for its owner to see after arming it, but does not report it: a
    // call that fails must change nothing.
    if mask & EPOLLHUP != 0 && !this.hung_up.xchg(true, Release) && armed {
        this.sink.hangup();
    }
    // Not 1: the eventfd's other waiters (readers, pollers) are woken too.
    0
}

#[pinned_drop]
impl<S: KickSink> PinnedDrop for KickFd<S> {
    fn drop(self: Pin<&mut Self>) {
        let Some(wqh) = self.queue_head() else {
            return;
        };
        // SAFETY: `wait` is linked on `wqh`, the eventfd's wait queue, valid while we hold
        // `ctx`. This takes the queue's lock, so once it returns no `wake::<S>` is running or
        // can start, and `ctx` is released only afterwards, when the fields drop. Unlike
        // `eventfd_ctx_remove_wait_queue`, it leaves the count alone: an armed hook's wake
        // function took every write already, and a disarmed one's count belongs to the
        // eventfd's reader.
        unsafe { bindings::remove_wait_queue(wqh.as_ptr(), self.wait.get()) };
    }
}

/// Told of reads of an eventfd by a [`ReadHook`]. Runs in atomic context, under the eventfd's
/// wait-queue lock with interrupts off, in the reading task: it must not sleep or signal an
/// eventfd, and its work must be bounded.
pub(crate) trait ReadSink: Send + Sync {
    /// Someone read the eventfd's counter (it was not zero).
    fn consumed(&self);
}

/// A wait-queue entry on an eventfd that sees its reads: `eventfd_read` wakes the queue with
/// `EPOLLOUT` once it has taken the count, in the reader's context (`fs/eventfd.c`). An
/// ordinary entry (not exclusive, not a priority waiter), so any number of hooks and waiters
/// share the eventfd, and every wake-up of the queue reaches it; it takes nothing from the
/// eventfd.
///
/// # Invariants
///
/// - `wait` is initialised with `read_wake::<S>` and, once `new` returns, linked on the wait
///   queue of `ctx`, which its `private` field points to, until `drop` removes it.
/// - While linked, `read_wake::<S>` may run at any time; it only touches `sink` and the entry,
///   valid for the lifetime of `self`.
#[pin_data(PinnedDrop)]
pub(crate) struct ReadHook<S: ReadSink> {
    #[pin]
    wait: Opaque<bindings::wait_queue_entry>,
    #[pin]
    pt: Opaque<bindings::poll_table_struct>,
    ctx: Arc<EventFd>,
    sink: S,
}

// SAFETY: Once `new` returns, the raw C entry is only written under the eventfd's wait-queue
// lock, and `S` is `Send`.
unsafe impl<S: ReadSink> Send for ReadHook<S> {}

// SAFETY: No `&self` method changes anything; `S`'s methods are `Sync`.
unsafe impl<S: ReadSink> Sync for ReadHook<S> {}

impl<S: ReadSink> ReadHook<S> {
    /// Links a hook for `sink` on the eventfd `open`.
    pub(crate) fn new(open: &OpenEventFd, sink: S) -> Result<Pin<KBox<Self>>> {
        let this = KBox::pin_init(
            pin_init!(Self {
                wait: Opaque::uninit(),
                pt: Opaque::uninit(),
                ctx: open.efd(),
                sink,
            }),
            GFP_KERNEL_ACCOUNT,
        )?;
        // SAFETY: `wait` and `pt` are pinned fields of `this`, not yet shared with C, which
        // holds `ctx` (the context of the eventfd `open.file`, by `OpenEventFd`'s invariant)
        // until its drop has unlinked `wait`. `read_queue::<S>` and `read_wake::<S>` need a
        // `ReadHook<S>` around `pt` and `wait`; `read_queue::<S>` links `wait`.
        unsafe {
            link(
                &open.file,
                this.wait.get(),
                this.pt.get(),
                read_wake::<S>,
                read_queue::<S>,
            )
        };
        // INVARIANT: An eventfd's `poll` calls `read_queue::<S>` (`link`), which linked `wait`.
        Ok(this)
    }
}

/// `poll_queue_proc`: links a [`ReadHook`]'s entry on the eventfd's wait queue.
///
/// # Safety
///
/// `pt` must be the `pt` field of a pinned `ReadHook<S>`, and `wqh` a valid wait queue head.
unsafe extern "C" fn read_queue<S: ReadSink>(
    _file: *mut bindings::file,
    wqh: *mut bindings::wait_queue_head,
    pt: *mut bindings::poll_table_struct,
) {
    // SAFETY: By the safety requirement `pt` lives in a `ReadHook<S>`; `Opaque` is transparent.
    let this = unsafe { &*container_of!(pt.cast::<Opaque<_>>(), ReadHook<S>, pt) };
    let wait = this.wait.get();
    // SAFETY: `this` is pinned and its entry initialised; `wqh` is valid by the safety
    // requirement. `private` records the queue for `new` and `drop`.
    unsafe {
        (*wait).private = wqh.cast();
        bindings::add_wait_queue(wqh, wait);
    }
}

/// `wait_queue_func_t` of a [`ReadHook`]: runs for every wake-up of the eventfd, under its
/// wait-queue lock.
///
/// # Safety
///
/// `wait` must be the `wait` field of a live `ReadHook<S>`, and the caller must hold the lock
/// of the wait queue it is linked on.
unsafe extern "C" fn read_wake<S: ReadSink>(
    wait: *mut bindings::wait_queue_entry,
    _mode: c_uint,
    _sync: c_int,
    key: *mut c_void,
) -> c_int {
    // SAFETY: By the safety requirement `wait` lives in a `ReadHook<S>`.
    let this = unsafe { &*container_of!(wait.cast::<Opaque<_>>(), ReadHook<S>, wait) };
    if key as usize & EPOLLOUT != 0 {
        this.sink.consumed();
    }
    // The entry stays linked until `drop`, also after a hang-up; the other waiters are woken.
    0
}

#[pinned_drop]
impl<S: ReadSink> PinnedDrop for ReadHook<S> {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: `wait` is initialised and linked (by the type invariant), and `private` is
        // its queue, written by `read_queue::<S>`.
        let wqh: *mut bindings::wait_queue_head = unsafe { (*self.wait.get()).private.cast() };
        // SAFETY: `wait` is linked on `wqh`, the eventfd's wait queue, valid while we hold
        // `ctx`. This takes the queue's lock, so once it returns no `read_wake::<S>` is running
        // or can start; `ctx` is released only afterwards, when the fields drop.
        unsafe { bindings::remove_wait_queue(wqh, self.wait.get()) };
    }
}
