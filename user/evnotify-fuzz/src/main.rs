//! `evnotify-fuzz`: a seeded, reproducible, syzkaller-style fuzzer for `/dev/evnotify`.
//!
//! Several processes with several threads each share pools of file descriptors (channels,
//! eventfds, pipes, and numbers that were closed) and race random operations on them: ioctls
//! with numbers in, around and outside the device's range, random sizes and directions, random
//! and hostile arguments (NULL, unmapped, kernel-space, misaligned pointers; structs with random
//! fields), open, close, dup, eventfd writes and closes, fork and exit. Every worker's random
//! stream comes from `--seed`, so a run is reproducible up to thread interleaving.
//!
//! It checks that the kernel survives: the VM runner fails the run on any splat, and the
//! module must unload afterwards (no channel leaked). It also checks every reply it can read:
//! each `EVNOTIFY_IOC_STATS` snapshot satisfies the header's identity (kicks + timer_ticks ==
//! handled + pending + coalesced, modulo 2^64, and fd_kicks <= kicks), and each
//! `EVNOTIFY_IOC_WORKER` reply is consistent (no worker: all zeros; a worker: a thread and at
//! least the asking channel; reserved 0). Channels share workers at random
//! (`EVNOTIFY_IOC_SHARE_WORKER` with another pooled channel, themselves, a duplicate of
//! themselves, an eventfd or pipe, or a number that is closed), so the checks run across
//! shared workers too. Fuzzed signals exclude those that
//! cannot be ignored (SIGKILL, SIGSTOP, and the C library's own real-time signals); every
//! other signal is ignored by the fuzzer.
//!
//! `--guided --kcov-out FILE` fuzzes guided by KCOV coverage instead (`guided.rs`), on a
//! kernel with KCOV (`make coverage`), and writes the module's points it reached to FILE.

mod guided;

use anyhow::{ensure, Result};
use clap::Parser;
use evnotify::sys;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Mutex,
    },
    thread,
};

#[derive(Parser)]
#[command(about)]
struct Args {
    /// Seed of every random stream.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Operations in all, over every process and thread.
    #[arg(long, default_value_t = 1_000_000)]
    ops: u64,
    /// Worker processes.
    #[arg(long, default_value_t = 3)]
    procs: u64,
    /// Threads per worker process.
    #[arg(long, default_value_t = 3)]
    threads: u64,
    /// Guided by KCOV coverage: one process, programs kept when they reach new points.
    #[arg(long, requires = "kcov_out")]
    guided: bool,
    /// With --guided: where to write the points of the module reached.
    #[arg(long, requires = "guided")]
    kcov_out: Option<std::path::PathBuf>,
    /// With --guided: the module's .ko file, for the sizes of its code sections.
    #[arg(long, default_value = "/lib/modules/rust_evnotify.ko")]
    ko: std::path::PathBuf,
}

/// Counters shared by every process (in `MAP_SHARED` memory).
struct Shared {
    ops: AtomicU64,
    /// Replies that broke an invariant (see the module's doc).
    violations: AtomicU64,
    /// `EVNOTIFY_IOC_SHARE_WORKER` calls that succeeded, to show the path is reached.
    shares: AtomicU64,
    /// Indexed by errno; 0 counts successes.
    errnos: [AtomicU64; 134],
}

/// A process's pool of descriptors, shared by its threads: raw numbers, on purpose, so that
/// threads race on closes and reuse.
struct Pool {
    chans: Vec<i32>,
    efds: Vec<i32>,
    others: Vec<i32>,
}

const POOL_MAX: usize = 16;

/// Bit `n` set: signal `n` cannot be ignored, so the fuzzer never asks the module for it.
/// Written once in `main` before any thread or child exists, then only read.
static mut UNCATCHABLE: u128 = 0;

/// Replaces a signal number the fuzzer could not survive with SIGUSR1.
fn survivable(signo: i32) -> i32 {
    // SAFETY: Only read after `main` finished writing it.
    let bad = unsafe { UNCATCHABLE };
    if (1..=127).contains(&signo) && bad & (1 << signo) != 0 {
        libc::SIGUSR1
    } else {
        signo
    }
}

/// A buffer big enough for any request, with room to misalign.
#[repr(C, align(8))]
struct Buf([u8; 256]);

struct Worker<'a> {
    rng: ChaCha8Rng,
    pool: &'a Mutex<Pool>,
    shared: &'a Shared,
    buf: Buf,
    dead_page: usize,
}

impl Worker<'_> {
    fn tally(&self, rc: libc::c_long) {
        let e = if rc < 0 {
            nix::errno::Errno::last_raw() as usize
        } else {
            0
        };
        self.shared.errnos[e.min(133)].fetch_add(1, Relaxed);
        self.shared.ops.fetch_add(1, Relaxed);
    }

    fn pick(&mut self, which: u32) -> i32 {
        let p = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        let v = match which {
            0 => &p.chans,
            1 => &p.efds,
            _ => &p.others,
        };
        if v.is_empty() || self.rng.random_ratio(1, 20) {
            // A number that is likely closed, or someone else's; never the console (0..=2),
            // where random tty ioctls would garble the test's own output.
            match self.rng.random_range(-3..64) {
                0..=2 => -1,
                n => n,
            }
        } else {
            v[self.rng.random_range(0..v.len())]
        }
    }

    fn any_fd(&mut self) -> i32 {
        let which = self.rng.random_range(0..3);
        self.pick(which)
    }

    /// An ioctl number: mostly the device's, else near or far from it.
    fn cmd(&mut self) -> u64 {
        let r = &mut self.rng;
        match r.random_range(0..10) {
            0..=5 => sys::IOCTLS[r.random_range(0..sys::IOCTLS.len())],
            6 => {
                // A known number with another size or direction.
                let k = sys::IOCTLS[r.random_range(0..sys::IOCTLS.len())];
                let dir = r.random_range(0..4u64) << 30;
                let size = r.random_range(0..128u64) << 16;
                (k & 0xffff) | dir | size
            }
            7 | 8 => {
                let dir = r.random_range(0..4u64) << 30;
                let size = r.random_range(0..128u64) << 16;
                dir | size | (u64::from(sys::IOC_MAGIC) << 8) | r.random_range(0..256u64)
            }
            _ => loop {
                // Anything, except the VFS's own filesystem ioctls ('X' freezes a
                // filesystem; 'f' and 0x94 reach filesystem code, not the device).
                let c = r.random::<u32>() as u64;
                if !matches!((c >> 8) & 0xff, 0x58 | 0x66 | 0x94) {
                    break c;
                }
            },
        }
    }

    /// Fills the buffer as a request: plausible fields, or garbage.
    fn fill(&mut self) {
        if self.rng.random_ratio(1, 4) {
            self.rng.fill(&mut self.buf.0[..]);
            return;
        }
        let fd = self.any_fd();
        let r = &mut self.rng;
        let words: [u32; 8] = [
            if r.random_ratio(7, 8) {
                r.random_range(0..70)
            } else {
                r.random()
            },
            if r.random_ratio(3, 4) {
                fd as u32
            } else {
                r.random_range(0..2048)
            },
            if r.random_ratio(7, 8) { 0 } else { r.random() },
            if r.random_ratio(7, 8) { 0 } else { r.random() },
            r.random_range(0..4),
            0,
            r.random_range(0..3),
            0,
        ];
        for (i, w) in words.iter().enumerate() {
            self.buf.0[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        // Timer periods: around the 1 ms minimum, valid or not, or up to 100 ms.
        if self.rng.random_ratio(1, 2) {
            let p: u64 = match self.rng.random_range(0..4) {
                0 => self.rng.random_range(0..2_000_000),
                _ => self.rng.random_range(2_000_000..100_000_000),
            };
            self.buf.0[8..16].copy_from_slice(&p.to_ne_bytes());
        }
        // Signals: never one the fuzzer could not survive.
        let s = i32::from_ne_bytes(self.buf.0[4..8].try_into().unwrap_or_default());
        self.buf.0[4..8].copy_from_slice(&survivable(s).to_ne_bytes());
    }

    fn arg(&mut self) -> usize {
        let base = self.buf.0.as_mut_ptr() as usize;
        match self.rng.random_range(0..12) {
            0 => 0,
            1 => self.dead_page + self.rng.random_range(0..4096),
            2 => 0xffff_ffff_8100_0000 + self.rng.random_range(0..0x1000),
            3 => base + self.rng.random_range(1..8),
            4 => usize::MAX - self.rng.random_range(0..64),
            _ => base,
        }
    }

    fn ioctl(&mut self) {
        let fd = if self.rng.random_ratio(9, 10) {
            self.pick(0)
        } else {
            self.any_fd()
        };
        let cmd = self.cmd();
        self.fill();
        // A SIGNAL request must not carry a signal we cannot survive, even from garbage.
        if cmd == sys::IOC_SIGNAL {
            let s = survivable(self.rng.random_range(-2i32..66));
            self.buf.0[4..8].copy_from_slice(&s.to_ne_bytes());
        }
        // Busy-poll limits: around the 1 ms maximum, so that threads really spin.
        if cmd == sys::IOC_BUSYPOLL && self.rng.random_ratio(1, 2) {
            let ns = self.rng.random_range(0..2 * sys::MAX_BUSYPOLL_NS);
            self.buf.0[0..4].copy_from_slice(&ns.to_ne_bytes());
        }
        if cmd == sys::IOC_SHARE_WORKER && self.rng.random_ratio(7, 8) {
            self.share_request(fd);
        }
        let arg = self.arg();
        // SAFETY: The kernel validates `arg`; it may point at our buffer, which we own, or at
        // memory the kernel must refuse to touch.
        let rc = unsafe { libc::ioctl(fd, cmd as _, arg) };
        self.tally(rc.into());
        if rc == 0 && cmd == sys::IOC_SHARE_WORKER {
            self.shared.shares.fetch_add(1, Relaxed);
        }
        if rc == 0 && arg == self.buf.0.as_ptr() as usize {
            self.check_reply(cmd);
        }
    }

    /// Writes a `struct evnotify_share` for channel `fd` into the buffer: mostly well formed,
    /// naming another pooled channel, `fd` itself, a duplicate of it, a descriptor that is
    /// not a channel, or a number that is likely closed.
    fn share_request(&mut self, fd: i32) {
        let target = match self.rng.random_range(0..10) {
            0..=4 => self.pick(0),
            5 => fd,
            6 => {
                // SAFETY: `dup` of any number is harmless; the copy goes to the pool.
                let d = unsafe { libc::dup(fd) };
                self.add(0, d);
                d
            }
            7 => self.pick(1),
            8 => self.pick(2),
            _ => self.rng.random_range(-3..1100),
        };
        let flags: u32 = if self.rng.random_ratio(15, 16) {
            0
        } else {
            1 << self.rng.random_range(0..32)
        };
        let reserved: u64 = if self.rng.random_ratio(15, 16) {
            0
        } else {
            1 << self.rng.random_range(0..64)
        };
        self.buf.0[0..4].copy_from_slice(&target.to_ne_bytes());
        self.buf.0[4..8].copy_from_slice(&flags.to_ne_bytes());
        self.buf.0[8..16].copy_from_slice(&reserved.to_ne_bytes());
    }

    /// Checks the reply that a successful `cmd` wrote at the start of the buffer.
    fn check_reply(&self, cmd: u64) {
        if let Some(why) = broken_reply(cmd, &self.buf) {
            if self.shared.violations.fetch_add(1, Relaxed) < 10 {
                println!("fuzz: VIOLATION: {why}");
            }
        }
    }

    fn add(&mut self, which: u32, fd: i32) {
        if fd < 0 {
            return;
        }
        let mut p = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        let v = match which {
            0 => &mut p.chans,
            1 => &mut p.efds,
            _ => &mut p.others,
        };
        if v.len() < POOL_MAX {
            v.push(fd);
        } else {
            let i = self.rng.random_range(0..v.len());
            let old = std::mem::replace(&mut v[i], fd);
            drop(p);
            // SAFETY: Closing a raw number we put in the pool; a race with another thread's
            // use of it is the point.
            unsafe { libc::close(old) };
        }
    }

    fn close_one(&mut self) {
        let which = self.rng.random_range(0..3);
        let mut p = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        let v = match which {
            0 => &mut p.chans,
            1 => &mut p.efds,
            _ => &mut p.others,
        };
        if v.is_empty() {
            return;
        }
        let fd = v.swap_remove(self.rng.random_range(0..v.len()));
        drop(p);
        // SAFETY: As in `add`.
        let rc = unsafe { libc::close(fd) };
        self.tally(rc.into());
    }

    /// One random operation. Ioctls dominate; opens (a kernel thread each) and forks are
    /// rarer, as they cost a thousand ioctls in an emulated debug kernel.
    fn step(&mut self) {
        match self.rng.random_range(0..100) {
            0..=67 => self.ioctl(),
            68..=69 => self.open_and_share(),
            70..=71 => {
                // SAFETY: Plain open of the device.
                let fd = unsafe { libc::open(c"/dev/evnotify".as_ptr(), libc::O_RDWR) };
                self.tally(fd.into());
                self.add(0, fd);
            }
            72..=75 => {
                // Nonblocking: threads race to read the same eventfd, and a blocking read that
                // loses the race would wait forever once the eventfd leaves the pool.
                // SAFETY: Plain eventfd creation.
                // Some are semaphores, and some writes are huge, to reach the kernel's bounds.
                let sem = if self.rng.random_bool(0.25) {
                    libc::EFD_SEMAPHORE
                } else {
                    0
                };
                let fd =
                    unsafe { libc::eventfd(self.rng.random_range(0..3), libc::EFD_NONBLOCK | sem) };
                self.tally(fd.into());
                self.add(1, fd);
            }
            76 => {
                let mut p = [0; 2];
                // SAFETY: `p` has room for two descriptors.
                let rc = unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_NONBLOCK) };
                self.tally(rc.into());
                if rc == 0 {
                    self.add(2, p[0]);
                    self.add(2, p[1]);
                }
            }
            77..=80 => {
                let fd = self.any_fd();
                // SAFETY: `dup` of any number is harmless.
                let d = unsafe { libc::dup(fd) };
                self.tally(d.into());
                let which = self.rng.random_range(0..3);
                self.add(which, d);
            }
            81..=87 => self.close_one(),
            96..=98 => self.ring(),
            88..=95 => {
                // Kick eventfd writes (and writes to anything else in the pool).
                let fd = self.pick(1);
                let v: u64 = if self.rng.random_ratio(1, 500) {
                    u64::MAX - 1 - self.rng.random_range(0..3)
                } else {
                    self.rng.random_range(1..5)
                };
                // SAFETY: Writes 8 bytes from a local; every pooled descriptor is nonblocking.
                let rc = unsafe { libc::write(fd, (&v as *const u64).cast(), 8) };
                self.tally(rc as libc::c_long);
                let fd = self.pick(1);
                let mut r = 0u64;
                let mut pfd = libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: Polls one descriptor, then reads only if readable (never blocks).
                unsafe {
                    if libc::poll(&mut pfd, 1, 0) == 1 && pfd.revents & libc::POLLIN != 0 {
                        libc::read(fd, (&mut r as *mut u64).cast(), 8);
                    }
                }
            }
            _ => self.fork_child(),
        }
    }

    /// Maps a channel's event ring (or tries to: another length, offset, protection, a
    /// private mapping, another file), writes random words into it, mostly plausible
    /// submissions and indices, enters, and unmaps: the kernel must take it all.
    fn ring(&mut self) {
        let fd = self.pick(0);
        let page = sys::RING_SIZE as usize;
        let r = &mut self.rng;
        let len = [page, page, page, 1, 2 * page][r.random_range(0..5)];
        let off = if r.random_ratio(1, 10) {
            page as i64
        } else {
            0
        };
        let prot = [
            libc::PROT_READ | libc::PROT_WRITE,
            libc::PROT_READ,
            libc::PROT_READ | libc::PROT_EXEC,
        ][usize::from(r.random_ratio(1, 8)) + usize::from(r.random_ratio(1, 16))];
        let flags = if r.random_ratio(1, 10) {
            libc::MAP_PRIVATE
        } else {
            libc::MAP_SHARED
        };
        // SAFETY: A new mapping at an address the kernel picks; only this function uses it.
        let map = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, off) };
        self.tally(if map == libc::MAP_FAILED { -1 } else { 0 });
        if map == libc::MAP_FAILED {
            return;
        }
        if prot & libc::PROT_WRITE != 0 && flags == libc::MAP_SHARED {
            let words = map.cast::<std::sync::atomic::AtomicU32>();
            let tail = std::mem::offset_of!(sys::Ring, sq_tail) / 4;
            for _ in 0..self.rng.random_range(1..64) {
                let r = &mut self.rng;
                let at = if r.random_ratio(1, 4) {
                    tail
                } else {
                    r.random_range(0..page / 4)
                };
                let v = match r.random_range(0..4) {
                    0 => r.random(),
                    1 => r.random_range(0..70),
                    // SAFETY: In the mapping (a page at least), aligned, accessed atomically.
                    _ => unsafe { &*words.add(tail) }
                        .load(Relaxed)
                        .wrapping_add(r.random_range(0..4)),
                };
                // SAFETY: As above.
                unsafe { &*words.add(at) }.store(v, Relaxed);
            }
        }
        // SAFETY: The ioctl takes no argument.
        let rc = unsafe { libc::ioctl(fd, sys::IOC_RING_ENTER as _) };
        self.tally(rc.into());
        // SAFETY: Our own mapping, of `len` bytes.
        let rc = unsafe { libc::munmap(map, len) };
        self.tally(rc.into());
    }

    /// Opens a channel and, before anything starts a worker of its own, shares the worker of
    /// another (or makes a bad request of the same kind), then asks which worker it has.
    fn open_and_share(&mut self) {
        // SAFETY: Plain open of the device.
        let fd = unsafe { libc::open(c"/dev/evnotify".as_ptr(), libc::O_RDWR) };
        self.tally(fd.into());
        if fd < 0 {
            return;
        }
        self.share_request(fd);
        let base = self.buf.0.as_mut_ptr();
        // SAFETY: `base` is our buffer, which holds a `struct evnotify_share` and has room for
        // the `struct evnotify_worker` reply.
        let rc = unsafe { libc::ioctl(fd, sys::IOC_SHARE_WORKER as _, base) };
        self.tally(rc.into());
        if rc == 0 {
            self.shared.shares.fetch_add(1, Relaxed);
        }
        // SAFETY: As above.
        let rc = unsafe { libc::ioctl(fd, sys::IOC_WORKER as _, base) };
        self.tally(rc.into());
        if rc == 0 {
            self.check_reply(sys::IOC_WORKER);
        }
        self.add(0, fd);
    }

    /// A short-lived child: inherits every descriptor, makes a few calls (including signal
    /// requests that name it), and exits, possibly with requests in flight.
    fn fork_child(&mut self) {
        let seed = self.rng.random::<u64>();
        // SAFETY: The child only makes raw syscalls with memory it owns (a copy of ours), then
        // `_exit`s; it takes no lock that another thread could hold across the fork.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            // Room for the largest request (the 96-byte stats reply).
            let mut buf = Buf([0; 256]);
            let buf = &mut buf.0;
            for _ in 0..rng.random_range(1..20) {
                let fd = rng.random_range(3..64);
                rng.fill(&mut buf[8..]);
                let slot: u32 = rng.random_range(0..64);
                let signo: i32 = [0, libc::SIGUSR1, libc::SIGIO, 34, -1][rng.random_range(0..5)];
                buf[0..4].copy_from_slice(&slot.to_ne_bytes());
                buf[4..8].copy_from_slice(&signo.to_ne_bytes());
                buf[8..16].fill(0);
                let cmd = [
                    sys::IOC_SIGNAL,
                    sys::IOC_KICK,
                    sys::IOC_STATS,
                    sys::IOC_SHARE_WORKER,
                    sys::IOC_WORKER,
                ][rng.random_range(0..5)];
                if cmd == sys::IOC_KICK {
                    buf[4..8].copy_from_slice(&1u32.to_ne_bytes());
                }
                if cmd == sys::IOC_SHARE_WORKER {
                    // Another inherited descriptor (a channel, sometimes), flags 0.
                    buf[0..4].copy_from_slice(&rng.random_range(3..64i32).to_ne_bytes());
                    buf[4..8].fill(0);
                }
                // SAFETY: As in `ioctl`.
                unsafe { libc::ioctl(fd, cmd as _, buf.as_mut_ptr()) };
            }
            // SAFETY: Leaves the child at once.
            unsafe { libc::_exit(0) };
        }
        self.tally(pid.into());
        if pid > 0 {
            // SAFETY: Reaps our own child.
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
        }
    }
}

/// What is wrong with the reply that a successful `cmd` wrote at the start of `buf`, if
/// anything: a stats snapshot that breaks the header's identity, an inconsistent worker reply.
fn broken_reply(cmd: u64, buf: &Buf) -> Option<String> {
    // SAFETY: The buffer is larger than either reply, and both are plain integers.
    let (st, w) = unsafe {
        let p = buf.0.as_ptr();
        (
            std::ptr::read_unaligned(p.cast::<sys::Stats>()),
            std::ptr::read_unaligned(p.cast::<sys::Worker>()),
        )
    };
    if cmd == sys::IOC_STATS {
        let (kicks, fd_kicks, ticks) = (st.kicks, st.fd_kicks, st.timer_ticks);
        let (handled, pending, coalesced) = (st.handled, st.pending, st.coalesced);
        let identity =
            kicks.wrapping_add(ticks) == handled.wrapping_add(pending).wrapping_add(coalesced);
        // fd_kicks <= kicks holds until kicks wraps. A run wraps kicks only through kick
        // eventfd writes near 2^64 (the fuzzer writes up to 2^64 - 2 at once, coalesced
        // beyond the bound but counted), after which fd_kicks is at least 2^63.
        let may_wrap = fd_kicks >= 1 << 63;
        (!identity || (fd_kicks > kicks && !may_wrap)).then(|| {
            format!(
                "stats identity broken: kicks {kicks} fd_kicks {fd_kicks} timer_ticks {ticks} \
                     handled {handled} pending {pending} coalesced {coalesced}"
            )
        })
    } else if cmd == sys::IOC_WORKER {
        let (id, pid, channels, reserved) = (w.worker_id, w.thread_pid, w.channels, w.reserved);
        let ok = reserved == 0
            && if id == 0 {
                pid == 0 && channels == 0
            } else {
                // The asking channel is open and uses it; the fuzzer runs in the initial
                // pid namespace, where the thread has a pid.
                pid > 0 && channels >= 1
            };
        (!ok).then(|| {
                format!("worker reply inconsistent: id {id} pid {pid} channels {channels} reserved {reserved}")
            })
    } else {
        None
    }
}

fn worker_process(args: &Args, proc_id: u64, shared: &Shared, budget: u64) {
    let pool = Mutex::new(Pool {
        chans: vec![],
        efds: vec![],
        others: vec![],
    });
    // SAFETY: A PROT_NONE page kept for the life of the process: any access faults, and
    // nothing else can be mapped there (an unmapped hole could be reused by a thread stack).
    let dead_page = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        ) as usize
    };
    thread::scope(|s| {
        for t in 0..args.threads {
            let pool = &pool;
            s.spawn(move || {
                let seed = args.seed ^ (proc_id << 32) ^ (t << 16) ^ 0x9e37_79b9;
                let mut w = Worker {
                    rng: ChaCha8Rng::seed_from_u64(seed),
                    pool,
                    shared,
                    buf: Buf([0; 256]),
                    dead_page,
                };
                while shared.ops.load(Relaxed) < budget {
                    w.step();
                    if proc_id == 0 && t == 0 && w.rng.random_ratio(1, 50_000) {
                        println!("fuzz: {} operations so far", shared.ops.load(Relaxed));
                    }
                }
            });
        }
    });
    let p = pool.into_inner().unwrap_or_else(|e| e.into_inner());
    for fd in p.chans.iter().chain(&p.efds).chain(&p.others) {
        // SAFETY: Closing what is left in our pool.
        unsafe { libc::close(*fd) };
    }
}

/// Ignores every signal that can be (the module may send any), and notes those that cannot.
fn ignore_signals() {
    for sig in 1..=64 {
        // SIGCHLD keeps its default, so that exit statuses can still be collected.
        if sig == libc::SIGCHLD {
            continue;
        }
        // SAFETY: Ignoring signals the fuzzed module may send us.
        if unsafe { libc::signal(sig, libc::SIG_IGN) } == libc::SIG_ERR {
            // SIGKILL, SIGSTOP, and the real-time signals the C library keeps for itself.
            // SAFETY: Written before any other thread or process exists.
            unsafe { UNCATCHABLE |= 1 << sig };
        }
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    ignore_signals();
    if let Some(out) = &args.kcov_out {
        return guided::run(args.seed, args.ops, out, &args.ko);
    }
    ensure!(
        args.procs >= 1 && args.threads >= 1,
        "need at least one process and thread"
    );
    // SAFETY: A shared anonymous mapping of the right size, zero-filled, which makes valid
    // atomics; it lives until the process exits.
    let shared = unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            std::mem::size_of::<Shared>(),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        ensure!(p != libc::MAP_FAILED, "mmap");
        &*(p as *const Shared)
    };
    let mut kids = vec![];
    for proc_id in 0..args.procs {
        // SAFETY: Forked before any thread exists in this process.
        let pid = unsafe { libc::fork() };
        ensure!(pid >= 0, "fork");
        if pid == 0 {
            worker_process(&args, proc_id, shared, args.ops);
            // SAFETY: Leaves the worker without running the parent's destructors.
            unsafe { libc::_exit(0) };
        }
        kids.push(pid);
    }
    let mut failed = 0;
    for pid in kids {
        let mut st = 0;
        // SAFETY: Reaps our own child.
        unsafe { libc::waitpid(pid, &mut st, 0) };
        if !(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0) {
            println!("fuzz: worker {pid} ended with status {st:#x}");
            failed += 1;
        }
    }
    let ops = shared.ops.load(Relaxed);
    let mut errnos = BTreeMap::new();
    for (e, n) in shared.errnos.iter().enumerate() {
        let n = n.load(Relaxed);
        if n > 0 {
            let name = if e == 0 {
                "ok".to_string()
            } else {
                format!("{}", nix::errno::Errno::from_raw(e as i32))
            };
            errnos.insert(name, n);
        }
    }
    println!(
        "fuzz: seed {} ops {ops} procs {} threads {}",
        args.seed, args.procs, args.threads
    );
    println!("fuzz: results {errnos:?}");
    println!(
        "fuzz: {} shares of a worker succeeded",
        shared.shares.load(Relaxed)
    );
    let violations = shared.violations.load(Relaxed);
    ensure!(failed == 0, "{failed} worker processes died");
    // A run that never shared a worker did not test sharing.
    ensure!(
        ops < 10_000 || shared.shares.load(Relaxed) > 0,
        "no share of a worker succeeded in {ops} operations"
    );
    ensure!(
        violations == 0,
        "{violations} replies broke an invariant (the first are above)"
    );
    ensure!(
        ops >= args.ops,
        "only {ops} of {} operations done",
        args.ops
    );
    Ok(())
}
