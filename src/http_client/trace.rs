//! What one call found: the time spent per phase (resolve, connect, TLS, processing,
//! transfer), the addresses and TLS facts of its hops, and when its response began and ended.
//! Filled in as the call goes, so it is as useful after a failure as after a success.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use reqwest::Url;
use tokio::time::Instant;

use super::ClientError;

/// A step of an HTTP exchange, named as in `probe_http_duration_seconds{phase}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    /// Looking up the host's address.
    Resolve,
    /// Opening the TCP connection.
    Connect,
    /// The TLS handshake.
    Tls,
    /// From sending the request to the response headers (time to first byte).
    Processing,
    /// From the response headers to the end of the body.
    Transfer,
}

impl Phase {
    /// Every phase, in the order they happen.
    pub const ALL: [Phase; 5] = [
        Phase::Resolve,
        Phase::Connect,
        Phase::Tls,
        Phase::Processing,
        Phase::Transfer,
    ];

    /// The `phase` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Resolve => "resolve",
            Phase::Connect => "connect",
            Phase::Tls => "tls",
            Phase::Processing => "processing",
            Phase::Transfer => "transfer",
        }
    }

    /// What the client was doing in this phase, for error messages.
    pub(super) fn activity(self) -> &'static str {
        match self {
            Phase::Resolve => "resolving the host name",
            Phase::Connect => "connecting",
            Phase::Tls => "in the TLS handshake",
            Phase::Processing => "waiting for the response headers",
            Phase::Transfer => "reading the response body",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Time spent per phase; redirects add up, as in the blackbox exporter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Phases([Duration; 5]);

impl Phases {
    /// Time spent in `phase` (zero if it did not happen).
    pub fn get(&self, phase: Phase) -> Duration {
        self.0[phase as usize]
    }

    /// Every phase with its time, in order.
    pub fn iter(&self) -> impl Iterator<Item = (Phase, Duration)> + '_ {
        Phase::ALL.iter().map(|p| (*p, self.get(*p)))
    }

    /// Adds `d` to the time spent in `phase`.
    pub(super) fn add(&mut self, phase: Phase, d: Duration) {
        self.0[phase as usize] += d;
    }

    /// Sets the time spent in `phase` (the transfer, measured from the headers on).
    pub(super) fn set(&mut self, phase: Phase, d: Duration) {
        self.0[phase as usize] = d;
    }
}

/// What the TLS handshake of the last connection established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsInfo {
    /// Protocol version as the blackbox exporter labels it, e.g. `TLS 1.3`.
    pub version: &'static str,
    /// Earliest `notAfter` (Unix seconds) over the certificates the server sent.
    pub earliest_cert_expiry: Option<i64>,
}

/// What happened during one call, filled in as it goes, so it is useful after a failure too.
#[derive(Clone, Debug, Default)]
pub struct Trace {
    /// Time per phase, summed over redirects (`transfer`: the final response only).
    pub phases: Phases,
    /// Phases in the order they began, over all hops (a hop on a new connection starts with
    /// `resolve`, one on a kept connection with `processing`).
    pub entered: Vec<Phase>,
    /// Redirects followed.
    pub redirects: u32,
    /// The address the first hop connected to (or tried to).
    pub first_addr: Option<SocketAddr>,
    /// The address of the last hop.
    pub addr: Option<SocketAddr>,
    /// The URL of the last hop when a redirect led there; `None` without a redirect (the
    /// request's own URL), so that a call does not copy its URL for the trace.
    pub url: Option<Url>,
    /// Whether the last hop's URL is `https` (a redirect may change the scheme).
    pub https: bool,
    /// TLS facts of the last hop; `None` when it was plain HTTP or the handshake failed.
    pub tls: Option<TlsInfo>,
    /// Body bytes read so far.
    pub body_bytes: u64,
    /// When the call began.
    pub started: Option<Instant>,
    /// When the final response's headers arrived.
    pub headers_at: Option<Instant>,
    /// When the first non-empty body chunk arrived.
    pub first_chunk_at: Option<Instant>,
    /// When the body was read to its end.
    pub finished_at: Option<Instant>,
}

impl Trace {
    /// Time from the start of the call to the final response's headers.
    pub fn time_to_first_byte(&self) -> Option<Duration> {
        Some(self.headers_at? - self.started?)
    }

    /// Time from the start of the call to the first body chunk.
    pub fn time_to_first_chunk(&self) -> Option<Duration> {
        Some(self.first_chunk_at? - self.started?)
    }

    /// Notes that `phase` began.
    pub(super) fn enter(&mut self, phase: Phase) {
        self.entered.push(phase);
    }
}

/// Runs one phase under the call's deadline, adding its time to the trace even on failure.
pub(super) async fn phase<T>(
    trace: &mut Trace,
    phase: Phase,
    deadline: Instant,
    timeout: Duration,
    work: impl Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    trace.enter(phase);
    let began = Instant::now();
    let out = tokio::time::timeout_at(deadline, work).await;
    trace.phases.add(phase, began.elapsed());
    out.unwrap_or(Err(ClientError::Timeout { phase, timeout }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_accumulate_per_phase() {
        let mut p = Phases::default();
        p.add(Phase::Connect, Duration::from_millis(2));
        p.add(Phase::Connect, Duration::from_millis(3));
        p.set(Phase::Transfer, Duration::from_millis(7));
        assert_eq!(p.get(Phase::Connect), Duration::from_millis(5));
        let names: Vec<&str> = p.iter().map(|(ph, _)| ph.as_str()).collect();
        assert_eq!(
            names,
            ["resolve", "connect", "tls", "processing", "transfer"]
        );
    }
}
