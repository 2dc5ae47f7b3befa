//! WAL segment files: fixed-size, preallocated (zero-filled), named by the
//! LSN of their first data byte, each opening with a 64-byte header.
//!
//! The logical WAL is one continuous byte stream; segments are consecutive
//! windows of it. A segment of `segment_size_bytes` holds
//! `segment_size_bytes - SEGMENT_HEADER_BYTES` bytes of the stream, and a
//! record may continue from one segment into the next.
//!
//! Header layout (all integers little-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 0..8 | magic `WSHPWAL\0` |
//! | 8..12 | format version (1) |
//! | 12..16 | header length (64) |
//! | 16..24 | cluster id |
//! | 24..32 | epoch when the segment was opened |
//! | 32..40 | start LSN |
//! | 40..48 | segment size in bytes (header included) |
//! | 48..60 | reserved, zero |
//! | 60..64 | CRC-32 of bytes 0..60 |

use std::path::{Path, PathBuf};

/// Bytes of the segment header.
pub const SEGMENT_HEADER_BYTES: u64 = 64;
/// Magic number opening every segment.
pub const SEGMENT_MAGIC: [u8; 8] = *b"WSHPWAL\0";
/// Segment format version this build writes and reads.
pub const SEGMENT_FORMAT_VERSION: u32 = 1;
/// Smallest segment size accepted (tests use small segments to exercise rollover).
pub const SEGMENT_SIZE_MIN_BYTES: u64 = 4096;
/// Default segment size: 64 MiB.
pub const SEGMENT_SIZE_DEFAULT_BYTES: u64 = 64 << 20;

const _: () = assert!(SEGMENT_SIZE_DEFAULT_BYTES.is_multiple_of(4096));
const _: () = assert!(SEGMENT_HEADER_BYTES < SEGMENT_SIZE_MIN_BYTES);

/// File name suffix of a segment in use.
pub const SEGMENT_SUFFIX: &str = ".wal";
/// File name suffix of a preallocated segment not yet in use.
pub const PREPARED_SUFFIX: &str = ".wal.prep";

/// The decoded header of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Cluster the segment belongs to.
    pub cluster_id: u64,
    /// Epoch current when the segment was opened.
    pub epoch: u64,
    /// LSN of the first data byte.
    pub start_lsn: u64,
    /// Total file size, header included.
    pub segment_size_bytes: u64,
}

/// Why a header is not acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderProblem {
    /// Every byte is zero: the header was never written.
    Blank,
    /// The header's bytes are not a valid header.
    Invalid(&'static str),
}

impl SegmentHeader {
    /// Bytes of stream this segment holds.
    pub fn capacity_bytes(&self) -> u64 {
        self.segment_size_bytes - SEGMENT_HEADER_BYTES
    }

    /// The first LSN past this segment.
    pub fn end_lsn(&self) -> u64 {
        self.start_lsn + self.capacity_bytes()
    }

    /// Encodes the header.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES as usize] {
        let mut b = [0u8; SEGMENT_HEADER_BYTES as usize];
        b[0..8].copy_from_slice(&SEGMENT_MAGIC);
        b[8..12].copy_from_slice(&SEGMENT_FORMAT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&(SEGMENT_HEADER_BYTES as u32).to_le_bytes());
        b[16..24].copy_from_slice(&self.cluster_id.to_le_bytes());
        b[24..32].copy_from_slice(&self.epoch.to_le_bytes());
        b[32..40].copy_from_slice(&self.start_lsn.to_le_bytes());
        b[40..48].copy_from_slice(&self.segment_size_bytes.to_le_bytes());
        let crc = crc32fast::hash(&b[0..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and validates a header.
    pub fn decode(b: &[u8]) -> Result<SegmentHeader, HeaderProblem> {
        if b.len() < SEGMENT_HEADER_BYTES as usize {
            return Err(HeaderProblem::Invalid("file shorter than a segment header"));
        }
        let b = &b[..SEGMENT_HEADER_BYTES as usize];
        if b.iter().all(|&x| x == 0) {
            return Err(HeaderProblem::Blank);
        }
        if b[0..8] != SEGMENT_MAGIC {
            return Err(HeaderProblem::Invalid(
                "bad magic number (not a walship WAL segment)",
            ));
        }
        let crc = u32::from_le_bytes(b[60..64].try_into().expect("4 bytes"));
        if crc32fast::hash(&b[0..60]) != crc {
            return Err(HeaderProblem::Invalid("header CRC mismatch"));
        }
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        if u32_at(8) != SEGMENT_FORMAT_VERSION {
            return Err(HeaderProblem::Invalid("unsupported segment format version"));
        }
        if u64::from(u32_at(12)) != SEGMENT_HEADER_BYTES {
            return Err(HeaderProblem::Invalid("unexpected header length"));
        }
        let h = SegmentHeader {
            cluster_id: u64_at(16),
            epoch: u64_at(24),
            start_lsn: u64_at(32),
            segment_size_bytes: u64_at(40),
        };
        if h.segment_size_bytes < SEGMENT_SIZE_MIN_BYTES {
            return Err(HeaderProblem::Invalid("segment size below the minimum"));
        }
        Ok(h)
    }
}

/// The file name of the segment starting at `start_lsn`.
pub fn segment_file_name(start_lsn: u64) -> String {
    format!("{start_lsn:016X}{SEGMENT_SUFFIX}")
}

/// The path of the segment starting at `start_lsn` in `wal_dir`.
pub fn segment_path(wal_dir: &Path, start_lsn: u64) -> PathBuf {
    wal_dir.join(segment_file_name(start_lsn))
}

/// The path a segment is preallocated under before it is put to use.
pub fn prepared_path(wal_dir: &Path, start_lsn: u64) -> PathBuf {
    wal_dir.join(format!("{start_lsn:016X}{PREPARED_SUFFIX}"))
}

/// The start LSN named by a segment file name, if it is one.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(SEGMENT_SUFFIX)?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_roundtrips_and_detects_damage() {
        let h = SegmentHeader {
            cluster_id: 42,
            epoch: 3,
            start_lsn: 1 << 33,
            segment_size_bytes: 1 << 20,
        };
        let mut b = h.encode();
        assert_eq!(SegmentHeader::decode(&b), Ok(h));
        b[20] ^= 0x10;
        assert_eq!(
            SegmentHeader::decode(&b),
            Err(HeaderProblem::Invalid("header CRC mismatch"))
        );
        assert_eq!(SegmentHeader::decode(&[0u8; 64]), Err(HeaderProblem::Blank));
    }

    #[test]
    fn file_names_sort_by_lsn() {
        assert_eq!(segment_file_name(0x1234), "0000000000001234.wal");
        assert_eq!(
            parse_segment_file_name("0000000000001234.wal"),
            Some(0x1234)
        );
        assert_eq!(parse_segment_file_name("0000000000001234.wal.prep"), None);
        assert!(segment_file_name(9) < segment_file_name(10));
        assert!(segment_file_name(0xF) < segment_file_name(0x10));
    }
}
