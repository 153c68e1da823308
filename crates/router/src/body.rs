//! The two limits that act while a body streams: the client's request body counted against
//! `max_request_body` (a chunked upload declares no length up front), and the total request
//! time (`Limits::request_timeout`), which cuts off a body still streaming at the deadline.
//!
//! Both cost nothing on the fast path: the count is one subtraction per frame, and the
//! deadline's timer is only registered the first time a body has to wait for data (a small
//! body that is already buffered never touches the timer wheel).

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The request body grew past `max_request_body` while streaming.
#[derive(Debug)]
pub struct TooLarge(pub u64);

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the request body is over the router's limit of {} bytes",
            self.0
        )
    }
}
impl std::error::Error for TooLarge {}

/// The exchange went past the total request time limit.
#[derive(Debug)]
pub struct TimedOut(pub Duration);

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the request took longer than the router's total request time limit of {:?}",
            self.0
        )
    }
}
impl std::error::Error for TimedOut {}

/// The client's request body broke its own framing (a malformed chunk size, a body cut short
/// by the client's close): the client's fault, a 400, not the backend's 502.
#[derive(Debug)]
pub struct BadBody(pub hyper::Error);

impl std::fmt::Display for BadBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the request body could not be read: {}", self.0)
    }
}
impl std::error::Error for BadBody {}

/// The client's body error behind a failed upstream exchange, if it was one.
pub fn bad_body(e: &hyper::Error) -> Option<&BadBody> {
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(b) = s.downcast_ref::<BadBody>() {
            return Some(b);
        }
        src = s.source();
    }
    None
}

/// What cut a failed upstream exchange short, if it was one of our limits (the error hyper
/// reports carries our body error as its source).
pub fn limit_hit(e: &hyper::Error) -> Option<Result<&TooLarge, &TimedOut>> {
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(t) = s.downcast_ref::<TooLarge>() {
            return Some(Ok(t));
        }
        if let Some(t) = s.downcast_ref::<TimedOut>() {
            return Some(Err(t));
        }
        src = s.source();
    }
    None
}

/// The end of the total request time, with a timer made only when a body has to wait.
pub struct Deadline {
    at: Instant,
    limit: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Deadline {
    pub fn new(start: Instant, limit: Duration) -> Deadline {
        Deadline {
            at: start + limit,
            limit,
            sleep: None,
        }
    }

    pub fn at(&self) -> Instant {
        self.at
    }

    /// Call when the body is about to return `Pending`: registers the wake-up at the deadline
    /// (once) and says whether it has passed.
    fn poll_passed(&mut self, cx: &mut Context<'_>) -> bool {
        let at = self.at;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        sleep.as_mut().poll(cx).is_ready()
    }

    /// Call when the body has data: only a body that already waited once has a timer to ask.
    fn passed(&self) -> bool {
        self.sleep.as_ref().is_some_and(|s| s.is_elapsed())
    }

    /// Wraps one `poll_frame` of `inner`: the frame, or the time-limit error once passed.
    fn poll<B: Body<Data = Bytes>>(
        &mut self,
        inner: Pin<&mut B>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>>
    where
        B::Error: Into<BoxError>,
    {
        match inner.poll_frame(cx) {
            Poll::Ready(f) if !self.passed() => Poll::Ready(f.map(|r| r.map_err(Into::into))),
            Poll::Pending if !self.poll_passed(cx) => Poll::Pending,
            _ => Poll::Ready(Some(Err(Box::new(TimedOut(self.limit))))),
        }
    }
}

/// The client's request body as sent upstream: streamed, counted against the size limit and
/// cut off at the deadline.
pub struct ReqBody {
    inner: Incoming,
    /// Bytes the body may still bring.
    left: u64,
    limit: u64,
    deadline: Deadline,
    /// Set once the whole body was read, for bodies that were not empty from the start: a
    /// request whose time ran out before its response head is the client's fault (408) if
    /// its body was still coming, else the backend's (504).
    done: Option<Arc<AtomicBool>>,
}

impl ReqBody {
    pub fn new(inner: Incoming, limit: u64, deadline: Deadline) -> ReqBody {
        // Only requests with a body pay for the flag.
        let done = (!inner.is_end_stream()).then(Arc::default);
        ReqBody {
            inner,
            left: limit,
            limit,
            deadline,
            done,
        }
    }

    /// Whether the client has not finished sending its body yet.
    pub fn still_coming(&self) -> Option<Arc<AtomicBool>> {
        self.done.clone()
    }

    fn mark_done(&self) {
        if let Some(d) = &self.done {
            d.store(true, Relaxed);
        }
    }
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let me = self.get_mut();
        let r = me.deadline.poll(Pin::new(&mut me.inner), cx);
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    match me.left.checked_sub(d.len() as u64) {
                        Some(left) => me.left = left,
                        None => return Poll::Ready(Some(Err(Box::new(TooLarge(me.limit))))),
                    }
                }
            }
            Poll::Ready(None) => me.mark_done(),
            _ => {}
        }
        // A hyper error from the incoming body is the client's framing; ours (the limits)
        // pass as they are.
        r.map(|f| {
            f.map(|res| {
                res.map_err(|e| match e.downcast::<hyper::Error>() {
                    Ok(h) => Box::new(BadBody(*h)) as BoxError,
                    Err(e) => e,
                })
            })
        })
    }

    fn is_end_stream(&self) -> bool {
        let end = self.inner.is_end_stream();
        if end {
            self.mark_done();
        }
        end
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A backend's response body as streamed to the client, cut off at the deadline (the client
/// then sees the connection close before the body's end).
pub struct TimedBody {
    pub inner: Incoming,
    pub deadline: Deadline,
}

impl TimedBody {
    pub fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.deadline.poll(Pin::new(&mut self.inner), cx)
    }
}
