//! The label sets a target's series share, so that each series stores only what is its own:
//! the target labels (`job`, `instance`, …), and for a metric name that more than one series
//! has, that name together with the target labels.
//!
//! A node exporter's series are mostly members of names with many series (per CPU and mode,
//! per device, per histogram bucket), whose name would otherwise be stored once per series.
//! A name gets its shared set only when a second series has it: for a name with one series,
//! the set would cost more than it saves.

use hashbrown::HashTable;

use crate::series::{seeded_hash, Labels, METRIC_NAME_LABEL};

/// A target's per-name shared label sets, by metric name.
#[derive(Debug, Default)]
pub(super) struct SharedNames {
    table: HashTable<Name>,
}

#[derive(Debug)]
struct Name {
    /// Seeded hash of the name.
    hash: u64,
    /// The name's shared set (`__name__` and the target labels) when `shared`; before that,
    /// the label set of the name's first series (which carries the name for lookups).
    labels: Labels,
    shared: bool,
}

impl SharedNames {
    /// `labels` (a series' output label set, after relabeling) stored with what it shares:
    /// its name's shared set if it has every label of it, else the target labels if it has
    /// them all unchanged, else nothing. Equal to `labels` in every view.
    pub(super) fn share(&mut self, labels: &Labels, target: &Labels) -> Labels {
        let name = labels.metric_name();
        if name.is_empty() {
            return labels.with_shared_base(target);
        }
        let hash = seeded_hash(name.as_bytes());
        let Some(entry) = self
            .table
            .find_mut(hash, |n| n.labels.metric_name() == name)
        else {
            let first = labels.with_shared_base(target);
            self.table.insert_unique(
                hash,
                Name {
                    hash,
                    labels: first.clone(),
                    shared: false,
                },
                |n| n.hash,
            );
            return first;
        };
        if entry.shared {
            if let Some(split) = split_with(labels, &entry.labels) {
                return split;
            }
        } else {
            // A second series: the name gets its shared set, if this series can use it.
            let base = target.with(METRIC_NAME_LABEL, name);
            if let Some(split) = split_with(labels, &base) {
                entry.labels = base;
                entry.shared = true;
                return split;
            }
        }
        // Relabeling changed a target label of this series.
        labels.with_shared_base(target)
    }

    /// Forgets names whose sets nothing else holds: no series, and no sample still queued.
    pub(super) fn sweep(&mut self) {
        self.table.retain(|n| !n.labels.is_unique());
    }

    /// Forgets every name.
    pub(super) fn clear(&mut self) {
        self.table.clear();
    }

    /// Names known.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether `name` has its shared set yet, if the name is known.
    #[cfg(test)]
    pub(super) fn table_shared(&self, name: &str) -> Option<bool> {
        let hash = seeded_hash(name.as_bytes());
        self.table
            .find(hash, |n| n.labels.metric_name() == name)
            .map(|n| n.shared)
    }
}

/// `labels` with `base` split off, if it has every label of `base`.
fn split_with(labels: &Labels, base: &Labels) -> Option<Labels> {
    let split = labels.with_shared_base(base);
    split
        .base()
        .is_some_and(|b| Labels::ptr_eq(b, base))
        .then_some(split)
}
