//! The operator's views of the cluster: `GET /hosts` and `GET /cluster/status` (docs/api.md).
//! Both are read-only and behind the API key like every other endpoint; what they show comes
//! from the `Cluster` implementation (the scheduler, discovery, etcd), the store's backend from
//! the store.

use crate::AppState;
use crate::cluster::cluster;
use crate::error::ApiResult;
use axum::Json;
use axum::extract::State;
use slipway_types::{ClusterStatus, HostInfo};

/// `GET /hosts`: every host the scheduler follows, and those it lost, by id.
#[utoipa::path(operation_id = "cluster_hosts", get, path = "/hosts", tag = "meta", responses((status = 200, body = Vec<HostInfo>), crate::api::spec::ReadErrors))]
pub(crate) async fn hosts(State(s): State<AppState>) -> ApiResult<Json<Vec<HostInfo>>> {
    let mut hosts = cluster(&s)?.hosts().await?;
    hosts.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(Json(hosts))
}

/// `GET /cluster/status`. A controller without a scheduler still answers, with what it
/// knows (its store).
#[utoipa::path(operation_id = "cluster_status", get, path = "/cluster/status", tag = "meta", responses((status = 200, body = ClusterStatus), crate::api::spec::ReadErrors))]
pub(crate) async fn status(State(s): State<AppState>) -> ApiResult<Json<ClusterStatus>> {
    let mut status = match s.cluster.as_deref() {
        Some(c) => c.status().await?,
        None => ClusterStatus {
            warnings: vec!["this controller runs without a scheduler: it follows no hosts".into()],
            ..ClusterStatus::default()
        },
    };
    status.store = s.store.backend().to_string();
    Ok(Json(status))
}
