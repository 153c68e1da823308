//! How a formation's job becomes a host job: the release's process type on a stack, with the
//! release's artifacts as blob-store layers.
//!
//! - No artifacts: a process type runs its own `args` on the scheduler's default stack
//!   (`busybox`); a type without a command cannot run, and says so (`ps`) rather than looping.
//! - Slug artifacts (`blob:sha256:…`): the slug is a layer over the app's stack
//!   (`artifact.meta["stack"]`, else `release.meta["stack"]`, else the default), and the command
//!   goes through the stacks' slug runner: no args → `/runner/init start TYPE` (the Procfile's
//!   command), args → `/runner/init ARGS…` (so `slipway run CMD` gets the same environment).
//! - Image artifacts: no stack; the manifest's `layers[].digest` in order, the image's working
//!   dir and user (`meta["image.working_dir"]`, `meta["image.user"]`); args as given.
//!
//! Layers are in release order, bottom first; the host fetches each once by digest.

use slipway_host::{HealthCheck as HostCheck, HostJob, JobConfig, LayerRef, PortSpec, Resources};
use slipway_types::{App, Artifact, ArtifactType, HealthCheckType, Id, Release};

pub const NO_IMAGE: &str = "App release has no image, push a release first";

/// The slug runner every stack carries (`stacks/*/build.sh`).
pub const SLUG_RUNNER: &str = "/runner/init";

/// Why a release cannot become a host job, in words that say what to change. The job fails
/// with this message (a formation job's row, a one-off's 422).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JobSpecError {
    #[error("slug artifact {artifact} has no blob digest (uri {uri:?}): rebuild the app")]
    SlugWithoutDigest { artifact: Id, uri: String },
    #[error("image artifact {artifact} has no manifest layers: push the image again")]
    ImageWithoutLayers { artifact: Id },
    #[error("image artifact {artifact} has a layer without a digest")]
    LayerWithoutDigest { artifact: Id },
    #[error("release {release} mixes a slug and an image: a release runs one or the other")]
    MixedArtifacts { release: Id },
    #[error("process type {process_type} has no command and the release has no artifact")]
    NoCommand { process_type: String },
    #[error(
        "process type {process_type} has no command and the image has neither Entrypoint nor \
         Cmd: give the type a command (`slipway release add`)"
    )]
    ImageWithoutCommand { process_type: String },
    /// A one-off job without a command on a release with nothing to run.
    #[error("{}", NO_IMAGE)]
    NothingToRun,
    #[error(
        "app meta {NETWORK_META}={value:?} is not understood: use `isolated` (only the router \
         and the app's own jobs may connect to its jobs) or `flat` (the default)"
    )]
    UnknownNetwork { value: String },
}

impl crate::Scheduler {
    /// The release's artifacts, in release order (an error in words for the job).
    pub(crate) async fn release_artifacts(
        &self,
        release: &Release,
    ) -> Result<Vec<Artifact>, String> {
        let mut out = Vec::with_capacity(release.artifacts.len());
        for id in &release.artifacts {
            out.push(self.inner.store.get_artifact(*id).await.map_err(|e| {
                format!("cannot load artifact {id} of release {}: {e}", release.id)
            })?);
        }
        Ok(out)
    }
}

/// What a release's artifacts add to a job.
#[derive(Debug, Default, PartialEq)]
struct FromArtifacts {
    layers: Vec<LayerRef>,
    slug: bool,
    image: bool,
    stack: Option<String>,
    working_dir: Option<String>,
    user: Option<String>,
}

fn from_artifacts(
    release: &Release,
    artifacts: &[Artifact],
) -> Result<FromArtifacts, JobSpecError> {
    let mut out = FromArtifacts::default();
    for a in artifacts {
        match a.kind {
            ArtifactType::Slug => {
                let digest = a
                    .digest
                    .clone()
                    .or_else(|| a.uri.strip_prefix("blob:").map(str::to_string))
                    .filter(|d| d.starts_with("sha256:"))
                    .ok_or_else(|| JobSpecError::SlugWithoutDigest {
                        artifact: a.id,
                        uri: a.uri.clone(),
                    })?;
                out.layers.push(LayerRef { digest });
                out.slug = true;
                if let Some(s) = a.meta.get("stack").or_else(|| release.meta.get("stack")) {
                    out.stack = Some(s.clone());
                }
            }
            ArtifactType::Image => {
                let layers = a
                    .manifest
                    .as_ref()
                    .and_then(|m| m.get("layers"))
                    .and_then(|l| l.as_array())
                    .ok_or(JobSpecError::ImageWithoutLayers { artifact: a.id })?;
                for l in layers {
                    let digest = l
                        .get("digest")
                        .and_then(|d| d.as_str())
                        .ok_or(JobSpecError::LayerWithoutDigest { artifact: a.id })?;
                    out.layers.push(LayerRef {
                        digest: digest.to_string(),
                    });
                }
                out.image = true;
                out.working_dir = a.meta.get("image.working_dir").cloned().or(out.working_dir);
                out.user = a.meta.get("image.user").cloned().or(out.user);
            }
        }
    }
    if out.slug && out.image {
        return Err(JobSpecError::MixedArtifacts {
            release: release.id,
        });
    }
    Ok(out)
}

/// The host job for `process_type` of `release` with its `artifacts` (loaded in release order),
/// or a one-off job running `args` when `process_type` is None.
#[allow(clippy::too_many_arguments)]
pub fn host_job_with(
    id: &str,
    app: &App,
    release: &Release,
    artifacts: &[Artifact],
    process_type: Option<&str>,
    args: &[String],
    extra_env: &std::collections::BTreeMap<String, String>,
    stack: &str,
) -> Result<HostJob, JobSpecError> {
    let proc = process_type.and_then(|t| release.processes.get(t));
    let args: Vec<String> = if !args.is_empty() {
        args.to_vec()
    } else {
        proc.map(|p| p.args.clone()).unwrap_or_default()
    };
    let from = from_artifacts(release, artifacts)?;
    let args = match (from.slug, process_type) {
        // The slug runner reads the slug's Procfile for the type's command.
        (true, Some(t)) if args.is_empty() => {
            vec![SLUG_RUNNER.to_string(), "start".into(), t.to_string()]
        }
        (true, _) if !args.is_empty() => std::iter::once(SLUG_RUNNER.to_string())
            .chain(args)
            .collect(),
        _ => args,
    };
    if args.is_empty() {
        return Err(match process_type {
            Some(t) if release.artifacts.is_empty() => JobSpecError::NoCommand {
                process_type: t.to_string(),
            },
            Some(t) if from.image => JobSpecError::ImageWithoutCommand {
                process_type: t.to_string(),
            },
            _ => JobSpecError::NothingToRun,
        });
    }
    let stack = if from.image {
        ""
    } else {
        from.stack.as_deref().unwrap_or(stack)
    };
    let mut config = JobConfig::new(stack, &[]);
    config.args = args;
    config.layer_refs = from.layers;
    config.working_dir = from.working_dir.filter(|w| !w.is_empty());
    config.user = from.user.filter(|u| !u.is_empty());
    config.env = release.env.clone();
    config.isolated = network_isolated(app)?;
    if let Some(p) = proc {
        config.env.extend(p.env.clone());
        config.host_network = p.host_network;
        for port in &p.ports {
            let check = port
                .service
                .as_ref()
                .and_then(|s| s.check.as_ref())
                .map(|c| {
                    let mut h = match c.kind {
                        HealthCheckType::Tcp => HostCheck::tcp(),
                        HealthCheckType::Http => HostCheck::http(c.path.as_deref().unwrap_or("/")),
                    };
                    h.status = c.status;
                    h.interval_ms = c.interval_ms;
                    h.threshold = c.threshold;
                    h.start_timeout_ms = c.start_timeout_ms;
                    h.kill_down = c.kill_down;
                    h
                });
            config.ports.push(PortSpec {
                port: if port.port == 0 {
                    slipway_host::DEFAULT_WEB_PORT
                } else {
                    port.port
                },
                proto: port.proto.clone(),
                check,
            });
        }
    }
    config.env.extend(extra_env.clone());
    let resources = proc
        .map(|p| Resources {
            memory_bytes: p.resources.memory,
            disk_bytes: p.resources.disk,
            cpu_milli: p.resources.cpu,
            max_fd: p.resources.max_fd,
            max_procs: p.resources.max_procs.map(|n| n.min(i64::MAX as u64) as i64),
        })
        .unwrap_or_default();
    Ok(HostJob {
        id: id.to_string(),
        app_id: app.id.to_string(),
        app_name: app.name.clone(),
        release_id: release.id.to_string(),
        process_type: process_type.unwrap_or_default().to_string(),
        metadata: Default::default(),
        config,
        resources,
    })
}

/// The app meta key choosing who may connect to the app's jobs: `flat` (the default: every
/// job on the network) or `isolated` (the host's router and the app's own jobs only).
pub const NETWORK_META: &str = "network";

/// `app.meta["network"]`; any other value than `flat` or `isolated` fails the job in words
/// rather than silently leaving the app open.
fn network_isolated(app: &App) -> Result<bool, JobSpecError> {
    match app.meta.get(NETWORK_META).map(|v| v.trim()) {
        None | Some("" | "flat") => Ok(false),
        Some("isolated") => Ok(true),
        Some(other) => Err(JobSpecError::UnknownNetwork {
            value: other.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
    const D3: &str = "sha256:3333333333333333333333333333333333333333333333333333333333333333";

    fn app() -> App {
        serde_json::from_value(json!({
            "id": uuid::Uuid::new_v4(), "name": "web", "strategy": "all-at-once",
            "deploy_timeout": 120, "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z"
        }))
        .unwrap()
    }

    fn release(artifacts: &[&Artifact], meta: serde_json::Value, args: &[&str]) -> Release {
        serde_json::from_value(json!({
            "id": uuid::Uuid::new_v4(), "app_id": uuid::Uuid::new_v4(),
            "artifacts": artifacts.iter().map(|a| a.id).collect::<Vec<_>>(),
            "meta": meta,
            "processes": {"web": {"args": args}},
            "created_at": "2026-01-01T00:00:00Z"
        }))
        .unwrap()
    }

    fn artifact(kind: &str, uri: &str, digest: Option<&str>, extra: serde_json::Value) -> Artifact {
        let mut v = json!({
            "id": uuid::Uuid::new_v4(), "type": kind, "uri": uri, "digest": digest,
            "meta": {}, "created_at": "2026-01-01T00:00:00Z"
        });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        serde_json::from_value(v).unwrap()
    }

    fn digests(hj: &HostJob) -> Vec<&str> {
        hj.config
            .layer_refs
            .iter()
            .map(|l| l.digest.as_str())
            .collect()
    }

    fn job(
        r: &Release,
        arts: &[Artifact],
        t: Option<&str>,
        args: &[&str],
    ) -> Result<HostJob, JobSpecError> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        host_job_with(
            "j1",
            &app(),
            r,
            arts,
            t,
            &args,
            &Default::default(),
            "busybox",
        )
    }

    #[test]
    fn the_network_meta_key_isolates_the_app_and_rejects_unknown_values() {
        let r = release(&[], json!({}), &["httpd", "-f"]);
        let with = |v: Option<&str>| {
            let mut a = app();
            if let Some(v) = v {
                a.meta.insert(NETWORK_META.into(), v.into());
            }
            host_job_with(
                "j1",
                &a,
                &r,
                &[],
                Some("web"),
                &[],
                &Default::default(),
                "busybox",
            )
        };
        assert!(!with(None).unwrap().config.isolated);
        assert!(!with(Some("flat")).unwrap().config.isolated);
        assert!(with(Some("isolated")).unwrap().config.isolated);
        let e = with(Some("isolate")).unwrap_err();
        assert!(
            e.to_string()
                .contains("network=\"isolate\" is not understood"),
            "{e}"
        );
    }

    #[test]
    fn releases_without_artifacts_keep_their_args_on_the_default_stack() {
        let r = release(&[], json!({}), &["httpd", "-f"]);
        let hj = job(&r, &[], Some("web"), &[]).unwrap();
        assert_eq!(hj.config.stack, "busybox");
        assert_eq!(hj.config.args, ["httpd", "-f"]);
        assert!(hj.config.layer_refs.is_empty());
        let r = release(&[], json!({}), &[]);
        let e = job(&r, &[], Some("web"), &[]).unwrap_err();
        assert!(e.to_string().contains("has no command"), "{e}");
    }

    #[test]
    fn slugs_run_through_the_slug_runner_on_the_apps_stack() {
        let slug = artifact(
            "slug",
            &format!("blob:{D1}"),
            Some(D1),
            json!({"meta": {"stack": "bookworm"}}),
        );
        let r = release(&[&slug], json!({}), &[]);
        let arts = [slug.clone()];
        let hj = job(&r, &arts, Some("web"), &[]).unwrap();
        assert_eq!(hj.config.stack, "bookworm");
        assert_eq!(hj.config.args, ["/runner/init", "start", "web"]);
        assert_eq!(digests(&hj), [D1]);
        assert_eq!(hj.config.user, None);
        // `slipway run CMD` on a slug: the same runner, so the same environment.
        let hj = job(&r, &arts, None, &["rake", "db:migrate"]).unwrap();
        assert_eq!(hj.config.args, ["/runner/init", "rake", "db:migrate"]);
        // A type with args given in the release also goes through the runner.
        let r2 = release(&[&slug], json!({}), &["./bin/web"]);
        let hj = job(&r2, &arts, Some("web"), &[]).unwrap();
        assert_eq!(hj.config.args, ["/runner/init", "./bin/web"]);
        // The stack: artifact meta, else release meta, else the scheduler's default.
        let bare = artifact("slug", &format!("blob:{D2}"), None, json!({}));
        let r3 = release(&[&bare], json!({"stack": "bookworm"}), &[]);
        let hj = job(&r3, std::slice::from_ref(&bare), Some("web"), &[]).unwrap();
        assert_eq!(hj.config.stack, "bookworm");
        assert_eq!(digests(&hj), [D2], "digest taken from the blob: uri");
        let r4 = release(&[&bare], json!({}), &[]);
        let hj = job(&r4, &[bare], Some("web"), &[]).unwrap();
        assert_eq!(hj.config.stack, "busybox");
        // A slug with no digest anywhere is a clear error.
        let broken = artifact("slug", "https://example.com/slug.tgz", None, json!({}));
        let r5 = release(&[&broken], json!({}), &[]);
        let e = job(&r5, &[broken], Some("web"), &[]).unwrap_err();
        assert!(matches!(e, JobSpecError::SlugWithoutDigest { .. }), "{e}");
    }

    #[test]
    fn images_run_their_layers_alone_with_their_workdir_and_user() {
        let image = artifact(
            "image",
            &format!("web@{D3}"),
            Some(D3),
            json!({
                "manifest": {"schemaVersion": 2, "config": {"digest": D3},
                             "layers": [{"digest": D1}, {"digest": D2}]},
                "meta": {"image.working_dir": "/srv", "image.user": "app:app"}
            }),
        );
        let r = release(&[&image], json!({}), &["python3", "-m", "http.server"]);
        let hj = job(&r, std::slice::from_ref(&image), Some("web"), &[]).unwrap();
        assert_eq!(hj.config.stack, "");
        assert_eq!(digests(&hj), [D1, D2], "manifest order, bottom first");
        assert_eq!(hj.config.args, ["python3", "-m", "http.server"]);
        assert_eq!(hj.config.working_dir.as_deref(), Some("/srv"));
        assert_eq!(hj.config.user.as_deref(), Some("app:app"));
        // One-off commands run as given (no runner in an image).
        let hj = job(&r, std::slice::from_ref(&image), None, &["sh"]).unwrap();
        assert_eq!(hj.config.args, ["sh"]);
        // An image without layers in its manifest cannot run.
        let broken = artifact("image", "web@x", None, json!({"manifest": {}}));
        let r2 = release(&[&broken], json!({}), &["x"]);
        let e = job(&r2, &[broken], Some("web"), &[]).unwrap_err();
        assert!(matches!(e, JobSpecError::ImageWithoutLayers { .. }), "{e}");
        // Mixing is refused.
        let slug = artifact("slug", &format!("blob:{D1}"), Some(D1), json!({}));
        let r3 = release(&[&slug, &image], json!({}), &["x"]);
        let e = job(&r3, &[slug, image], Some("web"), &[]).unwrap_err();
        assert!(e.to_string().contains("mixes a slug and an image"), "{e}");
    }
}
