//! The response checks of an HTTP probe (`fail_if_*`, `valid_http_versions`), evaluated over
//! what a run received: plain functions over plain data, so every rule is tested without a
//! server. Each failed check is named by its key and index, as the configuration writes it
//! (`fail_if_body_json[1]`), so that a reason points at the line to look at.
//!
//! Header values are never quoted in a message: a response header may carry a session token.

use http::header::HeaderMap;
use http::Version;

use crate::config::http_checks::{HeaderCheck, HttpChecks, JsonExpectation};

/// Longest JSON value quoted in a message.
const QUOTE_MAX: usize = 80;

/// What a run received that the checks look at.
#[derive(Debug, Clone, Copy)]
pub(super) struct Received<'a> {
    /// The final response's version.
    pub(super) version: Version,
    /// Whether the final response came over TLS.
    pub(super) tls: bool,
    /// The final response's headers.
    pub(super) headers: &'a HeaderMap,
    /// The decoded body, when it was read whole.
    pub(super) body: Option<&'a [u8]>,
}

/// Which family of checks a failure belongs to, for `probe_failed_due_to_regex` and
/// `probe_failed_due_to_json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Family {
    /// Regular expressions on the body or headers.
    Regex,
    /// `fail_if_body_json`.
    Json,
    /// TLS and version checks.
    Other,
}

/// One failed check.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Failed {
    /// The check's key and index: `fail_if_body_not_matches_regexp[0]`.
    pub(super) key: String,
    /// What was wrong.
    pub(super) problem: String,
    /// Its family.
    pub(super) family: Family,
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.key, self.problem)
    }
}

/// Every check `checks` makes that `r` fails, in the order the keys are documented. Body
/// checks are skipped when the body was not read (the read error fails the run instead).
pub(super) fn evaluate(checks: &HttpChecks, r: &Received<'_>) -> Vec<Failed> {
    let mut out = Vec::new();
    let mut fail = |key: String, problem: String, family: Family| {
        out.push(Failed {
            key,
            problem,
            family,
        })
    };
    if checks.fail_if_ssl && r.tls {
        fail(
            "fail_if_ssl".into(),
            "the final response came over TLS".into(),
            Family::Other,
        );
    }
    if checks.fail_if_not_ssl && !r.tls {
        fail(
            "fail_if_not_ssl".into(),
            "the final response did not come over TLS".into(),
            Family::Other,
        );
    }
    if !checks.http_versions.is_empty() && !checks.http_versions.contains(&r.version) {
        let listed: Vec<&str> = checks
            .http_versions
            .iter()
            .map(|v| version_name(*v))
            .collect();
        fail(
            "valid_http_versions".into(),
            format!(
                "response version {} not in [{}]",
                version_name(r.version),
                listed.join(", ")
            ),
            Family::Other,
        );
    }
    for (i, h) in checks.header_matches.iter().enumerate() {
        let key = format!("fail_if_header_matches[{i}]");
        match header_values(r.headers, h) {
            None if !h.allow_missing => fail(key, missing(h), Family::Regex),
            None => {}
            Some(values) if values.iter().any(|v| h.regexp.is_match(v)) => fail(
                key,
                format!("{} /{}/ matched", h.header, h.regexp),
                Family::Regex,
            ),
            Some(_) => {}
        }
    }
    for (i, h) in checks.header_not_matches.iter().enumerate() {
        let key = format!("fail_if_header_not_matches[{i}]");
        match header_values(r.headers, h) {
            None if !h.allow_missing => fail(key, missing(h), Family::Regex),
            None => {}
            Some(values) if !values.iter().any(|v| h.regexp.is_match(v)) => fail(
                key,
                format!("{} /{}/ did not match", h.header, h.regexp),
                Family::Regex,
            ),
            Some(_) => {}
        }
    }
    let Some(body) = r.body else {
        return out;
    };
    for (i, re) in checks.body_matches.iter().enumerate() {
        if re.is_match(body) {
            fail(
                format!("fail_if_body_matches_regexp[{i}]"),
                format!("/{re}/ matched"),
                Family::Regex,
            );
        }
    }
    for (i, re) in checks.body_not_matches.iter().enumerate() {
        if !re.is_match(body) {
            fail(
                format!("fail_if_body_not_matches_regexp[{i}]"),
                format!("/{re}/ did not match"),
                Family::Regex,
            );
        }
    }
    if !checks.json.is_empty() {
        match serde_json::from_slice::<serde_json::Value>(body) {
            Err(e) => fail(
                "fail_if_body_json".into(),
                format!("the body is not JSON ({e})"),
                Family::Json,
            ),
            Ok(doc) => {
                for (i, j) in checks.json.iter().enumerate() {
                    if let Some(problem) = json_problem(&doc, &j.pointer, &j.expect) {
                        fail(
                            format!("fail_if_body_json[{i}]"),
                            format!("{}: {problem}", display_pointer(&j.pointer)),
                            Family::Json,
                        );
                    }
                }
            }
        }
    }
    out
}

/// The header's values (lossily decoded), or `None` when the response has none.
fn header_values(headers: &HeaderMap, h: &HeaderCheck) -> Option<Vec<String>> {
    let values: Vec<String> = headers
        .get_all(h.header.as_str())
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    (!values.is_empty()).then_some(values)
}

fn missing(h: &HeaderCheck) -> String {
    format!(
        "{} is missing (set allow_missing = true to accept that)",
        h.header
    )
}

/// Why the value at `pointer` is not what `expect` asks for, or `None` when it is.
fn json_problem(
    doc: &serde_json::Value,
    pointer: &str,
    expect: &JsonExpectation,
) -> Option<String> {
    let Some(found) = doc.pointer(pointer) else {
        return Some("not found in the body".into());
    };
    match expect {
        JsonExpectation::Equals(want) if want == found => None,
        JsonExpectation::Equals(want) => {
            Some(format!("expected {}, got {}", quote(want), quote(found)))
        }
        JsonExpectation::Matches(re) => {
            let text = match found {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (!re.is_match(&text)).then(|| format!("{} does not match /{re}/", quote(found)))
        }
    }
}

/// A JSON value as compact text, cut short.
fn quote(v: &serde_json::Value) -> String {
    let text = v.to_string();
    if text.chars().count() <= QUOTE_MAX {
        return text;
    }
    let cut: String = text.chars().take(QUOTE_MAX).collect();
    format!("{cut}…")
}

/// The pointer as shown: `""` (the whole body) spelled out.
fn display_pointer(pointer: &str) -> &str {
    if pointer.is_empty() {
        "(whole body)"
    } else {
        pointer
    }
}

/// The version as `valid_http_versions` spells it.
fn version_name(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::http_checks::JsonCheck;
    use http::HeaderValue;

    fn header(name: &str, re: &str, allow_missing: bool) -> HeaderCheck {
        HeaderCheck {
            header: name.into(),
            regexp: regex::Regex::new(re).unwrap(),
            allow_missing,
        }
    }

    fn json(pointer: &str, expect: JsonExpectation) -> JsonCheck {
        JsonCheck {
            pointer: pointer.into(),
            expect,
        }
    }

    fn eval(checks: &HttpChecks, headers: &HeaderMap, body: Option<&[u8]>) -> Vec<String> {
        let r = Received {
            version: Version::HTTP_11,
            tls: false,
            headers,
            body,
        };
        evaluate(checks, &r).iter().map(Failed::to_string).collect()
    }

    #[test]
    fn no_checks_pass_anything() {
        assert!(eval(&HttpChecks::default(), &HeaderMap::new(), Some(b"x")).is_empty());
    }

    #[test]
    fn body_regexes_fail_as_the_blackbox_exporter_does() {
        let checks = HttpChecks {
            body_matches: vec![regex::bytes::Regex::new("error").unwrap()],
            body_not_matches: vec![
                regex::bytes::Regex::new("ok").unwrap(),
                regex::bytes::Regex::new("^up").unwrap(),
            ],
            ..HttpChecks::default()
        };
        let h = HeaderMap::new();
        assert!(eval(&checks, &h, Some(b"up and ok")).is_empty());
        assert_eq!(
            eval(&checks, &h, Some(b"down: error")),
            vec![
                "fail_if_body_matches_regexp[0] /error/ matched",
                "fail_if_body_not_matches_regexp[0] /ok/ did not match",
                "fail_if_body_not_matches_regexp[1] /^up/ did not match",
            ]
        );
        // Not read (the read failed): the read error speaks, not the regexes.
        assert!(eval(&checks, &h, None).is_empty());
        // Bytes that are not UTF-8 are still searched.
        assert!(eval(&checks, &h, Some(b"up \xff ok")).is_empty());
    }

    #[test]
    fn headers_match_any_value_and_missing_ones_fail_unless_allowed() {
        let checks = HttpChecks {
            header_matches: vec![header("x-debug", "on", false), header("x-opt", ".", true)],
            header_not_matches: vec![
                header("content-type", "json", false),
                header("x-cache", "HIT", true),
            ],
            ..HttpChecks::default()
        };
        let mut h = HeaderMap::new();
        h.insert("x-debug", HeaderValue::from_static("off"));
        h.append("content-type", HeaderValue::from_static("text/plain"));
        h.append("content-type", HeaderValue::from_static("application/json"));
        assert!(eval(&checks, &h, None).is_empty());

        h.append("x-debug", HeaderValue::from_static("on"));
        h.insert("x-cache", HeaderValue::from_static("MISS"));
        assert_eq!(
            eval(&checks, &h, None),
            vec![
                "fail_if_header_matches[0] x-debug /on/ matched",
                "fail_if_header_not_matches[1] x-cache /HIT/ did not match",
            ]
        );

        let empty = HeaderMap::new();
        assert_eq!(
            eval(&checks, &empty, None),
            vec![
                "fail_if_header_matches[0] x-debug is missing (set allow_missing = true to accept that)",
                "fail_if_header_not_matches[0] content-type is missing (set allow_missing = true to accept that)",
            ]
        );
    }

    #[test]
    fn header_values_are_never_quoted() {
        let checks = HttpChecks {
            header_matches: vec![header("set-cookie", "session", false)],
            ..HttpChecks::default()
        };
        let mut h = HeaderMap::new();
        h.insert("set-cookie", HeaderValue::from_static("session=hunter2"));
        let failed = eval(&checks, &h, None);
        assert_eq!(failed.len(), 1);
        assert!(!failed[0].contains("hunter2"), "{failed:?}");
    }

    #[test]
    fn json_pointers_are_compared_or_matched() {
        let checks = HttpChecks {
            json: vec![
                json("/status", JsonExpectation::Equals(serde_json::json!("up"))),
                json(
                    "/checks/0/ok",
                    JsonExpectation::Equals(serde_json::json!(true)),
                ),
                json(
                    "/version",
                    JsonExpectation::Matches(regex::Regex::new(r"^1\.").unwrap()),
                ),
                json(
                    "/replicas",
                    JsonExpectation::Matches(regex::Regex::new("^[3-9]$").unwrap()),
                ),
            ],
            ..HttpChecks::default()
        };
        let h = HeaderMap::new();
        let good = br#"{"status":"up","checks":[{"ok":true}],"version":"1.4.2","replicas":3}"#;
        assert!(eval(&checks, &h, Some(good)).is_empty());
        let bad = br#"{"status":"down","checks":[],"version":"2.0.0","replicas":1}"#;
        assert_eq!(
            eval(&checks, &h, Some(bad)),
            vec![
                "fail_if_body_json[0] /status: expected \"up\", got \"down\"",
                "fail_if_body_json[1] /checks/0/ok: not found in the body",
                "fail_if_body_json[2] /version: \"2.0.0\" does not match /^1\\./",
                "fail_if_body_json[3] /replicas: 1 does not match /^[3-9]$/",
            ]
        );
        let failed = eval(&checks, &h, Some(b"<html>"));
        assert_eq!(failed.len(), 1);
        assert!(
            failed[0].starts_with("fail_if_body_json the body is not JSON"),
            "{failed:?}"
        );
    }

    #[test]
    fn the_whole_body_can_be_compared_and_long_values_are_cut() {
        let checks = HttpChecks {
            json: vec![json("", JsonExpectation::Equals(serde_json::json!([1])))],
            ..HttpChecks::default()
        };
        let long = format!("\"{}\"", "a".repeat(500));
        let failed = eval(&checks, &HeaderMap::new(), Some(long.as_bytes()));
        assert!(failed[0].starts_with("fail_if_body_json[0] (whole body): expected [1], got \"aaa"));
        assert!(
            failed[0].ends_with('…') && failed[0].len() < 200,
            "{failed:?}"
        );
    }

    #[test]
    fn versions_and_tls_are_checked() {
        let checks = HttpChecks {
            http_versions: vec![Version::HTTP_11],
            fail_if_not_ssl: true,
            ..HttpChecks::default()
        };
        let h = HeaderMap::new();
        let mut r = Received {
            version: Version::HTTP_10,
            tls: false,
            headers: &h,
            body: None,
        };
        let failed: Vec<String> = evaluate(&checks, &r)
            .iter()
            .map(Failed::to_string)
            .collect();
        assert_eq!(
            failed,
            vec![
                "fail_if_not_ssl the final response did not come over TLS",
                "valid_http_versions response version HTTP/1.0 not in [HTTP/1.1]",
            ]
        );
        r.version = Version::HTTP_11;
        r.tls = true;
        assert!(evaluate(&checks, &r).is_empty());
        let ssl = HttpChecks {
            fail_if_ssl: true,
            ..HttpChecks::default()
        };
        assert_eq!(evaluate(&ssl, &r)[0].key, "fail_if_ssl");
        assert_eq!(evaluate(&ssl, &r)[0].family, Family::Other);
    }
}
