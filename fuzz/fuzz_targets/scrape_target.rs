//! Fuzzes a scrape target's state (target labels, relabeling, sample limit, timestamp order,
//! staleness) with a sequence of arbitrary bodies: the input is split at NUL bytes into up
//! to four scrapes, the first byte choosing the options.
//!
//! ```sh
//! cargo +nightly fuzz run scrape_target -- -max_len=65536
//! ```
//!
//! Whatever the bodies, nothing panics, every forwarded series has a metric name and the
//! target labels, and per series the timestamps never go backwards.
#![no_main]

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use pushprobe::scrape::relabel::{compile, Action, RelabelConfig, RelabelRule};
use pushprobe::scrape::target::{TargetOptions, TargetState};
use pushprobe::series::Labels;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    // Compiled once: a regex per run would make the fuzzer a regex-compile benchmark.
    static RULES: OnceLock<Arc<[RelabelRule]>> = OnceLock::new();
    let rules = RULES.get_or_init(|| {
        let rules = compile(&[RelabelConfig {
            regex: "drop_.*".into(),
            source_labels: vec!["__name__".into()],
            action: Action::Drop,
            ..RelabelConfig::default()
        }])
        .expect("constant rules compile");
        Arc::from(rules)
    });
    let opts = TargetOptions {
        honor_labels: flags & 1 != 0,
        honor_timestamps: flags & 2 != 0,
        sample_limit: if flags & 4 != 0 { 20 } else { 0 },
        rules: rules.clone(),
        normalize_le_quantile: flags & 8 != 0,
        keep_classic_histograms: flags & 32 != 0,
    };
    let target = Labels::from_pairs([("job", "fuzz"), ("instance", "h:1")]).expect("valid");
    let mut st = TargetState::new(target, opts);
    let mut out = Vec::new();
    let mut ts = 1_000;
    let openmetrics = flags & 16 != 0;
    let ct = if openmetrics {
        "application/openmetrics-text; version=1.0.0"
    } else {
        "text/plain; version=0.0.4"
    };
    for body in rest.split(|b| *b == 0).take(4) {
        ts += 1_000;
        let (summary, _) = st.ingest(body, Some(ct), ts, &mut out);
        st.report(&summary, ts, Duration::ZERO, &mut out);
    }
    st.end(ts + 1_000, &mut out);
    let mut last: HashMap<&Labels, i64> = HashMap::new();
    for s in &out {
        assert!(!s.labels.metric_name().is_empty());
        if flags & 1 == 0 {
            assert_eq!(s.labels.get("job"), Some("fuzz"));
        }
        let t = last.entry(&s.labels).or_insert(i64::MIN);
        assert!(s.timestamp_ms >= *t, "{} went back in time", s.labels);
        *t = s.timestamp_ms;
    }
});
