//! The write-ahead log: one continuous byte stream addressed by LSN, stored
//! in fixed-size segment files.
//!
//! - [`record`]: how one record is framed (length, CRC, type) and what each type carries.
//! - [`segment`]: segment files, their header and names.
//! - [`writer`]: the appender (assigns LSNs, preallocates segments) and the
//!   group-commit flusher thread (one write and one `fdatasync` per batch).
//! - [`recovery`]: scanning the log on open: torn tails are cut, corruption
//!   in the middle refuses to open.

pub mod record;
pub mod recovery;
pub mod segment;
pub mod writer;

use crate::storage::StorageFile;
use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use segment::{SegmentHeader, SEGMENT_HEADER_BYTES};
use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// One segment file in use.
pub(crate) struct Segment {
    pub header: SegmentHeader,
    pub path: PathBuf,
    pub file: Arc<dyn StorageFile>,
    /// Whether the directory entry of this segment is known durable.
    pub dir_synced: AtomicBool,
    /// Read-only map, taken once the segment is full (sealed).
    sealed_map: Mutex<Option<Bytes>>,
}

impl Segment {
    pub fn new(
        header: SegmentHeader,
        path: PathBuf,
        file: Arc<dyn StorageFile>,
        dir_synced: bool,
    ) -> Self {
        Segment {
            header,
            path,
            file,
            dir_synced: AtomicBool::new(dir_synced),
            sealed_map: Mutex::new(None),
        }
    }

    pub fn start_lsn(&self) -> u64 {
        self.header.start_lsn
    }

    pub fn end_lsn(&self) -> u64 {
        self.header.end_lsn()
    }

    /// File offset of `lsn`, which must lie in this segment.
    pub fn file_offset(&self, lsn: u64) -> u64 {
        assert!(
            lsn >= self.start_lsn() && lsn <= self.end_lsn(),
            "LSN {lsn} outside segment"
        );
        SEGMENT_HEADER_BYTES + (lsn - self.start_lsn())
    }

    /// The whole segment mapped read-only; cached. Only for sealed segments.
    pub fn map_sealed(&self) -> io::Result<Bytes> {
        let mut cached = self.sealed_map.lock();
        if let Some(m) = cached.as_ref() {
            return Ok(m.clone());
        }
        let m = self.file.map()?;
        *cached = Some(m.clone());
        Ok(m)
    }

    pub fn dir_synced(&self) -> bool {
        self.dir_synced.load(Ordering::Acquire)
    }
}

/// The segments in use, by start LSN.
#[derive(Default)]
pub(crate) struct Segments {
    map: RwLock<BTreeMap<u64, Arc<Segment>>>,
}

impl Segments {
    pub fn from_map(map: BTreeMap<u64, Arc<Segment>>) -> Self {
        Segments {
            map: RwLock::new(map),
        }
    }

    /// The segment holding `lsn` (a segment's end LSN belongs to the next one).
    pub fn find(&self, lsn: u64) -> Option<Arc<Segment>> {
        let map = self.map.read();
        let (_, seg) = map.range(..=lsn).next_back()?;
        (lsn < seg.end_lsn()).then(|| seg.clone())
    }

    pub fn insert(&self, seg: Arc<Segment>) {
        self.map.write().insert(seg.start_lsn(), seg);
    }

    pub fn first_lsn(&self) -> Option<u64> {
        self.map.read().keys().next().copied()
    }

    /// End of the allocated stream (end of the last segment).
    pub fn allocated_end(&self) -> Option<u64> {
        self.map.read().values().next_back().map(|s| s.end_lsn())
    }

    pub fn count(&self) -> usize {
        self.map.read().len()
    }

    /// Removes and returns every segment that ends at or below `lsn`.
    pub fn remove_below(&self, lsn: u64) -> Vec<Arc<Segment>> {
        let mut map = self.map.write();
        let doomed: Vec<u64> = map
            .values()
            .filter(|s| s.end_lsn() <= lsn)
            .map(|s| s.start_lsn())
            .collect();
        doomed.into_iter().filter_map(|k| map.remove(&k)).collect()
    }

    /// Reads stream bytes `[lsn, lsn + len)`. Zero copy within one sealed segment.
    pub fn read(&self, lsn: u64, len: usize, sealed_below: u64) -> io::Result<Bytes> {
        let first = self.find(lsn).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("WAL at LSN {lsn} is not present"),
            )
        })?;
        if lsn + len as u64 <= first.end_lsn() && first.end_lsn() <= sealed_below {
            let map = first.map_sealed()?;
            let off = first.file_offset(lsn) as usize;
            if map.len() >= off + len {
                return Ok(map.slice(off..off + len));
            }
        }
        let mut out = vec![0u8; len];
        let mut pos = 0usize;
        while pos < len {
            let at = lsn + pos as u64;
            let seg = self.find(at).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("WAL at LSN {at} is not present"),
                )
            })?;
            let n = usize::try_from((seg.end_lsn() - at).min((len - pos) as u64)).expect("fits");
            seg.file
                .read_exact_at(&mut out[pos..pos + n], seg.file_offset(at))?;
            pos += n;
        }
        Ok(Bytes::from(out))
    }
}
