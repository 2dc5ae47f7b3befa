//! Hostile replication peers change nothing: a standby from another cluster
//! is refused and keeps its own data; malformed frames sent to a primary's
//! replication port close that connection only; a fake "primary" sending
//! garbage WAL or broken frames cannot change a standby's data or WAL end;
//! a standby that was sent a base backup confirms nothing until it says so;
//! a standby slow to read its base backup is not cut off once it has it,
//! and one that then goes silent is dropped after `wal-sender-timeout-ms`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use rand::Rng;
use walship_tests::cluster::frames::{self, crc32, frame};
use walship_tests::cluster::{
    info, keyspace, keyspace_diff, start_primary, start_standby, start_with_config_file,
    wait_caught_up, wait_until, write_config, Pending, CONVERGE_TIMEOUT,
};
use walship_tests::resp::Reply;
use walship_tests::seed::rng;
use walship_tests::TestServer;

/// How long a peer may take to close a connection it must close.
const CLOSE_GUARD: Duration = Duration::from_secs(15);

fn set(server: &TestServer, key: &str, value: &str) {
    assert_eq!(
        server.raw().command(&["SET", key, value]),
        Reply::Simple("OK".into())
    );
}

fn get(server: &TestServer, key: &str) -> Reply {
    server.raw().command(&["GET", key])
}

#[test]
fn another_clusters_standby_is_refused() {
    let primary = start_primary(&[]);
    set(&primary, "theirs", "primary's");

    // A node of its own cluster: started alone, as a primary, with a key.
    let (mut other, _config_dir, config) = start_with_config_file("name = \"intruder\"\n");
    set(&other, "mine", "intruder's");
    let own_cluster = info(&other).field("walship_cluster_id").to_string();
    assert_ne!(own_cluster, info(&primary).field("walship_cluster_id"));
    other.terminate();

    // Restarted as a standby of the primary.
    write_config(
        &config,
        &format!(
            "name = \"intruder\"\nreplicate-from = \"127.0.0.1:{}\"\n",
            primary.port()
        ),
    );
    other.restart().expect("restarting as a standby");
    wait_until(
        CONVERGE_TIMEOUT,
        || {
            info(&other)
                .get("walship_last_error")
                .is_some_and(|e| e.contains("cluster"))
        },
        || {
            format!(
                "a refusal naming the cluster: {:#?}\n{}",
                info(&other),
                other.log_tail()
            )
        },
    );
    let refused = info(&other);
    assert_eq!(refused.field("role"), "slave");
    assert_eq!(refused.field("master_link_status"), "down", "{refused:#?}");
    assert_eq!(
        refused.field("walship_cluster_id"),
        own_cluster,
        "its identity is untouched"
    );
    assert_eq!(refused.num("walship_base_backups"), 0, "{refused:#?}");
    assert_eq!(
        get(&other, "mine"),
        Reply::Bulk(Some(b"intruder's".to_vec()))
    );
    assert_eq!(get(&other, "theirs"), Reply::Bulk(None));

    // The primary made no slot for it and lists no standby.
    let primary_info = info(&primary);
    assert!(primary_info.slot("intruder").is_none(), "{primary_info:#?}");
    assert_eq!(primary_info.num("connected_slaves"), 0, "{primary_info:#?}");
    assert_eq!(get(&primary, "mine"), Reply::Bulk(None));

    // The same holds when a running primary is re-pointed with REPLICAOF.
    let third = start_primary(&[]);
    set(&third, "third", "3");
    let port = primary.port().to_string();
    assert_eq!(
        third.raw().command(&["REPLICAOF", "127.0.0.1", &port]),
        Reply::Simple("OK".into())
    );
    wait_until(
        CONVERGE_TIMEOUT,
        || {
            info(&third)
                .get("walship_last_error")
                .is_some_and(|e| e.contains("cluster"))
        },
        || {
            format!(
                "a refusal naming the cluster: {:#?}\n{}",
                info(&third),
                third.log_tail()
            )
        },
    );
    assert_eq!(get(&third, "third"), Reply::Bulk(Some(b"3".to_vec())));
    assert_eq!(get(&third, "theirs"), Reply::Bulk(None));
}

/// Opens a replication stream to `primary` the way a standby does.
fn open_stream(primary: &TestServer) -> walship_tests::resp::RawConn {
    let mut con = primary.raw();
    assert_eq!(
        con.command(&["WALSHIP", "STREAM", "1"]),
        Reply::Simple("STREAM".into())
    );
    con
}

fn hostile_inputs(
    seed_rng: &mut impl Rng,
    cluster_id: u64,
    epoch: u64,
) -> Vec<(&'static str, Vec<u8>)> {
    let mut cases: Vec<(&'static str, Vec<u8>)> = Vec::new();

    let random: Vec<u8> = (0..4096).map(|_| seed_rng.gen()).collect();
    cases.push(("random bytes", random));

    cases.push(("length 0xFFFFFFFF", {
        let mut b = u32::MAX.to_le_bytes().to_vec();
        b.extend_from_slice(&[0; 4]);
        b.push(frames::HELLO);
        b
    }));
    cases.push(("length one over the limit", {
        let mut b = (16 * 1024 * 1024 + 4096 + 1u32).to_le_bytes().to_vec();
        b.extend_from_slice(&[0; 4]);
        b
    }));
    cases.push(("length zero", vec![0; 8]));

    let hello = frames::hello(frames::PROTO_VERSION, cluster_id, epoch, 0, "hostile");
    cases.push(("Hello with a bad CRC", {
        let mut b = frame(frames::HELLO, &hello);
        b[4] ^= 0xFF;
        b
    }));
    cases.push(("Hello with a flipped payload byte", {
        let mut b = frame(frames::HELLO, &hello);
        let last = b.len() - 1;
        b[last] ^= 0x01;
        b
    }));
    cases.push(("unknown frame type", frame(0xEE, b"whatever")));
    cases.push(("truncated Hello payload", frame(frames::HELLO, &hello[..7])));
    cases.push(("Hello name length past the payload", {
        let mut p = hello[..28].to_vec();
        p.extend_from_slice(&1000u32.to_le_bytes());
        p.extend_from_slice(b"short");
        frame(frames::HELLO, &p)
    }));
    cases.push((
        "Hello name not UTF-8",
        frame(frames::HELLO, &{
            let mut p = hello[..28].to_vec();
            p.extend_from_slice(&2u32.to_le_bytes());
            p.extend_from_slice(&[0xC3, 0x28]);
            p
        }),
    ));
    cases.push(("Status before Hello", frame(frames::STATUS, &[0u8; 32])));
    cases.push((
        "WalData sent to the primary",
        frame(
            frames::WAL_DATA,
            &frames::wal_data(epoch, 0, 0, &[0xAB; 64]),
        ),
    ));
    // A CRC-correct frame whose checksum itself was built over other bytes.
    cases.push(("CRC of another payload", {
        let mut b = frame(frames::HELLO, &hello);
        let other = crc32(b"not this frame");
        b[4..8].copy_from_slice(&other.to_le_bytes());
        b
    }));
    cases
}

#[test]
fn hostile_frames_change_nothing() {
    let mut rng = rng("hostile_frames_change_nothing");
    let primary = start_primary(&[]);
    for i in 0..20 {
        set(&primary, &format!("k{i}"), &format!("v{i}"));
    }
    let before = keyspace(&primary);
    let info_before = info(&primary);
    let end_before = info_before.num("master_repl_offset");
    let cluster_id =
        u64::from_str_radix(info_before.field("walship_cluster_id"), 16).expect("hex cluster id");
    let epoch = info_before.num("walship_epoch");

    for (what, bytes) in hostile_inputs(&mut rng, cluster_id, epoch) {
        let mut con = open_stream(&primary);
        // The server may close while we are still sending: that is fine.
        let _ = con.send(&bytes);
        if what == "random bytes" {
            // Random bytes may declare a plausible length and wait for more.
            let _ = con.shutdown_write();
        }
        let started = Instant::now();
        let answer = con.read_until_closed().unwrap_or_else(|e| {
            panic!(
                "{what}: the primary did not close the stream: {e}\n{}",
                primary.log_tail()
            )
        });
        assert!(started.elapsed() < CLOSE_GUARD + Duration::from_secs(10));
        for (kind, payload) in frames::parse(&answer) {
            assert!(
                kind == frames::ERROR || kind == frames::REFUSE,
                "{what}: the primary answered with frame type {kind} ({:?})",
                frames::reason(&payload)
            );
        }
        assert_eq!(
            primary.raw().command(&["PING"]),
            Reply::Simple("PONG".into()),
            "{what}"
        );
    }

    // Well-formed Hellos the primary must refuse, saying why.
    let refusals: [(&str, Vec<u8>, &str); 2] = [
        (
            "another cluster",
            frames::hello(
                frames::PROTO_VERSION,
                cluster_id ^ 0x5A5A,
                epoch,
                100,
                "stranger",
            ),
            "cluster",
        ),
        (
            "protocol version 99",
            frames::hello(99, cluster_id, epoch, 0, "future"),
            "version",
        ),
    ];
    for (what, hello, word) in refusals {
        let mut con = open_stream(&primary);
        con.send(&frame(frames::HELLO, &hello))
            .expect("sending Hello");
        let answer = con
            .read_until_closed()
            .unwrap_or_else(|e| panic!("{what}: the primary did not close the stream: {e}"));
        let parsed = frames::parse(&answer);
        let (kind, payload) = parsed
            .first()
            .unwrap_or_else(|| panic!("{what}: the primary closed without a Refuse frame"));
        assert_eq!(
            *kind,
            frames::REFUSE,
            "{what}: {:?}",
            frames::reason(payload)
        );
        let reason = frames::reason(payload);
        assert!(
            reason.to_lowercase().contains(word),
            "{what}: refusal {reason:?} should mention {word}"
        );
    }

    // Nothing changed, and the primary still serves clients and standbys.
    let after_info = info(&primary);
    assert_eq!(
        after_info.num("master_repl_offset"),
        end_before,
        "{after_info:#?}"
    );
    assert_eq!(
        after_info.num("walship_slots"),
        0,
        "no slot for a refused peer: {after_info:#?}"
    );
    assert_eq!(after_info.num("connected_slaves"), 0, "{after_info:#?}");
    let after = keyspace(&primary);
    assert!(after == before, "{}", keyspace_diff(&after, &before));
    let standby = start_standby(&primary, "real", &[]);
    set(&primary, "after-hostile", "1");
    wait_caught_up(&primary, &[&standby]);
    let on_standby = keyspace(&standby);
    let on_primary = keyspace(&primary);
    assert!(
        on_standby == on_primary,
        "{}",
        keyspace_diff(&on_standby, &on_primary)
    );
}

#[test]
fn a_hello_from_a_newer_epoch_fences_the_primary_until_it_is_promoted_again() {
    let primary = start_primary(&[]);
    set(&primary, "before", "1");
    let info_before = info(&primary);
    let cluster_id =
        u64::from_str_radix(info_before.field("walship_cluster_id"), 16).expect("hex cluster id");
    let epoch = info_before.num("walship_epoch");
    let end = info_before.num("master_repl_offset");
    let before = keyspace(&primary);

    let mut con = open_stream(&primary);
    con.send(&frame(
        frames::HELLO,
        &frames::hello(
            frames::PROTO_VERSION,
            cluster_id,
            epoch + 10,
            end,
            "from-the-future",
        ),
    ))
    .expect("sending Hello");
    let answer = con
        .read_until_closed()
        .expect("the primary closes the stream");
    let parsed = frames::parse(&answer);
    let (kind, payload) = parsed.first().expect("a Refuse frame");
    assert_eq!(*kind, frames::REFUSE, "{:?}", frames::reason(payload));
    assert!(frames::reason(payload).contains("epoch"));

    // Deposed: no write is taken, nothing changed, reads go on.
    match primary.raw().command(&["SET", "after", "1"]) {
        Reply::Error(e) => assert!(e.starts_with("READONLY"), "{e}"),
        other => panic!("a fenced primary took a write: {other:?}"),
    }
    let fenced = info(&primary);
    assert_eq!(fenced.num("walship_fenced"), 1, "{fenced:#?}");
    assert_eq!(fenced.num("walship_fenced_by_epoch"), epoch + 10);
    assert_eq!(fenced.num("master_repl_offset"), end);
    assert!(keyspace(&primary) == before);

    // The operator promotes it again: a new epoch above the one it heard of.
    assert!(matches!(
        primary.raw().command(&["REPLICAOF", "NO", "ONE"]),
        Reply::Simple(s) if s.contains("promoted")
    ));
    let after = info(&primary);
    assert_eq!(after.num("walship_fenced"), 0);
    assert!(after.num("walship_epoch") > epoch + 10, "{after:#?}");
    set(&primary, "after", "1");
}

/// A synchronous write is acknowledged only once its standby reports it
/// flushed: being sent a base backup that holds the write is not enough (the
/// standby may not have installed it, and would lose it if promoted).
#[test]
fn a_standby_sent_a_base_backup_confirms_nothing_until_it_reports() {
    let primary = start_primary(&["--synchronous-standby-names", "FIRST 1 (fake)"]);
    // Waits: the only synchronous standby is not connected yet.
    let mut pending = Pending::send(&primary, &[], &["SET", "k", "v"]);
    assert_eq!(pending.reply_within(Duration::from_millis(300)), None);

    // A blank standby: the primary sends a base backup, whose checkpoint
    // holds the waiting write.
    let con = open_stream(&primary);
    let mut stream = con.stream().try_clone().expect("clone the stream");
    stream
        .write_all(&frame(
            frames::HELLO,
            &frames::hello(frames::PROTO_VERSION, 0, 0, 0, "fake"),
        ))
        .expect("sending Hello");
    let epoch = receive_base_backup(&mut stream, Duration::ZERO);
    assert_eq!(
        pending.reply_within(Duration::from_millis(500)),
        None,
        "a write was acknowledged on the strength of a base backup the standby never confirmed"
    );

    // The standby reports that it flushed everything: now it is confirmed.
    let end = info(&primary).num("master_repl_offset");
    stream
        .write_all(&frame(
            frames::STATUS,
            &frames::status(epoch, end, end, end),
        ))
        .expect("sending Status");
    assert_eq!(pending.reply(), Reply::Simple("OK".into()));
}

/// A standby in the middle of a base backup has no consistent state: it is
/// not promoted, and it goes on with the backup.
#[test]
fn a_standby_receiving_a_base_backup_is_not_promoted() {
    let node = start_primary(&[]);
    let listener = TcpListener::bind("127.0.0.1:0").expect("fake primary listener");
    listener.set_nonblocking(true).unwrap();
    let fake_port = listener.local_addr().unwrap().port().to_string();
    assert_eq!(
        node.raw().command(&["REPLICAOF", "127.0.0.1", &fake_port]),
        Reply::Simple("OK".into())
    );
    // The fake primary starts a base backup and stalls in the middle.
    let _stream = serve_one(&listener, |cluster_id, epoch, _| {
        let all = base_backup_frames(cluster_id, epoch + 1, 1 << 20, 1 << 20, &[0; 64], &[], 0);
        // Welcome, BackupBegin and part of the first chunk.
        all[..all.len() / 2].to_vec()
    });
    wait_until(
        CONVERGE_TIMEOUT,
        || info(&node).field("walship_replication_state") == "backup",
        || format!("standby receiving the backup: {:#?}", info(&node)),
    );
    match node.raw().command(&["REPLICAOF", "NO", "ONE"]) {
        Reply::Error(e) => assert!(e.contains("base backup"), "{e}"),
        other => panic!("a standby in the middle of a base backup was promoted: {other:?}"),
    }
    let after = info(&node);
    assert_eq!(after.field("role"), "slave", "{after:#?}");
    assert_eq!(after.field("walship_replication_state"), "backup");
}

/// Reads the standby's handshake command up to its last CRLF.
fn read_handshake(stream: &mut TcpStream) {
    // *3 $7 WALSHIP $6 STREAM $n PORT: 7 lines.
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while seen.windows(2).filter(|w| w == b"\r\n").count() < 7 {
        stream
            .read_exact(&mut byte)
            .expect("reading the standby's handshake");
        seen.push(byte[0]);
        assert!(
            seen.len() < 4096,
            "handshake too long: {:?}",
            String::from_utf8_lossy(&seen)
        );
    }
    let text = String::from_utf8_lossy(&seen).to_string();
    assert!(
        text.contains("WALSHIP") && text.contains("STREAM"),
        "handshake {text:?}"
    );
}

/// Reads one frame; returns (type, payload).
fn read_frame(stream: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut header = [0u8; 8];
    stream
        .read_exact(&mut header)
        .expect("reading a frame header");
    let len = u32::from_le_bytes(header[0..4].try_into().unwrap()) as usize;
    assert!((1..=1 << 20).contains(&len), "frame length {len}");
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).expect("reading a frame body");
    assert_eq!(
        crc32(&body),
        u32::from_le_bytes(header[4..8].try_into().unwrap()),
        "frame CRC"
    );
    (body[0], body[1..].to_vec())
}

/// Accepts one connection within `CLOSE_GUARD`.
fn accept(listener: &TcpListener) -> TcpStream {
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).unwrap();
                stream.set_read_timeout(Some(CLOSE_GUARD)).unwrap();
                stream.set_write_timeout(Some(CLOSE_GUARD)).unwrap();
                return stream;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("the standby did not connect to the fake primary: {e}"),
        }
    }
}

/// Whether the peer closed the connection (EOF or reset) within the guard,
/// discarding whatever it sent meanwhile (Status frames).
fn closed_by_peer(stream: &mut TcpStream) -> bool {
    let mut sink = [0u8; 4096];
    loop {
        match stream.read(&mut sink) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// A WAL record header with a payload length that makes it "whole", a
/// random CRC and type Put, then random payload bytes.
fn garbage_record(rng: &mut impl Rng, payload_len: u32) -> Vec<u8> {
    let mut r = payload_len.to_le_bytes().to_vec();
    r.extend_from_slice(&rng.gen::<u32>().to_le_bytes());
    r.extend_from_slice(&[1, 0, 0, 0]);
    r.extend((0..payload_len).map(|_| rng.gen::<u8>()));
    r
}

#[test]
fn hostile_primary_cannot_change_a_standby() {
    let mut rng = rng("hostile_primary_cannot_change_a_standby");
    let primary = start_primary(&[]);
    let standby = start_standby(&primary, "victim", &[]);
    for i in 0..20 {
        set(&primary, &format!("k{i}"), &format!("v{i}"));
    }
    wait_caught_up(&primary, &[&standby]);
    let before = keyspace(&standby);
    let info_before = info(&standby);
    let end_before = info_before.num("master_repl_offset");

    let listener = TcpListener::bind("127.0.0.1:0").expect("fake primary listener");
    listener.set_nonblocking(true).unwrap();
    let fake_port = listener.local_addr().unwrap().port().to_string();
    assert_eq!(
        standby
            .raw()
            .command(&["REPLICAOF", "127.0.0.1", &fake_port]),
        Reply::Simple("OK".into())
    );

    type Case = Box<dyn Fn(&mut dyn FnMut(u32) -> Vec<u8>, u64, u64) -> Vec<u8>>;
    let cases: Vec<(&str, Case)> = vec![
        (
            "a record with a wrong CRC",
            Box::new(|garbage, epoch, end| {
                frame(
                    frames::WAL_DATA,
                    &frames::wal_data(epoch, end, end, &garbage(40)),
                )
            }),
        ),
        (
            "an all-zero record header",
            Box::new(|_, epoch, end| {
                frame(
                    frames::WAL_DATA,
                    &frames::wal_data(epoch, end, end, &[0u8; 12]),
                )
            }),
        ),
        (
            "a record length past the largest record",
            Box::new(|_, epoch, end| {
                let mut r = ((1u32 << 30) + 1).to_le_bytes().to_vec();
                r.extend_from_slice(&[0x55, 0x55, 0x55, 0x55, 1, 0, 0, 0]);
                r.extend_from_slice(&[0u8; 52]);
                frame(frames::WAL_DATA, &frames::wal_data(epoch, end, end, &r))
            }),
        ),
        (
            "a frame with a bad CRC",
            Box::new(|garbage, epoch, end| {
                let mut f = frame(
                    frames::WAL_DATA,
                    &frames::wal_data(epoch, end, end, &garbage(40)),
                );
                f[5] ^= 0x10;
                f
            }),
        ),
        (
            "WAL at the wrong LSN",
            Box::new(|garbage, epoch, end| {
                frame(
                    frames::WAL_DATA,
                    &frames::wal_data(epoch, end + 4096, end + 4096, &garbage(40)),
                )
            }),
        ),
        (
            "an oversized frame length",
            Box::new(|_, _, _| {
                let mut b = u32::MAX.to_le_bytes().to_vec();
                b.extend_from_slice(&[0u8; 4]);
                b.push(frames::WAL_DATA);
                b
            }),
        ),
        (
            "a Hello sent to the standby",
            Box::new(|_, epoch, end| frame(frames::HELLO, &frames::hello(1, 1, epoch, end, "x"))),
        ),
    ];

    let mut not_closed = Vec::new();
    for (what, case) in &cases {
        let mut stream = accept(&listener);
        read_handshake(&mut stream);
        stream.write_all(b"+STREAM\r\n").unwrap();
        let (kind, hello) = read_frame(&mut stream);
        assert_eq!(kind, frames::HELLO);
        let cluster_id = u64::from_le_bytes(hello[4..12].try_into().unwrap());
        let epoch = u64::from_le_bytes(hello[12..20].try_into().unwrap());
        let end = u64::from_le_bytes(hello[20..28].try_into().unwrap());
        assert_eq!(
            end, end_before,
            "{what}: the standby's WAL end in its Hello"
        );
        let mut out = frame(
            frames::WELCOME,
            &frames::welcome(cluster_id, epoch, end, end + 64),
        );
        let mut garbage = |len: u32| garbage_record(&mut rng, len);
        out.extend_from_slice(&case(&mut garbage, epoch, end));
        let _ = stream.write_all(&out);
        if !closed_by_peer(&mut stream) {
            not_closed.push(*what);
        }
        assert_eq!(
            standby.raw().command(&["PING"]),
            Reply::Simple("PONG".into()),
            "{what}"
        );
        assert_eq!(
            info(&standby).num("master_repl_offset"),
            end_before,
            "{what}: the WAL end moved"
        );
    }

    let after_info = info(&standby);
    assert_eq!(after_info.field("role"), "slave");
    assert_eq!(
        after_info.num("master_repl_offset"),
        end_before,
        "{after_info:#?}"
    );
    assert_eq!(
        after_info.field("walship_cluster_id"),
        info_before.field("walship_cluster_id")
    );
    assert_eq!(
        after_info.field("walship_epoch"),
        info_before.field("walship_epoch")
    );
    assert!(
        after_info.get("walship_last_error").is_some(),
        "an error is shown: {after_info:#?}"
    );
    let after = keyspace(&standby);
    assert!(
        after == before,
        "the standby's data changed: {}",
        keyspace_diff(&after, &before)
    );
    assert!(
        not_closed.is_empty(),
        "the standby kept these hostile streams open (within {CLOSE_GUARD:?}): {not_closed:?}\n{}",
        standby.log_tail()
    );

    // Back to the real primary: it resumes from its own WAL end and catches up.
    let real = primary.port().to_string();
    assert_eq!(
        standby.raw().command(&["REPLICAOF", "127.0.0.1", &real]),
        Reply::Simple("OK".into())
    );
    set(&primary, "after", "fake");
    wait_caught_up(&primary, &[&standby]);
    let resumed = info(&standby);
    assert_eq!(resumed.num("walship_base_backups"), 0, "{resumed:#?}");
    let (a, b) = (keyspace(&primary), keyspace(&standby));
    assert!(a == b, "{}", keyspace_diff(&b, &a));
}

/// The newest checkpoint of a primary's data dir: (redo LSN, file bytes),
/// and its epoch history file.
fn newest_checkpoint(primary: &TestServer) -> (u64, Vec<u8>, Vec<u8>) {
    let dir = primary.data_dir().join("checkpoints");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".ckpt"))
        .collect();
    names.sort();
    let name = names.last().expect("a checkpoint after SAVE");
    let redo = u64::from_str_radix(name.trim_end_matches(".ckpt"), 16).expect("hex redo LSN name");
    let ckpt = std::fs::read(dir.join(name)).expect("reading the checkpoint");
    let epochs = std::fs::read(primary.data_dir().join("epochs")).expect("reading epochs");
    (redo, ckpt, epochs)
}

/// A base backup as a primary sends it after `Welcome`.
#[allow(clippy::too_many_arguments)]
fn base_backup_frames(
    cluster_id: u64,
    epoch: u64,
    redo: u64,
    end: u64,
    ckpt: &[u8],
    epochs: &[u8],
    transfer_crc: u32,
) -> Vec<u8> {
    let mut out = frame(frames::WELCOME, &{
        let mut p = frames::welcome(cluster_id, epoch, redo, end);
        *p.last_mut().unwrap() = 1; // base backup follows
        p
    });
    let mut begin = Vec::new();
    for v in [cluster_id, epoch, redo, end, ckpt.len() as u64] {
        begin.extend_from_slice(&v.to_le_bytes());
    }
    out.extend(frame(7, &begin));
    let chunk = |kind: u8, data: &[u8]| {
        let mut p = vec![kind];
        p.extend_from_slice(&0u64.to_le_bytes());
        p.extend_from_slice(data);
        frame(8, &p)
    };
    out.extend(chunk(0, ckpt));
    out.extend(chunk(1, epochs));
    let mut end_payload = transfer_crc.to_le_bytes().to_vec();
    end_payload.extend_from_slice(&redo.to_le_bytes());
    end_payload.extend_from_slice(&end.to_le_bytes());
    out.extend(frame(9, &end_payload));
    out
}

/// Serves one standby connection: handshake, Hello, then `reply(hello)`.
/// Returns the stream (still open) and the Hello's cluster id.
fn serve_one(listener: &TcpListener, reply: impl FnOnce(u64, u64, u64) -> Vec<u8>) -> TcpStream {
    let mut stream = accept(listener);
    read_handshake(&mut stream);
    stream.write_all(b"+STREAM\r\n").unwrap();
    let (kind, hello) = read_frame(&mut stream);
    assert_eq!(kind, frames::HELLO);
    let cluster_id = u64::from_le_bytes(hello[4..12].try_into().unwrap());
    let epoch = u64::from_le_bytes(hello[12..20].try_into().unwrap());
    let end = u64::from_le_bytes(hello[20..28].try_into().unwrap());
    let _ = stream.write_all(&reply(cluster_id, epoch, end));
    stream
}

#[test]
fn corrupt_base_backups_change_nothing() {
    let primary = start_primary(&[]);
    let victim = start_standby(&primary, "victim", &[]);
    for i in 0..20 {
        set(&primary, &format!("k{i}"), &format!("v{i}"));
    }
    assert_eq!(primary.raw().command(&["SAVE"]), Reply::Simple("OK".into()));
    wait_caught_up(&primary, &[&victim]);
    let primary_info = info(&primary);
    let cluster_id =
        u64::from_str_radix(primary_info.field("walship_cluster_id"), 16).expect("hex cluster id");
    let epoch = primary_info.num("walship_epoch");
    let (redo, ckpt, epochs) = newest_checkpoint(&primary);
    let before = keyspace(&victim);
    let end_before = info(&victim).num("master_repl_offset");

    let listener = TcpListener::bind("127.0.0.1:0").expect("fake primary listener");
    listener.set_nonblocking(true).unwrap();
    let fake_port = listener.local_addr().unwrap().port().to_string();
    assert_eq!(
        victim
            .raw()
            .command(&["REPLICAOF", "127.0.0.1", &fake_port]),
        Reply::Simple("OK".into())
    );

    // 1. A checkpoint damaged in transit (transfer CRC of the original).
    // 2. A damaged checkpoint whose transfer CRC matches the damage (the
    //    checkpoint's own CRCs must catch it).
    let mut damaged = ckpt.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x40;
    for (what, crc) in [
        ("transfer CRC mismatch", crc32(&ckpt)),
        ("checkpoint damaged inside", crc32(&damaged)),
    ] {
        let mut stream = serve_one(&listener, |_, _, _| {
            base_backup_frames(cluster_id, epoch, redo, redo + 4096, &damaged, &epochs, crc)
        });
        assert!(
            closed_by_peer(&mut stream),
            "{what}: the standby kept the stream open"
        );
        let now = info(&victim);
        assert_eq!(now.num("walship_base_backups"), 0, "{what}: {now:#?}");
        assert_eq!(
            now.num("master_repl_offset"),
            end_before,
            "{what}: {now:#?}"
        );
        assert_eq!(now.field("walship_consistent"), "1", "{what}");
        let after = keyspace(&victim);
        assert!(
            after == before,
            "{what}: {}",
            keyspace_diff(&after, &before)
        );
    }
    assert!(
        !victim.data_dir().join("basebackup.ready").exists(),
        "no marker for a refused backup"
    );

    // 3. The control case: the same backup intact installs, and the standby
    //    serves the checkpoint's state.
    let _open = serve_one(&listener, |_, _, _| {
        base_backup_frames(cluster_id, epoch, redo, redo, &ckpt, &epochs, crc32(&ckpt))
    });
    wait_until(
        CONVERGE_TIMEOUT,
        || {
            let now = info(&victim);
            now.num("walship_base_backups") == 1 && now.field("walship_consistent") == "1"
        },
        || {
            format!(
                "the intact backup installed: {:#?}\n{}",
                info(&victim),
                victim.log_tail()
            )
        },
    );
    assert_eq!(info(&victim).num("master_repl_offset"), redo);
    let after = keyspace(&victim);
    assert!(after == before, "{}", keyspace_diff(&after, &before));
}

/// Two standbys under one name would share one replication slot (the
/// faster one would advance it past WAL the slower one still needs) and
/// count once for `synchronous_standby_names`: the second is refused while
/// the first is connected, as PostgreSQL allows one walsender per slot, and
/// is admitted once the first is gone.
#[test]
fn a_second_standby_with_a_name_in_use_is_refused() {
    let primary = start_primary(&["--synchronous-standby-names", "FIRST 1 (s1)"]);
    let mut first = start_standby(&primary, "s1", &[]);
    wait_caught_up(&primary, &[&first]);
    set(&primary, "k", "v");
    let second = start_standby(&primary, "s1", &[]);
    wait_until(
        CONVERGE_TIMEOUT,
        || {
            info(&second)
                .get("walship_last_error")
                .is_some_and(|e| e.contains("already connected"))
        },
        || format!("a refusal naming the name in use: {:#?}", info(&second)),
    );
    assert_eq!(info(&primary).num("connected_slaves"), 1);
    set(&primary, "k2", "v2");
    first.kill();
    wait_caught_up(&primary, &[&second]);
    assert_eq!(get(&second, "k2"), Reply::Bulk(Some(b"v2".to_vec())));
    assert_eq!(info(&primary).num("connected_slaves"), 1);
}

/// A standby refused for a wrong password is let in by `CONFIG SET
/// masterauth` (Redis's name; `replicate-password` is the flag's) without
/// a restart: it reconnects at once with the new password and catches up.
#[test]
fn masterauth_set_at_runtime_lets_a_refused_standby_in() {
    let primary = start_primary(&["--requirepass", "secret"]);
    let standby = start_standby(&primary, "s1", &["--replicate-password", "wrong"]);
    wait_until(
        CONVERGE_TIMEOUT,
        || {
            info(&standby)
                .get("walship_last_error")
                .is_some_and(|e| e.contains("WRONGPASS"))
        },
        || format!("a refusal for the password: {:#?}", info(&standby)),
    );
    let mut con = standby.raw();
    assert_eq!(
        con.command(&["CONFIG", "SET", "masterauth", "secret"]),
        Reply::Simple("OK".into())
    );
    assert_eq!(
        con.command(&["CONFIG", "GET", "replicate-password"]),
        Reply::Array(Some(vec![
            Reply::Bulk(Some(b"replicate-password".to_vec())),
            Reply::Bulk(Some(b"secret".to_vec())),
        ]))
    );
    let mut admin = primary.raw();
    assert_eq!(
        admin.command(&["AUTH", "secret"]),
        Reply::Simple("OK".into())
    );
    assert_eq!(
        admin.command(&["SET", "k", "v"]),
        Reply::Simple("OK".into())
    );
    wait_until(
        CONVERGE_TIMEOUT,
        || get(&standby, "k") == Reply::Bulk(Some(b"v".to_vec())),
        || format!("the standby caught up: {:#?}", info(&standby)),
    );
    assert_eq!(info(&standby).field("master_link_status"), "up");
}

/// Reads one frame of any size up to 2 MiB (a base backup's chunks carry
/// 1 MiB of data plus their header); `None` once the peer closed.
fn read_any_frame(stream: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut header = [0u8; 8];
    stream.read_exact(&mut header).ok()?;
    let len = u32::from_le_bytes(header[0..4].try_into().unwrap()) as usize;
    assert!((1..=2 << 20).contains(&len), "frame length {len}");
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).ok()?;
    Some((body[0], body[1..].to_vec()))
}

/// Reads a base backup up to its BackupEnd, as a blank standby that
/// installs nothing, pausing `pause` after each frame; returns the epoch
/// its BackupBegin named.
fn receive_base_backup(stream: &mut TcpStream, pause: Duration) -> u64 {
    let mut epoch = None;
    loop {
        thread::sleep(pause);
        let (kind, payload) =
            read_any_frame(stream).expect("the primary closed the stream during the backup");
        assert!(
            kind != frames::REFUSE && kind != frames::ERROR,
            "{}",
            frames::reason(&payload)
        );
        if kind == frames::BACKUP_BEGIN {
            epoch = Some(u64::from_le_bytes(payload[8..16].try_into().unwrap()));
        }
        if kind == frames::BACKUP_END {
            return epoch.expect("a BackupBegin before the BackupEnd");
        }
    }
}

/// Writes `count` values of `len` bytes through a client.
fn write_values(server: &TestServer, count: usize, len: usize) {
    let value = "v".repeat(len);
    let mut con = server.connection();
    for i in 0..count {
        let _: () = redis::cmd("SET")
            .arg(format!("value{i}"))
            .arg(&value)
            .query(&mut con)
            .expect("SET");
    }
}

/// A Hello frame from a standby named `name` that shares `primary`'s
/// cluster and epoch history and says it flushed `at(primary's WAL end)`;
/// also the primary's epoch and WAL end.
fn hello_as_a_standby_of(
    primary: &TestServer,
    name: &str,
    at: impl Fn(u64) -> u64,
) -> (Vec<u8>, (u64, u64)) {
    let primary_info = info(primary);
    let cluster_id =
        u64::from_str_radix(primary_info.field("walship_cluster_id"), 16).expect("hex cluster id");
    let epoch = primary_info.num("walship_epoch");
    let end = primary_info.num("master_repl_offset");
    let history = frames::read_epochs(&primary.data_dir());
    let hello = frames::hello_with_history(
        frames::PROTO_VERSION,
        cluster_id,
        epoch,
        at(end),
        name,
        &history,
    );
    (frame(frames::HELLO, &hello), (epoch, end))
}

/// Asserts that `primary` logged dropping a standby for its silence.
fn assert_dropped_as_silent(primary: &TestServer) {
    assert!(
        primary
            .log()
            .contains("timed out waiting for a status report from the standby"),
        "{}",
        primary.log_tail()
    );
}

/// Whether `primary` lists a standby named `name`.
fn listed(primary: &TestServer, name: &str) -> bool {
    info(primary).slave_named(name).is_some()
}

/// A standby reports nothing while its base backup arrives, so a backup
/// that takes longer than `wal-sender-timeout-ms` (here: a standby reading
/// 1 MiB every 100 ms, about 5 s in all, with a 3 s timeout) must not end
/// the stream the moment it is sent: the silence is timed from the end of
/// the transfer (and each frame of the backup only has to be taken within
/// the timeout). Then the timeout does its job: once the standby stops
/// reporting, it is dropped.
#[test]
fn a_slow_base_backup_is_not_cut_off_and_a_silent_standby_is() {
    let primary = start_primary(&["--wal-sender-timeout-ms", "3000"]);
    // 48 MiB of state: more than the socket buffers hold, so the primary's
    // sends wait for the reader.
    write_values(&primary, 768, 64 << 10);
    let raw = open_stream(&primary);
    let mut stream = raw.stream().try_clone().expect("clone the stream");
    stream.set_read_timeout(Some(CLOSE_GUARD)).unwrap();
    stream
        .write_all(&frame(
            frames::HELLO,
            &frames::hello(frames::PROTO_VERSION, 0, 0, 0, "slow"),
        ))
        .expect("sending Hello");
    let epoch = receive_base_backup(&mut stream, Duration::from_millis(100));
    // Reports as a standby does once it installed the backup, every 200 ms
    // for 4 s (more than the timeout), reading what comes meanwhile.
    let end = info(&primary).num("master_repl_offset");
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let reporting = Instant::now();
    while reporting.elapsed() < Duration::from_secs(4) {
        stream
            .write_all(&frame(
                frames::STATUS,
                &frames::status(epoch, end, end, end),
            ))
            .expect("the primary dropped the standby right after its base backup");
        let mut sink = [0u8; 64 << 10];
        match stream.read(&mut sink) {
            Ok(0) => panic!(
                "the primary closed the stream after the base backup: {}",
                primary.log_tail()
            ),
            Ok(_) => {}
            Err(e) => assert!(
                matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
                "{e}"
            ),
        }
    }
    assert!(
        listed(&primary, "slow"),
        "the standby is still connected after its backup: {:#?}\n{}",
        info(&primary),
        primary.log_tail()
    );
    // Silent from here (reading nothing either): dropped after the timeout.
    wait_until(
        CLOSE_GUARD,
        || !listed(&primary, "slow"),
        || format!("a silent standby dropped: {}", primary.log_tail()),
    );
    assert_dropped_as_silent(&primary);
}

/// A standby whose resume LSN falls inside a record (its WAL does not
/// match the primary's, or it lies) is told so and re-seeded by base backup
/// when it comes back. The primary does not take that for damage in its own
/// WAL: a real standby that needs WAL from before that point streams on
/// without a base backup.
#[test]
fn a_standby_resuming_inside_a_record_is_reseeded_and_others_are_not() {
    let primary = start_primary(&[]);
    let mut s1 = start_standby(&primary, "s1", &[]);
    set(&primary, "a", "1");
    wait_caught_up(&primary, &[&s1]);
    s1.terminate();
    for i in 0..20 {
        set(&primary, &format!("k{i}"), "v");
    }
    // Three bytes before the end: inside the last record.
    let (hello, _) = hello_as_a_standby_of(&primary, "liar", |end| end - 3);

    let mut con = open_stream(&primary);
    con.send(&hello).expect("sending Hello");
    let answer = con
        .read_until_closed()
        .expect("the primary closes the stream");
    let parsed = frames::parse(&answer);
    let kinds: Vec<u8> = parsed.iter().map(|(k, _)| *k).collect();
    assert_eq!(kinds.first(), Some(&frames::WELCOME), "{kinds:?}");
    let (kind, payload) = parsed.last().expect("frames");
    assert_eq!(*kind, frames::ERROR, "{kinds:?}");
    assert!(
        frames::reason(payload).contains("is not a valid record"),
        "{}",
        frames::reason(payload)
    );

    // Back again: a base backup, not the same stream.
    let con = open_stream(&primary);
    let mut stream = con.stream().try_clone().expect("clone the stream");
    stream.set_read_timeout(Some(CLOSE_GUARD)).unwrap();
    stream.write_all(&hello).expect("sending Hello");
    receive_base_backup(&mut stream, Duration::ZERO);

    // s1 needs WAL from before the liar's LSN: it streams on.
    s1.restart().expect("restarting s1");
    wait_caught_up(&primary, &[&s1]);
    assert_eq!(
        info(&s1).num("walship_base_backups"),
        0,
        "a standby behind the liar's LSN was re-seeded: {}",
        primary.log_tail()
    );
    assert_eq!(keyspace(&s1), keyspace(&primary));
    assert!(
        !primary
            .log()
            .contains("a record written earlier no longer reads back as written"),
        "a false alarm: {}",
        primary.log_tail()
    );
}

/// A streaming standby that stops reading (stopped, frozen, its host gone)
/// while the primary has more WAL for it fills the socket. The sender then
/// waits to write, and must still give up after `wal-sender-timeout-ms` of
/// silence: before, it waited for ever, the standby stayed listed (and, as
/// a synchronous standby, held every synchronous write), and a standby of
/// that name was refused as already connected.
#[test]
fn a_standby_that_stops_reading_is_dropped_after_the_sender_timeout() {
    let primary = start_primary(&["--wal-sender-timeout-ms", "1000"]);
    set(&primary, "a", "1");
    let (hello, (epoch, end)) = hello_as_a_standby_of(&primary, "frozen", |end| end);
    let mut con = open_stream(&primary);
    con.send(&hello).expect("sending Hello");
    // One report, then nothing: neither reads nor reports.
    con.send(&frame(
        frames::STATUS,
        &frames::status(epoch, end, end, end),
    ))
    .expect("sending Status");
    wait_until(
        CLOSE_GUARD,
        || listed(&primary, "frozen"),
        || format!("the fake standby streams: {}", primary.log_tail()),
    );
    // 48 MiB of WAL for it: far more than the socket buffers hold.
    write_values(&primary, 48, 1 << 20);
    wait_until(
        CLOSE_GUARD,
        || !listed(&primary, "frozen"),
        || {
            format!(
                "a standby that stopped reading is still listed: {:#?}\n{}",
                info(&primary),
                primary.log_tail()
            )
        },
    );
    assert_dropped_as_silent(&primary);
    drop(con);
}
