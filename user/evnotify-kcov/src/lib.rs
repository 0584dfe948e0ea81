//! KCOV coverage of `rust_evnotify` (`Documentation/dev-tools/kcov.rst`), for
//! `make coverage` and the guided fuzzer.
//!
//! A remote [`Collector`] registers a KCOV *common handle* (`KCOV_REMOTE_ENABLE`); every task
//! forked after that inherits the handle, and the module records its kernel threads' work in
//! remote sections under the handle of the task that caused it (a channel's opener, a
//! thread's starter). A local one records the calling thread's own calls (`KCOV_ENABLE`).
//! [`Collector::drain`] empties a buffer without losing a record written meanwhile, and
//! [`Placer`] turns the PCs into section offsets of the `.ko`, across reloads of the module.

use anyhow::{ensure, Context, Result};
use std::{
    collections::BTreeSet,
    fs,
    os::fd::{AsRawFd, OwnedFd},
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

/// `KCOV_SUBSYSTEM_COMMON` handle, instance "evny": `evnotify-kcov run`'s.
pub const SUITE_HANDLE: u64 = 0x6576_6e79;

/// `struct kcov_remote_arg` with no uncommon handles (`include/uapi/linux/kcov.h`): its
/// `common_handle` is an `__aligned_u64`, at offset 16 on every architecture.
#[repr(C)]
struct RemoteArg {
    trace_mode: u32,
    area_size: u32,
    num_handles: u32,
    _pad: u32,
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
            _pad: 0,
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
    /// (`KCOV_ENABLE`): its system calls, and the callbacks they run, in any subsystem.
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
            // The kernel never stores a count past the buffer; user space could (the word is
            // writable), so read no further than the buffer, and reset what was read.
            let raw = self.word(0).load(Ordering::Acquire);
            if raw == 0 {
                return;
            }
            let n = raw.min(self.words as u64 - 1) as usize;
            pcs.extend((1..=n).map(|i| self.word(i).load(Ordering::Relaxed)));
            if self
                .word(0)
                .compare_exchange(raw, 0, Ordering::AcqRel, Ordering::Acquire)
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

/// A loaded module's code sections, from `/sys/module/<name>/sections`, with their sizes
/// from its `.ko`.
#[derive(PartialEq, Eq)]
pub struct Module {
    /// (base address, end, section name), by address.
    sections: Vec<(u64, u64, String)>,
}

/// The sizes of the `.text*` sections of an ELF64 little-endian relocatable object (a `.ko`),
/// by name.
pub fn text_sizes(ko: &[u8]) -> Result<Vec<(String, u64)>> {
    let u16_at = |o: usize| -> Result<u64> {
        Ok(u16::from_le_bytes(ko.get(o..o + 2).context("short ELF")?.try_into()?).into())
    };
    let u32_at = |o: usize| -> Result<u64> {
        Ok(u32::from_le_bytes(ko.get(o..o + 4).context("short ELF")?.try_into()?).into())
    };
    let u64_at = |o: usize| -> Result<u64> {
        Ok(u64::from_le_bytes(
            ko.get(o..o + 8).context("short ELF")?.try_into()?,
        ))
    };
    ensure!(
        ko.get(..6) == Some(b"\x7fELF\x02\x01"),
        "not an ELF64 little-endian file"
    );
    let (shoff, shentsize, shnum, shstrndx) = (
        u64_at(0x28)? as usize,
        u16_at(0x3a)? as usize,
        u16_at(0x3c)? as usize,
        u16_at(0x3e)? as usize,
    );
    let sh = |i: usize| shoff + i * shentsize;
    let strtab = u64_at(sh(shstrndx) + 0x18)? as usize;
    let mut out = vec![];
    for i in 0..shnum {
        let name_at = strtab + u32_at(sh(i))? as usize;
        let name = ko.get(name_at..).context("bad section name")?;
        let name = String::from_utf8_lossy(&name[..name.iter().position(|&b| b == 0).unwrap_or(0)]);
        if name.starts_with(".text") {
            out.push((name.into_owned(), u64_at(sh(i) + 0x20)?));
        }
    }
    Ok(out)
}

impl Module {
    /// The code sections of loaded module `name`, sized by `sizes` ([`text_sizes`] of its
    /// `.ko`); `None` when it is not loaded, or went away while being read (tests unload and
    /// load it again).
    pub fn loaded(name: &str, sizes: &[(String, u64)]) -> Option<Self> {
        let dir = format!("/sys/module/{name}/sections");
        let mut sections = Vec::new();
        for (sec, size) in sizes {
            let s = fs::read_to_string(format!("{dir}/{sec}")).ok()?;
            // 0 when the reader may not see addresses (not root).
            let base = u64::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok()?;
            (base != 0).then_some(())?;
            sections.push((base, base + size, sec.clone()));
        }
        sections.sort();
        (!sections.is_empty()).then_some(Self { sections })
    }

    /// `pc` as (section, offset), if it lies in one of this load's code sections. (KCOV
    /// records the return address of a call, which is never a section's end.)
    pub fn locate(&self, pc: u64) -> Option<(&str, u64)> {
        let (base, _, name) = self
            .sections
            .iter()
            .find(|(b, e, _)| (*b..*e).contains(&pc))?;
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
    sizes: Vec<(String, u64)>,
    now: Option<Module>,
    before: Option<Module>,
    /// Every point reached, as "SECTION 0xOFFSET".
    pub points: BTreeSet<String>,
    /// PCs that could not be placed.
    pub unplaced: u64,
}

impl Placer {
    /// A placer for module `name`, built as `ko` (its `.ko` file).
    pub fn new(name: &str, ko: &std::path::Path) -> Result<Self> {
        let bytes = fs::read(ko).with_context(|| format!("{}", ko.display()))?;
        Ok(Self {
            name: name.into(),
            sizes: text_sizes(&bytes).with_context(|| format!("{}", ko.display()))?,
            ..Self::default()
        })
    }

    /// Places a batch just drained.
    pub fn place(&mut self, pcs: &BTreeSet<u64>) {
        let m = Module::loaded(&self.name, &self.sizes);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_sizes_of_an_elf() {
        let exe = fs::read("/proc/self/exe").expect("this test's own executable");
        let sizes = text_sizes(&exe).expect("an ELF64 little-endian file");
        assert!(
            sizes.iter().any(|(n, s)| n == ".text" && *s > 0),
            "{sizes:?}"
        );
        assert!(text_sizes(b"\x7fELF\x01\x01").is_err());
    }

    #[test]
    fn a_module_places_only_its_own_text() {
        let m = Module {
            sections: vec![
                (0x1000, 0x1800, ".text".into()),
                (0x4000, 0x4100, ".text.unlikely".into()),
            ],
        };
        assert_eq!(m.locate(0x1005), Some((".text", 5)));
        assert_eq!(m.locate(0x4000), Some((".text.unlikely", 0)));
        assert_eq!(m.locate(0x1800), None);
        assert_eq!(m.locate(0x0fff), None);
    }
}
