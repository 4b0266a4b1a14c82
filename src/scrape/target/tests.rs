use super::*;
use crate::scrape::relabel::{compile, Action, RelabelConfig};
use crate::series::{is_stale_nan, STALE_NAN_BITS};

fn target_labels() -> Labels {
    Labels::from_pairs([("job", "node"), ("instance", "127.0.0.1:9100")]).unwrap()
}

fn state(opts: TargetOptions) -> TargetState {
    TargetState::new(target_labels(), opts)
}

/// A target whose relabeling sets `job="other"` on series whose `source` label matches
/// `regex`.
fn state_moving_job(source: &str, regex: &str) -> TargetState {
    let rules = compile(&[RelabelConfig {
        source_labels: vec![source.into()],
        regex: regex.into(),
        target_label: Some("job".into()),
        replacement: "other".into(),
        ..RelabelConfig::default()
    }])
    .unwrap();
    state(TargetOptions {
        rules: Arc::from(rules),
        ..default_opts()
    })
}

fn default_opts() -> TargetOptions {
    TargetOptions {
        honor_timestamps: true,
        ..TargetOptions::default()
    }
}

/// Runs one successful scrape (text format) and its report, returning the summary and the
/// samples as `(series, value, timestamp)`.
fn scrape(st: &mut TargetState, body: &str, ts: i64) -> (ScrapeSummary, Vec<Sample>) {
    let mut out = Vec::new();
    let (summary, _) = st.ingest(
        body.as_bytes(),
        Some(crate::scrape::TEXT_CONTENT_TYPE),
        ts,
        &mut out,
    );
    st.report(&summary, ts, Duration::from_millis(250), &mut out);
    (summary, out)
}

fn show(samples: &[Sample]) -> Vec<(String, String, i64)> {
    samples
        .iter()
        .map(|s| {
            let v = if is_stale_nan(s.value) {
                "stale".to_string()
            } else {
                crate::series::format_float(s.value)
            };
            (s.labels.to_string(), v, s.timestamp_ms)
        })
        .collect()
}

fn find<'a>(samples: &'a [Sample], series: &str) -> Vec<&'a Sample> {
    samples
        .iter()
        .filter(|s| s.labels.to_string() == series)
        .collect()
}

fn without_report(samples: &[Sample]) -> Vec<(String, String, i64)> {
    show(samples)
        .into_iter()
        .filter(|(l, _, _)| {
            !REPORT_SERIES
                .iter()
                .any(|r| l.starts_with(&format!("{r}{{")))
        })
        .collect()
}

const ID: &str = r#"instance="127.0.0.1:9100",job="node""#;

fn s(name_and_labels: &str, v: &str, ts: i64) -> (String, String, i64) {
    // `name_and_labels` is `name` or `name{a="b",` …: the target labels are spliced in sorted.
    let (name, rest) = name_and_labels
        .split_once('{')
        .unwrap_or((name_and_labels, ""));
    let rest = rest.trim_end_matches('}');
    let mut labels: Vec<&str> = rest.split(',').filter(|x| !x.is_empty()).collect();
    labels.push(r#"instance="127.0.0.1:9100""#);
    labels.push(r#"job="node""#);
    labels.sort_by_key(|l| l.split('=').next().unwrap_or("").to_string());
    (format!("{name}{{{}}}", labels.join(",")), v.to_string(), ts)
}

#[test]
fn report_series_carry_target_labels_and_counts() {
    let mut st = state(default_opts());
    let (summary, out) = scrape(&mut st, "# TYPE a gauge\na 1\nb{x=\"y\"} 2\n", 1000);
    assert!(summary.up());
    let report: Vec<_> = show(&out)
        .into_iter()
        .filter(|(l, _, _)| !l.starts_with("a{") && !l.starts_with("b{"))
        .collect();
    assert_eq!(
        report,
        vec![
            (format!("up{{{ID}}}"), "1".into(), 1000),
            (
                format!("scrape_duration_seconds{{{ID}}}"),
                "0.25".into(),
                1000
            ),
            (format!("scrape_samples_scraped{{{ID}}}"), "2".into(), 1000),
            (
                format!("scrape_samples_post_metric_relabeling{{{ID}}}"),
                "2".into(),
                1000
            ),
            (format!("scrape_series_added{{{ID}}}"), "2".into(), 1000),
        ]
    );
    // The second scrape adds no series.
    let (summary, _) = scrape(&mut st, "# TYPE a gauge\na 1\nb{x=\"y\"} 2\n", 2000);
    assert_eq!(summary.series_added, 0);
    assert_eq!(summary.scraped, 2);
}

#[test]
fn samples_get_job_and_instance_sorted_without_empty_values() {
    let mut st = state(default_opts());
    let (_, out) = scrape(&mut st, "m{z=\"1\",a=\"2\",e=\"\"} 3\n", 1000);
    assert_eq!(
        without_report(&out),
        vec![(
            r#"m{a="2",instance="127.0.0.1:9100",job="node",z="1"}"#.to_string(),
            "3".to_string(),
            1000
        )]
    );
    let labels = &out[0].labels;
    let names: Vec<&str> = labels.iter().map(|l| l.name).collect();
    assert_eq!(names, ["__name__", "a", "instance", "job", "z"]);
}

#[test]
fn clashing_exposed_labels_become_exported_unless_honor_labels() {
    let body = "m{job=\"app\",instance=\"pod-1\",exported_job=\"taken\"} 1\n";
    let mut st = state(default_opts());
    let (_, out) = scrape(&mut st, body, 1000);
    assert_eq!(
        without_report(&out)[0].0,
        r#"m{exported_exported_job="app",exported_instance="pod-1",exported_job="taken",instance="127.0.0.1:9100",job="node"}"#
    );

    let mut st = state(TargetOptions {
        honor_labels: true,
        ..default_opts()
    });
    let (_, out) = scrape(&mut st, "m{job=\"app\"} 1\nn 2\n", 1000);
    assert_eq!(
        without_report(&out),
        vec![
            (
                r#"m{instance="127.0.0.1:9100",job="app"}"#.to_string(),
                "1".to_string(),
                1000
            ),
            s("n", "2", 1000),
        ]
    );
}

#[test]
fn extra_target_labels_clash_like_job_and_instance() {
    let target =
        Labels::from_pairs([("job", "node"), ("instance", "h:1"), ("env", "prod")]).unwrap();
    let mut st = TargetState::new(target, default_opts());
    let mut out = Vec::new();
    st.ingest(b"m{env=\"dev\"} 1\n", None, 5, &mut out);
    assert_eq!(
        out[0].labels.to_string(),
        r#"m{env="prod",exported_env="dev",instance="h:1",job="node"}"#
    );
}

#[test]
fn disappearing_series_get_one_staleness_marker_at_the_scrape_time() {
    let mut st = state(default_opts());
    scrape(&mut st, "a 1\nb 2\n", 1000);
    let (summary, out) = scrape(&mut st, "a 1\n", 2000);
    assert_eq!(summary.stale_markers, 1);
    assert_eq!(
        without_report(&out),
        vec![s("a", "1", 2000), s("b", "stale", 2000)]
    );
    let marker = find(&out, &s("b", "", 0).0)[0];
    assert_eq!(marker.value.to_bits(), STALE_NAN_BITS);
    // Only once: the third scrape has nothing to mark.
    let (summary, out) = scrape(&mut st, "a 1\n", 3000);
    assert_eq!(summary.stale_markers, 0);
    assert_eq!(without_report(&out), vec![s("a", "1", 3000)]);
    // A series that comes back is a new series again.
    let (summary, _) = scrape(&mut st, "a 1\nb 5\n", 4000);
    assert_eq!(summary.series_added, 1);
}

#[test]
fn a_failed_scrape_marks_every_series_stale_but_keeps_the_report_series() {
    let mut st = state(default_opts());
    scrape(&mut st, "a 1\nb 2\n", 1000);
    let mut out = Vec::new();
    let summary = st.fail(
        ScrapeError::Http("connection refused".into()),
        2000,
        &mut out,
    );
    st.report(&summary, 2000, Duration::from_millis(3), &mut out);
    assert!(!summary.up());
    assert_eq!(
        show(&out),
        vec![
            s("a", "stale", 2000),
            s("b", "stale", 2000),
            s("up", "0", 2000),
            s("scrape_duration_seconds", "0.003", 2000),
            s("scrape_samples_scraped", "0", 2000),
            s("scrape_samples_post_metric_relabeling", "0", 2000),
            s("scrape_series_added", "0", 2000),
        ]
    );
    // A second failure has nothing left to mark; `up` stays 0 and is not stale.
    let mut out = Vec::new();
    let summary = st.fail(ScrapeError::Timeout(Duration::from_secs(1)), 3000, &mut out);
    st.report(&summary, 3000, Duration::ZERO, &mut out);
    assert_eq!(find(&out, &s("up", "", 0).0)[0].value, 0.0);
    assert_eq!(out.iter().filter(|s| is_stale_nan(s.value)).count(), 0);
    // Recovery: everything is new again.
    let (summary, _) = scrape(&mut st, "a 1\nb 2\n", 4000);
    assert_eq!(summary.series_added, 2);
}

#[test]
fn a_series_with_a_fixed_timestamp_outlives_a_failed_scrape_without_clashing() {
    let mut st = state(default_opts());
    let (_, out) = scrape(&mut st, "a 1 500\n", 1000);
    assert_eq!(without_report(&out), vec![s("a", "1", 500)]);
    // Explicit timestamps are outside staleness: the failure sends no marker for `a`.
    let mut out = Vec::new();
    let summary = st.fail(ScrapeError::Http("reset".into()), 2000, &mut out);
    assert_eq!(summary.stale_markers, 0);
    // The same sample again: the receiver has it, so it is not sent, and it is no clash,
    // however many scrapes re-expose it.
    for ts in [3000, 4000] {
        let (summary, out) = scrape(&mut st, "a 1 500\n", ts);
        assert_eq!(summary.rejected.duplicate_timestamp, 0, "at {ts}");
        assert!(without_report(&out).is_empty(), "{:?}", show(&out));
    }
    // Another value for that timestamp still is one.
    let (summary, _) = scrape(&mut st, "a 2 500\n", 5000);
    assert_eq!(summary.rejected.duplicate_timestamp, 1);
    // The first newer sample after the failure counts the series as added again, once.
    let (summary, out) = scrape(&mut st, "a 3 700\n", 6000);
    assert_eq!(without_report(&out), vec![s("a", "3", 700)]);
    assert_eq!(summary.series_added, 1);
    let (summary, _) = scrape(&mut st, "a 4 800\n", 7000);
    assert_eq!(summary.series_added, 0);
}

#[test]
fn invalid_body_fails_the_scrape_with_its_position_and_marks_series_stale() {
    let mut st = state(default_opts());
    scrape(&mut st, "a 1\n", 1000);
    let (summary, out) = scrape(&mut st, "a 1\nthis is not { valid\n", 2000);
    match &summary.error {
        Some(ScrapeError::Parse(e)) => assert_eq!(e.position().map(|p| p.0), Some(2)),
        other => panic!("expected a parse error, got {other:?}"),
    }
    assert_eq!(without_report(&out), vec![s("a", "stale", 2000)]);
    assert_eq!(find(&out, &s("up", "", 0).0)[0].value, 0.0);
    assert_eq!(summary.scraped, 0);
}

#[test]
fn shutdown_marks_series_and_report_series_stale_after_their_last_sample() {
    let mut st = state(default_opts());
    scrape(&mut st, "a 1\n# TYPE t gauge\nt 2 500\n", 1000);
    let mut out = Vec::new();
    // Same millisecond as the last scrape: markers go one millisecond later.
    let n = st.end(1000, &mut out);
    assert_eq!(n, 6);
    assert_eq!(
        show(&out),
        vec![
            s("a", "stale", 1001),
            s("up", "stale", 1001),
            s("scrape_duration_seconds", "stale", 1001),
            s("scrape_samples_scraped", "stale", 1001),
            s("scrape_samples_post_metric_relabeling", "stale", 1001),
            s("scrape_series_added", "stale", 1001),
        ],
        "the explicitly timestamped series t is left out of staleness, as in Prometheus"
    );
    // Nothing twice.
    let mut out = Vec::new();
    assert_eq!(st.end(5000, &mut out), 0);
}

#[test]
fn shutdown_before_any_scrape_writes_nothing() {
    let mut st = state(default_opts());
    let mut out = Vec::new();
    assert_eq!(st.end(1000, &mut out), 0);
    assert!(out.is_empty());
}

#[test]
fn sample_limit_fails_the_scrape_when_exceeded_after_relabeling() {
    let rules = compile(&[RelabelConfig {
        source_labels: vec!["__name__".into()],
        regex: "dropme".into(),
        action: Action::Drop,
        ..RelabelConfig::default()
    }])
    .unwrap();
    let mut st = state(TargetOptions {
        sample_limit: 2,
        rules: Arc::from(rules),
        ..default_opts()
    });
    // Three samples scraped, two left after relabeling: at the limit, fine.
    let (summary, out) = scrape(&mut st, "a 1\nb 2\ndropme 3\n", 1000);
    assert!(summary.up());
    assert_eq!((summary.scraped, summary.post_relabel), (3, 2));
    assert_eq!(
        without_report(&out),
        vec![s("a", "1", 1000), s("b", "2", 1000)]
    );
    // Three after relabeling: the scrape fails, nothing of it is forwarded, and the
    // previous series are marked stale.
    let (summary, out) = scrape(&mut st, "a 1\nb 2\nc 3\n", 2000);
    assert_eq!(
        summary.error,
        Some(ScrapeError::SampleLimit {
            samples: 3,
            limit: 2
        })
    );
    assert_eq!(
        without_report(&out),
        vec![s("a", "stale", 2000), s("b", "stale", 2000)]
    );
    assert_eq!(find(&out, &s("up", "", 0).0)[0].value, 0.0);
    assert_eq!(
        find(&out, &s("scrape_samples_scraped", "", 0).0)[0].value,
        3.0
    );
    assert_eq!(
        find(&out, &s("scrape_samples_post_metric_relabeling", "", 0).0)[0].value,
        3.0
    );
    // Back under the limit: up again, and nothing is marked twice.
    let (summary, out) = scrape(&mut st, "a 1\n", 3000);
    assert!(summary.up());
    assert_eq!(without_report(&out), vec![s("a", "1", 3000)]);
}

#[test]
fn a_body_far_over_the_sample_limit_keeps_no_record_of_its_extra_series() {
    let mut st = state(TargetOptions {
        sample_limit: 10,
        ..default_opts()
    });
    let (summary, _) = scrape(&mut st, "a 1\nb 2\n", 1000);
    assert!(summary.up());
    let mut body = String::from("first 0\n");
    for i in 0..5000 {
        body.push_str(&format!("many{{i=\"{i}\"}} {i}\na 1\n"));
    }
    let (summary, out) = scrape(&mut st, &body, 2000);
    assert_eq!(
        summary.error,
        Some(ScrapeError::SampleLimit {
            samples: 10_001,
            limit: 10
        })
    );
    // Counted in full for the report series, as Prometheus does.
    assert_eq!((summary.scraped, summary.post_relabel), (10_001, 10_001));
    assert_eq!(
        find(&out, &s("scrape_samples_post_metric_relabeling", "", 0).0)[0].value,
        10_001.0
    );
    // Yet the target holds records for the series seen before the limit was reached only.
    assert!(st.series.len() <= 12, "{} records", st.series.len());
    // Back under the limit, the series known before come back as they were.
    let (summary, out) = scrape(&mut st, "a 2\nb 3\n", 3000);
    assert!(summary.up());
    assert_eq!(
        without_report(&out),
        vec![s("a", "2", 3000), s("b", "3", 3000)]
    );
}

#[test]
fn relabel_rules_see_target_labels_and_can_drop_or_rewrite() {
    let rules = compile(&[
        RelabelConfig {
            source_labels: vec!["__name__".into()],
            regex: "go_.*".into(),
            action: Action::Drop,
            ..RelabelConfig::default()
        },
        RelabelConfig {
            source_labels: vec!["job".into(), "mode".into()],
            target_label: Some("key".into()),
            regex: "(.*);(.*)".into(),
            replacement: "$1-$2".into(),
            ..RelabelConfig::default()
        },
    ])
    .unwrap();
    let mut st = state(TargetOptions {
        rules: Arc::from(rules),
        ..default_opts()
    });
    let (summary, out) = scrape(&mut st, "go_goroutines 7\ncpu{mode=\"idle\"} 1\n", 1000);
    assert_eq!((summary.scraped, summary.post_relabel), (2, 1));
    assert_eq!(
        without_report(&out),
        vec![s(r#"cpu{key="node-idle",mode="idle"}"#, "1", 1000)]
    );
}

#[test]
fn series_without_a_metric_name_after_relabeling_are_rejected_and_counted() {
    let rules = compile(&[RelabelConfig {
        regex: "__name__".into(),
        action: Action::LabelDrop,
        ..RelabelConfig::default()
    }])
    .unwrap();
    let mut st = state(TargetOptions {
        rules: Arc::from(rules),
        ..default_opts()
    });
    let (summary, out) = scrape(&mut st, "a 1\nb 2\n", 1000);
    assert!(summary.up());
    assert_eq!(summary.rejected.no_metric_name, 2);
    assert_eq!(summary.post_relabel, 0);
    assert!(without_report(&out).is_empty());
    // Counted again on every scrape, from the remembered verdict.
    let (summary, _) = scrape(&mut st, "a 1\nb 2\n", 2000);
    assert_eq!(summary.rejected.no_metric_name, 2);
}

#[test]
fn older_exposed_timestamps_are_dropped_and_counted() {
    let mut st = state(default_opts());
    let (_, out) = scrape(&mut st, "a 1 5000\nb 1 5000\n", 10_000);
    assert_eq!(
        without_report(&out),
        vec![s("a", "1", 5000), s("b", "1", 5000)]
    );
    let (summary, out) = scrape(&mut st, "a 2 4000\nb 1 5000\n", 20_000);
    assert_eq!(summary.rejected.out_of_order, 1);
    // `b` repeats its exact sample: not sent again, not an error.
    assert_eq!(summary.rejected.duplicate_timestamp, 0);
    assert!(without_report(&out).is_empty());
    // The same timestamp with another value is a duplicate.
    let (summary, out) = scrape(&mut st, "a 3 6000\nb 9 5000\n", 30_000);
    assert_eq!(summary.rejected.duplicate_timestamp, 1);
    assert_eq!(without_report(&out), vec![s("a", "3", 6000)]);
    // Still up: a dropped sample does not fail the scrape.
    assert!(summary.up());
}

#[test]
fn without_honor_timestamps_every_sample_gets_the_scrape_time() {
    let mut st = state(TargetOptions {
        honor_timestamps: false,
        ..TargetOptions::default()
    });
    let (_, out) = scrape(&mut st, "a 1 5000\n", 10_000);
    assert_eq!(without_report(&out), vec![s("a", "1", 10_000)]);
    // And such series take part in staleness.
    let (_, out) = scrape(&mut st, "", 20_000);
    assert_eq!(without_report(&out), vec![s("a", "stale", 20_000)]);
}

#[test]
fn series_with_exposed_timestamps_are_not_marked_stale() {
    let mut st = state(default_opts());
    scrape(&mut st, "a 1 5000\nb 1\n", 10_000);
    let (summary, out) = scrape(&mut st, "", 20_000);
    assert_eq!(summary.stale_markers, 1);
    assert_eq!(without_report(&out), vec![s("b", "stale", 20_000)]);
}

#[test]
fn two_exposed_series_relabeled_into_one_forward_the_first() {
    let rules = compile(&[RelabelConfig {
        regex: "pod".into(),
        action: Action::LabelDrop,
        ..RelabelConfig::default()
    }])
    .unwrap();
    let mut st = state(TargetOptions {
        rules: Arc::from(rules),
        ..default_opts()
    });
    let (summary, out) = scrape(&mut st, "a{pod=\"1\"} 1\na{pod=\"2\"} 2\n", 1000);
    assert_eq!(without_report(&out), vec![s("a", "1", 1000)]);
    assert_eq!(summary.rejected.duplicate_timestamp, 1);
    // Both still map to the one series: it stays alive and is not marked stale.
    let (summary, out) = scrape(&mut st, "a{pod=\"2\"} 2\n", 2000);
    assert_eq!(summary.stale_markers, 0);
    assert_eq!(without_report(&out), vec![s("a", "2", 2000)]);
}

#[test]
fn a_staleness_marker_never_precedes_the_series_last_sample() {
    let mut st = state(default_opts());
    // The same series twice in one scrape: at the scrape time, then with a later exposed
    // timestamp.
    scrape(&mut st, "a 1\na{} 2 99000\n", 2000);
    let (_, out) = scrape(&mut st, "", 3000);
    assert_eq!(without_report(&out), vec![s("a", "stale", 99_001)]);
}

#[test]
fn label_sets_are_shared_between_scrapes() {
    let mut st = state(default_opts());
    let (_, a) = scrape(&mut st, "m{x=\"1\"} 1\n", 1000);
    let (_, b) = scrape(&mut st, "m{x=\"1\"} 2\n", 2000);
    assert!(Labels::ptr_eq(&a[0].labels, &b[0].labels));
    assert_eq!(st.series(), 1);
}

#[test]
fn series_keep_the_target_labels_in_the_targets_own_set() {
    let mut st = state_moving_job("__name__", "renamed_.*");
    let body = "m{x=\"1\"} 1\nrenamed_m 2\nexported{job=\"app\"} 3\n";
    let (_, out) = scrape(&mut st, body, 1000);
    let shares = |series: &str| {
        let s = find(&out, series)[0];
        s.labels
            .base()
            .is_some_and(|b| Labels::ptr_eq(b, st.target_labels()))
    };
    // One copy of `job` and `instance` per target, not per series (the report series too).
    assert!(shares(&format!("m{{{ID},x=\"1\"}}")));
    assert!(shares(&format!("exported{{exported_job=\"app\",{ID}}}")));
    assert!(shares(&format!("up{{{ID}}}")));
    // A series whose target labels relabeling changed keeps its own copy, and its value.
    let renamed = r#"renamed_m{instance="127.0.0.1:9100",job="other"}"#;
    assert!(!shares(renamed));
    assert_eq!(find(&out, renamed)[0].value, 2.0);
}

#[test]
fn openmetrics_and_unknown_content_types_parse() {
    let mut st = state(default_opts());
    let mut out = Vec::new();
    let (summary, families) = st.ingest(
        b"# TYPE c counter\n# HELP c Help.\nc_total 3\n# EOF\n",
        Some(crate::scrape::OPENMETRICS_CONTENT_TYPE),
        1000,
        &mut out,
    );
    assert!(summary.up(), "{summary:?}");
    assert_eq!(families[0].help.as_deref(), Some("Help."));
    assert_eq!(without_report(&out), vec![s("c_total", "3", 1000)]);
    // Prometheus reads an unknown content type as the text format.
    let mut out = Vec::new();
    let (summary, _) = st.ingest(b"c_total 4\n", Some("application/json"), 2000, &mut out);
    assert!(summary.up(), "{summary:?}");
}

#[test]
fn le_and_quantile_are_canonical_unless_turned_off() {
    let body =
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n";
    let mut st = state(default_opts());
    let (_, out) = scrape(&mut st, body, 1000);
    assert_eq!(out[0].labels.get("le"), Some("1.0"));
    let mut st = state(TargetOptions {
        normalize_le_quantile: false,
        ..default_opts()
    });
    let (_, out) = scrape(&mut st, body, 1000);
    assert_eq!(out[0].labels.get("le"), Some("1"));
    assert_eq!(out[1].labels.get("le"), Some("+Inf"));
}

#[test]
fn nan_values_are_forwarded_as_normal_nan_never_as_staleness() {
    let mut st = state(default_opts());
    let (_, out) = scrape(&mut st, "a NaN\n", 1000);
    assert!(out[0].value.is_nan());
    assert!(!is_stale_nan(out[0].value));
}

#[test]
fn merge_target_labels_follows_prometheus_order_of_exported_names() {
    // `instance` (8) is settled before `exported_job`-style longer names; a chain of
    // prefixes is built until a free name is found.
    let target = Labels::from_pairs([("job", "j"), ("a", "t")]).unwrap();
    let exposed = Labels::from_pairs([
        ("__name__", "m"),
        ("a", "1"),
        ("exported_a", "2"),
        ("job", "3"),
    ])
    .unwrap();
    let merged = merge_target_labels(&exposed, &target, false);
    assert_eq!(
        merged.to_string(),
        r#"m{a="t",exported_a="2",exported_exported_a="1",exported_job="3",job="j"}"#
    );
    let honored = merge_target_labels(&exposed, &target, true);
    assert_eq!(honored.to_string(), r#"m{a="1",exported_a="2",job="3"}"#);
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn body() -> impl Strategy<Value = Vec<(u8, u8, i32)>> {
        proptest::collection::vec((0u8..6, 0u8..3, -5i32..5), 0..12)
    }

    fn render(lines: &[(u8, u8, i32)]) -> String {
        let mut seen = std::collections::HashSet::new();
        lines
            .iter()
            .filter(|(m, l, _)| seen.insert((*m, *l)))
            .map(|(m, l, v)| format!("m{m}{{l=\"{l}\"}} {v}\n"))
            .collect()
    }

    proptest! {
        /// Over any sequence of scrapes, failures and a final shutdown: every series that
        /// was forwarded and later vanished gets exactly one staleness marker, no marker
        /// is ever written for a series that is still exposed, and timestamps per series
        /// never go backwards.
        #[test]
        fn staleness_is_exactly_once_and_time_is_monotonic(
            scrapes in proptest::collection::vec(proptest::option::weighted(0.8, body()), 1..8)
        ) {
            let mut st = state(default_opts());
            let mut all: Vec<Sample> = Vec::new();
            let mut ts = 1000;
            for scrape_body in &scrapes {
                ts += 1000;
                let mut out = Vec::new();
                let summary = match scrape_body {
                    Some(lines) => {
                        let text = render(lines);
                        let (summary, _) = st.ingest(text.as_bytes(), None, ts, &mut out);
                        // Nothing that is exposed now is marked stale now.
                        for s in out.iter().filter(|s| is_stale_nan(s.value)) {
                            let name = s.labels.metric_name().to_string();
                            let l = s.labels.get("l").unwrap_or("").to_string();
                            let exposed = format!("{name}{{l=\"{l}\"}}");
                            prop_assert!(!text.contains(&exposed), "{} marked stale while exposed", exposed);
                        }
                        summary
                    }
                    None => st.fail(ScrapeError::Http("down".into()), ts, &mut out),
                };
                st.report(&summary, ts, Duration::ZERO, &mut out);
                all.extend(out);
            }
            st.end(ts + 1000, &mut all);
            let mut last: HashMap<String, (i64, bool)> = HashMap::new();
            for s in &all {
                let key = s.labels.to_string();
                let stale = is_stale_nan(s.value);
                if let Some((t, was_stale)) = last.get(&key) {
                    prop_assert!(s.timestamp_ms > *t, "{key} went back in time");
                    prop_assert!(!(stale && *was_stale), "{key} marked stale twice in a row");
                }
                last.insert(key, (s.timestamp_ms, stale));
            }
            // After shutdown every series ends stale.
            for (key, (_, stale)) in &last {
                prop_assert!(*stale, "{key} not ended by a staleness marker");
            }
        }
    }
}

#[test]
fn a_series_that_comes_back_cannot_go_back_in_time() {
    // Found by the scrape_target fuzzer: a series ends (stale marker at 3000), then comes
    // back with an explicit timestamp older than its marker.
    let mut st = state(default_opts());
    let name = r#"uu{instance="127.0.0.1:9100",job="node"}"#;
    let (_, a) = scrape(&mut st, "uu 22\n", 2000);
    let (_, b) = scrape(&mut st, "", 3000);
    assert_eq!(
        without_report(&b),
        [(name.to_string(), "stale".to_string(), 3000)]
    );
    let (summary, c) = scrape(&mut st, "uu 2 2\n", 5000);
    assert!(find(&c, name).is_empty(), "{:?}", show(&c));
    assert_eq!(summary.rejected.out_of_order, 1);
    // Its marker's own timestamp is taken too: a value there would contradict it.
    let (summary, d) = scrape(&mut st, "uu 7 3000\n", 6000);
    assert!(find(&d, name).is_empty(), "{:?}", show(&d));
    assert_eq!(summary.rejected.duplicate_timestamp, 1);
    // Newer samples flow again and count as an added series.
    let (summary, e) = scrape(&mut st, "uu 8\n", 7000);
    assert_eq!(
        without_report(&e),
        [(name.to_string(), "8".to_string(), 7000)]
    );
    assert_eq!(summary.series_added, 1);
    let mut last = i64::MIN;
    for s in a.iter().chain(&b).chain(&c).chain(&d).chain(&e) {
        if s.labels.to_string() == name {
            assert!(s.timestamp_ms >= last, "{name} went back in time");
            last = s.timestamp_ms;
        }
    }
}

#[test]
fn ended_series_are_forgotten_after_the_tombstone_horizon() {
    let mut st = state(default_opts());
    scrape(&mut st, "uu 1\n", 1000);
    scrape(&mut st, "", 2000);
    assert_eq!(st.ended.len(), 1);
    scrape(&mut st, "", 2000 + TOMBSTONE_MS + 1);
    assert!(st.ended.is_empty());
}

#[test]
fn generations_skip_never_when_they_wrap() {
    assert_eq!(next(u32::MAX), 1);
    assert_eq!(next(0), 1);

    // Staleness, further texts of a series and failure keep working across the wrap.
    let mut st = state(default_opts());
    st.generation = u32::MAX - 1;
    scrape(&mut st, "a 1\nb 2\nc 3\nd{x=\"1\",y=\"2\"} 4\n", 1000);
    let (summary, out) = scrape(&mut st, "a 1\nc 3\nd{y=\"2\",x=\"1\"} 5\n", 2000);
    assert_eq!(st.generation, 1);
    assert_eq!(summary.stale_markers, 1);
    let d = "d{x=\"1\",y=\"2\"}";
    assert_eq!(
        without_report(&out),
        vec![
            s("a", "1", 2000),
            s("c", "3", 2000),
            s(d, "5", 2000),
            s("b", "stale", 2000)
        ]
    );
    let (_, out) = scrape(&mut st, "a 1\nc 3\nd{y=\"2\",x=\"1\"} 6\n", 2500);
    assert_eq!(st.aliases.len(), 1);
    assert!(
        out.iter().all(|s| !is_stale_nan(s.value)),
        "{:?}",
        show(&out)
    );
    let mut out = Vec::new();
    let failed = st.fail(ScrapeError::Timeout(Duration::from_secs(1)), 3000, &mut out);
    assert_eq!(failed.stale_markers, 3);
    let (summary, _) = scrape(&mut st, "a 1\n", 4000);
    assert_eq!(summary.series_added, 1);
}

#[test]
fn a_series_record_packs_in_40_bytes() {
    // Per-series memory is most of a forwarder's footprint: 100,000 series, 4 MB here.
    assert_eq!(std::mem::size_of::<Series>(), 40);
}

#[test]
fn texts_of_one_label_set_are_one_series_however_written() {
    let mut st = state(default_opts());
    // The same series in two label orders: one series, the second sample a duplicate.
    let (summary, out) = scrape(
        &mut st,
        "a{x=\"1\",y=\"2\"} 1\na{y=\"2\",x=\"1\"} 2\n",
        1000,
    );
    assert_eq!(
        without_report(&out),
        vec![s("a{x=\"1\",y=\"2\"}", "1", 1000)]
    );
    assert_eq!(summary.rejected.duplicate_timestamp, 1);
    assert_eq!((st.series(), st.series.len(), st.aliases.len()), (1, 1, 1));
    // Only the second spelling now: the same series goes on, neither new nor stale.
    let (summary, out) = scrape(&mut st, "a{y=\"2\",x=\"1\"} 3\n", 2000);
    assert_eq!(
        without_report(&out),
        vec![s("a{x=\"1\",y=\"2\"}", "3", 2000)]
    );
    assert_eq!((summary.series_added, summary.stale_markers), (0, 0));
    let (_, out) = scrape(&mut st, "a{y=\"2\",x=\"1\"} 4\n", 3000);
    assert_eq!(
        without_report(&out),
        vec![s("a{x=\"1\",y=\"2\"}", "4", 3000)]
    );
    // Gone in both spellings: one marker, and nothing is kept for it.
    let (summary, out) = scrape(&mut st, "", 4000);
    assert_eq!(
        without_report(&out),
        vec![s("a{x=\"1\",y=\"2\"}", "stale", 4000)]
    );
    assert_eq!(summary.stale_markers, 1);
    assert_eq!((st.series.len(), st.aliases.len()), (0, 0));
}

#[test]
fn label_sets_outlive_a_failed_scrape() {
    let mut st = state(default_opts());
    let (_, before) = scrape(&mut st, "m{x=\"1\"} 1\n", 1000);
    let mut out = Vec::new();
    st.fail(ScrapeError::Http("503".into()), 2000, &mut out);
    assert_eq!(st.series(), 0);
    let (summary, after) = scrape(&mut st, "m{x=\"1\"} 2\n", 3000);
    assert!(Labels::ptr_eq(&before[0].labels, &after[0].labels));
    assert_eq!(summary.series_added, 1);
    assert_eq!(st.series(), 1);
}

#[test]
fn a_body_that_fails_halfway_changes_no_series() {
    let mut st = state(default_opts());
    scrape(&mut st, "a 1\n", 1000);
    // `b` is new and `a` is seen before the bad line: neither may count later.
    let (summary, out) = scrape(&mut st, "a 2\nb 3\nnot valid {\n", 2000);
    assert!(matches!(summary.error, Some(ScrapeError::Parse(_))));
    assert_eq!(without_report(&out), vec![s("a", "stale", 2000)]);
    let (summary, out) = scrape(&mut st, "a 4\n", 3000);
    assert_eq!(without_report(&out), vec![s("a", "4", 3000)]);
    assert_eq!((summary.series_added, summary.stale_markers), (1, 0));
    let (_, out) = scrape(&mut st, "", 4000);
    assert_eq!(without_report(&out), vec![s("a", "stale", 4000)]);
}

#[test]
fn series_of_one_name_share_it_once_a_second_series_has_it() {
    let mut st = state_moving_job("x", "3");
    let body = "m{x=\"1\"} 1\nm{x=\"2\"} 2\nm{x=\"3\"} 3\nm{x=\"4\"} 4\nn 5\n";
    let (_, out) = scrape(&mut st, body, 1000);
    let base = |series: &str| {
        let found = find(&out, series);
        assert_eq!(found.len(), 1, "{series} in {:?}", show(&out));
        found[0].labels.base().cloned()
    };
    let target = st.target_labels().clone();
    // The first series of a name, and a name with one series, share the target labels.
    let first = base(&format!("m{{{ID},x=\"1\"}}")).unwrap();
    assert!(Labels::ptr_eq(&first, &target));
    assert!(Labels::ptr_eq(
        &base(&format!("n{{{ID}}}")).unwrap(),
        &target
    ));
    // Further series of the name share one set of the name and the target labels.
    let second = base(&format!("m{{{ID},x=\"2\"}}")).unwrap();
    assert_eq!(second.to_string(), format!("m{{{ID}}}"));
    let fourth = base(&format!("m{{{ID},x=\"4\"}}")).unwrap();
    assert!(Labels::ptr_eq(&second, &fourth));
    // A series whose `job` relabeling changed shares neither, and keeps its labels.
    let moved = r#"m{instance="127.0.0.1:9100",job="other",x="3"}"#;
    assert!(base(moved).is_none());
    assert_eq!(find(&out, moved)[0].value, 3.0);
    assert_eq!(st.names.len(), 2);
    // Another spelling of a name's only series does not make the name shared.
    let (_, again) = scrape(&mut st, "n 5\nn{} 5\nm{x=\"1\"} 6\n", 1500);
    let n = find(&again, &format!("n{{{ID}}}"));
    assert!(n[0]
        .labels
        .base()
        .is_some_and(|b| Labels::ptr_eq(b, &target)));
    assert_eq!(st.names.table_shared("n"), Some(false));
    drop(again);
    // A name no series has any more is forgotten once no sample holds its sets either: the
    // staleness markers of its series do for a scrape.
    drop((out, first, second, fourth));
    let (_, markers) = scrape(&mut st, "n 5\n", 2000);
    drop(markers);
    scrape(&mut st, "n 5\n", 3000);
    assert_eq!(st.names.len(), 1);
}

#[test]
fn decode_failures_count_under_the_existing_reasons() {
    use crate::scrape::body::DecodeError;
    let bomb = ScrapeError::from(DecodeError::TooLarge { limit: 1 << 20 });
    assert_eq!(bomb.reason(), "body_size_limit");
    assert!(bomb
        .to_string()
        .starts_with("gzip body decoded past body_size_limit of 1048576 bytes"));
    assert_eq!(
        ScrapeError::from(DecodeError::Corrupt("the stream ends early".into())).reason(),
        "http"
    );
    assert_eq!(
        ScrapeError::from(DecodeError::Unsupported("br".into())).reason(),
        "http"
    );
}

#[test]
fn a_jobs_targets_keep_the_own_labels_of_their_common_series_once() {
    let sets = Arc::new(JobSets::default());
    let target = |i: u32| {
        let instance = format!("10.0.0.{i}:9100");
        let labels = Labels::from_pairs([("job", "node"), ("instance", instance.as_str())]);
        TargetState::new(
            labels.unwrap(),
            TargetOptions {
                job_sets: sets.clone(),
                ..default_opts()
            },
        )
    };
    let body =
        "# TYPE cpu counter\ncpu{cpu=\"0\",mode=\"idle\"} 1\ncpu{cpu=\"0\",mode=\"user\"} 2\n\
                up_since 5\nalone{x=\"only-on-the-first\"} 1\n";
    let mut targets: Vec<TargetState> = (1..=3).map(target).collect();
    let mut scraped = Vec::new();
    for (i, st) in targets.iter_mut().enumerate() {
        let body = if i == 0 {
            body.to_string()
        } else {
            body.replace("only-on-the-first", &format!("target-{i}"))
        };
        let (summary, samples) = scrape(st, &body, 1_000);
        assert!(summary.up());
        scraped.push(samples);
    }
    let own_shared = |samples: &[Sample], series: &str| {
        let found = find(samples, series);
        assert_eq!(found.len(), 1, "{series}");
        found[0].labels.own_is_shared()
    };
    for (i, samples) in scraped.iter().enumerate() {
        let instance = format!("10.0.0.{}:9100", i + 1);
        let idle = format!("cpu{{cpu=\"0\",instance=\"{instance}\",job=\"node\",mode=\"idle\"}}");
        // The first target's series keep their own labels; the others link to them.
        assert_eq!(own_shared(samples, &idle), i > 0, "{idle}");
        let user = idle.replace("idle", "user");
        assert_eq!(own_shared(samples, &user), i > 0, "{user}");
        // Labels no other target has stay the target's own; a name of one series has the
        // name as its own label, the same on every target.
        let alone = if i == 0 {
            "only-on-the-first".to_string()
        } else {
            format!("target-{i}")
        };
        let alone = format!("alone{{instance=\"{instance}\",job=\"node\",x=\"{alone}\"}}");
        assert!(!own_shared(samples, &alone), "{alone}");
        let up_since = format!("up_since{{instance=\"{instance}\",job=\"node\"}}");
        assert_eq!(own_shared(samples, &up_since), i > 0, "{up_since}");
    }
    // Every target's samples are the whole series, and encode the same as a flat set.
    let second = &scraped[1];
    let idle = find(
        second,
        "cpu{cpu=\"0\",instance=\"10.0.0.2:9100\",job=\"node\",mode=\"idle\"}",
    );
    let flat = Labels::with_name(
        "cpu",
        [
            ("cpu", "0"),
            ("instance", "10.0.0.2:9100"),
            ("job", "node"),
            ("mode", "idle"),
        ],
    )
    .unwrap();
    assert_eq!(idle[0].labels, flat);
    assert_eq!(idle[0].labels.content_hash(), flat.content_hash());
    // The next scrape finds its series again, with the same sets.
    let (_, again) = scrape(
        &mut targets[1],
        &body.replace("only-on-the-first", "target-1"),
        2_000,
    );
    let idle_again = find(
        &again,
        "cpu{cpu=\"0\",instance=\"10.0.0.2:9100\",job=\"node\",mode=\"idle\"}",
    );
    assert!(Labels::ptr_eq(&idle_again[0].labels, &idle[0].labels));
    // The table forgets what no series uses once the targets are gone.
    assert!(sets.len() >= 2);
    drop(again);
    drop(scraped);
    drop(targets);
    assert_eq!(sets.len(), 0);
}

#[test]
fn a_job_of_one_target_registers_nothing() {
    let sets = Arc::new(JobSets::default());
    let mut st = TargetState::new(
        target_labels(),
        TargetOptions {
            job_sets: sets.clone(),
            ..default_opts()
        },
    );
    let (_, samples) = scrape(&mut st, "m{a=\"1\"} 1\nm{a=\"2\"} 2\n", 1_000);
    assert!(samples.iter().all(|s| !s.labels.own_is_shared()));
    assert_eq!(sets.len(), 0);
}
