//! A scripted remote-write receiver on 127.0.0.1: decodes every write request, lets the test
//! decide the status of each, and tallies the samples it accepted and refused per series.
//!
//! For behaviour a real receiver cannot be made to show on demand (refusing some requests
//! with 400 while accepting others), and for what a real receiver does not show: the exact
//! value bits (staleness markers) and metadata-only requests, kept for every accepted request. It runs on the test's tokio runtime and stops when the
//! [`RwReceiver`] is dropped.
//!
//! It reads snappy and zstd bodies (by `Content-Encoding`), and can be told how to answer
//! VictoriaMetrics' compression handshake and when to start refusing zstd ([`Options`]).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use prost::Message;
use pushprobe::proto::WriteRequest;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Decides the status of the `n`th request (from 0).
pub type Script = dyn Fn(usize, &WriteRequest) -> u16 + Send + Sync;

/// Decides from its headers whether a request is let in; one that is not gets 401 and is
/// neither counted nor tallied.
pub type Gate = dyn Fn(&http::HeaderMap) -> bool + Send + Sync;

/// Samples of one series, by what the receiver answered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Timestamps of accepted samples, in arrival order.
    pub accepted: Vec<i64>,
    /// Timestamps of refused samples, in arrival order.
    pub refused: Vec<i64>,
}

/// How the receiver answers `GET <write url>?get_vm_proto_version=1`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Handshake {
    /// 404, as a receiver without the handshake.
    #[default]
    NotFound,
    /// `1`: zstd bodies are welcome, as VictoriaMetrics answers.
    Zstd,
    /// 200 with a web page (a proxy's or a portal's).
    Html,
    /// Never answers.
    Hang,
}

/// What the receiver does besides its script.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// The handshake answer.
    pub handshake: Handshake,
    /// `(n, status)`: after `n` accepted zstd requests, every zstd request is answered
    /// `status` (its samples are neither accepted nor refused: only its encoding is).
    pub refuse_zstd_after: Option<(usize, u16)>,
}

#[derive(Default)]
struct State {
    /// Handshake requests received.
    handshakes: usize,
    /// Accepted requests by body encoding.
    accepted_snappy: usize,
    accepted_zstd: usize,
    /// zstd bodies let past the refusal gate; counted at the gate so that concurrent
    /// requests cannot both slip in under the limit.
    admitted_zstd: usize,
    /// zstd requests refused for their encoding.
    refused_zstd: usize,
    requests: usize,
    /// The `Authorization` value required, if any; others get 401 before the script runs.
    required_authorization: Option<String>,
    /// Requests refused with 401 for their credentials.
    unauthorized: usize,
    /// By the series' labels as `name{k="v",…}` (sorted).
    series: BTreeMap<String, Tally>,
    /// Every accepted request, decoded.
    accepted: Vec<WriteRequest>,
}

/// One accepted sample: its series' labels in wire order, the value and the timestamp.
#[derive(Debug, Clone, PartialEq)]
pub struct CapturedSample {
    /// `(name, value)` pairs in wire order, `__name__` included.
    pub labels: Vec<(String, String)>,
    /// The value, bits intact.
    pub value: f64,
    /// Milliseconds since the epoch.
    pub timestamp_ms: i64,
}

impl CapturedSample {
    /// The value of label `name`, if present.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The receiver; see the module documentation.
pub struct RwReceiver {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

/// A series' labels as text, `__name__` first: `probe_success{instance="…",probe="x"}`.
pub fn series_key(labels: &[pushprobe::proto::Label]) -> String {
    let name = labels
        .iter()
        .find(|l| l.name == "__name__")
        .map_or("", |l| l.value.as_str());
    let mut rest: Vec<String> = labels
        .iter()
        .filter(|l| l.name != "__name__")
        .map(|l| format!("{}={:?}", l.name, l.value))
        .collect();
    rest.sort();
    format!("{name}{{{}}}", rest.join(","))
}

impl RwReceiver {
    /// Starts a receiver answering each request with `script(n, &request)`.
    pub async fn start(
        script: impl Fn(usize, &WriteRequest) -> u16 + Send + Sync + 'static,
    ) -> Self {
        Self::start_full(Options::default(), |_| true, script).await
    }

    /// Starts a receiver with `options`, answering each request with `script(n, &request)`.
    pub async fn start_with(
        options: Options,
        script: impl Fn(usize, &WriteRequest) -> u16 + Send + Sync + 'static,
    ) -> Self {
        Self::start_full(options, |_| true, script).await
    }

    /// Starts a receiver that answers 401 to requests `gate` refuses, and the others with
    /// `script(n, &request)`.
    pub async fn start_gated(
        gate: impl Fn(&http::HeaderMap) -> bool + Send + Sync + 'static,
        script: impl Fn(usize, &WriteRequest) -> u16 + Send + Sync + 'static,
    ) -> Self {
        Self::start_full(Options::default(), gate, script).await
    }

    /// Starts a receiver with `options` and `gate`, answering with `script(n, &request)`.
    async fn start_full(
        options: Options,
        gate: impl Fn(&http::HeaderMap) -> bool + Send + Sync + 'static,
        script: impl Fn(usize, &WriteRequest) -> u16 + Send + Sync + 'static,
    ) -> Self {
        let gate: Arc<Gate> = Arc::new(gate);
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver on 127.0.0.1");
        let addr = listener.local_addr().expect("receiver address");
        let state = Arc::new(Mutex::new(State::default()));
        let script: Arc<Script> = Arc::new(script);
        let accept_state = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = accept_state.clone();
                let script = script.clone();
                let gate = gate.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        respond(state.clone(), script.clone(), options, gate.clone(), req)
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        RwReceiver { addr, state, task }
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The write URL to configure in pushprobe.
    pub fn write_url(&self) -> String {
        format!("http://{}/api/v1/write", self.addr)
    }

    /// From now on, answers 401 (without running the script or tallying samples) to every
    /// request whose `Authorization` header is not exactly `value`.
    pub fn require_authorization(&self, value: &str) {
        self.state
            .lock()
            .expect("receiver state")
            .required_authorization = Some(value.to_string());
    }

    /// Requests refused with 401 for their credentials (by the gate or the required value)
    /// so far.
    pub fn unauthorized(&self) -> usize {
        self.state.lock().expect("receiver state").unauthorized
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        self.state.lock().expect("receiver state").requests
    }

    /// What happened to each series whose key starts with `prefix` (e.g. `probe_success{`).
    pub fn series(&self, prefix: &str) -> BTreeMap<String, Tally> {
        self.state
            .lock()
            .expect("receiver state")
            .series
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

impl RwReceiver {
    /// Handshake requests received so far.
    pub fn handshakes(&self) -> usize {
        self.state.lock().expect("receiver state").handshakes
    }

    /// Accepted requests so far by body encoding: `(snappy, zstd)`.
    pub fn accepted_by_encoding(&self) -> (usize, usize) {
        let st = self.state.lock().expect("receiver state");
        (st.accepted_snappy, st.accepted_zstd)
    }

    /// zstd requests refused for their encoding so far.
    pub fn refused_zstd(&self) -> usize {
        self.state.lock().expect("receiver state").refused_zstd
    }

    /// Every accepted request so far, decoded (metadata-only requests included).
    pub fn accepted_requests(&self) -> Vec<WriteRequest> {
        self.state.lock().expect("receiver state").accepted.clone()
    }

    /// Every accepted sample so far, in arrival order.
    pub fn accepted_samples(&self) -> Vec<CapturedSample> {
        let mut out = Vec::new();
        for req in self.accepted_requests() {
            for ts in &req.timeseries {
                let labels: Vec<(String, String)> = ts
                    .labels
                    .iter()
                    .map(|l| (l.name.clone(), l.value.clone()))
                    .collect();
                out.extend(ts.samples.iter().map(|s| CapturedSample {
                    labels: labels.clone(),
                    value: s.value,
                    timestamp_ms: s.timestamp,
                }));
            }
        }
        out
    }
}

impl Drop for RwReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn respond(
    state: Arc<Mutex<State>>,
    script: Arc<Script>,
    options: Options,
    gate: Arc<Gate>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: u16, body: &'static str| {
        Ok(Response::builder()
            .status(status)
            .body(Full::new(Bytes::from(body)))
            .expect("build response"))
    };
    if req.method() == hyper::Method::GET {
        let asks = req
            .uri()
            .query()
            .is_some_and(|q| q.contains("get_vm_proto_version=1"));
        if !asks {
            return reply(404, "not found");
        }
        state.lock().expect("receiver state").handshakes += 1;
        return match options.handshake {
            Handshake::NotFound => reply(404, "404 page not found"),
            Handshake::Zstd => reply(200, "1"),
            Handshake::Html => reply(
                200,
                "<html><body><h1>Welcome</h1>1 new message</body></html>",
            ),
            Handshake::Hang => std::future::pending().await,
        };
    }
    let zstd = req
        .headers()
        .get("content-encoding")
        .is_some_and(|v| v.as_bytes() == b"zstd");
    if !gate(req.headers()) {
        state.lock().expect("receiver state").unauthorized += 1;
        return reply(401, "credentials refused by the test gate");
    }
    let authorization = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    {
        let mut st = state.lock().expect("receiver state");
        if st.required_authorization.is_some() && st.required_authorization != authorization {
            st.unauthorized += 1;
            return reply(401, "unauthorized");
        }
    }
    let Ok(body) = req.into_body().collect().await else {
        return reply(400, "unreadable body");
    };
    if zstd {
        let mut st = state.lock().expect("receiver state");
        if let Some((after, status)) = options.refuse_zstd_after {
            if st.admitted_zstd >= after {
                st.refused_zstd += 1;
                return reply(status, "unsupported Content-Encoding: zstd");
            }
            st.admitted_zstd += 1;
        }
    }
    let plain = if zstd {
        zstd::stream::decode_all(body.to_bytes().as_ref()).ok()
    } else {
        snap::raw::Decoder::new()
            .decompress_vec(&body.to_bytes())
            .ok()
    };
    let Some(plain) = plain else {
        return reply(400, "not snappy or zstd as announced");
    };
    let Ok(request) = WriteRequest::decode(plain.as_slice()) else {
        return reply(400, "not a WriteRequest");
    };
    let mut st = state.lock().expect("receiver state");
    let n = st.requests;
    st.requests += 1;
    let status = script(n, &request);
    let accepted = (200..300).contains(&status);
    for ts in &request.timeseries {
        let tally = st.series.entry(series_key(&ts.labels)).or_default();
        let stamps = ts.samples.iter().map(|s| s.timestamp);
        if accepted {
            tally.accepted.extend(stamps);
        } else if (400..500).contains(&status) {
            tally.refused.extend(stamps);
        }
    }
    if accepted {
        st.accepted.push(request);
        if zstd {
            st.accepted_zstd += 1;
        } else {
            st.accepted_snappy += 1;
        }
    }
    drop(st);
    if accepted {
        reply(status, "")
    } else {
        reply(status, "refused by the test script")
    }
}
