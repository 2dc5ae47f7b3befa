//! String commands. Every read-modify-write runs inside one
//! `Ctx::transact`, and logs the resulting value, never the operation.

use bytes::Bytes;

use super::{parse_int, CmdError, CmdResult, Ctx};
use crate::resp::{parse_i64, Args};
use crate::store::{BatchOp, Mutation};

/// Error for every way of asking for expiry: walship has no durable expiry.
pub const EXPIRY_UNSUPPORTED: &str =
    "ERR key expiry is not supported by walship (keys never expire; \
     SET EX/PX/EXAT/PXAT, SETEX, PSETEX, GETEX with a time and EXPIRE are refused)";

pub fn get(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let v = ctx.shared.store.get(args.get(1));
    ctx.out.optional_bulk(v.as_deref());
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Condition {
    Always,
    IfAbsent,
    IfPresent,
}

pub fn set(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let mut cond = Condition::Always;
    let mut return_old = false;
    let mut expiry = false;
    let mut keep_ttl = false;
    let mut i = 3;
    while i < args.len() {
        let opt = args.get(i);
        let has_next = i + 1 < args.len();
        if opt.eq_ignore_ascii_case(b"NX") && cond != Condition::IfPresent {
            cond = Condition::IfAbsent;
        } else if opt.eq_ignore_ascii_case(b"XX") && cond != Condition::IfAbsent {
            cond = Condition::IfPresent;
        } else if opt.eq_ignore_ascii_case(b"GET") {
            return_old = true;
        } else if opt.eq_ignore_ascii_case(b"KEEPTTL") && !expiry {
            // Keys have no time to live to keep: accepted, and does nothing
            // (as on a Redis key without one).
            keep_ttl = true;
        } else if is_expiry_option(opt) && has_next && !expiry && !keep_ttl {
            // As Redis, a bad time is refused as such before anything else.
            expiry_time(args.get(i + 1), "set")?;
            expiry = true;
            i += 1;
        } else {
            return Err(CmdError::Syntax);
        }
        i += 1;
    }
    if expiry {
        return Err(CmdError::msg(EXPIRY_UNSUPPORTED));
    }
    let key = Bytes::copy_from_slice(args.get(1));
    let value = Bytes::copy_from_slice(args.get(2));
    let (written, old) = ctx.transact(|view| {
        // A plain SET needs no lookup: one tree descent less per write.
        let current = if return_old || cond != Condition::Always {
            view.value(&key)
        } else {
            None
        };
        let old = if return_old {
            current.map(|v| v.to_bytes())
        } else {
            None
        };
        let go = match cond {
            Condition::Always => true,
            Condition::IfAbsent => current.is_none(),
            Condition::IfPresent => current.is_some(),
        };
        if go {
            (Some(Mutation::Put { key, value }), (true, old))
        } else {
            (None, (false, old))
        }
    })?;
    if return_old {
        ctx.out.optional_bulk(old.as_deref());
    } else if written {
        ctx.out.ok();
    } else {
        ctx.out.null();
    }
    Ok(())
}

pub fn setnx(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let key = Bytes::copy_from_slice(args.get(1));
    let value = Bytes::copy_from_slice(args.get(2));
    let written = ctx.transact(|view| {
        if view.contains_key(&key) {
            (None, false)
        } else {
            (Some(Mutation::Put { key, value }), true)
        }
    })?;
    ctx.out.int(i64::from(written));
    Ok(())
}

pub fn getset(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let key = Bytes::copy_from_slice(args.get(1));
    let value = Bytes::copy_from_slice(args.get(2));
    let old = ctx.transact(|view| {
        let old = view.get(&key);
        (Some(Mutation::Put { key, value }), old)
    })?;
    ctx.out.optional_bulk(old.as_deref());
    Ok(())
}

pub fn getdel(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let key = args.get(1);
    let old = ctx.transact(|view| match view.get(key) {
        Some(v) => (
            Some(Mutation::Delete {
                key: Bytes::copy_from_slice(key),
            }),
            Some(v.clone()),
        ),
        None => (None, None),
    })?;
    ctx.out.optional_bulk(old.as_deref());
    Ok(())
}

/// EX, PX, EXAT or PXAT, in any case.
fn is_expiry_option(opt: &[u8]) -> bool {
    [&b"EX"[..], b"PX", b"EXAT", b"PXAT"]
        .iter()
        .any(|o| opt.eq_ignore_ascii_case(o))
}

/// An expiry time argument, checked as Redis checks it (an integer > 0),
/// so that a malformed one gets Redis's error rather than walship's.
fn expiry_time(arg: &[u8], command: &str) -> Result<i64, CmdError> {
    let t = parse_int(arg)?;
    if t <= 0 {
        return Err(CmdError::msg(format!(
            "ERR invalid expire time in '{command}' command"
        )));
    }
    Ok(t)
}

/// GETEX key [EX s | PX ms | EXAT t | PXAT t | PERSIST], parsed as Redis
/// parses it: without a time (or with PERSIST: keys have no time to live)
/// it is GET; a well-formed time is refused, expiry being unsupported.
pub fn getex(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let (mut persist, mut expiry) = (false, false);
    let mut i = 2;
    while i < args.len() {
        let opt = args.get(i);
        if opt.eq_ignore_ascii_case(b"PERSIST") && !expiry {
            persist = true;
        } else if is_expiry_option(opt) && i + 1 < args.len() && !expiry && !persist {
            expiry_time(args.get(i + 1), "getex")?;
            expiry = true;
            i += 1;
        } else {
            return Err(CmdError::Syntax);
        }
        i += 1;
    }
    if expiry {
        return Err(CmdError::msg(EXPIRY_UNSUPPORTED));
    }
    get(ctx, args)
}

pub fn expiry_refused(_ctx: &mut Ctx<'_>, _args: Args<'_>) -> CmdResult {
    Err(CmdError::msg(EXPIRY_UNSUPPORTED))
}

/// MGET reads all keys from one consistent state, so it never sees half of
/// an MSET. A read-only `transact` gives that snapshot: it holds the writer
/// slot (not the readers) while the values are cloned, which is cheap.
pub fn mget(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let values = ctx.transact(|view| {
        let values: Vec<Option<Bytes>> = args.iter().skip(1).map(|k| view.get(k)).collect();
        (None, values)
    })?;
    ctx.out.array(values.len());
    for v in &values {
        ctx.out.optional_bulk(v.as_deref());
    }
    Ok(())
}

fn pairs_to_batch(args: Args<'_>) -> Vec<BatchOp> {
    let mut ops = Vec::with_capacity((args.len() - 1) / 2);
    let mut i = 1;
    while i + 1 < args.len() {
        ops.push(BatchOp::Put {
            key: Bytes::copy_from_slice(args.get(i)),
            value: Bytes::copy_from_slice(args.get(i + 1)),
        });
        i += 2;
    }
    ops
}

/// MSET: all pairs in one Batch record, so a crash keeps all or none.
pub fn mset(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    if args.len().is_multiple_of(2) {
        return Err(CmdError::arity("mset"));
    }
    let ops = pairs_to_batch(args);
    ctx.transact(|_| (Some(Mutation::Batch(ops)), ()))?;
    ctx.out.ok();
    Ok(())
}

pub fn msetnx(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    if args.len().is_multiple_of(2) {
        return Err(CmdError::arity("msetnx"));
    }
    let ops = pairs_to_batch(args);
    let written = ctx.transact(|view| {
        let any_exists = ops.iter().any(|op| match op {
            BatchOp::Put { key, .. } | BatchOp::Delete { key } => view.contains_key(key),
        });
        if any_exists {
            (None, false)
        } else {
            (Some(Mutation::Batch(ops)), true)
        }
    })?;
    ctx.out.int(i64::from(written));
    Ok(())
}

fn incr_by(ctx: &mut Ctx<'_>, key: &[u8], delta: i64) -> CmdResult {
    let result = ctx.transact(|view| {
        let current: i64 = match view.value(key) {
            None => 0,
            Some(v) => match parse_i64(v.bytes()) {
                Some(n) => n,
                None => return (None, Err(CmdError::NotInteger)),
            },
        };
        let Some(new) = current.checked_add(delta) else {
            return (
                None,
                Err(CmdError::msg("ERR increment or decrement would overflow")),
            );
        };
        let value = Bytes::from(new.to_string());
        (
            Some(Mutation::Put {
                key: Bytes::copy_from_slice(key),
                value,
            }),
            Ok(new),
        )
    })?;
    ctx.out.int(result?);
    Ok(())
}

pub fn incr(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    incr_by(ctx, args.get(1), 1)
}

pub fn decr(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    incr_by(ctx, args.get(1), -1)
}

pub fn incrby(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let delta = parse_int(args.get(2))?;
    incr_by(ctx, args.get(1), delta)
}

pub fn decrby(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let delta = parse_int(args.get(2))?;
    let Some(neg) = delta.checked_neg() else {
        return Err(CmdError::msg("ERR decrement would overflow"));
    };
    incr_by(ctx, args.get(1), neg)
}

pub fn append(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let key = args.get(1);
    let suffix = args.get(2);
    let len = rewrite_value(ctx, key, |current| {
        let current = current.unwrap_or(b"");
        let mut new = Vec::with_capacity(current.len() + suffix.len());
        new.extend_from_slice(current);
        new.extend_from_slice(suffix);
        Some(new)
    })?;
    ctx.out.int(len as i64);
    Ok(())
}

/// Replaces the value of `key` with what `rewrite` makes of the current one
/// (`None`: leave it), in one transaction; the resulting length.
fn rewrite_value(
    ctx: &mut Ctx<'_>,
    key: &[u8],
    rewrite: impl FnOnce(Option<&[u8]>) -> Option<Vec<u8>>,
) -> Result<usize, CmdError> {
    ctx.transact(|view| {
        let current = view.value(key).map(|v| v.bytes());
        match rewrite(current) {
            None => (None, current.map_or(0, <[u8]>::len)),
            Some(new) => {
                let len = new.len();
                (
                    Some(Mutation::Put {
                        key: Bytes::copy_from_slice(key),
                        value: Bytes::from(new),
                    }),
                    len,
                )
            }
        }
    })
}

pub fn strlen(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let len = ctx.shared.store.get(args.get(1)).map_or(0, |v| v.len());
    ctx.out.int(len as i64);
    Ok(())
}

/// GETRANGE key start end, with Redis's negative-index rules.
pub fn getrange(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let start = parse_int(args.get(2))?;
    let end = parse_int(args.get(3))?;
    let v = ctx.shared.store.get(args.get(1)).unwrap_or_default();
    let len = v.len() as i64;
    if len == 0 || (start < 0 && end < 0 && start > end) {
        ctx.out.bulk(b"");
        return Ok(());
    }
    let norm = |i: i64| if i < 0 { (len + i).max(0) } else { i };
    let (s, e) = (norm(start), norm(end).min(len - 1));
    if s > e || s >= len {
        ctx.out.bulk(b"");
    } else {
        ctx.out.bulk(&v[s as usize..=e as usize]);
    }
    Ok(())
}

/// SETRANGE key offset value: overwrites part of the value, padding with
/// zero bytes; the new length. An empty value changes nothing.
pub fn setrange(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let key = args.get(1);
    let offset = parse_int(args.get(2))?;
    let patch = args.get(3);
    let Ok(offset) = usize::try_from(offset) else {
        return Err(CmdError::msg("ERR offset is out of range"));
    };
    // Checked before anything is allocated: an offset of 2^40 must not try.
    let max = ctx.shared.config.max_value_bytes;
    if !patch.is_empty() && offset as u64 + patch.len() as u64 > max {
        return Err(CmdError::msg(format!(
            "ERR string exceeds maximum allowed size (max-value-size, {max} bytes)"
        )));
    }
    let len = rewrite_value(ctx, key, |current| {
        if patch.is_empty() {
            return None;
        }
        let current = current.unwrap_or(b"");
        let mut new = Vec::with_capacity(current.len().max(offset + patch.len()));
        new.extend_from_slice(current);
        if new.len() < offset + patch.len() {
            new.resize(offset + patch.len(), 0);
        }
        new[offset..offset + patch.len()].copy_from_slice(patch);
        Some(new)
    })?;
    ctx.out.int(len as i64);
    Ok(())
}

/// A float as Redis's INCRBYFLOAT reads one: no surrounding space, no NaN.
fn parse_float(arg: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(arg).ok()?;
    if s.is_empty() || s.starts_with(char::is_whitespace) || s.ends_with(char::is_whitespace) {
        return None;
    }
    s.parse::<f64>().ok().filter(|f| !f.is_nan())
}

/// The same text as an exact decimal, when it is one that fits
/// (`rust_decimal`: 28 significant digits).
fn parse_decimal(arg: &[u8]) -> Option<rust_decimal::Decimal> {
    use rust_decimal::Decimal;
    let s = std::str::from_utf8(arg).ok()?;
    if s.contains(['e', 'E']) {
        Decimal::from_scientific(s).ok()
    } else {
        s.parse::<Decimal>().ok()
    }
}

/// `current + delta` as INCRBYFLOAT stores it. Redis adds in `long double`
/// and prints 17 decimals with the trailing zeros cut, so sums of short
/// decimals come out exact (`0.1` + `0.2` = `0.3`, not a binary double's
/// `0.30000000000000004`): the sum is taken in decimal when both fit, and
/// in `f64`, printed as the shortest text that reads back, otherwise.
fn add_float(current: &[u8], delta: &[u8]) -> Result<String, CmdError> {
    let not_float = || CmdError::msg("ERR value is not a valid float");
    let (a, b) = (
        parse_float(current).ok_or_else(not_float)?,
        parse_float(delta).ok_or_else(not_float)?,
    );
    let sum = a + b;
    if !sum.is_finite() {
        return Err(CmdError::msg("ERR increment would produce NaN or Infinity"));
    }
    let exact = parse_decimal(current)
        .zip(parse_decimal(delta))
        .and_then(|(x, y)| x.checked_add(y))
        .map(|d| d.round_dp(17).normalize());
    Ok(match exact {
        Some(d) if d.is_zero() => "0".to_string(),
        Some(d) => d.to_string(),
        None => sum.to_string(),
    })
}

/// INCRBYFLOAT key increment: the new value (see [`add_float`]).
pub fn incrbyfloat(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let key = args.get(1);
    let delta = args.get(2);
    // Checked before the transaction, as Redis does: a bad increment is
    // refused even when the key holds no number.
    parse_float(delta).ok_or_else(|| CmdError::msg("ERR value is not a valid float"))?;
    let value = ctx.transact(|view| {
        let current = view.value(key).map_or(&b"0"[..], |v| v.bytes());
        match add_float(current, delta) {
            Ok(text) => {
                let text = Bytes::from(text);
                (
                    Some(Mutation::Put {
                        key: Bytes::copy_from_slice(key),
                        value: text.clone(),
                    }),
                    Ok(text),
                )
            }
            Err(e) => (None, Err(e)),
        }
    })?;
    ctx.out.bulk(&value?);
    Ok(())
}
