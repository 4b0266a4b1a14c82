//! A bounded in-memory queue that, when full, drops from the source holding the most.
//!
//! # Design
//!
//! **What it holds.** Samples sit in *runs*: shared vectors handed to the sender without
//! copying (see [`super::Batch`]). Each append is filed under its [`Origin`]: per source, one
//! *lane* per [`Priority`], each lane a FIFO of runs. A run covers consecutive sequence
//! numbers; a small append joins the lane's newest run when nothing was appended in between
//! and no batch holds that run, so a probe's few samples do not each cost a run.
//!
//! **Invariants.**
//! 1. Sequence numbers grow with every append and a queued sample keeps its number until it
//!    goes; the samples in number order are the appends in order, less what was dropped or
//!    released.
//! 2. A lane's runs are in number order and never overlap another lane's, so the queue in
//!    number order is the merge of its lanes by their runs' first numbers.
//! 3. After every append, `len <= capacity`.
//!
//! **The sender's contract.** [`Queue::peek`] hands out the lowest-numbered `max` samples (the
//! merge of invariant 2), and [`Queue::ack`] releases every queued sample numbered at or below
//! the one it names. Dropping takes samples out of the middle without renumbering the rest, so
//! every sample at or below a batch's `last_seq` that is still queued was in that batch, and an
//! ack never releases a sample it did not cover. Dropping removes samples and never reorders
//! them, so each series still leaves in timestamp order.
//!
//! **Dropping when full.** An append is taken in first; then, while more than `capacity`
//! samples are queued, one goes: of the lowest priority that has samples (bulk before report),
//! from the source holding the most samples of it (the greatest name on a tie), its oldest.
//! So a source that overflows the queue loses its own samples first, a source holding less
//! than the others loses nothing while they hold more, and report series go only once no bulk
//! sample is left. The same result is computed once per append, not once per sample: the
//! sources of a priority are cut down to a common level (see `cuts`), then the oldest of
//! each lane cut go, through the append's own first samples when its source is cut deepest.
//!
//! **Memory.** A queued sample costs `size_of::<Sample>()` (24 bytes: the label set's pointer,
//! the value, the timestamp); its label set is shared with the target or registry that
//! exposes the series, and only a queued sample of a series that ended meanwhile keeps one
//! alive alone. A run costs about 70 bytes more (its slot, the vector's header and count). Only
//! a lane's oldest run can have dropped or released samples still stored before its live ones;
//! they are given back as soon as they outnumber the live ones and no batch in flight shares
//! the run. So the storage stays under twice `capacity` samples, plus the window in flight:
//! at the default `queue_capacity` of 100 000, under 5 MB, plus label sets of ended series
//! (100–200 bytes each for typical exporters).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;

use super::{AppendOutcome, Batch, Origin, Priority, Queue, QueueError, Run, Seq, Seqs};
use crate::series::Sample;

/// Most samples a run grows to by joining appends: a few requests' worth, so that joining
/// never copies much and a run is released soon after its samples are sent.
const JOIN_LIMIT: usize = 4096;

/// Bounded in memory, fair per source when full; a restart loses what it holds.
///
/// Dropping and releasing advance the oldest runs of a lane; a run's storage goes when the
/// queue and every batch holding it are done with it.
#[derive(Debug)]
pub struct MemoryQueue {
    /// Sources with samples queued; a source goes when its last sample does.
    sources: Vec<Source>,
    /// Position in `sources`, by name.
    by_name: HashMap<Box<str>, usize>,
    /// Samples queued, over all sources.
    len: usize,
    /// Sequence number of the next sample appended.
    next_seq: Seq,
    capacity: usize,
}

/// One source's samples, a lane per priority (by [`Priority::index`]).
#[derive(Debug)]
struct Source {
    name: Box<str>,
    lanes: [Lane; 2],
}

impl Source {
    fn is_empty(&self) -> bool {
        self.lanes.iter().all(|l| l.len == 0)
    }
}

/// Runs of one source and priority, oldest first.
#[derive(Debug, Default)]
struct Lane {
    slots: VecDeque<Slot>,
    /// Samples queued, over the lane's runs.
    len: usize,
}

/// A queued run and the sequence number of its first sample.
#[derive(Debug)]
struct Slot {
    run: Run,
    first_seq: Seq,
}

impl Slot {
    /// Sequence number after the run's last sample.
    fn end_seq(&self) -> Seq {
        self.first_seq + self.run.range.len() as Seq
    }

    /// Forgets the run's first `k` samples (at most all of them). Their storage is given back
    /// once they outnumber the samples left and no batch shares the run.
    fn advance(&mut self, k: usize) {
        let range = &mut self.run.range;
        let k = k.min(range.len());
        range.start += k;
        self.first_seq += k as Seq;
        if range.start > range.len() && range.end > range.start {
            if let Some(stored) = Arc::get_mut(&mut self.run.samples) {
                stored.drain(..range.start);
                trim(stored);
                *range = 0..stored.len();
            }
        }
    }
}

impl Lane {
    /// Forgets up to `k` of the oldest samples; returns how many went.
    fn drop_front(&mut self, mut k: usize) -> usize {
        let mut gone = 0;
        while k > 0 {
            let Some(front) = self.slots.front_mut() else {
                break;
            };
            let n = k.min(front.run.range.len());
            front.advance(n);
            if front.run.range.is_empty() {
                self.slots.pop_front();
            }
            k -= n;
            gone += n;
        }
        self.len -= gone;
        gone
    }

    /// Forgets every sample numbered at or below `seq`; returns how many went.
    fn release_through(&mut self, seq: Seq) -> usize {
        let mut gone = 0;
        while let Some(front) = self.slots.front_mut() {
            if front.first_seq > seq {
                break;
            }
            let covered = usize::try_from(seq - front.first_seq)
                .map_or(usize::MAX, |n| n.saturating_add(1))
                .min(front.run.range.len());
            front.advance(covered);
            gone += covered;
            if !front.run.range.is_empty() {
                break;
            }
            self.slots.pop_front();
        }
        self.len -= gone;
        gone
    }

    /// Queues `samples` (not empty), numbered from `first_seq`, as the lane's newest. A small
    /// append joins the newest run when it follows it directly, no batch holds it and none of
    /// it was released. A run keeps no more spare room than an eighth of its samples once it
    /// is closed (another run follows it), as a run can sit in the queue for as long as the
    /// receiver is away.
    fn push(&mut self, mut samples: Vec<Sample>, first_seq: Seq) {
        let n = samples.len();
        self.len += n;
        if let Some(tail) = self.slots.back_mut() {
            let follows = tail.end_seq() == first_seq;
            if let Some(open) = Arc::get_mut(&mut tail.run.samples) {
                if follows && tail.run.range.start == 0 && open.len() + n <= JOIN_LIMIT {
                    open.append(&mut samples);
                    tail.run.range.end = open.len();
                    return;
                }
                trim(open);
            }
        }
        trim(&mut samples);
        self.slots.push_back(Slot {
            run: Run {
                range: 0..n,
                samples: Arc::new(samples),
            },
            first_seq,
        });
    }
}

/// Gives back a vector's spare room beyond an eighth of its length.
fn trim(samples: &mut Vec<Sample>) {
    if samples.capacity() > samples.len() + samples.len() / 8 {
        samples.shrink_to_fit();
    }
}

/// How many samples each holder gives up so that `take` go (at most what they hold together):
/// one at a time from whoever holds the most, the greatest name first on a tie. `held` lists
/// each holder's name and count; the answer is, per holder in the same order, how many go.
///
/// Computed at once: the largest level `L` such that cutting everyone down to `L` frees at
/// least `take`; everyone is cut to `L + 1`, and the few samples still missing come one each
/// from those left at `L + 1`, greatest name first.
fn cuts(held: &[(&str, usize)], take: usize) -> Vec<usize> {
    let total: usize = held.iter().map(|h| h.1).sum();
    let take = take.min(total);
    let mut cut = vec![0; held.len()];
    if take == 0 {
        return cut;
    }
    let above = |level: usize| -> usize { held.iter().map(|h| h.1.saturating_sub(level)).sum() };
    // above(0) = total >= take; find the largest level with above(level) >= take.
    let (mut lo, mut hi) = (0, held.iter().map(|h| h.1).max().unwrap_or(0));
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if above(mid) >= take {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let level = lo + 1;
    let mut missing = take - above(level);
    for (c, h) in cut.iter_mut().zip(held) {
        *c = h.1.saturating_sub(level);
    }
    if missing > 0 {
        let mut at_level: Vec<usize> = (0..held.len()).filter(|&i| held[i].1 >= level).collect();
        at_level.sort_by(|&a, &b| held[b].0.cmp(held[a].0));
        for i in at_level {
            if missing == 0 {
                break;
            }
            cut[i] += 1;
            missing -= 1;
        }
    }
    cut
}

impl MemoryQueue {
    /// Creates a queue holding at most `capacity` samples (at least one).
    pub fn new(capacity: usize) -> Self {
        MemoryQueue {
            sources: Vec::new(),
            by_name: HashMap::new(),
            len: 0,
            next_seq: 0,
            capacity: capacity.max(1),
        }
    }

    /// Position of the source named `name`, added if new.
    fn source(&mut self, name: &str) -> usize {
        if let Some(&i) = self.by_name.get(name) {
            return i;
        }
        let i = self.sources.len();
        self.sources.push(Source {
            name: name.into(),
            lanes: Default::default(),
        });
        self.by_name.insert(name.into(), i);
        i
    }

    /// Forgets sources with nothing queued, so that sources that come and go (targets
    /// rediscovered under new addresses) cost nothing once their samples left.
    fn forget_empty_sources(&mut self) {
        for i in (0..self.sources.len()).rev() {
            if !self.sources[i].is_empty() {
                continue;
            }
            let gone = self.sources.swap_remove(i);
            self.by_name.remove(&gone.name);
            if let Some(moved) = self.sources.get(i) {
                // It came from the end, already seen to hold samples.
                self.by_name.insert(moved.name.clone(), i);
            }
        }
    }

    /// Drops `over` samples as the design says, counting the `incoming` samples of source
    /// `from` at `priority` as queued behind that source's others. Returns how many of the
    /// incoming samples (its first ones) go.
    fn make_room(
        &mut self,
        mut over: usize,
        from: usize,
        priority: Priority,
        incoming: usize,
    ) -> usize {
        let mut incoming_cut = 0;
        for p in Priority::DROP_ORDER {
            if over == 0 {
                break;
            }
            let lane = p.index();
            let extra = |i: usize| {
                if i == from && p == priority {
                    incoming
                } else {
                    0
                }
            };
            let held: Vec<(usize, &str, usize)> = self
                .sources
                .iter()
                .enumerate()
                .map(|(i, s)| (i, &*s.name, s.lanes[lane].len + extra(i)))
                .filter(|h| h.2 > 0)
                .collect();
            let named: Vec<(&str, usize)> = held.iter().map(|h| (h.1, h.2)).collect();
            let cut = cuts(&named, over);
            let plan: Vec<(usize, usize)> = held.iter().map(|h| h.0).zip(cut).collect();
            for (i, k) in plan {
                if k == 0 {
                    continue;
                }
                let queued = self.sources[i].lanes[lane].drop_front(k);
                self.len -= queued;
                incoming_cut += k - queued;
                over -= k;
            }
        }
        incoming_cut
    }
}

impl Queue for MemoryQueue {
    fn append(&mut self, samples: &[Sample]) -> Result<AppendOutcome, QueueError> {
        self.append_owned(samples.to_vec())
    }

    fn append_owned(&mut self, samples: Vec<Sample>) -> Result<AppendOutcome, QueueError> {
        self.append_from(Origin::default(), samples)
    }

    fn append_from(
        &mut self,
        origin: Origin<'_>,
        mut samples: Vec<Sample>,
    ) -> Result<AppendOutcome, QueueError> {
        let first_seq = self.next_seq;
        let appended = samples.len();
        self.next_seq += appended as Seq;
        if appended == 0 {
            return Ok(AppendOutcome {
                appended,
                dropped_oldest: 0,
                first_seq,
            });
        }
        let from = self.source(origin.source);
        let over = (self.len + appended).saturating_sub(self.capacity);
        let mut own = 0;
        if over > 0 {
            own = self.make_room(over, from, origin.priority, appended);
            // The append's own first samples go at once, never stored.
            samples.drain(..own);
        }
        if own < appended {
            self.sources[from].lanes[origin.priority.index()].push(samples, first_seq + own as Seq);
            self.len += appended - own;
        }
        if over > 0 {
            self.forget_empty_sources();
        }
        Ok(AppendOutcome {
            appended,
            dropped_oldest: over,
            first_seq,
        })
    }

    fn peek(&mut self, max: usize) -> Result<Option<Batch>, QueueError> {
        let n = max.min(self.len);
        if n == 0 {
            return Ok(None);
        }
        // The lanes' runs merged by first sequence number (invariant 2).
        let mut next: BinaryHeap<Reverse<(Seq, usize, usize, usize)>> = BinaryHeap::new();
        for (i, source) in self.sources.iter().enumerate() {
            for (lane, l) in source.lanes.iter().enumerate() {
                if let Some(front) = l.slots.front() {
                    next.push(Reverse((front.first_seq, i, lane, 0)));
                }
            }
        }
        let (mut runs, mut firsts) = (Vec::new(), Vec::new());
        let mut left = n;
        while left > 0 {
            let Some(Reverse((first_seq, i, lane, at))) = next.pop() else {
                break;
            };
            let slots = &self.sources[i].lanes[lane].slots;
            let Some(slot) = slots.get(at) else {
                continue;
            };
            let k = left.min(slot.run.range.len());
            runs.push(Run {
                samples: slot.run.samples.clone(),
                range: slot.run.range.start..slot.run.range.start + k,
            });
            firsts.push(first_seq);
            left -= k;
            if let Some(after) = slots.get(at + 1) {
                next.push(Reverse((after.first_seq, i, lane, at + 1)));
            }
        }
        let len = n - left;
        let last_seq = match (firsts.last(), runs.last()) {
            (Some(&first), Some(run)) => first + run.range.len() as Seq - 1,
            _ => return Ok(None),
        };
        // One unbroken stretch of numbers, as when nothing was dropped from the middle, needs
        // no list.
        let seqs = match firsts.first() {
            Some(&first) if last_seq + 1 - first == len as Seq => Seqs::From(first),
            _ => Seqs::Runs(firsts),
        };
        Ok(Some(Batch {
            runs,
            len,
            seqs,
            last_seq,
        }))
    }

    fn ack(&mut self, seq: Seq) -> Result<(), QueueError> {
        // Samples at or below `seq` may already be gone (dropped when full): release only
        // what is still here.
        let mut released = 0;
        for source in &mut self.sources {
            for lane in &mut source.lanes {
                released += lane.release_through(seq);
            }
        }
        self.len -= released;
        if released > 0 {
            self.forget_empty_sources();
        }
        Ok(())
    }

    fn pending(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::series::Labels;
    use proptest::prelude::*;

    impl MemoryQueue {
        /// Every queued run, in sequence order.
        fn runs(&self) -> Vec<&Run> {
            let mut slots: Vec<&Slot> = self
                .sources
                .iter()
                .flat_map(|s| s.lanes.iter())
                .flat_map(|l| l.slots.iter())
                .collect();
            slots.sort_by_key(|s| s.first_seq);
            slots.into_iter().map(|s| &s.run).collect()
        }
    }

    fn sample(ts: i64) -> Sample {
        Sample {
            labels: Labels::with_name("m", [("a", "b")]).unwrap(),
            value: ts as f64,
            timestamp_ms: ts,
        }
    }

    #[test]
    fn peek_does_not_release_until_ack() {
        let mut q = MemoryQueue::new(10);
        q.append(&[sample(1), sample(2), sample(3)]).unwrap();
        let b = q.peek(2).unwrap().unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(q.pending(), 3);
        q.ack(b.last_seq).unwrap();
        assert_eq!(q.pending(), 1);
        assert_eq!(
            q.peek(10)
                .unwrap()
                .unwrap()
                .iter()
                .next()
                .unwrap()
                .timestamp_ms,
            3
        );
    }

    #[test]
    fn full_queue_drops_oldest_and_late_ack_releases_only_what_it_covered() {
        let mut q = MemoryQueue::new(3);
        q.append(&[sample(1), sample(2), sample(3)]).unwrap();
        let in_flight = q.peek(2).unwrap().unwrap();
        let out = q.append_owned(vec![sample(4), sample(5)]).unwrap();
        assert_eq!(out.dropped_oldest, 2);
        q.ack(in_flight.last_seq).unwrap();
        let left: Vec<i64> = q
            .peek(10)
            .unwrap()
            .unwrap()
            .iter()
            .map(|s| s.timestamp_ms)
            .collect();
        assert_eq!(left, [3, 4, 5]);
    }

    #[test]
    fn owned_and_copied_appends_agree_even_past_capacity() {
        let (mut copied, mut owned) = (MemoryQueue::new(3), MemoryQueue::new(3));
        for batch in [vec![1, 2], vec![3, 4, 5, 6, 7], vec![8]] {
            let samples: Vec<Sample> = batch.into_iter().map(sample).collect();
            let a = copied.append(&samples).unwrap();
            let b = owned.append_owned(samples).unwrap();
            assert_eq!(a, b);
            assert_eq!(contents(&mut copied), contents(&mut owned));
        }
        assert_eq!(contents(&mut owned), (vec![5, 6, 7], vec![6, 7, 8]));
    }

    #[test]
    fn runs_keep_no_more_than_the_queue_holds() {
        let mut q = MemoryQueue::new(10);
        // An append larger than the queue keeps only its newest samples.
        let out = q.append_owned((0..25).map(sample).collect()).unwrap();
        assert_eq!((out.first_seq, out.dropped_oldest), (0, 15));
        assert_eq!(contents(&mut q), ((15..25).collect(), (15..25).collect()));
        assert_eq!(q.runs().iter().map(|r| r.samples.len()).sum::<usize>(), 10);
        // While a batch holds the newest run, a small append starts a run of its own, without
        // the spare room of the vector it came in.
        let held = q.peek(10).unwrap().unwrap();
        let mut few = Vec::with_capacity(1000);
        few.extend((25..28).map(sample));
        q.append_owned(few).unwrap();
        assert_eq!(q.runs().len(), 2);
        assert!(q.runs()[1].samples.capacity() < 10);
        drop(held);
        // With no batch holding it, the next small append joins it.
        q.append_owned((28..30).map(sample).collect()).unwrap();
        assert_eq!(q.runs().len(), 2);
        assert_eq!(contents(&mut q).1, (20..30).collect::<Vec<_>>());
        // A run that grew by joining gives back its spare room when the next run starts.
        let mut q = MemoryQueue::new(10_000);
        for ts in 0..(JOIN_LIMIT as i64 / 3 + 1) {
            q.append_owned((3 * ts..3 * ts + 3).map(sample).collect())
                .unwrap();
        }
        assert_eq!(q.runs().len(), 2);
        let closed = &q.runs()[0].samples;
        assert!(closed.capacity() <= closed.len() + closed.len() / 8);
    }

    fn from(
        source: &str,
        priority: Priority,
        ts: std::ops::Range<i64>,
    ) -> (Origin<'_>, Vec<Sample>) {
        (Origin::new(source, priority), ts.map(sample).collect())
    }

    /// Timestamps of everything queued, in sequence order.
    fn queued(q: &mut MemoryQueue) -> Vec<i64> {
        q.peek(usize::MAX)
            .unwrap()
            .map(|b| b.iter().map(|s| s.timestamp_ms).collect())
            .unwrap_or_default()
    }

    #[test]
    fn an_overflowing_source_loses_its_own_samples_and_the_others_keep_all() {
        use Priority::Bulk;
        let mut q = MemoryQueue::new(10);
        let (o, s) = from("node/a:9100", Bulk, 0..2);
        q.append_from(o, s).unwrap();
        // Alone larger than the queue: only its newest samples stay, next to the others'.
        let (o, s) = from("huge/b:8080", Bulk, 100..120);
        let out = q.append_from(o, s).unwrap();
        assert_eq!((out.appended, out.dropped_oldest), (20, 12));
        assert_eq!(
            queued(&mut q),
            [0, 1, 112, 113, 114, 115, 116, 117, 118, 119]
        );
        // The other source's next samples push out the large one's, not its own.
        let (o, s) = from("node/a:9100", Bulk, 2..4);
        let out = q.append_from(o, s).unwrap();
        assert_eq!(out.dropped_oldest, 2);
        assert_eq!(queued(&mut q), [0, 1, 114, 115, 116, 117, 118, 119, 2, 3]);
        // Once both hold the same share, both give up samples, each its oldest.
        let (o, s) = from("node/a:9100", Bulk, 4..8);
        q.append_from(o, s).unwrap();
        assert_eq!(queued(&mut q), [115, 116, 117, 118, 119, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn report_samples_survive_bulk_eviction_and_go_last() {
        use Priority::{Bulk, Report};
        let mut q = MemoryQueue::new(10);
        for (source, priority, ts) in [
            ("node/a:9100", Bulk, 0..3),
            ("node/a:9100", Report, 3..5),
            ("http_probe", Report, 5..7),
            ("huge/b:8080", Bulk, 10..13),
            ("huge/b:8080", Report, 13..15),
        ] {
            let (o, s) = from(source, priority, ts);
            q.append_from(o, s).unwrap();
        }
        // Report samples push out bulk ones, here one each of the two targets holding the
        // same bulk share.
        assert_eq!(queued(&mut q), [1, 2, 3, 4, 5, 6, 11, 12, 13, 14]);
        // However much bulk arrives, report samples stay while any bulk is left.
        let (o, s) = from("huge/b:8080", Bulk, 100..150);
        q.append_from(o, s).unwrap();
        assert_eq!(queued(&mut q), [1, 2, 3, 4, 5, 6, 13, 14, 148, 149]);
        // Once no bulk is left, report samples go too: the oldest of the source holding the
        // most of them.
        let (o, s) = from("http_probe", Report, 7..12);
        let out = q.append_from(o, s).unwrap();
        assert_eq!(out.dropped_oldest, 5);
        assert_eq!(queued(&mut q), [3, 4, 6, 13, 14, 7, 8, 9, 10, 11]);
    }

    #[test]
    fn a_batch_across_a_dropped_stretch_is_numbered_and_released_exactly() {
        use Priority::Bulk;
        let mut q = MemoryQueue::new(6);
        for (source, ts) in [("a", 0..2), ("b", 2..8)] {
            let (o, s) = from(source, Bulk, ts);
            q.append_from(o, s).unwrap();
        }
        // "b" held the most: its two oldest went, from the middle of the numbers.
        let b = q.peek(4).unwrap().unwrap();
        assert_eq!(b.seqs().collect::<Vec<_>>(), [0, 1, 4, 5]);
        assert_eq!(
            b.iter().map(|s| s.timestamp_ms).collect::<Vec<_>>(),
            [0, 1, 4, 5]
        );
        assert_eq!(b.last_seq, 5);
        // Dropped while the batch is in flight: the ack releases what is left of it, only.
        let (o, s) = from("c", Bulk, 8..10);
        q.append_from(o, s).unwrap();
        assert_eq!(queued(&mut q), [0, 1, 6, 7, 8, 9]);
        q.ack(b.last_seq).unwrap();
        assert_eq!(queued(&mut q), [6, 7, 8, 9]);
        assert_eq!(q.pending(), 4);
        // Sources whose samples all left are forgotten.
        assert_eq!(q.sources.len(), 2);
        assert_eq!(q.by_name.len(), 2);
    }

    #[test]
    fn cuts_level_the_largest_holders_down() {
        for (held, take, want) in [
            (vec![("a", 5)], 2, vec![2]),
            (vec![("a", 3), ("b", 20)], 13, vec![0, 13]),
            (vec![("a", 3), ("b", 20)], 18, vec![0, 18]),
            // A tie at the level: the greatest name gives first.
            (vec![("a", 4), ("b", 4), ("c", 4)], 2, vec![0, 1, 1]),
            (vec![("a", 4), ("c", 4), ("b", 9)], 7, vec![0, 1, 6]),
            (vec![("a", 1), ("b", 1)], 5, vec![1, 1]),
            (vec![], 3, vec![]),
            (vec![("a", 7)], 0, vec![0]),
        ] {
            assert_eq!(cuts(&held, take), want, "{held:?} take {take}");
        }
    }

    /// Sequence numbers and timestamps of everything queued.
    fn contents(q: &mut MemoryQueue) -> (Vec<Seq>, Vec<i64>) {
        let b = q.peek(10).unwrap().unwrap();
        (
            b.seqs().collect(),
            b.iter().map(|s| s.timestamp_ms).collect(),
        )
    }

    #[derive(Debug, Clone)]
    enum Op {
        Append(usize),
        Peek(usize),
        /// Acknowledge the last batch peeked, if any.
        AckPeeked,
        /// Acknowledge up to this many sequence numbers past the front.
        AckAhead(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0usize..7).prop_map(Op::Append),
            (0usize..12).prop_map(Op::Peek),
            Just(Op::AckPeeked),
            (0u64..5).prop_map(Op::AckAhead),
        ]
    }

    /// The sources of the model; the last one only appends report samples.
    const SOURCES: [&str; 3] = ["huge", "node", "probe"];

    #[derive(Debug, Clone)]
    enum SourcedOp {
        /// Append this many samples from this source, bulk or report.
        Append(usize, bool, usize),
        /// Peek up to this many, then acknowledge the batch (or, if false, just hold it).
        Send(usize, bool),
    }

    fn sourced_op() -> impl Strategy<Value = SourcedOp> {
        prop_oneof![
            3 => (0usize..SOURCES.len(), any::<bool>(), 0usize..9)
                .prop_map(|(s, report, n)| SourcedOp::Append(s, report || s == 2, n)),
            1 => (0usize..12, any::<bool>()).prop_map(|(max, ack)| SourcedOp::Send(max, ack)),
        ]
    }

    /// A queued sample of the model: number, timestamp, source, report or not.
    type Entry = (Seq, i64, usize, bool);

    /// The design's rule, one sample at a time: the oldest sample of the lowest priority
    /// present, from the source holding the most of it (the greatest name on a tie).
    fn drop_one(model: &mut Vec<Entry>) {
        let report = !model.iter().any(|e| !e.3);
        let held = |s: usize| model.iter().filter(|e| e.2 == s && e.3 == report).count();
        let victim = (0..SOURCES.len())
            .filter(|&s| held(s) > 0)
            .max_by_key(|&s| (held(s), SOURCES[s]));
        if let Some(at) = victim.and_then(|v| model.iter().position(|e| e.2 == v && e.3 == report))
        {
            model.remove(at);
        }
    }

    proptest! {
        /// With several sources and both priorities, the queue drops exactly what dropping one
        /// sample at a time by the design's rule drops, and hands out the rest in number order
        /// however batches in flight cut across the gaps.
        #[test]
        fn drops_as_one_at_a_time_from_the_largest_source(
            capacity in 1usize..12,
            ops in proptest::collection::vec(sourced_op(), 0..60),
        ) {
            let mut q = MemoryQueue::new(capacity);
            let mut model: Vec<Entry> = Vec::new();
            let (mut next_seq, mut next_ts) = (0, 0i64);
            let mut held: Option<Batch> = None;
            for op in ops {
                match op {
                    SourcedOp::Append(s, report, n) => {
                        let priority = if report { Priority::Report } else { Priority::Bulk };
                        let samples = (next_ts..next_ts + n as i64).map(sample).collect();
                        let out = q.append_from(Origin::new(SOURCES[s], priority), samples).unwrap();
                        prop_assert_eq!(out.first_seq, next_seq);
                        for _ in 0..n {
                            model.push((next_seq, next_ts, s, report));
                            next_seq += 1;
                            next_ts += 1;
                        }
                        let before = model.len();
                        while model.len() > capacity {
                            drop_one(&mut model);
                        }
                        prop_assert_eq!(out.dropped_oldest, before - model.len());
                    }
                    SourcedOp::Send(max, ack) => {
                        let want: Vec<(Seq, i64)> = model.iter().take(max).map(|e| (e.0, e.1)).collect();
                        let Some(b) = q.peek(max).unwrap() else {
                            prop_assert!(want.is_empty());
                            continue;
                        };
                        let got: Vec<(Seq, i64)> = b.seqs().zip(b.iter().map(|s| s.timestamp_ms)).collect();
                        prop_assert_eq!(b.len(), got.len());
                        prop_assert_eq!(Some(b.last_seq), want.last().map(|w| w.0));
                        prop_assert_eq!(got, want);
                        if ack {
                            q.ack(b.last_seq).unwrap();
                            model.retain(|e| e.0 > b.last_seq);
                        }
                        held = Some(b);
                    }
                }
                prop_assert_eq!(q.pending(), model.len());
                let all: Vec<i64> = model.iter().map(|e| e.1).collect();
                prop_assert_eq!(queued(&mut q), all);
            }
            drop(held);
        }
    }

    proptest! {
        /// The queue behaves as a plain bounded FIFO of numbered samples, whatever runs its
        /// samples are kept in and however peeks and acknowledgements cut across them.
        #[test]
        fn behaves_as_a_bounded_fifo(capacity in 1usize..10, ops in proptest::collection::vec(op(), 0..60)) {
            let mut q = MemoryQueue::new(capacity);
            let mut model: VecDeque<(Seq, i64)> = VecDeque::new();
            let mut next_seq: Seq = 0;
            let mut next_ts = 0i64;
            let mut peeked: Option<Seq> = None;
            // The last batch peeked, held like a sender's window: appends cannot join the runs
            // it shares.
            let mut held: Option<Batch> = None;
            for op in ops {
                match op {
                    Op::Append(n) => {
                        let samples: Vec<Sample> = (next_ts..next_ts + n as i64).map(sample).collect();
                        let out = q.append_owned(samples).unwrap();
                        prop_assert_eq!(out.first_seq, next_seq);
                        prop_assert_eq!(out.appended, n);
                        let mut dropped = 0;
                        for _ in 0..n {
                            model.push_back((next_seq, next_ts));
                            next_seq += 1;
                            next_ts += 1;
                            if model.len() > capacity {
                                model.pop_front();
                                dropped += 1;
                            }
                        }
                        prop_assert_eq!(out.dropped_oldest, dropped);
                    }
                    Op::Peek(max) => {
                        let want: Vec<(Seq, i64)> = model.iter().take(max).copied().collect();
                        match q.peek(max).unwrap() {
                            None => prop_assert!(want.is_empty()),
                            Some(b) => {
                                let got: Vec<(Seq, i64)> =
                                    b.seqs().zip(b.iter().map(|s| s.timestamp_ms)).collect();
                                prop_assert_eq!(b.len(), got.len());
                                prop_assert_eq!(b.iter().len(), got.len());
                                prop_assert_eq!(Some(b.last_seq), want.last().map(|w| w.0));
                                prop_assert_eq!(got, want);
                                peeked = Some(b.last_seq);
                                held = Some(b);
                            }
                        }
                    }
                    Op::AckPeeked | Op::AckAhead(_) => {
                        let seq = match op {
                            Op::AckAhead(k) => model.front().map_or(next_seq, |f| f.0) + k,
                            _ => match peeked.take() {
                                Some(seq) => seq,
                                None => continue,
                            },
                        };
                        q.ack(seq).unwrap();
                        while model.front().is_some_and(|f| f.0 <= seq) {
                            model.pop_front();
                        }
                    }
                }
                prop_assert_eq!(q.pending(), model.len());
            }
            drop(held);
        }
    }
}
