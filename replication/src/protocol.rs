//! The framed binary replication stream.
//!
//! After the RESP handshake command, a replication connection carries frames
//! in both directions. Every frame is
//!
//! ```text
//! +-----------+-----------+--------+------------------+
//! | len u32LE | crc u32LE | type u8| payload          |
//! +-----------+-----------+--------+------------------+
//!              \______ crc covers type + payload ____/
//! ```
//!
//! - `len` counts the bytes of `type` + `payload` (so it is at least 1) and
//!   never exceeds [`FRAME_MAX_BYTES`].
//! - `crc` is CRC-32 (IEEE, as computed by `crc32fast`) over `type` and
//!   `payload`.
//! - Integers in the payload are little-endian and fixed width; a `bool` is
//!   one byte, 0 or 1; a string is a `u32 LE` byte length followed by that
//!   many bytes of UTF-8, at most [`STRING_MAX_BYTES`].
//! - `WalData::data` and `BackupChunk::data` are "the rest of the payload":
//!   they carry no length of their own.
//!
//! [`decode_frame`] is incremental and defensive: it is fed whatever the
//! socket produced so far, returns `Ok(None)` until a whole frame is there,
//! refuses an oversized length before buffering anything for it, and turns
//! every malformed frame into a distinct [`FrameError`]. A frame error is
//! fatal for the connection: the stream cannot be resynchronised, so the
//! caller reports the error and closes it.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use thiserror::Error;

/// Version of this wire protocol, sent in [`Message::Hello`].
pub const PROTO_VERSION: u32 = 2;

/// Bytes before `type`: `len u32` + `crc u32`.
pub const FRAME_HEADER_BYTES: usize = 8;

/// Largest `len` (type byte + payload) a frame may declare.
///
/// 16 MiB of data plus 4 KiB of headroom for message headers.
pub const FRAME_MAX_BYTES: u32 = 16 * 1024 * 1024 + 4096;

/// Largest `data` a [`Message::WalData`] or [`Message::BackupChunk`] may
/// carry. Senders cut WAL and backup files into chunks of at most this size.
pub const DATA_MAX_BYTES: usize = 16 * 1024 * 1024;

/// Largest string (standby name, refusal or error reason), in bytes.
pub const STRING_MAX_BYTES: u32 = 64 * 1024;

/// Most entries of an epoch history a `Hello` may carry.
pub const HISTORY_MAX_ENTRIES: u32 = 100_000;

/// [`Message::BackupChunk::kind`] of a piece of the checkpoint file.
pub const BACKUP_CHUNK_CHECKPOINT: u8 = 0;
/// [`Message::BackupChunk::kind`] of the primary's epoch history file.
pub const BACKUP_CHUNK_EPOCHS: u8 = 1;

/// The largest fixed part of any message (WalData: type + 3 x u64); the
/// data chunk plus it must fit in a frame.
const DATA_HEADER_MAX_BYTES: usize = 1 + 3 * 8;
const _: () = assert!(DATA_MAX_BYTES + DATA_HEADER_MAX_BYTES <= FRAME_MAX_BYTES as usize);
// The largest string message (Hello, with its epoch history) must fit in a frame as well.
const _: () = assert!(
    1 + 4 + 3 * 8 + 4 + (STRING_MAX_BYTES as usize) + 4 + 16 * (HISTORY_MAX_ENTRIES as usize)
        <= FRAME_MAX_BYTES as usize
);
// `len` is written as a u32.
const _: () = assert!(FRAME_MAX_BYTES as u64 <= u32::MAX as u64);

const TYPE_HELLO: u8 = 1;
const TYPE_WELCOME: u8 = 2;
const TYPE_REFUSE: u8 = 3;
const TYPE_WAL_DATA: u8 = 4;
const TYPE_KEEPALIVE: u8 = 5;
const TYPE_STATUS: u8 = 6;
const TYPE_BACKUP_BEGIN: u8 = 7;
const TYPE_BACKUP_CHUNK: u8 = 8;
const TYPE_BACKUP_END: u8 = 9;
const TYPE_ERROR: u8 = 10;
const TYPE_REWIND: u8 = 11;

/// One message of the replication stream.
///
/// LSNs are byte positions in the logical WAL stream; epochs are
/// PostgreSQL's timelines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Standby → primary, first frame: who I am and how far my WAL goes.
    Hello {
        proto_version: u32,
        cluster_id: u64,
        epoch: u64,
        flushed_lsn: u64,
        /// The standby's name, matched against `synchronous_standby_names`.
        name: String,
        /// The standby's epoch history, `(epoch, start LSN)` oldest first;
        /// empty for a blank standby. The primary finds the fork point from it.
        history: Vec<(u64, u64)>,
    },
    /// Primary → standby: accepted; streaming starts at `start_lsn`, after a
    /// base backup when `base_backup` is true.
    Welcome {
        cluster_id: u64,
        epoch: u64,
        start_lsn: u64,
        primary_end_lsn: u64,
        base_backup: bool,
    },
    /// Primary → standby: not accepted, and why. The primary closes after it.
    Refuse { reason: String },
    /// Primary → standby: WAL bytes starting at `start_lsn`.
    WalData {
        epoch: u64,
        start_lsn: u64,
        primary_flushed_lsn: u64,
        /// The rest of the payload; a zero-copy slice of the received frame.
        data: Bytes,
    },
    /// Primary → standby: still here; `reply_requested` asks for a
    /// [`Message::Status`] right away.
    Keepalive {
        epoch: u64,
        end_lsn: u64,
        flushed_lsn: u64,
        timestamp_ms: u64,
        reply_requested: bool,
    },
    /// Standby → primary: how far the standby has written, fsynced and
    /// applied.
    Status {
        /// The standby's epoch: a primary that sees a newer one was deposed.
        epoch: u64,
        write_lsn: u64,
        flush_lsn: u64,
        apply_lsn: u64,
        timestamp_ms: u64,
    },
    /// Primary → standby: a base backup follows (checkpoint file of
    /// `checkpoint_bytes` and the epoch history; WAL then streams from `redo_lsn`).
    BackupBegin {
        cluster_id: u64,
        epoch: u64,
        redo_lsn: u64,
        end_lsn: u64,
        checkpoint_bytes: u64,
    },
    /// Primary → standby: a piece of the base backup. `kind` is
    /// [`BACKUP_CHUNK_CHECKPOINT`] or [`BACKUP_CHUNK_EPOCHS`].
    BackupChunk {
        kind: u8,
        offset: u64,
        /// The rest of the payload; a zero-copy slice of the received frame.
        data: Bytes,
    },
    /// Primary → standby: the base backup is complete.
    BackupEnd {
        checkpoint_crc: u32,
        wal_start_lsn: u64,
        wal_end_lsn: u64,
    },
    /// Either direction: a fatal error; the sender closes after it.
    Error { reason: String },
    /// Primary → standby: the standby's WAL went past the point where its
    /// history and the primary's (now on `epoch`) part; it must cut its WAL
    /// back to `fork_lsn` and connect again. The primary closes after it.
    Rewind { epoch: u64, fork_lsn: u64 },
}

impl Message {
    /// The type byte of this message on the wire.
    pub fn type_byte(&self) -> u8 {
        match self {
            Message::Hello { .. } => TYPE_HELLO,
            Message::Welcome { .. } => TYPE_WELCOME,
            Message::Refuse { .. } => TYPE_REFUSE,
            Message::WalData { .. } => TYPE_WAL_DATA,
            Message::Keepalive { .. } => TYPE_KEEPALIVE,
            Message::Status { .. } => TYPE_STATUS,
            Message::BackupBegin { .. } => TYPE_BACKUP_BEGIN,
            Message::BackupChunk { .. } => TYPE_BACKUP_CHUNK,
            Message::BackupEnd { .. } => TYPE_BACKUP_END,
            Message::Error { .. } => TYPE_ERROR,
            Message::Rewind { .. } => TYPE_REWIND,
        }
    }

    /// The message's name, as used in logs and [`FrameError`]s.
    pub fn name(&self) -> &'static str {
        type_name(self.type_byte()).expect("every message has a known type")
    }

    /// Appends this message as one frame to `out`.
    ///
    /// Reasons (`Refuse`, `Error`) longer than [`STRING_MAX_BYTES`] are cut
    /// at a character boundary, because they often quote other errors and a
    /// shortened reason is better than none.
    ///
    /// # Panics
    /// On caller bugs, which a decoder would reject: a `Hello` name longer
    /// than [`STRING_MAX_BYTES`], `data` longer than [`DATA_MAX_BYTES`], or a
    /// `BackupChunk` kind that is neither [`BACKUP_CHUNK_CHECKPOINT`] nor
    /// [`BACKUP_CHUNK_EPOCHS`]. Validate names when reading the configuration.
    pub fn encode(&self, out: &mut BytesMut) {
        let frame_start = out.len();
        out.put_u32_le(0); // len, patched below
        out.put_u32_le(0); // crc, patched below
        out.put_u8(self.type_byte());
        match self {
            Message::Hello {
                proto_version,
                cluster_id,
                epoch,
                flushed_lsn,
                name,
                history,
            } => {
                assert!(
                    name.len() <= STRING_MAX_BYTES as usize,
                    "Hello name of {} bytes exceeds {STRING_MAX_BYTES}",
                    name.len()
                );
                assert!(
                    history.len() <= HISTORY_MAX_ENTRIES as usize,
                    "Hello history of {} entries exceeds {HISTORY_MAX_ENTRIES}",
                    history.len()
                );
                out.put_u32_le(*proto_version);
                out.put_u64_le(*cluster_id);
                out.put_u64_le(*epoch);
                out.put_u64_le(*flushed_lsn);
                put_string(out, name);
                out.put_u32_le(history.len() as u32);
                for (e, start) in history {
                    out.put_u64_le(*e);
                    out.put_u64_le(*start);
                }
            }
            Message::Welcome {
                cluster_id,
                epoch,
                start_lsn,
                primary_end_lsn,
                base_backup,
            } => {
                out.put_u64_le(*cluster_id);
                out.put_u64_le(*epoch);
                out.put_u64_le(*start_lsn);
                out.put_u64_le(*primary_end_lsn);
                out.put_u8(u8::from(*base_backup));
            }
            Message::Refuse { reason } | Message::Error { reason } => {
                put_string(
                    out,
                    truncate_at_char_boundary(reason, STRING_MAX_BYTES as usize),
                );
            }
            Message::WalData {
                epoch,
                start_lsn,
                primary_flushed_lsn,
                data,
            } => {
                assert!(
                    data.len() <= DATA_MAX_BYTES,
                    "WalData of {} bytes exceeds {DATA_MAX_BYTES}",
                    data.len()
                );
                out.put_u64_le(*epoch);
                out.put_u64_le(*start_lsn);
                out.put_u64_le(*primary_flushed_lsn);
                out.put_slice(data);
            }
            Message::Keepalive {
                epoch,
                end_lsn,
                flushed_lsn,
                timestamp_ms,
                reply_requested,
            } => {
                out.put_u64_le(*epoch);
                out.put_u64_le(*end_lsn);
                out.put_u64_le(*flushed_lsn);
                out.put_u64_le(*timestamp_ms);
                out.put_u8(u8::from(*reply_requested));
            }
            Message::Status {
                epoch,
                write_lsn,
                flush_lsn,
                apply_lsn,
                timestamp_ms,
            } => {
                out.put_u64_le(*epoch);
                out.put_u64_le(*write_lsn);
                out.put_u64_le(*flush_lsn);
                out.put_u64_le(*apply_lsn);
                out.put_u64_le(*timestamp_ms);
            }
            Message::BackupBegin {
                cluster_id,
                epoch,
                redo_lsn,
                end_lsn,
                checkpoint_bytes,
            } => {
                out.put_u64_le(*cluster_id);
                out.put_u64_le(*epoch);
                out.put_u64_le(*redo_lsn);
                out.put_u64_le(*end_lsn);
                out.put_u64_le(*checkpoint_bytes);
            }
            Message::BackupChunk { kind, offset, data } => {
                assert!(
                    *kind == BACKUP_CHUNK_CHECKPOINT || *kind == BACKUP_CHUNK_EPOCHS,
                    "BackupChunk kind {kind} is neither checkpoint (0) nor epoch history (1)"
                );
                assert!(
                    data.len() <= DATA_MAX_BYTES,
                    "BackupChunk of {} bytes exceeds {DATA_MAX_BYTES}",
                    data.len()
                );
                out.put_u8(*kind);
                out.put_u64_le(*offset);
                out.put_slice(data);
            }
            Message::BackupEnd {
                checkpoint_crc,
                wal_start_lsn,
                wal_end_lsn,
            } => {
                out.put_u32_le(*checkpoint_crc);
                out.put_u64_le(*wal_start_lsn);
                out.put_u64_le(*wal_end_lsn);
            }
            Message::Rewind { epoch, fork_lsn } => {
                out.put_u64_le(*epoch);
                out.put_u64_le(*fork_lsn);
            }
        }
        let body_start = frame_start + FRAME_HEADER_BYTES;
        let body_len = out.len() - body_start;
        // The compile-time checks above bound every message; this catches a
        // message added without updating them.
        assert!(body_len >= 1);
        assert!(body_len <= FRAME_MAX_BYTES as usize);
        let len = u32::try_from(body_len).expect("bounded by FRAME_MAX_BYTES");
        let crc = crc32fast::hash(&out[body_start..]);
        out[frame_start..frame_start + 4].copy_from_slice(&len.to_le_bytes());
        out[frame_start + 4..frame_start + 8].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Why a frame was refused. Every variant is fatal for the connection.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// The length prefix is larger than the protocol allows. Checked before
    /// anything is buffered for the frame, so a hostile peer cannot make us
    /// allocate.
    #[error("replication frame declares {len} bytes, more than the maximum of {max}; the peer is not speaking this protocol or is hostile")]
    Oversized { len: u32, max: u32 },
    /// The length prefix is 0, so there is not even a type byte.
    #[error("replication frame declares length 0; every frame needs at least a type byte")]
    Empty,
    /// The CRC in the header does not match the bytes received.
    #[error("replication frame checksum mismatch: header says {expected:#010x}, bytes hash to {actual:#010x}; the stream is corrupt")]
    CrcMismatch { expected: u32, actual: u32 },
    /// The type byte names no message of this protocol version.
    #[error(
        "unknown replication message type {ty}; expected 1..=11 (protocol version {PROTO_VERSION})"
    )]
    UnknownType { ty: u8 },
    /// A fixed-width field runs past the end of the payload.
    #[error("{message} frame is truncated: field `{field}` needs {needed} bytes but only {available} remain")]
    Truncated {
        message: &'static str,
        field: &'static str,
        needed: usize,
        available: usize,
    },
    /// The payload has bytes after the last field.
    #[error("{message} frame has {extra} unexpected trailing bytes after its last field")]
    TrailingBytes { message: &'static str, extra: usize },
    /// A string's length prefix exceeds [`STRING_MAX_BYTES`].
    #[error("{message} field `{field}` declares a string of {len} bytes, more than the maximum of {max}")]
    StringTooLong {
        message: &'static str,
        field: &'static str,
        len: u32,
        max: u32,
    },
    /// A string's length prefix points past the end of the payload.
    #[error("{message} field `{field}` declares a string of {len} bytes but only {available} bytes of payload remain")]
    StringPastEnd {
        message: &'static str,
        field: &'static str,
        len: u32,
        available: usize,
    },
    /// A string is not valid UTF-8.
    #[error("{message} field `{field}` is not valid UTF-8 (first bad byte at offset {valid_up_to} of the string)")]
    InvalidUtf8 {
        message: &'static str,
        field: &'static str,
        valid_up_to: usize,
    },
    /// A boolean byte is neither 0 nor 1.
    #[error("{message} field `{field}` is a boolean but holds {value}; only 0 and 1 are allowed")]
    InvalidBool {
        message: &'static str,
        field: &'static str,
        value: u8,
    },
    /// A `BackupChunk` kind is neither checkpoint (0) nor WAL (1).
    #[error(
        "BackupChunk kind {value} is unknown; expected 0 (checkpoint file) or 1 (epoch history)"
    )]
    InvalidChunkKind { value: u8 },
    /// An epoch history that is too long or out of order.
    #[error("{message} epoch history is invalid: {reason}")]
    BadHistory {
        message: &'static str,
        reason: String,
    },
}

/// Decodes one frame from the front of `buf`.
///
/// - `Ok(Some(message))`: a whole, valid frame was removed from `buf`.
///   `data` fields are zero-copy slices of the buffer's memory.
/// - `Ok(None)`: `buf` holds only part of a frame; nothing was consumed and
///   nothing was allocated. Read more bytes and call again.
/// - `Err(_)`: the frame is malformed; `buf` is left unchanged. The stream
///   cannot be resynchronised, so close the connection.
///
/// An oversized `len` is refused as soon as the 8-byte header is there,
/// before any byte of the frame body is awaited or buffered. Decoding
/// allocates at most the frame's own strings.
pub fn decode_frame(buf: &mut BytesMut) -> Result<Option<Message>, FrameError> {
    if buf.len() < FRAME_HEADER_BYTES {
        return Ok(None);
    }
    let mut header = &buf[..FRAME_HEADER_BYTES];
    let len = header.get_u32_le();
    let crc_expected = header.get_u32_le();
    if len > FRAME_MAX_BYTES {
        return Err(FrameError::Oversized {
            len,
            max: FRAME_MAX_BYTES,
        });
    }
    if len == 0 {
        return Err(FrameError::Empty);
    }
    let frame_bytes = FRAME_HEADER_BYTES + len as usize;
    if buf.len() < frame_bytes {
        return Ok(None);
    }
    let body = &buf[FRAME_HEADER_BYTES..frame_bytes];
    let crc_actual = crc32fast::hash(body);
    if crc_actual != crc_expected {
        return Err(FrameError::CrcMismatch {
            expected: crc_expected,
            actual: crc_actual,
        });
    }
    let ty = body[0];
    let payload = &body[1..];
    // Parse from the borrowed slice first so that an error leaves `buf`
    // untouched; only then take the frame out and attach the zero-copy tail.
    let (mut message, tail_offset) = parse_payload(ty, payload)?;
    let frame = buf.split_to(frame_bytes).freeze();
    if let Some(offset) = tail_offset {
        let tail = frame.slice(FRAME_HEADER_BYTES + 1 + offset..);
        match &mut message {
            Message::WalData { data, .. } | Message::BackupChunk { data, .. } => *data = tail,
            _ => unreachable!("only WalData and BackupChunk have a data tail"),
        }
    }
    Ok(Some(message))
}

fn type_name(ty: u8) -> Option<&'static str> {
    Some(match ty {
        TYPE_HELLO => "Hello",
        TYPE_WELCOME => "Welcome",
        TYPE_REFUSE => "Refuse",
        TYPE_WAL_DATA => "WalData",
        TYPE_KEEPALIVE => "Keepalive",
        TYPE_STATUS => "Status",
        TYPE_BACKUP_BEGIN => "BackupBegin",
        TYPE_BACKUP_CHUNK => "BackupChunk",
        TYPE_BACKUP_END => "BackupEnd",
        TYPE_ERROR => "Error",
        TYPE_REWIND => "Rewind",
        _ => return None,
    })
}

/// Parses a payload. `data` fields come back empty, with the payload offset
/// where the tail starts; the caller fills them in from the frozen frame.
fn parse_payload(ty: u8, payload: &[u8]) -> Result<(Message, Option<usize>), FrameError> {
    let message = type_name(ty).ok_or(FrameError::UnknownType { ty })?;
    let mut r = Reader {
        message,
        payload,
        pos: 0,
    };
    let mut tail = None;
    let parsed = match ty {
        TYPE_HELLO => Message::Hello {
            proto_version: r.u32("proto_version")?,
            cluster_id: r.u64("cluster_id")?,
            epoch: r.u64("epoch")?,
            flushed_lsn: r.u64("flushed_lsn")?,
            name: r.string("name")?,
            history: r.history("history")?,
        },
        TYPE_WELCOME => Message::Welcome {
            cluster_id: r.u64("cluster_id")?,
            epoch: r.u64("epoch")?,
            start_lsn: r.u64("start_lsn")?,
            primary_end_lsn: r.u64("primary_end_lsn")?,
            base_backup: r.bool("base_backup")?,
        },
        TYPE_REFUSE => Message::Refuse {
            reason: r.string("reason")?,
        },
        TYPE_WAL_DATA => {
            let message = Message::WalData {
                epoch: r.u64("epoch")?,
                start_lsn: r.u64("start_lsn")?,
                primary_flushed_lsn: r.u64("primary_flushed_lsn")?,
                data: Bytes::new(),
            };
            tail = Some(r.rest());
            message
        }
        TYPE_KEEPALIVE => Message::Keepalive {
            epoch: r.u64("epoch")?,
            end_lsn: r.u64("end_lsn")?,
            flushed_lsn: r.u64("flushed_lsn")?,
            timestamp_ms: r.u64("timestamp_ms")?,
            reply_requested: r.bool("reply_requested")?,
        },
        TYPE_STATUS => Message::Status {
            epoch: r.u64("epoch")?,
            write_lsn: r.u64("write_lsn")?,
            flush_lsn: r.u64("flush_lsn")?,
            apply_lsn: r.u64("apply_lsn")?,
            timestamp_ms: r.u64("timestamp_ms")?,
        },
        TYPE_BACKUP_BEGIN => Message::BackupBegin {
            cluster_id: r.u64("cluster_id")?,
            epoch: r.u64("epoch")?,
            redo_lsn: r.u64("redo_lsn")?,
            end_lsn: r.u64("end_lsn")?,
            checkpoint_bytes: r.u64("checkpoint_bytes")?,
        },
        TYPE_BACKUP_CHUNK => {
            let kind = r.u8("kind")?;
            if kind != BACKUP_CHUNK_CHECKPOINT && kind != BACKUP_CHUNK_EPOCHS {
                return Err(FrameError::InvalidChunkKind { value: kind });
            }
            let message = Message::BackupChunk {
                kind,
                offset: r.u64("offset")?,
                data: Bytes::new(),
            };
            tail = Some(r.rest());
            message
        }
        TYPE_BACKUP_END => Message::BackupEnd {
            checkpoint_crc: r.u32("checkpoint_crc")?,
            wal_start_lsn: r.u64("wal_start_lsn")?,
            wal_end_lsn: r.u64("wal_end_lsn")?,
        },
        TYPE_ERROR => Message::Error {
            reason: r.string("reason")?,
        },
        TYPE_REWIND => Message::Rewind {
            epoch: r.u64("epoch")?,
            fork_lsn: r.u64("fork_lsn")?,
        },
        _ => unreachable!("type_name accepted type {ty}"),
    };
    r.finish()?;
    Ok((parsed, tail))
}

/// A bounds-checked cursor over a payload.
struct Reader<'a> {
    message: &'static str,
    payload: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.payload.len() - self.pos
    }

    fn take(&mut self, field: &'static str, n: usize) -> Result<&'a [u8], FrameError> {
        if self.remaining() < n {
            return Err(FrameError::Truncated {
                message: self.message,
                field,
                needed: n,
                available: self.remaining(),
            });
        }
        let bytes = &self.payload[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, FrameError> {
        Ok(self.take(field, 1)?[0])
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, FrameError> {
        let bytes = self.take(field, 4)?;
        Ok(u32::from_le_bytes(bytes.try_into().expect("took 4 bytes")))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, FrameError> {
        let bytes = self.take(field, 8)?;
        Ok(u64::from_le_bytes(bytes.try_into().expect("took 8 bytes")))
    }

    fn bool(&mut self, field: &'static str) -> Result<bool, FrameError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(FrameError::InvalidBool {
                message: self.message,
                field,
                value,
            }),
        }
    }

    fn string(&mut self, field: &'static str) -> Result<String, FrameError> {
        let len = self.u32(field)?;
        if len > STRING_MAX_BYTES {
            return Err(FrameError::StringTooLong {
                message: self.message,
                field,
                len,
                max: STRING_MAX_BYTES,
            });
        }
        if len as usize > self.remaining() {
            return Err(FrameError::StringPastEnd {
                message: self.message,
                field,
                len,
                available: self.remaining(),
            });
        }
        let bytes = self.take(field, len as usize)?;
        // Validate before allocating, so a bad string costs nothing.
        let text = std::str::from_utf8(bytes).map_err(|e| FrameError::InvalidUtf8 {
            message: self.message,
            field,
            valid_up_to: e.valid_up_to(),
        })?;
        Ok(text.to_owned())
    }

    /// An epoch history: a `u32` count, then `(epoch u64, start LSN u64)`
    /// pairs strictly ascending in epoch and not descending in LSN.
    fn history(&mut self, field: &'static str) -> Result<Vec<(u64, u64)>, FrameError> {
        let n = self.u32(field)?;
        if n > HISTORY_MAX_ENTRIES || n as usize * 16 > self.remaining() {
            return Err(FrameError::BadHistory {
                message: self.message,
                reason: format!(
                    "declares {n} entries (at most {HISTORY_MAX_ENTRIES}, with {} bytes left)",
                    self.remaining()
                ),
            });
        }
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let entry = (self.u64(field)?, self.u64(field)?);
            if let Some(last) = out.last() {
                if entry.0 <= last.0 || entry.1 < last.1 {
                    return Err(FrameError::BadHistory {
                        message: self.message,
                        reason: format!(
                            "entry (epoch {}, LSN {}) does not follow (epoch {}, LSN {})",
                            entry.0, entry.1, last.0, last.1
                        ),
                    });
                }
            }
            out.push(entry);
        }
        Ok(out)
    }

    /// Consumes the rest of the payload, returning where it starts.
    fn rest(&mut self) -> usize {
        let start = self.pos;
        self.pos = self.payload.len();
        start
    }

    fn finish(self) -> Result<(), FrameError> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(FrameError::TrailingBytes {
                message: self.message,
                extra,
            }),
        }
    }
}

fn put_string(out: &mut BytesMut, s: &str) {
    assert!(s.len() <= STRING_MAX_BYTES as usize);
    out.put_u32_le(u32::try_from(s.len()).expect("bounded by STRING_MAX_BYTES"));
    out.put_slice(s.as_bytes());
}

fn truncate_at_char_boundary(s: &str, max_bytes: usize) -> &str {
    if s.len() <= max_bytes {
        return s;
    }
    let mut end = max_bytes;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
