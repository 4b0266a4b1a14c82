//! The hyper request of one hop as it goes on the wire: origin-form target, default `Host`
//! and `User-Agent`, basic auth from the URL's user info, the caller's headers (every value
//! marked sensitive, so that hyper never shows it), and the framing headers the client owns.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Method;
use http_body_util::Full;
use reqwest::Url;

use super::{ClientError, USER_AGENT};
use crate::auth::Auth;
use crate::secret::Secret;

/// Builds the hyper request for one hop: origin-form target, `Host`, `User-Agent`,
/// `Content-Length`, and `Connection: close` when `close` (a probe measures a fresh
/// connection each run).
pub(super) fn build_request(
    method: &Method,
    url: &Url,
    headers: &[(String, String)],
    body: Option<&Bytes>,
    close: bool,
) -> Result<http::Request<Full<Bytes>>, ClientError> {
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    let uri: http::Uri = path.parse().map_err(|_| ClientError::InvalidUrl {
        url: crate::secret::redact_url(url),
        reason: "the path is not a valid request target",
    })?;
    let mut map = HeaderMap::new();
    let host = match url.port() {
        Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_string(),
    };
    map.insert(header::HOST, header_value("host", &host)?);
    map.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
    if !url.username().is_empty() || url.password().is_some() {
        let auth = Auth::Basic {
            username: percent_decode(url.username()),
            password: Secret::new(percent_decode(url.password().unwrap_or(""))).into(),
        };
        let value = auth
            .header_value()
            .map_err(|_| ClientError::InvalidHeader {
                name: "authorization".into(),
                reason: "the URL's user info cannot be sent in a header",
            })?;
        map.insert(header::AUTHORIZATION, value);
    }
    let mut overridden: Vec<HeaderName> = Vec::new();
    for (name, value) in headers {
        let header_name =
            HeaderName::from_bytes(name.as_bytes()).map_err(|_| ClientError::InvalidHeader {
                name: name.clone(),
                reason: "not a valid header name",
            })?;
        if header_name == header::CONTENT_LENGTH || header_name == header::CONNECTION {
            // Framing and connection handling are the client's; a wrong value would break them.
            continue;
        }
        let mut value = header_value(name, value)?;
        value.set_sensitive(true);
        if !overridden.contains(&header_name) {
            // The first occurrence replaces a default; later ones add values.
            map.remove(&header_name);
            overridden.push(header_name.clone());
        }
        map.append(header_name, value);
    }
    if let Some(b) = body {
        map.insert(header::CONTENT_LENGTH, HeaderValue::from(b.len()));
    }
    if close {
        map.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let mut request = http::Request::new(Full::new(body.cloned().unwrap_or_default()));
    *request.method_mut() = method.clone();
    *request.uri_mut() = uri;
    *request.headers_mut() = map;
    Ok(request)
}

fn header_value(name: &str, value: &str) -> Result<HeaderValue, ClientError> {
    HeaderValue::from_str(value).map_err(|_| ClientError::InvalidHeader {
        name: name.to_string(),
        reason: "the value has characters not allowed in HTTP headers",
    })
}

/// Decodes `%XX` escapes of URL user info; invalid escapes stay as they are.
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn requests_carry_defaults_and_overrides() {
        let body = Bytes::from_static(b"{}");
        let r = build_request(
            &Method::POST,
            &url("http://h.example:81/p?x=1#frag"),
            &[
                ("x-api-key".into(), "k".into()),
                ("content-length".into(), "999".into()),
                ("connection".into(), "keep-alive".into()),
            ],
            Some(&body),
            true,
        )
        .unwrap();
        assert_eq!(r.uri(), "/p?x=1");
        let h = r.headers();
        assert_eq!(h[header::HOST], "h.example:81");
        assert_eq!(h[header::USER_AGENT], USER_AGENT);
        assert_eq!(h[header::CONTENT_LENGTH], "2");
        assert_eq!(h[header::CONNECTION], "close");
        assert_eq!(h["x-api-key"], "k");

        let r = build_request(
            &Method::GET,
            &url("https://h.example/"),
            &[
                ("user-agent".into(), "custom/1".into()),
                ("host".into(), "virtual.example".into()),
                ("connection".into(), "close".into()),
            ],
            None,
            false,
        )
        .unwrap();
        let h = r.headers();
        assert_eq!(h[header::USER_AGENT], "custom/1");
        assert_eq!(h.get_all(header::USER_AGENT).iter().count(), 1);
        assert_eq!(h[header::HOST], "virtual.example");
        assert!(h.get(header::CONTENT_LENGTH).is_none());
        // A kept connection is the client's to close: no `Connection` header, whoever asks.
        assert!(h.get(header::CONNECTION).is_none());
    }

    #[test]
    fn url_user_info_becomes_basic_auth() {
        let r = build_request(
            &Method::GET,
            &url("http://us%40er:p%3Ass@h/"),
            &[],
            None,
            true,
        )
        .unwrap();
        let expected =
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "us@er:p:ss");
        assert_eq!(
            r.headers()[header::AUTHORIZATION],
            format!("Basic {expected}").as_str()
        );
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
    }

    #[test]
    fn bad_headers_are_named_without_their_value() {
        let e = build_request(
            &Method::GET,
            &url("http://h/"),
            &[("authorization".into(), "Bearer sec\nret".into())],
            None,
            true,
        )
        .unwrap_err();
        assert_eq!(e.kind(), "invalid_request");
        let text = e.to_string();
        assert!(
            text.contains("authorization") && !text.contains("sec"),
            "{text}"
        );
    }
}
