//! Sender tests against a real loopback HTTP receiver. Delays go through a recording timer,
//! so the tests assert on the order of requests and waits, never on elapsed time.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Mutex;

use base64::Engine as _;
use http::header::AUTHORIZATION;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prost::Message;

use super::*;
use crate::config::{Auth, TlsConfig};
use crate::proto;
use crate::queue::memory::MemoryQueue;
use crate::remote_write::protocol::Protocol;
use crate::remote_write::service::{request_headers, WriteService};
use crate::secret::Secret;
use crate::series::Sample;
use crate::telemetry::{
    RW_BYTES_SENT, RW_COMPRESSION, RW_COMPRESSION_HANDSHAKES, RW_LAST_SUCCESS, RW_PARTIAL_WRITES,
    RW_PENDING, RW_PROTOCOL, RW_REQUESTS, RW_SAMPLES_DROPPED, RW_SAMPLES_FAILED,
    RW_SAMPLES_RETRIED, RW_SAMPLES_SENT, RW_ZSTD_REFUSED,
};

const ENDPOINT: &str = "test-rw";
const TOKEN: &str = "tok-3f9a-bearer";
const PASSWORD: &str = "pw-s3cret-basic";

/// Something the sender did, in the order it happened.
#[derive(Debug, Clone, PartialEq)]
enum Event {
    /// The receiver got a request with this many samples.
    Request(usize),
    /// The sender asked to wait this long.
    Sleep(Duration),
}

/// Shared, awaitable event log.
#[derive(Clone, Default)]
struct Log {
    events: Arc<Mutex<Vec<Event>>>,
    changed: Arc<tokio::sync::Notify>,
}

impl Log {
    fn push(&self, e: Event) {
        self.events.lock().unwrap().push(e);
        self.changed.notify_waiters();
    }

    fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    /// Waits until `cond` holds for the events so far.
    async fn until(&self, cond: impl Fn(&[Event]) -> bool) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if cond(&self.events.lock().unwrap()) {
                return;
            }
            changed.await;
        }
    }
}

/// Records every requested delay; completes it at once or never.
struct TestTimer {
    log: Log,
    fire: bool,
}

impl Timer for TestTimer {
    fn sleep(&self, d: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        self.log.push(Event::Sleep(d));
        if self.fire {
            Box::pin(std::future::ready(()))
        } else {
            Box::pin(std::future::pending())
        }
    }
}

/// A scripted answer.
#[derive(Clone)]
enum Reply {
    Status {
        status: u16,
        headers: Vec<(&'static str, &'static str)>,
        body: String,
    },
    /// Never answers.
    Hang,
    /// Answers with the request's Authorization header in the body, as some proxies do.
    EchoAuthorization(u16),
}

fn status(status: u16) -> Reply {
    Reply::Status {
        status,
        headers: Vec::new(),
        body: String::new(),
    }
}

/// One request as the receiver saw it.
struct Captured {
    headers: http::HeaderMap,
    raw: Bytes,
    request: proto::WriteRequest,
}

struct Receiver {
    url: reqwest::Url,
    captured: Arc<Mutex<Vec<Captured>>>,
}

/// Tells whether a receiver refuses a request for a bad sample in it, as Prometheus does: 400
/// "out of order sample" for the whole request, whatever else it holds.
type Refuse = fn(&proto::WriteRequest) -> bool;

/// Whether `request` holds the sample of series `probe` stamped `timestamp`.
fn holds(request: &proto::WriteRequest, probe: &str, timestamp: i64) -> bool {
    request.timeseries.iter().any(|t| {
        t.labels
            .iter()
            .any(|l| l.name == "probe" && l.value == probe)
            && t.samples.iter().any(|s| s.timestamp == timestamp)
    })
}

/// Starts a remote-write receiver on 127.0.0.1 that answers from `script`, then 204s; it
/// serves HTTPS when given an acceptor.
async fn receiver_with_tls(
    script: Vec<Reply>,
    log: Log,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> Receiver {
    receiver(script, None, log, tls).await
}

/// Starts a remote-write receiver on 127.0.0.1: one that refuses by content when given
/// `refuse`, otherwise one that answers from `script`, then 204s. It serves HTTPS when given
/// an acceptor.
async fn receiver(
    script: Vec<Reply>,
    refuse: Option<Refuse>,
    log: Log,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> Receiver {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let script = Arc::new(Mutex::new(VecDeque::from(script)));
    let captured = Arc::new(Mutex::new(Vec::new()));
    let shared = (script, captured.clone(), log);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let shared = shared.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (script, captured, log) = shared.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let raw = body.collect().await?.to_bytes();
                        let auth = parts
                            .headers
                            .get(AUTHORIZATION)
                            .map(|v| v.to_str().unwrap().to_string())
                            .unwrap_or_default();
                        let reply = if parts.method == http::Method::GET {
                            // The compression handshake: answered from the script, not captured.
                            script.lock().unwrap().pop_front().unwrap_or(status(404))
                        } else {
                            let plain = if parts.headers[http::header::CONTENT_ENCODING] == "zstd" {
                                zstd::stream::decode_all(raw.as_ref()).expect("body is zstd")
                            } else {
                                snap::raw::Decoder::new()
                                    .decompress_vec(&raw)
                                    .expect("body is a snappy block")
                            };
                            let request = proto::WriteRequest::decode(plain.as_slice())
                                .expect("body is a WriteRequest");
                            log.push(Event::Request(
                                request.timeseries.iter().map(|t| t.samples.len()).sum(),
                            ));
                            let refused = refuse.map(|refuse| refuse(&request));
                            captured.lock().unwrap().push(Captured {
                                headers: parts.headers,
                                raw,
                                request,
                            });
                            match refused {
                                Some(true) => Reply::Status {
                                    status: 400,
                                    headers: Vec::new(),
                                    body: "out of order sample".into(),
                                },
                                Some(false) => status(204),
                                None => script.lock().unwrap().pop_front().unwrap_or(status(204)),
                            }
                        };
                        let (code, headers, body) = match reply {
                            Reply::Status {
                                status,
                                headers,
                                body,
                            } => (status, headers, body),
                            Reply::Hang => std::future::pending().await,
                            Reply::EchoAuthorization(s) => (
                                s,
                                Vec::new(),
                                format!("denied; you sent Authorization: {auth}"),
                            ),
                        };
                        let mut resp = hyper::Response::builder().status(code);
                        for (k, v) in headers {
                            resp = resp.header(k, v);
                        }
                        Ok::<_, hyper::Error>(resp.body(Full::new(Bytes::from(body))).unwrap())
                    }
                });
                let http = hyper::server::conn::http1::Builder::new();
                let _ = match tls {
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(stream) => http.serve_connection(TokioIo::new(stream), svc).await,
                        Err(_) => return,
                    },
                    None => http.serve_connection(TokioIo::new(stream), svc).await,
                };
            });
        }
    });
    Receiver {
        url: format!("{scheme}://{addr}/api/v1/write").parse().unwrap(),
        captured,
    }
}

fn settings(url: reqwest::Url) -> RemoteWriteSettings {
    RemoteWriteSettings {
        name: ENDPOINT.into(),
        url,
        headers: vec![("x-scope-orgid".into(), "tenant-1".into())],
        auth: Some(Auth::Bearer(Secret::new(TOKEN).into())),
        tls: TlsConfig::default(),
        proxy: Default::default(),
        timeout: Duration::from_secs(30),
        max_samples_per_send: 3,
        batch_send_deadline: Duration::from_secs(3600),
        queue_capacity: 100,
        min_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(100),
        min_shards: 1,
        max_shards: 4,
        accepts_out_of_order: false,
        max_catchup_bytes_per_second: None,
        compression: crate::config::CompressionConfig::Snappy,
        compression_level: None,
        protocol: Protocol::V1,
    }
}

struct Harness {
    queue: Arc<SharedQueue>,
    telemetry: Arc<Telemetry>,
    receiver: Receiver,
    log: Log,
    drain: CancellationToken,
    abort: CancellationToken,
}

impl Harness {
    async fn new(script: Vec<Reply>) -> Self {
        Self::with_tls(script, None).await
    }

    async fn with_tls(script: Vec<Reply>, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let log = Log::default();
        Harness {
            queue: SharedQueue::new(Box::new(MemoryQueue::new(100))),
            telemetry: Arc::new(Telemetry::new()),
            receiver: receiver_with_tls(script, log.clone(), tls).await,
            log,
            drain: CancellationToken::new(),
            abort: CancellationToken::new(),
        }
    }

    /// A harness whose receiver refuses every request for which `refuse` holds.
    async fn refusing(refuse: Refuse) -> Self {
        let log = Log::default();
        Harness {
            queue: SharedQueue::new(Box::new(MemoryQueue::new(100))),
            telemetry: Arc::new(Telemetry::new()),
            receiver: receiver(vec![], Some(refuse), log.clone(), None).await,
            log,
            drain: CancellationToken::new(),
            abort: CancellationToken::new(),
        }
    }

    /// Starts a sender whose timer fires at once (`fire`) or never.
    fn start(
        &self,
        fire: bool,
        tweak: impl FnOnce(&mut RemoteWriteSettings),
    ) -> tokio::task::JoinHandle<()> {
        self.start_sender(fire, false, tweak)
    }

    fn start_sender(
        &self,
        fire: bool,
        durable: bool,
        tweak: impl FnOnce(&mut RemoteWriteSettings),
    ) -> tokio::task::JoinHandle<()> {
        let sender = self.sender(fire, durable, tweak);
        tokio::spawn(sender.run(self.drain.clone(), self.abort.clone()))
    }

    /// Builds a sender to this harness' receiver and queue.
    fn sender(
        &self,
        fire: bool,
        durable: bool,
        tweak: impl FnOnce(&mut RemoteWriteSettings),
    ) -> Sender {
        let mut s = settings(self.receiver.url.clone());
        tweak(&mut s);
        let ext = Labels::from_pairs([("cluster", "edge-1")]).unwrap();
        let mut sender = Sender::new(s, ext, self.queue.clone(), self.telemetry.clone())
            .unwrap()
            .with_timer(Arc::new(TestTimer {
                log: self.log.clone(),
                fire,
            }));
        if durable {
            sender = sender.with_durable_queue();
        }
        sender
    }

    /// Appends samples stamped `timestamps` to one series.
    fn append(&self, timestamps: std::ops::Range<i64>) {
        let labels = Labels::with_name("probe_success", [("probe", "p1")]).unwrap();
        let samples: Vec<Sample> = timestamps
            .map(|ts| Sample {
                labels: labels.clone(),
                value: ts as f64,
                timestamp_ms: ts,
            })
            .collect();
        self.queue.append(&samples).unwrap();
    }

    fn metric(&self, name: &str, extra: Option<(&str, &str)>) -> f64 {
        let mut labels = vec![("endpoint", ENDPOINT)];
        labels.extend(extra);
        self.telemetry.value(name, &labels).unwrap_or(-1.0)
    }

    fn timestamps(&self, request: usize) -> Vec<i64> {
        self.receiver.captured.lock().unwrap()[request]
            .request
            .timeseries[0]
            .samples
            .iter()
            .map(|s| s.timestamp)
            .collect()
    }
}

/// Guards against a hung sender failing the suite by timeout instead of by assertion.
async fn finish(handle: tokio::task::JoinHandle<()>) {
    tokio::time::timeout(Duration::from_secs(60), handle)
        .await
        .expect("sender stopped")
        .expect("sender did not panic");
}

#[tokio::test]
async fn sends_protocol_headers_credentials_and_external_labels() {
    let h = Harness::new(vec![]).await;
    h.append(1..4);
    h.drain.cancel();
    finish(h.start(true, |_| {})).await;

    let captured = h.receiver.captured.lock().unwrap();
    assert_eq!(captured.len(), 1);
    let headers = &captured[0].headers;
    let get = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_string());
    assert_eq!(get("content-encoding").as_deref(), Some("snappy"));
    assert_eq!(
        get("content-type").as_deref(),
        Some("application/x-protobuf")
    );
    assert_eq!(
        get("x-prometheus-remote-write-version").as_deref(),
        Some("0.1.0")
    );
    assert_eq!(
        get("user-agent"),
        Some(format!("pushprobe/{}", env!("CARGO_PKG_VERSION")))
    );
    assert_eq!(get("x-scope-orgid").as_deref(), Some("tenant-1"));
    assert_eq!(get("authorization"), Some(format!("Bearer {TOKEN}")));
    assert_eq!(
        get("content-length"),
        Some(captured[0].raw.len().to_string())
    );
    let names: BTreeSet<&str> = headers.keys().map(|k| k.as_str()).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "accept",
            "authorization",
            "content-encoding",
            "content-length",
            "content-type",
            "host",
            "user-agent",
            "x-prometheus-remote-write-version",
            "x-scope-orgid",
        ])
    );

    let labels: Vec<(&str, &str)> = captured[0].request.timeseries[0]
        .labels
        .iter()
        .map(|l| (l.name.as_str(), l.value.as_str()))
        .collect();
    assert_eq!(
        labels,
        [
            ("__name__", "probe_success"),
            ("cluster", "edge-1"),
            ("probe", "p1")
        ]
    );
    drop(captured);
    assert_eq!(h.metric(RW_SAMPLES_SENT, None), 3.0);
    assert_eq!(h.metric(RW_REQUESTS, Some(("outcome", "success"))), 1.0);
    assert_eq!(
        h.metric(RW_BYTES_SENT, None),
        h.receiver.captured.lock().unwrap()[0].raw.len() as f64
    );
    assert!(h.metric(RW_LAST_SUCCESS, None) > 0.0);
    assert_eq!(h.metric(RW_PENDING, None), 0.0);
}

#[tokio::test]
async fn server_error_is_retried_with_identical_bytes_and_delivered_once() {
    let h = Harness::new(vec![status(500)]).await;
    h.append(1..4);
    h.drain.cancel();
    finish(h.start(true, |_| {})).await;

    let events = h.log.events();
    assert!(
        matches!(
            events.as_slice(),
            [Event::Request(3), Event::Sleep(_), Event::Request(3)]
        ),
        "{events:?}"
    );
    let captured = h.receiver.captured.lock().unwrap();
    assert_eq!(captured[0].raw, captured[1].raw);
    drop(captured);
    assert_eq!(h.timestamps(1), [1, 2, 3]);
    assert_eq!(h.queue.pending(), 0);
    assert_eq!(h.metric(RW_SAMPLES_SENT, None), 3.0);
    assert_eq!(h.metric(RW_SAMPLES_RETRIED, None), 3.0);
    assert_eq!(h.metric(RW_SAMPLES_FAILED, None), 0.0);
    assert_eq!(h.metric(RW_REQUESTS, Some(("outcome", "retryable"))), 1.0);
    assert_eq!(h.metric(RW_REQUESTS, Some(("outcome", "success"))), 1.0);
}

#[tokio::test]
async fn retry_after_is_waited_before_the_retry() {
    let h = Harness::new(vec![Reply::Status {
        status: 429,
        headers: vec![("retry-after", "1")],
        body: "slow down".into(),
    }])
    .await;
    h.append(1..4);
    h.drain.cancel();
    finish(h.start(true, |_| {})).await;

    assert_eq!(
        h.log.events(),
        [
            Event::Request(3),
            Event::Sleep(Duration::from_secs(1)),
            Event::Request(3)
        ]
    );
    assert_eq!(h.metric(RW_SAMPLES_SENT, None), 3.0);
}

#[tokio::test]
async fn transport_errors_are_retried() {
    // Nothing listens on the port once the listener is dropped: connection refused.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let h = Harness::new(vec![]).await;
    h.append(1..4);
    let handle = h.start(false, |s| {
        s.url = format!("http://{closed}/api/v1/write").parse().unwrap();
    });
    h.log
        .until(|e| e.iter().any(|e| matches!(e, Event::Sleep(_))))
        .await;
    h.abort.cancel();
    finish(handle).await;
    assert_eq!(h.metric(RW_REQUESTS, Some(("outcome", "transport"))), 1.0);
    assert_eq!(h.metric(RW_SAMPLES_RETRIED, None), 3.0);
    assert_eq!(h.queue.pending(), 3);
}

#[tokio::test]
async fn rejected_batch_is_dropped_not_retried_and_the_next_batch_still_goes() {
    let h = Harness::new(vec![Reply::Status {
        status: 400,
        headers: vec![],
        body: "out of order sample".into(),
    }])
    .await;
    h.append(1..7);
    h.drain.cancel();
    finish(h.start(true, |_| {})).await;

    assert_eq!(h.log.events(), [Event::Request(3), Event::Request(3)]);
    assert_eq!(h.timestamps(0), [1, 2, 3]);
    assert_eq!(h.timestamps(1), [4, 5, 6]);
    assert_eq!(h.queue.pending(), 0);
    assert_eq!(h.metric(RW_SAMPLES_FAILED, None), 3.0);
    assert_eq!(
        h.metric(RW_SAMPLES_DROPPED, Some(("reason", "rejected"))),
        3.0
    );
    assert_eq!(h.metric(RW_SAMPLES_RETRIED, None), 0.0);
    assert_eq!(h.metric(RW_SAMPLES_SENT, None), 3.0);
    assert_eq!(h.metric(RW_REQUESTS, Some(("outcome", "rejected"))), 1.0);
}

#[tokio::test]
async fn a_2_0_endpoint_facing_a_1_0_receiver_resends_as_1_0_and_stays_there() {
    // The harness' receiver reads every body as 1.0 and answers 204 without `-Written`
    // headers, as a 1.0 receiver that ignores the Content-Type does: a 2.0 body is an empty
    // request to it.
    let h = Harness::new(vec![]).await;
    h.append(1..7);
    h.drain.cancel();
    finish(h.start(true, |s| s.protocol = Protocol::V2)).await;

    assert_eq!(
        h.log.events(),
        [Event::Request(0), Event::Request(3), Event::Request(3)]
    );
    let captured = h.receiver.captured.lock().unwrap();
    let header = |i: usize, name: &str| captured[i].headers[name].to_str().unwrap().to_string();
    assert_eq!(
        header(0, "content-type"),
        "application/x-protobuf;proto=io.prometheus.write.v2.Request"
    );
    assert_eq!(header(0, "x-prometheus-remote-write-version"), "2.0.0");
    for i in [1, 2] {
        assert_eq!(header(i, "content-type"), "application/x-protobuf");
        assert_eq!(header(i, "x-prometheus-remote-write-version"), "0.1.0");
    }
    drop(captured);
    // The first request's samples went again as 1.0: each once, in order.
    assert_eq!(h.timestamps(1), [1, 2, 3]);
    assert_eq!(h.timestamps(2), [4, 5, 6]);
    assert_eq!(h.metric(RW_SAMPLES_SENT, None), 6.0);
    assert_eq!(h.metric(RW_SAMPLES_FAILED, None), 0.0);
    let message = |m| h.metric(RW_PROTOCOL, Some(("message", m)));
    assert_eq!(message("prometheus.WriteRequest"), 1.0);
    assert_eq!(message("io.prometheus.write.v2.Request"), 0.0);
}

#[tokio::test]
async fn a_partly_written_2_0_request_is_neither_resent_nor_split() {
    let written = |n: &'static str| vec![("x-prometheus-remote-write-samples-written", n)];
    let h = Harness::new(vec![
        Reply::Status {
            status: 400,
            headers: written("2"),
            body: "out of order sample".into(),
        },
        Reply::Status {
            status: 204,
            headers: written("3"),
            body: String::new(),
        },
    ])
    .await;
    // Two series, so that a plain 400 would be split.
    h.append(1..3);
    let other = Labels::with_name("probe_success", [("probe", "p2")]).unwrap();
    let more: Vec<Sample> = (3..7)
        .map(|ts| Sample {
            labels: other.clone(),
            value: 1.0,
            timestamp_ms: ts,
        })
        .collect();
    h.queue.append(&more).unwrap();
    h.drain.cancel();
    finish(h.start(true, |s| {
        s.protocol = Protocol::V2;
        s.max_shards = 1;
    }))
    .await;

    // Two 2.0 requests of three samples (empty to the 1.0-reading harness): no resend,
    // no split, no fallback.
    assert_eq!(h.log.events(), [Event::Request(0), Event::Request(0)]);
    assert_eq!(h.metric(RW_PARTIAL_WRITES, None), 1.0);
    assert_eq!(h.metric(RW_SAMPLES_SENT, None), 5.0);
    assert_eq!(h.metric(RW_SAMPLES_FAILED, None), 1.0);
    assert_eq!(h.metric(RW_REQUESTS, Some(("outcome", "split"))), 0.0);
    assert_eq!(
        h.metric(
            RW_PROTOCOL,
            Some(("message", "io.prometheus.write.v2.Request"))
        ),
        1.0
    );
    assert_eq!(h.queue.pending(), 0);
}

#[tokio::test]
async fn deadline_sends_a_partial_batch() {
    let h = Harness::new(vec![]).await;
    let handle = h.start(true, |_| {});
    h.append(1..3);
    h.log.until(|e| e.contains(&Event::Request(2))).await;
    // The sender waited for the batch deadline (which the test timer completes at once; a
    // wake-up by the append may start the wait twice), then sent the two samples although a
    // batch holds three.
    let events = h.log.events();
    let (last, waits) = events.split_last().unwrap();
    assert_eq!(*last, Event::Request(2));
    assert!(
        !waits.is_empty() && waits.iter().all(|e| matches!(e, Event::Sleep(_))),
        "{events:?}"
    );
    h.drain.cancel();
    finish(handle).await;
    assert_eq!(h.queue.pending(), 0);
}

#[tokio::test]
async fn drain_flushes_a_partial_batch_before_the_deadline() {
    let h = Harness::new(vec![]).await;
    // The timer never fires: only draining can send a batch that is not full.
    let handle = h.start(false, |_| {});
    h.append(1..3);
    h.log
        .until(|e| e.iter().any(|e| matches!(e, Event::Sleep(_))))
        .await;
    assert!(h.receiver.captured.lock().unwrap().is_empty());
    h.drain.cancel();
    finish(handle).await;
    assert_eq!(h.timestamps(0), [1, 2]);
    assert_eq!(h.queue.pending(), 0);
}

#[tokio::test]
async fn abort_leaves_the_in_flight_batch_in_the_queue() {
    let h = Harness::new(vec![Reply::Hang]).await;
    h.append(1..4);
    let handle = h.start(true, |_| {});
    h.log.until(|e| e.contains(&Event::Request(3))).await;
    h.abort.cancel();
    finish(handle).await;
    assert_eq!(h.queue.pending(), 3);
    assert_eq!(h.metric(RW_SAMPLES_SENT, None), 0.0);
}

#[tokio::test]
async fn abort_interrupts_a_retry_wait_even_while_draining() {
    let h = Harness::new(vec![status(503)]).await;
    h.append(1..4);
    h.drain.cancel();
    let handle = h.start(false, |_| {});
    h.log
        .until(|e| e.iter().any(|e| matches!(e, Event::Sleep(_))))
        .await;
    h.abort.cancel();
    finish(handle).await;
    assert_eq!(h.queue.pending(), 3);
    assert_eq!(h.log.events().len(), 2);
}

/// A TLS acceptor with a fresh self-signed certificate for 127.0.0.1, and that certificate
/// in PEM.
fn self_signed_acceptor() -> (tokio_rustls::TlsAcceptor, String) {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let mut server = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der())),
        )
        .unwrap();
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    (
        tokio_rustls::TlsAcceptor::from(Arc::new(server)),
        cert.cert.pem(),
    )
}

#[tokio::test]
async fn sends_over_tls_trusting_the_configured_ca() {
    let (acceptor, pem) = self_signed_acceptor();
    let ca_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca_file.path(), pem).unwrap();
    let h = Harness::with_tls(vec![], Some(acceptor)).await;
    assert_eq!(h.receiver.url.scheme(), "https");
    h.append(1..4);
    h.drain.cancel();
    finish(h.start(true, |s| s.tls.ca_file = Some(ca_file.path().to_path_buf()))).await;
    assert_eq!(h.log.events(), [Event::Request(3)]);
    assert_eq!(h.metric(RW_SAMPLES_SENT, None), 3.0);
}

#[tokio::test]
async fn untrusted_certificate_is_a_transport_error() {
    let (acceptor, _) = self_signed_acceptor();
    let h = Harness::with_tls(vec![], Some(acceptor)).await;
    h.append(1..4);
    // No ca_file: the system roots do not know this certificate.
    let handle = h.start(false, |_| {});
    h.log
        .until(|e| e.iter().any(|e| matches!(e, Event::Sleep(_))))
        .await;
    h.abort.cancel();
    finish(handle).await;
    assert_eq!(h.metric(RW_REQUESTS, Some(("outcome", "transport"))), 1.0);
    assert_eq!(h.queue.pending(), 3);
    assert!(h.receiver.captured.lock().unwrap().is_empty());
}

#[tokio::test]
async fn credentials_never_reach_the_logs() {
    let log_lines = crate::remote_write::log_capture::Captured::start();

    let h = Harness::new(vec![
        Reply::EchoAuthorization(500),
        Reply::EchoAuthorization(401),
        Reply::EchoAuthorization(401),
    ])
    .await;
    h.append(1..7);
    h.drain.cancel();
    let handle = h.start(true, |s| {
        s.auth = Some(Auth::Basic {
            username: "user".into(),
            password: Secret::new(PASSWORD).into(),
        });
        s.headers.push(("x-api-key".into(), TOKEN.into()));
    });
    finish(handle).await;

    let logs = log_lines.text();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("user:{PASSWORD}"));
    // The receiver did get the credentials, and the logs did record its messages.
    let captured = h.receiver.captured.lock().unwrap();
    assert_eq!(
        captured[0].headers.get(AUTHORIZATION).unwrap(),
        &format!("Basic {basic}")
    );
    assert!(logs.contains("rejected"), "{logs}");
    assert!(
        logs.contains("you sent Authorization: Basic <redacted>"),
        "{logs}"
    );
    for secret in [PASSWORD, TOKEN, basic.as_str()] {
        assert!(!logs.contains(secret), "{secret} leaked into:\n{logs}");
    }
}

#[tokio::test]
async fn basic_auth_header_is_encoded_and_sensitive() {
    let mut s = settings("http://127.0.0.1:9/w".parse().unwrap());
    s.auth = Some(Auth::Basic {
        username: "u".into(),
        password: Secret::new("pw").into(),
    });
    s.headers.push(("x-api-key".into(), "k-1".into()));
    let service = WriteService::new(&s).unwrap();
    let headers = service.attempt_headers(b"body").await.unwrap();
    let secrets = service.secrets();
    let auth = headers.get(AUTHORIZATION).unwrap();
    assert_eq!(auth, "Basic dTpwdw==");
    assert!(auth.is_sensitive());
    assert!(headers.get("x-api-key").unwrap().is_sensitive());
    assert!(!headers.get("x-scope-orgid").unwrap().is_sensitive());
    assert!(!format!("{headers:?}").contains("dTpwdw=="));
    let texts: BTreeSet<&str> = secrets.iter().map(|s| s.expose()).collect();
    assert_eq!(texts, BTreeSet::from(["dTpwdw==", "k-1", "pw"]));
}

#[test]
fn reserved_headers_and_bad_backoff_are_refused() {
    let mut s = settings("http://127.0.0.1:9/w".parse().unwrap());
    s.headers.push(("Content-Type".into(), "text/plain".into()));
    assert!(request_headers(&s).is_err());

    let mut s = settings("http://127.0.0.1:9/w".parse().unwrap());
    s.min_backoff = Duration::from_secs(10);
    let queue = SharedQueue::new(Box::new(MemoryQueue::new(10)));
    let err = Sender::new(s, Labels::default(), queue, Arc::new(Telemetry::new())).unwrap_err();
    assert!(err.to_string().contains("min_backoff"), "{err}");
}

/// Appends `per_series` samples to each of `series` series, interleaved as probe runs are.
fn append_series(queue: &SharedQueue, series: usize, per_series: i64) {
    let labels: Vec<Labels> = (0..series)
        .map(|i| Labels::with_name("probe_success", [("probe", format!("p{i}"))]).unwrap())
        .collect();
    for ts in 0..per_series {
        let batch: Vec<Sample> = labels
            .iter()
            .map(|l| Sample {
                labels: l.clone(),
                value: ts as f64,
                timestamp_ms: ts,
            })
            .collect();
        queue.append(&batch).unwrap();
    }
}

/// `(probe label, timestamp)` of every sample the receiver got, in arrival order.
fn received(h: &Harness) -> Vec<(String, i64)> {
    let captured = h.receiver.captured.lock().unwrap();
    let mut out = Vec::new();
    for c in captured.iter() {
        for ts in &c.request.timeseries {
            let probe = ts
                .labels
                .iter()
                .find(|l| l.name == "probe")
                .map(|l| l.value.clone())
                .unwrap();
            out.extend(ts.samples.iter().map(|s| (probe.clone(), s.timestamp)));
        }
    }
    out
}

#[tokio::test]
async fn parallel_shards_send_every_sample_once_and_each_series_in_order() {
    let h = Harness::new(vec![]).await;
    append_series(&h.queue, 8, 10);
    h.drain.cancel();
    finish(h.start(true, |s| s.max_shards = 4)).await;

    let got = received(&h);
    assert_eq!(got.len(), 80);
    let mut per_series: std::collections::BTreeMap<String, Vec<i64>> = Default::default();
    for (probe, ts) in got {
        per_series.entry(probe).or_default().push(ts);
    }
    assert_eq!(per_series.len(), 8);
    for (probe, stamps) in per_series {
        assert_eq!(stamps, (0..10).collect::<Vec<_>>(), "series {probe}");
    }
    assert_eq!(h.queue.pending(), 0);
    assert_eq!(h.metric(RW_SAMPLES_SENT, None), 80.0);
}

#[tokio::test]
async fn a_flow_just_over_a_request_goes_out_in_full_requests_not_halves() {
    let h = Harness::new(vec![]).await;
    // Four series, one more than a request holds: split over two shards, they would go as
    // two part-full requests.
    append_series(&h.queue, 4, 1);
    let sender = h.start(false, |s| s.max_shards = 4);
    let first = h
        .log
        .until(|e| matches!(e, [Event::Request(3), Event::Sleep(_), ..]));
    tokio::time::timeout(Duration::from_secs(60), first)
        .await
        .unwrap_or_else(|_| panic!("no full request first: {:?}", h.log.events()));
    // The fourth waits for more samples or its deadline.
    assert_eq!(h.queue.pending(), 1);
    h.drain.cancel();
    finish(sender).await;
    let events = h.log.events();
    let requests: Vec<usize> = events
        .iter()
        .filter_map(|e| match e {
            Event::Request(n) => Some(*n),
            Event::Sleep(_) => None,
        })
        .collect();
    assert_eq!(requests, [3, 1], "{events:?}");
}

#[tokio::test]
async fn a_rejected_shard_is_dropped_and_the_other_shards_still_deliver() {
    let h = Harness::refusing(|r| holds(r, "p0", 0)).await;
    append_series(&h.queue, 8, 3);
    h.drain.cancel();
    finish(h.start(true, |s| s.max_shards = 4)).await;

    let requests = h.receiver.captured.lock().unwrap().len();
    assert!(requests >= 2, "{requests} requests");
    assert_eq!(h.metric(RW_REQUESTS, Some(("outcome", "rejected"))), 1.0);
    let failed = h.metric(RW_SAMPLES_FAILED, None);
    let sent = h.metric(RW_SAMPLES_SENT, None);
    assert!(failed > 0.0 && sent > 0.0);
    assert_eq!(failed + sent, 24.0);
    assert_eq!(h.queue.pending(), 0);
}

#[tokio::test]
async fn catch_up_requests_wait_for_the_byte_budget_but_the_last_window_does_not() {
    let h = Harness::new(vec![]).await;
    h.append(1..10);
    h.drain.cancel();
    finish(h.start(true, |s| {
        s.max_shards = 1;
        s.max_catchup_bytes_per_second = Some(1);
    }))
    .await;
    let events = h.log.events();
    assert!(
        matches!(
            events.as_slice(),
            [
                Event::Sleep(_),
                Event::Request(3),
                Event::Sleep(_),
                Event::Request(3),
                Event::Request(3)
            ]
        ),
        "{events:?}"
    );
    assert_eq!(h.metric(RW_SAMPLES_SENT, None), 9.0);
}

#[tokio::test]
async fn live_lane_sends_fresh_samples_while_the_backlog_request_is_stuck() {
    let mut h = Harness::new(vec![Reply::Hang]).await;
    h.queue = SharedQueue::with_live_lane(
        Box::new(MemoryQueue::new(100)),
        Some(crate::queue::live::LiveLane::new(3, 12)),
    );
    h.append(1..7);
    let handle = h.start(true, |s| {
        s.max_shards = 1;
        s.accepts_out_of_order = true;
    });
    // The oldest window is in flight and never answered.
    h.log.until(|e| e.contains(&Event::Request(3))).await;
    // Fresh samples behind a backlog of three take the live lane.
    h.append(100..102);
    h.log.until(|e| e.contains(&Event::Request(2))).await;
    // The answer is processed a moment after the receiver logged the request.
    tokio::time::timeout(Duration::from_secs(60), async {
        while h.metric(RW_SAMPLES_SENT, None) < 2.0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("live batch accepted");
    h.abort.cancel();
    finish(handle).await;
    assert_eq!(h.timestamps(0), [1, 2, 3]);
    assert_eq!(h.timestamps(1), [100, 101]);
    // The live samples stay queued until the in-order reader passes them (then skipped).
    assert_eq!(h.queue.pending(), 8);
    assert_eq!(h.metric(RW_SAMPLES_SENT, None), 2.0);
}

#[tokio::test]
async fn in_order_reader_skips_what_the_live_lane_delivered() {
    let mut h = Harness::new(vec![]).await;
    let lane = crate::queue::live::LiveLane::new(3, 12);
    h.queue = SharedQueue::with_live_lane(Box::new(MemoryQueue::new(100)), Some(lane));
    h.append(1..7);
    // As if the live lane had delivered samples 3 and 4 (sequence numbers 2 and 3).
    h.queue.live.as_ref().unwrap().mark_delivered(2..4);
    h.drain.cancel();
    finish(h.start(true, |s| s.max_shards = 1)).await;
    let requests = h.receiver.captured.lock().unwrap().len();
    let all: Vec<i64> = (0..requests).flat_map(|i| h.timestamps(i)).collect();
    assert_eq!(all, [1, 2, 5, 6]);
    assert_eq!(h.queue.pending(), 0);
}

/// A receiver that, like Prometheus without an out-of-order window, refuses a whole request
/// holding a sample older than its series' newest, and stores nothing of it.
async fn strict_receiver(stored: Vec<i64>) -> (reqwest::Url, Arc<Mutex<Vec<i64>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stored = Arc::new(Mutex::new(stored));
    let shared = stored.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let stored = shared.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let stored = stored.clone();
                    async move {
                        let raw = req.into_body().collect().await?.to_bytes();
                        let plain = snap::raw::Decoder::new().decompress_vec(&raw).unwrap();
                        let request = proto::WriteRequest::decode(plain.as_slice()).unwrap();
                        let mut stored = stored.lock().unwrap();
                        let mut newest = stored.last().copied().unwrap_or(i64::MIN);
                        let mut add = Vec::new();
                        let mut status = 204;
                        for s in request.timeseries.iter().flat_map(|t| &t.samples) {
                            if s.timestamp < newest {
                                status = 400;
                                break;
                            }
                            if s.timestamp > newest {
                                add.push(s.timestamp);
                            }
                            newest = s.timestamp;
                        }
                        if status == 204 {
                            stored.extend(add);
                        }
                        Ok::<_, hyper::Error>(
                            hyper::Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::from(if status == 400 {
                                    "out of order sample"
                                } else {
                                    ""
                                })))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (
        format!("http://{addr}/api/v1/write").parse().unwrap(),
        stored,
    )
}

#[tokio::test]
async fn after_a_restart_a_window_mixing_stored_and_new_samples_loses_none() {
    // Before the crash, samples 1..=4 reached the receiver but were not recorded as sent.
    let (url, stored) = strict_receiver(vec![1, 2, 3, 4]).await;
    let h = Harness::new(vec![]).await;
    h.append(1..10);
    h.drain.cancel();
    finish(h.start_sender(true, true, |s| {
        s.url = url;
        s.max_samples_per_send = 10;
    }))
    .await;
    assert_eq!(*stored.lock().unwrap(), (1..10).collect::<Vec<_>>());
    assert_eq!(h.queue.pending(), 0);
    assert_eq!(
        h.metric(RW_SAMPLES_DROPPED, Some(("reason", "duplicate"))),
        3.0
    );
    assert_eq!(h.metric(RW_SAMPLES_FAILED, None), 0.0);
}

#[tokio::test]
async fn without_a_durable_queue_a_refused_window_is_dropped_whole() {
    let (url, stored) = strict_receiver(vec![1, 2, 3, 4]).await;
    let h = Harness::new(vec![]).await;
    h.append(1..10);
    h.drain.cancel();
    finish(h.start(true, |s| {
        s.url = url;
        s.max_samples_per_send = 10;
    }))
    .await;
    assert_eq!(*stored.lock().unwrap(), [1, 2, 3, 4]);
    assert_eq!(h.metric(RW_SAMPLES_FAILED, None), 9.0);
}

#[test]
fn samples_left_behind_by_a_window_wait_from_no_later_than_they_arrived() {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let mut st = RunState::new(1, false);
    // The first window leaves 5: they were queued when it was read.
    st.window_sent(at(100), 2000, 2005);
    assert_eq!(st.oldest, Some(at(100)));
    // The next takes those 5 and leaves 10, which came after the first was read.
    st.window_sent(at(200), 2000, 2010);
    assert_eq!(st.oldest, Some(at(100)));
    st.window_sent(at(300), 2000, 2015);
    assert_eq!(st.oldest, Some(at(200)));
    // A window that cannot take all that the last one left keeps the earliest start.
    st.window_sent(at(400), 3, 9000);
    assert_eq!(st.oldest, Some(at(200)));
    // A window that takes everything: what comes next arrives after it was read.
    st.window_sent(at(500), 8997, 8997);
    assert_eq!(st.oldest, Some(at(500)));
}

/// The requests the receiver got, by sample count, in order.
fn request_sizes(h: &Harness) -> Vec<usize> {
    h.log
        .events()
        .iter()
        .filter_map(|e| match e {
            Event::Request(n) => Some(*n),
            Event::Sleep(_) => None,
        })
        .collect()
}

#[tokio::test]
async fn one_refused_sample_costs_its_series_and_every_other_series_is_delivered_in_order() {
    // Like Prometheus with a sample older than its series' newest: the whole request is
    // refused whenever it holds that sample.
    let h = Harness::refusing(|r| holds(r, "p7", 1)).await;
    append_series(&h.queue, 20, 3);
    h.drain.cancel();
    finish(h.start(true, |s| {
        s.max_samples_per_send = 60;
        s.max_shards = 1;
    }))
    .await;

    // The whole request, then about two per halving of its 20 series.
    let requests = request_sizes(&h);
    assert_eq!(requests[0], 60);
    assert!(requests.len() <= 1 + 2 * 5, "{requests:?}");
    let captured = h.receiver.captured.lock().unwrap();
    let mut per_series: std::collections::BTreeMap<String, Vec<i64>> = Default::default();
    for c in captured.iter().filter(|c| !holds(&c.request, "p7", 1)) {
        for ts in &c.request.timeseries {
            let probe = ts.labels.iter().find(|l| l.name == "probe").unwrap();
            let stamps = per_series.entry(probe.value.clone()).or_default();
            stamps.extend(ts.samples.iter().map(|s| s.timestamp));
        }
    }
    drop(captured);
    assert_eq!(per_series.len(), 19, "{per_series:?}");
    assert!(!per_series.contains_key("p7"));
    for (probe, stamps) in per_series {
        assert_eq!(stamps, [0, 1, 2], "series {probe}");
    }
    // Only the refused series' request is dropped: its three samples.
    assert_eq!(h.metric(RW_SAMPLES_SENT, None), 57.0);
    assert_eq!(h.metric(RW_SAMPLES_FAILED, None), 3.0);
    assert_eq!(
        h.metric(RW_SAMPLES_DROPPED, Some(("reason", "rejected"))),
        3.0
    );
    assert_eq!(h.metric(RW_REQUESTS, Some(("outcome", "rejected"))), 1.0);
    let split = h.metric(RW_REQUESTS, Some(("outcome", "split")));
    let success = h.metric(RW_REQUESTS, Some(("outcome", "success")));
    assert!(split >= 1.0, "{split}");
    assert_eq!(split + success + 1.0, requests.len() as f64);
    assert_eq!(h.metric(RW_SAMPLES_RETRIED, None), 0.0);
    assert_eq!(h.queue.pending(), 0);
}

#[tokio::test]
async fn a_request_refused_in_every_part_costs_a_bounded_number_of_requests() {
    let h = Harness::refusing(|_| true).await;
    append_series(&h.queue, 100, 1);
    h.drain.cancel();
    finish(h.start(true, |s| {
        s.max_samples_per_send = 100;
        s.max_shards = 1;
    }))
    .await;

    assert_eq!(
        request_sizes(&h).len(),
        1 + crate::remote_write::split::MAX_SPLIT_REQUESTS
    );
    // Refused or left unsent, every sample is counted once, and the window is released.
    assert_eq!(h.metric(RW_SAMPLES_FAILED, None), 100.0);
    assert_eq!(
        h.metric(RW_SAMPLES_DROPPED, Some(("reason", "rejected"))),
        100.0
    );
    assert_eq!(h.metric(RW_SAMPLES_SENT, None), 0.0);
    assert_eq!(h.queue.pending(), 0);
}

#[tokio::test]
async fn a_flush_sends_at_once_and_the_sender_runs_on_until_the_stop() {
    let h = Harness::new(vec![]).await;
    let drain = Drain::new();
    // The timer never fires: only the flush can send a batch that is not full.
    let sender = h.sender(false, false, |_| {});
    let handle = tokio::spawn(sender.run_until(drain.handle(), h.abort.clone()));
    h.append(1..3);
    drain.flush();
    tokio::time::timeout(Duration::from_secs(60), drain.flushed())
        .await
        .expect("flushed");
    assert_eq!(h.timestamps(0), [1, 2]);
    assert_eq!(h.queue.pending(), 0);
    assert!(!handle.is_finished());

    // What is queued after the flush goes out with the stop, and only then does it end.
    h.append(3..4);
    drain.stop();
    finish(handle).await;
    assert_eq!(h.timestamps(1), [3]);
    assert_eq!(h.queue.pending(), 0);
}

/// A sender running with a drain that never begins, its control, and its task; two samples
/// are queued, fewer than a batch, and the timer never fires.
async fn controlled() -> (
    Harness,
    crate::remote_write::SenderControl,
    tokio::task::JoinHandle<()>,
) {
    let h = Harness::new(vec![]).await;
    let sender = h.sender(false, false, |_| {});
    let handle = Drain::new().handle();
    let control = handle.control();
    let task = tokio::spawn(sender.run_until(handle, h.abort.clone()));
    h.append(1..3);
    (h, control, task)
}

#[tokio::test]
async fn a_sender_handing_over_takes_no_new_window_and_leaves_the_queue_as_it_was() {
    let (h, control, task) = controlled().await;
    control.hand_over();
    finish(task).await;
    assert!(request_sizes(&h).is_empty());
    assert_eq!(
        h.queue.pending(),
        2,
        "left to the next sender, unacknowledged"
    );
}

#[tokio::test]
async fn a_sender_drained_alone_sends_everything_and_ends_while_the_drain_has_not_begun() {
    let (h, control, task) = controlled().await;
    control.drain_alone();
    finish(task).await;
    assert_eq!(h.timestamps(0), [1, 2]);
    assert_eq!(h.queue.pending(), 0);
}

#[tokio::test]
async fn zstd_bodies_carry_victoriametrics_headers() {
    let h = Harness::new(vec![]).await;
    h.append(1..4);
    h.drain.cancel();
    finish(h.start(true, |s| {
        s.compression = crate::config::CompressionConfig::Zstd;
    }))
    .await;

    let captured = h.receiver.captured.lock().unwrap();
    assert_eq!(captured.len(), 1);
    let headers = &captured[0].headers;
    assert_eq!(headers["content-encoding"], "zstd");
    assert_eq!(headers["x-victoriametrics-remote-write-version"], "1");
    assert!(headers.get("x-prometheus-remote-write-version").is_none());
    assert_eq!(headers["authorization"], format!("Bearer {TOKEN}").as_str());
    drop(captured);
    assert_eq!(h.timestamps(0), [1, 2, 3]);
    assert_eq!(h.metric(RW_COMPRESSION, Some(("compression", "zstd"))), 1.0);
    assert_eq!(
        h.metric(RW_COMPRESSION, Some(("compression", "snappy"))),
        0.0
    );
}

#[tokio::test]
async fn a_refused_zstd_body_is_sent_again_as_snappy_and_never_split_or_dropped() {
    for refusal in [400, 415] {
        let h = Harness::new(vec![status(refusal)]).await;
        // Several series in one request: a 400 to them would otherwise be split by series.
        append_series(&h.queue, 3, 2);
        h.drain.cancel();
        finish(h.start(true, |s| {
            s.compression = crate::config::CompressionConfig::Zstd;
            s.max_samples_per_send = 6;
            s.max_shards = 1;
        }))
        .await;

        let captured = h.receiver.captured.lock().unwrap();
        let encodings: Vec<&str> = captured
            .iter()
            .map(|c| c.headers["content-encoding"].to_str().unwrap())
            .collect();
        assert_eq!(encodings, ["zstd", "snappy"], "after {refusal}");
        // The same request, as snappy: same protobuf, nothing lost or added.
        assert_eq!(captured[0].request, captured[1].request, "after {refusal}");
        assert!(captured[1]
            .headers
            .get("x-victoriametrics-remote-write-version")
            .is_none());
        drop(captured);
        assert_eq!(received(&h).len(), 12, "both requests hold all six samples");
        assert_eq!(h.metric(RW_SAMPLES_SENT, None), 6.0);
        assert_eq!(h.metric(RW_SAMPLES_FAILED, None), 0.0);
        assert_eq!(h.metric(RW_REQUESTS, Some(("outcome", "split"))), 0.0);
        assert_eq!(h.metric(RW_REQUESTS, Some(("outcome", "rejected"))), 0.0);
        assert_eq!(h.metric(RW_ZSTD_REFUSED, None), 1.0);
        assert_eq!(
            h.metric(RW_COMPRESSION, Some(("compression", "snappy"))),
            1.0
        );
        assert_eq!(h.metric(RW_COMPRESSION, Some(("compression", "zstd"))), 0.0);
        // No wait: an encoding refusal is not a failure to back off from.
        assert!(
            !h.log.events().iter().any(|e| matches!(e, Event::Sleep(_))),
            "{:?}",
            h.log.events()
        );
    }
}

#[tokio::test]
async fn after_a_zstd_refusal_every_later_request_is_snappy() {
    let h = Harness::new(vec![status(415)]).await;
    h.append(1..10);
    h.drain.cancel();
    finish(h.start(true, |s| {
        s.compression = crate::config::CompressionConfig::Zstd;
        s.max_shards = 1;
    }))
    .await;
    let captured = h.receiver.captured.lock().unwrap();
    let encodings: Vec<&str> = captured
        .iter()
        .map(|c| c.headers["content-encoding"].to_str().unwrap())
        .collect();
    assert_eq!(encodings, ["zstd", "snappy", "snappy", "snappy"]);
    drop(captured);
    let stamps: Vec<i64> = (1..4).flat_map(|r| h.timestamps(r)).collect();
    assert_eq!(stamps, (1..10).collect::<Vec<_>>());
    assert_eq!(h.metric(RW_ZSTD_REFUSED, None), 1.0);
}

#[tokio::test]
async fn a_snappy_body_refused_with_415_is_dropped_as_before() {
    let h = Harness::new(vec![status(415)]).await;
    h.append(1..4);
    h.drain.cancel();
    finish(h.start(true, |_| {})).await;
    assert_eq!(h.receiver.captured.lock().unwrap().len(), 1);
    assert_eq!(h.metric(RW_SAMPLES_FAILED, None), 3.0);
    assert_eq!(h.metric(RW_ZSTD_REFUSED, None), 0.0);
}

#[tokio::test]
async fn a_nameless_sample_in_a_refused_zstd_request_is_counted_once() {
    let h = Harness::new(vec![status(415)]).await;
    let named = Labels::with_name("probe_success", [("probe", "p1")]).unwrap();
    let nameless = Labels::from_pairs([("probe", "p2")]).unwrap();
    let samples: Vec<Sample> = [named.clone(), nameless, named]
        .into_iter()
        .enumerate()
        .map(|(i, labels)| Sample {
            labels,
            value: 1.0,
            timestamp_ms: i as i64,
        })
        .collect();
    h.queue.append(&samples).unwrap();
    h.drain.cancel();
    finish(h.start(true, |s| {
        s.compression = crate::config::CompressionConfig::Zstd;
    }))
    .await;
    assert_eq!(h.receiver.captured.lock().unwrap().len(), 2);
    assert_eq!(
        h.metric(RW_SAMPLES_DROPPED, Some(("reason", "invalid"))),
        1.0
    );
    assert_eq!(h.metric(RW_SAMPLES_SENT, None), 2.0);
}

#[tokio::test]
async fn the_handshake_carries_the_credentials_and_never_logs_an_echo_of_them() {
    let log_lines = crate::remote_write::log_capture::Captured::start();

    // A portal answering the handshake 200 with a page that quotes the request's credentials.
    let h = Harness::new(vec![Reply::EchoAuthorization(200)]).await;
    h.append(1..4);
    let handle = h.start(true, |s| {
        s.compression = crate::config::CompressionConfig::Auto
    });
    let sent = h.log.until(|e| e.contains(&Event::Request(3)));
    tokio::time::timeout(Duration::from_secs(60), sent)
        .await
        .expect("a request after the handshake");
    h.drain.cancel();
    finish(handle).await;

    let logs = log_lines.text();
    assert!(logs.contains("does not announce zstd"), "{logs}");
    assert!(
        logs.contains("you sent Authorization: Bearer <redacted>"),
        "the handshake carries the endpoint's credentials: {logs}"
    );
    assert!(!logs.contains(TOKEN), "the token leaked into:\n{logs}");
    assert_eq!(
        h.receiver.captured.lock().unwrap()[0].headers["content-encoding"],
        "snappy"
    );
    assert_eq!(
        h.metric(RW_COMPRESSION_HANDSHAKES, Some(("result", "unexpected"))),
        1.0
    );
    assert_eq!(
        h.metric(RW_COMPRESSION_HANDSHAKES, Some(("result", "zstd"))),
        0.0
    );
}

/// Serves one HTTP/1.1 request per connection: records its `Authorization` and answers what
/// `answer` returns for it (`Connection: close`, so each attempt connects anew).
async fn auth_recorder(
    answer: impl Fn(usize) -> u16 + Send + Sync + 'static,
) -> (reqwest::Url, Arc<Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut raw = Vec::new();
            let mut buf = [0u8; 4096];
            // Headers, then the body's Content-Length bytes.
            let (head_end, length) = loop {
                let n = stream.read(&mut buf).await.unwrap();
                raw.extend_from_slice(&buf[..n]);
                if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&raw[..end]).to_lowercase();
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                    break (end + 4, length);
                }
            };
            while raw.len() < head_end + length {
                let n = stream.read(&mut buf).await.unwrap();
                raw.extend_from_slice(&buf[..n]);
            }
            let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
            let auth = head
                .lines()
                .find_map(|l| {
                    l.split_once(':')
                        .filter(|(n, _)| n.eq_ignore_ascii_case("authorization"))
                        .map(|(_, v)| v.trim().to_string())
                })
                .unwrap_or_default();
            let n = {
                let mut seen = record.lock().unwrap();
                seen.push(auth);
                seen.len() - 1
            };
            let status = answer(n);
            let reply =
                format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = stream.write_all(reply.as_bytes()).await;
        }
    });
    (format!("http://{addr}/api/v1/write").parse().unwrap(), seen)
}

#[tokio::test]
async fn a_401_is_sent_once_more_when_the_credentials_file_changed_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "first").unwrap();
    let rotated = token.clone();
    // The receiver already expects the new token: it refuses the first request, and the
    // file is renewed while that request is in flight.
    let (url, seen) = auth_recorder(move |n| {
        if n == 0 {
            std::fs::write(&rotated, "second-token").unwrap();
            401
        } else {
            204
        }
    })
    .await;
    let mut s = settings(url);
    s.auth = Some(Auth::Bearer(crate::auth::SecretSource::File(
        crate::auth::SecretFile::open("remote_write[0].bearer_token_file", &token).unwrap(),
    )));
    let service = WriteService::new(&s).unwrap();
    let answer = service
        .attempt(Bytes::from_static(b"x"), Protocol::V1, Compression::Snappy)
        .await;
    assert_eq!(
        answer.outcome,
        crate::remote_write::retry::Outcome::Status(204)
    );
    assert_eq!(
        *seen.lock().unwrap(),
        ["Bearer first", "Bearer second-token"]
    );

    // Refused again with nothing new in the file: no second request, the 401 stands.
    let (url, seen) = auth_recorder(|_| 401).await;
    let mut s = settings(url);
    s.auth = Some(Auth::Bearer(crate::auth::SecretSource::File(
        crate::auth::SecretFile::open("remote_write[0].bearer_token_file", &token).unwrap(),
    )));
    let service = WriteService::new(&s).unwrap();
    let answer = service
        .attempt(Bytes::from_static(b"x"), Protocol::V1, Compression::Snappy)
        .await;
    assert_eq!(
        answer.outcome,
        crate::remote_write::retry::Outcome::Status(401)
    );
    assert_eq!(seen.lock().unwrap().len(), 1);
}
