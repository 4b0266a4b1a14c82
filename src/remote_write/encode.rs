//! Turns a batch of samples into a remote-write 1.0 request body: a protobuf `WriteRequest`
//! compressed with the snappy *block* format (not the framed/stream format, which receivers
//! refuse).
//!
//! The protobuf is written by hand from our own types rather than by building
//! [`crate::proto::WriteRequest`] and calling prost: that would clone every label name and
//! value of every series into fresh `String`s per request. The bytes written are the ones
//! prost would write for the same message (proto3 rules: fields in tag order, default values
//! omitted), with one deliberate exception: a sample value of `-0.0` is written, where prost
//! would drop it as "default" and the receiver would read `+0.0`.
//!
//! [`Encoder`] owns its scratch buffers, so a sender that keeps one encodes batch after batch
//! without allocating once the buffers have grown to the batch size.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use prost::encoding::{encode_varint, encoded_len_varint};

use crate::series::{Label, Labels, Sample, METRIC_NAME_LABEL};

/// Why a batch could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The uncompressed request exceeds what one snappy block can hold (4 GiB).
    #[error("request of {len} bytes is too large for one snappy block")]
    TooLarge {
        /// Uncompressed protobuf size in bytes.
        len: usize,
    },
    /// The snappy compressor failed.
    #[error("snappy compression: {0}")]
    Compress(#[from] snap::Error),
}

/// What one call to [`Encoder::encode`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EncodeStats {
    /// Distinct series (TimeSeries messages) in the request.
    pub series: usize,
    /// Samples in the request.
    pub samples: usize,
    /// Samples left out because their labels have no `__name__` (receivers refuse them).
    pub skipped_no_name: usize,
    /// Size of the protobuf before compression.
    pub uncompressed_bytes: usize,
    /// Size of the snappy-compressed body.
    pub compressed_bytes: usize,
}

// Field keys, `(field_number << 3) | wire_type`, precomputed because every label and sample
// writes two or three of them. `keys_match_prost` checks them against prost's `encode_key`.
/// WriteRequest.timeseries (1, length-delimited).
const KEY_WRITE_REQUEST_TIMESERIES: u8 = (1 << 3) | 2;
/// TimeSeries.labels (1, length-delimited).
const KEY_TIMESERIES_LABELS: u8 = (1 << 3) | 2;
/// TimeSeries.samples (2, length-delimited).
const KEY_TIMESERIES_SAMPLES: u8 = (2 << 3) | 2;
/// Label.name (1, length-delimited).
const KEY_LABEL_NAME: u8 = (1 << 3) | 2;
/// Label.value (2, length-delimited).
const KEY_LABEL_VALUE: u8 = (2 << 3) | 2;
/// Sample.value (1, fixed 64-bit).
const KEY_SAMPLE_VALUE: u8 = (1 << 3) | 1;
/// Sample.timestamp (2, varint).
const KEY_SAMPLE_TIMESTAMP: u8 = 2 << 3; // wire type 0

/// Marks "no next group" in a hash chain.
const NO_GROUP: u32 = u32::MAX;

/// Encodes batches into snappy-compressed `WriteRequest` bodies, reusing its buffers.
pub struct Encoder {
    /// The uncompressed protobuf of the current batch.
    proto: Vec<u8>,
    snappy: snap::raw::Encoder,
    /// `Arc<Labels>` address → group: most samples of a series share one interned label set,
    /// so the common case costs one pointer hash.
    by_ptr: HashMap<usize, u32, BuildHasherDefault<FxHasher>>,
    /// Label-content hash → first group with that hash (others chained via `group_chain`):
    /// equal label sets behind distinct `Arc`s must still become one TimeSeries.
    by_content: HashMap<u64, u32, BuildHasherDefault<FxHasher>>,
    /// Per sample: its group.
    group_of: Vec<u32>,
    /// Per group: index of its first sample (whose labels stand for the group).
    group_rep: Vec<u32>,
    /// Per group: next group whose labels have the same content hash.
    group_chain: Vec<u32>,
    /// Per group: sample count, then (after grouping) the group's end offset in `order`.
    group_end: Vec<u32>,
    /// Per group: whether its labels name a metric.
    group_named: Vec<bool>,
    /// Sample indices, grouped by series, in batch order within each group.
    order: Vec<u32>,
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("proto_capacity", &self.proto.capacity())
            .finish_non_exhaustive()
    }
}

impl Encoder {
    /// Creates an encoder with empty scratch buffers.
    pub fn new() -> Self {
        Encoder {
            proto: Vec::new(),
            snappy: snap::raw::Encoder::new(),
            by_ptr: HashMap::default(),
            by_content: HashMap::default(),
            group_of: Vec::new(),
            group_rep: Vec::new(),
            group_chain: Vec::new(),
            group_end: Vec::new(),
            group_named: Vec::new(),
            order: Vec::new(),
        }
    }

    /// Encodes `samples` as one compressed `WriteRequest` into `out` (cleared first).
    ///
    /// Samples with the same label set become one TimeSeries, in order of first appearance;
    /// within a series samples keep batch order, stably sorted by timestamp if they were not
    /// already. `external_labels` are added to every series unless it has a label of the same
    /// name. Samples whose labels lack `__name__` are left out and counted in the stats.
    pub fn encode(
        &mut self,
        samples: &[Sample],
        external_labels: &Labels,
        out: &mut Vec<u8>,
    ) -> Result<EncodeStats, EncodeError> {
        let mut stats = self.group(samples);
        self.write_proto(samples, external_labels);
        stats.uncompressed_bytes = self.proto.len();

        let max = snap::raw::max_compress_len(self.proto.len());
        if max == 0 && !self.proto.is_empty() {
            return Err(EncodeError::TooLarge {
                len: self.proto.len(),
            });
        }
        out.clear();
        out.resize(max.max(1), 0);
        let n = self.snappy.compress(&self.proto, out)?;
        out.truncate(n);
        stats.compressed_bytes = n;
        Ok(stats)
    }

    /// Assigns every sample to a series group and fills `order`; returns sample/series counts.
    fn group(&mut self, samples: &[Sample]) -> EncodeStats {
        self.by_ptr.clear();
        self.by_content.clear();
        self.group_of.clear();
        self.group_rep.clear();
        self.group_chain.clear();
        self.group_end.clear();
        self.group_named.clear();
        self.order.clear();

        for (i, s) in samples.iter().enumerate() {
            let ptr = std::sync::Arc::as_ptr(&s.labels) as usize;
            let g = match self.by_ptr.get(&ptr) {
                Some(&g) => g,
                None => {
                    let g = self.group_by_content(samples, i);
                    self.by_ptr.insert(ptr, g);
                    g
                }
            };
            self.group_of.push(g);
            self.group_end[g as usize] += 1;
        }

        // Counting sort: counts become start offsets, then filling forward leaves each
        // group's offset at its end and keeps batch order within the group.
        let mut total = 0u32;
        for slot in self.group_end.iter_mut() {
            let count = *slot;
            *slot = total;
            total += count;
        }
        self.order.resize(samples.len(), 0);
        for (i, &g) in self.group_of.iter().enumerate() {
            let slot = &mut self.group_end[g as usize];
            self.order[*slot as usize] = i as u32;
            *slot += 1;
        }

        // Receivers refuse out-of-order samples of a series within a request; batches come
        // from a FIFO so this is almost always already sorted, and the check is one pass.
        let mut start = 0usize;
        for &end in &self.group_end {
            let run = &mut self.order[start..end as usize];
            if !run
                .windows(2)
                .all(|w| samples[w[0] as usize].timestamp_ms <= samples[w[1] as usize].timestamp_ms)
            {
                run.sort_by_key(|&i| samples[i as usize].timestamp_ms);
            }
            start = end as usize;
        }

        let mut stats = EncodeStats::default();
        let mut start = 0u32;
        for (g, &end) in self.group_end.iter().enumerate() {
            let n = (end - start) as usize;
            if self.group_named[g] {
                stats.series += 1;
                stats.samples += n;
            } else {
                stats.skipped_no_name += n;
            }
            start = end;
        }
        stats
    }

    /// Finds or creates the group for sample `i` by label content.
    fn group_by_content(&mut self, samples: &[Sample], i: usize) -> u32 {
        let labels: &Labels = &samples[i].labels;
        let hash = hash_labels(labels);
        let head = self.by_content.get(&hash).copied().unwrap_or(NO_GROUP);
        let mut g = head;
        while g != NO_GROUP {
            if *samples[self.group_rep[g as usize] as usize].labels == *labels {
                return g;
            }
            g = self.group_chain[g as usize];
        }
        let new = self.group_rep.len() as u32;
        self.group_rep.push(i as u32);
        self.group_chain.push(head);
        self.group_end.push(0);
        self.group_named
            .push(labels.get(METRIC_NAME_LABEL).is_some());
        self.by_content.insert(hash, new);
        new
    }

    /// Writes the `WriteRequest` protobuf of the grouped batch into `self.proto`.
    fn write_proto(&mut self, samples: &[Sample], external: &Labels) {
        self.proto.clear();
        let buf = &mut self.proto;
        // One merge per series, reused for the size and the write pass; allocated per batch
        // because it borrows the batch's labels.
        let mut series_labels: Vec<(&Label, usize)> = Vec::new();
        let mut start = 0usize;
        for (g, &end) in self.group_end.iter().enumerate() {
            let members = &self.order[start..end as usize];
            start = end as usize;
            if !self.group_named[g] {
                continue;
            }
            let labels: &Labels = &samples[self.group_rep[g] as usize].labels;
            series_labels.clear();
            series_labels.extend(merged(labels, external).map(|l| (l, label_len(l))));

            let labels_len: usize = series_labels.iter().map(|&(_, n)| field_len(n)).sum();
            let samples_len: usize = members
                .iter()
                .map(|&i| field_len(sample_len(&samples[i as usize])))
                .sum();
            let series_len = labels_len + samples_len;
            buf.reserve(field_len(series_len));

            buf.push(KEY_WRITE_REQUEST_TIMESERIES);
            put_varint(buf, series_len as u64);
            for &(l, len) in &series_labels {
                buf.push(KEY_TIMESERIES_LABELS);
                put_varint(buf, len as u64);
                write_string(buf, KEY_LABEL_NAME, &l.name);
                write_string(buf, KEY_LABEL_VALUE, &l.value);
            }
            for &i in members {
                let s = &samples[i as usize];
                buf.push(KEY_TIMESERIES_SAMPLES);
                put_varint(buf, sample_len(s) as u64);
                let bits = s.value.to_bits();
                if bits != 0 {
                    buf.push(KEY_SAMPLE_VALUE);
                    // Raw bits, so the staleness NaN (and every other NaN payload) is kept.
                    buf.extend_from_slice(&bits.to_le_bytes());
                }
                if s.timestamp_ms != 0 {
                    buf.push(KEY_SAMPLE_TIMESTAMP);
                    // int64 is a two's-complement varint, as protobuf specifies.
                    put_varint(buf, s.timestamp_ms as u64);
                }
            }
        }
    }
}

/// Encodes `samples` into `buf` with a throwaway [`Encoder`]; keep an `Encoder` to reuse
/// buffers across batches.
pub fn encode_write_request(
    samples: &[Sample],
    external_labels: &Labels,
    buf: &mut Vec<u8>,
) -> Result<EncodeStats, EncodeError> {
    Encoder::new().encode(samples, external_labels, buf)
}

/// Merges a series' labels with the external labels, both sorted by name; on a name clash the
/// series' own label wins, as in Prometheus.
fn merged<'a>(series: &'a Labels, external: &'a Labels) -> impl Iterator<Item = &'a Label> {
    let mut a = series.iter().peekable();
    let mut b = external.iter().peekable();
    std::iter::from_fn(move || match (a.peek(), b.peek()) {
        (Some(x), Some(y)) => match x.name.cmp(&y.name) {
            std::cmp::Ordering::Less => a.next(),
            std::cmp::Ordering::Greater => b.next(),
            std::cmp::Ordering::Equal => {
                b.next();
                a.next()
            }
        },
        (Some(_), None) => a.next(),
        (None, _) => b.next(),
    })
}

/// Size of a length-delimited field (one-byte key) whose payload is `len` bytes.
fn field_len(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

/// Size of a string field, zero when empty (proto3 omits default values).
fn string_len(s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        field_len(s.len())
    }
}

/// Size of a `Label` message's payload.
fn label_len(l: &Label) -> usize {
    string_len(&l.name) + string_len(&l.value)
}

/// Size of a `Sample` message's payload.
fn sample_len(s: &Sample) -> usize {
    let value = if s.value.to_bits() != 0 { 1 + 8 } else { 0 };
    let ts = if s.timestamp_ms != 0 {
        1 + encoded_len_varint(s.timestamp_ms as u64)
    } else {
        0
    };
    value + ts
}

/// Writes a string field unless it is empty.
fn write_string(buf: &mut Vec<u8>, key: u8, s: &str) {
    if !s.is_empty() {
        buf.push(key);
        put_varint(buf, s.len() as u64);
        buf.extend_from_slice(s.as_bytes());
    }
}

/// Writes a varint; lengths of labels and strings almost always fit one byte, which prost's
/// byte-at-a-time `BufMut` loop makes comparatively costly.
#[inline]
fn put_varint(buf: &mut Vec<u8>, v: u64) {
    if v < 0x80 {
        buf.push(v as u8);
    } else {
        encode_varint(v, buf);
    }
}

/// Hashes a label set's content (names and values, length-prefixed so that boundaries
/// count) with a folded 64×64→128-bit multiply per 16 bytes: grouping hashes every distinct
/// label set of a batch, and a byte-serial hash cost more than the rest of the encoding.
fn hash_labels(labels: &Labels) -> u64 {
    let mut h = (labels.len() as u64).wrapping_mul(HASH_K0);
    for l in labels.iter() {
        h = hash_bytes(h, l.name.as_bytes());
        h = hash_bytes(h, l.value.as_bytes());
    }
    h
}

const HASH_K0: u64 = 0x243f_6a88_85a3_08d3;
const HASH_K1: u64 = 0x1319_8a2e_0370_7344;
const HASH_K2: u64 = 0xa409_3822_299f_31d0;

/// Multiplies to 128 bits and folds the halves together (the mixing step of foldhash).
#[inline]
fn folded_multiply(a: u64, b: u64) -> u64 {
    let r = u128::from(a) * u128::from(b);
    (r as u64) ^ ((r >> 64) as u64)
}

/// Reads 8 bytes little-endian from the start of `b` (at least 8 long).
#[inline]
fn read8(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[..8]);
    u64::from_le_bytes(w)
}

/// Reads 4 bytes little-endian from the start of `b` (at least 4 long).
#[inline]
fn read4(b: &[u8]) -> u64 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[..4]);
    u64::from(u32::from_le_bytes(w))
}

/// Two words covering a tail of at most 16 bytes, with overlapping fixed-size reads: a
/// variable-length copy into a word would stall on store forwarding, and the length was
/// already mixed in, so the overlap loses nothing.
#[inline]
fn read_tail(b: &[u8]) -> (u64, u64) {
    let n = b.len();
    if n >= 8 {
        (read8(b), read8(&b[n - 8..]))
    } else if n >= 4 {
        (read4(b), read4(&b[n - 4..]))
    } else if n > 0 {
        (
            u64::from(b[0]) | u64::from(b[n / 2]) << 8 | u64::from(b[n - 1]) << 16,
            0,
        )
    } else {
        (0, 0)
    }
}

/// Mixes `bytes` (and their length) into `h`.
#[inline]
fn hash_bytes(mut h: u64, bytes: &[u8]) -> u64 {
    h = folded_multiply(h ^ bytes.len() as u64, HASH_K0);
    let mut chunks = bytes.chunks_exact(16);
    for c in &mut chunks {
        h = folded_multiply(h ^ read8(c) ^ HASH_K1, read8(&c[8..]) ^ HASH_K2);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let (a, b) = read_tail(rest);
        h = folded_multiply(h ^ a ^ HASH_K1, b ^ HASH_K2);
    }
    h
}

/// A fast non-cryptographic hasher (the FxHash mixing step, as in rustc) for the grouping
/// maps, whose keys are pointers and already-mixed content hashes.
///
/// Label sets come from pushprobe's own probes and configuration, not from an adversary, so
/// hash flooding is not a concern (and equal hashes are still compared in full).
#[derive(Default, Clone, Copy)]
struct FxHasher {
    hash: u64,
}

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(FX_SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 56));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use prost::Message;

    use super::*;
    use crate::proto;
    use crate::series::{stale_nan, STALE_NAN_BITS};

    fn labels(metric: &str, pairs: &[(&str, &str)]) -> Arc<Labels> {
        Arc::new(Labels::with_name(metric, pairs.iter().copied()).unwrap())
    }

    fn sample(l: &Arc<Labels>, value: f64, ts: i64) -> Sample {
        Sample {
            labels: l.clone(),
            value,
            timestamp_ms: ts,
        }
    }

    fn decode(body: &[u8]) -> proto::WriteRequest {
        let raw = snap::raw::Decoder::new().decompress_vec(body).unwrap();
        proto::WriteRequest::decode(raw.as_slice()).unwrap()
    }

    fn encode(samples: &[Sample], ext: &Labels) -> (proto::WriteRequest, EncodeStats) {
        let mut out = Vec::new();
        let stats = Encoder::new().encode(samples, ext, &mut out).unwrap();
        assert_eq!(stats.compressed_bytes, out.len());
        (decode(&out), stats)
    }

    fn names_values(ts: &proto::TimeSeries) -> Vec<(&str, &str)> {
        ts.labels
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect()
    }

    #[test]
    fn keys_match_prost() {
        use prost::encoding::{encode_key, WireType};
        let key = |tag, wt| {
            let mut b = Vec::new();
            encode_key(tag, wt, &mut b);
            assert_eq!(b.len(), 1);
            b[0]
        };
        assert_eq!(
            KEY_WRITE_REQUEST_TIMESERIES,
            key(1, WireType::LengthDelimited)
        );
        assert_eq!(KEY_TIMESERIES_LABELS, key(1, WireType::LengthDelimited));
        assert_eq!(KEY_TIMESERIES_SAMPLES, key(2, WireType::LengthDelimited));
        assert_eq!(KEY_LABEL_NAME, key(1, WireType::LengthDelimited));
        assert_eq!(KEY_LABEL_VALUE, key(2, WireType::LengthDelimited));
        assert_eq!(KEY_SAMPLE_VALUE, key(1, WireType::SixtyFourBit));
        assert_eq!(KEY_SAMPLE_TIMESTAMP, key(2, WireType::Varint));
    }

    #[test]
    fn groups_samples_by_series_in_first_appearance_order() {
        let up = labels("up", &[("job", "a")]);
        let lat = labels("latency_seconds", &[("job", "a")]);
        // Same content as `up` behind a different Arc: still the same series.
        let up_again = labels("up", &[("job", "a")]);
        let batch = [
            sample(&up, 1.0, 10),
            sample(&lat, 0.5, 10),
            sample(&up_again, 0.0, 20),
            sample(&lat, 0.7, 20),
            sample(&up, 1.0, 30),
        ];
        let (req, stats) = encode(&batch, &Labels::default());
        assert_eq!(req.timeseries.len(), 2);
        assert_eq!(
            names_values(&req.timeseries[0]),
            [("__name__", "up"), ("job", "a")]
        );
        let up_samples: Vec<(f64, i64)> = req.timeseries[0]
            .samples
            .iter()
            .map(|s| (s.value, s.timestamp))
            .collect();
        assert_eq!(up_samples, [(1.0, 10), (0.0, 20), (1.0, 30)]);
        assert_eq!(req.timeseries[1].samples.len(), 2);
        assert_eq!(
            stats,
            EncodeStats {
                series: 2,
                samples: 5,
                skipped_no_name: 0,
                uncompressed_bytes: stats.uncompressed_bytes,
                compressed_bytes: stats.compressed_bytes,
            }
        );
    }

    #[test]
    fn external_labels_are_merged_sorted_and_lose_to_series_labels() {
        let l = labels("up", &[("instance", "own"), ("zone", "z1")]);
        let ext =
            Labels::from_pairs([("instance", "ext"), ("cluster", "c1"), ("zz", "last")]).unwrap();
        let (req, _) = encode(&[sample(&l, 1.0, 1)], &ext);
        assert_eq!(
            names_values(&req.timeseries[0]),
            [
                ("__name__", "up"),
                ("cluster", "c1"),
                ("instance", "own"),
                ("zone", "z1"),
                ("zz", "last"),
            ]
        );
    }

    #[test]
    fn labels_sorting_before_name_label_stay_sorted() {
        // Upper-case names sort before `__name__`; the request must still be sorted.
        let l = labels("up", &[("Zeta", "1"), ("alpha", "2")]);
        let ext = Labels::from_pairs([("AAA", "x")]).unwrap();
        let (req, _) = encode(&[sample(&l, 1.0, 1)], &ext);
        let names: Vec<&str> = names_values(&req.timeseries[0])
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["AAA", "Zeta", "__name__", "alpha"]);
    }

    #[test]
    fn out_of_order_samples_of_a_series_are_sorted_stably() {
        let l = labels("m", &[]);
        let batch = [
            sample(&l, 1.0, 30),
            sample(&l, 2.0, 10),
            sample(&l, 3.0, 20),
            sample(&l, 4.0, 10),
        ];
        let (req, _) = encode(&batch, &Labels::default());
        let got: Vec<(f64, i64)> = req.timeseries[0]
            .samples
            .iter()
            .map(|s| (s.value, s.timestamp))
            .collect();
        assert_eq!(got, [(2.0, 10), (4.0, 10), (3.0, 20), (1.0, 30)]);
    }

    #[test]
    fn staleness_nan_and_negative_zero_keep_their_bits() {
        let l = labels("m", &[]);
        let batch = [
            sample(&l, f64::NEG_INFINITY, -5),
            sample(&l, stale_nan(), 1),
            sample(&l, -0.0, 2),
            sample(&l, f64::NAN, 3),
        ];
        let (req, _) = encode(&batch, &Labels::default());
        let bits: Vec<u64> = req.timeseries[0]
            .samples
            .iter()
            .map(|s| s.value.to_bits())
            .collect();
        assert_eq!(
            bits,
            [
                f64::NEG_INFINITY.to_bits(),
                STALE_NAN_BITS,
                (-0.0f64).to_bits(),
                f64::NAN.to_bits(),
            ]
        );
        // Negative timestamps (before 1970) are ten-byte varints and must survive too.
        assert_eq!(req.timeseries[0].samples[0].timestamp, -5);
    }

    #[test]
    fn empty_batch_is_a_valid_empty_request() {
        let (req, stats) = encode(&[], &Labels::default());
        assert!(req.timeseries.is_empty());
        assert_eq!(stats.samples, 0);
        assert_eq!(stats.uncompressed_bytes, 0);
    }

    #[test]
    fn samples_without_metric_name_are_left_out_and_counted() {
        let nameless = Arc::new(Labels::from_pairs([("job", "a")]).unwrap());
        let up = labels("up", &[]);
        let batch = [
            sample(&nameless, 1.0, 1),
            sample(&up, 1.0, 1),
            sample(&nameless, 1.0, 2),
        ];
        let (req, stats) = encode(&batch, &Labels::default());
        assert_eq!(req.timeseries.len(), 1);
        assert_eq!(stats.samples, 1);
        assert_eq!(stats.skipped_no_name, 2);
    }

    #[test]
    fn encoder_reuse_gives_identical_bytes() {
        let a = labels("a", &[("x", "1")]);
        let b = labels("b", &[("x", "2")]);
        let big: Vec<Sample> = (0..500)
            .map(|i| sample(if i % 2 == 0 { &a } else { &b }, i as f64, i))
            .collect();
        let small = [sample(&b, 1.0, 1)];
        let mut enc = Encoder::new();
        let (mut first, mut again, mut fresh) = (Vec::new(), Vec::new(), Vec::new());
        enc.encode(&small, &Labels::default(), &mut first).unwrap();
        enc.encode(&big, &Labels::default(), &mut again).unwrap();
        enc.encode(&small, &Labels::default(), &mut again).unwrap();
        Encoder::new()
            .encode(&small, &Labels::default(), &mut fresh)
            .unwrap();
        assert_eq!(first, again);
        assert_eq!(first, fresh);
    }

    mod prop {
        use proptest::prelude::*;

        use super::*;

        /// A pool of label sets, some with the same content behind distinct Arcs.
        fn pool() -> Vec<Arc<Labels>> {
            let mut v = Vec::new();
            for i in 0..6 {
                let l = labels(
                    &format!("metric_{}", i % 3),
                    &[("job", "j"), ("shard", &(i / 3).to_string())],
                );
                v.push(l.clone());
                v.push(Arc::new((*l).clone()));
            }
            v.push(labels("with_instance", &[("instance", "own")]));
            v
        }

        /// The request prost would build, computed the slow obvious way.
        fn expected(samples: &[Sample], ext: &Labels) -> proto::WriteRequest {
            let mut series: Vec<(Labels, Vec<proto::Sample>)> = Vec::new();
            for s in samples {
                let pos = match series.iter().position(|(l, _)| *l == *s.labels) {
                    Some(p) => p,
                    None => {
                        series.push(((*s.labels).clone(), Vec::new()));
                        series.len() - 1
                    }
                };
                series[pos].1.push(proto::Sample {
                    value: s.value,
                    timestamp: s.timestamp_ms,
                });
            }
            proto::WriteRequest {
                timeseries: series
                    .into_iter()
                    .map(|(l, mut samples)| {
                        samples.sort_by_key(|s| s.timestamp);
                        let mut all = l.clone();
                        for e in ext.iter() {
                            if l.get(&e.name).is_none() {
                                all = all.with(&e.name, &e.value);
                            }
                        }
                        proto::TimeSeries {
                            labels: all
                                .iter()
                                .map(|l| proto::Label {
                                    name: l.name.clone(),
                                    value: l.value.clone(),
                                })
                                .collect(),
                            samples,
                            ..Default::default()
                        }
                    })
                    .collect(),
                ..Default::default()
            }
        }

        fn value() -> impl Strategy<Value = f64> {
            prop_oneof![
                Just(0.0),
                Just(stale_nan()),
                Just(f64::INFINITY),
                any::<f64>()
                    .prop_filter("prost drops -0.0", |v| v.to_bits() != (-0.0f64).to_bits()),
            ]
        }

        proptest! {
            #[test]
            fn random_batches_round_trip_byte_for_byte_with_prost(
                picks in proptest::collection::vec((0usize..13, value(), -3i64..1_000_000_000_000), 0..200),
                with_ext in any::<bool>(),
            ) {
                let pool = pool();
                let samples: Vec<Sample> = picks
                    .iter()
                    .map(|(i, v, ts)| sample(&pool[*i], *v, *ts))
                    .collect();
                let ext = if with_ext {
                    Labels::from_pairs([("cluster", "c"), ("instance", "ext")]).unwrap()
                } else {
                    Labels::default()
                };
                let want = expected(&samples, &ext);
                let mut out = Vec::new();
                let stats = Encoder::new().encode(&samples, &ext, &mut out).unwrap();
                let raw = snap::raw::Decoder::new().decompress_vec(&out).unwrap();
                // Same bytes as prost means same message, NaN payloads included.
                prop_assert_eq!(&raw, &want.encode_to_vec());
                prop_assert_eq!(stats.series, want.timeseries.len());
                prop_assert_eq!(stats.samples, samples.len());
            }
        }
    }
}
