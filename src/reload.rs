//! Live reload: what a new configuration changes, worked out before anything is touched.
//!
//! [`diff`] compares the running configuration with a new, already validated one and yields a
//! [`Plan`]: the probes and scrape jobs that start, stop or restart, and the sections that only a
//! restart can change. [`applicable`] gives back the new configuration with those sections
//! replaced by the running ones, so the agent applies exactly what it can and nothing it cannot.
//! The agent (`agent::Agent::run`) carries the plan out; the triggers are SIGHUP (`cli`) and
//! `POST /-/reload` (`listener`).
//!
//! Entries are compared in their serialized file form, by name (`[[probe]] name`, `[[scrape]]
//! job`), with every secret serialized as a fingerprint of its value
//! (`secret::with_fingerprints`), so a rotated inline password counts as a change
//! without the value leaving memory.

use std::collections::BTreeMap;

use crate::config::{ConfigError, ConfigFile, Settings};

/// Sections of the file that a reload cannot change: the running agent keeps their old value
/// and logs that a restart is needed.
pub const RESTART_SECTIONS: [&str; 3] = ["agent", "remote_write", "pushgateway"];

/// What changed in one kind of named entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Entries only in the new configuration: they start.
    pub added: Vec<String>,
    /// Entries only in the running configuration: they stop, and their series end.
    pub removed: Vec<String>,
    /// Entries in both whose settings differ: they stop and start again.
    pub changed: Vec<String>,
    /// Entries in both with the same settings: they keep running untouched.
    pub unchanged: Vec<String>,
}

impl Changes {
    /// Whether nothing starts, stops or restarts.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// The difference between the running configuration and a new one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// `[[probe]]` tables (with or without discovery), by `name`.
    pub probes: Changes,
    /// `[[scrape]]` jobs, by `job`.
    pub scrapes: Changes,
    /// Sections among [`RESTART_SECTIONS`] that differ: kept as they run until a restart.
    pub restart_needed: Vec<&'static str>,
}

impl Plan {
    /// Whether the reload changes nothing that runs.
    pub fn is_empty(&self) -> bool {
        self.probes.is_empty() && self.scrapes.is_empty()
    }
}

/// An entry's comparable form; entries that cannot be serialized compare as unequal to
/// everything, so a doubt restarts rather than keeps a stale probe.
fn form<T: serde::Serialize>(entry: &T) -> Option<serde_json::Value> {
    serde_json::to_value(entry).ok()
}

/// Sorts named entries of both sides into added, removed, changed and unchanged.
fn compare(
    old: BTreeMap<String, Option<serde_json::Value>>,
    new: BTreeMap<String, Option<serde_json::Value>>,
    all_changed: bool,
) -> Changes {
    let mut c = Changes::default();
    for (name, before) in &old {
        match new.get(name) {
            None => c.removed.push(name.clone()),
            Some(after) if all_changed || before.is_none() || before != after => {
                c.changed.push(name.clone())
            }
            Some(_) => c.unchanged.push(name.clone()),
        }
    }
    c.added = new
        .keys()
        .filter(|n| !old.contains_key(*n))
        .cloned()
        .collect();
    c
}

/// The plan that takes the running configuration `old` to `new` (both validated).
pub fn diff(old: &ConfigFile, new: &ConfigFile) -> Plan {
    crate::secret::with_fingerprints(|| {
        let probes = |f: &ConfigFile| {
            f.probe
                .iter()
                .map(|p| (p.name().to_string(), form(p)))
                .collect()
        };
        let scrapes = |f: &ConfigFile| f.scrape.iter().map(|s| (s.job.clone(), form(s))).collect();
        // Prices feed the AI probes' cost series: a new price list restarts every probe, which
        // is cheap and cannot miss one.
        let pricing_changed = form(&old.pricing) != form(&new.pricing);
        let mut restart_needed = Vec::new();
        if form(&old.agent) != form(&new.agent) {
            restart_needed.push(RESTART_SECTIONS[0]);
        }
        if form(&old.remote_write) != form(&new.remote_write) {
            restart_needed.push(RESTART_SECTIONS[1]);
        }
        if form(&old.pushgateway) != form(&new.pushgateway) {
            restart_needed.push(RESTART_SECTIONS[2]);
        }
        Plan {
            probes: compare(probes(old), probes(new), pricing_changed),
            scrapes: compare(scrapes(old), scrapes(new), false),
            restart_needed,
        }
    })
}

/// The configuration a reload applies: `new` (validated on its own already) with the sections
/// only a restart can change taken from the running `old`, validated again so that probes
/// built from it see the agent-wide values they run under (the probes' `job` label, the
/// external labels).
pub fn applicable(
    old: &Settings,
    new: &Settings,
    source_name: &str,
) -> Result<Settings, Vec<ConfigError>> {
    let mut file = new.file.clone();
    file.agent = old.file.agent.clone();
    file.remote_write = old.file.remote_write.clone();
    file.pushgateway = old.file.pushgateway.clone();
    file.validate(source_name)
}

/// A request to reload, answered with the errors that kept it from applying (none: applied).
pub struct ReloadRequest {
    /// Where the outcome goes; the requester may have stopped waiting.
    pub reply: tokio::sync::oneshot::Sender<Result<(), Vec<String>>>,
}

/// What SIGHUP and `POST /-/reload` use to ask the running agent for a reload; every request
/// goes through the agent's one loop, so reloads never overlap.
#[derive(Clone)]
pub struct ReloadTrigger(tokio::sync::mpsc::Sender<ReloadRequest>);

impl ReloadTrigger {
    /// A trigger and the receiving end the agent reads.
    pub fn channel() -> (ReloadTrigger, tokio::sync::mpsc::Receiver<ReloadRequest>) {
        // Requests queue while one is applied; a burst of signals waits its turn.
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        (ReloadTrigger(tx), rx)
    }

    /// Asks for a reload and waits for its outcome: every error that kept it from applying.
    pub async fn reload(&self) -> Result<(), Vec<String>> {
        let (reply, outcome) = tokio::sync::oneshot::channel();
        if self.0.send(ReloadRequest { reply }).await.is_err() {
            return Err(vec!["the agent is shutting down".to_string()]);
        }
        outcome
            .await
            .unwrap_or_else(|_| Err(vec!["the agent is shutting down".to_string()]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::parse;

    const BASE: &str = r#"
[[remote_write]]
url = "http://127.0.0.1:9/api/v1/write"

[[probe]]
name = "keep"
kind = "http"
url = "http://127.0.0.1:9/keep"

[[probe]]
name = "change"
kind = "http"
url = "http://127.0.0.1:9/first"

[[probe]]
name = "drop"
kind = "http"
url = "http://127.0.0.1:9/drop"

[[scrape]]
job = "node"
targets = ["127.0.0.1:9100"]
"#;

    fn file(toml: &str) -> ConfigFile {
        parse(toml).unwrap().file
    }

    #[test]
    fn the_same_configuration_changes_nothing() {
        let plan = diff(&file(BASE), &file(BASE));
        assert!(plan.is_empty(), "{plan:?}");
        assert!(plan.restart_needed.is_empty());
        assert_eq!(plan.probes.unchanged, ["change", "drop", "keep"]);
        assert_eq!(plan.scrapes.unchanged, ["node"]);
    }

    #[test]
    fn probes_are_added_removed_and_changed_by_name() {
        let new = BASE
            .replace("http://127.0.0.1:9/first", "http://127.0.0.1:9/second")
            .replace(
                "name = \"drop\"\nkind = \"http\"\nurl = \"http://127.0.0.1:9/drop\"",
                "name = \"new\"\nkind = \"http\"\nurl = \"http://127.0.0.1:9/new\"",
            );
        let plan = diff(&file(BASE), &file(&new));
        assert_eq!(plan.probes.added, ["new"]);
        assert_eq!(plan.probes.removed, ["drop"]);
        assert_eq!(plan.probes.changed, ["change"]);
        assert_eq!(plan.probes.unchanged, ["keep"]);
        assert!(plan.scrapes.is_empty());
        assert!(plan.restart_needed.is_empty());
    }

    #[test]
    fn a_changed_retry_count_restarts_the_probe() {
        let new = BASE.replace(
            "url = \"http://127.0.0.1:9/first\"",
            "url = \"http://127.0.0.1:9/first\"\nretries = 2",
        );
        assert_eq!(diff(&file(BASE), &file(&new)).probes.changed, ["change"]);
    }

    #[test]
    fn scrape_jobs_are_compared_by_job() {
        let new = BASE.replace("127.0.0.1:9100", "127.0.0.1:9101")
            + "\n[[scrape]]\njob = \"other\"\ntargets = [\"127.0.0.1:9200\"]\n";
        let plan = diff(&file(BASE), &file(&new));
        assert_eq!(plan.scrapes.changed, ["node"]);
        assert_eq!(plan.scrapes.added, ["other"]);
        assert!(plan.probes.is_empty());
    }

    #[test]
    fn a_changed_inline_secret_is_a_change_though_it_prints_redacted() {
        let with = |password: &str| {
            BASE.replace(
                "[[scrape]]\njob = \"node\"",
                &format!(
                    "[[scrape]]\njob = \"node\"\nbasic_auth = {{ username = \"u\", password = \"{password}\" }}"
                ),
            )
        };
        let plan = diff(&file(&with("one")), &file(&with("two")));
        assert_eq!(plan.scrapes.changed, ["node"]);
        assert!(diff(&file(&with("one")), &file(&with("one"))).is_empty());
        // Outside the comparison secrets print as before.
        let shown = serde_json::to_string(&file(&with("one")).scrape).unwrap();
        assert!(
            !shown.contains("one") && shown.contains("<redacted>"),
            "{shown}"
        );
    }

    #[test]
    fn agent_and_sink_sections_wait_for_a_restart_and_keep_their_running_values() {
        let new = BASE.replace("127.0.0.1:9/api", "127.0.0.1:10/api")
            + "\n[agent]\nexternal_labels = { site = \"b\" }\n";
        let old = parse(BASE).unwrap();
        let new = parse(&new).unwrap();
        let plan = diff(&old.file, &new.file);
        assert_eq!(plan.restart_needed, ["agent", "remote_write"]);
        assert!(plan.is_empty(), "{plan:?}");
        let applied = applicable(&old, &new, "test").unwrap();
        assert_eq!(
            applied.remote_write[0].url.as_str(),
            old.remote_write[0].url.as_str()
        );
        assert_eq!(
            applied.agent.external_labels.to_string(),
            old.agent.external_labels.to_string()
        );
        assert!(diff(&old.file, &applied.file).restart_needed.is_empty());
    }
}
