//! INFO, in Redis's `# Section\r\nfield:value\r\n` format, with walship's
//! own fields (WAL, checkpoints, epoch) added where they belong.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use super::server::REDIS_COMPAT_VERSION;
use super::{CmdResult, Ctx, COMMANDS};
use crate::resp::Args;
use crate::state::Shared;

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
            "replication" => super::replication::info_replication(shared, &mut out),
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
    field!(
        out,
        "blocked_clients",
        shared.clients.blocked.load(Ordering::Relaxed)
    );
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
    // As Redis while it loads its dataset: a standby that is waiting for or
    // replaying a base backup answers reads with -LOADING.
    field!(
        out,
        "loading",
        u8::from(shared.replication.not_consistent().is_some())
    );
    field!(out, "async_loading", 0);
    field!(
        out,
        "rdb_changes_since_last_save",
        s.changes_since_checkpoint
    );
    field!(
        out,
        "rdb_bgsave_in_progress",
        u8::from(p.bgsave_in_progress.load(Ordering::Relaxed))
    );
    field!(
        out,
        "rdb_last_save_time",
        super::server::last_save_time(shared)
    );
    field!(out, "rdb_last_bgsave_status", status);
    field!(out, "aof_enabled", 1);
    field!(out, "aof_rewrite_in_progress", 0);
    field!(
        out,
        "aof_last_write_status",
        if s.poisoned { "err" } else { "ok" }
    );
    field!(out, "wal_fsync", shared.config.fsync);
    field!(out, "wal_sync_method", shared.config.wal_sync_method);
    field!(out, "wal_end_lsn", shared.store.end_lsn());
    field!(out, "wal_flushed_lsn", shared.store.flushed_lsn());
    field!(out, "wal_bytes_written", s.wal_bytes_written);
    field!(out, "wal_records_written", s.records_written);
    field!(out, "wal_fsyncs", s.fsyncs);
    field!(out, "wal_group_commits", s.group_commits);
    field!(out, "wal_commit_delays", s.commit_delays);
    field!(out, "wal_inline_flushes", s.inline_flushes);
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
