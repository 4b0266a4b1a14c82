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
        /// `gzip` or `deflate`.
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
    }
}

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
