//! The one place the server touches the storage engine.
//!
//! Commands see [`Store`], [`View`], [`Mutation`] and [`BatchOp`]. `Store`
//! is a thin wrapper over [`walship_engine::Engine`] that maps the server's
//! configuration onto the engine's and its counters onto what INFO and
//! `/metrics` report.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use walship_engine::storage::WriteOutStats;
use walship_engine::{CommitDelay, Engine, EngineConfig, FsyncPolicy, SimStorage};
use walship_replication::EngineHandle;

use crate::config::{FsyncSetting, ServerConfig};

pub use walship_engine::{BatchOp, CheckpointInfo, Lsn, Mutation, RecoveryInfo, WriteError};

/// What a `transact` closure reads: the current state, under the writer slot.
pub type View = walship_engine::MemtableView;

/// Counters the server reports (INFO, /metrics, /status).
#[derive(Debug, Clone, Default)]
pub struct StoreStats {
    pub wal_bytes_written: u64,
    pub fsyncs: u64,
    pub records_written: u64,
    /// Group-commit batches (one write + one fsync for many records).
    pub group_commits: u64,
    /// Group commits the flusher delayed (`commit_delay_us`).
    pub commit_delays: u64,
    /// Batches written by the thread that appended them (flusher idle).
    pub inline_flushes: u64,
    pub wal_segments: u64,
    pub written_lsn: Lsn,
    pub checkpoints: u64,
    pub checkpoint_ms_total: u64,
    pub last_checkpoint_ms: u64,
    pub last_checkpoint_lsn: Lsn,
    pub changes_since_checkpoint: u64,
    pub data_bytes: u64,
    /// Writes are refused after an I/O failure until restart.
    pub poisoned: bool,
}

/// A cheap-to-clone handle on the storage engine. On a standby the engine
/// behind it is replaced when a base backup is installed, so every call
/// looks it up afresh.
#[derive(Clone)]
pub struct Store {
    handle: EngineHandle,
    /// With `--simulate-power-loss`: the simulated device the engine runs on.
    sim: Option<SimStorage>,
}

/// Entries of the data directory that other parts of the server keep on the
/// real disk (the lock, replication slots), so the power-loss simulator
/// neither loads nor writes them back.
fn kept_on_real_disk(data_dir: &Path, path: &Path) -> bool {
    path.strip_prefix(data_dir)
        .ok()
        .and_then(|rel| rel.components().next())
        .is_some_and(|first| {
            let first = first.as_os_str();
            first == crate::lock::DataDirLock::FILE_NAME || first == "slots"
        })
}

fn fsync_policy(s: FsyncSetting) -> FsyncPolicy {
    match s {
        FsyncSetting::Always => FsyncPolicy::Always,
        FsyncSetting::IntervalMs(ms) => FsyncPolicy::IntervalMs(ms),
        FsyncSetting::Never => FsyncPolicy::Never,
    }
}

/// The engine settings for a server configuration.
pub fn engine_config(cfg: &ServerConfig) -> EngineConfig {
    let mut ec = EngineConfig::new(&cfg.data_dir);
    ec.fsync = fsync_policy(cfg.fsync);
    ec.wal_sync_method = cfg.wal_sync_method;
    if let Some(s) = cfg.segment_size_bytes {
        ec.segment_size_bytes = s;
    }
    if let Some(c) = cfg.checkpoint_every_bytes {
        ec.checkpoint_every_bytes = c;
    }
    ec.max_key_bytes = cfg.max_key_bytes;
    ec.max_value_bytes = cfg.max_value_bytes;
    ec.commit_delay = Arc::new(
        CommitDelay::new(cfg.commit_delay_us, cfg.commit_siblings)
            .expect("validated with the configuration"),
    );
    ec
}

impl Store {
    /// Opens the engine in `cfg.data_dir`, running recovery. Blocking.
    pub fn open(cfg: &ServerConfig) -> anyhow::Result<Store> {
        let mut ecfg = engine_config(cfg);
        let sim = if cfg.simulate_power_loss {
            std::fs::create_dir_all(&cfg.data_dir)
                .with_context(|| format!("cannot create {}", cfg.data_dir.display()))?;
            let dir = cfg.data_dir.clone();
            let sim = SimStorage::load_dir(&cfg.data_dir, &|p| kept_on_real_disk(&dir, p))
                .with_context(|| {
                    format!(
                        "cannot load {} into the power-loss simulator",
                        cfg.data_dir.display()
                    )
                })?;
            tracing::warn!(
                data_dir = %cfg.data_dir.display(),
                "--simulate-power-loss: the engine runs on an in-memory simulated device \
                 (a testing aid); only DEBUG POWERLOSS or a clean shutdown writes it back"
            );
            ecfg.storage = Arc::new(sim.clone());
            Some(sim)
        } else {
            None
        };
        let engine = Engine::open(ecfg.clone()).with_context(|| {
            format!("cannot open the data directory {}", cfg.data_dir.display())
        })?;
        Ok(Store {
            handle: EngineHandle::new(engine, ecfg),
            sim,
        })
    }

    /// With `--simulate-power-loss`: cuts the simulated device's power (no
    /// write after this instant can be made durable, so none is acknowledged)
    /// and writes what survived, torn by `tear_seed`, back to the data
    /// directory. `None` without the flag. The caller must exit at once.
    pub fn power_off(&self, tear_seed: Option<u64>) -> Option<std::io::Result<WriteOutStats>> {
        let sim = self.sim.as_ref()?;
        let image = sim.power_off(tear_seed);
        Some(image.write_to_dir(&self.data_dir()))
    }

    fn data_dir(&self) -> std::path::PathBuf {
        self.handle.load().config().data_dir.clone()
    }

    /// Whether the engine runs on the power-loss simulator.
    pub fn simulates_power_loss(&self) -> bool {
        self.sim.is_some()
    }

    /// Wraps an engine opened elsewhere (tests, embedding).
    pub fn from_engine(engine: Engine) -> Store {
        let cfg = engine.config().clone();
        Store {
            handle: EngineHandle::new(engine, cfg),
            sim: None,
        }
    }

    /// The engine serving now.
    pub fn engine(&self) -> Engine {
        self.handle.get()
    }

    /// False while a base backup is still being replayed to consistency.
    pub fn is_consistent(&self) -> bool {
        self.handle.load().is_consistent()
    }

    /// The swappable handle replication works with.
    pub fn handle(&self) -> &EngineHandle {
        &self.handle
    }

    pub fn recovery_info(&self) -> RecoveryInfo {
        self.handle.load().recovery_info().clone()
    }

    pub fn get(&self, key: &[u8]) -> Option<Bytes> {
        self.handle.load().get(key)
    }

    pub fn contains_key(&self, key: &[u8]) -> bool {
        self.handle.load().contains_key(key)
    }

    pub fn len(&self) -> usize {
        self.handle.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.handle.load().is_empty()
    }

    /// Keys strictly greater than `after`, ascending, at most `limit`.
    pub fn scan(&self, after: Option<&[u8]>, limit: usize) -> Vec<Bytes> {
        self.handle.load().scan(after, limit)
    }

    /// Runs `f` under the writer slot, logs and applies the mutation it
    /// returns. The change is visible but NOT durable: see [`Store::wait_durable`].
    pub fn transact<R>(
        &self,
        f: impl FnOnce(&View) -> (Option<Mutation>, R),
    ) -> Result<(Option<Lsn>, R), WriteError> {
        self.handle.load().transact(f)
    }

    /// Completes when everything up to `lsn` is durable under the fsync policy.
    pub async fn wait_durable(&self, lsn: Lsn) -> Result<(), WriteError> {
        self.handle.load().wait_durable(lsn).await
    }

    /// Writes a checkpoint. Blocking: call from `spawn_blocking`/`block_in_place`.
    pub fn checkpoint(&self) -> anyhow::Result<CheckpointInfo> {
        Ok(self.handle.load().checkpoint()?)
    }

    /// Makes everything durable and stops background work. Blocking.
    pub fn shutdown(&self) -> anyhow::Result<()> {
        self.handle.load().shutdown()?;
        if let Some(sim) = &self.sim {
            // Everything is durable on the simulated device now; put it on the real one.
            let dir = self.data_dir();
            sim.power_loss(None).write_to_dir(&dir).with_context(|| {
                format!(
                    "cannot write the simulated device back to {}",
                    dir.display()
                )
            })?;
        }
        Ok(())
    }

    /// The group-commit delay settings, shared by every engine this store opens.
    pub fn commit_delay(&self) -> Arc<CommitDelay> {
        self.handle.load().config().commit_delay.clone()
    }

    pub fn stats(&self) -> StoreStats {
        let s = self.handle.load().stats();
        StoreStats {
            wal_bytes_written: s.wal_bytes_written,
            fsyncs: s.fsyncs,
            records_written: s.records_appended,
            group_commits: s.flush_batches,
            commit_delays: s.commit_delays,
            inline_flushes: s.inline_flushes,
            wal_segments: s.wal_segments,
            written_lsn: s.written_lsn,
            checkpoints: s.checkpoints,
            checkpoint_ms_total: s.checkpoint_ms_total,
            last_checkpoint_ms: s.last_checkpoint_ms,
            last_checkpoint_lsn: s.last_checkpoint_lsn,
            changes_since_checkpoint: s.changes_since_checkpoint,
            data_bytes: s.data_bytes,
            poisoned: s.poisoned,
        }
    }

    pub fn end_lsn(&self) -> Lsn {
        self.handle.load().end_lsn()
    }

    /// Writes up to here are durable under the fsync policy.
    pub fn durable_lsn(&self) -> Lsn {
        self.handle.load().durable_lsn()
    }

    pub fn flushed_lsn(&self) -> Lsn {
        self.handle.load().flushed_lsn()
    }

    pub fn cluster_id(&self) -> u64 {
        self.handle.load().cluster_id()
    }

    pub fn epoch(&self) -> u64 {
        self.handle.load().epoch()
    }
}
