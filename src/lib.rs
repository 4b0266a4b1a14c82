//! pushprobe: runs probes on hosts that Prometheus cannot scrape and pushes the results with
//! Prometheus remote write (and to a Pushgateway).
//!
//! The data's path, one module per stage:
//! - [`config`]: the TOML schema and its validation into runtime settings.
//! - [`probe`]: one file per probe kind; each run records measurements into a registry.
//! - [`http_client`]: the HTTP/1.1 client probes and scrapes share, timing every phase.
//! - [`pricing`]: model prices and the cost of a probe's tokens (pure).
//! - [`series`]: label sets, samples, and the registry that turns measurements into samples.
//! - [`scrape`]: exposition-format parsers, a text renderer and metric relabeling (pure).
//! - [`queue`]: the bounded buffer between probes and each receiver.
//! - [`remote_write`]: encoding (pure), retry decisions (pure) and the HTTP sender.
//! - [`pushgateway`]: text-format rendering (pure) and the Pushgateway sink.
//! - [`listener`]: the optional health/metrics HTTP listener of `run` ([`exposition`] renders
//!   the text format).
//! - [`agent`]: wiring: schedules probes, fans samples out to queues, drains on shutdown.
//! - [`exec`]: `pushprobe exec`, a command run as a monitored job.
//! - [`check`]: `pushprobe check`'s table and JSON renderings (pure).
//! - [`cli`]: commands and logging set-up; [`exit`]: the exit codes both it and [`exec`] use.

#![deny(unsafe_code)]

pub mod agent;
pub mod auth;
pub mod check;
pub mod cli;
pub mod clock;
pub mod config;
pub mod exec;
pub mod exit;
pub mod exposition;
pub mod http_client;
pub mod listener;
pub mod pricing;
pub mod probe;
pub mod pushgateway;
pub mod queue;
pub mod remote_write;
pub mod scrape;
pub mod secret;
pub mod series;
pub mod telemetry;
pub mod tls;

/// Generated remote-write protobuf messages (from `proto/remote.proto`).
pub mod proto {
    #![allow(missing_docs, clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/prometheus.rs"));
}
