//! Reading the log back on open.
//!
//! Recovery validates every segment header, checks that the segments form
//! one unbroken stream, then replays records from the checkpoint's redo LSN.
//! Where the records stop it decides what the stop means:
//!
//! - an all-zero header with nothing valid after it: the clean end of the log;
//! - a torn or garbage tail (bad CRC, impossible header, record cut short)
//!   with nothing valid after it: an interrupted write that was never
//!   acknowledged; the garbage is zeroed (durably) and recovery goes on;
//! - anything invalid with a valid record somewhere after it: corruption in
//!   the middle of the log. Acknowledged writes could be lost, so opening is
//!   refused with the file and offset.
//!
//! A record is valid only at its own LSN (the CRC covers it), so a "valid
//! record after the damage" cannot be a stale leftover.

use super::record::{
    self, Op, Parsed, ParsedSlice, RecordType, RECORD_HEADER_BYTES, RECORD_PAYLOAD_MAX_BYTES,
};
use super::segment::{self, HeaderProblem, SegmentHeader, PREPARED_SUFFIX};
use super::Segment;
use crate::error::EngineError;
use crate::storage::{Storage, StorageFile};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// What recovery found.
pub(crate) struct RecoveredWal {
    pub segments: BTreeMap<u64, Arc<Segment>>,
    /// Where the next record goes.
    pub end_lsn: u64,
    /// Records replayed.
    pub records: u64,
    /// Garbage bytes zeroed at a torn tail.
    pub torn_bytes: u64,
}

struct Mapped {
    seg: Arc<Segment>,
    map: Bytes,
}

/// The stream over mapped segments.
struct Stream {
    parts: Vec<Mapped>,
}

impl Stream {
    fn end(&self) -> u64 {
        self.parts.last().map(|m| m.seg.end_lsn()).unwrap_or(0)
    }

    fn part_index(&self, lsn: u64) -> Option<usize> {
        let i = self.parts.partition_point(|m| m.seg.end_lsn() <= lsn);
        (i < self.parts.len() && self.parts[i].seg.start_lsn() <= lsn).then_some(i)
    }

    /// Bytes `[lsn, lsn+len)`, clipped to the stream's end.
    fn read(&self, lsn: u64, len: usize) -> Bytes {
        let len = len.min(self.end().saturating_sub(lsn) as usize);
        let Some(i) = self.part_index(lsn) else {
            return Bytes::new();
        };
        let m = &self.parts[i];
        let off = m.seg.file_offset(lsn) as usize;
        if lsn + len as u64 <= m.seg.end_lsn() {
            return m.map.slice(off..off + len);
        }
        let mut out = Vec::with_capacity(len);
        let mut at = lsn;
        for m in &self.parts[i..] {
            if out.len() == len {
                break;
            }
            let off = m.seg.file_offset(at) as usize;
            let n = ((m.seg.end_lsn() - at) as usize).min(len - out.len());
            out.extend_from_slice(&m.map[off..off + n]);
            at += n as u64;
        }
        Bytes::from(out)
    }

    /// Parses the record at `lsn`.
    fn parse(&self, lsn: u64) -> Parsed {
        let header = self.read(lsn, RECORD_HEADER_BYTES);
        if header.len() < RECORD_HEADER_BYTES {
            return if header.iter().all(|&b| b == 0) {
                Parsed::End
            } else {
                Parsed::Incomplete
            };
        }
        if header.iter().all(|&b| b == 0) {
            return Parsed::End;
        }
        let payload_len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
        if payload_len > RECORD_PAYLOAD_MAX_BYTES {
            return Parsed::Corrupt("record length over the limit");
        }
        // Cheap checks first: the scan for valid records calls this at many offsets.
        if record::RecordType::from_u8(header[8]).is_none() || header[9..12] != [0, 0, 0] {
            return Parsed::Corrupt("impossible record header");
        }
        if lsn + (RECORD_HEADER_BYTES as u64) + u64::from(payload_len) > self.end() {
            return Parsed::Incomplete;
        }
        let full = self.read(lsn, RECORD_HEADER_BYTES + payload_len as usize);
        record::parse(lsn, &full)
    }

    /// The first LSN after `from` holding a valid record, and the last
    /// non-zero byte seen, scanning to the end of the stream.
    fn scan_for_valid(&self, from: u64) -> (Option<u64>, Option<u64>) {
        let mut last_nonzero = None;
        let Some(first) = self.part_index(from) else {
            return (None, None);
        };
        for m in &self.parts[first..] {
            let begin = from.max(m.seg.start_lsn());
            let off0 = m.seg.file_offset(begin) as usize;
            let data = &m.map[off0..m.seg.file_offset(m.seg.end_lsn()) as usize];
            let mut i = 0;
            while let Some(nz) = first_nonzero(&data[i..]) {
                let pos = i + nz;
                let lsn = begin + pos as u64;
                last_nonzero = Some(lsn);
                // A header's type byte (offset 8) is never zero, so a record
                // can only start 8 bytes before a non-zero byte.
                if let Some(cand) = lsn.checked_sub(8).filter(|&c| c > from) {
                    if matches!(self.parse(cand), Parsed::Record { .. }) {
                        return (Some(cand), last_nonzero);
                    }
                }
                i = pos + 1;
            }
        }
        (None, last_nonzero)
    }
}

/// Records handed from the parsing thread to the applying one at a time.
const REPLAY_BATCH_RECORDS: usize = 256;
/// Batches parsed ahead of the applier.
const REPLAY_BATCHES_AHEAD: usize = 16;

/// Replays every valid record from `from`, returning the LSN of the first
/// position that is not one (or the stream's end) and the records applied.
///
/// Two threads share the work: a `wal-replay` thread finds the records and
/// checks their CRCs, handing over borrowed payloads in batches; the calling
/// thread decodes them into keys and values of their own and applies them in
/// order. Every allocation (and so every later free, when a key is
/// overwritten) stays on the calling thread: with the allocations on the
/// parsing thread, the frees of overwritten values crossed malloc arenas and
/// cost more than they saved. Which records are applied, and in which order,
/// is exactly what a single loop would do; what the first invalid position
/// means is left to the caller.
fn replay(
    stream: &Stream,
    from: u64,
    apply: &mut dyn FnMut(u64, Op<'_>),
) -> Result<(u64, u64), EngineError> {
    /// A record's start LSN, type and payload.
    enum Found<'a> {
        Mapped(u64, RecordType, &'a [u8]),
        /// A record across a segment boundary, copied out.
        Copied(u64, RecordType, Bytes),
    }
    type Batch<'a> = Vec<Found<'a>>;
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(REPLAY_BATCHES_AHEAD);
        // Emptied batches go back, so their buffers are freed where allocated.
        let (back_tx, back_rx) = std::sync::mpsc::channel::<Batch>();
        let parser = std::thread::Builder::new()
            .name("wal-replay".into())
            .spawn_scoped(scope, move || -> u64 {
                let new_batch = || {
                    back_rx
                        .try_recv()
                        .unwrap_or_else(|_| Batch::with_capacity(REPLAY_BATCH_RECORDS))
                };
                let mut lsn = from;
                let mut batch = new_batch();
                let mut part = 0usize;
                while lsn < stream.end() {
                    // Fast path: the record lies in the current mapped segment.
                    while stream.parts[part].seg.end_lsn() <= lsn {
                        part += 1;
                    }
                    let m = &stream.parts[part];
                    let off = m.seg.file_offset(lsn) as usize;
                    let end_off = m.seg.file_offset(m.seg.end_lsn()) as usize;
                    let (found, len) = match record::parse_slice(lsn, &m.map[off..end_off]) {
                        ParsedSlice::Record {
                            rtype,
                            payload,
                            len,
                        } => (Found::Mapped(lsn, rtype, payload), len),
                        // Across a segment boundary, or not a record: the
                        // general parser decides.
                        _ => match stream.parse(lsn) {
                            Parsed::Record {
                                rtype,
                                payload,
                                len,
                            } => (Found::Copied(lsn, rtype, payload), len),
                            _ => break,
                        },
                    };
                    batch.push(found);
                    lsn += len as u64;
                    if batch.len() == REPLAY_BATCH_RECORDS {
                        let full = std::mem::replace(&mut batch, new_batch());
                        if tx.send(full).is_err() {
                            // The applier stopped; its error is reported.
                            return lsn;
                        }
                    }
                }
                if !batch.is_empty() {
                    let _ = tx.send(batch);
                }
                lsn
            })
            .expect("spawn the WAL replay thread");
        let mut records = 0u64;
        let mut applied = Ok(());
        'batches: for mut batch in rx.iter() {
            for found in batch.drain(..) {
                let (lsn, rtype, payload) = match &found {
                    Found::Mapped(lsn, rtype, payload) => (*lsn, *rtype, *payload),
                    Found::Copied(lsn, rtype, payload) => (*lsn, *rtype, &payload[..]),
                };
                let end = lsn + (RECORD_HEADER_BYTES + payload.len()) as u64;
                // Keys and values are handed over as slices of the mapping
                // (no allocation); the memtable copies them into its own.
                if let Err(e) = record::visit(rtype, payload, |op| apply(end, op)) {
                    applied = Err(EngineError::BadRecord {
                        file: stream.parts[stream.part_index(lsn).expect("in stream")]
                            .seg
                            .path
                            .clone(),
                        lsn,
                        reason: e.to_string(),
                    });
                    break 'batches;
                }
                records += 1;
            }
            let _ = back_tx.send(batch);
        }
        drop(rx);
        let parsed = parser.join().expect("the WAL replay thread panicked");
        applied?;
        Ok((parsed, records))
    })
}

/// Index of the first non-zero byte. The tail of the last segment is
/// megabytes of zeros that recovery must check, so whole 64-byte blocks are
/// tested at once (the OR of a block vectorises); a byte-at-a-time scan of
/// them was 6-10 % of replaying a 64 MiB WAL.
fn first_nonzero(data: &[u8]) -> Option<usize> {
    let mut blocks = data.chunks_exact(64);
    let mut skipped = 0usize;
    for block in &mut blocks {
        if block.iter().fold(0u8, |a, &b| a | b) != 0 {
            break;
        }
        skipped += 64;
    }
    data[skipped..]
        .iter()
        .position(|&b| b != 0)
        .map(|p| skipped + p)
}

/// Opens every segment in `wal_dir`, validates the stream, and replays
/// records from `from_lsn`, calling `apply(end_lsn, op)` for each change
/// (a batch's operations share their record's end LSN).
pub(crate) fn recover(
    storage: &dyn Storage,
    wal_dir: &Path,
    cluster_id: u64,
    from_lsn: u64,
    apply: &mut dyn FnMut(u64, Op<'_>),
) -> Result<RecoveredWal, EngineError> {
    let names = storage
        .list(wal_dir)
        .map_err(|e| EngineError::io(wal_dir, e))?;
    let mut found: BTreeMap<u64, std::path::PathBuf> = BTreeMap::new();
    for name in names {
        let path = wal_dir.join(&name);
        if name.ends_with(PREPARED_SUFFIX) || name.ends_with(".tmp") {
            // Preallocated, never used: safe to drop.
            storage
                .remove(&path)
                .map_err(|e| EngineError::io(&path, e))?;
            continue;
        }
        match segment::parse_segment_file_name(&name) {
            Some(lsn) => {
                found.insert(lsn, path);
            }
            None => {
                tracing::warn!(file = %path.display(), "ignoring unexpected file in the WAL directory")
            }
        }
    }

    let mut segments: BTreeMap<u64, Arc<Segment>> = BTreeMap::new();
    let count = found.len();
    for (i, (name_lsn, path)) in found.into_iter().enumerate() {
        let file = storage.open(&path).map_err(|e| EngineError::io(&path, e))?;
        let len = file.len().map_err(|e| EngineError::io(&path, e))?;
        let mut hbuf = [0u8; segment::SEGMENT_HEADER_BYTES as usize];
        let bad = |reason: String| EngineError::BadSegment {
            file: path.clone(),
            reason,
        };
        if len < segment::SEGMENT_HEADER_BYTES {
            return Err(bad(format!(
                "file is {len} bytes, shorter than a segment header"
            )));
        }
        file.read_exact_at(&mut hbuf, 0)
            .map_err(|e| EngineError::io(&path, e))?;
        let header = match SegmentHeader::decode(&hbuf) {
            Ok(h) => h,
            Err(HeaderProblem::Blank) if i + 1 == count => {
                // A header that never reached the disk means nothing after it
                // did either (the header is made durable before any record is
                // written). Records behind a blank header are damage, and
                // may be acknowledged writes: refuse rather than remove them.
                if let Some(offset) =
                    first_nonzero_byte(&*file, len).map_err(|e| EngineError::io(&path, e))?
                {
                    return Err(bad(format!(
                        "header is all zeros but the segment holds data (a non-zero byte at file \
                         offset {offset}): acknowledged writes could be lost. Restore the file from \
                         a standby or backup"
                    )));
                }
                // Activated but its header never reached the disk: it holds nothing.
                tracing::warn!(file = %path.display(), "removing a WAL segment whose header was never made durable");
                storage
                    .remove(&path)
                    .map_err(|e| EngineError::io(&path, e))?;
                storage
                    .sync_dir(wal_dir)
                    .map_err(|e| EngineError::io(wal_dir, e))?;
                continue;
            }
            Err(HeaderProblem::Blank) => {
                let data = first_nonzero_byte(&*file, len)
                    .map_err(|e| EngineError::io(&path, e))?
                    .map_or(String::new(), |o| {
                        format!(" (first data at file offset {o})")
                    });
                return Err(bad(format!(
                    "header is all zeros but later segments exist{data}"
                )));
            }
            Err(HeaderProblem::Invalid(r)) => return Err(bad(r.to_string())),
        };
        if header.start_lsn != name_lsn {
            return Err(bad(format!(
                "header says start LSN {} but the file name says {name_lsn}",
                header.start_lsn
            )));
        }
        if header.cluster_id != cluster_id {
            return Err(bad(format!(
                "segment belongs to cluster {:016x}, this data directory to cluster {cluster_id:016x}",
                header.cluster_id
            )));
        }
        if len != header.segment_size_bytes {
            return Err(bad(format!(
                "file is {len} bytes, header says {}",
                header.segment_size_bytes
            )));
        }
        if let Some(prev) = segments.values().next_back() {
            if prev.end_lsn() != header.start_lsn && header.start_lsn <= from_lsn {
                // A gap wholly below the checkpoint's redo point: the older
                // segments are leftovers nothing needs (no recovery reads
                // them, and no standby can be streamed across the gap).
                for old in std::mem::take(&mut segments).into_values() {
                    tracing::warn!(file = %old.path.display(), redo_lsn = from_lsn, "removing an old WAL segment cut off from the log by a gap below the checkpoint's redo point");
                    storage
                        .remove(&old.path)
                        .map_err(|e| EngineError::io(&old.path, e))?;
                }
                storage
                    .sync_dir(wal_dir)
                    .map_err(|e| EngineError::io(wal_dir, e))?;
            } else if prev.end_lsn() != header.start_lsn {
                let expected = segment::segment_path(wal_dir, prev.end_lsn());
                return Err(EngineError::MissingSegment {
                    expected,
                    lsn: prev.end_lsn(),
                });
            }
        }
        segments.insert(
            header.start_lsn,
            Arc::new(Segment::new(header, path, file, true)),
        );
    }

    if segments.is_empty() {
        return Ok(RecoveredWal {
            segments,
            end_lsn: from_lsn,
            records: 0,
            torn_bytes: 0,
        });
    }
    let first = *segments.keys().next().expect("non-empty");
    if from_lsn < first {
        return Err(EngineError::WalStartsTooLate {
            oldest: segments[&first].path.clone(),
            oldest_lsn: first,
            needed_lsn: from_lsn,
        });
    }
    let mut parts = Vec::with_capacity(segments.len());
    for seg in segments.values() {
        let map = seg.file.map().map_err(|e| EngineError::io(&seg.path, e))?;
        parts.push(Mapped {
            seg: seg.clone(),
            map,
        });
    }
    let stream = Stream { parts };
    if from_lsn > stream.end() {
        return Err(EngineError::MissingSegment {
            expected: segment::segment_path(wal_dir, stream.end()),
            lsn: stream.end(),
        });
    }

    let (lsn, records) = replay(&stream, from_lsn, apply)?;
    let mut torn_bytes = 0u64;
    if lsn < stream.end() {
        let reason = match stream.parse(lsn) {
            Parsed::Record { .. } => unreachable!("replay stops only where no record is"),
            Parsed::End => None,
            Parsed::Incomplete => Some("record cut short"),
            Parsed::Corrupt(r) => Some(r),
        };
        let (next_valid, last_nonzero) = stream.scan_for_valid(lsn);
        let seg = &stream.parts[stream.part_index(lsn).expect("in stream")].seg;
        if let Some(next_valid_lsn) = next_valid {
            return Err(EngineError::MidLogCorruption {
                file: seg.path.clone(),
                offset: seg.file_offset(lsn),
                lsn,
                reason: reason.unwrap_or("zeroed bytes"),
                next_valid_lsn,
            });
        }
        if let Some(last) = last_nonzero {
            torn_bytes = last + 1 - lsn;
            tracing::warn!(
                file = %seg.path.display(), offset = seg.file_offset(lsn), lsn, bytes = torn_bytes,
                reason = reason.unwrap_or("garbage after the end"),
                "torn WAL tail: nothing valid follows, so it is taken for an interrupted write that was never acknowledged, and zeroed"
            );
            zero_range(&stream, lsn, last + 1)?;
        }
    }
    Ok(RecoveredWal {
        segments,
        end_lsn: lsn,
        records,
        torn_bytes,
    })
}

/// Durably zeroes stream bytes `[from, to)`.
fn zero_range(stream: &Stream, from: u64, to: u64) -> Result<(), EngineError> {
    let mut at = from;
    while at < to {
        let seg = &stream.parts[stream.part_index(at).expect("in stream")].seg;
        let n = (seg.end_lsn().min(to) - at) as usize;
        let zeros = vec![0u8; n];
        seg.file
            .write_all_at(&zeros, seg.file_offset(at))
            .map_err(|e| EngineError::io(&seg.path, e))?;
        seg.file
            .sync_data()
            .map_err(|e| EngineError::io(&seg.path, e))?;
        at += n as u64;
    }
    Ok(())
}

/// The file offset of the first non-zero byte of `file` (of length `len`), if any.
fn first_nonzero_byte(file: &dyn StorageFile, len: u64) -> std::io::Result<Option<u64>> {
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    while offset < len {
        let n = usize::try_from((len - offset).min(buf.len() as u64)).expect("fits in usize");
        file.read_exact_at(&mut buf[..n], offset)?;
        if let Some(i) = buf[..n].iter().position(|&b| b != 0) {
            return Ok(Some(offset + i as u64));
        }
        offset += n as u64;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::first_nonzero;

    #[test]
    fn first_nonzero_finds_every_position() {
        for len in [0usize, 1, 63, 64, 65, 200] {
            assert_eq!(first_nonzero(&vec![0u8; len]), None);
            for at in 0..len {
                let mut v = vec![0u8; len];
                v[at] = 7;
                if at + 1 < len {
                    v[len - 1] = 1;
                }
                assert_eq!(first_nonzero(&v), Some(at), "len {len} at {at}");
            }
        }
    }
}
