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
//! without allocating once the buffers have grown to the batch size; only the protobuf of a
//! large request is given back after each one (see [`KEEP_PROTO_BYTES`]). For a streaming
//! compressor (zstd), [`Encoder::encode_in_pieces`] hands the protobuf on in pieces instead,
//! so that a large request is never whole in memory.

use std::borrow::Borrow;
use std::collections::hash_map::{Entry, HashMap};

use prost::Message;

use crate::proto;
use crate::series::native::{BucketSpan, NativeHistogram};
use crate::series::{
    cmp_names, field_len, put_varint, varint_len, Field, Labels, PassThrough, Sample,
};

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
    /// Samples in the request, native histogram samples included.
    pub samples: usize,
    /// Of `samples`, those sent as native histograms. Counted by the 2.0 encoder only, whose
    /// receivers answer how many of each kind they wrote; 1.0 leaves it 0.
    pub histograms: usize,
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
/// TimeSeries.samples (2, length-delimited).
const KEY_TIMESERIES_SAMPLES: u8 = (2 << 3) | 2;
/// TimeSeries.histograms (4, length-delimited).
const KEY_TIMESERIES_HISTOGRAMS: u8 = (4 << 3) | 2;
/// Sample.value (1, fixed 64-bit).
const KEY_SAMPLE_VALUE: u8 = (1 << 3) | 1;
/// Sample.timestamp (2, varint).
const KEY_SAMPLE_TIMESTAMP: u8 = 2 << 3; // wire type 0

/// Protobuf bytes [`Encoder::encode_in_pieces`] gathers before handing them on. Twice this
/// stays below the agent's fixed mmap threshold (128 KiB, `main.rs`), so the buffer is
/// kept in the heap, not mapped and faulted in afresh for each request.
pub const PIECE_BYTES: usize = 32 * 1024;

/// Protobuf bytes a sample is expected to take before an [`Encoder`] has seen a batch: a
/// scraped series' sample takes 100–200 with its labels, so that a first full request is
/// compressed at the level of its size (on the scrape benchmark, a first request compressed
/// at the small-body level took 37 % more bytes than at the large level).
pub const FIRST_BYTES_PER_SAMPLE: usize = 100;

/// Marks "no next group" in a hash chain.
const NO_GROUP: u32 = u32::MAX;

/// Largest protobuf buffer an [`Encoder`] keeps between requests. A larger one (a request
/// of more than about 800 samples) is freed by [`Encoder::release`]: with the agent's fixed
/// mmap threshold (128 KiB, `main.rs`) it is its own mapping, so freeing it returns the
/// memory, and a 10,000-sample request's 1.6 MB is resident only while it is encoded and
/// compressed, not from one request to the next. Allocating it again costs a few hundred
/// page faults a request, next to milliseconds of encoding.
pub const KEEP_PROTO_BYTES: usize = 128 * 1024;

/// Body of `len` bytes for a compressor to write into: zeroed by the allocator, which for a
/// large body is a fresh mapping whose pages become resident only where the compressed
/// bytes land (a worst-case-sized buffer kept and zeroed would stay resident whole).
pub(crate) fn zeroed_body(len: usize) -> Vec<u8> {
    vec![0u8; len]
}

/// Encodes batches into snappy-compressed `WriteRequest` bodies, reusing its buffers.
pub struct Encoder {
    /// The uncompressed protobuf of the current batch.
    proto: Vec<u8>,
    /// Protobuf bytes a sample took in the last batch: the next one reserves its buffer at
    /// once instead of doubling it up from empty after a [`Encoder::release`].
    proto_per_sample: usize,
    snappy: snap::raw::Encoder,
    /// The batch's samples by series.
    groups: SeriesGroups,
}

/// A batch's samples grouped by series, for both encoders: reused from batch to batch.
#[derive(Debug, Default)]
pub(super) struct SeriesGroups {
    /// Label-set content hash → first group with that hash (others chained via
    /// `group_chain`). The hash is stored in the label set, so a lookup costs no hashing.
    by_hash: HashMap<u64, u32, PassThrough>,
    /// Per sample: its group.
    group_of: Vec<u32>,
    /// Per group: index of its first sample (whose labels stand for the group).
    group_rep: Vec<u32>,
    /// Per group: next group whose labels have the same content hash.
    group_chain: Vec<u32>,
    /// Per group: sample count, then (after grouping) the group's end offset in `order`.
    group_end: Vec<u32>,
    /// Sample indices, grouped by series, in batch order within each group.
    order: Vec<u32>,
}

impl SeriesGroups {
    /// Assigns every sample to a series group and fills `order` (each group in timestamp
    /// order); returns sample/series counts.
    pub(super) fn group<S: Borrow<Sample>>(&mut self, samples: &[S]) -> EncodeStats {
        self.by_hash.clear();
        self.group_of.clear();
        self.group_rep.clear();
        self.group_chain.clear();
        self.group_end.clear();
        self.order.clear();

        for i in 0..samples.len() {
            let g = self.group_for(samples, i);
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
            if !run.windows(2).all(|w| {
                samples[w[0] as usize].borrow().timestamp_ms
                    <= samples[w[1] as usize].borrow().timestamp_ms
            }) {
                run.sort_by_key(|&i| samples[i as usize].borrow().timestamp_ms);
            }
            start = end as usize;
        }

        let mut stats = EncodeStats::default();
        let mut start = 0u32;
        for (g, &end) in self.group_end.iter().enumerate() {
            let n = (end - start) as usize;
            let rep = &samples[self.group_rep[g] as usize].borrow().labels;
            if rep.has_metric_name() {
                stats.series += 1;
                stats.samples += n;
            } else {
                stats.skipped_no_name += n;
            }
            start = end;
        }
        stats
    }

    /// Finds or creates the group of sample `i`: samples of a series usually share one label
    /// set (one allocation), so a pointer comparison settles most lookups; equal label sets
    /// built apart still land in one group.
    fn group_for<S: Borrow<Sample>>(&mut self, samples: &[S], i: usize) -> u32 {
        let labels = &samples[i].borrow().labels;
        let new = self.group_rep.len() as u32;
        let head = match self.by_hash.entry(labels.content_hash()) {
            Entry::Occupied(mut e) => {
                let head = *e.get();
                let mut g = head;
                while g != NO_GROUP {
                    let rep = &samples[self.group_rep[g as usize] as usize].borrow().labels;
                    if Labels::ptr_eq(rep, labels) || rep == labels {
                        return g;
                    }
                    g = self.group_chain[g as usize];
                }
                e.insert(new);
                head
            }
            Entry::Vacant(e) => {
                e.insert(new);
                NO_GROUP
            }
        };
        self.group_rep.push(i as u32);
        self.group_chain.push(head);
        self.group_end.push(0);
        new
    }

    /// The groups of the last [`SeriesGroups::group`], in order of first appearance.
    pub(super) fn iter(&self) -> impl Iterator<Item = Group<'_>> {
        let starts = std::iter::once(0).chain(self.group_end.iter().copied());
        self.group_end
            .iter()
            .zip(starts)
            .zip(&self.group_rep)
            .map(|((&end, start), &rep)| Group {
                rep: rep as usize,
                members: &self.order[start as usize..end as usize],
            })
    }
}

/// One series of a batch (see [`SeriesGroups`]).
pub(super) struct Group<'g> {
    /// Index of the series' first sample, whose labels stand for the series.
    pub(super) rep: usize,
    /// Indices of the series' samples, in timestamp order. A series whose labels do not
    /// name a metric (`Labels::has_metric_name`) is left out by the encoders.
    pub(super) members: &'g [u32],
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
            proto_per_sample: 0,
            snappy: snap::raw::Encoder::new(),
            groups: SeriesGroups::default(),
        }
    }

    /// Encodes `samples` as one compressed `WriteRequest` into `out` (cleared first).
    ///
    /// Samples with the same label set become one TimeSeries, in order of first appearance;
    /// within a series samples keep batch order, stably sorted by timestamp if they were not
    /// already. `external_labels` are added to every series unless it has a label of the same
    /// name. Samples whose labels lack `__name__` are left out and counted in the stats.
    pub fn encode<S: Borrow<Sample>>(
        &mut self,
        samples: &[S],
        external_labels: &Labels,
        out: &mut Vec<u8>,
    ) -> Result<EncodeStats, EncodeError> {
        let (mut stats, _) = self.encode_uncompressed(samples, external_labels);

        let max = snap::raw::max_compress_len(self.proto.len());
        if max == 0 && !self.proto.is_empty() {
            self.release();
            return Err(EncodeError::TooLarge {
                len: self.proto.len(),
            });
        }
        let mut body = zeroed_body(max.max(1));
        let compressed = self.snappy.compress(&self.proto, &mut body);
        self.release();
        let n = compressed?;
        body.truncate(n);
        *out = body;
        stats.compressed_bytes = n;
        Ok(stats)
    }

    /// Frees the protobuf buffer when it grew past [`KEEP_PROTO_BYTES`]; a caller of
    /// [`Encoder::encode_uncompressed`] calls it once it has compressed the bytes.
    pub fn release(&mut self) {
        if self.proto.capacity() > KEEP_PROTO_BYTES {
            self.proto = Vec::new();
        }
    }

    /// Encodes `samples` as one uncompressed `WriteRequest`, as [`Encoder::encode`] does
    /// before compressing, for a caller that compresses it otherwise; the bytes are valid until
    /// the next call.
    pub fn encode_uncompressed<S: Borrow<Sample>>(
        &mut self,
        samples: &[S],
        external_labels: &Labels,
    ) -> (EncodeStats, &[u8]) {
        let mut stats = self.groups.group(samples);
        self.proto.clear();
        // An estimate: `write_proto` still reserves what each series needs.
        self.proto
            .reserve(samples.len().saturating_mul(self.proto_per_sample));
        let whole: Result<usize, std::convert::Infallible> =
            self.write_proto(samples, external_labels, usize::MAX, &mut |_| Ok(()));
        let Ok(_) = whole;
        stats.uncompressed_bytes = self.proto.len();
        self.learn_size(samples.len(), self.proto.len());
        (stats, &self.proto)
    }

    /// Encodes `samples` as one uncompressed `WriteRequest`, as [`Encoder::encode_uncompressed`]
    /// does, but hands it to `sink` in pieces of about [`PIECE_BYTES`] as they are written,
    /// for a streaming compressor: a large request is never whole in memory, and the one
    /// small buffer the pieces pass through is kept from request to request.
    pub fn encode_in_pieces<S: Borrow<Sample>, E>(
        &mut self,
        samples: &[S],
        external_labels: &Labels,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<EncodeStats, E> {
        let mut stats = self.groups.group(samples);
        self.proto.clear();
        self.proto.reserve(2 * PIECE_BYTES);
        let mut len = self.write_proto(samples, external_labels, PIECE_BYTES, sink)?;
        if !self.proto.is_empty() {
            sink(&self.proto)?;
            len += self.proto.len();
            self.proto.clear();
        }
        stats.uncompressed_bytes = len;
        self.learn_size(samples.len(), len);
        Ok(stats)
    }

    /// The protobuf size to expect for a batch of `samples` samples, from the last batch's
    /// (before the first, [`FIRST_BYTES_PER_SAMPLE`] a sample).
    pub fn expected_len(&self, samples: usize) -> usize {
        let per_sample = match self.proto_per_sample {
            0 => FIRST_BYTES_PER_SAMPLE,
            n => n,
        };
        samples.saturating_mul(per_sample)
    }

    /// Remembers the protobuf bytes a sample took, for [`Encoder::expected_len`].
    fn learn_size(&mut self, samples: usize, len: usize) {
        if samples > 0 {
            self.proto_per_sample = len.div_ceil(samples);
        }
    }

    /// Writes the `WriteRequest` protobuf of the grouped batch into `self.proto`, handing
    /// the bytes written so far to `sink` and starting afresh whenever they reach `piece`
    /// at the start of a series; returns the bytes handed over.
    fn write_proto<S: Borrow<Sample>, E>(
        &mut self,
        samples: &[S],
        external: &Labels,
        piece: usize,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<usize, E> {
        self.proto.clear();
        let mut handed = 0usize;
        let buf = &mut self.proto;
        // Allocated per batch because they borrow the batch's label sets.
        let mut splice: Vec<Splice<'_>> = Vec::new();
        let mut splice_bytes: Vec<u8> = Vec::new();
        // The base `splice` was made for; series of one target come in runs.
        let mut splice_for: Option<usize> = None;
        for group in self.groups.iter() {
            let labels: &Labels = &samples[group.rep].borrow().labels;
            if !labels.has_metric_name() {
                continue;
            }
            if buf.len() >= piece {
                sink(buf)?;
                handed += buf.len();
                buf.clear();
            }
            let members = group.members;
            let base = labels.base();
            let key = base.map_or(0, Labels::addr);
            if splice_for != Some(key) {
                splice_list(base, external, &mut splice);
                splice_bytes.clear();
                splice_bytes.extend(splice.iter().flat_map(|(f, _)| f.bytes));
                splice_for = Some(key);
            }
            let samples_len: usize = members
                .iter()
                .map(|&i| {
                    let s = samples[i as usize].borrow();
                    match s.histogram() {
                        None => field_len(sample_len(s)),
                        Some(h) => field_len(histogram_message(h, s.timestamp_ms).encoded_len()),
                    }
                })
                .sum();
            // As if every external label were written: a series that has a label of the
            // same name, which keeps its own, is rare, and rewritten below.
            let series_len = labels.own_wire_bytes().len() + splice_bytes.len() + samples_len;
            buf.reserve(field_len(series_len));
            let start = buf.len();
            buf.push(KEY_WRITE_REQUEST_TIMESERIES);
            put_varint(buf, series_len as u64);
            let left_out = write_merged(buf, labels, &splice, &splice_bytes);
            if left_out > 0 {
                buf.truncate(start);
                buf.push(KEY_WRITE_REQUEST_TIMESERIES);
                put_varint(buf, (series_len - left_out) as u64);
                write_merged(buf, labels, &splice, &splice_bytes);
            }
            let mut histograms = false;
            for &i in members {
                let s = samples[i as usize].borrow();
                if s.histogram().is_some() {
                    histograms = true;
                } else {
                    write_sample(buf, s);
                }
            }
            // `TimeSeries.histograms` (field 4) after the samples (field 2), in tag order.
            if histograms {
                for &i in members {
                    let s = samples[i as usize].borrow();
                    if let Some(h) = s.histogram() {
                        write_histogram(buf, h, s.timestamp_ms);
                    }
                }
            }
        }
        Ok(handed)
    }
}

/// Writes one `TimeSeries.samples` field.
#[inline]
fn write_sample(buf: &mut Vec<u8>, s: &Sample) {
    let bits = s.value.to_bits();
    let ts = s.timestamp_ms;
    // The usual sample: a value and a timestamp after 1970 whose varint fits one word
    // (before the year 4254). Assembled in one record and appended with one copy: the
    // release build optimises for size, which leaves each append a call of its own. Four
    // appends a sample cost more than reading the record back (a store-forwarding stall):
    // 150 instructions a sample instead of 256, and less user CPU on the relay bench.
    if bits != 0 && ts > 0 && ts < 1 << 56 {
        let mut v = ts as u64;
        let mut word = 0u64;
        let mut n = 0usize;
        while v >= 0x80 {
            word |= ((v & 0x7f) | 0x80) << (8 * n);
            v >>= 7;
            n += 1;
        }
        word |= v << (8 * n);
        n += 1;
        // Payload: value key + 8 bytes + timestamp key + varint, at most 18 bytes.
        let len = (1 + 8 + 1 + n) as u8;
        let mut record = [0u8; 20];
        record[..3].copy_from_slice(&[KEY_TIMESERIES_SAMPLES, len, KEY_SAMPLE_VALUE]);
        record[3..11].copy_from_slice(&bits.to_le_bytes());
        record[11] = KEY_SAMPLE_TIMESTAMP;
        record[12..].copy_from_slice(&word.to_le_bytes());
        buf.extend_from_slice(&record[..12 + n]);
        return;
    }
    buf.push(KEY_TIMESERIES_SAMPLES);
    put_varint(buf, sample_len(s) as u64);
    if bits != 0 {
        buf.push(KEY_SAMPLE_VALUE);
        // Raw bits, so the staleness NaN (and every other NaN payload) is kept.
        buf.extend_from_slice(&bits.to_le_bytes());
    }
    if ts != 0 {
        buf.push(KEY_SAMPLE_TIMESTAMP);
        // int64 is a two's-complement varint, as protobuf specifies.
        put_varint(buf, ts as u64);
    }
}

/// The remote-write `Histogram` message of a native histogram sample. Built with prost:
/// histogram samples are few beside float ones, and the message has many optional fields.
fn histogram_message(h: &NativeHistogram, timestamp_ms: i64) -> proto::Histogram {
    let spans = |spans: &[BucketSpan]| -> Vec<proto::BucketSpan> {
        spans
            .iter()
            .map(|s| proto::BucketSpan {
                offset: s.offset,
                length: s.length,
            })
            .collect()
    };
    proto::Histogram {
        count: Some(proto::histogram::Count::CountInt(h.count)),
        sum: h.sum,
        schema: h.schema,
        zero_threshold: h.zero_threshold,
        zero_count: Some(proto::histogram::ZeroCount::ZeroCountInt(h.zero_count)),
        negative_spans: spans(&h.negative_spans),
        negative_deltas: h.negative_deltas.clone(),
        negative_counts: Vec::new(),
        positive_spans: spans(&h.positive_spans),
        positive_deltas: h.positive_deltas.clone(),
        positive_counts: Vec::new(),
        reset_hint: h.reset_hint.to_proto(),
        timestamp: timestamp_ms,
    }
}

/// Writes one `TimeSeries.histograms` field.
fn write_histogram(buf: &mut Vec<u8>, h: &NativeHistogram, timestamp_ms: i64) {
    let msg = histogram_message(h, timestamp_ms);
    buf.push(KEY_TIMESERIES_HISTOGRAMS);
    put_varint(buf, msg.encoded_len() as u64);
    msg.encode_raw(buf);
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

/// A label to splice into series' own labels: its field (name, value, encoded bytes), and
/// whether it is an external label (which a series' own label of the same name overrides).
pub(super) type Splice<'a> = (Field<'a>, bool);

/// The labels series with base `base` get spliced into their own: the base's (a scrape
/// target's `job` and `instance`, see `Labels::with_shared_base`) and the external labels the
/// base does not have (the series' wins a clash, as in Prometheus), merged by name. Made once
/// per run of series sharing a base, so each series only walks its own labels.
pub(super) fn splice_list<'a>(
    base: Option<&'a Labels>,
    external: &'a Labels,
    out: &mut Vec<Splice<'a>>,
) {
    out.clear();
    out.extend(
        base.into_iter()
            .flat_map(|b| b.own_fields())
            .map(|f| (f, false)),
    );
    let shared = out.len();
    for e in external.fields() {
        if !out[..shared].iter().any(|(f, _)| f.name == e.name) {
            out.push((e, true));
        }
    }
    // A few labels, once per run of series; names are unique, so unstable is stable here.
    out.sort_unstable_by(|a, b| cmp_names(a.0.name, b.0.name));
}

/// Writes a series' own labels with those of `splice` (from [`splice_list`]; `spliced` is
/// their bytes laid end to end) merged in by name, leaving out an external label the series
/// has; returns the bytes left out so. All are encoded label fields already, so this copies
/// runs of bytes: splice labels that land together in one copy. The walk of the series'
/// own labels stops at the last splice label, so a typical series is decoded only a few
/// labels deep.
fn write_merged(
    buf: &mut Vec<u8>,
    series: &Labels,
    splice: &[Splice<'_>],
    spliced: &[u8],
) -> usize {
    let own = series.own_wire_bytes();
    let mut fields = series.own_fields();
    let mut cur = fields.next();
    // Own bytes copied so far, and own bytes before `cur`.
    let (mut copied, mut walked) = (0usize, 0usize);
    // Splice bytes waiting to be copied at `copied`.
    let mut pending = 0..0;
    let mut left_out = 0usize;
    let mut from = 0usize;
    for &(label, external) in splice {
        let to = from + label.bytes.len();
        while let Some(f) = cur.filter(|f| cmp_names(f.name, label.name).is_lt()) {
            walked += f.bytes.len();
            cur = fields.next();
        }
        if external && cur.is_some_and(|f| f.name == label.name) {
            left_out += label.bytes.len();
        } else if walked == copied && pending.end == from {
            pending.end = to;
        } else {
            if !pending.is_empty() {
                buf.extend_from_slice(spliced.get(pending).unwrap_or_default());
            }
            buf.extend_from_slice(own.get(copied..walked).unwrap_or_default());
            copied = walked;
            pending = from..to;
        }
        from = to;
    }
    if !pending.is_empty() {
        buf.extend_from_slice(spliced.get(pending).unwrap_or_default());
    }
    buf.extend_from_slice(own.get(copied..).unwrap_or_default());
    left_out
}

/// Size of a `Sample` message's payload.
pub(super) fn sample_len(s: &Sample) -> usize {
    let value = if s.value.to_bits() != 0 { 1 + 8 } else { 0 };
    let ts = if s.timestamp_ms != 0 {
        1 + varint_len(s.timestamp_ms as u64)
    } else {
        0
    };
    value + ts
}

#[cfg(test)]
pub(super) mod tests {

    use super::*;
    use crate::series::KEY_SERIES_LABEL;
    use crate::series::{stale_nan, STALE_NAN_BITS};

    fn labels(metric: &str, pairs: &[(&str, &str)]) -> Labels {
        Labels::with_name(metric, pairs.iter().copied()).unwrap()
    }

    fn sample(l: &Labels, value: f64, ts: i64) -> Sample {
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
    fn a_batch_in_pieces_is_the_batch_at_once_through_a_small_kept_buffer() {
        let ext = Labels::from_pairs([("cluster", "c")]).unwrap();
        let samples: Vec<Sample> = (0..5_000)
            .map(|i| {
                let l = labels("m", &[("series", &i.to_string()), ("pad", &"p".repeat(40))]);
                sample(&l, f64::from(i), 1_765_000_000_000 + i64::from(i))
            })
            .collect();
        let mut encoder = Encoder::new();
        assert_eq!(encoder.expected_len(10), 10 * FIRST_BYTES_PER_SAMPLE);
        let (at_once_stats, at_once) = encoder.encode_uncompressed(&samples, &ext);
        let at_once = at_once.to_vec();
        assert!(at_once.len() > 4 * PIECE_BYTES);
        encoder.release();

        let mut pieces: Vec<Vec<u8>> = Vec::new();
        let stats = encoder
            .encode_in_pieces(&samples, &ext, &mut |p| {
                pieces.push(p.to_vec());
                Ok::<(), ()>(())
            })
            .unwrap();
        assert_eq!(pieces.concat(), at_once);
        assert_eq!(stats, at_once_stats);
        // Each piece ends at a series' end, just past the piece size.
        assert!(pieces.len() > 4);
        assert!(pieces.iter().all(|p| p.len() < PIECE_BYTES + 256));
        assert!(encoder.proto.capacity() <= KEEP_PROTO_BYTES);
        assert_eq!(
            encoder.expected_len(samples.len()) / samples.len(),
            at_once.len().div_ceil(samples.len())
        );

        // A sink's error stops the encoding and is handed back.
        let mut calls = 0;
        let e = encoder.encode_in_pieces(&samples, &ext, &mut |_| {
            calls += 1;
            if calls == 2 {
                Err("full")
            } else {
                Ok(())
            }
        });
        assert_eq!(e, Err("full"));
        assert_eq!(calls, 2);
    }

    #[test]
    fn spliced_labels_merge_by_name_and_the_series_own_label_wins() {
        let pairs = |p: &[(&str, &str)]| Labels::from_pairs(p.iter().copied()).unwrap();
        let series = pairs(&[("b", "1"), ("d", "2")]);
        let base = pairs(&[("a", "x")]);
        let external = pairs(&[("c", "y"), ("cc", "z"), ("d", "ext"), ("e", "w")]);
        let mut splice = Vec::new();
        splice_list(Some(&base), &external, &mut splice);
        let spliced: Vec<u8> = splice.iter().flat_map(|(f, _)| f.bytes.to_vec()).collect();
        let mut out = vec![7u8];
        let left_out = write_merged(&mut out, &series, &splice, &spliced);
        // Appended after what the buffer held; the external `d` left out for the series' own.
        let want = pairs(&[
            ("a", "x"),
            ("b", "1"),
            ("c", "y"),
            ("cc", "z"),
            ("d", "2"),
            ("e", "w"),
        ]);
        assert_eq!(out[0], 7);
        assert_eq!(&out[1..], want.own_wire_bytes());
        let d = external
            .own_fields()
            .find(|f| f.name == b"d")
            .unwrap()
            .bytes
            .len();
        assert_eq!(left_out, d);

        // Splice labels at both ends and none in between; and a series with no labels.
        let series = pairs(&[("m", "1"), ("n", "2")]);
        let external = pairs(&[("a", "1"), ("z", "2")]);
        splice_list(None, &external, &mut splice);
        let spliced: Vec<u8> = splice.iter().flat_map(|(f, _)| f.bytes.to_vec()).collect();
        let mut out = Vec::new();
        assert_eq!(write_merged(&mut out, &series, &splice, &spliced), 0);
        let want = pairs(&[("a", "1"), ("m", "1"), ("n", "2"), ("z", "2")]);
        assert_eq!(out, want.own_wire_bytes());
        out.clear();
        assert_eq!(
            write_merged(&mut out, &Labels::default(), &splice, &spliced),
            0
        );
        assert_eq!(out, external.own_wire_bytes());
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
        assert_eq!(KEY_SERIES_LABEL, key(1, WireType::LengthDelimited));
        assert_eq!(KEY_TIMESERIES_SAMPLES, key(2, WireType::LengthDelimited));
        assert_eq!(KEY_SAMPLE_VALUE, key(1, WireType::SixtyFourBit));
        assert_eq!(KEY_SAMPLE_TIMESTAMP, key(2, WireType::Varint));
    }

    #[test]
    fn groups_samples_by_series_in_first_appearance_order() {
        let up = labels("up", &[("job", "a")]);
        let lat = labels("latency_seconds", &[("job", "a")]);
        // Same content as `up`, built apart: still the same series.
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
                histograms: 0,
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
    fn native_histograms_go_in_the_histograms_field_as_prometheus_sends_them() {
        use crate::series::native::{NativeOptions, NativeState};
        use std::sync::Arc;
        let mut state = NativeState::new(NativeOptions::from_factor(1.1));
        for v in [0.0, 1.0, 1.0, 1.1, -2.0] {
            state.observe(v);
        }
        let h = Arc::new(state.snapshot());
        let l = labels("lat_seconds", &[("probe", "p")]);
        let batch = vec![
            sample(&labels("up", &[]), 1.0, 1000),
            Sample::native(&l, h.clone(), 1000),
            Sample::native(&l, h.clone(), 2000),
        ];
        let (req, stats) = encode(&batch, &Labels::default());
        assert_eq!((stats.series, stats.samples), (2, 3));
        let ts = &req.timeseries[1];
        assert_eq!(
            names_values(ts),
            [("__name__", "lat_seconds"), ("probe", "p")]
        );
        assert!(
            ts.samples.is_empty(),
            "a histogram series has no float samples"
        );
        assert_eq!(ts.histograms.len(), 2);
        let got = &ts.histograms[0];
        assert_eq!(got.count, Some(proto::histogram::Count::CountInt(5)));
        assert_eq!(
            got.zero_count,
            Some(proto::histogram::ZeroCount::ZeroCountInt(1))
        );
        assert_eq!(got.schema, 3);
        assert_eq!(got.sum, 1.0 + 1.0 + 1.1 - 2.0);
        assert_eq!(got.zero_threshold, h.zero_threshold);
        assert_eq!(
            got.positive_spans,
            vec![proto::BucketSpan {
                offset: 0,
                length: 3
            }]
        );
        assert_eq!(got.positive_deltas, vec![2, -2, 1]);
        assert_eq!(
            got.negative_spans,
            vec![proto::BucketSpan {
                offset: 8,
                length: 1
            }]
        );
        assert_eq!(got.negative_deltas, vec![1]);
        assert_eq!(got.timestamp, 1000);
        assert_eq!(ts.histograms[1].timestamp, 2000);
        assert_eq!(req.timeseries[0].samples.len(), 1);
        assert!(req.timeseries[0].histograms.is_empty());
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
        let nameless = Labels::from_pairs([("job", "a")]).unwrap();
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

    pub(in crate::remote_write) mod prop {
        use proptest::prelude::*;

        use super::*;

        /// A pool of label sets, some with the same content built apart.
        fn pool() -> Vec<Labels> {
            let mut v = Vec::new();
            for i in 0..6 {
                let l = labels(
                    &format!("metric_{}", i % 3),
                    &[("job", "j"), ("shard", &(i / 3).to_string())],
                );
                // The same set shared, and an equal one built apart.
                let apart = Labels::from_pairs(l.iter().map(|x| (x.name, x.value))).unwrap();
                v.push(l);
                v.push(apart);
            }
            v.push(labels("with_instance", &[("instance", "own")]));
            // Sets keeping a scrape target's labels apart, next to the same sets kept whole:
            // one batch may hold both (a replay from disk and live samples).
            let target = Labels::from_pairs([("instance", "t:1"), ("job", "j2")]).unwrap();
            for name in ["a_metric", "zz_metric"] {
                let flat = labels(
                    name,
                    &[
                        ("cpu", "0"),
                        ("instance", "t:1"),
                        ("job", "j2"),
                        ("mode", "idle"),
                    ],
                );
                v.push(flat.with_shared_base(&target));
                v.push(flat);
            }
            let own_cluster = labels(
                "m",
                &[("cluster", "own"), ("instance", "t:1"), ("job", "j2")],
            );
            v.push(own_cluster.with_shared_base(&target));
            assert!(v[13..].iter().step_by(2).all(|l| l.base().is_some()));
            // Sets sharing their metric name with the target labels, as the series of one
            // name of a target do; an upper-case label name sorts before `__name__`.
            for (name, own) in [("a_metric", ("cpu", "1")), ("a_metric", ("Zone", "z"))] {
                let name_base = target.with("__name__", name);
                let flat = labels(name, &[own, ("instance", "t:1"), ("job", "j2")]);
                let split = flat.with_shared_base(&name_base);
                assert!(split.base().is_some_and(|b| Labels::ptr_eq(b, &name_base)));
                v.push(split);
                v.push(flat);
            }
            v
        }

        /// The request prost would build, computed the slow obvious way.
        fn expected(samples: &[Sample], ext: &Labels) -> proto::WriteRequest {
            let mut series: Vec<(Labels, Vec<proto::Sample>)> = Vec::new();
            for s in samples {
                let pos = match series.iter().position(|(l, _)| *l == s.labels) {
                    Some(p) => p,
                    None => {
                        series.push((s.labels.clone(), Vec::new()));
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
                            if l.get(e.name).is_none() {
                                all = all.with(e.name, e.value);
                            }
                        }
                        proto::TimeSeries {
                            labels: all
                                .iter()
                                .map(|l| proto::Label {
                                    name: l.name.to_string(),
                                    value: l.value.to_string(),
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

        /// Sample values for property tests: zero, the staleness NaN, infinity, and any
        /// other bits but `-0.0`'s, which prost drops.
        pub(in crate::remote_write) fn value() -> impl Strategy<Value = f64> {
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
                picks in proptest::collection::vec((0usize..64, value(), -3i64..1_000_000_000_000), 0..200),
                with_ext in any::<bool>(),
            ) {
                let pool = pool();
                let samples: Vec<Sample> = picks
                    .iter()
                    .map(|(i, v, ts)| sample(&pool[*i % pool.len()], *v, *ts))
                    .collect();
                let ext = if with_ext {
                    // Clashing with own and base labels, and falling between them.
                    Labels::from_pairs([
                        ("Alpha", "a"),
                        ("cluster", "c"),
                        ("dc", "d"),
                        ("instance", "ext"),
                        ("k", "between"),
                        ("zone", "z"),
                    ])
                    .unwrap()
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
