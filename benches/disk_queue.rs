//! Disk queue throughput: appending probe-sized batches (the probe path) and draining
//! (peek + ack, the sender path), on the real filesystem with `fsync = interval`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use pushprobe::queue::disk::format::{write_record, EncodeScratch};
use pushprobe::queue::disk::fs::RealFs;
use pushprobe::queue::disk::{DiskLog, DiskQueueOptions, FsyncPolicy};
use pushprobe::queue::Queue;
use pushprobe::series::{Labels, Sample};

/// A batch like one probe run yields: distinct series with a handful of labels each,
/// one timestamp.
fn probe_batch(n: usize) -> Vec<Sample> {
    (0..n)
        .map(|i| Sample {
            labels: Labels::with_name(
                "probe_http_duration_seconds_bucket",
                [
                    ("probe", "api-health".to_string()),
                    ("instance", "https://api.example.com/health".to_string()),
                    (
                        "phase",
                        ["connect", "tls", "processing", "transfer"][i % 4].to_string(),
                    ),
                    ("le", format!("{}", i / 4)),
                ],
            )
            .expect("valid labels"),
            value: i as f64 * 0.25,
            timestamp_ms: 1_700_000_000_000,
        })
        .collect()
}

fn options() -> DiskQueueOptions {
    DiskQueueOptions {
        // Bounded so a long run recycles segments instead of filling the disk.
        max_disk_bytes: 256 << 20,
        fsync: FsyncPolicy::Interval(Duration::from_secs(1)),
        ..DiskQueueOptions::default()
    }
}

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("disk_queue_append");
    for n in [20usize, 100, 200] {
        let batch = probe_batch(n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("encode_only", n), &batch, |b, batch| {
            let mut scratch = EncodeScratch::default();
            let mut out = Vec::new();
            b.iter(|| {
                out.clear();
                black_box(write_record(0, batch, &mut scratch, &mut out));
            })
        });
        group.bench_with_input(BenchmarkId::new("interval_fsync", n), &batch, |b, batch| {
            let dir = tempfile::tempdir().expect("temp dir");
            let (log, consumers) = DiskLog::open(
                dir.path(),
                options(),
                Arc::new(RealFs),
                &["prom".to_string(), "mimir".to_string()],
            )
            .expect("open");
            b.iter(|| log.append(black_box(batch)).expect("append"));
            drop(consumers);
        });
    }
    group.finish();
}

fn drain(c: &mut Criterion) {
    let mut group = c.benchmark_group("disk_queue_drain");
    let per_send = 2000usize;
    group.throughput(Throughput::Elements(per_send as u64));
    group.bench_function(BenchmarkId::new("peek_ack", per_send), |b| {
        let dir = tempfile::tempdir().expect("temp dir");
        let (log, mut consumers) = DiskLog::open(
            dir.path(),
            options(),
            Arc::new(RealFs),
            &["prom".to_string()],
        )
        .expect("open");
        let batch = probe_batch(100);
        let c = &mut consumers[0];
        b.iter_batched(
            || {
                for _ in 0..per_send / batch.len() {
                    log.append(&batch).expect("append");
                }
            },
            |()| {
                let got = c.peek(per_send).expect("peek").expect("batch");
                c.ack(got.last_seq).expect("ack");
                black_box(got.len())
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

criterion_group!(benches, append, drain);
criterion_main!(benches);
