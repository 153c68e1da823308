//! Attaching to a one-off job (`POST /apps/:app/jobs/:job/attach`, an HTTP upgrade): the
//! connection then carries the job's frames (docs/api.md); the CLI reads and writes them.

use crate::{Client, ClientError, Result};
use reqwest::Method;

/// The `Upgrade` header value the controller expects.
pub const ATTACH_UPGRADE: &str = "slipway-attach";

impl Client {
    /// Attaches to a job started with `attach: true`; returns the raw upgraded connection.
    pub async fn attach_job(&self, app: &str, job: &str) -> Result<reqwest::Upgraded> {
        let url = self.endpoint(&["apps", app, "jobs", job, "attach"]);
        let resp = self
            .request(Method::POST, url)
            .header(reqwest::header::CONNECTION, "Upgrade")
            .header(reqwest::header::UPGRADE, ATTACH_UPGRADE)
            .send()
            .await
            .map_err(|e| ClientError::from_reqwest(&self.display_url, e))?;
        if resp.status() != reqwest::StatusCode::SWITCHING_PROTOCOLS {
            return Err(self.error_from(resp).await);
        }
        resp.upgrade()
            .await
            .map_err(|e| ClientError::from_reqwest(&self.display_url, e))
    }
}
