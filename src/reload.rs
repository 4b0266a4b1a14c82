//! Live reload: what a new configuration changes, worked out before anything is touched.
//!
//! [`diff`] compares the running configuration with a new, already validated one and yields a
//! [`Plan`]: the probes, scrape jobs, remote-write endpoints and Pushgateway groups that start,
//! stop or restart, and what only a restart can change. [`applicable`] gives back the new
//! configuration with those parts replaced by the running ones, so the agent applies exactly
//! what it can and nothing it cannot. The agent (`agent::Agent::run`) carries the plan out; the
//! triggers are SIGHUP (`cli`) and `POST /-/reload` (`listener`).
//!
//! Entries are compared in their serialized file form, by name (`[[probe]] name`, `[[scrape]]
//! job`, the `name` of a `[[remote_write]]` or `[[pushgateway]]` table, or the name derived from
//! its URL), with every secret serialized as a fingerprint of its value
//! (`secret::with_fingerprints`), so a rotated inline password counts as a change
//! without the value leaving memory.
//!
//! What only a restart changes: the `[agent]` section (the data directory and queue kind, the
//! listener, the external labels and identity every sender and probe was built with), and of a
//! remote-write endpoint that stays, the keys that shape its queue ([`QUEUE_KEYS`]): a changed
//! endpoint keeps its queue, so that nothing queued is lost or sent twice.

use std::collections::BTreeMap;

use crate::config::{ConfigError, PushgatewayConfig, RemoteWriteConfig, Settings};

/// Sections of the file that a reload cannot change: the running agent keeps their old value
/// and logs that a restart is needed.
pub const RESTART_SECTIONS: [&str; 1] = ["agent"];

/// Keys of a `[[remote_write]]` table that shape its queue, kept as they run while the
/// endpoint stays configured: its queue (and the live lane beside it) is handed from sender to
/// sender as it is.
pub const QUEUE_KEYS: [&str; 2] = ["queue_capacity", "accepts_out_of_order"];

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
    /// `[[remote_write]]` endpoints, by name.
    pub remote_write: Changes,
    /// `[[pushgateway]]` groups, by name.
    pub pushgateway: Changes,
    /// What differs yet only a restart changes (sections among [`RESTART_SECTIONS`], and
    /// `remote_write.<name>.<key>` for [`QUEUE_KEYS`]): kept as it runs until then.
    pub restart_needed: Vec<String>,
}

impl Plan {
    /// Whether the reload changes nothing that runs.
    pub fn is_empty(&self) -> bool {
        self.probes.is_empty()
            && self.scrapes.is_empty()
            && self.remote_write.is_empty()
            && self.pushgateway.is_empty()
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

/// The `[[remote_write]]` tables of validated settings with their effective names (validation
/// keeps every table, in order, and names the unnamed after their URL).
fn remote_writes(s: &Settings) -> impl Iterator<Item = (&str, &RemoteWriteConfig)> {
    s.remote_write
        .iter()
        .map(|rw| rw.name.as_str())
        .zip(&s.file.remote_write)
}

/// The `[[pushgateway]]` tables of validated settings with their effective names.
fn pushgateways(s: &Settings) -> impl Iterator<Item = (&str, &PushgatewayConfig)> {
    s.pushgateway
        .iter()
        .map(|pg| pg.name.as_str())
        .zip(&s.file.pushgateway)
}

/// The [`QUEUE_KEYS`] of one remote-write table.
fn queue_keys(rw: &RemoteWriteConfig) -> [String; 2] {
    [
        rw.queue_capacity.to_string(),
        rw.accepts_out_of_order.to_string(),
    ]
}

/// The plan that takes the running configuration `old` to `new` (both validated).
pub fn diff(old: &Settings, new: &Settings) -> Plan {
    crate::secret::with_fingerprints(|| {
        let probes = |s: &Settings| {
            s.file
                .probe
                .iter()
                .map(|p| (p.name().to_string(), form(p)))
                .collect()
        };
        let scrapes = |s: &Settings| {
            s.file
                .scrape
                .iter()
                .map(|j| (j.job.clone(), form(j)))
                .collect()
        };
        let receivers = |s: &Settings| {
            remote_writes(s)
                .map(|(name, rw)| (name.to_string(), form(rw)))
                .collect()
        };
        let gateways = |s: &Settings| {
            pushgateways(s)
                .map(|(name, pg)| (name.to_string(), form(pg)))
                .collect()
        };
        // Prices feed the AI probes' cost series: a new price list restarts every probe, which
        // is cheap and cannot miss one.
        let pricing_changed = form(&old.file.pricing) != form(&new.file.pricing);
        let mut restart_needed = Vec::new();
        if form(&old.file.agent) != form(&new.file.agent) {
            restart_needed.push(RESTART_SECTIONS[0].to_string());
        }
        for (name, before) in remote_writes(old) {
            let Some((_, after)) = remote_writes(new).find(|(n, _)| *n == name) else {
                continue;
            };
            for ((key, a), b) in QUEUE_KEYS
                .iter()
                .zip(queue_keys(before))
                .zip(queue_keys(after))
            {
                if a != b {
                    restart_needed.push(format!("remote_write.{name}.{key}"));
                }
            }
        }
        Plan {
            probes: compare(probes(old), probes(new), pricing_changed),
            scrapes: compare(scrapes(old), scrapes(new), false),
            remote_write: compare(receivers(old), receivers(new), false),
            pushgateway: compare(gateways(old), gateways(new), false),
            restart_needed,
        }
    })
}

/// The configuration a reload applies: `new` (validated on its own already) with what only a
/// restart can change taken from the running `old` (the `[agent]` section, the [`QUEUE_KEYS`]
/// of endpoints that stay), validated again so that probes and senders built from it see the
/// agent-wide values they run under (the probes' `job` label, the external labels).
pub fn applicable(
    old: &Settings,
    new: &Settings,
    source_name: &str,
) -> Result<Settings, Vec<ConfigError>> {
    let mut file = new.file.clone();
    file.agent = old.file.agent.clone();
    let names: Vec<String> = new.remote_write.iter().map(|rw| rw.name.clone()).collect();
    for (name, rw) in names.iter().zip(&mut file.remote_write) {
        if let Some((_, running)) = remote_writes(old).find(|(n, _)| n == name) {
            rw.queue_capacity = running.queue_capacity;
            rw.accepts_out_of_order = running.accepts_out_of_order;
        }
    }
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

    fn file(toml: &str) -> Settings {
        parse(toml).unwrap()
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
        let shown = serde_json::to_string(&file(&with("one")).file.scrape).unwrap();
        assert!(
            !shown.contains("one") && shown.contains("<redacted>"),
            "{shown}"
        );
    }

    #[test]
    fn the_agent_section_waits_for_a_restart_and_keeps_its_running_values() {
        let new = BASE.to_string() + "\n[agent]\nexternal_labels = { site = \"b\" }\n";
        let old = parse(BASE).unwrap();
        let new = parse(&new).unwrap();
        let plan = diff(&old, &new);
        assert_eq!(plan.restart_needed, ["agent"]);
        assert!(plan.is_empty(), "{plan:?}");
        let applied = applicable(&old, &new, "test").unwrap();
        assert_eq!(
            applied.agent.external_labels.to_string(),
            old.agent.external_labels.to_string()
        );
        assert!(diff(&old, &applied).restart_needed.is_empty());
    }

    const SINKS: &str = r#"
[[remote_write]]
name = "keep"
url = "http://127.0.0.1:9/keep"

[[remote_write]]
name = "change"
url = "http://127.0.0.1:9/first"

[[remote_write]]
url = "http://127.0.0.1:9/unnamed"

[[pushgateway]]
name = "pg"
url = "http://127.0.0.1:9091"
job = "j"
"#;

    #[test]
    fn remote_write_endpoints_are_added_removed_and_changed_by_name() {
        let new = SINKS
            .replace("http://127.0.0.1:9/first", "http://127.0.0.1:10/first")
            .replace("http://127.0.0.1:9/unnamed", "http://127.0.0.1:9/renamed");
        let plan = diff(&file(SINKS), &file(&new));
        // An unnamed endpoint is named after its URL: a new URL is another endpoint.
        assert_eq!(plan.remote_write.added, ["127.0.0.1:9/renamed"]);
        assert_eq!(plan.remote_write.removed, ["127.0.0.1:9/unnamed"]);
        assert_eq!(plan.remote_write.changed, ["change"]);
        assert_eq!(plan.remote_write.unchanged, ["keep"]);
        assert!(plan.pushgateway.is_empty() && plan.probes.is_empty());
        assert!(plan.restart_needed.is_empty());
        assert!(diff(&file(SINKS), &file(SINKS)).is_empty());
    }

    #[test]
    fn a_rotated_inline_remote_write_password_changes_the_endpoint() {
        let with = |password: &str| {
            SINKS.replace(
                "url = \"http://127.0.0.1:9/first\"",
                &format!(
                    "url = \"http://127.0.0.1:9/first\"\nbasic_auth = {{ username = \"u\", password = \"{password}\" }}"
                ),
            )
        };
        let plan = diff(&file(&with("one")), &file(&with("two")));
        assert_eq!(plan.remote_write.changed, ["change"]);
        assert!(diff(&file(&with("one")), &file(&with("one"))).is_empty());
    }

    #[test]
    fn pushgateway_groups_are_compared_by_name() {
        let new = SINKS.replace("job = \"j\"", "job = \"k\"")
            + "\n[[pushgateway]]\nname = \"pg2\"\nurl = \"http://127.0.0.1:9092\"\njob = \"j\"\n";
        let plan = diff(&file(SINKS), &file(&new));
        assert_eq!(plan.pushgateway.changed, ["pg"]);
        assert_eq!(plan.pushgateway.added, ["pg2"]);
        assert!(plan.remote_write.is_empty());
        let gone = SINKS.split("[[pushgateway]]").next().unwrap();
        assert_eq!(diff(&file(SINKS), &file(gone)).pushgateway.removed, ["pg"]);
    }

    #[test]
    fn queue_keys_of_an_endpoint_that_stays_wait_for_a_restart() {
        let new = SINKS.replace(
            "name = \"keep\"\n",
            "name = \"keep\"\nqueue_capacity = 5000\naccepts_out_of_order = true\n",
        );
        let old = file(SINKS);
        let new = file(&new);
        let plan = diff(&old, &new);
        assert_eq!(
            plan.restart_needed,
            [
                "remote_write.keep.queue_capacity",
                "remote_write.keep.accepts_out_of_order"
            ]
        );
        let applied = applicable(&old, &new, "test").unwrap();
        assert_eq!(
            applied.remote_write[0].queue_capacity,
            old.remote_write[0].queue_capacity
        );
        assert!(!applied.remote_write[0].accepts_out_of_order);
        assert!(diff(&old, &applied).is_empty(), "nothing else changed");
        // A new endpoint takes them as configured.
        let added = SINKS.to_string()
            + "\n[[remote_write]]\nname = \"new\"\nurl = \"http://127.0.0.1:9/new\"\nqueue_capacity = 5000\n";
        let applied = applicable(&old, &file(&added), "test").unwrap();
        assert_eq!(applied.remote_write[3].queue_capacity, 5000);
    }
}
