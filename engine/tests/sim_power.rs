//! The simulator as a real process uses it (`--simulate-power-loss`): load a
//! real directory, cut the power, write what survived back to the directory.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{get, put, seed};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use walship_engine::{Engine, EngineConfig, FsyncPolicy, Mutation, SimStorage, Storage};

fn read(storage: &SimStorage, path: &Path) -> Vec<u8> {
    let file = storage.open(path).unwrap();
    let mut buf = vec![0; file.len().unwrap() as usize];
    file.read_exact_at(&mut buf, 0).unwrap();
    buf
}

/// An engine on `storage` whose files live under the real path `dir`.
fn config_at(storage: &SimStorage, dir: &Path) -> EngineConfig {
    let mut cfg = EngineConfig::new(dir);
    cfg.storage = Arc::new(storage.clone());
    cfg.segment_size_bytes = 8192;
    cfg.checkpoint_every_bytes = 0;
    cfg.fsync = FsyncPolicy::Always;
    cfg
}

#[test]
fn load_dir_holds_the_real_files_as_durable_and_skips_what_it_is_told() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("wal")).unwrap();
    std::fs::write(dir.join("control"), b"ctl").unwrap();
    std::fs::write(dir.join("wal/seg"), b"segment bytes").unwrap();
    std::fs::write(dir.join("LOCK"), b"pid").unwrap();
    let sim = SimStorage::load_dir(dir, &|p| p.ends_with("LOCK")).unwrap();
    assert!(!sim.exists(&dir.join("LOCK")));
    assert_eq!(sim.list(&dir.join("wal")).unwrap(), vec!["seg".to_string()]);
    // Durable, not just live: a power loss right away keeps it all.
    let after = sim.power_loss(None);
    assert_eq!(read(&after, &dir.join("control")), b"ctl");
    assert_eq!(read(&after, &dir.join("wal/seg")), b"segment bytes");
}

#[test]
fn power_off_freezes_the_device_and_keeps_only_what_was_synced() {
    let sim = SimStorage::new();
    let d = Path::new("/d");
    sim.create_dir_all(d).unwrap();
    let f = sim.create(&d.join("a")).unwrap();
    sim.sync_dir(d).unwrap();
    f.write_all_at(b"synced", 0).unwrap();
    f.sync_data().unwrap();
    f.write_all_at(b"-lost", 6).unwrap();
    let image = sim.power_off(None);
    assert!(sim.is_powered_off());
    // Nothing after the cut can be made durable or even read.
    assert!(f.sync_data().is_err(), "sync_data after power off");
    assert!(f.write_all_at(b"x", 0).is_err());
    assert!(f.len().is_err());
    assert!(sim.create(&d.join("b")).is_err());
    assert!(!sim.exists(&d.join("a")));
    assert_eq!(read(&image, &d.join("a")), b"synced");
    // The image is a working device.
    assert!(!image.is_powered_off());
    assert_eq!(read(&sim.power_off(None), &d.join("a")), b"synced");
}

#[test]
fn an_engine_on_a_powered_off_device_acknowledges_nothing_more() {
    let sim = SimStorage::new();
    let cfg = config_at(&sim, Path::new("/data"));
    let e = Engine::open(cfg).unwrap();
    put(&e, "acked", "1");
    let _image = sim.power_off(None);
    match e.write(Mutation::Put {
        key: "after".into(),
        value: "2".into(),
    }) {
        Err(_) => {}
        Ok(lsn) => assert!(
            e.wait_durable_blocking(lsn).is_err(),
            "a write after the power cut was reported durable"
        ),
    }
    assert!(e.stats().poisoned, "the failed fsync poisons the engine");
    assert_eq!(get(&e, "acked").as_deref(), Some("1"));
}

#[test]
fn write_to_dir_replaces_what_the_device_knew_and_leaves_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("old"), b"old").unwrap();
    std::fs::write(dir.join("doomed"), b"doomed").unwrap();
    std::fs::create_dir(dir.join("slots")).unwrap();
    std::fs::write(dir.join("slots/s1"), b"slot").unwrap();
    let sim = SimStorage::load_dir(dir, &|p| p.ends_with("slots")).unwrap();
    // Changes: a new synced file, a removed file, an overwritten file whose
    // new content was never synced, and a file whose entry was never synced.
    sim.create_dir_all(&dir.join("wal")).unwrap();
    let new = sim.create(&dir.join("wal/new")).unwrap();
    new.write_all_at(b"new", 0).unwrap();
    new.sync_data().unwrap();
    sim.sync_dir(&dir.join("wal")).unwrap();
    sim.remove(&dir.join("doomed")).unwrap();
    sim.sync_dir(dir).unwrap();
    sim.open(&dir.join("old"))
        .unwrap()
        .write_all_at(b"NEW", 0)
        .unwrap();
    let ghost = sim.create(&dir.join("ghost")).unwrap();
    ghost.sync_data().unwrap();
    // Written by someone else after the load: the device never knew it.
    std::fs::write(dir.join("LOCK"), b"pid").unwrap();

    let stats = sim.power_off(None).write_to_dir(dir).unwrap();
    assert_eq!(std::fs::read(dir.join("wal/new")).unwrap(), b"new");
    assert_eq!(std::fs::read(dir.join("old")).unwrap(), b"old");
    assert!(!dir.join("doomed").exists());
    assert!(!dir.join("ghost").exists());
    assert_eq!(std::fs::read(dir.join("slots/s1")).unwrap(), b"slot");
    assert_eq!(std::fs::read(dir.join("LOCK")).unwrap(), b"pid");
    assert_eq!(stats.files_written, 2);
    assert_eq!(stats.files_removed, 1);
}

#[test]
fn an_engine_reopens_on_real_files_from_a_power_off_image() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    // Start on real files, as a server's earlier run would have left them.
    {
        let mut cfg = EngineConfig::new(&dir);
        cfg.segment_size_bytes = 8192;
        cfg.checkpoint_every_bytes = 0;
        let e = Engine::open(cfg).unwrap();
        put(&e, "from-disk", "0");
        e.shutdown().unwrap();
    }
    let sim = SimStorage::load_dir(&dir, &|_| false).unwrap();
    let e = Engine::open(config_at(&sim, &dir)).unwrap();
    assert_eq!(get(&e, "from-disk").as_deref(), Some("0"));
    for i in 0..200 {
        put(&e, &format!("k{i}"), &format!("v{i}"));
    }
    sim.power_off(Some(seed("engine_reopens_from_power_off_image", 7)))
        .write_to_dir(&dir)
        .unwrap();
    drop(e);
    let mut cfg = EngineConfig::new(&dir);
    cfg.segment_size_bytes = 8192;
    cfg.checkpoint_every_bytes = 0;
    let e = Engine::open(cfg).unwrap();
    assert_eq!(get(&e, "from-disk").as_deref(), Some("0"));
    for i in 0..200 {
        assert_eq!(get(&e, &format!("k{i}")), Some(format!("v{i}")), "k{i}");
    }
}

#[test]
fn sync_data_makes_the_durable_image_equal_the_live_one() {
    // sync_data copies only the ranges of recorded writes unless the file
    // was truncated; a model of the live bytes checks it against every mix.
    let seed = seed("sync_data_makes_the_durable_image_equal_the_live_one", 11);
    let mut rng = StdRng::seed_from_u64(seed);
    let sim = SimStorage::new();
    let d = Path::new("/d");
    let f = sim.create(&d.join("f")).unwrap();
    sim.sync_dir(d).unwrap();
    let mut model: Vec<u8> = Vec::new();
    for _ in 0..500 {
        match rng.gen_range(0..10) {
            0..=5 => {
                let off = rng.gen_range(0..4096usize);
                let len = rng.gen_range(1..300usize);
                let byte: u8 = rng.gen();
                f.write_all_at(&vec![byte; len], off as u64).unwrap();
                if model.len() < off + len {
                    model.resize(off + len, 0);
                }
                model[off..off + len].fill(byte);
            }
            6 => {
                let len = rng.gen_range(0..5000usize);
                f.set_len(len as u64).unwrap();
                model.resize(len, 0);
            }
            _ => {
                f.sync_data().unwrap();
                assert_eq!(read(&sim.power_loss(None), &d.join("f")), model);
            }
        }
    }
}
