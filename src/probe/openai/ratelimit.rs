//! Rate-limit headroom from response headers: OpenAI-style `x-ratelimit-{limit,remaining,
//! reset}-{requests,tokens}` and Anthropic's `anthropic-ratelimit-{requests,tokens,
//! input-tokens,output-tokens}-{limit,remaining,reset}`. Pure functions over header pairs.
//!
//! Resets come as Go-style durations (`6m0s`, `1s`, `250ms`, `1h2m3.5s`) or as RFC 3339
//! times, turned into seconds from the response's arrival. A value that does not parse, is
//! negative or is not finite is dropped: never a NaN or a negative gauge.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// What a limit counts: the `resource` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    /// Requests.
    Requests,
    /// Tokens of any kind.
    Tokens,
    /// Input tokens (Anthropic).
    InputTokens,
    /// Output tokens (Anthropic).
    OutputTokens,
}

impl Resource {
    /// Every resource.
    pub const ALL: [Resource; 4] = [
        Resource::Requests,
        Resource::Tokens,
        Resource::InputTokens,
        Resource::OutputTokens,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Requests => "requests",
            Resource::Tokens => "tokens",
            Resource::InputTokens => "input_tokens",
            Resource::OutputTokens => "output_tokens",
        }
    }

    fn from_header_part(part: &str) -> Option<Resource> {
        match part {
            "requests" => Some(Resource::Requests),
            "tokens" => Some(Resource::Tokens),
            "input-tokens" => Some(Resource::InputTokens),
            "output-tokens" => Some(Resource::OutputTokens),
            _ => None,
        }
    }
}

/// Limit, remaining and seconds until reset of one resource; each may be missing.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Headroom {
    /// The limit per window.
    pub limit: Option<f64>,
    /// What is left in the current window.
    pub remaining: Option<f64>,
    /// Seconds until the window resets, from the response's arrival.
    pub reset_seconds: Option<f64>,
}

impl Headroom {
    /// `remaining / limit` as a percentage, when both are known and the limit is positive.
    pub fn percent_left(&self) -> Option<f64> {
        match (self.remaining, self.limit) {
            (Some(r), Some(l)) if l > 0.0 => Some((r / l * 100.0).clamp(0.0, 100.0)),
            _ => None,
        }
    }
}

/// The headroom of every resource a response named, in [`Resource`] order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RateLimits {
    /// Resources with at least one parsed value.
    pub resources: Vec<(Resource, Headroom)>,
    /// Rate-limit headers present whose value did not parse.
    pub unparsed: u32,
}

impl RateLimits {
    /// The resource with the least headroom, as (resource, percent left).
    pub fn tightest(&self) -> Option<(Resource, f64)> {
        self.resources
            .iter()
            .filter_map(|(r, h)| h.percent_left().map(|p| (*r, p)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
    }
}

#[derive(Clone, Copy)]
enum Field {
    Limit,
    Remaining,
    Reset,
}

/// Splits a header name into (resource, field), for both naming styles.
fn classify_name(name: &str) -> Option<(Resource, Field)> {
    let field = |f: &str| match f {
        "limit" => Some(Field::Limit),
        "remaining" => Some(Field::Remaining),
        "reset" => Some(Field::Reset),
        _ => None,
    };
    if let Some(rest) = name.strip_prefix("x-ratelimit-") {
        // x-ratelimit-remaining-tokens: field first, resource last.
        let (f, r) = rest.split_once('-')?;
        return Some((Resource::from_header_part(r)?, field(f)?));
    }
    let rest = name.strip_prefix("anthropic-ratelimit-")?;
    // anthropic-ratelimit-input-tokens-remaining: resource first, field last.
    let (r, f) = rest.rsplit_once('-')?;
    Some((Resource::from_header_part(r)?, field(f)?))
}

/// Reads the rate-limit headers among `headers` (names in any case); `now_ms` is when the
/// response arrived, for RFC 3339 resets.
pub fn parse_headers<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    now_ms: i64,
) -> RateLimits {
    let mut out = RateLimits::default();
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        let Some((resource, field)) = classify_name(&name) else {
            continue;
        };
        let parsed = match field {
            Field::Limit | Field::Remaining => parse_count(value),
            Field::Reset => parse_reset(value, now_ms),
        };
        let Some(v) = parsed else {
            out.unparsed = out.unparsed.saturating_add(1);
            continue;
        };
        let h = match out.resources.iter_mut().find(|(r, _)| *r == resource) {
            Some((_, h)) => h,
            None => {
                out.resources.push((resource, Headroom::default()));
                match out.resources.last_mut() {
                    Some((_, h)) => h,
                    None => continue,
                }
            }
        };
        match field {
            Field::Limit => h.limit = Some(v),
            Field::Remaining => h.remaining = Some(v),
            Field::Reset => h.reset_seconds = Some(v),
        }
    }
    out.resources.sort_by_key(|(r, _)| *r);
    out
}

/// A count: a finite number ≥ 0 (some relays send `1e6` or `100.0`).
fn parse_count(value: &str) -> Option<f64> {
    let v: f64 = value.trim().parse().ok()?;
    (v.is_finite() && v >= 0.0).then_some(v)
}

/// A reset: a Go duration, plain seconds, or an RFC 3339 time (seconds from `now_ms`, never
/// negative).
pub fn parse_reset(value: &str, now_ms: i64) -> Option<f64> {
    let v = value.trim();
    if let Some(s) = parse_go_duration(v) {
        return Some(s);
    }
    if let Some(s) = parse_count(v) {
        return Some(s);
    }
    let at = OffsetDateTime::parse(v, &Rfc3339).ok()?;
    let at_ms = i64::try_from(at.unix_timestamp_nanos() / 1_000_000).ok()?;
    Some((at_ms.saturating_sub(now_ms).max(0) as f64) / 1000.0)
}

/// Parses a Go `time.Duration` string (`1h2m3.5s`, `250ms`, `6m0s`, `0s`) into seconds.
pub fn parse_go_duration(v: &str) -> Option<f64> {
    if v.is_empty() || v.len() > 64 {
        return None;
    }
    if v == "0" {
        return Some(0.0);
    }
    let mut rest = v;
    let mut total = 0.0f64;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_end == 0 {
            return None;
        }
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total += n * scale;
    }
    total.is_finite().then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("6m0s"), Some(360.0));
        assert_eq!(parse_go_duration("1s"), Some(1.0));
        assert_eq!(parse_go_duration("250ms"), Some(0.25));
        assert_eq!(parse_go_duration("1h2m3.5s"), Some(3723.5));
        assert_eq!(parse_go_duration("0s"), Some(0.0));
        for bad in ["", "s", "5", "5x", "-1s", "1s2", "1..2s", "ms"] {
            assert_eq!(parse_go_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn openai_headers() {
        let h = [
            ("x-ratelimit-limit-requests", "10000"),
            ("x-ratelimit-remaining-requests", "9999"),
            ("x-ratelimit-reset-requests", "6ms"),
            ("X-RateLimit-Limit-Tokens", "200000"),
            ("x-ratelimit-remaining-tokens", "15000"),
            ("x-ratelimit-reset-tokens", "6m0s"),
            ("content-type", "application/json"),
        ];
        let r = parse_headers(h, 0);
        assert_eq!(r.unparsed, 0);
        assert_eq!(
            r.resources,
            vec![
                (
                    Resource::Requests,
                    Headroom {
                        limit: Some(10000.0),
                        remaining: Some(9999.0),
                        reset_seconds: Some(0.006)
                    }
                ),
                (
                    Resource::Tokens,
                    Headroom {
                        limit: Some(200000.0),
                        remaining: Some(15000.0),
                        reset_seconds: Some(360.0)
                    }
                ),
            ]
        );
        assert_eq!(r.tightest(), Some((Resource::Tokens, 7.5)));
    }

    #[test]
    fn anthropic_headers_with_rfc3339_resets() {
        // 2025-03-01T12:00:00Z.
        let now = 1_740_830_400_000;
        let h = [
            ("anthropic-ratelimit-requests-limit", "50"),
            ("anthropic-ratelimit-requests-remaining", "49"),
            ("anthropic-ratelimit-requests-reset", "2025-03-01T12:00:01Z"),
            ("anthropic-ratelimit-input-tokens-limit", "40000"),
            ("anthropic-ratelimit-input-tokens-remaining", "2000"),
            (
                "anthropic-ratelimit-input-tokens-reset",
                "2025-03-01T13:00:30.5+01:00",
            ),
            (
                "anthropic-ratelimit-output-tokens-reset",
                "2025-03-01T11:00:00Z",
            ),
        ];
        let r = parse_headers(h, now);
        let get = |res| r.resources.iter().find(|(x, _)| *x == res).unwrap().1;
        assert_eq!(get(Resource::Requests).reset_seconds, Some(1.0));
        assert_eq!(get(Resource::InputTokens).reset_seconds, Some(30.5));
        // A reset in the past is now, not negative.
        assert_eq!(get(Resource::OutputTokens).reset_seconds, Some(0.0));
        assert_eq!(r.tightest(), Some((Resource::InputTokens, 5.0)));
    }

    #[test]
    fn bad_values_are_dropped_and_counted() {
        let h = [
            ("x-ratelimit-limit-requests", "lots"),
            ("x-ratelimit-remaining-requests", "-5"),
            ("x-ratelimit-reset-requests", "soon"),
            ("x-ratelimit-limit-tokens", "NaN"),
            ("x-ratelimit-remaining-tokens", "inf"),
            ("x-ratelimit-limit-widgets", "5"),
            ("x-ratelimit-remaining-tokens", "1e400"),
        ];
        let r = parse_headers(h, 0);
        assert_eq!(r.resources, vec![]);
        assert_eq!(r.unparsed, 6);
        // A zero limit gives no percentage rather than a division by zero.
        let r = parse_headers(
            [
                ("x-ratelimit-limit-requests", "0"),
                ("x-ratelimit-remaining-requests", "0"),
            ],
            0,
        );
        assert_eq!(r.tightest(), None);
    }

    proptest! {
        #[test]
        fn any_header_value_gives_a_finite_non_negative_value(v in ".{0,80}", now in any::<i64>()) {
            for name in ["x-ratelimit-reset-tokens", "x-ratelimit-limit-requests",
                         "anthropic-ratelimit-tokens-reset"] {
                let r = parse_headers([(name, v.as_str())], now);
                for (_, h) in r.resources {
                    for x in [h.limit, h.remaining, h.reset_seconds].into_iter().flatten() {
                        prop_assert!(x.is_finite() && x >= 0.0);
                    }
                }
            }
        }
    }
}
