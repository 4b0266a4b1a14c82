//! Fills a disk queue with a synthetic backlog, as an agent would during a receiver outage,
//! and reports the append cost per sample (the probe path's share of durability).
//!
//! `cargo run --release --example fill_queue -- DIR CONSUMER SAMPLES SERIES`
//!
//! Samples are spread over `SERIES` series of probe-like label sets, one sample per series
//! per second, ending now; `scripts/bench-backlog.sh` then drains them to a receiver.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pushprobe::queue::disk::fs::RealFs;
use pushprobe::queue::disk::{DiskLog, DiskQueueOptions, FsyncPolicy};
use pushprobe::series::{Labels, Sample};

fn arg<T: std::str::FromStr>(args: &[String], i: usize, name: &str) -> T {
    args.get(i).and_then(|a| a.parse().ok()).unwrap_or_else(|| {
        eprintln!("usage: fill_queue DIR CONSUMER SAMPLES SERIES (bad or missing {name})");
        std::process::exit(2)
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir: PathBuf = arg(&args, 1, "DIR");
    let consumer: String = arg(&args, 2, "CONSUMER");
    let total: usize = arg(&args, 3, "SAMPLES");
    let series: usize = arg::<usize>(&args, 4, "SERIES").max(1);

    let labels: Vec<Labels> = (0..series)
        .map(|i| {
            Labels::with_name(
                "bench_probe_duration_seconds",
                [
                    ("probe", format!("probe-{}", i / 10)),
                    (
                        "instance",
                        format!("https://svc-{}.example.com/health", i / 10),
                    ),
                    ("phase", format!("phase-{}", i % 10)),
                ],
            )
            .expect("valid labels")
        })
        .collect();
    let opts = DiskQueueOptions {
        max_disk_bytes: 4 << 30,
        fsync: FsyncPolicy::Interval(Duration::from_secs(1)),
        ..DiskQueueOptions::default()
    };
    let (log, _consumers) =
        DiskLog::open(&dir, opts, Arc::new(RealFs), &[consumer]).expect("open the disk queue");

    let runs = total.div_ceil(series);
    let now_ms = pushprobe::clock::now_ms();
    let mut appended = 0usize;
    let mut spent = Duration::ZERO;
    let mut batch = Vec::with_capacity(series);
    for run in 0..runs {
        let ts = now_ms - (runs - run) as i64 * 1000;
        batch.clear();
        for l in labels.iter().take(total - appended) {
            batch.push(Sample {
                labels: l.clone(),
                value: (run % 1000) as f64 * 0.001,
                timestamp_ms: ts,
            });
        }
        let started = Instant::now();
        log.append(&batch).expect("append");
        spent += started.elapsed();
        appended += batch.len();
    }
    log.flush().expect("flush");
    let stats = log.stats();
    println!(
        "appended {appended} samples in {runs} batches of {series}: {:.3} s, {:.2} us/sample; queue {} bytes in {} segments",
        spent.as_secs_f64(),
        spent.as_secs_f64() * 1e6 / appended.max(1) as f64,
        stats.bytes,
        stats.segments
    );
}
