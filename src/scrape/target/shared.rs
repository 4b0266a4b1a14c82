//! The label sets a target's series share, so that each series stores only what is its own:
//! the target labels (`job`, `instance`, …), and for a metric name that more than one series
//! has, that name together with the target labels.
//!
//! A node exporter's series are mostly members of names with many series (per CPU and mode,
//! per device, per histogram bucket), whose name would otherwise be stored once per series.
//! A name gets its shared set only when a second series has it: for a name with one series,
//! the set would cost more than it saves.
//!
//! What is left, a series' own labels (`cpu="0",mode="idle"`), is the same on every target of
//! a job that runs the same exporter. A job's targets keep such labels once between them
//! ([`JobSets`]): the series of every target after the first that exposes them store a link
//! instead (48 bytes a series, against 80-112 for the sets of the relay benchmark's series).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use hashbrown::HashTable;

use crate::series::{seeded_hash, Labels, SharedOwn, METRIC_NAME_LABEL};

/// A target's per-name shared label sets, by metric name, and its place among its job's
/// targets.
#[derive(Debug)]
pub(super) struct SharedNames {
    table: HashTable<Name>,
    job: JobMember,
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
    /// The shared sets of a target of the job whose sets `job` holds.
    pub(super) fn new(job: &Arc<JobSets>) -> SharedNames {
        SharedNames {
            table: HashTable::new(),
            job: JobSets::join(job),
        }
    }

    /// `labels` (a series' output label set, after relabeling) stored with what it shares:
    /// its name's shared set if it has every label of it, else the target labels if it has
    /// them all unchanged, else nothing; and its own labels kept with the job's other targets'
    /// (see [`JobSets`]). Equal to `labels` in every view.
    pub(super) fn share(&mut self, labels: &Labels, target: &Labels) -> Labels {
        let split = self.share_base(labels, target);
        self.job.sets.share_own(split)
    }

    /// `labels` with its name's or its target's shared set split off (see [`Self::share`]).
    fn share_base(&mut self, labels: &Labels, target: &Labels) -> Labels {
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

/// The own labels (beyond their shared base) that a job's targets' series have in common,
/// kept once for all of them.
///
/// Registered only while the job has more than one target: a job of one target has no one to
/// share with, and its series would pay for the table. A series' own labels are registered
/// the first time a target brings them; from the second target on, that target's series link
/// to the first one's labels.
#[derive(Debug, Default)]
pub struct JobSets {
    table: Mutex<OwnTable>,
    /// Targets of the job alive (see [`JobMember`]).
    targets: AtomicUsize,
}

#[derive(Debug, Default)]
struct OwnTable {
    entries: HashTable<OwnEntry>,
    /// Entries after the last sweep: the next comes when the table has doubled since, or
    /// targets left.
    swept_len: usize,
    /// Targets that left since the last sweep.
    left: usize,
}

/// One series' own labels, registered by the first target that had them.
#[derive(Debug)]
enum OwnEntry {
    /// Only that target's series has them so far.
    First(Labels),
    /// A second target's series had them too: the storage every later one links to.
    Shared(SharedOwn),
}

impl OwnEntry {
    fn own_wire_bytes(&self) -> &[u8] {
        match self {
            OwnEntry::First(labels) => labels.own_wire_bytes(),
            OwnEntry::Shared(own) => own.own_wire_bytes(),
        }
    }

    /// The storage later series link to, made from the first series' labels when a second
    /// one asks.
    fn shared(&mut self) -> SharedOwn {
        let shared = match self {
            OwnEntry::First(first) => first.share_own(),
            OwnEntry::Shared(shared) => return shared.clone(),
        };
        *self = OwnEntry::Shared(shared.clone());
        shared
    }

    /// Whether no series uses the labels any more, so the entry only holds memory.
    fn unused(&self) -> bool {
        match self {
            OwnEntry::First(labels) => labels.is_unique(),
            OwnEntry::Shared(own) => own.is_unused(),
        }
    }
}

impl JobSets {
    /// Counts a new target of the job until the returned member is dropped.
    fn join(sets: &Arc<JobSets>) -> JobMember {
        sets.targets.fetch_add(1, Ordering::Relaxed);
        JobMember { sets: sets.clone() }
    }

    /// `labels` keeping its own labels in the storage another target's series with the same
    /// own labels uses, where there is one; else `labels`, registered for the targets after.
    fn share_own(&self, labels: Labels) -> Labels {
        let own = labels.own_wire_bytes();
        if own.is_empty() || labels.own_is_shared() || self.targets.load(Ordering::Relaxed) < 2 {
            return labels;
        }
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        let hash = seeded_hash(own);
        if let Some(entry) = table.entries.find_mut(hash, |e| e.own_wire_bytes() == own) {
            return labels.with_own_in(&entry.shared());
        }
        table
            .entries
            .insert_unique(hash, OwnEntry::First(labels.clone()), |e| {
                seeded_hash(e.own_wire_bytes())
            });
        if table.entries.len() >= 2 * table.swept_len + 64 {
            table.sweep();
        }
        labels
    }

    /// Own labels registered.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entries
            .len()
    }
}

impl OwnTable {
    /// Forgets the own labels no series uses. Called once the table doubled since the last
    /// sweep or a quarter of the targets left: each sweep walks the whole table, so they stay
    /// rare.
    fn sweep(&mut self) {
        self.entries.retain(|e| !e.unused());
        self.swept_len = self.entries.len();
        self.left = 0;
    }
}

/// A target's membership of its job's [`JobSets`]: counted while it lives.
#[derive(Debug)]
struct JobMember {
    sets: Arc<JobSets>,
}

impl Drop for JobMember {
    fn drop(&mut self) {
        let before = self.sets.targets.fetch_sub(1, Ordering::Relaxed);
        let mut table = self
            .sets
            .table
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        table.left += 1;
        // A job's targets leaving one by one sweep at most a few times a halving.
        if table.left * 4 >= before {
            table.sweep();
        }
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
