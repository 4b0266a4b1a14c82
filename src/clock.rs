//! Wall-clock time as Prometheus timestamps.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Longest step between the instants periodic jobs start at (see [`spread_offset`]).
pub const SPREAD_STEP: std::time::Duration = std::time::Duration::from_millis(50);

/// Where in its interval a periodic job runs: a fixed offset derived from `key`, in the middle
/// of one of the interval's steps of [`SPREAD_STEP`] (less for intervals under a second: a
/// twentieth of them).
///
/// Many probes with the same interval would otherwise all fire at the same instant, opening
/// every connection at once (a peak in memory and a burst for the targets); Prometheus spreads
/// scrapes the same way. The offset depends only on the key, so a job keeps its phase across
/// restarts, and keys that include the agent's identity keep two agents out of step.
///
/// The step groups the jobs that would start within it into one start: the runtime wakes up
/// once for the group, and their connects, requests and answers share its waits on the
/// sockets, instead of each job's run paying its own. At 200 probes a second that is 20
/// timer wake-ups instead of 200, with about ten runs starting together.
pub fn spread_offset(key: &str, interval: std::time::Duration) -> std::time::Duration {
    let interval_ms = interval.as_millis().min(u64::MAX as u128) as u64;
    let step_ms = (SPREAD_STEP.as_millis() as u64)
        .min(interval_ms / 20)
        .max(1);
    let slots = interval_ms / step_ms;
    if slots == 0 {
        return std::time::Duration::ZERO;
    }
    // FNV-1a: stable across Rust versions and platforms, unlike std's hasher.
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    // The middle of a step, not its start: no job starts within half a step of a multiple of
    // the interval, where two agents a few milliseconds apart could stamp one run on either
    // side of a deduplication boundary.
    std::time::Duration::from_millis(hash % slots * step_ms + step_ms / 2)
}

/// How long from `now_ms` until the next instant whose Unix time, modulo `interval`, is
/// `offset`: a periodic job started then runs at the same wall-clock phase whenever and on
/// whichever host it starts, as Prometheus aligns its scrapes.
pub fn aligned_delay(
    now_ms: i64,
    interval: std::time::Duration,
    offset: std::time::Duration,
) -> std::time::Duration {
    let interval_ms = interval.as_millis().min(i64::MAX as u128) as i64;
    if interval_ms == 0 {
        return std::time::Duration::ZERO;
    }
    let offset_ms = (offset.as_millis().min(i64::MAX as u128) as i64) % interval_ms;
    let phase = now_ms.rem_euclid(interval_ms);
    std::time::Duration::from_millis((offset_ms - phase).rem_euclid(interval_ms) as u64)
}

/// How long from now until the periodic job `key` is next at its phase: its
/// [`spread_offset`], fixed in wall-clock time ([`aligned_delay`]).
pub fn delay_to_phase(key: &str, interval: std::time::Duration) -> std::time::Duration {
    aligned_delay(now_ms(), interval, spread_offset(key, interval))
}

/// The ticker of a periodic job whose first run is `first` from now and whose later runs
/// follow every `interval` at the same phase.
///
/// A tick that comes late (a busy runtime, a run that overran its interval) is taken once and
/// the ticks it passed are skipped: the next one is back on the phase. tokio's default would
/// fire the missed ticks in a burst, and its `Delay` moves every later tick by the lateness of
/// one over 5 ms late, which drifts jobs off their phase and off the [`spread_offset`] grid,
/// where the jobs that share a step start together. Prometheus' scrape ticker also skips.
pub fn phase_ticker(
    first: std::time::Duration,
    interval: std::time::Duration,
) -> tokio::time::Interval {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + first, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    ticker
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn offsets_are_stable_within_the_interval_and_spread() {
        let interval = Duration::from_secs(1);
        assert_eq!(spread_offset("a", interval), spread_offset("a", interval));
        assert_eq!(spread_offset("a", Duration::ZERO), Duration::ZERO);
        let offsets: Vec<Duration> = (0..200)
            .map(|i| spread_offset(&format!("probe-{i}"), interval))
            .collect();
        assert!(offsets.iter().all(|o| *o < interval));
        // Starts fall in the middle of the 20 steps of the second, and 200 keys use nearly all
        // of them.
        assert!(offsets.iter().all(|o| o.as_millis() % 50 == 25));
        let used: std::collections::BTreeSet<&Duration> = offsets.iter().collect();
        assert!(used.len() >= 18, "{}", used.len());
    }

    #[test]
    fn short_intervals_keep_twenty_steps() {
        let interval = Duration::from_millis(100);
        let used: std::collections::BTreeSet<Duration> = (0..200)
            .map(|i| spread_offset(&format!("probe-{i}"), interval))
            .collect();
        assert!(used.iter().all(|o| *o < interval && o.as_millis() % 5 == 2));
        assert!(used.len() >= 18, "{}", used.len());
        // Below 20 ms there are no steps left to keep: milliseconds.
        assert!(spread_offset("a", Duration::from_millis(10)) < Duration::from_millis(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_tick_leaves_the_next_one_on_the_phase() {
        let start = tokio::time::Instant::now();
        let mut ticker = phase_ticker(Duration::from_millis(250), Duration::from_secs(1));
        assert_eq!(ticker.tick().await - start, Duration::from_millis(250));
        // The job is busy until 1.55 s: the tick of 1.25 s comes 300 ms late.
        tokio::time::advance(Duration::from_millis(1_300)).await;
        assert_eq!(ticker.tick().await - start, Duration::from_millis(1_250));
        // The next one is at the phase (2.25 s), not an interval after the late one (2.55 s).
        assert_eq!(ticker.tick().await - start, Duration::from_millis(2_250));
        // A job that overran whole intervals skips them instead of running in a burst.
        tokio::time::advance(Duration::from_millis(2_500)).await;
        assert_eq!(ticker.tick().await - start, Duration::from_millis(3_250));
        assert_eq!(ticker.tick().await - start, Duration::from_millis(5_250));
    }

    #[test]
    fn aligned_delays_land_on_the_same_wall_clock_phase() {
        let interval = Duration::from_secs(10);
        let offset = Duration::from_millis(2_500);
        // Two hosts starting at different times meet at the same instants.
        for now in [1_000_000_i64, 1_003_000, 1_002_500, 1_009_999, 0, -1] {
            let at = now + aligned_delay(now, interval, offset).as_millis() as i64;
            assert_eq!(at.rem_euclid(10_000), 2_500, "from {now}");
            assert!(at >= now && at - now < 10_000, "from {now}");
        }
        assert_eq!(
            aligned_delay(5, Duration::ZERO, offset),
            Duration::ZERO,
            "no interval, no wait"
        );
        // An offset of a whole interval or more wraps.
        assert_eq!(
            aligned_delay(0, interval, Duration::from_millis(12_000)),
            Duration::from_millis(2_000)
        );
    }
}
