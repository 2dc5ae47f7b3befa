//! The engine: one data directory, its WAL, its memtable and its checkpoints.

use crate::checkpoint::{self, CheckpointInfo, CheckpointWriter};
use crate::control::Control;
use crate::epochs::EpochHistory;
use crate::error::{EngineError, WriteError};
use crate::memtable::{Entry, Memtable, Value};
use crate::storage::{FsStorage, Storage};
use crate::wal::record::{
    self, BatchOp, Mutation, Op, Parsed, RECORD_HEADER_BYTES, RECORD_PAYLOAD_MAX_BYTES,
};
use crate::wal::recovery;
use crate::wal::segment::{SEGMENT_SIZE_DEFAULT_BYTES, SEGMENT_SIZE_MIN_BYTES};
use crate::wal::writer::{
    CommitDelay, FlushSettings, FsyncPolicy, ProgressListener, SendableListener, WaitingWriter,
    Wal, WalSyncMethod,
};
use crate::wal::Segments;
use crate::Lsn;
use bytes::Bytes;
use parking_lot::{Condvar, Mutex, RwLock, RwLockUpgradableReadGuard};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Settings of an engine.
#[derive(Clone)]
pub struct EngineConfig {
    /// The data directory (`wal/`, `checkpoints/`, `control` live in it).
    pub data_dir: PathBuf,
    /// Size of each WAL segment file, header included. Default 64 MiB.
    pub segment_size_bytes: u64,
    /// When an append counts as durable. Default [`FsyncPolicy::Always`].
    pub fsync: FsyncPolicy,
    /// How a durable batch is written under [`FsyncPolicy::Always`].
    /// Default [`WalSyncMethod::OpenDatasync`].
    pub wal_sync_method: WalSyncMethod,
    /// Take a checkpoint after this many bytes of WAL; 0 turns automatic checkpoints off. Default 256 MiB.
    pub checkpoint_every_bytes: u64,
    /// Largest key accepted. Default 512 MiB.
    pub max_key_bytes: u64,
    /// Largest value accepted. Default 512 MiB, as Redis.
    pub max_value_bytes: u64,
    /// The file system. Default: real files.
    pub storage: Arc<dyn Storage>,
    /// Cluster id for a new data directory; random when `None`. Ignored when the directory exists.
    pub cluster_id: Option<u64>,
    /// The group-commit delay (PostgreSQL's `commit_delay`/`commit_siblings`);
    /// shared, so it can change at runtime. Default off.
    pub commit_delay: Arc<CommitDelay>,
}

impl EngineConfig {
    /// Defaults for `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        EngineConfig {
            data_dir: data_dir.into(),
            segment_size_bytes: SEGMENT_SIZE_DEFAULT_BYTES,
            fsync: FsyncPolicy::Always,
            wal_sync_method: WalSyncMethod::default(),
            checkpoint_every_bytes: 256 << 20,
            max_key_bytes: 512 << 20,
            max_value_bytes: 512 << 20,
            storage: Arc::new(FsStorage),
            cluster_id: None,
            commit_delay: Arc::new(CommitDelay::default()),
        }
    }
}

impl std::fmt::Debug for EngineConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineConfig")
            .field("data_dir", &self.data_dir)
            .field("segment_size_bytes", &self.segment_size_bytes)
            .field("fsync", &self.fsync)
            .field("wal_sync_method", &self.wal_sync_method)
            .field("checkpoint_every_bytes", &self.checkpoint_every_bytes)
            .field("max_key_bytes", &self.max_key_bytes)
            .field("max_value_bytes", &self.max_value_bytes)
            .finish_non_exhaustive()
    }
}

/// Something that needs WAL kept: replication slots. The engine never
/// removes WAL at or above the lowest LSN any hook returns.
pub trait WalRetention: Send + Sync {
    /// Lowest LSN still needed, or `None` when nothing is needed. `end_lsn`
    /// is the WAL's current end, so a hook can cap how much it holds back.
    fn min_retained_lsn(&self, end_lsn: Lsn) -> Option<Lsn>;
}

/// What recovery did when the engine opened.
#[derive(Debug, Clone)]
pub struct RecoveryInfo {
    /// The checkpoint loaded, if any.
    pub checkpoint: Option<PathBuf>,
    /// Replay started here.
    pub from_lsn: Lsn,
    /// The WAL ends here.
    pub end_lsn: Lsn,
    /// Records replayed.
    pub records: u64,
    /// Garbage bytes of a torn tail that were zeroed.
    pub torn_bytes: u64,
    /// Time spent.
    pub duration: Duration,
}

/// Counters for metrics and INFO.
#[derive(Debug, Clone, Default)]
pub struct EngineStats {
    /// WAL bytes handed to the OS.
    pub wal_bytes_written: u64,
    /// Records appended.
    pub records_appended: u64,
    /// Group-commit batches written.
    pub flush_batches: u64,
    /// `fdatasync` calls on WAL segments.
    pub fsyncs: u64,
    /// Batches the flusher delayed to let more writers join (`commit_delay`).
    pub commit_delays: u64,
    /// Batches written by the thread that appended them, the flusher being
    /// idle: a standby's WAL receiver, or a lone writer.
    pub inline_flushes: u64,
    /// Segments created.
    pub segments_created: u64,
    /// Segments on disk now.
    pub wal_segments: u64,
    /// Oldest LSN still on disk.
    pub oldest_lsn: Lsn,
    /// Where the next record goes.
    pub end_lsn: Lsn,
    /// Written to the OS up to here.
    pub written_lsn: Lsn,
    /// Fsynced up to here.
    pub flushed_lsn: Lsn,
    /// Checkpoints taken since open.
    pub checkpoints: u64,
    /// Total time spent in checkpoints.
    pub checkpoint_ms_total: u64,
    /// Duration of the last checkpoint.
    pub last_checkpoint_ms: u64,
    /// Redo LSN of the newest checkpoint.
    pub last_checkpoint_lsn: Lsn,
    /// Records applied after the newest checkpoint's redo point (recovered,
    /// written or replicated): Redis's `rdb_changes_since_last_save`.
    pub changes_since_checkpoint: u64,
    /// Keys in the memtable.
    pub keys: u64,
    /// Bytes of keys and values.
    pub data_bytes: u64,
    /// Whether writes are refused after an I/O failure.
    pub poisoned: bool,
}

struct Inner {
    cfg: EngineConfig,
    storage: Arc<dyn Storage>,
    wal_dir: PathBuf,
    ckpt_dir: PathBuf,
    cluster_id: u64,
    epoch: AtomicU64,
    epochs: Mutex<EpochHistory>,
    memtable: RwLock<Memtable>,
    wal: Wal,
    checkpoint_lock: Mutex<Option<CheckpointInfo>>,
    retention: RwLock<Vec<Arc<dyn WalRetention>>>,
    checkpoints: AtomicU64,
    checkpoint_ms_total: AtomicU64,
    last_checkpoint_ms: AtomicU64,
    last_checkpoint_lsn: AtomicU64,
    /// Records applied since open (recovered ones included).
    changes: AtomicU64,
    /// [`Inner::changes`] at the newest checkpoint's redo point.
    changes_at_checkpoint: AtomicU64,
    /// Non-zero after a base backup: the LSN the WAL must reach before the state is consistent.
    consistent_at: AtomicU64,
    recovery: RecoveryInfo,
    stop: Mutex<bool>,
    stop_cv: Condvar,
    closed: AtomicBool,
    checkpointer: Mutex<Option<JoinHandle<()>>>,
}

/// A walship storage engine. Cheap to clone; all clones share one engine.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

/// An [`Engine`] that does not keep it open: for listeners the engine itself
/// holds ([`Engine::set_progress_listener`]), which must not keep it alive.
#[derive(Clone)]
pub struct WeakEngine {
    inner: std::sync::Weak<Inner>,
}

impl WeakEngine {
    /// The engine, while any [`Engine`] clone is alive.
    pub fn upgrade(&self) -> Option<Engine> {
        self.inner.upgrade().map(|inner| Engine { inner })
    }
}

/// Applies one logged mutation: the single path shared by local writes,
/// recovery and replicated WAL. Returns true when it started a new epoch.
fn apply_to(
    memtable: &mut Memtable,
    epoch: &AtomicU64,
    epochs: &mut EpochHistory,
    end_lsn: Lsn,
    m: &Mutation,
) -> bool {
    memtable.apply(end_lsn, m);
    if let Mutation::EpochChange { epoch: e } = m {
        let start = end_lsn - (RECORD_HEADER_BYTES + m.payload_len()) as u64;
        epoch.fetch_max(*e, Ordering::AcqRel);
        return epochs.push(*e, start);
    }
    false
}

impl Engine {
    /// Opens (or initialises) the data directory and runs recovery.
    pub fn open(cfg: EngineConfig) -> Result<Engine, EngineError> {
        let started = Instant::now();
        if cfg.segment_size_bytes < SEGMENT_SIZE_MIN_BYTES
            || !cfg.segment_size_bytes.is_multiple_of(4096)
        {
            return Err(EngineError::Config(format!(
                "segment size {} must be a multiple of 4096 and at least {SEGMENT_SIZE_MIN_BYTES}",
                cfg.segment_size_bytes
            )));
        }
        let storage = cfg.storage.clone();
        let data_dir = cfg.data_dir.clone();
        let wal_dir = data_dir.join("wal");
        let ckpt_dir = checkpoint::checkpoint_dir(&data_dir);
        for d in [&data_dir, &wal_dir, &ckpt_dir] {
            storage
                .create_dir_all(d)
                .map_err(|e| EngineError::io(d, e))?;
        }
        crate::basebackup::roll_forward(&*storage, &data_dir)?;
        crate::rewind::finish_pending(&*storage, &data_dir)?;
        let consistent_at = crate::basebackup::consistent_at(&*storage, &data_dir)?;
        let control = match Control::load(&*storage, &data_dir)? {
            Some(c) => c,
            None => {
                let has_data = !storage
                    .list(&wal_dir)
                    .map_err(|e| EngineError::io(&wal_dir, e))?
                    .is_empty()
                    || !checkpoint::list(&*storage, &ckpt_dir)?.is_empty();
                if has_data {
                    return Err(EngineError::BadControl {
                        file: crate::control::control_path(&data_dir),
                        reason: "missing while WAL or checkpoints exist; refusing to guess the cluster identity".into(),
                    });
                }
                let cluster_id = cfg.cluster_id.unwrap_or_else(|| rand::random::<u64>() | 1);
                let c = Control {
                    cluster_id,
                    epoch: 1,
                };
                c.store(&*storage, &data_dir)?;
                tracing::info!(data_dir = %data_dir.display(), cluster_id = format_args!("{cluster_id:016x}"), "initialised a new data directory");
                c
            }
        };

        let mut memtable = Memtable::new();
        let mut ckpt: Option<CheckpointInfo> = None;
        for name in storage
            .list(&ckpt_dir)
            .map_err(|e| EngineError::io(&ckpt_dir, e))?
        {
            if name.ends_with(".tmp") {
                let p = ckpt_dir.join(name);
                storage.remove(&p).map_err(|e| EngineError::io(&p, e))?;
            }
        }
        for (_, path) in checkpoint::list(&*storage, &ckpt_dir)? {
            match checkpoint::load(&*storage, &path, control.cluster_id, &mut memtable) {
                Ok(info) => {
                    ckpt = Some(info);
                    break;
                }
                Err(reason) => {
                    tracing::warn!(file = %path.display(), %reason, "skipping a damaged checkpoint; trying an older one");
                }
            }
        }
        let mut epochs = EpochHistory::load(&*storage, &data_dir)?
            .unwrap_or_else(|| EpochHistory::new(control.epoch));
        let epoch = AtomicU64::new(epochs.current().max(ckpt.as_ref().map_or(0, |c| c.epoch)));
        let from_lsn = ckpt.as_ref().map_or(0, |c| c.redo_lsn);
        let mut epochs_changed = false;
        let recovered = recovery::recover(
            &*storage,
            &wal_dir,
            control.cluster_id,
            from_lsn,
            &mut |end, op| match op {
                Op::EpochChange { epoch: e } => {
                    let m = Mutation::EpochChange { epoch: e };
                    epochs_changed |= apply_to(&mut memtable, &epoch, &mut epochs, end, &m);
                }
                op => memtable.apply_op(end, op),
            },
        )?;
        // An epoch whose record did not survive never began.
        epochs_changed |= epochs.truncate_at(recovered.end_lsn);
        if epochs_changed || !storage.exists(&crate::epochs::epochs_path(&data_dir)) {
            epochs.store(&*storage, &data_dir)?;
        }
        epoch.store(epochs.current(), Ordering::Release);
        if let Some(c) = ckpt.as_ref().filter(|_| consistent_at.is_none()) {
            if recovered.end_lsn < c.end_lsn {
                return Err(EngineError::WalBehindCheckpoint {
                    checkpoint: c.path.clone(),
                    needed: c.end_lsn,
                    wal_end: recovered.end_lsn,
                });
            }
        }
        let no_segments = recovered.segments.is_empty();
        let end_lsn = recovered.end_lsn;
        let wal = Wal::start(
            storage.clone(),
            wal_dir.clone(),
            Segments::from_map(recovered.segments),
            end_lsn,
            FlushSettings {
                policy: cfg.fsync,
                sync_method: cfg.wal_sync_method,
                commit_delay: cfg.commit_delay.clone(),
            },
            control.cluster_id,
            cfg.segment_size_bytes,
        );
        if no_segments {
            wal.activate_segment(end_lsn, epoch.load(Ordering::Acquire))?;
            wal.sync_to(end_lsn)?;
        }
        let recovery = RecoveryInfo {
            checkpoint: ckpt.as_ref().map(|c| c.path.clone()),
            from_lsn,
            end_lsn,
            records: recovered.records,
            torn_bytes: recovered.torn_bytes,
            duration: started.elapsed(),
        };
        tracing::info!(
            from_lsn,
            end_lsn,
            records = recovered.records,
            keys = memtable.len(),
            ms = recovery.duration.as_millis() as u64,
            "recovery complete"
        );
        let last_checkpoint_lsn = ckpt.as_ref().map_or(0, |c| c.redo_lsn);
        let inner = Arc::new(Inner {
            storage,
            wal_dir,
            ckpt_dir,
            cluster_id: control.cluster_id,
            epoch,
            epochs: Mutex::new(epochs),
            memtable: RwLock::new(memtable),
            wal,
            checkpoint_lock: Mutex::new(ckpt),
            retention: RwLock::new(Vec::new()),
            checkpoints: AtomicU64::new(0),
            checkpoint_ms_total: AtomicU64::new(0),
            last_checkpoint_ms: AtomicU64::new(0),
            last_checkpoint_lsn: AtomicU64::new(last_checkpoint_lsn),
            changes: AtomicU64::new(recovered.records),
            changes_at_checkpoint: AtomicU64::new(0),
            consistent_at: AtomicU64::new(consistent_at.unwrap_or(0)),
            recovery,
            stop: Mutex::new(false),
            stop_cv: Condvar::new(),
            closed: AtomicBool::new(false),
            checkpointer: Mutex::new(None),
            cfg,
        });
        {
            let weak = Arc::downgrade(&inner);
            let handle = std::thread::Builder::new()
                .name("checkpointer".into())
                .spawn(move || checkpointer_loop(weak))
                .expect("spawn the checkpointer thread");
            *inner.checkpointer.lock() = Some(handle);
        }
        Ok(Engine { inner })
    }

    /// The settings the engine was opened with.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.cfg
    }

    /// What recovery did.
    pub fn recovery_info(&self) -> &RecoveryInfo {
        &self.inner.recovery
    }

    /// The value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<Bytes> {
        self.inner.memtable.read().get(key)
    }

    /// The value of `key` and the end LSN of the write that set it.
    pub fn get_entry(&self, key: &[u8]) -> Option<Entry> {
        self.inner.memtable.read().entry(key)
    }

    /// Whether `key` exists.
    pub fn contains_key(&self, key: &[u8]) -> bool {
        self.inner.memtable.read().contains_key(key)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.inner.memtable.read().len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Up to `limit` keys strictly greater than `after`, ascending.
    pub fn scan(&self, after: Option<&[u8]>, limit: usize) -> Vec<Bytes> {
        self.inner
            .memtable
            .read()
            .range_after(after, limit)
            .map(|(k, _)| Bytes::copy_from_slice(k))
            .collect()
    }

    /// Runs `f` on the current state while holding the single writer slot,
    /// then logs and applies the mutation it returns, atomically with
    /// respect to every other write. Readers are not blocked while `f` runs.
    ///
    /// Returns the write's end LSN. The write is visible at once but NOT yet
    /// durable: await [`Engine::wait_durable`] before acknowledging it.
    pub fn transact<R>(
        &self,
        f: impl FnOnce(&Memtable) -> (Option<Mutation>, R),
    ) -> Result<(Option<Lsn>, R), WriteError> {
        let inner = &*self.inner;
        let guard = inner.memtable.upgradable_read();
        let (m, r) = f(&guard);
        let Some(m) = m else { return Ok((None, r)) };
        self.check_limits(&m)?;
        let lsn = inner.wal.append(&m, inner.epoch.load(Ordering::Acquire))?;
        let mut w = RwLockUpgradableReadGuard::upgrade(guard);
        if apply_to(&mut w, &inner.epoch, &mut inner.epochs.lock(), lsn, &m) {
            self.store_epochs();
        }
        inner.changes.fetch_add(1, Ordering::Relaxed);
        Ok((Some(lsn), r))
    }

    /// Persists the epoch history. A failure is logged, not fatal: recovery
    /// rebuilds the history from the EpochChange records in the WAL.
    fn store_epochs(&self) {
        let h = self.inner.epochs.lock().clone();
        if let Err(e) = h.store(&*self.inner.storage, &self.inner.cfg.data_dir) {
            tracing::error!(error = %e, "could not persist the epoch history");
        }
    }

    /// Starts a new epoch (a promotion): logs an EpochChange record for
    /// a number above the current one (see [`epoch_step`]). Returns the new epoch and the record's start and end
    /// LSN; await [`Engine::wait_durable`] on the end LSN.
    pub fn begin_epoch(&self) -> Result<(u64, Lsn, Lsn), WriteError> {
        self.begin_epoch_above(0)
    }

    /// [`Engine::begin_epoch`] with an epoch number above `floor` too (a
    /// newer epoch this node heard of but never saw).
    pub fn begin_epoch_above(&self, floor: u64) -> Result<(u64, Lsn, Lsn), WriteError> {
        let (end, epoch) = self.transact(|_| {
            let next = self.epoch().max(floor) + epoch_step();
            (Some(Mutation::EpochChange { epoch: next }), next)
        })?;
        let end = end.expect("an epoch change was logged");
        Ok((epoch, end - (RECORD_HEADER_BYTES + 8) as u64, end))
    }

    /// Whether this node can cut its WAL back to `fork_lsn` itself (see
    /// [`crate::rewind`]); the error says why a base backup is needed instead.
    pub fn can_rewind_to(&self, fork_lsn: Lsn) -> Result<(), String> {
        let inner = &*self.inner;
        if fork_lsn > self.end_lsn() {
            return Err(format!(
                "the fork LSN {fork_lsn} is past this node's WAL end {}",
                self.end_lsn()
            ));
        }
        let consistent_at = inner.consistent_at.load(Ordering::Acquire);
        if consistent_at > fork_lsn {
            return Err(format!(
                "this node's state is consistent only from LSN {consistent_at} (a base backup), past the fork"
            ));
        }
        match inner.checkpoint_lock.lock().as_ref() {
            Some(c) if c.end_lsn > fork_lsn => Err(format!(
                "its newest checkpoint holds writes up to LSN {}, past the fork",
                c.end_lsn
            )),
            Some(_) => Ok(()),
            None if self.stats().oldest_lsn > 0 => {
                Err("it has no checkpoint and its WAL does not start at LSN 0".into())
            }
            None => Ok(()),
        }
    }

    /// Copies the WAL from `fork_lsn` (or the oldest LSN still on disk, if
    /// later) to the end into `<data-dir>/rewound/`, durably. Nothing is cut.
    pub fn save_wal_past(&self, fork_lsn: Lsn) -> Result<crate::rewind::Rewound, EngineError> {
        let from = fork_lsn.max(self.stats().oldest_lsn);
        let end = self.written_lsn();
        let mut wal = Vec::with_capacity(usize::try_from(end.saturating_sub(from)).unwrap_or(0));
        while (from + wal.len() as u64) < end {
            let chunk = self.read_wal(from + wal.len() as u64, 16 << 20)?;
            if chunk.is_empty() {
                break;
            }
            wal.extend_from_slice(&chunk);
        }
        crate::rewind::save_rewound(
            &*self.inner.storage,
            &self.inner.cfg.data_dir,
            self.cluster_id(),
            self.epoch(),
            from,
            &wal,
        )
    }

    /// Where each epoch began, oldest first.
    pub fn epoch_history(&self) -> EpochHistory {
        self.inner.epochs.lock().clone()
    }

    /// Logs and applies one mutation; see [`Engine::transact`].
    pub fn write(&self, m: Mutation) -> Result<Lsn, WriteError> {
        let (lsn, ()) = self.transact(|_| (Some(m), ()))?;
        Ok(lsn.expect("a mutation was given"))
    }

    fn check_limits(&self, m: &Mutation) -> Result<(), WriteError> {
        let cfg = &self.inner.cfg;
        let check = |key: &Bytes, value: Option<&Bytes>| -> Result<(), WriteError> {
            if key.len() as u64 > cfg.max_key_bytes {
                return Err(WriteError::TooLarge {
                    what: "key",
                    len: key.len() as u64,
                    max: cfg.max_key_bytes,
                });
            }
            if let Some(v) = value.filter(|v| v.len() as u64 > cfg.max_value_bytes) {
                return Err(WriteError::TooLarge {
                    what: "value",
                    len: v.len() as u64,
                    max: cfg.max_value_bytes,
                });
            }
            Ok(())
        };
        match m {
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
            Mutation::Clear | Mutation::EpochChange { .. } => {}
        }
        let len = m.payload_len() as u64;
        if len > u64::from(RECORD_PAYLOAD_MAX_BYTES) {
            return Err(WriteError::TooLarge {
                what: "WAL record",
                len,
                max: u64::from(RECORD_PAYLOAD_MAX_BYTES),
            });
        }
        Ok(())
    }

    /// Completes when the write ending at `lsn` is durable under the fsync policy.
    pub async fn wait_durable(&self, lsn: Lsn) -> Result<(), WriteError> {
        self.inner.wal.wait_durable(lsn).await
    }

    /// Makes `lsn` durable on the calling thread if this writer is alone (the
    /// WAL flusher idle, no other writer waiting for a flush or holding a
    /// [`Engine::waiting_writer`] guard); otherwise leaves it to the
    /// flusher. Blocks for one durable write when it writes; call it right
    /// before [`Engine::wait_durable`].
    pub fn flush_if_alone(&self, lsn: Lsn) {
        self.inner.wal.flush_inline_alone(lsn)
    }

    /// Counts the caller as a writer waiting for its acknowledgement (local
    /// or by standbys) until the guard is dropped; see
    /// [`Engine::flush_if_alone`].
    pub fn waiting_writer(&self) -> WaitingWriter {
        self.inner.wal.waiting_writer()
    }

    /// Blocking form of [`Engine::wait_durable`]; never call it inside an async runtime.
    pub fn wait_durable_blocking(&self, lsn: Lsn) -> Result<(), WriteError> {
        self.inner.wal.wait_durable_blocking(lsn)
    }

    /// Blocks until the WAL is fsynced up to `lsn`, whatever the fsync policy.
    pub fn sync_to(&self, lsn: Lsn) -> Result<(), WriteError> {
        self.inner.wal.sync_to(lsn)
    }

    /// Appends WAL received from a primary: `bytes` must be whole records
    /// starting exactly at this node's WAL end, each valid at its LSN. They
    /// are written byte for byte (so the streams stay identical) and applied
    /// through the same path recovery uses, then written on the calling
    /// thread if the WAL flusher is idle (else by the flusher). Returns the
    /// new end LSN; await [`Engine::wait_durable`] for durability. Anything
    /// invalid is refused before any byte is written.
    pub fn append_replicated(&self, start_lsn: Lsn, bytes: &Bytes) -> Result<Lsn, WriteError> {
        let inner = &*self.inner;
        let guard = inner.memtable.upgradable_read();
        let end = inner.wal.end_lsn();
        if start_lsn != end {
            return Err(WriteError::BadReplicatedWal(format!(
                "chunk starts at LSN {start_lsn} but this node's WAL ends at LSN {end}"
            )));
        }
        let mut decoded = Vec::new();
        let mut off = 0usize;
        while off < bytes.len() {
            let lsn = start_lsn + off as u64;
            match record::parse(lsn, &bytes.slice(off..)) {
                Parsed::Record {
                    rtype,
                    payload,
                    len,
                } => {
                    let m = Mutation::decode(rtype, &payload).map_err(|e| {
                        WriteError::BadReplicatedWal(format!("record at LSN {lsn}: {e}"))
                    })?;
                    off += len;
                    decoded.push((start_lsn + off as u64, m));
                }
                Parsed::End => {
                    return Err(WriteError::BadReplicatedWal(format!(
                        "zero header at LSN {lsn}"
                    )))
                }
                Parsed::Incomplete => {
                    return Err(WriteError::BadReplicatedWal(format!(
                        "incomplete record at LSN {lsn}"
                    )))
                }
                Parsed::Corrupt(r) => {
                    return Err(WriteError::BadReplicatedWal(format!(
                        "record at LSN {lsn}: {r}"
                    )))
                }
            }
        }
        if decoded.is_empty() {
            return Ok(end);
        }
        // No check against this node's --max-key-size / --max-value-size:
        // those bound what clients may send, and the primary already
        // accepted these writes (a standby configured with a smaller limit
        // would otherwise stop at the first larger value, for good).
        let new_end = inner.wal.append_raw(
            start_lsn,
            bytes,
            decoded.len() as u64,
            inner.epoch.load(Ordering::Acquire),
        )?;
        let mut w = RwLockUpgradableReadGuard::upgrade(guard);
        let mut new_epoch = false;
        for (lsn, m) in &decoded {
            new_epoch |= apply_to(&mut w, &inner.epoch, &mut inner.epochs.lock(), *lsn, m);
        }
        inner
            .changes
            .fetch_add(decoded.len() as u64, Ordering::Relaxed);
        drop(w);
        if new_epoch {
            self.store_epochs();
        }
        // Writes the chunk on this thread when the flusher is idle (one
        // thread hop less before a standby's flush is reported).
        inner.wal.flush_inline();
        Ok(new_end)
    }

    /// Raw WAL bytes from `from_lsn`, at most `max_bytes`, up to the
    /// sendable LSN (bytes handed to the WAL flusher, maybe not yet written
    /// or fsynced). Empty when nothing new.
    pub fn read_wal(&self, from_lsn: Lsn, max_bytes: usize) -> Result<Bytes, EngineError> {
        let shared = &self.inner.wal.shared;
        let sendable = shared.sendable_lsn();
        let oldest = shared.segments.first_lsn().unwrap_or(sendable);
        if from_lsn < oldest {
            return Err(EngineError::WalRemoved {
                lsn: from_lsn,
                oldest,
            });
        }
        if from_lsn >= sendable {
            return Ok(Bytes::new());
        }
        let len = usize::try_from((sendable - from_lsn).min(max_bytes as u64))
            .expect("bounded by max_bytes");
        // The newest bytes come from memory (they may not be in the files
        // yet); older ones from the files, up to where memory starts.
        let in_memory_from = match shared.read_recent(from_lsn, len) {
            Ok(bytes) => return Ok(Bytes::from(bytes)),
            Err(lsn) => lsn,
        };
        let len = usize::try_from((in_memory_from.saturating_sub(from_lsn)).min(len as u64))
            .expect("bounded by len");
        if len == 0 {
            return Ok(Bytes::new());
        }
        shared
            .segments
            .read(from_lsn, len, shared.written_lsn())
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    EngineError::WalRemoved {
                        lsn: from_lsn,
                        oldest: shared.segments.first_lsn().unwrap_or(sendable),
                    }
                } else {
                    EngineError::io(&self.inner.wal_dir, e)
                }
            })
    }

    /// The WAL segment file holding `lsn`, if it is still on disk.
    pub fn wal_file_for(&self, lsn: Lsn) -> Option<PathBuf> {
        let seg = self.inner.wal.shared.segments.find(lsn)?;
        Some(seg.path.clone())
    }

    /// A channel that changes whenever more WAL may be sent (value: the
    /// sendable LSN, see [`Engine::read_wal`]).
    pub fn subscribe_sendable(&self) -> watch::Receiver<Lsn> {
        self.inner.wal.shared.subscribe_sendable()
    }

    /// Installs (or with `None` removes) the function the WAL flusher calls
    /// with each batch the moment it becomes sendable, before writing it
    /// (see [`SendableListener`]). One per engine; a later call replaces it.
    pub fn set_sendable_listener(&self, listener: Option<SendableListener>) {
        self.inner.wal.shared.set_sendable_listener(listener);
    }

    /// Installs (or removes) the function the WAL flusher calls after it
    /// publishes a new written or flushed LSN (see [`ProgressListener`]).
    pub fn set_progress_listener(&self, listener: Option<ProgressListener>) {
        self.inner.wal.shared.set_progress_listener(listener);
    }

    /// A handle that does not keep the engine open.
    pub fn downgrade(&self) -> WeakEngine {
        WeakEngine {
            inner: Arc::downgrade(&self.inner),
        }
    }

    /// A channel that changes whenever more WAL is written (value: written LSN).
    pub fn subscribe_written(&self) -> watch::Receiver<Lsn> {
        self.inner.wal.shared.subscribe_written()
    }

    /// A channel that changes whenever more WAL is fsynced (value: flushed LSN).
    pub fn subscribe_flushed(&self) -> watch::Receiver<Lsn> {
        self.inner.wal.shared.subscribe_flushed()
    }

    /// Registers something that needs WAL kept (a replication slot).
    pub fn add_retention(&self, hook: Arc<dyn WalRetention>) {
        self.inner.retention.write().push(hook);
    }

    /// The newest checkpoint (taken or loaded), if any. Its file may be
    /// removed by the next checkpoint.
    pub fn latest_checkpoint(&self) -> Option<CheckpointInfo> {
        self.inner.checkpoint_lock.lock().clone()
    }

    /// Takes a checkpoint now, then removes WAL no longer needed. Blocking;
    /// writers go on meanwhile.
    pub fn checkpoint(&self) -> Result<CheckpointInfo, EngineError> {
        let inner = &*self.inner;
        let mut last = inner.checkpoint_lock.lock();
        if let Some(reason) = inner.wal.shared.poison_reason() {
            return Err(WriteError::Poisoned(reason).into());
        }
        if !self.is_consistent() {
            // A snapshot now would persist a half-replayed base backup.
            return Err(EngineError::Checkpoint(format!(
                "not consistent yet: the WAL must reach LSN {} first",
                inner.consistent_at.load(Ordering::Acquire)
            )));
        }
        let started = Instant::now();
        let (redo_lsn, epoch, changes) = {
            // The writer slot excludes a write between its append and its apply.
            let _g = inner.memtable.upgradable_read();
            (
                inner.wal.end_lsn(),
                inner.epoch.load(Ordering::Acquire),
                inner.changes.load(Ordering::Relaxed),
            )
        };
        if let Some(prev) = last.as_ref().filter(|c| c.redo_lsn == redo_lsn) {
            return Ok(prev.clone());
        }
        let mut writer = CheckpointWriter::create(&*inner.storage, &inner.ckpt_dir, redo_lsn)?;
        let result = (|| {
            let mut after: Option<Box<[u8]>> = None;
            loop {
                let chunk: Vec<(Box<[u8]>, Value)> = {
                    let mt = inner.memtable.read();
                    mt.range_after(after.as_deref(), 1024)
                        .map(|(k, v)| (k.into(), v.clone()))
                        .collect()
                };
                let Some((last_key, _)) = chunk.last() else {
                    break;
                };
                after = Some(last_key.clone());
                for (k, v) in &chunk {
                    writer.push(k, v.lsn(), v.bytes())?;
                }
            }
            let end_lsn = inner.wal.end_lsn();
            // IMPORTANT: the WAL must hold everything the snapshot may contain
            // before the snapshot exists, or a crash could resurrect a write
            // that was never durable.
            inner.wal.sync_to(end_lsn)?;
            Ok::<_, EngineError>(end_lsn)
        })();
        let end_lsn = match result {
            Ok(e) => e,
            Err(e) => {
                writer.abandon();
                return Err(EngineError::Checkpoint(e.to_string()));
            }
        };
        let info = writer
            .finish(inner.cluster_id, epoch, end_lsn)
            .map_err(|e| EngineError::Checkpoint(e.to_string()))?;
        let ms = started.elapsed().as_millis() as u64;
        inner.checkpoints.fetch_add(1, Ordering::Relaxed);
        inner.checkpoint_ms_total.fetch_add(ms, Ordering::Relaxed);
        inner.last_checkpoint_ms.store(ms, Ordering::Relaxed);
        inner.last_checkpoint_lsn.store(redo_lsn, Ordering::Relaxed);
        inner
            .changes_at_checkpoint
            .store(changes, Ordering::Relaxed);
        tracing::info!(
            redo_lsn,
            end_lsn,
            entries = info.entries,
            bytes = info.bytes,
            ms,
            "checkpoint complete"
        );
        *last = Some(info.clone());
        drop(last);
        self.remove_old_files(redo_lsn);
        Ok(info)
    }

    /// Removes checkpoints older than the newest and WAL below what is needed.
    fn remove_old_files(&self, redo_lsn: Lsn) {
        let inner = &*self.inner;
        let storage = &*inner.storage;
        if let Ok(list) = checkpoint::list(storage, &inner.ckpt_dir) {
            for (lsn, path) in list.into_iter().filter(|(lsn, _)| *lsn < redo_lsn) {
                if let Err(e) = storage.remove(&path) {
                    tracing::warn!(file = %path.display(), lsn, error = %e, "could not remove an old checkpoint");
                }
            }
        }
        let keep_from = self.wal_keep_from(redo_lsn);
        let mut doomed = inner.wal.shared.segments.remove_below(keep_from);
        // Oldest first, stopping at the first failure: what is left is
        // always one contiguous run of segments (a gap below the checkpoint
        // would otherwise look like a missing segment), and the segments
        // not removed stay known, to be removed at the next checkpoint.
        for i in 0..doomed.len() {
            if let Err(e) = storage.remove(&doomed[i].path) {
                tracing::warn!(file = %doomed[i].path.display(), error = %e, "could not remove an old WAL segment; it and the newer ones below the checkpoint are kept until the next checkpoint");
                for seg in doomed.drain(i..) {
                    inner.wal.shared.segments.insert(seg);
                }
                break;
            }
        }
        if !doomed.is_empty() {
            tracing::debug!(
                segments = doomed.len(),
                keep_from,
                "removed WAL segments below the checkpoint"
            );
            let _ = storage.sync_dir(&inner.wal_dir);
        }
        let _ = storage.sync_dir(&inner.ckpt_dir);
    }

    /// Lowest LSN the WAL must keep: the checkpoint's redo LSN, or lower if a
    /// retention hook needs it.
    pub fn wal_keep_from(&self, redo_lsn: Lsn) -> Lsn {
        let hooks = self.inner.retention.read();
        let end = self.end_lsn();
        hooks
            .iter()
            .filter_map(|h| h.min_retained_lsn(end))
            .fold(redo_lsn, Lsn::min)
    }

    /// Makes everything durable and stops background threads. Later writes fail with [`WriteError::Closed`].
    pub fn shutdown(&self) -> Result<(), EngineError> {
        let inner = &*self.inner;
        if inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        {
            *inner.stop.lock() = true;
            inner.stop_cv.notify_all();
        }
        if let Some(h) = inner.checkpointer.lock().take() {
            let _ = h.join();
        }
        let end = inner.wal.end_lsn();
        let synced = inner.wal.sync_to(end);
        inner.wal.shutdown();
        if let Some(reason) = inner.wal.shared.poison_reason() {
            return Err(WriteError::Poisoned(reason).into());
        }
        synced.map_err(EngineError::from)
    }

    /// Counters for metrics.
    pub fn stats(&self) -> EngineStats {
        let inner = &*self.inner;
        let c = &inner.wal.shared.counters;
        let (keys, data_bytes) = {
            let mt = inner.memtable.read();
            (mt.len() as u64, mt.data_bytes())
        };
        EngineStats {
            wal_bytes_written: c.bytes_written.load(Ordering::Relaxed),
            records_appended: c.records_appended.load(Ordering::Relaxed),
            flush_batches: c.flush_batches.load(Ordering::Relaxed),
            commit_delays: c.commit_delays.load(Ordering::Relaxed),
            inline_flushes: c.inline_flushes.load(Ordering::Relaxed),
            fsyncs: c.fsyncs.load(Ordering::Relaxed),
            segments_created: c.segments_created.load(Ordering::Relaxed),
            wal_segments: inner.wal.shared.segments.count() as u64,
            oldest_lsn: inner.wal.shared.segments.first_lsn().unwrap_or(0),
            end_lsn: inner.wal.end_lsn(),
            written_lsn: inner.wal.shared.written_lsn(),
            flushed_lsn: inner.wal.shared.synced_lsn(),
            checkpoints: inner.checkpoints.load(Ordering::Relaxed),
            checkpoint_ms_total: inner.checkpoint_ms_total.load(Ordering::Relaxed),
            last_checkpoint_ms: inner.last_checkpoint_ms.load(Ordering::Relaxed),
            last_checkpoint_lsn: inner.last_checkpoint_lsn.load(Ordering::Relaxed),
            changes_since_checkpoint: inner
                .changes
                .load(Ordering::Relaxed)
                .saturating_sub(inner.changes_at_checkpoint.load(Ordering::Relaxed)),
            keys,
            data_bytes,
            poisoned: inner.wal.shared.poison_reason().is_some(),
        }
    }

    /// False while a freshly installed base backup is still being replayed
    /// up to its consistency point: the state must not be read or checkpointed yet.
    pub fn is_consistent(&self) -> bool {
        let at = self.inner.consistent_at.load(Ordering::Acquire);
        at == 0 || self.end_lsn() >= at
    }

    /// Clears the consistency marker once the WAL is durable past it.
    fn settle_consistency(&self) {
        let inner = &*self.inner;
        let at = inner.consistent_at.load(Ordering::Acquire);
        if at != 0 && inner.wal.shared.synced_lsn() >= at {
            match crate::basebackup::set_consistent_at(&*inner.storage, &inner.cfg.data_dir, None) {
                Ok(()) => {
                    inner.consistent_at.store(0, Ordering::Release);
                    tracing::info!(lsn = at, "reached a consistent state after the base backup");
                }
                Err(e) => tracing::warn!(error = %e, "could not clear the consistency marker"),
            }
        }
    }

    /// Where the next record goes.
    pub fn end_lsn(&self) -> Lsn {
        self.inner.wal.end_lsn()
    }

    /// WAL handed to the WAL flusher up to here: replication may send it
    /// ([`Engine::read_wal`]), though it may not be written yet.
    pub fn sendable_lsn(&self) -> Lsn {
        self.inner.wal.shared.sendable_lsn()
    }

    /// WAL handed to the OS up to here (or written durably).
    pub fn written_lsn(&self) -> Lsn {
        self.inner.wal.shared.written_lsn()
    }

    /// Writes up to here are durable under the fsync policy (acknowledgeable).
    pub fn durable_lsn(&self) -> Lsn {
        self.inner.wal.shared.ack_lsn()
    }

    /// WAL fsynced up to here.
    pub fn flushed_lsn(&self) -> Lsn {
        self.inner.wal.shared.synced_lsn()
    }

    /// Identity of the cluster this data directory belongs to.
    pub fn cluster_id(&self) -> u64 {
        self.inner.cluster_id
    }

    /// Current epoch (timeline).
    pub fn epoch(&self) -> u64 {
        self.inner.epoch.load(Ordering::Acquire)
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.inner.cfg.data_dir
    }

    /// The fsync policy.
    pub fn fsync_policy(&self) -> FsyncPolicy {
        self.inner.cfg.fsync
    }
}

/// How far above the highest epoch seen a new epoch goes: 1 plus a random
/// gap below 2^16. Two nodes that start an epoch from the same history at
/// the same LSN (a promoted standby, and its old primary restarted as a
/// primary; or two standbys promoted at once) then take different numbers
/// (but for a 1 in 65,536 chance), so their histories never pass as one:
/// replication decides where histories part on (epoch, start LSN) pairs
/// alone. With `+ 1` both took the same number, and a standby holding the
/// other history's records could stream on or rewind short. Epochs still
/// only grow: the newer history keeps the higher number.
fn epoch_step() -> u64 {
    use std::hash::BuildHasher;
    const GAP: u64 = 1 << 16;
    let random =
        std::collections::hash_map::RandomState::new().hash_one(std::time::SystemTime::now());
    1 + random % GAP
}

impl Drop for Inner {
    fn drop(&mut self) {
        *self.stop.lock() = true;
        self.stop_cv.notify_all();
        // The checkpointer holds only a weak reference; the WAL's own Drop
        // stops the flusher after it made everything durable.
    }
}

fn checkpointer_loop(engine: std::sync::Weak<Inner>) {
    loop {
        let Some(inner) = engine.upgrade() else {
            return;
        };
        {
            let mut stop = inner.stop.lock();
            if *stop {
                return;
            }
            inner
                .stop_cv
                .wait_for(&mut stop, Duration::from_millis(200));
            if *stop {
                return;
            }
        }
        Engine {
            inner: inner.clone(),
        }
        .settle_consistency();
        let due = inner.cfg.checkpoint_every_bytes > 0
            && inner
                .wal
                .end_lsn()
                .saturating_sub(inner.last_checkpoint_lsn.load(Ordering::Relaxed))
                >= inner.cfg.checkpoint_every_bytes;
        if due && inner.wal.shared.poison_reason().is_none() {
            let e = Engine { inner };
            if let Err(err) = e.checkpoint() {
                tracing::warn!(error = %err, "automatic checkpoint failed; will retry");
            }
        }
    }
}
