//! A counting pass-through on 127.0.0.1: forwards every request to a real receiver unchanged
//! and answers with the receiver's answer, noting each request's method, query and
//! `Content-Encoding`. It shows what went over the wire (zstd or snappy bodies, a handshake)
//! where the receiver itself does not tell.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// One forwarded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// `GET`, `POST`, …
    pub method: String,
    /// The query string, if any.
    pub query: Option<String>,
    /// The `Content-Encoding` header, if any.
    pub encoding: Option<String>,
    /// The receiver's status.
    pub status: u16,
}

/// The pass-through; stops when dropped.
pub struct Passthrough {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl Passthrough {
    /// Starts forwarding to `upstream` (`http://127.0.0.1:PORT`).
    pub async fn start(upstream: &str) -> Passthrough {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind pass-through on 127.0.0.1");
        let addr = listener.local_addr().expect("pass-through address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let client = reqwest::Client::new();
        let upstream = upstream.trim_end_matches('/').to_string();
        let state = (seen.clone(), client, upstream);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| forward(state.clone(), req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Passthrough { addr, seen, task }
    }

    /// The base URL to use in place of the receiver's.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request forwarded so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("pass-through state").clone()
    }

    /// POSTs forwarded so far with `Content-Encoding: encoding`.
    pub fn posts(&self, encoding: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.method == "POST" && s.encoding.as_deref() == Some(encoding))
            .collect()
    }
}

impl Drop for Passthrough {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(
    (seen, client, upstream): (Arc<Mutex<Vec<Seen>>>, reqwest::Client, String),
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut out = client.request(parts.method.clone(), format!("{upstream}{path}"));
    for (name, value) in &parts.headers {
        if name != "host" && name != "content-length" {
            out = out.header(name, value);
        }
    }
    let (status, answer) = match out.body(body).send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.bytes().await.unwrap_or_default())
        }
        Err(e) => (502, Bytes::from(format!("upstream: {e}"))),
    };
    seen.lock().expect("pass-through state").push(Seen {
        method: parts.method.to_string(),
        query: parts.uri.query().map(str::to_owned),
        encoding: parts
            .headers
            .get("content-encoding")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        status,
    });
    Ok(Response::builder()
        .status(status)
        .body(Full::new(answer))
        .expect("build response"))
}
