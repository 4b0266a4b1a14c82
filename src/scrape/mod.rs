//! Scraping local exporters with Prometheus' semantics: a pure core and one I/O shell.
//!
//! - this file: parsers for the Prometheus text format 0.0.4 and OpenMetrics 1.0 text (with
//!   `text`, `openmetrics`, and `lex` for what both share) and for the protobuf format
//!   (`protobuf`, which carries native histograms), the `Accept` header of
//!   [`ScrapeProtocol`]s, and the [`SeriesCache`] (over `table`);
//! - [`relabel`](mod@relabel): metric relabeling (pure); `render`: the text-format renderer (pure);
//! - [`body`]: the size-bounded decoding of gzip bodies (pure);
//! - [`target`]: one target's state as a pure function of the bodies it is fed (target labels,
//!   sample limit, staleness, report series);
//! - [`metadata`]: scraped families' type, help and unit, and the task that sends them;
//! - [`scraper`]: the I/O shell, one scrape loop per target over the shared
//!   [`http_client`](crate::http_client).
//!
//! Both parsers work line by line over an in-memory body, never recurse, and are linear in the
//! input. A bad line fails the whole parse with an error naming its line and column, as
//! Prometheus fails the whole scrape. Samples carry `Labels` so a [`SeriesCache`] can hand
//! out the same label set for the same raw series text scrape after scrape.

pub mod body;
mod lex;
pub mod metadata;
mod openmetrics;
mod protobuf;
pub mod relabel;
mod render;
pub mod scraper;
mod table;
pub mod target;
mod text;

use std::borrow::Cow;

use table::{Keyed, SeriesKey, Table};

use crate::series::{LabelError, Labels, MetricType, Sample, METRIC_NAME_LABEL};

pub use lex::{format_go_float, parse_go_float, NORMAL_NAN_BITS};
pub use protobuf::PROTOBUF_MEDIA_TYPE;
pub use relabel::{relabel, Action, RelabelConfig, RelabelError, RelabelRule};
pub use render::{render_text, render_text_into};

/// Content type of the Prometheus text format, as an `Accept`/`Content-Type` value.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of OpenMetrics 1.0 text.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// `Accept` header that prefers OpenMetrics and falls back to the text format.
pub const ACCEPT_HEADER: &str =
    "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4,*/*;q=0.1";

/// An exposition format a scrape may ask for, as Prometheus 3's `scrape_protocols` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScrapeProtocol {
    /// The protobuf format (`PrometheusProto`), the one that carries native histograms.
    PrometheusProto,
    /// OpenMetrics text 1.0.0.
    OpenMetricsText1_0_0,
    /// OpenMetrics text 0.0.1.
    OpenMetricsText0_0_1,
    /// Prometheus text 1.0.0.
    PrometheusText1_0_0,
    /// Prometheus text 0.0.4.
    PrometheusText0_0_4,
}

impl ScrapeProtocol {
    /// Every protocol, in Prometheus' order.
    pub const ALL: [ScrapeProtocol; 5] = [
        ScrapeProtocol::PrometheusProto,
        ScrapeProtocol::OpenMetricsText1_0_0,
        ScrapeProtocol::OpenMetricsText0_0_1,
        ScrapeProtocol::PrometheusText1_0_0,
        ScrapeProtocol::PrometheusText0_0_4,
    ];

    /// The protocol a configuration name stands for.
    pub fn from_name(name: &str) -> Option<ScrapeProtocol> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The name in configuration.
    pub fn name(self) -> &'static str {
        match self {
            ScrapeProtocol::PrometheusProto => "PrometheusProto",
            ScrapeProtocol::OpenMetricsText1_0_0 => "OpenMetricsText1.0.0",
            ScrapeProtocol::OpenMetricsText0_0_1 => "OpenMetricsText0.0.1",
            ScrapeProtocol::PrometheusText1_0_0 => "PrometheusText1.0.0",
            ScrapeProtocol::PrometheusText0_0_4 => "PrometheusText0.0.4",
        }
    }

    /// The media type with its parameters, as it goes in an `Accept` header. The 1.0.0
    /// formats ask for `escaping=underscores`: the label model takes only legacy names, so
    /// targets are asked to escape others rather than expose them as they are.
    fn media(self) -> &'static str {
        match self {
            ScrapeProtocol::PrometheusProto => {
                "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited"
            }
            ScrapeProtocol::OpenMetricsText1_0_0 => {
                "application/openmetrics-text;version=1.0.0;escaping=underscores"
            }
            ScrapeProtocol::OpenMetricsText0_0_1 => "application/openmetrics-text;version=0.0.1",
            ScrapeProtocol::PrometheusText1_0_0 => {
                "text/plain;version=1.0.0;escaping=underscores"
            }
            ScrapeProtocol::PrometheusText0_0_4 => "text/plain;version=0.0.4",
        }
    }
}

/// The `Accept` header for `protocols`, most preferred first, weighted as Prometheus weighs
/// them: `q=0.6` for the first of five possible, one tenth less for each next, and `*/*`
/// last.
pub fn accept_header(protocols: &[ScrapeProtocol]) -> String {
    let mut weight = ScrapeProtocol::ALL.len() + 1;
    let mut out = String::new();
    for p in protocols {
        out.push_str(p.media());
        out.push_str(&format!(";q=0.{weight},"));
        weight = weight.saturating_sub(1);
    }
    out.push_str(&format!("*/*;q=0.{weight}"));
    out
}

/// Which exposition format a body is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4.
    Text,
    /// OpenMetrics 1.0 text.
    OpenMetrics,
    /// The protobuf format: length-delimited `io.prometheus.client.MetricFamily` messages.
    Protobuf,
}

impl Format {
    /// Picks the format from a `Content-Type` value; `None` when it is neither text format.
    pub fn from_content_type(content_type: &str) -> Option<Format> {
        let mut parts = content_type.split(';');
        let media = parts.next().unwrap_or("").trim();
        if media.eq_ignore_ascii_case(PROTOBUF_MEDIA_TYPE) {
            // Only the delimited MetricFamily stream is the exposition format.
            let fits = parts.all(|p| match p.split_once('=') {
                Some((k, v)) if k.trim().eq_ignore_ascii_case("proto") => {
                    v.trim() == "io.prometheus.client.MetricFamily"
                }
                Some((k, v)) if k.trim().eq_ignore_ascii_case("encoding") => {
                    v.trim().eq_ignore_ascii_case("delimited")
                }
                _ => true,
            });
            fits.then_some(Format::Protobuf)
        } else if media.eq_ignore_ascii_case("application/openmetrics-text") {
            Some(Format::OpenMetrics)
        } else if media.eq_ignore_ascii_case("text/plain") {
            Some(Format::Text)
        } else {
            None
        }
    }
}

/// The type of a metric family, as the exposition formats name it.
///
/// Wider than [`MetricType`]: OpenMetrics also has gauge histograms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FamilyType {
    /// `counter`.
    Counter,
    /// `gauge`.
    Gauge,
    /// `histogram`.
    Histogram,
    /// `gaugehistogram` (OpenMetrics only).
    GaugeHistogram,
    /// `summary`.
    Summary,
    /// `info` (OpenMetrics only).
    Info,
    /// `stateset` (OpenMetrics only).
    StateSet,
    /// `untyped` (text format), `unknown` (OpenMetrics), or no `# TYPE` line at all.
    Unknown,
}

impl FamilyType {
    /// The series-model type; a gauge histogram maps to [`MetricType::Histogram`], the
    /// closest the model has.
    pub fn metric_type(self) -> MetricType {
        match self {
            FamilyType::Counter => MetricType::Counter,
            FamilyType::Gauge => MetricType::Gauge,
            FamilyType::Histogram | FamilyType::GaugeHistogram => MetricType::Histogram,
            FamilyType::Summary => MetricType::Summary,
            FamilyType::Info => MetricType::Info,
            FamilyType::StateSet => MetricType::StateSet,
            FamilyType::Unknown => MetricType::Unknown,
        }
    }

    /// Tells whether a series named `series` belongs to a family `family` of this type,
    /// following the suffix rules Prometheus uses to attach metadata to series.
    pub fn is_member(self, family: &str, series: &str) -> bool {
        let cut = |s: &'_ str, suffixes: &[&str]| -> bool {
            suffixes
                .iter()
                .any(|suf| series.strip_suffix(suf) == Some(s))
                || series == s
        };
        match self {
            // The text format names counters with `_total`; OpenMetrics names the family
            // without it and the sample with it. Both must match.
            FamilyType::Counter => {
                let base = family.strip_suffix("_total").unwrap_or(family);
                cut(base, &["_total", "_created"])
            }
            FamilyType::Histogram => cut(family, &["_bucket", "_sum", "_count", "_created"]),
            FamilyType::GaugeHistogram => cut(family, &["_bucket", "_gsum", "_gcount"]),
            FamilyType::Summary => cut(family, &["_sum", "_count", "_created"]),
            FamilyType::Info => {
                let base = family.strip_suffix("_info").unwrap_or(family);
                cut(base, &["_info"])
            }
            FamilyType::Gauge | FamilyType::StateSet | FamilyType::Unknown => series == family,
        }
    }

    /// The name the OpenMetrics `# TYPE` line uses.
    pub fn as_openmetrics(self) -> &'static str {
        match self {
            FamilyType::Counter => "counter",
            FamilyType::Gauge => "gauge",
            FamilyType::Histogram => "histogram",
            FamilyType::GaugeHistogram => "gaugehistogram",
            FamilyType::Summary => "summary",
            FamilyType::Info => "info",
            FamilyType::StateSet => "stateset",
            FamilyType::Unknown => "unknown",
        }
    }
}

/// A metric family as the exposition declared it (or implied it, for series without metadata).
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedFamily {
    /// The name on the `# TYPE`/`# HELP` line, or the series name when there was none.
    pub name: String,
    /// The declared type; [`FamilyType::Unknown`] without a `# TYPE` line.
    pub kind: FamilyType,
    /// The help text, unescaped.
    pub help: Option<String>,
    /// The unit (OpenMetrics `# UNIT`), when given and not empty.
    pub unit: Option<String>,
}

/// An exemplar attached to a sample (OpenMetrics only).
#[derive(Clone, Debug, PartialEq)]
pub struct Exemplar {
    /// The exemplar's labels (no `__name__`).
    pub labels: Labels,
    /// Its value.
    pub value: f64,
    /// Its timestamp in milliseconds, when given.
    pub timestamp_ms: Option<i64>,
}

/// One sample line.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedSample {
    /// Index into [`Exposition::families`].
    pub family: usize,
    /// The full label set, `__name__` included, empty values dropped.
    pub labels: Labels,
    /// The value; any NaN is the normal NaN, never the staleness marker.
    pub value: f64,
    /// The explicit timestamp in milliseconds, when the line had one.
    pub timestamp_ms: Option<i64>,
    /// The exemplar, when the line had one.
    pub exemplar: Option<Box<Exemplar>>,
    /// The native histogram, when the sample is one (protobuf format only); `value` is then
    /// the histogram marker NaN.
    pub histogram: Option<std::sync::Arc<crate::series::native::NativeHistogram>>,
}

/// Everything a scrape body held.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Exposition {
    /// Families in order of first appearance.
    pub families: Vec<ParsedFamily>,
    /// Samples in input order.
    pub samples: Vec<ParsedSample>,
}

impl Exposition {
    /// Turns the samples into series-model samples, stamping those without an explicit
    /// timestamp with `scrape_ts_ms`.
    pub fn to_samples(&self, scrape_ts_ms: i64) -> Vec<Sample> {
        self.samples
            .iter()
            .map(|s| Sample {
                labels: s.labels.clone(),
                value: s.value,
                timestamp_ms: s.timestamp_ms.unwrap_or(scrape_ts_ms),
            })
            .collect()
    }

    /// The family of `sample`.
    pub fn family_of(&self, sample: &ParsedSample) -> Option<&ParsedFamily> {
        self.families.get(sample.family)
    }
}

/// What is wrong at a position of the body.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseErrorKind {
    /// A token other than the one the grammar requires.
    #[error("expected {expected}, got {found}")]
    Expected {
        /// What the grammar requires here.
        expected: &'static str,
        /// What is there instead.
        found: String,
    },
    /// A sample or exemplar value that is not a float as Prometheus reads floats.
    #[error("invalid value {0:?}")]
    InvalidValue(String),
    /// A timestamp that is not an integer (text format) or a finite float (OpenMetrics).
    #[error("invalid timestamp {0:?}")]
    InvalidTimestamp(String),
    /// An unknown `# TYPE`.
    #[error("invalid metric type {0:?}")]
    InvalidType(String),
    /// A quoted name outside the legacy character set, which pushprobe's label model needs.
    #[error("invalid name {0:?}: names must match [a-zA-Z_:][a-zA-Z0-9_:]* (metric) or [a-zA-Z_][a-zA-Z0-9_]* (label)")]
    InvalidName(String),
    /// The same label name twice in one series or exemplar.
    #[error("label {0:?} appears more than once")]
    DuplicateLabel(String),
    /// A series without a metric name.
    #[error("series has no metric name")]
    MissingName,
    /// A second metric name inside the braces.
    #[error("metric name given twice")]
    NameTwice,
    /// An OpenMetrics unit that is not the metric name's suffix.
    #[error("unit {unit:?} is not a suffix of metric {metric:?}")]
    UnitNotSuffix {
        /// The unit.
        unit: String,
        /// The family name.
        metric: String,
    },
    /// OpenMetrics input that stops before `# EOF`.
    #[error("data does not end with # EOF")]
    MissingEof,
    /// Anything after OpenMetrics' `# EOF`.
    #[error("unexpected data after # EOF")]
    DataAfterEof,
    /// Bytes that are not UTF-8.
    #[error("invalid UTF-8")]
    InvalidUtf8,
}

/// Why a body could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The content type is neither text format.
    #[error("unsupported content type {0:?}: expected text/plain; version=0.0.4 or application/openmetrics-text; version=1.0.0")]
    UnsupportedContentType(String),
    /// A protobuf body that is not a valid stream of `MetricFamily` messages.
    #[error("protobuf exposition at byte {offset}: {message}")]
    Protobuf {
        /// Offset of the message (its length prefix) in the body.
        offset: usize,
        /// What is wrong.
        message: String,
    },
    /// A syntax or content error at a position (1-based line, 1-based column in characters).
    #[error("{line}:{column}: {kind}")]
    At {
        /// 1-based line number.
        line: usize,
        /// 1-based column, counted in characters.
        column: usize,
        /// What is wrong.
        kind: ParseErrorKind,
    },
}

impl ParseError {
    /// The 1-based line and column of the error, if it has a position.
    pub fn position(&self) -> Option<(usize, usize)> {
        match self {
            ParseError::At { line, column, .. } => Some((*line, *column)),
            ParseError::UnsupportedContentType(_) | ParseError::Protobuf { .. } => None,
        }
    }
}

/// Parses a scrape body, choosing the format by `content_type` (`None`: the text format).
pub fn parse(body: &str, content_type: Option<&str>) -> Result<Exposition, ParseError> {
    parse_format(body, format_of(content_type)?, None)
}

/// Like [`parse`], reusing label sets from `cache` for series seen in recent scrapes.
pub fn parse_cached(
    body: &str,
    content_type: Option<&str>,
    cache: &mut SeriesCache,
) -> Result<Exposition, ParseError> {
    let format = format_of(content_type)?;
    cache.generation = cache.generation.wrapping_add(1);
    let out = parse_format(body, format, Some(&mut *cache))?;
    cache.sweep();
    Ok(out)
}

/// Like [`parse_bytes`], reusing label sets from `cache` for series seen in recent scrapes.
/// `normalize_le_quantile` rewrites `le`/`quantile` values to canonical floats as Prometheus 3
/// does (`1` → `1.0`); without it they stay as exposed, as Prometheus 2 stores them.
pub fn parse_bytes_cached(
    body: &[u8],
    content_type: Option<&str>,
    cache: &mut SeriesCache,
    normalize_le_quantile: bool,
) -> Result<Exposition, ParseError> {
    cache.generation = cache.generation.wrapping_add(1);
    let mut sink = Collect {
        cache: Some(&mut *cache),
        samples: Vec::new(),
    };
    let families = parse_bytes_into(body, content_type, normalize_le_quantile, false, &mut sink)?;
    let samples = sink.samples;
    cache.sweep();
    Ok(Exposition { families, samples })
}

/// Parses raw bytes into `sink`, refusing invalid UTF-8 with its position, and returns the
/// families. A scrape target parses this way straight into its own series.
pub(crate) fn parse_bytes_into<S: Sink>(
    body: &[u8],
    content_type: Option<&str>,
    normalize_le_quantile: bool,
    keep_classic_histograms: bool,
    sink: &mut S,
) -> Result<Vec<ParsedFamily>, ParseError> {
    let format = format_of(content_type)?;
    let mut b = Builder::new(sink);
    b.normalize = normalize_le_quantile;
    match format {
        Format::Protobuf => protobuf::parse(body, keep_classic_histograms, &mut b)?,
        Format::Text => text::parse(utf8(body)?, &mut b)?,
        Format::OpenMetrics => openmetrics::parse(utf8(body)?, &mut b)?,
    }
    Ok(b.families)
}

/// Parses raw bytes, refusing invalid UTF-8 with its position.
/// A protobuf body keeps native histograms only (no classic buckets beside them).
pub fn parse_bytes(body: &[u8], content_type: Option<&str>) -> Result<Exposition, ParseError> {
    let format = format_of(content_type)?;
    if format == Format::Protobuf {
        let mut sink = Collect {
            cache: None,
            samples: Vec::new(),
        };
        let families = parse_bytes_into(body, content_type, true, false, &mut sink)?;
        return Ok(Exposition {
            families,
            samples: sink.samples,
        });
    }
    let body = utf8(body)?;
    parse_format(body, format, None)
}

/// Parses a body in a known format.
pub fn parse_format(
    body: &str,
    format: Format,
    cache: Option<&mut SeriesCache>,
) -> Result<Exposition, ParseError> {
    let mut sink = Collect {
        cache,
        samples: Vec::new(),
    };
    let mut b = Builder::new(&mut sink);
    match format {
        Format::Text => text::parse(body, &mut b)?,
        Format::OpenMetrics => openmetrics::parse(body, &mut b)?,
        Format::Protobuf => protobuf::parse(body.as_bytes(), false, &mut b)?,
    }
    let families = b.families;
    Ok(Exposition {
        families,
        samples: sink.samples,
    })
}

fn format_of(content_type: Option<&str>) -> Result<Format, ParseError> {
    match content_type {
        None => Ok(Format::Text),
        Some(ct) => Format::from_content_type(ct)
            .ok_or_else(|| ParseError::UnsupportedContentType(ct.to_string())),
    }
}

fn utf8(body: &[u8]) -> Result<&str, ParseError> {
    std::str::from_utf8(body).map_err(|e| {
        let good = body.get(..e.valid_up_to()).unwrap_or_default();
        // The valid prefix is UTF-8 by construction.
        let prefix = std::str::from_utf8(good).unwrap_or_default();
        let line = prefix.matches('\n').count() + 1;
        let line_start = prefix.rfind('\n').map_or(0, |i| i + 1);
        let column = prefix.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
        ParseError::At {
            line,
            column,
            kind: ParseErrorKind::InvalidUtf8,
        }
    })
}

/// Where a parser's samples go, and what it asks about series texts it saw in recent scrapes.
pub(crate) trait Sink {
    /// What a series text stands for: a label set, or a scrape target's series.
    type Series;
    /// Whether [`Sink::find`] can ever hit; `false` spares the parser fingerprinting texts.
    fn caches(&self) -> bool;
    /// What the series text with `key` stood for in a recent scrape, if it was seen then.
    fn find(&mut self, key: SeriesKey) -> Option<Self::Series>;
    /// What a series text [`Sink::find`] did not know stands for, given its label set. `key`
    /// is the one `find` just missed (meaningless when the sink does not cache).
    fn add(&mut self, key: SeriesKey, labels: Labels) -> Self::Series;
    /// Takes one sample of a series.
    fn push(&mut self, family: usize, series: Self::Series, point: Point);
}

/// Collects samples with their label sets, through a [`SeriesCache`] when there is one.
struct Collect<'c> {
    cache: Option<&'c mut SeriesCache>,
    samples: Vec<ParsedSample>,
}

impl Sink for Collect<'_> {
    type Series = Labels;

    fn caches(&self) -> bool {
        self.cache.is_some()
    }

    fn find(&mut self, key: SeriesKey) -> Option<Labels> {
        let cache = self.cache.as_deref_mut()?;
        let generation = cache.generation;
        let i = cache.entries.find(key)?;
        let e = cache.entries.get_mut(i)?;
        e.seen = generation;
        Some(e.labels.clone())
    }

    fn add(&mut self, key: SeriesKey, labels: Labels) -> Labels {
        if let Some(cache) = self.cache.as_deref_mut() {
            cache.entries.insert(CacheEntry {
                hash: key.hash,
                check: key.check,
                labels: labels.clone(),
                seen: cache.generation,
            });
        }
        labels
    }

    fn push(&mut self, family: usize, labels: Labels, point: Point) {
        self.samples.push(ParsedSample {
            family,
            labels,
            value: point.value,
            timestamp_ms: point.timestamp_ms,
            exemplar: point.exemplar,
            histogram: point.histogram,
        });
    }
}

/// Label sets of recently scraped series, keyed by a seeded fingerprint of their raw text in
/// the body.
///
/// A target exposes the same series text scrape after scrape, so a hit skips unescaping,
/// validation and sorting, and shares one `Labels` across scrapes. Entries not seen in
/// the last two successful scrapes are dropped, so the cache tracks the target's series.
#[derive(Debug, Default)]
pub struct SeriesCache {
    entries: Table<CacheEntry>,
    /// Counts parses (wrapping), enough to tell "seen in the last two".
    generation: u32,
}

#[derive(Debug)]
struct CacheEntry {
    hash: u64,
    labels: Labels,
    check: u32,
    seen: u32,
}

impl Keyed for CacheEntry {
    fn key(&self) -> SeriesKey {
        SeriesKey {
            hash: self.hash,
            check: self.check,
        }
    }
}

impl SeriesCache {
    /// Creates an empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of cached series.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Tells whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.len() == 0
    }

    /// Drops the entries not seen in the last two parses.
    fn sweep(&mut self) {
        let now = self.generation;
        // Wrapping: a generation counter that overflows still tells the last two apart.
        self.entries.retain(|e| now.wrapping_sub(e.seen) <= 1);
    }
}

/// Which label value Prometheus rewrites into canonical float form for a family type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Norm {
    None,
    Le,
    Quantile,
}

impl Norm {
    fn for_kind(kind: FamilyType) -> Norm {
        match kind {
            FamilyType::Histogram => Norm::Le,
            FamilyType::Summary => Norm::Quantile,
            _ => Norm::None,
        }
    }

    fn label(self) -> Option<&'static str> {
        match self {
            Norm::None => None,
            Norm::Le => Some("le"),
            Norm::Quantile => Some("quantile"),
        }
    }
}

/// A label as it appears in a line: spans into the line, still escaped.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RawLabel<'a> {
    /// The name; escaped content of a quoted name when `quoted`.
    name: &'a str,
    quoted: bool,
    /// Byte offset of the name in the line, for errors.
    pos: usize,
    /// Escaped content of the quoted value.
    value: &'a str,
}

/// A problem at a byte offset of the current line; the driver adds line and column.
#[derive(Debug)]
pub(crate) struct LineError {
    pos: usize,
    kind: ParseErrorKind,
}

impl LineError {
    fn at(self, line_no: usize, line: &str) -> ParseError {
        let column = line.get(..self.pos).map_or(self.pos, |s| s.chars().count()) + 1;
        ParseError::At {
            line: line_no,
            column,
            kind: self.kind,
        }
    }
}

type LineResult<T> = Result<T, LineError>;

/// Collects families while a parser walks the body, and hands its samples to a [`Sink`].
pub(crate) struct Builder<'s, S: Sink> {
    families: Vec<ParsedFamily>,
    /// The family of the latest metadata line; series that fit its suffix rules join it.
    meta_family: Option<usize>,
    /// The family made up for the latest series without metadata.
    implicit_family: Option<usize>,
    sink: &'s mut S,
    /// Whether `le`/`quantile` values are made canonical floats.
    normalize: bool,
}

impl<'s, S: Sink> Builder<'s, S> {
    fn new(sink: &'s mut S) -> Self {
        Builder {
            families: Vec::new(),
            meta_family: None,
            implicit_family: None,
            sink,
            normalize: true,
        }
    }

    /// The family a metadata line for `name` describes: the current one if it has that name.
    fn meta(&mut self, name: &str) -> Option<&mut ParsedFamily> {
        let idx = match self.meta_family {
            Some(i) if self.families.get(i).is_some_and(|f| f.name == name) => i,
            _ => self.push_family(name),
        };
        self.meta_family = Some(idx);
        self.implicit_family = None;
        self.families.get_mut(idx)
    }

    fn push_family(&mut self, name: &str) -> usize {
        self.families.push(ParsedFamily {
            name: name.to_string(),
            kind: FamilyType::Unknown,
            help: None,
            unit: None,
        });
        self.families.len() - 1
    }

    fn family_for(&mut self, series: &str) -> usize {
        if let Some(i) = self.meta_family {
            if let Some(f) = self.families.get(i) {
                if f.kind.is_member(&f.name, series) {
                    return i;
                }
            }
        }
        if let Some(i) = self.implicit_family {
            if self.families.get(i).is_some_and(|f| f.name == series) {
                return i;
            }
        }
        let i = self.push_family(series);
        self.implicit_family = Some(i);
        i
    }

    /// The norm `le`/`quantile` values of a series in family `family` get.
    fn norm_of(&self, family: usize) -> Norm {
        let kind = self
            .families
            .get(family)
            .map_or(FamilyType::Unknown, |f| f.kind);
        if self.normalize {
            Norm::for_kind(kind)
        } else {
            Norm::None
        }
    }

    /// Looks up a series' raw text (name and braces) in the sink's cache: a hit stands for
    /// the very same text, which parsed in a recent scrape, so its labels need not be lexed
    /// (a parser may ask before lexing them) or built again. A miss carries the text's key,
    /// for [`Builder::sample`] to add the series under (a default key when the sink does not
    /// cache, which no lookup needed).
    fn cached(&mut self, raw: &str, name: &str) -> Result<Hit<S::Series>, SeriesKey> {
        let family = self.family_for(name);
        if !self.sink.caches() {
            return Err(SeriesKey::default());
        }
        let key = SeriesKey::of(raw, self.norm_of(family));
        match self.sink.find(key) {
            Some(series) => Ok(Hit { family, series }),
            None => Err(key),
        }
    }

    /// Records one sample; `raw` is the series text (name and braces) used as cache key.
    /// `missed`: the key of this text, when the parser already asked [`Builder::cached`] and
    /// missed, so the label set is built without a second lookup or fingerprint.
    fn sample(
        &mut self,
        raw: &str,
        name: &str,
        name_pos: usize,
        labels: &[RawLabel<'_>],
        point: Point,
        missed: Option<SeriesKey>,
    ) -> LineResult<()> {
        let key = match missed {
            Some(key) => key,
            None => match self.cached(raw, name) {
                Ok(hit) => {
                    self.push(hit, point);
                    return Ok(());
                }
                Err(key) => key,
            },
        };
        let family = self.family_for(name);
        let norm = self.norm_of(family);
        let parsed = series_labels(name, name_pos, labels, norm)?;
        let series = self.sink.add(key, parsed);
        self.sink.push(family, series, point);
        Ok(())
    }

    /// Records a sample of a series already looked up.
    fn push(&mut self, hit: Hit<S::Series>, point: Point) {
        self.sink.push(hit.family, hit.series, point);
    }
}

/// What a sample line says besides its series.
pub(crate) struct Point {
    value: f64,
    timestamp_ms: Option<i64>,
    exemplar: Option<Box<Exemplar>>,
    /// A native histogram sample's histogram (`value` is then the marker NaN).
    histogram: Option<std::sync::Arc<crate::series::native::NativeHistogram>>,
}

impl Point {
    /// A value with its optional timestamp and exemplar.
    pub(crate) fn new(
        value: f64,
        timestamp_ms: Option<i64>,
        exemplar: Option<Box<Exemplar>>,
    ) -> Point {
        Point {
            value,
            timestamp_ms,
            exemplar,
            histogram: None,
        }
    }
}

/// A series' family and what its text stands for, as found in the sink's cache.
pub(crate) struct Hit<T> {
    family: usize,
    series: T,
}

/// Builds a series' label set from its name and raw labels.
fn series_labels(
    name: &str,
    name_pos: usize,
    raw: &[RawLabel<'_>],
    norm: Norm,
) -> LineResult<Labels> {
    check_quoted_names(raw)?;
    // Feeding the pairs straight into the label model saves a temporary vector per series.
    let pairs = std::iter::once((Cow::Borrowed(METRIC_NAME_LABEL), Cow::Borrowed(name)))
        .chain(raw.iter().map(|l| pair(l, norm)));
    Labels::from_pairs(pairs).map_err(|e| label_error(e, Some(name_pos), raw))
}

/// Builds an exemplar's label set.
fn exemplar_labels(raw: &[RawLabel<'_>]) -> LineResult<Labels> {
    check_quoted_names(raw)?;
    Labels::from_pairs(raw.iter().map(|l| pair(l, Norm::None)))
        .map_err(|e| label_error(e, None, raw))
}

/// Quoted label names may hold anything; the label model takes only legacy names.
fn check_quoted_names(raw: &[RawLabel<'_>]) -> LineResult<()> {
    for l in raw.iter().filter(|l| l.quoted) {
        let n = lex::unescape(l.name, false);
        if !crate::series::is_valid_label_name(&n) {
            return Err(LineError {
                pos: l.pos,
                kind: ParseErrorKind::InvalidName(n.into_owned()),
            });
        }
    }
    Ok(())
}

/// The unescaped name and value of a raw label, `le`/`quantile` made canonical per `norm`.
fn pair<'a>(l: &RawLabel<'a>, norm: Norm) -> (Cow<'a, str>, Cow<'a, str>) {
    let name = if l.quoted {
        lex::unescape(l.name, false)
    } else {
        Cow::Borrowed(l.name)
    };
    let mut value = lex::unescape(l.value, false);
    if norm.label() == Some(&*name) {
        if let Some(v) = lex::canonical_float_label(&value) {
            value = Cow::Owned(v);
        }
    }
    (name, value)
}

/// Maps a label-model refusal to the position of the offending label.
fn label_error(e: LabelError, name_pos: Option<usize>, raw: &[RawLabel<'_>]) -> LineError {
    let named = |target: &str, nth: usize| -> usize {
        let mut seen = 0;
        if target == METRIC_NAME_LABEL {
            if let Some(p) = name_pos {
                if seen == nth {
                    return p;
                }
                seen += 1;
            }
        }
        for l in raw {
            let n = if l.quoted {
                lex::unescape(l.name, false)
            } else {
                Cow::Borrowed(l.name)
            };
            if n == target {
                if seen == nth {
                    return l.pos;
                }
                seen += 1;
            }
        }
        name_pos.unwrap_or(0)
    };
    match e {
        LabelError::Duplicate(n) => LineError {
            pos: named(&n, 1),
            kind: ParseErrorKind::DuplicateLabel(n),
        },
        LabelError::InvalidName(n) => LineError {
            pos: named(&n, 0),
            kind: ParseErrorKind::InvalidName(n),
        },
        LabelError::InvalidMetricName(v) => LineError {
            pos: named(METRIC_NAME_LABEL, 0),
            kind: ParseErrorKind::InvalidName(v),
        },
        LabelError::MissingName => LineError {
            pos: 0,
            kind: ParseErrorKind::MissingName,
        },
    }
}

#[cfg(test)]
mod tests;
