//! Multi-process integration tests and the crash-recovery harness for walship.
//!
//! Every test here starts the real `walship` binary as a child process on a
//! free loopback port with its own temporary data directory, and talks to it
//! the way users do: through the `redis` crate, `redis-cli`, raw TCP bytes, or
//! HTTP on the admin port.
//!
//! # Layout
//!
//! - [`binary`] finds the `walship` executable (`WALSHIP_BIN`, else
//!   `target/release/walship`, else `target/debug/walship`) and builds it once
//!   per test process when none exists.
//! - [`ports`] hands out free loopback ports, never the same one twice within
//!   a process.
//! - [`server`] owns one server process: [`server::TestServer`] spawns
//!   `walship server` on a temp data dir, waits until it answers `PING`,
//!   kills it (`SIGKILL`) or stops it (`SIGTERM`), restarts it on the same
//!   directory, and appends everything the child prints to a log file in the
//!   temp dir. Dropping it kills the child; if the test is panicking, the log
//!   tail is printed and the directory is kept for inspection.
//! - [`resp`] is a deliberately small RESP reader/writer over a raw
//!   `TcpStream`, for tests that must see exact wire bytes or send hostile
//!   ones.
//! - [`dump`] reads a server's whole keyspace (`SCAN` + `MGET`) for
//!   comparison with what the test wrote.
//! - [`http`] is a minimal HTTP/1.0 GET client for the admin endpoints.
//! - [`seed`] gives every randomized test a printed, replayable seed
//!   (`WALSHIP_SEED`).
//! - [`crash`] is the crash-recovery harness behind the `crashtest` binary
//!   (`cargo run --release -p walship-tests --bin crashtest -- --short`).
//! - [`process`] runs external programs (`redis-cli`, `redis-benchmark`, a
//!   second `walship`) with a timeout that guards against hangs.
//!
//! A test typically reads:
//!
//! ```no_run
//! let mut server = walship_tests::server::TestServer::start().unwrap();
//! let mut con = server.connection();
//! let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut con).unwrap();
//! server.kill();
//! server.restart().unwrap();
//! ```
//!
//! Timeouts in this crate are failure guards only; no test asserts on how
//! long anything took.
//!
//! # The tests
//!
//! One file per theme under `tests/tests/`: `strings`, `keyspace`,
//! `connection` (server and connection commands, RESP3, pipelining, inline),
//! `auth`, `redis_tools` (`redis-cli`, `redis-benchmark`), `durability`
//! (SIGKILL/SIGTERM/checkpoints against a model of acknowledged writes),
//! `wal_damage` (torn tail, mid-log corruption), `power_loss` (`DEBUG
//! POWERLOSS` on a `--simulate-power-loss` server), `data_dir_lock`,
//! `hostile_input`, `resource_limits`, `admin_http`, `cli_and_config`.
//!
//! # Environment
//!
//! - `WALSHIP_BIN`: the binary to test (default: the workspace's build).
//! - `WALSHIP_SEED`: replay a randomized test with the seed it printed.
//! - `WALSHIP_KEEP_DATA=1`: keep every server's temp dir (failing tests keep
//!   theirs anyway, and print the log tail).
//! - `WALSHIP_START_TIMEOUT_SECS`: how long a start may take (default 30).
//! - `WALSHIP_SKIP_REDIS_TOOLS=1`: skip, rather than fail, the tests that need
//!   `redis-cli` / `redis-benchmark` when they are not installed.
//!
//! `scripts/redis-as-walship` stands in for the binary with a real
//! `redis-server`, to check the tests' Redis expectations against Redis:
//! `WALSHIP_BIN=$PWD/scripts/redis-as-walship cargo test -p walship-tests
//! --release` (walship-only features fail there, as they should).

pub mod binary;
pub mod cluster;
pub mod crash;
pub mod dump;
pub mod http;
pub mod ports;
pub mod process;
pub mod resp;
pub mod seed;
pub mod server;

pub use server::{ServerOptions, TestServer};
