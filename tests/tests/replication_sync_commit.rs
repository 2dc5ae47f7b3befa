//! Synchronous commit through the real binary: a write waits for the
//! standbys `synchronous_standby_names` requires, at the level
//! `synchronous_commit` asks for; `synchronous_commit_timeout_ms` turns the
//! wait into an error that says the write is durable locally; WAIT counts
//! the standbys that flushed.
//!
//! A standby is taken down with SIGSTOP (it keeps its connection but answers
//! nothing, like a hung node) or SIGKILL. "Does not complete" is checked with
//! a client-side guard of [`NOT_ANSWERED_GUARD`]: the reply must not have
//! arrived by then. Every other wait is a failure guard only.

use std::thread;
use std::time::Duration;

use walship_tests::cluster::{
    info, pause, resume, start_primary, start_standby, wait_caught_up, Pending,
};
use walship_tests::resp::Reply;
use walship_tests::TestServer;

/// How long a write that must wait is watched for a reply that must not come.
const NOT_ANSWERED_GUARD: Duration = Duration::from_secs(1);

fn ok() -> Reply {
    Reply::Simple("OK".into())
}

/// One synchronous write while every standby is up, so each required
/// standby has received WAL and counts as streaming.
fn warm_up(primary: &TestServer, standbys: &[&TestServer]) {
    wait_caught_up(primary, standbys);
    let reply = Pending::send(primary, &[], &["SET", "warm-up", "1"]).reply();
    assert_eq!(
        reply,
        ok(),
        "a write with every standby up\n{}",
        primary.log_tail()
    );
    wait_caught_up(primary, standbys);
}

fn assert_not_answered(pending: &mut Pending, what: &str) {
    if let Some(reply) = pending.reply_within(NOT_ANSWERED_GUARD) {
        panic!(
            "{what}: the write was answered ({reply:?}) although its synchronous standbys are down"
        );
    }
}

fn get(server: &TestServer, key: &str) -> Reply {
    server.raw().command(&["GET", key])
}

#[test]
fn first_1_write_waits_for_the_sync_standby_and_completes_when_it_returns() {
    let primary = start_primary(&["--synchronous-standby-names", "FIRST 1 (s1)"]);
    let mut s1 = start_standby(&primary, "s1", &[]);
    let s2 = start_standby(&primary, "s2", &[]);
    warm_up(&primary, &[&s1, &s2]);

    // s1 hangs: the write waits even though the async s2 is up.
    pause(&s1);
    let mut pending = Pending::send(&primary, &[], &["SET", "k1", "v1"]);
    assert_not_answered(&mut pending, "FIRST 1 (s1) with s1 stopped");
    // The primary keeps serving other clients meanwhile.
    assert_eq!(
        primary.raw().command(&["PING"]),
        Reply::Simple("PONG".into())
    );
    resume(&s1);
    assert_eq!(pending.reply(), ok(), "the write completes once s1 is back");

    // s1 crashes: the write waits until s1 is restarted and catches up.
    s1.kill();
    let mut pending = Pending::send(&primary, &[], &["SET", "k2", "v2"]);
    assert_not_answered(&mut pending, "FIRST 1 (s1) with s1 killed");
    s1.restart().expect("restarting s1");
    assert_eq!(
        pending.reply(),
        ok(),
        "the write completes once s1 is back\n{}",
        s1.log_tail()
    );

    wait_caught_up(&primary, &[&s1, &s2]);
    for server in [&primary, &s1, &s2] {
        assert_eq!(get(server, "k1"), Reply::Bulk(Some(b"v1".to_vec())));
        assert_eq!(get(server, "k2"), Reply::Bulk(Some(b"v2".to_vec())));
    }
}

#[test]
fn any_2_of_3_completes_with_one_down_and_waits_with_two_down() {
    let primary = start_primary(&["--synchronous-standby-names", "ANY 2 (s1, s2, s3)"]);
    let s1 = start_standby(&primary, "s1", &[]);
    let s2 = start_standby(&primary, "s2", &[]);
    let s3 = start_standby(&primary, "s3", &[]);
    warm_up(&primary, &[&s1, &s2, &s3]);
    let listed = info(&primary);
    for name in ["s1", "s2", "s3"] {
        let line = listed
            .slave_named(name)
            .unwrap_or_else(|| panic!("{name} listed: {listed:#?}"));
        assert_eq!(line["sync_state"], "quorum", "{listed:#?}");
    }

    pause(&s3);
    let reply = Pending::send(&primary, &[], &["SET", "one-down", "yes"]).reply();
    assert_eq!(reply, ok(), "ANY 2 of 3 with one standby down completes");

    pause(&s2);
    let mut pending = Pending::send(&primary, &[], &["SET", "two-down", "yes"]);
    assert_not_answered(&mut pending, "ANY 2 (s1, s2, s3) with s2 and s3 stopped");
    resume(&s2);
    assert_eq!(
        pending.reply(),
        ok(),
        "the write completes once a second standby is back"
    );
    resume(&s3);
    wait_caught_up(&primary, &[&s1, &s2, &s3]);
    for server in [&s1, &s2, &s3] {
        assert_eq!(get(server, "two-down"), Reply::Bulk(Some(b"yes".to_vec())));
    }
}

#[test]
fn each_synchronous_commit_level_waits_only_for_what_it_promises() {
    let primary = start_primary(&["--synchronous-standby-names", "FIRST 1 (s1)"]);
    let s1 = start_standby(&primary, "s1", &[]);
    warm_up(&primary, &[&s1]);
    assert_eq!(info(&primary).field("walship_synchronous_commit"), "on");

    // The per-connection level reads back.
    let mut con = primary.raw();
    assert_eq!(
        con.command(&["WALSHIP", "SYNCHRONOUS_COMMIT"]),
        Reply::Bulk(Some(b"on".to_vec()))
    );
    for level in ["off", "local", "remote_write", "on", "remote_apply"] {
        assert_eq!(con.command(&["WALSHIP", "SYNCHRONOUS_COMMIT", level]), ok());
        assert_eq!(
            con.command(&["WALSHIP", "SYNCHRONOUS_COMMIT"]),
            Reply::Bulk(Some(level.as_bytes().to_vec()))
        );
    }
    assert!(con
        .command(&["WALSHIP", "SYNCHRONOUS_COMMIT", "sometimes"])
        .is_error());
    // Another connection still has the server's default.
    assert_eq!(
        primary.raw().command(&["WALSHIP", "SYNCHRONOUS_COMMIT"]),
        Reply::Bulk(Some(b"on".to_vec()))
    );

    pause(&s1);
    for level in ["local", "off"] {
        let key = format!("level:{level}");
        let reply = Pending::send(
            &primary,
            &[&["WALSHIP", "SYNCHRONOUS_COMMIT", level]],
            &["SET", &key, level],
        )
        .reply();
        assert_eq!(
            reply,
            ok(),
            "synchronous_commit={level} with the sync standby down"
        );
    }
    let mut waiting: Vec<(&str, Pending)> = ["remote_write", "on", "remote_apply"]
        .into_iter()
        .map(|level| {
            let key = format!("level:{level}");
            let pending = Pending::send(
                &primary,
                &[&["WALSHIP", "SYNCHRONOUS_COMMIT", level]],
                &["SET", &key, level],
            );
            (level, pending)
        })
        .collect();
    thread::sleep(NOT_ANSWERED_GUARD);
    for (level, pending) in &mut waiting {
        if let Some(reply) = pending.reply_within(Duration::from_millis(50)) {
            panic!(
                "synchronous_commit={level} was answered ({reply:?}) with the sync standby down"
            );
        }
    }
    resume(&s1);
    for (level, pending) in waiting {
        assert_eq!(
            pending.reply(),
            ok(),
            "synchronous_commit={level} once the standby is back"
        );
    }
    wait_caught_up(&primary, &[&s1]);
    for level in ["off", "local", "remote_write", "on", "remote_apply"] {
        let key = format!("level:{level}");
        for server in [&primary, &s1] {
            assert_eq!(
                get(server, &key),
                Reply::Bulk(Some(level.as_bytes().to_vec()))
            );
        }
    }
}

#[test]
fn synchronous_commit_flag_sets_the_default_level() {
    let primary = start_primary(&[
        "--synchronous-standby-names",
        "FIRST 1 (s1)",
        "--synchronous-commit",
        "local",
    ]);
    let s1 = start_standby(&primary, "s1", &[]);
    warm_up(&primary, &[&s1]);
    assert_eq!(info(&primary).field("walship_synchronous_commit"), "local");
    assert_eq!(
        primary.raw().command(&["WALSHIP", "SYNCHRONOUS_COMMIT"]),
        Reply::Bulk(Some(b"local".to_vec()))
    );
    pause(&s1);
    let reply = Pending::send(&primary, &[], &["SET", "k", "v"]).reply();
    assert_eq!(
        reply,
        ok(),
        "the default level local does not wait for standbys"
    );
    // A connection may still ask for more.
    let mut pending = Pending::send(
        &primary,
        &[&["WALSHIP", "SYNCHRONOUS_COMMIT", "on"]],
        &["SET", "k2", "v2"],
    );
    assert_not_answered(
        &mut pending,
        "synchronous_commit=on on a connection of a local-default primary",
    );
    resume(&s1);
    assert_eq!(pending.reply(), ok());
}

#[test]
fn sync_timeout_reports_durable_locally_and_keeps_the_write() {
    let primary = start_primary(&[
        "--synchronous-standby-names",
        "FIRST 1 (s1)",
        "--synchronous-commit-timeout-ms",
        "300",
    ]);
    let s1 = start_standby(&primary, "s1", &[]);
    warm_up(&primary, &[&s1]);

    pause(&s1);
    let mut con = primary.raw();
    let reply = con.command(&["SET", "k", "v"]);
    match &reply {
        Reply::Error(e) => assert!(e.contains("durable locally"), "error text: {e}"),
        other => panic!("a write past synchronous_commit_timeout_ms replied {other:?}"),
    }
    // WAIT counts the standbys holding *that* write: none yet.
    assert_eq!(
        con.command(&["WAIT", "1", "300"]),
        Reply::Integer(0),
        "WAIT after a write whose confirmation timed out"
    );
    // The write is durable on the primary and visible there.
    let mut guard = Pending::send(&primary, &[], &["GET", "k"]);
    match guard.reply_within(Duration::from_secs(10)) {
        Some(r) => assert_eq!(
            r,
            Reply::Bulk(Some(b"v".to_vec())),
            "GET after a timed-out sync write"
        ),
        None => panic!("GET on the primary of a key whose sync wait timed out did not answer"),
    }
    resume(&s1);
    wait_caught_up(&primary, &[&s1]);
    assert_eq!(get(&s1, "k"), Reply::Bulk(Some(b"v".to_vec())));
    assert_eq!(con.command(&["WAIT", "1", "10000"]), Reply::Integer(1));
}

/// A synchronous standby under `--fsync never` counts what it handed to the
/// OS as flushed (PostgreSQL's `fsync = off`), and one under
/// `--fsync interval:<ms>` confirms at its next periodic fsync: neither holds
/// a `synchronous_commit = on` write for ever. (Under `never`, before the
/// fix, the standby reported the flush LSN of its last real fsync, which
/// never came, and the write hung.)
#[test]
fn a_standby_that_does_not_fsync_every_write_still_confirms() {
    for policy in ["never", "interval:100"] {
        let primary = start_primary(&["--synchronous-standby-names", "FIRST 1 (s1)"]);
        let s1 = start_standby(&primary, "s1", &["--fsync", policy]);
        warm_up(&primary, &[&s1]);
        let mut con = primary.raw();
        for i in 0..20 {
            let key = format!("k{i}");
            assert_eq!(
                Pending::send(&primary, &[], &["SET", &key, "v"]).reply(),
                ok(),
                "a synchronous write with s1 on --fsync {policy}"
            );
        }
        assert_eq!(
            con.command(&["WAIT", "1", "10000"]),
            Reply::Integer(1),
            "WAIT with s1 on --fsync {policy}"
        );
        assert_eq!(get(&s1, "k19"), Reply::Bulk(Some(b"v".to_vec())));
        if policy == "never" {
            // Its offset keeps up with the primary's, as its confirmations do
            // (it stayed at its last real fsync).
            assert_eq!(
                info(&s1).num("slave_repl_offset"),
                info(&primary).num("master_repl_offset"),
                "slave_repl_offset of a standby on --fsync never"
            );
        }
    }
}

#[test]
fn wait_counts_standbys_that_flushed() {
    let primary = start_primary(&[]);
    let s1 = start_standby(&primary, "s1", &[]);
    let s2 = start_standby(&primary, "s2", &[]);
    wait_caught_up(&primary, &[&s1, &s2]);

    let mut con = primary.raw();
    assert_eq!(con.command(&["SET", "a", "1"]), ok());
    assert_eq!(
        con.command(&["WAIT", "2", "10000"]),
        Reply::Integer(2),
        "{}",
        primary.log_tail()
    );

    pause(&s2);
    assert_eq!(
        con.command(&["SET", "b", "2"]),
        ok(),
        "asynchronous standbys never hold a write"
    );
    assert_eq!(con.command(&["WAIT", "1", "10000"]), Reply::Integer(1));
    // Asking for both returns, at the timeout, the one that flushed.
    assert_eq!(con.command(&["WAIT", "2", "300"]), Reply::Integer(1));
    resume(&s2);
    assert_eq!(con.command(&["WAIT", "2", "10000"]), Reply::Integer(2));
    // A negative count asks for nothing (as Redis): the count, at once.
    assert_eq!(con.command(&["WAIT", "-1", "0"]), Reply::Integer(2));
}

/// `synchronous_standby_names`, `synchronous_commit` and
/// `synchronous_commit_timeout_ms` are readable and, as in PostgreSQL,
/// changeable at run time through CONFIG.
#[test]
fn config_set_synchronous_standby_names_takes_effect() {
    let primary = start_primary(&[]);
    let s1 = start_standby(&primary, "s1", &[]);
    warm_up(&primary, &[&s1]);
    let mut con = primary.raw();
    assert_eq!(
        con.command(&["CONFIG", "SET", "synchronous_standby_names", "FIRST 1 (s1)"]),
        ok()
    );
    match con.command(&["CONFIG", "GET", "synchronous_standby_names"]) {
        Reply::Array(Some(items)) => assert_eq!(items[1].text(), "FIRST 1 (s1)"),
        other => panic!("CONFIG GET replied {other:?}"),
    }
    assert_eq!(
        con.command(&["CONFIG", "SET", "synchronous_commit", "on"]),
        ok()
    );
    warm_up(&primary, &[&s1]);
    pause(&s1);
    let mut pending = Pending::send(&primary, &[], &["SET", "k", "v"]);
    assert_not_answered(
        &mut pending,
        "after CONFIG SET synchronous_standby_names 'FIRST 1 (s1)'",
    );
    resume(&s1);
    assert_eq!(pending.reply(), ok());

    // The timeout, set at run time, turns the wait into "durable locally".
    assert_eq!(
        con.command(&["CONFIG", "SET", "synchronous_commit_timeout_ms", "300"]),
        ok()
    );
    match con.command(&["CONFIG", "GET", "synchronous_commit_timeout_ms"]) {
        Reply::Array(Some(items)) => assert_eq!(items[1].text(), "300"),
        other => panic!("CONFIG GET replied {other:?}"),
    }
    warm_up(&primary, &[&s1]);
    pause(&s1);
    let reply = Pending::send(&primary, &[], &["SET", "k2", "v2"]).reply();
    match &reply {
        Reply::Error(e) => assert!(e.contains("durable locally"), "error text: {e}"),
        other => panic!("after CONFIG SET synchronous_commit_timeout_ms 300: {other:?}"),
    }
    resume(&s1);
    // And back to no synchronous standbys: writes no longer wait.
    assert_eq!(
        con.command(&["CONFIG", "SET", "synchronous_standby_names", ""]),
        ok()
    );
    pause(&s1);
    let reply = Pending::send(&primary, &[], &["SET", "k3", "v3"]).reply();
    assert_eq!(reply, ok(), "with synchronous_standby_names emptied");
    resume(&s1);
    wait_caught_up(&primary, &[&s1]);
    assert_eq!(get(&s1, "k3"), Reply::Bulk(Some(b"v3".to_vec())));
}

/// A synchronous write still waiting for a standby that does not answer
/// when the server is stopped gets an error saying it is durable locally
/// but may not be replicated (PostgreSQL cancels such waits at shutdown
/// with a warning), not a connection closed without a reply; and the
/// server exits cleanly.
#[test]
fn sigterm_tells_a_waiting_synchronous_write_it_was_not_confirmed() {
    let mut primary = start_primary(&["--synchronous-standby-names", "FIRST 1 (s1)"]);
    let s1 = start_standby(&primary, "s1", &[]);
    warm_up(&primary, &[&s1]);
    pause(&s1);
    let mut pending = Pending::send(&primary, &[], &["SET", "k", "v"]);
    assert_not_answered(&mut pending, "FIRST 1 (s1) with s1 stopped");
    let status = primary.terminate();
    assert!(
        status.success(),
        "SIGTERM exit: {status}\n{}",
        primary.log_tail()
    );
    match pending.reply() {
        Reply::Error(e) => assert!(
            e.contains("durable locally") && e.contains("shutting down"),
            "error text: {e}"
        ),
        other => panic!("the waiting write got {other:?}"),
    }
    resume(&s1);
    // Durable locally indeed: there after a restart.
    primary.restart().expect("restart the primary");
    assert_eq!(get(&primary, "k"), Reply::Bulk(Some(b"v".to_vec())));
}
