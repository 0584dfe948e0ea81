// SPDX-License-Identifier: GPL-2.0

//! A channel: notify slots, pending kicks, timers and the kernel thread that answers them.
//!
//! Data flows one way: an ioctl, a kick eventfd or a due timer queues kicks on a slot in
//! [`Inner`] and wakes the thread; the thread takes them in batches and delivers them (eventfd
//! signal, process signal) with no lock held.

use crate::{
    busypoll,
    compat::{
        new_irq_safe_lock,
        IrqSafeLock, //
    },
    eventfd::{
        EventFd,
        KickFd,
        KickSink, //
    },
    kthread::{
        KThread,
        ThreadCtx,
        ThreadWork, //
    },
    signal::{
        Sent, //
        SigTarget,
    },
    timer::Timer,
    uapi::{
        self,
        NR_SLOTS, //
    }, //
};
use kernel::{
    new_condvar,
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
        CondVar,
        Mutex,
        SetOnce, //
    },
    task::Kuid,
    time::{
        hrtimer::{
            AbsoluteMode,
            HrTimer,
            HrTimerCallback,
            HrTimerCallbackContext,
            HrTimerRestart,
            ScopedHrTimerPointer, //
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

/// Least time between two wake-ups of the thread by its alarm: deadlines closer than this
/// (up to 64 slots' timers and echoes, out of phase) share one, later by at most this much.
/// Bounds one channel at 10,000 alarm wake-ups a second; a lone timer of the 1 ms minimum
/// period never waits for it.
const ALARM_GAP: Delta = Delta::from_micros(100);

/// Channel ids, used to name the threads.
static NEXT_ID: Atomic<u32> = Atomic::new(0);

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
    /// is held for a short search and, for a user's first channel, a small allocation; never
    /// across a wait for another task.
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

/// One notify slot.
struct Slot {
    /// The eventfd to signal, if one is attached. Shared so the thread can signal it unlocked.
    efd: Option<Arc<EventFd>>,
    /// The process to signal, if one asked.
    sig: Option<Arc<SigTarget>>,
    /// The slot's periodic timer, if running.
    timer: Option<Timer>,
    /// Kicks and ticks accepted but not yet taken by the thread; at most [`MAX_PENDING`].
    pending: u64,
    /// When the slot's waiting echo becomes due, if it has one (see `Inner::echo_mask`).
    echo_due: Option<Instant<Monotonic>>,
}

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
    /// Bit `n` is set if and only if `slots[n].pending != 0` and the slot's kicks are due now.
    pending_mask: u64,
    /// Bit `n` is set if and only if `slots[n].pending == 1` holds an echo that waits for
    /// `slots[n].echo_due`.
    echo_mask: u64,
    /// Bit `n` is set if and only if `slots[n].timer` is set.
    timer_mask: u64,
    /// Where the thread looks first, so that slots are served round-robin.
    cursor: usize,
    /// A kick eventfd was closed by user space and waits to be released by the thread.
    hangup: bool,
    /// Kicks the thread has taken and not yet finished delivering: still counted as pending.
    in_flight: u64,
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
            sig: None,
            timer: None,
            pending: 0,
            echo_due: None,
        };
        Inner {
            slots: [EMPTY; NR_SLOTS],
            pending_mask: 0,
            echo_mask: 0,
            timer_mask: 0,
            cursor: 0,
            hangup: false,
            in_flight: 0,
            kicks: 0,
            fd_kicks: 0,
            timer_ticks: 0,
            handled: 0,
            coalesced: 0,
        }
    }

    /// Whether the thread has nothing to do until woken or a deadline passes.
    fn idle(&self) -> bool {
        self.pending_mask == 0 && !self.hangup
    }

    /// Adds `count` kicks or ticks from `source` to `slot`, in O(1): what does not fit under
    /// [`MAX_PENDING`] is coalesced, and an echo only waits if nothing else does. Returns
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
        let s = &mut self.slots[slot];
        let mut take = count.min(MAX_PENDING - s.pending);
        if source == Source::Echo {
            take = take.min(u64::from(s.pending == 0));
        }
        self.coalesced = self.coalesced.wrapping_add(count - take);
        if take == 0 {
            return false;
        }
        s.pending += take;
        if source == Source::Echo {
            s.echo_due = Some(Instant::now() + ECHO_DELAY);
            self.echo_mask |= bit;
            // Woken, if asleep, to sleep again until the echo is due.
            return was_idle;
        }
        self.echo_mask &= !bit;
        self.pending_mask |= bit;
        was_idle
    }

    /// Queues the ticks of every due timer, and makes waiting echoes due once their time came.
    fn fire_timers(&mut self) {
        if self.timer_mask == 0 && self.echo_mask == 0 {
            return;
        }
        let now = Instant::<Monotonic>::now();
        for slot in bits(self.echo_mask) {
            if self.slots[slot]
                .echo_due
                .is_some_and(|due| (now - due).as_nanos() >= 0)
            {
                self.echo_mask &= !(1 << slot);
                self.pending_mask |= 1 << slot;
            }
        }
        for slot in bits(self.timer_mask) {
            let Some(timer) = self.slots[slot].timer.as_mut() else {
                continue;
            };
            let (due, expired) = timer.take_due(now);
            if expired {
                self.slots[slot].timer = None;
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
    fn replace_timer(&mut self, slot: usize, timer: Option<Timer>) {
        self.fire_timers();
        self.timer_mask &= !(1 << slot);
        self.timer_mask |= u64::from(timer.is_some()) << slot;
        self.slots[slot].timer = timer;
    }

    /// When the earliest timer or echo is due, if any.
    fn next_deadline(&self) -> Option<Instant<Monotonic>> {
        let now = Instant::<Monotonic>::now();
        let echoes = bits(self.echo_mask).filter_map(|slot| self.slots[slot].echo_due);
        Iterator::chain(
            bits(self.timer_mask)
                .filter_map(|slot| self.slots[slot].timer.as_ref().map(Timer::deadline)),
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
        let s = &mut self.slots[slot];
        let kicks = if s.efd.is_none() && s.sig.is_none() {
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
        Some(Work::Kicks {
            slot,
            efd: s.efd.clone(),
            sig: s.sig.clone(),
            kicks,
        })
    }

    /// Marks `kicks` taken kicks as delivered: they leave `pending` and enter `handled` at once.
    fn retire(&mut self, kicks: u64) {
        self.in_flight -= kicks;
        self.handled = self.handled.wrapping_add(kicks);
    }
}

/// The kick eventfds of a channel, one per slot at most.
type KickFds = [Option<Pin<KBox<KickFd<SlotSink>>>>; NR_SLOTS];

/// Where a kick eventfd's writes go: kicks on one slot of a channel.
pub(crate) struct SlotSink {
    shared: Arc<Shared>,
    slot: usize,
}

impl KickSink for SlotSink {
    fn kicked(&self, count: u64, echo: bool) {
        let source = if echo { Source::Echo } else { Source::KickFd };
        self.shared
            .update(|inner| inner.queue(self.slot, count, source));
    }

    fn hangup(&self) {
        self.shared.update(|inner| {
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

/// The part of a channel shared by the file, its kernel thread and its kick eventfds.
#[pin_data]
pub(crate) struct Shared {
    /// Taken from kick eventfd wake-ups, in atomic context: hence a spinlock with IRQs off.
    #[pin]
    inner: IrqSafeLock<Inner>,
    /// Signalled when `Inner` goes from idle to having work (an echo included), its timers
    /// change, or the alarm expires.
    #[pin]
    work: CondVar,
    /// Set with the same events as `work`, for the thread to see while it busy-polls.
    ready: Atomic<bool>,
    /// The limit of the thread's busy-poll window, in nanoseconds; 0 turns polling off.
    busypoll_ns: Atomic<u32>,
    /// Ordered before `inner`; never taken from atomic context.
    #[pin]
    kickfds: Mutex<KickFds>,
    /// Serialises starting the thread, so that exactly one is created.
    #[pin]
    start: Mutex<()>,
    /// Wakes the thread at its next deadline (a timer tick or an echo) with the precision of
    /// an hrtimer, as timerfd does. Only the thread arms it, for the length of one sleep.
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

impl HrTimerCallback for Shared {
    type Pointer<'a> = Pin<&'a Shared>;

    fn run(this: Pin<&Shared>, _ctx: HrTimerCallbackContext<'_, Self>) -> HrTimerRestart {
        // The thread armed the alarm holding `inner`, and releases it only once it waits on
        // `work`: taking the lock first means the thread is waiting (or past its checks), so
        // the notification cannot be lost. The thread finds the due work itself; `ready` stays
        // clear, since a deadline is not an event for the busy-poll window.
        let _inner = this.inner.lock();
        this.work.notify_one();
        HrTimerRestart::NoRestart
    }
}

impl ThreadWork for Shared {
    fn run(self: Pin<&Self>, ctx: &ThreadCtx) {
        let mut window = busypoll::Window::default();
        // Starting counts as a wake-up: the first kicks may arrive before the first sleep.
        let mut slept = true;
        // Kicks delivered in the previous round, retired under the next round's lock.
        let mut done = 0;
        // The alarm's next wake-up is not due before this (see `ALARM_GAP`).
        let mut alarm_floor = Instant::<Monotonic>::now();
        loop {
            let mut guard = self.inner.lock();
            guard.retire(core::mem::take(&mut done));
            // When the thread ran out of work, whether it has spun since, and what the spin saw.
            let mut idle_since = None;
            let mut spun = false;
            let mut caught = false;
            let (work, event) = loop {
                if ctx.should_stop() {
                    return;
                }
                guard.fire_timers();
                if let Some(work) = guard.take_work() {
                    // Whether an event, not only a timer, ended the idle spell.
                    break (work, self.ready.load(Relaxed));
                }
                // Under the lock, so no event after this check is missed.
                self.ready.store(false, Relaxed);
                let idle = *idle_since.get_or_insert_with(Instant::<Monotonic>::now);
                let deadline = guard.next_deadline();
                let spin_ns = window.ns().min(self.busypoll_ns.load(Relaxed).into());
                if !spun && spin_ns != 0 {
                    spun = true;
                    drop(guard);
                    let spin = Delta::from_nanos(spin_ns as i64);
                    let spin = deadline.map_or(spin, |d| (d - idle).min(spin));
                    caught = ctx.busy_poll(spin, || self.ready.load(Relaxed));
                    guard = self.inner.lock();
                    continue;
                }
                // A pending signal can only be `kthread_stop`'s, which the loop checks.
                match deadline {
                    None => {
                        let _ = self.work.wait_interruptible(&mut guard);
                    }
                    Some(deadline) => {
                        let at = if (deadline - alarm_floor).as_nanos() < 0 {
                            alarm_floor
                        } else {
                            deadline
                        };
                        // The alarm is cancelled when the scope ends, which waits for a running
                        // callback: so the lock, which the callback takes, is dropped first.
                        self.start_scoped(at, move || {
                            let mut guard = guard;
                            let _ = self.work.wait_interruptible(&mut guard);
                        });
                        if (Instant::now() - at).as_nanos() >= 0 {
                            // Woken by the alarm (or as late): space the next expiry from this
                            // one's, so a late wake-up does not push a lone timer's next tick.
                            alarm_floor = at + ALARM_GAP;
                        }
                        guard = self.inner.lock();
                    }
                }
                slept = true;
            };
            drop(guard);
            if let Some(idle) = idle_since {
                let idle_ns = idle.elapsed().as_nanos().max(0) as u64;
                window.adapt(idle_ns, self.busypoll_ns.load(Relaxed), caught, event);
            }
            if core::mem::take(&mut slept) {
                self.count.wakeups.add(1, Relaxed);
            } else if caught {
                self.count.polled.add(1, Relaxed);
            }
            match work {
                Work::Kicks {
                    slot,
                    efd,
                    sig,
                    kicks,
                } => {
                    self.deliver(slot, efd.as_deref(), sig, kicks);
                    done = kicks;
                }
                Work::Reap => self.reap_hung_up(),
            }
            ctx.yield_now();
        }
    }
}

impl Shared {
    /// Changes `Inner` with `f` under the lock, then wakes the thread if `f` says it must.
    fn update(&self, f: impl FnOnce(&mut Inner) -> bool) {
        let wake = {
            let mut inner = self.inner.lock();
            let wake = f(&mut inner);
            if wake {
                // Under the lock, so the thread cannot clear it before seeing the change.
                self.ready.store(true, Relaxed);
            }
            wake
        };
        if wake {
            self.work.notify_one();
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
                let s = &mut inner.slots[slot];
                if s.sig.as_ref().is_some_and(|cur| Arc::ptr_eq(cur, &sig)) {
                    let gone = s.sig.take();
                    drop(inner);
                    drop(gone);
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
        for k in fds.iter_mut() {
            if k.as_ref().is_some_and(|k| k.hung_up()) {
                *k = None;
            }
        }
    }

    /// Changes the timers under the lock, then wakes the thread to recompute its deadline.
    fn update_timers(&self, f: impl FnOnce(&mut Inner)) {
        self.update(|inner| {
            f(inner);
            true
        });
    }
}

/// An open `/dev/evnotify`: its shared state and, once a call needs it, the thread serving it.
pub(crate) struct Channel {
    shared: Arc<Shared>,
    /// Started by the first call that queues work, not in `open`: `misc_open` holds the global
    /// `misc_mtx` across `open`, and creating a kthread waits for kthreadd.
    thread: SetOnce<KThread<Shared>>,
    id: u32,
    _open: OpenSlot,
}

impl Channel {
    /// Creates a channel, if fewer than `max` are open in all and `max_user` by the caller.
    pub(crate) fn new(max: u32, max_user: u32, busypoll_ns: u32) -> Result<Self> {
        let open = OpenSlot::take(max, max_user)?;
        let shared = Arc::pin_init(
            pin_init!(Shared {
                inner <- new_irq_safe_lock!(Inner::new(), "Channel::inner"
                ),
                work <- new_condvar!("Channel::work"),
                ready: Atomic::new(false),
                busypoll_ns: Atomic::new(busypoll_ns.min(uapi::MAX_BUSYPOLL_NS)),
                kickfds <- new_mutex!([const { None }; NR_SLOTS], "Channel::kickfds"),
                start <- new_mutex!((), "Channel::start"),
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
            thread: SetOnce::new(),
            id: NEXT_ID.fetch_add(1, Relaxed),
            _open: open,
        })
    }

    /// Starts the channel's thread unless it runs already. A failure (`ENOMEM`, or `EINTR` if
    /// the caller is being killed) is the error of the call that needed the thread.
    fn start_thread(&self) -> Result {
        if self.thread.as_ref().is_some() {
            return Ok(());
        }
        let _guard = self.shared.start.lock();
        if self.thread.as_ref().is_none() {
            // Under `start`, so nobody else populates it meanwhile.
            self.thread
                .populate(KThread::spawn(self.shared.clone(), self.id)?);
        }
        Ok(())
    }

    /// Attaches the eventfd `fd` to `slot`, or detaches with `fd == -1`. The previous eventfd,
    /// if any, is released; a batch already taken by the thread still goes to it.
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

    /// Queues `count` kicks on `slot` for the thread.
    pub(crate) fn kick(&self, slot: usize, count: u32) -> Result {
        self.start_thread()?;
        self.shared
            .update(|inner| inner.queue(slot, count.into(), Source::Ioctl));
        Ok(())
    }

    /// Hooks the eventfd `fd` so that writes to it kick `slot`, or unhooks with `fd == -1`.
    pub(crate) fn attach_kickfd(&self, slot: usize, fd: i32) -> Result {
        let new = match fd {
            -1 => None,
            fd => {
                // The thread is started only for an fd that can be hooked.
                KickFd::<SlotSink>::check(fd)?;
                self.start_thread()?;
                Some(KickFd::new(
                    fd,
                    SlotSink {
                        shared: self.shared.clone(),
                        slot,
                    },
                )?)
            }
        };
        let old = core::mem::replace(&mut self.shared.kickfds.lock()[slot], new);
        // Unhooked after the guard; after this no write to it kicks the slot.
        drop(old);
        Ok(())
    }

    /// Starts (or replaces) the periodic timer of `slot`, or cancels it with `period_ns == 0`.
    /// No tick is queued after a cancel returns.
    pub(crate) fn set_timer(&self, slot: usize, period_ns: u64, ticks: u64) -> Result {
        let timer = match period_ns {
            0 => None,
            p => {
                let timer = Timer::new(p, ticks)?;
                self.start_thread()?;
                Some(timer)
            }
        };
        self.shared
            .update_timers(|inner| inner.replace_timer(slot, timer));
        Ok(())
    }

    /// Sets the limit of the thread's busy-poll window; 0 turns busy polling off.
    pub(crate) fn set_busypoll(&self, limit_ns: u32) -> Result {
        if limit_ns > uapi::MAX_BUSYPOLL_NS {
            return Err(EINVAL);
        }
        self.shared.busypoll_ns.store(limit_ns, Relaxed);
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
        let old = core::mem::replace(&mut self.shared.inner.lock().slots[slot].sig, new);
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
            busypoll_ns: shared.busypoll_ns.load(Relaxed),
            thread_pid: self.thread.as_ref().map_or(0, KThread::pid),
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
            for s in &inner.slots {
                st.pending += s.pending;
                st.attached += u32::from(s.efd.is_some());
                st.signal_slots += u32::from(s.sig.is_some());
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
            .flatten()
            .filter(|k| !k.hung_up())
            .count() as u32;
        st
    }

    /// Writes the channel's state to `/proc/<pid>/fdinfo/<fd>`: counters, then one line per
    /// slot in use. No kernel pointer is printed.
    pub(crate) fn show_fdinfo(&self, m: &SeqFile) {
        let s = self.stats();
        seq_print!(
            m,
            "thread_pid:\t{}\nkicks:\t{}\nfd_kicks:\t{}\ntimer_ticks:\t{}\nhandled:\t{}\n\
             notifies:\t{}\nsignals:\t{}\ndropped:\t{}\nwakeups:\t{}\npolled:\t{}\npending:\t{}\n\
             attached:\t{}\nkickfds:\t{}\ntimers:\t{}\nsignal_slots:\t{}\nbusypoll_ns:\t{}\n\
             coalesced:\t{}\nsig_refused:\t{}\n",
            s.thread_pid,
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
                (
                    s.efd.is_some(),
                    s.pending,
                    s.sig.as_ref().map_or(0, |t| t.signo()),
                    s.timer.as_ref().map(Timer::describe),
                )
            };
            let kickfd = match &shared.kickfds.lock()[slot] {
                None => "none",
                Some(k) if k.hung_up() => "closed",
                Some(_) => "attached",
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
        // Each kick eventfd holds the shared state: unhook them all to break the cycle, before
        // the thread is stopped and the state released.
        let fds = core::mem::replace(&mut *self.shared.kickfds.lock(), [const { None }; NR_SLOTS]);
        drop(fds);
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
        let mut i = KBox::new(Inner::new(), GFP_KERNEL)?;
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
        let mut i = KBox::new(Inner::new(), GFP_KERNEL)?;
        i.slots[1].sig = Some(Arc::new(
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
        let mut i = KBox::new(Inner::new(), GFP_KERNEL)?;
        let min = uapi::MIN_PERIOD_NS;
        // A one-shot timer whose tick fell due before the thread came round to it, cancelled.
        let start = Instant::now() - Delta::from_micros(1500);
        i.replace_timer(1, Some(Timer::starting(start, min, 1)?));
        assert_eq!((i.slots[1].pending, i.timer_mask), (0, 1 << 1));
        i.replace_timer(1, None);
        assert_eq!((i.slots[1].pending, i.timer_ticks, i.timer_mask), (1, 1, 0));
        // A running timer owing two ticks, replaced by another.
        let start = Instant::now() - Delta::from_micros(2500);
        i.replace_timer(2, Some(Timer::starting(start, min, 0)?));
        i.replace_timer(2, Some(Timer::new(min, 0)?));
        assert_eq!((i.slots[2].pending, i.timer_ticks), (2, 3));
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
