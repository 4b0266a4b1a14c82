//! What a 2.0 series carries beyond its samples: its family's metadata and the time it
//! started counting, looked up beside the sample path ([`SeriesCatalog`]) so that samples and
//! the queue records stay as they are.
//!
//! - **The agent's own families** (probes, `exec` jobs, self-metrics) are declared in their
//!   registries with type and help; the catalog notes them as the registries are published.
//!   Their counters and histograms count from zero since the agent started, so that is their
//!   start time.
//! - **Scraped families** take type, help and unit from the exposition (`# TYPE`, `# HELP`,
//!   `# UNIT`), through the [`MetadataStore`] the scrape loops fill. Their start time is the
//!   OpenMetrics `_created` sample of the series, noted as scraped samples are published.
//!
//! Series find their family by the suffix rules Prometheus uses (`_total`, `_bucket`, `_sum`,
//! `_count`, `_created`, `_info`, …), checked against the family's type.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, RwLock};

use super::encode_v2::{FamilyInfo, SeriesMeta};
use crate::proto_v2::metadata::MetricType as V2Type;
use crate::scrape::metadata::MetadataStore;
use crate::scrape::FamilyType;
use crate::series::{Labels, MetricType, Registry, Sample};

/// Most `_created` start times remembered: beyond it the table is emptied and refilled by
/// the next scrapes (a start time is optional; memory is not).
pub const MAX_START_TIMES: usize = 1_000_000;

/// Suffixes a series name may add to its family's name.
const SUFFIXES: &[&str] = &[
    "_total", "_bucket", "_sum", "_count", "_created", "_info", "_gsum", "_gcount",
];

/// Metadata and start times of every series the agent sends, for 2.0 endpoints.
#[derive(Debug)]
pub struct SeriesCatalog {
    /// The agent's own families, by name.
    own: RwLock<HashMap<String, (FamilyType, FamilyInfo)>>,
    /// Scraped families.
    scraped: Option<Arc<MetadataStore>>,
    /// Series key (family and labels, see [`start_key`]) → `_created` time in ms.
    created: RwLock<HashMap<u64, i64>>,
    hasher: std::collections::hash_map::RandomState,
    /// When the agent started, in ms: the start of its own counters.
    started_ms: i64,
}

impl SeriesCatalog {
    /// An empty catalog; `started_ms` is when the agent's own counters began.
    pub fn new(scraped: Option<Arc<MetadataStore>>, started_ms: i64) -> Self {
        SeriesCatalog {
            own: RwLock::default(),
            scraped,
            created: RwLock::default(),
            hasher: Default::default(),
            started_ms,
        }
    }

    /// Notes the families a registry declares (a probe's, a job's, the self-metrics').
    pub fn note_registry(&self, registry: &Registry) {
        let missing: Vec<_> = {
            let own = self.own.read().unwrap_or_else(|p| p.into_inner());
            registry
                .families()
                .filter(|f| !own.contains_key(&f.meta.name))
                .map(|f| f.meta.clone())
                .collect()
        };
        if missing.is_empty() {
            return;
        }
        let mut own = self.own.write().unwrap_or_else(|p| p.into_inner());
        for m in missing {
            let kind = family_type(m.kind);
            let info = FamilyInfo {
                kind: v2_type(kind),
                help: m.help.as_str().into(),
                unit: "".into(),
            };
            own.insert(m.name, (kind, info));
        }
    }

    /// Notes the start times that scraped `_created` samples give their series.
    pub fn note_created(&self, samples: &[Sample]) {
        let mut found = Vec::new();
        for s in samples {
            let name = s.labels.metric_name();
            let Some(base) = name.strip_suffix("_created") else {
                continue;
            };
            // Seconds since the epoch, as OpenMetrics writes them.
            let ms = s.value * 1000.0;
            if ms.is_finite() && ms.abs() < i64::MAX as f64 {
                found.push((self.start_key(base, &s.labels), ms.round() as i64));
            }
        }
        if found.is_empty() {
            return;
        }
        let mut created = self.created.write().unwrap_or_else(|p| p.into_inner());
        if created.len() + found.len() > MAX_START_TIMES {
            created.clear();
        }
        created.extend(found);
    }

    /// A series' key for start times: its family's name and its labels but `__name__`, `le`
    /// and `quantile` (a histogram's buckets share one start).
    fn start_key(&self, family: &str, labels: &Labels) -> u64 {
        let mut h = self.hasher.build_hasher();
        family.hash(&mut h);
        for l in labels.iter() {
            if !matches!(l.name, "__name__" | "le" | "quantile") {
                l.name.hash(&mut h);
                l.value.hash(&mut h);
            }
        }
        h.finish()
    }

    /// The agent's own family of series `metric`, with its type.
    fn own_family(&self, metric: &str) -> Option<(String, FamilyType, FamilyInfo)> {
        let own = self.own.read().unwrap_or_else(|p| p.into_inner());
        candidates(metric).find_map(|family| {
            own.get(family)
                .filter(|(kind, _)| kind.is_member(family, metric))
                .map(|(kind, info)| (family.to_string(), *kind, info.clone()))
        })
    }
}

impl SeriesMeta for SeriesCatalog {
    fn family(&self, metric: &str) -> Option<FamilyInfo> {
        if let Some((_, _, info)) = self.own_family(metric) {
            return Some(info);
        }
        let store = self.scraped.as_ref()?;
        candidates(metric).find_map(|family| {
            store
                .family(family)
                .filter(|f| f.kind.is_member(family, metric))
                .map(|f| FamilyInfo {
                    kind: v2_type(f.kind),
                    help: f.help.as_str().into(),
                    unit: f.unit.as_str().into(),
                })
        })
    }

    fn start_ms(&self, labels: &Labels, family: Option<&FamilyInfo>) -> Option<i64> {
        let counts = family.is_some_and(|f| {
            matches!(
                f.kind,
                V2Type::Counter | V2Type::Histogram | V2Type::Summary
            )
        });
        if !counts {
            return None;
        }
        let metric = labels.metric_name();
        {
            let created = self.created.read().unwrap_or_else(|p| p.into_inner());
            if !created.is_empty() {
                let found = candidates(metric)
                    .filter(|base| *base != metric || !metric.ends_with("_created"))
                    .find_map(|base| created.get(&self.start_key(base, labels)).copied());
                if found.is_some() {
                    return found;
                }
            }
        }
        self.own_family(metric).map(|_| self.started_ms)
    }
}

/// Family names series `metric` may belong to: itself, then with one suffix cut off (and, for
/// a counter exposed as `foo_total`, the family `foo_total` is itself).
fn candidates(metric: &str) -> impl Iterator<Item = &str> {
    std::iter::once(metric).chain(
        SUFFIXES
            .iter()
            .filter_map(move |suffix| metric.strip_suffix(suffix))
            .filter(|base| !base.is_empty()),
    )
}

/// The exposition type of a registry family.
fn family_type(kind: MetricType) -> FamilyType {
    match kind {
        MetricType::Counter => FamilyType::Counter,
        MetricType::Gauge => FamilyType::Gauge,
        MetricType::Histogram => FamilyType::Histogram,
        MetricType::Summary => FamilyType::Summary,
        MetricType::Info => FamilyType::Info,
        MetricType::StateSet => FamilyType::StateSet,
        MetricType::Unknown => FamilyType::Unknown,
    }
}

/// The 2.0 metadata type of a family type.
pub fn v2_type(kind: FamilyType) -> V2Type {
    match kind {
        FamilyType::Counter => V2Type::Counter,
        FamilyType::Gauge => V2Type::Gauge,
        FamilyType::Histogram => V2Type::Histogram,
        FamilyType::GaugeHistogram => V2Type::Gaugehistogram,
        FamilyType::Summary => V2Type::Summary,
        FamilyType::Info => V2Type::Info,
        FamilyType::StateSet => V2Type::Stateset,
        FamilyType::Unknown => V2Type::Unspecified,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::scrape::ParsedFamily;

    fn labels(metric: &str, pairs: &[(&str, &str)]) -> Labels {
        Labels::with_name(metric, pairs.iter().copied()).unwrap()
    }

    #[test]
    fn own_families_resolve_by_suffix_and_start_when_the_agent_did() {
        let mut r = Registry::new();
        r.describe("runs_total", MetricType::Counter, "Runs.");
        r.describe("lat_seconds", MetricType::Histogram, "Latency.");
        r.describe("up", MetricType::Gauge, "Up.");
        let c = SeriesCatalog::new(None, 42_000);
        c.note_registry(&r);
        let runs = c.family("runs_total").unwrap();
        assert_eq!(runs.kind, V2Type::Counter);
        assert_eq!(&*runs.help, "Runs.");
        let bucket = labels("lat_seconds_bucket", &[("le", "0.1")]);
        let lat = c.family(bucket.metric_name()).unwrap();
        assert_eq!(lat.kind, V2Type::Histogram);
        assert_eq!(c.start_ms(&bucket, Some(&lat)), Some(42_000));
        let up = c.family("up").unwrap();
        assert_eq!(c.start_ms(&labels("up", &[]), Some(&up)), None);
        // A gauge family does not claim `up_total`.
        assert!(c.family("up_total").is_none());
        assert!(c.family("nothing").is_none());
    }

    #[test]
    fn scraped_families_take_the_exposition_metadata_and_created_times() {
        let store = Arc::new(MetadataStore::new());
        store.set(
            "job/t:1",
            vec![ParsedFamily {
                name: "foo_seconds".into(),
                kind: FamilyType::Counter,
                help: Some("Time spent.".into()),
                unit: Some("seconds".into()),
            }],
        );
        let c = SeriesCatalog::new(Some(store), 1);
        let series = labels("foo_seconds_total", &[("instance", "t:1"), ("job", "job")]);
        let info = c.family(series.metric_name()).unwrap();
        assert_eq!(
            (info.kind, &*info.help, &*info.unit),
            (V2Type::Counter, "Time spent.", "seconds")
        );
        // No `_created` seen yet, and not the agent's own: no start time.
        assert_eq!(c.start_ms(&series, Some(&info)), None);
        let created = Sample {
            labels: labels(
                "foo_seconds_created",
                &[("instance", "t:1"), ("job", "job")],
            ),
            value: 1520872607.123,
            timestamp_ms: 5,
        };
        c.note_created(&[created]);
        assert_eq!(c.start_ms(&series, Some(&info)), Some(1520872607123));
        let other = labels("foo_seconds_total", &[("instance", "t:2"), ("job", "job")]);
        assert_eq!(c.start_ms(&other, Some(&info)), None);
    }
}
