//! A swappable engine: a standby replaces its whole state when it installs
//! a base backup, so everything that serves it holds this handle, not an
//! `Engine`.

use arc_swap::ArcSwap;
use parking_lot::{Mutex, RwLock};
use std::sync::Arc;
use walship_engine::rewind::Rewound;
use walship_engine::{Engine, EngineConfig, EngineError, Lsn, WalRetention};

/// What [`EngineHandle::rewind`] did.
#[derive(Debug, Clone)]
pub enum RewindOutcome {
    /// The WAL did not go past the fork: nothing to do.
    NotNeeded,
    /// The WAL was cut at the fork and the state rebuilt.
    Rewound(Rewound),
    /// The bytes past the fork were saved, but the node cannot cut its own
    /// log there (the reason says why): it needs a base backup.
    NeedsBaseBackup {
        /// The saved copy.
        saved: Rewound,
        /// Why a local rewind is impossible.
        reason: String,
    },
}

/// The engine currently serving this node.
#[derive(Clone)]
pub struct EngineHandle {
    inner: Arc<ArcSwap<Engine>>,
    /// Serialises reopens.
    reopening: Arc<Mutex<()>>,
    config: EngineConfig,
    retention: Arc<RwLock<Vec<Arc<dyn WalRetention>>>>,
}

impl EngineHandle {
    /// Wraps an open engine; `config` reopens it after a base backup.
    pub fn new(engine: Engine, config: EngineConfig) -> Self {
        EngineHandle {
            inner: Arc::new(ArcSwap::from_pointee(engine)),
            reopening: Arc::default(),
            config,
            retention: Arc::default(),
        }
    }

    /// The current engine (cheap clone).
    pub fn get(&self) -> Engine {
        Engine::clone(&self.inner.load())
    }

    /// The current engine without touching a reference count: the per-request path.
    pub fn load(&self) -> arc_swap::Guard<Arc<Engine>> {
        self.inner.load()
    }

    /// Shuts the current engine down and opens the data directory again,
    /// which installs a staged base backup.
    pub fn reopen(&self) -> Result<Engine, EngineError> {
        let _one_at_a_time = self.reopening.lock();
        self.inner.load().shutdown()?;
        let engine = Engine::open(self.config.clone())?;
        self.install(engine.clone());
        Ok(engine)
    }

    /// Rewinds this node's WAL to `fork_lsn` (see [`walship_engine::rewind`]):
    /// saves what lies past it under `<data-dir>/rewound/`, and when the
    /// engine can cut its log there itself, closes it, cuts, and reopens.
    /// Otherwise the saved copy is made and [`RewindOutcome::NeedsBaseBackup`]
    /// says why the node must be re-seeded instead.
    pub fn rewind(&self, fork_lsn: Lsn) -> Result<RewindOutcome, EngineError> {
        let _one_at_a_time = self.reopening.lock();
        let engine = self.get();
        if fork_lsn >= engine.end_lsn() {
            return Ok(RewindOutcome::NotNeeded);
        }
        // Nothing else appends on a standby; shut down first so no
        // checkpoint can start past the fork while we decide.
        engine.shutdown()?;
        let saved = engine.save_wal_past(fork_lsn)?;
        if let Err(reason) = engine.can_rewind_to(fork_lsn) {
            self.install(Engine::open(self.config.clone())?);
            return Ok(RewindOutcome::NeedsBaseBackup { saved, reason });
        }
        walship_engine::rewind::truncate_to(
            &*self.config.storage,
            &self.config.data_dir,
            fork_lsn,
        )?;
        self.install(Engine::open(self.config.clone())?);
        Ok(RewindOutcome::Rewound(saved))
    }

    fn install(&self, engine: Engine) {
        for hook in self.retention.read().iter() {
            engine.add_retention(hook.clone());
        }
        self.inner.store(Arc::new(engine));
    }

    /// Registers a WAL retention hook on the engine, now and after every reopen.
    pub fn add_retention(&self, hook: Arc<dyn WalRetention>) {
        self.retention.write().push(hook.clone());
        self.get().add_retention(hook);
    }

    /// The engine settings.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }
}
