//! A local HTTP target for probes and scrapes: answers on 127.0.0.1 with a scripted reply
//! (plain, gzip-encoded, or raw bytes with any `Content-Encoding`), counts hits and keeps the
//! latest request's headers.
//!
//! It runs on the test's tokio runtime and stops when the [`TargetServer`] is dropped.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// What the target answers with.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// Delay before the response headers are sent.
    pub delay: Duration,
    /// Response body.
    pub body: String,
    /// `Content-Type` of the response.
    pub content_type: String,
    /// `Content-Encoding` of the response, if any.
    pub content_encoding: Option<String>,
    /// Bytes sent instead of `body`: an encoded, or deliberately broken, body.
    pub raw_body: Option<Vec<u8>>,
}

impl Reply {
    /// A `200` answer of `text`, gzip-encoded as exporters send it when asked.
    pub fn gzip(text: &str) -> Reply {
        use std::io::Write as _;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder
            .write_all(text.as_bytes())
            .expect("gzip into memory");
        Reply {
            content_encoding: Some("gzip".to_string()),
            raw_body: Some(encoder.finish().expect("gzip into memory")),
            ..Reply::default()
        }
    }
}

impl Default for Reply {
    fn default() -> Self {
        Reply {
            status: 200,
            delay: Duration::ZERO,
            body: "ok\n".to_string(),
            content_type: "text/plain".to_string(),
            content_encoding: None,
            raw_body: None,
        }
    }
}

struct State {
    reply: Mutex<Reply>,
    hits: AtomicU64,
    // TCP connections accepted, to check that clients keep theirs.
    connections: AtomicU64,
    // Whether connections are kept after a response (else `Connection: close`).
    keep_alive: std::sync::atomic::AtomicBool,
    // Wall-clock arrival time (ms) of every request, to order events against sample stamps.
    hit_times: Mutex<Vec<i64>>,
    // Headers of the latest request, names lower-cased, to check what a scraper sends.
    last_headers: Mutex<Vec<(String, String)>>,
}

/// A scriptable HTTP/1.1 server on 127.0.0.1 with an ephemeral port.
pub struct TargetServer {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl TargetServer {
    /// Starts a target that answers `200 ok` to every request.
    pub async fn start() -> TargetServer {
        TargetServer::start_with(Reply::default()).await
    }

    /// Starts a target that answers with `reply` to every request.
    pub async fn start_with(reply: Reply) -> TargetServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind target on 127.0.0.1");
        let addr = listener.local_addr().expect("target address");
        let state = Arc::new(State {
            reply: Mutex::new(reply),
            hits: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            keep_alive: std::sync::atomic::AtomicBool::new(true),
            hit_times: Mutex::new(Vec::new()),
            last_headers: Mutex::new(Vec::new()),
        });
        let accept_state = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                accept_state.connections.fetch_add(1, Ordering::SeqCst);
                let keep_alive = accept_state.keep_alive.load(Ordering::SeqCst);
                let conn_state = accept_state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| respond(conn_state.clone(), req));
                    // A probe closing its connection mid-response is not a test failure.
                    let _ = http1::Builder::new()
                        .keep_alive(keep_alive)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        TargetServer { addr, state, task }
    }

    /// `http://127.0.0.1:PORT{path}`; `path` should start with `/`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the reply for all following requests.
    pub fn set_reply(&self, reply: Reply) {
        *self.state.reply.lock().expect("reply lock") = reply;
    }

    /// Changes only the status code of following replies.
    pub fn set_status(&self, status: u16) {
        self.state.reply.lock().expect("reply lock").status = status;
    }

    /// Changes only the delay of following replies.
    pub fn set_delay(&self, delay: Duration) {
        self.state.reply.lock().expect("reply lock").delay = delay;
    }

    /// Requests answered (or being answered) so far.
    pub fn hits(&self) -> u64 {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Whether connections accepted from now on stay open after a response; when not, each
    /// response says `Connection: close` and the server closes it.
    pub fn set_keep_alive(&self, keep: bool) {
        self.state.keep_alive.store(keep, Ordering::SeqCst);
    }

    /// Changes only the body of following replies.
    pub fn set_body(&self, body: &str) {
        self.state.reply.lock().expect("reply lock").body = body.to_string();
    }

    /// The value of header `name` (lower case) in the latest request.
    pub fn last_header(&self, name: &str) -> Option<String> {
        self.state
            .last_headers
            .lock()
            .expect("headers lock")
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }

    /// Wall-clock arrival times (ms since the epoch) of all requests so far, in order.
    pub fn hit_times_ms(&self) -> Vec<i64> {
        self.state.hit_times.lock().expect("hit times lock").clone()
    }
}

impl Drop for TargetServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn respond(
    state: Arc<State>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    *state.last_headers.lock().expect("headers lock") = req
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                v.to_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    state.hits.fetch_add(1, Ordering::SeqCst);
    state
        .hit_times
        .lock()
        .expect("hit times lock")
        .push(super::now_ms());
    let reply = state.reply.lock().expect("reply lock").clone();
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = Response::builder()
        .status(status)
        .header("content-type", reply.content_type.as_str());
    if let Some(encoding) = &reply.content_encoding {
        response = response.header("content-encoding", encoding.as_str());
    }
    let body = match reply.raw_body {
        Some(raw) => Bytes::from(raw),
        None => Bytes::from(reply.body),
    };
    Ok(response.body(Full::new(body)).expect("build response"))
}
