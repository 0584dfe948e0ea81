//! The C header is the one definition of the ABI. Every `#define` and every struct field of
//! it, found by reading the header itself, must be in both Rust mirrors (the library's `sys`
//! and the module's `uapi.rs`) with the same value, size, offset, width and signedness, and
//! every ioctl number must be the one the C compiler computes.

use crate::uapi;
use evnotify::sys;
use std::{collections::BTreeMap, mem::offset_of, path::PathBuf, process::Command};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// What the header declares, read from its text.
struct Header {
    defines: Vec<String>,
    /// `evnotify_stats` → fields in order, with (bits, signed) from their `__u32`/`__s32` type.
    structs: BTreeMap<String, Vec<(String, usize, bool)>>,
}

fn header() -> Header {
    let text = std::fs::read_to_string(repo().join("include/uapi/linux/evnotify.h")).unwrap();
    let mut h = Header {
        defines: vec![],
        structs: BTreeMap::new(),
    };
    let mut cur: Option<String> = None;
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["#define", name, ..] if name.starts_with("EVNOTIFY_") => {
                h.defines.push(name.to_string())
            }
            ["struct", name, "{"] => {
                cur = Some(name.to_string());
                h.structs.insert(name.to_string(), vec![]);
            }
            ["};", ..] => cur = None,
            [ty, field, ..] if cur.is_some() && ty.starts_with("__") => {
                let sign = &ty[2..3];
                assert!(sign == "u" || sign == "s", "unexpected field type {ty}");
                let bits = ty[3..].parse().unwrap();
                let field = field.trim_end_matches(';').to_string();
                let fields = h.structs.get_mut(cur.as_ref().unwrap()).unwrap();
                fields.push((field, bits, sign == "s"));
            }
            _ => assert!(
                cur.is_none() || words.is_empty() || words[0].starts_with("/*") || words[0] == "*",
                "a struct line this test cannot read: {line}"
            ),
        }
    }
    assert!(
        h.defines.len() >= 26 && h.structs.len() >= 9,
        "the header parsed"
    );
    h
}

/// Compiles the C program `src` into `bin` against the header, with `-Wall -Werror` and
/// `flags`: whether it compiled.
fn compile(src: &std::path::Path, bin: &std::path::Path, flags: &[&str]) -> bool {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    Command::new(cc)
        .args(["-Wall", "-Werror"])
        .args(flags)
        .arg("-I")
        .arg(repo().join("include/uapi"))
        .arg(src)
        .arg("-o")
        .arg(bin)
        .status()
        .expect("run the C compiler")
        .success()
}

/// Compiles a C program that prints each expression, and returns the values.
fn c_values(exprs: &[String]) -> BTreeMap<String, u64> {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let out = std::env::temp_dir().join(format!("evnotify-abi-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let (src, bin) = (out.join("abi.c"), out.join("abi"));
    let mut c = String::from(
        "#include <stdio.h>\n#include <stddef.h>\n#include <linux/evnotify.h>\n\
         #define P(x) printf(\"%s\\t%llu\\n\", #x, (unsigned long long)(x));\nint main(void) {\n",
    );
    for e in exprs {
        c += &format!("P({e})\n");
    }
    c += "return 0; }\n";
    std::fs::write(&src, c).unwrap();
    assert!(
        compile(&src, &bin, &["-std=c99"]),
        "the header compiles as C99 with -Wall -Werror"
    );
    let printed = Command::new(&bin).output().unwrap();
    let values: BTreeMap<_, _> = String::from_utf8(printed.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l.split_once('\t').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect();
    assert_eq!(values.len(), exprs.len(), "every C value was printed");
    std::fs::remove_dir_all(&out).unwrap();
    values
}

/// Integer field types and their signedness.
trait Int {
    const SIGNED: bool;
}
macro_rules! int {
    ($($t:ty: $s:expr),*) => { $(impl Int for $t { const SIGNED: bool = $s; })* };
}
int!(u32: false, i32: true, u64: false, i64: true);

/// One struct of one mirror: size, and each field's name, offset, size and signedness.
struct Layout {
    size: usize,
    fields: Vec<(&'static str, usize, usize, bool)>,
}

fn field<T, F: Int>(_: fn(&T) -> &F) -> (usize, bool) {
    (size_of::<F>(), F::SIGNED)
}

macro_rules! layout {
    ($t:ty { $($f:ident),* $(,)? }) => {
        Layout {
            size: size_of::<$t>(),
            fields: vec![$({
                let (size, signed) = field(|s: &$t| &s.$f);
                (stringify!($f), offset_of!($t, $f), size, signed)
            }),*],
        }
    };
}

/// Both mirrors of each header struct: (C name, library's layout, module's layout).
fn mirrors() -> Vec<(&'static str, Layout, Layout)> {
    macro_rules! both {
        ($c:literal, $user:ident, $kernel:ident { $($f:ident),* $(,)? }) => {
            ($c, layout!(sys::$user { $($f),* }), layout!(uapi::$kernel { $($f),* }))
        };
    }
    vec![
        both!(
            "evnotify_version",
            Version,
            Version {
                api_version,
                nr_slots,
                features
            }
        ),
        both!(
            "evnotify_attach",
            Attach,
            Attach {
                slot,
                fd,
                flags,
                reserved
            }
        ),
        both!(
            "evnotify_kick",
            Kick,
            Kick {
                slot,
                count,
                flags,
                reserved
            }
        ),
        both!(
            "evnotify_stats",
            Stats,
            Stats {
                kicks,
                fd_kicks,
                timer_ticks,
                handled,
                notifies,
                signals,
                dropped,
                wakeups,
                polled,
                pending,
                thread_pid,
                attached,
                kickfds,
                timers,
                signal_slots,
                busypoll_ns,
                coalesced,
                sig_refused,
            }
        ),
        both!(
            "evnotify_timer",
            Timer,
            TimerReq {
                slot,
                flags,
                period_ns,
                ticks,
                start_ns
            }
        ),
        both!(
            "evnotify_signal",
            Signal,
            SignalReq {
                slot,
                signo,
                flags,
                reserved
            }
        ),
        both!(
            "evnotify_busypoll",
            BusyPoll,
            BusyPollReq {
                limit_ns,
                flags,
                reserved
            }
        ),
        both!(
            "evnotify_share",
            Share,
            ShareReq {
                fd,
                flags,
                reserved
            }
        ),
        both!(
            "evnotify_worker",
            Worker,
            WorkerInfo {
                worker_id,
                thread_pid,
                channels,
                reserved
            }
        ),
        both!(
            "evnotify_ring",
            Ring,
            Ring {
                sq_head,
                sq_tail,
                cq_head,
                cq_tail,
                flags,
                sq_dropped,
                cq_overflow,
                reserved
            }
        ),
        both!("evnotify_sqe", Sqe, Sqe { slot, count }),
        both!("evnotify_cqe", Cqe, Cqe { slot, count, seq }),
        both!(
            "evnotify_ring_stats",
            RingStats,
            RingStats {
                sq_kicks,
                sq_dropped,
                cq_events,
                cq_kicks,
                cq_overflow,
                lost_kicks,
                sq_head,
                cq_tail
            }
        ),
    ]
}

/// Both mirrors of each `#define`: (C name, library's value, module's value).
fn constants() -> Vec<(&'static str, u64, u64)> {
    macro_rules! both {
        ($($name:ident),* $(,)?) => {
            vec![$((concat!("EVNOTIFY_", stringify!($name)), sys::$name as u64, uapi::$name as u64)),*]
        };
    }
    both!(
        API_VERSION,
        NR_SLOTS,
        MAX_KICK,
        MAX_PENDING,
        F_NOTIFY,
        F_SLOTS,
        F_KICKFD,
        F_FDINFO,
        F_TIMER,
        F_SIGNAL,
        F_BUSYPOLL,
        F_WORKERS,
        F_CGROUPS,
        F_TIMER_ABSTIME,
        F_RING,
        MIN_PERIOD_NS,
        MAX_PERIOD_NS,
        TIMER_ABSTIME,
        MAX_START_NS,
        MAX_BUSYPOLL_NS,
        RING_SIZE,
        RING_SQ_ENTRIES,
        RING_CQ_ENTRIES,
        RING_SQ_OFFSET,
        RING_CQ_OFFSET,
        RING_NEED_WAKEUP,
        IOC_MAGIC,
        IOC_VERSION,
        IOC_ATTACH,
        IOC_KICK,
        IOC_STATS,
        IOC_KICKFD,
        IOC_TIMER,
        IOC_SIGNAL,
        IOC_BUSYPOLL,
        IOC_SHARE_WORKER,
        IOC_WORKER,
        IOC_RING_ENTER,
        IOC_RING_STATS,
    )
}

#[test]
fn every_define_matches_both_mirrors() {
    let h = header();
    let consts = constants();
    let named: Vec<&str> = consts.iter().map(|c| c.0).collect();
    let defines: Vec<&str> = h.defines.iter().map(String::as_str).collect();
    assert_eq!(
        named, defines,
        "the mirrors name every #define of the header, in its order"
    );
    let c = c_values(&h.defines);
    for (name, user, kernel) in consts {
        assert_eq!(
            c[name], user,
            "{name}: header {:#x}, library sys {user:#x}",
            c[name]
        );
        assert_eq!(
            c[name], kernel,
            "{name}: header {:#x}, module uapi.rs {kernel:#x}",
            c[name]
        );
    }
}

#[test]
fn every_struct_field_matches_both_mirrors() {
    let h = header();
    let mirrors = mirrors();
    let names: Vec<&str> = mirrors.iter().map(|m| m.0).collect();
    assert_eq!(
        names
            .iter()
            .copied()
            .collect::<std::collections::BTreeSet<_>>(),
        h.structs.keys().map(String::as_str).collect(),
        "the mirrors have every struct of the header"
    );
    let mut exprs = vec![];
    for (s, fields) in &h.structs {
        exprs.push(format!("sizeof(struct {s})"));
        for (f, ..) in fields {
            exprs.push(format!("offsetof(struct {s}, {f})"));
            exprs.push(format!("sizeof(((struct {s} *)0)->{f})"));
        }
    }
    let c = c_values(&exprs);
    for (s, user, kernel) in &mirrors {
        let fields = &h.structs[*s];
        for (which, l) in [("library sys", user), ("module uapi.rs", kernel)] {
            assert_eq!(
                l.size as u64,
                c[&format!("sizeof(struct {s})")],
                "{which}: size of {s}"
            );
            let got: Vec<&str> = l.fields.iter().map(|f| f.0).collect();
            let want: Vec<&str> = fields.iter().map(|f| f.0.as_str()).collect();
            assert_eq!(got, want, "{which}: the fields of {s}, in order");
            for ((f, off, size, signed), (_, bits, c_signed)) in l.fields.iter().zip(fields) {
                let at = format!("{which}: {s}.{f}");
                assert_eq!(
                    *off as u64,
                    c[&format!("offsetof(struct {s}, {f})")],
                    "{at} offset"
                );
                assert_eq!(
                    *size as u64,
                    c[&format!("sizeof(((struct {s} *)0)->{f})")],
                    "{at}"
                );
                assert_eq!(*size * 8, *bits, "{at}: width of its C type");
                assert_eq!(signed, c_signed, "{at}: signedness of its C type");
            }
        }
    }
}

/// The module's request checks, on the same compiled file.
#[test]
fn module_request_checks() {
    let last = sys::NR_SLOTS - 1;
    assert_eq!(uapi::slot(0), Ok(0));
    assert_eq!(uapi::slot(last), Ok(last as usize));
    for bad in [sys::NR_SLOTS, u32::MAX] {
        assert_eq!(uapi::slot(bad), Err(kernel::prelude::EINVAL));
    }
    assert_eq!(uapi::must_be_zero(0, 0u64), Ok(()));
    assert_eq!(uapi::must_be_zero(1, 0u64), Err(kernel::prelude::EINVAL));
    assert_eq!(uapi::must_be_zero(0, 1u32), Err(kernel::prelude::EINVAL));
    assert_eq!(
        uapi::must_be_zero(0, u64::MAX),
        Err(kernel::prelude::EINVAL)
    );
    assert_eq!(uapi::SIGIO, libc::SIGIO);
}

/// The header's ring helpers, compiled as C90 (the UAPI's dialect) and as C99, run against a
/// page that the test plays the kernel on.
#[test]
fn ring_helpers_work_as_c90_and_c99() {
    let prog = r#"
#include <stdio.h>
#include <string.h>
#include <linux/evnotify.h>
static union { char b[EVNOTIFY_RING_SIZE]; double align; } page;
int main(void)
{
	void *map = page.b;
	struct evnotify_ring *r = evnotify_ring_of(map);
	struct evnotify_cqe c;
	unsigned i;
	if (evnotify_ring_submit(map, 3, 7) != 0) return 1;
	if (r->sq_tail != 1 || evnotify_ring_sq(map)[0].slot != 3 || evnotify_ring_sq(map)[0].count != 7) return 2;
	r->flags = EVNOTIFY_RING_NEED_WAKEUP;
	if (evnotify_ring_submit(map, 4, 1) != 1) return 3;
	for (i = 2; i < EVNOTIFY_RING_SQ_ENTRIES; i++)
		if (evnotify_ring_submit(map, 5, 1) != 1) return 4;
	if (evnotify_ring_submit(map, 5, 1) != -1 || r->sq_tail != EVNOTIFY_RING_SQ_ENTRIES) return 5;
	r->sq_head = 1;	/* the kernel took one: room for one */
	if (evnotify_ring_submit(map, 6, 1) != 1 || evnotify_ring_sq(map)[0].slot != 6) return 6;
	if (evnotify_ring_reap(map, &c) != 0) return 7;
	evnotify_ring_cq(map)[0].slot = 9;
	evnotify_ring_cq(map)[0].count = 2;
	evnotify_ring_cq(map)[0].seq = 41;
	r->cq_tail = 1;
	if (evnotify_ring_reap(map, &c) != 1 || c.slot != 9 || c.count != 2 || c.seq != 41) return 8;
	if (r->cq_head != 1 || evnotify_ring_reap(map, &c) != 0) return 9;
	if ((char *)evnotify_ring_cq(map) - (char *)map != EVNOTIFY_RING_CQ_OFFSET) return 10;
	puts("ok");
	return 0;
}
"#;
    for std in ["-std=c90", "-std=c99"] {
        let out = std::env::temp_dir().join(format!("evnotify-ring-{}-{std}", std::process::id()));
        std::fs::create_dir_all(&out).unwrap();
        let (src, bin) = (out.join("ring.c"), out.join("ring"));
        std::fs::write(&src, prog).unwrap();
        assert!(
            compile(&src, &bin, &["-pedantic", std]),
            "the helpers compile with {std}"
        );
        let run = Command::new(&bin).output().unwrap();
        assert!(
            run.status.success() && run.stdout == b"ok\n",
            "{std}: {:?}",
            run.status
        );
        std::fs::remove_dir_all(&out).unwrap();
    }
}
