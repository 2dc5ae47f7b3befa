//! Helpers for multi-process replication tests: starting primaries and
//! standbys, reading `INFO replication`, waiting for catch-up, pausing a
//! process, writes whose reply may not come, and raw replication frames.
//!
//! Every wait here is a failure guard ([`CONVERGE_TIMEOUT`] and friends), not
//! an assertion about speed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use crate::dump::dump;
use crate::resp::{encode, RawConn, Reply};
use crate::server::{ServerOptions, TestServer};

/// How long standbys may take to connect and catch up before a test fails.
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a caught-up standby may take to be listed as `online` (its
/// keepalive and status round trips take about a second).
pub const STREAMING_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts a primary with `args` (e.g. `--synchronous-standby-names`).
pub fn start_primary(args: &[&str]) -> TestServer {
    start_node(args)
}

/// Starts a standby named `name` of `primary`, with further `args`.
pub fn start_standby(primary: &TestServer, name: &str, args: &[&str]) -> TestServer {
    let from = format!("127.0.0.1:{}", primary.port());
    let mut all: Vec<&str> = vec!["--replicate-from", &from, "--name", name];
    all.extend_from_slice(args);
    start_node(&all)
}

/// Starts a node with `args` after the harness's own flags.
pub fn start_node(args: &[&str]) -> TestServer {
    TestServer::start_with(ServerOptions {
        extra_args: args.iter().map(|s| s.to_string()).collect(),
        ..ServerOptions::default()
    })
    .unwrap_or_else(|e| panic!("starting walship with {args:?}: {e:#}"))
}

/// A node whose settings live in a TOML file the test may rewrite between
/// restarts (flags cannot change across [`TestServer::restart`]). The file is
/// `<dir>/node.toml`; keep the returned `TempDir` alive as long as the node.
pub fn start_with_config_file(toml: &str) -> (TestServer, tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("walship-test-config-")
        .tempdir()
        .expect("temp dir for a config file");
    let path = dir.path().join("node.toml");
    std::fs::write(&path, toml).expect("writing the config file");
    let server = start_node(&["--config", path.to_str().expect("utf-8 temp path")]);
    (server, dir, path)
}

/// Rewrites a config file made by [`start_with_config_file`].
pub fn write_config(path: &Path, toml: &str) {
    std::fs::write(path, toml).expect("rewriting the config file");
}

/// The fields of `INFO replication`.
#[derive(Clone, Debug)]
pub struct Info(pub BTreeMap<String, String>);

impl Info {
    /// The field's value, if present.
    pub fn get(&self, field: &str) -> Option<&str> {
        self.0.get(field).map(String::as_str)
    }

    /// The field's value; panics naming the whole section if absent.
    pub fn field(&self, field: &str) -> &str {
        self.get(field)
            .unwrap_or_else(|| panic!("INFO replication has no field {field:?}: {self:#?}"))
    }

    /// A numeric field (LSNs, counts).
    pub fn num(&self, field: &str) -> u64 {
        let text = self.field(field);
        text.parse()
            .unwrap_or_else(|_| panic!("INFO field {field}={text:?} is not a number"))
    }

    /// `slaveN` lines of a primary, as maps of their `k=v` parts.
    pub fn slaves(&self) -> Vec<BTreeMap<String, String>> {
        self.0
            .iter()
            .filter(|(k, _)| {
                k.strip_prefix("slave")
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            })
            .map(|(_, v)| parse_kv_list(v))
            .collect()
    }

    /// The `slaveN` line of the standby named `name`.
    pub fn slave_named(&self, name: &str) -> Option<BTreeMap<String, String>> {
        self.slaves()
            .into_iter()
            .find(|s| s.get("name").map(String::as_str) == Some(name))
    }

    /// `walship_slot_<name>` as a map (`restart_lsn`, `invalidated`).
    pub fn slot(&self, name: &str) -> Option<BTreeMap<String, String>> {
        self.get(&format!("walship_slot_{name}")).map(parse_kv_list)
    }
}

fn parse_kv_list(text: &str) -> BTreeMap<String, String> {
    text.split(',')
        .filter_map(|part| part.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `INFO replication` of `server`, over a fresh raw connection.
pub fn info(server: &TestServer) -> Info {
    let mut con = server.raw();
    info_on(&mut con)
}

/// `INFO replication` over an open raw connection.
pub fn info_on(con: &mut RawConn) -> Info {
    let reply = con.command(&["INFO", "replication"]);
    let text = match &reply {
        Reply::Bulk(Some(_)) | Reply::Verbatim(_) => reply.text(),
        other => panic!("INFO replication replied {other:?}"),
    };
    Info(
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_string(), v.trim_end().to_string()))
            .collect(),
    )
}

/// Polls `condition` every 20 ms until it holds; panics after `timeout` with
/// `describe()` (called only then, so it may gather state).
pub fn wait_until(
    timeout: Duration,
    mut condition: impl FnMut() -> bool,
    describe: impl FnOnce() -> String,
) {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("still not true after {timeout:?}: {}", describe());
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the primary lists a standby named `name` as `online`
/// (streaming, caught up), which is when it counts for synchronous commit.
pub fn wait_streaming(primary: &TestServer, name: &str) {
    wait_until(
        STREAMING_TIMEOUT,
        || {
            info(primary)
                .slave_named(name)
                .is_some_and(|s| s.get("state").map(String::as_str) == Some("online"))
        },
        || {
            format!(
                "standby {name} streaming from the primary; primary INFO: {:#?}\n{}",
                info(primary),
                primary.log_tail()
            )
        },
    );
}

/// Waits until each standby's WAL end (`master_repl_offset`) equals the
/// primary's, with its link up. Call it once writes have stopped.
pub fn wait_caught_up(primary: &TestServer, standbys: &[&TestServer]) {
    for standby in standbys {
        wait_until(
            CONVERGE_TIMEOUT,
            || {
                let want = info(primary).num("master_repl_offset");
                let got = info(standby);
                got.get("master_link_status") == Some("up") && got.num("master_repl_offset") == want
            },
            || {
                format!(
                    "standby on port {} catching up with the primary on port {}\nprimary: {:#?}\nstandby: {:#?}\n{}",
                    standby.port(),
                    primary.port(),
                    info(primary),
                    info(standby),
                    standby.log_tail()
                )
            },
        );
    }
}

/// The whole keyspace of `server` (via `SCAN` + `MGET`); call with no writers.
pub fn keyspace(server: &TestServer) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut con = server.connection();
    dump(&mut con)
}

/// Asserts that two nodes hold the same keys and values, showing how they differ if not.
pub fn assert_same_keyspace(a: &TestServer, b: &TestServer) {
    let (ka, kb) = (keyspace(a), keyspace(b));
    assert!(ka == kb, "{}", keyspace_diff(&ka, &kb));
}

/// A short, printable description of how two keyspaces differ.
pub fn keyspace_diff(a: &BTreeMap<Vec<u8>, Vec<u8>>, b: &BTreeMap<Vec<u8>, Vec<u8>>) -> String {
    let mut out = format!("{} keys vs {} keys", a.len(), b.len());
    let mut shown = 0;
    for key in a.keys().chain(b.keys()) {
        if a.get(key) != b.get(key) && shown < 10 {
            shown += 1;
            out.push_str(&format!(
                "\n  {:?}: {:?} vs {:?}",
                String::from_utf8_lossy(key),
                a.get(key).map(|v| String::from_utf8_lossy(v).into_owned()),
                b.get(key).map(|v| String::from_utf8_lossy(v).into_owned())
            ));
        }
    }
    out
}

/// Freezes the server process with `SIGSTOP`: its sockets stay open but it
/// answers nothing, as a hung or partitioned node. Returns once every thread
/// of it is stopped.
///
/// IMPORTANT: `kill` returns before a multi-threaded process is stopped.
/// The kernel wakes one thread to take the signal, and only when that
/// thread runs does it stop the others; on a busy machine the rest can go
/// on for a while. A standby that still received, flushed and confirmed a
/// write in that window made "a write waits while its standby is paused"
/// tests fail now and then.
pub fn pause(server: &TestServer) {
    send_signal(server, libc::SIGSTOP);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match running_threads(server.pid()) {
            Ok(0) => return,
            Ok(n) if Instant::now() >= deadline => {
                panic!(
                    "{n} threads of pid {} still run 10 s after SIGSTOP",
                    server.pid()
                )
            }
            Ok(_) => thread::sleep(Duration::from_millis(1)),
            Err(e) => panic!("reading the threads of pid {}: {e}", server.pid()),
        }
    }
}

/// Threads of `pid` not in the stopped state (`T`), from /proc.
fn running_threads(pid: u32) -> std::io::Result<usize> {
    let mut running = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let stat = match std::fs::read_to_string(task?.path().join("stat")) {
            Ok(s) => s,
            // The thread exited between listing and reading.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        // The state follows the parenthesised command name, which may itself
        // contain spaces or parentheses.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next());
        if state != Some("T") {
            running += 1;
        }
    }
    Ok(running)
}

/// Lets a [`pause`]d server run again (`SIGCONT`).
pub fn resume(server: &TestServer) {
    send_signal(server, libc::SIGCONT);
}

fn send_signal(server: &TestServer, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(server.pid()).expect("pid fits pid_t");
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is the
    // server's own unreaped child.
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(
        rc,
        0,
        "kill({pid}, {signal}): {}",
        std::io::Error::last_os_error()
    );
}

/// A command sent on its own raw connection whose reply may not come yet
/// (a write waiting for synchronous standbys).
pub struct Pending {
    con: RawConn,
    what: String,
}

impl Pending {
    /// Connects to `server`, runs `setup` commands (each must not fail), then
    /// sends `command` without reading its reply.
    pub fn send(server: &TestServer, setup: &[&[&str]], command: &[&str]) -> Pending {
        let mut con = server.raw();
        for cmd in setup {
            let reply = con.command(cmd);
            assert!(!reply.is_error(), "{cmd:?} replied {reply:?}");
        }
        con.send(&encode(command)).expect("sending the command");
        Pending {
            con,
            what: format!("{command:?}"),
        }
    }

    /// The reply if it arrives within `guard`, else `None` (the command is
    /// still pending and can be polled again).
    pub fn reply_within(&mut self, guard: Duration) -> Option<Reply> {
        self.con
            .stream()
            .set_read_timeout(Some(guard))
            .expect("set_read_timeout");
        let result = self.con.read_reply();
        self.con
            .stream()
            .set_read_timeout(Some(crate::resp::IO_TIMEOUT))
            .expect("set_read_timeout");
        match result {
            Ok(reply) => Some(reply),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => panic!("reading the reply to {}: {e}", self.what),
        }
    }

    /// Waits for the reply (failure guard [`CONVERGE_TIMEOUT`]).
    pub fn reply(mut self) -> Reply {
        let what = self.what.clone();
        self.reply_within(CONVERGE_TIMEOUT)
            .unwrap_or_else(|| panic!("no reply to {what} within {CONVERGE_TIMEOUT:?}"))
    }
}

/// Raw replication frames (docs/replication-protocol.md), for hostile tests.
pub mod frames {
    /// Frame type bytes.
    pub const HELLO: u8 = 1;
    pub const WELCOME: u8 = 2;
    pub const REFUSE: u8 = 3;
    pub const WAL_DATA: u8 = 4;
    pub const KEEPALIVE: u8 = 5;
    pub const STATUS: u8 = 6;
    pub const BACKUP_BEGIN: u8 = 7;
    pub const BACKUP_END: u8 = 9;
    pub const ERROR: u8 = 10;

    /// CRC-32 (IEEE, reflected, as `crc32fast` computes it).
    pub fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                let mask = (crc & 1).wrapping_neg();
                crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
            }
        }
        !crc
    }

    /// One well-formed frame: `len | crc(type + payload) | type | payload`.
    pub fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut body = vec![kind];
        body.extend_from_slice(payload);
        let mut out = Vec::with_capacity(8 + body.len());
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32(&body).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// The replication protocol version this build speaks.
    pub const PROTO_VERSION: u32 = 2;

    /// A `Hello` payload with an empty epoch history (the primary then
    /// takes the Hello's epoch as the standby's newest).
    pub fn hello(
        proto_version: u32,
        cluster_id: u64,
        epoch: u64,
        flushed_lsn: u64,
        name: &str,
    ) -> Vec<u8> {
        hello_with_history(proto_version, cluster_id, epoch, flushed_lsn, name, &[])
    }

    /// A `Hello` payload carrying an epoch history, `(epoch, start LSN)`
    /// oldest first.
    pub fn hello_with_history(
        proto_version: u32,
        cluster_id: u64,
        epoch: u64,
        flushed_lsn: u64,
        name: &str,
        history: &[(u64, u64)],
    ) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&proto_version.to_le_bytes());
        p.extend_from_slice(&cluster_id.to_le_bytes());
        p.extend_from_slice(&epoch.to_le_bytes());
        p.extend_from_slice(&flushed_lsn.to_le_bytes());
        p.extend_from_slice(&(name.len() as u32).to_le_bytes());
        p.extend_from_slice(name.as_bytes());
        p.extend_from_slice(&(history.len() as u32).to_le_bytes());
        for (e, start) in history {
            p.extend_from_slice(&e.to_le_bytes());
            p.extend_from_slice(&start.to_le_bytes());
        }
        p
    }

    /// The epoch history in a data directory's `epochs` file
    /// (docs/wal-format.md): magic, count, then (epoch, start LSN) pairs.
    pub fn read_epochs(data_dir: &std::path::Path) -> Vec<(u64, u64)> {
        let b = std::fs::read(data_dir.join("epochs")).expect("reading the epochs file");
        assert_eq!(&b[..8], b"WSHPEPOC", "epochs file magic");
        let n = u32::from_le_bytes(b[8..12].try_into().unwrap()) as usize;
        (0..n)
            .map(|i| {
                let at = 12 + 16 * i;
                let word = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
                (word(at), word(at + 8))
            })
            .collect()
    }

    /// A `Welcome` payload.
    pub fn welcome(cluster_id: u64, epoch: u64, start_lsn: u64, primary_end: u64) -> Vec<u8> {
        let mut p = Vec::new();
        for v in [cluster_id, epoch, start_lsn, primary_end] {
            p.extend_from_slice(&v.to_le_bytes());
        }
        p.push(0); // no base backup
        p
    }

    /// A `WalData` payload.
    pub fn wal_data(epoch: u64, start_lsn: u64, flushed_lsn: u64, wal: &[u8]) -> Vec<u8> {
        let mut p = Vec::new();
        for v in [epoch, start_lsn, flushed_lsn] {
            p.extend_from_slice(&v.to_le_bytes());
        }
        p.extend_from_slice(wal);
        p
    }

    /// A `Status` payload: the standby's epoch and its write, flush and
    /// apply LSNs.
    pub fn status(epoch: u64, write: u64, flush: u64, apply: u64) -> Vec<u8> {
        let mut p = Vec::new();
        for v in [epoch, write, flush, apply, 0] {
            p.extend_from_slice(&v.to_le_bytes());
        }
        p
    }

    /// Parses whole frames out of `bytes` (as a primary or standby sent
    /// them): `(type, payload)` each; stops at the first incomplete one.
    pub fn parse(bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        let mut rest = bytes;
        while rest.len() >= 9 {
            let len = u32::from_le_bytes(rest[0..4].try_into().unwrap()) as usize;
            if len == 0 || rest.len() < 8 + len {
                break;
            }
            out.push((rest[8], rest[9..8 + len].to_vec()));
            rest = &rest[8 + len..];
        }
        out
    }

    /// The reason string of a `Refuse` or `Error` payload.
    pub fn reason(payload: &[u8]) -> String {
        if payload.len() < 4 {
            return String::new();
        }
        let len = u32::from_le_bytes(payload[0..4].try_into().unwrap()) as usize;
        String::from_utf8_lossy(&payload[4..(4 + len).min(payload.len())]).into_owned()
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn crc32_matches_the_standard_check_value() {
            assert_eq!(super::crc32(b"123456789"), 0xCBF4_3926);
        }
    }
}
