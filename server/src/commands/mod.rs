//! The command table and the rules every command goes through (lookup,
//! arity, authentication), then one module per family:
//!
//! - [`string`]: GET, SET, GETDEL, MGET, MSET, INCR..., APPEND, STRLEN
//! - [`keys`]: DEL, EXISTS, TYPE, TTL, SCAN, KEYS, DBSIZE, FLUSHALL
//! - [`server`]: COMMAND, TIME, SAVE, BGSAVE, LASTSAVE, ROLE, SHUTDOWN
//! - [`info`]: INFO; [`config`]: CONFIG
//! - [`connection`]: PING, ECHO, HELLO, AUTH, SELECT, QUIT, RESET, CLIENT
//! - [`debug`]: DEBUG POWERLOSS (fault injection, with `--simulate-power-loss` only)
//!
//! A handler reads its arguments, may run one `Store::transact` (so a
//! read-modify-write is atomic), and writes its reply into the connection's
//! output buffer. It never waits for durability itself: it records the LSN
//! it wrote in [`Ctx`], and the connection waits once for the whole batch
//! before sending any reply.

pub mod config;
pub mod connection;
pub mod debug;
pub mod info;
pub mod keys;
pub mod replication;
pub mod server;
pub mod string;

mod glob;

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

use crate::reply::Reply;
use crate::resp::Args;
use crate::state::{ClientInfo, Shared};
use crate::store::{Lsn, Mutation, View, WriteError};

pub use glob::glob_match;

/// The command changes data (it goes through `Store::transact`).
pub const WRITE: u16 = 1 << 0;
/// The command only reads data.
pub const READONLY: u16 = 1 << 1;
/// The command may run before the client authenticated.
pub const NO_AUTH: u16 = 1 << 2;
/// Administrative (CONFIG, SAVE, SHUTDOWN...).
pub const ADMIN: u16 = 1 << 3;
/// O(1) or O(log n), never blocks.
pub const FAST: u16 = 1 << 4;
/// Connection-level command that touches no data.
pub const CONNECTION: u16 = 1 << 5;

pub type Handler = fn(&mut Ctx<'_>, Args<'_>) -> CmdResult;

/// One entry of the command table.
pub struct CommandSpec {
    /// Lower-case name, as Redis reports it.
    pub name: &'static str,
    /// Redis convention: `n > 0` exactly n arguments (name included), `-n` at least n.
    pub arity: i32,
    pub flags: u16,
    /// Key positions for COMMAND INFO (first, last, step); 0 when none.
    pub keys: (i32, i32, i32),
    pub handler: Handler,
}

macro_rules! cmd {
    ($name:literal, $arity:expr, $flags:expr, $keys:expr, $handler:path) => {
        CommandSpec {
            name: $name,
            arity: $arity,
            flags: $flags,
            keys: $keys,
            handler: $handler,
        }
    };
}

const NOKEYS: (i32, i32, i32) = (0, 0, 0);
const KEY1: (i32, i32, i32) = (1, 1, 1);
const ALLKEYS: (i32, i32, i32) = (1, -1, 1);

/// Every command walship understands.
pub static COMMANDS: &[CommandSpec] = &[
    // strings
    cmd!("get", 2, READONLY | FAST, KEY1, string::get),
    cmd!("set", -3, WRITE, KEY1, string::set),
    cmd!("setnx", 3, WRITE | FAST, KEY1, string::setnx),
    cmd!("getset", 3, WRITE | FAST, KEY1, string::getset),
    cmd!("getdel", 2, WRITE | FAST, KEY1, string::getdel),
    cmd!("mget", -2, READONLY | FAST, ALLKEYS, string::mget),
    cmd!("mset", -3, WRITE, (1, -1, 2), string::mset),
    cmd!("msetnx", -3, WRITE, (1, -1, 2), string::msetnx),
    cmd!("incr", 2, WRITE | FAST, KEY1, string::incr),
    cmd!("decr", 2, WRITE | FAST, KEY1, string::decr),
    cmd!("incrby", 3, WRITE | FAST, KEY1, string::incrby),
    cmd!("decrby", 3, WRITE | FAST, KEY1, string::decrby),
    cmd!("append", 3, WRITE | FAST, KEY1, string::append),
    cmd!("strlen", 2, READONLY | FAST, KEY1, string::strlen),
    cmd!("getrange", 4, READONLY, KEY1, string::getrange),
    cmd!("substr", 4, READONLY, KEY1, string::getrange),
    cmd!("setrange", 4, WRITE, KEY1, string::setrange),
    cmd!("incrbyfloat", 3, WRITE | FAST, KEY1, string::incrbyfloat),
    cmd!("setex", 4, WRITE, KEY1, string::expiry_refused),
    cmd!("psetex", 4, WRITE, KEY1, string::expiry_refused),
    cmd!("getex", -2, WRITE, KEY1, string::getex),
    // keys
    cmd!("del", -2, WRITE, ALLKEYS, keys::del),
    cmd!("unlink", -2, WRITE | FAST, ALLKEYS, keys::del),
    cmd!("exists", -2, READONLY | FAST, ALLKEYS, keys::exists),
    cmd!("touch", -2, READONLY | FAST, ALLKEYS, keys::exists),
    cmd!("rename", 3, WRITE, (1, 2, 1), keys::rename),
    cmd!("renamenx", 3, WRITE | FAST, (1, 2, 1), keys::renamenx),
    cmd!("copy", -3, WRITE, (1, 2, 1), keys::copy),
    cmd!("type", 2, READONLY | FAST, KEY1, keys::type_),
    cmd!("ttl", 2, READONLY | FAST, KEY1, keys::ttl),
    cmd!("pttl", 2, READONLY | FAST, KEY1, keys::ttl),
    cmd!("persist", 2, WRITE | FAST, KEY1, keys::persist),
    cmd!("expire", -3, WRITE | FAST, KEY1, string::expiry_refused),
    cmd!("pexpire", -3, WRITE | FAST, KEY1, string::expiry_refused),
    cmd!("expireat", -3, WRITE | FAST, KEY1, string::expiry_refused),
    cmd!("pexpireat", -3, WRITE | FAST, KEY1, string::expiry_refused),
    cmd!("scan", -2, READONLY, NOKEYS, keys::scan),
    cmd!("keys", 2, READONLY, NOKEYS, keys::keys),
    cmd!("dbsize", 1, READONLY | FAST, NOKEYS, keys::dbsize),
    cmd!("flushall", -1, WRITE, NOKEYS, keys::flushall),
    cmd!("flushdb", -1, WRITE, NOKEYS, keys::flushall),
    // server
    cmd!("info", -1, 0, NOKEYS, info::info),
    cmd!("config", -2, ADMIN, NOKEYS, config::config),
    cmd!("command", -1, CONNECTION, NOKEYS, server::command),
    cmd!("time", 1, FAST, NOKEYS, server::time),
    cmd!("save", 1, ADMIN, NOKEYS, server::save),
    cmd!("bgsave", -1, ADMIN, NOKEYS, server::bgsave),
    cmd!("lastsave", 1, FAST, NOKEYS, server::lastsave),
    cmd!("role", 1, FAST, NOKEYS, replication::role),
    cmd!("wait", 3, 0, NOKEYS, replication::wait),
    cmd!("replicaof", 3, ADMIN, NOKEYS, replication::replicaof),
    cmd!("slaveof", 3, ADMIN, NOKEYS, replication::replicaof),
    cmd!("walship", -2, 0, NOKEYS, replication::walship),
    cmd!("shutdown", -1, ADMIN, NOKEYS, server::shutdown),
    cmd!("debug", -2, ADMIN, NOKEYS, debug::debug),
    // connection
    cmd!("ping", -1, FAST | CONNECTION, NOKEYS, connection::ping),
    cmd!("echo", 2, FAST | CONNECTION, NOKEYS, connection::echo),
    cmd!(
        "hello",
        -1,
        NO_AUTH | FAST | CONNECTION,
        NOKEYS,
        connection::hello
    ),
    cmd!(
        "auth",
        -2,
        NO_AUTH | FAST | CONNECTION,
        NOKEYS,
        connection::auth
    ),
    cmd!("select", 2, FAST | CONNECTION, NOKEYS, connection::select),
    cmd!(
        "quit",
        -1,
        NO_AUTH | FAST | CONNECTION,
        NOKEYS,
        connection::quit
    ),
    cmd!(
        "reset",
        1,
        NO_AUTH | FAST | CONNECTION,
        NOKEYS,
        connection::reset
    ),
    cmd!("client", -2, CONNECTION, NOKEYS, connection::client),
];

/// Index into [`COMMANDS`] of the command called `name` (any case).
pub fn lookup(name: &[u8]) -> Option<usize> {
    static INDEX: OnceLock<HashMap<&'static [u8], usize>> = OnceLock::new();
    let index = INDEX.get_or_init(|| {
        COMMANDS
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.as_bytes(), i))
            .collect()
    });
    let mut lower = [0u8; 16];
    if name.len() > lower.len() {
        return None;
    }
    for (dst, src) in lower.iter_mut().zip(name) {
        *dst = src.to_ascii_lowercase();
    }
    index.get(&lower[..name.len()]).copied()
}

/// Why a command failed; becomes a `-` reply.
#[derive(Debug)]
pub enum CmdError {
    Syntax,
    NotInteger,
    /// A complete error text, starting with its code (`ERR ...`).
    Msg(Cow<'static, str>),
    Write(WriteError),
}

impl CmdError {
    pub fn msg(s: impl Into<Cow<'static, str>>) -> CmdError {
        CmdError::Msg(s.into())
    }

    pub fn arity(name: &str) -> CmdError {
        CmdError::Msg(format!("ERR wrong number of arguments for '{name}' command").into())
    }
}

impl fmt::Display for CmdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CmdError::Syntax => f.write_str("ERR syntax error"),
            CmdError::NotInteger => f.write_str("ERR value is not an integer or out of range"),
            CmdError::Msg(s) => f.write_str(s),
            CmdError::Write(e) => write!(f, "ERR {e}"),
        }
    }
}

impl From<WriteError> for CmdError {
    fn from(e: WriteError) -> CmdError {
        CmdError::Write(e)
    }
}

pub type CmdResult = Result<(), CmdError>;

/// Per-connection state that commands may read or change.
pub struct ClientState {
    pub info: Arc<ClientInfo>,
    pub authenticated: bool,
    /// Set by QUIT and SHUTDOWN: send what is buffered, then close.
    pub close_after_reply: bool,
    /// This connection's `synchronous_commit`, when it set one.
    pub sync_commit: Option<walship_replication::SynchronousCommit>,
    /// End LSN of this connection's last write (for WAIT and read-your-writes).
    pub last_write_lsn: Lsn,
    /// Set by `WALSHIP STREAM`: after the reply, the connection becomes a
    /// replication stream to a standby listening on this port.
    pub replicate: Option<u16>,
    /// A reply that must wait for something (WAIT, WALSHIP WAITLSN).
    pub deferred: Option<Deferred>,
    /// MULTI was refused and no EXEC or DISCARD has ended it yet: commands
    /// are refused, not run (see [`connection::refused_transaction`]).
    pub in_refused_multi: bool,
}

/// A command whose reply waits; the connection completes it.
#[derive(Debug, Clone, Copy)]
pub enum Deferred {
    /// Redis's WAIT: until `replicas` standbys fsynced this connection's last write.
    Wait { replicas: usize, timeout_ms: u64 },
    /// Until this node has applied `lsn`.
    WaitLsn { lsn: Lsn, timeout_ms: u64 },
}

impl ClientState {
    pub fn new(info: Arc<ClientInfo>, shared: &Shared) -> ClientState {
        ClientState {
            info,
            authenticated: shared.runtime.requirepass().is_none(),
            close_after_reply: false,
            sync_commit: None,
            last_write_lsn: 0,
            replicate: None,
            deferred: None,
            in_refused_multi: false,
        }
    }
}

/// What a handler works with.
pub struct Ctx<'a> {
    pub shared: &'a Arc<Shared>,
    pub client: &'a mut ClientState,
    pub out: &'a mut Reply,
    /// Highest LSN written by commands run with this context and not yet
    /// known durable. The connection waits for it before replying.
    pub lsn: Option<Lsn>,
    /// For a read: the WAL end after it read, so everything it may have seen
    /// is covered. The connection waits for it too, so no client is shown a
    /// value that a crash could still take back (no dirty reads across
    /// connections). Usually already durable, and then free.
    pub read_fence: Option<Lsn>,
}

impl<'a> Ctx<'a> {
    pub fn new(
        shared: &'a Arc<Shared>,
        client: &'a mut ClientState,
        out: &'a mut Reply,
    ) -> Ctx<'a> {
        Ctx {
            shared,
            client,
            out,
            lsn: None,
            read_fence: None,
        }
    }

    /// Runs `f` atomically against the current state and logs the mutation it
    /// returns, remembering the LSN so the reply waits for durability.
    pub fn transact<R>(
        &mut self,
        f: impl FnOnce(&View) -> (Option<Mutation>, R),
    ) -> Result<R, CmdError> {
        let (lsn, r) = self.shared.store.transact(f)?;
        if let Some(lsn) = lsn {
            self.lsn = Some(self.lsn.map_or(lsn, |prev| prev.max(lsn)));
        }
        Ok(r)
    }
}

/// How one request went, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Index into [`COMMANDS`], `None` for unknown commands.
    pub command: Option<usize>,
    pub failed: bool,
}

/// Runs one request: lookup, arity, authentication, then the handler.
/// The reply (or error) is appended to `ctx.out`.
pub fn execute(ctx: &mut Ctx<'_>, args: Args<'_>) -> Outcome {
    debug_assert!(!args.is_empty());
    let name = args.get(0);
    let idx = lookup(name);
    // MULTI, EXEC and DISCARD are not in the table: only an unknown command,
    // or any command inside a refused MULTI, needs the transaction check.
    if let Some(reply) = (idx.is_none() || ctx.client.in_refused_multi)
        .then(|| connection::refused_transaction(ctx.client, name))
        .flatten()
    {
        if let Err(e) = &reply {
            ctx.out.error(e);
        } else {
            ctx.out.ok();
        }
        return Outcome {
            command: None,
            failed: reply.is_err(),
        };
    }
    let Some(idx) = idx else {
        ctx.out.error(&unknown_command_message(args));
        return Outcome {
            command: None,
            failed: true,
        };
    };
    let spec = &COMMANDS[idx];
    // CLIENT LIST shows what each client runs (itself included).
    ctx.client
        .info
        .last_command
        .store(idx, std::sync::atomic::Ordering::Relaxed);
    let n = args.len() as i32;
    let arity_ok = if spec.arity > 0 {
        n == spec.arity
    } else {
        n >= -spec.arity
    };
    let result = if !arity_ok {
        Err(CmdError::arity(spec.name))
    } else if !ctx.client.authenticated && spec.flags & NO_AUTH == 0 {
        Err(CmdError::msg("NOAUTH Authentication required."))
    } else if spec.flags & WRITE != 0 && ctx.shared.replication.is_standby() {
        Err(CmdError::msg(
            "READONLY You can't write against a read only replica.",
        ))
    } else if let Some(epoch) = (spec.flags & WRITE != 0)
        .then(|| ctx.shared.replication.fenced_by())
        .flatten()
    {
        Err(CmdError::msg(format!(
            "READONLY This node was the primary, but a standby showed it epoch {epoch}, newer than its own: another node was promoted. Re-point it with REPLICAOF host port."
        )))
    } else if let Some(why) = (spec.flags & (READONLY | WRITE) != 0)
        .then(|| ctx.shared.replication.not_consistent())
        .flatten()
    {
        Err(CmdError::msg(format!("LOADING walship {why}")))
    } else {
        let r = (spec.handler)(ctx, args);
        if spec.flags & (READONLY | WRITE) != 0 && ctx.lsn.is_none() {
            // IMPORTANT: read the WAL end only after the handler read the data,
            // so the fence covers every write it may have seen. (A command that
            // wrote waits for its own LSN, which is past everything it saw.)
            ctx.read_fence = Some(ctx.shared.store.end_lsn());
        }
        r
    };
    let failed = match result {
        Ok(()) => false,
        Err(e) => {
            ctx.out.error(&e.to_string());
            true
        }
    };
    Outcome {
        command: Some(idx),
        failed,
    }
}

/// Redis 7's text: `ERR unknown command 'foo', with args beginning with: 'a' 'b' `.
pub fn unknown_command_message(args: Args<'_>) -> String {
    let name = String::from_utf8_lossy(args.get(0));
    let name: String = name.chars().take(128).collect();
    let mut rest = String::new();
    for a in args.iter().skip(1) {
        if rest.len() >= 128 {
            break;
        }
        let a = String::from_utf8_lossy(a);
        let room = 128 - rest.len();
        let a: String = a.chars().take(room).collect();
        rest.push('\'');
        rest.push_str(&a);
        rest.push_str("' ");
    }
    format!("ERR unknown command '{name}', with args beginning with: {rest}")
}

/// `ERR unknown subcommand 'x'. Try CONFIG HELP.`
pub fn unknown_subcommand(sub: &[u8], cmd: &str) -> CmdError {
    let sub: String = String::from_utf8_lossy(sub).chars().take(128).collect();
    CmdError::Msg(
        format!(
            "ERR unknown subcommand '{sub}'. Try {} HELP.",
            cmd.to_ascii_uppercase()
        )
        .into(),
    )
}

/// Parses an integer argument the way Redis does.
pub fn parse_int(arg: &[u8]) -> Result<i64, CmdError> {
    crate::resp::parse_i64(arg).ok_or(CmdError::NotInteger)
}

/// Writes a HELP reply (an array of status lines).
pub fn help_reply(out: &mut Reply, cmd: &str, lines: &[&str]) {
    out.array(lines.len() + 2);
    out.simple(&format!(
        "{cmd} <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"
    ));
    for l in lines {
        out.simple(l);
    }
    out.simple("HELP");
}

#[cfg(test)]
#[path = "commands_test.rs"]
mod tests;
