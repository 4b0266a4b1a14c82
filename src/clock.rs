//! Wall-clock time as Prometheus timestamps.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Where in its interval a periodic job runs: a fixed offset derived from `key`.
///
/// Many probes with the same interval would otherwise all fire at the same instant, opening
/// every connection at once (a peak in memory and a burst for the targets); Prometheus spreads
/// scrapes the same way. The offset depends only on the key, so a job keeps its phase across
/// restarts, and keys that include the agent's identity keep two agents out of step.
pub fn spread_offset(key: &str, interval: std::time::Duration) -> std::time::Duration {
    let interval_ms = interval.as_millis().min(u64::MAX as u128) as u64;
    if interval_ms == 0 {
        return std::time::Duration::ZERO;
    }
    // FNV-1a: stable across Rust versions and platforms, unlike std's hasher.
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    std::time::Duration::from_millis(hash % interval_ms)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn offsets_are_stable_within_the_interval_and_spread() {
        let interval = Duration::from_secs(10);
        assert_eq!(spread_offset("a", interval), spread_offset("a", interval));
        assert_eq!(spread_offset("a", Duration::ZERO), Duration::ZERO);
        let offsets: std::collections::BTreeSet<Duration> = (0..200)
            .map(|i| spread_offset(&format!("probe-{i}"), interval))
            .collect();
        assert!(offsets.iter().all(|o| *o < interval));
        // 200 keys over 10,000 possible milliseconds: nearly all distinct, and both halves used.
        assert!(offsets.len() > 190, "{}", offsets.len());
        assert!(
            offsets.iter().any(|o| *o < interval / 2) && offsets.iter().any(|o| *o >= interval / 2)
        );
    }
}
