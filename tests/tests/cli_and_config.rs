//! The command line and `--config FILE`: settings come from the TOML file,
//! flags win over it, and bad values are refused at startup with a message
//! that names what is wrong.

use std::process::Command;
use std::time::Duration;

use walship_tests::binary::walship_bin;
use walship_tests::ports::free_port;
use walship_tests::process;
use walship_tests::resp::Reply;
use walship_tests::{ServerOptions, TestServer};

const REFUSAL_TIMEOUT: Duration = Duration::from_secs(30);

fn wrongpass() -> Reply {
    Reply::Error("WRONGPASS invalid username-password pair or user is disabled.".into())
}

/// Starts `walship server` with `args` on a fresh dir and port, expecting it
/// to refuse to run; returns what it printed.
fn refused(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(walship_bin());
    command
        .arg("server")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--port", &free_port().to_string()])
        .args(args);
    let finished = process::try_run(command, b"", REFUSAL_TIMEOUT)
        .unwrap_or_else(|e| panic!("walship accepted {args:?} and kept running:\n{e}"));
    assert!(
        !finished.status.success(),
        "walship with {args:?} must exit non-zero, got {}:\n{}",
        finished.status,
        finished.combined()
    );
    finished.combined()
}

#[test]
fn config_file_settings_are_used() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("walship.toml");
    std::fs::write(
        &config,
        "requirepass = \"from-file\"\nfsync = \"interval:20\"\n",
    )
    .unwrap();
    let server = TestServer::start_with(ServerOptions {
        extra_args: vec!["--config".into(), config.display().to_string()],
        ..ServerOptions::default()
    })
    .expect("start walship with --config");
    let mut raw = server.raw();
    assert_eq!(
        raw.command(&["GET", "k"]),
        Reply::Error("NOAUTH Authentication required.".into())
    );
    assert_eq!(
        raw.command(&["AUTH", "from-file"]),
        Reply::Simple("OK".into())
    );
    assert_eq!(raw.command(&["SET", "k", "v"]), Reply::Simple("OK".into()));
}

#[test]
fn flags_win_over_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("walship.toml");
    std::fs::write(&config, "requirepass = \"from-file\"\n").unwrap();
    let server = TestServer::start_with(ServerOptions {
        requirepass: Some("from-flag".into()),
        extra_args: vec!["--config".into(), config.display().to_string()],
        ..ServerOptions::default()
    })
    .expect("start walship with --config and --requirepass");
    let mut raw = server.raw();
    assert_eq!(raw.command(&["AUTH", "from-file"]), wrongpass());
    assert_eq!(
        raw.command(&["AUTH", "from-flag"]),
        Reply::Simple("OK".into())
    );
}

#[test]
fn bad_fsync_value_is_refused_naming_it() {
    let message = refused(&["--fsync", "sometimes"]);
    assert!(
        message.contains("sometimes") || message.contains("fsync"),
        "{message}"
    );
}

#[test]
fn bad_port_is_refused() {
    refused(&["--admin-port", "not-a-port"]);
}

#[test]
fn unknown_flag_is_refused() {
    let message = refused(&["--no-such-flag"]);
    assert!(message.contains("--no-such-flag"), "{message}");
}

#[test]
fn missing_config_file_is_refused_naming_it() {
    let message = refused(&["--config", "/nonexistent/walship.toml"]);
    assert!(message.contains("/nonexistent/walship.toml"), "{message}");
}

#[test]
fn config_file_with_unknown_setting_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("walship.toml");
    std::fs::write(&config, "requirepas = \"typo\"\n").unwrap();
    let message = refused(&["--config", &config.display().to_string()]);
    assert!(
        message.contains("requirepas"),
        "the refusal should name the bad key:\n{message}"
    );
}

#[test]
fn port_already_in_use_is_refused() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(walship_bin());
    command
        .arg("server")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"]);
    let finished = process::try_run(command, b"", REFUSAL_TIMEOUT)
        .unwrap_or_else(|e| panic!("walship kept running without its port:\n{e}"));
    assert!(!finished.status.success(), "{}", finished.combined());
    assert!(
        finished.combined().contains(&port.to_string()),
        "the refusal should name the port:\n{}",
        finished.combined()
    );
    drop(listener);
}

/// `walship promote` exits 0 only when the node answered the promotion with
/// OK: a port that is not a walship server (a typo for the admin port, say)
/// or a connection closed without a reply is a failure a failover script
/// sees in the exit status.
#[test]
fn promote_fails_unless_the_node_says_ok() {
    use std::io::{Read, Write};
    let promote = |port: u16| {
        let mut command = Command::new(walship_bin());
        command.args(["promote", "--port", &port.to_string()]);
        process::try_run(command, b"", REFUSAL_TIMEOUT).expect("walship promote finished")
    };
    for answer in [&b"HTTP/1.1 400 Bad Request\r\n\r\n"[..], b""] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut con, _) = listener.accept().unwrap();
            let mut buf = [0u8; 256];
            let _ = con.read(&mut buf);
            con.write_all(answer).unwrap();
        });
        let out = promote(port);
        server.join().unwrap();
        assert!(
            !out.status.success(),
            "promote against a peer answering {answer:?} exited 0:\n{}",
            out.combined()
        );
        assert!(
            out.combined().contains("not a walship server")
                || out.combined().contains("without a reply"),
            "{}",
            out.combined()
        );
    }
    // A primary is already one: OK, exit 0.
    let primary = TestServer::start().unwrap();
    let out = promote(primary.port());
    assert!(out.status.success(), "{}", out.combined());
    assert!(
        out.combined().contains("OK Already a primary"),
        "{}",
        out.combined()
    );
}

/// A node's name is written unquoted in synchronous_standby_names, INFO
/// lines, metrics labels and slot file names: only ASCII letters, digits,
/// `_`, `-` and `.` are accepted.
#[test]
fn names_with_other_characters_are_refused() {
    for bad in ["new\nline", "sp ace", "we\"ird", "a,b", ""] {
        let out = refused(&["--name", bad]);
        assert!(out.contains("standby name"), "--name {bad:?}: {out}");
    }
}

/// `--replicate-from` naming the node's own port is refused at startup
/// (it used to retry replicating from itself for ever).
#[test]
fn replicating_from_itself_is_refused() {
    for host in ["127.0.0.1", "localhost"] {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port().to_string();
        let mut command = Command::new(walship_bin());
        command
            .arg("server")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args([
                "--port",
                &port,
                "--replicate-from",
                &format!("{host}:{port}"),
            ]);
        let out = process::try_run(command, b"", REFUSAL_TIMEOUT)
            .unwrap_or_else(|e| panic!("walship replicating from itself kept running:\n{e}"));
        assert!(!out.status.success(), "{}", out.combined());
        assert!(out.combined().contains("itself"), "{}", out.combined());
    }
}
