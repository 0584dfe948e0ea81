//! What a user would pick instead of the module: io_uring (NOPs answered by an SQPOLL thread,
//! inline in `io_uring_enter`, or by an io-wq worker, each completion signalled on a registered
//! CQ eventfd) and a user-space responder that busy-polls an eventfd.

use anyhow::{bail, ensure, Context, Result};
use evnotify::Notifier;
use io_uring::{opcode, squeue, IoUring};
use std::{
    os::fd::{AsFd, AsRawFd},
    thread,
    time::{Duration, Instant},
};

/// Who answers a NOP.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The ring's SQ thread picks the NOP up with no syscall (`IORING_SETUP_SQPOLL`).
    SqPoll,
    /// The same, and the caller spins on the CQ ring instead of waiting on an eventfd (none
    /// is registered): no syscall at all while the SQ thread is awake.
    SqPollSpin,
    /// The submitting thread itself, inline in `io_uring_enter`.
    Enter,
    /// An io-wq worker thread (`IOSQE_ASYNC`), which sleeps between requests.
    Iowq,
}

/// A ring that answers NOPs, with its CQ eventfd registered (`IORING_REGISTER_EVENTFD`),
/// except for a caller that spins on the CQ ring.
pub struct NopRing {
    ring: IoUring,
    done: Notifier,
    mode: Mode,
    /// A spinning caller yields the CPU between looks ([`spin_wait`]).
    yields: bool,
}

/// `sq_thread_idle` for a spin limit: the kernel takes whole milliseconds (0 would mean one
/// second) and rounds them up to scheduler ticks, so the SQ thread spins at least as long.
pub fn sq_idle_ms(limit: Duration) -> u32 {
    limit.as_micros().div_ceil(1000).max(1) as u32
}

impl NopRing {
    /// A ring whose SQ thread (`SqPoll`) or io-wq workers (`Iowq`) run on `cpu` (anywhere if
    /// `None`); the SQ thread spins `idle` before it sleeps.
    pub fn new(mode: Mode, cpu: Option<usize>, idle: Duration) -> Result<Self> {
        let mut b = IoUring::builder();
        if matches!(mode, Mode::SqPoll | Mode::SqPollSpin) {
            b.setup_sqpoll(sq_idle_ms(idle));
            if let Some(cpu) = cpu {
                b.setup_sqpoll_cpu(cpu as u32);
            }
        }
        let ring = b.build(64).context("io_uring_setup")?;
        let done = Notifier::new()?;
        if mode != Mode::SqPollSpin {
            ring.submitter()
                .register_eventfd(done.as_fd().as_raw_fd())
                .context("IORING_REGISTER_EVENTFD")?;
        }
        if let (Mode::Iowq, Some(cpu)) = (mode, cpu) {
            // SAFETY: CPU_ZERO/CPU_SET only write into the set; `cpu` is below CPU_SETSIZE.
            let set = unsafe {
                let mut set = std::mem::zeroed::<libc::cpu_set_t>();
                libc::CPU_ZERO(&mut set);
                libc::CPU_SET(cpu, &mut set);
                set
            };
            ring.submitter()
                .register_iowq_aff(&set)
                .context("IORING_REGISTER_IOWQ_AFF")?;
        }
        Ok(Self {
            ring,
            done,
            mode,
            yields: false,
        })
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Makes a spinning caller yield between looks (see [`spin_wait`]).
    pub fn yielding(mut self, yields: bool) -> Self {
        self.yields = yields;
        self
    }

    /// Queues one NOP and submits it (with no syscall while the SQ thread is awake).
    fn submit_nop(&mut self) -> Result<()> {
        let flags = match self.mode {
            Mode::Iowq => squeue::Flags::ASYNC,
            _ => squeue::Flags::empty(),
        };
        let nop = opcode::Nop::new().build().flags(flags);
        // SAFETY: A NOP refers to no buffer.
        unsafe { self.ring.submission().push(&nop) }?;
        self.ring.submit().context("io_uring_enter")?;
        Ok(())
    }

    /// Takes the completions there are; fails on a NOP that did not succeed.
    fn reap(&mut self) -> Result<u64> {
        let mut n = 0;
        for cqe in self.ring.completion() {
            ensure!(cqe.result() == 0, "NOP failed: {}", cqe.result());
            n += 1;
        }
        Ok(n)
    }

    /// One round trip: submit a NOP, block on the CQ eventfd (or spin on the CQ ring), reap
    /// the completion.
    pub fn round_trip(&mut self) -> Result<()> {
        self.submit_nop()?;
        if self.mode == Mode::SqPollSpin {
            let yields = self.yields;
            return match spin_wait(yields, || self.reap())? {
                1 => Ok(()),
                n => bail!("{n} CQEs for one NOP"),
            };
        }
        ensure!(self.done.wait()? == 1, "coalesced CQ eventfd signal");
        ensure!(self.reap()? == 1, "one CQE per NOP");
        Ok(())
    }

    /// Waits (up to a second) until the SQ thread has gone to sleep, so that it does not spin
    /// into whatever is measured next. Returns at once for a ring without one.
    pub fn settle(&mut self) {
        let t = Instant::now();
        while matches!(self.mode, Mode::SqPoll | Mode::SqPollSpin)
            && !self.ring.submission().need_wakeup()
            && t.elapsed() < Duration::from_secs(1)
        {
            thread::sleep(Duration::from_millis(1));
        }
    }

    /// NOPs completed per second for `dur`, each submitted on its own (one `io_uring_enter`
    /// each without SQPOLL, as each kick is one ioctl), completions reaped as they come.
    pub fn nops_per_s(&mut self, dur: Duration) -> Result<f64> {
        let (mut sent, mut done) = (0u64, 0u64);
        let t = Instant::now();
        while t.elapsed() < dur {
            if self.ring.submission().is_full() {
                // The SQ thread is behind: let it catch up (or wake it).
                self.ring.submit()?;
            } else {
                self.submit_nop()?;
                sent += 1;
            }
            done += self.reap()?;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while done < sent {
            ensure!(
                Instant::now() < deadline,
                "{} NOPs never completed",
                sent - done
            );
            self.ring.submit()?;
            done += self.reap()?;
            thread::yield_now();
        }
        Ok(done as f64 / t.elapsed().as_secs_f64())
    }
}

/// How long a caller that spins for its answer waits before the run fails.
pub const SPIN_STALL: Duration = Duration::from_secs(10);

/// Looks with `look` until it finds something (non-zero), and returns it; fails after
/// [`SPIN_STALL`]. With `yields`, the caller gives its CPU up between looks (`sched_yield`):
/// on the responder's own CPU, a caller that spins without yielding holds it until the
/// scheduler's tick, and measures the tick.
pub fn spin_wait(yields: bool, mut look: impl FnMut() -> Result<u64>) -> Result<u64> {
    let t = Instant::now();
    loop {
        match look()? {
            0 => ensure!(t.elapsed() < SPIN_STALL, "nothing in {SPIN_STALL:?}"),
            n => return Ok(n),
        }
        if yields {
            thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

/// Receives one message on `n` (a non-blocking eventfd), spinning on `read(2)` for up to
/// `limit` before it blocks, as the channel thread spins before it sleeps.
pub fn spin_recv(n: &Notifier, limit: Duration) -> Result<()> {
    let t = Instant::now();
    loop {
        match n.drain()? {
            0 if t.elapsed() < limit => std::hint::spin_loop(),
            0 => break,
            1 => return Ok(()),
            _ => bail!("coalesced"),
        }
    }
    ensure!(n.wait()? == 1, "coalesced");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ring_answers_round_trips_and_counts_nops() {
        // One test, so that no other SQ thread is running meanwhile (the SQPOLL ring last: its
        // thread outlives it briefly).
        for mode in [Mode::Enter, Mode::Iowq, Mode::SqPollSpin, Mode::SqPoll] {
            let mut r = NopRing::new(mode, Some(0), Duration::from_micros(200)).unwrap();
            for _ in 0..100 {
                r.round_trip().unwrap();
            }
            // The tasks whose CPU time the benchmark reads.
            let sqp = crate::cpu::tasks_named("iou-sqp-").unwrap().len();
            let sq_thread = matches!(mode, Mode::SqPoll | Mode::SqPollSpin);
            if sq_thread {
                // The previous SQPOLL ring's thread may still be on its way out.
                assert!(sqp >= 1);
            } else {
                assert_eq!(sqp, 0);
            }
            if mode == Mode::Iowq {
                assert!(!crate::cpu::tasks_named("iou-wrk-").unwrap().is_empty());
            }
            r.settle();
            if sq_thread {
                assert!(r.ring.submission().need_wakeup(), "SQ thread still awake");
            }
            // Every NOP sent is reaped, none left over.
            assert!(r.nops_per_s(Duration::from_millis(20)).unwrap() > 0.0);
            assert_eq!(r.reap().unwrap(), 0);
        }
    }

    #[test]
    fn spin_recv_takes_one_message_spinning_or_blocked() {
        let n = Notifier::new().unwrap();
        n.post(1).unwrap();
        spin_recv(&n, Duration::from_millis(1)).unwrap();
        // Nothing comes within the spin: it blocks until the message does.
        thread::scope(|s| {
            s.spawn(|| {
                thread::sleep(Duration::from_millis(20));
                n.post(1).unwrap();
            });
            spin_recv(&n, Duration::from_micros(50)).unwrap();
        });
        assert_eq!(n.drain().unwrap(), 0);
        // Two messages in one read are a miscount, spinning or not.
        n.post(2).unwrap();
        assert!(spin_recv(&n, Duration::from_millis(1)).is_err());
        n.post(2).unwrap();
        assert!(spin_recv(&n, Duration::ZERO).is_err());
    }

    #[test]
    fn sq_thread_idle_rounds_up_to_whole_milliseconds() {
        assert_eq!(sq_idle_ms(Duration::ZERO), 1);
        assert_eq!(sq_idle_ms(Duration::from_micros(200)), 1);
        assert_eq!(sq_idle_ms(Duration::from_micros(1000)), 1);
        assert_eq!(sq_idle_ms(Duration::from_micros(1001)), 2);
    }
}
