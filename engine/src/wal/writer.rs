//! Group commit.
//!
//! Appenders (serialised by the engine's writer lock) encode records straight
//! into a shared queue buffer, each at the LSN where it will sit in the
//! stream. One flusher thread swaps the whole buffer out, writes it with one
//! `pwrite` per segment, publishes the *written* LSN (replication may send
//! those bytes now), then makes it durable with one `fdatasync` and wakes every
//! writer whose record is covered. While the flusher waits for the disk, the
//! next batch gathers in the queue: that is the group.
//!
//! On a standby the receiving thread may write a batch itself
//! ([`Wal::flush_inline`]) when the flusher is idle: whoever holds the
//! flush state writes the next batch, so batches still go out in order.
//!
//! Segment space is allocated by the appender *before* a record enters the
//! queue, so a full disk fails that one write cleanly and the flusher only
//! ever overwrites preallocated, zero-filled blocks.

use super::record::Mutation;
use super::segment::{self, SegmentHeader};
use super::{Segment, Segments};
use crate::error::WriteError;
use crate::storage::Storage;
use parking_lot::{Condvar, Mutex, MutexGuard};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

/// A writer counted as waiting for its acknowledgement until dropped
/// ([`Wal::waiting_writer`]).
pub struct WaitingWriter(Arc<AtomicUsize>);

impl Drop for WaitingWriter {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// When an append counts as durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// `fdatasync` before acknowledging (the default).
    Always,
    /// Acknowledge once written to the OS; `fdatasync` at most every N ms.
    IntervalMs(u64),
    /// Acknowledge once written to the OS; never `fdatasync` (except at checkpoints and shutdown).
    Never,
}

impl std::str::FromStr for FsyncPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            _ => match s.strip_prefix("interval:").map(str::parse::<u64>) {
                Some(Ok(ms)) if ms > 0 => Ok(FsyncPolicy::IntervalMs(ms)),
                _ => Err(format!(
                    "invalid fsync policy '{s}': expected always, interval:<ms> (ms > 0) or never"
                )),
            },
        }
    }
}

impl std::fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FsyncPolicy::Always => write!(f, "always"),
            FsyncPolicy::IntervalMs(ms) => write!(f, "interval:{ms}"),
            FsyncPolicy::Never => write!(f, "never"),
        }
    }
}

/// How the flusher makes a batch durable under [`FsyncPolicy::Always`]
/// (PostgreSQL's `wal_sync_method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WalSyncMethod {
    /// One `O_DIRECT | O_DSYNC` write per segment touched: the bytes are
    /// durable when the write returns (the default; falls back to
    /// `fdatasync` where the file system refuses direct I/O).
    #[default]
    OpenDatasync,
    /// One buffered `pwrite`, then `fdatasync`.
    Fdatasync,
}

impl std::str::FromStr for WalSyncMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "open_datasync" => Ok(WalSyncMethod::OpenDatasync),
            "fdatasync" => Ok(WalSyncMethod::Fdatasync),
            _ => Err(format!(
                "invalid WAL sync method '{s}': expected open_datasync or fdatasync"
            )),
        }
    }
}

impl std::fmt::Display for WalSyncMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WalSyncMethod::OpenDatasync => "open_datasync",
            WalSyncMethod::Fdatasync => "fdatasync",
        })
    }
}

/// PostgreSQL's `commit_delay` and `commit_siblings` for the WAL flusher:
/// before it writes and fsyncs a batch under [`FsyncPolicy::Always`], the
/// flusher sleeps `delay_us` if at least `siblings` writers are already
/// waiting for that flush, so that the writers about to arrive share the
/// same fsync instead of queueing for the next one. Fewer, fuller fsyncs
/// cost less CPU and, on a disk whose flushes serialise, less waiting. A
/// lone writer (fewer waiters than `siblings`) is never delayed, nor is a
/// batch of replicated WAL only (a standby's flush, which a primary's
/// synchronous writers wait for), and the sleep never exceeds the moving
/// average of recent fsync times (so on a disk that flushes in 30 us the
/// delay is at most 30 us).
///
/// Shared by reference: settings changed at runtime reach the flusher at
/// its next batch, and an engine reopened with the same [`EngineConfig`]
/// keeps them.
///
/// [`EngineConfig`]: crate::EngineConfig
#[derive(Debug)]
pub struct CommitDelay {
    delay_us: AtomicU64,
    siblings: AtomicU64,
}

impl CommitDelay {
    /// Largest delay accepted, as PostgreSQL's `commit_delay`: 100 ms.
    pub const MAX_DELAY_US: u64 = 100_000;
    /// Largest `siblings` accepted, as PostgreSQL's `commit_siblings`.
    pub const MAX_SIBLINGS: u64 = 1000;

    /// `delay_us` 0 turns the delay off.
    pub fn new(delay_us: u64, siblings: u64) -> Result<CommitDelay, String> {
        let d = CommitDelay {
            delay_us: AtomicU64::new(0),
            siblings: AtomicU64::new(1),
        };
        d.set_delay_us(delay_us)?;
        d.set_siblings(siblings)?;
        Ok(d)
    }

    pub fn delay_us(&self) -> u64 {
        self.delay_us.load(Ordering::Relaxed)
    }

    pub fn siblings(&self) -> u64 {
        self.siblings.load(Ordering::Relaxed)
    }

    pub fn set_delay_us(&self, us: u64) -> Result<(), String> {
        if us > Self::MAX_DELAY_US {
            return Err(format!(
                "commit delay {us} us is above the maximum of {} us",
                Self::MAX_DELAY_US
            ));
        }
        self.delay_us.store(us, Ordering::Relaxed);
        Ok(())
    }

    pub fn set_siblings(&self, n: u64) -> Result<(), String> {
        if !(1..=Self::MAX_SIBLINGS).contains(&n) {
            return Err(format!(
                "commit siblings must be between 1 and {}, not {n}",
                Self::MAX_SIBLINGS
            ));
        }
        self.siblings.store(n, Ordering::Relaxed);
        Ok(())
    }

    /// How long to sleep before a batch that `waiting()` writers wait for,
    /// when recent fsyncs took `fsync_ns`: never longer than an fsync, so a
    /// fast disk gets a short delay whatever the setting. `waiting` is only
    /// asked when there is a delay to give.
    fn before_batch(&self, waiting: impl FnOnce() -> usize, fsync_ns: u64) -> Option<Duration> {
        let ns = self.delay_us().saturating_mul(1000).min(fsync_ns);
        (ns > 0 && waiting() as u64 >= self.siblings()).then(|| Duration::from_nanos(ns))
    }
}

impl Default for CommitDelay {
    /// Off, with PostgreSQL's default of 5 siblings.
    fn default() -> Self {
        CommitDelay::new(0, 5).expect("valid defaults")
    }
}

/// When the flusher fsyncs, and how long it lets a group commit gather.
pub(crate) struct FlushSettings {
    pub policy: FsyncPolicy,
    pub sync_method: WalSyncMethod,
    pub commit_delay: Arc<CommitDelay>,
}

/// Most bytes the queue holds before appenders wait for the flusher.
const QUEUE_MAX_BYTES: usize = 32 << 20;
/// Up to this many waiters the flusher wakes them itself.
const DIRECT_WAKE_MAX_WAITERS: usize = 4;

/// The largest batch a lone writer writes itself ([`Wal::flush_inline_alone`]):
/// it runs on a tokio worker, which a big write would hold for long, and
/// for a big write the hand-off to the flusher costs nothing that matters.
const LONE_WRITER_MAX_BYTES: usize = 64 << 10;
/// Bytes written with one zero-fill call while preallocating.
const ZERO_FILL_CHUNK_BYTES: usize = 1 << 20;
/// The newest WAL bytes kept in memory for senders (PostgreSQL's WAL
/// buffers): a standby less than this far behind is served without a read
/// from the segment files.
const RECENT_WAL_BYTES: usize = 16 << 20;

/// Counters of the WAL, for metrics.
#[derive(Debug, Default)]
pub(crate) struct WalCounters {
    pub bytes_written: AtomicU64,
    pub records_appended: AtomicU64,
    pub flush_batches: AtomicU64,
    pub fsyncs: AtomicU64,
    pub segments_created: AtomicU64,
    /// Batches the flusher delayed under [`CommitDelay`].
    pub commit_delays: AtomicU64,
    /// Batches written by the thread that appended them, the flusher being
    /// idle ([`Wal::flush_inline`], [`Wal::flush_inline_alone`]).
    pub inline_flushes: AtomicU64,
}

struct Queue {
    buf: Vec<u8>,
    /// LSN of `buf[0]`.
    start_lsn: u64,
    /// Highest LSN someone asked to be fsynced regardless of policy.
    sync_requested: u64,
    /// `buf` holds a record written on this node (not replicated WAL): only
    /// such a batch may be held back by the commit delay.
    has_local: bool,
    /// Appends in `buf` (a chunk of replicated WAL counts as one).
    appends: u64,
    shutdown: bool,
}

/// The newest WAL bytes the flusher took, `[start_lsn, start_lsn + bytes.len())`:
/// what senders read before (and after) the flusher writes them.
struct RecentWal {
    start_lsn: u64,
    bytes: std::collections::VecDeque<u8>,
}

impl RecentWal {
    /// An empty window starting at `lsn`, its ring allocated at the cap up
    /// front (the pages are touched only as WAL fills them).
    fn new(lsn: u64) -> RecentWal {
        RecentWal {
            start_lsn: lsn,
            bytes: std::collections::VecDeque::with_capacity(RECENT_WAL_BYTES),
        }
    }

    /// Adds the batch that starts at `lsn`, dropping the oldest bytes past the cap.
    /// The newest batch is always kept whole, however large.
    ///
    /// The oldest bytes go before the new ones come in, so the ring never
    /// holds more than the cap (or the one larger batch) and, created with
    /// [`RecentWal::new`], never grows: no reallocation copies megabytes,
    /// and resident memory stays at the cap, not at twice it.
    fn push(&mut self, lsn: u64, data: &[u8]) {
        if lsn != self.start_lsn + self.bytes.len() as u64 {
            self.bytes.clear();
            self.start_lsn = lsn;
        }
        let over = (self.bytes.len() + data.len()).saturating_sub(RECENT_WAL_BYTES.max(data.len()));
        if over > 0 {
            self.bytes.drain(..over);
            self.start_lsn += over as u64;
        }
        self.bytes.extend(data);
    }

    /// A copy of `[lsn, lsn + len)` if all of it is here; otherwise the
    /// LSN this memory starts at.
    fn read(&self, lsn: u64, len: usize) -> Result<Vec<u8>, u64> {
        let from = lsn
            .checked_sub(self.start_lsn)
            .and_then(|f| usize::try_from(f).ok())
            .filter(|f| f + len <= self.bytes.len())
            .ok_or(self.start_lsn)?;
        let (a, b) = self.bytes.as_slices();
        let mut out = Vec::with_capacity(len);
        if from < a.len() {
            out.extend_from_slice(&a[from..a.len().min(from + len)]);
        }
        let rest = len - out.len();
        let b_from = from.saturating_sub(a.len());
        out.extend_from_slice(&b[b_from..b_from + rest]);
        Ok(out)
    }
}

/// A segment being preallocated in the background: its start LSN and thread.
type Preparing = (u64, JoinHandle<Result<(), std::io::Error>>);

type Waiter = (u64, oneshot::Sender<Result<(), WriteError>>);

/// Called on the flusher thread with `(start_lsn, bytes)` of each batch the
/// moment it becomes sendable, before the flusher writes it: a WAL sender
/// can put it on the wire without waiting for its task to be scheduled. It
/// runs on the write path, so it must not block (a sender that cannot send
/// at once leaves the batch to its task, which wakes on
/// `subscribe_sendable`).
pub type SendableListener = Arc<dyn Fn(u64, &[u8]) + Send + Sync>;

/// Called on the flusher thread after it published a new written or
/// flushed LSN: a standby can report its progress without a thread hop.
/// Same rule: it must not block.
pub type ProgressListener = Arc<dyn Fn() + Send + Sync>;

pub(crate) struct WalShared {
    pub storage: Arc<dyn Storage>,
    pub wal_dir: PathBuf,
    pub segments: Segments,
    pub policy: FsyncPolicy,
    sync_method: WalSyncMethod,
    commit_delay: Arc<CommitDelay>,
    queue: Mutex<Queue>,
    flush_state: Mutex<FlushState>,
    recent: parking_lot::RwLock<RecentWal>,
    /// Flusher waits here for data.
    queue_cv: Condvar,
    /// Appenders wait here for queue space; sync requesters for the sync.
    progress_cv: Condvar,
    /// End of the bytes handed to the flusher's current write or earlier:
    /// what senders may ship (from memory until the write is done).
    sendable_lsn: AtomicU64,
    /// End of the bytes handed to the OS (or written durably).
    written_lsn: AtomicU64,
    synced_lsn: AtomicU64,
    /// LSN acknowledged under the fsync policy.
    ack_lsn: AtomicU64,
    sendable_tx: watch::Sender<u64>,
    written_tx: watch::Sender<u64>,
    flushed_tx: watch::Sender<u64>,
    /// Called by the flusher with each batch as it becomes sendable.
    sendable_listener: parking_lot::RwLock<Option<SendableListener>>,
    /// Called by the flusher after it published a new written or flushed LSN.
    progress_listener: parking_lot::RwLock<Option<ProgressListener>>,
    waiters: Mutex<Vec<Waiter>>,
    /// Writers between their append and their acknowledgement, local or by
    /// standbys ([`WaitingWriter`]): one that finds none is alone.
    pub waiting_writers: Arc<AtomicUsize>,
    /// The notifier thread sleeps here; the flag asks it to stop.
    notifier_stop: Mutex<bool>,
    notifier_cv: Condvar,
    poisoned: Mutex<Option<Arc<str>>>,
    is_poisoned: AtomicBool,
    pub counters: WalCounters,
}

impl WalShared {
    pub fn sendable_lsn(&self) -> u64 {
        self.sendable_lsn.load(Ordering::Acquire)
    }
    pub fn written_lsn(&self) -> u64 {
        self.written_lsn.load(Ordering::Acquire)
    }
    pub fn synced_lsn(&self) -> u64 {
        self.synced_lsn.load(Ordering::Acquire)
    }
    pub fn ack_lsn(&self) -> u64 {
        self.ack_lsn.load(Ordering::Acquire)
    }
    pub fn subscribe_sendable(&self) -> watch::Receiver<u64> {
        self.sendable_tx.subscribe()
    }
    pub fn subscribe_written(&self) -> watch::Receiver<u64> {
        self.written_tx.subscribe()
    }
    pub fn subscribe_flushed(&self) -> watch::Receiver<u64> {
        self.flushed_tx.subscribe()
    }
    pub fn set_sendable_listener(&self, l: Option<SendableListener>) {
        *self.sendable_listener.write() = l;
    }
    pub fn set_progress_listener(&self, l: Option<ProgressListener>) {
        *self.progress_listener.write() = l;
    }
    fn progress_published(&self) {
        if let Some(l) = &*self.progress_listener.read() {
            l();
        }
    }

    /// WAL bytes `[lsn, lsn + len)` from memory if they are among the
    /// newest; otherwise the LSN the bytes in memory start at. Every byte
    /// below that LSN is in the segment files.
    pub fn read_recent(&self, lsn: u64, len: usize) -> Result<Vec<u8>, u64> {
        self.recent.read().read(lsn, len)
    }

    /// Whether batches are written with [`StorageFile::write_durable_at`].
    ///
    /// [`StorageFile::write_durable_at`]: crate::StorageFile::write_durable_at
    fn writes_durably(&self) -> bool {
        self.policy == FsyncPolicy::Always && self.sync_method == WalSyncMethod::OpenDatasync
    }

    pub fn poison_reason(&self) -> Option<Arc<str>> {
        if !self.is_poisoned.load(Ordering::Acquire) {
            return None;
        }
        self.poisoned.lock().clone()
    }

    fn poison(&self, reason: String) {
        tracing::error!(%reason, "WAL poisoned: refusing all further writes");
        let reason: Arc<str> = reason.into();
        *self.poisoned.lock() = Some(reason.clone());
        self.is_poisoned.store(true, Ordering::Release);
        for (_, tx) in self.waiters.lock().drain(..) {
            let _ = tx.send(Err(WriteError::Poisoned(reason.clone())));
        }
        self.progress_cv.notify_all();
    }
}

/// The appending side: assigns LSNs and keeps segment space ahead of them.
/// Callers serialise on the engine's writer lock.
pub(crate) struct Wal {
    pub shared: Arc<WalShared>,
    cluster_id: u64,
    segment_size_bytes: u64,
    flusher: Mutex<Option<JoinHandle<()>>>,
    notifier: Mutex<Option<JoinHandle<()>>>,
    preparing: Mutex<Option<Preparing>>,
}

impl Wal {
    /// Starts the WAL at `end_lsn` over recovered `segments`, spawning the flusher.
    pub fn start(
        storage: Arc<dyn Storage>,
        wal_dir: PathBuf,
        segments: Segments,
        end_lsn: u64,
        flush: FlushSettings,
        cluster_id: u64,
        segment_size_bytes: u64,
    ) -> Wal {
        let FlushSettings {
            policy,
            sync_method,
            commit_delay,
        } = flush;
        let (sendable_tx, _) = watch::channel(end_lsn);
        let (written_tx, _) = watch::channel(end_lsn);
        let (flushed_tx, _) = watch::channel(end_lsn);
        let shared = Arc::new(WalShared {
            storage,
            wal_dir,
            segments,
            policy,
            sync_method,
            commit_delay,
            recent: parking_lot::RwLock::new(RecentWal::new(end_lsn)),
            queue: Mutex::new(Queue {
                buf: Vec::new(),
                start_lsn: end_lsn,
                sync_requested: 0,
                has_local: false,
                appends: 0,
                shutdown: false,
            }),
            flush_state: Mutex::new(FlushState::new()),
            queue_cv: Condvar::new(),
            progress_cv: Condvar::new(),
            sendable_lsn: AtomicU64::new(end_lsn),
            written_lsn: AtomicU64::new(end_lsn),
            synced_lsn: AtomicU64::new(end_lsn),
            ack_lsn: AtomicU64::new(end_lsn),
            sendable_tx,
            written_tx,
            flushed_tx,
            sendable_listener: parking_lot::RwLock::new(None),
            progress_listener: parking_lot::RwLock::new(None),
            waiters: Mutex::new(Vec::new()),
            waiting_writers: Arc::new(AtomicUsize::new(0)),
            notifier_stop: Mutex::new(false),
            notifier_cv: Condvar::new(),
            poisoned: Mutex::new(None),
            is_poisoned: AtomicBool::new(false),
            counters: WalCounters::default(),
        });
        let flusher_shared = shared.clone();
        let handle = std::thread::Builder::new()
            .name("wal-flusher".into())
            .spawn(move || {
                // So that a commit delay sleeps about what it says, not up to
                // the default 50 us timer slack longer.
                #[cfg(target_os = "linux")]
                // SAFETY: prctl(PR_SET_TIMERSLACK) only sets a number on the
                // calling thread.
                unsafe {
                    libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong);
                }
                flusher_loop(&flusher_shared)
            })
            .expect("spawn the WAL flusher thread");
        let notifier_shared = shared.clone();
        let notifier = std::thread::Builder::new()
            .name("wal-notifier".into())
            .spawn(move || notifier_loop(&notifier_shared))
            .expect("spawn the WAL notifier thread");
        Wal {
            shared,
            cluster_id,
            segment_size_bytes,
            flusher: Mutex::new(Some(handle)),
            notifier: Mutex::new(Some(notifier)),
            preparing: Mutex::new(None),
        }
    }

    /// LSN where the next record goes.
    pub fn end_lsn(&self) -> u64 {
        let q = self.shared.queue.lock();
        q.start_lsn + q.buf.len() as u64
    }

    /// Appends one mutation; returns its end LSN (the position just past it).
    pub fn append(&self, m: &Mutation, epoch: u64) -> Result<u64, WriteError> {
        let len = (super::record::RECORD_HEADER_BYTES + m.payload_len()) as u64;
        self.append_with(len, epoch, true, true, |lsn, buf| {
            m.encode(lsn, buf);
        })
    }

    /// Appends bytes already framed at `lsn` (replicated WAL). The caller
    /// verified them. The flusher is not woken: the caller must call
    /// [`Wal::flush_inline`] next, which writes them or wakes it.
    pub fn append_raw(
        &self,
        lsn: u64,
        bytes: &[u8],
        records: u64,
        epoch: u64,
    ) -> Result<u64, WriteError> {
        let end = self.end_lsn();
        if lsn != end {
            return Err(WriteError::BadReplicatedWal(format!(
                "WAL chunk starts at LSN {lsn} but this node's WAL ends at {end}"
            )));
        }
        let r = self.append_with(bytes.len() as u64, epoch, false, false, |_, buf| {
            buf.extend_from_slice(bytes)
        })?;
        self.shared
            .counters
            .records_appended
            .fetch_add(records.saturating_sub(1), Ordering::Relaxed);
        Ok(r)
    }

    fn append_with(
        &self,
        len: u64,
        epoch: u64,
        local: bool,
        notify: bool,
        encode: impl FnOnce(u64, &mut Vec<u8>),
    ) -> Result<u64, WriteError> {
        if let Some(reason) = self.shared.poison_reason() {
            return Err(WriteError::Poisoned(reason));
        }
        let start = self.end_lsn();
        self.ensure_allocated(start + len, epoch)?;
        let mut q = self.shared.queue.lock();
        while q.buf.len() >= QUEUE_MAX_BYTES
            && !q.shutdown
            && !self.shared.is_poisoned.load(Ordering::Acquire)
        {
            self.shared.queue_cv.notify_one();
            self.shared.progress_cv.wait(&mut q);
        }
        if q.shutdown {
            return Err(WriteError::Closed);
        }
        if let Some(reason) = self.shared.poison_reason() {
            return Err(WriteError::Poisoned(reason));
        }
        let lsn = q.start_lsn + q.buf.len() as u64;
        assert_eq!(lsn, start, "only one appender at a time");
        let before = q.buf.len();
        encode(lsn, &mut q.buf);
        q.has_local |= local;
        q.appends += 1;
        assert_eq!(
            (q.buf.len() - before) as u64,
            len,
            "encoded length as reserved"
        );
        drop(q);
        self.shared
            .counters
            .records_appended
            .fetch_add(1, Ordering::Relaxed);
        if notify {
            self.shared.queue_cv.notify_one();
        }
        Ok(lsn + len)
    }

    /// Writes what the queue holds on the calling thread if no flush is in
    /// progress, else leaves it to the flusher thread (which takes it after
    /// its current batch). A standby's receiver calls this after each chunk
    /// it appends: when its flusher is idle the chunk is written without
    /// waking another thread, which is one hand-off less on the path of a
    /// synchronous commit. Only under `--fsync always`; otherwise, and
    /// during a commit delay, the flusher is woken as for any append.
    pub fn flush_inline(&self) {
        let shared = &*self.shared;
        if shared.policy != FsyncPolicy::Always || shared.is_poisoned.load(Ordering::Acquire) {
            shared.queue_cv.notify_one();
            return;
        }
        let Some(mut st) = shared.flush_state.try_lock() else {
            // The flusher holds it and looks at the queue again before it
            // sleeps; the notification covers a flusher about to take it.
            shared.queue_cv.notify_one();
            return;
        };
        let batch = {
            let mut q = shared.queue.lock();
            if q.buf.is_empty() || q.shutdown {
                drop(q);
                drop(st);
                shared.queue_cv.notify_one();
                return;
            }
            take_batch(&mut q, &mut st)
        };
        write_inline(shared, &mut st, batch);
    }

    /// Writes the queue up to at least `lsn` on the calling thread when this
    /// writer is alone: the flusher idle, no other writer waiting (neither
    /// for a flush nor, as a [`WaitingWriter`], for its standbys), the last
    /// batch and the queue each holding one append, the queue at most
    /// [`LONE_WRITER_MAX_BYTES`], and the record at `lsn` not yet taken. At
    /// one client this spares the hand-off to the flusher thread and back
    /// (each a sleep and a wake-up); with company, the flusher's group commit
    /// (and its commit delay) serves everyone better, so nothing is done.
    /// Only under `--fsync always`. Blocks for one durable write when it
    /// writes.
    pub fn flush_inline_alone(&self, lsn: u64) {
        let shared = &*self.shared;
        if shared.policy != FsyncPolicy::Always
            || shared.ack_lsn() >= lsn
            || shared.is_poisoned.load(Ordering::Acquire)
            || shared.waiting_writers.load(Ordering::Acquire) > 0
            || !shared.waiters.lock().is_empty()
        {
            return;
        }
        let Some(mut st) = shared.flush_state.try_lock() else {
            return;
        };
        // A burst of writers that all just got their replies leaves a moment
        // with none waiting; the size of the last batch tells it from one
        // writer going alone.
        if st.last_batch_appends > 1 {
            return;
        }
        let batch = {
            let mut q = shared.queue.lock();
            if q.buf.is_empty()
                || q.buf.len() > LONE_WRITER_MAX_BYTES
                || q.shutdown
                || q.start_lsn >= lsn
                || q.appends > 1
            {
                return;
            }
            take_batch(&mut q, &mut st)
        };
        write_inline(shared, &mut st, batch);
    }

    /// Counts the caller as a writer waiting for its acknowledgement until
    /// the guard is dropped: other writers are then not alone.
    pub fn waiting_writer(&self) -> WaitingWriter {
        let n = self.shared.waiting_writers.clone();
        n.fetch_add(1, Ordering::AcqRel);
        WaitingWriter(n)
    }

    /// Makes sure segments exist up to `lsn`, activating prepared ones or
    /// creating them. On failure nothing is changed.
    fn ensure_allocated(&self, lsn: u64, epoch: u64) -> Result<(), WriteError> {
        loop {
            let alloc_end = self.shared.segments.allocated_end().unwrap_or(0);
            if alloc_end >= lsn {
                // Keep one segment prepared ahead once the last is half used.
                let last_start = self
                    .shared
                    .segments
                    .find(alloc_end.saturating_sub(1))
                    .map(|s| s.start_lsn())
                    .unwrap_or(0);
                if lsn.saturating_sub(last_start) * 2 >= alloc_end - last_start {
                    self.prepare_in_background(alloc_end);
                }
                return Ok(());
            }
            if let Err(e) = self.activate_segment(alloc_end, epoch) {
                // The client gets the error; the operator needs it too, but
                // not once per refused write while the disk stays full.
                static LOGGED_AT_SECS: AtomicU64 = AtomicU64::new(0);
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let last = LOGGED_AT_SECS.load(Ordering::Relaxed);
                if now >= last + 10
                    && LOGGED_AT_SECS
                        .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                {
                    tracing::error!(error = %e, "writes refused: cannot allocate the next WAL segment (logged at most every 10 s)");
                }
                return Err(e);
            }
        }
    }

    fn prepare_in_background(&self, start_lsn: u64) {
        let mut prep = self.preparing.lock();
        if prep.as_ref().is_some_and(|(s, _)| *s == start_lsn) {
            return;
        }
        if let Some((_, h)) = prep.take() {
            let _ = h.join();
        }
        let storage = self.shared.storage.clone();
        let path = segment::prepared_path(&self.shared.wal_dir, start_lsn);
        let size = self.segment_size_bytes;
        let handle = std::thread::Builder::new()
            .name("wal-prealloc".into())
            .spawn(move || preallocate(&*storage, &path, size))
            .expect("spawn the segment preallocation thread");
        *prep = Some((start_lsn, handle));
    }

    /// Puts the segment starting at `start_lsn` to use.
    pub fn activate_segment(&self, start_lsn: u64, epoch: u64) -> Result<(), WriteError> {
        let storage = &*self.shared.storage;
        let wal_dir = &self.shared.wal_dir;
        let prep_path = segment::prepared_path(wal_dir, start_lsn);
        let final_path = segment::segment_path(wal_dir, start_lsn);
        let io_err = |path: &Path, e: std::io::Error| {
            if e.kind() == std::io::ErrorKind::StorageFull {
                WriteError::DiskFull {
                    path: path.to_path_buf(),
                    detail: e.to_string(),
                }
            } else {
                WriteError::Io {
                    path: path.to_path_buf(),
                    detail: e.to_string(),
                }
            }
        };
        let prepared = match self.preparing.lock().take() {
            Some((s, h)) if s == start_lsn => matches!(h.join(), Ok(Ok(()))),
            Some((_, h)) => {
                let _ = h.join();
                false
            }
            None => false,
        };
        if !prepared {
            preallocate(storage, &prep_path, self.segment_size_bytes)
                .map_err(|e| io_err(&final_path, e))?;
        }
        let header = SegmentHeader {
            cluster_id: self.cluster_id,
            epoch,
            start_lsn,
            segment_size_bytes: self.segment_size_bytes,
        };
        let file = storage
            .open(&prep_path)
            .map_err(|e| io_err(&prep_path, e))?;
        file.write_all_at(&header.encode(), 0)
            .map_err(|e| io_err(&prep_path, e))?;
        // IMPORTANT: the header is durable before the file can appear under
        // its segment name. Otherwise the flusher's directory fsync could
        // make the name durable while the header write is still in flight,
        // and a power loss could leave a torn header in the newest segment,
        // which recovery must refuse (it cannot tell that from damage).
        // One fdatasync per segment.
        file.sync_data().map_err(|e| io_err(&prep_path, e))?;
        storage
            .rename(&prep_path, &final_path)
            .map_err(|e| io_err(&final_path, e))?;
        // The directory entry becomes durable with the flusher's first fsync
        // of this segment (it syncs the directory first).
        self.shared
            .segments
            .insert(Arc::new(Segment::new(header, final_path, file, false)));
        self.shared
            .counters
            .segments_created
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Blocks until everything up to `lsn` is fsynced, whatever the policy.
    pub fn sync_to(&self, lsn: u64) -> Result<(), WriteError> {
        let mut q = self.shared.queue.lock();
        q.sync_requested = q.sync_requested.max(lsn);
        self.shared.queue_cv.notify_one();
        loop {
            if let Some(reason) = self.shared.poison_reason() {
                return Err(WriteError::Poisoned(reason));
            }
            if self.shared.synced_lsn() >= lsn {
                return Ok(());
            }
            if q.shutdown {
                return Err(WriteError::Closed);
            }
            self.shared
                .progress_cv
                .wait_for(&mut q, Duration::from_millis(50));
        }
    }

    /// Completes when `lsn` is durable under the fsync policy.
    pub async fn wait_durable(&self, lsn: u64) -> Result<(), WriteError> {
        let rx = match self.register_waiter(lsn) {
            None => return Ok(()),
            Some(Err(e)) => return Err(e),
            Some(Ok(rx)) => rx,
        };
        rx.await.unwrap_or(Err(WriteError::Closed))
    }

    /// Blocking form of [`Wal::wait_durable`], for threads outside an async runtime.
    pub fn wait_durable_blocking(&self, lsn: u64) -> Result<(), WriteError> {
        match self.register_waiter(lsn) {
            None => Ok(()),
            Some(Err(e)) => Err(e),
            Some(Ok(rx)) => rx.blocking_recv().unwrap_or(Err(WriteError::Closed)),
        }
    }

    fn register_waiter(
        &self,
        lsn: u64,
    ) -> Option<Result<oneshot::Receiver<Result<(), WriteError>>, WriteError>> {
        if self.shared.ack_lsn() >= lsn {
            return None;
        }
        let mut waiters = self.shared.waiters.lock();
        // Re-check under the lock: the flusher publishes ack_lsn before it takes this lock.
        if self.shared.ack_lsn() >= lsn {
            return None;
        }
        if let Some(reason) = self.shared.poison_reason() {
            return Some(Err(WriteError::Poisoned(reason)));
        }
        let (tx, rx) = oneshot::channel();
        waiters.push((lsn, tx));
        Some(Ok(rx))
    }

    /// Stops the flusher after it made everything durable.
    pub fn shutdown(&self) {
        {
            let mut q = self.shared.queue.lock();
            q.shutdown = true;
        }
        self.shared.queue_cv.notify_all();
        self.shared.progress_cv.notify_all();
        if let Some(h) = self.flusher.lock().take() {
            // The last handle on the engine can be dropped on the flusher
            // itself, by a listener it calls: it then finishes on its own
            // (it saw `shutdown`), and joining it here would be a self-join.
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
        *self.shared.notifier_stop.lock() = true;
        self.shared.notifier_cv.notify_all();
        if let Some(h) = self.notifier.lock().take() {
            let _ = h.join();
        }
        if let Some((_, h)) = self.preparing.lock().take() {
            let _ = h.join();
        }
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Creates a zero-filled, fsynced file of `size` bytes at `path`. On failure
/// the partial file is removed.
fn preallocate(storage: &dyn Storage, path: &Path, size: u64) -> Result<(), std::io::Error> {
    if storage.exists(path) {
        storage.remove(path)?;
    }
    let file = storage.create(path)?;
    let zeros = vec![0u8; ZERO_FILL_CHUNK_BYTES];
    let result = (|| {
        // IMPORTANT: write real zeros rather than set_len: blocks allocated now
        // make later fdatasyncs data-only, and a full disk shows here, not
        // in the middle of a group commit.
        let mut off = 0u64;
        while off < size {
            let n = (size - off).min(zeros.len() as u64) as usize;
            file.write_all_at(&zeros[..n], off)?;
            off += n as u64;
        }
        file.sync_data()
    })();
    if let Err(e) = result {
        drop(file);
        let _ = storage.remove(path);
        return Err(e);
    }
    Ok(())
}

/// What the flusher keeps between batches. Whoever holds it (the flusher
/// thread, or a standby's receiver flushing inline) may take and write the
/// next batch; the lock orders batches. Lock order: this, then the queue.
struct FlushState {
    /// The previous batch's buffer, handed back to the queue for reuse.
    spare: Vec<u8>,
    /// Segments written but not yet fdatasynced (`fdatasync` method).
    unsynced: Vec<Arc<Segment>>,
    last_sync: Instant,
    /// Moving average of fsync times (1/8 weight to the newest): the cap on
    /// the commit delay. Starts at 0, so nothing is delayed before an fsync
    /// was timed.
    fsync_avg_ns: u64,
    /// Appends in the last batch taken.
    last_batch_appends: u64,
}

impl FlushState {
    fn new() -> FlushState {
        FlushState {
            spare: Vec::new(),
            unsynced: Vec::new(),
            last_sync: Instant::now(),
            fsync_avg_ns: 0,
            last_batch_appends: 0,
        }
    }
}

/// One batch taken from the queue.
struct Batch {
    data: Vec<u8>,
    start: u64,
    sync_requested: u64,
    shutdown: bool,
}

/// Takes the whole queue as one batch; the caller holds the flush state.
fn take_batch(q: &mut Queue, st: &mut FlushState) -> Batch {
    st.spare.clear();
    q.has_local = false;
    st.last_batch_appends = std::mem::take(&mut q.appends);
    let data = std::mem::replace(&mut q.buf, std::mem::take(&mut st.spare));
    let start = q.start_lsn;
    q.start_lsn += data.len() as u64;
    Batch {
        data,
        start,
        sync_requested: q.sync_requested,
        shutdown: q.shutdown,
    }
}

fn flusher_loop(shared: &WalShared) {
    loop {
        let mut st = shared.flush_state.lock();
        let batch = {
            let mut q = shared.queue.lock();
            let want_sync =
                q.sync_requested > shared.synced_lsn() || (q.shutdown && !st.unsynced.is_empty());
            let interval_due = matches!(shared.policy, FsyncPolicy::IntervalMs(ms) if !st.unsynced.is_empty() && st.last_sync.elapsed() >= Duration::from_millis(ms));
            if q.buf.is_empty() && !want_sync && !interval_due && !q.shutdown {
                // Nothing to do: sleep with the flush state free, so that a
                // standby's receiver can flush inline meanwhile
                // ([`Wal::flush_inline`]). The queue stays locked until the
                // wait begins, so no append is missed.
                let interval_left = match shared.policy {
                    FsyncPolicy::IntervalMs(ms) if !st.unsynced.is_empty() => {
                        Some(Duration::from_millis(ms).saturating_sub(st.last_sync.elapsed()))
                    }
                    _ => None,
                };
                drop(st);
                match interval_left {
                    Some(left) => {
                        shared.queue_cv.wait_for(&mut q, left);
                    }
                    None => shared.queue_cv.wait(&mut q),
                }
                continue;
            }
            if shared.policy == FsyncPolicy::Always && q.has_local && !q.shutdown {
                // commit_delay: let the writers about to arrive join this
                // batch; the queue is unlocked while it sleeps, so they can.
                // Not for replicated WAL: a standby's flush is what a
                // primary's synchronous writers wait for, and readers waiting
                // on it are not writers about to arrive. (Lock order: queue,
                // then waiters.)
                let waiting = || shared.waiters.lock().len();
                if let Some(delay) = shared.commit_delay.before_batch(waiting, st.fsync_avg_ns) {
                    shared
                        .counters
                        .commit_delays
                        .fetch_add(1, Ordering::Relaxed);
                    MutexGuard::unlocked(&mut q, || std::thread::sleep(delay));
                }
            }
            take_batch(&mut q, &mut st)
        };
        let shutdown = batch.shutdown;
        write_and_publish(shared, &mut st, batch);
        drop(st);
        if shutdown && shared.queue.lock().buf.is_empty() {
            return;
        }
    }
}

/// [`write_and_publish`] on the thread that appended the batch (the flusher
/// idle), counted as such.
fn write_inline(shared: &WalShared, st: &mut FlushState, batch: Batch) {
    shared
        .counters
        .inline_flushes
        .fetch_add(1, Ordering::Relaxed);
    write_and_publish(shared, st, batch);
}

/// Writes one batch, makes it durable under the policy, publishes the new
/// LSNs and wakes the writers they acknowledge. The caller holds the flush
/// state, so batches are written in LSN order.
fn write_and_publish(shared: &WalShared, st: &mut FlushState, batch: Batch) {
    let Batch {
        data,
        start,
        sync_requested,
        shutdown,
    } = batch;
    shared.progress_cv.notify_all();
    if shared.is_poisoned.load(Ordering::Acquire) {
        st.spare = data;
        return;
    }
    let end = start + data.len() as u64;
    if !data.is_empty() {
        // Senders may ship the batch while it is written: a write that
        // is also the flush (open_datasync) then overlaps the standbys'
        // flushes, as a buffered write followed by fdatasync does. If
        // this process dies first, the bytes a standby got are past
        // what the restarted primary recovers, and the new epoch it
        // starts makes that standby rewind (docs/replication-protocol.md).
        shared.recent.write().push(start, &data);
        shared.sendable_lsn.store(end, Ordering::Release);
        shared.sendable_tx.send_replace(end);
        if let Some(l) = &*shared.sendable_listener.read() {
            l(start, &data);
        }
        let began = Instant::now();
        if let Err(e) = write_batch(shared, start, &data, &mut st.unsynced) {
            shared.poison(if shared.writes_durably() {
                format!("durable WAL write (O_DIRECT|O_DSYNC, its own fdatasync) at LSN {start} failed: {e}")
            } else {
                format!("WAL write at LSN {start} failed: {e}")
            });
            return;
        }
        if shared.writes_durably() {
            st.last_sync = flush_timed(began, &mut st.fsync_avg_ns);
        }
        shared
            .counters
            .bytes_written
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        shared
            .counters
            .flush_batches
            .fetch_add(1, Ordering::Relaxed);
        shared.written_lsn.store(end, Ordering::Release);
        shared.written_tx.send_replace(end);
        if !shared.writes_durably() {
            // Written but not yet flushed: remote_write can count it now.
            shared.progress_published();
        }
    }
    let written = shared.written_lsn();
    let must_sync = match shared.policy {
        FsyncPolicy::Always => true,
        FsyncPolicy::IntervalMs(ms) => st.last_sync.elapsed() >= Duration::from_millis(ms),
        FsyncPolicy::Never => false,
    } || sync_requested > shared.synced_lsn()
        || shutdown;
    if must_sync && !st.unsynced.is_empty() {
        let began = Instant::now();
        if let Err(e) = sync_segments(shared, &mut st.unsynced) {
            shared.poison(format!("fdatasync of the WAL failed: {e}"));
            return;
        }
        st.last_sync = flush_timed(began, &mut st.fsync_avg_ns);
    }
    if (must_sync || st.unsynced.is_empty()) && shared.synced_lsn() != written {
        shared.synced_lsn.store(written, Ordering::Release);
        shared.flushed_tx.send_replace(written);
        shared.progress_published();
    }
    let ack = match shared.policy {
        FsyncPolicy::Always => shared.synced_lsn(),
        _ => written,
    };
    shared.ack_lsn.store(ack, Ordering::Release);
    // Waking many writers costs a syscall each: the notifier thread does
    // it while this thread starts on the next batch. A few are woken here,
    // which saves a thread hop when concurrency is low.
    if shared.waiters.lock().len() <= DIRECT_WAKE_MAX_WAITERS {
        wake_waiters(shared, ack);
    } else {
        let _g = shared.notifier_stop.lock();
        shared.notifier_cv.notify_one();
    }
    shared.progress_cv.notify_all();
    st.spare = data;
}

/// Folds a flush that began at `began` and ended now into the moving
/// average (1/8 weight to the newest); returns now.
fn flush_timed(began: Instant, avg_ns: &mut u64) -> Instant {
    let now = Instant::now();
    let took = now.duration_since(began).as_nanos() as u64;
    *avg_ns = (avg_ns.saturating_mul(7).saturating_add(took)) / 8;
    now
}

fn notifier_loop(shared: &WalShared) {
    let mut woken = 0u64;
    loop {
        {
            let mut stop = shared.notifier_stop.lock();
            while shared.ack_lsn() <= woken && !*stop {
                shared.notifier_cv.wait(&mut stop);
            }
            if *stop && shared.ack_lsn() <= woken {
                return;
            }
        }
        woken = shared.ack_lsn();
        wake_waiters(shared, woken);
    }
}

/// Completes every waiter whose LSN is acknowledged.
fn wake_waiters(shared: &WalShared, ack: u64) {
    let mut waiters = shared.waiters.lock();
    let mut i = 0;
    while i < waiters.len() {
        if waiters[i].0 <= ack {
            let (_, tx) = waiters.swap_remove(i);
            let _ = tx.send(Ok(()));
        } else {
            i += 1;
        }
    }
}

/// Writes one batch. Under `Always`, a segment the batch leaves behind is
/// synced before the next one is written, so the medium only ever holds a
/// prefix of the stream plus at most one partial write. With
/// [`WalSyncMethod::OpenDatasync`] every write is durable when it returns
/// and nothing is left in `unsynced`.
fn write_batch(
    shared: &WalShared,
    start: u64,
    data: &[u8],
    unsynced: &mut Vec<Arc<Segment>>,
) -> std::io::Result<()> {
    let mut lsn = start;
    let mut rest = data;
    while !rest.is_empty() {
        let seg = shared.segments.find(lsn).ok_or_else(|| {
            std::io::Error::other(format!("no WAL segment allocated for LSN {lsn}"))
        })?;
        let n =
            usize::try_from((seg.end_lsn() - lsn).min(rest.len() as u64)).expect("fits in usize");
        if shared.writes_durably() {
            sync_dir_once(shared, &seg)?;
            seg.file
                .write_durable_at(&rest[..n], seg.file_offset(lsn))?;
            shared.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
        } else {
            if shared.policy == FsyncPolicy::Always && !unsynced.is_empty() {
                sync_segments(shared, unsynced)?;
            }
            seg.file.write_all_at(&rest[..n], seg.file_offset(lsn))?;
            if !unsynced.iter().any(|s| Arc::ptr_eq(s, &seg)) {
                unsynced.push(seg);
            }
        }
        lsn += n as u64;
        rest = &rest[n..];
    }
    Ok(())
}

fn sync_segments(shared: &WalShared, unsynced: &mut Vec<Arc<Segment>>) -> std::io::Result<()> {
    for seg in unsynced.drain(..) {
        sync_dir_once(shared, &seg)?;
        seg.file.sync_data()?;
        shared.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// Makes the directory entry of a new segment durable, once.
fn sync_dir_once(shared: &WalShared, seg: &Segment) -> std::io::Result<()> {
    if !seg.dir_synced() {
        // IMPORTANT: fsync the directory, or the new segment may vanish in a power loss.
        shared.storage.sync_dir(&shared.wal_dir)?;
        seg.dir_synced.store(true, Ordering::Release);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{
        CommitDelay, FlushSettings, FsyncPolicy, RecentWal, Segments, Wal, WalSyncMethod,
        LONE_WRITER_MAX_BYTES, RECENT_WAL_BYTES,
    };
    use crate::storage::{SimStorage, Storage};
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    /// A WAL on the simulator whose flusher has gone to sleep. `append_raw`
    /// does not wake it, so what happens to those bytes is up to the test.
    fn sleeping_wal() -> Wal {
        let storage: Arc<dyn Storage> = Arc::new(SimStorage::new());
        storage.create_dir_all("/wal".as_ref()).unwrap();
        let wal = Wal::start(
            storage,
            "/wal".into(),
            Segments::from_map(Default::default()),
            0,
            FlushSettings {
                policy: FsyncPolicy::Always,
                sync_method: WalSyncMethod::OpenDatasync,
                commit_delay: Arc::new(CommitDelay::default()),
            },
            7,
            8192,
        );
        wal.activate_segment(0, 1).unwrap();
        wal.sync_to(0).unwrap();
        wal
    }

    fn inline_flushes(wal: &Wal) -> u64 {
        wal.shared.counters.inline_flushes.load(Ordering::Relaxed)
    }

    /// `flush_inline_alone` until `lsn` is written. The flusher is not
    /// woken for these bytes, but one finishing a batch the test asked for
    /// before may still hold the flush state (a try then does nothing) and
    /// may find them when it looks at the queue again (it writes them).
    fn flush_alone_until_written(wal: &Wal, lsn: u64) {
        for _ in 0..10_000 {
            wal.flush_inline_alone(lsn);
            if wal.shared.synced_lsn() >= lsn {
                return;
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        panic!("LSN {lsn} never written");
    }

    /// Appends `byte`-filled chunks of `len` at `lsn`, one at a time, each
    /// written by a lone writer or by the flusher, until one was written by
    /// this thread; returns the new end. (Only the first after a batch the
    /// flusher was asked for can be the flusher's.)
    fn append_until_written_inline(wal: &Wal, mut lsn: u64, byte: u8, len: usize) -> u64 {
        let before = inline_flushes(wal);
        for _ in 0..1000 {
            lsn = wal.append_raw(lsn, &vec![byte; len], 1, 1).unwrap();
            flush_alone_until_written(wal, lsn);
            if inline_flushes(wal) > before {
                return lsn;
            }
        }
        panic!("no chunk was written inline");
    }

    #[test]
    fn a_lone_writer_writes_its_batch_itself() {
        let wal = sleeping_wal();
        let end = append_until_written_inline(&wal, 0, 1, 100);
        assert_eq!(inline_flushes(&wal), 1);
        assert_eq!(wal.shared.synced_lsn(), end);
        assert_eq!(wal.shared.ack_lsn(), end);
        assert_eq!(
            wal.shared.read_recent(end - 100, 100).unwrap(),
            vec![1u8; 100]
        );
        // Already durable: nothing more to do.
        wal.flush_inline_alone(end);
        assert_eq!(inline_flushes(&wal), 1);
    }

    #[test]
    fn a_writer_with_company_leaves_its_batch_to_the_flusher() {
        let wal = sleeping_wal();
        // Another writer waits for its acknowledgement.
        let other = wal.waiting_writer();
        let end = wal.append_raw(0, &[2u8; 50], 1, 1).unwrap();
        wal.flush_inline_alone(end);
        assert_eq!(inline_flushes(&wal), 0);
        assert_eq!(wal.shared.synced_lsn(), 0);
        wal.sync_to(end).unwrap();
        drop(other);
        // Two appends in the queue: a group, not a lone writer.
        wal.append_raw(end, &[3u8; 10], 1, 1).unwrap();
        let end = wal.append_raw(end + 10, &[4u8; 10], 1, 1).unwrap();
        wal.flush_inline_alone(end);
        assert_eq!(inline_flushes(&wal), 0);
        wal.sync_to(end).unwrap();
        assert_eq!(wal.shared.synced_lsn(), end);
        // The flusher's last batch held two appends: still not alone.
        let next = wal.append_raw(end, &[5u8; 10], 1, 1).unwrap();
        wal.flush_inline_alone(next);
        assert_eq!(inline_flushes(&wal), 0);
        wal.sync_to(next).unwrap();
        // After a batch of one, a single append is alone again.
        let last = append_until_written_inline(&wal, next, 6, 10);
        assert_eq!(inline_flushes(&wal), 1);
        assert_eq!(wal.shared.synced_lsn(), last);
        // But not with a big record: that one is the flusher's.
        let big = wal
            .append_raw(last, &vec![8u8; LONE_WRITER_MAX_BYTES + 1], 1, 1)
            .unwrap();
        wal.flush_inline_alone(big);
        assert_eq!(inline_flushes(&wal), 1);
        wal.sync_to(big).unwrap();
        assert_eq!(wal.shared.synced_lsn(), big);
    }

    #[test]
    fn a_receiver_writes_while_the_flusher_sleeps() {
        let wal = sleeping_wal();
        let mut end = 0;
        // A chunk that finds the flush state held (the flusher finishing an
        // earlier batch) is left to the flusher, which is woken for it; the
        // next chunk, with the flusher asleep again, is written here.
        for i in 0..1000u64 {
            end = wal.append_raw(i * 300, &[7u8; 300], 3, 1).unwrap();
            wal.flush_inline();
            wal.sync_to(end).unwrap();
            if inline_flushes(&wal) > 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        assert!(inline_flushes(&wal) > 0);
        assert_eq!(wal.shared.synced_lsn(), end);
    }

    fn bytes(from: u64, len: usize) -> Vec<u8> {
        (0..len as u64).map(|i| ((from + i) % 251) as u8).collect()
    }

    #[test]
    fn recent_wal_serves_the_newest_bytes_and_says_where_it_starts() {
        let mut r = RecentWal::new(1000);
        let capacity = r.bytes.capacity();
        assert_eq!(r.read(1000, 1), Err(1000));
        let mut lsn = 1000u64;
        // Enough batches to wrap the ring and drop the oldest bytes.
        let batch = RECENT_WAL_BYTES / 3 + 17;
        for _ in 0..5 {
            r.push(lsn, &bytes(lsn, batch));
            lsn += batch as u64;
        }
        let start = lsn - RECENT_WAL_BYTES as u64;
        assert_eq!(r.start_lsn, start);
        assert_eq!(r.read(start - 1, 10), Err(start), "below the memory");
        assert_eq!(r.read(lsn - 5, 6), Err(start), "past the end");
        for (from, len) in [
            (start, 100),
            (lsn - 100, 100),
            (start + 12345, 3 * batch / 2),
        ] {
            assert_eq!(r.read(from, len), Ok(bytes(from, len)), "[{from}, +{len})");
        }
        assert_eq!(r.read(lsn, 0), Ok(Vec::new()));
        assert_eq!(r.bytes.capacity(), capacity, "the ring never grew");
    }

    #[test]
    fn recent_wal_keeps_a_batch_larger_than_its_cap_and_restarts_on_a_gap() {
        let mut r = RecentWal::new(0);
        let big = RECENT_WAL_BYTES + 4096;
        r.push(0, &bytes(0, 100));
        r.push(100, &bytes(100, big));
        assert_eq!(r.start_lsn, 100, "the newest batch stays whole");
        assert_eq!(r.read(100, big), Ok(bytes(100, big)));
        // A batch that does not follow the last (never expected: the flusher
        // writes in order) replaces everything rather than leave a hole.
        r.push(50, &bytes(50, 10));
        assert_eq!((r.start_lsn, r.bytes.len()), (50, 10));
        assert_eq!(r.read(50, 10), Ok(bytes(50, 10)));
    }
}
