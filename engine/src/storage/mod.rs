//! The storage I/O trait: every byte the engine reads or writes goes through it.
//!
//! Two implementations exist: [`FsStorage`] (real files, `pread`/`pwrite`,
//! `fdatasync`, `memmap2` for reading sealed segments) and [`SimStorage`]
//! (an in-memory power-loss simulator for tests, in the manner of redb's
//! crash-test backend: it keeps a *live* and a *durable* image of every file
//! and directory, so a power loss is "reopen from the durable image").

mod fs;
mod sim;

pub use fs::{FsStorage, DIRECT_IO_BLOCK};
pub use sim::{SimFaults, SimStorage, WriteOutStats};

use bytes::Bytes;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One open file.
///
/// Contract:
/// - `write_at` returns once the bytes are in the *live* image (readable by
///   `read_at`); they are durable only after a later `sync_data` returns `Ok`.
/// - `sync_data` makes every write that returned before it durable. If it
///   returns an error, the caller must assume that any unsynced write may be
///   lost, even if a later `sync_data` succeeds (the engine poisons itself).
/// - `set_len` changes the live length; durable after `sync_data`.
/// - A write that would need more space than the device has fails with
///   `io::ErrorKind::StorageFull` and changes nothing.
#[allow(clippy::len_without_is_empty)]
pub trait StorageFile: Send + Sync {
    /// Current live length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Reads exactly `buf.len()` bytes at `offset`; errors with `UnexpectedEof` past the end.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`, growing the file if needed.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Sets the live length, zero-filling when it grows.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// `fdatasync`: makes the file's data durable.
    fn sync_data(&self) -> io::Result<()>;
    /// Writes all of `buf` at `offset` and returns once those bytes are
    /// durable: the WAL flusher's write under `wal_sync_method =
    /// open_datasync`. For files written in order over zeros, as WAL
    /// segments are (preallocated with zeros; recovery and rewind zero
    /// whatever lies past the end of the log): the bytes from
    /// `offset + buf.len()` up to the next [`DIRECT_IO_BLOCK`] boundary
    /// must be zeros, and may be rewritten as zeros. The range, rounded out
    /// to whole blocks, must lie within the file's length. An error means
    /// the range may hold old bytes, new bytes or a mix, as after a failed
    /// `sync_data`.
    ///
    /// The default is `write_all_at` then `sync_data`. Real files that allow
    /// it do one `O_DIRECT | O_DSYNC` write of the whole blocks around the
    /// range instead: no page cache, and the device flush goes out with the
    /// write. On the disk measured that sustained 1.19× the flushes per
    /// second of `pwrite` plus `fdatasync` with one writer and 1.44× with
    /// two (docs/profiling.md, session 6).
    fn write_durable_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.write_all_at(buf, offset)?;
        self.sync_data()
    }
    /// A read-only view of the whole file as it is now. Real files map it
    /// with `memmap2` (zero copy); use it only for files nobody writes any more
    /// (sealed segments, checkpoints), or within the bytes already written.
    fn map(&self) -> io::Result<Bytes>;
}

/// A file system: the directory operations the engine needs.
///
/// Contract: creating, renaming or removing a directory entry is durable only
/// after `sync_dir` of the directory holding it returns `Ok`.
pub trait Storage: Send + Sync {
    /// Opens an existing file for reading and writing.
    fn open(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>>;
    /// Creates a new empty file; fails if it exists.
    fn create(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>>;
    /// Atomically renames `from` to `to`, replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Names (not paths) of the entries of a directory, sorted.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Creates a directory and its parents (durably).
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// `fsync` of a directory: makes its entries durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Whether a file or directory exists.
    fn exists(&self, path: &Path) -> bool;
}

/// Writes `bytes` to `path` atomically and durably: temporary file, fsync,
/// rename, directory fsync.
pub fn write_file_atomic(storage: &dyn Storage, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = parent_dir(path);
    let tmp = tmp_path(path);
    if storage.exists(&tmp) {
        storage.remove(&tmp)?;
    }
    let file = storage.create(&tmp)?;
    let result = file
        .write_all_at(bytes, 0)
        .and_then(|()| file.sync_data())
        .and_then(|()| storage.rename(&tmp, path));
    if let Err(e) = result {
        let _ = storage.remove(&tmp);
        return Err(e);
    }
    // IMPORTANT: fsync the directory, or the rename may vanish in a power loss.
    storage.sync_dir(&dir)
}

/// Reads a whole file.
pub fn read_file(storage: &dyn Storage, path: &Path) -> io::Result<Vec<u8>> {
    let file = storage.open(path)?;
    let len = usize::try_from(file.len()?).map_err(|_| io::Error::other("file too large"))?;
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, 0)?;
    Ok(buf)
}

pub(crate) fn parent_dir(path: &Path) -> PathBuf {
    path.parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}
