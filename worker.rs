// SPDX-License-Identifier: GPL-2.0

//! Workers: the kernel threads that serve channels, one each by default or shared. Owns the
//! run queue and the thread's loop; knows what it serves only through [`Served`], and calls
//! only the leaf wrappers (`kthread`, `busypoll`, `compat`) and `uapi` for a bound.
//!
//! A worker keeps a run queue of the channels that have work or a deadline due, each at most
//! once, and serves them round robin: one batch of one channel ([`Served::serve`]), then that
//! channel goes to the back of the queue if it has more. So a flooded channel delays a quiet
//! one by at most one batch per channel ahead of it. With the queue empty the worker spins for
//! an adaptive window ([`busypoll`]), then sleeps.

use crate::{
    busypoll,
    compat::{
        new_irq_safe_lock,
        IrqSafeLock, //
    },
    kcov,
    kthread::{
        KThread,
        ThreadCtx,
        ThreadWork, //
    },
    uapi, //
};
use kernel::{
    list::{
        List,
        ListArc,
        ListItem,
        TryNewListArc, //
    },
    new_condvar, new_mutex,
    prelude::*,
    sync::{
        atomic::{
            Acquire,
            Atomic,
            Relaxed,
            Release, //
        },
        Arc,
        ArcBorrow,
        CondVar,
        Mutex, //
    },
    time::{
        Delta,
        Instant,
        Monotonic, //
    },
};

/// How the thread came to the channel it serves next: what the channel's `wakeups` and
/// `polled` count, once, if the channel has work.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Woke {
    /// From sleep.
    Slept,
    /// From a busy poll that caught the work.
    Polled,
    /// Neither: it was busy, or the wake-up was counted already.
    Busy,
}

/// What a worker serves: something that can sit in its run queue and be served one batch at a
/// time. The worker knows what it serves only through this trait, as `kernel::workqueue` knows
/// its work items through `WorkItem`.
///
/// # Safety
///
/// An implementer's list links of ID 0 are used by one [`Runner`]'s queue only, the same for
/// the item's whole life ([`Runner::dequeue`] relies on it), and it is enqueued only under its
/// own lock, after checking that it is not closed.
pub(crate) unsafe trait Served:
    ListItem<0> + TryNewListArc<0> + Send + Sync + Sized + 'static
{
    /// Serves once, for the worker whose run queue is `runner`: at most one batch, then puts
    /// itself back at the end of the queue (`Runner::enqueue`) if it has more. `woke` tells
    /// how the thread came to it; the first that has work counts it, and sets it to
    /// [`Woke::Busy`].
    ///
    /// With `spin` not zero, a channel may wait up to `spin` for its next kick or ring
    /// submission when it runs out of work, unless another channel's ring needs polling
    /// (`ctx.busy_poll`: it stops as soon as another channel waits, another task wants the
    /// CPU, or the thread is asked to stop).
    /// Returns the idle spell it ended in, if it spun and its spin did not end with its own
    /// next batch alone, nor with an event that left it nothing to do yet while no other
    /// channel waited: the thread goes on with that spell (its window, its count of wake-ups)
    /// as if its own spin had begun then.
    fn serve(
        self: Arc<Self>,
        runner: &Runner<Self>,
        ctx: &ThreadCtx,
        spin: Delta,
        woke: &mut Woke,
    ) -> Option<IdleSpell>;

    /// The KCOV common handle under which serving it is recorded (see `kcov`).
    fn coverage(&self) -> kcov::Handle;

    /// Whether its ring (see [`Runner::add_ring`]) has submissions not taken: a hint, read
    /// without its lock.
    fn ring_submitted(&self) -> bool;

    /// Takes its ring's submissions, if it has some not taken, queueing it on the worker if they
    /// gave it work.
    fn take_ring(this: ArcBorrow<'_, Self>);

    /// Asks its ring's user for a wake-up after the next submission, or stops asking (see
    /// `Ring::need_wakeup`).
    fn ring_wakeup(&self, on: bool);
}

/// An idle spell that a channel began while it spun for its next kick (`Served::serve`).
pub(crate) struct IdleSpell {
    /// When the spin began.
    pub(crate) since: Instant<Monotonic>,
    /// Whether something ended it before the window ran out (another channel queued, its own
    /// kick or submission, a deadline), rather than the window, another task wanting the CPU,
    /// `kthread_stop` or `close`.
    pub(crate) caught: bool,
    /// Whether what ended it was not a deadline (ticks or an echo the alarm queued, another
    /// channel queued only by a deadline): read when the spin ended, as the thread reads its
    /// own flags when its own spin ends.
    pub(crate) event: bool,
}

/// Worker ids, which name the threads; 0 is "no worker" in the UAPI.
static NEXT_ID: Atomic<u64> = Atomic::new(0);

/// The run queue, and whether the thread waits for it to fill.
struct Queue<T: Served> {
    list: List<T>,
    /// The thread waits on `Runner::work` or is about to (or has just woken and not yet
    /// retaken the lock, when a notify is merely needless): an enqueue onto the empty list
    /// notifies it. A thread that is busy or polling finds the channel without a wake-up,
    /// which would only cost the kick path the wait queue's lock.
    sleeping: bool,
}

/// What a worker's thread shares with its channels: the run queue and how to wake the thread.
#[pin_data]
pub(crate) struct Runner<T: Served> {
    /// Channels with work or a deadline due, in the order they are served. Taken in wake-up
    /// and timer callbacks, under a channel's lock (which is always taken first).
    #[pin]
    queue: IrqSafeLock<Queue<T>>,
    /// Signalled when a channel joins the empty queue of a sleeping thread.
    #[pin]
    work: CondVar,
    /// Set when an event (a kick, a hang-up, a timer change) queues a channel, for the busy
    /// poll to see; cleared, under the queue's lock, only when the queue is empty.
    event: Atomic<bool>,
    /// The same for a deadline falling due: it ends a busy poll, but does not keep the window
    /// open, since the thread sleeps until deadlines anyway.
    due: Atomic<bool>,
    /// The channels with a ring, which the thread polls with the run queue, as io_uring's
    /// SQPOLL thread polls its rings: while it spins, after each batch, and once more after
    /// asking their users for a wake-up, before it sleeps. Taken before a channel's lock.
    #[pin]
    rings: Mutex<KVec<Arc<T>>>,
    /// Held by `add_ring` while it grows `rings`: one at a time, so that meanwhile the list
    /// can only shrink (`remove_ring`).
    #[pin]
    grow: Mutex<()>,
    /// How many there are, so that a worker with none never takes `rings`.
    nr_rings: Atomic<u32>,
    /// How many channels the run queue holds, for a channel being served to see, without the
    /// queue's lock, whether others wait ([`Runner::others_waiting`]).
    waiting: Atomic<u32>,
    /// The busy-poll limit, in nanoseconds; 0 turns polling off.
    pub(crate) busypoll_ns: Atomic<u32>,
    /// Open channels that use this worker.
    pub(crate) channels: Atomic<u32>,
    /// Names the thread `evnotify/<id>`.
    pub(crate) id: u32,
}

impl<T: Served> Runner<T> {
    /// Puts `channel` at the back of the run queue, unless it is there already, and wakes the
    /// thread if it sleeps. `event` tells an event from a deadline (see [`Runner::due`]).
    ///
    /// Called under the channel's lock, so that a channel is never queued once it is closed.
    pub(crate) fn enqueue(&self, channel: ArcBorrow<'_, T>, event: bool) {
        // Fails if the channel is queued already (or just being taken off the queue by the
        // thread, which then serves it and so sees what the caller changed).
        let Some(item) = ListArc::try_from_arc_borrow(channel) else {
            return;
        };
        let mut queue = self.queue.lock();
        let wake = queue.list.is_empty() && queue.sleeping;
        queue.list.push_back(item);
        // Under the lock, so the thread cannot clear it before it finds the channel; before the
        // count, for `queued_by`.
        if event {
            self.event.store(true, Relaxed);
        } else {
            self.due.store(true, Relaxed);
        }
        self.waiting.fetch_add(1, Release);
        drop(queue);
        // A sleeping thread found the queue empty under its lock, and is on the wait queue
        // before it lets go of it; with channels in the queue it is awake or being woken.
        if wake {
            self.work.notify_one();
        }
    }

    /// Whether no channel waits in the run queue (a hint, as `others_waiting`); if so, forgets
    /// the events and deadlines that queued channels before (as the thread does when it finds
    /// the queue empty), so that the flags say what comes next.
    pub(crate) fn quiet(&self) -> bool {
        // Nothing to forget: no lock (a polled channel's every round trip asks).
        if self.waiting.load(Relaxed) == 0 && !self.event.load(Relaxed) && !self.due.load(Relaxed) {
            return true;
        }
        let queue = self.queue.lock();
        let quiet = queue.list.is_empty();
        if quiet {
            self.event.store(false, Relaxed);
            self.due.store(false, Relaxed);
        }
        drop(queue);
        quiet
    }

    /// Whether the worker polls a ring: a channel then spins for its own next kick only if
    /// the ring is its own (`Served::serve`).
    pub(crate) fn polls_rings(&self) -> bool {
        self.nr_rings.load(Relaxed) != 0
    }

    /// Whether channels wait in the run queue and, if so, whether an event queued one since
    /// the queue was last found empty (else only deadlines did): a hint, read without its lock.
    pub(crate) fn queued_by(&self) -> Option<bool> {
        // Acquire: `enqueue` sets the flag before it counts the channel (Release).
        (self.waiting.load(Acquire) != 0).then(|| self.event.load(Relaxed))
    }

    /// Whether channels wait in the run queue: a hint, read without its lock.
    pub(crate) fn others_waiting(&self) -> bool {
        self.waiting.load(Relaxed) != 0
    }

    /// Polls `channel`'s ring from now on. `ENOMEM` if it cannot. Allocates the new list with
    /// `rings` released, so that the thread, which takes it to poll, never waits for a
    /// caller's reclaim.
    pub(crate) fn add_ring(&self, channel: Arc<T>) -> Result {
        let _grow = self.grow.lock();
        let len = self.rings.lock().len();
        let mut list = KVec::with_capacity(len + 1, GFP_KERNEL_ACCOUNT)?;
        let mut rings = self.rings.lock();
        for c in Iterator::chain(rings.drain_all(), Some(channel)) {
            // Never fails: only `add_ring` pushes (`rings` is private), under `grow`, so `rings`
            // holds `len` at most.
            let _ = list.push_within_capacity(c);
        }
        let old = core::mem::replace(&mut *rings, list);
        self.nr_rings.store(rings.len() as u32, Relaxed);
        drop(rings);
        drop(old);
        Ok(())
    }

    /// Stops polling `channel`'s ring (when it closes).
    pub(crate) fn remove_ring(&self, channel: &T) {
        let mut rings = self.rings.lock();
        let Some(at) = rings.iter().position(|c| core::ptr::eq(&**c, channel)) else {
            return;
        };
        let gone = rings.remove(at).ok();
        self.nr_rings.store(rings.len() as u32, Relaxed);
        drop(rings);
        drop(gone);
    }

    /// Whether a ring has submissions not taken: a hint, for the busy poll.
    fn rings_submitted(&self) -> bool {
        self.nr_rings.load(Relaxed) != 0 && self.rings.lock().iter().any(|c| c.ring_submitted())
    }

    /// Takes the rings' submissions, queueing their channels, after asking their users for a
    /// wake-up if the thread is about to `sleep`, or withdrawing that request (the thread is
    /// awake, and polls them again before it sleeps).
    fn poll_rings(&self, sleep: bool) {
        if self.nr_rings.load(Relaxed) == 0 {
            return;
        }
        // O(rings) per batch, as io_uring's SQPOLL thread walks its rings.
        for c in self.rings.lock().iter() {
            // A submission published before this is seen below, or its publisher sees the
            // request: the flag is set with full ordering, as is the publisher's check.
            c.ring_wakeup(sleep);
            T::take_ring(c.as_arc_borrow());
        }
    }

    /// Takes `channel` off the run queue if it is there (when it closes).
    pub(crate) fn dequeue(&self, channel: &T) {
        let mut queue = self.queue.lock();
        // SAFETY: By `Served`'s safety requirement, `channel`'s links of ID 0 are used by this
        // queue only, so it is in no other list of that ID.
        let item = unsafe { queue.list.remove(channel) };
        if item.is_some() {
            self.waiting.fetch_sub(1, Relaxed);
        }
        drop(queue);
        // The channel's file still holds it, so this is not the last reference.
        drop(item);
    }
}

/// Most turns of its loop (a batch each, or up to 16 of a polling user, with at most the
/// busy-poll window of its own spin and the limit of the channel's spins in each) the thread
/// makes, alone on its CPU, between two passes through the scheduler, counted from its last
/// sleep: a flooded or polled worker still gets its voluntary context switches, which
/// RCU-Tasks waits for (preemption is not its quiescent state) and kernels without full
/// preemption need (`cond_resched()` has no Rust binding).
const YIELD_EVERY: u32 = 16;

impl<T: Served> ThreadWork for Runner<T> {
    fn run(self: Pin<&Self>, ctx: &ThreadCtx) {
        let mut window = busypoll::Window::default();
        // Turns since the thread last went through the scheduler, or slept.
        let mut streak = 0;
        // The idle spell the last channel served began while it spun for its next kick, if any.
        let mut spell: Option<IdleSpell> = None;
        // Starting counts as a wake-up: the first kicks may arrive before the first sleep.
        let mut woke = Woke::Slept;
        // The thread's own work (its wait for work, its rings' polling) is recorded for its
        // starter's KCOV collector, if any, between the sections of the channels it serves;
        // not its sleep, since a section holds a buffer of the collector's size until it ends.
        // SAFETY: This is the worker's kernel thread (only the trampoline makes a `ThreadCtx`),
        // in task context, holding no lock, in no section (the trampoline's ended before `run`)
        // and with no KCOV of its own; the section is ended before the next one opens (below),
        // and dropped at any return.
        let mut own = unsafe { kcov::Section::start(ctx.coverage()) };
        loop {
            let mut queue = self.queue.lock();
            // When the queue ran empty, and whether the spin since caught a channel: a
            // channel's spin for its next kick is this idle spell's, begun when it began.
            // What ended a channel's spin: the flags the thread reads at the pop below may have
            // changed since (it may have yielded), and what was queued meanwhile did not end it.
            let mut ended_by = None;
            let (mut idle_since, mut spun, mut caught) = match spell.take() {
                Some(s) => {
                    woke = Woke::Busy;
                    if s.caught {
                        ended_by = Some(s.event);
                        if !s.event {
                            // A deadline: as after the thread's own spin, the window closes
                            // (the channel may not be queued, with nothing to deliver).
                            window.adapt(0, self.busypoll_ns.load(Relaxed), false, false);
                        }
                    }
                    (Some(s.since), true, s.caught)
                }
                None => (None, false, false),
            };
            let mut asked = false;
            let item = loop {
                if ctx.should_stop() {
                    return;
                }
                if let Some(item) = queue.list.pop_front() {
                    self.waiting.fetch_sub(1, Relaxed);
                    break item;
                }
                // Under the lock, so no channel queued after this check is missed.
                self.event.store(false, Relaxed);
                self.due.store(false, Relaxed);
                if idle_since.is_none() {
                    idle_since = Some(Instant::<Monotonic>::now());
                    // A wake-up that found no work is not the next channel's: it counts the
                    // sleep or spin that ends this idle spell.
                    woke = Woke::Busy;
                }
                let limit = self.busypoll_ns.load(Relaxed);
                let spin_ns = window.ns().min(limit.into());
                if !spun && spin_ns != 0 {
                    spun = true;
                    drop(queue);
                    caught =
                        ctx.busy_poll(Instant::now(), Delta::from_nanos(spin_ns as i64), || {
                            self.event.load(Relaxed)
                                || self.due.load(Relaxed)
                                || self.rings_submitted()
                        });
                    if caught {
                        // This withdraws every request for a wake-up: the thread asks again
                        // before it sleeps.
                        self.poll_rings(false);
                        asked = false;
                    }
                    queue = self.queue.lock();
                    continue;
                }
                if !asked && self.nr_rings.load(Relaxed) != 0 {
                    asked = true;
                    drop(queue);
                    self.poll_rings(true);
                    queue = self.queue.lock();
                    continue;
                }
                if own.is_open() {
                    // Ended outside the lock (see `Section::end`), then the queue looked at
                    // again.
                    drop(queue);
                    own.end();
                    queue = self.queue.lock();
                    continue;
                }
                queue.sleeping = true;
                // A pending signal can only be `kthread_stop`'s, which the loop checks.
                let _ = self.work.wait_interruptible(&mut queue);
                queue.sleeping = false;
                if ctx.coverage().is_set() {
                    // Reopened outside the lock (a start may allocate).
                    drop(queue);
                    // SAFETY: As above; `own` has ended.
                    own = unsafe { kcov::Section::start(ctx.coverage()) };
                    queue = self.queue.lock();
                }
                woke = Woke::Slept;
                // Through the scheduler: the count of turns without it starts again (not at
                // every idle spell: a polled ping-pong has one per round trip). And what a
                // spin caught before the sleep did not end this spell.
                streak = 0;
                caught = false;
                ended_by = None;
            };
            let event = ended_by.unwrap_or_else(|| self.event.load(Relaxed));
            drop(queue);
            own.end();
            // Serving a channel is recorded for its opener's KCOV collector, if any (as vhost's
            // worker records each work item for its owner).
            // SAFETY: As for `own`, which has ended; the section is dropped before the next one
            // opens, and at any return.
            let cov = unsafe { kcov::Section::start(item.coverage()) };
            if let Some(idle) = idle_since {
                let idle_ns = idle.elapsed().as_nanos().max(0) as u64;
                // Only an event caught counts, and keeps the window: a deadline, which ends the
                // spin too, does not make spinning worthwhile (the thread sleeps until
                // deadlines anyway), as it did before workers were shared.
                let caught = caught && event;
                window.adapt(idle_ns, self.busypoll_ns.load(Relaxed), caught, event);
                if caught && woke == Woke::Busy {
                    woke = Woke::Polled;
                }
            }
            // The channel counts the wake-up if it had work; else the next one does.
            // The worker's spin, for the channel's next kick, unless the worker polls more than
            // one ring (others would wait unpolled meanwhile).
            let spin = if self.nr_rings.load(Relaxed) <= 1 {
                Delta::from_nanos(window.ns().min(self.busypoll_ns.load(Relaxed).into()) as i64)
            } else {
                Delta::ZERO
            };
            spell = T::serve(item.into_arc(), self.get_ref(), ctx, spin, &mut woke);
            drop(cov);
            // SAFETY: As for the first `own`: `cov` has ended.
            own = unsafe { kcov::Section::start(ctx.coverage()) };
            // Awake: the rings' users need not wake the thread. In the thread's own section: the
            // rings are other channels', whose openers' collectors this is not.
            self.poll_rings(false);
            // Through the scheduler if another task waits for this CPU (such as a reader the
            // batch just woke, on a shared CPU), and every `YIELD_EVERY` turns (a turn serves
            // one batch, or up to 16 of a polling user, with at most the busy-poll limit of
            // spinning): not after every batch, which cost a ring's polling user a third of its
            // round trip (docs/design.md, "The ring's round trip").
            streak += 1;
            if streak >= YIELD_EVERY || !ctx.alone() {
                streak = 0;
                ctx.yield_now();
            }
        }
    }
}

/// A worker: its thread and run queue. Channels hold it; the last one to close stops it.
pub(crate) struct Worker<T: Served> {
    /// Stopped first when the worker is dropped (field order), so it no longer serves.
    thread: KThread<Runner<T>>,
    runner: Arc<Runner<T>>,
}

impl<T: Served> Worker<T> {
    /// Starts a worker whose busy-poll limit is `busypoll_ns`.
    pub(crate) fn new(busypoll_ns: u32) -> Result<Arc<Self>> {
        // 1 to 2^32 - 1, round and round (a 64-bit count does not wrap): 0 is "no worker".
        let id = (NEXT_ID.fetch_add(1, Relaxed) % u64::from(u32::MAX)) as u32 + 1;
        let runner = Arc::pin_init(
            pin_init!(Runner {
                queue <- new_irq_safe_lock!(
                    Queue {
                        list: List::new(),
                        sleeping: false,
                    },
                    "Worker::queue"
                ),
                work <- new_condvar!("Worker::work"),
                event: Atomic::new(false),
                due: Atomic::new(false),
                rings <- new_mutex!(KVec::new(), "Worker::rings"),
                grow <- new_mutex!((), "Worker::grow"),
                nr_rings: Atomic::new(0),
                waiting: Atomic::new(0),
                busypoll_ns: Atomic::new(busypoll_ns.min(uapi::MAX_BUSYPOLL_NS)),
                channels: Atomic::new(0),
                id,
            }),
            GFP_KERNEL_ACCOUNT,
        )?;
        let thread = KThread::spawn(runner.clone(), id)?;
        Ok(Arc::new(Self { thread, runner }, GFP_KERNEL_ACCOUNT)?)
    }

    /// The run queue, for the channels that use this worker.
    pub(crate) fn runner(&self) -> &Arc<Runner<T>> {
        &self.runner
    }

    /// The thread's pid, as seen from the caller's pid namespace.
    pub(crate) fn pid(&self) -> i32 {
        self.thread.pid()
    }
}
