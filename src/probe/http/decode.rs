//! Decoding a response body as `compression` says, within the body limit: the limit bounds
//! the decoded bytes, so a small compressed answer cannot expand into more memory than the
//! probe allows.

use std::io::Read;

use crate::config::http_checks::Compression;

/// Why a body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum DecodeError {
    /// The decoded body passes the limit.
    #[error("the decoded body exceeds body_size_limit ({limit} bytes)")]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The bytes are not in the configured encoding.
    #[error("the body is not valid {encoding} ({message}): the server did not compress it as asked, or compression names the wrong encoding")]
    Invalid {
        /// `gzip`, `deflate` or `br`.
        encoding: &'static str,
        /// The decoder's complaint.
        message: String,
    },
}

/// `raw` decoded as `compression`, at most `limit` bytes of it. The configured encoding is
/// applied whatever `Content-Encoding` says, as the blackbox exporter does: the probe asked
/// for it, and an answer in another encoding is a failure to see.
pub(super) fn decode(
    compression: Compression,
    raw: &[u8],
    limit: u64,
) -> Result<Vec<u8>, DecodeError> {
    match compression {
        Compression::Identity => {
            if raw.len() as u64 > limit {
                return Err(DecodeError::TooLarge { limit });
            }
            Ok(raw.to_vec())
        }
        Compression::Gzip => bounded(flate2::read::GzDecoder::new(raw), "gzip", limit),
        // HTTP's deflate is zlib-wrapped (RFC 9110), but some servers send raw deflate: the
        // zlib header is two bytes whose big-endian value is a multiple of 31, with method 8.
        Compression::Deflate if is_zlib(raw) => {
            bounded(flate2::read::ZlibDecoder::new(raw), "deflate", limit)
        }
        Compression::Deflate => bounded(flate2::read::DeflateDecoder::new(raw), "deflate", limit),
        Compression::Br => bounded(
            brotli_decompressor::Decompressor::new(raw, BROTLI_BUFFER),
            "br",
            limit,
        ),
    }
}

/// The brotli decoder's input buffer; the output is bounded by `limit` whatever this is.
const BROTLI_BUFFER: usize = 4096;

fn is_zlib(raw: &[u8]) -> bool {
    match raw {
        [cmf, flg, ..] => cmf & 0x0f == 8 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0,
        _ => false,
    }
}

/// Reads `decoder` to the end, failing once it yields more than `limit` bytes.
fn bounded(decoder: impl Read, encoding: &'static str, limit: u64) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    decoder
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| DecodeError::Invalid {
            encoding,
            message: e.to_string(),
        })?;
    if out.len() as u64 > limit {
        return Err(DecodeError::TooLarge { limit });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// `{"status":"up"}\n` four times, brotli-compressed (quality 11).
    const BR_STATUS: &[u8] = &[
        0x1b, 0x3f, 0x00, 0xf8, 0x8d, 0xd3, 0x15, 0xf3, 0x23, 0x84, 0xf5, 0x53, 0x4a, 0x91, 0xba,
        0xbd, 0x56, 0xd0, 0x81, 0xeb, 0x53, 0x94, 0xf8, 0x53, 0x03, 0x54, 0x60, 0x53, 0x2a, 0x03,
    ];
    /// 100,000 bytes of `a` in 14 brotli bytes: a small answer that expands a lot.
    const BR_BOMB: &[u8] = &[
        0x5b, 0x9f, 0x86, 0x81, 0x5f, 0x22, 0x2c, 0x1e, 0x0b, 0x04, 0xb2, 0xfc, 0x02, 0x00,
    ];

    #[test]
    fn brotli_decodes_within_the_limit_and_refuses_garbage() {
        assert_eq!(
            decode(Compression::Br, BR_STATUS, 1000).unwrap(),
            "{\"status\":\"up\"}\n".repeat(4).as_bytes()
        );
        assert_eq!(
            decode(Compression::Br, BR_BOMB, 100_000).unwrap().len(),
            100_000
        );
        assert_eq!(
            decode(Compression::Br, BR_BOMB, 99_999),
            Err(DecodeError::TooLarge { limit: 99_999 })
        );
        assert!(matches!(
            decode(Compression::Br, b"\xff\xff not brotli", 1000),
            Err(DecodeError::Invalid { encoding: "br", .. })
        ));
    }

    #[test]
    fn gzip_and_both_deflates_decode() {
        assert_eq!(
            decode(Compression::Gzip, &gzip(b"hello"), 100).unwrap(),
            b"hello"
        );
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(b"zlib").unwrap();
        assert_eq!(
            decode(Compression::Deflate, &z.finish().unwrap(), 100).unwrap(),
            b"zlib"
        );
        let mut d = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        d.write_all(b"raw deflate").unwrap();
        assert_eq!(
            decode(Compression::Deflate, &d.finish().unwrap(), 100).unwrap(),
            b"raw deflate"
        );
        assert_eq!(
            decode(Compression::Identity, b"as is", 5).unwrap(),
            b"as is"
        );
    }

    #[test]
    fn the_limit_bounds_the_decoded_size() {
        let bomb = gzip(&vec![b'a'; 100_000]);
        assert!(bomb.len() < 1_000);
        assert_eq!(
            decode(Compression::Gzip, &bomb, 10_000),
            Err(DecodeError::TooLarge { limit: 10_000 })
        );
        assert_eq!(
            decode(Compression::Gzip, &bomb, 100_000).unwrap().len(),
            100_000
        );
        assert_eq!(
            decode(Compression::Identity, b"123456", 5),
            Err(DecodeError::TooLarge { limit: 5 })
        );
    }

    #[test]
    fn a_body_in_another_encoding_is_invalid() {
        let e = decode(Compression::Gzip, b"plain text", 100).unwrap_err();
        assert!(
            matches!(
                e,
                DecodeError::Invalid {
                    encoding: "gzip",
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("not valid gzip"), "{e}");
    }
}
