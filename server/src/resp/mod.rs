//! RESP request decoding.
//!
//! Clients send commands either as RESP arrays of bulk strings
//! (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`) or as inline text lines (`PING\r\n`), the
//! form redis-benchmark's `PING_INLINE` and telnet users send. [`Parser`] turns
//! the bytes of a connection's read buffer into [`Request`]s without copying
//! bulk arguments: a request is a list of byte ranges into the buffer.
//!
//! Every length a client announces is checked against [`Limits`] before
//! anything is reserved for it, so a hostile `*2147483647` or
//! `$99999999999` costs nothing but an error reply.

mod error;
mod inline;
mod parser;

pub use error::ProtocolError;
pub use parser::{parse_i64, Args, Limits, Parsed, Parser, Request};
