//! Relabel cases from Prometheus' documentation and its own relabel tests, plus validation.

use super::*;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().copied()).unwrap()
}

fn rule(json: &str) -> RelabelRule {
    let c: RelabelConfig = serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"));
    RelabelRule::new(0, &c).unwrap_or_else(|e| panic!("{json}: {e}"))
}

fn run(input: &[(&str, &str)], rules: &[&str]) -> Option<String> {
    let rules: Vec<RelabelRule> = rules.iter().map(|r| rule(r)).collect();
    relabel(&labels(input), &rules).map(|l| l.to_string())
}

const ABC: &[(&str, &str)] = &[("__name__", "m"), ("a", "foo"), ("b", "bar"), ("c", "baz")];

#[test]
fn replace_cases() {
    let cases: &[(&[&str], Option<&str>)] = &[
        // Prometheus: regex f(.*), ch${1}-ch${1} → choo-choo.
        (
            &[
                r#"{"source_labels":["a"],"regex":"f(.*)","target_label":"d","replacement":"ch${1}-ch${1}"}"#,
            ],
            Some(r#"m{a="foo",b="bar",c="baz",d="choo-choo"}"#),
        ),
        // Several sources joined with the separator.
        (
            &[
                r#"{"source_labels":["a","b"],"regex":"f(.*);(.*)r","target_label":"a","replacement":"b${1}${2}m"}"#,
            ],
            Some(r#"m{a="boobam",b="bar",c="baz"}"#),
        ),
        // Anchored: "o" does not match "foo", so nothing happens.
        (
            &[r#"{"source_labels":["a"],"regex":"o","target_label":"d","replacement":"x"}"#],
            Some(r#"m{a="foo",b="bar",c="baz"}"#),
        ),
        // Defaults: regex (.*), replacement $1 copies a label.
        (
            &[r#"{"source_labels":["c"],"target_label":"d"}"#],
            Some(r#"m{a="foo",b="bar",c="baz",d="baz"}"#),
        ),
        // An empty result removes the target label.
        (
            &[r#"{"source_labels":["missing"],"target_label":"a"}"#],
            Some(r#"m{b="bar",c="baz"}"#),
        ),
        // `$1x` names group "1x", which does not exist: empty, so the label goes.
        (
            &[r#"{"source_labels":["a"],"regex":"(f)oo","target_label":"b","replacement":"$1x"}"#],
            Some(r#"m{a="foo",c="baz"}"#),
        ),
        // Named groups and `$$`.
        (
            &[
                r#"{"source_labels":["a"],"regex":"(?P<first>f)(?P<rest>.*)","target_label":"d","replacement":"${rest}_$first$$"}"#,
            ],
            Some(r#"m{a="foo",b="bar",c="baz",d="oo_f$"}"#),
        ),
        // Templated target label; an expansion that is not a label name is skipped.
        (
            &[r#"{"source_labels":["a"],"regex":"(.*)","target_label":"l_$1","replacement":"v"}"#],
            Some(r#"m{a="foo",b="bar",c="baz",l_foo="v"}"#),
        ),
        (
            &[r#"{"source_labels":["a"],"regex":"(.*)","target_label":"${1}","replacement":"v"}"#],
            Some(r#"m{a="foo",b="bar",c="baz",foo="v"}"#),
        ),
        (
            &[r#"{"source_labels":["a"],"regex":"f(.*)","target_label":"${1}","replacement":"v"}"#],
            Some(r#"m{a="foo",b="bar",c="baz",oo="v"}"#),
        ),
        // Renaming the metric.
        (
            &[
                r#"{"source_labels":["__name__"],"regex":"m","target_label":"__name__","replacement":"renamed"}"#,
            ],
            Some(r#"renamed{a="foo",b="bar",c="baz"}"#),
        ),
        // A rename to an invalid metric name cannot be held; the series is dropped.
        (
            &[
                r#"{"source_labels":["__name__"],"target_label":"__name__","replacement":"bad-name"}"#,
            ],
            None,
        ),
    ];
    for (rules, want) in cases {
        assert_eq!(run(ABC, rules).as_deref(), *want, "{rules:?}");
    }
}

#[test]
fn dot_matches_newline_as_in_prometheus() {
    let input = [("__name__", "m"), ("a", "x\ny")];
    let got = run(
        &input,
        &[r#"{"source_labels":["a"],"regex":"x.y","action":"drop"}"#],
    );
    assert_eq!(got, None);
}

#[test]
fn keep_and_drop() {
    let keep = r#"{"source_labels":["a"],"regex":"f.*","action":"keep"}"#;
    let keep_miss = r#"{"source_labels":["a"],"regex":"f","action":"keep"}"#;
    let drop = r#"{"source_labels":["a","b"],"regex":"foo;bar","action":"drop"}"#;
    let drop_miss = r#"{"source_labels":["a"],"regex":"bar","action":"drop"}"#;
    assert!(run(ABC, &[keep]).is_some());
    assert!(run(ABC, &[keep_miss]).is_none());
    assert!(run(ABC, &[drop]).is_none());
    assert!(run(ABC, &[drop_miss]).is_some());
    // keep on a missing label matches the empty string.
    assert!(run(
        ABC,
        &[r#"{"source_labels":["zz"],"regex":"","action":"keep"}"#]
    )
    .is_some());
    // The first rule that drops ends processing.
    assert!(run(ABC, &[drop, keep]).is_none());
}

#[test]
fn keepequal_and_dropequal() {
    let input = [("__name__", "m"), ("a", "1"), ("b", "1"), ("c", "2")];
    let ke =
        |s, t| format!(r#"{{"source_labels":["{s}"],"target_label":"{t}","action":"keepequal"}}"#);
    let de =
        |s, t| format!(r#"{{"source_labels":["{s}"],"target_label":"{t}","action":"dropequal"}}"#);
    assert!(run(&input, &[&ke("a", "b")]).is_some());
    assert!(run(&input, &[&ke("a", "c")]).is_none());
    assert!(run(&input, &[&de("a", "b")]).is_none());
    assert!(run(&input, &[&de("a", "c")]).is_some());
}

#[test]
fn hashmod_matches_prometheus_shards() {
    // Prometheus' own test: md5("baz"), last 8 bytes, mod 1000 = 976.
    let r = r#"{"source_labels":["c"],"target_label":"d","modulus":1000,"action":"hashmod"}"#;
    assert_eq!(
        run(ABC, &[r]).as_deref(),
        Some(r#"m{a="foo",b="bar",c="baz",d="976"}"#)
    );
    let r = r#"{"source_labels":["a","b"],"target_label":"d","modulus":7,"action":"HashMod"}"#;
    assert_eq!(
        run(ABC, &[r]).unwrap(),
        r#"m{a="foo",b="bar",c="baz",d="6"}"#
    );
}

#[test]
fn labelmap_labeldrop_labelkeep() {
    let input = [
        ("__name__", "m"),
        ("__meta_kubernetes_pod", "p"),
        ("__meta_kubernetes_ns", "n"),
        ("a", "1"),
    ];
    let map = r#"{"regex":"__meta_kubernetes_(.+)","action":"labelmap"}"#;
    assert_eq!(
        run(&input, &[map]).unwrap(),
        r#"m{__meta_kubernetes_ns="n",__meta_kubernetes_pod="p",a="1",ns="n",pod="p"}"#
    );
    let map2 =
        r#"{"regex":"__meta_(kubernetes)_(.+)","replacement":"${1}_$2","action":"labelmap"}"#;
    assert_eq!(
        run(
            &input,
            &[map2, r#"{"regex":"__meta_.*","action":"labeldrop"}"#]
        )
        .unwrap(),
        r#"m{a="1",kubernetes_ns="n",kubernetes_pod="p"}"#
    );
    // labelkeep applies to __name__ too, as in Prometheus.
    let keep = r#"{"regex":"__name__|a","action":"labelkeep"}"#;
    assert_eq!(run(&input, &[keep]).unwrap(), r#"m{a="1"}"#);
    let keep_no_name = r#"{"regex":"a","action":"labelkeep"}"#;
    assert_eq!(run(&input, &[keep_no_name]).unwrap(), r#"{a="1"}"#);
}

#[test]
fn lowercase_and_uppercase() {
    let input = [("__name__", "m"), ("a", "MiXeD"), ("b", "Ünï")];
    assert_eq!(
        run(
            &input,
            &[r#"{"source_labels":["a","b"],"target_label":"l","action":"lowercase"}"#]
        )
        .unwrap(),
        r#"m{a="MiXeD",b="Ünï",l="mixed;ünï"}"#
    );
    assert_eq!(
        run(
            &input,
            &[r#"{"source_labels":["a"],"target_label":"a","action":"uppercase"}"#]
        )
        .unwrap(),
        r#"m{a="MIXED",b="Ünï"}"#
    );
}

#[test]
fn no_rules_returns_the_input() {
    let l = labels(ABC);
    assert_eq!(relabel(&l, &[]), Some(l));
}

#[test]
fn config_defaults_match_prometheus() {
    let c: RelabelConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(c, RelabelConfig::default());
    assert_eq!(c.separator, ";");
    assert_eq!(c.regex, "(.*)");
    assert_eq!(c.replacement, "$1");
    assert_eq!(c.action, Action::Replace);
    assert!(serde_json::from_str::<RelabelConfig>(r#"{"sourcelabels":["a"]}"#).is_err());
    assert!(serde_json::from_str::<RelabelConfig>(r#"{"action":"explode"}"#).is_err());
    let c: RelabelConfig = serde_json::from_str(r#"{"action":"LabelDrop","regex":"x"}"#).unwrap();
    assert_eq!(c.action, Action::LabelDrop);
}

#[test]
fn config_reads_from_toml() {
    use figment::providers::{Format, Toml};
    #[derive(serde::Deserialize)]
    struct Wrapper {
        metric_relabel_configs: Vec<RelabelConfig>,
    }
    let toml = r#"
        [[metric_relabel_configs]]
        source_labels = ["__name__"]
        regex = "go_.*"
        action = "drop"

        [[metric_relabel_configs]]
        target_label = "env"
        replacement = "prod"
    "#;
    let w: Wrapper = figment::Figment::from(Toml::string(toml))
        .extract()
        .unwrap();
    let rules = compile(&w.metric_relabel_configs).unwrap();
    assert_eq!(rules.len(), 2);
    let l = labels(&[("__name__", "go_goroutines")]);
    assert_eq!(relabel(&l, &rules), None);
    let l = labels(&[("__name__", "up")]);
    assert_eq!(
        relabel(&l, &rules).unwrap().to_string(),
        r#"up{env="prod"}"#
    );
}

#[test]
fn validation_names_rule_index_and_field() {
    let cases = [
        (r#"{"action":"replace"}"#, "target_label"),
        (r#"{"action":"hashmod","target_label":"x"}"#, "modulus"),
        (
            r#"{"action":"hashmod","target_label":"x","modulus":0}"#,
            "modulus",
        ),
        (
            r#"{"action":"hashmod","target_label":"1x","modulus":2}"#,
            "target_label",
        ),
        (r#"{"target_label":"bad-name"}"#, "target_label"),
        (r#"{"target_label":"$1-x"}"#, "target_label"),
        (
            r#"{"source_labels":["bad-label"],"target_label":"x"}"#,
            "source_labels",
        ),
        (r#"{"regex":"(unclosed","target_label":"x"}"#, "regex"),
        (
            r#"{"action":"lowercase","target_label":"x","replacement":"y"}"#,
            "replacement",
        ),
        (r#"{"action":"keepequal"}"#, "target_label"),
        (
            r#"{"action":"keepequal","target_label":"x","regex":"y"}"#,
            "action",
        ),
        (
            r#"{"action":"dropequal","target_label":"x","separator":","}"#,
            "action",
        ),
        (
            r#"{"action":"labeldrop","regex":"x","source_labels":["a"]}"#,
            "action",
        ),
        (
            r#"{"action":"labelkeep","regex":"x","target_label":"a"}"#,
            "action",
        ),
        (
            r#"{"action":"labelmap","regex":"x","replacement":"bad-$1"}"#,
            "replacement",
        ),
    ];
    for (json, field) in cases {
        let ok: RelabelConfig = serde_json::from_str(r#"{"target_label":"x"}"#).unwrap();
        let bad: RelabelConfig = serde_json::from_str(json).unwrap();
        let err = compile(&[ok, bad]).unwrap_err();
        assert_eq!((err.index, err.field), (1, field), "{json}: {err}");
        assert!(
            err.to_string()
                .starts_with(&format!("metric_relabel_configs[1].{field}: ")),
            "{err}"
        );
    }
}
