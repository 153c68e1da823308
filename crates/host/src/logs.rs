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

/// How long [`follow`] sleeps between polls: right after lines came, and at most.
const FOLLOW_MIN_PAUSE: std::time::Duration = std::time::Duration::from_millis(2);
const FOLLOW_MAX_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// Follows a job's log: yields what is on disk, then new lines until `done()` is true and the
/// file is drained. Polls (cheap, and works across shim restarts and rotation): 2 ms after
/// reading lines, backing off to every 100 ms while nothing comes, so the end of a job that just
/// wrote (a build) is seen within milliseconds, not at the next 100 ms tick.
///
/// Files are followed by handle, not by path: each file of the log (the backup, the current
/// one, and each new one after a rotation) is opened as soon as it is seen and read to its end
/// through that handle, even after the shim renamed or deleted it. It checks for new files
/// every 128 lines it reads and while it waits on its consumer, so a reader that is behind
/// still holds every file the shim rotates past it, and loses nothing. (Files held open may
/// exceed the job's log budget on disk until they are read.)
pub fn follow(
    dir: PathBuf,
    done: impl Fn() -> bool + Send + 'static,
) -> futures_util::stream::BoxStream<'static, LogLine> {
    use std::io::BufRead;
    use tokio::sync::mpsc::error::TrySendError;
    let (tx, rx) = tokio::sync::mpsc::channel::<LogLine>(1024);
    tokio::task::spawn_blocking(move || {
        let mut files = Files::default();
        files.poll(&dir);
        let mut partial = String::new();
        let mut pause = FOLLOW_MIN_PAUSE;
        loop {
            let finished = done();
            files.poll(&dir);
            // Read the oldest open file to its end (checking for new files as we go).
            let mut n = 0u32;
            // True at the end of the file, false in the middle of a line being written.
            let at_end = loop {
                let Some(r) = files.queue.front_mut() else {
                    break true;
                };
                match r.read_line(&mut partial) {
                    Ok(0) | Err(_) => break true,
                    Ok(_) if partial.ends_with('\n') => {
                        if let Ok(line) = serde_json::from_str::<LogLine>(partial.trim_end()) {
                            // While the consumer is slow, keep picking up new files, so the
                            // shim cannot rotate one away before it was opened.
                            let mut line = line;
                            loop {
                                match tx.try_send(line) {
                                    Ok(()) => break,
                                    Err(TrySendError::Closed(_)) => return,
                                    Err(TrySendError::Full(l)) => {
                                        line = l;
                                        files.poll(&dir);
                                        std::thread::sleep(std::time::Duration::from_millis(1));
                                    }
                                }
                            }
                        }
                        partial.clear();
                        n += 1;
                        if n.is_multiple_of(128) {
                            files.poll(&dir);
                        }
                    }
                    // A line being written: the rest comes with a later read.
                    Ok(_) => break false,
                }
            };
            if files.queue.len() > 1 {
                // A newer file exists, so the shim is done with this one (it renames a file
                // after its last write): the rest of a line is there now; at the end, on to the
                // next file.
                if at_end {
                    files.queue.pop_front();
                    partial.clear();
                }
                continue;
            }
            if finished || tx.is_closed() {
                return;
            }
            pause = if n > 0 {
                FOLLOW_MIN_PAUSE
            } else {
                (pause * 2).min(FOLLOW_MAX_PAUSE)
            };
            std::thread::sleep(pause);
        }
    });
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|l| (l, rx))
    }))
}

/// The files of a job's log still to be read, oldest first. The newest one stays open (so its
/// inode cannot be reused), which makes "is this file new" a comparison with its inode.
#[derive(Default)]
struct Files {
    queue: std::collections::VecDeque<std::io::BufReader<File>>,
    newest: Option<u64>,
}

impl Files {
    /// Opens the files that appeared since the last call: the current file and, if the shim
    /// rotated more than once meanwhile, the backup (the file in between).
    fn poll(&mut self, dir: &Path) {
        use std::os::unix::fs::MetadataExt;
        let ino = |f: &File| f.metadata().map(|m| m.ino()).ok();
        let Ok(current) = File::open(current_path(dir)) else {
            return;
        };
        let Some(current_ino) = ino(&current) else {
            return;
        };
        if self.newest == Some(current_ino) {
            return;
        }
        // The backup is unread if it is neither the newest file we hold nor the current one
        // (a rotation between the two opens makes them equal).
        if let Ok(backup) = File::open(backup_path(dir))
            && let Some(backup_ino) = ino(&backup)
            && Some(backup_ino) != self.newest
            && backup_ino != current_ino
        {
            self.queue
                .push_back(std::io::BufReader::with_capacity(256 * 1024, backup));
        }
        self.queue
            .push_back(std::io::BufReader::with_capacity(256 * 1024, current));
        self.newest = Some(current_ino);
    }
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

    /// A follower that falls behind while the writer rotates the file several times loses no
    /// line and repeats none: it holds every file it has not finished.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn follow_reads_across_rotations() {
        use futures_util::StreamExt;
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let finished = Arc::new(AtomicBool::new(false));
        let following = Arc::new(AtomicBool::new(false));
        let done = finished.clone();
        let mut lines = follow(path.clone(), move || done.load(Ordering::SeqCst));
        let started = following.clone();
        let writer = std::thread::spawn(move || {
            // Rotates about every 3,800 lines, at up to 50 lines per ms once the follower has
            // the first file open (less than two files per 100 ms, the follower's poll when
            // it has read everything).
            let mut w = LogWriter::open(&path, 1 << 20).unwrap();
            for i in 0..60_000 {
                w.write(
                    "stdout",
                    format!("line {i:06} {}", "x".repeat(60)).as_bytes(),
                )
                .unwrap();
                while i == 0 && !started.load(Ordering::SeqCst) {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                if i % 50 == 49 {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
            finished.store(true, Ordering::SeqCst);
        });
        let mut n = 0;
        while let Some(l) = lines.next().await {
            assert_eq!(&l.msg[..11], format!("line {n:06}"), "after {n} lines");
            following.store(true, Ordering::SeqCst);
            n += 1;
            // A slow consumer: the writer gets two to three rotations ahead.
            if n % 10_000 == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
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
