//! The push lock across controllers: an app's `push` lease in the store, which every
//! controller on the database sees. The receiver's in-process lock orders pushes through one
//! controller; this orders them through all of them, so two pushes to one app through two
//! controllers run one after the other instead of the later silently replacing the earlier.

use slipway_store::Store;
use slipway_types::App;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const NAME: &str = "push";
/// How long a lease lasts unless renewed: a controller that dies mid-push holds the app for
/// at most this long.
const TTL: Duration = Duration::from_secs(30);
/// Shorter in the tests, so a lost lease is noticed within the test's patience.
const RENEW_EVERY: Duration = if cfg!(test) {
    Duration::from_millis(200)
} else {
    Duration::from_secs(10)
};
const POLL_EVERY: Duration = Duration::from_millis(500);

/// A held lease, renewed until dropped, then released.
pub(crate) struct PushLease {
    store: Arc<dyn Store>,
    app: App,
    holder: String,
    renew: tokio::task::JoinHandle<()>,
    /// Set when a renewal found another push holding the lease (this one's ran out while
    /// the store was unreachable): this push is cancelled and must not deploy.
    lost: Arc<std::sync::atomic::AtomicBool>,
    /// Whether another push held it when this one asked.
    pub waited: bool,
    /// The file recording this lease on this machine ([`PushLease::record_in`]).
    record: Option<std::path::PathBuf>,
}

impl PushLease {
    /// Waits for the app's lease (saying so once through `say`) until it is this push's, or
    /// `cancel` fires. Once held, losing it to another push cancels `cancel`.
    pub(crate) async fn acquire<F, Fut>(
        store: Arc<dyn Store>,
        app: &App,
        say: F,
        cancel: &CancellationToken,
    ) -> Result<PushLease, String>
    where
        F: FnOnce(String) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let holder = uuid::Uuid::new_v4().simple().to_string();
        let mut say = Some(say);
        loop {
            match store.acquire_app_lease(app.id, NAME, &holder, TTL).await {
                Ok(true) => break,
                Ok(false) => {
                    if let Some(say) = say.take() {
                        say(format!(
                            "-----> Another push to {} is in progress through another controller; waiting for it to finish...",
                            app.name
                        ))
                        .await;
                    }
                }
                Err(e) => {
                    return Err(format!(
                        "cannot take {}'s push lock in the store: {e}",
                        app.name
                    ));
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL_EVERY) => {}
                _ = cancel.cancelled() => return Err("push cancelled".into()),
            }
        }
        let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let renew = {
            let (store, app, holder) = (store.clone(), app.clone(), holder.clone());
            let (lost, cancel) = (lost.clone(), cancel.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(RENEW_EVERY).await;
                    match store.acquire_app_lease(app.id, NAME, &holder, TTL).await {
                        Ok(true) => {}
                        Ok(false) => {
                            // Another push holds it now and may be deploying: this one stops
                            // rather than deploy and store its repository over that one's.
                            tracing::warn!(app = %app.name, "this push lost its lease on the app to another push (it ran out while the store was unreachable): cancelling this push");
                            lost.store(true, std::sync::atomic::Ordering::SeqCst);
                            cancel.cancel();
                            return;
                        }
                        Err(e) => {
                            tracing::warn!(app = %app.name, "cannot renew this push's lease on the app: {e}")
                        }
                    }
                }
            })
        };
        Ok(PushLease {
            store,
            app: app.clone(),
            holder,
            renew,
            lost,
            waited: say.is_none(),
            record: None,
        })
    }
}

impl PushLease {
    /// Records the lease in `dir` (`<app id>` holding the holder) until it is released, so
    /// that if this process dies holding it, the next one on this data dir releases it at
    /// start ([`release_dead`]) instead of the app's next push waiting out the TTL. A lease
    /// that cannot be recorded runs out as before.
    pub(crate) fn record_in(&mut self, dir: &std::path::Path) {
        let file = dir.join(self.app.id.to_string());
        let tmp = dir.join(format!("{}.tmp", self.app.id));
        let written = std::fs::create_dir_all(dir)
            .and_then(|_| std::fs::write(&tmp, &self.holder))
            .and_then(|_| std::fs::rename(&tmp, &file));
        match written {
            Ok(()) => self.record = Some(file),
            Err(e) => {
                tracing::warn!(app = %self.app.name, "cannot record the push lease in {}: {e}", dir.display())
            }
        }
    }

    /// Whether another push took this lease (see [`PushLease::acquire`]).
    pub(crate) fn lost(&self) -> bool {
        self.lost.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for PushLease {
    fn drop(&mut self) {
        self.renew.abort();
        let (store, app, holder) = (self.store.clone(), self.app.clone(), self.holder.clone());
        let record = self.record.take();
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            h.spawn(async move {
                match store.release_app_lease(app.id, NAME, &holder).await {
                    Ok(()) => {
                        if let Some(f) = record {
                            let _ = std::fs::remove_file(f);
                        }
                    }
                    Err(e) => tracing::warn!(app = %app.name, "cannot release the push lease (it runs out in {} s): {e}", TTL.as_secs()),
                }
            });
        }
    }
}

/// Releases the push leases recorded in `dir` ([`PushLease::record_in`]): at start, every one
/// is a dead process's (one process per data dir), whose pushes died with it. Only the recorded
/// holder's lease is released, so one another push took meanwhile stays. Returns how many
/// records it handled.
pub async fn release_dead(store: &dyn Store, dir: &std::path::Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(app) = name.parse::<slipway_types::Id>() else {
            let _ = std::fs::remove_file(&path);
            continue;
        };
        let holder = std::fs::read_to_string(&path).unwrap_or_default();
        match store.release_app_lease(app, NAME, holder.trim()).await {
            Ok(()) => {
                let _ = std::fs::remove_file(&path);
                n += 1;
            }
            Err(e) => {
                tracing::warn!(%app, "cannot release a push lease a dead process held (it runs out in {} s): {e}", TTL.as_secs())
            }
        }
    }
    if n > 0 {
        tracing::info!("released {n} push lease(s) the previous process held");
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use slipway_types::{Id, NewApp};

    async fn store(dir: &std::path::Path) -> Arc<dyn Store> {
        let url = format!("sqlite://{}", dir.join("s.db").display());
        Arc::new(slipway_store::open(&url).await.unwrap())
    }

    /// Two pushes (two controllers: two holders on one database): the second waits, says so
    /// once, and gets the lease when the first's is dropped; a cancelled wait ends at once.
    #[tokio::test]
    async fn a_second_push_waits_for_the_first_lease_and_says_so_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path()).await;
        let app = store
            .create_app("leased", &NewApp::default(), None)
            .await
            .unwrap();
        let cancel = CancellationToken::new();
        let first = PushLease::acquire(store.clone(), &app, |_| async {}, &cancel)
            .await
            .unwrap();
        assert!(!first.waited);

        let said = Arc::new(std::sync::Mutex::new(Vec::new()));
        let second = {
            let (store, app, said) = (store.clone(), app.clone(), said.clone());
            tokio::spawn(async move {
                let cancel = CancellationToken::new();
                let say = move |l: String| {
                    said.lock().unwrap().push(l);
                    async {}
                };
                PushLease::acquire(store, &app, say, &cancel).await
            })
        };
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!second.is_finished(), "the second push did not wait");
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .expect("the second push got the lease once the first let go")
            .unwrap()
            .unwrap();
        assert!(second.waited);
        let said = said.lock().unwrap().clone();
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(said[0].contains("through another controller"), "{said:?}");

        // A third push waiting behind the second is cancelled (the pusher hung up).
        let cancel = CancellationToken::new();
        let third = {
            let (store, app, cancel) = (store.clone(), app.clone(), cancel.clone());
            tokio::spawn(
                async move { PushLease::acquire(store, &app, |_| async {}, &cancel).await },
            )
        };
        tokio::time::sleep(Duration::from_millis(700)).await;
        cancel.cancel();
        let third = tokio::time::timeout(Duration::from_secs(2), third)
            .await
            .expect("a cancelled wait ends")
            .unwrap();
        assert_eq!(third.err().as_deref(), Some("push cancelled"));
        drop(second);
    }

    /// A process that died holding a recorded lease (its renewals stop, its drop never runs):
    /// the next process on the data dir releases it at start, so the app's next push does not
    /// wait out the TTL; a lease another holder took meanwhile is not released.
    #[tokio::test]
    async fn a_dead_processs_recorded_lease_is_released_at_start_and_no_other() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path()).await;
        let app = store
            .create_app("dead", &NewApp::default(), None)
            .await
            .unwrap();
        let leases = dir.path().join("leases");
        let cancel = CancellationToken::new();
        let mut dead = PushLease::acquire(store.clone(), &app, |_| async {}, &cancel)
            .await
            .unwrap();
        dead.record_in(&leases);
        let holder = dead.holder.clone();
        // Killed: nothing of its drop happens.
        dead.renew.abort();
        std::mem::forget(dead);
        assert!(
            !store
                .acquire_app_lease(app.id, NAME, "next", TTL)
                .await
                .unwrap()
        );
        // A record of a lease someone else holds now (a stale file) releases nothing.
        std::fs::write(leases.join(Id::nil().to_string()), "gone").unwrap();
        std::fs::write(leases.join("junk"), "x").unwrap();
        assert_eq!(release_dead(store.as_ref(), &leases).await, 2);
        assert_eq!(std::fs::read_dir(&leases).unwrap().count(), 0);
        assert!(
            store
                .acquire_app_lease(app.id, NAME, "next", TTL)
                .await
                .unwrap()
        );
        store.release_app_lease(app.id, NAME, "next").await.unwrap();
        // Released only with its holder: a lease taken by another stays.
        assert!(
            store
                .acquire_app_lease(app.id, NAME, "other", TTL)
                .await
                .unwrap()
        );
        std::fs::write(leases.join(app.id.to_string()), &holder).unwrap();
        release_dead(store.as_ref(), &leases).await;
        assert!(
            !store
                .acquire_app_lease(app.id, NAME, "next", TTL)
                .await
                .unwrap()
        );
        // A recorded lease released normally takes its record with it.
        store
            .release_app_lease(app.id, NAME, "other")
            .await
            .unwrap();
        let mut live = PushLease::acquire(store.clone(), &app, |_| async {}, &cancel)
            .await
            .unwrap();
        live.record_in(&leases);
        assert!(leases.join(app.id.to_string()).exists());
        drop(live);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!leases.join(app.id.to_string()).exists());
    }

    /// A push whose lease another push took (it ran out while the store was unreachable) is
    /// cancelled and knows it: two pushes must not both deploy and store their repository.
    #[tokio::test]
    async fn a_push_whose_lease_was_taken_over_is_cancelled() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path()).await;
        let app = store
            .create_app("taken", &NewApp::default(), None)
            .await
            .unwrap();
        let cancel = CancellationToken::new();
        let first = PushLease::acquire(store.clone(), &app, |_| async {}, &cancel)
            .await
            .unwrap();
        assert!(!first.lost());
        // As if it had run out: another push's lease replaces it.
        store
            .release_app_lease(app.id, NAME, &first.holder)
            .await
            .unwrap();
        assert!(
            store
                .acquire_app_lease(app.id, NAME, "another-push", TTL)
                .await
                .unwrap()
        );
        tokio::time::timeout(RENEW_EVERY * 3, cancel.cancelled())
            .await
            .expect("the push that lost its lease is cancelled");
        assert!(first.lost());
        drop(first);
        // Dropping it does not release the lease that is now another push's.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !store
                .acquire_app_lease(app.id, NAME, "a-third-push", TTL)
                .await
                .unwrap()
        );
    }
}
