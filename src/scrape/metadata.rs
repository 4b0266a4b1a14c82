//! Metric metadata (type, help, unit) of scraped families: the store the scrape loops fill,
//! the pure encoding of a metadata-only remote-write request, and the small task per receiver
//! that sends it periodically, as Prometheus' `metadata_config` does (every minute).
//!
//! Metadata travels in its own request (field 3 of `WriteRequest`, no time series), so the
//! sample path and its queue stay untouched; losing one send costs nothing, the next one
//! carries everything again.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use tokio_util::sync::CancellationToken;

use super::{FamilyType, ParsedFamily};
use crate::config::RemoteWriteSettings;
use crate::proto::{metric_metadata, MetricMetadata, WriteRequest};
use crate::remote_write::compression::Compression;
use crate::remote_write::encode::EncodeError;
use crate::remote_write::protocol::Protocol;
use crate::remote_write::retry::Outcome;
use crate::remote_write::service::WriteService;
use crate::remote_write::SenderError;
use crate::telemetry::{self, Telemetry};

/// Most families remembered per target: an exporter with runaway metric names must not grow
/// the agent without bound.
pub const MAX_FAMILIES_PER_TARGET: usize = 10_000;

/// Type, help and unit of one family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FamilyMetadata {
    /// The family name as exposed.
    pub name: String,
    /// Its type.
    pub kind: FamilyType,
    /// Help text ("" if none).
    pub help: String,
    /// Unit ("" if none).
    pub unit: String,
}

/// The metadata each target exposed in its latest successful scrape.
#[derive(Debug, Default)]
pub struct MetadataStore {
    by_target: Mutex<HashMap<String, Arc<Vec<FamilyMetadata>>>>,
    /// Every family by name, the declaration of the latest scrape that changed a target's
    /// list winning, for the 2.0 encoder's per-series lookups. Kept when a target stops: a name's metadata rarely changes, and
    /// the index is bounded by the names all targets ever exposed.
    by_name: std::sync::RwLock<HashMap<String, Arc<FamilyMetadata>>>,
}

impl MetadataStore {
    /// Creates an empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces what `target` exposed with `families`, keeping only families that declared
    /// something (a series without `# TYPE`/`# HELP` has no metadata to send, as in
    /// Prometheus).
    pub fn set(&self, target: &str, families: Vec<ParsedFamily>) {
        let list: Vec<FamilyMetadata> = families
            .into_iter()
            .filter(|f| f.kind != FamilyType::Unknown || f.help.is_some() || f.unit.is_some())
            .take(MAX_FAMILIES_PER_TARGET)
            .map(|f| FamilyMetadata {
                name: f.name,
                kind: f.kind,
                help: f.help.unwrap_or_default(),
                unit: f.unit.unwrap_or_default(),
            })
            .collect();
        // A target declares the same families scrape after scrape: an unchanged list touches
        // neither index (no write lock, no copies).
        let mut map = self.by_target.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(target).is_some_and(|old| **old == list) {
            return;
        }
        {
            let mut by_name = self.by_name.write().unwrap_or_else(|p| p.into_inner());
            for f in &list {
                if by_name.get(&f.name).is_none_or(|old| **old != *f) {
                    by_name.insert(f.name.clone(), Arc::new(f.clone()));
                }
            }
        }
        map.insert(target.to_string(), Arc::new(list));
    }

    /// The latest metadata any target declared for family `name`.
    pub fn family(&self, name: &str) -> Option<Arc<FamilyMetadata>> {
        let by_name = self.by_name.read().unwrap_or_else(|p| p.into_inner());
        by_name.get(name).cloned()
    }

    /// Forgets a target (it stopped).
    pub fn remove(&self, target: &str) {
        let mut map = self.by_target.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(target);
    }

    /// Every family once, by name (the first target in name order wins a disagreement).
    pub fn snapshot(&self) -> Vec<FamilyMetadata> {
        let lists: Vec<(String, Arc<Vec<FamilyMetadata>>)> = {
            let map = self.by_target.lock().unwrap_or_else(|p| p.into_inner());
            map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        let mut lists = lists;
        lists.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: BTreeMap<&str, &FamilyMetadata> = BTreeMap::new();
        for (_, list) in &lists {
            for f in list.iter() {
                out.entry(f.name.as_str()).or_insert(f);
            }
        }
        out.into_values().cloned().collect()
    }
}

/// The remote-write enum value of a family type.
pub fn proto_type(kind: FamilyType) -> metric_metadata::MetricType {
    use metric_metadata::MetricType as T;
    match kind {
        FamilyType::Counter => T::Counter,
        FamilyType::Gauge => T::Gauge,
        FamilyType::Histogram => T::Histogram,
        FamilyType::GaugeHistogram => T::Gaugehistogram,
        FamilyType::Summary => T::Summary,
        FamilyType::Info => T::Info,
        FamilyType::StateSet => T::Stateset,
        FamilyType::Unknown => T::Unknown,
    }
}

/// Encodes a metadata-only `WriteRequest`, snappy-compressed, into `out` (cleared first).
///
/// prost builds the message here: metadata is a few hundred small entries a minute, so the
/// hand-written encoder of the sample path would buy nothing.
pub fn encode_metadata(families: &[FamilyMetadata], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let request = WriteRequest {
        timeseries: Vec::new(),
        metadata: families
            .iter()
            .map(|f| MetricMetadata {
                r#type: proto_type(f.kind) as i32,
                metric_family_name: f.name.clone(),
                help: f.help.clone(),
                unit: f.unit.clone(),
            })
            .collect(),
    };
    let proto = request.encode_to_vec();
    let max = snap::raw::max_compress_len(proto.len());
    if max == 0 && !proto.is_empty() {
        return Err(EncodeError::TooLarge { len: proto.len() });
    }
    out.clear();
    out.resize(max.max(1), 0);
    let n = snap::raw::Encoder::new().compress(&proto, out)?;
    out.truncate(n);
    Ok(())
}

/// Sends the metadata store to one remote-write receiver.
pub struct MetadataSender {
    endpoint: String,
    /// The endpoint's client, headers and credentials, as the sample sender has them.
    service: WriteService,
    telemetry: Arc<Telemetry>,
}

impl std::fmt::Debug for MetadataSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The headers carry credentials.
        f.debug_struct("MetadataSender")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl MetadataSender {
    /// Builds a sender with the receiver's URL, headers, credentials, TLS and timeout.
    pub fn new(
        settings: &RemoteWriteSettings,
        telemetry: Arc<Telemetry>,
    ) -> Result<Self, SenderError> {
        let fail = |message: String| SenderError::Client {
            endpoint: settings.name.clone(),
            message,
        };
        let service = WriteService::new(settings).map_err(fail)?;
        for outcome in ["success", "failure"] {
            telemetry.add(
                telemetry::RW_METADATA_REQUESTS,
                &[("endpoint", &settings.name), ("outcome", outcome)],
                0.0,
            );
        }
        Ok(MetadataSender {
            endpoint: settings.name.clone(),
            service,
            telemetry,
        })
    }

    /// Sends what `store` holds now, once; nothing when it is empty. True on a 2xx answer.
    pub async fn send(&self, store: &MetadataStore) -> bool {
        let families = store.snapshot();
        if families.is_empty() {
            return true;
        }
        let mut body = Vec::new();
        if let Err(e) = encode_metadata(&families, &mut body) {
            tracing::error!(endpoint = %self.endpoint, error = %e, "cannot encode metadata");
            return false;
        }
        // Credentials are set per attempt (rotated files included); a 401 is retried once
        // with new ones, as for samples.
        let answer = self
            .service
            .attempt(Bytes::from(body), Protocol::V1, Compression::Snappy)
            .await;
        let ok = match answer.outcome {
            Outcome::Status(s) if (200..300).contains(&s) => true,
            Outcome::Status(status) => {
                tracing::warn!(endpoint = %self.endpoint, status, families = families.len(), error = %answer.message, "receiver refused metadata");
                false
            }
            Outcome::Transport | Outcome::Credentials => {
                tracing::warn!(endpoint = %self.endpoint, error = %answer.message, "sending metadata failed; next attempt at the next interval");
                false
            }
        };
        let outcome = if ok { "success" } else { "failure" };
        self.telemetry.add(
            telemetry::RW_METADATA_REQUESTS,
            &[("endpoint", &self.endpoint), ("outcome", outcome)],
            1.0,
        );
        ok
    }

    /// Sends the store every `interval` until `shutdown`; the first send waits one interval,
    /// so the scrapes have filled the store.
    pub async fn run(
        self,
        store: Arc<MetadataStore>,
        interval: Duration,
        shutdown: CancellationToken,
    ) {
        let start = tokio::time::Instant::now() + interval;
        let mut ticker = tokio::time::interval_at(start, interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.send(&store) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn family(
        name: &str,
        kind: FamilyType,
        help: Option<&str>,
        unit: Option<&str>,
    ) -> ParsedFamily {
        ParsedFamily {
            name: name.into(),
            kind,
            help: help.map(Into::into),
            unit: unit.map(Into::into),
        }
    }

    #[test]
    fn encoded_metadata_decodes_with_prost() {
        let families = vec![
            FamilyMetadata {
                name: "node_cpu_seconds".into(),
                kind: FamilyType::Counter,
                help: "Seconds the CPUs spent in each mode.".into(),
                unit: "seconds".into(),
            },
            FamilyMetadata {
                name: "node_load1".into(),
                kind: FamilyType::Gauge,
                help: "1m load average.".into(),
                unit: String::new(),
            },
            FamilyMetadata {
                name: "x".into(),
                kind: FamilyType::GaugeHistogram,
                help: String::new(),
                unit: String::new(),
            },
        ];
        let mut body = Vec::new();
        encode_metadata(&families, &mut body).unwrap();
        let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        let req = WriteRequest::decode(raw.as_slice()).unwrap();
        assert!(req.timeseries.is_empty());
        let got: Vec<(i32, &str, &str, &str)> = req
            .metadata
            .iter()
            .map(|m| {
                (
                    m.r#type,
                    m.metric_family_name.as_str(),
                    m.help.as_str(),
                    m.unit.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    1,
                    "node_cpu_seconds",
                    "Seconds the CPUs spent in each mode.",
                    "seconds"
                ),
                (2, "node_load1", "1m load average.", ""),
                (4, "x", "", ""),
            ]
        );
    }

    #[test]
    fn every_family_type_maps_to_the_protocol_number() {
        let want = [
            (FamilyType::Unknown, 0),
            (FamilyType::Counter, 1),
            (FamilyType::Gauge, 2),
            (FamilyType::Histogram, 3),
            (FamilyType::GaugeHistogram, 4),
            (FamilyType::Summary, 5),
            (FamilyType::Info, 6),
            (FamilyType::StateSet, 7),
        ];
        for (kind, number) in want {
            assert_eq!(proto_type(kind) as i32, number, "{kind:?}");
        }
    }

    #[test]
    fn store_keeps_declared_families_per_target_and_merges_by_name() {
        let store = MetadataStore::new();
        store.set(
            "a",
            vec![
                family("up_total", FamilyType::Counter, Some("h"), None),
                family("bare", FamilyType::Unknown, None, None),
                family("helped", FamilyType::Unknown, Some("only help"), None),
            ],
        );
        store.set(
            "b",
            vec![family("up_total", FamilyType::Counter, Some("other"), None)],
        );
        let names: Vec<(String, String)> = store
            .snapshot()
            .into_iter()
            .map(|f| (f.name, f.help))
            .collect();
        assert_eq!(
            names,
            vec![
                ("helped".to_string(), "only help".to_string()),
                ("up_total".to_string(), "h".to_string()),
            ]
        );
        // A new scrape replaces the target's list; a removed target is forgotten.
        store.set("a", vec![]);
        assert_eq!(store.snapshot()[0].help, "other");
        store.remove("b");
        assert!(store.snapshot().is_empty());
    }
}
