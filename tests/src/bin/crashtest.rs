//! `crashtest`: the crash-recovery harness. Runs real walship clusters (a
//! primary and two standbys, separate processes), injects a fault, fails
//! over, and counts what happened to every write, per replication mode and
//! fault. See README.md ("Crash-recovery harness") and docs/durability.md.
//!
//! ```sh
//! cargo run --release -p walship-tests --bin crashtest -- --short --out target/crashtest
//! ```
//!
//! Exits 1 when an invariant breaks: an acknowledged write lost in a
//! synchronous mode, a node that did not converge, a value nobody wrote.

use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::Parser;
use walship_tests::crash::netns::{is_root, Netns};
use walship_tests::crash::report::{self, Cell, RunInfo};
use walship_tests::crash::trial::{self, TrialResult, TrialSpec};
use walship_tests::crash::{cleanup, parse_list, Fault, Mode};

#[derive(Parser, Debug)]
#[command(
    name = "crashtest",
    about = "walship crash-recovery harness: acknowledged writes lost per replication mode and fault"
)]
struct Args {
    /// Seed of the whole run (fault times, victims, tears); default: from the clock
    #[arg(long)]
    seed: Option<u64>,
    /// Trials per (mode, fault) cell [default: 50, or 2 with --short]
    #[arg(long)]
    trials: Option<u64>,
    /// Replication modes: async, first1, any1, any2
    #[arg(long, default_value = "async,first1,any1,any2")]
    modes: String,
    /// Faults: kill, powerloss, kill2, partition, delay (the last two need root)
    #[arg(long, default_value = "kill,powerloss,kill2,partition,delay")]
    faults: String,
    /// Concurrent writing clients per trial
    #[arg(long, default_value_t = 8)]
    clients: u32,
    /// Where durability.{md,json,svg} go
    #[arg(long, default_value = "target/crashtest")]
    out: PathBuf,
    /// A few trials per cell, for CI
    #[arg(long)]
    short: bool,
    /// Trials run at once (each its own cluster and namespace)
    #[arg(long, default_value_t = 1)]
    jobs: u32,
    /// Keep every trial's data directories and logs, not only failing ones
    #[arg(long)]
    keep: bool,
}

/// A per-trial seed from the run's seed (SplitMix64), so any trial replays.
fn trial_seed(run_seed: u64, index: u64) -> u64 {
    let mut z = run_seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

struct Progress {
    total: u64,
    done: AtomicU64,
    lost: AtomicU64,
    violations: AtomicU64,
    start: Instant,
}

impl Progress {
    fn tick(&self, last: &TrialResult) {
        let done = self.done.fetch_add(1, Ordering::SeqCst) + 1;
        let lost = self.lost.fetch_add(last.acked_lost, Ordering::SeqCst) + last.acked_lost;
        let mode: Mode = last.mode.parse().expect("mode we wrote");
        let bad = u64::from(last.violation(mode).is_some());
        let violations = self.violations.fetch_add(bad, Ordering::SeqCst) + bad;
        let width = 30;
        let filled = (done * width / self.total.max(1)) as usize;
        let elapsed = self.start.elapsed().as_secs_f64();
        let eta = elapsed / done as f64 * (self.total - done) as f64;
        eprint!(
            "\r[{}{}] {done}/{} {}/{} acked lost {lost} violations {violations} elapsed {:.0}s eta {:.0}s   ",
            "#".repeat(filled),
            ".".repeat(width as usize - filled),
            self.total,
            last.mode,
            last.fault,
            elapsed,
            eta
        );
        let _ = std::io::stderr().flush();
    }
}

fn main() {
    cleanup::install();
    let code = match run() {
        Ok(clean) => i32::from(!clean),
        Err(e) => {
            eprintln!("crashtest: {e:#}");
            2
        }
    };
    cleanup::run_all();
    std::process::exit(code);
}

fn run() -> Result<bool> {
    let args = Args::parse();
    let modes: Vec<Mode> = parse_list(&args.modes).map_err(anyhow::Error::msg)?;
    let faults: Vec<Fault> = parse_list(&args.faults).map_err(anyhow::Error::msg)?;
    let trials = args.trials.unwrap_or(if args.short { 2 } else { 50 });
    if trials == 0 || args.clients == 0 || args.jobs == 0 {
        bail!("--trials, --clients and --jobs must be at least 1");
    }
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    std::fs::create_dir_all(&args.out)?;
    // A private copy: others may rebuild target/release/walship during a long run.
    let source = walship_tests::binary::walship_bin();
    let bin = args.out.join("walship-under-test");
    std::fs::copy(source, &bin)
        .with_context(|| format!("copying {} to {}", source.display(), bin.display()))?;
    let bin = bin.canonicalize()?;
    let work = trial::work_dir(&args.out, seed)
        .canonicalize()
        .or_else(|_| {
            let w = trial::work_dir(&args.out, seed);
            std::fs::create_dir_all(&w).map(|()| w.canonicalize())?
        })?;
    let command = format!(
        "cargo run --release -p walship-tests --bin crashtest -- --seed {seed} --trials {trials} --modes {} --faults {} --clients {} --out {}",
        args.modes,
        args.faults,
        args.clients,
        args.out.display()
    );
    eprintln!("crashtest: seed {seed} (replay: {command})");
    eprintln!(
        "crashtest: binary {} (copied from {})",
        bin.display(),
        source.display()
    );

    // Root is needed for namespaces; a root without the right to make them
    // (a restricted container) gets the cells skipped with the reason too.
    let netns_unavailable = if !faults.iter().any(|f| f.needs_netns()) {
        None
    } else if !is_root() {
        Some("needs root (network namespaces)".to_string())
    } else {
        Netns::create(0)
            .err()
            .map(|e| format!("network namespaces unavailable: {e:#}"))
    };
    let mut skipped = Vec::new();
    let mut queue = VecDeque::new();
    let mut index = 0u64;
    for &mode in &modes {
        for &fault in &faults {
            if let Some(why) = netns_unavailable.as_deref().filter(|_| fault.needs_netns()) {
                eprintln!("crashtest: skipping {mode}/{fault}: {why} (run as root, e.g. sudo)");
                skipped.push(Cell::skipped(mode, fault, why));
                continue;
            }
            for _ in 0..trials {
                queue.push_back((mode, fault, index));
                index += 1;
            }
        }
    }
    let progress = Arc::new(Progress {
        total: queue.len() as u64,
        done: AtomicU64::new(0),
        lost: AtomicU64::new(0),
        violations: AtomicU64::new(0),
        start: Instant::now(),
    });
    let queue = Arc::new(Mutex::new(queue));
    let results: Arc<Mutex<Vec<TrialResult>>> = Arc::new(Mutex::new(Vec::new()));
    let needs_ns = netns_unavailable.is_none() && faults.iter().any(|f| f.needs_netns());
    let mut workers = Vec::new();
    for w in 0..args.jobs {
        let (queue, results, progress) = (queue.clone(), results.clone(), progress.clone());
        let (bin, work, keep, clients) = (bin.clone(), work.clone(), args.keep, args.clients);
        workers.push(std::thread::spawn(move || -> Result<()> {
            let mut netns = if needs_ns {
                Some(Netns::create(
                    u8::try_from(w + 1).context("too many jobs")?,
                )?)
            } else {
                None
            };
            loop {
                let Some((mode, fault, index)) =
                    queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front()
                else {
                    return Ok(());
                };
                let spec = TrialSpec {
                    bin: &bin,
                    mode,
                    fault,
                    clients,
                    trial: index,
                    seed: trial_seed(seed, index),
                    work_dir: &work,
                    keep_all: keep,
                };
                let ns = if fault.needs_netns() {
                    netns.as_mut()
                } else {
                    None
                };
                let result = trial::run(&spec, ns);
                progress.tick(&result);
                results
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(result);
            }
        }));
    }
    for w in workers {
        w.join().expect("worker thread")?;
    }
    eprintln!();
    let mut results = std::mem::take(&mut *results.lock().unwrap_or_else(|e| e.into_inner()));
    results.sort_by_key(|r| r.trial);

    let mut cells = Vec::new();
    for &mode in &modes {
        for &fault in &faults {
            if let Some(s) = skipped
                .iter()
                .find(|c| c.mode == mode.to_string() && c.fault == fault.to_string())
            {
                cells.push(s.clone());
                continue;
            }
            let mine: Vec<&TrialResult> = results
                .iter()
                .filter(|r| r.mode == mode.to_string() && r.fault == fault.to_string())
                .collect();
            cells.push(Cell::from_trials(mode, fault, &mine));
        }
    }
    let run = RunInfo {
        seed,
        command,
        trials_per_cell: trials,
        clients: args.clients,
        started_unix,
        duration_s: progress.start.elapsed().as_secs_f64(),
        binary: source.display().to_string(),
    };
    report::write_all(&args.out, &run, &cells, &results)?;
    print!("{}", report::markdown(&run, &cells));
    println!(
        "\nwrote {0}/durability.md, {0}/durability.json, {0}/durability.svg",
        args.out.display()
    );
    let clean = cells.iter().all(|c| c.violations.is_empty());
    if clean {
        let _ = std::fs::remove_dir_all(&work);
    } else {
        eprintln!(
            "crashtest: INVARIANT VIOLATED (seed {seed}); failing trials' logs are kept under {}",
            work.display()
        );
    }
    Ok(clean)
}
