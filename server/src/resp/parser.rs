//! The incremental RESP request parser.

use super::{inline, ProtocolError};

/// Bounds on what one request may announce. Checked before any reservation.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest `$<len>` accepted (`proto-max-bulk-len`).
    pub max_bulk_bytes: u64,
    /// Largest `*<len>` accepted.
    pub max_multibulk_len: u64,
    /// Longest inline command line, and longest `*`/`$` header line.
    pub max_inline_bytes: usize,
}

impl Limits {
    /// Redis 7 caps arrays at 1M elements per request in practice; so do we.
    pub const DEFAULT_MAX_MULTIBULK_LEN: u64 = 1024 * 1024;
    /// Redis's `PROTO_INLINE_MAX_SIZE`.
    pub const DEFAULT_MAX_INLINE_BYTES: usize = 64 * 1024;
    /// Largest array an unauthenticated client may send (Redis's rule).
    pub const UNAUTHENTICATED_MAX_MULTIBULK_LEN: u64 = 10;
    /// Largest bulk an unauthenticated client may send (Redis's rule).
    pub const UNAUTHENTICATED_MAX_BULK_BYTES: u64 = 16 * 1024;

    pub fn new(max_bulk_bytes: u64) -> Limits {
        Limits {
            max_bulk_bytes,
            max_multibulk_len: Self::DEFAULT_MAX_MULTIBULK_LEN,
            max_inline_bytes: Self::DEFAULT_MAX_INLINE_BYTES,
        }
    }
}

/// Result of one [`Parser::parse`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A whole request is in the buffer; `consumed` bytes belong to it. The
    /// arguments are in the [`Request`] until the next call.
    Complete { consumed: usize },
    /// Bytes that carry no command (an empty inline line, `*0`, `*-1`):
    /// drop them and parse again.
    Empty { consumed: usize },
    /// Need more bytes. The parser remembers how far it got, so feeding it the
    /// same buffer with more bytes appended resumes instead of rescanning.
    Incomplete,
}

/// The arguments of one request: byte ranges into the frame (RESP arrays) or
/// into the request's own scratch space (inline commands, which unescape).
#[derive(Debug, Default)]
pub struct Request {
    ranges: Vec<(usize, usize)>,
    scratch: Vec<u8>,
    inline: bool,
}

impl Request {
    pub fn new() -> Request {
        Request::default()
    }

    fn clear(&mut self) {
        self.ranges.clear();
        self.scratch.clear();
        self.inline = false;
        // Don't let one giant request pin memory for the connection's lifetime.
        if self.ranges.capacity() > 4096 {
            self.ranges.shrink_to(64);
        }
        if self.scratch.capacity() > 64 * 1024 {
            self.scratch.shrink_to(1024);
        }
    }

    /// The arguments, given the buffer that was passed to [`Parser::parse`].
    pub fn args<'a>(&'a self, frame: &'a [u8]) -> Args<'a> {
        Args {
            data: if self.inline { &self.scratch } else { frame },
            ranges: &self.ranges,
        }
    }
}

/// A borrowed view of a request's arguments; `args.get(0)` is the command name.
#[derive(Debug, Clone, Copy)]
pub struct Args<'a> {
    data: &'a [u8],
    ranges: &'a [(usize, usize)],
}

impl<'a> Args<'a> {
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The `i`th argument. Panics when out of range: callers check arity first.
    pub fn get(&self, i: usize) -> &'a [u8] {
        let (start, end) = self.ranges[i];
        &self.data[start..end]
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = &'a [u8]> + 'a {
        let data = self.data;
        self.ranges.iter().map(move |&(s, e)| &data[s..e])
    }

    /// Builds owned arguments for tests and for callers outside a connection.
    pub fn from_owned(data: &'a [u8], ranges: &'a [(usize, usize)]) -> Args<'a> {
        Args { data, ranges }
    }
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// Between requests.
    Idle,
    /// Inside a RESP array: `remaining` elements still to read, the next one
    /// starting at byte `pos` of the frame.
    Multibulk { remaining: u64, pos: usize },
}

/// Incremental request parser; one per connection.
#[derive(Debug)]
pub struct Parser {
    limits: Limits,
    state: State,
}

/// Parses a Redis-style decimal integer: optional `-`, no `+`, no leading zeros.
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    if digits.is_empty() || digits.len() > 19 || (digits[0] == b'0' && (digits.len() > 1 || neg)) {
        return None;
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        let d = i64::from(d - b'0');
        v = if neg {
            v.checked_mul(10)?.checked_sub(d)?
        } else {
            v.checked_mul(10)?.checked_add(d)?
        };
    }
    Some(v)
}

/// Finds `needle` in `buf[from..]`, looking at most `window` bytes.
fn find_within(buf: &[u8], from: usize, window: usize, needle: u8) -> Option<usize> {
    let end = buf.len().min(from.saturating_add(window));
    buf[from..end]
        .iter()
        .position(|&b| b == needle)
        .map(|i| from + i)
}

impl Parser {
    pub fn new(limits: Limits) -> Parser {
        Parser {
            limits,
            state: State::Idle,
        }
    }

    pub fn set_max_bulk_bytes(&mut self, max_bulk_bytes: u64) {
        self.limits.max_bulk_bytes = max_bulk_bytes;
    }

    /// True while a request has been started but not finished.
    pub fn in_progress(&self) -> bool {
        matches!(self.state, State::Multibulk { .. })
    }

    /// Parses the request at the start of `buf`.
    ///
    /// `buf` must start where the previous complete request ended; between
    /// `Incomplete` results the caller may only append to it. After an error
    /// the connection must be closed: the parser's state is unspecified.
    pub fn parse(
        &mut self,
        buf: &[u8],
        req: &mut Request,
        authenticated: bool,
    ) -> Result<Parsed, ProtocolError> {
        let (mut remaining, mut pos) = match self.state {
            State::Multibulk { remaining, pos } => (remaining, pos),
            State::Idle => {
                req.clear();
                let Some(&first) = buf.first() else {
                    return Ok(Parsed::Incomplete);
                };
                if first != b'*' {
                    return self.parse_inline(buf, req);
                }
                let Some(cr) = find_within(buf, 1, self.limits.max_inline_bytes, b'\r') else {
                    if buf.len() > self.limits.max_inline_bytes {
                        return Err(ProtocolError::TooBigMultibulkCount);
                    }
                    return Ok(Parsed::Incomplete);
                };
                if cr + 1 >= buf.len() {
                    return Ok(Parsed::Incomplete);
                }
                let n = parse_i64(&buf[1..cr]).ok_or(ProtocolError::InvalidMultibulkLength)?;
                if n > 0 && n as u64 > self.limits.max_multibulk_len {
                    return Err(ProtocolError::InvalidMultibulkLength);
                }
                if !authenticated && n > Limits::UNAUTHENTICATED_MAX_MULTIBULK_LEN as i64 {
                    return Err(ProtocolError::UnauthenticatedMultibulkLength);
                }
                if n <= 0 {
                    // `*0`, `*-1` (and any `*-N`) carry no command; Redis skips them silently.
                    return Ok(Parsed::Empty { consumed: cr + 2 });
                }
                // Reserve for what is plausible, not for what was announced.
                req.ranges.reserve((n as usize).min(1024));
                (n as u64, cr + 2)
            }
        };

        while remaining > 0 {
            self.state = State::Multibulk { remaining, pos };
            let Some(&first) = buf.get(pos) else {
                return Ok(Parsed::Incomplete);
            };
            if first != b'$' {
                return Err(ProtocolError::ExpectedDollar(first));
            }
            let Some(cr) = find_within(buf, pos + 1, self.limits.max_inline_bytes, b'\r') else {
                if buf.len() - pos > self.limits.max_inline_bytes {
                    return Err(ProtocolError::TooBigBulkCount);
                }
                return Ok(Parsed::Incomplete);
            };
            let len = parse_i64(&buf[pos + 1..cr]).ok_or(ProtocolError::InvalidBulkLength)?;
            if len < 0 || len as u64 > self.limits.max_bulk_bytes {
                return Err(ProtocolError::InvalidBulkLength);
            }
            if !authenticated && len as u64 > Limits::UNAUTHENTICATED_MAX_BULK_BYTES {
                return Err(ProtocolError::UnauthenticatedBulkLength);
            }
            let start = cr + 2;
            let end = start + len as usize;
            // The element is complete once its payload and trailing CRLF arrived.
            // Redis skips the two bytes after the payload unchecked, so a
            // length that disagrees with the data runs a command with a cut
            // argument and parses the rest as another command; here such a
            // request is refused whole, before anything runs.
            if buf.len() < end + 2 {
                return Ok(Parsed::Incomplete);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(ProtocolError::BulkNotTerminated);
            }
            req.ranges.push((start, end));
            pos = end + 2;
            remaining -= 1;
        }
        self.state = State::Idle;
        Ok(Parsed::Complete { consumed: pos })
    }

    fn parse_inline(&mut self, buf: &[u8], req: &mut Request) -> Result<Parsed, ProtocolError> {
        let Some(nl) = find_within(buf, 0, self.limits.max_inline_bytes, b'\n') else {
            if buf.len() > self.limits.max_inline_bytes {
                return Err(ProtocolError::TooBigInline);
            }
            return Ok(Parsed::Incomplete);
        };
        let mut line = &buf[..nl];
        if let Some(stripped) = line.strip_suffix(b"\r") {
            line = stripped;
        }
        inline::split_args(line, &mut req.scratch, &mut req.ranges)?;
        req.inline = true;
        if req.ranges.is_empty() {
            return Ok(Parsed::Empty { consumed: nl + 1 });
        }
        Ok(Parsed::Complete { consumed: nl + 1 })
    }
}

#[cfg(test)]
#[path = "parser_test.rs"]
mod tests;
