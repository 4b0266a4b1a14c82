//! Why a call failed: one variant per failure, with a message that says what to do about it,
//! a bounded [`ClientError::kind`] label value, and the phase it happened in.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use super::connect::KEPT_READ_BUFFER;
use super::Phase;

/// Why a call failed. [`ClientError::kind`] is a short, bounded label value.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL cannot be requested.
    #[error("invalid URL {url}: {reason}")]
    InvalidUrl {
        /// The URL.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A request header is not valid HTTP (its value is never shown: it may be a secret).
    #[error("request header {name:?}: {reason}; fix the configured headers")]
    InvalidHeader {
        /// The header name.
        name: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The host name could not be resolved.
    #[error("resolve {host}: {source}: check the host name and this host's DNS settings")]
    Resolve {
        /// The host name.
        host: String,
        /// The resolver's error.
        #[source]
        source: io::Error,
    },
    /// The host name resolved to no address (of the family the call must use, when
    /// `family` is set).
    #[error("{}", no_address_message(.host, *.family))]
    NoAddress {
        /// The host name.
        host: String,
        /// The only family the call may use (`ip4`, `ip6`), when the host has addresses of
        /// the other one only.
        family: Option<&'static str>,
    },
    /// The TCP connection failed.
    #[error("{}", connect_message(.addr, .source))]
    Connect {
        /// The address tried.
        addr: SocketAddr,
        /// The socket error.
        #[source]
        source: io::Error,
    },
    /// The TLS handshake failed.
    #[error("TLS handshake with {server}: {}", tls_message(.source))]
    Tls {
        /// The name the certificate was checked against.
        server: String,
        /// The handshake error (wraps a `rustls::Error` when rustls refused).
        #[source]
        source: io::Error,
    },
    /// The call's timeout ran out.
    #[error(
        "timed out after {timeout:?} {}: raise the probe's timeout or find out why the target is slow",
        .phase.activity()
    )]
    Timeout {
        /// The phase that was running out of time.
        phase: Phase,
        /// The call's timeout.
        timeout: Duration,
    },
    /// The target did not speak valid HTTP/1.x, or closed the connection early.
    #[error("HTTP error {}: {}: the target did not answer with valid HTTP/1.x", .phase.activity(), hyper_message(.source))]
    Http {
        /// The phase the error surfaced in.
        phase: Phase,
        /// hyper's error.
        #[source]
        source: hyper::Error,
    },
    /// The proxy could not be reached, refused the request or tunnel, answered something that
    /// is not HTTP, or closed the tunnel (see [`super::proxy`]).
    #[error("proxy {proxy}: {problem}")]
    Proxy {
        /// The proxy's `host:port` (never its credentials).
        proxy: String,
        /// What went wrong and what to do.
        problem: String,
    },
    /// The response body is larger than the limit.
    #[error("response body exceeds the limit of {limit} bytes: the endpoint answers more than a probe should read")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// More redirects than allowed.
    #[error("stopped after {max} redirects (last Location: {last}): the target redirects in a loop or too often; point the probe or scrape at the final URL (a probe can also set follow_redirects = false)")]
    TooManyRedirects {
        /// The limit.
        max: u32,
        /// The Location that was not followed.
        last: String,
    },
    /// The request's credentials could not be obtained (nothing was sent).
    #[error("credentials: {message}")]
    Credentials {
        /// What went wrong; never a secret.
        message: String,
    },
    /// A redirect's `Location` cannot be followed.
    #[error("redirect to {location:?} cannot be followed: {reason}")]
    BadRedirect {
        /// The Location header (lossily decoded).
        location: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl ClientError {
    /// A short label value for the error's kind (bounded set).
    pub fn kind(&self) -> &'static str {
        match self {
            ClientError::InvalidUrl { .. } | ClientError::BadRedirect { .. } => "invalid_url",
            ClientError::InvalidHeader { .. } => "invalid_request",
            ClientError::Resolve { .. } | ClientError::NoAddress { .. } => "resolve",
            ClientError::Connect { .. } => "connect",
            ClientError::Tls { .. } => "tls",
            ClientError::Timeout { .. } => "timeout",
            ClientError::Http { .. } => "http",
            ClientError::Proxy { .. } => "proxy",
            ClientError::BodyTooLarge { .. } => "body_too_large",
            ClientError::TooManyRedirects { .. } => "redirect_loop",
            ClientError::Credentials { .. } => "credentials",
        }
    }

    /// The phase the error happened in, when it happened on the wire.
    pub fn phase(&self) -> Option<Phase> {
        match self {
            ClientError::Resolve { .. } | ClientError::NoAddress { .. } => Some(Phase::Resolve),
            ClientError::Connect { .. } | ClientError::Proxy { .. } => Some(Phase::Connect),
            ClientError::Tls { .. } => Some(Phase::Tls),
            ClientError::Timeout { phase, .. } | ClientError::Http { phase, .. } => Some(*phase),
            ClientError::BodyTooLarge { .. } => Some(Phase::Transfer),
            ClientError::InvalidUrl { .. }
            | ClientError::InvalidHeader { .. }
            | ClientError::TooManyRedirects { .. }
            | ClientError::BadRedirect { .. }
            | ClientError::Credentials { .. } => None,
        }
    }
}

fn no_address_message(host: &str, family: Option<&str>) -> String {
    match family {
        None => format!(
            "resolve {host}: no address found: check the host name and this host's DNS settings"
        ),
        Some(f) => format!(
            "resolve {host}: no {f} address, and ip_protocol_fallback is off: turn it on, or \
             set preferred_ip_protocol to the family the target has"
        ),
    }
}

fn connect_message(addr: &SocketAddr, e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => {
            format!("connect to {addr} refused: is the service listening?")
        }
        _ => format!("connect to {addr}: {e}: check the address, the port and firewalls"),
    }
}

fn tls_message(e: &io::Error) -> String {
    let Some(rustls_error) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return format!("{e}: the target may not speak TLS on this port");
    };
    use rustls::CertificateError as C;
    let rustls::Error::InvalidCertificate(cert) = rustls_error else {
        return rustls_error.to_string();
    };
    let advice = match cert {
        C::UnknownIssuer | C::BadSignature => {
            "set tls.ca_file to the CA that signed the server's certificate"
        }
        C::NotValidForName | C::NotValidForNameContext { .. } => {
            "set tls.server_name to a name the certificate is issued for"
        }
        C::Expired | C::ExpiredContext { .. } => "the certificate has expired: renew it",
        C::NotValidYet | C::NotValidYetContext { .. } => {
            "the certificate is not valid yet: check its dates and this host's clock"
        }
        _ => "check the server's certificate chain",
    };
    format!("server certificate refused ({cert:?}): {advice}")
}

fn hyper_message(e: &hyper::Error) -> String {
    if e.is_parse_too_large() {
        return format!(
            "{e} (a kept scrape connection reads at most {} KiB of response headers)",
            KEPT_READ_BUFFER / 1024
        );
    }
    match std::error::Error::source(e) {
        Some(inner) => format!("{e} ({inner})"),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_say_what_to_do() {
        let refused = ClientError::Connect {
            addr: "127.0.0.1:9".parse().unwrap(),
            source: io::Error::from(io::ErrorKind::ConnectionRefused),
        };
        assert_eq!(refused.kind(), "connect");
        assert_eq!(
            refused.to_string(),
            "connect to 127.0.0.1:9 refused: is the service listening?"
        );
        let timeout = ClientError::Timeout {
            phase: Phase::Transfer,
            timeout: Duration::from_secs(2),
        };
        assert_eq!(timeout.phase(), Some(Phase::Transfer));
        assert!(timeout.to_string().contains("reading the response body"));
        let loop_ = ClientError::TooManyRedirects {
            max: 10,
            last: "http://h/".into(),
        };
        assert_eq!(loop_.kind(), "redirect_loop");
    }
}
