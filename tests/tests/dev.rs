//! `walship dev`, the README's first command: a primary and three standbys
//! on consecutive ports, standby1 synchronous; a terminal's Ctrl-C (SIGINT to
//! the whole process group) stops every node cleanly; a second `walship dev`
//! on ports in use is refused before it prints anything.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use walship_tests::binary::walship_bin;
use walship_tests::cluster::{wait_until, CONVERGE_TIMEOUT};
use walship_tests::ports::free_port;
use walship_tests::process;
use walship_tests::resp::{RawConn, Reply};

const NODES: [&str; 4] = ["primary", "standby1", "standby2", "standby3"];

/// A port whose next three are free too (a moment ago).
fn four_free_ports() -> u16 {
    loop {
        let base = free_port();
        if base <= u16::MAX - 3
            && (1..=3).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok())
        {
            return base;
        }
    }
}

/// Stops `walship dev` (its nodes get SIGTERM when it dies) however the
/// test ends; a no-op once it exited.
struct StopOnDrop(libc::pid_t);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        // SAFETY: signals the process group this test created.
        unsafe {
            libc::kill(-self.0, libc::SIGKILL);
        }
    }
}

fn ping(port: u16) -> Reply {
    match RawConn::connect(port) {
        Ok(mut con) => con.command(&["PING"]),
        Err(e) => Reply::Error(e.to_string()),
    }
}

#[test]
fn dev_runs_four_nodes_and_ctrl_c_stops_them_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("walship-dev");
    let (port, admin) = (four_free_ports(), four_free_ports());
    let dev_command = || {
        let mut c = Command::new(walship_bin());
        c.args(["dev", "--data-dir"]).arg(&data).args([
            "--port",
            &port.to_string(),
            "--admin-port",
            &admin.to_string(),
        ]);
        c
    };
    let mut dev = dev_command();
    dev.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    let mut dev = dev.spawn().expect("starting walship dev");
    let pgid = dev.id() as libc::pid_t;
    let _stop = StopOnDrop(pgid);

    for i in 0..4 {
        wait_until(
            CONVERGE_TIMEOUT,
            || ping(port + i) == Reply::Simple("PONG".into()),
            || {
                format!(
                    "{} never answered PING on port {}",
                    NODES[i as usize],
                    port + i
                )
            },
        );
    }
    // A synchronous write (standby1 must have it on disk), read on an
    // asynchronous standby.
    let mut primary = RawConn::connect(port).unwrap();
    assert_eq!(
        primary.command(&["SET", "greeting", "hello"]),
        Reply::Simple("OK".into())
    );
    wait_until(
        CONVERGE_TIMEOUT,
        || {
            RawConn::connect(port + 2)
                .unwrap()
                .command(&["GET", "greeting"])
                == Reply::Bulk(Some(b"hello".to_vec()))
        },
        || "standby2 never had the write".into(),
    );

    // A second one on the same ports says so and starts nothing.
    let second = process::run(dev_command(), b"", Duration::from_secs(60));
    assert!(!second.status.success(), "{}", second.combined());
    assert!(
        second.combined().contains("not free"),
        "{}",
        second.combined()
    );
    assert!(
        !second.combined().contains("Ctrl-C stops everything"),
        "the second run printed its ready table:\n{}",
        second.combined()
    );

    // Ctrl-C, as a terminal sends it: SIGINT to the whole process group.
    // SAFETY: signals the process group this test created.
    unsafe {
        libc::kill(-pgid, libc::SIGINT);
    }
    let status = process::wait_timeout(&mut dev, Duration::from_secs(60))
        .expect("walship dev did not exit after Ctrl-C");
    assert!(status.success(), "walship dev exited with {status}");
    for node in NODES {
        let log = std::fs::read_to_string(data.join(format!("{node}.log"))).unwrap();
        assert!(
            log.contains("engine shut down cleanly") && !log.contains("exiting immediately"),
            "{node} did not stop cleanly:\n{log}"
        );
    }
}
