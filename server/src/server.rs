//! Starting, running and stopping a server: lock the data directory, open
//! (recover) the engine, listen, accept clients up to `max-clients`, and on
//! shutdown drain connections and make everything durable.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::config::ServerConfig;
use crate::lock::DataDirLock;
use crate::state::Shared;
use crate::store::Store;

/// A server that is listening and ready; [`Server::run`] serves it.
pub struct Server {
    shared: Arc<Shared>,
    listener: TcpListener,
    admin: Option<TcpListener>,
    _lock: DataDirLock,
}

impl Server {
    /// Locks the data directory, recovers the engine and binds the ports.
    pub async fn start(cfg: ServerConfig) -> anyhow::Result<Server> {
        let lock = DataDirLock::acquire(&cfg.data_dir)?;
        let open_cfg = cfg.clone();
        let store = tokio::task::spawn_blocking(move || Store::open(&open_cfg))
            .await
            .context("engine open task failed")??;
        let rec = store.recovery_info();
        tracing::info!(
            data_dir = %cfg.data_dir.display(),
            recovered_lsn = store.end_lsn(),
            keys = store.len(),
            records_replayed = rec.records,
            checkpoint = %rec.checkpoint.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "none".into()),
            recovery_ms = rec.duration.as_millis() as u64,
            fsync = %cfg.fsync,
            "storage engine opened"
        );
        let addr = cfg.listen_addr();
        let listener = listen(&addr).await.with_context(|| {
            format!("cannot listen on {addr} (is another server using the port?)")
        })?;
        let admin = match cfg.admin_port {
            Some(port) => {
                let admin_addr = if cfg.bind.contains(':') {
                    format!("[{}]:{port}", cfg.bind.trim_matches(['[', ']']))
                } else {
                    format!("{}:{port}", cfg.bind)
                };
                Some(
                    TcpListener::bind(&admin_addr)
                        .await
                        .with_context(|| format!("cannot listen on admin address {admin_addr}"))?,
                )
            }
            None => None,
        };
        let shared =
            Arc::new(Shared::open(store, cfg).context("cannot open the replication slots")?);
        let local = listener.local_addr()?;
        shared
            .port
            .store(u64::from(local.port()), Ordering::Relaxed);
        match shared.config.replicate_from.clone() {
            Some(primary) => shared.replication.follow(primary, local.port())?,
            None => {
                // IMPORTANT: a primary starts a new epoch every time it starts,
                // so a standby holding WAL this node lost in a crash is seen
                // as diverged instead of silently mixing two histories.
                let (epoch, lsn) = shared.replication.begin_primary_epoch().await?;
                tracing::info!(epoch, lsn, "serving as primary");
            }
        }
        Ok(Server {
            shared,
            listener,
            admin,
            _lock: lock,
        })
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    pub fn admin_addr(&self) -> Option<std::net::SocketAddr> {
        self.admin.as_ref().and_then(|a| a.local_addr().ok())
    }

    /// Serves until shutdown is triggered, then drains and closes the engine.
    pub async fn run(self) -> anyhow::Result<()> {
        let Server {
            shared,
            listener,
            admin,
            _lock,
        } = self;
        let lock = Arc::new(_lock);
        let lock_watch = {
            let lock = lock.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(crate::lock::LOCK_CHECK_INTERVAL);
                loop {
                    tick.tick().await;
                    if let Err(why) = lock.check() {
                        // IMPORTANT: exit without touching the data directory:
                        // another server may own it now, and a graceful
                        // shutdown (final fsyncs, a checkpoint) would write
                        // into its files. What was acknowledged is on disk.
                        tracing::error!("{why}: another server may be using this data directory; exiting at once to protect the WAL");
                        eprintln!("walship: {why}: another server may be using this data directory; exiting at once to protect the WAL");
                        std::process::exit(1);
                    }
                }
            })
        };
        let admin_task = admin.map(|l| {
            tracing::info!(addr = %l.local_addr().map(|a| a.to_string()).unwrap_or_default(), "admin HTTP listening (/metrics, /health, /status)");
            tokio::spawn(crate::admin::serve(shared.clone(), l))
        });
        tracing::info!(
            addr = %listener.local_addr()?,
            data_dir = %shared.config.data_dir.display(),
            "walship ready to accept connections"
        );

        // Every connection task holds a sender; when all are gone, recv() ends.
        let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
        let mut shutdown = shared.shutdown_signal();
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = shutdown.changed() => break,
            };
            let (mut stream, addr) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            let max = shared.runtime.max_clients.load(Ordering::Relaxed);
            if shared.clients.connected.fetch_add(1, Ordering::AcqRel) >= max {
                shared.clients.connected.fetch_sub(1, Ordering::AcqRel);
                shared
                    .metrics
                    .rejected_connections
                    .fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    let _ = stream
                        .write_all(b"-ERR max number of clients reached\r\n")
                        .await;
                });
                continue;
            }
            shared
                .metrics
                .connections_total
                .fetch_add(1, Ordering::Relaxed);
            let _ = stream.set_nodelay(true);
            let laddr = stream.local_addr().unwrap_or(addr);
            let info = shared.clients.register(addr, laddr);
            let shared2 = shared.clone();
            let alive = alive_tx.clone();
            let signal = shared.shutdown_signal();
            tokio::spawn(async move {
                let replication = crate::connection::serve(shared2, stream, info, signal).await;
                // A shutdown waits for clients, not for replication streams
                // (which end with the process): a standby keeps receiving
                // while the clients drain.
                drop(alive);
                if let Some(r) = replication {
                    r.run().await;
                }
            });
        }

        drop(listener);
        drop(alive_tx);
        tracing::info!(
            clients = shared.clients.connected.load(Ordering::Relaxed),
            "stopped accepting; draining connections"
        );
        let drain = Duration::from_secs(crate::shutdown::DRAIN_TIMEOUT_SECS);
        if tokio::time::timeout(drain, alive_rx.recv()).await.is_err() {
            // Writes still waiting for synchronous standbys that do not
            // answer are told so (durable here, maybe not replicated), as
            // PostgreSQL cancels such waits at shutdown, rather than having
            // their connections closed without a reply.
            shared.replication.hub.shut_down();
            let replies = Duration::from_secs(1);
            if tokio::time::timeout(replies, alive_rx.recv())
                .await
                .is_err()
            {
                tracing::warn!(
                    "connections still busy after {:?}; closing anyway",
                    drain + replies
                );
            }
        }
        if let Some(t) = admin_task {
            t.abort();
        }
        shared.replication.stop_receiving().await;
        let store = shared.store.clone();
        tokio::task::spawn_blocking(move || store.shutdown())
            .await
            .context("engine shutdown task failed")?
            .context("engine shutdown failed")?;
        tracing::info!(
            lsn = shared.store.end_lsn(),
            "engine shut down cleanly; everything is durable"
        );
        lock_watch.abort();
        Ok(())
    }
}

/// Raises the open-file limit towards what `max-clients` needs (as Redis
/// does), so a busy server gets EMFILE only when the OS really refuses.
fn raise_fd_limit(max_clients: u64) {
    // Connections, plus WAL segments, checkpoints, listeners and slack.
    let wanted = max_clients.saturating_add(128);
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0
            || lim.rlim_cur >= wanted as libc::rlim_t
        {
            return;
        }
        let target = (wanted as libc::rlim_t).min(lim.rlim_max);
        let old = lim.rlim_cur;
        lim.rlim_cur = target;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
            tracing::debug!(from = old, to = target, "raised the open-file limit");
        }
        if (target as u64) < wanted {
            tracing::warn!(
                limit = target,
                max_clients,
                "the open-file limit is below what max-clients needs; clients may be refused early"
            );
        }
    }
}

/// `walship server`: start, serve until SIGTERM/SIGINT/SHUTDOWN, stop.
pub async fn run(cfg: ServerConfig) -> anyhow::Result<()> {
    raise_fd_limit(cfg.max_clients);
    if cfg.requirepass.is_none()
        && cfg.bind != "127.0.0.1"
        && cfg.bind != "localhost"
        && cfg.bind != "::1"
    {
        tracing::warn!(bind = %cfg.bind, "listening beyond loopback without requirepass: anyone who can reach the port can read and write");
    }
    let server = Server::start(cfg).await?;
    crate::shutdown::install(server.shared().clone())?;
    server.run().await
}

/// Redis's default `tcp-backlog`: a burst of new connections (a pool
/// reconnecting after a failover) queues in the kernel instead of being
/// dropped and retried a second later, as with the usual 128.
const LISTEN_BACKLOG: u32 = 511;

/// A listening socket on `addr` (`host:port`) with [`LISTEN_BACKLOG`].
async fn listen(addr: &str) -> std::io::Result<TcpListener> {
    let mut last = None;
    for a in tokio::net::lookup_host(addr).await? {
        let socket = if a.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        match socket.bind(a).and_then(|()| socket.listen(LISTEN_BACKLOG)) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{addr} resolves to no address"),
        )
    }))
}
