//! Graceful shutdown on SIGTERM and SIGINT.
//!
//! The first signal starts a graceful stop: the listener closes, idle
//! connections close, requests already read finish (their writes become
//! durable and their replies are sent), then the engine shuts down and the
//! process exits 0. A second signal exits at once; acknowledged writes are
//! durable anyway, so only in-flight requests are lost.

use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};

use crate::state::Shared;

/// How long in-flight requests get to finish before the server stops anyway.
pub const DRAIN_TIMEOUT_SECS: u64 = 10;

/// Installs the signal handlers. Must be called inside the runtime.
pub fn install(shared: Arc<Shared>) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!("received {name}: stopping (finishing in-flight requests, then making everything durable)");
        shared.trigger_shutdown();
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::warn!("received {name} again: exiting immediately");
        std::process::exit(1);
    });
    Ok(())
}
