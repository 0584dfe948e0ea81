// SPDX-License-Identifier: GPL-2.0

//! What falls due on a channel's slots, under the channel's lock: timers' ticks (late ones
//! included) and waiting echoes, the next deadline for the alarm, and which due ticks the
//! alarm delivers itself. Pure state, as `slots.rs`, whose `Inner` it extends; calls it and
//! the timer arithmetic.

use crate::{
    slots::{
        bits,
        Inner,
        Source, //
    },
    timer::Timer,
};
use kernel::{
    prelude::*,
    time::{
        Instant,
        Monotonic, //
    }, //
};

impl Inner {
    /// Queues the ticks of every timer due at `now`, and makes waiting echoes due once their
    /// time came. The caller reads the clock, so that tests of the arithmetic need not.
    ///
    /// For the `alarm`, on a channel with no ring, a lone due tick of a slot with no signal,
    /// nothing pending or in flight and an eventfd no other tick taken has is not queued but taken, one per slot, all 64 if
    /// they fell due together: they are returned in the mask, for the alarm to deliver (to the
    /// slot's eventfd, if any) and then pass to [`Inner::alarm_delivered`].
    pub(crate) fn fire_timers(&mut self, now: Instant<Monotonic>, alarm: bool) -> u64 {
        // The masks are set only with the extra state.
        if let Some(x) = self.extra.as_deref() {
            let due = bits(self.echo_mask).filter(|&slot| (now - x[slot].echo_due).as_nanos() >= 0);
            let due = due.fold(0, |mask, slot| mask | 1 << slot);
            self.echo_mask &= !due;
            self.pending_mask |= due;
        }
        // A ring's completions are posted by the thread only (`ring.rs`).
        let alarm = alarm && !self.ring.mapped;
        let mut taken = 0;
        let mut timers = bits(self.timer_mask);
        // The extra state is borrowed anew for each slot, as `queue` needs all of `self`.
        while let Some(x) = self.extra.as_deref_mut() {
            let Some(slot) = timers.next() else {
                break;
            };
            let x = &mut x[slot];
            let no_signal = x.sig.is_none();
            let (due, expired) = x.timer.take_due(now);
            if expired {
                self.timer_mask &= !(1 << slot);
            }
            let busy = self.slot_pending(slot) != 0;
            if due == 1 && alarm && no_signal && !busy && !self.signalled_by(taken, slot) {
                self.timer_ticks = self.timer_ticks.wrapping_add(1);
                self.alarm_mask |= 1 << slot;
                taken |= 1 << slot;
            } else if due != 0 {
                self.queue(slot, due, Source::Timer);
            }
        }
        taken
    }

    /// Whether the eventfd of `slot` is that of a slot in `taken`: the alarm signals an eventfd
    /// once per expiry, so that its interrupt work is one wake-up of each eventfd's waiters,
    /// as one timerfd's expiry is, however many slots share it (the thread delivers the rest).
    fn signalled_by(&self, taken: u64, slot: usize) -> bool {
        let Some(efd) = self.slots[slot].efd.as_ref() else {
            return false;
        };
        bits(taken).any(|t| self.slots[t].efd.as_ref().is_some_and(|o| o.same(efd)))
    }

    /// Marks the ticks the alarm took (the mask `fire_timers` returned) as delivered.
    pub(crate) fn alarm_delivered(&mut self, taken: u64) {
        self.alarm_mask &= !taken;
        self.handled = self.handled.wrapping_add(u64::from(taken.count_ones()));
    }

    /// Replaces (or, with `None`, cancels) the timer of `slot`. Ticks the old timer already
    /// owes are queued first: a late tick is delivered late, never skipped, even when the
    /// thread had not woken for it yet.
    /// A new timer needs the extra state: without it, only a cancel (which has nothing to do).
    pub(crate) fn replace_timer(
        &mut self,
        slot: usize,
        timer: Option<Timer>,
        now: Instant<Monotonic>,
    ) {
        self.fire_timers(now, false);
        self.timer_mask &= !(1 << slot);
        if let (Some(x), Some(timer)) = (self.extra_mut(slot), timer) {
            x.timer = timer;
            self.timer_mask |= 1 << slot;
        }
    }

    /// Whether a timer runs or an echo waits: else nothing falls due, and the clock need not
    /// be read.
    pub(crate) fn has_deadlines(&self) -> bool {
        self.timer_mask != 0 || self.echo_mask != 0
    }

    /// When the earliest timer or echo is due, if any.
    pub(crate) fn next_deadline(&self) -> Option<Instant<Monotonic>> {
        let x = self.extra.as_deref()?;
        let echoes = bits(self.echo_mask).map(|slot| x[slot].echo_due);
        Iterator::chain(
            bits(self.timer_mask).map(|slot| x[slot].timer.deadline()),
            echoes,
        )
        // `Instant<Monotonic>` is not `Ord` (its clock type is not): compared by difference,
        // with no clock read.
        .reduce(|a, b| if (b - a).as_nanos() < 0 { b } else { a })
    }
}

#[kunit_tests(rust_evnotify_deadlines)]
mod tests {
    use crate::{
        signal::SigTarget,
        slots::testing::{
            identity,
            with_extra, //
        },
        uapi,
    };
    use kernel::{
        sync::Arc,
        time::Delta, //
    };

    use super::*;

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
    fn alarm_takes_only_lone_ticks_of_idle_slots() -> Result {
        let mut i = with_extra()?;
        let min = uapi::MIN_PERIOD_NS;
        let now = Instant::now();
        let one = now - Delta::from_nanos(min as i64);
        for slot in 1..=3 {
            i.replace_timer(slot, Some(Timer::starting(one, min, 0)?), one);
        }
        // Two periods late: a catch-up, left to the thread.
        let two = now - Delta::from_nanos(2 * min as i64);
        i.replace_timer(4, Some(Timer::starting(two, min, 0)?), two);
        i.queue(2, 3, Source::Ioctl);
        i.extra.as_deref_mut().ok_or(EINVAL)?[3].sig = Some(Arc::new(
            SigTarget::current_process(uapi::SIGIO)?,
            GFP_KERNEL,
        )?);
        assert_eq!(i.fire_timers(now, true), 1 << 1);
        // Slot 2 had kicks pending, slot 3 a signal, slot 4 two ticks due.
        let pending = i.slots.iter().map(|s| s.pending);
        assert!(pending.take(5).eq([0, 0, 4, 1, 2]));
        assert_eq!((i.timer_ticks, i.pending()), (5, 8));
        assert!(identity(&i));
        // The taken tick counts against its slot's bound until delivered.
        i.queue(1, uapi::MAX_PENDING, Source::Ioctl);
        assert_eq!(
            (i.slots[1].pending, i.coalesced),
            (uapi::MAX_PENDING - 1, 1)
        );
        i.alarm_delivered(1 << 1);
        assert_eq!((i.handled, i.alarm_mask), (1, 0));
        assert!(identity(&i));
        // Nothing more is due, and the thread never takes a tick for the alarm.
        assert_eq!(i.fire_timers(now, true), 0);
        let later = now + Delta::from_nanos(min as i64);
        i.replace_timer(5, Some(Timer::starting(now, min, 0)?), now);
        assert_eq!(i.fire_timers(later, false), 0);
        assert_eq!(i.slots[5].pending, 1);
        assert!(identity(&i));
        Ok(())
    }

    #[test]
    fn alarm_takes_every_slot_due_together() -> Result {
        let mut i = with_extra()?;
        let min = uapi::MIN_PERIOD_NS;
        let now = Instant::now();
        let start = now - Delta::from_nanos(min as i64);
        for slot in 0..uapi::NR_SLOTS {
            i.replace_timer(slot, Some(Timer::starting(start, min, 0)?), start);
        }
        // One tick of every slot, none queued for the thread.
        assert_eq!(i.fire_timers(now, true), u64::MAX);
        assert_eq!((i.pending_mask, i.pending()), (0, uapi::NR_SLOTS as u64));
        assert!(identity(&i));
        i.alarm_delivered(u64::MAX);
        assert_eq!((i.handled, i.pending()), (uapi::NR_SLOTS as u64, 0));
        assert!(identity(&i));
        Ok(())
    }
}
