//! `slipway export` and `slipway import` (Flynn's): one app — its current release with env and
//! artifacts, the slug or image layers those name, its formation and routes — as an archive
//! (`slipway_backup`'s format, `app.json` + blobs), taken in and out through the API and the
//! blob store's HTTP API, so any Slipway can import what another exported.
//!
//! An import reads and verifies the whole archive into a temp dir before it touches the
//! server; the app gets new ids; routes that cannot be created (a domain or port taken there)
//! are listed and make the command fail once everything else is in.

use super::backup::{create_private, progress};
use crate::context::{AppFlag, Ctx};
use anyhow::{Context, Result, bail};
use slipway_backup::app::{APP_JSON, AppExport, MAX_APP_JSON_BYTES};
use slipway_backup::archive::{self, Entry, Kind};
use slipway_blobstore::{BlobStore, FsBlobStore, HttpBlobStore};
use slipway_types::{
    FormationUpdate, NewApp, NewArtifact, NewRelease, NewRoute, Route, RouteType, RouteUpdate,
};
use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    #[command(flatten)]
    pub app: AppFlag,
    /// Write the export to FILE [default: stdout, when it is not a terminal]
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// Read the export from FILE [default: stdin]
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// The name of the app to create [default: the exported app's]
    #[arg(short = 'n', long = "name", value_name = "NAME")]
    pub name: Option<String>,
    /// Also create the exported routes (the app's default route is created in any case)
    #[arg(long)]
    pub routes: bool,
    /// Also scale the app as it was exported (otherwise no process runs until `slipway scale`)
    #[arg(long)]
    pub formation: bool,
}

fn blob_store(ctx: &Ctx) -> Result<HttpBlobStore> {
    let target = ctx.target()?;
    Ok(HttpBlobStore::new(target.url, Some(target.key)))
}

pub async fn export(ctx: &Ctx, args: ExportArgs) -> Result<()> {
    if args.file.is_none() && std::io::stdout().is_terminal() {
        bail!("the export is binary: give -f FILE, or redirect stdout to a file");
    }
    let client = ctx.client()?;
    let name = ctx.app(&args.app)?;
    let app = client.app(&name).await?;
    let release = client.current_release(&name).await?;
    let mut artifacts = Vec::new();
    let mut formation = None;
    if let Some(r) = &release {
        for id in &r.artifacts {
            artifacts.push(client.artifact(*id).await?);
        }
        formation = client.formation(&name, r.id).await.ok();
    }
    let routes = client.routes(&name).await?;
    let export = AppExport {
        app,
        release,
        artifacts,
        formation,
        routes,
    };
    let blobs = blob_store(ctx)?;
    let mut entries = vec![Entry::bytes(APP_JSON, serde_json::to_vec_pretty(&export)?)];
    for d in export.blobs() {
        let info = blobs
            .head(&d)
            .await?
            .with_context(|| format!("blob {d} of the app's release is not in the blob store"))?;
        entries.push(Entry::blob(d, info.size));
    }
    let manifest = archive::manifest(Kind::App, 0, false, &entries);
    let total = archive::archive_len(&manifest);
    let bar = progress(Some(total));
    let result = match &args.file {
        Some(file) => {
            let tmp = PathBuf::from(format!("{}.partial", file.display()));
            let f = tokio::fs::File::from_std(create_private(&tmp)?);
            let mut out = tokio::io::BufWriter::new(f);
            let written = archive::write(&mut out, &manifest, &entries, Some(&blobs), |n| {
                bar.set_position(n)
            })
            .await;
            let written = match written {
                Ok(()) => out.shutdown().await.map_err(anyhow::Error::from),
                Err(e) => Err(e.into()),
            };
            match written {
                Ok(()) => std::fs::rename(&tmp, file)
                    .with_context(|| format!("cannot write {}", file.display())),
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    Err(e)
                }
            }
        }
        None => {
            let mut out = tokio::io::BufWriter::new(std_stream(std::io::stdout().as_fd())?);
            archive::write(&mut out, &manifest, &entries, Some(&blobs), |n| {
                bar.set_position(n)
            })
            .await?;
            out.shutdown().await.map_err(anyhow::Error::from)
        }
    };
    bar.finish_and_clear();
    result?;
    if let Some(file) = &args.file {
        eprintln!(
            "Exported {name} to {} ({:.1} MB, {} blobs)",
            file.display(),
            total as f64 / 1e6,
            entries.len() - 1
        );
    }
    Ok(())
}

/// Stdin or stdout as an async file (tokio's `io-std` is not built in).
fn std_stream(fd: std::os::fd::BorrowedFd<'_>) -> Result<tokio::fs::File> {
    let owned = fd.try_clone_to_owned().context("cannot use stdin/stdout")?;
    Ok(tokio::fs::File::from_std(std::fs::File::from(owned)))
}

/// A temp dir removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Reads and verifies the whole archive into `scratch`: the export and a local blob store
/// holding every blob its artifacts name.
async fn read_export(file: Option<&Path>, scratch: &Path) -> Result<(AppExport, FsBlobStore)> {
    let files = scratch.join("files");
    std::fs::create_dir_all(&files)?;
    let local = FsBlobStore::open(scratch.join("blobs"))?;
    let store: Arc<dyn BlobStore> = Arc::new(local.clone());
    let read = match file {
        Some(f) => {
            let file = tokio::fs::File::open(f)
                .await
                .with_context(|| format!("cannot open {}", f.display()))?;
            let mut input = tokio::io::BufReader::with_capacity(1 << 20, file);
            archive::read(&mut input, Kind::App, &files, store).await
        }
        None => {
            let stdin = std_stream(std::io::stdin().as_fd())?;
            let mut input = tokio::io::BufReader::with_capacity(1 << 20, stdin);
            archive::read(&mut input, Kind::App, &files, store).await
        }
    }
    .context("the export is refused")?;
    let Some((_, path)) = read.files.iter().find(|(n, _)| n == APP_JSON) else {
        bail!("the export is refused: it has no {APP_JSON}");
    };
    let size = std::fs::metadata(path)?.len();
    if size > MAX_APP_JSON_BYTES {
        bail!("the export is refused: {APP_JSON} is {size} bytes, more than {MAX_APP_JSON_BYTES}");
    }
    let export: AppExport = serde_json::from_slice(&std::fs::read(path)?)
        .with_context(|| format!("the export is refused: {APP_JSON} is not an app export"))?;
    for d in export.blobs() {
        if local.head(&d).await?.is_none() {
            bail!("the export is refused: it lacks blob {d}, which its release needs");
        }
    }
    Ok((export, local))
}

/// `service` of an app named `old` (`old-web`) as the same of `new`.
fn renamed_service(service: &str, old: &str, new: &str) -> String {
    match service.strip_prefix(old).and_then(|s| s.strip_prefix('-')) {
        Some(rest) => format!("{new}-{rest}"),
        None => service.to_string(),
    }
}

pub async fn import(ctx: &Ctx, args: ImportArgs) -> Result<()> {
    let client = ctx.client()?;
    let dir =
        std::env::temp_dir().join(format!("slipway-import-{}", uuid::Uuid::new_v4().simple()));
    // Owner only, and new (not one someone made before): it holds the app's env and TLS keys.
    std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
        .create(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let scratch = Scratch(dir);
    let (export, local) = read_export(args.file.as_deref(), &scratch.0).await?;
    let old = export.app.name.clone();
    let name = args.name.clone().unwrap_or_else(|| old.clone());

    // Blobs first: content-addressed, so ones the server has are not sent again, and an app
    // is created only once its release's bytes are there.
    let remote = blob_store(ctx)?;
    for d in export.blobs() {
        if remote.head(&d).await?.is_some() {
            continue;
        }
        let (_, body) = local
            .get(&d)
            .await?
            .with_context(|| format!("blob {d} vanished from the scratch dir"))?;
        remote
            .put(body, Some(&d))
            .await
            .with_context(|| format!("cannot upload blob {d}"))?;
    }
    let app = client
        .create_app(&NewApp {
            name: Some(name.clone()),
            meta: export.app.meta.clone(),
            strategy: Some(export.app.strategy),
            deploy_timeout: Some(export.app.deploy_timeout),
            deploy_batch_size: export.app.deploy_batch_size,
        })
        .await
        .with_context(|| {
            format!("cannot create app {name} (use --name to import it under another name)")
        })?;
    println!("Created app {} ({})", app.name, app.id);
    // Anything failing from here on removes the app again, and the artifacts made for it (no
    // release may name them yet, and nothing collects an artifact no release names: its blobs
    // would be kept forever): no half-imported app stays.
    let mut artifacts = Vec::new();
    if let Err(e) = populate(
        &client,
        &export,
        &name,
        &old,
        args.formation,
        &mut artifacts,
    )
    .await
    {
        let mut undone = client.delete_app(&name).await.is_ok();
        for id in artifacts {
            // The app's delete removed those its release named already.
            if let Err(e) = client.delete_artifact(id).await
                && !e.is_not_found()
            {
                undone = false;
            }
        }
        let what = match undone {
            true => format!("the import of {name} failed; the app was removed again"),
            false => format!(
                "the import of {name} failed; remove the app with `slipway -a {name} delete`"
            ),
        };
        return Err(e.context(what));
    }
    let existing = client.routes(&name).await?;
    let mut failed = Vec::new();
    if args.routes {
        for r in &export.routes {
            let (label, new) = match r {
                Route::Http(h) => {
                    if existing.iter().any(
                        |e| matches!(e, Route::Http(x) if x.domain == h.domain && x.path == h.path),
                    ) {
                        // The app's own default route, set above.
                        continue;
                    }
                    (
                        format!("http {}{}", h.domain, h.path),
                        NewRoute::Http {
                            domain: h.domain.clone(),
                            path: Some(h.path.clone()),
                            service: Some(renamed_service(&h.service, &old, &name)),
                            sticky: h.sticky,
                            leader: h.leader,
                            certificate: h.certificate.clone(),
                        },
                    )
                }
                Route::Tcp(t) => (
                    format!("tcp port {}", t.port),
                    NewRoute::Tcp {
                        port: t.port,
                        service: Some(renamed_service(&t.service, &old, &name)),
                        leader: t.leader,
                    },
                ),
            };
            match client.create_route(&name, &new).await {
                Ok(_) => println!("Created route {label}"),
                Err(e) => failed.push(format!("{label}: {e}")),
            }
        }
    }
    if !failed.is_empty() {
        bail!(
            "imported {name}, but {} route(s) were not created:\n  {}",
            failed.len(),
            failed.join("\n  ")
        );
    }
    println!("Imported {old} as {name}");
    Ok(())
}

/// The imported app's release (current), formation and default route; `args_formation`:
/// `--formation`; `ids` gets each artifact as it is created.
async fn populate(
    client: &slipway_client::Client,
    export: &AppExport,
    name: &str,
    old: &str,
    args_formation: bool,
    ids: &mut Vec<slipway_types::Id>,
) -> Result<()> {
    if let Some(release) = &export.release {
        for a in &export.artifacts {
            let created = client
                .create_artifact(&NewArtifact {
                    kind: a.kind,
                    uri: a.uri.clone(),
                    manifest: a.manifest.clone(),
                    meta: a.meta.clone(),
                    size: a.size,
                    digest: a.digest.clone(),
                })
                .await?;
            ids.push(created.id);
        }
        let new = NewRelease {
            artifacts: ids.clone(),
            ..NewRelease::from_release(release)
        };
        let created = client.create_release(name, &new).await?;
        client.set_app_release(name, created.id).await?;
        println!(
            "Created release {} (env and processes as exported)",
            created.id
        );
        match (&export.formation, args_formation) {
            (Some(f), true) => {
                let update = FormationUpdate {
                    processes: f.processes.clone(),
                    tags: f.tags.clone(),
                };
                client.put_formation(name, created.id, &update).await?;
                let counts: Vec<String> = f
                    .processes
                    .iter()
                    .map(|(t, n)| format!("{t}={n}"))
                    .collect();
                println!("Scaled {}", counts.join(" "));
            }
            (Some(f), false) if f.processes.values().any(|n| *n > 0) => {
                println!("Not scaled (no --formation): run `slipway -a {name} scale` to start it");
            }
            _ => {}
        }
    }
    // The app's default route (`NAME.DOMAIN`, made with the app) goes to the service the
    // exported one did (an image app's is `APP-app`), renamed with the app.
    let existing = client.routes(name).await?;
    for e in &existing {
        let Route::Http(mine) = e else { continue };
        let Some(suffix) = mine.domain.strip_prefix(&format!("{name}.")) else {
            continue;
        };
        let theirs = export.routes.iter().find_map(|r| match r {
            Route::Http(h) if h.domain == format!("{old}.{suffix}") && h.path == mine.path => {
                Some(renamed_service(&h.service, old, name))
            }
            _ => None,
        });
        if let Some(service) = theirs.filter(|s| *s != mine.service) {
            let update = RouteUpdate {
                service: Some(service),
                ..Default::default()
            };
            client
                .update_route(name, RouteType::Http, mine.id, &update)
                .await?;
        }
    }
    Ok(())
}
