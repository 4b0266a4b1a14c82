//! The running targets of one job, keyed by their final label set, and their reconciliation
//! with each discovery update: new targets start, removed ones stop (and end their series
//! with staleness markers), unchanged ones keep running untouched.
//!
//! The API is job-scoped and explicit — [`TargetManager::new`] with the function that starts
//! one target's task, [`TargetManager::update`], [`TargetManager::stop`] (with staleness) and
//! [`TargetManager::shutdown`] (the agent's own end) — so that a whole job can be started and
//! stopped again without the rest of the agent noticing. Every task is joined; none is left
//! detached, and a stopped target's state (its series, its connection) goes with its task.

use std::collections::HashMap;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Target;
use crate::series::Labels;

/// Starts one target's task. The token is the target's own, a child of the manager's
/// parent token: cancelled when discovery no longer lists the target (the task then ends its
/// series with staleness markers) or when the parent is (the agent's shutdown).
pub type StartTarget = Box<dyn FnMut(&Target, CancellationToken) -> JoinHandle<()> + Send>;

/// One running target.
struct Running {
    target: Target,
    removed: CancellationToken,
    task: JoinHandle<()>,
}

/// The running targets of one job.
pub struct TargetManager {
    config: String,
    parent: CancellationToken,
    start: StartTarget,
    running: HashMap<Labels, Running>,
    /// Tasks told to stop and not yet joined.
    stopping: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for TargetManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetManager")
            .field("config", &self.config)
            .field("running", &self.running.len())
            .finish_non_exhaustive()
    }
}

impl TargetManager {
    /// A manager for the job `config` with no target running yet; every target's token is a
    /// child of `parent`.
    pub fn new(
        config: impl Into<String>,
        parent: CancellationToken,
        start: StartTarget,
    ) -> TargetManager {
        TargetManager {
            config: config.into(),
            parent,
            start,
            running: HashMap::new(),
            stopping: Vec::new(),
        }
    }

    /// Targets running now.
    pub fn len(&self) -> usize {
        self.running.len()
    }

    /// Whether no target runs.
    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// The final label sets of the running targets.
    pub fn keys(&self) -> impl Iterator<Item = &Labels> {
        self.running.keys()
    }

    /// Makes the running set match `targets` (de-duplicated by label set): starts the new
    /// ones, stops the ones no longer listed (and a target whose URL or timing changed under
    /// the same labels, which is started again). Returns (started, stopped). Stopped tasks
    /// are joined by [`TargetManager::reap`].
    pub fn update(&mut self, targets: Vec<Target>) -> (usize, usize) {
        let mut wanted: HashMap<Labels, Target> = HashMap::with_capacity(targets.len());
        for t in targets {
            wanted.entry(t.labels.clone()).or_insert(t);
        }
        let mut stopped = 0;
        let gone: Vec<Labels> = self
            .running
            .iter()
            .filter(|(k, r)| wanted.get(*k) != Some(&r.target))
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            if let Some(r) = self.running.remove(&key) {
                tracing::debug!(config = %self.config, target = %key, "target removed; ending its series");
                r.removed.cancel();
                self.stopping.push(r.task);
                stopped += 1;
            }
        }
        let mut started = 0;
        for (key, target) in wanted {
            if self.running.contains_key(&key) {
                continue;
            }
            let removed = self.parent.child_token();
            let task = (self.start)(&target, removed.clone());
            tracing::debug!(config = %self.config, target = %key, "target added");
            self.running.insert(
                key,
                Running {
                    target,
                    removed,
                    task,
                },
            );
            started += 1;
        }
        (started, stopped)
    }

    /// Waits for the stopped targets' tasks (they queue their staleness markers first).
    pub async fn reap(&mut self) {
        for task in self.stopping.drain(..) {
            if let Err(e) = task.await {
                tracing::error!(config = %self.config, error = %e, "target task failed");
            }
        }
    }

    /// Stops every target as if discovery had dropped them all (staleness markers for every
    /// series), and waits for them.
    pub async fn stop(mut self) {
        self.update(Vec::new());
        self.reap().await;
    }

    /// Waits for every task once the parent token is cancelled (the tasks end on it, as
    /// static targets do).
    pub async fn shutdown(mut self) {
        self.reap().await;
        for (_, r) in self.running.drain() {
            if let Err(e) = r.task.await {
                tracing::error!(config = %self.config, error = %e, "target task failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::discovery::{build_targets, Group, LabelMap, TargetDefaults};

    fn targets(addresses: &[&str]) -> Vec<Target> {
        let addrs: Vec<String> = addresses.iter().map(|a| a.to_string()).collect();
        let g = Group::of("test", &addrs, LabelMap::new());
        build_targets(&[g], &[], &TargetDefaults::scrape("job")).targets
    }

    #[tokio::test]
    async fn update_starts_new_stops_removed_and_leaves_the_rest_running() {
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let l = log.clone();
        let mut m = TargetManager::new(
            "job",
            CancellationToken::new(),
            Box::new(move |t: &Target, removed: CancellationToken| {
                let (l, name) = (l.clone(), t.address.clone());
                l.lock().unwrap().push(format!("start {name}"));
                tokio::spawn(async move {
                    removed.cancelled().await;
                    l.lock().unwrap().push(format!("stale {name}"));
                })
            }),
        );
        assert_eq!(m.update(targets(&["a:1", "b:1"])), (2, 0));
        // Duplicates are one target; an unchanged one is not restarted.
        assert_eq!(m.update(targets(&["b:1", "c:1", "c:1"])), (1, 1));
        m.reap().await;
        assert_eq!(m.len(), 2);
        let mut seen = log.lock().unwrap().clone();
        seen.sort();
        assert_eq!(seen, ["stale a:1", "start a:1", "start b:1", "start c:1"]);
        m.stop().await;
        let seen = log.lock().unwrap().clone();
        assert!(seen.contains(&"stale b:1".to_string()) && seen.contains(&"stale c:1".to_string()));
    }
}
