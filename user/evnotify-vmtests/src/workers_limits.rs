//! Shared workers and the module's limits: the per-worker busy-poll limit, the channel
//! limits counting sharers, and rmmod while a sharer is open.
//!
//! Every wait has a deadline ([`hang`](crate::hang)); none asserts a speed.

use crate::workers::{fdinfo_field, pool, thread_gone, worker};
use crate::{collect, expect_errno, faults::reload, idle, start_thread, Test};
use anyhow::{ensure, Context, Result};
use evnotify::{sys, Channel, Notifier};
use nix::{
    errno::Errno,
    kmod::{delete_module, DeleteModuleFlags},
};
use std::time::Duration;

pub const TESTS: &[Test] = &[
    ("workers_busypoll_per_worker", workers_busypoll_per_worker),
    ("workers_limits_count_sharers", workers_limits_count_sharers),
    (
        "workers_rmmod_busy_then_succeeds",
        workers_rmmod_busy_then_succeeds,
    ),
];

/// Busy polling belongs to the worker: a limit set through any channel shows on all of them,
/// and a channel that shares takes the worker's limit, whatever it had.
fn workers_busypoll_per_worker() -> Result<()> {
    let (chans, _) = pool(2)?;
    let (a, b) = (&chans[0], &chans[1]);
    let lone = Channel::open()?;
    start_thread(&lone)?;
    let before = lone.stats()?.busypoll_ns;
    for (k, ns) in [1234u32, 0, sys::MAX_BUSYPOLL_NS, 777]
        .into_iter()
        .enumerate()
    {
        let (set, other) = if k % 2 == 0 { (a, b) } else { (b, a) };
        set.set_busypoll(Duration::from_nanos(ns.into()))?;
        for ch in [a, b] {
            ensure!(ch.stats()?.busypoll_ns == ns, "{ns}: {:?}", ch.stats()?);
            ensure!(fdinfo_field(ch, "busypoll_ns")? == ns.to_string());
        }
        ensure!(other.stats()?.busypoll_ns == ns);
    }
    ensure!(
        lone.stats()?.busypoll_ns == before,
        "another worker's limit changed: {:?}",
        lone.stats()?
    );
    // A channel with a limit of its own takes the worker's when it shares; then its setting
    // applies to the worker.
    let c = Channel::open()?;
    c.set_busypoll(Duration::from_nanos(4321))?;
    ensure!(c.stats()?.busypoll_ns == 4321);
    c.share_worker(&a)?;
    ensure!(c.stats()?.busypoll_ns == 777, "{:?}", c.stats()?);
    ensure!(
        a.stats()?.busypoll_ns == 777,
        "the sharer changed the worker's limit"
    );
    c.set_busypoll(Duration::ZERO)?;
    ensure!(a.stats()?.busypoll_ns == 0 && b.stats()?.busypoll_ns == 0);
    // A share that starts the worker: the worker takes its starter's limit.
    let (d, e) = (Channel::open()?, Channel::open()?);
    d.set_busypoll(Duration::from_nanos(999))?;
    e.set_busypoll(Duration::from_nanos(5))?;
    e.share_worker(&d)?;
    ensure!(
        d.stats()?.busypoll_ns == 999 && e.stats()?.busypoll_ns == 999,
        "{:?} {:?}",
        d.stats()?,
        e.stats()?
    );
    ensure!(lone.stats()?.busypoll_ns == before);
    Ok(())
}

/// Channels that share a worker count against max_user_channels and max_channels like any.
fn workers_limits_count_sharers() -> Result<()> {
    reload(c"max_channels=4 max_user_channels=3")?;
    let r = (|| -> Result<()> {
        let (chans, _) = pool(3)?;
        expect_errno(Channel::open(), Errno::EMFILE, "a 4th channel of root")?;
        drop(chans);
        let (chans, w) = pool(3)?;
        ensure!(w.channels == 3);
        expect_errno(Channel::open(), Errno::EMFILE, "a 4th after reopening")?;
        // A closed sharer gives its place back.
        let mut chans = chans;
        chans.pop();
        let again = Channel::open()?;
        again.share_worker(&chans[0])?;
        ensure!(worker(&again)?.channels == 3);
        expect_errno(Channel::open(), Errno::EMFILE, "a 4th again")?;
        Ok(())
    })();
    reload(c"")?;
    r
}

/// The module cannot unload while a channel that shares a worker is open, even after the
/// channel that started it closed; it can once all are closed (then it is loaded again).
fn workers_rmmod_busy_then_succeeds() -> Result<()> {
    let name = c"rust_evnotify";
    let (mut chans, w) = pool(3)?;
    expect_errno(
        delete_module(name, DeleteModuleFlags::O_NONBLOCK),
        Errno::EWOULDBLOCK,
        "rmmod with shared channels open",
    )?;
    // The creator goes first; one sharer is left.
    chans.remove(0);
    chans.remove(0);
    expect_errno(
        delete_module(name, DeleteModuleFlags::O_NONBLOCK),
        Errno::EWOULDBLOCK,
        "rmmod with the last sharer open",
    )?;
    let last = chans.pop().context("no channel left")?;
    let n = Notifier::new()?;
    last.attach(0, &n)?;
    last.kick(0, 3)?;
    collect(&n, 3)?;
    ensure!(worker(&last)?.channels == 1);
    drop(last);
    thread_gone(w.thread_pid, "its channels")?;
    // `reload` unloads (failing if the module is busy) and loads it again.
    reload(c"")?;
    let ch = Channel::open()?;
    ch.kick(0, 1)?;
    idle(&ch)?;
    Ok(())
}
