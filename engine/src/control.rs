//! The control file: the identity of a data directory.
//!
//! `<data-dir>/control` holds the cluster id (random at `initdb` time, shared
//! by every node of one cluster) and the epoch it was written with (1 at
//! initialisation, the primary's at a base backup); the current epoch is
//! the last entry of the `epochs` file, and this one is used only when that
//! file is missing. It is replaced
//! atomically (temporary file, fsync, rename, directory fsync).
//!
//! Layout, little-endian: magic `WSHPCTRL` (8), version u32, reserved u32,
//! cluster id u64, epoch u64, CRC-32 of the preceding 32 bytes (u32).

use crate::error::EngineError;
use crate::storage::{self, Storage};
use std::path::{Path, PathBuf};

const CONTROL_MAGIC: [u8; 8] = *b"WSHPCTRL";
const CONTROL_VERSION: u32 = 1;
const CONTROL_BYTES: usize = 36;

/// The contents of the control file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Control {
    /// Identity of the cluster.
    pub cluster_id: u64,
    /// Current epoch (timeline).
    pub epoch: u64,
}

/// Path of the control file in `data_dir`.
pub fn control_path(data_dir: &Path) -> PathBuf {
    data_dir.join("control")
}

impl Control {
    fn encode(&self) -> [u8; CONTROL_BYTES] {
        let mut b = [0u8; CONTROL_BYTES];
        b[0..8].copy_from_slice(&CONTROL_MAGIC);
        b[8..12].copy_from_slice(&CONTROL_VERSION.to_le_bytes());
        b[16..24].copy_from_slice(&self.cluster_id.to_le_bytes());
        b[24..32].copy_from_slice(&self.epoch.to_le_bytes());
        let crc = crc32fast::hash(&b[0..32]);
        b[32..36].copy_from_slice(&crc.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Result<Control, String> {
        if b.len() != CONTROL_BYTES {
            return Err(format!("is {} bytes, expected {CONTROL_BYTES}", b.len()));
        }
        if b[0..8] != CONTROL_MAGIC {
            return Err("bad magic number (not a walship control file)".into());
        }
        if crc32fast::hash(&b[0..32]) != u32::from_le_bytes(b[32..36].try_into().expect("4 bytes"))
        {
            return Err("CRC mismatch".into());
        }
        if u32::from_le_bytes(b[8..12].try_into().expect("4 bytes")) != CONTROL_VERSION {
            return Err("unsupported version".into());
        }
        Ok(Control {
            cluster_id: u64::from_le_bytes(b[16..24].try_into().expect("8 bytes")),
            epoch: u64::from_le_bytes(b[24..32].try_into().expect("8 bytes")),
        })
    }

    /// Reads the control file; `Ok(None)` when there is none.
    pub fn load(storage: &dyn Storage, data_dir: &Path) -> Result<Option<Control>, EngineError> {
        let path = control_path(data_dir);
        if !storage.exists(&path) {
            return Ok(None);
        }
        let bytes = storage::read_file(storage, &path).map_err(|e| EngineError::io(&path, e))?;
        Control::decode(&bytes)
            .map(Some)
            .map_err(|reason| EngineError::BadControl { file: path, reason })
    }

    /// Replaces the control file atomically and durably.
    pub fn store(&self, storage: &dyn Storage, data_dir: &Path) -> Result<(), EngineError> {
        let path = control_path(data_dir);
        storage::write_file_atomic(storage, &path, &self.encode())
            .map_err(|e| EngineError::io(&path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_roundtrips_and_rejects_damage() {
        let c = Control {
            cluster_id: 0xDEAD_BEEF,
            epoch: 4,
        };
        let mut b = c.encode();
        assert_eq!(Control::decode(&b), Ok(c));
        b[17] ^= 1;
        assert!(Control::decode(&b).is_err());
    }
}
