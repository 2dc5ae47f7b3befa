//! Server commands: COMMAND, TIME, SAVE, BGSAVE, LASTSAVE, ROLE, SHUTDOWN.
//! INFO and CONFIG have their own modules.

use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{help_reply, unknown_subcommand, CmdError, CmdResult, Ctx, COMMANDS};
use super::{ADMIN, CONNECTION, FAST, NO_AUTH, READONLY, WRITE};
use crate::reply::Reply;
use crate::resp::Args;
use crate::state::{unix_secs, Shared};

/// The Redis version walship answers to (HELLO, INFO): the command set and
/// reply types follow Redis 7.
pub const REDIS_COMPAT_VERSION: &str = "7.2.0";

// ---------------------------------------------------------------- COMMAND

fn command_flags(flags: u16) -> Vec<&'static str> {
    let mut v = Vec::new();
    if flags & WRITE != 0 {
        v.push("write");
    }
    if flags & READONLY != 0 {
        v.push("readonly");
    }
    if flags & ADMIN != 0 {
        v.push("admin");
    }
    if flags & NO_AUTH != 0 {
        v.push("no_auth");
    }
    if flags & FAST != 0 {
        v.push("fast");
    }
    if flags & CONNECTION != 0 {
        v.push("loading");
        v.push("stale");
    }
    v
}

/// One COMMAND INFO entry in Redis 7's 10-element layout.
fn write_command_info(out: &mut Reply, idx: usize) {
    let c = &COMMANDS[idx];
    out.array(10);
    out.bulk(c.name.as_bytes());
    out.int(i64::from(c.arity));
    let flags = command_flags(c.flags);
    out.set(flags.len());
    for f in flags {
        out.simple(f);
    }
    out.int(i64::from(c.keys.0));
    out.int(i64::from(c.keys.1));
    out.int(i64::from(c.keys.2));
    out.set(0); // ACL categories
    out.set(0); // tips
    out.array(0); // key specs
    out.array(0); // subcommands
}

/// The key arguments of `argv` (a full command, name first), from the
/// command's (first, last, step) key positions, as COMMAND GETKEYS answers.
fn command_keys<'a>(argv: &[&'a [u8]]) -> Result<Vec<&'a [u8]>, CmdError> {
    let c = super::lookup(argv[0])
        .map(|i| &COMMANDS[i])
        .ok_or_else(|| CmdError::msg("ERR Invalid command specified"))?;
    let n = argv.len() as i64;
    let (first, last, step) = (
        i64::from(c.keys.0),
        i64::from(c.keys.1),
        i64::from(c.keys.2),
    );
    // In Redis's order: no keys at all first, then the argument count.
    if first == 0 {
        return Err(CmdError::msg("ERR The command has no key arguments"));
    }
    let arity = i64::from(c.arity);
    if (arity > 0 && n != arity) || (arity < 0 && n < -arity) {
        return Err(CmdError::msg(
            "ERR Invalid number of arguments specified for command",
        ));
    }
    let last = if last < 0 { n + last } else { last.min(n - 1) };
    let mut keys = Vec::new();
    let mut i = first;
    while i <= last && i < n {
        keys.push(argv[i as usize]);
        i += step.max(1);
    }
    Ok(keys)
}

pub fn command(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    if args.len() == 1 {
        ctx.out.array(COMMANDS.len());
        for i in 0..COMMANDS.len() {
            write_command_info(ctx.out, i);
        }
        return Ok(());
    }
    let sub = args.get(1);
    if sub.eq_ignore_ascii_case(b"COUNT") {
        if args.len() != 2 {
            return Err(CmdError::arity("command|count"));
        }
        ctx.out.int(COMMANDS.len() as i64);
    } else if sub.eq_ignore_ascii_case(b"INFO") {
        if args.len() == 2 {
            ctx.out.array(COMMANDS.len());
            for i in 0..COMMANDS.len() {
                write_command_info(ctx.out, i);
            }
        } else {
            ctx.out.array(args.len() - 2);
            for name in args.iter().skip(2) {
                match super::lookup(name) {
                    Some(i) => write_command_info(ctx.out, i),
                    // As Redis: a null bulk string (`$-1` in RESP2).
                    None => ctx.out.optional_bulk(None),
                }
            }
        }
    } else if sub.eq_ignore_ascii_case(b"GETKEYS") {
        if args.len() < 3 {
            return Err(CmdError::arity("command|getkeys"));
        }
        let keys = command_keys(&args.iter().skip(2).collect::<Vec<_>>())?;
        ctx.out.array(keys.len());
        for k in keys {
            ctx.out.bulk(k);
        }
    } else if sub.eq_ignore_ascii_case(b"DOCS") {
        // redis-cli asks for docs to show hints; none is a valid answer.
        ctx.out.map(0);
    } else if sub.eq_ignore_ascii_case(b"LIST") {
        // LIST [FILTERBY MODULE m | ACLCAT c | PATTERN p], as Redis 7: walship
        // has no modules and no ACL categories, so those filters match nothing.
        let keep: Box<dyn Fn(&str) -> bool> = match args.len() {
            2 => Box::new(|_| true),
            5 if args.get(2).eq_ignore_ascii_case(b"FILTERBY") => {
                let (kind, value) = (args.get(3), args.get(4));
                if kind.eq_ignore_ascii_case(b"PATTERN") {
                    Box::new(move |name| super::glob::glob_match(value, name.as_bytes()))
                } else if kind.eq_ignore_ascii_case(b"MODULE")
                    || kind.eq_ignore_ascii_case(b"ACLCAT")
                {
                    Box::new(|_| false)
                } else {
                    return Err(CmdError::Syntax);
                }
            }
            _ => return Err(CmdError::Syntax),
        };
        let names: Vec<&str> = COMMANDS
            .iter()
            .map(|c| c.name)
            .filter(|n| keep(n))
            .collect();
        ctx.out.array(names.len());
        for name in names {
            ctx.out.bulk(name.as_bytes());
        }
    } else if sub.eq_ignore_ascii_case(b"HELP") {
        help_reply(
            ctx.out,
            "COMMAND",
            &[
                "(no subcommand)",
                "    Return details about all commands.",
                "COUNT",
                "DOCS",
                "GETKEYS <full-command>",
                "    Return the keys from a full command.",
                "INFO [<command-name> ...]",
                "LIST [FILTERBY (MODULE <module-name>|ACLCAT <category>|PATTERN <pattern>)]",
            ],
        );
    } else {
        return Err(unknown_subcommand(sub, "command"));
    }
    Ok(())
}

// ---------------------------------------------------------------- misc

pub fn time(ctx: &mut Ctx<'_>, _args: Args<'_>) -> CmdResult {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    ctx.out.array(2);
    ctx.out.bulk_int(now.as_secs() as i64);
    ctx.out.bulk_int(i64::from(now.subsec_micros()));
    Ok(())
}

fn checkpoint_now(shared: &Shared) -> Result<(), String> {
    let r = shared.store.checkpoint();
    let p = &shared.persistence;
    match r {
        Ok(info) => {
            tracing::info!(
                redo_lsn = info.redo_lsn,
                keys = info.entries,
                "checkpoint written"
            );
            p.last_save_unix_secs.store(unix_secs(), Ordering::Relaxed);
            p.last_save_status.store(1, Ordering::Relaxed);
            Ok(())
        }
        Err(e) => {
            tracing::error!(error = %e, "checkpoint failed");
            p.last_save_status.store(2, Ordering::Relaxed);
            Err(e.to_string())
        }
    }
}

/// SAVE: writes a checkpoint and replies when it is done.
pub fn save(ctx: &mut Ctx<'_>, _args: Args<'_>) -> CmdResult {
    let p = &ctx.shared.persistence;
    if p.bgsave_in_progress.swap(true, Ordering::AcqRel) {
        return Err(CmdError::msg("ERR Background save already in progress"));
    }
    // The checkpoint blocks; let the runtime move other tasks off this thread.
    let shared = ctx.shared;
    let r = tokio::task::block_in_place(|| checkpoint_now(shared));
    p.bgsave_in_progress.store(false, Ordering::Release);
    r.map_err(|e| CmdError::msg(format!("ERR {e}")))?;
    ctx.out.ok();
    Ok(())
}

/// BGSAVE [SCHEDULE]: starts a checkpoint in the background.
pub fn bgsave(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    if args.len() > 2 || (args.len() == 2 && !args.get(1).eq_ignore_ascii_case(b"SCHEDULE")) {
        return Err(CmdError::Syntax);
    }
    if ctx
        .shared
        .persistence
        .bgsave_in_progress
        .swap(true, Ordering::AcqRel)
    {
        return Err(CmdError::msg("ERR Background save already in progress"));
    }
    let shared = ctx.shared.clone();
    tokio::task::spawn_blocking(move || {
        let _ = checkpoint_now(&shared);
        shared
            .persistence
            .bgsave_in_progress
            .store(false, Ordering::Release);
    });
    ctx.out.simple("Background saving started");
    Ok(())
}

/// Unix time of the last successful checkpoint, or of the start before the
/// first (as Redis, whose LASTSAVE starts at the load of its dataset).
pub fn last_save_time(shared: &Shared) -> u64 {
    match shared
        .persistence
        .last_save_unix_secs
        .load(Ordering::Relaxed)
    {
        0 => shared.started_unix_secs,
        t => t,
    }
}

pub fn lastsave(ctx: &mut Ctx<'_>, _args: Args<'_>) -> CmdResult {
    ctx.out.int(last_save_time(ctx.shared) as i64);
    Ok(())
}

/// SHUTDOWN [NOSAVE|SAVE] [NOW] [FORCE]: graceful stop, as on SIGTERM. Like
/// Redis, no reply: the connection closes.
pub fn shutdown(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let has = |o: &[u8]| args.iter().skip(1).any(|a| a.eq_ignore_ascii_case(o));
    if has(b"SAVE") && has(b"NOSAVE") {
        // Contradictory, as Redis says: a mistyped SHUTDOWN stops nothing.
        return Err(CmdError::Syntax);
    }
    for a in args.iter().skip(1) {
        let ok = [&b"NOSAVE"[..], b"SAVE", b"NOW", b"FORCE"]
            .iter()
            .any(|o| a.eq_ignore_ascii_case(o));
        if a.eq_ignore_ascii_case(b"ABORT") {
            return Err(CmdError::msg("ERR No shutdown in progress."));
        }
        if !ok {
            return Err(CmdError::Syntax);
        }
    }
    tracing::info!(
        client = ctx.client.info.id,
        "SHUTDOWN requested by a client"
    );
    ctx.shared.trigger_shutdown();
    ctx.client.close_after_reply = true;
    Ok(())
}
