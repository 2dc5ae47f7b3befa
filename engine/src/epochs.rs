//! The epoch history (PostgreSQL calls epochs timelines).
//!
//! Every promotion starts a new epoch with an EpochChange record. The
//! history lists where each epoch began: `(epoch, start LSN)`, ascending in
//! both. Two nodes whose histories agree up to LSN x hold the same WAL bytes
//! up to x; the first LSN where they disagree is the fork point.
//!
//! File `<data-dir>/epochs`, replaced atomically: magic `WSHPEPOC` (8),
//! count u32, then per entry epoch u64 and start LSN u64, then CRC-32 of all
//! the preceding bytes (u32). Little-endian.

use crate::error::EngineError;
use crate::storage::{self, Storage};
use crate::Lsn;
use std::path::{Path, PathBuf};

const EPOCHS_MAGIC: [u8; 8] = *b"WSHPEPOC";
/// Most entries kept: far more promotions than a cluster sees.
const EPOCHS_MAX: usize = 100_000;

/// Where one epoch began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochStart {
    /// The epoch.
    pub epoch: u64,
    /// LSN of its EpochChange record (0 for the first epoch).
    pub start_lsn: Lsn,
}

/// The ordered history of epochs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochHistory {
    entries: Vec<EpochStart>,
}

/// Path of the history file.
pub fn epochs_path(data_dir: &Path) -> PathBuf {
    data_dir.join("epochs")
}

impl EpochHistory {
    /// A history with one epoch starting at LSN 0.
    pub fn new(first_epoch: u64) -> Self {
        EpochHistory {
            entries: vec![EpochStart {
                epoch: first_epoch,
                start_lsn: 0,
            }],
        }
    }

    /// The entries, oldest first.
    pub fn entries(&self) -> &[EpochStart] {
        &self.entries
    }

    /// The current (last) epoch.
    pub fn current(&self) -> u64 {
        self.entries.last().map_or(0, |e| e.epoch)
    }

    /// Records that `epoch` began at `start_lsn`. Returns false (and changes
    /// nothing) if it is not newer than the current epoch, which makes replay idempotent.
    pub fn push(&mut self, epoch: u64, start_lsn: Lsn) -> bool {
        if let Some(last) = self.entries.last() {
            if epoch <= last.epoch || start_lsn < last.start_lsn {
                return false;
            }
        }
        if self.entries.len() >= EPOCHS_MAX {
            self.entries.remove(0);
        }
        self.entries.push(EpochStart { epoch, start_lsn });
        true
    }

    /// Drops epochs that began at or after `end_lsn` (their record was lost).
    pub fn truncate_at(&mut self, end_lsn: Lsn) -> bool {
        let before = self.entries.len();
        while self.entries.len() > 1
            && self
                .entries
                .last()
                .is_some_and(|e| e.start_lsn >= end_lsn && e.start_lsn > 0)
        {
            self.entries.pop();
        }
        before != self.entries.len()
    }

    /// The LSN where `epoch` ended in this history (where the next epoch
    /// began), or `None` if `epoch` is the current one or unknown.
    pub fn end_of(&self, epoch: u64) -> Option<Lsn> {
        let i = self.entries.iter().position(|e| e.epoch == epoch)?;
        self.entries.get(i + 1).map(|next| next.start_lsn)
    }

    /// Whether this history knows `epoch`.
    pub fn contains(&self, epoch: u64) -> bool {
        self.entries.iter().any(|e| e.epoch == epoch)
    }

    /// Serialises the history.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(16 + self.entries.len() * 16);
        b.extend_from_slice(&EPOCHS_MAGIC);
        b.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for e in &self.entries {
            b.extend_from_slice(&e.epoch.to_le_bytes());
            b.extend_from_slice(&e.start_lsn.to_le_bytes());
        }
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parses a serialised history, checking magic, count, order and CRC.
    pub fn decode(b: &[u8]) -> Result<EpochHistory, String> {
        if b.len() < 16 || b[0..8] != EPOCHS_MAGIC {
            return Err("not a walship epoch history".into());
        }
        let body = &b[..b.len() - 4];
        if crc32fast::hash(body)
            != u32::from_le_bytes(b[b.len() - 4..].try_into().expect("4 bytes"))
        {
            return Err("CRC mismatch".into());
        }
        let n = u32::from_le_bytes(b[8..12].try_into().expect("4 bytes")) as usize;
        if n == 0 || n > EPOCHS_MAX || body.len() != 12 + n * 16 {
            return Err("entry count does not match the file size".into());
        }
        let mut h = EpochHistory {
            entries: Vec::with_capacity(n),
        };
        for i in 0..n {
            let o = 12 + i * 16;
            let epoch = u64::from_le_bytes(body[o..o + 8].try_into().expect("8 bytes"));
            let start_lsn = u64::from_le_bytes(body[o + 8..o + 16].try_into().expect("8 bytes"));
            if i == 0 {
                h.entries.push(EpochStart { epoch, start_lsn });
            } else if !h.push(epoch, start_lsn) {
                return Err("epochs are not in ascending order".into());
            }
        }
        Ok(h)
    }

    /// Reads the history file, if present.
    pub fn load(
        storage: &dyn Storage,
        data_dir: &Path,
    ) -> Result<Option<EpochHistory>, EngineError> {
        let path = epochs_path(data_dir);
        if !storage.exists(&path) {
            return Ok(None);
        }
        let bytes = storage::read_file(storage, &path).map_err(|e| EngineError::io(&path, e))?;
        EpochHistory::decode(&bytes)
            .map(Some)
            .map_err(|reason| EngineError::BadControl { file: path, reason })
    }

    /// Replaces the history file atomically and durably.
    pub fn store(&self, storage: &dyn Storage, data_dir: &Path) -> Result<(), EngineError> {
        let path = epochs_path(data_dir);
        storage::write_file_atomic(storage, &path, &self.encode())
            .map_err(|e| EngineError::io(&path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_roundtrips_and_finds_fork_points() {
        let mut h = EpochHistory::new(1);
        assert!(h.push(2, 100));
        assert!(h.push(5, 900));
        assert!(!h.push(5, 1000), "replaying the same epoch is a no-op");
        assert!(!h.push(3, 1000), "older epochs are refused");
        assert_eq!(h.end_of(1), Some(100));
        assert_eq!(h.end_of(2), Some(900));
        assert_eq!(h.end_of(5), None);
        assert_eq!(EpochHistory::decode(&h.encode()).unwrap(), h);
        let mut b = h.encode();
        b[20] ^= 1;
        assert!(EpochHistory::decode(&b).is_err());
        assert!(h.truncate_at(900));
        assert_eq!(h.current(), 2);
    }
}
