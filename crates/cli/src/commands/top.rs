//! `slipway top`: every running job's CPU and memory, from the numbers the hosts' metrics
//! endpoints serve to Prometheus (`slipway_job_cpu_seconds_total`, `slipway_job_memory_bytes`:
//! the job's cgroup; docs/metrics.md). CPU is the rise of the CPU time between two samples
//! `--interval` apart, as a share of one core.

use crate::context::Ctx;
use crate::output::{print_json, print_table};
use anyhow::{Context, Result, bail};
use serde::Serialize;
use slipway_types::units::format_bytes;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(clap::Args, Debug)]
pub struct TopArgs {
    /// A server's metrics endpoint, HOST:PORT (its --metrics-listen); repeat it for each host
    #[arg(
        long = "metrics",
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:1114"
    )]
    pub metrics: Vec<String>,
    /// Seconds between the two samples CPU use is measured over
    #[arg(long, default_value_t = 1.0)]
    pub interval: f64,
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

/// One job's numbers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobUsage {
    pub app: String,
    #[serde(rename = "type")]
    pub process_type: String,
    pub job: String,
    /// Share of one core over the interval, in percent.
    pub cpu_percent: f64,
    pub memory_bytes: u64,
}

pub async fn run(ctx: &Ctx, args: TopArgs) -> Result<()> {
    if !(0.1..=60.0).contains(&args.interval) {
        bail!("--interval must be between 0.1 and 60 seconds");
    }
    let mut warned = BTreeSet::new();
    let first = sample_all(&args.metrics, &mut warned).await?;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(args.interval)).await;
    let second = sample_all(&args.metrics, &mut warned).await?;
    let mut jobs = usage(&first, &second, t0.elapsed().as_secs_f64());
    if let Some(app) = &ctx.app {
        jobs.retain(|j| &j.app == app);
    }
    jobs.sort_by(|a, b| b.memory_bytes.cmp(&a.memory_bytes).then(a.job.cmp(&b.job)));
    if args.json {
        return print_json(&jobs);
    }
    print_table(
        &["APP", "TYPE", "JOB", "CPU", "MEMORY"],
        jobs.iter()
            .map(|j| {
                vec![
                    j.app.clone(),
                    if j.process_type.is_empty() {
                        "(run)".into()
                    } else {
                        j.process_type.clone()
                    },
                    j.job.clone(),
                    format!("{:.1}%", j.cpu_percent),
                    format_bytes(j.memory_bytes),
                ]
            })
            .collect(),
    );
    Ok(())
}

/// Per job id: (app, type, CPU seconds, memory bytes).
type Sample = BTreeMap<String, (String, String, f64, u64)>;

/// The job series of every endpoint. One that cannot be read is left out with a warning (once
/// per address in `warned`), so that a host that is down does not hide the others' jobs; none
/// readable is an error.
async fn sample_all(endpoints: &[String], warned: &mut BTreeSet<String>) -> Result<Sample> {
    let mut all = Sample::new();
    let mut failed = Vec::new();
    for addr in endpoints {
        match scrape(addr).await {
            Ok(text) => all.extend(parse(&text)),
            Err(e) => failed.push((
                addr,
                e.context(format!(
                    "cannot read the metrics at {addr} (the server's --metrics-listen)"
                )),
            )),
        }
    }
    if failed.len() == endpoints.len() && !failed.is_empty() {
        return Err(failed.swap_remove(0).1);
    }
    for (addr, e) in failed {
        if warned.insert(addr.clone()) {
            eprintln!("warning: {e:#}; its jobs are left out");
        }
    }
    Ok(all)
}

/// `GET /metrics` over HTTP/1.0 (the body ends with the connection); 5 s at most, 16 MiB.
async fn scrape(addr: &str) -> Result<String> {
    let fetch = async {
        let mut c = tokio::net::TcpStream::connect(addr).await?;
        c.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut buf = Vec::new();
        c.take(16 << 20).read_to_end(&mut buf).await?;
        anyhow::Ok(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(5), fetch)
        .await
        .context("no answer within 5 s")??;
    let text = String::from_utf8(buf).context("the answer is not UTF-8")?;
    let (head, body) = text.split_once("\r\n\r\n").context("not an HTTP answer")?;
    if head.split_whitespace().nth(1) != Some("200") {
        bail!("{}", head.lines().next().unwrap_or_default());
    }
    Ok(body.to_string())
}

/// The job series of a metrics text.
fn parse(text: &str) -> Sample {
    let mut out = Sample::new();
    for line in text.lines() {
        let (name, rest) = match line.split_once('{') {
            Some(x) => x,
            None => continue,
        };
        let is_cpu = name == "slipway_job_cpu_seconds_total";
        if !is_cpu && name != "slipway_job_memory_bytes" {
            continue;
        }
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let labels = parse_labels(labels);
        let (Some(job), Ok(value)) = (labels.get("job_id"), value.trim().parse::<f64>()) else {
            continue;
        };
        let e = out.entry(job.clone()).or_insert_with(|| {
            let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
            (get("app"), get("type"), 0.0, 0)
        });
        if is_cpu {
            e.2 = value;
        } else {
            e.3 = value as u64;
        }
    }
    out
}

/// `a="x",b="y\"z"` → {a: x, b: y"z}.
fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() || chars.next() != Some('"') {
            return out;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c) => value.push(c),
                    None => break,
                },
                '"' => break,
                c => value.push(c),
            }
        }
        out.insert(key.trim_start_matches(',').to_string(), value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
}

/// Jobs in both samples, CPU as the rise over `secs`.
fn usage(first: &Sample, second: &Sample, secs: f64) -> Vec<JobUsage> {
    second
        .iter()
        .map(|(job, (app, ty, cpu, mem))| {
            let before = first.get(job).map_or(*cpu, |f| f.2);
            JobUsage {
                app: app.clone(),
                process_type: ty.clone(),
                job: job.clone(),
                cpu_percent: ((cpu - before).max(0.0) / secs.max(1e-3)) * 100.0,
                memory_bytes: *mem,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_series_are_read_and_cpu_is_their_rise() {
        let a = "# TYPE slipway_job_memory_bytes gauge\n\
                 slipway_job_memory_bytes{app=\"web\",type=\"web\",job_id=\"h-1\"} 1048576\n\
                 slipway_job_cpu_seconds_total{app=\"web\",type=\"web\",job_id=\"h-1\"} 2.0\n\
                 slipway_host_jobs{status=\"running\"} 1\n";
        let b = a.replace("} 2.0", "} 2.5").replace("1048576", "2097152");
        let jobs = usage(&parse(a), &parse(&b), 1.0);
        assert_eq!(
            jobs,
            [JobUsage {
                app: "web".into(),
                process_type: "web".into(),
                job: "h-1".into(),
                cpu_percent: 50.0,
                memory_bytes: 2 << 20,
            }]
        );
        let odd = parse_labels(r#"app="a\"b",type="",job_id="j""#);
        assert_eq!(odd["app"], "a\"b");
        assert_eq!(odd["type"], "");
        assert_eq!(odd["job_id"], "j");
    }
}
