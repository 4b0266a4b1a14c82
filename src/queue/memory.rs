//! A bounded in-memory queue that drops the oldest samples when full.

use std::collections::VecDeque;
use std::sync::Arc;

use super::{AppendOutcome, Batch, Queue, QueueError, Run, Seq, Seqs};
use crate::series::Sample;

/// Most samples a run grows to by joining appends: a few requests' worth, so that joining
/// never copies much and a run is released soon after its samples are sent.
const JOIN_LIMIT: usize = 4096;

/// Bounded FIFO in memory; a restart loses what it holds.
///
/// Samples are kept as appended, one shared run per append, so a peek hands out runs rather
/// than copies. Dropping and releasing advance the front run; a run's storage goes when the
/// queue and every batch holding it are done with it.
#[derive(Debug)]
pub struct MemoryQueue {
    runs: VecDeque<Run>,
    /// Samples queued, over all runs.
    len: usize,
    /// Sequence number of the first queued sample.
    front_seq: Seq,
    capacity: usize,
}

impl MemoryQueue {
    /// Creates a queue holding at most `capacity` samples (at least one).
    pub fn new(capacity: usize) -> Self {
        MemoryQueue {
            runs: VecDeque::new(),
            len: 0,
            front_seq: 0,
            capacity: capacity.max(1),
        }
    }

    /// Queues `samples` (not empty) as the newest. A small append joins the newest run when
    /// no batch holds it and none of it was released, so probes' appends of a few samples do
    /// not each cost a run. A run keeps no more spare room than an eighth of its samples once
    /// it is closed (another run follows it), as a run can sit in the queue for as long as the
    /// receiver is away.
    fn push_run(&mut self, mut samples: Vec<Sample>) {
        let n = samples.len();
        self.len += n;
        if let Some(tail) = self.runs.back_mut() {
            if let Some(open) = Arc::get_mut(&mut tail.samples) {
                if tail.range.start == 0 && open.len() + n <= JOIN_LIMIT {
                    open.append(&mut samples);
                    tail.range.end = open.len();
                    return;
                }
                trim(open);
            }
        }
        trim(&mut samples);
        self.runs.push_back(Run {
            range: 0..n,
            samples: Arc::new(samples),
        });
    }

    /// Removes up to `n` of the oldest samples; returns how many went.
    fn release_front(&mut self, mut n: usize) -> usize {
        let mut released = 0;
        while n > 0 {
            let Some(front) = self.runs.front_mut() else {
                break;
            };
            let k = n.min(front.range.len());
            front.range.start += k;
            if front.range.is_empty() {
                self.runs.pop_front();
            }
            n -= k;
            released += k;
        }
        self.len -= released;
        self.front_seq += released as Seq;
        released
    }
}

/// Gives back a vector's spare room beyond an eighth of its length.
fn trim(samples: &mut Vec<Sample>) {
    if samples.capacity() > samples.len() + samples.len() / 8 {
        samples.shrink_to_fit();
    }
}

impl Queue for MemoryQueue {
    fn append(&mut self, samples: &[Sample]) -> Result<AppendOutcome, QueueError> {
        self.append_owned(samples.to_vec())
    }

    fn append_owned(&mut self, mut samples: Vec<Sample>) -> Result<AppendOutcome, QueueError> {
        let first_seq = self.front_seq + self.len as Seq;
        let appended = samples.len();
        let keep = appended.min(self.capacity);
        // The oldest queued samples make room; if the append alone is more than the queue
        // holds, its own first samples go too, at once.
        let mut dropped = self.release_front((self.len + keep).saturating_sub(self.capacity));
        if keep < appended {
            samples.drain(..appended - keep);
            self.front_seq += (appended - keep) as Seq;
            dropped += appended - keep;
        }
        if keep > 0 {
            self.push_run(samples);
        }
        Ok(AppendOutcome {
            appended,
            dropped_oldest: dropped,
            first_seq,
        })
    }

    fn peek(&mut self, max: usize) -> Result<Option<Batch>, QueueError> {
        let n = max.min(self.len);
        if n == 0 {
            return Ok(None);
        }
        let mut runs = Vec::new();
        let mut left = n;
        for run in &self.runs {
            if left == 0 {
                break;
            }
            let k = left.min(run.range.len());
            runs.push(Run {
                samples: run.samples.clone(),
                range: run.range.start..run.range.start + k,
            });
            left -= k;
        }
        Ok(Some(Batch {
            runs,
            len: n,
            seqs: Seqs::From(self.front_seq),
            last_seq: self.front_seq + n as Seq - 1,
        }))
    }

    fn ack(&mut self, seq: Seq) -> Result<(), QueueError> {
        // Samples at or below `seq` may already be gone (dropped when full): release only
        // what is still here.
        if seq >= self.front_seq {
            let n = usize::try_from((seq - self.front_seq).saturating_add(1)).unwrap_or(usize::MAX);
            self.release_front(n);
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
        assert_eq!(q.runs.iter().map(|r| r.samples.len()).sum::<usize>(), 10);
        // While a batch holds the newest run, a small append starts a run of its own, without
        // the spare room of the vector it came in.
        let held = q.peek(10).unwrap().unwrap();
        let mut few = Vec::with_capacity(1000);
        few.extend((25..28).map(sample));
        q.append_owned(few).unwrap();
        assert_eq!(q.runs.len(), 2);
        assert!(q.runs[1].samples.capacity() < 10);
        drop(held);
        // With no batch holding it, the next small append joins it.
        q.append_owned((28..30).map(sample).collect()).unwrap();
        assert_eq!(q.runs.len(), 2);
        assert_eq!(contents(&mut q).1, (20..30).collect::<Vec<_>>());
        // A run that grew by joining gives back its spare room when the next run starts.
        let mut q = MemoryQueue::new(10_000);
        for ts in 0..(JOIN_LIMIT as i64 / 3 + 1) {
            q.append_owned((3 * ts..3 * ts + 3).map(sample).collect())
                .unwrap();
        }
        assert_eq!(q.runs.len(), 2);
        let closed = &q.runs[0].samples;
        assert!(closed.capacity() <= closed.len() + closed.len() / 8);
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
