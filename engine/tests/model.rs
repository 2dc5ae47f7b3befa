//! Model test: the engine and a `BTreeMap` take the same seeded random
//! operations, with power losses (torn writes included) at random points and
//! checkpoints along the way. After every recovery the engine must hold every
//! acknowledged write and equal the model after some prefix of the history.

mod common;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use walship_engine::{BatchOp, Engine, FsyncPolicy, Mutation, SimStorage};

type Model = BTreeMap<Bytes, Bytes>;

fn apply(model: &mut Model, m: &Mutation) {
    match m {
        Mutation::Put { key, value } => {
            model.insert(key.clone(), value.clone());
        }
        Mutation::Delete { key } => {
            model.remove(key);
        }
        Mutation::Batch(ops) => {
            for op in ops {
                match op {
                    BatchOp::Put { key, value } => {
                        model.insert(key.clone(), value.clone());
                    }
                    BatchOp::Delete { key } => {
                        model.remove(key);
                    }
                }
            }
        }
        Mutation::Clear => model.clear(),
        Mutation::EpochChange { .. } => {}
    }
}

fn random_key(rng: &mut StdRng) -> Bytes {
    Bytes::from(format!("key-{}", rng.gen_range(0..64)))
}

fn random_value(rng: &mut StdRng, counter: &mut u64) -> Bytes {
    *counter += 1;
    let pad = rng.gen_range(0..600);
    Bytes::from(format!("v{counter}-{}", "x".repeat(pad)))
}

fn random_mutation(rng: &mut StdRng, counter: &mut u64) -> Mutation {
    match rng.gen_range(0..100) {
        0..=59 => Mutation::Put {
            key: random_key(rng),
            value: random_value(rng, counter),
        },
        60..=79 => Mutation::Delete {
            key: random_key(rng),
        },
        80..=98 => Mutation::Batch(
            (0..rng.gen_range(1..6))
                .map(|_| {
                    if rng.gen_bool(0.7) {
                        BatchOp::Put {
                            key: random_key(rng),
                            value: random_value(rng, counter),
                        }
                    } else {
                        BatchOp::Delete {
                            key: random_key(rng),
                        }
                    }
                })
                .collect(),
        ),
        _ => Mutation::Clear,
    }
}

fn engine_state(engine: &Engine) -> Model {
    let mut out = Model::new();
    let mut after: Option<Bytes> = None;
    loop {
        let keys = engine.scan(after.as_deref(), 100);
        let Some(last) = keys.last().cloned() else {
            break;
        };
        for k in keys {
            out.insert(k.clone(), engine.get(&k).expect("scanned key exists"));
        }
        after = Some(last);
    }
    out
}

fn run_model(seed: u64, fsync: FsyncPolicy, crashes: usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut storage = SimStorage::new();
    let mut cfg = common::sim_config(&storage);
    cfg.fsync = fsync;
    let mut engine = Engine::open(cfg).expect("open a fresh engine");
    // The model at the last acknowledged write, and the writes after it.
    let mut acked = Model::new();
    let mut unacked: Vec<Mutation> = Vec::new();
    let mut counter = 0u64;
    for crash in 0..crashes {
        for _ in 0..rng.gen_range(5..60) {
            let burst = rng.gen_range(1..8);
            let mut last_lsn = 0;
            for _ in 0..burst {
                let m = random_mutation(&mut rng, &mut counter);
                last_lsn = engine.write(m.clone()).expect("write accepted");
                unacked.push(m);
            }
            if rng.gen_bool(0.8) {
                engine.wait_durable_blocking(last_lsn).expect("durable");
                for m in unacked.drain(..) {
                    apply(&mut acked, &m);
                }
            }
            if rng.gen_bool(0.05) {
                engine.checkpoint().expect("checkpoint");
            }
        }
        // Power loss at this instant; maybe a torn write.
        let tear = rng.gen_bool(0.7).then(|| rng.gen());
        let after = storage.power_loss(tear);
        drop(engine);
        storage = after;
        let mut cfg = common::sim_config(&storage);
        cfg.fsync = fsync;
        engine = Engine::open(cfg)
            .unwrap_or_else(|e| panic!("seed {seed}, crash {crash}: recovery failed: {e}"));
        let got = engine_state(&engine);
        // The recovered state must be the model after some prefix that
        // includes every acknowledged write.
        let mut candidate = acked.clone();
        let mut matched = got == candidate;
        let mut survived = 0;
        for (i, m) in unacked.iter().enumerate() {
            if matched {
                break;
            }
            apply(&mut candidate, m);
            if got == candidate {
                matched = true;
                survived = i + 1;
            }
        }
        assert!(
            matched,
            "seed {seed}, crash {crash}: recovered state ({} keys) is not the model after any prefix of the history that includes all acknowledged writes ({} keys acknowledged, {} writes unacknowledged)",
            got.len(),
            acked.len(),
            unacked.len()
        );
        // What survived is now durable history.
        acked = candidate;
        if fsync == FsyncPolicy::Always {
            let _ = survived;
        }
        unacked.clear();
    }
}

#[test]
fn model_matches_btreemap_across_power_losses() {
    let base = common::seed("model_matches_btreemap_across_power_losses", 0x5EED_0001);
    for i in 0..6 {
        run_model(base + i, FsyncPolicy::Always, 25);
    }
}

#[test]
fn model_holds_with_interval_fsync_as_a_prefix() {
    // With interval fsync acknowledged writes may be lost by design, but
    // whatever recovers must still be a prefix of the history.
    let seed = common::seed("model_holds_with_interval_fsync_as_a_prefix", 0x5EED_0100);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut storage = SimStorage::new();
    let mut cfg = common::sim_config(&storage);
    cfg.fsync = FsyncPolicy::IntervalMs(2);
    let engine = Engine::open(cfg.clone()).expect("open");
    let mut history: Vec<Mutation> = Vec::new();
    let mut counter = 0;
    for _ in 0..300 {
        let m = random_mutation(&mut rng, &mut counter);
        let lsn = engine.write(m.clone()).expect("write");
        engine.wait_durable_blocking(lsn).expect("acknowledged");
        history.push(m);
    }
    let after = storage.power_loss(Some(seed));
    drop(engine);
    storage = after;
    cfg.storage = std::sync::Arc::new(storage.clone());
    let engine = Engine::open(cfg).expect("recovery");
    let got = engine_state(&engine);
    let mut model = Model::new();
    let mut matched = got == model;
    for m in &history {
        if matched {
            break;
        }
        apply(&mut model, m);
        matched = got == model;
    }
    assert!(
        matched,
        "seed {seed}: recovered state is not a prefix of the history"
    );
}
