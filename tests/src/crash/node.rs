//! One `walship server` process of a harness cluster: spawned (inside a
//! network namespace when asked), waited for, killed, restarted with other
//! flags, and queried over RESP.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::cleanup;
use crate::resp::{RawConn, Reply};

/// Failure guard for a start (recovery, base backup): not a speed claim.
const START_GUARD: Duration = Duration::from_secs(30);
/// Connect timeout of the harness's own connections.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Read/write guard of the harness's control connections.
pub const CONTROL_IO_TIMEOUT: Duration = Duration::from_secs(10);
/// WAL segment size of every node: small, so the simulated device and the
/// per-trial preallocation stay cheap.
const SEGMENT_SIZE: &str = "1MiB";

/// Where a node runs and how others reach it.
#[derive(Clone, Debug)]
pub struct Placement {
    /// `ip netns exec <ns>` prefix, for the primary in partition/delay cells.
    pub netns: Option<String>,
    /// `--bind`.
    pub bind: String,
    /// The address the harness (and nodes outside its namespace) connect to.
    pub addr: SocketAddr,
}

/// A node: its name (`p`, `s1`, `s2`), directory and process.
pub struct Node {
    pub name: String,
    pub dir: PathBuf,
    pub placement: Placement,
    bin: PathBuf,
    child: Option<Child>,
    starts: u32,
}

impl Node {
    /// A node that has not started yet; `dir` is created.
    pub fn new(bin: &Path, name: &str, dir: PathBuf, placement: Placement) -> Result<Node> {
        std::fs::create_dir_all(dir.join("data"))
            .with_context(|| format!("creating {}", dir.display()))?;
        Ok(Node {
            name: name.to_string(),
            dir,
            placement,
            bin: bin.to_path_buf(),
            child: None,
            starts: 0,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.placement.addr
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// The last `lines` lines of the node's log, for failure reports.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Starts `walship server` with the harness's fixed flags plus `extra`,
    /// and waits until it answers `PING`.
    pub fn start(&mut self, extra: &[String]) -> Result<()> {
        assert!(
            self.child.is_none(),
            "node {} is already running",
            self.name
        );
        self.starts += 1;
        let mut command = match &self.placement.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        command
            .arg("server")
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .args(["--port", &self.addr().port().to_string()])
            .args(["--bind", &self.placement.bind])
            .args(["--fsync", "always", "--segment-size", SEGMENT_SIZE])
            .args(["--name", &self.name])
            .args(extra)
            .env(
                "RUST_LOG",
                "warn,walship_replication=info,walship_server=info",
            );
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        writeln!(
            log,
            "==== crashtest: start #{}: {command:?} ====",
            self.starts
        )?;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        cleanup::unblock_signals_in_child(&mut command);
        let child = command
            .spawn()
            .with_context(|| format!("spawning {}", self.bin.display()))?;
        cleanup::register_pid(child.id());
        self.child = Some(child);
        let deadline = Instant::now() + START_GUARD;
        loop {
            if let Some(status) = self.try_wait() {
                bail!(
                    "node {} exited during startup ({status})\n{}",
                    self.name,
                    self.log_tail(30)
                );
            }
            if self.answers_ping() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                bail!(
                    "node {} did not answer PING within {START_GUARD:?}\n{}",
                    self.name,
                    self.log_tail(30)
                );
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    fn answers_ping(&self) -> bool {
        self.connect()
            .and_then(|mut c| c.try_command(&["PING"]))
            .is_ok_and(|r| r == Reply::Simple("PONG".into()))
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.try_wait().is_none()
    }

    /// Reaps the child if it exited.
    fn try_wait(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let status = child.try_wait().ok().flatten()?;
        cleanup::forget_pid(child.id());
        self.child = None;
        Some(status)
    }

    /// Waits up to `guard` for the process to exit on its own.
    pub fn wait_exit(&mut self, guard: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + guard;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if self.child.is_none() || Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// SIGTERM (a clean stop: everything durable) and wait for the exit.
    pub fn terminate(&mut self) -> Result<()> {
        self.signal(libc::SIGTERM);
        match self.wait_exit(START_GUARD) {
            Some(status) if status.success() => Ok(()),
            Some(status) => bail!("node {} exited with {status} on SIGTERM", self.name),
            None => {
                self.kill();
                bail!(
                    "node {} still running {START_GUARD:?} after SIGTERM",
                    self.name
                )
            }
        }
    }

    /// SIGKILL and reap; a no-op when not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            cleanup::forget_pid(child.id());
        }
    }

    /// Sends SIGKILL without reaping, so several nodes die at the same instant.
    pub fn signal_kill(&self) {
        self.signal(libc::SIGKILL);
    }

    fn signal(&self, signal: libc::c_int) {
        if let Some(child) = &self.child {
            if let Ok(pid) = libc::pid_t::try_from(child.id()) {
                // SAFETY: kill(2) has no memory-safety preconditions; the pid
                // is our own unreaped child.
                unsafe { libc::kill(pid, signal) };
            }
        }
    }

    /// A fresh control connection.
    pub fn connect(&self) -> std::io::Result<RawConn> {
        RawConn::connect_addr(self.addr(), CONNECT_TIMEOUT, CONTROL_IO_TIMEOUT)
    }

    /// One command on a fresh connection.
    pub fn command(&self, args: &[&str]) -> Result<Reply> {
        let mut con = self
            .connect()
            .with_context(|| format!("connecting to node {} at {}", self.name, self.addr()))?;
        con.try_command(args)
            .with_context(|| format!("{args:?} on node {}", self.name))
    }

    /// `INFO replication` as a map.
    pub fn info(&self) -> Result<Info> {
        let reply = self.command(&["INFO", "replication"])?;
        let text = match &reply {
            Reply::Bulk(Some(_)) | Reply::Verbatim(_) => reply.text(),
            other => bail!("INFO replication on {} replied {other:?}", self.name),
        };
        Ok(Info(
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.to_string(), v.trim_end().to_string()))
                .collect(),
        ))
    }

    /// The whole keyspace (SCAN + MGET); call with no writers.
    pub fn keyspace(&self) -> Result<BTreeMap<Vec<u8>, Vec<u8>>> {
        let mut con = self.connect()?;
        let mut out = BTreeMap::new();
        let mut cursor = "0".to_string();
        loop {
            let reply = con.try_command(&["SCAN", &cursor, "COUNT", "1000"])?;
            let items = match &reply {
                Reply::Array(Some(items)) if items.len() == 2 => items.clone(),
                other => bail!("SCAN on {} replied {other:?}", self.name),
            };
            cursor = items[0].text();
            let keys: Vec<Vec<u8>> = match &items[1] {
                Reply::Array(Some(keys)) => keys
                    .iter()
                    .filter_map(|k| match k {
                        Reply::Bulk(Some(b)) => Some(b.clone()),
                        _ => None,
                    })
                    .collect(),
                other => bail!("SCAN keys on {} were {other:?}", self.name),
            };
            if !keys.is_empty() {
                let mut args: Vec<&[u8]> = vec![b"MGET"];
                args.extend(keys.iter().map(Vec::as_slice));
                let values = con.try_command(&args)?;
                let Reply::Array(Some(values)) = values else {
                    bail!("MGET on {} replied {values:?}", self.name);
                };
                for (k, v) in keys.into_iter().zip(values) {
                    if let Reply::Bulk(Some(v)) = v {
                        out.insert(k, v);
                    }
                }
            }
            if cursor == "0" {
                return Ok(out);
            }
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The fields of `INFO replication`; fields a node does not report read as 0.
#[derive(Clone, Debug, Default)]
pub struct Info(pub BTreeMap<String, String>);

impl Info {
    pub fn get(&self, field: &str) -> Option<&str> {
        self.0.get(field).map(String::as_str)
    }

    /// A numeric field, 0 when absent (fields still to come from newer servers).
    pub fn num(&self, field: &str) -> u64 {
        self.get(field).and_then(|v| v.parse().ok()).unwrap_or(0)
    }
}
