// SPDX-License-Identifier: GPL-2.0

//! What a worker serves: the part of a channel shared by its file, its worker, its kick
//! eventfds and its alarm. It owns the channel's lock, its counters, its alarm (whose policy
//! and callback are `alarm.rs`) and its kick eventfds, and implements [`Served`] for the
//! worker; the worker knows it only through that trait. Calls the slot state, the worker's run
//! queue and the leaf wrappers.

use crate::{
    alarm::AlarmMode,
    compat::{
        new_irq_safe_lock,
        IrqSafeLock, //
    },
    eventfd::{
        EventFd,
        KickFd,
        KickSink,
        ReadHook,
        ReadSink, //
    },
    kcov,
    kthread::ThreadCtx,
    ring::Ring,
    signal::{
        Process,
        Sent, //
        SigTarget,
    },
    slots::{
        Inner,
        Source,
        Work, //
    },
    uapi::{
        self,
        NR_SLOTS, //
    },
    worker::{
        IdleSpell,
        Runner,
        Served,
        Woke, //
    },
};
use kernel::{
    list::{
        AtomicTracker,
        ListLinks,
        TryNewListArc, // Named, unqualified, by `impl_list_arc_safe!`.
    },
    mm::virt::VmaNew,
    new_mutex,
    prelude::*,
    sync::{
        atomic::{
            Atomic,
            Relaxed, //
        },
        Arc,
        ArcBorrow,
        Mutex,
        SetOnce, //
    },
    time::{
        hrtimer::{
            ArcHrTimerHandle,
            HrTimer, //
        },
        Delta,
        Instant, //
    }, //
};

/// Most batches of a polling user that the worker takes in one turn of `serve` (see there)
/// before it goes back to its run queue.
const RUN: u32 = 16;

/// Why a spin for a channel's next kick ended (`Shared::poked`): an event of the channel's,
/// which counts the spin as catching it, as the worker's own spin counts its `event` flag...
const POKE_EVENT: u32 = 1;
/// ... a deadline, which does not (the thread sleeps until deadlines anyway)...
const POKE_DUE: u32 = 2;
/// ... or `close`.
const POKE_CLOSE: u32 = 4;

/// The kick eventfds of a channel, one per slot at most; allocated on the first one.
type KickFds = [Option<Pin<KBox<KickFd<SlotSink>>>>; NR_SLOTS];

/// Where a kick eventfd's writes go: kicks on one slot of a channel.
pub(crate) struct SlotSink {
    pub(crate) shared: Arc<Shared>,
    pub(crate) slot: usize,
}

impl KickSink for SlotSink {
    fn kicked(&self, count: u64, echo: bool) {
        let source = if echo { Source::Echo } else { Source::KickFd };
        Shared::update(self.shared.as_arc_borrow(), true, |inner| {
            inner.queue(self.slot, count, source)
        });
    }

    fn hangup(&self) {
        Shared::update(self.shared.as_arc_borrow(), true, |inner| {
            let was_idle = inner.idle();
            inner.hangup = true;
            was_idle
        });
    }
}

/// The read hooks of a channel's notify eventfds, one per slot at most; allocated on the first.
type ReadHooks = [Option<Pin<KBox<ReadHook<SlotReader>>>>; NR_SLOTS];

/// Who is told of reads of a slot's notify eventfd: the channel's alarm (`Shared::slot_read`),
/// for reads by the process that attached it (`owner`).
/// Others may hold the eventfd too; their reads are theirs, and run nothing of the channel's
/// but this comparison.
pub(crate) struct SlotReader {
    shared: Arc<Shared>,
    slot: usize,
    owner: Process,
}

impl SlotReader {
    /// For `slot` of `shared`, read by the calling process.
    pub(crate) fn new(shared: Arc<Shared>, slot: usize) -> Self {
        Self {
            shared,
            slot,
            owner: Process::current(),
        }
    }
}

impl ReadSink for SlotReader {
    fn consumed(&self) {
        // In the reading task's context: `eventfd_read` (also from io_uring, whose io-wq
        // workers are threads of the submitting process, and whose SQPOLL thread is one of
        // the ring creator's), or `eventfd_ctx_remove_wait_queue` in a workqueue (KVM and
        // others), whose kworker is nobody's.
        if self.owner.is_current() {
            self.shared.slot_read(self.slot);
        }
    }
}

/// Allocates a table of one entry per slot into `table`, unless it has one. The caller holds
/// the table's mutex, so that two first calls at once allocate one.
fn ensure_table<T>(table: &mut Option<KBox<[Option<T>; NR_SLOTS]>>) -> Result {
    if table.is_none() {
        *table = Some(KBox::new([const { None }; NR_SLOTS], GFP_KERNEL_ACCOUNT)?);
    }
    Ok(())
}

/// The counters of what the thread and the alarm did; see `struct evnotify_stats`.
pub(crate) struct Counters {
    pub(crate) notifies: Atomic<u64>,
    pub(crate) signals: Atomic<u64>,
    pub(crate) sig_refused: Atomic<u64>,
    pub(crate) dropped: Atomic<u64>,
    pub(crate) wakeups: Atomic<u64>,
    pub(crate) polled: Atomic<u64>,
}

/// The channel's alarm as started: [`Shared::set_alarm`] starts it, `close` clears it, and its
/// callback may re-arm it (when and how often is in `Inner::alarm`).
pub(crate) struct Alarm {
    /// The started timer; dropping the handle cancels it.
    pub(crate) handle: Option<ArcHrTimerHandle<Shared>>,
}

/// The part of a channel shared by the file, its worker and its kick eventfds.
#[pin_data]
pub(crate) struct Shared {
    /// Taken from kick eventfd wake-ups and the alarm, in atomic context: hence a spinlock
    /// with IRQs off. Taken before the worker's run queue.
    #[pin]
    pub(crate) inner: IrqSafeLock<Inner>,
    /// The run queue of the worker the channel uses, set once it has one.
    pub(crate) runner: SetOnce<Arc<Runner<Shared>>>,
    /// Why the spin for the channel's next kick (`Inner::spinning`) should end, if it should:
    /// [`POKE_EVENT`] (what `Shared::update` is told is an event: a kick, an echo through a
    /// kick eventfd, a hang-up, ring submissions, ticks a replaced timer owed), [`POKE_DUE`]
    /// (ticks or an echo the alarm queued, or its request for more re-arms) or [`POKE_CLOSE`].
    /// Written under `inner`; the spin reads `inner` then.
    poked: Atomic<u32>,
    /// The slots with a timer, and perhaps some whose timer ran out of ticks since: a superset
    /// of `Inner::timer_mask`, stored with it by `EVNOTIFY_IOC_TIMER`, so that a read of a slot
    /// with no timer takes no lock (`slot_read`, on every read of a notify eventfd).
    pub(crate) timed: Atomic<u64>,
    /// The channel's place in that run queue.
    #[pin]
    links: ListLinks,
    /// Whether the channel is in that run queue (or being taken off it).
    #[pin]
    queued: AtomicTracker,
    /// The busy-poll limit of the worker the channel will start, until it has one.
    pub(crate) busypoll_ns: Atomic<u32>,
    /// The kick eventfds and their protocol ([`Shared::hook`], [`Shared::reap_hung_up`]).
    /// Never taken from atomic context, nor with `inner` held; `hook` holds it while it arms
    /// a hook, which may take `inner` (the order is `kickfds`, then the eventfd's wait-queue
    /// lock, then `inner`).
    #[pin]
    kickfds: Mutex<Option<KBox<KickFds>>>,
    /// The read hooks of the slots' notify eventfds ([`Shared::attach`]). Never taken from
    /// atomic context; taken before `inner` (a hook's wake-up takes `inner` under the
    /// eventfd's wait-queue lock, so a hook is dropped with neither held).
    #[pin]
    readers: Mutex<Option<KBox<ReadHooks>>>,
    /// Serialises giving the channel its worker, so that it gets exactly one, and its extra
    /// state (`Channel::ensure_extra`).
    #[pin]
    pub(crate) start: Mutex<()>,
    /// Held by the worker while it serves the channel (its spins for the next kick included),
    /// so that `close` can wait for a batch in progress. Ordered before `armed`.
    #[pin]
    pub(crate) serving: Mutex<()>,
    /// The alarm's handle: held while the alarm is armed (`set_alarm`), by the worker after a
    /// batch and by `EVNOTIFY_IOC_TIMER` (from before it installs the timer), which therefore
    /// need not wait for a batch, nor for a spin; and by `close` to take the handle. Ordered
    /// after `serving`, before `inner`.
    #[pin]
    pub(crate) armed: Mutex<Alarm>,
    /// Fires at the channel's next deadline (a timer tick or an echo), with the precision of
    /// an hrtimer, as timerfd's does: delivers lone ticks itself, queues the channel on its
    /// worker for the rest.
    #[pin]
    pub(crate) alarm: HrTimer<Shared>,
    pub(crate) count: Counters,
    /// The KCOV common handle of the task that opened the channel: its thread records serving
    /// it there (see `kcov`).
    pub(crate) cov: kcov::Handle,
    /// The ring page, once user space mapped it ([`Shared::map_ring`]); the kernel's side of
    /// it is `Inner::ring`.
    pub(crate) ring: SetOnce<Ring>,
    /// Serialises giving the channel its ring and its worker's run queue (`runner`), so that
    /// the worker polls the ring whichever comes first. Held across no blocking call but an
    /// allocation; taken under `start` and under the caller's `mmap_lock`.
    #[pin]
    pub(crate) ring_lock: Mutex<()>,
}

kernel::impl_has_hr_timer! {
    impl HasHrTimer<Self> for Shared {
        mode: AlarmMode,
        field: self.alarm
    }
}

kernel::list::impl_list_arc_safe! {
    impl ListArcSafe<0> for Shared { tracked_by queued: AtomicTracker; }
}

kernel::list::impl_list_item! {
    impl ListItem<0> for Shared { using ListLinks { self.links }; }
}

impl Shared {
    /// A channel's shared state, with nothing attached or queued and no worker yet; its worker
    /// will start with a busy-poll limit of `busypoll_ns`.
    pub(crate) fn new(busypoll_ns: u32) -> impl PinInit<Self, Error> {
        try_pin_init!(Shared {
            inner <- new_irq_safe_lock!(Inner::new(), "Channel::inner"),
            runner: SetOnce::new(),
            poked: Atomic::new(0),
            timed: Atomic::new(0),
            links <- ListLinks::new(),
            queued <- AtomicTracker::new(),
            busypoll_ns: Atomic::new(busypoll_ns.min(uapi::MAX_BUSYPOLL_NS)),
            kickfds <- new_mutex!(None, "Channel::kickfds"),
            readers <- new_mutex!(None, "Channel::readers"),
            start <- new_mutex!((), "Channel::start"),
            serving <- new_mutex!((), "Channel::serving"),
            armed <- new_mutex!(Alarm { handle: None }, "Channel::armed"),
            alarm <- HrTimer::new(),
            count: Counters {
                notifies: Atomic::new(0),
                signals: Atomic::new(0),
                sig_refused: Atomic::new(0),
                dropped: Atomic::new(0),
                wakeups: Atomic::new(0),
                polled: Atomic::new(0),
            },
            cov: kcov::Handle::current(),
            ring: SetOnce::new(),
            ring_lock <- new_mutex!((), "Channel::ring_lock"),
        })
    }

    /// Changes `Inner` with `f` under the lock and, if `f` says so, queues the channel on its
    /// worker: `f` returns true when the channel went from idle to having work (or a deadline
    /// changed), as otherwise it is queued or being served already. `event` tells an event
    /// from a deadline (see `Runner::enqueue`).
    pub(crate) fn update(
        this: ArcBorrow<'_, Self>,
        event: bool,
        f: impl FnOnce(&mut Inner) -> bool,
    ) {
        let mut inner = this.inner.lock();
        let woke = f(&mut inner);
        Shared::updated(this, &inner, woke, event);
    }

    /// The end of `update`, out of line: one copy of the check for all of its callers.
    #[inline(never)]
    fn updated(this: ArcBorrow<'_, Self>, inner: &Inner, woke: bool, event: bool) {
        if woke && !inner.closed {
            Shared::wake_worker(this, inner, event);
        }
    }

    /// Has the worker serve the channel: tells it, if it spins in `serve` for the channel's
    /// next kick, else queues the channel (see `Runner::enqueue`). `inner` is `this`'s, locked,
    /// for an open channel that went from idle to having work (or whose deadlines changed).
    pub(crate) fn wake_worker(this: ArcBorrow<'_, Self>, inner: &Inner, event: bool) {
        if inner.spinning {
            let why = if event { POKE_EVENT } else { POKE_DUE };
            // Every writer holds `inner`: no update is lost between the two.
            this.poked.store(this.poked.load(Relaxed) | why, Relaxed);
        } else if let Some(runner) = this.runner.as_ref() {
            runner.enqueue(this, event);
        }
    }

    /// Stops the channel: nothing is queued, served or delivered for it once this returns.
    /// Waits for a batch in progress, not for the worker's other channels.
    pub(crate) fn close(&self) {
        self.unhook_all();
        let mut inner = self.inner.lock();
        inner.closed = true;
        inner.alarm.live = false;
        // A spin for the channel's next kick ends now, rather than at its window's end.
        if inner.spinning {
            self.poked.store(POKE_CLOSE, Relaxed);
        }
        drop(inner);
        // The worker checks `closed` holding `serving`: after this, it does not serve the
        // channel again, nor arm the alarm (`set_alarm` checks `closed` before it starts it).
        drop(self.serving.lock());
        // Cancelling the alarm breaks its reference to the channel.
        let handle = self.armed.lock().handle.take();
        drop(handle);
        if let Some(runner) = self.runner.as_ref() {
            runner.remove_ring(self);
            runner.dequeue(self);
        }
    }

    /// Maps the channel's ring into `vma`, creating it on the first `mmap`: made and mapped
    /// before anyone sees it, so that a failed `mmap` leaves no ring; polled by the worker
    /// from then on, if the channel has one (`Channel::join` adds it to a worker started
    /// later). Under `ring_lock`, not `start`: `mmap` holds the caller's `mmap_lock`, and
    /// `start` is held while a worker starts, which may wait for tasks that wait for it.
    pub(crate) fn map_ring(self: &Arc<Self>, vma: &VmaNew) -> Result {
        let reg = self.ring_lock.lock();
        if let Some(ring) = self.ring.as_ref() {
            drop(reg);
            return ring.map(vma);
        }
        let ring = Ring::new()?;
        ring.map(vma)?;
        if let Some(runner) = self.runner.as_ref() {
            runner.add_ring(self.clone())?;
        }
        // The alarm leaves the ticks it takes from now on to the thread (one taking ticks
        // now delivers them itself, without completions).
        self.inner.lock().ring.mapped = true;
        self.ring.populate(ring);
        Ok(())
    }

    /// Counts, once per turn (`woke` is then `Busy`), how the thread came to the channel's work:
    /// after the batch's signal, which it would delay, and before the batch retires, so that a
    /// reader of the stats who waits for the channel to go idle sees it.
    fn count_wakeup(&self, woke: &mut Woke) {
        match core::mem::replace(woke, Woke::Busy) {
            Woke::Slept => self.count.wakeups.add(1, Relaxed),
            Woke::Polled => self.count.polled.add(1, Relaxed),
            Woke::Busy => {}
        }
    }

    /// Delivers `kicks` kicks of `slot`: one eventfd signal and one process signal each (their
    /// completion is posted on the ring already, or counted lost, if the channel has one:
    /// `posted`). In
    /// process context only (the worker's thread, under `serving`, a mutex): a loop of up to a
    /// batch, and it may drop the last reference to a signal target. A delivery path that must
    /// run in a timer or wake-up callback needs bounded work and no sleeping lock.
    fn deliver(
        &self,
        slot: usize,
        efd: Option<&EventFd>,
        sig: Option<Arc<SigTarget>>,
        kicks: u64,
        posted: bool,
    ) {
        let mut signalled = 0;
        if let Some(sig) = sig {
            let mut refused = 0;
            let mut gone = false;
            for _ in 0..kicks {
                match sig.send() {
                    Sent::Delivered => signalled += 1,
                    Sent::Refused => refused += 1,
                    Sent::Gone => {
                        gone = true;
                        break;
                    }
                }
            }
            self.count.sig_refused.add(refused, Relaxed);
            if gone {
                // The process is gone: stop signalling it, and release it unless replaced.
                let mut inner = self.inner.lock();
                if let Some(x) = inner.extra_mut(slot) {
                    if x.sig.as_ref().is_some_and(|cur| Arc::ptr_eq(cur, &sig)) {
                        let gone = x.sig.take();
                        drop(inner);
                        drop(gone);
                    }
                }
            }
        }
        if let Some(efd) = efd {
            for _ in 0..kicks {
                efd.signal();
            }
            self.count.notifies.add(kicks, Relaxed);
        } else if !posted {
            self.count.dropped.add(kicks - signalled, Relaxed);
        }
        if signalled != 0 {
            self.count.signals.add(signalled, Relaxed);
        }
    }

    /// Allocates the table of kick eventfds, unless the channel has it.
    pub(crate) fn ensure_kickfds(&self) -> Result {
        ensure_table(&mut self.kickfds.lock())
    }

    /// Whether `efd` is the kick eventfd of `slot` already.
    pub(crate) fn hooked_at(&self, slot: usize, efd: &EventFd) -> bool {
        let fds = self.kickfds.lock();
        let found = fds
            .as_deref()
            .and_then(|t| t[slot].as_ref())
            .is_some_and(|k| k.hooks(efd));
        drop(fds);
        found
    }

    /// Makes `hook` (linked, disarmed) the kick eventfd of `slot`, replacing the one there, or
    /// unhooks it with `None`. Needs the table ([`Shared::ensure_kickfds`]) for a new hook.
    ///
    /// The hook is armed and stored under `kickfds`, so that a hang-up from then on is reaped
    /// only once it is stored (see [`Shared::reap_hung_up`]); a hang-up that came before, while
    /// it was disarmed, was not reported, so it is released here.
    pub(crate) fn hook(&self, slot: usize, hook: Option<Pin<KBox<KickFd<SlotSink>>>>) {
        let mut fds = self.kickfds.lock();
        // `gone` is a new hook that is not kept.
        let (old, gone) = match (fds.as_deref_mut(), hook) {
            // Nothing was ever hooked, so there is nothing to unhook (and `hook` is `None`).
            (None, hook) => (None, hook),
            (Some(table), None) => (table[slot].take(), None),
            (Some(table), Some(hook)) => {
                hook.arm();
                if hook.hung_up() {
                    // The descriptor was closed since `KickFd::new` let go of the file: the
                    // call took effect, then the close did.
                    (table[slot].take(), Some(hook))
                } else {
                    (table[slot].replace(hook), None)
                }
            }
        };
        drop(fds);
        // Unhooked after the guard; after this no write to it kicks the slot.
        drop(old);
        drop(gone);
    }

    /// How many slots have a kick eventfd that user space has not closed.
    pub(crate) fn kickfds_hooked(&self) -> u32 {
        let fds = self.kickfds.lock();
        fds.as_deref().map_or(0, |fds| {
            fds.iter().flatten().filter(|k| !k.hung_up()).count() as u32
        })
    }

    /// The kick eventfd of `slot`, for fdinfo, if it has one: "attached", or "closed" (by user
    /// space, and not yet released by the worker).
    pub(crate) fn kickfd_state(&self, slot: usize) -> Option<&'static str> {
        let fds = self.kickfds.lock();
        let k = fds.as_ref()?[slot].as_ref()?;
        Some(if k.hung_up() { "closed" } else { "attached" })
    }

    /// Unhooks every kick eventfd and read hook: each holds the shared state, so this breaks
    /// the cycle when the file is released; after it, no wake-up callback runs for the channel.
    fn unhook_all(&self) {
        let fds = self.kickfds.lock().take();
        drop(fds);
        let readers = self.readers.lock().take();
        drop(readers);
    }

    /// Makes `efd` the notify eventfd of `slot` (none: detaches), with `hook` on it. The
    /// previous eventfd and its hook are released after the locks; a batch the worker took
    /// already still goes to the old one.
    pub(crate) fn attach(
        &self,
        slot: usize,
        efd: Option<Arc<EventFd>>,
        hook: Option<Pin<KBox<ReadHook<SlotReader>>>>,
    ) {
        // Both replaced under `readers`, so that concurrent attaches leave one eventfd and
        // its own hook.
        let mut readers = self.readers.lock();
        let old = core::mem::replace(&mut self.inner.lock().slots[slot].efd, efd);
        // Without the table, `hook` is `None` (one is made only with it), as is `old`.
        let old_hook = match (readers.as_deref_mut(), hook) {
            (Some(table), hook) => core::mem::replace(&mut table[slot], hook),
            (None, hook) => hook,
        };
        drop(readers);
        drop(old_hook);
        // Released after the guard, as the last reference may free the context.
        drop(old);
    }

    /// Allocates the table of read hooks, unless the channel has it.
    pub(crate) fn ensure_readers(&self) -> Result {
        ensure_table(&mut self.readers.lock())
    }

    /// Releases the kick eventfds whose user space side was closed.
    fn reap_hung_up(&self) {
        let mut fds = self.kickfds.lock();
        for k in fds.iter_mut().flat_map(|fds| fds.iter_mut()) {
            drop(k.take_if(|k| k.hung_up()));
        }
    }
}

// SAFETY: A channel's links of ID 0 are used by the queue of the runner in `Shared::runner`
// only, which is set once (`SetOnce`) and never changes; `serve` re-enqueues on that runner, and
// `Shared::update`, `serve` and the alarm's callback enqueue under `inner` after checking
// `closed`.
unsafe impl Served for Shared {
    fn coverage(&self) -> kcov::Handle {
        self.cov
    }

    fn ring_submitted(&self) -> bool {
        self.ring.as_ref().is_some_and(Ring::submitted)
    }

    fn take_ring(this: ArcBorrow<'_, Self>) {
        if let Some(ring) = this.ring.as_ref().filter(|r| r.submitted()) {
            Shared::update(this, true, |inner| inner.take_submissions(ring));
        }
    }

    fn ring_wakeup(&self, on: bool) {
        if let Some(ring) = self.ring.as_ref() {
            ring.need_wakeup(on);
        }
    }

    /// Serves the channel once, for its worker `runner`: queues due ticks and echoes, then
    /// delivers one batch (of one slot) and puts the channel back at the end of the run queue
    /// if it has more; with nothing to deliver, waits up to `spin` for its next kick or ring
    /// submission (see `Served::serve`), else arms the alarm for the next deadline. `woke` is
    /// counted in `wakeups` or `polled` if there was work. Returns the idle spell its last
    /// spin began, unless that spin caught the channel's next batch alone, or an event that
    /// left it nothing to do yet.
    fn serve(
        self: Arc<Self>,
        runner: &Runner<Self>,
        ctx: &ThreadCtx,
        spin: Delta,
        woke: &mut Woke,
    ) -> Option<IdleSpell> {
        let serving = self.serving.lock();
        let mut inner = self.inner.lock();
        if inner.closed {
            return None;
        }
        if inner.has_deadlines() {
            inner.fire_timers(Instant::now(), false);
        }
        let mut ring = self.ring.as_ref();
        if let Some(ring) = ring {
            inner.take_submissions(ring);
        }
        let mut run = 0;
        let mut spell = None;
        // When the turn's first spin began: its spins together last at most the busy-poll
        // limit, so that the worker passes through the scheduler every `YIELD_EVERY` turns of
        // at most that much spinning.
        let mut began = None;
        // Not while another channel's ring needs polling.
        let spin = if ring.is_none() && runner.polls_rings() {
            Delta::ZERO
        } else {
            spin
        };
        while let Some(work) = inner.take_work() {
            // Posted when taken, before the eventfd is signalled: a reader woken by the
            // eventfd finds the completion.
            if let (Some(ring), Work::Kicks { slot, kicks, .. }) = (ring, &work) {
                inner.complete(ring, *slot, *kicks);
            }
            let kicks = match work {
                // Nothing to signal (a completion posted, or kicks only dropped): delivered
                // without letting go of the lock, which the batch would take again at once to
                // retire (docs/design.md, "The ring's round trip, counted"). `deliver` takes
                // the lock only for a signal target, which this batch has none of.
                Work::Kicks {
                    slot,
                    efd: None,
                    sig: None,
                    kicks,
                } => {
                    self.deliver(slot, None, None, kicks, ring.is_some());
                    self.count_wakeup(woke);
                    kicks
                }
                work => {
                    drop(inner);
                    let kicks = match work {
                        Work::Kicks {
                            slot,
                            efd,
                            sig,
                            kicks,
                        } => {
                            self.deliver(slot, efd.as_deref(), sig, kicks, ring.is_some());
                            kicks
                        }
                        Work::Reap => {
                            self.reap_hung_up();
                            0
                        }
                    };
                    self.count_wakeup(woke);
                    inner = self.inner.lock();
                    kicks
                }
            };
            inner.retire(kicks);
            if inner.closed {
                // `close` waits for `serving`, then takes the alarm's handle and dequeues the
                // channel: nothing to arm or queue.
                return None;
            }
            // What the ring's user submitted meanwhile is this channel's next batch.
            if let Some(ring) = ring {
                inner.take_submissions(ring);
            }
            if !inner.idle() {
                // More to do: after the other channels in the queue.
                runner.enqueue(self.as_arc_borrow(), true);
                return None;
            }
            // Out of work: a polling user kicks again soon, and taking that kick here costs
            // one lock, where the worker would queue the channel and turn through its loop to
            // serve it again (docs/design.md, "The polled round trip since shared workers").
            // At most `RUN` batches so, for the worker's checks between them (`kthread_stop`,
            // the yield); not with deadlines, which the thread fires when it serves the
            // channel anew.
            run += 1;
            if spin.is_zero() || run >= RUN || inner.has_deadlines() {
                break;
            }
            // From here, whoever gives the channel work tells the spin (`wake_worker`).
            inner.spinning = true;
            self.poked.store(0, Relaxed);
            drop(inner);
            // Only while no other channel waits: then what ends the spin is told apart as the
            // worker's own spin's end is (`Runner::quiet`).
            let quiet = runner.quiet();
            let since = Instant::now();
            let limit = Delta::from_nanos(runner.busypoll_ns.load(Relaxed).into());
            // A whole window, or none: a spin cut short would end an idle spell early.
            let spun = quiet && limit - (since - *began.get_or_insert(since)) >= spin;
            let mut caught = false;
            // The reasons the spin had when it ended (a later poke's work is still the
            // channel's, but did not end the spin).
            let mut ended = 0;
            if spun {
                // `serving` stays held: `close` pokes the spin before it waits for it, and
                // the timer's ioctl arms the alarm under `armed`.
                if let Some(ring) = ring {
                    // Awake: the user need not enter (the thread asks again before it sleeps).
                    ring.need_wakeup(false);
                }
                caught = ctx.busy_poll(since, spin, || {
                    self.poked.load(Relaxed) != 0
                        || ring.is_some_and(Ring::submitted)
                        || runner.others_waiting()
                });
                ended = self.poked.load(Relaxed);
            }
            inner = self.inner.lock();
            inner.spinning = false;
            if inner.closed {
                // Ended for nobody's work.
                return spun.then_some(IdleSpell {
                    since,
                    caught: false,
                    event: false,
                });
            }
            // A ring mapped meanwhile has the completions of the batches taken from now on (a
            // ring, once set, stays).
            if ring.is_none() {
                ring = self.ring.as_ref();
            }
            let taken = inner.sq_kicks();
            if let Some(ring) = ring {
                inner.take_submissions(ring);
            }
            // Whether the channel had an event of its own meanwhile (a kick, a submission that
            // gave kicks), rather than only a deadline (ticks or an echo the alarm queued, its
            // request for more re-arms): as the worker tells its `event` flag from its `due`
            // flag, for the window and the counts.
            let poke = if caught {
                ended
            } else {
                self.poked.load(Relaxed)
            };
            let event = inner.sq_kicks() != taken || poke & POKE_EVENT != 0;
            let own = !inner.idle();
            // Another channel that waits, and whether an event queued it (else a deadline).
            let others = runner.queued_by();
            // Whether a deadline ended the spin, as one ends the worker's own: the window closes.
            let due = !event && others != Some(true) && (poke & POKE_DUE != 0 || others.is_some());
            if !spun {
                // Another channel waits, or the turn has no whole window left to spin (no idle
                // spell began: the thread spins its own): work given meanwhile (to a spin that
                // never began) goes behind the others.
                if own {
                    runner.enqueue(self.as_arc_borrow(), event);
                    return None;
                }
                break;
            }
            if caught && !own && poke & POKE_EVENT != 0 && others.is_none() {
                // Poked by an event that left nothing to do yet (an echo that waits): as when
                // the worker's own spin catches such a channel and serves it for nothing, the
                // thread begins a new idle spell, and spins a new window.
                break;
            }
            spell = Some(IdleSpell {
                since,
                caught,
                event: !due,
            });
            if others.is_some() || !own || !caught || !event {
                // Ended by another channel, by the window (work just after it was not caught)
                // or the CPU wanted elsewhere, by a deadline, or with nothing to do for a while
                // (a request for re-arms): the thread goes on with this idle spell (its count
                // of wake-ups; without work, it sleeps).
                if own {
                    runner.enqueue(self.as_arc_borrow(), event);
                    return spell;
                }
                break;
            }
            spell = None;
            *woke = Woke::Polled;
        }
        drop(inner);
        self.set_alarm(&mut self.armed.lock(), true);
        drop(serving);
        spell
    }
}
