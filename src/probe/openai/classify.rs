//! Failure classification: a bounded set of reasons (safe as a label value) with a message a
//! person can act on, plus `Retry-After`. Pure functions. The key diagnosis is shared with
//! `config check`, so it lives in [`crate::config::openai`] and is re-exported here.
//!
//! Error bodies of both API styles are read for finer reasons: OpenAI's
//! `{"error":{"type","code","message"}}` and Anthropic's
//! `{"type":"error","error":{"type":"overloaded_error",…}}`. Only the machine-readable type and
//! code choose a reason; the message text is matched for two well-known phrasings at most and
//! never quoted.

use serde_json::Value;

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
    /// The canary's answer did not match the probe's `expect`.
    AnswerMismatch,
    /// The account is out of credit or quota (OpenAI `insufficient_quota`, Anthropic
    /// `billing_error`): waiting does not help, paying does.
    InsufficientQuota,
    /// The prompt and `max_tokens` exceed the model's context window.
    ContextLengthExceeded,
    /// The provider is overloaded (HTTP 529, Anthropic `overloaded_error`).
    Overloaded,
    /// The provider's content filter refused the prompt or the answer.
    ContentFilter,
    /// The provider says the API key itself is invalid (not merely lacking a permission).
    InvalidApiKey,
}

impl Reason {
    /// Every reason, for declaring series up front.
    pub const ALL: [Reason; 22] = [
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
        Reason::AnswerMismatch,
        Reason::InsufficientQuota,
        Reason::ContextLengthExceeded,
        Reason::Overloaded,
        Reason::ContentFilter,
        Reason::InvalidApiKey,
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
            Reason::AnswerMismatch => "answer_mismatch",
            Reason::InsufficientQuota => "insufficient_quota",
            Reason::ContextLengthExceeded => "context_length_exceeded",
            Reason::Overloaded => "overloaded",
            Reason::ContentFilter => "content_filter",
            Reason::InvalidApiKey => "invalid_api_key",
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

/// What an error body's machine-readable fields say, reduced to what classification needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyHint {
    /// The model does not exist.
    ModelNotFound,
    /// Out of credit or quota.
    InsufficientQuota,
    /// Prompt plus `max_tokens` exceed the context window.
    ContextLengthExceeded,
    /// The provider is overloaded.
    Overloaded,
    /// The content filter refused.
    ContentFilter,
    /// The key is invalid.
    InvalidApiKey,
    /// A rate limit (as opposed to quota).
    RateLimited,
    /// Nothing recognised.
    None,
}

/// Reads an error object (the value of `"error"` in either API style) for a hint.
pub fn error_object_hint(err: &Value) -> BodyHint {
    let field = |name: &str| err.get(name).and_then(Value::as_str).unwrap_or("");
    let (kind, code) = (field("type"), field("code"));
    let is = |names: &[&str]| names.contains(&kind) || names.contains(&code);
    if is(&["model_not_found"]) {
        BodyHint::ModelNotFound
    } else if is(&[
        "insufficient_quota",
        "billing_error",
        "billing_hard_limit_reached",
    ]) {
        BodyHint::InsufficientQuota
    } else if is(&["context_length_exceeded", "string_above_max_length"])
        // Anthropic says it in words only: "prompt is too long: 210000 tokens > 200000 maximum".
        || (kind == "invalid_request_error" && field("message").starts_with("prompt is too long"))
    {
        BodyHint::ContextLengthExceeded
    } else if is(&["overloaded_error", "overloaded"]) {
        BodyHint::Overloaded
    } else if is(&[
        "content_filter",
        "content_policy_violation",
        "content_filter_error",
    ]) {
        BodyHint::ContentFilter
    } else if is(&["invalid_api_key", "authentication_error"]) {
        BodyHint::InvalidApiKey
    } else if is(&[
        "rate_limit_exceeded",
        "rate_limit_error",
        "requests",
        "tokens",
    ]) {
        BodyHint::RateLimited
    } else {
        BodyHint::None
    }
}

/// Reads an error body of either API style for a hint (never for text to log).
pub fn body_hint(body: &[u8]) -> BodyHint {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return BodyHint::None;
    };
    match v.get("error") {
        Some(e) if e.is_object() => error_object_hint(e),
        _ => BodyHint::None,
    }
}

/// The reason and actionable message of a recognised hint, whatever the status said.
fn hinted(hint: BodyHint, status: &str, key: &str) -> Option<(Reason, String)> {
    Some(match hint {
        BodyHint::InsufficientQuota => (
            Reason::InsufficientQuota,
            format!("{status}: the account is out of credit or quota; add credit or raise the spending limit (waiting will not help)"),
        ),
        BodyHint::ContextLengthExceeded => (
            Reason::ContextLengthExceeded,
            format!("{status}: the prompt plus max_tokens exceed the model's context window; shorten `prompt` or lower `max_tokens`"),
        ),
        BodyHint::Overloaded => (
            Reason::Overloaded,
            format!("{status}: the provider is overloaded; nothing to fix on this side, alert if it lasts"),
        ),
        BodyHint::ContentFilter => (
            Reason::ContentFilter,
            format!("{status}: the provider's content filter refused the request; use a neutral `prompt`"),
        ),
        BodyHint::InvalidApiKey => (
            Reason::InvalidApiKey,
            format!("{status}: the provider says the API key is invalid (revoked, mistyped or for another provider); {key}"),
        ),
        BodyHint::ModelNotFound
        | BodyHint::RateLimited
        | BodyHint::None => return None,
    })
}

/// Classifies an error event inside a 200 stream like the HTTP error it stands for.
pub fn classify_stream_error(err: &Value, key: &str) -> Failure {
    classify_error_object(err, "the stream carried an error event", key)
}

/// Classifies an error object that arrived with a 200 status (`what` says where) like the
/// HTTP error it stands for.
pub fn classify_error_object(err: &Value, what: &str, key: &str) -> Failure {
    let hint = error_object_hint(err);
    let (reason, message) = match hinted(hint, what, key) {
        Some(x) => x,
        None => match hint {
            BodyHint::ModelNotFound => (
                Reason::ModelNotFound,
                format!("{what}: the configured model does not exist; check `model` against GET /models"),
            ),
            BodyHint::RateLimited => (
                Reason::RateLimited,
                format!("{what}: rate limited; lengthen the interval or raise the limit"),
            ),
            _ => (
                Reason::ServerError,
                format!("{what} instead of a completion"),
            ),
        },
    };
    Failure::new(reason, message)
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
    let hint = body_hint(body);
    let code = format!("HTTP {status}");
    let (reason, message, wait) = match (status, hinted(hint, &code, key)) {
        // 529 is Anthropic's "overloaded", with or without a body.
        (529, _) => (
            Reason::Overloaded,
            "HTTP 529: the provider is overloaded; nothing to fix on this side, alert if it lasts"
                .to_string(),
            None,
        ),
        (_, Some((reason, message))) => (reason, message, None),
        (401 | 403, None) => (
            Reason::Auth,
            format!("HTTP {status}: the provider refused the API key; {key}"),
            None,
        ),
        _ if hint == BodyHint::ModelNotFound => (
            Reason::ModelNotFound,
            format!("HTTP {status}: the provider says the configured model does not exist; check `model` against GET /models"),
            None,
        ),
        (404, None) if check == Check::Models => (
            Reason::NotFound,
            "HTTP 404 for GET /models: check that base_url ends where the API does (usually …/v1)".to_string(),
            None,
        ),
        (404, None) => (
            Reason::ModelNotFound,
            "HTTP 404: the model is unknown to the provider, or base_url is wrong".to_string(),
            None,
        ),
        (429, None) => {
            let wait = retry_after.and_then(|v| parse_retry_after(v, now_ms));
            let after = match wait {
                Some(s) => format!("; the server asks to wait {s}s"),
                None => String::new(),
            };
            // Without a code saying so, a 429 may still be an exhausted quota.
            let what = if hint == BodyHint::RateLimited {
                "rate limited"
            } else {
                "rate limited or out of quota"
            };
            (
                Reason::RateLimited,
                format!("HTTP 429: {what}{after}; lengthen the interval or raise the limit"),
                wait,
            )
        }
        (500..=599, None) => (
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
    fn error_bodies_of_both_styles_give_finer_reasons() {
        let c = |status, body: &str| {
            classify_status(
                Check::Chat,
                status,
                body.as_bytes(),
                "the key from X",
                None,
                0,
            )
        };
        // OpenAI's real bodies.
        let quota = r#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;
        let f = c(429, quota);
        assert_eq!(f.reason, Reason::InsufficientQuota);
        assert!(f.message.contains("add credit"), "{}", f.message);
        assert!(!f.message.contains("exceeded your current quota"));
        let limited = r#"{"error":{"message":"Rate limit reached for gpt-4o","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
        assert_eq!(c(429, limited).reason, Reason::RateLimited);
        let context = r#"{"error":{"message":"This model's maximum context length is 8192 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#;
        let f = c(400, context);
        assert_eq!(f.reason, Reason::ContextLengthExceeded);
        assert!(f.message.contains("max_tokens"), "{}", f.message);
        let key = r#"{"error":{"message":"Incorrect API key provided: sk-te****6789.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#;
        let f = c(401, key);
        assert_eq!(f.reason, Reason::InvalidApiKey);
        assert!(f.message.ends_with("the key from X"), "{}", f.message);
        assert!(!f.message.contains("sk-te"));
        // Another 401, without the code, stays a plain authentication failure.
        assert_eq!(c(401, r#"{"error":{"message":"no"}}"#).reason, Reason::Auth);
        assert_eq!(
            c(
                403,
                r#"{"type":"error","error":{"type":"permission_error","message":"x"}}"#
            )
            .reason,
            Reason::Auth
        );
        for code in ["content_filter", "content_policy_violation"] {
            let body = format!(
                r#"{{"error":{{"message":"m","type":"invalid_request_error","code":"{code}"}}}}"#
            );
            assert_eq!(c(400, &body).reason, Reason::ContentFilter, "{code}");
        }
        // Anthropic's.
        let overloaded =
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        assert_eq!(c(529, overloaded).reason, Reason::Overloaded);
        assert_eq!(c(529, "").reason, Reason::Overloaded);
        assert_eq!(c(503, overloaded).reason, Reason::Overloaded);
        let auth = r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#;
        assert_eq!(c(401, auth).reason, Reason::InvalidApiKey);
        let long = r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}"#;
        assert_eq!(c(400, long).reason, Reason::ContextLengthExceeded);
        let billing = r#"{"type":"error","error":{"type":"billing_error","message":"x"}}"#;
        assert_eq!(c(402, billing).reason, Reason::InsufficientQuota);
        // Unrecognised or malformed bodies fall back to the status.
        assert_eq!(c(400, r#"{"error":"string"}"#).reason, Reason::HttpError);
        assert_eq!(c(500, "<html>").reason, Reason::ServerError);
    }

    #[test]
    fn stream_error_events_are_classified_like_http_errors() {
        let ev = |s: &str| serde_json::from_str::<Value>(s).unwrap();
        assert_eq!(
            classify_stream_error(
                &ev(r#"{"type":"overloaded_error","message":"Overloaded"}"#),
                "k"
            )
            .reason,
            Reason::Overloaded
        );
        assert_eq!(
            classify_stream_error(&ev(r#"{"message":"x","code":"insufficient_quota"}"#), "k")
                .reason,
            Reason::InsufficientQuota
        );
        let f = classify_stream_error(&ev(r#"{"message":"boom"}"#), "k");
        assert_eq!(f.reason, Reason::ServerError);
        assert!(!f.message.contains("boom"));
        assert_eq!(f.status, None);
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
