//! Wiring: builds probes, queues and senders from validated settings, schedules the probes,
//! fans their samples out to every receiver's queue, and shuts down in order.
//!
//! Shutdown order, for `run`: the shutdown token stops the probe loops (an in-flight probe run
//! is abandoned, so nothing half-measured is sent), a self-metrics snapshot is queued, then the
//! senders flush their queues; once they are empty, a last snapshot is queued (so the last one
//! stored says what the flush achieved, nothing pending, not what it started from) and the
//! senders are stopped. Flush and stop share `drain_timeout`; after it the senders are aborted.
//! Every task lives in a [`TaskTracker`] and is awaited; none is left running.
//!
//! Reload, for `run`: each probe and scrape job runs as its own unit under a child of the
//! shutdown token, keyed by name, so a reload (see [`crate::reload`]) stops, restarts or starts
//! units one by one. Senders and Pushgateway sinks run by name too: a changed endpoint's sender
//! finishes the window in flight and hands its queue, as it is, to a sender built from the new
//! settings; an added endpoint gets a queue (or a position at the disk queue's tail) and a
//! sender; a removed one leaves the fan-out and drains what was queued for it, within
//! `drain_timeout`, before the rest is released (see docs/delivery.md).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock, RwLockReadGuard};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::now_ms;
use crate::config::PushMethod;
use crate::config::{ProbeSettings, RemoteWriteSettings, Settings};
use crate::probe::{Probe, ProbeError, ProbeReport, RunAttempts};
use crate::pushgateway::{Feed, PushError, PushgatewaySink, SinkStatus};
use crate::queue::disk::fs::RealFs;
use crate::queue::disk::{DiskLog, DropCounts};
use crate::queue::live::LiveLane;
use crate::queue::memory::MemoryQueue;
use crate::queue::{AppendOutcome, Origin, Priority, QueueError, SharedQueue};
use crate::remote_write::catalog::SeriesCatalog;
use crate::remote_write::protocol::Protocol;
use crate::remote_write::{Drain, Sender, SenderControl, SenderError};
use crate::scrape::metadata::{MetadataSender, MetadataStore};
use crate::scrape::scraper::{JobClient, ScrapeSetupError, Scraped, Scraper};
use crate::scrape::target::REPORT_SERIES;
use crate::series::{Registry, Sample};
use crate::telemetry::{self, Telemetry};

/// The source the agent's own metrics are queued as.
pub const SELF_SOURCE: &str = "pushprobe";

/// Name of the lock file in `agent.data_dir`.
pub const LOCK_FILE: &str = "pushprobe.lock";

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A probe could not be built.
    #[error(transparent)]
    Probe(#[from] ProbeError),
    /// A sender could not be built.
    #[error(transparent)]
    Sender(#[from] SenderError),
    /// A Pushgateway sink could not be built.
    #[error(transparent)]
    Pushgateway(#[from] PushError),
    /// The health listener could not bind its address.
    #[error(transparent)]
    Listen(#[from] crate::listener::ListenError),
    /// A scrape job's HTTP client could not be built.
    #[error(transparent)]
    Scrape(#[from] ScrapeSetupError),
    /// A discovery mechanism could not be set up.
    #[error(transparent)]
    Discovery(#[from] crate::discovery::ProviderError),
    /// Another process holds the data directory.
    #[error(
        "agent.data_dir {dir} is in use by another pushprobe process (it holds the lock on \
         {dir}/{LOCK_FILE}); two agents must not share one queue: give each its own data_dir"
    )]
    DataDirLocked {
        /// The data directory.
        dir: String,
    },
    /// The data directory or its lock file could not be used.
    #[error("agent.data_dir {dir}: {source}")]
    DataDir {
        /// The data directory.
        dir: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The disk queue could not be opened.
    #[error("agent.data_dir {dir}: opening the disk queue: {source}")]
    Queue {
        /// The queue directory.
        dir: String,
        /// The underlying error.
        #[source]
        source: QueueError,
    },
}

/// One receiver's queue, by endpoint name.
struct Output {
    endpoint: String,
    queue: Arc<SharedQueue>,
}

/// How a published batch reaches the receivers' queues.
enum Fanout {
    /// One bounded memory queue per receiver: each gets its own append.
    Memory,
    /// One durable log shared by every receiver: appended once, then every sender is woken.
    Disk(DiskQueue),
}

/// The open disk queue and what keeps it exclusive.
struct DiskQueue {
    log: Arc<DiskLog>,
    /// `agent.queue.max_disk_bytes`, exported so alerts can tell how full the queue is.
    capacity_bytes: u64,
    /// Holds the data directory's lock for as long as the queue is open.
    _lock: std::fs::File,
    /// Counters already exported, so each export adds only what is new.
    exported: Mutex<Exported>,
}

/// Disk-queue counters as last exported to telemetry.
#[derive(Default)]
struct Exported {
    corrupt_records: u64,
    write_errors: u64,
    dropped: DropCounts,
    /// By endpoint name: endpoints come and go with reloads.
    per_endpoint: BTreeMap<String, DropCounts>,
}

/// The queues of every receiver; publishing appends to each of them (or once to the log).
pub struct Pipeline {
    /// Read on every publish; written only when a reload adds or removes an endpoint.
    outputs: RwLock<Vec<Output>>,
    fanout: Fanout,
    /// The latest results per source, for the Pushgateway sinks; set once the first one is
    /// configured, at start or by a reload.
    feed: OnceLock<Arc<Feed>>,
    telemetry: Arc<Telemetry>,
    /// `job` and `instance` of the agent's own series as pushed (see
    /// [`AgentSettings::self_labels`](crate::config::AgentSettings::self_labels)); the
    /// `/metrics` listener leaves them to its scraper.
    self_labels: Vec<(String, String)>,
    /// Metadata and start times of the series sent, for remote write 2.0 endpoints; set once
    /// the first one is configured, at start or by a reload.
    catalog: OnceLock<Arc<SeriesCatalog>>,
}

impl Pipeline {
    /// The receivers' queues as they are now.
    fn outputs(&self) -> RwLockReadGuard<'_, Vec<Output>> {
        self.outputs.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds the queue of an endpoint a reload added: it gets what is published from now on.
    fn add_output(&self, output: Output) {
        let mut outputs = self.outputs.write().unwrap_or_else(PoisonError::into_inner);
        outputs.push(output);
    }

    /// Takes the queue of an endpoint a reload removed out of the fan-out: nothing published
    /// from now on reaches it.
    fn remove_output(&self, endpoint: &str) -> Option<Output> {
        let mut outputs = self.outputs.write().unwrap_or_else(PoisonError::into_inner);
        let i = outputs.iter().position(|o| o.endpoint == endpoint)?;
        let output = outputs.remove(i);
        output.queue.with(|q| q.end_input());
        Some(output)
    }

    /// The queue of `endpoint`, if it is configured.
    fn queue_of(&self, endpoint: &str) -> Option<Arc<SharedQueue>> {
        self.outputs()
            .iter()
            .find(|o| o.endpoint == endpoint)
            .map(|o| o.queue.clone())
    }

    /// Ends the self-metrics of a sink a reload removed (`Subject::Endpoint` or
    /// `Subject::Gateway`) with staleness markers, so they do not linger in the receivers.
    fn end_sink_series(&self, subject: telemetry::Subject<'_>) {
        // Held until the series are gone: see `export_disk_stats`.
        let mut exported = match &self.fanout {
            Fanout::Disk(disk) => Some(disk.exported.lock().unwrap_or_else(|p| p.into_inner())),
            Fanout::Memory => None,
        };
        if let (Some(ex), telemetry::Subject::Endpoint(name)) = (exported.as_mut(), subject) {
            ex.per_endpoint.remove(name);
        }
        let markers = self.telemetry.end(subject, now_ms());
        drop(exported);
        self.publish_self(markers);
    }

    /// Publishes one run of `source` (a probe, an `exec` job): its samples stamped
    /// `timestamp_ms` to every remote-write queue, and its registry to the Pushgateway sinks.
    pub fn publish_run(&self, source: &str, registry: &Registry, timestamp_ms: i64) {
        if let Some(catalog) = self.catalog.get() {
            catalog.note_registry(registry);
        }
        self.publish_from(
            Origin::new(source, Priority::Report),
            registry.samples_at(timestamp_ms),
        );
        if let Some(feed) = self.feed.get() {
            feed.set(source, registry);
        }
    }

    /// Queues the agent's own samples (self-metrics) for every receiver, counting what a full
    /// queue pushed out.
    pub fn publish(&self, samples: Vec<Sample>) {
        self.publish_from(Origin::new(SELF_SOURCE, Priority::Report), samples);
    }

    /// Queues samples of one source, all of one priority, for every receiver.
    pub fn publish_from(&self, origin: Origin<'_>, samples: Vec<Sample>) {
        let report_from = match origin.priority {
            Priority::Bulk => samples.len(),
            Priority::Report => 0,
        };
        self.publish_scraped(origin.source, samples, report_from);
    }

    /// Queues samples of `source` for every receiver: bulk ones, then from `report_from` on
    /// the ones a full queue keeps longest (see [`Priority`]).
    pub fn publish_scraped(&self, source: &str, mut samples: Vec<Sample>, report_from: usize) {
        if samples.is_empty() {
            return;
        }
        if let Some(catalog) = self.catalog.get() {
            catalog.note_created(&samples);
        }
        match &self.fanout {
            Fanout::Memory => {
                let report = match report_from {
                    0 => std::mem::take(&mut samples),
                    n if n >= samples.len() => Vec::new(),
                    n => samples.split_off(n),
                };
                for (priority, part) in [(Priority::Bulk, samples), (Priority::Report, report)] {
                    if !part.is_empty() {
                        self.publish_to_each(Origin::new(source, priority), part);
                    }
                }
            }
            // The log is bounded in bytes for every source alike.
            Fanout::Disk(disk) => self.publish_to_log(&disk.log, &samples),
        }
    }

    /// Copies the samples into each memory queue but the last, which takes them.
    fn publish_to_each(&self, origin: Origin<'_>, samples: Vec<Sample>) {
        let count = samples.len();
        let outputs = self.outputs();
        let Some((last, others)) = outputs.split_last() else {
            return;
        };
        for out in others {
            self.count_append(out, out.queue.append_from(origin, samples.clone()), count);
        }
        self.count_append(last, last.queue.append_from(origin, samples), count);
    }

    /// Counts and logs what an append of `count` samples to one memory queue lost.
    fn count_append(
        &self,
        out: &Output,
        appended: Result<AppendOutcome, QueueError>,
        count: usize,
    ) {
        match appended {
            Ok(o) if o.dropped_oldest > 0 => {
                self.telemetry.add(
                    telemetry::RW_SAMPLES_DROPPED,
                    &[("endpoint", &out.endpoint), ("reason", "queue_full")],
                    o.dropped_oldest as f64,
                );
                tracing::warn!(
                    endpoint = %out.endpoint,
                    dropped = o.dropped_oldest,
                    "queue full: dropped the oldest samples of the sources holding the most; raise queue_capacity, lower sample_limit or check the receiver"
                );
            }
            Ok(_) => {}
            Err(e) => {
                self.telemetry.add(
                    telemetry::RW_SAMPLES_DROPPED,
                    &[("endpoint", &out.endpoint), ("reason", "queue_error")],
                    count as f64,
                );
                tracing::error!(endpoint = %out.endpoint, error = %e, "could not queue samples");
            }
        }
    }

    fn publish_to_log(&self, log: &DiskLog, samples: &[Sample]) {
        // Held across the append, so that an endpoint a reload removes meanwhile is either
        // told of these samples or, ended at the log's tail, never reads them.
        let outputs = self.outputs();
        match log.append(samples) {
            Ok(o) => {
                // Samples the disk bound pushed out are counted per endpoint (reason
                // disk_full) from the log's own figures, when self-metrics are recorded.
                if o.dropped_oldest > 0 {
                    tracing::warn!(
                        dropped = o.dropped_oldest,
                        "disk queue full: dropped the oldest samples; raise agent.queue.max_disk_bytes or check the receivers"
                    );
                }
                for out in outputs.iter() {
                    out.queue.announce(samples, o.first_seq);
                }
            }
            Err(e) if e.is_out_of_space() => {
                // The log counted what it could not store (reason disk_full, exported from
                // its figures) and logs a full filesystem itself, once a minute at most.
                tracing::debug!(error = %e, samples = samples.len(), "disk queue: no room for samples");
                for out in outputs.iter() {
                    out.queue.appended.notify_one();
                }
            }
            Err(e) => {
                for out in outputs.iter() {
                    self.telemetry.add(
                        telemetry::RW_SAMPLES_DROPPED,
                        &[("endpoint", &out.endpoint), ("reason", "queue_error")],
                        samples.len() as f64,
                    );
                    // Records of this batch written before the error are still delivered.
                    out.queue.appended.notify_one();
                }
                tracing::error!(error = %e, samples = samples.len(), "could not queue samples on disk");
            }
        }
    }

    /// Samples not yet acknowledged, summed over receivers.
    pub fn pending(&self) -> usize {
        self.outputs().iter().map(|o| o.queue.pending()).sum()
    }

    /// Forces queued data and positions to stable storage (disk queue only).
    fn flush(&self) {
        if let Fanout::Disk(disk) = &self.fanout {
            match disk.log.flush() {
                Ok(()) => tracing::info!("disk queue flushed"),
                Err(e) => tracing::error!(error = %e, "disk queue: final flush failed"),
            }
        }
    }

    /// Records the queue depth gauges and returns the self-metrics as samples.
    fn self_metrics(&self, timestamp_ms: i64) -> Vec<Sample> {
        for out in self.outputs().iter() {
            self.telemetry.set(
                telemetry::RW_PENDING,
                &[("endpoint", &out.endpoint)],
                out.queue.pending() as f64,
            );
        }
        if let Fanout::Disk(disk) = &self.fanout {
            self.export_disk_stats(disk);
        }
        if let Some(catalog) = self.catalog.get() {
            self.telemetry.with(|r| catalog.note_registry(r));
        }
        let mut samples = self.telemetry.samples_at(timestamp_ms);
        self.label_as_self(&mut samples);
        samples
    }

    /// Publishes the agent's own samples (staleness markers of ended series) with the labels
    /// they are pushed with.
    fn publish_self(&self, mut samples: Vec<Sample>) {
        self.label_as_self(&mut samples);
        self.publish(samples);
    }

    /// Gives the agent's own samples the labels they are pushed with.
    fn label_as_self(&self, samples: &mut [Sample]) {
        for sample in samples {
            for (name, value) in &self.self_labels {
                sample.labels = sample.labels.with(name, value);
            }
        }
    }

    /// Exports the disk queue's figures: gauges as they are, counters by what they grew.
    fn export_disk_stats(&self, disk: &DiskQueue) {
        // The figures are read under the lock `end_sink_series` takes too, so that the
        // series of an endpoint a reload removed are never exported again once ended.
        let mut ex = disk.exported.lock().unwrap_or_else(|p| p.into_inner());
        let stats = &disk.log.stats();
        let t = &self.telemetry;
        t.set(telemetry::QUEUE_BYTES, &[], stats.bytes as f64);
        t.set(telemetry::QUEUE_SEGMENTS, &[], stats.segments as f64);
        t.set(
            telemetry::QUEUE_CAPACITY_BYTES,
            &[],
            disk.capacity_bytes as f64,
        );
        let grow = |now: u64, before: &mut u64| {
            let d = now.saturating_sub(*before);
            *before = now.max(*before);
            d as f64
        };
        t.add(
            telemetry::QUEUE_CORRUPT_RECORDS,
            &[],
            grow(stats.corrupt_records, &mut ex.corrupt_records),
        );
        t.add(
            telemetry::QUEUE_WRITE_ERRORS,
            &[],
            grow(stats.write_errors, &mut ex.write_errors),
        );
        t.add(
            telemetry::QUEUE_SAMPLES_DROPPED,
            &[("reason", "disk_full")],
            grow(stats.dropped.disk_full, &mut ex.dropped.disk_full),
        );
        t.add(
            telemetry::QUEUE_SAMPLES_DROPPED,
            &[("reason", "too_old")],
            grow(stats.dropped.too_old, &mut ex.dropped.too_old),
        );
        for c in &stats.consumers {
            let before = ex.per_endpoint.entry(c.name.clone()).or_default();
            for (reason, now, before) in [
                ("disk_full", c.dropped.disk_full, &mut before.disk_full),
                ("too_old", c.dropped.too_old, &mut before.too_old),
            ] {
                t.add(
                    telemetry::RW_SAMPLES_DROPPED,
                    &[("endpoint", &c.name), ("reason", reason)],
                    grow(now, before),
                );
            }
        }
    }
}

/// Takes the data directory's exclusive lock (released by the OS when the process dies, also
/// on SIGKILL, so a crash never leaves a stale lock behind).
fn lock_data_dir(dir: &Path) -> Result<std::fs::File, AgentError> {
    let io = |source| AgentError::DataDir {
        dir: dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK_FILE))
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(AgentError::DataDirLocked {
            dir: dir.display().to_string(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
    }
}

/// What would stop `run` from taking `dir`'s lock, found without creating or changing
/// anything: a lock file this user cannot open for writing, or one a running agent holds.
fn data_dir_warning(dir: &Path) -> Option<String> {
    let lock = dir.join(LOCK_FILE);
    let file = match std::fs::OpenOptions::new().write(true).open(&lock) {
        Ok(f) => f,
        // No lock file yet: `run` creates it (and the directory); only then can it fail.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            return Some(format!(
                "agent.data_dir {}: {}: {e}; run would refuse to start",
                dir.display(),
                lock.display()
            ))
        }
    };
    // A shared lock, released at once, shows a running agent's exclusive one; only an agent
    // starting within those microseconds would find the directory taken.
    match file.try_lock_shared() {
        Ok(()) => None,
        Err(std::fs::TryLockError::WouldBlock) => Some(format!(
            "agent.data_dir {} is in use by a running pushprobe; a second `run` with this \
             configuration would refuse to start (once, check and exec use memory queues then)",
            dir.display()
        )),
        Err(std::fs::TryLockError::Error(e)) => Some(format!(
            "agent.data_dir {}: cannot lock {}: {e}",
            dir.display(),
            lock.display()
        )),
    }
}

/// The live lane of a receiver that accepts out-of-order samples: it takes fresh batches once
/// a whole send window is queued ahead of them, and holds a few requests' worth.
fn live_lane(rw: &RemoteWriteSettings) -> Option<LiveLane> {
    rw.accepts_out_of_order.then(|| {
        LiveLane::new(
            rw.max_samples_per_send * rw.max_shards,
            4 * rw.max_samples_per_send,
        )
    })
}

/// Opens the shared disk queue in `data_dir/queue`, one consumer per receiver, after taking
/// the directory's lock; logs what recovery found.
fn open_disk_queue(
    settings: &Settings,
    data_dir: &Path,
) -> Result<(DiskQueue, Vec<Arc<SharedQueue>>), AgentError> {
    let lock = lock_data_dir(data_dir)?;
    let dir: PathBuf = data_dir.join("queue");
    let names: Vec<String> = settings
        .remote_write
        .iter()
        .map(|rw| rw.name.clone())
        .collect();
    let (log, consumers) = DiskLog::open(
        &dir,
        settings.agent.disk_queue.clone(),
        Arc::new(RealFs),
        &names,
    )
    .map_err(|source| AgentError::Queue {
        dir: dir.display().to_string(),
        source,
    })?;
    let report = log.recovery_report();
    let stats = log.stats();
    let pending: Vec<String> = stats
        .consumers
        .iter()
        .map(|c| format!("{}={}", c.name, c.pending))
        .collect();
    if report.found_damage() {
        tracing::warn!(
            dir = %dir.display(),
            segments = report.segments_found,
            samples_recovered = report.samples_recovered,
            samples_lost = report.samples_missing,
            corrupt_regions = report.records_skipped,
            bytes_skipped = report.bytes_skipped,
            bytes_truncated = report.bytes_truncated,
            positions_reset = report.ack_files_reset,
            pending = %pending.join(","),
            "disk queue recovered with damage; resuming from the last acknowledged positions"
        );
    } else {
        tracing::info!(
            dir = %dir.display(),
            segments = report.segments_found,
            samples_recovered = report.samples_recovered,
            new_endpoints = %report.consumers_new.join(","),
            forgotten_endpoints = %report.consumers_forgotten.join(","),
            pending = %pending.join(","),
            "disk queue opened; resuming from the last acknowledged positions"
        );
    }
    let queues = consumers
        .into_iter()
        .zip(&settings.remote_write)
        .map(|(c, rw)| SharedQueue::with_live_lane(Box::new(c), live_lane(rw)))
        .collect();
    Ok((
        DiskQueue {
            log,
            capacity_bytes: settings.agent.disk_queue.max_disk_bytes,
            _lock: lock,
            exported: Mutex::new(Exported::default()),
        },
        queues,
    ))
}

/// The memory queue of one receiver.
fn memory_queue(rw: &RemoteWriteSettings) -> Arc<SharedQueue> {
    SharedQueue::with_live_lane(Box::new(MemoryQueue::new(rw.queue_capacity)), live_lane(rw))
}

/// The sender of one receiver over its `queue`: a 2.0 endpoint gets the series catalog (made
/// with the first such endpoint), one over the disk queue knows its queue is durable.
fn build_sender(
    rw: &RemoteWriteSettings,
    settings: &Settings,
    queue: Arc<SharedQueue>,
    telemetry: &Arc<Telemetry>,
    catalog: &OnceLock<Arc<SeriesCatalog>>,
    metadata: &Arc<MetadataStore>,
    durable: bool,
) -> Result<Sender, SenderError> {
    let sender = Sender::new(
        rw.clone(),
        settings.agent.external_labels.clone(),
        queue,
        telemetry.clone(),
    )?;
    let sender = if rw.protocol == Protocol::V2 {
        let catalog =
            catalog.get_or_init(|| Arc::new(SeriesCatalog::new(Some(metadata.clone()), now_ms())));
        sender.with_series_meta(catalog.clone())
    } else {
        sender
    };
    Ok(if durable {
        sender.with_durable_queue()
    } else {
        sender
    })
}

/// The probes, pipeline and senders built from one configuration.
pub struct Agent {
    settings: Settings,
    probes: Vec<Probe>,
    pipeline: Arc<Pipeline>,
    senders: Vec<Sender>,
    gateways: Vec<PushgatewaySink>,
    gateway_status: Vec<Arc<SinkStatus>>,
    telemetry: Arc<Telemetry>,
    /// One scrape loop per `[[scrape]]` target.
    scrapers: Vec<Scraper>,
    /// Scrape jobs whose targets are discovered while running (file or HTTP discovery).
    discovered_scrapes: Vec<DiscoveredScrape>,
    /// Probes whose targets are discovered.
    discovered_probes: Vec<DiscoveredProbe>,
    /// Metadata of the scraped families, sent by `metadata_senders` (by endpoint name).
    metadata: Arc<MetadataStore>,
    metadata_senders: Vec<(String, MetadataSender)>,
    /// Where `run` reloads its configuration from, and the requests to do so (none: `run`
    /// does not reload).
    reload: Option<Reloading>,
}

/// What `run` needs to reload: the file, the requests, and a trigger for the listener.
struct Reloading {
    path: PathBuf,
    requests: tokio::sync::mpsc::Receiver<crate::reload::ReloadRequest>,
    trigger: crate::reload::ReloadTrigger,
}

/// A probe or scrape job ready to start: built from settings, so a reload can fail before it
/// stops anything.
// A few per reload at most: variant sizes cost nothing worth boxing for.
#[allow(clippy::large_enum_variant)]
enum Job {
    /// A `[[probe]]` with one configured target (boxed as its loop takes it).
    Probe(Box<Probe>, Schedule),
    /// A `[[probe]]` with discovered targets.
    DiscoveredProbe(DiscoveredProbe),
    /// The static targets of a `[[scrape]]` job.
    Scrapes(Vec<Scraper>),
    /// A `[[scrape]]` job with discovery.
    DiscoveredScrape(DiscoveredScrape),
}

/// A started probe or scrape job: stopping its token ends it (its series with staleness
/// markers), and its task ends once they are queued. A metadata sender runs as one too.
struct Unit {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// A running remote-write sender, as a reload finds it.
struct RunningSender {
    /// Hands its queue over, or drains it alone.
    control: SenderControl,
    /// A child of the agent's abort token: ends this sender alone at once.
    abort: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// A running Pushgateway sink, as a reload finds it.
struct RunningGateway {
    /// A child of the drain's flush token: this sink alone pushes what is unsent, deletes its
    /// group if configured, and ends.
    stop: CancellationToken,
    /// A child of the agent's abort token: ends this sink alone at once.
    abort: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// The sinks `run` started, by name, and what starts more: a reload hands over, adds and
/// retires them one by one. Every task lives in `tracker`, so the shutdown drain awaits them
/// all, retiring ones included.
struct Sinks {
    tracker: TaskTracker,
    drain: Drain,
    abort: CancellationToken,
    senders: BTreeMap<String, RunningSender>,
    gateways: BTreeMap<String, RunningGateway>,
    /// The metadata senders of 1.0 endpoints (see [`metadata_endpoints`]), by endpoint name;
    /// they end with the shutdown.
    metadata: BTreeMap<String, Unit>,
    /// Sinks a reload removed that still drain, by [`sink_key`]: one configured again waits
    /// for its predecessor to end, so that one name never has two senders.
    retiring: BTreeMap<String, tokio::task::JoinHandle<()>>,
}

/// The endpoints sent separate metadata requests: the 1.0 ones, while scrape jobs are
/// configured and `metadata_interval` is set (a 2.0 series carries its metadata).
fn metadata_endpoints(settings: &Settings) -> impl Iterator<Item = &RemoteWriteSettings> {
    let on = !settings.scrapes.is_empty() && settings.agent.metadata_interval.is_some();
    settings
        .remote_write
        .iter()
        .filter(move |rw| on && rw.protocol == Protocol::V1)
}

/// Key of a sink among [`Sinks::retiring`]: its section and name.
fn sink_key(kind: SinkKind, name: &str) -> String {
    format!("{}/{name}", kind.as_str())
}

impl Sinks {
    fn new(tracker: &TaskTracker, drain: &Drain, abort: &CancellationToken) -> Sinks {
        Sinks {
            tracker: tracker.clone(),
            drain: drain.clone(),
            abort: abort.clone(),
            senders: BTreeMap::new(),
            gateways: BTreeMap::new(),
            metadata: BTreeMap::new(),
            retiring: BTreeMap::new(),
        }
    }

    /// Starts the sender of `endpoint`.
    fn start_sender(&mut self, endpoint: &str, sender: Sender) {
        let handle = self.drain.handle();
        let control = handle.control();
        let abort = self.abort.child_token();
        let task = self.tracker.spawn(sender.run_until(handle, abort.clone()));
        let running = RunningSender {
            control,
            abort,
            task,
        };
        self.senders.insert(endpoint.to_string(), running);
    }

    /// Starts the Pushgateway sink of group `name`. It drains from the flush on: the
    /// self-metrics queued after it are not its to push.
    fn start_gateway(&mut self, name: &str, gateway: PushgatewaySink) {
        let stop = self.drain.flush_token().child_token();
        let abort = self.abort.child_token();
        let task = self.tracker.spawn(gateway.run(stop.clone(), abort.clone()));
        let running = RunningGateway { stop, abort, task };
        self.gateways.insert(name.to_string(), running);
    }

    /// Waits for the predecessor of the sink `key` that still drains, if any (bounded by its
    /// drain deadline).
    async fn wait_retired(&mut self, key: &str) {
        if let Some(task) = self.retiring.remove(key) {
            if let Err(e) = task.await {
                tracing::error!(sink = %key, error = %e, "retired sink task failed");
            }
        }
    }
}

/// Waits up to `deadline` for a sink's task to end by itself, then cancels its `abort` and
/// waits for it to stop; true if it had to be aborted.
async fn end_within(
    sink: &str,
    mut task: tokio::task::JoinHandle<()>,
    abort: &CancellationToken,
    deadline: Duration,
) -> bool {
    let ended = match tokio::time::timeout(deadline, &mut task).await {
        Ok(joined) => joined,
        Err(_) => {
            abort.cancel();
            return match task.await {
                Ok(()) => true,
                Err(e) => {
                    tracing::error!(sink = %sink, error = %e, "sink task failed");
                    true
                }
            };
        }
    };
    if let Err(e) = ended {
        tracing::error!(sink = %sink, error = %e, "sink task failed");
    }
    false
}

/// Stops the sender of an endpoint whose settings changed, keeping its queue: it takes no new
/// window, and the one in flight gets up to `deadline` (the endpoint's request `timeout`) to be
/// answered; after that it is abandoned unacknowledged, and the next sender sends it again.
async fn hand_over(endpoint: &str, running: RunningSender, deadline: Duration) {
    running.control.hand_over();
    if end_within(endpoint, running.task, &running.abort, deadline).await {
        tracing::warn!(
            endpoint = %endpoint,
            deadline = ?deadline,
            "remote_write reload: the window in flight got no answer in time; it is sent again with the new settings"
        );
    }
}

/// The drain of an endpoint a reload removed: its sender sends what was queued for it to its
/// old URL, up to `deadline` (`agent.drain_timeout`); what is left then is released (memory
/// freed, disk segments no longer kept for it) and counted; its own series end.
async fn retire_sender(
    endpoint: String,
    running: RunningSender,
    queue: Arc<SharedQueue>,
    deadline: Duration,
    pipeline: Arc<Pipeline>,
) {
    running.control.drain_alone();
    end_within(&endpoint, running.task, &running.abort, deadline).await;
    let dropped = queue.with(|q| q.release());
    if dropped > 0 {
        pipeline
            .telemetry
            .add(telemetry::RW_REMOVED_SAMPLES_DROPPED, &[], dropped as f64);
        tracing::warn!(
            endpoint = %endpoint,
            dropped,
            deadline = ?deadline,
            "remote_write endpoint removed by a reload: samples still queued for it at agent.drain_timeout are dropped"
        );
    } else {
        tracing::info!(
            endpoint = %endpoint,
            "remote_write endpoint removed by a reload: everything queued for it was delivered"
        );
    }
    pipeline.end_sink_series(telemetry::Subject::Endpoint(&endpoint));
}

/// The end of a Pushgateway group a reload removed: it pushes the latest state once more if
/// unsent and deletes the group if `delete_on_exit` says so, up to `deadline`; its own series
/// end.
async fn retire_gateway(
    name: String,
    running: RunningGateway,
    deadline: Duration,
    pipeline: Arc<Pipeline>,
) {
    running.stop.cancel();
    end_within(&name, running.task, &running.abort, deadline).await;
    tracing::info!(gateway = %name, "Pushgateway group removed by a reload: its sink stopped");
    pipeline.end_sink_series(telemetry::Subject::Gateway(&name));
}

/// Key of a probe's unit.
fn probe_key(name: &str) -> String {
    format!("probe/{name}")
}

/// Key of a scrape job's unit.
fn scrape_key(job: &str) -> String {
    format!("scrape/{job}")
}

/// A scrape job with file or HTTP discovery: its targets come and go while it runs.
struct DiscoveredScrape {
    job: Arc<crate::config::ScrapeSettings>,
    client: JobClient,
    providers: Vec<Box<dyn crate::discovery::Provider>>,
}

/// A probe with discovered targets: one probe loop per final target.
struct DiscoveredProbe {
    settings: Arc<crate::config::ProbeDiscovery>,
    providers: Vec<Box<dyn crate::discovery::Provider>>,
}

/// The probe of one discovered target and the source its results are published as
/// (`probe/instance`, the `instance` its series carry, or what it probes when the kind names
/// it); `None` (logged) when the target cannot be probed.
fn target_probe(template: &ProbeSettings, t: &crate::discovery::Target) -> Option<(Probe, String)> {
    let built = template
        .with_target(t)
        .map_err(|e| e.to_string())
        .and_then(|s| {
            let instance = s
                .labels()
                .iter()
                .find(|(n, _)| n == "instance")
                .map_or_else(
                    || crate::secret::redact_url_text(crate::config::probed_address(t)),
                    |(_, v)| v.clone(),
                );
            let source = format!("{}/{instance}", template.name());
            Probe::new(&s)
                .map(|p| (p, source))
                .map_err(|e| e.to_string())
        });
    match built {
        Ok(built) => Some(built),
        Err(e) => {
            tracing::warn!(error = %e, "discovered probe target skipped");
            None
        }
    }
}

/// What `once` found.
#[derive(Debug)]
pub struct OnceSummary {
    /// Each probe's report, in configuration order.
    pub reports: Vec<(String, ProbeReport)>,
    /// Whether every queued sample was accepted by every receiver.
    pub delivered: bool,
    /// Samples left undelivered (still queued at the deadline, or refused).
    pub undelivered: usize,
    /// Scrape targets whose scrape failed (`up` = 0).
    pub scrapes_failed: usize,
    /// Each sink's outcome: receivers in configuration order, then Pushgateway groups.
    pub sinks: Vec<SinkDelivery>,
}

/// The kind of a sink, as the configuration names its section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    /// A `[[remote_write]]` receiver; it counts samples.
    RemoteWrite,
    /// A `[[pushgateway]]` group; it counts series.
    Pushgateway,
}

impl SinkKind {
    /// The section name: `remote_write` or `pushgateway`.
    pub fn as_str(self) -> &'static str {
        match self {
            SinkKind::RemoteWrite => "remote_write",
            SinkKind::Pushgateway => "pushgateway",
        }
    }

    /// What [`SinkDelivery::undelivered`] counts for this kind.
    pub fn unit(self) -> &'static str {
        match self {
            SinkKind::RemoteWrite => "samples",
            SinkKind::Pushgateway => "series",
        }
    }
}

/// How one sink fared by the end of a short-lived run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SinkDelivery {
    /// Receiver or Pushgateway group.
    pub kind: SinkKind,
    /// Its configured name (the `endpoint` or `gateway` label).
    pub name: String,
    /// Whether it got everything it was sent.
    pub delivered: bool,
    /// Samples (receiver) or series (Pushgateway) that did not arrive.
    pub undelivered: usize,
    /// Why not, in words; `None` when delivered.
    pub reason: Option<String>,
}

impl SinkDelivery {
    /// What did not arrive and why, in words: `N samples not delivered: why`, or the reason
    /// alone when nothing is missing (a failed closing delete).
    pub fn shortfall(&self) -> String {
        let why = self.reason.as_deref().unwrap_or("not delivered");
        if self.undelivered > 0 {
            format!(
                "{} {} not delivered: {why}",
                self.undelivered,
                self.kind.unit()
            )
        } else {
            why.to_string()
        }
    }
}

/// Requests of one sink by outcome, as its self-metrics counted them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Attempts {
    /// Answered with a status that must not be retried (4xx).
    rejected: usize,
    /// Answered with a status worth retrying (5xx, 429).
    retryable: usize,
    /// No answer: connection refused, reset, timed out.
    transport: usize,
}

impl Attempts {
    fn read(telemetry: &Telemetry, family: &str, sink_label: (&str, &str)) -> Attempts {
        let count = |outcome| {
            telemetry
                .value(family, &[sink_label, ("outcome", outcome)])
                .unwrap_or(0.0) as usize
        };
        Attempts {
            rejected: count("rejected"),
            retryable: count("retryable"),
            transport: count("transport"),
        }
    }

    /// Why data was still waiting when the deadline came. Short: the line it ends up on
    /// already names the sink.
    fn why_waiting(self) -> String {
        if self.transport > 0 {
            format!("unreachable ({})", count(self.transport, "failed attempt"))
        } else if self.retryable > 0 {
            format!(
                "answered with retryable errors ({})",
                count(self.retryable, "time")
            )
        } else {
            "no answer before agent.drain_timeout".to_string()
        }
    }
}

/// `n` and `thing`, with an `s` unless there is one.
fn count(n: usize, thing: &str) -> String {
    if n == 1 {
        format!("1 {thing}")
    } else {
        format!("{n} {thing}s")
    }
}

/// A receiver's outcome from what is still queued for it and what it refused.
fn remote_write_delivery(
    name: &str,
    pending: usize,
    refused: usize,
    attempts: Attempts,
) -> SinkDelivery {
    let refusal = "refused with a non-retryable status";
    let why = match (refused, pending) {
        (0, 0) => None,
        (_, 0) => Some(refusal.to_string()),
        (0, _) => Some(attempts.why_waiting()),
        (_, _) => Some(format!(
            "{refused} {refusal}; {pending} still queued, {}",
            attempts.why_waiting()
        )),
    };
    let undelivered = pending + refused;
    SinkDelivery {
        kind: SinkKind::RemoteWrite,
        name: name.to_string(),
        delivered: undelivered == 0,
        undelivered,
        reason: why,
    }
}

/// A Pushgateway group's outcome from its sink's status.
fn pushgateway_delivery(
    name: &str,
    delivered: bool,
    unsent_series: usize,
    attempts: Attempts,
) -> SinkDelivery {
    let reason = match (delivered, unsent_series) {
        (true, _) => None,
        // Everything arrived; only the closing delete did not.
        (false, 0) => Some("pushed, but deleting the group (delete_on_exit) failed".to_string()),
        (false, _) if attempts.rejected > 0 => Some(format!(
            "refused with a non-retryable status ({})",
            count(attempts.rejected, "time")
        )),
        (false, _) => Some(attempts.why_waiting()),
    };
    SinkDelivery {
        kind: SinkKind::Pushgateway,
        name: name.to_string(),
        delivered,
        undelivered: unsent_series,
        reason,
    }
}

impl Agent {
    /// Builds everything from validated settings; opens no socket yet.
    pub fn new(settings: Settings) -> Result<Agent, AgentError> {
        let telemetry = Arc::new(Telemetry::with_native(settings.agent.native_histograms));
        let probes = settings
            .probes
            .iter()
            .map(Probe::new)
            .collect::<Result<Vec<_>, _>>()?;
        let (fanout, queues) = match &settings.agent.data_dir {
            Some(dir) if !settings.remote_write.is_empty() => {
                let (disk, queues) = open_disk_queue(&settings, dir)?;
                (Fanout::Disk(disk), queues)
            }
            _ => (
                Fanout::Memory,
                settings.remote_write.iter().map(memory_queue).collect(),
            ),
        };
        let mut outputs = Vec::new();
        let mut senders = Vec::new();
        let durable = matches!(fanout, Fanout::Disk(_));
        let metadata = Arc::new(MetadataStore::new());
        // Series metadata rides on every 2.0 series; only kept when an endpoint sends 2.0.
        let catalog = OnceLock::new();
        for (rw, queue) in settings.remote_write.iter().zip(queues) {
            let sender = build_sender(
                rw,
                &settings,
                queue.clone(),
                &telemetry,
                &catalog,
                &metadata,
                durable,
            )?;
            senders.push(sender);
            outputs.push(Output {
                endpoint: rw.name.clone(),
                queue,
            });
        }
        let feed = OnceLock::new();
        let mut gateways = Vec::new();
        for pg in &settings.pushgateway {
            gateways.push(PushgatewaySink::new(
                pg.clone(),
                &settings.agent.external_labels,
                feed.get_or_init(Feed::new).clone(),
                telemetry.clone(),
            )?);
        }
        let gateway_status = gateways.iter().map(PushgatewaySink::status).collect();
        let mut scrapers = Vec::new();
        let mut discovered_scrapes = Vec::new();
        for job in &settings.scrapes {
            let client = JobClient::new(job)?;
            if job.discovery.is_dynamic() {
                // Its static targets run under the same manager as the discovered ones.
                discovered_scrapes.push(DiscoveredScrape {
                    providers: crate::discovery::providers(&job.job, &job.discovery)?,
                    job: Arc::new(job.clone()),
                    client,
                });
                continue;
            }
            for target in &job.targets {
                scrapers.push(Scraper::new(job, target, client.clone()));
            }
        }
        let mut discovered_probes = Vec::new();
        for d in &settings.probe_discovery {
            // Built once with its stand-in target, so bad TLS files or credentials fail here.
            drop(Probe::new(&d.probe)?);
            discovered_probes.push(DiscoveredProbe {
                providers: crate::discovery::providers(d.probe.name(), &d.discovery)?,
                settings: Arc::new(d.clone()),
            });
        }
        let mut metadata_senders = Vec::new();
        for rw in metadata_endpoints(&settings) {
            metadata_senders.push((rw.name.clone(), MetadataSender::new(rw, telemetry.clone())?));
        }
        let pipeline = Arc::new(Pipeline {
            outputs: RwLock::new(outputs),
            fanout,
            feed,
            telemetry: telemetry.clone(),
            self_labels: settings.agent.self_labels(),
            catalog,
        });
        Ok(Agent {
            settings,
            probes,
            pipeline,
            senders,
            gateways,
            gateway_status,
            telemetry,
            scrapers,
            discovered_scrapes,
            discovered_probes,
            metadata,
            metadata_senders,
            reload: None,
        })
    }

    /// Lets `run` reload its configuration from `path` (SIGHUP, `POST /-/reload`): returns the
    /// trigger that asks for a reload.
    pub fn enable_reload(&mut self, path: PathBuf) -> crate::reload::ReloadTrigger {
        let (trigger, requests) = crate::reload::ReloadTrigger::channel();
        self.reload = Some(Reloading {
            path,
            requests,
            trigger: trigger.clone(),
        });
        trigger
    }

    /// Builds the probe or scrape job `key` of `settings` (a [`probe_key`] or [`scrape_key`]).
    fn prepare(&self, settings: &Settings, key: &str) -> Result<Option<Job>, AgentError> {
        if let Some(name) = key.strip_prefix("probe/") {
            if let Some(p) = settings.probes.iter().find(|p| p.name() == name) {
                let probe = Probe::new(p)?;
                let interval = p.interval();
                // The phase is fixed in wall-clock time, from the probe's name and the agent's
                // external labels: two agents that differ in an external label (a Mimir HA
                // pair's replica) do not hit the target in the same instant, and two that write
                // the same series (a pair deduplicated by VictoriaMetrics) stamp them in step.
                let schedule = Schedule {
                    interval,
                    retries: settings.retries_of(name),
                    offset: crate::clock::delay_to_phase(
                        &format!("{}{}", name, settings.agent.external_labels),
                        interval,
                    ),
                };
                return Ok(Some(Job::Probe(Box::new(probe), schedule)));
            }
            if let Some(d) = settings
                .probe_discovery
                .iter()
                .find(|d| d.probe.name() == name)
            {
                drop(Probe::new(&d.probe)?);
                return Ok(Some(Job::DiscoveredProbe(DiscoveredProbe {
                    providers: crate::discovery::providers(name, &d.discovery)?,
                    settings: Arc::new(d.clone()),
                })));
            }
        }
        if let Some(name) = key.strip_prefix("scrape/") {
            if let Some(job) = settings.scrapes.iter().find(|j| j.job == name) {
                let client = JobClient::new(job)?;
                if job.discovery.is_dynamic() {
                    return Ok(Some(Job::DiscoveredScrape(DiscoveredScrape {
                        providers: crate::discovery::providers(&job.job, &job.discovery)?,
                        job: Arc::new(job.clone()),
                        client,
                    })));
                }
                return Ok(Some(Job::Scrapes(
                    job.targets
                        .iter()
                        .map(|t| Scraper::new(job, t, client.clone()))
                        .collect(),
                )));
            }
        }
        Ok(None)
    }

    /// Starts a prepared job under its own `stop` token; `shutdown` is the agent's, so the job
    /// can tell being removed (its series end) from the agent stopping (they do not).
    fn start(&self, job: Job, settings: &Settings, shutdown: &CancellationToken) -> Unit {
        let stop = shutdown.child_token();
        let task = match job {
            Job::Probe(probe, schedule) => {
                let (pipeline, telemetry) = (self.pipeline.clone(), self.telemetry.clone());
                let (stop, shutdown) = (stop.clone(), shutdown.clone());
                tokio::spawn(async move {
                    let source = probe.name().to_string();
                    let registry = probe_target_loop(
                        probe,
                        source.clone(),
                        schedule,
                        pipeline.clone(),
                        telemetry,
                        stop,
                    )
                    .await;
                    if !shutdown.is_cancelled() {
                        end_series(&pipeline, &source, &registry);
                        end_self_series(&pipeline, telemetry::Subject::Probe(&source));
                    }
                })
            }
            Job::DiscoveredProbe(d) => {
                tokio::spawn(self.run_discovered_probe(d, settings, stop.clone(), shutdown.clone()))
            }
            Job::Scrapes(scrapers) => {
                // Scrape loops queue their end-of-run staleness markers before returning.
                // Without targets no loop records anything, so there is nothing to end.
                let job = scrapers.first().map(|s| s.job().to_owned());
                let loops = TaskTracker::new();
                for scraper in scrapers {
                    let pipeline = self.pipeline.clone();
                    let source = scraper.key().to_owned();
                    loops.spawn(scraper.run(
                        move |s: Scraped| {
                            pipeline.publish_scraped(&source, s.samples, s.report_from)
                        },
                        self.telemetry.clone(),
                        Some(self.metadata.clone()),
                        stop.clone(),
                    ));
                }
                loops.close();
                let (pipeline, shutdown) = (self.pipeline.clone(), shutdown.clone());
                tokio::spawn(async move {
                    loops.wait().await;
                    if let (Some(job), false) = (job, shutdown.is_cancelled()) {
                        end_self_series(&pipeline, telemetry::Subject::ScrapeJob(&job));
                    }
                })
            }
            Job::DiscoveredScrape(d) => {
                tokio::spawn(self.run_discovered_scrape(d, stop.clone(), shutdown.clone()))
            }
        };
        Unit { stop, task }
    }

    /// Reads, validates and applies the configuration file: every error comes back and the
    /// running configuration stays; on success the difference is applied (see
    /// [`crate::reload`]). Everything that starts is built before anything stops, so a part
    /// that cannot be built fails the reload with nothing changed.
    async fn reload(
        &mut self,
        path: &Path,
        units: &mut BTreeMap<String, Unit>,
        sinks: &mut Sinks,
        shutdown: &CancellationToken,
    ) -> Result<(), Vec<String>> {
        let source = path.display().to_string();
        let strings = |errs: Vec<crate::config::ConfigError>| {
            errs.iter().map(ToString::to_string).collect::<Vec<_>>()
        };
        let new = crate::config::load(path, true)
            .and_then(|f| f.validate(&source))
            .map_err(strings)?;
        let applied = crate::reload::applicable(&self.settings, &new, &source).map_err(strings)?;
        let plan = crate::reload::diff(&self.settings, &applied);
        let restart_needed = crate::reload::diff(&self.settings, &new).restart_needed;
        if !restart_needed.is_empty() {
            tracing::warn!(
                keys = %restart_needed.join(","),
                "configuration reload: these changed and need a restart; they keep their running values until then"
            );
        }
        // Everything that starts is built first: a probe that cannot be built fails the
        // reload before anything stops.
        let keys = |c: &crate::reload::Changes, key: fn(&str) -> String| {
            c.added
                .iter()
                .chain(&c.changed)
                .map(|n| key(n))
                .collect::<Vec<_>>()
        };
        let mut prepared = Vec::new();
        for key in keys(&plan.probes, probe_key)
            .into_iter()
            .chain(keys(&plan.scrapes, scrape_key))
        {
            match self.prepare(&applied, &key) {
                Ok(Some(job)) => prepared.push((key, job)),
                Ok(None) => {}
                Err(e) => return Err(vec![e.to_string()]),
            }
        }
        sinks.retiring.retain(|_, task| !task.is_finished());
        let gateways = self
            .prepare_gateways(&applied, &plan.pushgateway, sinks)
            .await?;
        let metadata = self.prepare_metadata(&applied, &plan.remote_write.changed, sinks)?;
        let senders = self
            .prepare_senders(&applied, &plan.remote_write, sinks)
            .await?;
        let stopping = plan
            .probes
            .removed
            .iter()
            .chain(&plan.probes.changed)
            .map(|n| probe_key(n))
            .chain(
                plan.scrapes
                    .removed
                    .iter()
                    .chain(&plan.scrapes.changed)
                    .map(|n| scrape_key(n)),
            );
        for key in stopping {
            if let Some(unit) = units.remove(&key) {
                unit.stop.cancel();
                if let Err(e) = unit.task.await {
                    tracing::error!(unit = %key, error = %e, "stopped task failed");
                }
            }
        }
        for (key, job) in prepared {
            units.insert(key, self.start(job, &applied, shutdown));
        }
        self.apply_senders(&plan.remote_write, senders, sinks).await;
        let changed = &plan.remote_write.changed;
        self.apply_metadata(&applied, changed, metadata, sinks, shutdown)
            .await;
        self.apply_gateways(&applied, &plan.pushgateway, gateways, sinks)
            .await;
        tracing::info!(
            probes_added = %plan.probes.added.join(","),
            probes_removed = %plan.probes.removed.join(","),
            probes_changed = %plan.probes.changed.join(","),
            scrapes_added = %plan.scrapes.added.join(","),
            scrapes_removed = %plan.scrapes.removed.join(","),
            scrapes_changed = %plan.scrapes.changed.join(","),
            remote_write_added = %plan.remote_write.added.join(","),
            remote_write_removed = %plan.remote_write.removed.join(","),
            remote_write_changed = %plan.remote_write.changed.join(","),
            pushgateway_added = %plan.pushgateway.added.join(","),
            pushgateway_removed = %plan.pushgateway.removed.join(","),
            pushgateway_changed = %plan.pushgateway.changed.join(","),
            "configuration reloaded"
        );
        self.settings = applied;
        Ok(())
    }

    /// Starts the metadata sender of `endpoint`, until the shutdown or a reload stops it.
    fn start_metadata(
        &self,
        sinks: &mut Sinks,
        endpoint: &str,
        sender: MetadataSender,
        shutdown: &CancellationToken,
    ) {
        let Some(interval) = self.settings.agent.metadata_interval else {
            return;
        };
        let stop = shutdown.child_token();
        let task = sinks
            .tracker
            .spawn(sender.run(self.metadata.clone(), interval, stop.clone()));
        sinks
            .metadata
            .insert(endpoint.to_string(), Unit { stop, task });
    }

    /// Builds the metadata senders a reload starts: for the endpoints [`metadata_endpoints`]
    /// names that have none running, or whose settings changed.
    fn prepare_metadata(
        &self,
        applied: &Settings,
        changed: &[String],
        sinks: &Sinks,
    ) -> Result<Vec<(String, MetadataSender)>, Vec<String>> {
        metadata_endpoints(applied)
            .filter(|rw| !sinks.metadata.contains_key(&rw.name) || changed.contains(&rw.name))
            .map(|rw| {
                MetadataSender::new(rw, self.telemetry.clone())
                    .map(|sender| (rw.name.clone(), sender))
                    .map_err(|e| vec![e.to_string()])
            })
            .collect()
    }

    /// Stops the metadata senders of endpoints no longer sent metadata or changed, and starts
    /// the ones [`Agent::prepare_metadata`] built.
    async fn apply_metadata(
        &self,
        applied: &Settings,
        changed: &[String],
        built: Vec<(String, MetadataSender)>,
        sinks: &mut Sinks,
        shutdown: &CancellationToken,
    ) {
        let wanted: Vec<&str> = metadata_endpoints(applied)
            .map(|rw| rw.name.as_str())
            .collect();
        let stopping: Vec<String> = sinks
            .metadata
            .keys()
            .filter(|n| !wanted.contains(&n.as_str()) || changed.contains(n))
            .cloned()
            .collect();
        for name in stopping {
            if let Some(unit) = sinks.metadata.remove(&name) {
                unit.stop.cancel();
                if let Err(e) = unit.task.await {
                    tracing::error!(endpoint = %name, error = %e, "metadata sender task failed");
                }
            }
        }
        for (name, sender) in built {
            self.start_metadata(sinks, &name, sender, shutdown);
        }
    }

    /// Builds the sinks of the Pushgateway groups a reload adds or changes (nothing runs yet).
    async fn prepare_gateways(
        &self,
        applied: &Settings,
        plan: &crate::reload::Changes,
        sinks: &mut Sinks,
    ) -> Result<Vec<(String, PushgatewaySink)>, Vec<String>> {
        let mut built = Vec::new();
        for name in plan.added.iter().chain(&plan.changed) {
            let Some(pg) = applied.pushgateway.iter().find(|pg| &pg.name == name) else {
                continue;
            };
            sinks
                .wait_retired(&sink_key(SinkKind::Pushgateway, name))
                .await;
            // Probes feed the group from their next run on.
            let feed = self.pipeline.feed.get_or_init(Feed::new).clone();
            let sink = PushgatewaySink::new(
                pg.clone(),
                &applied.agent.external_labels,
                feed,
                self.telemetry.clone(),
            )
            .map_err(|e| vec![e.to_string()])?;
            built.push((name.clone(), sink));
        }
        Ok(built)
    }

    /// Builds the senders of the endpoints a reload adds or changes (nothing runs yet): a
    /// changed endpoint's sender reads the queue its predecessor reads; an added one gets a
    /// queue of its own, or a position at the tail of the disk queue. If one cannot be built,
    /// the queues made for the others are given up again and the reload fails.
    async fn prepare_senders(
        &self,
        applied: &Settings,
        plan: &crate::reload::Changes,
        sinks: &mut Sinks,
    ) -> Result<Vec<(String, Sender, Option<Output>)>, Vec<String>> {
        let durable = matches!(self.pipeline.fanout, Fanout::Disk(_));
        let mut built: Vec<(String, Sender, Option<Output>)> = Vec::new();
        let mut failure = None;
        for name in plan.added.iter().chain(&plan.changed) {
            let Some(rw) = applied.remote_write.iter().find(|rw| &rw.name == name) else {
                continue;
            };
            let (queue, added) = match self.pipeline.queue_of(name) {
                Some(queue) => (queue, false),
                None => {
                    sinks
                        .wait_retired(&sink_key(SinkKind::RemoteWrite, name))
                        .await;
                    match self.new_queue(rw) {
                        Ok(queue) => (queue, true),
                        Err(e) => {
                            failure = Some(e);
                            break;
                        }
                    }
                }
            };
            match build_sender(
                rw,
                applied,
                queue.clone(),
                &self.telemetry,
                &self.pipeline.catalog,
                &self.metadata,
                durable,
            ) {
                Ok(sender) => {
                    let output = added.then(|| Output {
                        endpoint: name.clone(),
                        queue,
                    });
                    built.push((name.clone(), sender, output));
                }
                Err(e) => {
                    if added {
                        queue.with(|q| q.release());
                    }
                    failure = Some(e.to_string());
                    break;
                }
            }
        }
        let Some(failure) = failure else {
            return Ok(built);
        };
        for (name, _, output) in built {
            if let Some(output) = output {
                output.queue.with(|q| q.release());
                self.telemetry
                    .with(|r| r.remove_labelled("endpoint", &name));
            }
        }
        Err(vec![failure])
    }

    /// The queue of an endpoint a reload adds: a position at the tail of the disk queue (it
    /// gets what is published from now on, not the backlog kept for the others), or a memory
    /// queue of its own.
    fn new_queue(&self, rw: &RemoteWriteSettings) -> Result<Arc<SharedQueue>, String> {
        match &self.pipeline.fanout {
            Fanout::Disk(disk) => disk
                .log
                .add_consumer(&rw.name)
                .map(|c| SharedQueue::with_live_lane(Box::new(c), live_lane(rw)))
                .map_err(|e| format!("remote_write {}: adding it to the disk queue: {e}", rw.name)),
            Fanout::Memory => {
                if self.settings.agent.data_dir.is_some() {
                    tracing::warn!(
                        endpoint = %rw.name,
                        "the agent started without remote_write endpoints, so without a disk queue: this endpoint queues in memory until a restart"
                    );
                }
                Ok(memory_queue(rw))
            }
        }
    }

    /// Carries out a reload's plan for the remote-write endpoints with the senders
    /// [`Agent::prepare_senders`] built: changed ones take over their predecessor's queue once
    /// it stopped, added ones join the fan-out, removed ones leave it and drain what they had.
    async fn apply_senders(
        &self,
        plan: &crate::reload::Changes,
        built: Vec<(String, Sender, Option<Output>)>,
        sinks: &mut Sinks,
    ) {
        for name in &plan.removed {
            let (Some(output), Some(running)) = (
                self.pipeline.remove_output(name),
                sinks.senders.remove(name),
            ) else {
                continue;
            };
            let task = sinks.tracker.spawn(retire_sender(
                name.clone(),
                running,
                output.queue,
                self.settings.agent.drain_timeout,
                self.pipeline.clone(),
            ));
            sinks
                .retiring
                .insert(sink_key(SinkKind::RemoteWrite, name), task);
        }
        // Every changed endpoint's window in flight is waited for at once.
        let handovers = plan.changed.iter().filter_map(|name| {
            let running = sinks.senders.remove(name)?;
            let deadline = self
                .settings
                .remote_write
                .iter()
                .find(|rw| &rw.name == name)
                .map_or(self.settings.agent.drain_timeout, |rw| rw.timeout);
            Some(hand_over(name, running, deadline))
        });
        futures_util::future::join_all(handovers.collect::<Vec<_>>()).await;
        for (name, sender, output) in built {
            if let Some(output) = output {
                self.pipeline.add_output(output);
            }
            sinks.start_sender(&name, sender);
        }
    }

    /// Carries out a reload's plan for the Pushgateway groups: a removed one ends as at
    /// shutdown, and so does a changed one whose group moved (another URL, job or grouping
    /// key); a changed one that pushes to the same group stops at once (no last push, no
    /// delete: the new one pushes the latest state at its start); then the new ones start.
    async fn apply_gateways(
        &self,
        applied: &Settings,
        plan: &crate::reload::Changes,
        built: Vec<(String, PushgatewaySink)>,
        sinks: &mut Sinks,
    ) {
        let group = |s: &Settings, name: &str| {
            s.pushgateway
                .iter()
                .find(|pg| pg.name == name)
                .map(|pg| crate::pushgateway::group_url(&pg.url, &pg.job, &pg.grouping))
        };
        for name in &plan.removed {
            let Some(running) = sinks.gateways.remove(name) else {
                continue;
            };
            let task = sinks.tracker.spawn(retire_gateway(
                name.clone(),
                running,
                self.settings.agent.drain_timeout,
                self.pipeline.clone(),
            ));
            sinks
                .retiring
                .insert(sink_key(SinkKind::Pushgateway, name), task);
        }
        for name in &plan.changed {
            let Some(running) = sinks.gateways.remove(name) else {
                continue;
            };
            if group(&self.settings, name) == group(applied, name) {
                running.abort.cancel();
                end_within(name, running.task, &running.abort, Duration::ZERO).await;
            } else {
                // The old group is left as at shutdown (deleted with `delete_on_exit`)
                // before the new one is pushed.
                let deadline = self.settings.agent.drain_timeout;
                running.stop.cancel();
                end_within(name, running.task, &running.abort, deadline).await;
            }
        }
        for (name, sink) in built {
            sinks.start_gateway(&name, sink);
        }
    }

    /// Builds everything [`Agent::new`] builds (probes, senders, Pushgateway sinks, scrape
    /// clients), so that `config check` refuses what `run` would, and drops it again. The disk
    /// queue is left closed (opening it recovers and writes), and so is every socket. What
    /// could still stop `run` in `data_dir` comes back as warnings, since `config check` often
    /// runs as another user, or next to the running agent that holds the directory.
    pub fn check(settings: &Settings) -> Result<Vec<String>, AgentError> {
        let mut parts = settings.clone();
        parts.agent.data_dir = None;
        drop(Agent::new(parts)?);
        let mut warnings: Vec<String> = settings
            .agent
            .data_dir
            .as_deref()
            .filter(|_| !settings.remote_write.is_empty())
            .and_then(data_dir_warning)
            .into_iter()
            .collect();
        if !settings.has_sinks() {
            warnings.push(
                "no [[remote_write]] or [[pushgateway]] configured: `run`, `once` and `exec` \
                 send nothing anywhere (`check` needs none)"
                    .to_string(),
            );
        }
        if settings.probes.is_empty()
            && settings.probe_discovery.is_empty()
            && settings.scrapes.is_empty()
        {
            warnings.push(
                "no [[probe]] or [[scrape]] configured: `run` and `once` collect nothing but the \
                 agent's own metrics (`exec` needs none: it reports its command)"
                    .to_string(),
            );
        }
        warnings.extend(settings.identity_warnings());
        Ok(warnings)
    }

    /// Tells whether any sink (remote write or Pushgateway) is configured.
    pub fn has_sinks(&self) -> bool {
        self.settings.has_sinks()
    }

    /// Makes every Pushgateway sink use `method` instead of its configured one (`exec` posts
    /// after a failure so that a `PUT` does not erase the last success timestamp).
    pub fn override_push_method(&mut self, method: PushMethod) {
        for g in &mut self.gateways {
            g.set_method(method);
        }
    }

    /// The agent's self-metrics.
    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }

    fn spawn_senders(&mut self, tracker: &TaskTracker, drain: &Drain, abort: &CancellationToken) {
        for sender in self.senders.drain(..) {
            tracker.spawn(sender.run_until(drain.handle(), abort.clone()));
        }
        tracker.close();
    }

    /// Starts the Pushgateway sinks in `tracker` (which may already be closed: a closed
    /// tracker still accepts tasks, it only lets `wait` finish once they are done). They
    /// drain from the flush on: the self-metrics queued after it are not theirs to push.
    fn spawn_gateways(&mut self, tracker: &TaskTracker, drain: &Drain, abort: &CancellationToken) {
        for gateway in self.gateways.drain(..) {
            tracker.spawn(gateway.run(drain.flush_token(), abort.clone()));
        }
    }

    /// How each sink fared: receivers (what is still queued for them, what they refused),
    /// then Pushgateway groups (whether the latest state arrived).
    fn deliveries(&self) -> Vec<SinkDelivery> {
        let mut sinks: Vec<SinkDelivery> = self
            .pipeline
            .outputs()
            .iter()
            .map(|o| {
                let endpoint = ("endpoint", o.endpoint.as_str());
                remote_write_delivery(
                    &o.endpoint,
                    o.queue.pending(),
                    self.refused_by(&o.endpoint),
                    Attempts::read(&self.telemetry, telemetry::RW_REQUESTS, endpoint),
                )
            })
            .collect();
        if let Some(feed) = self.pipeline.feed.get() {
            for (pg, status) in self.settings.pushgateway.iter().zip(&self.gateway_status) {
                let gateway = ("gateway", pg.name.as_str());
                sinks.push(pushgateway_delivery(
                    &pg.name,
                    status.delivered(feed),
                    status.unsent_series(feed),
                    Attempts::read(&self.telemetry, telemetry::PG_REQUESTS, gateway),
                ));
            }
        }
        sinks
    }

    /// The summary of a short-lived run: whether every sink got everything, and how many
    /// samples or series did not arrive, summed over sinks.
    fn summary(&self, reports: Vec<(String, ProbeReport)>, scrapes_failed: usize) -> OnceSummary {
        let sinks = self.deliveries();
        OnceSummary {
            reports,
            delivered: sinks.iter().all(|s| s.delivered),
            undelivered: sinks.iter().map(|s| s.undelivered).sum(),
            scrapes_failed,
            sinks,
        }
    }

    /// Drains the senders within the deadline, then aborts them; waits for all of them.
    ///
    /// With `last_snapshot`, the self-metrics are queued once more between the flush and the
    /// stop, once every queue is empty: the senders end when drained, so a snapshot taken
    /// after they ended would never be sent. Without it (a one-off command, whose snapshot
    /// goes with its results), flush and stop come together.
    async fn drain(
        &self,
        tracker: TaskTracker,
        drain: Drain,
        abort: CancellationToken,
        last_snapshot: bool,
    ) {
        let timeout = self.settings.agent.drain_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        drain.flush();
        if last_snapshot
            && tokio::time::timeout_at(deadline, drain.flushed())
                .await
                .is_ok()
        {
            self.pipeline.publish(self.pipeline.self_metrics(now_ms()));
        }
        drain.stop();
        if tokio::time::timeout_at(deadline, tracker.wait())
            .await
            .is_err()
        {
            // Per sink, in its own unit: a Pushgateway's unsent series are in no queue, so a
            // queued-sample count alone reads 0 while it still waits.
            let waiting: Vec<String> = self
                .deliveries()
                .into_iter()
                .filter(|s| !s.delivered)
                .map(|s| format!("{} {}: {}", s.kind.as_str(), s.name, s.shortfall()))
                .collect();
            // A sink can have delivered everything and still be sending (a closing delete).
            let waiting = if waiting.is_empty() {
                "every sink has its data; a closing request is still in flight".to_string()
            } else {
                waiting.join("; ")
            };
            tracing::warn!(
                queued_samples = self.pipeline.pending(),
                waiting = %waiting,
                deadline = ?timeout,
                "drain deadline reached: stopping the senders still at work"
            );
            abort.cancel();
            tracker.wait().await;
        }
    }

    /// Runs every probe on its interval until `shutdown` is cancelled, then drains.
    /// Cancelling `abort` (e.g. a second signal) stops the senders without waiting.
    /// Fails only if the health listener (`agent.listen`) cannot bind, before anything starts.
    pub async fn run(
        mut self,
        shutdown: CancellationToken,
        abort: CancellationToken,
    ) -> Result<(), AgentError> {
        // The listener outlives the probes and the drain, so liveness holds and readiness
        // reads 503 while queued samples are flushed; it stops last.
        let health = crate::listener::Health::new();
        let listener_stop = CancellationToken::new();
        let listener_task = match self.settings.agent.listen {
            Some(addr) => {
                let listener = crate::listener::Listener::bind(addr).await?;
                tracing::info!(address = %listener.local_addr().unwrap_or(addr), "health listener serving /-/healthy, /-/ready, /metrics");
                Some(tokio::spawn(listener.serve(
                    health.clone(),
                    self.telemetry.clone(),
                    self.reload.as_ref().map(|r| r.trigger.clone()),
                    listener_stop.clone(),
                )))
            }
            None => None,
        };

        let senders = TaskTracker::new();
        let drain = Drain::new();
        // Each sender and Pushgateway sink runs by name, so a reload can hand one over, add
        // or retire it alone.
        let mut sinks = Sinks::new(&senders, &drain, &abort);
        for (sender, rw) in self.senders.drain(..).zip(&self.settings.remote_write) {
            sinks.start_sender(&rw.name, sender);
        }
        senders.close();
        for (gateway, pg) in self.gateways.drain(..).zip(&self.settings.pushgateway) {
            sinks.start_gateway(&pg.name, gateway);
        }

        // Each probe and scrape job runs as its own unit, so a reload can stop or restart one
        // alone; the ones built by `new` are dropped and built again the same way.
        self.probes.clear();
        self.scrapers.clear();
        self.discovered_scrapes.clear();
        self.discovered_probes.clear();
        let mut units = BTreeMap::new();
        let settings = self.settings.clone();
        let keys = settings
            .file
            .probe
            .iter()
            .map(|p| probe_key(p.name()))
            .chain(settings.scrapes.iter().map(|j| scrape_key(&j.job)));
        for key in keys {
            match self.prepare(&settings, &key) {
                Ok(Some(job)) => {
                    units.insert(key, self.start(job, &settings, &shutdown));
                }
                Ok(None) => {}
                // `new` built the same parts from the same settings.
                Err(e) => tracing::error!(unit = %key, error = %e, "could not start"),
            }
        }
        let probes = TaskTracker::new();
        for (endpoint, sender) in std::mem::take(&mut self.metadata_senders) {
            self.start_metadata(&mut sinks, &endpoint, sender, &shutdown);
        }
        probes.spawn(self_metrics_loop(
            self.pipeline.clone(),
            self.settings.agent.self_metrics_interval,
            shutdown.clone(),
        ));
        probes.close();
        tracing::info!(
            probes = self.settings.probes.len(),
            scrape_targets = self
                .settings
                .scrapes
                .iter()
                .map(|j| j.targets.len())
                .sum::<usize>(),
            receivers = self.settings.remote_write.len(),
            pushgateways = self.settings.pushgateway.len(),
            "pushprobe running"
        );

        if self.settings.agent.instance_is_fallback {
            tracing::warn!(
                instance = crate::config::FALLBACK_INSTANCE,
                "the host name could not be read: the agent's own series carry a fallback \
                 instance label that other agents share; set [agent] instance"
            );
        }
        health.set_ready(true);
        self.telemetry
            .set(telemetry::CONFIG_LAST_RELOAD_SUCCESSFUL, &[], 1.0);
        self.telemetry.set(
            telemetry::CONFIG_LAST_RELOAD_SUCCESS_TIME,
            &[],
            now_ms() as f64 / 1000.0,
        );

        match self.reload.take() {
            Some(mut r) => loop {
                let request = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    Some(request) = r.requests.recv() => request,
                };
                let outcome = self
                    .reload(&r.path, &mut units, &mut sinks, &shutdown)
                    .await;
                match &outcome {
                    Ok(()) => {
                        self.telemetry
                            .set(telemetry::CONFIG_LAST_RELOAD_SUCCESSFUL, &[], 1.0);
                        self.telemetry.set(
                            telemetry::CONFIG_LAST_RELOAD_SUCCESS_TIME,
                            &[],
                            now_ms() as f64 / 1000.0,
                        );
                    }
                    Err(errors) => {
                        self.telemetry
                            .set(telemetry::CONFIG_LAST_RELOAD_SUCCESSFUL, &[], 0.0);
                        tracing::error!(
                            errors = %errors.join("; "),
                            "configuration reload refused: the running configuration stays"
                        );
                    }
                }
                // The requester may have stopped waiting; the outcome is logged either way.
                let _ = request.reply.send(outcome);
            },
            None => shutdown.cancelled().await,
        }
        health.set_ready(false);
        tracing::info!("shutting down: stopping probes, then flushing queued samples");
        for (key, unit) in std::mem::take(&mut units) {
            if let Err(e) = unit.task.await {
                tracing::error!(unit = %key, error = %e, "task failed");
            }
        }
        probes.wait().await;
        self.pipeline.publish(self.pipeline.self_metrics(now_ms()));
        self.drain(senders, drain, abort, true).await;
        self.pipeline.flush();
        let left = self.pipeline.pending();
        if left > 0 && matches!(self.pipeline.fanout, Fanout::Disk(_)) {
            tracing::warn!(
                pending = left,
                "samples still queued at exit stay on disk and are sent after the next start"
            );
        } else if left > 0 {
            tracing::warn!(
                lost = left,
                "samples still queued at exit were not delivered"
            );
        } else {
            tracing::info!("all queued samples delivered");
        }
        listener_stop.cancel();
        if let Some(task) = listener_task {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "health listener task failed");
            }
        }
        Ok(())
    }

    /// The task of a scrape job with discovery: its target manager starts a scrape loop per
    /// final target and stops the loops of targets that go (each queues its staleness markers
    /// as it ends, on removal as on shutdown). The job's self-metrics are per job, not per
    /// target: they end with the job when `stop` ends it, not when `agent_shutdown` does.
    fn run_discovered_scrape(
        &self,
        d: DiscoveredScrape,
        stop: CancellationToken,
        agent_shutdown: CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let shutdown = stop;
        let (pipeline, telemetry, metadata) = (
            self.pipeline.clone(),
            self.telemetry.clone(),
            self.metadata.clone(),
        );
        let job = d.job.clone();
        let client = d.client.clone();
        let start = {
            let telemetry = telemetry.clone();
            move |t: &crate::discovery::Target, stop: CancellationToken| {
                let Some(target) = crate::config::ScrapeTargetSettings::from_target(t) else {
                    // Built targets are checked already; nothing to run for one that is not.
                    return tokio::spawn(async {});
                };
                let scraper = Scraper::new(&job, &target, client.clone());
                let pipeline = pipeline.clone();
                let source = scraper.key().to_owned();
                tokio::spawn(scraper.run(
                    move |s: Scraped| pipeline.publish_scraped(&source, s.samples, s.report_from),
                    telemetry.clone(),
                    Some(metadata.clone()),
                    stop,
                ))
            }
        };
        let manager = crate::discovery::manager::TargetManager::new(
            d.job.job.clone(),
            shutdown.clone(),
            Box::new(start),
        );
        let name = d.job.job.clone();
        let job = crate::discovery::run_job(
            name.clone(),
            d.job.discovery.clone(),
            d.providers,
            d.job.defaults.clone(),
            manager,
            telemetry,
            shutdown,
        );
        let ended = self.pipeline.clone();
        async move {
            job.await;
            if !agent_shutdown.is_cancelled() {
                end_self_series(&ended, telemetry::Subject::ScrapeJob(&name));
            }
        }
    }

    /// The task of a probe with discovered targets: one probe loop per final target, each at
    /// its own phase; a target that goes ends every series it reported with a staleness
    /// marker (on shutdown, as for configured probes, none are written).
    fn run_discovered_probe(
        &self,
        d: DiscoveredProbe,
        config: &Settings,
        stop: CancellationToken,
        agent_shutdown: CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let shutdown = stop;
        let (pipeline, telemetry) = (self.pipeline.clone(), self.telemetry.clone());
        let external = config.agent.external_labels.to_string();
        let settings = d.settings.clone();
        let retries = config.retries_of(settings.probe.name());
        let ended = (pipeline.clone(), agent_shutdown.clone());
        let start = {
            let (telemetry, shutdown) = (telemetry.clone(), agent_shutdown);
            move |t: &crate::discovery::Target, stop: CancellationToken| {
                let Some((probe, source)) = target_probe(&settings.probe, t) else {
                    return tokio::spawn(async {});
                };
                let probe = Box::new(probe);
                let interval = t.interval;
                let offset = crate::clock::delay_to_phase(&format!("{source}{external}"), interval);
                let (pipeline, telemetry, shutdown) =
                    (pipeline.clone(), telemetry.clone(), shutdown.clone());
                tokio::spawn(async move {
                    let registry = probe_target_loop(
                        probe,
                        source.clone(),
                        Schedule {
                            interval,
                            retries,
                            offset,
                        },
                        pipeline.clone(),
                        telemetry,
                        stop,
                    )
                    .await;
                    if !shutdown.is_cancelled() {
                        end_series(&pipeline, &source, &registry);
                    }
                })
            }
        };
        let name = d.settings.probe.name().to_string();
        let manager = crate::discovery::manager::TargetManager::new(
            name.clone(),
            shutdown.clone(),
            Box::new(start),
        );
        let job = crate::discovery::run_job(
            name.clone(),
            d.settings.discovery.clone(),
            d.providers,
            d.settings.defaults.clone(),
            manager,
            telemetry,
            shutdown,
        );
        async move {
            job.await;
            let (pipeline, agent_shutdown) = ended;
            if !agent_shutdown.is_cancelled() {
                end_self_series(&pipeline, telemetry::Subject::Probe(&name));
            }
        }
    }

    /// Runs every probe once, concurrently, sends everything and waits for delivery up to
    /// the drain deadline.
    pub async fn once(mut self, abort: CancellationToken) -> OnceSummary {
        let senders = TaskTracker::new();
        let drain = Drain::new();
        self.spawn_senders(&senders, &drain, &abort);

        let mut set = JoinSet::new();
        let native = self.telemetry.native();
        let mut probes: Vec<(Probe, String)> = std::mem::take(&mut self.probes)
            .into_iter()
            .map(|p| {
                let name = p.name().to_string();
                (p, name)
            })
            .collect();
        for d in std::mem::take(&mut self.discovered_probes) {
            let targets = tokio::select! {
                t = crate::discovery::discover_once(d.settings.probe.name(), &d.settings.discovery, d.providers, &d.settings.defaults, &self.telemetry) => t,
                _ = abort.cancelled() => Vec::new(),
            };
            probes.extend(
                targets
                    .iter()
                    .filter_map(|t| target_probe(&d.settings.probe, t)),
            );
        }
        for (i, (mut probe, source)) in probes.into_iter().enumerate() {
            let abort = abort.clone();
            let retries = self.settings.retries_of(probe.name());
            set.spawn(async move {
                let mut registry = Registry::with_native(native);
                let started = now_ms();
                let (report, attempts) = tokio::select! {
                    r = probe.run_attempts(&mut registry, retries) => r,
                    _ = abort.cancelled() => return None,
                };
                Some((
                    i,
                    probe.name().to_string(),
                    source,
                    report,
                    attempts,
                    registry,
                    started,
                ))
            });
        }
        let mut reports = Vec::new();
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok(Some((i, probe, name, report, attempts, registry, started))) => {
                    record_run(&self.telemetry, &probe, &report, attempts);
                    log_run(&name, &report, None);
                    self.pipeline.publish_run(&name, &registry, started);
                    reports.push((i, name, report));
                }
                Ok(None) => {}
                Err(e) => tracing::error!(error = %e, "probe task failed"),
            }
        }
        reports.sort_by_key(|(i, _, _)| *i);
        let scrapes_failed = self.scrape_once(&abort).await;
        self.pipeline.publish(self.pipeline.self_metrics(now_ms()));
        // Started only now, so that a `PUT` carries every probe's result at once instead of
        // replacing the group with a partial picture first.
        self.spawn_gateways(&senders, &drain, &abort);
        self.drain(senders, drain, abort, false).await;
        self.pipeline.flush();

        self.summary(
            reports.into_iter().map(|(_, n, r)| (n, r)).collect(),
            scrapes_failed,
        )
    }

    /// Scrapes every target once, concurrently and without the phase offset, queues the
    /// samples, then sends the metadata once to every receiver. No end-of-run staleness
    /// markers: a `once` run from cron must not end its series between runs. Returns how
    /// many scrapes failed.
    async fn scrape_once(&mut self, abort: &CancellationToken) -> usize {
        let mut set = JoinSet::new();
        let mut scrapers = std::mem::take(&mut self.scrapers);
        for d in std::mem::take(&mut self.discovered_scrapes) {
            let targets = tokio::select! {
                t = crate::discovery::discover_once(&d.job.job, &d.job.discovery, d.providers, &d.job.defaults, &self.telemetry) => t,
                _ = abort.cancelled() => Vec::new(),
            };
            for t in &targets {
                if let Some(target) = crate::config::ScrapeTargetSettings::from_target(t) {
                    scrapers.push(Scraper::new(&d.job, &target, d.client.clone()));
                }
            }
        }
        for mut scraper in scrapers {
            let (telemetry, metadata, abort) =
                (self.telemetry.clone(), self.metadata.clone(), abort.clone());
            set.spawn(async move {
                let mut out = Vec::new();
                tokio::select! {
                    s = scraper.scrape(&mut out, &telemetry, Some(&metadata)) => {
                        let report_from = out.len().saturating_sub(REPORT_SERIES.len());
                        Some((s.up(), scraper.key().to_owned(), out, report_from))
                    }
                    _ = abort.cancelled() => None,
                }
            });
        }
        let mut failed = 0;
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok(Some((up, source, samples, report_from))) => {
                    failed += usize::from(!up);
                    self.pipeline.publish_scraped(&source, samples, report_from);
                }
                Ok(None) => {}
                Err(e) => tracing::error!(error = %e, "scrape task failed"),
            }
        }
        // One small request per receiver, each bounded by that receiver's timeout.
        for (_, sender) in std::mem::take(&mut self.metadata_senders) {
            tokio::select! {
                _ = sender.send(&self.metadata) => {}
                _ = abort.cancelled() => break,
            }
        }
        failed
    }

    /// Sends one finished run of `source` (an `exec` job) through every sink, stamped
    /// `timestamp_ms`, and waits for delivery up to the drain deadline. Runs no probe.
    pub async fn push(
        mut self,
        source: &str,
        registry: &Registry,
        timestamp_ms: i64,
        abort: CancellationToken,
    ) -> OnceSummary {
        let senders = TaskTracker::new();
        let drain = Drain::new();
        self.spawn_senders(&senders, &drain, &abort);
        self.pipeline.publish_run(source, registry, timestamp_ms);
        self.pipeline.publish(self.pipeline.self_metrics(now_ms()));
        self.spawn_gateways(&senders, &drain, &abort);
        self.drain(senders, drain, abort, false).await;
        self.pipeline.flush();
        self.summary(Vec::new(), 0)
    }

    /// Samples the receiver `endpoint` refused (non-retryable).
    fn refused_by(&self, endpoint: &str) -> usize {
        self.telemetry
            .value(telemetry::RW_SAMPLES_FAILED, &[("endpoint", endpoint)])
            .unwrap_or(0.0) as usize
    }
}

/// Ends every series a stopped probe reported (a discovered target that went, a probe a
/// reload removed or restarts) with a staleness marker, and takes its group off the
/// Pushgateway feed.
fn end_series(pipeline: &Pipeline, source: &str, registry: &Registry) {
    let markers: Vec<Sample> = registry
        .samples_at(now_ms())
        .into_iter()
        .map(|mut s| {
            s.value = crate::series::stale_nan();
            s
        })
        .collect();
    tracing::debug!(source = %source, markers = markers.len(), "probe stopped; its series end");
    pipeline.publish_from(Origin::new(source, Priority::Report), markers);
    if let Some(feed) = pipeline.feed.get() {
        feed.remove(source);
    }
}

/// Ends the agent's own series about a probe or scrape job that is gone (removed, or replaced
/// by a reload): they leave `/metrics` and get staleness markers on the wire. Not on shutdown,
/// whose last self-metrics keep them.
fn end_self_series(pipeline: &Pipeline, subject: telemetry::Subject<'_>) {
    let markers = pipeline.telemetry.end(subject, now_ms());
    tracing::debug!(?subject, markers = markers.len(), "its self-metrics end");
    pipeline.publish_self(markers);
}

/// Counts a probe run and its attempts.
fn record_run(telemetry: &Telemetry, name: &str, report: &ProbeReport, attempts: RunAttempts) {
    let outcome = if report.success { "success" } else { "failure" };
    telemetry.add(
        telemetry::PROBE_RUNS,
        &[("probe", name), ("outcome", outcome)],
        1.0,
    );
    for (outcome, n) in [
        ("success", attempts.succeeded),
        ("failure", attempts.failed),
    ] {
        if n > 0 {
            telemetry.add(
                telemetry::PROBE_ATTEMPTS,
                &[("probe", name), ("outcome", outcome)],
                f64::from(n),
            );
        }
    }
}

/// Logs a run of the probe publishing as `source`. As scrapes do, a failure is logged at
/// `warn` when it starts, then at `debug` while it goes on (a target that stays down would
/// otherwise log every interval), and the recovery at `info`. `was_failing` is `None` for a
/// one-off run (`once`, `check`), which has no run before or after it.
fn log_run(source: &str, report: &ProbeReport, was_failing: Option<bool>) {
    let reason = report.reason.as_deref().unwrap_or("");
    let status = &report.status;
    match (was_failing, report.success) {
        (None, false) => tracing::warn!(probe = source, %status, reason, "probe failed"),
        (Some(false), false) => tracing::warn!(
            probe = source,
            %status,
            reason,
            "probe failed; further failures are logged at debug until it succeeds"
        ),
        (Some(true), false) => {
            tracing::debug!(probe = source, %status, reason, "probe failed again")
        }
        (Some(true), true) => tracing::info!(probe = source, %status, "probe succeeded again"),
        (_, true) => {
            tracing::debug!(probe = source, %status, duration = ?report.duration, "probe succeeded")
        }
    }
}

/// When a probe runs: every `interval`, the first run `offset` after start, each run making up
/// to `retries + 1` attempts.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    interval: Duration,
    retries: u32,
    offset: Duration,
}

/// Runs one probe on its [`Schedule`] until cancelled, publishing as `source` (its name, or a
/// discovered target's `probe/instance`), and hands back the registry when stopped so its
/// series can be ended. A run that overruns its interval skips the ticks it missed; the next
/// run starts at the probe's phase (see [`crate::clock::phase_ticker`]).
///
/// The probe is boxed: an HTTP probe's settings are 1.6 KB, and a probe moved by value into
/// the task's future and on into this one's was held in both, about 3 KB more per probe for
/// as long as it runs.
async fn probe_target_loop(
    mut probe: Box<Probe>,
    source: String,
    Schedule {
        interval,
        retries,
        offset,
    }: Schedule,
    pipeline: Arc<Pipeline>,
    telemetry: Arc<Telemetry>,
    shutdown: CancellationToken,
) -> Registry {
    let mut registry = Registry::with_native(telemetry.native());
    // Both outcomes exist from the start, so the first failure is an increase, not a new series.
    for outcome in ["success", "failure"] {
        for family in [telemetry::PROBE_RUNS, telemetry::PROBE_ATTEMPTS] {
            telemetry.add(
                family,
                &[("probe", probe.name()), ("outcome", outcome)],
                0.0,
            );
        }
    }
    let mut ticker = crate::clock::phase_ticker(offset, interval);
    // Whether the latest run failed: a failure is logged at `warn` once, not every run.
    let mut failing = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return registry,
            _ = ticker.tick() => {}
        }
        // The measurement's timestamp is when it started, as a Prometheus scrape's is.
        let started = now_ms();
        // Boxed per run: a run's future is as large as the largest probe kind's (a gRPC
        // call's), and kept inline it would stay allocated in every probe's task between
        // runs. Only the few runs in flight at once hold one.
        let (report, attempts) = tokio::select! {
            _ = shutdown.cancelled() => return registry,
            r = Box::pin(probe.run_attempts(&mut registry, retries)) => r,
        };
        record_run(&telemetry, probe.name(), &report, attempts);
        log_run(&source, &report, Some(failing));
        failing = !report.success;
        pipeline.publish_run(&source, &registry, started);
        // Series this run no longer reports (e.g. TLS facts after a failed handshake) end now.
        pipeline.publish_from(
            Origin::new(&source, Priority::Report),
            registry.take_stale_markers(started),
        );
    }
}

/// Queues the agent's own metrics every `interval` until cancelled.
async fn self_metrics_loop(
    pipeline: Arc<Pipeline>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => pipeline.publish(pipeline.self_metrics(now_ms())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::series::Labels;

    #[test]
    fn a_run_counts_once_and_its_attempts_each() {
        let telemetry = Telemetry::new();
        let report = ProbeReport {
            success: true,
            duration: Duration::from_millis(1),
            status: "200".into(),
            reason: None,
            details: vec![],
        };
        let attempts = RunAttempts {
            succeeded: 1,
            failed: 2,
        };
        record_run(&telemetry, "web", &report, attempts);
        let value =
            |family, outcome| telemetry.value(family, &[("probe", "web"), ("outcome", outcome)]);
        assert_eq!(value(telemetry::PROBE_RUNS, "success"), Some(1.0));
        assert_eq!(value(telemetry::PROBE_RUNS, "failure"), None);
        assert_eq!(value(telemetry::PROBE_ATTEMPTS, "success"), Some(1.0));
        assert_eq!(value(telemetry::PROBE_ATTEMPTS, "failure"), Some(2.0));
    }

    fn samples(n: usize) -> Vec<Sample> {
        let labels = Labels::with_name("m", [("probe", "p")]).unwrap();
        (0..n)
            .map(|i| Sample {
                labels: labels.clone(),
                value: i as f64,
                timestamp_ms: i as i64,
            })
            .collect()
    }

    fn pipeline(capacities: &[usize]) -> Pipeline {
        let telemetry = Arc::new(Telemetry::new());
        Pipeline {
            outputs: RwLock::new(
                capacities
                    .iter()
                    .enumerate()
                    .map(|(i, c)| Output {
                        endpoint: format!("rw{i}"),
                        queue: SharedQueue::new(Box::new(MemoryQueue::new(*c))),
                    })
                    .collect(),
            ),
            fanout: Fanout::Memory,
            feed: OnceLock::new(),
            telemetry,
            self_labels: Vec::new(),
            catalog: OnceLock::new(),
        }
    }

    #[test]
    fn publish_run_reaches_the_queues_and_the_pushgateway_feed() {
        let p = pipeline(&[10]);
        let feed = Feed::new();
        assert!(p.feed.set(feed.clone()).is_ok());
        let mut r = Registry::new();
        r.gauge_set("up", &[("probe", "a")], 1.0).unwrap();
        p.publish_run("a", &r, 1000);
        assert_eq!(p.pending(), 1);
        assert_eq!(feed.generation(), 1);
        let (_, rendered) = feed.render(&Default::default());
        assert_eq!(rendered.text, "# TYPE up untyped\nup{probe=\"a\"} 1\n");
        // A discovered target that goes leaves the group.
        feed.remove("a");
        assert_eq!(feed.generation(), 2);
        assert_eq!(feed.render(&Default::default()).1.text, "");
        feed.remove("a");
        assert_eq!(feed.generation(), 2, "removing nothing wakes no sink");
    }

    #[test]
    fn publish_fans_out_to_every_queue_and_counts_overflow_per_endpoint() {
        let p = pipeline(&[10, 3]);
        p.publish(samples(5));
        assert_eq!(p.outputs()[0].queue.pending(), 5);
        assert_eq!(p.outputs()[1].queue.pending(), 3);
        let dropped = |e: &str| {
            p.telemetry.value(
                telemetry::RW_SAMPLES_DROPPED,
                &[("endpoint", e), ("reason", "queue_full")],
            )
        };
        assert_eq!(dropped("rw0"), None);
        assert_eq!(dropped("rw1"), Some(2.0));
        assert_eq!(p.pending(), 8);
    }

    #[test]
    fn a_scrape_overflowing_the_queue_pushes_out_its_own_bulk_not_others_or_reports() {
        let p = pipeline(&[10]);
        // Each scrape: its samples, then (from `report_from`) its report series.
        p.publish_scraped("node/a:9100", samples(3), 1);
        p.publish_scraped("huge/b:8080", samples(20), 18);
        p.publish_scraped("node/a:9100", samples(3), 1);
        let queued: Vec<f64> = p.outputs()[0]
            .queue
            .with(|q| q.peek(100))
            .unwrap()
            .unwrap()
            .iter()
            .map(|s| s.value)
            .collect();
        // Every sample of the healthy target; of the huge one, its report series and as many
        // of its newest samples as the healthy one holds.
        assert_eq!(
            queued,
            [0.0, 1.0, 2.0, 16.0, 17.0, 18.0, 19.0, 0.0, 1.0, 2.0]
        );
        assert_eq!(
            p.telemetry.value(
                telemetry::RW_SAMPLES_DROPPED,
                &[("endpoint", "rw0"), ("reason", "queue_full")],
            ),
            Some(16.0)
        );
    }

    #[test]
    fn self_metrics_report_queue_depth() {
        let p = pipeline(&[10]);
        p.publish(samples(4));
        let snapshot = p.self_metrics(1234);
        let pending = snapshot
            .iter()
            .find(|s| s.labels.metric_name() == telemetry::RW_PENDING)
            .expect("pending gauge present");
        assert_eq!(pending.value, 4.0);
        assert_eq!(pending.timestamp_ms, 1234);
        assert!(snapshot
            .iter()
            .any(|s| s.labels.metric_name() == telemetry::BUILD_INFO));
    }

    #[test]
    fn pushed_self_metrics_carry_the_agent_job_and_instance() {
        let mut p = pipeline(&[10]);
        p.self_labels = vec![
            ("job".to_string(), "pushprobe".to_string()),
            ("instance".to_string(), "edge-7".to_string()),
        ];
        let snapshot = p.self_metrics(1);
        assert!(!snapshot.is_empty());
        for s in &snapshot {
            assert_eq!(s.labels.get("job"), Some("pushprobe"), "{:?}", s.labels);
            assert_eq!(s.labels.get("instance"), Some("edge-7"), "{:?}", s.labels);
        }
        let info = snapshot
            .iter()
            .find(|s| s.labels.metric_name() == telemetry::BUILD_INFO)
            .expect("build info");
        assert_eq!(info.labels.get("version"), Some(env!("CARGO_PKG_VERSION")));
        // The registry itself (what `/metrics` serves) stays without them: a scraper adds its own.
        assert!(p
            .telemetry
            .samples_at(1)
            .iter()
            .all(|s| s.labels.get("job").is_none() && s.labels.get("instance").is_none()));
    }

    fn disk_pipeline(dir: &Path, endpoints: &[&str]) -> Pipeline {
        disk_pipeline_on(dir, endpoints, Arc::new(RealFs))
    }

    fn disk_pipeline_on(
        dir: &Path,
        endpoints: &[&str],
        fs: Arc<dyn crate::queue::disk::fs::Fs>,
    ) -> Pipeline {
        let names: Vec<String> = endpoints.iter().map(|e| e.to_string()).collect();
        let (log, consumers) = DiskLog::open(
            &dir.join("queue"),
            crate::queue::disk::DiskQueueOptions::default(),
            fs,
            &names,
        )
        .unwrap();
        let outputs = consumers
            .into_iter()
            .zip(&names)
            .map(|(c, name)| Output {
                endpoint: name.clone(),
                queue: SharedQueue::new(Box::new(c)),
            })
            .collect();
        Pipeline {
            outputs: RwLock::new(outputs),
            fanout: Fanout::Disk(DiskQueue {
                log,
                capacity_bytes: 1 << 30,
                _lock: lock_data_dir(dir).unwrap(),
                exported: Mutex::new(Exported::default()),
            }),
            feed: OnceLock::new(),
            telemetry: Arc::new(Telemetry::new()),
            self_labels: Vec::new(),
            catalog: OnceLock::new(),
        }
    }

    #[test]
    fn disk_pipeline_appends_once_for_every_endpoint_and_exports_queue_figures() {
        let dir = tempfile::tempdir().unwrap();
        let p = disk_pipeline(dir.path(), &["a", "b"]);
        p.publish(samples(5));
        assert_eq!(p.outputs()[0].queue.pending(), 5);
        assert_eq!(p.outputs()[1].queue.pending(), 5);
        let Fanout::Disk(disk) = &p.fanout else {
            unreachable!()
        };
        // Written once, read by both.
        assert_eq!(disk.log.stats().samples, 5);
        let snapshot = p.self_metrics(1);
        let value = |name: &str| {
            snapshot
                .iter()
                .find(|s| s.labels.metric_name() == name)
                .map(|s| s.value)
        };
        assert!(value(telemetry::QUEUE_BYTES).unwrap() > 0.0);
        assert_eq!(value(telemetry::QUEUE_SEGMENTS), Some(1.0));
        assert_eq!(
            value(telemetry::QUEUE_CAPACITY_BYTES),
            Some((1u64 << 30) as f64)
        );
        assert_eq!(value(telemetry::QUEUE_CORRUPT_RECORDS), Some(0.0));
        // Exporting twice adds nothing new.
        p.self_metrics(2);
        assert_eq!(
            p.telemetry
                .value(telemetry::QUEUE_SAMPLES_DROPPED, &[("reason", "disk_full")]),
            Some(0.0)
        );
    }

    #[test]
    fn samples_a_full_filesystem_has_no_room_for_are_dropped_as_disk_full_not_queue_error() {
        use crate::queue::disk::memfs::{Faults, MemFs};
        let dir = tempfile::tempdir().unwrap();
        let fs = MemFs::new();
        let p = disk_pipeline_on(dir.path(), &["a", "b"], Arc::new(fs.clone()));
        p.publish(samples(5));
        // Nothing left to drop: the filesystem is full of someone else's data.
        fs.set_faults(Faults {
            capacity: Some(0),
            ..Faults::default()
        });
        for _ in 0..3 {
            p.publish(samples(4));
        }
        p.self_metrics(1);
        for endpoint in ["a", "b"] {
            let dropped = |reason| {
                p.telemetry.value(
                    telemetry::RW_SAMPLES_DROPPED,
                    &[("endpoint", endpoint), ("reason", reason)],
                )
            };
            assert_eq!(dropped("disk_full"), Some(12.0), "{endpoint}");
            assert_eq!(dropped("queue_error"), None, "{endpoint}");
        }
        assert_eq!(
            p.telemetry
                .value(telemetry::QUEUE_SAMPLES_DROPPED, &[("reason", "disk_full")]),
            Some(12.0)
        );
        // What was stored before is still there.
        assert_eq!(p.outputs()[0].queue.pending(), 5);
    }

    #[test]
    fn a_removed_endpoint_leaves_the_fan_out_and_its_series_end() {
        let p = pipeline(&[10, 10]);
        p.publish(samples(2));
        p.telemetry
            .set(telemetry::RW_PENDING, &[("endpoint", "rw1")], 2.0);
        let gone = p.remove_output("rw1").unwrap();
        p.publish(samples(3));
        assert_eq!(gone.queue.pending(), 2, "nothing new for it");
        assert_eq!(p.outputs()[0].queue.pending(), 5);
        p.end_sink_series(telemetry::Subject::Endpoint("rw1"));
        let pending = |e| p.telemetry.value(telemetry::RW_PENDING, &[("endpoint", e)]);
        assert_eq!(pending("rw1"), None);
        let queued = p.outputs()[0].queue.with(|q| q.peek(100)).unwrap().unwrap();
        assert!(
            queued
                .iter()
                .any(|s| s.labels.metric_name() == telemetry::RW_PENDING
                    && s.labels.get("endpoint") == Some("rw1")
                    && crate::series::is_stale_nan(s.value)),
            "its series end with a staleness marker"
        );
        // An endpoint added gets what is published from then on.
        p.add_output(Output {
            endpoint: "rw2".into(),
            queue: SharedQueue::new(Box::new(MemoryQueue::new(10))),
        });
        p.publish(samples(1));
        assert_eq!(p.queue_of("rw2").unwrap().pending(), 1);
    }

    #[test]
    fn a_removed_endpoint_of_the_disk_queue_drains_only_what_was_queued_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = disk_pipeline(dir.path(), &["a", "b"]);
        p.publish(samples(5));
        let gone = p.remove_output("b").unwrap();
        p.publish(samples(4));
        assert_eq!(gone.queue.pending(), 5);
        assert_eq!(p.pending(), 9, "a alone counts");
        assert_eq!(gone.queue.with(|q| q.release()), 5);
        p.self_metrics(1);
        p.end_sink_series(telemetry::Subject::Endpoint("b"));
        p.self_metrics(2);
        assert_eq!(
            p.telemetry.value(
                telemetry::RW_SAMPLES_DROPPED,
                &[("endpoint", "b"), ("reason", "disk_full")]
            ),
            None,
            "no longer exported once ended"
        );
    }

    #[test]
    fn metadata_requests_go_to_1_0_endpoints_while_scrape_jobs_run() {
        let endpoints = r#"
[[remote_write]]
name = "v1"
url = "http://127.0.0.1:9/one"

[[remote_write]]
name = "v2"
url = "http://127.0.0.1:9/two"
protobuf_message = "io.prometheus.write.v2.Request"
"#;
        let names = |toml: &str| -> Vec<String> {
            let settings = crate::config::tests::parse(toml).unwrap();
            metadata_endpoints(&settings)
                .map(|rw| rw.name.clone())
                .collect()
        };
        assert!(names(endpoints).is_empty(), "nothing scraped, no metadata");
        let scraping =
            format!("{endpoints}\n[[scrape]]\njob = \"node\"\ntargets = [\"127.0.0.1:9100\"]\n");
        assert_eq!(names(&scraping), ["v1"]);
    }

    #[test]
    fn a_second_agent_on_the_same_data_dir_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let _held = lock_data_dir(dir.path()).unwrap();
        let err = lock_data_dir(dir.path()).unwrap_err();
        assert!(matches!(err, AgentError::DataDirLocked { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains(&dir.path().display().to_string()), "{text}");
        assert!(text.contains("another pushprobe"), "{text}");
        drop(_held);
        // Released with its holder (the kernel does the same when a process dies).
        assert!(lock_data_dir(dir.path()).is_ok());
    }
    #[test]
    fn a_receiver_reports_what_it_did_not_get_and_why() {
        let none = Attempts::default();
        let unreachable = Attempts {
            transport: 3,
            ..none
        };
        let ok = remote_write_delivery("vm", 0, 0, unreachable);
        assert!(
            ok.delivered && ok.undelivered == 0 && ok.reason.is_none(),
            "{ok:?}"
        );
        let down = remote_write_delivery("vm", 12, 0, unreachable);
        assert!(!down.delivered);
        assert_eq!(down.undelivered, 12);
        assert_eq!(
            down.reason.as_deref(),
            Some("unreachable (3 failed attempts)")
        );
        let busy = Attempts {
            retryable: 2,
            ..none
        };
        assert_eq!(
            remote_write_delivery("vm", 5, 0, busy).reason.as_deref(),
            Some("answered with retryable errors (2 times)")
        );
        assert_eq!(
            remote_write_delivery("vm", 0, 7, none).reason.as_deref(),
            Some("refused with a non-retryable status")
        );
        let both = remote_write_delivery("vm", 5, 7, none);
        assert_eq!(both.undelivered, 12);
        assert_eq!(
            both.reason.as_deref(),
            Some(
                "7 refused with a non-retryable status; 5 still queued, \
                 no answer before agent.drain_timeout"
            )
        );
    }

    #[test]
    fn a_pushgateway_group_reports_what_it_did_not_get_and_why() {
        let none = Attempts::default();
        assert_eq!(pushgateway_delivery("pg", true, 0, none).reason, None);
        let refused = Attempts {
            rejected: 1,
            ..none
        };
        let d = pushgateway_delivery("pg", false, 4, refused);
        assert_eq!(d.undelivered, 4);
        assert_eq!(
            d.reason.as_deref(),
            Some("refused with a non-retryable status (1 time)")
        );
        assert_eq!(
            pushgateway_delivery("pg", false, 0, none).reason.as_deref(),
            Some("pushed, but deleting the group (delete_on_exit) failed")
        );
    }

    #[test]
    fn a_shortfall_counts_in_the_sinks_own_unit() {
        let none = Attempts::default();
        assert_eq!(
            pushgateway_delivery("pg", false, 4, none).shortfall(),
            "4 series not delivered: no answer before agent.drain_timeout"
        );
        assert_eq!(
            remote_write_delivery("vm", 5, 0, none).shortfall(),
            "5 samples not delivered: no answer before agent.drain_timeout"
        );
        // Nothing missing: the reason alone.
        assert_eq!(
            pushgateway_delivery("pg", false, 0, none).shortfall(),
            "pushed, but deleting the group (delete_on_exit) failed"
        );
    }
}
