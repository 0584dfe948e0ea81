//! Module load and unload, channels and their kernel threads.

use crate::{collect, expect_errno, hang, settle, start_thread, Test};
use anyhow::{ensure, Context, Result};
use evnotify::{sys, Channel, Notifier, DEVICE};
use nix::{
    errno::Errno,
    kmod::{delete_module, finit_module, DeleteModuleFlags, ModuleInitFlags},
    sys::stat::{stat, SFlag},
};
use std::{fs, path::Path, time::Instant};

pub const TESTS: &[Test] = &[
    ("device_node_is_root_only", device_node_is_root_only),
    ("version_and_features", version_and_features),
    ("open_close_many_channels", open_close_many_channels),
    ("fresh_open_has_no_thread", fresh_open_has_no_thread),
    ("concurrent_opens", concurrent_opens),
    ("two_channels_independent", two_channels_independent),
    ("thread_named_after_channel", thread_named_after_channel),
    ("thread_stopped_at_close", thread_stopped_at_close),
    ("idle_thread_sleeps", idle_thread_sleeps),
    ("close_with_pending_kicks", close_with_pending_kicks),
    ("rmmod_busy_then_succeeds", rmmod_busy_then_succeeds),
    ("c_example_runs", c_example_runs),
];

const MODULE: &str = "rust_evnotify";

fn device_node_is_root_only() -> Result<()> {
    let st = stat(DEVICE).context("stat /dev/evnotify")?;
    ensure!(
        SFlag::from_bits_truncate(st.st_mode).contains(SFlag::S_IFCHR),
        "not a char device"
    );
    ensure!(
        st.st_mode & 0o777 == 0o600,
        "mode {:o}, want 600",
        st.st_mode & 0o777
    );
    ensure!(
        st.st_uid == 0 && st.st_gid == 0,
        "owner {}:{}",
        st.st_uid,
        st.st_gid
    );
    Ok(())
}

/// `EVNOTIFY_F_CGROUPS` if the kernel has cgroups (its sysfs has the mount point).
pub(crate) fn cgroups_feature() -> u64 {
    if std::path::Path::new("/sys/fs/cgroup").exists() {
        sys::F_CGROUPS
    } else {
        0
    }
}

fn version_and_features() -> Result<()> {
    let v = Channel::open()?.version()?;
    ensure!(
        v.api_version == sys::API_VERSION && v.api_version == 10,
        "{v:?}"
    );
    ensure!(v.nr_slots == sys::NR_SLOTS, "{v:?}");
    ensure!(
        v.features
            == sys::F_NOTIFY
                | sys::F_SLOTS
                | sys::F_KICKFD
                | sys::F_FDINFO
                | sys::F_TIMER
                | sys::F_SIGNAL
                | sys::F_BUSYPOLL
                | sys::F_WORKERS
                | sys::F_TIMER_ABSTIME
                | sys::F_RING
                | cgroups_feature(),
        "{v:?}"
    );
    Ok(())
}

fn open_close_many_channels() -> Result<()> {
    let chans = (0..64)
        .map(|_| Channel::open())
        .collect::<std::io::Result<Vec<_>>>()?;
    let mut pids = chans.iter().map(start_thread).collect::<Result<Vec<_>>>()?;
    pids.sort_unstable();
    pids.dedup();
    ensure!(
        pids.len() == 64,
        "threads are not one per channel: {pids:?}"
    );
    ensure!(pids.iter().all(|&p| p > 0), "{pids:?}");
    Ok(())
}

/// `open` starts no thread (it runs under the global `misc_mtx`); calls that need none start
/// none, and the first kick, kick eventfd or timer does.
fn fresh_open_has_no_thread() -> Result<()> {
    let ch = Channel::open()?;
    let n = Notifier::new()?;
    ch.attach(0, &n)?;
    ch.set_signal(1, -1)?;
    ch.set_busypoll(std::time::Duration::ZERO)?;
    ch.cancel_timer(2)?;
    ch.detach_kickfd(3)?;
    // A kick eventfd that cannot be hooked starts no thread either.
    let sem = nix::sys::eventfd::EventFd::from_value_and_flags(
        0,
        nix::sys::eventfd::EfdFlags::EFD_SEMAPHORE,
    )?;
    expect_errno(ch.attach_kickfd(4, &sem), Errno::EOPNOTSUPP, "semaphore")?;
    expect_errno(
        ch.attach_kickfd(4, &std::fs::File::open("/")?),
        Errno::EINVAL,
        "a directory",
    )?;
    let s = ch.stats()?;
    ensure!(s.thread_pid == 0, "a thread runs before any work: {s:?}");
    ensure!(
        ch.fdinfo()?.contains("thread_pid:\t0\n"),
        "fdinfo shows a thread"
    );
    for start in 0..3 {
        let ch = Channel::open()?;
        let k = Notifier::new()?;
        match start {
            0 => ch.kick(0, 1)?,
            1 => ch.attach_kickfd(0, &k)?,
            _ => ch.set_timer(0, std::time::Duration::from_secs(3600), 1)?,
        }
        let pid = ch.stats()?.thread_pid;
        ensure!(pid > 0, "way {start} started no thread");
        ensure!(comm(pid)?.starts_with("evnotify/"), "pid {pid} is not ours");
    }
    Ok(())
}

/// Many opens at once, from several threads, all succeed and start no thread.
fn concurrent_opens() -> Result<()> {
    const THREADS: usize = 8;
    const EACH: usize = 32;
    let t = Instant::now();
    let chans = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..THREADS)
            .map(|_| {
                sc.spawn(|| {
                    (0..EACH)
                        .map(|_| Channel::open())
                        .collect::<std::io::Result<Vec<_>>>()
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| crate::join(h, "opener"))
            .collect::<Result<Vec<_>>>()
    })?;
    let all: Vec<_> = chans.into_iter().flatten().collect();
    ensure!(all.len() == THREADS * EACH, "{} channels", all.len());
    for ch in &all {
        ensure!(ch.stats()?.thread_pid == 0, "open started a thread");
    }
    eprintln!("# {} concurrent opens in {:?}", all.len(), t.elapsed());
    Ok(())
}

fn two_channels_independent() -> Result<()> {
    let (a, b) = (Channel::open()?, Channel::open()?);
    let (na, nb) = (Notifier::new()?, Notifier::new()?);
    a.attach(0, &na)?;
    b.attach(0, &nb)?;
    a.kick(0, 5)?;
    b.kick(0, 7)?;
    collect(&na, 5)?;
    collect(&nb, 7)?;
    let (sa, sb) = (settle(&a, &na)?, settle(&b, &nb)?);
    ensure!(sa.kicks == 5 && sa.notifies == 5, "{sa:?}");
    ensure!(sb.kicks == 7 && sb.notifies == 7, "{sb:?}");
    ensure!(sa.thread_pid != sb.thread_pid, "shared thread");
    Ok(())
}

pub fn comm(pid: i32) -> std::io::Result<String> {
    Ok(fs::read_to_string(format!("/proc/{pid}/comm"))?
        .trim()
        .to_string())
}

fn thread_named_after_channel() -> Result<()> {
    let (a, b) = (Channel::open()?, Channel::open()?);
    let ca = comm(start_thread(&a)?)?;
    let cb = comm(start_thread(&b)?)?;
    ensure!(ca.starts_with("evnotify/"), "thread is called {ca:?}");
    ensure!(cb.starts_with("evnotify/"), "thread is called {cb:?}");
    ensure!(ca != cb, "two channels' threads are both called {ca:?}");
    Ok(())
}

fn thread_stopped_at_close() -> Result<()> {
    let ch = Channel::open()?;
    let pid = start_thread(&ch)?;
    ensure!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "thread {pid} is not running"
    );
    drop(ch);
    // Release waits for the thread to exit; reaping it is asynchronous, so allow a moment.
    let t = Instant::now();
    while comm(pid).is_ok_and(|c| c.starts_with("evnotify/")) {
        ensure!(t.elapsed() < hang(), "thread {pid} outlived its channel");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    Ok(())
}

pub fn proc_state(pid: i32) -> Result<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').context("stat format")?.1;
    after.trim().chars().next().context("no state")
}

fn idle_thread_sleeps() -> Result<()> {
    let ch = Channel::open()?;
    let n = Notifier::new()?;
    ch.attach(0, &n)?;
    ch.kick(0, 10)?;
    collect(&n, 10)?;
    let s1 = settle(&ch, &n)?;
    std::thread::sleep(std::time::Duration::from_millis(200));
    let s2 = ch.stats()?;
    ensure!(
        s1.wakeups == s2.wakeups,
        "idle thread woke up: {s1:?} {s2:?}"
    );
    ensure!(s2.wakeups >= 1, "{s2:?}");
    let st = proc_state(s2.thread_pid)?;
    ensure!(
        st == 'S',
        "idle thread is in state {st}, want S (interruptible sleep)"
    );
    Ok(())
}

fn close_with_pending_kicks() -> Result<()> {
    for _ in 0..8 {
        let ch = Channel::open()?;
        let n = Notifier::new()?;
        ch.attach(0, &n)?;
        for slot in 0..sys::NR_SLOTS {
            ch.kick(slot, sys::MAX_KICK)?;
        }
        // Most of these are still pending: close must stop the thread anyway.
        drop(ch);
    }
    let ch = Channel::open()?;
    let n = Notifier::new()?;
    ch.attach(0, &n)?;
    ch.kick(0, 1)?;
    collect(&n, 1)?;
    Ok(())
}

fn rmmod_busy_then_succeeds() -> Result<()> {
    let name = c"rust_evnotify";
    let ch = Channel::open()?;
    // An open file pins the module (the misc fops set `owner`). Linux 7.3 reports a module in
    // use as EWOULDBLOCK (== EAGAIN), not EBUSY: kernel/module/main.c, try_stop_module().
    expect_errno(
        delete_module(name, DeleteModuleFlags::O_NONBLOCK),
        Errno::EWOULDBLOCK,
        "rmmod with a channel open",
    )?;
    let st = std::process::Command::new("rmmod").arg(MODULE).status()?;
    ensure!(!st.success(), "busybox rmmod succeeded with a channel open");
    ch.kick(0, 1)?; // Still alive after the failed unload.
    drop(ch);
    delete_module(name, DeleteModuleFlags::O_NONBLOCK).context("rmmod after close")?;
    ensure!(
        !Path::new(DEVICE).exists(),
        "device node outlived the module"
    );
    let ko = std::env::var("EVNOTIFY_KO").unwrap_or_else(|_| format!("/lib/modules/{MODULE}.ko"));
    let f = fs::File::open(&ko).with_context(|| format!("open {ko}"))?;
    finit_module(&f, c"", ModuleInitFlags::empty()).context("reload the module")?;
    let t = Instant::now();
    while !Path::new(DEVICE).exists() {
        ensure!(t.elapsed() < hang(), "device node did not come back");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    version_and_features()
}

fn c_example_runs() -> Result<()> {
    let exe =
        std::env::var("EVNOTIFY_C_EXAMPLE").unwrap_or_else(|_| "/bin/evnotify-example".into());
    let mut child = std::process::Command::new(&exe)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("run {exe}"))?;
    // The example blocks in read(2) until its notifications come: give it a deadline.
    let t = Instant::now();
    while child.try_wait()?.is_none() {
        if t.elapsed() > hang() {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!(
                "{exe} still waiting for its notifications after {:?}",
                hang()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(out.status.success(), "{exe}: {}: {text}", out.status);
    ensure!(
        text.contains("slot 0: received 5 notifications")
            && text.contains("slot 63: received 5 notifications")
            && text.contains("kicks=10 (by write 8)"),
        "unexpected output: {text}"
    );
    Ok(())
}
