//! The two APIs replication builds on: reading raw WAL and appending it on another node.

mod common;

use bytes::Bytes;
use common::{get, put, sim_config};
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

fn whole_records(start: u64, chunk: &Bytes) -> usize {
    let mut off = 0;
    while let walship_engine::wal::record::Parsed::Record { len, .. } =
        walship_engine::wal::record::parse(start + off as u64, &chunk.slice(off..))
    {
        off += len;
    }
    off
}

#[test]
fn shipped_wal_rebuilds_identical_state_and_identical_bytes() {
    let p_storage = SimStorage::new();
    let primary = Engine::open(sim_config(&p_storage)).unwrap();
    for i in 0..500 {
        put(&primary, &format!("k{}", i % 70), &format!("value {i}"));
    }
    primary.write(Mutation::Batch(vec![BatchOp::Delete { key: "k3".into() }, BatchOp::Put { key: "m".into(), value: "1".into() }])).unwrap();
    let lsn = primary.write(Mutation::Delete { key: "k4".into() }).unwrap();
    primary.wait_durable_blocking(lsn).unwrap();
    let (s_storage, standby) = standby_of(&primary);
    ship(&primary, &standby);
    assert_eq!(standby.end_lsn(), primary.end_lsn());
    assert_eq!(standby.len(), primary.len());
    for k in primary.scan(None, 1000) {
        assert_eq!(standby.get(&k), primary.get(&k));
        assert_eq!(standby.get_entry(&k).unwrap().lsn, primary.get_entry(&k).unwrap().lsn);
    }
    let end = primary.end_lsn() as usize;
    assert_eq!(standby.read_wal(0, end).unwrap(), primary.read_wal(0, end).unwrap());
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
    let err = standby.append_replicated(0, &chunk.slice(..chunk.len() - 3)).unwrap_err();
    assert!(err.to_string().contains("incomplete"), "{err}");
    // Wrong start LSN (a gap).
    let err = standby.append_replicated(5, &chunk).unwrap_err();
    assert!(err.to_string().contains("ends at LSN 0"), "{err}");
    // Zeros.
    let err = standby.append_replicated(0, &Bytes::from(vec![0u8; 64])).unwrap_err();
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
    assert!(primary.read_wal(primary.written_lsn(), 100).unwrap().is_empty());
}
