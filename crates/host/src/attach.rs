//! Attaching to a job: the frames an attached `slipway run` exchanges with the job's shim.
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
//! | 3 `EXIT` | from the job | JSON [`ExitStatus`]; the last frame |
//! | 4 `SIGNAL` | to the job | `i32` BE signal number, sent to the job's init (which forwards it) |
//! | 5 `RESIZE` | to the job | `u16` BE columns, `u16` BE rows (pty only) |
//! | 6 `ERROR` | from the job | UTF-8 message; the last frame |
//!
//! Output written before anyone attached is kept by the shim (up to [`BACKLOG_BYTES`]) and sent
//! first, so `POST /jobs` then attach loses nothing.

use crate::types::ExitStatus;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const EXIT: u8 = 3;
pub const SIGNAL: u8 = 4;
pub const RESIZE: u8 = 5;
pub const ERROR: u8 = 6;

/// The `Upgrade` header value of the attach endpoints.
pub const UPGRADE: &str = "slipway-attach";
/// The shim's socket in the container dir.
pub const SOCKET: &str = "attach.sock";
/// Output kept for a client that has not attached yet; older output is dropped beyond it.
pub const BACKLOG_BYTES: usize = 1 << 20;
/// Largest payload accepted; larger frames are a protocol error.
pub const MAX_FRAME: usize = 1 << 20;

/// A bidirectional byte stream (a unix socket, an upgraded HTTP connection).
pub trait Duplex: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Duplex for T {}

pub type AttachStream = Box<dyn Duplex>;

/// Answers an attach request (`Upgrade: slipway-attach`) by upgrading the connection and
/// copying bytes both ways between it and `stream` until either side ends. Shared by the host
/// agent's and the controller's endpoints.
pub fn upgrade_response(
    mut req: axum::extract::Request,
    mut stream: AttachStream,
) -> axum::response::Response {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    let wants = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(UPGRADE));
    if !wants {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({
                "code": "bad_request",
                "message": format!("attach needs `Connection: Upgrade` and `Upgrade: {UPGRADE}`"),
            })),
        )
            .into_response();
    }
    let on = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on.await {
            Ok(up) => {
                let mut io = hyper_util::rt::TokioIo::new(up);
                let _ = tokio::io::copy_bidirectional(&mut io, &mut stream).await;
            }
            Err(e) => tracing::debug!("attach upgrade failed: {e}"),
        }
    });
    axum::response::Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, UPGRADE)
        .body(axum::body::Body::empty())
        .expect("static response parts")
}

/// Client side: sends an attach request built by `req` and returns the upgraded stream, or the
/// error body of a refusal.
pub async fn upgrade_request(req: reqwest::RequestBuilder) -> Result<AttachStream, String> {
    let resp = req
        .header(reqwest::header::CONNECTION, "Upgrade")
        .header(reqwest::header::UPGRADE, UPGRADE)
        .send()
        .await
        .map_err(|e| format!("attach request failed: {e}"))?;
    if resp.status() != reqwest::StatusCode::SWITCHING_PROTOCOLS {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        return Err(serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(String::from))
            .unwrap_or_else(|| format!("attach refused ({status}): {body}")));
    }
    let up = resp
        .upgrade()
        .await
        .map_err(|e| format!("attach upgrade failed: {e}"))?;
    Ok(Box::new(up))
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

pub fn exit_frame(status: &ExitStatus) -> Vec<u8> {
    frame(EXIT, &serde_json::to_vec(status).unwrap_or_default())
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
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("attach frame of {len} bytes is over the {MAX_FRAME} byte limit"),
        ));
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

/// Incremental decoder for the shim's non-blocking reads.
#[derive(Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, if any; `Err` for an oversized frame.
    pub fn next_frame(&mut self) -> Result<Option<(u8, Vec<u8>)>, String> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > MAX_FRAME {
            return Err(format!("attach frame of {len} bytes is too large"));
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

/// How an attached job's terminal is set up (`JobConfig.attach`).
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct AttachConfig {
    /// Give the job a pty (stdin, stdout and stderr all on it) instead of pipes.
    #[serde(default)]
    pub tty: bool,
    #[serde(default)]
    pub cols: u16,
    #[serde(default)]
    pub rows: u16,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoder_splits_frames_across_reads() {
        let mut bytes = frame(STDIN, b"hello");
        bytes.extend(signal_frame(2));
        bytes.extend(frame(STDIN, b""));
        let mut d = Decoder::default();
        let mut got = Vec::new();
        for b in bytes.chunks(3) {
            d.feed(b);
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(
            got,
            vec![
                (STDIN, b"hello".to_vec()),
                (SIGNAL, 2i32.to_be_bytes().to_vec()),
                (STDIN, vec![]),
            ]
        );
        let mut big = Decoder::default();
        big.feed(&[STDOUT, 0xff, 0xff, 0xff, 0xff]);
        assert!(big.next_frame().is_err());
    }

    #[tokio::test]
    async fn async_frames_round_trip() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let w = tokio::spawn(async move {
            write_frame(&mut a, STDOUT, b"out").await.unwrap();
            a.write_all(&exit_frame(&ExitStatus::code(42)))
                .await
                .unwrap();
        });
        assert_eq!(
            read_frame(&mut b).await.unwrap(),
            Some((STDOUT, b"out".to_vec()))
        );
        let (k, p) = read_frame(&mut b).await.unwrap().unwrap();
        assert_eq!(k, EXIT);
        let st: ExitStatus = serde_json::from_slice(&p).unwrap();
        assert_eq!(st.code, 42);
        w.await.unwrap();
        assert_eq!(read_frame(&mut b).await.unwrap(), None);
    }
}
