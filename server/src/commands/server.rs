//! Server commands: INFO, CONFIG, COMMAND, TIME, SAVE, BGSAVE, LASTSAVE,
//! ROLE, SHUTDOWN.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{glob_match, help_reply, unknown_subcommand, CmdError, CmdResult, Ctx, COMMANDS};
use super::{ADMIN, CONNECTION, FAST, NO_AUTH, READONLY, WRITE};
use crate::config::{ByteSize, FsyncSetting};
use crate::reply::Reply;
use crate::resp::Args;
use crate::state::{unix_secs, Shared};

/// The Redis version walship answers to (HELLO, INFO): the command set and
/// reply types follow Redis 7.
pub const REDIS_COMPAT_VERSION: &str = "7.2.0";

// ---------------------------------------------------------------- INFO

const DEFAULT_SECTIONS: &[&str] = &[
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "cpu",
    "keyspace",
];
const ALL_SECTIONS: &[&str] = &[
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "cpu",
    "commandstats",
    "keyspace",
];

pub fn info(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let mut wanted: Vec<&str> = Vec::new();
    if args.len() == 1 {
        wanted.extend_from_slice(DEFAULT_SECTIONS);
    }
    for arg in args.iter().skip(1) {
        let a = String::from_utf8_lossy(arg).to_ascii_lowercase();
        match a.as_str() {
            "default" => wanted.extend_from_slice(DEFAULT_SECTIONS),
            "all" | "everything" => wanted.extend_from_slice(ALL_SECTIONS),
            other => {
                if let Some(s) = ALL_SECTIONS.iter().find(|s| **s == other) {
                    wanted.push(s);
                }
            }
        }
    }
    let text = info_text(ctx.shared, &wanted);
    ctx.out.verbatim("txt", text.as_bytes());
    Ok(())
}

/// Builds INFO in Redis's `# Section\r\nfield:value\r\n` format.
pub fn info_text(shared: &Shared, wanted: &[&str]) -> String {
    let mut out = String::with_capacity(4096);
    let mut first = true;
    for section in ALL_SECTIONS {
        if !wanted.contains(section) {
            continue;
        }
        if !first {
            out.push_str("\r\n");
        }
        first = false;
        match *section {
            "server" => info_server(shared, &mut out),
            "clients" => info_clients(shared, &mut out),
            "memory" => info_memory(&mut out),
            "persistence" => info_persistence(shared, &mut out),
            "stats" => info_stats(shared, &mut out),
            "replication" => info_replication(shared, &mut out),
            "cpu" => info_cpu(&mut out),
            "commandstats" => info_commandstats(shared, &mut out),
            "keyspace" => info_keyspace(shared, &mut out),
            _ => unreachable!("every section is listed"),
        }
    }
    out
}

macro_rules! field {
    ($out:expr, $name:expr, $value:expr) => {
        let _ = write!($out, "{}:{}\r\n", $name, $value);
    };
}

fn run_id(shared: &Shared) -> String {
    // Stable for the process lifetime: derived from the start time and pid.
    let seed = shared.started_unix_secs
        ^ (u64::from(std::process::id()) << 32)
        ^ shared.store.cluster_id();
    let mut x = seed | 1;
    let mut s = String::with_capacity(40);
    while s.len() < 40 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let _ = write!(s, "{:016x}", x);
    }
    s.truncate(40);
    s
}

fn info_server(shared: &Shared, out: &mut String) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let uptime = shared.started.elapsed().as_secs();
    out.push_str("# Server\r\n");
    field!(out, "redis_version", REDIS_COMPAT_VERSION);
    field!(out, "walship_version", env!("CARGO_PKG_VERSION"));
    field!(out, "redis_mode", "standalone");
    field!(
        out,
        "os",
        format!("{} {}", std::env::consts::OS, std::env::consts::ARCH)
    );
    field!(out, "arch_bits", usize::BITS);
    field!(out, "multiplexing_api", "tokio");
    field!(out, "process_id", std::process::id());
    field!(out, "run_id", run_id(shared));
    field!(out, "tcp_port", shared.port.load(Ordering::Relaxed));
    field!(out, "server_time_usec", now.as_micros());
    field!(out, "uptime_in_seconds", uptime);
    field!(out, "uptime_in_days", uptime / 86_400);
    field!(
        out,
        "executable",
        std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    );
    field!(
        out,
        "config_file",
        shared
            .config
            .config_file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    );
    field!(out, "data_dir", shared.config.data_dir.display());
}

fn info_clients(shared: &Shared, out: &mut String) {
    out.push_str("# Clients\r\n");
    field!(
        out,
        "connected_clients",
        shared.clients.connected.load(Ordering::Relaxed)
    );
    field!(out, "cluster_connections", 0);
    field!(
        out,
        "maxclients",
        shared.runtime.max_clients.load(Ordering::Relaxed)
    );
    field!(out, "blocked_clients", 0);
    field!(out, "tracking_clients", 0);
}

/// Resident set size from /proc (Linux); 0 elsewhere.
fn rss_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page).unwrap_or(4096)
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n}B")
    } else {
        format!("{v:.2}{}", UNITS[u])
    }
}

fn info_memory(out: &mut String) {
    let rss = rss_bytes();
    out.push_str("# Memory\r\n");
    field!(out, "used_memory", rss);
    field!(out, "used_memory_human", human_bytes(rss));
    field!(out, "used_memory_rss", rss);
    field!(out, "used_memory_rss_human", human_bytes(rss));
    field!(out, "maxmemory", 0);
    field!(out, "maxmemory_human", "0B");
    field!(out, "maxmemory_policy", "noeviction");
}

fn info_persistence(shared: &Shared, out: &mut String) {
    let s = shared.store.stats();
    let p = &shared.persistence;
    let status = match p.last_save_status.load(Ordering::Relaxed) {
        2 => "err",
        _ => "ok",
    };
    out.push_str("# Persistence\r\n");
    field!(out, "loading", 0);
    field!(out, "async_loading", 0);
    field!(
        out,
        "rdb_changes_since_last_save",
        shared.store.end_lsn().saturating_sub(s.last_checkpoint_lsn)
    );
    field!(
        out,
        "rdb_bgsave_in_progress",
        u8::from(p.bgsave_in_progress.load(Ordering::Relaxed))
    );
    field!(
        out,
        "rdb_last_save_time",
        p.last_save_unix_secs.load(Ordering::Relaxed)
    );
    field!(out, "rdb_last_bgsave_status", status);
    field!(out, "aof_enabled", 1);
    field!(out, "aof_rewrite_in_progress", 0);
    field!(out, "aof_last_write_status", "ok");
    field!(out, "wal_fsync", shared.config.fsync);
    field!(out, "wal_end_lsn", shared.store.end_lsn());
    field!(out, "wal_flushed_lsn", shared.store.flushed_lsn());
    field!(out, "wal_bytes_written", s.wal_bytes_written);
    field!(out, "wal_records_written", s.records_written);
    field!(out, "wal_fsyncs", s.fsyncs);
    field!(out, "wal_group_commits", s.group_commits);
    field!(out, "checkpoints", s.checkpoints);
    field!(out, "checkpoint_ms_total", s.checkpoint_ms_total);
    field!(out, "last_checkpoint_lsn", s.last_checkpoint_lsn);
}

fn info_stats(shared: &Shared, out: &mut String) {
    let m = &shared.metrics;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let calls: u64 = m.commands.iter().map(|c| load(&c.calls)).sum();
    let failed: u64 = m.commands.iter().map(|c| load(&c.failed_calls)).sum();
    out.push_str("# Stats\r\n");
    field!(
        out,
        "total_connections_received",
        load(&m.connections_total)
    );
    field!(
        out,
        "total_commands_processed",
        calls + load(&m.unknown_commands)
    );
    field!(out, "total_net_input_bytes", load(&m.net_input_bytes));
    field!(out, "total_net_output_bytes", load(&m.net_output_bytes));
    field!(out, "rejected_connections", load(&m.rejected_connections));
    field!(out, "expired_keys", 0);
    field!(out, "evicted_keys", 0);
    field!(
        out,
        "total_error_replies",
        failed + load(&m.unknown_commands)
    );
    field!(out, "unexpected_error_replies", 0);
    field!(out, "total_protocol_errors", load(&m.protocol_errors));
    field!(
        out,
        "client_limit_disconnects",
        load(&m.output_limit_disconnects)
    );
    field!(out, "durability_failures", load(&m.durability_failures));
}

fn info_replication(shared: &Shared, out: &mut String) {
    out.push_str("# Replication\r\n");
    field!(out, "role", "master");
    field!(out, "connected_slaves", 0);
    field!(out, "master_failover_state", "no-failover");
    field!(
        out,
        "master_replid",
        format!("{:040x}", shared.store.cluster_id())
    );
    field!(
        out,
        "master_replid2",
        "0000000000000000000000000000000000000000"
    );
    field!(out, "master_repl_offset", shared.store.end_lsn());
    field!(out, "second_repl_offset", -1);
    field!(out, "repl_backlog_active", 0);
    field!(out, "walship_epoch", shared.store.epoch());
    field!(out, "walship_flushed_lsn", shared.store.flushed_lsn());
}

fn info_cpu(out: &mut String) {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } == 0;
    let secs = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    out.push_str("# CPU\r\n");
    if ok {
        field!(out, "used_cpu_sys", format!("{:.6}", secs(ru.ru_stime)));
        field!(out, "used_cpu_user", format!("{:.6}", secs(ru.ru_utime)));
    }
}

fn info_commandstats(shared: &Shared, out: &mut String) {
    out.push_str("# Commandstats\r\n");
    for (spec, m) in COMMANDS.iter().zip(&shared.metrics.commands) {
        let calls = m.calls.load(Ordering::Relaxed);
        if calls == 0 {
            continue;
        }
        let usec = m.latency_us_total.load(Ordering::Relaxed);
        let _ = write!(
            out,
            "cmdstat_{}:calls={calls},usec={usec},usec_per_call={:.2},rejected_calls=0,failed_calls={}\r\n",
            spec.name,
            usec as f64 / calls as f64,
            m.failed_calls.load(Ordering::Relaxed)
        );
    }
}

fn info_keyspace(shared: &Shared, out: &mut String) {
    out.push_str("# Keyspace\r\n");
    let keys = shared.store.len();
    // Redis lists only non-empty databases.
    if keys > 0 {
        let _ = write!(out, "db0:keys={keys},expires=0,avg_ttl=0\r\n");
    }
}

// ---------------------------------------------------------------- CONFIG

type Getter = fn(&Shared) -> String;
type Setter = fn(&Shared, &str) -> Result<(), String>;

/// One CONFIG parameter: walship's own names first, then the Redis names
/// that tools (redis-benchmark, redis-cli) ask for.
struct Param {
    name: &'static str,
    get: Getter,
    set: Option<Setter>,
}

fn parse_size(v: &str) -> Result<u64, String> {
    v.parse::<ByteSize>().map(|b| b.0)
}

fn set_u64_min(
    target: &std::sync::atomic::AtomicU64,
    v: u64,
    min: u64,
    name: &str,
) -> Result<(), String> {
    if v < min {
        return Err(format!("{name} must be at least {min}"));
    }
    target.store(v, Ordering::Relaxed);
    Ok(())
}

const PARAMS: &[Param] = &[
    Param {
        name: "data-dir",
        get: |s| s.config.data_dir.display().to_string(),
        set: None,
    },
    Param {
        name: "port",
        get: |s| s.port.load(Ordering::Relaxed).to_string(),
        set: None,
    },
    Param {
        name: "bind",
        get: |s| s.config.bind.clone(),
        set: None,
    },
    Param {
        name: "fsync",
        get: |s| s.config.fsync.to_string(),
        set: None,
    },
    Param {
        name: "segment-size",
        get: |s| {
            s.config
                .segment_size_bytes
                .map(|v| v.to_string())
                .unwrap_or_default()
        },
        set: None,
    },
    Param {
        name: "checkpoint-every",
        get: |s| {
            s.config
                .checkpoint_every_bytes
                .map(|v| v.to_string())
                .unwrap_or_default()
        },
        set: None,
    },
    Param {
        name: "max-clients",
        get: |s| s.runtime.max_clients.load(Ordering::Relaxed).to_string(),
        set: Some(|s, v| {
            set_u64_min(
                &s.runtime.max_clients,
                v.parse().map_err(|_| "not a number")?,
                1,
                "max-clients",
            )
        }),
    },
    Param {
        name: "max-value-size",
        get: |s| s.config.max_value_bytes.to_string(),
        set: None,
    },
    Param {
        name: "max-key-size",
        get: |s| s.config.max_key_bytes.to_string(),
        set: None,
    },
    Param {
        name: "requirepass",
        get: |s| {
            s.runtime
                .requirepass()
                .map(|p| p.to_string())
                .unwrap_or_default()
        },
        set: Some(|s, v| {
            s.runtime.set_requirepass(Some(v));
            Ok(())
        }),
    },
    Param {
        name: "admin-port",
        get: |s| {
            s.config
                .admin_port
                .map(|p| p.to_string())
                .unwrap_or_default()
        },
        set: None,
    },
    Param {
        name: "client-output-buffer-limit",
        get: |s| {
            s.runtime
                .client_output_buffer_limit_bytes
                .load(Ordering::Relaxed)
                .to_string()
        },
        set: Some(|s, v| {
            set_u64_min(
                &s.runtime.client_output_buffer_limit_bytes,
                parse_size(v)?,
                1024 * 1024,
                "client-output-buffer-limit",
            )
        }),
    },
    Param {
        name: "client-query-buffer-limit",
        get: |s| {
            s.runtime
                .client_query_buffer_limit_bytes
                .load(Ordering::Relaxed)
                .to_string()
        },
        set: Some(|s, v| {
            let min = s.runtime.proto_max_bulk_len_bytes.load(Ordering::Relaxed);
            set_u64_min(
                &s.runtime.client_query_buffer_limit_bytes,
                parse_size(v)?,
                min,
                "client-query-buffer-limit (>= proto-max-bulk-len)",
            )
        }),
    },
    Param {
        name: "proto-max-bulk-len",
        get: |s| {
            s.runtime
                .proto_max_bulk_len_bytes
                .load(Ordering::Relaxed)
                .to_string()
        },
        set: Some(|s, v| {
            let v = parse_size(v)?;
            if v > s
                .runtime
                .client_query_buffer_limit_bytes
                .load(Ordering::Relaxed)
            {
                return Err("proto-max-bulk-len must not exceed client-query-buffer-limit".into());
            }
            set_u64_min(
                &s.runtime.proto_max_bulk_len_bytes,
                v,
                1024 * 1024,
                "proto-max-bulk-len",
            )
        }),
    },
    // Redis names, answered so Redis tools see sensible values.
    Param {
        name: "save",
        get: |_| String::new(),
        set: None,
    },
    Param {
        name: "appendonly",
        get: |_| "yes".into(),
        set: None,
    },
    Param {
        name: "appendfsync",
        get: |s| {
            match s.config.fsync {
                FsyncSetting::Always => "always",
                FsyncSetting::IntervalMs(_) => "everysec",
                FsyncSetting::Never => "no",
            }
            .into()
        },
        set: None,
    },
    Param {
        name: "maxclients",
        get: |s| s.runtime.max_clients.load(Ordering::Relaxed).to_string(),
        set: Some(|s, v| {
            set_u64_min(
                &s.runtime.max_clients,
                v.parse().map_err(|_| "not a number")?,
                1,
                "maxclients",
            )
        }),
    },
    Param {
        name: "dir",
        get: |s| absolute(&s.config.data_dir),
        set: None,
    },
    Param {
        name: "dbfilename",
        get: |_| String::new(),
        set: None,
    },
    Param {
        name: "databases",
        get: |_| "1".into(),
        set: None,
    },
    Param {
        name: "maxmemory",
        get: |_| "0".into(),
        set: None,
    },
    Param {
        name: "maxmemory-policy",
        get: |_| "noeviction".into(),
        set: None,
    },
    Param {
        name: "timeout",
        get: |_| "0".into(),
        set: None,
    },
    Param {
        name: "tcp-keepalive",
        get: |_| "0".into(),
        set: None,
    },
    Param {
        name: "cluster-enabled",
        get: |_| "no".into(),
        set: None,
    },
];

fn absolute(p: &std::path::Path) -> String {
    std::fs::canonicalize(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

pub fn config(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let sub = args.get(1);
    if sub.eq_ignore_ascii_case(b"GET") {
        if args.len() < 3 {
            return Err(CmdError::arity("config|get"));
        }
        let mut hits: Vec<&Param> = Vec::new();
        for pat in args.iter().skip(2) {
            let pat = pat.to_ascii_lowercase();
            for p in PARAMS {
                if glob_match(&pat, p.name.as_bytes()) && !hits.iter().any(|h| h.name == p.name) {
                    hits.push(p);
                }
            }
        }
        ctx.out.map(hits.len());
        for p in hits {
            ctx.out.bulk(p.name.as_bytes());
            ctx.out.bulk((p.get)(ctx.shared).as_bytes());
        }
        Ok(())
    } else if sub.eq_ignore_ascii_case(b"SET") {
        if args.len() < 4 || !args.len().is_multiple_of(2) {
            return Err(CmdError::arity("config|set"));
        }
        // Check everything first so a failing pair changes nothing.
        let mut todo: Vec<(&Param, String)> = Vec::new();
        for pair in 0..(args.len() - 2) / 2 {
            let name = String::from_utf8_lossy(args.get(2 + 2 * pair)).to_ascii_lowercase();
            let value = String::from_utf8_lossy(args.get(3 + 2 * pair)).into_owned();
            let Some(p) = PARAMS.iter().find(|p| p.name == name) else {
                return Err(CmdError::msg(format!(
                    "ERR Unknown option or number of arguments for CONFIG SET - '{name}'"
                )));
            };
            if p.set.is_none() {
                return Err(CmdError::msg(format!(
                    "ERR CONFIG SET failed (possibly related to argument '{name}') - can't set immutable config"
                )));
            }
            todo.push((p, value));
        }
        for (p, value) in todo {
            let set = p.set.expect("checked above");
            set(ctx.shared, &value).map_err(|e| {
                CmdError::msg(format!(
                    "ERR CONFIG SET failed (possibly related to argument '{}') - {e}",
                    p.name
                ))
            })?;
        }
        ctx.out.ok();
        Ok(())
    } else if sub.eq_ignore_ascii_case(b"RESETSTAT") {
        if args.len() != 2 {
            return Err(CmdError::arity("config|resetstat"));
        }
        ctx.shared.metrics.reset();
        ctx.out.ok();
        Ok(())
    } else if sub.eq_ignore_ascii_case(b"REWRITE") {
        Err(CmdError::msg(
            "ERR CONFIG REWRITE is not supported: edit the TOML file given with --config",
        ))
    } else if sub.eq_ignore_ascii_case(b"HELP") {
        help_reply(
            ctx.out,
            "CONFIG",
            &[
                "GET <pattern>",
                "    Return parameters matching the glob-like <pattern> and their values.",
                "SET <directive> <value>",
                "    Set the configuration <directive> to <value>.",
                "RESETSTAT",
                "    Reset statistics reported by the INFO command.",
            ],
        );
        Ok(())
    } else {
        Err(unknown_subcommand(sub, "config"))
    }
}

// ---------------------------------------------------------------- COMMAND

fn command_flags(flags: u16) -> Vec<&'static str> {
    let mut v = Vec::new();
    if flags & WRITE != 0 {
        v.push("write");
    }
    if flags & READONLY != 0 {
        v.push("readonly");
    }
    if flags & ADMIN != 0 {
        v.push("admin");
    }
    if flags & NO_AUTH != 0 {
        v.push("no_auth");
    }
    if flags & FAST != 0 {
        v.push("fast");
    }
    if flags & CONNECTION != 0 {
        v.push("loading");
        v.push("stale");
    }
    v
}

/// One COMMAND INFO entry in Redis 7's 10-element layout.
fn write_command_info(out: &mut Reply, idx: usize) {
    let c = &COMMANDS[idx];
    out.array(10);
    out.bulk(c.name.as_bytes());
    out.int(i64::from(c.arity));
    let flags = command_flags(c.flags);
    out.set(flags.len());
    for f in flags {
        out.simple(f);
    }
    out.int(i64::from(c.keys.0));
    out.int(i64::from(c.keys.1));
    out.int(i64::from(c.keys.2));
    out.set(0); // ACL categories
    out.set(0); // tips
    out.array(0); // key specs
    out.array(0); // subcommands
}

pub fn command(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    if args.len() == 1 {
        ctx.out.array(COMMANDS.len());
        for i in 0..COMMANDS.len() {
            write_command_info(ctx.out, i);
        }
        return Ok(());
    }
    let sub = args.get(1);
    if sub.eq_ignore_ascii_case(b"COUNT") {
        ctx.out.int(COMMANDS.len() as i64);
    } else if sub.eq_ignore_ascii_case(b"INFO") {
        if args.len() == 2 {
            ctx.out.array(COMMANDS.len());
            for i in 0..COMMANDS.len() {
                write_command_info(ctx.out, i);
            }
        } else {
            ctx.out.array(args.len() - 2);
            for name in args.iter().skip(2) {
                match super::lookup(name) {
                    Some(i) => write_command_info(ctx.out, i),
                    None => ctx.out.null_array(),
                }
            }
        }
    } else if sub.eq_ignore_ascii_case(b"DOCS") {
        // redis-cli asks for docs to show hints; none is a valid answer.
        ctx.out.map(0);
    } else if sub.eq_ignore_ascii_case(b"LIST") {
        ctx.out.array(COMMANDS.len());
        for c in COMMANDS {
            ctx.out.bulk(c.name.as_bytes());
        }
    } else if sub.eq_ignore_ascii_case(b"HELP") {
        help_reply(
            ctx.out,
            "COMMAND",
            &[
                "(no subcommand)",
                "    Return details about all commands.",
                "COUNT",
                "DOCS",
                "INFO [<command-name> ...]",
                "LIST",
            ],
        );
    } else {
        return Err(unknown_subcommand(sub, "command"));
    }
    Ok(())
}

// ---------------------------------------------------------------- misc

pub fn time(ctx: &mut Ctx<'_>, _args: Args<'_>) -> CmdResult {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    ctx.out.array(2);
    ctx.out.bulk_int(now.as_secs() as i64);
    ctx.out.bulk_int(i64::from(now.subsec_micros()));
    Ok(())
}

fn checkpoint_now(shared: &Shared) -> Result<(), String> {
    let r = shared.store.checkpoint();
    let p = &shared.persistence;
    match r {
        Ok(info) => {
            tracing::info!(
                redo_lsn = info.redo_lsn,
                keys = info.entries,
                "checkpoint written"
            );
            p.last_save_unix_secs.store(unix_secs(), Ordering::Relaxed);
            p.last_save_status.store(1, Ordering::Relaxed);
            Ok(())
        }
        Err(e) => {
            tracing::error!(error = %e, "checkpoint failed");
            p.last_save_status.store(2, Ordering::Relaxed);
            Err(e.to_string())
        }
    }
}

/// SAVE: writes a checkpoint and replies when it is done.
pub fn save(ctx: &mut Ctx<'_>, _args: Args<'_>) -> CmdResult {
    let p = &ctx.shared.persistence;
    if p.bgsave_in_progress.swap(true, Ordering::AcqRel) {
        return Err(CmdError::msg("ERR Background save already in progress"));
    }
    // The checkpoint blocks; let the runtime move other tasks off this thread.
    let shared = ctx.shared;
    let r = tokio::task::block_in_place(|| checkpoint_now(shared));
    p.bgsave_in_progress.store(false, Ordering::Release);
    r.map_err(|e| CmdError::msg(format!("ERR {e}")))?;
    ctx.out.ok();
    Ok(())
}

/// BGSAVE [SCHEDULE]: starts a checkpoint in the background.
pub fn bgsave(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    if args.len() > 2 || (args.len() == 2 && !args.get(1).eq_ignore_ascii_case(b"SCHEDULE")) {
        return Err(CmdError::Syntax);
    }
    if ctx
        .shared
        .persistence
        .bgsave_in_progress
        .swap(true, Ordering::AcqRel)
    {
        return Err(CmdError::msg("ERR Background save already in progress"));
    }
    let shared = ctx.shared.clone();
    tokio::task::spawn_blocking(move || {
        let _ = checkpoint_now(&shared);
        shared
            .persistence
            .bgsave_in_progress
            .store(false, Ordering::Release);
    });
    ctx.out.simple("Background saving started");
    Ok(())
}

pub fn lastsave(ctx: &mut Ctx<'_>, _args: Args<'_>) -> CmdResult {
    let t = ctx
        .shared
        .persistence
        .last_save_unix_secs
        .load(Ordering::Relaxed);
    ctx.out.int(if t == 0 {
        ctx.shared.started_unix_secs as i64
    } else {
        t as i64
    });
    Ok(())
}

/// ROLE: `master`, the replication offset (the WAL end LSN), no replicas yet.
pub fn role(ctx: &mut Ctx<'_>, _args: Args<'_>) -> CmdResult {
    ctx.out.array(3);
    ctx.out.bulk(b"master");
    ctx.out.int(ctx.shared.store.end_lsn() as i64);
    ctx.out.array(0);
    Ok(())
}

/// SHUTDOWN [NOSAVE|SAVE] [NOW] [FORCE]: graceful stop, as on SIGTERM. Like
/// Redis, no reply: the connection closes.
pub fn shutdown(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    for a in args.iter().skip(1) {
        let ok = [&b"NOSAVE"[..], b"SAVE", b"NOW", b"FORCE"]
            .iter()
            .any(|o| a.eq_ignore_ascii_case(o));
        if a.eq_ignore_ascii_case(b"ABORT") {
            return Err(CmdError::msg("ERR No shutdown in progress."));
        }
        if !ok {
            return Err(CmdError::Syntax);
        }
    }
    tracing::info!(
        client = ctx.client.info.id,
        "SHUTDOWN requested by a client"
    );
    ctx.shared.trigger_shutdown();
    ctx.client.close_after_reply = true;
    Ok(())
}
