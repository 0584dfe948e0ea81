//! Throughput: kicks a channel absorbs, notifications read, timer ticks at the minimum period,
//! and io_uring NOPs for comparison.

use crate::{
    cpu::unpin,
    peers::{Mode, NopRing},
    watchdog,
};
use anyhow::Result;
use evnotify::{Channel, Notifier};
use serde::Serialize;
use std::{
    thread,
    time::{Duration, Instant},
};

#[derive(Serialize, Default)]
pub(crate) struct Throughput {
    kicks_per_s: f64,
    kicks_per_wakeup: f64,
    notifications_read_per_s: f64,
    notifications_per_read: f64,
    timer_ticks_per_s: f64,
    timer_min_period_ns: u64,
    /// NOPs through a ring without SQPOLL, one `io_uring_enter` each (as one ioctl per kick).
    io_uring_nops_per_s: f64,
    /// NOPs through an SQPOLL ring, published one at a time, with no syscall.
    io_uring_sqpoll_nops_per_s: f64,
}

pub(crate) fn throughput(secs: f64, limit: Duration) -> Result<Throughput> {
    unpin()?;
    let dur = Duration::from_secs_f64(secs);
    // Kicks absorbed: one thread kicks as fast as it can; nobody reads, so eventfd counts pile up.
    let ch = Channel::open()?;
    let n = Notifier::new()?;
    ch.attach(0, &n)?;
    watchdog::step("throughput: kicks");
    let t = Instant::now();
    let mut kicks = 0u64;
    while t.elapsed() < dur {
        ch.kick(0, 1)?;
        kicks += 1;
    }
    let el = t.elapsed().as_secs_f64();
    let s = ch.wait_idle(Duration::from_secs(60))?;
    let kicks_per_s = kicks as f64 / el;
    // Each time the thread found work, after sleeping or while spinning.
    let kicks_per_wakeup = s.handled as f64 / (s.wakeups + s.polled).max(1) as f64;

    // The same for io_uring NOPs: nobody reads the CQ eventfd either.
    watchdog::step("throughput: io_uring NOPs");
    let io_uring_nops_per_s = NopRing::new(Mode::Enter, None, limit)?.nops_per_s(dur)?;
    watchdog::step("throughput: io_uring SQPOLL NOPs");
    let io_uring_sqpoll_nops_per_s = NopRing::new(Mode::SqPoll, None, limit)?.nops_per_s(dur)?;

    // Notifications read: a reader drains the eventfd while bursts of 1024 keep it fed.
    watchdog::step("throughput: notifications read");
    let ch = Channel::open()?;
    let n = Notifier::new()?;
    ch.attach(0, &n)?;
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (read_total, reads, el) = thread::scope(|sc| -> Result<(u64, u64, f64)> {
        let kicker = sc.spawn(|| -> Result<()> {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if ch.stats()?.pending < 4096 {
                    ch.kick(0, 1024)?;
                } else {
                    thread::yield_now();
                }
            }
            Ok(())
        });
        let t = Instant::now();
        let (mut total, mut reads) = (0, 0);
        while t.elapsed() < dur {
            total += n.wait()?;
            reads += 1;
        }
        let el = t.elapsed().as_secs_f64();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        kicker
            .join()
            .map_err(|_| anyhow::anyhow!("kicker panicked"))??;
        Ok((total, reads, el))
    })?;

    // Timer ticks at the minimum period.
    watchdog::step("throughput: timer ticks");
    let ch = Channel::open()?;
    let n = Notifier::new()?;
    ch.attach(0, &n)?;
    ch.set_timer(0, Duration::from_nanos(evnotify::sys::MIN_PERIOD_NS), 0)?;
    thread::sleep(dur);
    ch.cancel_timer(0)?;
    let ticks = ch.wait_idle(Duration::from_secs(10))?.timer_ticks;

    Ok(Throughput {
        kicks_per_s: kicks_per_s.round(),
        kicks_per_wakeup,
        notifications_read_per_s: (read_total as f64 / el).round(),
        notifications_per_read: read_total as f64 / reads.max(1) as f64,
        timer_ticks_per_s: (ticks as f64 / secs).round(),
        timer_min_period_ns: evnotify::sys::MIN_PERIOD_NS,
        io_uring_nops_per_s: io_uring_nops_per_s.round(),
        io_uring_sqpoll_nops_per_s: io_uring_sqpoll_nops_per_s.round(),
    })
}
