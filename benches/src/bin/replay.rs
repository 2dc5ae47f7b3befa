//! Times WAL replay: fills a data directory with WAL of small records, then
//! opens it repeatedly (each open replays everything) and prints the median
//! wall time, CPU time and MB/s.
//!
//! ```sh
//! cargo run --release -p walship-bench --bin replay -- \
//!     [--value-bytes 100] [--wal-mib 1024] [--keys 100000] [--rounds 5] [--dir DIR]
//! ```
//!
//! Keys are `key:%012d` (16 bytes, as redis-benchmark's `-r` keys are)
//! written round-robin over `--keys`, so a long WAL is mostly overwrites, as
//! a real one is. Each open runs in a child process (`--open-once`), so no
//! allocator state or page of the previous table carries over.

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;
use walship_bench::{fill_wal, replay_config};
use walship_engine::Engine;

// The allocator the server uses (server/src/main.rs), so an open here
// costs what recovery costs in the server.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Opts {
    value_bytes: usize,
    wal_mib: u64,
    keys: u64,
    rounds: usize,
    dir: Option<PathBuf>,
    open_once: Option<PathBuf>,
}

fn parse() -> Result<Opts> {
    let mut o = Opts {
        value_bytes: 100,
        wal_mib: 1024,
        keys: 100_000,
        rounds: 5,
        dir: None,
        open_once: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--value-bytes" => o.value_bytes = val()?.parse()?,
            "--wal-mib" => o.wal_mib = val()?.parse()?,
            "--keys" => o.keys = val()?.parse()?,
            "--rounds" => o.rounds = val()?.parse()?,
            "--dir" => o.dir = Some(val()?.into()),
            "--open-once" => o.open_once = Some(val()?.into()),
            other => bail!("unknown argument {other}; see the header of benches/src/bin/replay.rs"),
        }
    }
    Ok(o)
}

fn cpu_seconds() -> f64 {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given.
    let ru = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr());
        ru.assume_init()
    };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

fn main() -> Result<()> {
    let o = parse()?;
    if let Some(dir) = &o.open_once {
        let cpu = cpu_seconds();
        let start = Instant::now();
        let e = Engine::open(replay_config(dir))?;
        let wall = start.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu;
        println!("{wall} {cpu} {} {}", e.end_lsn(), e.len());
        return Ok(());
    }
    let tmp;
    let dir = match &o.dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    if !dir.join("wal").exists() {
        eprintln!(
            "filling {} with {} MiB of WAL ({}-byte values over {} keys)...",
            dir.display(),
            o.wal_mib,
            o.value_bytes,
            o.keys
        );
        let keys = o.keys;
        let n = fill_wal(&dir, o.value_bytes, o.wal_mib << 20, |i| {
            Bytes::from(format!("key:{:012}", i % keys))
        })?;
        eprintln!("{n} records written");
    }
    let exe = std::env::current_exe()?;
    let mut runs = Vec::new();
    for round in 0..o.rounds {
        let out = Command::new(&exe)
            .arg("--open-once")
            .arg(&dir)
            .output()
            .context("run the open")?;
        if !out.status.success() {
            bail!("open failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let s = String::from_utf8(out.stdout)?;
        let f: Vec<f64> = s
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0.0))
            .collect();
        let (wall, cpu, bytes, keys) = (f[0], f[1], f[2], f[3]);
        println!(
            "round {}: {:.3} s wall, {:.3} s CPU, {:.0} MB/s, {} keys",
            round + 1,
            wall,
            cpu,
            bytes / wall / 1e6,
            keys
        );
        runs.push((wall, cpu, bytes));
    }
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (wall, cpu, bytes) = runs[runs.len() / 2];
    println!(
        "median: {wall:.3} s wall, {cpu:.3} s CPU, {:.0} MB/s over {:.0} MB",
        bytes / wall / 1e6,
        bytes / 1e6
    );
    Ok(())
}
