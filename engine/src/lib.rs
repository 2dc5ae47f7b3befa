//! # walship-engine
//!
//! The storage engine under every walship node: a write-ahead log (WAL) on
//! disk, the whole key-value state in memory, and checkpoints that bound how
//! much WAL recovery must replay. It knows nothing about networks: the
//! replication crate ships the WAL bytes this crate produces and feeds
//! received bytes back in through [`Engine::append_replicated`].
//!
//! # Layout
//!
//! - [`engine`]: [`Engine`], the facade. A write is
//!   [`Engine::transact`] (decide under the writer slot, append a record,
//!   apply it to the memtable) then [`Engine::wait_durable`] (group commit).
//! - [`wal`]: the log. [`wal::record`] frames records, [`wal::segment`]
//!   names and heads segment files, [`wal::writer`] assigns LSNs and runs the
//!   group-commit flusher, [`wal::recovery`] reads it all back on open.
//! - [`memtable`]: the ordered in-memory table, key → (value, LSN).
//! - [`checkpoint`]: fuzzy snapshots written atomically, loaded at open.
//! - [`basebackup`]: installing a primary's checkpoint on a standby, atomically.
//! - [`control`]: the data directory's identity (cluster id, epoch).
//! - [`epochs`]: where each epoch (timeline) began, for fork detection.
//! - [`rewind`]: cutting the WAL back to a fork point when following a new primary.
//! - [`storage`]: every file access goes through the [`storage::Storage`]
//!   trait: real files, or the power-loss simulator for tests.
//!
//! # Data directory
//!
//! ```text
//! <data-dir>/control                  cluster id and epoch
//! <data-dir>/wal/<start LSN>.wal      WAL segments (see docs/wal-format.md)
//! <data-dir>/checkpoints/<LSN>.ckpt   the newest checkpoint
//! <data-dir>/epochs                   the epoch history
//! <data-dir>/rewound/<fork>-<end>.wal WAL cut away by rewinds
//! ```

pub mod basebackup;
pub mod checkpoint;
pub mod control;
pub mod engine;
pub mod epochs;
pub mod error;
pub mod memtable;
pub mod rewind;
pub mod storage;
pub mod wal;

/// A position in the logical WAL stream, in bytes. It only grows.
pub type Lsn = u64;

pub use checkpoint::CheckpointInfo;
pub use engine::{Engine, EngineConfig, EngineStats, RecoveryInfo, WalRetention, WeakEngine};
pub use epochs::{EpochHistory, EpochStart};
pub use error::{EngineError, WriteError};
pub use memtable::{Entry, Memtable, Value};
pub use storage::{FsStorage, SimFaults, SimStorage, Storage, StorageFile};
pub use wal::record::{BatchOp, Mutation};
pub use wal::writer::{
    CommitDelay, FsyncPolicy, ProgressListener, SendableListener, WaitingWriter, WalSyncMethod,
};

/// What [`Engine::transact`]'s closure sees: the current state.
pub type MemtableView = Memtable;
