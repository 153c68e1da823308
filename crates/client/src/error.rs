//! What can go wrong talking to the controller, phrased for the person at the terminal: the CLI
//! prints these as they are (`error: <Display>`), so every message must make sense on its own.

use slipway_types::{ApiError, ErrorCode};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error body (or a non-JSON error we turned into one).
    #[error("{}", api_message(.status, .error))]
    Api { status: u16, error: ApiError },

    /// No connection could be made (refused, DNS, TLS handshake…).
    #[error("cannot reach the Slipway server at {url}: {reason} — is `slipway server` running?")]
    Connect { url: String, reason: String },

    /// The server took too long to answer.
    #[error("the Slipway server at {url} did not answer in time")]
    Timeout { url: String },

    /// The server answered, but not with what the API promises (wrong JSON, cut-off stream…).
    #[error("unexpected response from the Slipway server at {url}: {reason}")]
    Protocol { url: String, reason: String },

    /// The configured server URL is unusable.
    #[error("invalid server URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
}

/// Conflicts read like Flynn's (`conflict: Duplicate route`); 401 says what to check; the other
/// messages from the server already stand on their own (`app "x" not found`).
fn api_message(status: &u16, error: &ApiError) -> String {
    match error.code {
        ErrorCode::Conflict => format!("conflict: {}", error.message),
        ErrorCode::Unauthorized => format!(
            "unauthorized: {} (check the cluster's API key: `slipway cluster`)",
            error.message
        ),
        _ if error.message.is_empty() => format!("the server answered HTTP {status}"),
        _ => error.message.clone(),
    }
}

impl ClientError {
    /// The API error code, when the server answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api { error, .. } => Some(error.code),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.code() == Some(ErrorCode::NotFound)
    }

    pub fn is_conflict(&self) -> bool {
        self.code() == Some(ErrorCode::Conflict)
    }

    /// Turns a transport error into one of ours, naming the server's URL.
    pub(crate) fn from_reqwest(url: &str, e: reqwest::Error) -> Self {
        let url = url.to_string();
        if e.is_timeout() {
            return ClientError::Timeout { url };
        }
        if e.is_connect() {
            return ClientError::Connect {
                url,
                reason: connect_reason(&e),
            };
        }
        if e.is_decode() {
            return ClientError::Protocol {
                url,
                reason: innermost(&e),
            };
        }
        // Requests that fail after connecting (reset mid-body, etc.) are still "cannot reach".
        ClientError::Connect {
            url,
            reason: innermost(&e),
        }
    }
}

/// The most specific reason in the error's source chain: an io::Error kind reads best
/// ("connection refused"), otherwise the innermost message.
fn connect_reason(e: &reqwest::Error) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
                std::io::ErrorKind::TimedOut => "connection timed out".into(),
                _ => io.to_string(),
            };
        }
        source = err.source();
    }
    innermost(e)
}

fn innermost(e: &reqwest::Error) -> String {
    let mut last: &dyn std::error::Error = e;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicts_read_like_flynn() {
        let e = ClientError::Api {
            status: 409,
            error: ApiError::conflict("Duplicate route"),
        };
        assert_eq!(e.to_string(), "conflict: Duplicate route");
        assert!(e.is_conflict() && !e.is_not_found());
    }

    #[test]
    fn not_found_is_the_server_message() {
        let e = ClientError::Api {
            status: 404,
            error: ApiError::not_found("app \"x\" not found"),
        };
        assert_eq!(e.to_string(), "app \"x\" not found");
        assert!(e.is_not_found());
    }
}
