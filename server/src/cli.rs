//! The `walship` command line. `walship server` runs a server; the
//! replication work adds `walship dev` (a local primary with standbys) and
//! `walship promote` as further subcommands here.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{ServerArgs, ServerConfig};

#[derive(Debug, Parser)]
#[command(
    name = "walship",
    version,
    about = "walship: a replicated key-value store that speaks the Redis protocol",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a server on a data directory: a primary, or a standby with --replicate-from
    Server(Box<ServerArgs>),
    /// Quickstart: a primary and three standbys on localhost (standby1 synchronous)
    Dev(crate::dev::DevArgs),
    /// Promote the standby listening on --port to primary (same as REPLICAOF NO ONE)
    Promote(PromoteArgs),
}

/// Settings of `walship promote`.
#[derive(Debug, clap::Args)]
pub struct PromoteArgs {
    /// Client port of the standby to promote
    #[arg(long, default_value_t = 7379)]
    pub port: u16,
    /// Its host
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Its requirepass, if any (or set WALSHIP_REQUIREPASS)
    #[arg(long, env = "WALSHIP_REQUIREPASS", hide_env_values = true)]
    pub password: Option<String>,
}

/// Sends `REPLICAOF NO ONE` and prints the reply (the epoch and LSN of the takeover).
fn promote(args: &PromoteArgs) -> anyhow::Result<()> {
    use std::io::{BufRead, BufReader, Write};
    use std::net::ToSocketAddrs;
    use std::time::Duration;
    let addr = format!("{}:{}", args.host, args.port);
    let sockaddr = addr
        .to_socket_addrs()
        .map_err(|e| anyhow::anyhow!("cannot resolve {addr}: {e}"))?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{addr} resolves to no address"))?;
    let stream = std::net::TcpStream::connect_timeout(&sockaddr, Duration::from_secs(5))
        .map_err(|e| anyhow::anyhow!("cannot connect to {addr}: {e}"))?;
    // A promotion waits up to 10 s for the WAL receiver to stop.
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut command = |parts: &[&str]| -> anyhow::Result<String> {
        let mut out = format!("*{}\r\n", parts.len());
        for p in parts {
            out.push_str(&format!("${}\r\n{p}\r\n", p.len()));
        }
        writer.write_all(out.as_bytes())?;
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .map_err(|e| anyhow::anyhow!("{addr}: no reply: {e}"))?;
        let line = line.trim_end();
        if let Some(err) = line.strip_prefix('-') {
            anyhow::bail!("{addr}: {err}");
        }
        match line.strip_prefix('+') {
            Some(ok) => Ok(ok.to_string()),
            None if line.is_empty() => {
                anyhow::bail!("{addr}: the connection closed without a reply")
            }
            None => anyhow::bail!("{addr} is not a walship server: it replied {line:?}"),
        }
    };
    if let Some(p) = &args.password {
        command(&["AUTH", p])?;
    }
    let reply = command(&["REPLICAOF", "NO", "ONE"])?;
    if !reply.starts_with("OK") {
        anyhow::bail!("{addr}: unexpected reply to REPLICAOF NO ONE: {reply:?}");
    }
    println!("{addr}: {reply}");
    Ok(())
}

/// Logs go to stderr, filtered by RUST_LOG (default `info`); stdout stays clean.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("walship")
        .build()
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Command::Server(args) => ServerConfig::from_args(&args).and_then(|cfg| {
            let rt = runtime()?;
            rt.block_on(crate::server::run(cfg))
        }),
        Command::Dev(args) => crate::dev::run(args),
        Command::Promote(args) => promote(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("walship: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
