//! State shared by every connection: the store, the settings that CONFIG SET
//! may change, the client registry, metrics, and the shutdown signal.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;

use crate::config::ServerConfig;
use crate::metrics::Metrics;
use crate::store::Store;

/// Everything a connection task needs, behind one `Arc`.
pub struct Shared {
    pub store: Store,
    /// Role, WAL senders or receiver, synchronous-commit settings.
    pub replication: crate::replication::Replication,
    /// Settings as started; the changeable ones are mirrored in `runtime`.
    pub config: ServerConfig,
    pub runtime: RuntimeConfig,
    pub metrics: Metrics,
    pub clients: Clients,
    pub scan_cursors: ScanCursors,
    pub started: Instant,
    pub started_unix_secs: u64,
    /// The port actually bound (differs from `config.port` when it was 0).
    pub port: AtomicU64,
    pub persistence: Persistence,
    shutdown_tx: watch::Sender<bool>,
}

impl Shared {
    /// [`Shared::open`] for tests, where the data directory is known good.
    pub fn new(store: Store, config: ServerConfig) -> Shared {
        Shared::open(store, config).expect("open the replication slots")
    }

    /// The server's state over `store`; fails if the replication slots in
    /// the data directory cannot be read.
    pub fn open(store: Store, config: ServerConfig) -> std::io::Result<Shared> {
        let (shutdown_tx, _) = watch::channel(false);
        let slots = Arc::new(walship_replication::Slots::open(
            &config.data_dir,
            config.max_slot_wal_keep_size_bytes,
        )?);
        store.handle().add_retention(slots.clone());
        let replication = crate::replication::Replication::new(store.clone(), slots, &config);
        Ok(Shared {
            replication,
            store,
            runtime: RuntimeConfig::new(&config),
            port: AtomicU64::new(u64::from(config.port)),
            config,
            metrics: Metrics::new(),
            clients: Clients::default(),
            scan_cursors: ScanCursors::default(),
            started: Instant::now(),
            started_unix_secs: unix_secs(),
            persistence: Persistence::default(),
            shutdown_tx,
        })
    }

    /// Asks the server to shut down gracefully (SIGTERM, SIGINT, SHUTDOWN).
    pub fn trigger_shutdown(&self) {
        self.shutdown_tx.send_replace(true);
    }

    /// A receiver that sees `true` once shutdown has begun.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown_tx.subscribe()
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown_tx.borrow()
    }
}

pub fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Settings that `CONFIG SET` may change while the server runs.
pub struct RuntimeConfig {
    requirepass: RwLock<Option<Arc<str>>>,
    pub max_clients: AtomicU64,
    pub client_output_buffer_limit_bytes: AtomicU64,
    pub client_query_buffer_limit_bytes: AtomicU64,
    pub proto_max_bulk_len_bytes: AtomicU64,
}

impl RuntimeConfig {
    fn new(cfg: &ServerConfig) -> RuntimeConfig {
        RuntimeConfig {
            requirepass: RwLock::new(cfg.requirepass.as_deref().map(Arc::from)),
            max_clients: AtomicU64::new(cfg.max_clients),
            client_output_buffer_limit_bytes: AtomicU64::new(cfg.client_output_buffer_limit_bytes),
            client_query_buffer_limit_bytes: AtomicU64::new(cfg.client_query_buffer_limit_bytes),
            proto_max_bulk_len_bytes: AtomicU64::new(cfg.proto_max_bulk_len_bytes),
        }
    }

    pub fn requirepass(&self) -> Option<Arc<str>> {
        self.requirepass.read().clone()
    }

    pub fn set_requirepass(&self, pass: Option<&str>) {
        *self.requirepass.write() = pass.filter(|p| !p.is_empty()).map(Arc::from);
    }
}

/// Save (checkpoint) bookkeeping for SAVE, BGSAVE, LASTSAVE and INFO.
#[derive(Default)]
pub struct Persistence {
    pub bgsave_in_progress: AtomicBool,
    pub last_save_unix_secs: AtomicU64,
    /// 1 = ok, 2 = failed, 0 = never ran.
    pub last_save_status: AtomicU8,
}

/// One client as seen by `CLIENT LIST` and `INFO clients`.
pub struct ClientInfo {
    pub id: u64,
    pub addr: SocketAddr,
    pub laddr: SocketAddr,
    pub created: Instant,
    pub name: Mutex<Option<String>>,
    pub lib_name: Mutex<Option<String>>,
    pub lib_ver: Mutex<Option<String>>,
    /// Milliseconds since `created` of the last command.
    pub last_active_ms: AtomicU64,
    /// Index into the command table of the last command (`usize::MAX`: none).
    pub last_command: AtomicUsize,
    pub resp: AtomicU8,
    pub query_buffer_bytes: AtomicU64,
    pub output_buffer_bytes: AtomicU64,
    /// The connection carries a standby's replication stream.
    pub is_replica: AtomicBool,
    /// CLIENT KILL: the connection closes at the next chance (also while a
    /// reply waits for standbys).
    pub killed: tokio::sync::Notify,
}

/// The registry of connected clients.
#[derive(Default)]
pub struct Clients {
    next_id: AtomicU64,
    map: Mutex<HashMap<u64, Arc<ClientInfo>>>,
    pub connected: AtomicU64,
    /// Clients waiting in WAIT, WALSHIP WAITLSN or for their standbys
    /// (INFO's `blocked_clients`).
    pub blocked: AtomicU64,
}

/// Counts a client in [`Clients::blocked`] until dropped.
pub struct Blocked<'a>(&'a AtomicU64);

impl Drop for Blocked<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Clients {
    /// Counts the caller as blocked until the guard is dropped.
    pub fn block(&self) -> Blocked<'_> {
        self.blocked.fetch_add(1, Ordering::Relaxed);
        Blocked(&self.blocked)
    }

    /// Registers a client and hands out its id (ids start at 1 and never repeat).
    pub fn register(&self, addr: SocketAddr, laddr: SocketAddr) -> Arc<ClientInfo> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let info = Arc::new(ClientInfo {
            id,
            addr,
            laddr,
            created: Instant::now(),
            name: Mutex::new(None),
            lib_name: Mutex::new(None),
            lib_ver: Mutex::new(None),
            last_active_ms: AtomicU64::new(0),
            last_command: AtomicUsize::new(usize::MAX),
            resp: AtomicU8::new(2),
            query_buffer_bytes: AtomicU64::new(0),
            output_buffer_bytes: AtomicU64::new(0),
            is_replica: AtomicBool::new(false),
            killed: tokio::sync::Notify::new(),
        });
        self.map.lock().insert(id, info.clone());
        info
    }

    pub fn unregister(&self, id: u64) {
        self.map.lock().remove(&id);
    }

    /// A snapshot of all clients, ordered by id.
    pub fn list(&self) -> Vec<Arc<ClientInfo>> {
        let mut v: Vec<_> = self.map.lock().values().cloned().collect();
        v.sort_by_key(|c| c.id);
        v
    }
}

/// SCAN cursors. Redis clients (redis-cli, the `redis` crate) parse the cursor
/// as an unsigned integer, but the engine resumes a scan after a key; this
/// table maps the numbers handed out to the keys they stand for. It is
/// shared by all connections (pooled clients continue a scan on another
/// connection) and bounded. A cursor a scan has continued from is
/// *superseded*: it is kept (a client may retry a call) but forgotten before
/// any other, so the bound is on scans in progress, not on SCAN calls. A
/// cursor lives on the node that issued it, until it restarts.
pub struct ScanCursors {
    inner: Mutex<CursorTable>,
}

struct CursorTable {
    by_id: HashMap<u64, Bytes>,
    /// Every cursor handed out, oldest first; may hold ids already forgotten.
    order: VecDeque<u64>,
    /// Cursors a scan continued from, oldest first: forgotten first.
    superseded: VecDeque<u64>,
    next: u64,
}

impl CursorTable {
    fn forget_one(&mut self) {
        for queue in [&mut self.superseded, &mut self.order] {
            while let Some(id) = queue.pop_front() {
                if self.by_id.remove(&id).is_some() {
                    return;
                }
            }
        }
    }
}

impl ScanCursors {
    /// How many cursors are remembered at once: scans in progress, plus
    /// superseded cursors while there is room.
    pub const CAPACITY: usize = 16 * 1024;

    /// Remembers `after_key` and returns the cursor number for it (never 0).
    /// `continued_from` is the cursor this call resumed from, if any: it is
    /// now superseded.
    pub fn insert(&self, after_key: Bytes, continued_from: Option<u64>) -> u64 {
        let mut t = self.inner.lock();
        if let Some(old) = continued_from.filter(|c| t.by_id.contains_key(c)) {
            t.superseded.push_back(old);
        }
        while t.by_id.len() >= Self::CAPACITY {
            t.forget_one();
        }
        // Ids forgotten through `superseded` stay in `order` until passed:
        // drop them once they are half of it, so it stays bounded.
        if t.order.len() >= 2 * Self::CAPACITY {
            let CursorTable { by_id, order, .. } = &mut *t;
            order.retain(|id| by_id.contains_key(id));
        }
        // Random-looking, non-zero, fits in i64 so signed parsers are happy too.
        t.next = t.next.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let id = (t.next >> 1).max(1);
        t.by_id.insert(id, after_key);
        t.order.push_back(id);
        id
    }

    /// The key a cursor resumes after, if the cursor is known.
    pub fn get(&self, id: u64) -> Option<Bytes> {
        self.inner.lock().by_id.get(&id).cloned()
    }
}

impl Default for ScanCursors {
    fn default() -> Self {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        ScanCursors {
            inner: Mutex::new(CursorTable {
                by_id: HashMap::new(),
                order: VecDeque::new(),
                superseded: VecDeque::new(),
                next: seed,
            }),
        }
    }
}
