//! Acknowledgement files: one small file per consumer holding the first sequence number it
//! has not acknowledged. Pure encoding and naming; the queue writes them atomically.
//!
//! ```text
//! magic "PPA\x01" (4) | next_seq u64 LE | name_len u16 LE | name (UTF-8) | crc32c u32 LE of all before
//! ```

/// File name extension of acknowledgement files.
pub const ACK_EXT: &str = ".ack";
/// First bytes of an acknowledgement file; the last byte is the format version.
pub const ACK_MAGIC: [u8; 4] = *b"PPA\x01";
/// Longest file an acknowledgement may be (the name is at most `u16::MAX` bytes).
pub const MAX_ACK_FILE_LEN: u64 = 4 + 8 + 2 + u16::MAX as u64 + 4;

/// Why an acknowledgement file's content was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AckFileError {
    /// Shorter than its fields.
    #[error("acknowledgement file truncated at {len} bytes")]
    Truncated {
        /// Bytes found.
        len: usize,
    },
    /// Wrong magic or version.
    #[error("acknowledgement file has bad magic {found:02x?}")]
    BadMagic {
        /// The bytes found.
        found: [u8; 4],
    },
    /// The checksum does not match.
    #[error(
        "acknowledgement file checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
    )]
    CrcMismatch {
        /// Stored checksum.
        stored: u32,
        /// Checksum of the content.
        computed: u32,
    },
    /// Names another consumer than the file name says (or is not UTF-8).
    #[error("acknowledgement file names consumer {found:?}, expected {expected:?}")]
    WrongConsumer {
        /// Name in the file (lossy).
        found: String,
        /// Name expected.
        expected: String,
    },
}

/// The file name holding `consumer`'s position: the name with bytes outside
/// `[A-Za-z0-9_-]` percent-encoded; over-long names are shortened and made unique with a
/// checksum (the full name is inside the file).
pub fn ack_file_name(consumer: &str) -> String {
    let mut out = String::with_capacity(consumer.len() + ACK_EXT.len());
    for b in consumer.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.len() > 200 {
        out.truncate(190);
        out.push_str(&format!("~{:08x}", crc32c::crc32c(consumer.as_bytes())));
    }
    out.push_str(ACK_EXT);
    out
}

/// Encodes an acknowledgement file. Names longer than `u16::MAX` bytes are cut (they
/// cannot come from a configuration anyone wrote by hand).
pub fn encode_ack(consumer: &str, next_seq: u64) -> Vec<u8> {
    let name = &consumer.as_bytes()[..consumer.len().min(u16::MAX as usize)];
    let mut out = Vec::with_capacity(18 + name.len());
    out.extend_from_slice(&ACK_MAGIC);
    out.extend_from_slice(&next_seq.to_le_bytes());
    out.extend_from_slice(&(name.len() as u16).to_le_bytes());
    out.extend_from_slice(name);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes an acknowledgement file written for `consumer`; returns its next sequence number.
pub fn decode_ack(bytes: &[u8], consumer: &str) -> Result<u64, AckFileError> {
    let truncated = AckFileError::Truncated { len: bytes.len() };
    if bytes.len() < 18 {
        return Err(truncated);
    }
    let mut magic = [0u8; 4];
    magic.copy_from_slice(&bytes[..4]);
    if magic != ACK_MAGIC {
        return Err(AckFileError::BadMagic { found: magic });
    }
    let name_len = u16::from_le_bytes([bytes[12], bytes[13]]) as usize;
    let body_len = 14 + name_len;
    if bytes.len() != body_len + 4 {
        return Err(truncated);
    }
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&bytes[body_len..]);
    let stored = u32::from_le_bytes(crc);
    let computed = crc32c::crc32c(&bytes[..body_len]);
    if stored != computed {
        return Err(AckFileError::CrcMismatch { stored, computed });
    }
    let name = &bytes[14..body_len];
    let expected = &consumer.as_bytes()[..consumer.len().min(u16::MAX as usize)];
    if name != expected {
        return Err(AckFileError::WrongConsumer {
            found: String::from_utf8_lossy(name).into_owned(),
            expected: consumer.to_string(),
        });
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&bytes[4..12]);
    Ok(u64::from_le_bytes(seq))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn names_are_file_safe_and_distinct() {
        assert_eq!(
            ack_file_name("127.0.0.1:9090/api/v1/write"),
            "127%2E0%2E0%2E1%3A9090%2Fapi%2Fv1%2Fwrite.ack"
        );
        assert_ne!(ack_file_name("a/b"), ack_file_name("a%2Fb"));
        let long = "x".repeat(500);
        let name = ack_file_name(&long);
        assert!(name.len() < 255);
        assert_ne!(name, ack_file_name(&"x".repeat(501)));
    }

    #[test]
    fn garbage_is_refused() {
        let good = encode_ack("prom", 77);
        assert_eq!(decode_ack(&good, "prom"), Ok(77));
        assert!(matches!(
            decode_ack(&good, "other"),
            Err(AckFileError::WrongConsumer { .. })
        ));
        assert!(decode_ack(&[], "prom").is_err());
        assert!(decode_ack(&good[..good.len() - 1], "prom").is_err());
        let mut flipped = good.clone();
        flipped[6] ^= 1;
        assert!(matches!(
            decode_ack(&flipped, "prom"),
            Err(AckFileError::CrcMismatch { .. })
        ));
    }

    proptest! {
        #[test]
        fn round_trips(name in ".{0,40}", seq in any::<u64>()) {
            prop_assert_eq!(decode_ack(&encode_ack(&name, seq), &name), Ok(seq));
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_ack(&bytes, "x");
        }
    }
}
