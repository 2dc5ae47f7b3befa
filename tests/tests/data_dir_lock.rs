//! One server per data directory: a second one is refused with a clear
//! message, and the lock dies with its holder, even by SIGKILL.

use std::time::Duration;

use walship_tests::process;
use walship_tests::TestServer;

const SECOND_SERVER_TIMEOUT: Duration = Duration::from_secs(30);

/// Writes `k` = `v` (acknowledged).
fn set_k(server: &TestServer) {
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query(&mut server.connection())
        .unwrap();
}

/// `k` still reads `v`: the acknowledged write survived.
fn assert_k(server: &TestServer) {
    let v: String = redis::cmd("GET")
        .arg("k")
        .query(&mut server.connection())
        .unwrap();
    assert_eq!(v, "v", "an acknowledged write survives");
}

#[test]
fn second_server_on_same_data_dir_is_refused() {
    let server = TestServer::start().expect("start walship");
    set_k(&server);

    let second = process::try_run(server.second_instance_command(), b"", SECOND_SERVER_TIMEOUT)
        .unwrap_or_else(|e| panic!("a second server on the same data dir kept running:\n{e}"));
    assert!(
        !second.status.success(),
        "a second server on the same data dir must exit non-zero, got {}:\n{}",
        second.status,
        second.combined()
    );
    let message = second.combined();
    let lower = message.to_ascii_lowercase();
    assert!(
        lower.contains("lock") || message.contains(&server.data_dir().display().to_string()),
        "the refusal must mention the lock or the data dir:\n{message}"
    );

    // The first server is untouched.
    assert_k(&server);
}

#[test]
fn lock_is_released_when_holder_is_killed() {
    let mut server = TestServer::start().expect("start walship");
    set_k(&server);
    server.kill();
    server
        .restart()
        .expect("a killed server's lock must not block a restart");
    assert_k(&server);
    // And the restarted one holds the lock again.
    let second = process::try_run(server.second_instance_command(), b"", SECOND_SERVER_TIMEOUT)
        .unwrap_or_else(|e| panic!("a second server on the same data dir kept running:\n{e}"));
    assert!(
        !second.status.success(),
        "second server accepted after restart:\n{}",
        second.combined()
    );
}

/// A LOCK file removed under a running server (an operator cleaning up)
/// would let a second server lock a new one and open the same WAL: the
/// running server notices and exits at once, as PostgreSQL does when its
/// postmaster.pid goes, and a new start on the directory works normally.
#[test]
fn a_server_whose_lock_file_is_removed_exits() {
    let mut server = TestServer::start().expect("start walship");
    set_k(&server);
    std::fs::remove_file(server.data_dir().join("LOCK")).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while server.is_running() {
        assert!(
            std::time::Instant::now() < deadline,
            "the server kept running without its lock file"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(server
        .log()
        .contains("another server may be using this data directory"));
    server.restart().expect("restart on the directory");
    assert_k(&server);
}
