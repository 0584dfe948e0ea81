//! Allocation failure at every allocation site of open and of each ioctl (`CONFIG_FAILSLAB` with
//! `/proc/thread-self/fail-nth`), and the channel limit. Each failure must be a clean errno,
//! and the device must keep working.

use crate::{collect, expect_errno, settle, Test};
use anyhow::{bail, ensure, Context, Result};
use evnotify::{sys, Channel, Notifier};
use nix::{
    errno::Errno,
    kmod::{delete_module, finit_module, DeleteModuleFlags, ModuleInitFlags},
    mount::{mount, MsFlags},
};
use nix::{
    sys::{
        signal::{kill, Signal},
        wait::{waitpid, WaitStatus},
    },
    unistd::{fork, ForkResult},
};
use std::{ffi::CStr, fs, path::Path, thread, time::Duration};

pub const TESTS: &[Test] = &[
    ("fault_inject_open", fault_inject_open),
    ("fault_inject_attach", fault_inject_attach),
    ("fault_inject_kickfd", fault_inject_kickfd),
    (
        "fault_inject_signal_and_timer",
        fault_inject_signal_and_timer,
    ),
    ("fault_inject_ring", fault_inject_ring),
    ("fault_inject_worker_start", fault_inject_worker_start),
    ("limit_max_channels_emfile", limit_max_channels_emfile),
    ("sigkill_mid_ioctls_and_waits", sigkill_mid_ioctls_and_waits),
    ("rmmod_after_close_storm", rmmod_after_close_storm),
];

/// Makes failslab fail `GFP_KERNEL` allocations too, quietly (its stack dumps are not splats).
fn arm_failslab() -> Result<()> {
    let dbg = Path::new("/sys/kernel/debug");
    if !dbg.join("failslab").exists() {
        mount(
            Some("debugfs"),
            dbg,
            Some("debugfs"),
            MsFlags::empty(),
            None::<&str>,
        )
        .context("mount debugfs")?;
    }
    for (knob, v) in [
        ("ignore-gfp-wait", "N"),
        ("verbose", "0"),
        ("task-filter", "N"),
    ] {
        fs::write(dbg.join("failslab").join(knob), v)
            .with_context(|| format!("failslab/{knob}"))?;
    }
    Ok(())
}

/// Runs `op` with its `n`-th slab allocation failing, for n = 1, 2, ... until `op` completes
/// without reaching the injected failure. Every failure must be one of `allowed`. After each
/// injected fault `check(succeeded)` must pass: the op either failed with no effect, or
/// succeeded because the failed allocation had a fallback (debug kernels allocate metadata
/// that may fail quietly). Returns the number of faults injected.
pub fn each_allocation<T>(
    what: &str,
    allowed: &[Errno],
    mut op: impl FnMut() -> std::io::Result<T>,
    mut check: impl FnMut(bool) -> Result<()>,
) -> Result<u32> {
    use std::os::unix::fs::FileExt;
    arm_failslab()?;
    // Opened once: opening it while armed would itself allocate, and fail.
    let nth = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/proc/thread-self/fail-nth")?;
    for n in 1..10_000 {
        nth.write_at(n.to_string().as_bytes(), 0)
            .context("arm fail-nth")?;
        let r = op().map_err(crate::errno);
        let mut buf = [0u8; 16];
        let len = nth.read_at(&mut buf, 0)?;
        nth.write_at(b"0", 0)?;
        let left: u32 = std::str::from_utf8(&buf[..len])?.trim().parse()?;
        let injected = left == 0;
        match r {
            Err(e) if !allowed.contains(&e) => bail!("{what}: allocation {n} failed with {e}"),
            Err(e) if !injected => bail!("{what}: failed with {e} without an injected fault"),
            Ok(_) if !injected => return Ok(n - 1),
            // Injected and handled: either a clean errno, or a fallback inside the kernel.
            r => {
                check(r.is_ok()).with_context(|| format!("{what}: after failing allocation {n}"))?
            }
        }
    }
    bail!("{what}: never completed")
}

/// The device works: a new channel delivers a kick.
fn device_works() -> Result<()> {
    let ch = Channel::open()?;
    let n = Notifier::new()?;
    ch.attach(0, &n)?;
    ch.kick(0, 1)?;
    collect(&n, 1)?;
    settle(&ch, &n)?;
    Ok(())
}

fn fault_inject_open() -> Result<()> {
    // Opening allocates in the VFS, the channel and the new kernel thread.
    let faults = each_allocation(
        "open",
        &[Errno::ENOMEM, Errno::ENFILE],
        Channel::open,
        |_| device_works(),
    )?;
    ensure!(faults >= 3, "only {faults} allocations in open");
    println!("# fault_inject_open: {faults} faults injected");
    Ok(())
}

fn fault_inject_attach() -> Result<()> {
    let ch = Channel::open()?;
    let n = Notifier::new()?;
    let attach = || ch.attach(0, &n);
    let faults = each_allocation("attach", &[Errno::ENOMEM], attach, |ok| {
        ensure!(
            ch.stats()?.attached == u32::from(ok),
            "attach had the wrong effect"
        );
        Ok(ch.detach(0)?)
    })?;
    ensure!(faults >= 1, "attach allocated nothing");
    ch.attach(0, &n)?;
    ch.kick(0, 2)?;
    collect(&n, 2)?;
    println!("# fault_inject_attach: {faults} faults injected");
    Ok(())
}

fn fault_inject_kickfd() -> Result<()> {
    // A new channel for each attempt, so that every allocation of a first hook (the worker,
    // the slots' extra state, the hook, the table) fails in turn: a step that succeeded would
    // otherwise be skipped by the next attempt.
    let fresh = || -> Result<(Channel, Notifier)> {
        let ch = Channel::open()?;
        let n = Notifier::new()?;
        ch.attach(0, &n)?;
        Ok((ch, n))
    };
    let cur = std::cell::RefCell::new(fresh()?);
    let k = Notifier::new()?;
    // A count already in the eventfd: a hook takes it at once, a failed one must leave it.
    k.post(5)?;
    let hook = || cur.borrow().0.attach_kickfd(0, &k);
    let faults = each_allocation("kickfd", &[Errno::ENOMEM], hook, |ok| {
        {
            let (ch, n) = &*cur.borrow();
            let s = ch.stats()?;
            ensure!(
                s.kickfds == u32::from(ok),
                "kickfd attach had the wrong effect: {s:?}"
            );
            if ok {
                ensure!(s.kicks == 5, "{s:?}");
                collect(n, 5)?;
            } else {
                ensure!(s.kicks == 0, "a failed hook kicked: {s:?}");
                ensure!(k.drain()? == 5, "a failed hook took the eventfd's count");
            }
        }
        // Released with the old channel before the next attempt hooks it.
        *cur.borrow_mut() = fresh()?;
        Ok(k.post(5)?)
    })?;
    ensure!(
        faults >= 4,
        "only {faults} allocations in a first kickfd hook"
    );
    // The last attempt hooked it, and took the count.
    let (ch, n) = &*cur.borrow();
    collect(n, 5)?;
    k.post(3)?;
    collect(n, 3)?;
    ensure!(ch.stats()?.fd_kicks == 8, "{:?}", ch.stats()?);
    println!("# fault_inject_kickfd: {faults} faults injected");
    Ok(())
}

fn fault_inject_signal_and_timer() -> Result<()> {
    let ch = Channel::open()?;
    let mut faults = 0;
    // A signal number, and 0 (SIGIO), which the module spells out itself.
    for signo in [libc::SIGUSR1, 0] {
        let signal = || ch.set_signal(0, signo);
        let what = format!("signal {signo}");
        let f = each_allocation(&what, &[Errno::ENOMEM], signal, |ok| {
            ensure!(
                ch.stats()?.signal_slots == u32::from(ok),
                "{what}: the request had the wrong effect"
            );
            Ok(ch.set_signal(0, -1)?)
        })?;
        ensure!(f >= 1, "{what} allocated nothing");
        faults += f;
        // The call that completed left the slot signalling.
        ch.set_signal(0, -1)?;
    }
    // Once the thread runs (its start is tested in `fault_inject_thread_start`), timers and
    // kicks allocate nothing: they must complete at the first try.
    crate::start_thread(&ch)?;
    let timer = || ch.set_timer(1, Duration::from_secs(1), 1);
    let t = each_allocation("timer", &[], timer, |_| Ok(()))?;
    ensure!(t == 0, "timer reached {t} allocations");
    let k = each_allocation("kick", &[], || ch.kick(1, 1), |_| Ok(()))?;
    ensure!(k == 0, "kick reached {k} allocations");
    println!("# fault_inject_signal_and_timer: {faults} faults injected");
    Ok(())
}

fn fault_inject_ring() -> Result<()> {
    // A new channel, sharing one worker with `first` and three others (whose four rings the
    // worker polls already, filling its list of rings: room for 4, then 12), for each attempt,
    // so that every allocation of a first mmap (the ring's state, its page, the worker's
    // bigger list) fails in turn; a failed mmap must leave no ring.
    let first = Channel::open()?;
    crate::start_thread(&first)?;
    let _polled = first.map_ring()?;
    let others = (0..3)
        .map(|_| {
            let ch = Channel::open()?;
            ch.share_worker(&first)?;
            Ok((RawRing::new(&ch)?, ch))
        })
        .collect::<Result<Vec<_>>>()?;
    let fresh = || -> Result<Channel> {
        let ch = Channel::open()?;
        ch.share_worker(&first)?;
        Ok(ch)
    };
    // Whether the channel has a ring: its stats, or ENXIO (any other answer fails the test).
    let has_ring = |ch: &Channel| -> Result<bool> {
        let mut st = sys::RingStats::default();
        let fd = std::os::fd::AsRawFd::as_raw_fd(ch);
        // SAFETY: `st` is a writable `struct evnotify_ring_stats`.
        match Errno::result(unsafe { libc::ioctl(fd, sys::IOC_RING_STATS as _, &mut st) }) {
            Ok(_) => Ok(true),
            Err(Errno::ENXIO) => Ok(false),
            Err(e) => bail!("EVNOTIFY_IOC_RING_STATS: {e}"),
        }
    };
    let cur = std::cell::RefCell::new(fresh()?);
    let map = || cur.borrow().map_ring().map(drop);
    let faults = each_allocation("mmap", &[Errno::ENOMEM], map, |ok| {
        ensure!(
            has_ring(&cur.borrow())? == ok,
            "mmap {} but the channel has {}",
            if ok { "succeeded" } else { "failed" },
            if ok { "no ring" } else { "a ring" }
        );
        *cur.borrow_mut() = fresh()?;
        Ok(())
    })?;
    ensure!(faults >= 4, "only {faults} allocations in a first mmap");
    drop(others);
    // The last channel made (after the attempt that made a ring): its first ring works end to
    // end.
    {
        let ch = cur.borrow();
        let n = Notifier::new()?;
        ch.attach(2, &n)?;
        let mut ring = ch.map_ring()?;
        ensure!(ring.submit(2, 3)?, "a new ring's queue is full");
        collect(&n, 3)?;
    }
    // A ring mapped before the channel has a worker: the first call that needs one starts
    // it and adds the ring to its list, and each of its allocations fails in turn (the
    // worker, its thread, the list): the call fails and the channel has no worker.
    let fresh = || -> Result<(Channel, RawRing)> {
        let ch = Channel::open()?;
        let ring = RawRing::new(&ch)?;
        Ok((ch, ring))
    };
    let cur = std::cell::RefCell::new(fresh()?);
    let kick = || cur.borrow().0.kick(1, 1);
    let started = each_allocation("kick", &[Errno::ENOMEM], kick, |ok| {
        let s = cur.borrow().0.stats()?;
        ensure!(
            (s.thread_pid > 0) == ok,
            "the kick {} but: {s:?}",
            if ok { "succeeded" } else { "failed" }
        );
        *cur.borrow_mut() = fresh()?;
        Ok(())
    })?;
    ensure!(
        started >= 2,
        "only {started} allocations in a ring's worker's start"
    );
    println!("# fault_inject_ring: {faults} faults injected in mmap, {started} in a ring's worker's start");
    Ok(())
}

/// Each call that starts a channel's worker, other than those above (a kick, an attach, a
/// first kick eventfd), fails with `ENOMEM` when one of the start's allocations does, and
/// takes no effect: no timer and no kick, and a failed share leaves the other channel with no
/// worker either. At least one failure must leave the channel with no worker (the start itself
/// failed); one after the start (a timer's extra state) may leave it the worker.
fn fault_inject_worker_start() -> Result<()> {
    type Call = fn(&Channel, &Channel) -> std::io::Result<()>;
    let calls: [(&str, Call); 4] = [
        ("a first timer", |ch, _| {
            ch.set_timer(1, Duration::from_secs(1), 1)
        }),
        // The other channel has no worker either: the call starts it, for both.
        ("a share of a channel with no worker", |ch, other| {
            ch.share_worker(other)
        }),
        // The other's worker polls four rings already: joining it adds a fifth, which needs a
        // bigger list.
        ("a share that adds a ring to the worker", |ch, other| {
            ch.share_worker(other)
        }),
        ("EVNOTIFY_IOC_RING_ENTER", |ch, _| {
            let fd = std::os::fd::AsRawFd::as_raw_fd(ch);
            // SAFETY: RING_ENTER takes no argument.
            Errno::result(unsafe { libc::ioctl(fd, sys::IOC_RING_ENTER as _) })?;
            Ok(())
        }),
    ];
    let mut total = 0;
    for (i, (what, call)) in calls.into_iter().enumerate() {
        // A fresh pair for each attempt: a step that succeeded would otherwise be skipped.
        // The channel, the other, and rings (each keeping its channel open) polled by the
        // other's worker.
        type Pair = (Channel, Channel, Vec<RawRing>);
        let fresh = || -> Result<Pair> {
            let (ch, other) = (Channel::open()?, Channel::open()?);
            let mut rings = vec![];
            if i == 2 {
                crate::start_thread(&other)?;
                rings.push(RawRing::new(&other)?);
                for _ in 0..3 {
                    let c = Channel::open()?;
                    c.share_worker(&other)?;
                    rings.push(RawRing::new(&c)?);
                }
            }
            if i >= 2 {
                rings.push(RawRing::new(&ch)?);
            }
            Ok((ch, other, rings))
        };
        let cur = std::cell::RefCell::new(fresh()?);
        let op = || {
            let c = cur.borrow();
            call(&c.0, &c.1)
        };
        // Failures that left the channel with no worker: the start itself failed (a later
        // step may fail after it, as a timer's extra state, and the worker stays).
        let mut unstarted = 0;
        let faults = each_allocation(what, &[Errno::ENOMEM], op, |ok| {
            {
                let (ch, other, ..) = &*cur.borrow();
                let s = ch.stats()?;
                ensure!(
                    !ok || s.thread_pid > 0,
                    "{what} succeeded with no worker: {s:?}"
                );
                if !ok {
                    unstarted += u32::from(s.thread_pid == 0);
                    ensure!(
                        s.timers == 0 && s.kicks == 0,
                        "a failed {what} took effect: {s:?}"
                    );
                    if i == 1 {
                        let o = other.stats()?;
                        ensure!(
                            o.thread_pid == 0,
                            "a failed share left the other a worker: {o:?}"
                        );
                    }
                }
            }
            *cur.borrow_mut() = fresh()?;
            Ok(())
        })?;
        ensure!(
            unstarted >= 1,
            "{what}: no injected fault failed the worker's start ({faults} faults)"
        );
        total += faults;
    }
    println!("# fault_inject_worker_start: {total} faults injected");
    Ok(())
}

/// A channel's ring, mapped with `mmap` alone: it holds no borrow of the channel.
struct RawRing(*mut libc::c_void);

impl RawRing {
    fn new(ch: &Channel) -> Result<Self> {
        // SAFETY: A new shared mapping of the channel's ring page, at an address the kernel
        // picks; unmapped by the drop.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                sys::RING_SIZE as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                std::os::fd::AsRawFd::as_raw_fd(ch),
                0,
            )
        };
        ensure!(p != libc::MAP_FAILED, "mmap: {}", Errno::last());
        Ok(Self(p))
    }
}

impl Drop for RawRing {
    fn drop(&mut self) {
        // SAFETY: The mapping made in `new`, which nothing else refers to.
        unsafe { libc::munmap(self.0, sys::RING_SIZE as usize) };
    }
}

/// Reloads the module with `params`.
pub fn reload(params: &CStr) -> Result<()> {
    delete_module(c"rust_evnotify", DeleteModuleFlags::O_NONBLOCK).context("rmmod")?;
    let ko =
        std::env::var("EVNOTIFY_KO").unwrap_or_else(|_| "/lib/modules/rust_evnotify.ko".into());
    finit_module(&fs::File::open(&ko)?, params, ModuleInitFlags::empty()).context("insmod")?;
    let t = std::time::Instant::now();
    while !Path::new(evnotify::DEVICE).exists() {
        ensure!(t.elapsed() < crate::hang(), "device node did not come back");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    Ok(())
}

fn limit_max_channels_emfile() -> Result<()> {
    reload(c"max_channels=4")?;
    let r = (|| -> Result<()> {
        let chans = (0..4)
            .map(|_| Channel::open())
            .collect::<std::io::Result<Vec<_>>>()?;
        expect_errno(Channel::open(), Errno::EMFILE, "a 5th channel")?;
        drop(chans);
        // Places are given back on close.
        let again = (0..4)
            .map(|_| Channel::open())
            .collect::<std::io::Result<Vec<_>>>()?;
        expect_errno(Channel::open(), Errno::EMFILE, "a 5th channel again")?;
        ensure!(again.len() == 4 && sys::NR_SLOTS == 64, "slots are bounded");
        Ok(())
    })();
    reload(c"")?;
    r?;
    device_works()
}

/// A child busy in ioctls and blocking eventfd reads on shared channels is SIGKILLed at
/// random points; the channels, their threads and the module must not mind.
fn sigkill_mid_ioctls_and_waits() -> Result<()> {
    for round in 0..20u64 {
        let ch = Channel::open()?;
        let n = Notifier::new()?;
        // SAFETY: The child only runs the loop below (syscalls on inherited descriptors) and
        // never returns; it is killed by the parent.
        match unsafe { fork() }? {
            ForkResult::Child => loop {
                let own = Channel::open();
                let _ = ch.attach(round as u32 % 4, &n);
                let _ = ch.kick(round as u32 % 4, 100);
                let _ = ch.set_signal(round as u32 % 4, libc::SIGURG); // Ignored by default.
                if let Ok(own) = &own {
                    let _ = own.attach_kickfd(0, &n);
                    let _ = own.kick(0, 1000);
                }
                // Blocks whenever the parent's reads got there first.
                let _ = n.wait();
            },
            ForkResult::Parent { child } => {
                thread::sleep(Duration::from_micros(500 + round * 300));
                kill(child, Signal::SIGKILL)?;
                let st = waitpid(child, None)?;
                ensure!(
                    matches!(st, WaitStatus::Signaled(_, Signal::SIGKILL, _)),
                    "child ended as {st:?}"
                );
            }
        }
        // The shared channel still works; the child's own channel was closed by its death.
        ch.attach(5, &n)?;
        n.drain()?;
        ch.kick(5, 1)?;
        ch.wait_idle(crate::hang())?;
    }
    device_works()
}

/// rmmod fails while channels are busy, then works once a storm of concurrent closes ends.
fn rmmod_after_close_storm() -> Result<()> {
    let mut chans = vec![];
    for i in 0..128u32 {
        let ch = Channel::open()?;
        let n = Notifier::new()?;
        ch.attach(0, &n)?;
        ch.attach_kickfd(1, &n)?;
        ch.set_timer(2, Duration::from_millis(1), 0)?;
        ch.kick(0, 1000 + i)?;
        chans.push((ch, n));
    }
    expect_errno(
        delete_module(c"rust_evnotify", DeleteModuleFlags::O_NONBLOCK),
        Errno::EWOULDBLOCK,
        "rmmod with 128 busy channels",
    )?;
    // Close them all at once from 8 threads.
    let mut parts: Vec<Vec<_>> = (0..8).map(|_| vec![]).collect();
    for (i, c) in chans.into_iter().enumerate() {
        parts[i % 8].push(c);
    }
    thread::scope(|s| {
        for part in parts {
            s.spawn(move || drop(part));
        }
    });
    reload(c"")?;
    device_works()
}
