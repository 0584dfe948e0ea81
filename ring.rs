// SPDX-License-Identifier: GPL-2.0

//! A channel's event ring: one page that user space maps (`mmap` on the channel's fd), with a
//! submission queue of kicks that user space publishes with a store and a completion queue of
//! the batches the worker delivered, as io_uring's SQ and CQ (`io_uring/io_uring.c`, the
//! ordering comment at its top). Owns the page, its layout and the rules for reading what user
//! space wrote there; the slot arithmetic it feeds is `slots.rs`. A leaf but for `slots`.
//!
//! A mapping holds the channel's file, as any mapping holds its file: the channel is released
//! only after its last descriptor is closed and its last mapping is gone.
//!
//! The page is hostile memory: user space may write anything there at any moment. The kernel
//! reads each index and entry once, checks it, and keeps its own copy of every index it
//! produces or consumes (`RingState` in `slots.rs`, under the channel's lock): the page only shows them. A
//! mapping also holds its own reference to the page (`vm_insert_page`).

use crate::{
    compat,
    slots::{
        Inner,
        Source, //
    },
    uapi::{
        self,
        NR_SLOTS, //
    },
};
use core::ptr::NonNull;
use kernel::{
    alloc::{
        allocator::Vmalloc,
        flags::{
            __GFP_NOWARN,
            __GFP_ZERO, //
        },
    },
    mm::virt::VmaNew,
    page::PAGE_SIZE,
    prelude::*,
    sync::atomic::{
        Acquire,
        Atomic,
        Full,
        Relaxed,
        Release, //
    },
};

const SQ_ENTRIES: u32 = uapi::RING_SQ_ENTRIES;
const CQ_ENTRIES: u32 = uapi::RING_CQ_ENTRIES;

/// `struct evnotify_sqe`, as the kernel reads it.
#[repr(C)]
struct Sqe {
    slot: Atomic<u32>,
    count: Atomic<u32>,
}

/// `struct evnotify_cqe`, as the kernel writes it.
#[repr(C)]
struct Cqe {
    slot: Atomic<u32>,
    count: Atomic<u32>,
    seq: Atomic<u64>,
}

/// The mapped page: `struct evnotify_ring` at 0, the queues at their offsets. Every field the
/// kernel touches is an atomic, so what user space writes meanwhile is no data race.
#[repr(C)]
struct Page {
    sq_head: Atomic<u32>,
    sq_tail: Atomic<u32>,
    cq_head: Atomic<u32>,
    cq_tail: Atomic<u32>,
    flags: Atomic<u32>,
    sq_dropped: Atomic<u32>,
    cq_overflow: Atomic<u32>,
    /// Never read: atomics all the same, as everything user space may write.
    _reserved: [Atomic<u32>; 9],
    sq: [Sqe; SQ_ENTRIES as usize],
    cq: [Cqe; CQ_ENTRIES as usize],
}

// The layout is the header's (`user/evnotify-abi` checks the offsets there).
const _: () = {
    assert!(size_of::<uapi::Ring>() == 32);
    assert!(core::mem::offset_of!(Page, sq_head) == core::mem::offset_of!(uapi::Ring, sq_head));
    assert!(core::mem::offset_of!(Page, sq_tail) == core::mem::offset_of!(uapi::Ring, sq_tail));
    assert!(core::mem::offset_of!(Page, cq_head) == core::mem::offset_of!(uapi::Ring, cq_head));
    assert!(core::mem::offset_of!(Page, cq_tail) == core::mem::offset_of!(uapi::Ring, cq_tail));
    assert!(core::mem::offset_of!(Page, flags) == core::mem::offset_of!(uapi::Ring, flags));
    assert!(
        core::mem::offset_of!(Page, sq_dropped) == core::mem::offset_of!(uapi::Ring, sq_dropped)
    );
    assert!(
        core::mem::offset_of!(Page, cq_overflow) == core::mem::offset_of!(uapi::Ring, cq_overflow)
    );
    assert!(core::mem::offset_of!(Page, sq) == uapi::RING_SQ_OFFSET as usize);
    assert!(core::mem::offset_of!(Page, cq) == uapi::RING_CQ_OFFSET as usize);
    assert!(size_of::<Sqe>() == 8 && size_of::<Cqe>() == 16);
    assert!(size_of::<Page>() <= uapi::RING_SIZE as usize);
    assert!(uapi::RING_SIZE as usize <= PAGE_SIZE);
    assert!(SQ_ENTRIES.is_power_of_two() && CQ_ENTRIES.is_power_of_two());
};

/// A channel's ring page.
///
/// # Invariants
///
/// `page` is a zero-initialised `Vmalloc` allocation of exactly one page, page-aligned.
pub(crate) struct Ring {
    page: VBox<Page>,
    /// The kernel's head as of its last take (`RingState::stats.sq_head`), for the unlocked
    /// hint.
    taken: Atomic<u32>,
}

impl Ring {
    /// Allocates a ring, charged to the caller's memory cgroup, that asks for a wake-up (a
    /// channel with a ring but no worker yet needs the call that starts it). A failure is the
    /// caller's `ENOMEM`, without vmalloc's warning (as io_uring allocates its rings).
    pub(crate) fn new() -> Result<Self> {
        let page = VBox::<Page>::new_uninit(GFP_KERNEL_ACCOUNT | __GFP_ZERO | __GFP_NOWARN)?;
        // SAFETY: The memory is zeroed (`__GFP_ZERO`), and all-zero is a valid `Page`: it holds
        // only integers and atomic integers.
        let page = unsafe { page.assume_init() };
        page.flags.store(uapi::RING_NEED_WAKEUP, Relaxed);
        // INVARIANT: `VBox` allocates with `Vmalloc`, which returns whole pages, page-aligned;
        // `Page` is at most one page (asserted above) and was zeroed.
        Ok(Self {
            page,
            taken: Atomic::new(0),
        })
    }

    /// Checks a new mapping of the channel's fd, before anything is allocated for it: only the
    /// whole page, at offset 0, shared, and never executable. `EINVAL` for another length,
    /// offset or a private mapping, `EPERM` for `PROT_EXEC`.
    pub(crate) fn check(vma: &VmaNew) -> Result {
        if vma.end() - vma.start() != PAGE_SIZE || vma_pgoff(vma) != 0 {
            return Err(EINVAL);
        }
        // `MAYSHARE`: `SHARED` is cleared for a shared mapping of a read-only descriptor.
        if vma.flags() & compat::VM_MAYSHARE == 0 {
            return Err(EINVAL);
        }
        // And never to become so (`mprotect` fails with `EACCES`).
        vma.try_clear_mayexec().map_err(|_| EPERM)
    }

    /// Maps the page into `vma`, which [`Ring::check`] passed (and so made never executable:
    /// call it only after that): never to be inherited by a child (`fork`), grown (`mremap`
    /// fails with `EFAULT`) or dumped.
    pub(crate) fn map(&self, vma: &VmaNew) -> Result {
        vma.set_dontexpand();
        vma.set_dontcopy();
        vma.set_dontdump();
        let ptr = NonNull::from(&*self.page).cast::<u8>();
        // SAFETY: By the type invariant, `ptr` is the start of a `Vmalloc` allocation, which
        // lives as long as `self`, longer than `page` is used here.
        let page = unsafe { Vmalloc::to_page(ptr) };
        // The mapping takes its own reference to the page.
        vma.set_mixedmap().vm_insert_page(vma.start(), &page)
    }

    /// Whether user space published submissions the kernel has not taken. A hint, read
    /// without the channel's lock.
    pub(crate) fn submitted(&self) -> bool {
        self.page.sq_tail.load(Relaxed) != self.taken.load(Relaxed)
    }

    /// Asks user space for a wake-up (`EVNOTIFY_IOC_RING_ENTER`) after its next submission, or
    /// stops asking. Setting it is fully ordered, so that a submission published before is
    /// seen by the caller's next [`Ring::submitted`], or else its publisher sees the flag: the
    /// store-buffering pattern that `IORING_SQ_NEED_WAKEUP` uses.
    pub(crate) fn need_wakeup(&self, on: bool) {
        if on {
            self.page.flags.xchg(uapi::RING_NEED_WAKEUP, Full);
        } else if self.page.flags.load(Relaxed) != 0 {
            // Only if set: the line is the submitter's too.
            self.page.flags.store(0, Relaxed);
        }
    }
}

/// The offset of a new mapping, in pages.
fn vma_pgoff(vma: &VmaNew) -> usize {
    // SAFETY: `VmaNew` is a VMA being set up by `mmap`, valid for the call, whose `vm_pgoff`
    // the caller of `mmap` wrote and nobody changes meanwhile.
    unsafe { (*vma.as_ptr()).vm_pgoff }
}

impl Inner {
    /// Takes the submissions user space published on `ring` and queues their kicks, as
    /// `EVNOTIFY_IOC_KICK` would. An entry with a slot or count out of range is skipped and
    /// counted in `sq_dropped`; a tail more than a queue's length ahead is no queue of entries
    /// at all: the kernel takes none, skips to it, and counts it as one dropped. Returns
    /// whether the channel went from idle to having work.
    pub(crate) fn take_submissions(&mut self, ring: &Ring) -> bool {
        let was_idle = self.idle();
        let head = self.ring.stats.sq_head;
        if self.closed {
            return false;
        }
        let p = &ring.page;
        // Acquire: the entries up to the tail are written before it (the user's release).
        let tail = p.sq_tail.load(Acquire);
        let n = tail.wrapping_sub(head);
        if n == 0 {
            // Nothing new: the page's words are left alone (the line is the submitter's too,
            // and a polled channel looks after every batch).
            return false;
        }
        let (mut kicks, mut dropped) = (0u64, 0u64);
        if n > SQ_ENTRIES {
            dropped = 1;
        } else {
            for i in 0..n {
                let e = &p.sq[(head.wrapping_add(i) & (SQ_ENTRIES - 1)) as usize];
                let (slot, count) = (e.slot.load(Relaxed), e.count.load(Relaxed));
                if (slot as usize) < NR_SLOTS && (1..=uapi::MAX_KICK).contains(&count) {
                    self.queue(slot as usize, count.into(), Source::Ring);
                    kicks += u64::from(count);
                } else {
                    dropped += 1;
                }
            }
        }
        let r = &mut self.ring.stats;
        r.sq_head = tail;
        ring.taken.store(tail, Relaxed);
        r.sq_kicks = r.sq_kicks.wrapping_add(kicks);
        r.sq_dropped = r.sq_dropped.wrapping_add(dropped);
        // Release: the entries were read before the head says they may be reused.
        p.sq_head.store(tail, Release);
        p.sq_dropped.store(r.sq_dropped as u32, Relaxed);
        was_idle && !self.idle()
    }

    /// The kicks taken from the ring so far (0 without one): what a spin's end compares.
    pub(crate) fn sq_kicks(&self) -> u64 {
        self.ring.stats.sq_kicks
    }

    /// Posts the completion of a batch of `kicks` kicks of `slot` on `ring`, or counts it lost
    /// if the completion queue is full (or its head is not one user space could have
    /// written: more than a queue's length behind, or ahead of, the tail).
    pub(crate) fn complete(&mut self, ring: &Ring, slot: usize, kicks: u64) {
        let state = &mut self.ring;
        let p = &ring.page;
        let seq = state.seq;
        state.seq = seq.wrapping_add(1);
        let r = &mut state.stats;
        // Acquire: user space read the entries before it moved the head past them.
        let used = r.cq_tail.wrapping_sub(p.cq_head.load(Acquire));
        if used >= CQ_ENTRIES {
            r.cq_overflow = r.cq_overflow.wrapping_add(1);
            r.lost_kicks = r.lost_kicks.wrapping_add(kicks);
            p.cq_overflow.store(r.cq_overflow as u32, Relaxed);
            return;
        }
        let e = &p.cq[(r.cq_tail & (CQ_ENTRIES - 1)) as usize];
        e.slot.store(slot as u32, Relaxed);
        // A batch is at most `MAX_PENDING` kicks, which fits.
        e.count.store(kicks.min(u32::MAX.into()) as u32, Relaxed);
        e.seq.store(seq, Relaxed);
        r.cq_tail = r.cq_tail.wrapping_add(1);
        r.cq_events = r.cq_events.wrapping_add(1);
        r.cq_kicks = r.cq_kicks.wrapping_add(kicks);
        // Release: the entry is written before the tail shows it.
        p.cq_tail.store(r.cq_tail, Release);
    }
}

#[kunit_tests(rust_evnotify_ring)]
mod tests {
    use super::*;
    use crate::slots::testing::identity;

    fn setup() -> Result<(KBox<Inner>, Ring)> {
        let mut i = KBox::new(Inner::new(), GFP_KERNEL)?;
        i.ring.mapped = true;
        Ok((i, Ring::new()?))
    }

    fn submit(ring: &Ring, slot: u32, count: u32) {
        let p = &ring.page;
        let tail = p.sq_tail.load(Relaxed);
        let e = &p.sq[(tail & (SQ_ENTRIES - 1)) as usize];
        e.slot.store(slot, Relaxed);
        e.count.store(count, Relaxed);
        p.sq_tail.store(tail.wrapping_add(1), Release);
    }

    #[test]
    fn submissions_are_kicks() -> Result {
        let (mut i, ring) = setup()?;
        assert!(!i.take_submissions(&ring));
        submit(&ring, 3, 2);
        submit(&ring, 63, 1);
        assert!(ring.submitted());
        assert!(i.take_submissions(&ring));
        assert_eq!(
            (i.slots[3].pending, i.slots[63].pending, i.kicks),
            (2, 1, 3)
        );
        let r = &i.ring.stats;
        assert_eq!((r.sq_head, r.sq_kicks, r.sq_dropped), (2, 3, 0));
        assert_eq!(ring.page.sq_head.load(Relaxed), 2);
        assert!(!ring.submitted());
        assert!(identity(&i));
        Ok(())
    }

    #[test]
    fn bad_entries_are_dropped() -> Result {
        let (mut i, ring) = setup()?;
        submit(&ring, 64, 1);
        submit(&ring, 0, 0);
        submit(&ring, 0, uapi::MAX_KICK + 1);
        submit(&ring, u32::MAX, 1);
        submit(&ring, 1, uapi::MAX_KICK);
        i.take_submissions(&ring);
        let r = &i.ring.stats;
        assert_eq!((r.sq_dropped, r.sq_kicks), (4, uapi::MAX_KICK.into()));
        assert_eq!(ring.page.sq_dropped.load(Relaxed), 4);
        assert_eq!(i.kicks, uapi::MAX_KICK.into());
        Ok(())
    }

    #[test]
    fn a_wild_tail_is_skipped() -> Result {
        let (mut i, ring) = setup()?;
        for wild in [SQ_ENTRIES + 1, u32::MAX, 1 << 31] {
            let head = i.ring.stats.sq_head;
            ring.page.sq_tail.store(head.wrapping_add(wild), Relaxed);
            assert!(!i.take_submissions(&ring));
            assert_eq!(i.ring.stats.sq_head, head.wrapping_add(wild));
        }
        assert_eq!((i.kicks, i.ring.stats.sq_dropped), (0, 3));
        // A full queue's worth is a queue.
        let head = i.ring.stats.sq_head;
        for _ in 0..SQ_ENTRIES {
            submit(&ring, 5, 1);
        }
        i.take_submissions(&ring);
        assert_eq!(i.kicks, SQ_ENTRIES.into());
        assert_eq!(i.ring.stats.sq_head, head.wrapping_add(SQ_ENTRIES));
        Ok(())
    }

    #[test]
    fn completions_overflow_counted() -> Result {
        let (mut i, ring) = setup()?;
        for n in 0..CQ_ENTRIES + 2 {
            i.complete(&ring, (n % 64) as usize, 1 + u64::from(n));
        }
        let p = &ring.page;
        assert_eq!(p.cq_tail.load(Relaxed), CQ_ENTRIES);
        assert_eq!(p.cq[5].seq.load(Relaxed), 5);
        assert_eq!(p.cq[5].count.load(Relaxed), 6);
        assert_eq!(p.cq[5].slot.load(Relaxed), 5);
        let r = &i.ring.stats;
        assert_eq!((r.cq_events, r.cq_overflow), (CQ_ENTRIES.into(), 2));
        let all: u64 = (1..=u64::from(CQ_ENTRIES) + 2).sum();
        assert_eq!(r.cq_kicks + r.lost_kicks, all);
        // Consumed: room again, and the next seq shows the two lost.
        p.cq_head.store(CQ_ENTRIES, Release);
        i.complete(&ring, 7, 9);
        assert_eq!(p.cq[0].seq.load(Relaxed), u64::from(CQ_ENTRIES) + 2);
        // A head ahead of the tail is no room.
        p.cq_head.store(CQ_ENTRIES + 5, Release);
        i.complete(&ring, 7, 9);
        assert_eq!(i.ring.stats.cq_overflow, 3);
        Ok(())
    }

    #[test]
    fn wakeup_flag() -> Result {
        let ring = Ring::new()?;
        assert_eq!(ring.page.flags.load(Relaxed), uapi::RING_NEED_WAKEUP);
        ring.need_wakeup(false);
        assert_eq!(ring.page.flags.load(Relaxed), 0);
        ring.need_wakeup(true);
        assert_eq!(ring.page.flags.load(Relaxed), uapi::RING_NEED_WAKEUP);
        Ok(())
    }
}
