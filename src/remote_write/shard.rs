//! Pure scheduling decisions of a sender: how many parallel shards, which shard a series goes
//! to, and how long catch-up traffic waits for its byte budget.
//!
//! # Ordering with parallel shards
//!
//! A sender reads a *window* of up to `shards × max_samples_per_send` of the oldest queued
//! samples, splits it by series hash into one list per shard (each list keeps append order),
//! and sends the shards concurrently; within a shard, requests go one after another. The
//! window is acknowledged only when every shard's requests were answered (accepted, or refused
//! for good), and the next window is read only then. So:
//! - every series lives in exactly one shard of a window, and windows never overlap in time:
//!   per-series timestamp order holds at the receiver, whatever the shard count;
//! - a shard that is retrying holds the window (the other shards wait, idle), so a slow or
//!   failing request never lets later samples of its series overtake it;
//! - a crash or abort mid-window re-sends the whole window after restart: the shards that had
//!   been answered are sent twice (duplicates, which receivers accept or drop), nothing is lost.
//!
//! The shard count follows the backlog (one shard per full request queued, between
//! `min_shards` and `max_shards`), so a steady trickle uses one connection and a backlog after
//! an outage drains with all of them.

use std::hash::{Hash, Hasher};
use std::time::Duration;

use crate::series::Sample;

/// Shards for the next window: one per full request pending, within `[min, max]`.
///
/// A partial request does not get a shard of its own: a window one sample over a full
/// request would otherwise be split by series into two half-full requests, doubling the
/// request count of a steady flow that arrives in batches just over `max_per_send` (a
/// scrape of 2,000 series plus its report series). The samples left over lead the next
/// window.
pub fn shard_count(pending: usize, max_per_send: usize, min: usize, max: usize) -> usize {
    let max = max.max(1);
    let min = min.clamp(1, max);
    (pending / max_per_send.max(1)).clamp(min, max)
}

/// The shard of a series: a stable hash of its label set, modulo `shards`.
pub fn shard_of(sample: &Sample, shards: usize) -> usize {
    if shards <= 1 {
        return 0;
    }
    // `DefaultHasher::new()` has fixed keys: the same series maps to the same shard in every
    // window, which keeps each series' connection (and its order) stable.
    let mut h = std::hash::DefaultHasher::new();
    sample.labels.hash(&mut h);
    (h.finish() % shards as u64) as usize
}

/// Splits a window into `shards` lists by series, each in the window's order. Every sample
/// is in exactly one list. The lists hold references: copies would touch every sample's
/// label set (its reference count) twice more.
pub fn partition<'a>(
    samples: impl ExactSizeIterator<Item = &'a Sample>,
    shards: usize,
) -> Vec<Vec<&'a Sample>> {
    let shards = shards.max(1);
    if shards == 1 {
        return vec![samples.collect()];
    }
    let mut out: Vec<Vec<&Sample>> = (0..shards)
        .map(|_| Vec::with_capacity(samples.len() / shards + 1))
        .collect();
    // Consecutive samples often share one label set (one allocation): hash it once.
    let mut last: Option<(usize, usize)> = None;
    for s in samples {
        let ptr = s.labels.addr();
        let shard = match last {
            Some((p, shard)) if p == ptr => shard,
            _ => {
                let shard = shard_of(s, shards);
                last = Some((ptr, shard));
                shard
            }
        };
        out[shard].push(s);
    }
    out
}

/// A token bucket over bytes, as a pure function of time: `rate` bytes per second, holding
/// at most `burst` bytes of credit. A request larger than the credit goes into debt, and the
/// next requests wait until it is paid back, so the long-run rate holds for any request size.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    /// Time of the last update, on any monotonic scale.
    last: Option<Duration>,
}

impl TokenBucket {
    /// A full bucket allowing `bytes_per_second` (at least 1) with one second of burst.
    pub fn new(bytes_per_second: u64) -> Self {
        let rate = bytes_per_second.max(1) as f64;
        TokenBucket {
            rate,
            burst: rate,
            tokens: rate,
            last: None,
        }
    }

    /// Takes `bytes` at time `now` and returns how long the caller must wait before sending
    /// them (zero if the credit covers them).
    pub fn acquire(&mut self, now: Duration, bytes: u64) -> Duration {
        if let Some(last) = self.last {
            let elapsed = now.saturating_sub(last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        }
        self.last = Some(self.last.map_or(now, |l| l.max(now)));
        self.tokens -= bytes as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;
    use crate::series::Labels;

    fn window(series: &[usize]) -> Vec<Sample> {
        let labels: Vec<Labels> = (0..16)
            .map(|i| Labels::with_name("m", [("s", i.to_string())]).unwrap())
            .collect();
        series
            .iter()
            .enumerate()
            .map(|(i, &s)| Sample {
                labels: labels[s % 16].clone(),
                value: i as f64,
                timestamp_ms: i as i64,
            })
            .collect()
    }

    #[test]
    fn shard_count_follows_the_backlog_within_bounds() {
        assert_eq!(shard_count(0, 100, 1, 4), 1);
        assert_eq!(shard_count(99, 100, 1, 4), 1);
        assert_eq!(shard_count(100, 100, 1, 4), 1);
        // One full request and a few samples: one full request, not two half-full ones.
        assert_eq!(shard_count(105, 100, 1, 4), 1);
        assert_eq!(shard_count(199, 100, 1, 4), 1);
        assert_eq!(shard_count(200, 100, 1, 4), 2);
        assert_eq!(shard_count(1_000_000, 100, 1, 4), 4);
        assert_eq!(shard_count(0, 100, 2, 4), 2);
        // Nonsense bounds still give a usable count.
        assert_eq!(shard_count(500, 0, 0, 0), 1);
        assert_eq!(shard_count(500, 100, 9, 3), 3);
    }

    proptest! {
        #[test]
        fn partition_keeps_every_sample_once_and_each_series_in_order_in_one_shard(
            series in proptest::collection::vec(0usize..16, 0..300),
            shards in 1usize..8,
        ) {
            let w = window(&series);
            let parts = partition(w.iter(), shards);
            prop_assert_eq!(parts.len(), shards);
            let mut seen: Vec<i64> = parts.iter().flatten().map(|s| s.timestamp_ms).collect();
            seen.sort_unstable();
            prop_assert_eq!(seen, (0..w.len() as i64).collect::<Vec<_>>());
            let mut home: HashMap<String, usize> = HashMap::new();
            for (i, part) in parts.iter().enumerate() {
                // Append order within a shard, hence within each series.
                prop_assert!(part.windows(2).all(|p| p[0].timestamp_ms < p[1].timestamp_ms));
                for s in part {
                    let key = format!("{:?}", s.labels);
                    prop_assert_eq!(*home.entry(key).or_insert(i), i);
                }
            }
        }
    }

    #[test]
    fn partition_spreads_series_over_shards() {
        let series: Vec<usize> = (0..160).map(|i| i % 16).collect();
        let w = window(&series);
        let parts = partition(w.iter(), 4);
        assert!(parts.iter().filter(|p| !p.is_empty()).count() >= 2);
    }

    #[test]
    fn token_bucket_allows_a_burst_then_paces_to_the_rate() {
        let s = Duration::from_secs;
        let mut b = TokenBucket::new(1000);
        // One second of credit to start with.
        assert_eq!(b.acquire(s(10), 600), Duration::ZERO);
        assert_eq!(b.acquire(s(10), 400), Duration::ZERO);
        // Empty: 500 bytes must wait half a second.
        assert_eq!(b.acquire(s(10), 500), Duration::from_millis(500));
        // Half a second later the debt is paid; a second later 1000 bytes are available again.
        assert_eq!(b.acquire(Duration::from_millis(10_500), 0), Duration::ZERO);
        assert_eq!(b.acquire(s(12), 1000), Duration::ZERO);
        // A request larger than the burst goes into debt instead of never being allowed.
        assert_eq!(b.acquire(s(100), 3000), s(2));
        assert_eq!(b.acquire(s(101), 1000), s(2));
    }

    #[test]
    fn token_bucket_credit_is_capped_and_time_going_back_is_ignored() {
        let s = Duration::from_secs;
        let mut b = TokenBucket::new(100);
        assert_eq!(b.acquire(s(0), 100), Duration::ZERO);
        // An hour idle still gives only one second of credit.
        assert_eq!(b.acquire(s(3600), 100), Duration::ZERO);
        assert_eq!(b.acquire(s(3600), 100), s(1));
        // A clock reading from the past adds nothing.
        assert_eq!(b.acquire(s(3599), 0), s(1));
    }
}
