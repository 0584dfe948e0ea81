use loom::{
    cell::UnsafeCell,
    sync::{
        atomic::{fence, AtomicU32, Ordering::*},
        Arc,
    },
    thread,
};

const NEED_WAKEUP: u32 = 1;

/// The sleep/publish race: the worker asks for a wake-up and looks once more before it
/// sleeps; the user publishes, fences and reads the request. Either the worker's last look
/// sees the submission, or the user sees the request and enters (and the entry takes it).
fn wakeup(user_fence: bool) {
    loom::model(move || {
        let tail = Arc::new(AtomicU32::new(0));
        let flags = Arc::new(AtomicU32::new(0));
        let (t, f) = (tail.clone(), flags.clone());
        let worker = thread::spawn(move || {
            f.swap(NEED_WAKEUP, SeqCst);
            fence(SeqCst);
            // true: its last look took the submission; false: it sleeps.
            t.load(Acquire) != 0
        });
        tail.store(1, Release);
        if user_fence {
            fence(SeqCst);
        }
        let entered = flags.load(Relaxed) & NEED_WAKEUP != 0;
        let taken = worker.join().unwrap();
        assert!(
            taken || entered,
            "the worker sleeps with a submission nobody took"
        );
    });
}

#[test]
fn no_submission_waits_for_a_sleeping_worker() {
    wakeup(true);
}

#[test]
#[should_panic(expected = "the worker sleeps with a submission nobody took")]
fn without_the_users_fence_a_submission_waits() {
    wakeup(false);
}

/// One queue entry handed from a producer to a consumer and back, twice: the producer writes
/// the entry and publishes the tail (release); the consumer reads the tail (acquire), the
/// entry, and publishes the head (release); the producer reads the head (acquire) before it
/// writes the entry again. The entry is a plain cell: loom reports any unordered access as a
/// data race. The same rules hold for the submission queue (user produces, kernel consumes)
/// and the completion queue (kernel produces, user consumes).
fn handoff(release_tail: bool) {
    loom::model(move || {
        let entry = Arc::new(UnsafeCell::new(0u32));
        let tail = Arc::new(AtomicU32::new(0));
        let head = Arc::new(AtomicU32::new(0));
        let (e, t, h) = (entry.clone(), tail.clone(), head.clone());
        let consumer = thread::spawn(move || {
            let mut seen = vec![];
            let mut next = 0;
            while next < 2 {
                if t.load(Acquire) == next {
                    loom::thread::yield_now();
                    continue;
                }
                // SAFETY (of the model): the tail's acquire orders this after the write.
                seen.push(e.with(|p| unsafe { *p }));
                next += 1;
                h.store(next, Release);
            }
            seen
        });
        for v in [10u32, 20] {
            // The queue holds one entry: wait for the consumer to have read the last one.
            while tail.load(Relaxed) != head.load(Acquire) {
                loom::thread::yield_now();
            }
            entry.with_mut(|p| unsafe { *p = v });
            let order = if release_tail { Release } else { Relaxed };
            tail.fetch_add(1, order);
        }
        let seen = consumer.join().unwrap();
        assert_eq!(seen, [10, 20]);
    });
}

#[test]
fn entries_are_handed_over_by_the_indices() {
    handoff(true);
}

#[test]
#[should_panic]
fn without_the_tails_release_an_entry_is_read_unordered() {
    handoff(false);
}
