//! One `walship server` child process on a temporary data directory.
//!
//! Directory layout of a [`TestServer`]:
//!
//! ```text
//! <tempdir>/
//!   data/        --data-dir of the server; survives kill and restart
//!   server.log   stdout and stderr of every start, appended, with a header
//!                line per start
//! ```
//!
//! Ports are fresh per server. A restart reuses the previous port when it is
//! still free, else takes a new one: read [`TestServer::port`] after a
//! restart rather than keeping an old copy.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::binary::walship_bin;
use crate::ports::free_port;
use crate::process::{wait_timeout, within};
use crate::resp::{RawConn, Reply};

/// How long a start may take before it counts as failed (failure guard, not
/// an assertion about speed). `WALSHIP_START_TIMEOUT_SECS` overrides it.
const START_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);

/// How long a `SIGTERM`ed server may take to exit before the test fails.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// Read/write timeout on connections handed out by [`TestServer::connection`].
pub const CLIENT_IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Lines of the server log printed when a test panics with a live server.
const LOG_TAIL_LINES: usize = 60;

/// How to start a server. `Default` is a plain primary with an admin port,
/// no password, and the server's default fsync policy.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// `--requirepass`.
    pub requirepass: Option<String>,
    /// `--fsync` (`always`, `interval:<ms>`, `never`); `None` leaves the
    /// server's default.
    pub fsync: Option<String>,
    /// Whether to pass `--admin-port`.
    pub admin: bool,
    /// Further arguments after the ones above (e.g. `--config FILE`).
    pub extra_args: Vec<String>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            requirepass: None,
            fsync: None,
            admin: true,
            extra_args: Vec::new(),
        }
    }
}

/// A running (or stopped, restartable) `walship server` child process.
pub struct TestServer {
    options: ServerOptions,
    /// `None` once the directory was kept for inspection.
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    port: u16,
    admin_port: Option<u16>,
    child: Option<Child>,
    starts: u32,
}

impl TestServer {
    /// A default server, running and answering `PING`.
    pub fn start() -> Result<TestServer> {
        TestServer::start_with(ServerOptions::default())
    }

    /// A server with `options`, running and answering `PING`.
    pub fn start_with(options: ServerOptions) -> Result<TestServer> {
        let dir = tempfile::Builder::new()
            .prefix("walship-test-")
            .tempdir()
            .context("creating a temp dir for the server")?;
        let root = dir.path().to_path_buf();
        std::fs::create_dir(root.join("data")).context("creating the data dir")?;
        let mut server = TestServer {
            admin_port: options.admin.then(free_port),
            options,
            dir: Some(dir),
            root,
            port: free_port(),
            child: None,
            starts: 0,
        };
        server.spawn_until_ready()?;
        Ok(server)
    }

    /// The server's `--data-dir`.
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    /// The temp dir holding the data dir and the log; tests may put their
    /// own files here (config files, expected-state dumps).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file collecting the server's stdout and stderr.
    pub fn log_path(&self) -> PathBuf {
        self.root.join("server.log")
    }

    /// Everything the server printed so far, across all starts.
    pub fn log(&self) -> String {
        std::fs::read(self.log_path())
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// The Redis-protocol port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The admin HTTP port; panics if started with `admin: false`.
    pub fn admin_port(&self) -> u16 {
        self.admin_port
            .expect("server was started without --admin-port")
    }

    /// The options the server was started with.
    pub fn options(&self) -> &ServerOptions {
        &self.options
    }

    /// The child's process id; panics if it is not running.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server is not running").id()
    }

    /// Whether the child is still alive (not exited, or exited and not reaped).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            None => false,
            Some(child) => matches!(child.try_wait(), Ok(None)),
        }
    }

    /// Connection details for the `redis` crate, with the password if any.
    pub fn connection_info(&self) -> redis::ConnectionInfo {
        redis::ConnectionInfo {
            addr: redis::ConnectionAddr::Tcp("127.0.0.1".into(), self.port),
            redis: redis::RedisConnectionInfo {
                db: 0,
                username: None,
                password: self.options.requirepass.clone(),
                protocol: redis::ProtocolVersion::RESP2,
            },
        }
    }

    /// A `redis` crate client for this server.
    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.connection_info()).expect("valid connection info")
    }

    /// A new synchronous connection (authenticated if the server has a
    /// password), with [`CLIENT_IO_TIMEOUT`] on reads and writes.
    pub fn connection(&self) -> redis::Connection {
        self.try_connection().unwrap_or_else(|e| {
            panic!(
                "connecting to walship on port {}: {e}\n{}",
                self.port,
                self.log_tail()
            )
        })
    }

    /// Like [`TestServer::connection`], returning the error. The whole
    /// handshake (connect, `AUTH`) is bounded by [`CLIENT_IO_TIMEOUT`].
    pub fn try_connection(&self) -> redis::RedisResult<redis::Connection> {
        let client = self.client();
        let handshake = within(CLIENT_IO_TIMEOUT, move || {
            client.get_connection_with_timeout(CLIENT_IO_TIMEOUT)
        });
        let con = handshake.unwrap_or_else(|| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connection handshake did not finish",
            )
            .into())
        })?;
        con.set_read_timeout(Some(CLIENT_IO_TIMEOUT))?;
        con.set_write_timeout(Some(CLIENT_IO_TIMEOUT))?;
        Ok(con)
    }

    /// A raw, unauthenticated RESP connection.
    pub fn raw(&self) -> RawConn {
        RawConn::connect(self.port).unwrap_or_else(|e| {
            panic!(
                "raw connect to port {}: {e}\n{}",
                self.port,
                self.log_tail()
            )
        })
    }

    /// Resident memory of the server process in bytes, from `/proc/PID/status`.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("reading /proc/PID/status of the server");
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS line in /proc/PID/status");
        kib * 1024
    }

    /// `SIGKILL`s the server and reaps it: no shutdown code runs, as in a
    /// crash. A no-op if it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `SIGTERM`s the server and waits for it to exit; returns how it exited.
    /// Panics (with the log tail) if it is still running after
    /// [`STOP_TIMEOUT`].
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("server is not running");
        signal(&child, libc::SIGTERM);
        match wait_timeout(&mut child, STOP_TIMEOUT) {
            Some(status) => status,
            None => panic!(
                "walship did not exit within {STOP_TIMEOUT:?} of SIGTERM (killed it)\n{}",
                self.log_tail()
            ),
        }
    }

    /// Starts the server again on the same data dir (and the same port when
    /// it is free). The server must have been stopped first.
    pub fn restart(&mut self) -> Result<()> {
        assert!(
            !self.is_running(),
            "restart() needs a stopped server: call kill() or terminate() first"
        );
        self.child = None;
        self.spawn_until_ready()
    }

    /// Replaces [`ServerOptions::extra_args`] for the next
    /// [`TestServer::restart`] (e.g. to drop `--simulate-power-loss`).
    pub fn set_extra_args(&mut self, args: Vec<String>) {
        self.options.extra_args = args;
    }

    /// Waits for a child that is exiting on its own (`DEBUG POWERLOSS`,
    /// `SHUTDOWN`) and reaps it: its exit status, or `None` if it is still
    /// running after `timeout` (it is left running) or was not running.
    pub fn wait_for_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.child.as_mut()?.try_wait().ok()?;
            if let Some(status) = status {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// A command line for a *second* `walship server` on this server's data
    /// dir, with fresh ports: for tests of the data-dir lock.
    pub fn second_instance_command(&self) -> Command {
        let mut command = Command::new(walship_bin());
        command
            .arg("server")
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--port", &free_port().to_string()])
            .args(["--bind", "127.0.0.1"]);
        if self.options.admin {
            command.args(["--admin-port", &free_port().to_string()]);
        }
        command
    }

    /// The last lines of the log, labelled, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
        format!(
            "---- last {} lines of {} ----\n{}\n---- end of log ----",
            tail.len(),
            self.log_path().display(),
            tail.join("\n")
        )
    }

    fn command(&self) -> Command {
        let mut command = Command::new(walship_bin());
        command
            .arg("server")
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"]);
        if let Some(admin_port) = self.admin_port {
            command.args(["--admin-port", &admin_port.to_string()]);
        }
        if let Some(pass) = &self.options.requirepass {
            command.args(["--requirepass", pass]);
        }
        if let Some(fsync) = &self.options.fsync {
            command.args(["--fsync", fsync]);
        }
        command.args(&self.options.extra_args);
        command.env("RUST_BACKTRACE", "1");
        command
    }

    /// Spawns the child and waits until it answers; retries with fresh ports
    /// when another process took ours in the meantime.
    fn spawn_until_ready(&mut self) -> Result<()> {
        const ATTEMPTS_MAX: u32 = 3;
        for attempt in 1..=ATTEMPTS_MAX {
            let log_len_before = std::fs::metadata(self.log_path()).map_or(0, |m| m.len());
            match self.spawn_and_wait() {
                Ok(()) => return Ok(()),
                Err(e) if attempt < ATTEMPTS_MAX && self.lost_port_race(log_len_before) => {
                    eprintln!("walship-tests: port taken ({e:#}); retrying on fresh ports");
                    self.port = free_port();
                    if self.admin_port.is_some() {
                        self.admin_port = Some(free_port());
                    }
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the last attempt returns")
    }

    fn lost_port_race(&self, log_len_before: u64) -> bool {
        let log = std::fs::read(self.log_path()).unwrap_or_default();
        let new_output =
            String::from_utf8_lossy(log.get(log_len_before as usize..).unwrap_or_default())
                .to_ascii_lowercase();
        new_output.contains("address already in use") || new_output.contains("addrinuse")
    }

    fn spawn_and_wait(&mut self) -> Result<()> {
        self.starts += 1;
        let mut command = self.command();
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .context("opening the server log")?;
        writeln!(
            log,
            "==== walship-tests: start #{}: {command:?} ====",
            self.starts
        )?;
        let stderr: File = log.try_clone()?;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr));
        let child = command
            .spawn()
            .with_context(|| format!("spawning {}", walship_bin().display()))?;
        self.child = Some(child);

        let timeout = start_timeout();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                bail!(
                    "walship exited during startup with {status}\n{}",
                    self.log_tail()
                );
            }
            if self.answers_ping() && self.admin_listening() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                bail!(
                    "walship did not answer PING on port {} within {timeout:?} (killed it)\n{}",
                    self.port,
                    self.log_tail()
                );
            }
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// Ready means: a RESP `PING` gets `+PONG`, or `-NOAUTH` when a password
    /// is required (the server is up and parsing commands either way).
    fn answers_ping(&self) -> bool {
        let Ok(mut con) = RawConn::connect(self.port) else {
            return false;
        };
        if con.send(b"*1\r\n$4\r\nPING\r\n").is_err() {
            return false;
        }
        match con.read_reply() {
            Ok(Reply::Simple(pong)) => pong == "PONG",
            Ok(Reply::Error(e)) => e.starts_with("NOAUTH"),
            _ => false,
        }
    }

    fn admin_listening(&self) -> bool {
        match self.admin_port {
            None => true,
            Some(port) => std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        }
    }
}

fn start_timeout() -> Duration {
    std::env::var("WALSHIP_START_TIMEOUT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(START_TIMEOUT_DEFAULT)
}

fn signal(child: &Child, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own
    // unreaped child, so it cannot have been recycled for another process.
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(
        rc,
        0,
        "kill({pid}, {signal}): {}",
        std::io::Error::last_os_error()
    );
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
        let panicking = thread::panicking();
        if panicking || std::env::var_os("WALSHIP_KEEP_DATA").is_some() {
            if let Some(dir) = self.dir.take() {
                let kept = dir.keep();
                if panicking {
                    eprintln!("{}", self.log_tail());
                }
                eprintln!("walship-tests: kept server dir {}", kept.display());
            }
        }
    }
}
