//! Rewinding a data directory to a fork point: the cut WAL is saved and
//! verifiable, the state is rebuilt from what is left, an interrupted rewind
//! is finished by the next open, and a checkpoint past the fork is refused.

mod common;

use common::{get, put, seed, sim_config};
use rand::{Rng, SeedableRng};
use walship_engine::rewind::{self, REWOUND_HEADER_BYTES};
use walship_engine::wal::record::{self, Parsed};
use walship_engine::{Engine, SimStorage, Storage};

/// Writes `n` keys `{prefix}{i}`, returning the WAL end after each.
fn write(engine: &Engine, prefix: &str, n: usize) -> Vec<u64> {
    (0..n)
        .map(|i| {
            put(
                engine,
                &format!("{prefix}{i}"),
                &format!("value-{prefix}-{i}"),
            )
        })
        .collect()
}

fn rewound_files(storage: &SimStorage) -> Vec<std::path::PathBuf> {
    let dir = std::path::Path::new("/data").join(rewind::REWOUND_DIR);
    storage
        .list(&dir)
        .unwrap_or_default()
        .into_iter()
        .map(|n| dir.join(n))
        .collect()
}

#[test]
fn a_rewind_keeps_the_prefix_and_saves_every_cut_record() {
    let seed = seed("a_rewind_keeps_the_prefix_and_saves_every_cut_record", 7);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let storage = SimStorage::new();
    let engine = Engine::open(sim_config(&storage)).unwrap();
    let kept = rng.gen_range(1..200);
    let cut = rng.gen_range(1..200);
    let fork = *write(&engine, "kept", kept).last().unwrap();
    write(&engine, "cut", cut);
    let end = engine.end_lsn();

    assert!(engine.can_rewind_to(fork).is_ok());
    let saved = engine.save_wal_past(fork).unwrap();
    assert_eq!((saved.fork_lsn, saved.end_lsn), (fork, end));
    assert_eq!(saved.records, cut as u64);
    assert_eq!(saved.bytes, end - fork);
    engine.shutdown().unwrap();
    rewind::truncate_to(&storage, std::path::Path::new("/data"), fork).unwrap();

    let engine = Engine::open(sim_config(&storage)).unwrap();
    assert_eq!(engine.end_lsn(), fork, "seed {seed}");
    assert_eq!(engine.len(), kept);
    assert_eq!(get(&engine, "cut0"), None);
    assert_eq!(
        get(&engine, &format!("kept{}", kept - 1)).as_deref(),
        Some(format!("value-kept-{}", kept - 1).as_str())
    );
    // The log goes on from the fork.
    put(&engine, "after", "1");
    assert_eq!(get(&engine, "after").as_deref(), Some("1"));

    // The saved file holds every cut record, verifiable at its own LSN.
    let files = rewound_files(&storage);
    assert_eq!(files.len(), 1);
    let bytes = walship_engine::storage::read_file(&storage, &files[0]).unwrap();
    assert_eq!(&bytes[..8], b"WSHPRWND");
    let wal = &bytes[REWOUND_HEADER_BYTES..];
    let (mut off, mut records) = (0usize, 0u64);
    while off < wal.len() {
        match record::parse(
            fork + off as u64,
            &bytes::Bytes::copy_from_slice(&wal[off..]),
        ) {
            Parsed::Record { len, .. } => {
                off += len;
                records += 1;
            }
            other => panic!("seed {seed}: cut record at offset {off} does not verify: {other:?}"),
        }
    }
    assert_eq!(records, cut as u64);
}

#[test]
fn an_interrupted_rewind_is_finished_by_the_next_open() {
    let storage = SimStorage::new();
    let engine = Engine::open(sim_config(&storage)).unwrap();
    let fork = *write(&engine, "kept", 50).last().unwrap();
    write(&engine, "cut", 80); // crosses several 8 KiB segments
    engine.shutdown().unwrap();
    // The marker is durable, then the power goes before any cutting.
    rewind::write_marker(&storage, std::path::Path::new("/data"), fork).unwrap();
    let storage = storage.power_loss(None);

    let engine = Engine::open(sim_config(&storage)).unwrap();
    assert_eq!(engine.end_lsn(), fork);
    assert_eq!(engine.len(), 50);
    assert_eq!(get(&engine, "cut0"), None);
    assert!(!storage.exists(std::path::Path::new("/data/rewind.pending")));
    engine.shutdown().unwrap();
    // Opening again changes nothing.
    let engine = Engine::open(sim_config(&storage)).unwrap();
    assert_eq!((engine.end_lsn(), engine.len()), (fork, 50));
}

#[test]
fn an_epoch_begun_after_the_fork_is_forgotten() {
    let storage = SimStorage::new();
    let engine = Engine::open(sim_config(&storage)).unwrap();
    let fork = *write(&engine, "kept", 10).last().unwrap();
    let (epoch, start, _) = engine.begin_epoch().unwrap();
    assert_eq!(start, fork);
    write(&engine, "cut", 10);
    engine.shutdown().unwrap();
    rewind::truncate_to(&storage, std::path::Path::new("/data"), fork).unwrap();
    let engine = Engine::open(sim_config(&storage)).unwrap();
    assert!(engine.epoch() < epoch);
    assert!(engine
        .epoch_history()
        .entries()
        .iter()
        .all(|e| e.start_lsn < fork || e.start_lsn == 0));
}

#[test]
fn a_checkpoint_past_the_fork_needs_a_base_backup() {
    let storage = SimStorage::new();
    let engine = Engine::open(sim_config(&storage)).unwrap();
    let fork = *write(&engine, "kept", 10).last().unwrap();
    write(&engine, "cut", 10);
    engine.checkpoint().unwrap();
    let reason = engine.can_rewind_to(fork).unwrap_err();
    assert!(reason.contains("checkpoint"), "{reason}");
    // A fork at or after the checkpoint's end is fine.
    write(&engine, "more", 5);
    assert!(engine.can_rewind_to(engine.end_lsn()).is_ok());
}
