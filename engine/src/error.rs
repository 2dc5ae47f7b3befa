//! Typed errors, split by operation and worded for the operator who reads them.

use std::path::PathBuf;
use std::sync::Arc;

/// Why a write was not accepted or not made durable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// An fsync or WAL write failed earlier; the engine refuses every write
    /// since, because a retried fsync can report success for lost data.
    #[error("writes refused: the WAL is poisoned by an earlier failure ({0}); restart walship so recovery can verify the WAL")]
    Poisoned(Arc<str>),
    /// No space to allocate the WAL segment the write needs. Nothing was written.
    #[error("disk full: cannot allocate WAL segment {path}: {detail}; nothing was written; free space and retry")]
    DiskFull {
        /// The segment that could not be allocated.
        path: PathBuf,
        /// What the OS said.
        detail: String,
    },
    /// A key, value or record over its configured limit.
    #[error("{what} of {len} bytes is over the limit of {max} bytes")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its size.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// Allocating a segment failed for another reason. Nothing was written.
    #[error("I/O error allocating WAL segment {path}: {detail}; nothing was written")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        detail: String,
    },
    /// Replicated WAL that does not fit this node's log.
    #[error("replicated WAL refused: {0}")]
    BadReplicatedWal(String),
    /// The engine was shut down.
    #[error("the storage engine is shut down")]
    Closed,
}

/// Why the engine could not open, checkpoint, or serve WAL.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// An I/O error on a named file.
    // The OS error is part of the message and deliberately not a `#[source]`:
    // a report that prints the error chain would say it twice.
    #[error("I/O error on {path}: {error}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        error: std::io::Error,
    },
    /// A damaged record with valid records after it: acknowledged data could be lost.
    #[error("corrupt WAL record in {file} at file offset {offset} (LSN {lsn}): {reason}; a valid record follows at LSN {next_valid_lsn}, so this is not a torn tail and acknowledged writes could be lost; refusing to open. Restore the file from a standby or backup")]
    MidLogCorruption {
        /// The segment file.
        file: PathBuf,
        /// Offset of the bad record inside the file.
        offset: u64,
        /// LSN of the bad record.
        lsn: u64,
        /// What is wrong with it.
        reason: &'static str,
        /// LSN of the first valid record after it.
        next_valid_lsn: u64,
    },
    /// A segment is missing between two others, or before the needed start.
    #[error("WAL segment {expected} is missing (needed for LSN {lsn}); acknowledged writes could be lost; refusing to open. Restore it from a standby or backup")]
    MissingSegment {
        /// The file that should be there.
        expected: PathBuf,
        /// The first LSN it would hold.
        lsn: u64,
    },
    /// The oldest segment starts past the LSN recovery must replay from.
    #[error("the WAL from LSN {needed_lsn} (where the newest checkpoint's redo starts) is missing: the oldest segment, {oldest}, starts at LSN {oldest_lsn}; acknowledged writes could be lost; refusing to open. Restore the segments holding LSNs {needed_lsn} to {oldest_lsn} from a standby or backup")]
    WalStartsTooLate {
        /// The oldest segment present.
        oldest: PathBuf,
        /// Its first LSN.
        oldest_lsn: u64,
        /// The LSN replay must start at.
        needed_lsn: u64,
    },
    /// A segment header is damaged or belongs to something else.
    #[error("WAL segment {file} has a bad header: {reason}; refusing to open")]
    BadSegment {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A record's CRC is valid but its contents do not parse.
    #[error("WAL record in {file} at LSN {lsn} does not parse: {reason}; refusing to open")]
    BadRecord {
        /// The file.
        file: PathBuf,
        /// LSN of the record.
        lsn: u64,
        /// What is wrong.
        reason: String,
    },
    /// A metadata file (`control`, `epochs`, a base backup's or a rewind's
    /// bookkeeping) is damaged, or `control` is missing while data exists.
    #[error("{file}: {reason}")]
    BadControl {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The WAL ends before the state a checkpoint already contains.
    #[error("the WAL ends at LSN {wal_end} but checkpoint {checkpoint} covers up to LSN {needed}: WAL is missing; refusing to open")]
    WalBehindCheckpoint {
        /// The checkpoint file.
        checkpoint: PathBuf,
        /// LSN the WAL must reach.
        needed: u64,
        /// Where it ends.
        wal_end: u64,
    },
    /// A checkpoint could not be written (the engine goes on; the WAL still has everything).
    #[error("checkpoint failed: {0}")]
    Checkpoint(String),
    /// Requested WAL was already removed.
    #[error("WAL at LSN {lsn} was removed (oldest kept: {oldest}); a base backup is needed")]
    WalRemoved {
        /// LSN asked for.
        lsn: u64,
        /// Oldest LSN still on disk.
        oldest: u64,
    },
    /// Writes are refused.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// A setting is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl EngineError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        EngineError::Io {
            path: path.into(),
            error: source,
        }
    }
}
