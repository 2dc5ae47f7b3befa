//! A real server on a free port, driven over TCP: pipelining, protocol
//! errors, limits and graceful shutdown.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::{FileConfig, FsyncSetting, ServerArgs, ServerConfig};
use crate::server::Server;
use crate::state::Shared;

struct Running {
    addr: SocketAddr,
    shared: std::sync::Arc<Shared>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

async fn start(extra: impl FnOnce(&mut ServerArgs)) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let mut args = ServerArgs {
        data_dir: Some(dir.path().join("data")),
        port: Some(0),
        fsync: Some(FsyncSetting::Always),
        ..ServerArgs::default()
    };
    extra(&mut args);
    let cfg = ServerConfig::merge(&args, &FileConfig::default()).unwrap();
    let server = Server::start(cfg).await.unwrap();
    let addr = server.local_addr().unwrap();
    let shared = server.shared().clone();
    let task = tokio::spawn(server.run());
    Running {
        addr,
        shared,
        task,
        _dir: dir,
    }
}

/// Reads exactly `n` bytes (or fails after a few seconds).
async fn read_n(s: &mut TcpStream, n: usize) -> String {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut buf))
        .await
        .expect("reply in time")
        .unwrap();
    String::from_utf8_lossy(&buf).into_owned()
}

/// Reads until the server closes the connection.
async fn read_to_close(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .expect("close in time")
        .ok();
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_get_their_replies_in_order() {
    let r = start(|_| {}).await;
    let mut s = TcpStream::connect(r.addr).await.unwrap();
    s.write_all(
        b"SET a 1\r\n*2\r\n$3\r\nGET\r\n$1\r\na\r\nPING\r\nINCR a\r\n\r\n*1\r\n$4\r\nPING\r\n",
    )
    .await
    .unwrap();
    let want = "+OK\r\n$1\r\n1\r\n+PONG\r\n:2\r\n+PONG\r\n";
    assert_eq!(read_n(&mut s, want.len()).await, want);
    // A request split across writes is reassembled.
    s.write_all(b"*2\r\n$3\r\nGE").await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    s.write_all(b"T\r\n$1\r\na\r\n").await.unwrap();
    assert_eq!(read_n(&mut s, 7).await, "$1\r\n2\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_pipelined_writes_are_all_acknowledged_and_durable() {
    let r = start(|_| {}).await;
    let mut s = TcpStream::connect(r.addr).await.unwrap();
    let mut req = Vec::new();
    for i in 0..2000 {
        req.extend_from_slice(format!("SET key:{i} value:{i}\r\n").as_bytes());
    }
    s.write_all(&req).await.unwrap();
    let got = read_n(&mut s, 5 * 2000).await;
    assert_eq!(got, "+OK\r\n".repeat(2000));
    assert!(
        r.shared.store.flushed_lsn() >= r.shared.store.end_lsn(),
        "acknowledged writes must be fsynced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_errors_are_answered_then_the_connection_closes() {
    let r = start(|_| {}).await;
    for (input, want) in [
        (
            &b"PING\r\n*1\r\n$x\r\n"[..],
            "+PONG\r\n-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*2147483648\r\n",
            "-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*1\r\n:1\r\n",
            "-ERR Protocol error: expected '$', got ':'\r\n",
        ),
        (
            b"SET a \"b\r\n",
            "-ERR Protocol error: unbalanced quotes in request\r\n",
        ),
    ] {
        let mut s = TcpStream::connect(r.addr).await.unwrap();
        s.write_all(input).await.unwrap();
        assert_eq!(read_to_close(&mut s).await, want);
    }
    let mut s = TcpStream::connect(r.addr).await.unwrap();
    s.write_all(&vec![b'x'; 70 * 1024]).await.unwrap();
    assert_eq!(
        read_to_close(&mut s).await,
        "-ERR Protocol error: too big inline request\r\n"
    );
    assert_eq!(
        r.shared.store.len(),
        0,
        "malformed input must not touch data"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quit_replies_ok_and_closes() {
    let r = start(|_| {}).await;
    let mut s = TcpStream::connect(r.addr).await.unwrap();
    s.write_all(b"PING\r\nQUIT\r\nPING\r\n").await.unwrap();
    assert_eq!(read_to_close(&mut s).await, "+PONG\r\n+OK\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_over_max_clients_are_refused() {
    let r = start(|a| a.max_clients = Some(1)).await;
    let mut first = TcpStream::connect(r.addr).await.unwrap();
    first.write_all(b"PING\r\n").await.unwrap();
    assert_eq!(read_n(&mut first, 7).await, "+PONG\r\n");
    let mut second = TcpStream::connect(r.addr).await.unwrap();
    assert_eq!(
        read_to_close(&mut second).await,
        "-ERR max number of clients reached\r\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_over_the_output_limit_closes_the_client() {
    let r = start(|a| a.client_output_buffer_limit = Some(crate::config::ByteSize(1 << 20))).await;
    let mut s = TcpStream::connect(r.addr).await.unwrap();
    let big = "x".repeat(600 * 1024);
    let set = format!("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n${}\r\n{big}\r\n", big.len());
    s.write_all(set.as_bytes()).await.unwrap();
    assert_eq!(read_n(&mut s, 5).await, "+OK\r\n");
    s.write_all(b"MGET k k\r\n").await.unwrap();
    assert_eq!(read_to_close(&mut s).await, "");
    assert_eq!(r.shared.store.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_clients_cannot_send_big_requests() {
    let r = start(|a| a.requirepass = Some("pw".into())).await;
    let mut s = TcpStream::connect(r.addr).await.unwrap();
    s.write_all(b"GET k\r\n").await.unwrap();
    assert_eq!(
        read_n(&mut s, 34).await,
        "-NOAUTH Authentication required.\r\n"
    );
    s.write_all(b"*100\r\n").await.unwrap();
    assert_eq!(
        read_to_close(&mut s).await,
        "-ERR Protocol error: unauthenticated multibulk length\r\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_and_leaves_everything_durable() {
    let r = start(|_| {}).await;
    let mut s = TcpStream::connect(r.addr).await.unwrap();
    s.write_all(b"SET a 1\r\nSET b 2\r\n").await.unwrap();
    assert_eq!(read_n(&mut s, 10).await, "+OK\r\n+OK\r\n");
    let end = r.shared.store.end_lsn();
    r.shared.trigger_shutdown();
    r.task.await.unwrap().unwrap();
    assert_eq!(
        read_to_close(&mut s).await,
        "",
        "idle clients are closed on shutdown"
    );
    assert!(
        TcpStream::connect(r.addr).await.is_err(),
        "the listener is closed"
    );
    assert!(r.shared.store.flushed_lsn() >= end);
}

/// Serves one accepted connection on `shared`, without the full server.
async fn serve_one(shared: std::sync::Arc<Shared>) -> TcpStream {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = TcpStream::connect(addr).await.unwrap();
    let (stream, peer) = listener.accept().await.unwrap();
    shared
        .clients
        .connected
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let info = shared.clients.register(peer, addr);
    let signal = shared.shutdown_signal();
    tokio::spawn(crate::connection::serve(shared, stream, info, signal));
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_cannot_be_made_durable_is_never_acknowledged() {
    use walship_engine::{Engine, EngineConfig, SimFaults, SimStorage};
    let sim = std::sync::Arc::new(SimStorage::new());
    let mut ecfg = EngineConfig::new("/sim/data");
    ecfg.storage = sim.clone();
    let engine = tokio::task::spawn_blocking(move || Engine::open(ecfg))
        .await
        .unwrap()
        .unwrap();
    let args = ServerArgs {
        data_dir: Some("/sim/data".into()),
        ..ServerArgs::default()
    };
    let cfg = ServerConfig::merge(&args, &FileConfig::default()).unwrap();
    let shared = std::sync::Arc::new(Shared::new(crate::store::Store::from_engine(engine), cfg));
    let mut s = serve_one(shared.clone()).await;

    s.write_all(b"SET a 1\r\n").await.unwrap();
    assert_eq!(read_n(&mut s, 5).await, "+OK\r\n");

    sim.set_faults(SimFaults {
        fail_fsyncs: 1,
        ..SimFaults::default()
    });
    // A read before the failing write keeps its reply; the write and
    // everything after it in the batch get the error instead of OK.
    s.write_all(b"GET a\r\nSET b 2\r\nGET a\r\n").await.unwrap();
    assert_eq!(read_n(&mut s, 7).await, "$1\r\n1\r\n");
    let mut rest = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut rest))
        .await
        .unwrap()
        .unwrap();
    let rest = String::from_utf8_lossy(&rest[..n]).into_owned();
    assert!(
        rest.starts_with("-ERR "),
        "the write must not be acknowledged: {rest:?}"
    );
    assert!(!rest.contains("+OK"), "{rest:?}");
    assert_eq!(
        shared
            .metrics
            .durability_failures
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // Later writes are refused too (the WAL is poisoned), with a clear error.
    s.write_all(b"SET c 3\r\n").await.unwrap();
    let reply = read_some(&mut s).await;
    assert!(
        reply.starts_with("-ERR writes refused: the WAL is poisoned"),
        "a refused write keeps its own error: {reply:?}"
    );
    // The refused write is in the table but not on disk (a restart would
    // take it back): no reader may see it, on this connection or another.
    let mut other = serve_one(shared.clone()).await;
    for s in [&mut s, &mut other] {
        s.write_all(b"GET b\r\n").await.unwrap();
        let reply = read_some(s).await;
        assert!(
            reply.starts_with("-ERR this read may have seen writes that are not durable")
                && reply.contains("poisoned"),
            "{reply:?}"
        );
    }
}

/// Reads what one `read` returns, within 10 s.
async fn read_some(s: &mut TcpStream) -> String {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}
