//! Connection commands: PING, ECHO, HELLO, AUTH, SELECT, QUIT, RESET, CLIENT.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use super::{
    help_reply, parse_int, unknown_subcommand, ClientState, CmdError, CmdResult, Ctx, COMMANDS,
};
use crate::reply::Protocol;
use crate::resp::Args;
use crate::state::ClientInfo;

use super::server::REDIS_COMPAT_VERSION;

pub fn ping(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    match args.len() {
        1 => ctx.out.simple("PONG"),
        2 => ctx.out.bulk(args.get(1)),
        _ => return Err(CmdError::arity("ping")),
    }
    Ok(())
}

pub fn echo(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    ctx.out.bulk(args.get(1));
    Ok(())
}

/// Compares in time independent of where the first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

/// Checks credentials for AUTH and HELLO AUTH. Only the user `default` exists.
fn check_credentials(ctx: &mut Ctx<'_>, user: Option<&[u8]>, pass: &[u8]) -> CmdResult {
    let required = ctx.shared.runtime.requirepass();
    if user.is_some_and(|u| u != b"default") {
        return Err(CmdError::msg(WRONGPASS));
    }
    match required {
        // Like Redis's default user with `nopass`: any password is accepted.
        None => {}
        Some(p) if constant_time_eq(p.as_bytes(), pass) => {}
        Some(_) => {
            tracing::warn!(client = ctx.client.info.id, addr = %ctx.client.info.addr, "AUTH failed");
            return Err(CmdError::msg(WRONGPASS));
        }
    }
    ctx.client.authenticated = true;
    Ok(())
}

/// AUTH password | AUTH username password
pub fn auth(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    match args.len() {
        2 => {
            if ctx.shared.runtime.requirepass().is_none() {
                return Err(CmdError::msg(
                    "ERR AUTH <password> called without any password configured for the default user. \
                     Are you sure your configuration is correct?",
                ));
            }
            check_credentials(ctx, None, args.get(1))?;
        }
        3 => check_credentials(ctx, Some(args.get(1)), args.get(2))?,
        _ => return Err(CmdError::Syntax),
    }
    ctx.out.ok();
    Ok(())
}

fn valid_client_name(name: &[u8]) -> bool {
    name.iter().all(|&b| (b'!'..=b'~').contains(&b))
}

fn set_name(info: &ClientInfo, name: &[u8]) -> CmdResult {
    if !valid_client_name(name) {
        return Err(CmdError::msg(
            "ERR Client names cannot contain spaces, newlines or special characters.",
        ));
    }
    *info.name.lock() = if name.is_empty() {
        None
    } else {
        Some(String::from_utf8_lossy(name).into_owned())
    };
    Ok(())
}

/// HELLO [protover [AUTH username password] [SETNAME clientname]]
pub fn hello(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let mut proto = ctx.out.protocol();
    if args.len() >= 2 {
        let v = parse_int(args.get(1))
            .map_err(|_| CmdError::msg("ERR Protocol version is not an integer or out of range"))?;
        proto = match v {
            2 => Protocol::Resp2,
            3 => Protocol::Resp3,
            _ => return Err(CmdError::msg("NOPROTO unsupported protocol version")),
        };
    }
    let mut creds: Option<(&[u8], &[u8])> = None;
    let mut name: Option<&[u8]> = None;
    let mut i = 2;
    while i < args.len() {
        let opt = args.get(i);
        let more = args.len() - 1 - i;
        if opt.eq_ignore_ascii_case(b"AUTH") && more >= 2 {
            creds = Some((args.get(i + 1), args.get(i + 2)));
            i += 3;
        } else if opt.eq_ignore_ascii_case(b"SETNAME") && more >= 1 {
            name = Some(args.get(i + 1));
            i += 2;
        } else {
            return Err(CmdError::msg(format!(
                "ERR Syntax error in HELLO option '{}'",
                String::from_utf8_lossy(opt)
            )));
        }
    }
    if let Some((user, pass)) = creds {
        check_credentials(ctx, Some(user), pass)?;
    }
    if !ctx.client.authenticated {
        return Err(CmdError::msg(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO \
             AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol \
             version at the same time",
        ));
    }
    if let Some(n) = name {
        set_name(&ctx.client.info, n)?;
    }
    ctx.out.set_protocol(proto);
    ctx.client
        .info
        .resp
        .store(proto.version() as u8, Ordering::Relaxed);
    ctx.out.map(7);
    ctx.out.bulk(b"server");
    ctx.out.bulk(b"redis");
    ctx.out.bulk(b"version");
    ctx.out.bulk(REDIS_COMPAT_VERSION.as_bytes());
    ctx.out.bulk(b"proto");
    ctx.out.int(proto.version());
    ctx.out.bulk(b"id");
    ctx.out.int(ctx.client.info.id as i64);
    ctx.out.bulk(b"mode");
    ctx.out.bulk(b"standalone");
    ctx.out.bulk(b"role");
    ctx.out.bulk(b"master");
    ctx.out.bulk(b"modules");
    ctx.out.array(0);
    Ok(())
}

pub fn select(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let db = parse_int(args.get(1))?;
    if db != 0 {
        return Err(CmdError::msg("ERR DB index is out of range"));
    }
    ctx.out.ok();
    Ok(())
}

pub fn quit(ctx: &mut Ctx<'_>, _args: Args<'_>) -> CmdResult {
    ctx.out.ok();
    ctx.client.close_after_reply = true;
    Ok(())
}

/// RESET: back to a fresh connection's state (RESP2, no name, the server's
/// `synchronous_commit`, and logged out when a password is required), so a
/// pooled connection hands nothing on to its next user.
/// MULTI, EXEC and DISCARD, which walship does not have, answered so that a
/// client library's transaction fails as a whole instead of running its
/// commands one by one: MULTI is refused, every command after it is
/// refused (not run) until EXEC, which answers EXECABORT as Redis does for
/// a transaction with a refused command, or DISCARD. Returns the error for
/// a command this handles; `None` lets it run. QUIT and RESET always run
/// (RESET ends the refused transaction, as it discards one in Redis).
/// `Some(Ok(()))` is a `+OK`.
pub fn refused_transaction(client: &mut ClientState, name: &[u8]) -> Option<Result<(), String>> {
    let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
    if is(b"MULTI") {
        if client.in_refused_multi {
            return Some(Err("ERR MULTI calls can not be nested".into()));
        }
        client.in_refused_multi = true;
        return Some(Err(
            "ERR MULTI is not supported: walship has no transactions. The commands until EXEC or \
             DISCARD will be refused, not run"
                .into(),
        ));
    }
    if is(b"EXEC") {
        return Some(Err(if std::mem::take(&mut client.in_refused_multi) {
            "EXECABORT Transaction discarded because of previous errors.".into()
        } else {
            "ERR EXEC without MULTI".into()
        }));
    }
    if is(b"DISCARD") {
        return Some(if std::mem::take(&mut client.in_refused_multi) {
            Ok(())
        } else {
            Err("ERR DISCARD without MULTI".into())
        });
    }
    if client.in_refused_multi && !is(b"QUIT") && !is(b"RESET") {
        return Some(Err(
            "ERR command not run: MULTI was refused (walship has no transactions); EXEC or \
             DISCARD ends the transaction"
                .into(),
        ));
    }
    None
}

/// CLIENT KILL, both of Redis's forms: `CLIENT KILL ip:port` (+OK, or an
/// error when no client has that address) and `CLIENT KILL <filter> <value>
/// ...` (how many were killed; the caller is spared unless `SKIPME no`). A
/// killed client is closed at once, even while its reply waits for
/// standbys; a standby's replication stream can be killed too (`TYPE
/// replica`), and reconnects.
fn client_kill(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let me = ctx.client.info.id;
    let clients = ctx.shared.clients.list();
    let text = |i: usize| String::from_utf8_lossy(args.get(i)).into_owned();
    if args.len() == 3 {
        let addr = text(2);
        let Some(c) = clients.iter().find(|c| c.addr.to_string() == addr) else {
            return Err(CmdError::msg("ERR No such client"));
        };
        c.killed.notify_one();
        ctx.out.ok();
        return Ok(());
    }
    if !args.len().is_multiple_of(2) {
        return Err(CmdError::Syntax);
    }
    type Filter = Box<dyn Fn(&ClientInfo) -> bool>;
    let mut filters: Vec<Filter> = Vec::new();
    let mut skip_me = true;
    for i in (2..args.len()).step_by(2) {
        let (opt, value) = (args.get(i), text(i + 1));
        let opt_is = |s: &[u8]| opt.eq_ignore_ascii_case(s);
        if opt_is(b"ID") {
            let id = parse_int(args.get(i + 1))
                .ok()
                .filter(|&id| id > 0)
                .ok_or_else(|| CmdError::msg("ERR client-id should be greater than 0"))?;
            filters.push(Box::new(move |c| c.id == id as u64));
        } else if opt_is(b"ADDR") {
            filters.push(Box::new(move |c| c.addr.to_string() == value));
        } else if opt_is(b"LADDR") {
            filters.push(Box::new(move |c| c.laddr.to_string() == value));
        } else if opt_is(b"USER") {
            // One user, `default`, as AUTH and HELLO know it.
            if value != "default" {
                return Err(CmdError::msg(format!("ERR No such user '{value}'")));
            }
        } else if opt_is(b"TYPE") {
            let kind = value.to_ascii_lowercase();
            let replica = match kind.as_str() {
                "normal" => false,
                "replica" | "slave" => true,
                // No pub/sub, and a primary's link is not a client here.
                "master" | "pubsub" => {
                    filters.push(Box::new(|_| false));
                    continue;
                }
                _ => return Err(CmdError::msg(format!("ERR Unknown client type '{value}'"))),
            };
            filters.push(Box::new(move |c| {
                c.is_replica.load(Ordering::Relaxed) == replica
            }));
        } else if opt_is(b"MAXAGE") {
            let secs = parse_int(args.get(i + 1))?;
            filters.push(Box::new(move |c| {
                c.created.elapsed().as_secs() as i64 >= secs
            }));
        } else if opt_is(b"SKIPME") {
            skip_me = if value.eq_ignore_ascii_case("yes") {
                true
            } else if value.eq_ignore_ascii_case("no") {
                false
            } else {
                return Err(CmdError::Syntax);
            };
        } else {
            return Err(CmdError::Syntax);
        }
    }
    let mut killed = 0;
    for c in &clients {
        if (skip_me && c.id == me) || !filters.iter().all(|f| f(c)) {
            continue;
        }
        if c.id == me {
            ctx.client.close_after_reply = true;
        } else {
            c.killed.notify_one();
        }
        killed += 1;
    }
    ctx.out.int(killed);
    Ok(())
}

pub fn reset(ctx: &mut Ctx<'_>, _args: Args<'_>) -> CmdResult {
    ctx.client.in_refused_multi = false;
    ctx.out.set_protocol(Protocol::Resp2);
    ctx.client.info.resp.store(2, Ordering::Relaxed);
    *ctx.client.info.name.lock() = None;
    ctx.client.sync_commit = None;
    ctx.client.authenticated = ctx.shared.runtime.requirepass().is_none();
    ctx.out.simple("RESET");
    Ok(())
}

/// One `CLIENT LIST` line, fields as Redis 7 prints them.
fn client_line(info: &ClientInfo, out: &mut String) {
    let age = info.created.elapsed();
    let idle_ms =
        (age.as_millis() as u64).saturating_sub(info.last_active_ms.load(Ordering::Relaxed));
    let cmd = COMMANDS
        .get(info.last_command.load(Ordering::Relaxed))
        .map_or("NULL", |c| c.name);
    let _ = writeln!(
        out,
        "id={} addr={} laddr={} fd=-1 name={} age={} idle={} flags={} db=0 sub=0 psub=0 ssub=0 multi=-1 \
         qbuf={} qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem={} tot-mem=0 events=r cmd={} \
         user=default redir=-1 resp={} lib-name={} lib-ver={}",
        info.id,
        info.addr,
        info.laddr,
        info.name.lock().as_deref().unwrap_or(""),
        age.as_secs(),
        idle_ms / 1000,
        // S: a replica's stream, as Redis flags it; N: a normal client.
        if info.is_replica.load(Ordering::Relaxed) {
            "S"
        } else {
            "N"
        },
        info.query_buffer_bytes.load(Ordering::Relaxed),
        info.output_buffer_bytes.load(Ordering::Relaxed),
        cmd,
        info.resp.load(Ordering::Relaxed),
        info.lib_name.lock().as_deref().unwrap_or(""),
        info.lib_ver.lock().as_deref().unwrap_or(""),
    );
}

pub fn client(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let sub = args.get(1);
    let n = args.len();
    let is = |s: &[u8]| sub.eq_ignore_ascii_case(s);
    if is(b"ID") {
        if n != 2 {
            return Err(CmdError::arity("client|id"));
        }
        ctx.out.int(ctx.client.info.id as i64);
    } else if is(b"GETNAME") {
        if n != 2 {
            return Err(CmdError::arity("client|getname"));
        }
        let name = ctx.client.info.name.lock().clone();
        ctx.out.optional_bulk(name.as_deref().map(str::as_bytes));
    } else if is(b"SETNAME") {
        if n != 3 {
            return Err(CmdError::arity("client|setname"));
        }
        set_name(&ctx.client.info, args.get(2))?;
        ctx.out.ok();
    } else if is(b"SETINFO") {
        if n != 4 {
            return Err(CmdError::arity("client|setinfo"));
        }
        let attr = args.get(2);
        let value = args.get(3);
        if !valid_client_name(value) {
            return Err(CmdError::msg(format!(
                "ERR {} cannot contain spaces, newlines or special characters.",
                String::from_utf8_lossy(attr)
            )));
        }
        let value = String::from_utf8_lossy(value).into_owned();
        if attr.eq_ignore_ascii_case(b"LIB-NAME") {
            *ctx.client.info.lib_name.lock() = Some(value);
        } else if attr.eq_ignore_ascii_case(b"LIB-VER") {
            *ctx.client.info.lib_ver.lock() = Some(value);
        } else {
            return Err(CmdError::msg(format!(
                "ERR Unrecognized option '{}'",
                String::from_utf8_lossy(attr)
            )));
        }
        ctx.out.ok();
    } else if is(b"LIST") {
        // CLIENT LIST [TYPE normal|replica|master|pubsub | ID id [id ...]],
        // one filter or none, as Redis 7.0.
        let mut ids: Option<Vec<i64>> = None;
        let mut replica: Option<bool> = None;
        let mut none = false;
        if n == 4 && args.get(2).eq_ignore_ascii_case(b"TYPE") {
            let kind = String::from_utf8_lossy(args.get(3)).to_ascii_lowercase();
            match kind.as_str() {
                "normal" => replica = Some(false),
                "replica" | "slave" => replica = Some(true),
                // Neither exists here: nothing to list.
                "master" | "pubsub" => none = true,
                _ => return Err(CmdError::msg(format!("ERR Unknown client type '{kind}'"))),
            }
        } else if n >= 4 && args.get(2).eq_ignore_ascii_case(b"ID") {
            let list: Result<Vec<i64>, _> = args.iter().skip(3).map(parse_int).collect();
            ids = Some(list.map_err(|_| CmdError::msg("ERR Invalid client ID"))?);
        } else if n != 2 {
            return Err(CmdError::Syntax);
        }
        let mut text = String::new();
        for c in ctx.shared.clients.list() {
            let wanted = !none
                && ids.as_ref().is_none_or(|ids| ids.contains(&(c.id as i64)))
                && replica.is_none_or(|r| c.is_replica.load(Ordering::Relaxed) == r);
            if wanted {
                client_line(&c, &mut text);
            }
        }
        ctx.out.verbatim("txt", text.as_bytes());
    } else if is(b"KILL") {
        if n < 3 {
            return Err(CmdError::arity("client|kill"));
        }
        client_kill(ctx, args)?;
    } else if is(b"INFO") {
        if n != 2 {
            return Err(CmdError::arity("client|info"));
        }
        let mut text = String::new();
        client_line(&ctx.client.info, &mut text);
        ctx.out.verbatim("txt", text.as_bytes());
    } else if is(b"NO-EVICT") || is(b"NO-TOUCH") {
        if n != 3 {
            return Err(CmdError::arity(if is(b"NO-EVICT") {
                "client|no-evict"
            } else {
                "client|no-touch"
            }));
        }
        let v = args.get(2);
        if !v.eq_ignore_ascii_case(b"ON") && !v.eq_ignore_ascii_case(b"OFF") {
            return Err(CmdError::Syntax);
        }
        ctx.out.ok();
    } else if is(b"HELP") {
        help_reply(
            ctx.out,
            "CLIENT",
            &[
                "GETNAME",
                "ID",
                "INFO",
                "KILL <ip:port>",
                "KILL <option> <value> [<option> <value> [...]]",
                "    Kill connections. Options: ID <client-id>, ADDR <ip:port>,",
                "    LADDR <ip:port>, USER default, TYPE (NORMAL|REPLICA|MASTER|PUBSUB),",
                "    MAXAGE <seconds>, SKIPME (YES|NO).",
                "LIST [TYPE (NORMAL|REPLICA|MASTER|PUBSUB) | ID <client-id> [<client-id> ...]]",
                "SETINFO <LIB-NAME|LIB-VER> <value>",
                "SETNAME <name>",
            ],
        );
    } else {
        return Err(unknown_subcommand(sub, "client"));
    }
    Ok(())
}
