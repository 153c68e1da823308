//! One app's history on disk: append-only segment files of JSON lines, named by the sequence
//! number of their first line (`00000000000000012345.jsonl`). The newest segment takes the
//! appends; when it holds `segment_lines` lines a new one starts, and the oldest segments are
//! deleted as soon as the rest still hold `max_lines` lines (or once their newest line is older
//! than `max_age`). So disk use is bounded by `max_lines + segment_lines` lines, and deleting old
//! lines is an `unlink`, never a rewrite.
//!
//! Readers never see more than the last `max_lines` lines (sequence numbers make that exact).

use slipway_types::{LogEntry, Timestamp};
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How much history an app keeps.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Lines kept per app (Flynn kept 10,000).
    pub max_lines: u64,
    /// Lines older than this are dropped too (none by default).
    pub max_age: Option<Duration>,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_lines: 10_000,
            max_age: None,
        }
    }
}

impl Retention {
    /// Lines per segment: an eighth of the history, so at most 12.5 % extra on disk.
    fn segment_lines(&self) -> u64 {
        (self.max_lines / 8).max(16)
    }

    /// The oldest timestamp still kept, now.
    pub(crate) fn oldest_kept(&self) -> Option<Timestamp> {
        let age = self.max_age?;
        let t = time::OffsetDateTime::now_utc() - age;
        Some(Timestamp::from_datetime(t))
    }
}

#[derive(Debug, Clone)]
struct Segment {
    path: PathBuf,
    lines: u64,
    last_ts: Option<Timestamp>,
}

/// What a reader needs to read the history as it is at one instant, without holding the lock.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    paths: Vec<PathBuf>,
    /// Lines with `min_seq <= seq <= last_seq` are the history.
    pub min_seq: u64,
    pub last_seq: u64,
    oldest: Option<Timestamp>,
}

pub(crate) struct AppLog {
    dir: PathBuf,
    retention: Retention,
    segments: VecDeque<Segment>,
    writer: Option<BufWriter<File>>,
    next_seq: u64,
    dirty: bool,
}

impl AppLog {
    /// Opens (or creates) the history in `dir`; calls `seen` with every line kept, oldest first
    /// (the aggregator rebuilds its per-job resume points from them). A line cut short by a
    /// crash is dropped.
    pub fn open(
        dir: &Path,
        retention: Retention,
        seen: &mut dyn FnMut(&LogEntry),
    ) -> io::Result<AppLog> {
        std::fs::create_dir_all(dir)?;
        let mut firsts: Vec<(u64, PathBuf)> = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(n) = name.strip_suffix(".jsonl").and_then(|n| n.parse().ok()) {
                firsts.push((n, e.path()));
            }
        }
        firsts.sort();
        let mut segments = VecDeque::new();
        let mut next_seq = 1;
        for (first_seq, path) in firsts {
            let mut seg = Segment {
                path: path.clone(),
                lines: 0,
                last_ts: None,
            };
            let file = File::open(&path)?;
            let mut reader = BufReader::new(file);
            let mut good_len = 0u64;
            let mut line = String::new();
            loop {
                line.clear();
                let n = reader.read_line(&mut line)?;
                if n == 0 || !line.ends_with('\n') {
                    break;
                }
                let Ok(entry) = serde_json::from_str::<LogEntry>(&line) else {
                    break;
                };
                good_len += n as u64;
                seg.lines += 1;
                seg.last_ts = Some(entry.ts);
                next_seq = next_seq.max(entry.seq + 1);
                seen(&entry);
            }
            // Cut a torn last line so the next append starts on a line of its own.
            let len = std::fs::metadata(&path)?.len();
            if len != good_len {
                OpenOptions::new()
                    .write(true)
                    .open(&path)?
                    .set_len(good_len)?;
            }
            next_seq = next_seq.max(first_seq + seg.lines);
            segments.push_back(seg);
        }
        let mut log = AppLog {
            dir: dir.to_path_buf(),
            retention,
            segments,
            writer: None,
            next_seq,
            dirty: false,
        };
        log.drop_old()?;
        Ok(log)
    }

    /// Appends a line, giving it the next sequence number (buffered: see [`AppLog::flush`]).
    pub fn append(&mut self, entry: &mut LogEntry) -> io::Result<()> {
        let full = self
            .segments
            .back()
            .is_none_or(|s| s.lines >= self.retention.segment_lines());
        if full || self.writer.is_none() {
            self.open_writer(full)?;
        }
        entry.seq = self.next_seq;
        let w = self.writer.as_mut().expect("writer opened above");
        serde_json::to_writer(&mut *w, entry).map_err(io::Error::other)?;
        w.write_all(b"\n")?;
        self.next_seq += 1;
        self.dirty = true;
        let seg = self.segments.back_mut().expect("a segment is open");
        seg.lines += 1;
        seg.last_ts = Some(entry.ts);
        Ok(())
    }

    /// Opens the newest segment for appending, or a new one when `new` (then drops what is
    /// beyond the retention).
    fn open_writer(&mut self, new: bool) -> io::Result<()> {
        if let Some(mut w) = self.writer.take() {
            w.flush()?;
        }
        if new {
            let path = self.dir.join(format!("{:020}.jsonl", self.next_seq));
            self.segments.push_back(Segment {
                path,
                lines: 0,
                last_ts: None,
            });
            self.drop_old()?;
        }
        let seg = self.segments.back().expect("a segment exists");
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&seg.path)?;
        self.writer = Some(BufWriter::with_capacity(64 * 1024, file));
        Ok(())
    }

    /// Deletes the oldest segments the retention no longer needs (never the newest).
    fn drop_old(&mut self) -> io::Result<()> {
        let oldest = self.retention.oldest_kept();
        while self.segments.len() > 1 {
            let total: u64 = self.segments.iter().map(|s| s.lines).sum();
            let front = &self.segments[0];
            let too_many = total - front.lines >= self.retention.max_lines;
            let too_old = match (oldest, front.last_ts) {
                (Some(o), Some(t)) => t < o,
                _ => false,
            };
            if !too_many && !too_old {
                break;
            }
            match std::fs::remove_file(&front.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            self.segments.pop_front();
        }
        Ok(())
    }

    /// Writes buffered lines to the file (the aggregator does this every 100 ms and before
    /// every read).
    pub fn flush(&mut self) -> io::Result<()> {
        if self.dirty
            && let Some(w) = self.writer.as_mut()
        {
            w.flush()?;
        }
        self.dirty = false;
        Ok(())
    }

    /// The history as it is now (flushed first, so the files hold every line up to `last_seq`).
    pub fn snapshot(&mut self) -> io::Result<Snapshot> {
        self.flush()?;
        let last_seq = self.next_seq - 1;
        Ok(Snapshot {
            paths: self.segments.iter().map(|s| s.path.clone()).collect(),
            min_seq: (last_seq + 1)
                .saturating_sub(self.retention.max_lines)
                .max(1),
            last_seq,
            oldest: self.retention.oldest_kept(),
        })
    }

    /// Bytes on disk (for tests and the benchmark).
    pub fn disk_bytes(&self) -> u64 {
        self.segments
            .iter()
            .filter_map(|s| std::fs::metadata(&s.path).ok())
            .map(|m| m.len())
            .sum()
    }
}

impl Snapshot {
    /// The last `limit` lines of the snapshot with `after < seq` that `keep` accepts, oldest
    /// first. Reads segments newest first and stops once it has enough. A segment deleted by
    /// rotation meanwhile held lines that are no longer history anyway.
    pub fn read(
        &self,
        after: u64,
        limit: Option<usize>,
        keep: &dyn Fn(&LogEntry) -> bool,
    ) -> Vec<LogEntry> {
        let min = self.min_seq.max(after + 1);
        let mut parts: Vec<Vec<LogEntry>> = Vec::new();
        let mut count = 0usize;
        for path in self.paths.iter().rev() {
            let Ok(file) = File::open(path) else {
                continue;
            };
            let mut part = Vec::new();
            let mut reached_min = false;
            for line in BufReader::with_capacity(256 * 1024, file).lines() {
                let Ok(line) = line else { break };
                let Ok(e) = serde_json::from_str::<LogEntry>(&line) else {
                    break;
                };
                if e.seq > self.last_seq {
                    break;
                }
                if e.seq <= min {
                    reached_min = true;
                }
                if e.seq < min || self.oldest.is_some_and(|o| e.ts < o) || !keep(&e) {
                    continue;
                }
                part.push(e);
            }
            count += part.len();
            parts.push(part);
            if reached_min || limit.is_some_and(|l| count >= l) {
                break;
            }
        }
        let mut out: Vec<LogEntry> = parts.into_iter().rev().flatten().collect();
        if let Some(l) = limit
            && out.len() > l
        {
            out.drain(..out.len() - l);
        }
        out
    }
}
