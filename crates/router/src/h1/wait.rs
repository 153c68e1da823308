//! Waiting with deadlines: one timer per connection for all its waits.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::task::{Context, Poll};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, Sleep};

/// One timer for all the waits of a connection. A wait that ends before the timer fires (the
/// usual case) leaves it armed; a later wait reuses it when its own deadline is no earlier
/// (the timer then fires early, once, and is moved on), so the timer wheel is touched about
/// once per `header_read_timeout` per connection rather than on every request: re-arming per
/// request woke the runtime through its eventfd on one request in ten.
#[derive(Default)]
pub struct Timer {
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Timer {
    /// Call when the wait is about to return `Pending`: whether `at` has passed; if not, a
    /// wake-up no later than `at` is registered.
    fn poll_passed(&mut self, cx: &mut Context<'_>, at: Instant) -> bool {
        let s = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        if s.deadline() > at {
            s.as_mut().reset(at);
        }
        loop {
            if s.as_mut().poll(cx).is_pending() {
                return false;
            }
            if s.deadline() >= at {
                return true;
            }
            s.as_mut().reset(at);
        }
    }
}

/// Writes `buf` to the client and flushes it: a TLS stream may keep encrypted records back
/// when the socket is full, until flushed (a plain socket's flush does nothing).
pub async fn write_out<IO: AsyncWrite + Unpin>(io: &mut IO, buf: &[u8]) -> std::io::Result<()> {
    io.write_all(buf).await?;
    io.flush().await
}

/// `fut`, or `None` once `at` has passed.
pub async fn timed<F: Future>(fut: F, timer: &mut Timer, at: Instant) -> Option<F::Output> {
    let mut fut = pin!(fut);
    poll_fn(|cx| match fut.as_mut().poll(cx) {
        Poll::Ready(v) => Poll::Ready(Some(v)),
        Poll::Pending if timer.poll_passed(cx, at) => Poll::Ready(None),
        Poll::Pending => Poll::Pending,
    })
    .await
}
