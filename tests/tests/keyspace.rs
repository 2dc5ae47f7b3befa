//! Keyspace commands: DBSIZE, SCAN (MATCH, COUNT), KEYS, FLUSHALL.

use std::collections::{BTreeMap, BTreeSet};

use rand::Rng;
use walship_tests::resp::{RawConn, Reply};
use walship_tests::TestServer;

fn server() -> TestServer {
    TestServer::start().expect("start walship")
}

/// Runs a full SCAN and returns every key in the order returned, panicking on
/// a malformed reply or an endless cursor.
fn scan_all(raw: &mut RawConn, extra: &[&str]) -> Vec<String> {
    let mut keys = Vec::new();
    let mut cursor = "0".to_string();
    for _round in 0..1_000_000 {
        let mut args = vec!["SCAN", &cursor];
        args.extend_from_slice(extra);
        let reply = raw.command(&args);
        let items = reply.items();
        assert_eq!(items.len(), 2, "SCAN reply is [cursor, keys]: {reply:?}");
        let next = match &items[0] {
            Reply::Bulk(Some(c)) => String::from_utf8(c.clone()).unwrap(),
            other => panic!("SCAN cursor must be a bulk string, got {other:?}"),
        };
        next.parse::<u64>()
            .unwrap_or_else(|_| panic!("cursor {next:?} is not a number"));
        keys.extend(items[1].items().iter().map(Reply::text));
        if next == "0" {
            return keys;
        }
        cursor = next;
    }
    panic!("SCAN did not finish");
}

fn assert_each_once(scanned: &[String], expected: &BTreeSet<String>, what: &str) {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for key in scanned {
        *counts.entry(key).or_default() += 1;
    }
    let repeated: Vec<_> = counts.iter().filter(|(_, &n)| n > 1).collect();
    assert!(
        repeated.is_empty(),
        "{what}: keys returned more than once: {repeated:?}"
    );
    let got: BTreeSet<String> = scanned.iter().cloned().collect();
    let missing: Vec<_> = expected.difference(&got).collect();
    let extra: Vec<_> = got.difference(expected).collect();
    assert!(
        missing.is_empty(),
        "{what}: keys never returned: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "{what}: keys that should not match: {extra:?}"
    );
}

#[test]
fn dbsize_counts_keys() {
    let server = server();
    let mut raw = server.raw();
    assert_eq!(raw.command(&["DBSIZE"]), Reply::Integer(0));
    raw.command(&["MSET", "a", "1", "b", "2"]);
    raw.command(&["SET", "a", "3"]);
    assert_eq!(raw.command(&["DBSIZE"]), Reply::Integer(2));
    raw.command(&["DEL", "a"]);
    assert_eq!(raw.command(&["DBSIZE"]), Reply::Integer(1));
}

#[test]
fn scan_iterates_every_key_exactly_once() {
    let mut rng = walship_tests::seed::rng("scan_iterates_every_key_exactly_once");
    let server = server();
    let mut raw = server.raw();
    let mut all = BTreeSet::new();
    let mut users = BTreeSet::new();
    for i in 0..3000 {
        let key = if rng.gen_bool(0.3) {
            let k = format!("user:{i}:{}", rng.gen::<u32>());
            users.insert(k.clone());
            k
        } else {
            format!("item:{i}:{}", rng.gen::<u32>())
        };
        all.insert(key.clone());
    }
    // Load with one pipelined batch.
    let keys: Vec<&String> = all.iter().collect();
    for chunk in keys.chunks(500) {
        let mut args: Vec<&str> = vec!["MSET"];
        for k in chunk {
            args.push(k);
            args.push("x");
        }
        assert_eq!(raw.command(&args), Reply::Simple("OK".into()));
    }
    assert_eq!(raw.command(&["DBSIZE"]), Reply::Integer(all.len() as i64));

    assert_each_once(&scan_all(&mut raw, &[]), &all, "SCAN");
    let count: u32 = rng.gen_range(1..50);
    eprintln!("COUNT {count}");
    assert_each_once(
        &scan_all(&mut raw, &["COUNT", &count.to_string()]),
        &all,
        "SCAN COUNT",
    );
    assert_each_once(
        &scan_all(&mut raw, &["MATCH", "user:*"]),
        &users,
        "SCAN MATCH user:*",
    );
    assert_each_once(
        &scan_all(&mut raw, &["MATCH", "user:*", "COUNT", "7"]),
        &users,
        "SCAN MATCH user:* COUNT 7",
    );
    assert_each_once(
        &scan_all(&mut raw, &["COUNT", "100000", "MATCH", "*"]),
        &all,
        "SCAN COUNT 100000 MATCH *",
    );
    assert_each_once(
        &scan_all(&mut raw, &["MATCH", "nothing:*"]),
        &BTreeSet::new(),
        "SCAN MATCH nothing:*",
    );
}

#[test]
fn scan_on_an_empty_database_ends_at_once() {
    let server = server();
    let mut raw = server.raw();
    let reply = raw.command(&["SCAN", "0"]);
    assert_eq!(
        reply,
        Reply::Array(Some(vec![
            Reply::Bulk(Some(b"0".to_vec())),
            Reply::Array(Some(vec![]))
        ]))
    );
}

#[test]
fn scan_refuses_bad_cursor_and_count() {
    let server = server();
    let mut raw = server.raw();
    raw.command(&["SET", "k", "v"]);
    assert_eq!(
        raw.command(&["SCAN", "abc"]),
        Reply::Error("ERR invalid cursor".into())
    );
    assert_eq!(
        raw.command(&["SCAN", "0", "COUNT", "0"]),
        Reply::Error("ERR syntax error".into())
    );
    assert_eq!(
        raw.command(&["SCAN", "0", "COUNT", "x"]),
        Reply::Error("ERR value is not an integer or out of range".into())
    );
    assert_eq!(
        raw.command(&["SCAN", "0", "BOGUS", "1"]),
        Reply::Error("ERR syntax error".into())
    );
}

#[test]
fn keys_matches_redis_glob_patterns() {
    let server = server();
    let mut raw = server.raw();
    for k in [
        "hello", "hallo", "hxllo", "hllo", "heeeello", "h*llo", "other",
    ] {
        raw.command(&["SET", k, "1"]);
    }
    let keys = |raw: &mut RawConn, pattern: &str| -> BTreeSet<String> {
        raw.command(&["KEYS", pattern])
            .items()
            .iter()
            .map(Reply::text)
            .collect()
    };
    let set = |ks: &[&str]| -> BTreeSet<String> { ks.iter().map(|k| k.to_string()).collect() };
    assert_eq!(
        keys(&mut raw, "*"),
        set(&["hello", "hallo", "hxllo", "hllo", "heeeello", "h*llo", "other"])
    );
    assert_eq!(
        keys(&mut raw, "h?llo"),
        set(&["hello", "hallo", "hxllo", "h*llo"])
    );
    assert_eq!(
        keys(&mut raw, "h*llo"),
        set(&["hello", "hallo", "hxllo", "hllo", "heeeello", "h*llo"])
    );
    assert_eq!(keys(&mut raw, "h[ae]llo"), set(&["hello", "hallo"]));
    assert_eq!(
        keys(&mut raw, "h[^e]llo"),
        set(&["hallo", "hxllo", "h*llo"])
    );
    assert_eq!(keys(&mut raw, "h[a-b]llo"), set(&["hallo"]));
    assert_eq!(keys(&mut raw, "h\\*llo"), set(&["h*llo"]));
    assert_eq!(keys(&mut raw, "nomatch*"), set(&[]));
    assert_eq!(keys(&mut raw, "other"), set(&["other"]));
}

#[test]
fn flushall_removes_every_key() {
    let server = server();
    let mut raw = server.raw();
    for i in 0..100 {
        raw.command(&["SET", &format!("k{i}"), "v"]);
    }
    assert_eq!(raw.command(&["FLUSHALL"]), Reply::Simple("OK".into()));
    assert_eq!(raw.command(&["DBSIZE"]), Reply::Integer(0));
    assert_eq!(raw.command(&["GET", "k1"]), Reply::Bulk(None));
    assert_eq!(raw.command(&["KEYS", "*"]), Reply::Array(Some(vec![])));
    // Writes after FLUSHALL work as usual.
    raw.command(&["SET", "k1", "again"]);
    assert_eq!(raw.command(&["DBSIZE"]), Reply::Integer(1));
}
