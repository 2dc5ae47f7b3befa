//! The stock Redis tools work against walship: `redis-cli` (commands,
//! `INFO replication`, `--pipe` mass insertion) and `redis-benchmark`.
//!
//! The tools come from Debian's redis-tools; `scripts/test` installs them.
//! Without them these tests fail, unless `WALSHIP_SKIP_REDIS_TOOLS=1`.

use std::process::Command;
use std::time::Duration;

use walship_tests::process::{self, Finished};
use walship_tests::resp::encode;
use walship_tests::TestServer;

const TOOL_TIMEOUT: Duration = Duration::from_secs(180);

/// Whether `tool` is there; panics when it is missing unless skipping was
/// asked for.
fn have(tool: &str) -> bool {
    if process::on_path(tool) {
        return true;
    }
    if std::env::var_os("WALSHIP_SKIP_REDIS_TOOLS").is_some() {
        eprintln!("{tool} not found; skipped (WALSHIP_SKIP_REDIS_TOOLS)");
        return false;
    }
    panic!("{tool} not found on PATH: install redis-tools (scripts/test does) or set WALSHIP_SKIP_REDIS_TOOLS=1");
}

fn cli(server: &TestServer, args: &[&str]) -> Finished {
    cli_with_input(server, args, b"")
}

fn cli_with_input(server: &TestServer, args: &[&str], stdin: &[u8]) -> Finished {
    let mut command = Command::new("redis-cli");
    command
        .args(["-h", "127.0.0.1", "-p", &server.port().to_string()])
        .args(args);
    let finished = process::run(command, stdin, TOOL_TIMEOUT);
    assert!(
        finished.status.success(),
        "redis-cli {args:?} failed: {finished:?}"
    );
    finished
}

#[test]
fn redis_cli_set_get_and_info_replication() {
    if !have("redis-cli") {
        return;
    }
    let server = TestServer::start().expect("start walship");
    assert_eq!(cli(&server, &["set", "a", "b"]).stdout, "OK\n");
    assert_eq!(cli(&server, &["get", "a"]).stdout, "b\n");
    assert_eq!(cli(&server, &["get", "missing"]).stdout, "\n");
    assert_eq!(cli(&server, &["incr", "n"]).stdout, "1\n");
    assert_eq!(cli(&server, &["ping"]).stdout, "PONG\n");
    assert_eq!(cli(&server, &["dbsize"]).stdout, "2\n");
    let info = cli(&server, &["info", "replication"]).stdout;
    assert!(
        info.lines().any(|l| l.trim_end() == "role:master"),
        "{info}"
    );
    // Errors come back as "(error) ..." with --no-raw formatting on a tty;
    // in pipe mode redis-cli prints the bare error text.
    let err = cli(&server, &["incr", "a"]).stdout;
    assert_eq!(
        err.trim_end(),
        "ERR value is not an integer or out of range"
    );
}

#[test]
fn redis_cli_reads_commands_from_stdin() {
    if !have("redis-cli") {
        return;
    }
    let server = TestServer::start().expect("start walship");
    let out = cli_with_input(&server, &[], b"set x 1\nincrby x 41\nget x\nmget x nope\n").stdout;
    assert_eq!(out, "OK\n42\n42\n42\n\n");
}

#[test]
fn redis_cli_pipe_mass_insertion() {
    if !have("redis-cli") {
        return;
    }
    const N: usize = 5000;
    let server = TestServer::start().expect("start walship");
    let mut input = Vec::new();
    for i in 0..N {
        input.extend(encode(&[
            "SET",
            &format!("mass:{i}"),
            &format!("value {i}"),
        ]));
    }
    let out = cli_with_input(&server, &["--pipe"], &input).combined();
    assert!(
        out.contains(&format!("errors: 0, replies: {N}")),
        "redis-cli --pipe said:\n{out}"
    );
    let mut con = server.connection();
    let n: usize = redis::cmd("DBSIZE").query(&mut con).unwrap();
    assert_eq!(n, N);
    let v: String = redis::cmd("GET").arg("mass:1234").query(&mut con).unwrap();
    assert_eq!(v, "value 1234");
}

#[test]
fn redis_benchmark_runs_without_errors() {
    if !have("redis-benchmark") {
        return;
    }
    let server = TestServer::start().expect("start walship");
    let mut command = Command::new("redis-benchmark");
    command.args(["-h", "127.0.0.1", "-p", &server.port().to_string()]);
    command.args([
        "-n",
        "2000",
        "-c",
        "8",
        "-t",
        "set,get,ping_inline,ping_mbulk",
        "-q",
    ]);
    let finished = process::run(command, b"", TOOL_TIMEOUT);
    let out = finished.combined();
    assert!(
        finished.status.success(),
        "redis-benchmark failed ({}):\n{out}",
        finished.status
    );
    // Progress updates end in \r, results in \n: split on both.
    let segments: Vec<&str> = out.split(['\r', '\n']).map(str::trim).collect();
    for test in ["PING_INLINE", "PING_MBULK", "SET", "GET"] {
        assert!(
            segments
                .iter()
                .any(|l| l.starts_with(&format!("{test}: ")) && l.contains("requests per second")),
            "redis-benchmark has no result line for {test}:\n{out}"
        );
    }
    let lower = out.to_ascii_lowercase();
    assert!(
        !lower.contains("error"),
        "redis-benchmark reported errors:\n{out}"
    );
    // The SETs really landed.
    let v: Option<String> = redis::cmd("GET")
        .arg("key:__rand_int__")
        .query(&mut server.connection())
        .unwrap();
    assert!(v.is_some(), "redis-benchmark's SET key is missing");
}
