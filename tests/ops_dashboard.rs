//! Every query of ops/grafana-dashboard.json returns data from a real Prometheus fed by the
//! real pushprobe binary, and the alert expressions pick out exactly the failing targets.
//!
//! Two agents push (one `run`, one `once`, with different external labels), so aggregations
//! that only work for a single agent fail here. The targets are local: one that answers 200,
//! one that answers 500, a port nobody listens on, an HTTPS server whose certificate expires
//! in a week, and an OpenAI-compatible server probed with a good key (priced and unpriced
//! models), a wrong key, and a daily spend limit so small that the guard engages.

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
            |r| probes_in(r).len() == 3,
            DATA_TIMEOUT,
        )
        .await;
    assert_eq!(
        probes_in(&down),
        BTreeSet::from([
            "ai-bad-key".to_string(),
            "closed-port".to_string(),
            "server-error".to_string()
        ]),
        "{down:?}"
    );
    // One per failing target and agent: the two agents are different sites.
    assert_eq!(down.len(), 6, "{down:?}");

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
    // code says the key itself is invalid); the good key's never fail.
    let ai_errors = prom
        .wait_for_any(&alert_expr("PushprobeAIErrorRatioHigh"))
        .await;
    assert_eq!(
        probes_in(&ai_errors),
        BTreeSet::from(["ai-bad-key".to_string()])
    );
    for r in &ai_errors {
        assert_eq!(r.labels["reason"], "invalid_api_key", "{r:?}");
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

    // Both agents are alive: nobody stopped pushing.
    assert!(prom
        .query(&alert_expr("PushprobeAgentStoppedPushing"))
        .await
        .is_empty());

    let done = running.terminate(Duration::from_secs(60)).await;
    done.assert_code(0);
}
