//! `--guided`: coverage-guided fuzzing, as syzkaller does it. Programs are short sequences of
//! calls on descriptors they open themselves; each runs alone in this process, closes what it
//! opened (so its channels' threads stop and end their KCOV sections), and the module points
//! it reached are read from KCOV (`evnotify-kcov`): the thread's own (`KCOV_ENABLE`, which also
//! records the module's callbacks that its eventfd writes and closes run), and its channels'
//! threads' (a remote collector, under a handle of its own). A program that reached a point
//! no earlier one did joins the corpus; new programs are mostly mutations of corpus programs
//! (a field changed, a call inserted, removed or duplicated, another program's calls spliced
//! in), else generated afresh. Requests are built per command, valid most of the time, so that
//! the budget is spent past the door, with sequences (attach, kick, close; share, close the
//! sharer; a timer, a kick eventfd, an echo; a ring's submissions and completions) for the
//! corpus to grow from. Rings are mapped, written to and unmapped by operations of their own.
//!
//! Every `EVNOTIFY_IOC_STATS` and `EVNOTIFY_IOC_WORKER` reply is checked as in the random mode.

use crate::{broken_reply, survivable, Buf};
use anyhow::{ensure, Context, Result};
use evnotify::sys;
use evnotify_kcov::{Collector, Placer};
use rand::{seq::IndexedRandom, Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::{collections::BTreeSet, io::Write, path::Path};

/// Where a descriptor in a request comes from, resolved when the program runs.
#[derive(Clone, Copy, Debug)]
enum Fd {
    Chan(u8),
    Efd(u8),
    Minus1,
    /// A number that is likely closed, or not ours (a pipe's, the kcov file's...).
    Raw(i32),
}

/// Where the request's pointer points.
#[derive(Clone, Copy, Debug)]
enum Arg {
    Buf,
    Null,
    /// Inside a page that faults.
    Dead(u16),
    /// The request's last `n` bytes run into the faulting page.
    Straddle(u8),
    Kernel(u16),
    Misaligned(u8),
}

#[derive(Clone, Debug)]
enum Op {
    /// A channel; `fail` > 0 makes that allocation of the call fail (fault injection).
    Open {
        fail: u8,
    },
    Eventfd {
        init: u32,
        semaphore: bool,
    },
    CloseChan(u8),
    CloseEfd(u8),
    DupChan(u8),
    Ioctl {
        chan: Fd,
        cmd: u64,
        req: [u8; 32],
        /// The request's descriptor field: its byte offset and source.
        fd: Option<(usize, Fd)>,
        arg: Arg,
        /// > 0: that slab allocation of the call fails (`/proc/thread-self/fail-nth`).
        fail: u8,
    },
    /// 8 bytes written to an eventfd (a kick eventfd's kicks).
    Write {
        efd: u8,
        value: u64,
    },
    Read {
        efd: u8,
    },
    Fdinfo(u8),
    /// Lets timers tick and threads run.
    Sleep {
        us: u32,
    },
    /// Maps a channel's event ring: mostly as the header says; `how` > 0 picks a wrong length,
    /// offset, protection or a private mapping. Kept until the program ends (or `Unmap`).
    Map {
        chan: u8,
        how: u8,
        /// > 0: that slab allocation of the call fails.
        fail: u8,
    },
    /// Submits `n` entries kicking `slot` `count` times each on a mapped ring, then enters it
    /// if the thread asks to be woken (or always, with `enter`); `skew` moves the published
    /// tail past what was written (a tail run ahead or behind).
    Submit {
        map: u8,
        slot: u32,
        count: u32,
        n: u8,
        skew: i16,
        enter: bool,
    },
    /// Consumes a mapped ring's completions (or moves its head to `skew` past the tail).
    Reap {
        map: u8,
        skew: i16,
    },
    Unmap(u8),
    /// Timers of `period_ms` on slots `0..slots` of a channel, their first ticks together at
    /// the same instant (the next but one multiple of the period, read when the op runs).
    TimerGrid {
        chan: u8,
        slots: u8,
        period_ms: u8,
    },
    /// A child that inherits everything, asks for signals to itself on `slot` and exits; the
    /// slot is kicked by the child before it exits, or by the parent after (the signal then
    /// has no target).
    Fork {
        chan: u8,
        slot: u8,
        kick_in_child: bool,
    },
}

struct Gen {
    rng: ChaCha8Rng,
}

impl Gen {
    fn fd(&mut self, chan_first: bool) -> Fd {
        let r = &mut self.rng;
        match r.random_range(0..16) {
            0..=10 if chan_first => Fd::Chan(r.random_range(0..4)),
            0..=10 => Fd::Efd(r.random_range(0..4)),
            11 | 12 => Fd::Chan(r.random_range(0..4)),
            13 => Fd::Efd(r.random_range(0..4)),
            14 => Fd::Minus1,
            _ => Fd::Raw(r.random_range(-3..200)),
        }
    }

    /// Mostly 0; sometimes one bit.
    fn zero(&mut self) -> u64 {
        if self.rng.random_ratio(15, 16) {
            0
        } else {
            1 << self.rng.random_range(0..64)
        }
    }

    fn slot(&mut self) -> u32 {
        let r = &mut self.rng;
        match r.random_range(0..16) {
            0..=11 => r.random_range(0..3),
            12 | 13 => r.random_range(0..sys::NR_SLOTS),
            14 => sys::NR_SLOTS + r.random_range(0..3),
            _ => r.random(),
        }
    }

    fn arg(&mut self) -> Arg {
        let r = &mut self.rng;
        match r.random_range(0..40) {
            0 => Arg::Null,
            1 => Arg::Dead(r.random_range(0..4096)),
            2 => Arg::Straddle(r.random_range(1..32)),
            3 => Arg::Kernel(r.random_range(0..4096)),
            4 => Arg::Misaligned(r.random_range(1..8)),
            _ => Arg::Buf,
        }
    }

    /// A request for `cmd`: its fields, mostly valid.
    fn request(&mut self, cmd: u64) -> ([u8; 32], Option<(usize, Fd)>) {
        let mut q = [0u8; 32];
        let put32 =
            |q: &mut [u8; 32], at: usize, v: u32| q[at..at + 4].copy_from_slice(&v.to_ne_bytes());
        let put64 =
            |q: &mut [u8; 32], at: usize, v: u64| q[at..at + 8].copy_from_slice(&v.to_ne_bytes());
        let mut fd = None;
        match cmd {
            sys::IOC_ATTACH | sys::IOC_KICKFD => {
                put32(&mut q, 0, self.slot());
                fd = Some((4, self.fd(false)));
                put32(&mut q, 8, self.zero() as u32);
                put32(&mut q, 12, self.zero() as u32);
            }
            sys::IOC_KICK => {
                put32(&mut q, 0, self.slot());
                let r = &mut self.rng;
                let n = match r.random_range(0..16) {
                    0..=11 => r.random_range(1..5),
                    12 => 0,
                    13 => sys::MAX_KICK,
                    14 => sys::MAX_KICK + 1,
                    _ => r.random(),
                };
                put32(&mut q, 4, n);
                put32(&mut q, 8, self.zero() as u32);
                put32(&mut q, 12, self.zero() as u32);
            }
            sys::IOC_TIMER => {
                put32(&mut q, 0, self.slot());
                let abstime = self.rng.random_ratio(1, 4);
                let flags = match abstime {
                    true => sys::TIMER_ABSTIME | self.zero() as u32,
                    false => self.zero() as u32,
                };
                put32(&mut q, 4, flags);
                // A first tick a little ahead or behind (a replayed input's is long past),
                // at boot, at the bound or past it.
                let start = match (abstime, self.rng.random_range(0..8)) {
                    (false, _) => self.zero(),
                    (true, 0) => 0,
                    (true, 1) => sys::MAX_START_NS + self.rng.random_range(0..2),
                    (true, 2) => self.rng.random(),
                    (true, _) => {
                        let now = evnotify::monotonic_now().as_nanos() as u64;
                        (now + self.rng.random_range(0..50_000_000)).saturating_sub(25_000_000)
                    }
                };
                put64(&mut q, 24, start);
                let r = &mut self.rng;
                let period = match r.random_range(0..16) {
                    0..=2 => 0,
                    3..=9 => sys::MIN_PERIOD_NS * r.random_range(1..4),
                    10..=12 => r.random_range(sys::MIN_PERIOD_NS..20 * sys::MIN_PERIOD_NS),
                    13 => r.random_range(1..sys::MIN_PERIOD_NS),
                    14 => sys::MAX_PERIOD_NS + r.random_range(0..2),
                    _ => r.random(),
                };
                let ticks = match r.random_range(0..4) {
                    0 => 0,
                    1 | 2 => r.random_range(1..5),
                    _ => r.random(),
                };
                put64(&mut q, 8, period);
                put64(&mut q, 16, ticks);
            }
            sys::IOC_SIGNAL => {
                put32(&mut q, 0, self.slot());
                let r = &mut self.rng;
                let signo = *[
                    0,
                    -1,
                    -2,
                    libc::SIGUSR1,
                    libc::SIGIO,
                    35,
                    64,
                    65,
                    0x7fff_ffff,
                ]
                .choose(r)
                .unwrap_or(&0);
                put32(&mut q, 4, survivable(signo) as u32);
                put32(&mut q, 8, self.zero() as u32);
                put32(&mut q, 12, self.zero() as u32);
            }
            sys::IOC_BUSYPOLL => {
                let r = &mut self.rng;
                let ns = match r.random_range(0..8) {
                    0 => 0,
                    1..=5 => r.random_range(1..=sys::MAX_BUSYPOLL_NS),
                    6 => sys::MAX_BUSYPOLL_NS + 1,
                    _ => r.random(),
                };
                put32(&mut q, 0, ns);
                put32(&mut q, 4, self.zero() as u32);
                put64(&mut q, 8, self.zero());
            }
            sys::IOC_SHARE_WORKER => {
                fd = Some((0, self.fd(true)));
                put32(&mut q, 4, self.zero() as u32);
                put64(&mut q, 8, self.zero());
            }
            sys::IOC_VERSION | sys::IOC_STATS | sys::IOC_WORKER => {}
            _ => self.rng.fill(&mut q[..]),
        }
        (q, fd)
    }

    fn cmd(&mut self) -> u64 {
        let r = &mut self.rng;
        let k = *sys::IOCTLS.choose(r).unwrap_or(&sys::IOC_VERSION);
        match r.random_range(0..20) {
            0..=16 => k,
            // A known number with another size or direction.
            17 => {
                (k & 0xffff) | (r.random_range(0..4u64) << 30) | (r.random_range(0..128u64) << 16)
            }
            18 => (u64::from(sys::IOC_MAGIC) << 8) | r.random_range(0x0a..0x100),
            _ => loop {
                // Not the VFS's own filesystem ioctls (as in the random mode).
                let c = r.random::<u32>() as u64;
                if !matches!((c >> 8) & 0xff, 0x58 | 0x66 | 0x94) && c & 0xffff != 0x5421 {
                    break c;
                }
            },
        }
    }

    fn ioctl(&mut self) -> Op {
        let cmd = self.cmd();
        let (req, fd) = self.request(cmd);
        let chan = if self.rng.random_ratio(15, 16) {
            Fd::Chan(self.rng.random_range(0..4))
        } else {
            self.fd(false)
        };
        Op::Ioctl {
            chan,
            cmd,
            req,
            fd,
            arg: self.arg(),
            fail: self.fail(),
        }
    }

    /// Mostly no fault; sometimes one of the call's first allocations fails.
    fn fail(&mut self) -> u8 {
        if self.rng.random_ratio(1, 8) {
            self.rng.random_range(1..8)
        } else {
            0
        }
    }

    /// A well-formed call of `cmd` on channel `chan`: `slot`, a descriptor, and `a`, `b` (the
    /// count; the period and tick limit; the signal).
    fn call(cmd: u64, chan: u8, slot: u32, fd: Option<Fd>, a: u64, b: u64) -> Op {
        let mut req = [0u8; 32];
        let mut fdf = None;
        match cmd {
            sys::IOC_SHARE_WORKER => fdf = fd.map(|f| (0, f)),
            sys::IOC_TIMER => {
                req[8..16].copy_from_slice(&a.to_ne_bytes());
                req[16..24].copy_from_slice(&b.to_ne_bytes());
            }
            _ => {
                fdf = fd.map(|f| (4, f));
                req[4..8].copy_from_slice(&(a as u32).to_ne_bytes());
            }
        }
        if cmd != sys::IOC_SHARE_WORKER {
            req[0..4].copy_from_slice(&slot.to_ne_bytes());
        }
        Op::Ioctl {
            chan: Fd::Chan(chan),
            cmd,
            req,
            fd: fdf,
            arg: Arg::Buf,
            fail: 0,
        }
    }

    /// A sequence that only several calls in order reach, for the corpus to start from.
    fn template(&mut self) -> Vec<Op> {
        use sys::{
            IOC_ATTACH, IOC_KICK, IOC_KICKFD, IOC_SHARE_WORKER, IOC_SIGNAL, IOC_STATS, IOC_TIMER,
        };
        let e0 = Some(Fd::Efd(0));
        let efd = Op::Eventfd {
            init: 0,
            semaphore: false,
        };
        let open = Op::Open { fail: 0 };
        match self.rng.random_range(0..8) {
            // One eventfd hooked as the kick eventfd of two channels, then written and closed.
            0 => vec![
                open.clone(),
                open,
                efd,
                Self::call(IOC_KICKFD, 0, 0, e0, 0, 0),
                Self::call(IOC_KICKFD, 1, 0, e0, 0, 0),
                Op::Write { efd: 0, value: 3 },
                Op::Sleep { us: 2000 },
                Op::CloseEfd(0),
                Op::Sleep { us: 2000 },
                Self::call(IOC_STATS, 0, 0, None, 0, 0),
            ],
            // A worker shared, then the channel that started it closed.
            1 => vec![
                open.clone(),
                open,
                efd,
                Self::call(IOC_ATTACH, 1, 0, e0, 0, 0),
                Self::call(IOC_KICK, 0, 0, None, 1, 0),
                Self::call(IOC_SHARE_WORKER, 1, 0, Some(Fd::Chan(0)), 0, 0),
                Op::CloseChan(0),
                Self::call(IOC_KICK, 0, 0, None, 2, 0),
                Op::Sleep { us: 2000 },
            ],
            // A timer whose notify eventfd is a kick eventfd of the same channel: echoes.
            2 => vec![
                open,
                efd,
                Self::call(IOC_KICKFD, 0, 0, e0, 0, 0),
                Self::call(IOC_ATTACH, 0, 1, e0, 0, 0),
                Self::call(IOC_TIMER, 0, 1, None, sys::MIN_PERIOD_NS, 3),
                Op::Sleep { us: 6000 },
                Self::call(IOC_STATS, 0, 0, None, 0, 0),
            ],
            // Signals to a process that exits before the kick.
            3 => vec![
                open,
                Self::call(IOC_SIGNAL, 0, 0, None, libc::SIGUSR1 as u64, 0),
                Op::Fork {
                    chan: 0,
                    slot: 0,
                    kick_in_child: false,
                },
                Op::Sleep { us: 2000 },
                Self::call(IOC_STATS, 0, 0, None, 0, 0),
            ],
            // A ring's submissions delivered to an eventfd, then its completions consumed.
            5 => vec![
                open,
                efd,
                Self::call(IOC_ATTACH, 0, 0, e0, 0, 0),
                Op::Map {
                    chan: 0,
                    how: 0,
                    fail: 0,
                },
                Op::Submit {
                    map: 0,
                    slot: 0,
                    count: 1,
                    n: 2,
                    skew: 0,
                    enter: false,
                },
                Op::Sleep { us: 1000 },
                Op::Reap { map: 0, skew: 0 },
                Self::call(sys::IOC_RING_STATS, 0, 0, None, 0, 0),
            ],
            // Timers of one period, on one grid (absolute, from boot), on twelve slots: ten
            // with eventfds of their own, two sharing one. The alarm delivers the ticks due
            // together itself, more than its small batch, one signal per eventfd.
            6 => {
                let mut p = vec![open];
                p.extend(std::iter::repeat_n(efd, 11));
                for slot in 0..12u32 {
                    let e = Some(Fd::Efd(slot.min(10) as u8));
                    p.push(Self::call(IOC_ATTACH, 0, slot, e, 0, 0));
                }
                p.push(Op::TimerGrid {
                    chan: 0,
                    slots: 12,
                    period_ms: 2,
                });
                p.push(Op::Sleep { us: 9000 });
                p.push(Op::Read { efd: 0 });
                p.push(Op::Sleep { us: 3000 });
                p
            }
            // Six channels on one worker, each with a ring: the worker's list of rings grows.
            7 => {
                let mut p = vec![open.clone()];
                p.push(Self::call(IOC_KICK, 0, 0, None, 1, 0));
                for chan in 1..6 {
                    p.push(open.clone());
                    p.push(Self::call(
                        IOC_SHARE_WORKER,
                        chan,
                        0,
                        Some(Fd::Chan(0)),
                        0,
                        0,
                    ));
                }
                for chan in 0..6 {
                    p.push(Op::Map {
                        chan,
                        how: 0,
                        fail: 0,
                    });
                }
                p.push(Op::Submit {
                    map: 5,
                    slot: 1,
                    count: 1,
                    n: 1,
                    skew: 0,
                    enter: true,
                });
                p.push(Op::Sleep { us: 1000 });
                p
            }
            // A timer, a signal and a kick eventfd on one slot, then detached one by one.
            _ => vec![
                open,
                efd,
                Self::call(IOC_ATTACH, 0, 0, e0, 0, 0),
                Self::call(IOC_SIGNAL, 0, 0, None, 0, 0),
                Self::call(IOC_TIMER, 0, 0, None, sys::MIN_PERIOD_NS, 0),
                Op::Sleep { us: 3000 },
                Self::call(IOC_TIMER, 0, 0, None, 0, 0),
                Self::call(IOC_SIGNAL, 0, 0, None, u64::from(u32::MAX), 0),
                Self::call(IOC_ATTACH, 0, 0, Some(Fd::Minus1), 0, 0),
                Op::Fdinfo(0),
            ],
        }
    }

    fn op(&mut self) -> Op {
        let r = &mut self.rng;
        let (c, e) = (r.random_range(0..4), r.random_range(0..4));
        match r.random_range(0..40) {
            0..=3 => Op::Open { fail: self.fail() },
            4..=6 => Op::Eventfd {
                init: r.random_range(0..2),
                semaphore: r.random_ratio(1, 4),
            },
            7 => Op::CloseChan(c),
            8 => Op::CloseEfd(e),
            9 => Op::DupChan(c),
            10..=12 => Op::Write {
                efd: e,
                // 0 wakes the eventfd's waiters with nothing to read.
                value: match r.random_range(0..16) {
                    0 => u64::MAX - 1,
                    1 => 0,
                    _ => r.random_range(1..5),
                },
            },
            13 => Op::Read { efd: e },
            14 => Op::Fdinfo(c),
            15 | 16 => Op::Sleep {
                us: r.random_range(100..5000),
            },
            17 => Op::Fork {
                chan: c,
                slot: r.random_range(0..3),
                kick_in_child: r.random(),
            },
            18 => Op::Map {
                chan: c,
                how: if r.random_ratio(3, 4) {
                    0
                } else {
                    r.random_range(1..7)
                },
                fail: self.fail(),
            },
            19..=21 => self.submit(c),
            22 => Op::Reap {
                map: c,
                skew: if r.random_ratio(7, 8) {
                    0
                } else {
                    r.random_range(-2..200)
                },
            },
            23 => Op::Unmap(c),
            24 => Op::TimerGrid {
                chan: c,
                slots: r.random_range(1..=sys::NR_SLOTS as u8),
                period_ms: r.random_range(1..5),
            },
            _ => self.ioctl(),
        }
    }

    /// Submissions on mapped ring `map`: mostly a few valid ones.
    fn submit(&mut self, map: u8) -> Op {
        let slot = self.slot();
        let r = &mut self.rng;
        let count = match r.random_range(0..16) {
            0..=12 => r.random_range(1..4),
            13 => 0,
            14 => sys::MAX_KICK + r.random_range(0..2),
            _ => r.random(),
        };
        Op::Submit {
            map,
            slot,
            count,
            n: match r.random_range(0..8) {
                0..=5 => r.random_range(1..4),
                6 => r.random_range(1..=sys::RING_SQ_ENTRIES as u8),
                _ => 0,
            },
            skew: match r.random_range(0..16) {
                0..=13 => 0,
                14 => r.random_range(-3..3),
                _ => r.random_range(120..300),
            },
            enter: r.random_ratio(1, 4),
        }
    }

    /// A fresh program: a channel and an eventfd first, most of the time; sometimes a template.
    fn program(&mut self) -> Vec<Op> {
        if self.rng.random_ratio(1, 4) {
            return self.template();
        }
        let mut p = vec![];
        if self.rng.random_ratio(7, 8) {
            p.push(Op::Open { fail: 0 });
            p.push(Op::Eventfd {
                init: 0,
                semaphore: false,
            });
        }
        for _ in 0..self.rng.random_range(1..12) {
            p.push(self.op());
        }
        p
    }

    fn mutate(&mut self, mut p: Vec<Op>, corpus: &[Vec<Op>]) -> Vec<Op> {
        for _ in 0..self.rng.random_range(1..4) {
            let i = self.rng.random_range(0..=p.len());
            match self.rng.random_range(0..10) {
                0..=3 if i < p.len() => {
                    if let Op::Ioctl {
                        cmd, req, fd, arg, ..
                    } = &mut p[i]
                    {
                        match self.rng.random_range(0..5) {
                            0 => (*req, *fd) = self.request(*cmd),
                            1 => {
                                let b = self.rng.random_range(0..32);
                                req[b] ^= 1 << self.rng.random_range(0..8);
                            }
                            2 => *arg = self.arg(),
                            3 => {
                                *cmd = self.cmd();
                                (*req, *fd) = self.request(*cmd);
                            }
                            _ => req[0..4].copy_from_slice(&self.slot().to_ne_bytes()),
                        }
                    } else {
                        p[i] = self.op();
                    }
                }
                4 | 5 => p.insert(i, self.op()),
                6 if i < p.len() => {
                    p.remove(i);
                }
                7 if i < p.len() => p.insert(i, p[i].clone()),
                _ => {
                    if let Some(other) = corpus.choose(&mut self.rng) {
                        let from = self.rng.random_range(0..other.len().max(1));
                        let n = self.rng.random_range(1..6);
                        let chunk: Vec<Op> = other.iter().skip(from).take(n).cloned().collect();
                        p.splice(i..i, chunk);
                    }
                }
            }
        }
        p.truncate(40);
        p
    }
}

/// The descriptors a running program opened.
struct Run {
    chans: Vec<i32>,
    efds: Vec<i32>,
    buf: Buf,
    /// Two pages: read-write, then none.
    pages: usize,
    violations: u64,
    /// Ioctl results: successes, and failures by errno.
    results: std::collections::BTreeMap<String, u64>,
    /// This thread's `/proc/thread-self/fail-nth`, opened once (opening it allocates).
    fail_nth: std::fs::File,
    /// Mapped rings: address, length, and the descriptor mapped.
    maps: Vec<(usize, usize, i32)>,
}

impl Run {
    fn resolve(&self, fd: Fd) -> i32 {
        let pick = |v: &Vec<i32>, i: u8| {
            if v.is_empty() {
                1000
            } else {
                v[i as usize % v.len()]
            }
        };
        match fd {
            Fd::Chan(i) => pick(&self.chans, i),
            Fd::Efd(i) => pick(&self.efds, i),
            Fd::Minus1 => -1,
            Fd::Raw(n) => n,
        }
    }

    fn close(v: &mut Vec<i32>, i: u8) {
        if !v.is_empty() {
            let fd = v.remove(i as usize % v.len());
            // SAFETY: A descriptor this program opened.
            unsafe { libc::close(fd) };
        }
    }

    /// Runs `f` with its `n`-th slab allocation failing (none for 0).
    fn failing<T>(&self, n: u8, f: impl FnOnce() -> T) -> T {
        use std::os::unix::fs::FileExt;
        if n == 0 {
            return f();
        }
        let _ = self.fail_nth.write_at(n.to_string().as_bytes(), 0);
        let r = f();
        let _ = self.fail_nth.write_at(b"0", 0);
        r
    }

    fn exec(&mut self, op: &Op) {
        match *op {
            Op::Open { fail } => {
                // SAFETY: Plain open of the device.
                let fd = self.failing(fail, || unsafe {
                    libc::open(c"/dev/evnotify".as_ptr(), libc::O_RDWR)
                });
                if fd >= 0 {
                    self.chans.push(fd);
                }
            }
            Op::Eventfd { init, semaphore } => {
                let flags = libc::EFD_NONBLOCK | if semaphore { libc::EFD_SEMAPHORE } else { 0 };
                // SAFETY: Plain eventfd creation.
                let fd = unsafe { libc::eventfd(init, flags) };
                if fd >= 0 {
                    self.efds.push(fd);
                }
            }
            Op::CloseChan(i) => Self::close(&mut self.chans, i),
            Op::CloseEfd(i) => Self::close(&mut self.efds, i),
            Op::DupChan(i) => {
                // SAFETY: `dup` of any number is harmless.
                let d = unsafe { libc::dup(self.resolve(Fd::Chan(i))) };
                if d >= 0 {
                    self.chans.push(d);
                }
            }
            Op::Ioctl {
                chan,
                cmd,
                req,
                fd,
                arg,
                fail,
            } => {
                let mut req = req;
                if let Some((at, f)) = fd {
                    req[at..at + 4].copy_from_slice(&self.resolve(f).to_ne_bytes());
                }
                // A mutated request must not ask for a signal we cannot survive either.
                if cmd == sys::IOC_SIGNAL {
                    let signo = i32::from_ne_bytes([req[4], req[5], req[6], req[7]]);
                    req[4..8].copy_from_slice(&survivable(signo).to_ne_bytes());
                }
                let base = self.buf.0.as_mut_ptr() as usize;
                self.buf.0[..32].copy_from_slice(&req);
                let size = ((cmd >> 16) & 0x3fff) as usize;
                let edge = self.pages + 4096;
                let ptr = match arg {
                    Arg::Buf => base,
                    Arg::Null => 0,
                    Arg::Dead(o) => edge + o as usize,
                    Arg::Straddle(n) => {
                        let len = size.saturating_sub(n as usize).clamp(1, 4096);
                        let at = edge - len;
                        // SAFETY: `at .. edge` is within the read-write page.
                        unsafe {
                            std::ptr::copy_nonoverlapping(req.as_ptr(), at as *mut u8, len.min(32))
                        };
                        at
                    }
                    Arg::Kernel(o) => 0xffff_ffff_8100_0000 + o as usize,
                    Arg::Misaligned(o) => {
                        self.buf.0.copy_within(0..32, o as usize);
                        base + o as usize
                    }
                };
                let target = self.resolve(chan);
                // SAFETY: The kernel validates `ptr`, which points at memory of ours or at
                // memory it must refuse to touch.
                let rc = self.failing(fail, || unsafe { libc::ioctl(target, cmd as _, ptr) });
                let result = if rc < 0 {
                    format!("{}", nix::errno::Errno::last())
                } else {
                    "ok".into()
                };
                *self.results.entry(result).or_default() += 1;
                if rc == 0 && matches!(arg, Arg::Buf) {
                    if let Some(why) = broken_reply(cmd, &self.buf) {
                        self.violations += 1;
                        if self.violations <= 10 {
                            println!("fuzz: VIOLATION: {why}");
                        }
                    }
                }
            }
            Op::Write { efd, value } => {
                let fd = self.resolve(Fd::Efd(efd));
                // SAFETY: Writes 8 bytes from a local; the eventfds are nonblocking.
                unsafe { libc::write(fd, (&value as *const u64).cast(), 8) };
            }
            Op::Read { efd } => {
                let mut v = 0u64;
                let fd = self.resolve(Fd::Efd(efd));
                // SAFETY: Reads 8 bytes into a local; nonblocking.
                unsafe { libc::read(fd, (&mut v as *mut u64).cast(), 8) };
            }
            Op::Fdinfo(i) => {
                let fd = self.resolve(Fd::Chan(i));
                let _ = std::fs::read(format!("/proc/self/fdinfo/{fd}"));
            }
            Op::Sleep { us } => std::thread::sleep(std::time::Duration::from_micros(us.into())),
            Op::Map { chan, how, fail } => {
                let page = sys::RING_SIZE as usize;
                let (mut len, mut off) = (page, 0);
                let (mut prot, mut flags) = (libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED);
                match how {
                    0 => {}
                    1 => len = 2 * page,
                    2 => off = page as i64,
                    3 => prot = libc::PROT_READ,
                    4 => flags = libc::MAP_PRIVATE,
                    5 => prot |= libc::PROT_EXEC,
                    _ => len = 1,
                }
                let fd = self.resolve(Fd::Chan(chan));
                // SAFETY: A new mapping at an address the kernel picks.
                let p = self.failing(fail, || unsafe {
                    libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, off)
                });
                let result = if p == libc::MAP_FAILED {
                    format!("mmap {}", nix::errno::Errno::last())
                } else {
                    "mmap ok".into()
                };
                *self.results.entry(result).or_default() += 1;
                // Only a mapping the program may write is kept for submissions.
                if p != libc::MAP_FAILED {
                    if prot & libc::PROT_WRITE != 0 && flags == libc::MAP_SHARED {
                        self.maps.push((p as usize, len, fd));
                    } else {
                        // SAFETY: The mapping just made.
                        unsafe { libc::munmap(p, len) };
                    }
                }
            }
            Op::Submit {
                map,
                slot,
                count,
                n,
                skew,
                enter,
            } => {
                let Some(&(base, _, fd)) = self.maps.get(map as usize % self.maps.len().max(1))
                else {
                    return;
                };
                let ring = |field: usize| {
                    // SAFETY: A field of the ring's header in a live shared mapping of a
                    // page, aligned; the kernel and user space share it through atomics.
                    unsafe { &*((base + field) as *const std::sync::atomic::AtomicU32) }
                };
                use std::{mem::offset_of, sync::atomic::Ordering};
                let tail = ring(offset_of!(sys::Ring, sq_tail)).load(Ordering::Relaxed);
                for i in 0..u32::from(n) {
                    let at = (tail.wrapping_add(i) % sys::RING_SQ_ENTRIES) as usize;
                    let e = base + sys::RING_SQ_OFFSET as usize + at * 8;
                    // SAFETY: Entry `at` of the submission queue, within the page.
                    unsafe {
                        std::ptr::write_volatile(e as *mut u32, slot);
                        std::ptr::write_volatile((e + 4) as *mut u32, count);
                    }
                }
                let new = tail.wrapping_add(n.into()).wrapping_add(skew as u32);
                ring(offset_of!(sys::Ring, sq_tail)).store(new, Ordering::Release);
                std::sync::atomic::fence(Ordering::SeqCst);
                let flags = ring(offset_of!(sys::Ring, flags)).load(Ordering::Relaxed);
                if enter || flags & sys::RING_NEED_WAKEUP != 0 {
                    // SAFETY: The ioctl takes no argument.
                    let rc = unsafe { libc::ioctl(fd, sys::IOC_RING_ENTER as _) };
                    let result = if rc < 0 {
                        format!("ring enter {}", nix::errno::Errno::last())
                    } else {
                        "ring enter ok".into()
                    };
                    *self.results.entry(result).or_default() += 1;
                }
            }
            Op::Reap { map, skew } => {
                let Some(&(base, _, _)) = self.maps.get(map as usize % self.maps.len().max(1))
                else {
                    return;
                };
                use std::{mem::offset_of, sync::atomic::Ordering};
                // SAFETY: As in `Submit`.
                let word = |field: usize| unsafe {
                    &*((base + field) as *const std::sync::atomic::AtomicU32)
                };
                let tail = word(offset_of!(sys::Ring, cq_tail)).load(Ordering::Acquire);
                word(offset_of!(sys::Ring, cq_head))
                    .store(tail.wrapping_add(skew as u32), Ordering::Release);
            }
            Op::TimerGrid {
                chan,
                slots,
                period_ms,
            } => {
                let period = u64::from(period_ms) * 1_000_000;
                let now = evnotify::monotonic_now().as_nanos() as u64;
                let t = sys::Timer {
                    flags: sys::TIMER_ABSTIME,
                    period_ns: period,
                    start_ns: (now / period + 2) * period,
                    ..Default::default()
                };
                let fd = self.resolve(Fd::Chan(chan));
                for slot in 0..u32::from(slots) {
                    let t = sys::Timer { slot, ..t };
                    // SAFETY: A request from a local.
                    let rc = unsafe { libc::ioctl(fd, sys::IOC_TIMER as _, &t) };
                    let result = if rc < 0 {
                        format!("timer grid {}", nix::errno::Errno::last())
                    } else {
                        "timer grid ok".into()
                    };
                    *self.results.entry(result).or_default() += 1;
                }
            }
            Op::Unmap(i) => {
                if !self.maps.is_empty() {
                    let (p, len, _) = self.maps.remove(i as usize % self.maps.len());
                    // SAFETY: A mapping this program made, no longer referred to.
                    unsafe { libc::munmap(p as *mut libc::c_void, len) };
                }
            }
            Op::Fork {
                chan,
                slot,
                kick_in_child,
            } => {
                let fd = self.resolve(Fd::Chan(chan));
                // SAFETY: The child makes raw syscalls on memory it owns, then `_exit`s; this
                // process has no other thread.
                let pid = unsafe { libc::fork() };
                let k = sys::Kick {
                    slot: slot.into(),
                    count: 1,
                    ..Default::default()
                };
                if pid == 0 {
                    let s = sys::Signal {
                        slot: slot.into(),
                        signo: libc::SIGUSR1,
                        ..Default::default()
                    };
                    // SAFETY: Requests from locals; then leave at once.
                    unsafe {
                        libc::ioctl(fd, sys::IOC_SIGNAL as _, &s);
                        if kick_in_child {
                            libc::ioctl(fd, sys::IOC_KICK as _, &k);
                        }
                        libc::_exit(0);
                    }
                }
                if pid > 0 {
                    // SAFETY: Reaps our own child, then kicks (a request from a local).
                    unsafe {
                        libc::waitpid(pid, std::ptr::null_mut(), 0);
                        libc::ioctl(fd, sys::IOC_KICK as _, &k);
                    }
                }
            }
        }
    }

    /// Closes everything the program opened: its channels' threads stop, ending their sections.
    fn finish(&mut self) {
        for fd in self.chans.drain(..).chain(self.efds.drain(..)) {
            // SAFETY: Descriptors this program opened.
            unsafe { libc::close(fd) };
        }
        // A mapping holds its channel: the last one's release comes here.
        for (p, len, _) in self.maps.drain(..) {
            // SAFETY: Mappings this program made.
            unsafe { libc::munmap(p as *mut libc::c_void, len) };
        }
    }
}

/// Makes failslab fail the allocations that fail-nth names, whatever their flags, quietly (its
/// stack dumps are not splats), as the device tests' fault injection does.
fn arm_failslab() -> Result<()> {
    for (knob, v) in [
        ("ignore-gfp-wait", "N"),
        ("verbose", "0"),
        ("task-filter", "N"),
    ] {
        let path = format!("/sys/kernel/debug/failslab/{knob}");
        std::fs::write(&path, v).with_context(|| path)?;
    }
    Ok(())
}

/// Runs `ops` operations of guided fuzzing from `seed`, writes the points reached to `out`.
pub fn run(seed: u64, ops: u64, out: &Path, ko: &Path) -> Result<()> {
    // This thread's own system calls, and its channels' threads under a handle of its own
    // ("fuzz": not evnotify-kcov's, so the module opens no section in its calls).
    let kcov = [
        Collector::remote(0x6675_7a7a, 1 << 20, 1 << 18)?,
        Collector::local(1 << 20)?,
    ];
    let mut placer = Placer::new("rust_evnotify", ko)?;
    let mut g = Gen {
        rng: ChaCha8Rng::seed_from_u64(seed),
    };
    // SAFETY: Two fresh pages; the second is made inaccessible.
    let pages = unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            8192,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        ensure!(p != libc::MAP_FAILED, "mmap");
        ensure!(
            libc::mprotect(p.cast::<u8>().add(4096).cast(), 4096, libc::PROT_NONE) == 0,
            "mprotect"
        );
        p as usize
    };
    arm_failslab()?;
    let mut run = Run {
        chans: vec![],
        efds: vec![],
        buf: Buf([0; 256]),
        pages,
        violations: 0,
        results: Default::default(),
        fail_nth: std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/proc/thread-self/fail-nth")
            .context(
                "/proc/thread-self/fail-nth (a kernel with CONFIG_FAULT_INJECTION_DEBUG_FS)",
            )?,
        maps: vec![],
    };
    let (mut corpus, mut seen): (Vec<Vec<Op>>, BTreeSet<u64>) = (vec![], BTreeSet::new());
    let (mut done, mut programs) = (0u64, 0u64);
    while done < ops {
        let prog = if corpus.is_empty() || g.rng.random_ratio(1, 5) {
            g.program()
        } else {
            let base = corpus.choose(&mut g.rng).cloned().unwrap_or_default();
            g.mutate(base, &corpus)
        };
        for op in &prog {
            run.exec(op);
        }
        run.finish();
        done += prog.len() as u64 + 1;
        programs += 1;
        let mut pcs = BTreeSet::new();
        for k in &kcov {
            k.drain(&mut pcs);
        }
        let before = seen.len();
        seen.extend(&pcs);
        if seen.len() > before {
            corpus.push(prog);
        }
        placer.place(&pcs);
        if programs % 2000 == 0 {
            println!(
                "fuzz: {done} operations so far; {programs} programs, corpus {}, {} points",
                corpus.len(),
                placer.points.len()
            );
        }
    }
    let mut f = std::fs::File::create(out)?;
    writeln!(
        f,
        "# guided fuzzer: seed {seed}; {done} operations in {programs} programs; corpus {}; unplaced {}",
        corpus.len(),
        placer.unplaced
    )?;
    for p in &placer.points {
        writeln!(f, "{p}")?;
    }
    let ioctls: u64 = run.results.values().sum();
    println!("fuzz: ioctl results {:?} of {ioctls}", run.results);
    println!(
        "fuzz: seed {seed} ops {done} guided: {programs} programs, corpus {}",
        corpus.len()
    );
    println!(
        "fuzz: {} points of rust_evnotify reached -> {}",
        placer.points.len(),
        out.display()
    );
    ensure!(
        run.violations == 0,
        "{} replies broke an invariant (the first are above)",
        run.violations
    );
    Ok(())
}
