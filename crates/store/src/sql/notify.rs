//! Other controllers' events on PostgreSQL: every event append does
//! `pg_notify('slipway_events', id)` in its transaction (delivered at commit), and each store
//! runs a listener task (`LISTEN slipway_events` on a connection of its own) that moves the
//! store's event notifier on. Event streams, the deployer and the scheduler wake on that
//! notifier, so a write through one controller reaches the streams of all of them at once,
//! instead of at the next poll.
//!
//! Notifications are transient (those sent while the listener is disconnected are lost), so
//! after every (re)connect the listener reads `MAX(id)` once it is listening: nothing is
//! missed, and streams still resume by id from the store, so the notifier only says *when* to
//! read, never *what*.

use sqlx::AnyPool;
use sqlx::postgres::PgListener;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The channel every event append notifies.
pub(crate) const CHANNEL: &str = "slipway_events";

/// Moves `notifier` on to `id` if it is newer (ids are never taken back).
pub(crate) fn advance(notifier: &watch::Sender<i64>, id: i64) {
    notifier.send_if_modified(|cur| {
        let newer = id > *cur;
        if newer {
            *cur = id;
        }
        newer
    });
}

/// The listener task; aborted when the store is dropped or closed.
pub(crate) struct ListenerTask(tokio::task::JoinHandle<()>);

impl ListenerTask {
    pub(crate) fn stop(&self) {
        self.0.abort();
    }
}

impl Drop for ListenerTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts the listener on `url` (the store's database).
pub(crate) fn spawn(url: String, pool: AnyPool, notifier: Arc<watch::Sender<i64>>) -> ListenerTask {
    ListenerTask(tokio::spawn(listen(url, pool, notifier)))
}

async fn listen(url: String, pool: AnyPool, notifier: Arc<watch::Sender<i64>>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match follow(&url, &pool, &notifier, &mut backoff).await {
            Ok(()) => tracing::info!("event listener: connection lost; reconnecting"),
            Err(e) => tracing::warn!(
                "event listener: {e}; other controllers' events reach this one's streams again once it reconnects (retrying in {backoff:?})"
            ),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// One connection's life: LISTEN, catch up with `MAX(id)`, then follow notifications until
/// the connection is lost (`Ok`) or fails (`Err`).
async fn follow(
    url: &str,
    pool: &AnyPool,
    notifier: &watch::Sender<i64>,
    backoff: &mut Duration,
) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect(url).await?;
    listener.listen(CHANNEL).await?;
    // Listening now: whatever committed before is in the table, whatever commits after is
    // notified.
    let newest: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM events")
        .fetch_one(pool)
        .await?;
    advance(notifier, newest.unwrap_or(0));
    *backoff = Duration::from_millis(100);
    while let Some(n) = listener.try_recv().await? {
        match n.payload().parse::<i64>() {
            Ok(id) => advance(notifier, id),
            Err(_) => tracing::warn!(
                payload = n.payload(),
                "event listener: a notification on {CHANNEL} that is not an event id"
            ),
        }
    }
    Ok(())
}
