//! The primary's own network namespace: `ip netns add`, a veth pair with a
//! private /30 (`10.213.<n>.1` on the host side, `.2` inside), and the two
//! faults that need it: cutting the link (`ip link set ... down`) and
//! delaying it (`tc qdisc ... netem delay`). Needs root.
//!
//! Some kernels lack the netem qdisc (`Specified qdisc kind is unknown`).
//! Then the delay is made in user space instead: [`DelayProxy`] forwards the
//! standbys' replication connections to the primary, holding every chunk
//! for the delay in each direction. The report says which one ran.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::cleanup;

/// Whether the harness runs as root (namespaces need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn ip(args: &[&str]) -> Result<()> {
    run("ip", args)
}

fn run(program: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program} {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A namespace with a veth pair to the host. Deleted on drop.
pub struct Netns {
    pub name: String,
    pub host_veth: String,
    pub host_addr: Ipv4Addr,
    pub ns_addr: Ipv4Addr,
    delayed: bool,
}

impl Netns {
    /// Namespace number `index` of this process (unique names carry the pid).
    pub fn create(index: u8) -> Result<Netns> {
        let pid = std::process::id();
        let name = format!("crashtest-{pid}-{index}");
        let host_veth = format!("ct{}h{index}", pid % 1_000_000);
        let ns_veth = format!("ct{}n{index}", pid % 1_000_000);
        let host_addr = Ipv4Addr::new(10, 213, index, 1);
        let ns_addr = Ipv4Addr::new(10, 213, index, 2);
        ip(&["netns", "add", &name])?;
        cleanup::register_namespace(&name);
        let ns = Netns {
            name,
            host_veth,
            host_addr,
            ns_addr,
            delayed: false,
        };
        ip(&[
            "link",
            "add",
            &ns.host_veth,
            "type",
            "veth",
            "peer",
            "name",
            &ns_veth,
        ])?;
        ip(&["link", "set", &ns_veth, "netns", &ns.name])?;
        ip(&[
            "addr",
            "add",
            &format!("{host_addr}/30"),
            "dev",
            &ns.host_veth,
        ])?;
        ip(&["link", "set", &ns.host_veth, "up"])?;
        let in_ns = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &ns.name, "ip"];
            all.extend_from_slice(args);
            ip(&all)
        };
        in_ns(&["addr", "add", &format!("{ns_addr}/30"), "dev", &ns_veth])?;
        in_ns(&["link", "set", &ns_veth, "up"])?;
        in_ns(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Cuts (`false`) or restores (`true`) the link: a partition.
    pub fn set_link(&self, up: bool) -> Result<()> {
        ip(&[
            "link",
            "set",
            &self.host_veth,
            if up { "up" } else { "down" },
        ])
    }

    /// Adds `tc netem delay` on the host side of the link. `Ok(false)` when
    /// this kernel has no netem (use [`DelayProxy`] instead).
    pub fn add_netem_delay(&mut self, delay_ms: u32) -> Result<bool> {
        let delay = format!("{delay_ms}ms");
        match run(
            "tc",
            &[
                "qdisc",
                "replace",
                "dev",
                &self.host_veth,
                "root",
                "netem",
                "delay",
                &delay,
            ],
        ) {
            Ok(()) => {
                self.delayed = true;
                Ok(true)
            }
            Err(e) if e.to_string().contains("unknown") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Removes the delay, if any.
    pub fn clear_delay(&mut self) {
        if std::mem::take(&mut self.delayed) {
            let _ = run("tc", &["qdisc", "del", "dev", &self.host_veth, "root"]);
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
        cleanup::forget_namespace(&self.name);
    }
}

/// A user-space link delay: listens on `listen`, forwards each connection to
/// `target`, and holds every chunk `delay` before passing it on, both ways.
pub struct DelayProxy {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl DelayProxy {
    pub fn start(listen_ip: Ipv4Addr, target: SocketAddr, delay: Duration) -> Result<DelayProxy> {
        let listener = TcpListener::bind((listen_ip, 0)).context("binding the delay proxy")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        if let Ok(server) =
                            TcpStream::connect_timeout(&target, Duration::from_millis(500))
                        {
                            let _ = client.set_nodelay(true);
                            let _ = server.set_nodelay(true);
                            pipe(&client, &server, delay, stop2.clone());
                            pipe(&server, &client, delay, stop2.clone());
                        }
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(DelayProxy { addr, stop })
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Forwards `from` to `to`, each chunk `delay` late (a reader thread
/// timestamps chunks, a writer thread releases them when due).
fn pipe(from: &TcpStream, to: &TcpStream, delay: Duration, stop: Arc<AtomicBool>) {
    let (Ok(mut reader), Ok(mut writer)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    thread::spawn(move || {
        let _ = reader.set_read_timeout(Some(Duration::from_millis(200)));
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        break;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        // Dropping tx ends the writer once it has delivered what it holds.
    });
    thread::spawn(move || {
        for (due, chunk) in rx {
            let now = Instant::now();
            if due > now {
                thread::sleep(due - now);
            }
            if writer.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = writer.shutdown(Shutdown::Both);
    });
}
