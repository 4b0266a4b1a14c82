//! Fuzzes the Prometheus text-format parser (and the series cache) with arbitrary bytes.
//!
//! Run from the repository root (needs a nightly toolchain and `cargo install cargo-fuzz`):
//!
//! ```sh
//! cargo +nightly fuzz run parse_text -- -max_len=65536
//! ```
//!
//! Anything that parses must also render and parse back to the same label sets.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pushprobe::scrape::{parse_bytes, parse_cached, render_text, SeriesCache};

fuzz_target!(|data: &[u8]| {
    let Ok(exposition) = parse_bytes(data, Some("text/plain; version=0.0.4")) else {
        return;
    };
    if let Ok(body) = std::str::from_utf8(data) {
        let mut cache = SeriesCache::new();
        let first = parse_cached(body, None, &mut cache).expect("parses with a cache too");
        let second = parse_cached(body, None, &mut cache).expect("parses from a warm cache");
        assert_eq!(first.samples.len(), second.samples.len());
    }
    let text = render_text(&exposition.families, &exposition.samples);
    let back = pushprobe::scrape::parse(&text, None).expect("rendered text parses");
    assert_eq!(back.samples.len(), exposition.samples.len());
});
