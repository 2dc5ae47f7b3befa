//! Running external programs with a timeout that guards against hangs.

use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// What a finished program printed and how it exited.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// stdout and stderr together, for messages and searches.
    pub fn combined(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs `command` with `stdin` fed to it, and waits for it to exit.
///
/// Panics if it is still running after `timeout` (the child is killed first),
/// naming the program and what it printed so far.
pub fn run(command: Command, stdin: &[u8], timeout: Duration) -> Finished {
    try_run(command, stdin, timeout).unwrap_or_else(|message| panic!("{message}"))
}

/// Like [`run`], but a program still running after `timeout` is killed and
/// reported as `Err` (with what it printed) instead of a panic.
pub fn try_run(mut command: Command, stdin: &[u8], timeout: Duration) -> Result<Finished, String> {
    let description = format!("{command:?}");
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {description}: {e}"));

    let mut child_stdin = child.stdin.take().expect("piped stdin");
    let input = stdin.to_vec();
    let writer = thread::spawn(move || {
        // The program may exit without reading everything; that is its call.
        let _ = child_stdin.write_all(&input);
    });
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));

    let status = wait_timeout(&mut child, timeout);
    let _ = writer.join();
    let stdout = stdout.join().expect("stdout reader");
    let stderr = stderr.join().expect("stderr reader");
    match status {
        Some(status) => Ok(Finished {
            status,
            stdout,
            stderr,
        }),
        None => Err(format!(
            "{description} still running after {timeout:?}; killed it.\nstdout:\n{stdout}\nstderr:\n{stderr}"
        )),
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Waits for `child` to exit; after `timeout` kills it and returns `None`.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            Err(e) => panic!("waiting for child {}: {e}", child.id()),
        }
    }
}

/// Whether `program` can be found on `PATH`.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

/// Runs `f` on its own thread and waits at most `timeout` for it: `None` if
/// it is still running then (the thread is left behind, blocked). For calls
/// that have no timeout of their own, such as the `redis` crate's connection
/// handshake.
pub fn within<T: Send + 'static>(
    timeout: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(timeout) {
        Ok(value) => Some(value),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            panic!("the guarded call panicked (see its message above)")
        }
    }
}
