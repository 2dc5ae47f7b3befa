//! walship server: the `walship` binary's library. Redis-protocol front end,
//! commands, configuration, CLI and the HTTP admin port.
//!
//! # Layout
//!
//! - [`cli`]: `walship server ...` (clap); builds the tokio runtime.
//! - [`config`]: flags + TOML file + defaults → [`config::ServerConfig`].
//! - [`server`]: locks the data directory ([`lock`]), opens the engine
//!   ([`store`]), accepts clients up to `max-clients`, drains on shutdown
//!   ([`shutdown`]: SIGTERM/SIGINT).
//! - [`connection`]: one task per client. Reads into a buffer, parses every
//!   complete request ([`resp`]), runs each ([`commands`]) writing replies
//!   into one output buffer ([`reply`], RESP2 or RESP3), waits once for the
//!   durability of the batch's writes, then sends all replies in one write.
//! - [`commands`]: the command table (arity, flags, auth rule) and one
//!   module per family (string, keys, server, connection).
//! - [`store`]: the only module that talks to `walship_engine`.
//! - [`state`]: what connections share: store, CONFIG SET-able settings,
//!   client registry, SCAN cursors, metrics.
//! - [`metrics`] and [`admin`]: counters and latency histograms, served as
//!   Prometheus text on the admin port with `/health` and `/status`.
//! - [`replication`]: the node's role, hub or receiver, synchronous-commit
//!   settings; [`quorum`]: quorum reads (`WALSHIP QUORUMGET`, W + R > N).
//!
//! # A request's path
//!
//! `SET k v` arrives as bytes → [`resp::Parser`] yields its arguments as
//! ranges into the read buffer (no copy) → [`commands::execute`] checks
//! arity and authentication and calls `string::set` → `Store::transact`
//! appends the WAL record and applies it, returning its LSN → the handler
//! writes `+OK` into the output buffer → after the batch, the connection
//! awaits `Store::wait_durable(max LSN)` and only then sends the replies.

pub mod admin;
pub mod cli;
pub mod commands;
pub mod config;
pub mod connection;
pub mod dev;
pub mod lock;
pub mod metrics;
pub mod quorum;
pub mod replication;
pub mod reply;
pub mod resp;
pub mod server;
pub mod shutdown;
pub mod state;
pub mod store;
