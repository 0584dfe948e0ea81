// SPDX-License-Identifier: GPL-2.0

//! A channel: notify slots, pending kicks and the kernel thread that answers them.
//!
//! Data flows one way: an ioctl calls [`Channel::kick`] or [`Channel::attach`], which change
//! [`Inner`] under its lock and wake the thread; the thread takes the pending kicks and signals
//! the slots' eventfds with no lock held.

use crate::{
    eventfd::EventFd,
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
    prelude::*,
    sync::{
        atomic::{
            Atomic,
            Relaxed, //
        },
        Arc,
        CondVar,
        Mutex, //
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
}

/// A unit of work the thread took from [`Inner`].
struct Work {
    efd: Option<Arc<EventFd>>,
    kicks: u64,
}

impl Inner {
    /// Takes up to [`BATCH`] pending kicks of the next slot with work, with its eventfd.
    fn take_work(&mut self) -> Option<Work> {
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
        Some(Work {
            efd: s.efd.clone(),
            kicks,
        })
    }
}

/// The part of a channel shared by the file and its kernel thread.
#[pin_data]
pub(crate) struct Shared {
    #[pin]
    inner: Mutex<Inner>,
    /// Signalled when `Inner::pending_mask` goes from zero to non-zero.
    #[pin]
    work: CondVar,
    kicks: Atomic<u64>,
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
            match &work.efd {
                Some(efd) => {
                    for _ in 0..work.kicks {
                        efd.signal();
                    }
                    self.notifies.add(work.kicks, Relaxed);
                }
                None => self.dropped.add(work.kicks, Relaxed),
            }
            // The eventfd reference is released here, outside the lock.
            drop(work);
            ctx.yield_now();
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
                inner <- new_mutex!(
                    Inner {
                        slots: [EMPTY; NR_SLOTS],
                        pending_mask: 0,
                        cursor: 0,
                    },
                    "Channel::inner"
                ),
                work <- new_condvar!("Channel::work"),
                kicks: Atomic::new(0),
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
    pub(crate) fn kick(&self, slot: usize, count: u32) -> Result {
        let shared = self.shared();
        let mut inner = shared.inner.lock();
        let s = &mut inner.slots[slot];
        s.pending = s.pending.checked_add(count.into()).ok_or(EOVERFLOW)?;
        let was_idle = inner.pending_mask == 0;
        inner.pending_mask |= 1 << slot;
        // Counted under the lock, so the thread can never have answered more than this.
        shared.kicks.add(u64::from(count), Relaxed);
        drop(inner);
        // Only the transition to pending needs a wake-up: otherwise the thread is awake already
        // or was woken by whoever made the transition.
        if was_idle {
            shared.work.notify_one();
        }
        Ok(())
    }

    /// The channel's counters.
    pub(crate) fn stats(&self) -> uapi::Stats {
        let shared = self.shared();
        let (pending, attached) = {
            let inner = shared.inner.lock();
            inner.slots.iter().fold((0u64, 0u32), |(p, a), s| {
                (p + s.pending, a + u32::from(s.efd.is_some()))
            })
        };
        uapi::Stats {
            kicks: shared.kicks.load(Relaxed),
            notifies: shared.notifies.load(Relaxed),
            dropped: shared.dropped.load(Relaxed),
            wakeups: shared.wakeups.load(Relaxed),
            pending,
            thread_pid: self.thread.pid(),
            attached,
        }
    }
}
