//! [`AsyncNotifier`]: a [`Notifier`] driven by Tokio's reactor (feature `tokio`).

use crate::{Notifier, Result};
use std::{
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd},
    pin::Pin,
    task::{ready, Context, Poll},
};
use tokio::io::{unix::AsyncFd, Interest};

/// A [`Notifier`] registered with the Tokio reactor: [`AsyncNotifier::wait`] awaits the next
/// non-zero count, and as a [`futures_core::Stream`] it yields every count in turn (it never
/// ends), so that one task can serve many slots, for example with `tokio_stream::StreamMap`.
///
/// Attach it to a slot like the notifier it wraps: `ch.attach(slot, &async_notifier)`.
///
/// **Many tasks may [`wait`](AsyncNotifier::wait) on one notifier at once** (it is `Sync`),
/// also tasks of another runtime than the one it was registered with, as long as that one
/// keeps running (its reactor reports the readiness): each is woken when the eventfd becomes
/// readable, one of them takes the count, and the others wait on. The poll function
/// [`poll_wait`](AsyncNotifier::poll_wait), and with it the [`futures_core::Stream`], keeps
/// only the waker of its last caller, as Tokio's `poll_read_ready` does: poll it from one task
/// only, or another task polling it may never be woken.
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// use evnotify::{AsyncNotifier, Channel};
/// let ch = Channel::open()?;
/// let n = AsyncNotifier::new()?;
/// ch.attach(0, &n)?;
/// ch.kick(0, 2)?;
/// let mut got = 0;
/// while got < 2 {
///     got += n.wait().await?;
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct AsyncNotifier {
    fd: AsyncFd<Notifier>,
    /// The [`futures_core::Stream`] has ended: its runtime is gone.
    ended: std::sync::atomic::AtomicBool,
}

impl AsyncNotifier {
    /// A new eventfd, registered with the current Tokio runtime.
    ///
    /// # Errors
    ///
    /// [`Notifier::new`]'s, and the reactor's when it registers the descriptor
    /// (`epoll_ctl(2)`: `ENOMEM`, or `ENOSPC` past `/proc/sys/fs/epoll/max_user_watches`).
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime with IO enabled, as `tokio::io::unix::AsyncFd::register`.
    pub fn new() -> Result<Self> {
        Self::from_notifier(Notifier::new()?)
    }

    /// Registers `n` with the current Tokio runtime.
    ///
    /// # Errors
    ///
    /// The reactor's when it registers the descriptor (`epoll_ctl(2)`: `ENOMEM`, or `ENOSPC`
    /// past `/proc/sys/fs/epoll/max_user_watches`); `n` is then dropped, closing it.
    ///
    /// # Panics
    ///
    /// As [`AsyncNotifier::new`].
    pub fn from_notifier(n: Notifier) -> Result<Self> {
        // SAFETY: `n` owns its eventfd and returns that descriptor from every `as_raw_fd`;
        // this type never hands out `&mut Notifier`, so nothing can replace or close it while
        // it is registered.
        let fd = unsafe { AsyncFd::register_with_interest(n, Interest::READABLE) }?;
        Ok(Self {
            fd,
            ended: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The notifier underneath, for its non-blocking calls ([`Notifier::drain`],
    /// [`Notifier::post`]).
    pub fn get_ref(&self) -> &Notifier {
        self.fd.get_ref()
    }

    /// Deregisters the notifier from the reactor and returns it.
    pub fn into_inner(self) -> Notifier {
        self.fd.into_inner()
    }

    /// Polls for the next non-zero count: returns and clears it if it is there, else
    /// registers `cx`'s waker to be woken when the eventfd becomes readable.
    ///
    /// Only the waker of the last call is kept (Tokio's `AsyncFd::poll_read_ready`): poll a
    /// notifier from one task. Tasks that share one call [`AsyncNotifier::wait`] instead.
    ///
    /// # Errors
    ///
    /// - `ESHUTDOWN`: the runtime the notifier was made in is shutting down or gone, so no
    ///   readiness will come (Tokio reports that without an errno; the
    ///   [`futures_core::Stream`] ends after it);
    /// - another error the reactor reports for the descriptor (its errno, or `EIO`);
    /// - the eventfd's `read(2)` errors other than `EAGAIN`, which [`Notifier::try_read`]
    ///   passes on.
    pub fn poll_wait(&self, cx: &mut Context<'_>) -> Poll<Result<u64>> {
        loop {
            let mut guard = ready!(self.fd.poll_read_ready(cx)).map_err(reactor_error)?;
            if let Ok(r) = guard.try_io(take_count) {
                return Poll::Ready(r);
            }
        }
    }

    /// Waits for the next non-zero count, then returns and clears it. Cancel-safe: a count
    /// is taken only when the future completes, and a future dropped while it waits leaves
    /// the other waiters waiting. Any number of tasks may wait at once, each with its own
    /// waker (Tokio's `AsyncFd::readable`): each count goes to one of them.
    ///
    /// # Errors
    ///
    /// As [`AsyncNotifier::poll_wait`].
    pub async fn wait(&self) -> Result<u64> {
        loop {
            let mut guard = self.fd.readable().await.map_err(reactor_error)?;
            if let Ok(r) = guard.try_io(take_count) {
                return r;
            }
        }
    }
}

/// A reactor error with an errno, as the crate promises: Tokio reports a runtime that shuts
/// down as an error of kind `Other` with none.
fn reactor_error(e: io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(_) => e,
        None if e.kind() == io::ErrorKind::Other => io::Error::from_raw_os_error(libc::ESHUTDOWN),
        None => io::Error::from_raw_os_error(libc::EIO),
    }
}

/// Takes the count, or `WouldBlock` if there is none: a readiness report may be stale
/// (another reader took the count), and `try_io` then clears it, so that the caller waits
/// again.
fn take_count(n: &AsyncFd<Notifier>) -> io::Result<u64> {
    n.get_ref()
        .try_read()?
        .ok_or_else(|| io::Error::from(io::ErrorKind::WouldBlock))
}

/// Polls [`AsyncNotifier::poll_wait`]: poll it from one task (see there).
impl futures_core::Stream for AsyncNotifier {
    type Item = Result<u64>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended.load(std::sync::atomic::Ordering::Relaxed) {
            return Poll::Ready(None);
        }
        let r = ready!(self.poll_wait(cx));
        if matches!(&r, Err(e) if e.raw_os_error() == Some(libc::ESHUTDOWN)) {
            // Nothing can come any more: end, rather than make a loop that logs and goes on spin.
            self.ended.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Poll::Ready(Some(r))
    }
}

impl AsFd for AsyncNotifier {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.get_ref().as_fd()
    }
}

impl AsRawFd for AsyncNotifier {
    fn as_raw_fd(&self) -> RawFd {
        self.get_ref().as_raw_fd()
    }
}

/// Deregisters the eventfd and hands it over, open.
impl From<AsyncNotifier> for OwnedFd {
    fn from(n: AsyncNotifier) -> OwnedFd {
        n.into_inner().into()
    }
}

impl IntoRawFd for AsyncNotifier {
    fn into_raw_fd(self) -> RawFd {
        self.into_inner().into_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::AsyncNotifier;
    use std::{sync::Arc, time::Duration};
    use tokio::{
        sync::mpsc,
        time::{sleep, timeout},
    };
    use tokio_stream::{StreamExt, StreamMap};

    /// Every await in these tests gives up after this long.
    const DEADLINE: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn wait_wakes_on_a_later_post() {
        let n = AsyncNotifier::new().unwrap();
        let (got, ()) = tokio::join!(timeout(DEADLINE, n.wait()), async {
            sleep(Duration::from_millis(20)).await;
            n.get_ref().post(7).unwrap();
        });
        assert_eq!(got.unwrap().unwrap(), 7);
        // Nothing more: the next wait is still pending at its deadline.
        assert!(timeout(Duration::from_millis(50), n.wait()).await.is_err());
    }

    #[tokio::test]
    async fn stale_readiness_is_no_count() {
        let n = AsyncNotifier::new().unwrap();
        n.get_ref().post(1).unwrap();
        // Let the reactor see the eventfd readable, then take the count behind its back.
        sleep(Duration::from_millis(10)).await;
        assert_eq!(n.get_ref().drain().unwrap(), 1);
        assert!(timeout(Duration::from_millis(50), n.wait()).await.is_err());
        n.get_ref().post(2).unwrap();
        assert_eq!(timeout(DEADLINE, n.wait()).await.unwrap().unwrap(), 2);
    }

    #[tokio::test]
    async fn one_task_serves_many_notifiers_as_streams() {
        let mut map = StreamMap::new();
        for i in 0..8u64 {
            let n = AsyncNotifier::new().unwrap();
            n.get_ref().post(i + 1).unwrap();
            map.insert(i, n);
        }
        let mut seen = [0u64; 8];
        while seen.iter().sum::<u64>() < (1..=8).sum() {
            let (i, v) = timeout(DEADLINE, map.next()).await.unwrap().unwrap();
            seen[i as usize] += v.unwrap();
        }
        assert_eq!(seen, [1, 2, 3, 4, 5, 6, 7, 8]);
    }

    /// Lets every spawned task of this current-thread runtime run until it waits.
    async fn let_them_wait() {
        sleep(Duration::from_millis(20)).await;
    }

    /// Four tasks wait on one notifier at once, and one count is posted at a time, each after
    /// the previous one was taken: every task must get one. (With `poll_read_ready`, only the
    /// last task to poll was ever woken: the second post found no one.)
    #[tokio::test]
    async fn many_tasks_wait_on_one_notifier() {
        let n = Arc::new(AsyncNotifier::new().unwrap());
        let (tx, mut rx) = mpsc::unbounded_channel();
        for task in 0..4 {
            let (n, tx) = (n.clone(), tx.clone());
            tokio::spawn(async move { tx.send((task, n.wait().await.unwrap())).unwrap() });
        }
        let_them_wait().await;
        let mut seen = Vec::new();
        for i in 0..4 {
            n.get_ref().post(1).unwrap();
            let (task, v) = timeout(DEADLINE, rx.recv())
                .await
                .unwrap_or_else(|_| panic!("post {i}: no task woke; these did: {seen:?}"))
                .unwrap();
            assert_eq!(v, 1, "task {task}");
            seen.push(task);
        }
        seen.sort_unstable();
        assert_eq!(seen, [0, 1, 2, 3]);
    }

    /// A wait that is cancelled takes no count and leaves the other waiters waiting: here the
    /// last task to poll is aborted (with `poll_read_ready`, its dead waker was the only one
    /// kept), and a wait cut short by a timeout leaves the count to the next.
    #[tokio::test]
    async fn a_cancelled_wait_takes_nothing_and_wakes_the_others() {
        let n = Arc::new(AsyncNotifier::new().unwrap());
        let first = tokio::spawn({
            let n = n.clone();
            async move { n.wait().await.unwrap() }
        });
        let last = tokio::spawn({
            let n = n.clone();
            async move { n.wait().await.unwrap() }
        });
        let_them_wait().await;
        last.abort();
        assert!(last.await.unwrap_err().is_cancelled());
        n.get_ref().post(3).unwrap();
        let got = timeout(DEADLINE, first)
            .await
            .expect("the other waiter never woke");
        assert_eq!(got.unwrap(), 3);
        // Cancelled before anything came: the count posted after it is still there.
        assert!(timeout(Duration::from_millis(10), n.wait()).await.is_err());
        n.get_ref().post(4).unwrap();
        let wait = n.wait();
        drop(wait); // never polled
        assert_eq!(timeout(DEADLINE, n.wait()).await.unwrap().unwrap(), 4);
    }

    /// A notifier registered with a multi-thread runtime, awaited by a task of that runtime
    /// and by one on a current-thread runtime in another thread: both are woken, one count
    /// each.
    #[test]
    fn tasks_of_two_runtimes_share_one_notifier() {
        use std::sync::mpsc as std_mpsc;
        let home = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let n = Arc::new(home.block_on(async { AsyncNotifier::new() }).unwrap());
        let (tx, rx) = std_mpsc::channel();
        home.spawn({
            let (n, tx) = (n.clone(), tx.clone());
            async move { tx.send(("home", n.wait().await.unwrap())).unwrap() }
        });
        let away = std::thread::spawn({
            let n = n.clone();
            move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                tx.send(("away", rt.block_on(n.wait()).unwrap())).unwrap();
            }
        });
        std::thread::sleep(Duration::from_millis(50));
        let mut seen = Vec::new();
        for i in 0..2 {
            n.get_ref().post(1).unwrap();
            let (who, v) = rx
                .recv_timeout(DEADLINE)
                .unwrap_or_else(|_| panic!("post {i}: no waiter woke; these did: {seen:?}"));
            assert_eq!(v, 1, "{who}");
            seen.push(who);
        }
        seen.sort_unstable();
        assert_eq!(seen, ["away", "home"]);
        away.join().unwrap();
    }

    #[tokio::test]
    async fn into_inner_keeps_the_eventfd() {
        let n = AsyncNotifier::new().unwrap();
        n.get_ref().post(4).unwrap();
        assert_eq!(n.into_inner().drain().unwrap(), 4);
    }

    #[tokio::test]
    async fn handing_over_the_descriptor_keeps_it_open() {
        use crate::Notifier;
        use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
        let n = AsyncNotifier::new().unwrap();
        n.get_ref().post(5).unwrap();
        let n = Notifier::from(OwnedFd::from(n));
        assert_eq!(n.drain().unwrap(), 5);
        let a = AsyncNotifier::from_notifier(n).unwrap();
        a.get_ref().post(6).unwrap();
        let raw = a.into_raw_fd();
        // SAFETY: `into_raw_fd` gave up ownership of `raw`.
        let n = Notifier::from(unsafe { OwnedFd::from_raw_fd(raw) });
        assert_eq!(n.drain().unwrap(), 6);
    }

    /// A notifier whose runtime is gone reports `ESHUTDOWN` (an errno, as the crate promises),
    /// and its stream ends.
    #[test]
    fn a_gone_runtime_is_eshutdown() {
        use futures_core::Stream;
        let rt = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
        };
        let home = rt();
        let mut n = home
            .block_on(async { AsyncNotifier::new() })
            .expect("notifier");
        drop(home);
        let other = rt();
        let e = other
            .block_on(n.wait())
            .expect_err("a wait with no runtime");
        assert_eq!(e.raw_os_error(), Some(libc::ESHUTDOWN), "{e}");
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let mut s = std::pin::Pin::new(&mut n);
        assert!(matches!(
            s.as_mut().poll_next(&mut cx),
            std::task::Poll::Ready(Some(Err(_)))
        ));
        assert!(matches!(
            s.as_mut().poll_next(&mut cx),
            std::task::Poll::Ready(None)
        ));
    }
}
