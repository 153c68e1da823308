//! Build records: every push that gets as far as building leaves a [`Build`] in the store with
//! the transcript the pusher saw as `remote: …` lines, so `slipway build log` shows it later
//! whatever the app's own logs (10,000 lines, shared with its processes) have evicted since.
//!
//! The transcript is taken where every line already passes: [`tee`] sits between the push flow
//! and the response stream, so lines said any way (including from blocking tasks) are in it, in
//! the order the pusher got them. When the push's last event (`ok` or `error`) arrives, the
//! build is recorded *before* that event goes out: once `git push` returns, its build is listed.
//!
//! [`Build`]: slipway_types::Build

use super::HookEvent;
use slipway_store::Store;
use slipway_types::{BuildStatus, Id, MAX_BUILD_LOG_BYTES, NewBuild, Timestamp};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// What the push flow tells the recorder besides its lines.
#[derive(Default)]
pub(crate) struct Trace {
    /// Set when the build starts: the app and the pushed commit. A push refused before that
    /// (wrong branch, moved while waiting) is not a build and is not recorded.
    pub started: Option<(Id, String, Timestamp)>,
    /// The release the push created, if it got that far.
    pub release: Option<Id>,
}

pub(crate) type SharedTrace = Arc<Mutex<Trace>>;

/// The start of a long transcript that is kept.
const HEAD_BYTES: usize = MAX_BUILD_LOG_BYTES / 4;
/// The end of it that is kept (the marker line fits in what is left).
const TAIL_BYTES: usize = MAX_BUILD_LOG_BYTES - HEAD_BYTES - 256;
/// A single longer line is cut (a buildpack printing a minified file).
const LINE_BYTES: usize = 8 << 10;

/// A transcript bounded by [`MAX_BUILD_LOG_BYTES`]: its first quarter and its end, where the
/// buildpack and the error are.
#[derive(Default)]
pub(crate) struct Transcript {
    head: String,
    tail: VecDeque<String>,
    tail_bytes: usize,
    left_out: u64,
}

impl Transcript {
    pub fn push(&mut self, line: &str) {
        let mut line = line.trim_end_matches(['\n', '\r']);
        if line.len() > LINE_BYTES {
            let mut cut = LINE_BYTES;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line = &line[..cut];
        }
        if self.tail.is_empty() && self.head.len() + line.len() < HEAD_BYTES {
            self.head.push_str(line);
            self.head.push('\n');
            return;
        }
        self.tail_bytes += line.len() + 1;
        self.tail.push_back(format!("{line}\n"));
        while self.tail_bytes > TAIL_BYTES {
            let gone = self.tail.pop_front().expect("over the limit: not empty");
            self.tail_bytes -= gone.len();
            self.left_out += 1;
        }
    }

    /// Whether a line equal to `line` (ignoring the ` !     ` prefix builds print) was said.
    fn said(&self, line: &str) -> bool {
        let line = line.trim();
        self.head
            .lines()
            .chain(self.tail.iter().map(|l| l.trim_end()))
            .any(|l| l.trim_start_matches([' ', '!']).trim_end() == line)
    }

    pub fn finish(self) -> String {
        let mut out = self.head;
        if self.left_out > 0 {
            out.push_str(&format!(
                "… {} lines left out: a build keeps the first {}K and the last {}K of its output …\n",
                self.left_out,
                HEAD_BYTES >> 10,
                TAIL_BYTES >> 10
            ));
        }
        out.extend(self.tail);
        out
    }
}

/// Copies the push flow's events from `rx` to the response (`out`), keeping the lines; on the
/// last event records the build (if it started) and only then passes that event on. Keeps
/// reading after the pusher is gone, so the flow never blocks on a full channel.
pub(crate) async fn tee(
    mut rx: mpsc::Receiver<HookEvent>,
    out: mpsc::Sender<HookEvent>,
    store: Arc<dyn Store>,
    trace: SharedTrace,
) {
    let mut transcript = Transcript::default();
    while let Some(ev) = rx.recv().await {
        match &ev {
            HookEvent::Line(l) => transcript.push(l),
            HookEvent::Ok | HookEvent::Error(_) => {
                let error = match &ev {
                    HookEvent::Error(m) => Some(m.clone()),
                    _ => None,
                };
                let t = std::mem::take(&mut transcript);
                record(&*store, &trace, t, error).await;
            }
        }
        let _ = out.send(ev).await;
    }
}

async fn record(store: &dyn Store, trace: &SharedTrace, mut t: Transcript, error: Option<String>) {
    let (started, release) = {
        let trace = trace.lock().expect("trace lock");
        (trace.started.clone(), trace.release)
    };
    let Some((app_id, commit, started_at)) = started else {
        return;
    };
    if let Some(e) = &error
        && !t.said(e)
    {
        t.push(&format!("error: {e}"));
    }
    let new = NewBuild {
        commit,
        status: match error {
            None => BuildStatus::Succeeded,
            Some(_) => BuildStatus::Failed,
        },
        release_id: release,
        error,
        log: t.finish(),
        started_at,
    };
    if let Err(e) = store.create_build(app_id, &new).await {
        tracing::warn!(app = %app_id, "cannot record the build and its log: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_transcripts_are_kept_whole() {
        let mut t = Transcript::default();
        t.push("-----> Building demo...");
        t.push(" !     Unable to select a buildpack\n");
        assert!(t.said("Unable to select a buildpack"));
        assert!(!t.said("something else"));
        assert_eq!(
            t.finish(),
            "-----> Building demo...\n !     Unable to select a buildpack\n"
        );
    }

    #[test]
    fn long_transcripts_keep_their_start_and_end_within_the_limit() {
        let mut t = Transcript::default();
        let n = 60_000;
        for i in 0..n {
            t.push(&format!("line {i:06} {}", "x".repeat(40)));
        }
        t.push(&"y".repeat(100_000));
        t.push("the end");
        let s = t.finish();
        assert!(s.len() <= MAX_BUILD_LOG_BYTES, "{}", s.len());
        assert!(s.starts_with("line 000000 "), "the start is kept");
        assert!(s.ends_with("the end\n"), "the end is kept");
        assert!(
            s.contains(&format!("\n{}\n", "y".repeat(LINE_BYTES))),
            "long lines are cut"
        );
        let marker = s.lines().find(|l| l.contains("lines left out")).unwrap();
        let left: u64 = marker.split(' ').nth(1).unwrap().parse().unwrap();
        let kept = s.lines().filter(|l| l.starts_with("line ")).count() as u64;
        assert_eq!(kept + left, n, "every line is kept or counted: {marker}");
    }
}
