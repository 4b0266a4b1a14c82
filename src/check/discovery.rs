//! `config check`'s view of discovery: for each probe and scrape job that discovers its
//! targets, what it reads them from and how many targets there are now.
//!
//! [`gather`] is the one part that reads: the `file_sd_configs` files that exist now (through
//! the file provider `run` uses, so a file `config check` accepts is one `run` accepts). It
//! makes no network call: HTTP and DNS discovery are resolved at run time, and said so. The
//! renderings are pure functions of what it found.

use std::fmt::Write as _;

use serde::Serialize;

use crate::config::discovery::DiscoverySettings;
use crate::config::{ProbeSettings, Settings};
use crate::discovery::{build_targets, file::FileProvider, Group, TargetDefaults};

/// What one probe or scrape job discovers its targets from, read now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobDiscovery {
    /// `probe` or `scrape`.
    pub section: &'static str,
    /// The probe's name or the scrape job's `job`.
    pub name: String,
    /// Each target source, in configuration order.
    pub sources: Vec<Source>,
    /// Final targets of the sources read now (static and file), after relabeling.
    pub targets: usize,
    /// Targets a `drop` or `keep` rule dropped.
    pub dropped: usize,
    /// Whether HTTP or DNS discovery adds targets at run time to those counted.
    pub more_at_run_time: bool,
    /// What is wrong now: a file that cannot be read or parsed (file, line and column), a
    /// target dropped for an error, a target the probe cannot aim at.
    pub problems: Vec<String>,
}

/// One target source of a job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Source {
    /// The configuration key: `static_configs`, `file_sd_configs`, `http_sd_configs` or
    /// `dns_sd_configs` (a scrape job's `targets` count as `static_configs`).
    pub key: &'static str,
    /// What it reads: the files (as configured, globs unexpanded), the URL (password
    /// redacted), the names and their record type.
    pub from: Vec<String>,
    /// Targets it lists now, before relabeling; `None`: resolved at run time.
    pub targets: Option<usize>,
}

/// The discovery of every probe with discovered targets and every scrape job with a
/// discovery key or `relabel_configs`, in configuration order (probes first).
pub fn gather(settings: &Settings) -> Vec<JobDiscovery> {
    let probes = settings.probe_discovery.iter().map(|d| {
        job(
            "probe",
            d.probe.name(),
            &d.discovery,
            &d.defaults,
            Some(&d.probe),
        )
    });
    let scrapes = settings
        .scrapes
        .iter()
        .filter(|s| {
            let d = &s.discovery;
            // A job with `targets` only is no discovery: `config check` prints them already.
            d.is_dynamic()
                || !d.relabel.is_empty()
                || d.static_groups
                    .iter()
                    .any(|g| !g.source.ends_with(".targets"))
        })
        .map(|s| job("scrape", &s.job, &s.discovery, &s.defaults, None));
    probes.chain(scrapes).collect()
}

fn job(
    section: &'static str,
    name: &str,
    d: &DiscoverySettings,
    defaults: &TargetDefaults,
    probe: Option<&ProbeSettings>,
) -> JobDiscovery {
    let mut sources = Vec::new();
    let mut problems = Vec::new();
    if !d.static_groups.is_empty() {
        sources.push(Source {
            key: "static_configs",
            from: Vec::new(),
            targets: Some(listed(&d.static_groups)),
        });
    }
    let mut groups = d.static_groups.clone();
    for f in &d.files {
        let read = FileProvider::new(f.clone()).refresh_now();
        let found = read.groups.unwrap_or_default();
        sources.push(Source {
            key: "file_sd_configs",
            from: f.files.iter().map(|p| p.display().to_string()).collect(),
            targets: Some(listed(&found)),
        });
        problems.extend(read.errors);
        groups.extend(found);
    }
    for h in &d.http {
        sources.push(Source {
            key: "http_sd_configs",
            from: vec![crate::secret::redact_url(&h.url)],
            targets: None,
        });
    }
    for n in &d.dns {
        sources.push(Source {
            key: "dns_sd_configs",
            from: n
                .names
                .iter()
                .map(|name| format!("{name} ({})", n.record_type))
                .collect(),
            targets: None,
        });
    }
    let built = build_targets(&groups, &d.relabel, defaults);
    problems.extend(built.errors);
    let mut targets = built.targets.len();
    if let Some(probe) = probe {
        for t in &built.targets {
            if let Err(e) = probe.with_target(t) {
                problems.push(e.to_string());
                targets -= 1;
            }
        }
    }
    JobDiscovery {
        section,
        name: name.to_string(),
        sources,
        targets,
        dropped: built.dropped,
        more_at_run_time: !d.http.is_empty() || !d.dns.is_empty(),
        problems,
    }
}

/// Targets the groups list, before relabeling.
fn listed(groups: &[Group]) -> usize {
    groups.iter().map(|g| g.targets.len()).sum()
}

/// The table: TOML comment lines (`#`), so the output of `config check` stays a
/// configuration file. Empty when no job discovers its targets.
pub fn render_table(jobs: &[JobDiscovery]) -> String {
    if jobs.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "#\n# discovered targets, read now (HTTP and DNS discovery are resolved at run time):\n",
    );
    for j in jobs {
        let more = if j.more_at_run_time {
            " + those resolved at run time"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "# {} {:?}: {} target{} after relabeling{more}, {} dropped by relabeling",
            j.section,
            j.name,
            j.targets,
            if j.targets == 1 { "" } else { "s" },
            j.dropped,
        );
        for s in &j.sources {
            let count = match s.targets {
                Some(n) => format!("{n} listed"),
                None => "resolved at run time".to_string(),
            };
            let from = if s.from.is_empty() {
                String::new()
            } else {
                format!(" {}", s.from.join(", "))
            };
            let _ = writeln!(out, "#   {}{from}: {count}", s.key);
        }
        for p in &j.problems {
            let _ = writeln!(out, "#   problem: {}", super::one_line(p));
        }
    }
    out
}

/// The same as [`render_table`], as a JSON value (the `discovery` list of `config check
/// --output json`).
pub fn to_json(jobs: &[JobDiscovery]) -> serde_json::Value {
    // Strings, numbers, bools and lists of them always serialize.
    serde_json::to_value(jobs).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jobs() -> Vec<JobDiscovery> {
        vec![JobDiscovery {
            section: "probe",
            name: "web".into(),
            sources: vec![
                Source {
                    key: "static_configs",
                    from: vec![],
                    targets: Some(2),
                },
                Source {
                    key: "file_sd_configs",
                    from: vec!["/etc/t/a.json".into()],
                    targets: Some(3),
                },
                Source {
                    key: "http_sd_configs",
                    from: vec!["http://sd.example/targets".into()],
                    targets: None,
                },
            ],
            targets: 4,
            dropped: 1,
            more_at_run_time: true,
            problems: vec!["/etc/t/b.json:3:17: EOF while parsing a list".into()],
        }]
    }

    #[test]
    fn the_table_is_comments_saying_each_source_and_the_count() {
        assert_eq!(
            render_table(&jobs()),
            "#\n# discovered targets, read now (HTTP and DNS discovery are resolved at run time):\n\
             # probe \"web\": 4 targets after relabeling + those resolved at run time, 1 dropped by relabeling\n\
             #   static_configs: 2 listed\n\
             #   file_sd_configs /etc/t/a.json: 3 listed\n\
             #   http_sd_configs http://sd.example/targets: resolved at run time\n\
             #   problem: /etc/t/b.json:3:17: EOF while parsing a list\n"
        );
        assert_eq!(render_table(&[]), "");
    }

    #[test]
    fn json_carries_the_same_facts() {
        let v = to_json(&jobs());
        assert_eq!(v[0]["section"], "probe");
        assert_eq!(v[0]["targets"], 4);
        assert_eq!(v[0]["dropped"], 1);
        assert_eq!(v[0]["more_at_run_time"], true);
        assert_eq!(v[0]["sources"][1]["from"][0], "/etc/t/a.json");
        assert_eq!(v[0]["sources"][2]["targets"], serde_json::Value::Null);
        assert_eq!(
            v[0]["problems"][0],
            "/etc/t/b.json:3:17: EOF while parsing a list"
        );
    }
}
