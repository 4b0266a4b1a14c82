//! The buffer between the probes and a remote-write endpoint.
//!
//! Each endpoint reads from a [`Queue`]: samples are appended in the order they were measured,
//! handed to the sender oldest first with [`Queue::peek`], and released with [`Queue::ack`] only
//! once the receiver answered. Every sample gets a sequence number when appended; an ack names
//! the last number it releases, so dropping the oldest samples while a batch is in flight never
//! releases the wrong ones. [`memory::MemoryQueue`] is the bounded in-memory implementation.

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
