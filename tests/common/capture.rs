//! A remote-write capture receiver: accepts every write request on 127.0.0.1, decodes it
//! (snappy, then protobuf) and keeps it, so tests can check exactly what pushprobe sent —
//! staleness-marker bits, metadata requests — which a real receiver does not show.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prost::Message;
use pushprobe::proto::WriteRequest;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A running capture receiver; stops when dropped.
pub struct CaptureReceiver {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<WriteRequest>>>,
    task: JoinHandle<()>,
}

/// One sample as captured: the series' labels (sorted, `__name__` included), the value's
/// bits and the timestamp.
#[derive(Debug, Clone, PartialEq)]
pub struct CapturedSample {
    /// `name=value` pairs in wire order.
    pub labels: Vec<(String, String)>,
    /// The value.
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

impl CaptureReceiver {
    /// Starts the receiver on an ephemeral port.
    pub async fn start() -> CaptureReceiver {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind capture receiver");
        let addr = listener.local_addr().expect("capture address");
        let requests: Arc<Mutex<Vec<WriteRequest>>> = Arc::default();
        let store = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let store = store.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| receive(store.clone(), req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        CaptureReceiver {
            addr,
            requests,
            task,
        }
    }

    /// The write URL to configure.
    pub fn write_url(&self) -> String {
        format!("http://{}/api/v1/write", self.addr)
    }

    /// Every request received so far, decoded.
    pub fn requests(&self) -> Vec<WriteRequest> {
        self.requests.lock().expect("capture lock").clone()
    }

    /// Every sample received so far, in arrival order.
    pub fn samples(&self) -> Vec<CapturedSample> {
        let mut out = Vec::new();
        for req in self.requests() {
            for ts in &req.timeseries {
                let labels: Vec<(String, String)> = ts
                    .labels
                    .iter()
                    .map(|l| (l.name.clone(), l.value.clone()))
                    .collect();
                for s in &ts.samples {
                    out.push(CapturedSample {
                        labels: labels.clone(),
                        value: s.value,
                        timestamp_ms: s.timestamp,
                    });
                }
            }
        }
        out
    }
}

impl Drop for CaptureReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(
    store: Arc<Mutex<Vec<WriteRequest>>>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, text: &str| {
        Ok(Response::builder()
            .status(status)
            .body(Full::new(Bytes::from(text.to_string())))
            .expect("build response"))
    };
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return reply(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let raw = match snap::raw::Decoder::new().decompress_vec(&body) {
        Ok(r) => r,
        Err(e) => return reply(StatusCode::BAD_REQUEST, &format!("snappy: {e}")),
    };
    match WriteRequest::decode(raw.as_slice()) {
        Ok(w) => {
            store.lock().expect("capture lock").push(w);
            reply(StatusCode::NO_CONTENT, "")
        }
        Err(e) => reply(StatusCode::BAD_REQUEST, &format!("protobuf: {e}")),
    }
}
