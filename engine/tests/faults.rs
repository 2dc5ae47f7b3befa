//! Failing fsyncs poison the engine; a full disk fails writes cleanly.

mod common;

use bytes::Bytes;
use common::{get, put, sim_config};
use walship_engine::{Engine, Mutation, SimFaults, SimStorage, WalSyncMethod, WriteError};

#[test]
fn failed_fsync_poisons_writes_but_reads_go_on() {
    for method in [WalSyncMethod::OpenDatasync, WalSyncMethod::Fdatasync] {
        let storage = SimStorage::new();
        let mut cfg = sim_config(&storage);
        cfg.wal_sync_method = method;
        let e = Engine::open(cfg.clone()).unwrap();
        put(&e, "before", "1");
        storage.set_faults(SimFaults {
            fail_fsyncs: 1,
            ..Default::default()
        });
        let lsn = e
            .write(Mutation::Put {
                key: "k".into(),
                value: "v".into(),
            })
            .unwrap();
        let err = e.wait_durable_blocking(lsn).unwrap_err();
        assert!(matches!(err, WriteError::Poisoned(_)), "{method}: {err}");
        assert!(err.to_string().contains("fdatasync"), "{method}: {err}");
        assert!(
            err.to_string().contains("simulated fsync failure"),
            "{method}: {err}"
        );
        // Even though the next fsync would succeed, writes stay refused.
        let err = e
            .write(Mutation::Put {
                key: "k2".into(),
                value: "v".into(),
            })
            .unwrap_err();
        assert!(matches!(err, WriteError::Poisoned(_)));
        assert!(e.stats().poisoned);
        assert_eq!(get(&e, "before").as_deref(), Some("1"));
        assert!(
            e.checkpoint().is_err(),
            "no checkpoint from a poisoned engine"
        );
        // Recovery after restart finds the acknowledged write.
        let after = storage.power_loss(None);
        drop(e);
        cfg.storage = std::sync::Arc::new(after);
        let e = Engine::open(cfg).unwrap();
        assert_eq!(get(&e, "before").as_deref(), Some("1"));
    }
}

#[test]
fn full_disk_fails_the_write_cleanly_and_recovers_when_space_frees() {
    let storage = SimStorage::new();
    let e = Engine::open(sim_config(&storage)).unwrap();
    put(&e, "first", "ok");
    // Room for what exists plus nothing more: the next segment cannot be allocated.
    let used = storage.used_bytes();
    storage.set_faults(SimFaults {
        capacity_bytes: Some(used + 100),
        ..Default::default()
    });
    let value = Bytes::from(vec![b'x'; 1000]);
    let mut acked = Vec::new();
    let err = loop {
        let key = Bytes::from(format!("k{}", acked.len()));
        match e.write(Mutation::Put {
            key: key.clone(),
            value: value.clone(),
        }) {
            Ok(lsn) => {
                e.wait_durable_blocking(lsn).unwrap();
                acked.push(key);
            }
            Err(err) => break (err, key),
        }
        assert!(acked.len() < 1000, "disk never filled");
    };
    let (err, failed_key) = err;
    assert!(matches!(err, WriteError::DiskFull { .. }), "{err}");
    assert!(err.to_string().contains("disk full"), "{err}");
    assert!(
        e.get(&failed_key).is_none(),
        "the refused write is not visible"
    );
    assert!(!e.stats().poisoned, "a full disk does not poison");
    // Space comes back: writes work again.
    storage.set_faults(SimFaults::default());
    put(&e, "after", "space");
    // Everything acknowledged survives a power loss.
    let after = storage.power_loss(Some(7));
    drop(e);
    let e = Engine::open(sim_config(&after)).unwrap();
    for k in &acked {
        assert_eq!(e.get(k), Some(value.clone()));
    }
    assert_eq!(get(&e, "after").as_deref(), Some("space"));
    assert!(e.get(&failed_key).is_none());
}

#[test]
fn full_disk_during_checkpoint_leaves_everything_intact() {
    let storage = SimStorage::new();
    let e = Engine::open(sim_config(&storage)).unwrap();
    for i in 0..50 {
        put(&e, &format!("k{i}"), "some value");
    }
    storage.set_faults(SimFaults {
        capacity_bytes: Some(storage.used_bytes() + 10),
        ..Default::default()
    });
    let err = e.checkpoint().unwrap_err();
    assert!(err.to_string().contains("checkpoint failed"), "{err}");
    storage.set_faults(SimFaults::default());
    let after = storage.power_loss(None);
    drop(e);
    let e = Engine::open(sim_config(&after)).unwrap();
    assert_eq!(e.len(), 50);
}

#[test]
fn oversized_value_is_refused_before_logging() {
    let storage = SimStorage::new();
    let mut cfg = sim_config(&storage);
    cfg.max_value_bytes = 10;
    let e = Engine::open(cfg).unwrap();
    let end = e.end_lsn();
    let err = e
        .write(Mutation::Put {
            key: "k".into(),
            value: Bytes::from(vec![0u8; 11]),
        })
        .unwrap_err();
    assert!(
        matches!(
            err,
            WriteError::TooLarge {
                what: "value",
                len: 11,
                max: 10
            }
        ),
        "{err}"
    );
    assert_eq!(e.end_lsn(), end);
}
