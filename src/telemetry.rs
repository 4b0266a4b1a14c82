//! The agent's own metrics, pushed with everything else.
//!
//! Every self-metric name is declared here, in one place, with its help text; the rest of the
//! code records through [`Telemetry`]. Locking is short (one map update) and never held across
//! an await.

use std::sync::Mutex;

use crate::series::{MetricType, Registry, Sample};

/// Samples accepted by a receiver (2xx), per `endpoint`.
pub const RW_SAMPLES_SENT: &str = "pushprobe_remote_write_samples_sent_total";
/// Samples a receiver refused with a non-retryable status, per `endpoint`.
pub const RW_SAMPLES_FAILED: &str = "pushprobe_remote_write_samples_failed_total";
/// Samples sent again after a retryable failure, per `endpoint`.
pub const RW_SAMPLES_RETRIED: &str = "pushprobe_remote_write_samples_retried_total";
/// Samples dropped without delivery, per `endpoint` and `reason` (`queue_full`, `queue_error`;
/// with a disk queue `disk_full` and `too_old`, as for [`QUEUE_SAMPLES_DROPPED`]).
pub const RW_SAMPLES_DROPPED: &str = "pushprobe_remote_write_samples_dropped_total";
/// Compressed request bytes accepted by a receiver, per `endpoint`.
pub const RW_BYTES_SENT: &str = "pushprobe_remote_write_bytes_sent_total";
/// Write requests by `endpoint` and `outcome` (success, retryable, rejected, transport,
/// credentials).
pub const RW_REQUESTS: &str = "pushprobe_remote_write_requests_total";
/// Samples waiting in the queue, per `endpoint`.
pub const RW_PENDING: &str = "pushprobe_remote_write_pending_samples";
/// Unix time of the last accepted write, per `endpoint`.
pub const RW_LAST_SUCCESS: &str = "pushprobe_remote_write_last_success_timestamp_seconds";
/// 1 for the body compression an endpoint uses now, 0 for the other, per `endpoint` and
/// `compression` (snappy, zstd).
pub const RW_COMPRESSION: &str = "pushprobe_remote_write_compression";
/// Compression handshakes (`?get_vm_proto_version=1`) by `endpoint` and `result` (zstd;
/// status, unexpected, timeout, transport: snappy).
pub const RW_COMPRESSION_HANDSHAKES: &str = "pushprobe_remote_write_compression_handshakes_total";
/// zstd requests refused (400/415) and sent again as snappy, per `endpoint`.
pub const RW_ZSTD_REFUSED: &str = "pushprobe_remote_write_zstd_refused_requests_total";
/// Bytes the disk queue's segments hold (with `agent.data_dir`).
pub const QUEUE_BYTES: &str = "pushprobe_queue_bytes";
/// Segment files of the disk queue.
pub const QUEUE_SEGMENTS: &str = "pushprobe_queue_segments";
/// The disk queue's size limit (`agent.queue.max_disk_bytes`), for "queue filling up" alerts.
pub const QUEUE_CAPACITY_BYTES: &str = "pushprobe_queue_capacity_bytes";
/// Corrupt disk-queue records skipped, at start-up and when reading.
pub const QUEUE_CORRUPT_RECORDS: &str = "pushprobe_queue_corrupt_records_total";
/// Samples the disk queue dropped unsent, by `reason` (`disk_full`: the oldest segment made
/// room under `max_disk_bytes` or on a full filesystem (ENOSPC, EDQUOT), or a full filesystem
/// left no room for new samples; counted once whatever the number of endpoints; `too_old`:
/// older than `max_sample_age`, summed over endpoints).
pub const QUEUE_SAMPLES_DROPPED: &str = "pushprobe_queue_samples_dropped_total";
/// Disk-queue appends that failed on a write or sync error.
pub const QUEUE_WRITE_ERRORS: &str = "pushprobe_queue_write_errors_total";
/// Pushgateway requests by `gateway` and `outcome` (success, deleted, retryable, rejected,
/// transport).
pub const PG_REQUESTS: &str = "pushprobe_pushgateway_requests_total";
/// Unix time of the last accepted push, per `gateway`.
pub const PG_LAST_SUCCESS: &str = "pushprobe_pushgateway_last_success_timestamp_seconds";
/// Probe runs by `probe` and `outcome` (success, failure).
pub const PROBE_RUNS: &str = "pushprobe_probe_runs_total";
/// Probe attempts by `probe` and `outcome` (success, failure); a run with `retries` makes
/// up to `retries + 1`.
pub const PROBE_ATTEMPTS: &str = "pushprobe_probe_attempts_total";
/// Scrapes that failed (`up` = 0), by `scrape_job` and `reason` (http, timeout,
/// body_size_limit, parse, sample_limit). Not `job`: that label names the scraped series' job.
pub const SCRAPE_FAILURES: &str = "pushprobe_scrape_failures_total";
/// Scraped samples not forwarded, by `scrape_job` and `reason` (out_of_order,
/// duplicate_timestamp, no_metric_name).
pub const SCRAPE_SAMPLES_REJECTED: &str = "pushprobe_scrape_samples_rejected_total";
/// Metadata-only write requests, by `endpoint` and `outcome` (success, failure).
pub const RW_METADATA_REQUESTS: &str = "pushprobe_remote_write_metadata_requests_total";
/// 1 for the remote-write message an `endpoint` is sent now, 0 for the other, by `message`
/// (`prometheus.WriteRequest`, `io.prometheus.write.v2.Request`).
pub const RW_PROTOCOL: &str = "pushprobe_remote_write_protocol";
/// Requests a 2.0 receiver wrote only part of (fewer `-Written` than sent), per `endpoint`.
pub const RW_PARTIAL_WRITES: &str = "pushprobe_remote_write_partial_writes_total";
/// Answers that broke the protocol, per `endpoint` and `reason` (`written_not_a_number`,
/// `written_exceeds_sent`, `success_with_body`).
pub const RW_INVALID_ANSWERS: &str = "pushprobe_remote_write_invalid_answers_total";
/// Discovery refreshes that failed (the last good targets stay), by `mechanism` (file,
/// http, dns) and `config` (the job or probe), as Prometheus' `prometheus_sd_refresh_failures_total`.
pub const SD_REFRESH_FAILURES: &str = "pushprobe_sd_refresh_failures_total";
/// Targets discovered before relabeling, per `config`, as `prometheus_sd_discovered_targets`.
pub const SD_DISCOVERED_TARGETS: &str = "pushprobe_sd_discovered_targets";
/// Always 1, labelled with `version`: the agent's heartbeat series.
pub const BUILD_INFO: &str = "pushprobe_build_info";
/// Unix time at which the agent started.
pub const START_TIME: &str = "pushprobe_start_time_seconds";
/// Samples still queued for remote-write endpoints a reload removed, dropped once their drain
/// deadline (`agent.drain_timeout`) passed; agent-wide, since the removed endpoint's own
/// series end (its name is in the log line).
pub const RW_REMOVED_SAMPLES_DROPPED: &str =
    "pushprobe_remote_write_removed_endpoint_samples_dropped_total";
/// 1 when the last configuration reload applied, 0 when it was refused.
pub const CONFIG_LAST_RELOAD_SUCCESSFUL: &str = "pushprobe_config_last_reload_successful";
/// Unix time of the last configuration load or reload that applied.
pub const CONFIG_LAST_RELOAD_SUCCESS_TIME: &str =
    "pushprobe_config_last_reload_success_timestamp_seconds";

const DESCRIPTIONS: &[(&str, MetricType, &str)] = &[
    (
        RW_REMOVED_SAMPLES_DROPPED,
        MetricType::Counter,
        "Samples still queued for remote-write endpoints a reload removed, dropped at their drain deadline.",
    ),
    (
        CONFIG_LAST_RELOAD_SUCCESSFUL,
        MetricType::Gauge,
        "1 if the last configuration reload applied, 0 if it was refused.",
    ),
    (
        CONFIG_LAST_RELOAD_SUCCESS_TIME,
        MetricType::Gauge,
        "Unix time of the last configuration load or reload that applied.",
    ),
    (
        SD_REFRESH_FAILURES,
        MetricType::Counter,
        "Discovery refreshes that failed; the last good targets stay.",
    ),
    (
        SD_DISCOVERED_TARGETS,
        MetricType::Gauge,
        "Targets discovered before relabeling.",
    ),
    (
        RW_SAMPLES_SENT,
        MetricType::Counter,
        "Samples accepted by the receiver.",
    ),
    (
        RW_SAMPLES_FAILED,
        MetricType::Counter,
        "Samples refused by the receiver with a non-retryable status.",
    ),
    (
        RW_SAMPLES_RETRIED,
        MetricType::Counter,
        "Samples sent again after a retryable failure.",
    ),
    (
        RW_SAMPLES_DROPPED,
        MetricType::Counter,
        "Samples dropped without delivery, by reason.",
    ),
    (
        RW_BYTES_SENT,
        MetricType::Counter,
        "Compressed bytes accepted by the receiver.",
    ),
    (
        RW_REQUESTS,
        MetricType::Counter,
        "Remote-write requests by outcome.",
    ),
    (RW_PENDING, MetricType::Gauge, "Samples waiting to be sent."),
    (
        RW_LAST_SUCCESS,
        MetricType::Gauge,
        "Unix time of the last accepted write.",
    ),
    (
        RW_COMPRESSION,
        MetricType::Gauge,
        "1 for the body compression in use, 0 for the other.",
    ),
    (
        RW_COMPRESSION_HANDSHAKES,
        MetricType::Counter,
        "Compression handshakes with the receiver, by result.",
    ),
    (
        RW_ZSTD_REFUSED,
        MetricType::Counter,
        "zstd requests refused by the receiver and sent again as snappy.",
    ),
    (
        QUEUE_BYTES,
        MetricType::Gauge,
        "Bytes held by the disk queue's segments.",
    ),
    (
        QUEUE_SEGMENTS,
        MetricType::Gauge,
        "Segment files of the disk queue.",
    ),
    (
        QUEUE_CAPACITY_BYTES,
        MetricType::Gauge,
        "Most bytes the disk queue may hold (agent.queue.max_disk_bytes).",
    ),
    (
        QUEUE_CORRUPT_RECORDS,
        MetricType::Counter,
        "Corrupt disk-queue records skipped.",
    ),
    (
        QUEUE_SAMPLES_DROPPED,
        MetricType::Counter,
        "Samples the disk queue dropped unsent, by reason.",
    ),
    (
        QUEUE_WRITE_ERRORS,
        MetricType::Counter,
        "Disk-queue appends that failed on a write or sync error.",
    ),
    (
        PG_REQUESTS,
        MetricType::Counter,
        "Pushgateway requests by outcome.",
    ),
    (
        PG_LAST_SUCCESS,
        MetricType::Gauge,
        "Unix time of the last accepted Pushgateway push.",
    ),
    (PROBE_RUNS, MetricType::Counter, "Probe runs by outcome."),
    (
        PROBE_ATTEMPTS,
        MetricType::Counter,
        "Probe attempts by outcome (a run retries failed attempts up to its retries).",
    ),
    (
        SCRAPE_FAILURES,
        MetricType::Counter,
        "Failed scrapes (up = 0) by job and reason.",
    ),
    (
        SCRAPE_SAMPLES_REJECTED,
        MetricType::Counter,
        "Scraped samples not forwarded, by job and reason.",
    ),
    (
        RW_METADATA_REQUESTS,
        MetricType::Counter,
        "Metadata-only remote-write requests by outcome.",
    ),
    (
        RW_PROTOCOL,
        MetricType::Gauge,
        "1 for the remote-write message the endpoint is sent now.",
    ),
    (
        RW_PARTIAL_WRITES,
        MetricType::Counter,
        "Requests the receiver wrote only part of.",
    ),
    (
        RW_INVALID_ANSWERS,
        MetricType::Counter,
        "Receiver answers that broke the remote-write protocol, by reason.",
    ),
    (
        BUILD_INFO,
        MetricType::Gauge,
        "Always 1; labelled with the pushprobe version.",
    ),
    (
        START_TIME,
        MetricType::Gauge,
        "Unix time at which the agent started.",
    ),
];

/// What some of the agent's own series are about, so that they can end with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject<'a> {
    /// A probe, by name: its runs and attempts, and its discovery's series.
    Probe(&'a str),
    /// A scrape job, by name: its failures and rejected samples, and its discovery's series.
    ScrapeJob(&'a str),
    /// A remote-write endpoint, by name: every series labelled `endpoint` with it.
    Endpoint(&'a str),
    /// A Pushgateway sink, by name: every series labelled `gateway` with it.
    Gateway(&'a str),
}

impl<'a> Subject<'a> {
    /// Its name, and the families with series about it, each with the label naming it; a
    /// sink's series are in many families, all labelled alike: `None`.
    fn families(self) -> Option<(&'a str, &'static [(&'static str, &'static str)])> {
        Some(match self {
            Subject::Probe(name) => (
                name,
                &[
                    (PROBE_RUNS, "probe"),
                    (PROBE_ATTEMPTS, "probe"),
                    (SD_REFRESH_FAILURES, "config"),
                    (SD_DISCOVERED_TARGETS, "config"),
                ],
            ),
            Subject::ScrapeJob(name) => (
                name,
                &[
                    (SCRAPE_FAILURES, "scrape_job"),
                    (SCRAPE_SAMPLES_REJECTED, "scrape_job"),
                    (SD_REFRESH_FAILURES, "config"),
                    (SD_DISCOVERED_TARGETS, "config"),
                ],
            ),
            Subject::Endpoint(_) | Subject::Gateway(_) => return None,
        })
    }

    /// The label every series of a sink carries, and its value.
    fn sink_label(self) -> Option<(&'static str, &'a str)> {
        match self {
            Subject::Endpoint(name) => Some(("endpoint", name)),
            Subject::Gateway(name) => Some(("gateway", name)),
            Subject::Probe(_) | Subject::ScrapeJob(_) => None,
        }
    }
}

/// The agent's self-metrics registry.
pub struct Telemetry {
    registry: Mutex<Registry>,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    /// Creates the registry with every family declared and the build info set.
    pub fn new() -> Self {
        Self::with_native(None)
    }

    /// Like [`Telemetry::new`], with the agent's histograms kept as native ones when
    /// `native` is set (`[agent] native_histograms`); probe registries follow suit (see
    /// [`Telemetry::native`]).
    pub fn with_native(native: Option<crate::series::native::NativeOptions>) -> Self {
        let mut r = Registry::with_native(native);
        for (name, kind, help) in DESCRIPTIONS {
            r.describe(name, *kind, help);
        }
        let _ = r.gauge_set(BUILD_INFO, &[("version", env!("CARGO_PKG_VERSION"))], 1.0);
        let _ = r.gauge_set(START_TIME, &[], crate::clock::now_ms() as f64 / 1000.0);
        Telemetry {
            registry: Mutex::new(r),
        }
    }

    /// Runs `f` on the registry. A poisoned lock still holds consistent counters (each update
    /// is a single assignment), so it is taken over rather than propagated.
    pub fn with<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> R {
        let mut g = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    /// Adds to a counter; label names are static so a failure is a bug, logged not raised.
    pub fn add(&self, name: &str, labels: &[(&str, &str)], delta: f64) {
        self.with(|r| {
            if let Err(e) = r.counter_add(name, labels, delta) {
                tracing::error!(metric = name, error = %e, "self-metric not recorded");
            }
        })
    }

    /// Sets a gauge.
    pub fn set(&self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.with(|r| {
            if let Err(e) = r.gauge_set(name, labels, value) {
                tracing::error!(metric = name, error = %e, "self-metric not recorded");
            }
        })
    }

    /// The native histogram options of the agent's histograms, for the registries probes
    /// record into.
    pub fn native(&self) -> Option<crate::series::native::NativeOptions> {
        self.with(|r| r.native())
    }

    /// Current value of a counter or gauge (for reports and tests).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.with(|r| r.value(name, labels))
    }

    /// Removes the series about `subject`, a probe, scrape job or sink that is gone (removed or
    /// replaced by a reload), and returns their staleness markers stamped `timestamp_ms`:
    /// kept, they would stay on `/metrics` and on the wire for as long as the agent runs.
    pub fn end(&self, subject: Subject<'_>, timestamp_ms: i64) -> Vec<Sample> {
        self.with(|r| {
            if let Some((label, name)) = subject.sink_label() {
                r.remove_labelled(label, name);
            }
            if let Some((name, families)) = subject.families() {
                let ended: Vec<(&str, crate::series::Labels)> = families
                    .iter()
                    .flat_map(|&(family, label)| {
                        r.families()
                            .find(|f| f.meta.name == family)
                            .into_iter()
                            .flat_map(|f| f.series.keys())
                            .filter(move |key| key.get(label) == Some(name))
                            .map(move |key| (family, key.clone()))
                    })
                    .collect();
                for (family, key) in &ended {
                    let pairs: Vec<(&str, &str)> = key.iter().map(|l| (l.name, l.value)).collect();
                    r.remove(family, &pairs);
                }
            }
            r.take_stale_markers(timestamp_ms)
        })
    }

    /// All self-metrics as samples stamped `timestamp_ms`.
    pub fn samples_at(&self, timestamp_ms: i64) -> Vec<Sample> {
        self.with(|r| r.samples_at(timestamp_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A probe that goes takes its runs, attempts and discovery series with it, as staleness
    /// markers; another probe's, and a scrape job's of the same name, stay.
    #[test]
    fn ending_a_subject_removes_its_series_and_marks_them_stale() {
        let t = Telemetry::new();
        for probe in ["gone", "kept"] {
            t.add(PROBE_RUNS, &[("probe", probe), ("outcome", "success")], 1.0);
            t.add(
                PROBE_ATTEMPTS,
                &[("probe", probe), ("outcome", "failure")],
                2.0,
            );
            t.set(SD_DISCOVERED_TARGETS, &[("config", probe)], 3.0);
        }
        t.add(
            SCRAPE_FAILURES,
            &[("scrape_job", "gone"), ("reason", "http")],
            1.0,
        );
        let markers = t.end(Subject::Probe("gone"), 1234);
        let mut ended: Vec<String> = markers
            .iter()
            .map(|s| {
                assert!(crate::series::is_stale_nan(s.value), "{s:?}");
                assert_eq!(s.timestamp_ms, 1234);
                s.labels.metric_name().to_string()
            })
            .collect();
        ended.sort();
        assert_eq!(
            ended,
            [PROBE_ATTEMPTS, PROBE_RUNS, SD_DISCOVERED_TARGETS],
            "{markers:?}"
        );
        assert_eq!(
            t.value(PROBE_RUNS, &[("probe", "gone"), ("outcome", "success")]),
            None
        );
        assert_eq!(
            t.value(PROBE_RUNS, &[("probe", "kept"), ("outcome", "success")]),
            Some(1.0)
        );
        assert_eq!(
            t.value(SD_DISCOVERED_TARGETS, &[("config", "kept")]),
            Some(3.0)
        );
        assert_eq!(
            t.value(
                SCRAPE_FAILURES,
                &[("scrape_job", "gone"), ("reason", "http")]
            ),
            Some(1.0)
        );
        assert!(t.end(Subject::Probe("gone"), 1300).is_empty(), "ended once");
        let rendered = t.with(|r| crate::exposition::render(r));
        assert!(
            !rendered.contains("probe=\"gone\"") && !rendered.contains("config=\"gone\""),
            "{rendered}"
        );
    }

    /// A scrape job that goes takes its failures, rejected samples and discovery series with
    /// it; another job's, and a probe's of the same name, stay.
    #[test]
    fn ending_a_scrape_job_removes_its_series_and_marks_them_stale() {
        let t = Telemetry::new();
        for job in ["gone", "kept"] {
            t.add(
                SCRAPE_FAILURES,
                &[("scrape_job", job), ("reason", "http")],
                1.0,
            );
            t.add(
                SCRAPE_SAMPLES_REJECTED,
                &[("scrape_job", job), ("reason", "no_metric_name")],
                2.0,
            );
            t.add(
                SD_REFRESH_FAILURES,
                &[("mechanism", "file"), ("config", job)],
                0.0,
            );
        }
        t.add(
            PROBE_RUNS,
            &[("probe", "gone"), ("outcome", "success")],
            1.0,
        );
        let markers = t.end(Subject::ScrapeJob("gone"), 1234);
        let mut ended: Vec<String> = markers
            .iter()
            .map(|s| {
                assert!(crate::series::is_stale_nan(s.value), "{s:?}");
                s.labels.metric_name().to_string()
            })
            .collect();
        ended.sort();
        assert_eq!(
            ended,
            [
                SCRAPE_FAILURES,
                SCRAPE_SAMPLES_REJECTED,
                SD_REFRESH_FAILURES
            ],
            "{markers:?}"
        );
        assert_eq!(
            t.value(
                SCRAPE_FAILURES,
                &[("scrape_job", "kept"), ("reason", "http")]
            ),
            Some(1.0)
        );
        assert_eq!(
            t.value(
                SD_REFRESH_FAILURES,
                &[("mechanism", "file"), ("config", "kept")]
            ),
            Some(0.0)
        );
        assert_eq!(
            t.value(PROBE_RUNS, &[("probe", "gone"), ("outcome", "success")]),
            Some(1.0)
        );
        let rendered = t.with(|r| crate::exposition::render(r));
        assert!(
            !rendered.contains("scrape_job=\"gone\"") && !rendered.contains("config=\"gone\""),
            "{rendered}"
        );
    }
}
