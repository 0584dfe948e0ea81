//! The run's deadline. The waits in the timed paths stay plain (a deadline would put a clock
//! read into every round trip), so instead progress beats: each round trip `measure` times,
//! every 1024th channel opened or kicked, and each new step (a batch of round trips, a
//! phase). A watchdog thread ends the run, naming the last step, when a whole look passes
//! with no beat: a lost answer fails the bench instead of hanging it until the VM's own
//! timeout.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Mutex,
    },
    thread,
    time::Duration,
};

static BEATS: AtomicU64 = AtomicU64::new(0);
static STEP: Mutex<String> = Mutex::new(String::new());

/// Progress: called outside what is timed.
pub fn beat() {
    BEATS.fetch_add(1, Relaxed);
}

/// A new step began: `what` names it in the watchdog's message.
pub fn step(what: &str) {
    if let Ok(mut s) = STEP.lock() {
        what.clone_into(&mut s);
    }
    beat();
}

/// Starts the watchdog: it looks every `stall`, and when nothing has beaten since its last look,
/// it calls `on_stall` with the last step. So it fires between one and two `stall`s after the
/// last beat.
pub fn start(stall: Duration, on_stall: fn(&str, Duration)) {
    thread::spawn(move || {
        let mut last = BEATS.load(Relaxed);
        loop {
            thread::sleep(stall);
            let now = BEATS.load(Relaxed);
            if now == last {
                let step = STEP.lock().map(|s| s.clone()).unwrap_or_default();
                on_stall(&step, stall);
                return;
            }
            last = now;
        }
    });
}

/// The bench's `on_stall`: the run fails, saying where.
pub fn abort(step: &str, stall: Duration) {
    eprintln!(
        "evnotify-bench: nothing finished for at least {stall:?} in step \"{step}\" (a lost \
         answer, or a hung kernel thread?): giving up"
    );
    std::process::exit(1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{sync::mpsc, time::Instant};

    static SEEN: Mutex<Option<mpsc::Sender<(String, Instant)>>> = Mutex::new(None);

    /// Quiet while beats come often, while they come once or twice per look, and while only
    /// steps beat; once they stop, it names the step after one look with no beat and before
    /// the third (give or take a loaded host's delay).
    #[test]
    fn fires_only_when_beats_stop() {
        const LOOK: Duration = Duration::from_millis(300);
        let (tx, rx) = mpsc::channel();
        *SEEN.lock().unwrap() = Some(tx);
        step("beating");
        start(LOOK, |step, _| {
            let seen = SEEN.lock().unwrap();
            let _ = seen
                .as_ref()
                .unwrap()
                .send((step.to_owned(), Instant::now()));
        });
        for _ in 0..300 {
            thread::sleep(Duration::from_millis(10));
            beat();
        }
        for _ in 0..8 {
            thread::sleep(Duration::from_millis(200));
            beat();
        }
        for i in 0..8 {
            thread::sleep(Duration::from_millis(150));
            step(&format!("step {i}"));
        }
        assert!(rx.try_recv().is_err(), "fired while beats went on");
        step("stalled");
        let last = Instant::now();
        let (step, at) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(step, "stalled");
        let after = at - last;
        assert!(
            after >= LOOK && after < 2 * LOOK + LOOK / 2,
            "fired {after:?} after the last beat"
        );
    }
}
