//! KCOV remote coverage of `rust_evnotify` (`Documentation/dev-tools/kcov.rst`), for
//! `make coverage` and the guided fuzzer.
//!
//! A [`Collector`] registers a KCOV *common handle* (`KCOV_REMOTE_ENABLE`); every task forked
//! after that inherits the handle. The module records its kernel threads' work in remote
//! sections under the handle of the task that started them, and, loaded with
//! `kcov_syscalls=1`, its file operations under the caller's: so everything a command and its
//! descendants make the module run lands in the collector's buffer. [`Collector::drain`]
//! empties it without losing a record written meanwhile, and [`Module`] turns the PCs into
//! section offsets of the `.ko`.

use anyhow::{Context, Result};
use std::{
    collections::BTreeSet,
    fs,
    os::fd::{AsRawFd, OwnedFd},
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

/// `KCOV_SUBSYSTEM_COMMON` handle, instance "evny": the one the module's KUnit cases record
/// under (`kcov.rs`: `KUNIT_HANDLE`). The whole-suite collector registers it.
pub const KUNIT_HANDLE: u64 = 0x6576_6e79;

/// `struct kcov_remote_arg` with no uncommon handles (`include/uapi/linux/kcov.h`).
#[repr(C)]
struct RemoteArg {
    trace_mode: u32,
    area_size: u32,
    num_handles: u32,
    common_handle: u64,
}

const KCOV_TRACE_PC: u32 = 0;
const KCOV_INIT_TRACE: libc::c_ulong =
    nix::request_code_read!(b'c', 1, std::mem::size_of::<libc::c_ulong>()) as _;
const KCOV_ENABLE: libc::c_ulong = nix::request_code_none!(b'c', 100) as _;
const KCOV_REMOTE_ENABLE: libc::c_ulong =
    nix::request_code_write!(b'c', 102, std::mem::size_of::<RemoteArg>()) as _;

/// `ioctl(fd, req, arg)` on the kcov file, its error in words.
fn kcov_ioctl(fd: &OwnedFd, req: libc::c_ulong, arg: usize, what: &str) -> Result<()> {
    // SAFETY: Every request here takes an integer or a pointer to a live `RemoteArg`.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), req as _, arg) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("{PATH}: {what}"));
    }
    Ok(())
}

const PATH: &str = "/sys/kernel/debug/kcov";

/// A KCOV buffer: the calling thread's own coverage ([`Collector::local`]), or remote coverage
/// under a common handle ([`Collector::remote`]).
pub struct Collector {
    _fd: OwnedFd,
    /// `words` 64-bit words, mapped shared: word 0 is the count of PCs after it.
    area: NonNull<AtomicU64>,
    words: usize,
}

// SAFETY: The mapping is shared memory accessed only through atomics.
unsafe impl Send for Collector {}

impl Collector {
    /// A kcov file with a buffer of `words` PCs, mapped.
    fn buffer(words: usize) -> Result<Self> {
        let fd: OwnedFd = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(PATH)
            .with_context(|| format!("{PATH}: open (a kernel with CONFIG_KCOV, debugfs mounted)"))?
            .into();
        kcov_ioctl(&fd, KCOV_INIT_TRACE, words, "KCOV_INIT_TRACE")?;
        // SAFETY: A shared mapping of the size KCOV_INIT_TRACE set, at offset 0.
        let area = unsafe {
            nix::sys::mman::mmap(
                None,
                std::num::NonZeroUsize::new(words * 8).context("an empty buffer")?,
                nix::sys::mman::ProtFlags::PROT_READ | nix::sys::mman::ProtFlags::PROT_WRITE,
                nix::sys::mman::MapFlags::MAP_SHARED,
                &fd,
                0,
            )
        }
        .with_context(|| format!("{PATH}: mmap"))?;
        Ok(Self {
            _fd: fd,
            area: area.cast(),
            words,
        })
    }

    /// Registers `handle` (`KCOV_SUBSYSTEM_COMMON`, non-zero) for the calling thread: tasks it
    /// forks or spawns from now on inherit it. `words` is the buffer's size in PCs; each remote
    /// section may record up to `section_words` before it ends.
    pub fn remote(handle: u64, words: usize, section_words: u32) -> Result<Self> {
        let c = Self::buffer(words)?;
        let arg = RemoteArg {
            trace_mode: KCOV_TRACE_PC,
            area_size: section_words,
            num_handles: 0,
            common_handle: handle,
        };
        let what =
            format!("KCOV_REMOTE_ENABLE handle {handle:#x} (EEXIST: another collector has it)");
        kcov_ioctl(
            &c._fd,
            KCOV_REMOTE_ENABLE,
            &arg as *const RemoteArg as usize,
            &what,
        )?;
        Ok(c)
    }

    /// Records what the calling thread makes the kernel run, from now until it exits
    /// (`KCOV_ENABLE`): its system calls, and the callbacks they run, in any subsystem. The
    /// module must then be loaded with `kcov_syscalls=0` (a section in a task with KCOV of its
    /// own makes kcov WARN).
    pub fn local(words: usize) -> Result<Self> {
        let c = Self::buffer(words)?;
        kcov_ioctl(&c._fd, KCOV_ENABLE, KCOV_TRACE_PC as usize, "KCOV_ENABLE")?;
        Ok(c)
    }

    fn word(&self, i: usize) -> &AtomicU64 {
        // SAFETY: `i < words` (callers check), within the live mapping.
        unsafe { &*self.area.as_ptr().add(i) }
    }

    /// Moves every PC recorded so far into `pcs` and empties the buffer. Lossless against the
    /// kernel appending meanwhile: it appends a section under its lock by reading the count,
    /// copying after it, then storing the new count; the count is reset only if it is still
    /// what was read (else the new records are read too, on the next round). A reset between
    /// the kernel's read and store is overwritten by its store, and the records before it are
    /// read again: duplicates, which a set absorbs.
    pub fn drain(&self, pcs: &mut BTreeSet<u64>) {
        loop {
            let n = (self.word(0).load(Ordering::Acquire) as usize).min(self.words - 1);
            if n == 0 {
                return;
            }
            pcs.extend((1..=n).map(|i| self.word(i).load(Ordering::Relaxed)));
            if self
                .word(0)
                .compare_exchange(n as u64, 0, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return;
            }
        }
    }

    /// Whether the buffer filled up (records after that were dropped by the kernel).
    pub fn full(&self) -> bool {
        self.word(0).load(Ordering::Acquire) as usize >= self.words - 1
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        // SAFETY: The mapping made in `remote`, unused from here on.
        let _ = unsafe { nix::sys::mman::munmap(self.area.cast(), self.words * 8) };
    }
}

/// A loaded module's code sections, from `/sys/module/<name>`.
#[derive(PartialEq, Eq)]
pub struct Module {
    /// (base address, section name), by address.
    sections: Vec<(u64, String)>,
    /// The lowest base and the end of the module's core (text and data): PCs in between are
    /// this load's.
    span: (u64, u64),
}

impl Module {
    /// The code sections (`.text*`) of loaded module `name`; `None` when it is not loaded, or
    /// went away while being read (tests unload and load it again).
    pub fn loaded(name: &str) -> Option<Self> {
        let dir = format!("/sys/module/{name}");
        let hex = |s: String| u64::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok();
        let mut sections = Vec::new();
        for e in fs::read_dir(format!("{dir}/sections")).ok()? {
            let e = e.ok()?;
            let sec = e.file_name().to_string_lossy().into_owned();
            if sec.starts_with(".text") {
                // 0 when the reader may not see addresses (not root).
                let base = hex(fs::read_to_string(e.path()).ok()?)?;
                sections.push((base, sec));
            }
        }
        let size: u64 = fs::read_to_string(format!("{dir}/coresize"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        sections.sort();
        let start = sections.first().filter(|(b, _)| *b != 0)?.0;
        Some(Self {
            span: (start, start + size),
            sections,
        })
    }

    /// `pc` as (section, offset), if it lies in this load of the module (after a code
    /// section's base). The report checks each offset against the points of the `.ko`.
    pub fn locate(&self, pc: u64) -> Option<(&str, u64)> {
        if pc < self.span.0 || pc >= self.span.1 {
            return None;
        }
        let i = self.sections.partition_point(|(b, _)| *b <= pc);
        let (base, name) = self.sections.get(i.checked_sub(1)?)?;
        Some((name, pc - base))
    }
}

/// Turns PCs into "SECTION OFFSET" points across reloads of the module: each batch of PCs is
/// placed in the load that was there when it was drained, or in the one before (PCs recorded
/// before an unload, drained after the next load). A PC that both or neither contain is
/// counted as unplaced, never guessed.
#[derive(Default)]
pub struct Placer {
    name: String,
    now: Option<Module>,
    before: Option<Module>,
    /// Every point reached, as "SECTION 0xOFFSET".
    pub points: BTreeSet<String>,
    /// PCs that could not be placed.
    pub unplaced: u64,
}

impl Placer {
    /// A placer for module `name`.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// Places a batch just drained.
    pub fn place(&mut self, pcs: &BTreeSet<u64>) {
        let m = Module::loaded(&self.name);
        if m.is_some() && m != self.now {
            self.before = std::mem::replace(&mut self.now, m);
        }
        for &pc in pcs {
            let a = self.now.as_ref().and_then(|m| m.locate(pc));
            let b = self.before.as_ref().and_then(|m| m.locate(pc));
            match (a, b) {
                (Some((s, off)), None) | (None, Some((s, off))) => {
                    self.points.insert(format!("{s} {off:#x}"));
                }
                _ => self.unplaced += 1,
            }
        }
    }
}
