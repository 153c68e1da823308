//! Typed HTTP client for the controller API (docs/api.md): one async method per endpoint,
//! returning the `slipway-types` shapes, and an SSE stream of events.
//!
//! The CLI and the daemon roles (scheduler, host agents in cluster mode) all talk to the
//! controller through this crate, so errors are phrased for people: the CLI prints them as-is.

#![forbid(unsafe_code)]

pub mod attach;
mod error;
mod log;
mod sse;

pub use error::ClientError;
/// Re-exported so that callers of [`Client::events_stream`] can consume it without adding
/// futures-util themselves.
pub use futures_util::{Stream, StreamExt};
pub use log::LogQuery;
pub use sse::{SseMessage, SseParser};

use reqwest::{Method, StatusCode, Url};
use serde::{Serialize, de::DeserializeOwned};
use slipway_types::{
    ApiError, App, AppDeletion, AppUpdate, Artifact, ClusterInfo, Deployment, ErrorCode, Event,
    EventFilter, Formation, FormationUpdate, Id, Job, NewApp, NewArtifact, NewDeployment, NewJob,
    NewRelease, NewRoute, OutputLine, Release, Route, RouteType, RouteUpdate, SetRelease,
};
use std::time::Duration;

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Plain requests get this long; event streams have no overall limit.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest response body read into memory (a whole list of apps, releases, routes or
/// events); a bigger one is refused rather than read until the process runs out of memory.
pub const MAX_BODY: usize = 64 << 20;
/// The most one line of a streamed job output or log may hold (the host cuts a job's lines far
/// shorter); a longer one ends the stream instead of being buffered without end.
pub const MAX_LINE: usize = 1 << 20;

fn line_too_long(url: &str) -> ClientError {
    ClientError::Protocol {
        url: url.to_string(),
        reason: format!("a streamed line is over the {MAX_LINE} byte limit"),
    }
}

/// The most of an error body read (only its message is shown).
const MAX_ERROR_BODY: usize = 64 << 10;

/// The header that carries the cluster token on the controller's internal routes (the
/// `Authorization` header carries the API key there).
pub const CLUSTER_TOKEN_HEADER: &str = "slipway-cluster-token";

/// A connection to one controller. Cheap to clone (the connection pool is shared).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    /// The URL as the user gave it, for messages.
    display_url: String,
    key: String,
}

/// Written by hand so that a `?client` in a log line never prints the API key.
impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.display_url)
            .field("key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Builds a client for the controller at `url` (e.g. `http://127.0.0.1:8080`) with API key
    /// `key` (sent as a Bearer token; an empty key sends none).
    ///
    /// Installs rustls' ring crypto provider first: reqwest is built without a default provider
    /// (so aws-lc-rs stays out of the build) and would panic without one.
    pub fn new(url: &str, key: &str) -> Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let invalid = |reason: &str| ClientError::InvalidUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let base = Url::parse(url.trim()).map_err(|e| invalid(&e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(invalid("use an http:// or https:// URL"));
        }
        if base.host_str().is_none_or(str::is_empty) {
            return Err(invalid("the URL has no host"));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("slipway-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::from_reqwest(url, e))?;
        Ok(Client {
            http,
            base,
            display_url: url.trim().trim_end_matches('/').to_string(),
            key: key.to_string(),
        })
    }

    /// The server URL as configured (without a trailing slash).
    pub fn url(&self) -> &str {
        &self.display_url
    }

    /// The base URL joined with path segments, each percent-encoded (so an app name typed by
    /// a user can never address another endpoint).
    fn endpoint(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        {
            let mut path = url
                .path_segments_mut()
                .expect("http(s) URLs always have a path");
            path.pop_if_empty();
            path.extend(segments);
        }
        url
    }

    fn request(&self, method: Method, url: Url) -> reqwest::RequestBuilder {
        let req = self.http.request(method, url);
        if self.key.is_empty() {
            req
        } else {
            req.bearer_auth(&self.key)
        }
    }

    /// Sends a request and returns the successful response, or the server's error.
    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let resp = req
            .send()
            .await
            .map_err(|e| ClientError::from_reqwest(&self.display_url, e))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(self.error_from(resp).await)
    }

    /// Reads an error response. Non-JSON bodies (a proxy's HTML page) become an ApiError
    /// whose code follows the status, so callers can still branch on it.
    async fn error_from(&self, resp: reqwest::Response) -> ClientError {
        let status = resp.status();
        let body = read_limited(resp, MAX_ERROR_BODY, &self.display_url)
            .await
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let error = serde_json::from_str::<ApiError>(&body).unwrap_or_else(|_| {
            let snippet: String = body.trim().chars().take(200).collect();
            let mut message = format!("the server answered HTTP {status}");
            if !snippet.is_empty() {
                message.push_str(": ");
                message.push_str(&snippet);
            }
            ApiError::new(code_for_status(status), message)
        });
        ClientError::Api {
            status: status.as_u16(),
            error,
        }
    }

    async fn call<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&B>,
    ) -> Result<T> {
        let mut req = self
            .request(method, self.endpoint(segments))
            .timeout(REQUEST_TIMEOUT);
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = self.send(req).await?;
        let bytes = read_limited(resp, MAX_BODY, &self.display_url).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol {
            url: self.display_url.clone(),
            reason: format!("cannot read the response to /{}: {e}", segments.join("/")),
        })
    }

    async fn get<T: DeserializeOwned>(&self, segments: &[&str]) -> Result<T> {
        self.call::<(), T>(Method::GET, segments, None).await
    }

    async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        segments: &[&str],
        body: &B,
    ) -> Result<T> {
        self.call(Method::POST, segments, Some(body)).await
    }

    async fn put<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        segments: &[&str],
        body: &B,
    ) -> Result<T> {
        self.call(Method::PUT, segments, Some(body)).await
    }

    async fn delete<T: DeserializeOwned>(&self, segments: &[&str]) -> Result<T> {
        self.call::<(), T>(Method::DELETE, segments, None).await
    }

    // ---- endpoints, in docs/api.md's order ----

    /// `GET /ping` (no auth needed): is the server up?
    pub async fn ping(&self) -> Result<()> {
        let _: serde_json::Value = self.get(&["ping"]).await?;
        Ok(())
    }

    pub async fn cluster_info(&self) -> Result<ClusterInfo> {
        self.get(&["cluster"]).await
    }

    /// `GET /hosts`: the hosts the scheduler follows (`slipway host list`).
    pub async fn hosts(&self) -> Result<Vec<slipway_types::HostInfo>> {
        self.get(&["hosts"]).await
    }

    /// `GET /cluster/token`: the cluster token hosts and routers present (`slipway cluster token`).
    pub async fn cluster_token(&self) -> Result<String> {
        let v: serde_json::Value = self.get(&["cluster", "token"]).await?;
        Ok(v["token"].as_str().unwrap_or_default().to_string())
    }

    /// `POST /hosts/{id}/drain`: no new job goes to the host and its jobs move elsewhere.
    pub async fn drain_host(&self, host: &str) -> Result<slipway_types::DrainStatus> {
        self.post(&["hosts", host, "drain"], &serde_json::json!({}))
            .await
    }

    /// `GET /hosts/{id}/drain`: whether the host is drained and how many jobs it still has.
    pub async fn drain_status(&self, host: &str) -> Result<slipway_types::DrainStatus> {
        self.get(&["hosts", host, "drain"]).await
    }

    /// `DELETE /hosts/{id}/drain`: the host takes jobs again.
    pub async fn undrain_host(&self, host: &str) -> Result<slipway_types::DrainStatus> {
        self.delete(&["hosts", host, "drain"]).await
    }

    /// `GET /cluster/status`: etcd members, role leaders, controllers, routers, backends.
    pub async fn cluster_status(&self) -> Result<slipway_types::ClusterStatus> {
        self.get(&["cluster", "status"]).await
    }

    pub async fn create_app(&self, app: &NewApp) -> Result<App> {
        self.post(&["apps"], app).await
    }

    pub async fn apps(&self) -> Result<Vec<App>> {
        self.get(&["apps"]).await
    }

    /// An app by id or name.
    pub async fn app(&self, app: &str) -> Result<App> {
        self.get(&["apps", app]).await
    }

    pub async fn update_app(&self, app: &str, update: &AppUpdate) -> Result<App> {
        self.post(&["apps", app], update).await
    }

    pub async fn delete_app(&self, app: &str) -> Result<AppDeletion> {
        self.delete(&["apps", app]).await
    }

    pub async fn create_artifact(&self, artifact: &NewArtifact) -> Result<Artifact> {
        self.post(&["artifacts"], artifact).await
    }

    pub async fn artifact(&self, id: Id) -> Result<Artifact> {
        self.get(&["artifacts", &id.to_string()]).await
    }

    /// Fails with a conflict while a release names the artifact.
    pub async fn delete_artifact(&self, id: Id) -> Result<()> {
        let _: serde_json::Value = self.delete(&["artifacts", &id.to_string()]).await?;
        Ok(())
    }

    /// The app's recorded builds (one per push that got as far as building), newest first.
    pub async fn builds(&self, app: &str) -> Result<Vec<slipway_types::Build>> {
        self.get(&["apps", app, "builds"]).await
    }

    pub async fn build(&self, app: &str, id: Id) -> Result<slipway_types::Build> {
        self.get(&["apps", app, "builds", &id.to_string()]).await
    }

    /// A build's transcript: the lines its push printed as `remote: …`.
    pub async fn build_log(&self, app: &str, id: Id) -> Result<String> {
        let segments = ["apps", app, "builds", &id.to_string(), "log"];
        let req = self
            .request(Method::GET, self.endpoint(&segments))
            .timeout(REQUEST_TIMEOUT);
        self.send(req)
            .await?
            .text()
            .await
            .map_err(|e| ClientError::from_reqwest(&self.display_url, e))
    }

    pub async fn create_release(&self, app: &str, release: &NewRelease) -> Result<Release> {
        self.post(&["apps", app, "releases"], release).await
    }

    /// The app's releases, newest first.
    pub async fn releases(&self, app: &str) -> Result<Vec<Release>> {
        self.get(&["apps", app, "releases"]).await
    }

    pub async fn release(&self, id: Id) -> Result<Release> {
        self.get(&["releases", &id.to_string()]).await
    }

    /// Fails with a conflict when `id` is the app's current release.
    pub async fn delete_release(&self, app: &str, id: Id) -> Result<()> {
        let _: serde_json::Value = self
            .delete(&["apps", app, "releases", &id.to_string()])
            .await?;
        Ok(())
    }

    /// `GET /apps/:app/release`. A 404 means either that the app does not exist or that it has
    /// no release yet; [`Client::current_release`] tells the two apart.
    pub async fn app_release(&self, app: &str) -> Result<Release> {
        self.get(&["apps", app, "release"]).await
    }

    /// The app's current release, `None` when it has none (an unknown app is still an error).
    pub async fn current_release(&self, app: &str) -> Result<Option<Release>> {
        match self.app(app).await?.release {
            None => Ok(None),
            Some(id) => self.release(id).await.map(Some),
        }
    }

    /// Makes `release` the app's current release (no deploy).
    pub async fn set_app_release(&self, app: &str, release: Id) -> Result<App> {
        self.put(&["apps", app, "release"], &SetRelease { id: release })
            .await
    }

    pub async fn put_formation(
        &self,
        app: &str,
        release: Id,
        update: &FormationUpdate,
    ) -> Result<Formation> {
        self.put(&["apps", app, "formations", &release.to_string()], update)
            .await
    }

    pub async fn formation(&self, app: &str, release: Id) -> Result<Formation> {
        self.get(&["apps", app, "formations", &release.to_string()])
            .await
    }

    pub async fn formations(&self, app: &str) -> Result<Vec<Formation>> {
        self.get(&["apps", app, "formations"]).await
    }

    pub async fn jobs(&self, app: &str) -> Result<Vec<Job>> {
        self.get(&["apps", app, "jobs"]).await
    }

    pub async fn job(&self, app: &str, job: &str) -> Result<Job> {
        self.get(&["apps", app, "jobs", job]).await
    }

    /// Starts a build job for app `app_id` on this controller's scheduler, which must lead (a
    /// controller whose scheduler does not lead forwards its builds to the leader's). `job` is
    /// the host's job description; besides the API key it takes the cluster token
    /// (`Slipway-Cluster-Token`): the job may mount host paths.
    pub async fn start_build_job<B: Serialize + ?Sized>(
        &self,
        app_id: &str,
        job: &B,
        cluster_token: &str,
    ) -> Result<Job> {
        let segments = ["internal", "apps", app_id, "build-jobs"];
        let req = self
            .request(Method::POST, self.endpoint(&segments))
            .timeout(REQUEST_TIMEOUT)
            .header(CLUSTER_TOKEN_HEADER, cluster_token)
            .json(job);
        let resp = self.send(req).await?;
        let bytes = read_limited(resp, MAX_BODY, &self.display_url).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol {
            url: self.display_url.clone(),
            reason: format!("cannot read the started build job: {e}"),
        })
    }

    /// Stops a job (`slipway kill`); a formation's job is replaced by the scheduler.
    pub async fn kill_job(&self, app: &str, job: &str) -> Result<Job> {
        self.delete(&["apps", app, "jobs", job]).await
    }

    /// Starts a one-off job (`slipway run -d`).
    pub async fn run_job(&self, app: &str, job: &NewJob) -> Result<Job> {
        self.post(&["apps", app, "jobs"], job).await
    }

    /// A job's output lines until it exits (an attached `slipway run`).
    pub async fn job_output(
        &self,
        app: &str,
        job: &str,
    ) -> Result<futures_util::stream::BoxStream<'static, Result<OutputLine>>> {
        use futures_util::StreamExt;
        let url = self.endpoint(&["apps", app, "jobs", job, "output"]);
        let resp = self.send(self.request(Method::GET, url)).await?;
        let display = self.display_url.clone();
        let bytes = resp.bytes_stream().boxed();
        let lines = futures_util::stream::unfold(
            (bytes, Vec::<u8>::new(), display),
            |(mut bytes, mut buf, display)| async move {
                loop {
                    if let Some(i) = buf.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = buf.drain(..=i).collect();
                        let parsed = serde_json::from_slice::<OutputLine>(&line).map_err(|e| {
                            ClientError::Protocol {
                                url: display.clone(),
                                reason: format!("cannot read a job output line: {e}"),
                            }
                        });
                        return Some((parsed, (bytes, buf, display)));
                    }
                    if buf.len() > MAX_LINE {
                        let err = line_too_long(&display);
                        return Some((Err(err), (bytes, Vec::new(), display)));
                    }
                    match bytes.next().await {
                        Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                        Some(Err(e)) => {
                            let err = ClientError::from_reqwest(&display, e);
                            return Some((Err(err), (bytes, Vec::new(), display)));
                        }
                        None => return None,
                    }
                }
            },
        );
        Ok(lines.boxed())
    }

    /// Starts a deployment of `release`; a conflict while another one is unfinished.
    pub async fn deploy(&self, app: &str, release: Id) -> Result<Deployment> {
        self.post(
            &["apps", app, "deploy"],
            &NewDeployment {
                release_id: release,
            },
        )
        .await
    }

    /// The app's deployments, newest first.
    pub async fn deployments(&self, app: &str) -> Result<Vec<Deployment>> {
        self.get(&["apps", app, "deployments"]).await
    }

    pub async fn deployment(&self, id: Id) -> Result<Deployment> {
        self.get(&["deployments", &id.to_string()]).await
    }

    /// Every app's routes (what a router loads).
    pub async fn all_routes(&self) -> Result<Vec<Route>> {
        self.get(&["routes"]).await
    }

    /// Fails with `conflict: Duplicate route` when the domain+path or port is taken.
    pub async fn create_route(&self, app: &str, route: &NewRoute) -> Result<Route> {
        self.post(&["apps", app, "routes"], route).await
    }

    pub async fn routes(&self, app: &str) -> Result<Vec<Route>> {
        self.get(&["apps", app, "routes"]).await
    }

    pub async fn route(&self, app: &str, kind: RouteType, id: Id) -> Result<Route> {
        self.get(&["apps", app, "routes", kind.as_str(), &id.to_string()])
            .await
    }

    pub async fn update_route(
        &self,
        app: &str,
        kind: RouteType,
        id: Id,
        update: &RouteUpdate,
    ) -> Result<Route> {
        self.put(
            &["apps", app, "routes", kind.as_str(), &id.to_string()],
            update,
        )
        .await
    }

    pub async fn delete_route(&self, app: &str, kind: RouteType, id: Id) -> Result<()> {
        let _: serde_json::Value = self
            .delete(&["apps", app, "routes", kind.as_str(), &id.to_string()])
            .await?;
        Ok(())
    }

    /// Past events matching the filter, oldest first.
    pub async fn events(&self, filter: &EventFilter) -> Result<Vec<Event>> {
        let url = events_url(self.endpoint(&["events"]), filter);
        let resp = self
            .send(self.request(Method::GET, url).timeout(REQUEST_TIMEOUT))
            .await?;
        let bytes = read_limited(resp, MAX_BODY, &self.display_url).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol {
            url: self.display_url.clone(),
            reason: format!("cannot read the events: {e}"),
        })
    }

    pub async fn event(&self, id: i64) -> Result<Event> {
        self.get(&["events", &id.to_string()]).await
    }

    /// Follows events as Server-Sent Events: first the past ones matching the filter (after
    /// `last_event_id`, or the filter's `since_id`), then live ones, until the server closes the
    /// stream. To resume after a disconnect, call again with the last id seen.
    pub async fn events_stream(
        &self,
        filter: &EventFilter,
        last_event_id: Option<i64>,
    ) -> Result<impl Stream<Item = Result<Event>> + Send + use<>> {
        let url = events_url(self.endpoint(&["events"]), filter);
        let mut req = self
            .request(Method::GET, url)
            .header(reqwest::header::ACCEPT, "text/event-stream");
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id.to_string());
        }
        let resp = self.send(req).await?;
        let display_url = self.display_url.clone();
        let state = (resp.bytes_stream().boxed(), SseParser::new(), Vec::new());
        Ok(futures_util::stream::unfold(Some(state), move |state| {
            let display_url = display_url.clone();
            async move {
                let (mut body, mut parser, mut pending) = state?;
                loop {
                    if !pending.is_empty() {
                        let msg: SseMessage = pending.remove(0);
                        let item = serde_json::from_str::<Event>(&msg.data).map_err(|e| {
                            ClientError::Protocol {
                                url: display_url.clone(),
                                reason: format!("bad event in the stream: {e}"),
                            }
                        });
                        return Some((item, Some((body, parser, pending))));
                    }
                    match body.next().await {
                        Some(Ok(chunk)) => match parser.push(&chunk) {
                            Ok(msgs) => pending = msgs,
                            Err(e) => {
                                let reason = e.to_string();
                                let err = ClientError::Protocol {
                                    url: display_url.clone(),
                                    reason,
                                };
                                return Some((Err(err), None));
                            }
                        },
                        Some(Err(e)) => {
                            return Some((Err(ClientError::from_reqwest(&display_url, e)), None));
                        }
                        None => return None,
                    }
                }
            }
        }))
    }
}

/// Reads a response body of at most `max` bytes: a peer sending more (or announcing more in
/// `Content-Length`) is refused once past the limit, not buffered whole.
async fn read_limited(mut resp: reqwest::Response, max: usize, url: &str) -> Result<Vec<u8>> {
    let too_large = || ClientError::Protocol {
        url: url.to_string(),
        reason: format!("the response is over the {max} byte limit"),
    };
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| ClientError::from_reqwest(url, e))?
    {
        if body.len() + chunk.len() > max {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `/events?app_id=&object_types=a,b&object_id=&since_id=&count=`
fn events_url(mut url: Url, filter: &EventFilter) -> Url {
    {
        let mut q = url.query_pairs_mut();
        if let Some(app) = filter.app_id {
            q.append_pair("app_id", &app.to_string());
        }
        if !filter.object_types.is_empty() {
            let types: Vec<&str> = filter.object_types.iter().map(|t| t.as_str()).collect();
            q.append_pair("object_types", &types.join(","));
        }
        if let Some(id) = &filter.object_id {
            q.append_pair("object_id", id);
        }
        if let Some(since) = filter.since_id {
            q.append_pair("since_id", &since.to_string());
        }
        if let Some(count) = filter.limit {
            q.append_pair("count", &count.to_string());
        }
    }
    if url.query() == Some("") {
        url.set_query(None);
    }
    url
}

fn code_for_status(status: StatusCode) -> ErrorCode {
    match status.as_u16() {
        400 => ErrorCode::BadRequest,
        401 | 403 => ErrorCode::Unauthorized,
        404 => ErrorCode::NotFound,
        405 => ErrorCode::MethodNotAllowed,
        409 => ErrorCode::Conflict,
        413 => ErrorCode::PayloadTooLarge,
        415 => ErrorCode::UnsupportedMediaType,
        422 => ErrorCode::ValidationError,
        502..=504 => ErrorCode::Unavailable,
        _ => ErrorCode::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use slipway_types::ObjectType;

    #[test]
    fn debug_output_names_the_url_but_never_the_key() {
        let c = Client::new("http://127.0.0.1:9/", "the-secret-api-key").unwrap();
        let shown = format!("{c:?}");
        assert!(shown.contains("127.0.0.1:9"), "{shown}");
        assert!(!shown.contains("the-secret-api-key"), "{shown}");
    }

    #[test]
    fn endpoints_encode_segments_and_keep_a_base_path() {
        let c = Client::new("http://127.0.0.1:9/", "k").unwrap();
        assert_eq!(
            c.endpoint(&["apps", "a/b", "release"]).as_str(),
            "http://127.0.0.1:9/apps/a%2Fb/release"
        );
        assert_eq!(c.url(), "http://127.0.0.1:9");
        let c = Client::new("https://example.com/api", "").unwrap();
        assert_eq!(
            c.endpoint(&["apps"]).as_str(),
            "https://example.com/api/apps"
        );
    }

    #[test]
    fn rejects_unusable_urls() {
        for bad in ["", "127.0.0.1:80", "ftp://x", "http://"] {
            let e = Client::new(bad, "k").unwrap_err();
            assert!(matches!(e, ClientError::InvalidUrl { .. }), "{bad}: {e}");
        }
    }

    #[test]
    fn event_filters_become_query_parameters() {
        let c = Client::new("http://h", "").unwrap();
        let url = events_url(c.endpoint(&["events"]), &EventFilter::default());
        assert_eq!(url.as_str(), "http://h/events");
        let filter = EventFilter {
            object_types: vec![ObjectType::App, ObjectType::AppRelease],
            since_id: Some(7),
            limit: Some(10),
            ..Default::default()
        };
        let url = events_url(c.endpoint(&["events"]), &filter);
        assert_eq!(
            url.as_str(),
            "http://h/events?object_types=app%2Capp_release&since_id=7&count=10"
        );
    }

    #[tokio::test]
    async fn refused_connections_say_so() {
        // Bind then drop a listener, so the port is (almost certainly) closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let err = Client::new(&url, "k").unwrap().ping().await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cannot reach the Slipway server at {url}: connection refused — is `slipway server` running?"
            )
        );
    }

    /// A peer that streams a body without end (chunked, no `Content-Length`) is cut off at
    /// the limit rather than read until the process runs out of memory.
    #[tokio::test]
    async fn an_endless_body_is_refused_at_the_limit() {
        endless_body(false).await;
    }

    /// The same for a streamed job output whose line never ends.
    #[tokio::test]
    async fn an_endless_output_line_is_refused() {
        endless_body(true).await;
    }

    async fn endless_body(streamed: bool) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut req = [0u8; 4096];
            let _ = conn.read(&mut req).await;
            let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                        transfer-encoding: chunked\r\n\r\n";
            conn.write_all(head.as_bytes()).await.unwrap();
            let chunk = format!("1000\r\n{}\r\n", "[".repeat(0x1000));
            // Far more than the limits (40 MiB); stops when the client hangs up.
            for _ in 0..10_000 {
                if conn.write_all(chunk.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
        let client = Client::new(&format!("http://{addr}"), "").unwrap();
        if streamed {
            use futures_util::StreamExt;
            let mut lines = client.job_output("app", "job").await.unwrap();
            let err = lines.next().await.unwrap().unwrap_err();
            assert!(err.to_string().contains("line is over"), "{err}");
            return;
        }
        let resp = client
            .http
            .get(format!("http://{addr}/routes"))
            .send()
            .await
            .unwrap();
        let err = read_limited(resp, 64 << 10, "test").await.unwrap_err();
        assert!(
            err.to_string().contains("over the 65536 byte limit"),
            "{err}"
        );
    }
}
