//! `EVNOTIFY_KCOV_DIR=DIR` (`make coverage`): each test records what its own calls make the
//! module run, with KCOV on the thread that runs it (`KCOV_ENABLE`; helper threads and forked
//! children are not recorded, the module's threads are, by `evnotify-kcov run`), and writes the
//! points reached to `DIR/<test>.points`.

use anyhow::{Context, Result};
use evnotify_kcov::{Collector, Placer};
use std::{collections::BTreeSet, io::Write, path::PathBuf};

/// A test's recording.
pub struct Recording {
    name: String,
    kcov: Collector,
    placer: Placer,
    out: PathBuf,
}

/// Starts recording the calling thread for test `name`, if `EVNOTIFY_KCOV_DIR` asks for it.
pub fn start(name: &str) -> Option<Result<Recording>> {
    let dir = std::env::var_os("EVNOTIFY_KCOV_DIR")?;
    Some((|| {
        let ko =
            std::env::var("EVNOTIFY_KO").unwrap_or_else(|_| "/lib/modules/rust_evnotify.ko".into());
        let mut placer = Placer::new("rust_evnotify", ko.as_ref())?;
        // Where the module is now, for PCs of a load that a reload in the test replaces.
        placer.place(&BTreeSet::new());
        Ok(Recording {
            name: name.into(),
            kcov: Collector::local(1 << 21)?,
            placer,
            out: PathBuf::from(dir).join(format!("{name}.points")),
        })
    })())
}

impl Recording {
    /// Writes the points the test reached.
    pub fn finish(mut self) -> Result<()> {
        let full = self.kcov.full();
        let mut pcs = BTreeSet::new();
        self.kcov.drain(&mut pcs);
        self.placer.place(&pcs);
        let mut f =
            std::fs::File::create(&self.out).with_context(|| format!("{}", self.out.display()))?;
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
