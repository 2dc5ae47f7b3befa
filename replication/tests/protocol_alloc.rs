//! Decoding hostile bytes allocates no more than the input's length plus a
//! small constant: a peer cannot make the decoder reserve memory it did not
//! send.
//!
//! This file has its own test binary because it installs a counting global
//! allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::{BufMut, BytesMut};
use proptest::prelude::*;
use walship_replication::protocol::{decode_frame, Message, FRAME_MAX_BYTES};

struct Counting;

thread_local! {
    /// Bytes allocated by this thread while counting is on.
    static ALLOCATED_BYTES: Cell<usize> = const { Cell::new(0) };
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

fn count(bytes: usize) {
    // `try_with`: the thread-locals may be gone while a thread exits.
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = ALLOCATED_BYTES.try_with(|total| total.set(total.get() + bytes));
        }
    });
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `decode_frame` until it stops and returns the bytes it allocated.
fn allocated_while_decoding(buf: &mut BytesMut) -> usize {
    ALLOCATED_BYTES.with(|t| t.set(0));
    COUNTING.with(|c| c.set(true));
    let mut decoded = Vec::with_capacity(0);
    while let Ok(Some(message)) = decode_frame(buf) {
        // Only the messages count, not the Vec that keeps them alive.
        COUNTING.with(|c| c.set(false));
        decoded.push(message);
        COUNTING.with(|c| c.set(true));
    }
    COUNTING.with(|c| c.set(false));
    drop(decoded);
    ALLOCATED_BYTES.with(|t| t.get())
}

/// Slack for fixed-size bookkeeping (the shared header `bytes` allocates
/// when a buffer is first split), per decoded frame.
const SLACK_BYTES_PER_FRAME: usize = 128;

fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    out.extend_from_slice(body);
    out
}

#[test]
fn oversized_header_allocates_nothing() {
    let mut buf = BytesMut::new();
    buf.put_u32_le(FRAME_MAX_BYTES + 1);
    buf.put_u32_le(0);
    assert_eq!(allocated_while_decoding(&mut buf), 0);
}

#[test]
fn header_promising_a_huge_frame_allocates_nothing_while_waiting() {
    let mut buf = BytesMut::new();
    buf.put_u32_le(FRAME_MAX_BYTES);
    buf.put_u32_le(0);
    buf.put_u8(4);
    assert_eq!(allocated_while_decoding(&mut buf), 0);
}

#[test]
fn a_string_frame_allocates_about_its_own_size() {
    let mut buf = BytesMut::new();
    Message::Refuse {
        reason: "r".repeat(1000),
    }
    .encode(&mut buf);
    let input = buf.len();
    let allocated = allocated_while_decoding(&mut buf);
    // The String itself is counted: proof that the counter is live.
    assert!(allocated >= 1000, "counted only {allocated} bytes");
    assert!(
        allocated <= input + SLACK_BYTES_PER_FRAME,
        "{allocated} > {input}"
    );
}

proptest! {
    #[test]
    fn arbitrary_bytes_allocate_at_most_input_plus_constant(
        bytes in proptest::collection::vec(any::<u8>(), 0..300)
    ) {
        let mut buf = BytesMut::from(&bytes[..]);
        let allocated = allocated_while_decoding(&mut buf);
        // Without a valid CRC nothing decodes, so nothing is allocated
        // beyond the constant.
        prop_assert!(allocated <= bytes.len() + SLACK_BYTES_PER_FRAME,
            "allocated {} for {} input bytes", allocated, bytes.len());
    }

    #[test]
    fn valid_crc_frames_allocate_at_most_input_plus_constant(
        bodies in proptest::collection::vec(
            (1u8..=10, proptest::collection::vec(any::<u8>(), 0..120)), 1..5)
    ) {
        let mut input = Vec::new();
        for (ty, payload) in &bodies {
            let mut body = vec![*ty];
            body.extend_from_slice(payload);
            input.extend(frame(&body));
        }
        let mut buf = BytesMut::from(&input[..]);
        let allocated = allocated_while_decoding(&mut buf);
        prop_assert!(allocated <= input.len() + bodies.len() * SLACK_BYTES_PER_FRAME,
            "allocated {} for {} input bytes", allocated, input.len());
    }
}
