//! A small RESP2/RESP3 client over a raw `TcpStream`.
//!
//! The `redis` crate hides wire details (it folds error texts into error
//! kinds, and would never send a malformed frame). Tests that check exact
//! error texts, RESP3 types, pipelining, inline commands or hostile input use
//! this instead.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

/// How long a raw read or write may block before the test fails.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// Replies larger than this are a bug in the server (or the test), not data.
const REPLY_BYTES_MAX: usize = 64 * 1024 * 1024;

/// One reply, RESP2 or RESP3.
#[derive(Clone, PartialEq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Integer(i64),
    /// `$` bulk string; `None` is the RESP2 null bulk `$-1`.
    Bulk(Option<Vec<u8>>),
    /// `*` array; `None` is the RESP2 null array `*-1`.
    Array(Option<Vec<Reply>>),
    /// RESP3 `_`.
    Null,
    Map(Vec<(Reply, Reply)>),
    Set(Vec<Reply>),
    Push(Vec<Reply>),
    Double(String),
    Boolean(bool),
    BigNumber(String),
    Verbatim(Vec<u8>),
}

impl Reply {
    /// The text of a bulk, simple or verbatim string; panics otherwise.
    pub fn text(&self) -> String {
        match self {
            Reply::Simple(s) => s.clone(),
            Reply::Bulk(Some(b)) | Reply::Verbatim(b) => String::from_utf8_lossy(b).into_owned(),
            other => panic!("expected a string reply, got {other:?}"),
        }
    }

    /// The elements of a (non-null) array, set or push; panics otherwise.
    pub fn items(&self) -> &[Reply] {
        match self {
            Reply::Array(Some(items)) | Reply::Set(items) | Reply::Push(items) => items,
            other => panic!("expected an array reply, got {other:?}"),
        }
    }

    /// For a RESP3 map: the value under the string key `key`.
    pub fn map_get(&self, key: &str) -> Option<&Reply> {
        match self {
            Reply::Map(pairs) => pairs
                .iter()
                .find(|(k, _)| {
                    matches!(k, Reply::Simple(_) | Reply::Bulk(Some(_))) && k.text() == key
                })
                .map(|(_, v)| v),
            other => panic!("expected a map reply, got {other:?}"),
        }
    }

    /// Whether this is an error reply.
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Simple(s) => write!(f, "+{s}"),
            Reply::Error(s) => write!(f, "-{s}"),
            Reply::Integer(i) => write!(f, ":{i}"),
            Reply::Bulk(Some(b)) => write!(f, "${:?}", String::from_utf8_lossy(b)),
            Reply::Bulk(None) => write!(f, "$nil"),
            Reply::Array(Some(items)) => f.debug_list().entries(items).finish(),
            Reply::Array(None) => write!(f, "*nil"),
            Reply::Null => write!(f, "_"),
            Reply::Map(pairs) => f
                .debug_map()
                .entries(pairs.iter().map(|(k, v)| (k, v)))
                .finish(),
            Reply::Set(items) => write!(f, "~{items:?}"),
            Reply::Push(items) => write!(f, ">{items:?}"),
            Reply::Double(d) => write!(f, ",{d}"),
            Reply::Boolean(b) => write!(f, "#{b}"),
            Reply::BigNumber(n) => write!(f, "({n}"),
            Reply::Verbatim(b) => write!(f, "={:?}", String::from_utf8_lossy(b)),
        }
    }
}

/// Encodes a command as a RESP array of bulk strings.
pub fn encode<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        let arg = arg.as_ref();
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A raw connection to a server.
pub struct RawConn {
    reader: BufReader<TcpStream>,
}

impl RawConn {
    /// Connects to `127.0.0.1:port` with [`IO_TIMEOUT`] on reads and writes.
    pub fn connect(port: u16) -> io::Result<RawConn> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(RawConn {
            reader: BufReader::new(stream),
        })
    }

    /// Connects to `addr` (any host, e.g. a node inside a network namespace)
    /// within `connect_timeout`, with `io_timeout` on reads and writes.
    pub fn connect_addr(
        addr: std::net::SocketAddr,
        connect_timeout: Duration,
        io_timeout: Duration,
    ) -> io::Result<RawConn> {
        let stream = TcpStream::connect_timeout(&addr, connect_timeout)?;
        stream.set_read_timeout(Some(io_timeout))?;
        stream.set_write_timeout(Some(io_timeout))?;
        stream.set_nodelay(true)?;
        Ok(RawConn {
            reader: BufReader::new(stream),
        })
    }

    /// Sends one command and reads its reply; I/O errors (a closed
    /// connection, a timeout) are returned, not panicked on.
    pub fn try_command<A: AsRef<[u8]>>(&mut self, args: &[A]) -> io::Result<Reply> {
        self.send(&encode(args))?;
        self.read_reply()
    }

    /// The underlying stream (for timeouts, shutdown, cloning).
    pub fn stream(&self) -> &TcpStream {
        self.reader.get_ref()
    }

    /// Writes `bytes` as they are.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        let stream = self.reader.get_mut();
        stream.write_all(bytes)?;
        stream.flush()
    }

    /// Sends one command and reads its reply; panics on I/O failure.
    pub fn command<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Reply {
        let description = describe(args);
        self.send(&encode(args))
            .unwrap_or_else(|e| panic!("sending {description}: {e}"));
        self.read_reply()
            .unwrap_or_else(|e| panic!("reading the reply to {description}: {e}"))
    }

    /// Half-closes the write side, as a client that is done sending.
    pub fn shutdown_write(&self) -> io::Result<()> {
        self.stream().shutdown(Shutdown::Write)
    }

    /// Reads one reply.
    pub fn read_reply(&mut self) -> io::Result<Reply> {
        let line = self.read_line()?;
        let (kind, rest) = line
            .split_first()
            .ok_or_else(|| invalid("empty reply line".into()))?;
        let text = || String::from_utf8_lossy(rest).into_owned();
        Ok(match kind {
            b'+' => Reply::Simple(text()),
            b'-' => Reply::Error(text()),
            b':' => Reply::Integer(parse_int(rest)?),
            b'$' => match parse_int(rest)? {
                -1 => Reply::Bulk(None),
                len => Reply::Bulk(Some(self.read_blob(len)?)),
            },
            b'=' => {
                let len = parse_int(rest)?;
                let blob = self.read_blob(len)?;
                // "txt:" / "mkd:" prefix is part of the wire format, not the text.
                Reply::Verbatim(blob.get(4..).unwrap_or_default().to_vec())
            }
            b'*' => match parse_int(rest)? {
                -1 => Reply::Array(None),
                len => Reply::Array(Some(self.read_items(len)?)),
            },
            b'~' => Reply::Set(self.read_items(parse_int(rest)?)?),
            b'>' => Reply::Push(self.read_items(parse_int(rest)?)?),
            b'%' => {
                let len = parse_int(rest)?;
                let items = self.read_items(
                    len.checked_mul(2)
                        .ok_or_else(|| invalid("map too long".into()))?,
                )?;
                let mut items = items.into_iter();
                let mut pairs = Vec::with_capacity(items.len() / 2);
                while let (Some(key), Some(value)) = (items.next(), items.next()) {
                    pairs.push((key, value));
                }
                Reply::Map(pairs)
            }
            b'_' => Reply::Null,
            b',' => Reply::Double(text()),
            b'#' => match rest {
                b"t" => Reply::Boolean(true),
                b"f" => Reply::Boolean(false),
                _ => return Err(invalid(format!("bad boolean {:?}", text()))),
            },
            b'(' => Reply::BigNumber(text()),
            _ => {
                return Err(invalid(format!(
                    "unknown reply type in line {:?}",
                    String::from_utf8_lossy(&line)
                )))
            }
        })
    }

    /// Reads until the server closes the connection; returns what it sent
    /// meanwhile. A reset counts as closed. Fails if the connection is still
    /// open after [`IO_TIMEOUT`].
    pub fn read_until_closed(&mut self) -> io::Result<Vec<u8>> {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => Ok(rest),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(rest),
            Err(e) => Err(e),
        }
    }

    fn read_line(&mut self) -> io::Result<Vec<u8>> {
        let mut line = Vec::new();
        let read = (&mut self.reader)
            .take(REPLY_BYTES_MAX as u64)
            .read_until(b'\n', &mut line)?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "server closed the connection",
            ));
        }
        if !line.ends_with(b"\r\n") {
            return Err(invalid(format!(
                "reply line not terminated by CRLF: {:?}",
                String::from_utf8_lossy(&line)
            )));
        }
        line.truncate(line.len() - 2);
        Ok(line)
    }

    fn read_blob(&mut self, len: i64) -> io::Result<Vec<u8>> {
        let len = usize::try_from(len)
            .ok()
            .filter(|&len| len <= REPLY_BYTES_MAX)
            .ok_or_else(|| invalid(format!("bad blob length {len}")))?;
        let mut blob = vec![0; len + 2];
        self.reader.read_exact(&mut blob)?;
        if !blob.ends_with(b"\r\n") {
            return Err(invalid("blob not terminated by CRLF".into()));
        }
        blob.truncate(len);
        Ok(blob)
    }

    fn read_items(&mut self, len: i64) -> io::Result<Vec<Reply>> {
        let len = usize::try_from(len)
            .ok()
            .filter(|&len| len <= REPLY_BYTES_MAX)
            .ok_or_else(|| invalid(format!("bad aggregate length {len}")))?;
        (0..len).map(|_| self.read_reply()).collect()
    }
}

fn parse_int(bytes: &[u8]) -> io::Result<i64> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            invalid(format!(
                "not an integer: {:?}",
                String::from_utf8_lossy(bytes)
            ))
        })
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

fn describe<A: AsRef<[u8]>>(args: &[A]) -> String {
    let words: Vec<_> = args
        .iter()
        .map(|a| String::from_utf8_lossy(a.as_ref()).into_owned())
        .collect();
    format!("{words:?}")
}
