// SPDX-License-Identifier: GPL-2.0

//! A channel's alarm: the hrtimer that fires at the channel's next deadline (a timer tick or
//! an echo), delivers lone ticks itself from interrupt context, and re-arms itself within the
//! credit the channel's worker and its timer slots' readers grant. Owns the alarm's policy
//! (spacing, credit, where it is armed, following the reader); calls `shared` (the channel it
//! belongs to), the slot state and the leaf wrappers.

use crate::{
    eventfd::EventFd,
    shared::{
        Alarm,
        Shared, //
    },
    slots::{
        bits,
        Inner, //
    },
    uapi::NR_SLOTS,
};
use kernel::{
    bindings,
    cpu::CpuId,
    sync::{
        atomic::Relaxed,
        lock::{
            Backend,
            Guard, //
        },
        Arc,
        ArcBorrow, //
    },
    time::{
        hrtimer::{
            HasHrTimer,
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

/// Least time between two expiries of a channel's alarm: deadlines closer than this (up to 64
/// slots' timers and echoes, out of phase) share one, later by at most this much. Bounds one
/// channel at 10,000 alarms a second; a lone timer of the 1 ms minimum period never waits for
/// it.
const ALARM_GAP: Delta = Delta::from_micros(100);

/// Most times a channel's alarm re-arms itself before its worker has run or a timer slot's
/// eventfd is read (see the callback and `slot_read`).
const ALARM_CREDIT: u32 = 16;

/// Most ticks an expiry takes in the usual case, whose eventfds the callback holds in an array
/// of this size (of `NR_SLOTS` when more fell due together).
const ALARM_BATCH: usize = 8;

/// How the alarm is armed: at an instant of the monotonic clock, expiring in hard interrupt
/// context as a timerfd's does. Except in the build of `make coverage` (`evnotify_coverage`,
/// set by Kbuild on its KCOV kernel only), since KCOV records no hard interrupt: there it
/// expires in softirq context, where the callback opens a section, so that what it runs is
/// recorded. The callback is the same code in both, and needs only spinlocks either way.
#[cfg(not(evnotify_coverage))]
pub(crate) type AlarmMode = kernel::time::hrtimer::AbsoluteMode<Monotonic>;
#[cfg(evnotify_coverage)]
pub(crate) type AlarmMode = kernel::time::hrtimer::AbsoluteSoftMode<Monotonic>;
#[cfg(all(evnotify_coverage, not(CONFIG_KCOV)))]
compile_error!("evnotify_coverage is for a kernel with CONFIG_KCOV (Kbuild sets it there only)");

/// `deadline`, or `floor` if that is later.
fn spaced(deadline: Instant<Monotonic>, floor: Option<Instant<Monotonic>>) -> Instant<Monotonic> {
    match floor {
        Some(f) if (deadline - f).as_nanos() < 0 => f,
        _ => deadline,
    }
}

impl HrTimerCallback for Shared {
    type Pointer<'a> = Arc<Shared>;

    /// Delivers the due ticks of idle slots itself, one eventfd signal each, as timerfd's
    /// callback wakes its reader: no hop through the worker. Queues the channel on its worker
    /// for the rest (signals, catch-ups, busy slots, echoes).
    ///
    /// Re-arms itself for the next deadline, so that it stays on its CPU (the one of the
    /// caller that set the timer, as a timerfd's, or of the last reader: `slot_read`) and
    /// needs no thread, but only [`ALARM_CREDIT`] times in a row: the worker grants them each
    /// time it runs, and so does each read of a timer slot's eventfd; the worker is woken at
    /// every expiry once half are spent. A timerfd is re-armed by its reader, never in its
    /// callback, "to avoid DoS attacks specifying a very short timer period" (`fs/timerfd.c`);
    /// here the interrupt work is likewise paced by schedulable tasks: at most
    /// `ALARM_CREDIT + 1` expiries (the armed one and its re-arms) of at most one signal of
    /// each eventfd attached to the slots (as a timerfd per eventfd falling due together would
    /// cost) per run of the worker or read, and two per `EVNOTIFY_IOC_TIMER` call.
    ///
    /// In hard interrupt context (the `ktimers` thread on PREEMPT_RT; softirq in the coverage
    /// build, see [`AlarmMode`]): spinlocks only. The
    /// last reference to a detached eventfd may be dropped here, which frees it with `kfree`
    /// and `ida_free`, both fine in interrupt context.
    fn run(
        this: ArcBorrow<'_, Shared>,
        mut ctx: HrTimerCallbackContext<'_, Self>,
    ) -> HrTimerRestart {
        #[cfg(evnotify_coverage)]
        // SAFETY: In the coverage build the alarm expires in softirq context (`AlarmMode`):
        // this callback serves the hrtimer softirq, in no section of it (softirq handling is
        // never re-entered on a CPU: `kernel/softirq.c` runs it only when not `in_interrupt()`,
        // so kcov's `t->kcov_softirq` is unset here; and this callback opens no other),
        // and drops this one before it returns.
        let _cov = unsafe { crate::kcov::Section::start_in_softirq(this.cov) };
        let now = Instant::now();
        let mut inner = this.inner.lock();
        if inner.closed {
            inner.alarm.at = None;
            return HrTimerRestart::NoRestart;
        }
        // Firing: armed for now until the re-arm below, so that `set_alarm` leaves it to this
        // callback (with the credit it grants) while the lock is dropped to signal.
        inner.alarm.at = Some(now);
        // Where it re-arms itself, if it does.
        inner.alarm.cpu = CpuId::current().as_u32();
        inner.alarm.floor = Some(now + ALARM_GAP);
        // Signalled first, the next deadline found after: the readers are woken sooner.
        let taken = inner.fire_timers(now, true);
        if taken != 0 {
            // Their eventfds are held in an array: a small one at nearly every expiry, since
            // this runs in interrupt context, one of a slot each when more fell due together.
            if taken.count_ones() as usize <= ALARM_BATCH {
                deliver::<ALARM_BATCH, _>(&this, inner, taken);
            } else {
                deliver::<NR_SLOTS, _>(&this, inner, taken);
            }
            inner = this.inner.lock();
            inner.alarm_delivered(taken);
            if inner.closed {
                // `close` cancels the alarm, waiting for this callback: nothing to re-arm.
                inner.alarm.at = None;
                return HrTimerRestart::NoRestart;
            }
        }
        let next = inner.next_deadline().map(|d| spaced(d, inner.alarm.floor));
        let again = next.filter(|_| inner.alarm.credit > 0);
        if again.is_some() {
            inner.alarm.credit -= 1;
        }
        inner.alarm.at = again;
        let refill = next.is_some() && inner.alarm.credit <= ALARM_CREDIT / 2;
        // The worker is woken after the readers, to deliver the rest or to grant more re-arms
        // (not for a closed channel: both paths here checked `closed` under this lock).
        if !inner.idle() || refill {
            Shared::wake_worker(this, &inner, false);
        }
        drop(inner);
        let Some(at) = again else {
            return HrTimerRestart::NoRestart;
        };
        // From its own expiry, by the gap to `at` (rounded up to the timer resolution in
        // low-resolution mode): once, since `at` is past `now`, and so past the expiry.
        let expiry = this.alarm.expires();
        ctx.forward(expiry, at - expiry);
        HrTimerRestart::Restart
    }
}

/// Signals the eventfds of the slots whose ticks the alarm took (`taken`, at most `N`), as
/// they were attached when taken: their references are taken under `inner`, which is then
/// released, since the eventfd may be a kick eventfd of this channel, whose wake-up takes
/// `inner`. Tagged as a channel's signal, so such a loop is an echo.
fn deliver<const N: usize, B: Backend>(this: &Shared, inner: Guard<'_, Inner, B>, taken: u64) {
    let mut slots = bits(taken);
    let efds: [Option<Arc<EventFd>>; N] =
        core::array::from_fn(|_| slots.next().and_then(|slot| inner.slots[slot].efd.clone()));
    drop(inner);
    let mut signalled = 0;
    for efd in efds.iter().flatten() {
        efd.signal();
        signalled += 1;
    }
    let c = &this.count;
    c.notifies.add(signalled, Relaxed);
    let lost = u64::from(taken.count_ones()) - signalled;
    if lost != 0 {
        c.dropped.add(lost, Relaxed);
    }
}

impl Shared {
    /// Arms the alarm for the channel's next deadline (one armed already is left to fire once
    /// and find nothing, if the channel has none, and cancelled at close); the
    /// worker (`grant`) grants it [`ALARM_CREDIT`] re-arms of its own, an ioctl at least one.
    /// Alarms are spaced at least `ALARM_GAP` apart, counted from when the last one fired. An
    /// alarm armed to fire by then already (by its
    /// callback, perhaps) or firing is left where it is, on its CPU: the deadline is read under
    /// the same lock as the alarm's state, so that a callback that is firing (`at` is its
    /// expiry's time until it re-arms) or just re-armed it is seen.
    pub(crate) fn set_alarm(self: &Arc<Self>, alarm: &mut Alarm, grant: bool) {
        {
            let mut inner = self.inner.lock();
            let deadline = inner.next_deadline();
            let a = &mut inner.alarm;
            // The worker grants re-arms (as do the owner's reads, `slot_read`): an ioctl grants
            // one, so that a user's calls cannot keep the alarm going without the thread or
            // reads (a timerfd gives one expiry per call), and its first expiry wakes the
            // worker for more.
            a.credit = if grant { ALARM_CREDIT } else { a.credit.max(1) };
            // No deadline and no alarm, as for a channel with no timer or echo after each
            // batch: nothing to cancel or start (and no expiry to space the next one from).
            if deadline.is_none() && a.at.is_none() && alarm.handle.is_none() {
                return;
            }
            // An alarm that will fire by the deadline (or is firing) re-arms itself for what is
            // due next, with the credit just granted: left alone, it stays on its CPU.
            if let (Some(at), Some(_)) = (a.at, alarm.handle.as_ref()) {
                let by_then = match deadline {
                    Some(d) => (spaced(d, a.floor) - at).as_nanos() >= 0,
                    None => true,
                };
                if by_then {
                    return;
                }
            }
        }
        // Cancelling waits for a running callback, which takes `inner`, the run queue and the
        // wait-queue locks of the eventfds it signals (and, through their waiters, other
        // channels' `inner` and run queues): none is held here. A reader's restart
        // (`slot_read`) stops at `live`, cleared under `inner` before the handle goes.
        self.inner.lock().alarm.live = false;
        drop(alarm.handle.take());
        let mut inner = self.inner.lock();
        if inner.closed {
            // `close` takes the handle after it set `closed`: nothing to start.
            return;
        }
        let deadline = inner.next_deadline();
        let a = &mut inner.alarm;
        // Looked at once the alarm cannot fire any more: one that was due when cancelled
        // spaces the next as if it had fired.
        if let Some(at) = a.at.take() {
            if (Instant::now() - at).as_nanos() >= 0 {
                a.floor = Some(at + ALARM_GAP);
            }
        }
        let at = deadline.map(|d| spaced(d, a.floor));
        a.at = at;
        // Started under `inner` (before the hrtimer base's lock, as in `slot_read`), with
        // interrupts off, so that the CPU recorded is the one it was started on: this one
        // (on a `nohz_full` CPU the kernel may place it on another; the next expiry records
        // where it runs).
        let handle = at.map(|at| self.clone().start(at));
        if handle.is_some() {
            a.live = true;
            a.cpu = CpuId::current().as_u32();
        }
        drop(inner);
        // Stored after `inner` is released: dropping a handle there (there is none, it was
        // taken above) would cancel its timer, waiting for a callback that takes `inner`.
        let none = core::mem::replace(&mut alarm.handle, handle);
        drop(none);
    }

    /// The channel's owner read the notify eventfd of `slot` (a
    /// [`ReadHook`](crate::eventfd::ReadHook)'s wake-up: in the reading task, interrupts off,
    /// under the eventfd's wait-queue lock). If the slot has a timer, grants the alarm
    /// [`ALARM_CREDIT`] re-arms and, if it is armed on another CPU, restarts it, for the same
    /// expiry, on this one: as a timerfd is re-armed by its reader in `read`, so that the
    /// expiry wakes the reader where it sleeps, and the reader's reads, not only the thread's
    /// runs, pace the interrupt work. Left alone while the callback runs (it re-arms itself,
    /// where it runs), while `set_alarm` replaces the timer and after `close` (`live` is
    /// false), and when it is not armed: an alarm that stopped for want of re-arms usually
    /// owes ticks by then, a catch-up, which is the thread's (it is woken at the expiry that
    /// stops it, and restarts it).
    pub(crate) fn slot_read(self: &Arc<Self>, slot: usize) {
        if self.timed.load(Relaxed) & (1 << slot) == 0 {
            return;
        }
        let mut inner = self.inner.lock();
        // A closed channel's alarm is not `live` (below).
        if inner.timer_mask & (1 << slot) == 0 {
            return;
        }
        let a = &mut inner.alarm;
        a.credit = a.credit.max(ALARM_CREDIT);
        let here = CpuId::current().as_u32();
        if !a.live || a.cpu == here {
            return;
        }
        let this = Arc::as_ptr(self);
        // SAFETY: `this` points to a live `Shared`. `live` is true under `inner`, which we
        // hold, so the handle of the started alarm is held and is dropped (cancelling the
        // timer, whatever started it) only after `live` is cleared under `inner` (by
        // `set_alarm`, or by `close`, which clears it with `closed`): the timer
        // restarted here is cancelled by that drop, as `HasHrTimer::start` requires, and the
        // callback's `ArcBorrow` stays backed by the handle's reference. The timer is
        // restarted only if `hrtimer_try_to_cancel` took it off its queue (1): not while its
        // callback runs (-1), which re-arms it itself, nor when it is not armed (0). Both
        // calls take the hrtimer base's lock, after `inner` (nothing takes `inner` under it).
        let moved = unsafe {
            let timer = <Shared as HasHrTimer<Shared>>::c_timer_ptr(this).cast_mut();
            let queued = bindings::hrtimer_try_to_cancel(timer) == 1;
            if queued {
                <Shared as HasHrTimer<Shared>>::start(this, self.alarm.expires());
            }
            queued
        };
        if moved {
            inner.alarm.cpu = here;
        }
    }
}
