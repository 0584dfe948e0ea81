//! The C header is the one definition of the ABI: compile it with the system C compiler and
//! compare every constant, ioctl number and struct layout with the Rust mirror.

use evnotify::sys::*;
use std::{mem::offset_of, mem::size_of, path::PathBuf, process::Command};

/// The header's values, compiled and printed once for all tests.
fn c_values() -> Vec<(String, u64)> {
    static VALUES: std::sync::OnceLock<Vec<(String, u64)>> = std::sync::OnceLock::new();
    VALUES.get_or_init(compile_and_print).clone()
}

fn compile_and_print() -> Vec<(String, u64)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let src = out.join("abi.c");
    let bin = out.join("abi");
    let mut c = String::from(
        "#include <stdio.h>\n#include <stddef.h>\n#include <linux/evnotify.h>\n\
         #define P(x) printf(\"%s %llu\\n\", #x, (unsigned long long)(x));\nint main(void) {\n",
    );
    for item in [
        "EVNOTIFY_API_VERSION",
        "EVNOTIFY_NR_SLOTS",
        "EVNOTIFY_MAX_KICK",
        "EVNOTIFY_MAX_PENDING",
        "offsetof(struct evnotify_stats, coalesced)",
        "offsetof(struct evnotify_stats, sig_refused)",
        "EVNOTIFY_F_NOTIFY",
        "EVNOTIFY_F_SLOTS",
        "EVNOTIFY_F_KICKFD",
        "EVNOTIFY_F_FDINFO",
        "EVNOTIFY_F_TIMER",
        "EVNOTIFY_F_SIGNAL",
        "EVNOTIFY_F_BUSYPOLL",
        "EVNOTIFY_MAX_BUSYPOLL_NS",
        "EVNOTIFY_MIN_PERIOD_NS",
        "EVNOTIFY_MAX_PERIOD_NS",
        "EVNOTIFY_IOC_MAGIC",
        "EVNOTIFY_IOC_VERSION",
        "EVNOTIFY_IOC_ATTACH",
        "EVNOTIFY_IOC_KICK",
        "EVNOTIFY_IOC_STATS",
        "EVNOTIFY_IOC_KICKFD",
        "EVNOTIFY_IOC_TIMER",
        "EVNOTIFY_IOC_SIGNAL",
        "EVNOTIFY_IOC_BUSYPOLL",
        "sizeof(struct evnotify_busypoll)",
        "offsetof(struct evnotify_busypoll, reserved)",
        "offsetof(struct evnotify_stats, polled)",
        "offsetof(struct evnotify_stats, busypoll_ns)",
        "sizeof(struct evnotify_timer)",
        "sizeof(struct evnotify_signal)",
        "offsetof(struct evnotify_timer, period_ns)",
        "offsetof(struct evnotify_timer, reserved)",
        "offsetof(struct evnotify_signal, signo)",
        "offsetof(struct evnotify_stats, timer_ticks)",
        "offsetof(struct evnotify_stats, handled)",
        "offsetof(struct evnotify_stats, signals)",
        "offsetof(struct evnotify_stats, timers)",
        "offsetof(struct evnotify_stats, signal_slots)",
        "sizeof(struct evnotify_version)",
        "sizeof(struct evnotify_attach)",
        "sizeof(struct evnotify_kick)",
        "sizeof(struct evnotify_stats)",
        "offsetof(struct evnotify_version, features)",
        "offsetof(struct evnotify_attach, fd)",
        "offsetof(struct evnotify_attach, reserved)",
        "offsetof(struct evnotify_kick, count)",
        "offsetof(struct evnotify_kick, reserved)",
        "offsetof(struct evnotify_stats, pending)",
        "offsetof(struct evnotify_stats, thread_pid)",
        "offsetof(struct evnotify_stats, attached)",
        "offsetof(struct evnotify_stats, fd_kicks)",
        "offsetof(struct evnotify_stats, kickfds)",
    ] {
        c += &format!("P({item})\n");
    }
    c += "return 0; }\n";
    std::fs::write(&src, c).unwrap();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let st = Command::new(cc)
        .args(["-Wall", "-Werror", "-I"])
        .arg(root.join("include/uapi"))
        .arg(&src)
        .arg("-o")
        .arg(&bin)
        .status()
        .expect("run the C compiler");
    assert!(st.success(), "the header does not compile");
    let out = Command::new(&bin).output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

#[test]
fn rust_mirror_matches_c_header() {
    let rust: Vec<u64> = vec![
        API_VERSION.into(),
        NR_SLOTS.into(),
        MAX_KICK.into(),
        MAX_PENDING,
        offset_of!(Stats, coalesced) as u64,
        offset_of!(Stats, sig_refused) as u64,
        F_NOTIFY,
        F_SLOTS,
        F_KICKFD,
        F_FDINFO,
        F_TIMER,
        F_SIGNAL,
        F_BUSYPOLL,
        MAX_BUSYPOLL_NS.into(),
        MIN_PERIOD_NS,
        MAX_PERIOD_NS,
        IOC_MAGIC.into(),
        IOC_VERSION,
        IOC_ATTACH,
        IOC_KICK,
        IOC_STATS,
        IOC_KICKFD,
        IOC_TIMER,
        IOC_SIGNAL,
        IOC_BUSYPOLL,
        size_of::<BusyPoll>() as u64,
        offset_of!(BusyPoll, reserved) as u64,
        offset_of!(Stats, polled) as u64,
        offset_of!(Stats, busypoll_ns) as u64,
        size_of::<Timer>() as u64,
        size_of::<Signal>() as u64,
        offset_of!(Timer, period_ns) as u64,
        offset_of!(Timer, reserved) as u64,
        offset_of!(Signal, signo) as u64,
        offset_of!(Stats, timer_ticks) as u64,
        offset_of!(Stats, handled) as u64,
        offset_of!(Stats, signals) as u64,
        offset_of!(Stats, timers) as u64,
        offset_of!(Stats, signal_slots) as u64,
        size_of::<Version>() as u64,
        size_of::<Attach>() as u64,
        size_of::<Kick>() as u64,
        size_of::<Stats>() as u64,
        offset_of!(Version, features) as u64,
        offset_of!(Attach, fd) as u64,
        offset_of!(Attach, reserved) as u64,
        offset_of!(Kick, count) as u64,
        offset_of!(Kick, reserved) as u64,
        offset_of!(Stats, pending) as u64,
        offset_of!(Stats, thread_pid) as u64,
        offset_of!(Stats, attached) as u64,
        offset_of!(Stats, fd_kicks) as u64,
        offset_of!(Stats, kickfds) as u64,
    ];
    let c = c_values();
    assert_eq!(c.len(), rust.len(), "every C value was printed");
    for ((name, cv), rv) in c.iter().zip(rust) {
        assert_eq!(*cv, rv, "{name}: C says {cv:#x}, Rust says {rv:#x}");
    }
}

/// The kernel module keeps its own mirror (`uapi.rs`); its numbers must be the header's too.
#[test]
fn kernel_mirror_matches_c_header() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let k = std::fs::read_to_string(root.join("uapi.rs")).unwrap();
    let c: std::collections::HashMap<_, _> = c_values().into_iter().collect();
    let konst = |name: &str| -> String {
        let line = k
            .lines()
            .find(|l| l.contains(&format!("const {name}:")))
            .unwrap_or_else(|| panic!("uapi.rs defines {name}"));
        line.split('=')
            .nth(1)
            .unwrap()
            .trim()
            .trim_end_matches(';')
            .to_string()
    };
    let hex = |s: String| u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap();
    assert_eq!(hex(konst("MAGIC")), c["EVNOTIFY_IOC_MAGIC"]);
    assert_eq!(konst("API_VERSION"), c["EVNOTIFY_API_VERSION"].to_string());
    assert_eq!(konst("NR_SLOTS"), c["EVNOTIFY_NR_SLOTS"].to_string());
    for (name, ty, cname, nr, dir) in [
        ("IOC_VERSION", "Version", "version", 0, "_IOR"),
        ("IOC_ATTACH", "Attach", "attach", 1, "_IOW"),
        ("IOC_KICK", "Kick", "kick", 2, "_IOW"),
        ("IOC_STATS", "Stats", "stats", 3, "_IOR"),
        ("IOC_KICKFD", "Attach", "attach", 4, "_IOW"),
        ("IOC_TIMER", "TimerReq", "timer", 5, "_IOW"),
        ("IOC_SIGNAL", "SignalReq", "signal", 6, "_IOW"),
        ("IOC_BUSYPOLL", "BusyPollReq", "busypoll", 7, "_IOW"),
    ] {
        assert_eq!(
            konst(name),
            format!("{dir}::<{ty}>(MAGIC, {nr:#04x})"),
            "{name}"
        );
        let sname = format!("sizeof(struct evnotify_{cname})");
        assert!(
            k.contains(&format!("size_of::<{ty}>() == {}", c[&sname])),
            "uapi.rs asserts the size of {ty} as {}",
            c[&sname]
        );
    }
}
