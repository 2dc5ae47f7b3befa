//! Damaged WAL files on disk: a torn tail (the last record half written, as
//! a crash mid-write leaves it) is cut and the server starts with everything
//! before it; damage in the middle of the log, with valid records after it,
//! makes the server refuse to start and name the file and offset.
//!
//! The tests find the WAL's data by content, not by format: segment files
//! are the `*.wal` files under the data dir, and the written region ends at
//! the last non-zero byte (segments are preallocated with zeros).

use std::path::{Path, PathBuf};
use std::time::Duration;

use walship_tests::process;
use walship_tests::TestServer;

const KEYS: usize = 400;

fn value(i: usize) -> String {
    format!("value-{i}-{}", "x".repeat(100))
}

/// The `*.wal` file holding the most data, and where its data ends.
fn wal_with_data(data_dir: &Path) -> (PathBuf, usize) {
    let mut files = Vec::new();
    let mut stack = vec![data_dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "wal") {
                files.push(path);
            }
        }
    }
    files
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap();
            let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
            (path, end)
        })
        .max_by_key(|(_, end)| *end)
        .unwrap_or_else(|| panic!("no *.wal file under {}", data_dir.display()))
}

fn server_with_keys_then_killed() -> TestServer {
    let mut server = TestServer::start().expect("start walship");
    let mut con = server.connection();
    for i in 0..KEYS {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(value(i))
            .query(&mut con)
            .unwrap();
    }
    drop(con);
    server.kill();
    server
}

fn patch(path: &Path, offset: usize, f: impl FnOnce(&mut [u8])) {
    let mut bytes = std::fs::read(path).unwrap();
    f(&mut bytes[offset..]);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn torn_wal_tail_is_cut_and_earlier_writes_survive() {
    let mut server = server_with_keys_then_killed();
    let (wal, end) = wal_with_data(&server.data_dir());
    assert!(
        end > 2000,
        "{} holds only {end} bytes of data",
        wal.display()
    );
    // Zero the last 20 bytes: the final record is torn.
    patch(&wal, end - 20, |b| b[..20].fill(0));
    server
        .restart()
        .expect("a torn tail must not stop recovery");

    let mut con = server.connection();
    for i in 0..KEYS - 1 {
        let got: Option<String> = redis::cmd("GET")
            .arg(format!("k{i}"))
            .query(&mut con)
            .unwrap();
        assert_eq!(got, Some(value(i)), "k{i} lost with a torn tail");
    }
    let last: Option<String> = redis::cmd("GET")
        .arg(format!("k{}", KEYS - 1))
        .query(&mut con)
        .unwrap();
    assert!(
        last.is_none() || last == Some(value(KEYS - 1)),
        "torn record read back as {last:?}"
    );

    // New writes go after the cut and survive another crash.
    for i in 0..50 {
        let _: () = redis::cmd("SET")
            .arg(format!("after{i}"))
            .arg(i)
            .query(&mut con)
            .unwrap();
    }
    drop(con);
    server.kill();
    server
        .restart()
        .expect("restart after writing past a cut tail");
    let mut con = server.connection();
    for i in 0..50 {
        let got: Option<i64> = redis::cmd("GET")
            .arg(format!("after{i}"))
            .query(&mut con)
            .unwrap();
        assert_eq!(
            got,
            Some(i),
            "after{i}, written after the torn tail was cut"
        );
    }
    let got: Option<String> = redis::cmd("GET").arg("k0").query(&mut con).unwrap();
    assert_eq!(got, Some(value(0)));
}

#[test]
fn corruption_in_the_middle_of_the_wal_refuses_to_start() {
    let server = server_with_keys_then_killed();
    let (wal, end) = wal_with_data(&server.data_dir());
    assert!(
        end > 2000,
        "{} holds only {end} bytes of data",
        wal.display()
    );
    patch(&wal, end / 2, |b| b[0] ^= 0xff);

    let finished = process::try_run(
        server.second_instance_command(),
        b"",
        Duration::from_secs(60),
    )
    .unwrap_or_else(|e| panic!("walship started on a WAL corrupted in the middle:\n{e}"));
    let message = finished.combined();
    assert!(!finished.status.success(), "must exit non-zero:\n{message}");
    let file_name = wal.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        message.contains(&file_name),
        "the refusal must name the file {file_name}:\n{message}"
    );
    assert!(
        message.to_ascii_lowercase().contains("offset"),
        "the refusal must give the offset:\n{message}"
    );
}

/// A replication slot file that cannot be read (here a directory where the
/// file should be) stops the start with an error naming it, not a panic.
#[test]
fn an_unreadable_slot_file_refuses_to_start_naming_it() {
    let server = server_with_keys_then_killed();
    let slot = server.data_dir().join("slots").join("7331.slot");
    std::fs::create_dir_all(&slot).unwrap();
    let finished = process::try_run(
        server.second_instance_command(),
        b"",
        Duration::from_secs(60),
    )
    .unwrap_or_else(|e| panic!("walship started with an unreadable slot file:\n{e}"));
    let message = finished.combined();
    assert_eq!(
        finished.status.code(),
        Some(1),
        "a clean error exit:\n{message}"
    );
    assert!(
        message.contains(&slot.display().to_string()) && !message.contains("panicked"),
        "the refusal must name {}:\n{message}",
        slot.display()
    );
}
