// SPDX-License-Identifier: GPL-2.0

//! An open `/dev/evnotify`: the ioctls a channel answers, each decoded already by the entry
//! (`rust_evnotify.rs`). Owns the file's view of a channel: its [`Shared`] state, its worker and
//! its place in the limits. May call `shared`, `slots`, `limits`, `worker` and the leaf
//! wrappers. A new ioctl is a method here; a new way to deliver belongs to the slot state
//! (`slots.rs`, `deadlines.rs`) and to `Shared::deliver` (`shared.rs`) for the thread, or the
//! alarm's callback (`alarm.rs`) for interrupt context.

use crate::{
    eventfd::{
        KickFd,
        OpenEventFd,
        ReadHook, //
    },
    limits::OpenSlot,
    ring::Ring,
    shared::{
        Shared,
        SlotReader,
        SlotSink, //
    },
    signal::SigTarget,
    slots::{
        Extra,
        Source, //
    },
    timer::Timer,
    uapi::{
        self,
        NR_SLOTS, //
    },
    worker::{
        Served,
        Worker, //
    },
};
use kernel::{
    mm::virt::VmaNew,
    prelude::*,
    seq_file::SeqFile,
    seq_print,
    sync::{
        atomic::Relaxed,
        Arc,
        SetOnce, //
    },
    time::Instant, //
};

/// An open `/dev/evnotify`: its shared state and, once a call needs it, its worker.
pub(crate) struct Channel {
    shared: Arc<Shared>,
    /// Started (or shared) by the first call that queues work, not in `open`: `misc_open`
    /// holds the global `misc_mtx` across `open`, and creating a kthread waits for kthreadd.
    worker: SetOnce<Arc<Worker<Shared>>>,
    _open: OpenSlot,
}

impl Channel {
    /// Creates a channel, if fewer than `max` are open in all and `max_user` by the caller.
    pub(crate) fn new(max: u32, max_user: u32, busypoll_ns: u32) -> Result<Self> {
        let open = OpenSlot::take(max, max_user)?;
        let shared = Arc::pin_init(Shared::new(busypoll_ns), GFP_KERNEL_ACCOUNT)?;
        Ok(Self {
            shared,
            worker: SetOnce::new(),
            _open: open,
        })
    }

    /// Gives the channel a worker, if it has none: a new one, or `share`'s. Returns it.
    /// A failure (`ENOMEM`, `EINTR` if the caller is being killed, or the errno of moving the
    /// thread into the caller's cgroups) is the error of the call that needed the worker.
    fn join(&self, share: Option<&Arc<Worker<Shared>>>) -> Result<&Arc<Worker<Shared>>> {
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
        {
            // Under `start`, so nobody else populates them meanwhile, and `ring_lock`, so that
            // a ring mapped meanwhile is polled (`Shared::map_ring`).
            let _reg = shared.ring_lock.lock();
            if shared.ring.as_ref().is_some() {
                runner.add_ring(shared.clone())?;
            }
            runner.channels.add(1, Relaxed);
            shared.runner.populate(runner.clone());
        }
        self.worker.populate(worker);
        // What was queued meanwhile is served now: ring submissions the worker took since it
        // polls the ring (every call that queues work otherwise gets the worker first).
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
        // Allocated under `start` (`inner` is a spinlock), so that two first calls at once
        // allocate one; nothing else installs or removes it. (Not taken when the state is
        // there: `start` may be held while a worker starts.)
        let _guard = self.shared.start.lock();
        if self.shared.inner.lock().extra.is_none() {
            let new = Extra::all()?;
            self.shared.inner.lock().extra = Some(new);
        }
        Ok(())
    }

    /// Attaches the eventfd `fd` to `slot`, or detaches with `fd == -1`. The previous eventfd,
    /// if any, is released; a batch already taken by the worker still goes to it.
    ///
    /// The eventfd gets a read hook, so that its reader re-arms the slot's timer where it
    /// reads, as a timerfd's does (see `Shared::slot_read`).
    pub(crate) fn attach(&self, slot: usize, fd: i32) -> Result {
        let (efd, hook) = match fd {
            -1 => (None, None),
            fd => {
                // One lookup of `fd`, so that the hook is on the eventfd attached. The hook is
                // linked last: every step that can fail comes before, so a call that fails
                // changes nothing.
                let open = OpenEventFd::new(fd)?;
                self.shared.ensure_readers()?;
                let sink = SlotReader::new(self.shared.clone(), slot);
                (Some(open.efd()), Some(ReadHook::new(&open, sink)?))
            }
        };
        self.shared.attach(slot, efd, hook);
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
    /// Fails with `EBUSY` if the eventfd is hooked elsewhere (another slot, another channel, a
    /// KVM irqfd); hooking it again where it is hooked changes nothing. Every step that can
    /// fail comes before the hook is armed, so a failed call takes nothing from the eventfd and
    /// leaves the slot's hook as it was (it may have started the channel's worker).
    pub(crate) fn attach_kickfd(&self, slot: usize, fd: i32) -> Result {
        let hook = match fd {
            -1 => None,
            fd => {
                let sink = SlotSink {
                    shared: self.shared.clone(),
                    slot,
                };
                let Some(hook) = KickFd::new(fd, sink, |efd| self.shared.hooked_at(slot, efd))?
                else {
                    return Ok(());
                };
                self.join(None)?;
                // Its echoes wait in the slot's extra state.
                self.ensure_extra()?;
                self.shared.ensure_kickfds()?;
                Some(hook)
            }
        };
        self.shared.hook(slot, hook);
        Ok(())
    }

    /// Starts (or replaces) the periodic timer of `slot`, or cancels it with `period_ns == 0`.
    /// No tick is queued after a cancel returns. The first tick is one period from now, or at
    /// `first_ns` on CLOCK_MONOTONIC.
    pub(crate) fn set_timer(
        &self,
        slot: usize,
        period_ns: u64,
        ticks: u64,
        first_ns: Option<u64>,
    ) -> Result {
        let timer = match period_ns {
            0 => None,
            p => {
                let timer = Timer::new(p, ticks, first_ns)?;
                self.join(None)?;
                self.ensure_extra()?;
                Some(timer)
            }
        };
        // `armed` first: the alarm is armed here, on the caller's CPU (as a timerfd's hrtimer is
        // armed by `timerfd_settime`'s caller), before a worker that finishes a batch of the
        // channel meanwhile can arm it on its own. The worker holds it only while it arms the
        // alarm after a batch (never while it delivers or spins).
        let mut armed = self.shared.armed.lock();
        Shared::update(self.shared.as_arc_borrow(), true, |inner| {
            let was_idle = inner.idle();
            inner.replace_timer(slot, timer, Instant::now());
            self.shared.timed.store(inner.timer_mask, Relaxed);
            was_idle && !inner.idle()
        });
        self.shared.set_alarm(&mut armed, false);
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
            s => {
                let s = if s == 0 { uapi::SIGIO } else { s };
                Some(Arc::new(
                    SigTarget::current_process(s)?,
                    GFP_KERNEL_ACCOUNT,
                )?)
            }
        };
        if new.is_some() {
            self.ensure_extra()?;
        }
        let mut inner = self.shared.inner.lock();
        // Without the extra state, `new` is `None`: nothing to stop.
        let old = match (inner.extra_mut(slot), new) {
            (Some(x), new) => core::mem::replace(&mut x.sig, new),
            (None, new) => new,
        };
        drop(inner);
        drop(old);
        Ok(())
    }

    /// Maps the channel's ring into `vma`, creating it on the first `mmap` (see `ring.rs`);
    /// every mapping is of the same page.
    pub(crate) fn map_ring(&self, vma: &VmaNew) -> Result {
        Ring::check(vma)?;
        self.shared.map_ring(vma)
    }

    /// Takes the ring's submissions, starting the worker if the channel has none yet: what a
    /// ring's user calls when the worker asked for a wake-up. `ENXIO` without a ring.
    pub(crate) fn ring_enter(&self) -> Result {
        if self.shared.ring.as_ref().is_none() {
            return Err(ENXIO);
        }
        self.join(None)?;
        Shared::take_ring(self.shared.as_arc_borrow());
        Ok(())
    }

    /// The ring's counters, read under the channel's lock; `ENXIO` without a ring.
    pub(crate) fn ring_stats(&self) -> Result<uapi::RingStats> {
        let inner = self.shared.inner.lock();
        if !inner.ring.mapped {
            return Err(ENXIO);
        }
        Ok(inner.ring.stats.clone())
    }

    /// The channel's counters.
    ///
    /// Everything is read under the lock that the thread retires a batch under (and the alarm
    /// its ticks), so the header's identity holds in every snapshot, and once `pending` shows
    /// 0 the deliveries for everything handled are counted.
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
            st.pending = inner.pending();
            for (slot, s) in inner.slots.iter().enumerate() {
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
        st.kickfds = shared.kickfds_hooked();
        st
    }

    /// Writes the channel's state to `/proc/<pid>/fdinfo/<fd>`: counters, the ring's (`ring_*`,
    /// if it has one), then one line per slot in use. No kernel pointer is printed.
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
        if let Ok(r) = self.ring_stats() {
            seq_print!(
                m,
                "ring_sq_kicks:\t{}\nring_sq_dropped:\t{}\nring_cq_events:\t{}\nring_cq_kicks:\t{}\n\
                 ring_cq_overflow:\t{}\nring_lost_kicks:\t{}\nring_sq_head:\t{}\nring_cq_tail:\t{}\n",
                r.sq_kicks,
                r.sq_dropped,
                r.cq_events,
                r.cq_kicks,
                r.cq_overflow,
                r.lost_kicks,
                r.sq_head,
                r.cq_tail
            );
        }
        let shared = &self.shared;
        for slot in 0..NR_SLOTS {
            let (notify, pending, signo, timer) = {
                let inner = shared.inner.lock();
                let s = &inner.slots[slot];
                let x = inner.extra(slot);
                (
                    s.efd.is_some(),
                    inner.slot_pending(slot),
                    x.and_then(|x| x.sig.as_ref()).map_or(0, |t| t.signo()),
                    x.filter(|_| inner.timer_mask & (1 << slot) != 0)
                        .map(|x| x.timer.describe()),
                )
            };
            let kickfd = shared.kickfd_state(slot);
            if !notify && pending == 0 && signo == 0 && timer.is_none() && kickfd.is_none() {
                continue;
            }
            seq_print!(
                m,
                "slot:\t{slot}\tnotify: {}\tkickfd: {}\tpending: {pending}\tsignal: {signo}",
                if notify { "attached" } else { "none" },
                kickfd.unwrap_or("none")
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
        self.shared.close();
        if let Some(w) = self.worker.as_ref() {
            w.runner().channels.fetch_sub(1, Relaxed);
        }
        // Then the worker is released: the last channel's release stops its thread.
    }
}
