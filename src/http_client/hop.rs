//! One hop of a call: a single request, sent on the connection a [`KeepAlive`] holds when it
//! suits, else on a new connection opened phase by phase (`resolve`, `connect`, `tls`,
//! `processing`), each phase timed into the [`Trace`] under the call's deadline.

use std::io;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use reqwest::Url;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::connect::{
    handshake, resolve, tls_version_name, ConnTask, KeptConn, Stream, Target, KEPT_READ_BUFFER,
};
use super::headers::build_request;
use super::trace::phase;
use super::{ClientError, HttpClient, KeepAlive, Phase, TlsInfo, Trace};

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
    /// One request: on the connection `keep` holds if it suits, else on a fresh one (kept
    /// afterwards when `keep` is given).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn hop(
        &self,
        method: &Method,
        url: &Url,
        headers: &[(String, String)],
        body: Option<&Bytes>,
        deadline: Instant,
        timeout: Duration,
        trace: &mut Trace,
        mut keep: Option<&mut KeepAlive>,
    ) -> Result<Hop, ClientError> {
        let target = Target::from_url(url)?;
        let close = keep.is_none();
        // Header errors are configuration errors: report them before touching the network.
        let mut request = Some(build_request(method, url, headers, body, close)?);

        // A kept connection that is not idle yet (its previous body unread, or its task not
        // yet back from finishing it) is closed and replaced: scrapes are seconds apart, so
        // waiting for it would only ever wait on a stuck body.
        if let Some(mut kept) = keep.as_deref_mut().and_then(|k| k.take_idle(&target)) {
            let req = match request.take() {
                Some(r) => r,
                None => build_request(method, url, headers, body, close)?,
            };
            trace.addr = Some(kept.addr);
            trace.first_addr.get_or_insert(kept.addr);
            trace.tls = kept.tls.clone();
            trace.enter(Phase::Processing);
            let began = Instant::now();
            let sent = tokio::time::timeout_at(deadline, kept.sender.send_request(req)).await;
            trace.phases.add(Phase::Processing, began.elapsed());
            match sent {
                Err(_) => {
                    return Err(ClientError::Timeout {
                        phase: Phase::Processing,
                        timeout,
                    })
                }
                Ok(Ok(response)) => {
                    let headers_at = Instant::now();
                    trace.headers_at = Some(headers_at);
                    if let Some(k) = keep {
                        k.hold(kept);
                    }
                    return Ok(Hop {
                        response,
                        conn: None,
                        headers_at,
                    });
                }
                // The server closed the idle connection as the request went out (it may close
                // one whenever it likes) and answered nothing: a body-less GET or HEAD is sent
                // again on a fresh connection, as browsers and Go's client do. Anything else
                // is the server's answer to this request, and is reported.
                Ok(Err(e))
                    if (e.is_incomplete_message() || e.is_canceled())
                        && body.is_none()
                        && (*method == Method::GET || *method == Method::HEAD) => {}
                Ok(Err(source)) => {
                    return Err(ClientError::Http {
                        phase: Phase::Processing,
                        source,
                    })
                }
            }
        }
        let request = match request {
            Some(r) => r,
            None => build_request(method, url, headers, body, close)?,
        };

        let addrs = phase(trace, Phase::Resolve, deadline, timeout, resolve(&target)).await?;
        // A probe measures the preferred address only, as the blackbox exporter does. A
        // scheduled request falls back to the host's other addresses, as Prometheus' dialer
        // does: `localhost` may resolve to ::1 and 127.0.0.1 with the exporter on only one.
        let tries = if close { 1 } else { addrs.len() };
        if let Some(&first) = addrs.first() {
            trace.first_addr.get_or_insert(first);
            trace.addr = Some(first);
        }
        let (addr, tcp) = phase(trace, Phase::Connect, deadline, timeout, async {
            let mut failed = None;
            for &addr in addrs.iter().take(tries) {
                match TcpStream::connect(addr).await {
                    Ok(tcp) => {
                        // Requests are small and written at once; Nagle would only delay them.
                        let _ = tcp.set_nodelay(true);
                        return Ok((addr, tcp));
                    }
                    Err(source) => failed = Some(ClientError::Connect { addr, source }),
                }
            }
            Err(failed.unwrap_or_else(|| ClientError::NoAddress {
                host: target.host.name(),
            }))
        })
        .await
        .inspect_err(|e| {
            if let ClientError::Connect { addr, .. } = e {
                trace.addr = Some(*addr);
            }
        })?;
        trace.addr = Some(addr);

        trace.tls = None;
        let stream = if target.tls {
            let name = self
                .server_name
                .clone()
                .unwrap_or_else(|| target.host.name());
            // Loading the trust store (once per process) is set-up, not handshake time.
            let connector = self.connector().map_err(|e| ClientError::Tls {
                server: name.clone(),
                source: io::Error::other(e),
            })?;
            let tls = phase(
                trace,
                Phase::Tls,
                deadline,
                timeout,
                handshake(&connector, name, tcp),
            )
            .await?;
            let (_, conn) = tls.get_ref();
            trace.tls = Some(TlsInfo {
                version: tls_version_name(conn.protocol_version()),
                earliest_cert_expiry: conn.peer_certificates().and_then(|chain| {
                    crate::probe::cert::earliest_not_after(chain.iter().map(|c| c.as_ref()))
                }),
            });
            Stream::Tls(Box::new(tls))
        } else {
            Stream::Plain(tcp)
        };

        let (response, sender, conn) =
            phase(trace, Phase::Processing, deadline, timeout, async move {
                let http_err = |source| ClientError::Http {
                    phase: Phase::Processing,
                    source,
                };
                let mut builder = hyper::client::conn::http1::Builder::new();
                if !close {
                    // A kept connection keeps its read buffer while idle; hyper would let it
                    // grow to about 400 KiB (the largest body read), per target.
                    builder.max_buf_size(KEPT_READ_BUFFER);
                }
                let (mut sender, connection) = builder
                    .handshake::<_, Full<Bytes>>(TokioIo::new(stream))
                    .await
                    .map_err(http_err)?;
                // Errors of the connection task also fail the response future or the body,
                // where they are reported; the task's own result adds nothing.
                let conn = ConnTask(tokio::spawn(async move {
                    let _ = connection.await;
                }));
                let response = sender.send_request(request).await.map_err(http_err)?;
                Ok((response, sender, conn))
            })
            .await?;
        let headers_at = Instant::now();
        trace.headers_at = Some(headers_at);
        let conn = match keep {
            Some(k) => {
                k.hold(KeptConn {
                    target,
                    addr,
                    tls: trace.tls.clone(),
                    sender,
                    _task: conn,
                });
                None
            }
            None => Some(conn),
        };
        Ok(Hop {
            response,
            conn,
            headers_at,
        })
    }
}
