//! Fuzzes the protobuf exposition parser with arbitrary bytes: nothing panics, and every
//! native histogram it forwards has spans that match its bucket counts.
//!
//! Run from the repository root (needs a nightly toolchain and `cargo install cargo-fuzz`):
//!
//! ```sh
//! cargo +nightly fuzz run parse_protobuf -- -max_len=65536
//! ```
#![no_main]

use libfuzzer_sys::fuzz_target;
use pushprobe::scrape::parse_bytes;
use pushprobe::series::native::NativeHistogram;

const CT: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

fuzz_target!(|data: &[u8]| {
    if let Ok(exposition) = parse_bytes(data, Some(CT)) {
        for s in &exposition.samples {
            assert!(s.labels.has_metric_name());
            if let Some(h) = &s.histogram {
                assert!(NativeHistogram::buckets(&h.positive_spans, &h.positive_deltas).is_some());
                assert!(NativeHistogram::buckets(&h.negative_spans, &h.negative_deltas).is_some());
            }
        }
    }
});
