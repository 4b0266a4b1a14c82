//! Remote write 1.0 and 2.0, one file per role:
//! - [`encode`] (pure): samples into a snappy-compressed 1.0 `WriteRequest` body, or its
//!   protobuf whole or in pieces for zstd.
//! - [`compression`] (pure): snappy or zstd per endpoint (the receiver's handshake, the
//!   fallback when it refuses zstd), and the zstd compressor, fed whole or in pieces.
//! - [`encode_v2`] (pure): samples into a snappy-compressed 2.0 `Request` body, with the
//!   metadata and start times [`catalog`] keeps beside the samples.
//! - [`protocol`] (pure): which message an endpoint is sent, and what a 2.0 answer's
//!   `-Written` headers say (full, partial, fall back to 1.0).
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

pub mod catalog;
pub mod compression;
pub mod encode;
pub mod encode_v2;
mod events;
#[cfg(test)]
mod log_capture;
pub mod protocol;
pub mod retry;
pub mod sender;
pub(crate) mod service;
pub mod shard;
pub mod split;

pub use sender::{Drain, DrainHandle, Sender, SenderControl, SenderError};
