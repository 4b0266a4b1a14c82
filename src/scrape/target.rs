//! One scrape target's state and Prometheus' scrape semantics, as a pure function of the
//! bodies it is fed: target labels and `exported_` renaming, metric relabeling, the sample
//! limit, per-series timestamp order, staleness markers and the report series (`up`, …).
//!
//! The HTTP side lives in [`super::scraper`]; everything here is deterministic, so each rule is
//! unit-tested by feeding bodies and timestamps.
//!
//! Series are tracked in slots: the label set a parsed series ends up with (after target labels
//! and relabeling) is computed once, when the series first appears, and the parser's
//! [`SeriesCache`] keeps that output label set (not the exposed one) for the series' raw text,
//! so a target holds one label set per series. A steady-state scrape costs a cache hit and one
//! lookup by the label set's stored hash per sample.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hashbrown::HashTable;

use super::relabel::{relabel, RelabelRule};
use super::{parse_bytes_mapped, Format, ParseError, ParsedFamily, SeriesCache};
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
            ScrapeError::BodyTooLarge { .. } => "body_size_limit",
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

/// What a sample's series becomes.
#[derive(Clone, Copy, Debug)]
enum Fate {
    /// Forwarded as the series in this slot.
    Slot(u32),
    /// Rejected: no metric name after relabeling.
    NoName,
}

/// One output series.
#[derive(Debug)]
struct Slot {
    labels: Labels,
    /// Timestamp of the last sample forwarded; [`NO_SAMPLE`] before the first. (Not an
    /// `Option`, which would add 8 bytes to each of a target's many slots.)
    last_ts: i64,
    /// Value bits of the last sample forwarded.
    last_bits: u64,
    /// Generation in which some parsed series last mapped here.
    touched: u32,
    /// Generation in which it last had a sample that counts for staleness (no explicit
    /// timestamp), as Prometheus leaves series with explicit timestamps out of staleness.
    tracked: u32,
}

/// The generation before `g`. Generations count scrapes and skip 0 ("never") when they wrap,
/// so the one before 1 is `u32::MAX`.
fn previous(g: u32) -> u32 {
    if g <= 1 {
        u32::MAX
    } else {
        g - 1
    }
}

/// The generation after `g` (see [`previous`]).
fn next(g: u32) -> u32 {
    g.wrapping_add(1).max(1)
}

/// How long an ended series' last timestamp is remembered (see `TargetState::ended`): as long
/// as a Prometheus head block keeps a series, after which a receiver refuses samples that old
/// anyway.
pub const TOMBSTONE_MS: i64 = 3_600_000;

/// Remembers what was last sent for a series whose slot goes away: its staleness marker's
/// timestamp if it got one, else its last sample's.
fn bury(ended: &mut HashMap<u64, i64, PassThrough>, slot: &Slot, marker: Option<i64>) {
    let last = marker.or(slot.last().map(|(ts, _)| ts));
    if let Some(ts) = last {
        ended.insert(slot.labels.content_hash(), ts);
    }
}

/// `Slot::last_ts` of a series with no sample yet. A real timestamp this far before 1970 would
/// only count its series as new again.
const NO_SAMPLE: i64 = i64::MIN;

impl Slot {
    /// Timestamp and value bits of the last sample forwarded, if any.
    fn last(&self) -> Option<(i64, u64)> {
        (self.last_ts != NO_SAMPLE).then_some((self.last_ts, self.last_bits))
    }
}

/// The state of one target between scrapes.
#[derive(Debug)]
pub struct TargetState {
    target_labels: Labels,
    opts: TargetOptions,
    /// Output label sets by the raw series text they were exposed as.
    cache: SeriesCache,
    /// Slot indices, hashed by their label set's stored hash: an index table rather than a
    /// map keyed by the label set, so that a slot's key costs 4 bytes, not 16.
    by_labels: HashTable<u32>,
    slots: Vec<Option<Slot>>,
    free: Vec<u32>,
    /// Series that ended (went stale or stopped being exposed), by label-set hash: the last
    /// timestamp sent for each, so a series that comes back with an older explicit timestamp
    /// cannot go back in time. Kept for [`TOMBSTONE_MS`].
    ended: HashMap<u64, i64, PassThrough>,
    /// Advanced at every scrape (see [`next`]); 0 means "never".
    generation: u32,
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
        TargetState {
            target_labels,
            opts,
            cache: SeriesCache::new(),
            by_labels: HashTable::new(),
            slots: Vec::new(),
            free: Vec::new(),
            ended: HashMap::default(),
            generation: 0,
            report,
            reported: None,
        }
    }

    /// The target labels.
    pub fn target_labels(&self) -> &Labels {
        &self.target_labels
    }

    /// Series currently tracked (forwarded in the latest scrape).
    pub fn series(&self) -> usize {
        self.by_labels.len()
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
        let normalize = self.opts.normalize_le_quantile;
        let (target_labels, opts) = (&self.target_labels, &self.opts);
        let mut output = |parsed: Labels| output_labels(&parsed, target_labels, opts);
        let exposition = match parse_bytes_mapped(body, ct, &mut self.cache, normalize, &mut output)
        {
            Ok(e) => e,
            Err(e) => return (self.fail(ScrapeError::Parse(e), scrape_ts, out), Vec::new()),
        };
        let before = self.generation;
        self.generation = next(before);
        let generation = self.generation;

        // First pass: what each sample becomes, without touching per-series history, so a
        // scrape over the sample limit leaves nothing half-applied.
        let mut fates: Vec<Option<u32>> = Vec::with_capacity(exposition.samples.len());
        let mut summary = ScrapeSummary {
            scraped: exposition.samples.len() + exposition.dropped,
            ..ScrapeSummary::default()
        };
        for s in &exposition.samples {
            let slot = match self.fate_of(&s.labels, generation) {
                Fate::Slot(i) => Some(i),
                Fate::NoName => {
                    summary.rejected.no_metric_name += 1;
                    None
                }
            };
            if slot.is_some() {
                summary.post_relabel += 1;
            }
            fates.push(slot);
        }
        let limit = self.opts.sample_limit;
        if limit > 0 && summary.post_relabel > limit {
            let err = ScrapeError::SampleLimit {
                samples: summary.post_relabel,
                limit,
            };
            // `fail` starts a generation of its own; undo this one so the staleness rule
            // ("tracked in the previous generation") still sees the last good scrape.
            self.generation = before;
            let mut failed = self.fail(err, scrape_ts, out);
            failed.scraped = summary.scraped;
            failed.post_relabel = summary.post_relabel;
            failed.rejected = summary.rejected;
            return (failed, Vec::new());
        }

        // Second pass: timestamp order per series, then forward.
        // Room for the report series too, which `report` appends after this.
        out.reserve(summary.post_relabel + REPORT_SERIES.len());
        for (s, slot) in exposition.samples.iter().zip(&fates) {
            let Some(i) = *slot else { continue };
            let Some(Some(slot)) = self.slots.get_mut(i as usize) else {
                continue;
            };
            let explicit = self.opts.honor_timestamps && s.timestamp_ms.is_some();
            let ts = if explicit {
                s.timestamp_ms.unwrap_or(scrape_ts)
            } else {
                scrape_ts
            };
            let bits = s.value.to_bits();
            let new_series = slot.last().is_none_or(|(_, bits)| bits == STALE_NAN_BITS);
            match slot.last() {
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
                        slot.tracked = generation;
                    }
                    continue;
                }
                _ => {}
            }
            slot.last_ts = ts;
            slot.last_bits = bits;
            if !explicit {
                slot.tracked = generation;
            }
            if new_series {
                summary.series_added += 1;
            }
            out.push(Sample {
                labels: slot.labels.clone(),
                value: s.value,
                timestamp_ms: ts,
            });
        }
        summary.stale_markers = self.end_generation(scrape_ts, out);
        (summary, exposition.families)
    }

    /// Records a failed scrape: staleness markers for every series of the previous scrape,
    /// and a clean slate, as Prometheus appends an empty scrape on failure. Call
    /// [`TargetState::report`] afterwards (`up` = 0).
    pub fn fail(
        &mut self,
        error: ScrapeError,
        scrape_ts: i64,
        out: &mut Vec<Sample>,
    ) -> ScrapeSummary {
        let tracked_in = self.generation;
        self.generation = next(self.generation);
        let mut stale_markers = 0;
        for slot in self.slots.iter().flatten() {
            let marker = stale_marker(slot, tracked_in, scrape_ts);
            bury(
                &mut self.ended,
                slot,
                marker.as_ref().map(|m| m.timestamp_ms),
            );
            if let Some(m) = marker {
                out.push(m);
                stale_markers += 1;
            }
        }
        self.by_labels.clear();
        self.slots.clear();
        self.free.clear();
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
        let mut n = self.mark_stale(self.generation, ts, out);
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
        self.by_labels.clear();
        self.slots.clear();
        self.free.clear();
        self.reported = None;
        n
    }

    /// What a sample with the (output) label set `labels` becomes: its series' slot, found by
    /// content so that two exposed texts meeting on one label set share a series.
    fn fate_of(&mut self, labels: &Labels, generation: u32) -> Fate {
        if !labels.has_metric_name() {
            return Fate::NoName;
        }
        let slots = &self.slots;
        let found = self.by_labels.find(
            labels.content_hash(),
            |&i| matches!(slots.get(i as usize), Some(Some(s)) if s.labels == *labels),
        );
        let i = match found {
            Some(&i) => i,
            None => self.new_slot(labels.clone()),
        };
        if let Some(Some(slot)) = self.slots.get_mut(i as usize) {
            slot.touched = generation;
        }
        Fate::Slot(i)
    }

    fn new_slot(&mut self, labels: Labels) -> u32 {
        // A series that ended recently starts from what was last sent for it, marked as a
        // staleness marker so that it still counts as added when it comes back.
        let (last_ts, last_bits) = match self.ended.remove(&labels.content_hash()) {
            Some(ts) => (ts, STALE_NAN_BITS),
            None => (NO_SAMPLE, 0),
        };
        let slot = Slot {
            labels: labels.clone(),
            last_ts,
            last_bits,
            touched: 0,
            tracked: 0,
        };
        let i = match self.free.pop() {
            Some(i) => {
                if let Some(s) = self.slots.get_mut(i as usize) {
                    *s = Some(slot);
                }
                i
            }
            None => {
                self.slots.push(Some(slot));
                (self.slots.len() - 1) as u32
            }
        };
        let slots = &self.slots;
        self.by_labels
            .insert_unique(labels.content_hash(), i, |&j| slot_hash(slots, j));
        i
    }

    /// Ends the current generation: staleness markers for series tracked in the previous
    /// one but not in this one, and forgetting series no longer exposed.
    fn end_generation(&mut self, ts: i64, out: &mut Vec<Sample>) -> usize {
        let generation = self.generation;
        let mut markers = 0;
        for (i, entry) in self.slots.iter_mut().enumerate() {
            let Some(slot) = entry else { continue };
            let marker = stale_marker(slot, previous(generation), ts);
            let marked_at = marker.as_ref().map(|m| m.timestamp_ms);
            if let Some(m) = marker {
                out.push(m);
                markers += 1;
            }
            if slot.touched != generation {
                bury(&mut self.ended, slot, marked_at);
                let at = i as u32;
                if let Ok(found) = self
                    .by_labels
                    .find_entry(slot.labels.content_hash(), |&j| j == at)
                {
                    found.remove();
                }
                *entry = None;
                self.free.push(i as u32);
            }
        }
        let horizon = ts.saturating_sub(TOMBSTONE_MS);
        self.ended.retain(|_, last| *last >= horizon);
        markers
    }

    /// Staleness markers for every series tracked in generation `tracked_in` (see
    /// [`stale_marker`]).
    fn mark_stale(&self, tracked_in: u32, ts: i64, out: &mut Vec<Sample>) -> usize {
        let before = out.len();
        out.extend(
            self.slots
                .iter()
                .flatten()
                .filter_map(|s| stale_marker(s, tracked_in, ts)),
        );
        out.len() - before
    }
}

/// The staleness marker of `slot` if its series was tracked in generation `tracked_in` (0,
/// "never", matches no series): at `ts`, or just after the series' last sample if that is
/// later, as a marker must not share a timestamp with a real sample or the receiver refuses
/// it as a duplicate.
fn stale_marker(slot: &Slot, tracked_in: u32, ts: i64) -> Option<Sample> {
    (tracked_in != 0 && slot.tracked == tracked_in).then(|| Sample {
        labels: slot.labels.clone(),
        value: stale_nan(),
        timestamp_ms: stale_ts(slot, ts),
    })
}

/// The stored hash of slot `i`'s label set, which `TargetState::by_labels` is hashed by.
fn slot_hash(slots: &[Option<Slot>], i: u32) -> u64 {
    match slots.get(i as usize) {
        Some(Some(s)) => s.labels.content_hash(),
        _ => 0,
    }
}

/// The label set a parsed series is forwarded with; `None` if relabeling drops it. It keeps
/// the target labels it still has in the target's own set, not in a copy per series.
fn output_labels(parsed: &Labels, target: &Labels, opts: &TargetOptions) -> Option<Labels> {
    let merged = merge_target_labels(parsed, target, opts.honor_labels);
    relabel(&merged, &opts.rules).map(|out| out.with_shared_base(target))
}

/// When a staleness marker for `slot` goes: at `ts`, or just after the series' last sample if
/// that is later (a series exposed twice in one scrape, once with a future timestamp), so a
/// series' timestamps never go backwards.
fn stale_ts(slot: &Slot, ts: i64) -> i64 {
    slot.last()
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

#[cfg(test)]
mod tests;
