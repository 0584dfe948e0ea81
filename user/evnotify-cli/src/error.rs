//! Device errors that name the device and the operation, with a hint where the cause is
//! usually outside this program.

use std::{fmt, io, path::Path};

/// How the module's parameters are set, for the hints: only when it is loaded (Rust modules'
/// parameters do not appear in /sys/module).
pub const PARAMS: &str = "they are set when the module is loaded: \
    insmod rust_evnotify.ko max_channels=N max_user_channels=N";

/// The operation of `stat`, which opens no channel but looks the device node up: its errors
/// get the same hints as `open`'s.
pub const LOOKUP: &str = "look up the device node";

/// A failed operation on the device: "`path`: `op`: `error`".
#[derive(Debug)]
pub struct DevError {
    pub path: String,
    pub op: String,
    pub err: io::Error,
}

impl DevError {
    /// Wraps any error the library returns (nix's `Errno` or `io::Error`).
    pub fn new(path: &str, op: impl Into<String>, err: impl Into<io::Error>) -> Self {
        Self {
            path: path.to_owned(),
            op: op.into(),
            err: err.into(),
        }
    }

    pub fn errno(&self) -> Option<i32> {
        self.err.raw_os_error()
    }

    /// What to check next, for the errors whose cause is usually outside this program.
    pub fn hint(&self) -> Option<String> {
        let path = &self.path;
        let op = match self.op.as_str() {
            LOOKUP => "open",
            op => op,
        };
        let hint = match (self.errno()?, op) {
            (libc::ENOENT, "open") if Path::new("/sys/module/rust_evnotify").exists() => format!(
                "the module rust_evnotify is loaded, but there is no {path}: check --device, \
                 and that devtmpfs or udev created the node (`ls -l /dev/evnotify`)"
            ),
            (libc::ENOENT, "open") => "is the module loaded? Load it with \
                 `insmod rust_evnotify.ko` (from the build tree) or `modprobe rust_evnotify`; \
                 `lsmod | grep rust_evnotify` shows it"
                .to_owned(),
            (libc::EACCES | libc::EPERM, "open") if self.op == LOOKUP => format!(
                "permission denied on a directory of {path}: stat needs to look the node up \
                 (not to open it); check the directories' modes"
            ),
            (libc::EACCES | libc::EPERM, "open") => format!(
                "permission denied: {path} is root's with mode 0600 unless a udev rule says \
                 otherwise (`ls -l {path}`); to let a group use it, add \
                 KERNEL==\"evnotify\", GROUP=\"evnotify\", MODE=\"0660\" to \
                 /etc/udev/rules.d/60-evnotify.rules (see the README's Security section)"
            ),
            (libc::EMFILE, "open") => format!(
                "too many channels: the module allows `max_channels` open in all and \
                 `max_user_channels` per user ({PARAMS}); or this process hit its \
                 open-file limit (`ulimit -n`)"
            ),
            (libc::EMFILE, op) if op.starts_with("eventfd") || op.starts_with("signalfd") => {
                "this process hit its open-file limit (`ulimit -n`, RLIMIT_NOFILE): raise it, \
                 or close descriptors"
                    .to_owned()
            }
            (libc::EAGAIN, op) if op.contains("kick eventfd") => format!(
                "the kick eventfd's counter is full: the channel's thread stopped taking kicks \
                 from it (it unhooks a kick eventfd when it is closed or replaced). \
                 `evnotify stat -v --device {path}` shows the slot's kickfd (this process's \
                 channel, while it runs); if it still says attached, look for the module's \
                 warnings in `dmesg`"
            ),
            (_, op)
                if op.starts_with("read(2)")
                    || op.starts_with("write(2)")
                    || op.starts_with("ppoll(2)") =>
            {
                "a read, write or poll of this program's own eventfds or signalfd should not \
                 fail: this is a bug in evnotify or in the kernel; please report it with this \
                 message"
                    .to_owned()
            }
            (libc::ENFILE, _) => "the system's open-file limit is reached \
                 (/proc/sys/fs/file-max): close files elsewhere"
                .to_owned(),
            (libc::ENOTTY, _) => format!(
                "{path} does not answer evnotify's ioctls: it is not /dev/evnotify, or the \
                 loaded module speaks another API version than this program (version {}); \
                 rebuild one of them",
                evnotify::sys::API_VERSION
            ),
            _ => return None,
        };
        Some(hint)
    }
}

impl fmt::Display for DevError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // strerror's text alone, as ls and cat print it, without std's " (os error N)".
        let text = self.err.to_string();
        let text = match self.errno() {
            Some(n) => text
                .strip_suffix(&format!(" (os error {n})"))
                .unwrap_or(&text),
            None => &text,
        };
        write!(f, "{}: {}: {text}", self.path, self.op)
    }
}

impl std::error::Error for DevError {}

/// A run that went wrong without a failed call (too few notifications or signals, a channel
/// that stays busy): what happened, on which device and slot, and what to check.
#[derive(Debug)]
pub struct Failure {
    pub what: String,
    pub hint: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.what)
    }
}

impl std::error::Error for Failure {}

/// The hint for `e`, if it is one of the two errors above.
pub fn hint(e: &anyhow::Error) -> Option<String> {
    if let Some(d) = e.downcast_ref::<DevError>() {
        return d.hint();
    }
    e.downcast_ref::<Failure>().map(|f| f.hint.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::errno::Errno;

    fn hint(errno: Errno, op: &str) -> String {
        DevError::new("/dev/evnotify", op, errno)
            .hint()
            .unwrap_or_default()
    }

    #[test]
    fn message_names_device_operation_and_error() {
        let e = DevError::new(
            "/dev/evnotify",
            "ioctl EVNOTIFY_IOC_TIMER (slot 3)",
            Errno::EINVAL,
        );
        assert_eq!(
            e.to_string(),
            "/dev/evnotify: ioctl EVNOTIFY_IOC_TIMER (slot 3): Invalid argument"
        );
        assert_eq!(e.hint(), None);
        let e = DevError::new("/dev/null", "ioctl EVNOTIFY_IOC_VERSION", Errno::ENOTTY);
        assert_eq!(
            e.to_string(),
            "/dev/null: ioctl EVNOTIFY_IOC_VERSION: Inappropriate ioctl for device"
        );
        let e = DevError::new("/x", "op", io::Error::other("custom"));
        assert_eq!(e.to_string(), "/x: op: custom");
    }

    #[test]
    fn hints_by_errno() {
        let loaded = Path::new("/sys/module/rust_evnotify").exists();
        let enoent = hint(Errno::ENOENT, "open");
        if loaded {
            assert!(enoent.contains("is loaded"), "{enoent}");
        } else {
            assert!(enoent.contains("insmod rust_evnotify.ko"), "{enoent}");
            assert!(enoent.contains("modprobe rust_evnotify"), "{enoent}");
        }
        assert!(hint(Errno::EACCES, "open").contains("udev"));
        let emfile = hint(Errno::EMFILE, "open");
        for word in ["max_channels", "max_user_channels", PARAMS, "ulimit -n"] {
            assert!(emfile.contains(word), "{emfile} lacks {word}");
        }
        assert!(hint(Errno::ENOTTY, "ioctl EVNOTIFY_IOC_VERSION").contains("API version"));
        // An eventfd's EMFILE is this process's limit, not the module's.
        let emfile = hint(Errno::EMFILE, "eventfd(2) for slot 3");
        assert!(emfile.contains("ulimit -n"), "{emfile}");
        assert!(!emfile.contains("max_channels"), "{emfile}");
        assert!(hint(Errno::ENFILE, "eventfd(2) for slot 3").contains("file-max"));
        // Only open's ENOENT is about the module; an ioctl's EINVAL has no hint.
        assert_eq!(hint(Errno::ENOENT, "read fdinfo"), "");
        assert_eq!(hint(Errno::EINVAL, "ioctl EVNOTIFY_IOC_KICK"), "");
    }
}
