// SPDX-License-Identifier: GPL-2.0

//! A channel: notify slots, pending kicks, timers and the kernel thread that answers them.
//!
//! Data flows one way: an ioctl, a kick eventfd or a due timer queues kicks on a slot in
//! [`Inner`] and wakes the thread; the thread takes them in batches and delivers them (eventfd
//! signal, process signal) with no lock held.

use crate::{
    compat::{
        new_irq_safe_lock,
        IrqSafeLock, //
    },
    eventfd::{
        EventFd,
        KickFd,
        KickSink, //
    },
    signal::{
        Sent, //
        SigTarget,
    },
    timer::Timer,
    uapi::{
        self,
        NR_SLOTS, //
    },
    worker::{
        Runner,
        Woke,
        Worker, //
    },
};
use kernel::{
    list::{
        AtomicTracker,
        ListLinks,
        TryNewListArc, // Named, unqualified, by `impl_list_arc_safe!`.
    },
    new_mutex,
    prelude::*,
    seq_file::SeqFile,
    seq_print,
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
    task::Kuid,
    time::{
        hrtimer::{
            AbsoluteMode,
            ArcHrTimerHandle,
            HrTimer,
            HrTimerCallback,
            HrTimerCallbackContext,
            HrTimerPointer,
            HrTimerRestart, //
        },
        Delta,
        Instant,
        Monotonic, //
    }, //
};

/// Most kicks the thread answers for one slot before it re-checks the stop flag and the other
/// slots, so a huge burst can neither delay `close` nor starve the other slots.
const BATCH: u64 = 1024;

/// Most kicks and ticks one slot holds pending; more are coalesced (`uapi::MAX_PENDING`).
const MAX_PENDING: u64 = uapi::MAX_PENDING;

/// How long a kick caused by the channel's own notification (a feedback loop) waits.
const ECHO_DELAY: Delta = Delta::from_millis(1);

/// Least time between two expiries of a channel's alarm: deadlines closer than this (up to 64
/// slots' timers and echoes, out of phase) share one, later by at most this much. Bounds one
/// channel at 10,000 alarms a second; a lone timer of the 1 ms minimum period never waits for
/// it.
const ALARM_GAP: Delta = Delta::from_micros(100);

/// Channels open now, in all and per user (by euid at open).
struct Users {
    total: u32,
    per_user: KVec<(Kuid, u32)>,
}

kernel::sync::global_lock! {
    // SAFETY: Initialised by `Limits::new` in the module's `init`, before the device exists.
    unsafe(uninit) static USERS: Mutex<Users> = Users { total: 0, per_user: KVec::new() };
}

/// The channel limits' table, from module load to unload.
pub(crate) struct Limits;

impl Limits {
    /// Initialises the table.
    ///
    /// # Safety
    ///
    /// Must be called once, before any channel can be opened.
    pub(crate) unsafe fn new() -> Self {
        // SAFETY: By the safety requirement, this is the first and only initialisation, before
        // any use.
        unsafe { USERS.init() };
        Self
    }
}

impl Drop for Limits {
    fn drop(&mut self) {
        // A static is never dropped: free the table's buffer before the module goes.
        drop(core::mem::take(&mut USERS.lock().per_user));
    }
}

/// One of the channel places of a user, held by an open channel and given back on drop.
struct OpenSlot {
    uid: Kuid,
}

impl OpenSlot {
    /// Takes a place for the caller's euid, or fails with `EMFILE` (as inotify does past its
    /// instance limits) if `max` channels are open in all or `max_user` by that user. The lock
    /// is held for a short search and, for a user's first channel, a small `GFP_KERNEL`
    /// allocation (which may enter reclaim); never across thread creation or a channel's work.
    fn take(max: u32, max_user: u32) -> Result<Self> {
        let uid = Kuid::current_euid();
        let mut users = USERS.lock();
        if users.total >= max {
            return Err(EMFILE);
        }
        match users.per_user.iter_mut().find(|(u, _)| *u == uid) {
            Some((_, n)) if *n >= max_user => return Err(EMFILE),
            Some((_, n)) => *n += 1,
            None if max_user == 0 => return Err(EMFILE),
            None => users.per_user.push((uid, 1), GFP_KERNEL)?,
        }
        users.total += 1;
        Ok(Self { uid })
    }
}

impl Drop for OpenSlot {
    fn drop(&mut self) {
        let mut users = USERS.lock();
        users.total -= 1;
        if let Some(i) = users.per_user.iter().position(|(u, _)| *u == self.uid) {
            users.per_user[i].1 -= 1;
            if users.per_user[i].1 == 0 {
                let _ = users.per_user.remove(i);
            }
        }
    }
}

/// One notify slot: what every slot has.
struct Slot {
    /// The eventfd to signal, if one is attached. Shared so the thread can signal it unlocked.
    efd: Option<Arc<EventFd>>,
    /// Kicks and ticks accepted but not yet taken by the thread; at most [`MAX_PENDING`].
    pending: u64,
}

// What every channel pays per slot (README: Performance, bytes per channel).
const _: () = assert!(size_of::<Slot>() == 16);

/// What only slots with a signal, a timer or a kick eventfd need. A channel allocates these
/// for all its slots on its first such call, so that the many channels with none stay small.
struct Extra {
    /// The process to signal, if one asked.
    sig: Option<Arc<SigTarget>>,
    /// The slot's periodic timer, if running.
    timer: Option<Timer>,
    /// When the slot's waiting echo becomes due, if it has one (see `Inner::echo_mask`).
    echo_due: Option<Instant<Monotonic>>,
}

/// The [`Extra`]s of a channel's slots.
type Extras = [Extra; NR_SLOTS];

impl Extra {
    /// The extra state of all slots, empty.
    fn all() -> Result<KBox<Extras>> {
        const NONE: Extra = Extra {
            sig: None,
            timer: None,
            echo_due: None,
        };
        Ok(KBox::new([NONE; NR_SLOTS], GFP_KERNEL_ACCOUNT)?)
    }
}

/// The kick eventfds of a channel, one per slot at most; allocated on the first one.
type KickFds = [Option<Pin<KBox<KickFd<SlotSink>>>>; NR_SLOTS];

/// Where queued kicks come from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    /// `EVNOTIFY_IOC_KICK`.
    Ioctl,
    /// A write to a kick eventfd.
    KickFd,
    /// A kick eventfd signalled by a channel thread (this one or another): a feedback loop
    /// or a chain.
    Echo,
    /// A due timer.
    Timer,
}

/// The state guarded by [`Shared::inner`].
struct Inner {
    slots: [Slot; NR_SLOTS],
    /// Allocated by the first call that needs it (see [`Extra`]); never freed before the channel.
    extra: Option<KBox<Extras>>,
    /// Bit `n` is set if and only if `slots[n].pending != 0` and the slot's kicks are due now.
    pending_mask: u64,
    /// Bit `n` is set if and only if `slots[n].pending == 1` holds an echo that waits for
    /// `extra[n].echo_due`.
    echo_mask: u64,
    /// Bit `n` is set if and only if `extra[n].timer` is set.
    timer_mask: u64,
    /// Where the thread looks first, so that slots are served round-robin.
    cursor: usize,
    /// A kick eventfd was closed by user space and waits to be released by the thread.
    hangup: bool,
    /// The file was released: nothing is queued or served for the channel any more.
    closed: bool,
    /// Kicks the thread has taken and not yet finished delivering: still counted as pending.
    /// They are all of one slot, `in_flight_slot` (a channel has one batch out at a time).
    in_flight: u64,
    in_flight_slot: usize,
    /// The counters that the stats invariant ties together, changed only under the lock so
    /// that a reader sees them consistent. They wrap at 2^64, as the header says.
    kicks: u64,
    fd_kicks: u64,
    timer_ticks: u64,
    handled: u64,
    coalesced: u64,
}

/// A unit of work the thread took from [`Inner`].
enum Work {
    /// Deliver `kicks` kicks of `slot` to its eventfd and process, as attached then.
    Kicks {
        slot: usize,
        efd: Option<Arc<EventFd>>,
        sig: Option<Arc<SigTarget>>,
        kicks: u64,
    },
    /// Release the kick eventfds that user space closed.
    Reap,
}

/// Iterates over the set bits of `mask`.
fn bits(mut mask: u64) -> impl Iterator<Item = usize> {
    core::iter::from_fn(move || {
        let bit = mask.trailing_zeros() as usize;
        mask &= mask.wrapping_sub(1);
        (bit < 64).then_some(bit)
    })
}

impl Inner {
    /// A channel's state before anything is attached or queued.
    const fn new() -> Self {
        const EMPTY: Slot = Slot {
            efd: None,
            pending: 0,
        };
        Inner {
            slots: [EMPTY; NR_SLOTS],
            extra: None,
            pending_mask: 0,
            echo_mask: 0,
            timer_mask: 0,
            cursor: 0,
            hangup: false,
            closed: false,
            in_flight: 0,
            in_flight_slot: 0,
            kicks: 0,
            fd_kicks: 0,
            timer_ticks: 0,
            handled: 0,
            coalesced: 0,
        }
    }

    /// The extra state of `slot`, if the channel has allocated it.
    fn extra(&self, slot: usize) -> Option<&Extra> {
        self.extra.as_deref().map(|x| &x[slot])
    }

    /// The same, to change.
    fn extra_mut(&mut self, slot: usize) -> Option<&mut Extra> {
        self.extra.as_deref_mut().map(|x| &mut x[slot])
    }

    /// Whether the thread has nothing to do until woken or a deadline passes.
    fn idle(&self) -> bool {
        self.pending_mask == 0 && !self.hangup
    }

    /// Adds `count` kicks or ticks from `source` to `slot`, in O(1): what does not fit under
    /// [`MAX_PENDING`] (counting the slot's batch in flight) is coalesced, and an echo only waits if nothing else does. Returns
    /// whether the thread must be woken (the transition from idle: otherwise it is awake or
    /// already being woken).
    fn queue(&mut self, slot: usize, count: u64, source: Source) -> bool {
        let was_idle = self.idle();
        if source == Source::Timer {
            self.timer_ticks = self.timer_ticks.wrapping_add(count);
        } else {
            self.kicks = self.kicks.wrapping_add(count);
        }
        if matches!(source, Source::KickFd | Source::Echo) {
            self.fd_kicks = self.fd_kicks.wrapping_add(count);
        }
        let bit = 1u64 << slot;
        // The batch being delivered still counts against its slot's bound.
        let held = if slot == self.in_flight_slot {
            self.in_flight
        } else {
            0
        };
        let s = &mut self.slots[slot];
        // Saturating: a broken invariant must not panic here, in a wake-up callback.
        let room = MAX_PENDING.saturating_sub(held + s.pending);
        let mut take = count.min(room);
        if source == Source::Echo {
            take = take.min(u64::from(s.pending == 0));
        }
        self.coalesced = self.coalesced.wrapping_add(count - take);
        if take == 0 {
            return false;
        }
        s.pending += take;
        if source == Source::Echo {
            // A kick eventfd's slot has its extra state (`attach_kickfd` allocates it).
            if let Some(x) = self.extra_mut(slot) {
                x.echo_due = Some(Instant::now() + ECHO_DELAY);
                self.echo_mask |= bit;
                // Woken, if asleep, to sleep again until the echo is due.
                return was_idle;
            }
        }
        self.echo_mask &= !bit;
        self.pending_mask |= bit;
        was_idle
    }

    /// Queues the ticks of every timer due at `now`, and makes waiting echoes due once their
    /// time came. The caller reads the clock, so that tests of the arithmetic need not.
    fn fire_timers(&mut self, now: Instant<Monotonic>) {
        if self.timer_mask == 0 && self.echo_mask == 0 {
            return;
        }
        for slot in bits(self.echo_mask) {
            if self
                .extra(slot)
                .and_then(|x| x.echo_due)
                .is_some_and(|due| (now - due).as_nanos() >= 0)
            {
                self.echo_mask &= !(1 << slot);
                self.pending_mask |= 1 << slot;
            }
        }
        for slot in bits(self.timer_mask) {
            let Some(x) = self.extra_mut(slot) else {
                continue;
            };
            let Some(timer) = x.timer.as_mut() else {
                continue;
            };
            let (due, expired) = timer.take_due(now);
            if expired {
                x.timer = None;
                self.timer_mask &= !(1 << slot);
            }
            if due != 0 {
                self.queue(slot, due, Source::Timer);
            }
        }
    }

    /// Replaces (or, with `None`, cancels) the timer of `slot`. Ticks the old timer already
    /// owes are queued first: a late tick is delivered late, never skipped, even when the
    /// thread had not woken for it yet.
    /// A new timer needs the extra state: without it, only a cancel (which has nothing to do).
    fn replace_timer(&mut self, slot: usize, timer: Option<Timer>, now: Instant<Monotonic>) {
        self.fire_timers(now);
        self.timer_mask &= !(1 << slot);
        let running = u64::from(timer.is_some()) << slot;
        if let Some(x) = self.extra_mut(slot) {
            x.timer = timer;
            self.timer_mask |= running;
        }
    }

    /// When the earliest timer or echo is due, if any.
    fn next_deadline(&self) -> Option<Instant<Monotonic>> {
        let now = Instant::<Monotonic>::now();
        let echoes = bits(self.echo_mask).filter_map(|slot| self.extra(slot)?.echo_due);
        Iterator::chain(
            bits(self.timer_mask)
                .filter_map(|slot| self.extra(slot)?.timer.as_ref().map(Timer::deadline)),
            echoes,
        )
        .min_by_key(|d| (*d - now).as_nanos())
    }

    /// Takes the pending kicks of the next slot with work, with its targets: up to [`BATCH`],
    /// or all at once (in O(1)) if the slot has no target and they are only to be dropped.
    fn take_work(&mut self) -> Option<Work> {
        if core::mem::take(&mut self.hangup) {
            return Some(Work::Reap);
        }
        if self.pending_mask == 0 {
            return None;
        }
        let slot = (self
            .pending_mask
            .rotate_right(self.cursor as u32)
            .trailing_zeros() as usize
            + self.cursor)
            % NR_SLOTS;
        let sig = self.extra(slot).and_then(|x| x.sig.clone());
        let s = &mut self.slots[slot];
        let kicks = if s.efd.is_none() && sig.is_none() {
            s.pending
        } else {
            s.pending.min(BATCH)
        };
        s.pending -= kicks;
        if s.pending == 0 {
            self.pending_mask &= !(1 << slot);
        }
        self.cursor = (slot + 1) % NR_SLOTS;
        self.in_flight += kicks;
        self.in_flight_slot = slot;
        Some(Work::Kicks {
            slot,
            efd: s.efd.clone(),
            sig,
            kicks,
        })
    }

    /// Marks `kicks` taken kicks as delivered: they leave `pending` and enter `handled` at once.
    fn retire(&mut self, kicks: u64) {
        self.in_flight -= kicks;
        self.handled = self.handled.wrapping_add(kicks);
    }
}

/// Where a kick eventfd's writes go: kicks on one slot of a channel.
pub(crate) struct SlotSink {
    shared: Arc<Shared>,
    slot: usize,
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

/// The counters of what the thread did; see `struct evnotify_stats`.
struct Counters {
    notifies: Atomic<u64>,
    signals: Atomic<u64>,
    sig_refused: Atomic<u64>,
    dropped: Atomic<u64>,
    wakeups: Atomic<u64>,
    polled: Atomic<u64>,
}

/// The channel's alarm as its worker last set it. Only the worker sets it, and `close` clears it.
struct Alarm {
    /// The armed timer; dropping the handle cancels it.
    handle: Option<ArcHrTimerHandle<Shared>>,
    /// When it was armed to expire.
    at: Option<Instant<Monotonic>>,
    /// It is not armed to expire before this (see `ALARM_GAP`).
    floor: Instant<Monotonic>,
}

/// The part of a channel shared by the file, its worker and its kick eventfds.
#[pin_data]
pub(crate) struct Shared {
    /// Taken from kick eventfd wake-ups and the alarm, in atomic context: hence a spinlock
    /// with IRQs off. Taken before the worker's run queue.
    #[pin]
    inner: IrqSafeLock<Inner>,
    /// The run queue of the worker the channel uses, set once it has one.
    runner: SetOnce<Arc<Runner>>,
    /// The channel's place in that run queue.
    #[pin]
    links: ListLinks,
    /// Whether the channel is in that run queue (or being taken off it).
    #[pin]
    queued: AtomicTracker,
    /// The busy-poll limit of the worker the channel will start, until it has one.
    busypoll_ns: Atomic<u32>,
    /// Never taken from atomic context, nor with `inner` held; `attach_kickfd` holds it
    /// while it arms a hook, which may take `inner` (the order is `kickfds`, then the
    /// eventfd's wait-queue lock, then `inner`).
    #[pin]
    kickfds: Mutex<Option<KBox<KickFds>>>,
    /// Serialises giving the channel its worker, so that it gets exactly one.
    #[pin]
    start: Mutex<()>,
    /// Held by the worker while it serves the channel, so that `close` can wait for a batch
    /// in progress. Ordered before `inner`.
    #[pin]
    serving: Mutex<Alarm>,
    /// Queues the channel on its worker at its next deadline (a timer tick or an echo), with
    /// the precision of an hrtimer, as timerfd does.
    #[pin]
    alarm: HrTimer<Shared>,
    count: Counters,
}

kernel::impl_has_hr_timer! {
    impl HasHrTimer<Self> for Shared {
        mode: AbsoluteMode<Monotonic>,
        field: self.alarm
    }
}

kernel::list::impl_list_arc_safe! {
    impl ListArcSafe<0> for Shared { tracked_by queued: AtomicTracker; }
}

kernel::list::impl_list_item! {
    impl ListItem<0> for Shared { using ListLinks { self.links }; }
}

impl HrTimerCallback for Shared {
    type Pointer<'a> = Arc<Shared>;

    fn run(this: ArcBorrow<'_, Shared>, _ctx: HrTimerCallbackContext<'_, Self>) -> HrTimerRestart {
        // The worker finds the due work itself, and sets the next alarm.
        Shared::update(this, false, |_| true);
        HrTimerRestart::NoRestart
    }
}

impl Shared {
    /// Changes `Inner` with `f` under the lock and, if `f` says so, queues the channel on its
    /// worker: `f` returns true when the channel went from idle to having work (or a deadline
    /// changed), as otherwise it is queued or being served already. `event` tells an event
    /// from a deadline (see `Runner::enqueue`).
    fn update(this: ArcBorrow<'_, Self>, event: bool, f: impl FnOnce(&mut Inner) -> bool) {
        let mut inner = this.inner.lock();
        if f(&mut inner) && !inner.closed {
            if let Some(runner) = this.runner.as_ref() {
                runner.enqueue(this, event);
            }
        }
    }

    /// Serves the channel once, for its worker `runner`: queues due ticks and echoes, then
    /// delivers one batch (of one slot) and puts the channel back at the end of the run queue
    /// if it has more; with nothing to deliver, arms the alarm for the next deadline.
    /// `woke` is counted in `wakeups` or `polled` if there was work.
    pub(crate) fn serve(self: Arc<Self>, runner: &Runner, woke: &mut Woke) {
        let mut alarm = self.serving.lock();
        let mut inner = self.inner.lock();
        if inner.closed {
            return;
        }
        inner.fire_timers(Instant::now());
        let Some(work) = inner.take_work() else {
            let deadline = inner.next_deadline();
            drop(inner);
            self.set_alarm(&mut alarm, deadline);
            return;
        };
        drop(inner);
        match core::mem::replace(woke, Woke::Busy) {
            Woke::Slept => self.count.wakeups.add(1, Relaxed),
            Woke::Polled => self.count.polled.add(1, Relaxed),
            Woke::Busy => {}
        }
        let kicks = match work {
            Work::Kicks {
                slot,
                efd,
                sig,
                kicks,
            } => {
                self.deliver(slot, efd.as_deref(), sig, kicks);
                kicks
            }
            Work::Reap => {
                self.reap_hung_up();
                0
            }
        };
        let mut inner = self.inner.lock();
        inner.retire(kicks);
        if !inner.idle() {
            // More to do: after the other channels in the queue.
            runner.enqueue(self.as_arc_borrow(), true);
            return;
        }
        let deadline = inner.next_deadline();
        drop(inner);
        self.set_alarm(&mut alarm, deadline);
    }

    /// Arms the alarm for `deadline`, or cancels it with `None`. Alarms are spaced at least
    /// `ALARM_GAP` apart, counted from when the last one was due.
    fn set_alarm(self: &Arc<Self>, alarm: &mut Alarm, deadline: Option<Instant<Monotonic>>) {
        if let Some(at) = alarm.at {
            if (Instant::now() - at).as_nanos() >= 0 {
                // It expired (or is about to, and is served now anyway).
                alarm.floor = at + ALARM_GAP;
                alarm.at = None;
            }
        }
        let at = deadline.map(|d| {
            if (d - alarm.floor).as_nanos() < 0 {
                alarm.floor
            } else {
                d
            }
        });
        let unchanged = match (at, alarm.at) {
            (Some(a), Some(b)) => (a - b).is_zero(),
            _ => false,
        };
        if unchanged && alarm.handle.is_some() {
            return;
        }
        // Cancelling waits for a running callback, which takes `inner` and the run queue:
        // neither is held here.
        drop(alarm.handle.take());
        alarm.handle = at.map(|at| self.clone().start(at));
        alarm.at = at;
    }

    /// Stops the channel: nothing is queued, served or delivered for it once this returns.
    /// Waits for a batch in progress, not for the worker's other channels.
    fn close(&self) {
        self.inner.lock().closed = true;
        // The worker checks `closed` holding `serving`: after this, it does not serve the
        // channel again. Cancelling the alarm breaks its reference to the channel.
        let handle = self.serving.lock().handle.take();
        drop(handle);
        if let Some(runner) = self.runner.as_ref() {
            runner.dequeue(self);
        }
    }

    /// Delivers `kicks` kicks of `slot`: one eventfd signal and one process signal each.
    fn deliver(&self, slot: usize, efd: Option<&EventFd>, sig: Option<Arc<SigTarget>>, kicks: u64) {
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
        } else {
            self.count.dropped.add(kicks - signalled, Relaxed);
        }
        self.count.signals.add(signalled, Relaxed);
    }

    /// Releases the kick eventfds whose user space side was closed.
    fn reap_hung_up(&self) {
        let mut fds = self.kickfds.lock();
        for k in fds.iter_mut().flat_map(|fds| fds.iter_mut()) {
            if k.as_ref().is_some_and(|k| k.hung_up()) {
                *k = None;
            }
        }
    }
}

/// An open `/dev/evnotify`: its shared state and, once a call needs it, its worker.
pub(crate) struct Channel {
    shared: Arc<Shared>,
    /// Started (or shared) by the first call that queues work, not in `open`: `misc_open`
    /// holds the global `misc_mtx` across `open`, and creating a kthread waits for kthreadd.
    worker: SetOnce<Arc<Worker>>,
    _open: OpenSlot,
}

impl Channel {
    /// Creates a channel, if fewer than `max` are open in all and `max_user` by the caller.
    pub(crate) fn new(max: u32, max_user: u32, busypoll_ns: u32) -> Result<Self> {
        let open = OpenSlot::take(max, max_user)?;
        let shared = Arc::pin_init(
            pin_init!(Shared {
                inner <- new_irq_safe_lock!(Inner::new(), "Channel::inner"),
                runner: SetOnce::new(),
                links <- ListLinks::new(),
                queued <- AtomicTracker::new(),
                busypoll_ns: Atomic::new(busypoll_ns.min(uapi::MAX_BUSYPOLL_NS)),
                kickfds <- new_mutex!(None, "Channel::kickfds"),
                start <- new_mutex!((), "Channel::start"),
                serving <- new_mutex!(
                    Alarm {
                        handle: None,
                        at: None,
                        floor: Instant::now(),
                    },
                    "Channel::serving"
                ),
                alarm <- HrTimer::new(),
                count: Counters {
                    notifies: Atomic::new(0),
                    signals: Atomic::new(0),
                    sig_refused: Atomic::new(0),
                    dropped: Atomic::new(0),
                    wakeups: Atomic::new(0),
                    polled: Atomic::new(0),
                },
            }),
            GFP_KERNEL_ACCOUNT,
        )?;
        Ok(Self {
            shared,
            worker: SetOnce::new(),
            _open: open,
        })
    }

    /// Gives the channel a worker, if it has none: a new one, or `share`'s. Returns it.
    /// A failure (`ENOMEM`, or `EINTR` if the caller is being killed) is the error of the call
    /// that needed the worker.
    fn join(&self, share: Option<&Arc<Worker>>) -> Result<&Arc<Worker>> {
        if let Some(worker) = self.worker.as_ref() {
            return Ok(worker);
        }
        let shared = &self.shared;
        let _guard = shared.start.lock();
        if let Some(worker) = self.worker.as_ref() {
            return Ok(worker);
        }
        let worker = match share {
            Some(w) => w.clone(),
            None => Worker::new(shared.busypoll_ns.load(Relaxed))?,
        };
        let runner = worker.runner();
        runner.channels.add(1, Relaxed);
        // Under `start`, so nobody else populates them meanwhile.
        shared.runner.populate(runner.clone());
        self.worker.populate(worker);
        // Anything queued before (nothing is, as every call that queues work gets the worker
        // first) would be served now.
        Shared::update(shared.as_arc_borrow(), true, |inner| !inner.idle());
        self.worker.as_ref().ok_or(EINVAL)
    }

    /// Makes the channel use `other`'s worker, starting it if `other` has none yet. Fails with
    /// `EINVAL` if `other` is this channel, `EBUSY` if this one has a worker already.
    pub(crate) fn share_worker(&self, other: &Channel) -> Result {
        if core::ptr::eq(self, other) {
            return Err(EINVAL);
        }
        if self.worker.as_ref().is_some() {
            return Err(EBUSY);
        }
        // `other`'s lock is released before this channel's is taken: two channels sharing
        // each other's worker at once cannot deadlock.
        let worker = other.join(None)?.clone();
        let joined = self.join(Some(&worker))?;
        if Arc::ptr_eq(joined, &worker) {
            Ok(())
        } else {
            // Another call gave this channel a worker meanwhile.
            Err(EBUSY)
        }
    }

    /// The worker the channel uses: `(id, thread pid, channels)`, or zeros without one.
    pub(crate) fn worker_info(&self) -> uapi::WorkerInfo {
        self.worker
            .as_ref()
            .map_or_else(Default::default, |w| uapi::WorkerInfo {
                worker_id: w.runner().id,
                thread_pid: w.pid(),
                channels: w.runner().channels.load(Relaxed),
                reserved: 0,
            })
    }

    /// Allocates the slots' extra state, unless the channel has it (see [`Extra`]).
    fn ensure_extra(&self) -> Result {
        if self.shared.inner.lock().extra.is_some() {
            return Ok(());
        }
        // Allocated unlocked, then installed unless someone else was first.
        let new = Extra::all()?;
        let mut inner = self.shared.inner.lock();
        let lost = match inner.extra {
            Some(_) => Some(new),
            None => {
                inner.extra = Some(new);
                None
            }
        };
        drop(inner);
        drop(lost);
        Ok(())
    }

    /// Allocates the table of kick eventfds, unless the channel has it.
    fn ensure_kickfds(&self) -> Result {
        if self.shared.kickfds.lock().is_some() {
            return Ok(());
        }
        let new = KBox::new([const { None }; NR_SLOTS], GFP_KERNEL_ACCOUNT)?;
        let mut fds = self.shared.kickfds.lock();
        if fds.is_none() {
            *fds = Some(new);
        }
        Ok(())
    }

    /// Attaches the eventfd `fd` to `slot`, or detaches with `fd == -1`. The previous eventfd,
    /// if any, is released; a batch already taken by the worker still goes to it.
    pub(crate) fn attach(&self, slot: usize, fd: i32) -> Result {
        let new = match fd {
            -1 => None,
            fd => Some(Arc::new(EventFd::from_fd(fd)?, GFP_KERNEL_ACCOUNT)?),
        };
        let old = core::mem::replace(&mut self.shared.inner.lock().slots[slot].efd, new);
        // Released after the guard, as the last reference may free the context.
        drop(old);
        Ok(())
    }

    /// Queues `count` kicks on `slot` for the worker.
    pub(crate) fn kick(&self, slot: usize, count: u32) -> Result {
        self.join(None)?;
        Shared::update(self.shared.as_arc_borrow(), true, |inner| {
            inner.queue(slot, count.into(), Source::Ioctl)
        });
        Ok(())
    }

    /// Hooks the eventfd `fd` so that writes to it kick `slot`, or unhooks with `fd == -1`.
    ///
    /// Fails with `EBUSY` if the eventfd is hooked elsewhere (another slot, another channel, an
    /// irqfd); hooking it again where it is hooked changes nothing. Every step that can fail
    /// comes before the hook is armed, so a failed call takes nothing from the eventfd and
    /// leaves the slot's hook as it was (it may have started the channel's worker).
    pub(crate) fn attach_kickfd(&self, slot: usize, fd: i32) -> Result {
        let new = match fd {
            -1 => None,
            fd => {
                let sink = SlotSink {
                    shared: self.shared.clone(),
                    slot,
                };
                let hook = match KickFd::new(fd, sink) {
                    Err(e) if e == EBUSY && self.hooked_at(slot, fd) => return Ok(()),
                    r => r?,
                };
                self.join(None)?;
                // Its echoes wait in the slot's extra state.
                self.ensure_extra()?;
                self.ensure_kickfds()?;
                Some(hook)
            }
        };
        let mut fds = self.shared.kickfds.lock();
        let Some(table) = fds.as_deref_mut() else {
            // Nothing was ever hooked, so there is nothing to unhook.
            return Ok(());
        };
        // `gone` is a new hook that is not kept.
        let (old, gone) = match new {
            None => (table[slot].take(), None),
            Some(hook) => {
                // Armed under `kickfds`, so that a hang-up from now on is reaped only once the
                // hook is stored (see `reap_hung_up`).
                hook.arm();
                if hook.hung_up() {
                    // The descriptor was closed since `new` let go of the file, before the
                    // hook was armed: no reap comes for it. The call took effect, then the
                    // close did.
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
        Ok(())
    }

    /// Whether the eventfd open as `fd` is the kick eventfd of `slot` already.
    fn hooked_at(&self, slot: usize, fd: i32) -> bool {
        let Ok(efd) = EventFd::from_fd(fd) else {
            return false;
        };
        let fds = self.shared.kickfds.lock();
        let found = fds
            .as_deref()
            .and_then(|t| t[slot].as_ref())
            .is_some_and(|k| k.hooks(&efd));
        drop(fds);
        found
    }

    /// Starts (or replaces) the periodic timer of `slot`, or cancels it with `period_ns == 0`.
    /// No tick is queued after a cancel returns.
    pub(crate) fn set_timer(&self, slot: usize, period_ns: u64, ticks: u64) -> Result {
        let timer = match period_ns {
            0 => None,
            p => {
                let timer = Timer::new(p, ticks)?;
                self.join(None)?;
                self.ensure_extra()?;
                Some(timer)
            }
        };
        // The worker re-reads the deadlines and sets the alarm.
        Shared::update(self.shared.as_arc_borrow(), true, |inner| {
            inner.replace_timer(slot, timer, Instant::now());
            true
        });
        Ok(())
    }

    /// Sets the busy-poll limit of the channel's worker (of the one it will start, if it has
    /// none yet); 0 turns busy polling off.
    pub(crate) fn set_busypoll(&self, limit_ns: u32) -> Result {
        if limit_ns > uapi::MAX_BUSYPOLL_NS {
            return Err(EINVAL);
        }
        // Under `start`, so that a worker being started takes this limit.
        let _guard = self.shared.start.lock();
        match self.worker.as_ref() {
            Some(w) => w.runner().busypoll_ns.store(limit_ns, Relaxed),
            None => self.shared.busypoll_ns.store(limit_ns, Relaxed),
        }
        Ok(())
    }

    /// Makes `slot` also signal the calling process with `signo` (0: `SIGIO`), or stops with
    /// `signo == -1`. The caller's credentials are recorded and checked at every send.
    pub(crate) fn set_signal(&self, slot: usize, signo: i32) -> Result {
        let new = match signo {
            -1 => None,
            0 => Some(Arc::new(
                SigTarget::current_process(uapi::SIGIO)?,
                GFP_KERNEL_ACCOUNT,
            )?),
            s => Some(Arc::new(
                SigTarget::current_process(s)?,
                GFP_KERNEL_ACCOUNT,
            )?),
        };
        if new.is_some() {
            self.ensure_extra()?;
        }
        let mut inner = self.shared.inner.lock();
        let old = match inner.extra_mut(slot) {
            Some(x) => core::mem::replace(&mut x.sig, new),
            None => None,
        };
        drop(inner);
        drop(old);
        Ok(())
    }

    /// The channel's counters.
    ///
    /// Everything is read under the lock that the thread retires a batch under, so the
    /// header's identity holds in every snapshot, and once `pending` shows 0 the thread's
    /// deliveries for everything handled are counted.
    pub(crate) fn stats(&self) -> uapi::Stats {
        let shared = &self.shared;
        let c = &shared.count;
        let mut st = uapi::Stats {
            busypoll_ns: self.worker.as_ref().map_or_else(
                || shared.busypoll_ns.load(Relaxed),
                |w| w.runner().busypoll_ns.load(Relaxed),
            ),
            thread_pid: self.worker.as_ref().map_or(0, |w| w.pid()),
            ..Default::default()
        };
        {
            let inner = shared.inner.lock();
            st.kicks = inner.kicks;
            st.fd_kicks = inner.fd_kicks;
            st.timer_ticks = inner.timer_ticks;
            st.handled = inner.handled;
            st.coalesced = inner.coalesced;
            st.pending = inner.in_flight;
            for (slot, s) in inner.slots.iter().enumerate() {
                st.pending += s.pending;
                st.attached += u32::from(s.efd.is_some());
                st.signal_slots += u32::from(inner.extra(slot).is_some_and(|x| x.sig.is_some()));
            }
            st.timers = inner.timer_mask.count_ones();
            st.notifies = c.notifies.load(Relaxed);
            st.signals = c.signals.load(Relaxed);
            st.sig_refused = c.sig_refused.load(Relaxed);
            st.dropped = c.dropped.load(Relaxed);
            st.wakeups = c.wakeups.load(Relaxed);
            st.polled = c.polled.load(Relaxed);
        }
        st.kickfds = shared
            .kickfds
            .lock()
            .iter()
            .flat_map(|fds| fds.iter())
            .flatten()
            .filter(|k| !k.hung_up())
            .count() as u32;
        st
    }

    /// Writes the channel's state to `/proc/<pid>/fdinfo/<fd>`: counters, then one line per
    /// slot in use. No kernel pointer is printed.
    pub(crate) fn show_fdinfo(&self, m: &SeqFile) {
        let s = self.stats();
        let w = self.worker_info();
        seq_print!(
            m,
            "thread_pid:\t{}\nworker:\t{}\nworker_channels:\t{}\nkicks:\t{}\nfd_kicks:\t{}\ntimer_ticks:\t{}\nhandled:\t{}\n\
             notifies:\t{}\nsignals:\t{}\ndropped:\t{}\nwakeups:\t{}\npolled:\t{}\npending:\t{}\n\
             attached:\t{}\nkickfds:\t{}\ntimers:\t{}\nsignal_slots:\t{}\nbusypoll_ns:\t{}\n\
             coalesced:\t{}\nsig_refused:\t{}\n",
            s.thread_pid,
            w.worker_id,
            w.channels,
            s.kicks,
            s.fd_kicks,
            s.timer_ticks,
            s.handled,
            s.notifies,
            s.signals,
            s.dropped,
            s.wakeups,
            s.polled,
            s.pending,
            s.attached,
            s.kickfds,
            s.timers,
            s.signal_slots,
            s.busypoll_ns,
            s.coalesced,
            s.sig_refused
        );
        let shared = &self.shared;
        for slot in 0..NR_SLOTS {
            let (notify, pending, signo, timer) = {
                let inner = shared.inner.lock();
                let s = &inner.slots[slot];
                let x = inner.extra(slot);
                (
                    s.efd.is_some(),
                    s.pending,
                    x.and_then(|x| x.sig.as_ref()).map_or(0, |t| t.signo()),
                    x.and_then(|x| x.timer.as_ref()).map(Timer::describe),
                )
            };
            let kickfd = match shared.kickfds.lock().as_ref().map(|fds| &fds[slot]) {
                None | Some(None) => "none",
                Some(Some(k)) if k.hung_up() => "closed",
                Some(Some(_)) => "attached",
            };
            if !notify && pending == 0 && signo == 0 && timer.is_none() && kickfd == "none" {
                continue;
            }
            seq_print!(
                m,
                "slot:\t{slot}\tnotify: {}\tkickfd: {kickfd}\tpending: {pending}\tsignal: {signo}",
                if notify { "attached" } else { "none" }
            );
            match timer {
                Some((period, left)) => seq_print!(m, "\ttimer: {period}ns left {left}\n"),
                None => seq_print!(m, "\ttimer: none\n"),
            }
        }
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        // Each kick eventfd holds the shared state: unhook them all to break the cycle; after
        // this no wake-up callback runs for the channel.
        let fds = self.shared.kickfds.lock().take();
        drop(fds);
        self.shared.close();
        if let Some(w) = self.worker.as_ref() {
            w.runner().channels.fetch_sub(1, Relaxed);
        }
        // Then the worker is released: the last channel's release stops its thread.
    }
}

#[kunit_tests(rust_evnotify_channel)]
mod tests {
    use super::*;

    /// Every kick and tick accepted is handled, pending (in a slot or in flight) or
    /// coalesced, modulo 2^64: the header's stats identity.
    fn identity(i: &Inner) -> bool {
        let pending = i.slots.iter().fold(i.in_flight, |n, s| n + s.pending);
        i.kicks.wrapping_add(i.timer_ticks)
            == i.handled.wrapping_add(pending).wrapping_add(i.coalesced)
    }

    /// A channel's state with the slots' extra state, as a channel with timers, signals or
    /// kick eventfds has it.
    fn with_extra() -> Result<KBox<Inner>> {
        let mut i = KBox::new(Inner::new(), GFP_KERNEL)?;
        i.extra = Some(Extra::all()?);
        Ok(i)
    }

    /// Takes one unit of work, retires it, and returns its slot and size.
    fn take(i: &mut Inner) -> Option<(usize, u64)> {
        match i.take_work()? {
            Work::Kicks { slot, kicks, .. } => {
                i.retire(kicks);
                Some((slot, kicks))
            }
            Work::Reap => Some((usize::MAX, 0)),
        }
    }

    #[test]
    fn wakes_only_from_idle() -> Result {
        let mut i = KBox::new(Inner::new(), GFP_KERNEL)?;
        assert!(i.queue(3, 1, Source::Ioctl));
        assert!(!i.queue(3, 1, Source::Ioctl));
        assert!(!i.queue(4, 2, Source::KickFd));
        assert!(!i.queue(5, 4, Source::Timer));
        assert_eq!((i.kicks, i.fd_kicks, i.timer_ticks), (4, 2, 4));
        assert_eq!(i.pending_mask, 0b111 << 3);
        assert!(identity(&i));
        Ok(())
    }

    #[test]
    fn pending_is_bounded() -> Result {
        let mut i = KBox::new(Inner::new(), GFP_KERNEL)?;
        i.queue(0, MAX_PENDING + 5, Source::KickFd);
        assert_eq!((i.slots[0].pending, i.coalesced), (MAX_PENDING, 5));
        // The largest count a kick eventfd can carry, on a full slot: all coalesced.
        i.queue(0, u64::MAX - 1, Source::KickFd);
        assert_eq!(i.slots[0].pending, MAX_PENDING);
        assert_eq!(i.coalesced, 5u64.wrapping_add(u64::MAX - 1));
        assert!(identity(&i));
        Ok(())
    }

    #[test]
    fn counters_wrap() -> Result {
        let mut i = KBox::new(Inner::new(), GFP_KERNEL)?;
        (i.kicks, i.handled) = (u64::MAX - 1, u64::MAX - 1);
        i.queue(1, 3, Source::Ioctl);
        assert_eq!(i.kicks, 1);
        assert!(identity(&i));
        assert_eq!(take(&mut i), Some((1, 3)));
        assert_eq!((i.handled, i.in_flight), (1, 0));
        assert!(identity(&i));
        Ok(())
    }

    #[test]
    fn echo_waits_alone() -> Result {
        let mut i = with_extra()?;
        assert!(i.queue(2, 1, Source::Echo));
        assert_eq!(
            (i.echo_mask, i.pending_mask, i.slots[2].pending),
            (1 << 2, 0, 1)
        );
        assert!(i.idle());
        assert!(i.next_deadline().is_some());
        // A second echo while one waits is coalesced, whatever its count.
        i.queue(2, 7, Source::Echo);
        assert_eq!((i.slots[2].pending, i.coalesced), (1, 7));
        // Any other kick makes the slot due at once, the echo with it.
        assert!(i.queue(2, 5, Source::Ioctl));
        assert_eq!(
            (i.echo_mask, i.pending_mask, i.slots[2].pending),
            (0, 1 << 2, 6)
        );
        assert_eq!(take(&mut i), Some((2, 6)));
        assert!(identity(&i));
        Ok(())
    }

    #[test]
    fn slots_served_round_robin() -> Result {
        let mut i = KBox::new(Inner::new(), GFP_KERNEL)?;
        for slot in [9, 2, 5, 63] {
            i.queue(slot, 1, Source::Ioctl);
        }
        assert_eq!(take(&mut i), Some((2, 1)));
        // Slot 2 has work again, but slots after it come first.
        i.queue(2, 1, Source::Ioctl);
        assert_eq!(take(&mut i), Some((5, 1)));
        assert_eq!(take(&mut i), Some((9, 1)));
        assert_eq!(take(&mut i), Some((63, 1)));
        // The cursor wraps from the last slot to the first.
        assert_eq!(take(&mut i), Some((2, 1)));
        assert_eq!(take(&mut i), None);
        assert!(i.idle() && identity(&i));
        Ok(())
    }

    #[test]
    fn batches_bounded_unless_dropped() -> Result {
        let mut i = with_extra()?;
        i.extra.as_deref_mut().ok_or(EINVAL)?[1].sig = Some(Arc::new(
            SigTarget::current_process(uapi::SIGIO)?,
            GFP_KERNEL,
        )?);
        i.queue(1, BATCH * 2 + 1, Source::Ioctl);
        i.queue(7, MAX_PENDING, Source::Ioctl);
        // A slot with a target gives at most a batch at a time; in flight stays pending.
        let Some(Work::Kicks { slot: 1, kicks, .. }) = i.take_work() else {
            return Err(EINVAL);
        };
        assert_eq!((kicks, i.in_flight), (BATCH, BATCH));
        assert!(identity(&i));
        i.retire(kicks);
        // A slot with no target drops everything pending at once.
        assert_eq!(take(&mut i), Some((7, MAX_PENDING)));
        assert_eq!(take(&mut i), Some((1, BATCH)));
        assert_eq!(take(&mut i), Some((1, 1)));
        assert_eq!(take(&mut i), None);
        assert!(identity(&i));
        Ok(())
    }

    #[test]
    fn cancel_delivers_owed_ticks() -> Result {
        let mut i = with_extra()?;
        let min = uapi::MIN_PERIOD_NS;
        // The clock is read once: what is owed depends on the times given, not on how fast
        // the machine runs.
        let now = Instant::now();
        // A one-shot timer whose tick fell due before the thread came round to it, cancelled.
        let start = now - Delta::from_micros(1500);
        i.replace_timer(1, Some(Timer::starting(start, min, 1)?), start);
        assert_eq!((i.slots[1].pending, i.timer_mask), (0, 1 << 1));
        i.replace_timer(1, None, now);
        assert_eq!((i.slots[1].pending, i.timer_ticks, i.timer_mask), (1, 1, 0));
        // A running timer owing two ticks at `now`, replaced by another.
        let start = now - Delta::from_micros(2500);
        i.replace_timer(2, Some(Timer::starting(start, min, 0)?), start);
        i.replace_timer(2, Some(Timer::starting(now, min, 0)?), now);
        assert_eq!((i.slots[2].pending, i.timer_ticks), (2, 3));
        assert!(identity(&i));
        Ok(())
    }

    #[test]
    fn plain_channel_has_no_extra() -> Result {
        let mut i = KBox::new(Inner::new(), GFP_KERNEL)?;
        // Only a kick eventfd sends echoes, and it brings the extra state; without it, an
        // echo is an ordinary kick.
        assert!(i.queue(2, 1, Source::Echo));
        assert_eq!((i.echo_mask, i.pending_mask), (0, 1 << 2));
        // A timer needs the extra state (`set_timer` allocates it); a cancel has none to stop.
        i.replace_timer(3, Some(Timer::new(uapi::MIN_PERIOD_NS, 0)?), Instant::now());
        i.replace_timer(4, None, Instant::now());
        assert_eq!((i.timer_mask, i.next_deadline().is_none()), (0, true));
        assert!(identity(&i));
        Ok(())
    }

    #[test]
    fn hangup_reaped_first() -> Result {
        let mut i = KBox::new(Inner::new(), GFP_KERNEL)?;
        i.queue(0, 1, Source::KickFd);
        i.hangup = true;
        assert_eq!(take(&mut i), Some((usize::MAX, 0)));
        assert_eq!(take(&mut i), Some((0, 1)));
        assert!(i.idle());
        Ok(())
    }
}
