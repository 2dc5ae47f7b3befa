//! The two APIs replication builds on: reading raw WAL and appending it on another node.

mod common;

use bytes::Bytes;
use common::{get, put, sim_config, whole_records};
use walship_engine::{BatchOp, Engine, Mutation, SimStorage, WriteError};

fn standby_of(primary: &Engine) -> (SimStorage, Engine) {
    let storage = SimStorage::new();
    let mut cfg = sim_config(&storage);
    cfg.cluster_id = Some(primary.cluster_id());
    (storage.clone(), Engine::open(cfg).unwrap())
}

/// Ships everything written on `from` to `to`, in chunks cut at record boundaries.
fn ship(from: &Engine, to: &Engine) {
    loop {
        let start = to.end_lsn();
        let chunk = from.read_wal(start, 64 << 10).unwrap();
        if chunk.is_empty() {
            break;
        }
        // Cut at the last whole record, as the WAL receiver does.
        let whole = whole_records(start, &chunk);
        let lsn = to.append_replicated(start, &chunk.slice(..whole)).unwrap();
        to.wait_durable_blocking(lsn).unwrap();
    }
}

#[test]
fn shipped_wal_rebuilds_identical_state_and_identical_bytes() {
    let p_storage = SimStorage::new();
    let primary = Engine::open(sim_config(&p_storage)).unwrap();
    for i in 0..500 {
        put(&primary, &format!("k{}", i % 70), &format!("value {i}"));
    }
    primary
        .write(Mutation::Batch(vec![
            BatchOp::Delete { key: "k3".into() },
            BatchOp::Put {
                key: "m".into(),
                value: "1".into(),
            },
        ]))
        .unwrap();
    let lsn = primary
        .write(Mutation::Delete { key: "k4".into() })
        .unwrap();
    primary.wait_durable_blocking(lsn).unwrap();
    let (s_storage, standby) = standby_of(&primary);
    ship(&primary, &standby);
    assert_eq!(standby.end_lsn(), primary.end_lsn());
    assert_eq!(standby.len(), primary.len());
    for k in primary.scan(None, 1000) {
        assert_eq!(standby.get(&k), primary.get(&k));
        assert_eq!(
            standby.get_entry(&k).unwrap().lsn,
            primary.get_entry(&k).unwrap().lsn
        );
    }
    let end = primary.end_lsn() as usize;
    assert_eq!(
        standby.read_wal(0, end).unwrap(),
        primary.read_wal(0, end).unwrap()
    );
    // The standby's copy survives its own power loss (it is the same recovery path).
    let after = s_storage.power_loss(None);
    drop(standby);
    let mut cfg = sim_config(&after);
    cfg.cluster_id = Some(primary.cluster_id());
    let standby = Engine::open(cfg).unwrap();
    assert_eq!(standby.len(), primary.len());
    assert_eq!(get(&standby, "m").as_deref(), Some("1"));
}

#[test]
fn receiver_writes_chunks_itself_when_the_flusher_is_idle_and_they_survive_power_loss() {
    let primary = Engine::open(sim_config(&SimStorage::new())).unwrap();
    for i in 0..300 {
        put(&primary, &format!("k{}", i % 90), &format!("value {i}"));
    }
    let all = primary.read_wal(0, usize::MAX).unwrap();
    let (s_storage, standby) = standby_of(&primary);
    // One record per chunk, without waiting in between: each chunk is either
    // written on this thread (flusher idle) or left to the flusher.
    let mut off = 0usize;
    while off < all.len() {
        let rest = all.slice(off..);
        let one = whole_records(off as u64, &rest.slice(..rest.len().min(64)));
        let len = if one == 0 {
            whole_records(off as u64, &rest)
        } else {
            one
        };
        standby
            .append_replicated(off as u64, &rest.slice(..len))
            .unwrap();
        off += len;
    }
    let end = standby.end_lsn();
    standby.wait_durable_blocking(end).unwrap();
    let s = standby.stats();
    assert!(
        s.inline_flushes > 0,
        "an idle flusher leaves the receiver to write: {s:?}"
    );
    assert!(s.inline_flushes <= s.flush_batches, "{s:?}");
    assert_eq!(standby.read_wal(0, all.len()).unwrap(), all);
    // What was acknowledged is on the medium, whichever thread wrote it.
    let after = s_storage.power_loss(None);
    drop(standby);
    let mut cfg = sim_config(&after);
    cfg.cluster_id = Some(primary.cluster_id());
    let standby = Engine::open(cfg).unwrap();
    assert_eq!(standby.end_lsn(), end);
    for k in primary.scan(None, 1000) {
        assert_eq!(standby.get(&k), primary.get(&k));
    }
}

#[test]
fn hostile_chunks_are_refused_and_change_nothing() {
    let primary = Engine::open(sim_config(&SimStorage::new())).unwrap();
    for i in 0..10 {
        put(&primary, &format!("k{i}"), "v");
    }
    let (_s, standby) = standby_of(&primary);
    let chunk = primary.read_wal(0, 1 << 20).unwrap();
    // Flipped bit.
    let mut bad = chunk.to_vec();
    bad[30] ^= 4;
    let err = standby.append_replicated(0, &Bytes::from(bad)).unwrap_err();
    assert!(matches!(err, WriteError::BadReplicatedWal(_)), "{err}");
    // Cut in the middle of a record.
    let err = standby
        .append_replicated(0, &chunk.slice(..chunk.len() - 3))
        .unwrap_err();
    assert!(err.to_string().contains("incomplete"), "{err}");
    // Wrong start LSN (a gap).
    let err = standby.append_replicated(5, &chunk).unwrap_err();
    assert!(err.to_string().contains("ends at LSN 0"), "{err}");
    // Zeros.
    let err = standby
        .append_replicated(0, &Bytes::from(vec![0u8; 64]))
        .unwrap_err();
    assert!(matches!(err, WriteError::BadReplicatedWal(_)));
    assert_eq!(standby.end_lsn(), 0);
    assert!(standby.is_empty());
    // The good chunk still applies afterwards.
    let lsn = standby.append_replicated(0, &chunk).unwrap();
    standby.wait_durable_blocking(lsn).unwrap();
    assert_eq!(standby.len(), 10);
}

#[test]
fn read_wal_sees_written_bytes_across_segments() {
    let primary = Engine::open(sim_config(&SimStorage::new())).unwrap();
    for i in 0..400 {
        put(&primary, &format!("key{i}"), &"y".repeat(50));
    }
    assert!(primary.stats().wal_segments >= 3);
    let all = primary.read_wal(0, usize::MAX).unwrap();
    assert_eq!(all.len() as u64, primary.written_lsn());
    assert_eq!(whole_records(0, &all), all.len());
    assert!(primary
        .read_wal(primary.written_lsn(), 100)
        .unwrap()
        .is_empty());
}

fn backup_into(
    primary: &Engine,
    storage: &SimStorage,
    finish: bool,
) -> walship_engine::CheckpointInfo {
    use walship_engine::basebackup::{BackupMeta, BackupReceiver};
    let info = primary.checkpoint().unwrap();
    let bytes = std::fs::read(&info.path).ok().unwrap_or_default();
    let bytes = if bytes.is_empty() {
        panic!("checkpoint file not readable")
    } else {
        bytes
    };
    let meta = BackupMeta {
        cluster_id: primary.cluster_id(),
        redo_lsn: info.redo_lsn,
        end_lsn: info.end_lsn,
        checkpoint_bytes: bytes.len() as u64,
    };
    let mut rx = BackupReceiver::begin(
        std::sync::Arc::new(storage.clone()),
        std::path::Path::new("/data"),
        meta,
    )
    .unwrap();
    let half = bytes.len() / 2;
    rx.write_checkpoint(0, &bytes[..half]).unwrap();
    if finish {
        rx.write_checkpoint(half as u64, &bytes[half..]).unwrap();
        rx.set_epochs(
            &walship_engine::EpochHistory::decode(&epochs_bytes(primary))
                .unwrap()
                .encode(),
        )
        .unwrap();
        rx.finish().unwrap();
    }
    info
}

fn epochs_bytes(primary: &Engine) -> Vec<u8> {
    primary.epoch_history().encode()
}

#[test]
fn base_backup_installs_atomically_and_becomes_consistent_after_replay() {
    let dir = tempfile::tempdir().unwrap();
    let primary = Engine::open(common::fs_config(dir.path())).unwrap();
    for i in 0..300 {
        put(&primary, &format!("k{i}"), &format!("v{i}"));
    }
    // The standby already holds other, older data.
    let s_storage = SimStorage::new();
    let old = Engine::open(sim_config(&s_storage)).unwrap();
    put(&old, "stale", "x");
    old.shutdown().unwrap();
    drop(old);

    // A transfer that dies half-way leaves the old state usable.
    backup_into(&primary, &s_storage, false);
    let e = Engine::open(sim_config(&s_storage)).unwrap();
    assert_eq!(get(&e, "stale").as_deref(), Some("x"));
    e.shutdown().unwrap();
    drop(e);

    let info = backup_into(&primary, &s_storage, true);
    for i in 300..320 {
        put(&primary, &format!("k{i}"), &format!("v{i}"));
    }
    // A power loss right after the marker: the install completes at open.
    let s_storage = s_storage.power_loss(None);
    let mut cfg = sim_config(&s_storage);
    cfg.cluster_id = None;
    let standby = Engine::open(cfg).unwrap();
    assert_eq!(standby.cluster_id(), primary.cluster_id());
    assert_eq!(get(&standby, "stale"), None, "old state replaced");
    assert_eq!(standby.end_lsn(), info.redo_lsn);
    assert_eq!(standby.is_consistent(), info.end_lsn == info.redo_lsn);
    ship(&primary, &standby);
    assert!(standby.is_consistent());
    assert_eq!(standby.len(), 320);
    assert_eq!(get(&standby, "k319").as_deref(), Some("v319"));
}
