//! String commands through the `redis` crate: reply types, semantics, and
//! Redis 7 error texts (checked on the wire with the raw client).

use std::collections::HashMap;

use redis::{Connection, Value};
use walship_tests::resp::Reply;
use walship_tests::TestServer;

fn server() -> TestServer {
    TestServer::start().expect("start walship")
}

fn q(con: &mut Connection, args: &[&str]) -> Value {
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query(con)
        .unwrap_or_else(|e| panic!("{args:?} failed: {e}"))
}

fn bulk(s: &str) -> Value {
    Value::BulkString(s.as_bytes().to_vec())
}

fn error(text: &str) -> Reply {
    Reply::Error(text.to_string())
}

#[test]
fn set_replies_ok_and_get_returns_the_value_or_nil() {
    let server = server();
    let mut con = server.connection();
    assert_eq!(q(&mut con, &["SET", "k", "v"]), Value::Okay);
    assert_eq!(q(&mut con, &["GET", "k"]), bulk("v"));
    assert_eq!(q(&mut con, &["GET", "missing"]), Value::Nil);
    assert_eq!(q(&mut con, &["SET", "k", "v2"]), Value::Okay);
    assert_eq!(q(&mut con, &["GET", "k"]), bulk("v2"));
}

#[test]
fn values_and_keys_are_binary_safe() {
    let server = server();
    let mut con = server.connection();
    let key: Vec<u8> = vec![0, 1, 2, b'\r', b'\n', 255, b' '];
    let value: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(&value)
        .query(&mut con)
        .unwrap();
    let got: Vec<u8> = redis::cmd("GET").arg(&key).query(&mut con).unwrap();
    assert_eq!(got, value);
    let _: () = redis::cmd("SET")
        .arg("empty")
        .arg("")
        .query(&mut con)
        .unwrap();
    assert_eq!(q(&mut con, &["GET", "empty"]), bulk(""));
    assert_eq!(q(&mut con, &["STRLEN", "empty"]), Value::Int(0));
    assert_eq!(q(&mut con, &["EXISTS", "empty"]), Value::Int(1));
}

#[test]
fn large_value_round_trips() {
    let server = server();
    let mut con = server.connection();
    let value: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let _: () = redis::cmd("SET")
        .arg("big")
        .arg(&value)
        .query(&mut con)
        .unwrap();
    let got: Vec<u8> = redis::cmd("GET").arg("big").query(&mut con).unwrap();
    assert_eq!(got.len(), value.len());
    assert!(got == value, "4 MiB value came back different");
}

#[test]
fn set_nx_only_sets_missing_keys() {
    let server = server();
    let mut con = server.connection();
    assert_eq!(q(&mut con, &["SET", "k", "first", "NX"]), Value::Okay);
    assert_eq!(q(&mut con, &["SET", "k", "second", "NX"]), Value::Nil);
    assert_eq!(q(&mut con, &["GET", "k"]), bulk("first"));
}

#[test]
fn set_xx_only_sets_existing_keys() {
    let server = server();
    let mut con = server.connection();
    assert_eq!(q(&mut con, &["SET", "k", "v", "XX"]), Value::Nil);
    assert_eq!(q(&mut con, &["EXISTS", "k"]), Value::Int(0));
    assert_eq!(q(&mut con, &["SET", "k", "v"]), Value::Okay);
    assert_eq!(q(&mut con, &["SET", "k", "v2", "xx"]), Value::Okay);
    assert_eq!(q(&mut con, &["GET", "k"]), bulk("v2"));
}

#[test]
fn set_get_returns_the_old_value() {
    let server = server();
    let mut con = server.connection();
    assert_eq!(q(&mut con, &["SET", "k", "a", "GET"]), Value::Nil);
    assert_eq!(q(&mut con, &["SET", "k", "b", "GET"]), bulk("a"));
    assert_eq!(q(&mut con, &["GET", "k"]), bulk("b"));
    // XX + GET on a missing key: nothing set, nil returned.
    assert_eq!(q(&mut con, &["SET", "other", "x", "XX", "GET"]), Value::Nil);
    assert_eq!(q(&mut con, &["EXISTS", "other"]), Value::Int(0));
}

#[test]
fn set_with_expiry_or_bad_options_is_refused_and_changes_nothing() {
    let server = server();
    let mut raw = server.raw();
    assert_eq!(
        raw.command(&["SET", "k", "orig"]),
        Reply::Simple("OK".into())
    );
    for args in [
        &["SET", "k", "v", "EX", "10"][..],
        &["SET", "k", "v", "PX", "10000"],
    ] {
        let reply = raw.command(args);
        match &reply {
            Reply::Error(text) => assert!(text.starts_with("ERR "), "{args:?} -> {reply:?}"),
            other => panic!("{args:?} must be refused with -ERR, got {other:?}"),
        }
    }
    assert_eq!(
        raw.command(&["SET", "k", "v", "NX", "XX"]),
        error("ERR syntax error")
    );
    assert_eq!(
        raw.command(&["SET", "k", "v", "BOGUS"]),
        error("ERR syntax error")
    );
    assert_eq!(
        raw.command(&["SET", "k"]),
        error("ERR wrong number of arguments for 'set' command")
    );
    assert_eq!(
        raw.command(&["GET", "k"]),
        Reply::Bulk(Some(b"orig".to_vec()))
    );
}

#[test]
fn wrong_arity_errors_name_the_command_in_lower_case() {
    let server = server();
    let mut raw = server.raw();
    for (args, name) in [
        (&["GET"][..], "get"),
        (&["get", "a", "b"], "get"),
        (&["GETDEL"], "getdel"),
        (&["DEL"], "del"),
        (&["EXISTS"], "exists"),
        (&["MGET"], "mget"),
        (&["MSET"], "mset"),
        (&["MSET", "a"], "mset"),
        (&["MSET", "a", "1", "b"], "mset"),
        (&["INCR"], "incr"),
        (&["INCRBY", "a"], "incrby"),
        (&["DECR", "a", "b"], "decr"),
        (&["DECRBY", "a"], "decrby"),
        (&["APPEND", "a"], "append"),
        (&["STRLEN"], "strlen"),
        (&["ECHO"], "echo"),
    ] {
        assert_eq!(
            raw.command(args),
            Reply::Error(format!(
                "ERR wrong number of arguments for '{name}' command"
            )),
            "{args:?}"
        );
    }
    // None of the refused writes happened.
    assert_eq!(raw.command(&["DBSIZE"]), Reply::Integer(0));
}

#[test]
fn getdel_returns_the_value_and_removes_the_key() {
    let server = server();
    let mut con = server.connection();
    assert_eq!(q(&mut con, &["GETDEL", "k"]), Value::Nil);
    q(&mut con, &["SET", "k", "v"]);
    assert_eq!(q(&mut con, &["GETDEL", "k"]), bulk("v"));
    assert_eq!(q(&mut con, &["GET", "k"]), Value::Nil);
    assert_eq!(q(&mut con, &["GETDEL", "k"]), Value::Nil);
}

#[test]
fn del_and_exists_count_keys_including_repeats() {
    let server = server();
    let mut con = server.connection();
    q(&mut con, &["MSET", "a", "1", "b", "2", "c", "3"]);
    assert_eq!(q(&mut con, &["EXISTS", "a", "b", "nope"]), Value::Int(2));
    // Redis counts a repeated existing key once per mention.
    assert_eq!(q(&mut con, &["EXISTS", "a", "a", "a"]), Value::Int(3));
    assert_eq!(q(&mut con, &["DEL", "a", "nope", "b"]), Value::Int(2));
    // DEL counts each key once, however often it is named.
    assert_eq!(q(&mut con, &["DEL", "c", "c"]), Value::Int(1));
    assert_eq!(q(&mut con, &["DEL", "a"]), Value::Int(0));
    assert_eq!(q(&mut con, &["DBSIZE"]), Value::Int(0));
}

#[test]
fn mget_returns_values_in_order_with_nil_for_missing() {
    let server = server();
    let mut con = server.connection();
    q(&mut con, &["SET", "a", "1"]);
    q(&mut con, &["SET", "c", "3"]);
    assert_eq!(
        q(&mut con, &["MGET", "a", "b", "c", "a"]),
        Value::Array(vec![bulk("1"), Value::Nil, bulk("3"), bulk("1")])
    );
}

#[test]
fn mset_sets_all_pairs_last_one_wins() {
    let server = server();
    let mut con = server.connection();
    assert_eq!(
        q(&mut con, &["MSET", "a", "1", "b", "2", "a", "3"]),
        Value::Okay
    );
    assert_eq!(
        q(&mut con, &["MGET", "a", "b"]),
        Value::Array(vec![bulk("3"), bulk("2")])
    );
    assert_eq!(q(&mut con, &["DBSIZE"]), Value::Int(2));
}

/// A writer keeps replacing a group of keys with MSET (all keys get the same
/// generation number) while a reader MGETs them: every MGET must see one
/// generation, never a mix.
#[test]
fn mset_is_atomic_for_concurrent_readers() {
    const KEYS: [&str; 4] = ["atom:a", "atom:b", "atom:c", "atom:d"];
    const GENERATIONS: u32 = 1500;
    let server = server();
    let mut writer = server.connection();
    q(
        &mut writer,
        &[
            "MSET", KEYS[0], "0", KEYS[1], "0", KEYS[2], "0", KEYS[3], "0",
        ],
    );

    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let mut con = server.connection();
        let done = done.clone();
        std::thread::spawn(move || {
            let mut reads = 0u64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) || reads == 0 {
                let values: Vec<String> =
                    redis::cmd("MGET").arg(&KEYS[..]).query(&mut con).unwrap();
                assert!(
                    values.iter().all(|v| *v == values[0]),
                    "MGET saw a partly applied MSET: {values:?}"
                );
                reads += 1;
            }
            reads
        })
    };
    for generation in 1..=GENERATIONS {
        let g = generation.to_string();
        q(
            &mut writer,
            &["MSET", KEYS[0], &g, KEYS[1], &g, KEYS[2], &g, KEYS[3], &g],
        );
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads = reader.join().expect("reader thread");
    assert!(reads > 0);
    let last: Vec<String> = redis::cmd("MGET")
        .arg(&KEYS[..])
        .query(&mut writer)
        .unwrap();
    assert_eq!(last, vec![GENERATIONS.to_string(); 4]);
}

#[test]
fn incr_family_counts_from_zero_and_stores_decimal_strings() {
    let server = server();
    let mut con = server.connection();
    assert_eq!(q(&mut con, &["INCR", "n"]), Value::Int(1));
    assert_eq!(q(&mut con, &["INCR", "n"]), Value::Int(2));
    assert_eq!(q(&mut con, &["INCRBY", "n", "40"]), Value::Int(42));
    assert_eq!(q(&mut con, &["DECR", "n"]), Value::Int(41));
    assert_eq!(q(&mut con, &["DECRBY", "n", "50"]), Value::Int(-9));
    assert_eq!(q(&mut con, &["INCRBY", "n", "-1"]), Value::Int(-10));
    assert_eq!(q(&mut con, &["GET", "n"]), bulk("-10"));
    assert_eq!(q(&mut con, &["DECR", "fresh"]), Value::Int(-1));
    assert_eq!(q(&mut con, &["DECRBY", "fresh2", "5"]), Value::Int(-5));
    q(&mut con, &["SET", "s", "100"]);
    assert_eq!(q(&mut con, &["INCR", "s"]), Value::Int(101));
    q(&mut con, &["SET", "neg", "-7"]);
    assert_eq!(q(&mut con, &["INCR", "neg"]), Value::Int(-6));
    // INCR on a key holding an integer written by SET keeps working after APPEND.
    q(&mut con, &["SET", "grow", "1"]);
    q(&mut con, &["APPEND", "grow", "0"]);
    assert_eq!(q(&mut con, &["INCR", "grow"]), Value::Int(11));
}

#[test]
fn incr_refuses_non_integers_and_overflow_and_changes_nothing() {
    let server = server();
    let mut raw = server.raw();
    let not_int = error("ERR value is not an integer or out of range");
    for value in [
        "abc",
        "",
        " 1",
        "1 ",
        "01",
        "1.5",
        "+1",
        "9223372036854775808",
        "0x10",
    ] {
        raw.command(&["SET", "v", value]);
        assert_eq!(raw.command(&["INCR", "v"]), not_int, "INCR on {value:?}");
        assert_eq!(
            raw.command(&["GET", "v"]),
            Reply::Bulk(Some(value.as_bytes().to_vec()))
        );
    }
    assert_eq!(raw.command(&["INCRBY", "w", "x"]), not_int);
    assert_eq!(raw.command(&["INCRBY", "w", "1.0"]), not_int);
    assert_eq!(
        raw.command(&["DECRBY", "w", "99999999999999999999"]),
        not_int
    );
    assert_eq!(raw.command(&["EXISTS", "w"]), Reply::Integer(0));

    raw.command(&["SET", "max", "9223372036854775807"]);
    let overflow = error("ERR increment or decrement would overflow");
    assert_eq!(raw.command(&["INCR", "max"]), overflow);
    assert_eq!(raw.command(&["INCRBY", "max", "1"]), overflow);
    raw.command(&["SET", "min", "-9223372036854775808"]);
    assert_eq!(raw.command(&["DECR", "min"]), overflow);
    assert_eq!(raw.command(&["DECRBY", "min", "1"]), overflow);
    assert_eq!(
        raw.command(&["GET", "max"]),
        Reply::Bulk(Some(b"9223372036854775807".to_vec()))
    );
    assert_eq!(
        raw.command(&["GET", "min"]),
        Reply::Bulk(Some(b"-9223372036854775808".to_vec()))
    );
    // Redis 7 words DECRBY of i64::MIN specially (its negation overflows).
    raw.command(&["SET", "zero", "0"]);
    assert_eq!(
        raw.command(&["DECRBY", "zero", "-9223372036854775808"]),
        error("ERR decrement would overflow")
    );
    assert_eq!(
        raw.command(&["GET", "zero"]),
        Reply::Bulk(Some(b"0".to_vec()))
    );
}

#[test]
fn append_and_strlen_track_byte_length() {
    let server = server();
    let mut con = server.connection();
    assert_eq!(q(&mut con, &["STRLEN", "s"]), Value::Int(0));
    assert_eq!(q(&mut con, &["APPEND", "s", "hello"]), Value::Int(5));
    assert_eq!(q(&mut con, &["APPEND", "s", " world"]), Value::Int(11));
    assert_eq!(q(&mut con, &["APPEND", "s", ""]), Value::Int(11));
    assert_eq!(q(&mut con, &["GET", "s"]), bulk("hello world"));
    assert_eq!(q(&mut con, &["STRLEN", "s"]), Value::Int(11));
    // Length in bytes, not characters.
    q(&mut con, &["SET", "u", "héllo"]);
    assert_eq!(q(&mut con, &["STRLEN", "u"]), Value::Int(6));
}

#[test]
fn many_keys_written_by_several_clients_are_all_readable() {
    let server = server();
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let mut con = server.connection();
            std::thread::spawn(move || {
                let mut written = HashMap::new();
                for i in 0..250 {
                    let (k, v) = (format!("c{t}:k{i}"), format!("value-{t}-{i}"));
                    let _: () = redis::cmd("SET").arg(&k).arg(&v).query(&mut con).unwrap();
                    written.insert(k, v);
                }
                written
            })
        })
        .collect();
    let mut expected = HashMap::new();
    for writer in writers {
        expected.extend(writer.join().expect("writer"));
    }
    let mut con = server.connection();
    assert_eq!(q(&mut con, &["DBSIZE"]), Value::Int(1000));
    for (k, v) in &expected {
        let got: Option<String> = redis::cmd("GET").arg(k).query(&mut con).unwrap();
        assert_eq!(got.as_deref(), Some(v.as_str()), "key {k}");
    }
}
