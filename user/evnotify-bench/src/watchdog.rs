//! The run's deadline. The waits in the timed paths stay plain (a deadline would put a clock
//! read into every round trip), so instead each finished round trip or step beats, and a
//! watchdog thread ends the run, naming the last step, when nothing has beaten for a while:
//! a lost answer fails the bench instead of hanging it until the VM's own timeout.

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

/// Something finished: called outside the timed part of each round trip.
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

/// Starts the watchdog: when nothing beats for `stall`, it calls `on_stall` with the last step.
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
        "evnotify-bench: nothing finished for {stall:?} in step \"{step}\" (a lost answer, or a \
         hung kernel thread?): giving up"
    );
    std::process::exit(1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    static SEEN: Mutex<Option<mpsc::Sender<String>>> = Mutex::new(None);

    /// Beats keep the watchdog quiet; once they stop, it names the step.
    #[test]
    fn fires_only_when_beats_stop() {
        let (tx, rx) = mpsc::channel();
        *SEEN.lock().unwrap() = Some(tx);
        step("beating");
        start(Duration::from_millis(500), |step, _| {
            let _ = SEEN.lock().unwrap().as_ref().unwrap().send(step.to_owned());
        });
        for _ in 0..300 {
            thread::sleep(Duration::from_millis(5));
            beat();
        }
        assert!(rx.try_recv().is_err(), "fired while beats went on");
        step("stalled");
        let got = rx.recv_timeout(Duration::from_secs(10));
        assert_eq!(got.as_deref(), Ok("stalled"));
    }
}
