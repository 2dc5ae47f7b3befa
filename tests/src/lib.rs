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

pub mod binary;
pub mod dump;
pub mod http;
pub mod ports;
pub mod process;
pub mod resp;
pub mod seed;
pub mod server;

pub use server::{ServerOptions, TestServer};
