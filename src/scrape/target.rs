//! One scrape target's state and Prometheus' scrape semantics, as a pure function of the
//! bodies it is fed: target labels and `exported_` renaming, metric relabeling, the sample
//! limit, per-series timestamp order, staleness markers and the report series (`up`, …).
//!
//! The HTTP side lives in [`super::scraper`]; everything here is deterministic, so each rule is
//! unit-tested by feeding bodies and timestamps.
//!
//! A target keeps one record per series it exposes (`Series`): the label set the series
//! is forwarded with (after target labels and relabeling), computed once when the text first
//! appears, and the series' history (last sample, staleness state). The parser resolves each
//! sample's text to its record through the record's key, so a steady-state scrape costs one
//! fingerprint and one lookup per sample, and a target holds one label set per series.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hashbrown::HashTable;

pub use self::shared::JobSets;
use self::shared::SharedNames;
use super::body::DecodeError;
use super::relabel::{relabel, RelabelRule};
use super::table::{Keyed, SeriesKey, Table};
use super::{parse_bytes_into, Format, ParseError, ParsedFamily, Point, Sink};
use crate::series::native::NativeHistogram;
use crate::series::{stale_nan, Labels, PassThrough, Sample, METRIC_NAME_LABEL, STALE_NAN_BITS};

/// Prefix Prometheus gives an exposed label that clashes with a target label.
pub const EXPORTED_PREFIX: &str = "exported_";

/// The report series every scrape yields, in this order.
pub const REPORT_SERIES: [&str; 5] = [
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
];

/// How a target's samples are treated.
#[derive(Clone, Debug)]
pub struct TargetOptions {
    /// Exposed labels win over target labels (no `exported_` renaming).
    pub honor_labels: bool,
    /// Exposed timestamps are kept; otherwise every sample gets the scrape's time.
    pub honor_timestamps: bool,
    /// Most samples kept after relabeling; more fails the scrape. 0: no limit.
    pub sample_limit: usize,
    /// Metric relabel rules, applied after the target labels are attached.
    pub rules: Arc<[RelabelRule]>,
    /// `le`/`quantile` values become canonical floats (`1` → `1.0`), as in Prometheus 3.
    pub normalize_le_quantile: bool,
    /// A native histogram's classic buckets are kept beside it (protobuf format).
    pub keep_classic_histograms: bool,
    /// The own label sets the job's targets keep once between them.
    pub job_sets: Arc<JobSets>,
}

impl Default for TargetOptions {
    /// Prometheus' defaults: target labels win, exposed timestamps are kept, no limit, no
    /// rules, canonical `le`/`quantile`.
    fn default() -> Self {
        TargetOptions {
            honor_labels: false,
            honor_timestamps: true,
            sample_limit: 0,
            rules: Arc::from(Vec::new()),
            normalize_le_quantile: true,
            keep_classic_histograms: false,
            job_sets: Arc::default(),
        }
    }
}

/// Why a scrape failed (`up` = 0).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ScrapeError {
    /// The request failed or answered with a non-2xx status.
    #[error("{0}")]
    Http(String),
    /// The body is larger than `body_size_limit`.
    #[error("body exceeds body_size_limit of {limit} bytes")]
    BodyTooLarge {
        /// The limit.
        limit: u64,
    },
    /// The body could not be decoded: a coding not asked for, corrupt gzip, or gzip that
    /// decodes past `body_size_limit`.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The deadline passed before the body was read.
    #[error("scrape timed out after {0:?}")]
    Timeout(Duration),
    /// The body is not a valid exposition.
    #[error("parse error: {0}")]
    Parse(#[from] ParseError),
    /// More samples than `sample_limit` after relabeling.
    #[error("{samples} samples after relabeling exceed sample_limit {limit}")]
    SampleLimit {
        /// Samples after relabeling.
        samples: usize,
        /// The limit.
        limit: usize,
    },
}

impl ScrapeError {
    /// A short fixed name for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            ScrapeError::Http(_) => "http",
            ScrapeError::BodyTooLarge { .. }
            | ScrapeError::Decode(DecodeError::TooLarge { .. }) => "body_size_limit",
            // The answer's content coding is part of the HTTP exchange.
            ScrapeError::Decode(DecodeError::Corrupt(_) | DecodeError::Unsupported(_)) => "http",
            ScrapeError::Timeout(_) => "timeout",
            ScrapeError::Parse(_) => "parse",
            ScrapeError::SampleLimit { .. } => "sample_limit",
        }
    }
}

/// Samples a scrape parsed but did not forward, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rejected {
    /// Older than the series' previous sample.
    pub out_of_order: usize,
    /// Same timestamp as the series' previous sample with another value.
    pub duplicate_timestamp: usize,
    /// No `__name__` left after relabeling.
    pub no_metric_name: usize,
}

/// What one scrape did, for the report series, logs and self-metrics.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScrapeSummary {
    /// `None` when the scrape succeeded.
    pub error: Option<ScrapeError>,
    /// Samples in the body (`scrape_samples_scraped`).
    pub scraped: usize,
    /// Samples left after relabeling (`scrape_samples_post_metric_relabeling`).
    pub post_relabel: usize,
    /// Series not present in the previous scrape (`scrape_series_added`).
    pub series_added: usize,
    /// Staleness markers written for series that disappeared.
    pub stale_markers: usize,
    /// Samples dropped individually.
    pub rejected: Rejected,
}

impl ScrapeSummary {
    /// Whether the scrape succeeded (`up` = 1).
    pub fn up(&self) -> bool {
        self.error.is_none()
    }
}

/// What a series text's samples become.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    /// Forwarded.
    Kept,
    /// Dropped by metric relabeling; counted only in `scrape_samples_scraped`.
    Dropped,
    /// Rejected: no `__name__` left after relabeling.
    NoName,
}

/// One series text a target exposes, and the output series it stands for. One record serves
/// as the parser's cache entry and the series' history, found through one index: 40 bytes
/// where a cache entry and a slot, each with an index, took about 85.
#[derive(Debug)]
struct Series {
    /// The text's [`SeriesKey`], in two fields so that the record packs without padding.
    hash: u64,
    check: u32,
    /// The output label set; `None` unless `fate` is [`Fate::Kept`].
    labels: Option<Labels>,
    fate: Fate,
    /// Timestamp of the last sample forwarded; [`NO_SAMPLE`] before the first. (Not an
    /// `Option`, which would add 8 bytes to each of a target's many series.)
    last_ts: i64,
    /// Value bits of the last sample forwarded; [`STALE_NAN_BITS`] once the series ended
    /// with a staleness marker.
    last_bits: u64,
    /// [`SEEN`], [`TRACKED`], [`TRACKING`], [`ENDED`]: bits rather than generation numbers,
    /// 8 bytes less a series, and nothing to go wrong when a counter wraps.
    state: u8,
}

/// State bit: the series' text, or another text of it, is in the scrape being ingested.
const SEEN: u8 = 1;
/// State bit: the series had a sample that counts for staleness in the latest scrape, so it
/// gets a staleness marker when it ends. Samples with explicit timestamps do not count, as
/// Prometheus leaves such series out of staleness.
const TRACKED: u8 = 2;
/// State bit: like [`TRACKED`], for the scrape being ingested.
const TRACKING: u8 = 4;
/// State bit: a failed scrape ended the series without a staleness marker (it had only
/// explicit timestamps), so `last_ts`/`last_bits` are still its last real sample: re-exposed
/// unchanged, it is neither sent again nor a clash.
const ENDED: u8 = 8;

impl Keyed for Series {
    fn key(&self) -> SeriesKey {
        SeriesKey {
            hash: self.hash,
            check: self.check,
        }
    }
}

/// A further text of a kept series: the same label set exposed in another label order or
/// escaping, or made equal by relabeling. Its samples go to the series of the text `primary`.
#[derive(Debug)]
struct Alias {
    primary: SeriesKey,
    /// Generation in which this text was last exposed.
    seen: u32,
}

/// The generation after `g`. Generations count scrapes, for telling which further texts of a
/// series are still exposed, and skip 0 when they wrap.
fn next(g: u32) -> u32 {
    g.wrapping_add(1).max(1)
}

/// How long an ended series' last timestamp is remembered (see `TargetState::ended`): as long
/// as a Prometheus head block keeps a series, after which a receiver refuses samples that old
/// anyway.
pub const TOMBSTONE_MS: i64 = 3_600_000;

/// `Series::last_ts` of a series with no sample yet. A real timestamp this far before 1970
/// would only count its series as new again.
const NO_SAMPLE: i64 = i64::MIN;

impl Series {
    /// Timestamp and value bits of the last sample forwarded, if any.
    fn last(&self) -> Option<(i64, u64)> {
        (self.last_ts != NO_SAMPLE).then_some((self.last_ts, self.last_bits))
    }

    /// Whether the series ends with a staleness marker now: tracked in the latest scrape,
    /// and not (or not yet) in the one being ingested.
    fn goes_stale(&self) -> bool {
        self.state & (TRACKED | TRACKING) == TRACKED
    }

    /// What was last sent for the series once it ended: its staleness marker's timestamp if
    /// it got one, else its last sample's.
    fn last_sent(&self, marker: Option<i64>) -> Option<i64> {
        marker.or(self.last().map(|(ts, _)| ts))
    }
}

/// Remembers what was last sent for a series whose record goes away (see
/// [`Series::last_sent`]), so it cannot go back in time if it returns.
fn bury(ended: &mut HashMap<u64, i64, PassThrough>, series: &Series, marker: Option<i64>) {
    if let (Some(labels), Some(ts)) = (&series.labels, series.last_sent(marker)) {
        ended.insert(labels.content_hash(), ts);
    }
}

/// The state of one target between scrapes.
#[derive(Debug)]
pub struct TargetState {
    target_labels: Labels,
    opts: TargetOptions,
    /// Series by the text they are exposed as.
    series: Table<Series>,
    /// Further texts of kept series, by their key (rare: most exporters write a series one
    /// way).
    aliases: HashMap<SeriesKey, Alias>,
    /// Label sets the series share.
    names: SharedNames,
    /// Series that ended (stopped being exposed), by label-set hash: the last timestamp sent
    /// for each, so a series that comes back with an older explicit timestamp cannot go back
    /// in time. Kept for [`TOMBSTONE_MS`].
    ended: HashMap<u64, i64, PassThrough>,
    /// Advanced at every scrape (see [`next`]); 0 means "never".
    generation: u32,
    /// Kept series exposed in the latest scrape; 0 after a failed one.
    live: usize,
    report: [Labels; 5],
    /// Timestamp of the latest report series, if any were written (shutdown marks them
    /// stale).
    reported: Option<i64>,
}

impl TargetState {
    /// Creates the state of a target with `target_labels` (`job`, `instance`, extra labels).
    pub fn new(target_labels: Labels, opts: TargetOptions) -> TargetState {
        let report = REPORT_SERIES.map(|name| {
            target_labels
                .with(METRIC_NAME_LABEL, name)
                .with_shared_base(&target_labels)
        });
        let names = SharedNames::new(&opts.job_sets);
        TargetState {
            target_labels,
            opts,
            series: Table::default(),
            aliases: HashMap::new(),
            names,
            ended: HashMap::default(),
            generation: 0,
            live: 0,
            report,
            reported: None,
        }
    }

    /// The target labels.
    pub fn target_labels(&self) -> &Labels {
        &self.target_labels
    }

    /// Series currently tracked (exposed in the latest scrape, which succeeded).
    pub fn series(&self) -> usize {
        self.live
    }

    /// Ingests a successful response: appends its samples and the staleness markers of
    /// series that disappeared to `out`, and returns the summary and the body's families
    /// (for metadata). A body that does not parse, or breaks the sample limit, fails the
    /// scrape as [`TargetState::fail`] does. Call [`TargetState::report`] afterwards.
    pub fn ingest(
        &mut self,
        body: &[u8],
        content_type: Option<&str>,
        scrape_ts: i64,
        out: &mut Vec<Sample>,
    ) -> (ScrapeSummary, Vec<ParsedFamily>) {
        // Prometheus reads an unknown or missing content type as the text format.
        let ct = content_type.filter(|ct| Format::from_content_type(ct).is_some());
        let generation = next(self.generation);
        // First pass, the parse: what each sample's series is, without touching any series'
        // history, so a scrape that fails (bad line, sample limit) leaves nothing
        // half-applied.
        let mut intake = Intake {
            target_labels: &self.target_labels,
            opts: &self.opts,
            series: &mut self.series,
            aliases: &mut self.aliases,
            names: &mut self.names,
            ended: &mut self.ended,
            by_labels: None,
            generation,
            // Sized from the last scrape, so a steady target's list is not grown and copied
            // through every power of two each scrape.
            samples: Vec::with_capacity(self.live.saturating_add(self.live / 16)),
            limit: match self.opts.sample_limit {
                0 => usize::MAX,
                n => n,
            },
            histograms: Vec::new(),
            over_limit: 0,
            dropped: 0,
            no_name: 0,
        };
        let parsed = parse_bytes_into(
            body,
            ct,
            self.opts.normalize_le_quantile,
            self.opts.keep_classic_histograms,
            &mut intake,
        );
        let Intake {
            samples,
            histograms,
            over_limit,
            dropped,
            no_name,
            ..
        } = intake;
        let families = match parsed {
            Ok(families) => families,
            Err(e) => return (self.fail(ScrapeError::Parse(e), scrape_ts, out), Vec::new()),
        };
        let mut summary = ScrapeSummary {
            scraped: samples.len() + over_limit + dropped + no_name,
            post_relabel: samples.len() + over_limit,
            ..ScrapeSummary::default()
        };
        summary.rejected.no_metric_name = no_name;
        let limit = self.opts.sample_limit;
        if limit > 0 && summary.post_relabel > limit {
            let err = ScrapeError::SampleLimit {
                samples: summary.post_relabel,
                limit,
            };
            let mut failed = self.fail(err, scrape_ts, out);
            failed.scraped = summary.scraped;
            failed.post_relabel = summary.post_relabel;
            failed.rejected = summary.rejected;
            return (failed, Vec::new());
        }
        self.generation = generation;

        // Second pass: timestamp order per series, then forward.
        // Room for the report series too, which `report` appends after this.
        out.reserve(summary.post_relabel + REPORT_SERIES.len());
        let mut histograms = histograms.into_iter().peekable();
        for (i, p) in samples.iter().enumerate() {
            let histogram = histograms.next_if(|(at, _)| *at == i).map(|(_, h)| h);
            let Some(series) = self.series.get_mut(p.series) else {
                continue;
            };
            let explicit = self.opts.honor_timestamps && p.timestamp_ms.is_some();
            let ts = if explicit {
                p.timestamp_ms.unwrap_or(scrape_ts)
            } else {
                scrape_ts
            };
            let bits = p.value.to_bits();
            let new_series = series.state & ENDED != 0
                || series.last().is_none_or(|(_, bits)| bits == STALE_NAN_BITS);
            match series.last() {
                Some((last_ts, _)) if ts < last_ts => {
                    summary.rejected.out_of_order += 1;
                    continue;
                }
                // The receiver already has this exact sample (an exporter re-exposing a
                // fixed timestamp); sending it again could only earn a rejection.
                Some((last_ts, last_bits)) if ts == last_ts => {
                    if last_bits != bits {
                        summary.rejected.duplicate_timestamp += 1;
                        continue;
                    }
                    if !explicit {
                        series.state |= TRACKING;
                    }
                    continue;
                }
                _ => {}
            }
            let Some(labels) = &series.labels else {
                continue;
            };
            out.push(match histogram {
                Some(h) => Sample::native(labels, h, ts),
                None => Sample {
                    labels: labels.clone(),
                    value: p.value,
                    timestamp_ms: ts,
                },
            });
            series.last_ts = ts;
            series.last_bits = bits;
            if !explicit {
                series.state |= TRACKING;
            }
            if new_series {
                summary.series_added += 1;
            }
            series.state &= !ENDED;
        }
        summary.stale_markers = self.end_generation(scrape_ts, out);
        (summary, families)
    }

    /// Records a failed scrape: staleness markers for every series of the previous scrape,
    /// which all end, as Prometheus appends an empty scrape on failure. Call
    /// [`TargetState::report`] afterwards (`up` = 0).
    ///
    /// The records stay, as the parser's cache for when the target recovers: each ends in
    /// place, and goes if the next good scrape does not expose it. A series that got a marker
    /// remembers the marker as what was last sent; one with explicit timestamps (outside
    /// staleness) keeps its last sample, so the same sample exposed again is not sent twice.
    /// Either counts as added when it next forwards a sample.
    pub fn fail(
        &mut self,
        error: ScrapeError,
        scrape_ts: i64,
        out: &mut Vec<Sample>,
    ) -> ScrapeSummary {
        self.generation = next(self.generation);
        let mut stale_markers = 0;
        for series in self.series.iter_mut() {
            // Also what a failed parse saw: none of it counts.
            match stale_marker(series, scrape_ts) {
                Some(m) => {
                    series.last_ts = m.timestamp_ms;
                    series.last_bits = STALE_NAN_BITS;
                    series.state = 0;
                    out.push(m);
                    stale_markers += 1;
                }
                // The last sample stays what was last sent: the same sample exposed again
                // must not look like a second value for its timestamp.
                None if series.last().is_some() => series.state = ENDED,
                None => series.state = 0,
            }
        }
        self.live = 0;
        ScrapeSummary {
            error: Some(error),
            stale_markers,
            ..ScrapeSummary::default()
        }
    }

    /// Appends the report series of a scrape that started at `scrape_ts` and took `duration`.
    pub fn report(
        &mut self,
        summary: &ScrapeSummary,
        scrape_ts: i64,
        duration: Duration,
        out: &mut Vec<Sample>,
    ) {
        let values = [
            if summary.up() { 1.0 } else { 0.0 },
            duration.as_secs_f64(),
            summary.scraped as f64,
            summary.post_relabel as f64,
            summary.series_added as f64,
        ];
        for (labels, value) in self.report.iter().zip(values) {
            out.push(Sample {
                labels: labels.clone(),
                value,
                timestamp_ms: scrape_ts,
            });
        }
        self.reported = Some(scrape_ts);
    }

    /// The target is going away (shutdown): staleness markers at `ts` for every series of
    /// the latest scrape and for the report series, so dashboards stop at once instead of
    /// showing the last values for five minutes.
    pub fn end(&mut self, ts: i64, out: &mut Vec<Sample>) -> usize {
        let mut n = self.mark_stale(ts, out);
        if let Some(last) = self.reported {
            for labels in &self.report {
                out.push(Sample {
                    labels: labels.clone(),
                    value: stale_nan(),
                    timestamp_ms: ts.max(last.saturating_add(1)),
                });
                n += 1;
            }
        }
        self.series.clear();
        self.aliases.clear();
        self.names.clear();
        self.live = 0;
        self.reported = None;
        n
    }

    /// Ends the scrape: staleness markers for series tracked in the previous scrape but not
    /// in this one, and forgetting series no longer exposed.
    fn end_generation(&mut self, ts: i64, out: &mut Vec<Sample>) -> usize {
        let generation = self.generation;
        let markers = self.mark_stale(ts, out);
        let ended = &mut self.ended;
        let mut live = 0;
        self.series.retain(|series| {
            if series.state & SEEN == 0 {
                // Its marker, if it got one, went out just above, at `stale_ts`.
                let marked_at = series.goes_stale().then(|| stale_ts(series, ts));
                bury(ended, series, marked_at);
                return false;
            }
            // An ended series stays so until it forwards a sample again.
            series.state = (series.state & ENDED)
                | if series.state & TRACKING != 0 {
                    TRACKED
                } else {
                    0
                };
            if series.fate == Fate::Kept {
                live += 1;
            }
            true
        });
        self.aliases.retain(|_, a| a.seen == generation);
        self.names.sweep();
        self.live = live;
        let horizon = ts.saturating_sub(TOMBSTONE_MS);
        self.ended.retain(|_, last| *last >= horizon);
        markers
    }

    /// Staleness markers for every series that goes stale now (see [`stale_marker`]).
    fn mark_stale(&self, ts: i64, out: &mut Vec<Sample>) -> usize {
        let before = out.len();
        out.extend(self.series.iter().filter_map(|s| stale_marker(s, ts)));
        out.len() - before
    }
}

/// A target's side of the parse: resolves each series text to its record, making records
/// for new texts (their output label set computed once, here), and collects the samples.
struct Intake<'a> {
    target_labels: &'a Labels,
    opts: &'a TargetOptions,
    series: &'a mut Table<Series>,
    aliases: &'a mut HashMap<SeriesKey, Alias>,
    names: &'a mut SharedNames,
    ended: &'a mut HashMap<u64, i64, PassThrough>,
    /// Kept series by label-set hash, built at the first new text of a scrape: only a new
    /// text needs to know whether its label set is already a series.
    by_labels: Option<HashTable<u32>>,
    generation: u32,
    /// The kept samples, in body order, up to `limit`.
    samples: Vec<Pending>,
    /// `sample_limit`, `usize::MAX` for none.
    limit: usize,
    /// Kept samples past `limit`: only counted, and their series get no record, so a body
    /// far over the limit costs no more memory than one at it.
    over_limit: usize,
    /// Native histograms of kept samples, by index in `samples`, in order: few beside the
    /// float samples, so kept apart rather than widening every pending sample.
    histograms: Vec<(usize, Arc<NativeHistogram>)>,
    /// Samples of series relabeling dropped.
    dropped: usize,
    /// Samples of series relabeling left without a name.
    no_name: usize,
}

/// A kept sample waiting for the second pass.
struct Pending {
    /// Index of its series' record.
    series: u32,
    value: f64,
    timestamp_ms: Option<i64>,
}

/// Records past `u32::MAX` cannot be stored; their samples are dropped (see [`Table::insert`]).
const NO_RECORD: u32 = u32::MAX;

/// A kept series first seen once the scrape is past its sample limit: it gets no record, and
/// its samples are only counted. (A limit is far below the records this would collide with.)
const PAST_LIMIT: u32 = u32::MAX - 1;

impl Intake<'_> {
    /// The kept series whose output label set is `labels`, if there is one.
    fn series_with(&mut self, labels: &Labels) -> Option<u32> {
        let series = &*self.series;
        let index = self.by_labels.get_or_insert_with(|| {
            let mut index = HashTable::with_capacity(series.len());
            for (i, s) in series.iter().enumerate() {
                if let Some(l) = &s.labels {
                    index.insert_unique(l.content_hash(), i as u32, |&j| labels_hash(series, j));
                }
            }
            index
        });
        index
            .find(labels.content_hash(), |&j| {
                series.get(j).and_then(|s| s.labels.as_ref()) == Some(labels)
            })
            .copied()
    }
}

impl Sink for Intake<'_> {
    type Series = u32;

    fn caches(&self) -> bool {
        true
    }

    fn find(&mut self, key: SeriesKey) -> Option<u32> {
        let generation = self.generation;
        if let Some(i) = self.series.find(key) {
            if let Some(s) = self.series.get_mut(i) {
                s.state |= SEEN;
            }
            return Some(i);
        }
        let alias = self.aliases.get_mut(&key)?;
        // A series whose first text went away is looked up afresh by its label set.
        let i = self.series.find(alias.primary)?;
        alias.seen = generation;
        if let Some(s) = self.series.get_mut(i) {
            s.state |= SEEN;
        }
        Some(i)
    }

    fn add(&mut self, key: SeriesKey, parsed: Labels) -> u32 {
        // The parser adds under the very key `find` just missed, so no record has it: the
        // insert below never replaces a series' history.
        debug_assert!(self.series.find(key).is_none(), "add after a hit");
        let generation = self.generation;
        let (fate, labels) = match output_labels(&parsed, self.target_labels, self.opts) {
            None => (Fate::Dropped, None),
            Some(l) if !l.has_metric_name() => (Fate::NoName, None),
            Some(l) => (Fate::Kept, Some(l)),
        };
        if let Some(l) = &labels {
            // The scrape fails anyway: recording the series would only hold its memory.
            if self.samples.len() >= self.limit {
                return PAST_LIMIT;
            }
            // Two texts meeting on one label set are one series.
            if let Some(i) = self.series_with(l) {
                if let Some(s) = self.series.get_mut(i) {
                    s.state |= SEEN;
                    let primary = s.key();
                    self.aliases.insert(
                        key,
                        Alias {
                            primary,
                            seen: generation,
                        },
                    );
                }
                return i;
            }
        }
        // Shared only now that it is a series of its own: an alias's sets would make a name
        // look shared that is not.
        let labels = labels.map(|l| self.names.share(&l, self.target_labels));
        self.aliases.remove(&key);
        // A series that ended recently starts from what was last sent for it, marked as a
        // staleness marker so that it still counts as added.
        let (last_ts, last_bits) = match labels
            .as_ref()
            .and_then(|l| self.ended.remove(&l.content_hash()))
        {
            Some(ts) => (ts, STALE_NAN_BITS),
            None => (NO_SAMPLE, 0),
        };
        let hash = labels.as_ref().map(Labels::content_hash);
        let record = Series {
            hash: key.hash,
            check: key.check,
            labels,
            fate,
            last_ts,
            last_bits,
            state: SEEN,
        };
        let Some(i) = self.series.insert(record) else {
            return NO_RECORD;
        };
        if let (Some(index), Some(hash)) = (self.by_labels.as_mut(), hash) {
            let series = &*self.series;
            index.insert_unique(hash, i, |&j| labels_hash(series, j));
        }
        i
    }

    fn push(&mut self, _family: usize, i: u32, point: Point) {
        if i == PAST_LIMIT && self.limit != usize::MAX {
            self.over_limit += 1;
            return;
        }
        match self.series.get(i).map(|s| s.fate) {
            Some(Fate::Kept) if self.samples.len() >= self.limit => self.over_limit += 1,
            Some(Fate::Kept) => {
                if let Some(h) = point.histogram {
                    self.histograms.push((self.samples.len(), h));
                }
                self.samples.push(Pending {
                    series: i,
                    value: point.value,
                    timestamp_ms: point.timestamp_ms,
                })
            }
            Some(Fate::Dropped) | None => self.dropped += 1,
            Some(Fate::NoName) => self.no_name += 1,
        }
    }
}

/// The staleness marker of `series` if it goes stale now ([`Series::goes_stale`]): at `ts`,
/// or just after the series' last sample if that is later, as a marker must not share a
/// timestamp with a real sample or the receiver refuses it as a duplicate.
fn stale_marker(series: &Series, ts: i64) -> Option<Sample> {
    let labels = series.labels.as_ref()?;
    series.goes_stale().then(|| Sample {
        labels: labels.clone(),
        value: stale_nan(),
        timestamp_ms: stale_ts(series, ts),
    })
}

/// The stored hash of record `i`'s label set, which `Intake::by_labels` is hashed by.
fn labels_hash(series: &Table<Series>, i: u32) -> u64 {
    series
        .get(i)
        .and_then(|s| s.labels.as_ref())
        .map_or(0, Labels::content_hash)
}

/// The label set a parsed series is forwarded with; `None` if relabeling drops it.
fn output_labels(parsed: &Labels, target: &Labels, opts: &TargetOptions) -> Option<Labels> {
    let merged = merge_target_labels(parsed, target, opts.honor_labels);
    relabel(&merged, &opts.rules)
}

/// When a staleness marker for `series` goes: at `ts`, or just after the series' last sample
/// if that is later (a series exposed twice in one scrape, once with a future timestamp), so a
/// series' timestamps never go backwards.
fn stale_ts(series: &Series, ts: i64) -> i64 {
    series
        .last()
        .map_or(ts, |(last, _)| ts.max(last.saturating_add(1)))
}

/// Attaches the target labels to an exposed series as Prometheus does: with `honor`, exposed
/// labels win; otherwise target labels win and each clashing exposed label is kept as
/// `exported_<name>` (`exported_exported_<name>` if that is taken too, …).
pub fn merge_target_labels(exposed: &Labels, target: &Labels, honor: bool) -> Labels {
    let mut out = exposed.clone();
    if honor {
        for l in target.iter() {
            if exposed.get(l.name).is_none() {
                out = out.with(l.name, l.value);
            }
        }
        return out;
    }
    let mut clashes: Vec<(&str, &str)> = Vec::new();
    for l in target.iter() {
        if let Some(v) = exposed.get(l.name) {
            clashes.push((l.name, v));
        }
        out = out.with(l.name, l.value);
    }
    // Shorter names first, stably, so `exported_job` is settled before a longer clash
    // could claim it (Prometheus' order).
    clashes.sort_by_key(|(name, _)| name.len());
    for (name, value) in clashes {
        let mut new_name = name.to_string();
        loop {
            new_name.insert_str(0, EXPORTED_PREFIX);
            if out.get(&new_name).is_none() {
                out = out.with(&new_name, value);
                break;
            }
        }
    }
    out
}

mod shared;
#[cfg(test)]
mod tests;
