//! Test harness: an agent on real runc with names (bridge, subnet, nft table, cgroup parent,
//! data dir, runc root) unique to the test, and a `Drop` that removes everything it owns even
//! when the test failed half-way.

use slipway_host::runc::network::{self, NetworkConfig};
use slipway_host::runc::{RuncConfig, RuncRuntime};
use slipway_host::{Agent, AgentConfig, HostJob, JobConfig, LogLine};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// True when the test needs root and we are not: a counted skip, or a failure under CI /
/// `SLIPWAY_REQUIRE_ALL=1` (`slipway_testkit::skip`).
pub fn skip_unless_root(test: &str) -> bool {
    slipway_testkit::skip_unless_root(test)
}

/// Stacks are shared by all tests of a run (and across runs): built once, keyed by recipe hash.
pub fn stacks_dir() -> PathBuf {
    std::env::var_os("SLIPWAY_TEST_STACKS")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("slipway-test-stacks"))
}

pub fn busybox() -> PathBuf {
    slipway_host::stack::build(&stacks_dir(), "busybox", false).expect("building the busybox stack")
}

pub fn agent_exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_slipway-host-agent"))
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Names unique to one test agent.
#[derive(Clone, Debug)]
pub struct Names {
    pub net: NetworkConfig,
    pub cgroup_parent: String,
}

impl Names {
    pub fn new() -> Self {
        let c = COUNTER.fetch_add(1, Ordering::SeqCst);
        let n = (std::process::id().wrapping_mul(7) + c * 1013) % 20_000;
        Names {
            net: NetworkConfig {
                bridge: format!("slwt{n}"),
                subnet: Ipv4Addr::new(100, 101 + (n / 256) as u8, (n % 256) as u8, 0),
                prefix: 24,
                nft_table: format!("slwt{n}"),
            },
            cgroup_parent: format!("slipway-test-{n}"),
        }
    }

    pub fn runc_config(&self, data_dir: &Path) -> RuncConfig {
        let mut rc = RuncConfig::new(data_dir);
        rc.network = self.net.clone();
        rc.cgroup_parent = self.cgroup_parent.clone();
        rc.stacks_dir = stacks_dir();
        rc.shim_command = vec![agent_exe().into(), "shim".into()];
        rc
    }

    /// Best-effort removal of everything an agent with these names may have left.
    pub fn destroy(&self, data_dir: &Path) {
        slipway_testkit::runc::remove_agent_leftovers(
            data_dir,
            &self.cgroup_parent,
            network::remove_netns,
        );
        network::teardown_host(&self.net);
    }

    /// Job cgroups still present below this agent's parent, in any controller.
    pub fn job_cgroups(&self) -> Vec<PathBuf> {
        cgroup_controllers()
            .into_iter()
            .filter_map(|c| std::fs::read_dir(c.join(&self.cgroup_parent)).ok())
            .flat_map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()))
            .collect()
    }
}

pub use slipway_testkit::runc::{cgroup_controllers, mounts_under};

/// An in-process agent on real runc.
pub struct TestHost {
    pub agent: Agent,
    pub names: Names,
    pub dir: tempfile::TempDir,
}

impl TestHost {
    pub async fn start() -> TestHost {
        busybox();
        let dir = tempfile::Builder::new()
            .prefix("slipway-host-test")
            .tempdir()
            .unwrap();
        let names = Names::new();
        let rc = names.runc_config(dir.path());
        let rt = tokio::task::spawn_blocking(move || RuncRuntime::new(rc))
            .await
            .unwrap()
            .expect("starting the runc runtime");
        let agent = Agent::start(AgentConfig::new(dir.path()), Arc::new(rt))
            .await
            .unwrap();
        TestHost { agent, names, dir }
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        self.names.destroy(self.dir.path());
    }
}

pub fn job(id_prefix: &str, args: &[&str]) -> HostJob {
    HostJob {
        id: format!(
            "{id_prefix}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..10]
        ),
        app_id: "app-1".into(),
        app_name: "testapp".into(),
        release_id: "rel-1".into(),
        process_type: "web".into(),
        metadata: Default::default(),
        config: JobConfig::new("busybox", args),
        resources: Default::default(),
    }
}

/// `GET path` over plain HTTP/1.0; retries until `timeout`. Returns (status, body).
pub async fn http_get(addr: std::net::SocketAddr, path: &str, timeout: Duration) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deadline = Instant::now() + timeout;
    loop {
        let attempt = async {
            let mut s = tokio::net::TcpStream::connect(addr).await?;
            s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
                .await?;
            let mut buf = Vec::new();
            s.read_to_end(&mut buf).await?;
            Ok::<_, std::io::Error>(String::from_utf8_lossy(&buf).into_owned())
        };
        match tokio::time::timeout(Duration::from_secs(2), attempt).await {
            Ok(Ok(resp)) => {
                let code = resp
                    .split(' ')
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
                let body = resp.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
                return (code, body.to_string());
            }
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
            other => panic!("GET http://{addr}{path} failed until the timeout: {other:?}"),
        }
    }
}

pub async fn log_lines(api: &dyn slipway_host::HostApi, id: &str) -> Vec<LogLine> {
    use futures_util::StreamExt;
    api.logs(id, false).await.unwrap().collect().await
}
