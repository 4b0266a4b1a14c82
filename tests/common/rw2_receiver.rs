//! A scripted receiver that reads both remote-write messages on 127.0.0.1: it decodes a body
//! as 1.0 or 2.0 by its `Content-Type`, as a 2.0 receiver does, lets the test script each
//! answer (status, headers, body), and keeps every sample of every request it answered 2xx,
//! with the message it came in.
//!
//! For answers no real receiver gives on demand: bogus `-Written` headers, partial writes,
//! garbage bodies, a 2.0 receiver that says nothing. Runs on the test's tokio runtime and
//! stops when dropped.

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
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The message a request carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Msg {
    /// `prometheus.WriteRequest`.
    V1,
    /// `io.prometheus.write.v2.Request`.
    V2,
}

/// One request as the script sees it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The message, by `Content-Type`.
    pub msg: Msg,
    /// Its samples: series key (see [`super::rw_receiver::series_key`]), value, timestamp.
    pub samples: Vec<(String, f64, i64)>,
    /// `X-Prometheus-Remote-Write-Version`.
    pub version: String,
    /// 2.0 only: what each series carried besides samples, by metric name.
    pub metadata: Vec<(String, WireMeta)>,
}

/// What a 2.0 series carried besides its labels and samples.
#[derive(Debug, Clone, PartialEq)]
pub struct WireMeta {
    /// `Metadata.type` (1 counter, 2 gauge, 3 histogram, …; 0 unset or no metadata).
    pub kind: i32,
    /// The help text.
    pub help: String,
    /// The unit.
    pub unit: String,
    /// The first sample's `start_timestamp` (0: unset).
    pub start_ms: i64,
}

/// How to answer one request.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status.
    pub status: u16,
    /// Extra response headers.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

impl Answer {
    /// A status with no headers and no body.
    pub fn status(status: u16) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body: String::new(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Answer {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: &str) -> Answer {
        self.body = body.into();
        self
    }
}

/// What a correct 2.0 receiver answers to a 2.0 request it wrote whole, and a 1.0 receiver
/// to a 1.0 one.
pub fn honest(seen: &Seen) -> Answer {
    match seen.msg {
        Msg::V2 => Answer::status(204)
            .header(
                "X-Prometheus-Remote-Write-Samples-Written",
                &seen.samples.len().to_string(),
            )
            .header("X-Prometheus-Remote-Write-Histograms-Written", "0")
            .header("X-Prometheus-Remote-Write-Exemplars-Written", "0"),
        Msg::V1 => Answer::status(204),
    }
}

type Script = dyn Fn(usize, &Seen) -> Answer + Send + Sync;

#[derive(Default)]
struct State {
    /// Every request, in arrival order, with the status it got.
    requests: Vec<(Seen, u16)>,
}

/// The receiver; see the module documentation.
pub struct Rw2Receiver {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Rw2Receiver {
    /// Starts a receiver answering the `n`th request (from 0) with `script(n, &seen)`.
    pub async fn start(script: impl Fn(usize, &Seen) -> Answer + Send + Sync + 'static) -> Self {
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
        Rw2Receiver { addr, state, task }
    }

    /// The write URL.
    pub fn write_url(&self) -> String {
        format!("http://{}/api/v1/write", self.addr)
    }

    /// Every request so far with the status it got.
    pub fn requests(&self) -> Vec<(Seen, u16)> {
        self.state.lock().expect("receiver state").requests.clone()
    }

    /// The latest metadata each metric name came with (2.0 requests answered 2xx).
    pub fn metadata(&self) -> std::collections::BTreeMap<String, WireMeta> {
        self.requests()
            .into_iter()
            .filter(|(_, status)| (200..300).contains(status))
            .flat_map(|(seen, _)| seen.metadata)
            .collect()
    }

    /// Samples of requests answered 2xx whose series key starts with `prefix`, as
    /// `(key, timestamp)`, in arrival order, with the message they came in.
    pub fn accepted(&self, prefix: &str) -> Vec<(Msg, String, i64)> {
        self.requests()
            .into_iter()
            .filter(|(_, status)| (200..300).contains(status))
            .flat_map(|(seen, _)| {
                seen.samples
                    .into_iter()
                    .filter(|(k, _, _)| k.starts_with(prefix))
                    .map(move |(k, _, t)| (seen.msg, k, t))
            })
            .collect()
    }
}

impl Drop for Rw2Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Decodes a 2.0 body into series keys and samples, and each series' metadata by name.
type Decoded = (Vec<(String, f64, i64)>, Vec<(String, WireMeta)>);

fn decode_v2(plain: &[u8]) -> Option<Decoded> {
    let req = pushprobe::proto_v2::Request::decode(plain).ok()?;
    let mut out = Vec::new();
    let mut metadata = Vec::new();
    for ts in &req.timeseries {
        let labels: Vec<pushprobe::proto::Label> = ts
            .labels_refs
            .chunks(2)
            .map(|p| {
                Some(pushprobe::proto::Label {
                    name: req.symbols.get(*p.first()? as usize)?.clone(),
                    value: req.symbols.get(*p.get(1)? as usize)?.clone(),
                })
            })
            .collect::<Option<_>>()?;
        let key = super::rw_receiver::series_key(&labels);
        let symbol = |i: u32| req.symbols.get(i as usize).cloned();
        let meta = ts.metadata.unwrap_or_default();
        let name = labels
            .iter()
            .find(|l| l.name == "__name__")
            .map(|l| l.value.clone())
            .unwrap_or_default();
        metadata.push((
            name,
            WireMeta {
                kind: meta.r#type,
                help: symbol(meta.help_ref)?,
                unit: symbol(meta.unit_ref)?,
                start_ms: ts.samples.first().map_or(0, |s| s.start_timestamp),
            },
        ));
        out.extend(
            ts.samples
                .iter()
                .map(|s| (key.clone(), s.value, s.timestamp)),
        );
    }
    Some((out, metadata))
}

async fn respond(
    state: Arc<Mutex<State>>,
    script: Arc<Script>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let msg = if header("content-type").contains("io.prometheus.write.v2.Request") {
        Msg::V2
    } else {
        Msg::V1
    };
    let version = header("x-prometheus-remote-write-version");
    let plain = match req.into_body().collect().await {
        Ok(body) => snap::raw::Decoder::new()
            .decompress_vec(&body.to_bytes())
            .ok(),
        Err(_) => None,
    };
    let decoded = plain.and_then(|plain| match msg {
        Msg::V2 => decode_v2(&plain),
        Msg::V1 => pushprobe::proto::WriteRequest::decode(plain.as_slice())
            .ok()
            .map(|r| {
                r.timeseries
                    .iter()
                    .flat_map(|ts| {
                        let key = super::rw_receiver::series_key(&ts.labels);
                        ts.samples
                            .iter()
                            .map(move |s| (key.clone(), s.value, s.timestamp))
                    })
                    .collect()
            })
            .map(|samples| (samples, Vec::new())),
    });
    let Some((samples, metadata)) = decoded else {
        return Ok(Response::builder()
            .status(400)
            .body(Full::new(Bytes::from("undecodable body")))
            .expect("build response"));
    };
    let seen = Seen {
        msg,
        samples,
        version,
        metadata,
    };
    let answer = {
        let mut st = state.lock().expect("receiver state");
        let answer = script(st.requests.len(), &seen);
        st.requests.push((seen, answer.status));
        answer
    };
    let mut builder = Response::builder().status(answer.status);
    for (name, value) in &answer.headers {
        builder = builder.header(name, value);
    }
    Ok(builder
        .body(Full::new(Bytes::from(answer.body)))
        .expect("build response"))
}
