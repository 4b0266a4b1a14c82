//! Parse throughput on a node-exporter-like payload (~3,000 series: per-CPU counters, disks,
//! filesystems, network devices, interrupts, systemd units, a request-latency histogram and a
//! GC summary), in samples per second. Run with `cargo bench --bench scrape`.
//!
//! The `*_encode` cases are the whole path a scraped sample takes inside pushprobe except the
//! socket: parse, target labels and scrape semantics ([`TargetState`]), and encoding into a
//! snappy-compressed remote-write request. `gzip_decode` is what a gzip-encoded body adds
//! before that: decoding the payload (gzip's default level) as it arrives in 16 KiB chunks.

use std::fmt::Write;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pushprobe::remote_write::encode::Encoder;
use pushprobe::scrape::body::GzipDecoder;
use pushprobe::scrape::target::{TargetOptions, TargetState};
use pushprobe::scrape::{parse, parse_cached, SeriesCache};
use pushprobe::series::Labels;

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Builds the payload; returns it with its sample count.
fn node_exporter_payload() -> (String, usize) {
    let mut s = String::new();
    let mut n = 0;
    let mut v = 1.0f64;
    let mut val = || {
        v = (v * 1.618_033_988_7 + 0.37) % 1.0e7;
        v
    };

    family(
        &mut s,
        "go_gc_duration_seconds",
        "summary",
        "A summary of the pause duration of garbage collection cycles.",
    );
    for q in ["0", "0.25", "0.5", "0.75", "1"] {
        let _ = writeln!(
            s,
            "go_gc_duration_seconds{{quantile=\"{q}\"}} {:e}",
            val() / 1e9
        );
        n += 1;
    }
    let _ = writeln!(
        s,
        "go_gc_duration_seconds_sum {}\ngo_gc_duration_seconds_count {}",
        val(),
        4711
    );
    n += 2;

    family(
        &mut s,
        "node_cpu_seconds_total",
        "counter",
        "Seconds the CPUs spent in each mode.",
    );
    for cpu in 0..16 {
        for mode in [
            "idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user",
        ] {
            let _ = writeln!(
                s,
                "node_cpu_seconds_total{{cpu=\"{cpu}\",mode=\"{mode}\"}} {:.2}",
                val()
            );
            n += 1;
        }
    }

    let disks = [
        "nvme0n1", "nvme1n1", "sda", "sdb", "dm-0", "dm-1", "loop0", "loop1",
    ];
    for metric in [
        "node_disk_read_bytes_total",
        "node_disk_written_bytes_total",
        "node_disk_reads_completed_total",
        "node_disk_writes_completed_total",
        "node_disk_read_time_seconds_total",
        "node_disk_write_time_seconds_total",
        "node_disk_io_time_seconds_total",
        "node_disk_io_now",
        "node_disk_discards_completed_total",
        "node_disk_flush_requests_total",
    ] {
        family(
            &mut s,
            metric,
            "counter",
            "Disk statistic from /proc/diskstats.",
        );
        for d in disks {
            let _ = writeln!(s, "{metric}{{device=\"{d}\"}} {}", val().floor());
            n += 1;
        }
    }

    for metric in [
        "node_filesystem_avail_bytes",
        "node_filesystem_free_bytes",
        "node_filesystem_size_bytes",
        "node_filesystem_files",
        "node_filesystem_files_free",
        "node_filesystem_readonly",
        "node_filesystem_device_error",
    ] {
        family(&mut s, metric, "gauge", "Filesystem statistic.");
        for i in 0..20 {
            let (dev, fstype, mnt) = match i % 4 {
                0 => (format!("/dev/nvme0n1p{i}"), "ext4", format!("/srv/data{i}")),
                1 => (
                    "tmpfs".to_string(),
                    "tmpfs",
                    format!("/run/user/{}", 1000 + i),
                ),
                2 => (
                    format!("/dev/mapper/vg-lv{i}"),
                    "xfs",
                    format!("/var/lib/docker/{i}"),
                ),
                _ => (
                    "overlay".to_string(),
                    "overlay",
                    format!("/var/lib/containers/storage/overlay/{i:064x}/merged"),
                ),
            };
            let _ = writeln!(
                s,
                "{metric}{{device=\"{dev}\",fstype=\"{fstype}\",mountpoint=\"{mnt}\"}} {:e}",
                val() * 1e6
            );
            n += 1;
        }
    }

    let netdevs = [
        "eth0",
        "eth1",
        "lo",
        "docker0",
        "veth1a2b3c",
        "veth4d5e6f",
        "wlan0",
        "br-0123456789ab",
        "tun0",
        "bond0",
    ];
    for metric in [
        "receive_bytes",
        "transmit_bytes",
        "receive_packets",
        "transmit_packets",
        "receive_errs",
        "transmit_errs",
        "receive_drop",
        "transmit_drop",
        "receive_fifo",
        "transmit_fifo",
        "receive_frame",
        "transmit_colls",
        "receive_compressed",
        "transmit_compressed",
        "receive_multicast",
        "transmit_carrier",
    ] {
        let name = format!("node_network_{metric}_total");
        family(&mut s, &name, "counter", "Network device statistic.");
        for d in netdevs {
            let _ = writeln!(s, "{name}{{device=\"{d}\"}} {}", val().floor());
            n += 1;
        }
    }

    family(
        &mut s,
        "node_interrupts_total",
        "counter",
        "Interrupt details.",
    );
    for irq in 0..60 {
        for cpu in 0..16 {
            let _ = writeln!(
                s,
                "node_interrupts_total{{cpu=\"{cpu}\",devices=\"nvme0q{irq}\",type=\"{}\"}} {}",
                irq + 24,
                val().floor()
            );
            n += 1;
        }
    }

    family(&mut s, "node_systemd_unit_state", "gauge", "Systemd unit");
    for unit in 0..100 {
        for state in ["activating", "active", "deactivating", "failed", "inactive"] {
            let on = if state == "active" { 1 } else { 0 };
            let _ = writeln!(
                s,
                "node_systemd_unit_state{{name=\"unit-{unit}.service\",state=\"{state}\",type=\"simple\"}} {on}"
            );
            n += 1;
        }
    }

    family(
        &mut s,
        "prometheus_http_request_duration_seconds",
        "histogram",
        "Histogram of latencies for HTTP requests.",
    );
    for h in 0..30 {
        let handler = format!("/api/v1/handler_{h}");
        let mut cum = 0.0;
        for le in [
            "0.1", "0.2", "0.4", "1", "3", "8", "20", "60", "120", "+Inf",
        ] {
            cum += val().floor() % 100.0;
            let _ = writeln!(s, "prometheus_http_request_duration_seconds_bucket{{handler=\"{handler}\",le=\"{le}\"}} {cum}");
            n += 1;
        }
        let _ = writeln!(
            s,
            "prometheus_http_request_duration_seconds_sum{{handler=\"{handler}\"}} {}",
            val()
        );
        let _ = writeln!(
            s,
            "prometheus_http_request_duration_seconds_count{{handler=\"{handler}\"}} {cum}"
        );
        n += 2;
    }

    for i in 0..200 {
        let name = format!("node_vmstat_counter_{i}");
        family(&mut s, &name, "untyped", "/proc/vmstat information field.");
        let _ = writeln!(s, "{name} {}", val().floor());
        n += 1;
    }
    (s, n)
}

fn bench(c: &mut Criterion) {
    let (text, n) = node_exporter_payload();
    let parsed = parse(&text, None).expect("payload parses");
    assert_eq!(parsed.samples.len(), n);
    let om = format!("{text}# EOF\n").replace("untyped", "unknown");
    let om_ct = Some("application/openmetrics-text; version=1.0.0");

    let mut group = c.benchmark_group("scrape");
    group.throughput(Throughput::Elements(n as u64));
    group.bench_function("parse_text", |b| b.iter(|| parse(black_box(&text), None)));
    let mut cache = SeriesCache::new();
    group.bench_function("parse_text_cached", |b| {
        b.iter(|| parse_cached(black_box(&text), None, &mut cache))
    });
    group.bench_function("parse_openmetrics", |b| {
        b.iter(|| parse(black_box(&om), om_ct))
    });
    let mut cache = SeriesCache::new();
    group.bench_function("parse_openmetrics_cached", |b| {
        b.iter(|| parse_cached(black_box(&om), om_ct, &mut cache))
    });

    // Parse and encode: what one core turns into request bytes per second.
    let external = Labels::from_pairs([("cluster", "edge-1")]).expect("valid labels");
    let mut encoder = Encoder::new();
    let mut buf = Vec::new();
    let mut cache = SeriesCache::new();
    group.bench_function("parse_encode_cached", |b| {
        b.iter(|| {
            let e = parse_cached(black_box(&text), None, &mut cache).expect("parses");
            let samples = e.to_samples(1_700_000_000_000);
            encoder
                .encode(&samples, &external, &mut buf)
                .expect("encodes");
            buf.len()
        })
    });
    let target = Labels::from_pairs([("job", "node"), ("instance", "127.0.0.1:9100")])
        .expect("valid labels");
    let mut state = TargetState::new(target, TargetOptions::default());
    let mut ts = 1_700_000_000_000i64;
    let mut out = Vec::new();
    group.bench_function("scrape_ingest_encode", |b| {
        b.iter(|| {
            ts += 1000;
            out.clear();
            let (summary, _) = state.ingest(black_box(text.as_bytes()), None, ts, &mut out);
            state.report(&summary, ts, std::time::Duration::ZERO, &mut out);
            encoder.encode(&out, &external, &mut buf).expect("encodes");
            buf.len()
        })
    });

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, text.as_bytes()).expect("gzip into memory");
    let compressed = gz.finish().expect("gzip into memory");
    let mut body = Vec::with_capacity(text.len());
    group.bench_function("gzip_decode", |b| {
        b.iter(|| {
            let mut decoder = GzipDecoder::new(std::mem::take(&mut body), u64::MAX);
            for chunk in black_box(&compressed).chunks(16 << 10) {
                decoder.push(chunk).expect("decodes");
            }
            body = decoder.finish().expect("decodes");
            body.clear();
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
