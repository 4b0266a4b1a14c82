//! Native (exponential) histograms: the sample type remote write carries in
//! `TimeSeries.histograms`, and the bucket arithmetic that fills one from observations.
//!
//! A native histogram at schema `s` has buckets whose bounds grow by `2^(2^-s)`: bucket `i`
//! holds observations in `(base^(i-1), base^i]` (positive side; the negative side mirrors it),
//! and observations within `zero_threshold` of zero go to the zero bucket. Only populated
//! buckets are sent, as *spans* (runs of consecutive bucket indices, each placed by its offset
//! from the end of the previous run) and *deltas* (each bucket's count minus the previous
//! one's), which is the wire form of Prometheus' remote-write `Histogram` message.
//!
//! The arithmetic follows Prometheus' client_golang, so that a value lands in the same bucket
//! whichever client observed it: the schema is picked from a bucket growth factor
//! ([`pick_schema`]), the bucket index from the float's mantissa and exponent
//! ([`bucket_index`]), and a histogram past its bucket cap halves its resolution (merging
//! pairs of buckets) rather than growing without bound.
//!
//! Counts are integers: the agent's own histograms count observations. Float-count histograms
//! (gauge histograms some expositions carry) are not represented.

use std::collections::BTreeMap;

/// Smallest schema: bucket bounds grow by a factor of 65536.
pub const MIN_SCHEMA: i32 = -4;
/// Largest schema: bucket bounds grow by `2^(1/256)`.
pub const MAX_SCHEMA: i32 = 8;
/// client_golang's default zero threshold (`2^-128`): only zero (and subnormal noise) counts
/// as zero.
pub const DEFAULT_ZERO_THRESHOLD: f64 = 2.938_735_877_055_719e-39;
/// Default cap on populated buckets per histogram (both signs together), as Prometheus'
/// scrape-side `native_histogram_bucket_limit` is commonly set: about 1 KiB on the wire.
pub const DEFAULT_MAX_BUCKETS: usize = 160;

/// Whether a histogram's counts may have been reset since the previous sample.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ResetHint {
    /// Not known: the receiver works it out.
    #[default]
    Unknown,
    /// A counter reset happened.
    Yes,
    /// No counter reset happened.
    No,
    /// A gauge histogram: it goes up and down.
    Gauge,
}

impl ResetHint {
    /// The value of remote write's `Histogram.ResetHint` enum.
    pub fn to_proto(self) -> i32 {
        match self {
            ResetHint::Unknown => 0,
            ResetHint::Yes => 1,
            ResetHint::No => 2,
            ResetHint::Gauge => 3,
        }
    }

    /// Reads remote write's enum value; anything unknown is [`ResetHint::Unknown`].
    pub fn from_proto(v: i32) -> ResetHint {
        match v {
            1 => ResetHint::Yes,
            2 => ResetHint::No,
            3 => ResetHint::Gauge,
            _ => ResetHint::Unknown,
        }
    }
}

/// A run of consecutive buckets: where it starts (relative to the previous run's end, or to
/// index 0 for the first) and how many buckets it has.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BucketSpan {
    /// Gap from the previous span's end (the first span: its first bucket index).
    pub offset: i32,
    /// Buckets in the run.
    pub length: u32,
}

/// One native histogram sample, with integer counts, in its wire form.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NativeHistogram {
    /// Resolution: bucket bounds grow by `2^(2^-schema)`.
    pub schema: i32,
    /// Observations with an absolute value up to this count as zero.
    pub zero_threshold: f64,
    /// Observations in the zero bucket.
    pub zero_count: u64,
    /// All observations (including NaN ones, which are in no bucket).
    pub count: u64,
    /// Sum of all observations.
    pub sum: f64,
    /// Populated positive buckets, as spans.
    pub positive_spans: Vec<BucketSpan>,
    /// Positive bucket counts: the first absolute, each later one the difference to the
    /// previous.
    pub positive_deltas: Vec<i64>,
    /// Populated negative buckets (indexed by absolute value), as spans.
    pub negative_spans: Vec<BucketSpan>,
    /// Negative bucket counts, delta-encoded like the positive ones.
    pub negative_deltas: Vec<i64>,
    /// Whether the counts may have been reset since the previous sample.
    pub reset_hint: ResetHint,
}

impl NativeHistogram {
    /// Bucket `(index, count)` pairs of one side, decoded from spans and deltas; `None` when
    /// the spans and deltas disagree in length, or the counts go negative or overflow.
    pub fn buckets(spans: &[BucketSpan], deltas: &[i64]) -> Option<Vec<(i32, u64)>> {
        let mut out = Vec::with_capacity(deltas.len());
        let mut deltas = deltas.iter();
        // Wider than an index, so that the position after the last bucket never overflows.
        let mut index: i64 = 0;
        let mut count: i64 = 0;
        for span in spans {
            index += i64::from(span.offset);
            for _ in 0..span.length {
                count = count.checked_add(*deltas.next()?)?;
                out.push((i32::try_from(index).ok()?, u64::try_from(count).ok()?));
                index += 1;
            }
        }
        if deltas.next().is_some() {
            return None;
        }
        Some(out)
    }
}

/// The schema client_golang picks for a bucket growth factor: the one with the largest growth
/// `2^(2^-schema)` that does not exceed `factor` (the coarsest that is fine enough), clamped
/// to [`MIN_SCHEMA`]..=[`MAX_SCHEMA`].
/// `factor` must exceed 1 (configuration validation makes sure).
pub fn pick_schema(factor: f64) -> i32 {
    if factor.is_nan() || factor <= 1.0 {
        return MAX_SCHEMA;
    }
    let floor = factor.log2().log2().floor();
    if floor <= -(MAX_SCHEMA as f64) {
        MAX_SCHEMA
    } else if floor >= -(MIN_SCHEMA as f64) {
        MIN_SCHEMA
    } else {
        -(floor as i32)
    }
}

/// The growth factor of bucket bounds at `schema`.
pub fn growth_factor(schema: i32) -> f64 {
    2f64.powf(2f64.powi(-schema))
}

/// Index of the bucket holding `v` (by absolute value) at `schema`: `i` such that
/// `base^(i-1) < |v| <= base^i`. Computed from the float's mantissa and exponent as
/// client_golang does, so boundary values land where its histograms put them.
pub fn bucket_index(v: f64, schema: i32) -> i32 {
    if v.is_infinite() {
        // client_golang's bucket for infinities: past every finite one.
        return i32::MAX;
    }
    let (frac, exp) = frexp(v.abs());
    if schema > 0 {
        let per = 1i32 << schema;
        // Bounds of the mantissa within [0.5, 1): 2^(j/2^schema - 1).
        let j = (0..per)
            .position(|j| mantissa_bound(j, schema) >= frac)
            .map_or(per, |j| j as i32);
        j + (exp - 1) * per
    } else {
        let mut key = exp;
        if frac == 0.5 {
            key -= 1;
        }
        let shift = -schema;
        let offset = (1 << shift) - 1;
        (key + offset) >> shift
    }
}

/// `2^(j/2^schema - 1)`, the `j`th bucket bound of a mantissa in `[0.5, 1)`.
fn mantissa_bound(j: i32, schema: i32) -> f64 {
    if j == 0 {
        0.5
    } else {
        2f64.powf(f64::from(j) / f64::from(1 << schema) - 1.0)
    }
}

/// Splits a finite positive float into a mantissa in `[0.5, 1)` and a power of two, as C's
/// `frexp` (and Go's `math.Frexp`) do. Zero and non-finite values come back as they are.
fn frexp(v: f64) -> (f64, i32) {
    if v == 0.0 || !v.is_finite() {
        return (v, 0);
    }
    let bits = v.to_bits();
    let exp_bits = ((bits >> 52) & 0x7ff) as i32;
    if exp_bits == 0 {
        // Subnormal: scale into the normal range first.
        let (f, e) = frexp(v * 2f64.powi(64));
        return (f, e - 64);
    }
    let exp = exp_bits - 1022;
    let mantissa = f64::from_bits((bits & !(0x7ff << 52)) | (1022 << 52));
    (mantissa, exp)
}

/// How the agent's own histograms are kept when native histograms are on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NativeOptions {
    /// Starting schema (see [`pick_schema`]).
    pub schema: i32,
    /// Zero bucket width.
    pub zero_threshold: f64,
    /// Most populated buckets before the resolution is halved.
    pub max_buckets: usize,
}

impl NativeOptions {
    /// Options for a bucket growth factor, with the default zero threshold and bucket cap.
    pub fn from_factor(factor: f64) -> Self {
        NativeOptions {
            schema: pick_schema(factor),
            zero_threshold: DEFAULT_ZERO_THRESHOLD,
            max_buckets: DEFAULT_MAX_BUCKETS,
        }
    }
}

/// The running state of one native histogram: sparse bucket counts by index.
#[derive(Clone, Debug, PartialEq)]
pub struct NativeState {
    schema: i32,
    zero_threshold: f64,
    max_buckets: usize,
    zero_count: u64,
    count: u64,
    sum: f64,
    positive: BTreeMap<i32, u64>,
    negative: BTreeMap<i32, u64>,
}

impl NativeState {
    /// An empty histogram with `options`.
    pub fn new(options: NativeOptions) -> Self {
        NativeState {
            schema: options.schema.clamp(MIN_SCHEMA, MAX_SCHEMA),
            zero_threshold: options.zero_threshold,
            max_buckets: options.max_buckets.max(1),
            zero_count: 0,
            count: 0,
            sum: 0.0,
            positive: BTreeMap::new(),
            negative: BTreeMap::new(),
        }
    }

    /// Current schema (lower than the starting one once the bucket cap was hit).
    pub fn schema(&self) -> i32 {
        self.schema
    }

    /// Records one observation. NaN counts and adds to the sum but lands in no bucket, as in
    /// client_golang.
    pub fn observe(&mut self, v: f64) {
        self.count += 1;
        self.sum += v;
        if v.is_nan() {
            return;
        }
        if v.abs() <= self.zero_threshold {
            self.zero_count += 1;
            return;
        }
        let side = if v > 0.0 {
            &mut self.positive
        } else {
            &mut self.negative
        };
        *side.entry(bucket_index(v, self.schema)).or_insert(0) += 1;
        while self.positive.len() + self.negative.len() > self.max_buckets
            && self.schema > MIN_SCHEMA
        {
            self.halve_resolution();
        }
    }

    /// Lowers the schema by one, merging each pair of buckets into the wider bucket that
    /// holds both (index `i` becomes `ceil(i / 2)`).
    fn halve_resolution(&mut self) {
        for side in [&mut self.positive, &mut self.negative] {
            let old = std::mem::take(side);
            for (i, c) in old {
                // Infinities stay in the last bucket; the rest merge pairwise.
                let merged = if i == i32::MAX {
                    i
                } else {
                    ((i64::from(i) + 1) >> 1) as i32
                };
                *side.entry(merged).or_insert(0) += c;
            }
        }
        self.schema -= 1;
    }

    /// The current state as a sample value.
    pub fn snapshot(&self) -> NativeHistogram {
        let (positive_spans, positive_deltas) = spans_and_deltas(&self.positive);
        let (negative_spans, negative_deltas) = spans_and_deltas(&self.negative);
        NativeHistogram {
            schema: self.schema,
            zero_threshold: self.zero_threshold,
            zero_count: self.zero_count,
            count: self.count,
            sum: self.sum,
            positive_spans,
            positive_deltas,
            negative_spans,
            negative_deltas,
            reset_hint: ResetHint::Unknown,
        }
    }
}

/// Encodes sparse bucket counts as spans and deltas. Gaps of one or two empty buckets are
/// filled with zero-count buckets rather than opening a new span, as client_golang does: a
/// span costs more bytes than two zero deltas.
pub fn spans_and_deltas(buckets: &BTreeMap<i32, u64>) -> (Vec<BucketSpan>, Vec<i64>) {
    let mut spans: Vec<BucketSpan> = Vec::new();
    let mut deltas = Vec::with_capacity(buckets.len());
    let mut prev_count: i64 = 0;
    let mut next_index: i64 = 0;
    for (&i, &c) in buckets {
        let c = i64::try_from(c).unwrap_or(i64::MAX);
        let gap = i64::from(i) - next_index;
        match spans.last_mut() {
            Some(span) if gap <= 2 => {
                for _ in 0..gap {
                    deltas.push(-prev_count);
                    prev_count = 0;
                }
                span.length += gap as u32 + 1;
            }
            // Indices are i32, so a gap between two of them fits an i32 offset only when it is
            // not wider than the whole range; the widest (i32::MIN to i32::MAX) is split.
            Some(_) => {
                let mut gap = gap;
                while gap > i64::from(i32::MAX) {
                    spans.push(BucketSpan {
                        offset: i32::MAX,
                        length: 0,
                    });
                    gap -= i64::from(i32::MAX);
                }
                spans.push(BucketSpan {
                    offset: gap as i32,
                    length: 1,
                })
            }
            None => spans.push(BucketSpan {
                offset: i,
                length: 1,
            }),
        }
        deltas.push(c.saturating_sub(prev_count));
        prev_count = c;
        next_index = i64::from(i) + 1;
    }
    (spans, deltas)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_has_the_largest_growth_that_fits_the_factor() {
        // client_golang: factor 1.1 gives schema 3 (growth 1.0905), 2 gives 0, 4 gives -1.
        assert_eq!(pick_schema(1.1), 3);
        assert_eq!(pick_schema(1.0905), 4);
        assert_eq!(pick_schema(2.0), 0);
        assert_eq!(pick_schema(4.0), -1);
        assert_eq!(pick_schema(1.000_01), MAX_SCHEMA);
        assert_eq!(pick_schema(1e300), MIN_SCHEMA);
        // Below the finest schema's growth (1.0027) the finest is all there is.
        assert_eq!(pick_schema(1.001), MAX_SCHEMA);
        for f in [1.01, 1.1, 1.5, 2.0, 3.0, 10.0, 300.0] {
            let s = pick_schema(f);
            assert!(growth_factor(s) <= f + 1e-12, "factor {f} schema {s}");
            // And the next coarser schema's growth would exceed it.
            if s > MIN_SCHEMA {
                assert!(growth_factor(s - 1) > f, "factor {f} schema {s}");
            }
        }
    }

    #[test]
    fn bucket_indices_match_client_golang() {
        // Values from client_golang's histogram tests and the bucket definition
        // (base^(i-1), base^i].
        let cases: &[(f64, i32, i32)] = &[
            (1.0, 3, 0),
            (1.1, 3, 2),
            (2.0, 3, 8),
            (0.5, 3, -8),
            (1.0, 0, 0),
            (2.0, 0, 1),
            (3.0, 0, 2),
            (0.5, 0, -1),
            (0.3, 0, -1),
            (4.0, -1, 1),
            (5.0, -1, 2),
            (16.0, -2, 1),
            (17.0, -2, 2),
            (1.5, 1, 2),
            (1.4, 1, 1),
            (1e-3, 3, -79),
        ];
        for &(v, schema, want) in cases {
            assert_eq!(bucket_index(v, schema), want, "value {v} schema {schema}");
            assert_eq!(bucket_index(-v, schema), want, "negative {v}");
        }
        assert_eq!(bucket_index(f64::INFINITY, 3), i32::MAX);
        assert_eq!(bucket_index(f64::MIN_POSITIVE / 4.0, 0), -1024);
        // The widest possible gap still encodes and decodes.
        let b: BTreeMap<i32, u64> = [(i32::MIN, 1), (i32::MAX, 2)].into();
        let (spans, deltas) = spans_and_deltas(&b);
        assert_eq!(
            NativeHistogram::buckets(&spans, &deltas).unwrap(),
            vec![(i32::MIN, 1), (i32::MAX, 2)]
        );
    }

    #[test]
    fn every_value_lies_within_its_bucket_bounds() {
        for schema in MIN_SCHEMA..=MAX_SCHEMA {
            let base = growth_factor(schema);
            for v in [1e-9, 0.001, 0.25, 0.7, 1.0, 1.3, 9.99, 1234.5, 1e12] {
                let i = bucket_index(v, schema);
                let upper = base.powi(i);
                let lower = base.powi(i - 1);
                assert!(
                    v <= upper * (1.0 + 1e-9) && v > lower * (1.0 - 1e-9),
                    "schema {schema} value {v} index {i}: ({lower}, {upper}]"
                );
            }
        }
    }

    #[test]
    fn small_gaps_are_filled_and_large_ones_open_a_span() {
        let b: BTreeMap<i32, u64> = [(0, 1), (1, 2), (3, 1), (10, 4)].into();
        let (spans, deltas) = spans_and_deltas(&b);
        assert_eq!(
            spans,
            vec![
                BucketSpan {
                    offset: 0,
                    length: 4
                },
                BucketSpan {
                    offset: 6,
                    length: 1
                },
            ]
        );
        assert_eq!(deltas, vec![1, 1, -2, 1, 3]);
        let decoded = NativeHistogram::buckets(&spans, &deltas).unwrap();
        assert_eq!(
            decoded,
            vec![(0, 1), (1, 2), (2, 0), (3, 1), (10, 4)],
            "round trip"
        );
        let (spans, deltas) = spans_and_deltas(&[(-5, 2)].into());
        assert_eq!(
            spans,
            vec![BucketSpan {
                offset: -5,
                length: 1
            }]
        );
        assert_eq!(deltas, vec![2]);
    }

    #[test]
    fn decoding_refuses_mismatched_spans_and_negative_counts() {
        let span = |offset, length| BucketSpan { offset, length };
        assert!(NativeHistogram::buckets(&[span(0, 2)], &[1]).is_none());
        assert!(NativeHistogram::buckets(&[span(0, 1)], &[1, 2]).is_none());
        assert!(NativeHistogram::buckets(&[span(0, 2)], &[1, -2]).is_none());
        assert!(NativeHistogram::buckets(&[span(i32::MAX, 2)], &[1, 0]).is_none());
    }

    #[test]
    fn observations_fill_buckets_and_the_zero_bucket() {
        let mut s = NativeState::new(NativeOptions::from_factor(1.1));
        for v in [0.0, 1.0, 1.0, 1.1, -2.0, f64::NAN] {
            s.observe(v);
        }
        let h = s.snapshot();
        assert_eq!(h.schema, 3);
        assert_eq!(h.count, 6);
        assert_eq!(h.zero_count, 1);
        assert_eq!(
            NativeHistogram::buckets(&h.positive_spans, &h.positive_deltas).unwrap(),
            vec![(0, 2), (1, 0), (2, 1)]
        );
        assert_eq!(
            NativeHistogram::buckets(&h.negative_spans, &h.negative_deltas).unwrap(),
            vec![(8, 1)]
        );
    }

    proptest::proptest! {
        #[test]
        fn every_observation_is_counted_once_whatever_the_values(
            values in proptest::collection::vec(proptest::num::f64::ANY, 0..300),
            factor in 1.0001f64..100.0,
            max_buckets in 1usize..40,
        ) {
            let mut s = NativeState::new(NativeOptions {
                max_buckets,
                ..NativeOptions::from_factor(factor)
            });
            for v in &values {
                s.observe(*v);
            }
            let h = s.snapshot();
            let pos = NativeHistogram::buckets(&h.positive_spans, &h.positive_deltas).unwrap();
            let neg = NativeHistogram::buckets(&h.negative_spans, &h.negative_deltas).unwrap();
            let in_buckets: u64 = pos.iter().chain(&neg).map(|(_, c)| c).sum();
            let nan = values.iter().filter(|v| v.is_nan()).count() as u64;
            proptest::prop_assert_eq!(h.count, values.len() as u64);
            proptest::prop_assert_eq!(in_buckets + h.zero_count + nan, h.count);
            proptest::prop_assert!((MIN_SCHEMA..=MAX_SCHEMA).contains(&h.schema));
            let populated = pos.iter().chain(&neg).filter(|(_, c)| *c > 0).count();
            proptest::prop_assert!(populated <= max_buckets || h.schema == MIN_SCHEMA);
        }
    }

    #[test]
    fn the_bucket_cap_halves_resolution_and_keeps_every_count() {
        let mut s = NativeState::new(NativeOptions {
            schema: 3,
            zero_threshold: DEFAULT_ZERO_THRESHOLD,
            max_buckets: 10,
        });
        let values: Vec<f64> = (1..=200).map(|i| f64::from(i) * 0.37).collect();
        for v in &values {
            s.observe(*v);
        }
        let h = s.snapshot();
        assert!(h.schema < 3, "resolution was lowered");
        let buckets = NativeHistogram::buckets(&h.positive_spans, &h.positive_deltas).unwrap();
        assert!(buckets.iter().filter(|(_, c)| *c > 0).count() <= 10);
        assert_eq!(buckets.iter().map(|(_, c)| c).sum::<u64>(), 200);
        // Every value is in the bucket its index says at the final schema.
        let mut want: BTreeMap<i32, u64> = BTreeMap::new();
        for v in &values {
            *want.entry(bucket_index(*v, h.schema)).or_insert(0) += 1;
        }
        let got: BTreeMap<i32, u64> = buckets.into_iter().filter(|(_, c)| *c > 0).collect();
        assert_eq!(got, want);
    }
}
