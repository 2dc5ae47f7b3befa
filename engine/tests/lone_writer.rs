//! A writer that is alone writes its own record ([`Engine::flush_if_alone`])
//! instead of handing it to the WAL flusher; one with company leaves it to
//! the flusher's group commit. Either way what was acknowledged is durable.

mod common;

use bytes::Bytes;
use common::{get, sim_config};
use walship_engine::{Engine, Mutation, SimStorage};

fn write(engine: &Engine, key: &str, value: &str) -> u64 {
    engine
        .write(Mutation::Put {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
        })
        .expect("write accepted")
}

#[test]
fn a_lone_writer_writes_its_own_records_and_they_survive_power_loss() {
    let storage = SimStorage::new();
    let engine = Engine::open(sim_config(&storage)).unwrap();
    for i in 0..100 {
        let lsn = write(&engine, &format!("k{i}"), &format!("v{i}"));
        engine.flush_if_alone(lsn);
        engine.wait_durable_blocking(lsn).unwrap();
    }
    // Which thread wrote each record depends on who got there first (the
    // append also wakes the flusher); the unit tests in wal/writer.rs pin
    // down each case. Here: whoever wrote, it is durable.
    let s = engine.stats();
    assert!(s.inline_flushes <= s.flush_batches, "{s:?}");
    let end = engine.end_lsn();
    let after = storage.power_loss(None);
    drop(engine);
    let engine = Engine::open(sim_config(&after)).unwrap();
    assert_eq!(engine.end_lsn(), end);
    for i in 0..100 {
        assert_eq!(get(&engine, &format!("k{i}")), Some(format!("v{i}")));
    }
}

#[test]
fn a_writer_with_company_leaves_the_flush_to_the_flusher() {
    let engine = Engine::open(sim_config(&SimStorage::new())).unwrap();
    let other = engine.waiting_writer();
    for i in 0..50 {
        let lsn = write(&engine, &format!("k{i}"), "v");
        engine.flush_if_alone(lsn);
        engine.wait_durable_blocking(lsn).unwrap();
    }
    assert_eq!(
        engine.stats().inline_flushes,
        0,
        "another writer was waiting all along"
    );
    drop(other);
    assert_eq!(get(&engine, "k49").as_deref(), Some("v"));
}
