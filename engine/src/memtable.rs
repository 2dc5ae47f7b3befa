//! The memtable: an ordered map of key → (value, LSN of the write).
//!
//! It is the whole state: walship keeps every key in memory and the WAL
//! plus checkpoints on disk. Only the engine's single writer mutates it.

use crate::wal::record::{BatchOp, Mutation};
use bytes::Bytes;
use std::collections::{btree_map, BTreeMap};
use std::ops::Bound;

/// A stored value and the end LSN of the record that wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The value.
    pub value: Bytes,
    /// End LSN of the record that wrote it.
    pub lsn: u64,
}

/// The in-memory table.
#[derive(Debug, Default)]
pub struct Memtable {
    map: BTreeMap<Bytes, Entry>,
    /// Sum of key and value lengths.
    data_bytes: u64,
}

impl Memtable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<&Bytes> {
        self.map.get(key).map(|e| &e.value)
    }

    /// The entry of `key`, with its LSN.
    pub fn entry(&self, key: &[u8]) -> Option<&Entry> {
        self.map.get(key)
    }

    /// Whether `key` exists.
    pub fn contains_key(&self, key: &[u8]) -> bool {
        self.map.contains_key(key)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Sum of key and value lengths.
    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    /// Up to `limit` entries with keys strictly after `after` (from the start when `None`), ascending.
    pub fn range_after(
        &self,
        after: Option<&[u8]>,
        limit: usize,
    ) -> impl Iterator<Item = (&Bytes, &Entry)> {
        let lower: Bound<&[u8]> = match after {
            Some(k) => Bound::Excluded(k),
            None => Bound::Unbounded,
        };
        self.map
            .range::<[u8], _>((lower, Bound::Unbounded))
            .take(limit)
    }

    /// Inserts an entry as a checkpoint holds it (key and value already owned).
    pub(crate) fn insert_entry(&mut self, key: Bytes, entry: Entry) {
        let added = (key.len() + entry.value.len()) as u64;
        if let Some(old) = self.map.insert(key.clone(), entry) {
            self.data_bytes -= (key.len() + old.value.len()) as u64;
        }
        self.data_bytes += added;
    }

    fn put(&mut self, key: &Bytes, value: &Bytes, lsn: u64) {
        // IMPORTANT: copy into allocations of our own. Keys and values often
        // arrive as slices of something larger (a mapped WAL segment during
        // recovery, a network buffer on a standby), which the memtable would
        // otherwise keep alive for as long as the key lives.
        let value = Bytes::copy_from_slice(value);
        let value_len = value.len() as u64;
        // One descent of the tree: a new key is the common case in replay.
        match self.map.entry(Bytes::copy_from_slice(key)) {
            btree_map::Entry::Occupied(mut e) => {
                self.data_bytes = self.data_bytes - e.get().value.len() as u64 + value_len;
                *e.get_mut() = Entry { value, lsn };
            }
            btree_map::Entry::Vacant(e) => {
                self.data_bytes += key.len() as u64 + value_len;
                e.insert(Entry { value, lsn });
            }
        }
    }

    fn delete(&mut self, key: &[u8]) {
        if let Some((k, old)) = self.map.remove_entry(key) {
            self.data_bytes -= (k.len() + old.value.len()) as u64;
        }
    }

    /// Applies a mutation logged with end LSN `lsn`. Replaying the same
    /// mutation twice gives the same state (checkpoints rely on it).
    pub fn apply(&mut self, lsn: u64, m: &Mutation) {
        match m {
            Mutation::Put { key, value } => self.put(key, value, lsn),
            Mutation::Delete { key } => self.delete(key),
            Mutation::Batch(ops) => {
                for op in ops {
                    match op {
                        BatchOp::Put { key, value } => self.put(key, value, lsn),
                        BatchOp::Delete { key } => self.delete(key),
                    }
                }
            }
            Mutation::Clear => {
                self.map.clear();
                self.data_bytes = 0;
            }
            Mutation::EpochChange { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_is_idempotent_and_counts_bytes() {
        let mut t = Memtable::new();
        let m = Mutation::Batch(vec![
            BatchOp::Put {
                key: "a".into(),
                value: "12".into(),
            },
            BatchOp::Put {
                key: "b".into(),
                value: "345".into(),
            },
            BatchOp::Delete { key: "a".into() },
        ]);
        t.apply(10, &m);
        t.apply(10, &m);
        assert_eq!(t.len(), 1);
        assert_eq!(t.get(b"b").unwrap(), &Bytes::from("345"));
        assert_eq!(t.data_bytes(), 4);
        t.apply(
            20,
            &Mutation::Put {
                key: "b".into(),
                value: "x".into(),
            },
        );
        assert_eq!(t.data_bytes(), 2);
        assert_eq!(t.entry(b"b").unwrap().lsn, 20);
        let keys: Vec<_> = t
            .range_after(Some(b"a"), 10)
            .map(|(k, _)| k.clone())
            .collect();
        assert_eq!(keys, vec![Bytes::from("b")]);
        t.apply(30, &Mutation::Clear);
        assert!(t.is_empty());
        assert_eq!(t.data_bytes(), 0);
    }
}
