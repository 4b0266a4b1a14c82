//! Known cases for both formats (following Prometheus' own parser tests and the format
//! documentation), error positions, the series cache, and property tests: render → parse
//! round trips and no panics on any input.

use proptest::prelude::*;

use super::*;
use crate::series::{is_stale_nan, Labels};

const OM: Option<&str> = Some("application/openmetrics-text; version=1.0.0; charset=utf-8");
const TEXT: Option<&str> = Some("text/plain; version=0.0.4; charset=utf-8");

/// `(series, value, timestamp)` per sample, the series as `name{a="b"}`.
fn rows(e: &Exposition) -> Vec<(String, f64, Option<i64>)> {
    e.samples
        .iter()
        .map(|s| (s.labels.to_string(), s.value, s.timestamp_ms))
        .collect()
}

fn row(series: &str, value: f64, ts: Option<i64>) -> (String, f64, Option<i64>) {
    (series.to_string(), value, ts)
}

fn fam(e: &Exposition, i: usize) -> (&str, FamilyType, Option<&str>, Option<&str>) {
    let f = &e.families[i];
    (
        f.name.as_str(),
        f.kind,
        f.help.as_deref(),
        f.unit.as_deref(),
    )
}

fn family_names(e: &Exposition) -> Vec<&str> {
    e.samples
        .iter()
        .map(|s| e.families[s.family].name.as_str())
        .collect()
}

fn err_text(body: &str, ct: Option<&str>) -> String {
    match parse(body, ct) {
        Ok(e) => panic!("expected an error for {body:?}, got {e:?}"),
        Err(e) => e.to_string(),
    }
}

// ---------------------------------------------------------------- text format

#[test]
fn text_counter_gauge_with_help_and_type() {
    let body = "# HELP http_requests_total The total number of HTTP requests.\n\
                # TYPE http_requests_total counter\n\
                http_requests_total{method=\"post\",code=\"200\"} 1027 1395066363000\n\
                http_requests_total{method=\"post\",code=\"400\"}    3 1395066363000\n\
                \n\
                # HELP node_load1 1m load average.\n\
                # TYPE node_load1 gauge\n\
                node_load1 0.21\n";
    let e = parse(body, TEXT).unwrap();
    assert_eq!(
        rows(&e),
        vec![
            row(
                r#"http_requests_total{code="200",method="post"}"#,
                1027.0,
                Some(1395066363000)
            ),
            row(
                r#"http_requests_total{code="400",method="post"}"#,
                3.0,
                Some(1395066363000)
            ),
            row("node_load1{}", 0.21, None),
        ]
    );
    assert_eq!(e.families.len(), 2);
    assert_eq!(
        fam(&e, 0),
        (
            "http_requests_total",
            FamilyType::Counter,
            Some("The total number of HTTP requests."),
            None
        )
    );
    assert_eq!(
        fam(&e, 1),
        (
            "node_load1",
            FamilyType::Gauge,
            Some("1m load average."),
            None
        )
    );
    assert_eq!(
        family_names(&e),
        ["http_requests_total"; 2]
            .iter()
            .copied()
            .chain(["node_load1"])
            .collect::<Vec<_>>()
    );
}

#[test]
fn text_histogram_buckets_join_family_and_le_is_canonical() {
    let body = "# TYPE http_request_duration_seconds histogram\n\
                http_request_duration_seconds_bucket{le=\"0.05\"} 24054\n\
                http_request_duration_seconds_bucket{le=\"1\"} 33444\n\
                http_request_duration_seconds_bucket{le=\"1e3\"} 33445\n\
                http_request_duration_seconds_bucket{le=\"+Inf\"} 144320\n\
                http_request_duration_seconds_sum 53423\n\
                http_request_duration_seconds_count 144320\n";
    let e = parse(body, None).unwrap();
    let les: Vec<&str> = e
        .samples
        .iter()
        .filter_map(|s| s.labels.get("le"))
        .collect();
    // Prometheus 3 rewrites le values to their canonical float form.
    assert_eq!(les, ["0.05", "1.0", "1000.0", "+Inf"]);
    assert_eq!(e.families.len(), 1);
    assert!(e.samples.iter().all(|s| s.family == 0));
    assert_eq!(e.families[0].kind, FamilyType::Histogram);
}

#[test]
fn text_summary_quantiles_are_canonical_only_in_summaries() {
    let body = "# TYPE rpc_duration_seconds summary\n\
                rpc_duration_seconds{quantile=\"0.5\"} 4773\n\
                rpc_duration_seconds{quantile=\"1\"} 76656\n\
                rpc_duration_seconds_sum 1.7560473e+07\n\
                rpc_duration_seconds_count 2693\n\
                # TYPE other gauge\n\
                other{quantile=\"1\",le=\"1\"} 1\n";
    let e = parse(body, None).unwrap();
    assert_eq!(
        rows(&e),
        vec![
            row(r#"rpc_duration_seconds{quantile="0.5"}"#, 4773.0, None),
            row(r#"rpc_duration_seconds{quantile="1.0"}"#, 76656.0, None),
            row("rpc_duration_seconds_sum{}", 1.7560473e7, None),
            row("rpc_duration_seconds_count{}", 2693.0, None),
            row(r#"other{le="1",quantile="1"}"#, 1.0, None),
        ]
    );
    assert_eq!(family_names(&e)[..4], ["rpc_duration_seconds"; 4]);
}

#[test]
fn text_series_without_metadata_get_implicit_untyped_families() {
    let body = "# TYPE foo counter\nfoo 1\nbar 2\nbar{a=\"1\"} 3\nfoo 4\n# TYPE x untyped\nx 5\n";
    let e = parse(body, None).unwrap();
    assert_eq!(family_names(&e), ["foo", "bar", "bar", "foo", "x"]);
    // `foo 4` still belongs to the declared counter, as in Prometheus.
    assert_eq!(e.samples[3].family, 0);
    assert_eq!(e.families[1].kind, FamilyType::Unknown);
    assert_eq!(e.families[2].kind, FamilyType::Unknown);
}

#[test]
fn text_blanks_comments_and_spacing_as_prometheus_accepts_them() {
    let body = "  \n\
                # a free comment\n\
                #no space comment\n\
                # HELPFUL is not a help line\n\
                \t metric_a { a = \"1\" , b=\"2\" ,} \t 1 \t 2 \t\n\
                metric_b{a=\"1\" b=\"2\"} 3\n\
                metric_c {} 4\n\
                metric_d-5\n\
                # HELP   metric_e    spaced help\n\
                metric_e 6";
    let e = parse(body, None).unwrap();
    assert_eq!(
        rows(&e),
        vec![
            row(r#"metric_a{a="1",b="2"}"#, 1.0, Some(2)),
            row(r#"metric_b{a="1",b="2"}"#, 3.0, None),
            row("metric_c{}", 4.0, None),
            row("metric_d{}", -5.0, None),
            row("metric_e{}", 6.0, None),
        ]
    );
    // Prometheus drops one separator character after the name and keeps the rest.
    assert_eq!(
        e.families.last().unwrap().help.as_deref(),
        Some("   spaced help")
    );
}

#[test]
fn text_whitespace_only_help_reads_as_empty() {
    // As in Prometheus: the separator after the name is dropped, and a rest of only spaces
    // or tabs is no text.
    let e = parse("# HELP a  \t\n# TYPE a counter\na 1\n", None).unwrap();
    assert_eq!(e.families[0].help.as_deref(), Some(""));
}

#[test]
fn text_escapes_in_label_values_and_help() {
    let body = "# HELP m Help with \\\\ backslash, \\n newline and \\\"quotes\\\" \\t.\n\
                m{a=\"x\\\\y\",b=\"q\\\"q\",c=\"l\\nl\",d=\"\\t\"} 1\n";
    let e = parse(body, None).unwrap();
    let s = &e.samples[0].labels;
    assert_eq!(s.get("a"), Some("x\\y"));
    assert_eq!(s.get("b"), Some("q\"q"));
    assert_eq!(s.get("c"), Some("l\nl"));
    // Unknown escapes stay as they are.
    assert_eq!(s.get("d"), Some("\\t"));
    // Help text unescapes only `\\` and `\n`.
    assert_eq!(
        e.families[0].help.as_deref(),
        Some("Help with \\ backslash, \n newline and \\\"quotes\\\" \\t.")
    );
}

#[test]
fn text_values_follow_go_float_syntax() {
    let ok = [
        ("1", 1.0),
        ("-1.5", -1.5),
        ("1e+06", 1e6),
        ("1E-3", 1e-3),
        (".5", 0.5),
        ("5.", 5.0),
        ("+Inf", f64::INFINITY),
        ("-Inf", f64::NEG_INFINITY),
        ("inf", f64::INFINITY),
        ("+infinity", f64::INFINITY),
        ("1.7976931348623157e308", f64::MAX),
    ];
    for (v, want) in ok {
        let e = parse(&format!("m {v}\n"), None).unwrap_or_else(|e| panic!("{v}: {e}"));
        assert_eq!(e.samples[0].value, want, "{v}");
    }
    for v in ["NaN", "nan", "NAN"] {
        let e = parse(&format!("m {v}\n"), None).unwrap();
        assert_eq!(e.samples[0].value.to_bits(), NORMAL_NAN_BITS, "{v}");
        assert!(!is_stale_nan(e.samples[0].value));
    }
    for v in [
        "0x1p3", "0x10", "1_000", "+nan", "-NaN", "1e400", "one", "1..2", "1e", "--1",
    ] {
        let msg = err_text(&format!("m {v}\n"), None);
        assert!(msg.starts_with("1:3: invalid value"), "{v}: {msg}");
    }
}

#[test]
fn text_timestamps_are_integer_milliseconds() {
    let e = parse("m 1 1700000000123\n", None).unwrap();
    assert_eq!(e.samples[0].timestamp_ms, Some(1_700_000_000_123));
    assert!(err_text("m 1 -5\n", None).starts_with("1:5: expected a timestamp"));
    assert!(
        err_text("m 1 1.5\n", None).starts_with("1:6: expected end of line after the timestamp")
    );
    assert!(err_text("m 1 99999999999999999999\n", None).starts_with("1:5: invalid timestamp"));
}

#[test]
fn text_empty_label_values_are_dropped_and_duplicates_refused() {
    let e = parse("m{a=\"\",b=\"1\"} 1\n", None).unwrap();
    assert_eq!(e.samples[0].labels.to_string(), r#"m{b="1"}"#);
    assert_eq!(
        err_text("m{a=\"1\",b=\"2\",a=\"3\"} 1\n", None),
        "1:15: label \"a\" appears more than once"
    );
    assert_eq!(
        err_text("m{__name__=\"x\"} 1\n", None),
        "1:3: label \"__name__\" appears more than once"
    );
}

#[test]
fn text_quoted_names_must_still_be_legacy_names() {
    let e = parse("{\"m\",\"a\"=\"1\"} 2\n# TYPE \"m\" gauge\n", None).unwrap();
    assert_eq!(rows(&e), vec![row(r#"m{a="1"}"#, 2.0, None)]);
    assert!(err_text("{\"my.metric\"} 1\n", None).starts_with("1:2: invalid name \"my.metric\""));
    assert_eq!(
        err_text("m{\"n\"} 1\n", None),
        "1:3: metric name given twice"
    );
}

#[test]
fn text_errors_name_line_column_and_expectation() {
    let cases = [
        (
            "a\n",
            "1:2: expected a value after the series, got end of line",
        ),
        (
            "a 1\nb{c=\"d\" 2\n",
            "2:9: expected a label name or '}', got '2'",
        ),
        ("{a=\"b\"} 1\n", "1:1: series has no metric name"),
        ("m{a} 1\n", "1:4: expected '=', got '}'"),
        ("m{a=b} 1\n", "1:5: expected a quoted label value, got 'b'"),
        (
            "m{a=\"b} 1\n",
            "1:10: expected a closing '\"', got end of line",
        ),
        (
            "m{1=\"b\"} 1\n",
            "1:3: expected a label name or '}', got '1'",
        ),
        (
            "m{a=\"1\"} {\n",
            "1:10: expected a value after the series, got '{'",
        ),
        (
            "m 1 2 3\n",
            "1:7: expected end of line after the timestamp, got '3'",
        ),
        ("m 1x\n", "1:3: invalid value \"1x\""),
        (
            "1m 1\n",
            "1:1: expected a metric name, '{', a comment or a blank line, got '1'",
        ),
        (
            "# TYPE m counterx\n",
            "1:10: invalid metric type \"counterx\"",
        ),
        ("# TYPE m info\n", "1:10: invalid metric type \"info\""),
        (
            "# TYPE\tm counter \n",
            "1:10: invalid metric type \"counter \"",
        ),
        (
            "# HELP \n",
            "1:8: expected a metric name after HELP, got end of line",
        ),
        (
            "x 1\n# TYPE 9 gauge\n",
            "2:8: expected a metric name after TYPE, got '9'",
        ),
        (
            "m{a=\"é\",b=\"1\",b=\"1\"} 1\n",
            "1:15: label \"b\" appears more than once",
        ),
    ];
    for (body, want) in cases {
        assert_eq!(err_text(body, None), want, "{body:?}");
    }
}

// ---------------------------------------------------------------- OpenMetrics

#[test]
fn om_counter_with_total_and_created() {
    let body = "# TYPE foo counter\n\
                # UNIT foo seconds\n\
                # HELP foo Time spent \\\"doing\\\" it.\n\
                foo_total 17.0 1520879607.789 # {id=\"counter-test\"} 5\n\
                foo_created 1520872607.123\n\
                # EOF\n";
    let e = parse(body, OM).unwrap_err();
    // The unit must be a suffix of the family name.
    assert_eq!(
        e.to_string(),
        "2:12: unit \"seconds\" is not a suffix of metric \"foo\""
    );
    let body = body.replace("foo", "foo_seconds");
    let e = parse(&body, OM).unwrap();
    assert_eq!(
        fam(&e, 0),
        (
            "foo_seconds",
            FamilyType::Counter,
            Some("Time spent \"doing\" it."),
            Some("seconds")
        )
    );
    assert_eq!(
        rows(&e),
        vec![
            row("foo_seconds_total{}", 17.0, Some(1520879607789)),
            row("foo_seconds_created{}", 1520872607.123, None),
        ]
    );
    assert_eq!(family_names(&e), ["foo_seconds", "foo_seconds"]);
    let ex = e.samples[0].exemplar.as_deref().unwrap();
    assert_eq!(ex.labels.to_string(), r#"{id="counter-test"}"#);
    assert_eq!((ex.value, ex.timestamp_ms), (5.0, None));
}

#[test]
fn om_all_family_types_and_their_suffixes() {
    let body = "# TYPE h histogram\n\
                h_bucket{le=\"1\"} 1 # {trace_id=\"abc\"} 0.5 123.456\n\
                h_bucket{le=\"+Inf\"} 2\n\
                h_count 2\n\
                h_sum 3.5\n\
                h_created 100\n\
                # TYPE gh gaugehistogram\n\
                gh_bucket{le=\"1\"} 1\n\
                gh_bucket{le=\"+Inf\"} 2\n\
                gh_gcount 2\n\
                gh_gsum 3\n\
                # TYPE s summary\n\
                s{quantile=\"0.9\"} 1\n\
                s_sum 1\n\
                s_count 1\n\
                # TYPE i info\n\
                i_info{version=\"1.2\"} 1\n\
                # TYPE st stateset\n\
                st{st=\"a\"} 1\n\
                st{st=\"b\"} 0\n\
                # TYPE g gauge\n\
                g 1\n\
                # TYPE u unknown\n\
                u 1\n\
                # EOF";
    let e = parse(body, OM).unwrap();
    let kinds: Vec<(&str, FamilyType)> = e
        .families
        .iter()
        .map(|f| (f.name.as_str(), f.kind))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("h", FamilyType::Histogram),
            ("gh", FamilyType::GaugeHistogram),
            ("s", FamilyType::Summary),
            ("i", FamilyType::Info),
            ("st", FamilyType::StateSet),
            ("g", FamilyType::Gauge),
            ("u", FamilyType::Unknown),
        ]
    );
    assert_eq!(
        family_names(&e),
        [
            "h", "h", "h", "h", "h", "gh", "gh", "gh", "gh", "s", "s", "s", "i", "st", "st", "g",
            "u"
        ]
    );
    assert_eq!(e.samples[0].labels.get("le"), Some("1.0"));
    // Gauge histograms keep their le text, as Prometheus does.
    assert_eq!(e.samples[5].labels.get("le"), Some("1"));
    let ex = e.samples[0].exemplar.as_deref().unwrap();
    assert_eq!(ex.labels.get("trace_id"), Some("abc"));
    assert_eq!((ex.value, ex.timestamp_ms), (0.5, Some(123456)));
}

#[test]
fn om_timestamps_are_float_seconds_truncated_to_ms() {
    let e = parse("a 1 1.5\nb 1 -1.0019\nc 1 10 # {} 2 1e3\n# EOF\n", OM).unwrap();
    let ts: Vec<Option<i64>> = e.samples.iter().map(|s| s.timestamp_ms).collect();
    assert_eq!(ts, [Some(1500), Some(-1001), Some(10000)]);
    assert_eq!(
        e.samples[2].exemplar.as_ref().unwrap().timestamp_ms,
        Some(1_000_000)
    );
    assert_eq!(
        err_text("a 1 NaN\n# EOF\n", OM),
        "1:5: invalid timestamp \"NaN\""
    );
    assert_eq!(
        err_text("a 1 +Inf\n# EOF\n", OM),
        "1:5: invalid timestamp \"+Inf\""
    );
}

#[test]
fn om_requires_eof_and_nothing_after_it() {
    assert!(parse("a 1\n# EOF", OM).is_ok());
    assert!(parse("a 1\n# EOF\n", OM).is_ok());
    assert!(parse("# EOF\n", OM).unwrap().samples.is_empty());
    assert_eq!(err_text("", OM), "1:1: data does not end with # EOF");
    assert_eq!(err_text("a 1\n", OM), "2:1: data does not end with # EOF");
    assert_eq!(err_text("a 1", OM), "1:4: data does not end with # EOF");
    assert_eq!(
        err_text("a 1\n# EOF\n\n", OM),
        "3:1: unexpected data after # EOF"
    );
    assert_eq!(
        err_text("# EOF\na 1\n", OM),
        "2:1: unexpected data after # EOF"
    );
    assert_eq!(
        err_text("# EOF \n", OM),
        "1:1: expected \"# HELP \", \"# TYPE \", \"# UNIT \" or \"# EOF\", got \"# EOF \""
    );
}

#[test]
fn om_errors_name_line_column_and_expectation() {
    let cases = [
        (
            "a 1\n\nb 1\n# EOF\n",
            "2:1: expected a metric name, '{' or '# ' (no blank lines), got end of line",
        ),
        (
            "# a comment\n# EOF\n",
            "1:1: expected \"# HELP \", \"# TYPE \", \"# UNIT \" or \"# EOF\", got \"# a comment\"",
        ),
        (
            "a  1\n# EOF\n",
            "1:3: expected a value after the series, got ' '",
        ),
        (
            "a{b=\"1\" ,c=\"2\"} 1\n# EOF\n",
            "1:8: expected ',' or '}', got ' '",
        ),
        (
            "a{b=\"1\"c=\"2\"} 1\n# EOF\n",
            "1:8: expected ',' or '}', got 'c'",
        ),
        (
            "a 1 2 3\n# EOF\n",
            "1:6: expected end of line or ' # ' and an exemplar, got ' '",
        ),
        (
            "a 1 # {x=\"y\"}\n# EOF\n",
            "1:14: expected ' ' and a value after the exemplar labels, got end of line",
        ),
        (
            "a 1 # {x=\"y\",x=\"z\"} 1\n# EOF\n",
            "1:14: label \"x\" appears more than once",
        ),
        ("a 1 # {\"x\"} 1\n# EOF\n", "1:11: expected '=', got '}'"),
        (
            "a 1 # {x=\"y\"} 1 2 3\n# EOF\n",
            "1:18: expected end of line after the exemplar, got ' '",
        ),
        (
            "# TYPE a counter \n# EOF\n",
            "1:10: invalid metric type \"counter \"",
        ),
        (
            "# TYPE a untyped\n# EOF\n",
            "1:10: invalid metric type \"untyped\"",
        ),
        (
            "# HELP a\n# EOF\n",
            "1:9: expected ' ' and the text after the name, got end of line",
        ),
        (
            "# UNIT a_b c\n# EOF\n",
            "1:12: unit \"c\" is not a suffix of metric \"a_b\"",
        ),
        ("{b=\"1\"} 1\n# EOF\n", "1:1: series has no metric name"),
        (
            " a 1\n# EOF\n",
            "1:1: expected a metric name, '{' or '# ', got ' '",
        ),
        (
            "a\t1\n# EOF\n",
            "1:2: expected ' ' and a value after the series, got '\\t'",
        ),
    ];
    for (body, want) in cases {
        assert_eq!(err_text(body, OM), want, "{body:?}");
    }
}

#[test]
fn om_help_unescapes_quotes_and_empty_unit_is_none() {
    let e = parse("# HELP a x\\\\y\\n\\\"z\\\"\n# UNIT a \n# EOF\n", OM).unwrap();
    assert_eq!(
        fam(&e, 0),
        ("a", FamilyType::Unknown, Some("x\\y\n\"z\""), None)
    );
}

// ---------------------------------------------------------------- entry points

#[test]
fn content_type_selects_the_format() {
    let body = "a 1\n# EOF\n";
    assert_eq!(
        Format::from_content_type("text/plain; version=0.0.4"),
        Some(Format::Text)
    );
    assert_eq!(
        Format::from_content_type("Application/OpenMetrics-Text; version=1.0.0; charset=utf-8"),
        Some(Format::OpenMetrics)
    );
    assert_eq!(Format::from_content_type("application/json"), None);
    assert_eq!(parse(body, OM).unwrap().samples.len(), 1);
    // `# EOF` is just a comment to the text format.
    assert_eq!(parse(body, TEXT).unwrap().samples.len(), 1);
    assert_eq!(parse("a 1\n", TEXT).unwrap().samples.len(), 1);
    assert!(matches!(
        parse(body, Some("application/json")),
        Err(ParseError::UnsupportedContentType(_))
    ));
    // The protobuf format is read as protobuf, whatever the body holds.
    assert!(matches!(
        parse(body, Some("application/vnd.google.protobuf")),
        Err(ParseError::Protobuf { .. })
    ));
}

#[test]
fn invalid_utf8_is_refused_with_its_position() {
    let err = parse_bytes(b"a 1\nb{x=\"\xff\"} 1\n", None).unwrap_err();
    assert_eq!(err.position(), Some((2, 6)));
    assert_eq!(err.to_string(), "2:6: invalid UTF-8");
}

#[test]
fn cache_shares_label_sets_between_scrapes_and_forgets_vanished_series() {
    let mut cache = SeriesCache::new();
    let a = parse_cached("m{a=\"1\"} 1\nn 2\n", None, &mut cache).unwrap();
    let b = parse_cached("m{a=\"1\"} 3\n", None, &mut cache).unwrap();
    assert!(Labels::ptr_eq(&a.samples[0].labels, &b.samples[0].labels));
    assert_eq!(cache.len(), 2);
    parse_cached("m{a=\"1\"} 3\n", None, &mut cache).unwrap();
    assert_eq!(cache.len(), 1, "n was not seen in the last two scrapes");
    // The same text under a histogram family gets its le canonicalised, not the cached set.
    let c = parse_cached("x_bucket{le=\"1\"} 1\n", None, &mut cache).unwrap();
    let d = parse_cached(
        "# TYPE x histogram\nx_bucket{le=\"1\"} 1\n",
        None,
        &mut cache,
    )
    .unwrap();
    assert_eq!(c.samples[0].labels.get("le"), Some("1"));
    assert_eq!(d.samples[0].labels.get("le"), Some("1.0"));
    // Errors still surface on a cache hit path.
    assert!(parse_cached("m{a=\"1\"} x\n", None, &mut cache).is_err());
}

#[test]
fn cache_index_follows_entries_as_series_come_and_go() {
    let body = |range: std::ops::Range<usize>| {
        range
            .map(|i| format!("m{{i=\"{i}\"}} {i}\n"))
            .collect::<String>()
    };
    let mut cache = SeriesCache::new();
    // Series churn: each body keeps part of the previous one, so sweeps free places in the
    // middle of the entries and move others into them.
    for (n, range) in [0..100, 50..150, 140..160, 0..10, 5..300, 290..300, 0..1]
        .into_iter()
        .enumerate()
    {
        let text = body(range.clone());
        let parsed = parse_cached(&text, None, &mut cache).unwrap();
        assert_eq!(parsed, parse(&text, None).unwrap(), "body {n}");
        for (i, e) in cache.entries.iter().enumerate() {
            assert_eq!(
                cache.entries.find(e.key()),
                Some(i as u32),
                "body {n}: entry {i} is findable"
            );
        }
        assert_eq!(cache.entries.index_len(), cache.entries.len());
    }
    // Seen in the last two bodies: 290..300 and 0..1.
    assert_eq!(cache.len(), 11);
    assert!(
        cache.entries.capacity() <= 64 + 2 * cache.len(),
        "shrunk after churn"
    );
}

#[test]
fn cached_series_text_skips_lexing_but_not_checking() {
    // Values holding `}`, `"` and `\\` must not end the quick scan of a label block early.
    let body = "m{a=\"}\",b=\"q\\\"}\",c=\"x\\\\\"} 1\nm{a=\"2\"} 2\n";
    let fresh = parse(body, None).unwrap();
    let mut cache = SeriesCache::new();
    let first = parse_cached(body, None, &mut cache).unwrap();
    let second = parse_cached(body, None, &mut cache).unwrap();
    assert_eq!(first, fresh);
    assert_eq!(second, fresh);
    assert_eq!(fresh.samples[0].labels.get("a"), Some("}"));
    assert_eq!(fresh.samples[0].labels.get("b"), Some("q\"}"));
    assert_eq!(fresh.samples[0].labels.get("c"), Some("x\\"));

    // A known series text followed by garbage is still refused, at the same place as
    // without a cache.
    for bad in ["m{a=\"2\"}x 3\n", "m{a=\"2\"} 3 4 5\n", "m{a=\"2\"} y\n"] {
        let want = parse(bad, None).unwrap_err();
        assert_eq!(
            parse_cached(bad, None, &mut cache).unwrap_err(),
            want,
            "{bad}"
        );
    }
    // A prefix of a known text is not a hit.
    assert!(parse_cached("m{a=\"2\" 3\n", None, &mut cache).is_err());
}

#[test]
fn go_float_formatting_matches_strconv_g() {
    let cases = [
        (1.0, "1"),
        (0.0, "0"),
        (-0.0, "-0"),
        (0.1, "0.1"),
        (123456.0, "123456"),
        (1e6, "1e+06"),
        (1234567.0, "1.234567e+06"),
        (0.0001, "0.0001"),
        (0.00001, "1e-05"),
        (-2.5e-300, "-2.5e-300"),
        (1.7560473e7, "1.7560473e+07"),
        (f64::INFINITY, "+Inf"),
        (f64::NEG_INFINITY, "-Inf"),
        (f64::NAN, "NaN"),
    ];
    for (v, want) in cases {
        assert_eq!(format_go_float(v), want);
    }
}

#[test]
fn to_samples_stamps_lines_without_timestamps() {
    let e = parse("a 1 5\nb 2\n", None).unwrap();
    let s = e.to_samples(1000);
    assert_eq!((s[0].timestamp_ms, s[1].timestamp_ms), (5, 1000));
}

// ---------------------------------------------------------------- renderer

#[test]
fn render_escapes_and_groups_by_family() {
    let labels = |pairs: &[(&str, &str)]| Labels::from_pairs(pairs.iter().copied()).unwrap();
    let families = vec![
        ParsedFamily {
            name: "up".into(),
            kind: FamilyType::Gauge,
            help: Some("Is it\nup? \\o/".into()),
            unit: None,
        },
        ParsedFamily {
            name: "raw".into(),
            kind: FamilyType::Unknown,
            help: None,
            unit: None,
        },
    ];
    let sample = |family, l, value, ts| ParsedSample {
        family,
        labels: l,
        value,
        timestamp_ms: ts,
        exemplar: None,
        histogram: None,
    };
    let samples = vec![
        sample(1, labels(&[("__name__", "raw")]), 1e6, None),
        sample(
            0,
            labels(&[("__name__", "up"), ("job", "a\"b\\c\nd")]),
            1.0,
            Some(7),
        ),
    ];
    let text = render_text(&families, &samples);
    assert_eq!(
        text,
        "# HELP up Is it\\nup? \\\\o/\n# TYPE up gauge\nup{job=\"a\\\"b\\\\c\\nd\"} 1 7\nraw 1e+06\n"
    );
    let back = parse(&text, None).unwrap();
    assert_eq!(back.families, families);
    assert_eq!(back.samples[0].labels, samples[1].labels);
}

// ---------------------------------------------------------------- properties

fn label_name() -> impl Strategy<Value = String> {
    "[a-zA-Z_][a-zA-Z0-9_]{0,6}".prop_filter("not __name__", |n| n != "__name__")
}

fn label_value() -> impl Strategy<Value = String> {
    // Quotes, backslashes, newlines and non-ASCII must all survive escaping.
    prop_oneof![
        "[a-z0-9]{1,8}",
        "[\"\\\\\n a-zé€{}=,#]{1,8}",
        any::<String>().prop_filter("non-empty", |s| !s.is_empty()),
    ]
}

fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(f64::NAN),
        (-1000i64..1000).prop_map(|v| v as f64),
    ]
}

prop_compose! {
    fn family_strategy()(
        name in "[a-zA-Z_:][a-zA-Z0-9_:]{0,10}",
        kind in prop_oneof![Just(FamilyType::Counter), Just(FamilyType::Gauge), Just(FamilyType::Unknown)],
        // A docstring of only spaces and tabs reads back empty in the text format (as in
        // Prometheus): the line cannot tell it from no text, so the property leaves it out.
        help in proptest::option::of(any::<String>().prop_filter(
            "whitespace-only help is not representable",
            |h| h.is_empty() || !h.bytes().all(|b| b == b' ' || b == b'\t'),
        )),
        series in proptest::collection::vec(
            (
                proptest::collection::btree_map(label_name(), label_value(), 0..4),
                value(),
                proptest::option::of(0i64..i64::MAX),
            ),
            1..4,
        ),
    ) -> (ParsedFamily, Vec<(Labels, f64, Option<i64>)>) {
        let series = series
            .into_iter()
            .map(|(labels, v, ts)| (Labels::with_name(&name, labels).unwrap(), v, ts))
            .collect();
        (ParsedFamily { name, kind, help, unit: None }, series)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn rendered_text_parses_back_to_the_same_samples(
        fams in proptest::collection::vec(family_strategy(), 1..5)
    ) {
        // Family names must differ, or two families would merge on the way back.
        let mut seen = std::collections::HashSet::new();
        prop_assume!(fams.iter().all(|(f, _)| seen.insert(f.name.clone())));
        let families: Vec<ParsedFamily> = fams.iter().map(|(f, _)| f.clone()).collect();
        let samples: Vec<ParsedSample> = fams
            .iter()
            .enumerate()
            .flat_map(|(i, (_, series))| {
                series.iter().map(move |(l, v, ts)| ParsedSample {
                    family: i,
                    labels: l.clone(),
                    value: *v,
                    timestamp_ms: *ts,
                    exemplar: None,
                    histogram: None,
                })
            })
            .collect();
        let text = render_text(&families, &samples);
        let back = parse(&text, None).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(&back.families, &families);
        prop_assert_eq!(back.samples.len(), samples.len());
        for (got, want) in back.samples.iter().zip(&samples) {
            prop_assert_eq!(got.family, want.family);
            prop_assert_eq!(&got.labels, &want.labels);
            prop_assert_eq!(got.timestamp_ms, want.timestamp_ms);
            prop_assert!(
                got.value == want.value || (got.value.is_nan() && want.value.is_nan()),
                "{} != {}", got.value, want.value
            );
        }
    }

    #[test]
    fn go_floats_round_trip(v in any::<f64>()) {
        let back = parse_go_float(&format_go_float(v)).unwrap();
        prop_assert!(back.to_bits() == v.to_bits() || (v.is_nan() && back.is_nan()));
    }

    #[test]
    fn arbitrary_strings_never_panic(s in any::<String>()) {
        let _ = parse(&s, TEXT);
        let _ = parse(&s, OM);
    }

    #[test]
    fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse_bytes(&b, TEXT);
        let _ = parse_bytes(&b, OM);
    }

    #[test]
    fn token_soup_never_panics(parts in proptest::collection::vec(
        prop_oneof![
            Just("{"), Just("}"), Just("\""), Just("\\"), Just("="), Just(","), Just(" "),
            Just("\t"), Just("\n"), Just("#"), Just("# "), Just("# HELP "), Just("# TYPE "),
            Just("# UNIT "), Just("# EOF"), Just("counter"), Just("histogram"), Just("m"),
            Just("m_total"), Just("le"), Just("1"), Just("-1.5e3"), Just("NaN"), Just("+Inf"),
            Just(" # {"), Just("é"), Just("\0"), Just("__name__"), Just("a"), Just("_bucket"),
        ],
        0..40,
    )) {
        let s: String = parts.concat();
        let _ = parse(&s, TEXT);
        let _ = parse(&s, OM);
        let mut cache = SeriesCache::new();
        let _ = parse_cached(&s, TEXT, &mut cache);
        let _ = parse_cached(&s, OM, &mut cache);

        // A cache warmed by this body never changes what a related body parses to: known
        // series texts meet garbage after them, in another order, or cut short.
        let mut warm = SeriesCache::new();
        let _ = parse_cached(&s, TEXT, &mut warm);
        let reversed: Vec<&str> = s.split('\n').rev().collect();
        for t in [s.clone(), reversed.join("\n"), format!("{s}x"), s.replace('}', "} x")] {
            // Compared in their debug form, where NaN values equal each other.
            prop_assert_eq!(
                format!("{:?}", parse_cached(&t, TEXT, &mut warm)),
                format!("{:?}", parse(&t, TEXT)),
                "{:?}",
                t
            );
        }
    }
}

#[test]
fn family_membership_follows_suffix_rules() {
    use FamilyType::*;
    let cases = [
        (Counter, "foo", "foo_total", true),
        (Counter, "foo", "foo_created", true),
        (Counter, "foo_total", "foo_total", true),
        (Counter, "foo", "foo", true),
        (Counter, "foo", "foo_count", false),
        (Histogram, "h", "h_bucket", true),
        (Histogram, "h", "h_created", true),
        (Histogram, "h", "h_gsum", false),
        (GaugeHistogram, "g", "g_gcount", true),
        (GaugeHistogram, "g", "g_count", false),
        (Summary, "s", "s_sum", true),
        (Summary, "s", "s_bucket", false),
        (Info, "i", "i_info", true),
        (Info, "i_info", "i_info", true),
        (Gauge, "g", "g_total", false),
        (StateSet, "st", "st", true),
        (Unknown, "u", "u_sum", false),
    ];
    for (kind, family, series, want) in cases {
        assert_eq!(
            kind.is_member(family, series),
            want,
            "{kind:?} {family} {series}"
        );
    }
}

/// `lex::label_block_end` as it was written first: one byte at a time.
fn label_block_end_bytewise(b: &[u8], mut i: usize) -> Option<usize> {
    let mut quoted = false;
    while let Some(&c) = b.get(i) {
        match (quoted, c) {
            (true, b'\\') => i += 1,
            (true, b'"') => quoted = false,
            (false, b'"') => quoted = true,
            (false, b'}') => return Some(i + 1),
            _ => {}
        }
        i += 1;
    }
    None
}

proptest! {
    #[test]
    fn label_block_scan_by_words_ends_where_the_bytewise_scan_does(
        body in proptest::collection::vec(
            prop_oneof![
                Just(b'"'), Just(b'\\'), Just(b'}'), Just(b'{'), Just(b','), Just(b'='),
                Just(b'a'), Just(b'z'), Just(0x80u8), Just(0xffu8), any::<u8>(),
            ],
            0..80,
        ),
        start in 0usize..10,
    ) {
        prop_assert_eq!(
            lex::label_block_end(&body, start),
            label_block_end_bytewise(&body, start)
        );
    }
}

#[test]
fn name_byte_classes_are_prometheus_ones() {
    for b in 0..=255u8 {
        let alpha = b.is_ascii_alphabetic();
        let digit = b.is_ascii_digit();
        assert_eq!(
            lex::is_metric_start(b),
            alpha || b == b'_' || b == b':',
            "{b}"
        );
        assert_eq!(
            lex::is_metric_char(b),
            alpha || digit || b == b'_' || b == b':',
            "{b}"
        );
    }
}

proptest! {
    #[test]
    fn plain_decimals_read_exactly_as_a_general_parser_reads_them(
        s in "[+-]?[0-9]{0,25}(\\.[0-9]{0,30})?",
    ) {
        let general = s.parse::<f64>().ok().filter(|v| v.is_finite());
        prop_assert_eq!(
            lex::parse_go_float(&s).map(f64::to_bits),
            general.map(f64::to_bits),
            "{}", s
        );
    }
}

#[test]
fn plain_decimal_edges_match_a_general_parser() {
    for s in [
        "0",
        "-0",
        "+0",
        "0.",
        ".0",
        "5.",
        ".5",
        "-.5",
        "9007199254740991",
        "9007199254740992",
        "9007199254740993",
        "0.1",
        "0.3",
        "123456789012345.6",
        "1.0000000000000000000001",
        "0.0000000000000000000001",
        "-1.5",
        "00000000000000000000000012.5",
    ] {
        assert_eq!(
            lex::parse_go_float(s).map(f64::to_bits),
            s.parse::<f64>().ok().map(f64::to_bits),
            "{s}"
        );
    }
    for s in ["", "-", "+", ".", "-.", "1..2", "1.2.3", "--1", "1-"] {
        assert_eq!(lex::parse_go_float(s), None, "{s}");
    }
}
