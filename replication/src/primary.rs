//! The primary's side: the WAL sender for each standby, and the hub that
//! knows every standby's progress and decides when a write is confirmed.
//!
//! The deciding part is plain code ([`crate::sync_rule`]): the hub only
//! collects [`StandbyProgress`] and publishes the confirmed LSN for each
//! `synchronous_commit` level whenever a standby reports. Writers wait on
//! that with [`Hub::wait_confirmed`].

use crate::fork::{divergence, Divergence};
use crate::handle::EngineHandle;
use crate::outbox::Outbox;
use crate::protocol::{Message, BACKUP_CHUNK_CHECKPOINT, BACKUP_CHUNK_EPOCHS, PROTO_VERSION};
use crate::slots::Slots;
use crate::stream::{expect_message, now_ms, read_message, write_message, ReplError};
use crate::sync_rule::{StandbyProgress, SyncStandbyNames, SyncState, SynchronousCommit};
use bytes::{Bytes, BytesMut};
use parking_lot::{Mutex, RwLock};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch, Notify};
use walship_engine::wal::record::{DamagedRecord, StreamVerifier};
use walship_engine::{Engine, Lsn};

/// Most WAL bytes in one WalData frame.
const CHUNK_MAX_BYTES: usize = 1 << 20;
/// Most WAL bytes sent but not yet written by a standby.
const IN_FLIGHT_MAX_BYTES: u64 = 64 << 20;
/// Keepalive period when idle.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
/// Default [`Hub::sender_timeout_ms`]: a standby reports at least every
/// 100 ms and answers every keepalive.
pub const DEFAULT_SENDER_TIMEOUT_MS: u64 = 30_000;
/// What a stream waits for from a standby, at most the sender timeout.
const REPORT: &str = "a status report from the standby";
/// Samples kept for lag measurement.
const LAG_SAMPLES_MAX: usize = 4096;

/// Where a standby is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StandbyState {
    /// Receiving a base backup.
    Backup,
    /// Streaming WAL but not yet caught up.
    Catchup,
    /// Caught up; counts for synchronous commit.
    Streaming,
}

impl StandbyState {
    /// PostgreSQL's name for the state.
    pub fn as_str(self) -> &'static str {
        match self {
            StandbyState::Backup => "backup",
            StandbyState::Catchup => "catchup",
            StandbyState::Streaming => "streaming",
        }
    }
}

#[derive(Debug)]
struct Progress {
    state: StandbyState,
    sent: Lsn,
    write: Lsn,
    flush: Lsn,
    apply: Lsn,
    write_lag: Option<Duration>,
    flush_lag: Option<Duration>,
    replay_lag: Option<Duration>,
    last_reply: Instant,
    /// (LSN sent up to, when) for lag measurement, oldest first.
    samples: VecDeque<(Lsn, Instant)>,
}

/// One connected standby.
pub struct StandbyConn {
    id: u64,
    name: String,
    addr: SocketAddr,
    listening_port: Option<u16>,
    connected_at: SystemTime,
    progress: Mutex<Progress>,
    /// Woken when the standby reports, so the sender can refill its window.
    reported: Notify,
    /// Everything sent to the standby after the Welcome goes through here.
    outbox: Outbox<SendCursor>,
}

/// The WAL sender's position, under the outbox lock: whoever sends WAL to
/// the standby (its task, or the WAL flusher through [`Hub::send_direct`])
/// reads and advances it together with the send.
struct SendCursor {
    /// WAL up to here is queued on the connection.
    sent: Lsn,
    /// The standby is streaming and caught up, and the task is not sending:
    /// the flusher sends each new batch itself.
    direct: bool,
}

/// One row of the replication view (PostgreSQL's `pg_stat_replication`).
#[derive(Debug, Clone)]
pub struct StandbyView {
    /// Connection id.
    pub id: u64,
    /// The standby's name (`application_name`).
    pub name: String,
    /// Its address.
    pub addr: SocketAddr,
    /// Its client port, if it told us.
    pub listening_port: Option<u16>,
    /// backup, catchup or streaming.
    pub state: &'static str,
    /// Sent up to.
    pub sent_lsn: Lsn,
    /// Written (not fsynced) on the standby.
    pub write_lsn: Lsn,
    /// Fsynced on the standby.
    pub flush_lsn: Lsn,
    /// Applied (readable) on the standby.
    pub replay_lsn: Lsn,
    /// Time from sending to the standby's write/flush/apply, last measured.
    pub write_lag_ms: Option<f64>,
    /// See `write_lag_ms`.
    pub flush_lag_ms: Option<f64>,
    /// See `write_lag_ms`.
    pub replay_lag_ms: Option<f64>,
    /// Bytes the standby's flush is behind the primary's WAL end.
    pub lag_bytes: u64,
    /// async, potential, sync or quorum.
    pub sync_state: &'static str,
    /// Seconds since its last status report.
    pub last_reply_secs: u64,
    /// When it connected.
    pub connected_at: SystemTime,
}

/// Confirmed LSN per level, republished on every standby report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Confirmed {
    /// remote_write.
    pub write: Lsn,
    /// on (remote flush).
    pub flush: Lsn,
    /// remote_apply.
    pub apply: Lsn,
    /// Bumped on every report, so WAIT re-counts.
    pub version: u64,
}

impl Confirmed {
    fn at(&self, level: SynchronousCommit) -> Lsn {
        match level {
            SynchronousCommit::RemoteWrite => self.write,
            SynchronousCommit::On => self.flush,
            SynchronousCommit::RemoteApply => self.apply,
            SynchronousCommit::Off | SynchronousCommit::Local => Lsn::MAX,
        }
    }
}

/// Writes waiting for the standbys, per level, ordered by LSN, so a report
/// wakes exactly the writes it confirms (not every waiting connection).
#[derive(Default)]
struct Waiters {
    /// The confirmed LSNs, as last computed (under this lock, so a write
    /// registering itself cannot miss the report that confirms it).
    confirmed: Confirmed,
    /// remote_write, on, remote_apply: (LSN, id) → the waiting write.
    levels: [BTreeMap<(Lsn, u64), oneshot::Sender<()>>; 3],
    next_id: u64,
}

impl Waiters {
    fn level_index(level: SynchronousCommit) -> Option<usize> {
        match level {
            SynchronousCommit::RemoteWrite => Some(0),
            SynchronousCommit::On => Some(1),
            SynchronousCommit::RemoteApply => Some(2),
            SynchronousCommit::Off | SynchronousCommit::Local => None,
        }
    }

    /// Publishes new confirmed LSNs and wakes the writes they cover.
    fn confirm(&mut self, confirmed: Confirmed) {
        self.confirmed = confirmed;
        for (i, level) in [
            SynchronousCommit::RemoteWrite,
            SynchronousCommit::On,
            SynchronousCommit::RemoteApply,
        ]
        .into_iter()
        .enumerate()
        {
            let upto = confirmed.at(level);
            let map = &mut self.levels[i];
            let still_waiting = if upto == Lsn::MAX {
                BTreeMap::new()
            } else {
                map.split_off(&(upto + 1, 0))
            };
            for (_, tx) in std::mem::replace(map, still_waiting) {
                let _ = tx.send(());
            }
        }
    }

    /// Drops every waiting write: their receivers see the node stop.
    fn fail_all(&mut self) {
        for map in &mut self.levels {
            map.clear();
        }
    }
}

/// Removes a waiting write from [`Waiters`] when its wait ends.
struct WaiterEntry<'a> {
    hub: &'a Hub,
    index: usize,
    key: (Lsn, u64),
}

impl Drop for WaiterEntry<'_> {
    fn drop(&mut self) {
        self.hub.waiters.lock().levels[self.index].remove(&self.key);
    }
}

/// Why a synchronous write was not confirmed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncWaitError {
    /// Not confirmed in time; durable locally only.
    #[error("write is durable locally (LSN {lsn}) but was not confirmed by the synchronous standbys required ({rule}) within {timeout_ms} ms")]
    Timeout {
        /// The write's LSN.
        lsn: Lsn,
        /// synchronous_standby_names.
        rule: String,
        /// The timeout.
        timeout_ms: u64,
    },
    /// This node stopped being a primary while waiting.
    #[error("write is durable locally (LSN {lsn}) but this node stopped being the primary before the standbys confirmed it")]
    Demoted {
        /// The write's LSN.
        lsn: Lsn,
    },
    /// The server shut down while waiting (PostgreSQL's "canceling the wait
    /// for synchronous replication ... due to administrator command").
    #[error("write is durable locally (LSN {lsn}) but the server is shutting down and the synchronous standbys have not confirmed it; it may not have been replicated")]
    ShuttingDown {
        /// The write's LSN.
        lsn: Lsn,
    },
}

/// What [`Hub::admit`] decided.
enum Admission {
    /// Stream WAL from the standby's end.
    Stream,
    /// Send a base backup first.
    BaseBackup,
    /// The standby must cut its WAL back to this LSN and come back.
    Rewind(Lsn),
    /// Not accepted, and why.
    Refuse(String),
}

/// A standby name taken by one connection; released when dropped.
struct NameClaim {
    hub: Arc<Hub>,
    name: String,
}

impl NameClaim {
    /// `None` when another connection holds `name`.
    fn take(hub: &Arc<Hub>, name: &str) -> Option<NameClaim> {
        hub.names_in_use
            .lock()
            .insert(name.to_string())
            .then(|| NameClaim {
                hub: hub.clone(),
                name: name.to_string(),
            })
    }
}

impl Drop for NameClaim {
    fn drop(&mut self) {
        self.hub.names_in_use.lock().remove(&self.name);
    }
}

/// The primary's replication state.
pub struct Hub {
    handle: EngineHandle,
    slots: Arc<Slots>,
    standbys: Mutex<Vec<Arc<StandbyConn>>>,
    /// Names of the standbys connected or being admitted: one connection
    /// per name, as PostgreSQL allows one walsender per replication slot.
    names_in_use: Mutex<std::collections::HashSet<String>>,
    sync_names: RwLock<SyncStandbyNames>,
    confirmed_tx: watch::Sender<Confirmed>,
    /// Writes waiting for confirmation, woken only once their LSN is confirmed.
    waiters: Mutex<Waiters>,
    next_id: AtomicU64,
    stop_tx: watch::Sender<bool>,
    /// Non-zero once a standby showed a newer epoch: this node was deposed.
    fenced_by: AtomicU64,
    /// Set by [`Hub::shut_down`]: why waiting writes were failed.
    shutting_down: AtomicBool,
    /// One past the LSN of the newest damaged WAL record a sender found
    /// (0: none). A standby that still needs WAL from there gets a base
    /// backup whose checkpoint lies past it.
    wal_damaged_at: AtomicU64,
    /// Standbys whose resume LSN is not where a valid record begins: each
    /// gets a base backup when it next connects (the fault may be theirs,
    /// so it says nothing about the WAL other standbys need).
    reseed: Mutex<std::collections::HashSet<String>>,
    /// A standby silent this long is dropped (PostgreSQL's
    /// `wal_sender_timeout`); 0 = never.
    sender_timeout_ms: AtomicU64,
}

impl Hub {
    /// A hub for the engine behind `handle`, keeping slots in `slots`.
    pub fn new(handle: EngineHandle, slots: Arc<Slots>, sync_names: SyncStandbyNames) -> Arc<Hub> {
        let (confirmed_tx, _) = watch::channel(Confirmed::default());
        let (stop_tx, _) = watch::channel(false);
        Arc::new(Hub {
            handle,
            slots,
            standbys: Mutex::new(Vec::new()),
            names_in_use: Mutex::default(),
            sync_names: RwLock::new(sync_names),
            confirmed_tx,
            waiters: Mutex::new(Waiters::default()),
            next_id: AtomicU64::new(1),
            stop_tx,
            fenced_by: AtomicU64::new(0),
            shutting_down: AtomicBool::new(false),
            wal_damaged_at: AtomicU64::new(0),
            reseed: Mutex::default(),
            sender_timeout_ms: AtomicU64::new(DEFAULT_SENDER_TIMEOUT_MS),
        })
    }

    /// How long a standby may be silent before its stream is dropped, in
    /// ms; 0 = for ever.
    pub fn sender_timeout_ms(&self) -> u64 {
        self.sender_timeout_ms.load(Ordering::Relaxed)
    }

    /// Sets [`Hub::sender_timeout_ms`]; streams apply it at their next check.
    pub fn set_sender_timeout_ms(&self, ms: u64) {
        self.sender_timeout_ms.store(ms, Ordering::Relaxed);
    }

    /// The replication slots.
    pub fn slots(&self) -> &Arc<Slots> {
        &self.slots
    }

    /// The synchronous standby rule in force.
    pub fn sync_names(&self) -> SyncStandbyNames {
        self.sync_names.read().clone()
    }

    /// Changes `synchronous_standby_names`; waiting writes re-evaluate at once.
    pub fn set_sync_names(&self, names: SyncStandbyNames) {
        *self.sync_names.write() = names;
        self.recompute();
    }

    /// Disconnects every standby (this node stops being a primary).
    pub fn stop(&self) {
        self.stop_tx.send_replace(true);
        self.waiters.lock().fail_all();
        self.confirmed_tx.send_modify(|c| c.version += 1);
    }

    /// Drops standby `name`'s replication slot (PostgreSQL's
    /// `pg_drop_replication_slot`), so it no longer holds WAL back: for a
    /// standby that is gone for good. Refused while that standby is
    /// connected, as PostgreSQL refuses to drop an active slot.
    pub fn drop_slot(&self, name: &str) -> Result<(), String> {
        let names = self.names_in_use.lock();
        if names.contains(name) {
            return Err(format!(
                "replication slot \"{name}\" is active: its standby is connected"
            ));
        }
        match self.slots.drop_slot(name) {
            Ok(true) => {
                tracing::info!(slot = name, "replication slot dropped");
                Ok(())
            }
            Ok(false) => Err(format!("replication slot \"{name}\" does not exist")),
            Err(e) => Err(format!("cannot remove replication slot \"{name}\": {e}")),
        }
    }

    /// Drops every slot, when this node becomes a standby: it serves no
    /// standbys of its own (no cascading replication), so its slots would
    /// only hold WAL back for ever. Standbys that follow it after a later
    /// promotion get new slots when they connect.
    pub fn drop_all_slots(&self) {
        for slot in self.slots.list() {
            match self.slots.drop_slot(&slot.name) {
                Ok(_) => tracing::info!(
                    slot = %slot.name,
                    restart_lsn = slot.restart_lsn,
                    "replication slot dropped: this node is now a standby"
                ),
                Err(e) => {
                    tracing::warn!(slot = %slot.name, error = %e, "cannot remove the replication slot")
                }
            }
        }
    }

    /// At shutdown, once the clients had their time to drain: stops as
    /// [`Hub::stop`] does, failing the writes still waiting for standbys
    /// with [`SyncWaitError::ShuttingDown`].
    pub fn shut_down(&self) {
        self.shutting_down.store(true, Ordering::Release);
        self.stop();
    }

    fn stopped_error(&self, lsn: Lsn) -> SyncWaitError {
        if self.shutting_down.load(Ordering::Acquire) {
            SyncWaitError::ShuttingDown { lsn }
        } else {
            SyncWaitError::Demoted { lsn }
        }
    }

    /// Accepts standbys again after [`Hub::stop`] (a promotion).
    pub fn resume(&self) {
        self.stop_tx.send_replace(false);
    }

    fn is_stopped(&self) -> bool {
        *self.stop_tx.borrow()
    }

    fn progress_list(&self) -> (Vec<Arc<StandbyConn>>, Vec<StandbyProgress>) {
        let conns = self.standbys.lock().clone();
        let progress = conns
            .iter()
            .map(|c| {
                let p = c.progress.lock();
                StandbyProgress {
                    name: c.name.clone(),
                    streaming: p.state == StandbyState::Streaming,
                    write_lsn: p.write,
                    flush_lsn: p.flush,
                    apply_lsn: p.apply,
                }
            })
            .collect();
        (conns, progress)
    }

    /// Recomputes and publishes the confirmed LSNs.
    fn recompute(&self) {
        let (_, progress) = self.progress_list();
        let rule = self.sync_names.read();
        let at = |level| rule.confirmed_lsn(level, &progress).unwrap_or(0);
        let (write, flush, apply) = (
            at(SynchronousCommit::RemoteWrite),
            at(SynchronousCommit::On),
            at(SynchronousCommit::RemoteApply),
        );
        drop(rule);
        let mut confirmed = Confirmed::default();
        self.confirmed_tx.send_modify(|c| {
            c.write = write;
            c.flush = flush;
            c.apply = apply;
            c.version += 1;
            confirmed = *c;
        });
        self.waiters.lock().confirm(confirmed);
    }

    /// Completes when the standbys required by `synchronous_standby_names`
    /// confirm `lsn` at `level`. `timeout_ms` 0 waits for ever, as PostgreSQL does.
    pub async fn wait_confirmed(
        &self,
        lsn: Lsn,
        level: SynchronousCommit,
        timeout_ms: u64,
    ) -> Result<(), SyncWaitError> {
        if !level.waits_for_standbys() || self.sync_names.read().is_empty() {
            return Ok(());
        }
        let Some(index) = Waiters::level_index(level) else {
            return Ok(());
        };
        let (rx, key) = {
            let mut w = self.waiters.lock();
            if w.confirmed.at(level) >= lsn {
                return Ok(());
            }
            if self.is_stopped() {
                return Err(self.stopped_error(lsn));
            }
            let (tx, rx) = oneshot::channel();
            w.next_id += 1;
            let key = (lsn, w.next_id);
            w.levels[index].insert(key, tx);
            (rx, key)
        };
        // Removes this write's entry if the wait is abandoned (timeout, or
        // the client went away).
        let _entry = WaiterEntry {
            hub: self,
            index,
            key,
        };
        let wait = async {
            match rx.await {
                Ok(()) => Ok(()),
                Err(_) => Err(self.stopped_error(lsn)),
            }
        };
        if timeout_ms == 0 {
            return wait.await;
        }
        match tokio::time::timeout(Duration::from_millis(timeout_ms), wait).await {
            Ok(r) => r,
            Err(_) => Err(SyncWaitError::Timeout {
                lsn,
                rule: self.sync_names.read().to_string(),
                timeout_ms,
            }),
        }
    }

    /// How many standbys have fsynced `lsn` (Redis's WAIT counts these).
    pub fn count_flushed(&self, lsn: Lsn) -> usize {
        self.standbys
            .lock()
            .iter()
            .filter(|c| c.progress.lock().flush >= lsn)
            .count()
    }

    /// Waits until `n` standbys have fsynced `lsn` or `timeout_ms` passes
    /// (0 = for ever); returns how many have.
    pub async fn wait_flushed_count(&self, lsn: Lsn, n: usize, timeout_ms: u64) -> usize {
        let mut rx = self.confirmed_tx.subscribe();
        let wait = async {
            loop {
                rx.borrow_and_update();
                let count = self.count_flushed(lsn);
                if count >= n || rx.changed().await.is_err() {
                    return count;
                }
            }
        };
        if timeout_ms == 0 {
            return wait.await;
        }
        tokio::time::timeout(Duration::from_millis(timeout_ms), wait)
            .await
            .unwrap_or_else(|_| self.count_flushed(lsn))
    }

    /// The replication view, one row per connected standby.
    pub fn standby_views(&self) -> Vec<StandbyView> {
        let (conns, progress) = self.progress_list();
        let states = self.sync_names.read().states(&progress);
        let end = self.handle.get().end_lsn();
        conns
            .iter()
            .zip(states)
            .map(|(c, s)| {
                let p = c.progress.lock();
                let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
                StandbyView {
                    id: c.id,
                    name: c.name.clone(),
                    addr: c.addr,
                    listening_port: c.listening_port,
                    state: p.state.as_str(),
                    sent_lsn: p.sent,
                    write_lsn: p.write,
                    flush_lsn: p.flush,
                    replay_lsn: p.apply,
                    write_lag_ms: ms(p.write_lag),
                    flush_lag_ms: ms(p.flush_lag),
                    replay_lag_ms: ms(p.replay_lag),
                    lag_bytes: end.saturating_sub(p.flush),
                    sync_state: sync_state_name(s),
                    last_reply_secs: p.last_reply.elapsed().as_secs(),
                    connected_at: c.connected_at,
                }
            })
            .collect()
    }

    /// Serves one standby on a connection that just sent the replication
    /// handshake command; `buf` holds any bytes already read past it.
    pub async fn serve(
        self: &Arc<Self>,
        stream: TcpStream,
        buf: BytesMut,
        listening_port: Option<u16>,
    ) -> Result<(), ReplError> {
        let _ = stream.set_nodelay(true);
        let addr = stream.peer_addr()?;
        let (mut rd, mut wr) = stream.into_split();
        let mut rbuf = buf;
        let hello = expect_message(
            &mut rd,
            &mut rbuf,
            Duration::from_secs(10),
            "the standby's Hello",
        )
        .await?;
        let Message::Hello {
            flushed_lsn, name, ..
        } = &hello
        else {
            return Err(ReplError::Protocol(format!(
                "expected Hello, got {}",
                hello.name()
            )));
        };
        let (flushed_lsn, name) = (*flushed_lsn, name.clone());
        let engine = self.handle.get();
        // Held until this connection ends.
        let claim = NameClaim::take(self, &name);
        let admission = match claim {
            None => Admission::Refuse(format!(
                "a standby named \"{name}\" is already connected: give each standby its own --name (they would share one replication slot)"
            )),
            Some(_) => self.admit(&hello),
        };
        let base_backup = match admission {
            Admission::Refuse(reason) => {
                tracing::warn!(standby = %name, %addr, %reason, "refusing standby");
                write_message(
                    &mut wr,
                    &Message::Refuse {
                        reason: reason.clone(),
                    },
                )
                .await?;
                return Err(ReplError::Refused(reason));
            }
            Admission::Rewind(fork_lsn) => {
                tracing::warn!(standby = %name, %addr, fork_lsn, standby_end = flushed_lsn, "standby's WAL went past the fork point: telling it to rewind");
                write_message(
                    &mut wr,
                    &Message::Rewind {
                        epoch: engine.epoch(),
                        fork_lsn,
                    },
                )
                .await?;
                return Ok(());
            }
            Admission::BaseBackup => true,
            Admission::Stream => false,
        };
        write_message(
            &mut wr,
            &Message::Welcome {
                cluster_id: engine.cluster_id(),
                epoch: engine.epoch(),
                start_lsn: if base_backup { 0 } else { flushed_lsn },
                primary_end_lsn: engine.end_lsn(),
                base_backup,
            },
        )
        .await?;
        let conn = Arc::new(StandbyConn {
            outbox: Outbox::new(
                wr,
                SendCursor {
                    sent: flushed_lsn,
                    direct: false,
                },
            ),
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            name: name.clone(),
            addr,
            listening_port,
            connected_at: SystemTime::now(),
            progress: Mutex::new(Progress {
                state: if base_backup {
                    StandbyState::Backup
                } else {
                    StandbyState::Catchup
                },
                sent: flushed_lsn,
                write: flushed_lsn,
                flush: flushed_lsn,
                apply: flushed_lsn,
                write_lag: None,
                flush_lag: None,
                replay_lag: None,
                last_reply: Instant::now(),
                samples: VecDeque::new(),
            }),
            reported: Notify::new(),
        });
        self.standbys.lock().push(conn.clone());
        // Unlisted however this ends, also when the caller drops this future
        // (CLIENT KILL): a standby left listed would count for synchronous
        // commit and keep its socket open for ever.
        struct Listed<'a> {
            hub: &'a Hub,
            id: u64,
        }
        impl Drop for Listed<'_> {
            fn drop(&mut self) {
                self.hub.standbys.lock().retain(|c| c.id != self.id);
                self.hub.recompute();
            }
        }
        let listed = Listed {
            hub: self,
            id: conn.id,
        };
        tracing::info!(standby = %name, %addr, base_backup, from_lsn = flushed_lsn, "standby connected");
        let result = self
            .stream_to(&conn, rd, rbuf, base_backup, flushed_lsn)
            .await;
        drop(listed);
        match &result {
            Ok(()) => tracing::info!(standby = %name, "standby disconnected"),
            Err(e) => tracing::warn!(standby = %name, error = %e, "standby stream ended"),
        }
        result
    }

    /// Sends a batch the WAL flusher just made sendable to every standby
    /// whose sender is in direct mode ([`SendCursor::direct`]), on the
    /// flusher's thread: the standby gets it without waiting for a task to
    /// be scheduled. Never blocks: a standby whose outbox is busy, whose
    /// cursor is elsewhere, or whose window is full is left to its task.
    fn send_direct(&self, start: Lsn, data: &[u8]) {
        let standbys = self.standbys.lock();
        let end = start + data.len() as u64;
        let mut frame: Option<BytesMut> = None;
        for conn in standbys.iter() {
            let Some(mut out) = conn.outbox.try_lock() else {
                // The task holds it and reads the sendable LSN after; the
                // wake-up only makes sure it looks again.
                conn.outbox.wake.notify_one();
                continue;
            };
            if !out.state().direct {
                continue;
            }
            if out.state().sent != start
                || data.len() > CHUNK_MAX_BYTES
                || end.saturating_sub(conn.progress.lock().write) > IN_FLIGHT_MAX_BYTES
            {
                out.state().direct = false;
                conn.outbox.wake.notify_one();
                continue;
            }
            let frame = frame.get_or_insert_with(|| {
                let engine = self.handle.get();
                let mut f = BytesMut::with_capacity(data.len() + 64);
                Message::WalData {
                    epoch: engine.epoch(),
                    start_lsn: start,
                    primary_flushed_lsn: engine.flushed_lsn(),
                    data: Bytes::copy_from_slice(data),
                }
                .encode(&mut f);
                f
            });
            out.state().sent = end;
            // IMPORTANT: recorded before the write, as in stream_to.
            conn.on_sent(end, false);
            out.push_frame(frame);
        }
    }

    /// Decides what a standby that said Hello gets.
    fn admit(&self, hello: &Message) -> Admission {
        let Message::Hello {
            proto_version,
            cluster_id,
            epoch,
            flushed_lsn,
            name,
            history,
        } = hello
        else {
            return Admission::Refuse(format!("expected Hello, got {}", hello.name()));
        };
        let engine = self.handle.get();
        if *proto_version != PROTO_VERSION {
            return Admission::Refuse(format!("replication protocol version {} is not supported (this primary speaks {PROTO_VERSION})", *proto_version));
        }
        if name.is_empty() {
            return Admission::Refuse("a standby must have a name (--name)".into());
        }
        if let Err(e) = crate::sync_rule::check_standby_name(name) {
            return Admission::Refuse(e);
        }
        if let Some(epoch) = self.fenced_by() {
            return Admission::Refuse(format!(
                "this node learned of epoch {epoch}, newer than its own epoch {}: it is no longer the primary",
                engine.epoch()
            ));
        }
        if *cluster_id == 0 {
            return Admission::BaseBackup;
        }
        if *cluster_id != engine.cluster_id() {
            return Admission::Refuse(format!(
                "standby belongs to cluster {:016x}, but this primary is cluster {:016x}; use an empty data directory to join this cluster",
                *cluster_id,
                engine.cluster_id()
            ));
        }
        let mine: Vec<(u64, Lsn)> = engine
            .epoch_history()
            .entries()
            .iter()
            .map(|e| (e.epoch, e.start_lsn))
            .collect();
        let mut theirs = history.clone();
        if theirs.last().is_none_or(|last| last.0 < *epoch) {
            // The Hello's epoch counts even if its history omits it.
            theirs.push((*epoch, *flushed_lsn));
        }
        match divergence(&mine, engine.end_lsn(), &theirs, *flushed_lsn) {
            Divergence::StandbyNewer(epoch) => {
                self.fence(epoch);
                return Admission::Refuse(format!(
                    "standby is on epoch {epoch}, newer than this node's epoch {}: this node is not the current primary and stops taking writes",
                    engine.epoch()
                ));
            }
            Divergence::Unrelated => {
                return Admission::Refuse(format!(
                    "standby's epoch history shares no epoch with this primary's (epoch {}): the histories diverged",
                    engine.epoch()
                ));
            }
            Divergence::Fork(fork) => return Admission::Rewind(fork),
            Divergence::None => {}
        }
        let slot = match self.slots.acquire(name, *flushed_lsn) {
            Ok(slot) => slot,
            Err(e) => return Admission::Refuse(format!("cannot create replication slot: {e}")),
        };
        if slot.invalidated {
            tracing::warn!(
                standby = %name,
                "slot was invalidated: sending a base backup"
            );
            return Admission::BaseBackup;
        }
        if self.reseed.lock().remove(name.as_str()) {
            tracing::warn!(
                standby = %name,
                flushed_lsn = *flushed_lsn,
                "this standby's last resume LSN was not where a valid record begins: sending a base backup"
            );
            return Admission::BaseBackup;
        }
        if let Some(damaged) = self.wal_damaged_at() {
            if *flushed_lsn <= damaged {
                tracing::warn!(
                    standby = %name,
                    flushed_lsn = *flushed_lsn,
                    damaged_lsn = damaged,
                    "the WAL this standby needs is damaged on this primary: sending a base backup"
                );
                return Admission::BaseBackup;
            }
        }
        if *flushed_lsn < engine.stats().oldest_lsn {
            tracing::info!(
                standby = %name,
                flushed_lsn = *flushed_lsn,
                "the WAL this standby needs was removed: sending a base backup"
            );
            return Admission::BaseBackup;
        }
        Admission::Stream
    }

    /// The LSN of the newest damaged WAL record a sender found, if any
    /// (since this process started).
    pub fn wal_damaged_at(&self) -> Option<Lsn> {
        self.wal_damaged_at.load(Ordering::Acquire).checked_sub(1)
    }

    /// A sender found a damaged record where it read this primary's WAL for
    /// a standby: logs it, makes every standby that still needs WAL from
    /// there take a base backup (from a checkpoint past it: the in-memory
    /// state it is taken from was never read back from the damaged file),
    /// and returns the error that ends this stream, which the standby is
    /// told. `resumed` says the record is the first one at the LSN the
    /// standby asked to resume from, which it may have got wrong (a standby
    /// whose WAL does not match, or a hostile one): then only that standby
    /// is re-seeded, and if the WAL is damaged there after all, the sender
    /// of the stream after its base backup finds it from a known record
    /// boundary.
    fn wal_damaged(
        &self,
        engine: &Engine,
        standby: &str,
        d: DamagedRecord,
        resumed: bool,
    ) -> ReplError {
        let (lsn, reason) = (d.lsn, d.reason);
        let file = self.mark_damaged(engine, lsn, resumed.then_some(standby));
        if resumed {
            tracing::error!(standby, lsn, %file, reason, "the WAL at the LSN this standby resumes from is not a valid record: either the standby's WAL does not match this primary's, or this primary's WAL is damaged there; sending it a base backup");
        } else {
            tracing::error!(standby, lsn, %file, reason, "this primary's WAL is damaged (a record written earlier no longer reads back as written): standbys that still need it get a base backup; run SAVE (a checkpoint) so that crash recovery no longer needs it, and check the disk");
        }
        ReplError::Storage(format!(
            "the primary's WAL at LSN {lsn} (the record begins in {file}) is not a valid record ({reason}): reconnect for a base backup"
        ))
    }

    /// A sender could not read this primary's WAL at `lsn` (a segment cut
    /// short, an I/O error): handled as damage there, so that the standby is
    /// re-seeded instead of asking for the same bytes for ever.
    fn wal_unreadable(
        &self,
        engine: &Engine,
        standby: &str,
        lsn: Lsn,
        e: &walship_engine::EngineError,
    ) -> ReplError {
        let file = self.mark_damaged(engine, lsn, None);
        tracing::error!(standby, lsn, %file, error = %e, "this primary cannot read back its WAL: standbys that still need it get a base backup; run SAVE (a checkpoint) so that crash recovery no longer needs it, and check the disk");
        ReplError::Storage(format!(
            "the primary cannot read its WAL at LSN {lsn} ({file}): {e}: reconnect for a base backup"
        ))
    }

    /// Makes the standbys that need WAL at `lsn` take a base backup: only
    /// `standby` when given, else every one at or before it. Returns the
    /// segment file holding `lsn`, for messages.
    fn mark_damaged(&self, engine: &Engine, lsn: Lsn, standby: Option<&str>) -> String {
        match standby {
            Some(name) => {
                self.reseed.lock().insert(name.to_string());
            }
            None => {
                self.wal_damaged_at.fetch_max(lsn + 1, Ordering::AcqRel);
            }
        }
        engine.wal_file_for(lsn).map_or_else(
            || "a removed segment".to_string(),
            |p| p.display().to_string(),
        )
    }

    /// The newer epoch this node learned of, if it has been deposed.
    pub fn fenced_by(&self) -> Option<u64> {
        match self.fenced_by.load(Ordering::Acquire) {
            0 => None,
            epoch => Some(epoch),
        }
    }

    /// Records that a newer epoch exists: this node stops being a primary
    /// (writes get READONLY, its standbys are disconnected, writes waiting
    /// for them fail) until it is re-pointed or promoted again.
    pub fn fence(&self, newer_epoch: u64) {
        let before = self.fenced_by.fetch_max(newer_epoch, Ordering::AcqRel);
        if before == 0 {
            tracing::error!(
                newer_epoch,
                "a standby knows a newer epoch: this node is no longer the primary; refusing writes until it is re-pointed (REPLICAOF host port) or promoted again"
            );
        }
        self.stop();
    }

    /// Forgets the fence (the node was re-pointed or promoted again).
    pub fn clear_fence(&self) {
        self.fenced_by.store(0, Ordering::Release);
    }

    async fn stream_to(
        self: &Arc<Self>,
        conn: &Arc<StandbyConn>,
        mut rd: tokio::net::tcp::OwnedReadHalf,
        rbuf: BytesMut,
        base_backup: bool,
        from_lsn: Lsn,
    ) -> Result<(), ReplError> {
        let mut sent = from_lsn;
        if base_backup {
            sent = self.send_base_backup(conn).await?;
            let mut p = conn.progress.lock();
            p.state = StandbyState::Catchup;
            // IMPORTANT: only sent. The standby has written, flushed and
            // applied nothing until it installed the backup and says so in a
            // status report; counting it earlier would acknowledge
            // synchronous writes it could still lose.
            p.sent = sent;
            // The standby reports nothing while a backup arrives: its
            // silence is timed from the end of the transfer, or a backup
            // longer than the standby timeout would end the stream as soon
            // as it was sent.
            p.last_reply = Instant::now();
        }
        // Reader: status reports from the standby.
        let (done_tx, mut done_rx) = watch::channel(None::<String>);
        let reader = {
            let conn = conn.clone();
            let mut rbuf = rbuf;
            let hub = self.clone();
            async move {
                let err = loop {
                    match read_message(&mut rd, &mut rbuf).await {
                        Ok(Some(Message::Status { epoch, .. }))
                            if epoch > hub.handle.load().epoch() =>
                        {
                            hub.fence(epoch);
                            break format!(
                                "standby reports epoch {epoch}, newer than this primary's: this node was deposed"
                            );
                        }
                        Ok(Some(Message::Status {
                            write_lsn,
                            flush_lsn,
                            apply_lsn,
                            ..
                        })) => {
                            conn.on_status(write_lsn, flush_lsn, apply_lsn);
                            hub.slots.advance(&conn.name, flush_lsn);
                            hub.recompute();
                            conn.reported.notify_one();
                        }
                        Ok(Some(Message::Error { reason })) => {
                            break format!("standby reported: {reason}")
                        }
                        Ok(Some(other)) => {
                            break format!("unexpected {} from standby", other.name())
                        }
                        Ok(None) => break "standby closed the connection".to_string(),
                        Err(e) => break e.to_string(),
                    }
                };
                let _ = done_tx.send(Some(err));
            }
        };
        // Aborted however this ends (the task holds the socket's read half).
        struct AbortOnDrop(tokio::task::JoinHandle<()>);
        impl Drop for AbortOnDrop {
            fn drop(&mut self) {
                self.0.abort();
            }
        }
        let reader = AbortOnDrop(tokio::spawn(reader));
        let engine = self.handle.get();
        conn.outbox.lock().state().sent = sent;
        // The flusher hands this hub every batch the moment it is sendable
        // (Hub::send_direct). Installed for every stream, so an engine that
        // replaced an earlier one gets it too; the Weak keeps the engine
        // from keeping the hub alive.
        let hub = Arc::downgrade(self);
        engine.set_sendable_listener(Some(Arc::new(move |start, data: &[u8]| {
            if let Some(hub) = hub.upgrade() {
                hub.send_direct(start, data);
            }
        })));
        let mut sendable_rx = engine.subscribe_sendable();
        let mut stop_rx = self.stop_tx.subscribe();
        let mut keepalive = tokio::time::interval(KEEPALIVE_INTERVAL);
        let mut verifier = StreamVerifier::new(sent);
        let last_reply = || conn.progress.lock().last_reply;
        let result = loop {
            if let Some(reason) = done_rx.borrow().clone() {
                break if reason == "standby closed the connection" {
                    Ok(())
                } else {
                    Err(ReplError::Peer(reason))
                };
            }
            if *stop_rx.borrow() {
                conn.outbox.lock().state().direct = false;
                self.send_last_words(conn, "this node is no longer the primary".into())
                    .await;
                break Ok(());
            }
            let written = conn.progress.lock().write;
            let (sendable, sent, sent_now, direct, became_streaming) = {
                let mut out = conn.outbox.lock();
                // IMPORTANT: read under the outbox lock. The flusher publishes
                // a batch before it offers it to send_direct, which takes this
                // lock: either it finds `direct` set and sends the batch, or
                // this read sees the batch and the task sends it.
                let sendable = engine.sendable_lsn();
                let sent = out.state().sent;
                let in_flight = sent.saturating_sub(written);
                if sent < sendable
                    && (in_flight < IN_FLIGHT_MAX_BYTES
                        || in_flight < in_flight_allowance(&engine, written))
                {
                    out.state().direct = false;
                    let data = match engine.read_wal(sent, CHUNK_MAX_BYTES) {
                        Ok(d) => d,
                        // Removed by a checkpoint meanwhile: the standby's
                        // next admission finds it gone. (A segment missing
                        // above the oldest one kept is a hole: unreadable.)
                        Err(e @ walship_engine::EngineError::WalRemoved { lsn, oldest })
                            if lsn < oldest =>
                        {
                            break Err(ReplError::Storage(e.to_string()))
                        }
                        Err(e) => break Err(self.wal_unreadable(&engine, &conn.name, sent, &e)),
                    };
                    let end = sent + data.len() as u64;
                    // Check every record before it leaves: a record damaged
                    // on this primary's disk would be refused by the
                    // standby, which would ask for it again for ever.
                    if verifier.lsn() != sent {
                        // After direct sends, which end at a batch boundary.
                        verifier = StreamVerifier::new(sent);
                    }
                    let checked = verifier.feed(&data).and_then(|()| {
                        if end == engine.sendable_lsn() {
                            verifier.check_boundary()
                        } else {
                            Ok(())
                        }
                    });
                    if let Err(d) = checked {
                        let resumed = !base_backup && d.lsn == from_lsn;
                        break Err(self.wal_damaged(&engine, &conn.name, d, resumed));
                    }
                    out.state().sent = end;
                    // IMPORTANT: recorded as sent before the write. Reports
                    // are capped at what was sent, and a fast standby can
                    // flush these bytes and report them before this task
                    // runs again after the write: that report would be cut
                    // back and the writes it confirms would wait for the
                    // standby's next report (up to its 100 ms status interval).
                    let became_streaming = conn.on_sent(end, end >= engine.sendable_lsn());
                    out.push(&Message::WalData {
                        epoch: engine.epoch(),
                        start_lsn: sent,
                        primary_flushed_lsn: engine.flushed_lsn(),
                        data,
                    });
                    (sendable, end, true, false, became_streaming)
                } else {
                    // Caught up with nothing queued: from here the flusher
                    // sends each batch itself until it cannot (Hub::send_direct).
                    let direct = sent >= sendable && !out.has_pending() && conn.is_streaming();
                    out.state().direct = direct;
                    (sendable, sent, false, direct, false)
                }
            };
            if became_streaming {
                self.recompute();
            }
            if let Err(e) = self.bounded(REPORT, last_reply, conn.outbox.drain()).await {
                break Err(e);
            }
            if sent_now {
                continue;
            }
            if sent >= sendable && conn.mark_caught_up(sent) {
                // Nothing left to send: an idle standby is caught up too.
                self.recompute();
                continue;
            }
            let timeout_ms = self.sender_timeout_ms();
            if timeout_ms > 0
                && conn.progress.lock().last_reply.elapsed() > Duration::from_millis(timeout_ms)
            {
                break Err(ReplError::Timeout(REPORT));
            }
            tokio::select! {
                _ = sendable_rx.changed(), if !direct => {}
                _ = conn.reported.notified(), if !direct => {}
                _ = conn.outbox.wake.notified() => {}
                _ = done_rx.changed() => {}
                _ = stop_rx.changed() => {}
                _ = keepalive.tick() => {
                    let msg = Message::Keepalive {
                        epoch: engine.epoch(),
                        end_lsn: engine.sendable_lsn(),
                        flushed_lsn: engine.flushed_lsn(),
                        timestamp_ms: now_ms(),
                        reply_requested: true,
                    };
                    if let Err(e) = self.bounded(REPORT, last_reply, conn.outbox.send(&msg)).await {
                        break Err(e);
                    }
                }
            }
        };
        conn.outbox.lock().state().direct = false;
        if let Err(ReplError::Storage(reason)) = &result {
            // This node's fault: the standby is told why, not just cut off.
            self.send_last_words(conn, reason.clone()).await;
        }
        drop(reader);
        result
    }

    /// Sends a checkpoint and the epoch history; returns the LSN streaming
    /// continues from (the checkpoint's redo LSN). The newest existing
    /// checkpoint is sent when the WAL written since it is no more than the
    /// checkpoint itself (and well under `max_slot_wal_keep_size`, so the
    /// slot is not invalidated while the standby catches up): writing a
    /// fresh one would cost a pass over the whole state, and replaying that
    /// WAL on the standby costs less. Otherwise a checkpoint is taken first.
    async fn send_base_backup(&self, conn: &StandbyConn) -> Result<Lsn, ReplError> {
        let engine = self.handle.get();
        // Hold all WAL still on disk while the checkpoint is chosen or taken,
        // then from its redo LSN.
        let oldest = engine.stats().oldest_lsn;
        self.slots
            .reset(&conn.name, oldest)
            .map_err(|e| ReplError::Storage(e.to_string()))?;
        let cap = self.slots.max_keep_bytes();
        let damaged = self.wal_damaged_at();
        let recent = engine.latest_checkpoint().filter(|c| {
            let since = engine.end_lsn().saturating_sub(c.redo_lsn);
            c.redo_lsn >= oldest
                && since <= c.bytes
                && (cap == 0 || since < cap / 2)
                && damaged.is_none_or(|d| c.redo_lsn > d)
        });
        // Map it (through the engine's storage, so a node on the power-loss
        // simulator serves backups too) before a later checkpoint can remove
        // it. A reused checkpoint is verified first (header and CRCs): a
        // damaged file would be refused by the standby, which would then ask
        // again and again; it, or one gone already, is replaced by a new one.
        let storage = engine.config().storage.clone();
        let cluster_id = engine.cluster_id();
        let map_file = |path: std::path::PathBuf, verify: bool| {
            let storage = storage.clone();
            async move {
                tokio::task::spawn_blocking(move || {
                    let map = storage
                        .open(&path)
                        .and_then(|f| f.map())
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                    if verify {
                        walship_engine::checkpoint::verify_mapped(&path, &map, cluster_id)?;
                    }
                    Ok::<_, String>(map)
                })
                .await
                .map_err(|e| ReplError::Storage(e.to_string()))?
                .map_err(ReplError::Storage)
            }
        };
        let reused = match recent {
            Some(c) => match map_file(c.path.clone(), true).await {
                Ok(map) => Some((c, map)),
                Err(e) => {
                    tracing::warn!(file = %c.path.display(), error = %e, "newest checkpoint not usable; taking a new one for the base backup");
                    None
                }
            },
            None => None,
        };
        let (info, map) = match reused {
            Some((c, m)) => {
                tracing::info!(standby = %conn.name, redo_lsn = c.redo_lsn, "base backup from the newest checkpoint");
                (c, m)
            }
            None => {
                let e2 = engine.clone();
                let info = tokio::task::spawn_blocking(move || e2.checkpoint())
                    .await
                    .map_err(|e| ReplError::Storage(e.to_string()))?
                    .map_err(|e| ReplError::Storage(e.to_string()))?;
                let map = map_file(info.path.clone(), false).await?;
                (info, map)
            }
        };
        self.slots
            .reset(&conn.name, info.redo_lsn)
            .map_err(|e| ReplError::Storage(e.to_string()))?;
        let len = map.len() as u64;
        tracing::info!(standby = %conn.name, redo_lsn = info.redo_lsn, bytes = len, "sending base backup");
        self.send_backup_frame(
            conn,
            &Message::BackupBegin {
                cluster_id: engine.cluster_id(),
                epoch: info.epoch,
                redo_lsn: info.redo_lsn,
                end_lsn: info.end_lsn,
                checkpoint_bytes: len,
            },
        )
        .await?;
        let mut crc = crc32fast::Hasher::new();
        let mut offset = 0usize;
        while offset < map.len() {
            let end = (offset + CHUNK_MAX_BYTES).min(map.len());
            let data = map.slice(offset..end);
            crc.update(&data);
            self.send_backup_frame(
                conn,
                &Message::BackupChunk {
                    kind: BACKUP_CHUNK_CHECKPOINT,
                    offset: offset as u64,
                    data,
                },
            )
            .await?;
            offset = end;
        }
        let history = engine.epoch_history().encode();
        self.send_backup_frame(
            conn,
            &Message::BackupChunk {
                kind: BACKUP_CHUNK_EPOCHS,
                offset: 0,
                data: history.into(),
            },
        )
        .await?;
        self.send_backup_frame(
            conn,
            &Message::BackupEnd {
                checkpoint_crc: crc.finalize(),
                wal_start_lsn: info.redo_lsn,
                wal_end_lsn: info.end_lsn,
            },
        )
        .await?;
        Ok(info.redo_lsn)
    }

    /// Sends one frame of a base backup. A standby reports nothing while a
    /// backup arrives, so its liveness is the socket taking the bytes: a
    /// frame (at most a chunk) not taken within the sender timeout ends the
    /// stream.
    async fn send_backup_frame(&self, conn: &StandbyConn, m: &Message) -> Result<(), ReplError> {
        let began = Instant::now();
        self.bounded(
            "the standby to read its base backup",
            || began,
            conn.outbox.send(m),
        )
        .await
    }

    /// Waits for `io`, a write to a standby's socket, unless the standby
    /// stays silent for the sender timeout, counted from `since()`,
    /// meanwhile (then "timed out waiting for {waiting_for}"). A standby that stopped reading (stopped, frozen, its host
    /// gone) fills the socket and the write would otherwise wait for ever,
    /// and with it, if the standby is synchronous, every synchronous write
    /// (PostgreSQL's `wal_sender_timeout` likewise covers a walsender
    /// waiting to write). Reports keep arriving while a live standby reads
    /// slowly, so `since` can move on while this waits.
    async fn bounded(
        &self,
        waiting_for: &'static str,
        since: impl Fn() -> Instant,
        io: impl std::future::Future<Output = Result<(), ReplError>>,
    ) -> Result<(), ReplError> {
        tokio::pin!(io);
        loop {
            let timeout_ms = self.sender_timeout_ms();
            if timeout_ms == 0 {
                // Re-read now and then: the timeout may be set meanwhile.
                tokio::select! {
                    r = &mut io => return r,
                    _ = tokio::time::sleep(KEEPALIVE_INTERVAL) => continue,
                }
            }
            let deadline = since() + Duration::from_millis(timeout_ms);
            if Instant::now() >= deadline {
                return Err(ReplError::Timeout(waiting_for));
            }
            tokio::select! {
                r = &mut io => return r,
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
        }
    }

    /// Tells the standby why its stream ends, if its socket takes it soon.
    async fn send_last_words(&self, conn: &StandbyConn, reason: String) {
        let _ = tokio::time::timeout(
            KEEPALIVE_INTERVAL,
            conn.outbox.send(&Message::Error { reason }),
        )
        .await;
    }
}

/// How far past a standby's written LSN its sender may run: the in-flight
/// cap, or further when the record at `written` is larger. The standby
/// writes (and reports) whole records only, so a record over the cap would
/// otherwise stop the stream for ever, and with it every synchronous write.
/// Called only once the cap is reached.
fn in_flight_allowance(engine: &walship_engine::Engine, written: Lsn) -> u64 {
    let record = engine
        .read_wal(written, 4)
        .ok()
        .and_then(|b| <[u8; 4]>::try_from(&b[..]).ok())
        .map_or(0, |len| {
            (walship_engine::wal::record::RECORD_HEADER_BYTES as u64)
                + u64::from(u32::from_le_bytes(len))
        });
    IN_FLIGHT_MAX_BYTES.max(record + CHUNK_MAX_BYTES as u64)
}

fn sync_state_name(s: SyncState) -> &'static str {
    s.as_str()
}

impl StandbyConn {
    fn is_streaming(&self) -> bool {
        self.progress.lock().state == StandbyState::Streaming
    }
    /// Records a send, before its bytes are written (reports are capped at
    /// it); returns true when the standby just became `streaming`.
    fn on_sent(&self, sent: Lsn, caught_up: bool) -> bool {
        let mut p = self.progress.lock();
        p.sent = sent;
        if p.samples.len() >= LAG_SAMPLES_MAX {
            p.samples.pop_front();
        }
        p.samples.push_back((sent, Instant::now()));
        drop(p);
        caught_up && self.mark_caught_up(sent)
    }

    /// Catchup → streaming; returns true when the state changed.
    fn mark_caught_up(&self, sent: Lsn) -> bool {
        let mut p = self.progress.lock();
        if p.state != StandbyState::Catchup {
            return false;
        }
        p.state = StandbyState::Streaming;
        tracing::info!(standby = %self.name, lsn = sent, "standby caught up: streaming");
        true
    }

    fn on_status(&self, write: Lsn, flush: Lsn, apply: Lsn) {
        let mut p = self.progress.lock();
        let now = Instant::now();
        // Positions only move forward, and never past what was sent.
        let cap = p.sent;
        p.write = p.write.max(write.min(cap));
        p.flush = p.flush.max(flush.min(cap));
        p.apply = p.apply.max(apply.min(cap));
        let lag = |samples: &VecDeque<(Lsn, Instant)>, pos: Lsn| {
            samples
                .iter()
                .rev()
                .find(|(l, _)| *l <= pos)
                .map(|(_, t)| now - *t)
        };
        if let Some(l) = lag(&p.samples, p.write) {
            p.write_lag = Some(l);
        }
        if let Some(l) = lag(&p.samples, p.flush) {
            p.flush_lag = Some(l);
        }
        if let Some(l) = lag(&p.samples, p.apply) {
            p.replay_lag = Some(l);
        }
        let done = p.write.min(p.flush).min(p.apply);
        while p.samples.front().is_some_and(|(l, _)| *l <= done) {
            p.samples.pop_front();
        }
        p.last_reply = now;
    }
}
