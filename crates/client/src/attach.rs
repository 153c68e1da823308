//! Attaching to a job: the wire an attached `slipway run` speaks with the job's shim, defined
//! once here for every hop (the CLI, the controller, the host agent and the shim).
//!
//! One framing end to end (CLI ⇄ controller ⇄ host agent ⇄ shim), so every hop in between is a
//! plain byte copy: the shim speaks it on `attach.sock` in the job's container dir, the agent's
//! `POST /host/jobs/{id}/attach` and the controller's `POST /apps/{app}/jobs/{job}/attach` are
//! HTTP upgrades (`Upgrade: slipway-attach`) to the same stream. A frame is one type byte, a
//! big-endian `u32` payload length, then the payload:
//!
//! | type | direction | payload |
//! |---|---|---|
//! | 0 `STDIN` | to the job | bytes; an empty frame closes the job's stdin (EOF) |
//! | 1 `STDOUT` | from the job | bytes (with a pty: everything the terminal shows) |
//! | 2 `STDERR` | from the job | bytes |
//! | 3 `EXIT` | from the job | JSON `ExitStatus`; the last frame |
//! | 4 `SIGNAL` | to the job | `i32` BE signal number, sent to the job's init (which forwards it) |
//! | 5 `RESIZE` | to the job | `u16` BE columns, `u16` BE rows (pty only) |
//! | 6 `ERROR` | from the job | UTF-8 message; the last frame |
//!
//! Output written before anyone attached is kept by the shim (up to 1 MiB) and sent first, so
//! `POST /jobs` then attach loses nothing. `EXIT`'s JSON is the host's `ExitStatus`.

use crate::{Client, ClientError, Result};
use reqwest::Method;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const EXIT: u8 = 3;
pub const SIGNAL: u8 = 4;
pub const RESIZE: u8 = 5;
pub const ERROR: u8 = 6;

/// The `Upgrade` header value of every attach endpoint (the controller's and the host's).
pub const UPGRADE: &str = "slipway-attach";
/// Largest payload accepted; larger frames are a protocol error.
pub const MAX_FRAME: usize = 1 << 20;

/// A bidirectional byte stream (a unix socket, an upgraded HTTP connection).
pub trait Duplex: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Duplex for T {}

/// An attached job's stream, as every hop hands it on.
pub type AttachStream = Box<dyn Duplex>;

/// Whether a request asks for the attach upgrade (`Upgrade: slipway-attach`).
pub fn wants_upgrade(headers: &reqwest::header::HeaderMap) -> bool {
    headers
        .get(reqwest::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(UPGRADE))
}

/// The request headers of an attach (`Connection: Upgrade`, `Upgrade: slipway-attach`).
pub fn upgrade_headers(req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    req.header(reqwest::header::CONNECTION, "Upgrade")
        .header(reqwest::header::UPGRADE, UPGRADE)
}

/// The server's half of an attach once it answered 101: copies bytes both ways between the
/// upgraded connection and `stream` until either side ends (every hop in between is a plain
/// byte copy: the frames are end to end).
pub fn spawn_splice(on: hyper::upgrade::OnUpgrade, mut stream: AttachStream) {
    tokio::spawn(async move {
        match on.await {
            Ok(up) => {
                let mut io = hyper_util::rt::TokioIo::new(up);
                let _ = tokio::io::copy_bidirectional(&mut io, &mut stream).await;
            }
            Err(e) => tracing::debug!("attach upgrade failed: {e}"),
        }
    });
}

/// Encodes one frame.
pub fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(5 + payload.len());
    b.push(kind);
    b.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    b.extend_from_slice(payload);
    b
}

pub fn signal_frame(sig: i32) -> Vec<u8> {
    frame(SIGNAL, &sig.to_be_bytes())
}

pub fn resize_frame(cols: u16, rows: u16) -> Vec<u8> {
    let mut p = cols.to_be_bytes().to_vec();
    p.extend_from_slice(&rows.to_be_bytes());
    frame(RESIZE, &p)
}

fn too_large(len: usize) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("attach frame of {len} bytes is over the {MAX_FRAME} byte limit"),
    )
}

/// Reads one frame; `None` at a clean end of stream.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<(u8, Vec<u8>)>> {
    let mut head = [0u8; 5];
    match r.read_exact(&mut head[..1]).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    r.read_exact(&mut head[1..]).await?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_FRAME {
        return Err(too_large(len));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    Ok(Some((head[0], payload)))
}

pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    kind: u8,
    payload: &[u8],
) -> std::io::Result<()> {
    w.write_all(&frame(kind, payload)).await?;
    w.flush().await
}

/// Incremental decoder, for readers that are not async (the job's shim).
#[derive(Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, if any; an `InvalidData` error for an oversized frame.
    pub fn next_frame(&mut self) -> std::io::Result<Option<(u8, Vec<u8>)>> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > MAX_FRAME {
            return Err(too_large(len));
        }
        if self.buf.len() < 5 + len {
            return Ok(None);
        }
        let kind = self.buf[0];
        let payload = self.buf[5..5 + len].to_vec();
        self.buf.drain(..5 + len);
        Ok(Some((kind, payload)))
    }
}

impl Client {
    /// Attaches to a job started with `attach: true`; returns the raw upgraded connection.
    pub async fn attach_job(&self, app: &str, job: &str) -> Result<reqwest::Upgraded> {
        let url = self.endpoint(&["apps", app, "jobs", job, "attach"]);
        let resp = upgrade_headers(self.request(Method::POST, url))
            .send()
            .await
            .map_err(|e| ClientError::from_reqwest(&self.display_url, e))?;
        if resp.status() != reqwest::StatusCode::SWITCHING_PROTOCOLS {
            return Err(self.error_from(resp).await);
        }
        resp.upgrade()
            .await
            .map_err(|e| ClientError::from_reqwest(&self.display_url, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_decoder_reads_frames_split_anywhere_and_refuses_oversized_ones() {
        let mut wire = frame(STDOUT, b"hello");
        wire.extend(signal_frame(2));
        wire.extend(resize_frame(80, 24));
        let mut d = Decoder::default();
        let mut got = Vec::new();
        for b in &wire {
            d.feed(&[*b]);
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(
            got,
            vec![
                (STDOUT, b"hello".to_vec()),
                (SIGNAL, 2i32.to_be_bytes().to_vec()),
                (RESIZE, vec![0, 80, 0, 24]),
            ]
        );
        let mut d = Decoder::default();
        d.feed(&[STDIN, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(
            d.next_frame().unwrap_err().kind(),
            std::io::ErrorKind::InvalidData
        );
    }

    #[tokio::test]
    async fn read_frame_ends_cleanly_at_eof_and_reads_what_write_frame_wrote() {
        let (mut a, mut b) = tokio::io::duplex(64);
        write_frame(&mut a, STDERR, b"oops").await.unwrap();
        drop(a);
        assert_eq!(
            read_frame(&mut b).await.unwrap(),
            Some((STDERR, b"oops".to_vec()))
        );
        assert_eq!(read_frame(&mut b).await.unwrap(), None);
    }
}
