//! Target building: defaults, every meta label, relabel actions, dedup and drops.

use super::*;
use crate::scrape::relabel::{compile, Action, RelabelConfig};

fn group(targets: &[&[(&str, &str)]], labels: &[(&str, &str)]) -> Group {
    let map = |pairs: &[(&str, &str)]| -> LabelMap {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    Group {
        source: "g".to_string(),
        targets: targets.iter().map(|t| map(t)).collect(),
        labels: map(labels),
    }
}

fn rules(configs: &[RelabelConfig]) -> Vec<RelabelRule> {
    compile(configs).unwrap()
}

fn rule(action: Action, source: &[&str], regex: &str, target: &str, repl: &str) -> RelabelConfig {
    RelabelConfig {
        source_labels: source.iter().map(|s| s.to_string()).collect(),
        target_label: (!target.is_empty()).then(|| target.to_string()),
        regex: regex.to_string(),
        replacement: repl.to_string(),
        action,
        ..RelabelConfig::default()
    }
}

#[test]
fn defaults_give_job_instance_and_url_and_meta_labels_never_reach_the_wire() {
    let g = group(
        &[&[("__address__", "a:9100"), ("__meta_x", "1"), ("env", "own")]],
        &[
            ("env", "group"),
            ("team", "t"),
            ("__meta_filepath", "/f.json"),
        ],
    );
    let b = build_targets(&[g], &[], &TargetDefaults::scrape("node"));
    assert_eq!(b.targets.len(), 1);
    let t = &b.targets[0];
    // The target's own label wins over its group's.
    assert_eq!(
        t.labels.to_string(),
        r#"{env="own",instance="a:9100",job="node",team="t"}"#
    );
    assert_eq!(t.scrape_url().unwrap().as_str(), "http://a:9100/metrics");
    assert_eq!(t.interval, Duration::from_secs(60));
    assert_eq!(t.timeout, Duration::from_secs(10));
}

#[test]
fn every_meta_label_is_read_back_after_relabeling() {
    let g = group(
        &[&[("__address__", "ignored:1"), ("__meta_host", "h")]],
        &[],
    );
    let mut d = TargetDefaults::scrape("j");
    d.params = BTreeMap::from([
        ("module".to_string(), vec!["a".to_string(), "b".to_string()]),
        ("keep".to_string(), vec!["k".to_string()]),
    ]);
    let r = rules(&[
        rule(
            Action::Replace,
            &["__meta_host"],
            "(.*)",
            "__address__",
            "$1:8443",
        ),
        rule(Action::Replace, &[], "(.*)", "__scheme__", "https"),
        rule(Action::Replace, &[], "(.*)", "__metrics_path__", "/probe"),
        rule(Action::Replace, &[], "(.*)", "__param_module", "c"),
        rule(Action::Replace, &[], "(.*)", "__param_target", "x y"),
        rule(Action::Replace, &[], "(.*)", "__scrape_interval__", "30s"),
        rule(Action::Replace, &[], "(.*)", "__scrape_timeout__", "5s"),
        rule(
            Action::Replace,
            &["__meta_host"],
            "(.*)",
            "__tmp_host",
            "$1",
        ),
        rule(Action::Replace, &["__tmp_host"], "(.*)", "host", "$1"),
    ]);
    let b = build_targets(&[g], &r, &d);
    assert_eq!(b.errors, Vec::<String>::new());
    let t = &b.targets[0];
    assert_eq!(
        t.scrape_url().unwrap().as_str(),
        "https://h:8443/probe?keep=k&module=c&module=b&target=x+y"
    );
    assert_eq!(
        (t.interval, t.timeout),
        (Duration::from_secs(30), Duration::from_secs(5))
    );
    // `__tmp_*` and `__param_*` are gone; `instance` is the relabeled address.
    assert_eq!(
        t.labels.to_string(),
        r#"{host="h",instance="h:8443",job="j"}"#
    );
}

#[test]
fn keep_drop_and_missing_address_drop_targets_and_duplicates_merge() {
    let g = group(
        &[
            &[("__address__", "a:1"), ("role", "db")],
            &[("__address__", "b:1"), ("role", "web")],
            &[("__address__", "c:1"), ("role", "skip")],
            &[("__address__", "a:1"), ("role", "db")],
            &[("role", "db")],
        ],
        &[],
    );
    let r = rules(&[rule(Action::Drop, &["role"], "skip", "", "$1")]);
    let b = build_targets(&[g.clone(), g.clone()], &r, &TargetDefaults::scrape("j"));
    let addrs: Vec<&str> = b.targets.iter().map(|t| t.address.as_str()).collect();
    assert_eq!(addrs, ["a:1", "b:1"], "same final labels = one target");
    assert_eq!(b.dropped, 2);
    assert_eq!(b.errors.len(), 2, "{:?}", b.errors);
    assert!(b.errors[0].contains("no __address__"), "{:?}", b.errors);

    let r = rules(&[rule(Action::Keep, &["role"], "web", "", "$1")]);
    let b = build_targets(&[g], &r, &TargetDefaults::scrape("j"));
    assert_eq!(b.targets.len(), 1);
    assert_eq!(b.targets[0].address, "b:1");
}

#[test]
fn hashmod_shards_targets_across_agents_without_overlap() {
    let addrs: Vec<String> = (0..40).map(|i| format!("host-{i}:9100")).collect();
    let g = Group::of("g", &addrs, LabelMap::new());
    let mut seen = Vec::new();
    for shard in 0..3 {
        let r = rules(&[
            RelabelConfig {
                source_labels: vec!["__address__".to_string()],
                target_label: Some("__tmp_hash".to_string()),
                modulus: Some(3),
                action: Action::HashMod,
                ..RelabelConfig::default()
            },
            rule(Action::Keep, &["__tmp_hash"], &shard.to_string(), "", "$1"),
        ]);
        let b = build_targets(std::slice::from_ref(&g), &r, &TargetDefaults::scrape("j"));
        assert!(!b.targets.is_empty(), "shard {shard} got none of 40");
        assert!(b
            .targets
            .iter()
            .all(|t| t.labels.get("__tmp_hash").is_none()));
        seen.extend(b.targets.into_iter().map(|t| t.address));
    }
    seen.sort();
    let mut want = addrs.clone();
    want.sort();
    assert_eq!(seen, want, "every target in exactly one shard");
}

#[test]
fn bad_addresses_schemes_and_durations_are_dropped_with_a_reason() {
    for (labels, want) in [
        (vec![("__address__", "http://a:1/x")], "not host[:port]"),
        (vec![("__address__", "user:pw@a:1")], "not host[:port]"),
        (
            vec![("__address__", "a:1"), ("__scheme__", "ftp")],
            "neither http nor https",
        ),
        (
            vec![("__address__", "a:1"), ("__scrape_interval__", "soon")],
            "not a positive duration",
        ),
        (
            vec![("__address__", "a:1"), ("__scrape_timeout__", "2m")],
            "exceeds",
        ),
    ] {
        let g = group(&[&labels], &[]);
        let b = build_targets(&[g], &[], &TargetDefaults::scrape("j"));
        assert!(b.targets.is_empty());
        assert!(b.errors[0].contains(want), "{:?} lacks {want:?}", b.errors);
        assert!(!b.errors[0].contains("pw"), "a password is never shown");
    }
    // Probes take a URL as the address.
    let mut d = TargetDefaults::scrape("p");
    d.address_may_be_url = true;
    d.metrics_path = String::new();
    let g = group(
        &[
            &[("__address__", "https://x.example/health")],
            &[("__address__", "h:8080")],
        ],
        &[],
    );
    let b = build_targets(&[g], &[], &d);
    let urls: Vec<String> = b
        .targets
        .iter()
        .map(|t| t.probe_url().unwrap().to_string())
        .collect();
    assert_eq!(urls, ["https://x.example/health", "http://h:8080/"]);
}
