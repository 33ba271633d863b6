//! A compression bomb: a small compressed message that would inflate far
//! past `max_message_size` is refused with 1009 while inflating, and peak
//! memory stays under the limit plus a stated slack. A counting allocator
//! measures it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::BytesMut;
use hubbub_proto::{Config, Connection, DeflateParams, ProtocolError, Role};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator and only counts sizes.
#[allow(unsafe_code, reason = "a counting allocator for this test binary")]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = CURRENT.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
        PEAK.fetch_max(now, Ordering::SeqCst);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Counted as the change in size: the system allocator grows large
        // blocks in place (mremap) rather than holding both.
        if new_size >= layout.size() {
            let now = CURRENT.fetch_add(new_size - layout.size(), Ordering::SeqCst) + new_size
                - layout.size();
            PEAK.fetch_max(now, Ordering::SeqCst);
        } else {
            CURRENT.fetch_sub(layout.size() - new_size, Ordering::SeqCst);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::SeqCst);
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const LIMIT: usize = 1 << 20;
/// Most bytes the decompressor inflates per step (`INFLATE_STEP` in
/// `src/deflate/codec.rs`): the most a message may pass the limit by.
const INFLATE_STEP: usize = 64 * 1024;
/// The stated slack: one inflate step, plus the decompressor's state and
/// window (about 50 KiB with zlib-rs), rounded up.
const SLACK: usize = INFLATE_STEP + 128 * 1024;

fn params() -> DeflateParams {
    DeflateParams {
        local_no_context_takeover: true,
        remote_no_context_takeover: true,
        local_max_window_bits: 15,
        threshold: 0,
        level: 9,
    }
}

/// One masked, compressed frame whose payload inflates to `inflated` zero
/// bytes, as a client with permessage-deflate sends it.
fn bomb(inflated: usize) -> Vec<u8> {
    let mut client = Connection::new(Role::Client, Config::default());
    client.set_deflate(params());
    let mut frame = BytesMut::new();
    client
        .send_binary(&vec![0u8; inflated], &mut frame)
        .unwrap();
    frame.to_vec()
}

fn server() -> Connection {
    let mut conn = Connection::new(Role::Server, Config::default().with_max_message_size(LIMIT));
    conn.set_deflate(params());
    conn
}

#[test]
fn inflate_bomb_is_refused_with_1009_and_bounded_memory() {
    // 256 MiB of zeros: about 250 KiB compressed.
    let frame = bomb(256 << 20);
    assert!(frame.len() < 300 << 10, "{}", frame.len());

    // Whole frame in one read, and the same frame trickling in 4 KiB reads.
    for piece in [frame.len(), 4096] {
        let mut conn = server();
        let mut input = BytesMut::with_capacity(frame.len());
        let mut out = BytesMut::with_capacity(256);
        let baseline = CURRENT.load(Ordering::SeqCst);
        PEAK.store(baseline, Ordering::SeqCst);
        let mut result = Ok(None);
        for chunk in frame.chunks(piece) {
            input.extend_from_slice(chunk);
            result = conn.read(&mut input, &mut out);
            if result.is_err() {
                break;
            }
        }
        let peak = PEAK.load(Ordering::SeqCst) - baseline;
        eprintln!("reads of {piece} bytes: peak {peak} bytes for a limit of {LIMIT}");
        assert!(
            matches!(result, Err(ProtocolError::MessageTooLarge { .. })),
            "{result:?}"
        );
        assert_eq!(&out[..4], &[0x88, out[1], 0x03, 0xf1], "close 1009");
        assert!(
            peak < LIMIT + SLACK,
            "reads of {piece}: peak {peak} bytes over limit {LIMIT} + slack {SLACK}"
        );
    }
}

#[test]
fn inflated_message_at_the_limit_is_delivered() {
    let frame = bomb(LIMIT);
    let mut conn = server();
    let mut input = BytesMut::from(&frame[..]);
    let event = conn.read(&mut input, &mut BytesMut::new()).unwrap();
    match event {
        Some(hubbub_proto::Event::Binary(data)) => assert_eq!(data.len(), LIMIT),
        other => panic!("{other:?}"),
    }
}
