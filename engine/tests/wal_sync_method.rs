//! Both WAL sync methods on real files: what the flusher keeps in memory for
//! senders, what is in the segment files and what recovery finds agree.

mod common;

use common::{fs_config, get, put, seed, whole_records};
use rand::{Rng, SeedableRng};
use walship_engine::{Engine, EngineConfig, WalSyncMethod};

fn config(dir: &std::path::Path, method: WalSyncMethod) -> EngineConfig {
    let mut cfg = fs_config(dir);
    cfg.wal_sync_method = method;
    cfg
}

/// Values of random lengths from four writers at once, so batches start and
/// end anywhere in a 4 KiB block and cross segment boundaries.
fn write_round(e: &Engine, round: usize, rng_seed: u64) -> Vec<(String, String)> {
    let written = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for w in 0..4u64 {
            let written = &written;
            s.spawn(move || {
                let mut rng = rand::rngs::StdRng::seed_from_u64(rng_seed ^ (w << 32));
                for i in 0..150 {
                    let key = format!("r{round}-w{w}-{i}");
                    let len = rng.gen_range(1..3000);
                    let value: String = (0..len)
                        .map(|j| char::from(b'a' + ((i + j) % 26) as u8))
                        .collect();
                    put(e, &key, &value);
                    written.lock().unwrap().push((key, value));
                }
            });
        }
    });
    written.into_inner().unwrap()
}

#[test]
fn memory_files_and_recovery_agree_under_either_sync_method() {
    let seed = seed(
        "memory_files_and_recovery_agree_under_either_sync_method",
        6,
    );
    for method in [WalSyncMethod::OpenDatasync, WalSyncMethod::Fdatasync] {
        let dir = tempfile::tempdir().unwrap();
        let mut all: Vec<(String, String)> = Vec::new();
        // Three lives: each restart makes the first batch after it rewrite a
        // block whose head is read back from the file.
        for round in 0..3 {
            let e = Engine::open(config(dir.path(), method)).unwrap();
            for (k, v) in &all {
                assert_eq!(get(&e, k).as_ref(), Some(v), "{method}: {k} after restart");
            }
            let end_before = e.written_lsn();
            all.extend(write_round(&e, round, seed + round as u64));
            let end = e.written_lsn();
            assert!(e.stats().wal_segments >= 2, "{method}: crosses segments");
            // This life's WAL, as senders get it (from memory)...
            let from_memory = e.read_wal(end_before, (end - end_before) as usize).unwrap();
            assert_eq!(from_memory.len() as u64, end - end_before);
            drop(e);
            // ...is what a new process reads from the segment files.
            let e = Engine::open(config(dir.path(), method)).unwrap();
            let mut from_files = Vec::new();
            while (from_files.len() as u64) < end - end_before {
                let at = end_before + from_files.len() as u64;
                let chunk = e.read_wal(at, 1 << 20).unwrap();
                assert!(!chunk.is_empty(), "{method}: WAL missing at {at}");
                from_files.extend_from_slice(&chunk);
            }
            assert!(from_files[..] == from_memory[..], "{method}: round {round}");
            assert_eq!(
                whole_records(end_before, &from_memory),
                from_memory.len(),
                "{method}: whole records"
            );
        }
        let e = Engine::open(config(dir.path(), method)).unwrap();
        assert_eq!(e.len(), all.len(), "{method}");
        for (k, v) in &all {
            assert_eq!(get(&e, k).as_ref(), Some(v), "{method}: {k}");
        }
    }
}
