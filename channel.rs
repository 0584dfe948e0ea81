// SPDX-License-Identifier: GPL-2.0

//! A channel: notify slots, pending kicks and the kernel thread that answers them.
//!
//! Data flows one way: an ioctl calls [`Channel::kick`] or [`Channel::attach`], which change
//! [`Inner`] under its lock and wake the thread; the thread takes the pending kicks and signals
//! the slots' eventfds with no lock held.

use crate::{
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
            Atomic,
            Relaxed, //
        },
        Arc,
        CondVar,
        Mutex,
        SpinLockIrq, //
    }, //
};

/// Most kicks the thread answers for one slot before it re-checks the stop flag and the other
/// slots, so a huge burst can neither delay `close` nor starve the other slots.
const BATCH: u64 = 1024;

/// Channel ids, used to name the threads.
static NEXT_ID: Atomic<u32> = Atomic::new(0);

/// One notify slot.
struct Slot {
    /// The eventfd to signal, if one is attached. Shared so the thread can signal it unlocked.
    efd: Option<Arc<EventFd>>,
    /// Kicks accepted but not yet taken by the thread.
    pending: u64,
}

/// The state guarded by [`Shared::inner`].
struct Inner {
    slots: [Slot; NR_SLOTS],
    /// Bit `n` is set if and only if `slots[n].pending != 0`.
    pending_mask: u64,
    /// Where the thread looks first, so that slots are served round-robin.
    cursor: usize,
    /// A kick eventfd was closed by user space and waits to be released by the thread.
    hangup: bool,
}

/// A unit of work the thread took from [`Inner`].
enum Work {
    /// Signal `efd` (or count as dropped if none) `kicks` times.
    Kicks {
        efd: Option<Arc<EventFd>>,
        kicks: u64,
    },
    /// Release the kick eventfds that user space closed.
    Reap,
}

impl Inner {
    /// Adds `count` kicks to `slot`; returns whether the thread must be woken (the transition
    /// from idle to pending: otherwise it is awake or already being woken).
    fn queue(&mut self, slot: usize, count: u64) -> bool {
        let s = &mut self.slots[slot];
        // Saturates only past 2^64 pending kicks, which an eventfd write can ask for.
        s.pending = s.pending.saturating_add(count);
        let was_idle = self.pending_mask == 0 && !self.hangup;
        self.pending_mask |= 1 << slot;
        was_idle
    }

    /// Takes up to [`BATCH`] pending kicks of the next slot with work, with its eventfd.
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
            efd: s.efd.clone(),
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
        self.shared.fd_kicks.add(count, Relaxed);
        self.shared.queue(self.slot, count);
    }

    fn hangup(&self) {
        let sh = &self.shared;
        let wake = {
            let mut inner = sh.inner.lock();
            let was_idle = inner.pending_mask == 0 && !inner.hangup;
            inner.hangup = true;
            was_idle
        };
        if wake {
            sh.work.notify_one();
        }
    }
}

/// The part of a channel shared by the file, its kernel thread and its kick eventfds.
#[pin_data]
pub(crate) struct Shared {
    /// Taken from kick eventfd wake-ups, in atomic context: hence a spinlock with IRQs off.
    #[pin]
    inner: SpinLockIrq<Inner>,
    /// Signalled when `Inner` goes from idle to having work.
    #[pin]
    work: CondVar,
    /// Ordered before `inner`; never taken from atomic context.
    #[pin]
    kickfds: Mutex<KickFds>,
    kicks: Atomic<u64>,
    fd_kicks: Atomic<u64>,
    notifies: Atomic<u64>,
    dropped: Atomic<u64>,
    wakeups: Atomic<u64>,
}

impl ThreadWork for Shared {
    fn run(&self, ctx: &ThreadCtx) {
        let mut slept = false;
        loop {
            let mut guard = self.inner.lock();
            let work = loop {
                if ctx.should_stop() {
                    return;
                }
                if let Some(work) = guard.take_work() {
                    break work;
                }
                // A pending signal can only be `kthread_stop`'s, which the loop checks.
                let _ = self.work.wait_interruptible(&mut guard);
                slept = true;
            };
            drop(guard);
            if core::mem::take(&mut slept) {
                self.wakeups.add(1, Relaxed);
            }
            match &work {
                Work::Kicks {
                    efd: Some(efd),
                    kicks,
                } => {
                    for _ in 0..*kicks {
                        efd.signal();
                    }
                    self.notifies.add(*kicks, Relaxed);
                }
                Work::Kicks { efd: None, kicks } => self.dropped.add(*kicks, Relaxed),
                Work::Reap => self.reap_hung_up(),
            }
            // The eventfd reference is released here, outside the lock.
            drop(work);
            ctx.yield_now();
        }
    }
}

impl Shared {
    /// Queues `count` kicks on `slot` and wakes the thread if it may be asleep.
    fn queue(&self, slot: usize, count: u64) {
        let wake = {
            let mut inner = self.inner.lock();
            // Counted under the lock, so the thread can never have answered more than this.
            self.kicks.add(count, Relaxed);
            inner.queue(slot, count)
        };
        if wake {
            self.work.notify_one();
        }
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
}

/// An open `/dev/evnotify`: its shared state and the thread serving it.
pub(crate) struct Channel {
    thread: KThread<Shared>,
}

impl Channel {
    /// Creates a channel and starts its thread.
    pub(crate) fn new() -> Result<Self> {
        const EMPTY: Slot = Slot {
            efd: None,
            pending: 0,
        };
        let shared = Arc::pin_init(
            pin_init!(Shared {
                inner <- new_spinlock_irq!(
                    Inner {
                        slots: [EMPTY; NR_SLOTS],
                        pending_mask: 0,
                        cursor: 0,
                        hangup: false,
                    },
                    "Channel::inner"
                ),
                work <- new_condvar!("Channel::work"),
                kickfds <- new_mutex!([const { None }; NR_SLOTS], "Channel::kickfds"),
                kicks: Atomic::new(0),
                fd_kicks: Atomic::new(0),
                notifies: Atomic::new(0),
                dropped: Atomic::new(0),
                wakeups: Atomic::new(0),
            }),
            GFP_KERNEL,
        )?;
        let id = NEXT_ID.fetch_add(1, Relaxed);
        Ok(Self {
            thread: KThread::spawn(shared, id)?,
        })
    }

    fn shared(&self) -> &Shared {
        self.thread.data()
    }

    /// Attaches the eventfd `fd` to `slot`, or detaches with `fd == -1`. The previous eventfd,
    /// if any, is released; a signal already in flight to it still completes.
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

    /// The channel's counters.
    pub(crate) fn stats(&self) -> uapi::Stats {
        let shared = self.shared();
        let (pending, attached) = {
            let inner = shared.inner.lock();
            inner.slots.iter().fold((0u64, 0u32), |(p, a), s| {
                (p.saturating_add(s.pending), a + u32::from(s.efd.is_some()))
            })
        };
        let kickfds = shared
            .kickfds
            .lock()
            .iter()
            .flatten()
            .filter(|k| !k.hung_up())
            .count() as u32;
        uapi::Stats {
            kicks: shared.kicks.load(Relaxed),
            fd_kicks: shared.fd_kicks.load(Relaxed),
            notifies: shared.notifies.load(Relaxed),
            dropped: shared.dropped.load(Relaxed),
            wakeups: shared.wakeups.load(Relaxed),
            pending,
            thread_pid: self.thread.pid(),
            attached,
            kickfds,
            reserved: 0,
        }
    }
}

impl Channel {
    /// Writes the channel's state to `/proc/<pid>/fdinfo/<fd>`: counters, then one line per
    /// slot in use. No kernel pointer is printed.
    pub(crate) fn show_fdinfo(&self, m: &SeqFile) {
        let s = self.stats();
        seq_print!(
            m,
            "thread_pid:\t{}\nkicks:\t{}\nfd_kicks:\t{}\nnotifies:\t{}\ndropped:\t{}\n\
             wakeups:\t{}\npending:\t{}\nattached:\t{}\nkickfds:\t{}\n",
            s.thread_pid,
            s.kicks,
            s.fd_kicks,
            s.notifies,
            s.dropped,
            s.wakeups,
            s.pending,
            s.attached,
            s.kickfds
        );
        let shared = self.shared();
        for slot in 0..NR_SLOTS {
            let (notify, pending) = {
                let inner = shared.inner.lock();
                (inner.slots[slot].efd.is_some(), inner.slots[slot].pending)
            };
            let kickfd = match &shared.kickfds.lock()[slot] {
                None => "none",
                Some(k) if k.hung_up() => "closed",
                Some(_) => "attached",
            };
            if notify || pending != 0 || kickfd != "none" {
                seq_print!(
                    m,
                    "slot:\t{slot}\tnotify: {}\tkickfd: {kickfd}\tpending: {pending}\n",
                    if notify { "attached" } else { "none" }
                );
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
