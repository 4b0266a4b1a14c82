//! The pooled reqwest client the push sinks (remote write, Pushgateway) send with, and the one
//! description of its errors that may be logged.
//!
//! Pushing is many requests to one endpoint, so this client keeps its connections, unlike the
//! probes' client, which measures a fresh one each run. It never follows redirects: a 301/302
//! would turn the POST into a body-less GET, so a push URL that redirects is a configuration
//! error, reported as a refusal. It sends through the configured proxy, routed by the same
//! rules as the probes' client.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::Url;

use super::proxy::{Proxy, ProxySettings};
use crate::auth::Auth;
use crate::config::TlsConfig;

/// A client builder for pushing to `url`: TLS from `tls` (offering `alpn`), no redirects,
/// and the proxies of `proxy` only (never the environment's unless the settings were read
/// from it). The caller adds its timeout or default headers and builds it with [`build`].
pub fn builder(
    url: &Url,
    tls: &TlsConfig,
    alpn: &[&[u8]],
    proxy: &ProxySettings,
) -> Result<reqwest::ClientBuilder, crate::tls::TlsError> {
    let tls = crate::tls::client_config_for_url(url, tls, alpn)?;
    // reqwest reads HTTP_PROXY and friends by default; Prometheus does only when asked
    // (`proxy_from_environment`), and then the settings already hold them.
    let mut builder = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy();
    for (scheme, chosen) in [("http", &proxy.http), ("https", &proxy.https)] {
        if let Some(p) = chosen {
            builder = builder.proxy(reqwest_proxy(scheme, p, proxy));
        }
    }
    Ok(builder)
}

/// The reqwest proxy for `scheme`'s targets: routed by the same rules as the probes' client
/// (the `no_proxy` matcher of [`ProxySettings::route`]), with the proxy's credentials and
/// `CONNECT` headers.
fn reqwest_proxy(scheme: &'static str, p: &Proxy, all: &ProxySettings) -> reqwest::Proxy {
    let settings = all.clone();
    let proxy_url = p.url.clone();
    let mut out = reqwest::Proxy::custom(move |target: &Url| {
        (target.scheme() == scheme && settings.route(target).is_some()).then(|| proxy_url.clone())
    });
    if let Some(Auth::Basic { username, password }) = &p.auth {
        out = out.basic_auth(username, password.current().expose());
    }
    // `proxy_connect_header` goes on the tunnel's CONNECT only, as in Prometheus: the http
    // targets' proxy forwards requests and is never asked to tunnel.
    if scheme == "https" && !p.connect_headers.is_empty() {
        let mut headers = HeaderMap::new();
        for (name, value) in &p.connect_headers {
            // Validated with the configuration; an invalid one is left out rather than sent.
            if let (Ok(n), Ok(mut v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value.expose()),
            ) {
                v.set_sensitive(true);
                headers.append(n, v);
            }
        }
        out = out.headers(headers);
    }
    out
}

/// Builds the client, describing a failure with [`describe_error`].
pub fn build(builder: reqwest::ClientBuilder) -> Result<reqwest::Client, String> {
    builder
        .build()
        .map_err(|e| format!("building the HTTP client: {}", describe_error(&e)))
}

/// An error and its causes on one line, safe to log: reqwest's own message names the request
/// URL, which may hold user info (`http://user:password@…`), so it is replaced by what went
/// wrong; a cause that repeats an earlier part is left out.
pub fn describe_error(e: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = cur {
        let text = match err.downcast_ref::<reqwest::Error>() {
            Some(r) if r.url().is_some() => what_failed(r).to_string(),
            _ => err.to_string(),
        };
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = err.source();
    }
    // reqwest says only "tunnel error: unsuccessful" when a proxy refuses CONNECT.
    if parts.iter().any(|p| p.contains("tunnel error")) {
        parts.push(
            "the proxy refused the CONNECT tunnel: check the credentials in proxy_url (or \
             proxy_password_file) and that the proxy allows CONNECT to the receiver's port"
                .into(),
        );
    }
    parts.join(": ")
}

/// A reqwest error's kind, in words, without its URL.
fn what_failed(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "request timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() {
        "sending the request body failed"
    } else if e.is_request() {
        "sending the request failed"
    } else {
        "HTTP client error"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refused_tunnel_is_described_as_the_proxy_s_refusal() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // A proxy that refuses every CONNECT.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = tcp.read(&mut buf).await;
                let _ = tcp.write_all(b"HTTP/1.1 403 Forbidden\r\n\r\n").await;
            }
        });
        let proxy = Proxy {
            url: format!("http://{addr}").parse().unwrap(),
            auth: Some(Auth::Basic {
                username: "u".into(),
                password: crate::secret::Secret::new("hunter2").into(),
            }),
            connect_headers: Vec::new(),
        };
        let settings = ProxySettings {
            http: None,
            https: Some(proxy),
            no_proxy: Default::default(),
        };
        let url: Url = "https://127.0.0.1:1/api/v1/write".parse().unwrap();
        let client = build(builder(&url, &TlsConfig::default(), &[], &settings).unwrap()).unwrap();
        let err = client.post(url).send().await.unwrap_err();
        let message = describe_error(&err);
        assert!(
            message.contains("the proxy refused the CONNECT tunnel"),
            "{message}"
        );
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[tokio::test]
    async fn transport_errors_are_described_without_the_url() {
        // Nothing listens on the port once the listener is dropped: connection refused.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let url: Url = format!("http://user:hunter2@{closed}/api/v1/write")
            .parse()
            .unwrap();
        let client =
            build(builder(&url, &TlsConfig::default(), &[], &ProxySettings::default()).unwrap())
                .unwrap();
        let err = client.post(url).send().await.unwrap_err();
        // The raw error carries the URL, user info and all.
        assert!(err.url().is_some());
        let message = describe_error(&err);
        assert!(message.starts_with("connection failed"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
        assert!(!message.contains("/api/v1/write"), "{message}");
    }
}
