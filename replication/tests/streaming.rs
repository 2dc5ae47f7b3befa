//! Primary and standby engines over real loopback sockets, without the server:
//! a small acceptor plays the server's part of the handshake.

use bytes::{Bytes, BytesMut};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use walship_engine::{Engine, EngineConfig, Mutation};
use walship_replication::{
    EngineHandle, Hub, Receiver, ReceiverConfig, Slots, SyncStandbyNames, SyncWaitError,
    SynchronousCommit,
};

struct Node {
    _dir: tempfile::TempDir,
    handle: EngineHandle,
}

fn node(segment_size: u64) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = EngineConfig::new(dir.path());
    cfg.segment_size_bytes = segment_size;
    cfg.checkpoint_every_bytes = 0;
    let engine = Engine::open(cfg.clone()).unwrap();
    Node {
        handle: EngineHandle::new(engine, cfg),
        _dir: dir,
    }
}

/// Accepts connections, reads the `WALSHIP STREAM <port>` command as the server would, and hands over.
async fn serve_primary(hub: Arc<Hub>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let hub = hub.clone();
            tokio::spawn(async move {
                let mut buf = BytesMut::new();
                // *3\r\n$7\r\nWALSHIP\r\n$6\r\nSTREAM\r\n$N\r\nPORT\r\n: seven lines.
                loop {
                    if buf.iter().filter(|&&b| b == b'\n').count() >= 7 {
                        break;
                    }
                    if sock.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                        return;
                    }
                }
                let mut lines = 0;
                let mut cut = 0;
                for (i, b) in buf.iter().enumerate() {
                    if *b == b'\n' {
                        lines += 1;
                        if lines == 7 {
                            cut = i + 1;
                            break;
                        }
                    }
                }
                let rest = buf.split_off(cut);
                use tokio::io::AsyncWriteExt;
                sock.write_all(b"+STREAM\r\n").await.unwrap();
                let _ = hub.serve(sock, rest, None).await;
            });
        }
    });
    addr
}

fn start_receiver(
    standby: &Node,
    primary: std::net::SocketAddr,
    name: &str,
) -> (Arc<Receiver>, watch::Sender<bool>) {
    let rx = Receiver::new(
        standby.handle.clone(),
        ReceiverConfig {
            primary: primary.to_string(),
            name: name.into(),
            password: None,
            listening_port: 0,
            rewinds: Default::default(),
            primary_timeout_ms: std::sync::Arc::new(std::sync::atomic::AtomicU64::new(30_000)),
        },
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(rx.clone().run(stop_rx));
    (rx, stop_tx)
}

async fn put(engine: &Engine, k: &str, v: &str) -> u64 {
    let lsn = engine
        .write(Mutation::Put {
            key: Bytes::copy_from_slice(k.as_bytes()),
            value: Bytes::copy_from_slice(v.as_bytes()),
        })
        .unwrap();
    engine.wait_durable(lsn).await.unwrap();
    lsn
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn same_state(a: &Engine, b: &Engine) -> bool {
    a.len() == b.len()
        && a.scan(None, usize::MAX)
            .iter()
            .all(|k| a.get(k) == b.get(k))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_converges_and_synchronous_commit_waits_for_it() {
    let primary = node(64 << 10);
    let slots = Arc::new(Slots::open(primary._dir.path(), 0).unwrap());
    primary.handle.get().add_retention(slots.clone());
    let hub = Hub::new(
        primary.handle.clone(),
        slots,
        SyncStandbyNames::parse("FIRST 1 (s1)").unwrap(),
    );
    let addr = serve_primary(hub.clone()).await;
    let p = primary.handle.get();
    for i in 0..500 {
        put(&p, &format!("k{i}"), &format!("{i}").repeat(20)).await;
    }
    let standby = node(64 << 10);
    let (rx, stop) = start_receiver(&standby, addr, "s1");
    wait_until("the standby caught up", || {
        standby.handle.get().end_lsn() == p.end_lsn()
    })
    .await;
    assert!(same_state(&p, &standby.handle.get()));
    assert_eq!(
        standby.handle.get().cluster_id(),
        p.cluster_id(),
        "joined by base backup? no: same cluster via backup"
    );

    // A synchronous write completes once s1 flushed it.
    let lsn = put(&p, "sync", "1").await;
    hub.wait_confirmed(lsn, SynchronousCommit::On, 10_000)
        .await
        .unwrap();
    assert!(standby.handle.get().flushed_lsn() >= lsn);
    let views = hub.standby_views();
    assert_eq!(views.len(), 1);
    assert_eq!(views[0].sync_state, "sync");
    assert_eq!(views[0].state, "streaming");

    // With the standby gone a synchronous write does not complete...
    stop.send_replace(true);
    wait_until("the standby disconnected", || {
        hub.standby_views().is_empty()
    })
    .await;
    let lsn = put(&p, "while-down", "1").await;
    let err = hub
        .wait_confirmed(lsn, SynchronousCommit::On, 300)
        .await
        .unwrap_err();
    assert!(matches!(err, SyncWaitError::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("durable locally"));
    // ...and completes when it comes back.
    let waiter = {
        let hub = hub.clone();
        tokio::spawn(async move { hub.wait_confirmed(lsn, SynchronousCommit::On, 0).await })
    };
    let (_rx2, _stop2) = start_receiver(&standby, addr, "s1");
    tokio::time::timeout(Duration::from_secs(20), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        standby.handle.get().get(b"while-down").as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(
        rx.status().base_backups,
        1,
        "a blank standby starts with a base backup"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_wal_triggers_a_base_backup_and_another_cluster_is_refused() {
    let primary = node(16 << 10);
    let slots = Arc::new(Slots::open(primary._dir.path(), 0).unwrap());
    primary.handle.get().add_retention(slots.clone());
    let hub = Hub::new(
        primary.handle.clone(),
        slots.clone(),
        SyncStandbyNames::empty(),
    );
    let addr = serve_primary(hub.clone()).await;
    let p = primary.handle.get();
    for i in 0..200 {
        put(&p, &format!("a{i}"), "x").await;
    }
    let standby = node(16 << 10);
    let (rx, stop) = start_receiver(&standby, addr, "s1");
    wait_until("caught up", || {
        standby.handle.get().end_lsn() == p.end_lsn()
    })
    .await;
    stop.send_replace(true);
    wait_until("disconnected", || hub.standby_views().is_empty()).await;
    // While it is away, the slot is dropped and the WAL it needed removed.
    slots.drop_slot("s1").unwrap();
    for i in 0..2000 {
        put(&p, &format!("b{i}"), "y").await;
    }
    p.checkpoint().unwrap();
    assert!(p.stats().oldest_lsn > standby.handle.get().end_lsn());
    let backups_before = rx.status().base_backups;
    let (rx2, _stop2) = start_receiver(&standby, addr, "s1");
    wait_until("caught up again", || {
        standby.handle.get().end_lsn() == p.end_lsn()
    })
    .await;
    assert_eq!(rx2.status().base_backups, 1);
    assert_eq!(backups_before, 1);
    assert!(same_state(&p, &standby.handle.get()));

    // A standby of another cluster (it has data of its own) is refused.
    let stranger = node(16 << 10);
    put(&stranger.handle.get(), "mine", "1").await;
    let (rx3, _stop3) = start_receiver(&stranger, addr, "s9");
    wait_until("refused", || rx3.status().last_error.is_some()).await;
    let err = rx3.status().last_error.unwrap();
    assert!(err.contains("cluster"), "{err}");
    assert_eq!(
        stranger.handle.get().get(b"mine").as_deref(),
        Some(&b"1"[..]),
        "its data untouched"
    );
}
