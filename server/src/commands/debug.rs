//! DEBUG: fault injection for tests, refused unless the server runs with
//! `--simulate-power-loss`.
//!
//! `DEBUG POWERLOSS [seed]` cuts the power of the simulated device the
//! engine runs on (from that instant no write can become durable, so none is
//! acknowledged), writes what survived (unsynced bytes gone, the last
//! unsynced writes torn at a point chosen by `seed`) back to the data
//! directory, and exits the process at once with status 137, as if the
//! machine had lost power: no reply, no graceful shutdown. The next start,
//! without the flag, recovers from what is on disk.

use super::{help_reply, unknown_subcommand, CmdError, CmdResult, Ctx};
use crate::resp::Args;

/// Exit status after `DEBUG POWERLOSS` (what a `SIGKILL`ed process reports).
pub const POWERLOSS_EXIT_STATUS: i32 = 137;

pub fn debug(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let sub = args.get(1);
    if sub.eq_ignore_ascii_case(b"HELP") {
        help_reply(
            ctx.out,
            "DEBUG",
            &[
                "POWERLOSS [<seed>]",
                "    With --simulate-power-loss only: cut the simulated device's power,",
                "    write what survived to the data directory and exit at once (status 137).",
            ],
        );
        return Ok(());
    }
    if !sub.eq_ignore_ascii_case(b"POWERLOSS") {
        return Err(unknown_subcommand(sub, "debug"));
    }
    let tear_seed = match args.len() {
        2 => None,
        3 => Some(
            std::str::from_utf8(args.get(2))
                .ok()
                .and_then(|t| t.parse::<u64>().ok())
                .ok_or(CmdError::NotInteger)?,
        ),
        _ => return Err(CmdError::Syntax),
    };
    if !ctx.shared.store.simulates_power_loss() {
        return Err(CmdError::msg(
            "ERR DEBUG POWERLOSS needs a server started with --simulate-power-loss \
             (a testing aid); nothing was done",
        ));
    }
    power_loss(ctx, tear_seed)
}

fn power_loss(ctx: &mut Ctx<'_>, tear_seed: Option<u64>) -> CmdResult {
    let Some(written) = ctx.shared.store.power_off(tear_seed) else {
        return Err(CmdError::msg("ERR the power-loss simulator is not running"));
    };
    // Plain eprintln: the process ends in a moment, and a log pipeline may not
    // flush in time.
    match written {
        Ok(stats) => {
            eprintln!(
                "DEBUG POWERLOSS (tear seed {tear_seed:?}): power cut; wrote the surviving image \
                 to {} ({} files, {} bytes, {} removed); exiting with status {POWERLOSS_EXIT_STATUS}",
                ctx.shared.config.data_dir.display(),
                stats.files_written,
                stats.bytes_written,
                stats.files_removed
            );
            std::process::exit(POWERLOSS_EXIT_STATUS);
        }
        Err(e) => {
            eprintln!(
                "DEBUG POWERLOSS: power cut, but writing the surviving image to {} failed: {e}; \
                 the data directory may be incomplete; exiting",
                ctx.shared.config.data_dir.display()
            );
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::commands::{execute, ClientState, Ctx};
    use crate::config::{FileConfig, ServerArgs, ServerConfig};
    use crate::reply::{Protocol, Reply};
    use crate::resp::Args;
    use crate::state::Shared;
    use crate::store::Store;

    #[test]
    fn debug_powerloss_without_the_simulator_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let args = ServerArgs {
            data_dir: Some(dir.path().to_path_buf()),
            ..ServerArgs::default()
        };
        let cfg = ServerConfig::merge(&args, &FileConfig::default()).unwrap();
        let shared = Arc::new(Shared::new(Store::open(&cfg).unwrap(), cfg));
        let a = "127.0.0.1:1".parse().unwrap();
        let mut client = ClientState::new(shared.clients.register(a, a), &shared);
        for words in [
            &["DEBUG", "POWERLOSS", "7"][..],
            &["DEBUG", "POWERLOSS"][..],
        ] {
            let mut data = Vec::new();
            let mut ranges = Vec::new();
            for w in words {
                let start = data.len();
                data.extend_from_slice(w.as_bytes());
                ranges.push((start, data.len()));
            }
            let mut out = Reply::new(Protocol::Resp2);
            let mut ctx = Ctx::new(&shared, &mut client, &mut out);
            execute(&mut ctx, Args::from_owned(&data, &ranges));
            let text = String::from_utf8_lossy(out.as_bytes()).into_owned();
            assert!(
                text.starts_with(
                    "-ERR DEBUG POWERLOSS needs a server started with --simulate-power-loss"
                ),
                "{text}"
            );
        }
        assert!(!shared.store.stats().poisoned);
    }
}
