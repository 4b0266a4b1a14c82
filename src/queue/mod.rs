//! The buffer between the probes and a remote-write endpoint.
//!
//! Each endpoint reads from a [`Queue`]: samples are appended in the order they were measured,
//! handed to the sender oldest first with [`Queue::peek`], and released with [`Queue::ack`] only
//! once the receiver answered. Every sample gets a sequence number when appended; an ack names
//! the last number it releases, so dropping samples while a batch is in flight never releases
//! the wrong ones. Appends may say where their samples come from ([`Origin`]): a full
//! [`memory::MemoryQueue`], the bounded in-memory implementation, drops from the source holding
//! the most rather than from whoever is oldest. [`disk::DiskLog`] is the durable one, shared by
//! all endpoints and bounded in bytes.

pub mod disk;
pub mod live;
pub mod memory;

use std::ops::Range;
use std::sync::Arc;

use crate::series::Sample;

/// A sample's position in a queue: strictly increasing in append order.
pub type Seq = u64;

/// Oldest unacknowledged samples, as handed to a sender.
///
/// The samples sit in runs of shared storage: a memory queue hands out what it holds without
/// copying each sample, which would touch every label set's reference count twice more.
#[derive(Debug, Clone)]
pub struct Batch {
    runs: Vec<Run>,
    len: usize,
    seqs: Seqs,
    /// Sequence number of the last sample read (at least the last in the batch):
    /// acknowledging it releases the batch.
    pub last_seq: Seq,
}

/// Part of a shared vector of samples.
#[derive(Debug, Clone)]
struct Run {
    samples: Arc<Vec<Sample>>,
    range: Range<usize>,
}

impl Run {
    fn as_slice(&self) -> &[Sample] {
        self.samples.get(self.range.clone()).unwrap_or_default()
    }
}

/// Iterator over a [`Batch`]'s samples, in append order.
#[derive(Debug, Clone)]
pub struct Iter<'a> {
    runs: std::slice::Iter<'a, Run>,
    run: std::slice::Iter<'a, Sample>,
    left: usize,
}

impl<'a> Iterator for Iter<'a> {
    type Item = &'a Sample;

    fn next(&mut self) -> Option<&'a Sample> {
        loop {
            if let Some(s) = self.run.next() {
                self.left = self.left.saturating_sub(1);
                return Some(s);
            }
            self.run = self.runs.next()?.as_slice().iter();
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for Iter<'_> {}

/// Sequence numbers of a batch's samples: increasing, and not always contiguous (a disk queue
/// skips corrupt and too-old samples), so a sender can tell which ones another lane already
/// delivered.
#[derive(Debug, Clone)]
enum Seqs {
    /// From this number on, one per sample.
    From(Seq),
    /// One per sample.
    Listed(Vec<Seq>),
    /// One per run: the number of the run's first sample, the rest following it.
    Runs(Vec<Seq>),
}

impl Batch {
    /// A batch of `samples` numbered `seqs` (one each, increasing), released by `last_seq`.
    pub fn new(samples: Vec<Sample>, seqs: Vec<Seq>, last_seq: Seq) -> Batch {
        debug_assert_eq!(samples.len(), seqs.len());
        let len = samples.len();
        Batch {
            runs: vec![Run {
                range: 0..len,
                samples: Arc::new(samples),
            }],
            len,
            seqs: Seqs::Listed(seqs),
            last_seq,
        }
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Tells whether the batch holds no sample.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The samples in append order.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            runs: self.runs.iter(),
            run: [].iter(),
            left: self.len,
        }
    }

    /// Copies of the samples, in append order.
    pub fn to_vec(&self) -> Vec<Sample> {
        self.iter().cloned().collect()
    }

    /// The samples' sequence numbers, in order.
    pub fn seqs(&self) -> impl Iterator<Item = Seq> + '_ {
        let (from, listed, firsts) = match &self.seqs {
            Seqs::From(first) => (*first..*first + self.len as Seq, &[][..], &[][..]),
            Seqs::Listed(seqs) => (0..0, seqs.as_slice(), &[][..]),
            Seqs::Runs(firsts) => (0..0, &[][..], firsts.as_slice()),
        };
        let by_run = self
            .runs
            .iter()
            .zip(firsts)
            .flat_map(|(run, &first)| first..first + run.range.len() as Seq);
        from.chain(listed.iter().copied()).chain(by_run)
    }

    /// Keeps only the samples whose sequence number passes `keep`; returns how many went.
    /// Copies the samples kept only when some go.
    pub fn retain_seqs(&mut self, keep: impl Fn(Seq) -> bool) -> usize {
        let removed = self.seqs().filter(|&seq| !keep(seq)).count();
        if removed > 0 {
            let (samples, seqs): (Vec<Sample>, Vec<Seq>) = self
                .iter()
                .zip(self.seqs())
                .filter(|&(_, seq)| keep(seq))
                .map(|(s, seq)| (s.clone(), seq))
                .unzip();
            *self = Batch::new(samples, seqs, self.last_seq);
        }
        removed
    }
}

/// How long a full queue keeps a sample, relative to others.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Priority {
    /// Scraped samples and their staleness markers: dropped first.
    #[default]
    Bulk,
    /// What says whether a source works (the report series `up` and `scrape_*`, probe results,
    /// the agent's own metrics): dropped only when no bulk sample is left.
    Report,
}

impl Priority {
    /// Every priority, the first dropped first.
    pub(crate) const DROP_ORDER: [Priority; 2] = [Priority::Bulk, Priority::Report];

    /// Position in [`Priority::DROP_ORDER`].
    pub(crate) fn index(self) -> usize {
        match self {
            Priority::Bulk => 0,
            Priority::Report => 1,
        }
    }
}

/// Where appended samples come from, so that a full queue makes the source that fills it pay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Origin<'a> {
    /// The source's name (a scrape target's `job/address`, a probe's name); sources that share
    /// a name share their part of the queue.
    pub source: &'a str,
    /// How long the samples are kept when the queue is full.
    pub priority: Priority,
}

impl<'a> Origin<'a> {
    /// Samples of `source` at `priority`.
    pub fn new(source: &'a str, priority: Priority) -> Self {
        Origin { source, priority }
    }
}

/// What an append did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Samples accepted.
    pub appended: usize,
    /// Samples dropped to make room: the oldest of the sources holding the most (a memory
    /// queue), or the oldest of all (the disk log).
    pub dropped_oldest: usize,
    /// Sequence number of the first appended sample; the rest follow contiguously.
    pub first_seq: Seq,
}

/// Why a queue operation failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The backing storage failed.
    #[error("queue storage at {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A single sample encodes to more than a record may hold.
    #[error("a sample encodes to {len} bytes, more than the record limit {limit}")]
    RecordTooLarge {
        /// Encoded size of the record.
        len: u64,
        /// The limit (the segment size, at most 64 MiB).
        limit: u64,
    },
    /// Queue settings are out of range.
    #[error("queue setting {field}: {message}")]
    InvalidOptions {
        /// The setting.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
}

impl QueueError {
    /// Tells whether the storage had no room left (ENOSPC, EDQUOT). A disk queue counts the
    /// samples it could not store then as dropped (reason `disk_full`) and logs it, rate-limited.
    pub fn is_out_of_space(&self) -> bool {
        matches!(self, QueueError::Io { source, .. } if disk::full::is_out_of_space(source))
    }
}

/// A FIFO of samples with acknowledged release, one per remote-write endpoint.
pub trait Queue: Send {
    /// Appends samples in order; when full, drops others (the oldest first) and says how many.
    fn append(&mut self, samples: &[Sample]) -> Result<AppendOutcome, QueueError>;
    /// Like [`Queue::append`], for samples the caller is done with: a queue that keeps them
    /// in memory takes them as they are, without touching each label set's reference count.
    fn append_owned(&mut self, samples: Vec<Sample>) -> Result<AppendOutcome, QueueError> {
        self.append(&samples)
    }
    /// Like [`Queue::append_owned`], for samples of `origin`: a queue bounded per source drops
    /// from whoever holds the most; others ignore the origin.
    fn append_from(
        &mut self,
        origin: Origin<'_>,
        samples: Vec<Sample>,
    ) -> Result<AppendOutcome, QueueError> {
        let _ = origin;
        self.append_owned(samples)
    }
    /// Returns up to `max` of the oldest unacknowledged samples, without releasing them.
    fn peek(&mut self, max: usize) -> Result<Option<Batch>, QueueError>;
    /// Releases every sample up to and including `seq`.
    fn ack(&mut self, seq: Seq) -> Result<(), QueueError>;
    /// Number of samples not yet acknowledged.
    fn pending(&self) -> usize;
    /// Its endpoint was removed: nothing appended from now on is for it. A queue of its own
    /// gets nothing more anyway; one reading a log shared with others stops at its tail.
    fn end_input(&mut self) {}
    /// Its endpoint was removed and its drain is over: gives up what is still queued (a log
    /// shared with others no longer keeps it on disk; a memory queue frees it when dropped)
    /// and says how many samples that was.
    fn release(&mut self) -> usize {
        self.pending()
    }
}

/// A queue shared between the producer (the agent) and one sender, with a wake-up signal.
pub struct SharedQueue {
    queue: std::sync::Mutex<Box<dyn Queue>>,
    /// Signalled after every append, so a waiting sender wakes.
    pub appended: tokio::sync::Notify,
    /// Fresh samples sent ahead of the backlog, for receivers that accept out-of-order
    /// samples (see [`live`]).
    pub live: Option<live::LiveLane>,
}

impl SharedQueue {
    /// Wraps a queue.
    pub fn new(queue: Box<dyn Queue>) -> std::sync::Arc<Self> {
        Self::with_live_lane(queue, None)
    }

    /// Wraps a queue, with a live lane if the receiver accepts out-of-order samples.
    pub fn with_live_lane(
        queue: Box<dyn Queue>,
        live: Option<live::LiveLane>,
    ) -> std::sync::Arc<Self> {
        std::sync::Arc::new(SharedQueue {
            queue: std::sync::Mutex::new(queue),
            appended: tokio::sync::Notify::new(),
            live,
        })
    }

    /// Tells the sender that `samples`, numbered from `first_seq`, were appended (by this
    /// queue or by the shared log behind it): offers them to the live lane when the endpoint
    /// is behind, and wakes the sender.
    pub fn announce(&self, samples: &[Sample], first_seq: Seq) {
        if let Some(live) = &self.live {
            let backlog = self.pending().saturating_sub(samples.len());
            live.offer(samples, first_seq, backlog);
        }
        self.appended.notify_one();
    }

    /// Runs `f` with the queue locked. A panic while locked cannot leave a queue half-updated
    /// in a way later calls would misread, so a poisoned lock is taken over.
    pub fn with<R>(&self, f: impl FnOnce(&mut dyn Queue) -> R) -> R {
        let mut guard = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        f(guard.as_mut())
    }

    /// Appends and wakes the sender (use [`SharedQueue::announce`] when the append went to a
    /// log shared with other endpoints).
    pub fn append(&self, samples: &[Sample]) -> Result<AppendOutcome, QueueError> {
        let out = self.with(|q| q.append(samples));
        match &out {
            Ok(o) => self.announce(samples, o.first_seq),
            Err(_) => self.appended.notify_one(),
        }
        out
    }

    /// Like [`SharedQueue::append`], for samples the caller is done with.
    pub fn append_owned(&self, samples: Vec<Sample>) -> Result<AppendOutcome, QueueError> {
        if self.live.is_some() {
            // The live lane is offered the samples after they are queued.
            return self.append(&samples);
        }
        let out = self.with(|q| q.append_owned(samples));
        self.appended.notify_one();
        out
    }

    /// Appends samples of `origin` and wakes the sender: [`SharedQueue::append_owned`] for a
    /// queue that drops per source.
    pub fn append_from(
        &self,
        origin: Origin<'_>,
        samples: Vec<Sample>,
    ) -> Result<AppendOutcome, QueueError> {
        if self.live.is_none() {
            let out = self.with(|q| q.append_from(origin, samples));
            self.appended.notify_one();
            return out;
        }
        // The live lane is offered the samples after they are queued.
        let out = self.with(|q| q.append_from(origin, samples.clone()));
        match &out {
            Ok(o) => self.announce(&samples, o.first_seq),
            Err(_) => self.appended.notify_one(),
        }
        out
    }

    /// Number of samples not yet acknowledged.
    pub fn pending(&self) -> usize {
        self.with(|q| q.pending())
    }
}
