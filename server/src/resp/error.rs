use std::fmt;

/// A malformed request. The connection answers with `-ERR <Display>` and is
/// closed, as Redis does, because the byte stream can no longer be trusted
/// to be in step with the framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolError {
    /// `*` header that is not an integer or exceeds the array limit.
    InvalidMultibulkLength,
    /// `$` header that is not an integer, is negative, or exceeds `proto-max-bulk-len`.
    InvalidBulkLength,
    /// A bulk string's payload not followed by CRLF: its length and its data
    /// disagree. (Redis skips these two bytes unchecked.)
    BulkNotTerminated,
    /// An array element that does not start with `$`; carries the byte found.
    ExpectedDollar(u8),
    /// An inline command line longer than the inline limit (64 KiB).
    TooBigInline,
    /// A `*` header line with no `\r` within the inline limit.
    TooBigMultibulkCount,
    /// A `$` header line with no `\r` within the inline limit.
    TooBigBulkCount,
    /// An inline command with an unterminated quoted argument.
    UnbalancedQuotes,
    /// An unauthenticated client announced an array of more than 10 elements.
    UnauthenticatedMultibulkLength,
    /// An unauthenticated client announced a bulk string of more than 16 KiB.
    UnauthenticatedBulkLength,
    /// The unparsed part of one request grew beyond `client-query-buffer-limit`.
    QueryBufferLimit,
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The texts are Redis 7's, so tools that match on them keep working.
        match self {
            ProtocolError::InvalidMultibulkLength => {
                f.write_str("Protocol error: invalid multibulk length")
            }
            ProtocolError::InvalidBulkLength => f.write_str("Protocol error: invalid bulk length"),
            ProtocolError::BulkNotTerminated => {
                f.write_str("Protocol error: bulk string not followed by CRLF (its length does not match its data)")
            }
            ProtocolError::ExpectedDollar(b) => {
                write!(
                    f,
                    "Protocol error: expected '$', got '{}'",
                    char::from(*b).escape_default()
                )
            }
            ProtocolError::TooBigInline => f.write_str("Protocol error: too big inline request"),
            ProtocolError::TooBigMultibulkCount => {
                f.write_str("Protocol error: too big mbulk count string")
            }
            ProtocolError::TooBigBulkCount => {
                f.write_str("Protocol error: too big bulk count string")
            }
            ProtocolError::UnbalancedQuotes => {
                f.write_str("Protocol error: unbalanced quotes in request")
            }
            ProtocolError::UnauthenticatedMultibulkLength => {
                f.write_str("Protocol error: unauthenticated multibulk length")
            }
            ProtocolError::UnauthenticatedBulkLength => {
                f.write_str("Protocol error: unauthenticated bulk length")
            }
            ProtocolError::QueryBufferLimit => {
                f.write_str("Protocol error: client query buffer limit exceeded")
            }
        }
    }
}

impl std::error::Error for ProtocolError {}
