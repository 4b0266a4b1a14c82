//! The gRPC probe against a real `grpc.health.v1` server (Python's grpcio-health-checking,
//! started here on a free 127.0.0.1 port), and against servers that refuse or stay silent.
//! Assertions are on outcomes, reasons and series, never on elapsed time.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use pushprobe::config::{GrpcProbeSettings, GrpcTarget, IpProtocol, TlsConfig};
use pushprobe::probe::grpc::GrpcProbe;
use pushprobe::probe::ProbeReport;
use pushprobe::series::Registry;

/// The Python of the tools' virtualenv (with grpcio-health-checking).
fn venv_python() -> Option<PathBuf> {
    require_tool("python-tools")
}

/// A running `grpc_health_server.py`.
struct HealthServer {
    process: ChildGuard,
    dir: tempfile::TempDir,
    port: u16,
}

impl HealthServer {
    /// Starts a plaintext server; `None` (the test skips) when the tools are not installed.
    async fn start() -> Option<HealthServer> {
        Self::start_args(&[]).await
    }

    /// Starts a TLS server presenting `cert`.
    async fn start_tls(cert: &TestCert) -> Option<HealthServer> {
        let dir = tempfile::tempdir().expect("temp dir");
        let cert_path = dir.path().join("server.pem");
        let key_path = dir.path().join("server.key");
        std::fs::write(&cert_path, &cert.pem).expect("write cert");
        std::fs::write(&key_path, &cert.key_pem).expect("write key");
        let args = [
            "--cert".to_string(),
            cert_path.display().to_string(),
            "--key".to_string(),
            key_path.display().to_string(),
        ];
        let server = Self::start_args(&args).await;
        drop(dir);
        server
    }

    async fn start_args(extra: &[String]) -> Option<HealthServer> {
        let python = venv_python()?;
        let dir = tempfile::tempdir().expect("temp dir");
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/grpc_health_server.py");
        let mut cmd = std::process::Command::new(python);
        cmd.arg(script)
            .args(["--dir", dir.path().to_str().expect("utf-8 path")])
            .args(extra);
        let mut process = ChildGuard::spawn("grpc-health-server", cmd, dir.path()).expect("spawn");
        let port_file = dir.path().join("port");
        for _ in 0..600 {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                let port = text.trim().parse().expect("port");
                return Some(HealthServer { process, dir, port });
            }
            if process.try_wait().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        process.dump_logs();
        panic!("the gRPC health server did not start");
    }

    /// Sets the serving status of each `(service, status)` ("" = the server as a whole) and
    /// waits until the server has applied them.
    async fn set(&self, statuses: &[(&str, &str)]) {
        let text: String = statuses
            .iter()
            .map(|(service, status)| {
                let service = if service.is_empty() { "-" } else { service };
                format!("{service} {status}\n")
            })
            .collect();
        let control = self.dir.path().join("statuses");
        let tmp = self.dir.path().join("statuses.tmp");
        std::fs::write(&tmp, &text).expect("write statuses");
        std::fs::rename(&tmp, &control).expect("rename statuses");
        let applied = self.dir.path().join("applied");
        for _ in 0..600 {
            if std::fs::read_to_string(&applied).is_ok_and(|a| a == text) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.process.dump_logs();
        panic!("the gRPC health server did not apply {text:?}");
    }

    /// Every call the server saw: its method and request metadata.
    fn calls(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("calls.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("call log line"))
            .collect()
    }

    fn target(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// A self-signed certificate for `localhost` and 127.0.0.1, its own CA.
struct TestCert {
    pem: String,
    key_pem: String,
    not_after: i64,
}

fn test_cert(common_name: &str) -> TestCert {
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    params.not_after = rcgen::date_time_ymd(2031, 5, 17);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    TestCert {
        pem: cert.pem(),
        key_pem: key.serialize_pem(),
        not_after: params.not_after.unix_timestamp(),
    }
}

fn settings(target: &str, service: &str) -> GrpcProbeSettings {
    let (host, port) = target.rsplit_once(':').expect("host:port");
    GrpcProbeSettings {
        name: "grpc-health".into(),
        target_text: target.into(),
        target: GrpcTarget {
            host: host.into(),
            port: port.parse().expect("port"),
        },
        service: service.into(),
        tls: None,
        preferred_ip_protocol: IpProtocol::Ip6,
        ip_protocol_fallback: true,
        metadata: vec![],
        interval: Duration::from_secs(30),
        timeout: Duration::from_secs(5),
        labels: vec![("team".into(), "core".into())],
    }
}

fn labels<'a>(s: &'a GrpcProbeSettings, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut l = vec![
        ("probe", s.name.as_str()),
        ("instance", s.target_text.as_str()),
        ("team", "core"),
    ];
    l.extend_from_slice(extra);
    l
}

fn gauge(r: &Registry, s: &GrpcProbeSettings, name: &str) -> Option<f64> {
    r.value(name, &labels(s, &[]))
}

/// `probe_grpc_healthcheck_response` per serving status.
fn responses(r: &Registry, s: &GrpcProbeSettings) -> Vec<(&'static str, Option<f64>)> {
    ["UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"]
        .into_iter()
        .map(|status| {
            (
                status,
                r.value(
                    "probe_grpc_healthcheck_response",
                    &labels(s, &[("serving_status", status)]),
                ),
            )
        })
        .collect()
}

/// Only `current` is 1; the other statuses are 0 (all 0 when `current` is `None`).
fn assert_response(r: &Registry, s: &GrpcProbeSettings, current: Option<&str>) {
    for (status, value) in responses(r, s) {
        let want = if Some(status) == current { 1.0 } else { 0.0 };
        assert_eq!(value, Some(want), "serving_status={status}");
    }
}

async fn run_with(probe: &mut GrpcProbe, r: &mut Registry) -> ProbeReport {
    probe.run(r).await
}

async fn run(s: &GrpcProbeSettings) -> (ProbeReport, Registry) {
    let mut probe = GrpcProbe::new(s.clone()).expect("probe builds");
    let mut registry = Registry::new();
    let report = run_with(&mut probe, &mut registry).await;
    (report, registry)
}

#[tokio::test]
async fn a_service_switched_between_serving_and_not_serving_is_seen_both_ways() {
    let Some(server) = HealthServer::start().await else {
        return;
    };
    server.set(&[("shop.Cart", "SERVING")]).await;
    let s = settings(&server.target(), "shop.Cart");
    let mut probe = GrpcProbe::new(s.clone()).unwrap();
    let mut r = Registry::new();

    let report = run_with(&mut probe, &mut r).await;
    assert!(report.success, "{report:?}");
    assert_eq!(report.status, "SERVING");
    assert_eq!(gauge(&r, &s, "probe_success"), Some(1.0));
    assert_response(&r, &s, Some("SERVING"));
    assert_eq!(gauge(&r, &s, "probe_grpc_status_code"), Some(0.0));
    assert_eq!(gauge(&r, &s, "probe_grpc_ssl"), Some(0.0));
    assert_eq!(gauge(&r, &s, "probe_ip_protocol"), Some(4.0));
    assert!(gauge(&r, &s, "probe_ip_addr_hash").is_some_and(|h| h > 0.0));
    assert!(gauge(&r, &s, "probe_duration_seconds").is_some_and(|d| d > 0.0));
    for phase in ["resolve", "check"] {
        assert!(
            r.value(
                "probe_grpc_duration_seconds",
                &labels(&s, &[("phase", phase)])
            )
            .is_some(),
            "phase {phase}"
        );
    }
    assert!(r
        .value(
            "probe_grpc_duration_seconds",
            &labels(&s, &[("phase", "check")])
        )
        .is_some_and(|d| d > 0.0));
    // Plaintext: no TLS series at all.
    assert_eq!(gauge(&r, &s, "probe_ssl_earliest_cert_expiry"), None);

    // The service goes down while the probe keeps running.
    server.set(&[("shop.Cart", "NOT_SERVING")]).await;
    let report = run_with(&mut probe, &mut r).await;
    assert!(!report.success, "{report:?}");
    assert_eq!(report.status, "NOT_SERVING");
    assert_eq!(
        report.reason.as_deref(),
        Some("the server reports service \"shop.Cart\" NOT_SERVING")
    );
    assert_eq!(gauge(&r, &s, "probe_success"), Some(0.0));
    assert_response(&r, &s, Some("NOT_SERVING"));
    // The call itself went well: the answer is what failed.
    assert_eq!(gauge(&r, &s, "probe_grpc_status_code"), Some(0.0));

    // And comes back.
    server.set(&[("shop.Cart", "SERVING")]).await;
    let report = run_with(&mut probe, &mut r).await;
    assert!(report.success, "{report:?}");
    assert_response(&r, &s, Some("SERVING"));

    // Each run was one Health/Check.
    let calls = server.calls();
    assert_eq!(calls.len(), 3, "{calls:?}");
    for call in &calls {
        assert_eq!(call["method"], "/grpc.health.v1.Health/Check");
    }
}

#[tokio::test]
async fn the_empty_service_asks_about_the_whole_server_and_metadata_is_sent() {
    let Some(server) = HealthServer::start().await else {
        return;
    };
    let mut s = settings(&server.target(), "");
    s.metadata = vec![
        ("x-tenant".into(), "shop".into()),
        (
            "authorization".into(),
            pushprobe::secret::HeaderText::for_header("authorization", "Bearer t-1"),
        ),
    ];
    // The reference servicer starts with the whole server SERVING.
    let (report, r) = run(&s).await;
    assert!(report.success, "{report:?}");
    assert_response(&r, &s, Some("SERVING"));
    let calls = server.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0]["metadata"]["x-tenant"], "shop");
    assert_eq!(calls[0]["metadata"]["authorization"], "Bearer t-1");

    server.set(&[("", "NOT_SERVING")]).await;
    let (report, _) = run(&s).await;
    assert_eq!(
        report.reason.as_deref(),
        Some("the server reports the server NOT_SERVING")
    );
}

#[tokio::test]
async fn an_unknown_service_fails_with_not_found() {
    let Some(server) = HealthServer::start().await else {
        return;
    };
    server.set(&[("shop.Cart", "SERVING")]).await;
    let s = settings(&server.target(), "shop.Kart");
    let (report, r) = run(&s).await;
    assert!(!report.success);
    assert_eq!(report.status, "NOT_FOUND");
    let reason = report.reason.unwrap_or_default();
    assert!(
        reason.contains("NOT_FOUND") && reason.contains("\"shop.Kart\""),
        "{reason}"
    );
    assert!(reason.contains("check the probe's service"), "{reason}");
    assert_eq!(gauge(&r, &s, "probe_grpc_status_code"), Some(5.0));
    assert_eq!(gauge(&r, &s, "probe_success"), Some(0.0));
    assert_response(&r, &s, None);
}

#[tokio::test]
async fn unknown_and_service_unknown_answers_are_failures_that_name_themselves() {
    let Some(server) = HealthServer::start().await else {
        return;
    };
    server
        .set(&[("shop.Cart", "UNKNOWN"), ("shop.Till", "SERVICE_UNKNOWN")])
        .await;
    let s = settings(&server.target(), "shop.Cart");
    let (report, r) = run(&s).await;
    assert!(!report.success);
    assert_eq!(report.status, "UNKNOWN");
    assert!(
        report
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("UNKNOWN") && r.contains("shop.Cart")),
        "{report:?}"
    );
    assert_response(&r, &s, Some("UNKNOWN"));
    assert_eq!(gauge(&r, &s, "probe_grpc_status_code"), Some(0.0));

    let s = settings(&server.target(), "shop.Till");
    let (report, r) = run(&s).await;
    assert_eq!(report.status, "SERVICE_UNKNOWN");
    assert_response(&r, &s, Some("SERVICE_UNKNOWN"));
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_with_a_reason() {
    // Accepts connections and holds them, silent.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            open.push(stream);
        }
    });
    let mut s = settings(&addr.to_string(), "");
    s.timeout = Duration::from_secs(1);
    let (report, r) = run(&s).await;
    held.abort();
    assert!(!report.success);
    assert_eq!(report.status, "timeout");
    let reason = report.reason.unwrap_or_default();
    assert!(
        reason.starts_with("no answer within 1s") && reason.contains("raise the probe's timeout"),
        "{reason}"
    );
    assert_eq!(gauge(&r, &s, "probe_grpc_status_code"), Some(4.0));
    assert_response(&r, &s, None);
}

#[tokio::test]
async fn a_refused_connection_says_so() {
    // A port that was free a moment ago, with nothing listening.
    let port = free_port();
    let s = settings(&format!("127.0.0.1:{port}"), "");
    let (report, r) = run(&s).await;
    assert!(!report.success);
    assert_eq!(report.status, "connect");
    let reason = report.reason.unwrap_or_default();
    assert!(
        reason.contains("refused") && reason.contains("is the service listening?"),
        "{reason}"
    );
    assert_eq!(gauge(&r, &s, "probe_grpc_status_code"), Some(14.0));
    assert_eq!(gauge(&r, &s, "probe_ip_protocol"), Some(4.0));
}

#[tokio::test]
async fn tls_with_the_servers_ca_records_the_certificate() {
    let cert = test_cert("grpc-test");
    let Some(server) = HealthServer::start_tls(&cert).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &cert.pem).unwrap();
    let mut s = settings(&server.target(), "");
    s.tls = Some(TlsConfig {
        ca_file: Some(ca),
        ..TlsConfig::default()
    });
    let (report, r) = run(&s).await;
    assert!(report.success, "{report:?}");
    assert_eq!(gauge(&r, &s, "probe_grpc_ssl"), Some(1.0));
    assert_eq!(
        gauge(&r, &s, "probe_ssl_earliest_cert_expiry"),
        Some(cert.not_after as f64)
    );
    let version = report
        .details
        .iter()
        .find(|(k, _)| k == "tls_version")
        .and_then(|(_, v)| v.as_text().map(str::to_string))
        .expect("tls_version detail");
    assert_eq!(
        r.value(
            "probe_tls_version_info",
            &labels(&s, &[("version", &version)])
        ),
        Some(1.0)
    );

    // A name the certificate covers, other than the address connected to.
    s.tls = Some(TlsConfig {
        server_name: Some("localhost".into()),
        ..s.tls.clone().unwrap_or_default()
    });
    let (report, _) = run(&s).await;
    assert!(report.success, "{report:?}");
}

#[tokio::test]
async fn tls_with_the_wrong_ca_names_the_key_to_fix() {
    let cert = test_cert("grpc-test");
    let Some(server) = HealthServer::start_tls(&cert).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other-ca.pem");
    std::fs::write(&other, test_cert("someone-else").pem).unwrap();
    let mut s = settings(&server.target(), "");
    s.tls = Some(TlsConfig {
        ca_file: Some(other),
        ..TlsConfig::default()
    });
    let (report, r) = run(&s).await;
    assert!(!report.success);
    assert_eq!(report.status, "tls");
    let reason = report.reason.unwrap_or_default();
    assert!(
        reason.starts_with("TLS handshake with 127.0.0.1: server certificate refused")
            && reason.contains("set tls_config.ca_file"),
        "{reason}"
    );
    assert_eq!(gauge(&r, &s, "probe_grpc_ssl"), Some(0.0));
    assert_eq!(gauge(&r, &s, "probe_grpc_status_code"), Some(14.0));
    assert_eq!(gauge(&r, &s, "probe_ssl_earliest_cert_expiry"), None);

    // Plaintext against a TLS port: the server never speaks HTTP/2 in the clear.
    let mut plain = settings(&server.target(), "");
    plain.timeout = Duration::from_secs(2);
    let (report, _) = run(&plain).await;
    assert!(!report.success, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_receiver_stores_the_grpc_series() {
    let Some(server) = HealthServer::start().await else {
        return;
    };
    let Some(prom) = Prometheus::start().await else {
        return;
    };
    server.set(&[("shop.Cart", "NOT_SERVING")]).await;
    let mut toml = basic_config(&prom.write_url(), &[], "1s");
    toml.push_str(&format!(
        "\n[[probe]]\nname = \"cart\"\nkind = \"grpc\"\ntarget = {}\nservice = \"shop.Cart\"\n\
         interval = \"1s\"\ntimeout = \"1s\"\n",
        toml_string(&server.target())
    ));
    let agent = Pushprobe::with_config(&toml);
    let run = agent.once().await;
    // The probe failed (NOT_SERVING): `once` says so with its exit code, after delivering.
    assert_ne!(run.code(), Some(0), "{}", run.stderr);

    let target = server.target();
    let want = [("probe", "cart"), ("instance", target.as_str())];
    let success = prom.wait_for_any(r#"probe_success{probe="cart"}"#).await;
    assert_eq!(only(&success, &want).value, 0.0);
    let response = prom
        .wait_for_any(r#"probe_grpc_healthcheck_response{probe="cart"}"#)
        .await;
    assert_eq!(response.len(), 4, "{response:?}");
    assert_eq!(
        only(&response, &[("serving_status", "NOT_SERVING")]).value,
        1.0
    );
    assert_eq!(only(&response, &[("serving_status", "SERVING")]).value, 0.0);
    let code = prom
        .wait_for_any(r#"probe_grpc_status_code{probe="cart"}"#)
        .await;
    assert_eq!(only(&code, &want).value, 0.0);
    let phases = prom
        .wait_for_any(r#"probe_grpc_duration_seconds{probe="cart"}"#)
        .await;
    assert_eq!(phases.len(), 2, "{phases:?}");
    for name in ["probe_grpc_ssl", "probe_ip_protocol", "probe_ip_addr_hash"] {
        let found = prom
            .wait_for_any(&format!("{name}{{probe=\"cart\"}}"))
            .await;
        assert_eq!(found.len(), 1, "{name}: {found:?}");
    }
}

/// Runs blackbox exporter 0.28's `grpc` module once against `target` and returns its series
/// (name with labels → value), or `None` (the test skips) when it is not installed.
async fn blackbox_probe(target: &str, service: &str) -> Option<Vec<(String, f64)>> {
    let bin = require_tool("prometheus-blackbox-exporter-0.28.0")?;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("blackbox.yml");
    std::fs::write(
        &config,
        format!(
            "modules:\n  grpc:\n    prober: grpc\n    timeout: 5s\n    grpc:\n      \
             service: \"{service}\"\n"
        ),
    )
    .expect("write blackbox.yml");
    for _ in 0..5 {
        let port = free_port();
        let mut cmd = std::process::Command::new(&bin);
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"));
        let mut process = ChildGuard::spawn("blackbox", cmd, dir.path()).expect("spawn");
        let url = format!("http://127.0.0.1:{port}/probe?module=grpc&target={target}");
        for _ in 0..200 {
            if process.try_wait().is_some() {
                break; // the port was taken meanwhile: try another one
            }
            if let Ok(response) = http_client().get(&url).send().await {
                let text = response.text().await.expect("blackbox body");
                let series = text
                    .lines()
                    .filter(|l| !l.starts_with('#') && !l.is_empty())
                    .filter_map(|l| {
                        let (name, value) = l.rsplit_once(' ')?;
                        Some((name.to_string(), value.parse().ok()?))
                    })
                    .collect();
                return Some(series);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    panic!("blackbox exporter did not start");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_match_the_blackbox_exporters_for_the_same_server() {
    let Some(server) = HealthServer::start().await else {
        return;
    };
    server
        .set(&[("shop.Cart", "SERVING"), ("shop.Till", "NOT_SERVING")])
        .await;
    let refused = format!("127.0.0.1:{}", free_port());
    for (target, service) in [
        (server.target(), "shop.Cart"),
        (server.target(), "shop.Till"),
        (server.target(), "shop.Kart"),
        (refused, ""),
    ] {
        let Some(theirs) = blackbox_probe(&target, service).await else {
            return;
        };
        let s = settings(&target, service);
        let (report, r) = run(&s).await;
        let ours = r.samples_at(0);
        for (series, value) in &theirs {
            let (name, label) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series.as_str(), ""),
            };
            let extra: Vec<(&str, &str)> = label
                .split_once("=\"")
                .map(|(k, v)| (k, v.trim_end_matches('"')))
                .into_iter()
                .collect();
            let mine = ours
                .iter()
                .find(|smp| {
                    smp.labels.metric_name() == name
                        && labels(&s, &extra)
                            .iter()
                            .all(|(k, v)| smp.labels.get(k) == Some(*v))
                })
                .map(|smp| smp.value);
            assert!(
                mine.is_some(),
                "{target} {service:?}: no {series} ({report:?})"
            );
            // Timings differ run to run; everything else is the same fact.
            if !name.contains("duration") && !name.contains("lookup_time") {
                assert_eq!(mine, Some(*value), "{target} {service:?}: {series}");
            }
        }
    }
}

#[tokio::test]
async fn the_grpc_example_validates_without_showing_a_secret() {
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/grpc-probes.toml"),
    )
    .expect("example");
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("internal-ca.pem");
    std::fs::write(&ca, test_cert("internal-ca").pem).unwrap();
    let toml = example
        .replace("/etc/pushprobe/internal-ca.pem", &ca.display().to_string())
        .replace(
            "metadata = { \"x-tenant\" = \"eu-1\" }",
            "metadata = { \"x-tenant\" = \"eu-1\", authorization = \"Bearer grpc-secret-1\" }",
        );
    let check = Pushprobe::with_config(&toml).config_check().await;
    check.assert_code(0);
    assert!(
        check.stdout.contains("cart-service") && check.stdout.contains("shop.v1.Cart"),
        "{}",
        check.stdout
    );
    assert!(!check.stdout.contains("grpc-secret-1"), "{}", check.stdout);
    assert!(!check.stderr.contains("grpc-secret-1"), "{}", check.stderr);
}

#[tokio::test]
async fn check_gives_each_grpc_probe_one_line_with_its_answer() {
    let Some(server) = HealthServer::start().await else {
        return;
    };
    server
        .set(&[("shop.Cart", "SERVING"), ("shop.Till", "NOT_SERVING")])
        .await;
    let mut toml = String::from("[agent]\njob = \"pushprobe\"\n");
    for (name, service) in [("cart", "shop.Cart"), ("till", "shop.Till")] {
        toml.push_str(&format!(
            "\n[[probe]]\nname = \"{name}\"\nkind = \"grpc\"\ntarget = {}\nservice = \"{service}\"\n",
            toml_string(&server.target())
        ));
    }
    let agent = Pushprobe::with_config(&toml);
    let config = agent.config_path().to_string_lossy().into_owned();
    let run = agent
        .run_to_end(
            "check",
            &["--config", &config, "check"],
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(run.code(), Some(1), "{}{}", run.stdout, run.stderr);
    let line = |name: &str| {
        run.stdout
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("no line for {name}: {}", run.stdout))
            .to_string()
    };
    assert!(line("cart").contains("SERVING"), "{}", run.stdout);
    let till = line("till");
    assert!(till.contains("NOT_SERVING"), "{}", run.stdout);
    assert!(
        run.stdout.contains("1 of 2 probes failed"),
        "{}",
        run.stdout
    );
}

#[tokio::test]
async fn the_address_family_follows_preferred_ip_protocol_and_its_fallback() {
    let Some(server) = HealthServer::start().await else {
        return;
    };
    // A name: `localhost` always has 127.0.0.1, where the server listens.
    let mut s = settings(&format!("localhost:{}", server.port), "");
    s.preferred_ip_protocol = IpProtocol::Ip4;
    s.ip_protocol_fallback = false;
    let (report, r) = run(&s).await;
    assert!(report.success, "{report:?}");
    assert_eq!(gauge(&r, &s, "probe_ip_protocol"), Some(4.0));

    // An IPv4 literal while only IPv6 is allowed: no address, no call.
    let mut s = settings(&server.target(), "");
    s.ip_protocol_fallback = false;
    let (report, r) = run(&s).await;
    assert!(!report.success);
    assert_eq!(report.status, "resolve");
    assert_eq!(
        report.reason.as_deref(),
        Some("resolve 127.0.0.1: no ip6 address (ip_protocol_fallback = false)")
    );
    assert_eq!(gauge(&r, &s, "probe_ip_protocol"), Some(0.0));
    assert_eq!(gauge(&r, &s, "probe_grpc_status_code"), Some(0.0));
    assert_eq!(server.calls().len(), 1, "{:?}", server.calls());

    // With the fallback (the default), the IPv4 address is used.
    s.ip_protocol_fallback = true;
    let (report, r) = run(&s).await;
    assert!(report.success, "{report:?}");
    assert_eq!(gauge(&r, &s, "probe_ip_protocol"), Some(4.0));
}

#[tokio::test]
async fn a_server_that_does_not_speak_http2_is_named_as_such() {
    // An HTTP/1.1 server: it answers the HTTP/2 preface with a 400 and closes.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf).await;
            let _ = stream
                .write_all(
                    b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await;
        }
    });
    let s = settings(&addr.to_string(), "");
    let (report, r) = run(&s).await;
    server.abort();
    assert!(!report.success);
    assert_eq!(report.status, "http2", "{report:?}");
    assert!(
        report
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("may not serve gRPC on this port")),
        "{report:?}"
    );
    assert_eq!(gauge(&r, &s, "probe_grpc_status_code"), Some(14.0));
}
