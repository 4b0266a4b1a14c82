//! `http_sd_configs`: Prometheus' HTTP SD protocol. Every `refresh_interval` a `GET` to the
//! URL (with the configured credentials, TLS and proxy, over the pooled client the push sinks
//! use) must answer `200` with a JSON list of `{targets, labels}`; each target gets
//! `__meta_url` (the URL, password redacted). Anything else — a transport error, another
//! status, a body that is not that list — keeps the last good set and is counted.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::Deserialize;

use super::{Group, LabelMap, Provider, Refreshed, ADDRESS_LABEL};
use crate::auth::Authorizer;
use crate::config::discovery::HttpSdSettings;
use crate::http_client::pooled;
use crate::series::is_valid_label_name;

/// Largest answer read; a bigger one fails the refresh.
pub const MAX_BODY_BYTES: usize = 16 << 20;

/// Longest a refresh may take (less when the refresh interval is shorter).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(30);

/// The label naming the SD URL a target came from.
pub const URL_LABEL: &str = "__meta_url";

/// One entry of an answer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpGroup {
    targets: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// Parses an HTTP SD answer; `url` is the redacted URL for `__meta_url` and the sources.
pub fn parse_body(url: &str, body: &[u8]) -> Result<Vec<Group>, String> {
    let parsed: Vec<HttpGroup> = serde_json::from_slice(body).map_err(|e| {
        format!(
            "the answer is not a JSON list of {{\"targets\", \"labels\"}} (line {}, column {}): {e}",
            e.line(),
            e.column()
        )
    })?;
    let mut out = Vec::with_capacity(parsed.len());
    for (i, g) in parsed.into_iter().enumerate() {
        if let Some(bad) = g.labels.keys().find(|n| !is_valid_label_name(n)) {
            return Err(format!("group {i}: {bad:?} is not a valid label name"));
        }
        let mut labels: LabelMap = g.labels;
        labels.insert(URL_LABEL.to_string(), url.to_string());
        out.push(Group {
            source: format!("{url} group {i}"),
            targets: g
                .targets
                .into_iter()
                .map(|a| LabelMap::from([(ADDRESS_LABEL.to_string(), a)]))
                .collect(),
            labels,
        });
    }
    Ok(out)
}

/// The provider of one `http_sd_configs` entry.
pub struct HttpProvider {
    settings: HttpSdSettings,
    client: reqwest::Client,
    authorizer: Authorizer,
    /// The URL with any password redacted, for labels and logs.
    shown: String,
}

impl std::fmt::Debug for HttpProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpProvider")
            .field("url", &self.shown)
            .finish_non_exhaustive()
    }
}

impl HttpProvider {
    /// Builds the client (TLS, proxy) and credentials of one HTTP SD endpoint.
    pub fn new(settings: HttpSdSettings) -> Result<HttpProvider, String> {
        let builder = pooled::builder(
            &settings.url,
            &settings.tls,
            &[b"http/1.1"],
            &settings.proxy,
        )
        .map_err(|e| e.to_string())?;
        let timeout = MAX_TIMEOUT.min(settings.refresh_interval);
        let client = pooled::build(
            builder
                .user_agent(crate::http_client::USER_AGENT)
                .timeout(timeout),
        )?;
        let authorizer = Authorizer::new(settings.auth.as_ref()).map_err(|e| e.to_string())?;
        Ok(HttpProvider {
            shown: crate::secret::redact_url(&settings.url),
            settings,
            client,
            authorizer,
        })
    }

    async fn fetch(&self) -> Result<Vec<Group>, String> {
        let fail = |what: String| format!("{}: {what}", self.shown);
        let mut headers = http::HeaderMap::new();
        self.authorizer
            .apply(&http::Method::GET, &self.settings.url, &mut headers, b"")
            .await
            .map_err(|e| fail(format!("credentials: {e}")))?;
        let mut response = self
            .client
            .get(self.settings.url.clone())
            .headers(headers)
            .header(
                "x-prometheus-refresh-interval-seconds",
                self.settings.refresh_interval.as_secs().to_string(),
            )
            .send()
            .await
            .map_err(|e| fail(pooled::describe_error(&e)))?;
        let status = response.status();
        if status != http::StatusCode::OK {
            return Err(fail(format!("answered HTTP status {status}, not 200")));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| fail(pooled::describe_error(&e)))?
        {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(fail(format!(
                    "the answer is larger than {MAX_BODY_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        parse_body(&self.shown, &body).map_err(fail)
    }
}

impl Provider for HttpProvider {
    fn mechanism(&self) -> &'static str {
        "http"
    }

    fn interval(&self) -> Duration {
        self.settings.refresh_interval
    }

    fn refresh(&mut self) -> BoxFuture<'_, Refreshed> {
        Box::pin(async move {
            match self.fetch().await {
                Ok(groups) => Refreshed {
                    groups: Some(groups),
                    errors: Vec::new(),
                },
                Err(e) => Refreshed {
                    groups: None,
                    errors: vec![e],
                },
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_become_groups_with_meta_url_and_bad_bodies_say_why() {
        let g = parse_body(
            "http://sd/targets",
            br#"[{"targets": ["a:1", "b:2"], "labels": {"env": "prod"}}, {"targets": []}]"#,
        )
        .unwrap();
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].targets[1]["__address__"], "b:2");
        assert_eq!(g[0].labels["env"], "prod");
        assert_eq!(g[0].labels[URL_LABEL], "http://sd/targets");
        assert!(parse_body("u", b"[]").unwrap().is_empty());
        for (body, want) in [
            (&b"{\"targets\": []}"[..], "line 1"),
            (b"[{\"targets\": [\"a:1\"]", "line 1, column 20"),
            (b"<html>", "not a JSON list"),
            (b"[{\"targets\": [1]}]", "not a JSON list"),
            (b"[{\"targets\": [], \"extra\": 1}]", "extra"),
            (
                b"[{\"targets\": [], \"labels\": {\"a-b\": \"x\"}}]",
                "\"a-b\" is not a valid label name",
            ),
        ] {
            let e = parse_body("u", body).unwrap_err();
            assert!(e.contains(want), "{e:?} lacks {want:?}");
        }
    }
}
