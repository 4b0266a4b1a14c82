//! The alerting rules in ops/alerts.yml: valid for Prometheus, unit-tested with promtool, and
//! every alert covered both firing and not firing.

mod common;
mod ops_common;

use std::collections::BTreeSet;
use std::process::Command;

use common::require_binary;
use ops_common::{read, repo_file, yaml_documents};

fn promtool(args: &[&str]) {
    let Some(promtool) = require_binary("promtool") else {
        return;
    };
    let out = Command::new(promtool)
        .args(args)
        .current_dir(repo_file("ops"))
        .output()
        .expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn promtool_check_rules_accepts_the_alerts() {
    promtool(&["check", "rules", "alerts.yml"]);
}

#[test]
fn promtool_rule_unit_tests_pass() {
    promtool(&["test", "rules", "alerts_test.yml"]);
}

/// Alert names defined in alerts.yml.
fn alert_names() -> BTreeSet<String> {
    let doc = &yaml_documents("ops/alerts.yml", &read("ops/alerts.yml"))[0];
    doc["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").iter())
        .filter_map(|r| r["alert"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn every_alert_is_tested_firing_and_not_firing() {
    let tests = &yaml_documents("ops/alerts_test.yml", &read("ops/alerts_test.yml"))[0];
    let mut firing = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for t in tests["tests"].as_array().expect("tests") {
        for case in t["alert_rule_test"].as_array().into_iter().flatten() {
            let name = case["alertname"].as_str().expect("alertname").to_string();
            let expected = case["exp_alerts"].as_array().map_or(0, Vec::len);
            if expected > 0 {
                firing.insert(name);
            } else {
                quiet.insert(name);
            }
        }
    }
    for alert in alert_names() {
        assert!(firing.contains(&alert), "{alert} is never tested firing");
        assert!(quiet.contains(&alert), "{alert} is never tested not firing");
    }
}

#[test]
fn every_alert_has_severity_summary_and_description() {
    let doc = &yaml_documents("ops/alerts.yml", &read("ops/alerts.yml"))[0];
    for g in doc["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            let name = r["alert"].as_str().unwrap_or("?");
            assert!(
                matches!(
                    r["labels"]["severity"].as_str(),
                    Some("critical" | "warning")
                ),
                "{name}: severity must be critical or warning"
            );
            for a in ["summary", "description"] {
                assert!(
                    r["annotations"][a].as_str().is_some_and(|s| !s.is_empty()),
                    "{name}: missing annotation {a}"
                );
            }
        }
    }
}

#[test]
fn thresholds_table_lists_every_alert() {
    // The header of alerts.yml is where people look for thresholds; it must not drift.
    let text = read("ops/alerts.yml");
    let header: String = text
        .lines()
        .take_while(|l| l.starts_with('#') || l.is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    for alert in alert_names() {
        assert!(
            header.contains(&alert),
            "{alert} is missing from the thresholds table"
        );
    }
}

/// Every string literal in src/ (metric names are declared there as constants).
fn source_literals() -> String {
    fn walk(dir: &std::path::Path, out: &mut String) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push_str(&std::fs::read_to_string(&p).unwrap());
            }
        }
    }
    let mut all = String::new();
    walk(&repo_file("src"), &mut all);
    all
}

/// Metric names (`probe_*`, `pushprobe_*`) mentioned in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let re = regex::Regex::new(r"\b(?:push)?probe_[a-z0-9_]*[a-z0-9]\b").unwrap();
    re.find_iter(text)
        .map(|m| m.as_str().to_string())
        // Histogram series are named after their family.
        .map(|n| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| n.strip_suffix(s).map(str::to_string))
                .unwrap_or(n)
        })
        .collect()
}

#[test]
fn every_metric_the_alerts_and_dashboard_name_exists_in_the_code() {
    // A rule or panel on a metric nobody sends is silently empty forever; advice naming one
    // sends people looking for something that does not exist.
    let code = source_literals();
    for file in [
        "ops/alerts.yml",
        "ops/grafana-dashboard.json",
        "docs/troubleshooting.md",
    ] {
        let names = metric_names(&read(file));
        assert!(names.len() >= 5, "{file}: {names:?}");
        for name in names {
            assert!(
                code.contains(&format!("\"{name}\"")),
                "{file} uses {name}, which no source file declares"
            );
        }
    }
}
