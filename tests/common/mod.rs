//! Shared harness for the integration tests: real receivers (Prometheus, VictoriaMetrics,
//! Pushgateway) started from the Debian packages on free loopback ports, a scriptable local HTTP
//! target, and helpers that run the `pushprobe` binary.
//!
//! Every server binds 127.0.0.1, keeps its state in its own temporary directory and is killed
//! when its handle is dropped, also when a test panics; on a panic the last lines of each
//! process's output are printed so a failure can be diagnosed from the test log alone.

// Each test binary includes this module and uses only part of it.
#![allow(dead_code)]

pub mod litellm;
pub mod oauth2;
pub mod openai;
pub mod passthrough;
pub mod request;
pub mod rw2_receiver;
pub mod rw_receiver;
pub mod target;
pub mod tinyproxy;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tempfile::TempDir;

// Re-exported so tests need only `use common::*`; not every test binary uses both.
#[allow(unused_imports)]
pub use target::{Reply, TargetServer};

/// How long a server gets to become ready; generous because the machine is shared and small.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Default deadline for polling a receiver until data arrives.
pub const DATA_TIMEOUT: Duration = Duration::from_secs(60);

/// Debian package that ships each binary the tests use, for the message when one is missing.
fn debian_package(binary: &str) -> &'static str {
    match binary {
        "prometheus" | "promtool" => "prometheus",
        "victoria-metrics" | "vmagent" => "victoria-metrics",
        "prometheus-pushgateway" => "prometheus-pushgateway",
        "prometheus-blackbox-exporter" => "prometheus-blackbox-exporter",
        "prometheus-node-exporter" => "prometheus-node-exporter",
        "amtool" => "prometheus-alertmanager",
        "systemd-analyze" => "systemd",
        "tinyproxy" => "tinyproxy",
        "dnsmasq" => "dnsmasq",
        _ => "(unknown package)",
    }
}

/// Finds an external binary on `PATH` (or in `/usr/bin`, `/usr/sbin`).
///
/// When it is missing: under CI (env `CI` set) this panics naming the Debian package to
/// install, because a CI run that silently skips the real-receiver tests proves nothing;
/// elsewhere it prints a skip notice and returns `None`, and the test should return early.
pub fn require_binary(name: &str) -> Option<PathBuf> {
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let found = path_dirs
        .into_iter()
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate));
    if found.is_some() {
        return found;
    }
    let package = debian_package(name);
    if std::env::var_os("CI").is_some() {
        panic!(
            "{name} is required by this test but is not installed: \
             apt-get install -y --no-install-recommends {package}"
        );
    }
    eprintln!(
        "SKIPPED: {name} not found on PATH; install the Debian package `{package}` to run this test"
    );
    None
}

/// The directory `scripts/install-tools.sh` installs into: `$PUSHPROBE_TOOLS`, else
/// `~/.cache/pushprobe/tools`.
pub fn tools_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PUSHPROBE_TOOLS") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/pushprobe/tools")
}

/// Finds a tool that `scripts/install-tools.sh` installs beside the system's packages: a
/// current peer by versioned name (`prometheus-3.5.3`, `victoria-metrics-1.145.0`,
/// `vmagent-1.145.0`, `prometheus-blackbox-exporter-0.28.0`), `oauth2-mock-server`, or
/// `python-tools` (the tools virtualenv's Python: botocore, grpcio-health-checking), `litellm`
/// or `fakeai`.
///
/// Missing under CI is a panic naming the script; elsewhere a skip notice and `None`, as
/// [`require_binary`] does.
pub fn require_tool(name: &str) -> Option<PathBuf> {
    let candidate = tools_dir().join("bin").join(name);
    if is_executable(&candidate) {
        return Some(candidate);
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "{name} is required by this test but is not installed in {}: run scripts/install-tools.sh",
            tools_dir().display()
        );
    }
    eprintln!(
        "SKIPPED: {name} not found in {}; run scripts/install-tools.sh",
        tools_dir().display()
    );
    None
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Returns a TCP port on 127.0.0.1 that was free a moment ago.
///
/// Another process can take it before the caller binds it; the server starters below retry
/// with a new port when a server exits during start-up for that reason.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port on 127.0.0.1")
}

/// Milliseconds since the Unix epoch, the unit of Prometheus timestamps.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// A child process that is killed (SIGKILL) and reaped when dropped.
///
/// Its stdout and stderr go to files, so a chatty server can never block on a full pipe; when
/// the guard is dropped during a panic, the tail of both files is printed.
pub struct ChildGuard {
    child: Option<Child>,
    name: String,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
}

impl ChildGuard {
    /// Spawns `cmd` with stdout/stderr redirected to `<log_dir>/<name>.stdout|.stderr`.
    pub fn spawn(name: &str, mut cmd: Command, log_dir: &Path) -> std::io::Result<ChildGuard> {
        let stdout_path = log_dir.join(format!("{name}.stdout"));
        let stderr_path = log_dir.join(format!("{name}.stderr"));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(File::create(&stdout_path)?)
            .stderr(File::create(&stderr_path)?)
            .spawn()?;
        Ok(ChildGuard {
            child: Some(child),
            name: name.to_string(),
            stdout_path,
            stderr_path,
        })
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.as_ref().expect("child present").id()
    }

    /// Returns the exit status if the process has exited, without waiting.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().expect("query child status"))
    }

    /// Sends a signal by name (`TERM`, `INT`, `KILL`) with `/bin/kill`.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {} failed", self.id());
    }

    /// Kills the process (SIGKILL) and reaps it now; later calls do nothing.
    pub fn kill_now(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Polls until the process exits or `timeout` passes; `None` on timeout.
    pub async fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Everything the process wrote to stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    /// Everything the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Prints the last lines of the process's output to stderr (shown by the test runner).
    pub fn dump_logs(&self) {
        for (stream, path) in [("stdout", &self.stdout_path), ("stderr", &self.stderr_path)] {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!(
                "----- {} {stream} (last {} lines) -----",
                self.name,
                tail.len()
            );
            for line in tail {
                eprintln!("{line}");
            }
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A client for talking to the local servers (plain HTTP on loopback, so TLS is unused).
pub fn http_client() -> reqwest::Client {
    static PROVIDER: Once = Once::new();
    // reqwest is built without a default rustls provider; install one so `build` works.
    PROVIDER.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .no_proxy()
        .build()
        .expect("build HTTP client")
}

/// GETs `url` and returns the body, or an error text (status included) for polling loops.
pub async fn http_get_text(client: &reqwest::Client, url: &str) -> Result<String, String> {
    let resp = client.get(url).send().await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp.text().await.map_err(|e| e.to_string())?;
    if status.is_success() {
        Ok(body)
    } else {
        Err(format!("{url}: HTTP {status}: {body}"))
    }
}

/// Polls `url` until it answers 2xx, or panics after `timeout` (or if the process exits).
async fn wait_ready(client: &reqwest::Client, url: &str, guard: &mut ChildGuard) -> bool {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        if http_get_text(client, url).await.is_ok() {
            return true;
        }
        if guard.try_wait().is_some() {
            // Exited during start-up: most likely the port was taken in the meantime.
            return false;
        }
        if Instant::now() >= deadline {
            guard.dump_logs();
            panic!("{url} not ready after {STARTUP_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts a server on a fresh port, retrying a few times when it exits during start-up.
///
/// `make` gets the port and the temporary directory and returns the command to run.
async fn start_server(
    name: &str,
    ready_path: &str,
    make: impl Fn(u16, &Path) -> Command,
) -> (ChildGuard, u16, TempDir) {
    let client = http_client();
    for attempt in 1..=3 {
        let dir = tempfile::Builder::new()
            .prefix(&format!("pushprobe-{name}-"))
            .tempdir()
            .expect("create temp dir");
        let port = free_port();
        let cmd = make(port, dir.path());
        let mut guard = ChildGuard::spawn(name, cmd, dir.path())
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let url = format!("http://127.0.0.1:{port}{ready_path}");
        if wait_ready(&client, &url, &mut guard).await {
            return (guard, port, dir);
        }
        eprintln!("{name} exited during start-up (attempt {attempt}); retrying on another port");
        guard.dump_logs();
    }
    panic!("{name} did not start after 3 attempts");
}

/// One element of an instant-query vector: a series' labels and its latest value.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryResult {
    /// All labels, `__name__` included when the query returns it.
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
    /// The sample's timestamp in milliseconds (for an instant query: the evaluation time).
    pub timestamp_ms: i64,
}

/// A series with several samples, from a range query, a range selector or an export.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeSeries {
    /// All labels, `__name__` included when present.
    pub labels: BTreeMap<String, String>,
    /// `(timestamp_ms, value)` pairs in time order.
    pub samples: Vec<(i64, f64)>,
}

fn parse_labels(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// Parses a `[<unix seconds float>, "<value>"]` pair as the query API returns it.
fn parse_point(p: &Value) -> (i64, f64) {
    let ts = p[0].as_f64().expect("timestamp is a number");
    let value = p[1]
        .as_str()
        .expect("value is a string")
        .parse::<f64>()
        .expect("value parses as f64");
    ((ts * 1000.0).round() as i64, value)
}

/// Reads a Prometheus-API JSON response's `data`, panicking with the body on an error status.
fn api_data(body: &str) -> Value {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("bad JSON {e}: {body}"));
    assert_eq!(v["status"], "success", "query failed: {body}");
    v["data"].clone()
}

fn parse_vector(data: &Value) -> Vec<QueryResult> {
    assert_eq!(data["resultType"], "vector", "expected a vector: {data}");
    data["result"]
        .as_array()
        .expect("result array")
        .iter()
        .map(|r| {
            let (timestamp_ms, value) = parse_point(&r["value"]);
            QueryResult {
                labels: parse_labels(&r["metric"]),
                value,
                timestamp_ms,
            }
        })
        .collect()
}

fn parse_matrix(data: &Value) -> Vec<RangeSeries> {
    assert_eq!(data["resultType"], "matrix", "expected a matrix: {data}");
    data["result"]
        .as_array()
        .expect("result array")
        .iter()
        .map(|r| RangeSeries {
            labels: parse_labels(&r["metric"]),
            samples: r["values"]
                .as_array()
                .expect("values array")
                .iter()
                .map(parse_point)
                .collect(),
        })
        .collect()
}

/// What Prometheus and VictoriaMetrics have in common: the Prometheus HTTP query API.
///
/// The provided methods build on [`QueryApi::base_url`] and [`QueryApi::before_query`].
#[allow(async_fn_in_trait)]
pub trait QueryApi {
    /// `http://127.0.0.1:PORT` of the server.
    fn base_url(&self) -> String;

    /// Runs before every query; VictoriaMetrics flushes its in-memory buffers here so that
    /// just-written samples are visible.
    async fn before_query(&self) {}

    /// The remote-write endpoint to configure in pushprobe.
    fn write_url(&self) -> String {
        format!("{}/api/v1/write", self.base_url())
    }

    /// Evaluates an instant query at the current time.
    async fn query(&self, promql: &str) -> Vec<QueryResult> {
        self.try_query(promql)
            .await
            .unwrap_or_else(|e| panic!("query {promql}: {e}"))
    }

    /// Like [`QueryApi::query`], but returns transport and HTTP errors instead of panicking.
    async fn try_query(&self, promql: &str) -> Result<Vec<QueryResult>, String> {
        self.before_query().await;
        let url = reqwest::Url::parse_with_params(
            &format!("{}/api/v1/query", self.base_url()),
            &[("query", promql)],
        )
        .expect("query URL");
        let body = http_get_text(&http_client(), url.as_str()).await?;
        Ok(parse_vector(&api_data(&body)))
    }

    /// Evaluates a range query over `[start_ms, end_ms]` with `step`.
    async fn query_range(
        &self,
        promql: &str,
        start_ms: i64,
        end_ms: i64,
        step: Duration,
    ) -> Vec<RangeSeries> {
        self.before_query().await;
        let url = reqwest::Url::parse_with_params(
            &format!("{}/api/v1/query_range", self.base_url()),
            &[
                ("query", promql.to_string()),
                ("start", format!("{:.3}", start_ms as f64 / 1000.0)),
                ("end", format!("{:.3}", end_ms as f64 / 1000.0)),
                ("step", format!("{:.3}", step.as_secs_f64())),
            ],
        )
        .expect("query_range URL");
        let body = http_get_text(&http_client(), url.as_str())
            .await
            .unwrap_or_else(|e| panic!("query_range {promql}: {e}"));
        parse_matrix(&api_data(&body))
    }

    /// Returns the raw stored samples of `selector` over the last `window` (for example
    /// `probe_success{probe="local"}` and `10m`), with their own timestamps.
    ///
    /// An instant query reports the evaluation time, not when a sample was measured; a range
    /// selector returns the samples as written, which is what timestamp checks need.
    async fn raw_samples(&self, selector: &str, window: &str) -> Vec<RangeSeries> {
        self.before_query().await;
        let promql = format!("{selector}[{window}]");
        let url = reqwest::Url::parse_with_params(
            &format!("{}/api/v1/query", self.base_url()),
            &[("query", promql.as_str())],
        )
        .expect("query URL");
        let body = http_get_text(&http_client(), url.as_str())
            .await
            .unwrap_or_else(|e| panic!("query {promql}: {e}"));
        parse_matrix(&api_data(&body))
    }

    /// Polls the instant query `promql` until `pred` accepts the result, returning it; panics
    /// with the last result after `timeout`.
    async fn wait_for(
        &self,
        promql: &str,
        pred: impl Fn(&[QueryResult]) -> bool,
        timeout: Duration,
    ) -> Vec<QueryResult> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = self.try_query(promql).await;
            if let Ok(result) = &last {
                if pred(result) {
                    return result.clone();
                }
            }
            if Instant::now() >= deadline {
                panic!("{promql}: condition not met after {timeout:?}; last answer: {last:?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Polls until `promql` returns at least one series, and returns the result.
    async fn wait_for_any(&self, promql: &str) -> Vec<QueryResult> {
        self.wait_for(promql, |r| !r.is_empty(), DATA_TIMEOUT).await
    }
}

/// A Prometheus server with its remote-write receiver enabled, in a temporary directory.
pub struct Prometheus {
    guard: ChildGuard,
    port: u16,
    /// The command line, to start it again on the same port and storage.
    command: PromCommand,
    restarts: u32,
    // Declared last so it is removed after the process is killed.
    dir: TempDir,
}

/// What is needed to start the same Prometheus again.
#[derive(Clone)]
struct PromCommand {
    bin: PathBuf,
    config_yaml: String,
    agent_mode: bool,
    extra: Vec<String>,
}

impl PromCommand {
    fn build(&self, port: u16, dir: &Path) -> Command {
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, &self.config_yaml).expect("write prometheus.yml");
        let mut cmd = Command::new(&self.bin);
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"));
        // Agent mode uses a WAL directory instead of a TSDB and refuses the TSDB flag.
        if self.agent_mode {
            cmd.arg(format!(
                "--storage.agent.path={}",
                dir.join("wal").display()
            ));
        } else {
            cmd.arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ));
        }
        cmd.args(&self.extra);
        cmd
    }
}

/// A configuration with no scrape jobs: the server only receives remote writes.
pub const PROMETHEUS_MINIMAL_CONFIG: &str = "global:\n  scrape_interval: 15s\n";

impl Prometheus {
    /// Starts `prometheus` as a remote-write receiver; `None` (test skipped) if it is not
    /// installed outside CI.
    pub async fn start() -> Option<Prometheus> {
        Prometheus::start_with(
            PROMETHEUS_MINIMAL_CONFIG,
            &["--web.enable-remote-write-receiver"],
        )
        .await
    }

    /// Starts `prometheus` with the given YAML configuration and extra flags (for example
    /// `--enable-feature=agent` for agent mode, which has no local storage or query API).
    ///
    /// Storage and the listen address are set here; readiness is `/-/ready`.
    pub async fn start_with(config_yaml: &str, extra_args: &[&str]) -> Option<Prometheus> {
        Prometheus::start_bin_with(require_binary("prometheus")?, config_yaml, extra_args).await
    }

    /// Like [`Prometheus::start_with`], with another Prometheus binary (for example the
    /// current peer from [`require_tool`]).
    pub async fn start_bin_with(
        bin: PathBuf,
        config_yaml: &str,
        extra_args: &[&str],
    ) -> Option<Prometheus> {
        Some(Prometheus::start_bin(bin, config_yaml, extra_args).await)
    }

    /// Starts the Prometheus binary at `bin` (for example a current peer found with
    /// [`require_tool`]) with the given YAML configuration and extra flags, as
    /// [`Prometheus::start_with`] does.
    pub async fn start_bin(bin: PathBuf, config_yaml: &str, extra_args: &[&str]) -> Prometheus {
        let command = PromCommand {
            bin,
            config_yaml: config_yaml.to_string(),
            agent_mode: extra_args.iter().any(|a| a.contains("agent")),
            extra: extra_args.iter().map(|s| s.to_string()).collect(),
        };
        let build = command.clone();
        let (guard, port, dir) = start_server("prometheus", "/-/ready", move |port, dir| {
            build.build(port, dir)
        })
        .await;
        Prometheus {
            guard,
            port,
            command,
            restarts: 0,
            dir,
        }
    }

    /// Kills the server with SIGKILL, as a crash or an OOM kill would; its port and storage
    /// are kept for [`Prometheus::restart`]. Writes to it fail until then.
    pub fn kill(&mut self) {
        self.guard.kill_now();
    }

    /// Starts the server again on the same port with the same storage (it replays its WAL)
    /// and waits until it is ready.
    pub async fn restart(&mut self) {
        self.guard.kill_now();
        self.restarts += 1;
        let name = format!("prometheus-restart-{}", self.restarts);
        let cmd = self.command.build(self.port, self.dir.path());
        self.guard = ChildGuard::spawn(&name, cmd, self.dir.path())
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let url = format!("{}/-/ready", self.base_url());
        if !wait_ready(&http_client(), &url, &mut self.guard).await {
            self.guard.dump_logs();
            panic!("prometheus did not restart on port {}", self.port);
        }
    }

    /// The listen port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server process, e.g. to read its logs.
    pub fn process(&self) -> &ChildGuard {
        &self.guard
    }

    /// The temporary directory holding its configuration and data.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl QueryApi for Prometheus {
    fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// A single-node VictoriaMetrics, in a temporary directory.
pub struct VictoriaMetrics {
    guard: ChildGuard,
    port: u16,
    dir: TempDir,
}

impl VictoriaMetrics {
    /// Starts `victoria-metrics`; `None` (test skipped) if it is not installed outside CI.
    ///
    /// `-search.latencyOffset=0s` lets queries at "now" see samples written a moment ago (the
    /// default hides the last 30 s), and the response cache is disabled so polling sees new
    /// data.
    pub async fn start() -> Option<VictoriaMetrics> {
        Self::start_with(&[]).await
    }

    /// Like [`VictoriaMetrics::start`], with extra command-line flags (e.g.
    /// `-dedup.minScrapeInterval=2s`).
    pub async fn start_with(extra_args: &[&str]) -> Option<VictoriaMetrics> {
        Some(Self::start_bin_with(require_binary("victoria-metrics")?, extra_args).await)
    }

    /// Starts the VictoriaMetrics binary at `bin` (a current peer from [`require_tool`], say)
    /// with the flags of [`VictoriaMetrics::start`].
    pub async fn start_bin(bin: PathBuf) -> VictoriaMetrics {
        Self::start_bin_with(bin, &[]).await
    }

    /// [`VictoriaMetrics::start_bin`] with extra command-line flags.
    pub async fn start_bin_with(bin: PathBuf, extra_args: &[&str]) -> VictoriaMetrics {
        let extra: Vec<String> = extra_args.iter().map(|a| a.to_string()).collect();
        let (guard, port, dir) = start_server("victoria-metrics", "/health", move |port, dir| {
            let mut cmd = Command::new(&bin);
            cmd.arg(format!("-storageDataPath={}", dir.join("data").display()))
                .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
                .arg("-retentionPeriod=1")
                .arg("-search.latencyOffset=0s")
                .arg("-search.disableCache")
                .arg("-loggerLevel=WARN")
                .args(&extra);
            cmd
        })
        .await;
        VictoriaMetrics { guard, port, dir }
    }

    /// The listen port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server process.
    pub fn process(&self) -> &ChildGuard {
        &self.guard
    }

    /// Makes recently ingested samples searchable at once (`/internal/force_flush`).
    pub async fn force_flush(&self) {
        let url = format!("{}/internal/force_flush", self.base_url());
        let _ = http_get_text(&http_client(), &url).await;
    }

    /// Raw samples of the series matching `selector`, via `/api/v1/export` (JSON lines), with
    /// their stored timestamps.
    pub async fn export(&self, selector: &str) -> Vec<RangeSeries> {
        self.force_flush().await;
        let url = reqwest::Url::parse_with_params(
            &format!("{}/api/v1/export", self.base_url()),
            &[("match[]", selector)],
        )
        .expect("export URL");
        let body = http_get_text(&http_client(), url.as_str())
            .await
            .unwrap_or_else(|e| panic!("export {selector}: {e}"));
        let mut out: Vec<RangeSeries> = body
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| {
                let v: Value = serde_json::from_str(line).expect("export line is JSON");
                let values = v["values"].as_array().expect("values");
                let stamps = v["timestamps"].as_array().expect("timestamps");
                let mut samples: Vec<(i64, f64)> = stamps
                    .iter()
                    .zip(values)
                    .map(|(t, v)| (t.as_i64().expect("ms"), v.as_f64().unwrap_or(f64::NAN)))
                    .collect();
                samples.sort_by_key(|s| s.0);
                RangeSeries {
                    labels: parse_labels(&v["metric"]),
                    samples,
                }
            })
            .collect();
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        out
    }
}

impl QueryApi for VictoriaMetrics {
    fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn before_query(&self) {
        self.force_flush().await;
    }
}

/// A Prometheus Pushgateway with a persistence file in a temporary directory.
pub struct Pushgateway {
    guard: ChildGuard,
    port: u16,
    dir: TempDir,
}

/// One metric family in one push group, as the Pushgateway's `/api/v1/metrics` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct PushedMetric {
    /// The grouping labels of the push (`job`, `instance`, …).
    pub group: BTreeMap<String, String>,
    /// The metric's own labels.
    pub labels: BTreeMap<String, String>,
    /// The value (for a gauge or counter; histograms and summaries are left out).
    pub value: f64,
}

impl Pushgateway {
    /// Starts `prometheus-pushgateway`; `None` (test skipped) if it is not installed outside
    /// CI.
    pub async fn start() -> Option<Pushgateway> {
        let bin = require_binary("prometheus-pushgateway")?;
        let (guard, port, dir) = start_server("pushgateway", "/-/ready", move |port, dir| {
            let mut cmd = Command::new(&bin);
            cmd.arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg(format!(
                    "--persistence.file={}",
                    dir.join("pushgateway.state").display()
                ));
            cmd
        })
        .await;
        Some(Pushgateway { guard, port, dir })
    }

    /// `http://127.0.0.1:PORT`, the URL to configure in pushprobe.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The server process.
    pub fn process(&self) -> &ChildGuard {
        &self.guard
    }

    /// The raw JSON of `/api/v1/metrics`.
    pub async fn metrics_json(&self) -> Value {
        let body = http_get_text(
            &http_client(),
            &format!("{}/api/v1/metrics", self.base_url()),
        )
        .await
        .unwrap_or_else(|e| panic!("pushgateway metrics: {e}"));
        api_data(&body)
    }

    /// All pushed samples of metric `name` (gauges, counters and untyped metrics).
    pub async fn metric(&self, name: &str) -> Vec<PushedMetric> {
        let data = self.metrics_json().await;
        let mut out = Vec::new();
        for group in data.as_array().into_iter().flatten() {
            let group_labels = parse_labels(&group["labels"]);
            for m in group[name]["metrics"].as_array().into_iter().flatten() {
                if let Some(value) = m["value"].as_str().and_then(|v| v.parse().ok()) {
                    out.push(PushedMetric {
                        group: group_labels.clone(),
                        labels: parse_labels(&m["labels"]),
                        value,
                    });
                }
            }
        }
        out
    }
}

/// A `prometheus-node-exporter` with a fixed, stable set of collectors: the textfile
/// collector (reading `textfile.prom`, written before start) and `uname`, without the
/// exporter's own Go/process metrics. Two scrapers a few milliseconds apart then see the same
/// values, except the per-collector scrape durations.
pub struct NodeExporter {
    guard: ChildGuard,
    port: u16,
    dir: TempDir,
}

impl NodeExporter {
    /// Starts the exporter serving `textfile` (text format) through its textfile collector;
    /// `None` (test skipped) if it is not installed outside CI.
    pub async fn start(textfile: &str) -> Option<NodeExporter> {
        let bin = require_binary("prometheus-node-exporter")?;
        let textfile = textfile.to_string();
        let (guard, port, dir) = start_server("node-exporter", "/metrics", move |port, dir| {
            let textfile_dir = dir.join("textfile");
            std::fs::create_dir_all(&textfile_dir).expect("create textfile dir");
            std::fs::write(textfile_dir.join("textfile.prom"), &textfile).expect("write textfile");
            let mut cmd = Command::new(&bin);
            cmd.arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--collector.disable-defaults")
                .arg("--collector.textfile")
                .arg(format!(
                    "--collector.textfile.directory={}",
                    textfile_dir.display()
                ))
                .arg("--collector.uname")
                .arg("--web.disable-exporter-metrics");
            cmd
        })
        .await;
        Some(NodeExporter { guard, port, dir })
    }

    /// `127.0.0.1:PORT`, as a scrape target.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The exporter process.
    pub fn process(&self) -> &ChildGuard {
        &self.guard
    }

    /// The temporary directory (its textfile directory is `textfile/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Path of the `pushprobe` binary built for these tests.
pub fn pushprobe_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pushprobe"))
}

/// A pushprobe configuration written to its own temporary directory, from which the binary is
/// run; the directory also receives the process's output files.
pub struct Pushprobe {
    dir: TempDir,
    config: PathBuf,
    env: Vec<(String, String)>,
}

/// The outcome of a pushprobe command that ran to completion.
#[derive(Debug)]
pub struct Finished {
    /// Exit status.
    pub status: ExitStatus,
    /// Everything written to stdout.
    pub stdout: String,
    /// Everything written to stderr.
    pub stderr: String,
    /// Wall-clock time just before the process was started.
    pub started_ms: i64,
    /// Wall-clock time just after it exited.
    pub finished_ms: i64,
}

impl Finished {
    /// The exit code (`None` if killed by a signal).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Panics, showing the output, unless the exit code is `expected`.
    pub fn assert_code(&self, expected: i32) {
        assert_eq!(
            self.code(),
            Some(expected),
            "expected exit code {expected}, got {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
    }
}

impl Pushprobe {
    /// Writes `config_toml` to `pushprobe.toml` in a new temporary directory.
    pub fn with_config(config_toml: &str) -> Pushprobe {
        let dir = tempfile::Builder::new()
            .prefix("pushprobe-agent-")
            .tempdir()
            .expect("create temp dir");
        let config = dir.path().join("pushprobe.toml");
        let mut f = File::create(&config).expect("create config");
        f.write_all(config_toml.as_bytes()).expect("write config");
        Pushprobe {
            dir,
            config,
            env: Vec::new(),
        }
    }

    /// Sets an environment variable for every command run from here (e.g. a
    /// `PUSHPROBE_AGENT__EXTERNAL_LABELS__CLUSTER` override).
    pub fn env(mut self, key: &str, value: &str) -> Pushprobe {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// The configuration file's path.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The temporary directory (configuration and output files).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(pushprobe_bin());
        cmd.args(args).current_dir(self.dir.path());
        // Keep the user's or CI's own PUSHPROBE_* settings out of the tests.
        for (key, _) in std::env::vars() {
            if key.starts_with("PUSHPROBE_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("RUST_BACKTRACE", "1");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs `pushprobe <args>` (the config path is not added) to completion, giving up and
    /// killing it after `timeout`.
    pub async fn run_to_end(&self, name: &str, args: &[&str], timeout: Duration) -> Finished {
        let started_ms = now_ms();
        let mut guard =
            ChildGuard::spawn(name, self.command(args), self.dir.path()).expect("spawn pushprobe");
        let status = match guard.wait_timeout(timeout).await {
            Some(status) => status,
            None => {
                guard.dump_logs();
                panic!("pushprobe {args:?} still running after {timeout:?}");
            }
        };
        Finished {
            status,
            stdout: guard.stdout(),
            stderr: guard.stderr(),
            started_ms,
            finished_ms: now_ms(),
        }
    }

    /// Runs `pushprobe once --config FILE` to completion (at most 120 s).
    pub async fn once(&self) -> Finished {
        let config = self.config.to_string_lossy().into_owned();
        self.run_to_end(
            "once",
            &["once", "--config", &config],
            Duration::from_secs(120),
        )
        .await
    }

    /// Runs `pushprobe config check --config FILE` to completion.
    pub async fn config_check(&self) -> Finished {
        let config = self.config.to_string_lossy().into_owned();
        self.run_to_end(
            "config-check",
            &["config", "check", "--config", &config],
            Duration::from_secs(60),
        )
        .await
    }

    /// Starts `pushprobe run --config FILE [extra args]` in the background.
    pub fn spawn_run(&self, extra_args: &[&str]) -> RunningAgent {
        self.spawn_run_as("run", extra_args)
    }

    /// Like [`Pushprobe::spawn_run`], with its output in `NAME.stdout`/`NAME.stderr`, so a
    /// second agent on the same configuration keeps the first one's logs.
    pub fn spawn_run_as(&self, name: &str, extra_args: &[&str]) -> RunningAgent {
        let config = self.config.to_string_lossy().into_owned();
        let mut args = vec!["run", "--config", config.as_str()];
        args.extend_from_slice(extra_args);
        let started_ms = now_ms();
        let guard = ChildGuard::spawn(name, self.command(&args), self.dir.path())
            .expect("spawn pushprobe run");
        RunningAgent { guard, started_ms }
    }

    /// Replaces the configuration file (for the next command run).
    pub fn rewrite_config(&self, config_toml: &str) {
        std::fs::write(&self.config, config_toml).expect("rewrite config");
    }
}

/// A `pushprobe run` in the background; killed when dropped.
pub struct RunningAgent {
    guard: ChildGuard,
    /// Wall-clock time just before the process was started.
    pub started_ms: i64,
}

impl RunningAgent {
    /// The process id (for `/proc` readings).
    pub fn id(&self) -> u32 {
        self.guard.id()
    }

    /// Panics with its output if the agent has already exited (it should run until stopped).
    pub fn assert_running(&mut self) {
        if let Some(status) = self.guard.try_wait() {
            panic!(
                "pushprobe run exited early with {status}\n--- stderr ---\n{}",
                self.guard.stderr()
            );
        }
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit, returning what it printed.
    pub async fn terminate(mut self, timeout: Duration) -> Finished {
        self.guard.signal("TERM");
        let status = match self.guard.wait_timeout(timeout).await {
            Some(status) => status,
            None => {
                self.guard.dump_logs();
                panic!("pushprobe run did not exit within {timeout:?} of SIGTERM");
            }
        };
        Finished {
            status,
            stdout: self.guard.stdout(),
            stderr: self.guard.stderr(),
            started_ms: self.started_ms,
            finished_ms: now_ms(),
        }
    }

    /// Everything written to stderr so far (logs).
    pub fn stderr(&self) -> String {
        self.guard.stderr()
    }

    /// Sends `signal` (e.g. `HUP`) to the agent.
    pub fn signal(&self, signal: &str) {
        self.guard.signal(signal);
    }

    /// Kills the agent with SIGKILL (no shutdown, no flush: as the OOM killer does) and
    /// returns what it had logged.
    pub fn kill(mut self) -> String {
        self.guard.kill_now();
        self.guard.stderr()
    }

    /// Polls until the agent exits by itself (at most `timeout`), returning what it printed.
    pub async fn wait_exit(mut self, timeout: Duration) -> Finished {
        let status = match self.guard.wait_timeout(timeout).await {
            Some(status) => status,
            None => {
                self.guard.dump_logs();
                panic!("pushprobe run still running after {timeout:?}");
            }
        };
        Finished {
            status,
            stdout: self.guard.stdout(),
            stderr: self.guard.stderr(),
            started_ms: self.started_ms,
            finished_ms: now_ms(),
        }
    }
}

/// Formats a TOML inline table of labels, e.g. `{ cluster = "edge-1" }`.
pub fn toml_labels(labels: &[(&str, &str)]) -> String {
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k} = {}", toml_string(v)))
        .collect();
    format!("{{ {} }}", inner.join(", "))
}

/// Quotes a string as a TOML basic string.
pub fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A configuration with one receiver and HTTP probes `(name, url)`, all on `interval`, with
/// external label `cluster = "edge-1"` and a 1 s batch deadline so data arrives promptly.
pub fn basic_config(write_url: &str, probes: &[(&str, &str)], interval: &str) -> String {
    let mut toml = format!(
        "[agent]\n\
         external_labels = {}\n\
         drain_timeout = \"15s\"\n\
         self_metrics_interval = \"1s\"\n\
         \n\
         [[remote_write]]\n\
         url = {}\n\
         batch_send_deadline = \"1s\"\n",
        toml_labels(&[("cluster", "edge-1")]),
        toml_string(write_url),
    );
    for (name, url) in probes {
        toml.push_str(&format!(
            "\n[[probe]]\nname = {}\nkind = \"http\"\nurl = {}\ninterval = {}\ntimeout = \"1s\"\n",
            toml_string(name),
            toml_string(url),
            toml_string(interval),
        ));
    }
    toml
}

/// Finds the one result whose labels include all of `want`, panicking with the result if there
/// is not exactly one.
pub fn only<'a>(results: &'a [QueryResult], want: &[(&str, &str)]) -> &'a QueryResult {
    let matching: Vec<&QueryResult> = results
        .iter()
        .filter(|r| {
            want.iter()
                .all(|(k, v)| r.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect();
    assert_eq!(
        matching.len(),
        1,
        "expected exactly one series with {want:?}, got: {results:#?}"
    );
    matching[0]
}
