//! Counters and latency histograms, rendered in Prometheus text format for
//! `/metrics` and as `INFO commandstats`.
//!
//! Recording is a few relaxed atomic adds per command: no locks, no allocation.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use walship_replication::StandbyView;

use crate::commands::COMMANDS;
use crate::replication::Role;
use crate::state::Shared;

/// Upper bounds of the latency buckets, in microseconds.
pub const LATENCY_BUCKETS_US: [u64; 19] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
    500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// Calls, failures and latency of one command.
pub struct CommandMetrics {
    pub calls: AtomicU64,
    pub failed_calls: AtomicU64,
    pub latency_us_total: AtomicU64,
    /// Non-cumulative counts; the last slot is `+Inf`.
    buckets: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
}

impl CommandMetrics {
    fn new() -> CommandMetrics {
        CommandMetrics {
            calls: AtomicU64::new(0),
            failed_calls: AtomicU64::new(0),
            latency_us_total: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    fn reset(&self) {
        self.calls.store(0, Ordering::Relaxed);
        self.failed_calls.store(0, Ordering::Relaxed);
        self.latency_us_total.store(0, Ordering::Relaxed);
        for b in &self.buckets {
            b.store(0, Ordering::Relaxed);
        }
    }
}

/// Server-side metrics (the engine keeps its own counters; see `Store::stats`).
pub struct Metrics {
    /// One entry per command in [`COMMANDS`].
    pub commands: Vec<CommandMetrics>,
    pub unknown_commands: AtomicU64,
    pub connections_total: AtomicU64,
    pub rejected_connections: AtomicU64,
    pub net_input_bytes: AtomicU64,
    pub net_output_bytes: AtomicU64,
    pub protocol_errors: AtomicU64,
    pub output_limit_disconnects: AtomicU64,
    pub durability_failures: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            commands: COMMANDS.iter().map(|_| CommandMetrics::new()).collect(),
            unknown_commands: AtomicU64::new(0),
            connections_total: AtomicU64::new(0),
            rejected_connections: AtomicU64::new(0),
            net_input_bytes: AtomicU64::new(0),
            net_output_bytes: AtomicU64::new(0),
            protocol_errors: AtomicU64::new(0),
            output_limit_disconnects: AtomicU64::new(0),
            durability_failures: AtomicU64::new(0),
        }
    }

    /// Records one call of command `idx` that took `elapsed` (until its reply
    /// could be sent, durability wait included).
    pub fn record(&self, idx: usize, elapsed: Duration, failed: bool) {
        let m = &self.commands[idx];
        let us = elapsed.as_micros().min(u128::from(u64::MAX)) as u64;
        m.calls.fetch_add(1, Ordering::Relaxed);
        if failed {
            m.failed_calls.fetch_add(1, Ordering::Relaxed);
        }
        m.latency_us_total.fetch_add(us, Ordering::Relaxed);
        let slot = LATENCY_BUCKETS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        m.buckets[slot].fetch_add(1, Ordering::Relaxed);
    }

    /// CONFIG RESETSTAT.
    pub fn reset(&self) {
        for m in &self.commands {
            m.reset();
        }
        self.unknown_commands.store(0, Ordering::Relaxed);
        self.rejected_connections.store(0, Ordering::Relaxed);
        self.net_input_bytes.store(0, Ordering::Relaxed);
        self.net_output_bytes.store(0, Ordering::Relaxed);
        self.protocol_errors.store(0, Ordering::Relaxed);
        self.output_limit_disconnects.store(0, Ordering::Relaxed);
    }
}

fn counter(out: &mut String, name: &str, help: &str, v: impl std::fmt::Display) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
    );
}

fn gauge(out: &mut String, name: &str, help: &str, v: impl std::fmt::Display) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
}

/// Escapes a Prometheus label value: backslash, double quote and newline.
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// One per-standby sample: `None` when not measured yet.
type StandbyValue = fn(&StandbyView) -> Option<f64>;

/// The replication families: role and epoch, one series per standby and
/// per slot on a primary, the link to the primary on a standby.
fn render_replication(shared: &Shared, out: &mut String) {
    let repl = &shared.replication;
    let engine = shared.store.engine();
    let role = repl.role();
    let is_standby = matches!(role, Role::Standby { .. });
    header(
        out,
        "walship_replication_role",
        "gauge",
        "1 for the role this node plays now (primary or standby).",
    );
    for (name, on) in [("primary", !is_standby), ("standby", is_standby)] {
        let _ = writeln!(
            out,
            "walship_replication_role{{role=\"{name}\"}} {}",
            u8::from(on)
        );
    }
    gauge(
        out,
        "walship_epoch",
        "Current epoch (timeline); every promotion and primary start begins a new one.",
        engine.epoch(),
    );
    let views = if is_standby {
        Vec::new()
    } else {
        repl.hub.standby_views()
    };
    gauge(
        out,
        "walship_standbys_connected",
        "Standbys streaming from (or being seeded by) this primary.",
        views.len(),
    );
    let per_standby: [(&str, &str, StandbyValue); 8] = [
        (
            "walship_standby_sent_lsn",
            "WAL sent to the standby up to this LSN.",
            |v| Some(v.sent_lsn as f64),
        ),
        (
            "walship_standby_write_lsn",
            "WAL written (not yet fsynced) on the standby up to this LSN.",
            |v| Some(v.write_lsn as f64),
        ),
        (
            "walship_standby_flush_lsn",
            "WAL fsynced on the standby up to this LSN.",
            |v| Some(v.flush_lsn as f64),
        ),
        (
            "walship_standby_replay_lsn",
            "WAL applied (readable) on the standby up to this LSN.",
            |v| Some(v.replay_lsn as f64),
        ),
        (
            "walship_standby_lag_bytes",
            "Bytes the standby's flush LSN is behind this primary's WAL end.",
            |v| Some(v.lag_bytes as f64),
        ),
        (
            "walship_standby_write_lag_seconds",
            "Time from sending WAL to the standby's write of it, last measured.",
            |v| v.write_lag_ms.map(|ms| ms / 1e3),
        ),
        (
            "walship_standby_flush_lag_seconds",
            "Time from sending WAL to the standby's fsync of it, last measured.",
            |v| v.flush_lag_ms.map(|ms| ms / 1e3),
        ),
        (
            "walship_standby_replay_lag_seconds",
            "Time from sending WAL to the standby's apply of it, last measured.",
            |v| v.replay_lag_ms.map(|ms| ms / 1e3),
        ),
    ];
    for (name, help, value) in per_standby {
        header(out, name, "gauge", help);
        for v in &views {
            if let Some(x) = value(v) {
                let _ = writeln!(out, "{name}{{standby=\"{}\"}} {x}", escape_label(&v.name));
            }
        }
    }
    header(
        out,
        "walship_standby_sync",
        "gauge",
        "1 for the standby's synchronous state (sync, quorum, potential or async), 0 for the others.",
    );
    for v in &views {
        let standby = escape_label(&v.name);
        for state in ["sync", "quorum", "potential", "async"] {
            let _ = writeln!(
                out,
                "walship_standby_sync{{standby=\"{standby}\",state=\"{state}\"}} {}",
                u8::from(v.sync_state == state)
            );
        }
    }
    let slots = repl.slots.list();
    header(
        out,
        "walship_slot_restart_lsn",
        "gauge",
        "Oldest LSN the replication slot's standby still needs (WAL from here is kept).",
    );
    for s in &slots {
        let _ = writeln!(
            out,
            "walship_slot_restart_lsn{{slot=\"{}\"}} {}",
            escape_label(&s.name),
            s.restart_lsn
        );
    }
    header(
        out,
        "walship_slot_invalidated",
        "gauge",
        "1 when the slot gave up holding WAL (max_slot_wal_keep_size); its standby needs a base backup.",
    );
    for s in &slots {
        let _ = writeln!(
            out,
            "walship_slot_invalidated{{slot=\"{}\"}} {}",
            escape_label(&s.name),
            u8::from(s.invalidated)
        );
    }
    let rw = &shared.replication.rewinds;
    counter(
        out,
        "walship_rewinds_total",
        "Times this node cut its WAL back to a fork point to follow a new primary.",
        rw.rewinds.load(Ordering::Relaxed),
    );
    counter(
        out,
        "walship_rewound_records_total",
        "WAL records cut away by rewinds (kept under <data-dir>/rewound/).",
        rw.records.load(Ordering::Relaxed),
    );
    counter(
        out,
        "walship_rewound_bytes_total",
        "WAL bytes cut away by rewinds.",
        rw.bytes.load(Ordering::Relaxed),
    );
    gauge(
        out,
        "walship_fenced",
        "1 while this primary refuses writes because a standby showed it a newer epoch.",
        u8::from(shared.replication.fenced_by().is_some()),
    );
    gauge(
        out,
        "walship_wal_damage_found",
        "1 once a WAL sender found a record on this node's disk that fails its CRC (INFO walship_wal_damaged_lsn, and the log, say where).",
        u8::from(shared.replication.hub.wal_damaged_at().is_some()),
    );
    if let Role::Standby { receiver, .. } = role {
        let st = receiver.status();
        gauge(
            out,
            "walship_replication_link_up",
            "1 while this standby's link to its primary is up.",
            u8::from(st.link_up),
        );
        gauge(
            out,
            "walship_replication_primary_end_lsn",
            "The primary's WAL end, as last told to this standby.",
            st.primary_end_lsn,
        );
        counter(
            out,
            "walship_base_backups_total",
            "Base backups this standby installed since it started replicating.",
            st.base_backups,
        );
    }
}

/// The `/metrics` page.
pub fn render_prometheus(shared: &Shared) -> String {
    let m = &shared.metrics;
    let mut out = String::with_capacity(16 * 1024);
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);

    let _ = writeln!(
        out,
        "# HELP walship_commands_total Commands executed, by command."
    );
    let _ = writeln!(out, "# TYPE walship_commands_total counter");
    for (spec, cm) in COMMANDS.iter().zip(&m.commands) {
        let calls = load(&cm.calls);
        if calls > 0 {
            let _ = writeln!(
                out,
                "walship_commands_total{{cmd=\"{}\"}} {calls}",
                spec.name
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP walship_command_errors_total Commands that replied with an error, by command."
    );
    let _ = writeln!(out, "# TYPE walship_command_errors_total counter");
    for (spec, cm) in COMMANDS.iter().zip(&m.commands) {
        if load(&cm.calls) > 0 {
            let _ = writeln!(
                out,
                "walship_command_errors_total{{cmd=\"{}\"}} {}",
                spec.name,
                load(&cm.failed_calls)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP walship_command_duration_seconds Time from the start of a command until its reply could be sent (durability wait included)."
    );
    let _ = writeln!(out, "# TYPE walship_command_duration_seconds histogram");
    for (spec, cm) in COMMANDS.iter().zip(&m.commands) {
        let calls = load(&cm.calls);
        if calls == 0 {
            continue;
        }
        let mut cumulative = 0;
        for (i, bound_us) in LATENCY_BUCKETS_US.iter().enumerate() {
            cumulative += load(&cm.buckets[i]);
            let _ = writeln!(
                out,
                "walship_command_duration_seconds_bucket{{cmd=\"{}\",le=\"{}\"}} {cumulative}",
                spec.name,
                *bound_us as f64 / 1e6
            );
        }
        cumulative += load(&cm.buckets[LATENCY_BUCKETS_US.len()]);
        let _ = writeln!(
            out,
            "walship_command_duration_seconds_bucket{{cmd=\"{}\",le=\"+Inf\"}} {cumulative}",
            spec.name
        );
        let _ = writeln!(
            out,
            "walship_command_duration_seconds_sum{{cmd=\"{}\"}} {}",
            spec.name,
            load(&cm.latency_us_total) as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "walship_command_duration_seconds_count{{cmd=\"{}\"}} {cumulative}",
            spec.name
        );
    }
    counter(
        &mut out,
        "walship_unknown_commands_total",
        "Requests naming a command walship does not have.",
        load(&m.unknown_commands),
    );

    gauge(
        &mut out,
        "walship_connected_clients",
        "Client connections open now.",
        load(&shared.clients.connected),
    );
    counter(
        &mut out,
        "walship_connections_total",
        "Client connections accepted since start.",
        load(&m.connections_total),
    );
    counter(
        &mut out,
        "walship_rejected_connections_total",
        "Connections refused because max-clients was reached.",
        load(&m.rejected_connections),
    );
    counter(
        &mut out,
        "walship_net_input_bytes_total",
        "Bytes read from clients.",
        load(&m.net_input_bytes),
    );
    counter(
        &mut out,
        "walship_net_output_bytes_total",
        "Bytes written to clients.",
        load(&m.net_output_bytes),
    );
    counter(
        &mut out,
        "walship_protocol_errors_total",
        "Connections closed for malformed RESP.",
        load(&m.protocol_errors),
    );
    counter(
        &mut out,
        "walship_output_limit_disconnects_total",
        "Clients closed for exceeding client-output-buffer-limit or client-query-buffer-limit.",
        load(&m.output_limit_disconnects),
    );
    counter(
        &mut out,
        "walship_durability_failures_total",
        "Batches whose writes got an error instead of OK: not made durable, or not confirmed by the standbys in time (synchronous-commit-timeout-ms).",
        load(&m.durability_failures),
    );

    let s = shared.store.stats();
    counter(
        &mut out,
        "walship_wal_bytes_written_total",
        "Bytes appended to the WAL.",
        s.wal_bytes_written,
    );
    counter(
        &mut out,
        "walship_wal_fsyncs_total",
        "fsync/fdatasync calls on the WAL.",
        s.fsyncs,
    );
    counter(
        &mut out,
        "walship_wal_commit_delays_total",
        "Group commits delayed by commit_delay_us to let more writers join.",
        s.commit_delays,
    );
    counter(
        &mut out,
        "walship_wal_inline_flushes_total",
        "WAL batches written by the thread that appended them (a standby's WAL receiver, or a lone writer), the flusher being idle.",
        s.inline_flushes,
    );
    counter(
        &mut out,
        "walship_wal_records_total",
        "WAL records written.",
        s.records_written,
    );
    counter(
        &mut out,
        "walship_wal_group_commits_total",
        "Group commits (one write and one fsync for a batch of records).",
        s.group_commits,
    );
    let per_commit = if s.group_commits > 0 {
        s.records_written as f64 / s.group_commits as f64
    } else {
        0.0
    };
    gauge(
        &mut out,
        "walship_wal_records_per_group_commit",
        "Average WAL records per group commit since start.",
        per_commit,
    );
    counter(
        &mut out,
        "walship_checkpoints_total",
        "Checkpoints written.",
        s.checkpoints,
    );
    counter(
        &mut out,
        "walship_checkpoint_duration_seconds_total",
        "Time spent writing checkpoints.",
        s.checkpoint_ms_total as f64 / 1e3,
    );
    gauge(
        &mut out,
        "walship_last_checkpoint_lsn",
        "LSN covered by the latest checkpoint.",
        s.last_checkpoint_lsn,
    );
    gauge(
        &mut out,
        "walship_wal_end_lsn",
        "End of the WAL (next LSN to assign).",
        shared.store.end_lsn(),
    );
    gauge(
        &mut out,
        "walship_wal_flushed_lsn",
        "WAL durable up to this LSN.",
        shared.store.flushed_lsn(),
    );
    gauge(&mut out, "walship_keys", "Keys stored.", shared.store.len());
    render_replication(shared, &mut out);
    gauge(
        &mut out,
        "walship_uptime_seconds",
        "Seconds since the server started.",
        shared.started.elapsed().as_secs(),
    );
    out
}
