//! Streaming replication through the real binary: standbys converge to the
//! primary's exact state under concurrent load, resume after a restart
//! without a base backup, get a base backup when the WAL they need is gone,
//! serve read-your-writes, refuse writes, and can be promoted.

use std::collections::BTreeMap;
use std::thread;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use walship_tests::cluster::{
    assert_same_keyspace, info, keyspace, keyspace_diff, start_primary, start_standby,
    wait_caught_up, wait_streaming, wait_until, CONVERGE_TIMEOUT,
};
use walship_tests::resp::Reply;
use walship_tests::seed::seed;

const CLIENTS: usize = 8;
const OPS_PER_CLIENT: usize = 300;
const KEYS_PER_CLIENT: u32 = 60;
const COUNTERS: u32 = 16;

/// What one client's operations leave behind: its own keys' final values
/// (keys are per client, so their order is the client's own), and how often
/// it incremented each shared counter (INCR commutes across clients).
#[derive(Default)]
struct ClientModel {
    keys: BTreeMap<Vec<u8>, Vec<u8>>,
    increments: BTreeMap<u32, i64>,
}

fn run_client(port_con: redis::Connection, client: usize, seed: u64) -> ClientModel {
    let mut con = port_con;
    let mut rng = StdRng::seed_from_u64(seed ^ (client as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut model = ClientModel::default();
    let key = |n: u32| format!("c{client}:k{n}").into_bytes();
    for op in 0..OPS_PER_CLIENT {
        match rng.gen_range(0..10) {
            0..=3 => {
                let k = key(rng.gen_range(0..KEYS_PER_CLIENT));
                let len = rng.gen_range(0..200);
                let v: Vec<u8> = (0..len).map(|_| rng.gen_range(b'a'..=b'z')).collect();
                let _: () = redis::cmd("SET")
                    .arg(&k)
                    .arg(&v)
                    .query(&mut con)
                    .expect("SET");
                model.keys.insert(k, v);
            }
            4 | 5 => {
                let n = rng.gen_range(1..=3);
                let keys: Vec<Vec<u8>> = (0..n)
                    .map(|_| key(rng.gen_range(0..KEYS_PER_CLIENT)))
                    .collect();
                let removed: i64 = redis::cmd("DEL").arg(&keys).query(&mut con).expect("DEL");
                let mut distinct = keys.clone();
                distinct.sort();
                distinct.dedup();
                let expected = distinct
                    .iter()
                    .filter(|k| model.keys.contains_key(*k))
                    .count();
                assert_eq!(
                    removed as usize, expected,
                    "client {client} op {op}: DEL {keys:?}"
                );
                for k in &keys {
                    model.keys.remove(k);
                }
            }
            6 | 7 => {
                let n = rng.gen_range(1..=4);
                let mut cmd = redis::cmd("MSET");
                for _ in 0..n {
                    let k = key(rng.gen_range(0..KEYS_PER_CLIENT));
                    let v = format!("m{op}-{}", rng.gen::<u32>()).into_bytes();
                    cmd.arg(&k).arg(&v);
                    model.keys.insert(k, v);
                }
                let _: () = cmd.query(&mut con).expect("MSET");
            }
            _ => {
                let c = rng.gen_range(0..COUNTERS);
                let _: i64 = redis::cmd("INCR")
                    .arg(format!("counter:{c}"))
                    .query(&mut con)
                    .expect("INCR");
                *model.increments.entry(c).or_default() += 1;
            }
        }
    }
    model
}

#[test]
fn standbys_converge_to_identical_state_under_concurrent_load() {
    let seed = seed("standbys_converge_to_identical_state_under_concurrent_load");
    let primary = start_primary(&["--synchronous-standby-names", "FIRST 1 (s1)"]);
    let s1 = start_standby(&primary, "s1", &[]);
    let s2 = start_standby(&primary, "s2", &[]);
    wait_caught_up(&primary, &[&s1, &s2]);

    let handles: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let con = primary.connection();
            thread::spawn(move || run_client(con, client, seed))
        })
        .collect();
    let mut expected = BTreeMap::new();
    let mut counters: BTreeMap<u32, i64> = BTreeMap::new();
    for handle in handles {
        let model = handle.join().expect("a client thread panicked");
        expected.extend(model.keys);
        for (c, n) in model.increments {
            *counters.entry(c).or_default() += n;
        }
    }
    for (c, n) in counters {
        expected.insert(
            format!("counter:{c}").into_bytes(),
            n.to_string().into_bytes(),
        );
    }

    wait_caught_up(&primary, &[&s1, &s2]);
    let primary_info = info(&primary);
    assert_eq!(primary_info.num("connected_slaves"), 2, "{primary_info:#?}");
    for (name, sync_state) in [("s1", "sync"), ("s2", "async")] {
        let line = primary_info
            .slave_named(name)
            .unwrap_or_else(|| panic!("no {name}: {primary_info:#?}"));
        assert_eq!(line["state"], "online", "{primary_info:#?}");
        assert_eq!(line["sync_state"], sync_state, "{primary_info:#?}");
    }
    let on_primary = keyspace(&primary);
    assert!(
        on_primary == expected,
        "the primary's keyspace differs from what the clients wrote (seed {seed}): {}",
        keyspace_diff(&on_primary, &expected)
    );
    for (name, standby) in [("s1", &s1), ("s2", &s2)] {
        let on_standby = keyspace(standby);
        assert!(
            on_standby == on_primary,
            "standby {name} differs from the primary (seed {seed}): {}",
            keyspace_diff(&on_standby, &on_primary)
        );
    }
}

fn set(server: &walship_tests::TestServer, key: &str, value: &str) {
    let mut con = server.connection();
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query(&mut con)
        .expect("SET");
}

fn write_batch(server: &walship_tests::TestServer, prefix: &str, count: usize, value_len: usize) {
    let mut con = server.connection();
    let value = "x".repeat(value_len);
    for i in 0..count {
        let _: () = redis::cmd("SET")
            .arg(format!("{prefix}:{i}"))
            .arg(format!("{value}{i}"))
            .query(&mut con)
            .expect("SET");
    }
}

#[test]
fn standby_restart_resumes_without_base_backup() {
    let primary = start_primary(&[]);
    let mut s1 = start_standby(&primary, "s1", &[]);
    write_batch(&primary, "before", 200, 50);
    wait_caught_up(&primary, &[&s1]);
    assert_eq!(
        info(&s1).num("walship_base_backups"),
        1,
        "the first start of an empty standby takes a base backup"
    );

    s1.terminate();
    write_batch(&primary, "while-down", 200, 50);
    s1.restart().expect("restarting the standby");
    write_batch(&primary, "after", 50, 50);
    wait_caught_up(&primary, &[&s1]);

    let standby_info = info(&s1);
    assert_eq!(
        standby_info.num("walship_base_backups"),
        0,
        "a restarted standby resumes from its own WAL end: {standby_info:#?}\n{}",
        s1.log_tail()
    );
    let (a, b) = (keyspace(&primary), keyspace(&s1));
    assert!(
        a == b,
        "standby differs from the primary: {}",
        keyspace_diff(&b, &a)
    );
    assert_eq!(a.len(), 450);

    // A crash (SIGKILL) rather than a clean stop resumes the same way.
    s1.kill();
    write_batch(&primary, "after-crash", 100, 50);
    s1.restart().expect("restarting the standby after SIGKILL");
    wait_caught_up(&primary, &[&s1]);
    assert_eq!(
        info(&s1).num("walship_base_backups"),
        0,
        "{}",
        s1.log_tail()
    );
    let (a, b) = (keyspace(&primary), keyspace(&s1));
    assert!(
        a == b,
        "standby differs from the primary: {}",
        keyspace_diff(&b, &a)
    );
}

/// A primary with tiny segments and frequent checkpoints whose slots may
/// hold back at most 128 KiB of WAL.
const SMALL_WAL: &[&str] = &[
    "--segment-size",
    "64KiB",
    "--checkpoint-every",
    "256KiB",
    "--max-slot-wal-keep-size",
    "128KiB",
];

/// Stops `s1`, writes about 1 MiB on the primary and checkpoints, so the WAL
/// `s1` needs is past the slot cap and removed.
fn outrun_stopped_standby(primary: &walship_tests::TestServer, s1: &mut walship_tests::TestServer) {
    write_batch(primary, "before", 50, 100);
    wait_caught_up(primary, &[&*s1]);
    s1.terminate();
    write_batch(primary, "while-down", 1000, 1000);
    save(primary);
}

#[test]
fn slot_cap_invalidates_slot() {
    let primary = start_primary(SMALL_WAL);
    let mut s1 = start_standby(&primary, "s1", &[]);
    // The slot is made when the primary starts s1's base backup, after the
    // standby is up: wait for the stream before looking.
    wait_caught_up(&primary, &[&s1]);
    let slot = info(&primary).slot("s1");
    assert_eq!(
        slot.as_ref().map(|s| s["invalidated"].as_str()),
        Some("0"),
        "a connected standby has a valid slot: {:#?}",
        info(&primary)
    );
    outrun_stopped_standby(&primary, &mut s1);
    wait_until(
        CONVERGE_TIMEOUT,
        || {
            info(&primary)
                .slot("s1")
                .is_some_and(|s| s["invalidated"] == "1")
        },
        || {
            format!(
                "slot s1 invalidated after outrunning its cap: {:#?}\n{}",
                info(&primary),
                primary.log_tail()
            )
        },
    );
    assert!(info(&primary).num("walship_slots") >= 1);
}

#[test]
fn removed_wal_triggers_base_backup() {
    let primary = start_primary(SMALL_WAL);
    let mut s1 = start_standby(&primary, "s1", &[]);
    outrun_stopped_standby(&primary, &mut s1);

    s1.restart().expect("restarting the standby");
    wait_caught_up(&primary, &[&s1]);
    let standby_info = info(&s1);
    assert_eq!(
        standby_info.num("walship_base_backups"),
        1,
        "the WAL the standby needed was removed, so it gets a base backup: {standby_info:#?}\n{}",
        s1.log_tail()
    );
    let (a, b) = (keyspace(&primary), keyspace(&s1));
    assert_eq!(a.len(), 1050);
    assert!(
        a == b,
        "standby differs from the primary: {}",
        keyspace_diff(&b, &a)
    );

    // And it streams normally afterwards.
    set(&primary, "after-backup", "yes");
    wait_caught_up(&primary, &[&s1]);
    let mut con = s1.connection();
    let v: Option<String> = redis::cmd("GET")
        .arg("after-backup")
        .query(&mut con)
        .unwrap();
    assert_eq!(v.as_deref(), Some("yes"));
}

/// A standby that connects to an idle primary has nothing to catch up on:
/// the primary must report it `online` (PostgreSQL's `streaming`) without
/// waiting for a write to happen.
/// A standby's `--max-value-size` bounds its clients, not the primary's
/// stream: a value the primary accepted reaches a standby configured with a
/// smaller limit (as Redis applies `proto-max-bulk-len` to clients, never
/// to its master). Before the fix the standby refused the record and
/// reconnected for ever.
#[test]
fn a_standby_with_a_smaller_value_limit_still_replicates_larger_values() {
    let primary = start_primary(&["--synchronous-standby-names", "FIRST 1 (s1)"]);
    let s1 = start_standby(&primary, "s1", &["--max-value-size", "1KiB"]);
    wait_caught_up(&primary, &[&s1]);
    let big = "v".repeat(64 << 10);
    set(&primary, "big", &big);
    set(&primary, "after", "1");
    wait_caught_up(&primary, &[&s1]);
    assert_same_keyspace(&primary, &s1);
    assert_eq!(
        s1.raw().command(&["GET", "big"]),
        Reply::Bulk(Some(big.into_bytes()))
    );
    // Its own clients still get the limit (a standby refuses writes anyway).
    let mut con = s1.raw();
    assert!(matches!(
        con.command(&["SET", "x", &"v".repeat(2048)]),
        Reply::Error(_)
    ));
}

/// SIGTERM drains the clients, not the standbys' replication streams: the
/// primary does not wait out its drain timeout because a standby is
/// connected (it used to, logging "connections still busy"), exits 0, and
/// the standby follows it again after the restart.
#[test]
fn sigterm_does_not_wait_for_replication_streams() {
    let mut primary = start_primary(&["--synchronous-standby-names", "FIRST 1 (s1)"]);
    let s1 = start_standby(&primary, "s1", &[]);
    write_batch(&primary, "before", 50, 10);
    wait_caught_up(&primary, &[&s1]);
    let status = primary.terminate();
    assert!(
        status.success(),
        "SIGTERM exit: {status}\n{}",
        primary.log_tail()
    );
    let log = primary.log();
    assert!(
        !log.contains("still busy"),
        "the drain waited for the replication stream:\n{}",
        primary.log_tail()
    );
    primary.restart().expect("restart the primary");
    write_batch(&primary, "after", 50, 10);
    wait_caught_up(&primary, &[&s1]);
    assert_same_keyspace(&primary, &s1);
    assert_eq!(keyspace(&primary).len(), 100);
}

/// A standby started on an empty data directory while its primary is down
/// holds no state of the cluster: it answers reads with LOADING (not with
/// the nils of an empty table), says it is not consistent, and refuses
/// promotion, which would have made an empty primary of a new cluster.
/// Once the primary is back it gets its base backup and serves the data.
#[test]
fn a_standby_without_its_first_base_backup_serves_nothing_and_cannot_be_promoted() {
    let mut primary = start_primary(&[]);
    set(&primary, "important", "1");
    let _ = primary.terminate();
    let s1 = start_standby(&primary, "s1", &[]);
    let mut con = s1.raw();
    match con.command(&["GET", "important"]) {
        Reply::Error(e) => assert!(
            e.starts_with("LOADING") && e.contains("base backup"),
            "GET on a standby without a base backup: {e}"
        ),
        other => panic!("GET on a standby without a base backup replied {other:?}"),
    }
    assert_eq!(info(&s1).get("walship_consistent"), Some("0"));
    let loading = |con: &mut walship_tests::resp::RawConn| {
        let text = con.command(&["INFO", "persistence"]).text();
        text.lines()
            .find_map(|l| l.strip_prefix("loading:"))
            .map(str::to_string)
    };
    assert_eq!(
        loading(&mut con).as_deref(),
        Some("1"),
        "Redis's loading flag"
    );
    assert!(
        matches!(con.command(&["WALSHIP", "GETLSN", "important"]), Reply::Error(e) if e.starts_with("LOADING")),
        "GETLSN is a read like GET"
    );
    match con.command(&["REPLICAOF", "NO", "ONE"]) {
        Reply::Error(e) => assert!(
            e.contains("cannot be promoted") && e.contains("base backup"),
            "promotion refused with: {e}"
        ),
        other => panic!("promoting a standby without a base backup replied {other:?}"),
    }
    assert!(
        matches!(con.command(&["GET", "important"]), Reply::Error(e) if e.starts_with("LOADING")),
        "after the refused promotion it is still a standby waiting for its base backup"
    );
    primary.restart().expect("restart the primary");
    wait_caught_up(&primary, &[&s1]);
    assert_eq!(
        s1.raw().command(&["GET", "important"]),
        Reply::Bulk(Some(b"1".to_vec()))
    );
    assert_eq!(info(&s1).get("walship_consistent"), Some("1"));
    assert_eq!(loading(&mut s1.raw()).as_deref(), Some("0"));
}

#[test]
fn idle_caught_up_standby_is_reported_online() {
    let primary = start_primary(&["--synchronous-standby-names", "FIRST 1 (s1)"]);
    let s1 = start_standby(&primary, "s1", &[]);
    wait_caught_up(&primary, &[&s1]);
    wait_streaming(&primary, "s1");
    let line = info(&primary).slave_named("s1").expect("s1 listed");
    assert_eq!(line["sync_state"], "sync");
}

#[test]
fn read_your_writes_on_a_standby() {
    let primary = start_primary(&[]);
    let standby = start_standby(&primary, "reader", &[]);
    wait_caught_up(&primary, &[&standby]);
    let mut writer = primary.raw();
    let mut reader = standby.raw();
    for i in 0..50 {
        let value = format!("v{i}");
        assert_eq!(
            writer.command(&["SET", "ryw", &value]),
            Reply::Simple("OK".into())
        );
        let lsn = match writer.command(&["WALSHIP", "LSN"]) {
            Reply::Integer(n) if n > 0 => n,
            other => panic!("WALSHIP LSN replied {other:?}"),
        };
        let applied = match reader.command(&["WALSHIP", "WAITLSN", &lsn.to_string(), "5000"]) {
            Reply::Integer(applied) => applied,
            other => panic!(
                "WALSHIP WAITLSN {lsn} replied {other:?}\n{}",
                standby.log_tail()
            ),
        };
        assert!(applied >= lsn, "WAITLSN {lsn} replied {applied}");
        match reader.command(&["WALSHIP", "GETLSN", "ryw"]) {
            Reply::Array(Some(items)) => {
                assert_eq!(items[0], Reply::Bulk(Some(value.clone().into_bytes())));
                match items[1] {
                    Reply::Integer(at) => assert!(
                        at > 0 && at <= applied,
                        "GETLSN LSN {at}, applied {applied}"
                    ),
                    ref other => panic!("GETLSN LSN {other:?}"),
                }
            }
            other => panic!("WALSHIP GETLSN on the standby replied {other:?}"),
        }
        assert_eq!(
            reader.command(&["GET", "ryw"]),
            Reply::Bulk(Some(value.clone().into_bytes())),
            "after WAITLSN {lsn} the standby must show the write"
        );
    }
    // An LSN nobody wrote yet times out with an error rather than a stale yes.
    let end = info(&primary).num("master_repl_offset");
    let far = (end + 1_000_000).to_string();
    match reader.command(&["WALSHIP", "WAITLSN", &far, "200"]) {
        Reply::Error(e) => assert!(e.starts_with("TIMEOUT"), "{e}"),
        other => panic!("WAITLSN for a future LSN replied {other:?}"),
    }
}

#[test]
fn readonly_standby_and_role() {
    let primary = start_primary(&[]);
    let standby = start_standby(&primary, "s1", &[]);
    set(&primary, "k", "v");
    wait_caught_up(&primary, &[&standby]);

    let mut con = standby.raw();
    let readonly = Reply::Error("READONLY You can't write against a read only replica.".into());
    for cmd in [
        vec!["SET", "k", "other"],
        vec!["DEL", "k"],
        vec!["INCR", "n"],
        vec!["MSET", "a", "1", "b", "2"],
    ] {
        assert_eq!(con.command(&cmd), readonly, "{cmd:?} on a standby");
    }
    assert_eq!(con.command(&["GET", "k"]), Reply::Bulk(Some(b"v".to_vec())));
    // REPLICAOF naming the node itself is refused with that reason, and
    // changes nothing.
    let own = standby.port().to_string();
    for host in ["127.0.0.1", "localhost"] {
        match primary
            .raw()
            .command(&["REPLICAOF", host, &primary.port().to_string()])
        {
            Reply::Error(e) => assert!(e.contains("itself"), "{e}"),
            other => panic!("REPLICAOF {host} <own port> replied {other:?}"),
        }
        match con.command(&["REPLICAOF", host, &own]) {
            Reply::Error(e) => assert!(e.contains("itself"), "{e}"),
            other => panic!("REPLICAOF {host} <own port> on the standby replied {other:?}"),
        }
    }
    assert_eq!(info(&primary).field("role"), "master");
    assert_eq!(info(&standby).field("master_link_status"), "up");
    // WAIT is refused, as Redis refuses it on a replica: no writes to wait for.
    match con.command(&["WAIT", "1", "10"]) {
        Reply::Error(e) => assert!(e.contains("replica"), "{e}"),
        other => panic!("WAIT on a standby replied {other:?}"),
    }

    // ROLE on the primary: master, offset, [[ip, port, offset]].
    let end = info(&primary).num("master_repl_offset");
    match primary.raw().command(&["ROLE"]) {
        Reply::Array(Some(items)) => {
            assert_eq!(items.len(), 3, "{items:?}");
            assert_eq!(items[0].text(), "master");
            assert_eq!(items[1], Reply::Integer(end as i64));
            let replicas = items[2].items();
            assert_eq!(replicas.len(), 1, "{items:?}");
            let r = replicas[0].items();
            assert_eq!(r[0].text(), "127.0.0.1");
            assert_eq!(r[1].text(), standby.port().to_string());
            assert_eq!(r[2].text(), end.to_string());
        }
        other => panic!("ROLE on the primary replied {other:?}"),
    }
    // ROLE on the standby: slave, host, port, state, offset.
    match con.command(&["ROLE"]) {
        Reply::Array(Some(items)) => {
            assert_eq!(items.len(), 5, "{items:?}");
            assert_eq!(items[0].text(), "slave");
            assert_eq!(items[1].text(), "127.0.0.1");
            assert_eq!(items[2], Reply::Integer(primary.port() as i64));
            assert_eq!(items[3].text(), "connected");
            assert_eq!(items[4], Reply::Integer(end as i64));
        }
        other => panic!("ROLE on the standby replied {other:?}"),
    }
    let standby_info = info(&standby);
    assert_eq!(standby_info.field("role"), "slave");
    assert_eq!(standby_info.field("master_host"), "127.0.0.1");
    assert_eq!(standby_info.num("master_port"), primary.port() as u64);
    assert_eq!(info(&primary).field("role"), "master");

    // Promotion.
    let epoch_before = standby_info.num("walship_epoch");
    let reply = con.command(&["REPLICAOF", "NO", "ONE"]);
    let text = match &reply {
        Reply::Simple(s) => s.clone(),
        other => panic!("REPLICAOF NO ONE replied {other:?}"),
    };
    let rest = text
        .strip_prefix("OK promoted: epoch ")
        .unwrap_or_else(|| panic!("REPLICAOF NO ONE replied {text:?}"));
    let (epoch, lsn) = rest
        .split_once(" starts at LSN ")
        .expect("epoch E starts at LSN L");
    let epoch: u64 = epoch.parse().expect("epoch number");
    let lsn: u64 = lsn.parse().expect("LSN number");
    assert!(
        epoch > epoch_before,
        "promotion starts a newer epoch: {epoch} after {epoch_before}"
    );
    assert!(
        lsn >= end,
        "the new epoch starts at or after the replicated WAL end ({lsn} < {end})"
    );
    let promoted = info(&standby);
    assert_eq!(promoted.field("role"), "master");
    assert_eq!(promoted.num("walship_epoch"), epoch);
    assert_eq!(
        con.command(&["SET", "k", "new"]),
        Reply::Simple("OK".into())
    );
    assert_eq!(
        con.command(&["GET", "k"]),
        Reply::Bulk(Some(b"new".to_vec()))
    );
    match con.command(&["ROLE"]) {
        Reply::Array(Some(items)) => assert_eq!(items[0].text(), "master"),
        other => panic!("ROLE after promotion replied {other:?}"),
    }
    assert_eq!(
        con.command(&["REPLICAOF", "NO", "ONE"]),
        Reply::Simple("OK Already a primary".into())
    );
    // The old primary is untouched.
    assert_eq!(
        primary.raw().command(&["GET", "k"]),
        Reply::Bulk(Some(b"v".to_vec()))
    );
}

#[test]
fn standby_joining_during_load_gets_a_consistent_base_backup() {
    let seed = seed("standby_joining_during_load_gets_a_consistent_base_backup");
    let primary = start_primary(&[]);
    write_batch(&primary, "initial", 300, 100);
    let handles: Vec<_> = (0..4)
        .map(|client| {
            let con = primary.connection();
            thread::spawn(move || run_client(con, client, seed))
        })
        .collect();
    // Joins while the clients write: its base backup and the WAL after it
    // must add up to exactly the primary's state.
    let late = start_standby(&primary, "late", &[]);
    let mut expected = keyspace_of_batch("initial", 300, 100);
    let mut counters: BTreeMap<u32, i64> = BTreeMap::new();
    for handle in handles {
        let model = handle.join().expect("a client thread panicked");
        expected.extend(model.keys);
        for (c, n) in model.increments {
            *counters.entry(c).or_default() += n;
        }
    }
    for (c, n) in counters {
        expected.insert(
            format!("counter:{c}").into_bytes(),
            n.to_string().into_bytes(),
        );
    }
    wait_caught_up(&primary, &[&late]);
    assert_eq!(info(&late).num("walship_base_backups"), 1);
    let on_primary = keyspace(&primary);
    assert!(
        on_primary == expected,
        "seed {seed}: {}",
        keyspace_diff(&on_primary, &expected)
    );
    let on_standby = keyspace(&late);
    assert!(
        on_standby == on_primary,
        "seed {seed}: {}",
        keyspace_diff(&on_standby, &on_primary)
    );
}

fn keyspace_of_batch(prefix: &str, count: usize, value_len: usize) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let value = "x".repeat(value_len);
    (0..count)
        .map(|i| {
            (
                format!("{prefix}:{i}").into_bytes(),
                format!("{value}{i}").into_bytes(),
            )
        })
        .collect()
}

#[test]
fn primary_restart_starts_a_new_epoch_and_standbys_follow() {
    let mut primary = start_primary(&[]);
    let s1 = start_standby(&primary, "s1", &[]);
    write_batch(&primary, "before", 100, 20);
    wait_caught_up(&primary, &[&s1]);
    let epoch_before = info(&primary).num("walship_epoch");
    let port = primary.port();

    primary.terminate();
    primary.restart().expect("restarting the primary");
    assert_eq!(
        primary.port(),
        port,
        "the primary came back on another port; the standby cannot follow"
    );
    let epoch_after = info(&primary).num("walship_epoch");
    assert!(
        epoch_after > epoch_before,
        "a primary start begins a new epoch ({epoch_before} -> {epoch_after})"
    );

    write_batch(&primary, "after", 100, 20);
    wait_caught_up(&primary, &[&s1]);
    let standby_info = info(&s1);
    assert_eq!(
        standby_info.num("walship_epoch"),
        epoch_after,
        "{standby_info:#?}"
    );
    assert_eq!(
        standby_info.num("walship_base_backups"),
        1,
        "only the standby's first (empty) start took a base backup; reconnecting to the restarted primary needs none: {standby_info:#?}\n{}",
        s1.log_tail()
    );
    let (a, b) = (keyspace(&primary), keyspace(&s1));
    assert_eq!(a.len(), 200);
    assert!(a == b, "{}", keyspace_diff(&b, &a));
}

#[test]
fn standby_follows_a_promoted_standby() {
    let mut primary = start_primary(&[]);
    let s1 = start_standby(&primary, "s1", &[]);
    let s2 = start_standby(&primary, "s2", &[]);
    write_batch(&primary, "before", 100, 20);
    wait_caught_up(&primary, &[&s1, &s2]);

    // The primary dies; s1 is promoted and s2 re-pointed at it.
    primary.kill();
    let mut con = s1.raw();
    match con.command(&["REPLICAOF", "NO", "ONE"]) {
        Reply::Simple(s) if s.starts_with("OK promoted") => {}
        other => panic!("REPLICAOF NO ONE replied {other:?}"),
    }
    let port = s1.port().to_string();
    assert_eq!(
        s2.raw().command(&["REPLICAOF", "127.0.0.1", &port]),
        Reply::Simple("OK".into())
    );
    assert_eq!(
        con.command(&["SET", "after-failover", "yes"]),
        Reply::Simple("OK".into())
    );
    wait_caught_up(&s1, &[&s2]);

    let follower = info(&s2);
    assert_eq!(follower.field("role"), "slave");
    assert_eq!(follower.num("master_port"), s1.port() as u64);
    assert_eq!(
        follower.num("walship_epoch"),
        info(&s1).num("walship_epoch"),
        "{follower:#?}"
    );
    assert_eq!(
        follower.num("walship_base_backups"),
        0,
        "s2 held a prefix of the new primary's history and continues without a base backup: {follower:#?}\n{}",
        s2.log_tail()
    );
    let (a, b) = (keyspace(&s1), keyspace(&s2));
    assert_eq!(a.len(), 101);
    assert!(a == b, "{}", keyspace_diff(&b, &a));
}

/// Checkpoints `server` has taken (`INFO persistence`).
fn checkpoints(server: &walship_tests::TestServer) -> u64 {
    let mut con = server.connection();
    let text: String = redis::cmd("INFO")
        .arg("persistence")
        .query(&mut con)
        .expect("INFO persistence");
    text.lines()
        .find_map(|l| l.strip_prefix("checkpoints:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no checkpoints field in {text}"))
}

/// Takes a checkpoint on `server` with SAVE.
fn save(server: &walship_tests::TestServer) {
    let mut con = server.connection();
    let reply: String = redis::cmd("SAVE").query(&mut con).expect("SAVE");
    assert_eq!(reply, "OK");
}

/// A primary with a checkpoint and, after it, less WAL than the
/// checkpoint holds.
fn primary_with_a_checkpoint_and_a_little_wal() -> walship_tests::TestServer {
    let primary = start_primary(&[]);
    write_batch(&primary, "before", 400, 200);
    save(&primary);
    write_batch(&primary, "after", 20, 200);
    primary
}

/// Starts an empty standby `name` of `primary`, waits until it has caught
/// up through one base backup with the primary's keyspace, and returns how
/// many checkpoints the primary took meanwhile.
fn seed_new_standby(primary: &walship_tests::TestServer, name: &str) -> u64 {
    let taken = checkpoints(primary);
    let standby = start_standby(primary, name, &[]);
    wait_caught_up(primary, &[&standby]);
    assert_eq!(info(&standby).num("walship_base_backups"), 1);
    let (a, b) = (keyspace(primary), keyspace(&standby));
    assert!(a == b, "{}", keyspace_diff(&a, &b));
    checkpoints(primary) - taken
}

#[test]
fn base_backup_sends_the_newest_checkpoint_when_little_wal_followed_it() {
    // Less WAL after the checkpoint than the checkpoint holds: it is sent
    // as it is, and the standby replays the WAL after it.
    let primary = primary_with_a_checkpoint_and_a_little_wal();
    assert_eq!(
        seed_new_standby(&primary, "s1"),
        0,
        "no new checkpoint for the base backup"
    );

    // More WAL after the newest checkpoint than the checkpoint holds: a
    // fresh one is taken rather than have the standby replay all of it.
    write_batch(&primary, "later", 2000, 200);
    assert_eq!(seed_new_standby(&primary, "s2"), 1);
}

#[test]
fn a_damaged_newest_checkpoint_is_not_sent_but_replaced() {
    let primary = primary_with_a_checkpoint_and_a_little_wal();
    // Flip a byte in the middle of the checkpoint file, as bit rot would.
    let dir = primary.data_dir().join("checkpoints");
    let file = std::fs::read_dir(&dir)
        .expect("checkpoint directory")
        .map(|e| e.expect("entry").path())
        .find(|p| p.extension().is_some_and(|x| x == "ckpt"))
        .expect("a checkpoint file");
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    assert_eq!(
        seed_new_standby(&primary, "s1"),
        1,
        "the damaged checkpoint was replaced by a new one"
    );
}

/// Replication streams do not take max-clients slots (PostgreSQL keeps
/// walsenders out of `max_connections`): with one standby connected and
/// `maxclients` set to 1, a client still gets in. Before, the stream
/// counted, and the same setting locked every client out until a restart.
#[test]
fn standbys_do_not_count_against_max_clients() {
    let primary = start_primary(&[]);
    let s1 = start_standby(&primary, "s1", &[]);
    wait_caught_up(&primary, &[&s1]);
    assert_eq!(
        primary.raw().command(&["CONFIG", "SET", "maxclients", "1"]),
        Reply::Simple("OK".into())
    );
    // The connection that got in is the one client allowed: it raises the
    // limit again (a new one could still be refused while the server has
    // not yet seen an earlier one close).
    let mut got_in = None;
    wait_until(
        CONVERGE_TIMEOUT,
        || {
            let mut con = primary.raw();
            let pong = con.command(&["PING"]) == Reply::Simple("PONG".into());
            if pong {
                got_in = Some(con);
            }
            pong
        },
        || format!("a client never got in:\n{}", primary.log_tail()),
    );
    let mut con = got_in.expect("a client got in");
    assert_eq!(
        con.command(&["CONFIG", "SET", "maxclients", "100"]),
        Reply::Simple("OK".into())
    );
    set(&primary, "k", "v");
    wait_caught_up(&primary, &[&s1]);
    assert_eq!(
        s1.raw().command(&["GET", "k"]),
        Reply::Bulk(Some(b"v".to_vec()))
    );
}

/// A primary that goes silent without closing the connection (a partition,
/// a frozen host: here SIGSTOP) is noticed by its standby after
/// `wal-receiver-timeout-ms`, as PostgreSQL's `wal_receiver_timeout`: the
/// link shows down, and once the primary is back the standby reconnects
/// and streams again. Before, the standby said `master_link_status:up` for
/// as long as TCP kept the dead connection open.
#[test]
fn a_standby_notices_a_silent_primary_and_reconnects() {
    let primary = start_primary(&[]);
    let standby = start_standby(&primary, "s1", &["--wal-receiver-timeout-ms", "1500"]);
    wait_streaming(&primary, "s1");
    let signal = |sig: &str| {
        let status = std::process::Command::new("kill")
            .args([sig, &primary.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {sig}");
    };
    signal("-STOP");
    // Resume the primary whatever happens below.
    struct Resume<'a>(&'a dyn Fn(&str));
    impl Drop for Resume<'_> {
        fn drop(&mut self) {
            (self.0)("-CONT");
        }
    }
    let resume = Resume(&signal);
    wait_until(
        CONVERGE_TIMEOUT,
        || info(&standby).get("master_link_status") == Some("down"),
        || {
            format!(
                "the standby still shows the link up: {:?}",
                info(&standby).get("master_link_status")
            )
        },
    );
    drop(resume);
    let _: () = redis::cmd("SET")
        .arg("after")
        .arg("resume")
        .query(&mut primary.connection())
        .unwrap();
    wait_caught_up(&primary, &[&standby]);
    assert_eq!(info(&standby).get("master_link_status"), Some("up"));
    assert_eq!(
        standby.raw().command(&["GET", "after"]),
        Reply::Bulk(Some(b"resume".to_vec()))
    );
}

/// Quorum reads count every standby of the cluster (each with a replication
/// slot), not only the connected ones: a primary cut off from its standbys
/// answers NOQUORUM instead of shrinking its quorum to itself and serving
/// what may be a deposed node's state. Dropping the slots (the standbys
/// left the cluster for good) shrinks it again.
#[test]
fn quorum_reads_count_the_standbys_that_are_gone() {
    let primary = start_primary(&[]);
    let mut s1 = start_standby(&primary, "s1", &[]);
    let mut s2 = start_standby(&primary, "s2", &[]);
    let mut con = primary.raw();
    assert_eq!(con.command(&["SET", "k", "v"]), Reply::Simple("OK".into()));
    wait_caught_up(&primary, &[&s1, &s2]);
    let quorum_n =
        |con: &mut walship_tests::resp::RawConn| match con.command(&["WALSHIP", "QUORUM"]) {
            Reply::Array(Some(items)) => items
                .chunks(2)
                .find(|kv| kv[0] == Reply::Bulk(Some(b"n".to_vec())))
                .map(|kv| kv[1].clone()),
            Reply::Map(items) => items
                .into_iter()
                .find(|(k, _)| *k == Reply::Bulk(Some(b"n".to_vec())))
                .map(|(_, v)| v),
            other => panic!("WALSHIP QUORUM replied {other:?}"),
        };
    assert_eq!(quorum_n(&mut con), Some(Reply::Integer(3)));
    assert_eq!(
        con.command(&["WALSHIP", "QUORUMGET", "k"]),
        Reply::Bulk(Some(b"v".to_vec()))
    );
    let _ = s1.terminate();
    let _ = s2.terminate();
    wait_until(
        CONVERGE_TIMEOUT,
        || primary.raw().command(&["WALSHIP", "REPLICAS"]) == Reply::Array(Some(vec![])),
        || "the primary still lists its standbys".into(),
    );
    assert_eq!(quorum_n(&mut con), Some(Reply::Integer(3)));
    match con.command(&["WALSHIP", "QUORUMGET", "k"]) {
        Reply::Error(e) => assert!(e.starts_with("NOQUORUM"), "{e}"),
        other => panic!("a primary without its standbys answered a quorum read: {other:?}"),
    }
    for name in ["s1", "s2"] {
        assert_eq!(
            con.command(&["WALSHIP", "DROPSLOT", name]),
            Reply::Simple("OK".into())
        );
    }
    assert_eq!(quorum_n(&mut con), Some(Reply::Integer(1)));
    assert_eq!(
        con.command(&["WALSHIP", "QUORUMGET", "k"]),
        Reply::Bulk(Some(b"v".to_vec()))
    );
}

/// CLIENT KILL TYPE replica closes a standby's stream for real: the socket
/// goes, the standby is no longer listed (nor counted for synchronous
/// commit), and it reconnects and streams again.
#[test]
fn client_kill_of_a_replication_stream_closes_it_and_the_standby_reconnects() {
    let primary = start_primary(&["--synchronous-standby-names", "s1"]);
    let standby = start_standby(&primary, "s1", &[]);
    wait_streaming(&primary, "s1");
    let mut con = primary.raw();
    let replica_ids = |con: &mut walship_tests::resp::RawConn| -> Vec<String> {
        let text = con.command(&["CLIENT", "LIST", "TYPE", "replica"]).text();
        text.lines()
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_string)
            .collect()
    };
    let before = replica_ids(&mut con);
    assert_eq!(before.len(), 1, "{before:?}");
    let listed = con.command(&["CLIENT", "LIST", "TYPE", "replica"]).text();
    assert!(
        listed.contains(" flags=S "),
        "Redis's flag for a replica: {listed}"
    );
    assert_eq!(
        con.command(&["CLIENT", "KILL", "TYPE", "replica"]),
        Reply::Integer(1)
    );
    // The standby saw its stream close and came back on a new connection.
    wait_until(
        CONVERGE_TIMEOUT,
        || {
            let now = replica_ids(&mut primary.raw());
            now.len() == 1 && now != before
        },
        || {
            format!(
                "replication connections: {:?}",
                replica_ids(&mut primary.raw())
            )
        },
    );
    // Reconnected: a synchronous write completes, one standby is listed
    // (not a live one beside a ghost), and the write is on the standby.
    assert_eq!(
        con.command(&["SET", "after", "kill"]),
        Reply::Simple("OK".into())
    );
    wait_until(
        CONVERGE_TIMEOUT,
        || match primary.raw().command(&["WALSHIP", "REPLICAS"]) {
            Reply::Array(Some(list)) => list.len() == 1,
            _ => false,
        },
        || format!("{:?}", primary.raw().command(&["WALSHIP", "REPLICAS"])),
    );
    wait_caught_up(&primary, &[&standby]);
    assert_eq!(
        standby.raw().command(&["GET", "after"]),
        Reply::Bulk(Some(b"kill".to_vec()))
    );
    let info = primary.raw().command(&["INFO", "replication"]).text();
    assert!(info.contains("connected_slaves:1"), "{info}");
}

/// A record larger than the sender's 64 MiB in-flight window (a value that
/// max-value-size allows) replicates: the standby reports only whole
/// records, so the sender runs past the window to the end of the record.
/// Before, the stream stopped for good, and with a synchronous standby
/// every later write hung.
#[test]
fn a_record_larger_than_the_in_flight_window_replicates() {
    let primary = start_primary(&["--synchronous-standby-names", "s1"]);
    let standby = start_standby(&primary, "s1", &[]);
    wait_streaming(&primary, "s1");
    let big = vec![b'x'; 65 << 20];
    let mut con = primary.connection();
    let _: () = redis::cmd("SET")
        .arg("big")
        .arg(&big)
        .query(&mut con)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("after")
        .arg("big")
        .query(&mut con)
        .unwrap();
    wait_caught_up(&primary, &[&standby]);
    let got: Vec<u8> = redis::cmd("GET")
        .arg("big")
        .query(&mut standby.connection())
        .unwrap();
    assert!(got == big, "the standby holds {} bytes", got.len());
}

/// The WAL segment under `data_dir/wal` that holds `needle`, and where.
fn find_in_wal(data_dir: &std::path::Path, needle: &[u8]) -> (std::path::PathBuf, usize) {
    for entry in std::fs::read_dir(data_dir.join("wal")).expect("wal dir") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_some_and(|e| e == "wal") {
            let bytes = std::fs::read(&path).expect("read segment");
            if let Some(at) = bytes.windows(needle.len()).position(|w| w == needle) {
                return (path, at);
            }
        }
    }
    panic!("no segment under {} holds {needle:?}", data_dir.display());
}

/// A record damaged on the primary's disk (bit rot in WAL a stopped standby
/// still needs, below the primary's newest checkpoint, so the primary itself
/// starts): the primary checks what it reads back before sending it, says
/// so in its log and to the standby, and sends a base backup from a
/// checkpoint past the damage. Before, it shipped the bytes, the standby
/// refused them, reconnected and was sent them again, for ever.
#[test]
fn damaged_wal_on_the_primary_is_not_shipped_and_the_standby_gets_a_base_backup() {
    let mut primary = start_primary(&[]);
    let mut s1 = start_standby(&primary, "s1", &[]);
    write_batch(&primary, "before", 200, 100);
    wait_caught_up(&primary, &[&s1]);
    s1.terminate();
    write_batch(&primary, "while-down", 300, 100);
    // A checkpoint past the damage: the primary's own recovery no longer
    // reads that WAL, but s1's slot keeps it on disk.
    save(&primary);
    primary.terminate();
    let (segment, at) = find_in_wal(&primary.data_dir(), b"while-down:150");
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[at + 20] ^= 0x40; // inside the value
    std::fs::write(&segment, bytes).unwrap();

    primary.restart().expect("restarting the primary");
    s1.restart().expect("restarting the standby");
    write_batch(&primary, "after", 20, 100);
    wait_caught_up(&primary, &[&s1]);
    assert_eq!(
        info(&s1).num("walship_base_backups"),
        1,
        "the standby re-seeds by base backup: {}",
        s1.log_tail()
    );
    assert_eq!(keyspace(&primary).len(), 520);
    assert_same_keyspace(&primary, &s1);
    // Visible to monitoring, not only in the log.
    let damaged_lsn = info(&primary).num("walship_wal_damaged_lsn");
    assert!(damaged_lsn > 0, "{:#?}", info(&primary));
    let metrics = walship_tests::http::get(primary.admin_port(), "/metrics").expect("/metrics");
    assert!(
        metrics
            .body
            .lines()
            .any(|l| l == "walship_wal_damage_found 1"),
        "{}",
        metrics.body
    );
    let log = primary.log();
    assert!(
        log.contains("a record written earlier no longer reads back as written")
            && log.contains(&segment.display().to_string()),
        "the primary names the damage and the file: {}",
        primary.log_tail()
    );
    assert!(
        s1.log()
            .contains("is not a valid record (CRC mismatch): reconnect for a base backup"),
        "the standby is told why: {}",
        s1.log_tail()
    );
}

/// A segment the primary cannot read back in full (cut short on its disk
/// while it runs) is handled as damage: the lagging standby that needs it
/// gets a base backup, and the primary names the LSN and the file. Before,
/// the read error only closed the stream, and the standby asked for the
/// same bytes about ten times a second, for ever.
#[test]
fn a_wal_segment_the_primary_cannot_read_back_reseeds_the_standby() {
    let primary = start_primary(&["--segment-size", "1MiB"]);
    let mut s1 = start_standby(&primary, "s1", &[]);
    write_batch(&primary, "before", 20, 100);
    wait_caught_up(&primary, &[&s1]);
    let resume = info(&primary).num("master_repl_offset");
    s1.terminate();
    // 24 MiB behind: more than the 16 MiB the primary keeps in memory, so
    // the start of it is read from the segment files.
    write_batch(&primary, "while-down", 24, 1 << 20);
    // Cut short the segment holding the WAL 2 MiB past s1's position.
    let target = resume + (2 << 20);
    let (start, segment) = std::fs::read_dir(primary.data_dir().join("wal"))
        .expect("wal dir")
        .map(|e| e.expect("dir entry").path())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.strip_suffix(".wal")?.to_string();
            Some((u64::from_str_radix(&name, 16).ok()?, p))
        })
        .filter(|(start, _)| *start <= target)
        .max_by_key(|(start, _)| *start)
        .expect("a segment holding the target LSN");
    assert!(start > resume, "the cut segment is one s1 still needs");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .and_then(|f| f.set_len(500_000))
        .expect("cutting the segment short");

    s1.restart().expect("restarting the standby");
    wait_caught_up(&primary, &[&s1]);
    assert_eq!(
        info(&s1).num("walship_base_backups"),
        1,
        "the standby re-seeds by base backup: {}",
        s1.log_tail()
    );
    assert_same_keyspace(&primary, &s1);
    let log = primary.log();
    assert!(
        log.contains("this primary cannot read back its WAL")
            && log.contains(&segment.display().to_string()),
        "the primary names the problem and the file: {}",
        primary.log_tail()
    );
}
