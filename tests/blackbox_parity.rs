//! The HTTP probe's response checks against the blackbox exporter's own: the same module,
//! written once in the exporter's YAML and once as pushprobe keys of the same names, probes
//! the same loopback targets, and both must agree on `probe_success` and
//! `probe_failed_due_to_regex`.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::*;
use pushprobe::probe::http::HttpProbe;
use pushprobe::series::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A target answering by path: `/up` a healthy JSON body, `/degraded` a degraded one, and
/// anything else a `503` with the degraded body.
async fn target() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut n = 0;
                while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(m) => n += m,
                    }
                    if n == buf.len() {
                        return;
                    }
                }
                let head = String::from_utf8_lossy(&buf[..n]);
                let (code, status, body) = if head.starts_with("GET /up ") {
                    ("200 OK", "fine", r#"{"status":"up"}"#)
                } else if head.starts_with("GET /degraded ") {
                    ("200 OK", "degraded", r#"{"status":"down"}"#)
                } else {
                    (
                        "503 Service Unavailable",
                        "degraded",
                        r#"{"status":"down"}"#,
                    )
                };
                let response = format!(
                    "HTTP/1.1 {code}\r\nX-Status: {status}\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(response.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// Modules: (name, blackbox `http:` YAML, pushprobe TOML keys).
const MODULES: &[(&str, &str, &str)] = &[
    (
        "body_up",
        "fail_if_body_not_matches_regexp: ['\"status\":\"up\"']",
        "fail_if_body_not_matches_regexp = ['\"status\":\"up\"']",
    ),
    (
        "body_no_down",
        "fail_if_body_matches_regexp: ['down']",
        "fail_if_body_matches_regexp = ['down']",
    ),
    (
        "header_not_degraded",
        "fail_if_header_matches: [{header: X-Status, regexp: degraded}]",
        "fail_if_header_matches = [{ header = 'X-Status', regexp = 'degraded' }]",
    ),
    (
        "header_missing_allowed",
        "fail_if_header_not_matches: [{header: X-Missing, regexp: '.', allow_missing: true}]",
        "fail_if_header_not_matches = [{ header = 'X-Missing', regexp = '.', allow_missing = true }]",
    ),
    (
        "header_missing_refused",
        "fail_if_header_not_matches: [{header: X-Missing, regexp: '.'}]",
        "fail_if_header_not_matches = [{ header = 'X-Missing', regexp = '.' }]",
    ),
    (
        "version_1_0_only",
        "valid_http_versions: ['HTTP/1.0']",
        "valid_http_versions = ['HTTP/1.0']",
    ),
    ("not_ssl", "fail_if_not_ssl: true", "fail_if_not_ssl = true"),
];

fn value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test]
async fn response_checks_agree_with_the_blackbox_exporter() {
    let Some(blackbox) = require_tool("prometheus-blackbox-exporter-0.28.0") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut yaml = String::from("modules:\n");
    for (name, checks, _) in MODULES {
        yaml.push_str(&format!(
            "  {name}:\n    prober: http\n    timeout: 5s\n    http:\n      \
             preferred_ip_protocol: ip4\n      {checks}\n"
        ));
    }
    let config = dir.path().join("blackbox.yml");
    std::fs::write(&config, yaml).unwrap();
    let port = free_port();
    let mut cmd = Command::new(blackbox);
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"));
    let _exporter = ChildGuard::spawn("blackbox", cmd, dir.path()).unwrap();
    let client = http_client();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while http_get_text(&client, &format!("{base}/-/healthy"))
        .await
        .is_err()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "blackbox exporter did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let addr = target().await;
    let mut toml = String::new();
    for (name, _, keys) in MODULES {
        for path in ["up", "degraded", "broken"] {
            toml.push_str(&format!(
                "[[probe]]\nname = \"{name}-{path}\"\nkind = \"http\"\n\
                 url = \"http://{addr}/{path}\"\n{keys}\n\n"
            ));
        }
    }
    let file = dir.path().join("pushprobe.toml");
    std::fs::write(&file, toml).unwrap();
    let settings = pushprobe::config::load(&file, true)
        .unwrap()
        .validate("test")
        .unwrap();

    let (mut compared, mut failures) = (0, 0);
    for p in &settings.probes {
        let pushprobe::config::ProbeSettings::Http(h) = p else {
            panic!("not an http probe");
        };
        let (module, path) = h.name.rsplit_once('-').unwrap();
        let theirs = http_get_text(
            &client,
            &format!("{base}/probe?module={module}&target=http://{addr}/{path}"),
        )
        .await
        .unwrap();
        let mut probe = HttpProbe::new(h.clone()).unwrap();
        let mut registry = Registry::new();
        let report = probe.run(&mut registry).await;
        let ours = |metric: &str| {
            registry
                .samples_at(0)
                .into_iter()
                .find(|s| s.labels.metric_name() == metric)
                .map(|s| s.value)
        };
        for metric in ["probe_success", "probe_failed_due_to_regex"] {
            assert_eq!(
                ours(metric),
                value(&theirs, metric),
                "{metric} for module {module} on /{path}; ours: {report:?}; theirs:\n{theirs}"
            );
        }
        compared += 1;
        failures += usize::from(!report.success);
    }
    assert_eq!(compared, MODULES.len() * 3);
    // Both outcomes were compared: of the 200s, three modules fail /degraded only, three fail
    // both paths, one neither; every module fails the 503.
    assert_eq!(failures, 9 + MODULES.len());
}
