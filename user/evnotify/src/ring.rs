//! [`Ring`]: a channel's event ring, mapped (`EVNOTIFY_F_RING`, API version 10).

use crate::{errno, sys, Channel, Result};
use std::{
    num::NonZeroUsize,
    os::fd::{AsFd, AsRawFd},
    ptr::NonNull,
    sync::atomic::{fence, AtomicU32, Ordering},
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
#[non_exhaustive]
pub struct Completion {
    /// The slot.
    pub slot: u32,
    /// Kicks and ticks in the batch (1 ..= 1024).
    pub count: u32,
    /// Completions the channel produced before this one, posted or lost: a jump shows that
    /// completions were lost to a full queue ([`sys::RingStats::cq_overflow`]).
    pub seq: u64,
}

/// The mapping: a pointer to the page, and the channel it maps.
///
/// # Invariants
///
/// `at` is a shared, readable and writable mapping of `ch`'s ring page, `RING_SIZE` bytes,
/// page-aligned, owned by this object; the page is only ever accessed atomically.
#[derive(Debug)]
struct Map<'ch> {
    ch: &'ch Channel,
    at: NonNull<u8>,
}

// SAFETY: The mapping is not tied to a thread; every access to it is atomic (the invariant).
unsafe impl Send for Map<'_> {}
// SAFETY: As above: through `&Map`, only atomic accesses to the page.
unsafe impl Sync for Map<'_> {}

impl Map<'_> {
    /// The 32-bit word at byte `offset` of the page.
    fn word(&self, offset: usize) -> &AtomicU32 {
        assert!(offset % 4 == 0 && offset < sys::RING_SIZE as usize);
        // SAFETY: `offset` is in the mapping and 4-aligned (checked), which lives as long as
        // `self`, and is only accessed atomically (the invariant).
        unsafe { AtomicU32::from_ptr(self.at.as_ptr().add(offset).cast()) }
    }

    fn control(&self, field: usize) -> &AtomicU32 {
        self.word(field)
    }

    fn enter(&self) -> Result<()> {
        // SAFETY: The ioctl takes no argument.
        unsafe { ioctl::ring_enter(self.ch.as_raw_fd()) }?;
        Ok(())
    }

    fn needs_wakeup(&self) -> bool {
        self.control(FLAGS).load(Ordering::Relaxed) & sys::RING_NEED_WAKEUP != 0
    }
}

const SQ_HEAD: usize = std::mem::offset_of!(sys::Ring, sq_head);
const SQ_TAIL: usize = std::mem::offset_of!(sys::Ring, sq_tail);
const CQ_HEAD: usize = std::mem::offset_of!(sys::Ring, cq_head);
const CQ_TAIL: usize = std::mem::offset_of!(sys::Ring, cq_tail);
const FLAGS: usize = std::mem::offset_of!(sys::Ring, flags);

/// A channel's event ring: kicks published with a store, and completions read from memory,
/// as io_uring's queues (the header, "The event ring", has the rules this type follows).
///
/// [`Ring::submit`] publishes a kick and wakes the channel's thread only if it sleeps;
/// [`Ring::reap`] takes a completion, if one is posted. Once a channel has a ring its thread
/// posts a completion for every batch it delivers, of kicks from any source and of timer
/// ticks; a slot's eventfd, if attached, is signalled after its completion is posted, so a
/// reader can sleep on a [`crate::Notifier`] (or an `AsyncNotifier`) and then reap.
///
/// The queues have one submitter and one reaper each: `submit` and `reap` take `&mut self`.
/// To submit from one thread and reap from another, [`Ring::split`] it.
///
/// A mapping is not inherited across `fork` (the child has nothing at its address: a child
/// must not use a `Ring` of its parent's), and holds the channel open until it is unmapped.
/// [`Channel::wait_idle`] waits for the kicks the kernel took: submissions it has not taken
/// yet are not pending.
#[derive(Debug)]
pub struct Ring<'ch> {
    map: Map<'ch>,
}

/// The submitting half of a [`Ring`] ([`Ring::split`]).
#[derive(Debug)]
pub struct SubmitQueue<'r> {
    map: &'r Map<'r>,
}

/// The reaping half of a [`Ring`] ([`Ring::split`]).
#[derive(Debug)]
pub struct CompletionQueue<'r> {
    map: &'r Map<'r>,
}

impl Channel {
    /// Maps the channel's event ring, creating it on the first call (any later call, from
    /// this process or another that holds the channel, maps the same ring).
    ///
    /// # Errors
    ///
    /// - `ENOTTY`: not a `/dev/evnotify` channel (a descriptor adopted with `From<OwnedFd>`);
    /// - `ENODEV`: the module has no ring (no `EVNOTIFY_F_RING` in [`Channel::version`]'s
    ///   features: before API version 10);
    /// - `EACCES`: the channel was opened read-only (`Channel::open` opens it read-write);
    /// - `ENOMEM`, `EAGAIN`: memory, or the caller's locked-memory limit.
    pub fn map_ring(&self) -> Result<Ring<'_>> {
        use nix::sys::mman::{mmap, MapFlags, ProtFlags};
        if self.version()?.features & sys::F_RING == 0 {
            return Err(errno(libc::ENODEV));
        }
        let len = NonZeroUsize::new(sys::RING_SIZE as usize).ok_or_else(|| errno(libc::EINVAL))?;
        // SAFETY: A new mapping at an address the kernel picks, of the channel's ring page: it
        // replaces nothing.
        let at = unsafe {
            mmap(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                self.as_fd(),
                0,
            )
        }?;
        // INVARIANT: A shared read-write mapping of the channel's ring, of `RING_SIZE` bytes,
        // page-aligned (mmap's), which only this object unmaps.
        Ok(Ring {
            map: Map {
                ch: self,
                at: at.cast(),
            },
        })
    }
}

impl<'ch> Ring<'ch> {
    /// Whether the kernel thread asked for a wake-up (it sleeps, or has not started).
    pub fn needs_wakeup(&self) -> bool {
        self.map.needs_wakeup()
    }

    /// Publishes `count` kicks of `slot`, and wakes the channel's thread
    /// ([`Ring::enter`]) if it asked for it. Returns `Ok(false)` if the submission queue is
    /// full: nothing was published, and the thread was woken if it asked, so that it takes
    /// the queue; try again once it has.
    ///
    /// # Errors
    ///
    /// - `EINVAL`: `slot` is not below [`sys::NR_SLOTS`], or `count` is 0 or above
    ///   [`sys::MAX_KICK`] (checked here: the kernel would skip the entry); nothing was
    ///   published;
    /// - [`Ring::enter`]'s, when the thread had to be woken and could not be: the kick **was**
    ///   published (do not submit it again), and waits for the next [`Ring::enter`].
    pub fn submit(&mut self, slot: u32, count: u32) -> Result<bool> {
        submit(&self.map, slot, count)
    }

    /// Takes the oldest completion not yet taken, if there is one.
    pub fn reap(&mut self) -> Option<Completion> {
        reap(&self.map)
    }

    /// Spins until a completion is posted, and takes it; `None` once `timeout` has passed
    /// (`Duration::ZERO`: one look; `Duration::MAX`: for ever). It burns a CPU meanwhile and
    /// never enters the kernel: to sleep instead, wait on the slot's notifier, then reap.
    pub fn spin_timeout(&mut self, timeout: Duration) -> Option<Completion> {
        spin(&self.map, timeout)
    }

    /// Takes the submissions now (`EVNOTIFY_IOC_RING_ENTER`, in the caller's context),
    /// starting the channel's thread if it has none.
    ///
    /// # Errors
    ///
    /// `ENOMEM`, `EAGAIN` or `EINTR` when the thread must be started and cannot (as
    /// [`Channel::kick`]).
    pub fn enter(&self) -> Result<()> {
        self.map.enter()
    }

    /// The ring's counters (`EVNOTIFY_IOC_RING_STATS`).
    ///
    /// # Errors
    ///
    /// `ENXIO` only if the channel has no ring, which a mapped `Ring` rules out.
    pub fn stats(&self) -> Result<sys::RingStats> {
        let mut s = sys::RingStats::default();
        // SAFETY: `s` is a valid, writable `struct evnotify_ring_stats`.
        unsafe { ioctl::ring_stats(self.map.ch.as_raw_fd(), &mut s) }?;
        Ok(s)
    }

    /// The control words as the page shows them now (user space may have written them).
    pub fn control(&self) -> sys::Ring {
        let w = |o| self.map.control(o).load(Ordering::Acquire);
        sys::Ring {
            sq_head: w(SQ_HEAD),
            sq_tail: w(SQ_TAIL),
            cq_head: w(CQ_HEAD),
            cq_tail: w(CQ_TAIL),
            flags: w(FLAGS),
            sq_dropped: w(std::mem::offset_of!(sys::Ring, sq_dropped)),
            cq_overflow: w(std::mem::offset_of!(sys::Ring, cq_overflow)),
            reserved: w(std::mem::offset_of!(sys::Ring, reserved)),
        }
    }

    /// The submitting and the reaping half, each for one thread ([`SubmitQueue`] and
    /// [`CompletionQueue`] are `Send`).
    pub fn split(&mut self) -> (SubmitQueue<'_>, CompletionQueue<'_>) {
        (
            SubmitQueue { map: &self.map },
            CompletionQueue { map: &self.map },
        )
    }
}

impl SubmitQueue<'_> {
    /// As [`Ring::submit`].
    ///
    /// # Errors
    ///
    /// As [`Ring::submit`].
    pub fn submit(&mut self, slot: u32, count: u32) -> Result<bool> {
        submit(self.map, slot, count)
    }
}

impl CompletionQueue<'_> {
    /// As [`Ring::reap`].
    pub fn reap(&mut self) -> Option<Completion> {
        reap(self.map)
    }

    /// As [`Ring::spin_timeout`].
    pub fn spin_timeout(&mut self, timeout: Duration) -> Option<Completion> {
        spin(self.map, timeout)
    }
}

fn submit(m: &Map, slot: u32, count: u32) -> Result<bool> {
    if slot >= sys::NR_SLOTS || count == 0 || count > sys::MAX_KICK {
        return Err(errno(libc::EINVAL));
    }
    let tail = m.control(SQ_TAIL).load(Ordering::Relaxed);
    // A head the page shows out of range (overwritten) counts as a full queue, as the
    // kernel's own does not depend on it.
    if tail.wrapping_sub(m.control(SQ_HEAD).load(Ordering::Acquire)) >= sys::RING_SQ_ENTRIES {
        if m.needs_wakeup() {
            m.enter()?;
        }
        return Ok(false);
    }
    let at = sys::RING_SQ_OFFSET as usize
        + (tail % sys::RING_SQ_ENTRIES) as usize * size_of::<sys::Sqe>();
    m.word(at).store(slot, Ordering::Relaxed);
    m.word(at + 4).store(count, Ordering::Relaxed);
    m.control(SQ_TAIL)
        .store(tail.wrapping_add(1), Ordering::Release);
    // Either the thread sees the tail before it sleeps, or this sees its request.
    fence(Ordering::SeqCst);
    if m.needs_wakeup() {
        m.enter()?;
    }
    Ok(true)
}

fn reap(m: &Map) -> Option<Completion> {
    let head = m.control(CQ_HEAD).load(Ordering::Relaxed);
    let tail = m.control(CQ_TAIL).load(Ordering::Acquire);
    // Nothing, or a tail no kernel wrote (overwritten in the page): nothing to trust.
    if tail.wrapping_sub(head).wrapping_sub(1) >= sys::RING_CQ_ENTRIES {
        return None;
    }
    let at = sys::RING_CQ_OFFSET as usize
        + (head % sys::RING_CQ_ENTRIES) as usize * size_of::<sys::Cqe>();
    // The 64-bit seq as two words, which the entry holds still (the kernel writes it again
    // only after the head passes it), so that targets without 64-bit atomics build.
    let (w0, w1) = (
        u64::from(m.word(at + 8).load(Ordering::Relaxed)),
        u64::from(m.word(at + 12).load(Ordering::Relaxed)),
    );
    let seq = if cfg!(target_endian = "little") {
        w0 | w1 << 32
    } else {
        w1 | w0 << 32
    };
    let c = Completion {
        slot: m.word(at).load(Ordering::Relaxed),
        count: m.word(at + 4).load(Ordering::Relaxed),
        seq,
    };
    // The entry is read before the kernel may reuse it.
    m.control(CQ_HEAD)
        .store(head.wrapping_add(1), Ordering::Release);
    Some(c)
}

fn spin(m: &Map, timeout: Duration) -> Option<Completion> {
    let start = Instant::now();
    loop {
        if let Some(c) = reap(m) {
            return Some(c);
        }
        if start.elapsed() >= timeout {
            return None;
        }
        std::hint::spin_loop();
    }
}

impl Drop for Map<'_> {
    fn drop(&mut self) {
        // SAFETY: `at` is this object's own mapping, of `RING_SIZE` bytes (the invariant); no
        // reference into it outlives `self`.
        let _ = unsafe { nix::sys::mman::munmap(self.at.cast(), sys::RING_SIZE as usize) };
    }
}
