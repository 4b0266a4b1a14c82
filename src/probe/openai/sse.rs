//! An incremental server-sent-events parser: fed the body's byte chunks as they arrive, it
//! returns every event they complete.
//!
//! It follows the WHATWG event-stream rules that matter for chat streams: lines end with
//! `\r\n`, `\n` or `\r` (also when a `\r\n` pair is split between two chunks); a line starting
//! with `:` is a comment; `data:` lines accumulate (joined by `\n`) until a blank line
//! dispatches the event; one space after the colon is dropped; an event left unfinished when
//! the stream ends is discarded.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// The `data:` lines joined by `\n`.
    pub data: String,
}

/// Why the stream cannot be parsed further.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    /// A single line or event grew beyond the parser's limit.
    #[error("an event-stream line or event is longer than {limit} bytes")]
    TooLong {
        /// The limit in bytes.
        limit: usize,
    },
}

/// Incremental event-stream parser.
#[derive(Debug)]
pub struct SseParser {
    line: Vec<u8>,
    /// The previous chunk ended with `\r`: a `\n` starting the next chunk ends no new line.
    after_cr: bool,
    data: String,
    has_data: bool,
    event: Option<String>,
    limit: usize,
}

impl SseParser {
    /// Creates a parser that refuses lines or events longer than `limit` bytes, so a server
    /// that never ends a line cannot grow memory without bound.
    pub fn new(limit: usize) -> Self {
        SseParser {
            line: Vec::new(),
            after_cr: false,
            data: String::new(),
            has_data: false,
            event: None,
            limit,
        }
    }

    /// Feeds one chunk and returns the events it completes, in order.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        let mut out = Vec::new();
        let mut rest = chunk;
        if self.after_cr {
            self.after_cr = false;
            if let Some(stripped) = rest.strip_prefix(b"\n") {
                rest = stripped;
            }
        }
        while let Some(pos) = rest.iter().position(|b| *b == b'\n' || *b == b'\r') {
            self.push_line_bytes(&rest[..pos])?;
            let line = std::mem::take(&mut self.line);
            self.process_line(&line, &mut out)?;
            let ended_with_cr = rest[pos] == b'\r';
            rest = &rest[pos + 1..];
            if ended_with_cr {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        self.push_line_bytes(rest)?;
        Ok(out)
    }

    /// Tells whether bytes of an unfinished line or event are pending.
    pub fn has_partial(&self) -> bool {
        !self.line.is_empty() || self.has_data
    }

    fn push_line_bytes(&mut self, bytes: &[u8]) -> Result<(), SseError> {
        if self.line.len() + bytes.len() > self.limit {
            return Err(SseError::TooLong { limit: self.limit });
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn process_line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if line.is_empty() {
            if self.has_data {
                out.push(SseEvent {
                    event: self.event.take(),
                    data: std::mem::take(&mut self.data),
                });
            }
            self.has_data = false;
            self.event = None;
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let (field, value) = match line.iter().position(|b| *b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        // Invalid UTF-8 becomes U+FFFD; the JSON parse of the data then reports it.
        let value = String::from_utf8_lossy(value);
        match field {
            b"data" => {
                if self.data.len() + value.len() + 1 > self.limit {
                    return Err(SseError::TooLong { limit: self.limit });
                }
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(&value);
                self.has_data = true;
            }
            b"event" => self.event = Some(value.into_owned()),
            // `id` and `retry` steer reconnection, which a probe never does.
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(events: &[SseEvent]) -> Vec<&str> {
        events.iter().map(|e| e.data.as_str()).collect()
    }

    fn feed_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::new(1 << 16);
        chunks.iter().flat_map(|c| p.feed(c).unwrap()).collect()
    }

    #[test]
    fn parses_data_events_and_done() {
        let ev = feed_all(&[b"data: {\"a\":1}\n\ndata: [DONE]\n\n"]);
        assert_eq!(data(&ev), ["{\"a\":1}", "[DONE]"]);
    }

    #[test]
    fn multi_line_events_comments_and_fields() {
        let ev = feed_all(&[b": keep-alive\nevent: msg\ndata: one\ndata:two\nid: 7\nretry: 5\n\n"]);
        assert_eq!(
            ev,
            vec![SseEvent {
                event: Some("msg".into()),
                data: "one\ntwo".into()
            }]
        );
    }

    #[test]
    fn crlf_and_cr_line_endings_even_when_split() {
        assert_eq!(
            data(&feed_all(&[b"data: a\r\n\r\ndata: b\r\rdata: c\n\n"])),
            ["a", "b", "c"]
        );
        // `\r` at the end of one chunk, `\n` at the start of the next: one line end, not two
        // (two would dispatch the half-built event early).
        assert_eq!(
            data(&feed_all(&[b"data: x\r", b"\ndata: y\r\n", b"\r\n"])),
            ["x\ny"]
        );
    }

    #[test]
    fn every_split_point_gives_the_same_events() {
        let body: &[u8] =
            b": c\r\ndata: {\"x\":\"h\xc3\xa9\"}\r\n\r\ndata: a\ndata: b\n\ndata: [DONE]\n\n";
        let whole = feed_all(&[body]);
        assert_eq!(data(&whole), ["{\"x\":\"hé\"}", "a\nb", "[DONE]"]);
        for i in 0..body.len() {
            for j in i..body.len() {
                let got = feed_all(&[&body[..i], &body[i..j], &body[j..]]);
                assert_eq!(got, whole, "split at {i},{j}");
            }
        }
    }

    #[test]
    fn blank_lines_without_data_dispatch_nothing_and_partial_is_reported() {
        let mut p = SseParser::new(100);
        assert!(p.feed(b"\n\n\nevent: x\n\n").unwrap().is_empty());
        assert!(!p.has_partial());
        assert!(p.feed(b"data: half").unwrap().is_empty());
        assert!(p.has_partial());
    }

    #[test]
    fn endless_lines_are_refused() {
        let mut p = SseParser::new(8);
        assert_eq!(
            p.feed(b"data: 0123456789"),
            Err(SseError::TooLong { limit: 8 })
        );
        let mut p = SseParser::new(8);
        let r = (0..10).try_for_each(|_| p.feed(b"data: 12\n").map(|_| ()));
        assert_eq!(r, Err(SseError::TooLong { limit: 8 }));
    }
}
