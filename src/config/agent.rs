//! `[agent]` and `[agent.queue]`: agent-wide settings (identity and external labels, drain,
//! the listener, threads) and the disk queue, and their validation into [`AgentSettings`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ByteSize, Checker, ConfigDuration};
use crate::queue::disk::{DiskQueueOptions, FsyncPolicy};

/// Most runtime threads `agent.worker_threads` accepts: more than any edge host has cores.
pub const MAX_WORKER_THREADS: usize = 64;

/// The `job` of the agent's own series, as a self-scrape would name it, and the default
/// `job` of probe series (`agent.job`).
pub const DEFAULT_JOB: &str = "pushprobe";

/// The external label Mimir's HA tracker takes the replica from by default.
pub const MIMIR_REPLICA_LABEL: &str = "__replica__";

/// The `instance` of the agent's own series when neither `agent.instance` is set nor the
/// host name can be read.
pub const FALLBACK_INSTANCE: &str = "localhost";

/// Agent-wide settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Labels added to every series sent (a series' own label of the same name wins; the
    /// agent's default `job` and `instance` give way to them).
    pub external_labels: BTreeMap<String, String>,
    /// The `instance` label of the agent's own series; unset: the host name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The `job` label of probe series without their own `job`; unset: `pushprobe`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// How long `run` keeps sending after SIGINT/SIGTERM, and `once` waits for delivery.
    pub drain_timeout: ConfigDuration,
    /// How often the agent's own metrics are recorded.
    pub self_metrics_interval: ConfigDuration,
    /// Address of the optional health/metrics listener (`/-/healthy`, `/-/ready`, `/metrics`)
    /// for `run`, e.g. `0.0.0.0:9465`; unset means no listener.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Directory for durable state; samples are queued on disk in `<data_dir>/queue` and
    /// survive restarts. Unset: in-memory queues, lost on restart.
    pub data_dir: Option<PathBuf>,
    /// The disk queue (`[agent.queue]`), used when `data_dir` is set.
    pub queue: QueueConfig,
    /// How often the metadata (type, help, unit) of scraped families is sent to each
    /// remote-write receiver; Prometheus' default is 1m. `0s` turns it off.
    pub metadata_interval: ConfigDuration,
    /// Threads that run `run`'s probes, scrapes and sends. Unset: 1, or 2 with `data_dir`,
    /// so that a slow disk sync never holds up every task. A signed integer, so that any
    /// number gets the range message rather than a type error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_threads: Option<i64>,
    /// Send the agent's own histograms (probe latency, AI request duration, time to first
    /// token, …) to remote-write receivers as native (exponential) histograms instead of
    /// classic `_bucket`/`_sum`/`_count` series.
    pub native_histograms: bool,
    /// Largest growth factor between one native bucket bound and the next, as Prometheus
    /// clients' `NativeHistogramBucketFactor`: the schema with the largest growth not above it
    /// is used.
    pub native_histogram_bucket_factor: f64,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            external_labels: BTreeMap::new(),
            instance: None,
            job: None,
            drain_timeout: ConfigDuration(Duration::from_secs(15)),
            self_metrics_interval: ConfigDuration(Duration::from_secs(15)),
            listen: None,
            data_dir: None,
            queue: QueueConfig::default(),
            metadata_interval: ConfigDuration(Duration::from_secs(60)),
            worker_threads: None,
            native_histograms: false,
            native_histogram_bucket_factor: 1.1,
        }
    }
}

/// When the disk queue forces data to stable storage (see `queue::disk`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncMode {
    /// After every append: a power loss loses nothing; one fsync per append.
    Always,
    /// Every `fsync_interval`: a power loss loses up to one interval.
    Interval,
    /// Left to the kernel: a power loss loses what the page cache held.
    Never,
}

/// Disk queue settings (`[agent.queue]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Most bytes the queue may use, as bytes or e.g. "1GiB"; the oldest data goes first.
    pub max_disk_bytes: ByteSize,
    /// Sync policy.
    pub fsync: FsyncMode,
    /// Period of `fsync = "interval"`.
    pub fsync_interval: ConfigDuration,
    /// Samples older than this when sent are dropped (receivers refuse too old samples).
    pub max_sample_age: Option<ConfigDuration>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        let d = DiskQueueOptions::default();
        QueueConfig {
            max_disk_bytes: ByteSize(d.max_disk_bytes),
            fsync: FsyncMode::Interval,
            fsync_interval: ConfigDuration(Duration::from_secs(1)),
            max_sample_age: None,
        }
    }
}

/// Validated agent settings.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    /// External labels, validated.
    pub external_labels: crate::series::Labels,
    /// The `instance` of the agent's own series: `agent.instance`, or the host name.
    pub instance: String,
    /// Whether `instance` is the fallback because the host name could not be read.
    pub instance_is_fallback: bool,
    /// The `job` of probe series without their own: `agent.job`, or `pushprobe`.
    pub job: String,
    /// Drain deadline.
    pub drain_timeout: Duration,
    /// Self-metrics period.
    pub self_metrics_interval: Duration,
    /// Health/metrics listener address, if any.
    pub listen: Option<std::net::SocketAddr>,
    /// Directory for durable state; `None` means in-memory queues.
    pub data_dir: Option<PathBuf>,
    /// Disk queue settings, validated (used when `data_dir` is set).
    pub disk_queue: DiskQueueOptions,
    /// Period of the scrape-metadata sends; `None`: not sent.
    pub metadata_interval: Option<Duration>,
    /// Threads that run `run`'s tasks; 1 means a single-threaded runtime.
    pub worker_threads: usize,
    /// How the agent's own histograms are kept as native ones; `None`: classic only.
    pub native_histograms: Option<crate::series::native::NativeOptions>,
}

/// Validates `[agent]`; errors name `agent.<key>`.
pub(super) fn validate_agent(c: &mut Checker<'_>, a: &AgentConfig) -> AgentSettings {
    // Mimir's HA tracker reads the replica from `__replica__` by default and drops it on
    // ingestion; it is the one reserved (`__`) name an external label may have.
    let mut checked = a.external_labels.clone();
    let replica = checked.remove_entry(MIMIR_REPLICA_LABEL);
    let mut ext = c.labels("agent.external_labels", &checked);
    if let Some((name, value)) = replica {
        if value.is_empty() {
            c.fail(
                format!("agent.external_labels.{name}"),
                "label value must not be empty",
            );
        }
        ext.push((name, value));
    }
    let external_labels = crate::series::Labels::from_pairs(ext).unwrap_or_default();
    for (key, value) in [("agent.instance", &a.instance), ("agent.job", &a.job)] {
        if value.as_deref().is_some_and(str::is_empty) {
            c.fail(key, "must not be empty (leave it out for the default)");
        }
    }
    let (instance, instance_is_fallback) = resolve_instance(a.instance.as_deref(), host_name);
    if a.data_dir
        .as_ref()
        .is_some_and(|d| d.as_os_str().is_empty())
    {
        c.fail(
            "agent.data_dir",
            "must not be empty (leave it out for memory queues)",
        );
    } else if let Some(dir) = &a.data_dir {
        check_data_dir(c, dir);
    }
    let self_metrics_interval = c.positive(
        "agent.self_metrics_interval".into(),
        a.self_metrics_interval,
    );
    let listen = a.listen.as_deref().and_then(|text| listen_address(c, text));
    let disk_queue = validate_queue(c, &a.queue);
    let worker_threads = worker_threads(c, a);
    let factor = a.native_histogram_bucket_factor;
    if !(factor > 1.0 && factor.is_finite()) {
        c.fail(
            "agent.native_histogram_bucket_factor",
            format!("{factor} must be a number above 1, e.g. 1.1 (each bucket 10% wider)"),
        );
    }
    let native_histograms = a
        .native_histograms
        .then(|| crate::series::native::NativeOptions::from_factor(factor));
    AgentSettings {
        external_labels,
        instance,
        instance_is_fallback,
        job: a.job.clone().unwrap_or_else(|| DEFAULT_JOB.to_string()),
        drain_timeout: a.drain_timeout.0,
        self_metrics_interval,
        listen,
        data_dir: a.data_dir.clone(),
        disk_queue,
        metadata_interval: Some(c.bounded("agent.metadata_interval".into(), a.metadata_interval))
            .filter(|d| !d.is_zero()),
        worker_threads,
        native_histograms,
    }
}

impl AgentSettings {
    /// The labels that tell the agent's own series from another agent's: `job="pushprobe"`
    /// and `instance`, as a self-scrape would carry them. An external label of the same name
    /// wins (it was the only way to name the agent before these labels existed).
    pub fn self_labels(&self) -> Vec<(String, String)> {
        [("job", DEFAULT_JOB), ("instance", self.instance.as_str())]
            .into_iter()
            .filter(|(name, _)| self.external_labels.get(name).is_none())
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    /// The `job` given to probe series that set none themselves; `None` when an external
    /// `job` label is to apply instead.
    pub fn probe_job(&self) -> Option<&str> {
        self.external_labels
            .get("job")
            .is_none()
            .then_some(self.job.as_str())
    }
}

/// Label names the agent sets on its own series and probe series; an external label of
/// one of these names does not tell two agents' probe series apart.
const IDENTITY_LABELS: [&str; 2] = ["job", "instance"];

/// What `config check` says about the agent's identity in a fleet: a host name that could
/// not be read, an `agent.instance`/`agent.job` an external label overrides, and probe
/// series that another agent probing the same targets would write identically.
pub(super) fn identity_warnings(
    file: &AgentConfig,
    agent: &AgentSettings,
    probes: &[super::ProbeSettings],
) -> Vec<String> {
    let mut out = Vec::new();
    if agent.instance_is_fallback {
        out.push(format!(
            "agent.instance: the host name could not be read, so the agent's own series carry              instance=\"{FALLBACK_INSTANCE}\" like any other such agent's; set [agent]              instance = \"…\""
        ));
    }
    for (name, set) in [("instance", &file.instance), ("job", &file.job)] {
        if set.is_some() && agent.external_labels.get(name).is_some() {
            out.push(format!(
                "agent.{name} is overridden by agent.external_labels.{name}, which wins on \
                 every series without its own {name}; remove one of them"
            ));
        }
    }
    let told_apart = agent
        .external_labels
        .iter()
        .any(|l| !IDENTITY_LABELS.contains(&l.name));
    let alike: Vec<&str> = probes
        .iter()
        .filter(|p| p.labels().iter().all(|(name, _)| name == "job"))
        .map(|p| p.name())
        .collect();
    if !told_apart && !alike.is_empty() {
        out.push(format!(
            "agent.external_labels: no label tells this agent's probe series from those of \
             another agent probing the same targets (probes: {}); they would write the very \
             same series into a shared receiver. Add one, e.g. [agent.external_labels] \
             region = \"…\" (or `labels` on each probe); see docs/fleet.md",
            alike.join(", ")
        ));
    }
    out
}

/// `agent.instance` if set, else the host name `lookup` finds, else [`FALLBACK_INSTANCE`];
/// the flag tells the fallback apart.
fn resolve_instance(
    configured: Option<&str>,
    lookup: impl FnOnce() -> Option<String>,
) -> (String, bool) {
    match configured {
        Some(name) => (name.to_string(), false),
        None => match lookup() {
            Some(name) => (name, false),
            None => (FALLBACK_INSTANCE.to_string(), true),
        },
    }
}

/// This host's name, as `hostname` prints it: `gethostname(2)`, else the kernel's
/// `/proc/sys/kernel/hostname`; `None` when neither gives a non-empty name.
fn host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is writable for its whole length, which is what is passed; the result is
    // read only up to the first NUL, within `buf` (POSIX leaves a truncated name
    // unterminated, hence the bound).
    #[allow(unsafe_code)]
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let from_libc = (rc == 0).then(|| {
        let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).trim().to_string()
    });
    from_libc
        .filter(|n| !n.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|n| n.trim().to_string())
        })
        .filter(|n| !n.is_empty())
}

/// Refuses a `data_dir` that is not a directory, or that cannot be created because a part of
/// its path is a file: the agent would refuse it at start. Whether this user may write it,
/// and whether a running agent holds it, is the agent's to tell (`config check` warns).
fn check_data_dir(c: &mut Checker<'_>, dir: &std::path::Path) {
    // The nearest part of the path that exists decides: the rest is created at start.
    let Some((existing, meta)) = dir
        .ancestors()
        .filter(|p| !p.as_os_str().is_empty())
        .find_map(|p| std::fs::metadata(p).ok().map(|m| (p, m)))
    else {
        return;
    };
    if meta.is_dir() {
        return;
    }
    let message = if existing == dir {
        format!("{} is not a directory", dir.display())
    } else {
        format!(
            "{} cannot be created: {} is not a directory",
            dir.display(),
            existing.display()
        )
    };
    c.fail("agent.data_dir", message);
}

/// Reads `agent.listen`.
fn listen_address(c: &mut Checker<'_>, text: &str) -> Option<std::net::SocketAddr> {
    // A socket address, not a host name: the listener binds before any DNS is consulted, and
    // `localhost` resolving to ::1 only would surprise a probe.
    match text.parse::<std::net::SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            c.fail(
                "agent.listen",
                format!("{text:?} is not an IP:port address, e.g. \"0.0.0.0:9465\""),
            );
            None
        }
    }
}

/// Reads `agent.worker_threads`, defaulting to 1, or 2 with a disk queue.
fn worker_threads(c: &mut Checker<'_>, a: &AgentConfig) -> usize {
    let Some(n) = a.worker_threads else {
        return if a.data_dir.is_some() { 2 } else { 1 };
    };
    match usize::try_from(n) {
        Ok(n) if (1..=MAX_WORKER_THREADS).contains(&n) => n,
        _ => {
            c.fail(
                "agent.worker_threads",
                format!(
                    "must be between 1 and {MAX_WORKER_THREADS}, got {n}; leave it \
                     out for 1 (2 with data_dir)"
                ),
            );
            1
        }
    }
}

/// Turns `[agent.queue]` into disk queue options; errors name `agent.queue.<key>`.
fn validate_queue(c: &mut Checker<'_>, q: &QueueConfig) -> DiskQueueOptions {
    let fsync = match q.fsync {
        FsyncMode::Always => FsyncPolicy::Always,
        FsyncMode::Never => FsyncPolicy::Never,
        FsyncMode::Interval => {
            FsyncPolicy::Interval(c.positive("agent.queue.fsync_interval".into(), q.fsync_interval))
        }
    };
    let opts = DiskQueueOptions {
        max_disk_bytes: q.max_disk_bytes.0,
        fsync,
        max_sample_age: q
            .max_sample_age
            .map(|a| c.positive("agent.queue.max_sample_age".into(), a)),
        ..DiskQueueOptions::default()
    };
    if let Err(crate::queue::QueueError::InvalidOptions { field, message }) = opts.validate() {
        // Zero durations were reported above, under their own keys.
        if field == "max_disk_bytes" {
            c.fail(format!("agent.queue.{field}"), message);
        }
    }
    opts
}

// figment's Jail closures return figment's own (large) error type; that is its API, not ours.
#[cfg(test)]
#[allow(clippy::result_large_err)]
mod tests {
    use std::path::Path;

    use super::super::tests::{parse, GOOD};
    use super::*;

    #[test]
    fn disk_queue_keys_validate_and_default() {
        let s = parse(GOOD).unwrap();
        assert_eq!(s.agent.data_dir, None);
        assert_eq!(s.agent.disk_queue, DiskQueueOptions::default());

        let toml = format!(
            "{}\n[agent.queue]\nmax_disk_bytes = \"256MiB\"\nfsync = \"always\"\nmax_sample_age = \"2h\"\n",
            GOOD.replace("[agent]", "[agent]\n        data_dir = \"/var/lib/pushprobe\"")
        );
        let s = parse(&toml).unwrap();
        assert_eq!(
            s.agent.data_dir.as_deref(),
            Some(Path::new("/var/lib/pushprobe"))
        );
        assert_eq!(s.agent.disk_queue.max_disk_bytes, 256 << 20);
        assert_eq!(s.agent.disk_queue.fsync, FsyncPolicy::Always);
        assert_eq!(
            s.agent.disk_queue.max_sample_age,
            Some(Duration::from_secs(7200))
        );

        let toml = format!(
            "{GOOD}\n[agent.queue]\nmax_disk_bytes = 1048576\nfsync_interval = \"250ms\"\n"
        );
        let s = parse(&toml).unwrap();
        assert_eq!(s.agent.disk_queue.max_disk_bytes, 1 << 20);
        assert_eq!(
            s.agent.disk_queue.fsync,
            FsyncPolicy::Interval(Duration::from_millis(250))
        );
    }

    #[test]
    fn disk_queue_errors_name_the_key() {
        let e = parse(&format!(
            "{GOOD}\n[agent.queue]\nmax_disk_bytes = \"10KiB\"\n"
        ))
        .unwrap_err();
        assert!(e.starts_with("agent.queue.max_disk_bytes: "), "{e}");
        let e = parse(&format!("{GOOD}\n[agent.queue]\nfsync_interval = \"0s\"\n")).unwrap_err();
        assert_eq!(
            e,
            "agent.queue.fsync_interval: must be > 0 (in pushprobe.toml)"
        );
        let e = parse(&format!("{GOOD}\n[agent.queue]\nfsync = \"sometimes\"\n")).unwrap_err();
        assert!(
            e.contains("agent.queue.fsync") && e.contains("sometimes"),
            "{e}"
        );
        let e = parse(&format!(
            "{GOOD}\n[agent.queue]\nmax_disk_bytes = \"1.5GiB\"\n"
        ))
        .unwrap_err();
        assert!(
            e.contains("agent.queue.max_disk_bytes") && e.contains("unknown unit"),
            "{e}"
        );
    }

    #[test]
    fn listen_is_an_optional_socket_address() {
        assert_eq!(parse(GOOD).unwrap().agent.listen, None);
        let with = |v: &str| GOOD.replace("[agent]", &format!("[agent]\nlisten = {v:?}"));
        assert_eq!(
            parse(&with("0.0.0.0:9465")).unwrap().agent.listen,
            Some("0.0.0.0:9465".parse().unwrap())
        );
        let e = parse(&with("localhost:9465")).unwrap_err();
        assert!(
            e.starts_with("agent.listen: \"localhost:9465\" is not an IP:port"),
            "{e}"
        );
    }

    #[test]
    fn worker_threads_default_to_one_and_are_bounded() {
        assert_eq!(parse(GOOD).unwrap().agent.worker_threads, 1);
        let with = |v: &str| GOOD.replace("[agent]", &format!("[agent]\nworker_threads = {v}"));
        assert_eq!(parse(&with("4")).unwrap().agent.worker_threads, 4);
        // With a disk queue, a second thread keeps a slow sync from holding up every task.
        let disk = GOOD.replace("[agent]", "[agent]\ndata_dir = \"/var/lib/pushprobe\"");
        assert_eq!(parse(&disk).unwrap().agent.worker_threads, 2);
        let one = disk.replace("[agent]", "[agent]\nworker_threads = 1");
        assert_eq!(parse(&one).unwrap().agent.worker_threads, 1);
        for bad in ["0", "65", "-1", "70000"] {
            let e = parse(&with(bad)).unwrap_err();
            assert!(
                e.starts_with(&format!(
                    "agent.worker_threads: must be between 1 and 64, got {bad}"
                )),
                "{e}"
            );
        }
    }

    /// The labels of `s`'s first probe, as a map.
    fn probe_labels(s: &super::super::Settings) -> BTreeMap<String, String> {
        s.probes[0].labels().iter().cloned().collect()
    }

    #[test]
    fn own_series_carry_job_pushprobe_and_the_instance_unless_an_external_label_has_them() {
        let s = parse(&GOOD.replace("[agent]", "[agent]\ninstance = \"edge-7\"")).unwrap();
        assert_eq!(
            s.agent.self_labels(),
            [
                ("job".to_string(), "pushprobe".to_string()),
                ("instance".to_string(), "edge-7".to_string())
            ]
        );
        // Without `instance`, the host name (this test host has one).
        let s = parse(GOOD).unwrap();
        assert!(!s.agent.instance.is_empty());
        assert_eq!(
            s.agent.instance_is_fallback,
            s.agent.instance == "localhost"
        );
        // An external label of the same name wins, as it did before these labels existed.
        let s = parse(&GOOD.replace(
            "{ cluster = \"edge-1\" }",
            "{ cluster = \"edge-1\", instance = \"from-ext\" }",
        ))
        .unwrap();
        assert_eq!(
            s.agent.self_labels(),
            [("job".to_string(), "pushprobe".to_string())]
        );
        let e = parse(&GOOD.replace("[agent]", "[agent]\ninstance = \"\"")).unwrap_err();
        assert!(e.starts_with("agent.instance: must not be empty"), "{e}");
    }

    #[test]
    fn instance_is_the_configured_name_then_the_host_name_then_a_fallback() {
        let never = || -> Option<String> { panic!("not looked up when configured") };
        assert_eq!(resolve_instance(Some("a"), never), ("a".to_string(), false));
        assert_eq!(
            resolve_instance(None, || Some("host-1".into())),
            ("host-1".to_string(), false)
        );
        assert_eq!(
            resolve_instance(None, || None),
            (FALLBACK_INSTANCE.to_string(), true)
        );
    }

    #[test]
    fn probe_series_get_the_agent_job_or_their_own() {
        let s = parse(GOOD).unwrap();
        assert_eq!(
            probe_labels(&s).get("job").map(String::as_str),
            Some("pushprobe")
        );
        let s = parse(&GOOD.replace("[agent]", "[agent]\njob = \"edge-probes\"")).unwrap();
        assert_eq!(probe_labels(&s)["job"], "edge-probes");
        let own = GOOD.replace("timeout = \"5s\"", "timeout = \"5s\"\njob = \"payments\"");
        let s = parse(&own.replace("[agent]", "[agent]\njob = \"edge-probes\"")).unwrap();
        assert_eq!(probe_labels(&s)["job"], "payments");
        // A `job` in `labels` still works, as before the key existed ...
        let in_labels = GOOD.replace(
            "timeout = \"5s\"",
            "timeout = \"5s\"\nlabels = { job = \"old\" }",
        );
        assert_eq!(probe_labels(&parse(&in_labels).unwrap())["job"], "old");
        // ... but not together with the key.
        let both = in_labels.replace("timeout = \"5s\"", "timeout = \"5s\"\njob = \"new\"");
        let e = parse(&both).unwrap_err();
        assert!(
            e.starts_with("probe[0].labels.job: probe[0].job sets the job already"),
            "{e}"
        );
        let e = parse(&own.replace("\"payments\"", "\"\"")).unwrap_err();
        assert!(e.starts_with("probe[0].job: must not be empty"), "{e}");
        // An external `job` applies to probes that set none themselves.
        let ext = GOOD.replace("{ cluster", "{ job = \"ext\", cluster");
        assert_eq!(probe_labels(&parse(&ext).unwrap()).get("job"), None);
        assert_eq!(
            probe_labels(
                &parse(&ext.replace("timeout = \"5s\"", "timeout = \"5s\"\njob = \"own\""))
                    .unwrap()
            )["job"],
            "own"
        );
    }

    #[test]
    fn a_probe_another_agent_would_write_identically_is_warned_about() {
        let no_ext = GOOD.replace(
            "external_labels = { cluster = \"edge-1\" }",
            "instance = \"h\"",
        );
        let w = parse(&no_ext).unwrap().identity_warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with(
                "agent.external_labels: no label tells this agent's probe series from those of \
                 another agent probing the same targets (probes: api)"
            ) && w[0].contains("[agent.external_labels] region = \"…\""),
            "{w:?}"
        );
        // Neither a job (the default or the probe's own) nor an external job or instance
        // tells two agents apart.
        let same = no_ext.replace(
            "instance = \"h\"",
            "external_labels = { job = \"j\", instance = \"i\" }",
        );
        let w = parse(&same).unwrap().identity_warnings();
        assert!(
            w.iter()
                .any(|w| w.starts_with("agent.external_labels: no label tells")),
            "{w:?}"
        );
        // An external label does, and so does a label on the probe.
        assert!(parse(&GOOD.replace("[agent]", "[agent]\ninstance = \"h\""))
            .unwrap()
            .identity_warnings()
            .is_empty());
        let labelled = no_ext.replace(
            "timeout = \"5s\"",
            "timeout = \"5s\"\nlabels = { site = \"fra1\" }",
        );
        assert!(parse(&labelled).unwrap().identity_warnings().is_empty());
    }

    #[test]
    fn an_agent_key_an_external_label_overrides_is_warned_about() {
        let toml = GOOD.replace(
            "external_labels = { cluster = \"edge-1\" }",
            "instance = \"a\"\njob = \"b\"\nexternal_labels = { cluster = \"edge-1\", instance = \"x\", job = \"y\" }",
        );
        let w = parse(&toml).unwrap().identity_warnings();
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].starts_with("agent.instance is overridden by agent.external_labels.instance"),
            "{w:?}"
        );
        assert!(
            w[1].starts_with("agent.job is overridden by agent.external_labels.job"),
            "{w:?}"
        );
    }

    #[test]
    fn mimir_replica_is_the_one_reserved_external_label_name() {
        let with = |labels: &str| {
            GOOD.replace(
                "external_labels = { cluster = \"edge-1\" }",
                &format!("external_labels = {labels}"),
            )
        };
        let s = parse(&with("{ cluster = \"c\", __replica__ = \"a\" }")).unwrap();
        assert_eq!(s.agent.external_labels.get("__replica__"), Some("a"));
        assert_eq!(s.agent.external_labels.get("cluster"), Some("c"));
        let e = parse(&with("{ __name__ = \"x\" }")).unwrap_err();
        assert!(e.starts_with("agent.external_labels.__name__: "), "{e}");
        let e = parse(&with("{ __replica__ = \"\" }")).unwrap_err();
        assert!(
            e.starts_with("agent.external_labels.__replica__: label value must not be empty"),
            "{e}"
        );
    }
}
