//! `slipway cluster backup`: streams `GET /backup` (the store snapshot and the blobs it names,
//! docs/backup.md) into a file, with progress on a terminal. The file appears only once the
//! whole archive arrived (written as `FILE.partial`, renamed at the end), readable by its owner
//! only: it holds routes' TLS keys, and the API key with --include-secrets.

use crate::context::Ctx;
use anyhow::{Context, Result, bail};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct BackupArgs {
    /// Write the backup to FILE [default: stdout, when it is not a terminal]
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Include the API key and the cluster token (the restored server then answers the same key)
    #[arg(long)]
    pub include_secrets: bool,
}

/// The open response of an authenticated `GET` on the server, or its error message.
pub async fn get_stream(ctx: &Ctx, path_and_query: &str) -> Result<reqwest::Response> {
    // The client installs rustls' crypto provider, which reqwest needs for https.
    let client = ctx.client()?;
    let target = ctx.target()?;
    let url = format!("{}{path_and_query}", client.url());
    let resp = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .build()?
        .get(&url)
        .bearer_auth(&target.key)
        .send()
        .await
        .with_context(|| format!("cannot reach {}", client.url()))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("message")?.as_str().map(str::to_string))
            .unwrap_or_else(|| body.chars().take(300).collect());
        bail!("the server answered {status}: {message}");
    }
    Ok(resp)
}

pub async fn run(ctx: &Ctx, args: BackupArgs) -> Result<()> {
    if args.file.is_none() && std::io::stdout().is_terminal() {
        bail!("the backup is binary: give -f FILE, or redirect stdout to a file");
    }
    let query = if args.include_secrets {
        "/backup?secrets=true"
    } else {
        "/backup"
    };
    let started = std::time::Instant::now();
    let mut resp = get_stream(ctx, query).await?;
    let total = resp.content_length();
    let bar = progress(total);
    let mut out: Box<dyn Write> = match &args.file {
        Some(file) => Box::new(std::io::BufWriter::new(create_private(&partial(file))?)),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut got = 0u64;
    let streamed: Result<()> = async {
        while let Some(chunk) = resp.chunk().await.context("the backup stream broke")? {
            out.write_all(&chunk).context("cannot write the backup")?;
            got += chunk.len() as u64;
            bar.set_position(got);
        }
        out.flush().context("cannot write the backup")?;
        Ok(())
    }
    .await;
    bar.finish_and_clear();
    drop(out);
    let short = total.is_some_and(|t| t != got);
    if streamed.is_err() || short {
        if let Some(file) = &args.file {
            let _ = std::fs::remove_file(partial(file));
        }
        let why = streamed
            .err()
            .map(|e| format!(": {e:#}"))
            .unwrap_or_default();
        bail!(
            "the backup was cut after {got} of {} bytes{why}; nothing was kept (the server's log says why)",
            total.map(|t| t.to_string()).unwrap_or_else(|| "?".into())
        );
    }
    if let Some(file) = &args.file {
        std::fs::rename(partial(file), file)
            .with_context(|| format!("cannot write {}", file.display()))?;
        eprintln!(
            "Backed up {} ({:.1} MB) in {:.1}s{}",
            file.display(),
            got as f64 / 1e6,
            started.elapsed().as_secs_f64(),
            if args.include_secrets {
                ", with the API key and cluster token"
            } else {
                ""
            }
        );
    }
    Ok(())
}

fn partial(file: &std::path::Path) -> PathBuf {
    let mut name = file.as_os_str().to_os_string();
    name.push(".partial");
    PathBuf::from(name)
}

/// A new file only its owner reads, replacing a leftover `.partial`: that one is removed first
/// (a symlink there is removed, not followed: a root-run CLI must not write through a link
/// another user planted, nor keep an old file's wider mode), then the file is created
/// exclusively.
pub fn create_private(path: &std::path::Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot replace {}", path.display())),
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))
}

/// Bytes so far on stderr, when it is a terminal (hidden otherwise).
pub fn progress(total: Option<u64>) -> indicatif::ProgressBar {
    let bar = match total {
        Some(t) => indicatif::ProgressBar::new(t),
        None => indicatif::ProgressBar::no_length(),
    };
    if !std::io::stderr().is_terminal() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    } else if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bytes}/{total_bytes} {wide_bar} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style);
    }
    bar
}
