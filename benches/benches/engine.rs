//! Engine micro-benchmarks (criterion):
//!
//! - `fdatasync/raw`: one 4 KiB `pwrite` + `fdatasync` on a preallocated
//!   file in the same directory: the disk's ceiling for one writer.
//! - `group_commit/{1,16,64}`: durable appends (`fsync=always`) from N
//!   concurrent writer threads; also prints records per fsync.
//! - `replay`: opening a data directory whose WAL holds 256 MiB (1 KiB
//!   values) or 64 MiB (100-byte values): recovery throughput in MB/s.
//! - `checkpoint/1M_keys`: a full checkpoint of 1,000,000 keys.
//!
//! Run: `cargo bench -p walship-bench --bench engine`. Data goes to
//! `$WALSHIP_BENCH_DIR` (default: a temp dir under the target directory,
//! so it is on the same disk as a real deployment would be).

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use walship_engine::{Engine, EngineConfig, FsyncPolicy, Mutation};

fn bench_root() -> PathBuf {
    let root = std::env::var_os("WALSHIP_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-data"));
    std::fs::create_dir_all(&root).expect("create bench dir");
    root
}

fn fdatasync_raw(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(bench_root()).unwrap();
    let path = dir.path().join("fsync-probe");
    let file = std::fs::File::create(&path).unwrap();
    let block = vec![7u8; 4096];
    for i in 0..256u64 {
        file.write_all_at(&block, i * 4096).unwrap();
    }
    file.sync_all().unwrap();
    let mut g = c.benchmark_group("fdatasync");
    g.throughput(Throughput::Elements(1));
    let mut i = 0u64;
    g.bench_function("raw_4k_pwrite_fdatasync", |b| {
        b.iter(|| {
            file.write_all_at(&block, (i % 256) * 4096).unwrap();
            file.sync_data().unwrap();
            i += 1;
        })
    });
    g.finish();
}

fn group_commit(c: &mut Criterion) {
    let mut g = c.benchmark_group("group_commit");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    for writers in [1usize, 16, 64] {
        let dir = tempfile::tempdir_in(bench_root()).unwrap();
        let mut cfg = EngineConfig::new(dir.path());
        cfg.fsync = FsyncPolicy::Always;
        cfg.checkpoint_every_bytes = 0;
        let engine = Engine::open(cfg).unwrap();
        let value = Bytes::from(vec![b'v'; 100]);
        let before = engine.stats();
        let mut total_ops = 0u64;
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(
            BenchmarkId::from_parameter(writers),
            &writers,
            |b, &writers| {
                b.iter_custom(|iters| {
                    let per = iters.div_ceil(writers as u64);
                    total_ops += per * writers as u64;
                    let start = Instant::now();
                    std::thread::scope(|s| {
                        for t in 0..writers {
                            let engine = engine.clone();
                            let value = value.clone();
                            s.spawn(move || {
                                for i in 0..per {
                                    let key = Bytes::from(format!("w{t}-{i}"));
                                    let lsn = engine
                                        .write(Mutation::Put {
                                            key,
                                            value: value.clone(),
                                        })
                                        .unwrap();
                                    engine.wait_durable_blocking(lsn).unwrap();
                                }
                            });
                        }
                    });
                    // Time per operation as seen by the whole group.
                    start
                        .elapsed()
                        .mul_f64(iters as f64 / (per * writers as u64) as f64)
                })
            },
        );
        let after = engine.stats();
        let records = after.records_appended - before.records_appended;
        let fsyncs = (after.fsyncs - before.fsyncs).max(1);
        eprintln!(
            "group_commit/{writers}: {records} records, {fsyncs} fsyncs, {:.1} records per fsync ({total_ops} ops timed)",
            records as f64 / fsyncs as f64
        );
        engine.shutdown().unwrap();
    }
    g.finish();
}

/// Fills a data directory with about `wal_bytes` of WAL of `value_bytes` values, then closes it.
fn make_wal(value_bytes: usize, wal_bytes: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir_in(bench_root()).unwrap();
    walship_bench::fill_wal(dir.path(), value_bytes, wal_bytes, |i| {
        Bytes::from(format!("key:{:08}", i % 1_000_000))
    })
    .unwrap();
    dir
}

fn replay(c: &mut Criterion) {
    let mut g = c.benchmark_group("replay");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    for (value_bytes, wal_bytes) in [(1024usize, 256u64 << 20), (100, 64 << 20)] {
        let dir = make_wal(value_bytes, wal_bytes);
        let mut cfg = EngineConfig::new(dir.path());
        cfg.checkpoint_every_bytes = 0;
        let probe = Engine::open(cfg.clone()).unwrap();
        let end = probe.end_lsn();
        probe.shutdown().unwrap();
        drop(probe);
        g.throughput(Throughput::Bytes(end));
        g.bench_function(BenchmarkId::new("value_bytes", value_bytes), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let e = Engine::open(cfg.clone()).unwrap();
                    total += start.elapsed();
                    assert_eq!(e.end_lsn(), end);
                    e.shutdown().unwrap();
                }
                total
            })
        });
    }
    g.finish();
}

fn checkpoint_1m(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(bench_root()).unwrap();
    let mut cfg = EngineConfig::new(dir.path());
    cfg.fsync = FsyncPolicy::Never;
    cfg.checkpoint_every_bytes = 0;
    let engine = Arc::new(Engine::open(cfg).unwrap());
    let value = Bytes::from(vec![b'c'; 100]);
    for i in 0..1_000_000u64 {
        engine
            .write(Mutation::Put {
                key: Bytes::from(format!("key:{i:08}")),
                value: value.clone(),
            })
            .unwrap();
    }
    let mut g = c.benchmark_group("checkpoint");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.bench_function("1M_keys_100B_values", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for i in 0..iters {
                // A write, so each checkpoint has a new redo LSN.
                engine
                    .write(Mutation::Put {
                        key: Bytes::from(format!("bump{i}")),
                        value: value.clone(),
                    })
                    .unwrap();
                let start = Instant::now();
                engine.checkpoint().unwrap();
                total += start.elapsed();
            }
            total
        })
    });
    g.finish();
    engine.shutdown().unwrap();
}

criterion_group!(benches, fdatasync_raw, group_commit, replay, checkpoint_1m);
criterion_main!(benches);
