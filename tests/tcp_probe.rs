//! Loopback tests of the TCP probe: every peer is a listener started here on 127.0.0.1 or ::1,
//! port 0. Assertions are on outcomes, reasons and series, never on elapsed time. At the end,
//! the same dialogue against the blackbox exporter (series parity) and through a real
//! Prometheus (what a receiver stores).

mod common;

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pushprobe::config::{IpProtocol, QueryStep, TcpProbeSettings, TlsConfig};
use pushprobe::probe::tcp::TcpProbe;
use pushprobe::probe::ProbeReport;
use pushprobe::series::{MetricType, Registry};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

// ---------------------------------------------------------------------------------------
// Peers

/// Accepts connections on `bind` (`127.0.0.1:0`, `[::1]:0`) and hands each to `handler`.
async fn serve_on<H, F>(bind: &str, handler: H) -> SocketAddr
where
    H: Fn(TcpStream) -> F + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind(bind).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(handler(stream));
        }
    });
    addr
}

async fn serve<H, F>(handler: H) -> SocketAddr
where
    H: Fn(TcpStream) -> F + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    serve_on("127.0.0.1:0", handler).await
}

/// Reads one line, without its ending; empty at the end of the stream.
async fn line<S: AsyncRead + Unpin>(r: &mut BufReader<S>) -> String {
    let mut l = String::new();
    let _ = r.read_line(&mut l).await;
    l.trim_end_matches(['\r', '\n']).to_string()
}

async fn say<S: AsyncWrite + Unpin>(w: &mut S, text: &str) {
    let _ = w.write_all(text.as_bytes()).await;
    let _ = w.flush().await;
}

/// An SMTP-like peer: banner, then answers EHLO and QUIT; every line it gets goes to `seen`.
async fn smtp(stream: TcpStream, seen: mpsc::UnboundedSender<String>) {
    let mut s = BufReader::new(stream);
    say(s.get_mut(), "220 mx.test ESMTP ready\r\n").await;
    loop {
        let l = line(&mut s).await;
        if l.is_empty() {
            return;
        }
        let _ = seen.send(l.clone());
        if l.starts_with("EHLO ") {
            say(s.get_mut(), "250-mx.test greets you\r\n250 SIZE 1000\r\n").await;
        } else if l == "QUIT" {
            say(s.get_mut(), "221 bye\r\n").await;
            return;
        } else {
            say(s.get_mut(), "500 unknown\r\n").await;
        }
    }
}

/// A peer that sends `lines` and closes.
async fn canned(mut stream: TcpStream, lines: &'static str) {
    say(&mut stream, lines).await;
    let _ = stream.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Helpers

fn settings(target: SocketAddr) -> TcpProbeSettings {
    let target = target.to_string();
    let (host, port) = pushprobe::config::tcp::split_target(&target).unwrap();
    TcpProbeSettings {
        name: "mail".into(),
        target,
        host,
        port,
        interval: Duration::from_secs(30),
        timeout: Duration::from_secs(10),
        tls: false,
        tls_config: TlsConfig::default(),
        preferred_ip_protocol: IpProtocol::Ip6,
        ip_protocol_fallback: true,
        source_ip_address: None,
        query_response: vec![],
        labels: vec![("team".into(), "core".into())],
    }
}

fn expect(pattern: &str) -> QueryStep {
    QueryStep {
        expect: Some(regex::bytes::Regex::new(pattern).unwrap()),
        send: None,
        starttls: false,
    }
}

fn expect_send(pattern: &str, send: &str) -> QueryStep {
    QueryStep {
        send: Some(send.into()),
        ..expect(pattern)
    }
}

fn send(text: &str) -> QueryStep {
    QueryStep {
        expect: None,
        send: Some(text.into()),
        starttls: false,
    }
}

async fn run(s: &TcpProbeSettings) -> (ProbeReport, Registry) {
    let mut probe = TcpProbe::new(s.clone()).unwrap();
    let mut registry = Registry::new();
    let report = probe.run(&mut registry).await;
    (report, registry)
}

fn gauge(r: &Registry, s: &TcpProbeSettings, name: &str) -> Option<f64> {
    r.value(
        name,
        &[
            ("probe", s.name.as_str()),
            ("instance", s.target.as_str()),
            ("team", "core"),
        ],
    )
}

fn tls_version(r: &Registry, s: &TcpProbeSettings, version: &str) -> Option<f64> {
    r.value(
        "probe_tls_version_info",
        &[
            ("probe", s.name.as_str()),
            ("instance", s.target.as_str()),
            ("team", "core"),
            ("version", version),
        ],
    )
}

fn detail(report: &ProbeReport, key: &str) -> Option<String> {
    report
        .details
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| match v {
            pushprobe::probe::Detail::Text(t) => t.clone(),
            other => format!("{other:?}"),
        })
}

/// The names of the series a registry holds.
fn series_names(r: &Registry) -> BTreeSet<String> {
    r.samples_at(0)
        .iter()
        .map(|s| s.labels.metric_name().to_string())
        .collect()
}

// ---------------------------------------------------------------------------------------
// Plain TCP

#[tokio::test]
async fn a_connection_alone_succeeds_with_the_blackbox_series() {
    let addr = serve(|s| canned(s, "")).await;
    let s = settings(addr);
    let (report, r) = run(&s).await;
    assert!(report.success, "{report:?}");
    assert_eq!(report.status, "ok");
    assert_eq!(report.reason, None);
    assert_eq!(gauge(&r, &s, "probe_success"), Some(1.0));
    assert_eq!(gauge(&r, &s, "probe_ip_protocol"), Some(4.0));
    // What blackbox_exporter 0.28 reports for 127.0.0.1.
    assert_eq!(gauge(&r, &s, "probe_ip_addr_hash"), Some(3_668_918_509.0));
    assert_eq!(gauge(&r, &s, "probe_failed_due_to_regex"), Some(0.0));
    assert_eq!(gauge(&r, &s, "probe_failed_due_to_bytes"), Some(0.0));
    assert!(gauge(&r, &s, "probe_duration_seconds").is_some());
    assert!(gauge(&r, &s, "probe_dns_lookup_time_seconds").is_some());
    assert_eq!(gauge(&r, &s, "probe_ssl_earliest_cert_expiry"), None);
    for f in r.families() {
        assert!(!f.meta.help.is_empty(), "{} has no help", f.meta.name);
        assert_eq!(f.meta.kind, MetricType::Gauge, "{}", f.meta.name);
    }
    // An IPv4 literal with ip6 preferred: the fallback was used.
    assert_eq!(
        detail(&report, "ip_protocol_fallback").as_deref(),
        Some("Flag(true)")
    );
    assert_eq!(detail(&report, "address"), Some(addr.to_string()));
}

#[tokio::test]
async fn a_refused_connection_fails_and_names_the_address() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let s = settings(SocketAddr::from(([127, 0, 0, 1], port)));
    let (report, r) = run(&s).await;
    assert!(!report.success);
    assert_eq!(report.status, "connect");
    let reason = report.reason.unwrap();
    assert!(
        reason.starts_with(&format!("connecting to 127.0.0.1:{port}: ")),
        "{reason}"
    );
    assert_eq!(gauge(&r, &s, "probe_success"), Some(0.0));
    assert_eq!(gauge(&r, &s, "probe_ip_protocol"), Some(4.0));
    assert_eq!(gauge(&r, &s, "probe_failed_due_to_regex"), Some(0.0));
}

#[tokio::test]
async fn an_smtp_dialogue_sends_lines_with_groups_of_the_match() {
    let (tx, mut seen) = mpsc::unbounded_channel();
    let addr = serve(move |st| smtp(st, tx.clone())).await;
    let mut s = settings(addr);
    s.query_response = vec![
        expect_send(r"^220 (\S+) ESMTP", "EHLO ${1}"),
        expect_send("^250 ", "QUIT"),
        expect("^221"),
    ];
    let (report, r) = run(&s).await;
    assert!(report.success, "{report:?}");
    assert_eq!(gauge(&r, &s, "probe_failed_due_to_regex"), Some(0.0));
    assert_eq!(seen.recv().await.as_deref(), Some("EHLO mx.test"));
    assert_eq!(seen.recv().await.as_deref(), Some("QUIT"));
    assert_eq!(
        detail(&report, "steps_completed").as_deref(),
        Some("3 of 3")
    );
    assert_eq!(detail(&report, "last_line").as_deref(), Some("221 bye"));
}

#[tokio::test]
async fn a_line_that_never_matches_fails_due_to_regex_naming_the_step() {
    let addr = serve(|st| canned(st, "220 hello\r\nERR not today\r\nERR still no\r\n")).await;
    let mut s = settings(addr);
    s.query_response = vec![expect("^220"), expect("^OK")];
    let (report, r) = run(&s).await;
    assert!(!report.success);
    assert_eq!(report.status, "no_match");
    assert_eq!(
        report.reason.as_deref(),
        Some("query_response[1]: expected /^OK/ but the peer closed the connection")
    );
    assert_eq!(gauge(&r, &s, "probe_failed_due_to_regex"), Some(1.0));
    assert_eq!(gauge(&r, &s, "probe_success"), Some(0.0));
    assert_eq!(
        detail(&report, "last_line").as_deref(),
        Some("ERR still no")
    );
    assert_eq!(
        detail(&report, "steps_completed").as_deref(),
        Some("1 of 2")
    );
}

#[tokio::test]
async fn a_peer_that_never_answers_times_out_in_its_step() {
    let addr = serve(|st| async move {
        let _keep = st;
        std::future::pending::<()>().await;
    })
    .await;
    let mut s = settings(addr);
    s.timeout = Duration::from_millis(300);
    s.query_response = vec![expect("^220")];
    let (report, r) = run(&s).await;
    assert!(!report.success);
    assert_eq!(report.status, "timeout");
    assert_eq!(
        report.reason.as_deref(),
        Some("query_response[0]: timed out after 300ms waiting for a line matching /^220/")
    );
    // A timeout is not a regex failure, as in the blackbox exporter.
    assert_eq!(gauge(&r, &s, "probe_failed_due_to_regex"), Some(0.0));
}

#[tokio::test]
async fn a_100_mb_flood_without_newline_fails_the_step_and_is_not_read_to_the_end() {
    const FLOOD: usize = 100 * 1024 * 1024;
    let written = Arc::new(AtomicUsize::new(0));
    let (done_tx, mut done) = mpsc::unbounded_channel();
    let w = written.clone();
    let addr = serve(move |mut st| {
        let (w, done_tx) = (w.clone(), done_tx.clone());
        async move {
            let chunk = vec![b'x'; 64 * 1024];
            while w.load(Ordering::SeqCst) < FLOOD {
                match st.write(&chunk).await {
                    Ok(n) if n > 0 => {
                        w.fetch_add(n, Ordering::SeqCst);
                    }
                    _ => break,
                }
            }
            let _ = done_tx.send(());
        }
    })
    .await;
    let mut s = settings(addr);
    s.query_response = vec![expect("^220")];
    let (report, r) = run(&s).await;
    assert!(!report.success);
    assert_eq!(report.status, "line_too_long");
    assert_eq!(
        report.reason.as_deref(),
        Some("query_response[0]: expected /^220/ but the peer sent a line longer than 65536 bytes")
    );
    assert_eq!(gauge(&r, &s, "probe_success"), Some(0.0));
    // The probe hung up: the peer's writes fail long before its 100 MB are out.
    tokio::time::timeout(Duration::from_secs(60), done.recv())
        .await
        .expect("the flooding peer never noticed the probe hung up");
    assert!(written.load(Ordering::SeqCst) < FLOOD);
}

#[tokio::test]
async fn source_ip_address_is_used_and_must_match_the_family() {
    let (tx, mut peers) = mpsc::unbounded_channel();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((_s, peer)) = listener.accept().await {
            let _ = tx.send(peer);
        }
    });
    let mut s = settings(addr);
    s.source_ip_address = Some("127.0.0.1".parse().unwrap());
    let (report, _) = run(&s).await;
    assert!(report.success, "{report:?}");
    assert_eq!(peers.recv().await.map(|p| p.ip()), s.source_ip_address);

    s.source_ip_address = Some("::1".parse().unwrap());
    let (report, _) = run(&s).await;
    assert_eq!(report.status, "source_address");
    assert!(
        report
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("not the same IP version"),
        "{report:?}"
    );
}

// ---------------------------------------------------------------------------------------
// IPv6 and the family preference

#[tokio::test]
async fn ipv6_targets_and_the_preference_with_and_without_fallback() {
    let v6 = serve_on("[::1]:0", |st| canned(st, "hello\n")).await;
    let s = settings(v6);
    assert_eq!(s.target, format!("[::1]:{}", v6.port()));
    let (report, r) = run(&s).await;
    assert!(report.success, "{report:?}");
    assert_eq!(gauge(&r, &s, "probe_ip_protocol"), Some(6.0));
    assert_eq!(gauge(&r, &s, "probe_ip_addr_hash"), Some(1_751_717_746.0));
    assert_eq!(detail(&report, "ip_protocol_fallback"), None);

    // ip4 preferred, only an IPv6 address: the fallback takes it.
    let mut s4 = settings(v6);
    s4.preferred_ip_protocol = IpProtocol::Ip4;
    let (report, r) = run(&s4).await;
    assert!(report.success, "{report:?}");
    assert_eq!(gauge(&r, &s4, "probe_ip_protocol"), Some(6.0));

    // Without the fallback there is no address to use.
    s4.ip_protocol_fallback = false;
    let (report, r) = run(&s4).await;
    assert!(!report.success);
    assert_eq!(report.status, "resolve");
    assert_eq!(
        report.reason.as_deref(),
        Some("::1 has no IPv4 address (ip_protocol_fallback = false)")
    );
    assert_eq!(gauge(&r, &s4, "probe_ip_protocol"), Some(0.0));

    let v4 = serve(|st| canned(st, "")).await;
    let mut s6 = settings(v4);
    s6.ip_protocol_fallback = false;
    let (report, _) = run(&s6).await;
    assert_eq!(
        report.reason.as_deref(),
        Some("127.0.0.1 has no IPv6 address (ip_protocol_fallback = false)")
    );
}

// ---------------------------------------------------------------------------------------
// TLS

struct TestCert {
    der: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    pem: String,
    not_after: i64,
}

fn test_cert() -> TestCert {
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]);
    let mut params = params.unwrap();
    params.not_after = rcgen::date_time_ymd(2031, 5, 17);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    TestCert {
        der: cert.der().clone(),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        pem: cert.pem(),
        not_after: params.not_after.unix_timestamp(),
    }
}

fn acceptor(cert: &TestCert) -> tokio_rustls::TlsAcceptor {
    let config = rustls::ServerConfig::builder_with_provider(pushprobe::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der.clone()], cert.key.clone_key())
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

fn ca_file(cert: &TestCert) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut f, cert.pem.as_bytes()).unwrap();
    f
}

#[tokio::test]
async fn tls_from_the_start_records_the_certificate_expiry() {
    let cert = test_cert();
    let acc = acceptor(&cert);
    let addr = serve(move |st| {
        let acc = acc.clone();
        async move {
            if let Ok(mut tls) = acc.accept(st).await {
                say(&mut tls, "+OK POP3 ready\r\n").await;
                let _ = tls.shutdown().await;
            }
        }
    })
    .await;
    let ca = ca_file(&cert);
    let mut s = settings(addr);
    s.tls = true;
    s.tls_config.ca_file = Some(ca.path().to_path_buf());
    s.query_response = vec![expect(r"^\+OK")];
    let (report, r) = run(&s).await;
    assert!(report.success, "{report:?}");
    assert_eq!(
        gauge(&r, &s, "probe_ssl_earliest_cert_expiry"),
        Some(cert.not_after as f64)
    );
    assert_eq!(
        gauge(&r, &s, "probe_ssl_last_chain_expiry_timestamp_seconds"),
        Some(cert.not_after as f64)
    );
    assert_eq!(tls_version(&r, &s, "TLS 1.3"), Some(1.0));
    assert_eq!(
        detail(&report, "cert_not_after").as_deref(),
        Some("2031-05-17T00:00:00Z")
    );

    // A name the certificate does not cover fails the handshake.
    let mut wrong = s.clone();
    wrong.tls_config.server_name = Some("other.example".into());
    let (report, r) = run(&wrong).await;
    assert_eq!(report.status, "tls");
    assert!(
        report
            .reason
            .as_deref()
            .unwrap_or("")
            .starts_with("TLS handshake with other.example: "),
        "{report:?}"
    );
    assert_eq!(gauge(&r, &s, "probe_ssl_earliest_cert_expiry"), None);
}

#[tokio::test]
async fn tls_series_are_removed_when_a_later_run_has_no_handshake() {
    let cert = test_cert();
    let acc = acceptor(&cert);
    let connections = Arc::new(AtomicUsize::new(0));
    let addr = serve(move |st| {
        let (acc, n) = (acc.clone(), connections.fetch_add(1, Ordering::SeqCst));
        async move {
            // The first connection gets TLS; later ones are closed before any handshake.
            if n == 0 {
                if let Ok(mut tls) = acc.accept(st).await {
                    let _ = tls.shutdown().await;
                }
            }
        }
    })
    .await;
    let ca = ca_file(&cert);
    let mut s = settings(addr);
    s.tls = true;
    s.tls_config.ca_file = Some(ca.path().to_path_buf());
    let mut probe = TcpProbe::new(s.clone()).unwrap();
    let mut r = Registry::new();
    assert!(probe.run(&mut r).await.success);
    assert_eq!(tls_version(&r, &s, "TLS 1.3"), Some(1.0));
    let report = probe.run(&mut r).await;
    assert_eq!(report.status, "tls", "{report:?}");
    assert_eq!(gauge(&r, &s, "probe_success"), Some(0.0));
    assert_eq!(gauge(&r, &s, "probe_ssl_earliest_cert_expiry"), None);
    assert_eq!(
        gauge(&r, &s, "probe_ssl_last_chain_expiry_timestamp_seconds"),
        None
    );
    assert_eq!(tls_version(&r, &s, "TLS 1.3"), None);
}

/// An SMTP peer that offers STARTTLS: plain banner, `STARTTLS`, handshake, then an EHLO over
/// TLS; the lines it got over TLS go to `seen`.
async fn starttls_peer(
    stream: TcpStream,
    acc: tokio_rustls::TlsAcceptor,
    seen: mpsc::UnboundedSender<String>,
) {
    let mut s = BufReader::new(stream);
    say(s.get_mut(), "220 mx.test ESMTP\r\n").await;
    if line(&mut s).await != "STARTTLS" {
        say(s.get_mut(), "503 STARTTLS first\r\n").await;
        return;
    }
    say(s.get_mut(), "220 go ahead\r\n").await;
    let Ok(tls) = acc.accept(s.into_inner()).await else {
        return;
    };
    let mut t = BufReader::new(tls);
    let l = line(&mut t).await;
    let _ = seen.send(l.clone());
    say(t.get_mut(), &format!("250 secure {l}\r\n")).await;
}

#[tokio::test]
async fn starttls_upgrades_the_connection_in_place() {
    let cert = test_cert();
    let acc = acceptor(&cert);
    let (tx, mut seen) = mpsc::unbounded_channel();
    let addr = serve(move |st| starttls_peer(st, acc.clone(), tx.clone())).await;
    let ca = ca_file(&cert);
    let mut s = settings(addr);
    s.tls_config.ca_file = Some(ca.path().to_path_buf());
    s.query_response = vec![
        expect_send("^220 ", "STARTTLS"),
        QueryStep {
            starttls: true,
            ..expect("^220 go ahead")
        },
        send("EHLO prober"),
        expect("^250 secure EHLO prober"),
    ];
    let (report, r) = run(&s).await;
    assert!(report.success, "{report:?}");
    assert_eq!(seen.recv().await.as_deref(), Some("EHLO prober"));
    assert_eq!(
        gauge(&r, &s, "probe_ssl_earliest_cert_expiry"),
        Some(cert.not_after as f64)
    );
    assert_eq!(tls_version(&r, &s, "TLS 1.3"), Some(1.0));

    // Without a trusted CA the upgrade fails in its step.
    s.tls_config.ca_file = None;
    let (report, r) = run(&s).await;
    assert_eq!(report.status, "starttls");
    assert!(
        report
            .reason
            .as_deref()
            .unwrap_or("")
            .starts_with("query_response[1]: STARTTLS handshake with 127.0.0.1: "),
        "{report:?}"
    );
    assert_eq!(gauge(&r, &s, "probe_ssl_earliest_cert_expiry"), None);
}

// ---------------------------------------------------------------------------------------
// Against the blackbox exporter and a real receiver

/// The `name value` lines of a text exposition, without comments and labels.
fn exposition_values(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            let name = name.split('{').next()?.to_string();
            Some((name, value.parse().ok()?))
        })
        .collect()
}

/// Runs the blackbox exporter with one `tcp` module per `(name, yaml)` and returns its
/// `/probe` answers for `target`, one per module; `None` when it is not installed.
async fn blackbox_probe(modules: &[(&str, &str)], target: SocketAddr) -> Option<Vec<String>> {
    let bin = common::require_tool("prometheus-blackbox-exporter-0.28.0")?;
    let dir = tempfile::tempdir().unwrap();
    let mut yaml = String::from("modules:\n");
    for (name, body) in modules {
        yaml.push_str(&format!(
            "  {name}:\n    prober: tcp\n    timeout: 5s\n{body}"
        ));
    }
    let config = dir.path().join("blackbox.yml");
    std::fs::write(&config, yaml).unwrap();
    let port = common::free_port();
    let mut cmd = std::process::Command::new(bin);
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"));
    let _guard = common::ChildGuard::spawn("blackbox", cmd, dir.path()).unwrap();
    let client = common::http_client();
    let deadline = tokio::time::Instant::now() + common::STARTUP_TIMEOUT;
    while common::http_get_text(&client, &format!("http://127.0.0.1:{port}/-/healthy"))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the blackbox exporter did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut answers = Vec::new();
    for (name, _) in modules {
        let url = format!("http://127.0.0.1:{port}/probe?module={name}&target={target}");
        answers.push(common::http_get_text(&client, &url).await.unwrap());
    }
    Some(answers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_and_values_match_the_blackbox_exporter() {
    let (tx, _seen) = mpsc::unbounded_channel();
    let addr = serve(move |st| smtp(st, tx.clone())).await;
    let dialogue = "    tcp:\n      query_response:\n\
                    \x20       - expect: \"^220 (\\\\S+) ESMTP\"\n\
                    \x20         send: \"EHLO ${1}\"\n\
                    \x20       - expect: \"^250 \"\n\
                    \x20         send: \"QUIT\"\n\
                    \x20       - expect: \"^221\"\n";
    let mismatch = "    tcp:\n      query_response:\n        - expect: \"^OK\"\n";
    let Some(answers) = blackbox_probe(&[("smtp", dialogue), ("mismatch", mismatch)], addr).await
    else {
        return;
    };

    let mut ok = settings(addr);
    ok.query_response = vec![
        expect_send(r"^220 (\S+) ESMTP", "EHLO ${1}"),
        expect_send("^250 ", "QUIT"),
        expect("^221"),
    ];
    let mut bad = settings(addr);
    bad.query_response = vec![expect("^OK")];
    for (s, answer) in [(ok, &answers[0]), (bad, &answers[1])] {
        let theirs = exposition_values(answer);
        let (_, r) = run(&s).await;
        let names: BTreeSet<String> = theirs.iter().map(|(n, _)| n.clone()).collect();
        assert_eq!(series_names(&r), names, "blackbox answered:\n{answer}");
        for (name, value) in &theirs {
            if name.ends_with("_seconds") {
                continue;
            }
            assert_eq!(gauge(&r, &s, name), Some(*value), "{name}\n{answer}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_stores_the_tcp_probe_series() {
    let Some(prom) = common::Prometheus::start().await else {
        return;
    };
    let (tx, _seen) = mpsc::unbounded_channel();
    let addr = serve(move |st| smtp(st, tx.clone())).await;
    let mut config = common::basic_config(&prom.write_url(), &[], "10s");
    config.push_str(&format!(
        "\n[[probe]]\nname = \"mx\"\nkind = \"tcp\"\ntarget = \"{addr}\"\n\
         interval = \"10s\"\ntimeout = \"5s\"\n\
         [[probe.query_response]]\nexpect = '^220 (\\S+)'\nsend = 'EHLO ${{1}}'\n\
         [[probe.query_response]]\nexpect = '^250 '\n"
    ));
    let agent = common::Pushprobe::with_config(&config);
    agent.once().await.assert_code(0);

    use common::QueryApi as _;
    let target = addr.to_string();
    let want = [("probe", "mx"), ("instance", target.as_str())];
    let success = prom.wait_for_any(r#"probe_success{probe="mx"}"#).await;
    let s = common::only(&success, &want);
    assert_eq!(s.value, 1.0);
    assert_eq!(s.labels["cluster"], "edge-1", "external label missing");
    let regex = prom
        .wait_for_any(r#"probe_failed_due_to_regex{probe="mx"}"#)
        .await;
    assert_eq!(common::only(&regex, &want).value, 0.0);
    let proto = prom.wait_for_any(r#"probe_ip_protocol{probe="mx"}"#).await;
    assert_eq!(common::only(&proto, &want).value, 4.0);

    // `check` names the step that failed, here by waiting for a line that never comes.
    agent.rewrite_config(
        &config
            .replace("'^250 '", "'^OK'")
            .replace("timeout = \"5s\"", "timeout = \"1s\""),
    );
    let path = agent.config_path().to_string_lossy().into_owned();
    let run = agent
        .run_to_end(
            "check",
            &["check", "--config", &path, "--verbose"],
            Duration::from_secs(120),
        )
        .await;
    run.assert_code(1);
    assert!(
        run.stdout
            .contains("query_response[1]: timed out after 1s waiting for a line matching /^OK/"),
        "{}",
        run.stdout
    );
}

#[test]
fn the_example_validates() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/tcp-probes.toml");
    let out = std::process::Command::new(common::pushprobe_bin())
        .args(["config", "check", "--config", path])
        .env_remove("PUSHPROBE_LOG_LEVEL")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    for name in ["postgres-port", "ssh", "redis", "mail", "imaps"] {
        assert!(stdout.contains(name), "{name} missing from:\n{stdout}");
    }
}
