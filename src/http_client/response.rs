//! The final response of a call, its body not yet read: the caller reads it chunk by chunk or
//! at once, under the call's deadline and within its body limit, and the `transfer` phase is
//! timed as it goes.

use std::fmt;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap};
use http::{StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Instant;

use super::connect::ConnTask;
use super::hop::Hop;
use super::{ClientError, Phase, Trace};

/// A received response whose body has not been read yet.
pub struct Response {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    body: Incoming,
    deadline: Instant,
    timeout: Duration,
    limit: u64,
    headers_at: Instant,
    transfer_started: bool,
    done: bool,
    // Dropping the response ends the connection task (unless a `KeepAlive` holds it).
    _conn: Option<ConnTask>,
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl Response {
    /// The response of a call's last hop, its body to be read by `deadline` and within
    /// `limit` bytes (`timeout` is the call's, for the error that says it ran out).
    pub(super) fn new(hop: Hop, deadline: Instant, timeout: Duration, limit: u64) -> Response {
        let (parts, incoming) = hop.response.into_parts();
        Response {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body: incoming,
            deadline,
            timeout,
            limit,
            headers_at: hop.headers_at,
            transfer_started: false,
            done: false,
            _conn: hop.conn,
        }
    }

    /// Status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// HTTP version of the response.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Response headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The `Content-Length` header, if present and valid.
    pub fn content_length(&self) -> Option<u64> {
        self.headers
            .get(header::CONTENT_LENGTH)?
            .to_str()
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Reads the next non-empty body chunk as it arrives; `None` at the end of the body.
    /// Fails once the body passes the limit or the call's deadline passes; after an error
    /// the body is over and later calls return `None` (`trace.finished_at` stays unset).
    pub async fn chunk(&mut self, trace: &mut Trace) -> Result<Option<Bytes>, ClientError> {
        if self.done {
            return Ok(None);
        }
        if !self.transfer_started {
            self.transfer_started = true;
            trace.enter(Phase::Transfer);
            // A declared length over the limit fails before any of it is read.
            if self.content_length().is_some_and(|n| n > self.limit) {
                self.done = true;
                return Err(ClientError::BodyTooLarge { limit: self.limit });
            }
        }
        loop {
            let frame = tokio::time::timeout_at(self.deadline, self.body.frame()).await;
            let now = Instant::now();
            trace.phases.set(Phase::Transfer, now - self.headers_at);
            let frame = match frame {
                Err(_) => {
                    self.done = true;
                    return Err(ClientError::Timeout {
                        phase: Phase::Transfer,
                        timeout: self.timeout,
                    });
                }
                Ok(None) => {
                    self.done = true;
                    trace.finished_at = Some(now);
                    return Ok(None);
                }
                Ok(Some(Err(source))) => {
                    self.done = true;
                    return Err(ClientError::Http {
                        phase: Phase::Transfer,
                        source,
                    });
                }
                Ok(Some(Ok(frame))) => frame,
            };
            // Trailers carry nothing a probe checks.
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if data.is_empty() {
                continue;
            }
            trace.body_bytes += data.len() as u64;
            if trace.body_bytes > self.limit {
                self.done = true;
                return Err(ClientError::BodyTooLarge { limit: self.limit });
            }
            trace.first_chunk_at.get_or_insert(now);
            return Ok(Some(data));
        }
    }

    /// Reads the rest of the body into memory (at most the limit).
    pub async fn read_to_end(&mut self, trace: &mut Trace) -> Result<Bytes, ClientError> {
        let mut buf = BytesMut::new();
        while let Some(chunk) = self.chunk(trace).await? {
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    }

    /// Reads the rest of the body without keeping it; returns the bytes read by this call.
    pub async fn discard(&mut self, trace: &mut Trace) -> Result<u64, ClientError> {
        let mut n = 0u64;
        while let Some(chunk) = self.chunk(trace).await? {
            n += chunk.len() as u64;
        }
        Ok(n)
    }
}
