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

use crate::state::Shared;

const MAX_REQUEST_BYTES: usize = 8 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Admin connections served at once; more wait in the accept queue.
const MAX_ADMIN_CONNECTIONS: usize = 64;

/// Serves admin requests until the server shuts down.
pub async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_ADMIN_CONNECTIONS));
    let mut shutdown = shared.shutdown_signal();
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = shutdown.changed() => return,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        match accepted {
            Ok((stream, _)) => {
                let shared = shared.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(REQUEST_TIMEOUT, handle(&shared, stream)).await;
                    drop(permit);
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn handle(shared: &Shared, mut stream: TcpStream) -> std::io::Result<()> {
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
        "role": "primary",
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
            "segments": s.wal_segments,
            "poisoned": s.poisoned,
        },
        "checkpoints": {
            "count": s.checkpoints,
            "duration_ms_total": s.checkpoint_ms_total,
            "last_lsn": s.last_checkpoint_lsn,
        },
        "replication": {
            "standbys": [],
        },
    })
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
