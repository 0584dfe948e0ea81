//! The `evnotify` binary on the host, where there is no device: usage errors come before any
//! device access, device errors name the device, the operation and a hint, `stat --json` is
//! JSON, and the install script installs the command with its manual pages.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

const EXE: &str = env!("CARGO_BIN_EXE_evnotify");
const MISSING: &str = "/nonexistent/evnotify";

fn run(args: &[&str]) -> Output {
    Command::new(EXE).args(args).output().expect("run evnotify")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn bad_values_are_usage_errors_before_the_device_is_opened() {
    for (args, range) in [
        (&["timer", "--period", "999us"][..], "1ms..=1day"),
        (&["timer", "--period", "25h"], "1ms..=1day"),
        (&["watch", "--timer", "0s"], "1ms..=1day"),
        (&["watch", "--kick-every", "0s"], "1ms..=1day"),
        (&["watch", "--kick-every", "1ns"], "1ms..=1day"),
        (&["watch", "--kick-every", "999us"], "1ms..=1day"),
        (
            &["watch", "--kick-every", "18446744073709551615s"],
            "1ms..=1day",
        ),
        (
            &["watch", "--duration", "18446744073709551615s"],
            "0s..=1day",
        ),
        (
            &["signal", "--signo", "RTMIN+2147483647"],
            "not a signal this command can catch",
        ),
        (&["signal", "--signo", "RTMIN+-3"], "unknown signal"),
        (&["--busypoll", "1001us", "info"], "0s..=1ms"),
        (&["ping", "--slot", "64"], "0..64"),
        (&["timer", "--slot", "64"], "0..64"),
        (&["signal", "--slot", "64"], "0..64"),
        (&["ping", "--burst", "0"], "1..=1048576"),
        (&["ping", "--burst", "1048577"], "1..=1048576"),
        (&["ping", "-n", "0"], "1..=4294967295"),
        (&["signal", "-n", "1048577"], "1..=1048576"),
        (&["signal", "--signo", "65"], "1..=64"),
        (
            &["signal", "--signo", "SIGKILL"],
            "except SIGKILL (9), SIGSTOP (19)",
        ),
    ] {
        let mut all = vec!["--device", MISSING];
        all.extend_from_slice(args);
        let o = run(&all);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("invalid value"), "{args:?}: {err}");
        assert!(err.contains(range), "{args:?}: {err:?} lacks {range:?}");
        assert!(
            !err.contains(MISSING) && !err.contains("hint:"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn a_missing_device_says_to_load_the_module() {
    let o = run(&["--device", MISSING, "ping"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with(&format!(
            "evnotify: {MISSING}: open: No such file or directory\n"
        )),
        "{err}"
    );
    if Path::new("/sys/module/rust_evnotify").exists() {
        assert!(
            err.contains("hint: the module rust_evnotify is loaded"),
            "{err}"
        );
    } else {
        assert!(err.contains("hint: is the module loaded?"), "{err}");
        assert!(err.contains("insmod rust_evnotify.ko"), "{err}");
    }
}

#[test]
fn a_device_that_is_not_evnotify_gives_enotty_and_its_hint() {
    let o = run(&["--device", "/dev/null", "info"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with(
            "evnotify: /dev/null: ioctl EVNOTIFY_IOC_VERSION: Inappropriate ioctl for device\n"
        ),
        "{err}"
    );
    assert!(err.contains("hint: /dev/null does not answer evnotify's ioctls"));
    assert!(err.contains("API version"), "{err}");
}

/// `evnotify ARGS` with descriptors 0, 1 and 2 only (make, for one, passes its jobserver's
/// on) and at most `nofile` open.
fn run_with_nofile(args: &[&str], nofile: u64) -> Output {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(EXE);
    cmd.args(args);
    // SAFETY: close_range and setrlimit are plain syscalls, async-signal-safe as pre_exec
    // requires. close_range only marks the child's descriptors close-on-exec, so the one std
    // reports exec errors through still works.
    unsafe {
        cmd.pre_exec(move || {
            let cloexec = libc::CLOSE_RANGE_CLOEXEC;
            if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, cloexec) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let lim = libc::rlimit {
                rlim_cur: nofile,
                rlim_max: nofile,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.output().expect("run evnotify")
}

/// The device (here /dev/null) opens as descriptor 3; the eventfd would be the fifth.
#[test]
fn an_eventfd_past_the_open_file_limit_names_the_slot_and_the_limit() {
    for (cmd, slot) in [("ping", "--slot=7"), ("timer", "--slot=7")] {
        let o = run_with_nofile(&["--device", "/dev/null", cmd, slot], 4);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{cmd}: {err}");
        assert!(
            err.starts_with(
                "evnotify: /dev/null: eventfd(2) for slot 7 (notify): Too many open files\n"
            ),
            "{cmd}: {err}"
        );
        assert!(err.contains("hint: this process hit its open-file limit (`ulimit -n`"));
    }
}

/// A character device no process here holds: `stat` needs a device node to look for, and
/// finds no channel behind this one.
const STAND_IN: &str = "/dev/full";

#[test]
fn stat_of_a_path_that_is_no_device_is_an_error() {
    let o = run(&["stat", "--device", MISSING]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        o.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(
        err.starts_with(&format!(
            "evnotify: {MISSING}: look up the device node: No such file or directory\n"
        )),
        "{err}"
    );
    assert!(err.contains("hint: "), "{err}");
    let o = run(&["stat", "--json", "--device", "/etc/passwd"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with("evnotify: /etc/passwd: not a character device\n"),
        "{err}"
    );
    assert!(err.contains("hint: stat lists the descriptors"), "{err}");
}

#[test]
fn stat_json_is_json_and_needs_no_channel() {
    // No module on the host: no channels, and no access to the device needed to look.
    let o = run(&["--device", STAND_IN, "stat", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("stat --json");
    assert!(v["channels"].as_array().is_some(), "{v}");
    assert!(v["processes"].as_u64().unwrap() > 0, "{v}");
    for key in ["unreadable", "vanished"] {
        assert!(v[key].is_u64(), "{key}: {v}");
    }
    // Compact (one line) and versioned; -j before the command; --pretty indents.
    assert_eq!(v["schema_version"], 1, "{v}");
    let o = run(&["-j", "--device", STAND_IN, "stat"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(o.stdout.iter().filter(|&&b| b == b'\n').count(), 1);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("-j stat");
    assert_eq!(v["schema_version"], 1, "{v}");
    let o = run(&["stat", "--pretty", "--device", STAND_IN]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(o.stdout.iter().filter(|&&b| b == b'\n').count() > 3);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("stat --pretty");
    assert_eq!(v["schema_version"], 1, "{v}");
    // The alias, the table and the summary line.
    let o = run(&["list", "--device", STAND_IN]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", stderr(&o));
    // COMM, which may hold spaces, comes last, as in ps.
    let header = out.lines().next().unwrap_or_default();
    assert!(
        header.starts_with("    PID    UID   FD  THREAD WORKER SERVES NOTIFY "),
        "{out}"
    );
    assert!(header.ends_with(" DROPPED COMM"), "{out}");
    assert!(out.contains(" process(es) scanned"), "{out}");
}

/// Every command takes -j/--json, before or after it (here each fails at the device, after
/// the parse).
#[test]
fn every_command_takes_json() {
    for cmd in ["info", "ping", "timer", "signal", "watch"] {
        for args in [["-j", cmd], [cmd, "--json"]] {
            let mut all = vec!["--device", MISSING];
            all.extend_from_slice(&args);
            let o = run(&all);
            assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
            assert!(stderr(&o).contains(": open: "), "{args:?}: {}", stderr(&o));
        }
    }
}

#[test]
fn busypoll_with_stat_is_a_usage_error() {
    let o = run(&["--busypoll", "0", "stat"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("stat opens no channel"));
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("evnotify-cli-it-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn install_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/install-user.sh")
}

#[test]
fn install_script_installs_the_command_and_its_manual_pages() {
    let dest = temp_dir("install");
    let o = Command::new(install_script())
        .env("EVNOTIFY_BIN", EXE)
        .env("DESTDIR", &dest)
        .env("PREFIX", "/usr")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let bin = dest.join("usr/bin/evnotify");
    let v = Command::new(&bin).arg("--version").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&v.stdout).trim(),
        "evnotify 0.1.0 (API version 10)"
    );
    let man = dest.join("usr/share/man/man1");
    let page = std::fs::read_to_string(man.join("evnotify.1")).unwrap();
    for cmd in ["info", "stat", "ping", "timer", "signal", "watch"] {
        assert!(page.contains(&format!("evnotify\\-{cmd}(1)")), "{cmd}");
        assert!(man.join(format!("evnotify-{cmd}.1")).is_file(), "{cmd}");
    }
    // The completions, where bash-completion, zsh and fish look for them, complete the
    // commands (and not the hidden ones).
    for (path, mark) in [
        (
            "usr/share/bash-completion/completions/evnotify",
            "complete -F",
        ),
        (
            "usr/share/zsh/site-functions/_evnotify",
            "#compdef evnotify",
        ),
        (
            "usr/share/fish/vendor_completions.d/evnotify.fish",
            "complete -c evnotify",
        ),
    ] {
        let text = std::fs::read_to_string(dest.join(path)).unwrap_or_default();
        assert!(text.contains(mark), "{path}: no {mark:?}");
        assert!(
            text.contains("timer") && text.contains("kick-every"),
            "{path}"
        );
        assert!(
            !text.contains("manpage"),
            "{path}: lists the hidden command"
        );
    }
    std::fs::remove_dir_all(&dest).unwrap();
    // A failure stops it: a binary that cannot write the pages installs nothing.
    let o = Command::new(install_script())
        .env("EVNOTIFY_BIN", "/bin/false")
        .env("DESTDIR", &dest)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(!dest.exists(), "installed something after a failure");
}

/// Without EVNOTIFY_BIN the script builds the command, and installs the binary that build
/// made, wherever cargo's target directory is: here a new one, so the binary is fresh. The
/// RUSTFLAGS make it differ from any binary built before in the usual target directory.
#[test]
fn install_script_installs_what_it_has_just_built() {
    let (dest, target) = (temp_dir("install-built"), temp_dir("install-target"));
    let o = Command::new(install_script())
        .env_remove("EVNOTIFY_BIN")
        .env("CARGO_TARGET_DIR", &target)
        .env("RUSTFLAGS", "-Cmetadata=evnotify-install-test")
        .env("DESTDIR", &dest)
        .env("PREFIX", "/usr")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let installed = std::fs::read(dest.join("usr/bin/evnotify")).unwrap();
    let built = std::fs::read(target.join("release/evnotify")).unwrap();
    assert!(installed == built, "not the binary just built");
    assert!(dest.join("usr/share/man/man1/evnotify-stat.1").is_file());
    std::fs::remove_dir_all(&dest).unwrap();
    std::fs::remove_dir_all(&target).unwrap();
}

/// `evnotify stat | head -0`: a reader that is gone ends the command as it ends other filters
/// (SIGPIPE), not with a panic from `println!`. The pipe's read end is closed before it starts.
#[test]
fn a_closed_pipe_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let (read, write) = nix::unistd::pipe().expect("pipe");
    drop(read);
    let o = Command::new(EXE)
        .args(["stat", "--device", STAND_IN])
        .stdout(std::process::Stdio::from(write))
        .output()
        .expect("run evnotify");
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    assert_eq!(o.status.signal(), Some(libc::SIGPIPE), "{:?}", o.status);
}
