//! pushprobe: runs probes on hosts that Prometheus cannot scrape and pushes the results with
//! Prometheus remote write (and to a Pushgateway).
//!
//! The data's path, one module per stage:
//! - [`config`]: the TOML schema, one validator per section, into runtime settings (pure).
//! - [`probe`]: the probe kinds (`http`, `openai`, `icmp`, `tcp`, `dns`, `grpc`); each run records measurements into a
//!   registry. [`pricing`]: model prices and the cost of a probe's tokens (pure).
//! - [`scrape`]: scraping exporters: parsers, relabeling and target state (pure), and the
//!   scrape loops (I/O).
//! - [`discovery`]: static, file, HTTP and DNS service discovery into target groups, target
//!   relabeling into final targets (pure), and the per-job target manager.
//! - [`exec`]: `pushprobe exec`, a command run as a monitored job.
//! - [`series`]: label sets, samples, and the registry that turns measurements into samples.
//! - [`queue`]: the bounded buffer between the sources and each receiver (memory or disk).
//! - [`remote_write`]: encode (1.0 and 2.0), compression, retry and shard (pure), the HTTP
//!   service, its events, and the sender that pumps a queue to a receiver.
//! - [`pushgateway`]: text-format rendering (pure) and the Pushgateway sink.
//!
//! Shared rooms:
//! - [`http_client`]: the HTTP/1.1 client probes and scrapes share, timing every phase, and the
//!   pooled client the push sinks share; both route through the configured proxy.
//! - [`auth`]: the one place credentials become request headers (basic, bearer, OAuth2
//!   tokens, AWS SigV4 signatures with the AWS credentials chain), set on every attempt and
//!   re-read when their files rotate.
//! - [`dns`]: a DNS client asking one named server over UDP, TCP, or UDP then TCP when the
//!   answer is truncated, with typed errors; the `dns` probe and lookups use it.
//! - [`tls`]: rustls client configurations from `tls` keys. [`secret`]: the redacting type
//!   every password, token and key is held in.
//! - [`telemetry`]: the agent's own metrics, each declared once. [`clock`]: wall-clock time
//!   as Prometheus timestamps, and probe starts spread at fixed wall-clock phases.
//!
//! The edges:
//! - [`agent`]: wiring: schedules probes and scrapes, fans samples out to queues, drains on
//!   shutdown, applies a reload's plan. [`reload`]: what a new configuration changes (pure).
//! - [`listener`]: the optional health/metrics HTTP listener of `run` ([`exposition`] renders
//!   the text format).
//! - [`check`]: `pushprobe check`'s table and JSON renderings (pure).
//! - [`cli`]: commands and logging set-up; [`exit`]: the exit codes both it and [`exec`] use.
//!   [`startup_pages`]: gives back the code and constants only start-up used, before `run`
//!   starts its work.
//!
//! Where a change goes: a header on every write request → `remote_write/service.rs`; a probe
//! kind → a file in `probe/` and its schema in `config/`; a scrape config key →
//! `config/scrape.rs`; a self-metric → `telemetry.rs` (declared) and the stage that records it;
//! a key every probe kind shares → `config/probe.rs`'s `ProbeEntry`.

#![deny(unsafe_code)]

pub mod agent;
pub mod auth;
pub mod check;
pub mod cli;
pub mod clock;
pub mod config;
pub mod discovery;
pub mod dns;
pub mod exec;
pub mod exit;
pub mod exposition;
pub mod http_client;
pub mod listener;
pub mod pricing;
pub mod probe;
pub mod pushgateway;
pub mod queue;
pub mod reload;
pub mod remote_write;
pub mod scrape;
pub mod secret;
pub mod series;
pub mod startup_pages;
pub mod telemetry;
pub mod tls;

/// Generated remote-write protobuf messages (from `proto/remote.proto`).
pub mod proto {
    #![allow(missing_docs, clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/prometheus.rs"));
}

/// Generated protobuf exposition-format messages (from `proto/metrics.proto`).
pub mod metrics_proto {
    #![allow(missing_docs, clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/io.prometheus.client.rs"));
}

/// Generated remote-write 2.0 protobuf messages (from `proto/write_v2.proto`).
pub mod proto_v2 {
    #![allow(missing_docs, clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/io.prometheus.write.v2.rs"));
}
