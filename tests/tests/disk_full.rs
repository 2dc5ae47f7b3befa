//! A real process on a full file system: a write that finds no room for its
//! WAL gets a clear error and changes nothing, reads go on, writes resume
//! once space is freed, and every acknowledged write survives a crash.
//!
//! The data directory is a small tmpfs mounted for the test, which needs
//! root (as CI runs); elsewhere the test says so and does nothing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use walship_tests::cluster::{
    info, keyspace, keyspace_diff, start_primary, start_standby, wait_caught_up, wait_until,
};
use walship_tests::crash::netns::is_root;
use walship_tests::resp::Reply;
use walship_tests::{ServerOptions, TestServer};

/// Size of the tmpfs the data directory lives on.
const TMPFS_BYTES: u64 = 8 << 20;
/// A file taking room on the tmpfs, removed to free space.
const FILLER_BYTES: usize = 3 << 20;
/// Each SET's value: a few hundred of them fill what is left.
const VALUE_BYTES: usize = 16 << 10;

/// A tmpfs mounted over a directory; lazily unmounted on drop, so a
/// panicking test leaves no mount behind even with a server still inside.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, bytes: u64) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={bytes}"),
                "walship-test",
            ])
            .arg(at)
            .status()
            .expect("running mount");
        assert!(
            status.success(),
            "mount -t tmpfs at {}: {status}",
            at.display()
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Stops `server`, moves its initialized data directory onto a small tmpfs
/// holding a filler file, and starts it again there. Returns the mount and
/// the filler's path (remove it to free space).
fn onto_small_tmpfs(server: &mut TestServer) -> (Tmpfs, PathBuf) {
    server.kill();
    let data = server.data_dir();
    let aside = server.root().join("data.aside");
    std::fs::rename(&data, &aside).unwrap();
    let tmpfs = Tmpfs::mount(&data, TMPFS_BYTES);
    let copied = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", aside.display()))
        .arg(&data)
        .status()
        .unwrap();
    assert!(
        copied.success(),
        "copying the data directory onto the tmpfs"
    );
    let filler = data.join("filler");
    std::fs::write(&filler, vec![0u8; FILLER_BYTES]).unwrap();
    server.restart().expect("restart on the tmpfs");
    (tmpfs, filler)
}

fn value(i: usize) -> Vec<u8> {
    let mut v = vec![b'a' + (i % 26) as u8; VALUE_BYTES];
    v[..8].copy_from_slice(&(i as u64).to_le_bytes());
    v
}

fn bulk(reply: &Reply) -> Option<Vec<u8>> {
    match reply {
        Reply::Bulk(b) => b.clone(),
        Reply::Null => None,
        other => panic!("expected a bulk string or nil, got {other:?}"),
    }
}

#[test]
fn a_full_disk_refuses_writes_cleanly_and_loses_nothing_acknowledged() {
    if !is_root() {
        eprintln!("disk_full: skipped, mounting a tmpfs needs root (CI runs as root)");
        return;
    }
    // Small segments, so that the file system fills at a segment boundary
    // after a few hundred writes rather than at the first one.
    let mut server = TestServer::start_with(ServerOptions {
        fsync: Some("always".into()),
        extra_args: vec!["--segment-size".into(), "1MiB".into()],
        ..ServerOptions::default()
    })
    .expect("starting walship");
    let (_tmpfs, filler) = onto_small_tmpfs(&mut server);

    let mut con = server.raw();
    let mut acked = 0usize;
    let refusal = loop {
        let reply = con.command(&[
            b"SET".as_slice(),
            format!("k{acked}").as_bytes(),
            &value(acked),
        ]);
        match reply {
            Reply::Simple(s) if s == "OK" => acked += 1,
            Reply::Error(e) => break e,
            other => panic!("SET k{acked}: unexpected reply {other:?}"),
        }
        assert!(
            acked < (TMPFS_BYTES as usize / VALUE_BYTES) * 2,
            "{acked} SETs of {VALUE_BYTES} bytes fit on a {TMPFS_BYTES}-byte tmpfs?\n{}",
            server.log_tail()
        );
    };
    assert!(acked > 0, "not one write fitted: {refusal}");
    assert!(
        refusal.contains("disk full") && refusal.contains("nothing was written"),
        "the refusal must say why and that nothing changed: {refusal}"
    );
    eprintln!("disk_full: {acked} SETs acknowledged, then: {refusal}");

    // Nothing changed: the refused key is absent, the others intact, and
    // the server goes on serving reads (a full disk does not poison it).
    let failed = format!("k{acked}");
    assert_eq!(bulk(&con.command(&["GET", &failed])), None);
    assert_eq!(con.command(&["DBSIZE"]), Reply::Integer(acked as i64));
    for i in [0, acked / 2, acked - 1] {
        assert_eq!(
            bulk(&con.command(&["GET", &format!("k{i}")])),
            Some(value(i))
        );
    }
    assert_eq!(con.command(&["PING"]), Reply::Simple("PONG".into()));
    // Still full: refused again, still changing nothing.
    assert!(con
        .command(&[b"SET".as_slice(), failed.as_bytes(), &value(acked)])
        .is_error());
    assert_eq!(con.command(&["DBSIZE"]), Reply::Integer(acked as i64));

    // Free space: writes resume.
    std::fs::remove_file(&filler).unwrap();
    let resumed = acked + 10;
    for i in acked..resumed {
        let reply = con.command(&[b"SET".as_slice(), format!("k{i}").as_bytes(), &value(i)]);
        assert_eq!(
            reply,
            Reply::Simple("OK".into()),
            "SET k{i} after space was freed\n{}",
            server.log_tail()
        );
    }

    // A crash: every acknowledged write is there after recovery.
    server.kill();
    server.restart().expect("restart after SIGKILL");
    let mut con = server.raw();
    assert_eq!(con.command(&["DBSIZE"]), Reply::Integer(resumed as i64));
    for i in 0..resumed {
        assert_eq!(
            bulk(&con.command(&["GET", &format!("k{i}")])),
            Some(value(i)),
            "k{i} after recovery"
        );
    }
    server.kill();
}

#[test]
fn a_standby_whose_disk_fills_stops_receiving_and_catches_up_once_space_is_freed() {
    if !is_root() {
        eprintln!("disk_full: skipped, mounting a tmpfs needs root (CI runs as root)");
        return;
    }
    let primary = start_primary(&["--segment-size", "1MiB"]);
    let mut standby = start_standby(&primary, "s1", &["--segment-size", "1MiB"]);
    let (_tmpfs, filler) = onto_small_tmpfs(&mut standby);
    wait_caught_up(&primary, &[&standby]);

    // The primary's disk has room: it goes on acknowledging (its standby is
    // asynchronous) past what the standby's tmpfs holds beside the filler,
    // but not past what it holds without it (no checkpoint recycles the
    // standby's WAL here).
    let total = (TMPFS_BYTES as usize - FILLER_BYTES) / VALUE_BYTES;
    let mut con = primary.raw();
    for i in 0..total {
        let reply = con.command(&[b"SET".as_slice(), format!("k{i}").as_bytes(), &value(i)]);
        assert_eq!(reply, Reply::Simple("OK".into()), "SET k{i} on the primary");
    }
    // The standby stops short, says why, and keeps what it had.
    wait_until(
        Duration::from_secs(30),
        || standby.log().contains("disk full"),
        || {
            format!(
                "the standby's log names the full disk\n{}",
                standby.log_tail()
            )
        },
    );
    let behind = info(&standby).num("master_repl_offset");
    assert!(
        behind < info(&primary).num("master_repl_offset"),
        "a {TMPFS_BYTES}-byte tmpfs cannot hold the primary's WAL"
    );
    let mut scon = standby.raw();
    assert_eq!(scon.command(&["PING"]), Reply::Simple("PONG".into()));
    let held = match scon.command(&["DBSIZE"]) {
        Reply::Integer(n) => n as usize,
        other => panic!("DBSIZE: {other:?}"),
    };
    assert!(held < total, "{held} of {total} keys on a full standby");
    for i in 0..held {
        // The keys were written in order, so the standby holds a prefix.
        assert_eq!(
            bulk(&scon.command(&["GET", &format!("k{i}")])),
            Some(value(i))
        );
    }
    let log = standby.log();
    let why = log
        .lines()
        .find(|l| l.contains("disk full"))
        .unwrap_or_default();
    eprintln!("disk_full: the standby held {held} of {total} keys when its disk filled: {why}");

    // Space freed: it reconnects, resumes from its own LSN and converges.
    std::fs::remove_file(&filler).unwrap();
    wait_caught_up(&primary, &[&standby]);
    let (a, b) = (keyspace(&primary), keyspace(&standby));
    assert!(a == b, "the standby diverged: {}", keyspace_diff(&a, &b));
}
