//! Checkpoints: the whole key-value state at an LSN, in one file.
//!
//! A checkpoint is *fuzzy*, as PostgreSQL's are: it records the redo LSN
//! (the WAL end when it began), then copies the memtable in small chunks
//! while writers go on, then notes the WAL end when it finished (`end_lsn`).
//! Entries may reflect any moment in between, which is harmless because
//! replaying the WAL from the redo LSN re-applies every change since, and
//! every record is idempotent (it carries values, not operations). Before the
//! file is published the WAL is fsynced up to `end_lsn`, so no entry can
//! hold a write that the WAL could lose.
//!
//! File `<data-dir>/checkpoints/<redo LSN as 16 hex digits>.ckpt`, written as
//! `.tmp`, fsynced, renamed, directory fsynced. Layout (little-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 0..8 | magic `WSHPCKPT` |
//! | 8..12 | version (1) |
//! | 12..16 | header length (64) |
//! | 16..24 | cluster id |
//! | 24..32 | epoch at the redo LSN |
//! | 32..40 | redo LSN |
//! | 40..48 | end LSN |
//! | 48..56 | entry count |
//! | 56..60 | CRC-32 of all entry bytes |
//! | 60..64 | CRC-32 of bytes 0..60 |
//!
//! then per entry: key length u32, value length u32, LSN u64, key, value.

use crate::error::EngineError;
use crate::memtable::Memtable;
use crate::storage::{self, Storage, StorageFile};
use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const CKPT_MAGIC: [u8; 8] = *b"WSHPCKPT";
const CKPT_VERSION: u32 = 1;
const CKPT_HEADER_BYTES: usize = 64;
const CKPT_SUFFIX: &str = ".ckpt";
const WRITE_BUFFER_BYTES: usize = 1 << 20;

/// What a checkpoint covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointInfo {
    /// The file.
    pub path: PathBuf,
    /// Replay starts here.
    pub redo_lsn: u64,
    /// The WAL must reach at least here for the checkpoint to be usable.
    pub end_lsn: u64,
    /// Epoch at the redo LSN.
    pub epoch: u64,
    /// Keys in it.
    pub entries: u64,
    /// Bytes of the file.
    pub bytes: u64,
}

/// The checkpoint directory of a data directory.
pub fn checkpoint_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("checkpoints")
}

fn checkpoint_path(dir: &Path, redo_lsn: u64) -> PathBuf {
    dir.join(format!("{redo_lsn:016X}{CKPT_SUFFIX}"))
}

/// Checkpoint files in `dir`, newest (highest redo LSN) first.
pub fn list(storage: &dyn Storage, dir: &Path) -> Result<Vec<(u64, PathBuf)>, EngineError> {
    let mut out = Vec::new();
    for name in storage.list(dir).map_err(|e| EngineError::io(dir, e))? {
        if let Some(hex) = name.strip_suffix(CKPT_SUFFIX) {
            if let Ok(lsn) = u64::from_str_radix(hex, 16) {
                out.push((lsn, dir.join(&name)));
            }
        }
    }
    out.sort_by_key(|e| std::cmp::Reverse(e.0));
    Ok(out)
}

/// Streams entries into a new checkpoint file.
pub(crate) struct CheckpointWriter<'a> {
    storage: &'a dyn Storage,
    dir: PathBuf,
    tmp: PathBuf,
    file: Arc<dyn StorageFile>,
    buf: Vec<u8>,
    offset: u64,
    crc: crc32fast::Hasher,
    entries: u64,
    redo_lsn: u64,
}

impl<'a> CheckpointWriter<'a> {
    pub fn create(
        storage: &'a dyn Storage,
        dir: &Path,
        redo_lsn: u64,
    ) -> Result<Self, EngineError> {
        let tmp = storage::tmp_path(&checkpoint_path(dir, redo_lsn));
        if storage.exists(&tmp) {
            storage.remove(&tmp).map_err(|e| EngineError::io(&tmp, e))?;
        }
        let file = storage.create(&tmp).map_err(|e| EngineError::io(&tmp, e))?;
        Ok(CheckpointWriter {
            storage,
            dir: dir.to_path_buf(),
            tmp,
            file,
            buf: Vec::with_capacity(WRITE_BUFFER_BYTES),
            offset: CKPT_HEADER_BYTES as u64,
            crc: crc32fast::Hasher::new(),
            entries: 0,
            redo_lsn,
        })
    }

    pub fn push(&mut self, key: &[u8], lsn: u64, value: &[u8]) -> Result<(), EngineError> {
        let start = self.buf.len();
        self.buf
            .extend_from_slice(&(key.len() as u32).to_le_bytes());
        self.buf
            .extend_from_slice(&(value.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(&lsn.to_le_bytes());
        self.buf.extend_from_slice(key);
        self.buf.extend_from_slice(value);
        self.crc.update(&self.buf[start..]);
        self.entries += 1;
        if self.buf.len() >= WRITE_BUFFER_BYTES {
            self.flush_buf()?;
        }
        Ok(())
    }

    fn flush_buf(&mut self) -> Result<(), EngineError> {
        self.file
            .write_all_at(&self.buf, self.offset)
            .map_err(|e| EngineError::io(&self.tmp, e))?;
        self.offset += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Writes the header, makes the file durable and publishes it.
    pub fn finish(
        mut self,
        cluster_id: u64,
        epoch: u64,
        end_lsn: u64,
    ) -> Result<CheckpointInfo, EngineError> {
        self.flush_buf()?;
        let mut h = [0u8; CKPT_HEADER_BYTES];
        h[0..8].copy_from_slice(&CKPT_MAGIC);
        h[8..12].copy_from_slice(&CKPT_VERSION.to_le_bytes());
        h[12..16].copy_from_slice(&(CKPT_HEADER_BYTES as u32).to_le_bytes());
        h[16..24].copy_from_slice(&cluster_id.to_le_bytes());
        h[24..32].copy_from_slice(&epoch.to_le_bytes());
        h[32..40].copy_from_slice(&self.redo_lsn.to_le_bytes());
        h[40..48].copy_from_slice(&end_lsn.to_le_bytes());
        h[48..56].copy_from_slice(&self.entries.to_le_bytes());
        h[56..60].copy_from_slice(&self.crc.clone().finalize().to_le_bytes());
        let hcrc = crc32fast::hash(&h[0..60]);
        h[60..64].copy_from_slice(&hcrc.to_le_bytes());
        let path = checkpoint_path(&self.dir, self.redo_lsn);
        self.file
            .write_all_at(&h, 0)
            .map_err(|e| EngineError::io(&self.tmp, e))?;
        self.file
            .sync_data()
            .map_err(|e| EngineError::io(&self.tmp, e))?;
        self.storage
            .rename(&self.tmp, &path)
            .map_err(|e| EngineError::io(&path, e))?;
        // IMPORTANT: fsync the directory, or the checkpoint may vanish while the WAL it replaces is removed.
        self.storage
            .sync_dir(&self.dir)
            .map_err(|e| EngineError::io(&self.dir, e))?;
        Ok(CheckpointInfo {
            path,
            redo_lsn: self.redo_lsn,
            end_lsn,
            epoch,
            entries: self.entries,
            bytes: self.offset,
        })
    }

    /// Removes the unfinished file after a failure.
    pub fn abandon(self) {
        let _ = self.storage.remove(&self.tmp);
    }
}

/// Checks a checkpoint file's header and CRCs without loading it.
pub fn verify(
    storage: &dyn Storage,
    path: &Path,
    cluster_id: u64,
) -> Result<CheckpointInfo, String> {
    let file = storage.open(path).map_err(|e| e.to_string())?;
    let data: Bytes = file.map().map_err(|e| e.to_string())?;
    verify_mapped(path, &data, cluster_id)
}

/// [`verify`] of a checkpoint file already mapped (`data`, read from `path`).
pub fn verify_mapped(path: &Path, data: &Bytes, cluster_id: u64) -> Result<CheckpointInfo, String> {
    let (info, _) = parse_header(path, data, cluster_id)?;
    Ok(info)
}

fn parse_header<'d>(
    path: &Path,
    data: &'d Bytes,
    cluster_id: u64,
) -> Result<(CheckpointInfo, &'d [u8]), String> {
    if data.len() < CKPT_HEADER_BYTES {
        return Err("shorter than its header".into());
    }
    let h = &data[..CKPT_HEADER_BYTES];
    let u64_at = |i: usize| u64::from_le_bytes(h[i..i + 8].try_into().expect("8 bytes"));
    let u32_at = |i: usize| u32::from_le_bytes(h[i..i + 4].try_into().expect("4 bytes"));
    if h[0..8] != CKPT_MAGIC {
        return Err("bad magic number".into());
    }
    if crc32fast::hash(&h[0..60]) != u32_at(60) {
        return Err("header CRC mismatch".into());
    }
    if u32_at(8) != CKPT_VERSION {
        return Err("unsupported version".into());
    }
    if u64_at(16) != cluster_id {
        return Err(format!(
            "belongs to cluster {:016x}, not {cluster_id:016x}",
            u64_at(16)
        ));
    }
    let body = &data[CKPT_HEADER_BYTES..];
    if crc32fast::hash(body) != u32_at(56) {
        return Err("entries CRC mismatch".into());
    }
    let info = CheckpointInfo {
        path: path.to_path_buf(),
        redo_lsn: u64_at(32),
        end_lsn: u64_at(40),
        epoch: u64_at(24),
        entries: u64_at(48),
        bytes: data.len() as u64,
    };
    Ok((info, body))
}

/// Loads a checkpoint into `memtable`, verifying both CRCs and every length.
pub fn load(
    storage: &dyn Storage,
    path: &Path,
    cluster_id: u64,
    memtable: &mut Memtable,
) -> Result<CheckpointInfo, String> {
    let file = storage.open(path).map_err(|e| e.to_string())?;
    let data: Bytes = file.map().map_err(|e| e.to_string())?;
    let (info, body) = parse_header(path, &data, cluster_id)?;
    let count = info.entries;
    let mut table = Memtable::new();
    let mut p = 0usize;
    for _ in 0..count {
        if body.len() - p < 16 {
            return Err("entry header past end of file".into());
        }
        let klen = u32::from_le_bytes(body[p..p + 4].try_into().expect("4 bytes")) as usize;
        let vlen = u32::from_le_bytes(body[p + 4..p + 8].try_into().expect("4 bytes")) as usize;
        let lsn = u64::from_le_bytes(body[p + 8..p + 16].try_into().expect("8 bytes"));
        p += 16;
        if body.len() - p < klen + vlen {
            return Err("entry past end of file".into());
        }
        table.put(&body[p..p + klen], &body[p + klen..p + klen + vlen], lsn);
        p += klen + vlen;
    }
    if p != body.len() {
        return Err("trailing bytes after the last entry".into());
    }
    *memtable = table;
    Ok(info)
}
