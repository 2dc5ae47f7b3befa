//! Framed message I/O over a TCP half, shared by the WAL sender and receiver.

use crate::protocol::{decode_frame, FrameError, Message};
use bytes::BytesMut;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Why a replication session ended.
#[derive(Debug, thiserror::Error)]
pub enum ReplError {
    /// The socket failed.
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    /// A malformed or hostile frame; the stream was closed and nothing applied.
    #[error("bad replication frame: {0}")]
    Frame(#[from] FrameError),
    /// The peer broke the protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The primary refused this standby (cluster, epoch or divergence).
    #[error("refused by the primary: {0}")]
    Refused(String),
    /// The peer reported an error and closed.
    #[error("peer error: {0}")]
    Peer(String),
    /// The engine refused the WAL or failed.
    #[error("storage: {0}")]
    Storage(String),
    /// Nothing arrived in time.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// The peer closed the connection.
    #[error("connection closed by peer")]
    Closed,
}

/// Reads the next message; `Ok(None)` at a clean end of stream.
pub async fn read_message<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
) -> Result<Option<Message>, ReplError> {
    loop {
        if let Some(m) = decode_frame(buf)? {
            return Ok(Some(m));
        }
        // decode_frame refuses oversized lengths before we buffer their bodies,
        // so the buffer never grows past one maximal frame.
        buf.reserve(64 * 1024);
        if rd.read_buf(buf).await? == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                // The peer closed (or was killed) part-way through sending
                // a frame: a closed connection, not a protocol violation.
                Err(ReplError::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the peer closed the connection in the middle of a frame",
                )))
            };
        }
    }
}

/// Reads the next message within `timeout`, treating end of stream as an error.
pub async fn expect_message<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    timeout: Duration,
    what: &'static str,
) -> Result<Message, ReplError> {
    match tokio::time::timeout(timeout, read_message(rd, buf)).await {
        Err(_) => Err(ReplError::Timeout(what)),
        Ok(Ok(Some(m))) => Ok(m),
        Ok(Ok(None)) => Err(ReplError::Closed),
        Ok(Err(e)) => Err(e),
    }
}

/// Encodes and sends one message.
pub async fn write_message<W: AsyncWrite + Unpin>(
    wr: &mut W,
    m: &Message,
) -> Result<(), ReplError> {
    let mut out = BytesMut::new();
    m.encode(&mut out);
    wr.write_all(&out).await?;
    Ok(())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
