//! The memtable: an ordered map of key → (value, LSN of the write).
//!
//! It is the whole state: walship keeps every key in memory and the WAL
//! plus checkpoints on disk. Only the engine's single writer mutates it.
//!
//! Keys are ordered bytewise (as `[u8]` orders), but each map key carries
//! its first 16 bytes as two big-endian integers next to the pointer, so a
//! tree descent compares integers inside the node instead of calling
//! `memcmp` on a separate allocation per step (a profile of replay had
//! `memcmp` at 23 %): most keys differ within 16 bytes.
//!
//! Slots are small, because the tree's nodes are most of the memory a key
//! costs (at the ~55 % node occupancy of keys inserted in order, a slot
//! costs nearly twice its size): the key is a prefix plus a boxed slice, the
//! value a one-word pointer to a single allocation holding the LSN, the
//! length and the bytes ([`Value`]). 40 bytes per slot, against 88 when key
//! and value were each a `Bytes` handle.

use crate::wal::record::{BatchOp, Mutation, Op};
use bytes::Bytes;
use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::{btree_map, BTreeMap};
use std::ops::Bound;
use triomphe::ThinArc;

/// A stored value and the end LSN of the record that wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The value.
    pub value: Bytes,
    /// End LSN of the record that wrote it.
    pub lsn: u64,
}

/// A value as the memtable holds it: one allocation with the end LSN of the
/// record that wrote it, the length and the bytes, behind a one-word,
/// reference-counted pointer. Cloning it is a counter increment;
/// [`Value::to_bytes`] hands the same allocation out as [`Bytes`].
#[derive(Clone)]
pub struct Value(ThinArc<u64, u8>);

impl Value {
    fn new(lsn: u64, bytes: &[u8]) -> Value {
        Value(ThinArc::from_header_and_slice(lsn, bytes))
    }

    /// The value's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0.slice
    }

    /// End LSN of the record that wrote it.
    pub fn lsn(&self) -> u64 {
        self.0.header.header
    }

    /// The bytes as [`Bytes`], sharing this allocation (no copy).
    pub fn to_bytes(&self) -> Bytes {
        Bytes::from_owner(self.clone())
    }

    /// As an [`Entry`].
    pub fn to_entry(&self) -> Entry {
        Entry {
            value: self.to_bytes(),
            lsn: self.lsn(),
        }
    }
}

impl AsRef<[u8]> for Value {
    fn as_ref(&self) -> &[u8] {
        self.bytes()
    }
}

impl std::fmt::Debug for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Value")
            .field("lsn", &self.lsn())
            .field("len", &self.bytes().len())
            .finish()
    }
}

/// The first 16 bytes of `key`, zero-padded, as two big-endian integers:
/// comparing them compares those bytes as `[u8]` does.
#[inline]
fn prefix(key: &[u8]) -> (u64, u64) {
    let mut b = [0u8; 16];
    let n = key.len().min(16);
    b[..n].copy_from_slice(&key[..n]);
    (
        u64::from_be_bytes(b[..8].try_into().expect("8 bytes")),
        u64::from_be_bytes(b[8..].try_into().expect("8 bytes")),
    )
}

/// Bytewise comparison given both keys' prefixes. Equal prefixes leave the
/// bytes after the 16th, then the lengths (a shorter key padded with zeros
/// has the same prefix as a longer one ending in zeros).
#[inline]
fn compare(a: (u64, u64), a_key: &[u8], b: (u64, u64), b_key: &[u8]) -> Ordering {
    a.cmp(&b).then_with(|| {
        if a_key.len() <= 16 && b_key.len() <= 16 {
            a_key.len().cmp(&b_key.len())
        } else {
            a_key[a_key.len().min(16)..].cmp(&b_key[b_key.len().min(16)..])
        }
    })
}

/// A key as the map holds it: the bytes and their 16-byte prefix.
#[derive(Debug, Clone)]
struct Key {
    hi: u64,
    lo: u64,
    bytes: Box<[u8]>,
}

impl Key {
    fn new(bytes: &[u8]) -> Key {
        let (hi, lo) = prefix(bytes);
        Key {
            hi,
            lo,
            bytes: bytes.into(),
        }
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Key {}
impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Key {
    #[inline]
    fn cmp(&self, other: &Self) -> Ordering {
        compare(
            (self.hi, self.lo),
            &self.bytes,
            (other.hi, other.lo),
            &other.bytes,
        )
    }
}

/// What lookups by borrowed bytes compare against: a [`Key`] or a [`Probe`].
trait KeyView {
    fn parts(&self) -> ((u64, u64), &[u8]);
}

impl KeyView for Key {
    fn parts(&self) -> ((u64, u64), &[u8]) {
        ((self.hi, self.lo), &self.bytes)
    }
}

/// A lookup key borrowed from the caller, with its prefix computed once.
struct Probe<'a> {
    prefix: (u64, u64),
    bytes: &'a [u8],
}

impl<'a> Probe<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Probe {
            prefix: prefix(bytes),
            bytes,
        }
    }
}

impl KeyView for Probe<'_> {
    fn parts(&self) -> ((u64, u64), &[u8]) {
        (self.prefix, self.bytes)
    }
}

impl<'a> Borrow<dyn KeyView + 'a> for Key {
    fn borrow(&self) -> &(dyn KeyView + 'a) {
        self
    }
}

impl PartialEq for dyn KeyView + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for dyn KeyView + '_ {}
impl PartialOrd for dyn KeyView + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for dyn KeyView + '_ {
    fn cmp(&self, other: &Self) -> Ordering {
        let (a, ak) = self.parts();
        let (b, bk) = other.parts();
        compare(a, ak, b, bk)
    }
}

/// The in-memory table.
#[derive(Debug, Default)]
pub struct Memtable {
    map: BTreeMap<Key, Value>,
    /// Sum of key and value lengths.
    data_bytes: u64,
}

impl Memtable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value of `key` (sharing the stored allocation, no copy).
    pub fn get(&self, key: &[u8]) -> Option<Bytes> {
        self.value(key).map(Value::to_bytes)
    }

    /// The stored value of `key`, with its LSN.
    pub fn value(&self, key: &[u8]) -> Option<&Value> {
        self.map.get(&Probe::new(key) as &dyn KeyView)
    }

    /// The entry of `key`, with its LSN.
    pub fn entry(&self, key: &[u8]) -> Option<Entry> {
        self.value(key).map(Value::to_entry)
    }

    /// Whether `key` exists.
    pub fn contains_key(&self, key: &[u8]) -> bool {
        self.map.contains_key(&Probe::new(key) as &dyn KeyView)
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
    ) -> impl Iterator<Item = (&[u8], &Value)> {
        let probe = after.map(Probe::new);
        let lower: Bound<&dyn KeyView> = match &probe {
            Some(p) => Bound::Excluded(p),
            None => Bound::Unbounded,
        };
        self.map
            .range::<dyn KeyView, _>((lower, Bound::Unbounded))
            .take(limit)
            .map(|(k, v)| (&k.bytes[..], v))
    }

    /// Sets `key` to `value`, written by the record ending at `lsn`. Both are
    /// copied into allocations of the memtable's own: keys and values often
    /// arrive as slices of something larger (a mapped WAL segment during
    /// recovery, a network buffer on a standby), which the memtable would
    /// otherwise keep alive for as long as the key lives.
    pub(crate) fn put(&mut self, key: &[u8], value: &[u8], lsn: u64) {
        let value_len = value.len() as u64;
        let stored = Value::new(lsn, value);
        // One descent of the tree: a new key is the common case in replay
        // (an overwrite boxes the key only to drop it).
        match self.map.entry(Key::new(key)) {
            btree_map::Entry::Occupied(mut e) => {
                self.data_bytes = self.data_bytes - e.get().bytes().len() as u64 + value_len;
                *e.get_mut() = stored;
            }
            btree_map::Entry::Vacant(e) => {
                self.data_bytes += key.len() as u64 + value_len;
                e.insert(stored);
            }
        }
    }

    fn delete(&mut self, key: &[u8]) {
        if let Some((k, old)) = self.map.remove_entry(&Probe::new(key) as &dyn KeyView) {
            self.data_bytes -= (k.bytes.len() + old.bytes().len()) as u64;
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
            Mutation::Clear => self.clear(),
            Mutation::EpochChange { .. } => {}
        }
    }

    /// Applies one change of a record ending at `lsn` ([`crate::wal::record::visit`]).
    pub(crate) fn apply_op(&mut self, lsn: u64, op: Op<'_>) {
        match op {
            Op::Put { key, value } => self.put(key, value, lsn),
            Op::Delete { key } => self.delete(key),
            Op::Clear => self.clear(),
            Op::EpochChange { .. } => {}
        }
    }

    fn clear(&mut self) {
        self.map.clear();
        self.data_bytes = 0;
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
        assert_eq!(t.get(b"b").unwrap(), Bytes::from("345"));
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
            .map(|(k, v)| (k.to_vec(), v.bytes().to_vec(), v.lsn()))
            .collect();
        assert_eq!(keys, vec![(b"b".to_vec(), b"x".to_vec(), 20)]);
        t.apply(30, &Mutation::Clear);
        assert!(t.is_empty());
        assert_eq!(t.data_bytes(), 0);
    }

    #[test]
    fn key_order_is_bytewise() {
        let samples: Vec<&[u8]> = vec![
            b"",
            b"\0",
            b"\0\0",
            b"a",
            b"a\0",
            b"a\0\0\x01",
            b"ab",
            b"abc",
            b"0123456789abcdef",
            b"0123456789abcdef\0",
            b"0123456789abcdeg",
            b"0123456789abcdef0",
            b"0123456789abcdef00",
            b"0123456789abcdef1",
            b"0123456789abcde",
            b"0123456789abcde\xff\xff",
            b"\xff",
            b"\xff\0",
            b"key:00000001",
            b"key:00000002",
            b"key:000000010",
        ];
        for a in &samples {
            for b in &samples {
                let (ka, kb) = (Key::new(a), Key::new(b));
                assert_eq!(ka.cmp(&kb), a.cmp(b), "{a:?} vs {b:?}");
                let (pa, pb) = (Probe::new(a), Probe::new(b));
                assert_eq!((&pa as &dyn KeyView).cmp(&kb as &dyn KeyView), a.cmp(b));
                assert_eq!((&ka as &dyn KeyView).cmp(&pb as &dyn KeyView), a.cmp(b));
            }
        }
        let mut t = Memtable::new();
        for (i, k) in samples.iter().enumerate() {
            t.apply(
                i as u64,
                &Mutation::Put {
                    key: Bytes::copy_from_slice(k),
                    value: "v".into(),
                },
            );
        }
        let mut sorted = samples.clone();
        sorted.sort();
        sorted.dedup();
        let got: Vec<&[u8]> = t.range_after(None, 100).map(|(k, _)| k).collect();
        assert_eq!(got, sorted);
        for k in &sorted {
            assert!(t.contains_key(k));
            let after: Vec<&[u8]> = t.range_after(Some(k), 100).map(|(k, _)| k).collect();
            assert!(after.iter().all(|a| a > k));
            assert_eq!(after.len(), sorted.iter().filter(|s| *s > k).count());
        }
        t.apply(
            99,
            &Mutation::Delete {
                key: Bytes::from_static(b"a\0"),
            },
        );
        assert!(!t.contains_key(b"a\0") && t.contains_key(b"a"));
    }
}
