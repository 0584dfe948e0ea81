// SPDX-License-Identifier: GPL-2.0

//! A channel's slots and their arithmetic, under the channel's lock: pending kicks and their
//! bound, coalescing, echoes arriving, round robin, and the counters of the stats identity;
//! what falls due when (timers' ticks, echoes) is `deadlines.rs`. Pure state: it takes no
//! lock and wakes nobody (the caller holds the lock and acts on what the methods return).
//! Calls only the leaf wrappers it stores.

use crate::{
    eventfd::EventFd,
    signal::SigTarget,
    timer::Timer,
    uapi::{
        self,
        NR_SLOTS, //
    },
};
use kernel::{
    prelude::*,
    sync::Arc,
    time::{
        Delta,
        Instant,
        Monotonic, //
    }, //
};

/// Most kicks the thread answers for one slot before it re-checks the stop flag and the other
/// slots, so a huge burst can neither delay `close` nor starve the other slots.
pub(crate) const BATCH: u64 = 1024;

/// Most kicks and ticks one slot holds pending; more are coalesced (`uapi::MAX_PENDING`).
const MAX_PENDING: u64 = uapi::MAX_PENDING;

/// How long a kick caused by the channel's own notification (a feedback loop) waits.
const ECHO_DELAY: Delta = Delta::from_millis(1);

/// One notify slot: what every slot has.
pub(crate) struct Slot {
    /// The eventfd to signal, if one is attached. Shared so the thread can signal it unlocked.
    pub(crate) efd: Option<Arc<EventFd>>,
    /// Kicks and ticks accepted but not yet taken by the thread; at most [`MAX_PENDING`].
    pub(crate) pending: u64,
}

// What every channel pays per slot (README: Performance, bytes per channel).
const _: () = assert!(size_of::<Slot>() == 16);

/// What only slots with a signal, a timer or a kick eventfd need. A channel allocates these
/// for all its slots on its first such call, so that the many channels with none stay small.
///
/// The timer and the echo's time are always there, so that what runs over the masks (in the
/// alarm's interrupt) finds them without a check: each means something only while its slot's
/// bit is set in `Inner::timer_mask` or `Inner::echo_mask`, as a timerfd's hrtimer is there
/// whether or not it is armed.
pub(crate) struct Extra {
    /// The process to signal, if one asked.
    pub(crate) sig: Option<Arc<SigTarget>>,
    /// The slot's periodic timer: running if and only if the slot is in `Inner::timer_mask`.
    pub(crate) timer: Timer,
    /// When the slot's waiting echo becomes due, if the slot is in `Inner::echo_mask`.
    pub(crate) echo_due: Instant<Monotonic>,
}

/// The kernel's own side of a channel's ring, under the channel's lock: every index it relies
/// on, and the counters, as `struct evnotify_ring_stats` reports them (its `sq_head` is the
/// next submission to take, its `cq_tail` where the next completion goes).
#[derive(Default)]
pub(crate) struct RingState {
    /// Whether user space mapped the ring: set once (`Shared::map_ring`), never cleared.
    pub(crate) mapped: bool,
    pub(crate) stats: uapi::RingStats,
    /// Completions produced, posted or not: the next one's `seq`.
    pub(crate) seq: u64,
}

/// The [`Extra`]s of a channel's slots.
pub(crate) type Extras = [Extra; NR_SLOTS];

impl Extra {
    /// The extra state of all slots, with no signal, timer or echo. Made in place: it is
    /// too large for the stack.
    pub(crate) fn all() -> Result<KBox<Extras>> {
        let now = Instant::now();
        KBox::init(
            pin_init::init_array_from_fn(|_| Extra {
                sig: None,
                timer: Timer::stopped(now),
                echo_due: now,
            }),
            GFP_KERNEL_ACCOUNT,
        )
    }
}

/// Where queued kicks come from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// `EVNOTIFY_IOC_KICK`.
    Ioctl,
    /// A write to a kick eventfd.
    KickFd,
    /// A kick eventfd signalled by a channel (this one or another): a feedback loop
    /// or a chain.
    Echo,
    /// A due timer.
    Timer,
    /// A submission on the channel's ring.
    Ring,
}

/// The state of a channel's slots, guarded by the channel's lock (`Shared::inner`).
pub(crate) struct Inner {
    pub(crate) slots: [Slot; NR_SLOTS],
    /// Allocated by the first call that needs it (see [`Extra`]); never freed before the channel.
    pub(crate) extra: Option<KBox<Extras>>,
    /// Bit `n` is set if and only if `slots[n].pending != 0` and the slot's kicks are due now.
    pub(crate) pending_mask: u64,
    /// Bit `n` is set if and only if `slots[n].pending == 1` holds an echo that waits for
    /// `extra[n].echo_due`.
    pub(crate) echo_mask: u64,
    /// Bit `n` is set if and only if `extra[n].timer` runs. Set only with `extra`, as is
    /// `echo_mask`.
    pub(crate) timer_mask: u64,
    /// Where the thread looks first, so that slots are served round-robin.
    pub(crate) cursor: usize,
    /// A kick eventfd was closed by user space and waits to be released by the thread.
    pub(crate) hangup: bool,
    /// The file was released: nothing is queued or served for the channel any more.
    pub(crate) closed: bool,
    /// The worker is spinning in `Shared::serve` for the channel's next kick: whoever would
    /// queue the channel on its worker (a kick, ticks or an echo the alarm queued), or closes
    /// it, tells the spin (`Shared::poked`) instead.
    pub(crate) spinning: bool,
    /// Kicks the thread has taken and not yet finished delivering: still counted as pending.
    /// They are all of one slot, `in_flight_slot` (a channel has one batch out at a time).
    pub(crate) in_flight: u64,
    pub(crate) in_flight_slot: usize,
    /// Bit `n` is set if and only if the alarm took one tick of slot `n` to deliver itself
    /// (see [`Inner::fire_timers`]) and has not finished: counted in pending and in the bound.
    pub(crate) alarm_mask: u64,
    /// The channel's alarm as armed, here so that its callback can re-arm it (`shared.rs`).
    pub(crate) alarm: AlarmState,
    /// The kernel's side of the channel's ring (`ring.rs`): once user space mapped one, every
    /// batch taken is also posted there.
    pub(crate) ring: RingState,
    /// The counters that the stats invariant ties together, changed only under the lock so
    /// that a reader sees them consistent. They wrap at 2^64, as the header says.
    pub(crate) kicks: u64,
    pub(crate) fd_kicks: u64,
    pub(crate) timer_ticks: u64,
    pub(crate) handled: u64,
    pub(crate) coalesced: u64,
}

/// The channel's alarm (an hrtimer) as armed, by the thread or by the alarm's own callback.
pub(crate) struct AlarmState {
    /// When it is armed to expire, if it is.
    pub(crate) at: Option<Instant<Monotonic>>,
    /// It is not armed to expire before this (see `shared.rs`, `ALARM_GAP`).
    pub(crate) floor: Option<Instant<Monotonic>>,
    /// How many more times the callback may re-arm it before the thread has run (or a reader
    /// of a timer slot's eventfd has read it).
    pub(crate) credit: u32,
    /// Whether a handle of the started alarm is held (in `Shared::armed`), so that the timer
    /// may be restarted in place (`Shared::slot_read`): the handle's drop cancels it. Cleared
    /// before the handle is dropped (by `set_alarm`, and by `close` with `closed`).
    pub(crate) live: bool,
    /// The CPU it was last armed or restarted on, or expired on: a read there need not move it.
    /// Meaningful once it was armed (`live` is set only with it).
    pub(crate) cpu: u32,
}

/// A unit of work the thread took from [`Inner`].
pub(crate) enum Work {
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
pub(crate) fn bits(mut mask: u64) -> impl Iterator<Item = usize> {
    core::iter::from_fn(move || {
        let bit = mask.trailing_zeros() as usize;
        mask &= mask.wrapping_sub(1);
        (bit < 64).then_some(bit)
    })
}

impl Inner {
    /// A channel's state before anything is attached or queued.
    pub(crate) fn new() -> Self {
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
            spinning: false,
            in_flight: 0,
            in_flight_slot: 0,
            alarm_mask: 0,
            alarm: AlarmState {
                at: None,
                floor: None,
                credit: 0,
                live: false,
                cpu: 0,
            },
            ring: RingState::default(),
            kicks: 0,
            fd_kicks: 0,
            timer_ticks: 0,
            handled: 0,
            coalesced: 0,
        }
    }

    /// The extra state of `slot`, if the channel has allocated it.
    pub(crate) fn extra(&self, slot: usize) -> Option<&Extra> {
        self.extra.as_deref().map(|x| &x[slot])
    }

    /// The same, to change.
    pub(crate) fn extra_mut(&mut self, slot: usize) -> Option<&mut Extra> {
        self.extra.as_deref_mut().map(|x| &mut x[slot])
    }

    /// Whether the thread has nothing to do until woken or a deadline passes.
    pub(crate) fn idle(&self) -> bool {
        self.pending_mask == 0 && !self.hangup
    }

    /// Adds `count` kicks or ticks from `source` to `slot`, in O(1): what does not fit under
    /// [`MAX_PENDING`] (counting the slot's batch in flight) is coalesced, and an echo only waits if nothing else does. Returns
    /// whether the thread must be woken (the transition from idle: otherwise it is awake or
    /// already being woken).
    pub(crate) fn queue(&mut self, slot: usize, count: u64, source: Source) -> bool {
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
        // Saturating: a broken invariant must not panic here, in a wake-up callback.
        let room = MAX_PENDING.saturating_sub(self.slot_pending(slot));
        let s = &mut self.slots[slot];
        let mut take = count.min(room);
        if source == Source::Echo {
            take = take.min(u64::from(s.pending == 0));
        }
        self.coalesced = self.coalesced.wrapping_add(count - take);
        if take == 0 {
            return false;
        }
        s.pending += take;
        // A kick eventfd's slot has its extra state (`attach_kickfd` allocates it); on a
        // channel without, an echo is an ordinary kick.
        if let (Some(x), Source::Echo) = (self.extra.as_deref_mut(), source) {
            x[slot].echo_due = Instant::now() + ECHO_DELAY;
            self.echo_mask |= bit;
            // Woken, if asleep, to sleep again until the echo is due.
            return was_idle;
        }
        self.echo_mask &= !bit;
        self.pending_mask |= bit;
        was_idle
    }

    /// Kicks and ticks of `slot` not yet handled, what counts against its bound: queued, in the
    /// batch being delivered, and with the alarm.
    pub(crate) fn slot_pending(&self, slot: usize) -> u64 {
        let in_flight = if slot == self.in_flight_slot {
            self.in_flight
        } else {
            0
        };
        self.slots[slot].pending + in_flight + u64::from(self.alarm_mask & (1 << slot) != 0)
    }

    /// Kicks and ticks not yet handled: in the slots, in flight, and with the alarm.
    pub(crate) fn pending(&self) -> u64 {
        let taken = self.in_flight + u64::from(self.alarm_mask.count_ones());
        self.slots.iter().fold(taken, |n, s| n + s.pending)
    }

    /// Takes the pending kicks of the next slot with work, with its targets: up to [`BATCH`],
    /// or all at once (in O(1)) if the slot has no target (no eventfd, signal or ring) and they
    /// are only to be dropped.
    pub(crate) fn take_work(&mut self) -> Option<Work> {
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
        let kicks = if s.efd.is_none() && sig.is_none() && !self.ring.mapped {
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
    pub(crate) fn retire(&mut self, kicks: u64) {
        self.in_flight -= kicks;
        self.handled = self.handled.wrapping_add(kicks);
    }
}

/// What the KUnit suites of this file and `deadlines.rs` share.
#[cfg(CONFIG_KUNIT = "y")]
pub(crate) mod testing {
    use super::*;

    /// Every kick and tick accepted is handled, pending (in a slot or in flight) or
    /// coalesced, modulo 2^64: the header's stats identity.
    pub(crate) fn identity(i: &Inner) -> bool {
        i.kicks.wrapping_add(i.timer_ticks)
            == i.handled
                .wrapping_add(i.pending())
                .wrapping_add(i.coalesced)
    }

    /// A channel's state with the slots' extra state, as a channel with timers, signals or
    /// kick eventfds has it.
    pub(crate) fn with_extra() -> Result<KBox<Inner>> {
        let mut i = KBox::new(Inner::new(), GFP_KERNEL)?;
        i.extra = Some(Extra::all()?);
        Ok(i)
    }
}

#[kunit_tests(rust_evnotify_slots)]
mod tests {
    use super::{
        testing::{
            identity,
            with_extra, //
        },
        *,
    };

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
    fn plain_channel_has_no_extra() -> Result {
        let mut i = KBox::new(Inner::new(), GFP_KERNEL)?;
        // Only a kick eventfd sends echoes, and it brings the extra state; without it, an
        // echo is an ordinary kick.
        assert!(i.queue(2, 1, Source::Echo));
        assert_eq!((i.echo_mask, i.pending_mask), (0, 1 << 2));
        // A timer needs the extra state (`set_timer` allocates it); a cancel has none to stop.
        i.replace_timer(
            3,
            Some(Timer::new(uapi::MIN_PERIOD_NS, 0, None)?),
            Instant::now(),
        );
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
