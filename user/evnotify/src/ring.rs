//! [`Ring`]: a channel's event ring, mapped (`EVNOTIFY_F_RING`, API version 10).

use crate::{errno, sys, Channel, Result};
use std::{
    num::NonZeroUsize,
    os::fd::{AsFd, AsRawFd},
    ptr::NonNull,
    sync::atomic::{fence, AtomicU32, AtomicU64, Ordering},
    time::{Duration, Instant},
};

/// The unsafe ioctl wrappers of the ring.
mod ioctl {
    use crate::sys::*;
    nix::ioctl_none!(ring_enter, IOC_MAGIC, 0x0A);
    nix::ioctl_read!(ring_stats, IOC_MAGIC, 0x0B, RingStats);
}

/// A completion: the kernel thread delivered a batch of `count` kicks and ticks of `slot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// The slot.
    pub slot: u32,
    /// Kicks and ticks in the batch (1 ..= 1024).
    pub count: u32,
    /// Completions the channel produced before this one, posted or lost: a jump shows that
    /// completions were lost to a full queue ([`sys::RingStats::cq_overflow`]).
    pub seq: u64,
}

/// A channel's event ring: kicks published with a store, and completions read from memory,
/// as io_uring's queues (the header, "The event ring", has the rules this type follows).
///
/// [`Ring::submit`] publishes a kick and wakes the channel's thread only if it sleeps;
/// [`Ring::reap`] takes a completion, if one is posted. Once a channel has a ring its thread
/// posts a completion for every batch it delivers, of kicks from any source and of timer
/// ticks; a slot's eventfd, if attached, is signalled after its completion is posted, so a
/// reader can sleep on a [`crate::Notifier`] and then reap.
///
/// Every access to the shared page is atomic, so sharing a `Ring` between threads is safe;
/// but the queues expect one submitter and one reaper at a time (two submitting at once can
/// overwrite each other's entries, which spoils those kicks, nothing else).
#[derive(Debug)]
pub struct Ring<'ch> {
    ch: &'ch Channel,
    map: NonNull<u8>,
}

// SAFETY: The mapping is shared memory accessed only through atomics; the pointer is not tied
// to a thread.
unsafe impl Send for Ring<'_> {}
// SAFETY: As above: `&Ring` only ever does atomic accesses to the page.
unsafe impl Sync for Ring<'_> {}

impl Channel {
    /// Maps the channel's event ring, creating it on the first call (any later call, from
    /// this process or another that holds the channel, maps the same ring).
    ///
    /// # Errors
    ///
    /// - `ENODEV`: the module has no ring (`EVNOTIFY_F_RING` is not in [`Channel::version`]'s
    ///   features; before API version 10);
    /// - `EACCES`: the channel was opened read-only;
    /// - `ENOMEM`.
    pub fn map_ring(&self) -> Result<Ring<'_>> {
        use nix::sys::mman::{mmap, MapFlags, ProtFlags};
        let len = NonZeroUsize::new(sys::RING_SIZE as usize).ok_or_else(|| errno(libc::EINVAL))?;
        // SAFETY: A new mapping at an address the kernel picks, of the channel's ring page: it
        // replaces nothing.
        let map = unsafe {
            mmap(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                self.as_fd(),
                0,
            )
        }?;
        Ok(Ring {
            ch: self,
            map: map.cast(),
        })
    }
}

impl Ring<'_> {
    /// The control word at byte `offset` of the page.
    fn word(&self, offset: usize) -> &AtomicU32 {
        // SAFETY: `offset` is a field of `struct evnotify_ring`, 4-aligned, in the mapping,
        // which lives as long as `self`; the page is only ever accessed atomically.
        unsafe { AtomicU32::from_ptr(self.map.as_ptr().add(offset).cast()) }
    }

    fn sq_head(&self) -> &AtomicU32 {
        self.word(std::mem::offset_of!(sys::Ring, sq_head))
    }
    fn sq_tail(&self) -> &AtomicU32 {
        self.word(std::mem::offset_of!(sys::Ring, sq_tail))
    }
    fn cq_head(&self) -> &AtomicU32 {
        self.word(std::mem::offset_of!(sys::Ring, cq_head))
    }
    fn cq_tail(&self) -> &AtomicU32 {
        self.word(std::mem::offset_of!(sys::Ring, cq_tail))
    }
    fn flags(&self) -> &AtomicU32 {
        self.word(std::mem::offset_of!(sys::Ring, flags))
    }

    /// The `(slot, count)` words of submission entry `i`.
    fn sqe(&self, i: u32) -> (&AtomicU32, &AtomicU32) {
        let at = sys::RING_SQ_OFFSET as usize
            + (i % sys::RING_SQ_ENTRIES) as usize * size_of::<sys::Sqe>();
        (self.word(at), self.word(at + 4))
    }

    /// Whether the kernel thread asked for a wake-up (it sleeps, or has not started).
    pub fn needs_wakeup(&self) -> bool {
        self.flags().load(Ordering::Relaxed) & sys::RING_NEED_WAKEUP != 0
    }

    /// Publishes `count` kicks of `slot`, and wakes the channel's thread
    /// ([`Ring::enter`]) if it asked for it. Returns `Ok(false)` if the submission queue is
    /// full (nothing was published: reap, or wait for the thread to take them).
    ///
    /// # Errors
    ///
    /// - `EINVAL`: `slot` is not below [`sys::NR_SLOTS`], or `count` is 0 or above
    ///   [`sys::MAX_KICK`] (checked here: the kernel would skip the entry);
    /// - [`Ring::enter`]'s, when the thread must be woken.
    pub fn submit(&self, slot: u32, count: u32) -> Result<bool> {
        if slot >= sys::NR_SLOTS || count == 0 || count > sys::MAX_KICK {
            return Err(errno(libc::EINVAL));
        }
        let tail = self.sq_tail().load(Ordering::Relaxed);
        if tail.wrapping_sub(self.sq_head().load(Ordering::Acquire)) >= sys::RING_SQ_ENTRIES {
            return Ok(false);
        }
        let (s, c) = self.sqe(tail);
        s.store(slot, Ordering::Relaxed);
        c.store(count, Ordering::Relaxed);
        self.sq_tail()
            .store(tail.wrapping_add(1), Ordering::Release);
        // Either the thread sees the tail before it sleeps, or this sees its request.
        fence(Ordering::SeqCst);
        if self.needs_wakeup() {
            self.enter()?;
        }
        Ok(true)
    }

    /// Makes the channel's thread take the submissions now (`EVNOTIFY_IOC_RING_ENTER`),
    /// starting it if the channel has none.
    ///
    /// # Errors
    ///
    /// `ENOMEM`, `EAGAIN` or `EINTR` when the thread must be started and cannot (as
    /// [`Channel::kick`]).
    pub fn enter(&self) -> Result<()> {
        // SAFETY: The ioctl takes no argument.
        unsafe { ioctl::ring_enter(self.ch.as_raw_fd()) }?;
        Ok(())
    }

    /// Takes the oldest completion not yet taken, if there is one.
    pub fn reap(&self) -> Option<Completion> {
        let head = self.cq_head().load(Ordering::Relaxed);
        if head == self.cq_tail().load(Ordering::Acquire) {
            return None;
        }
        let at = sys::RING_CQ_OFFSET as usize
            + (head % sys::RING_CQ_ENTRIES) as usize * size_of::<sys::Cqe>();
        // SAFETY: Entry `head` lies in the mapping, 8-aligned; accessed atomically only.
        let seq = unsafe { AtomicU64::from_ptr(self.map.as_ptr().add(at + 8).cast()) };
        let c = Completion {
            slot: self.word(at).load(Ordering::Relaxed),
            count: self.word(at + 4).load(Ordering::Relaxed),
            seq: seq.load(Ordering::Relaxed),
        };
        // The entry is read before the kernel may reuse it.
        self.cq_head()
            .store(head.wrapping_add(1), Ordering::Release);
        Some(c)
    }

    /// Spins until a completion is posted, and takes it; `None` once `timeout` has passed.
    /// It burns a CPU meanwhile: to sleep instead, wait on the slot's notifier, then reap.
    pub fn spin_timeout(&self, timeout: Duration) -> Option<Completion> {
        let start = Instant::now();
        loop {
            if let Some(c) = self.reap() {
                return Some(c);
            }
            if start.elapsed() >= timeout {
                return None;
            }
            std::hint::spin_loop();
        }
    }

    /// The ring's counters (`EVNOTIFY_IOC_RING_STATS`).
    ///
    /// # Errors
    ///
    /// None in practice: the channel has a ring, as this mapping shows.
    pub fn stats(&self) -> Result<sys::RingStats> {
        let mut s = sys::RingStats::default();
        // SAFETY: `s` is a valid, writable `struct evnotify_ring_stats`.
        unsafe { ioctl::ring_stats(self.ch.as_raw_fd(), &mut s) }?;
        Ok(s)
    }

    /// The control words as the page shows them now (user space may have written them).
    pub fn control(&self) -> sys::Ring {
        let w = |o| self.word(o).load(Ordering::Acquire);
        sys::Ring {
            sq_head: w(std::mem::offset_of!(sys::Ring, sq_head)),
            sq_tail: w(std::mem::offset_of!(sys::Ring, sq_tail)),
            cq_head: w(std::mem::offset_of!(sys::Ring, cq_head)),
            cq_tail: w(std::mem::offset_of!(sys::Ring, cq_tail)),
            flags: w(std::mem::offset_of!(sys::Ring, flags)),
            sq_dropped: w(std::mem::offset_of!(sys::Ring, sq_dropped)),
            cq_overflow: w(std::mem::offset_of!(sys::Ring, cq_overflow)),
            reserved: w(std::mem::offset_of!(sys::Ring, reserved)),
        }
    }
}

impl Drop for Ring<'_> {
    fn drop(&mut self) {
        // SAFETY: `map` is this object's own mapping, of `RING_SIZE` bytes; no reference into
        // it outlives `self`.
        let _ = unsafe { nix::sys::mman::munmap(self.map.cast(), sys::RING_SIZE as usize) };
    }
}
