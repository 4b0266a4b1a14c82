//! Every query of ops/grafana-dashboard.json returns data from a real Prometheus fed by the
//! real pushprobe binary, and the alert expressions pick out exactly the failing targets.
//!
//! Two agents push (one `run`, one `once`, with different external labels), so aggregations
//! that only work for a single agent fail here. The targets are local: one that answers 200,
//! one that answers 500, a port nobody listens on, an HTTPS server whose certificate expires
//! in a week, and an OpenAI-compatible server probed with a good key (priced and unpriced
//! models), a wrong key, and a daily spend limit so small that the guard engages. A second,
//! misbehaving relay has one path per problem: little rate-limit headroom left, a substituted
//! model, streams that stall, a fingerprint that changes, and answers that fail `expect`.

mod common;
mod ops_common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{
    free_port, toml_labels, toml_string, Prometheus, QueryApi, Reply, TargetServer, DATA_TIMEOUT,
};
use ops_common::{read, yaml_documents};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Dashboard template variables replaced as Grafana would for "All" and a short range.
const SUBSTITUTIONS: &[(&str, &str)] = &[
    ("$__rate_interval", "1m"),
    ("$__interval", "15s"),
    ("$__range", "1h"),
    ("$job", ".*"),
    ("$probe", ".*"),
    ("$instance", ".*"),
    ("$model", ".*"),
];

fn substitute(expr: &str) -> String {
    // Longest names first: `$__rate_interval` before `$__interval`.
    SUBSTITUTIONS
        .iter()
        .fold(expr.to_string(), |e, (var, value)| e.replace(var, value))
}

/// `label_values(selector, label)` as a query that returns one series per value.
fn label_values_query(definition: &str) -> String {
    let inner = definition
        .strip_prefix("label_values(")
        .and_then(|s| s.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not label_values(...): {definition}"));
    let (selector, label) = inner.rsplit_once(',').expect("selector, label");
    format!(
        "count by ({}) ({})",
        label.trim(),
        substitute(selector.trim())
    )
}

/// Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i32, u8, u8) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let y = (yoe + era * 400 + i64::from(m <= 2)) as i32;
    (y, m, d)
}

/// A self-signed certificate for 127.0.0.1 that expires `days` from now; returns the PEM for
/// the probe's `ca_file` and the server config.
fn expiring_cert(days: i64) -> (String, rustls::ServerConfig) {
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    let (y, m, d) = civil_from_days(common::now_ms() / 86_400_000 + days);
    params.not_after = rcgen::date_time_ymd(y, m, d);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let der: CertificateDer<'static> = cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(pushprobe::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der], key)
        .unwrap();
    (cert.pem(), config)
}

/// An HTTPS server answering every request with 200 and closing the connection.
async fn tls_target(config: rustls::ServerConfig) -> SocketAddr {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = tls
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n",
                    )
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    addr
}

/// The API key the fake OpenAI-compatible server accepts.
const AI_KEY: &str = "sk-dashboard-test";

/// How the relay mock misbehaves, chosen by the first segment of the request path
/// (`/{behaviour}/v1/...`), so each probe sees one problem and nothing else.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Relay {
    /// Every response says 4 000 of 100 000 tokens are left (4 %); requests have room.
    Limited,
    /// Answers `gpt-4.1` requests as [`SUBSTITUTE_MODEL`].
    Substituting,
    /// Streams pause [`STALL_GAP`] between tokens and send no usage chunk.
    Stalling,
    /// A new `system_fingerprint` on every answer.
    Drifting,
    /// Answers "pong" to a probe that expects Paris.
    Canary,
}

impl Relay {
    fn from_path(path: &str) -> Option<Relay> {
        match path.trim_start_matches('/').split('/').next()? {
            "limited" => Some(Relay::Limited),
            "substituting" => Some(Relay::Substituting),
            "stalling" => Some(Relay::Stalling),
            "drifting" => Some(Relay::Drifting),
            "canary" => Some(Relay::Canary),
            _ => None,
        }
    }
}

/// The model the substituting relay answers with: priced, so only the substitution shows.
const SUBSTITUTE_MODEL: &str = "deepseek-v3.2";
/// The pause inside a stalling stream, well over the probe's `stall_threshold`.
const STALL_GAP: Duration = Duration::from_millis(300);
/// Tokens left of [`TOKEN_LIMIT`] on the limited relay.
const TOKENS_REMAINING: u64 = 4_000;
/// The token limit the limited relay announces.
const TOKEN_LIMIT: u64 = 100_000;

/// Reads one request's line, head and `content-length` body; `None` on a closed socket.
async fn read_request(s: &mut tokio::net::TcpStream) -> Option<(String, String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let length = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let line = head.lines().next()?.to_string();
    Some((line, head, buf[head_end..head_end + length].to_vec()))
}

/// An OpenAI-compatible relay with the key [`AI_KEY`] that misbehaves as its path says (see
/// [`Relay`]): what the AI alerts and the stream, rate-limit and relay panels are about.
async fn misbehaving_relay() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answers = Arc::new(std::sync::atomic::AtomicU64::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            let answers = answers.clone();
            tokio::spawn(async move {
                let Some((line, head, body)) = read_request(&mut s).await else {
                    return;
                };
                let path = line.split(' ').nth(1).unwrap_or("/");
                let authorized = head
                    .lines()
                    .any(|l| l.eq_ignore_ascii_case(&format!("authorization: Bearer {AI_KEY}")));
                let Some(relay) = Relay::from_path(path).filter(|_| authorized) else {
                    let body = r#"{"error":{"message":"no such relay, or a wrong key"}}"#;
                    let _ = s
                        .write_all(
                            format!(
                                "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\n\
                                 content-length: {}\r\nconnection: close\r\n\r\n{body}",
                                body.len()
                            )
                            .as_bytes(),
                        )
                        .await;
                    return;
                };
                let mut extra = String::new();
                if relay == Relay::Limited {
                    extra = format!(
                        "x-ratelimit-limit-requests: 1000\r\nx-ratelimit-remaining-requests: 999\r\n\
                         x-ratelimit-reset-requests: 60ms\r\nx-ratelimit-limit-tokens: {TOKEN_LIMIT}\r\n\
                         x-ratelimit-remaining-tokens: {TOKENS_REMAINING}\r\nx-ratelimit-reset-tokens: 6m0s\r\n"
                    );
                }
                let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let asked = request["model"].as_str().unwrap_or("unknown");
                let model = if relay == Relay::Substituting {
                    SUBSTITUTE_MODEL
                } else {
                    asked
                };
                let n = answers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let fingerprint = if relay == Relay::Drifting {
                    format!("fp_{n}")
                } else {
                    "fp_steady".to_string()
                };
                let chunk = |content: &str, finish: &str| {
                    format!(
                        "data: {{\"model\":\"{model}\",\"system_fingerprint\":\"{fingerprint}\",\
                         \"choices\":[{{\"delta\":{{\"content\":\"{content}\"}},\"finish_reason\":{finish}}}]}}\n\n"
                    )
                };
                let (content_type, parts): (&str, Vec<String>) = if line.starts_with("GET ") {
                    let models =
                        r#"{"object":"list","data":[{"id":"deepseek-v3.2"},{"id":"gpt-4.1"}]}"#;
                    ("application/json", vec![models.to_string()])
                } else if request["stream"] == true {
                    let mut tail = chunk("ng", "\"stop\"");
                    // A stalling relay also drops the usage chunk: the missing_usage anomaly.
                    if relay != Relay::Stalling {
                        tail.push_str(
                            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":3}}\n\n",
                        );
                    }
                    tail.push_str("data: [DONE]\n\n");
                    ("text/event-stream", vec![chunk("po", "null"), tail])
                } else {
                    let chat = format!(
                        r#"{{"id":"c1","model":"{model}","system_fingerprint":"{fingerprint}","choices":[{{"index":0,"message":{{"role":"assistant","content":"pong"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}}}"#
                    );
                    ("application/json", vec![chat])
                };
                let length: usize = parts.iter().map(String::len).sum();
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\n{extra}content-length: {length}\r\nconnection: close\r\n\r\n"
                );
                let _ = s.write_all(head.as_bytes()).await;
                for (i, part) in parts.iter().enumerate() {
                    if i > 0 {
                        let gap = if relay == Relay::Stalling {
                            STALL_GAP
                        } else {
                            Duration::from_millis(30)
                        };
                        tokio::time::sleep(gap).await;
                    }
                    let _ = s.write_all(part.as_bytes()).await;
                    let _ = s.flush().await;
                }
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

fn ai_probe(name: &str, base: &str, key_env: &str, model: &str, extra: &str) -> String {
    format!(
        "\n[[probe]]\nname = {}\nkind = \"openai\"\nbase_url = {}\napi_key_env = {}\nmodel = {}\n\
         interval = \"1s\"\ntimeout = \"1s\"\n{extra}",
        toml_string(name),
        toml_string(base),
        toml_string(key_env),
        toml_string(model),
    )
}

fn probe(name: &str, url: &str, extra: &str) -> String {
    format!(
        "\n[[probe]]\nname = {}\nkind = \"http\"\nurl = {}\ninterval = \"1s\"\ntimeout = \"1s\"\n{extra}",
        toml_string(name),
        toml_string(url),
    )
}

/// Every (panel title, expression) of the dashboard.
fn panel_queries(d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((
                p["title"].as_str().unwrap().to_string(),
                t["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    out
}

/// The expression of alert `name` in ops/alerts.yml.
fn alert_expr(name: &str) -> String {
    let doc = &yaml_documents("ops/alerts.yml", &read("ops/alerts.yml"))[0];
    doc["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .find(|r| r["alert"] == name)
        .and_then(|r| r["expr"].as_str())
        .unwrap_or_else(|| panic!("no alert {name}"))
        .to_string()
}

fn probes_in(results: &[common::QueryResult]) -> BTreeSet<String> {
    results
        .iter()
        .map(|r| r.labels.get("probe").cloned().unwrap_or_default())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_data_pushed_by_pushprobe() {
    let Some(prom) = Prometheus::start().await else {
        return;
    };
    let ok = TargetServer::start().await;
    let failing = TargetServer::start_with(Reply {
        status: 500,
        ..Reply::default()
    })
    .await;
    let closed = format!("http://127.0.0.1:{}/", free_port());
    let (ca_pem, tls_config) = expiring_cert(7);
    let tls = tls_target(tls_config).await;
    let ai = format!("http://{}/v1", common::openai::serve(AI_KEY).await);
    let relay = misbehaving_relay().await;
    let relay_url = |behaviour: &str| format!("http://{relay}/{behaviour}/v1");

    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let config = |cluster: &str| {
        let mut toml = format!(
            "[agent]\nexternal_labels = {}\nself_metrics_interval = \"1s\"\ndrain_timeout = \"10s\"\n\
             \n[[remote_write]]\nurl = {}\nbatch_send_deadline = \"500ms\"\n",
            toml_labels(&[("cluster", cluster)]),
            toml_string(&prom.write_url()),
        );
        toml.push_str(&probe("ok", &ok.url("/health"), ""));
        toml.push_str(&probe("server-error", &failing.url("/"), ""));
        toml.push_str(&probe("closed-port", &closed, ""));
        toml.push_str(&probe(
            "tls",
            &format!("https://{tls}/"),
            &format!(
                "tls = {{ ca_file = {} }}\n",
                toml_string(ca_file.to_str().unwrap())
            ),
        ));
        toml.push_str(&ai_probe("ai", &ai, "RELAY_API_KEY", "deepseek-v3.2", ""));
        toml.push_str(&ai_probe(
            "ai-unpriced",
            &ai,
            "RELAY_API_KEY",
            "mystery-model",
            "",
        ));
        toml.push_str(&ai_probe(
            "ai-bad-key",
            &ai,
            "WRONG_API_KEY",
            "deepseek-v3.2",
            "",
        ));
        // A limit below the cost of one request: the first paid check engages the guard.
        toml.push_str(&ai_probe(
            "ai-capped",
            &ai,
            "RELAY_API_KEY",
            "deepseek-v3.2",
            "max_probe_spend_per_day = 0.000000001\n",
        ));
        // One probe per misbehaviour of the relay, each running only the checks it needs.
        toml.push_str(&ai_probe(
            "ai-limited",
            &relay_url("limited"),
            "RELAY_API_KEY",
            "deepseek-v3.2",
            "checks = [\"chat\"]\n",
        ));
        toml.push_str(&ai_probe(
            "ai-substituted",
            &relay_url("substituting"),
            "RELAY_API_KEY",
            "gpt-4.1",
            "checks = [\"chat\"]\n",
        ));
        toml.push_str(&ai_probe(
            "ai-stalling",
            &relay_url("stalling"),
            "RELAY_API_KEY",
            "deepseek-v3.2",
            "checks = [\"chat_stream\"]\nstall_threshold = \"50ms\"\n",
        ));
        toml.push_str(&ai_probe(
            "ai-drifting",
            &relay_url("drifting"),
            "RELAY_API_KEY",
            "deepseek-v3.2",
            "checks = [\"chat\"]\n",
        ));
        toml.push_str(&ai_probe(
            "ai-canary",
            &relay_url("canary"),
            "RELAY_API_KEY",
            "deepseek-v3.2",
            "checks = [\"chat\", \"chat_stream\"]\nexpect = { regex = \"(?i)paris\" }\n",
        ));
        // Pricing tables go after every [[probe]]: a [table] header ends the array entry.
        toml.push_str(
            "\n[pricing.\"deepseek-v3.2\"]\ninput_per_mtok = 0.28\noutput_per_mtok = 0.42\n\
             cached_input_per_mtok = 0.028\n",
        );
        toml
    };

    // A second agent, run once: the queries must aggregate across agents.
    let agent = |cluster: &str| {
        common::Pushprobe::with_config(&config(cluster))
            .env("RELAY_API_KEY", AI_KEY)
            .env("WRONG_API_KEY", "sk-not-this-one")
    };
    let once = agent("ops-once").once().await;
    once.assert_code(1); // some probes fail, by design; everything was delivered
    let run_agent = agent("ops-run");
    let mut running = run_agent.spawn_run(&[]);

    // Variables first: their queries fill the drop-downs.
    let dashboard: Value = serde_json::from_str(&read("ops/grafana-dashboard.json")).unwrap();
    for v in dashboard["templating"]["list"].as_array().unwrap() {
        if v["type"] != "query" {
            continue;
        }
        let q = label_values_query(v["definition"].as_str().unwrap());
        prom.wait_for_any(&q).await;
    }

    // Then every panel query. Polling, not sleeping: a rate needs two samples in its window,
    // and a loaded machine may take a while to deliver them.
    let queries = panel_queries(&dashboard);
    assert!(queries.len() >= 15, "{queries:?}");
    for (title, expr) in &queries {
        let q = substitute(expr);
        assert!(!q.contains('$'), "{title}: unsubstituted variable in {q}");
        let got = prom.wait_for(&q, |r| !r.is_empty(), DATA_TIMEOUT).await;
        assert!(!got.is_empty(), "{title}: {q} returned nothing");
    }
    running.assert_running();

    // The alert expressions, evaluated on the same data, select exactly the right series.
    let down = prom
        .wait_for(
            &alert_expr("PushprobeProbeDown"),
            |r| probes_in(r).len() == 4,
            DATA_TIMEOUT,
        )
        .await;
    assert_eq!(
        probes_in(&down),
        BTreeSet::from([
            "ai-bad-key".to_string(),
            "ai-canary".to_string(),
            "closed-port".to_string(),
            "server-error".to_string()
        ]),
        "{down:?}"
    );
    // One per failing target and agent: the two agents are different sites.
    assert_eq!(down.len(), 8, "{down:?}");

    let errors = prom
        .wait_for(
            &alert_expr("PushprobeProbeErrorRatioHigh"),
            |r| probes_in(r).len() == 2,
            DATA_TIMEOUT,
        )
        .await;
    for r in &errors {
        let reason = (r.labels["code"].as_str(), r.labels["error"].as_str());
        match r.labels["probe"].as_str() {
            "server-error" => assert_eq!(reason, ("500", "none"), "{r:?}"),
            "closed-port" => assert_eq!(reason, ("none", "connect"), "{r:?}"),
            other => panic!("{other} should not have an error ratio alert: {errors:?}"),
        }
        // Every run of these targets fails: the ratio is 1, whatever the number of agents.
        assert!((r.value - 1.0).abs() < 1e-9, "{r:?}");
    }

    let expiring = prom
        .wait_for_any(&alert_expr("PushprobeTLSCertExpiringSoon"))
        .await;
    assert_eq!(probes_in(&expiring), BTreeSet::from(["tls".to_string()]));

    // Every request of the wrong key fails with reason invalid_api_key (the provider's error
    // code says the key itself is invalid), every answer of the canary with answer_mismatch;
    // the good key's other requests never fail.
    let ai_errors = prom
        .wait_for(
            &alert_expr("PushprobeAIErrorRatioHigh"),
            |r| probes_in(r).len() == 2,
            DATA_TIMEOUT,
        )
        .await;
    assert_eq!(
        probes_in(&ai_errors),
        BTreeSet::from(["ai-bad-key".to_string(), "ai-canary".to_string()])
    );
    for r in &ai_errors {
        let reason = match r.labels["probe"].as_str() {
            "ai-canary" => "answer_mismatch",
            _ => "invalid_api_key",
        };
        assert_eq!(r.labels["reason"], reason, "{r:?}");
        assert!((r.value - 1.0).abs() < 1e-9, "{r:?}");
    }
    let guard = prom
        .wait_for_any(&alert_expr("PushprobeAISpendGuardEngaged"))
        .await;
    assert_eq!(probes_in(&guard), BTreeSet::from(["ai-capped".to_string()]));
    let unpriced = prom
        .wait_for_any(&alert_expr("PushprobeAIUnpricedModel"))
        .await;
    assert_eq!(
        probes_in(&unpriced),
        BTreeSet::from(["ai-unpriced".to_string()])
    );

    // The relay's misbehaviours, each caught by its alert and by no other probe's.
    let headroom = prom
        .wait_for_any(&alert_expr("PushprobeAIRateLimitHeadroomLow"))
        .await;
    assert_eq!(
        probes_in(&headroom),
        BTreeSet::from(["ai-limited".to_string()])
    );
    for r in &headroom {
        // Requests have 99.9 % left: only tokens are short, at exactly the announced share.
        assert_eq!(r.labels["resource"], "tokens", "{r:?}");
        let share = TOKENS_REMAINING as f64 / TOKEN_LIMIT as f64;
        assert!((r.value - share).abs() < 1e-9, "{r:?}");
    }
    for (alert, probe) in [
        ("PushprobeAIModelSubstituted", "ai-substituted"),
        ("PushprobeAIStreamStalls", "ai-stalling"),
        ("PushprobeAIAnswerMismatch", "ai-canary"),
    ] {
        let got = prom.wait_for_any(&alert_expr(alert)).await;
        assert_eq!(
            probes_in(&got),
            BTreeSet::from([probe.to_string()]),
            "{alert}: {got:?}"
        );
    }
    // The info series names the model that really answered.
    let answered = prom
        .wait_for_any("pushprobe_ai_answering_model_info{probe=\"ai-substituted\"}")
        .await;
    for r in &answered {
        assert_eq!(r.labels["requested_model"], "gpt-4.1", "{r:?}");
        assert_eq!(r.labels["answering_model"], SUBSTITUTE_MODEL, "{r:?}");
    }
    // Only the drifting relay changes its fingerprint; only the stalling one drops usage.
    let drifted = prom
        .wait_for_any(
            "sum by (probe) (increase(pushprobe_ai_system_fingerprint_changes_total[5m])) > 0",
        )
        .await;
    assert_eq!(
        probes_in(&drifted),
        BTreeSet::from(["ai-drifting".to_string()])
    );
    let anomalies = prom
        .wait_for_any("sum by (probe, anomaly) (pushprobe_ai_stream_anomalies_total) > 0")
        .await;
    assert_eq!(
        probes_in(&anomalies),
        BTreeSet::from(["ai-stalling".to_string()])
    );
    assert!(
        anomalies
            .iter()
            .all(|r| r.labels["anomaly"] == "missing_usage"),
        "{anomalies:?}"
    );

    // Both agents are alive: nobody stopped pushing.
    assert!(prom
        .query(&alert_expr("PushprobeAgentStoppedPushing"))
        .await
        .is_empty());

    let done = running.terminate(Duration::from_secs(60)).await;
    done.assert_code(0);
}
