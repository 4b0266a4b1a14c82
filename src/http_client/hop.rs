//! One hop of a call: a single request, sent on the connection a [`KeepAlive`] holds when it
//! suits, else on a new connection opened phase by phase (`resolve`, `connect`, `tls`,
//! `processing`), each phase timed into the [`Trace`] under the call's deadline, directly or
//! through the proxy the client's settings name for the URL.

use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use reqwest::Url;
use tokio::time::Instant;

use super::connect::{
    connect, handshake, resolve, tls_info, ConnTask, IdleConn, IpPreference, Stream, Target,
    KEPT_READ_BUFFER,
};
use super::headers::build_request;
use super::proxy;
use super::trace::phase;
use super::{ClientError, HttpClient, KeepAlive, Phase, Trace};

/// What both ways of sending a hop share: the request as the redirects so far have changed
/// it, and the call's deadline.
pub(super) struct HopRequest<'a> {
    pub(super) method: &'a Method,
    pub(super) url: &'a Url,
    pub(super) headers: &'a [(String, String)],
    pub(super) body: Option<&'a Bytes>,
    /// When the whole call must be over.
    pub(super) deadline: Instant,
    /// The call's timeout, for the error that says it ran out.
    pub(super) timeout: Duration,
    /// The address family to connect over.
    pub(super) ip: IpPreference,
}

impl HopRequest<'_> {
    /// The hyper request; `close` asks the server to close the connection after it.
    fn build(&self, close: bool) -> Result<http::Request<Full<Bytes>>, ClientError> {
        build_request(self.method, self.url, self.headers, self.body, close)
    }

    /// Whether a request the server never answered may go again on a new connection: a
    /// body-less GET or HEAD, as browsers and Go's client resend.
    fn may_resend(&self) -> bool {
        self.body.is_none() && (*self.method == Method::GET || *self.method == Method::HEAD)
    }
}

/// A response to one hop, with the task driving its connection unless a [`KeepAlive`]
/// holds it.
pub(super) struct Hop {
    /// The response head; its body is still to be read.
    pub(super) response: http::Response<Incoming>,
    /// The connection's task when no `KeepAlive` holds it.
    pub(super) conn: Option<ConnTask>,
    /// When the response headers arrived.
    pub(super) headers_at: Instant,
}

impl HttpClient {
    /// The hyper request of `hop`, in absolute form with the proxy's credentials when it is
    /// forwarded by a proxy.
    fn build(
        &self,
        hop: &HopRequest<'_>,
        close: bool,
    ) -> Result<http::Request<Full<Bytes>>, ClientError> {
        let mut request = hop.build(close)?;
        if let Some(p) = self.forwarding(hop.url) {
            proxy::forward(&mut request, hop.url, p)?;
        }
        Ok(request)
    }

    /// The proxy that forwards requests to `url`: one routing an http URL (an https one goes
    /// through a tunnel instead).
    fn forwarding(&self, url: &Url) -> Option<&proxy::Proxy> {
        self.proxy.route(url).filter(|_| url.scheme() == "http")
    }

    /// One request: on the connection `keep` holds if it suits, else on a fresh one (kept
    /// afterwards when `keep` is given).
    pub(super) async fn hop(
        &self,
        hop: &HopRequest<'_>,
        trace: &mut Trace,
        mut keep: Option<&mut KeepAlive>,
    ) -> Result<Hop, ClientError> {
        let target = Target::from_url(hop.url)?;
        let close = keep.is_none();
        // Header errors are configuration errors: report them before touching the network.
        let mut request = self.build(hop, close)?;

        // A kept connection that is not idle yet (its previous body unread, or its task not
        // yet back from finishing it) is closed and replaced: scrapes are seconds apart, so
        // waiting for it would only ever wait on a stuck body.
        if let Some(k) = keep.as_deref_mut() {
            if let Some(idle) = k.take_idle(&target) {
                if let Some(answered) = reuse(idle, request, hop, trace, k).await? {
                    if let Some(p) = self.forwarding(hop.url) {
                        proxy::refused_forward(&answered.response, p)?;
                    }
                    return Ok(answered);
                }
                // hyper gave up the request along with the closed connection.
                request = self.build(hop, close)?;
            }
        }
        self.open(target, request, hop, trace, keep).await
    }

    /// Opens a new connection to `target`, timing each phase, and sends `request` on it. The
    /// connection goes into `keep` when given; otherwise it lives as long as the response.
    async fn open(
        &self,
        target: Target,
        request: http::Request<Full<Bytes>>,
        hop: &HopRequest<'_>,
        trace: &mut Trace,
        keep: Option<&mut KeepAlive>,
    ) -> Result<Hop, ClientError> {
        let close = keep.is_none();
        let (deadline, timeout) = (hop.deadline, hop.timeout);
        // Through a proxy, the connection goes to the proxy; the target is named in the
        // request (http) or in the tunnel's CONNECT (https).
        let via = self.proxy.route(hop.url);
        let dial = match via {
            Some(p) => p.target()?,
            None => target.clone(),
        };
        let unreachable = |e: ClientError| match via {
            Some(p) if e.kind() != "timeout" => ClientError::Proxy {
                proxy: p.name(),
                problem: format!("cannot be reached: {e}"),
            },
            _ => e,
        };
        let addrs = phase(
            trace,
            Phase::Resolve,
            deadline,
            timeout,
            resolve(&dial, hop.ip),
        )
        .await
        .map_err(unreachable)?;
        // A probe measures the preferred address only, as the blackbox exporter does. A
        // scheduled request falls back to the host's other addresses, as Prometheus' dialer
        // does: `localhost` may resolve to ::1 and 127.0.0.1 with the exporter on only one.
        let tries = if close { 1 } else { addrs.len() };
        if let Some(&first) = addrs.first() {
            trace.first_addr.get_or_insert(first);
            trace.addr = Some(first);
        }
        let (addr, tcp) = phase(
            trace,
            Phase::Connect,
            deadline,
            timeout,
            connect(addrs.iter().take(tries).copied(), &dial.host),
        )
        .await
        .inspect_err(|e| {
            if let ClientError::Connect { addr, .. } = e {
                trace.addr = Some(*addr);
            }
        })
        .map_err(unreachable)?;
        trace.addr = Some(addr);
        let mut tcp = tcp;
        if let Some(p) = via {
            if target.tls {
                let opening = proxy::tunnel(&mut tcp, p, &target);
                phase(trace, Phase::Connect, deadline, timeout, opening).await?;
            }
        }

        trace.tls = None;
        let stream = if target.tls {
            let name = self
                .server_name
                .clone()
                .unwrap_or_else(|| target.host.name());
            // Loading the trust store (once per process) is set-up, not handshake time.
            let connector = self.connector().map_err(|e| ClientError::Tls {
                server: name.clone(),
                source: std::io::Error::other(e),
            })?;
            let tls = phase(
                trace,
                Phase::Tls,
                deadline,
                timeout,
                handshake(&connector, name, tcp),
            )
            .await
            .map_err(|e| match via {
                Some(p) => proxy::closed_tunnel(e, p),
                None => e,
            })?;
            trace.tls = Some(tls_info(&tls));
            Stream::Tls(Box::new(tls))
        } else {
            Stream::Plain(tcp)
        };

        // A proxy that refuses to forward answers with its own status.
        let refused = |response: &http::Response<Incoming>| match self.forwarding(hop.url) {
            Some(p) => proxy::refused_forward(response, p),
            None => Ok(()),
        };
        let (response, conn) = match keep {
            Some(k) => {
                let exchange = kept_request(stream, request);
                let (response, task) =
                    phase(trace, Phase::Processing, deadline, timeout, exchange).await?;
                refused(&response)?;
                k.hold(target, addr, trace.tls.clone(), task);
                (response, None)
            }
            None => {
                let exchange = first_request(stream, request);
                let (response, task) =
                    phase(trace, Phase::Processing, deadline, timeout, exchange).await?;
                refused(&response)?;
                (response, Some(task))
            }
        };
        let headers_at = Instant::now();
        trace.headers_at = Some(headers_at);
        Ok(Hop {
            response,
            conn,
            headers_at,
        })
    }
}

/// Sends `request` on a kept connection's idle stream and, once it has answered, holds the
/// connection in `keep` again. `Ok(None)` when the server had closed the connection as the
/// request went out and the request may go again on a new one.
async fn reuse(
    idle: IdleConn,
    request: http::Request<Full<Bytes>>,
    hop: &HopRequest<'_>,
    trace: &mut Trace,
    keep: &mut KeepAlive,
) -> Result<Option<Hop>, ClientError> {
    let IdleConn {
        target,
        addr,
        tls,
        stream,
    } = idle;
    trace.addr = Some(addr);
    trace.first_addr.get_or_insert(addr);
    trace.tls = tls.clone();
    trace.enter(Phase::Processing);
    let began = Instant::now();
    let sent = tokio::time::timeout_at(hop.deadline, kept_request(stream, request)).await;
    trace.phases.add(Phase::Processing, began.elapsed());
    match sent {
        Err(_) => Err(ClientError::Timeout {
            phase: Phase::Processing,
            timeout: hop.timeout,
        }),
        Ok(Ok((response, task))) => {
            let headers_at = Instant::now();
            trace.headers_at = Some(headers_at);
            keep.hold(target, addr, tls, task);
            Ok(Some(Hop {
                response,
                conn: None,
                headers_at,
            }))
        }
        // The server closed the idle connection as the request went out (it may close one
        // whenever it likes) and answered nothing: a request that may be resent goes again
        // on a fresh connection. Anything else is the server's answer to this request, and is
        // reported.
        Ok(Err(ClientError::Http { source: e, .. }))
            if (e.is_incomplete_message() || e.is_canceled()) && hop.may_resend() =>
        {
            Ok(None)
        }
        Ok(Err(e)) => Err(e),
    }
}

/// The error of the HTTP/1.1 exchange of a hop.
fn http_err(source: hyper::Error) -> ClientError {
    ClientError::Http {
        phase: Phase::Processing,
        source,
    }
}

/// Speaks HTTP/1.1 on a new connection that closes after one request; returns the response
/// head and the task that drives the connection.
async fn first_request(
    stream: Stream,
    request: http::Request<Full<Bytes>>,
) -> Result<(http::Response<Incoming>, ConnTask), ClientError> {
    let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
        .handshake::<_, Full<Bytes>>(TokioIo::new(stream))
        .await
        .map_err(http_err)?;
    // Errors of the connection task also fail the response future or the body, where they
    // are reported; the task's own result adds nothing.
    let conn = ConnTask(tokio::spawn(async move {
        let _ = connection.await;
    }));
    let response = sender.send_request(request).await.map_err(http_err)?;
    Ok((response, conn))
}

/// Speaks HTTP/1.1 on a stream that is kept between requests (new or idle) for one request;
/// returns the response head and the task that drives the connection. The task ends once the
/// response has been read to its end, with the stream if the connection can carry another
/// request (both sides keep it and nothing is left over), so that no HTTP state or buffer
/// outlives the exchange.
async fn kept_request(
    stream: Stream,
    request: http::Request<Full<Bytes>>,
) -> Result<(http::Response<Incoming>, ConnTask<Option<Stream>>), ClientError> {
    let (mut sender, mut connection) = hyper::client::conn::http1::Builder::new()
        .max_buf_size(KEPT_READ_BUFFER)
        .handshake::<_, Full<Bytes>>(TokioIo::new(stream))
        .await
        .map_err(http_err)?;
    // Queued now; the task below writes it.
    let response = sender.send_request(request);
    let conn = ConnTask(tokio::spawn(async move {
        // hyper asks for the next request only once the response was read to its end and
        // the connection stays open (no `Connection: close`, no body left unread); a
        // connection that cannot go on ends instead.
        let idle = std::future::poll_fn(|cx| {
            if connection.poll_without_shutdown(cx).is_ready() {
                return Poll::Ready(false);
            }
            sender.poll_ready(cx).map(|ready| ready.is_ok())
        })
        .await;
        if !idle {
            return None;
        }
        // Without its sender, the idle connection ends at once and gives its stream back.
        drop(sender);
        let parts = connection.without_shutdown().await.ok()?;
        parts.read_buf.is_empty().then(|| parts.io.into_inner())
    }));
    let response = response.await.map_err(http_err)?;
    Ok((response, conn))
}
