//! Rewinding a data directory to a fork point: what PostgreSQL's `pg_rewind`
//! does, done by the node itself when it follows a new primary.
//!
//! A node whose WAL went past the point where its history and the new
//! primary's part (an old primary that kept writing, an asynchronous standby
//! that was ahead of the one promoted) cannot stream from the new primary
//! until the records after the fork are gone. A rewind:
//!
//! 1. copies the WAL bytes `[fork, end)` to `<data-dir>/rewound/` (see
//!    [`save_rewound`]), fsynced, so nothing is thrown away unseen;
//! 2. writes the marker `<data-dir>/rewind.pending` holding the fork LSN
//!    (atomically), then, with the engine closed, removes every checkpoint
//!    that ends past the fork, every WAL segment that starts past it, zeroes
//!    the rest of the segment holding the fork (from its end backwards, so a
//!    crash part-way leaves a clean, shorter log) and drops epochs that began
//!    at or after it; then removes the marker ([`truncate_to`]);
//! 3. reopens the engine, whose recovery rebuilds the state from the
//!    checkpoint and the WAL up to the fork.
//!
//! A crash between the marker and its removal is finished by the next
//! [`crate::Engine::open`] ([`finish_pending`]); every step is idempotent.
//!
//! A rewind is possible only while the newest checkpoint ends at or before
//! the fork (its state holds nothing from past it); otherwise the node needs
//! a base backup, and [`crate::Engine::can_rewind_to`] says so.
//!
//! # Rewound file
//!
//! `<data-dir>/rewound/<fork LSN>-<end LSN>.wal` (16 upper-case hex digits
//! each): a 52-byte header, then the WAL bytes exactly as they were, so each
//! record still verifies at its LSN (`fork LSN + offset`). Little-endian:
//!
//! ```text
//! magic "WSHPRWND" (8) | version u32 | records u32 | cluster id u64 |
//! epoch u64 | fork LSN u64 | end LSN u64 | CRC-32 of the preceding 48 bytes u32
//! ```
//!
//! `records` counts the whole records in the bytes; `epoch` is the epoch the
//! node was on when it cut them.

use crate::checkpoint;
use crate::error::EngineError;
use crate::storage::{self, Storage};
use crate::wal::record::{RECORD_HEADER_BYTES, RECORD_PAYLOAD_MAX_BYTES};
use crate::wal::segment::{self, SegmentHeader, SEGMENT_HEADER_BYTES};
use crate::{EpochHistory, Lsn};
use std::path::{Path, PathBuf};

/// The directory rewound WAL is kept in.
pub const REWOUND_DIR: &str = "rewound";
const PENDING: &str = "rewind.pending";
const PENDING_MAGIC: [u8; 8] = *b"WSHPRWPD";
const REWOUND_MAGIC: [u8; 8] = *b"WSHPRWND";
const REWOUND_VERSION: u32 = 1;
/// Bytes of a rewound file's header.
pub const REWOUND_HEADER_BYTES: usize = 52;
const ZERO_CHUNK_BYTES: u64 = 1 << 20;

/// What a rewind cut away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewound {
    /// The LSN the WAL now ends at.
    pub fork_lsn: Lsn,
    /// Where it ended before.
    pub end_lsn: Lsn,
    /// Whole records cut.
    pub records: u64,
    /// Bytes cut.
    pub bytes: u64,
    /// The file they were saved in.
    pub file: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> EngineError + '_ {
    move |e| EngineError::io(path, e)
}

/// Whole records in `wal`, walking the length fields.
pub fn count_records(wal: &[u8]) -> u64 {
    let mut off = 0usize;
    let mut n = 0u64;
    while wal.len() - off >= RECORD_HEADER_BYTES {
        let len = u32::from_le_bytes(wal[off..off + 4].try_into().expect("4 bytes"));
        if len > RECORD_PAYLOAD_MAX_BYTES || wal.len() - off - RECORD_HEADER_BYTES < len as usize {
            break;
        }
        off += RECORD_HEADER_BYTES + len as usize;
        n += 1;
    }
    n
}

/// Saves `wal`, the bytes `[fork_lsn, fork_lsn + wal.len())` about to be cut,
/// under `<data_dir>/rewound/`, durably.
pub fn save_rewound(
    storage: &dyn Storage,
    data_dir: &Path,
    cluster_id: u64,
    epoch: u64,
    fork_lsn: Lsn,
    wal: &[u8],
) -> Result<Rewound, EngineError> {
    let dir = data_dir.join(REWOUND_DIR);
    storage.create_dir_all(&dir).map_err(io(&dir))?;
    let end_lsn = fork_lsn + wal.len() as u64;
    let records = count_records(wal);
    let mut header = Vec::with_capacity(REWOUND_HEADER_BYTES + wal.len());
    header.extend_from_slice(&REWOUND_MAGIC);
    header.extend_from_slice(&REWOUND_VERSION.to_le_bytes());
    header.extend_from_slice(&u32::try_from(records).unwrap_or(u32::MAX).to_le_bytes());
    header.extend_from_slice(&cluster_id.to_le_bytes());
    header.extend_from_slice(&epoch.to_le_bytes());
    header.extend_from_slice(&fork_lsn.to_le_bytes());
    header.extend_from_slice(&end_lsn.to_le_bytes());
    let crc = crc32fast::hash(&header);
    header.extend_from_slice(&crc.to_le_bytes());
    debug_assert_eq!(header.len(), REWOUND_HEADER_BYTES);
    header.extend_from_slice(wal);
    let path = dir.join(format!("{fork_lsn:016X}-{end_lsn:016X}.wal"));
    storage::write_file_atomic(storage, &path, &header).map_err(io(&path))?;
    Ok(Rewound {
        fork_lsn,
        end_lsn,
        records,
        bytes: wal.len() as u64,
        file: path,
    })
}

/// Cuts the (closed) data directory's WAL at `fork_lsn`: writes the marker,
/// then does the work [`finish_pending`] describes.
pub fn truncate_to(
    storage: &dyn Storage,
    data_dir: &Path,
    fork_lsn: Lsn,
) -> Result<(), EngineError> {
    write_marker(storage, data_dir, fork_lsn)?;
    finish_pending(storage, data_dir).map(|_| ())
}

/// Step one of [`truncate_to`]: records durably that the WAL is to be cut
/// at `fork_lsn`. From here on the next open finishes the rewind.
pub fn write_marker(
    storage: &dyn Storage,
    data_dir: &Path,
    fork_lsn: Lsn,
) -> Result<(), EngineError> {
    let mut marker = Vec::with_capacity(20);
    marker.extend_from_slice(&PENDING_MAGIC);
    marker.extend_from_slice(&fork_lsn.to_le_bytes());
    let crc = crc32fast::hash(&marker);
    marker.extend_from_slice(&crc.to_le_bytes());
    let path = data_dir.join(PENDING);
    storage::write_file_atomic(storage, &path, &marker).map_err(io(&path))
}

/// Finishes a rewind whose marker exists (run at every open). Returns the
/// fork LSN if there was one.
pub fn finish_pending(storage: &dyn Storage, data_dir: &Path) -> Result<Option<Lsn>, EngineError> {
    let marker = data_dir.join(PENDING);
    if !storage.exists(&marker) {
        return Ok(None);
    }
    let bytes = storage::read_file(storage, &marker).map_err(io(&marker))?;
    let bad = |reason: &str| EngineError::BadControl {
        file: marker.clone(),
        reason: reason.to_string(),
    };
    if bytes.len() != 20 || bytes[0..8] != PENDING_MAGIC {
        return Err(bad("not a walship rewind marker"));
    }
    if crc32fast::hash(&bytes[..16]) != u32::from_le_bytes(bytes[16..20].try_into().expect("4")) {
        return Err(bad("CRC mismatch"));
    }
    let fork = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));

    // Checkpoints whose state reaches past the fork hold cut writes.
    let ckpt_dir = checkpoint::checkpoint_dir(data_dir);
    if storage.exists(&ckpt_dir) {
        for (_, path) in checkpoint::list(storage, &ckpt_dir)? {
            let file = storage.open(&path).map_err(io(&path))?;
            let mut head = [0u8; 48];
            let ends_past_fork = file
                .read_exact_at(&mut head, 0)
                .map(|()| u64::from_le_bytes(head[40..48].try_into().expect("8")) > fork)
                .unwrap_or(true);
            if ends_past_fork {
                storage.remove(&path).map_err(io(&path))?;
            }
        }
        storage.sync_dir(&ckpt_dir).map_err(io(&ckpt_dir))?;
    }

    // Segments: newest first, so a crash part-way leaves a shorter clean log.
    let wal_dir = data_dir.join("wal");
    let mut starts: Vec<(u64, String)> = storage
        .list(&wal_dir)
        .map_err(io(&wal_dir))?
        .into_iter()
        .filter_map(|name| segment::parse_segment_file_name(&name).map(|lsn| (lsn, name)))
        .collect();
    starts.sort_by_key(|(lsn, _)| std::cmp::Reverse(*lsn));
    for (start, name) in starts {
        let path = wal_dir.join(&name);
        if start > fork {
            storage.remove(&path).map_err(io(&path))?;
            continue;
        }
        let file = storage.open(&path).map_err(io(&path))?;
        let mut head = [0u8; SEGMENT_HEADER_BYTES as usize];
        file.read_exact_at(&mut head, 0).map_err(io(&path))?;
        let header = SegmentHeader::decode(&head).map_err(|_| bad("segment header unreadable"))?;
        if fork >= header.end_lsn() {
            break;
        }
        let from = SEGMENT_HEADER_BYTES + (fork - header.start_lsn);
        let len = file.len().map_err(io(&path))?;
        let mut at = len;
        let zeros = vec![0u8; ZERO_CHUNK_BYTES as usize];
        while at > from {
            let begin = at.saturating_sub(ZERO_CHUNK_BYTES).max(from);
            file.write_all_at(&zeros[..(at - begin) as usize], begin)
                .map_err(io(&path))?;
            at = begin;
        }
        file.sync_data().map_err(io(&path))?;
        break;
    }
    storage.sync_dir(&wal_dir).map_err(io(&wal_dir))?;

    if let Some(mut history) = EpochHistory::load(storage, data_dir)? {
        if history.truncate_at(fork) {
            history.store(storage, data_dir)?;
        }
    }
    storage.remove(&marker).map_err(io(&marker))?;
    storage.sync_dir(data_dir).map_err(io(data_dir))?;
    tracing::info!(fork_lsn = fork, "WAL rewound to the fork point");
    Ok(Some(fork))
}
