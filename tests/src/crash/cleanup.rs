//! Everything the harness must undo however it ends: child processes and
//! network namespaces (with their veth pairs). Registered as they are made,
//! removed on normal exit, on panic (a hook) and on SIGINT/SIGTERM (a thread
//! that waits for them with `sigwait`, so no work runs in a signal handler).

use std::collections::{BTreeSet, HashSet};
use std::process::Command;
use std::sync::Mutex;

#[derive(Default)]
struct Registry {
    pids: HashSet<u32>,
    namespaces: BTreeSet<String>,
}

static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);

fn with<T>(f: impl FnOnce(&mut Registry) -> T) -> T {
    let mut guard = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    f(guard.get_or_insert_with(Registry::default))
}

/// A child process to SIGKILL if the harness ends early.
pub fn register_pid(pid: u32) {
    with(|r| r.pids.insert(pid));
}

/// The child was reaped: forget it (its pid may be reused).
pub fn forget_pid(pid: u32) {
    with(|r| r.pids.remove(&pid));
}

/// A namespace to delete (deleting it removes the veth pair too).
pub fn register_namespace(name: &str) {
    with(|r| r.namespaces.insert(name.to_string()));
}

/// The namespace was deleted.
pub fn forget_namespace(name: &str) {
    with(|r| r.namespaces.remove(name));
}

/// Kills every registered process and deletes every registered namespace.
pub fn run_all() {
    let (pids, namespaces) = with(|r| {
        (
            r.pids.drain().collect::<Vec<_>>(),
            std::mem::take(&mut r.namespaces),
        )
    });
    for pid in pids {
        if let Ok(pid) = libc::pid_t::try_from(pid) {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    for ns in namespaces {
        let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    }
}

/// Makes a child start with no blocked signals: it would otherwise inherit
/// the harness's mask (SIGINT and SIGTERM blocked, see [`install`]) and
/// never see a SIGTERM.
pub fn unblock_signals_in_child(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec and calls only
    // async-signal-safe functions (sigemptyset, pthread_sigmask).
    unsafe {
        command.pre_exec(|| {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            Ok(())
        });
    }
}

/// Installs the panic hook and the signal thread. Call first in `main`,
/// before any other thread exists, so every thread inherits the blocked
/// signal mask and only the signal thread receives SIGINT/SIGTERM.
pub fn install() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        run_all();
    }));
    // SAFETY: plain libc calls on a sigset_t we own; called before other threads exist.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let set_for_thread = set;
        std::thread::spawn(move || {
            let mut sig: libc::c_int = 0;
            libc::sigwait(&set_for_thread, &mut sig);
            eprintln!(
                "\ncrashtest: signal {sig}: killing the cluster processes and removing namespaces"
            );
            run_all();
            std::process::exit(130);
        });
    }
}
