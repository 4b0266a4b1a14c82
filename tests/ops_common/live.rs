//! Minimal live-test helpers for the operations tests: a real Prometheus with its
//! remote-write receiver on a free loopback port, a scriptable HTTP target, and the pushprobe
//! binary. Names follow the shared integration harness so the tests can move to it unchanged.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::require_tool;

/// How long to poll for data before a query counts as empty; generous for a loaded machine.
pub const DATA_TIMEOUT: Duration = Duration::from_secs(60);

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Quotes a string as a TOML basic string.
pub fn toml_string(s: &str) -> String {
    format!("{s:?}")
}

/// A TOML inline table of labels.
pub fn toml_labels(labels: &[(&str, &str)]) -> String {
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k} = {}", toml_string(v)))
        .collect();
    format!("{{ {} }}", inner.join(", "))
}

fn http_client() -> reqwest::Client {
    static PROVIDER: Once = Once::new();
    // reqwest is built without a default rustls provider; plain HTTP still needs one set.
    PROVIDER.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .no_proxy()
        .build()
        .unwrap()
}

/// A child process killed when dropped, so a failing test leaves nothing running.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One element of an instant-query vector.
#[derive(Debug, Clone)]
pub struct QueryResult {
    /// The series' labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// A Prometheus receiving remote writes, in a temporary directory.
pub struct Prometheus {
    _guard: Guard,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus with `--web.enable-remote-write-receiver`; `None` (skip) when it is
    /// not installed outside CI.
    pub async fn start() -> Option<Prometheus> {
        let bin = require_tool("prometheus")?;
        for _ in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let config = dir.path().join("prometheus.yml");
            std::fs::write(&config, "global:\n  scrape_interval: 15s\n").unwrap();
            let port = free_port();
            let child = Command::new(&bin)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg("--web.enable-remote-write-receiver")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let mut guard = Guard(child);
            let url = format!("http://127.0.0.1:{port}/-/ready");
            let deadline = Instant::now() + DATA_TIMEOUT;
            while Instant::now() < deadline {
                if let Ok(r) = http_client().get(&url).send().await {
                    if r.status().is_success() {
                        return Some(Prometheus {
                            _guard: guard,
                            port,
                            _dir: dir,
                        });
                    }
                }
                if guard.0.try_wait().ok().flatten().is_some() {
                    break; // the port was taken in the meantime: try another
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        panic!("prometheus did not start");
    }

    /// The remote-write endpoint.
    pub fn write_url(&self) -> String {
        format!("http://127.0.0.1:{}/api/v1/write", self.port)
    }

    /// Runs an instant query; errors (bad PromQL included) are returned, not panicked.
    pub async fn try_query(&self, promql: &str) -> Result<Vec<QueryResult>, String> {
        let url = reqwest::Url::parse_with_params(
            &format!("http://127.0.0.1:{}/api/v1/query", self.port),
            &[("query", promql)],
        )
        .unwrap();
        let resp = http_client()
            .get(url)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let text = resp.text().await.map_err(|e| e.to_string())?;
        let body: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
        if body["status"] != "success" {
            return Err(body.to_string());
        }
        Ok(body["data"]["result"]
            .as_array()
            .ok_or_else(|| format!("not a vector: {body}"))?
            .iter()
            .map(|r| QueryResult {
                labels: r["metric"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect(),
                value: r["value"][1].as_str().unwrap().parse().unwrap(),
            })
            .collect())
    }

    /// Runs an instant query, panicking on an error.
    pub async fn query(&self, promql: &str) -> Vec<QueryResult> {
        self.try_query(promql)
            .await
            .unwrap_or_else(|e| panic!("{promql}: {e}"))
    }

    /// Polls `promql` until `pred` accepts the result; panics with the last answer after
    /// `timeout`.
    pub async fn wait_for(
        &self,
        promql: &str,
        pred: impl Fn(&[QueryResult]) -> bool,
        timeout: Duration,
    ) -> Vec<QueryResult> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = self.try_query(promql).await;
            if let Ok(r) = &last {
                if pred(r) {
                    return r.clone();
                }
            }
            if Instant::now() >= deadline {
                panic!("{promql}: condition not met after {timeout:?}; last answer: {last:?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Polls until `promql` returns at least one series.
    pub async fn wait_for_any(&self, promql: &str) -> Vec<QueryResult> {
        self.wait_for(promql, |r| !r.is_empty(), DATA_TIMEOUT).await
    }
}

/// What a target answers.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Body.
    pub body: String,
}

impl Default for Reply {
    fn default() -> Self {
        Reply {
            status: 200,
            body: "ok\n".into(),
        }
    }
}

/// An HTTP/1.1 server on 127.0.0.1 answering every request with one reply.
pub struct TargetServer {
    addr: SocketAddr,
}

impl TargetServer {
    /// Answers 200.
    pub async fn start() -> TargetServer {
        TargetServer::start_with(Reply::default()).await
    }

    /// Answers `reply`.
    pub async fn start_with(reply: Reply) -> TargetServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let reply = Arc::new(reply);
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    continue;
                };
                let reply = reply.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head = format!(
                        "HTTP/1.1 {} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        reply.status,
                        reply.body.len()
                    );
                    let _ = s.write_all(head.as_bytes()).await;
                    let _ = s.write_all(reply.body.as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        TargetServer { addr }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// A pushprobe configuration in its own temporary directory.
pub struct Pushprobe {
    dir: tempfile::TempDir,
    config: PathBuf,
    env: Vec<(String, String)>,
}

/// A finished pushprobe command.
#[derive(Debug)]
pub struct Finished {
    /// Exit status.
    pub status: ExitStatus,
    /// Its stderr (logs).
    pub stderr: String,
}

impl Finished {
    /// Panics, showing the logs, unless the exit code is `expected`.
    pub fn assert_code(&self, expected: i32) {
        assert_eq!(
            self.status.code(),
            Some(expected),
            "exit {:?}\n{}",
            self.status,
            self.stderr
        );
    }
}

impl Pushprobe {
    /// Writes the configuration.
    pub fn with_config(toml: &str) -> Pushprobe {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("pushprobe.toml");
        std::fs::write(&config, toml).unwrap();
        Pushprobe {
            dir,
            config,
            env: Vec::new(),
        }
    }

    /// Sets an environment variable for the commands run from here.
    pub fn env(mut self, key: &str, value: &str) -> Pushprobe {
        self.env.push((key.into(), value.into()));
        self
    }

    fn command(&self, sub: &str) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pushprobe"));
        cmd.args([sub, "--config"]).arg(&self.config);
        for (k, _) in std::env::vars() {
            if k.starts_with("PUSHPROBE_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        cmd
    }

    /// Runs `pushprobe once` to completion.
    pub async fn once(&self) -> Finished {
        let mut cmd = self.command("once");
        let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap();
        Finished {
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Starts `pushprobe run` in the background; its logs go to a file in the temp dir.
    pub fn spawn_run(&self, extra: &[&str]) -> RunningAgent {
        let log = self.dir.path().join("run.stderr");
        let mut cmd = self.command("run");
        cmd.args(extra).stderr(std::fs::File::create(&log).unwrap());
        RunningAgent {
            guard: Some(Guard(cmd.spawn().unwrap())),
            log,
        }
    }
}

/// A `pushprobe run` in the background; killed when dropped.
pub struct RunningAgent {
    guard: Option<Guard>,
    log: PathBuf,
}

impl RunningAgent {
    /// Panics with the logs if the agent has exited.
    pub fn assert_running(&mut self) {
        let child = &mut self.guard.as_mut().unwrap().0;
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "pushprobe run exited with {status}\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }

    /// Sends SIGTERM and waits for the exit.
    pub async fn terminate(mut self, timeout: Duration) -> Finished {
        let mut guard = self.guard.take().unwrap();
        let pid = guard.0.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Ok(Some(status)) = guard.0.try_wait() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "pushprobe run did not exit after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Finished {
            status,
            stderr: std::fs::read_to_string(&self.log).unwrap_or_default(),
        }
    }
}
