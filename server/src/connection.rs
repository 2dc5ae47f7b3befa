//! One client connection: read, parse every complete request in the buffer,
//! execute them, wait once for the durability of the batch's writes, and
//! send all replies with one write.
//!
//! Bounds: the unparsed input is capped by `client-query-buffer-limit`, the
//! replies of a batch are flushed every [`FLUSH_THRESHOLD_BYTES`], and a
//! single reply larger than `client-output-buffer-limit`, or unsent replies
//! plus the requests read while they wait, close the client. A client that
//! hangs up while its write waits for standbys (or in WAIT) is dropped at
//! once.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::commands::{self, ClientState, Ctx};
use crate::reply::{Protocol, Reply};
use crate::resp::{Limits, Parsed, Parser, ProtocolError, Request};
use crate::state::{ClientInfo, Shared};
use crate::store::Lsn;

/// Replies of one batch are sent once they reach this size, so a long
/// pipeline does not buffer unbounded output.
pub const FLUSH_THRESHOLD_BYTES: usize = 64 * 1024;
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// Unregisters the client however the task ends (error, panic, shutdown).
struct Registration {
    shared: Arc<Shared>,
    id: u64,
    /// Counted in `connected` (against max-clients); a replication stream
    /// is not, as PostgreSQL keeps walsenders out of `max_connections`.
    counted: bool,
}

impl Registration {
    /// The connection became a replication stream: it no longer takes one
    /// of the max-clients slots (standbys must never lock clients out, nor
    /// clients standbys).
    fn uncount(&mut self) {
        if std::mem::take(&mut self.counted) {
            self.shared
                .clients
                .connected
                .fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.shared.clients.unregister(self.id);
        self.uncount();
    }
}

/// A command whose reply waits for durability: a write (its own LSN) or a
/// read (the WAL end when it read).
struct Waiting {
    /// Position of the command in the batch.
    seq: usize,
    /// Offset in the output buffer where its reply starts.
    reply_at: usize,
    lsn: Lsn,
    /// Index into the command table, start time and failure, for metrics.
    command: usize,
    start: Instant,
    failed: bool,
}

/// The commands executed since the last flush.
#[derive(Default)]
struct Batch {
    /// Highest LSN to wait for before sending this batch's replies.
    lsn: Option<Lsn>,
    /// Whether any command in the batch wrote (not only read).
    wrote: bool,
    /// Commands executed in this batch.
    commands: usize,
    waiting: Vec<Waiting>,
}

pub struct Connection {
    shared: Arc<Shared>,
    stream: TcpStream,
    rbuf: BytesMut,
    parser: Parser,
    req: Request,
    out: Reply,
    client: ClientState,
    batch: Batch,
}

/// Serves one client until it disconnects, misbehaves, or the server shuts
/// down. `connected` must already count this client; it is decremented here
/// (for a replication stream, as soon as it becomes one).
///
/// A client that asked to become a standby's replication stream
/// (`WALSHIP STREAM`) is handed back as a [`ReplicationStream`]: a shutdown
/// drains the clients first, whose synchronous writes may still wait for
/// that stream's standby, and does not wait for the stream itself.
pub async fn serve(
    shared: Arc<Shared>,
    stream: TcpStream,
    info: Arc<ClientInfo>,
    shutdown: watch::Receiver<bool>,
) -> Option<ReplicationStream> {
    let mut registration = Registration {
        shared: shared.clone(),
        id: info.id,
        counted: true,
    };
    let id = info.id;
    let addr = info.addr;
    let limits = Limits::new(
        shared
            .runtime
            .proto_max_bulk_len_bytes
            .load(Ordering::Relaxed),
    );
    let client = ClientState::new(info, &shared);
    let mut conn = Connection {
        shared,
        stream,
        rbuf: BytesMut::with_capacity(READ_CHUNK_BYTES),
        parser: Parser::new(limits),
        req: Request::new(),
        out: Reply::new(Protocol::Resp2),
        client,
        batch: Batch::default(),
    };
    tracing::debug!(client = id, %addr, "client connected");
    match conn.run(shutdown).await {
        Ok(()) => tracing::debug!(client = id, %addr, "client disconnected"),
        Err(e) => {
            tracing::debug!(client = id, %addr, error = %e, "client connection ended with an error")
        }
    }
    let port = conn.client.replicate.take()?;
    registration.uncount();
    conn.client.info.is_replica.store(true, Ordering::Relaxed);
    let Connection {
        stream,
        rbuf,
        client,
        ..
    } = conn;
    Some(ReplicationStream {
        _registration: registration,
        info: client.info,
        stream,
        rbuf,
        port,
    })
}

/// A client connection that became a standby's replication stream.
pub struct ReplicationStream {
    _registration: Registration,
    info: Arc<ClientInfo>,
    stream: TcpStream,
    /// Bytes read past the `WALSHIP STREAM` command.
    rbuf: BytesMut,
    /// The standby's client port.
    port: u16,
}

impl ReplicationStream {
    /// Streams WAL to the standby until either side ends the connection.
    pub async fn run(self) {
        let (shared, id) = (&self._registration.shared, self._registration.id);
        let addr = self.stream.peer_addr().ok();
        let hub = shared.replication.hub.clone();
        tokio::select! {
            r = hub.serve(self.stream, self.rbuf, Some(self.port)) => if let Err(e) = r {
                tracing::debug!(client = id, ?addr, error = %e, "replication stream ended");
            },
            _ = self.info.killed.notified() => {
                tracing::info!(client = id, ?addr, "replication stream closed by CLIENT KILL");
            }
        }
    }
}

enum Next {
    /// The client asked to become a replication stream (`WALSHIP STREAM`).
    Replicate,
    Read,
    Close,
}

impl Connection {
    async fn run(&mut self, mut shutdown: watch::Receiver<bool>) -> io::Result<()> {
        loop {
            if *shutdown.borrow_and_update() {
                return Ok(());
            }
            if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK_BYTES / 4 {
                self.rbuf.reserve(READ_CHUNK_BYTES);
            }
            let n = tokio::select! {
                r = self.stream.read_buf(&mut self.rbuf) => r?,
                _ = shutdown.changed() => return Ok(()),
                _ = self.client.info.killed.notified() => return Ok(()),
            };
            if n == 0 {
                return Ok(());
            }
            self.shared
                .metrics
                .net_input_bytes
                .fetch_add(n as u64, Ordering::Relaxed);
            match self.process_input().await? {
                Next::Read => {}
                Next::Close | Next::Replicate => return Ok(()),
            }
            let limit = self
                .shared
                .runtime
                .client_query_buffer_limit_bytes
                .load(Ordering::Relaxed);
            if self.rbuf.len() as u64 > limit {
                tracing::warn!(
                    client = self.client.info.id,
                    bytes = self.rbuf.len(),
                    "closing client over client-query-buffer-limit"
                );
                self.shared
                    .metrics
                    .output_limit_disconnects
                    .fetch_add(1, Ordering::Relaxed);
                self.out
                    .error(&format!("ERR {}", ProtocolError::QueryBufferLimit));
                self.write_out().await?;
                return Ok(());
            }
            self.client
                .info
                .query_buffer_bytes
                .store(self.rbuf.len() as u64, Ordering::Relaxed);
            if self.rbuf.is_empty() && self.rbuf.capacity() > 1024 * 1024 {
                // A huge request is done; give its memory back.
                self.rbuf = BytesMut::with_capacity(READ_CHUNK_BYTES);
            }
        }
    }

    /// Executes every complete request in the read buffer.
    async fn process_input(&mut self) -> io::Result<Next> {
        self.parser.set_max_bulk_bytes(
            self.shared
                .runtime
                .proto_max_bulk_len_bytes
                .load(Ordering::Relaxed),
        );
        let output_limit = self
            .shared
            .runtime
            .client_output_buffer_limit_bytes
            .load(Ordering::Relaxed);
        let now_ms = self.client.info.created.elapsed().as_millis() as u64;
        self.client
            .info
            .last_active_ms
            .store(now_ms, Ordering::Relaxed);
        loop {
            let parsed =
                self.parser
                    .parse(&self.rbuf[..], &mut self.req, self.client.authenticated);
            match parsed {
                Ok(Parsed::Complete { consumed }) => {
                    let start = Instant::now();
                    let reply_at = self.out.len();
                    let (outcome, lsn, fence) = {
                        let args = self.req.args(&self.rbuf[..consumed]);
                        let mut ctx = Ctx::new(&self.shared, &mut self.client, &mut self.out);
                        let outcome = commands::execute(&mut ctx, args);
                        (outcome, ctx.lsn, ctx.read_fence)
                    };
                    self.rbuf.advance(consumed);
                    self.account(outcome, lsn, fence, start, reply_at);
                    if self.out.len() as u64 > output_limit {
                        tracing::warn!(
                            client = self.client.info.id,
                            bytes = self.out.len(),
                            "closing client over client-output-buffer-limit"
                        );
                        self.shared
                            .metrics
                            .output_limit_disconnects
                            .fetch_add(1, Ordering::Relaxed);
                        return Ok(Next::Close);
                    }
                    if self.client.deferred.is_some() {
                        self.flush().await?;
                        self.complete_deferred().await?;
                    }
                    if self.client.replicate.is_some() {
                        // The +STREAM reply goes out; the socket then carries frames.
                        self.flush().await?;
                        return Ok(Next::Replicate);
                    }
                    if self.client.close_after_reply {
                        self.flush().await?;
                        return Ok(Next::Close);
                    }
                    if self.out.len() >= FLUSH_THRESHOLD_BYTES {
                        self.flush().await?;
                    }
                }
                Ok(Parsed::Empty { consumed }) => self.rbuf.advance(consumed),
                Ok(Parsed::Incomplete) => {
                    let unparsed = self.rbuf.len();
                    self.flush().await?;
                    if self.rbuf.len() == unparsed {
                        return Ok(Next::Read);
                    }
                    // More input came in while the replies were written
                    // (see `write_out`): the client may be waiting for its
                    // replies before it sends anything else, so parse it now.
                }
                Err(e) => {
                    tracing::debug!(client = self.client.info.id, error = %e, "closing client after protocol error");
                    self.shared
                        .metrics
                        .protocol_errors
                        .fetch_add(1, Ordering::Relaxed);
                    self.flush().await?;
                    self.out.error(&format!("ERR {e}"));
                    self.write_out().await?;
                    return Ok(Next::Close);
                }
            }
        }
    }

    fn account(
        &mut self,
        outcome: commands::Outcome,
        lsn: Option<Lsn>,
        fence: Option<Lsn>,
        start: Instant,
        reply_at: usize,
    ) {
        let seq = self.batch.commands;
        self.batch.commands += 1;
        let Some(idx) = outcome.command else {
            self.shared
                .metrics
                .unknown_commands
                .fetch_add(1, Ordering::Relaxed);
            return;
        };
        self.batch.wrote |= lsn.is_some();
        match lsn.or(fence) {
            Some(lsn) => {
                self.batch.lsn = Some(self.batch.lsn.map_or(lsn, |prev| prev.max(lsn)));
                self.batch.waiting.push(Waiting {
                    seq,
                    reply_at,
                    lsn,
                    command: idx,
                    start,
                    failed: outcome.failed,
                });
            }
            None => self
                .shared
                .metrics
                .record(idx, start.elapsed(), outcome.failed),
        }
    }

    /// Waits until everything this batch wrote or read is durable, then sends
    /// the replies. If a write cannot be made durable, every reply from the
    /// first command that depends on non-durable WAL on is replaced by the
    /// error: no client is told OK for a write that may be lost, and no
    /// reader is shown one.
    async fn flush(&mut self) -> io::Result<()> {
        if let Some(lsn) = self.batch.lsn.take() {
            // IMPORTANT: no reply to a write leaves before this returns Ok.
            let wrote = self.batch.wrote;
            let acknowledged = wait_acknowledged(&self.shared, self.client.sync_commit, lsn, wrote);
            let result = if wrote && self.waits_for_standbys() {
                // Standbys may take long, or for ever: a client that hangs
                // up meanwhile ends the wait and frees its connection.
                let _blocked = self.shared.clients.block();
                tokio::select! {
                    biased;
                    r = acknowledged => r,
                    e = hangup(&mut self.stream, &mut self.rbuf, &self.shared) => return Err(e),
                    _ = self.client.info.killed.notified() => return Err(killed()),
                }
            } else {
                acknowledged.await
            };
            if self.batch.wrote {
                // Also when the wait failed: the records are in the log and
                // in the table (a synchronous write that timed out is
                // durable here, only unconfirmed), so WAIT must count the
                // standbys that hold *them*, not an earlier write.
                self.client.last_write_lsn = self.client.last_write_lsn.max(lsn);
            }
            let failed = result.is_err() && self.batch.wrote;
            if let Err(e) = result {
                let durable = self.shared.store.durable_lsn();
                // A command that failed showed no data (a write refused on a
                // poisoned WAL keeps its own error).
                let first = self
                    .batch
                    .waiting
                    .iter()
                    .find(|w| w.lsn > durable && (self.batch.wrote || !w.failed));
                let msg = if self.batch.wrote {
                    self.shared
                        .metrics
                        .durability_failures
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::error!(lsn, error = %e, "writes could not be made durable; replying with errors");
                    // If none is past the durable LSN, the failure is still
                    // the writes': no OK leaves for any of them.
                    format!("ERR {e}")
                } else {
                    tracing::debug!(lsn, error = %e, "a read saw writes that are not durable; replying with errors");
                    format!("ERR this read may have seen writes that are not durable: {e}")
                };
                let first = first.or(self
                    .batch
                    .wrote
                    .then(|| self.batch.waiting.first())
                    .flatten());
                // IMPORTANT: a read that saw a write which never became
                // durable must not show it: once the WAL is poisoned the
                // table holds records the disk may not, and a restart would
                // take them back.
                if let Some((seq, reply_at)) = first.map(|w| (w.seq, w.reply_at)) {
                    self.out.truncate(reply_at);
                    for _ in seq..self.batch.commands {
                        self.out.error(&msg);
                    }
                }
            }
            for w in self.batch.waiting.drain(..) {
                self.shared
                    .metrics
                    .record(w.command, w.start.elapsed(), w.failed || failed);
            }
        }
        self.batch.wrote = false;
        self.batch.commands = 0;
        self.write_out().await
    }

    /// Whether this connection's writes wait for standbys to confirm them.
    fn waits_for_standbys(&self) -> bool {
        self.client
            .sync_commit
            .unwrap_or_else(|| self.shared.replication.sync_commit())
            .waits_for_standbys()
    }

    /// Runs a WAIT or WALSHIP WAITLSN whose reply had to wait, and writes it.
    async fn complete_deferred(&mut self) -> io::Result<()> {
        let Some(d) = self.client.deferred.take() else {
            return Ok(());
        };
        let shared = &*self.shared;
        let _blocked = shared.clients.block();
        let waited = async {
            match d {
                commands::Deferred::Wait {
                    replicas,
                    timeout_ms,
                } => {
                    let lsn = self.client.last_write_lsn;
                    if shared.replication.is_standby() {
                        return Ok(0);
                    }
                    let n = shared
                        .replication
                        .hub
                        .wait_flushed_count(lsn, replicas, timeout_ms)
                        .await;
                    Ok(n as i64)
                }
                commands::Deferred::WaitLsn { lsn, timeout_ms } => {
                    let deadline = Instant::now() + std::time::Duration::from_millis(timeout_ms);
                    loop {
                        let engine = shared.store.engine();
                        let applied = engine.end_lsn().min(engine.durable_lsn());
                        if applied >= lsn {
                            return Ok(applied as i64);
                        }
                        if Instant::now() >= deadline {
                            return Err(format!(
                                "TIMEOUT this node has applied up to LSN {applied}, not yet LSN {lsn}"
                            ));
                        }
                        let mut rx = engine.subscribe_flushed();
                        let _ = tokio::time::timeout(
                            std::time::Duration::from_millis(20),
                            rx.changed(),
                        )
                        .await;
                    }
                }
            }
        };
        let result = tokio::select! {
            biased;
            r = waited => r,
            e = hangup(&mut self.stream, &mut self.rbuf, shared) => return Err(e),
            _ = self.client.info.killed.notified() => return Err(killed()),
        };
        match result {
            Ok(n) => self.out.int(n),
            Err(e) => self.out.error(&e),
        }
        Ok(())
    }

    async fn write_out(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        self.client
            .info
            .output_buffer_bytes
            .store(self.out.len() as u64, Ordering::Relaxed);
        let runtime = &self.shared.runtime;
        let query_limit = runtime
            .client_query_buffer_limit_bytes
            .load(Ordering::Relaxed);
        let output_limit = runtime
            .client_output_buffer_limit_bytes
            .load(Ordering::Relaxed);
        let Connection {
            stream,
            rbuf,
            out,
            shared,
            client,
            ..
        } = self;
        let bytes = out.as_bytes();
        // The socket almost always takes the whole batch at once.
        let mut written = match stream.try_write(bytes) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => return Err(e),
        };
        // Otherwise keep taking the client's input (up to the query buffer
        // limit) while waiting to write, as Redis does: a client that sends a
        // long pipeline before it reads any reply would otherwise block on
        // its send while this side blocks on its write, for ever. What is
        // read here is executed once these replies are out.
        let mut input_open = true;
        while written < bytes.len() {
            // Requests read while replies wait are replies to come: a
            // client that stops reading is closed once what it owes the
            // socket and what it sent meanwhile pass the output limit,
            // instead of buffering requests up to the query limit.
            let owed = (bytes.len() - written + rbuf.len()) as u64;
            if owed > output_limit {
                tracing::warn!(
                    client = client.info.id,
                    bytes = owed,
                    "closing client over client-output-buffer-limit: it does not read its replies"
                );
                shared
                    .metrics
                    .output_limit_disconnects
                    .fetch_add(1, Ordering::Relaxed);
                return Err(io::Error::other(
                    "client-output-buffer-limit: the client does not read its replies",
                ));
            }
            let can_read = input_open && (rbuf.len() as u64) < query_limit;
            let (mut rd, mut wr) = stream.split();
            tokio::select! {
                r = wr.write(&bytes[written..]) => match r? {
                    0 => return Err(io::ErrorKind::WriteZero.into()),
                    n => written += n,
                },
                _ = client.info.killed.notified() => return Err(killed()),
                r = rd.read_buf(rbuf), if can_read => match r? {
                    0 => input_open = false,
                    n => {
                        shared
                            .metrics
                            .net_input_bytes
                            .fetch_add(n as u64, Ordering::Relaxed);
                    }
                },
            }
        }
        self.shared
            .metrics
            .net_output_bytes
            .fetch_add(self.out.len() as u64, Ordering::Relaxed);
        self.out.clear();
        self.client
            .info
            .output_buffer_bytes
            .store(0, Ordering::Relaxed);
        Ok(())
    }
}

/// Waits until `lsn` is acknowledgeable: durable locally under the fsync
/// policy and, for writes, confirmed by the standbys that
/// `synchronous_commit` requires. Both waits run at once, so the local
/// and remote fsyncs overlap.
async fn wait_acknowledged(
    shared: &Shared,
    sync_commit: Option<walship_replication::SynchronousCommit>,
    lsn: Lsn,
    wrote: bool,
) -> Result<(), String> {
    use walship_replication::SynchronousCommit;
    let level = sync_commit.unwrap_or_else(|| shared.replication.sync_commit());
    if wrote && level == SynchronousCommit::Off {
        return Ok(());
    }
    // A lone writer (one client) writes its record itself rather than
    // waking the WAL flusher and being woken by it: one durable write on
    // this worker. Writers waiting meanwhile are counted, so that a
    // second one leaves the flush to the flusher's group commit.
    let _waiting = wrote.then(|| {
        let engine = shared.store.engine();
        engine.flush_if_alone(lsn);
        engine.waiting_writer()
    });
    let local = async {
        shared
            .store
            .wait_durable(lsn)
            .await
            .map_err(|e| e.to_string())
    };
    if !wrote || !level.waits_for_standbys() {
        return local.await;
    }
    let remote = shared.replication.wait_confirmed(lsn, level);
    let (local, remote) = tokio::join!(local, remote);
    local.and(remote)
}

/// The error that ends a connection closed by CLIENT KILL.
fn killed() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "closed by CLIENT KILL")
}

/// Completes when the client hangs up (or its socket fails), with the
/// error that ends the connection; meanwhile keeps what it sends for later,
/// up to the query buffer limit. Raced against a wait for standbys or a
/// WAIT, so that a client that gave up does not keep its connection (and a
/// max-clients slot) until the standbys answer: Redis frees a blocked client
/// when it disconnects.
async fn hangup(stream: &mut TcpStream, rbuf: &mut BytesMut, shared: &Shared) -> io::Error {
    loop {
        let limit = shared
            .runtime
            .client_query_buffer_limit_bytes
            .load(Ordering::Relaxed);
        if rbuf.len() as u64 >= limit {
            return std::future::pending().await;
        }
        if rbuf.capacity() - rbuf.len() < READ_CHUNK_BYTES / 4 {
            rbuf.reserve(READ_CHUNK_BYTES);
        }
        match stream.read_buf(rbuf).await {
            Ok(0) => {
                return io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "the client hung up while its reply waited",
                )
            }
            Ok(n) => {
                shared
                    .metrics
                    .net_input_bytes
                    .fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) => return e,
        }
    }
}

#[cfg(test)]
#[path = "connection_test.rs"]
mod tests;
