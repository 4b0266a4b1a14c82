//! Remote write 1.0, one file per role:
//! - [`encode`] (pure): samples into a snappy-compressed `WriteRequest` body.
//! - [`compression`] (pure): snappy or zstd per endpoint (the receiver's handshake, the
//!   fallback when it refuses zstd), and the zstd compressor.
//! - [`retry`] (pure): what a response means and how long to wait; the backoff schedule and
//!   the jitter that spreads it.
//! - [`shard`] (pure): how many requests go in parallel, which one a series goes in, and the
//!   byte budget of catch-up traffic.
//! - [`split`] (pure): which parts of a request refused for some of its samples to send again,
//!   and how many requests that may cost.
//! - `service` (HTTP): an endpoint's client and headers, and one POST and its answer, made
//!   safe to log; the only file that knows reqwest.
//! - `events` (telemetry): every self-metric and log line a sender emits.
//! - [`sender`] (the pump): moves windows of samples from a queue to one receiver through the
//!   files above, in parallel shards, retrying until each request is answered for good.

pub mod compression;
pub mod encode;
mod events;
pub mod retry;
pub mod sender;
pub(crate) mod service;
pub mod shard;
pub mod split;

pub use sender::{Drain, DrainHandle, Sender, SenderError};
