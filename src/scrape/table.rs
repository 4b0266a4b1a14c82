//! Records found by the key of the series text they stand for: the store behind
//! [`super::SeriesCache`] and a scrape target's series.
//!
//! Records sit densely in a vector, found through a table of their indices hashed by the key
//! (already a seeded hash). A hash map would hold the records themselves in a table kept
//! between 44 and 88 % full: about half again as much memory for a target's worth of series.

use hashbrown::HashTable;

use super::Norm;
use crate::series::fingerprint;

/// A series text's identity: 96 bits of its seeded [`fingerprint`], with the `le`/`quantile`
/// norm it was parsed under mixed in, so one text parsed under two norms is two keys.
///
/// The text itself would cost about as much memory again as its label set. Two texts of one
/// target meeting on the same 96 bits by chance is out of reach (2^-96 per pair), and the
/// per-process seed keeps an exporter from building such texts on purpose.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct SeriesKey {
    /// The first half of the fingerprint; the index is hashed by it.
    pub(crate) hash: u64,
    /// 32 more bits of the fingerprint, with the norm mixed in.
    pub(crate) check: u32,
}

impl SeriesKey {
    /// The key of series text `raw` (name and braces) parsed under `norm`.
    pub(crate) fn of(raw: &str, norm: Norm) -> SeriesKey {
        let fp = fingerprint(raw.as_bytes());
        SeriesKey {
            hash: (fp >> 64) as u64,
            check: (fp as u32) ^ norm as u32,
        }
    }
}

/// A record that knows its key. Records store the key's two halves as separate fields, so
/// that with their other fields they pack without the padding a 16-byte key would bring.
pub(crate) trait Keyed {
    /// The record's key.
    fn key(&self) -> SeriesKey;
}

/// Records, at most one per key, in a dense vector with an index table.
#[derive(Debug)]
pub(crate) struct Table<T> {
    /// Indices into `items`, hashed by their key's `hash`.
    index: HashTable<u32>,
    items: Vec<T>,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table {
            index: HashTable::new(),
            items: Vec::new(),
        }
    }
}

impl<T: Keyed> Table<T> {
    /// Number of records.
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    /// The index of the record with `key`.
    pub(crate) fn find(&self, key: SeriesKey) -> Option<u32> {
        let items = &self.items;
        self.index
            .find(key.hash, |&i| {
                items.get(i as usize).is_some_and(|r| r.key() == key)
            })
            .copied()
    }

    /// The record at index `i`.
    pub(crate) fn get(&self, i: u32) -> Option<&T> {
        self.items.get(i as usize)
    }

    /// The record at index `i`, to change (not its key).
    pub(crate) fn get_mut(&mut self, i: u32) -> Option<&mut T> {
        self.items.get_mut(i as usize)
    }

    /// Adds a record, replacing one with the same key, and returns its index. `None` only past
    /// 2^32 records, which no body size limit lets a scrape reach; not storing is then correct.
    pub(crate) fn insert(&mut self, record: T) -> Option<u32> {
        let key = record.key();
        if let Some(i) = self.find(key) {
            if let Some(old) = self.items.get_mut(i as usize) {
                *old = record;
            }
            return Some(i);
        }
        // `u32::MAX` itself is left free as a "no record" mark for callers.
        let i = u32::try_from(self.items.len())
            .ok()
            .filter(|&i| i != u32::MAX)?;
        self.items.push(record);
        let items = &self.items;
        self.index
            .insert_unique(key.hash, i, |&j| hash_at(items, j));
        Some(i)
    }

    /// The records, in index order.
    pub(crate) fn iter(&self) -> std::slice::Iter<'_, T> {
        self.items.iter()
    }

    /// The records, to change (not their keys).
    pub(crate) fn iter_mut(&mut self) -> std::slice::IterMut<'_, T> {
        self.items.iter_mut()
    }

    /// Keeps the records for which `keep` is true. Indices of kept records may change.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&mut T) -> bool) {
        // Backwards, so the record `swap_remove` moves into a freed place was already kept.
        for i in (0..self.items.len()).rev() {
            let Some(r) = self.items.get_mut(i) else {
                continue;
            };
            if keep(r) {
                continue;
            }
            let at = i as u32;
            if let Ok(found) = self.index.find_entry(r.key().hash, |&j| j == at) {
                found.remove();
            }
            let last = (self.items.len() - 1) as u32;
            self.items.swap_remove(i);
            if let Some(moved) = self.items.get(i) {
                if let Some(slot) = self.index.find_mut(moved.key().hash, |&j| j == last) {
                    *slot = at;
                }
            }
        }
        // A target that shrank for good gives its memory back.
        let len = self.items.len();
        if self.items.capacity() > 2 * len + 64 {
            self.items.shrink_to(len + len / 4);
            let items = &self.items;
            self.index.shrink_to(len, |&j| hash_at(items, j));
        }
    }

    /// Entries in the index table, which must be one per record.
    #[cfg(test)]
    pub(crate) fn index_len(&self) -> usize {
        self.index.len()
    }

    /// Records the vector has room for.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.items.capacity()
    }

    /// Drops every record.
    pub(crate) fn clear(&mut self) {
        self.index.clear();
        self.items.clear();
    }
}

/// The hash the index keeps record `i` under.
fn hash_at<T: Keyed>(items: &[T], i: u32) -> u64 {
    items.get(i as usize).map_or(0, |r| r.key().hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Rec {
        key: SeriesKey,
        value: u32,
    }

    impl Keyed for Rec {
        fn key(&self) -> SeriesKey {
            self.key
        }
    }

    fn key(n: u32) -> SeriesKey {
        // Few distinct hashes, so records share buckets and only `check` tells them apart.
        SeriesKey {
            hash: u64::from(n % 3),
            check: n,
        }
    }

    #[test]
    fn finds_records_by_key_through_removals() {
        let mut t = Table::default();
        for n in 0..100 {
            assert_eq!(
                t.insert(Rec {
                    key: key(n),
                    value: n
                }),
                Some(n)
            );
        }
        t.retain(|r| r.value % 4 != 1);
        assert_eq!(t.len(), 75);
        for n in 0..100 {
            let found = t.find(key(n)).and_then(|i| t.get(i));
            if n % 4 == 1 {
                assert_eq!(found, None, "{n} was removed");
            } else {
                assert_eq!(found.map(|r| r.value), Some(n), "{n} is kept");
            }
        }
    }

    #[test]
    fn insert_replaces_a_record_with_the_same_key() {
        let mut t = Table::default();
        let a = t.insert(Rec {
            key: key(7),
            value: 1,
        });
        let b = t.insert(Rec {
            key: key(7),
            value: 2,
        });
        assert_eq!(a, b);
        assert_eq!(t.len(), 1);
        assert_eq!(
            t.find(key(7)).and_then(|i| t.get(i)).map(|r| r.value),
            Some(2)
        );
    }

    #[test]
    fn norms_make_distinct_keys_for_one_text() {
        let raw = "m_bucket{le=\"1\"}";
        assert_ne!(SeriesKey::of(raw, Norm::None), SeriesKey::of(raw, Norm::Le));
        assert_ne!(
            SeriesKey::of(raw, Norm::Le),
            SeriesKey::of(raw, Norm::Quantile)
        );
        assert_eq!(SeriesKey::of(raw, Norm::Le), SeriesKey::of(raw, Norm::Le));
    }

    #[test]
    fn shrinks_after_most_records_go() {
        let mut t = Table::default();
        for n in 0..1000 {
            t.insert(Rec {
                key: key(n),
                value: n,
            });
        }
        t.retain(|r| r.value < 10);
        assert!(t.capacity() < 100, "{}", t.capacity());
        assert!((0..10).all(|n| t.find(key(n)).is_some()));
    }
}
