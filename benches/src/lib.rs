//! walship benchmarks: criterion micro-benchmarks and the comparison harness.

use bytes::Bytes;
use std::path::Path;
use walship_engine::{Engine, EngineConfig, FsyncPolicy, Mutation};

/// The engine settings the replay benchmarks open a data directory with:
/// no fsync, no automatic checkpoint (so every open replays the whole WAL).
pub fn replay_config(dir: &Path) -> EngineConfig {
    let mut cfg = EngineConfig::new(dir);
    cfg.fsync = FsyncPolicy::Never;
    cfg.checkpoint_every_bytes = 0;
    cfg
}

/// Writes Puts of `value_bytes` values, the `i`-th under `key(i)`, into the
/// data directory `dir` until its WAL holds `wal_bytes`, then closes it.
/// Returns how many records it wrote.
pub fn fill_wal(
    dir: &Path,
    value_bytes: usize,
    wal_bytes: u64,
    key: impl Fn(u64) -> Bytes,
) -> anyhow::Result<u64> {
    let engine = Engine::open(replay_config(dir))?;
    let value = Bytes::from(vec![b'v'; value_bytes]);
    let mut i = 0u64;
    while engine.end_lsn() < wal_bytes {
        engine.write(Mutation::Put {
            key: key(i),
            value: value.clone(),
        })?;
        i += 1;
    }
    engine.shutdown()?;
    Ok(i)
}
