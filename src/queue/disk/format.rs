//! The record format, as pure functions over bytes: no I/O here, so every property of the
//! format is testable (and fuzzable) without a filesystem.
//!
//! A record is a fixed 24-byte header followed by a payload:
//!
//! ```text
//! header:  magic "PPQ\x01" (4) | payload_len u32 LE | first_seq u64 LE | count u32 LE | crc u32 LE
//! payload: varint label_set_count
//!          label_set_count × ( varint label_count, label_count × ( varint len, name, varint len, value ) )
//!          varint sample_count
//!          sample_count × ( varint label_set_index, zigzag-varint timestamp delta, f64 bits LE (8) )
//! ```
//!
//! `crc` is CRC32C over header bytes 4..20 (length, first sequence, count) followed by the
//! payload, so a flipped bit in the sequence number is caught just like one in a value. The
//! last byte of the magic is the format version. Timestamps are deltas from the previous
//! sample (the first from zero) because a probe batch shares one timestamp: most deltas cost
//! one byte. Values keep their exact bits, so staleness-marker NaNs survive the round trip.
//! Label sets are written in full in every record, so a record decodes on its own, whatever
//! happened to the records before it.
//!
//! **Version 2** (magic `"PPQ\x02"`) carries native histograms: the version-1 payload, then
//!
//! ```text
//! varint histogram_count
//! histogram_count × ( varint sample_index (increasing), zigzag schema, f64 zero_threshold,
//!                     varint zero_count, varint count, f64 sum, u8 reset_hint,
//!                     positive side, negative side )
//! side:    varint span_count, span_count × ( zigzag offset, varint length ),
//!          varint delta_count, delta_count × zigzag delta
//! ```
//!
//! A histogram sample's float value (a marker NaN, see `series::Sample::native`) stays in
//! the sample list, so sample numbering is the same in both versions. Records without a
//! histogram are still written as version 1, byte for byte as before: segments written by
//! this version stay readable by the previous one unless they hold histograms, and this
//! version reads both.

use std::collections::HashMap;

use std::sync::Arc;

use crate::series::native::{BucketSpan, NativeHistogram, ResetHint};
use crate::series::{LabelError, Labels, Sample};

/// First bytes of every record; the last byte is the format version.
pub const RECORD_MAGIC: [u8; 4] = *b"PPQ\x01";
/// The magic of a version-2 record, which carries native histograms.
pub const RECORD_MAGIC_V2: [u8; 4] = *b"PPQ\x02";

/// Tells whether `bytes` are a record magic of a version this build reads.
pub fn is_record_magic(bytes: &[u8]) -> bool {
    bytes == RECORD_MAGIC || bytes == RECORD_MAGIC_V2
}
/// Bytes in a record header.
pub const HEADER_LEN: usize = 24;
/// Largest payload a record may carry, whatever the segment size; bounds what a reader
/// allocates on the word of a length field read from disk.
pub const MAX_PAYLOAD_LEN: u32 = 64 << 20;

/// Why bytes are not a valid record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// The bytes end before the structure they describe.
    #[error("record truncated: needed {needed} bytes at offset {offset}, {available} available")]
    Truncated {
        /// Offset in the payload (or header) where more bytes were needed.
        offset: usize,
        /// Bytes needed there.
        needed: usize,
        /// Bytes that were left.
        available: usize,
    },
    /// The header does not start with the record magic (or is another format version).
    #[error("bad record magic {found:02x?}, expected {RECORD_MAGIC:02x?}")]
    BadMagic {
        /// The four bytes found.
        found: [u8; 4],
    },
    /// The header announces a payload longer than any record may be.
    #[error("record payload length {len} exceeds the limit {limit}")]
    LengthTooLarge {
        /// Announced length.
        len: u32,
        /// The limit.
        limit: u32,
    },
    /// The checksum does not match the bytes.
    #[error("record checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        /// Checksum in the header.
        stored: u32,
        /// Checksum of the bytes read.
        computed: u32,
    },
    /// A varint runs past 64 bits.
    #[error("malformed varint at payload offset {offset}")]
    BadVarint {
        /// Where it starts.
        offset: usize,
    },
    /// A count or length in the payload cannot fit in the bytes that remain.
    #[error("{what} {value} at payload offset {offset} cannot fit in the record")]
    Implausible {
        /// Which field.
        what: &'static str,
        /// Its value.
        value: u64,
        /// Where it was read.
        offset: usize,
    },
    /// A sample names a label set the record does not have.
    #[error("sample refers to label set {index}, record has {table_len}")]
    LabelIndexOutOfRange {
        /// The index read.
        index: u64,
        /// Label sets in the record.
        table_len: usize,
    },
    /// A label name or value is not UTF-8.
    #[error("label text at payload offset {offset} is not UTF-8")]
    InvalidUtf8 {
        /// Where the text starts.
        offset: usize,
    },
    /// A label set is not valid (names, duplicates).
    #[error("invalid label set in record: {0}")]
    InvalidLabels(#[from] LabelError),
    /// The header's sample count disagrees with the payload.
    #[error("header says {header} samples, payload has {payload}")]
    CountMismatch {
        /// Count in the header.
        header: u32,
        /// Count in the payload.
        payload: u64,
    },
    /// Bytes follow the last sample.
    #[error("{extra} unexpected bytes after the last sample")]
    TrailingBytes {
        /// How many.
        extra: usize,
    },
}

/// A decoded record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// Payload bytes following the header.
    pub payload_len: u32,
    /// Sequence number of the record's first sample; sample `i` has `first_seq + i`.
    pub first_seq: u64,
    /// Samples in the record.
    pub count: u32,
    /// CRC32C of header bytes 4..20 and the payload.
    pub crc: u32,
    /// Format version (the magic's last byte): 1, or 2 with native histograms.
    pub version: u8,
}

impl RecordHeader {
    /// Bytes the whole record occupies (header and payload).
    pub fn record_len(&self) -> u64 {
        HEADER_LEN as u64 + u64::from(self.payload_len)
    }

    /// Sequence number after the record's last sample.
    pub fn end_seq(&self) -> u64 {
        self.first_seq.saturating_add(u64::from(self.count))
    }

    /// Checks `payload` against the header's checksum.
    pub fn verify(&self, payload: &[u8]) -> Result<(), FormatError> {
        let computed = record_crc(self.payload_len, self.first_seq, self.count, payload);
        if computed == self.crc {
            Ok(())
        } else {
            Err(FormatError::CrcMismatch {
                stored: self.crc,
                computed,
            })
        }
    }
}

fn record_crc(payload_len: u32, first_seq: u64, count: u32, payload: &[u8]) -> u32 {
    let mut fields = [0u8; 16];
    fields[0..4].copy_from_slice(&payload_len.to_le_bytes());
    fields[4..12].copy_from_slice(&first_seq.to_le_bytes());
    fields[12..16].copy_from_slice(&count.to_le_bytes());
    crc32c::crc32c_append(crc32c::crc32c(&fields), payload)
}

/// Parses a header, checking magic and the length bound (not the checksum: that needs the
/// payload, see [`RecordHeader::verify`]).
pub fn parse_header(bytes: &[u8]) -> Result<RecordHeader, FormatError> {
    if bytes.len() < HEADER_LEN {
        return Err(FormatError::Truncated {
            offset: 0,
            needed: HEADER_LEN,
            available: bytes.len(),
        });
    }
    let word = |at: usize| [bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]];
    let magic = word(0);
    if !is_record_magic(&magic) {
        return Err(FormatError::BadMagic { found: magic });
    }
    let payload_len = u32::from_le_bytes(word(4));
    if payload_len > MAX_PAYLOAD_LEN {
        return Err(FormatError::LengthTooLarge {
            len: payload_len,
            limit: MAX_PAYLOAD_LEN,
        });
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&bytes[8..16]);
    Ok(RecordHeader {
        payload_len,
        first_seq: u64::from_le_bytes(seq),
        count: u32::from_le_bytes(word(16)),
        crc: u32::from_le_bytes(word(20)),
        version: magic[3],
    })
}

/// Appends a complete record (header and payload) for `samples` numbered from `first_seq`
/// to `out`, and returns its header. `scratch` is reused between calls to avoid allocating.
pub fn write_record(
    first_seq: u64,
    samples: &[Sample],
    scratch: &mut EncodeScratch,
    out: &mut Vec<u8>,
) -> RecordHeader {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER_LEN]);
    let version = encode_payload_into(samples, scratch, out);
    let magic = if version == 2 {
        RECORD_MAGIC_V2
    } else {
        RECORD_MAGIC
    };
    // Payload length and count are bounded by the caller (see `MAX_PAYLOAD_LEN` and the
    // per-record sample limit); saturating keeps a misuse detectable instead of wrapping.
    let payload_len = u32::try_from(out.len() - start - HEADER_LEN).unwrap_or(u32::MAX);
    let count = u32::try_from(samples.len()).unwrap_or(u32::MAX);
    let crc = record_crc(payload_len, first_seq, count, &out[start + HEADER_LEN..]);
    let h = &mut out[start..start + HEADER_LEN];
    h[0..4].copy_from_slice(&magic);
    h[4..8].copy_from_slice(&payload_len.to_le_bytes());
    h[8..16].copy_from_slice(&first_seq.to_le_bytes());
    h[16..20].copy_from_slice(&count.to_le_bytes());
    h[20..24].copy_from_slice(&crc.to_le_bytes());
    RecordHeader {
        payload_len,
        first_seq,
        count,
        crc,
        version,
    }
}

/// Reusable state for encoding: the label-set table keyed by the sets' allocation address.
#[derive(Debug, Default)]
pub struct EncodeScratch {
    table: HashMap<usize, u64>,
}

/// Encodes samples into a self-contained payload (version 2 when a sample is a native
/// histogram, else version 1).
pub fn encode_record(samples: &[Sample]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_payload_into(samples, &mut EncodeScratch::default(), &mut out);
    out
}

/// Writes the payload and returns its version: 2 when a sample is a native histogram.
fn encode_payload_into(samples: &[Sample], scratch: &mut EncodeScratch, out: &mut Vec<u8>) -> u8 {
    // Label sets are deduplicated by identity: samples of one series share one label set
    // (see `series`), so this is cheap and exact; equal sets built apart are merely written
    // twice.
    scratch.table.clear();
    let mut order: Vec<&Labels> = Vec::new();
    let mut indices: Vec<u64> = Vec::with_capacity(samples.len());
    for s in samples {
        let key = s.labels.addr();
        let next = order.len() as u64;
        let idx = *scratch.table.entry(key).or_insert_with(|| {
            order.push(&s.labels);
            next
        });
        indices.push(idx);
    }
    put_varint(out, order.len() as u64);
    for labels in order {
        put_varint(out, labels.len() as u64);
        for l in labels.iter() {
            put_varint(out, l.name.len() as u64);
            out.extend_from_slice(l.name.as_bytes());
            put_varint(out, l.value.len() as u64);
            out.extend_from_slice(l.value.as_bytes());
        }
    }
    put_varint(out, samples.len() as u64);
    let mut prev_ts = 0i64;
    for (s, idx) in samples.iter().zip(indices) {
        put_varint(out, idx);
        put_varint(out, zigzag(s.timestamp_ms.wrapping_sub(prev_ts)));
        prev_ts = s.timestamp_ms;
        out.extend_from_slice(&s.value.to_bits().to_le_bytes());
    }
    let histograms = samples.iter().filter(|s| s.histogram().is_some()).count();
    if histograms == 0 {
        return 1;
    }
    put_varint(out, histograms as u64);
    for (i, s) in samples.iter().enumerate() {
        if let Some(h) = s.histogram() {
            put_varint(out, i as u64);
            put_histogram(out, h);
        }
    }
    2
}

fn put_histogram(out: &mut Vec<u8>, h: &NativeHistogram) {
    put_varint(out, zigzag(i64::from(h.schema)));
    out.extend_from_slice(&h.zero_threshold.to_bits().to_le_bytes());
    put_varint(out, h.zero_count);
    put_varint(out, h.count);
    out.extend_from_slice(&h.sum.to_bits().to_le_bytes());
    out.push(h.reset_hint.to_proto() as u8);
    for (spans, deltas) in [
        (&h.positive_spans, &h.positive_deltas),
        (&h.negative_spans, &h.negative_deltas),
    ] {
        put_varint(out, spans.len() as u64);
        for span in spans {
            put_varint(out, zigzag(i64::from(span.offset)));
            put_varint(out, u64::from(span.length));
        }
        put_varint(out, deltas.len() as u64);
        for d in deltas {
            put_varint(out, zigzag(*d));
        }
    }
}

fn read_histogram(r: &mut Reader<'_>) -> Result<NativeHistogram, FormatError> {
    let small = |r: &mut Reader<'_>, what: &'static str| -> Result<i32, FormatError> {
        let offset = r.pos;
        let value = r.varint()?;
        i32::try_from(unzigzag(value)).map_err(|_| FormatError::Implausible {
            what,
            value,
            offset,
        })
    };
    let float = |r: &mut Reader<'_>| -> Result<f64, FormatError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(r.take(8)?);
        Ok(f64::from_bits(u64::from_le_bytes(b)))
    };
    let schema = small(r, "histogram schema")?;
    let zero_threshold = float(r)?;
    let zero_count = r.varint()?;
    let count = r.varint()?;
    let sum = float(r)?;
    let reset_hint = ResetHint::from_proto(i32::from(r.take(1)?[0]));
    let mut sides: [(Vec<BucketSpan>, Vec<i64>); 2] = Default::default();
    for (spans, deltas) in sides.iter_mut() {
        let n = r.count("histogram span count", 2)?;
        for _ in 0..n {
            let offset = small(r, "histogram span offset")?;
            let at = r.pos;
            let length = r.varint()?;
            let length = u32::try_from(length).map_err(|_| FormatError::Implausible {
                what: "histogram span length",
                value: length,
                offset: at,
            })?;
            spans.push(BucketSpan { offset, length });
        }
        let n = r.count("histogram delta count", 1)?;
        for _ in 0..n {
            deltas.push(unzigzag(r.varint()?));
        }
    }
    let [(positive_spans, positive_deltas), (negative_spans, negative_deltas)] = sides;
    Ok(NativeHistogram {
        schema,
        zero_threshold,
        zero_count,
        count,
        sum,
        positive_spans,
        positive_deltas,
        negative_spans,
        negative_deltas,
        reset_hint,
    })
}

/// Decodes a version-1 payload. Never panics, whatever the bytes.
pub fn decode_record(bytes: &[u8]) -> Result<Vec<Sample>, FormatError> {
    decode_record_version(bytes, 1)
}

/// Decodes a payload of format `version` (1, or 2 with histograms) written by
/// [`encode_record`]. Never panics, whatever the bytes.
pub fn decode_record_version(bytes: &[u8], version: u8) -> Result<Vec<Sample>, FormatError> {
    let mut r = Reader { bytes, pos: 0 };
    // Every label set takes at least one byte and every sample at least ten: counts beyond
    // that are corruption, and refusing them keeps allocations bounded by the input size.
    let table_len = r.count("label set count", 1)?;
    let mut table: Vec<Labels> = Vec::with_capacity(table_len);
    let mut pairs: Vec<(String, String)> = Vec::new();
    for _ in 0..table_len {
        let n = r.count("label count", 2)?;
        pairs.clear();
        for _ in 0..n {
            let name = r.text()?;
            let value = r.text()?;
            pairs.push((name, value));
        }
        table.push(Labels::from_pairs(pairs.drain(..))?);
    }
    let n = r.count("sample count", 10)?;
    let mut samples = Vec::with_capacity(n);
    let mut ts = 0i64;
    for _ in 0..n {
        let index = r.varint()?;
        let labels = usize::try_from(index)
            .ok()
            .and_then(|i| table.get(i))
            .ok_or(FormatError::LabelIndexOutOfRange {
                index,
                table_len: table.len(),
            })?
            .clone();
        ts = ts.wrapping_add(unzigzag(r.varint()?));
        let bits = r.take(8)?;
        let mut b = [0u8; 8];
        b.copy_from_slice(bits);
        samples.push(Sample {
            labels,
            value: f64::from_bits(u64::from_le_bytes(b)),
            timestamp_ms: ts,
        });
    }
    if version >= 2 {
        let n = r.count("histogram count", 2)?;
        let mut next = 0usize;
        for _ in 0..n {
            let offset = r.pos;
            let index = r.varint()?;
            let i = usize::try_from(index)
                .ok()
                .filter(|i| *i >= next && *i < samples.len())
                .ok_or(FormatError::Implausible {
                    what: "histogram sample index",
                    value: index,
                    offset,
                })?;
            next = i + 1;
            let h = read_histogram(&mut r)?;
            let s = &mut samples[i];
            *s = Sample::native(&s.labels, Arc::new(h), s.timestamp_ms);
        }
    }
    if r.pos != bytes.len() {
        return Err(FormatError::TrailingBytes {
            extra: bytes.len() - r.pos,
        });
    }
    Ok(samples)
}

/// Decodes a payload and checks it against its header's sample count.
pub fn decode_checked(header: &RecordHeader, payload: &[u8]) -> Result<Vec<Sample>, FormatError> {
    let samples = decode_record_version(payload, header.version)?;
    if samples.len() as u64 != u64::from(header.count) {
        return Err(FormatError::CountMismatch {
            header: header.count,
            payload: samples.len() as u64,
        });
    }
    Ok(samples)
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&[u8], FormatError> {
        if n > self.remaining() {
            return Err(FormatError::Truncated {
                offset: self.pos,
                needed: n,
                available: self.remaining(),
            });
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn varint(&mut self) -> Result<u64, FormatError> {
        let start = self.pos;
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(&b) = self.bytes.get(self.pos) else {
                return Err(FormatError::Truncated {
                    offset: self.pos,
                    needed: 1,
                    available: 0,
                });
            };
            self.pos += 1;
            // The tenth byte may only carry the top bit of a u64.
            if shift == 63 && b > 1 {
                return Err(FormatError::BadVarint { offset: start });
            }
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(FormatError::BadVarint { offset: start })
    }

    /// Reads a count whose every item needs at least `min_item_len` bytes.
    fn count(&mut self, what: &'static str, min_item_len: usize) -> Result<usize, FormatError> {
        let offset = self.pos;
        let value = self.varint()?;
        match usize::try_from(value) {
            Ok(n) if n.saturating_mul(min_item_len) <= self.remaining() => Ok(n),
            _ => Err(FormatError::Implausible {
                what,
                value,
                offset,
            }),
        }
    }

    fn text(&mut self) -> Result<String, FormatError> {
        let len = self.count("text length", 1)?;
        let offset = self.pos;
        let raw = self.take(len)?;
        std::str::from_utf8(raw)
            .map(str::to_owned)
            .map_err(|_| FormatError::InvalidUtf8 { offset })
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::series::stale_nan;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs.iter().copied()).unwrap()
    }

    fn same(a: &[Sample], b: &[Sample]) -> bool {
        a.len() == b.len()
            && a.iter().zip(b).all(|(x, y)| {
                x.labels == y.labels
                    && x.timestamp_ms == y.timestamp_ms
                    && x.value.to_bits() == y.value.to_bits()
            })
    }

    fn arb_labels() -> impl Strategy<Value = Labels> {
        (
            "[a-z_:][a-z0-9_:]{0,12}",
            proptest::collection::btree_map("[a-zA-Z_][a-zA-Z0-9_]{0,8}", ".{1,12}", 0..5),
        )
            .prop_map(|(name, pairs)| {
                let pairs = pairs.into_iter().filter(|(k, _)| k != "__name__");
                Labels::with_name(&name, pairs).unwrap()
            })
    }

    fn arb_samples() -> impl Strategy<Value = Vec<Sample>> {
        (
            proptest::collection::vec(arb_labels(), 1..6),
            proptest::collection::vec(
                (any::<prop::sample::Index>(), any::<u64>(), any::<i64>()),
                0..40,
            ),
        )
            .prop_map(|(sets, raw)| {
                raw.into_iter()
                    .map(|(i, bits, ts)| Sample {
                        labels: sets[i.index(sets.len())].clone(),
                        value: f64::from_bits(bits),
                        timestamp_ms: ts,
                    })
                    .collect()
            })
    }

    proptest! {
        #[test]
        fn payload_round_trips(samples in arb_samples()) {
            let bytes = encode_record(&samples);
            let back = decode_record(&bytes).unwrap();
            prop_assert!(same(&samples, &back));
        }

        #[test]
        fn record_round_trips_with_header(samples in arb_samples(), first_seq in any::<u64>()) {
            let mut out = vec![7u8; 3];
            let h = write_record(first_seq, &samples, &mut EncodeScratch::default(), &mut out);
            let parsed = parse_header(&out[3..]).unwrap();
            prop_assert_eq!(parsed, h);
            let payload = &out[3 + HEADER_LEN..];
            prop_assert_eq!(payload.len() as u32, h.payload_len);
            parsed.verify(payload).unwrap();
            prop_assert!(same(&samples, &decode_checked(&parsed, payload).unwrap()));
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_record(&bytes);
            let _ = parse_header(&bytes);
        }

        #[test]
        fn mutated_payloads_never_panic(samples in arb_samples(), flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
            let mut bytes = encode_record(&samples);
            if !bytes.is_empty() {
                for (i, x) in flips {
                    let at = i.index(bytes.len());
                    bytes[at] ^= x;
                }
            }
            let _ = decode_record(&bytes);
        }

        #[test]
        fn any_flipped_bit_fails_the_checksum(samples in arb_samples(), at in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut out = Vec::new();
            write_record(5, &samples, &mut EncodeScratch::default(), &mut out);
            let i = 4 + at.index(out.len() - 4);
            out[i] ^= 1 << bit;
            let bad = parse_header(&out).and_then(|h| {
                let end = HEADER_LEN + h.payload_len as usize;
                match out.get(HEADER_LEN..end) {
                    Some(p) => h.verify(p),
                    None => Err(FormatError::Truncated { offset: 0, needed: end, available: out.len() }),
                }
            });
            prop_assert!(bad.is_err());
        }
    }

    #[test]
    fn shared_label_sets_are_written_once_and_shared_on_decode() {
        let a = labels(&[("__name__", "up"), ("job", "x")]);
        let samples: Vec<Sample> = (0..50)
            .map(|i| Sample {
                labels: a.clone(),
                value: i as f64,
                timestamp_ms: 1_700_000_000_000,
            })
            .collect();
        let bytes = encode_record(&samples);
        // One label set, then ~10 bytes per sample (index, zero delta, 8 value bytes).
        assert!(bytes.len() < 20 + 50 * 11, "{}", bytes.len());
        let back = decode_record(&bytes).unwrap();
        assert!(Labels::ptr_eq(&back[0].labels, &back[49].labels));
    }

    #[test]
    fn stale_markers_keep_their_bits() {
        let s = vec![Sample {
            labels: labels(&[("__name__", "up")]),
            value: stale_nan(),
            timestamp_ms: -5,
        }];
        let back = decode_record(&encode_record(&s)).unwrap();
        assert!(crate::series::is_stale_nan(back[0].value));
        assert_eq!(back[0].timestamp_ms, -5);
    }

    fn histogram_samples() -> Vec<Sample> {
        use crate::series::native::{NativeOptions, NativeState};
        let mut state = NativeState::new(NativeOptions::from_factor(1.1));
        for v in [0.0, 1.0, 1.0, 1.1, -2.0, 1e6] {
            state.observe(v);
        }
        let mut h = state.snapshot();
        h.reset_hint = ResetHint::No;
        let up = labels(&[("__name__", "up")]);
        let lat = labels(&[("__name__", "lat_seconds"), ("probe", "p")]);
        vec![
            Sample {
                labels: up.clone(),
                value: 1.0,
                timestamp_ms: 1_700_000_000_000,
            },
            Sample::native(&lat, Arc::new(h.clone()), 1_700_000_000_000),
            Sample::native(
                &lat,
                Arc::new(NativeHistogram::default()),
                1_700_000_001_000,
            ),
            Sample {
                labels: up,
                value: 0.0,
                timestamp_ms: 1_700_000_001_000,
            },
        ]
    }

    #[test]
    fn histograms_round_trip_in_a_version_2_record() {
        let samples = histogram_samples();
        let mut out = Vec::new();
        let h = write_record(10, &samples, &mut EncodeScratch::default(), &mut out);
        assert_eq!(h.version, 2);
        assert_eq!(&out[..4], b"PPQ\x02");
        let parsed = parse_header(&out).unwrap();
        assert_eq!(parsed, h);
        let back = decode_checked(&parsed, &out[HEADER_LEN..]).unwrap();
        assert!(same(&samples, &back));
        for (a, b) in samples.iter().zip(&back) {
            assert_eq!(a.histogram(), b.histogram());
        }
        assert!(back[1].histogram().is_some() && back[0].histogram().is_none());
        // A version-1 reader sees bytes it does not know and refuses the payload.
        assert!(matches!(
            decode_record(&out[HEADER_LEN..]),
            Err(FormatError::TrailingBytes { .. })
        ));
    }

    #[test]
    fn records_without_histograms_stay_version_1_byte_for_byte() {
        let samples = vec![Sample {
            labels: labels(&[("__name__", "up")]),
            value: 1.0,
            timestamp_ms: 3,
        }];
        let mut out = Vec::new();
        let h = write_record(0, &samples, &mut EncodeScratch::default(), &mut out);
        assert_eq!(h.version, 1);
        // The bytes the previous version wrote for this record.
        let want: &[u8] = &[
            b'P', b'P', b'Q', 1, 25, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0,
        ];
        assert_eq!(&out[..20], want);
        assert_eq!(
            &out[HEADER_LEN..],
            &[1, 1, 8, b'_', b'_', b'n', b'a', b'm', b'e', b'_', b'_', 2, b'u', b'p', 1, 0, 6][..]
                .iter()
                .copied()
                .chain(1f64.to_bits().to_le_bytes())
                .collect::<Vec<u8>>()[..]
        );
    }

    proptest! {
        #[test]
        fn mutated_version_2_payloads_never_panic(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8), cut in any::<prop::sample::Index>()) {
            let mut bytes = encode_record(&histogram_samples());
            for (i, x) in flips {
                let at = i.index(bytes.len());
                bytes[at] ^= x;
            }
            let _ = decode_record_version(&bytes, 2);
            let _ = decode_record_version(&bytes[..cut.index(bytes.len())], 2);
        }
    }

    #[test]
    fn corrupt_payloads_are_typed_errors() {
        assert!(matches!(
            decode_record(&[0xff; 11]),
            Err(FormatError::BadVarint { .. })
        ));
        // Claims a billion label sets in three bytes.
        assert!(matches!(
            decode_record(&[0x80, 0x94, 0xeb, 0xdc, 0x03]),
            Err(FormatError::Implausible { .. })
        ));
        // No label sets, one sample pointing at set 3.
        let mut p = vec![0, 1, 3, 0];
        p.extend_from_slice(&[0; 8]);
        assert_eq!(
            decode_record(&p),
            Err(FormatError::LabelIndexOutOfRange {
                index: 3,
                table_len: 0
            })
        );
        // Invalid label name "1a".
        let p = [1, 1, 2, b'1', b'a', 1, b'x', 0];
        assert!(matches!(
            decode_record(&p),
            Err(FormatError::InvalidLabels(_))
        ));
        assert_eq!(
            decode_record(&[0, 0, 9]),
            Err(FormatError::TrailingBytes { extra: 1 })
        );
        assert!(matches!(
            parse_header(b"XXXX00000000000000000000"),
            Err(FormatError::BadMagic { .. })
        ));
        let mut h = [0u8; HEADER_LEN];
        h[..4].copy_from_slice(&RECORD_MAGIC);
        h[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            parse_header(&h),
            Err(FormatError::LengthTooLarge { .. })
        ));
    }
}
