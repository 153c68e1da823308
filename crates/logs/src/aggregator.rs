//! The aggregator: per app, a history on disk ([`crate::disk`]) plus a broadcast of new lines;
//! per job, a resume point so a restart neither loses nor repeats a job's lines.
//!
//! Resume points: a host hands out a job's log from its first line (`HostApi::logs`), each line
//! with the time the shim captured it. The aggregator remembers, per job, the newest timestamp
//! it stored and how many lines carried exactly that timestamp, and skips what it already has
//! when it reads the job again. They are rebuilt from the history at start and also kept in
//! `cursors.json` (written after the lines they count are flushed), for jobs whose lines the
//! retention already dropped.

use crate::disk::{AppLog, Retention, Snapshot};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde::{Deserialize, Serialize};
use slipway_types::{LogEntry, Timestamp};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::broadcast;

/// Longer lines are split (Flynn's limit, and the host's).
pub const MAX_LINE: usize = 10_000;
/// How often buffered lines reach the disk.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Resume points are written every this many flushes.
const CURSORS_EVERY: u64 = 10;
/// Live lines a follower may fall behind by before it catches up from disk.
const LIVE_BUFFER: usize = 4096;
/// Resume points of finished jobs are forgotten after this long.
const CURSOR_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Debug, Clone)]
pub struct Config {
    /// Where the histories live: one directory per app id, and `cursors.json`.
    pub dir: PathBuf,
    pub retention: Retention,
}

/// Which job a line belongs to (everything but the line itself).
#[derive(Debug, Clone, Default)]
pub struct Source {
    pub app: String,
    pub app_id: String,
    pub release_id: String,
    pub process_type: String,
    pub job_id: String,
    pub host_id: String,
}

/// Filters of a read or a follow (the API's query).
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// The last N lines of history (all kept lines when unset; 0 for none).
    pub lines: Option<usize>,
    pub process_type: Option<String>,
    pub job_id: Option<String>,
    pub stream: Option<String>,
}

impl Query {
    pub fn matches(&self, e: &LogEntry) -> bool {
        self.process_type
            .as_ref()
            .is_none_or(|t| *t == e.process_type)
            && self.job_id.as_ref().is_none_or(|j| *j == e.job_id)
            && self.stream.as_ref().is_none_or(|s| *s == e.stream)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Cursor {
    ts: Timestamp,
    /// Lines of the job stored with exactly `ts`.
    n: u32,
    /// Every line of the (finished) job is stored.
    #[serde(default)]
    done: bool,
}

/// Skips the lines of one job that are already stored, while reading its log from the start.
pub struct Skipper {
    ts: Option<Timestamp>,
    n: u32,
}

struct App {
    log: Mutex<AppLog>,
    live: broadcast::Sender<Arc<LogEntry>>,
}

struct Inner {
    cfg: Config,
    apps: Mutex<HashMap<String, Arc<App>>>,
    cursors: Mutex<Cursors>,
    /// Apps deleted since the start: a late line of one of their jobs must not bring their
    /// history back.
    deleted: Mutex<std::collections::HashSet<String>>,
}

#[derive(Default)]
struct Cursors {
    map: HashMap<String, Cursor>,
    /// Changed since last written.
    dirty: bool,
}

/// The log aggregator. Cheap to clone.
#[derive(Clone)]
pub struct Aggregator {
    inner: Arc<Inner>,
}

impl Aggregator {
    /// Opens every app's history under `cfg.dir` and starts the flusher (needs a tokio runtime).
    pub fn open(cfg: Config) -> io::Result<Aggregator> {
        std::fs::create_dir_all(&cfg.dir)?;
        let mut cursors: HashMap<String, Cursor> = std::fs::read(cursors_path(&cfg.dir))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let mut from_disk: HashMap<String, Cursor> = HashMap::new();
        let mut apps = HashMap::new();
        for e in std::fs::read_dir(&cfg.dir)? {
            let e = e?;
            if !e.file_type()?.is_dir() {
                continue;
            }
            let app_id = e.file_name().to_string_lossy().into_owned();
            let log = AppLog::open(&e.path(), cfg.retention, &mut |entry| {
                if entry.job_id.is_empty() || entry.platform {
                    return;
                }
                let c = from_disk.entry(entry.job_id.clone()).or_insert(Cursor {
                    ts: entry.ts,
                    n: 0,
                    done: false,
                });
                if entry.ts > c.ts {
                    *c = Cursor {
                        ts: entry.ts,
                        n: 1,
                        done: false,
                    };
                } else if entry.ts == c.ts {
                    c.n += 1;
                }
            })?;
            apps.insert(app_id, Arc::new(new_app(log)));
        }
        for (job, disk) in from_disk {
            let c = cursors.entry(job).or_insert(disk);
            if (disk.ts, disk.n) > (c.ts, c.n) {
                *c = Cursor {
                    done: false,
                    ..disk
                };
            }
        }
        let agg = Aggregator {
            inner: Arc::new(Inner {
                cfg,
                apps: Mutex::new(apps),
                cursors: Mutex::new(Cursors {
                    map: cursors,
                    dirty: false,
                }),
                deleted: Default::default(),
            }),
        };
        tokio::spawn(flusher(Arc::downgrade(&agg.inner)));
        Ok(agg)
    }

    /// The apps with a history.
    pub fn app_ids(&self) -> Vec<String> {
        self.inner
            .apps
            .lock()
            .expect("apps")
            .keys()
            .cloned()
            .collect()
    }

    /// Deletes app `app_id`'s history (the app was deleted) and keeps it from coming back.
    pub fn forget_app(&self, app_id: &str) -> io::Result<()> {
        if app_id.is_empty() || app_id.contains(['/', '.']) {
            return Ok(());
        }
        self.inner
            .deleted
            .lock()
            .expect("deleted")
            .insert(app_id.to_string());
        self.inner.apps.lock().expect("apps").remove(app_id);
        match std::fs::remove_dir_all(self.inner.cfg.dir.join(app_id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    pub fn retention(&self) -> Retention {
        self.inner.cfg.retention
    }

    fn app(&self, app_id: &str) -> io::Result<Arc<App>> {
        let mut apps = self.inner.apps.lock().expect("apps");
        if let Some(a) = apps.get(app_id) {
            return Ok(a.clone());
        }
        if self.inner.deleted.lock().expect("deleted").contains(app_id) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("app {app_id} was deleted"),
            ));
        }
        if app_id.is_empty() || app_id.contains(['/', '.']) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid app id {app_id:?}"),
            ));
        }
        let log = AppLog::open(
            &self.inner.cfg.dir.join(app_id),
            self.inner.cfg.retention,
            &mut |_| {},
        )?;
        let app = Arc::new(new_app(log));
        apps.insert(app_id.to_string(), app.clone());
        Ok(app)
    }

    /// Stores a line (split into pieces of at most [`MAX_LINE`] bytes) and hands it to the
    /// followers. Returns the stored entries' last sequence number.
    pub fn append(&self, src: &Source, ts: Timestamp, stream: &str, msg: &str) -> io::Result<u64> {
        self.store(src, ts, stream, msg, false)
    }

    /// Stores a line the platform writes about a job (`init`), e.g. from its events.
    pub fn append_platform(&self, src: &Source, ts: Timestamp, msg: &str) -> io::Result<u64> {
        self.store(src, ts, "init", msg, true)
    }

    fn store(
        &self,
        src: &Source,
        ts: Timestamp,
        stream: &str,
        msg: &str,
        platform: bool,
    ) -> io::Result<u64> {
        let app = self.app(&src.app_id)?;
        let mut log = app.log.lock().expect("app log");
        let mut last = 0;
        for piece in split(msg) {
            let mut entry = LogEntry {
                seq: 0,
                ts,
                app: src.app.clone(),
                app_id: src.app_id.clone(),
                release_id: src.release_id.clone(),
                process_type: src.process_type.clone(),
                job_id: src.job_id.clone(),
                host_id: src.host_id.clone(),
                stream: stream.to_string(),
                msg: piece.to_string(),
                platform,
            };
            log.append(&mut entry)?;
            crate::metrics::LINES.inc(&[]);
            last = entry.seq;
            // No follower: nothing to do; a lagging one catches up from disk.
            let _ = app.live.send(Arc::new(entry));
        }
        Ok(last)
    }

    /// A skipper for reading job `job_id`'s log from its first line.
    pub fn skipper(&self, job_id: &str) -> Skipper {
        let c = self
            .inner
            .cursors
            .lock()
            .expect("cursors")
            .map
            .get(job_id)
            .copied();
        Skipper {
            ts: c.map(|c| c.ts),
            n: c.map_or(0, |c| c.n),
        }
    }

    /// Whether every line of job `job_id` is stored (it finished and was read to the end).
    pub fn is_done(&self, job_id: &str) -> bool {
        self.inner
            .cursors
            .lock()
            .expect("cursors")
            .map
            .get(job_id)
            .is_some_and(|c| c.done)
    }

    pub fn mark_done(&self, job_id: &str) {
        let mut cursors = self.inner.cursors.lock().expect("cursors");
        cursors.dirty = true;
        let c = cursors.map.entry(job_id.to_string()).or_insert(Cursor {
            ts: Timestamp::now(),
            n: 0,
            done: true,
        });
        c.done = true;
    }

    /// Stores a line of a job read from its host, unless `skip` says it is stored already.
    /// Returns whether it was stored.
    pub fn ingest(
        &self,
        src: &Source,
        skip: &mut Skipper,
        ts: Timestamp,
        stream: &str,
        msg: &str,
    ) -> io::Result<bool> {
        if let Some(c) = skip.ts {
            if ts < c {
                return Ok(false);
            }
            if ts == c && skip.n > 0 {
                skip.n -= 1;
                return Ok(false);
            }
        }
        // Lines of one job are ingested by one task, so the cursor only moves forward here.
        self.append(src, ts, stream, msg)?;
        let mut cursors = self.inner.cursors.lock().expect("cursors");
        cursors.dirty = true;
        let c = cursors.map.entry(src.job_id.clone()).or_insert(Cursor {
            ts,
            n: 0,
            done: false,
        });
        if ts > c.ts {
            c.ts = ts;
            c.n = 1;
        } else if ts == c.ts {
            c.n += 1;
        }
        Ok(true)
    }

    /// Writes every buffered line to disk, then the resume points.
    pub fn flush(&self) -> io::Result<()> {
        flush_inner(&self.inner, true)
    }

    /// The last lines of an app's history that match `q`, oldest first.
    pub async fn read(&self, app_id: &str, q: &Query) -> io::Result<Vec<LogEntry>> {
        let app = self.app(app_id)?;
        let snap = app.log.lock().expect("app log").snapshot()?;
        let q = q.clone();
        tokio::task::spawn_blocking(move || snap.read(0, q.lines, &|e| q.matches(e)))
            .await
            .map_err(io::Error::other)
    }

    /// History (as [`Aggregator::read`]), then every new matching line as it arrives, with no
    /// gap and no duplicate between them: the snapshot and the subscription are taken under the
    /// app's lock, and sequence numbers sort out the rest.
    pub async fn follow(
        &self,
        app_id: &str,
        q: &Query,
    ) -> io::Result<BoxStream<'static, LogEntry>> {
        let app = self.app(app_id)?;
        let (snap, rx) = {
            let mut log = app.log.lock().expect("app log");
            (log.snapshot()?, app.live.subscribe())
        };
        let last = snap.last_seq;
        let q2 = q.clone();
        let history =
            tokio::task::spawn_blocking(move || snap.read(0, q2.lines, &|e| q2.matches(e)))
                .await
                .map_err(io::Error::other)?;
        let state = Live {
            app: Arc::downgrade(&app),
            rx,
            last,
            queue: VecDeque::new(),
            q: q.clone(),
        };
        let live = futures_util::stream::unfold(state, |mut st| async move {
            st.next().await.map(|e| (e, st))
        });
        Ok(futures_util::stream::iter(history).chain(live).boxed())
    }

    /// Live followers (`log -f`) of every app.
    pub fn followers(&self) -> usize {
        let apps = self.inner.apps.lock().expect("apps");
        apps.values().map(|a| a.live.receiver_count()).sum()
    }

    /// Bytes of an app's history on disk.
    pub fn disk_bytes(&self, app_id: &str) -> u64 {
        self.inner
            .apps
            .lock()
            .expect("apps")
            .get(app_id)
            .map(|a| a.log.lock().expect("app log").disk_bytes())
            .unwrap_or(0)
    }
}

fn new_app(log: AppLog) -> App {
    App {
        log: Mutex::new(log),
        live: broadcast::channel(LIVE_BUFFER).0,
    }
}

fn cursors_path(dir: &Path) -> PathBuf {
    dir.join("cursors.json")
}

/// Splits at most every [`MAX_LINE`] bytes, on character boundaries.
fn split(msg: &str) -> Vec<&str> {
    if msg.len() <= MAX_LINE {
        return vec![msg];
    }
    let mut out = Vec::new();
    let mut rest = msg;
    while rest.len() > MAX_LINE {
        let mut cut = MAX_LINE;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        out.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    if !rest.is_empty() {
        out.push(rest);
    }
    out
}

/// Flushes every app's buffered lines, then (with `cursors`) the resume points.
fn flush_inner(inner: &Inner, cursors: bool) -> io::Result<()> {
    let apps: Vec<Arc<App>> = inner.apps.lock().expect("apps").values().cloned().collect();
    for app in apps {
        app.log.lock().expect("app log").flush()?;
    }
    if !cursors {
        return Ok(());
    }
    // Resume points after the lines they count: on a crash between the two, the history
    // itself (read at start) is the more recent resume point.
    let snapshot = {
        let mut cursors = inner.cursors.lock().expect("cursors");
        if !cursors.dirty {
            return Ok(());
        }
        cursors.dirty = false;
        serde_json::to_vec(&cursors.map).map_err(io::Error::other)?
    };
    let path = cursors_path(&inner.cfg.dir);
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, snapshot)?;
    std::fs::rename(tmp, path)
}

async fn flusher(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    let mut n = 0u64;
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        n += 1;
        if n.is_multiple_of(600) {
            let cutoff = Timestamp::from_datetime(time::OffsetDateTime::now_utc() - CURSOR_TTL);
            inner
                .cursors
                .lock()
                .expect("cursors")
                .map
                .retain(|_, c| !c.done || c.ts > cutoff);
        }
        let inner2 = inner.clone();
        // Lines every 100 ms; resume points (one file for every job) every second: a resume
        // point behind the history is caught up from the history at start.
        let cursors = n.is_multiple_of(CURSORS_EVERY);
        match tokio::task::spawn_blocking(move || flush_inner(&inner2, cursors)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("logs: cannot write to {}: {e}", inner.cfg.dir.display()),
            Err(e) => tracing::warn!("logs: flush failed: {e}"),
        }
    }
}

/// A follower's live part: new lines from the broadcast, or from disk after falling behind.
struct Live {
    app: Weak<App>,
    rx: broadcast::Receiver<Arc<LogEntry>>,
    /// The last sequence number handed out (or skipped).
    last: u64,
    queue: VecDeque<LogEntry>,
    q: Query,
}

impl Live {
    async fn next(&mut self) -> Option<LogEntry> {
        loop {
            if let Some(e) = self.queue.pop_front() {
                return Some(e);
            }
            match self.rx.recv().await {
                Ok(e) => {
                    if e.seq <= self.last {
                        continue;
                    }
                    self.last = e.seq;
                    if self.q.matches(&e) {
                        return Some((*e).clone());
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let app = self.app.upgrade()?;
                    let snap: Snapshot = app.log.lock().expect("app log").snapshot().ok()?;
                    let (after, q) = (self.last, self.q.clone());
                    let end = snap.last_seq;
                    let missed = tokio::task::spawn_blocking(move || {
                        snap.read(after, None, &|e| q.matches(e))
                    })
                    .await
                    .ok()?;
                    self.queue.extend(missed);
                    self.last = self.last.max(end);
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_char_boundaries() {
        let long = "x".repeat(10_050);
        let parts = split(&long);
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [10_000, 50]
        );
        let mut uni = "x".repeat(9_999);
        uni.push('é');
        let parts = split(&uni);
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [9_999, 2]
        );
        assert_eq!(split(""), [""]);
    }
}
