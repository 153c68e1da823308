//! `slipway host drain|undrain HOST`: the API (`POST`, `GET`, `DELETE /hosts/{id}/drain`,
//! behind the API key like every route) and where the drained set is kept
//! ([`slipway_scheduler::drain`]): in etcd with `--etcd` (every controller of the cluster
//! reads the same set), else in `drained-hosts` in the controller's data dir.

use crate::Config;
use anyhow::Context;
use axum::Json;
use axum::extract::{Path, State};
use slipway_controller::ApiErr;
use slipway_scheduler::Scheduler;
use slipway_scheduler::drain::DrainBook;
use slipway_types::{DrainStatus, ErrorCode};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

/// Where drained hosts live in etcd: one key per host, no lease (a drain outlives every
/// process; only `undrain` ends it).
pub const ETCD_PREFIX: &str = "/slipway/drained/";
/// The file beside a controller without etcd.
pub const FILE: &str = "drained-hosts";
/// Host ids are short names (the agent makes them; `host-id` in its data dir).
const MAX_HOST_ID: usize = 128;

/// The book for this process: etcd with `--etcd`, else a file in the data dir.
pub fn book(config: &Config) -> Arc<dyn DrainBook> {
    match &config.etcd {
        Some(etcd) => Arc::new(EtcdBook(etcd.clone())),
        None => Arc::new(FileBook(config.data_dir.join(FILE))),
    }
}

struct EtcdBook(slipway_etcd::Client);

#[async_trait::async_trait]
impl DrainBook for EtcdBook {
    async fn drained(&self) -> anyhow::Result<BTreeSet<String>> {
        let r = self
            .0
            .range(&slipway_etcd::RangeRequest::prefix(ETCD_PREFIX))
            .await?;
        Ok(r.kvs
            .iter()
            .filter_map(|kv| std::str::from_utf8(&kv.key).ok())
            .filter_map(|k| k.strip_prefix(ETCD_PREFIX))
            .map(str::to_string)
            .collect())
    }
    async fn set_drained(&self, host: &str, drained: bool) -> anyhow::Result<()> {
        let key = format!("{ETCD_PREFIX}{host}").into_bytes();
        if drained {
            self.0
                .put(&slipway_etcd::PutRequest {
                    key,
                    value: b"drained".to_vec(),
                    lease: 0,
                    prev_kv: false,
                })
                .await?;
        } else {
            self.0
                .delete_range(&slipway_etcd::DeleteRangeRequest {
                    key,
                    ..Default::default()
                })
                .await?;
        }
        Ok(())
    }
}

/// One host id a line, written whole (a temporary file renamed over it).
struct FileBook(PathBuf);

#[async_trait::async_trait]
impl DrainBook for FileBook {
    async fn drained(&self) -> anyhow::Result<BTreeSet<String>> {
        match tokio::fs::read_to_string(&self.0).await {
            Ok(s) => Ok(s
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeSet::new()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", self.0.display())),
        }
    }
    async fn set_drained(&self, host: &str, drained: bool) -> anyhow::Result<()> {
        let mut set = self.drained().await?;
        match drained {
            true => set.insert(host.to_string()),
            false => set.remove(host),
        };
        let text: String = set.iter().map(|h| format!("{h}\n")).collect();
        let tmp = self.0.with_extension("tmp");
        tokio::fs::write(&tmp, text)
            .await
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        tokio::fs::rename(&tmp, &self.0)
            .await
            .with_context(|| format!("cannot write {}", self.0.display()))?;
        Ok(())
    }
}

/// The routes (merged into the controller's, behind its API key).
pub fn router(scheduler: Scheduler) -> axum::Router {
    axum::Router::new()
        .route(
            "/hosts/{id}/drain",
            axum::routing::post(drain).get(status).delete(undrain),
        )
        .with_state(scheduler)
}

fn checked(id: &str) -> Result<&str, ApiErr> {
    let ok = !id.is_empty()
        && id.len() <= MAX_HOST_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    match ok {
        true => Ok(id),
        false => Err(ApiErr::new(
            ErrorCode::BadRequest,
            format!(
                "invalid host id {:?}: letters, digits, '-', '_' and '.', at most {MAX_HOST_ID}",
                id.chars().take(MAX_HOST_ID).collect::<String>()
            ),
        )),
    }
}

fn answer(scheduler: &Scheduler, id: &str) -> Result<Json<DrainStatus>, ApiErr> {
    let p = scheduler
        .drain_progress(id)
        .map_err(crate::controller::api_err)?;
    Ok(Json(DrainStatus {
        host: id.to_string(),
        drained: p.drained,
        jobs_left: p.jobs_left,
    }))
}

/// `POST /hosts/{id}/drain`: no new job goes there and its jobs move (at once; the answer
/// says how many are left, `GET` says it again).
async fn drain(
    State(scheduler): State<Scheduler>,
    Path(id): Path<String>,
) -> Result<Json<DrainStatus>, ApiErr> {
    let id = checked(&id)?;
    scheduler
        .set_drained(id, true)
        .await
        .map_err(crate::controller::api_err)?;
    answer(&scheduler, id)
}

async fn undrain(
    State(scheduler): State<Scheduler>,
    Path(id): Path<String>,
) -> Result<Json<DrainStatus>, ApiErr> {
    let id = checked(&id)?;
    scheduler
        .set_drained(id, false)
        .await
        .map_err(crate::controller::api_err)?;
    answer(&scheduler, id)
}

async fn status(
    State(scheduler): State<Scheduler>,
    Path(id): Path<String>,
) -> Result<Json<DrainStatus>, ApiErr> {
    answer(&scheduler, checked(&id)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_file_book_keeps_the_set_across_instances() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let book = FileBook(path.clone());
        assert!(book.drained().await.unwrap().is_empty());
        book.set_drained("h1", true).await.unwrap();
        book.set_drained("h2", true).await.unwrap();
        book.set_drained("h1", false).await.unwrap();
        let again = FileBook(path);
        assert_eq!(
            again.drained().await.unwrap(),
            BTreeSet::from(["h2".to_string()])
        );
    }

    /// A leader change keeps the drained set: another scheduler on the same etcd reads it at
    /// start, and follows a change made elsewhere within a poll.
    #[tokio::test]
    async fn the_drained_set_in_etcd_is_every_schedulers() {
        let Some(etcd) = slipway_testkit::etcd::etcd_cluster(1) else {
            return;
        };
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = slipway_etcd::Client::connect(&etcd.client_urls())
            .await
            .unwrap();
        let first = EtcdBook(client.clone());
        first.set_drained("h1", true).await.unwrap();
        first.set_drained("h2", true).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let store: Arc<dyn slipway_store::Store> =
            Arc::new(slipway_store::open(&url).await.unwrap());
        let next = Scheduler::new(store, Default::default());
        next.set_drain_book(Arc::new(EtcdBook(client))).await;
        assert_eq!(
            next.drained_hosts(),
            BTreeSet::from(["h1".to_string(), "h2".to_string()])
        );
        first.set_drained("h1", false).await.unwrap();
        let deadline = std::time::Instant::now() + slipway_scheduler::drain::DRAIN_POLL * 5;
        while next.drained_hosts().contains("h1") {
            assert!(
                std::time::Instant::now() < deadline,
                "the undrain was not seen"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(next.drained_hosts(), BTreeSet::from(["h2".to_string()]));
        // Undrain of a host nobody follows nor drained: not found.
        assert!(matches!(
            next.set_drained("nope", false).await,
            Err(slipway_scheduler::SchedError::NotFound(_))
        ));
    }

    #[test]
    fn host_ids_are_checked() {
        assert!(checked("host-1.a_b").is_ok());
        for bad in ["", "a/b", "a b", &"x".repeat(129)] {
            let e = checked(bad).unwrap_err();
            assert_eq!(e.0.code, ErrorCode::BadRequest, "{bad}");
        }
    }
}
