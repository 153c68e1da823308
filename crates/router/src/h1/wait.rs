//! Waiting with deadlines: one timer per connection for all its waits.

use bytes::BytesMut;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
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

pub enum Waited<T> {
    Done(T),
    TimedOut,
    /// The client closed (or half-closed) its connection.
    ClientGone,
}

/// `fut` (waiting for the backend), until `at`, while watching the client: bytes it sends
/// meanwhile (pipelined requests, up to `MAX_HEAD`) are kept in `buf`; its close ends the
/// wait, as nginx's does (a client that half-closes after its request is taken for gone, by
/// nginx too). The watch costs no system call: after its request was read, the client's
/// socket has no readiness until it sends or closes.
pub async fn watching<F: Future, IO: AsyncRead + Unpin>(
    fut: F,
    io: &mut IO,
    buf: &mut BytesMut,
    timer: &mut Timer,
    at: Instant,
) -> Waited<F::Output> {
    let mut fut = pin!(fut);
    poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Waited::Done(v));
        }
        while buf.len() < super::MAX_HEAD {
            super::reserve(buf);
            match pin!(io.read_buf(buf)).poll(cx) {
                Poll::Ready(Ok(n)) if n > 0 => continue,
                Poll::Ready(_) => return Poll::Ready(Waited::ClientGone),
                Poll::Pending => break,
            }
        }
        if timer.poll_passed(cx, at) {
            return Poll::Ready(Waited::TimedOut);
        }
        Poll::Pending
    })
    .await
}
