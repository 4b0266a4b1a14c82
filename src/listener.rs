//! The optional HTTP listener of `run` (`[agent] listen`): liveness, readiness and the agent's
//! own metrics, for orchestrators and for anyone who can reach the host.
//!
//! - `/-/healthy`: 200 while the process serves requests at all (a liveness probe).
//! - `/-/ready`: 200 once the configuration is loaded and the senders run; 503 before that and
//!   while draining after a shutdown signal, so a load balancer or rollout stops waiting on a
//!   replica that is going away.
//! - `/metrics`: the self-metrics in the Prometheus text format, for a local scrape; the same
//!   numbers are pushed with every other series.
//! - `POST /-/reload`: reloads the configuration, as SIGHUP does; 200 when it applied, 500 with
//!   the configuration errors (which name keys, never secret values) when it did not.
//!
//! `once` and `exec` never start it: a short-lived command has nobody to answer.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::telemetry::Telemetry;

/// Path of the liveness endpoint.
pub const HEALTHY_PATH: &str = "/-/healthy";
/// Path of the readiness endpoint.
pub const READY_PATH: &str = "/-/ready";
/// Path of the self-metrics endpoint.
pub const METRICS_PATH: &str = "/metrics";
/// Path of the reload endpoint (`POST`).
pub const RELOAD_PATH: &str = "/-/reload";
/// The port documented and used by the deployment examples.
pub const DEFAULT_PORT: u16 = 9465;

/// A client gets this long to send its request headers; a stalled client cannot hold a
/// connection (and a task) open forever.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Open connections get this long to finish their response once the listener stops.
const CONNECTION_GRACE: Duration = Duration::from_secs(1);
/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Why the listener could not start.
#[derive(Debug, thiserror::Error)]
#[error("agent.listen {addr}: cannot listen: {source}")]
pub struct ListenError {
    /// The configured address.
    pub addr: SocketAddr,
    /// The socket error (address in use, permission denied, …).
    #[source]
    pub source: std::io::Error,
}

/// What the endpoints report, shared with the agent.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
}

impl Health {
    /// Creates a state that is alive but not ready.
    pub fn new() -> Arc<Self> {
        Arc::new(Health::default())
    }

    /// Marks the agent ready (true) or not ready (false).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Whether the agent is ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

/// A bound listener, not yet serving.
pub struct Listener {
    tcp: TcpListener,
}

impl Listener {
    /// Binds `addr`. Binding happens before anything else starts so that a port already in
    /// use is reported at start-up, not discovered by a failing liveness probe.
    pub async fn bind(addr: SocketAddr) -> Result<Listener, ListenError> {
        let tcp = TcpListener::bind(addr)
            .await
            .map_err(|source| ListenError { addr, source })?;
        Ok(Listener { tcp })
    }

    /// The bound address (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// Serves until `shutdown` is cancelled, then gives open connections a short grace period
    /// and returns once every connection task has ended.
    pub async fn serve(
        self,
        health: Arc<Health>,
        telemetry: Arc<Telemetry>,
        reload: Option<crate::reload::ReloadTrigger>,
        shutdown: CancellationToken,
    ) {
        let connections = TaskTracker::new();
        loop {
            let stream = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = self.tcp.accept() => match r {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "health listener: accept failed");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                        continue;
                    }
                },
            };
            let health = health.clone();
            let telemetry = telemetry.clone();
            let shutdown = shutdown.clone();
            let reload = reload.clone();
            connections.spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    // A reload waits on the agent, so it is answered in the future below.
                    let answer = if req.method() == Method::POST && req.uri().path() == RELOAD_PATH
                    {
                        Err(reload.clone())
                    } else {
                        Ok(respond(&req, &health, &telemetry))
                    };
                    async move {
                        Ok::<_, std::convert::Infallible>(match answer {
                            Ok(r) => r,
                            Err(trigger) => reload_response(trigger).await,
                        })
                    }
                });
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service);
                tokio::pin!(conn);
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            tracing::debug!(error = %e, "health listener: connection ended with an error");
                        }
                    }
                    _ = shutdown.cancelled() => {
                        conn.as_mut().graceful_shutdown();
                        let _ = tokio::time::timeout(CONNECTION_GRACE, conn).await;
                    }
                }
            });
        }
        connections.close();
        connections.wait().await;
    }
}

/// Answers one request; pure apart from reading the shared state.
pub fn respond<B>(
    req: &Request<B>,
    health: &Health,
    telemetry: &Telemetry,
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET and HEAD are served\n",
        );
        resp.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    match req.uri().path() {
        HEALTHY_PATH => text(StatusCode::OK, "pushprobe is healthy\n"),
        READY_PATH if health.is_ready() => text(StatusCode::OK, "pushprobe is ready\n"),
        READY_PATH => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "pushprobe is not ready (starting, or draining after a shutdown signal)\n",
        ),
        METRICS_PATH => {
            let body = telemetry.with(|r| crate::exposition::render(r));
            let mut resp = Response::new(Full::new(Bytes::from(body)));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(crate::exposition::CONTENT_TYPE),
            );
            resp
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: pushprobe serves /-/healthy, /-/ready and /metrics\n",
        ),
    }
}

/// Runs a reload through `trigger` and answers with its outcome; without one (a listener not
/// started by `run`) there is nothing to reload.
async fn reload_response(trigger: Option<crate::reload::ReloadTrigger>) -> Response<Full<Bytes>> {
    let Some(trigger) = trigger else {
        return text(StatusCode::NOT_FOUND, "reload is not available here\n");
    };
    let (status, body) = match trigger.reload().await {
        Ok(()) => (StatusCode::OK, "configuration reloaded\n".to_string()),
        Err(errors) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "configuration not reloaded; the running one stays:\n{}\n",
                errors.join("\n")
            ),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> Request<()> {
        Request::get(path).body(()).unwrap()
    }

    #[test]
    fn readiness_follows_the_shared_state() {
        let health = Health::new();
        let t = Telemetry::new();
        assert_eq!(respond(&get(READY_PATH), &health, &t).status(), 503);
        assert_eq!(respond(&get(HEALTHY_PATH), &health, &t).status(), 200);
        health.set_ready(true);
        assert_eq!(respond(&get(READY_PATH), &health, &t).status(), 200);
        health.set_ready(false);
        assert_eq!(respond(&get(READY_PATH), &health, &t).status(), 503);
    }

    #[test]
    fn metrics_are_the_self_metrics_in_text_format() {
        let health = Health::new();
        let t = Telemetry::new();
        let resp = respond(&get(METRICS_PATH), &health, &t);
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            crate::exposition::CONTENT_TYPE
        );
    }

    /// One request over a real socket; returns the status line and the body.
    async fn fetch(addr: SocketAddr, path: &str) -> (String, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).await.unwrap();
        let status = raw.lines().next().unwrap_or("").to_string();
        let body = raw
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }

    #[tokio::test]
    async fn serves_over_loopback_and_stops_on_shutdown() {
        let listener = Listener::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let health = Health::new();
        let stop = CancellationToken::new();
        let task = tokio::spawn(listener.serve(
            health.clone(),
            Arc::new(Telemetry::new()),
            None,
            stop.clone(),
        ));
        assert_eq!(fetch(addr, HEALTHY_PATH).await.0, "HTTP/1.1 200 OK");
        assert_eq!(
            fetch(addr, READY_PATH).await.0,
            "HTTP/1.1 503 Service Unavailable"
        );
        health.set_ready(true);
        assert_eq!(fetch(addr, READY_PATH).await.0, "HTTP/1.1 200 OK");
        let (status, body) = fetch(addr, METRICS_PATH).await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(
            body.contains(&format!(
                "pushprobe_build_info{{version=\"{}\"}} 1\n",
                env!("CARGO_PKG_VERSION")
            )),
            "{body}"
        );
        stop.cancel();
        task.await.unwrap();
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }

    #[tokio::test]
    async fn a_busy_port_is_reported_at_bind() {
        let first = Listener::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = first.local_addr().unwrap();
        let err = Listener::bind(addr).await.err().expect("second bind fails");
        assert_eq!(err.addr, addr);
        assert!(
            err.to_string().starts_with("agent.listen 127.0.0.1:"),
            "{err}"
        );
    }

    #[test]
    fn unknown_paths_and_methods_are_refused() {
        let health = Health::new();
        let t = Telemetry::new();
        assert_eq!(respond(&get("/nope"), &health, &t).status(), 404);
        let post = Request::post(HEALTHY_PATH).body(()).unwrap();
        let resp = respond(&post, &health, &t);
        assert_eq!(resp.status(), 405);
        assert_eq!(resp.headers()[header::ALLOW], "GET, HEAD");
    }
}
