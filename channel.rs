// SPDX-License-Identifier: GPL-2.0

//! A channel: notify slots, pending kicks, timers and the kernel thread that answers them.
//!
//! Data flows one way: an ioctl, a kick eventfd or a due timer queues kicks on a slot in
//! [`Inner`] and wakes the thread; the thread takes them in batches and delivers them (eventfd
//! signal, process signal) with no lock held.

use crate::{
    busypoll,
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
    signal::SigTarget,
    timer::Timer,
    uapi::{
        self,
        NR_SLOTS, //
    }, //
};
use kernel::{
    new_condvar,
    new_mutex,
    new_spinlock_irq,
    prelude::*,
    seq_file::SeqFile,
    seq_print,
    sync::{
        atomic::{
            Acquire,
            Atomic,
            Relaxed,
            Release, //
        },
        Arc,
        CondVar,
        Mutex,
        SpinLockIrq, //
    },
    time::{
        msecs_to_jiffies,
        Delta,
        Instant,
        Monotonic, //
    }, //
};

/// Most kicks the thread answers for one slot before it re-checks the stop flag and the other
/// slots, so a huge burst can neither delay `close` nor starve the other slots.
const BATCH: u64 = 1024;

/// Channel ids, used to name the threads.
static NEXT_ID: Atomic<u32> = Atomic::new(0);

/// Channels open now, bounded by the `max_channels` module parameter.
static OPEN: Atomic<u32> = Atomic::new(0);

/// One of the `max_channels` places, held by an open channel and given back on drop.
struct OpenSlot;

impl OpenSlot {
    /// Takes a place, or fails with `EMFILE` (as inotify does past its instance limit).
    fn take(max: u32) -> Result<Self> {
        if OPEN.fetch_add(1, Relaxed) >= max {
            OPEN.fetch_sub(1, Relaxed);
            return Err(EMFILE);
        }
        Ok(Self)
    }
}

impl Drop for OpenSlot {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Relaxed);
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
    /// Kicks and ticks accepted but not yet taken by the thread.
    pending: u64,
}

/// The state guarded by [`Shared::inner`].
struct Inner {
    slots: [Slot; NR_SLOTS],
    /// Bit `n` is set if and only if `slots[n].pending != 0`.
    pending_mask: u64,
    /// Bit `n` is set if and only if `slots[n].timer` is set.
    timer_mask: u64,
    /// Where the thread looks first, so that slots are served round-robin.
    cursor: usize,
    /// A kick eventfd was closed by user space and waits to be released by the thread.
    hangup: bool,
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
    /// Whether the thread has nothing to do until woken or a timer is due.
    fn idle(&self) -> bool {
        self.pending_mask == 0 && !self.hangup
    }

    /// Adds `count` kicks to `slot`; returns whether the thread must be woken (the transition
    /// from idle: otherwise it is awake or already being woken).
    fn queue(&mut self, slot: usize, count: u64) -> bool {
        let was_idle = self.idle();
        let s = &mut self.slots[slot];
        // Saturates only past 2^64 pending kicks, which an eventfd write can ask for.
        s.pending = s.pending.saturating_add(count);
        self.pending_mask |= 1 << slot;
        was_idle
    }

    /// Queues the ticks of every due timer; returns how many.
    fn fire_timers(&mut self) -> u64 {
        if self.timer_mask == 0 {
            return 0;
        }
        let now = Instant::<Monotonic>::now();
        let mut ticks = 0;
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
                self.queue(slot, due);
                ticks += due;
            }
        }
        ticks
    }

    /// When the earliest timer is due, if any runs.
    fn next_deadline(&self) -> Option<Instant<Monotonic>> {
        bits(self.timer_mask)
            .filter_map(|slot| self.slots[slot].timer.as_ref().map(Timer::deadline))
            .min_by_key(|d| (*d - Instant::<Monotonic>::now()).as_nanos())
    }

    /// Takes up to [`BATCH`] pending kicks of the next slot with work, with its targets.
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
        let kicks = s.pending.min(BATCH);
        s.pending -= kicks;
        if s.pending == 0 {
            self.pending_mask &= !(1 << slot);
        }
        self.cursor = (slot + 1) % NR_SLOTS;
        Some(Work::Kicks {
            slot,
            efd: s.efd.clone(),
            sig: s.sig.clone(),
            kicks,
        })
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
    fn kicked(&self, count: u64) {
        self.shared.count.fd_kicks.add(count, Relaxed);
        self.shared.queue(self.slot, count);
    }

    fn hangup(&self) {
        self.shared.update(|inner| {
            let was_idle = inner.idle();
            inner.hangup = true;
            was_idle
        });
    }
}

/// The channel's counters; see `struct evnotify_stats`.
struct Counters {
    kicks: Atomic<u64>,
    fd_kicks: Atomic<u64>,
    timer_ticks: Atomic<u64>,
    handled: Atomic<u64>,
    notifies: Atomic<u64>,
    signals: Atomic<u64>,
    dropped: Atomic<u64>,
    wakeups: Atomic<u64>,
    polled: Atomic<u64>,
}

/// The part of a channel shared by the file, its kernel thread and its kick eventfds.
#[pin_data]
pub(crate) struct Shared {
    /// Taken from kick eventfd wake-ups, in atomic context: hence a spinlock with IRQs off.
    #[pin]
    inner: SpinLockIrq<Inner>,
    /// Signalled when `Inner` goes from idle to having work, or its timers change.
    #[pin]
    work: CondVar,
    /// Set with the same events as `work`, for the thread to see while it busy-polls.
    ready: Atomic<bool>,
    /// The limit of the thread's busy-poll window, in nanoseconds; 0 turns polling off.
    busypoll_ns: Atomic<u32>,
    /// Ordered before `inner`; never taken from atomic context.
    #[pin]
    kickfds: Mutex<KickFds>,
    count: Counters,
}

impl ThreadWork for Shared {
    fn run(&self, ctx: &ThreadCtx) {
        let mut window = busypoll::Window::default();
        // Starting counts as a wake-up: the first kicks may arrive before the first sleep.
        let mut slept = true;
        loop {
            let mut guard = self.inner.lock();
            // When the thread ran out of work, whether it has spun since, and what the spin saw.
            let mut idle_since = None;
            let mut spun = false;
            let mut caught = false;
            let (work, event) = loop {
                if ctx.should_stop() {
                    return;
                }
                let ticks = guard.fire_timers();
                self.count.timer_ticks.add(ticks, Relaxed);
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
                        let ms = (deadline - Instant::now()).as_millis_ceil().max(0);
                        let jiffies = msecs_to_jiffies(ms.try_into().unwrap_or(u32::MAX));
                        let _ = self.work.wait_interruptible_timeout(&mut guard, jiffies);
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
                } => self.deliver(slot, efd.as_deref(), sig, kicks),
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

    /// Queues `count` kicks on `slot` and wakes the thread if it may be asleep.
    fn queue(&self, slot: usize, count: u64) {
        self.update(|inner| {
            // Counted under the lock, so the thread can never have answered more than this.
            self.count.kicks.add(count, Relaxed);
            inner.queue(slot, count)
        });
    }

    /// Delivers `kicks` kicks of `slot`: one eventfd signal and one process signal each.
    fn deliver(&self, slot: usize, efd: Option<&EventFd>, sig: Option<Arc<SigTarget>>, kicks: u64) {
        let mut signalled = 0;
        if let Some(sig) = sig {
            while signalled < kicks && sig.send() {
                signalled += 1;
            }
            if signalled < kicks {
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
        // Release: a reader that sees this batch handled sees all of the above (`stats`).
        self.count.handled.fetch_add(kicks, Release);
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

/// An open `/dev/evnotify`: its shared state and the thread serving it.
pub(crate) struct Channel {
    thread: KThread<Shared>,
    _open: OpenSlot,
}

impl Channel {
    /// Creates a channel and starts its thread, if fewer than `max` are open.
    pub(crate) fn new(max: u32, busypoll_ns: u32) -> Result<Self> {
        let open = OpenSlot::take(max)?;
        const EMPTY: Slot = Slot {
            efd: None,
            sig: None,
            timer: None,
            pending: 0,
        };
        let shared = Arc::pin_init(
            pin_init!(Shared {
                inner <- new_spinlock_irq!(
                    Inner {
                        slots: [EMPTY; NR_SLOTS],
                        pending_mask: 0,
                        timer_mask: 0,
                        cursor: 0,
                        hangup: false,
                    },
                    "Channel::inner"
                ),
                work <- new_condvar!("Channel::work"),
                ready: Atomic::new(false),
                busypoll_ns: Atomic::new(busypoll_ns.min(busypoll::MAX_NS)),
                kickfds <- new_mutex!([const { None }; NR_SLOTS], "Channel::kickfds"),
                count: Counters {
                    kicks: Atomic::new(0),
                    fd_kicks: Atomic::new(0),
                    timer_ticks: Atomic::new(0),
                    handled: Atomic::new(0),
                    notifies: Atomic::new(0),
                    signals: Atomic::new(0),
                    dropped: Atomic::new(0),
                    wakeups: Atomic::new(0),
                    polled: Atomic::new(0),
                },
            }),
            GFP_KERNEL,
        )?;
        let id = NEXT_ID.fetch_add(1, Relaxed);
        Ok(Self {
            thread: KThread::spawn(shared, id)?,
            _open: open,
        })
    }

    fn shared(&self) -> &Shared {
        self.thread.data()
    }

    /// Attaches the eventfd `fd` to `slot`, or detaches with `fd == -1`. The previous eventfd,
    /// if any, is released; a batch already taken by the thread still goes to it.
    pub(crate) fn attach(&self, slot: usize, fd: i32) -> Result {
        let new = match fd {
            -1 => None,
            fd => Some(Arc::new(EventFd::from_fd(fd)?, GFP_KERNEL)?),
        };
        let old = core::mem::replace(&mut self.shared().inner.lock().slots[slot].efd, new);
        // Released after the guard, as the last reference may free the context.
        drop(old);
        Ok(())
    }

    /// Queues `count` kicks on `slot` for the thread.
    pub(crate) fn kick(&self, slot: usize, count: u32) {
        self.shared().queue(slot, count.into());
    }

    /// Hooks the eventfd `fd` so that writes to it kick `slot`, or unhooks with `fd == -1`.
    pub(crate) fn attach_kickfd(&self, slot: usize, fd: i32) -> Result {
        let new = match fd {
            -1 => None,
            fd => Some(KickFd::new(
                fd,
                SlotSink {
                    shared: self.thread.data_arc(),
                    slot,
                },
            )?),
        };
        let old = core::mem::replace(&mut self.shared().kickfds.lock()[slot], new);
        // Unhooked after the guard; after this no write to it kicks the slot.
        drop(old);
        Ok(())
    }

    /// Starts (or replaces) the periodic timer of `slot`, or cancels it with `period_ns == 0`.
    /// No tick is queued after a cancel returns.
    pub(crate) fn set_timer(&self, slot: usize, period_ns: u64, ticks: u64) -> Result {
        let timer = match period_ns {
            0 => None,
            p => Some(Timer::new(p, ticks)?),
        };
        self.shared().update_timers(|inner| {
            inner.timer_mask &= !(1 << slot);
            inner.timer_mask |= u64::from(timer.is_some()) << slot;
            inner.slots[slot].timer = timer;
        });
        Ok(())
    }

    /// Sets the limit of the thread's busy-poll window; 0 turns busy polling off.
    pub(crate) fn set_busypoll(&self, limit_ns: u32) -> Result {
        if limit_ns > busypoll::MAX_NS {
            return Err(EINVAL);
        }
        self.shared().busypoll_ns.store(limit_ns, Relaxed);
        Ok(())
    }

    /// Makes `slot` also signal the calling process with `signo` (0: `SIGIO`), or stops with
    /// `signo == -1`.
    pub(crate) fn set_signal(&self, slot: usize, signo: i32) -> Result {
        let new = match signo {
            -1 => None,
            0 => Some(Arc::new(
                SigTarget::current_process(uapi::SIGIO)?,
                GFP_KERNEL,
            )?),
            s => Some(Arc::new(SigTarget::current_process(s)?, GFP_KERNEL)?),
        };
        let old = core::mem::replace(&mut self.shared().inner.lock().slots[slot].sig, new);
        drop(old);
        Ok(())
    }

    /// The channel's counters.
    ///
    /// The counters are read before the slots: once `handled` shows a batch, everything the
    /// thread did for it (such as releasing a dead signal target) shows in the slots too.
    pub(crate) fn stats(&self) -> uapi::Stats {
        let shared = self.shared();
        let c = &shared.count;
        let mut st = uapi::Stats {
            handled: c.handled.load(Acquire),
            kicks: c.kicks.load(Relaxed),
            fd_kicks: c.fd_kicks.load(Relaxed),
            timer_ticks: c.timer_ticks.load(Relaxed),
            notifies: c.notifies.load(Relaxed),
            signals: c.signals.load(Relaxed),
            dropped: c.dropped.load(Relaxed),
            wakeups: c.wakeups.load(Relaxed),
            polled: c.polled.load(Relaxed),
            busypoll_ns: shared.busypoll_ns.load(Relaxed),
            thread_pid: self.thread.pid(),
            ..Default::default()
        };
        {
            let inner = shared.inner.lock();
            for s in &inner.slots {
                st.pending = st.pending.saturating_add(s.pending);
                st.attached += u32::from(s.efd.is_some());
                st.signal_slots += u32::from(s.sig.is_some());
            }
            st.timers = inner.timer_mask.count_ones();
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
             attached:\t{}\nkickfds:\t{}\ntimers:\t{}\nsignal_slots:\t{}\nbusypoll_ns:\t{}\n",
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
            s.busypoll_ns
        );
        let shared = self.shared();
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
        let fds = core::mem::replace(
            &mut *self.shared().kickfds.lock(),
            [const { None }; NR_SLOTS],
        );
        drop(fds);
    }
}
