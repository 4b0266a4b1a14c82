//! Turns a batch of samples into a remote-write 2.0 request body: an
//! `io.prometheus.write.v2.Request` compressed with the snappy block format (pure).
//!
//! Every string of the request (label names and values, help texts, units) is written once,
//! in the symbols table, which starts with `""`; a series refers to its labels by index, in
//! pairs sorted by name, and carries its family's metadata (type, help, unit) and, for
//! counters and histograms, the time they started counting. Samples carry only labels, a
//! value and a timestamp, so metadata and start times come from a [`SeriesMeta`] lookup that
//! the sources fill (see [`super::catalog`]).
//!
//! A series carries float samples or native histogram samples, never both (the spec's rule):
//! - a native histogram sample ([`Sample::histogram`]) goes in `TimeSeries.histograms`, never
//!   as its marker NaN in `samples`; its series' metadata type is `HISTOGRAM`, or
//!   `GAUGEHISTOGRAM` for a family typed so or a histogram whose reset hint says gauge;
//! - a staleness marker of a series that has histograms in the same request goes as the
//!   histogram form of the marker (a histogram whose sum is the staleness NaN, which the
//!   native histograms spec makes equivalent to the float one), so the series ends in one
//!   `TimeSeries` and the receiver need not cut a float chunk just to end it; a marker alone
//!   in a later request goes as a float, which receivers read as the same marker;
//! - any other float sample of such a series (its kind changed) goes in a second
//!   `TimeSeries` of the same labels, the one whose first sample is older first.
//!
//! The protobuf is written by hand, as 1.0's is ([`super::encode`]): building prost messages
//! took a vector of label references and one of samples per series, a `String` per symbol,
//! and a second pass to size every message, which made a 2.0 request cost about three times
//! a 1.0 one. The bytes are the ones prost would write for the same message (the tests check
//! this against prost), with 1.0's one deliberate exception: a sample value of `-0.0` is
//! written, where prost would drop it as "default" and the receiver would read `+0.0`.
//! Native histograms, which are few, are still written with prost.

use std::borrow::{Borrow, Cow};
use std::sync::Arc;

use hashbrown::HashTable;
use prost::Message;

use super::encode::{splice_list, zeroed_body, EncodeError, EncodeStats, SeriesGroups, Splice};
use crate::proto_v2::{self, metadata::MetricType};
use crate::series::native::{BucketSpan, NativeHistogram, ResetHint};
use crate::series::{
    cmp_names, field_len, is_stale_nan, put_varint, seeded_hash, varint_len, Field, Labels, Sample,
    STALE_NAN_BITS,
};

/// `Request.symbols` (4, length-delimited).
const KEY_REQUEST_SYMBOLS: u8 = (4 << 3) | 2;
/// `Request.timeseries` (5, length-delimited).
const KEY_REQUEST_TIMESERIES: u8 = (5 << 3) | 2;
/// `TimeSeries.labels_refs` (1, packed varints).
const KEY_SERIES_LABELS_REFS: u8 = (1 << 3) | 2;
/// `TimeSeries.samples` (2, length-delimited).
const KEY_SERIES_SAMPLES: u8 = (2 << 3) | 2;
/// `TimeSeries.histograms` (3), written with prost.
const TAG_SERIES_HISTOGRAMS: u32 = 3;
/// `TimeSeries.metadata` (5, length-delimited).
const KEY_SERIES_METADATA: u8 = (5 << 3) | 2;
/// `Sample.value` (1, fixed 64-bit).
const KEY_SAMPLE_VALUE: u8 = (1 << 3) | 1;
/// `Sample.timestamp` (2, varint).
const KEY_SAMPLE_TIMESTAMP: u8 = 2 << 3;
/// `Sample.start_timestamp` (3, varint).
const KEY_SAMPLE_START: u8 = 3 << 3;
/// `Metadata.type` (1, varint).
const KEY_METADATA_TYPE: u8 = 1 << 3;
/// `Metadata.help_ref` (3, varint).
const KEY_METADATA_HELP: u8 = 3 << 3;
/// `Metadata.unit_ref` (4, varint).
const KEY_METADATA_UNIT: u8 = 4 << 3;

/// Type, help and unit of a metric family, as a 2.0 series carries them.
#[derive(Debug, Clone, PartialEq)]
pub struct FamilyInfo {
    /// The family's type.
    pub kind: MetricType,
    /// Help text ("" if none).
    pub help: Arc<str>,
    /// Unit ("" if none).
    pub unit: Arc<str>,
}

/// Where the 2.0 encoder finds what samples do not carry.
pub trait SeriesMeta: Send + Sync {
    /// Metadata of the family a series named `metric` belongs to.
    fn family(&self, metric: &str) -> Option<FamilyInfo>;
    /// When the counter or histogram series `labels` started counting, in milliseconds.
    fn start_ms(&self, labels: &Labels, family: Option<&FamilyInfo>) -> Option<i64>;
}

/// A lookup that knows nothing: series go without metadata or start time.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoMeta;

impl SeriesMeta for NoMeta {
    fn family(&self, _: &str) -> Option<FamilyInfo> {
        None
    }
    fn start_ms(&self, _: &Labels, _: Option<&FamilyInfo>) -> Option<i64> {
        None
    }
}

/// One `TimeSeries` to write: a label set and the points of one kind.
struct Entry<'a> {
    labels: &'a Labels,
    kind: Kind<'a>,
}

/// The points of one `TimeSeries`, in timestamp order.
enum Kind<'a> {
    /// Float samples: most series' run of the batch's samples as it is.
    Floats(Cow<'a, [&'a Sample]>),
    /// Native histograms, and staleness markers sent in histogram form.
    Histograms(Vec<&'a Sample>),
}

impl Kind<'_> {
    /// Timestamp of the oldest point (`i64::MAX` when there is none), to order the two
    /// entries of a series that changed kind.
    fn first_ms(&self) -> i64 {
        let first = match self {
            Kind::Floats(p) => p.first(),
            Kind::Histograms(p) => p.first(),
        };
        first.map_or(i64::MAX, |s| s.timestamp_ms)
    }

    fn is_empty(&self) -> bool {
        match self {
            Kind::Floats(p) => p.is_empty(),
            Kind::Histograms(p) => p.is_empty(),
        }
    }
}

/// Splits the points of a label set that has native histograms (`points`, in timestamp
/// order) into the `TimeSeries` entries 2.0 allows (see the module documentation):
/// histograms alone, or histograms with the staleness markers and, when the series changed
/// kind, the other floats apart.
fn split_kinds<'a>(labels: &'a Labels, points: &'a [&'a Sample], out: &mut Vec<Entry<'a>>) {
    let (histograms, floats): (Vec<&Sample>, Vec<&Sample>) =
        points.iter().partition(|s| s.histogram().is_some());
    let (stale, floats): (Vec<&Sample>, Vec<&Sample>) =
        floats.into_iter().partition(|s| is_stale_nan(s.value));
    let mut histograms = histograms;
    histograms.extend(stale);
    // Stable: a marker stamped like a histogram stays after it.
    histograms.sort_by_key(|s| s.timestamp_ms);
    let mut entries = [
        Entry {
            labels,
            kind: Kind::Histograms(histograms),
        },
        Entry {
            labels,
            kind: Kind::Floats(Cow::Owned(floats)),
        },
    ];
    if entries[1].kind.first_ms() < entries[0].kind.first_ms() {
        entries.swap(0, 1);
    }
    out.extend(entries.into_iter().filter(|e| !e.kind.is_empty()));
}

/// The 2.0 `Histogram` of a native histogram sample, or of a staleness marker (a histogram
/// whose sum is the staleness NaN). Receivers ignore a marker's other fields; it takes the
/// schema and zero threshold of `like`, the series' previous histogram, so that a receiver
/// storing it next to that histogram has no layout change to deal with.
fn histogram_v2(
    sample: &Sample,
    like: Option<&NativeHistogram>,
    start_timestamp: i64,
) -> proto_v2::Histogram {
    use proto_v2::histogram::{Count, ZeroCount};
    let spans = |spans: &[BucketSpan]| -> Vec<proto_v2::BucketSpan> {
        spans
            .iter()
            .map(|s| proto_v2::BucketSpan {
                offset: s.offset,
                length: s.length,
            })
            .collect()
    };
    match sample.histogram() {
        Some(h) => proto_v2::Histogram {
            count: Some(Count::CountInt(h.count)),
            sum: h.sum,
            schema: h.schema,
            zero_threshold: h.zero_threshold,
            zero_count: Some(ZeroCount::ZeroCountInt(h.zero_count)),
            negative_spans: spans(&h.negative_spans),
            negative_deltas: h.negative_deltas.clone(),
            positive_spans: spans(&h.positive_spans),
            positive_deltas: h.positive_deltas.clone(),
            reset_hint: h.reset_hint.to_proto(),
            timestamp: sample.timestamp_ms,
            start_timestamp,
            ..Default::default()
        },
        None => proto_v2::Histogram {
            count: Some(Count::CountInt(0)),
            sum: f64::from_bits(STALE_NAN_BITS),
            schema: like.map_or(0, |h| h.schema),
            zero_threshold: like.map_or(0.0, |h| h.zero_threshold),
            zero_count: Some(ZeroCount::ZeroCountInt(0)),
            timestamp: sample.timestamp_ms,
            ..Default::default()
        },
    }
}

/// The metadata type of a histogram series: a gauge histogram when its family says so or
/// its histograms' reset hint does, else a (counter) histogram.
fn histogram_type(family: Option<&FamilyInfo>, points: &[&Sample]) -> MetricType {
    let gauge_hint = points
        .iter()
        .filter_map(|s| s.histogram())
        .any(|h| h.reset_hint == ResetHint::Gauge);
    if gauge_hint || family.is_some_and(|f| f.kind == MetricType::Gaugehistogram) {
        MetricType::Gaugehistogram
    } else {
        MetricType::Histogram
    }
}

/// Encodes batches into snappy-compressed 2.0 request bodies, reusing its compressor.
pub struct EncoderV2 {
    snappy: snap::raw::Encoder,
    /// Protobuf bytes a sample took in the last batch, to size the next one's buffer at once.
    bytes_per_sample: usize,
}

impl std::fmt::Debug for EncoderV2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncoderV2").finish_non_exhaustive()
    }
}

/// The symbols table being built: strings in first-use order, `""` first, found by a seeded
/// hash of their bytes (label bytes are UTF-8 already; nothing here needs them as `str`).
struct Symbols<'a> {
    list: Vec<&'a [u8]>,
    /// `(hash, index into list)`.
    index: HashTable<(u64, u32)>,
    /// Bytes the `Request.symbols` fields take.
    wire_len: usize,
}

impl<'a> Symbols<'a> {
    fn new() -> Self {
        let mut symbols = Symbols {
            list: Vec::new(),
            index: HashTable::new(),
            wire_len: 0,
        };
        symbols.get(b"");
        symbols
    }

    fn get(&mut self, s: &'a [u8]) -> u32 {
        let hash = seeded_hash(s);
        let list = &self.list;
        if let Some(&(_, i)) = self.index.find(hash, |&(h, i)| {
            h == hash && list.get(i as usize) == Some(&s)
        }) {
            return i;
        }
        let i = self.list.len() as u32;
        self.list.push(s);
        self.wire_len += field_len(s.len());
        self.index.insert_unique(hash, (hash, i), |&(h, _)| h);
        i
    }

    /// Writes the `Request.symbols` fields.
    fn write(&self, buf: &mut Vec<u8>) {
        for s in &self.list {
            buf.push(KEY_REQUEST_SYMBOLS);
            put_varint(buf, s.len() as u64);
            buf.extend_from_slice(s);
        }
    }
}

/// A label merged into series' own labels: its name, its name's and value's symbol
/// references, and whether it is an external label (which a series' own label overrides).
type SpliceRefs<'a> = (&'a [u8], u32, u32, bool);

/// The labels series with base `base` get merged into their own (1.0's splice list: the
/// base's and the external labels the base does not have, by name), as symbol references.
fn splice_refs<'a>(
    base: Option<&'a Labels>,
    external: &'a Labels,
    symbols: &mut Symbols<'a>,
    fields: &mut Vec<Splice<'a>>,
    out: &mut Vec<SpliceRefs<'a>>,
) {
    splice_list(base, external, fields);
    out.clear();
    out.extend(
        fields
            .iter()
            .map(|&(f, external)| (f.name, symbols.get(f.name), symbols.get(f.value), external)),
    );
}

/// A series' `labels_refs`: its own labels merged by name with `splice` (from
/// [`splice_refs`]), an external label left out where the series has its own.
fn label_refs<'a>(
    labels: &'a Labels,
    splice: &[SpliceRefs<'a>],
    symbols: &mut Symbols<'a>,
    out: &mut Vec<u32>,
) {
    out.clear();
    let mut own = labels.own_fields().peekable();
    let mut push_own = |f: Field<'a>, out: &mut Vec<u32>| {
        // The protocol forbids empty names and values; a label set never holds one, so
        // this only guards the invariant.
        if !f.name.is_empty() && !f.value.is_empty() {
            out.push(symbols.get(f.name));
            out.push(symbols.get(f.value));
        }
    };
    for &(name, name_ref, value_ref, external) in splice {
        while let Some(f) = own.next_if(|f| cmp_names(f.name, name).is_lt()) {
            push_own(f, out);
        }
        if external && own.peek().is_some_and(|f| f.name == name) {
            continue;
        }
        out.push(name_ref);
        out.push(value_ref);
    }
    for f in own {
        push_own(f, out);
    }
}

/// A series' `Metadata`, as symbol references.
#[derive(Clone, Copy)]
struct MetadataRefs {
    kind: i32,
    help: u32,
    unit: u32,
}

impl MetadataRefs {
    /// Payload size; proto3 leaves zero fields out.
    fn len(&self) -> usize {
        let field = |v: u64| if v == 0 { 0 } else { 1 + varint_len(v) };
        // An enum is an int32 varint: a negative one would be sign-extended to 64 bits.
        field(self.kind as i64 as u64) + field(u64::from(self.help)) + field(u64::from(self.unit))
    }

    fn write(&self, buf: &mut Vec<u8>) {
        buf.push(KEY_SERIES_METADATA);
        put_varint(buf, self.len() as u64);
        for (key, v) in [
            (KEY_METADATA_TYPE, self.kind as i64 as u64),
            (KEY_METADATA_HELP, u64::from(self.help)),
            (KEY_METADATA_UNIT, u64::from(self.unit)),
        ] {
            if v != 0 {
                buf.push(key);
                put_varint(buf, v);
            }
        }
    }
}

/// What a `TimeSeries` carries besides its labels and metadata.
enum Points<'p, 'a> {
    /// Float samples and the series' start timestamp (0: none).
    Floats(&'p [&'a Sample], i64),
    /// Native histograms, as prost messages.
    Histograms(&'p [proto_v2::Histogram]),
}

/// Payload size of a 2.0 `Sample`: 1.0's fields (the same numbers), and the start time.
fn sample_len(s: &Sample, start: i64) -> usize {
    let start_len = if start == 0 {
        0
    } else {
        1 + varint_len(start as u64)
    };
    super::encode::sample_len(s) + start_len
}

/// Writes one `TimeSeries.samples` field.
fn write_sample(buf: &mut Vec<u8>, s: &Sample, start: i64) {
    buf.push(KEY_SERIES_SAMPLES);
    put_varint(buf, sample_len(s, start) as u64);
    let bits = s.value.to_bits();
    if bits != 0 {
        buf.push(KEY_SAMPLE_VALUE);
        // Raw bits, so the staleness NaN (and every other NaN payload) is kept.
        buf.extend_from_slice(&bits.to_le_bytes());
    }
    for (key, t) in [
        (KEY_SAMPLE_TIMESTAMP, s.timestamp_ms),
        (KEY_SAMPLE_START, start),
    ] {
        if t != 0 {
            buf.push(key);
            // int64 is a two's-complement varint, as protobuf specifies.
            put_varint(buf, t as u64);
        }
    }
}

/// Writes one `Request.timeseries` field: label references, points, metadata, in tag order.
fn write_series(
    buf: &mut Vec<u8>,
    refs: &[u32],
    points: Points<'_, '_>,
    metadata: Option<MetadataRefs>,
) {
    let refs_len: usize = refs.iter().map(|&r| varint_len(u64::from(r))).sum();
    let mut len = if refs.is_empty() {
        0
    } else {
        field_len(refs_len)
    };
    len += match points {
        Points::Floats(samples, start) => samples
            .iter()
            .map(|s| field_len(sample_len(s, start)))
            .sum::<usize>(),
        Points::Histograms(histograms) => histograms
            .iter()
            .map(|h| field_len(h.encoded_len()))
            .sum::<usize>(),
    };
    if let Some(m) = &metadata {
        len += field_len(m.len());
    }
    buf.reserve(field_len(len));
    buf.push(KEY_REQUEST_TIMESERIES);
    put_varint(buf, len as u64);
    if !refs.is_empty() {
        buf.push(KEY_SERIES_LABELS_REFS);
        put_varint(buf, refs_len as u64);
        for &r in refs {
            put_varint(buf, u64::from(r));
        }
    }
    match points {
        Points::Floats(samples, start) => {
            for s in samples {
                write_sample(buf, s, start);
            }
        }
        Points::Histograms(histograms) => {
            for h in histograms {
                prost::encoding::message::encode(TAG_SERIES_HISTOGRAMS, h, buf);
            }
        }
    }
    if let Some(m) = metadata {
        m.write(buf);
    }
}

impl Default for EncoderV2 {
    fn default() -> Self {
        Self::new()
    }
}

impl EncoderV2 {
    /// Creates an encoder.
    pub fn new() -> Self {
        EncoderV2 {
            snappy: snap::raw::Encoder::new(),
            bytes_per_sample: 0,
        }
    }

    /// Encodes `samples` as one compressed 2.0 request into `out` (cleared first).
    ///
    /// Samples of one label set become one series, in order of first appearance, their
    /// samples stably sorted by timestamp. `external_labels` are added to every series that
    /// has no label of the same name. Samples without `__name__` are left out and counted.
    pub fn encode<S: Borrow<Sample>>(
        &mut self,
        samples: &[S],
        external_labels: &Labels,
        meta: &dyn SeriesMeta,
        out: &mut Vec<u8>,
    ) -> Result<EncodeStats, EncodeError> {
        // Series in order of first appearance, each one's samples in timestamp order. The
        // tables are the batch's alone, as before 2.0 shared 1.0's grouping: a 2.0 sender
        // holds no grouping memory between requests.
        let mut groups = SeriesGroups::default();
        let mut stats = groups.group(samples);
        let order: Vec<&Sample> = groups
            .iter()
            .flat_map(|g| g.members)
            .map(|&i| samples[i as usize].borrow())
            .collect();
        let mut entries: Vec<Entry<'_>> = Vec::with_capacity(stats.series);
        let mut start = 0;
        for group in groups.iter() {
            let run = &order[start..start + group.members.len()];
            start += run.len();
            let labels = &samples[group.rep].borrow().labels;
            if !labels.has_metric_name() {
                continue;
            }
            if run.iter().any(|s| s.histogram().is_some()) {
                split_kinds(labels, run, &mut entries);
            } else {
                entries.push(Entry {
                    labels,
                    kind: Kind::Floats(Cow::Borrowed(run)),
                });
            }
        }
        stats.series = entries.len();

        // Looked up first, so the symbols can borrow the help texts and units. A histogram
        // series takes its family's help and unit with a histogram type, whatever the family
        // was typed (an untyped scrape, a classic family turned native). Series of one name
        // come in runs, so the family found for the last name is reused.
        let mut last: Option<(&str, Option<FamilyInfo>)> = None;
        let infos: Vec<(Option<FamilyInfo>, Option<i64>)> = entries
            .iter()
            .map(|e| {
                let name = e.labels.metric_name();
                let mut info = match &last {
                    Some((n, info)) if *n == name => info.clone(),
                    _ => {
                        let info = meta.family(name);
                        last = Some((name, info.clone()));
                        info
                    }
                };
                if let Kind::Histograms(points) = &e.kind {
                    let kind = histogram_type(info.as_ref(), points);
                    info = Some(match info {
                        Some(i) => FamilyInfo { kind, ..i },
                        None => FamilyInfo {
                            kind,
                            help: "".into(),
                            unit: "".into(),
                        },
                    });
                }
                let start = meta.start_ms(e.labels, info.as_ref());
                (info, start)
            })
            .collect();

        let mut symbols = Symbols::new();
        let mut series_buf =
            Vec::with_capacity(samples.len().saturating_mul(self.bytes_per_sample));
        let mut refs: Vec<u32> = Vec::new();
        let mut histograms: Vec<proto_v2::Histogram> = Vec::new();
        // The labels a series' own are merged with (its base's, and the external labels the
        // base lacks), as references, made once per run of series with one base (a scrape
        // target's, or one of its metric names').
        let mut splice: Vec<SpliceRefs<'_>> = Vec::new();
        let mut splice_fields: Vec<Splice<'_>> = Vec::new();
        let mut splice_for: Option<usize> = None;
        // Series of one family come in runs: their metadata's references are found once.
        let mut last_meta: Option<(&FamilyInfo, MetadataRefs)> = None;
        for (entry, (info, start)) in entries.iter().zip(&infos) {
            let base = entry.labels.base();
            let key = base.map_or(0, Labels::addr);
            if splice_for != Some(key) {
                splice_refs(
                    base,
                    external_labels,
                    &mut symbols,
                    &mut splice_fields,
                    &mut splice,
                );
                splice_for = Some(key);
            }
            label_refs(entry.labels, &splice, &mut symbols, &mut refs);
            let metadata = info.as_ref().map(|i| match last_meta {
                Some((last, refs))
                    if last.kind == i.kind
                        && Arc::ptr_eq(&last.help, &i.help)
                        && Arc::ptr_eq(&last.unit, &i.unit) =>
                {
                    refs
                }
                _ => {
                    let refs = MetadataRefs {
                        kind: i.kind as i32,
                        help: symbols.get(i.help.as_bytes()),
                        unit: symbols.get(i.unit.as_bytes()),
                    };
                    last_meta = Some((i, refs));
                    refs
                }
            });
            // 0 means "unset" in the protocol: a start at the epoch is sent 1 ms later.
            let start_timestamp = match start {
                Some(0) => 1,
                Some(t) => *t,
                None => 0,
            };
            let points = match &entry.kind {
                Kind::Floats(floats) => Points::Floats(floats, start_timestamp),
                Kind::Histograms(points) => {
                    let mut like: Option<&NativeHistogram> = None;
                    histograms.clear();
                    histograms.extend(points.iter().map(|s| {
                        let h = histogram_v2(s, like, start_timestamp);
                        if let Some(native) = s.histogram() {
                            like = Some(native);
                        }
                        h
                    }));
                    stats.histograms += points.len();
                    Points::Histograms(&histograms)
                }
            };
            write_series(&mut series_buf, &refs, points, metadata);
        }
        // `symbols` (field 4) goes before `timeseries` (5), in tag order, but is complete
        // only once every series is written.
        let mut proto = Vec::with_capacity(symbols.wire_len + series_buf.len());
        symbols.write(&mut proto);
        proto.extend_from_slice(&series_buf);
        drop(series_buf);
        stats.uncompressed_bytes = proto.len();
        if !samples.is_empty() {
            self.bytes_per_sample = proto.len().div_ceil(samples.len());
        }
        let max = snap::raw::max_compress_len(proto.len());
        if max == 0 && !proto.is_empty() {
            return Err(EncodeError::TooLarge { len: proto.len() });
        }
        let mut body = zeroed_body(max.max(1));
        let n = self.snappy.compress(&proto, &mut body)?;
        body.truncate(n);
        *out = body;
        stats.compressed_bytes = n;
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

    /// Knows one counter family (with a start time) and one gauge.
    struct Known;

    impl SeriesMeta for Known {
        fn family(&self, metric: &str) -> Option<FamilyInfo> {
            match metric {
                "requests_total" => Some(FamilyInfo {
                    kind: MetricType::Counter,
                    help: "Requests handled.".into(),
                    unit: "".into(),
                }),
                "temp_celsius" => Some(FamilyInfo {
                    kind: MetricType::Gauge,
                    help: "Temperature.".into(),
                    unit: "celsius".into(),
                }),
                _ => None,
            }
        }
        fn start_ms(&self, _: &Labels, family: Option<&FamilyInfo>) -> Option<i64> {
            family
                .filter(|f| f.kind == MetricType::Counter)
                .map(|_| 1_000)
        }
    }

    fn encode(samples: &[Sample], ext: &Labels, meta: &dyn SeriesMeta) -> proto_v2::Request {
        let mut out = Vec::new();
        let stats = EncoderV2::new()
            .encode(samples, ext, meta, &mut out)
            .unwrap();
        assert_eq!(stats.compressed_bytes, out.len());
        let raw = snap::raw::Decoder::new().decompress_vec(&out).unwrap();
        proto_v2::Request::decode(raw.as_slice()).unwrap()
    }

    fn resolved(req: &proto_v2::Request, ts: &proto_v2::TimeSeries) -> Vec<(String, String)> {
        ts.labels_refs
            .chunks(2)
            .map(|p| {
                (
                    req.symbols[p[0] as usize].clone(),
                    req.symbols[p[1] as usize].clone(),
                )
            })
            .collect()
    }

    #[test]
    fn symbols_start_empty_and_labels_are_sorted_pairs_with_external_labels() {
        let l = labels("requests_total", &[("Zone", "z"), ("instance", "own")]);
        let ext = Labels::from_pairs([("instance", "ext"), ("cluster", "c1")]).unwrap();
        let req = encode(&[sample(&l, 1.0, 5)], &ext, &NoMeta);
        assert_eq!(req.symbols[0], "");
        let ts = &req.timeseries[0];
        assert_eq!(ts.labels_refs.len() % 2, 0);
        let got = resolved(&req, ts);
        let want = [
            ("Zone", "z"),
            ("__name__", "requests_total"),
            ("cluster", "c1"),
            ("instance", "own"),
        ];
        assert_eq!(
            got,
            want.map(|(n, v)| (n.to_string(), v.to_string())).to_vec()
        );
        // Each string once.
        let mut sorted = req.symbols.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), req.symbols.len());
        assert!(ts.metadata.is_none());
        assert_eq!(ts.samples[0].start_timestamp, 0);
    }

    #[test]
    fn metadata_and_start_timestamps_ride_on_each_series() {
        let c = labels("requests_total", &[("job", "a")]);
        let g = labels("temp_celsius", &[("job", "a")]);
        let u = labels("mystery", &[("job", "a")]);
        let req = encode(
            &[
                sample(&c, 3.0, 10),
                sample(&g, 21.5, 10),
                sample(&u, 1.0, 10),
            ],
            &Labels::default(),
            &Known,
        );
        let [c, g, u] = &req.timeseries[..] else {
            panic!("three series")
        };
        let meta = c.metadata.as_ref().unwrap();
        assert_eq!(meta.r#type(), MetricType::Counter);
        assert_eq!(req.symbols[meta.help_ref as usize], "Requests handled.");
        assert_eq!(meta.unit_ref, 0);
        assert_eq!(c.samples[0].start_timestamp, 1_000);
        let meta = g.metadata.as_ref().unwrap();
        assert_eq!(meta.r#type(), MetricType::Gauge);
        assert_eq!(req.symbols[meta.unit_ref as usize], "celsius");
        assert_eq!(g.samples[0].start_timestamp, 0);
        assert!(u.metadata.is_none());
    }

    #[test]
    fn series_group_in_order_and_samples_sort_by_time_keeping_nan_bits() {
        let a = labels("a", &[]);
        let b = labels("b", &[]);
        let req = encode(
            &[
                sample(&a, 1.0, 30),
                sample(&b, 2.0, 10),
                sample(&a, stale_nan(), 20),
                sample(&a, -0.0, 40),
            ],
            &Labels::default(),
            &NoMeta,
        );
        assert_eq!(req.timeseries.len(), 2);
        let a = &req.timeseries[0];
        assert_eq!(
            a.samples.iter().map(|s| s.timestamp).collect::<Vec<_>>(),
            [20, 30, 40]
        );
        assert_eq!(a.samples[0].value.to_bits(), STALE_NAN_BITS);
        // Written, where prost would leave `-0.0` out as a default and send `+0.0`.
        assert_eq!(a.samples[2].value.to_bits(), (-0.0f64).to_bits());
        assert!(a.histograms.is_empty());
    }

    /// A native histogram of five observations (one zero, one negative) at schema 3.
    fn five_observations(reset_hint: ResetHint) -> Arc<NativeHistogram> {
        use crate::series::native::{NativeOptions, NativeState};
        let mut state = NativeState::new(NativeOptions::from_factor(1.1));
        for v in [0.0, 1.0, 1.0, 1.1, -2.0] {
            state.observe(v);
        }
        Arc::new(NativeHistogram {
            reset_hint,
            ..state.snapshot()
        })
    }

    /// Knows one histogram family, started at 1 s, on top of [`Known`].
    struct KnownHistogram;

    impl SeriesMeta for KnownHistogram {
        fn family(&self, metric: &str) -> Option<FamilyInfo> {
            match metric {
                "lat_seconds" => Some(FamilyInfo {
                    kind: MetricType::Histogram,
                    help: "Latency.".into(),
                    unit: "seconds".into(),
                }),
                _ => Known.family(metric),
            }
        }
        fn start_ms(&self, _: &Labels, family: Option<&FamilyInfo>) -> Option<i64> {
            family
                .filter(|f| f.kind == MetricType::Histogram)
                .map(|_| 1_000)
        }
    }

    fn encode_stats(samples: &[Sample], meta: &dyn SeriesMeta) -> (proto_v2::Request, EncodeStats) {
        let mut out = Vec::new();
        let stats = EncoderV2::new()
            .encode(samples, &Labels::default(), meta, &mut out)
            .unwrap();
        let raw = snap::raw::Decoder::new().decompress_vec(&out).unwrap();
        (proto_v2::Request::decode(raw.as_slice()).unwrap(), stats)
    }

    #[test]
    fn native_histograms_go_in_the_histograms_field_never_as_floats() {
        use proto_v2::histogram::{Count, ZeroCount};
        let h = five_observations(ResetHint::Unknown);
        let l = labels("lat_seconds", &[("probe", "p")]);
        let up = labels("up", &[]);
        let (req, stats) = encode_stats(
            &[
                sample(&up, 1.0, 1000),
                Sample::native(&l, h.clone(), 2000),
                Sample::native(&l, h.clone(), 1500),
            ],
            &KnownHistogram,
        );
        assert_eq!((stats.series, stats.samples, stats.histograms), (2, 3, 2));
        let [up_ts, ts] = &req.timeseries[..] else {
            panic!("two series")
        };
        assert!(up_ts.histograms.is_empty());
        assert!(ts.samples.is_empty(), "a histogram series has no floats");
        assert_eq!(
            resolved(&req, ts),
            [("__name__", "lat_seconds"), ("probe", "p")]
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .to_vec()
        );
        let meta = ts.metadata.as_ref().unwrap();
        assert_eq!(meta.r#type(), MetricType::Histogram);
        assert_eq!(req.symbols[meta.help_ref as usize], "Latency.");
        assert_eq!(req.symbols[meta.unit_ref as usize], "seconds");
        assert_eq!(
            ts.histograms
                .iter()
                .map(|h| h.timestamp)
                .collect::<Vec<_>>(),
            [1500, 2000],
            "in timestamp order"
        );
        let got = &ts.histograms[0];
        assert_eq!(got.count, Some(Count::CountInt(5)));
        assert_eq!(got.zero_count, Some(ZeroCount::ZeroCountInt(1)));
        assert_eq!(got.schema, 3);
        assert_eq!(got.sum, 1.0 + 1.0 + 1.1 - 2.0);
        assert_eq!(got.zero_threshold, h.zero_threshold);
        assert_eq!(
            got.positive_spans,
            [proto_v2::BucketSpan {
                offset: 0,
                length: 3
            }]
        );
        assert_eq!(got.positive_deltas, [2, -2, 1]);
        assert_eq!(
            got.negative_spans,
            [proto_v2::BucketSpan {
                offset: 8,
                length: 1
            }]
        );
        assert_eq!(got.negative_deltas, [1]);
        assert!(got.positive_counts.is_empty() && got.custom_values.is_empty());
        assert_eq!(
            got.reset_hint(),
            proto_v2::histogram::ResetHint::Unspecified
        );
        assert_eq!(got.start_timestamp, 1_000);
    }

    #[test]
    fn gauge_histograms_are_typed_so_and_have_no_start() {
        let h = five_observations(ResetHint::Gauge);
        let l = labels("queue_depth", &[]);
        let (req, _) = encode_stats(&[Sample::native(&l, h, 10)], &KnownHistogram);
        let ts = &req.timeseries[0];
        assert_eq!(
            ts.metadata.as_ref().unwrap().r#type(),
            MetricType::Gaugehistogram
        );
        assert_eq!(
            ts.histograms[0].reset_hint(),
            proto_v2::histogram::ResetHint::Gauge
        );
        assert_eq!(ts.histograms[0].start_timestamp, 0);
    }

    #[test]
    fn a_histogram_series_ends_with_the_histogram_staleness_marker() {
        let h = five_observations(ResetHint::Unknown);
        let l = labels("lat_seconds", &[]);
        let (req, stats) = encode_stats(
            &[
                Sample::native(&l, h.clone(), 10),
                sample(&l, stale_nan(), 20),
            ],
            &NoMeta,
        );
        assert_eq!((stats.series, stats.samples, stats.histograms), (1, 2, 2));
        let [ts] = &req.timeseries[..] else {
            panic!("one series")
        };
        assert!(ts.samples.is_empty());
        let marker = &ts.histograms[1];
        assert_eq!(marker.timestamp, 20);
        assert_eq!(marker.sum.to_bits(), STALE_NAN_BITS);
        assert_eq!(marker.count, Some(proto_v2::histogram::Count::CountInt(0)));
        assert_eq!(marker.schema, h.schema);
        assert_eq!(marker.start_timestamp, 0);
        // Without a known family, the series is still typed by what it carries.
        assert_eq!(
            ts.metadata.as_ref().unwrap().r#type(),
            MetricType::Histogram
        );
    }

    #[test]
    fn a_series_that_changes_kind_goes_as_two_series_older_first() {
        let h = five_observations(ResetHint::Unknown);
        let l = labels("lat_seconds", &[]);
        let (req, stats) = encode_stats(
            &[
                Sample::native(&l, h.clone(), 30),
                sample(&l, 4.0, 10),
                sample(&l, 5.0, 20),
            ],
            &NoMeta,
        );
        assert_eq!((stats.series, stats.samples, stats.histograms), (2, 3, 1));
        let [floats, hists] = &req.timeseries[..] else {
            panic!("two series")
        };
        assert_eq!(
            floats.samples.iter().map(|s| s.value).collect::<Vec<_>>(),
            [4.0, 5.0]
        );
        assert!(floats.histograms.is_empty());
        assert!(floats.metadata.is_none());
        assert_eq!(hists.histograms.len(), 1);
        assert!(hists.samples.is_empty());
        assert_eq!(floats.labels_refs, hists.labels_refs);
        // No float anywhere carries the histogram marker NaN.
        for ts in &req.timeseries {
            assert!(ts
                .samples
                .iter()
                .all(|s| s.value.to_bits() != crate::series::HISTOGRAM_NAN_BITS));
        }
    }

    #[test]
    fn nameless_samples_are_left_out_and_counted() {
        let nameless = Labels::from_pairs([("job", "a")]).unwrap();
        let up = labels("up", &[]);
        let mut out = Vec::new();
        let stats = EncoderV2::new()
            .encode(
                &[sample(&nameless, 1.0, 1), sample(&up, 1.0, 1)],
                &Labels::default(),
                &NoMeta,
                &mut out,
            )
            .unwrap();
        assert_eq!(
            (stats.series, stats.samples, stats.skipped_no_name),
            (1, 1, 1)
        );
    }

    #[test]
    fn a_1_0_receiver_reading_a_2_0_body_finds_an_empty_request() {
        // Why a silent 2xx without `-Written` headers means "1.0 only": the reserved fields.
        let l = labels("up", &[]);
        let mut out = Vec::new();
        EncoderV2::new()
            .encode(&[sample(&l, 1.0, 1)], &Labels::default(), &NoMeta, &mut out)
            .unwrap();
        let raw = snap::raw::Decoder::new().decompress_vec(&out).unwrap();
        let v1 = crate::proto::WriteRequest::decode(raw.as_slice()).unwrap();
        assert!(v1.timeseries.is_empty() && v1.metadata.is_empty());
    }

    mod against_prost {
        use super::*;
        use crate::remote_write::encode::tests::prop::value;
        use proptest::prelude::*;

        /// Label sets as sources hand them over: whole, or keeping a scrape target's labels
        /// (and a name's) in a shared base; some share names, some have none of the families.
        fn pool() -> Vec<Labels> {
            let target = Labels::from_pairs([("instance", "t:1"), ("job", "j")]).unwrap();
            let mut v = Vec::new();
            for (name, own) in [
                ("requests_total", ("code", "200")),
                ("requests_total", ("code", "500")),
                ("temp_celsius", ("Zone", "z")),
                ("lat_seconds", ("le_set", "a")),
                ("mystery", ("zz", "last")),
            ] {
                let flat = labels(name, &[own, ("instance", "t:1"), ("job", "j")]);
                let name_base = target.with("__name__", name);
                v.push(flat.with_shared_base(&name_base));
                v.push(flat.with_shared_base(&target));
                v.push(flat);
            }
            v
        }

        proptest! {
            #[test]
            fn random_batches_are_the_bytes_prost_writes_for_the_same_message(
                picks in proptest::collection::vec(
                    (0usize..64, value(), -3i64..1_000_000_000_000, 0u8..8),
                    0..120,
                ),
                with_ext in any::<bool>(),
            ) {
                let pool = pool();
                let histogram = five_observations(ResetHint::No);
                let samples: Vec<Sample> = picks
                    .iter()
                    .map(|(i, v, ts, h)| {
                        let l = &pool[*i % pool.len()];
                        if *h == 0 {
                            Sample::native(l, histogram.clone(), *ts)
                        } else {
                            sample(l, *v, *ts)
                        }
                    })
                    .collect();
                let ext = if with_ext {
                    Labels::from_pairs([("cluster", "c"), ("instance", "ext"), ("zone", "z")])
                        .unwrap()
                } else {
                    Labels::default()
                };
                let mut out = Vec::new();
                let stats = EncoderV2::new()
                    .encode(&samples, &ext, &KnownHistogram, &mut out)
                    .unwrap();
                let raw = snap::raw::Decoder::new().decompress_vec(&out).unwrap();
                let req = proto_v2::Request::decode(raw.as_slice()).unwrap();
                // Same bytes as prost writes for what was decoded: field order, lengths,
                // packing and left-out defaults are prost's, NaN payloads included.
                prop_assert_eq!(&raw, &req.encode_to_vec());
                prop_assert_eq!(stats.series, req.timeseries.len());
                prop_assert_eq!(stats.samples, samples.len());
                // Every series' labels: its own and the external ones it lacks, by name.
                let expected: Vec<Vec<(String, String)>> = samples
                    .iter()
                    .map(|s| {
                        let mut all: Vec<(String, String)> = s
                            .labels
                            .iter()
                            .map(|l| (l.name.to_string(), l.value.to_string()))
                            .collect();
                        for e in ext.iter() {
                            if s.labels.get(e.name).is_none() {
                                all.push((e.name.to_string(), e.value.to_string()));
                            }
                        }
                        all.sort();
                        all
                    })
                    .collect();
                for ts in &req.timeseries {
                    let got = resolved(&req, ts);
                    prop_assert!(expected.contains(&got), "unexpected labels {:?}", got);
                    let mut names: Vec<&String> = got.iter().map(|(n, _)| n).collect();
                    let sorted = {
                        let mut s = names.clone();
                        s.sort();
                        s
                    };
                    prop_assert_eq!(&names, &sorted);
                    names.dedup();
                    prop_assert_eq!(names.len(), got.len());
                    prop_assert!(got.iter().any(|(n, v)| n == "job" && v == "j"));
                    if with_ext {
                        prop_assert!(got.iter().any(|(n, v)| n == "cluster" && v == "c"));
                        prop_assert!(got.iter().any(|(n, v)| n == "instance" && v == "t:1"));
                    }
                }
            }
        }
    }
}
