//! A scripted remote-write receiver on 127.0.0.1: decodes every write request, lets the test
//! decide the status of each, and tallies the samples it accepted and refused per series.
//!
//! For behaviour a real receiver cannot be made to show on demand (refusing some requests
//! with 400 while accepting others), and for what a real receiver does not show: the exact
//! value bits (staleness markers) and metadata-only requests, kept for every accepted request. It runs on the test's tokio runtime and stops when the
//! [`RwReceiver`] is dropped.

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

/// Samples of one series, by what the receiver answered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Timestamps of accepted samples, in arrival order.
    pub accepted: Vec<i64>,
    /// Timestamps of refused samples, in arrival order.
    pub refused: Vec<i64>,
}

#[derive(Default)]
struct State {
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
                tokio::spawn(async move {
                    let service =
                        service_fn(move |req| respond(state.clone(), script.clone(), req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        RwReceiver { addr, state, task }
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

    /// Requests refused with 401 for their credentials so far.
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
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: u16, body: &'static str| {
        Ok(Response::builder()
            .status(status)
            .body(Full::new(Bytes::from(body)))
            .expect("build response"))
    };
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
    let Ok(plain) = snap::raw::Decoder::new().decompress_vec(&body.to_bytes()) else {
        return reply(400, "not snappy");
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
    }
    drop(st);
    if accepted {
        reply(status, "")
    } else {
        reply(status, "refused by the test script")
    }
}
