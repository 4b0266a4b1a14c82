//! The Prometheus protobuf exposition format: a body of length-delimited `MetricFamily`
//! messages (`proto/metrics.proto`), the only format that carries native histograms.
//!
//! Each family becomes the same builder calls the text parsers make, so relabeling, metadata,
//! `honor_labels`, limits and the series cache work unchanged: counters, gauges and untyped
//! metrics give one sample each; summaries their quantiles, `_sum` and `_count`; classic
//! histograms their cumulative `_bucket` series (with `+Inf`), `_sum` and `_count`. A native
//! histogram (one with spans or a zero bucket) becomes one histogram sample, forwarded as it
//! was exposed (schema, zero bucket, spans and deltas); its classic buckets are kept too only
//! when asked (`always_scrape_classic_histograms`), as in Prometheus.
//!
//! Hostile input: every length is checked against what is left of the body before anything
//! is decoded, prost bounds nesting, names are validated before they become cache keys, and
//! a bad message fails the whole scrape with its byte offset, as a bad line does in text.
//! Float-count histograms (which only gauge histograms use) cannot be represented: their
//! native part is left out, their classic buckets kept.

use std::sync::Arc;

use prost::Message;

use super::{lex, Builder, FamilyType, ParseError, Point, RawLabel, Sink};
use crate::metrics_proto::{self as pb, MetricType as PbType};
use crate::series::native::{BucketSpan, NativeHistogram, ResetHint, MAX_SCHEMA, MIN_SCHEMA};
use crate::series::{is_valid_label_name, is_valid_metric_name, HISTOGRAM_NAN_BITS};

/// Media type of the protobuf exposition format.
pub const PROTOBUF_MEDIA_TYPE: &str = "application/vnd.google.protobuf";

/// Reads every length-delimited `MetricFamily` of `body` into the builder.
pub(crate) fn parse<S: Sink>(
    body: &[u8],
    keep_classic: bool,
    b: &mut Builder<'_, S>,
) -> Result<(), ParseError> {
    let mut pos = 0usize;
    while pos < body.len() {
        let start = pos;
        let rest = body.get(pos..).unwrap_or_default();
        let (len, n) = read_varint(rest).ok_or_else(|| error(start, "bad length prefix"))?;
        pos += n;
        let left = body.len() - pos;
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l <= left)
            .ok_or_else(|| {
                error(
                    start,
                    format!("message of {len} bytes announced, {left} bytes left"),
                )
            })?;
        let msg = body.get(pos..pos + len).unwrap_or_default();
        pos += len;
        let family = pb::MetricFamily::decode(msg)
            .map_err(|e| error(start, format!("invalid MetricFamily: {e}")))?;
        family_into(&family, start, keep_classic, b)?;
    }
    Ok(())
}

fn error(offset: usize, message: impl Into<String>) -> ParseError {
    ParseError::Protobuf {
        offset,
        message: message.into(),
    }
}

/// A protobuf varint at the start of `b`: its value and length; `None` if truncated or
/// longer than ten bytes.
fn read_varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &byte) in b.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// A sample value as the text parsers give it: any NaN is the normal NaN, never a
/// staleness marker.
fn value(v: f64) -> f64 {
    if v.is_nan() {
        f64::from_bits(lex::NORMAL_NAN_BITS)
    } else {
        v
    }
}

fn family_into<S: Sink>(
    family: &pb::MetricFamily,
    offset: usize,
    keep_classic: bool,
    b: &mut Builder<'_, S>,
) -> Result<(), ParseError> {
    let name = family.name();
    if !is_valid_metric_name(name) {
        return Err(error(offset, format!("invalid metric name {name:?}")));
    }
    let pb_type = PbType::try_from(family.r#type.unwrap_or(0))
        .map_err(|_| error(offset, format!("family {name}: unknown metric type")))?;
    let kind = match pb_type {
        PbType::Counter => FamilyType::Counter,
        PbType::Gauge => FamilyType::Gauge,
        PbType::Summary => FamilyType::Summary,
        PbType::Untyped => FamilyType::Unknown,
        // Prometheus' protobuf path names a gauge histogram's classic series as a histogram's.
        PbType::Histogram | PbType::GaugeHistogram => FamilyType::Histogram,
    };
    if let Some(f) = b.meta(name) {
        f.kind = kind;
        f.help = family.help.clone().filter(|h| !h.is_empty());
        f.unit = family.unit.clone().filter(|u| !u.is_empty());
    }
    let mut e = Emitter {
        b,
        offset,
        family: name,
    };
    for m in &family.metric {
        let labels: Vec<(&str, &str)> = m.label.iter().map(|l| (l.name(), l.value())).collect();
        if let Some((bad, _)) = labels.iter().find(|(n, _)| !is_valid_label_name(n)) {
            return Err(error(
                offset,
                format!("family {name}: invalid label name {bad:?}"),
            ));
        }
        let ts = m.timestamp_ms;
        match pb_type {
            PbType::Counter => e.float(
                name,
                &labels,
                None,
                m.counter.as_ref().map(|c| c.value()),
                ts,
            )?,
            PbType::Gauge => {
                e.float(name, &labels, None, m.gauge.as_ref().map(|g| g.value()), ts)?
            }
            PbType::Untyped => e.float(
                name,
                &labels,
                None,
                m.untyped.as_ref().map(|u| u.value()),
                ts,
            )?,
            PbType::Summary => {
                let s = m.summary.clone().unwrap_or_default();
                for q in &s.quantile {
                    let quantile = lex::format_go_float(q.quantile());
                    e.float(
                        name,
                        &labels,
                        Some(("quantile", &quantile)),
                        Some(q.value()),
                        ts,
                    )?;
                }
                e.float(
                    &format!("{name}_sum"),
                    &labels,
                    None,
                    Some(s.sample_sum()),
                    ts,
                )?;
                let count = s.sample_count() as f64;
                e.float(&format!("{name}_count"), &labels, None, Some(count), ts)?;
            }
            PbType::Histogram | PbType::GaugeHistogram => {
                let h = m.histogram.clone().unwrap_or_default();
                let gauge = pb_type == PbType::GaugeHistogram;
                let native = if is_native(&h) {
                    native_of(&h, gauge)
                        .map_err(|msg| error(offset, format!("family {name}: {msg}")))?
                } else {
                    None
                };
                let classic = native.is_none() || (keep_classic && !h.bucket.is_empty());
                if let Some(nh) = native {
                    e.histogram(name, &labels, nh, ts)?;
                }
                if classic {
                    e.classic(name, &labels, &h, ts)?;
                }
            }
        }
    }
    Ok(())
}

/// Whether a histogram message carries a native histogram, as Prometheus decides: spans or
/// a zero bucket (an empty native histogram has a zero threshold or a no-op span).
fn is_native(h: &pb::Histogram) -> bool {
    !h.positive_span.is_empty()
        || !h.negative_span.is_empty()
        || h.zero_threshold() > 0.0
        || h.zero_count() > 0
        || h.zero_count_float() > 0.0
}

/// The native histogram of a message, checked; `None` for a float-count histogram.
fn native_of(h: &pb::Histogram, gauge: bool) -> Result<Option<NativeHistogram>, String> {
    if h.sample_count_float() > 0.0
        || h.zero_count_float() > 0.0
        || !h.positive_count.is_empty()
        || !h.negative_count.is_empty()
    {
        return Ok(None);
    }
    let schema = h.schema();
    if !(MIN_SCHEMA..=MAX_SCHEMA).contains(&schema) {
        return Err(format!(
            "native histogram schema {schema} outside {MIN_SCHEMA}..={MAX_SCHEMA}"
        ));
    }
    let spans = |s: &[pb::BucketSpan]| -> Vec<BucketSpan> {
        s.iter()
            .map(|s| BucketSpan {
                offset: s.offset(),
                length: s.length(),
            })
            .collect()
    };
    let out = NativeHistogram {
        schema,
        zero_threshold: h.zero_threshold(),
        zero_count: h.zero_count(),
        count: h.sample_count(),
        sum: h.sample_sum(),
        positive_spans: spans(&h.positive_span),
        positive_deltas: h.positive_delta.clone(),
        negative_spans: spans(&h.negative_span),
        negative_deltas: h.negative_delta.clone(),
        reset_hint: if gauge {
            ResetHint::Gauge
        } else {
            ResetHint::Unknown
        },
    };
    for (side, spans, deltas) in [
        ("positive", &out.positive_spans, &out.positive_deltas),
        ("negative", &out.negative_spans, &out.negative_deltas),
    ] {
        if NativeHistogram::buckets(spans, deltas).is_none() {
            return Err(format!(
                "native histogram {side} spans and deltas disagree (or counts go negative)"
            ));
        }
    }
    Ok(Some(out))
}

/// Turns one metric's series into builder samples.
struct Emitter<'e, 'b, S: Sink> {
    b: &'e mut Builder<'b, S>,
    offset: usize,
    family: &'e str,
}

impl<S: Sink> Emitter<'_, '_, S> {
    fn float(
        &mut self,
        series: &str,
        labels: &[(&str, &str)],
        extra: Option<(&str, &str)>,
        v: Option<f64>,
        ts: Option<i64>,
    ) -> Result<(), ParseError> {
        let point = Point::new(value(v.unwrap_or(0.0)), ts, None);
        self.sample(series, labels, extra, point)
    }

    fn histogram(
        &mut self,
        series: &str,
        labels: &[(&str, &str)],
        h: NativeHistogram,
        ts: Option<i64>,
    ) -> Result<(), ParseError> {
        let mut point = Point::new(f64::from_bits(HISTOGRAM_NAN_BITS), ts, None);
        point.histogram = Some(Arc::new(h));
        self.sample(series, labels, None, point)
    }

    fn classic(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        h: &pb::Histogram,
        ts: Option<i64>,
    ) -> Result<(), ParseError> {
        let float = h.sample_count_float() > 0.0;
        let count = if float {
            h.sample_count_float()
        } else {
            h.sample_count() as f64
        };
        let bucket_name = format!("{name}_bucket");
        let mut inf = false;
        for bucket in &h.bucket {
            let le = lex::format_go_float(bucket.upper_bound());
            inf |= bucket.upper_bound() == f64::INFINITY;
            let c = if float {
                bucket.cumulative_count_float()
            } else {
                bucket.cumulative_count() as f64
            };
            self.float(&bucket_name, labels, Some(("le", &le)), Some(c), ts)?;
        }
        if !inf {
            self.float(&bucket_name, labels, Some(("le", "+Inf")), Some(count), ts)?;
        }
        self.float(
            &format!("{name}_sum"),
            labels,
            None,
            Some(h.sample_sum()),
            ts,
        )?;
        self.float(&format!("{name}_count"), labels, None, Some(count), ts)
    }

    /// Hands one series to the builder, under a text key: the series as the text format
    /// would write it, so the series cache recognises it scrape after scrape. Names are
    /// valid (checked above), so no two series share a key.
    fn sample(
        &mut self,
        series: &str,
        labels: &[(&str, &str)],
        extra: Option<(&str, &str)>,
        point: Point,
    ) -> Result<(), ParseError> {
        let escaped: Vec<(&str, String)> = labels
            .iter()
            .copied()
            .chain(extra)
            .map(|(n, v)| (n, escape(v)))
            .collect();
        let mut raw = String::with_capacity(series.len() + 2 + escaped.len() * 16);
        raw.push_str(series);
        raw.push('{');
        for (i, (n, v)) in escaped.iter().enumerate() {
            if i > 0 {
                raw.push(',');
            }
            raw.push_str(n);
            raw.push_str("=\"");
            raw.push_str(v);
            raw.push('"');
        }
        raw.push('}');
        let raw_labels: Vec<RawLabel<'_>> = escaped
            .iter()
            .map(|(n, v)| RawLabel {
                name: n,
                quoted: false,
                pos: 0,
                value: v,
            })
            .collect();
        self.b
            .sample(&raw, series, 0, &raw_labels, point, None)
            .map_err(|e| {
                error(
                    self.offset,
                    format!("family {}: series {raw}: {}", self.family, e.kind),
                )
            })
    }
}

/// Escapes a label value as the text format writes it.
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests;
