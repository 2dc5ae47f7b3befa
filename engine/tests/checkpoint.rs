//! Checkpoints: recovery starts from them, old WAL goes away unless retained,
//! writers go on during them.

mod common;

use common::{fs_config, get, put, sim_config};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use walship_engine::{Engine, Lsn, SimStorage, WalRetention};

#[test]
fn recovery_starts_from_the_checkpoint_and_old_wal_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(fs_config(dir.path())).unwrap();
    for i in 0..2000 {
        put(&e, &format!("k{i}"), &format!("v{i}"));
    }
    let segs_before = e.stats().wal_segments;
    let info = e.checkpoint().unwrap();
    assert_eq!(info.entries, 2000);
    assert!(
        e.stats().wal_segments < segs_before,
        "segments below the checkpoint removed"
    );
    assert!(e.stats().oldest_lsn <= info.redo_lsn);
    put(&e, "after", "checkpoint");
    e.shutdown().unwrap();
    let e = Engine::open(fs_config(dir.path())).unwrap();
    let r = e.recovery_info();
    assert_eq!(r.checkpoint.as_deref(), Some(info.path.as_path()));
    assert_eq!(
        r.records, 1,
        "only the write after the checkpoint is replayed"
    );
    assert_eq!(e.len(), 2001);
    assert_eq!(get(&e, "k1999").as_deref(), Some("v1999"));
}

struct Slot(AtomicU64);
impl WalRetention for Slot {
    fn min_retained_lsn(&self, _end_lsn: Lsn) -> Option<Lsn> {
        Some(self.0.load(Ordering::Relaxed))
    }
}

#[test]
fn retention_hook_keeps_wal_a_slot_needs() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(fs_config(dir.path())).unwrap();
    let slot = Arc::new(Slot(AtomicU64::new(0)));
    e.add_retention(slot.clone());
    for i in 0..2000 {
        put(&e, &format!("k{i}"), "v");
    }
    e.checkpoint().unwrap();
    assert_eq!(e.stats().oldest_lsn, 0, "WAL from LSN 0 kept for the slot");
    assert_eq!(e.read_wal(0, 12).unwrap().len(), 12);
    slot.0.store(e.end_lsn(), Ordering::Relaxed);
    put(&e, "more", "v");
    e.checkpoint().unwrap();
    assert!(e.stats().oldest_lsn > 0);
    assert!(matches!(
        e.read_wal(0, 12),
        Err(walship_engine::EngineError::WalRemoved { .. })
    ));
}

#[test]
fn writers_go_on_during_a_checkpoint_and_nothing_is_lost() {
    let storage = SimStorage::new();
    let e = Engine::open(sim_config(&storage)).unwrap();
    for i in 0..3000 {
        e.write(walship_engine::Mutation::Put {
            key: format!("base{i}").into(),
            value: "x".into(),
        })
        .unwrap();
    }
    let writer = {
        let e = e.clone();
        std::thread::spawn(move || {
            let mut last = 0;
            for i in 0..2000 {
                last = e
                    .write(walship_engine::Mutation::Put {
                        key: format!("live{i}").into(),
                        value: format!("{i}").into(),
                    })
                    .unwrap();
            }
            e.wait_durable_blocking(last).unwrap();
        })
    };
    e.checkpoint().unwrap();
    writer.join().unwrap();
    let after = storage.power_loss(None);
    drop(e);
    let e = Engine::open(sim_config(&after)).unwrap();
    assert_eq!(e.len(), 5000);
    assert_eq!(get(&e, "live1999").as_deref(), Some("1999"));
}

#[test]
fn damaged_newest_checkpoint_falls_back_to_wal() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(fs_config(dir.path())).unwrap();
    let slot = Arc::new(Slot(AtomicU64::new(0)));
    e.add_retention(slot);
    for i in 0..100 {
        put(&e, &format!("k{i}"), "v");
    }
    let info = e.checkpoint().unwrap();
    e.shutdown().unwrap();
    let mut bytes = std::fs::read(&info.path).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0xFF;
    std::fs::write(&info.path, bytes).unwrap();
    // No older checkpoint, but the WAL from 0 is still there: full replay.
    let e = Engine::open(fs_config(dir.path())).unwrap();
    assert_eq!(e.recovery_info().checkpoint, None);
    assert_eq!(e.len(), 100);
}

/// `rdb_changes_since_last_save` counts records, not bytes: the writes since
/// the newest checkpoint, recovered ones included after a restart.
#[test]
fn changes_since_the_checkpoint_count_records() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(fs_config(dir.path())).unwrap();
    for i in 0..3 {
        put(&e, &format!("k{i}"), &"x".repeat(1000));
    }
    assert_eq!(e.stats().changes_since_checkpoint, 3);
    e.checkpoint().unwrap();
    assert_eq!(e.stats().changes_since_checkpoint, 0);
    put(&e, "a", "1");
    put(&e, "b", "2");
    assert_eq!(e.stats().changes_since_checkpoint, 2);
    e.shutdown().unwrap();
    let e = Engine::open(fs_config(dir.path())).unwrap();
    assert_eq!(
        e.stats().changes_since_checkpoint,
        2,
        "replayed after the checkpoint"
    );
}
