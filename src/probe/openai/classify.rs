//! Failure classification: a bounded set of reasons (safe as a label value) with a message a
//! person can act on, plus `Retry-After`. Pure functions. The key diagnosis is shared with
//! `config check`, so it lives in [`crate::config::openai`] and is re-exported here.

use super::response::{error_hint, ErrorHint};
use super::Check;
pub use crate::config::openai::{diagnose_key, KeyDiagnosis, KeySource};

/// Why a check failed; the `reason` label. The set is closed so series stay bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// Not a failure.
    Ok,
    /// 401 or 403: the key was refused.
    Auth,
    /// The model is unknown to the provider (404 on a chat check, or an error code saying so).
    ModelNotFound,
    /// 404 on the model list: `base_url` is probably wrong.
    NotFound,
    /// 429.
    RateLimited,
    /// 5xx.
    ServerError,
    /// Any other unexpected status.
    HttpError,
    /// The deadline passed.
    Timeout,
    /// The host name did not resolve.
    Dns,
    /// The TCP connection failed.
    Connect,
    /// The TLS handshake failed.
    Tls,
    /// The proxy could not be reached, refused the tunnel or request, or broke it.
    Proxy,
    /// The body is not what the API returns (bad JSON, missing fields).
    InvalidResponse,
    /// The body is larger than `max_body_bytes`.
    BodyTooLarge,
    /// The stream broke off or ended without `[DONE]`.
    StreamInterrupted,
    /// The request could not be sent for another reason.
    Request,
}

impl Reason {
    /// Every reason, for declaring series up front.
    pub const ALL: [Reason; 16] = [
        Reason::Ok,
        Reason::Auth,
        Reason::ModelNotFound,
        Reason::NotFound,
        Reason::RateLimited,
        Reason::ServerError,
        Reason::HttpError,
        Reason::Timeout,
        Reason::Dns,
        Reason::Connect,
        Reason::Tls,
        Reason::Proxy,
        Reason::InvalidResponse,
        Reason::BodyTooLarge,
        Reason::StreamInterrupted,
        Reason::Request,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Ok => "ok",
            Reason::Auth => "auth",
            Reason::ModelNotFound => "model_not_found",
            Reason::NotFound => "not_found",
            Reason::RateLimited => "rate_limited",
            Reason::ServerError => "server_error",
            Reason::HttpError => "http_error",
            Reason::Timeout => "timeout",
            Reason::Dns => "dns",
            Reason::Connect => "connect",
            Reason::Tls => "tls",
            Reason::Proxy => "proxy",
            Reason::InvalidResponse => "invalid_response",
            Reason::BodyTooLarge => "body_too_large",
            Reason::StreamInterrupted => "stream_interrupted",
            Reason::Request => "request",
        }
    }
}

/// A classified failure.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// The bounded reason.
    pub reason: Reason,
    /// What happened and what to do; never a key, prompt or response text.
    pub message: String,
    /// The HTTP status, when one arrived.
    pub status: Option<u16>,
    /// Seconds the server asked to wait (429 `Retry-After`).
    pub retry_after: Option<f64>,
}

impl Failure {
    /// A failure without status.
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Failure {
            reason,
            message: message.into(),
            status: None,
            retry_after: None,
        }
    }
}

/// Classifies a non-2xx response. `key` explains 401/403; `retry_after` is the header's value.
pub fn classify_status(
    check: Check,
    status: u16,
    body: &[u8],
    key: &str,
    retry_after: Option<&str>,
    now_ms: i64,
) -> Failure {
    let hint = error_hint(body);
    let (reason, message, wait) = match status {
        401 | 403 => (
            Reason::Auth,
            format!("HTTP {status}: the provider refused the API key; {key}"),
            None,
        ),
        _ if hint == ErrorHint::ModelNotFound => (
            Reason::ModelNotFound,
            format!("HTTP {status}: the provider says the configured model does not exist; check `model` against GET /models"),
            None,
        ),
        404 if check == Check::Models => (
            Reason::NotFound,
            "HTTP 404 for GET /models: check that base_url ends where the API does (usually …/v1)".to_string(),
            None,
        ),
        404 => (
            Reason::ModelNotFound,
            "HTTP 404: the model is unknown to the provider, or base_url is wrong".to_string(),
            None,
        ),
        429 => {
            let wait = retry_after.and_then(|v| parse_retry_after(v, now_ms));
            let after = match wait {
                Some(s) => format!("; the server asks to wait {s}s"),
                None => String::new(),
            };
            (
                Reason::RateLimited,
                format!("HTTP 429: rate limited or out of quota{after}; lengthen the interval or raise the limit"),
                wait,
            )
        }
        500..=599 => (
            Reason::ServerError,
            format!("HTTP {status}: the provider failed to serve the request"),
            None,
        ),
        _ => (
            Reason::HttpError,
            format!("unexpected HTTP {status}"),
            None,
        ),
    };
    Failure {
        reason,
        message,
        status: Some(status),
        retry_after: wait,
    }
}

/// Parses `Retry-After`: delta-seconds, or an HTTP date (IMF-fixdate) turned into seconds
/// from `now_ms` (never negative).
pub fn parse_retry_after(value: &str, now_ms: i64) -> Option<f64> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(secs as f64);
    }
    let at = parse_http_date(v)?;
    Some(((at * 1000 - now_ms).max(0) as f64) / 1000.0)
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) to Unix seconds.
fn parse_http_date(v: &str) -> Option<i64> {
    let rest = v.split_once(", ")?.1;
    let parts: Vec<&str> = rest.split(' ').collect();
    let [day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let day: i64 = day.parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| m == month)? as i64
        + 1;
    let year: i64 = year.parse().ok()?;
    let hms: Vec<i64> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, s] = hms.as_slice() else {
        return None;
    };
    if !(1..=31).contains(&day) || *h > 23 || *m > 59 || *s > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_bounded_reasons() {
        let c = |check, status, body: &[u8]| classify_status(check, status, body, "k", None, 0);
        assert_eq!(c(Check::Chat, 401, b"").reason, Reason::Auth);
        assert_eq!(c(Check::Models, 403, b"").reason, Reason::Auth);
        assert_eq!(c(Check::Chat, 404, b"").reason, Reason::ModelNotFound);
        assert_eq!(c(Check::Models, 404, b"").reason, Reason::NotFound);
        let body = br#"{"error":{"code":"model_not_found","message":"no"}}"#;
        assert_eq!(
            c(Check::ChatStream, 400, body).reason,
            Reason::ModelNotFound
        );
        assert_eq!(c(Check::Chat, 400, b"").reason, Reason::HttpError);
        assert_eq!(c(Check::Chat, 503, b"").reason, Reason::ServerError);
        assert_eq!(c(Check::Chat, 429, b"").reason, Reason::RateLimited);
        let f = classify_status(Check::Chat, 401, b"", "api_key_env X is not set", None, 0);
        assert!(
            f.message.ends_with("api_key_env X is not set"),
            "{}",
            f.message
        );
        assert_eq!(f.status, Some(401));
        let labels: std::collections::HashSet<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), Reason::ALL.len());
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let f = classify_status(Check::Chat, 429, b"", "", Some("7"), 0);
        assert_eq!(f.retry_after, Some(7.0));
        assert!(f.message.contains("wait 7s"));
        // 1994-11-06T08:49:37Z is 784111777.
        let now = 784_111_777_000 - 2_500;
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(2.5)
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now + 10_000),
            Some(0.0)
        );
        assert_eq!(parse_retry_after("soon", 0), None);
        assert_eq!(parse_retry_after("-1", 0), None);
        assert_eq!(parse_retry_after("Sun, 36 Nov 1994 08:49:37 GMT", 0), None);
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }
}
