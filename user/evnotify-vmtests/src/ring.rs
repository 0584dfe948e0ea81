//! The event ring (`mmap`, `EVNOTIFY_IOC_RING_ENTER`, `EVNOTIFY_IOC_RING_STATS`): what the
//! header promises, in every mode of the thread (polling, sleeping, shared), and against a
//! user that writes anything into the page.

use crate::{collect, expect_errno, hang, idle, join, Test};
use anyhow::{bail, ensure, Context, Result};
use evnotify::{sys, Channel, Completion, Notifier, Ring, Stats};
use nix::errno::Errno;
use std::{
    os::fd::{AsRawFd, OwnedFd},
    sync::atomic::{AtomicBool, AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

pub const TESTS: &[Test] = &[
    ("ring_kick_completes", ring_kick_completes),
    ("ring_every_source_completes", ring_every_source_completes),
    ("ring_new_asks_for_wakeup", ring_new_asks_for_wakeup),
    ("ring_library_checks", ring_library_checks),
    (
        "ring_sleeping_thread_never_misses",
        ring_sleeping_thread_never_misses,
    ),
    (
        "ring_awake_thread_needs_no_enter",
        ring_awake_thread_needs_no_enter,
    ),
    ("ring_mapped_while_spinning", ring_mapped_while_spinning),
    ("ring_submission_ends_spin", ring_submission_ends_spin),
    (
        "ring_conservation_across_cpus",
        ring_conservation_across_cpus,
    ),
    (
        "ring_full_completion_queue_counted",
        ring_full_completion_queue_counted,
    ),
    ("ring_bad_entries_dropped", ring_bad_entries_dropped),
    (
        "ring_kernel_words_written_when_taken",
        ring_kernel_words_written_when_taken,
    ),
    ("ring_wild_tail_skipped", ring_wild_tail_skipped),
    ("ring_mmap_errors", ring_mmap_errors),
    ("ring_no_ring_enxio", ring_no_ring_enxio),
    ("ring_mappings_share_one_page", ring_mappings_share_one_page),
    ("ring_not_inherited_by_fork", ring_not_inherited_by_fork),
    (
        "ring_mapping_holds_the_channel",
        ring_mapping_holds_the_channel,
    ),
    (
        "ring_munmap_while_thread_writes",
        ring_munmap_while_thread_writes,
    ),
    (
        "ring_page_freed_when_released",
        ring_page_freed_when_released,
    ),
    ("ring_scribbled_page", ring_scribbled_page),
    (
        "ring_shared_worker_polls_every_ring",
        ring_shared_worker_polls_every_ring,
    ),
];

/// Spins for the next completion, failing on a hang.
fn next(r: &mut Ring) -> Result<Completion> {
    match r.spin_timeout(hang()) {
        Some(c) => Ok(c),
        None => bail!("no completion: {:?} {:?}", r.control(), r.stats()),
    }
}

/// Reaps completions until their counts add up to `want`; returns them.
fn reap_sum(r: &mut Ring, want: u64) -> Result<Vec<Completion>> {
    let mut got = vec![];
    let mut sum = 0;
    while sum < want {
        let c = next(r)?;
        ensure!(c.count >= 1 && c.count <= 1024, "a batch of {}", c.count);
        sum += u64::from(c.count);
        got.push(c);
    }
    ensure!(sum == want, "completions report {sum} kicks, want {want}");
    Ok(got)
}

/// Waits until the kernel has taken every submission published, and the channel is idle.
fn ring_idle(ch: &Channel, r: &Ring) -> Result<Stats> {
    let t = Instant::now();
    while r.stats()?.sq_head != r.control().sq_tail {
        ensure!(
            t.elapsed() < hang(),
            "submissions never taken: {:?}",
            r.control()
        );
        thread::sleep(Duration::from_millis(1));
    }
    idle(ch)
}

/// A raw shared mapping of the channel, as a C user would make it.
struct RawMap {
    at: *mut u8,
}

impl RawMap {
    fn new(fd: i32, len: usize, prot: i32, flags: i32, off: i64) -> std::io::Result<Self> {
        // SAFETY: A new mapping at an address the kernel picks.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, off) };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self { at: p.cast() })
    }

    fn ring(fd: i32) -> std::io::Result<Self> {
        Self::new(
            fd,
            sys::RING_SIZE as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            0,
        )
    }

    /// The 32-bit word at byte `off`.
    fn word(&self, off: usize) -> &AtomicU32 {
        assert!(off.is_multiple_of(4) && off < sys::RING_SIZE as usize);
        // SAFETY: In the mapping, aligned; the page is only accessed atomically.
        unsafe { AtomicU32::from_ptr(self.at.add(off).cast()) }
    }

    /// Publishes an entry with no system call, whatever the flags say.
    fn publish(&self, slot: u32, count: u32) {
        let tail = self.word(SQ_TAIL).load(Ordering::Relaxed);
        let at = sys::RING_SQ_OFFSET as usize + (tail % sys::RING_SQ_ENTRIES) as usize * 8;
        self.word(at).store(slot, Ordering::Relaxed);
        self.word(at + 4).store(count, Ordering::Relaxed);
        self.word(SQ_TAIL)
            .store(tail.wrapping_add(1), Ordering::Release);
    }
}

// SAFETY: The mapping is accessed only atomically, from any thread.
unsafe impl Sync for RawMap {}

impl Drop for RawMap {
    fn drop(&mut self) {
        // SAFETY: Our own mapping.
        unsafe { libc::munmap(self.at.cast(), sys::RING_SIZE as usize) };
    }
}

const SQ_TAIL: usize = std::mem::offset_of!(sys::Ring, sq_tail);
const SQ_HEAD: usize = std::mem::offset_of!(sys::Ring, sq_head);
const CQ_HEAD: usize = std::mem::offset_of!(sys::Ring, cq_head);
const CQ_TAIL: usize = std::mem::offset_of!(sys::Ring, cq_tail);
const FLAGS: usize = std::mem::offset_of!(sys::Ring, flags);
const RESERVED: usize = std::mem::offset_of!(sys::Ring, reserved);

/// Pins the calling thread (and the threads it starts later) to `cpu`.
fn pin_self(cpu: usize) -> Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu)?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)?;
    Ok(())
}

fn ring_kick_completes() -> Result<()> {
    let ch = Channel::open()?;
    let mut r = ch.map_ring()?;
    ensure!(r.submit(5, 3)?, "queue full at once");
    let c = next(&mut r)?;
    ensure!((c.slot, c.count, c.seq) == (5, 3, 0), "{c:?}");
    let s = ring_idle(&ch, &r)?;
    ensure!(
        s.kicks == 3 && s.handled == 3 && s.dropped == 0 && s.notifies == 0,
        "a posted batch is delivered, not dropped: {s:?}"
    );
    let rs = r.stats()?;
    ensure!(
        rs.sq_kicks == 3 && rs.cq_events == 1 && rs.cq_kicks == 3 && rs.sq_head == 1,
        "{rs:?}"
    );
    ensure!(rs.cq_tail == 1 && r.control().cq_tail == 1, "{rs:?}");
    ensure!(r.reap().is_none(), "a second completion");
    // A batch is at most 1024 kicks, whatever the kick.
    r.submit(6, 5000)?;
    let got = reap_sum(&mut r, 5000)?;
    ensure!(got.len() >= 5 && got.iter().all(|c| c.slot == 6), "{got:?}");
    ensure!(
        got.windows(2).all(|w| w[1].seq == w[0].seq + 1),
        "seq with a gap: {got:?}"
    );
    Ok(())
}

/// Kicks by ioctl, kick eventfd and ring, and timer ticks: each batch posted, then signalled.
fn ring_every_source_completes() -> Result<()> {
    let ch = Channel::open()?;
    let mut r = ch.map_ring()?;
    let (n, k) = (Notifier::new()?, Notifier::new()?);
    ch.attach(1, &n)?;
    ch.attach_kickfd(2, &k)?;
    ch.kick(1, 4)?;
    collect(&n, 4)?;
    // The completion was posted before the eventfd was signalled.
    let c = r
        .reap()
        .context("eventfd signalled before its completion")?;
    ensure!(c.slot == 1 && c.count == 4 && c.seq == 0, "{c:?}");
    k.post(2)?;
    let fd_batches = reap_sum(&mut r, 2)?;
    ch.set_timer(3, Duration::from_millis(2), 5)?;
    let ticks = reap_sum(&mut r, 5)?;
    ensure!(ticks.iter().all(|c| c.slot == 3), "{ticks:?}");
    ensure!(fd_batches.iter().all(|c| c.slot == 2), "{fd_batches:?}");
    let s = ring_idle(&ch, &r)?;
    let rs = r.stats()?;
    ensure!(
        rs.cq_kicks + rs.lost_kicks == s.handled && s.handled == 11 && s.dropped == 0,
        "{s:?} {rs:?}"
    );
    ensure!(s.notifies == 4, "only slot 1 has an eventfd: {s:?}");
    ensure!(
        rs.cq_events == 1 + (fd_batches.len() + ticks.len()) as u64,
        "{rs:?}"
    );
    Ok(())
}

fn ring_new_asks_for_wakeup() -> Result<()> {
    let ch = Channel::open()?;
    let mut r = ch.map_ring()?;
    ensure!(
        r.needs_wakeup(),
        "a new ring does not ask: {:?}",
        r.control()
    );
    ensure!(ch.stats()?.thread_pid == 0, "mmap started the thread");
    // The submission finds the request and enters, which starts the thread.
    r.submit(0, 1)?;
    next(&mut r)?;
    ensure!(ch.stats()?.thread_pid > 0, "no thread");
    Ok(())
}

/// The library refuses what the kernel would skip, reports a full queue, and wakes the thread
/// so that it drains; `spin_timeout(0)` looks once.
fn ring_library_checks() -> Result<()> {
    let ch = Channel::open()?;
    let mut r = ch.map_ring()?;
    for (slot, count) in [(sys::NR_SLOTS, 1), (0, 0), (0, sys::MAX_KICK + 1)] {
        expect_errno(r.submit(slot, count), Errno::EINVAL, "submit")?;
    }
    ensure!(r.control().sq_tail == 0, "a refused entry was published");
    ensure!(
        r.spin_timeout(Duration::ZERO).is_none(),
        "a completion from nothing"
    );
    // Filled with no system call: no thread has started, nothing takes them.
    let m = RawMap::ring(ch.as_raw_fd())?;
    for i in 0..sys::RING_SQ_ENTRIES {
        m.publish(i % 64, 1);
    }
    ensure!(!r.submit(0, 1)?, "a full queue took one more");
    // The full queue's submit entered, for the thread asked: every entry is taken.
    let got = reap_sum(&mut r, sys::RING_SQ_ENTRIES.into())?;
    ensure!(
        ch.stats()?.thread_pid > 0,
        "the full queue's submit did not enter"
    );
    ensure!(
        r.submit(0, 1)?,
        "still full after the thread took it: {got:?}"
    );
    next(&mut r)?;
    Ok(())
}

/// With busy polling off the thread sleeps after every batch: each submission must find the
/// request, or be seen by the thread's last look.
fn ring_sleeping_thread_never_misses() -> Result<()> {
    for limit in [Duration::ZERO, Duration::from_micros(5)] {
        let ch = Channel::open()?;
        ch.set_busypoll(limit)?;
        let mut r = ch.map_ring()?;
        for i in 0..20_000u64 {
            ensure!(r.submit((i % 64) as u32, 1)?, "full");
            let c = next(&mut r).with_context(|| format!("busypoll {limit:?}, round {i}"))?;
            ensure!(c.seq == i && c.count == 1, "{c:?} at {i}");
        }
        let s = ring_idle(&ch, &r)?;
        ensure!(s.wakeups > 0, "the thread never slept: {s:?}");
    }
    Ok(())
}

/// A thread kept awake by another channel's flood takes rings' submissions made with no
/// system call at all (a ring mapped before the channel joined the worker, and one mapped
/// after), and withdraws its request for a wake-up while awake.
fn ring_awake_thread_needs_no_enter() -> Result<()> {
    let (busy, before, after) = (Channel::open()?, Channel::open()?, Channel::open()?);
    busy.set_busypoll(Duration::from_nanos(sys::MAX_BUSYPOLL_NS.into()))?;
    let mut r1 = before.map_ring()?;
    before.share_worker(&busy)?;
    after.share_worker(&busy)?;
    let mut r2 = after.map_ring()?;
    let m1 = RawMap::ring(before.as_raw_fd())?;
    let m2 = RawMap::ring(after.as_raw_fd())?;
    let stop = AtomicBool::new(false);
    thread::scope(|s| -> Result<()> {
        let flood = s.spawn(|| -> Result<()> {
            while !stop.load(Ordering::Relaxed) {
                busy.kick(0, 1000)?;
            }
            Ok(())
        });
        let res = (|| -> Result<()> {
            for i in 0..200 {
                for (m, r, what) in [(&m1, &mut r1, "mapped before"), (&m2, &mut r2, "after")] {
                    m.publish(7, 1);
                    let c = next(r).with_context(|| format!("{what}, round {i}: not taken"))?;
                    ensure!(c.slot == 7 && c.seq == i, "{what}: {c:?}");
                }
            }
            // Awake, the thread clears the requests (it may sleep now and then meanwhile).
            for (r, what) in [(&r1, "mapped before"), (&r2, "after")] {
                let t = Instant::now();
                while r.needs_wakeup() {
                    ensure!(
                        t.elapsed() < hang(),
                        "{what}: the request stays set while awake"
                    );
                    thread::sleep(Duration::from_micros(100));
                }
            }
            Ok(())
        })();
        stop.store(true, Ordering::Relaxed);
        join(flood, "flood")?;
        res
    })
}

/// A ring mapped while the thread spins for the channel's next kick (right after a polled
/// answer) has the completion of every batch taken after `mmap` returned, none counted
/// dropped: the spin reads the ring anew when it ends. Each round's channel shares a worker
/// whose window back-to-back round trips grew, and its ring is mapped right after an answer,
/// and by a helper while this thread goes on with round trips, so that the ring is published,
/// at the end of the `mmap`, during one of their spins.
fn ring_mapped_while_spinning() -> Result<()> {
    // Round trips during the `mmap`, at most: their completions fit in the queue.
    const DURING: u64 = 64;
    pin_self(0)?;
    let a = Channel::open()?;
    a.set_busypoll(Duration::from_nanos(sys::MAX_BUSYPOLL_NS.into()))?;
    let na = Notifier::new()?;
    a.attach(0, &na)?;
    round_trips(&a, &na, 1)?;
    a.pin_thread(1)?;
    for _ in 0..5 {
        round_trips(&a, &na, 200)?;
        if a.stats()?.polled > 0 {
            break;
        }
    }
    ensure!(a.stats()?.polled > 0, "never polled: {:?}", a.stats()?);
    let mut spans = vec![];
    for round in 0..20 {
        let ch = Channel::open()?;
        ch.share_worker(&a)?;
        let n = Notifier::new()?;
        ch.attach(0, &n)?;
        round_trips(&ch, &n, 50)?;
        let (mut r, during) = thread::scope(|s| -> Result<_> {
            let map = s.spawn(|| ch.map_ring());
            let mut during = 0;
            while !map.is_finished() && during < DURING {
                round_trips(&ch, &n, 1)?;
                during += 1;
            }
            Ok((join(map, "mmap")?, during))
        })?;
        ensure!(r.submit(3, 2)?, "queue full at once");
        // Before the submission's: the completions of the round trips taken once the ring was
        // there, in order.
        let mut seq = 0;
        let c = loop {
            let c = next(&mut r).with_context(|| format!("round {round}"))?;
            ensure!(c.seq == seq, "round {round}: {c:?} after {seq} completions");
            seq += 1;
            if c.slot == 3 {
                break c;
            }
            ensure!(
                (c.slot, c.count) == (0, 1) && seq <= during,
                "round {round}: {c:?} with {during} round trips during the mmap"
            );
        };
        ensure!(c.count == 2, "round {round}: {c:?}");
        let s = ring_idle(&ch, &r)?;
        ensure!(
            s.dropped == 0 && s.handled == 52 + during,
            "round {round}: a posted batch counted dropped: {s:?}"
        );
        spans.push((during, s.polled));
    }
    println!("# round trips during the mmap, and spins that caught one, by round: {spans:?}");
    Ok(())
}

/// `n` kicks of slot 0 of `ch`, each waited for at `nf`.
fn round_trips(ch: &Channel, nf: &Notifier, n: usize) -> Result<()> {
    for _ in 0..n {
        ch.kick(0, 1)?;
        collect(nf, 1)?;
    }
    Ok(())
}

/// A ring's user that submits again as soon as each completion is posted (a polled ping-pong,
/// with no system call once the thread runs) is answered by the thread's spin for the
/// channel's next kick: a submission ends the spin ("times it found work while busy
/// polling", `polled`). Every submission completes once, in order.
fn ring_submission_ends_spin() -> Result<()> {
    pin_self(0)?;
    let ch = Channel::open()?;
    ch.set_busypoll(Duration::from_nanos(sys::MAX_BUSYPOLL_NS.into()))?;
    let mut r = ch.map_ring()?;
    let mut seq = 0;
    // Until the window has grown (a slow kernel may need more round trips).
    for _ in 0..5 {
        for _ in 0..200 {
            ensure!(r.submit(0, 1)?, "queue full with one submission out");
            let c = next(&mut r)?;
            ensure!((c.slot, c.count, c.seq) == (0, 1, seq), "{c:?}");
            seq += 1;
            if seq == 1 {
                // Started by the first submission's enter.
                ch.pin_thread(1)?;
            }
        }
        if ring_idle(&ch, &r)?.polled > 0 {
            break;
        }
    }
    let s = ring_idle(&ch, &r)?;
    ensure!(s.handled == seq && s.dropped == 0, "{s:?}");
    ensure!(
        s.polled > 0,
        "no submission was caught by a spin in {seq} round trips: {s:?}"
    );
    Ok(())
}

/// A submitter and a reaper on one CPU, the thread on another, millions of kicks: every one
/// is reported, in completions or as lost, and every seq accounted.
fn ring_conservation_across_cpus() -> Result<()> {
    let cpus = thread::available_parallelism()?.get();
    ensure!(cpus >= 2, "the VM has {cpus} CPU");
    let ch = Channel::open()?;
    let mut r = ch.map_ring()?;
    r.submit(0, 1)?;
    next(&mut r)?;
    ch.pin_thread(1)?;
    pin_self(0)?;
    const N: u64 = 2_000_000;
    let done = AtomicBool::new(false);
    let (mut sq, mut cq) = r.split();
    // What the reaper saw: kicks, completions, the last seq, and the seqs skipped before it.
    let (sum, seen, last_seq, gaps) = thread::scope(|s| -> Result<(u64, u64, u64, u64)> {
        let reaper = s.spawn(|| -> Result<(u64, u64, u64, u64)> {
            let (mut sum, mut seen, mut last, mut gaps) = (0u64, 0u64, 0u64, 0u64);
            let t = Instant::now();
            loop {
                match cq.reap() {
                    Some(c) => {
                        ensure!(c.seq > last, "seq not increasing: {c:?} after {last}");
                        gaps += c.seq - last - 1;
                        (sum, seen, last) = (sum + u64::from(c.count), seen + 1, c.seq);
                    }
                    None if done.load(Ordering::Acquire) => return Ok((sum, seen, last, gaps)),
                    None => std::hint::spin_loop(),
                }
                ensure!(t.elapsed() < hang() * 2, "reaper hung at {sum}");
            }
        });
        let res = (|| -> Result<()> {
            let mut sent = 0u64;
            let t = Instant::now();
            while sent < N {
                if sq.submit((sent % 64) as u32, 1)? {
                    sent += 1;
                } else {
                    ensure!(t.elapsed() < hang() * 2, "submission queue stuck at {sent}");
                    std::hint::spin_loop();
                }
            }
            Ok(())
        })();
        // Every submission taken and delivered: the completions are all posted.
        let idle = res.and_then(|()| {
            let t = Instant::now();
            while ch.map_ring()?.stats()?.sq_head != (N + 1) as u32 {
                ensure!(t.elapsed() < hang(), "submissions never taken");
                thread::sleep(Duration::from_millis(1));
            }
            idle(&ch).map(|_| ())
        });
        done.store(true, Ordering::Release);
        let got = join(reaper, "reaper");
        idle?;
        got
    })?;
    let s = ring_idle(&ch, &r)?;
    let rs = r.stats()?;
    ensure!(rs.sq_kicks == N + 1 && s.kicks == N + 1, "{s:?} {rs:?}");
    ensure!(sum + 1 + rs.lost_kicks == N + 1, "{sum} + lost: {rs:?}");
    ensure!(rs.cq_events == seen + 1, "{seen} reaped: {rs:?}");
    // Every seq not reaped is a completion lost: skipped before the last, or lost after it.
    let produced = rs.cq_events + rs.cq_overflow;
    ensure!(
        last_seq < produced && gaps + (produced - 1 - last_seq) == rs.cq_overflow,
        "last seq {last_seq}, {gaps} skipped: {rs:?}"
    );
    ensure!(s.handled == N + 1 && s.dropped == 0, "{s:?}");
    println!(
        "# ring_conservation_across_cpus: {N} kicks in {seen} completions, {} lost, polled {} woke {}",
        rs.cq_overflow, s.polled, s.wakeups
    );
    Ok(())
}

/// Completions nobody reaps: the first `RING_CQ_ENTRIES` are posted, the rest counted lost,
/// and the seq of the next posted one shows the gap; a head ahead of the tail is full too.
fn ring_full_completion_queue_counted() -> Result<()> {
    let ch = Channel::open()?;
    let mut r = ch.map_ring()?;
    let extra = 20u64;
    let total = u64::from(sys::RING_CQ_ENTRIES) + extra;
    for i in 0..total {
        // One batch each: wait until the previous one is taken.
        ch.kick((i % 64) as u32, 2)?;
        idle(&ch)?;
    }
    let rs = r.stats()?;
    ensure!(
        rs.cq_events == u64::from(sys::RING_CQ_ENTRIES) && rs.cq_overflow == extra,
        "{rs:?}"
    );
    ensure!(
        rs.lost_kicks == 2 * extra && rs.cq_kicks == 2 * rs.cq_events,
        "{rs:?}"
    );
    ensure!(r.control().cq_overflow == extra as u32, "{:?}", r.control());
    for seq in 0..u64::from(sys::RING_CQ_ENTRIES) {
        let c = r.reap().context("a posted completion is missing")?;
        ensure!(c.seq == seq && c.count == 2, "{c:?}");
    }
    ensure!(r.reap().is_none(), "more than the queue holds");
    ch.kick(7, 1)?;
    let c = next(&mut r)?;
    ensure!(c.seq == total && c.slot == 7, "the gap: {c:?}");
    // A head ahead of the tail: no room, counted.
    let m = RawMap::ring(ch.as_raw_fd())?;
    let tail = m.word(CQ_TAIL).load(Ordering::Acquire);
    m.word(CQ_HEAD).store(tail + 5, Ordering::Release);
    ch.kick(8, 1)?;
    idle(&ch)?;
    let rs = r.stats()?;
    ensure!(rs.cq_overflow == extra + 1 && rs.cq_tail == tail, "{rs:?}");
    let s = idle(&ch)?;
    ensure!(s.dropped == 0 && s.handled == 2 * total + 2, "{s:?}");
    Ok(())
}

fn ring_bad_entries_dropped() -> Result<()> {
    let ch = Channel::open()?;
    let m = RawMap::ring(ch.as_raw_fd())?;
    let bad = [(64, 1), (u32::MAX, 1), (0, 0), (0, sys::MAX_KICK + 1)];
    for (slot, count) in bad {
        m.publish(slot, count);
    }
    m.publish(1, 5);
    m.publish(2, sys::MAX_KICK);
    // SAFETY: The ioctl takes no argument.
    let rc = unsafe { libc::ioctl(ch.as_raw_fd(), sys::IOC_RING_ENTER as _) };
    ensure!(rc == 0, "RING_ENTER: {}", std::io::Error::last_os_error());
    let s = idle(&ch)?;
    let want = 5 + u64::from(sys::MAX_KICK);
    ensure!(
        s.kicks == want && s.handled == want,
        "only the good entries kick: {s:?}"
    );
    ensure!(m.word(SQ_HEAD).load(Ordering::Acquire) == 6, "sq_head");
    let dropped = m
        .word(std::mem::offset_of!(sys::Ring, sq_dropped))
        .load(Ordering::Relaxed);
    ensure!(dropped == 4, "the page shows {dropped} dropped");
    Ok(())
}

/// The page's sq_head and sq_dropped are the kernel's to write when it takes submissions: a
/// value written over them stays while there is nothing new to take, and the next take writes
/// the kernel's own again (the header's ring section).
fn ring_kernel_words_written_when_taken() -> Result<()> {
    let ch = Channel::open()?;
    let r = ch.map_ring()?;
    let m = RawMap::ring(ch.as_raw_fd())?;
    let dropped = m.word(std::mem::offset_of!(sys::Ring, sq_dropped));
    m.publish(1, 1);
    m.publish(64, 1);
    r.enter()?;
    ring_idle(&ch, &r)?;
    ensure!(
        m.word(SQ_HEAD).load(Ordering::Acquire) == 2 && dropped.load(Ordering::Relaxed) == 1,
        "after the first take: {:?}",
        r.control()
    );
    // A word the kernel writes and its counter (sq_head and sq_dropped, or cq_tail and
    // cq_overflow) must read `want` after an enter with or without a new submission.
    let expect = |publish: bool, word: usize, counter: &AtomicU32, want: (u32, u32), what: &str| {
        if publish {
            m.publish(1, 1);
        }
        r.enter()?;
        ring_idle(&ch, &r)?;
        let got = (
            m.word(word).load(Ordering::Acquire),
            counter.load(Ordering::Relaxed),
        );
        ensure!(
            got == want,
            "{what}: {got:?}, {:?} {:?}",
            r.control(),
            r.stats()?
        );
        Ok(())
    };
    // Values written over the pair stay while the kernel writes neither; a submission then
    // makes it write `written`.
    let kept_then = |word: usize, counter: &AtomicU32, over: (u32, u32), written: (u32, u32)| {
        m.word(word).store(over.0, Ordering::Relaxed);
        counter.store(over.1, Ordering::Relaxed);
        expect(
            false,
            word,
            counter,
            over,
            "nothing to write, yet the page was written",
        )?;
        expect(
            true,
            word,
            counter,
            written,
            "the kernel's words after a submission",
        )
    };
    kept_then(SQ_HEAD, dropped, (77, 99), (3, 1))?;
    let (rs, s) = (r.stats()?, ch.stats()?);
    ensure!(
        rs.sq_head == 3 && rs.sq_dropped == 1 && s.kicks == 2,
        "the kernel's own: {rs:?} {s:?}"
    );
    // cq_tail and cq_overflow likewise: a post writes cq_tail only, and a loss (a cq_head ahead
    // of the tail is a full queue) cq_overflow only.
    let overflow = m.word(std::mem::offset_of!(sys::Ring, cq_overflow));
    let tail = rs.cq_tail;
    kept_then(CQ_TAIL, overflow, (5000, 7), (tail + 1, 7))?;
    m.word(CQ_HEAD).store(tail + 2, Ordering::Release);
    expect(
        true,
        CQ_TAIL,
        overflow,
        (tail + 1, 1),
        "a loss writes cq_overflow only",
    )?;
    ensure!(r.stats()?.cq_overflow == 1, "{:?}", r.stats()?);
    Ok(())
}

/// A tail far ahead of the head is no queue: skipped, counted once, and the ring works on; a
/// tail exactly a queue ahead is a full queue.
fn ring_wild_tail_skipped() -> Result<()> {
    let ch = Channel::open()?;
    let r = ch.map_ring()?;
    let m = RawMap::ring(ch.as_raw_fd())?;
    for wild in [sys::RING_SQ_ENTRIES + 1, u32::MAX, 1 << 31] {
        let head = m.word(SQ_HEAD).load(Ordering::Acquire);
        m.word(SQ_TAIL)
            .store(head.wrapping_add(wild), Ordering::Release);
        r.enter()?;
        let rs = r.stats()?;
        ensure!(rs.sq_head == head.wrapping_add(wild), "{wild}: {rs:?}");
    }
    let rs = r.stats()?;
    ensure!(rs.sq_dropped == 3 && rs.sq_kicks == 0, "{rs:?}");
    ensure!(ch.stats()?.kicks == 0, "a wild tail kicked");
    for _ in 0..sys::RING_SQ_ENTRIES {
        m.publish(9, 2);
    }
    r.enter()?;
    let s = ring_idle(&ch, &r)?;
    ensure!(
        s.kicks == 2 * u64::from(sys::RING_SQ_ENTRIES),
        "a full queue: {s:?}"
    );
    ensure!(r.stats()?.sq_dropped == 3, "{:?}", r.stats());
    Ok(())
}

fn ring_mmap_errors() -> Result<()> {
    let ch = Channel::open()?;
    let fd = ch.as_raw_fd();
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    let page = sys::RING_SIZE as usize;
    let cases: [(&str, usize, i32, i32, i64, Errno); 4] = [
        (
            "two pages",
            2 * page,
            rw,
            libc::MAP_SHARED,
            0,
            Errno::EINVAL,
        ),
        (
            "offset",
            page,
            rw,
            libc::MAP_SHARED,
            page as i64,
            Errno::EINVAL,
        ),
        ("private", page, rw, libc::MAP_PRIVATE, 0, Errno::EINVAL),
        (
            "exec",
            page,
            libc::PROT_READ | libc::PROT_EXEC,
            libc::MAP_SHARED,
            0,
            Errno::EPERM,
        ),
    ];
    for (what, len, prot, flags, off, want) in cases {
        expect_errno(
            RawMap::new(fd, len, prot, flags, off).map(|_| ()),
            want,
            what,
        )?;
    }
    // A failed mmap makes no ring.
    let mut st = sys::RingStats::default();
    // SAFETY: `st` is a writable `struct evnotify_ring_stats`.
    let rc = unsafe { libc::ioctl(fd, sys::IOC_RING_STATS as _, &mut st) };
    ensure!(
        rc == -1 && Errno::last() == Errno::ENXIO,
        "a ring after failed mmaps"
    );
    // Any length that rounds up to one page is the page.
    let short = RawMap::new(fd, 1, rw, libc::MAP_SHARED, 0)?;
    ensure!(
        short.word(FLAGS).load(Ordering::Relaxed) == sys::RING_NEED_WAKEUP,
        "a one-byte mapping"
    );
    // Read-only descriptors map read-only only.
    let ro: OwnedFd = std::fs::File::open(evnotify::DEVICE)?.into();
    expect_errno(
        RawMap::new(ro.as_raw_fd(), page, rw, libc::MAP_SHARED, 0).map(|_| ()),
        Errno::EACCES,
        "PROT_WRITE on O_RDONLY",
    )?;
    let m = RawMap::new(ro.as_raw_fd(), page, libc::PROT_READ, libc::MAP_SHARED, 0)?;
    ensure!(
        m.word(FLAGS).load(Ordering::Relaxed) == sys::RING_NEED_WAKEUP,
        "a read-only mapping shows the ring"
    );
    // The ioctls ignore the access mode (SECURITY.md): a read-only channel is driven as any.
    let ro = Channel::from(ro);
    let n = Notifier::new()?;
    ro.attach(0, &n)?;
    ro.kick(0, 2)?;
    ensure!(
        n.wait_timeout(Duration::from_secs(10))? == 2,
        "a kick on an O_RDONLY channel"
    );
    // A READ_IMPLIES_EXEC personality adds PROT_EXEC to PROT_READ (/dev is not noexec here):
    // refused as PROT_EXEC is (the header).
    let st = in_child(|| {
        // SAFETY: Sets this child's personality only.
        if unsafe { libc::personality(libc::READ_IMPLIES_EXEC as libc::c_ulong) } == -1 {
            return 2;
        }
        match RawMap::new(fd, page, rw, libc::MAP_SHARED, 0) {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => 0,
            _ => 1,
        }
    })?;
    ensure!(
        matches!(st, nix::sys::wait::WaitStatus::Exited(_, 0)),
        "mmap under READ_IMPLIES_EXEC: {st:?} (1: not EPERM, 2: personality failed)"
    );
    // Never executable, never grown.
    let m = RawMap::ring(fd)?;
    // SAFETY: Our own mapping; the calls change its protection or size only.
    unsafe {
        let rc = libc::mprotect(m.at.cast(), page, libc::PROT_READ | libc::PROT_EXEC);
        ensure!(
            rc == -1 && Errno::last() == Errno::EACCES,
            "mprotect PROT_EXEC: {rc} {}",
            Errno::last()
        );
        let p = libc::mremap(m.at.cast(), page, 2 * page, libc::MREMAP_MAYMOVE);
        ensure!(
            p == libc::MAP_FAILED && Errno::last() == Errno::EFAULT,
            "mremap to two pages: {p:?} {}",
            Errno::last()
        );
    }
    Ok(())
}

fn ring_no_ring_enxio() -> Result<()> {
    let ch = Channel::open()?;
    // SAFETY: The ioctl takes no argument.
    let rc = unsafe { libc::ioctl(ch.as_raw_fd(), sys::IOC_RING_ENTER as _) };
    ensure!(
        rc == -1 && Errno::last() == Errno::ENXIO,
        "RING_ENTER: {rc}"
    );
    let mut st = sys::RingStats::default();
    // SAFETY: `st` is a writable `struct evnotify_ring_stats`.
    let rc = unsafe { libc::ioctl(ch.as_raw_fd(), sys::IOC_RING_STATS as _, &mut st) };
    ensure!(
        rc == -1 && Errno::last() == Errno::ENXIO,
        "RING_STATS: {rc}"
    );
    ensure!(ch.stats()?.thread_pid == 0, "RING_ENTER started a thread");
    Ok(())
}

fn ring_mappings_share_one_page() -> Result<()> {
    let ch = Channel::open()?;
    let mut a = ch.map_ring()?;
    let b = RawMap::ring(ch.as_raw_fd())?;
    b.word(RESERVED).store(0xfeed, Ordering::Relaxed);
    ensure!(a.control().reserved == 0xfeed, "two pages");
    // Submitted through one, completed in both.
    a.submit(4, 1)?;
    next(&mut a)?;
    ensure!(
        b.word(CQ_TAIL).load(Ordering::Acquire) == 1,
        "the other mapping does not show the completion"
    );
    // fdinfo shows the ring's counters.
    let info = ch.fdinfo()?;
    for line in [
        "ring_sq_kicks:\t1",
        "ring_cq_events:\t1",
        "ring_cq_tail:\t1",
    ] {
        ensure!(info.contains(line), "no {line:?} in fdinfo:\n{info}");
    }
    Ok(())
}

/// Runs `f` in a child process; returns how it ended.
fn in_child(f: impl FnOnce() -> i32) -> Result<nix::sys::wait::WaitStatus> {
    use nix::unistd::{fork, ForkResult};
    // SAFETY: The child makes a few system calls and `_exit`s.
    match unsafe { fork() }? {
        ForkResult::Child => {
            let rc = crate::kcov::recorded(f);
            // SAFETY: Leaves the child at once.
            unsafe { libc::_exit(rc) }
        }
        ForkResult::Parent { child } => Ok(nix::sys::wait::waitpid(child, None)?),
    }
}

/// A child inherits the channel but not the mapping; mapping the channel itself, it gets the
/// same page.
fn ring_not_inherited_by_fork() -> Result<()> {
    use nix::sys::wait::WaitStatus;
    let ch = Channel::open()?;
    let mut r = ch.map_ring()?;
    let m = RawMap::ring(ch.as_raw_fd())?;
    m.word(RESERVED).store(0xc0de, Ordering::Relaxed);
    let at = m.at as usize;
    let fd = ch.as_raw_fd();
    let st = in_child(|| {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
        let mapped = maps.lines().any(|l| {
            l.split(['-', ' '])
                .next()
                .and_then(|s| usize::from_str_radix(s, 16).ok())
                == Some(at)
        });
        if mapped || maps.is_empty() {
            return 1;
        }
        match RawMap::ring(fd) {
            Ok(mine) if mine.word(RESERVED).load(Ordering::Relaxed) == 0xc0de => 0,
            _ => 2,
        }
    })?;
    ensure!(
        matches!(st, WaitStatus::Exited(_, 0)),
        "the child inherited the mapping, or its own is another page: {st:?}"
    );
    r.submit(0, 1)?;
    next(&mut r)?;
    Ok(())
}

/// A mapping holds the channel, as any mapping holds its file: closing the last descriptor
/// leaves it working until the last munmap, which closes it.
fn ring_mapping_holds_the_channel() -> Result<()> {
    let ch = Channel::open()?;
    let m = RawMap::ring(ch.as_raw_fd())?;
    let k = Notifier::new()?;
    ch.attach_kickfd(0, &k)?;
    let wait_tail = |want: u32| -> Result<()> {
        let t = Instant::now();
        while m.word(CQ_TAIL).load(Ordering::Acquire) != want {
            ensure!(t.elapsed() < hang(), "no completion {want}");
            thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    };
    k.post(1)?;
    wait_tail(1)?;
    drop(ch);
    k.post(1)?;
    wait_tail(2)?;
    drop(m);
    // Released: nobody takes the kick eventfd's count any more.
    k.post(5)?;
    let t = Instant::now();
    loop {
        match k.try_read()? {
            Some(5) => return Ok(()),
            Some(v) => bail!("the channel took part of the count: {v} left"),
            None => ensure!(t.elapsed() < hang(), "the kick eventfd is still hooked"),
        }
        // A kick that the released channel still took would be gone; wait for the release.
        k.post(5)?;
        thread::sleep(Duration::from_millis(1));
    }
}

/// Every mapping unmapped, the last while the thread writes the page: mapped again, the ring
/// is the same, its counters go on, and every batch is accounted.
fn ring_munmap_while_thread_writes() -> Result<()> {
    let ch = Channel::open()?;
    let mut posted = 0u32;
    for round in 0..50u32 {
        let m = RawMap::ring(ch.as_raw_fd())?;
        ensure!(
            m.word(CQ_TAIL).load(Ordering::Acquire) >= posted,
            "round {round}: the ring started over"
        );
        // Consume what is there, so that the thread has room to write.
        m.word(CQ_HEAD)
            .store(m.word(CQ_TAIL).load(Ordering::Acquire), Ordering::Release);
        ch.kick(round % 64, 5000)?;
        for _ in 0..round {
            m.publish(1, 1);
        }
        // SAFETY: The ioctl takes no argument.
        unsafe { libc::ioctl(ch.as_raw_fd(), sys::IOC_RING_ENTER as _) };
        posted = m.word(CQ_TAIL).load(Ordering::Acquire);
        // The last mapping goes, the batches of 5000 kicks still in flight.
        drop(m);
    }
    let r = ch.map_ring()?;
    let s = ring_idle(&ch, &r)?;
    let rs = r.stats()?;
    ensure!(rs.cq_kicks + rs.lost_kicks == s.handled, "{s:?} {rs:?}");
    ensure!(
        s.handled == 50 * 5000 + 49 * 50 / 2 && rs.sq_kicks == 49 * 50 / 2,
        "{s:?} {rs:?}"
    );
    Ok(())
}

/// The ring pages the module holds, as `/proc/vmallocinfo` lists them (by the function that
/// allocates them, `Ring::new`).
fn ring_pages() -> Result<usize> {
    let info = std::fs::read_to_string("/proc/vmallocinfo")?;
    Ok(info
        .lines()
        .filter(|l| l.contains("[rust_evnotify]") && l.contains("Ring3new"))
        .count())
}

/// Released with its last descriptor and mapping (and its worker's reference), a channel
/// frees its ring's page.
fn ring_page_freed_when_released() -> Result<()> {
    let before = ring_pages()?;
    {
        let chans: Vec<Channel> = (0..8).map(|_| Channel::open()).collect::<Result<_, _>>()?;
        for c in &chans[1..] {
            c.share_worker(&chans[0])?;
        }
        for (i, c) in chans.iter().enumerate() {
            let mut r = c.map_ring()?;
            r.submit(i as u32, 1)?;
            next(&mut r)?;
        }
        let held = ring_pages()?;
        ensure!(
            held == before + 8,
            "{held} ring pages with 8 channels, {before} before"
        );
    }
    let t = Instant::now();
    while ring_pages()? != before {
        ensure!(
            t.elapsed() < hang(),
            "{} ring pages after the channels closed, {before} before",
            ring_pages()?
        );
        thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// A thread writes random words over the whole page while the channel works: the kernel's
/// counts stay exact for what it took, another channel's are untouched, and nothing splats
/// (the VM log is scanned).
fn ring_scribbled_page() -> Result<()> {
    let ch = Channel::open()?;
    let r = ch.map_ring()?;
    let m = RawMap::ring(ch.as_raw_fd())?;
    let n = Notifier::new()?;
    ch.attach(0, &n)?;
    // A bystander on the same worker, with a ring of its own.
    let other = Channel::open()?;
    other.share_worker(&ch)?;
    let mut other_ring = other.map_ring()?;
    let on = Notifier::new()?;
    other.attach(3, &on)?;
    let stop = AtomicBool::new(false);
    const KICKS: u64 = 20_000;
    thread::scope(|s| -> Result<()> {
        let scribbler = s.spawn(|| {
            let mut x = 0x9E37_79B9_7F4A_7C15u64;
            let sq = sys::RING_SQ_OFFSET as usize..sys::RING_CQ_OFFSET as usize;
            while !stop.load(Ordering::Relaxed) {
                // The kernel's own head: the page's is scribbled over too.
                let head = r.stats().map_or(0, |s| s.sq_head);
                for off in (0..sys::RING_SIZE as usize).step_by(4) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // Half of the entries plausible (a slot up to 79, a count up to 100),
                    // so that some are kicks and some are dropped; the rest anything.
                    let v = match (sq.contains(&off), off % 8, x % 2) {
                        (true, 0, 0) => (x >> 8) as u32 % 80,
                        (true, _, 0) => (x >> 8) as u32 % 101,
                        // A tail near the head half of the time, so that entries are taken.
                        (false, _, 0) if off == SQ_TAIL => head.wrapping_add((x >> 8) as u32 % 160),
                        _ => x as u32,
                    };
                    m.word(off).store(v, Ordering::Relaxed);
                }
            }
        });
        let res = (|| -> Result<()> {
            for i in 0..KICKS / 100 {
                ch.kick(0, 100)?;
                // Entering while the page is garbage: whatever it takes, it counts.
                r.enter()?;
                ensure!(other_ring.submit(3, 1)?, "the bystander's queue is full");
                let c = next(&mut other_ring)?;
                ensure!(c.slot == 3 && c.count == 1 && c.seq == i, "{c:?}");
            }
            Ok(())
        })();
        stop.store(true, Ordering::Relaxed);
        scribbler
            .join()
            .map_err(|_| anyhow::anyhow!("scribbler panicked"))?;
        res
    })?;
    // The scribbler is gone: nothing takes the page's last tail unless entered.
    r.enter()?;
    let s = ring_idle(&other, &other_ring).and_then(|_| idle(&ch))?;
    let rs = r.stats()?;
    ensure!(
        s.kicks == KICKS + rs.sq_kicks,
        "kicks are the ioctl's and the ring's: {s:?} {rs:?}"
    );
    ensure!(
        s.kicks.wrapping_add(s.timer_ticks) == s.handled.wrapping_add(s.coalesced),
        "{s:?}"
    );
    ensure!(rs.cq_kicks + rs.lost_kicks == s.handled, "{s:?} {rs:?}");
    ensure!(n.drain()? >= KICKS, "slot 0's eventfd lost kicks");
    let os = idle(&other)?;
    ensure!(
        on.drain()? == KICKS / 100 && os.kicks == KICKS / 100 && os.notifies == KICKS / 100,
        "the bystander: {os:?}"
    );
    println!(
        "# ring_scribbled_page: the ring took {} kicks, dropped {} entries, lost {} completions",
        rs.sq_kicks, rs.sq_dropped, rs.cq_overflow
    );
    Ok(())
}

fn ring_shared_worker_polls_every_ring() -> Result<()> {
    let chans: Vec<Channel> = (0..4).map(|_| Channel::open()).collect::<Result<_, _>>()?;
    for c in &chans[1..] {
        c.share_worker(&chans[0])?;
    }
    let mut rings: Vec<Ring> = chans
        .iter()
        .map(Channel::map_ring)
        .collect::<Result<_, _>>()?;
    for round in 0..2000u64 {
        for (i, r) in rings.iter_mut().enumerate() {
            ensure!(r.submit(i as u32, 1)?, "full");
        }
        for (i, r) in rings.iter_mut().enumerate() {
            let c = next(r)?;
            ensure!(c.slot == i as u32 && c.seq == round, "{c:?}");
        }
    }
    let pid = chans[0].stats()?.thread_pid;
    for c in &chans {
        ensure!(c.stats()?.thread_pid == pid, "not one worker");
    }
    Ok(())
}
