//! Service discovery: turns `static_configs`, `file_sd_configs`, `http_sd_configs` and
//! `dns_sd_configs` into target groups carrying Prometheus' `__meta_*` labels, and keeps them current.
//!
//! - this file: [`Group`] (targets and their labels, as every mechanism yields them), the
//!   [`Provider`] trait one mechanism implements, the refresh loop that runs a provider and
//!   keeps its last good answer, and [`run_job`], which merges the groups of a job's providers
//!   and hands the final targets to its [`TargetManager`](manager::TargetManager);
//! - [`target`]: groups plus `relabel_configs` into final targets (pure);
//! - [`file`](mod@file): target files (JSON or YAML, globs), re-read when they change;
//! - [`http`]: Prometheus' HTTP SD protocol over the pooled client;
//! - [`dns`]: SRV, A, AAAA and MX lookups with the project's DNS client;
//! - [`manager`]: the per-job set of running target tasks, reconciled on each update.
//!
//! A new mechanism is one more file: a type implementing [`Provider`], and one
//! more arm in [`providers`].

pub mod dns;
pub mod file;
pub mod http;
pub mod manager;
pub mod target;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::discovery::DiscoverySettings;
use crate::scrape::relabel::RelabelRule;
use crate::telemetry::{self, Telemetry};

pub use target::{build_targets, Built, Target, TargetDefaults};

/// Label names and values, sorted by name.
pub type LabelMap = BTreeMap<String, String>;

/// The label Prometheus keeps a target's address in.
pub const ADDRESS_LABEL: &str = "__address__";

/// Targets that share labels, as one source (a file's entry, an HTTP SD answer's entry, one
/// `static_configs` table) lists them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Group {
    /// Where the group comes from (`file.json:0`, the SD URL and index), for logs.
    pub source: String,
    /// One label map per target, each with at least `__address__`.
    pub targets: Vec<LabelMap>,
    /// Labels every target of the group gets (a target's own labels win).
    pub labels: LabelMap,
}

impl Group {
    /// A group of `addresses` with `labels`.
    pub fn of(source: impl Into<String>, addresses: &[String], labels: LabelMap) -> Group {
        Group {
            source: source.into(),
            targets: addresses
                .iter()
                .map(|a| LabelMap::from([(ADDRESS_LABEL.to_string(), a.clone())]))
                .collect(),
            labels,
        }
    }
}

/// What one refresh of a provider found.
#[derive(Debug, Default)]
pub struct Refreshed {
    /// The provider's whole current set; `None`: nothing changed, or the refresh failed and
    /// the last good set stays.
    pub groups: Option<Vec<Group>>,
    /// What went wrong, each naming its file or URL (and line and column); each is counted.
    pub errors: Vec<String>,
}

/// One discovery mechanism of one job.
pub trait Provider: Send {
    /// The `mechanism` label of its failures: `static`, `file`, `http`, `dns`.
    fn mechanism(&self) -> &'static str;
    /// How long to wait between refreshes.
    fn interval(&self) -> Duration;
    /// Looks again; called right away, then every [`Provider::interval`].
    fn refresh(&mut self) -> BoxFuture<'_, Refreshed>;
}

/// Why a provider could not be built.
#[derive(Debug, thiserror::Error)]
#[error("{config}: {mechanism} discovery: {message}")]
pub struct ProviderError {
    /// The job or probe name.
    pub config: String,
    /// `file`, `http`.
    pub mechanism: &'static str,
    /// What went wrong.
    pub message: String,
}

/// Builds the dynamic providers of `discovery` (static groups need none).
pub fn providers(
    config: &str,
    discovery: &DiscoverySettings,
) -> Result<Vec<Box<dyn Provider>>, ProviderError> {
    let mut out: Vec<Box<dyn Provider>> = Vec::new();
    for f in &discovery.files {
        out.push(Box::new(file::FileProvider::new(f.clone())));
    }
    for h in &discovery.http {
        let p = http::HttpProvider::new(h.clone()).map_err(|message| ProviderError {
            config: config.to_string(),
            mechanism: "http",
            message,
        })?;
        out.push(Box::new(p));
    }
    for d in &discovery.dns {
        out.push(Box::new(dns::DnsProvider::new(d.clone())));
    }
    Ok(out)
}

/// Refreshes `provider` now and every interval until `shutdown`, sending each changed set to
/// `tx` as slot `slot`. A failure is logged and counted, and the last good set stays.
async fn provider_loop(
    mut provider: Box<dyn Provider>,
    slot: usize,
    config: String,
    tx: mpsc::Sender<(usize, Vec<Group>)>,
    telemetry: Arc<Telemetry>,
    shutdown: CancellationToken,
) {
    let mechanism = provider.mechanism();
    let labels = [("mechanism", mechanism), ("config", config.as_str())];
    telemetry.add(telemetry::SD_REFRESH_FAILURES, &labels, 0.0);
    let mut ticker = tokio::time::interval(provider.interval());
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<Vec<Group>> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let refreshed = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = provider.refresh() => r,
        };
        for e in &refreshed.errors {
            telemetry.add(telemetry::SD_REFRESH_FAILURES, &labels, 1.0);
            tracing::warn!(config = %config, mechanism, error = %e, "discovery failed; keeping the last good targets");
        }
        if let Some(groups) = refreshed.groups {
            if last.as_ref() != Some(&groups) {
                last = Some(groups.clone());
                if tx.send((slot, groups)).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Runs the discovery of one job (a `[[scrape]]` or a `[[probe]]`) until `shutdown`: its
/// providers refresh, every change is merged with the static groups and turned into final
/// targets with `rules`, and `manager` starts, keeps or stops target tasks to match.
/// Returns once every provider and target task has ended.
pub async fn run_job(
    config: String,
    discovery: DiscoverySettings,
    providers: Vec<Box<dyn Provider>>,
    defaults: TargetDefaults,
    mut manager: manager::TargetManager,
    telemetry: Arc<Telemetry>,
    shutdown: CancellationToken,
) {
    let (tx, mut rx) = mpsc::channel(16);
    let mut slots: Vec<Vec<Group>> = vec![Vec::new(); providers.len()];
    let mut tasks = JoinSet::new();
    for (slot, p) in providers.into_iter().enumerate() {
        tasks.spawn(provider_loop(
            p,
            slot,
            config.clone(),
            tx.clone(),
            telemetry.clone(),
            shutdown.clone(),
        ));
    }
    drop(tx);
    let rules: Arc<[RelabelRule]> = discovery.relabel.clone();
    let reconcile = |slots: &[Vec<Group>], manager: &mut manager::TargetManager| {
        let groups: Vec<Group> = discovery
            .static_groups
            .iter()
            .chain(slots.iter().flatten())
            .cloned()
            .collect();
        let discovered: usize = groups.iter().map(|g| g.targets.len()).sum();
        telemetry.set(
            telemetry::SD_DISCOVERED_TARGETS,
            &[("config", config.as_str())],
            discovered as f64,
        );
        let built = build_targets(&groups, &rules, &defaults);
        for e in &built.errors {
            tracing::warn!(config = %config, error = %e, "discovered target dropped");
        }
        manager.update(built.targets)
    };
    reconcile(&slots, &mut manager);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            update = rx.recv() => match update {
                Some((slot, groups)) => {
                    if let Some(s) = slots.get_mut(slot) {
                        *s = groups;
                    }
                    let (started, stopped) = reconcile(&slots, &mut manager);
                    if started + stopped > 0 {
                        tracing::info!(config = %config, started, stopped, running = manager.len(), "targets changed");
                    }
                    manager.reap().await;
                }
                // Every provider ended (none configured): the targets stay as they are.
                None => { shutdown.cancelled().await; break; }
            },
        }
    }
    while tasks.join_next().await.is_some() {}
    manager.shutdown().await;
}

/// Asks every provider once and returns the final targets (for `once` and `config check`):
/// failures are logged and counted, and their providers contribute nothing.
pub async fn discover_once(
    config: &str,
    discovery: &DiscoverySettings,
    providers: Vec<Box<dyn Provider>>,
    defaults: &TargetDefaults,
    telemetry: &Telemetry,
) -> Vec<Target> {
    let mut groups = discovery.static_groups.clone();
    for mut p in providers {
        let refreshed = p.refresh().await;
        for e in &refreshed.errors {
            telemetry.add(
                telemetry::SD_REFRESH_FAILURES,
                &[("mechanism", p.mechanism()), ("config", config)],
                1.0,
            );
            tracing::warn!(config, mechanism = p.mechanism(), error = %e, "discovery failed");
        }
        groups.extend(refreshed.groups.into_iter().flatten());
    }
    let built = build_targets(&groups, &discovery.relabel, defaults);
    for e in &built.errors {
        tracing::warn!(config, error = %e, "discovered target dropped");
    }
    built.targets
}
