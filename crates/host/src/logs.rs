//! Per-job log files: one JSON object per line (`{"ts","stream","msg"}`), written by the job's shim
//! (so logs keep flowing while the agent is down) and read/followed by the agent.
//!
//! Size bound: when `log.jsonl` grows past half the budget it is renamed to `log.1.jsonl`
//! (replacing the previous one), so a job never uses more than ~`max_bytes` on disk (lumberjack
//! with one backup, as Flynn did).

use crate::types::LogLine;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

/// Lines longer than this are split (Flynn's logmux limit).
pub const MAX_LINE: usize = 10_000;
/// Default on-disk budget per job.
pub const DEFAULT_MAX_BYTES: u64 = 16 << 20;

pub fn current_path(dir: &Path) -> PathBuf {
    dir.join("log.jsonl")
}
pub fn backup_path(dir: &Path) -> PathBuf {
    dir.join("log.1.jsonl")
}

/// Appends lines to a job's log, rotating at half the budget.
pub struct LogWriter {
    dir: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
}

impl LogWriter {
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(current_path(dir))?;
        let size = file.metadata()?.len();
        Ok(LogWriter {
            dir: dir.to_path_buf(),
            file,
            size,
            max_bytes: max_bytes.max(2 * MAX_LINE as u64 + 1024),
        })
    }

    /// Writes one line (already split to at most [`MAX_LINE`] bytes).
    pub fn write(&mut self, stream: &str, msg: &[u8]) -> io::Result<()> {
        let line = LogLine {
            ts: OffsetDateTime::now_utc(),
            stream: stream.to_string(),
            msg: String::from_utf8_lossy(msg).into_owned(),
        };
        let mut buf = serde_json::to_vec(&line).map_err(io::Error::other)?;
        buf.push(b'\n');
        if self.size + buf.len() as u64 > self.max_bytes / 2 && self.size > 0 {
            std::fs::rename(current_path(&self.dir), backup_path(&self.dir))?;
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(current_path(&self.dir))?;
            self.size = 0;
        }
        self.file.write_all(&buf)?;
        self.size += buf.len() as u64;
        Ok(())
    }
}

/// Splits a byte stream into lines for one stream, honouring [`MAX_LINE`].
#[derive(Default)]
pub struct LineSplitter {
    buf: Vec<u8>,
}

impl LineSplitter {
    /// Feeds bytes; calls `emit` for every complete (or over-long) line.
    pub fn feed(&mut self, data: &[u8], emit: &mut dyn FnMut(&[u8])) {
        self.buf.extend_from_slice(data);
        let mut start = 0;
        loop {
            let rest = &self.buf[start..];
            match rest.iter().position(|&b| b == b'\n') {
                Some(i) if i <= MAX_LINE => {
                    emit(&rest[..i]);
                    start += i + 1;
                }
                _ if rest.len() >= MAX_LINE => {
                    emit(&rest[..MAX_LINE]);
                    start += MAX_LINE;
                }
                _ => break,
            }
        }
        self.buf.drain(..start);
    }

    /// Emits what is left (a last line without newline).
    pub fn finish(&mut self, emit: &mut dyn FnMut(&[u8])) {
        if !self.buf.is_empty() {
            emit(&self.buf);
            self.buf.clear();
        }
    }
}

/// Reads every line currently on disk (backup first).
pub fn read_all(dir: &Path) -> Vec<LogLine> {
    let mut out = Vec::new();
    for p in [backup_path(dir), current_path(dir)] {
        if let Ok(s) = std::fs::read_to_string(&p) {
            out.extend(s.lines().filter_map(|l| serde_json::from_str(l).ok()));
        }
    }
    out
}

/// Follows a job's log: yields what is on disk, then new lines until `done()` is true and the
/// file is drained. Polls every 100 ms (cheap, and works across shim restarts and rotation).
///
/// The current file stays open between polls: when the shim rotates it (renames it to
/// `log.1.jsonl`), the rest of the old file is read through that handle before the new file is
/// opened, so a reader that is behind the writer loses nothing at a rotation.
pub fn follow(
    dir: PathBuf,
    done: impl Fn() -> bool + Send + 'static,
) -> futures_util::stream::BoxStream<'static, LogLine> {
    use std::io::{BufRead, BufReader};
    use std::os::unix::fs::MetadataExt;
    let (tx, rx) = tokio::sync::mpsc::channel::<LogLine>(1024);
    tokio::task::spawn_blocking(move || {
        let send = |l: &str| match serde_json::from_str(l.trim_end()) {
            Ok(line) => tx.blocking_send(line).is_ok(),
            Err(_) => true,
        };
        // The current file: its inode and a reader positioned after the last whole line read.
        let mut current: Option<(u64, BufReader<File>)> = None;
        let mut partial = String::new();
        // Reads whole lines to the end of the file; false when the receiver is gone.
        let drain = |r: &mut BufReader<File>, partial: &mut String| -> bool {
            loop {
                match r.read_line(partial) {
                    Ok(0) | Err(_) => return true,
                    Ok(_) if partial.ends_with('\n') => {
                        if !send(partial) {
                            return false;
                        }
                        partial.clear();
                    }
                    // A line being written: the rest comes with a later read.
                    Ok(_) => return true,
                }
            }
        };
        // Lines rotated away before we started.
        if let Ok(f) = File::open(backup_path(&dir)) {
            let mut r = BufReader::new(f);
            let mut p = String::new();
            if !drain(&mut r, &mut p) {
                return;
            }
        }
        loop {
            let finished = done();
            if let Some((_, r)) = current.as_mut()
                && !drain(r, &mut partial)
            {
                return;
            }
            let path = current_path(&dir);
            if let Ok(meta) = std::fs::metadata(&path) {
                let rotated = current.as_ref().is_none_or(|(ino, _)| *ino != meta.ino());
                if rotated && let Ok(f) = File::open(&path) {
                    // Whatever reached the old file before the rename is read above or here.
                    if let Some((old_ino, r)) = current.as_mut() {
                        if !drain(r, &mut partial) {
                            return;
                        }
                        // Rotated twice since: the file in between is the backup now.
                        if let Ok(b) = std::fs::metadata(backup_path(&dir))
                            && b.ino() != *old_ino
                            && let Ok(f) = File::open(backup_path(&dir))
                            && !drain(&mut BufReader::new(f), &mut String::new())
                        {
                            return;
                        }
                    }
                    partial.clear();
                    let ino = f.metadata().map(|m| m.ino()).unwrap_or(meta.ino());
                    current = Some((ino, BufReader::with_capacity(256 * 1024, f)));
                    // Read the new file now rather than after a sleep.
                    continue;
                }
            }
            if finished || tx.is_closed() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    });
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|l| (l, rx))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_long_lines_and_keeps_partial() {
        let mut s = LineSplitter::default();
        let mut got: Vec<Vec<u8>> = Vec::new();
        let long = vec![b'x'; MAX_LINE * 2 + 5];
        s.feed(b"a\nb", &mut |l| got.push(l.to_vec()));
        s.feed(b"c\n", &mut |l| got.push(l.to_vec()));
        s.feed(&long, &mut |l| got.push(l.to_vec()));
        s.finish(&mut |l| got.push(l.to_vec()));
        assert_eq!(got[0], b"a");
        assert_eq!(got[1], b"bc");
        assert_eq!(got[2].len(), MAX_LINE);
        assert_eq!(got[3].len(), MAX_LINE);
        assert_eq!(got[4].len(), 5);
    }

    /// A follower that reads while the writer rotates the file loses no line and repeats none.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn follow_reads_across_rotations() {
        use futures_util::StreamExt;
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let finished = Arc::new(AtomicBool::new(false));
        let done = finished.clone();
        let mut lines = follow(path.clone(), move || done.load(Ordering::SeqCst));
        let writer = std::thread::spawn(move || {
            // Rotates about every 9,000 lines; 100 lines per ms at most.
            let mut w = LogWriter::open(&path, 1 << 20).unwrap();
            for i in 0..60_000 {
                w.write(
                    "stdout",
                    format!("line {i:06} {}", "x".repeat(20)).as_bytes(),
                )
                .unwrap();
                if i % 100 == 99 {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
            finished.store(true, Ordering::SeqCst);
        });
        let mut n = 0;
        while let Some(l) = lines.next().await {
            assert_eq!(&l.msg[..11], format!("line {n:06}"), "after {n} lines");
            n += 1;
        }
        writer.join().unwrap();
        assert_eq!(n, 60_000);
    }

    #[test]
    fn rotation_bounds_size() {
        let dir = tempfile::tempdir().unwrap();
        let max = 64 * 1024;
        let mut w = LogWriter::open(dir.path(), max).unwrap();
        for i in 0..5000 {
            w.write("stdout", format!("line {i}").as_bytes()).unwrap();
        }
        let total = std::fs::metadata(current_path(dir.path())).unwrap().len()
            + std::fs::metadata(backup_path(dir.path())).unwrap().len();
        assert!(total <= max, "{total} > {max}");
        let lines = read_all(dir.path());
        assert_eq!(lines.last().unwrap().msg, "line 4999");
        assert_eq!(lines.last().unwrap().stream, "stdout");
    }
}
