//! `slipway image push FILE`: deploys a `docker save` archive or an OCI image layout (directory
//! or tar) through the server's registry endpoint, uploading only the blobs it lacks. For users
//! with a registry client, `skopeo copy`/`docker push` to `HOST/APP:TAG` does the same.

use crate::context::{AppFlag, Ctx};
use anyhow::{Context, Result, bail};
use slipway_registry::client::{Progress, PushClient};
use slipway_registry::local::{self, LocalBlob};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct ImageArgs {
    #[command(subcommand)]
    command: ImageCommand,
    #[command(flatten)]
    app: AppFlag,
}

#[derive(clap::Subcommand, Debug)]
enum ImageCommand {
    /// Deploy an image file: a `docker save` archive or an OCI image layout (dir or tar)
    Push {
        /// The archive or layout directory
        file: PathBuf,
        /// Tag to push under [default: the archive's tag, else "latest"]
        #[arg(long, short = 't')]
        tag: Option<String>,
        /// Store the image as an artifact only: no release, no deploy
        #[arg(long)]
        no_deploy: bool,
    },
}

pub async fn run(ctx: &Ctx, args: ImageArgs) -> Result<()> {
    match args.command {
        ImageCommand::Push {
            file,
            tag,
            no_deploy,
        } => push(ctx, &args.app, file, tag, no_deploy).await,
    }
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn short(d: &slipway_blobstore::Digest) -> &str {
    &d.hex()[..12]
}

async fn push(
    ctx: &Ctx,
    flag: &AppFlag,
    file: PathBuf,
    tag: Option<String>,
    no_deploy: bool,
) -> Result<()> {
    let app = ctx.app(flag)?;
    let target = ctx.target()?;
    let image = {
        let path = file.clone();
        tokio::task::spawn_blocking(move || local::open(&path))
            .await?
            .with_context(|| format!("cannot read the image {}", file.display()))?
    };
    let reference = tag
        .or_else(|| image.tag.clone())
        .unwrap_or_else(|| "latest".into());
    let total: u64 = image.blobs.iter().map(|b| b.size).sum();
    eprintln!(
        "Pushing {} ({}, {} layers, {}) to {app}:{reference}",
        file.display(),
        image.format,
        image.blobs.len() - 1,
        mb(total)
    );
    let started = Instant::now();
    let progress: Arc<dyn Progress> = if std::io::stderr().is_terminal() {
        Arc::new(Bar::new())
    } else {
        Arc::new(Lines)
    };
    let client = PushClient::new(&target.url, &target.key)?;
    let report = client
        .push(&app, &image, &reference, !no_deploy, progress)
        .await?;
    println!(
        "Pushed {} in {:.1}s: {} blob(s) uploaded ({}), {} already on the server",
        image.digest,
        started.elapsed().as_secs_f64(),
        report.blobs_uploaded,
        mb(report.bytes_uploaded),
        report.blobs_skipped
    );
    let outcome = report.outcome;
    if let Some(release) = outcome.release {
        println!("Created release {release}.");
    }
    // The server answered once the deploy was done; the image is stored either way.
    if let Some(error) = outcome.error {
        bail!("{error}");
    }
    println!("{}", outcome.message);
    Ok(())
}

/// One line per blob (not a terminal: logs, CI).
struct Lines;

impl Progress for Lines {
    fn blob_done(&self, blob: &LocalBlob, uploaded: bool) {
        if uploaded {
            eprintln!("  {} uploaded ({})", short(&blob.digest), mb(blob.size));
        } else {
            eprintln!("  {} already on the server", short(&blob.digest));
        }
    }
}

/// An indicatif bar per blob (terminals only).
struct Bar {
    bar: std::sync::Mutex<Option<indicatif::ProgressBar>>,
}

impl Bar {
    fn new() -> Self {
        Bar {
            bar: std::sync::Mutex::new(None),
        }
    }
}

impl Progress for Bar {
    fn blob_start(&self, blob: &LocalBlob) {
        let bar = indicatif::ProgressBar::new(blob.size);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "  {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        bar.set_message(short(&blob.digest).to_string());
        *self.bar.lock().expect("not poisoned") = Some(bar);
    }
    fn bytes(&self, n: u64) {
        if let Some(b) = self.bar.lock().expect("not poisoned").as_ref() {
            b.inc(n);
        }
    }
    fn blob_done(&self, blob: &LocalBlob, uploaded: bool) {
        if let Some(b) = self.bar.lock().expect("not poisoned").take() {
            if uploaded {
                b.finish_with_message(format!("{} uploaded", short(&blob.digest)));
            } else {
                b.finish_and_clear();
                eprintln!("  {} already on the server", short(&blob.digest));
            }
        }
    }
}
