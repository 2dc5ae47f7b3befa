//! The one place the server touches the storage engine.
//!
//! Commands see [`Store`], [`View`], [`Mutation`] and [`BatchOp`]; this file
//! maps them onto `walship_engine`. TEMPORARY: until the engine exports
//! `Engine`, an in-memory stand-in with the same contract lives here.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::RwLock;

use crate::config::ServerConfig;

pub type Lsn = u64;

/// One logged change. Values are logged as results, never as operations.
#[derive(Debug, Clone)]
pub enum Mutation {
    Put { key: Bytes, value: Bytes },
    Delete { key: Bytes },
    Batch(Vec<BatchOp>),
    Clear,
}

#[derive(Debug, Clone)]
pub enum BatchOp {
    Put { key: Bytes, value: Bytes },
    Delete { key: Bytes },
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    #[error("{what} of {len} bytes is over the limit of {max} bytes")]
    TooLarge { what: &'static str, len: u64, max: u64 },
}

/// The state a `transact` closure reads.
pub struct View<'a>(&'a BTreeMap<Bytes, Bytes>);

impl View<'_> {
    pub fn get(&self, key: &[u8]) -> Option<&Bytes> {
        self.0.get(key)
    }

    pub fn contains_key(&self, key: &[u8]) -> bool {
        self.0.contains_key(key)
    }
}

/// Counters the server reports (INFO, /metrics, /status).
#[derive(Debug, Clone, Default)]
pub struct StoreStats {
    pub wal_bytes_written: u64,
    pub fsyncs: u64,
    pub records_written: u64,
    pub group_commits: u64,
    pub checkpoints: u64,
    pub checkpoint_ms_total: u64,
    pub last_checkpoint_lsn: u64,
}

/// What one checkpoint did.
#[derive(Debug, Clone)]
pub struct CheckpointSummary {
    pub lsn: Lsn,
    pub keys: u64,
}

struct Inner {
    map: RwLock<BTreeMap<Bytes, Bytes>>,
    end_lsn: AtomicU64,
    max_key_bytes: u64,
    max_value_bytes: u64,
}

/// A cheap-to-clone handle on the storage engine.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl Store {
    /// Opens (and recovers) the engine in `cfg.data_dir`. Blocking.
    pub fn open(cfg: &ServerConfig) -> anyhow::Result<Store> {
        Ok(Store {
            inner: Arc::new(Inner {
                map: RwLock::new(BTreeMap::new()),
                end_lsn: AtomicU64::new(0),
                max_key_bytes: cfg.max_key_bytes,
                max_value_bytes: cfg.max_value_bytes,
            }),
        })
    }

    pub fn get(&self, key: &[u8]) -> Option<Bytes> {
        self.inner.map.read().get(key).cloned()
    }

    pub fn contains_key(&self, key: &[u8]) -> bool {
        self.inner.map.read().contains_key(key)
    }

    pub fn len(&self) -> usize {
        self.inner.map.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keys strictly greater than `after`, ascending, at most `limit`.
    pub fn scan(&self, after: Option<&[u8]>, limit: usize) -> Vec<Bytes> {
        let map = self.inner.map.read();
        let lower = match after {
            Some(a) => Bound::Excluded(a),
            None => Bound::Unbounded,
        };
        map.range::<[u8], _>((lower, Bound::Unbounded)).take(limit).map(|(k, _)| k.clone()).collect()
    }

    /// Runs `f` under the writer lock, logs and applies the mutation it returns.
    /// The change is visible but NOT durable: call [`Store::wait_durable`].
    pub fn transact<R>(
        &self,
        f: impl FnOnce(&View<'_>) -> (Option<Mutation>, R),
    ) -> Result<(Option<Lsn>, R), WriteError> {
        let mut map = self.inner.map.write();
        let (m, r) = f(&View(&map));
        let Some(m) = m else {
            return Ok((None, r));
        };
        let check = |k: &Bytes, v: Option<&Bytes>| -> Result<(), WriteError> {
            if k.len() as u64 > self.inner.max_key_bytes {
                return Err(WriteError::TooLarge { what: "key", len: k.len() as u64, max: self.inner.max_key_bytes });
            }
            if let Some(v) = v {
                if v.len() as u64 > self.inner.max_value_bytes {
                    return Err(WriteError::TooLarge {
                        what: "value",
                        len: v.len() as u64,
                        max: self.inner.max_value_bytes,
                    });
                }
            }
            Ok(())
        };
        match &m {
            Mutation::Put { key, value } => check(key, Some(value))?,
            Mutation::Delete { key } => check(key, None)?,
            Mutation::Batch(ops) => {
                for op in ops {
                    match op {
                        BatchOp::Put { key, value } => check(key, Some(value))?,
                        BatchOp::Delete { key } => check(key, None)?,
                    }
                }
            }
            Mutation::Clear => {}
        }
        match m {
            Mutation::Put { key, value } => {
                map.insert(key, value);
            }
            Mutation::Delete { key } => {
                map.remove(&key);
            }
            Mutation::Batch(ops) => {
                for op in ops {
                    match op {
                        BatchOp::Put { key, value } => {
                            map.insert(key, value);
                        }
                        BatchOp::Delete { key } => {
                            map.remove(&key);
                        }
                    }
                }
            }
            Mutation::Clear => map.clear(),
        }
        let lsn = self.inner.end_lsn.fetch_add(32, Ordering::SeqCst) + 32;
        Ok((Some(lsn), r))
    }

    /// Completes when everything up to `lsn` is durable under the fsync policy.
    pub async fn wait_durable(&self, _lsn: Lsn) -> Result<(), WriteError> {
        Ok(())
    }

    /// Writes a checkpoint. Blocking: call from `spawn_blocking`/`block_in_place`.
    pub fn checkpoint(&self) -> anyhow::Result<CheckpointSummary> {
        Ok(CheckpointSummary { lsn: self.end_lsn(), keys: self.len() as u64 })
    }

    /// Makes everything durable and stops background work. Blocking.
    pub fn shutdown(&self) -> anyhow::Result<()> {
        Ok(())
    }

    pub fn stats(&self) -> StoreStats {
        StoreStats::default()
    }

    pub fn end_lsn(&self) -> Lsn {
        self.inner.end_lsn.load(Ordering::SeqCst)
    }

    pub fn flushed_lsn(&self) -> Lsn {
        self.end_lsn()
    }

    pub fn cluster_id(&self) -> u64 {
        0
    }

    pub fn epoch(&self) -> u64 {
        1
    }
}
