//! `EVNOTIFY_KCOV_DIR=DIR` (`make coverage`): each test records what its own calls make the
//! module run, with KCOV on the thread that runs it (`KCOV_ENABLE`), and writes the points
//! reached to `DIR/<test>.points`; a child that one of the suite's fork helpers runs, or a
//! helper thread that asks for it, records its own to `DIR/<test>.<tid>.points` ([`recorded`]).
//! Other helper threads, and a child killed before it ends, are not recorded; the module's
//! threads are, by `evnotify-kcov run`.

use anyhow::{Context, Result};
use evnotify_kcov::{Collector, Placer};
use std::{collections::BTreeSet, fs::File, io::Write, path::PathBuf, sync::OnceLock};

/// A test's recording, or one of its children's.
pub struct Recording {
    name: String,
    kcov: Collector,
    placer: Placer,
    out: File,
}

/// The test this process runs (each runs in a process of its own), once it records.
static TEST: OnceLock<String> = OnceLock::new();

/// Starts recording the calling thread for test `name`, if `EVNOTIFY_KCOV_DIR` asks for it.
pub fn start(name: &str) -> Option<Result<Recording>> {
    let _ = TEST.set(name.into());
    record(name.into(), 1 << 21)
}

/// Records the calling thread into `DIR/<name>.points`, with a buffer of `words` PCs. The
/// file is created now: a child that gives up root later can still write it.
fn record(name: String, words: usize) -> Option<Result<Recording>> {
    let dir = std::env::var_os("EVNOTIFY_KCOV_DIR")?;
    Some((|| {
        let ko =
            std::env::var("EVNOTIFY_KO").unwrap_or_else(|_| "/lib/modules/rust_evnotify.ko".into());
        let mut placer = Placer::new("rust_evnotify", ko.as_ref())?;
        // Where the module is now, for PCs of a load that a reload in the test replaces.
        placer.place(&BTreeSet::new());
        let path = PathBuf::from(dir).join(format!("{name}.points"));
        Ok(Recording {
            out: File::create(&path).with_context(|| format!("{}", path.display()))?,
            name,
            kcov: Collector::local(words)?,
            placer,
        })
    })())
}

/// Runs `f`, a forked child's or a helper thread's work, recorded as the test's (if the test
/// records): a failure to record is printed, and leaves `f`'s result alone (the figures can
/// only be short).
pub fn recorded<T>(f: impl FnOnce() -> T) -> T {
    let name = TEST.get().map(|t| format!("{t}.{}", nix::unistd::gettid()));
    let rec = name.and_then(|n| record(n, 1 << 18)).transpose();
    let r = f();
    if let Err(e) = rec.and_then(|rec| rec.map(Recording::finish).transpose()) {
        println!("# kcov of a child: {e:#}");
    }
    r
}

impl Recording {
    /// Writes the points the test reached.
    pub fn finish(mut self) -> Result<()> {
        let full = self.kcov.full();
        let mut pcs = BTreeSet::new();
        self.kcov.drain(&mut pcs);
        self.placer.place(&pcs);
        let f = &mut self.out;
        writeln!(
            f,
            "# {}: buffer full: {full}; distinct PCs {}; unplaced {}",
            self.name,
            pcs.len(),
            self.placer.unplaced
        )?;
        for p in &self.placer.points {
            writeln!(f, "{p}")?;
        }
        Ok(())
    }
}
