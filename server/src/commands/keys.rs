//! Keyspace commands.

use std::collections::HashSet;

use bytes::Bytes;

use super::{glob_match, parse_int, CmdError, CmdResult, Ctx};
use crate::resp::Args;
use crate::store::{BatchOp, Mutation};

/// DEL / UNLINK: deletes the keys that exist, as one record, and counts them.
pub fn del(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let deleted = ctx.transact(|view| {
        let mut seen: HashSet<&[u8]> = HashSet::new();
        let mut ops = Vec::new();
        for key in args.iter().skip(1) {
            if view.contains_key(key) && seen.insert(key) {
                ops.push(BatchOp::Delete {
                    key: Bytes::copy_from_slice(key),
                });
            }
        }
        let n = ops.len();
        let m = match ops.len() {
            0 => None,
            1 => match ops.pop() {
                Some(BatchOp::Delete { key }) => Some(Mutation::Delete { key }),
                _ => unreachable!("only deletes were pushed"),
            },
            _ => Some(Mutation::Batch(ops)),
        };
        (m, n)
    })?;
    ctx.out.int(deleted as i64);
    Ok(())
}

/// EXISTS counts every argument that names a key, repeats included.
/// Several keys are counted in one consistent state (see `string::mget`).
pub fn exists(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let n = if args.len() == 2 {
        usize::from(ctx.shared.store.contains_key(args.get(1)))
    } else {
        ctx.transact(|view| {
            (
                None,
                args.iter().skip(1).filter(|k| view.contains_key(k)).count(),
            )
        })?
    };
    ctx.out.int(n as i64);
    Ok(())
}

pub fn type_(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let t = if ctx.shared.store.contains_key(args.get(1)) {
        "string"
    } else {
        "none"
    };
    ctx.out.simple(t);
    Ok(())
}

/// TTL / PTTL: keys never expire, so -1 for a key and -2 for no key.
pub fn ttl(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    ctx.out.int(if ctx.shared.store.contains_key(args.get(1)) {
        -1
    } else {
        -2
    });
    Ok(())
}

/// PERSIST: no key has a timeout to remove.
pub fn persist(ctx: &mut Ctx<'_>, _args: Args<'_>) -> CmdResult {
    ctx.out.int(0);
    Ok(())
}

pub fn dbsize(ctx: &mut Ctx<'_>, _args: Args<'_>) -> CmdResult {
    ctx.out.int(ctx.shared.store.len() as i64);
    Ok(())
}

/// FLUSHALL / FLUSHDB [ASYNC|SYNC]: one Clear record.
pub fn flushall(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    match args.len() {
        1 => {}
        2 if args.get(1).eq_ignore_ascii_case(b"ASYNC")
            || args.get(1).eq_ignore_ascii_case(b"SYNC") => {}
        _ => return Err(CmdError::Syntax),
    }
    ctx.transact(|_| (Some(Mutation::Clear), ()))?;
    ctx.out.ok();
    Ok(())
}

/// The literal prefix of a glob pattern (bytes before the first special one).
fn literal_prefix(pattern: &[u8]) -> &[u8] {
    let end = pattern
        .iter()
        .position(|b| matches!(b, b'*' | b'?' | b'[' | b'\\'))
        .unwrap_or(pattern.len());
    &pattern[..end]
}

/// How many keys one engine scan call fetches.
const SCAN_CHUNK: usize = 1024;

pub fn keys(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let pattern = args.get(1);
    let prefix = literal_prefix(pattern);
    let store = &ctx.shared.store;
    let mut found: Vec<Bytes> = Vec::new();
    // Keys are ordered, so a literal prefix bounds the walk.
    let mut after: Option<Bytes> = None;
    if !prefix.is_empty() {
        if store.contains_key(prefix) && glob_match(pattern, prefix) {
            found.push(Bytes::copy_from_slice(prefix));
        }
        after = Some(Bytes::copy_from_slice(prefix));
    }
    'outer: loop {
        let chunk = store.scan(after.as_deref(), SCAN_CHUNK);
        let done = chunk.len() < SCAN_CHUNK;
        for key in &chunk {
            if !key.starts_with(prefix) {
                break 'outer;
            }
            if glob_match(pattern, key) {
                found.push(key.clone());
            }
        }
        if done {
            break;
        }
        after = chunk.last().cloned();
    }
    ctx.out.array(found.len());
    for k in &found {
        ctx.out.bulk(k);
    }
    Ok(())
}

/// A well-formed cursor this node does not know.
const UNKNOWN_CURSOR: &str = "ERR invalid cursor: not issued by this node since it started, or forgotten (it keeps the cursors of the 16384 most recent scans in progress); start the scan again from 0";

/// SCAN cursor [MATCH pattern] [COUNT count] [TYPE type].
///
/// Keys come in ascending order. A non-zero cursor stands for the last key
/// returned (see `ScanCursors`); every key present for the whole scan is
/// returned exactly once.
pub fn scan(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let cursor_arg = args.get(1);
    let cursor: u64 = std::str::from_utf8(cursor_arg)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| CmdError::msg("ERR invalid cursor"))?;
    let mut pattern: Option<&[u8]> = None;
    let mut count: usize = 10;
    let mut type_ok = true;
    let mut i = 2;
    while i < args.len() {
        let opt = args.get(i);
        if i + 1 >= args.len() {
            return Err(CmdError::Syntax);
        }
        let val = args.get(i + 1);
        if opt.eq_ignore_ascii_case(b"MATCH") {
            pattern = Some(val).filter(|p| *p != b"*");
        } else if opt.eq_ignore_ascii_case(b"COUNT") {
            let n = parse_int(val)?;
            if n < 1 {
                return Err(CmdError::Syntax);
            }
            count = usize::try_from(n).unwrap_or(usize::MAX);
        } else if opt.eq_ignore_ascii_case(b"TYPE") {
            type_ok = val.eq_ignore_ascii_case(b"string");
        } else {
            return Err(CmdError::Syntax);
        }
        i += 2;
    }
    let after = if cursor == 0 {
        None
    } else {
        Some(
            ctx.shared
                .scan_cursors
                .get(cursor)
                .ok_or_else(|| CmdError::msg(UNKNOWN_CURSOR))?,
        )
    };
    // COUNT is a hint of work per call; bound it so one call stays short.
    let count = count.min(1 << 20);
    let keys = ctx.shared.store.scan(after.as_deref(), count);
    let next = if keys.len() < count {
        0
    } else {
        match keys.last() {
            Some(last) => ctx
                .shared
                .scan_cursors
                .insert(last.clone(), (cursor != 0).then_some(cursor)),
            None => 0,
        }
    };
    let matching: Vec<&Bytes> = keys
        .iter()
        .filter(|k| type_ok && pattern.is_none_or(|p| glob_match(p, k)))
        .collect();
    ctx.out.array(2);
    ctx.out.bulk(next.to_string().as_bytes());
    ctx.out.array(matching.len());
    for k in matching {
        ctx.out.bulk(k);
    }
    Ok(())
}

/// RENAME key newkey: moves the value, replacing what `newkey` held.
pub fn rename(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    move_key(ctx, args.get(1), args.get(2), false)?;
    ctx.out.ok();
    Ok(())
}

/// RENAMENX key newkey: 1 if moved, 0 if `newkey` exists.
pub fn renamenx(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let moved = move_key(ctx, args.get(1), args.get(2), true)?;
    ctx.out.int(i64::from(moved));
    Ok(())
}

/// Moves `from` to `to` as one record (a delete and a put); false when
/// `only_if_absent` and `to` exists. Redis's errors for a missing key.
fn move_key(
    ctx: &mut Ctx<'_>,
    from: &[u8],
    to: &[u8],
    only_if_absent: bool,
) -> Result<bool, CmdError> {
    ctx.transact(|view| {
        let Some(value) = view.value(from) else {
            return (None, Err(CmdError::msg("ERR no such key")));
        };
        if from == to {
            return (None, Ok(!only_if_absent));
        }
        if only_if_absent && view.contains_key(to) {
            return (None, Ok(false));
        }
        let ops = vec![
            BatchOp::Delete {
                key: Bytes::copy_from_slice(from),
            },
            BatchOp::Put {
                key: Bytes::copy_from_slice(to),
                value: Bytes::copy_from_slice(value.bytes()),
            },
        ];
        (Some(Mutation::Batch(ops)), Ok(true))
    })?
}

/// COPY source destination [DB 0] [REPLACE]: 1 if copied; 0 if the source
/// is missing or the destination exists (without REPLACE).
pub fn copy(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let (from, to) = (args.get(1), args.get(2));
    let mut replace = false;
    let mut i = 3;
    while i < args.len() {
        let opt = args.get(i);
        if opt.eq_ignore_ascii_case(b"REPLACE") {
            replace = true;
        } else if opt.eq_ignore_ascii_case(b"DB") && i + 1 < args.len() {
            // walship has one database, as SELECT says.
            if parse_int(args.get(i + 1))? != 0 {
                return Err(CmdError::msg("ERR DB index is out of range"));
            }
            i += 1;
        } else {
            return Err(CmdError::Syntax);
        }
        i += 1;
    }
    if from == to {
        return Err(CmdError::msg(
            "ERR source and destination objects are the same",
        ));
    }
    let copied = ctx.transact(|view| {
        let Some(value) = view.value(from) else {
            return (None, false);
        };
        if !replace && view.contains_key(to) {
            return (None, false);
        }
        (
            Some(Mutation::Put {
                key: Bytes::copy_from_slice(to),
                value: Bytes::copy_from_slice(value.bytes()),
            }),
            true,
        )
    })?;
    ctx.out.int(i64::from(copied));
    Ok(())
}
