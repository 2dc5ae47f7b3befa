//! `walship dev`: the quickstart. A primary and three standbys on localhost,
//! the classic picture of single-leader replication: standby 1 synchronous, standbys 2 and 3
//! asynchronous, every node's data under one directory. Ctrl-C stops all.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;

/// Settings of `walship dev`.
#[derive(Debug, Clone, Args)]
pub struct DevArgs {
    /// Directory holding every node's data
    #[arg(long, value_name = "DIR", default_value = "walship-dev")]
    pub data_dir: PathBuf,
    /// Client port of the primary; standbys take the ports after it, one each
    #[arg(long, default_value_t = 7379)]
    pub port: u16,
    /// Admin HTTP port of the primary; standbys take the ports after it, one each
    #[arg(long, default_value_t = 9379)]
    pub admin_port: u16,
    /// Number of standbys (standby1 is synchronous, the rest asynchronous)
    #[arg(long, default_value_t = 3)]
    pub standbys: u16,
}

struct Node {
    name: String,
    port: u16,
    admin_port: u16,
    child: Child,
}

/// Starts one node, appending to its log (a later run does not wipe an
/// earlier one's). The node runs in a process group of its own, so the
/// terminal's Ctrl-C reaches only `walship dev`, which stops each node with
/// one SIGTERM (a node that got both would take the second as "exit now"),
/// and it gets SIGTERM if `walship dev` itself dies.
fn spawn(exe: &PathBuf, args: &[String], log: PathBuf) -> anyhow::Result<Child> {
    use std::os::unix::process::CommandExt;
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("opening {}", log.display()))?;
    let mut command = Command::new(exe);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .process_group(0);
    // SAFETY: prctl is async-signal-safe; it only sets this child's
    // parent-death signal.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))
}

/// Refuses to start when a port the nodes need is out of range or taken
/// (another `walship dev`, say): otherwise a node would fail after the
/// table of ports was printed, or its port would answer for another cluster.
fn check_ports(args: &DevArgs) -> anyhow::Result<()> {
    for base in [args.port, args.admin_port] {
        for i in 0..=args.standbys {
            let Some(port) = base.checked_add(i) else {
                bail!("port {base} + {i} is past 65535: choose lower --port / --admin-port");
            };
            if let Err(e) = std::net::TcpListener::bind(("127.0.0.1", port)) {
                bail!("port {port} is not free ({e}): is another walship dev or server running? Stop it, or choose --port / --admin-port");
            }
        }
    }
    Ok(())
}

fn wait_ready(
    port: u16,
    child: &mut Child,
    name: &str,
    log: &std::path::Path,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait()? {
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            bail!("{name} exited ({status}) before it was ready; its log:\n{tail}");
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{name} did not listen on port {port} within 30 s; see {}",
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs the quickstart until Ctrl-C or SIGTERM.
pub fn run(args: DevArgs) -> anyhow::Result<()> {
    if args.standbys == 0 || args.standbys > 9 {
        bail!("--standbys must be between 1 and 9");
    }
    check_ports(&args)?;
    // Signals are caught from here on: a Ctrl-C while the nodes start is
    // noticed once they are up, and stops them all cleanly.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let signals = rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        Ok::<_, std::io::Error>((
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
        ))
    })?;
    let exe = std::env::current_exe().context("finding the walship binary")?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let mut nodes: Vec<Node> = Vec::new();
    let result = (|| -> anyhow::Result<()> {
        let primary_dir = args.data_dir.join("primary");
        let log = args.data_dir.join("primary.log");
        let mut child = spawn(
            &exe,
            &[
                "server".into(),
                "--data-dir".into(),
                primary_dir.display().to_string(),
                "--port".into(),
                args.port.to_string(),
                "--admin-port".into(),
                args.admin_port.to_string(),
                "--synchronous-standby-names".into(),
                "FIRST 1 (standby1)".into(),
            ],
            log.clone(),
        )?;
        wait_ready(args.port, &mut child, "the primary", &log)?;
        nodes.push(Node {
            name: "primary".into(),
            port: args.port,
            admin_port: args.admin_port,
            child,
        });
        for i in 1..=args.standbys {
            let name = format!("standby{i}");
            let port = args.port + i;
            let admin_port = args.admin_port + i;
            let log = args.data_dir.join(format!("{name}.log"));
            let mut child = spawn(
                &exe,
                &[
                    "server".into(),
                    "--data-dir".into(),
                    args.data_dir.join(&name).display().to_string(),
                    "--port".into(),
                    port.to_string(),
                    "--admin-port".into(),
                    admin_port.to_string(),
                    "--replicate-from".into(),
                    format!("127.0.0.1:{}", args.port),
                    "--name".into(),
                    name.clone(),
                ],
                log.clone(),
            )?;
            wait_ready(port, &mut child, &name, &log)?;
            nodes.push(Node {
                name,
                port,
                admin_port,
                child,
            });
        }
        println!(
            "walship dev: a primary and {} standbys, data under {}",
            args.standbys,
            args.data_dir.display()
        );
        println!();
        println!(
            "  {:<10} {:<6} {:<6} {:<12}",
            "node", "port", "admin", "replication"
        );
        for (i, n) in nodes.iter().enumerate() {
            let role = match i {
                0 => "primary",
                1 => "synchronous",
                _ => "asynchronous",
            };
            println!(
                "  {:<10} {:<6} {:<6} {:<12}",
                n.name, n.port, n.admin_port, role
            );
        }
        println!();
        println!("Try:");
        println!("  redis-cli -p {} set greeting hello          # acknowledged once standby1 has it on disk", args.port);
        println!(
            "  redis-cli -p {} get greeting                # read it back from a standby",
            args.port + 1
        );
        println!("  redis-cli -p {} info replication", args.port);
        println!("  curl -s localhost:{}/status", args.admin_port);
        println!();
        println!(
            "Logs: {}/<node>.log. Ctrl-C stops everything.",
            args.data_dir.display()
        );
        wait_for_signal_or_exit(&rt, signals, &mut nodes)
    })();
    for n in nodes.iter_mut().rev() {
        // SIGTERM: each node finishes in-flight requests and makes everything durable.
        unsafe {
            libc::kill(n.child.id() as libc::pid_t, libc::SIGTERM);
        }
    }
    for n in nodes.iter_mut() {
        let _ = n.child.wait();
    }
    result
}

fn wait_for_signal_or_exit(
    rt: &tokio::runtime::Runtime,
    (mut int, mut term): (tokio::signal::unix::Signal, tokio::signal::unix::Signal),
    nodes: &mut [Node],
) -> anyhow::Result<()> {
    rt.block_on(async {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = int.recv() => break,
                _ = term.recv() => break,
                _ = tick.tick() => {
                    for n in nodes.iter_mut() {
                        if let Some(status) = n.child.try_wait()? {
                            bail!("{} exited unexpectedly ({status}); see its log", n.name);
                        }
                    }
                }
            }
        }
        println!("\nwalship dev: stopping all nodes");
        Ok(())
    })
}
