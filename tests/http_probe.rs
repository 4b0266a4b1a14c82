//! Loopback tests of the HTTP probe and its client: every target is a server started here on
//! port 0. Assertions are on outcomes, phases and series, never on elapsed time.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use pushprobe::config::{HttpProbeSettings, TlsConfig, DEFAULT_BUCKETS};
use pushprobe::http_client::{ClientError, HttpClient, KeepAlive, Phase, Request, Trace};
use pushprobe::probe::http::HttpProbe;
use pushprobe::series::{MetricType, Registry};
use reqwest::Url;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

// ---------------------------------------------------------------------------------------
// Test targets

/// Accepts connections on 127.0.0.1 and hands each to `handler`.
async fn serve<H, F>(handler: H) -> SocketAddr
where
    H: Fn(TcpStream) -> F + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(handler(stream));
        }
    });
    addr
}

/// A received request: its head (request line and headers) and body.
#[derive(Debug, Clone)]
struct Received {
    head: String,
    body: Vec<u8>,
}

impl Received {
    fn request_line(&self) -> &str {
        self.head.lines().next().unwrap_or("")
    }

    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// Reads one request (head, then a `Content-Length` body if any).
async fn read_request<S: AsyncRead + Unpin>(s: &mut S) -> Received {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            break buf.len();
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut body = buf[end..].to_vec();
    let mut received = Received { head, body: vec![] };
    let len: usize = received
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while body.len() < len {
        let n = s.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    received.body = body;
    received
}

/// Reads a request, reports it on `seen`, and writes `response`.
async fn canned<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    response: &'static [u8],
    seen: Option<mpsc::UnboundedSender<Received>>,
) {
    let r = read_request(&mut s).await;
    if let Some(tx) = seen {
        let _ = tx.send(r);
    }
    let _ = s.write_all(response).await;
    let _ = s.shutdown().await;
}

/// A server answering every request with `response`.
async fn canned_server(response: &'static [u8]) -> SocketAddr {
    serve(move |s| canned(s, response, None)).await
}

/// A server answering every request with `response` and reporting the requests.
async fn recording_server(
    response: &'static [u8],
) -> (SocketAddr, mpsc::UnboundedReceiver<Received>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let addr = serve(move |s| canned(s, response, Some(tx.clone()))).await;
    (addr, rx)
}

/// Reads the request and then never answers, holding the connection open.
async fn silent<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, head: &'static [u8]) {
    let _ = read_request(&mut s).await;
    let _ = s.write_all(head).await;
    let _ = s.flush().await;
    std::future::pending::<()>().await;
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";

// ---------------------------------------------------------------------------------------
// Helpers

fn settings(url: &str) -> HttpProbeSettings {
    HttpProbeSettings {
        name: "web".into(),
        url: Url::parse(url).unwrap(),
        interval: Duration::from_secs(30),
        timeout: Duration::from_secs(5),
        method: Method::GET,
        headers: vec![],
        body: None,
        valid_status_codes: vec![],
        follow_redirects: true,
        auth: None,
        tls: TlsConfig::default(),
        proxy: Default::default(),
        buckets: Arc::from(DEFAULT_BUCKETS),
        labels: vec![("team".into(), "core".into())],
        checks: Default::default(),
    }
}

fn url_of(addr: SocketAddr, path: &str) -> String {
    format!("http://{addr}{path}")
}

/// The probe's own labels plus `extra`.
fn labels<'a>(s: &'a HttpProbeSettings, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut l = vec![
        ("probe", s.name.as_str()),
        ("instance", s.url.as_str()),
        ("team", "core"),
    ];
    l.extend_from_slice(extra);
    l
}

fn gauge(r: &Registry, s: &HttpProbeSettings, name: &str) -> Option<f64> {
    r.value(name, &labels(s, &[]))
}

fn phase_gauge(r: &Registry, s: &HttpProbeSettings, phase: &str) -> Option<f64> {
    r.value(
        "probe_http_duration_seconds",
        &labels(s, &[("phase", phase)]),
    )
}

fn requests(r: &Registry, s: &HttpProbeSettings, code: &str, error: &str) -> Option<f64> {
    r.value(
        "pushprobe_probe_requests_total",
        &labels(s, &[("code", code), ("error", error)]),
    )
}

/// The `_count` of the latency histogram, if the histogram has any series.
fn latency_count(r: &Registry) -> Option<f64> {
    r.samples_at(0)
        .into_iter()
        .find(|s| s.labels.metric_name() == "pushprobe_probe_latency_seconds_count")
        .map(|s| s.value)
}

async fn run(s: &HttpProbeSettings) -> (pushprobe::probe::ProbeReport, Registry) {
    let mut probe = HttpProbe::new(s.clone()).unwrap();
    let mut registry = Registry::new();
    let report = probe.run(&mut registry).await;
    (report, registry)
}

fn detail<'a>(report: &'a pushprobe::probe::ProbeReport, key: &str) -> Option<&'a str> {
    report
        .details
        .iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| v.as_text())
}

// ---------------------------------------------------------------------------------------
// HTTP probe

#[tokio::test]
async fn success_records_every_blackbox_series() {
    let (addr, mut seen) = recording_server(OK).await;
    let mut s = settings(&url_of(addr, "/health?x=1"));
    s.headers = vec![("x-check".into(), "yes".into())];
    let (report, r) = run(&s).await;

    assert!(report.success, "{report:?}");
    assert_eq!(report.status, "200");
    assert_eq!(report.reason, None);
    assert_eq!(gauge(&r, &s, "probe_success"), Some(1.0));
    assert_eq!(gauge(&r, &s, "probe_http_status_code"), Some(200.0));
    for phase in ["resolve", "connect", "tls", "processing", "transfer"] {
        assert!(
            phase_gauge(&r, &s, phase).is_some(),
            "phase {phase} missing"
        );
    }
    assert_eq!(phase_gauge(&r, &s, "tls"), Some(0.0));
    assert_eq!(gauge(&r, &s, "probe_http_content_length"), Some(5.0));
    assert_eq!(
        gauge(&r, &s, "probe_http_uncompressed_body_length"),
        Some(5.0)
    );
    assert_eq!(gauge(&r, &s, "probe_http_redirects"), Some(0.0));
    assert_eq!(gauge(&r, &s, "probe_http_ssl"), Some(0.0));
    assert_eq!(gauge(&r, &s, "probe_http_version"), Some(1.1));
    assert_eq!(gauge(&r, &s, "probe_ip_protocol"), Some(4.0));
    assert!(gauge(&r, &s, "probe_duration_seconds").is_some());
    assert_eq!(gauge(&r, &s, "probe_ssl_earliest_cert_expiry"), None);
    assert_eq!(requests(&r, &s, "200", "none"), Some(1.0));
    assert_eq!(latency_count(&r), Some(1.0));

    // HELP and TYPE exist for every family recorded.
    for f in r.families() {
        assert!(!f.meta.help.is_empty(), "{} has no help", f.meta.name);
        assert_ne!(f.meta.kind, MetricType::Unknown, "{}", f.meta.name);
    }

    let req = seen.recv().await.unwrap();
    assert_eq!(req.request_line(), "GET /health?x=1 HTTP/1.1");
    assert_eq!(req.header("host"), Some(addr.to_string()));
    assert_eq!(
        req.header("user-agent"),
        Some(format!("pushprobe/{}", env!("CARGO_PKG_VERSION")))
    );
    assert_eq!(req.header("connection").as_deref(), Some("close"));
    assert_eq!(req.header("x-check").as_deref(), Some("yes"));
}

#[tokio::test]
async fn server_error_fails_and_counts_its_code() {
    let addr =
        canned_server(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n").await;
    let s = settings(&url_of(addr, "/"));
    let mut probe = HttpProbe::new(s.clone()).unwrap();
    let mut r = Registry::new();
    let report = probe.run(&mut r).await;
    probe.run(&mut r).await;

    assert!(!report.success);
    assert_eq!(report.status, "500");
    assert!(report.reason.as_deref().is_some_and(|m| m.contains("500")));
    assert_eq!(gauge(&r, &s, "probe_success"), Some(0.0));
    assert_eq!(gauge(&r, &s, "probe_http_status_code"), Some(500.0));
    assert_eq!(requests(&r, &s, "500", "none"), Some(2.0));
    // A complete response, whatever its status, is a latency observation.
    assert_eq!(latency_count(&r), Some(2.0));
}

#[tokio::test]
async fn valid_status_codes_decide_success() {
    let addr = canned_server(b"HTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\n\r\n").await;
    let mut s = settings(&url_of(addr, "/"));
    s.valid_status_codes = vec![200];
    let (report, _) = run(&s).await;
    assert_eq!(
        report.reason.as_deref(),
        Some("status 503 not in valid_status_codes [200]")
    );
    s.valid_status_codes = vec![503];
    let (report, _) = run(&s).await;
    assert!(report.success, "{report:?}");
}

#[tokio::test]
async fn refused_connection_is_a_connect_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let s = settings(&url_of(addr, "/"));
    let (report, r) = run(&s).await;

    assert!(!report.success);
    assert_eq!(report.status, "connect");
    assert_eq!(
        report.reason,
        Some(format!(
            "connect to {addr} refused: is the service listening?"
        ))
    );
    assert_eq!(detail(&report, "failed_phase"), Some("connect"));
    assert_eq!(gauge(&r, &s, "probe_http_status_code"), Some(0.0));
    assert_eq!(gauge(&r, &s, "probe_ip_protocol"), Some(4.0));
    for phase in ["resolve", "connect", "tls", "processing", "transfer"] {
        assert!(phase_gauge(&r, &s, phase).is_some(), "{phase}");
    }
    assert_eq!(phase_gauge(&r, &s, "processing"), Some(0.0));
    assert_eq!(requests(&r, &s, "none", "connect"), Some(1.0));
    assert_eq!(latency_count(&r), None);
}

#[tokio::test]
async fn slow_first_byte_times_out_in_processing() {
    let addr = serve(|s| silent(s, b"")).await;
    let mut s = settings(&url_of(addr, "/slow"));
    s.timeout = Duration::from_millis(300);
    let (report, r) = run(&s).await;

    assert_eq!(report.status, "timeout");
    assert_eq!(detail(&report, "failed_phase"), Some("processing"));
    assert!(report
        .reason
        .as_deref()
        .is_some_and(|m| m.contains("waiting for the response headers")));
    assert_eq!(requests(&r, &s, "none", "timeout"), Some(1.0));
    assert_eq!(phase_gauge(&r, &s, "transfer"), Some(0.0));
}

#[tokio::test]
async fn endless_body_is_body_too_large() {
    let addr = serve(|mut s: TcpStream| async move {
        let _ = read_request(&mut s).await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await;
        let chunk = format!("4000\r\n{}\r\n", "x".repeat(0x4000));
        while s.write_all(chunk.as_bytes()).await.is_ok() {}
    })
    .await;
    let s = settings(&url_of(addr, "/stream"));
    let (report, r) = run(&s).await;

    assert_eq!(report.status, "body_too_large", "{report:?}");
    assert_eq!(detail(&report, "failed_phase"), Some("transfer"));
    assert_eq!(gauge(&r, &s, "probe_http_status_code"), Some(200.0));
    assert_eq!(gauge(&r, &s, "probe_http_content_length"), Some(-1.0));
    assert_eq!(requests(&r, &s, "200", "body_too_large"), Some(1.0));
    assert_eq!(latency_count(&r), None);
}

#[tokio::test]
async fn declared_oversized_body_fails_before_reading_it() {
    // The body never comes: only the declared length can end this run before the timeout.
    let addr = serve(|s| silent(s, b"HTTP/1.1 200 OK\r\nContent-Length: 2000000000\r\n\r\n")).await;
    let s = settings(&url_of(addr, "/big"));
    let (report, r) = run(&s).await;
    assert_eq!(report.status, "body_too_large", "{report:?}");
    assert_eq!(
        gauge(&r, &s, "probe_http_uncompressed_body_length"),
        Some(0.0)
    );
}

#[tokio::test]
async fn redirect_is_followed_and_counted() {
    let (tx, mut seen) = mpsc::unbounded_channel();
    let addr = serve(move |mut s: TcpStream| {
        let tx = tx.clone();
        async move {
            let req = read_request(&mut s).await;
            let response: &[u8] = if req.request_line().starts_with("GET /start ") {
                b"HTTP/1.1 302 Found\r\nLocation: final?from=start\r\nContent-Length: 0\r\n\r\n"
            } else {
                OK
            };
            let _ = tx.send(req);
            let _ = s.write_all(response).await;
        }
    })
    .await;
    let s = settings(&url_of(addr, "/start"));
    let (report, r) = run(&s).await;

    assert!(report.success, "{report:?}");
    assert_eq!(gauge(&r, &s, "probe_http_redirects"), Some(1.0));
    assert_eq!(gauge(&r, &s, "probe_http_status_code"), Some(200.0));
    assert_eq!(
        detail(&report, "final_url"),
        Some(url_of(addr, "/final?from=start").as_str())
    );
    assert_eq!(
        seen.recv().await.unwrap().request_line(),
        "GET /start HTTP/1.1"
    );
    assert_eq!(
        seen.recv().await.unwrap().request_line(),
        "GET /final?from=start HTTP/1.1"
    );
}

#[tokio::test]
async fn endless_redirects_are_a_redirect_loop() {
    let addr =
        canned_server(b"HTTP/1.1 302 Found\r\nLocation: /again\r\nContent-Length: 0\r\n\r\n").await;
    let s = settings(&url_of(addr, "/"));
    let (report, r) = run(&s).await;
    assert_eq!(report.status, "redirect_loop", "{report:?}");
    assert_eq!(gauge(&r, &s, "probe_http_redirects"), Some(10.0));
}

#[tokio::test]
async fn redirects_are_reported_not_followed_when_disabled() {
    let addr =
        canned_server(b"HTTP/1.1 302 Found\r\nLocation: /next\r\nContent-Length: 0\r\n\r\n").await;
    let mut s = settings(&url_of(addr, "/"));
    s.follow_redirects = false;
    let (report, r) = run(&s).await;
    assert_eq!(report.status, "302");
    assert!(!report.success);
    assert_eq!(gauge(&r, &s, "probe_http_redirects"), Some(0.0));
}

#[tokio::test]
async fn ipv6_target_reports_ip_protocol_6() {
    let Ok(listener) = TcpListener::bind("[::1]:0").await else {
        // No IPv6 loopback on this machine: nothing to test.
        return;
    };
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(canned(stream, OK, None));
        }
    });
    let s = settings(&format!("http://[::1]:{}/", addr.port()));
    let (report, r) = run(&s).await;
    assert!(report.success, "{report:?}");
    assert_eq!(gauge(&r, &s, "probe_ip_protocol"), Some(6.0));
}

#[tokio::test]
async fn garbage_response_is_an_http_error() {
    let addr = canned_server(b"SSH-2.0-OpenSSH_9.6\r\n\r\n").await;
    let s = settings(&url_of(addr, "/"));
    let (report, r) = run(&s).await;
    assert_eq!(report.status, "http", "{report:?}");
    assert_eq!(requests(&r, &s, "none", "http"), Some(1.0));
}

// ---------------------------------------------------------------------------------------
// HTTPS

struct TestCert {
    der: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    pem: String,
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
        der: cert.der().clone(),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        pem: cert.pem(),
        not_after: params.not_after.unix_timestamp(),
    }
}

/// A TLS acceptor presenting `cert`.
fn acceptor(cert: &TestCert) -> tokio_rustls::TlsAcceptor {
    let config = rustls::ServerConfig::builder_with_provider(pushprobe::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der.clone()], cert.key.clone_key())
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// A TLS server answering every request with `response`.
async fn tls_server(cert: &TestCert, response: &'static [u8]) -> SocketAddr {
    let acceptor = acceptor(cert);
    serve(move |tcp| {
        let acceptor = acceptor.clone();
        async move {
            if let Ok(tls) = acceptor.accept(tcp).await {
                canned(tls, response, None).await;
            }
        }
    })
    .await
}

/// A TLS server answering every request with `response`, recording whether each handshake
/// was a full one or resumed a session.
async fn tls_server_recording_handshakes(
    cert: &TestCert,
    response: &'static [u8],
) -> (
    SocketAddr,
    Arc<std::sync::Mutex<Vec<rustls::HandshakeKind>>>,
) {
    let acceptor = acceptor(cert);
    let kinds = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = kinds.clone();
    let addr = serve(move |tcp| {
        let acceptor = acceptor.clone();
        let seen = seen.clone();
        async move {
            if let Ok(tls) = acceptor.accept(tcp).await {
                if let Some(kind) = tls.get_ref().1.handshake_kind() {
                    seen.lock().unwrap().push(kind);
                }
                canned(tls, response, None).await;
            }
        }
    })
    .await;
    (addr, kinds)
}

fn ca_file(cert: &TestCert) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut f, cert.pem.as_bytes()).unwrap();
    f
}

#[tokio::test]
async fn https_with_ca_file_records_certificate_expiry() {
    let cert = test_cert("pushprobe test server");
    let addr = tls_server(&cert, OK).await;
    let ca = ca_file(&cert);
    let mut s = settings(&format!("https://{addr}/"));
    s.tls.ca_file = Some(ca.path().to_path_buf());
    let (report, r) = run(&s).await;

    assert!(report.success, "{report:?}");
    assert_eq!(gauge(&r, &s, "probe_http_ssl"), Some(1.0));
    assert_eq!(
        gauge(&r, &s, "probe_ssl_earliest_cert_expiry"),
        Some(cert.not_after as f64)
    );
    assert_eq!(
        r.value(
            "probe_tls_version_info",
            &labels(&s, &[("version", "TLS 1.3")])
        ),
        Some(1.0)
    );
    assert!(phase_gauge(&r, &s, "tls").is_some());
    assert_eq!(
        detail(&report, "cert_not_after"),
        Some("2031-05-17T00:00:00Z")
    );
}

#[tokio::test]
async fn every_run_does_a_full_tls_handshake() {
    // A resumed session would make the `tls` phase look cheaper than a new client's first
    // connection; the blackbox exporter does a full handshake on every probe, and so must we.
    let cert = test_cert("pushprobe test server");
    let (addr, kinds) = tls_server_recording_handshakes(&cert, OK).await;
    let ca = ca_file(&cert);
    let mut s = settings(&format!("https://{addr}/"));
    s.tls.ca_file = Some(ca.path().to_path_buf());
    let mut probe = HttpProbe::new(s.clone()).unwrap();
    let mut registry = Registry::new();
    for _ in 0..3 {
        assert!(probe.run(&mut registry).await.success);
    }
    assert_eq!(
        *kinds.lock().unwrap(),
        vec![rustls::HandshakeKind::Full; 3],
        "a probe run resumed a TLS session"
    );
}

#[tokio::test]
async fn https_by_name_uses_the_name_for_verification() {
    let cert = test_cert("pushprobe test server");
    let addr = tls_server(&cert, OK).await;
    let ca = ca_file(&cert);
    let mut s = settings(&format!("https://localhost:{}/", addr.port()));
    s.tls.ca_file = Some(ca.path().to_path_buf());
    let (report, r) = run(&s).await;
    assert!(report.success, "{report:?}");
    assert_eq!(gauge(&r, &s, "probe_ip_protocol"), Some(4.0));
}

#[tokio::test]
async fn https_without_the_ca_is_a_tls_error() {
    let cert = test_cert("pushprobe test server");
    let addr = tls_server(&cert, OK).await;
    let mut s = settings(&format!("https://{addr}/"));
    // An empty CA file would be refused at start; trust an unrelated CA instead, so the
    // result does not depend on this machine's system certificates.
    let other = ca_file(&test_cert("unrelated CA"));
    s.tls.ca_file = Some(other.path().to_path_buf());
    let (report, r) = run(&s).await;

    assert!(!report.success);
    assert_eq!(report.status, "tls", "{report:?}");
    assert!(
        report
            .reason
            .as_deref()
            .is_some_and(|m| m.contains("tls.ca_file")),
        "{report:?}"
    );
    assert_eq!(gauge(&r, &s, "probe_http_ssl"), Some(0.0));
    assert_eq!(gauge(&r, &s, "probe_ssl_earliest_cert_expiry"), None);
    assert_eq!(requests(&r, &s, "none", "tls"), Some(1.0));
}

#[tokio::test]
async fn https_name_mismatch_points_at_server_name() {
    let cert = test_cert("pushprobe test server");
    let addr = tls_server(&cert, OK).await;
    let ca = ca_file(&cert);
    let mut s = settings(&format!("https://{addr}/"));
    s.tls.ca_file = Some(ca.path().to_path_buf());
    s.tls.server_name = Some("other.example".into());
    let (report, _) = run(&s).await;
    assert_eq!(report.status, "tls");
    let reason = report.reason.unwrap_or_default();
    assert!(
        reason.starts_with("TLS handshake with other.example:")
            && reason.contains("tls.server_name"),
        "{reason}"
    );
}

#[tokio::test]
async fn https_with_system_roots_refuses_a_self_signed_certificate() {
    let cert = test_cert("pushprobe test server");
    let addr = tls_server(&cert, OK).await;
    let s = settings(&format!("https://{addr}/"));
    let (report, r) = run(&s).await;
    assert_eq!(report.status, "tls", "{report:?}");
    assert_eq!(gauge(&r, &s, "probe_success"), Some(0.0));
}

#[tokio::test]
async fn tls_series_disappear_when_a_run_has_no_tls_facts() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let cert = test_cert("pushprobe test server");
    let acceptor = acceptor(&cert);
    let broken = Arc::new(AtomicBool::new(false));
    let flag = broken.clone();
    let addr = serve(move |tcp| {
        let acceptor = acceptor.clone();
        let broken = flag.load(Ordering::SeqCst);
        async move {
            if broken {
                return;
            }
            if let Ok(tls) = acceptor.accept(tcp).await {
                canned(tls, OK, None).await;
            }
        }
    })
    .await;
    let ca = ca_file(&cert);
    let mut s = settings(&format!("https://{addr}/"));
    s.tls.ca_file = Some(ca.path().to_path_buf());
    let mut probe = HttpProbe::new(s.clone()).unwrap();
    let mut r = Registry::new();
    let version = labels(&s, &[("version", "TLS 1.3")]);

    assert!(probe.run(&mut r).await.success);
    assert!(gauge(&r, &s, "probe_ssl_earliest_cert_expiry").is_some());
    assert_eq!(r.value("probe_tls_version_info", &version), Some(1.0));

    broken.store(true, Ordering::SeqCst);
    let report = probe.run(&mut r).await;
    assert_eq!(report.status, "tls", "{report:?}");
    assert_eq!(gauge(&r, &s, "probe_ssl_earliest_cert_expiry"), None);
    assert_eq!(r.value("probe_tls_version_info", &version), None);
    // Both series end with a staleness marker, so receivers drop them at once.
    let mut ended: Vec<String> = r
        .take_stale_markers(0)
        .iter()
        .filter(|m| pushprobe::series::is_stale_nan(m.value))
        .map(|m| m.labels.metric_name().to_string())
        .collect();
    ended.sort();
    assert_eq!(
        ended,
        ["probe_ssl_earliest_cert_expiry", "probe_tls_version_info"]
    );
    assert_eq!(requests(&r, &s, "200", "none"), Some(1.0));
    assert_eq!(requests(&r, &s, "none", "tls"), Some(1.0));
}

#[tokio::test]
async fn stalled_handshake_times_out_in_tls() {
    // Accepts TCP but never speaks TLS.
    let addr = serve(|s: TcpStream| async move {
        let _keep = s;
        std::future::pending::<()>().await;
    })
    .await;
    let mut s = settings(&format!("https://{addr}/"));
    s.timeout = Duration::from_millis(300);
    let (report, _) = run(&s).await;
    assert_eq!(report.status, "timeout");
    assert_eq!(detail(&report, "failed_phase"), Some("tls"));
}

// ---------------------------------------------------------------------------------------
// The client on its own (as the OpenAI probe uses it)

fn client() -> HttpClient {
    HttpClient::new(&TlsConfig::default()).unwrap()
}

#[tokio::test]
async fn client_streams_chunks_as_they_arrive() {
    let (go_tx, go_rx) = mpsc::unbounded_channel::<()>();
    let go_rx = Arc::new(tokio::sync::Mutex::new(go_rx));
    let addr = serve(move |mut s: TcpStream| {
        let go_rx = go_rx.clone();
        async move {
            let _ = read_request(&mut s).await;
            let _ = s
                .write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
                )
                .await;
            let _ = s.write_all(b"9\r\ndata: a\n\n\r\n").await;
            let _ = s.flush().await;
            // The second event is only sent once the client has read the first.
            let _ = go_rx.lock().await.recv().await;
            let _ = s.write_all(b"9\r\ndata: b\n\n\r\n0\r\n\r\n").await;
        }
    })
    .await;
    let req = Request::new(
        Method::GET,
        Url::parse(&url_of(addr, "/events")).unwrap(),
        Duration::from_secs(5),
    );
    let mut trace = Trace::default();
    let mut resp = client().send(&req, &mut trace).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(trace.time_to_first_byte().is_some());
    assert!(trace.first_chunk_at.is_none());

    let first = resp.chunk(&mut trace).await.unwrap().unwrap();
    assert_eq!(&first[..], b"data: a\n\n");
    let first_chunk_at = trace.first_chunk_at.unwrap();
    assert!(trace.headers_at.unwrap() <= first_chunk_at);
    go_tx.send(()).unwrap();

    let rest = resp.read_to_end(&mut trace).await.unwrap();
    assert_eq!(&rest[..], b"data: b\n\n");
    assert_eq!(trace.first_chunk_at, Some(first_chunk_at));
    assert!(trace.finished_at.unwrap() >= first_chunk_at);
    assert_eq!(trace.body_bytes, 18);
    assert_eq!(resp.chunk(&mut trace).await.unwrap(), None);
    assert_eq!(
        trace.entered,
        [
            Phase::Resolve,
            Phase::Connect,
            Phase::Processing,
            Phase::Transfer
        ]
    );
}

#[tokio::test]
async fn client_posts_a_json_body() {
    let (tx, mut seen) = mpsc::unbounded_channel();
    let addr = serve(move |s| canned(s, OK, Some(tx.clone()))).await;
    let mut req = Request::new(
        Method::POST,
        Url::parse(&url_of(addr, "/v1/chat/completions")).unwrap(),
        Duration::from_secs(5),
    );
    req.headers = vec![
        ("content-type".into(), "application/json".into()),
        ("authorization".into(), "Bearer sk-test".into()),
    ];
    req.body = Some(bytes::Bytes::from_static(br#"{"model":"m"}"#));
    let mut trace = Trace::default();
    let mut resp = client().send(&req, &mut trace).await.unwrap();
    assert_eq!(&resp.read_to_end(&mut trace).await.unwrap()[..], b"hello");

    let got = seen.recv().await.unwrap();
    assert_eq!(got.request_line(), "POST /v1/chat/completions HTTP/1.1");
    assert_eq!(got.header("content-length").as_deref(), Some("13"));
    assert_eq!(
        got.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(got.body, br#"{"model":"m"}"#);
}

#[tokio::test]
async fn client_body_limit_is_configurable() {
    let addr = canned_server(OK).await;
    let mut req = Request::new(
        Method::GET,
        Url::parse(&url_of(addr, "/")).unwrap(),
        Duration::from_secs(5),
    );
    req.body_limit = 4;
    let mut trace = Trace::default();
    let mut resp = client().send(&req, &mut trace).await.unwrap();
    let err = resp.discard(&mut trace).await.unwrap_err();
    assert!(
        matches!(err, ClientError::BodyTooLarge { limit: 4 }),
        "{err}"
    );
}

#[tokio::test]
async fn client_stalled_body_times_out_in_transfer() {
    let addr = serve(|s| silent(s, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")).await;
    let req = Request::new(
        Method::GET,
        Url::parse(&url_of(addr, "/")).unwrap(),
        Duration::from_millis(300),
    );
    let mut trace = Trace::default();
    let mut resp = client().send(&req, &mut trace).await.unwrap();
    let err = resp.discard(&mut trace).await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Timeout {
                phase: Phase::Transfer,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(trace.body_bytes, 7);
}

#[tokio::test]
async fn redirect_303_turns_post_into_get_and_drops_credentials_across_hosts() {
    let (tx, mut seen) = mpsc::unbounded_channel();
    let addr = serve(move |mut s: TcpStream| {
        let tx = tx.clone();
        async move {
            let req = read_request(&mut s).await;
            let port = s.local_addr().unwrap().port();
            let response = if req.request_line().starts_with("POST /submit ") {
                // A different host name for the same server.
                format!(
                    "HTTP/1.1 303 See Other\r\nLocation: http://localhost:{port}/result\r\nContent-Length: 0\r\n\r\n"
                )
            } else {
                String::from_utf8_lossy(OK).into_owned()
            };
            let _ = tx.send(req);
            let _ = s.write_all(response.as_bytes()).await;
        }
    })
    .await;
    let mut req = Request::new(
        Method::POST,
        Url::parse(&url_of(addr, "/submit")).unwrap(),
        Duration::from_secs(5),
    );
    req.headers = vec![
        ("authorization".into(), "Bearer secret".into()),
        ("x-trace".into(), "1".into()),
    ];
    req.body = Some(bytes::Bytes::from_static(b"form"));
    let mut trace = Trace::default();
    let resp = client().send(&req, &mut trace).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(trace.redirects, 1);
    assert_eq!(
        trace
            .entered
            .iter()
            .filter(|p| **p == Phase::Resolve)
            .count(),
        2
    );

    let first = seen.recv().await.unwrap();
    assert_eq!(
        first.header("authorization").as_deref(),
        Some("Bearer secret")
    );
    let second = seen.recv().await.unwrap();
    assert_eq!(second.request_line(), "GET /result HTTP/1.1");
    assert_eq!(second.header("authorization"), None);
    assert_eq!(second.header("content-length"), None);
    assert_eq!(second.header("x-trace").as_deref(), Some("1"));
    assert_eq!(
        second.header("host"),
        Some(format!("localhost:{}", addr.port()))
    );
}

const KEEP: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";

/// Sends a GET for `url` on `keep`'s connection and reads the body.
async fn get_kept(addr: SocketAddr, keep: &mut KeepAlive) -> Result<(String, Trace), ClientError> {
    let req = Request::new(
        Method::GET,
        Url::parse(&format!("http://{addr}/metrics")).unwrap(),
        Duration::from_secs(10),
    );
    let mut trace = Trace::default();
    let mut resp = client().send_with(&req, &mut trace, Some(keep)).await?;
    let body = resp.read_to_end(&mut trace).await?;
    Ok((String::from_utf8_lossy(&body).into_owned(), trace))
}

/// A keep-alive server: connection 1 answers [`KEEP`] to each request until the `drop_at`-th,
/// which it reads and then closes without answering (as a server closing an idle connection
/// while a request is on its way looks); later connections answer everything. Reports each
/// connection's number on accepting it, and each request.
async fn dropping_server(
    drop_at: usize,
) -> (
    SocketAddr,
    mpsc::UnboundedReceiver<usize>,
    mpsc::UnboundedReceiver<Received>,
) {
    let (conns_tx, conns) = mpsc::unbounded_channel::<usize>();
    let (seen_tx, seen) = mpsc::unbounded_channel::<Received>();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let addr = serve(move |mut s| {
        let n = accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let _ = conns_tx.send(n);
        let seen = seen_tx.clone();
        async move {
            for i in 1.. {
                let r = read_request(&mut s).await;
                if r.head.is_empty() {
                    return;
                }
                let _ = seen.send(r);
                if n == 1 && i == drop_at {
                    return;
                }
                if s.write_all(KEEP).await.is_err() {
                    return;
                }
            }
        }
    })
    .await;
    (addr, conns, seen)
}

#[tokio::test]
async fn kept_connection_serves_the_next_request_and_a_dropped_one_is_replaced() {
    // Connection 1 answers two requests, then drops the third.
    let (addr, mut conns, mut seen) = dropping_server(3).await;

    let mut keep = KeepAlive::default();
    for _ in 0..2 {
        let (body, trace) = get_kept(addr, &mut keep).await.unwrap();
        assert_eq!(body, "hello");
        assert!(keep.is_held());
        assert_eq!(trace.addr, Some(addr));
    }
    assert_eq!(conns.recv().await, Some(1));
    assert!(
        conns.try_recv().is_err(),
        "the second request opened a connection"
    );
    // The kept connection asks for nothing to be closed.
    for _ in 0..2 {
        assert_eq!(seen.recv().await.unwrap().header("connection"), None);
    }

    // The third request is lost with connection 1 and sent again on a new one.
    let (body, trace) = get_kept(addr, &mut keep).await.unwrap();
    assert_eq!(body, "hello");
    assert_eq!(conns.recv().await, Some(2));
    assert!(trace.entered.contains(&Phase::Connect));
    assert_eq!(
        seen.recv().await.unwrap().request_line(),
        "GET /metrics HTTP/1.1"
    );
    assert_eq!(
        seen.recv().await.unwrap().request_line(),
        "GET /metrics HTTP/1.1"
    );

    // And connection 2 is kept in turn.
    let (_, trace) = get_kept(addr, &mut keep).await.unwrap();
    assert!(!trace.entered.contains(&Phase::Connect));
    assert!(conns.try_recv().is_err());
}

#[tokio::test]
async fn a_connection_with_a_body_left_unread_is_not_reused() {
    // Connection 1 sends half its body and stalls; later ones answer in full.
    let (conns_tx, mut conns) = mpsc::unbounded_channel::<usize>();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let addr = serve(move |mut s| {
        let n = accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let _ = conns_tx.send(n);
        async move {
            if n == 1 {
                silent(s, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello").await;
                return;
            }
            while !read_request(&mut s).await.head.is_empty() {
                if s.write_all(KEEP).await.is_err() {
                    return;
                }
            }
        }
    })
    .await;
    let mut keep = KeepAlive::default();
    let req = Request::new(
        Method::GET,
        Url::parse(&format!("http://{addr}/")).unwrap(),
        Duration::from_secs(10),
    );
    let mut trace = Trace::default();
    // The first response is dropped with its body half read: its connection cannot carry
    // another request, so the next call opens a new one instead of waiting on it.
    drop(
        client()
            .send_with(&req, &mut trace, Some(&mut keep))
            .await
            .unwrap(),
    );
    let (body, _) = get_kept(addr, &mut keep).await.unwrap();
    assert_eq!(body, "hello");
    assert_eq!(conns.recv().await, Some(1));
    assert_eq!(conns.recv().await, Some(2));
}

#[tokio::test]
async fn https_scrapes_verify_the_ca_send_credentials_and_keep_one_tls_session() {
    // A TLS target that answers every request on a connection, keeping it open.
    let cert = test_cert("scrape CA");
    let acceptor = acceptor(&cert);
    let (handshakes_tx, mut handshakes) = mpsc::unbounded_channel::<()>();
    let (seen_tx, mut seen) = mpsc::unbounded_channel::<Received>();
    let addr = serve(move |tcp| {
        let acceptor = acceptor.clone();
        let (handshakes, seen) = (handshakes_tx.clone(), seen_tx.clone());
        async move {
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                return;
            };
            let _ = handshakes.send(());
            loop {
                let r = read_request(&mut tls).await;
                if r.head.is_empty() {
                    return;
                }
                let _ = seen.send(r);
                let body = "tls_up 1\n";
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                if tls.write_all(reply.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
    })
    .await;

    let ca = ca_file(&cert);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pushprobe.toml");
    std::fs::write(
        &path,
        format!(
            "[[remote_write]]\nurl = \"http://127.0.0.1:9/api/v1/write\"\n\n\
             [[scrape]]\njob = \"tls\"\nscheme = \"https\"\ntargets = [\"127.0.0.1:{}\"]\n\
             bearer_token = \"s3cret\"\ntls = {{ ca_file = {:?} }}\n",
            addr.port(),
            ca.path().display().to_string(),
        ),
    )
    .unwrap();
    let settings = pushprobe::config::load(&path, true)
        .unwrap()
        .validate("test")
        .unwrap();
    let job = &settings.scrapes[0];
    let client = pushprobe::scrape::scraper::JobClient::new(job).unwrap();
    let mut scraper = pushprobe::scrape::scraper::Scraper::new(job, &job.targets[0], client);
    let telemetry = pushprobe::telemetry::Telemetry::new();
    for _ in 0..3 {
        // Scrapes in the same millisecond would repeat a sample, which is not forwarded.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let mut out = Vec::new();
        let summary = scraper.scrape(&mut out, &telemetry, None).await;
        assert!(summary.up(), "{:?}", summary.error);
        assert!(
            out.iter()
                .any(|s| s.labels.get("__name__") == Some("tls_up") && s.value == 1.0),
            "{out:?}"
        );
        let request = seen.recv().await.unwrap();
        assert_eq!(request.request_line(), "GET /metrics HTTP/1.1");
        assert_eq!(
            request.header("authorization").as_deref(),
            Some("Bearer s3cret")
        );
    }
    // One handshake for the three scrapes.
    assert_eq!(handshakes.recv().await, Some(()));
    assert!(handshakes.try_recv().is_err());

    // A target whose certificate the CA did not sign fails the scrape and says what to set.
    let stranger = test_cert("stranger");
    let other = tls_server(&stranger, OK).await;
    let mut wrong = settings.scrapes[0].clone();
    wrong.targets[0].url =
        Url::parse(&format!("https://127.0.0.1:{}/metrics", other.port())).unwrap();
    let client = pushprobe::scrape::scraper::JobClient::new(&wrong).unwrap();
    let mut scraper = pushprobe::scrape::scraper::Scraper::new(&wrong, &wrong.targets[0], client);
    let mut out = Vec::new();
    let summary = scraper.scrape(&mut out, &telemetry, None).await;
    let error = summary
        .error
        .expect("an unknown issuer fails the scrape")
        .to_string();
    assert!(error.contains("tls.ca_file"), "{error}");
}

#[tokio::test]
async fn credentials_do_not_follow_a_redirect_to_another_port() {
    let (final_addr, mut final_seen) = recording_server(OK).await;
    let location = format!(
        "HTTP/1.1 302 Found\r\nLocation: http://{final_addr}/metrics\r\nContent-Length: 0\r\n\r\n"
    );
    let location: &'static [u8] = Box::leak(location.into_bytes().into_boxed_slice());
    let (first_addr, mut first_seen) = recording_server(location).await;
    let mut req = Request::new(
        Method::GET,
        Url::parse(&format!("http://{first_addr}/metrics")).unwrap(),
        Duration::from_secs(5),
    );
    req.headers = vec![("authorization".into(), "Bearer secret".into())];
    let mut trace = Trace::default();
    let mut keep = KeepAlive::default();
    let resp = client()
        .send_with(&req, &mut trace, Some(&mut keep))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        first_seen
            .recv()
            .await
            .unwrap()
            .header("authorization")
            .as_deref(),
        Some("Bearer secret")
    );
    // Same host, another port: another origin.
    assert_eq!(
        final_seen.recv().await.unwrap().header("authorization"),
        None
    );
}

#[tokio::test]
async fn a_request_with_a_body_is_not_sent_twice_when_a_kept_connection_drops_it() {
    // Connection 1 answers one request, then drops the second.
    let (addr, _, mut seen) = dropping_server(2).await;
    let mut keep = KeepAlive::default();
    let mut req = Request::new(
        Method::POST,
        Url::parse(&format!("http://{addr}/submit")).unwrap(),
        Duration::from_secs(10),
    );
    req.body = Some(bytes::Bytes::from_static(b"form"));
    let mut trace = Trace::default();
    let mut first = client()
        .send_with(&req, &mut trace, Some(&mut keep))
        .await
        .unwrap();
    first.read_to_end(&mut trace).await.unwrap();
    let e = client()
        .send_with(&req, &mut trace, Some(&mut keep))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), "http", "{e}");
    // Two requests reached the server: the lost one was not sent again.
    assert!(seen.recv().await.is_some());
    assert!(seen.recv().await.is_some());
    assert!(seen.try_recv().is_err());
}

// ---------------------------------------------------------------------------------------
// Response checks (fail_if_*, valid_http_versions, compression, body_size_limit, …)

use pushprobe::config::http_checks::{
    Compression, HeaderCheck, HttpChecks, JsonCheck, JsonExpectation,
};
use pushprobe::config::IpProtocol;
use pushprobe::http_client::IpPreference;

/// `head` (status line and headers, without the blank line) and `body` as one response.
fn response(head: &str, body: &[u8]) -> &'static [u8] {
    let mut r = format!(
        "{head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    Box::leak(r.into_boxed_slice())
}

fn body_re(re: &str) -> regex::bytes::Regex {
    regex::bytes::Regex::new(re).unwrap()
}

fn header_check(name: &str, re: &str, allow_missing: bool) -> HeaderCheck {
    HeaderCheck {
        header: name.into(),
        regexp: regex::Regex::new(re).unwrap(),
        allow_missing,
    }
}

async fn run_checks(
    addr: SocketAddr,
    checks: HttpChecks,
) -> (pushprobe::probe::ProbeReport, Registry, HttpProbeSettings) {
    let mut s = settings(&url_of(addr, "/"));
    s.checks = checks;
    let (report, r) = run(&s).await;
    (report, r, s)
}

#[tokio::test]
async fn body_regexes_pass_and_fail_with_the_check_named() {
    let addr = canned_server(response("HTTP/1.1 200 OK", b"status: ok, no errors")).await;
    let pass = HttpChecks {
        body_matches: vec![body_re("panic")],
        body_not_matches: vec![body_re("status: ok")],
        ..HttpChecks::default()
    };
    let (report, r, s) = run_checks(addr, pass).await;
    assert!(report.success, "{report:?}");
    assert_eq!(gauge(&r, &s, "probe_failed_due_to_regex"), Some(0.0));
    assert_eq!(
        gauge(&r, &s, "probe_http_uncompressed_body_length"),
        Some(21.0)
    );

    let fail = HttpChecks {
        body_matches: vec![body_re("errors")],
        body_not_matches: vec![body_re("status: ok"), body_re("healthy")],
        ..HttpChecks::default()
    };
    let (report, r, s) = run_checks(addr, fail).await;
    assert!(!report.success);
    assert_eq!(report.status, "200");
    assert_eq!(
        report.reason.as_deref(),
        Some(
            "fail_if_body_matches_regexp[0] /errors/ matched; \
             fail_if_body_not_matches_regexp[1] /healthy/ did not match"
        )
    );
    assert_eq!(
        detail(&report, "fail_if_body_not_matches_regexp[1]"),
        Some("/healthy/ did not match")
    );
    assert_eq!(gauge(&r, &s, "probe_success"), Some(0.0));
    assert_eq!(gauge(&r, &s, "probe_failed_due_to_regex"), Some(1.0));
    // Only with JSON checks.
    assert_eq!(gauge(&r, &s, "probe_failed_due_to_json"), None);
}

#[tokio::test]
async fn header_checks_pass_and_fail_and_allow_missing_headers() {
    let addr = canned_server(response(
        "HTTP/1.1 200 OK\r\nX-Status: degraded\r\nContent-Type: text/plain",
        b"ok",
    ))
    .await;
    let pass = HttpChecks {
        header_matches: vec![header_check("x-status", "^down$", false)],
        header_not_matches: vec![
            header_check("content-type", "^text/", false),
            header_check("x-cache", "HIT", true),
        ],
        ..HttpChecks::default()
    };
    let (report, _, _) = run_checks(addr, pass).await;
    assert!(report.success, "{report:?}");

    let fail = HttpChecks {
        header_matches: vec![header_check("x-status", "degraded", false)],
        header_not_matches: vec![header_check("x-cache", "HIT", false)],
        ..HttpChecks::default()
    };
    let (report, r, s) = run_checks(addr, fail).await;
    assert!(!report.success);
    assert_eq!(
        report.reason.as_deref(),
        Some(
            "fail_if_header_matches[0] x-status /degraded/ matched; \
             fail_if_header_not_matches[0] x-cache is missing (set allow_missing = true to \
             accept that)"
        )
    );
    assert_eq!(gauge(&r, &s, "probe_failed_due_to_regex"), Some(1.0));
}

#[tokio::test]
async fn json_checks_compare_and_match_values_at_pointers() {
    let addr = canned_server(response(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json",
        br#"{"status":"down","version":"1.4.2","checks":{"db":true}}"#,
    ))
    .await;
    let checks = |status: &str| HttpChecks {
        json: vec![
            JsonCheck {
                pointer: "/version".into(),
                expect: JsonExpectation::Matches(regex::Regex::new(r"^1\.").unwrap()),
            },
            JsonCheck {
                pointer: "/status".into(),
                expect: JsonExpectation::Equals(serde_json::json!(status)),
            },
            JsonCheck {
                pointer: "/checks/db".into(),
                expect: JsonExpectation::Equals(serde_json::json!(true)),
            },
        ],
        ..HttpChecks::default()
    };
    let (report, r, s) = run_checks(addr, checks("down")).await;
    assert!(report.success, "{report:?}");
    assert_eq!(gauge(&r, &s, "probe_failed_due_to_json"), Some(0.0));

    let (report, r, s) = run_checks(addr, checks("up")).await;
    assert!(!report.success);
    assert_eq!(
        report.reason.as_deref(),
        Some("fail_if_body_json[1] /status: expected \"up\", got \"down\"")
    );
    assert_eq!(
        detail(&report, "fail_if_body_json[1]"),
        Some("/status: expected \"up\", got \"down\"")
    );
    assert_eq!(gauge(&r, &s, "probe_failed_due_to_json"), Some(1.0));
    assert_eq!(gauge(&r, &s, "probe_failed_due_to_regex"), Some(0.0));
}

#[tokio::test]
async fn valid_http_versions_refuse_an_http_1_0_answer() {
    let addr = canned_server(response("HTTP/1.0 200 OK", b"old")).await;
    let only_11 = HttpChecks {
        http_versions: vec![http::Version::HTTP_11],
        ..HttpChecks::default()
    };
    let (report, r, s) = run_checks(addr, only_11).await;
    assert!(!report.success);
    assert_eq!(
        report.reason.as_deref(),
        Some("valid_http_versions response version HTTP/1.0 not in [HTTP/1.1]")
    );
    assert_eq!(gauge(&r, &s, "probe_http_version"), Some(1.0));
    let both = HttpChecks {
        http_versions: vec![http::Version::HTTP_10, http::Version::HTTP_11],
        ..HttpChecks::default()
    };
    assert!(run_checks(addr, both).await.0.success);
}

#[tokio::test]
async fn body_size_limit_fails_a_larger_body() {
    let addr = canned_server(response("HTTP/1.1 200 OK", &[b'x'; 100])).await;
    let small = HttpChecks {
        body_limit: 10,
        ..HttpChecks::default()
    };
    let (report, r, s) = run_checks(addr, small).await;
    assert!(!report.success);
    assert_eq!(report.status, "body_too_large");
    assert!(
        report
            .reason
            .as_deref()
            .unwrap()
            .contains("limit of 10 bytes"),
        "{report:?}"
    );
    assert_eq!(requests(&r, &s, "200", "body_too_large"), Some(1.0));
    let enough = HttpChecks {
        body_limit: 100,
        ..HttpChecks::default()
    };
    assert!(run_checks(addr, enough).await.0.success);
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[tokio::test]
async fn gzip_compression_is_asked_for_decoded_checked_and_bounded() {
    let text = "all systems healthy ".repeat(50);
    let compressed = gzip(text.as_bytes());
    let (addr, mut seen) = recording_server(response(
        "HTTP/1.1 200 OK\r\nContent-Encoding: gzip",
        &compressed,
    ))
    .await;
    let checks = |limit| HttpChecks {
        compression: Some(Compression::Gzip),
        body_not_matches: vec![body_re("systems healthy")],
        body_limit: limit,
        ..HttpChecks::default()
    };
    let (report, r, s) = run_checks(addr, checks(1 << 20)).await;
    assert!(report.success, "{report:?}");
    assert_eq!(
        seen.recv()
            .await
            .unwrap()
            .header("accept-encoding")
            .as_deref(),
        Some("gzip")
    );
    assert_eq!(
        gauge(&r, &s, "probe_http_uncompressed_body_length"),
        Some(text.len() as f64)
    );
    assert_eq!(
        gauge(&r, &s, "probe_http_content_length"),
        Some(compressed.len() as f64)
    );

    // The decoded size counts against the limit, however small the compressed body.
    let limit = compressed.len() as u64 + 1;
    let (report, _, _) = run_checks(addr, checks(limit)).await;
    assert_eq!(report.status, "body_too_large", "{report:?}");

    // A body that is not gzip fails, named by the key.
    let plain = canned_server(response("HTTP/1.1 200 OK", b"not compressed")).await;
    let (report, _, _) = run_checks(plain, checks(1 << 20)).await;
    assert!(!report.success);
    let reason = report.reason.unwrap();
    assert!(
        reason.starts_with("compression the body is not valid gzip"),
        "{reason}"
    );
}

/// `{"status":"up"}\n` four times, brotli-compressed (quality 11).
const BR_STATUS: &[u8] = &[
    0x1b, 0x3f, 0x00, 0xf8, 0x8d, 0xd3, 0x15, 0xf3, 0x23, 0x84, 0xf5, 0x53, 0x4a, 0x91, 0xba, 0xbd,
    0x56, 0xd0, 0x81, 0xeb, 0x53, 0x94, 0xf8, 0x53, 0x03, 0x54, 0x60, 0x53, 0x2a, 0x03,
];

#[tokio::test]
async fn brotli_compression_is_asked_for_and_decoded() {
    let (addr, mut seen) = recording_server(response(
        "HTTP/1.1 200 OK\r\nContent-Encoding: br",
        BR_STATUS,
    ))
    .await;
    let checks = HttpChecks {
        compression: Some(Compression::Br),
        body_not_matches: vec![body_re("\"status\":\"up\"")],
        ..HttpChecks::default()
    };
    let (report, r, s) = run_checks(addr, checks).await;
    assert!(report.success, "{report:?}");
    assert_eq!(
        seen.recv()
            .await
            .unwrap()
            .header("accept-encoding")
            .as_deref(),
        Some("br")
    );
    assert_eq!(
        gauge(&r, &s, "probe_http_uncompressed_body_length"),
        Some(("{\"status\":\"up\"}\n".len() * 4) as f64)
    );
}

#[tokio::test]
async fn fail_if_ssl_and_fail_if_not_ssl_look_at_the_final_response() {
    let cert = test_cert("pushprobe test server");
    let https = tls_server(&cert, OK).await;
    let ca = ca_file(&cert);
    let mut s = settings(&format!("https://{https}/"));
    s.tls.ca_file = Some(ca.path().to_path_buf());
    s.checks.fail_if_ssl = true;
    let (report, _) = run(&s).await;
    assert!(!report.success);
    assert_eq!(
        report.reason.as_deref(),
        Some("fail_if_ssl the final response came over TLS")
    );
    s.checks = HttpChecks {
        fail_if_not_ssl: true,
        ..HttpChecks::default()
    };
    assert!(run(&s).await.0.success);

    let http = canned_server(OK).await;
    let not_ssl = HttpChecks {
        fail_if_not_ssl: true,
        ..HttpChecks::default()
    };
    let (report, _, _) = run_checks(http, not_ssl).await;
    assert!(!report.success);
    assert_eq!(
        report.reason.as_deref(),
        Some("fail_if_not_ssl the final response did not come over TLS")
    );
}

#[tokio::test]
async fn preferred_ip_protocol_ip6_and_its_fallback() {
    let ip6 = |fallback| HttpChecks {
        ip: IpPreference {
            preferred: IpProtocol::Ip6,
            fallback,
        },
        ..HttpChecks::default()
    };
    if let Ok(listener) = TcpListener::bind("[::1]:0").await {
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(canned(stream, OK, None));
            }
        });
        let mut s = settings(&format!("http://[::1]:{}/", addr.port()));
        s.checks = ip6(false);
        let (report, r) = run(&s).await;
        assert!(report.success, "{report:?}");
        assert_eq!(gauge(&r, &s, "probe_ip_protocol"), Some(6.0));
    }
    // An IPv4-only target: used with fallback, refused without.
    let v4 = canned_server(OK).await;
    let (report, r, s) = run_checks(v4, ip6(true)).await;
    assert!(report.success, "{report:?}");
    assert_eq!(gauge(&r, &s, "probe_ip_protocol"), Some(4.0));
    let (report, r, s) = run_checks(v4, ip6(false)).await;
    assert!(!report.success);
    assert_eq!(report.status, "resolve");
    assert!(
        report.reason.as_deref().unwrap().contains("no ip6 address"),
        "{report:?}"
    );
    assert_eq!(gauge(&r, &s, "probe_ip_protocol"), Some(0.0));
}

#[tokio::test]
async fn last_modified_is_recorded_and_a_bad_date_ignored() {
    let dated = canned_server(response(
        "HTTP/1.1 200 OK\r\nLast-Modified: Wed, 21 Oct 2015 07:28:00 GMT",
        b"ok",
    ))
    .await;
    let (report, r, s) = run_checks(dated, HttpChecks::default()).await;
    assert!(report.success);
    assert_eq!(
        gauge(&r, &s, "probe_http_last_modified_timestamp_seconds"),
        Some(1_445_412_480.0)
    );
    let undated = canned_server(response(
        "HTTP/1.1 200 OK\r\nLast-Modified: last tuesday",
        b"ok",
    ))
    .await;
    let (report, r, s) = run_checks(undated, HttpChecks::default()).await;
    assert!(report.success, "{report:?}");
    assert_eq!(
        gauge(&r, &s, "probe_http_last_modified_timestamp_seconds"),
        None
    );
}

#[tokio::test]
async fn mtls_probe_records_its_client_certificate_expiry() {
    let server = test_cert("pushprobe test server");
    // The client's certificate, its own CA for the server.
    let mut params = rcgen::CertificateParams::new(vec!["pushprobe-client".to_string()]).unwrap();
    params.not_after = rcgen::date_time_ymd(2029, 2, 3);
    let client_key = rcgen::KeyPair::generate().unwrap();
    let client_cert = params.self_signed(&client_key).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(client_cert.der().clone()).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        pushprobe::tls::provider(),
    )
    .build()
    .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(pushprobe::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![server.der.clone()], server.key.clone_key())
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let addr = serve(move |tcp| {
        let acceptor = acceptor.clone();
        async move {
            if let Ok(tls) = acceptor.accept(tcp).await {
                canned(tls, OK, None).await;
            }
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("client.pem"), dir.path().join("client.key"));
    std::fs::write(&cert_path, client_cert.pem()).unwrap();
    std::fs::write(&key_path, client_key.serialize_pem()).unwrap();
    let ca = ca_file(&server);

    let mut s = settings(&format!("https://{addr}/"));
    s.tls.ca_file = Some(ca.path().to_path_buf());
    s.tls.cert_file = Some(cert_path);
    s.tls.key_file = Some(key_path);
    let (report, r) = run(&s).await;
    assert!(report.success, "{report:?}");
    assert_eq!(
        gauge(&r, &s, "probe_ssl_client_cert_expiry_timestamp_seconds"),
        Some(params.not_after.unix_timestamp() as f64)
    );
    assert_eq!(
        gauge(&r, &s, "probe_ssl_earliest_cert_expiry"),
        Some(server.not_after as f64)
    );
    assert!(
        detail(&report, "client_cert_not_after").is_some_and(|d| d.starts_with("2029-02-03")),
        "{report:?}"
    );

    // Without its certificate the server refuses the probe, and no client expiry is recorded.
    let mut bare = settings(&format!("https://{addr}/"));
    bare.tls.ca_file = Some(ca.path().to_path_buf());
    let (report, r) = run(&bare).await;
    assert!(!report.success, "{report:?}");
    assert_eq!(
        gauge(&r, &bare, "probe_ssl_client_cert_expiry_timestamp_seconds"),
        None
    );
}

// ---------------------------------------------------------------------------------------
// Retries (shared by every probe kind)

#[tokio::test]
async fn a_flaky_target_succeeds_on_the_second_attempt_with_both_counted() {
    let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = served.clone();
    let addr = serve(move |s| {
        // The first request fails, every later one succeeds.
        let first = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
        let answer: &'static [u8] = if first {
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        } else {
            OK
        };
        canned(s, answer, None)
    })
    .await;
    let s = settings(&url_of(addr, "/"));
    let mut probe =
        pushprobe::probe::Probe::new(&pushprobe::config::ProbeSettings::Http(s.clone())).unwrap();
    let mut r = Registry::new();
    let (report, attempts) = probe.run_attempts(&mut r, 2).await;
    assert!(report.success, "{report:?}");
    assert_eq!((attempts.succeeded, attempts.failed), (1, 1));
    assert_eq!(
        report
            .details
            .iter()
            .find(|(k, _)| k == "attempts")
            .map(|(_, v)| v.clone()),
        Some(pushprobe::probe::Detail::Count(2))
    );
    // Each attempt is in the probe's own series: the gauges show the last, the counter both.
    assert_eq!(requests(&r, &s, "503", "none"), Some(1.0));
    assert_eq!(requests(&r, &s, "200", "none"), Some(1.0));
    assert_eq!(gauge(&r, &s, "probe_success"), Some(1.0));
    assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 2);

    // A target that always fails is tried retries + 1 times, and the reason says so.
    let down = canned_server(
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    let s = settings(&url_of(down, "/"));
    let mut probe =
        pushprobe::probe::Probe::new(&pushprobe::config::ProbeSettings::Http(s.clone())).unwrap();
    let mut r = Registry::new();
    let (report, attempts) = probe.run_attempts(&mut r, 2).await;
    assert!(!report.success);
    assert_eq!((attempts.succeeded, attempts.failed), (0, 3));
    assert!(
        report
            .reason
            .as_deref()
            .unwrap()
            .starts_with("all 3 attempts failed; the last: status 503"),
        "{report:?}"
    );
    assert_eq!(requests(&r, &s, "503", "none"), Some(3.0));
}
