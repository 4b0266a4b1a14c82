//! The series model: validated label sets, samples, and the [`Registry`] that turns probe
//! measurements (counters, gauges, histograms) into timestamped samples.
//!
//! Label sets are sorted, validated and encoded once, when a series is first created (see
//! [`Labels`]), and then shared: every later sample of that series costs a reference count
//! increment, not a re-sort.
//!
//! A sample is three words: its label set, a float value and a timestamp. A native histogram
//! sample (see [`native`]) is rare beside float samples, so it does not widen every sample
//! with a variant or a pointer: it carries its histogram in a private copy of its label set
//! ([`Labels::with_histogram`]), with a marker NaN as its float value ([`Sample::native`]).
//! Every queue, lane and record then carries histograms beside floats unchanged; the encoder
//! and the disk format look for the histogram, and everything else sees one more sample of
//! the series. The copy costs one allocation per histogram sample, which holds the histogram
//! anyway, and one word per label set.

use std::sync::Arc;

mod labels;
pub mod native;

#[cfg(test)]
pub(crate) use labels::KEY_SERIES_LABEL;
pub(crate) use labels::{cmp_names, field_len, put_varint, varint_len};
pub use labels::{
    fingerprint, seeded_hash, Field, Fields, Iter, Label, LabelRef, Labels, OwnFields, PassThrough,
    PassThroughHasher, SharedOwn,
};

/// The label that carries a series' metric name.
pub const METRIC_NAME_LABEL: &str = "__name__";

/// Bit pattern of the NaN that Prometheus reads as "this series ended" (a staleness marker).
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// Returns the staleness-marker NaN.
pub fn stale_nan() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}

/// Tells whether `v` is the staleness marker (and not some other NaN).
pub fn is_stale_nan(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// Why a label set was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    /// A label name is empty or uses characters outside `[a-zA-Z_][a-zA-Z0-9_]*`.
    #[error("invalid label name {0:?}: names must match [a-zA-Z_][a-zA-Z0-9_]*")]
    InvalidName(String),
    /// A metric name uses characters outside `[a-zA-Z_:][a-zA-Z0-9_:]*`.
    #[error("invalid metric name {0:?}: names must match [a-zA-Z_:][a-zA-Z0-9_:]*")]
    InvalidMetricName(String),
    /// The same label name appears twice.
    #[error("label {0:?} appears more than once")]
    Duplicate(String),
    /// The set has no `__name__` label.
    #[error("series has no metric name (__name__ label)")]
    MissingName,
}

/// Tells whether `name` is a valid label name.
pub fn is_valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Tells whether `name` is a valid metric name.
pub fn is_valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Bit pattern of the NaN a native histogram sample carries as its float value, so that code
/// reading only floats sees no number it could mistake for a measurement.
pub const HISTOGRAM_NAN_BITS: u64 = 0x7ff8_0000_0048_4953;

/// One measured value of one series, stamped with the time it was measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The series' full label set, including `__name__`.
    pub labels: Labels,
    /// The value; may be the staleness-marker NaN.
    pub value: f64,
    /// Milliseconds since the Unix epoch at which the value was measured.
    pub timestamp_ms: i64,
}

impl Sample {
    /// A native histogram sample of the series `labels`.
    pub fn native(
        labels: &Labels,
        histogram: Arc<native::NativeHistogram>,
        timestamp_ms: i64,
    ) -> Sample {
        Sample {
            labels: labels.with_histogram(histogram),
            value: f64::from_bits(HISTOGRAM_NAN_BITS),
            timestamp_ms,
        }
    }

    /// The native histogram, when this is a histogram sample rather than a float one.
    pub fn histogram(&self) -> Option<&Arc<native::NativeHistogram>> {
        self.labels.histogram()
    }
}

/// The kind of a metric family, as Prometheus types it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricType {
    /// A monotonically increasing total.
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// Cumulative buckets with `_bucket`, `_sum` and `_count` series.
    Histogram,
    /// Quantiles with `_sum` and `_count` series.
    Summary,
    /// An info metric (value 1, labels carry the information).
    Info,
    /// A set of boolean states.
    StateSet,
    /// No type was given.
    Unknown,
}

impl MetricType {
    /// The name used in the text exposition `# TYPE` line.
    pub fn as_text(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
            MetricType::Summary => "summary",
            MetricType::Info => "info",
            MetricType::StateSet => "stateset",
            MetricType::Unknown => "untyped",
        }
    }
}

/// Type and help text of a metric family.
#[derive(Clone, Debug, PartialEq)]
pub struct FamilyMeta {
    /// The family name (histograms: without `_bucket`/`_sum`/`_count`).
    pub name: String,
    /// The family's type.
    pub kind: MetricType,
    /// One line of help.
    pub help: String,
}

/// The current value of one series in the registry.
#[derive(Clone, Debug)]
pub enum SeriesValue {
    /// A counter's running total.
    Counter(f64),
    /// A gauge's last value.
    Gauge(f64),
    /// A histogram's state, boxed: inline it made every series 192 bytes instead of 48, and a
    /// family's series map allocates room for eleven series at a time, even for the single
    /// series most of a probe's families have (2.2 KB per family inline, 0.6 KB boxed).
    Histogram(Box<HistogramState>),
}

/// A cumulative histogram: upper bounds, per-bucket counts (not cumulative), sum and count.
#[derive(Clone, Debug)]
pub struct HistogramState {
    /// Finite upper bounds, ascending; the `+Inf` bucket is implicit.
    pub bounds: Arc<[f64]>,
    /// Observations per bucket; one more entry than `bounds` (the last is `+Inf`).
    pub counts: Vec<u64>,
    /// Sum of all observations.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
    /// The same observations in exponential buckets, when the registry keeps native
    /// histograms (see [`Registry::with_native`]).
    pub native: Option<native::NativeState>,
}

impl HistogramState {
    fn new(bounds: Arc<[f64]>, native: Option<native::NativeOptions>) -> Self {
        let counts = vec![0; bounds.len() + 1];
        HistogramState {
            bounds,
            counts,
            sum: 0.0,
            count: 0,
            native: native.map(native::NativeState::new),
        }
    }

    fn observe(&mut self, v: f64) {
        let i = self.bounds.partition_point(|b| *b < v);
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
        if let Some(n) = &mut self.native {
            n.observe(v);
        }
    }

    /// Cumulative counts per bucket, `+Inf` last.
    pub fn cumulative(&self) -> impl Iterator<Item = u64> + '_ {
        self.counts.iter().scan(0u64, |acc, c| {
            *acc += c;
            Some(*acc)
        })
    }
}

/// Formats a float as Prometheus writes it in `le` labels and the text format.
pub fn format_float(v: f64) -> String {
    if v == f64::INFINITY {
        "+Inf".to_string()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_string()
    } else if v.is_nan() {
        "NaN".to_string()
    } else {
        format!("{v}")
    }
}

/// One series of a family: its extra labels (without `__name__`), its value, and the
/// interned label sets of the samples it produces.
#[derive(Clone, Debug)]
pub struct Series {
    /// Labels other than `__name__`, as given by the caller.
    pub labels: Labels,
    /// Current value.
    pub value: SeriesValue,
    /// Interned full label sets of the samples the series yields.
    interned: Interned,
}

/// The full label sets a series' samples carry, built once when the series is created.
#[derive(Clone, Debug)]
enum Interned {
    /// Counters, gauges and native histograms: one set, kept inline (most series of a probe).
    One(Labels),
    /// Classic histograms: one set per bucket (`+Inf` last), then `_sum`, then `_count`.
    Classic(Box<[Labels]>),
}

impl Interned {
    /// The sets in sample order.
    fn as_slice(&self) -> &[Labels] {
        match self {
            Interned::One(l) => std::slice::from_ref(l),
            Interned::Classic(all) => all,
        }
    }

    /// The sets in sample order, owned.
    fn into_vec(self) -> Vec<Labels> {
        match self {
            Interned::One(l) => vec![l],
            Interned::Classic(all) => all.into_vec(),
        }
    }
}

/// A metric family: metadata plus its series keyed by their labels.
#[derive(Clone, Debug)]
pub struct Family {
    /// Type and help.
    pub meta: FamilyMeta,
    /// Series keyed by their labels (without `__name__`).
    pub series: SeriesMap,
}

/// A family's series in the order of their labels (without `__name__`), each found by them.
///
/// A sorted vector rather than a `BTreeMap`: most families of a probe hold one series, and a
/// map allocates a node with room for eleven (about 0.6 KB) for it, where the vector holds
/// just that series. Families are small (a probe's, a job's, the agent's own metrics), so the
/// shifting an insertion costs stays short; lookups are a binary search either way.
#[derive(Clone, Debug, Default)]
pub struct SeriesMap {
    /// Series sorted by [`Series::labels`], each set once.
    sorted: Vec<Series>,
}

impl SeriesMap {
    /// Creates an empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Where the series keyed `key` is, or where it would go.
    fn search(&self, key: &dyn SeriesKey) -> Result<usize, usize> {
        self.sorted
            .binary_search_by(|s| (&s.labels as &dyn SeriesKey).cmp(key))
    }

    /// The number of series.
    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// Tells whether there is no series.
    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    /// The series in label order.
    pub fn values(&self) -> std::slice::Iter<'_, Series> {
        self.sorted.iter()
    }

    /// The series' labels (their keys) in order.
    pub fn keys(&self) -> impl Iterator<Item = &Labels> {
        self.sorted.iter().map(|s| &s.labels)
    }

    /// The series keyed `key`.
    pub fn get(&self, key: &Labels) -> Option<&Series> {
        self.get_by(key)
    }

    /// Tells whether a series is keyed `key`.
    pub fn contains_key(&self, key: &Labels) -> bool {
        self.search(key).is_ok()
    }

    /// Stores `series` under `key` (which becomes its labels), returning the one it replaced.
    pub fn insert(&mut self, key: Labels, mut series: Series) -> Option<Series> {
        series.labels = key;
        match self.search(&series.labels) {
            Ok(i) => Some(std::mem::replace(&mut self.sorted[i], series)),
            Err(i) => {
                self.sorted.insert(i, series);
                None
            }
        }
    }

    /// Takes out the series keyed `key`.
    pub fn remove(&mut self, key: &Labels) -> Option<Series> {
        self.search(key).ok().map(|i| self.sorted.remove(i))
    }

    fn get_by(&self, key: &dyn SeriesKey) -> Option<&Series> {
        self.search(key).ok().map(|i| &self.sorted[i])
    }

    fn get_mut_by(&mut self, key: &dyn SeriesKey) -> Option<&mut Series> {
        self.search(key).ok().map(|i| &mut self.sorted[i])
    }
}

/// A set of metric families whose values probes update and which yields samples on demand.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    /// Families sorted by name, each once. A vector sized to its families rather than a map
    /// keyed by a second copy of each name: a probe's registry holds a dozen or more families
    /// and keeps them for the probe's lifetime.
    families: Vec<Family>,
    /// Series removed since the last [`Registry::take_stale_markers`]: family name, key and
    /// interned label sets, so each can be ended with a staleness marker.
    ended: Vec<(String, Labels, Vec<Labels>)>,
    /// Whether histograms are also kept, and sent, as native histograms.
    native: Option<native::NativeOptions>,
    /// The key of the series created last: a probe creates a dozen families' series with the
    /// same labels in a row, and they then share this one copy instead of one each.
    last_key: Option<Labels>,
}

impl Registry {
    /// Creates an empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates an empty registry whose histograms are native ones when `native` is set: their
    /// samples are one native histogram per series instead of classic `_bucket`, `_sum` and
    /// `_count` series. The classic buckets are still counted, for the text renderings (the
    /// agent's `/metrics`, the Pushgateway), which cannot carry native histograms.
    pub fn with_native(native: Option<native::NativeOptions>) -> Self {
        Registry {
            native,
            ..Self::default()
        }
    }

    /// The native histogram options histograms of this registry are created with.
    pub fn native(&self) -> Option<native::NativeOptions> {
        self.native
    }

    /// Declares a family. Calling it again with the same name keeps the existing series.
    pub fn describe(&mut self, name: &str, kind: MetricType, help: &str) {
        // Probes describe their families on every run: only a new family allocates its name.
        let Err(i) = self.search(name) else {
            return;
        };
        // Families are described once each, mostly on a probe's first run: room for exactly
        // one more keeps the vector at its size for the registry's lifetime.
        self.families.reserve_exact(1);
        self.families.insert(
            i,
            Family {
                meta: FamilyMeta {
                    name: name.to_string(),
                    kind,
                    help: help.to_string(),
                },
                series: SeriesMap::new(),
            },
        );
    }

    /// Where the family `name` is, or where it would go.
    fn search(&self, name: &str) -> Result<usize, usize> {
        self.families
            .binary_search_by(|f| f.meta.name.as_str().cmp(name))
    }

    /// The family `name`.
    fn family(&self, name: &str) -> Option<&Family> {
        self.search(name).ok().map(|i| &self.families[i])
    }

    /// The family `name`, to change.
    fn family_mut(&mut self, name: &str) -> Option<&mut Family> {
        self.search(name).ok().map(|i| &mut self.families[i])
    }

    fn series_mut(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        init: impl FnOnce() -> SeriesValue,
    ) -> Result<&mut Series, LabelError> {
        // The agent updates its own metrics on every request it sends, and each probe run sets
        // a dozen series: finding a series that exists searches with the pairs themselves and
        // allocates nothing. Only a new series builds (and validates) its label set.
        let hit = with_sorted_key(labels, |key| {
            self.family(name)
                .is_some_and(|f| f.series.search(key).is_ok())
        });
        if hit == Some(true) {
            return with_sorted_key(labels, |key| {
                self.family_mut(name).and_then(|f| f.series.get_mut_by(key))
            })
            .flatten()
            .ok_or(LabelError::MissingName);
        }
        if self.search(name).is_err() {
            self.describe(name, MetricType::Unknown, "");
        }
        let mut key = Labels::from_pairs(labels.iter().copied())?;
        if let Some(last) = self.last_key.as_ref().filter(|last| **last == key) {
            key = last.clone();
        }
        // Described just above if it was missing.
        let at = self.search(name).map_err(|_| LabelError::MissingName)?;
        let family = &mut self.families[at];
        match family.series.search(&key) {
            Ok(i) => Ok(&mut family.series.sorted[i]),
            Err(i) => {
                let value = init();
                let interned = intern(name, &key, &value)?;
                self.last_key = Some(key.clone());
                family.series.sorted.insert(
                    i,
                    Series {
                        labels: key,
                        value,
                        interned,
                    },
                );
                Ok(&mut family.series.sorted[i])
            }
        }
    }

    /// Adds `delta` to a counter series, creating it at zero first.
    pub fn counter_add(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        delta: f64,
    ) -> Result<(), LabelError> {
        let s = self.series_mut(name, labels, || SeriesValue::Counter(0.0))?;
        if let SeriesValue::Counter(v) = &mut s.value {
            *v += delta;
        }
        Ok(())
    }

    /// Sets a gauge series.
    pub fn gauge_set(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        value: f64,
    ) -> Result<(), LabelError> {
        let s = self.series_mut(name, labels, || SeriesValue::Gauge(value))?;
        if let SeriesValue::Gauge(v) = &mut s.value {
            *v = value;
        }
        Ok(())
    }

    /// Records one observation in a histogram series with the given bucket bounds.
    pub fn histogram_observe(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        bounds: &Arc<[f64]>,
        value: f64,
    ) -> Result<(), LabelError> {
        let native = self.native;
        let s = self.series_mut(name, labels, || {
            SeriesValue::Histogram(Box::new(HistogramState::new(bounds.clone(), native)))
        })?;
        if let SeriesValue::Histogram(h) = &mut s.value {
            h.observe(value);
        }
        Ok(())
    }

    /// Removes one series; the next [`Registry::take_stale_markers`] ends it with a staleness
    /// marker, so receivers stop showing its last value at once instead of for 5 minutes.
    pub fn remove(&mut self, name: &str, labels: &[(&str, &str)]) {
        // Probes remove series that usually do not exist (a certificate expiry on plain HTTP)
        // on every run: seeing that costs no allocation.
        let absent = with_sorted_key(labels, |key| {
            self.family(name)
                .is_none_or(|f| f.series.search(key).is_err())
        });
        if absent == Some(true) {
            return;
        }
        let Ok(key) = Labels::from_pairs(labels.iter().copied()) else {
            return;
        };
        if let Some(series) = self.family_mut(name).and_then(|f| f.series.remove(&key)) {
            self.ended
                .push((name.to_string(), key, series.interned.into_vec()));
        }
    }

    /// Removes every series, of any family, that carries `label` = `value` (all of a sink a
    /// reload removed), each ended as by [`Registry::remove`].
    pub fn remove_labelled(&mut self, label: &str, value: &str) {
        for family in &mut self.families {
            let name = &family.meta.name;
            let gone: Vec<Labels> = family
                .series
                .keys()
                .filter(|k| k.get(label) == Some(value))
                .cloned()
                .collect();
            for key in gone {
                if let Some(series) = family.series.remove(&key) {
                    self.ended
                        .push((name.clone(), key, series.interned.into_vec()));
                }
            }
        }
    }

    /// Staleness markers stamped `timestamp_ms` for the series removed since the last call
    /// (every sample series of a histogram), except those created again meanwhile.
    pub fn take_stale_markers(&mut self, timestamp_ms: i64) -> Vec<Sample> {
        let ended = std::mem::take(&mut self.ended);
        let mut out = Vec::new();
        for (name, key, interned) in ended {
            let back = self
                .family(&name)
                .is_some_and(|f| f.series.contains_key(&key));
            if back {
                continue;
            }
            out.extend(interned.into_iter().map(|labels| Sample {
                labels,
                value: stale_nan(),
                timestamp_ms,
            }));
        }
        out
    }

    /// Returns the value of a counter or gauge series, if present (for reports and tests).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let key = Labels::from_pairs(labels.iter().copied()).ok()?;
        match self.family(name)?.series.get(&key)?.value {
            SeriesValue::Counter(v) | SeriesValue::Gauge(v) => Some(v),
            SeriesValue::Histogram(_) => None,
        }
    }

    /// Iterates the families in name order.
    pub fn families(&self) -> impl Iterator<Item = &Family> {
        self.families.iter()
    }

    /// Returns every series' current value as samples stamped `timestamp_ms`.
    pub fn samples_at(&self, timestamp_ms: i64) -> Vec<Sample> {
        let mut out = Vec::new();
        self.append_samples(timestamp_ms, &mut out);
        out
    }

    /// Appends every series' current value to `out`, stamped `timestamp_ms`.
    pub fn append_samples(&self, timestamp_ms: i64, out: &mut Vec<Sample>) {
        for family in &self.families {
            for s in family.series.values() {
                let mut push = |labels: &Labels, value: f64| {
                    out.push(Sample {
                        labels: labels.clone(),
                        value,
                        timestamp_ms,
                    })
                };
                let interned = s.interned.as_slice();
                match &s.value {
                    SeriesValue::Counter(v) | SeriesValue::Gauge(v) => push(&interned[0], *v),
                    SeriesValue::Histogram(h) => match &h.native {
                        Some(n) => out.push(Sample::native(
                            &interned[0],
                            Arc::new(n.snapshot()),
                            timestamp_ms,
                        )),
                        None => {
                            let n = h.counts.len();
                            for (i, c) in h.cumulative().enumerate() {
                                push(&interned[i], c as f64);
                            }
                            push(&interned[n], h.sum);
                            push(&interned[n + 1], h.count as f64);
                        }
                    },
                }
            }
        }
    }
}

fn intern(name: &str, labels: &Labels, value: &SeriesValue) -> Result<Interned, LabelError> {
    let named = |metric: &str| -> Result<Labels, LabelError> {
        if !is_valid_metric_name(metric) {
            return Err(LabelError::InvalidMetricName(metric.to_string()));
        }
        Ok(labels.with(METRIC_NAME_LABEL, metric))
    };
    match value {
        SeriesValue::Counter(_) | SeriesValue::Gauge(_) => Ok(Interned::One(named(name)?)),
        SeriesValue::Histogram(h) if h.native.is_some() => Ok(Interned::One(named(name)?)),
        SeriesValue::Histogram(h) => {
            let bucket = named(&format!("{name}_bucket"))?;
            let mut out: Vec<Labels> = h
                .bounds
                .iter()
                .copied()
                .chain(std::iter::once(f64::INFINITY))
                .map(|b| bucket.with("le", &format_float(b)))
                .collect();
            out.push(named(&format!("{name}_sum"))?);
            out.push(named(&format!("{name}_count"))?);
            Ok(Interned::Classic(out.into_boxed_slice()))
        }
    }
}

/// The most labels a lookup sorts on the stack; larger sets take the allocating path.
const STACK_KEY_LABELS: usize = 16;

/// Runs `f` with `labels` as a key of a family's series map, sorted by name and without empty
/// values, as [`Labels::from_pairs`] would store them; `None` when there are too many labels
/// to sort on the stack. Names are not validated: a set that was never stored finds nothing.
fn with_sorted_key<R>(labels: &[(&str, &str)], f: impl FnOnce(&dyn SeriesKey) -> R) -> Option<R> {
    let mut buf: [(&str, &str); STACK_KEY_LABELS] = [("", ""); STACK_KEY_LABELS];
    let mut n = 0;
    for &(name, value) in labels.iter().filter(|(_, v)| !v.is_empty()) {
        *buf.get_mut(n)? = (name, value);
        n += 1;
    }
    let sorted = &mut buf[..n];
    sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
    Some(f(&SortedPairs(sorted)))
}

/// A series key seen as its labels' (name, value) bytes in name order: the order [`Labels`]
/// sorts by, so a family's series can be searched with borrowed pairs.
trait SeriesKey {
    /// The labels in name order.
    fn key_pairs(&self) -> KeyPairs<'_>;
}

/// Label pairs already sorted by name, without empty values.
struct SortedPairs<'p>(&'p [(&'p str, &'p str)]);

/// The (name, value) bytes of a stored set or of sorted pairs.
enum KeyPairs<'a> {
    Stored(labels::Fields<'a>),
    Pairs(std::slice::Iter<'a, (&'a str, &'a str)>),
}

impl<'a> Iterator for KeyPairs<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            KeyPairs::Stored(fields) => fields.next().map(|f| (f.name, f.value)),
            KeyPairs::Pairs(pairs) => pairs.next().map(|(n, v)| (n.as_bytes(), v.as_bytes())),
        }
    }
}

impl SeriesKey for Labels {
    fn key_pairs(&self) -> KeyPairs<'_> {
        KeyPairs::Stored(self.fields())
    }
}

impl SeriesKey for SortedPairs<'_> {
    fn key_pairs(&self) -> KeyPairs<'_> {
        KeyPairs::Pairs(self.0.iter())
    }
}

impl PartialEq for dyn SeriesKey + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.key_pairs().eq(other.key_pairs())
    }
}

impl Eq for dyn SeriesKey + '_ {}

impl PartialOrd for dyn SeriesKey + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for dyn SeriesKey + '_ {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key_pairs().cmp(other.key_pairs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_series_is_found_again_whatever_the_order_of_its_pairs_and_empty_values() {
        let mut r = Registry::new();
        r.gauge_set("g", &[("b", "2"), ("a", "1")], 1.0).unwrap();
        r.gauge_set("g", &[("a", "1"), ("c", ""), ("b", "2")], 5.0)
            .unwrap();
        assert_eq!(r.value("g", &[("b", "2"), ("a", "1")]), Some(5.0));
        assert_eq!(r.families().next().unwrap().series.len(), 1);
        // A prefix of a stored set is another series.
        r.gauge_set("g", &[("a", "1")], 7.0).unwrap();
        assert_eq!(r.families().next().unwrap().series.len(), 2);
        assert_eq!(r.value("g", &[("a", "1"), ("b", "2")]), Some(5.0));
    }

    #[test]
    fn series_stay_in_label_order_whatever_the_order_they_come_in() {
        let mut r = Registry::new();
        for v in ["c", "a", "d", "b"] {
            r.gauge_set("g", &[("k", v)], 1.0).unwrap();
        }
        r.remove("g", &[("k", "d")]);
        let family = r.families().next().unwrap();
        let keys: Vec<_> = family.series.keys().map(|k| k.to_string()).collect();
        assert_eq!(keys, [r#"{k="a"}"#, r#"{k="b"}"#, r#"{k="c"}"#]);
        // Inserting under an existing key replaces that series and gives the old one back.
        let mut map = family.series.clone();
        let old = map.get(&Labels::from_pairs([("k", "b")]).unwrap()).cloned();
        let back = map.insert(Labels::from_pairs([("k", "b")]).unwrap(), old.unwrap());
        assert!(back.is_some());
        assert_eq!(map.len(), 3);
        assert!(map
            .remove(&Labels::from_pairs([("k", "a")]).unwrap())
            .is_some());
        assert!(!map.contains_key(&Labels::from_pairs([("k", "a")]).unwrap()));
    }

    #[test]
    fn sets_too_large_for_the_stack_key_take_the_allocating_path() {
        let names: Vec<String> = (0..STACK_KEY_LABELS + 4)
            .map(|i| format!("l{i:02}"))
            .collect();
        let pairs: Vec<(&str, &str)> = names.iter().rev().map(|n| (n.as_str(), "v")).collect();
        let mut r = Registry::new();
        r.counter_add("c", &pairs, 1.0).unwrap();
        r.counter_add("c", &pairs, 1.0).unwrap();
        assert_eq!(r.value("c", &pairs), Some(2.0));
        r.remove("c", &pairs);
        assert_eq!(r.value("c", &pairs), None);
    }

    #[test]
    fn invalid_names_are_still_refused_when_nothing_matches() {
        let mut r = Registry::new();
        assert!(r.gauge_set("g", &[("bad-name", "x")], 1.0).is_err());
        assert!(r.gauge_set("g", &[("a", "1"), ("a", "1")], 1.0).is_err());
        // Removing what was never stored, valid or not, is a no-op.
        r.remove("g", &[("bad-name", "x")]);
        r.remove("missing", &[("a", "1")]);
        assert!(r.take_stale_markers(0).is_empty());
    }

    #[test]
    fn labels_are_sorted_and_empty_values_dropped() {
        let l = Labels::with_name("up", [("job", "a"), ("instance", "b"), ("zone", "")]).unwrap();
        let names: Vec<_> = l.iter().map(|l| l.name).collect();
        assert_eq!(names, ["__name__", "instance", "job"]);
        assert_eq!(l.metric_name(), "up");
        assert_eq!(l.to_string(), r#"up{instance="b",job="a"}"#);
    }

    #[test]
    fn invalid_and_duplicate_labels_are_refused() {
        assert_eq!(
            Labels::from_pairs([("a", "1"), ("a", "2")]),
            Err(LabelError::Duplicate("a".into()))
        );
        assert!(matches!(
            Labels::from_pairs([("1a", "x")]),
            Err(LabelError::InvalidName(_))
        ));
        assert!(matches!(
            Labels::with_name("bad-name", Vec::<(String, String)>::new()),
            Err(LabelError::InvalidMetricName(_))
        ));
        assert_eq!(
            Labels::from_pairs([("a", "1")]).unwrap().require_name(),
            Err(LabelError::MissingName)
        );
    }

    #[test]
    fn with_and_without_keep_order() {
        let l = Labels::from_pairs([("b", "2")]).unwrap();
        let l = l.with("a", "1").with("c", "3").with("b", "");
        let names: Vec<_> = l.iter().map(|l| l.name).collect();
        assert_eq!(names, ["a", "c"]);
        assert_eq!(l.without("a").get("a"), None);
    }

    #[test]
    fn histogram_yields_cumulative_buckets_sum_and_count() {
        let mut r = Registry::new();
        let bounds: Arc<[f64]> = Arc::from(vec![0.1, 1.0]);
        for v in [0.05, 0.5, 0.5, 3.0] {
            r.histogram_observe("lat_seconds", &[("probe", "p")], &bounds, v)
                .unwrap();
        }
        let samples = r.samples_at(1000);
        let got: Vec<(String, f64)> = samples
            .iter()
            .map(|s| (s.labels.to_string(), s.value))
            .collect();
        assert_eq!(
            got,
            vec![
                (r#"lat_seconds_bucket{le="0.1",probe="p"}"#.to_string(), 1.0),
                (r#"lat_seconds_bucket{le="1",probe="p"}"#.to_string(), 3.0),
                (
                    r#"lat_seconds_bucket{le="+Inf",probe="p"}"#.to_string(),
                    4.0
                ),
                (r#"lat_seconds_sum{probe="p"}"#.to_string(), 4.05),
                (r#"lat_seconds_count{probe="p"}"#.to_string(), 4.0),
            ]
        );
        assert!(samples.iter().all(|s| s.timestamp_ms == 1000));
    }

    #[test]
    fn counters_accumulate_and_gauges_replace() {
        let mut r = Registry::new();
        r.counter_add("runs_total", &[("outcome", "ok")], 1.0)
            .unwrap();
        r.counter_add("runs_total", &[("outcome", "ok")], 2.0)
            .unwrap();
        r.gauge_set("up", &[], 1.0).unwrap();
        r.gauge_set("up", &[], 0.0).unwrap();
        assert_eq!(r.value("runs_total", &[("outcome", "ok")]), Some(3.0));
        assert_eq!(r.value("up", &[]), Some(0.0));
        // Interned label sets are shared between snapshots.
        let a = r.samples_at(1);
        let b = r.samples_at(2);
        assert!(Labels::ptr_eq(&a[0].labels, &b[0].labels));
    }

    #[test]
    fn removed_series_end_with_one_stale_marker_unless_created_again() {
        let mut r = Registry::new();
        let bounds: Arc<[f64]> = Arc::from(vec![1.0]);
        r.gauge_set("g", &[("k", "a")], 1.0).unwrap();
        r.gauge_set("g", &[("k", "b")], 1.0).unwrap();
        r.histogram_observe("h_seconds", &[], &bounds, 0.5).unwrap();
        r.remove("g", &[("k", "a")]);
        r.remove("g", &[("k", "b")]);
        r.remove("h_seconds", &[]);
        r.remove("g", &[("k", "missing")]);
        // Removed and set again before the markers were taken: still alive, no marker.
        r.gauge_set("g", &[("k", "b")], 2.0).unwrap();

        let stale = r.take_stale_markers(5000);
        let names: Vec<String> = stale.iter().map(|s| s.labels.to_string()).collect();
        assert_eq!(
            names,
            vec![
                r#"g{k="a"}"#,
                r#"h_seconds_bucket{le="1"}"#,
                r#"h_seconds_bucket{le="+Inf"}"#,
                "h_seconds_sum{}",
                "h_seconds_count{}",
            ]
        );
        assert!(stale
            .iter()
            .all(|s| is_stale_nan(s.value) && s.timestamp_ms == 5000));
        assert!(
            r.take_stale_markers(6000).is_empty(),
            "markers are sent once"
        );
    }

    #[test]
    fn a_native_registry_yields_one_histogram_sample_per_series() {
        let mut r = Registry::with_native(Some(native::NativeOptions::from_factor(1.1)));
        let bounds: Arc<[f64]> = Arc::from(vec![0.1, 1.0]);
        for v in [0.05, 0.5, 0.5, 3.0] {
            r.histogram_observe("lat_seconds", &[("probe", "p")], &bounds, v)
                .unwrap();
        }
        r.counter_add("runs_total", &[], 1.0).unwrap();
        let samples = r.samples_at(1000);
        assert_eq!(samples.len(), 2);
        let h = samples[0].histogram().expect("a histogram sample");
        assert_eq!(samples[0].labels.to_string(), r#"lat_seconds{probe="p"}"#);
        assert_eq!(samples[0].value.to_bits(), HISTOGRAM_NAN_BITS);
        assert_eq!((h.count, h.schema), (4, 3));
        assert!((h.sum - 4.05).abs() < 1e-9);
        assert!(samples[1].histogram().is_none());
        // The histogram sample's label set equals the series' and keeps its hash.
        let plain = Labels::with_name("lat_seconds", [("probe", "p")]).unwrap();
        assert_eq!(samples[0].labels, plain);
        assert_eq!(samples[0].labels.content_hash(), plain.content_hash());
        // Classic buckets are still counted for the text renderings.
        let family = r.families().next().unwrap();
        let series = family.series.values().next().unwrap();
        match &series.value {
            SeriesValue::Histogram(h) => assert_eq!(h.counts, vec![1, 2, 1]),
            other => panic!("{other:?}"),
        }
        // Removing it ends the one series with a staleness marker.
        r.remove("lat_seconds", &[("probe", "p")]);
        let stale = r.take_stale_markers(2000);
        assert_eq!(stale.len(), 1);
        assert_eq!(stale[0].labels.to_string(), r#"lat_seconds{probe="p"}"#);
    }

    #[test]
    fn stale_marker_is_a_distinct_nan() {
        assert!(is_stale_nan(stale_nan()));
        assert!(!is_stale_nan(f64::NAN));
    }
}
