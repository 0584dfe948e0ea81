//! `EVNOTIFY_KCOV_DIR=DIR` (`make coverage`): each test records what its own calls make the
//! module run, with KCOV on the thread that runs it (`KCOV_ENABLE`; helper threads and forked
//! children are not recorded, the module's threads are, by `evnotify-kcov run`), and writes the
//! points reached to `DIR/<test>.points`. A thread of the recording's empties its buffer every
//! 10 ms, so that a long test does not fill it; it blocks every signal, so that the signals
//! sent to the test's process reach the test as without it.

use anyhow::{Context, Result};
use evnotify_kcov::{Collector, Placer};
use std::{
    collections::BTreeSet,
    io::Write,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::Duration,
};

/// A test's recording.
pub struct Recording {
    name: String,
    stop: Arc<AtomicBool>,
    drainer: thread::JoinHandle<(Placer, bool)>,
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
        // Enabled on this thread; drained from another (the buffer is shared memory).
        let kcov = Collector::local(1 << 21)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let drainer = thread::Builder::new()
            .name("kcov-drain".into())
            .spawn(move || {
                // Signals for the process are the test's, which this thread must not take.
                let _ = nix::sys::signal::SigSet::all().thread_block();
                let mut full = false;
                loop {
                    let last = stopped.load(Ordering::Acquire);
                    full |= kcov.full();
                    let mut pcs = BTreeSet::new();
                    kcov.drain(&mut pcs);
                    placer.place(&pcs);
                    if last {
                        return (placer, full);
                    }
                    thread::sleep(Duration::from_millis(10));
                }
            })
            .context("cannot start the KCOV drain thread")?;
        Ok(Recording {
            name: name.into(),
            stop,
            drainer,
            out: PathBuf::from(dir).join(format!("{name}.points")),
        })
    })())
}

impl Recording {
    /// Writes the points the test reached.
    pub fn finish(self) -> Result<()> {
        self.stop.store(true, Ordering::Release);
        let (placer, full) = self
            .drainer
            .join()
            .map_err(|_| anyhow::anyhow!("the KCOV drain thread panicked"))?;
        let mut f =
            std::fs::File::create(&self.out).with_context(|| format!("{}", self.out.display()))?;
        writeln!(
            f,
            "# {}: buffer full: {full}; points {}; unplaced {}",
            self.name,
            placer.points.len(),
            placer.unplaced
        )?;
        for p in &placer.points {
            writeln!(f, "{p}")?;
        }
        Ok(())
    }
}
