//! `slipway log`: an app's aggregated log (every job's stdout and stderr, and the platform's
//! notes about them), in Flynn's format `2026-11-22T15:04:05.123456Z app[web.8f3a2c]: message`.

use crate::context::{AppFlag, Ctx};
use anyhow::Result;
use slipway_client::{LogQuery, StreamExt};
use slipway_types::LogEntry;
use std::io::{IsTerminal, Write};

#[derive(clap::Args, Debug)]
pub struct LogArgs {
    #[command(flatten)]
    app: AppFlag,
    /// Keep printing new lines as they come (Ctrl-C to stop)
    #[arg(short = 'f', long)]
    follow: bool,
    /// Only the last N lines of the history [default: all kept lines]
    #[arg(short = 'n', long = "number", value_name = "N")]
    lines: Option<u64>,
    /// Only lines of this process type (e.g. web, build)
    #[arg(short = 't', long = "process-type", value_name = "TYPE")]
    process_type: Option<String>,
    /// Only lines of this job
    #[arg(short = 'j', long = "job", value_name = "JOB")]
    job: Option<String>,
    /// Print the jobs' stderr lines to stderr (and the rest to stdout)
    #[arg(short = 's', long = "split-stderr")]
    split_stderr: bool,
    /// Print the messages only, without timestamp and source
    #[arg(short = 'r', long, conflicts_with = "json")]
    raw: bool,
    /// Print one JSON object per line
    #[arg(long)]
    json: bool,
}

pub async fn run(ctx: &Ctx, args: LogArgs) -> Result<()> {
    let client = ctx.client()?;
    let app = ctx.app(&args.app)?;
    let query = LogQuery {
        lines: args.lines,
        follow: args.follow,
        process_type: args.process_type.clone(),
        job_id: args.job.clone(),
        stream: None,
    };
    let mut lines = client.log(&app, &query).await?;
    let colour = !args.raw
        && !args.json
        && std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none();
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    // While following, each line is flushed as it comes; otherwise the buffer batches them.
    while let Some(entry) = lines.next().await {
        let entry = entry?;
        let text = if args.json {
            serde_json::to_string(&entry)?
        } else if args.raw {
            entry.msg.clone()
        } else if colour {
            coloured(&entry)
        } else {
            entry.to_string()
        };
        if args.split_stderr && entry.stream == "stderr" {
            stdout.flush()?;
            eprintln!("{text}");
        } else if writeln!(stdout, "{text}").is_err() {
            // The reader went away (`slipway log | head`): not an error.
            return Ok(());
        }
        if args.follow {
            let _ = stdout.flush();
        }
    }
    let _ = stdout.flush();
    Ok(())
}

/// The line with its source coloured by process type (the same type, the same colour).
fn coloured(e: &LogEntry) -> String {
    const COLOURS: [u8; 6] = [36, 33, 32, 35, 34, 31];
    let hash = e
        .process_type
        .bytes()
        .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
    let c = COLOURS[hash % COLOURS.len()];
    format!("{} \x1b[{c}m{}\x1b[0m: {}", e.ts, e.source(), e.msg)
}
