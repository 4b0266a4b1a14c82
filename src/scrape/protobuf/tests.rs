use prost::Message;

use super::*;
use crate::metrics_proto as pb;
use crate::scrape::{parse_bytes, Exposition, ScrapeProtocol};
use crate::series::native::NativeHistogram;

const CT: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

fn body(families: &[pb::MetricFamily]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in families {
        f.encode_length_delimited(&mut out).unwrap();
    }
    out
}

fn label(name: &str, value: &str) -> pb::LabelPair {
    pb::LabelPair {
        name: Some(name.into()),
        value: Some(value.into()),
    }
}

fn family(name: &str, kind: pb::MetricType, metric: Vec<pb::Metric>) -> pb::MetricFamily {
    pb::MetricFamily {
        name: Some(name.into()),
        help: Some(format!("help of {name}")),
        r#type: Some(kind as i32),
        metric,
        unit: None,
    }
}

fn lines(e: &Exposition) -> Vec<String> {
    e.samples
        .iter()
        .map(|s| match &s.histogram {
            Some(h) => format!("{} native count={} schema={}", s.labels, h.count, h.schema),
            None => format!("{} {}", s.labels, s.value),
        })
        .collect()
}

fn classic_histogram() -> pb::Histogram {
    pb::Histogram {
        sample_count: Some(3),
        sample_sum: Some(1.5),
        bucket: vec![
            pb::Bucket {
                cumulative_count: Some(1),
                upper_bound: Some(0.1),
                ..Default::default()
            },
            pb::Bucket {
                cumulative_count: Some(2),
                upper_bound: Some(1.0),
                ..Default::default()
            },
        ],
        ..Default::default()
    }
}

fn native_histogram() -> pb::Histogram {
    pb::Histogram {
        schema: Some(3),
        zero_threshold: Some(1e-128),
        zero_count: Some(1),
        positive_span: vec![
            pb::BucketSpan {
                offset: Some(-2),
                length: Some(2),
            },
            pb::BucketSpan {
                offset: Some(3),
                length: Some(1),
            },
        ],
        positive_delta: vec![1, 1, -1],
        ..classic_histogram()
    }
}

#[test]
fn families_map_to_the_samples_the_text_format_gives() {
    let b = body(&[
        family(
            "requests_total",
            pb::MetricType::Counter,
            vec![pb::Metric {
                label: vec![label("code", "200"), label("path", "a\"b\\c\nd")],
                counter: Some(pb::Counter {
                    value: Some(7.0),
                    ..Default::default()
                }),
                ..Default::default()
            }],
        ),
        family(
            "temp",
            pb::MetricType::Gauge,
            vec![pb::Metric {
                gauge: Some(pb::Gauge { value: Some(-1.5) }),
                timestamp_ms: Some(1234),
                ..Default::default()
            }],
        ),
        family(
            "rpc_seconds",
            pb::MetricType::Summary,
            vec![pb::Metric {
                summary: Some(pb::Summary {
                    sample_count: Some(4),
                    sample_sum: Some(2.0),
                    quantile: vec![pb::Quantile {
                        quantile: Some(0.5),
                        value: Some(0.25),
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            }],
        ),
        family(
            "lat_seconds",
            pb::MetricType::Histogram,
            vec![pb::Metric {
                histogram: Some(classic_histogram()),
                ..Default::default()
            }],
        ),
    ]);
    let got = parse_bytes(&b, Some(CT)).unwrap();
    let text = "# TYPE requests_total counter\n\
        requests_total{code=\"200\",path=\"a\\\"b\\\\c\\nd\"} 7\n\
        # TYPE temp gauge\ntemp -1.5 1234\n\
        # TYPE rpc_seconds summary\nrpc_seconds{quantile=\"0.5\"} 0.25\nrpc_seconds_sum 2\nrpc_seconds_count 4\n\
        # TYPE lat_seconds histogram\nlat_seconds_bucket{le=\"0.1\"} 1\nlat_seconds_bucket{le=\"1\"} 2\n\
        lat_seconds_bucket{le=\"+Inf\"} 3\nlat_seconds_sum 1.5\nlat_seconds_count 3\n";
    let want = parse_bytes(text.as_bytes(), None).unwrap();
    assert_eq!(lines(&got), lines(&want));
    let ts: Vec<_> = got.samples.iter().map(|s| s.timestamp_ms).collect();
    let want_ts: Vec<_> = want.samples.iter().map(|s| s.timestamp_ms).collect();
    assert_eq!(ts, want_ts);
    let meta: Vec<_> = got
        .families
        .iter()
        .map(|f| (f.name.as_str(), f.kind, f.help.as_deref()))
        .collect();
    assert_eq!(
        meta,
        vec![
            (
                "requests_total",
                FamilyType::Counter,
                Some("help of requests_total")
            ),
            ("temp", FamilyType::Gauge, Some("help of temp")),
            (
                "rpc_seconds",
                FamilyType::Summary,
                Some("help of rpc_seconds")
            ),
            (
                "lat_seconds",
                FamilyType::Histogram,
                Some("help of lat_seconds")
            ),
        ]
    );
}

#[test]
fn native_histograms_are_forwarded_intact_and_classic_buckets_only_when_asked() {
    let b = body(&[family(
        "lat_seconds",
        pb::MetricType::Histogram,
        vec![pb::Metric {
            label: vec![label("job_kind", "x")],
            histogram: Some(native_histogram()),
            ..Default::default()
        }],
    )]);
    let got = parse_bytes(&b, Some(CT)).unwrap();
    assert_eq!(
        lines(&got),
        vec![r#"lat_seconds{job_kind="x"} native count=3 schema=3"#]
    );
    let h = got.samples[0].histogram.as_deref().unwrap();
    assert_eq!(
        h,
        &NativeHistogram {
            schema: 3,
            zero_threshold: 1e-128,
            zero_count: 1,
            count: 3,
            sum: 1.5,
            positive_spans: vec![
                BucketSpan {
                    offset: -2,
                    length: 2
                },
                BucketSpan {
                    offset: 3,
                    length: 1
                },
            ],
            positive_deltas: vec![1, 1, -1],
            negative_spans: vec![],
            negative_deltas: vec![],
            reset_hint: ResetHint::Unknown,
        }
    );
    assert_eq!(got.samples[0].value.to_bits(), HISTOGRAM_NAN_BITS);

    let mut sink = crate::scrape::Collect {
        cache: None,
        samples: Vec::new(),
    };
    crate::scrape::parse_bytes_into(&b, Some(CT), true, true, &mut sink).unwrap();
    let names: Vec<String> = sink.samples.iter().map(|s| s.labels.to_string()).collect();
    assert_eq!(
        names,
        vec![
            r#"lat_seconds{job_kind="x"}"#,
            r#"lat_seconds_bucket{job_kind="x",le="0.1"}"#,
            r#"lat_seconds_bucket{job_kind="x",le="1.0"}"#,
            r#"lat_seconds_bucket{job_kind="x",le="+Inf"}"#,
            r#"lat_seconds_sum{job_kind="x"}"#,
            r#"lat_seconds_count{job_kind="x"}"#,
        ]
    );
}

#[test]
fn hostile_bodies_fail_with_their_offset_and_never_panic() {
    let good = body(&[family("up", pb::MetricType::Gauge, vec![])]);
    let err = |bytes: &[u8]| parse_bytes(bytes, Some(CT)).unwrap_err().to_string();

    // A length past the end.
    let mut long = good.clone();
    long.extend_from_slice(&[0x7f, 1, 2]);
    let e = err(&long);
    assert!(
        e.contains(&format!("byte {}", good.len())) && e.contains("127 bytes"),
        "{e}"
    );
    // A varint that never ends.
    assert!(err(&[0xff; 12]).contains("bad length prefix"));
    // Bytes that are no MetricFamily.
    assert!(err(&[3, 0xff, 0xff, 0xff]).contains("invalid MetricFamily"));
    // Names outside the legacy set.
    let bad_name = body(&[family("bad-name", pb::MetricType::Gauge, vec![])]);
    assert!(err(&bad_name).contains("invalid metric name"));
    let bad_label = body(&[family(
        "m",
        pb::MetricType::Gauge,
        vec![pb::Metric {
            label: vec![label("a=\"1\",b", "2")],
            ..Default::default()
        }],
    )]);
    assert!(err(&bad_label).contains("invalid label name"));
    // Native histograms that do not add up.
    let mut h = native_histogram();
    h.positive_delta.pop();
    let bad_spans = body(&[family(
        "h",
        pb::MetricType::Histogram,
        vec![pb::Metric {
            histogram: Some(h),
            ..Default::default()
        }],
    )]);
    assert!(err(&bad_spans).contains("spans and deltas disagree"));
    let mut h = native_histogram();
    h.schema = Some(9);
    let bad_schema = body(&[family(
        "h",
        pb::MetricType::Histogram,
        vec![pb::Metric {
            histogram: Some(h),
            ..Default::default()
        }],
    )]);
    assert!(err(&bad_schema).contains("schema 9"));
    // An empty body is an empty exposition.
    assert!(parse_bytes(&[], Some(CT)).unwrap().samples.is_empty());
}

#[test]
fn accept_header_weighs_protocols_as_prometheus_does() {
    use ScrapeProtocol::*;
    assert_eq!(
        crate::scrape::accept_header(&[
            OpenMetricsText1_0_0,
            OpenMetricsText0_0_1,
            PrometheusText1_0_0,
            PrometheusText0_0_4
        ]),
        "application/openmetrics-text;version=1.0.0;escaping=underscores;q=0.6,\
         application/openmetrics-text;version=0.0.1;q=0.5,\
         text/plain;version=1.0.0;escaping=underscores;q=0.4,\
         text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
    );
    assert_eq!(
        crate::scrape::accept_header(&[PrometheusProto]),
        "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;\
         encoding=delimited;q=0.6,*/*;q=0.5"
    );
    assert_eq!(
        crate::scrape::Format::from_content_type(CT),
        Some(crate::scrape::Format::Protobuf)
    );
    assert_eq!(
        crate::scrape::Format::from_content_type(
            "application/vnd.google.protobuf; proto=other.Message; encoding=delimited"
        ),
        None
    );
}

proptest::proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
        let _ = parse_bytes(&bytes, Some(CT));
    }
}
