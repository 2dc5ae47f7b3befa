//! A swappable engine: a standby replaces its whole state when it installs
//! a base backup, so everything that serves it holds this handle, not an
//! `Engine`.

use arc_swap::ArcSwap;
use parking_lot::{Mutex, RwLock};
use std::sync::Arc;
use walship_engine::{Engine, EngineConfig, EngineError, WalRetention};

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
        for hook in self.retention.read().iter() {
            engine.add_retention(hook.clone());
        }
        self.inner.store(Arc::new(engine.clone()));
        Ok(engine)
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
