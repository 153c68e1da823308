//! The blob store of a host process that runs no blob store itself (`--roles host`): the
//! controllers' `/blobs` API, found in discovery (`slipway-controller`, meta `url`) on each
//! call, or at `--controller-url`. Without it such a host could run no slug and no image: the
//! layers it must fetch were a controller's, which it had no way to reach.

use slipway_blobstore::{BlobError, BlobInfo, BlobStore, Body, Digest, HttpBlobStore};
use slipway_discovery::Registry;
use std::sync::{Arc, Mutex};

pub struct ControllersBlobStore {
    registry: Option<Arc<dyn Registry>>,
    /// `--controller-url`, used when discovery names no controller.
    fixed: Option<String>,
    api_key: String,
    /// The client of the controller last used, while discovery still lists it.
    current: Mutex<Option<(String, Arc<HttpBlobStore>)>>,
}

impl ControllersBlobStore {
    pub fn new(
        registry: Option<Arc<dyn Registry>>,
        fixed: Option<String>,
        api_key: &str,
    ) -> ControllersBlobStore {
        ControllersBlobStore {
            registry,
            fixed,
            api_key: api_key.to_string(),
            current: Mutex::new(None),
        }
    }

    /// A controller's blob store: the one used last if discovery still lists it, else the
    /// oldest listed, else `--controller-url`.
    async fn pick(&self) -> Result<Arc<HttpBlobStore>, BlobError> {
        let mut urls = Vec::new();
        if let Some(r) = &self.registry {
            match r.instances(crate::ops::CONTROLLER_SERVICE).await {
                Ok(list) => {
                    urls.extend(list.into_iter().filter_map(|i| i.meta.get("url").cloned()))
                }
                Err(e) => tracing::warn!("cannot list the controllers in discovery: {e}"),
            }
        }
        urls.extend(self.fixed.clone());
        let mut current = self.current.lock().expect("blob store client");
        if let Some((url, client)) = current.as_ref()
            && urls.contains(url)
        {
            return Ok(client.clone());
        }
        let Some(url) = urls.into_iter().next() else {
            return Err(BlobError::Http(
                "no controller to fetch blobs from: none is registered in discovery \
                 (slipway-controller) and --controller-url is not set"
                    .into(),
            ));
        };
        let client = Arc::new(HttpBlobStore::new(url.clone(), Some(self.api_key.clone())));
        *current = Some((url, client.clone()));
        Ok(client)
    }
}

#[async_trait::async_trait]
impl BlobStore for ControllersBlobStore {
    async fn put(&self, body: Body, expected: Option<&Digest>) -> Result<BlobInfo, BlobError> {
        self.pick().await?.put(body, expected).await
    }
    async fn get(&self, d: &Digest) -> Result<Option<(BlobInfo, Body)>, BlobError> {
        self.pick().await?.get(d).await
    }
    async fn head(&self, d: &Digest) -> Result<Option<BlobInfo>, BlobError> {
        self.pick().await?.head(d).await
    }
    async fn delete(&self, d: &Digest) -> Result<bool, BlobError> {
        self.pick().await?.delete(d).await
    }
    async fn list(&self) -> Result<Vec<BlobInfo>, BlobError> {
        self.pick().await?.list().await
    }
}
