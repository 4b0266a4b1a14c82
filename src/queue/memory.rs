//! A bounded in-memory queue that drops the oldest samples when full.

use std::collections::VecDeque;

use super::{AppendOutcome, Batch, Queue, QueueError, Seq};
use crate::series::Sample;

/// Bounded FIFO in memory; a restart loses what it holds.
#[derive(Debug)]
pub struct MemoryQueue {
    samples: VecDeque<Sample>,
    /// Sequence number of `samples[0]`.
    front_seq: Seq,
    capacity: usize,
}

impl MemoryQueue {
    /// Creates a queue holding at most `capacity` samples (at least one).
    pub fn new(capacity: usize) -> Self {
        MemoryQueue {
            samples: VecDeque::new(),
            front_seq: 0,
            capacity: capacity.max(1),
        }
    }
}

impl MemoryQueue {
    fn push_all(&mut self, samples: impl ExactSizeIterator<Item = Sample>) -> AppendOutcome {
        let first_seq = self.front_seq + self.samples.len() as Seq;
        let appended = samples.len();
        let mut dropped = 0;
        for s in samples {
            if self.samples.len() == self.capacity {
                self.samples.pop_front();
                self.front_seq += 1;
                dropped += 1;
            }
            self.samples.push_back(s);
        }
        AppendOutcome {
            appended,
            dropped_oldest: dropped,
            first_seq,
        }
    }
}

impl Queue for MemoryQueue {
    fn append(&mut self, samples: &[Sample]) -> Result<AppendOutcome, QueueError> {
        Ok(self.push_all(samples.iter().cloned()))
    }

    fn append_owned(&mut self, samples: Vec<Sample>) -> Result<AppendOutcome, QueueError> {
        Ok(self.push_all(samples.into_iter()))
    }

    fn peek(&mut self, max: usize) -> Result<Option<Batch>, QueueError> {
        let n = max.min(self.samples.len());
        if n == 0 {
            return Ok(None);
        }
        Ok(Some(Batch {
            samples: self.samples.iter().take(n).cloned().collect(),
            seqs: (self.front_seq..self.front_seq + n as Seq).collect(),
            last_seq: self.front_seq + n as Seq - 1,
        }))
    }

    fn ack(&mut self, seq: Seq) -> Result<(), QueueError> {
        // Samples at or below `seq` may already be gone (dropped when full): release only
        // what is still here.
        while self.front_seq <= seq && self.samples.pop_front().is_some() {
            self.front_seq += 1;
        }
        Ok(())
    }

    fn pending(&self) -> usize {
        self.samples.len()
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::series::Labels;

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
        assert_eq!(b.samples.len(), 2);
        assert_eq!(q.pending(), 3);
        q.ack(b.last_seq).unwrap();
        assert_eq!(q.pending(), 1);
        assert_eq!(q.peek(10).unwrap().unwrap().samples[0].timestamp_ms, 3);
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
            .samples
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

    /// Sequence numbers and timestamps of everything queued.
    fn contents(q: &mut MemoryQueue) -> (Vec<Seq>, Vec<i64>) {
        let b = q.peek(10).unwrap().unwrap();
        (b.seqs, b.samples.iter().map(|s| s.timestamp_ms).collect())
    }
}
