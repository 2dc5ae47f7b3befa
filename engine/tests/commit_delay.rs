//! The group-commit delay (PostgreSQL's `commit_delay`/`commit_siblings`):
//! it only ever applies with enough writers waiting, never loses or reorders
//! a write, and can be changed while writers run.

mod common;

use common::{fs_config, get, put, whole_records};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use walship_engine::{CommitDelay, Engine};

/// `threads` writers, each writing `per_thread` keys and waiting until each is durable.
fn concurrent_writes(engine: &Arc<Engine>, threads: usize, per_thread: usize) {
    std::thread::scope(|s| {
        for t in 0..threads {
            let engine = engine.clone();
            s.spawn(move || {
                for i in 0..per_thread {
                    put(&engine, &format!("t{t}-k{i}"), &format!("v{i}"));
                }
            });
        }
    });
}

#[test]
fn settings_outside_postgresql_ranges_are_refused_and_change_nothing() {
    let d = CommitDelay::new(200, 5).unwrap();
    let err = d.set_delay_us(CommitDelay::MAX_DELAY_US + 1).unwrap_err();
    assert!(err.contains("above the maximum of 100000 us"), "{err}");
    let err = d.set_siblings(0).unwrap_err();
    assert!(err.contains("between 1 and 1000"), "{err}");
    assert!(d.set_siblings(1001).is_err());
    assert_eq!((d.delay_us(), d.siblings()), (200, 5));
    assert!(CommitDelay::new(100_001, 5).is_err());
    assert!(CommitDelay::new(0, 0).is_err());
    let off = CommitDelay::default();
    assert_eq!((off.delay_us(), off.siblings()), (0, 5));
}

#[test]
fn with_fewer_writers_waiting_than_siblings_no_flush_is_delayed() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = fs_config(dir.path());
    cfg.commit_delay = Arc::new(CommitDelay::new(CommitDelay::MAX_DELAY_US, 1000).unwrap());
    let engine = Arc::new(Engine::open(cfg).unwrap());
    concurrent_writes(&engine, 4, 50);
    let s = engine.stats();
    assert_eq!(s.commit_delays, 0, "4 writers never reach 1000 siblings");
    assert!(s.fsyncs > 0);
}

#[test]
fn delayed_group_commits_keep_every_write_in_order_and_durable() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = fs_config(dir.path());
    // A waiting writer is enough; the delay is capped by the measured fsync time.
    cfg.commit_delay = Arc::new(CommitDelay::new(CommitDelay::MAX_DELAY_US, 1).unwrap());
    let delay = cfg.commit_delay.clone();
    let engine = Arc::new(Engine::open(cfg).unwrap());
    concurrent_writes(&engine, 8, 100);
    let s = engine.stats();
    assert!(
        s.commit_delays > 0,
        "with 8 writers and siblings 1, some flush waits for more: {s:?}"
    );
    assert!(
        s.commit_delays <= s.flush_batches,
        "at most one delay per batch: {s:?}"
    );
    assert_eq!(s.records_appended, 800);

    // Turned off at runtime: later flushes are not delayed.
    delay.set_delay_us(0).unwrap();
    let before = engine.stats().commit_delays;
    concurrent_writes(&engine, 8, 20);
    assert_eq!(engine.stats().commit_delays, before);

    let end = engine.end_lsn();
    engine.shutdown().unwrap();
    drop(engine);
    let engine = Engine::open(fs_config(dir.path())).unwrap();
    assert_eq!(engine.end_lsn(), end, "every acknowledged byte recovered");
    assert_eq!(
        engine.len(),
        800,
        "keys t*-k0..k99 (the runtime round rewrote k0..k19)"
    );
    for t in 0..8 {
        assert_eq!(get(&engine, &format!("t{t}-k99")).as_deref(), Some("v99"));
        assert_eq!(get(&engine, &format!("t{t}-k0")).as_deref(), Some("v0"));
    }
}

#[test]
fn replicated_wal_is_never_delayed_even_with_readers_waiting_on_its_flush() {
    let dir = tempfile::tempdir().unwrap();
    let primary = Arc::new(Engine::open(fs_config(&dir.path().join("p"))).unwrap());
    concurrent_writes(&primary, 4, 100);
    let mut cfg = fs_config(&dir.path().join("s"));
    cfg.cluster_id = Some(primary.cluster_id());
    // As eager as the setting allows: one waiter is enough.
    cfg.commit_delay = Arc::new(CommitDelay::new(CommitDelay::MAX_DELAY_US, 1).unwrap());
    let standby = Arc::new(Engine::open(cfg).unwrap());
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        // Readers on the standby wait until what they see is durable, as the
        // server's reads do: each is a waiter on the standby's flushes.
        for _ in 0..8 {
            s.spawn(|| {
                while !done.load(Ordering::Relaxed) {
                    standby.wait_durable_blocking(standby.end_lsn()).unwrap();
                }
            });
        }
        // The WAL receiver's part: small chunks cut at record boundaries.
        loop {
            let start = standby.end_lsn();
            let chunk = primary.read_wal(start, 300).unwrap();
            if chunk.is_empty() {
                break;
            }
            let whole = whole_records(start, &chunk);
            let lsn = standby
                .append_replicated(start, &chunk.slice(..whole))
                .unwrap();
            // One flush per chunk, so there are many flushes to delay.
            standby.wait_durable_blocking(lsn).unwrap();
        }
        standby.wait_durable_blocking(standby.end_lsn()).unwrap();
        done.store(true, Ordering::Relaxed);
    });
    let s = standby.stats();
    assert!(s.fsyncs >= 10, "a flush per chunk of replicated WAL: {s:?}");
    assert_eq!(
        s.commit_delays, 0,
        "a standby's flush is never delayed: {s:?}"
    );
    assert_eq!(standby.len(), 400);
    assert_eq!(get(&standby, "t3-k99").as_deref(), Some("v99"));
}
