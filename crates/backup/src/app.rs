//! One app's export (`slipway export`, `slipway import`): `app.json` with the app, its current
//! release and that release's artifacts, its formation and routes (with their certificates),
//! followed by the blobs those artifacts name. The env is the release's. Resources (databases)
//! do not exist in Slipway yet; their dumps will be members of their own.

use serde::{Deserialize, Serialize};
use slipway_blobstore::Digest;
use slipway_types::{App, Artifact, Formation, Release, Route};

/// The member holding [`AppExport`].
pub const APP_JSON: &str = "app.json";
/// Bound on `app.json` when imported (it is read whole; refused before it is read).
pub const MAX_APP_JSON_BYTES: u64 = crate::archive::MAX_APP_FILE_BYTES;

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct AppExport {
    pub app: App,
    /// The current release; none for an app never deployed.
    #[serde(default)]
    pub release: Option<Release>,
    /// The release's artifacts, in its order.
    #[serde(default)]
    pub artifacts: Vec<Artifact>,
    /// The release's formation (process counts), if any.
    #[serde(default)]
    pub formation: Option<Formation>,
    #[serde(default)]
    pub routes: Vec<Route>,
}

impl AppExport {
    /// Every blob the artifacts name (slug, image manifest, config and layers), once each.
    pub fn blobs(&self) -> Vec<Digest> {
        let mut out: Vec<Digest> = self
            .artifacts
            .iter()
            .flat_map(slipway_blobstore::gc::artifact_digests)
            .collect();
        out.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        out.dedup();
        out
    }
}
