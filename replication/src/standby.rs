//! The standby's side: the WAL receiver.
//!
//! It connects to the primary's client port, authenticates like a client,
//! sends the handshake command `WALSHIP STREAM <listening port>`, and then
//! speaks frames: `Hello` with its cluster id, epoch and WAL end; a base
//! backup if the primary says one is needed; then `WalData` for ever. Bytes
//! are appended only as whole records, each verified at its LSN by the
//! engine, through the same path recovery uses; a record cut by the chunking
//! waits in a bounded buffer for its rest. It reports write/flush/apply
//! LSNs after each flush and at least every 100 ms. On any error it closes,
//! waits, and reconnects; what it already appended stays.

use crate::handle::{EngineHandle, RewindOutcome};
use crate::outbox::{Outbox, OutboxGuard};
use crate::protocol::{Message, BACKUP_CHUNK_CHECKPOINT, BACKUP_CHUNK_EPOCHS, PROTO_VERSION};
use crate::stream::{expect_message, now_ms, read_message, write_message, ReplError};
use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};
use walship_engine::basebackup::{BackupMeta, BackupReceiver};
use walship_engine::wal::record::{RECORD_HEADER_BYTES, RECORD_PAYLOAD_MAX_BYTES};
use walship_engine::{Engine, FsyncPolicy, Lsn};

/// Status report period.
const STATUS_INTERVAL: Duration = Duration::from_millis(100);
/// Most bytes of an incomplete record held while waiting for its rest.
const PENDING_MAX_BYTES: usize = RECORD_HEADER_BYTES + RECORD_PAYLOAD_MAX_BYTES as usize;

/// Where to replicate from.
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    /// `host:port` of the primary's client port.
    pub primary: String,
    /// This standby's name, matched by `synchronous_standby_names`.
    pub name: String,
    /// The primary's `requirepass`, if any.
    pub password: Option<String>,
    /// This standby's own client port, told to the primary.
    pub listening_port: u16,
    /// Where rewinds are counted.
    pub rewinds: Arc<RewindCounters>,
    /// End the link when the primary sends nothing for this many ms
    /// (PostgreSQL's `wal_receiver_timeout`); 0 waits for ever. Read before each
    /// wait for a message, so a change applies from the next one.
    pub primary_timeout_ms: Arc<AtomicU64>,
}

/// What `INFO replication` shows about the link.
#[derive(Debug, Clone, Default)]
pub struct ReceiverStatus {
    /// connecting, backup, catchup, streaming, or stopped.
    pub state: &'static str,
    /// Whether the link is up.
    pub link_up: bool,
    /// The last error, if the link is down because of one.
    pub last_error: Option<String>,
    /// The primary's WAL end, as last told.
    pub primary_end_lsn: Lsn,
    /// The primary's flushed LSN, as last told.
    pub primary_flushed_lsn: Lsn,
    /// When a message last arrived.
    pub last_message: Option<Instant>,
    /// When the link went down.
    pub down_since: Option<Instant>,
    /// Base backups installed since start.
    pub base_backups: u64,
}

/// Rewinds this node did, over every receiver it ran (a node keeps one
/// set of counters across re-pointing and promotion).
#[derive(Debug, Default)]
pub struct RewindCounters {
    /// Rewinds done (the WAL was cut back to a fork point).
    pub rewinds: AtomicU64,
    /// Whole records cut away (kept under `<data-dir>/rewound/`).
    pub records: AtomicU64,
    /// Bytes cut away.
    pub bytes: AtomicU64,
    /// The fork LSN of the last rewind.
    pub last_fork_lsn: AtomicU64,
}

/// The WAL receiver of one standby.
pub struct Receiver {
    handle: EngineHandle,
    config: ReceiverConfig,
    status: Mutex<ReceiverStatus>,
    /// Set when a rewind could not be done locally: ask for a base backup.
    needs_base_backup: AtomicBool,
    /// Engine replacements (base backup install, rewind) running on a
    /// blocking thread. They finish even if the session is dropped, so the
    /// receiver reports `stopped` only once none is left: a promotion must
    /// not begin an epoch on an engine about to be replaced.
    swaps: Arc<AtomicUsize>,
}

/// Counts one engine replacement in flight until dropped.
struct SwapInFlight(Arc<AtomicUsize>);

impl SwapInFlight {
    fn new(swaps: &Arc<AtomicUsize>) -> SwapInFlight {
        swaps.fetch_add(1, Ordering::AcqRel);
        SwapInFlight(swaps.clone())
    }
}

impl Drop for SwapInFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How long a standby waits before it reconnects, after a session that
/// ended with `result`, the previous wait being `prev`: 100 ms after a
/// session that streamed (a link cut once, by CLIENT KILL or a blip, comes
/// back at once), then doubling up to 5 s while attempts keep failing, and
/// 5 s straight after a refusal (the primary said no; asking again at once
/// would only repeat it).
fn reconnect_delay(
    prev: Duration,
    result: &Result<(), ReplError>,
    was_streaming: bool,
) -> Duration {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);
    match result {
        Err(ReplError::Refused(_)) => MAX,
        Ok(()) => FIRST,
        Err(_) if was_streaming => FIRST,
        Err(_) => (prev * 2).min(MAX),
    }
}

impl Receiver {
    /// A receiver feeding the engine behind `handle`.
    pub fn new(handle: EngineHandle, config: ReceiverConfig) -> Arc<Receiver> {
        let status = ReceiverStatus {
            state: "connecting",
            down_since: Some(Instant::now()),
            ..Default::default()
        };
        Arc::new(Receiver {
            handle,
            config,
            status: Mutex::new(status),
            needs_base_backup: AtomicBool::new(false),
            swaps: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ReceiverConfig {
        &self.config
    }

    /// A snapshot of the link's status.
    pub fn status(&self) -> ReceiverStatus {
        self.status.lock().clone()
    }

    fn set_state(&self, state: &'static str) {
        self.status.lock().state = state;
    }

    /// Replicates until `stop` turns true, reconnecting after errors.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            if *stop.borrow() {
                break;
            }
            let session = self.session(stop.clone());
            let result = tokio::select! {
                r = session => r,
                _ = stop.changed() => Ok(()),
            };
            let was_up = {
                let mut s = self.status.lock();
                let was_up = std::mem::replace(&mut s.link_up, false);
                s.down_since.get_or_insert_with(Instant::now);
                s.state = "connecting";
                if let Err(e) = &result {
                    s.last_error = Some(e.to_string());
                }
                was_up
            };
            if let Err(e) = &result {
                tracing::warn!(primary = %self.config.primary, error = %e, "replication stream ended; reconnecting");
            }
            backoff = reconnect_delay(backoff, &result, was_up);
            if *stop.borrow() {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => {}
            }
        }
        while self.swaps.load(Ordering::Acquire) > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        self.set_state("stopped");
    }

    async fn session(&self, stop: watch::Receiver<bool>) -> Result<(), ReplError> {
        let stream = tokio::time::timeout(
            Duration::from_secs(5),
            TcpStream::connect(&self.config.primary),
        )
        .await
        .map_err(|_| ReplError::Timeout("the connection to the primary"))??;
        let _ = stream.set_nodelay(true);
        let mut stream = BufReader::new(stream);
        if let Some(pass) = &self.config.password {
            send_command(&mut stream, &["AUTH", pass]).await?;
            expect_ok(&mut stream, "+OK").await?;
        }
        let port = self.config.listening_port.to_string();
        send_command(&mut stream, &["WALSHIP", "STREAM", &port]).await?;
        expect_ok(&mut stream, "+STREAM").await?;
        let leftover = BytesMut::from(stream.buffer());
        let (mut rd, mut wr) = stream.into_inner().into_split();
        let mut rbuf = leftover;

        let engine = self.handle.get();
        // A blank node, or one that must be re-seeded, asks for a base backup
        // by presenting no identity.
        let blank = engine.end_lsn() == 0 || self.needs_base_backup.load(Ordering::Acquire);
        let history = if blank {
            Vec::new()
        } else {
            engine
                .epoch_history()
                .entries()
                .iter()
                .map(|e| (e.epoch, e.start_lsn))
                .collect()
        };
        write_message(
            &mut wr,
            &Message::Hello {
                proto_version: PROTO_VERSION,
                cluster_id: if blank { 0 } else { engine.cluster_id() },
                epoch: engine.epoch(),
                flushed_lsn: if blank { 0 } else { engine.end_lsn() },
                name: self.config.name.clone(),
                history,
            },
        )
        .await?;
        let welcome = expect_message(
            &mut rd,
            &mut rbuf,
            Duration::from_secs(30),
            "the primary's Welcome",
        )
        .await?;
        let base_backup = match welcome {
            Message::Welcome {
                base_backup, epoch, ..
            } => {
                // Fencing: never confirm anything to a primary of an older epoch.
                if epoch < engine.epoch() && !base_backup {
                    let reason = format!(
                        "the primary is on epoch {epoch}, older than this node's epoch {}: not following a deposed primary",
                        engine.epoch()
                    );
                    let _ = write_message(
                        &mut wr,
                        &Message::Error {
                            reason: reason.clone(),
                        },
                    )
                    .await;
                    return Err(ReplError::Refused(reason));
                }
                base_backup
            }
            Message::Rewind { epoch, fork_lsn } => return self.rewind(epoch, fork_lsn).await,
            Message::Refuse { reason } => return Err(ReplError::Refused(reason)),
            Message::Error { reason } => return Err(ReplError::Peer(reason)),
            other => {
                return Err(ReplError::Protocol(format!(
                    "expected Welcome, got {}",
                    other.name()
                )))
            }
        };
        {
            let mut s = self.status.lock();
            s.link_up = true;
            s.down_since = None;
            s.last_error = None;
            s.last_message = Some(Instant::now());
        }
        if base_backup {
            self.set_state("backup");
            self.receive_base_backup(&mut rd, &mut rbuf, &mut wr)
                .await?;
        }
        self.set_state("catchup");
        tracing::info!(primary = %self.config.primary, from_lsn = self.handle.get().end_lsn(), "streaming WAL from the primary");

        // Status reports go out through one outbox: from the WAL flusher
        // right after each write or flush (no hop to a task on the path a
        // synchronous write waits for), and from the reporter task every
        // 100 ms, when the primary asks, and when the flusher could not.
        let engine = self.handle.get();
        let outbox = Arc::new(Outbox::new(wr, None));
        let _listener = ProgressReports::install(&engine, &outbox);
        let reply_now = Arc::new(Notify::new());
        let reporter = tokio::spawn(report_status(
            engine,
            outbox.clone(),
            reply_now.clone(),
            stop,
        ));
        let result = self.receive_wal(&mut rd, &mut rbuf, &reply_now).await;
        reporter.abort();
        result
    }

    /// The primary says this node's WAL went past the fork point: cut it
    /// back (or, when that cannot be done here, ask for a base backup next).
    async fn rewind(&self, epoch: u64, fork_lsn: Lsn) -> Result<(), ReplError> {
        let engine = self.handle.get();
        if epoch < engine.epoch() {
            return Err(ReplError::Refused(format!(
                "a primary on epoch {epoch}, older than this node's epoch {}, asked for a rewind: refused",
                engine.epoch()
            )));
        }
        let end = engine.end_lsn();
        tracing::warn!(primary = %self.config.primary, fork_lsn, wal_end = end, "this node's WAL went past the fork point with the primary's history: rewinding");
        self.set_state("rewind");
        let handle = self.handle.clone();
        let swap = SwapInFlight::new(&self.swaps);
        let outcome = tokio::task::spawn_blocking(move || {
            let _swap = swap;
            handle.rewind(fork_lsn)
        })
        .await
        .map_err(|e| ReplError::Storage(e.to_string()))?
        .map_err(storage)?;
        let saved = match outcome {
            RewindOutcome::NotNeeded => {
                return Err(ReplError::Protocol(format!(
                    "the primary asked for a rewind to LSN {fork_lsn}, but this node's WAL ends at {end}"
                )))
            }
            RewindOutcome::Rewound(saved) => saved,
            RewindOutcome::NeedsBaseBackup { saved, reason } => {
                tracing::warn!(%reason, "cannot rewind in place: asking the primary for a base backup");
                self.needs_base_backup.store(true, Ordering::Release);
                saved
            }
        };
        tracing::warn!(
            fork_lsn,
            records = saved.records,
            bytes = saved.bytes,
            file = %saved.file.display(),
            "rewound: the records past the fork were cut from the WAL and kept in the file named"
        );
        let c = &self.config.rewinds;
        c.rewinds.fetch_add(1, Ordering::Relaxed);
        c.records.fetch_add(saved.records, Ordering::Relaxed);
        c.bytes.fetch_add(saved.bytes, Ordering::Relaxed);
        c.last_fork_lsn.store(fork_lsn, Ordering::Relaxed);
        Ok(())
    }

    async fn receive_base_backup(
        &self,
        rd: &mut tokio::net::tcp::OwnedReadHalf,
        rbuf: &mut BytesMut,
        wr: &mut tokio::net::tcp::OwnedWriteHalf,
    ) -> Result<(), ReplError> {
        let t = Duration::from_secs(120);
        let begin = expect_message(rd, rbuf, t, "BackupBegin").await?;
        let Message::BackupBegin {
            cluster_id,
            redo_lsn,
            end_lsn,
            checkpoint_bytes,
            ..
        } = begin
        else {
            return Err(ReplError::Protocol(format!(
                "expected BackupBegin, got {}",
                begin.name()
            )));
        };
        tracing::info!(redo_lsn, bytes = checkpoint_bytes, "receiving base backup");
        let meta = BackupMeta {
            cluster_id,
            redo_lsn,
            end_lsn,
            checkpoint_bytes,
        };
        let cfg = self.handle.config();
        let mut receiver =
            BackupReceiver::begin(cfg.storage.clone(), &cfg.data_dir, meta).map_err(storage)?;
        let mut crc = crc32fast::Hasher::new();
        loop {
            match expect_message(rd, rbuf, t, "base backup data").await? {
                Message::BackupChunk {
                    kind: BACKUP_CHUNK_CHECKPOINT,
                    offset,
                    data,
                } => {
                    crc.update(&data);
                    receiver.write_checkpoint(offset, &data).map_err(storage)?;
                }
                Message::BackupChunk {
                    kind: BACKUP_CHUNK_EPOCHS,
                    data,
                    ..
                } => receiver.set_epochs(&data).map_err(storage)?,
                Message::BackupEnd { checkpoint_crc, .. } => {
                    if crc.finalize() != checkpoint_crc {
                        return Err(ReplError::Protocol(
                            "base backup checkpoint CRC mismatch".into(),
                        ));
                    }
                    break;
                }
                Message::Error { reason } => return Err(ReplError::Peer(reason)),
                other => {
                    return Err(ReplError::Protocol(format!(
                        "unexpected {} during base backup",
                        other.name()
                    )))
                }
            }
        }
        // Installing (fsync, verify, load) takes a while for a large
        // checkpoint, and the primary drops a standby silent for its
        // wal_sender_timeout: say that this one is alive as often as it
        // reports when streaming (STATUS_INTERVAL). The positions are this
        // node's from before the backup, so they confirm nothing the backup
        // brought.
        let (before, epoch) = {
            let engine = self.handle.get();
            (positions(&engine), engine.epoch())
        };
        let handle = self.handle.clone();
        let swap = SwapInFlight::new(&self.swaps);
        let install = tokio::task::spawn_blocking(move || -> Result<(), ReplError> {
            let _swap = swap;
            receiver.finish().map_err(storage)?;
            handle.reopen().map_err(storage)?;
            Ok(())
        });
        tokio::pin!(install);
        let mut beat = tokio::time::interval(STATUS_INTERVAL);
        loop {
            tokio::select! {
                done = &mut install => {
                    done.map_err(|e| ReplError::Storage(e.to_string()))??;
                    break;
                }
                _ = beat.tick() => write_message(wr, &status(epoch, before)).await?,
            }
        }
        self.status.lock().base_backups += 1;
        self.needs_base_backup.store(false, Ordering::Release);
        tracing::info!(redo_lsn, "base backup installed");
        Ok(())
    }

    async fn receive_wal(
        &self,
        rd: &mut tokio::net::tcp::OwnedReadHalf,
        rbuf: &mut BytesMut,
        reply_now: &Notify,
    ) -> Result<(), ReplError> {
        let mut pending = BytesMut::new();
        loop {
            let timeout = match self.config.primary_timeout_ms.load(Ordering::Relaxed) {
                0 => None,
                ms => Some(Duration::from_millis(ms)),
            };
            // A primary sends a keepalive every second: silence means the
            // link is dead even if TCP has not noticed (a partition, a
            // frozen host), and the standby must say so and reconnect.
            let read = read_message(rd, rbuf);
            let msg = match timeout {
                None => read.await?,
                Some(t) => tokio::time::timeout(t, read)
                    .await
                    .map_err(|_| ReplError::Timeout("any message from the primary"))??,
            };
            let Some(msg) = msg else {
                return Err(ReplError::Closed);
            };
            self.status.lock().last_message = Some(Instant::now());
            match msg {
                Message::WalData {
                    epoch,
                    start_lsn,
                    primary_flushed_lsn,
                    data,
                } => {
                    let engine = self.handle.get();
                    if epoch < engine.epoch() {
                        return Err(ReplError::Refused(format!(
                            "primary sends epoch {epoch} WAL but this node is on epoch {}: not accepting WAL from an older epoch",
                            engine.epoch()
                        )));
                    }
                    let expected = engine.end_lsn() + pending.len() as u64;
                    if start_lsn != expected {
                        return Err(ReplError::Protocol(format!(
                            "WAL chunk starts at LSN {start_lsn}, expected {expected}"
                        )));
                    }
                    if pending.len() + data.len() > PENDING_MAX_BYTES {
                        return Err(ReplError::Protocol(
                            "incomplete record larger than any record can be".into(),
                        ));
                    }
                    pending.extend_from_slice(&data);
                    let whole = whole_records_len(&pending);
                    if whole > 0 {
                        let chunk: Bytes = pending.split_to(whole).freeze();
                        engine
                            .append_replicated(engine.end_lsn(), &chunk)
                            .map_err(storage)?;
                    }
                    let mut s = self.status.lock();
                    s.primary_flushed_lsn = s.primary_flushed_lsn.max(primary_flushed_lsn);
                    s.primary_end_lsn = s.primary_end_lsn.max(start_lsn + data.len() as u64);
                    if engine.end_lsn() >= s.primary_end_lsn {
                        s.state = "streaming";
                    }
                }
                Message::Keepalive {
                    epoch,
                    end_lsn,
                    flushed_lsn,
                    reply_requested,
                    ..
                } => {
                    let engine = self.handle.get();
                    if epoch < engine.epoch() {
                        return Err(ReplError::Refused(format!(
                            "primary is on epoch {epoch}, older than this node's epoch {}",
                            engine.epoch()
                        )));
                    }
                    {
                        let mut s = self.status.lock();
                        s.primary_end_lsn = end_lsn;
                        s.primary_flushed_lsn = flushed_lsn;
                        s.state = if engine.end_lsn() >= end_lsn {
                            "streaming"
                        } else {
                            "catchup"
                        };
                    }
                    if reply_requested {
                        reply_now.notify_one();
                    }
                }
                Message::Error { reason } => return Err(ReplError::Peer(reason)),
                other => {
                    return Err(ReplError::Protocol(format!(
                        "unexpected {} while streaming",
                        other.name()
                    )))
                }
            }
        }
    }
}

fn storage(e: impl std::fmt::Display) -> ReplError {
    ReplError::Storage(e.to_string())
}

/// Length of the prefix of `buf` made of whole records, walking the length
/// fields only; the engine verifies every CRC when it appends them.
fn whole_records_len(buf: &[u8]) -> usize {
    let mut off = 0usize;
    while buf.len() - off >= RECORD_HEADER_BYTES {
        let len = u32::from_le_bytes(buf[off..off + 4].try_into().expect("4 bytes"));
        if len > RECORD_PAYLOAD_MAX_BYTES {
            // Corrupt: hand it to the engine, which refuses it with a clear error.
            return buf.len();
        }
        let total = RECORD_HEADER_BYTES + len as usize;
        if buf.len() - off < total {
            break;
        }
        off += total;
    }
    off
}

/// The write, flush and apply LSNs last reported.
type Reported = Option<(Lsn, Lsn, Lsn)>;

/// Sends a status report, unless it would repeat the last one and `force`
/// is false.
fn report(engine: &Engine, out: &mut OutboxGuard<'_, Reported>, force: bool) {
    let now = positions(engine);
    if !force && *out.state() == Some(now) {
        return;
    }
    *out.state() = Some(now);
    // IMPORTANT: the epoch is read after the LSNs. An EpochChange is
    // applied before it is flushed, so positions that include a new
    // epoch's bytes always go out with that epoch, and an older primary
    // that sees it fences itself instead of counting them.
    out.push(&status(engine.epoch(), now));
}

/// The write, flush and apply LSNs a standby reports (apply never past
/// flush, so `remote_apply` implies `on`).
fn positions(engine: &Engine) -> (Lsn, Lsn, Lsn) {
    let flush = reported_flush_lsn(engine);
    (engine.written_lsn(), flush, engine.end_lsn().min(flush))
}

/// A Status frame with these positions, stamped now.
fn status(epoch: u64, (write_lsn, flush_lsn, apply_lsn): (Lsn, Lsn, Lsn)) -> Message {
    Message::Status {
        epoch,
        write_lsn,
        flush_lsn,
        apply_lsn,
        timestamp_ms: now_ms(),
    }
}

/// The flush LSN a standby reports. Under `--fsync never` the standby
/// never fsyncs its WAL on its own, so, as PostgreSQL does with
/// `fsync = off`, what it handed to the OS counts as flushed: otherwise a
/// primary's `synchronous_commit = on` write would wait for it for ever.
/// Under `interval:<ms>` the flush LSN is the last periodic fsync's, and such
/// a write waits up to one interval.
fn reported_flush_lsn(engine: &Engine) -> Lsn {
    match engine.fsync_policy() {
        FsyncPolicy::Never => engine.written_lsn(),
        _ => engine.flushed_lsn(),
    }
}

/// The engine's progress listener for one streaming session: the WAL
/// flusher reports each write and flush itself. Removed when dropped.
struct ProgressReports(Engine);

impl ProgressReports {
    fn install(engine: &Engine, outbox: &Arc<Outbox<Reported>>) -> ProgressReports {
        // Weak both ways: the engine holds the listener.
        let (outbox, weak) = (Arc::downgrade(outbox), engine.downgrade());
        engine.set_progress_listener(Some(Arc::new(move || {
            let (Some(outbox), Some(engine)) = (outbox.upgrade(), weak.upgrade()) else {
                return;
            };
            if let Some(mut out) = outbox.try_lock() {
                report(&engine, &mut out, false);
            } else {
                // The reporter task is sending: it reports again when woken.
                outbox.wake.notify_one();
            };
        })));
        ProgressReports(engine.clone())
    }
}

impl Drop for ProgressReports {
    fn drop(&mut self) {
        self.0.set_progress_listener(None);
    }
}

/// Sends write/flush/apply LSNs every 100 ms and when asked; writes what
/// the flusher's reports left pending.
async fn report_status(
    engine: Engine,
    outbox: Arc<Outbox<Reported>>,
    reply_now: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(STATUS_INTERVAL);
    loop {
        let mut force = false;
        tokio::select! {
            _ = outbox.wake.notified() => {}
            _ = tick.tick() => force = true,
            _ = reply_now.notified() => force = true,
            _ = stop.changed() => return,
        }
        report(&engine, &mut outbox.lock(), force);
        if outbox.drain().await.is_err() {
            return;
        }
    }
}

async fn send_command(stream: &mut BufReader<TcpStream>, args: &[&str]) -> Result<(), ReplError> {
    let mut out = format!("*{}\r\n", args.len());
    for a in args {
        out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    stream.get_mut().write_all(out.as_bytes()).await?;
    Ok(())
}

async fn expect_ok(stream: &mut BufReader<TcpStream>, want: &str) -> Result<(), ReplError> {
    let mut line = String::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_line(&mut line))
        .await
        .map_err(|_| ReplError::Timeout("the primary's reply to the handshake"))??;
    if read == 0 {
        return Err(ReplError::Closed);
    }
    let line = line.trim_end();
    if line == want {
        Ok(())
    } else {
        Err(ReplError::Refused(
            line.trim_start_matches(['-', '+']).to_string(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A link that streamed and was cut comes back at once however many
    /// times that happened; only attempts that keep failing back off.
    #[test]
    fn the_reconnect_delay_resets_after_a_session_that_streamed() {
        let ms = Duration::from_millis;
        let cut = || Err(ReplError::Closed);
        let mut delay = ms(100);
        // A primary that is down: 200, 400, ... up to 5 s.
        for want in [200, 400, 800, 1600, 3200, 5000, 5000] {
            delay = reconnect_delay(delay, &cut(), false);
            assert_eq!(delay, ms(want));
        }
        // Each cut of a working stream: back to 100 ms, every time.
        for _ in 0..10 {
            delay = reconnect_delay(delay, &cut(), true);
            assert_eq!(delay, ms(100));
        }
        assert_eq!(
            reconnect_delay(ms(100), &Err(ReplError::Refused("no".into())), true),
            Duration::from_secs(5)
        );
        assert_eq!(
            reconnect_delay(Duration::from_secs(5), &Ok(()), false),
            ms(100)
        );
    }

    #[test]
    fn whole_records_are_found_by_their_lengths() {
        let mut buf = Vec::new();
        for (i, v) in ["a", "bb", "ccc"].iter().enumerate() {
            walship_engine::Mutation::Put {
                key: Bytes::from(format!("k{i}")),
                value: Bytes::from(*v),
            }
            .encode(buf.len() as u64, &mut buf);
        }
        assert_eq!(whole_records_len(&buf), buf.len());
        assert!(whole_records_len(&buf[..buf.len() - 1]) < buf.len() - 1);
        assert_eq!(whole_records_len(&buf[..5]), 0);
    }
}
