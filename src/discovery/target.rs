//! Groups plus `relabel_configs` into final targets, with Prometheus' rules (pure):
//!
//! 1. a target's labels are its group's labels overlaid with its own;
//! 2. unset ones get the job's defaults: `job`, `__scheme__`, `__metrics_path__`,
//!    `__scrape_interval__`, `__scrape_timeout__`, and `__param_<name>` (first value) for
//!    each of the job's `params`;
//! 3. the relabel rules run (any action; `drop`/`keep` may drop the target);
//! 4. a target left without `__address__` is dropped; `__scheme__`, `__metrics_path__`,
//!    `__param_*`, `__scrape_interval__` and `__scrape_timeout__` are read back;
//! 5. every label starting with `__` (`__meta_*`, `__tmp_*`, …) is removed, and `instance`
//!    defaults to `__address__`.
//!
//! Two targets with the same final label set are one target (the first one listed).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use super::{Group, LabelMap, ADDRESS_LABEL};
use crate::scrape::relabel::{relabel, RelabelRule};
use crate::series::Labels;

/// `__scheme__`.
pub const SCHEME_LABEL: &str = "__scheme__";
/// `__metrics_path__`.
pub const METRICS_PATH_LABEL: &str = "__metrics_path__";
/// `__scrape_interval__`.
pub const INTERVAL_LABEL: &str = "__scrape_interval__";
/// `__scrape_timeout__`.
pub const TIMEOUT_LABEL: &str = "__scrape_timeout__";
/// Prefix of the labels that set URL parameters.
pub const PARAM_PREFIX: &str = "__param_";

/// The job-level settings a target starts from.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetDefaults {
    /// The `job` label.
    pub job: String,
    /// `http` or `https`.
    pub scheme: String,
    /// The HTTP path (scrapes); empty for probes.
    pub metrics_path: String,
    /// URL parameters, each with its values.
    pub params: BTreeMap<String, Vec<String>>,
    /// Interval of each target unless relabeled.
    pub interval: Duration,
    /// Timeout of each target unless relabeled.
    pub timeout: Duration,
    /// Whether `__address__` may be a whole URL (probes) rather than only `host[:port]`.
    pub address_may_be_url: bool,
}

impl TargetDefaults {
    /// Prometheus' scrape defaults for `job`: http, `/metrics`, 1m, 10s.
    pub fn scrape(job: &str) -> TargetDefaults {
        TargetDefaults {
            job: job.to_string(),
            scheme: "http".to_string(),
            metrics_path: "/metrics".to_string(),
            params: BTreeMap::new(),
            interval: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
            address_may_be_url: false,
        }
    }
}

/// One final target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The labels its series carry: no `__` label left, `instance` set.
    pub labels: Labels,
    /// `__address__` after relabeling.
    pub address: String,
    /// `__scheme__` after relabeling.
    pub scheme: String,
    /// `__metrics_path__` after relabeling.
    pub metrics_path: String,
    /// URL parameters, `__param_*` applied.
    pub params: Vec<(String, String)>,
    /// `__scrape_interval__` after relabeling.
    pub interval: Duration,
    /// `__scrape_timeout__` after relabeling.
    pub timeout: Duration,
}

impl Target {
    /// `scheme://address/metrics_path?params`, for scrapes; `None` when the address is not
    /// `host[:port]` (a URL, user info) or the result is no URL.
    pub fn scrape_url(&self) -> Option<reqwest::Url> {
        let a = &self.address;
        if a.is_empty() || a.contains(['/', '@', '?', '#']) {
            return None;
        }
        let mut url = reqwest::Url::parse(&format!("{}://{a}", self.scheme)).ok()?;
        url.host()?;
        url.set_path(&self.metrics_path);
        if !self.params.is_empty() {
            let mut q = url.query_pairs_mut();
            for (name, value) in &self.params {
                q.append_pair(name, value);
            }
        }
        Some(url)
    }

    /// The probe target: `__address__` when it is a URL, else `__scheme__://__address__/`
    /// (with `__metrics_path__` when one is set).
    pub fn probe_url(&self) -> Option<reqwest::Url> {
        let text = if self.address.contains("://") {
            self.address.clone()
        } else {
            format!("{}://{}{}", self.scheme, self.address, self.metrics_path)
        };
        let url = reqwest::Url::parse(&text).ok()?;
        url.host()?;
        Some(url)
    }
}

/// The final targets of a set of groups.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Built {
    /// De-duplicated, in the order first listed.
    pub targets: Vec<Target>,
    /// Targets a `drop`/`keep` rule dropped.
    pub dropped: usize,
    /// Targets dropped for a reason worth a log line, each naming its group.
    pub errors: Vec<String>,
}

/// Turns `groups` into final targets with `rules` (see the module comment).
pub fn build_targets(groups: &[Group], rules: &[RelabelRule], d: &TargetDefaults) -> Built {
    let mut out = Built::default();
    let mut seen = HashSet::new();
    for g in groups {
        for (i, t) in g.targets.iter().enumerate() {
            match build_one(g, t, rules, d) {
                Ok(Some(target)) => {
                    if seen.insert(target.labels.clone()) {
                        out.targets.push(target);
                    }
                }
                Ok(None) => out.dropped += 1,
                Err(e) => out.errors.push(format!("{} target {i}: {e}", g.source)),
            }
        }
    }
    out
}

fn build_one(
    g: &Group,
    t: &LabelMap,
    rules: &[RelabelRule],
    d: &TargetDefaults,
) -> Result<Option<Target>, String> {
    let mut map = g.labels.clone();
    map.extend(t.iter().map(|(k, v)| (k.clone(), v.clone())));
    let defaults = [
        ("job", d.job.clone()),
        (SCHEME_LABEL, d.scheme.clone()),
        (METRICS_PATH_LABEL, d.metrics_path.clone()),
        (
            INTERVAL_LABEL,
            crate::config::ConfigDuration(d.interval).to_string(),
        ),
        (
            TIMEOUT_LABEL,
            crate::config::ConfigDuration(d.timeout).to_string(),
        ),
    ];
    for (name, value) in defaults {
        map.entry(name.to_string()).or_insert(value);
    }
    for (name, values) in &d.params {
        if let Some(first) = values.first() {
            map.entry(format!("{PARAM_PREFIX}{name}"))
                .or_insert_with(|| first.clone());
        }
    }
    let labels = Labels::from_pairs(&map).map_err(|e| e.to_string())?;
    let Some(labels) = relabel(&labels, rules) else {
        return Ok(None);
    };
    let get = |name: &str| labels.get(name).unwrap_or("").to_string();
    let address = get(ADDRESS_LABEL);
    if address.is_empty() {
        return Err("no __address__ label after relabeling; dropped".to_string());
    }
    if !d.address_may_be_url && address.contains(['/', '@', '?', '#']) {
        let shown = crate::secret::redact_url_text(&address);
        return Err(format!("__address__ {shown:?} is not host[:port]; dropped"));
    }
    let scheme = get(SCHEME_LABEL);
    if !matches!(scheme.as_str(), "http" | "https") {
        return Err(format!("__scheme__ {scheme:?} is neither http nor https"));
    }
    let duration = |name: &str, fallback: Duration| match labels.get(name) {
        None => Ok(fallback),
        Some(text) => crate::config::parse_duration(text)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("{name} {text:?} is not a positive duration")),
    };
    let interval = duration(INTERVAL_LABEL, d.interval)?;
    let timeout = duration(TIMEOUT_LABEL, d.timeout)?;
    if timeout > interval {
        return Err(format!(
            "__scrape_timeout__ ({}) exceeds __scrape_interval__ ({})",
            crate::config::ConfigDuration(timeout),
            crate::config::ConfigDuration(interval)
        ));
    }
    // As Prometheus builds the URL: a `__param_` label replaces the first value of its
    // parameter (the others stay) or adds the parameter.
    let mut by_name: BTreeMap<String, Vec<String>> = d.params.clone();
    for l in labels.iter() {
        if let Some(name) = l.name.strip_prefix(PARAM_PREFIX) {
            let values = by_name.entry(name.to_string()).or_default();
            match values.first_mut() {
                Some(first) => *first = l.value.to_string(),
                None => values.push(l.value.to_string()),
            }
        }
    }
    let params: Vec<(String, String)> = by_name
        .into_iter()
        .flat_map(|(name, values)| values.into_iter().map(move |v| (name.clone(), v)))
        .collect();
    let mut public: Vec<(&str, &str)> = labels
        .iter()
        .filter(|l| !l.name.starts_with("__"))
        .map(|l| (l.name, l.value))
        .collect();
    if labels.get("instance").is_none() {
        public.push(("instance", address.as_str()));
    }
    let final_labels = Labels::from_pairs(public).map_err(|e| e.to_string())?;
    Ok(Some(Target {
        labels: final_labels,
        metrics_path: get(METRICS_PATH_LABEL),
        address,
        scheme,
        params,
        interval,
        timeout,
    }))
}

#[cfg(test)]
mod tests;
