//! Replication commands: Redis's ROLE, WAIT, REPLICAOF (SLAVEOF), the
//! replication part of INFO, and walship's own `WALSHIP` subcommands:
//!
//! - `WALSHIP STREAM <port>`: the handshake that turns this connection into
//!   a standby's replication stream (see docs/replication-protocol.md);
//! - `WALSHIP REPLICAS`: one map per standby, PostgreSQL's `pg_stat_replication`;
//! - `WALSHIP LSN`: the end LSN of this connection's last write;
//! - `WALSHIP WAITLSN <lsn> <timeout-ms>`: read-your-writes on a standby: waits
//!   until this node has applied `lsn`, replies with the applied LSN;
//! - `WALSHIP SYNCHRONOUS_COMMIT [level]`: this connection's `synchronous_commit`;
//! - `WALSHIP GETLSN <key>`: the value and the LSN of the write that set it
//!   (what a quorum read compares);
//! - `WALSHIP DROPSLOT <name>`: drops a gone standby's replication slot
//!   (PostgreSQL's `pg_drop_replication_slot`; refused while it is connected);
//! - `WALSHIP QUORUM`: the quorum sizes {n, w, r} for this node and its
//!   connected standbys (W + R > N);
//! - `WALSHIP QUORUMGET <key>`: a quorum read on a primary (see [`crate::quorum`]).

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use walship_replication::SynchronousCommit;

use super::{parse_int, CmdError, CmdResult, Ctx, Deferred};
use crate::replication::Role;
use crate::resp::Args;
use crate::state::Shared;

fn parse_u64(arg: &[u8]) -> Result<u64, CmdError> {
    u64::try_from(parse_int(arg)?).map_err(|_| CmdError::NotInteger)
}

/// `WALSHIP <subcommand> ...`
pub fn walship(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let sub = args.get(1).to_ascii_uppercase();
    match (sub.as_slice(), args.len()) {
        (b"STREAM", 3) => {
            if ctx.shared.replication.is_standby() {
                return Err(CmdError::msg(
                    "ERR this node is a standby; replicate from the primary (cascading replication is not supported)",
                ));
            }
            let port = u16::try_from(parse_int(args.get(2))?).map_err(|_| CmdError::NotInteger)?;
            ctx.client.replicate = Some(port);
            ctx.out.simple("STREAM");
            Ok(())
        }
        (b"REPLICAS", 2) => {
            replicas(ctx);
            Ok(())
        }
        (b"LSN", 2) => {
            ctx.out.int(ctx.client.last_write_lsn as i64);
            Ok(())
        }
        (b"WAITLSN", 4) => {
            let lsn = parse_u64(args.get(2))?;
            let timeout_ms = parse_u64(args.get(3))?;
            ctx.client.deferred = Some(Deferred::WaitLsn { lsn, timeout_ms });
            Ok(())
        }
        (b"SYNCHRONOUS_COMMIT", 2) => {
            let level = ctx.client.sync_commit.unwrap_or_else(|| ctx.shared.replication.sync_commit());
            ctx.out.bulk(level.as_str().as_bytes());
            Ok(())
        }
        (b"SYNCHRONOUS_COMMIT", 3) => {
            let s = String::from_utf8_lossy(args.get(2));
            let level: SynchronousCommit = s.parse().map_err(|e| CmdError::msg(format!("ERR {e}")))?;
            ctx.client.sync_commit = Some(level);
            ctx.out.ok();
            Ok(())
        }
        (b"GETLSN", 3) => {
            // A read like GET: refused while not consistent, and its reply
            // waits until what it saw is durable here.
            if let Some(why) = ctx.shared.replication.not_consistent() {
                return Err(CmdError::msg(format!("LOADING walship {why}")));
            }
            let entry = ctx.shared.store.engine().get_entry(args.get(2));
            ctx.read_fence = Some(ctx.shared.store.end_lsn());
            match entry {
                Some(e) => {
                    ctx.out.array(2);
                    ctx.out.bulk(&e.value);
                    ctx.out.int(e.lsn as i64);
                }
                None => ctx.out.null_array(),
            }
            Ok(())
        }
        (b"DROPSLOT", 3) => {
            let name = String::from_utf8_lossy(args.get(2));
            ctx.shared
                .replication
                .hub
                .drop_slot(&name)
                .map_err(|e| CmdError::msg(format!("ERR {e}")))?;
            ctx.out.ok();
            Ok(())
        }
        (b"QUORUM", 2) => quorum_sizes(ctx),
        (b"QUORUMGET", 3) => quorum_get(ctx, args.get(2)),
        (
            b"STREAM" | b"REPLICAS" | b"LSN" | b"WAITLSN" | b"SYNCHRONOUS_COMMIT" | b"GETLSN"
            | b"DROPSLOT" | b"QUORUM" | b"QUORUMGET",
            _,
        ) => {
            Err(CmdError::msg(format!(
                "ERR wrong number of arguments for 'walship|{}' command",
                String::from_utf8_lossy(&sub).to_lowercase()
            )))
        }
        _ => Err(CmdError::msg(format!(
            "ERR unknown subcommand '{}'. Try WALSHIP REPLICAS, LSN, WAITLSN, SYNCHRONOUS_COMMIT, GETLSN, DROPSLOT, QUORUM, QUORUMGET.",
            String::from_utf8_lossy(args.get(1))
        ))),
    }
}

fn replicas(ctx: &mut Ctx<'_>) {
    let views = ctx.shared.replication.hub.standby_views();
    ctx.out.array(views.len());
    for v in views {
        ctx.out.map(14);
        let mut kv_str = |k: &str, val: &str| {
            ctx.out.bulk(k.as_bytes());
            ctx.out.bulk(val.as_bytes());
        };
        kv_str("application_name", &v.name);
        kv_str("client_addr", &v.addr.ip().to_string());
        kv_str("state", v.state);
        kv_str("sync_state", v.sync_state);
        let lag = |x: Option<f64>| x.map(|ms| format!("{ms:.3}")).unwrap_or_default();
        kv_str("write_lag_ms", &lag(v.write_lag_ms));
        kv_str("flush_lag_ms", &lag(v.flush_lag_ms));
        kv_str("replay_lag_ms", &lag(v.replay_lag_ms));
        for (k, n) in [
            ("client_port", v.listening_port.map_or(-1, i64::from)),
            ("sent_lsn", v.sent_lsn as i64),
            ("write_lsn", v.write_lsn as i64),
            ("flush_lsn", v.flush_lsn as i64),
            ("replay_lsn", v.replay_lsn as i64),
            ("lag_bytes", v.lag_bytes as i64),
            ("last_reply_secs", v.last_reply_secs as i64),
        ] {
            ctx.out.bulk(k.as_bytes());
            ctx.out.int(n);
        }
    }
}

/// `WAIT numreplicas timeout`: how many standbys fsynced this connection's last write.
pub fn wait(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    // A negative count asks for nothing, as in Redis: the reply is at once.
    let replicas =
        usize::try_from(parse_int(args.get(1))?.max(0)).map_err(|_| CmdError::NotInteger)?;
    let timeout_ms = u64::try_from(parse_int(args.get(2))?)
        .map_err(|_| CmdError::msg("ERR timeout is negative"))?;
    if ctx.shared.replication.is_standby() {
        // As Redis: a standby takes no writes, so there is nothing to wait for.
        return Err(CmdError::msg(
            "ERR WAIT cannot be used with replica instances: a standby takes no writes",
        ));
    }
    ctx.client.deferred = Some(Deferred::Wait {
        replicas,
        timeout_ms,
    });
    Ok(())
}

/// `REPLICAOF host port` / `REPLICAOF NO ONE` (and the old name SLAVEOF).
pub fn replicaof(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let (host, port) = (args.get(1), args.get(2));
    if host.eq_ignore_ascii_case(b"no") && port.eq_ignore_ascii_case(b"one") {
        // A deposed primary (fenced) is promoted again by the operator: it
        // takes a new epoch above the one that deposed it.
        if !ctx.shared.replication.is_standby() && ctx.shared.replication.fenced_by().is_none() {
            ctx.out.simple("OK Already a primary");
            return Ok(());
        }
        // Promotion runs on the runtime; this handler waits for it, which
        // needs a multi-threaded runtime (the server's).
        let multi_thread = tokio::runtime::Handle::try_current()
            .map(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
            .unwrap_or(false);
        if !multi_thread {
            return Err(CmdError::msg("ERR promotion needs the server's runtime"));
        }
        let shared = ctx.shared.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        tokio::spawn(async move {
            let _ = tx.send(
                shared
                    .replication
                    .promote()
                    .await
                    .map_err(|e| e.to_string()),
            );
        });
        match tokio::task::block_in_place(|| rx.recv()) {
            Ok(Ok((epoch, lsn))) => ctx
                .out
                .simple(&format!("OK promoted: epoch {epoch} starts at LSN {lsn}")),
            Ok(Err(e)) => return Err(CmdError::msg(format!("ERR promotion failed: {e}"))),
            Err(_) => return Err(CmdError::msg("ERR promotion failed")),
        }
        return Ok(());
    }
    let port =
        u16::try_from(parse_int(port)?).map_err(|_| CmdError::msg("ERR Invalid master port"))?;
    let host = String::from_utf8_lossy(host).to_string();
    let target = format!("{host}:{port}");
    let own_port = ctx.shared.port.load(std::sync::atomic::Ordering::Relaxed) as u16;
    if port == own_port
        && crate::replication::is_own_address(&host, port, ctx.client.info.laddr.ip())
    {
        return Err(CmdError::msg(format!(
            "ERR {target} is this node itself: a node cannot replicate from itself"
        )));
    }
    if let Role::Standby { primary, .. } = ctx.shared.replication.role() {
        if primary == target {
            ctx.out.simple("OK Already connected to specified master");
            return Ok(());
        }
    }
    ctx.shared
        .replication
        .follow(target, own_port)
        .map_err(|e| CmdError::msg(format!("ERR {e}")))?;
    ctx.out.ok();
    Ok(())
}

/// ROLE, as Redis answers it.
pub fn role(ctx: &mut Ctx<'_>, _args: Args<'_>) -> CmdResult {
    let engine = ctx.shared.store.engine();
    match ctx.shared.replication.role() {
        Role::Primary => {
            let views = ctx.shared.replication.hub.standby_views();
            ctx.out.array(3);
            ctx.out.bulk(b"master");
            ctx.out.int(engine.end_lsn() as i64);
            ctx.out.array(views.len());
            for v in views {
                ctx.out.array(3);
                ctx.out.bulk(v.addr.ip().to_string().as_bytes());
                ctx.out
                    .bulk(v.listening_port.unwrap_or(0).to_string().as_bytes());
                ctx.out.bulk(v.flush_lsn.to_string().as_bytes());
            }
        }
        Role::Standby {
            primary, receiver, ..
        } => {
            let (host, port) = split_host_port(&primary);
            let st = receiver.status();
            let state = match st.state {
                "streaming" | "catchup" => "connected",
                "backup" => "sync",
                _ => "connecting",
            };
            ctx.out.array(5);
            ctx.out.bulk(b"slave");
            ctx.out.bulk(host.as_bytes());
            ctx.out.int(port);
            ctx.out.bulk(state.as_bytes());
            ctx.out.int(engine.end_lsn() as i64);
        }
    }
    Ok(())
}

fn split_host_port(s: &str) -> (String, i64) {
    match s.rsplit_once(':') {
        Some((h, p)) => (
            h.trim_matches(['[', ']']).to_string(),
            p.parse().unwrap_or(0),
        ),
        None => (s.to_string(), 0),
    }
}

/// The `# Replication` section of INFO, in Redis's fields plus walship's.
pub fn info_replication(shared: &Shared, out: &mut String) {
    out.push_str("# Replication\r\n");
    let engine = shared.store.engine();
    let mut f = |k: &str, v: &dyn std::fmt::Display| {
        let _ = write!(out, "{k}:{v}\r\n");
    };
    match shared.replication.role() {
        Role::Primary => {
            let views = shared.replication.hub.standby_views();
            f("role", &"master");
            f("connected_slaves", &views.len());
            for (i, v) in views.iter().enumerate() {
                let state = if v.state == "streaming" {
                    "online"
                } else {
                    "wait_bgsave"
                };
                let lag = v.last_reply_secs;
                f(
                    &format!("slave{i}"),
                    &format!(
                        "ip={},port={},state={state},offset={},lag={lag},name={},sync_state={}",
                        v.addr.ip(),
                        v.listening_port.unwrap_or(0),
                        v.flush_lsn,
                        v.name,
                        v.sync_state
                    ),
                );
            }
        }
        Role::Standby {
            primary, receiver, ..
        } => {
            let (host, port) = split_host_port(&primary);
            let st = receiver.status();
            f("role", &"slave");
            f("master_host", &host);
            f("master_port", &port);
            f(
                "master_link_status",
                &if st.link_up { "up" } else { "down" },
            );
            let io_ago = st.last_message.map_or(-1, |t| t.elapsed().as_secs() as i64);
            f("master_last_io_seconds_ago", &io_ago);
            f("master_sync_in_progress", &u8::from(st.state == "backup"));
            f("slave_read_repl_offset", &engine.written_lsn());
            // What it has applied and holds as durably as its fsync policy
            // makes anything durable (under `never`, written; so it keeps
            // up with the primary), as WALSHIP WAITLSN counts it.
            f(
                "slave_repl_offset",
                &engine.end_lsn().min(engine.durable_lsn()),
            );
            if let Some(since) = st.down_since {
                f("master_link_down_since_seconds", &since.elapsed().as_secs());
            }
            f("slave_priority", &100);
            f("slave_read_only", &1);
            f("replica_announced", &1);
            f("connected_slaves", &0);
            f("walship_replication_state", &st.state);
            f("walship_primary_end_lsn", &st.primary_end_lsn);
            f("walship_base_backups", &st.base_backups);
            if let Some(e) = &st.last_error {
                f("walship_last_error", &e.replace(['\r', '\n'], " "));
            }
        }
    }
    f("master_failover_state", &"no-failover");
    f(
        "master_replid",
        &format!("{:016x}{:024x}", engine.cluster_id(), engine.epoch()),
    );
    f(
        "master_replid2",
        &"0000000000000000000000000000000000000000",
    );
    f("master_repl_offset", &engine.end_lsn());
    f("second_repl_offset", &-1);
    f("repl_backlog_active", &0);
    f(
        "walship_cluster_id",
        &format!("{:016x}", engine.cluster_id()),
    );
    f("walship_epoch", &engine.epoch());
    f(
        "walship_epoch_start_lsn",
        &engine
            .epoch_history()
            .entries()
            .last()
            .map_or(0, |e| e.start_lsn),
    );
    let fenced = shared.replication.fenced_by();
    f("walship_fenced", &u8::from(fenced.is_some()));
    if let Some(epoch) = fenced {
        f("walship_fenced_by_epoch", &epoch);
    }
    if let Some(lsn) = shared.replication.hub.wal_damaged_at() {
        f("walship_wal_damaged_lsn", &lsn);
    }
    let rw = &shared.replication.rewinds;
    f("walship_rewinds", &rw.rewinds.load(Ordering::Relaxed));
    f(
        "walship_rewound_records",
        &rw.records.load(Ordering::Relaxed),
    );
    f("walship_rewound_bytes", &rw.bytes.load(Ordering::Relaxed));
    f(
        "walship_last_rewind_lsn",
        &rw.last_fork_lsn.load(Ordering::Relaxed),
    );
    f("walship_flushed_lsn", &engine.flushed_lsn());
    f(
        "walship_consistent",
        &u8::from(shared.replication.is_consistent()),
    );
    f(
        "walship_synchronous_standby_names",
        &shared.replication.hub.sync_names(),
    );
    f(
        "walship_synchronous_commit",
        &shared.replication.sync_commit().as_str(),
    );
    let slots = shared.replication.slots.list();
    f("walship_slots", &slots.len());
    for s in slots {
        f(
            &format!(
                "walship_slot_{}",
                s.name.replace([',', ':', ' ', '\r', '\n'], "_")
            ),
            &format!(
                "restart_lsn={},invalidated={}",
                s.restart_lsn,
                u8::from(s.invalidated)
            ),
        );
    }
}

/// The quorum sizes for this node and the standbys of its cluster: every
/// standby with a replication slot here (each that ever streamed from it,
/// until its slot is dropped) or connected now. Not only the connected
/// ones: a primary cut off from its standbys must not shrink its quorum to
/// itself and answer from its own, possibly deposed, state.
fn current_quorum(shared: &Shared) -> walship_replication::quorum::QuorumConfig {
    let standbys = if shared.replication.is_standby() {
        0
    } else {
        let mut names: std::collections::BTreeSet<String> = shared
            .replication
            .slots
            .list()
            .into_iter()
            .map(|s| s.name)
            .collect();
        names.extend(
            shared
                .replication
                .hub
                .standby_views()
                .into_iter()
                .map(|v| v.name),
        );
        names.len()
    };
    walship_replication::quorum::quorum_config(1 + standbys).expect("n >= 1")
}

/// `WALSHIP QUORUM`: {n, w, r} with N = this node + its standbys (see
/// [`current_quorum`]).
fn quorum_sizes(ctx: &mut Ctx<'_>) -> CmdResult {
    let q = current_quorum(ctx.shared);
    ctx.out.map(3);
    for (k, v) in [("n", q.n), ("w", q.w), ("r", q.r)] {
        ctx.out.bulk(k.as_bytes());
        ctx.out.int(v as i64);
    }
    Ok(())
}

/// `WALSHIP QUORUMGET key`: reads `key` here and from R - 1 standbys and
/// replies with the value of the highest LSN (nil when the key is absent),
/// or `-NOQUORUM` when fewer than R nodes answered within
/// [`crate::quorum::QUORUM_READ_TIMEOUT`].
fn quorum_get(ctx: &mut Ctx<'_>, key: &[u8]) -> CmdResult {
    use crate::quorum::{ask_peers, decide, peers, QUORUM_READ_TIMEOUT};
    use walship_replication::quorum::QuorumError;

    let shared = ctx.shared.clone();
    if shared.replication.is_standby() {
        return Err(CmdError::msg(
            "ERR WALSHIP QUORUMGET runs on the primary (it reads from the primary's standbys)",
        ));
    }
    let views = shared.replication.hub.standby_views();
    let q = current_quorum(&shared);
    let engine = shared.store.engine();
    // Absent here as of (at least) the WAL end read before the lookup.
    let horizon = engine.end_lsn();
    let local = match engine.get_entry(key) {
        Some(e) => (Some(e.value), e.lsn),
        None => (None, horizon),
    };
    // Like any read: reply only once what it saw here is durable.
    ctx.read_fence = Some(shared.store.end_lsn());
    let mut replies = vec![local];
    let needed = q.r - 1;
    if needed > 0 {
        let peers = peers(&views);
        let key = bytes::Bytes::copy_from_slice(key);
        let password = shared.replication.password();
        let max_reply = usize::try_from(shared.config.max_value_bytes)
            .unwrap_or(usize::MAX)
            .saturating_add(64 * 1024);
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return Err(CmdError::msg("ERR quorum reads need the server's runtime"));
        };
        if rt.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
            return Err(CmdError::msg(
                "ERR quorum reads need the server's multi-threaded runtime",
            ));
        }
        // Handlers are synchronous: run the requests on the runtime and wait
        // here, bounded by the quorum timeout (as REPLICAOF NO ONE waits).
        let (tx, rx) = std::sync::mpsc::channel();
        rt.spawn(async move {
            let got = ask_peers(peers, key, password, needed, max_reply, QUORUM_READ_TIMEOUT).await;
            let _ = tx.send(got);
        });
        let got = tokio::task::block_in_place(|| {
            rx.recv_timeout(QUORUM_READ_TIMEOUT + std::time::Duration::from_millis(500))
        })
        .unwrap_or_default();
        replies.extend(got);
    }
    match decide(&replies, q.r) {
        Ok(v) => {
            ctx.out.optional_bulk(v.as_deref());
            Ok(())
        }
        Err(QuorumError::NotEnoughReplies { got, needed }) => Err(CmdError::msg(format!(
            "NOQUORUM only {got} of {needed} nodes answered"
        ))),
        Err(e) => Err(CmdError::msg(format!("ERR {e}"))),
    }
}

#[cfg(test)]
mod quorum_tests {
    use std::sync::Arc;

    use crate::commands::{execute, ClientState, Ctx};
    use crate::config::{FileConfig, FsyncSetting, ServerArgs, ServerConfig};
    use crate::reply::{Protocol, Reply};
    use crate::resp::Args;
    use crate::state::Shared;
    use crate::store::Store;

    fn run(shared: &Arc<Shared>, client: &mut ClientState, args: &[&str]) -> String {
        let mut out = Reply::new(Protocol::Resp2);
        let mut data = Vec::new();
        let mut ranges = Vec::new();
        for a in args {
            let start = data.len();
            data.extend_from_slice(a.as_bytes());
            ranges.push((start, data.len()));
        }
        let mut ctx = Ctx::new(shared, client, &mut out);
        execute(&mut ctx, Args::from_owned(&data, &ranges));
        String::from_utf8_lossy(out.as_bytes()).into_owned()
    }

    #[test]
    fn a_lone_primary_is_its_own_quorum() {
        let dir = tempfile::tempdir().unwrap();
        let args = ServerArgs {
            data_dir: Some(dir.path().to_path_buf()),
            fsync: Some(FsyncSetting::Never),
            ..ServerArgs::default()
        };
        let cfg = ServerConfig::merge(&args, &FileConfig::default()).unwrap();
        let shared = Arc::new(Shared::new(Store::open(&cfg).unwrap(), cfg));
        let a = "127.0.0.1:1".parse().unwrap();
        let mut client = ClientState::new(shared.clients.register(a, a), &shared);
        assert_eq!(
            run(&shared, &mut client, &["WALSHIP", "QUORUM"]),
            "*6\r\n$1\r\nn\r\n:1\r\n$1\r\nw\r\n:1\r\n$1\r\nr\r\n:1\r\n"
        );
        assert_eq!(run(&shared, &mut client, &["SET", "k", "v1"]), "+OK\r\n");
        assert_eq!(
            run(&shared, &mut client, &["WALSHIP", "QUORUMGET", "k"]),
            "$2\r\nv1\r\n"
        );
        assert_eq!(
            run(&shared, &mut client, &["walship", "quorumget", "nope"]),
            "$-1\r\n"
        );
        assert_eq!(run(&shared, &mut client, &["DEL", "k"]), ":1\r\n");
        assert_eq!(
            run(&shared, &mut client, &["WALSHIP", "QUORUMGET", "k"]),
            "$-1\r\n"
        );
        assert!(run(&shared, &mut client, &["WALSHIP", "QUORUMGET"])
            .starts_with("-ERR wrong number of arguments for 'walship|quorumget'"));
    }
}
