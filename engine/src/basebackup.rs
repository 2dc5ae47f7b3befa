//! Installing a base backup on a standby.
//!
//! A base backup is the primary's newest checkpoint file plus its epoch
//! history; the WAL from the checkpoint's redo LSN then streams as usual. It
//! is installed in two steps so that a failed transfer leaves the old state
//! usable and a crash mid-install finishes on the next open:
//!
//! 1. [`BackupReceiver`] writes `basebackup.ckpt` and `basebackup.epochs`
//!    next to the current data, fsyncs them, verifies the checkpoint's CRCs,
//!    then writes the marker `basebackup.ready` atomically. Until the marker
//!    exists nothing of the old state was touched; an unfinished transfer's
//!    files are deleted at the next open.
//! 2. [`roll_forward`] (run by `Engine::open` whenever the marker exists)
//!    removes the old WAL and checkpoints, moves the staged files into
//!    place, rewrites `control`, records the LSN at which the state becomes
//!    consistent (`consistent_at`) and removes the marker. Every step is
//!    idempotent.
//!
//! Between the redo LSN and the checkpoint's end LSN the memtable is a fuzzy
//! copy that replay is still fixing up: the engine reports
//! [`crate::Engine::is_consistent`] = false until its WAL reaches that LSN, as a
//! PostgreSQL standby does before its consistent recovery point.

use crate::checkpoint;
use crate::control::Control;
use crate::epochs::EpochHistory;
use crate::error::EngineError;
use crate::storage::{self, Storage, StorageFile};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const READY_MAGIC: [u8; 8] = *b"WSHPBKUP";
const STAGED_CKPT: &str = "basebackup.ckpt";
const STAGED_EPOCHS: &str = "basebackup.epochs";
const READY: &str = "basebackup.ready";
const CONSISTENT_AT: &str = "consistent_at";

/// What the primary says about the backup it is about to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupMeta {
    /// The primary's cluster id.
    pub cluster_id: u64,
    /// Redo LSN of the checkpoint: WAL streams from here.
    pub redo_lsn: u64,
    /// End LSN of the checkpoint: the state is consistent once the WAL reaches it.
    pub end_lsn: u64,
    /// Bytes of the checkpoint file.
    pub checkpoint_bytes: u64,
}

/// Receives a base backup next to a data directory's current contents.
pub struct BackupReceiver {
    storage: Arc<dyn Storage>,
    data_dir: PathBuf,
    meta: BackupMeta,
    file: Arc<dyn StorageFile>,
    received: u64,
    epochs: Option<EpochHistory>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> EngineError + '_ {
    move |e| EngineError::io(path, e)
}

impl BackupReceiver {
    /// Starts receiving; removes leftovers of an earlier failed transfer.
    pub fn begin(
        storage: Arc<dyn Storage>,
        data_dir: &Path,
        meta: BackupMeta,
    ) -> Result<Self, EngineError> {
        storage.create_dir_all(data_dir).map_err(io(data_dir))?;
        discard_unfinished(&*storage, data_dir)?;
        let path = data_dir.join(STAGED_CKPT);
        let file = storage.create(&path).map_err(io(&path))?;
        Ok(BackupReceiver {
            storage,
            data_dir: data_dir.to_path_buf(),
            meta,
            file,
            received: 0,
            epochs: None,
        })
    }

    /// Writes the next piece of the checkpoint file; pieces arrive in order.
    pub fn write_checkpoint(&mut self, offset: u64, data: &[u8]) -> Result<(), EngineError> {
        let path = self.data_dir.join(STAGED_CKPT);
        if offset != self.received {
            return Err(EngineError::Checkpoint(format!(
                "base backup chunk at offset {offset}, expected {}",
                self.received
            )));
        }
        if offset + data.len() as u64 > self.meta.checkpoint_bytes {
            return Err(EngineError::Checkpoint(
                "base backup is longer than announced".into(),
            ));
        }
        self.file.write_all_at(data, offset).map_err(io(&path))?;
        self.received += data.len() as u64;
        Ok(())
    }

    /// The primary's epoch history.
    pub fn set_epochs(&mut self, encoded: &[u8]) -> Result<(), EngineError> {
        let h = EpochHistory::decode(encoded).map_err(|reason| EngineError::BadControl {
            file: self.data_dir.join(STAGED_EPOCHS),
            reason: format!("base backup epoch history: {reason}"),
        })?;
        self.epochs = Some(h);
        Ok(())
    }

    /// Verifies and durably stages the backup, then writes the ready marker.
    /// The old state is replaced at the next `Engine::open`.
    pub fn finish(self) -> Result<(), EngineError> {
        let storage = &*self.storage;
        let ckpt = self.data_dir.join(STAGED_CKPT);
        if self.received != self.meta.checkpoint_bytes {
            return Err(EngineError::Checkpoint(format!(
                "base backup incomplete: {} of {} checkpoint bytes",
                self.received, self.meta.checkpoint_bytes
            )));
        }
        let epochs = self.epochs.as_ref().ok_or_else(|| {
            EngineError::Checkpoint("base backup without an epoch history".into())
        })?;
        self.file.sync_data().map_err(io(&ckpt))?;
        let info = checkpoint::verify(storage, &ckpt, self.meta.cluster_id).map_err(|reason| {
            EngineError::Checkpoint(format!("base backup checkpoint does not verify: {reason}"))
        })?;
        if info.redo_lsn != self.meta.redo_lsn || info.end_lsn != self.meta.end_lsn {
            return Err(EngineError::Checkpoint(
                "base backup checkpoint does not match its announcement".into(),
            ));
        }
        let epochs_path = self.data_dir.join(STAGED_EPOCHS);
        storage::write_file_atomic(storage, &epochs_path, &epochs.encode())
            .map_err(io(&epochs_path))?;
        let mut marker = Vec::with_capacity(36);
        marker.extend_from_slice(&READY_MAGIC);
        marker.extend_from_slice(&self.meta.cluster_id.to_le_bytes());
        marker.extend_from_slice(&self.meta.redo_lsn.to_le_bytes());
        marker.extend_from_slice(&self.meta.end_lsn.to_le_bytes());
        let crc = crc32fast::hash(&marker);
        marker.extend_from_slice(&crc.to_le_bytes());
        let ready = self.data_dir.join(READY);
        // IMPORTANT: the marker is the commit point: written atomically, after everything it names is durable.
        storage::write_file_atomic(storage, &ready, &marker).map_err(io(&ready))?;
        Ok(())
    }
}

/// Deletes the staged files of a transfer that never reached its marker.
fn discard_unfinished(storage: &dyn Storage, data_dir: &Path) -> Result<(), EngineError> {
    if storage.exists(&data_dir.join(READY)) {
        return Ok(());
    }
    for name in [STAGED_CKPT, STAGED_EPOCHS] {
        let p = data_dir.join(name);
        if storage.exists(&p) {
            storage.remove(&p).map_err(io(&p))?;
        }
    }
    Ok(())
}

/// Finishes installing a staged base backup, if one is ready. Returns true if it did.
pub(crate) fn roll_forward(storage: &dyn Storage, data_dir: &Path) -> Result<bool, EngineError> {
    let ready = data_dir.join(READY);
    if !storage.exists(&ready) {
        discard_unfinished(storage, data_dir)?;
        return Ok(false);
    }
    let m = storage::read_file(storage, &ready).map_err(io(&ready))?;
    let bad = |reason: &str| EngineError::BadControl {
        file: ready.clone(),
        reason: reason.to_string(),
    };
    if m.len() != 36 || m[0..8] != READY_MAGIC {
        return Err(bad("not a base backup marker"));
    }
    if crc32fast::hash(&m[..32]) != u32::from_le_bytes(m[32..36].try_into().expect("4 bytes")) {
        return Err(bad("CRC mismatch"));
    }
    let cluster_id = u64::from_le_bytes(m[8..16].try_into().expect("8 bytes"));
    let redo_lsn = u64::from_le_bytes(m[16..24].try_into().expect("8 bytes"));
    let end_lsn = u64::from_le_bytes(m[24..32].try_into().expect("8 bytes"));
    tracing::info!(redo_lsn, end_lsn, "installing the base backup");
    let wal_dir = data_dir.join("wal");
    let ckpt_dir = checkpoint::checkpoint_dir(data_dir);
    for d in [&wal_dir, &ckpt_dir] {
        storage.create_dir_all(d).map_err(io(d))?;
    }
    let staged = data_dir.join(STAGED_CKPT);
    let target = ckpt_dir.join(format!("{redo_lsn:016X}.ckpt"));
    for name in storage.list(&wal_dir).map_err(io(&wal_dir))? {
        let p = wal_dir.join(name);
        storage.remove(&p).map_err(io(&p))?;
    }
    for name in storage.list(&ckpt_dir).map_err(io(&ckpt_dir))? {
        let p = ckpt_dir.join(name);
        if p != target || storage.exists(&staged) {
            storage.remove(&p).map_err(io(&p))?;
        }
    }
    if storage.exists(&staged) {
        storage.rename(&staged, &target).map_err(io(&target))?;
    }
    storage.sync_dir(&wal_dir).map_err(io(&wal_dir))?;
    storage.sync_dir(&ckpt_dir).map_err(io(&ckpt_dir))?;
    let staged_epochs = data_dir.join(STAGED_EPOCHS);
    if storage.exists(&staged_epochs) {
        storage
            .rename(&staged_epochs, &crate::epochs::epochs_path(data_dir))
            .map_err(io(&staged_epochs))?;
    }
    let epochs =
        EpochHistory::load(storage, data_dir)?.ok_or_else(|| bad("epoch history missing"))?;
    Control {
        cluster_id,
        epoch: epochs.current(),
    }
    .store(storage, data_dir)?;
    set_consistent_at(storage, data_dir, Some(end_lsn))?;
    storage.remove(&ready).map_err(io(&ready))?;
    storage.sync_dir(data_dir).map_err(io(data_dir))?;
    Ok(true)
}

/// The LSN the WAL must reach before the state is consistent, if any.
pub(crate) fn consistent_at(
    storage: &dyn Storage,
    data_dir: &Path,
) -> Result<Option<u64>, EngineError> {
    let p = data_dir.join(CONSISTENT_AT);
    if !storage.exists(&p) {
        return Ok(None);
    }
    let b = storage::read_file(storage, &p).map_err(io(&p))?;
    if b.len() != 12
        || crc32fast::hash(&b[..8]) != u32::from_le_bytes(b[8..12].try_into().expect("4 bytes"))
    {
        return Err(EngineError::BadControl {
            file: p,
            reason: "damaged".into(),
        });
    }
    Ok(Some(u64::from_le_bytes(
        b[..8].try_into().expect("8 bytes"),
    )))
}

/// Records (or clears) the consistency LSN.
pub(crate) fn set_consistent_at(
    storage: &dyn Storage,
    data_dir: &Path,
    lsn: Option<u64>,
) -> Result<(), EngineError> {
    let p = data_dir.join(CONSISTENT_AT);
    match lsn {
        Some(lsn) => {
            let mut b = lsn.to_le_bytes().to_vec();
            let crc = crc32fast::hash(&b);
            b.extend_from_slice(&crc.to_le_bytes());
            storage::write_file_atomic(storage, &p, &b).map_err(io(&p))
        }
        None if storage.exists(&p) => {
            storage.remove(&p).map_err(io(&p))?;
            storage.sync_dir(data_dir).map_err(io(data_dir))
        }
        None => Ok(()),
    }
}
