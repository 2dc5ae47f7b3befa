//! Hostile and malformed input over raw TCP. After each case the server must
//! still answer PING on a new connection, keys written before must be intact,
//! memory must stay bounded, and where Redis replies `-ERR Protocol error`
//! the same reply must come back before the connection is closed.

use std::io::Write;
use std::net::TcpStream;
use std::thread;

use rand::RngCore;
use walship_tests::resp::{RawConn, Reply, IO_TIMEOUT};
use walship_tests::TestServer;

/// Resident memory the server may reach in these tests. Generous for a small
/// key-value store holding a handful of keys; far below what trusting a
/// hostile length (gigabytes) would take.
const RSS_BYTES_MAX: u64 = 200 * 1024 * 1024;

const KEYS: usize = 50;

/// A server with [`KEYS`] known keys written.
fn server_with_data() -> TestServer {
    let server = TestServer::start().expect("start walship");
    let mut raw = server.raw();
    for i in 0..KEYS {
        assert_eq!(
            raw.command(&["SET", &format!("key:{i}"), &format!("value:{i}")]),
            Reply::Simple("OK".into())
        );
    }
    server
}

/// The server answers PING on a new connection, every known key still holds
/// its value, and RSS is bounded.
fn assert_healthy(server: &TestServer, after: &str) {
    let mut raw = RawConn::connect(server.port())
        .unwrap_or_else(|e| panic!("after {after}: cannot connect: {e}\n{}", server.log_tail()));
    assert_eq!(
        raw.command(&["PING"]),
        Reply::Simple("PONG".into()),
        "after {after}"
    );
    for i in 0..KEYS {
        assert_eq!(
            raw.command(&["GET", &format!("key:{i}")]),
            Reply::Bulk(Some(format!("value:{i}").into_bytes())),
            "after {after}: key:{i}"
        );
    }
    assert_eq!(
        raw.command(&["DBSIZE"]),
        Reply::Integer(KEYS as i64),
        "after {after}"
    );
    let rss = server.rss_bytes();
    assert!(
        rss < RSS_BYTES_MAX,
        "after {after}: server RSS is {} MiB (bound {} MiB)",
        rss >> 20,
        RSS_BYTES_MAX >> 20
    );
}

/// Sends `bytes`, expects exactly the error `expected`, then the close.
fn assert_protocol_error(server: &TestServer, bytes: &[u8], expected: &str) {
    let mut raw = server.raw();
    raw.send(bytes).unwrap();
    let reply = raw
        .read_reply()
        .unwrap_or_else(|e| panic!("no reply to {:?}: {e}", preview(bytes)));
    assert_eq!(
        reply,
        Reply::Error(expected.into()),
        "reply to {:?}",
        preview(bytes)
    );
    let rest = raw
        .read_until_closed()
        .unwrap_or_else(|e| panic!("connection not closed after protocol error: {e}"));
    assert!(
        rest.is_empty(),
        "bytes after the protocol error: {:?}",
        String::from_utf8_lossy(&rest)
    );
}

fn preview(bytes: &[u8]) -> String {
    let shown = &bytes[..bytes.len().min(60)];
    format!(
        "{}{}",
        String::from_utf8_lossy(shown),
        if bytes.len() > 60 { "..." } else { "" }
    )
}

#[test]
fn oversized_bulk_length_is_refused_and_data_intact() {
    let server = server_with_data();
    assert_protocol_error(
        &server,
        b"*1\r\n$99999999999\r\n",
        "ERR Protocol error: invalid bulk length",
    );
    assert_protocol_error(
        &server,
        b"*3\r\n$3\r\nSET\r\n$5\r\nkey:1\r\n$99999999999\r\n",
        "ERR Protocol error: invalid bulk length",
    );
    assert_healthy(&server, "$99999999999");
}

#[test]
fn oversized_array_length_is_refused_and_data_intact() {
    let server = server_with_data();
    assert_protocol_error(
        &server,
        b"*2147483648\r\n",
        "ERR Protocol error: invalid multibulk length",
    );
    assert_protocol_error(
        &server,
        b"*99999999999999999999999\r\n",
        "ERR Protocol error: invalid multibulk length",
    );
    assert_healthy(&server, "*2147483648");
}

#[test]
fn negative_bulk_length_is_refused() {
    let server = server_with_data();
    assert_protocol_error(
        &server,
        b"*2\r\n$3\r\nGET\r\n$-5\r\n",
        "ERR Protocol error: invalid bulk length",
    );
    // Redis refuses the null bulk `$-1` as a command argument as well.
    assert_protocol_error(
        &server,
        b"*2\r\n$3\r\nGET\r\n$-1\r\n",
        "ERR Protocol error: invalid bulk length",
    );
    assert_healthy(&server, "$-5");
}

#[test]
fn non_bulk_element_in_array_is_a_protocol_error() {
    let server = server_with_data();
    assert_protocol_error(
        &server,
        b"*1\r\n:5\r\n",
        "ERR Protocol error: expected '$', got ':'",
    );
    assert_protocol_error(
        &server,
        b"*1\r\n$abc\r\n",
        "ERR Protocol error: invalid bulk length",
    );
    assert_protocol_error(
        &server,
        b"*x\r\n",
        "ERR Protocol error: invalid multibulk length",
    );
    assert_healthy(&server, "malformed array elements");
}

#[test]
fn bulk_length_that_disagrees_with_the_data_runs_nothing() {
    let server = server_with_data();
    // Redis would SET new:key to "abc" and then run "f" as a command.
    assert_protocol_error(
        &server,
        b"*3\r\n$3\r\nSET\r\n$7\r\nnew:key\r\n$3\r\nabcdef\r\n",
        "ERR Protocol error: bulk string not followed by CRLF (its length does not match its data)",
    );
    // A request before it in the same packet runs; the bad one does not.
    let mut raw = server.raw();
    raw.send(b"*1\r\n$4\r\nPING\r\n*3\r\n$3\r\nSET\r\n$7\r\nnew:key\r\n$2\r\nabc\r\n")
        .unwrap();
    assert_eq!(raw.read_reply().unwrap(), Reply::Simple("PONG".into()));
    assert_eq!(
        raw.read_reply().unwrap(),
        Reply::Error(
            "ERR Protocol error: bulk string not followed by CRLF (its length does not match its data)"
                .into()
        )
    );
    assert!(raw.read_until_closed().unwrap().is_empty());
    assert_healthy(&server, "bulk lengths that disagree with their data");
}

#[test]
fn empty_and_negative_arrays_are_ignored_like_redis() {
    let server = server_with_data();
    let mut raw = server.raw();
    // Redis skips `*0`, `*-1` and any `*-N` header without a reply and goes on
    // reading commands on the same connection.
    raw.send(b"*-1\r\n*0\r\n*-3\r\n*1\r\n$4\r\nPING\r\n")
        .unwrap();
    assert_eq!(raw.read_reply().unwrap(), Reply::Simple("PONG".into()));
    assert_eq!(
        raw.command(&["GET", "key:7"]),
        Reply::Bulk(Some(b"value:7".to_vec()))
    );
    assert_healthy(&server, "*-1 / *-3");
}

#[test]
fn truncated_frames_followed_by_close_change_nothing() {
    let server = server_with_data();
    let frames: [&[u8]; 7] = [
        b"*3\r\n$3\r\nSET\r\n$5\r\nkey:1\r\n$9\r\nclobb",
        b"*3\r\n$3\r\nSET\r\n$5\r\nkey:2\r\n$9\r\n",
        b"*3\r\n$3\r\nSET\r\n$5\r\nkey:3\r\n",
        b"*3\r\n$3\r\nSET\r\n$5\r\nke",
        b"*3\r\n$3\r\nDEL",
        b"*3\r",
        b"FLUSHALL",
    ];
    for frame in frames {
        let mut stream = TcpStream::connect(("127.0.0.1", server.port())).unwrap();
        stream.write_all(frame).unwrap();
        drop(stream);
    }
    // Same again, but with a half-close so the server surely sees EOF while
    // the frame is incomplete, and must close its side without replying.
    for frame in frames {
        let mut raw = server.raw();
        raw.send(frame).unwrap();
        raw.shutdown_write().unwrap();
        let rest = raw.read_until_closed().expect("server closes after EOF");
        assert!(
            rest.is_empty(),
            "reply to a truncated frame {:?}: {:?}",
            preview(frame),
            rest
        );
    }
    assert_healthy(&server, "truncated frames");
}

#[test]
fn random_garbage_does_not_hurt_the_server() {
    let mut rng = walship_tests::seed::rng("random_garbage_does_not_hurt_the_server");
    let server = server_with_data();
    for round in 0..4 {
        let mut garbage = vec![0u8; 1024 * 1024];
        rng.fill_bytes(&mut garbage);
        if round % 2 == 1 {
            // Garbage that looks like RESP gets further into the parser.
            for chunk in garbage.chunks_mut(97) {
                chunk[0] = b"*$:+-"[chunk[1] as usize % 5];
            }
        }
        send_draining(&server, &garbage);
        assert_healthy(&server, &format!("1 MiB of garbage (round {round})"));
    }
}

#[test]
fn long_inline_line_without_newline_is_refused() {
    let server = server_with_data();
    let mut line = b"SET key:1 ".to_vec();
    line.resize(200 * 1024, b'a');
    let mut raw = server.raw();
    // The server may close as soon as it passes its inline limit, before we
    // finish writing: a failed write is fine, the reply is what counts.
    let _ = raw.send(&line);
    assert_eq!(
        raw.read_reply()
            .expect("a reply to an over-long inline request"),
        Reply::Error("ERR Protocol error: too big inline request".into())
    );
    raw.read_until_closed()
        .expect("connection closed after the protocol error");
    assert_healthy(&server, "200 KiB inline line");
}

#[test]
fn large_declared_bulk_does_not_preallocate_memory() {
    let server = server_with_data();
    // Lengths a server may accept (Redis allows up to 512 MB): it must not
    // reserve them before the bytes arrive. Several connections at once.
    let mut conns = Vec::new();
    for i in 0..8 {
        let mut raw = server.raw();
        raw.send(format!("*3\r\n$3\r\nSET\r\n$6\r\nbig:{i:02}\r\n$400000000\r\nabc").as_bytes())
            .unwrap();
        conns.push(raw);
    }
    let mut array_conns = Vec::new();
    for _ in 0..8 {
        let mut raw = server.raw();
        raw.send(b"*1000000\r\n$3\r\nSET\r\n").unwrap();
        array_conns.push(raw);
    }
    // PING on a fresh connection is processed after the headers above were
    // read, so the RSS check below sees their effect.
    assert_healthy(&server, "8 x $400000000 and 8 x *1000000 headers");
    drop(conns);
    drop(array_conns);
    assert_healthy(&server, "closing the half-sent frames");
}

#[test]
fn many_small_protocol_errors_do_not_leak() {
    let server = server_with_data();
    for i in 0..300 {
        let bytes: &[u8] = match i % 3 {
            0 => b"*1\r\n$-5\r\n",
            1 => b"*2147483648\r\n",
            _ => b"*1\r\n$99999999999\r\n",
        };
        let mut raw = server.raw();
        raw.send(bytes).unwrap();
        assert!(raw.read_reply().unwrap().is_error());
        raw.read_until_closed().unwrap();
    }
    assert_healthy(&server, "300 protocol errors");
    // Closed connections must be forgotten. The server learns of a close
    // asynchronously, so poll (the deadline only guards against a hang).
    let mut raw = server.raw();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let clients = raw.command(&["INFO", "clients"]).text();
        let connected: u64 = clients
            .lines()
            .find_map(|l| l.strip_prefix("connected_clients:"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no connected_clients in INFO clients:\n{clients}"));
        if connected == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "closed connections still counted: connected_clients:{connected}"
        );
        thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Writes `bytes` on one connection while a second thread drains whatever
/// the server replies, so neither side blocks on a full socket buffer. The
/// server may close the connection at any point: a failed write ends early.
fn send_draining(server: &TestServer, bytes: &[u8]) {
    let mut stream = TcpStream::connect(("127.0.0.1", server.port())).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut reader = stream.try_clone().unwrap();
    let drain = thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut reader, &mut sink);
    });
    for chunk in bytes.chunks(16 * 1024) {
        if stream.write_all(chunk).is_err() {
            break;
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Write);
    drain.join().expect("drain thread");
}
