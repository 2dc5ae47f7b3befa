//! Simulated power loss of a real process (`--simulate-power-loss` and
//! `DEBUG POWERLOSS [seed]`): every acknowledged write survives with
//! `--fsync always`, and what was never synced really vanishes.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use walship_tests::cluster::keyspace;
use walship_tests::resp::{RawConn, Reply};
use walship_tests::{ServerOptions, TestServer};

/// Guard for the process to exit after `DEBUG POWERLOSS` (not a timing claim).
const EXIT_GUARD: Duration = Duration::from_secs(60);

fn start_simulated(fsync: &str) -> TestServer {
    TestServer::start_with(ServerOptions {
        fsync: Some(fsync.into()),
        extra_args: vec!["--simulate-power-loss".into()],
        ..ServerOptions::default()
    })
    .expect("starting walship --simulate-power-loss")
}

/// Sends `DEBUG POWERLOSS seed`, checks that no reply comes and the process
/// exits with status 137, then restarts it on real files (no flag).
fn cut_power(server: &mut TestServer, seed: u64) {
    let mut con = server.raw();
    con.send(&walship_tests::resp::encode(&[
        "DEBUG",
        "POWERLOSS",
        &seed.to_string(),
    ]))
    .expect("sending DEBUG POWERLOSS");
    assert!(
        con.read_reply().is_err(),
        "DEBUG POWERLOSS must close the connection without a reply"
    );
    let status = server
        .wait_for_exit(EXIT_GUARD)
        .unwrap_or_else(|| panic!("still running after DEBUG POWERLOSS\n{}", server.log_tail()));
    assert_eq!(
        status.code(),
        Some(137),
        "{status:?}\n{}",
        server.log_tail()
    );
    assert!(status.signal().is_none());
    server.set_extra_args(Vec::new());
    server.restart().expect("restart on the image left behind");
}

#[test]
fn every_acknowledged_write_survives_a_simulated_power_loss() {
    let seed =
        walship_tests::seed::seed("every_acknowledged_write_survives_a_simulated_power_loss");
    let mut server = start_simulated("always");
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let mut con = server.raw();
            let stop = stop.clone();
            thread::spawn(move || {
                // key -> value, acknowledged; plus the one in flight when the power went.
                let mut acked = BTreeMap::new();
                let mut in_flight = None;
                for n in 0.. {
                    if stop.load(Ordering::Relaxed) && n > 0 {
                        break;
                    }
                    let key = format!("c{c}:{n}");
                    let value = format!("{key}:{}", "v".repeat(80));
                    in_flight = Some((key.clone(), value.clone()));
                    match con.send(&walship_tests::resp::encode(&["SET", &key, &value])) {
                        Err(_) => break,
                        Ok(()) => match con.read_reply() {
                            Ok(Reply::Simple(ok)) if ok == "OK" => {
                                acked.insert(key, value);
                                in_flight = None;
                            }
                            // Errors after the cut (poisoned WAL) or a closed connection.
                            _ => break,
                        },
                    }
                }
                (acked, in_flight)
            })
        })
        .collect();
    let mut rng = StdRng::seed_from_u64(seed);
    thread::sleep(Duration::from_millis(rng.gen_range(100..400)));
    cut_power(&mut server, seed);
    stop.store(true, Ordering::Relaxed);
    let outcomes: Vec<_> = clients.into_iter().map(|t| t.join().unwrap()).collect();

    let found = keyspace(&server);
    let mut acked_total = 0;
    for (acked, _) in &outcomes {
        acked_total += acked.len();
        for (key, value) in acked {
            let got = found
                .get(key.as_bytes())
                .map(|v| String::from_utf8_lossy(v));
            assert_eq!(
                got.as_deref(),
                Some(value.as_str()),
                "acknowledged {key} lost (seed {seed})"
            );
        }
    }
    assert!(
        acked_total > 0,
        "no write was acknowledged before the power cut"
    );
    // Nothing nobody wrote: every key found was acknowledged or in flight.
    for (key, value) in &found {
        let key = String::from_utf8_lossy(key).into_owned();
        let known = outcomes.iter().any(|(acked, in_flight)| {
            acked.get(&key).map(|v| v.as_bytes()) == Some(value.as_slice())
                || in_flight
                    .as_ref()
                    .is_some_and(|(k, v)| *k == key && v.as_bytes() == value.as_slice())
        });
        assert!(known, "{key} holds a value nobody wrote (seed {seed})");
    }
}

#[test]
fn unsynced_writes_vanish_in_a_simulated_power_loss() {
    let seed = walship_tests::seed::seed("unsynced_writes_vanish_in_a_simulated_power_loss");
    // With fsync never a write is acknowledged before it is durable: the
    // simulated device keeps none of it past the power cut, except what the
    // seeded tear lets through, and that only as a prefix of the log.
    let mut server = start_simulated("never");
    let mut con = server.raw();
    let count = 200;
    for n in 0..count {
        let reply = con.command(&["SET", &format!("k{n:04}"), &format!("v{n}")]);
        assert_eq!(reply, Reply::Simple("OK".into()));
    }
    // One large last write: a tear through it keeps all of it with a
    // chance of about 1 in 65 536.
    let big = "x".repeat(1 << 16);
    assert_eq!(
        con.command(&["SET", "big", &big]),
        Reply::Simple("OK".into())
    );
    drop(con);
    cut_power(&mut server, seed);

    let found = keyspace(&server);
    let survivors: Vec<usize> = (0..count)
        .filter(|n| found.contains_key(format!("k{n:04}").as_bytes()))
        .collect();
    assert_eq!(
        survivors,
        (0..survivors.len()).collect::<Vec<_>>(),
        "what survives is a prefix of the log (seed {seed})"
    );
    assert!(
        survivors.len() < count || !found.contains_key(b"big".as_slice()),
        "acknowledged but never synced writes all survived a power loss (seed {seed})"
    );
    eprintln!(
        "unsynced_writes_vanish: {} of {} acknowledged writes survived (seed {seed})",
        survivors.len() + usize::from(found.contains_key(b"big".as_slice())),
        count + 1
    );
}

#[test]
fn debug_powerloss_is_refused_without_the_flag() {
    let server = TestServer::start().unwrap();
    let mut con = server.raw();
    assert_eq!(con.command(&["SET", "k", "v"]), Reply::Simple("OK".into()));
    let reply = con.command(&["DEBUG", "POWERLOSS", "1"]);
    assert!(
        matches!(&reply, Reply::Error(e) if e.contains("--simulate-power-loss")),
        "{reply:?}"
    );
    assert_eq!(con.command(&["GET", "k"]), Reply::Bulk(Some(b"v".to_vec())));
    let _ = RawConn::connect(server.port()).expect("still serving");
}
