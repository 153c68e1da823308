//! Where a response body ends, found from its bytes as they pass through unchanged.

use super::heads::Framing;

/// Where a response body ends, from the bytes as they pass (they are passed on unchanged:
/// a chunked body stays chunked, trailers included).
pub struct Body {
    framing: Framing,
    left: u64,
    chunk: ChunkState,
    done: bool,
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum ChunkState {
    Size,
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    LineStart,
    Trailer,
    LastLf,
}

impl Body {
    pub fn new(framing: Framing) -> Body {
        Body {
            framing,
            left: match framing {
                Framing::Length(n) => n,
                _ => 0,
            },
            chunk: ChunkState::Size,
            done: framing == Framing::None,
        }
    }

    pub fn done(&self) -> bool {
        self.done
    }

    /// How many bytes of `buf` belong to the body (all, or up to its end).
    pub fn take(&mut self, buf: &[u8]) -> Result<usize, &'static str> {
        match self.framing {
            Framing::None => Ok(0),
            Framing::Close => Ok(buf.len()),
            Framing::Length(_) => {
                let n = (buf.len() as u64).min(self.left);
                self.left -= n;
                self.done = self.left == 0;
                Ok(n as usize)
            }
            Framing::Chunked => self.take_chunked(buf),
        }
    }

    fn take_chunked(&mut self, buf: &[u8]) -> Result<usize, &'static str> {
        use ChunkState::*;
        let bad = "the backend's chunked body is malformed";
        let mut i = 0;
        while i < buf.len() && !self.done {
            if self.chunk == Data {
                let n = ((buf.len() - i) as u64).min(self.left);
                i += n as usize;
                self.left -= n;
                if self.left == 0 {
                    self.chunk = DataCr;
                }
                continue;
            }
            let c = buf[i];
            i += 1;
            self.chunk = match (self.chunk, c) {
                (Size, b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F') => {
                    let d = (c as char).to_digit(16).unwrap_or(0) as u64;
                    self.left = self
                        .left
                        .checked_mul(16)
                        .and_then(|v| v.checked_add(d))
                        .ok_or(bad)?;
                    Size
                }
                (Size | Ext, b'\r') => SizeLf,
                (Size | Ext | SizeLf, b'\n') if self.left == 0 => LineStart,
                (Size | Ext | SizeLf, b'\n') => Data,
                (Size, b';' | b' ' | b'\t') | (Ext, _) => Ext,
                (DataCr, b'\r') => DataLf,
                (DataCr | DataLf, b'\n') => Size,
                (LineStart, b'\r') => LastLf,
                (LineStart | LastLf, b'\n') => {
                    self.done = true;
                    LineStart
                }
                (Trailer, b'\n') => LineStart,
                (LineStart | Trailer, _) => Trailer,
                _ => return Err(bad),
            };
        }
        Ok(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunked(parts: &[&[u8]]) -> Result<(usize, bool), &'static str> {
        let mut b = Body::new(Framing::Chunked);
        let mut total = 0;
        for p in parts {
            total += b.take(p)?;
        }
        Ok((total, b.done()))
    }

    #[test]
    fn chunked_bodies_end_where_they_end() {
        let body = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\nNEXT";
        assert_eq!(chunked(&[body]), Ok((body.len() - 4, true)));
        // Byte by byte, the same.
        let parts: Vec<&[u8]> = body.chunks(1).collect();
        let mut b = Body::new(Framing::Chunked);
        let taken: usize = parts.iter().map(|p| b.take(p).unwrap()).sum();
        assert_eq!((taken, b.done()), (body.len() - 4, true));
        // Trailers are part of it.
        let t = b"3\r\nabc\r\n0\r\nX-Sum: 1\r\n\r\n";
        assert_eq!(chunked(&[t]), Ok((t.len(), true)));
        // Not yet complete.
        assert_eq!(chunked(&[b"a\r\n0123"]), Ok((7, false)));
        // Malformed.
        assert!(chunked(&[b"zz\r\n"]).is_err());
        assert!(chunked(&[b"3\r\nabcX\r\n"]).is_err());
        assert!(chunked(&[b"ffffffffffffffffff\r\n"]).is_err());
    }
}
