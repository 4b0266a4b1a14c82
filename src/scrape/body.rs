//! A scrape body as it arrives: its `Content-Encoding` (none or gzip), decoded chunk by chunk
//! into one buffer, with the *decoded* size held to `body_size_limit`.
//!
//! Exporters gzip their answer when asked (`Accept-Encoding: gzip`, which Prometheus sends);
//! a few bytes of gzip can stand for gigabytes, so the limit counts what comes out of the
//! decoder, and the decoder stops as soon as it is passed. The decoder is pure (bytes in,
//! bytes out): the scrape loop feeds it the chunks the HTTP client reads.

use std::io::{self, Write};

use flate2::write::MultiGzDecoder;
use http::header::HeaderValue;

/// The `Accept-Encoding` value a scrape sends when compression is on, as Prometheus sends it.
pub const ACCEPT_ENCODING_GZIP: &str = "gzip";

/// Why a body could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The decoded body passed the limit (a compression bomb, or a body the limit is too
    /// small for).
    #[error("gzip body decoded past body_size_limit of {limit} bytes: the exposition is larger than the limit once decompressed (or the body is a compression bomb)")]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The gzip data is truncated or damaged.
    #[error("corrupt gzip body: {0}")]
    Corrupt(String),
    /// The target used a content coding the scrape did not ask for.
    #[error("unsupported Content-Encoding {0:?}: a scrape accepts only gzip or an unencoded body")]
    Unsupported(String),
}

/// How a body is encoded, from its `Content-Encoding` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentEncoding {
    /// No header, or `identity`.
    Identity,
    /// `gzip` (or its old alias `x-gzip`).
    Gzip,
}

impl ContentEncoding {
    /// Reads the response's `Content-Encoding`. Gzip is decoded even when the scrape did not
    /// ask for it, as Prometheus does; any other coding fails, naming it.
    pub fn from_header(value: Option<&HeaderValue>) -> Result<ContentEncoding, DecodeError> {
        let Some(value) = value else {
            return Ok(ContentEncoding::Identity);
        };
        let text = String::from_utf8_lossy(value.as_bytes());
        let coding = text.trim();
        if coding.is_empty() || coding.eq_ignore_ascii_case("identity") {
            Ok(ContentEncoding::Identity)
        } else if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
            Ok(ContentEncoding::Gzip)
        } else {
            Err(DecodeError::Unsupported(coding.to_string()))
        }
    }
}

/// A body being received: chunks go in as they arrive, the decoded body comes out at the end.
#[derive(Debug)]
pub enum BodyReader {
    /// Unencoded: chunks are appended as they are (the HTTP client holds them to the limit).
    Identity(Vec<u8>),
    /// Gzip: chunks go through the decoder (boxed: it is ten times the size of a `Vec`, and
    /// the reader lives in each scrape's future).
    Gzip(Box<GzipDecoder>),
}

impl BodyReader {
    /// Starts a body of `encoding` in `buf` (cleared first), with at most `limit` decoded bytes.
    pub fn new(encoding: ContentEncoding, mut buf: Vec<u8>, limit: u64) -> BodyReader {
        buf.clear();
        match encoding {
            ContentEncoding::Identity => BodyReader::Identity(buf),
            ContentEncoding::Gzip => BodyReader::Gzip(Box::new(GzipDecoder::new(buf, limit))),
        }
    }

    /// Takes the next chunk of the body as received.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), DecodeError> {
        match self {
            BodyReader::Identity(buf) => {
                buf.extend_from_slice(chunk);
                Ok(())
            }
            BodyReader::Gzip(decoder) => decoder.push(chunk),
        }
    }

    /// The whole decoded body, once the last chunk is in.
    pub fn finish(self) -> Result<Vec<u8>, DecodeError> {
        match self {
            BodyReader::Identity(buf) => Ok(buf),
            BodyReader::Gzip(decoder) => decoder.finish(),
        }
    }
}

/// A streaming gzip decoder (one or more members, as `gzip` may concatenate them) whose output
/// stops at a limit.
pub struct GzipDecoder {
    inner: MultiGzDecoder<Bounded>,
    limit: u64,
}

impl std::fmt::Debug for GzipDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GzipDecoder")
            .field("decoded", &self.inner.get_ref().buf.len())
            .field("limit", &self.limit)
            .finish()
    }
}

impl GzipDecoder {
    /// A decoder that appends to `buf` and fails once more than `limit` bytes came out.
    pub fn new(buf: Vec<u8>, limit: u64) -> GzipDecoder {
        GzipDecoder {
            inner: MultiGzDecoder::new(Bounded {
                buf,
                limit,
                exceeded: false,
            }),
            limit,
        }
    }

    /// Decodes the next chunk of compressed bytes.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), DecodeError> {
        let result = self.inner.write_all(chunk);
        result.map_err(|e| self.error(e))
    }

    /// Checks the end of the stream (trailer, checksum, length) and returns the decoded body.
    pub fn finish(mut self) -> Result<Vec<u8>, DecodeError> {
        let result = self.inner.try_finish();
        result.map_err(|e| self.error(e))?;
        // After a successful `try_finish` nothing is left to flush, so this cannot fail.
        let bounded = self.inner.finish().map_err(corrupt)?;
        Ok(bounded.buf)
    }

    fn error(&self, e: io::Error) -> DecodeError {
        if self.inner.get_ref().exceeded {
            DecodeError::TooLarge { limit: self.limit }
        } else {
            corrupt(e)
        }
    }
}

/// The decode error a decoder's I/O error stands for, when it is not the limit.
fn corrupt(e: io::Error) -> DecodeError {
    let reason = match e.kind() {
        io::ErrorKind::UnexpectedEof | io::ErrorKind::WriteZero => {
            "the stream ends early".to_string()
        }
        _ => e.to_string(),
    };
    DecodeError::Corrupt(reason)
}

/// The decoder's output: a buffer that refuses to grow past the limit.
struct Bounded {
    buf: Vec<u8>,
    limit: u64,
    exceeded: bool,
}

impl Write for Bounded {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let total = self.buf.len() as u64 + data.len() as u64;
        if total > self.limit {
            self.exceeded = true;
            return Err(io::Error::other("decoded body past the limit"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use flate2::Compression;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// Decodes `compressed` fed in chunks of `size` bytes.
    fn decode_in_chunks(
        compressed: &[u8],
        size: usize,
        limit: u64,
    ) -> Result<Vec<u8>, DecodeError> {
        let mut d = GzipDecoder::new(Vec::new(), limit);
        for chunk in compressed.chunks(size) {
            d.push(chunk)?;
        }
        d.finish()
    }

    fn exposition(lines: usize) -> Vec<u8> {
        (0..lines)
            .flat_map(|i| format!("node_thing{{i=\"{i}\"}} {i}\n").into_bytes())
            .collect()
    }

    #[test]
    fn gzip_decodes_whatever_the_chunk_boundaries() {
        let plain = exposition(2000);
        let compressed = gzip(&plain);
        for size in [1, 7, 10, 4096, compressed.len()] {
            assert_eq!(
                decode_in_chunks(&compressed, size, plain.len() as u64).unwrap(),
                plain,
                "chunks of {size}"
            );
        }
    }

    #[test]
    fn concatenated_members_decode_as_one_body() {
        let mut compressed = gzip(b"a 1\n");
        compressed.extend(gzip(b"b 2\n"));
        assert_eq!(
            decode_in_chunks(&compressed, 5, 1024).unwrap(),
            b"a 1\nb 2\n"
        );
    }

    #[test]
    fn a_bomb_stops_at_the_limit_with_the_limit_named() {
        // 10 MB of zeros is about 10 KB of gzip.
        let compressed = gzip(&vec![0u8; 10 << 20]);
        assert!(compressed.len() < 20 << 10, "{}", compressed.len());
        let limit = 1 << 20;
        let mut d = GzipDecoder::new(Vec::new(), limit);
        let mut failed = None;
        for chunk in compressed.chunks(4096) {
            if let Err(e) = d.push(chunk) {
                failed = Some(e);
                break;
            }
            assert!(d.inner.get_ref().buf.len() as u64 <= limit);
        }
        let e = failed.expect("the bomb must fail before its end");
        assert_eq!(e, DecodeError::TooLarge { limit });
        let text = e.to_string();
        assert!(
            text.contains("gzip body decoded past body_size_limit of 1048576 bytes"),
            "{text}"
        );
    }

    #[test]
    fn a_body_exactly_at_the_limit_passes() {
        let plain = exposition(100);
        let compressed = gzip(&plain);
        let n = plain.len() as u64;
        assert_eq!(decode_in_chunks(&compressed, 64, n).unwrap(), plain);
        assert_eq!(
            decode_in_chunks(&compressed, 64, n - 1),
            Err(DecodeError::TooLarge { limit: n - 1 })
        );
    }

    #[test]
    fn corrupt_or_truncated_gzip_fails_cleanly() {
        let plain = exposition(500);
        let compressed = gzip(&plain);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", Vec::new()),
            ("not gzip", plain.clone()),
            ("header only", compressed[..10].to_vec()),
            ("truncated", compressed[..compressed.len() / 2].to_vec()),
            ("no trailer", compressed[..compressed.len() - 8].to_vec()),
            ("bad checksum", {
                let mut c = compressed.clone();
                let n = c.len();
                c[n - 8] ^= 0xff;
                c
            }),
            ("damaged data", {
                let mut c = compressed.clone();
                for b in &mut c[20..60] {
                    *b = !*b;
                }
                c
            }),
            ("trailing garbage", {
                let mut c = compressed.clone();
                c.extend_from_slice(b"garbage");
                c
            }),
        ];
        for (name, body) in cases {
            match decode_in_chunks(&body, 100, 10 << 20) {
                Err(DecodeError::Corrupt(reason)) => assert!(!reason.is_empty(), "{name}"),
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn content_encoding_is_identity_gzip_or_named_as_unsupported() {
        let h = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(
            ContentEncoding::from_header(None),
            Ok(ContentEncoding::Identity)
        );
        for v in ["identity", "IDENTITY", ""] {
            assert_eq!(
                ContentEncoding::from_header(Some(&h(v))),
                Ok(ContentEncoding::Identity),
                "{v:?}"
            );
        }
        for v in ["gzip", "GZip", " gzip ", "x-gzip"] {
            assert_eq!(
                ContentEncoding::from_header(Some(&h(v))),
                Ok(ContentEncoding::Gzip),
                "{v:?}"
            );
        }
        for v in ["br", "zstd", "deflate", "gzip, br"] {
            let e = ContentEncoding::from_header(Some(&h(v))).unwrap_err();
            assert_eq!(e, DecodeError::Unsupported(v.to_string()));
            assert!(e.to_string().contains(v), "{e}");
        }
    }

    #[test]
    fn an_identity_body_is_passed_through() {
        let mut r = BodyReader::new(ContentEncoding::Identity, b"stale".to_vec(), 4);
        r.push(b"up ").unwrap();
        r.push(b"1\n").unwrap();
        // The client holds an unencoded body to the limit; the reader only appends.
        assert_eq!(r.finish().unwrap(), b"up 1\n");
        let mut r = BodyReader::new(ContentEncoding::Gzip, b"stale".to_vec(), 100);
        r.push(&gzip(b"up 1\n")).unwrap();
        assert_eq!(r.finish().unwrap(), b"up 1\n");
    }
}
