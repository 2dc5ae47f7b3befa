//! Command semantics against a real engine in a temporary directory.
//! Durability waits are the connection's job, so these tests only check
//! that writes report an LSN for it to wait on.

use super::*;
use crate::config::{FileConfig, FsyncSetting, ServerArgs, ServerConfig};
use crate::reply::{Protocol, Reply};
use crate::state::Shared;
use crate::store::Store;
use std::net::SocketAddr;

struct T {
    shared: Arc<Shared>,
    client: ClientState,
    out: Reply,
    last_lsn: Option<Lsn>,
    dir: tempfile::TempDir,
}

fn config(dir: &std::path::Path, pass: Option<&str>) -> ServerConfig {
    let args = ServerArgs {
        data_dir: Some(dir.to_path_buf()),
        fsync: Some(FsyncSetting::Never),
        requirepass: pass.map(str::to_string),
        ..ServerArgs::default()
    };
    ServerConfig::merge(&args, &FileConfig::default()).unwrap()
}

fn addr() -> SocketAddr {
    "127.0.0.1:1".parse().unwrap()
}

impl T {
    fn new() -> T {
        T::with_password(None)
    }

    fn with_password(pass: Option<&str>) -> T {
        let dir = tempfile::tempdir().unwrap();
        T::open(dir, pass)
    }

    fn open(dir: tempfile::TempDir, pass: Option<&str>) -> T {
        let cfg = config(dir.path(), pass);
        let store = Store::open(&cfg).unwrap();
        let shared = Arc::new(Shared::new(store, cfg));
        let info = shared.clients.register(addr(), addr());
        let client = ClientState::new(info, &shared);
        T {
            shared,
            client,
            out: Reply::new(Protocol::Resp2),
            last_lsn: None,
            dir,
        }
    }

    /// A second client on the same server.
    fn another_client(&self) -> (ClientState, Reply) {
        let info = self.shared.clients.register(addr(), addr());
        (
            ClientState::new(info, &self.shared),
            Reply::new(Protocol::Resp2),
        )
    }

    /// Shuts the engine down and opens the directory again.
    fn restart(self) -> T {
        self.shared.store.shutdown().unwrap();
        let T { shared, dir, .. } = self;
        drop(shared);
        T::open(dir, None)
    }

    fn cmd(&mut self, args: &[&str]) -> String {
        let bytes: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.cmd_bytes(&bytes)
    }

    fn cmd_bytes(&mut self, args: &[&[u8]]) -> String {
        let mut data = Vec::new();
        let mut ranges = Vec::new();
        for a in args {
            let start = data.len();
            data.extend_from_slice(a);
            ranges.push((start, data.len()));
        }
        let mut ctx = Ctx::new(&self.shared, &mut self.client, &mut self.out);
        execute(&mut ctx, Args::from_owned(&data, &ranges));
        self.last_lsn = ctx.lsn;
        let s = String::from_utf8_lossy(self.out.as_bytes()).into_owned();
        self.out.clear();
        s
    }
}

#[test]
fn set_then_get_returns_the_value_and_missing_keys_are_null() {
    let mut t = T::new();
    assert_eq!(t.cmd(&["SET", "k", "v"]), "+OK\r\n");
    assert!(
        t.last_lsn.is_some(),
        "a write must hand the connection an LSN to wait for"
    );
    assert_eq!(t.cmd(&["GET", "k"]), "$1\r\nv\r\n");
    assert!(t.last_lsn.is_none(), "a read must not wait for durability");
    assert_eq!(t.cmd(&["get", "nope"]), "$-1\r\n");
}

#[test]
fn binary_keys_and_values_round_trip() {
    let mut t = T::new();
    let v: Vec<u8> = (0..=255).collect();
    assert_eq!(t.cmd_bytes(&[b"SET", b"\x00\r\n", &v]), "+OK\r\n");
    let mut want = b"$256\r\n".to_vec();
    want.extend_from_slice(&v);
    want.extend_from_slice(b"\r\n");
    t.cmd_bytes(&[b"GET", b"\x00\r\n"]);
    let mut ctx = Ctx::new(&t.shared, &mut t.client, &mut t.out);
    let data = b"GET\x00\r\n".to_vec();
    execute(&mut ctx, Args::from_owned(&data, &[(0, 3), (3, 6)]));
    assert_eq!(t.out.as_bytes(), &want[..]);
}

#[test]
fn set_nx_xx_and_get_follow_redis() {
    let mut t = T::new();
    assert_eq!(t.cmd(&["SET", "k", "1", "XX"]), "$-1\r\n");
    assert!(t.last_lsn.is_none(), "a SET that did nothing must not log");
    assert_eq!(t.cmd(&["SET", "k", "1", "NX"]), "+OK\r\n");
    assert_eq!(t.cmd(&["SET", "k", "2", "NX"]), "$-1\r\n");
    assert_eq!(t.cmd(&["SET", "k", "3", "XX", "GET"]), "$1\r\n1\r\n");
    assert_eq!(t.cmd(&["SET", "k", "4", "nx", "get"]), "$1\r\n3\r\n");
    assert_eq!(t.cmd(&["GET", "k"]), "$1\r\n3\r\n");
    assert_eq!(t.cmd(&["SET", "new", "x", "GET"]), "$-1\r\n");
    assert_eq!(t.cmd(&["GET", "new"]), "$1\r\nx\r\n");
    assert_eq!(
        t.cmd(&["SET", "k", "1", "NX", "XX"]),
        "-ERR syntax error\r\n"
    );
    assert_eq!(t.cmd(&["SET", "k", "1", "BOGUS"]), "-ERR syntax error\r\n");
}

#[test]
fn set_with_expiry_is_refused_and_changes_nothing() {
    let mut t = T::new();
    for opts in [
        &["EX", "10"][..],
        &["PX", "5"],
        &["EXAT", "1"],
        &["PXAT", "1"],
    ] {
        let mut args = vec!["SET", "k", "v"];
        args.extend_from_slice(opts);
        let r = t.cmd(&args);
        assert!(r.starts_with("-ERR key expiry is not supported"), "{r}");
    }
    assert_eq!(t.cmd(&["SET", "k", "v", "EX"]), "-ERR syntax error\r\n");
    // KEEPTTL keeps a time to live no key has: accepted and does nothing,
    // but not beside a time (as Redis).
    assert_eq!(
        t.cmd(&["SET", "k", "v", "KEEPTTL", "EX", "10"]),
        "-ERR syntax error\r\n"
    );
    assert_eq!(t.cmd(&["GET", "k"]), "$-1\r\n");
    assert_eq!(t.cmd(&["SET", "kt", "v", "KEEPTTL"]), "+OK\r\n");
    assert_eq!(t.cmd(&["GET", "kt"]), "$1\r\nv\r\n");
    assert_eq!(t.cmd(&["TTL", "kt"]), ":-1\r\n");
    assert!(t
        .cmd(&["EXPIRE", "k", "10"])
        .starts_with("-ERR key expiry is not supported"));
    assert!(t
        .cmd(&["SETEX", "k", "10", "v"])
        .starts_with("-ERR key expiry is not supported"));
    assert_eq!(t.cmd(&["GET", "k"]), "$-1\r\n");
    assert_eq!(t.cmd(&["TTL", "k"]), ":-2\r\n");
    t.cmd(&["SET", "k", "v"]);
    assert_eq!(t.cmd(&["TTL", "k"]), ":-1\r\n");
    assert_eq!(t.cmd(&["PTTL", "k"]), ":-1\r\n");
    // Malformed times and options get Redis's errors (compared with Redis
    // 7.0 side by side), not the expiry refusal.
    let redis_says: &[(&[&str], &str)] = &[
        (
            &["SET", "b", "1", "EX", "abc"],
            "-ERR value is not an integer or out of range\r\n",
        ),
        (
            &["SET", "b", "1", "EX", "0"],
            "-ERR invalid expire time in 'set' command\r\n",
        ),
        (&["GETEX", "k", "PERSIST", "PERSIST"], "$1\r\nv\r\n"),
        (&["GETEX", "k", "BOGUS"], "-ERR syntax error\r\n"),
        (
            &["GETEX", "k", "EX", "abc"],
            "-ERR value is not an integer or out of range\r\n",
        ),
        (
            &["GETEX", "k", "EX", "-5"],
            "-ERR invalid expire time in 'getex' command\r\n",
        ),
        (
            &["GETEX", "k", "EX", "10", "PERSIST"],
            "-ERR syntax error\r\n",
        ),
    ];
    for (args, want) in redis_says {
        assert_eq!(t.cmd(args), *want, "{args:?}");
    }
    assert!(t
        .cmd(&["GETEX", "k", "EX", "10"])
        .starts_with("-ERR key expiry is not supported"));
}

/// SHUTDOWN with both SAVE and NOSAVE is a syntax error, as in Redis: a
/// mistyped command does not stop the server.
#[test]
fn shutdown_with_save_and_nosave_is_refused() {
    let mut t = T::new();
    assert_eq!(
        t.cmd(&["SHUTDOWN", "SAVE", "NOSAVE"]),
        "-ERR syntax error\r\n"
    );
    assert_eq!(t.cmd(&["PING"]), "+PONG\r\n");
}

#[test]
fn incr_family_counts_and_refuses_non_integers() {
    let mut t = T::new();
    assert_eq!(t.cmd(&["INCR", "n"]), ":1\r\n");
    assert_eq!(t.cmd(&["INCRBY", "n", "41"]), ":42\r\n");
    assert_eq!(t.cmd(&["DECR", "n"]), ":41\r\n");
    assert_eq!(t.cmd(&["DECRBY", "n", "-9"]), ":50\r\n");
    assert_eq!(t.cmd(&["GET", "n"]), "$2\r\n50\r\n");
    t.cmd(&["SET", "s", "abc"]);
    assert_eq!(
        t.cmd(&["INCR", "s"]),
        "-ERR value is not an integer or out of range\r\n"
    );
    assert_eq!(
        t.cmd(&["INCRBY", "n", "x"]),
        "-ERR value is not an integer or out of range\r\n"
    );
    t.cmd(&["SET", "sp", " 1"]);
    assert_eq!(
        t.cmd(&["INCR", "sp"]),
        "-ERR value is not an integer or out of range\r\n"
    );
    t.cmd(&["SET", "max", &i64::MAX.to_string()]);
    assert_eq!(
        t.cmd(&["INCR", "max"]),
        "-ERR increment or decrement would overflow\r\n"
    );
    assert_eq!(
        t.cmd(&["DECRBY", "n", &i64::MIN.to_string()]),
        "-ERR decrement would overflow\r\n"
    );
    assert_eq!(t.cmd(&["GET", "s"]), "$3\r\nabc\r\n");
}

/// Replies as Redis 7.0 gave them for the same sequence (the only
/// difference: COPY ... DB 1, which walship refuses, having one database).
#[test]
fn incrbyfloat_setrange_substr_rename_copy_touch_as_redis() {
    let mut t = T::new();
    let cases: &[(&[&str], &str)] = &[
        (&["SET", "f", "10.50"], "+OK\r\n"),
        (&["INCRBYFLOAT", "f", "0.1"], "$4\r\n10.6\r\n"),
        (&["SET", "e", "5.0e3"], "+OK\r\n"),
        (&["INCRBYFLOAT", "e", "2.0e2"], "$4\r\n5200\r\n"),
        (&["SET", "p", "0.1"], "+OK\r\n"),
        (&["INCRBYFLOAT", "p", "0.2"], "$3\r\n0.3\r\n"),
        (&["INCRBYFLOAT", "p", "-0.3"], "$1\r\n0\r\n"),
        (
            &["INCRBYFLOAT", "e", "abc"],
            "-ERR value is not a valid float\r\n",
        ),
        (
            &["INCRBYFLOAT", "e", " 1"],
            "-ERR value is not a valid float\r\n",
        ),
        (
            &["INCRBYFLOAT", "e", "inf"],
            "-ERR increment would produce NaN or Infinity\r\n",
        ),
        (&["SET", "s", "hello"], "+OK\r\n"),
        (
            &["INCRBYFLOAT", "s", "1"],
            "-ERR value is not a valid float\r\n",
        ),
        (&["SETRANGE", "s", "6", "World"], ":11\r\n"),
        (&["GET", "s"], "$11\r\nhello\0World\r\n"),
        (&["SETRANGE", "new", "3", "x"], ":4\r\n"),
        (&["GET", "new"], "$4\r\n\0\0\0x\r\n"),
        (
            &["SETRANGE", "s", "-1", "x"],
            "-ERR offset is out of range\r\n",
        ),
        (&["SETRANGE", "none", "5", ""], ":0\r\n"),
        (&["EXISTS", "none"], ":0\r\n"),
        (&["SUBSTR", "s", "0", "2"], "$3\r\nhel\r\n"),
        (&["RENAME", "nokey", "x"], "-ERR no such key\r\n"),
        (&["SET", "a", "1"], "+OK\r\n"),
        (&["RENAME", "a", "b"], "+OK\r\n"),
        (&["GET", "a"], "$-1\r\n"),
        (&["GET", "b"], "$1\r\n1\r\n"),
        (&["RENAME", "b", "b"], "+OK\r\n"),
        (&["SET", "c", "2"], "+OK\r\n"),
        (&["RENAMENX", "b", "c"], ":0\r\n"),
        (&["RENAMENX", "b", "d"], ":1\r\n"),
        (&["RENAMENX", "d", "d"], ":0\r\n"),
        (&["COPY", "d", "e2"], ":1\r\n"),
        (&["COPY", "d", "e2"], ":0\r\n"),
        (&["SET", "d", "9"], "+OK\r\n"),
        (&["COPY", "d", "e2", "REPLACE"], ":1\r\n"),
        (&["GET", "e2"], "$1\r\n9\r\n"),
        (
            &["COPY", "d", "d"],
            "-ERR source and destination objects are the same\r\n",
        ),
        (&["COPY", "missing", "x"], ":0\r\n"),
        (&["COPY", "d", "y", "BOGUS"], "-ERR syntax error\r\n"),
        (&["TOUCH", "d", "e2", "nope", "d"], ":3\r\n"),
    ];
    for (args, want) in cases {
        assert_eq!(t.cmd(args), *want, "{args:?}");
    }
    // An offset past max-value-size is refused before anything is built.
    assert!(t
        .cmd(&["SETRANGE", "big", "1099511627776", "x"])
        .starts_with("-ERR string exceeds maximum allowed size"));
    assert_eq!(t.cmd(&["EXISTS", "big"]), ":0\r\n");
}

#[test]
fn append_strlen_getdel_getset_setnx() {
    let mut t = T::new();
    assert_eq!(t.cmd(&["APPEND", "a", "hello"]), ":5\r\n");
    assert_eq!(t.cmd(&["APPEND", "a", " world"]), ":11\r\n");
    assert_eq!(t.cmd(&["STRLEN", "a"]), ":11\r\n");
    assert_eq!(t.cmd(&["STRLEN", "nope"]), ":0\r\n");
    assert_eq!(t.cmd(&["GETRANGE", "a", "0", "4"]), "$5\r\nhello\r\n");
    assert_eq!(t.cmd(&["GETRANGE", "a", "-5", "-1"]), "$5\r\nworld\r\n");
    assert_eq!(t.cmd(&["GETDEL", "a"]), "$11\r\nhello world\r\n");
    assert_eq!(t.cmd(&["GETDEL", "a"]), "$-1\r\n");
    assert!(t.last_lsn.is_none());
    assert_eq!(t.cmd(&["GETSET", "g", "1"]), "$-1\r\n");
    assert_eq!(t.cmd(&["GETSET", "g", "2"]), "$1\r\n1\r\n");
    assert_eq!(t.cmd(&["SETNX", "g", "3"]), ":0\r\n");
    assert_eq!(t.cmd(&["SETNX", "h", "3"]), ":1\r\n");
}

#[test]
fn mset_mget_msetnx() {
    let mut t = T::new();
    assert_eq!(t.cmd(&["MSET", "a", "1", "b", "2"]), "+OK\r\n");
    assert_eq!(
        t.cmd(&["MGET", "a", "nope", "b"]),
        "*3\r\n$1\r\n1\r\n$-1\r\n$1\r\n2\r\n"
    );
    assert_eq!(
        t.cmd(&["MSET", "a", "1", "b"]),
        "-ERR wrong number of arguments for 'mset' command\r\n"
    );
    assert_eq!(t.cmd(&["MSETNX", "c", "3", "a", "9"]), ":0\r\n");
    assert_eq!(t.cmd(&["GET", "c"]), "$-1\r\n");
    assert_eq!(t.cmd(&["MSETNX", "c", "3", "d", "4"]), ":1\r\n");
    assert_eq!(t.cmd(&["MSET", "x", "1", "x", "2"]), "+OK\r\n");
    assert_eq!(t.cmd(&["GET", "x"]), "$1\r\n2\r\n");
}

#[test]
fn del_and_exists_count_like_redis() {
    let mut t = T::new();
    t.cmd(&["MSET", "a", "1", "b", "2", "c", "3"]);
    assert_eq!(t.cmd(&["EXISTS", "a", "a", "nope"]), ":2\r\n");
    assert_eq!(t.cmd(&["DEL", "a", "a", "b", "nope"]), ":2\r\n");
    assert_eq!(t.cmd(&["DEL", "nope"]), ":0\r\n");
    assert!(t.last_lsn.is_none(), "deleting nothing must not log");
    assert_eq!(t.cmd(&["UNLINK", "c"]), ":1\r\n");
    assert_eq!(t.cmd(&["DBSIZE"]), ":0\r\n");
    assert_eq!(t.cmd(&["TYPE", "c"]), "+none\r\n");
}

#[test]
fn unknown_commands_and_wrong_arity_use_redis_texts() {
    let mut t = T::new();
    assert_eq!(
        t.cmd(&["foo", "a", "b"]),
        "-ERR unknown command 'foo', with args beginning with: 'a' 'b' \r\n"
    );
    assert_eq!(
        t.cmd(&["foo"]),
        "-ERR unknown command 'foo', with args beginning with: \r\n"
    );
    assert_eq!(
        t.cmd(&["GET"]),
        "-ERR wrong number of arguments for 'get' command\r\n"
    );
    assert_eq!(
        t.cmd(&["get", "a", "b"]),
        "-ERR wrong number of arguments for 'get' command\r\n"
    );
    assert_eq!(
        t.cmd(&["CONFIG", "GET"]),
        "-ERR wrong number of arguments for 'config|get' command\r\n"
    );
    assert_eq!(
        t.cmd(&["CLIENT", "nope"]),
        "-ERR unknown subcommand 'nope'. Try CLIENT HELP.\r\n"
    );
    let long = "x".repeat(300);
    let r = t.cmd(&["nope", &long]);
    assert!(r.len() < 300, "argument echo must be bounded: {}", r.len());
}

#[test]
fn requirepass_gates_every_command_until_auth() {
    let mut t = T::with_password(Some("s3cret"));
    assert_eq!(t.cmd(&["GET", "k"]), "-NOAUTH Authentication required.\r\n");
    assert_eq!(t.cmd(&["PING"]), "-NOAUTH Authentication required.\r\n");
    assert_eq!(
        t.cmd(&["AUTH", "wrong"]),
        "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    assert_eq!(
        t.cmd(&["AUTH", "bob", "s3cret"]),
        "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    assert!(t
        .cmd(&["HELLO", "3"])
        .starts_with("-NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option"));
    assert_eq!(t.cmd(&["AUTH", "s3cret"]), "+OK\r\n");
    assert_eq!(t.cmd(&["PING"]), "+PONG\r\n");

    let (mut c2, mut out2) = t.another_client();
    let mut ctx = Ctx::new(&t.shared, &mut c2, &mut out2);
    let data = b"AUTHdefaults3cret".to_vec();
    execute(
        &mut ctx,
        Args::from_owned(&data, &[(0, 4), (4, 11), (11, 17)]),
    );
    assert_eq!(out2.as_bytes(), b"+OK\r\n");

    let (mut c3, mut out3) = t.another_client();
    let mut ctx = Ctx::new(&t.shared, &mut c3, &mut out3);
    let data = b"HELLO3AUTHdefaults3cret".to_vec();
    execute(
        &mut ctx,
        Args::from_owned(&data, &[(0, 5), (5, 6), (6, 10), (10, 17), (17, 23)]),
    );
    assert!(
        out3.as_bytes().starts_with(b"%7\r\n"),
        "{}",
        String::from_utf8_lossy(out3.as_bytes())
    );
    assert!(c3.authenticated);
}

#[test]
fn auth_without_a_configured_password_is_an_error() {
    let mut t = T::new();
    assert_eq!(
        t.cmd(&["AUTH", "x"]),
        "-ERR AUTH <password> called without any password configured for the default user. \
         Are you sure your configuration is correct?\r\n"
    );
    assert_eq!(t.cmd(&["AUTH", "default", "anything"]), "+OK\r\n");
}

#[test]
fn hello_3_switches_to_resp3() {
    let mut t = T::new();
    let r = t.cmd(&["HELLO", "3"]);
    assert!(
        r.starts_with("%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n"),
        "{r}"
    );
    assert!(r.contains("$5\r\nproto\r\n:3\r\n"), "{r}");
    assert!(r.contains("$4\r\nrole\r\n$6\r\nmaster\r\n"), "{r}");
    assert_eq!(t.cmd(&["GET", "nope"]), "_\r\n");
    assert!(t
        .cmd(&["CONFIG", "GET", "appendonly"])
        .starts_with("%1\r\n"));
    assert!(t.cmd(&["INFO", "keyspace"]).starts_with("="));
    assert_eq!(
        t.cmd(&["HELLO", "4"]),
        "-NOPROTO unsupported protocol version\r\n"
    );
    assert_eq!(
        t.cmd(&["HELLO", "x"]),
        "-ERR Protocol version is not an integer or out of range\r\n"
    );
    let r = t.cmd(&["HELLO", "2", "SETNAME", "app"]);
    assert!(r.starts_with("*14\r\n"), "{r}");
    assert_eq!(t.cmd(&["CLIENT", "GETNAME"]), "$3\r\napp\r\n");
    assert_eq!(t.cmd(&["GET", "nope"]), "$-1\r\n");
}

/// RESET forgets the connection's own `synchronous_commit` (as Redis's
/// RESET clears connection state and PostgreSQL's `RESET ALL` session
/// settings): a pooled connection must not pass weakened durability on.
#[test]
fn reset_restores_the_servers_synchronous_commit() {
    let mut t = T::new();
    assert_eq!(t.cmd(&["WALSHIP", "SYNCHRONOUS_COMMIT"]), "$2\r\non\r\n");
    assert_eq!(t.cmd(&["WALSHIP", "SYNCHRONOUS_COMMIT", "off"]), "+OK\r\n");
    assert_eq!(t.cmd(&["WALSHIP", "SYNCHRONOUS_COMMIT"]), "$3\r\noff\r\n");
    assert_eq!(t.cmd(&["RESET"]), "+RESET\r\n");
    assert_eq!(t.cmd(&["WALSHIP", "SYNCHRONOUS_COMMIT"]), "$2\r\non\r\n");
}

#[test]
fn connection_commands() {
    let mut t = T::new();
    assert_eq!(t.cmd(&["PING"]), "+PONG\r\n");
    assert_eq!(t.cmd(&["PING", "hi"]), "$2\r\nhi\r\n");
    assert_eq!(t.cmd(&["ECHO", "x"]), "$1\r\nx\r\n");
    assert_eq!(t.cmd(&["SELECT", "0"]), "+OK\r\n");
    assert_eq!(t.cmd(&["SELECT", "1"]), "-ERR DB index is out of range\r\n");
    assert_eq!(
        t.cmd(&["SELECT", "x"]),
        "-ERR value is not an integer or out of range\r\n"
    );
    assert_eq!(
        t.cmd(&["CLIENT", "SETNAME", "a b"]),
        "-ERR Client names cannot contain spaces, newlines or special characters.\r\n"
    );
    assert_eq!(t.cmd(&["CLIENT", "SETNAME", "worker"]), "+OK\r\n");
    assert_eq!(
        t.cmd(&["CLIENT", "SETINFO", "LIB-NAME", "redis-rs"]),
        "+OK\r\n"
    );
    let id = t.client.info.id;
    assert_eq!(t.cmd(&["CLIENT", "ID"]), format!(":{id}\r\n"));
    let list = t.cmd(&["CLIENT", "LIST"]);
    assert!(list.contains(&format!("id={id} ")), "{list}");
    assert!(list.contains("name=worker "), "{list}");
    assert!(list.contains("lib-name=redis-rs"), "{list}");
    // One filter, as Redis 7.0 (compared side by side).
    let by_id = t.cmd(&["CLIENT", "LIST", "ID", &id.to_string(), "999"]);
    assert!(by_id.contains(&format!("id={id} ")), "{by_id}");
    assert_eq!(by_id.matches("id=").count(), 1, "{by_id}");
    assert_eq!(t.cmd(&["CLIENT", "LIST", "ID", "999"]), "$0\r\n\r\n");
    assert_eq!(
        t.cmd(&["CLIENT", "LIST", "ID", "abc"]),
        "-ERR Invalid client ID\r\n"
    );
    assert!(t
        .cmd(&["CLIENT", "LIST", "TYPE", "normal"])
        .contains(&format!("id={id} ")));
    assert_eq!(t.cmd(&["CLIENT", "LIST", "TYPE", "replica"]), "$0\r\n\r\n");
    assert_eq!(
        t.cmd(&["CLIENT", "LIST", "TYPE", "normal", "ID", "1"]),
        "-ERR syntax error\r\n"
    );
    assert_eq!(t.cmd(&["QUIT"]), "+OK\r\n");
    assert!(t.client.close_after_reply);
}

#[test]
fn scan_visits_every_key_once_with_numeric_cursors() {
    let mut t = T::new();
    for i in 0..25 {
        t.cmd(&["SET", &format!("key:{i:02}"), "v"]);
    }
    t.cmd(&["SET", "other", "v"]);
    let mut cursor = "0".to_string();
    let mut seen = Vec::new();
    let mut calls = 0;
    loop {
        let r = t.cmd(&["SCAN", &cursor, "MATCH", "key:*", "COUNT", "10"]);
        let lines: Vec<&str> = r.split("\r\n").collect();
        assert_eq!(lines[0], "*2");
        cursor = lines[2].to_string();
        assert!(
            cursor.parse::<u64>().is_ok(),
            "cursor must be numeric: {cursor}"
        );
        seen.extend(
            lines[4..]
                .iter()
                .filter(|l| l.starts_with("key:"))
                .map(|s| s.to_string()),
        );
        calls += 1;
        if cursor == "0" {
            break;
        }
        assert!(calls < 10);
    }
    assert_eq!(seen.len(), 25);
    let unknown = t.cmd(&["SCAN", "123456"]);
    assert!(
        unknown.starts_with("-ERR invalid cursor: not issued by this node")
            && unknown.contains("from 0"),
        "{unknown}"
    );
    assert_eq!(t.cmd(&["SCAN", "abc"]), "-ERR invalid cursor\r\n");
    assert_eq!(t.cmd(&["SCAN", "0", "COUNT", "0"]), "-ERR syntax error\r\n");
    assert_eq!(
        t.cmd(&["SCAN", "0", "TYPE", "hash", "COUNT", "1000"]),
        "*2\r\n$1\r\n0\r\n*0\r\n"
    );
}

/// The cursor of a scan in progress outlives any number of SCAN calls made
/// by other scans that move on: only cursors a scan continued from are
/// forgotten first (before, the table forgot the oldest of the last 16,384
/// SCAN calls server-wide, so a slow scan failed mid-way on a busy server).
#[test]
fn a_scan_in_progress_survives_many_calls_of_another_scan() {
    let mut t = T::new();
    let n = super::super::state::ScanCursors::CAPACITY + 100;
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let mut args = vec!["MSET".to_string()];
        for i in chunk {
            args.push(format!("k{i:06}"));
            args.push("v".into());
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        t.cmd(&refs);
    }
    let cursor_of = |r: &str| r.split("\r\n").nth(2).expect("cursor").to_string();
    let slow = cursor_of(&t.cmd(&["SCAN", "0", "COUNT", "1"]));
    // Another scan walks the whole keyspace one key per call.
    let mut fast = "0".to_string();
    let mut calls = 0;
    loop {
        fast = cursor_of(&t.cmd(&["SCAN", &fast, "COUNT", "1"]));
        calls += 1;
        if fast == "0" {
            break;
        }
    }
    assert!(calls > super::super::state::ScanCursors::CAPACITY);
    let r = t.cmd(&["SCAN", &slow, "COUNT", "1"]);
    assert!(
        r.starts_with("*2\r\n"),
        "the slow scan's cursor was forgotten: {r}"
    );
    assert!(r.contains("k000001"), "{r}");
}

#[test]
fn keys_matches_globs_and_flushall_empties() {
    let mut t = T::new();
    t.cmd(&[
        "MSET", "user:1", "a", "user:2", "b", "user", "c", "item:1", "d",
    ]);
    assert_eq!(
        t.cmd(&["KEYS", "user:*"]),
        "*2\r\n$6\r\nuser:1\r\n$6\r\nuser:2\r\n"
    );
    assert_eq!(
        t.cmd(&["KEYS", "user*"]),
        "*3\r\n$4\r\nuser\r\n$6\r\nuser:1\r\n$6\r\nuser:2\r\n"
    );
    assert_eq!(
        t.cmd(&["KEYS", "*:1"]),
        "*2\r\n$6\r\nitem:1\r\n$6\r\nuser:1\r\n"
    );
    assert_eq!(t.cmd(&["KEYS", "nothing*"]), "*0\r\n");
    assert_eq!(t.cmd(&["FLUSHALL"]), "+OK\r\n");
    assert_eq!(t.cmd(&["DBSIZE"]), ":0\r\n");
    assert_eq!(t.cmd(&["FLUSHALL", "BOGUS"]), "-ERR syntax error\r\n");
}

#[test]
fn config_answers_redis_tools_and_guards_immutables() {
    let mut t = T::new();
    assert_eq!(
        t.cmd(&["CONFIG", "GET", "save"]),
        "*2\r\n$4\r\nsave\r\n$0\r\n\r\n"
    );
    assert_eq!(
        t.cmd(&["CONFIG", "GET", "appendonly"]),
        "*2\r\n$10\r\nappendonly\r\n$3\r\nyes\r\n"
    );
    assert_eq!(
        t.cmd(&["CONFIG", "GET", "appendfsync"]),
        "*2\r\n$11\r\nappendfsync\r\n$2\r\nno\r\n"
    );
    assert_eq!(
        t.cmd(&["CONFIG", "GET", "wal_sync_method"]),
        "*2\r\n$15\r\nwal_sync_method\r\n$13\r\nopen_datasync\r\n"
    );
    assert!(t
        .cmd(&["CONFIG", "SET", "wal_sync_method", "fdatasync"])
        .starts_with("-ERR"));
    assert_eq!(t.cmd(&["CONFIG", "GET", "nonexistent"]), "*0\r\n");
    assert_eq!(t.cmd(&["CONFIG", "SET", "maxclients", "5"]), "+OK\r\n");
    assert_eq!(
        t.cmd(&["CONFIG", "GET", "max-clients"]),
        "*2\r\n$11\r\nmax-clients\r\n$1\r\n5\r\n"
    );
    assert_eq!(
        t.cmd(&["CONFIG", "SET", "fsync", "always"]),
        "-ERR CONFIG SET failed (possibly related to argument 'fsync') - can't set immutable config\r\n"
    );
    assert_eq!(
        t.cmd(&["CONFIG", "SET", "bogus", "1"]),
        "-ERR Unknown option or number of arguments for CONFIG SET - 'bogus'\r\n"
    );
    assert!(t
        .cmd(&["CONFIG", "SET", "maxclients", "0"])
        .starts_with("-ERR CONFIG SET failed"));
    assert!(t.cmd(&["CONFIG", "GET", "max*"]).matches("max").count() >= 6);
}

#[test]
fn config_set_requirepass_applies_to_new_clients() {
    let mut t = T::new();
    assert_eq!(t.cmd(&["CONFIG", "SET", "requirepass", "pw"]), "+OK\r\n");
    assert_eq!(
        t.cmd(&["PING"]),
        "+PONG\r\n",
        "existing clients stay authenticated"
    );
    let (mut c2, mut out2) = t.another_client();
    let mut ctx = Ctx::new(&t.shared, &mut c2, &mut out2);
    let data = b"PING".to_vec();
    execute(&mut ctx, Args::from_owned(&data, &[(0, 4)]));
    assert_eq!(out2.as_bytes(), b"-NOAUTH Authentication required.\r\n");
}

#[test]
fn info_has_redis_sections_and_fields() {
    let mut t = T::new();
    t.cmd(&["SET", "a", "1"]);
    let r = t.cmd(&["INFO"]);
    for needle in [
        "# Server\r\n",
        "redis_version:",
        "# Clients\r\nconnected_clients:",
        "# Persistence\r\n",
        "# Stats\r\n",
        "# Replication\r\nrole:master\r\nconnected_slaves:0\r\n",
        "master_repl_offset:",
        "# Keyspace\r\ndb0:keys=1,expires=0,avg_ttl=0\r\n",
    ] {
        assert!(r.contains(needle), "INFO lacks {needle:?}:\n{r}");
    }
    let offset = format!("master_repl_offset:{}\r\n", t.shared.store.end_lsn());
    assert!(r.contains(&offset), "{r}");
    let r = t.cmd(&["INFO", "replication"]);
    assert!(!r.contains("# Server"), "{r}");
    assert!(t
        .cmd(&["INFO", "commandstats"])
        .contains("# Commandstats\r\n"));
}

#[test]
fn command_replies_keep_redis_cli_happy() {
    let mut t = T::new();
    assert_eq!(t.cmd(&["COMMAND", "DOCS"]), "*0\r\n");
    // GETKEYS as Redis 7 answers it (what cluster-aware clients ask).
    assert_eq!(
        t.cmd(&["COMMAND", "GETKEYS", "SET", "k", "v", "NX"]),
        "*1\r\n$1\r\nk\r\n"
    );
    assert_eq!(
        t.cmd(&["COMMAND", "GETKEYS", "mset", "a", "1", "b", "2"]),
        "*2\r\n$1\r\na\r\n$1\r\nb\r\n"
    );
    assert_eq!(
        t.cmd(&["COMMAND", "GETKEYS", "DEL", "a", "b", "c"]),
        "*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n"
    );
    assert_eq!(
        t.cmd(&["COMMAND", "GETKEYS", "PING"]),
        "-ERR The command has no key arguments\r\n"
    );
    assert_eq!(
        t.cmd(&["COMMAND", "GETKEYS", "DBSIZE", "x"]),
        "-ERR The command has no key arguments\r\n",
        "Redis says so before it counts the arguments"
    );
    assert_eq!(
        t.cmd(&["COMMAND", "GETKEYS", "GET"]),
        "-ERR Invalid number of arguments specified for command\r\n"
    );
    assert_eq!(
        t.cmd(&["COMMAND", "GETKEYS", "NOPE", "x"]),
        "-ERR Invalid command specified\r\n"
    );
    assert_eq!(
        t.cmd(&["COMMAND", "COUNT"]),
        format!(":{}\r\n", COMMANDS.len())
    );
    let info = t.cmd(&["COMMAND", "INFO", "get", "nope"]);
    assert!(
        info.starts_with("*2\r\n*10\r\n$3\r\nget\r\n:2\r\n"),
        "{info}"
    );
    assert!(info.ends_with("$-1\r\n"), "{info}");
    assert!(t
        .cmd(&["COMMAND"])
        .starts_with(&format!("*{}\r\n", COMMANDS.len())));
    assert_eq!(
        t.cmd(&["COMMAND", "COUNT", "x"]),
        "-ERR wrong number of arguments for 'command|count' command\r\n"
    );
    assert_eq!(
        t.cmd(&["COMMAND", "LIST", "FILTERBY", "PATTERN", "getr*"]),
        "*1\r\n$8\r\ngetrange\r\n"
    );
    assert_eq!(
        t.cmd(&["COMMAND", "LIST", "FILTERBY", "ACLCAT", "string"]),
        "*0\r\n"
    );
    assert_eq!(
        t.cmd(&["COMMAND", "LIST", "FILTERBY", "NAME", "x"]),
        "-ERR syntax error\r\n"
    );
}

#[test]
fn time_role_lastsave() {
    let mut t = T::new();
    assert!(t.cmd(&["TIME"]).starts_with("*2\r\n$10\r\n"));
    assert!(t.cmd(&["ROLE"]).starts_with("*3\r\n$6\r\nmaster\r\n:"));
    let lastsave = t.cmd(&["LASTSAVE"]);
    assert!(lastsave.starts_with(':'), "{lastsave}");
    // INFO persistence agrees with LASTSAVE, as in Redis, and counts changes
    // (records), not bytes.
    let field = |info: &str, name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(str::to_string)
    };
    let info = t.cmd(&["INFO", "persistence"]);
    assert_eq!(
        field(&info, "rdb_last_save_time").as_deref(),
        Some(lastsave.trim_start_matches(':').trim_end())
    );
    assert_eq!(field(&info, "loading").as_deref(), Some("0"));
    assert_eq!(field(&info, "aof_last_write_status").as_deref(), Some("ok"));
    assert_eq!(
        field(&info, "rdb_changes_since_last_save").as_deref(),
        Some("0")
    );
    t.cmd(&["SET", "a", "some value"]);
    t.cmd(&["INCR", "n"]);
    let info = t.cmd(&["INFO", "persistence"]);
    assert_eq!(
        field(&info, "rdb_changes_since_last_save").as_deref(),
        Some("2")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_writes_a_checkpoint() {
    let mut t = T::new();
    t.cmd(&["SET", "a", "1"]);
    assert_eq!(t.cmd(&["SAVE"]), "+OK\r\n");
    assert_eq!(t.shared.store.stats().checkpoints, 1);
    assert_eq!(t.cmd(&["BGSAVE"]), "+Background saving started\r\n");
}

#[test]
fn values_survive_a_restart_as_results_not_operations() {
    let mut t = T::new();
    t.cmd(&["INCRBY", "n", "5"]);
    t.cmd(&["INCR", "n"]);
    t.cmd(&["APPEND", "s", "ab"]);
    t.cmd(&["APPEND", "s", "cd"]);
    t.cmd(&["MSET", "a", "1", "b", "2"]);
    t.cmd(&["DEL", "a"]);
    let mut t = t.restart();
    assert_eq!(t.cmd(&["GET", "n"]), "$1\r\n6\r\n");
    assert_eq!(t.cmd(&["GET", "s"]), "$4\r\nabcd\r\n");
    assert_eq!(t.cmd(&["MGET", "a", "b"]), "*2\r\n$-1\r\n$1\r\n2\r\n");
}

#[test]
fn oversized_values_are_refused_without_storing() {
    let dir = tempfile::tempdir().unwrap();
    let args = ServerArgs {
        data_dir: Some(dir.path().to_path_buf()),
        fsync: Some(FsyncSetting::Never),
        max_value_size: Some(crate::config::ByteSize(8)),
        ..ServerArgs::default()
    };
    let cfg = ServerConfig::merge(&args, &FileConfig::default()).unwrap();
    let shared = Arc::new(Shared::new(Store::open(&cfg).unwrap(), cfg));
    let info = shared.clients.register(addr(), addr());
    let mut client = ClientState::new(info, &shared);
    let mut out = Reply::new(Protocol::Resp2);
    let mut ctx = Ctx::new(&shared, &mut client, &mut out);
    let data = b"SETk123456789".to_vec();
    execute(
        &mut ctx,
        Args::from_owned(&data, &[(0, 3), (3, 4), (4, 13)]),
    );
    let r = String::from_utf8_lossy(out.as_bytes()).into_owned();
    assert!(
        r.starts_with("-ERR value of 9 bytes is over the limit of 8 bytes"),
        "{r}"
    );
    assert!(shared.store.get(b"k").is_none());
}

#[test]
fn command_lookup_is_case_insensitive_and_bounded() {
    assert_eq!(lookup(b"GeT"), lookup(b"get"));
    assert!(lookup(b"get").is_some());
    assert!(lookup(&[b'a'; 100]).is_none());
    assert!(lookup(b"").is_none());
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    /// Commands that need a tokio runtime or stop the server are left out.
    fn names() -> Vec<&'static str> {
        COMMANDS
            .iter()
            .map(|c| c.name)
            // WAIT replies later, from the connection (covered by the
            // replication tests); REPLICAOF changes the node's role.
            .filter(|n| {
                !matches!(
                    *n,
                    "save" | "bgsave" | "shutdown" | "wait" | "replicaof" | "slaveof"
                )
            })
            .collect()
    }

    fn arg() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..12),
            Just(b"NX".to_vec()),
            Just(b"GET".to_vec()),
            Just(b"COUNT".to_vec()),
            Just(b"MATCH".to_vec()),
            Just(b"*".to_vec()),
            Just(b"0".to_vec()),
            Just(b"-1".to_vec()),
            Just(b"9223372036854775807".to_vec()),
            Just(b"k".to_vec()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn random_commands_never_panic_and_always_reply(
            script in proptest::collection::vec(
                (0usize..1000, proptest::collection::vec(arg(), 0..6)),
                1..80,
            )
        ) {
            let names = names();
            let mut t = T::new();
            for (which, args) in script {
                let name = names[which % names.len()].as_bytes().to_vec();
                let mut all: Vec<&[u8]> = vec![&name];
                all.extend(args.iter().map(|a| a.as_slice()));
                let reply = t.cmd_bytes(&all);
                prop_assert!(!reply.is_empty(), "no reply to {:?}", String::from_utf8_lossy(&name));
                let first = reply.as_bytes()[0];
                prop_assert!(b"+-:$*%_=,#~".contains(&first), "bad reply {reply:?}");
                prop_assert!(reply.ends_with("\r\n"));
            }
        }
    }
}
