//! Cgroups (API v6, `EVNOTIFY_F_CGROUPS`): a worker's thread runs in the cgroups of the task
//! that started it, its CPU time is charged there, pids count it without refusing it, and
//! shared, passed or inherited channels keep their worker there, whoever uses them. The VM's init mounts cgroup v2 with the cpu, memory and pids controllers enabled
//! for the root's children; without them these tests fail (the test kernels have them).
//!
//! Every wait has a deadline ([`hang`]); none asserts a speed.

use crate::{
    collect, hang,
    hostile::{child, exit_code},
    hostile_fds::{passed_fds, unix_pair},
    idle, start_thread,
    workers::{thread_gone, worker},
    Test,
};
use anyhow::{bail, ensure, Context, Result};
use evnotify::{sys, Channel, Notifier};
use nix::{
    errno::Errno,
    sys::socket::{recvmsg, sendmsg, ControlMessage, MsgFlags},
};
use std::{
    fs,
    io::{IoSlice, IoSliceMut, Write},
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd},
    path::PathBuf,
    time::{Duration, Instant},
};

pub const TESTS: &[Test] = &[
    ("cgroups_thread_joins_its_starter", thread_joins_its_starter),
    ("cgroups_pids_count_not_refuse", pids_count_not_refuse),
    ("cgroups_cpu_charged_to_starter", cpu_charged_to_starter),
    (
        "cgroups_cpu_max_quota_spent_by_thread",
        cpu_max_quota_spent_by_thread,
    ),
    ("cgroups_every_hierarchy", every_hierarchy),
    ("cgroups_shared_worker_stays", shared_worker_stays),
    (
        "cgroups_passed_channel_keeps_worker",
        passed_channel_keeps_worker,
    ),
    ("cgroups_forked_child_starts_own", forked_child_starts_own),
    (
        "cgroups_kill_and_freeze_pass_it_by",
        kill_and_freeze_pass_it_by,
    ),
    ("cgroups_memory_charged_to_caller", memory_charged_to_caller),
    ("cgroups_memory_max_enomem", memory_max_enomem),
    ("cgroups_memory_max_ring_mmap", memory_max_ring_mmap),
];

const ROOT: &str = "/sys/fs/cgroup";

/// A child of the root cgroup, removed when dropped: the test process moves back to the root
/// first, and removal waits (at most [`hang`]) for worker threads still in it to exit.
struct Cgroup {
    path: PathBuf,
    /// As `/proc/<pid>/cgroup` names it: `0::/<name>`.
    line: String,
}

impl Cgroup {
    fn new(tag: &str) -> Result<Self> {
        let controllers = fs::read_to_string(format!("{ROOT}/cgroup.subtree_control"))
            .with_context(|| format!("{ROOT} is not cgroup v2 (the VM's init mounts it)"))?;
        for c in ["cpu", "memory", "pids"] {
            ensure!(
                controllers.split_whitespace().any(|w| w == c),
                "the root does not enable {c} for its children: {controllers:?}"
            );
        }
        let name = format!("evnotify-{tag}-{}", std::process::id());
        let path = PathBuf::from(ROOT).join(&name);
        fs::create_dir(&path).with_context(|| format!("mkdir {}", path.display()))?;
        Ok(Self {
            path,
            line: format!("0::/{name}"),
        })
    }

    /// A child cgroup of this one (removed before it, when dropped first).
    fn child(&self, tag: &str) -> Result<Self> {
        let path = self.path.join(tag);
        fs::create_dir(&path).with_context(|| format!("mkdir {}", path.display()))?;
        Ok(Self {
            path,
            line: format!("{}/{tag}", self.line),
        })
    }

    /// Moves the calling process (all its threads) here.
    fn enter(&self) -> Result<()> {
        move_self(&self.path)
    }

    fn write(&self, file: &str, value: &str) -> Result<()> {
        fs::write(self.path.join(file), value)
            .with_context(|| format!("write {value:?} to {}/{file}", self.path.display()))
    }

    fn read(&self, file: &str) -> Result<String> {
        fs::read_to_string(self.path.join(file))
            .with_context(|| format!("read {}/{file}", self.path.display()))
    }

    /// The number after `key` in a flat-keyed file such as `cpu.stat`, or a single-value file
    /// (`pids.current`) with an empty key.
    fn value(&self, file: &str, key: &str) -> Result<u64> {
        let text = self.read(file)?;
        let v = if key.is_empty() {
            Some(text.trim())
        } else {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
        };
        v.and_then(|v| v.trim().parse().ok())
            .with_context(|| format!("no {key:?} in {file}: {text:?}"))
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = leave();
        let t = Instant::now();
        loop {
            match fs::remove_dir(&self.path) {
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && t.elapsed() < hang() => {
                    std::thread::sleep(Duration::from_millis(2))
                }
                Err(e) if e.raw_os_error() != Some(libc::ENOENT) => {
                    // A diagnostic only: a test that must see its threads gone checks that.
                    println!("# rmdir {}: {e}", self.path.display());
                    break;
                }
                _ => break,
            }
        }
    }
}

fn move_self(dir: &std::path::Path) -> Result<()> {
    let procs = dir.join("cgroup.procs");
    fs::write(&procs, "0").with_context(|| format!("move self to {}", procs.display()))
}

/// Moves the calling process back to the root cgroup.
fn leave() -> Result<()> {
    move_self(std::path::Path::new(ROOT))
}

/// A channel with a notify eventfd on slot 0, whose worker the test starts in `g` and then
/// leaves: `g` holds the thread alone.
fn worker_left_in(g: &Cgroup) -> Result<(Channel, Notifier, i32)> {
    g.enter()?;
    let ch = Channel::open()?;
    let n = Notifier::new()?;
    ch.attach(0, &n)?;
    let tid = start_thread(&ch)?;
    leave()?;
    Ok((ch, n, tid))
}

/// The cgroup v2 line of `/proc/<pid>/cgroup`.
fn cgroup_of(pid: i32) -> Result<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    text.lines()
        .find(|l| l.starts_with("0::"))
        .map(str::to_string)
        .with_context(|| format!("no cgroup v2 line for {pid}: {text:?}"))
}

/// Fails unless the module reports `EVNOTIFY_F_CGROUPS` (the test kernels have cgroups).
fn has_feature(ch: &Channel) -> Result<()> {
    let v = ch.version()?;
    ensure!(
        v.features & sys::F_CGROUPS != 0,
        "the module does not report EVNOTIFY_F_CGROUPS on a kernel with cgroups: {v:?}"
    );
    Ok(())
}

/// The thread started by a call is in the caller's cgroup, and stays there when the caller
/// leaves; a channel that never needed a thread has none; a caller in the root cgroup gets
/// its thread there.
fn thread_joins_its_starter() -> Result<()> {
    let a = Cgroup::new("a")?;
    a.enter()?;
    let ch = Channel::open()?;
    let idle_ch = Channel::open()?;
    let tid = start_thread(&ch)?;
    ensure!(cgroup_of(tid)? == a.line, "thread in {}", cgroup_of(tid)?);
    has_feature(&ch)?;
    ensure!(idle_ch.stats()?.thread_pid == 0, "a thread without a call");
    leave()?;
    ensure!(cgroup_of(tid)? == a.line, "moved with its caller");
    let procs = a.read("cgroup.procs")?;
    ensure!(
        procs.trim() == tid.to_string(),
        "{} holds {procs:?}",
        a.line
    );
    // An administrator may move it, as any unbound kernel thread.
    let other = Cgroup::new("moved")?;
    other.write("cgroup.procs", &tid.to_string())?;
    ensure!(cgroup_of(tid)? == other.line, "{}", cgroup_of(tid)?);
    a.write("cgroup.procs", &tid.to_string())?;
    // Its stack is kthreadd's allocation, not charged to the memory cgroup.
    ensure!(
        a.value("memory.stat", "kernel_stack")? == 0,
        "{}",
        a.read("memory.stat")?
    );
    let root_ch = Channel::open()?;
    let root_tid = start_thread(&root_ch)?;
    ensure!(cgroup_of(root_tid)? == "0::/", "{}", cgroup_of(root_tid)?);
    drop((ch, root_ch));
    thread_gone(tid, "its channel")
}

/// pids.current counts the thread, and pids.max does not refuse it (it is not a fork of the
/// caller): the bound on threads is max_user_channels.
fn pids_count_not_refuse() -> Result<()> {
    let g = Cgroup::new("pids")?;
    g.enter()?;
    let before = g.value("pids.current", "")?;
    g.write("pids.max", &before.to_string())?;
    let ch = Channel::open()?;
    let n = Notifier::new()?;
    ch.attach(0, &n)?;
    ch.kick(0, 3)?;
    collect(&n, 3)?;
    let tid = idle(&ch)?.thread_pid;
    ensure!(cgroup_of(tid)? == g.line, "thread in {}", cgroup_of(tid)?);
    let after = g.value("pids.current", "")?;
    ensure!(after == before + 1, "pids.current {before} -> {after}");
    // A fork is refused as the limit says, so the limit is in force.
    match child(|| 0) {
        Err(e) if e.downcast_ref::<Errno>() == Some(&Errno::EAGAIN) => {}
        Err(e) => bail!("fork beyond pids.max: {e:#}, want EAGAIN"),
        Ok(pid) => {
            exit_code(pid)?;
            bail!("fork beyond pids.max succeeded");
        }
    }
    drop(ch);
    thread_gone(tid, "its channel")?;
    let last = g.value("pids.current", "")?;
    ensure!(
        last == before,
        "pids.current {last} after the thread exited"
    );
    Ok(())
}

/// The thread's CPU time shows in its starter's cgroup: a cgroup that holds only the
/// thread gains at least half the CPU time the thread itself reports.
fn cpu_charged_to_starter() -> Result<()> {
    let w = Cgroup::new("cpu")?;
    let (ch, n, tid) = worker_left_in(&w)?;
    let ticks = |pid: i32| -> Result<u64> {
        // utime and stime, fields 14 and 15, after the parenthesised name.
        let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
        let rest = stat.rsplit_once(')').context("stat")?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        Ok(f[11].parse::<u64>()? + f[12].parse::<u64>()?)
    };
    let (u0, t0) = (w.value("cpu.stat", "usage_usec")?, ticks(tid)?);
    // Until the thread has been seen running for 5 clock ticks (USER_HZ, 50 ms).
    let start = Instant::now();
    while ticks(tid)? < t0 + 5 {
        ensure!(start.elapsed() < hang(), "the thread never ran 50 ms");
        ch.kick(0, sys::MAX_KICK)?;
        idle(&ch)?;
        n.drain()?;
    }
    let (u1, t1) = (w.value("cpu.stat", "usage_usec")?, ticks(tid)?);
    // USER_HZ is 100: a tick is 10,000 µs.
    let thread_us = (t1 - t0) * 10_000;
    ensure!(
        (u1 - u0) * 2 >= thread_us,
        "the cgroup gained {} µs, the thread ran about {thread_us} µs",
        u1 - u0
    );
    Ok(())
}

/// The thread's time is taken from its cgroup's cpu.max quota: a cgroup that holds only the
/// thread runs out of it under a flood of kicks (the kernel throttles a cgroup's tasks on
/// their way back to user space, so it never stops a kernel thread itself).
fn cpu_max_quota_spent_by_thread() -> Result<()> {
    let g = Cgroup::new("max")?;
    let (ch, n, tid) = worker_left_in(&g)?;
    g.write("cpu.max", "1000 100000")?;
    ensure!(cgroup_of(tid)? == g.line, "thread in {}", cgroup_of(tid)?);
    let start = Instant::now();
    while g.value("cpu.stat", "nr_throttled")? == 0 {
        ensure!(
            start.elapsed() < hang(),
            "the quota was never spent: {}",
            g.read("cpu.stat")?
        );
        ch.kick(0, sys::MAX_KICK)?;
        idle(&ch)?;
        n.drain()?;
    }
    Ok(())
}

/// The thread joins its starter's cgroup in a cgroup v1 hierarchy too (a named one, with no
/// controller), besides cgroup v2.
fn every_hierarchy() -> Result<()> {
    let mnt = PathBuf::from(format!("/tmp/evnotify-v1-{}", std::process::id()));
    fs::create_dir(&mnt)?;
    let name = format!("name=evnotify{}", std::process::id());
    let src = c"cgroup";
    let target = std::ffi::CString::new(mnt.as_os_str().as_encoded_bytes())?;
    let opts = std::ffi::CString::new(format!("none,{name}"))?;
    // SAFETY: Valid NUL-terminated strings; the data is the options string.
    let r = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            src.as_ptr(),
            0,
            opts.as_ptr().cast(),
        )
    };
    if let Err(e) = Errno::result(r) {
        let _ = fs::remove_dir(&mnt);
        bail!("mount a named cgroup v1 hierarchy: {e}");
    }
    let child = mnt.join("child");
    let run = || -> Result<()> {
        fs::create_dir(&child)?;
        let v2 = Cgroup::new("v1")?;
        v2.enter()?;
        fs::write(child.join("cgroup.procs"), "0")?;
        let ch = Channel::open()?;
        let tid = start_thread(&ch)?;
        fs::write(mnt.join("cgroup.procs"), "0")?;
        let text = fs::read_to_string(format!("/proc/{tid}/cgroup"))?;
        let want = format!(":{name}:/child");
        ensure!(
            text.lines().any(|l| l.ends_with(&want)),
            "no {want:?} in {text:?}"
        );
        ensure!(
            text.lines().any(|l| l == v2.line),
            "not in {}: {text:?}",
            v2.line
        );
        drop(ch);
        thread_gone(tid, "its channel")
    };
    let res = run();
    // Out of the child, which then empties (its thread stops when its channel closes), then
    // unmounted: nothing is left, whatever failed.
    let _ = fs::write(mnt.join("cgroup.procs"), "0");
    let t = Instant::now();
    while child.exists() && fs::remove_dir(&child).is_err() && t.elapsed() < hang() {
        std::thread::sleep(Duration::from_millis(2));
    }
    // SAFETY: The NUL-terminated path mounted above.
    unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    let _ = fs::remove_dir(&mnt);
    res
}

/// A channel from another cgroup that shares a worker runs on it, in the worker's cgroup;
/// a worker that the share itself starts is the caller's.
fn shared_worker_stays() -> Result<()> {
    let (a, b) = (Cgroup::new("sa")?, Cgroup::new("sb")?);
    a.enter()?;
    let lead = Channel::open()?;
    let tid = start_thread(&lead)?;
    let fresh = Channel::open()?;
    b.enter()?;
    let ch = Channel::open()?;
    ch.share_worker(&lead)?;
    let n = Notifier::new()?;
    ch.attach(0, &n)?;
    ch.kick(0, 5)?;
    collect(&n, 5)?;
    ensure!(worker(&ch)?.thread_pid == tid, "{:?}", worker(&ch)?);
    ensure!(
        cgroup_of(tid)? == a.line,
        "thread moved to {}",
        cgroup_of(tid)?
    );
    // `fresh` has no worker: the share starts it, in the caller's cgroup.
    let other = Channel::open()?;
    other.share_worker(&fresh)?;
    let w = worker(&fresh)?;
    ensure!(w.channels == 2, "{w:?}");
    ensure!(
        cgroup_of(w.thread_pid)? == b.line,
        "{}",
        cgroup_of(w.thread_pid)?
    );
    Ok(())
}

/// A channel whose worker a process in another cgroup started, passed over a socket: its
/// kicks are served by that worker, which stays in its cgroup after the starter has exited
/// and keeps the cgroup from being removed (EBUSY) until the channel closes. A channel passed
/// with no worker yet gets one in the cgroup of whoever first needs it: the receiver's.
fn passed_channel_keeps_worker() -> Result<()> {
    let (a, b) = (Cgroup::new("pa")?, Cgroup::new("pb")?);
    let (tx, rx) = unix_pair()?;
    let a_path = a.path.clone();
    let pid = child(move || {
        let run = || -> Result<()> {
            move_self(&a_path)?;
            let ch = Channel::open()?;
            start_thread(&ch)?;
            let unstarted = Channel::open()?;
            let fds = [ch.as_fd().as_raw_fd(), unstarted.as_fd().as_raw_fd()];
            sendmsg::<()>(
                tx.as_raw_fd(),
                &[IoSlice::new(b"x")],
                &[ControlMessage::ScmRights(&fds)],
                MsgFlags::empty(),
                None,
            )?;
            Ok(())
        };
        i32::from(run().is_err())
    })?;
    ensure!(exit_code(pid)? == 0, "the starting process failed");
    let mut buf = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 2]);
    let msg = recvmsg::<()>(
        rx.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::empty(),
    )?;
    let fds = passed_fds(&msg)?;
    ensure!(fds.len() == 2, "received {fds:?}");
    // SAFETY: The descriptors just arrived over the socket; nothing else owns them.
    let [ch, unstarted] =
        [fds[0], fds[1]].map(|fd| Channel::from(unsafe { OwnedFd::from_raw_fd(fd) }));
    let tid = worker(&ch)?.thread_pid;
    ensure!(cgroup_of(tid)? == a.line, "thread in {}", cgroup_of(tid)?);
    let n = Notifier::new()?;
    ch.attach(1, &n)?;
    ch.kick(1, 4)?;
    collect(&n, 4)?;
    ensure!(
        cgroup_of(tid)? == a.line,
        "thread moved to {}",
        cgroup_of(tid)?
    );
    ensure!(worker(&ch)?.thread_pid == tid, "another thread");
    // The worker alone keeps the cgroup populated (the starter has exited and been reaped).
    let procs = a.read("cgroup.procs")?;
    ensure!(
        procs.trim() == tid.to_string(),
        "{} holds {procs:?}",
        a.line
    );
    ensure!(
        a.read("cgroup.events")?.contains("populated 1"),
        "not populated"
    );
    match fs::remove_dir(&a.path) {
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
        other => bail!("rmdir of a cgroup holding a worker: {other:?}, want EBUSY"),
    }
    drop(ch);
    thread_gone(tid, "its channel")?;
    b.enter()?;
    let own = start_thread(&unstarted)?;
    ensure!(cgroup_of(own)? == b.line, "thread in {}", cgroup_of(own)?);
    Ok(())
}

/// A forked child in another cgroup: the inherited channel's worker stays the parent's, and
/// an inherited channel without a worker gets one in the child's cgroup.
fn forked_child_starts_own() -> Result<()> {
    let (a, b) = (Cgroup::new("fa")?, Cgroup::new("fb")?);
    a.enter()?;
    let started = Channel::open()?;
    let tid = start_thread(&started)?;
    let unstarted = Channel::open()?;
    let n = Notifier::new()?;
    started.attach(0, &n)?;
    let (b_path, b_line) = (b.path.clone(), b.line.clone());
    let pid = child(|| {
        let run = || -> Result<()> {
            move_self(&b_path)?;
            started.kick(0, 2)?;
            idle(&started)?;
            ensure!(worker(&started)?.thread_pid == tid, "another thread");
            let own = start_thread(&unstarted)?;
            ensure!(cgroup_of(own)? == b_line, "thread in {}", cgroup_of(own)?);
            Ok(())
        };
        match run() {
            Ok(()) => 0,
            Err(e) => {
                println!("# child: {e:#}");
                1
            }
        }
    })?;
    ensure!(exit_code(pid)? == 0, "the child failed");
    collect(&n, 2)?;
    ensure!(cgroup_of(tid)? == a.line, "thread in {}", cgroup_of(tid)?);
    let own = worker(&unstarted)?.thread_pid;
    ensure!(own != tid && own > 0, "{own}");
    ensure!(cgroup_of(own)? == b.line, "{}", cgroup_of(own)?);
    Ok(())
}

/// `cgroup.kill` and `cgroup.freeze` pass the thread by, as they pass every kernel thread
/// (`cgroup_kill`, `cgroup_freeze_task`): the channel is still served, and neither the
/// cgroup that holds the thread nor its parent reports `frozen 1`.
fn kill_and_freeze_pass_it_by() -> Result<()> {
    let parent = Cgroup::new("kill")?;
    let g = parent.child("c")?;
    let (ch, n, tid) = worker_left_in(&g)?;
    parent.write("cgroup.freeze", "1")?;
    ch.kick(0, 2)?;
    collect(&n, 2)?;
    for c in [&g, &parent] {
        let events = c.read("cgroup.events")?;
        ensure!(
            events.contains("frozen 0"),
            "{} holding a worker reports frozen: {events}",
            c.line
        );
    }
    parent.write("cgroup.freeze", "0")?;
    g.write("cgroup.kill", "1")?;
    ch.kick(0, 3)?;
    collect(&n, 3)?;
    ensure!(worker(&ch)?.thread_pid == tid, "another thread");
    ensure!(cgroup_of(tid)? == g.line, "thread in {}", cgroup_of(tid)?);
    drop(ch);
    thread_gone(tid, "its channel")
}

/// A memory cgroup's `memory.max`, set through a file opened beforehand (opening one at the
/// limit would fail too), with the process unkillable by the OOM killer meanwhile; lifted,
/// and the process killable again, when dropped, however the test ends.
struct Limit(fs::File);

impl Limit {
    fn arm(m: &Cgroup) -> Result<Self> {
        let f = fs::OpenOptions::new()
            .write(true)
            .open(m.path.join("memory.max"))?;
        fs::write("/proc/self/oom_score_adj", "-1000")?;
        Ok(Self(f))
    }

    fn set(&self, bytes: u64) -> Result<()> {
        use std::os::unix::fs::FileExt;
        self.0
            .write_at(bytes.to_string().as_bytes(), 0)
            .context("write memory.max")?;
        Ok(())
    }
}

impl Drop for Limit {
    fn drop(&mut self) {
        let _ = self.0.write_all(b"max");
        let _ = fs::write("/proc/self/oom_score_adj", "0");
    }
}

/// Rings' first `mmap`s at their memory cgroup's limit: channels opened before map their
/// rings one after another, each at a fresh 1 GiB-aligned address (so that it needs page
/// tables of its own, charged too), the mappings kept; each refused one (`ENOMEM`) must leave
/// its channel without a ring (`ENXIO`), and raises the limit by a page. So the limit is met
/// at every allocation of a ring's creation in turn (the page, its state, the page tables);
/// nothing is killed.
fn memory_max_ring_mmap() -> Result<()> {
    const CHANS: usize = 160;
    let m = Cgroup::new("ringmax")?;
    let chans = (0..CHANS)
        .map(|_| Channel::open())
        .collect::<std::io::Result<Vec<_>>>()?;
    let page = sys::RING_SIZE as usize;
    let (mut refused, mut fit_after) = (0, 0);
    let mut maps = Vec::with_capacity(CHANS);
    {
        let lift = Limit::arm(&m)?;
        m.enter()?;
        let mut max = m.value("memory.current", "")?;
        lift.set(max)?;
        for (i, ch) in chans.iter().enumerate() {
            let at = 0x4000_0000_0000usize + (i << 30);
            // SAFETY: A new shared mapping of the channel's ring at `at`, where nothing is
            // mapped (MAP_FIXED_NOREPLACE replaces nothing), unmapped below.
            let p = unsafe {
                libc::mmap(
                    at as *mut libc::c_void,
                    page,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED | libc::MAP_FIXED_NOREPLACE,
                    ch.as_raw_fd(),
                    0,
                )
            };
            if p != libc::MAP_FAILED {
                maps.push(p);
                // A mapped ring is there to read: a new one asks for a wake-up.
                let flags = p
                    .cast::<u8>()
                    .wrapping_add(std::mem::offset_of!(sys::Ring, flags));
                // SAFETY: The ring's flags word, in the page just mapped, aligned.
                let f = unsafe { std::ptr::read_volatile(flags.cast::<u32>()) };
                ensure!(
                    f & sys::RING_NEED_WAKEUP != 0,
                    "ring {i}: flags {f:#x} in a new ring"
                );
                fit_after += usize::from(refused > 0);
                continue;
            }
            let e = Errno::last();
            ensure!(e == Errno::ENOMEM, "mmap of ring {i}: {e}");
            let mut st = sys::RingStats::default();
            // SAFETY: `st` is a writable `struct evnotify_ring_stats`.
            let rc = unsafe { libc::ioctl(ch.as_raw_fd(), sys::IOC_RING_STATS as _, &mut st) };
            ensure!(
                rc == -1 && Errno::last() == Errno::ENXIO,
                "a refused mmap of ring {i} left a ring"
            );
            refused += 1;
            max += page as u64;
            lift.set(max)?;
        }
    }
    for p in maps {
        // SAFETY: A mapping made above, which nothing else refers to.
        unsafe { libc::munmap(p, page) };
    }
    let events = m.read("memory.events")?;
    ensure!(
        events.contains("oom_kill 0"),
        "a process was killed: {events}"
    );
    ensure!(
        refused > 0 && fit_after > 0,
        "{refused} mmaps refused, {fit_after} fit after one was: the limit was not met"
    );
    println!("# cgroups_memory_max_ring_mmap: {refused} mmaps refused, {fit_after} fit after");
    Ok(())
}

/// Opens a channel with a notify eventfd on slot 0 and a 1 s timer on slot 1: the memory a
/// channel takes on its first timer included.
fn loaded_channel(n: &Notifier) -> std::io::Result<Channel> {
    let ch = Channel::open()?;
    ch.attach(0, n)?;
    ch.attach(1, n)?;
    ch.set_timer(1, Duration::from_secs(1), 0)?;
    Ok(ch)
}

/// A channel's memory is charged to the memory cgroup of the caller, and uncharged when it
/// closes: 768 channels with a notify eventfd add at least 2 KiB each to memory.current, and
/// closing them gives back at least half of what they took. memory.current moves in batches:
/// each CPU keeps up to `MEMCG_CHARGE_BATCH` (64) pages charged ahead, which allocations use
/// up without moving it, so the growth may fall short by that much per CPU. (Were the
/// channels not charged, only their files would be: a few hundred bytes each.)
fn memory_charged_to_caller() -> Result<()> {
    const N: u64 = 768;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let slack = cpus * 64 * 4096;
    let m = Cgroup::new("mem")?;
    let n = Notifier::new()?;
    let mut chans = Vec::with_capacity(N as usize);
    m.enter()?;
    let before = m.value("memory.current", "")?;
    for _ in 0..N {
        let ch = Channel::open()?;
        ch.attach(0, &n)?;
        chans.push(ch);
    }
    let full = m.value("memory.current", "")?;
    drop(chans);
    let after = m.value("memory.current", "")?;
    let grew = full.saturating_sub(before);
    ensure!(
        grew + slack >= N * 2048,
        "{N} channels added {grew} bytes to memory.current ({before} -> {full}; {cpus} CPUs)"
    );
    ensure!(
        after <= before + grew / 2,
        "closing them left memory.current at {after} (from {before}, {full} open)"
    );
    Ok(())
}

/// At its memory cgroup's limit, opening channels and giving them eventfds and timers fails
/// with ENOMEM (no process killed: the test is unkillable by the OOM killer), and once the
/// limit is lifted every channel still works and memory.current comes back down.
fn memory_max_enomem() -> Result<()> {
    const MAX: usize = 4096;
    let m = Cgroup::new("memmax")?;
    let n = Notifier::new()?;
    // Nothing below may fault in a new page until the limit is lifted: every slot of the
    // vector is written now.
    let mut chans: Vec<Option<Channel>> = (0..MAX).map(|_| None).collect();
    let mut opened = 0;
    let mut err = None;
    let lift = Limit::arm(&m)?;
    m.enter()?;
    let before = m.value("memory.current", "")?;
    lift.set(before + 128 * 1024)?;
    while opened < MAX {
        match loaded_channel(&n) {
            Ok(ch) => {
                chans[opened] = Some(ch);
                opened += 1;
            }
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    drop(lift);
    let chans: Vec<Channel> = chans.into_iter().flatten().collect();
    let got = err.map(|e| e.raw_os_error());
    ensure!(
        got == Some(Some(libc::ENOMEM)),
        "after {} channels: {got:?}, want ENOMEM",
        chans.len()
    );
    ensure!(chans.len() >= 4, "only {} channels fit", chans.len());
    let events = m.read("memory.events")?;
    ensure!(
        events.contains("oom_kill 0"),
        "a process was killed: {events}"
    );
    // Every channel still works.
    let k = Notifier::new()?;
    for ch in &chans {
        ch.attach(2, &k)?;
        ch.kick(2, 1)?;
    }
    collect(&k, chans.len() as u64)?;
    let full = m.value("memory.current", "")?;
    drop(chans);
    let after = m.value("memory.current", "")?;
    ensure!(
        after < full,
        "memory.current {after} after closing every channel ({full} open)"
    );
    Ok(())
}
