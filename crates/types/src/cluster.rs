//! What an operator sees of the cluster itself: `GET /hosts` (`slipway host list`) and
//! `GET /cluster/status` (`slipway cluster status`). Read-only views assembled by the
//! controller from the scheduler, discovery and etcd; nothing here is stored.

use crate::{StringMap, Timestamp};
use serde::{Deserialize, Serialize};

/// A host as the scheduler sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostState {
    /// Followed and answering: jobs may be placed on it.
    Up,
    /// Its process shuts down: no new jobs; its jobs are replaced elsewhere.
    ShuttingDown,
    /// Drained by the operator (`slipway host drain`): no new jobs; its jobs were moved.
    Drained,
    /// It stopped answering (or its registration expired); its jobs were replaced.
    Lost,
}

impl HostState {
    /// The word `slipway host list` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            HostState::Up => "up",
            HostState::ShuttingDown => "shutting down",
            HostState::Drained => "drained",
            HostState::Lost => "lost",
        }
    }
}

/// One row of `GET /hosts`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInfo {
    pub id: String,
    pub state: HostState,
    /// `IP:PORT` of its host API as it registered in discovery; `None` for an agent that runs
    /// inside the server's own process (it has no API of its own).
    #[serde(default)]
    pub addr: Option<String>,
    #[serde(default)]
    pub tags: StringMap,
    /// Jobs running on it (starting, up or stopping) as the scheduler tracks them.
    pub jobs: usize,
    /// Since when it has been in `state`, as the answering controller saw it.
    pub since: Timestamp,
}

/// Where the cluster coordinates (discovery, leader elections).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Coordination {
    /// The registry lives in the answering server's process: that server is the whole cluster.
    InProcess,
    /// etcd (`slipway server --etcd`).
    Etcd,
    /// This controller has no registry (neither the discovery role nor `--etcd`).
    #[default]
    None,
}

impl Coordination {
    pub fn as_str(self) -> &'static str {
        match self {
            Coordination::InProcess => "in-process",
            Coordination::Etcd => "etcd",
            Coordination::None => "none",
        }
    }
}

/// One etcd member, as its own status call answered (or did not).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcdMember {
    /// The member id, in hex as `etcdctl` prints it.
    pub id: String,
    pub name: String,
    /// The client URL that was asked.
    pub url: String,
    /// It answered its status call, reporting no errors and a raft leader.
    pub healthy: bool,
    /// It is the raft leader.
    pub leader: bool,
    #[serde(default)]
    pub version: Option<String>,
    /// Why it is not healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// An instance of a platform service in discovery (a controller, a router, a role's leader).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceMember {
    pub id: String,
    pub addr: String,
    /// Its public URL, when it registered one (controllers: `--advertise`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// The leader of a role that runs once per cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleLeader {
    /// `scheduler`, `housekeeping`.
    pub role: String,
    /// The discovery service its candidates campaign in (`slipway-scheduler`).
    pub service: String,
    /// `None`: no process campaigns (or won) yet.
    #[serde(default)]
    pub leader: Option<ServiceMember>,
}

/// `GET /cluster/status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub coordination: Coordination,
    /// `sqlite` or `postgres`.
    pub store: String,
    /// With etcd: every member the cluster lists (or, when the list cannot be read, every URL
    /// this controller was given), healthy or not.
    #[serde(default)]
    pub etcd: Vec<EtcdMember>,
    /// Why the etcd member list could not be read, if it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_error: Option<String>,
    #[serde(default)]
    pub leaders: Vec<RoleLeader>,
    #[serde(default)]
    pub controllers: Vec<ServiceMember>,
    #[serde(default)]
    pub routers: Vec<ServiceMember>,
    /// Hosts the scheduler follows (see `GET /hosts`).
    pub hosts: usize,
    /// Why a part could not be read (discovery unreachable…), one line each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_and_backends_have_stable_wire_names() {
        assert_eq!(
            serde_json::to_string(&HostState::ShuttingDown).unwrap(),
            "\"shutting_down\""
        );
        assert_eq!(HostState::ShuttingDown.as_str(), "shutting down");
        assert_eq!(
            serde_json::to_string(&Coordination::InProcess).unwrap(),
            "\"in_process\""
        );
        let m: ServiceMember = serde_json::from_str(r#"{"id":"a","addr":"1.2.3.4:80"}"#).unwrap();
        assert_eq!(m.url, None);
    }
}

/// `POST|GET|DELETE /hosts/{id}/drain`: where a host's drain stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainStatus {
    pub host: String,
    pub drained: bool,
    /// Formation jobs still on the host: 0 once every one moved (or stopped, for omni jobs).
    pub jobs_left: usize,
}
