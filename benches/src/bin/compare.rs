//! `compare`: walship beside Redis 7 and PostgreSQL 15, in one run on one
//! machine, written as Markdown, JSON and SVG.
//!
//! Run it through `scripts/compare` (which builds walship and this binary
//! first); `scripts/compare --help` lists the options. Every figure in one
//! output comes from the same run, targets alternating, because the machine
//! this was written on is shared and noisy: compare ratios, not absolute
//! numbers from different runs.
//!
//! Needs `redis-server`, `redis-benchmark` and `redis-cli` on the PATH and,
//! for PostgreSQL, root (PostgreSQL runs as the `postgres` user through
//! `runuser`) and `/usr/lib/postgresql/15/bin` (or `--pgbin`).

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const SECTIONS: [&str; 7] = [
    "limits", "set", "pg", "get", "recovery", "catchup", "memory",
];

// ---------------------------------------------------------------------------
// Clean-up: every process we start and every directory we make is registered
// here, and removed on normal exit, on error and on SIGINT/SIGTERM.

struct Registry {
    pids: Vec<i32>,
    pg_dirs: Vec<PathBuf>,
    tmp: Option<PathBuf>,
    pgbin: Option<PathBuf>,
    keep: bool,
}

static REG: Mutex<Registry> = Mutex::new(Registry {
    pids: Vec::new(),
    pg_dirs: Vec::new(),
    tmp: None,
    pgbin: None,
    keep: false,
});
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn reg() -> std::sync::MutexGuard<'static, Registry> {
    REG.lock().unwrap_or_else(|e| e.into_inner())
}

fn cleanup() {
    // The signal watcher and the main thread may both get here: the second
    // waits until the first has finished (the first may exit the process).
    static CLEANING: Mutex<()> = Mutex::new(());
    let _one = CLEANING.lock().unwrap_or_else(|e| e.into_inner());
    let (pids, pg_dirs, tmp, pgbin, keep) = {
        let mut r = reg();
        (
            std::mem::take(&mut r.pids),
            std::mem::take(&mut r.pg_dirs),
            r.tmp.take(),
            r.pgbin.clone(),
            r.keep,
        )
    };
    for &pid in &pids {
        // Each child leads its own process group (see `spawn`).
        unsafe { libc::kill(-pid, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut alive: Vec<i32> = pids.clone();
    while !alive.is_empty() && Instant::now() < deadline {
        alive
            .retain(|&pid| unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) } == 0);
        std::thread::sleep(Duration::from_millis(50));
    }
    for &pid in &alive {
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    }
    if let Some(pgbin) = pgbin {
        for d in &pg_dirs {
            let _ = Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(pgbin.join("pg_ctl"))
                .arg("-D")
                .arg(d)
                .args(["stop", "-m", "immediate"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
    if let Some(t) = tmp {
        if keep {
            eprintln!("compare: kept {}", t.display());
        } else {
            let _ = std::fs::remove_dir_all(&t);
        }
    }
}

fn check_stop() -> Result<()> {
    if STOP.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// Spawns `cmd` in its own process group and registers it for clean-up.
fn spawn(cmd: &mut Command) -> Result<Child> {
    check_stop()?;
    cmd.process_group(0);
    let child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    reg().pids.push(child.id() as i32);
    Ok(child)
}

fn forget(pid: u32) {
    reg().pids.retain(|&p| p != pid as i32);
}

/// Runs `cmd` to completion (registered while it runs), returning stdout.
fn run_output(cmd: &mut Command) -> Result<String> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = spawn(cmd)?;
    let pid = child.id();
    let out = child.wait_with_output()?;
    forget(pid);
    check_stop()?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

struct Proc {
    child: Child,
    port: u16,
    dir: PathBuf,
    log: PathBuf,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }
    fn signal(&mut self, sig: i32) {
        unsafe { libc::kill(self.child.id() as i32, sig) };
        let _ = self.child.wait();
        forget(self.child.id());
    }
    fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
    }
    fn stop(&mut self) {
        self.signal(libc::SIGTERM);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

// ---------------------------------------------------------------------------
// Options

struct Opts {
    out: PathBuf,
    quick: bool,
    reps: usize,
    secs: f64,
    only: HashSet<String>,
    walship: PathBuf,
    pgbin: PathBuf,
    keep: bool,
}

const USAGE: &str = "\
compare: walship beside Redis 7 and PostgreSQL 15, one run, one machine

usage: scripts/compare [--quick] [--only SECTIONS] [--out DIR] [--reps N]
                       [--secs S] [--walship PATH] [--pgbin DIR] [--keep]

  --quick        short runs and small data (a few minutes)
  --only LIST    comma-separated sections: limits,set,pg,get,recovery,catchup,memory
                 (default: all)
  --out DIR      where results.md, results.json and *.svg go (default target/compare)
  --reps N       repetitions of each throughput cell (default 3, quick 1)
  --secs S       seconds per throughput run (default 5, quick 1.5)
  --walship P    the walship binary (default target/release/walship)
  --pgbin DIR    PostgreSQL 15 binaries (default /usr/lib/postgresql/15/bin)
  --keep         keep the temporary directory (data, logs) for inspection
";

fn parse_opts() -> Result<Opts> {
    let mut o = Opts {
        out: PathBuf::from("target/compare"),
        quick: false,
        reps: 0,
        secs: 0.0,
        only: SECTIONS.iter().map(|s| s.to_string()).collect(),
        walship: PathBuf::from("target/release/walship"),
        pgbin: PathBuf::from("/usr/lib/postgresql/15/bin"),
        keep: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or_else(|| anyhow!("{a} needs a value"));
        match a.as_str() {
            "--quick" => o.quick = true,
            "--keep" => o.keep = true,
            "--out" => o.out = PathBuf::from(val()?),
            "--reps" => o.reps = val()?.parse()?,
            "--secs" => o.secs = val()?.parse()?,
            "--walship" => o.walship = PathBuf::from(val()?),
            "--pgbin" => o.pgbin = PathBuf::from(val()?),
            "--only" => {
                let v = val()?;
                o.only = v.split(',').map(|s| s.trim().to_string()).collect();
                for s in &o.only {
                    if !SECTIONS.contains(&s.as_str()) {
                        bail!("unknown section {s:?}; sections: {}", SECTIONS.join(","));
                    }
                }
            }
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            _ => bail!("unknown argument {a:?}\n{USAGE}"),
        }
    }
    if o.reps == 0 {
        o.reps = if o.quick { 1 } else { 3 };
    }
    if o.secs == 0.0 {
        o.secs = if o.quick { 1.5 } else { 5.0 };
    }
    Ok(o)
}

impl Opts {
    fn on(&self, s: &str) -> bool {
        self.only.contains(s)
    }
}

// ---------------------------------------------------------------------------
// Small helpers: ports, RESP, INFO, waiting.

fn free_port() -> Result<u16> {
    static USED: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    loop {
        let p = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut used = USED.lock().unwrap();
        if !used.contains(&p) {
            used.push(p);
            return Ok(p);
        }
    }
}

fn read_reply(r: &mut impl BufRead) -> Result<String> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        bail!("connection closed");
    }
    let line = line.trim_end_matches(['\r', '\n']).to_string();
    match line.as_bytes().first() {
        Some(b'+') | Some(b':') => Ok(line[1..].to_string()),
        Some(b'-') => bail!("{}", &line[1..]),
        Some(b'$') => {
            let n: i64 = line[1..].parse()?;
            if n < 0 {
                return Ok(String::new());
            }
            let mut buf = vec![0; n as usize + 2];
            r.read_exact(&mut buf)?;
            buf.truncate(n as usize);
            Ok(String::from_utf8_lossy(&buf).into_owned())
        }
        Some(b'*') => {
            let n: i64 = line[1..].parse()?;
            let mut parts = Vec::new();
            for _ in 0..n.max(0) {
                parts.push(read_reply(r)?);
            }
            Ok(parts.join(" "))
        }
        _ => bail!("unexpected reply {line:?}"),
    }
}

fn resp(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    out
}

fn cmd_timeout(port: u16, args: &[&str], timeout: Duration) -> Result<String> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(timeout))?;
    (&s).write_all(&resp(args))?;
    read_reply(&mut BufReader::new(s))
}

fn cmd(port: u16, args: &[&str]) -> Result<String> {
    cmd_timeout(port, args, Duration::from_secs(10))
}

fn info(port: u16, section: &str) -> Result<HashMap<String, String>> {
    let text = cmd(port, &["INFO", section])?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect())
}

fn info_u64(port: u16, section: &str, key: &str) -> Result<u64> {
    info(port, section)?
        .get(key)
        .ok_or_else(|| anyhow!("INFO {section} on port {port} has no {key}"))?
        .parse()
        .map_err(|e| anyhow!("INFO {key}: {e}"))
}

/// Polls `f` every `every` until it returns true; the time it took.
fn wait_until(timeout: Duration, every: Duration, mut f: impl FnMut() -> bool) -> Result<Duration> {
    let t0 = Instant::now();
    loop {
        check_stop()?;
        if f() {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > timeout {
            bail!("timed out after {timeout:?}");
        }
        std::thread::sleep(every);
    }
}

fn wait_ping(port: u16, timeout: Duration) -> Result<Duration> {
    wait_until(timeout, Duration::from_millis(5), || {
        cmd_timeout(port, &["PING"], Duration::from_secs(1)).is_ok()
    })
    .with_context(|| format!("port {port} never answered PING"))
}

fn vm_rss(pid: u32) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    for l in s.lines() {
        if let Some(v) = l.strip_prefix("VmRSS:") {
            let kb: u64 = v.trim().trim_end_matches("kB").trim().parse()?;
            return Ok(kb * 1024);
        }
    }
    bail!("no VmRSS for {pid}")
}

fn dir_size(p: &Path) -> u64 {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            if let Ok(m) = e.metadata() {
                if m.is_dir() {
                    n += dir_size(&e.path());
                } else {
                    n += m.len();
                }
            }
        }
    }
    n
}

fn median(v: &[f64]) -> f64 {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Processes: walship, Redis, PostgreSQL.

struct Env {
    o: Opts,
    tmp: PathBuf,
}

impl Env {
    fn walship(&self, name: &str, args: &[&str]) -> Result<Proc> {
        let port = free_port()?;
        self.walship_at(name, port, args)
    }

    /// Starts walship on `port` with data in `<tmp>/<name>` (kept between
    /// restarts), logging to `<tmp>/<name>.log` (appended).
    fn walship_at(&self, name: &str, port: u16, args: &[&str]) -> Result<Proc> {
        let dir = self.tmp.join(name);
        let log = self.tmp.join(format!("{name}.log"));
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let mut c = Command::new(&self.o.walship);
        c.arg("server")
            .arg("--data-dir")
            .arg(&dir)
            .args(["--port", &port.to_string(), "--fsync", "always"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(logf);
        let child = spawn(&mut c)?;
        Ok(Proc {
            child,
            port,
            dir,
            log,
        })
    }

    fn redis(&self, name: &str, fsync: &str, replicaof: Option<u16>) -> Result<Proc> {
        let p = self.redis_at(name, free_port()?, fsync, replicaof, &[])?;
        wait_ping(p.port, Duration::from_secs(30))?;
        Ok(p)
    }

    /// Starts redis-server on `port` with data in `<tmp>/<name>` (kept
    /// between restarts); does not wait for it.
    fn redis_at(
        &self,
        name: &str,
        port: u16,
        fsync: &str,
        replicaof: Option<u16>,
        extra: &[&str],
    ) -> Result<Proc> {
        let dir = self.tmp.join(name);
        std::fs::create_dir_all(&dir)?;
        let log = self.tmp.join(format!("{name}.log"));
        let mut c = Command::new("redis-server");
        c.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&dir)
            .args(["--save", "", "--appendonly", "yes", "--appendfsync", fsync])
            .args(["--daemonize", "no"])
            .arg("--logfile")
            .arg(&log);
        c.args(extra);
        if let Some(p) = replicaof {
            c.args(["--replicaof", "127.0.0.1", &p.to_string()]);
        }
        c.stdout(Stdio::null()).stderr(Stdio::null());
        let child = spawn(&mut c)?;
        Ok(Proc {
            child,
            port,
            dir,
            log,
        })
    }
}

/// Waits until `primary` lists `n` standbys/replicas as online.
fn wait_online(primary: u16, n: usize) -> Result<()> {
    wait_until(Duration::from_secs(120), Duration::from_millis(20), || {
        info(primary, "replication")
            .map(|i| {
                i.iter()
                    .filter(|(k, v)| k.starts_with("slave") && v.contains("state=online"))
                    .count()
                    >= n
            })
            .unwrap_or(false)
    })
    .with_context(|| format!("standbys of {primary} never came online"))?;
    Ok(())
}

/// A walship primary with `n` standbys named s1..sn.
struct Cluster {
    primary: Proc,
    standbys: Vec<Proc>,
}

fn walship_cluster(env: &Env, name: &str, n: usize, primary_args: &[&str]) -> Result<Cluster> {
    let primary = env.walship(&format!("{name}-p"), primary_args)?;
    wait_ping(primary.port, Duration::from_secs(60))?;
    let from = format!("127.0.0.1:{}", primary.port);
    let mut standbys = Vec::new();
    for i in 1..=n {
        let s = env.walship(
            &format!("{name}-s{i}"),
            &["--replicate-from", &from, "--name", &format!("s{i}")],
        )?;
        standbys.push(s);
    }
    for s in &standbys {
        wait_ping(s.port, Duration::from_secs(60))?;
    }
    wait_online(primary.port, n)?;
    Ok(Cluster { primary, standbys })
}

struct Pg {
    bin: PathBuf,
    /// `<tmp>/<name>`, owned by postgres: data directories, logs, scripts.
    root: PathBuf,
    dir: PathBuf,
    port: u16,
    logdir: PathBuf,
}

impl Pg {
    fn as_pg(&self, prog: &str) -> Command {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(self.bin.join(prog));
        c
    }
    fn start(&self, dir: &Path, log: &Path) -> Result<()> {
        run_output(
            self.as_pg("pg_ctl")
                .arg("-D")
                .arg(dir)
                .arg("-l")
                .arg(log)
                .args(["-w", "start"]),
        )?;
        Ok(())
    }
    /// `pg_ctl stop -m fast` of the server in `dir`; no longer cleaned up.
    fn stop(&self, dir: &Path) {
        let _ = run_output(
            self.as_pg("pg_ctl")
                .arg("-D")
                .arg(dir)
                .args(["stop", "-m", "fast"]),
        );
        reg().pg_dirs.retain(|x| x != dir);
    }
    fn psql(&self, sql: &str) -> Result<String> {
        let out = run_output(
            self.as_pg("psql")
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .args(["-U", "postgres", "-qAt", "-c", sql]),
        )?;
        Ok(out.trim().to_string())
    }
    /// `pg_basebackup` of the primary over loopback into `dest`.
    fn basebackup(&self, dest: &Path, args: &[&str]) -> Result<()> {
        run_output(
            self.as_pg("pg_basebackup")
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .args(["-U", "postgres"])
                .args(args)
                .arg("-D")
                .arg(dest),
        )?;
        Ok(())
    }
    /// The pgbench script upserting 100-byte values over 100k keys: one
    /// statement, or `depth` statements between `\startpipeline` and
    /// `\endpipeline` (one implicit transaction; each statement's key from
    /// its own sixteenth of the key space, ascending, so that concurrent
    /// transactions lock rows in the same order and cannot deadlock).
    fn script(&self, depth: u32) -> Result<PathBuf> {
        let upsert = |k: &str| {
            format!("INSERT INTO kv VALUES (:{k}, repeat('y', 100)) ON CONFLICT (k) DO UPDATE SET v = excluded.v;\n")
        };
        let mut s = String::new();
        if depth <= 1 {
            s.push_str("\\set k random(1, 100000)\n");
            s.push_str(&upsert("k"));
        } else {
            let d = depth as u64;
            for i in 0..d {
                let _ = writeln!(
                    s,
                    "\\set k{i} random({}, {})",
                    i * 100_000 / d + 1,
                    (i + 1) * 100_000 / d
                );
            }
            s.push_str("\\startpipeline\n");
            for i in 0..d {
                s.push_str(&upsert(&format!("k{i}")));
            }
            s.push_str("\\endpipeline\n");
        }
        let path = self.root.join(format!("upsert-{depth}.sql"));
        std::fs::write(&path, s)?;
        Ok(path)
    }
}

fn append_to(path: &Path, text: &str) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

/// A PostgreSQL primary in `<tmp>/<name>/primary`, started, with `conf`
/// appended to its postgresql.conf.
fn start_pg_primary(env: &Env, name: &str, conf: &str) -> Result<Pg> {
    let bin = env.o.pgbin.clone();
    if !bin.join("initdb").exists() {
        bail!("PostgreSQL not found under {}", bin.display());
    }
    let root = env.tmp.join(name);
    std::fs::create_dir_all(&root)?;
    run_output(Command::new("chown").arg("postgres").arg(&root))?;
    let dir = root.join("primary");
    let logdir = root.join("logs");
    let pport = free_port()?;
    let pg = Pg {
        bin: bin.clone(),
        root: root.clone(),
        dir: dir.clone(),
        port: pport,
        logdir: logdir.clone(),
    };
    reg().pgbin = Some(bin.clone());
    run_output(
        pg.as_pg("initdb")
            .arg("-D")
            .arg(&dir)
            .args(["-A", "trust", "-U", "postgres"]),
    )?;
    append_to(
        &dir.join("postgresql.conf"),
        &format!(
            "\nport = {pport}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
         wal_level = replica\nmax_wal_senders = 4\nmax_connections = 200\n\
         fsync = on\nshared_buffers = 256MB\n{conf}",
            root.display()
        ),
    )?;
    append_to(
        &dir.join("pg_hba.conf"),
        "host replication all 127.0.0.1/32 trust\n",
    )?;
    reg().pg_dirs.push(dir.clone());
    pg.start(&dir, &root.join("primary.log"))?;
    std::fs::create_dir_all(&logdir)?;
    run_output(Command::new("chown").arg("postgres").arg(&logdir))?;
    Ok(pg)
}

/// PostgreSQL primary + streaming standby `s1`, synchronous (FIRST 1 (s1)).
fn start_pg(env: &Env) -> Result<Pg> {
    let pg = start_pg_primary(
        env,
        "pg",
        "synchronous_standby_names = 'FIRST 1 (s1)'\nsynchronous_commit = on\n",
    )?;
    let sdir = pg.root.join("standby");
    let sport = free_port()?;
    pg.basebackup(&sdir, &["-R"])?;
    append_to(
        &sdir.join("postgresql.conf"),
        &format!("\nport = {sport}\n"),
    )?;
    append_to(
        &sdir.join("postgresql.auto.conf"),
        &format!(
            "primary_conninfo = 'host=127.0.0.1 port={} user=postgres application_name=s1'\n",
            pg.port
        ),
    )?;
    reg().pg_dirs.push(sdir.clone());
    pg.start(&sdir, &pg.root.join("standby.log"))?;
    wait_until(Duration::from_secs(60), Duration::from_millis(100), || {
        pg.psql("select sync_state from pg_stat_replication where application_name='s1'")
            .map(|s| s == "sync")
            .unwrap_or(false)
    })
    .context("PostgreSQL standby never became synchronous")?;
    pg.psql("create table kv (k int primary key, v text)")?;
    pg.psql("insert into kv select g, repeat('x', 100) from generate_series(1, 100000) g")?;
    Ok(pg)
}

// ---------------------------------------------------------------------------
// Load generators.

#[derive(Clone, Copy, Debug, Default)]
struct Cell {
    rps: f64,
    p50: f64,
    p99: f64,
}

/// redis-benchmark, 100-byte values over 100k keys; returns rps, p50, p99.
fn redis_benchmark(port: u16, test: &str, clients: u32, pipeline: u32, n: u64) -> Result<Cell> {
    let out = run_output(
        Command::new("redis-benchmark")
            .args([
                "-p",
                &port.to_string(),
                "-t",
                test,
                "-d",
                "100",
                "-r",
                "100000",
            ])
            .args(["-c", &clients.to_string(), "-n", &n.to_string()])
            .args(["-P", &pipeline.to_string(), "--csv"]),
    )?;
    let want = format!("\"{}\"", test.to_uppercase());
    let line = out
        .lines()
        .find(|l| l.starts_with(&want))
        .ok_or_else(|| anyhow!("redis-benchmark printed no {want} line:\n{out}"))?;
    let f: Vec<f64> = line
        .split(',')
        .skip(1)
        .map(|s| s.trim_matches('"').parse().unwrap_or(f64::NAN))
        .collect();
    // rps, avg, min, p50, p95, p99, max
    if f.len() < 6 {
        bail!("unexpected redis-benchmark line {line:?}");
    }
    Ok(Cell {
        rps: f[0],
        p50: f[3],
        p99: f[5],
    })
}

/// pgbench upserting 100-byte values over 100k keys for `secs`, `pipeline`
/// statements per transaction (see `Pg::script`): statements/s (tps ×
/// `pipeline`, to compare with redis-benchmark's requests/s), and p50/p99
/// per transaction from the per-transaction log.
fn pgbench(pg: &Pg, level: &str, clients: u32, pipeline: u32, secs: f64) -> Result<Cell> {
    let script = pg.script(pipeline)?;
    for e in std::fs::read_dir(&pg.logdir)?.flatten() {
        let _ = std::fs::remove_file(e.path());
    }
    let mut c = pg.as_pg("pgbench");
    c.env("PGOPTIONS", format!("-c synchronous_commit={level}"))
        .current_dir(&pg.logdir)
        .args([
            "-n",
            "-h",
            "127.0.0.1",
            "-p",
            &pg.port.to_string(),
            "-U",
            "postgres",
        ])
        .args(["-M", "prepared", "-l", "-c", &clients.to_string()])
        .args(["-j", &clients.min(2).to_string()])
        .args(["-T", &(secs.ceil() as u64).max(1).to_string()])
        .arg("-f")
        .arg(&script)
        .arg("postgres");
    let out = run_output(&mut c)?;
    let tps: f64 = out
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("pgbench printed no tps:\n{out}"))?;
    let mut lat = Vec::new();
    for e in std::fs::read_dir(&pg.logdir)?.flatten() {
        let text = std::fs::read_to_string(e.path())?;
        for l in text.lines() {
            if let Some(us) = l
                .split_whitespace()
                .nth(2)
                .and_then(|v| v.parse::<f64>().ok())
            {
                lat.push(us / 1000.0);
            }
        }
        let _ = std::fs::remove_file(e.path());
    }
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Ok(Cell {
        rps: tps * pipeline.max(1) as f64,
        p50: percentile(&lat, 0.5),
        p99: percentile(&lat, 0.99),
    })
}

/// Writes `count` SETs over `key_space` keys (`key:%012d`, as
/// redis-benchmark names them) with `value_size`-byte values, over `conns`
/// connections each pipelining `depth` commands. Returns seconds taken.
fn load(
    port: u16,
    count: u64,
    key_space: u64,
    value_size: usize,
    conns: u64,
    depth: u64,
) -> Result<f64> {
    let t0 = Instant::now();
    let value: Vec<u8> = (0..value_size).map(|i| b'a' + (i % 26) as u8).collect();
    let handles: Vec<_> = (0..conns)
        .map(|t| {
            let value = value.clone();
            std::thread::spawn(move || -> Result<()> {
                let s = TcpStream::connect(("127.0.0.1", port))?;
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(Duration::from_secs(120)))?;
                let mut r = BufReader::with_capacity(1 << 16, s.try_clone()?);
                let mut w = s;
                let mut i = t;
                let mut buf = Vec::with_capacity(depth as usize * (value.len() + 64));
                let mut line = Vec::new();
                while i < count {
                    if STOP.load(Ordering::Relaxed) {
                        bail!("interrupted");
                    }
                    buf.clear();
                    let mut sent = 0;
                    while sent < depth && i < count {
                        let key = format!("key:{:012}", i % key_space);
                        write!(
                            buf,
                            "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n",
                            key.len(),
                            value.len()
                        )?;
                        buf.extend_from_slice(&value);
                        buf.extend_from_slice(b"\r\n");
                        sent += 1;
                        i += conns;
                    }
                    w.write_all(&buf)?;
                    for _ in 0..sent {
                        line.clear();
                        r.read_until(b'\n', &mut line)?;
                        if line.first() != Some(&b'+') {
                            bail!("SET failed: {}", String::from_utf8_lossy(&line));
                        }
                    }
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join().map_err(|_| anyhow!("loader thread panicked"))??;
    }
    Ok(t0.elapsed().as_secs_f64())
}

// ---------------------------------------------------------------------------
// Machine limits: fsync rate, loopback round trip.

/// How [`fsync_probe`] writes.
#[derive(Clone, Copy, PartialEq)]
enum Probe {
    /// 4 KiB overwrites inside a preallocated file, each followed by
    /// `fdatasync` (a WAL segment under `wal-sync-method fdatasync`).
    Overwrite,
    /// 128-byte appends to a growing file, each followed by `fdatasync` (an
    /// AOF under `appendfsync always`).
    Append,
    /// 4 KiB overwrites inside a preallocated file with walship's durable
    /// write (`O_DIRECT | O_DSYNC`, the default `wal-sync-method`).
    Direct,
}

fn fsync_probe(dir: &Path, secs: f64, mode: Probe) -> Result<Value> {
    use walship_engine::{FsStorage, Storage};
    let path = dir.join("fsync-probe");
    let _ = std::fs::remove_file(&path);
    let f = FsStorage.create(&path)?;
    let block = vec![7u8; if mode == Probe::Append { 128 } else { 4096 }];
    if mode != Probe::Append {
        f.write_all_at(&vec![0u8; 256 * 4096], 0)?;
    }
    f.sync_data()?;
    let mut lat = Vec::new();
    let t0 = Instant::now();
    let mut i = 0u64;
    while t0.elapsed().as_secs_f64() < secs {
        let t = Instant::now();
        match mode {
            Probe::Append => f.write_all_at(&block, i * 128)?,
            Probe::Overwrite => f.write_all_at(&block, (i % 256) * 4096)?,
            Probe::Direct => f.write_durable_at(&block, (i % 256) * 4096)?,
        }
        if mode != Probe::Direct {
            f.sync_data()?;
        }
        lat.push(t.elapsed().as_secs_f64() * 1e6);
        i += 1;
    }
    let el = t0.elapsed().as_secs_f64();
    drop(f);
    let _ = std::fs::remove_file(&path);
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Ok(json!({
        "ops_per_s": (lat.len() as f64 / el).round(),
        "p50_us": percentile(&lat, 0.5).round(),
        "p99_us": percentile(&lat, 0.99).round(),
    }))
}

/// Sequential write bandwidth: `bytes` in 1 MiB writes, then one fdatasync.
fn seq_write_probe(dir: &Path, bytes: u64) -> Result<f64> {
    let path = dir.join("seq-probe");
    let mut f = std::fs::File::create(&path)?;
    let chunk = vec![5u8; MIB as usize];
    let t0 = Instant::now();
    for _ in 0..bytes / MIB {
        f.write_all(&chunk)?;
    }
    f.sync_data()?;
    let el = t0.elapsed().as_secs_f64();
    drop(f);
    let _ = std::fs::remove_file(&path);
    Ok((bytes as f64 / 1e6 / el).round())
}

fn loopback_rtt(n: usize) -> Result<Value> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    let h = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = l.accept()?;
        s.set_nodelay(true)?;
        let mut b = [0u8; 1];
        while s.read(&mut b)? == 1 {
            s.write_all(&b)?;
        }
        Ok(())
    });
    let mut c = TcpStream::connect(addr)?;
    c.set_nodelay(true)?;
    let mut lat = Vec::with_capacity(n);
    let mut b = [1u8; 1];
    for _ in 0..n {
        let t = Instant::now();
        c.write_all(&b)?;
        c.read_exact(&mut b)?;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    drop(c);
    let _ = h.join();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Ok(json!({
        "p50_us": (percentile(&lat, 0.5) * 10.0).round() / 10.0,
        "p99_us": (percentile(&lat, 0.99) * 10.0).round() / 10.0,
    }))
}

fn machine_limits(env: &Env, when: &str) -> Result<Value> {
    let secs = if env.o.quick { 1.0 } else { 3.0 };
    let fs = fsync_probe(&env.tmp, secs, Probe::Overwrite)?;
    let fd = fsync_probe(&env.tmp, secs, Probe::Direct)?;
    let fa = fsync_probe(&env.tmp, secs, Probe::Append)?;
    let rtt = loopback_rtt(20_000)?;
    let seq = seq_write_probe(&env.tmp, if env.o.quick { 128 * MIB } else { 512 * MIB })?;
    eprintln!("[limits {when}] sequential write + fdatasync {seq} MB/s");
    eprintln!(
        "[limits {when}] fdatasync after 4 KiB overwrite {} /s (p50 {} µs, p99 {} µs), 4 KiB O_DIRECT|O_DSYNC overwrite {} /s (p50 {} µs), after 128 B append {} /s (p50 {} µs); loopback round trip p50 {} µs; load {}",
        fs["ops_per_s"],
        fs["p50_us"],
        fs["p99_us"],
        fd["ops_per_s"],
        fd["p50_us"],
        fa["ops_per_s"],
        fa["p50_us"],
        rtt["p50_us"],
        loadavg()
    );
    Ok(
        json!({ "fdatasync_4k": fs, "direct_dsync_4k": fd, "fdatasync_append": fa, "seq_write_mb_per_s": seq, "loopback_rtt": rtt, "loadavg": loadavg() }),
    )
}

// ---------------------------------------------------------------------------
// Section: SET throughput matrix (walship, Redis, PostgreSQL), alternating.

struct Workload {
    key: &'static str,
    label: &'static str,
    clients: u32,
    pipeline: u32,
    cal_n: u64,
}

const WORKLOADS: [Workload; 4] = [
    Workload {
        key: "c1",
        label: "1 client",
        clients: 1,
        pipeline: 1,
        cal_n: 300,
    },
    Workload {
        key: "c32",
        label: "32 clients",
        clients: 32,
        pipeline: 1,
        cal_n: 3000,
    },
    Workload {
        key: "c128",
        label: "128 clients",
        clients: 128,
        pipeline: 1,
        cal_n: 6000,
    },
    Workload {
        key: "p16",
        label: "32 clients, -P 16",
        clients: 32,
        pipeline: 16,
        cal_n: 30000,
    },
];

enum Kind {
    Rb(u16),
    Pg(&'static str),
}

struct Target {
    key: &'static str,
    label: &'static str,
    kind: Kind,
}

/// The label of `target` in workload `w`: PostgreSQL's pipelined cell runs
/// `w.pipeline` upserts per pgbench transaction and counts statements.
fn row_label(target: &str, label: &str, w: &Workload) -> String {
    if target.starts_with("pg-") && w.pipeline > 1 {
        format!(
            "{label}; pgbench `\\startpipeline` {0} upserts `\\endpipeline` per transaction, statements/s = tps × {0}",
            w.pipeline
        )
    } else {
        label.to_string()
    }
}

const REDIS_REF: &str = "redis-always-replica";
const PG_REF: &str = "pg-on";

struct SetResults {
    targets: Vec<(&'static str, &'static str)>,
    runs: BTreeMap<(String, String), Vec<Cell>>,
    /// fdatasync p50 (µs) measured just before each repetition of a workload.
    disk: BTreeMap<String, Vec<f64>>,
}

impl SetResults {
    fn med(&self, t: &str, w: &str) -> Option<Cell> {
        let v = self.runs.get(&(t.to_string(), w.to_string()))?;
        if v.is_empty() {
            return None;
        }
        let f = |g: fn(&Cell) -> f64| median(&v.iter().map(g).collect::<Vec<_>>());
        Some(Cell {
            rps: f(|c| c.rps),
            p50: f(|c| c.p50),
            p99: f(|c| c.p99),
        })
    }
}

fn section_set(env: &Env) -> Result<SetResults> {
    let o = &env.o;
    let mut keep: Vec<Cluster> = Vec::new();
    let mut redis: Vec<Proc> = Vec::new();
    let mut targets: Vec<Target> = Vec::new();
    let mut pg = None;
    if o.on("set") {
        eprintln!("[set] starting walship clusters and Redis pairs");
        let shapes: [(&str, &str, usize, &[&str]); 4] = [
            ("walship-alone", "walship alone", 0, &[]),
            ("walship-async", "walship + async standby", 1, &[]),
            (
                "walship-sync",
                "walship + sync standby (FIRST 1, on)",
                1,
                &[
                    "--synchronous-standby-names",
                    "FIRST 1 (s1)",
                    "--synchronous-commit",
                    "on",
                ],
            ),
            (
                "walship-any2",
                "walship + ANY 2 of 3 standbys",
                3,
                &[
                    "--synchronous-standby-names",
                    "ANY 2 (s1, s2, s3)",
                    "--synchronous-commit",
                    "on",
                ],
            ),
        ];
        for (key, label, n, args) in shapes {
            let c = walship_cluster(env, key, n, args)?;
            targets.push(Target {
                key,
                label,
                kind: Kind::Rb(c.primary.port),
            });
            keep.push(c);
        }
        for (key, label, fsync) in [
            (REDIS_REF, "Redis always + replica", "always"),
            (
                "redis-everysec-replica",
                "Redis everysec + replica",
                "everysec",
            ),
        ] {
            let p = env.redis(&format!("{key}-p"), fsync, None)?;
            let r = env.redis(&format!("{key}-r"), fsync, Some(p.port))?;
            wait_online(p.port, 1)?;
            targets.push(Target {
                key,
                label,
                kind: Kind::Rb(p.port),
            });
            redis.push(p);
            redis.push(r);
        }
    }
    if o.on("pg") {
        eprintln!("[pg] starting PostgreSQL primary + synchronous standby");
        pg = Some(start_pg(env)?);
        targets.push(Target {
            key: PG_REF,
            label: "PostgreSQL sync standby, on",
            kind: Kind::Pg("on"),
        });
        targets.push(Target {
            key: "pg-local",
            label: "PostgreSQL sync standby, local",
            kind: Kind::Pg("local"),
        });
    }
    let mut res = SetResults {
        targets: targets.iter().map(|t| (t.key, t.label)).collect(),
        runs: BTreeMap::new(),
        disk: BTreeMap::new(),
    };
    let mut n_for: HashMap<(String, String), u64> = HashMap::new();
    for rep in 0..o.reps {
        for w in &WORKLOADS {
            let d = fsync_probe(&env.tmp, 0.5, Probe::Overwrite)?;
            res.disk
                .entry(w.key.to_string())
                .or_default()
                .push(d["p50_us"].as_f64().unwrap_or(f64::NAN));
            // Rotate the order each repetition so no target always goes first.
            let k = targets.len();
            for j in 0..k {
                let t = &targets[(j + rep) % k];
                let cell = match &t.kind {
                    Kind::Rb(port) => {
                        let id = (t.key.to_string(), w.key.to_string());
                        let n = match n_for.get(&id) {
                            Some(&n) => n,
                            None => {
                                // Calibrate: a short run sizes -n for ~secs.
                                let c =
                                    redis_benchmark(*port, "set", w.clients, w.pipeline, w.cal_n)?;
                                let n = ((c.rps * o.secs) as u64).clamp(w.cal_n, 5_000_000);
                                n_for.insert(id, n);
                                n
                            }
                        };
                        redis_benchmark(*port, "set", w.clients, w.pipeline, n)?
                    }
                    Kind::Pg(level) => {
                        pgbench(pg.as_ref().unwrap(), level, w.clients, w.pipeline, o.secs)?
                    }
                };
                eprintln!(
                    "[set rep {}] {:<40} {:<18} {:>10.0} req/s  p50 {:>7.3} ms  p99 {:>7.3} ms  (load {})",
                    rep + 1,
                    row_label(t.key, t.label, w),
                    w.label,
                    cell.rps,
                    cell.p50,
                    cell.p99,
                    loadavg()
                );
                res.runs
                    .entry((t.key.to_string(), w.key.to_string()))
                    .or_default()
                    .push(cell);
            }
        }
    }
    drop(keep);
    drop(redis);
    if let Some(pg) = pg {
        pg.stop(&pg.dir);
        pg.stop(&pg.root.join("standby"));
    }
    Ok(res)
}

// ---------------------------------------------------------------------------
// Section: GET on a walship standby beside a Redis replica.

fn section_get(env: &Env) -> Result<Value> {
    let keys = 100_000;
    eprintln!("[get] loading {keys} keys into a walship primary (async standby) and a Redis primary (replica)");
    let c = walship_cluster(env, "get-walship", 1, &[])?;
    let rp = env.redis("get-redis-p", "always", None)?;
    let rr = env.redis("get-redis-r", "always", Some(rp.port))?;
    wait_online(rp.port, 1)?;
    load(c.primary.port, keys, keys, 100, 4, 256)?;
    load(rp.port, keys, keys, 100, 4, 256)?;
    for port in [c.standbys[0].port, rr.port] {
        wait_until(Duration::from_secs(120), Duration::from_millis(50), || {
            cmd(port, &["DBSIZE"])
                .map(|s| s == keys.to_string())
                .unwrap_or(false)
        })
        .with_context(|| format!("standby/replica on {port} never reached {keys} keys"))?;
    }
    let targets = [
        ("walship-standby", "walship standby", c.standbys[0].port),
        ("redis-replica", "Redis replica", rr.port),
        ("walship-primary", "walship primary", c.primary.port),
        ("redis-primary", "Redis primary", rp.port),
    ];
    let mut runs: BTreeMap<&str, Vec<Cell>> = BTreeMap::new();
    let mut n_for: HashMap<&str, u64> = HashMap::new();
    for rep in 0..env.o.reps {
        for j in 0..targets.len() {
            let (key, label, port) = targets[(j + rep) % targets.len()];
            let n = match n_for.get(key) {
                Some(&n) => n,
                None => {
                    let c = redis_benchmark(port, "get", 32, 1, 20_000)?;
                    let n = ((c.rps * env.o.secs) as u64).clamp(20_000, 5_000_000);
                    n_for.insert(key, n);
                    n
                }
            };
            let cell = redis_benchmark(port, "get", 32, 1, n)?;
            eprintln!(
                "[get rep {}] {label:<18} {:>10.0} req/s  p50 {:.3} ms  p99 {:.3} ms",
                rep + 1,
                cell.rps,
                cell.p50,
                cell.p99
            );
            runs.entry(key).or_default().push(cell);
        }
    }
    let mut rows = Vec::new();
    for (key, label, _) in targets {
        let v = &runs[key];
        rows.push(json!({
            "target": key, "label": label,
            "rps": median(&v.iter().map(|c| c.rps).collect::<Vec<_>>()),
            "p50_ms": median(&v.iter().map(|c| c.p50).collect::<Vec<_>>()),
            "p99_ms": median(&v.iter().map(|c| c.p99).collect::<Vec<_>>()),
            "runs_rps": v.iter().map(|c| c.rps).collect::<Vec<_>>(),
        }));
    }
    Ok(json!({ "keys": keys, "clients": 32, "rows": rows }))
}

// ---------------------------------------------------------------------------
// Section: recovery after SIGKILL.

/// One row of the recovery table; `log` is the WAL/AOF bytes replayed.
fn recovery_row(
    case: String,
    system: &str,
    log: u64,
    (keys, keys_after): (u64, u64),
    consistent: bool,
    secs: f64,
    ms: Option<u64>,
) -> Value {
    json!({
        "case": case,
        "system": system,
        "wal_bytes_to_replay": log,
        "keys": keys,
        "keys_after": keys_after,
        "consistent": consistent,
        "secs_to_ping": secs,
        "engine_recovery_ms": ms,
        "replay_mb_per_s": ms
            .filter(|&ms| ms > 0 && log > 0)
            .map(|ms| log as f64 / 1e6 / (ms as f64 / 1000.0)),
    })
}

/// The engine's own recovery report from the last "recovery complete" line.
fn last_recovery_line(log: &Path) -> (Option<u64>, Option<u64>) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let line = text.lines().rev().find(|l| l.contains("recovery complete"));
    let field = |name: &str| -> Option<u64> {
        let l = line?;
        let i = l.find(&format!(" {name}="))?;
        l[i + name.len() + 2..]
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    (field("ms"), field("records"))
}

/// The page cache at a restart after SIGKILL.
#[derive(Clone, Copy)]
enum Cache {
    /// What was written (and read by the previous recovery) is still cached.
    Warm,
    /// `sync` and `echo 3 > /proc/sys/vm/drop_caches` between the kill and
    /// the restart: the log, and the binary, are read from the disk.
    Cold,
}

impl Cache {
    const BOTH: [Cache; 2] = [Cache::Warm, Cache::Cold];

    fn name(self) -> &'static str {
        match self {
            Cache::Warm => "warm",
            Cache::Cold => "cold",
        }
    }
}

/// `sync`, then drop the page cache, dentries and inodes (needs root).
fn drop_caches() -> Result<()> {
    run_output(&mut Command::new("sync"))?;
    std::fs::write("/proc/sys/vm/drop_caches", "3").context("writing 3 to /proc/sys/vm/drop_caches")
}

/// Kills `p` with SIGKILL, drops the page cache for `Cache::Cold`, restarts
/// it with `restart` and waits until PING answers: the seconds from the
/// restart, or why the cache could not be dropped (the process is then
/// restarted all the same, for what follows, but not timed).
fn kill_restart(
    p: &mut Proc,
    cache: Cache,
    restart: impl FnOnce() -> Result<Proc>,
) -> Result<Result<f64, String>> {
    p.kill9();
    let dropped = match cache {
        Cache::Warm => Ok(()),
        Cache::Cold => drop_caches().map_err(|e| format!("{e:#}")),
    };
    let t0 = Instant::now();
    *p = restart()?;
    wait_ping(p.port, Duration::from_secs(900))?;
    Ok(dropped.map(|()| t0.elapsed().as_secs_f64()))
}

/// Names a recovery row: `key` (suffixed `-cold` for a cold cache) and the
/// cache, the case label with the cache in it, and the `scenario` shared by
/// a case's warm- and cold-cache rows.
fn cached(mut row: Value, key: &str, cache: Cache) -> Value {
    let scenario = row["case"].as_str().unwrap_or("").to_string();
    row["case"] = json!(format!("{scenario} ({} cache)", cache.name()));
    row["scenario"] = json!(scenario);
    row["cache"] = json!(cache.name());
    row["key"] = json!(match cache {
        Cache::Warm => key.to_string(),
        Cache::Cold => format!("{key}-cold"),
    });
    row
}

/// A row for a cold-cache case that could not drop the page cache.
fn skipped_row(case: String, system: &str, reason: String) -> Value {
    eprintln!("[recovery] {case}, cold cache: skipped: {reason}");
    json!({ "case": case, "system": system, "skipped": reason })
}

/// `kill -9` of walship `p` and a restart, timed, with a warm and then with
/// a cold page cache: two rows, named `key`.
fn kill_and_recover(
    env: &Env,
    p: &mut Proc,
    name: &str,
    args: &[&str],
    label: &str,
    key: &str,
) -> Result<Vec<Value>> {
    let mut rows = Vec::new();
    for cache in Cache::BOTH {
        let end = info_u64(p.port, "persistence", "wal_end_lsn")?;
        let ckpt = info_u64(p.port, "persistence", "last_checkpoint_lsn")?;
        let keys: u64 = cmd(p.port, &["DBSIZE"])?.parse()?;
        let wal_on_disk = dir_size(&p.dir.join("wal"));
        let port = p.port;
        let case = format!("walship: {label}");
        let secs = match kill_restart(p, cache, || env.walship_at(name, port, args))? {
            Ok(secs) => secs,
            Err(reason) => {
                rows.push(cached(skipped_row(case, "walship", reason), key, cache));
                continue;
            }
        };
        let i = info(port, "replication")?;
        let consistent = i
            .get("walship_consistent")
            .map(|s| s == "1")
            .unwrap_or(false);
        let keys_after: u64 = cmd(port, &["DBSIZE"])?.parse()?;
        let (ms, records) = last_recovery_line(&p.log);
        let replay = end.saturating_sub(ckpt);
        eprintln!(
            "[recovery] {label}, {} cache: {:.2} s to PING ({} ms engine recovery, {} records, {:.0} MiB WAL after the checkpoint), consistent={consistent}, keys {keys} -> {keys_after}",
            cache.name(),
            secs,
            ms.map_or("?".into(), |v| v.to_string()),
            records.map_or("?".into(), |v| v.to_string()),
            replay as f64 / MIB as f64
        );
        let mut row = recovery_row(
            case,
            "walship",
            replay,
            (keys, keys_after),
            consistent,
            secs,
            ms,
        );
        row["wal_bytes_on_disk"] = json!(wal_on_disk);
        row["records_replayed"] = json!(records);
        rows.push(cached(row, key, cache));
    }
    Ok(rows)
}

/// Writes 64 KiB values over `key_space` keys until the WAL end passes `target`.
fn fill_wal(port: u16, target: u64, key_space: u64) -> Result<()> {
    let vs = 64 * 1024;
    loop {
        let end = info_u64(port, "persistence", "wal_end_lsn")?;
        if end >= target {
            return Ok(());
        }
        let count = (target - end).div_ceil(vs as u64 + 40).max(16);
        let secs = load(port, count, key_space, vs, 4, 16)?;
        eprintln!(
            "[fill] wrote {:.0} MiB of 64 KiB values in {secs:.1} s ({:.0} MB/s)",
            (count * vs as u64) as f64 / MIB as f64,
            (count * vs as u64) as f64 / 1e6 / secs
        );
    }
}

fn section_recovery(env: &Env) -> Result<Value> {
    let (small, big) = if env.o.quick {
        (256 * MIB, GIB)
    } else {
        (GIB, 4 * GIB)
    };
    let small_keys: u64 = if env.o.quick { 200_000 } else { 1_000_000 };
    let args = ["--checkpoint-every", "1t"];
    let mut rows = Vec::new();
    let mut p = env.walship("recovery", &args)?;
    wait_ping(p.port, Duration::from_secs(60))?;
    let gib = |b: u64| format!("{:.2} GiB", b as f64 / GIB as f64);
    fill_wal(p.port, small, 1024)?;
    rows.extend(kill_and_recover(
        env,
        &mut p,
        "recovery",
        &args,
        &format!("{} of WAL, 64 KiB values", gib(small)),
        "walship-big1",
    )?);
    fill_wal(p.port, big, 1024)?;
    rows.extend(kill_and_recover(
        env,
        &mut p,
        "recovery",
        &args,
        &format!("{} of WAL, 64 KiB values", gib(big)),
        "walship-big2",
    )?);
    cmd_timeout(p.port, &["SAVE"], Duration::from_secs(600))?;
    rows.extend(kill_and_recover(
        env,
        &mut p,
        "recovery",
        &args,
        "same data just after SAVE (checkpoint)",
        "walship-big-ckpt",
    )?);
    drop(p);
    let _ = std::fs::remove_dir_all(env.tmp.join("recovery"));

    let mut q = env.walship("recovery-small", &args)?;
    wait_ping(q.port, Duration::from_secs(60))?;
    load(q.port, small_keys, small_keys, 100, 4, 256)?;
    rows.extend(kill_and_recover(
        env,
        &mut q,
        "recovery-small",
        &args,
        &format!("{}k keys, 100-byte values, all in WAL", small_keys / 1000),
        "walship-small",
    )?);
    cmd_timeout(q.port, &["SAVE"], Duration::from_secs(600))?;
    rows.extend(kill_and_recover(
        env,
        &mut q,
        "recovery-small",
        &args,
        &format!(
            "{}k keys, 100-byte values, just after SAVE",
            small_keys / 1000
        ),
        "walship-small-ckpt",
    )?);
    drop(q);
    let _ = std::fs::remove_dir_all(env.tmp.join("recovery-small"));
    let vs = 64 * 1024u64;
    rows.extend(redis_recovery(
        env,
        "recovery-redis",
        &format!("{} of AOF, 64 KiB values", gib(small)),
        "redis-big1",
        |port, dir| {
            while dir_size(dir) < small {
                let count = (small - dir_size(dir)).div_ceil(vs + 40).max(16);
                load(port, count, 1024, vs as usize, 4, 16)?;
            }
            Ok(())
        },
    )?);
    rows.extend(redis_recovery(
        env,
        "recovery-redis-small",
        &format!("{}k keys, 100-byte values, all in AOF", small_keys / 1000),
        "redis-small",
        |port, _| load(port, small_keys, small_keys, 100, 4, 256).map(|_| ()),
    )?);
    Ok(
        json!({ "note": "Each case is timed twice: warm cache, right after the writes (the log written just before the kill is still in the page cache), then, killed again, cold cache: after the kill `sync` and `echo 3 > /proc/sys/vm/drop_caches`, so the log and the binary are read from the disk", "rows": rows }),
    )
}

/// Redis 7 with `appendfsync always` and AOF rewrites off, filled by `fill`,
/// killed with SIGKILL and restarted, with a warm and then with a cold page
/// cache: time until PING answers (Redis answers -LOADING until the AOF is
/// loaded). Two rows, named `key`.
fn redis_recovery(
    env: &Env,
    name: &str,
    label: &str,
    key: &str,
    fill: impl FnOnce(u16, &Path) -> Result<()>,
) -> Result<Vec<Value>> {
    let extra = ["--auto-aof-rewrite-percentage", "0"];
    let port = free_port()?;
    let mut r = env.redis_at(name, port, "always", None, &extra)?;
    wait_ping(port, Duration::from_secs(30))?;
    fill(port, &r.dir)?;
    let mut rows = Vec::new();
    for cache in Cache::BOTH {
        let aof = dir_size(&r.dir);
        let keys: u64 = cmd(port, &["DBSIZE"])?.parse()?;
        let case = format!("Redis: {label}");
        let restart = || env.redis_at(name, port, "always", None, &extra);
        let secs = match kill_restart(&mut r, cache, restart)? {
            Ok(secs) => secs,
            Err(reason) => {
                rows.push(cached(skipped_row(case, "redis", reason), key, cache));
                continue;
            }
        };
        let keys_after: u64 = cmd(port, &["DBSIZE"])?.parse()?;
        // "DB loaded from append only file: 1.234 seconds"
        let text = std::fs::read_to_string(&r.log).unwrap_or_default();
        let ms = text
            .lines()
            .rev()
            .find(|l| l.contains("DB loaded from"))
            .and_then(|l| l.rsplit(": ").next())
            .and_then(|v| v.trim_end_matches(" seconds").trim().parse::<f64>().ok())
            .map(|s| (s * 1000.0).round() as u64);
        eprintln!(
            "[recovery] Redis AOF, {label}, {} cache: {secs:.2} s to PING ({} ms loading, {:.0} MiB AOF), keys {keys} -> {keys_after}",
            cache.name(),
            ms.map_or("?".into(), |v| v.to_string()),
            aof as f64 / MIB as f64
        );
        let row = recovery_row(
            case,
            "redis",
            aof,
            (keys, keys_after),
            keys == keys_after,
            secs,
            ms,
        );
        rows.push(cached(row, key, cache));
    }
    drop(r);
    let _ = std::fs::remove_dir_all(env.tmp.join(name));
    Ok(rows)
}

// ---------------------------------------------------------------------------
// Section: standby catch-up and base backup rates.

fn flushed(port: u16) -> u64 {
    info_u64(port, "replication", "walship_flushed_lsn").unwrap_or(0)
}

fn section_catchup(env: &Env) -> Result<Value> {
    let (bytes, key_space) = if env.o.quick {
        (256 * MIB, 4096)
    } else {
        (GIB, 16384)
    };
    let small_keys: u64 = if env.o.quick { 200_000 } else { 1_000_000 };
    let mut c = walship_cluster(env, "catchup", 1, &[])?;
    let pport = c.primary.port;
    let sargs_owned = [
        "--replicate-from".to_string(),
        format!("127.0.0.1:{pport}"),
        "--name".into(),
        "s1".into(),
    ];
    let sargs: Vec<&str> = sargs_owned.iter().map(|s| s.as_str()).collect();
    load(pport, 1000, 1000, 100, 1, 100)?;
    let end = info_u64(pport, "persistence", "wal_end_lsn")?;
    let sport = c.standbys[0].port;
    wait_until(Duration::from_secs(60), Duration::from_millis(20), || {
        flushed(sport) >= end
    })?;
    c.standbys[0].stop();
    let before = end;
    fill_wal(pport, end + bytes, key_space)?;
    let target = info_u64(pport, "persistence", "wal_end_lsn")?;
    let base_before = 0u64;
    let t0 = Instant::now();
    c.standbys[0] = env.walship_at("catchup-s1", sport, &sargs)?;
    wait_until(Duration::from_secs(900), Duration::from_millis(10), || {
        flushed(sport) >= target
    })
    .context("standby never caught up")?;
    let secs = t0.elapsed().as_secs_f64();
    let backups = info_u64(sport, "replication", "walship_base_backups").unwrap_or(base_before);
    let mb_s = (target - before) as f64 / 1e6 / secs;
    eprintln!(
        "[catchup] {:.0} MiB behind: caught up in {secs:.2} s from process start ({mb_s:.0} MB/s; base backups during catch-up: {backups})",
        (target - before) as f64 / MIB as f64
    );
    let catchup = json!({ "bytes": target - before, "secs": secs, "mb_per_s": mb_s, "base_backups": backups });

    let mut backups_out = Vec::new();
    let mut base = |pport: u16, name: &str, label: String| -> Result<()> {
        let target = info_u64(pport, "persistence", "wal_end_lsn")?;
        let keys: u64 = cmd(pport, &["DBSIZE"])?.parse()?;
        let t0 = Instant::now();
        let from = format!("127.0.0.1:{pport}");
        let mut s = env.walship(name, &["--replicate-from", &from, "--name", "new"])?;
        let sp = s.port;
        wait_until(Duration::from_secs(900), Duration::from_millis(10), || {
            info(sp, "replication")
                .map(|i| {
                    i.get("walship_replication_state")
                        .map(|s| s == "streaming")
                        .unwrap_or(false)
                        && i.get("walship_flushed_lsn")
                            .and_then(|v| v.parse::<u64>().ok())
                            .unwrap_or(0)
                            >= target
                })
                .unwrap_or(false)
        })
        .context("new standby never reached streaming")?;
        let secs = t0.elapsed().as_secs_f64();
        let size = dir_size(&s.dir);
        let mb_s = size as f64 / 1e6 / secs;
        eprintln!(
            "[basebackup] {label}: {keys} keys, standby data dir {:.0} MiB, streaming and caught up after {secs:.2} s ({mb_s:.0} MB/s)",
            size as f64 / MIB as f64
        );
        backups_out.push(
            json!({ "case": label, "keys": keys, "bytes": size, "secs": secs, "mb_per_s": mb_s }),
        );
        s.stop();
        Ok(())
    };
    base(
        pport,
        "catchup-new",
        format!("{} keys of 64 KiB", key_space),
    )?;
    drop(c);
    let q = env.walship("basebackup-small", &[])?;
    wait_ping(q.port, Duration::from_secs(60))?;
    load(q.port, small_keys, small_keys, 100, 4, 256)?;
    base(
        q.port,
        "basebackup-small-new",
        format!("{}k keys of 100 bytes", small_keys / 1000),
    )?;
    drop(q);
    // Without PostgreSQL (or root) the walship figures still count.
    let pg = match pg_base_backup(env, bytes) {
        Ok(v) => v,
        Err(e) => {
            check_stop()?;
            eprintln!("[basebackup] PostgreSQL: failed: {e:#}");
            json!({ "error": format!("{e:#}") })
        }
    };
    Ok(json!({ "catchup": catchup, "base_backup": backups_out, "pg_base_backup": pg }))
}

/// PostgreSQL 15 beside walship's base backup: a primary holding about
/// `bytes` in a table of 1000-byte rows (below the TOAST threshold, so not
/// compressed), after a CHECKPOINT, copied by `pg_basebackup -X stream -c
/// fast` over loopback as the postgres user; bytes = the backup directory.
fn pg_base_backup(env: &Env, bytes: u64) -> Result<Value> {
    let pg = start_pg_primary(env, "pg-basebackup", "")?;
    let measure = || -> Result<Value> {
        pg.psql("create table kv (k bigint primary key, v text)")?;
        let size =
            || -> Result<u64> { Ok(pg.psql("select pg_total_relation_size('kv')")?.parse()?) };
        // A first 10k rows give the bytes per row; then batches of at most
        // 200k rows up to `bytes`.
        let mut rows = 0u64;
        loop {
            let now = size()?;
            if now >= bytes {
                break;
            }
            let n = if rows == 0 {
                10_000
            } else {
                ((bytes - now) as f64 * rows as f64 / now as f64).ceil() as u64
            };
            let n = n.clamp(1000, 200_000);
            pg.psql(&format!(
                "insert into kv select g, repeat('x', 1000) from generate_series({}, {}) g",
                rows + 1,
                rows + n
            ))?;
            rows += n;
        }
        let table = size()?;
        pg.psql("checkpoint")?;
        let dest = pg.root.join("backup");
        let t0 = Instant::now();
        pg.basebackup(&dest, &["-X", "stream", "-c", "fast"])?;
        let secs = t0.elapsed().as_secs_f64();
        let size = dir_size(&dest);
        let _ = std::fs::remove_dir_all(&dest);
        let mb_s = size as f64 / 1e6 / secs;
        eprintln!(
            "[basebackup] PostgreSQL: {rows} rows of 1000 bytes (table + index {:.0} MiB), pg_basebackup of {:.0} MiB in {secs:.2} s ({mb_s:.0} MB/s)",
            table as f64 / MIB as f64,
            size as f64 / MIB as f64
        );
        Ok(
            json!({ "case": format!("{}k rows of 1000 bytes", rows / 1000), "rows": rows, "table_bytes": table, "bytes": size, "secs": secs, "mb_per_s": mb_s }),
        )
    };
    let res = measure();
    pg.stop(&pg.dir);
    let _ = std::fs::remove_dir_all(&pg.root);
    res
}

// ---------------------------------------------------------------------------
// Section: memory per key.

fn section_memory(env: &Env) -> Result<Value> {
    let keys: u64 = if env.o.quick { 200_000 } else { 1_000_000 };
    let w = env.walship("memory-walship", &[])?;
    wait_ping(w.port, Duration::from_secs(60))?;
    let r = env.redis("memory-redis", "everysec", None)?;
    let w0 = vm_rss(w.pid())?;
    let r0 = vm_rss(r.pid())?;
    let ru0 = info_u64(r.port, "memory", "used_memory")?;
    load(w.port, keys, keys, 100, 4, 256)?;
    load(r.port, keys, keys, 100, 4, 256)?;
    std::thread::sleep(Duration::from_millis(500));
    let w1 = vm_rss(w.pid())?;
    let r1 = vm_rss(r.pid())?;
    let ru1 = info_u64(r.port, "memory", "used_memory")?;
    let per = |a: u64, b: u64| b.saturating_sub(a) as f64 / keys as f64;
    let v = json!({
        "keys": keys,
        "walship_rss_per_key": per(w0, w1),
        "redis_used_memory_per_key": per(ru0, ru1),
        "redis_rss_per_key": per(r0, r1),
        "walship_rss_before": w0, "walship_rss_after": w1,
        "redis_used_memory_before": ru0, "redis_used_memory_after": ru1,
        "redis_rss_before": r0, "redis_rss_after": r1,
    });
    eprintln!(
        "[memory] {keys} keys: walship RSS {:.0} B/key, Redis used_memory {:.0} B/key (RSS {:.0} B/key)",
        per(w0, w1),
        per(ru0, ru1),
        per(r0, r1)
    );
    Ok(v)
}

// ---------------------------------------------------------------------------
// SVG: grouped bar charts, hand-written.

const COLORS: [&str; 8] = [
    "#9ecae1", "#4292c6", "#08519c", "#08306b", "#e6550d", "#fdae6b", "#31a354", "#a1d99b",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn fmt_num(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if v >= 10.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A grouped bar chart; `log` for a logarithmic y axis.
fn bar_chart(
    title: &str,
    ylabel: &str,
    groups: &[String],
    series: &[(String, Vec<Option<f64>>)],
    log: bool,
) -> String {
    // Wide enough for the longest legend entry (about 6.6 px a character).
    let longest = series
        .iter()
        .map(|s| s.0.chars().count())
        .max()
        .unwrap_or(0);
    let (w, h) = (
        (700.0 + 50.0 + longest as f64 * 6.6).max(980.0).ceil(),
        440.0,
    );
    let (l, r, t, b) = (80.0, 700.0, 50.0, 360.0);
    let vals: Vec<f64> = series
        .iter()
        .flat_map(|s| s.1.iter().flatten().copied())
        .filter(|v| v.is_finite() && *v > 0.0)
        .collect();
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"24\" font-size=\"16\" text-anchor=\"middle\">{}</text>\n",
        (l + r) / 2.0,
        esc(title)
    );
    if vals.is_empty() {
        s.push_str("</svg>\n");
        return s;
    }
    let vmax = vals.iter().cloned().fold(f64::MIN, f64::max);
    let vmin = vals.iter().cloned().fold(f64::MAX, f64::min);
    let (lo, hi) = if log {
        (
            10f64.powf(vmin.log10().floor()),
            10f64.powf(vmax.log10().ceil()),
        )
    } else {
        let mag = 10f64.powf(vmax.log10().floor());
        (0.0, (vmax / mag).ceil() * mag)
    };
    let y = |v: f64| -> f64 {
        if log {
            b - (v.log10() - lo.log10()) / (hi.log10() - lo.log10()) * (b - t)
        } else {
            b - v / hi * (b - t)
        }
    };
    // Grid and ticks.
    let mut ticks = Vec::new();
    if log {
        let mut d = lo;
        while d <= hi * 1.0001 {
            for m in [1.0, 2.0, 5.0] {
                if d * m <= hi * 1.0001 {
                    ticks.push(d * m);
                }
            }
            d *= 10.0;
        }
    } else {
        for i in 0..=5 {
            ticks.push(hi * i as f64 / 5.0);
        }
    }
    for tv in ticks {
        let yy = y(tv);
        let _ = writeln!(
            s,
            "<line x1=\"{l}\" x2=\"{r}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            l - 6.0,
            yy + 4.0,
            fmt_num(tv)
        );
    }
    let _ = writeln!(
        s,
        "<text transform=\"translate(18,{}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
        (t + b) / 2.0,
        esc(ylabel)
    );
    let gw = (r - l) / groups.len() as f64;
    let bw = (gw * 0.85) / series.len().max(1) as f64;
    let label_values = groups.len() * series.len() <= 16;
    for (gi, g) in groups.iter().enumerate() {
        let gx = l + gi as f64 * gw + gw * 0.075;
        for (si, (name, v)) in series.iter().enumerate() {
            let Some(val) = v.get(gi).copied().flatten() else {
                continue;
            };
            if !(val.is_finite() && val > 0.0) {
                continue;
            }
            let x = gx + si as f64 * bw;
            let yy = y(val.max(lo));
            let _ = writeln!(
                s,
                "<rect x=\"{x:.1}\" y=\"{yy:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{}: {}</title></rect>",
                bw * 0.92,
                b - yy,
                COLORS[si % COLORS.len()],
                esc(name),
                fmt_num(val)
            );
            if label_values {
                let _ = writeln!(
                    s,
                    "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"middle\">{}</text>",
                    x + bw * 0.46,
                    yy - 3.0,
                    fmt_num(val)
                );
            }
        }
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            l + gi as f64 * gw + gw / 2.0,
            b + 18.0,
            esc(g)
        );
    }
    let _ = writeln!(
        s,
        "<line x1=\"{l}\" x2=\"{r}\" y1=\"{b}\" y2=\"{b}\" stroke=\"#333\"/>"
    );
    for (si, (name, _)) in series.iter().enumerate() {
        let yy = t + 10.0 + si as f64 * 20.0;
        let _ = writeln!(
            s,
            "<rect x=\"{}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{}</text>",
            r + 20.0,
            yy - 10.0,
            COLORS[si % COLORS.len()],
            r + 38.0,
            yy,
            esc(name)
        );
    }
    if log {
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" fill=\"#666\">log scale</text>",
            r + 20.0,
            b
        );
    }
    s.push_str("</svg>\n");
    s
}

// ---------------------------------------------------------------------------
// Report.

fn f0(v: f64) -> String {
    if !v.is_finite() {
        return "–".into();
    }
    let s = format!("{:.0}", v);
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 && ch != '-' {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn f3(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.3}")
    } else {
        "–".into()
    }
}

fn ratio(a: f64, b: Option<f64>) -> String {
    match b {
        Some(b) if b > 0.0 && a.is_finite() && b.is_finite() => format!("{:.2}×", a / b),
        _ => "–".into(),
    }
}

fn ok_section<'a>(other: &'a BTreeMap<&str, Value>, k: &str) -> Option<&'a Value> {
    other.get(k).filter(|v| v.get("error").is_none())
}

fn report(
    o: &Opts,
    meta: &Value,
    limits: &[Value],
    set: Option<&SetResults>,
    other: &BTreeMap<&str, Value>,
) -> Result<()> {
    std::fs::create_dir_all(&o.out)?;
    let mut md = String::new();
    let _ = writeln!(md, "# walship comparison run\n");
    let _ = writeln!(
        md,
        "{} · commit {} · {} · {} · load average at start {} and end {} · {} repetition(s), {} s per throughput run; medians.\n",
        meta["date"].as_str().unwrap_or(""),
        meta["commit"].as_str().unwrap_or(""),
        meta["cpu"].as_str().unwrap_or(""),
        if o.quick { "quick mode" } else { "full mode" },
        meta["load_start"].as_str().unwrap_or(""),
        meta["load_end"].as_str().unwrap_or(""),
        o.reps,
        o.secs
    );
    if !limits.is_empty() {
        let _ = writeln!(md, "## Machine limits\n\n| when | 4 KiB overwrite + fdatasync /s | p50 µs | p99 µs | 4 KiB O_DIRECT\\|O_DSYNC overwrite /s | p50 µs | 128 B append + fdatasync /s | p50 µs | p99 µs | sequential write MB/s | loopback round trip p50 µs | p99 µs | load average |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
        for (i, l) in limits.iter().enumerate() {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                if i == 0 { "start" } else { "end" },
                f0(l["fdatasync_4k"]["ops_per_s"].as_f64().unwrap_or(f64::NAN)),
                l["fdatasync_4k"]["p50_us"],
                l["fdatasync_4k"]["p99_us"],
                f0(l["direct_dsync_4k"]["ops_per_s"]
                    .as_f64()
                    .unwrap_or(f64::NAN)),
                l["direct_dsync_4k"]["p50_us"],
                f0(l["fdatasync_append"]["ops_per_s"]
                    .as_f64()
                    .unwrap_or(f64::NAN)),
                l["fdatasync_append"]["p50_us"],
                l["fdatasync_append"]["p99_us"],
                l["seq_write_mb_per_s"],
                l["loopback_rtt"]["p50_us"],
                l["loopback_rtt"]["p99_us"],
                l["loadavg"].as_str().unwrap_or("")
            );
        }
        md.push('\n');
    }
    let mut charts: Vec<(String, String)> = Vec::new();
    if let Some(set) = set {
        let _ = writeln!(
            md,
            "## SET throughput and latency\n\nredis-benchmark `-t set -d 100 -r 100000` (PostgreSQL: pgbench `-M prepared` upserting 100-byte values over 100k keys, one statement per transaction; latency from its per-transaction log). In the `-P 16` table PostgreSQL runs 16 upserts between `\\startpipeline` and `\\endpipeline` per pgbench transaction (one implicit transaction, one commit), and its req/s is statements/s, pgbench's tps × 16, to compare with redis-benchmark's requests/s; its latency is per 16-statement transaction, as redis-benchmark's is per 16-command batch. walship with `--fsync always`; Redis with `appendonly yes`; every replica/standby on this machine. Ratios are this row's median over the reference's median at the same client count.\n"
        );
        for w in &WORKLOADS {
            let _ = writeln!(md, "### {}\n\n| setup | req/s | p50 ms | p99 ms | vs Redis always + replica | vs PostgreSQL sync on | runs (req/s) |\n|---|---:|---:|---:|---:|---:|---|", w.label);
            let rref = set.med(REDIS_REF, w.key).map(|c| c.rps);
            let pref = set.med(PG_REF, w.key).map(|c| c.rps);
            for (tk, tl) in &set.targets {
                let Some(c) = set.med(tk, w.key) else {
                    continue;
                };
                let runs = set.runs[&(tk.to_string(), w.key.to_string())]
                    .iter()
                    .map(|c| f0(c.rps))
                    .collect::<Vec<_>>()
                    .join(" / ");
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {} | {runs} |",
                    row_label(tk, tl, w),
                    f0(c.rps),
                    f3(c.p50),
                    f3(c.p99),
                    ratio(c.rps, rref),
                    ratio(c.rps, pref)
                );
            }
            if let Some(d) = set.disk.get(w.key) {
                let _ = writeln!(
                    md,
                    "\n4 KiB overwrite + fdatasync p50 just before each repetition: {} µs.",
                    d.iter().map(|v| f0(*v)).collect::<Vec<_>>().join(" / ")
                );
            }
            md.push('\n');
        }
        let groups: Vec<String> = WORKLOADS.iter().map(|w| w.label.to_string()).collect();
        let series = |f: fn(&Cell) -> f64| -> Vec<(String, Vec<Option<f64>>)> {
            set.targets
                .iter()
                .map(|(k, l)| {
                    (
                        l.to_string(),
                        WORKLOADS
                            .iter()
                            .map(|w| set.med(k, w.key).map(|c| f(&c)))
                            .collect(),
                    )
                })
                .collect()
        };
        charts.push((
            "perf-set-throughput.svg".into(),
            bar_chart(
                "SET throughput (median req/s)",
                "requests per second",
                &groups,
                &series(|c| c.rps),
                true,
            ),
        ));
        charts.push((
            "perf-set-latency.svg".into(),
            bar_chart(
                "SET median latency (p50)",
                "milliseconds",
                &groups,
                &series(|c| c.p50),
                true,
            ),
        ));
    }
    if let Some(g) = ok_section(other, "get") {
        let _ = writeln!(md, "## GET on a standby beside a Redis replica\n\nredis-benchmark `-t get -c 32 -d 100 -r 100000` after loading 100,000 keys through the primary.\n\n| target | req/s | p50 ms | p99 ms | runs (req/s) |\n|---|---:|---:|---:|---|");
        let rows = g["rows"].as_array().cloned().unwrap_or_default();
        let by = |k: &str| {
            rows.iter()
                .find(|r| r["target"] == k)
                .and_then(|r| r["rps"].as_f64())
        };
        for r in &rows {
            let runs = r["runs_rps"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|v| f0(v.as_f64().unwrap_or(f64::NAN)))
                        .collect::<Vec<_>>()
                        .join(" / ")
                })
                .unwrap_or_default();
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {runs} |",
                r["label"].as_str().unwrap_or(""),
                f0(r["rps"].as_f64().unwrap_or(f64::NAN)),
                f3(r["p50_ms"].as_f64().unwrap_or(f64::NAN)),
                f3(r["p99_ms"].as_f64().unwrap_or(f64::NAN)),
            );
        }
        let _ = writeln!(
            md,
            "\nwalship standby / Redis replica: **{}**; walship primary / Redis primary: {}.\n",
            ratio(
                by("walship-standby").unwrap_or(f64::NAN),
                by("redis-replica")
            ),
            ratio(
                by("walship-primary").unwrap_or(f64::NAN),
                by("redis-primary")
            )
        );
        let labels: Vec<String> = rows
            .iter()
            .map(|r| r["label"].as_str().unwrap_or("").to_string())
            .collect();
        charts.push((
            "perf-get.svg".into(),
            bar_chart(
                "GET, 32 clients (median req/s)",
                "requests per second",
                &["GET".to_string()],
                &labels
                    .iter()
                    .zip(&rows)
                    .map(|(l, r)| (l.clone(), vec![r["rps"].as_f64()]))
                    .collect::<Vec<_>>(),
                false,
            ),
        ));
    }
    if let Some(r) = ok_section(other, "recovery") {
        let _ = writeln!(md, "## Recovery after SIGKILL\n\n`kill -9`, then the time from starting the process until it answers PING (walship opens its port only after recovery; Redis answers `-LOADING` until its AOF is loaded), the server's own figure from its log (walship's `recovery complete ... ms=`, Redis's `DB loaded from append only file`), and log replayed per second. walship `--fsync always --checkpoint-every 1t`; Redis `appendfsync always`, AOF rewrites off, so both replay every write. {}.\n\n| case | log to replay | keys | to PING s | own recovery ms | replay MB/s | consistent |\n|---|---:|---:|---:|---:|---:|---|", r["note"].as_str().unwrap_or(""));
        let rows = r["rows"].as_array().cloned().unwrap_or_default();
        for x in &rows {
            if let Some(why) = x["skipped"].as_str() {
                let _ = writeln!(
                    md,
                    "| {} | skipped: {} | | | | | |",
                    x["case"].as_str().unwrap_or(""),
                    why.replace('|', "/")
                );
                continue;
            }
            let _ = writeln!(
                md,
                "| {} | {:.0} MiB | {} | {:.2} | {} | {} | {} |",
                x["case"].as_str().unwrap_or(""),
                x["wal_bytes_to_replay"].as_f64().unwrap_or(0.0) / MIB as f64,
                f0(x["keys"].as_f64().unwrap_or(f64::NAN)),
                x["secs_to_ping"].as_f64().unwrap_or(f64::NAN),
                x["engine_recovery_ms"],
                f0(x["replay_mb_per_s"].as_f64().unwrap_or(f64::NAN)),
                x["consistent"]
            );
        }
        let by = |k: &str| {
            rows.iter()
                .find(|r| r["key"] == k)
                .and_then(|r| r["secs_to_ping"].as_f64())
        };
        for (cache, sfx) in [("warm", ""), ("cold", "-cold")] {
            for (w, r, what) in [
                (
                    "walship-big1",
                    "redis-big1",
                    "the same volume of 64 KiB values",
                ),
                ("walship-small", "redis-small", "the same 100-byte keys"),
            ] {
                if let (Some(a), Some(b)) = (by(&format!("{w}{sfx}")), by(&format!("{r}{sfx}"))) {
                    let _ = writeln!(
                        md,
                        "\nwalship / Redis recovery time, {what}, {cache} cache: **{}** (below 1 is faster).",
                        ratio(a, Some(b))
                    );
                }
            }
        }
        md.push('\n');
        // One bar per case in a "warm cache" and a "cold cache" group.
        let mut scenarios: Vec<&str> = Vec::new();
        for x in &rows {
            let sc = x["scenario"].as_str().unwrap_or("");
            if !scenarios.contains(&sc) {
                scenarios.push(sc);
            }
        }
        let secs_of = |sc: &str, cache: &str| {
            rows.iter()
                .find(|x| x["scenario"] == sc && x["cache"] == cache)
                .and_then(|x| x["secs_to_ping"].as_f64())
        };
        charts.push((
            "perf-recovery.svg".into(),
            bar_chart(
                "Recovery after kill -9 (seconds until PING answers)",
                "seconds",
                &["warm cache".to_string(), "cold cache".to_string()],
                &scenarios
                    .iter()
                    .map(|sc| {
                        (
                            sc.to_string(),
                            vec![secs_of(sc, "warm"), secs_of(sc, "cold")],
                        )
                    })
                    .collect::<Vec<_>>(),
                false,
            ),
        ));
    }
    if let Some(c) = ok_section(other, "catchup") {
        let cu = &c["catchup"];
        let _ = writeln!(md, "## Standby catch-up and base backup over loopback\n\n| what | bytes | seconds | MB/s |\n|---|---:|---:|---:|");
        let _ = writeln!(
            md,
            "| catch-up: standby stopped, primary wrote 64 KiB values, standby restarted (time from process start until its flushed LSN reaches the primary's; base backups: {}) | {:.0} MiB | {:.2} | {} |",
            cu["base_backups"],
            cu["bytes"].as_f64().unwrap_or(0.0) / MIB as f64,
            cu["secs"].as_f64().unwrap_or(f64::NAN),
            f0(cu["mb_per_s"].as_f64().unwrap_or(f64::NAN))
        );
        for b in c["base_backup"].as_array().cloned().unwrap_or_default() {
            let _ = writeln!(
                md,
                "| base backup of a new empty standby, primary holding {} (time until streaming and caught up; bytes = standby data dir) | {:.0} MiB | {:.2} | {} |",
                b["case"].as_str().unwrap_or(""),
                b["bytes"].as_f64().unwrap_or(0.0) / MIB as f64,
                b["secs"].as_f64().unwrap_or(f64::NAN),
                f0(b["mb_per_s"].as_f64().unwrap_or(f64::NAN))
            );
        }
        let pb = &c["pg_base_backup"];
        if let Some(e) = pb["error"].as_str() {
            let _ = writeln!(
                md,
                "| PostgreSQL 15 `pg_basebackup`: failed: {} | | | |",
                e.replace('|', "/").replace('\n', " ")
            );
        } else if pb.is_object() {
            let _ = writeln!(
                md,
                "| PostgreSQL 15: `pg_basebackup -h 127.0.0.1 -X stream -c fast` (as postgres, plain format, fsynced) of a primary holding {} ({:.0} MiB table + index), after a CHECKPOINT; bytes = backup directory | {:.0} MiB | {:.2} | {} |",
                pb["case"].as_str().unwrap_or(""),
                pb["table_bytes"].as_f64().unwrap_or(0.0) / MIB as f64,
                pb["bytes"].as_f64().unwrap_or(0.0) / MIB as f64,
                pb["secs"].as_f64().unwrap_or(f64::NAN),
                f0(pb["mb_per_s"].as_f64().unwrap_or(f64::NAN))
            );
            let walship = c["base_backup"]
                .as_array()
                .and_then(|a| a.first())
                .and_then(|b| b["mb_per_s"].as_f64());
            let _ = writeln!(
                md,
                "\nwalship base backup (64 KiB values) / PostgreSQL `pg_basebackup`, MB/s: **{}** (above 1 is faster).",
                ratio(walship.unwrap_or(f64::NAN), pb["mb_per_s"].as_f64())
            );
        }
        md.push('\n');
    }
    if let Some(m) = ok_section(other, "memory") {
        let wk = m["walship_rss_per_key"].as_f64().unwrap_or(f64::NAN);
        let ru = m["redis_used_memory_per_key"].as_f64().unwrap_or(f64::NAN);
        let rr = m["redis_rss_per_key"].as_f64().unwrap_or(f64::NAN);
        let _ = writeln!(
            md,
            "## Memory per key\n\n{} keys (`key:%012d`, 100-byte values) written into an empty server.\n\n| measure | bytes per key | walship / this |\n|---|---:|---:|\n| walship RSS delta (`VmRSS`) | {} | |\n| Redis `used_memory` delta | {} | {} |\n| Redis RSS delta (`VmRSS`) | {} | {} |\n",
            f0(m["keys"].as_f64().unwrap_or(f64::NAN)),
            f0(wk),
            f0(ru),
            ratio(wk, Some(ru)),
            f0(rr),
            ratio(wk, Some(rr))
        );
    }
    for (k, v) in other {
        if let Some(e) = v.get("error") {
            let _ = writeln!(
                md,
                "## {k}: failed\n\n```text\n{}\n```\n",
                e.as_str().unwrap_or("")
            );
        }
    }
    let mut j = json!({ "meta": meta, "limits": limits });
    if let Some(set) = set {
        let mut rows = Vec::new();
        for (tk, tl) in &set.targets {
            for w in &WORKLOADS {
                let Some(c) = set.med(tk, w.key) else {
                    continue;
                };
                let runs = &set.runs[&(tk.to_string(), w.key.to_string())];
                rows.push(json!({
                    "target": tk, "label": row_label(tk, tl, w), "workload": w.key, "clients": w.clients, "pipeline": w.pipeline,
                    "rps_unit": if tk.starts_with("pg-") && w.pipeline > 1 { "statements/s (pgbench tps × pipeline)" } else if tk.starts_with("pg-") { "transactions/s (one statement each)" } else { "requests/s" },
                    "rps": c.rps, "p50_ms": c.p50, "p99_ms": c.p99,
                    "rps_vs_redis_always_replica": set.med(REDIS_REF, w.key).map(|r| c.rps / r.rps),
                    "rps_vs_pg_sync_on": set.med(PG_REF, w.key).map(|r| c.rps / r.rps),
                    "runs": runs.iter().map(|c| json!({"rps": c.rps, "p50_ms": c.p50, "p99_ms": c.p99})).collect::<Vec<_>>(),
                }));
            }
        }
        j["set"] = Value::Array(rows);
        j["set_fdatasync_p50_us_per_rep"] = json!(set.disk);
    }
    for (k, v) in other {
        j[*k] = v.clone();
    }
    let mdp = o.out.join("results.md");
    std::fs::write(&mdp, &md)?;
    let jp = o.out.join("results.json");
    std::fs::write(&jp, serde_json::to_string_pretty(&j)?)?;
    println!("\n{md}");
    println!("wrote {}", mdp.display());
    println!("wrote {}", jp.display());
    for (name, svg) in charts {
        let p = o.out.join(name);
        std::fs::write(&p, svg)?;
        println!("wrote {}", p.display());
    }
    Ok(())
}

// ---------------------------------------------------------------------------

fn run(o: Opts) -> Result<()> {
    for tool in ["redis-server", "redis-benchmark", "redis-cli"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()?
            .code()
            != Some(0)
        {
            bail!("{tool} not found (apt-get install redis-server redis-tools)");
        }
    }
    if !o.walship.exists() {
        bail!(
            "{} not found: build it with cargo build --release -p walship-server",
            o.walship.display()
        );
    }
    let tmp = tempfile::Builder::new()
        .prefix("walship-compare.")
        .tempdir()?
        .keep();
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    {
        let mut r = reg();
        r.tmp = Some(tmp.clone());
        r.keep = o.keep;
    }
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let dirty = !git(&["status", "--porcelain", "--untracked-files=no"]).is_empty();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let redis_version =
        run_output(Command::new("redis-server").arg("--version")).unwrap_or_default();
    let mut meta = json!({
        "date": Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]).output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default(),
        "commit": format!("{}{}", git(&["rev-parse", "--short", "HEAD"]), if dirty { " (+ uncommitted changes)" } else { "" }),
        "cpu": format!("{nproc} cores, {cpu}"),
        "redis": redis_version.trim(),
        "quick": o.quick, "reps": o.reps, "secs": o.secs,
        "sections": o.only.iter().cloned().collect::<Vec<_>>(),
        "load_start": loadavg(),
    });
    // Run one binary throughout, even if someone rebuilds target/release
    // while this runs.
    let mut o = o;
    let bin = tmp.join("walship");
    std::fs::copy(&o.walship, &bin).with_context(|| format!("copying {}", o.walship.display()))?;
    o.walship = bin;
    let env = Env { o, tmp };
    eprintln!(
        "compare: temporary data under {}; load average {}",
        env.tmp.display(),
        loadavg()
    );
    let mut limits = Vec::new();
    if env.o.on("limits") {
        limits.push(machine_limits(&env, "start")?);
    }
    let set = if env.o.on("set") || env.o.on("pg") {
        Some(section_set(&env)?)
    } else {
        None
    };
    let mut other: BTreeMap<&str, Value> = BTreeMap::new();
    type Section = fn(&Env) -> Result<Value>;
    let sections: [(&str, Section); 4] = [
        ("get", section_get),
        ("memory", section_memory),
        ("catchup", section_catchup),
        ("recovery", section_recovery),
    ];
    for (name, f) in sections {
        if env.o.on(name) {
            check_stop()?;
            match f(&env) {
                Ok(v) => {
                    other.insert(name, v);
                }
                Err(e) => {
                    if STOP.load(Ordering::SeqCst) {
                        return Err(e);
                    }
                    eprintln!("[{name}] failed: {e:#}");
                    other.insert(name, json!({ "error": format!("{e:#}") }));
                }
            }
        }
    }
    if env.o.on("limits") {
        limits.push(machine_limits(&env, "end")?);
    }
    meta["load_end"] = json!(loadavg());
    report(&env.o, &meta, &limits, set.as_ref(), &other)
}

fn main() {
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGTERM,
            on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
    // A watcher cleans up promptly on Ctrl-C even while the main thread
    // waits on a child.
    std::thread::spawn(|| loop {
        if STOP.load(Ordering::SeqCst) {
            eprintln!("compare: interrupted, stopping everything");
            cleanup();
            std::process::exit(130);
        }
        std::thread::sleep(Duration::from_millis(100));
    });
    let code = match parse_opts().and_then(run) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("compare: error: {e:#}");
            1
        }
    };
    cleanup();
    std::process::exit(code);
}
