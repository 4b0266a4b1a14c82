//! Remote write 1.0: [`encode`] turns samples into a snappy-compressed `WriteRequest` (pure),
//! [`retry`] decides what a response means and how long to wait (pure), and [`sender`] moves
//! batches from a queue to one receiver over HTTP, in parallel shards ([`shard`]: pure).

pub mod encode;
mod events;
pub mod retry;
pub mod sender;
pub(crate) mod service;
pub mod shard;

pub use sender::{Sender, SenderError};
