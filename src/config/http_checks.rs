//! The checks a `kind = "http"` probe makes of its response beyond the status code, with the
//! blackbox exporter's key names and meaning: regular expressions on the body and on headers,
//! the HTTP version, TLS or not, and (beyond the exporter's keys) values at JSON pointers in
//! the body; plus how the body is read (`body_size_limit`, `compression`) and which address
//! family the request goes over (`preferred_ip_protocol`, `ip_protocol_fallback`).
//!
//! The keys sit in the probe's own table (in `probe.rs`'s schema, beside the request's keys);
//! validation compiles every regular expression once, here, so a run only evaluates them.

use serde::{Deserialize, Serialize};

use super::ip::IpProtocol;
use super::{ByteSize, Checker, HttpProbeConfig};
use crate::http_client::{IpPreference, DEFAULT_BODY_LIMIT};

/// Largest `body_size_limit`: a probe keeps the body in memory to check it, so the limit
/// bounds what one run may hold.
pub const MAX_BODY_SIZE_LIMIT: u64 = 64 << 20;

/// The HTTP versions `valid_http_versions` may name, as the blackbox exporter spells them.
const HTTP_VERSIONS: &[(&str, http::Version)] = &[
    ("HTTP/1.0", http::Version::HTTP_10),
    ("HTTP/1.1", http::Version::HTTP_11),
    ("HTTP/2.0", http::Version::HTTP_2),
    ("HTTP/3.0", http::Version::HTTP_3),
];

/// One header check as written: `{ header, regexp, allow_missing }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatchConfig {
    /// Header name (any case).
    pub header: String,
    /// Regular expression, searched for in each value of the header.
    pub regexp: String,
    /// Whether a response without the header passes this check.
    #[serde(default)]
    pub allow_missing: bool,
}

/// One JSON check as written: `{ pointer, equals }` or `{ pointer, matches }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonCheckConfig {
    /// RFC 6901 JSON pointer (`/status`, `/items/0/name`).
    pub pointer: String,
    /// The value expected there, compared as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<serde_json::Value>,
    /// A regular expression the value there must match (a string as is, anything else as
    /// its JSON text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<String>,
}

/// How the body is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// gzip (RFC 1952).
    Gzip,
    /// deflate: zlib-wrapped (RFC 1950), or raw deflate as some servers send it.
    Deflate,
    /// Brotli (RFC 7932).
    Br,
    /// Not compressed: the body is read as is.
    Identity,
}

impl Compression {
    /// The `Accept-Encoding` token.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Deflate => "deflate",
            Compression::Br => "br",
            Compression::Identity => "identity",
        }
    }
}

/// A validated header check.
#[derive(Debug, Clone)]
pub struct HeaderCheck {
    /// Header name, lower-cased.
    pub header: String,
    /// The compiled regular expression.
    pub regexp: regex::Regex,
    /// Whether a missing header passes.
    pub allow_missing: bool,
}

/// What a JSON check expects at its pointer.
#[derive(Debug, Clone)]
pub enum JsonExpectation {
    /// This exact JSON value.
    Equals(serde_json::Value),
    /// A value matching this regular expression.
    Matches(regex::Regex),
}

/// A validated JSON check.
#[derive(Debug, Clone)]
pub struct JsonCheck {
    /// RFC 6901 pointer.
    pub pointer: String,
    /// What must be there.
    pub expect: JsonExpectation,
}

/// The validated checks and body options of an HTTP probe.
#[derive(Debug, Clone)]
pub struct HttpChecks {
    /// Fail when the body matches any.
    pub body_matches: Vec<regex::bytes::Regex>,
    /// Fail unless the body matches each.
    pub body_not_matches: Vec<regex::bytes::Regex>,
    /// Fail when a header value matches.
    pub header_matches: Vec<HeaderCheck>,
    /// Fail unless a header value matches.
    pub header_not_matches: Vec<HeaderCheck>,
    /// Fail unless the JSON body holds these.
    pub json: Vec<JsonCheck>,
    /// Accepted response versions; empty: any.
    pub http_versions: Vec<http::Version>,
    /// Fail over TLS.
    pub fail_if_ssl: bool,
    /// Fail without TLS.
    pub fail_if_not_ssl: bool,
    /// Most decoded body bytes read.
    pub body_limit: u64,
    /// How to ask for and decode the body; `None`: as the server sends it, not decoded.
    pub compression: Option<Compression>,
    /// The address family to connect over.
    pub ip: IpPreference,
}

impl Default for HttpChecks {
    fn default() -> Self {
        HttpChecks {
            body_matches: Vec::new(),
            body_not_matches: Vec::new(),
            header_matches: Vec::new(),
            header_not_matches: Vec::new(),
            json: Vec::new(),
            http_versions: Vec::new(),
            fail_if_ssl: false,
            fail_if_not_ssl: false,
            body_limit: DEFAULT_BODY_LIMIT,
            compression: None,
            ip: IpPreference::default(),
        }
    }
}

impl HttpChecks {
    /// Whether any check needs the body's bytes (otherwise the body is only counted).
    pub fn reads_body(&self) -> bool {
        !self.body_matches.is_empty()
            || !self.body_not_matches.is_empty()
            || !self.json.is_empty()
            || self.compression.is_some()
    }
}

/// Validates the checks of the probe at `key` (`probe[3]`); errors name `probe[3].<key>[i]`.
pub(super) fn validate_http_checks(
    c: &mut Checker<'_>,
    key: &str,
    h: &HttpProbeConfig,
) -> HttpChecks {
    let body_regexes = |c: &mut Checker<'_>, name: &str, list: &[String]| {
        list.iter()
            .enumerate()
            .filter_map(|(i, re)| {
                regex::bytes::Regex::new(re)
                    .map_err(|e| c.fail(format!("{key}.{name}[{i}]"), regex_problem(re, &e)))
                    .ok()
            })
            .collect::<Vec<_>>()
    };
    let body_matches = body_regexes(
        c,
        "fail_if_body_matches_regexp",
        &h.fail_if_body_matches_regexp,
    );
    let body_not_matches = body_regexes(
        c,
        "fail_if_body_not_matches_regexp",
        &h.fail_if_body_not_matches_regexp,
    );
    let header_matches = header_checks(
        c,
        &format!("{key}.fail_if_header_matches"),
        &h.fail_if_header_matches,
    );
    let header_not_matches = header_checks(
        c,
        &format!("{key}.fail_if_header_not_matches"),
        &h.fail_if_header_not_matches,
    );
    let json = json_checks(c, &format!("{key}.fail_if_body_json"), &h.fail_if_body_json);
    let http_versions = http_versions(
        c,
        &format!("{key}.valid_http_versions"),
        &h.valid_http_versions,
    );
    if h.fail_if_ssl && h.fail_if_not_ssl {
        c.fail(
            format!("{key}.fail_if_not_ssl"),
            format!("{key}.fail_if_ssl is set too, so every run would fail; keep one"),
        );
    }
    let body_limit = match h.body_size_limit {
        None => DEFAULT_BODY_LIMIT,
        Some(ByteSize(0)) => {
            c.fail(
                format!("{key}.body_size_limit"),
                "must be more than 0 (leave it out for the default 1MiB)",
            );
            DEFAULT_BODY_LIMIT
        }
        Some(ByteSize(n)) if n > MAX_BODY_SIZE_LIMIT => {
            c.fail(
                format!("{key}.body_size_limit"),
                format!(
                    "{} is more than {} (a probe holds the body in memory to check it)",
                    ByteSize(n),
                    ByteSize(MAX_BODY_SIZE_LIMIT)
                ),
            );
            DEFAULT_BODY_LIMIT
        }
        Some(ByteSize(n)) => n,
    };
    let compression =
        h.compression
            .as_deref()
            .and_then(|name| match name.to_ascii_lowercase().as_str() {
                "gzip" => Some(Compression::Gzip),
                "deflate" => Some(Compression::Deflate),
                "identity" => Some(Compression::Identity),
                "br" => Some(Compression::Br),
                _ => {
                    c.fail(
                        format!("{key}.compression"),
                        format!(
                            "{name:?} is not one of \"gzip\", \"deflate\", \"br\", \"identity\""
                        ),
                    );
                    None
                }
            });
    let preferred = match h.preferred_ip_protocol.as_deref() {
        None | Some("ip4") => IpProtocol::Ip4,
        Some("ip6") => IpProtocol::Ip6,
        Some(other) => {
            c.fail(
                format!("{key}.preferred_ip_protocol"),
                format!("{other:?} is not \"ip4\" or \"ip6\""),
            );
            IpProtocol::Ip4
        }
    };
    HttpChecks {
        body_matches,
        body_not_matches,
        header_matches,
        header_not_matches,
        json,
        http_versions,
        fail_if_ssl: h.fail_if_ssl,
        fail_if_not_ssl: h.fail_if_not_ssl,
        body_limit,
        compression,
        ip: IpPreference {
            preferred,
            fallback: h.ip_protocol_fallback,
        },
    }
}

fn regex_problem(re: &str, e: &regex::Error) -> String {
    // regex's message spans lines (it draws the pattern); one line reads better in a list.
    let message = e
        .to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    format!("{re:?} is not a valid regular expression: {message}")
}

fn header_checks(c: &mut Checker<'_>, key: &str, list: &[HeaderMatchConfig]) -> Vec<HeaderCheck> {
    let mut out = Vec::new();
    for (i, m) in list.iter().enumerate() {
        if http::HeaderName::from_bytes(m.header.as_bytes()).is_err() {
            c.fail(
                format!("{key}[{i}].header"),
                format!("{:?} is not a valid header name", m.header),
            );
            continue;
        }
        match regex::Regex::new(&m.regexp) {
            Ok(regexp) => out.push(HeaderCheck {
                header: m.header.to_ascii_lowercase(),
                regexp,
                allow_missing: m.allow_missing,
            }),
            Err(e) => c.fail(format!("{key}[{i}].regexp"), regex_problem(&m.regexp, &e)),
        }
    }
    out
}

fn json_checks(c: &mut Checker<'_>, key: &str, list: &[JsonCheckConfig]) -> Vec<JsonCheck> {
    let mut out = Vec::new();
    for (i, j) in list.iter().enumerate() {
        if !(j.pointer.is_empty() || j.pointer.starts_with('/')) {
            c.fail(
                format!("{key}[{i}].pointer"),
                format!(
                    "{:?} is not a JSON pointer: it starts with \"/\" (\"/status\"), or is \"\" \
                     for the whole body",
                    j.pointer
                ),
            );
            continue;
        }
        let expect = match (&j.equals, &j.matches) {
            (Some(v), None) => JsonExpectation::Equals(v.clone()),
            (None, Some(re)) => match regex::Regex::new(re) {
                Ok(re) => JsonExpectation::Matches(re),
                Err(e) => {
                    c.fail(format!("{key}[{i}].matches"), regex_problem(re, &e));
                    continue;
                }
            },
            _ => {
                c.fail(
                    format!("{key}[{i}]"),
                    "set exactly one of equals (a value) and matches (a regular expression)",
                );
                continue;
            }
        };
        out.push(JsonCheck {
            pointer: j.pointer.clone(),
            expect,
        });
    }
    out
}

fn http_versions(c: &mut Checker<'_>, key: &str, list: &[String]) -> Vec<http::Version> {
    let mut out = Vec::new();
    for (i, name) in list.iter().enumerate() {
        match HTTP_VERSIONS
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some((_, v)) => out.push(*v),
            None => c.fail(
                format!("{key}[{i}]"),
                format!(
                    "{name:?} is not one of {}",
                    HTTP_VERSIONS
                        .iter()
                        .map(|(n, _)| format!("{n:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
        }
    }
    // The probe speaks HTTP/1.1 (a server may answer 1.0): a list without either would fail
    // every run.
    if !out.is_empty()
        && !out
            .iter()
            .any(|v| matches!(*v, http::Version::HTTP_10 | http::Version::HTTP_11))
    {
        c.fail(
            key,
            "the probe speaks HTTP/1.1, so no response could match: add \"HTTP/1.1\"",
        );
    }
    out
}

#[cfg(test)]
#[allow(clippy::result_large_err)]
mod tests {
    use super::super::tests::parse;
    use super::super::ProbeSettings;
    use super::IpProtocol;

    const PROBE: &str =
        "[[probe]]\nname = \"web\"\nkind = \"http\"\nurl = \"http://127.0.0.1:1/\"\n";

    fn checks(extra: &str) -> Result<super::HttpChecks, String> {
        let s = parse(&format!("{PROBE}{extra}"))?;
        match s.probes.into_iter().next() {
            Some(ProbeSettings::Http(h)) => Ok(h.checks),
            _ => Err("no http probe".into()),
        }
    }

    #[test]
    fn defaults_check_nothing_and_read_a_bounded_body() {
        let c = checks("").unwrap();
        assert!(c.body_matches.is_empty() && c.json.is_empty() && !c.reads_body());
        assert_eq!(c.body_limit, crate::http_client::DEFAULT_BODY_LIMIT);
        assert_eq!(c.ip, crate::http_client::IpPreference::default());
    }

    #[test]
    fn every_key_is_read() {
        let c = checks(
            "fail_if_body_matches_regexp = [\"error\"]\n\
             fail_if_body_not_matches_regexp = [\"ok\", \"up\"]\n\
             fail_if_header_matches = [{ header = \"X-Bad\", regexp = \".\" }]\n\
             fail_if_header_not_matches = [{ header = \"Content-Type\", regexp = \"json\", allow_missing = true }]\n\
             fail_if_body_json = [{ pointer = \"/status\", equals = \"up\" }, { pointer = \"/v\", matches = \"^1\\\\.\" }]\n\
             valid_http_versions = [\"HTTP/1.1\"]\n\
             fail_if_not_ssl = true\n\
             body_size_limit = \"2KiB\"\n\
             compression = \"gzip\"\n\
             preferred_ip_protocol = \"ip6\"\n\
             ip_protocol_fallback = false\n",
        )
        .unwrap();
        assert_eq!(c.body_matches.len(), 1);
        assert_eq!(c.body_not_matches.len(), 2);
        assert_eq!(c.header_not_matches[0].header, "content-type");
        assert!(c.header_not_matches[0].allow_missing);
        assert_eq!(c.json.len(), 2);
        assert_eq!(c.http_versions, vec![http::Version::HTTP_11]);
        assert!(c.fail_if_not_ssl && !c.fail_if_ssl);
        assert_eq!(c.body_limit, 2048);
        assert_eq!(c.compression, Some(super::Compression::Gzip));
        assert_eq!(c.ip.preferred, IpProtocol::Ip6);
        assert!(!c.ip.fallback);
        assert!(c.reads_body());
    }

    #[test]
    fn errors_name_the_key_path() {
        let e = checks("fail_if_body_not_matches_regexp = [\"ok\", \"(\"]\n").unwrap_err();
        assert!(
            e.starts_with("probe[0].fail_if_body_not_matches_regexp[1]: \"(\" is not a valid"),
            "{e}"
        );
        let e = checks("fail_if_header_matches = [{ header = \"a b\", regexp = \"x\" }]\n")
            .unwrap_err();
        assert!(
            e.starts_with("probe[0].fail_if_header_matches[0].header: "),
            "{e}"
        );
        let e = checks("fail_if_body_json = [{ pointer = \"status\", equals = 1 }]\n").unwrap_err();
        assert!(
            e.starts_with("probe[0].fail_if_body_json[0].pointer: "),
            "{e}"
        );
        let e = checks("fail_if_body_json = [{ pointer = \"/s\" }]\n").unwrap_err();
        assert!(
            e.starts_with("probe[0].fail_if_body_json[0]: set exactly one"),
            "{e}"
        );
        let e = checks("valid_http_versions = [\"HTTP/1.1\", \"SPDY\"]\n").unwrap_err();
        assert!(
            e.starts_with("probe[0].valid_http_versions[1]: \"SPDY\""),
            "{e}"
        );
        let e = checks("valid_http_versions = [\"HTTP/2.0\"]\n").unwrap_err();
        assert!(e.contains("add \"HTTP/1.1\""), "{e}");
        let e = checks("fail_if_ssl = true\nfail_if_not_ssl = true\n").unwrap_err();
        assert!(e.starts_with("probe[0].fail_if_not_ssl: "), "{e}");
        let e = checks("body_size_limit = 0\n").unwrap_err();
        assert!(
            e.starts_with("probe[0].body_size_limit: must be more than 0"),
            "{e}"
        );
        let e = checks("body_size_limit = \"1GiB\"\n").unwrap_err();
        assert!(e.contains("64MiB"), "{e}");
        let e = checks("compression = \"zstd\"\n").unwrap_err();
        assert!(
            e.starts_with("probe[0].compression: \"zstd\" is not one of"),
            "{e}"
        );
        assert_eq!(
            checks("compression = \"br\"\n").unwrap().compression,
            Some(super::Compression::Br)
        );
        let e = checks("preferred_ip_protocol = \"ipv6\"\n").unwrap_err();
        assert!(e.starts_with("probe[0].preferred_ip_protocol: "), "{e}");
        let e = checks("fail_if_body_match_regexp = [\"x\"]\n").unwrap_err();
        assert!(e.contains("fail_if_body_match_regexp"), "{e}");
    }
}
