//! Connection and server commands: PING, ECHO, HELLO (RESP2 and RESP3),
//! SELECT, QUIT, CLIENT, COMMAND, CONFIG, TIME, INFO, SAVE/BGSAVE, and the
//! unknown-command error.

use std::time::{SystemTime, UNIX_EPOCH};

use redis::Value;
use walship_tests::resp::Reply;
use walship_tests::TestServer;

fn server() -> TestServer {
    TestServer::start().expect("start walship")
}

fn ok() -> Reply {
    Reply::Simple("OK".into())
}

fn bulk(s: &str) -> Reply {
    Reply::Bulk(Some(s.as_bytes().to_vec()))
}

#[test]
fn ping_replies_pong_or_echoes_its_argument() {
    let server = server();
    let mut raw = server.raw();
    assert_eq!(raw.command(&["PING"]), Reply::Simple("PONG".into()));
    assert_eq!(raw.command(&["ping", "hello world"]), bulk("hello world"));
    assert_eq!(
        raw.command(&["PING", "a", "b"]),
        Reply::Error("ERR wrong number of arguments for 'ping' command".into())
    );
    let mut con = server.connection();
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn echo_returns_its_argument_as_bulk() {
    let server = server();
    let mut raw = server.raw();
    assert_eq!(raw.command(&["ECHO", "hi there"]), bulk("hi there"));
    assert_eq!(
        raw.command(&[&b"ECHO"[..], &b"\x00\xff\r\n"[..]]),
        Reply::Bulk(Some(b"\x00\xff\r\n".to_vec()))
    );
}

#[test]
fn unknown_command_error_is_worded_as_redis_7() {
    let server = server();
    let mut raw = server.raw();
    assert_eq!(
        raw.command(&["NOSUCHCMD", "a", "b"]),
        Reply::Error("ERR unknown command 'NOSUCHCMD', with args beginning with: 'a' 'b' ".into())
    );
    assert_eq!(
        raw.command(&["foo"]),
        Reply::Error("ERR unknown command 'foo', with args beginning with: ".into())
    );
    // The connection stays usable.
    assert_eq!(raw.command(&["PING"]), Reply::Simple("PONG".into()));
}

#[test]
fn commands_are_case_insensitive() {
    let server = server();
    let mut raw = server.raw();
    assert_eq!(raw.command(&["sEt", "k", "v"]), ok());
    assert_eq!(raw.command(&["get", "k"]), bulk("v"));
    assert_eq!(raw.command(&["Set", "k", "w", "nx"]), Reply::Bulk(None));
}

#[test]
fn hello_3_switches_to_resp3_and_replies_with_a_map() {
    let server = server();
    let mut raw = server.raw();
    let hello = raw.command(&["HELLO", "3"]);
    assert!(
        matches!(hello, Reply::Map(_)),
        "HELLO 3 must reply with a RESP3 map, got {hello:?}"
    );
    assert_eq!(
        hello.map_get("proto"),
        Some(&Reply::Integer(3)),
        "{hello:?}"
    );
    assert!(
        hello.map_get("server").is_some(),
        "HELLO map needs 'server': {hello:?}"
    );
    assert!(
        hello.map_get("version").is_some(),
        "HELLO map needs 'version': {hello:?}"
    );
    assert!(
        matches!(hello.map_get("id"), Some(Reply::Integer(_))),
        "{hello:?}"
    );
    assert_eq!(
        hello.map_get("role").map(Reply::text).as_deref(),
        Some("master"),
        "{hello:?}"
    );
    // In RESP3 a missing key is the null type `_`, not `$-1`.
    assert_eq!(raw.command(&["GET", "missing"]), Reply::Null);
    assert_eq!(raw.command(&["SET", "k", "v"]), ok());
    assert_eq!(raw.command(&["GET", "k"]), bulk("v"));
    assert_eq!(
        raw.command(&["MGET", "k", "missing"]),
        Reply::Array(Some(vec![bulk("v"), Reply::Null]))
    );
    assert_eq!(raw.command(&["INCR", "n"]), Reply::Integer(1));
    // Back to RESP2: HELLO 2 replies with a flat array.
    let hello2 = raw.command(&["HELLO", "2"]);
    let items = hello2.items();
    assert_eq!(items.len() % 2, 0, "{hello2:?}");
    assert_eq!(raw.command(&["GET", "missing"]), Reply::Bulk(None));
}

#[test]
fn hello_without_version_and_with_bad_version() {
    let server = server();
    let mut raw = server.raw();
    // Without a version HELLO reports the current protocol (2).
    let hello = raw.command(&["HELLO"]);
    let items = hello.items();
    let proto = items
        .chunks(2)
        .find(|pair| pair[0].text() == "proto")
        .map(|pair| pair[1].clone());
    assert_eq!(proto, Some(Reply::Integer(2)), "{hello:?}");
    assert_eq!(
        raw.command(&["HELLO", "4"]),
        Reply::Error("NOPROTO unsupported protocol version".into())
    );
    assert_eq!(raw.command(&["GET", "missing"]), Reply::Bulk(None));
}

#[test]
fn redis_crate_works_over_resp3() {
    let server = server();
    let client = redis::Client::open(format!(
        "redis://127.0.0.1:{}/?protocol=resp3",
        server.port()
    ))
    .unwrap();
    let timeout = std::time::Duration::from_secs(20);
    let mut con = walship_tests::process::within(timeout, move || {
        client.get_connection_with_timeout(timeout)
    })
    .expect("RESP3 handshake (HELLO 3) hung")
    .expect("RESP3 connection (the crate sends HELLO 3)");
    con.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    con.set_write_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut con).unwrap();
    let v: Value = redis::cmd("GET").arg("k").query(&mut con).unwrap();
    assert_eq!(v, Value::BulkString(b"v".to_vec()));
    let missing: Value = redis::cmd("GET").arg("nope").query(&mut con).unwrap();
    assert_eq!(missing, Value::Nil);
}

#[test]
fn select_0_is_accepted_and_other_databases_are_refused() {
    let server = server();
    let mut raw = server.raw();
    assert_eq!(raw.command(&["SELECT", "0"]), ok());
    assert_eq!(
        raw.command(&["SELECT", "1"]),
        Reply::Error("ERR DB index is out of range".into())
    );
    assert_eq!(
        raw.command(&["SELECT", "x"]),
        Reply::Error("ERR value is not an integer or out of range".into())
    );
    assert_eq!(raw.command(&["PING"]), Reply::Simple("PONG".into()));
}

#[test]
fn quit_replies_ok_and_closes_the_connection() {
    let server = server();
    let mut raw = server.raw();
    raw.command(&["SET", "k", "v"]);
    assert_eq!(raw.command(&["QUIT"]), ok());
    let rest = raw
        .read_until_closed()
        .expect("connection closes after QUIT");
    assert!(rest.is_empty(), "bytes after QUIT's +OK: {rest:?}");
    let mut again = server.raw();
    assert_eq!(again.command(&["GET", "k"]), bulk("v"));
}

#[test]
fn client_setname_getname_id_list_setinfo() {
    let server = server();
    let mut raw = server.raw();
    let id = match raw.command(&["CLIENT", "ID"]) {
        Reply::Integer(id) => id,
        other => panic!("CLIENT ID must be an integer, got {other:?}"),
    };
    let mut other = server.raw();
    let other_id = match other.command(&["client", "id"]) {
        Reply::Integer(id) => id,
        reply => panic!("CLIENT ID must be an integer, got {reply:?}"),
    };
    assert_ne!(id, other_id, "two connections share a client id");

    assert_eq!(raw.command(&["CLIENT", "GETNAME"]), Reply::Bulk(None));
    assert_eq!(raw.command(&["CLIENT", "SETNAME", "worker-1"]), ok());
    assert_eq!(raw.command(&["CLIENT", "GETNAME"]), bulk("worker-1"));
    assert_eq!(
        raw.command(&["CLIENT", "SETNAME", "has space"]),
        Reply::Error(
            "ERR Client names cannot contain spaces, newlines or special characters.".into()
        )
    );
    assert_eq!(raw.command(&["CLIENT", "GETNAME"]), bulk("worker-1"));

    assert_eq!(
        raw.command(&["CLIENT", "SETINFO", "lib-name", "walship-tests"]),
        ok()
    );
    assert_eq!(raw.command(&["CLIENT", "SETINFO", "lib-ver", "1.0"]), ok());

    let list = raw.command(&["CLIENT", "LIST"]).text();
    let lines: Vec<&str> = list.lines().collect();
    assert!(
        lines.len() >= 2,
        "CLIENT LIST shows both connections: {list:?}"
    );
    let mine = lines
        .iter()
        .find(|line| line.split(' ').any(|field| field == format!("id={id}")))
        .unwrap_or_else(|| panic!("CLIENT LIST has no line with id={id}: {list:?}"));
    assert!(mine.split(' ').any(|f| f == "name=worker-1"), "{mine}");
    assert!(
        mine.split(' ').any(|f| f.starts_with("addr=127.0.0.1:")),
        "{mine}"
    );
    assert!(
        lines
            .iter()
            .any(|line| line.split(' ').any(|f| f == format!("id={other_id}"))),
        "{list:?}"
    );
}

#[test]
fn command_lists_the_supported_commands() {
    let server = server();
    let mut raw = server.raw();
    let reply = raw.command(&["COMMAND"]);
    let names: Vec<String> = reply
        .items()
        .iter()
        .map(|entry| entry.items()[0].text().to_ascii_lowercase())
        .collect();
    for expected in [
        "ping", "echo", "hello", "auth", "select", "quit", "client", "command", "config", "get",
        "set", "getdel", "del", "exists", "mget", "mset", "incr", "incrby", "decr", "decrby",
        "append", "strlen", "dbsize", "scan", "keys", "flushall", "time", "save", "bgsave", "info",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "COMMAND lacks {expected}: {names:?}"
        );
    }
    // Each entry is [name, arity, flags, first key, last key, step, ...].
    for entry in reply.items() {
        let fields = entry.items();
        assert!(fields.len() >= 6, "short COMMAND entry {entry:?}");
        assert!(matches!(fields[1], Reply::Integer(_)), "arity of {entry:?}");
    }
}

#[test]
fn config_get_returns_name_value_pairs() {
    let server = server();
    let mut raw = server.raw();
    let all = raw.command(&["CONFIG", "GET", "*"]);
    let items = all.items();
    assert!(!items.is_empty(), "CONFIG GET * is empty");
    assert_eq!(
        items.len() % 2,
        0,
        "CONFIG GET must reply name/value pairs: {all:?}"
    );
    // An unknown parameter matches nothing: an empty array, not an error.
    assert_eq!(
        raw.command(&["CONFIG", "GET", "no-such-parameter"]),
        Reply::Array(Some(vec![]))
    );
    match raw.command(&["CONFIG", "SET", "no-such-parameter", "1"]) {
        Reply::Error(text) => assert!(text.starts_with("ERR "), "{text}"),
        other => panic!("CONFIG SET of an unknown parameter must fail, got {other:?}"),
    }
    // A parameter that CONFIG GET reports can be read back by its own name.
    let name = items[0].text();
    let one = raw.command(&["CONFIG", "GET", &name]);
    assert_eq!(one.items().len(), 2, "{one:?}");
    assert_eq!(one.items()[0].text(), name);
}

#[test]
fn time_returns_unix_seconds_and_microseconds() {
    let server = server();
    let mut raw = server.raw();
    let reply = raw.command(&["TIME"]);
    let items = reply.items();
    assert_eq!(items.len(), 2, "{reply:?}");
    let seconds: u64 = items[0].text().parse().expect("seconds are an integer");
    let micros: u64 = items[1]
        .text()
        .parse()
        .expect("microseconds are an integer");
    assert!(micros < 1_000_000, "{reply:?}");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Same machine, same clock: this is a sanity check of the unit, not timing.
    assert!(
        seconds.abs_diff(now) < 3600,
        "TIME says {seconds}, clock says {now}"
    );
}

#[test]
fn info_has_the_redis_sections_and_role_master() {
    let server = server();
    let mut raw = server.raw();
    raw.command(&["MSET", "a", "1", "b", "2", "c", "3"]);
    let info = raw.command(&["INFO"]).text();
    for section in [
        "# Server",
        "# Clients",
        "# Persistence",
        "# Stats",
        "# Replication",
        "# Keyspace",
    ] {
        assert!(
            info.lines().any(|l| l.trim_end() == section),
            "INFO lacks {section}:\n{info}"
        );
    }
    assert!(
        info.lines().any(|l| l.trim_end() == "role:master"),
        "{info}"
    );
    assert!(
        info.lines().any(|l| l.starts_with("connected_clients:")),
        "{info}"
    );
    assert!(
        info.lines()
            .any(|l| l.trim_end().starts_with("db0:keys=3,")),
        "INFO keyspace should have db0:keys=3,...:\n{info}"
    );
    for line in info.lines() {
        assert!(
            line.is_empty() || line.starts_with('#') || line.contains(':'),
            "INFO line is neither a header nor field:value: {line:?}"
        );
    }

    let replication = raw.command(&["INFO", "replication"]).text();
    assert!(
        replication.lines().any(|l| l.trim_end() == "# Replication"),
        "{replication}"
    );
    assert!(
        replication.lines().any(|l| l.trim_end() == "role:master"),
        "{replication}"
    );
    assert!(
        !replication.contains("# Server"),
        "INFO replication must contain only that section:\n{replication}"
    );
    let keyspace = raw.command(&["info", "KEYSPACE"]).text();
    assert!(keyspace.contains("db0:keys=3,"), "{keyspace}");
}

#[test]
fn save_and_bgsave_are_accepted() {
    let server = server();
    let mut raw = server.raw();
    raw.command(&["SET", "k", "v"]);
    assert_eq!(raw.command(&["SAVE"]), ok());
    match raw.command(&["BGSAVE"]) {
        Reply::Simple(_) => {}
        other => panic!("BGSAVE must reply with a status, got {other:?}"),
    }
    assert_eq!(raw.command(&["GET", "k"]), bulk("v"));
}

#[test]
fn pipelined_commands_are_answered_in_order() {
    let server = server();
    let mut raw = server.raw();
    let mut batch = Vec::new();
    const N: usize = 2000;
    for i in 0..N {
        batch.extend(walship_tests::resp::encode(&[
            "SET",
            &format!("p{i}"),
            &i.to_string(),
        ]));
        batch.extend(walship_tests::resp::encode(&["INCR", &format!("p{i}")]));
        batch.extend(b"PING\r\n");
    }
    raw.send(&batch).unwrap();
    for i in 0..N {
        assert_eq!(raw.read_reply().unwrap(), ok(), "SET #{i}");
        assert_eq!(
            raw.read_reply().unwrap(),
            Reply::Integer(i as i64 + 1),
            "INCR #{i}"
        );
        assert_eq!(
            raw.read_reply().unwrap(),
            Reply::Simple("PONG".into()),
            "PING #{i}"
        );
    }
    assert_eq!(raw.command(&["DBSIZE"]), Reply::Integer(N as i64));
}

#[test]
fn inline_commands_are_parsed_like_redis() {
    let server = server();
    let mut raw = server.raw();
    raw.send(b"SET greeting \"hello world\"\r\n").unwrap();
    assert_eq!(raw.read_reply().unwrap(), ok());
    // A bare LF ends an inline command too.
    raw.send(b"GET greeting\n").unwrap();
    assert_eq!(raw.read_reply().unwrap(), bulk("hello world"));
    raw.send(b"SET q 'single quoted'\r\nGET q\r\n").unwrap();
    assert_eq!(raw.read_reply().unwrap(), ok());
    assert_eq!(raw.read_reply().unwrap(), bulk("single quoted"));
    raw.send(b"SET esc \"a\\x41\\n\"\r\nGET esc\r\n").unwrap();
    assert_eq!(raw.read_reply().unwrap(), ok());
    assert_eq!(raw.read_reply().unwrap(), bulk("aA\n"));
    // Empty lines are ignored.
    raw.send(b"\r\n\r\nPING\r\n").unwrap();
    assert_eq!(raw.read_reply().unwrap(), Reply::Simple("PONG".into()));
    // Inline and multibulk mix on one connection.
    raw.send(b"PING\r\n*1\r\n$4\r\nPING\r\n").unwrap();
    assert_eq!(raw.read_reply().unwrap(), Reply::Simple("PONG".into()));
    assert_eq!(raw.read_reply().unwrap(), Reply::Simple("PONG".into()));
}

#[test]
fn unbalanced_quotes_in_inline_command_are_a_protocol_error() {
    let server = server();
    let mut raw = server.raw();
    raw.command(&["SET", "k", "v"]);
    raw.send(b"SET k \"oops\r\n").unwrap();
    assert_eq!(
        raw.read_reply().unwrap(),
        Reply::Error("ERR Protocol error: unbalanced quotes in request".into())
    );
    raw.read_until_closed()
        .expect("connection closed after a protocol error");
    assert_eq!(server.raw().command(&["GET", "k"]), bulk("v"));
}

/// A client that sends a long pipeline before it reads any reply (as
/// redis-py's pipeline does) gets every reply: the server keeps taking its
/// input while its replies wait to be read, as Redis does. Before, the
/// server stopped reading once a write blocked, the client's send blocked
/// in turn, and both waited for ever (here: the sender's 60 s timeout).
#[test]
fn a_client_that_sends_everything_before_reading_gets_every_reply() {
    use std::io::{Read, Write};
    const GETS: usize = 400_000;
    let server = server();
    let value = "v".repeat(100);
    assert_eq!(server.raw().command(&["SET", "k", &value]), ok());
    let stream = std::net::TcpStream::connect(("127.0.0.1", server.port())).unwrap();
    stream
        .set_write_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let mut sender = stream.try_clone().unwrap();
    let send = std::thread::spawn(move || {
        let request = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n".repeat(1000);
        for _ in 0..GETS / 1000 {
            sender.write_all(&request)?;
        }
        Ok::<_, std::io::Error>(())
    });
    // Nothing is read until everything is sent.
    send.join()
        .unwrap()
        .expect("sending the whole pipeline before reading any reply");
    let reply = format!("${}\r\n{value}\r\n", value.len());
    let expected = reply.len() * GETS;
    let mut got = Vec::with_capacity(expected);
    let mut reader = stream;
    let mut chunk = vec![0u8; 1 << 20];
    while got.len() < expected {
        let n = reader.read(&mut chunk).expect("reading the replies");
        assert!(
            n > 0,
            "connection closed after {} of {expected} bytes",
            got.len()
        );
        got.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(got.len(), expected);
    assert!(got.chunks(reply.len()).all(|c| c == reply.as_bytes()));
}

/// walship has no transactions. A client library's transaction (MULTI,
/// commands, EXEC in one pipeline) must fail as a whole, with nothing run:
/// MULTI is refused, the commands after it are refused, EXEC answers
/// EXECABORT. Before, MULTI was an unknown command and the "queued"
/// commands ran one by one while the library reported the transaction
/// failed.
#[test]
fn a_transaction_fails_as_a_whole_and_runs_nothing() {
    let server = server();
    let mut con = server.connection();
    let result: redis::RedisResult<(String, i64)> = redis::pipe()
        .atomic()
        .set("tx-key", "applied")
        .incr("tx-counter", 1)
        .query(&mut con);
    assert!(result.is_err(), "the transaction must fail: {result:?}");
    let (key, counter): (Option<String>, Option<i64>) = redis::pipe()
        .get("tx-key")
        .get("tx-counter")
        .query(&mut con)
        .unwrap();
    assert_eq!((key, counter), (None, None), "nothing may have run");

    let mut raw = server.raw();
    assert!(matches!(raw.command(&["MULTI"]), Reply::Error(e) if e.contains("no transactions")));
    assert!(matches!(raw.command(&["SET", "a", "1"]), Reply::Error(e) if e.contains("not run")));
    assert_eq!(raw.command(&["DISCARD"]), ok());
    assert_eq!(raw.command(&["SET", "a", "1"]), ok(), "DISCARD ended it");
    assert!(matches!(raw.command(&["MULTI"]), Reply::Error(_)));
    assert_eq!(
        raw.command(&["EXEC"]),
        Reply::Error("EXECABORT Transaction discarded because of previous errors.".into())
    );
    assert_eq!(
        raw.command(&["EXEC"]),
        Reply::Error("ERR EXEC without MULTI".into())
    );
    assert_eq!(raw.command(&["GET", "a"]), bulk("1"));
}

/// The client port listens with Redis's default backlog of 511 (`ss`
/// shows it as the listening socket's Send-Q), so a burst of connections
/// queues rather than waiting a second for a SYN retransmit.
#[test]
fn the_client_port_listens_with_redis_backlog() {
    let server = server();
    let out = std::process::Command::new("ss")
        .args(["-ltnH", &format!("sport = :{}", server.port())])
        .output()
        .expect("ss (iproute2) is installed by scripts/test");
    let text = String::from_utf8_lossy(&out.stdout);
    let backlog: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    assert_eq!(backlog, ["511"], "ss -ltn said:\n{text}");
}

fn client_id(raw: &mut walship_tests::resp::RawConn) -> i64 {
    match raw.command(&["CLIENT", "ID"]) {
        Reply::Integer(id) => id,
        other => panic!("CLIENT ID replied {other:?}"),
    }
}

/// CLIENT KILL in Redis's two forms closes the connection named, also one
/// whose write waits for a synchronous standby that is not there.
#[test]
fn client_kill_closes_the_connections_it_names() {
    let server = walship_tests::TestServer::start_with(walship_tests::ServerOptions {
        extra_args: vec![
            "--synchronous-standby-names".into(),
            "FIRST 1 (absent)".into(),
            "--synchronous-commit".into(),
            "local".into(),
        ],
        ..Default::default()
    })
    .expect("start walship");
    let mut admin = server.raw();

    // By id: the other connection is closed, the caller spared.
    let mut victim = server.raw();
    let id = client_id(&mut victim).to_string();
    assert_eq!(
        admin.command(&["CLIENT", "KILL", "ID", &id]),
        Reply::Integer(1)
    );
    assert!(
        victim.read_until_closed().is_ok(),
        "the killed connection is closed"
    );
    assert_eq!(
        admin.command(&["CLIENT", "KILL", "ID", "999999"]),
        Reply::Integer(0)
    );
    assert_eq!(
        admin.command(&["CLIENT", "KILL", "USER", "nouser"]),
        Reply::Error("ERR No such user 'nouser'".into())
    );
    assert_eq!(
        admin.command(&["CLIENT", "KILL", "ID", "0"]),
        Reply::Error("ERR client-id should be greater than 0".into())
    );

    // By address (the old form).
    let mut victim = server.raw();
    let info = victim.command(&["CLIENT", "INFO"]).text();
    let addr = info
        .split_whitespace()
        .find_map(|f| f.strip_prefix("addr="))
        .expect("addr= in CLIENT INFO")
        .to_string();
    assert_eq!(admin.command(&["CLIENT", "KILL", &addr]), ok());
    assert!(victim.read_until_closed().is_ok());
    assert_eq!(
        admin.command(&["CLIENT", "KILL", "127.0.0.1:1"]),
        Reply::Error("ERR No such client".into())
    );

    // A client whose write waits for its (absent) standby.
    let mut waiting = server.raw();
    assert_eq!(
        waiting.command(&["WALSHIP", "SYNCHRONOUS_COMMIT", "on"]),
        ok()
    );
    let id = client_id(&mut waiting).to_string();
    waiting
        .send(&walship_tests::resp::encode(&["SET", "k", "v"]))
        .unwrap();
    let blocked = |admin: &mut walship_tests::resp::RawConn| {
        let info = admin.command(&["INFO", "clients"]).text();
        info.lines()
            .find_map(|l| l.strip_prefix("blocked_clients:"))
            .map(|n| n.trim().to_string())
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while blocked(&mut admin).as_deref() != Some("1") {
        assert!(
            std::time::Instant::now() < deadline,
            "the write never waited"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(
        admin.command(&["CLIENT", "KILL", "ID", &id]),
        Reply::Integer(1)
    );
    let rest = waiting.read_until_closed().expect("closed");
    assert!(
        rest.is_empty(),
        "no reply to the unconfirmed write: {rest:?}"
    );
    assert_eq!(blocked(&mut admin).as_deref(), Some("0"));

    // SKIPME no: the caller itself, after its reply.
    let mut me = server.raw();
    let id = client_id(&mut me).to_string();
    assert_eq!(
        me.command(&["CLIENT", "KILL", "ID", &id, "SKIPME", "no"]),
        Reply::Integer(1)
    );
    assert!(me.read_until_closed().is_ok());
}
