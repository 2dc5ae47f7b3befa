//! Durability across crashes and restarts: acknowledged writes survive
//! `SIGKILL`, `SIGTERM` exits 0 with everything durable, and checkpoints
//! (`SAVE`) plus the WAL tail restore the exact state.
//!
//! The crash tests keep a model of the keyspace: what was there at the last
//! check, plus every write the server acknowledged since, plus at most one
//! in-flight write per client that may or may not have happened. After the
//! restart the server must hold exactly that: every acknowledged write, no
//! value nobody wrote, and in-flight multi-key writes all or nothing.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redis::Value;
use walship_tests::dump::dump_strings;
use walship_tests::{ServerOptions, TestServer};

type Keyspace = BTreeMap<String, String>;

/// A write one client sent.
#[derive(Clone, Debug)]
enum Write {
    Set {
        key: String,
        value: String,
    },
    Mset {
        pairs: Vec<(String, String)>,
    },
    /// `INCR key`; `reply` is the counter the server acknowledged.
    Incr {
        key: String,
        reply: Option<i64>,
    },
}

/// What one client did in one round.
#[derive(Default)]
struct ClientLog {
    acknowledged: Vec<Write>,
    in_flight: Option<Write>,
    /// A failure that is not explained by the crash (an error reply, or a
    /// connection error before the kill).
    failure: Option<String>,
}

fn random_value(rng: &mut StdRng, tag: &str) -> String {
    let len = rng.gen_range(0..200);
    let body: String = (0..len)
        .map(|_| rng.gen_range(b'a'..=b'z') as char)
        .collect();
    format!("{tag}={body}")
}

/// One client: writes until its connection fails (the crash) or `ops_max`.
fn client_loop(
    mut con: redis::Connection,
    mut rng: StdRng,
    round: u32,
    client: u32,
    ops_max: usize,
    acknowledged_total: Arc<AtomicUsize>,
    killed: Arc<AtomicBool>,
) -> ClientLog {
    let mut log = ClientLog::default();
    let counter = format!("counter:c{client}");
    for i in 0..ops_max {
        let key = format!("r{round}:c{client}:{i}");
        let write = match rng.gen_range(0..10) {
            0..=6 => Write::Set {
                value: random_value(&mut rng, &key),
                key,
            },
            7..=8 => Write::Mset {
                pairs: (0..3)
                    .map(|j| {
                        let k = format!("{key}:m{j}");
                        (k.clone(), random_value(&mut rng, &k))
                    })
                    .collect(),
            },
            _ => Write::Incr {
                key: counter.clone(),
                reply: None,
            },
        };
        let cmd = match &write {
            Write::Set { key, value } => {
                let mut c = redis::cmd("SET");
                c.arg(key).arg(value);
                c
            }
            Write::Mset { pairs } => {
                let mut c = redis::cmd("MSET");
                for (k, v) in pairs {
                    c.arg(k).arg(v);
                }
                c
            }
            Write::Incr { key, .. } => {
                let mut c = redis::cmd("INCR");
                c.arg(key);
                c
            }
        };
        log.in_flight = Some(write.clone());
        let reply: redis::RedisResult<Value> = cmd.query(&mut con);
        match (reply, write) {
            (Ok(Value::Okay), write @ (Write::Set { .. } | Write::Mset { .. })) => {
                log.acknowledged.push(write);
            }
            (Ok(Value::Int(n)), Write::Incr { key, .. }) => {
                log.acknowledged.push(Write::Incr {
                    key,
                    reply: Some(n),
                });
            }
            (Ok(other), write) => {
                log.failure = Some(format!("{write:?} got the reply {other:?}"));
                log.in_flight = None;
                return log;
            }
            (Err(e), write) => {
                // After the kill (or SIGTERM) any error is the crash's doing;
                // the write stays in flight: it may or may not have happened.
                if !killed.load(Ordering::SeqCst) {
                    log.failure = Some(format!("{write:?} failed before the crash: {e}"));
                }
                return log;
            }
        }
        log.in_flight = None;
        acknowledged_total.fetch_add(1, Ordering::SeqCst);
    }
    log
}

/// Checks `after` against `before` + acknowledged writes (+ maybe in-flight
/// ones). Returns every discrepancy found.
fn check_round(before: &Keyspace, logs: &[ClientLog], after: &Keyspace) -> Vec<String> {
    let mut must: Keyspace = before.clone();
    // Values a key may hold instead of (or, if absent from `must`, besides
    // being absent) its `must` value.
    let mut may: BTreeMap<String, String> = BTreeMap::new();
    let mut problems = Vec::new();
    for log in logs {
        for write in &log.acknowledged {
            match write {
                Write::Set { key, value } => {
                    must.insert(key.clone(), value.clone());
                }
                Write::Mset { pairs } => must.extend(pairs.iter().cloned()),
                Write::Incr { key, reply } => {
                    must.insert(
                        key.clone(),
                        reply.expect("acknowledged INCR has a reply").to_string(),
                    );
                }
            }
        }
    }
    for log in logs {
        match &log.in_flight {
            None => {}
            Some(Write::Set { key, value }) => {
                may.insert(key.clone(), value.clone());
            }
            Some(Write::Mset { pairs }) => {
                let present = pairs.iter().filter(|(k, _)| after.contains_key(k)).count();
                if present != 0 && present != pairs.len() {
                    problems.push(format!(
                        "in-flight MSET applied partly ({present} of {} keys): {pairs:?}",
                        pairs.len()
                    ));
                }
                may.extend(pairs.iter().cloned());
            }
            Some(Write::Incr { key, .. }) => {
                let current: i64 = must.get(key).map_or(0, |v| v.parse().expect("counter"));
                may.insert(key.clone(), (current + 1).to_string());
            }
        }
    }
    for (key, value) in &must {
        match after.get(key) {
            None => problems.push(format!("LOST acknowledged key {key:?} (value {value:?})")),
            Some(got) if got == value => {}
            Some(got) if may.get(key) == Some(got) => {}
            Some(got) => problems.push(format!(
                "key {key:?} holds {got:?}, but the acknowledged value is {value:?}"
            )),
        }
    }
    for (key, got) in after {
        if !must.contains_key(key) && may.get(key) != Some(got) {
            problems.push(format!("key {key:?} holds {got:?}, a value nobody wrote"));
        }
    }
    problems
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    crash_rounds(
        "acknowledged_writes_survive_sigkill",
        ServerOptions::default(),
        false,
    );
}

/// The same with tiny WAL segments and checkpoints (`SAVE`, or `BGSAVE`
/// that the crash may interrupt) taken while the clients write, so crashes
/// land around segment switches and checkpoints, and recovery starts from a
/// checkpoint and crosses many segments.
#[test]
fn acknowledged_writes_survive_sigkill_across_segments_and_checkpoints() {
    crash_rounds(
        "acknowledged_writes_survive_sigkill_across_segments_and_checkpoints",
        ServerOptions {
            extra_args: ["--segment-size", "64KiB", "--checkpoint-every", "128KiB"]
                .map(String::from)
                .to_vec(),
            ..ServerOptions::default()
        },
        true,
    );
}

/// Rounds of: 16 clients write, SIGKILL once enough writes were
/// acknowledged, restart, compare with the model. With `checkpoint`, a
/// `SAVE` (even rounds) or `BGSAVE` (odd rounds) runs half-way through.
fn crash_rounds(test_name: &str, options: ServerOptions, checkpoint: bool) {
    const CLIENTS: u32 = 16;
    const ROUNDS: u32 = 3;
    const ACKNOWLEDGED_PER_ROUND: usize = 800;
    const OPS_PER_CLIENT_MAX: usize = 20_000;
    let guard = Duration::from_secs(180);

    let seed = walship_tests::seed::seed(test_name);
    let mut server = TestServer::start_with(options).expect("start walship");
    let mut model = Keyspace::new();
    for round in 0..ROUNDS {
        let acknowledged_total = Arc::new(AtomicUsize::new(0));
        let killed = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|client| {
                let con = server.connection();
                let rng =
                    StdRng::seed_from_u64(seed ^ (u64::from(round) << 32) ^ u64::from(client));
                let (total, killed) = (acknowledged_total.clone(), killed.clone());
                thread::spawn(move || {
                    client_loop(con, rng, round, client, OPS_PER_CLIENT_MAX, total, killed)
                })
            })
            .collect();

        let start = Instant::now();
        let mut checkpointed = !checkpoint;
        while acknowledged_total.load(Ordering::SeqCst) < ACKNOWLEDGED_PER_ROUND
            && !clients.iter().all(|c| c.is_finished())
        {
            assert!(
                start.elapsed() < guard,
                "round {round}: writers stuck\n{}",
                server.log_tail()
            );
            if !checkpointed
                && acknowledged_total.load(Ordering::SeqCst) >= ACKNOWLEDGED_PER_ROUND / 2
            {
                let command = if round % 2 == 0 { "SAVE" } else { "BGSAVE" };
                let reply: Value = redis::cmd(command).query(&mut server.connection()).unwrap();
                assert!(
                    matches!(reply, Value::Okay | Value::SimpleString(_)),
                    "{command}: {reply:?}"
                );
                checkpointed = true;
            }
            thread::sleep(Duration::from_millis(2));
        }
        killed.store(true, Ordering::SeqCst);
        server.kill();
        let logs: Vec<ClientLog> = clients
            .into_iter()
            .map(|c| c.join().expect("client thread"))
            .collect();
        let failures: Vec<&String> = logs.iter().filter_map(|l| l.failure.as_ref()).collect();
        assert!(
            failures.is_empty(),
            "seed {seed}, round {round}: {failures:#?}\n{}",
            server.log_tail()
        );
        let acknowledged: usize = logs.iter().map(|l| l.acknowledged.len()).sum();
        let in_flight = logs.iter().filter(|l| l.in_flight.is_some()).count();
        eprintln!(
            "round {round}: {acknowledged} acknowledged writes, {in_flight} in flight at SIGKILL"
        );

        server.restart().expect("restart after SIGKILL");
        let after = dump_strings(&mut server.connection());
        let problems = check_round(&model, &logs, &after);
        assert!(
            problems.is_empty(),
            "seed {seed}, round {round}: {} problems after SIGKILL + restart, first ones:\n{}\n{}",
            problems.len(),
            problems
                .iter()
                .take(20)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n"),
            server.log_tail()
        );
        // What survived is now the state every later crash must keep.
        model = after;
    }
    // One more restart without new writes changes nothing (recovery is
    // idempotent, a torn tail stays cut).
    server.kill();
    server.restart().expect("restart");
    assert_eq!(dump_strings(&mut server.connection()), model, "seed {seed}");
}

/// Sequential writes, overwrites and deletes; returns the resulting model.
fn write_mixed(
    con: &mut redis::Connection,
    rng: &mut StdRng,
    prefix: &str,
    model: &mut Keyspace,
    n: usize,
) {
    for i in 0..n {
        let key = format!("{prefix}:{}", rng.gen_range(0..n / 2 + 1));
        match rng.gen_range(0..10) {
            0..=5 => {
                let value = random_value(rng, &format!("{prefix}{i}"));
                let _: () = redis::cmd("SET").arg(&key).arg(&value).query(con).unwrap();
                model.insert(key, value);
            }
            6 => {
                let n: i64 = redis::cmd("DEL").arg(&key).query(con).unwrap();
                assert_eq!(n, i64::from(model.remove(&key).is_some()));
            }
            7 => {
                let suffix = random_value(rng, "+");
                let len: usize = redis::cmd("APPEND")
                    .arg(&key)
                    .arg(&suffix)
                    .query(con)
                    .unwrap();
                let entry = model.entry(key).or_default();
                entry.push_str(&suffix);
                assert_eq!(len, entry.len());
            }
            8 => {
                let old: Option<String> = redis::cmd("GETDEL").arg(&key).query(con).unwrap();
                assert_eq!(old, model.remove(&key));
            }
            _ => {
                let counter = format!("{prefix}:counter");
                let n: i64 = redis::cmd("INCRBY")
                    .arg(&counter)
                    .arg(3)
                    .query(con)
                    .unwrap();
                model.insert(counter, n.to_string());
            }
        }
    }
}

#[test]
fn sigterm_exits_zero_and_keeps_all_data() {
    let mut rng = walship_tests::seed::rng("sigterm_exits_zero_and_keeps_all_data");
    let mut server = TestServer::start().expect("start walship");
    let mut model = Keyspace::new();
    write_mixed(&mut server.connection(), &mut rng, "a", &mut model, 1000);
    let status = server.terminate();
    assert!(
        status.success(),
        "SIGTERM must exit 0, got {status}\n{}",
        server.log_tail()
    );
    server.restart().expect("restart after SIGTERM");
    assert_eq!(dump_strings(&mut server.connection()), model);

    write_mixed(&mut server.connection(), &mut rng, "b", &mut model, 1000);
    let status = server.terminate();
    assert!(
        status.success(),
        "second SIGTERM must exit 0, got {status}\n{}",
        server.log_tail()
    );
    server.restart().expect("second restart");
    assert_eq!(dump_strings(&mut server.connection()), model);
}

#[test]
fn sigterm_under_load_exits_zero_and_keeps_acknowledged_writes() {
    const CLIENTS: u32 = 6;
    let seed =
        walship_tests::seed::seed("sigterm_under_load_exits_zero_and_keeps_acknowledged_writes");
    let mut server = TestServer::start().expect("start walship");
    let acknowledged_total = Arc::new(AtomicUsize::new(0));
    let stopping = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let con = server.connection();
            let rng = StdRng::seed_from_u64(seed ^ u64::from(client));
            let (total, stopping) = (acknowledged_total.clone(), stopping.clone());
            thread::spawn(move || client_loop(con, rng, 0, client, 20_000, total, stopping))
        })
        .collect();
    let start = Instant::now();
    while acknowledged_total.load(Ordering::SeqCst) < 500
        && !clients.iter().all(|c| c.is_finished())
    {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "writers stuck\n{}",
            server.log_tail()
        );
        thread::sleep(Duration::from_millis(2));
    }
    stopping.store(true, Ordering::SeqCst);
    let status = server.terminate();
    let logs: Vec<ClientLog> = clients
        .into_iter()
        .map(|c| c.join().expect("client thread"))
        .collect();
    assert!(
        status.success(),
        "SIGTERM under load must exit 0, got {status}\n{}",
        server.log_tail()
    );
    let failures: Vec<&String> = logs.iter().filter_map(|l| l.failure.as_ref()).collect();
    assert!(failures.is_empty(), "seed {seed}: {failures:#?}");
    server.restart().expect("restart after SIGTERM");
    let after = dump_strings(&mut server.connection());
    let problems = check_round(&Keyspace::new(), &logs, &after);
    assert!(
        problems.is_empty(),
        "seed {seed}: {} problems after SIGTERM + restart:\n{}",
        problems.len(),
        problems
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn restart_after_save_keeps_everything_including_deletes() {
    let mut rng = walship_tests::seed::rng("restart_after_save_keeps_everything_including_deletes");
    let mut server = TestServer::start().expect("start walship");
    let mut model = Keyspace::new();
    let mut con = server.connection();
    write_mixed(&mut con, &mut rng, "pre", &mut model, 1500);
    let saved: String = redis::cmd("SAVE").query(&mut con).unwrap();
    assert_eq!(saved, "OK");
    // After the checkpoint: new keys, and deletes/overwrites of checkpointed ones.
    write_mixed(&mut con, &mut rng, "pre", &mut model, 500);
    write_mixed(&mut con, &mut rng, "post", &mut model, 500);
    drop(con);
    server.kill();
    server.restart().expect("restart after SAVE + SIGKILL");
    assert_eq!(
        dump_strings(&mut server.connection()),
        model,
        "checkpoint + WAL tail after SIGKILL"
    );

    // A checkpoint taken after recovery, then a clean stop.
    let mut con = server.connection();
    let saved: String = redis::cmd("SAVE").query(&mut con).unwrap();
    assert_eq!(saved, "OK");
    write_mixed(&mut con, &mut rng, "late", &mut model, 300);
    drop(con);
    assert!(server.terminate().success());
    server.restart().expect("restart after SAVE + SIGTERM");
    assert_eq!(
        dump_strings(&mut server.connection()),
        model,
        "after second checkpoint and SIGTERM"
    );

    // Checkpoint of the final state, restarted with nothing after it.
    let saved: String = redis::cmd("SAVE").query(&mut server.connection()).unwrap();
    assert_eq!(saved, "OK");
    server.kill();
    server.restart().expect("restart right after SAVE");
    assert_eq!(
        dump_strings(&mut server.connection()),
        model,
        "right after SAVE"
    );
}

#[test]
fn bgsave_then_crash_keeps_everything() {
    let mut rng = walship_tests::seed::rng("bgsave_then_crash_keeps_everything");
    let mut server = TestServer::start().expect("start walship");
    let mut model = Keyspace::new();
    let mut con = server.connection();
    write_mixed(&mut con, &mut rng, "k", &mut model, 1000);
    let _: Value = redis::cmd("BGSAVE").query(&mut con).unwrap();
    // Writes racing the background checkpoint.
    write_mixed(&mut con, &mut rng, "k", &mut model, 1000);
    drop(con);
    server.kill();
    server.restart().expect("restart after BGSAVE + SIGKILL");
    assert_eq!(dump_strings(&mut server.connection()), model);
}

#[test]
fn flushall_survives_restart() {
    let mut server = TestServer::start().expect("start walship");
    let mut con = server.connection();
    for i in 0..200 {
        let _: () = redis::cmd("SET")
            .arg(format!("old{i}"))
            .arg(i)
            .query(&mut con)
            .unwrap();
    }
    let _: () = redis::cmd("SAVE").query(&mut con).unwrap();
    let _: () = redis::cmd("SET")
        .arg("old-after-save")
        .arg(1)
        .query(&mut con)
        .unwrap();
    let _: () = redis::cmd("FLUSHALL").query(&mut con).unwrap();
    let _: () = redis::cmd("SET")
        .arg("new")
        .arg("1")
        .query(&mut con)
        .unwrap();
    drop(con);
    server.kill();
    server.restart().expect("restart");
    let expected: Keyspace = [("new".to_string(), "1".to_string())].into();
    assert_eq!(dump_strings(&mut server.connection()), expected);
}

#[test]
fn empty_server_restarts_empty() {
    let mut server = TestServer::start().expect("start walship");
    server.kill();
    server
        .restart()
        .expect("restart after SIGKILL with no writes");
    assert!(server.terminate().success());
    server
        .restart()
        .expect("restart after SIGTERM with no writes");
    let n: i64 = redis::cmd("DBSIZE")
        .query(&mut server.connection())
        .unwrap();
    assert_eq!(n, 0);
}

/// With `--fsync never` or an interval, a clean `SIGTERM` must still make
/// everything durable before exit 0.
#[test]
fn relaxed_fsync_modes_keep_data_over_sigterm() {
    for fsync in ["never", "interval:50"] {
        let mut rng = walship_tests::seed::rng(&format!(
            "relaxed_fsync_modes_keep_data_over_sigterm[{fsync}]"
        ));
        let mut server = TestServer::start_with(ServerOptions {
            fsync: Some(fsync.into()),
            ..ServerOptions::default()
        })
        .unwrap_or_else(|e| panic!("start with --fsync {fsync}: {e:#}"));
        let mut model = Keyspace::new();
        write_mixed(&mut server.connection(), &mut rng, "f", &mut model, 1000);
        let status = server.terminate();
        assert!(
            status.success(),
            "--fsync {fsync}: SIGTERM exit {status}\n{}",
            server.log_tail()
        );
        server.restart().expect("restart");
        assert_eq!(
            dump_strings(&mut server.connection()),
            model,
            "--fsync {fsync}"
        );
    }
}

#[test]
fn explicit_fsync_always_is_accepted() {
    let mut server = TestServer::start_with(ServerOptions {
        fsync: Some("always".into()),
        ..ServerOptions::default()
    })
    .expect("start with --fsync always");
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query(&mut server.connection())
        .unwrap();
    server.kill();
    server.restart().unwrap();
    let v: String = redis::cmd("GET")
        .arg("k")
        .query(&mut server.connection())
        .unwrap();
    assert_eq!(v, "v");
}

/// The crash checker itself must flag each kind of damage; otherwise the
/// tests above could pass on a server that loses data.
#[test]
fn crash_checker_flags_lost_foreign_and_partial_writes() {
    let kv = |pairs: &[(&str, &str)]| -> Keyspace {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let set = |k: &str, v: &str| Write::Set {
        key: k.into(),
        value: v.into(),
    };
    let mset = |pairs: &[(&str, &str)]| Write::Mset {
        pairs: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    let before = kv(&[("old", "1"), ("ctr", "4")]);
    let logs = vec![
        ClientLog {
            acknowledged: vec![
                set("a", "A"),
                Write::Incr {
                    key: "ctr".into(),
                    reply: Some(5),
                },
            ],
            in_flight: Some(Write::Incr {
                key: "ctr".into(),
                reply: None,
            }),
            failure: None,
        },
        ClientLog {
            acknowledged: vec![mset(&[("m1", "x"), ("m2", "y")])],
            in_flight: Some(mset(&[("p1", "1"), ("p2", "2")])),
            failure: None,
        },
        ClientLog {
            acknowledged: vec![],
            in_flight: Some(set("maybe", "M")),
            failure: None,
        },
    ];
    let good = kv(&[
        ("old", "1"),
        ("ctr", "5"),
        ("a", "A"),
        ("m1", "x"),
        ("m2", "y"),
    ]);
    assert_eq!(check_round(&before, &logs, &good), Vec::<String>::new());
    let mut with_in_flight = good.clone();
    with_in_flight.extend(kv(&[
        ("ctr", "6"),
        ("p1", "1"),
        ("p2", "2"),
        ("maybe", "M"),
    ]));
    assert_eq!(
        check_round(&before, &logs, &with_in_flight),
        Vec::<String>::new()
    );

    let damaged = |f: &dyn Fn(&mut Keyspace)| {
        let mut after = good.clone();
        f(&mut after);
        check_round(&before, &logs, &after)
    };
    assert_eq!(
        damaged(&|k| {
            k.remove("a");
        })
        .len(),
        1,
        "lost acknowledged SET"
    );
    assert_eq!(
        damaged(&|k| {
            k.remove("old");
        })
        .len(),
        1,
        "lost earlier key"
    );
    assert_eq!(
        damaged(&|k| {
            k.remove("m2");
        })
        .len(),
        1,
        "lost half an acknowledged MSET"
    );
    assert_eq!(
        damaged(&|k| {
            k.insert("ctr".into(), "4".into());
        })
        .len(),
        1,
        "counter went back"
    );
    assert_eq!(
        damaged(&|k| {
            k.insert("ctr".into(), "7".into());
        })
        .len(),
        1,
        "counter too far"
    );
    assert_eq!(
        damaged(&|k| {
            k.insert("a".into(), "B".into());
        })
        .len(),
        1,
        "wrong value"
    );
    assert_eq!(
        damaged(&|k| {
            k.insert("ghost".into(), "G".into());
        })
        .len(),
        1,
        "value nobody wrote"
    );
    assert_eq!(
        damaged(&|k| {
            k.insert("maybe".into(), "N".into());
        })
        .len(),
        1,
        "in-flight key, wrong value"
    );
    assert_eq!(
        damaged(&|k| {
            k.insert("p1".into(), "1".into());
        })
        .len(),
        1,
        "half an in-flight MSET"
    );
}

/// SIGTERM while a pipeline of writes is being processed: every write that
/// got `+OK` is there after the restart, every write refused with an error
/// is not, and the server exits 0.
#[test]
fn sigterm_mid_pipeline_keeps_every_acknowledged_write() {
    use walship_tests::resp::{encode, Reply};
    const WRITES: usize = 3000;
    let mut server = TestServer::start().expect("start walship");
    let mut raw = server.raw();
    let mut pipeline = Vec::new();
    for i in 0..WRITES {
        pipeline.extend(encode(&["SET", &format!("pipe:{i}"), &format!("v{i}")]));
    }
    raw.send(&pipeline).expect("send the pipeline");
    // The first reply proves the server is inside the pipeline.
    assert_eq!(raw.read_reply().unwrap(), Reply::Simple("OK".into()));
    let status = server.terminate();
    let mut replies = vec![Reply::Simple("OK".into())];
    while let Ok(reply) = raw.read_reply() {
        replies.push(reply);
    }
    assert!(
        status.success(),
        "SIGTERM must exit 0, got {status}\n{}",
        server.log_tail()
    );
    eprintln!(
        "{} of {WRITES} pipelined SETs answered before the close",
        replies.len()
    );

    server.restart().expect("restart after SIGTERM");
    let after = dump_strings(&mut server.connection());
    for (i, reply) in replies.iter().enumerate() {
        let key = format!("pipe:{i}");
        match reply {
            Reply::Simple(ok) if ok == "OK" => {
                assert_eq!(
                    after.get(&key),
                    Some(&format!("v{i}")),
                    "{key} was acknowledged"
                );
            }
            Reply::Error(_) => assert_eq!(
                after.get(&key),
                None,
                "{key} was refused ({reply:?}) but applied"
            ),
            other => panic!("reply to SET {key}: {other:?}"),
        }
    }
    for (key, value) in &after {
        let i: usize = key
            .strip_prefix("pipe:")
            .and_then(|i| i.parse().ok())
            .unwrap_or_else(|| panic!("unexpected key {key}"));
        assert_eq!(value, &format!("v{i}"), "{key}");
    }
}
