//! Prometheus text exposition (format 0.0.4), without a client library: each role either keeps
//! [`Counters`] / [`Histograms`] updated on its hot paths, or reads its state when scraped (a
//! [`Collector`] in the process's [`Registry`]). One `/metrics` per process serves them all
//! (`crates/server/src/metrics.rs`, docs/metrics.md).
//!
//! Label values are the caller's to bound: route templates, states, app and type names, and the
//! ids of running jobs only (a job's series goes when the job does, since it is read when
//! scraped).

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt::Write;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Latency buckets, in seconds, for request and step durations up to a few seconds.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Buckets for slow things (a job start, a build), in seconds.
pub const SLOW_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
];

/// Writes `# HELP` and `# TYPE` for a metric family.
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(
        out,
        "# HELP {name} {}",
        help.replace('\\', "\\\\").replace('\n', "\\n")
    );
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Writes one sample: `name{l="v",…} value`.
pub fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{}\"", escape(v));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {}", number(value));
}

/// A family with one sample per label set, e.g. a gauge read when scraped.
pub fn family<'a>(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Vec<(&'a str, &'a str)>, f64)>,
) {
    header(out, name, kind, help);
    for (labels, v) in samples {
        sample(out, name, &labels, v);
    }
}

/// A label value, escaped as the text format wants (`\\`, `\"`, `\n`).
pub fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn number(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else if v.is_nan() {
        "NaN".into()
    } else {
        format!("{v}")
    }
}

/// Counters keyed by their label values (in the order of `labels`).
pub struct Counters {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    values: Mutex<BTreeMap<Vec<String>, f64>>,
}

impl Counters {
    pub const fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> Self {
        Counters {
            name,
            help,
            labels,
            values: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn add(&self, values: &[&str], by: f64) {
        let key = values.iter().map(|s| s.to_string()).collect();
        *self.values.lock().unwrap().entry(key).or_default() += by;
    }

    pub fn inc(&self, values: &[&str]) {
        self.add(values, 1.0);
    }

    /// The value for `values` (0 if never counted).
    pub fn get(&self, values: &[&str]) -> f64 {
        let key: Vec<String> = values.iter().map(|s| s.to_string()).collect();
        self.values
            .lock()
            .unwrap()
            .get(&key)
            .copied()
            .unwrap_or(0.0)
    }

    pub fn render(&self, out: &mut String) {
        header(out, self.name, "counter", self.help);
        let values = self.values.lock().unwrap();
        // A counter without labels is 0 before its first count, not absent.
        if self.labels.is_empty() && values.is_empty() {
            sample(out, self.name, &[], 0.0);
        }
        for (key, v) in values.iter() {
            sample(out, self.name, &zip(self.labels, key), *v);
        }
    }
}

fn zip<'a>(names: &'a [&'a str], values: &'a [String]) -> Vec<(&'a str, &'a str)> {
    names
        .iter()
        .copied()
        .zip(values.iter().map(String::as_str))
        .collect()
}

#[derive(Clone, Default)]
struct Hist {
    buckets: Vec<u64>,
    count: u64,
    sum: f64,
}

/// Histograms keyed by their label values; `buckets` are upper bounds in seconds.
pub struct Histograms {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    buckets: &'static [f64],
    values: Mutex<BTreeMap<Vec<String>, Hist>>,
}

impl Histograms {
    pub const fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
        buckets: &'static [f64],
    ) -> Self {
        Histograms {
            name,
            help,
            labels,
            buckets,
            values: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn observe(&self, values: &[&str], took: Duration) {
        let secs = took.as_secs_f64();
        let key = values.iter().map(|s| s.to_string()).collect();
        let mut map = self.values.lock().unwrap();
        let h = map.entry(key).or_insert_with(|| Hist {
            buckets: vec![0; self.buckets.len()],
            ..Default::default()
        });
        if let Some(i) = self.buckets.iter().position(|b| secs <= *b) {
            h.buckets[i] += 1;
        }
        h.count += 1;
        h.sum += secs;
    }

    /// Observations for `values` so far.
    pub fn count(&self, values: &[&str]) -> u64 {
        let key: Vec<String> = values.iter().map(|s| s.to_string()).collect();
        self.values.lock().unwrap().get(&key).map_or(0, |h| h.count)
    }

    pub fn render(&self, out: &mut String) {
        header(out, self.name, "histogram", self.help);
        let (bucket, sum, count) = (
            format!("{}_bucket", self.name),
            format!("{}_sum", self.name),
            format!("{}_count", self.name),
        );
        let mut values = self.values.lock().unwrap().clone();
        // A histogram without labels is all zeros before its first observation, not absent.
        if self.labels.is_empty() && values.is_empty() {
            let zero = Hist {
                buckets: vec![0; self.buckets.len()],
                ..Default::default()
            };
            values.insert(Vec::new(), zero);
        }
        for (key, h) in values.iter() {
            let les: Vec<String> = self.buckets.iter().map(|b| number(*b)).collect();
            let mut labels = zip(self.labels, key);
            let mut cum = 0;
            for (i, le) in les.iter().enumerate() {
                cum += h.buckets[i];
                labels.push(("le", le));
                sample(out, &bucket, &labels, cum as f64);
                labels.pop();
            }
            labels.push(("le", "+Inf"));
            sample(out, &bucket, &labels, h.count as f64);
            labels.pop();
            sample(out, &sum, &labels, h.sum);
            sample(out, &count, &labels, h.count as f64);
        }
    }
}

/// Renders one role's families when scraped (it may read files or ask its agent).
pub type Collector = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = String> + Send>> + Send + Sync>;

/// The collectors of one process, rendered in the order they were added.
#[derive(Clone, Default)]
pub struct Registry {
    collectors: Arc<Mutex<Vec<Collector>>>,
}

impl Registry {
    pub fn add(&self, c: Collector) {
        self.collectors.lock().unwrap().push(c);
    }

    /// A collector with nothing to await.
    pub fn add_sync(&self, f: impl Fn(&mut String) + Send + Sync + 'static) {
        let f = Arc::new(f);
        self.add(Arc::new(move || {
            let f = f.clone();
            Box::pin(async move {
                let mut out = String::new();
                f(&mut out);
                out
            })
        }));
    }

    pub async fn render(&self) -> String {
        let collectors = self.collectors.lock().unwrap().clone();
        let mut out = String::new();
        for c in collectors {
            out.push_str(&c().await);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlabelled_families_are_zero_before_their_first_sample() {
        let mut out = String::new();
        Counters::new("c_total", "C.", &[]).render(&mut out);
        Histograms::new("h_seconds", "H.", &[], &[1.0]).render(&mut out);
        assert!(out.contains("\nc_total 0\n"), "{out}");
        assert!(out.contains("h_seconds_bucket{le=\"+Inf\"} 0\n"), "{out}");
        assert!(out.contains("\nh_seconds_count 0\n"), "{out}");
    }

    #[test]
    fn counters_and_histograms_render_in_the_text_format() {
        let c = Counters::new("x_total", "X.", &["route", "status"]);
        c.inc(&["/a/{id}", "200"]);
        c.add(&["/a/{id}", "200"], 2.0);
        let h = Histograms::new("d_seconds", "D.", &["route"], &[0.1, 1.0]);
        h.observe(&["/a\"b"], Duration::from_millis(500));
        let mut out = String::new();
        c.render(&mut out);
        h.render(&mut out);
        assert_eq!(
            out,
            "# HELP x_total X.\n# TYPE x_total counter\n\
             x_total{route=\"/a/{id}\",status=\"200\"} 3\n\
             # HELP d_seconds D.\n# TYPE d_seconds histogram\n\
             d_seconds_bucket{route=\"/a\\\"b\",le=\"0.1\"} 0\n\
             d_seconds_bucket{route=\"/a\\\"b\",le=\"1\"} 1\n\
             d_seconds_bucket{route=\"/a\\\"b\",le=\"+Inf\"} 1\n\
             d_seconds_sum{route=\"/a\\\"b\"} 0.5\n\
             d_seconds_count{route=\"/a\\\"b\"} 1\n"
        );
    }
}
