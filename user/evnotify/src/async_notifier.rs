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
/// One task should wait on it at a time: Tokio wakes only the last task that polled it.
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
}

impl AsyncNotifier {
    /// A new eventfd, registered with the current Tokio runtime.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime with IO enabled, as `tokio::io::unix::AsyncFd::register`.
    pub fn new() -> Result<Self> {
        Self::from_notifier(Notifier::new()?)
    }

    /// Registers `n` with the current Tokio runtime.
    ///
    /// # Panics
    ///
    /// As [`AsyncNotifier::new`].
    pub fn from_notifier(n: Notifier) -> Result<Self> {
        // SAFETY: `n` owns its eventfd and returns that descriptor from every `as_raw_fd`;
        // this type never hands out `&mut Notifier`, so nothing can replace or close it while
        // it is registered.
        let fd = unsafe { AsyncFd::register_with_interest(n, Interest::READABLE) }?;
        Ok(Self { fd })
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
    pub fn poll_wait(&self, cx: &mut Context<'_>) -> Poll<Result<u64>> {
        loop {
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            // A readiness report may be stale (another reader took the count): `try_io`
            // clears it on `WouldBlock`, and the loop polls again.
            let read = guard.try_io(|n| {
                n.get_ref()
                    .try_read()?
                    .ok_or_else(|| io::Error::from(io::ErrorKind::WouldBlock))
            });
            if let Ok(r) = read {
                return Poll::Ready(r);
            }
        }
    }

    /// Waits for the next non-zero count, then returns and clears it. Cancel-safe: a count
    /// is taken only when the future completes.
    pub async fn wait(&self) -> Result<u64> {
        std::future::poll_fn(|cx| self.poll_wait(cx)).await
    }
}

impl futures_core::Stream for AsyncNotifier {
    type Item = Result<u64>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.poll_wait(cx).map(Some)
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
    use std::time::Duration;
    use tokio::time::{sleep, timeout};
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
}
