//! The server's side of replication: which role this node plays, the hub
//! (WAL senders) when it is a primary, the WAL receiver when it is a
//! standby, and the synchronous-commit settings writes are acknowledged by.
//!
//! Roles change at runtime: `REPLICAOF host port` turns a node into a
//! standby of `host:port`; `REPLICAOF NO ONE` promotes a standby (a new
//! epoch starts and it takes writes).

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
use tokio::sync::watch;
use walship_replication::{
    Hub, Receiver, ReceiverConfig, RewindCounters, Slots, SyncStandbyNames, SynchronousCommit,
};

use crate::store::{Lsn, Store};

/// The node's current role.
#[derive(Clone)]
pub enum Role {
    /// Takes writes and streams WAL to standbys.
    Primary,
    /// Replays a primary's WAL and serves reads.
    Standby {
        /// `host:port` of the primary.
        primary: String,
        /// The WAL receiver.
        receiver: Arc<Receiver>,
        /// Stops the receiver.
        stop: watch::Sender<bool>,
    },
}

impl Role {
    /// Asks the WAL receiver, if this is a standby, to stop; returns it.
    fn stop_receiver(&self) -> Option<Arc<Receiver>> {
        match self {
            Role::Standby { stop, receiver, .. } => {
                stop.send_replace(true);
                Some(receiver.clone())
            }
            Role::Primary => None,
        }
    }
}

/// Replication state shared by every connection.
pub struct Replication {
    pub hub: Arc<Hub>,
    pub slots: Arc<Slots>,
    role: RwLock<Role>,
    /// The default `synchronous_commit`, as [`SynchronousCommit`] index.
    sync_commit: AtomicU8,
    /// 0 = wait for ever (PostgreSQL's behaviour).
    pub sync_timeout_ms: AtomicU64,
    /// On a standby: how long the primary may be silent; 0 = for ever.
    pub wal_receiver_timeout_ms: Arc<AtomicU64>,
    /// This node's name, sent to primaries.
    pub name: String,
    /// Password to authenticate to a primary with (`CONFIG SET masterauth`).
    password: RwLock<Option<String>>,
    store: Store,
    /// Epoch changes started by this node (promotions and primary starts).
    pub promotions: AtomicU64,
    /// Rewinds this node did, across every receiver it ran.
    pub rewinds: Arc<RewindCounters>,
}

fn level_index(level: SynchronousCommit) -> u8 {
    SynchronousCommit::ALL
        .iter()
        .position(|l| *l == level)
        .expect("a known level") as u8
}

impl Replication {
    /// The replication state of a node started with `config` (its
    /// synchronous-standby names are validated when the config is built).
    pub fn new(
        store: Store,
        slots: Arc<Slots>,
        config: &crate::config::ServerConfig,
    ) -> Replication {
        let sync_names = SyncStandbyNames::parse(&config.synchronous_standby_names)
            .expect("validated with the configuration");
        let hub = Hub::new(store.handle().clone(), slots.clone(), sync_names);
        hub.set_sender_timeout_ms(config.wal_sender_timeout_ms);
        Replication {
            hub,
            slots,
            role: RwLock::new(Role::Primary),
            sync_commit: AtomicU8::new(level_index(config.synchronous_commit)),
            sync_timeout_ms: AtomicU64::new(config.synchronous_commit_timeout_ms),
            wal_receiver_timeout_ms: Arc::new(AtomicU64::new(config.wal_receiver_timeout_ms)),
            name: config.name.clone(),
            password: RwLock::new(
                config
                    .replicate_password
                    .clone()
                    .or_else(|| config.requirepass.clone()),
            ),
            store,
            promotions: AtomicU64::new(0),
            rewinds: Arc::default(),
        }
    }

    pub fn role(&self) -> Role {
        self.role.read().clone()
    }

    pub fn is_standby(&self) -> bool {
        matches!(*self.role.read(), Role::Standby { .. })
    }

    /// Why this node cannot serve reads or be promoted yet, if it cannot:
    /// a standby that has not received its first base backup (its data
    /// directory was empty: it holds no state the cluster ever had, only an
    /// empty one of its own), or one still short of its base backup's
    /// consistency point.
    pub fn not_consistent(&self) -> Option<&'static str> {
        // Runs before every read and write: atomics only, and the role's
        // lock only on a node that never held any WAL (written LSN 0).
        let engine = self.store.handle().load();
        if engine.written_lsn() == 0 && self.is_standby() {
            Some("has not received a base backup from its primary yet")
        } else if !engine.is_consistent() {
            Some("is replaying a base backup and is not consistent yet")
        } else {
            None
        }
    }

    pub fn is_consistent(&self) -> bool {
        self.not_consistent().is_none()
    }

    /// The password this node authenticates to a primary with.
    pub fn password(&self) -> Option<String> {
        self.password.read().clone()
    }

    /// Sets the password for the primary (Redis's `masterauth`). A standby
    /// whose link is down (refused, say, after its primary's `requirepass`
    /// changed) reconnects with it at once; one streaming uses it from its
    /// next connection.
    pub fn set_password(&self, password: Option<String>) -> anyhow::Result<()> {
        *self.password.write() = password;
        if let Role::Standby {
            primary, receiver, ..
        } = self.role()
        {
            if !receiver.status().link_up {
                self.follow(primary, receiver.config().listening_port)?;
            }
        }
        Ok(())
    }

    pub fn receiver(&self) -> Option<Arc<Receiver>> {
        match &*self.role.read() {
            Role::Standby { receiver, .. } => Some(receiver.clone()),
            Role::Primary => None,
        }
    }

    pub fn sync_commit(&self) -> SynchronousCommit {
        SynchronousCommit::ALL[self.sync_commit.load(Ordering::Relaxed) as usize]
    }

    pub fn set_sync_commit(&self, level: SynchronousCommit) {
        self.sync_commit
            .store(level_index(level), Ordering::Relaxed);
    }

    /// Becomes (or re-points) a standby of `primary` (`host:port`).
    pub fn follow(&self, primary: String, listening_port: u16) -> anyhow::Result<()> {
        // The WAL receiver runs on a thread and event loop of its own, as
        // PostgreSQL's walreceiver is a process of its own: its read →
        // append → report cycle then never hops between the worker threads
        // that serve clients (a standby with one worker spent 15 µs of CPU
        // per replicated SET instead of 18; docs/profiling.md).
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| anyhow::anyhow!("cannot start the WAL receiver's event loop: {e}"))?;
        let mut role = self.role.write();
        role.stop_receiver();
        // A primary that becomes a standby stops streaming to its own
        // standbys; being re-pointed also lifts a fence.
        self.hub.stop();
        self.hub.clear_fence();
        self.hub.drop_all_slots();
        let receiver = Receiver::new(
            self.store.handle().clone(),
            ReceiverConfig {
                primary: primary.clone(),
                name: self.name.clone(),
                password: self.password(),
                listening_port,
                rewinds: self.rewinds.clone(),
                primary_timeout_ms: self.wal_receiver_timeout_ms.clone(),
            },
        );
        let (stop, stop_rx) = watch::channel(false);
        let run = receiver.clone().run(stop_rx);
        std::thread::Builder::new()
            .name("wal-receiver".into())
            .spawn(move || runtime.block_on(run))
            .map_err(|e| anyhow::anyhow!("cannot start the WAL receiver thread: {e}"))?;
        tracing::info!(%primary, name = %self.name, "replicating from the primary");
        *role = Role::Standby {
            primary,
            receiver,
            stop,
        };
        Ok(())
    }

    /// Starts a new epoch as a primary: at start-up of a primary (so a
    /// standby holding bytes this node lost in a crash is seen as diverged)
    /// and at promotion. Returns the new epoch and the LSN it starts at.
    pub async fn begin_primary_epoch(&self) -> anyhow::Result<(u64, Lsn)> {
        let engine = self.store.engine();
        // Above any epoch a standby showed us, so a deposed node promoted
        // again by the operator really is the newest.
        let floor = self.hub.fenced_by().unwrap_or(0);
        let (epoch, start, end) = engine.begin_epoch_above(floor)?;
        engine.wait_durable(end).await?;
        self.hub.clear_fence();
        self.promotions.fetch_add(1, Ordering::Relaxed);
        Ok((epoch, start))
    }

    /// The newer epoch this primary learned of, if it was deposed; writes
    /// are refused while it is set.
    pub fn fenced_by(&self) -> Option<u64> {
        // The atomic first: this runs on every write.
        self.hub.fenced_by().filter(|_| !self.is_standby())
    }

    /// `REPLICAOF NO ONE`: stops replicating and takes writes in a new epoch.
    pub async fn promote(&self) -> anyhow::Result<(u64, Lsn)> {
        let receiver = {
            let mut role = self.role.write();
            let receiver = match &*role {
                Role::Standby { receiver, .. }
                    if matches!(receiver.status().state, "backup" | "rewind") =>
                {
                    anyhow::bail!(
                        "this standby is receiving a base backup or rewinding; it can be promoted once it has caught up with its primary"
                    );
                }
                other => other.stop_receiver(),
            };
            *role = Role::Primary;
            receiver
        };
        // The new epoch must begin after the last record taken from the old
        // primary: wait until the receiver has really stopped appending.
        if let Some(receiver) = receiver {
            // A standby still short of its base backup's consistency point
            // holds a state no primary ever had: taking writes on it would
            // lose acknowledged ones. It goes back to replicating.
            let refusal = if !wait_stopped(&receiver).await {
                Some("its WAL receiver did not stop within 10 s")
            } else if self.store.end_lsn() == 0 {
                Some("it has not received a base backup from its primary yet, so it holds no state of the cluster")
            } else if !self.store.is_consistent() {
                Some("it has not reached a consistent state yet (its base backup still needs WAL from the primary)")
            } else {
                None
            };
            if let Some(why) = refusal {
                let cfg = receiver.config();
                self.follow(cfg.primary.clone(), cfg.listening_port)?;
                anyhow::bail!(
                    "this standby cannot be promoted: {why}; it goes on replicating from {}",
                    cfg.primary
                );
            }
        }
        self.hub.resume();
        let (epoch, lsn) = self.begin_primary_epoch().await?;
        tracing::info!(epoch, lsn, "promoted to primary");
        let names = self.hub.sync_names();
        if names.is_empty() {
            tracing::warn!("promoted with synchronous_standby_names empty: writes are acknowledged without any standby; CONFIG SET synchronous_standby_names (and the config file) if they should wait for one");
        } else {
            tracing::info!(synchronous_standby_names = %names, "writes wait for these standbys once they connect");
        }
        Ok((epoch, lsn))
    }

    /// Stops the WAL receiver, if this node is a standby, and waits (up to
    /// 10 s) until it stopped appending. The role stays: at shutdown, the
    /// engine must not be closed under a receiver still writing to it.
    pub async fn stop_receiving(&self) {
        let Some(receiver) = self.role.read().stop_receiver() else {
            return;
        };
        if !wait_stopped(&receiver).await {
            tracing::warn!("the WAL receiver did not stop within 10 s; closing the engine anyway");
        }
    }

    /// Waits until the standbys required at `level` confirmed `lsn`.
    pub async fn wait_confirmed(&self, lsn: Lsn, level: SynchronousCommit) -> Result<(), String> {
        if self.is_standby() {
            return Ok(());
        }
        let timeout = self.sync_timeout_ms.load(Ordering::Relaxed);
        self.hub
            .wait_confirmed(lsn, level, timeout)
            .await
            .map_err(|e| {
                local_state_said_plainly(e.to_string(), self.store.handle().load().fsync_policy())
            })
    }
}

/// A synchronous wait's error says the write "is durable locally", true
/// under `--fsync always` (the write's own fsync is awaited beside it); under
/// `interval` and `never` the write is only in the OS's hands here, and the
/// error says so.
fn local_state_said_plainly(message: String, policy: walship_engine::FsyncPolicy) -> String {
    use walship_engine::FsyncPolicy;
    if policy == FsyncPolicy::Always {
        return message;
    }
    message.replacen(
        "is durable locally (LSN ",
        &format!("is stored locally, not necessarily fsynced (--fsync {policy}; LSN "),
        1,
    )
}

/// Whether `host:port` names this node, `port` being its own client port:
/// `host` resolves to a loopback or unspecified address, or to `local` (the
/// address a client reached it at, or the one it binds). Resolved only
/// when the port is this node's, so naming another host costs no lookup.
pub fn is_own_address(host: &str, port: u16, local: std::net::IpAddr) -> bool {
    use std::net::ToSocketAddrs;
    (host, port).to_socket_addrs().is_ok_and(|mut addrs| {
        addrs.any(|a| a.ip().is_loopback() || a.ip().is_unspecified() || a.ip() == local)
    })
}

/// Waits (up to 10 s) until `receiver` reports that it stopped; false if it
/// did not.
async fn wait_stopped(receiver: &Receiver) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while receiver.status().state != "stopped" {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::local_state_said_plainly;
    use walship_engine::FsyncPolicy;

    #[test]
    fn a_sync_wait_error_says_what_the_fsync_policy_made_of_the_write() {
        let e = "write is durable locally (LSN 59) but was not confirmed".to_string();
        assert_eq!(local_state_said_plainly(e.clone(), FsyncPolicy::Always), e);
        let never = local_state_said_plainly(e.clone(), FsyncPolicy::Never);
        assert_eq!(
            never,
            "write is stored locally, not necessarily fsynced (--fsync never; LSN 59) but was not confirmed"
        );
        let interval = local_state_said_plainly(e, FsyncPolicy::IntervalMs(200));
        assert!(
            interval.contains("(--fsync interval:200; LSN 59)") && !interval.contains("durable"),
            "{interval}"
        );
    }
}
