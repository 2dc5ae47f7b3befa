//! Replication slots: one per standby name, persisted, holding back WAL
//! removal until that standby has it, as PostgreSQL's physical slots do.
//!
//! `max_slot_wal_keep_size` caps how much WAL a slot may hold back: past it
//! the slot is invalidated (logged, visible in status), stops holding WAL,
//! and its standby re-seeds with a base backup instead of filling the disk.
//!
//! Files: `<data-dir>/slots/<hex of name>.slot`, 13 bytes: restart LSN u64
//! LE, invalidated u8, CRC-32 of those 9 bytes. A slot's restart LSN is
//! persisted before any WAL removal that relies on it (in the retention
//! hook, which the engine calls right before removing segments); in between
//! it may lag, which only keeps more WAL.

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use walship_engine::{Lsn, WalRetention};

/// One slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// The standby name.
    pub name: String,
    /// Oldest LSN the standby still needs.
    pub restart_lsn: Lsn,
    /// True once the slot gave up holding WAL.
    pub invalidated: bool,
    dirty: bool,
}

/// The slots of one node.
pub struct Slots {
    dir: PathBuf,
    slots: Mutex<BTreeMap<String, Slot>>,
    /// 0 = unlimited.
    max_keep_bytes: AtomicU64,
}

fn file_name(name: &str) -> String {
    let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{hex}.slot")
}

fn name_of(file: &str) -> Option<String> {
    let hex = file.strip_suffix(".slot")?;
    if hex.len() % 2 != 0 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

fn encode(slot: &Slot) -> [u8; 13] {
    let mut b = [0u8; 13];
    b[0..8].copy_from_slice(&slot.restart_lsn.to_le_bytes());
    b[8] = u8::from(slot.invalidated);
    let crc = crc32fast::hash(&b[0..9]);
    b[9..13].copy_from_slice(&crc.to_le_bytes());
    b
}

impl Slots {
    /// Loads the slots of `data_dir`. Damaged slot files are logged and dropped
    /// (their standby then gets a base backup if its WAL is gone).
    pub fn open(data_dir: &Path, max_keep_bytes: u64) -> io::Result<Slots> {
        let dir = data_dir.join("slots");
        // Every error names the file: the operator has to find it.
        let at = |path: &Path| {
            let path = path.display().to_string();
            move |e: io::Error| io::Error::new(e.kind(), format!("{path}: {e}"))
        };
        std::fs::create_dir_all(&dir).map_err(at(&dir))?;
        let mut slots = BTreeMap::new();
        for entry in std::fs::read_dir(&dir).map_err(at(&dir))? {
            let path = entry.map_err(at(&dir))?.path();
            if path.extension().is_some_and(|e| e == "tmp") {
                // A slot update cut short (a crash, a full disk): the slot
                // file it was to replace is still whole.
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let Some(name) = path.file_name().and_then(|n| n.to_str()).and_then(name_of) else {
                continue;
            };
            let b = std::fs::read(&path).map_err(at(&path))?;
            if b.len() != 13
                || crc32fast::hash(&b[0..9])
                    != u32::from_le_bytes(b[9..13].try_into().expect("4 bytes"))
            {
                tracing::warn!(file = %path.display(), "ignoring a damaged replication slot file");
                continue;
            }
            let restart_lsn = u64::from_le_bytes(b[0..8].try_into().expect("8 bytes"));
            slots.insert(
                name.clone(),
                Slot {
                    name,
                    restart_lsn,
                    invalidated: b[8] != 0,
                    dirty: false,
                },
            );
        }
        Ok(Slots {
            dir,
            slots: Mutex::new(slots),
            max_keep_bytes: AtomicU64::new(max_keep_bytes),
        })
    }

    /// Changes `max_slot_wal_keep_size` (0 = unlimited).
    pub fn set_max_keep_bytes(&self, bytes: u64) {
        self.max_keep_bytes.store(bytes, Ordering::Relaxed);
    }

    /// The cap, 0 = unlimited.
    pub fn max_keep_bytes(&self) -> u64 {
        self.max_keep_bytes.load(Ordering::Relaxed)
    }

    /// The slot of `name`, created (and persisted) at `restart_lsn` if new.
    pub fn acquire(&self, name: &str, restart_lsn: Lsn) -> io::Result<Slot> {
        let mut slots = self.slots.lock();
        if let Some(s) = slots.get(name) {
            return Ok(s.clone());
        }
        let slot = Slot {
            name: name.to_string(),
            restart_lsn,
            invalidated: false,
            dirty: false,
        };
        self.persist(&slot)?;
        slots.insert(name.to_string(), slot.clone());
        tracing::info!(slot = name, restart_lsn, "created replication slot");
        Ok(slot)
    }

    /// Resets a slot to hold WAL from `restart_lsn` again (after a base backup).
    pub fn reset(&self, name: &str, restart_lsn: Lsn) -> io::Result<()> {
        let slot = Slot {
            name: name.to_string(),
            restart_lsn,
            invalidated: false,
            dirty: false,
        };
        self.persist(&slot)?;
        self.slots.lock().insert(name.to_string(), slot);
        Ok(())
    }

    /// The standby confirmed it has everything below `flush_lsn`.
    pub fn advance(&self, name: &str, flush_lsn: Lsn) {
        if let Some(s) = self.slots.lock().get_mut(name) {
            if !s.invalidated && flush_lsn > s.restart_lsn {
                s.restart_lsn = flush_lsn;
                s.dirty = true;
            }
        }
    }

    /// All slots.
    pub fn list(&self) -> Vec<Slot> {
        self.slots.lock().values().cloned().collect()
    }

    /// Removes a slot.
    pub fn drop_slot(&self, name: &str) -> io::Result<bool> {
        let existed = self.slots.lock().remove(name).is_some();
        let path = self.dir.join(file_name(name));
        if path.exists() {
            std::fs::remove_file(&path)?;
        }
        Ok(existed)
    }

    fn persist(&self, slot: &Slot) -> io::Result<()> {
        let path = self.dir.join(file_name(&slot.name));
        let tmp = path.with_extension("tmp");
        let at = |p: &Path| {
            let p = p.display().to_string();
            move |e: io::Error| io::Error::new(e.kind(), format!("{p}: {e}"))
        };
        let written = (|| {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&encode(slot))?;
            f.sync_data()
        })();
        if let Err(e) = written {
            // A full disk must not leave half-written files behind.
            let _ = std::fs::remove_file(&tmp);
            return Err(at(&tmp)(e));
        }
        std::fs::rename(&tmp, &path).map_err(at(&path))?;
        // IMPORTANT: fsync the directory, or the slot may vanish and with it the WAL it protects.
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(at(&self.dir))
    }
}

impl WalRetention for Slots {
    fn min_retained_lsn(&self, end_lsn: Lsn) -> Option<Lsn> {
        let cap = self.max_keep_bytes();
        let mut slots = self.slots.lock();
        let mut min: Option<Lsn> = None;
        for s in slots.values_mut() {
            if s.invalidated {
                continue;
            }
            if cap > 0 && end_lsn.saturating_sub(s.restart_lsn) > cap {
                s.invalidated = true;
                s.dirty = true;
                tracing::warn!(
                    slot = %s.name, restart_lsn = s.restart_lsn, end_lsn, max_slot_wal_keep_size = cap,
                    "replication slot invalidated: it held back more WAL than max_slot_wal_keep_size; its standby will need a base backup"
                );
            } else {
                min = Some(min.map_or(s.restart_lsn, |m| m.min(s.restart_lsn)));
            }
            if s.dirty {
                match self.persist(s) {
                    Ok(()) => s.dirty = false,
                    Err(e) => {
                        // Keep everything this slot might need rather than trust memory alone.
                        tracing::error!(slot = %s.name, error = %e, "could not persist replication slot; keeping its WAL");
                        min = Some(0);
                    }
                }
            }
        }
        min
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_persist_advance_and_invalidate_past_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let slots = Slots::open(dir.path(), 1000).unwrap();
        slots.acquire("standby one", 100).unwrap();
        slots.acquire("b", 500).unwrap();
        assert_eq!(slots.min_retained_lsn(600), Some(100));
        slots.advance("standby one", 300);
        assert_eq!(slots.min_retained_lsn(600), Some(300));
        // 'standby one' is 1200 behind: over the cap.
        assert_eq!(slots.min_retained_lsn(1500), Some(500));
        let reopened = Slots::open(dir.path(), 1000).unwrap();
        let list = reopened.list();
        assert_eq!(list.len(), 2);
        let one = list.iter().find(|s| s.name == "standby one").unwrap();
        assert!(one.invalidated);
        assert_eq!(one.restart_lsn, 300);
        reopened.reset("standby one", 1400).unwrap();
        assert_eq!(reopened.min_retained_lsn(1500), Some(500));
        assert!(reopened.drop_slot("b").unwrap());
        assert_eq!(reopened.min_retained_lsn(1500), Some(1400));
    }

    /// A slot update cut short leaves `<name>.tmp` beside the whole slot
    /// file: the next open removes it and keeps the slot.
    #[test]
    fn a_leftover_temporary_slot_file_is_removed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let slots = Slots::open(dir.path(), 0).unwrap();
        slots.acquire("s1", 100).unwrap();
        drop(slots);
        let tmp = dir
            .path()
            .join("slots")
            .join(file_name("s1"))
            .with_extension("tmp");
        std::fs::write(&tmp, b"half").unwrap();
        let reopened = Slots::open(dir.path(), 0).unwrap();
        assert!(!tmp.exists());
        assert_eq!(reopened.list().len(), 1);
    }
}
