//! The crash-recovery harness behind `crashtest` (`tests/src/bin/crashtest.rs`):
//! real three-node clusters as separate processes, a fault, a failover, and
//! an account of every write.
//!
//! # Layout
//!
//! - [`cleanup`]: every process and network namespace the harness creates is
//!   registered here and removed on exit, on panic and on Ctrl-C.
//! - [`netns`]: the primary's own network namespace and veth pair (faults
//!   `partition` and `delay`; needs root).
//! - [`node`]: one `walship server` process (maybe inside the namespace) and
//!   the few commands the harness sends it.
//! - [`load`]: K client threads writing unique keys, recording each write as
//!   acknowledged, failed or unknown, with timestamps.
//! - [`trial`]: one trial: start, load, fault, promote, re-point, rejoin,
//!   converge, read back, judge.
//! - [`report`]: per-cell sums, the invariants, and `durability.{md,json,svg}`.

pub mod cleanup;
pub mod load;
pub mod netns;
pub mod node;
pub mod report;
pub mod trial;

use std::fmt;
use std::str::FromStr;

/// How the primary replicates: the `synchronous_standby_names` it runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// No synchronous standby: a write is acknowledged once durable on the primary.
    Async,
    /// `FIRST 1 (s1, s2)`.
    First1,
    /// `ANY 1 (s1, s2)`.
    Any1,
    /// `ANY 2 (s1, s2)`.
    Any2,
}

impl Mode {
    pub const ALL: [Mode; 4] = [Mode::Async, Mode::First1, Mode::Any1, Mode::Any2];

    /// The primary's `--synchronous-standby-names`, empty for async.
    pub fn standby_names(self) -> &'static str {
        match self {
            Mode::Async => "",
            Mode::First1 => "FIRST 1 (s1, s2)",
            Mode::Any1 => "ANY 1 (s1, s2)",
            Mode::Any2 => "ANY 2 (s1, s2)",
        }
    }

    /// Whether an acknowledged write must be on a standby: then none may be lost.
    pub fn is_synchronous(self) -> bool {
        self != Mode::Async
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Async => "async",
            Mode::First1 => "first1",
            Mode::Any1 => "any1",
            Mode::Any2 => "any2",
        })
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        Mode::ALL
            .into_iter()
            .find(|m| m.to_string() == s.trim().to_ascii_lowercase())
            .ok_or_else(|| format!("unknown mode '{s}' (async, first1, any1, any2)"))
    }
}

/// What goes wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fault {
    /// SIGKILL of the primary.
    Kill,
    /// The primary runs with `--simulate-power-loss` and gets `DEBUG POWERLOSS <seed>`.
    Powerloss,
    /// SIGKILL of the primary and one standby together.
    Kill2,
    /// The primary, in its own network namespace, is cut off but keeps running.
    Partition,
    /// The primary's link has 5 ms of delay (async lag); then SIGKILL.
    Delay,
}

impl Fault {
    pub const ALL: [Fault; 5] = [
        Fault::Kill,
        Fault::Powerloss,
        Fault::Kill2,
        Fault::Partition,
        Fault::Delay,
    ];

    /// Whether the primary runs in a network namespace (needs root).
    pub fn needs_netns(self) -> bool {
        matches!(self, Fault::Partition | Fault::Delay)
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fault::Kill => "kill",
            Fault::Powerloss => "powerloss",
            Fault::Kill2 => "kill2",
            Fault::Partition => "partition",
            Fault::Delay => "delay",
        })
    }
}

impl FromStr for Fault {
    type Err = String;
    fn from_str(s: &str) -> Result<Fault, String> {
        Fault::ALL
            .into_iter()
            .find(|f| f.to_string() == s.trim().to_ascii_lowercase())
            .ok_or_else(|| {
                format!("unknown fault '{s}' (kill, powerloss, kill2, partition, delay)")
            })
    }
}

/// Parses a comma-separated list (`async,first1`).
pub fn parse_list<T: FromStr<Err = String>>(text: &str) -> Result<Vec<T>, String> {
    text.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(str::parse)
        .collect()
}
