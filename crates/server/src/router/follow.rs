//! A router in another process than the controller follows its routes over HTTP: the event
//! stream (`GET /events`, SSE, route events only) is opened first, then every route is loaded
//! (`GET /routes`), then each burst of route events reloads them all. Opening the stream before
//! the load means a change made in between is seen; resuming with `Last-Event-ID` after a
//! broken stream means none is missed while it was down. A full reload is simple and always
//! right, and routes are few (the in-process router does the same from the store).

use futures_util::StreamExt;
use slipway_types::{EventFilter, ObjectType};
use std::time::Duration;

/// The first wait after a failure; it doubles up to [`MAX_BACKOFF`], and starts over once a
/// stream is open and the routes loaded.
pub const MIN_BACKOFF: Duration = Duration::from_millis(250);
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Events closer together than this are one reload (a replay after a reconnect, a script
/// adding routes).
const BURST: Duration = Duration::from_millis(50);
/// A stream quiet for this long is opened again (and the routes reloaded): a connection that
/// died without a FIN (the controller's machine gone) would otherwise keep the router on old
/// routes forever, since the keep-alive comments it would miss are not events.
pub const IDLE_RESYNC: Duration = Duration::from_secs(60);

/// Why a stream ended without an error.
enum Ended {
    /// The controller closed it (it restarted, or dropped a reader that fell behind).
    Closed,
    /// Nothing came for [`IDLE_RESYNC`].
    Idle,
}

/// Follows the controller's routes forever, reconnecting with backoff.
pub fn follow_controller(
    router: slipway_router::Router,
    client: slipway_client::Client,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = MIN_BACKOFF;
        let mut last_event: Option<i64> = None;
        let mut announce = true;
        loop {
            let ended = follow_once(&router, &client, &mut last_event, &mut backoff, announce);
            announce = true;
            match ended.await {
                Ok(Ended::Closed) => tracing::info!(
                    "router: the controller closed the route event stream; reconnecting"
                ),
                Ok(Ended::Idle) => {
                    // Not a failure: open the stream again at once, quietly.
                    tracing::debug!("router: no route event for {IDLE_RESYNC:?}; resyncing");
                    announce = false;
                    continue;
                }
                Err(e) => tracing::warn!(
                    "router: cannot follow the routes of {} ({e}); retrying in {backoff:?}",
                    client.url()
                ),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    })
}

/// One stream: open it, load the routes, reload after each burst of events. Returns when the
/// stream ends or idles; `backoff` goes back to its minimum once the routes are loaded.
/// `announce`: log the load (not after an idle resync, which says nothing new).
async fn follow_once(
    router: &slipway_router::Router,
    client: &slipway_client::Client,
    last_event: &mut Option<i64>,
    backoff: &mut Duration,
    announce: bool,
) -> Result<Ended, slipway_client::ClientError> {
    let filter = EventFilter {
        object_types: vec![ObjectType::Route],
        ..Default::default()
    };
    let events = client.events_stream(&filter, *last_event).await?;
    let mut events = std::pin::pin!(events);
    let routes = client.all_routes().await?;
    router.set_routes(&routes);
    if announce {
        tracing::info!(
            "router: {} route(s) from {}, following their events",
            routes.len(),
            client.url()
        );
    }
    *backoff = MIN_BACKOFF;
    loop {
        let ev = match tokio::time::timeout(IDLE_RESYNC, events.next()).await {
            Err(_) => return Ok(Ended::Idle),
            Ok(None) => return Ok(Ended::Closed),
            Ok(Some(ev)) => ev,
        };
        *last_event = Some(ev?.id);
        // Take the rest of the burst before reloading.
        while let Ok(Some(ev)) = tokio::time::timeout(BURST, events.next()).await {
            *last_event = Some(ev?.id);
        }
        let routes = client.all_routes().await?;
        router.set_routes(&routes);
        tracing::debug!("router: reloaded {} route(s)", routes.len());
    }
}
