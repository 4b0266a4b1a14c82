//! Encode + compress throughput of remote-write request bodies, in samples per second, for
//! realistic probe series (8 labels each) — pushprobe's hand-written encoder against building
//! prost messages, which is what a straightforward implementation (and Prometheus' wire
//! format) costs — and the same bodies zstd-compressed, as VictoriaMetrics receives them.
//! Prints the bytes per sample on the wire once per shape.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use prost::Message;

use pushprobe::proto;
use pushprobe::remote_write::compression::ZstdCompressor;
use pushprobe::remote_write::encode::Encoder;
use pushprobe::series::{Labels, Sample};

const PHASES: [&str; 5] = ["resolve", "connect", "tls", "processing", "transfer"];
const CODES: [&str; 4] = ["200", "404", "500", "503"];
const METRICS: [&str; 4] = [
    "probe_http_duration_seconds",
    "probe_http_status_code",
    "probe_success",
    "probe_http_content_length_bytes",
];

/// `series` distinct label sets of 8 labels, shaped like pushprobe's probe series.
fn series(series: usize) -> Vec<Labels> {
    (0..series)
        .map(|i| {
            // i % 20 picks a distinct (phase, code) pair (5 and 4 are coprime), i / 20 the
            // probe, so every series is unique.
            let probe = format!("api-check-{:04}", i / 20);
            let instance = format!("edge-{:02}.eu-west-1.example.net:9115", i % 50);
            let pairs = [
                ("job", "pushprobe"),
                ("instance", instance.as_str()),
                ("probe", probe.as_str()),
                ("phase", PHASES[i % 5]),
                ("code", CODES[i % 4]),
                ("cluster", "edge-eu-1"),
                ("region", "eu-west-1"),
            ];
            Labels::with_name(METRICS[i % METRICS.len()], pairs).expect("valid labels")
        })
        .collect()
}

/// `per_series` snapshots of every series, in queue order (snapshot after snapshot).
fn batch(labels: &[Labels], per_series: usize) -> Vec<Sample> {
    let t0 = 1_760_000_000_000i64;
    let mut out = Vec::with_capacity(labels.len() * per_series);
    for k in 0..per_series {
        for (i, l) in labels.iter().enumerate() {
            out.push(Sample {
                labels: l.clone(),
                value: (i as f64 * 0.37 + k as f64).sin().abs() * 2.5,
                timestamp_ms: t0 + k as i64 * 15_000,
            });
        }
    }
    out
}

/// The straightforward way: build prost messages (cloning every label string), encode,
/// compress.
fn prost_encode(
    samples: &[Sample],
    external: &Labels,
    snappy: &mut snap::raw::Encoder,
    proto_buf: &mut Vec<u8>,
) -> Vec<u8> {
    let mut index: std::collections::HashMap<&Labels, usize> = std::collections::HashMap::new();
    let mut req = proto::WriteRequest::default();
    for s in samples {
        let i = *index.entry(&s.labels).or_insert_with(|| {
            let mut labels: Vec<proto::Label> = s
                .labels
                .iter()
                .map(|l| proto::Label {
                    name: l.name.to_string(),
                    value: l.value.to_string(),
                })
                .collect();
            for e in external.iter() {
                if s.labels.get(e.name).is_none() {
                    labels.push(proto::Label {
                        name: e.name.to_string(),
                        value: e.value.to_string(),
                    });
                }
            }
            labels.sort_by(|a, b| a.name.cmp(&b.name));
            req.timeseries.push(proto::TimeSeries {
                labels,
                ..Default::default()
            });
            req.timeseries.len() - 1
        });
        req.timeseries[i].samples.push(proto::Sample {
            value: s.value,
            timestamp: s.timestamp_ms,
        });
    }
    proto_buf.clear();
    req.encode(proto_buf).expect("Vec grows as needed");
    snappy.compress_vec(proto_buf).expect("fits one block")
}

fn bench(c: &mut Criterion) {
    let external = Labels::from_pairs([("agent", "pushprobe-edge-01")]).expect("valid labels");
    let mut group = c.benchmark_group("encode");
    group.sample_size(30);
    for n_series in [2_000usize, 10_000] {
        let labels = series(n_series);
        for per_series in [1usize, 10] {
            let samples = batch(&labels, per_series);
            let shape = format!("{n_series}series_x{per_series}");

            let mut encoder = Encoder::new();
            let mut out = Vec::new();
            let stats = encoder
                .encode(&samples, &external, &mut out)
                .expect("encodes");
            let mut snappy = snap::raw::Encoder::new();
            let mut proto_buf = Vec::new();
            let prost_body = prost_encode(&samples, &external, &mut snappy, &mut proto_buf);
            let n = samples.len() as f64;
            println!(
                "{shape}: {} samples; pushprobe {:.2} B/sample compressed ({:.1} B/sample \
                 protobuf); prost {:.2} B/sample compressed ({:.1} B/sample protobuf); \
                 identical body: {}",
                samples.len(),
                stats.compressed_bytes as f64 / n,
                stats.uncompressed_bytes as f64 / n,
                prost_body.len() as f64 / n,
                proto_buf.len() as f64 / n,
                prost_body == out,
            );

            group.throughput(Throughput::Elements(samples.len() as u64));
            group.bench_with_input(BenchmarkId::new("pushprobe", &shape), &samples, |b, s| {
                b.iter(|| {
                    encoder
                        .encode(black_box(s), &external, &mut out)
                        .expect("encodes");
                    black_box(out.len())
                })
            });
            group.bench_with_input(BenchmarkId::new("prost", &shape), &samples, |b, s| {
                b.iter(|| {
                    black_box(prost_encode(
                        black_box(s),
                        &external,
                        &mut snappy,
                        &mut proto_buf,
                    ))
                })
            });

            // The default levels, by body size.
            let mut zstd = ZstdCompressor::new(None).expect("zstd context");
            let mut zstd_out = Vec::new();
            let (_, proto) = encoder.encode_uncompressed(&samples, &external);
            zstd.compress(proto, &mut zstd_out).expect("compresses");
            println!(
                "{shape}: zstd {:.2} B/sample compressed",
                zstd_out.len() as f64 / n
            );
            group.bench_with_input(
                BenchmarkId::new("pushprobe_zstd", &shape),
                &samples,
                |b, s| {
                    b.iter(|| {
                        let (_, proto) = encoder.encode_uncompressed(black_box(s), &external);
                        zstd.compress(proto, &mut zstd_out).expect("compresses");
                        black_box(zstd_out.len())
                    })
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
