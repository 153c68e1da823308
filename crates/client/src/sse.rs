//! A small Server-Sent Events parser: the controller streams events as `id: N` + `data: JSON`
//! blocks separated by blank lines, with `: keepalive` comments in between. Bytes arrive in
//! arbitrary chunks, so the parser buffers until a full line is there.

/// The most one message (its data, and any one line) may hold: a peer streaming a line
/// without end, or data lines without a blank one, would otherwise grow the buffer until the
/// process runs out of memory. Events are small JSON objects, far below this.
pub const MAX_MESSAGE: usize = 1 << 20;

/// A message or line over [`MAX_MESSAGE`]: the stream cannot be trusted further.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageTooLarge;

impl std::fmt::Display for MessageTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "an event stream message is over the {MAX_MESSAGE} byte limit"
        )
    }
}

impl std::error::Error for MessageTooLarge {}

/// One dispatched SSE message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseMessage {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    current: SseMessage,
    has_data: bool,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds a chunk; returns the messages it completed, or an error once a line or a
    /// message's data is over [`MAX_MESSAGE`] (the parser is then of no further use).
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<SseMessage>, MessageTooLarge> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
            if pos > MAX_MESSAGE {
                return Err(MessageTooLarge);
            }
            let mut line: Vec<u8> = self.buf.drain(..=pos).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line);
            if let Some(msg) = self.line(&line) {
                out.push(msg);
            }
            if self.current.data.len() > MAX_MESSAGE {
                return Err(MessageTooLarge);
            }
        }
        if self.buf.len() > MAX_MESSAGE {
            return Err(MessageTooLarge);
        }
        Ok(out)
    }

    fn line(&mut self, line: &str) -> Option<SseMessage> {
        if line.is_empty() {
            // A blank line dispatches what was gathered (messages without data are dropped).
            let msg = std::mem::take(&mut self.current);
            let had = std::mem::take(&mut self.has_data);
            return had.then_some(msg);
        }
        if line.starts_with(':') {
            return None; // comment, e.g. keepalive
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(value);
                self.has_data = true;
            }
            "id" => self.current.id = Some(value.to_string()),
            "event" => self.current.event = Some(value.to_string()),
            _ => {} // retry and unknown fields: ignored
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_split_chunks_comments_and_crlf() {
        let mut p = SseParser::new();
        assert!(p.push(b": keepalive\n\nid: 4\nda").unwrap().is_empty());
        let msgs = p
            .push(b"ta: {\"a\":1}\r\n\r\nid:5\ndata: x\ndata: y\n\n")
            .unwrap();
        assert_eq!(
            msgs,
            vec![
                SseMessage {
                    id: Some("4".into()),
                    event: None,
                    data: "{\"a\":1}".into()
                },
                SseMessage {
                    id: Some("5".into()),
                    event: None,
                    data: "x\ny".into()
                },
            ]
        );
        // An incomplete message is held back until its blank line arrives.
        assert!(p.push(b"id: 6\ndata: z\n").unwrap().is_empty());
        assert_eq!(p.push(b"\n").unwrap()[0].data, "z");
    }

    #[test]
    fn a_line_without_end_is_refused_not_buffered_forever() {
        let mut p = SseParser::new();
        let chunk = vec![b'x'; 64 * 1024];
        let mut refused = false;
        for _ in 0..(2 * MAX_MESSAGE / chunk.len()) {
            if p.push(&chunk).is_err() {
                refused = true;
                break;
            }
        }
        assert!(refused, "a 2 MiB line was buffered");
    }

    #[test]
    fn data_lines_without_a_blank_line_are_refused() {
        let mut p = SseParser::new();
        let line = format!("data: {}\n", "y".repeat(60 * 1024));
        let mut refused = false;
        for _ in 0..40 {
            if p.push(line.as_bytes()).is_err() {
                refused = true;
                break;
            }
        }
        assert!(refused, "2.4 MiB of data in one message was gathered");
    }
}
