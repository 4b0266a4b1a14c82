//! Redirect following: which responses redirect, where their `Location` leads, how the
//! method changes, and which headers must not follow the request to another origin. The
//! limit on how many are followed is [`Request::max_redirects`](super::Request::max_redirects),
//! checked by the call's loop.

use http::header::HeaderValue;
use http::{Method, StatusCode};
use reqwest::Url;

use super::ClientError;

/// Headers that carry credentials: dropped when a redirect leaves the original host.
const CREDENTIAL_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "cookie2",
    "www-authenticate",
];

/// Tells whether two URLs share scheme, host and port: credentials go to that origin only.
pub fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// Tells whether a status asks to be redirected (with a `Location`).
pub fn is_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// Tells whether following this redirect turns the request into a body-less GET (as
/// browsers and Go's client do for 301, 302 and 303; 307 and 308 keep method and body).
pub fn changes_to_get(status: StatusCode, method: &Method) -> bool {
    matches!(status.as_u16(), 301..=303) && method != Method::GET && method != Method::HEAD
}

/// Resolves a `Location` header against the URL that sent it.
pub fn resolve_location(base: &Url, location: &HeaderValue) -> Result<Url, ClientError> {
    let text = String::from_utf8_lossy(location.as_bytes()).into_owned();
    let bad = |reason| ClientError::BadRedirect {
        location: text.clone(),
        reason,
    };
    let loc = location
        .to_str()
        .map_err(|_| bad("the Location header is not ASCII"))?;
    let next = base
        .join(loc.trim())
        .map_err(|_| bad("the Location header is not a valid URL"))?;
    if !matches!(next.scheme(), "http" | "https") {
        return Err(bad("only http and https redirects can be followed"));
    }
    if next.host_str().is_none_or(str::is_empty) {
        return Err(bad("the redirect URL has no host"));
    }
    Ok(next)
}

/// Drops the credentials and the `Host` override from the headers of a request that a
/// redirect sends to another origin.
pub(super) fn drop_credentials(headers: &mut Vec<(String, String)>) {
    // Another scheme (https to http would send them in clear), host or port.
    headers.retain(|(name, _)| !CREDENTIAL_HEADERS.contains(&name.as_str()) && name != "host");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn relative_and_absolute_locations_resolve() {
        let base = url("http://a.example:8080/dir/page?q=1");
        let loc = |s: &'static str| resolve_location(&base, &HeaderValue::from_static(s));
        assert_eq!(
            loc("/other").unwrap().as_str(),
            "http://a.example:8080/other"
        );
        assert_eq!(
            loc("next").unwrap().as_str(),
            "http://a.example:8080/dir/next"
        );
        assert_eq!(loc("//b.example/x").unwrap().as_str(), "http://b.example/x");
        assert_eq!(
            loc("https://c.example/").unwrap().as_str(),
            "https://c.example/"
        );
        assert_eq!(loc("ftp://c.example/").unwrap_err().kind(), "invalid_url");
        assert_eq!(loc("http://").unwrap_err().kind(), "invalid_url");
    }

    #[test]
    fn see_other_turns_posts_into_gets_but_307_keeps_them() {
        assert!(changes_to_get(StatusCode::SEE_OTHER, &Method::POST));
        assert!(changes_to_get(StatusCode::FOUND, &Method::PUT));
        assert!(!changes_to_get(StatusCode::FOUND, &Method::HEAD));
        assert!(!changes_to_get(
            StatusCode::TEMPORARY_REDIRECT,
            &Method::POST
        ));
        assert!(!changes_to_get(
            StatusCode::PERMANENT_REDIRECT,
            &Method::POST
        ));
        assert!(is_redirect(StatusCode::MOVED_PERMANENTLY));
        assert!(!is_redirect(StatusCode::NOT_MODIFIED));
    }

    #[test]
    fn origins_differ_by_scheme_host_or_port() {
        let base = url("https://h.example/metrics");
        assert!(same_origin(&base, &url("https://h.example:443/other?x=1")));
        assert!(!same_origin(&base, &url("http://h.example/metrics")));
        assert!(!same_origin(&base, &url("https://h.example:8443/metrics")));
        assert!(!same_origin(&base, &url("https://other.example/metrics")));
    }
}
