//! Attaching to a job on this host: the shim's socket, its backlog, the exit frame and the
//! agent's `POST /host/jobs/{id}/attach` (an HTTP upgrade, `Upgrade: slipway-attach`). The wire
//! itself — frame types, the codec, [`Duplex`], the upgrade token and splice — is defined once
//! in `slipway_client::attach` (the CLI, the controller and the shim speak the same frames end
//! to end) and re-exported here.

pub use slipway_client::attach::{
    AttachStream, Decoder, Duplex, ERROR, EXIT, MAX_FRAME, RESIZE, SIGNAL, STDERR, STDIN, STDOUT,
    UPGRADE, frame, read_frame, resize_frame, signal_frame, write_frame,
};

use crate::types::ExitStatus;

/// The shim's socket in the container dir.
pub const SOCKET: &str = "attach.sock";
/// Output kept for a client that has not attached yet; older output is dropped beyond it.
pub const BACKLOG_BYTES: usize = 1 << 20;

/// Answers an attach request (`Upgrade: slipway-attach`) by upgrading the connection and
/// copying bytes both ways between it and `stream` until either side ends.
pub fn upgrade_response(
    mut req: axum::extract::Request,
    stream: AttachStream,
) -> axum::response::Response {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    if !slipway_client::attach::wants_upgrade(req.headers()) {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({
                "code": "bad_request",
                "message": format!("attach needs `Connection: Upgrade` and `Upgrade: {UPGRADE}`"),
            })),
        )
            .into_response();
    }
    slipway_client::attach::spawn_splice(hyper::upgrade::on(&mut req), stream);
    axum::response::Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, UPGRADE)
        .body(axum::body::Body::empty())
        .expect("static response parts")
}

/// Client side: sends an attach request built by `req` and returns the upgraded stream, or the
/// error body of a refusal.
pub(crate) async fn upgrade_request(req: reqwest::RequestBuilder) -> Result<AttachStream, String> {
    let resp = slipway_client::attach::upgrade_headers(req)
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

pub fn exit_frame(status: &ExitStatus) -> Vec<u8> {
    frame(EXIT, &serde_json::to_vec(status).unwrap_or_default())
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
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn the_exit_frame_is_the_last_frame_and_reads_back_as_the_status() {
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
