//! Outbound proxies: probes, scrapes and remote write through Debian's real `tinyproxy`
//! (plain forwarding for http targets, CONNECT tunnels for https ones, with and without proxy
//! authentication), `no_proxy`, `proxy_from_environment`, and proxies that are down or
//! answer badly (scripted fakes on loopback). Assertions are on outcomes, never on time.

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::rw_receiver::RwReceiver;
use common::tinyproxy::Tinyproxy;
use common::*;
use http::Method;
use pushprobe::auth::Auth;
use pushprobe::config::{HttpProbeSettings, TlsConfig, DEFAULT_BUCKETS};
use pushprobe::http_client::proxy::{NoProxy, Proxy, ProxySettings};
use pushprobe::probe::http::HttpProbe;
use pushprobe::probe::ProbeReport;
use pushprobe::secret::Secret;
use pushprobe::series::Registry;
use reqwest::Url;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const USER: &str = "agent";
const PASSWORD: &str = "pr0xy-s3cret";

// ---------------------------------------------------------------------------------------
// Servers

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

/// Reads a request or CONNECT head (up to the blank line).
async fn read_head<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        match s.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

struct TestCert {
    der: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    pem: String,
}

fn test_cert() -> TestCert {
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    TestCert {
        der: cert.der().clone(),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        pem: cert.pem(),
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

/// An https server answering one request per connection with `200` and one sample in the
/// text format (a probe ignores it; a scrape stores it).
async fn https_target(cert: &TestCert) -> SocketAddr {
    let acceptor = acceptor(cert);
    serve(move |tcp| {
        let acceptor = acceptor.clone();
        async move {
            if let Ok(mut tls) = acceptor.accept(tcp).await {
                read_head(&mut tls).await;
                let _ = tls
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\n\
                       content-length: 11\r\nconnection: close\r\n\r\nedge_tls 1\n",
                    )
                    .await;
                let _ = tls.shutdown().await;
            }
        }
    })
    .await
}

/// TLS in front of `backend`: every connection is decrypted and relayed to it.
async fn tls_front(cert: &TestCert, backend: SocketAddr) -> SocketAddr {
    let acceptor = acceptor(cert);
    serve(move |tcp| {
        let acceptor = acceptor.clone();
        async move {
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                return;
            };
            let Ok(mut plain) = TcpStream::connect(backend).await else {
                return;
            };
            let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
        }
    })
    .await
}

fn ca_file(cert: &TestCert) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut f, cert.pem.as_bytes()).unwrap();
    f
}

// ---------------------------------------------------------------------------------------
// Probes through the hyper client

fn proxy_to(url: &str, credentials: Option<(&str, &str)>) -> ProxySettings {
    let proxy = Proxy {
        url: Url::parse(url).unwrap(),
        auth: credentials.map(|(u, p)| Auth::Basic {
            username: u.into(),
            password: Secret::new(p).into(),
        }),
        connect_headers: Vec::new(),
    };
    ProxySettings {
        http: Some(proxy.clone()),
        https: Some(proxy),
        no_proxy: NoProxy::default(),
    }
}

fn settings(url: &str, proxy: ProxySettings) -> HttpProbeSettings {
    HttpProbeSettings {
        name: "web".into(),
        url: Url::parse(url).unwrap(),
        interval: Duration::from_secs(30),
        timeout: Duration::from_secs(20),
        method: Method::GET,
        headers: vec![],
        body: None,
        valid_status_codes: vec![],
        follow_redirects: true,
        auth: None,
        tls: TlsConfig::default(),
        proxy,
        buckets: Arc::from(DEFAULT_BUCKETS),
        labels: vec![],
        checks: Default::default(),
    }
}

async fn run(s: &HttpProbeSettings) -> (ProbeReport, Registry) {
    let mut probe = HttpProbe::new(s.clone()).unwrap();
    let mut registry = Registry::new();
    let report = probe.run(&mut registry).await;
    (report, registry)
}

fn phase(r: &Registry, s: &HttpProbeSettings, phase: &str) -> Option<f64> {
    r.value(
        "probe_http_duration_seconds",
        &[
            ("probe", s.name.as_str()),
            ("instance", s.url.as_str()),
            ("phase", phase),
        ],
    )
}

/// The failure is the proxy's, says what to do, and never shows the password.
fn assert_proxy_failure(report: &ProbeReport, expect: &str) {
    assert!(!report.success, "{report:?}");
    assert_eq!(report.status, "proxy", "{report:?}");
    let reason = report.reason.clone().unwrap_or_default();
    assert!(reason.contains(expect), "{reason}");
    assert!(!reason.contains(PASSWORD), "{reason}");
}

#[tokio::test]
async fn probes_reach_http_and_https_targets_through_tinyproxy_with_credentials() {
    let Some(proxy) = Tinyproxy::start(Some((USER, PASSWORD))).await else {
        return;
    };
    let target = TargetServer::start().await;
    let s = settings(
        &target.url("/health"),
        proxy_to(&proxy.url(None), Some((USER, PASSWORD))),
    );
    let (report, _) = run(&s).await;
    assert!(report.success, "{report:?}");
    // tinyproxy forwarded it: it adds its Via header.
    let via = target.last_header("via").unwrap_or_default();
    assert!(via.contains("tinyproxy"), "via: {via:?}");

    let cert = test_cert();
    let addr = https_target(&cert).await;
    let ca = ca_file(&cert);
    let mut s = settings(
        &format!("https://{addr}/"),
        proxy_to(&proxy.url(None), Some((USER, PASSWORD))),
    );
    s.tls.ca_file = Some(ca.path().to_path_buf());
    let (report, r) = run(&s).await;
    assert!(report.success, "{report:?}");
    // The tunnel is part of `connect`; the handshake with the target is `tls`.
    assert!(phase(&r, &s, "connect").unwrap_or(0.0) > 0.0);
    assert!(phase(&r, &s, "tls").unwrap_or(0.0) > 0.0);
    assert!(
        proxy
            .log()
            .contains(&format!("CONNECT 127.0.0.1:{}", addr.port())),
        "{}",
        proxy.log()
    );
}

#[tokio::test]
async fn wrong_proxy_credentials_fail_the_probe_with_reason_proxy() {
    let Some(proxy) = Tinyproxy::start(Some((USER, PASSWORD))).await else {
        return;
    };
    let target = TargetServer::start().await;
    let cert = test_cert();
    let addr = https_target(&cert).await;
    for (url, credentials) in [
        (target.url("/"), None),
        (target.url("/"), Some((USER, "wrong"))),
        (format!("https://{addr}/"), None),
        (format!("https://{addr}/"), Some((USER, "wrong"))),
    ] {
        let s = settings(&url, proxy_to(&proxy.url(None), credentials));
        let (report, _) = run(&s).await;
        match (url.starts_with("https"), credentials) {
            (_, None) => assert_proxy_failure(&report, "407"),
            (true, Some(_)) => assert_proxy_failure(&report, "401: check the user and password"),
            // tinyproxy answers wrong credentials with 401 rather than 407, which on a
            // forwarded request cannot be told from the target's own 401: reported as that.
            (false, Some(_)) => assert_eq!(report.status, "401", "{report:?}"),
        }
    }
    assert_eq!(target.hits(), 0);
}

#[tokio::test]
async fn no_proxy_targets_go_direct_and_a_proxy_that_is_down_is_reason_proxy() {
    let dead = format!("http://127.0.0.1:{}", free_port());
    let target = TargetServer::start().await;
    let mut proxy = proxy_to(&dead, None);
    proxy.no_proxy = NoProxy::parse("example.com, 127.0.0.0/8");
    let (report, _) = run(&settings(&target.url("/"), proxy)).await;
    assert!(report.success, "{report:?}");

    let (report, _) = run(&settings(&target.url("/"), proxy_to(&dead, None))).await;
    assert_proxy_failure(&report, "cannot be reached");
    let (report, _) = run(&settings("https://127.0.0.1:1/", proxy_to(&dead, None))).await;
    assert_proxy_failure(&report, "cannot be reached");
}

/// A fake proxy that reads the CONNECT head and then does `then`.
async fn fake_proxy(then: &'static [u8], close_after_client_hello: bool) -> String {
    let addr = serve(move |mut tcp| async move {
        read_head(&mut tcp).await;
        let _ = tcp.write_all(then).await;
        if close_after_client_hello {
            let mut hello = [0u8; 64];
            let _ = tcp.read(&mut hello).await;
        }
        // Dropped: closed.
    })
    .await;
    format!("http://{addr}")
}

#[tokio::test]
async fn proxies_that_answer_garbage_or_close_the_tunnel_fail_with_reason_proxy() {
    let https = "https://127.0.0.1:1/";
    let cases: [(&'static [u8], bool, &str); 6] = [
        (
            b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
            false,
            "instead of an HTTP/1.x status line",
        ),
        (b"", false, "without answering CONNECT"),
        (b"HTTP/1.1 200 Conn", false, "in the middle of its answer"),
        (b"HTTP/1.1 403 Forbidden\r\n\r\n", false, "status 403"),
        (b"HTTP/1.1 502 Bad Gateway\r\n\r\n", false, "status 502"),
        (
            b"HTTP/1.1 200 Connection established\r\n\r\n",
            true,
            "tunnel closed during the TLS handshake",
        ),
    ];
    for (answer, close_later, expect) in cases {
        let url = fake_proxy(answer, close_later).await;
        let (report, _) = run(&settings(https, proxy_to(&url, None))).await;
        assert_proxy_failure(&report, expect);
    }
    // Endless headers are cut off at the bound.
    let endless = serve(|mut tcp| async move {
        read_head(&mut tcp).await;
        let _ = tcp.write_all(b"HTTP/1.1 200 OK\r\n").await;
        let line = b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
        for _ in 0..10_000 {
            if tcp.write_all(line).await.is_err() {
                break;
            }
        }
    })
    .await;
    let (report, _) = run(&settings(
        https,
        proxy_to(&format!("http://{endless}"), None),
    ))
    .await;
    assert_proxy_failure(&report, "more than 8192 bytes");
}

// ---------------------------------------------------------------------------------------
// The agent: remote write, scrapes and probes configured with proxy keys

fn quote(s: &str) -> String {
    format!("{s:?}")
}

#[tokio::test]
async fn remote_write_scrapes_and_probes_go_through_tinyproxy_to_http_and_https() {
    let Some(proxy) = Tinyproxy::start(Some((USER, PASSWORD))).await else {
        return;
    };
    let plain = RwReceiver::start(|_, _| 204).await;
    let behind_tls = RwReceiver::start(|_, _| 204).await;
    let cert = test_cert();
    let tls_addr = tls_front(&cert, behind_tls.addr()).await;
    let ca = ca_file(&cert);
    let exporter = TargetServer::start_with(Reply {
        body: "edge_thing 1\n".into(),
        content_type: "text/plain; version=0.0.4".into(),
        ..Reply::default()
    })
    .await;
    let target = TargetServer::start().await;
    let tls_exporter = https_target(&cert).await;
    let Some(gateway) = Pushgateway::start().await else {
        return;
    };
    let proxy_url = proxy.url(Some(&format!("{USER}:{PASSWORD}")));
    let agent = Pushprobe::with_config(&format!(
        "[[remote_write]]\nname = \"plain\"\nurl = {}\nproxy_url = {}\n\n\
         [[remote_write]]\nname = \"tls\"\nurl = {}\nproxy_url = {}\ntls = {{ ca_file = {} }}\n\n\
         [[probe]]\nname = \"web\"\nkind = \"http\"\nurl = {}\nproxy_url = {}\n\n\
         [[scrape]]\njob = \"edge\"\ntargets = [{}]\nproxy_url = {}\n\n\
         [[scrape]]\njob = \"edge-tls\"\nscheme = \"https\"\ntargets = [{}]\nproxy_url = {}\n\
         tls = {{ ca_file = {} }}\n\n\
         [[pushgateway]]\nurl = {}\njob = \"edge\"\nproxy_url = {}\n",
        quote(&plain.write_url()),
        quote(&proxy_url),
        quote(&format!(
            "https://127.0.0.1:{}/api/v1/write",
            tls_addr.port()
        )),
        quote(&proxy_url),
        quote(&ca.path().display().to_string()),
        quote(&target.url("/")),
        quote(&proxy_url),
        quote(&exporter.addr().to_string()),
        quote(&proxy_url),
        quote(&format!("127.0.0.1:{}", tls_exporter.port())),
        quote(&proxy_url),
        quote(&ca.path().display().to_string()),
        quote(&gateway.base_url()),
        quote(&proxy_url),
    ));
    let finished = agent.once().await;
    finished.assert_code(0);
    assert!(!finished.stderr.contains(PASSWORD), "{}", finished.stderr);
    for receiver in [&plain, &behind_tls] {
        let samples = receiver.accepted_samples();
        for name in ["probe_success", "edge_thing", "edge_tls"] {
            let s = samples
                .iter()
                .find(|s| s.label("__name__") == Some(name))
                .unwrap_or_else(|| panic!("no {name}"));
            assert_eq!(s.value, 1.0, "{name}");
        }
    }
    for hop in [
        format!("POST http://127.0.0.1:{}/api/v1/write", plain.addr().port()),
        format!("CONNECT 127.0.0.1:{}", tls_addr.port()),
        format!("GET http://127.0.0.1:{}/", target.addr().port()),
        format!("GET http://{}/metrics", exporter.addr()),
        format!("PUT {}/metrics/job/edge", gateway.base_url()),
        format!("CONNECT 127.0.0.1:{}", tls_exporter.port()),
    ] {
        assert!(proxy.log().contains(&hop), "{hop} not in\n{}", proxy.log());
    }
    assert!(target
        .last_header("via")
        .is_some_and(|v| v.contains("tinyproxy")));
    assert!(!gateway.metric("probe_success").await.is_empty());

    // `config check` shows the proxy without its password.
    let checked = agent.config_check().await;
    checked.assert_code(0);
    let out = format!("{}{}", checked.stdout, checked.stderr);
    assert!(!out.contains(PASSWORD), "{out}");
}

#[tokio::test]
async fn remote_write_keeps_samples_while_the_proxy_refuses_its_credentials() {
    let Some(proxy) = Tinyproxy::start(Some((USER, PASSWORD))).await else {
        return;
    };
    // An https receiver behind a tunnel (wrong password: CONNECT refused), and a plain one
    // forwarded without credentials (407 to the write request itself).
    let behind_tls = RwReceiver::start(|_, _| 204).await;
    let cert = test_cert();
    let tls_addr = tls_front(&cert, behind_tls.addr()).await;
    let ca = ca_file(&cert);
    let plain = RwReceiver::start(|_, _| 204).await;
    let target = TargetServer::start().await;
    let data = tempfile::tempdir().unwrap();
    let password_file = data.path().join("proxy-password");
    std::fs::write(&password_file, "wrong-password\n").unwrap();
    let config = |plain_proxy: &str| {
        format!(
            "[agent]\ndata_dir = {}\ndrain_timeout = \"3s\"\n\n\
             [[remote_write]]\nname = \"tls\"\nurl = {}\nproxy_url = {}\nproxy_password_file = {}\n\
             tls = {{ ca_file = {} }}\n\n\
             [[remote_write]]\nname = \"plain\"\nurl = {}\nproxy_url = {}\n\n\
             [[probe]]\nname = \"web\"\nkind = \"http\"\nurl = {}\n",
            quote(&data.path().join("state").display().to_string()),
            quote(&format!(
                "https://127.0.0.1:{}/api/v1/write",
                tls_addr.port()
            )),
            quote(&proxy.url(Some(USER))),
            quote(&password_file.display().to_string()),
            quote(&ca.path().display().to_string()),
            quote(&plain.write_url()),
            quote(plain_proxy),
            quote(&target.url("/")),
        )
    };
    let agent = Pushprobe::with_config(&config(&proxy.url(None)));
    let refused = agent.once().await;
    // Delivery failed, and the samples stay queued rather than being dropped.
    refused.assert_code(3);
    assert!(
        !refused.stderr.contains("wrong-password"),
        "{}",
        refused.stderr
    );
    assert!(!refused.stderr.contains("rejected"), "{}", refused.stderr);
    assert_eq!(behind_tls.accepted_samples().len(), 0);
    assert_eq!(plain.accepted_samples().len(), 0);

    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    agent.rewrite_config(&config(&proxy.url(Some(&format!("{USER}:{PASSWORD}")))));
    let delivered = agent.once().await;
    delivered.assert_code(0);
    for receiver in [&behind_tls, &plain] {
        let first_run = receiver
            .accepted_samples()
            .into_iter()
            .filter(|s| s.label("__name__") == Some("probe_success"))
            .filter(|s| s.timestamp_ms <= refused.finished_ms)
            .count();
        assert!(
            first_run > 0,
            "the first run's probe_success was not delivered after the fix"
        );
    }
}

#[tokio::test]
async fn environment_proxies_are_used_only_with_proxy_from_environment() {
    let Some(proxy) = Tinyproxy::start(None).await else {
        return;
    };
    let receiver = RwReceiver::start(|_, _| 204).await;
    let dead = format!("http://127.0.0.1:{}", free_port());
    let config = |from_env: bool| {
        format!(
            "[[remote_write]]\nurl = {}\nproxy_from_environment = {from_env}\n",
            quote(&receiver.write_url()),
        )
    };
    // Without the key, HTTP_PROXY (pointing nowhere) is ignored: delivery goes direct.
    let agent = Pushprobe::with_config(&config(false))
        .env("HTTP_PROXY", &dead)
        .env("http_proxy", &dead);
    agent.once().await.assert_code(0);
    let direct = receiver.requests();
    assert!(direct > 0);
    assert!(!proxy.log().contains("/api/v1/write"));

    let agent = Pushprobe::with_config(&config(true))
        .env("HTTP_PROXY", &proxy.url(None))
        .env("NO_PROXY", "example.com");
    agent.once().await.assert_code(0);
    assert!(receiver.requests() > direct);
    assert!(
        proxy.log().contains(&format!(
            "POST http://127.0.0.1:{}/api/v1/write",
            receiver.addr().port()
        )),
        "{}",
        proxy.log()
    );

    // NO_PROXY covering the receiver sends it direct, past a proxy that is down.
    let agent = Pushprobe::with_config(&config(true))
        .env("HTTP_PROXY", &dead)
        .env("NO_PROXY", "127.0.0.1");
    agent.once().await.assert_code(0);
}

#[tokio::test]
async fn bad_proxy_keys_are_configuration_errors_naming_the_key() {
    let agent = Pushprobe::with_config(
        "[[remote_write]]\nurl = \"http://127.0.0.1:9/api/v1/write\"\n\
         proxy_url = \"socks5://user:hunter2@127.0.0.1:1080\"\n",
    );
    let finished = agent.config_check().await;
    assert_ne!(finished.code(), Some(0));
    let out = format!("{}{}", finished.stdout, finished.stderr);
    assert!(out.contains("remote_write[0].proxy_url"), "{out}");
    assert!(out.contains("only http:// proxies"), "{out}");
    assert!(!out.contains("hunter2"), "{out}");
}
