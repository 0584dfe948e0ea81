//! `evnotify-kcov run --out FILE -- CMD [ARGS...]`: runs CMD under a KCOV collector (see the
//! library) and writes the points of `rust_evnotify` it reached to FILE, one
//! "SECTION 0xOFFSET" per line after a "# " header of figures. Exits with CMD's status (128 +
//! the signal that killed it).
//! Runs in the coverage VM (`make coverage`), as root.

use anyhow::{Context, Result};
use clap::Parser;
use evnotify_kcov::{Collector, Placer, SUITE_HANDLE};
use std::{collections::BTreeSet, io::Write, process::Command, thread, time::Duration};

#[derive(Parser)]
#[command(about)]
enum Cli {
    /// Runs CMD, collecting what it makes the module run.
    Run {
        /// Where to write the points reached.
        #[arg(long)]
        out: std::path::PathBuf,
        /// The common handle to register (KCOV_SUBSYSTEM_COMMON: below 2^32, non-zero); the
        /// default is "evny".
        #[arg(long, default_value_t = SUITE_HANDLE, value_parser = handle)]
        handle: u64,
        /// The module's .ko file, for the sizes of its code sections.
        #[arg(long, default_value = "/lib/modules/rust_evnotify.ko")]
        ko: std::path::PathBuf,
        /// The command and its arguments.
        #[arg(required = true, last = true)]
        cmd: Vec<String>,
    },
}

fn handle(s: &str) -> Result<u64, String> {
    let v = match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    }
    .map_err(|e| format!("{s:?}: {e}"))?;
    if v == 0 || v > u32::MAX as u64 {
        return Err(format!("{s}: a common handle is 1 ..= 0xffffffff"));
    }
    Ok(v)
}

/// PCs the buffer holds between drains (8 MiB), and the most one section records (2 MiB).
const WORDS: usize = 1 << 20;
const SECTION_WORDS: u32 = 1 << 18;

fn main() -> Result<()> {
    let Cli::Run {
        out,
        handle,
        ko,
        cmd,
    } = Cli::parse();
    let kcov = Collector::remote(handle, WORDS, SECTION_WORDS)?;
    let mut placer = Placer::new("rust_evnotify", &ko)?;
    let mut child = Command::new(&cmd[0])
        .args(&cmd[1..])
        .spawn()
        .with_context(|| format!("evnotify-kcov: cannot run {:?}", cmd[0]))?;
    let (mut drains, mut full, mut pcs_seen) = (0u64, 0u64, 0u64);
    let mut drain = |placer: &mut Placer| -> Result<()> {
        let mut pcs = BTreeSet::new();
        full += kcov.full() as u64;
        kcov.drain(&mut pcs);
        drains += 1;
        pcs_seen += pcs.len() as u64;
        placer.place(&pcs);
        Ok(())
    };
    let status = loop {
        drain(&mut placer)?;
        if let Some(st) = child.try_wait()? {
            break st;
        }
        thread::sleep(Duration::from_millis(10));
    };
    // Threads that CMD's channels started end their last section as they stop.
    for _ in 0..50 {
        thread::sleep(Duration::from_millis(10));
        drain(&mut placer)?;
    }
    let mut f = std::fs::File::create(&out).with_context(|| format!("{}", out.display()))?;
    writeln!(
        f,
        "# handle {handle:#x}; drains {drains}; buffer full at {full} drains; distinct PCs per drain summed {pcs_seen}; unplaced {}; points {}",
        placer.unplaced,
        placer.points.len()
    )?;
    for p in &placer.points {
        writeln!(f, "{p}")?;
    }
    eprintln!(
        "evnotify-kcov: {} points of rust_evnotify reached ({} PCs unplaced, buffer full at {full} of {drains} drains) -> {}",
        placer.points.len(),
        placer.unplaced,
        out.display()
    );
    use std::os::unix::process::ExitStatusExt;
    std::process::exit(status.code().unwrap_or(128 + status.signal().unwrap_or(0)));
}
