//! Failover through the real binary: a node whose WAL went past the fork
//! point rewinds by itself when it follows the promoted standby (an old
//! primary that kept writing, a running async standby that was ahead), a
//! rewind past a checkpoint re-seeds by base backup, and a deposed primary
//! with a synchronous standby acknowledges nothing.

use std::time::Duration;

use walship_tests::cluster::{
    assert_same_keyspace, info, keyspace, start_primary, start_standby, wait_caught_up,
    wait_streaming, Pending,
};
use walship_tests::resp::Reply;
use walship_tests::TestServer;

fn set(server: &TestServer, key: &str, value: &str) {
    assert_eq!(
        server.raw().command(&["SET", key, value]),
        Reply::Simple("OK".into()),
        "SET {key} on port {}\n{}",
        server.port(),
        server.log_tail()
    );
}

fn write_batch(server: &TestServer, prefix: &str, count: usize) {
    let mut con = server.raw();
    for i in 0..count {
        let (k, v) = (format!("{prefix}:{i}"), format!("value of {prefix}:{i}"));
        assert_eq!(con.command(&["SET", &k, &v]), Reply::Simple("OK".into()));
    }
}

fn promote(server: &TestServer) {
    match server.raw().command(&["REPLICAOF", "NO", "ONE"]) {
        Reply::Simple(s) if s.starts_with("OK promoted") => {}
        other => panic!("REPLICAOF NO ONE replied {other:?}\n{}", server.log_tail()),
    }
}

fn follow(server: &TestServer, primary: &TestServer) {
    let port = primary.port().to_string();
    assert_eq!(
        server.raw().command(&["REPLICAOF", "127.0.0.1", &port]),
        Reply::Simple("OK".into())
    );
}

/// Restarts a stopped node as a standby named `name` of `primary`.
fn restart_as_standby_of(node: &mut TestServer, primary: &TestServer, name: &str, extra: &[&str]) {
    let mut args = vec![
        "--replicate-from".to_string(),
        format!("127.0.0.1:{}", primary.port()),
        "--name".to_string(),
        name.to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    node.set_extra_args(args);
    node.restart().expect("restarting the node as a standby");
}

fn rewound_files(node: &TestServer) -> Vec<std::path::PathBuf> {
    let dir = node.data_dir().join("rewound");
    std::fs::read_dir(&dir)
        .map(|d| d.map(|e| e.expect("dir entry").path()).collect())
        .unwrap_or_default()
}

fn assert_no_key_with_prefix(node: &TestServer, prefix: &str) {
    let keys = keyspace(node);
    let found: Vec<_> = keys
        .keys()
        .filter(|k| k.starts_with(prefix.as_bytes()))
        .take(3)
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    assert!(found.is_empty(), "keys {found:?} survived the rewind");
}

#[test]
fn an_old_primary_that_kept_writing_rewinds_when_it_follows_the_promoted_standby() {
    let mut primary = start_primary(&[]);
    let mut s1 = start_standby(&primary, "s1", &[]);
    write_batch(&primary, "both", 50);
    wait_caught_up(&primary, &[&s1]);

    // s1 stops; the primary goes on alone (asynchronous: these are
    // acknowledged but never replicated), then dies.
    s1.terminate();
    write_batch(&primary, "unreplicated", 30);
    let old_end = info(&primary).num("master_repl_offset");
    primary.kill();

    s1.restart().expect("restarting s1");
    promote(&s1);
    let fork = info(&s1).num("walship_epoch_start_lsn");
    assert!(fork < old_end);
    set(&s1, "after-failover", "yes");

    restart_as_standby_of(&mut primary, &s1, "old-primary", &[]);
    wait_caught_up(&s1, &[&primary]);
    let back = info(&primary);
    assert_eq!(back.field("role"), "slave");
    assert_eq!(back.num("walship_rewinds"), 1, "{back:#?}");
    assert_eq!(back.num("walship_rewound_records"), 30, "{back:#?}");
    assert_eq!(back.num("walship_rewound_bytes"), old_end - fork);
    assert_eq!(back.num("walship_last_rewind_lsn"), fork);
    assert_eq!(back.num("walship_base_backups"), 0, "{back:#?}");
    assert_eq!(back.num("walship_epoch"), info(&s1).num("walship_epoch"));
    assert_same_keyspace(&primary, &s1);
    assert_no_key_with_prefix(&primary, "unreplicated:");

    // The cut records are kept, named by fork and end LSN.
    let files = rewound_files(&primary);
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(name, format!("{fork:016X}-{old_end:016X}.wal"));
    let bytes = std::fs::read(&files[0]).unwrap();
    assert_eq!(&bytes[..8], b"WSHPRWND");
    assert_eq!(bytes.len() as u64, 52 + old_end - fork);

    // ... and counted in /metrics and /status.
    let metrics = walship_tests::http::get(primary.admin_port(), "/metrics").unwrap();
    assert!(
        metrics.body.contains("walship_rewound_records_total 30"),
        "{}",
        metrics.body
    );
    let status = walship_tests::http::get(primary.admin_port(), "/status").unwrap();
    let status: serde_json::Value = serde_json::from_str(&status.body).unwrap();
    assert_eq!(
        status["replication"]["rewind"]["rewound_records"], 30,
        "{status:#}"
    );
}

#[test]
fn a_running_async_standby_that_was_ahead_rewinds_when_re_pointed() {
    let mut primary = start_primary(&[]);
    let mut s1 = start_standby(&primary, "s1", &[]);
    let s2 = start_standby(&primary, "s2", &[]);
    write_batch(&primary, "both", 40);
    wait_caught_up(&primary, &[&s1, &s2]);

    // s1 falls behind; s2 gets 20 more records; the primary dies; the
    // operator promotes s1 (say s2 was unreachable at the time).
    s1.terminate();
    write_batch(&primary, "ahead", 20);
    wait_caught_up(&primary, &[&s2]);
    primary.kill();
    s1.restart().expect("restarting s1");
    promote(&s1);
    set(&s1, "after-failover", "yes");

    follow(&s2, &s1);
    wait_caught_up(&s1, &[&s2]);
    let st = info(&s2);
    assert_eq!(st.num("walship_rewinds"), 1, "{st:#?}\n{}", s2.log_tail());
    assert_eq!(st.num("walship_rewound_records"), 20, "{st:#?}");
    assert_same_keyspace(&s2, &s1);
    assert_no_key_with_prefix(&s2, "ahead:");
    assert_eq!(keyspace(&s1).len(), 41);
}

#[test]
fn a_rewind_past_a_checkpoint_reseeds_the_node_by_base_backup() {
    // Small segments and frequent checkpoints, so the old primary's newest
    // checkpoint covers WAL past the fork.
    let small = ["--segment-size", "64KiB", "--checkpoint-every", "64KiB"];
    let mut primary = start_primary(&small);
    let mut s1 = start_standby(&primary, "s1", &[]);
    write_batch(&primary, "both", 50);
    wait_caught_up(&primary, &[&s1]);
    s1.terminate();
    write_batch(&primary, "unreplicated", 3000);
    primary.kill();
    s1.restart().expect("restarting s1");
    promote(&s1);
    set(&s1, "after-failover", "yes");

    restart_as_standby_of(&mut primary, &s1, "old-primary", &small);
    wait_caught_up(&s1, &[&primary]);
    let back = info(&primary);
    assert_eq!(
        back.num("walship_rewinds"),
        1,
        "{back:#?}\n{}",
        primary.log_tail()
    );
    assert_eq!(back.num("walship_base_backups"), 1, "{back:#?}");
    assert!(back.num("walship_rewound_records") > 0);
    assert_same_keyspace(&primary, &s1);
    assert_no_key_with_prefix(&primary, "unreplicated:");
    assert!(!rewound_files(&primary).is_empty());
}

#[test]
fn a_deposed_primary_with_a_synchronous_standby_acknowledges_nothing() {
    let primary = start_primary(&["--synchronous-standby-names", "FIRST 1 (s1)"]);
    let s1 = start_standby(&primary, "s1", &[]);
    set(&primary, "before", "1");
    wait_streaming(&primary, "s1");

    // s1 is promoted while the old primary still runs (a partition, say).
    promote(&s1);
    set(&s1, "on-new-primary", "1");

    // A write on the old primary: its only synchronous standby left, so no
    // confirmation can come. (If s1's last status report, sent after its
    // promotion, already told the old primary of the new epoch, the write
    // fails at once instead; either way it is never acknowledged.)
    let mut pending = Pending::send(&primary, &[], &["SET", "split-brain", "1"]);
    let early = pending.reply_within(Duration::from_millis(500));
    assert!(
        !matches!(early, Some(Reply::Simple(_))),
        "a deposed primary acknowledged a write: {early:?}"
    );

    // A node of the new epoch shows itself to the old primary: fenced. The
    // waiting write fails instead of being acknowledged, and new writes
    // get READONLY.
    let s2 = start_standby(&s1, "s2", &[]);
    wait_caught_up(&s1, &[&s2]);
    follow(&s2, &primary);
    walship_tests::cluster::wait_until(
        walship_tests::cluster::STREAMING_TIMEOUT,
        || info(&primary).num("walship_fenced") == 1,
        || {
            format!(
                "old primary fenced: {:#?}\n{}\n{}",
                info(&primary),
                primary.log_tail(),
                s2.log_tail()
            )
        },
    );
    match early.unwrap_or_else(|| pending.reply()) {
        Reply::Error(e) => assert!(!e.is_empty()),
        other => panic!("a deposed primary acknowledged a write: {other:?}"),
    }
    match primary.raw().command(&["SET", "more", "1"]) {
        Reply::Error(e) => assert!(e.starts_with("READONLY"), "{e}"),
        other => panic!("a fenced primary took a write: {other:?}"),
    }

    // Re-pointed, it rewinds away the unconfirmed write and converges.
    follow(&s2, &s1);
    follow(&primary, &s1);
    wait_caught_up(&s1, &[&primary, &s2]);
    assert_eq!(info(&primary).num("walship_fenced"), 0);
    assert_eq!(
        info(&primary).num("walship_rewinds"),
        1,
        "{}",
        primary.log_tail()
    );
    assert_same_keyspace(&primary, &s1);
    assert_same_keyspace(&s2, &s1);
    assert_no_key_with_prefix(&primary, "split-brain");
}

/// An old primary re-pointed at the promoted standby drops its replication
/// slots: as a standby it serves no standbys, and the slots would hold its
/// WAL back for ever. A slot of a standby that is gone for good is dropped
/// with `WALSHIP DROPSLOT` (refused while that standby is connected), and
/// stays dropped across a restart.
#[test]
fn slots_are_dropped_by_dropslot_and_when_a_primary_becomes_a_standby() {
    let mut old = start_primary(&[]);
    let s1 = start_standby(&old, "s1", &[]);
    let mut gone = start_standby(&old, "gone", &[]);
    write_batch(&old, "a", 20);
    wait_caught_up(&old, &[&s1, &gone]);
    gone.kill();
    let slots = |n: &TestServer| info(n).get("walship_slots").map(str::to_string);
    assert_eq!(slots(&old).as_deref(), Some("2"));

    let mut con = old.raw();
    let refused = |reply: Reply, what: &str| match reply {
        Reply::Error(e) => e,
        other => panic!("{what} replied {other:?}"),
    };
    let e = refused(
        con.command(&["WALSHIP", "DROPSLOT", "s1"]),
        "dropping an active slot",
    );
    assert!(e.contains("is active"), "{e}");
    let e = refused(
        con.command(&["WALSHIP", "DROPSLOT", "nope"]),
        "dropping a missing slot",
    );
    assert!(e.contains("does not exist"), "{e}");
    assert_eq!(
        con.command(&["WALSHIP", "DROPSLOT", "gone"]),
        Reply::Simple("OK".into())
    );
    assert_eq!(slots(&old).as_deref(), Some("1"));
    assert!(info(&old).slot("gone").is_none());
    old.terminate();
    old.restart().expect("restart the old primary");
    wait_caught_up(&old, &[&s1]);
    assert_eq!(
        slots(&old).as_deref(),
        Some("1"),
        "the dropped slot came back"
    );

    promote(&s1);
    follow(&old, &s1);
    wait_caught_up(&s1, &[&old]);
    assert_eq!(
        slots(&old).as_deref(),
        Some("0"),
        "a primary that became a standby kept its slots\n{}",
        old.log_tail()
    );
    assert_same_keyspace(&s1, &old);
}

/// An operator's split brain: the standby is promoted while its primary is
/// down, then the old primary is restarted *as a primary*. Both start a new
/// epoch from the same history at the same LSN, and each takes a write. The
/// two epochs must get different numbers, so that when one node is made to
/// follow the other the fork is found at the epoch start and the follower
/// ends with exactly the leader's data. (With `epoch + 1` both took the same
/// number: the follower, holding more WAL, was rewound only to the leader's
/// end, kept its own bytes before it and never got the leader's write.)
#[test]
fn a_promotion_and_a_restart_from_the_same_history_take_different_epochs() {
    let mut old = start_primary(&[]);
    let s1 = start_standby(&old, "s1", &[]);
    write_batch(&old, "a", 10);
    wait_caught_up(&old, &[&s1]);
    let _ = old.terminate();
    promote(&s1);
    set(&s1, "only-on-s1", &"x".repeat(2000));
    old.restart()
        .expect("restarting the old primary as a primary");
    set(&old, "only-on-old", "y");
    let (e_old, e_s1) = (
        info(&old).num("walship_epoch"),
        info(&s1).num("walship_epoch"),
    );
    assert_ne!(e_old, e_s1, "both new epochs got the same number");
    // The higher epoch leads; the other follows it and is rewound.
    let (leader, follower) = if e_old > e_s1 {
        (&old, &s1)
    } else {
        (&s1, &old)
    };
    follow(follower, leader);
    wait_caught_up(leader, &[follower]);
    assert_same_keyspace(leader, follower);
    let lost = if e_old > e_s1 {
        "only-on-s1"
    } else {
        "only-on-old"
    };
    assert_eq!(follower.raw().command(&["GET", lost]), Reply::Bulk(None));
}
