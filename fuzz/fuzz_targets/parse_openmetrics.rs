//! Fuzzes the OpenMetrics parser with arbitrary bytes.
//!
//! Run from the repository root (needs a nightly toolchain and `cargo install cargo-fuzz`):
//!
//! ```sh
//! cargo +nightly fuzz run parse_openmetrics -- -max_len=65536
//! ```
#![no_main]

use libfuzzer_sys::fuzz_target;
use pushprobe::scrape::parse_bytes;

fuzz_target!(|data: &[u8]| {
    let _ = parse_bytes(data, Some("application/openmetrics-text; version=1.0.0"));
});
