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
//! A series carries float samples or native histogram samples, never both: each kind becomes
//! its own `TimeSeries`. Only float samples exist in [`Sample`] today; a histogram kind goes
//! into `SeriesPoints` and fills `TimeSeries.histograms` the same way.
//!
//! The message is built with prost: 2.0 already writes each string once per request, so the
//! copies prost needs cost little next to 1.0's hand-written path ([`super::encode`]).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::sync::Arc;

use prost::Message;

use super::encode::{EncodeError, EncodeStats};
use crate::proto_v2::{self, metadata::MetricType};
use crate::series::{Labels, Sample};

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

/// The points of one series in a request, of one kind (2.0 never mixes them).
enum SeriesPoints<'a> {
    /// Float samples, in timestamp order.
    Floats(Vec<&'a Sample>),
}

/// Encodes batches into snappy-compressed 2.0 request bodies, reusing its compressor.
pub struct EncoderV2 {
    snappy: snap::raw::Encoder,
    compressed: Vec<u8>,
}

impl std::fmt::Debug for EncoderV2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncoderV2").finish_non_exhaustive()
    }
}

/// The symbols table being built: strings in first-use order, `""` first.
struct Symbols<'a> {
    list: Vec<&'a str>,
    index: HashMap<&'a str, u32>,
}

impl<'a> Symbols<'a> {
    fn new() -> Self {
        Symbols {
            list: vec![""],
            index: HashMap::from([("", 0)]),
        }
    }

    fn get(&mut self, s: &'a str) -> u32 {
        let next = self.list.len() as u32;
        *self.index.entry(s).or_insert_with(|| {
            self.list.push(s);
            next
        })
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
            compressed: Vec::new(),
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
        let mut stats = EncodeStats::default();
        let mut series: Vec<(&Labels, SeriesPoints<'_>)> = Vec::new();
        let mut by_labels: HashMap<&Labels, usize> = HashMap::new();
        for s in samples {
            let s = s.borrow();
            if !s.labels.has_metric_name() {
                stats.skipped_no_name += 1;
                continue;
            }
            let i = *by_labels.entry(&s.labels).or_insert_with(|| {
                series.push((&s.labels, SeriesPoints::Floats(Vec::new())));
                series.len() - 1
            });
            let SeriesPoints::Floats(points) = &mut series[i].1;
            points.push(s);
            stats.samples += 1;
        }
        stats.series = series.len();

        // Looked up first, so the symbols can borrow the help texts and units.
        let infos: Vec<(Option<FamilyInfo>, Option<i64>)> = series
            .iter()
            .map(|(labels, _)| {
                let info = meta.family(labels.metric_name());
                let start = meta.start_ms(labels, info.as_ref());
                (info, start)
            })
            .collect();

        let mut symbols = Symbols::new();
        let mut timeseries = Vec::with_capacity(series.len());
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        for ((labels, points), (info, start)) in series.iter_mut().zip(&infos) {
            pairs.clear();
            pairs.extend(labels.iter().map(|l| (l.name, l.value)));
            let own = pairs.len();
            for e in external_labels.iter() {
                if !pairs[..own].iter().any(|(n, _)| *n == e.name) {
                    pairs.push((e.name, e.value));
                }
            }
            pairs.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            // The protocol forbids empty names and values; a label set never holds one, so
            // this only guards the invariant.
            pairs.retain(|(n, v)| !n.is_empty() && !v.is_empty());
            let mut labels_refs = Vec::with_capacity(pairs.len() * 2);
            for &(n, v) in &pairs {
                labels_refs.push(symbols.get(n));
                labels_refs.push(symbols.get(v));
            }
            let metadata = info.as_ref().map(|i| proto_v2::Metadata {
                r#type: i.kind as i32,
                help_ref: symbols.get(&i.help),
                unit_ref: symbols.get(&i.unit),
            });
            // 0 means "unset" in the protocol: a start at the epoch is sent 1 ms later.
            let start_timestamp = match start {
                Some(0) => 1,
                Some(t) => *t,
                None => 0,
            };
            let SeriesPoints::Floats(floats) = points;
            floats.sort_by_key(|s| s.timestamp_ms);
            let samples = floats
                .iter()
                .map(|s| proto_v2::Sample {
                    value: s.value,
                    timestamp: s.timestamp_ms,
                    start_timestamp,
                })
                .collect();
            timeseries.push(proto_v2::TimeSeries {
                labels_refs,
                samples,
                metadata,
                ..Default::default()
            });
        }
        let request = proto_v2::Request {
            symbols: symbols.list.iter().map(|s| s.to_string()).collect(),
            timeseries,
        };
        let proto = request.encode_to_vec();
        stats.uncompressed_bytes = proto.len();
        let max = snap::raw::max_compress_len(proto.len());
        if max == 0 && !proto.is_empty() {
            return Err(EncodeError::TooLarge { len: proto.len() });
        }
        if self.compressed.len() < max.max(1) {
            self.compressed.resize(max.max(1), 0);
        }
        let n = self.snappy.compress(&proto, &mut self.compressed)?;
        out.clear();
        out.extend_from_slice(self.compressed.get(..n).unwrap_or_default());
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
        assert!(a.histograms.is_empty());
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
}
