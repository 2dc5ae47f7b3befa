//! The replication frame codec: roundtrips, incremental decoding and hostile
//! input.

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;
use walship_replication::protocol::{
    decode_frame, FrameError, Message, BACKUP_CHUNK_CHECKPOINT, BACKUP_CHUNK_EPOCHS,
    DATA_MAX_BYTES, FRAME_HEADER_BYTES, FRAME_MAX_BYTES, PROTO_VERSION, STRING_MAX_BYTES,
};

fn encode(message: &Message) -> BytesMut {
    let mut out = BytesMut::new();
    message.encode(&mut out);
    out
}

/// Builds a frame with a correct length and CRC around `body` (type byte +
/// payload), so that decoding reaches the payload checks.
fn frame(body: &[u8]) -> BytesMut {
    let mut out = BytesMut::new();
    out.put_u32_le(body.len() as u32);
    out.put_u32_le(crc32fast::hash(body));
    out.put_slice(body);
    out
}

fn body(ty: u8, payload: &[u8]) -> Vec<u8> {
    let mut b = vec![ty];
    b.extend_from_slice(payload);
    b
}

fn decode_all(buf: &mut BytesMut) -> Vec<Message> {
    let mut out = Vec::new();
    while let Some(m) = decode_frame(buf).expect("valid stream") {
        out.push(m);
    }
    out
}

fn examples() -> Vec<Message> {
    vec![
        Message::Hello {
            proto_version: PROTO_VERSION,
            cluster_id: 0xdead_beef,
            epoch: 3,
            flushed_lsn: 4096,
            name: "standby1".into(),
            history: vec![(1, 0), (2, 0), (3, 1024)],
        },
        Message::Welcome {
            cluster_id: 0xdead_beef,
            epoch: 3,
            start_lsn: 4096,
            primary_end_lsn: 8192,
            base_backup: true,
        },
        Message::Refuse {
            reason: "cluster id mismatch".into(),
        },
        Message::WalData {
            epoch: 3,
            start_lsn: 4096,
            primary_flushed_lsn: 8192,
            data: Bytes::from_static(b"some wal bytes"),
        },
        Message::Keepalive {
            epoch: 3,
            end_lsn: 8192,
            flushed_lsn: 8000,
            timestamp_ms: 1_700_000_000_000,
            reply_requested: false,
        },
        Message::Status {
            epoch: 3,
            write_lsn: 8192,
            flush_lsn: 8000,
            apply_lsn: 7000,
            timestamp_ms: 1_700_000_000_001,
        },
        Message::BackupBegin {
            cluster_id: 1,
            epoch: 2,
            redo_lsn: 100,
            end_lsn: 200,
            checkpoint_bytes: 12345,
        },
        Message::BackupChunk {
            kind: BACKUP_CHUNK_CHECKPOINT,
            offset: 0,
            data: Bytes::from_static(b"checkpoint"),
        },
        Message::BackupChunk {
            kind: BACKUP_CHUNK_EPOCHS,
            offset: 100,
            data: Bytes::new(),
        },
        Message::BackupEnd {
            checkpoint_crc: 0xabcd_ef01,
            wal_start_lsn: 100,
            wal_end_lsn: 200,
        },
        Message::Error {
            reason: "épique failure ✓".into(),
        },
        Message::Rewind {
            epoch: 4,
            fork_lsn: 2048,
        },
    ]
}

#[test]
fn every_message_roundtrips() {
    for message in examples() {
        let mut buf = encode(&message);
        let decoded = decode_frame(&mut buf).unwrap().unwrap();
        assert_eq!(decoded, message);
        assert!(buf.is_empty(), "{} left bytes behind", message.name());
    }
}

#[test]
fn wire_layout_is_len_crc_type_payload_little_endian() {
    let message = Message::Status {
        epoch: 9,
        write_lsn: 1,
        flush_lsn: 2,
        apply_lsn: 3,
        timestamp_ms: 4,
    };
    let buf = encode(&message);
    let mut expected_body = vec![6u8];
    for v in [9u64, 1, 2, 3, 4] {
        expected_body.extend_from_slice(&v.to_le_bytes());
    }
    assert_eq!(&buf[0..4], &(expected_body.len() as u32).to_le_bytes());
    assert_eq!(&buf[4..8], &crc32fast::hash(&expected_body).to_le_bytes());
    assert_eq!(&buf[8..], &expected_body[..]);
}

#[test]
fn strings_are_u32_length_prefixed_utf8() {
    let buf = encode(&Message::Refuse {
        reason: "no".into(),
    });
    assert_eq!(
        &buf[FRAME_HEADER_BYTES..],
        &[3u8, 2, 0, 0, 0, b'n', b'o'][..]
    );
}

#[test]
fn wal_data_is_a_zero_copy_slice_of_the_buffer() {
    let mut buf = encode(&Message::WalData {
        epoch: 1,
        start_lsn: 2,
        primary_flushed_lsn: 3,
        data: Bytes::from(vec![7u8; 1000]),
    });
    let payload_ptr = buf[FRAME_HEADER_BYTES + 1 + 24..].as_ptr();
    let Some(Message::WalData { data, .. }) = decode_frame(&mut buf).unwrap() else {
        panic!("expected WalData");
    };
    assert_eq!(
        data.as_ptr(),
        payload_ptr,
        "data must point into the received buffer"
    );
    assert_eq!(data.len(), 1000);
}

#[test]
fn incomplete_frame_consumes_nothing() {
    let full = encode(&examples()[0]);
    for cut in 0..full.len() {
        let mut buf = BytesMut::from(&full[..cut]);
        assert_eq!(decode_frame(&mut buf), Ok(None), "cut at {cut}");
        assert_eq!(buf.len(), cut, "cut at {cut} consumed bytes");
    }
}

#[test]
fn two_frames_in_one_buffer_decode_in_order() {
    let mut buf = BytesMut::new();
    for m in examples() {
        m.encode(&mut buf);
    }
    assert_eq!(decode_all(&mut buf), examples());
    assert!(buf.is_empty());
}

#[test]
fn oversized_length_is_refused_from_the_header_alone() {
    let mut buf = BytesMut::new();
    buf.put_u32_le(FRAME_MAX_BYTES + 1);
    buf.put_u32_le(0);
    // No body at all: the refusal must not wait for (or buffer) one.
    assert_eq!(
        decode_frame(&mut buf),
        Err(FrameError::Oversized {
            len: FRAME_MAX_BYTES + 1,
            max: FRAME_MAX_BYTES
        })
    );
    assert_eq!(buf.len(), FRAME_HEADER_BYTES, "an error consumes nothing");

    let mut huge = BytesMut::new();
    huge.put_u32_le(u32::MAX);
    huge.put_u32_le(0);
    assert!(matches!(
        decode_frame(&mut huge),
        Err(FrameError::Oversized { .. })
    ));
}

#[test]
fn largest_allowed_wal_chunk_roundtrips() {
    let message = Message::WalData {
        epoch: 1,
        start_lsn: 0,
        primary_flushed_lsn: 0,
        data: Bytes::from(vec![0xAB; DATA_MAX_BYTES]),
    };
    let mut buf = encode(&message);
    assert!(buf.len() - FRAME_HEADER_BYTES <= FRAME_MAX_BYTES as usize);
    assert_eq!(decode_frame(&mut buf).unwrap(), Some(message));
}

#[test]
fn zero_length_frame_is_refused() {
    let mut buf = BytesMut::new();
    buf.put_u32_le(0);
    buf.put_u32_le(0);
    assert_eq!(decode_frame(&mut buf), Err(FrameError::Empty));
}

#[test]
fn flipped_bit_fails_the_crc() {
    let mut buf = encode(&examples()[3]);
    let last = buf.len() - 1;
    buf[last] ^= 0x01;
    let before = buf.clone();
    assert!(matches!(
        decode_frame(&mut buf),
        Err(FrameError::CrcMismatch { .. })
    ));
    assert_eq!(buf, before, "an error consumes nothing");
}

#[test]
fn unknown_type_is_refused() {
    for ty in [0u8, 12, 255] {
        let mut buf = frame(&[ty]);
        assert_eq!(decode_frame(&mut buf), Err(FrameError::UnknownType { ty }));
    }
}

#[test]
fn truncated_field_is_refused() {
    // Status needs 40 bytes; give it 39.
    let mut buf = frame(&body(6, &[0u8; 39]));
    assert_eq!(
        decode_frame(&mut buf),
        Err(FrameError::Truncated {
            message: "Status",
            field: "timestamp_ms",
            needed: 8,
            available: 7
        })
    );
    // A WalData without its fixed fields.
    let mut buf = frame(&body(4, &[0u8; 10]));
    assert!(matches!(
        decode_frame(&mut buf),
        Err(FrameError::Truncated {
            message: "WalData",
            field: "start_lsn",
            ..
        })
    ));
}

#[test]
fn trailing_bytes_are_refused() {
    let message = encode(&examples()[5]); // Status
    let mut b = message[FRAME_HEADER_BYTES..].to_vec();
    b.push(0);
    let mut buf = frame(&b);
    assert_eq!(
        decode_frame(&mut buf),
        Err(FrameError::TrailingBytes {
            message: "Status",
            extra: 1
        })
    );
}

#[test]
fn string_length_over_the_limit_is_refused() {
    let mut payload = (STRING_MAX_BYTES + 1).to_le_bytes().to_vec();
    payload.extend(vec![b'a'; STRING_MAX_BYTES as usize + 1]);
    let mut buf = frame(&body(3, &payload));
    assert_eq!(
        decode_frame(&mut buf),
        Err(FrameError::StringTooLong {
            message: "Refuse",
            field: "reason",
            len: STRING_MAX_BYTES + 1,
            max: STRING_MAX_BYTES
        })
    );
}

#[test]
fn string_length_past_the_payload_is_refused() {
    let mut payload = 10u32.to_le_bytes().to_vec();
    payload.extend_from_slice(b"abc");
    let mut buf = frame(&body(10, &payload));
    assert_eq!(
        decode_frame(&mut buf),
        Err(FrameError::StringPastEnd {
            message: "Error",
            field: "reason",
            len: 10,
            available: 3
        })
    );
}

#[test]
fn invalid_utf8_is_refused() {
    let mut payload = 3u32.to_le_bytes().to_vec();
    payload.extend_from_slice(&[b'o', 0xff, b'k']);
    let mut buf = frame(&body(3, &payload));
    assert_eq!(
        decode_frame(&mut buf),
        Err(FrameError::InvalidUtf8 {
            message: "Refuse",
            field: "reason",
            valid_up_to: 1
        })
    );
}

#[test]
fn bool_other_than_zero_or_one_is_refused() {
    // Welcome: 4 x u64 then base_backup.
    let mut payload = vec![0u8; 32];
    payload.push(2);
    let mut buf = frame(&body(2, &payload));
    assert_eq!(
        decode_frame(&mut buf),
        Err(FrameError::InvalidBool {
            message: "Welcome",
            field: "base_backup",
            value: 2
        })
    );
    // Keepalive: 4 x u64 then reply_requested.
    let mut payload = vec![0u8; 32];
    payload.push(0xff);
    let mut buf = frame(&body(5, &payload));
    assert!(matches!(
        decode_frame(&mut buf),
        Err(FrameError::InvalidBool {
            field: "reply_requested",
            value: 0xff,
            ..
        })
    ));
}

#[test]
fn unknown_backup_chunk_kind_is_refused() {
    let mut payload = vec![2u8];
    payload.extend_from_slice(&0u64.to_le_bytes());
    let mut buf = frame(&body(8, &payload));
    assert_eq!(
        decode_frame(&mut buf),
        Err(FrameError::InvalidChunkKind { value: 2 })
    );
}

#[test]
fn errors_name_what_failed() {
    let text = FrameError::StringPastEnd {
        message: "Hello",
        field: "name",
        len: 10,
        available: 3,
    }
    .to_string();
    assert!(
        text.contains("Hello") && text.contains("name") && text.contains("10"),
        "{text}"
    );
    let text = FrameError::Oversized {
        len: u32::MAX,
        max: FRAME_MAX_BYTES,
    }
    .to_string();
    assert!(text.contains(&u32::MAX.to_string()), "{text}");
}

#[test]
fn overlong_reason_is_cut_at_a_char_boundary() {
    // 'é' is two bytes, so the limit falls inside a character.
    let reason = "é".repeat(STRING_MAX_BYTES as usize);
    let mut buf = encode(&Message::Error { reason });
    let Some(Message::Error { reason }) = decode_frame(&mut buf).unwrap() else {
        panic!("expected Error");
    };
    assert_eq!(reason.len(), STRING_MAX_BYTES as usize);
    assert!(reason.chars().all(|c| c == 'é'));
}

#[test]
#[should_panic(expected = "Hello name")]
fn encoding_an_overlong_name_is_a_caller_bug() {
    encode(&Message::Hello {
        proto_version: PROTO_VERSION,
        cluster_id: 0,
        epoch: 0,
        flushed_lsn: 0,
        name: "x".repeat(STRING_MAX_BYTES as usize + 1),
        history: Vec::new(),
    });
}

#[test]
#[should_panic(expected = "BackupChunk kind")]
fn encoding_an_unknown_chunk_kind_is_a_caller_bug() {
    encode(&Message::BackupChunk {
        kind: 7,
        offset: 0,
        data: Bytes::new(),
    });
}

fn string_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,40}",
        Just(String::new()),
        Just("x".repeat(STRING_MAX_BYTES as usize)),
    ]
}

fn data_strategy() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..300).prop_map(Bytes::from)
}

fn message_strategy() -> impl Strategy<Value = Message> {
    prop_oneof![
        (
            any::<u32>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            string_strategy(),
            history_strategy()
        )
            .prop_map(
                |(proto_version, cluster_id, epoch, flushed_lsn, name, history)| {
                    Message::Hello {
                        proto_version,
                        cluster_id,
                        epoch,
                        flushed_lsn,
                        name,
                        history,
                    }
                }
            ),
        (
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<bool>()
        )
            .prop_map(
                |(cluster_id, epoch, start_lsn, primary_end_lsn, base_backup)| Message::Welcome {
                    cluster_id,
                    epoch,
                    start_lsn,
                    primary_end_lsn,
                    base_backup
                }
            ),
        string_strategy().prop_map(|reason| Message::Refuse { reason }),
        (any::<u64>(), any::<u64>(), any::<u64>(), data_strategy()).prop_map(
            |(epoch, start_lsn, primary_flushed_lsn, data)| Message::WalData {
                epoch,
                start_lsn,
                primary_flushed_lsn,
                data
            }
        ),
        (
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<bool>()
        )
            .prop_map(
                |(epoch, end_lsn, flushed_lsn, timestamp_ms, reply_requested)| Message::Keepalive {
                    epoch,
                    end_lsn,
                    flushed_lsn,
                    timestamp_ms,
                    reply_requested
                }
            ),
        (
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>()
        )
            .prop_map(|(epoch, write_lsn, flush_lsn, apply_lsn, timestamp_ms)| {
                Message::Status {
                    epoch,
                    write_lsn,
                    flush_lsn,
                    apply_lsn,
                    timestamp_ms,
                }
            }),
        (
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>()
        )
            .prop_map(|(cluster_id, epoch, redo_lsn, end_lsn, checkpoint_bytes)| {
                Message::BackupBegin {
                    cluster_id,
                    epoch,
                    redo_lsn,
                    end_lsn,
                    checkpoint_bytes,
                }
            }),
        (
            prop_oneof![Just(BACKUP_CHUNK_CHECKPOINT), Just(BACKUP_CHUNK_EPOCHS)],
            any::<u64>(),
            data_strategy()
        )
            .prop_map(|(kind, offset, data)| Message::BackupChunk { kind, offset, data }),
        (any::<u32>(), any::<u64>(), any::<u64>()).prop_map(
            |(checkpoint_crc, wal_start_lsn, wal_end_lsn)| Message::BackupEnd {
                checkpoint_crc,
                wal_start_lsn,
                wal_end_lsn
            }
        ),
        string_strategy().prop_map(|reason| Message::Error { reason }),
        (any::<u64>(), any::<u64>())
            .prop_map(|(epoch, fork_lsn)| Message::Rewind { epoch, fork_lsn }),
    ]
}

/// Valid epoch histories: epochs strictly ascending, start LSNs not descending.
fn history_strategy() -> impl Strategy<Value = Vec<(u64, u64)>> {
    proptest::collection::vec((1u64..1000, 0u64..1 << 20), 0..8).prop_map(|steps| {
        let (mut epoch, mut lsn) = (0u64, 0u64);
        steps
            .into_iter()
            .map(|(de, dl)| {
                epoch += de;
                lsn += dl;
                (epoch, lsn)
            })
            .collect()
    })
}

#[test]
fn hello_histories_out_of_order_or_too_long_are_refused() {
    let hello = |history: Vec<(u64, u64)>| {
        let mut b = Vec::new();
        b.extend_from_slice(&PROTO_VERSION.to_le_bytes());
        b.extend_from_slice(&[0u8; 24]);
        b.extend_from_slice(&1u32.to_le_bytes());
        b.push(b'x');
        b.extend_from_slice(&(history.len() as u32).to_le_bytes());
        for (e, l) in history {
            b.extend_from_slice(&e.to_le_bytes());
            b.extend_from_slice(&l.to_le_bytes());
        }
        frame(&body(1, &b))
    };
    for bad in [
        vec![(2, 0), (2, 5)],
        vec![(3, 0), (2, 5)],
        vec![(1, 9), (2, 5)],
    ] {
        let mut buf = hello(bad.clone());
        assert!(
            matches!(decode_frame(&mut buf), Err(FrameError::BadHistory { .. })),
            "{bad:?}"
        );
    }
    // A count far beyond the payload is refused before anything is allocated for it.
    let mut payload = Vec::new();
    payload.extend_from_slice(&PROTO_VERSION.to_le_bytes());
    payload.extend_from_slice(&[0u8; 24]);
    payload.extend_from_slice(&0u32.to_le_bytes());
    payload.extend_from_slice(&u32::MAX.to_le_bytes());
    let mut buf = frame(&body(1, &payload));
    assert!(matches!(
        decode_frame(&mut buf),
        Err(FrameError::BadHistory { .. })
    ));
    let mut ok = hello(vec![(1, 0), (2, 0), (5, 7)]);
    assert!(matches!(
        decode_frame(&mut ok),
        Ok(Some(Message::Hello { .. }))
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_message_roundtrips(message in message_strategy()) {
        let mut buf = encode(&message);
        prop_assert_eq!(decode_frame(&mut buf), Ok(Some(message)));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn byte_at_a_time_feeding_yields_the_same_messages(
        messages in proptest::collection::vec(message_strategy(), 1..6)
    ) {
        let mut stream = BytesMut::new();
        for m in &messages {
            m.encode(&mut stream);
        }
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        for &byte in stream.iter() {
            buf.put_u8(byte);
            while let Some(m) = decode_frame(&mut buf).expect("valid stream") {
                decoded.push(m);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(decoded, messages);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = decode_frame(&mut buf) {}
    }

    /// Random payloads behind a valid header and CRC, so that decoding gets
    /// past the checksum into every payload parser.
    #[test]
    fn arbitrary_payloads_with_valid_crc_never_panic(
        ty in 0u8..12,
        payload in proptest::collection::vec(any::<u8>(), 0..80),
    ) {
        let mut buf = frame(&body(ty, &payload));
        let before = buf.clone();
        match decode_frame(&mut buf) {
            Ok(Some(message)) => {
                // Whatever decodes must re-encode to the same bytes.
                prop_assert!(buf.is_empty());
                prop_assert_eq!(encode(&message), before);
            }
            Ok(None) => prop_assert!(false, "a complete frame decoded as incomplete"),
            Err(_) => prop_assert_eq!(buf, before),
        }
    }

    #[test]
    fn corrupting_any_byte_is_detected_or_harmless(
        message in message_strategy(),
        index in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let mut buf = encode(&message);
        let i = index.index(buf.len());
        buf[i] ^= flip;
        // A flipped length may make the frame look incomplete or oversized;
        // anything else must fail the CRC. It must never decode to a
        // different message.
        let decoded = decode_frame(&mut buf);
        prop_assert!(!matches!(decoded, Ok(Some(_))), "corruption at byte {} decoded as {:?}", i, decoded);
    }
}
