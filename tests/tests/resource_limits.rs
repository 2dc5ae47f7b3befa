//! Limits that protect the server from its clients: a connection cap with
//! Redis's refusal, and bounded memory for a client that floods the server
//! with requests for big replies and never reads them.

use std::io::Write;
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use walship_tests::resp::{encode, RawConn, Reply};
use walship_tests::{ServerOptions, TestServer};

fn connected_clients(raw: &mut RawConn) -> u64 {
    let info = raw.command(&["INFO", "clients"]).text();
    info.lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no connected_clients in INFO clients:\n{info}"))
}

#[test]
fn connections_over_max_clients_are_refused_like_redis() {
    const MAX_CLIENTS: usize = 8;
    let server = TestServer::start_with(ServerOptions {
        extra_args: vec!["--max-clients".into(), MAX_CLIENTS.to_string()],
        ..ServerOptions::default()
    })
    .expect("start walship with --max-clients");
    // The harness's readiness probe closed its connection just now, and the
    // server learns of that asynchronously: wait (bounded) until ours is the
    // only client counted, so exactly MAX_CLIENTS - 1 more fit.
    let mut first = server.raw();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while connected_clients(&mut first) != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "stale connections never went away"
        );
        thread::sleep(Duration::from_millis(20));
    }
    let mut held: Vec<RawConn> = vec![first];
    for i in 1..MAX_CLIENTS {
        let mut raw = server.raw();
        assert_eq!(
            raw.command(&["PING"]),
            Reply::Simple("PONG".into()),
            "client {i}"
        );
        held.push(raw);
    }
    let mut extra = server.raw();
    assert_eq!(
        extra
            .read_reply()
            .expect("the refusal is sent without a request"),
        Reply::Error("ERR max number of clients reached".into())
    );
    extra
        .read_until_closed()
        .expect("refused connection is closed");
    // The admitted clients carry on, and a freed slot can be reused.
    assert_eq!(
        held[0].command(&["SET", "k", "v"]),
        Reply::Simple("OK".into())
    );
    drop(held.pop());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut raw = server.raw();
        // The server learns of the close asynchronously: retry until the
        // slot is free (the deadline guards against it never freeing).
        match raw.command(&["GET", "k"]) {
            Reply::Bulk(Some(v)) => {
                assert_eq!(v, b"v");
                break;
            }
            Reply::Error(e) if e == "ERR max number of clients reached" => {
                assert!(std::time::Instant::now() < deadline, "slot never freed");
                thread::sleep(Duration::from_millis(50));
            }
            other => panic!("unexpected reply {other:?}"),
        }
    }
}

#[test]
fn unread_big_replies_do_not_grow_server_memory_without_bound() {
    const VALUE_BYTES: usize = 1024 * 1024;
    const GETS_PER_CLIENT: usize = 400;
    const CLIENTS: usize = 4;
    const RSS_BYTES_MAX: u64 = 300 * 1024 * 1024;
    let server = TestServer::start().expect("start walship");
    let value = vec![b'v'; VALUE_BYTES];
    let _: () = redis::cmd("SET")
        .arg("big")
        .arg(&value)
        .query(&mut server.connection())
        .unwrap();

    // Each client asks for 400 MiB of replies and reads none of them.
    let mut flooders = Vec::new();
    for _ in 0..CLIENTS {
        let mut stream = TcpStream::connect(("127.0.0.1", server.port())).unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut requests = Vec::new();
        for _ in 0..GETS_PER_CLIENT {
            requests.extend(encode(&["GET", "big"]));
        }
        // The server may stop reading (backpressure) or disconnect us
        // (output limit); either way the write may not finish.
        let _ = stream.write_all(&requests);
        flooders.push(stream);
    }
    // Watch the server while it holds the flood: memory must stay bounded
    // at every sample. (The samples are spread out so the server gets to
    // process what it will; nothing asserts on time.)
    let mut rss_max = 0;
    for _ in 0..40 {
        let mut raw = server.raw();
        assert_eq!(raw.command(&["PING"]), Reply::Simple("PONG".into()));
        rss_max = rss_max.max(server.rss_bytes());
        thread::sleep(Duration::from_millis(50));
    }
    assert!(
        rss_max < RSS_BYTES_MAX,
        "server RSS reached {} MiB with {CLIENTS} clients not reading {} MiB of replies each",
        rss_max >> 20,
        (GETS_PER_CLIENT * VALUE_BYTES) >> 20
    );
    drop(flooders);
    let got: Vec<u8> = redis::cmd("GET")
        .arg("big")
        .query(&mut server.connection())
        .unwrap();
    assert!(got == value);
}

fn info_field(raw: &mut RawConn, section: &str, field: &str) -> u64 {
    let info = raw.command(&["INFO", section]).text();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in INFO {section}:\n{info}"))
}

/// A client that keeps sending requests and never reads the replies is
/// closed at `client-output-buffer-limit`, as Redis closes it, instead of
/// having its requests buffered up to the query buffer limit (1 GiB).
#[test]
fn a_client_that_never_reads_is_closed_at_the_output_limit() {
    const LIMIT_BYTES: usize = 1024 * 1024;
    let server = TestServer::start_with(ServerOptions {
        extra_args: vec![
            "--client-output-buffer-limit".into(),
            LIMIT_BYTES.to_string(),
        ],
        ..ServerOptions::default()
    })
    .expect("start walship");
    let _: () = redis::cmd("SET")
        .arg("big")
        .arg(vec![b'v'; 256 * 1024])
        .query(&mut server.connection())
        .unwrap();
    let mut stream = TcpStream::connect(("127.0.0.1", server.port())).unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let chunk: Vec<u8> = (0..4096).flat_map(|_| encode(&["GET", "big"])).collect();
    // Up to 256 MiB of requests: far past the limit, far below the query
    // buffer limit. The server must close the connection before the end.
    let sent_all = (0..(256 << 20) / chunk.len()).all(|_| stream.write_all(&chunk).is_ok());
    assert!(
        !sent_all,
        "the server took 256 MiB of requests from a client reading none of its replies"
    );
    let mut raw = server.raw();
    assert!(info_field(&mut raw, "stats", "client_limit_disconnects") >= 1);
}

/// A client whose write waits for a synchronous standby that is not there,
/// and which then hangs up, frees its connection at once (as Redis frees a
/// blocked client), so such clients cannot use up max-clients; while they
/// wait, INFO counts them as blocked.
#[test]
fn clients_that_hang_up_while_waiting_for_standbys_free_their_slots() {
    const MAX_CLIENTS: usize = 8;
    let server = TestServer::start_with(ServerOptions {
        extra_args: vec![
            "--max-clients".into(),
            MAX_CLIENTS.to_string(),
            "--synchronous-standby-names".into(),
            "FIRST 1 (absent)".into(),
        ],
        ..ServerOptions::default()
    })
    .expect("start walship");
    let mut watcher = server.raw();
    for round in 0..3 * MAX_CLIENTS {
        let mut stream = TcpStream::connect(("127.0.0.1", server.port())).unwrap();
        stream
            .write_all(&encode(&["SET", &format!("k{round}"), "v"]))
            .unwrap();
        // Hang up once the write waits (bounded retry: the server counts
        // it when it starts waiting).
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while info_field(&mut watcher, "clients", "blocked_clients") == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the write never waited"
            );
            thread::sleep(Duration::from_millis(10));
        }
        drop(stream);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while info_field(&mut watcher, "clients", "blocked_clients") != 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: the connection of a client that hung up still waits"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
    assert_eq!(connected_clients(&mut watcher), 1);
    // Reads still get in.
    let mut raw = server.raw();
    assert_eq!(
        raw.command(&["GET", "k0"]),
        Reply::Bulk(Some(b"v".to_vec()))
    );
}
