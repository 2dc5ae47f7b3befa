//! # walship-replication
//!
//! WAL streaming from a primary to standbys, modelled on PostgreSQL's
//! walsender/walreceiver, with synchronous commit decided by plain code.
//!
//! # Layout
//!
//! - [`protocol`]: the framed binary messages of a replication stream.
//! - [`stream`]: reading and writing those frames on a socket.
//! - [`sync_rule`]: `synchronous_standby_names` and `synchronous_commit`:
//!   which standbys count and which LSN they confirm (no I/O).
//! - [`quorum`]: quorum arithmetic (W + R > N) and quorum reads.
//! - [`slots`]: replication slots, which keep WAL a standby still needs.
//! - [`fork`]: where two nodes' histories part (rewind and fencing decisions).
//! - [`handle`]: the swappable engine a standby serves from, and its rewind.
//! - [`primary`]: the hub and the WAL sender of each standby.
//! - [`standby`]: the WAL receiver and base-backup installation.
//!
//! # A synchronous write's path
//!
//! The server appends the record (engine) → the WAL sender of every standby
//! is woken by the written-LSN watch and ships the bytes, while the primary's
//! flusher fsyncs them → each standby's receiver appends, fsyncs, applies and
//! reports write/flush/apply LSNs → the hub recomputes the confirmed LSN per
//! level with [`sync_rule`] → the server's wait on [`primary::Hub::wait_confirmed`]
//! and on the local fsync both complete → the client hears `+OK`.

pub mod fork;
pub mod handle;
pub mod outbox;
pub mod primary;
pub mod protocol;
pub mod quorum;
pub mod slots;
pub mod standby;
pub mod stream;
pub mod sync_rule;

pub use handle::{EngineHandle, RewindOutcome};
pub use primary::{Hub, StandbyView, SyncWaitError, DEFAULT_SENDER_TIMEOUT_MS};
pub use slots::Slots;
pub use standby::{Receiver, ReceiverConfig, ReceiverStatus, RewindCounters};
pub use sync_rule::{check_standby_name, SyncStandbyNames, SynchronousCommit};
