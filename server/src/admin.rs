//! The HTTP admin server (`--admin-port`): `GET /metrics` (Prometheus text),
//! `GET /health`, `GET /status` (JSON).
//!
//! Hand-written HTTP/1.1, one request per connection (`Connection: close`):
//! the three pages are small, and this keeps the dependency tree and the
//! attack surface small. Requests are bounded in size and time.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::replication::Role;
use crate::state::Shared;

const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// How long a whole exchange may take, from accept to the last byte sent.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Admin connections served at once. At the cap, a new connection closes the
/// oldest one that has not yet sent its request, so idle or slow connections
/// cannot keep a health check waiting; only when every connection is busy
/// answering does a new one wait in the accept queue.
const MAX_ADMIN_CONNECTIONS: usize = 64;

/// One admin connection in progress, as the accept loop sees it.
struct Slot {
    id: u64,
    /// Set once the connection's request has been read.
    busy: Arc<std::sync::atomic::AtomicBool>,
    /// Tells the connection's task to close.
    close: Arc<tokio::sync::Notify>,
}

/// The admin connections in progress, oldest first.
#[derive(Default)]
struct Slots(std::sync::Mutex<std::collections::VecDeque<Slot>>);

impl Slots {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<Slot>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Closes the oldest connection still waiting for its request; false if
    /// every connection is busy.
    fn close_oldest_idle(&self) -> bool {
        let mut slots = self.lock();
        let Some(i) = slots.iter().position(|s| !s.busy.load(Ordering::Acquire)) else {
            return false;
        };
        let slot = slots.remove(i).expect("index in range");
        slot.close.notify_one();
        true
    }

    fn remove(&self, id: u64) {
        self.lock().retain(|s| s.id != id);
    }
}

/// Serves admin requests until the server shuts down.
pub async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_ADMIN_CONNECTIONS));
    let slots = Arc::new(Slots::default());
    let mut shutdown = shared.shutdown_signal();
    let mut next_id = 0u64;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                slots.close_oldest_idle();
                tokio::select! {
                    p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                    _ = shutdown.changed() => return,
                }
            }
        };
        next_id += 1;
        let id = next_id;
        let busy = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let close = Arc::new(tokio::sync::Notify::new());
        slots.lock().push_back(Slot {
            id,
            busy: busy.clone(),
            close: close.clone(),
        });
        let (shared, slots) = (shared.clone(), slots.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::timeout(REQUEST_TIMEOUT, handle(&shared, stream, &busy)) => {}
                _ = close.notified() => {}
            }
            slots.remove(id);
            drop(permit);
        });
    }
}

async fn handle(
    shared: &Shared,
    mut stream: TcpStream,
    busy: &std::sync::atomic::AtomicBool,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
            break;
        }
        if buf.len() > MAX_REQUEST_BYTES {
            return respond(&mut stream, 431, "text/plain", "request header too large\n").await;
        }
    }
    busy.store(true, Ordering::Release);
    let line_end = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
    let line = String::from_utf8_lossy(&buf[..line_end]);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    if method != "GET" && method != "HEAD" {
        return respond(&mut stream, 405, "text/plain", "only GET is supported\n").await;
    }
    let (status, ctype, body) = route(shared, path);
    if method == "HEAD" {
        return respond(&mut stream, status, ctype, "").await;
    }
    respond(&mut stream, status, ctype, &body).await
}

/// The response for `path`: (status, content type, body).
pub fn route(shared: &Shared, path: &str) -> (u16, &'static str, String) {
    match path {
        "/metrics" => (
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            crate::metrics::render_prometheus(shared),
        ),
        "/health" | "/healthz" => {
            if shared.is_shutting_down() {
                (503, "text/plain", "shutting down\n".to_string())
            } else if shared.store.stats().poisoned {
                (
                    503,
                    "text/plain",
                    "writes refused: the WAL is poisoned by an I/O failure; restart walship\n"
                        .to_string(),
                )
            } else {
                (200, "text/plain", "ok\n".to_string())
            }
        }
        "/status" => (
            200,
            "application/json",
            status_json(shared).to_string() + "\n",
        ),
        _ => (
            404,
            "text/plain",
            "not found: try /metrics, /health or /status\n".to_string(),
        ),
    }
}

/// The `/status` document.
pub fn status_json(shared: &Shared) -> serde_json::Value {
    let s = shared.store.stats();
    serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "role": if shared.replication.is_standby() { "standby" } else { "primary" },
        "port": shared.port.load(Ordering::Relaxed),
        "data_dir": shared.config.data_dir.display().to_string(),
        "fsync": shared.config.fsync.to_string(),
        "uptime_seconds": shared.started.elapsed().as_secs(),
        "shutting_down": shared.is_shutting_down(),
        "cluster_id": format!("{:016x}", shared.store.cluster_id()),
        "epoch": shared.store.epoch(),
        "keys": shared.store.len(),
        "connected_clients": shared.clients.connected.load(Ordering::Relaxed),
        "wal": {
            "end_lsn": shared.store.end_lsn(),
            "flushed_lsn": shared.store.flushed_lsn(),
            "bytes_written": s.wal_bytes_written,
            "records_written": s.records_written,
            "fsyncs": s.fsyncs,
            "group_commits": s.group_commits,
            "commit_delays": s.commit_delays,
            "inline_flushes": s.inline_flushes,
            "segments": s.wal_segments,
            "poisoned": s.poisoned,
        },
        "checkpoints": {
            "count": s.checkpoints,
            "duration_ms_total": s.checkpoint_ms_total,
            "last_lsn": s.last_checkpoint_lsn,
        },
        "replication": replication_json(shared),
    })
}

/// The `replication` object of `/status`: the node's role and WAL
/// positions, then on a primary one PostgreSQL-style row per standby
/// (`pg_stat_replication`) and the slots (`pg_replication_slots`), on a
/// standby the state of its link to the primary (`pg_stat_wal_receiver`).
pub fn replication_json(shared: &Shared) -> serde_json::Value {
    use serde_json::json;
    let repl = &shared.replication;
    let engine = shared.store.engine();
    let mut doc = json!({
        "role": if repl.is_standby() { "standby" } else { "primary" },
        "epoch": engine.epoch(),
        "cluster_id": format!("{:016x}", engine.cluster_id()),
        "end_lsn": engine.end_lsn(),
        "flushed_lsn": engine.flushed_lsn(),
        "synchronous_standby_names": repl.hub.sync_names().to_string(),
        "synchronous_commit": repl.sync_commit().as_str(),
    });
    let obj = doc.as_object_mut().expect("an object");
    match repl.role() {
        Role::Primary => {
            let standbys: Vec<serde_json::Value> = repl
                .hub
                .standby_views()
                .into_iter()
                .map(|v| {
                    json!({
                        "name": v.name,
                        "client_addr": v.addr.ip().to_string(),
                        "client_port": v.listening_port,
                        "state": v.state,
                        "sent_lsn": v.sent_lsn,
                        "write_lsn": v.write_lsn,
                        "flush_lsn": v.flush_lsn,
                        "replay_lsn": v.replay_lsn,
                        "write_lag_ms": v.write_lag_ms,
                        "flush_lag_ms": v.flush_lag_ms,
                        "replay_lag_ms": v.replay_lag_ms,
                        "lag_bytes": v.lag_bytes,
                        "sync_state": v.sync_state,
                        "last_reply_secs": v.last_reply_secs,
                    })
                })
                .collect();
            obj.insert("standbys".into(), standbys.into());
        }
        Role::Standby {
            primary, receiver, ..
        } => {
            let st = receiver.status();
            obj.insert("primary".into(), primary.into());
            obj.insert("link_up".into(), st.link_up.into());
            obj.insert("replication_state".into(), st.state.into());
            obj.insert("primary_end_lsn".into(), st.primary_end_lsn.into());
            obj.insert("primary_flushed_lsn".into(), st.primary_flushed_lsn.into());
            obj.insert("last_error".into(), st.last_error.into());
            obj.insert("base_backups".into(), st.base_backups.into());
            obj.insert("consistent".into(), repl.is_consistent().into());
        }
    }
    let fenced = repl.fenced_by();
    obj.insert("fenced".into(), fenced.is_some().into());
    obj.insert("fenced_by_epoch".into(), fenced.into());
    obj.insert("wal_damaged_lsn".into(), repl.hub.wal_damaged_at().into());
    obj.insert(
        "epoch_start_lsn".into(),
        engine
            .epoch_history()
            .entries()
            .last()
            .map_or(0, |e| e.start_lsn)
            .into(),
    );
    obj.insert(
        "rewind".into(),
        json!({
            "rewinds": repl.rewinds.rewinds.load(Ordering::Relaxed),
            "rewound_records": repl.rewinds.records.load(Ordering::Relaxed),
            "rewound_bytes": repl.rewinds.bytes.load(Ordering::Relaxed),
            "last_fork_lsn": repl.rewinds.last_fork_lsn.load(Ordering::Relaxed),
        }),
    );
    let slots: Vec<serde_json::Value> = repl
        .slots
        .list()
        .into_iter()
        .map(|s| {
            json!({
                "name": s.name,
                "restart_lsn": s.restart_lsn,
                "invalidated": s.invalidated,
            })
        })
        .collect();
    obj.insert("slots".into(), slots.into());
    obj.insert(
        "max_slot_wal_keep_size".into(),
        repl.slots.max_keep_bytes().into(),
    );
    doc
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    ctype: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reason(status),
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::{FileConfig, FsyncSetting, ServerArgs, ServerConfig};
    use crate::store::Store;

    fn shared(dir: &std::path::Path) -> Arc<Shared> {
        let args = ServerArgs {
            data_dir: Some(dir.to_path_buf()),
            fsync: Some(FsyncSetting::Never),
            ..ServerArgs::default()
        };
        let cfg = ServerConfig::merge(&args, &FileConfig::default()).unwrap();
        Arc::new(Shared::new(Store::open(&cfg).unwrap(), cfg))
    }

    fn status(shared: &Shared) -> serde_json::Value {
        let (code, ctype, body) = route(shared, "/status");
        assert_eq!((code, ctype), (200, "application/json"));
        serde_json::from_str(&body).expect("/status is JSON")
    }

    #[test]
    fn status_of_a_primary_has_the_replication_object() {
        let dir = tempfile::tempdir().unwrap();
        let shared = shared(dir.path());
        shared
            .replication
            .slots
            .acquire("quo\"ted\\name", 5)
            .unwrap();
        let doc = status(&shared);
        assert_eq!(doc["role"], "primary");
        let r = &doc["replication"];
        assert_eq!(r["role"], "primary");
        assert_eq!(r["epoch"], doc["epoch"]);
        let id = r["cluster_id"].as_str().unwrap();
        assert_eq!(id.len(), 16);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
        assert!(r["end_lsn"].as_u64().is_some());
        assert!(r["flushed_lsn"].as_u64().is_some());
        assert_eq!(r["synchronous_standby_names"], "");
        assert_eq!(r["synchronous_commit"], "on");
        assert_eq!(r["standbys"], serde_json::json!([]));
        assert_eq!(
            r["slots"],
            serde_json::json!([{"name": "quo\"ted\\name", "restart_lsn": 5, "invalidated": false}])
        );
        assert!(r.get("primary").is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn status_and_metrics_of_a_standby_show_its_link() {
        let dir = tempfile::tempdir().unwrap();
        let shared = shared(dir.path());
        // Nothing listens there: the link stays down.
        let unused = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        // (Builds whether `follow` returns `()` or a `Result`.)
        #[allow(clippy::let_unit_value)]
        let _ = shared.replication.follow(unused.to_string(), 1);
        let doc = status(&shared);
        assert_eq!(doc["role"], "standby");
        let r = &doc["replication"];
        assert_eq!(r["role"], "standby");
        assert_eq!(r["primary"], unused.to_string());
        assert_eq!(r["link_up"], false);
        assert!(r["replication_state"].is_string());
        assert_eq!(r["primary_end_lsn"], 0);
        assert_eq!(r["base_backups"], 0);
        assert!(r.get("last_error").is_some());
        assert!(r.get("standbys").is_none());

        let text = crate::metrics::render_prometheus(&shared);
        for line in [
            "walship_replication_role{role=\"standby\"} 1",
            "walship_replication_role{role=\"primary\"} 0",
            "walship_standbys_connected 0",
            "walship_replication_link_up 0",
            "walship_replication_primary_end_lsn 0",
            "walship_base_backups_total 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?}");
        }
    }

    #[test]
    fn metrics_have_the_replication_families_with_escaped_labels() {
        let dir = tempfile::tempdir().unwrap();
        let shared = shared(dir.path());
        shared
            .replication
            .slots
            .acquire("quo\"ted\\name\nx", 5)
            .unwrap();
        let (code, ctype, text) = route(&shared, "/metrics");
        assert_eq!(code, 200);
        assert!(ctype.starts_with("text/plain; version=0.0.4"));
        let epoch = shared.store.epoch();
        for line in [
            "walship_replication_role{role=\"primary\"} 1".to_string(),
            "walship_replication_role{role=\"standby\"} 0".to_string(),
            format!("walship_epoch {epoch}"),
            "walship_standbys_connected 0".to_string(),
            "walship_slot_restart_lsn{slot=\"quo\\\"ted\\\\name\\nx\"} 5".to_string(),
            "walship_slot_invalidated{slot=\"quo\\\"ted\\\\name\\nx\"} 0".to_string(),
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        for family in [
            "walship_standby_sent_lsn",
            "walship_standby_write_lsn",
            "walship_standby_flush_lsn",
            "walship_standby_replay_lsn",
            "walship_standby_lag_bytes",
            "walship_standby_write_lag_seconds",
            "walship_standby_flush_lag_seconds",
            "walship_standby_replay_lag_seconds",
            "walship_standby_sync",
        ] {
            assert!(
                text.contains(&format!("# TYPE {family} gauge\n")),
                "missing family {family}"
            );
        }
        // Standby-only series are absent on a primary.
        assert!(!text.contains("walship_replication_link_up"));
        // Every sample line is `name{labels} value` or `name value`.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let value = l.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "bad sample {l:?}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(crate::metrics::escape_label("plain"), "plain");
        assert_eq!(
            crate::metrics::escape_label("a\"b\\c\nd"),
            "a\\\"b\\\\c\\nd"
        );
    }
}
