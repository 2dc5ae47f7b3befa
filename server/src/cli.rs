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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("walship: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
