//! WAL record framing and the payloads of each record type.
//!
//! Every record is a 12-byte header followed by its payload:
//!
//! | bytes | field | meaning |
//! |---|---|---|
//! | 0..4 | `payload_len` u32 LE | bytes of payload after the header |
//! | 4..8 | `crc` u32 LE | CRC-32 (IEEE, crc32fast) of the record's start LSN (u64 LE), then header bytes 8..12, then the payload |
//! | 8 | `type` u8 | [`RecordType`] |
//! | 9..12 | reserved | zero |
//!
//! Folding the LSN into the CRC means a record is valid only at the position
//! it was written at: stale bytes from an older life of a file never pass as
//! current records. An all-zero header marks the end of the log.

use bytes::{BufMut, Bytes};

/// Bytes of a record header.
pub const RECORD_HEADER_BYTES: usize = 12;
/// Largest payload a record may carry (1 GiB): larger lengths are treated as corrupt.
pub const RECORD_PAYLOAD_MAX_BYTES: u32 = 1 << 30;

/// The type byte of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordType {
    /// One key set to one value.
    Put = 1,
    /// One key removed.
    Delete = 2,
    /// Several puts and deletes applied atomically (MSET, DEL k1 k2 ...).
    Batch = 3,
    /// A new epoch (timeline) starts at this record's LSN.
    EpochChange = 4,
    /// Every key removed (FLUSHALL).
    Clear = 5,
}

impl RecordType {
    /// Decodes a type byte.
    pub fn from_u8(b: u8) -> Option<RecordType> {
        Some(match b {
            1 => RecordType::Put,
            2 => RecordType::Delete,
            3 => RecordType::Batch,
            4 => RecordType::EpochChange,
            5 => RecordType::Clear,
            _ => return None,
        })
    }
}

/// One operation inside a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOp {
    /// Set a key.
    Put {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
    },
    /// Remove a key.
    Delete {
        /// The key.
        key: Bytes,
    },
}

/// A change to the key-value state: what a WAL record carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mutation {
    /// Set one key.
    Put {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
    },
    /// Remove one key.
    Delete {
        /// The key.
        key: Bytes,
    },
    /// Several operations, atomically.
    Batch(Vec<BatchOp>),
    /// Remove every key.
    Clear,
    /// Start a new epoch. Carries the new epoch number.
    EpochChange {
        /// The epoch that starts at this record.
        epoch: u64,
    },
}

impl Mutation {
    /// The record type this mutation is logged as.
    pub fn record_type(&self) -> RecordType {
        match self {
            Mutation::Put { .. } => RecordType::Put,
            Mutation::Delete { .. } => RecordType::Delete,
            Mutation::Batch(_) => RecordType::Batch,
            Mutation::Clear => RecordType::Clear,
            Mutation::EpochChange { .. } => RecordType::EpochChange,
        }
    }

    /// Bytes of the encoded payload.
    pub fn payload_len(&self) -> usize {
        match self {
            Mutation::Put { key, value } => 4 + key.len() + value.len(),
            Mutation::Delete { key } => key.len(),
            Mutation::Batch(ops) => {
                4 + ops
                    .iter()
                    .map(|op| match op {
                        BatchOp::Put { key, value } => 1 + 4 + key.len() + 4 + value.len(),
                        BatchOp::Delete { key } => 1 + 4 + key.len(),
                    })
                    .sum::<usize>()
            }
            Mutation::Clear => 0,
            Mutation::EpochChange { .. } => 8,
        }
    }

    fn encode_payload(&self, out: &mut Vec<u8>) {
        match self {
            Mutation::Put { key, value } => {
                out.put_u32_le(key.len() as u32);
                out.put_slice(key);
                out.put_slice(value);
            }
            Mutation::Delete { key } => out.put_slice(key),
            Mutation::Batch(ops) => {
                out.put_u32_le(ops.len() as u32);
                for op in ops {
                    match op {
                        BatchOp::Put { key, value } => {
                            out.put_u8(1);
                            out.put_u32_le(key.len() as u32);
                            out.put_slice(key);
                            out.put_u32_le(value.len() as u32);
                            out.put_slice(value);
                        }
                        BatchOp::Delete { key } => {
                            out.put_u8(2);
                            out.put_u32_le(key.len() as u32);
                            out.put_slice(key);
                        }
                    }
                }
            }
            Mutation::Clear => {}
            Mutation::EpochChange { epoch } => out.put_u64_le(*epoch),
        }
    }

    /// Appends the framed record for this mutation at `lsn` to `out`.
    /// Returns the encoded length. The caller has checked `payload_len()`
    /// against [`RECORD_PAYLOAD_MAX_BYTES`].
    pub fn encode(&self, lsn: u64, out: &mut Vec<u8>) -> usize {
        let payload_len = self.payload_len();
        assert!(
            payload_len <= RECORD_PAYLOAD_MAX_BYTES as usize,
            "record payload over the limit"
        );
        let start = out.len();
        out.put_u32_le(payload_len as u32);
        out.put_u32_le(0); // CRC, filled below
        out.put_u8(self.record_type() as u8);
        out.put_slice(&[0, 0, 0]);
        self.encode_payload(out);
        let end = out.len();
        assert_eq!(
            end - start,
            RECORD_HEADER_BYTES + payload_len,
            "encoded length matches payload_len"
        );
        let crc = record_crc(
            lsn,
            &out[start + 8..start + RECORD_HEADER_BYTES],
            &out[start + RECORD_HEADER_BYTES..end],
        );
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
        end - start
    }

    /// Decodes a payload of the given type. `payload` must be the exact payload
    /// of a record whose CRC was verified; malformed contents are still
    /// reported, never trusted. Keys and values are slices of `payload`.
    pub fn decode(rtype: RecordType, payload: &Bytes) -> Result<Mutation, DecodeError> {
        let bytes = |s: &[u8]| payload.slice_ref(s);
        let mut ops = Vec::new();
        let mut single = None;
        visit(rtype, payload, |op| {
            if rtype == RecordType::Batch {
                ops.push(match op {
                    Op::Put { key, value } => BatchOp::Put {
                        key: bytes(key),
                        value: bytes(value),
                    },
                    Op::Delete { key } => BatchOp::Delete { key: bytes(key) },
                    Op::Clear | Op::EpochChange { .. } => {
                        unreachable!("batches hold puts and deletes")
                    }
                });
            } else {
                single = Some(match op {
                    Op::Put { key, value } => Mutation::Put {
                        key: bytes(key),
                        value: bytes(value),
                    },
                    Op::Delete { key } => Mutation::Delete { key: bytes(key) },
                    Op::Clear => Mutation::Clear,
                    Op::EpochChange { epoch } => Mutation::EpochChange { epoch },
                });
            }
        })?;
        Ok(single.unwrap_or(Mutation::Batch(ops)))
    }
}

/// One change a record makes, borrowed from its payload ([`visit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op<'a> {
    /// Set a key.
    Put {
        /// The key.
        key: &'a [u8],
        /// The value.
        value: &'a [u8],
    },
    /// Remove a key.
    Delete {
        /// The key.
        key: &'a [u8],
    },
    /// Remove every key.
    Clear,
    /// A new epoch begins.
    EpochChange {
        /// The epoch.
        epoch: u64,
    },
}

/// Parses a payload of the given type and hands each change to `f`, in
/// order, as slices of `payload`: what recovery applies without allocating
/// a [`Mutation`]. `payload` must be the exact payload of a record whose CRC
/// was verified; malformed contents are still reported, never trusted. A
/// batch reports an error found after some of its operations were handed
/// over (the caller then refuses the whole log).
pub fn visit<'a>(
    rtype: RecordType,
    payload: &'a [u8],
    mut f: impl FnMut(Op<'a>),
) -> Result<(), DecodeError> {
    let mut p = payload;
    match rtype {
        RecordType::Put => {
            let klen = take_u32(&mut p)? as usize;
            let key = take_bytes(&mut p, klen)?;
            f(Op::Put { key, value: p });
        }
        RecordType::Delete => f(Op::Delete { key: p }),
        RecordType::Batch => {
            let n = take_u32(&mut p)? as usize;
            // Each op needs at least 5 bytes: bound the work by the payload.
            if n > p.len() / 5 {
                return Err(DecodeError("batch count larger than its payload"));
            }
            for _ in 0..n {
                let Some((&kind, rest)) = p.split_first() else {
                    return Err(DecodeError("batch truncated"));
                };
                p = rest;
                let klen = take_u32(&mut p)? as usize;
                let key = take_bytes(&mut p, klen)?;
                match kind {
                    1 => {
                        let vlen = take_u32(&mut p)? as usize;
                        let value = take_bytes(&mut p, vlen)?;
                        f(Op::Put { key, value });
                    }
                    2 => f(Op::Delete { key }),
                    _ => return Err(DecodeError("unknown batch operation")),
                }
            }
            if !p.is_empty() {
                return Err(DecodeError("trailing bytes after batch"));
            }
        }
        RecordType::Clear => {
            if !p.is_empty() {
                return Err(DecodeError("clear record with a payload"));
            }
            f(Op::Clear);
        }
        RecordType::EpochChange => {
            let Ok(epoch) = <[u8; 8]>::try_from(p) else {
                return Err(DecodeError("epoch record of wrong size"));
            };
            f(Op::EpochChange {
                epoch: u64::from_le_bytes(epoch),
            });
        }
    }
    Ok(())
}

/// A payload that passed its CRC but does not parse: a writer bug or a forged record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed record payload: {0}")]
pub struct DecodeError(pub &'static str);

fn take_u32(p: &mut &[u8]) -> Result<u32, DecodeError> {
    let Some((n, rest)) = p.split_first_chunk::<4>() else {
        return Err(DecodeError("truncated length field"));
    };
    *p = rest;
    Ok(u32::from_le_bytes(*n))
}

fn take_bytes<'a>(p: &mut &'a [u8], n: usize) -> Result<&'a [u8], DecodeError> {
    if p.len() < n {
        return Err(DecodeError("length field past end of payload"));
    }
    let (head, rest) = p.split_at(n);
    *p = rest;
    Ok(head)
}

/// CRC of a record at `lsn`: the LSN, header bytes 8..12, and the payload.
pub fn record_crc(lsn: u64, header_tail: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&lsn.to_le_bytes());
    h.update(header_tail);
    h.update(payload);
    h.finalize()
}

/// What is found at an LSN when reading the log.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A valid record: its type, payload, and total length (header included).
    Record {
        /// The record type.
        rtype: RecordType,
        /// The payload bytes.
        payload: Bytes,
        /// Header plus payload.
        len: usize,
    },
    /// All-zero header: the end of the log.
    End,
    /// Fewer bytes than the header or the declared payload: the record is incomplete.
    Incomplete,
    /// Header or CRC invalid.
    Corrupt(&'static str),
}

/// Parses the record at the start of `buf`, which begins at `lsn`.
pub fn parse(lsn: u64, buf: &Bytes) -> Parsed {
    match parse_slice(lsn, buf) {
        ParsedSlice::Record {
            rtype,
            payload,
            len,
        } => Parsed::Record {
            rtype,
            payload: buf.slice_ref(payload),
            len,
        },
        ParsedSlice::End => Parsed::End,
        ParsedSlice::Incomplete => Parsed::Incomplete,
        ParsedSlice::Corrupt(r) => Parsed::Corrupt(r),
    }
}

/// [`Parsed`] with the payload borrowed.
#[derive(Debug, PartialEq, Eq)]
pub enum ParsedSlice<'a> {
    /// A valid record: its type, payload, and total length (header included).
    Record {
        /// The record type.
        rtype: RecordType,
        /// The payload bytes.
        payload: &'a [u8],
        /// Header plus payload.
        len: usize,
    },
    /// All-zero header: the end of the log.
    End,
    /// Fewer bytes than the header or the declared payload: the record is incomplete.
    Incomplete,
    /// Header or CRC invalid.
    Corrupt(&'static str),
}

/// A record header's fields: type, payload length, CRC.
struct Header {
    rtype: RecordType,
    payload_len: u32,
    crc: u32,
}

/// Checks a whole header: `Ok(None)` for the all-zero end-of-log header.
fn check_header(header: &[u8; RECORD_HEADER_BYTES]) -> Result<Option<Header>, &'static str> {
    if header.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    let payload_len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    let Some(rtype) = RecordType::from_u8(header[8]) else {
        return Err("unknown record type");
    };
    if header[9..12] != [0, 0, 0] {
        return Err("reserved header bytes are not zero");
    }
    if payload_len > RECORD_PAYLOAD_MAX_BYTES {
        return Err("record length over the limit");
    }
    Ok(Some(Header {
        rtype,
        payload_len,
        crc,
    }))
}

/// [`parse`] over borrowed bytes.
pub fn parse_slice(lsn: u64, buf: &[u8]) -> ParsedSlice<'_> {
    let Some(header) = buf.first_chunk::<RECORD_HEADER_BYTES>() else {
        return ParsedSlice::Incomplete;
    };
    let Header {
        rtype,
        payload_len,
        crc,
    } = match check_header(header) {
        Ok(Some(h)) => h,
        Ok(None) => return ParsedSlice::End,
        Err(why) => return ParsedSlice::Corrupt(why),
    };
    let len = RECORD_HEADER_BYTES + payload_len as usize;
    if buf.len() < len {
        return ParsedSlice::Incomplete;
    }
    let payload = &buf[RECORD_HEADER_BYTES..len];
    if record_crc(lsn, &header[8..12], payload) != crc {
        return ParsedSlice::Corrupt("CRC mismatch");
    }
    ParsedSlice::Record {
        rtype,
        payload,
        len,
    }
}

/// Checks WAL bytes record by record as they pass in chunks that may cut
/// a record anywhere (a WAL sender checking what it read from the segment
/// files before it ships it): header fields and CRC of every record, and no
/// end-of-log header, since the bytes are known to be written. Holds one
/// header and a running CRC, however large the records.
pub struct StreamVerifier {
    /// LSN of the next byte expected.
    lsn: u64,
    /// Where the record being checked begins.
    record_lsn: u64,
    header: [u8; RECORD_HEADER_BYTES],
    header_len: usize,
    /// Payload bytes of the current record still to come (once its header is whole).
    remaining: u64,
    crc: crc32fast::Hasher,
    expected_crc: u32,
}

/// A record a [`StreamVerifier`] refused: where it begins, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedRecord {
    /// The LSN the damaged record begins at.
    pub lsn: u64,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl StreamVerifier {
    /// A verifier for a stream continuing at `lsn`, which must be where a
    /// record begins.
    pub fn new(lsn: u64) -> StreamVerifier {
        StreamVerifier {
            lsn,
            record_lsn: lsn,
            header: [0; RECORD_HEADER_BYTES],
            header_len: 0,
            remaining: 0,
            crc: crc32fast::Hasher::new(),
            expected_crc: 0,
        }
    }

    /// The LSN the next bytes fed must begin at.
    pub fn lsn(&self) -> u64 {
        self.lsn
    }

    /// Checks that the bytes fed so far end where a record ends. For a
    /// point the WAL writer published (it publishes whole batches, so such
    /// points always fall between records): a record still open there
    /// claims a length that runs past what was written.
    pub fn check_boundary(&self) -> Result<(), DamagedRecord> {
        if self.header_len == 0 {
            Ok(())
        } else {
            Err(DamagedRecord {
                lsn: self.record_lsn,
                reason: "record runs past the end of the written log",
            })
        }
    }

    /// Checks `bytes`, which continue the stream at [`Self::lsn`]. After an
    /// error the verifier is of no further use.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), DamagedRecord> {
        let damaged = |lsn, reason| DamagedRecord { lsn, reason };
        loop {
            if self.header_len < RECORD_HEADER_BYTES {
                let n = (RECORD_HEADER_BYTES - self.header_len).min(bytes.len());
                self.header[self.header_len..self.header_len + n].copy_from_slice(&bytes[..n]);
                self.header_len += n;
                self.lsn += n as u64;
                bytes = &bytes[n..];
                if self.header_len < RECORD_HEADER_BYTES {
                    return Ok(());
                }
                let h = match check_header(&self.header) {
                    Ok(Some(h)) => h,
                    Ok(None) => {
                        return Err(damaged(
                            self.record_lsn,
                            "zero bytes where a record was written",
                        ))
                    }
                    Err(why) => return Err(damaged(self.record_lsn, why)),
                };
                self.crc = crc32fast::Hasher::new();
                self.crc.update(&self.record_lsn.to_le_bytes());
                self.crc.update(&self.header[8..]);
                self.expected_crc = h.crc;
                self.remaining = u64::from(h.payload_len);
            }
            let n = usize::try_from(self.remaining)
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            self.crc.update(&bytes[..n]);
            self.remaining -= n as u64;
            self.lsn += n as u64;
            bytes = &bytes[n..];
            if self.remaining > 0 {
                return Ok(());
            }
            let crc = std::mem::replace(&mut self.crc, crc32fast::Hasher::new()).finalize();
            if crc != self.expected_crc {
                return Err(damaged(self.record_lsn, "CRC mismatch"));
            }
            self.record_lsn = self.lsn;
            self.header_len = 0;
            if bytes.is_empty() {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn roundtrip(m: Mutation, lsn: u64) {
        let mut buf = Vec::new();
        let n = m.encode(lsn, &mut buf);
        assert_eq!(n, buf.len());
        let bytes = Bytes::from(buf);
        match parse(lsn, &bytes) {
            Parsed::Record {
                rtype,
                payload,
                len,
            } => {
                assert_eq!(len, n);
                assert_eq!(Mutation::decode(rtype, &payload).unwrap(), m);
            }
            other => panic!("expected a record, got {other:?}"),
        }
        // The same bytes at another LSN are not a valid record.
        assert!(matches!(parse(lsn + 1, &bytes), Parsed::Corrupt(_)));
    }

    #[test]
    fn every_record_type_roundtrips() {
        roundtrip(
            Mutation::Put {
                key: "k".into(),
                value: "v".into(),
            },
            0,
        );
        roundtrip(Mutation::Delete { key: "k".into() }, 77);
        roundtrip(
            Mutation::Batch(vec![
                BatchOp::Put {
                    key: "a".into(),
                    value: "1".into(),
                },
                BatchOp::Delete { key: "b".into() },
            ]),
            1 << 40,
        );
        roundtrip(Mutation::Clear, 5);
        roundtrip(Mutation::EpochChange { epoch: 9 }, 12);
    }

    #[test]
    fn zero_header_is_end_and_flipped_bit_is_corrupt() {
        assert_eq!(parse(0, &Bytes::from(vec![0u8; 64])), Parsed::End);
        let mut buf = Vec::new();
        Mutation::Put {
            key: "k".into(),
            value: "value".into(),
        }
        .encode(100, &mut buf);
        let last = buf.len() - 1;
        buf[last] ^= 1;
        assert_eq!(
            parse(100, &Bytes::from(buf)),
            Parsed::Corrupt("CRC mismatch")
        );
    }

    /// Records of `sizes` (value lengths) encoded from `lsn`; also the LSN
    /// each record begins at.
    fn encoded_log(lsn: u64, sizes: &[usize]) -> (Vec<u8>, Vec<u64>) {
        let (mut buf, mut starts) = (Vec::new(), Vec::new());
        for (i, &n) in sizes.iter().enumerate() {
            starts.push(lsn + buf.len() as u64);
            let m = if n == 0 {
                Mutation::Delete {
                    key: Bytes::from(format!("k{i}")),
                }
            } else {
                Mutation::Put {
                    key: Bytes::from(format!("k{i}")),
                    value: Bytes::from(vec![i as u8; n]),
                }
            };
            m.encode(lsn + buf.len() as u64, &mut buf);
        }
        (buf, starts)
    }

    /// Feeds `buf` to a verifier in chunks cut at `cuts` (offsets, any
    /// order), then checks that it ends on a record boundary.
    fn verify_in_chunks(lsn: u64, buf: &[u8], cuts: &[usize]) -> Result<(), DamagedRecord> {
        let mut cuts: Vec<usize> = cuts.iter().map(|&c| c % (buf.len() + 1)).collect();
        cuts.push(buf.len());
        cuts.sort_unstable();
        let mut v = StreamVerifier::new(lsn);
        let mut at = 0;
        for c in cuts {
            v.feed(&buf[at..c])?;
            at = c;
            assert_eq!(v.lsn(), lsn + at as u64);
        }
        v.check_boundary()
    }

    #[test]
    fn stream_verifier_names_the_damaged_record() {
        let (mut buf, starts) = encoded_log(4096, &[10, 0, 300, 5]);
        assert_eq!(verify_in_chunks(4096, &buf, &[3, 20, 21, 400]), Ok(()));
        // A zeroed block where records were written is damage, not an end.
        let mut zeroed = buf.clone();
        let third = (starts[2] - 4096) as usize;
        zeroed[third..].fill(0);
        assert_eq!(
            verify_in_chunks(4096, &zeroed, &[]),
            Err(DamagedRecord {
                lsn: starts[2],
                reason: "zero bytes where a record was written"
            })
        );
        // A length that runs past the end of what was written.
        let last = (starts[3] - 4096) as usize;
        buf[last] += 1;
        assert_eq!(
            verify_in_chunks(4096, &buf, &[last + 5]),
            Err(DamagedRecord {
                lsn: starts[3],
                reason: "record runs past the end of the written log"
            })
        );
        // The same bytes at another LSN do not verify.
        let (buf, _) = encoded_log(4096, &[10]);
        assert!(verify_in_chunks(4097, &buf, &[]).is_err());
    }

    proptest! {
        #[test]
        fn stream_verifier_accepts_any_chunking_and_finds_any_flipped_byte(
            sizes in proptest::collection::vec(0usize..200, 1..12),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
            flip in any::<proptest::sample::Index>(),
            bit in 0u8..8,
            lsn in 0u64..1 << 40,
        ) {
            let (mut buf, starts) = encoded_log(lsn, &sizes);
            prop_assert_eq!(verify_in_chunks(lsn, &buf, &cuts), Ok(()));
            let at = flip.index(buf.len());
            buf[at] ^= 1 << bit;
            let damaged = starts.iter().rev().find(|&&s| s <= lsn + at as u64).copied();
            let found = verify_in_chunks(lsn, &buf, &cuts);
            prop_assert_eq!(found.map_err(|d| d.lsn), Err(damaged.unwrap()));
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256), lsn in any::<u64>()) {
            let bytes = Bytes::from(data);
            if let Parsed::Record { rtype, payload, .. } = parse(lsn, &bytes) {
                let _ = Mutation::decode(rtype, &payload);
            }
        }

        #[test]
        fn batch_payload_garbage_is_an_error_not_a_panic(data in proptest::collection::vec(any::<u8>(), 0..128)) {
            for t in [RecordType::Batch, RecordType::Put, RecordType::EpochChange, RecordType::Clear] {
                let _ = Mutation::decode(t, &Bytes::from(data.clone()));
            }
        }
    }
}
