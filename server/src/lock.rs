//! The data-directory lock: one server per directory.
//!
//! Two processes appending to the same WAL would interleave records and
//! destroy it, so the server takes an exclusive `flock` on `<data-dir>/LOCK`
//! before opening the engine and holds it until exit. The OS drops the lock
//! when the process dies, even by SIGKILL, so a crash never leaves a stale lock.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use fs2::FileExt;

/// Held for as long as the server runs; unlocks on drop.
#[derive(Debug)]
pub struct DataDirLock {
    file: File,
    path: PathBuf,
}

impl DataDirLock {
    pub const FILE_NAME: &'static str = "LOCK";

    /// Creates `data_dir` if needed and locks it, or explains who holds it.
    pub fn acquire(data_dir: &Path) -> anyhow::Result<DataDirLock> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
        let path = data_dir.join(Self::FILE_NAME);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open lock file {}", path.display()))?;
        if let Err(e) = FileExt::try_lock_exclusive(&file) {
            if e.raw_os_error() == fs2::lock_contended_error().raw_os_error() {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let who = if holder.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {holder})")
                };
                bail!(
                    "data directory {} is already in use by another walship server{who}: \
                     lock file {} is held. Stop that server or choose another --data-dir",
                    data_dir.display(),
                    path.display()
                );
            }
            return Err(e).with_context(|| format!("cannot lock {}", path.display()));
        }
        // The pid is only a hint for the message above; the flock is the lock.
        file.set_len(0).ok();
        file.seek(SeekFrom::Start(0)).ok();
        let _ = writeln!(file, "{}", std::process::id());
        Ok(DataDirLock { file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `LOCK` is still the file this process locked. If it was
    /// removed or replaced, a second server can lock the new file and open
    /// the same WAL: the caller must stop at once (PostgreSQL shuts down
    /// when its `postmaster.pid` is missing or changed).
    pub fn check(&self) -> Result<(), String> {
        use std::os::unix::fs::MetadataExt;
        let held = self
            .file
            .metadata()
            .map_err(|e| format!("cannot stat the locked file: {e}"))?;
        match std::fs::metadata(&self.path) {
            Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => Ok(()),
            Ok(_) => Err(format!("lock file {} was replaced", self.path.display())),
            Err(e) => Err(format!("lock file {} is gone ({e})", self.path.display())),
        }
    }
}

/// How often a running server checks that its lock file is still its own.
pub const LOCK_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

impl Drop for DataDirLock {
    fn drop(&mut self) {
        let _ = FileExt::unlock(&self.file);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_on_same_dir_is_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        let err = DataDirLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(err.contains("already in use"), "{err}");
        assert!(err.contains(&std::process::id().to_string()), "{err}");
        drop(first);
        DataDirLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn a_removed_or_replaced_lock_file_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let lock = DataDirLock::acquire(dir.path()).unwrap();
        assert_eq!(lock.check(), Ok(()));
        std::fs::remove_file(lock.path()).unwrap();
        assert!(lock.check().unwrap_err().contains("is gone"));
        std::fs::write(lock.path(), b"1\n").unwrap();
        assert!(lock.check().unwrap_err().contains("was replaced"));
    }

    #[test]
    fn missing_directory_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        let lock = DataDirLock::acquire(&nested).unwrap();
        assert!(lock.path().exists());
    }
}
