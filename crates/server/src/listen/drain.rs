//! The API's drain at SIGTERM (docs/restarts.md): the listener stops accepting, requests in
//! flight finish — a `git push` under way completes — and the responses that would otherwise
//! never end are ended: event streams (`GET /events`, the router's and `slipway log -f`'s
//! followers) and followed logs. Before this an open event stream held the exit for the whole
//! grace period (10 s then), and a restart of the server waited on every `log -f` open.
//!
//! Only those two content types are cut: anything else streaming (git's receive-pack report,
//! a blob download, a build's output) is a response that ends by itself, and is left to finish
//! within the drain timeout.

use axum::body::Body;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use futures_util::StreamExt;

/// The content types of responses that follow something live and never end by themselves.
const FOLLOWS: [&str; 2] = ["text/event-stream", "application/x-ndjson"];

/// Told once that the drain began; a clone per connection and per followed response.
#[derive(Clone)]
pub struct Drain(tokio::sync::watch::Receiver<bool>);

/// Starts the drain of every [`Drain`] made from it.
pub struct DrainStart(tokio::sync::watch::Sender<bool>);

pub fn channel() -> (DrainStart, Drain) {
    let (tx, rx) = tokio::sync::watch::channel(false);
    (DrainStart(tx), Drain(rx))
}

impl DrainStart {
    pub fn start(&self) {
        let _ = self.0.send(true);
    }
}

impl Drain {
    /// Completes when the drain begins (or the [`DrainStart`] is gone).
    pub async fn begun(mut self) {
        let _ = self.0.wait_for(|d| *d).await;
    }

    /// Whether the drain has begun.
    pub fn has_begun(&self) -> bool {
        *self.0.borrow()
    }

    /// `app` with its following responses ended when the drain begins, and the requests that
    /// start after it answered 503 — but the pre-receive hook's call back (`…/slipway-hook`):
    /// a push in flight needs it to complete.
    pub fn layer(&self, app: axum::Router) -> axum::Router {
        app.layer(axum::middleware::from_fn_with_state(
            self.clone(),
            drain_layer,
        ))
    }

    fn cut_follower(&self, resp: axum::response::Response) -> axum::response::Response {
        let follows = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| FOLLOWS.iter().any(|f| ct.starts_with(f)));
        if !follows {
            return resp;
        }
        let (parts, body) = resp.into_parts();
        let ends = self.clone().begun();
        let body = Body::from_stream(body.into_data_stream().take_until(ends));
        axum::response::Response::from_parts(parts, body)
    }
}

/// The pre-receive hook's call back, `POST /APP.git/slipway-hook` (the builder's route
/// `/{repo}/slipway-hook`), and nothing else: any other path that merely ends so
/// (`/apps/slipway-hook`, `PUT /host/jobs/slipway-hook`) is not let through the drain.
fn is_push_hook(req: &axum::extract::Request) -> bool {
    let path = req.uri().path();
    req.method() == axum::http::Method::POST
        && path
            .strip_prefix('/')
            .and_then(|p| p.strip_suffix("/slipway-hook"))
            .is_some_and(|repo| !repo.is_empty() && !repo.contains('/'))
}

/// 503 for a request that starts once the drain has begun, but the hook of a push in flight;
/// a following response ends when the drain begins, but the hook's (a push's result).
async fn drain_layer(
    axum::extract::State(drain): axum::extract::State<Drain>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if is_push_hook(&req) {
        return next.run(req).await;
    }
    if !drain.has_begun() {
        let resp = next.run(req).await;
        return drain.cut_follower(resp);
    }
    let body = serde_json::json!({
        "code": "unavailable",
        "message": "the Slipway server is restarting; try again in a few seconds",
    });
    let mut resp = (
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(body),
    )
        .into_response();
    resp.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from_static("2"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Only the hook's own route is let through the drain; before, any path ending in
    /// `/slipway-hook` was (`GET /apps/slipway-hook` was served, not answered 503).
    #[test]
    fn only_the_push_hook_route_passes_the_drain() {
        let req = |m: &str, p: &str| {
            axum::http::Request::builder()
                .method(m)
                .uri(p)
                .body(Body::empty())
                .unwrap()
        };
        assert!(is_push_hook(&req("POST", "/myapp.git/slipway-hook")));
        assert!(is_push_hook(&req("POST", "/myapp/slipway-hook")));
        for (m, p) in [
            ("GET", "/myapp.git/slipway-hook"),
            ("POST", "/apps/x/slipway-hook"),
            ("GET", "/apps/slipway-hook"),
            ("PUT", "/host/jobs/slipway-hook"),
            ("PUT", "/services/s/instances/slipway-hook"),
            ("POST", "//slipway-hook"),
            ("POST", "/slipway-hook"),
        ] {
            assert!(!is_push_hook(&req(m, p)), "{m} {p}");
        }
    }

    #[tokio::test]
    async fn a_followed_stream_ends_at_the_drain_and_other_bodies_do_not() {
        let (start, drain) = channel();
        let endless = || {
            futures_util::stream::repeat_with(|| Ok::<_, std::convert::Infallible>("x\n")).then(
                |x| async move {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    x
                },
            )
        };
        let follow = axum::response::Response::builder()
            .header(CONTENT_TYPE, "text/event-stream")
            .body(Body::from_stream(endless()))
            .unwrap();
        let other = axum::response::Response::builder()
            .header(CONTENT_TYPE, "application/x-git-receive-pack-result")
            .body(Body::from_stream(endless()))
            .unwrap();
        let mut follow = drain.cut_follower(follow).into_body().into_data_stream();
        let mut other = drain.cut_follower(other).into_body().into_data_stream();
        assert!(follow.next().await.is_some());
        start.start();
        let rest = tokio::time::timeout(Duration::from_secs(2), async {
            while follow.next().await.is_some() {}
        })
        .await;
        assert!(rest.is_ok(), "the event stream did not end at the drain");
        for _ in 0..5 {
            assert!(other.next().await.is_some(), "a non-following body was cut");
        }
    }
}
