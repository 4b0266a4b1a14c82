//! The live lane: fresh samples that skip the backlog, for receivers that accept samples older
//! than a series' newest (VictoriaMetrics; Prometheus or Mimir with an out-of-order window).
//!
//! Every sample is appended to the endpoint's queue first, so the queue stays the single
//! source of truth and nothing is lost if the live lane fails. When the endpoint is behind by
//! at least one send window, the producer also offers each fresh batch to the live lane; the
//! sender posts it at once, and on success records its sequence numbers as delivered. The
//! in-order (catch-up) reader then skips those numbers when it reaches them, so the receiver
//! does not get them twice. The live lane is best effort: a batch it could not deliver is
//! simply forgotten, and the in-order reader sends it later from the queue.
//!
//! Memory is bounded: at most `capacity` samples wait in the lane (the oldest offered batch
//! is forgotten beyond it), and at most [`MAX_DELIVERED_RANGES`] delivered ranges are kept
//! (the lowest are forgotten beyond it: those samples are then sent twice, never lost).

use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::Seq;
use crate::series::Sample;

/// Most delivered ranges remembered above the in-order position.
pub const MAX_DELIVERED_RANGES: usize = 4096;

/// Which path a freshly appended batch takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Only through the queue, in order.
    InOrder,
    /// Also offered to the live lane, to be sent ahead of the backlog.
    Live,
}

/// Chooses the lane of a fresh batch: live only if the receiver accepts out-of-order samples,
/// answered the last request, and at least one whole send window (`window` samples) is queued
/// ahead of the batch; otherwise the in-order reader reaches it about as soon anyway.
pub fn choose_lane(
    accepts_out_of_order: bool,
    receiver_up: bool,
    backlog_before: usize,
    window: usize,
) -> Lane {
    if accepts_out_of_order && receiver_up && backlog_before >= window.max(1) {
        Lane::Live
    } else {
        Lane::InOrder
    }
}

/// A set of sequence numbers as disjoint, non-adjacent half-open ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeqRanges {
    /// start → end (exclusive).
    ranges: BTreeMap<Seq, Seq>,
}

impl SeqRanges {
    /// Adds `r`, merging with overlapping or adjacent ranges; keeps at most `max_ranges` by
    /// forgetting the lowest.
    pub fn insert(&mut self, r: Range<Seq>, max_ranges: usize) {
        if r.is_empty() {
            return;
        }
        let (mut start, mut end) = (r.start, r.end);
        // A range starting at or before `start` that reaches it.
        if let Some((&s, &e)) = self.ranges.range(..=start).next_back() {
            if e >= start {
                start = s;
                end = end.max(e);
                self.ranges.remove(&s);
            }
        }
        // Ranges starting inside (or right after) the new one.
        while let Some((&s, &e)) = self.ranges.range(start..=end).next() {
            end = end.max(e);
            self.ranges.remove(&s);
        }
        self.ranges.insert(start, end);
        while self.ranges.len() > max_ranges.max(1) {
            self.ranges.pop_first();
        }
    }

    /// Tells whether `seq` is in the set.
    pub fn contains(&self, seq: Seq) -> bool {
        self.ranges
            .range(..=seq)
            .next_back()
            .is_some_and(|(_, &e)| seq < e)
    }

    /// Forgets everything below `seq`.
    pub fn prune_below(&mut self, seq: Seq) {
        while let Some((&s, &e)) = self.ranges.first_key_value() {
            if e <= seq {
                self.ranges.remove(&s);
            } else {
                if s < seq {
                    self.ranges.remove(&s);
                    self.ranges.insert(seq, e);
                }
                break;
            }
        }
    }

    /// Number of disjoint ranges.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Tells whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

/// A fresh batch waiting in the live lane.
#[derive(Debug, Clone)]
pub struct LiveBatch {
    /// The samples, in append order.
    pub samples: Vec<Sample>,
    /// Sequence number of the first; the rest follow contiguously.
    pub first_seq: Seq,
}

impl LiveBatch {
    /// The batch's sequence numbers.
    pub fn seqs(&self) -> Range<Seq> {
        self.first_seq..self.first_seq + self.samples.len() as Seq
    }
}

#[derive(Debug, Default)]
struct LiveState {
    waiting: VecDeque<LiveBatch>,
    waiting_samples: usize,
    delivered: SeqRanges,
    /// Samples forgotten because the lane was full (they go in order instead).
    overflowed: u64,
}

/// One endpoint's live lane; see the module documentation.
#[derive(Debug)]
pub struct LiveLane {
    state: Mutex<LiveState>,
    /// Signalled when a batch is offered.
    pub offered: tokio::sync::Notify,
    /// Whether the receiver answered the last request (set by the sender).
    receiver_up: AtomicBool,
    /// Backlog (in samples) from which fresh batches take the live lane.
    window: usize,
    /// Most samples waiting in the lane.
    capacity: usize,
}

impl LiveLane {
    /// A lane taking fresh batches once `window` samples are queued ahead, holding at most
    /// `capacity` samples.
    pub fn new(window: usize, capacity: usize) -> Self {
        LiveLane {
            state: Mutex::new(LiveState::default()),
            offered: tokio::sync::Notify::new(),
            receiver_up: AtomicBool::new(true),
            window: window.max(1),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LiveState> {
        // Every update below is complete before anything can panic.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Offers a freshly appended batch whose first sample got `first_seq`, with `backlog`
    /// samples queued ahead of it; returns the lane it took.
    pub fn offer(&self, samples: &[Sample], first_seq: Seq, backlog: usize) -> Lane {
        let lane = choose_lane(
            true,
            self.receiver_up.load(Ordering::Relaxed),
            backlog,
            self.window,
        );
        if lane == Lane::InOrder || samples.is_empty() {
            return Lane::InOrder;
        }
        let mut st = self.lock();
        st.waiting.push_back(LiveBatch {
            samples: samples.to_vec(),
            first_seq,
        });
        st.waiting_samples += samples.len();
        while st.waiting_samples > self.capacity {
            match st.waiting.pop_front() {
                Some(old) => {
                    st.waiting_samples -= old.samples.len();
                    st.overflowed += old.samples.len() as u64;
                }
                None => break,
            }
        }
        drop(st);
        self.offered.notify_one();
        Lane::Live
    }

    /// Takes the oldest waiting batch.
    pub fn take(&self) -> Option<LiveBatch> {
        let mut st = self.lock();
        let b = st.waiting.pop_front()?;
        st.waiting_samples -= b.samples.len();
        Some(b)
    }

    /// Records that the receiver answered (accepted or refused for good) these samples.
    pub fn mark_delivered(&self, seqs: Range<Seq>) {
        self.lock().delivered.insert(seqs, MAX_DELIVERED_RANGES);
    }

    /// Removes from `batch` the samples the live lane already delivered, and forgets
    /// delivered ranges below the batch's start (the in-order reader is past them).
    /// Returns how many were removed.
    pub fn filter_delivered(&self, batch: &mut super::Batch) -> usize {
        let mut st = self.lock();
        if let Some(first) = batch.seqs().next() {
            st.delivered.prune_below(first);
        }
        if st.delivered.is_empty() {
            return 0;
        }
        batch.retain_seqs(|s| !st.delivered.contains(s))
    }

    /// Tells the lane whether the receiver answered the last request.
    pub fn set_receiver_up(&self, up: bool) {
        self.receiver_up.store(up, Ordering::Relaxed);
        if !up {
            // Waiting batches would only fail too; the queue holds them.
            let mut st = self.lock();
            st.waiting.clear();
            st.waiting_samples = 0;
        }
    }

    /// Samples waiting in the lane.
    pub fn waiting(&self) -> usize {
        self.lock().waiting_samples
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::queue::Batch;
    use crate::series::Labels;

    fn samples(n: usize) -> Vec<Sample> {
        let labels = Labels::with_name("m", [("a", "b")]).unwrap();
        (0..n)
            .map(|i| Sample {
                labels: labels.clone(),
                value: i as f64,
                timestamp_ms: i as i64,
            })
            .collect()
    }

    #[test]
    fn lane_is_live_only_for_out_of_order_receivers_that_are_up_and_behind() {
        assert_eq!(choose_lane(false, true, 1_000_000, 100), Lane::InOrder);
        assert_eq!(choose_lane(true, false, 1_000_000, 100), Lane::InOrder);
        assert_eq!(choose_lane(true, true, 99, 100), Lane::InOrder);
        assert_eq!(choose_lane(true, true, 100, 100), Lane::Live);
        // A zero window still needs something queued ahead.
        assert_eq!(choose_lane(true, true, 0, 0), Lane::InOrder);
    }

    #[test]
    fn ranges_merge_and_prune() {
        let mut r = SeqRanges::default();
        r.insert(10..20, 100);
        r.insert(20..25, 100);
        r.insert(30..40, 100);
        assert_eq!(r.len(), 2);
        assert!(r.contains(10) && r.contains(24) && !r.contains(25) && r.contains(39));
        r.insert(22..31, 100);
        assert_eq!(r.len(), 1);
        assert!(r.contains(27));
        r.prune_below(15);
        assert!(!r.contains(14) && r.contains(15));
        r.prune_below(100);
        assert!(r.is_empty());
        r.insert(5..5, 100);
        assert!(r.is_empty());
    }

    #[test]
    fn ranges_are_bounded_by_forgetting_the_lowest() {
        let mut r = SeqRanges::default();
        for i in 0..10 {
            r.insert(i * 10..i * 10 + 1, 3);
        }
        assert_eq!(r.len(), 3);
        assert!(!r.contains(0) && r.contains(90));
    }

    #[test]
    fn offered_batches_wait_when_behind_and_delivered_ones_are_skipped_in_order() {
        let lane = LiveLane::new(10, 100);
        assert_eq!(lane.offer(&samples(3), 0, 5), Lane::InOrder);
        assert_eq!(lane.offer(&samples(3), 50, 10), Lane::Live);
        let b = lane.take().unwrap();
        assert_eq!(b.seqs(), 50..53);
        lane.mark_delivered(b.seqs());
        let mut batch = Batch::new(samples(6), vec![48, 49, 50, 51, 52, 53], 53);
        assert_eq!(lane.filter_delivered(&mut batch), 3);
        assert_eq!(batch.seqs().collect::<Vec<_>>(), [48, 49, 53]);
        assert_eq!(
            batch.iter().map(|s| s.timestamp_ms).collect::<Vec<_>>(),
            [0, 1, 5]
        );
        assert_eq!(batch.last_seq, 53);
    }

    #[test]
    fn lane_is_bounded_and_emptied_when_the_receiver_is_down() {
        let lane = LiveLane::new(1, 5);
        lane.offer(&samples(3), 0, 10);
        lane.offer(&samples(3), 3, 10);
        assert_eq!(lane.waiting(), 3);
        assert_eq!(lane.take().unwrap().first_seq, 3);
        lane.offer(&samples(2), 6, 10);
        lane.set_receiver_up(false);
        assert_eq!(lane.waiting(), 0);
        assert_eq!(lane.offer(&samples(2), 8, 10), Lane::InOrder);
    }
}
