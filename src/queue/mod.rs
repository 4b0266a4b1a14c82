//! The buffer between the probes and a remote-write endpoint.
//!
//! Each endpoint reads from a [`Queue`]: samples are appended in the order they were measured,
//! handed to the sender oldest first with [`Queue::peek`], and released with [`Queue::ack`] only
//! once the receiver answered. Every sample gets a sequence number when appended; an ack names
//! the last number it releases, so dropping the oldest samples while a batch is in flight never
//! releases the wrong ones. [`memory::MemoryQueue`] is the bounded in-memory implementation;
//! [`disk::DiskLog`] the durable one, shared by all endpoints.

pub mod disk;
pub mod memory;

use crate::series::Sample;

/// A sample's position in a queue: strictly increasing in append order.
pub type Seq = u64;

/// Oldest unacknowledged samples, as handed to a sender.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// Samples in append order.
    pub samples: Vec<Sample>,
    /// Sequence number of the last sample in `samples`: acknowledging it releases the batch.
    pub last_seq: Seq,
}

/// What an append did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Samples accepted.
    pub appended: usize,
    /// Oldest samples dropped to make room.
    pub dropped_oldest: usize,
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

/// A FIFO of samples with acknowledged release, one per remote-write endpoint.
pub trait Queue: Send {
    /// Appends samples in order; when full, drops the oldest and says how many.
    fn append(&mut self, samples: &[Sample]) -> Result<AppendOutcome, QueueError>;
    /// Returns up to `max` of the oldest unacknowledged samples, without releasing them.
    fn peek(&mut self, max: usize) -> Result<Option<Batch>, QueueError>;
    /// Releases every sample up to and including `seq`.
    fn ack(&mut self, seq: Seq) -> Result<(), QueueError>;
    /// Number of samples not yet acknowledged.
    fn pending(&self) -> usize;
}

/// A queue shared between the producer (the agent) and one sender, with a wake-up signal.
pub struct SharedQueue {
    queue: std::sync::Mutex<Box<dyn Queue>>,
    /// Signalled after every append, so a waiting sender wakes.
    pub appended: tokio::sync::Notify,
}

impl SharedQueue {
    /// Wraps a queue.
    pub fn new(queue: Box<dyn Queue>) -> std::sync::Arc<Self> {
        std::sync::Arc::new(SharedQueue {
            queue: std::sync::Mutex::new(queue),
            appended: tokio::sync::Notify::new(),
        })
    }

    /// Runs `f` with the queue locked. A panic while locked cannot leave a queue half-updated
    /// in a way later calls would misread, so a poisoned lock is taken over.
    pub fn with<R>(&self, f: impl FnOnce(&mut dyn Queue) -> R) -> R {
        let mut guard = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        f(guard.as_mut())
    }

    /// Appends and wakes the sender.
    pub fn append(&self, samples: &[Sample]) -> Result<AppendOutcome, QueueError> {
        let out = self.with(|q| q.append(samples));
        self.appended.notify_one();
        out
    }

    /// Number of samples not yet acknowledged.
    pub fn pending(&self) -> usize {
        self.with(|q| q.pending())
    }
}
