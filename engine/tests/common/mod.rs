//! Helpers shared by the engine's integration tests.
#![allow(dead_code)]

use bytes::Bytes;
use std::sync::Arc;
use walship_engine::{Engine, EngineConfig, FsyncPolicy, SimStorage};

/// The seed for a seeded test: `WALSHIP_SEED` if set, else `default`. Printed so a failure replays.
pub fn seed(test: &str, default: u64) -> u64 {
    let seed = std::env::var("WALSHIP_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    eprintln!("{test}: seed {seed} (rerun with WALSHIP_SEED={seed})");
    seed
}

/// A config on the simulator with small segments, so tests cross segment boundaries.
pub fn sim_config(storage: &SimStorage) -> EngineConfig {
    let mut cfg = EngineConfig::new("/data");
    cfg.storage = Arc::new(storage.clone());
    cfg.segment_size_bytes = 8192;
    cfg.checkpoint_every_bytes = 0;
    cfg.fsync = FsyncPolicy::Always;
    cfg
}

/// A config on real files in `dir`, with small segments.
pub fn fs_config(dir: &std::path::Path) -> EngineConfig {
    let mut cfg = EngineConfig::new(dir);
    cfg.segment_size_bytes = 16384;
    cfg.checkpoint_every_bytes = 0;
    cfg
}

pub fn put(engine: &Engine, key: &str, value: &str) -> u64 {
    let lsn = engine
        .write(walship_engine::Mutation::Put {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
        })
        .expect("write accepted");
    engine.wait_durable_blocking(lsn).expect("write durable");
    lsn
}

pub fn get(engine: &Engine, key: &str) -> Option<String> {
    engine
        .get(key.as_bytes())
        .map(|v| String::from_utf8(v.to_vec()).expect("utf-8 value"))
}

/// Length of the prefix of `chunk` (WAL read at `start`) made of whole
/// records, as the WAL receiver cuts what it appends.
pub fn whole_records(start: u64, chunk: &Bytes) -> usize {
    let mut off = 0;
    while let walship_engine::wal::record::Parsed::Record { len, .. } =
        walship_engine::wal::record::parse(start + off as u64, &chunk.slice(off..))
    {
        off += len;
    }
    off
}
