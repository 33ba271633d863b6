//! Rule-by-rule tests on byte literals.

use bytes::{Bytes, BytesMut};

use super::*;
use crate::close::CloseCode;
use crate::deflate::Compressor;
use crate::error::{ProtocolError, SendError};
use crate::frame::FrameHeader;
use crate::mask::apply_mask;

const KEY: [u8; 4] = [0xA1, 0xB2, 0xC3, 0xD4];

/// A masked frame from a client, as raw bytes.
fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let header = FrameHeader {
        fin,
        mask: Some(KEY),
        ..FrameHeader::new(
            OpCode::from_u8(opcode).unwrap_or(OpCode::Binary),
            payload.len() as u64,
        )
    };
    let mut bytes = header.encode().as_bytes().to_vec();
    bytes[0] = (bytes[0] & 0xF0) | opcode;
    let start = bytes.len();
    bytes.extend_from_slice(payload);
    apply_mask(&mut bytes[start..], KEY, 0);
    bytes
}

fn server() -> Connection {
    Connection::new(Role::Server, Config::default())
}

/// Feeds all of `bytes` and collects events until the first error.
fn feed(conn: &mut Connection, bytes: &[u8]) -> (Vec<Event>, Option<ProtocolError>, BytesMut) {
    let mut input = BytesMut::from(bytes);
    let mut out = BytesMut::new();
    let mut events = Vec::new();
    loop {
        match conn.read(&mut input, &mut out) {
            Ok(Some(event)) => events.push(event),
            Ok(None) => return (events, None, out),
            Err(e) => return (events, Some(e), out),
        }
    }
}

fn close_code_in(out: &[u8]) -> u16 {
    // Server frames are unmasked: find the last close frame.
    let pos = out.iter().rposition(|&b| b == 0x88).expect("a close frame");
    u16::from_be_bytes([out[pos + 2], out[pos + 3]])
}

fn expect_error(bytes: &[u8], error: ProtocolError, code: u16) {
    let mut conn = server();
    let (_, err, out) = feed(&mut conn, bytes);
    assert_eq!(err, Some(error));
    assert_eq!(close_code_in(&out), code);
    assert!(conn.is_closed());
}

#[test]
fn server_rejects_unmasked_frame_with_1002() {
    expect_error(
        &[0x81, 0x02, b'h', b'i'],
        ProtocolError::UnmaskedFrame,
        1002,
    );
}

#[test]
fn client_rejects_masked_frame_with_1002() {
    let mut client = Connection::new(Role::Client, Config::default());
    let (_, err, _) = feed(&mut client, &client_frame(true, 1, b"hi"));
    assert_eq!(err, Some(ProtocolError::MaskedFrame));
}

#[test]
fn rsv_bits_without_extension_are_1002() {
    for bit in [0x40u8, 0x20, 0x10] {
        let mut frame = client_frame(true, 1, b"x");
        frame[0] |= bit;
        expect_error(&frame, ProtocolError::ReservedBits, 1002);
    }
}

#[test]
fn reserved_opcode_is_1002() {
    expect_error(
        &client_frame(true, 3, b""),
        ProtocolError::ReservedOpcode(3),
        1002,
    );
    expect_error(
        &client_frame(true, 0xB, b""),
        ProtocolError::ReservedOpcode(0xB),
        1002,
    );
}

#[test]
fn control_frame_over_125_bytes_is_1002() {
    expect_error(
        &client_frame(true, 9, &[0; 126]),
        ProtocolError::ControlFrameTooLong,
        1002,
    );
}

#[test]
fn fragmented_control_frame_is_1002() {
    expect_error(
        &client_frame(false, 9, b"x"),
        ProtocolError::FragmentedControlFrame,
        1002,
    );
}

#[test]
fn continuation_without_message_is_1002() {
    expect_error(
        &client_frame(true, 0, b"x"),
        ProtocolError::UnexpectedContinuation,
        1002,
    );
}

#[test]
fn new_data_frame_inside_fragmented_message_is_1002() {
    let mut bytes = client_frame(false, 1, b"a");
    bytes.extend(client_frame(true, 1, b"b"));
    expect_error(&bytes, ProtocolError::ExpectedContinuation, 1002);
}

#[test]
fn length_with_top_bit_is_1002_before_any_allocation() {
    let mut bytes = vec![0x82, 0xFF];
    bytes.extend_from_slice(&u64::MAX.to_be_bytes());
    bytes.extend_from_slice(&KEY);
    expect_error(&bytes, ProtocolError::LengthOverflow, 1002);
}

#[test]
fn frame_over_max_frame_size_is_1009_from_header_alone() {
    let mut conn = Connection::new(Role::Server, Config::default().with_max_frame_size(100));
    // Only the header of a 1 GiB frame: refused without waiting for payload.
    let mut bytes = vec![0x82, 0xFF];
    bytes.extend_from_slice(&(1u64 << 30).to_be_bytes());
    bytes.extend_from_slice(&KEY);
    let (_, err, out) = feed(&mut conn, &bytes);
    assert_eq!(
        err,
        Some(ProtocolError::FrameTooLarge {
            size: 1 << 30,
            max: 100
        })
    );
    assert_eq!(close_code_in(&out), 1009);
}

#[test]
fn message_over_max_message_size_across_fragments_is_1009() {
    let mut conn = Connection::new(Role::Server, Config::default().with_max_message_size(10));
    let mut bytes = client_frame(false, 2, &[1; 6]);
    bytes.extend(client_frame(true, 0, &[2; 6]));
    let (events, err, out) = feed(&mut conn, &bytes);
    assert!(events.is_empty());
    assert_eq!(
        err,
        Some(ProtocolError::MessageTooLarge { size: 12, max: 10 })
    );
    assert_eq!(close_code_in(&out), 1009);
}

#[test]
fn flood_of_empty_fragments_keeps_memory_bounded() {
    let mut conn = server();
    let mut input = BytesMut::from(&client_frame(false, 2, b"")[..]);
    let mut out = BytesMut::new();
    assert_eq!(conn.read(&mut input, &mut out), Ok(None));
    let empty = client_frame(false, 0, b"");
    for _ in 0..100_000 {
        input.extend_from_slice(&empty);
        assert_eq!(conn.read(&mut input, &mut out), Ok(None));
        assert!(input.is_empty());
    }
    assert_eq!(conn.buffered_message_len(), 0);
    let mut one_byte = BytesMut::new();
    for _ in 0..1000 {
        one_byte.extend_from_slice(&client_frame(false, 0, b"z"));
    }
    one_byte.extend_from_slice(&client_frame(true, 0, b"z"));
    let (events, err, _) = feed(&mut conn, &one_byte);
    assert_eq!(err, None);
    assert_eq!(events, vec![Event::Binary(vec![b'z'; 1001].into())]);
}

#[test]
fn ping_inside_fragmented_message_is_answered_and_message_intact() {
    let mut conn = server();
    let mut bytes = client_frame(false, 1, b"Hel");
    bytes.extend(client_frame(true, 9, b"are you there"));
    bytes.extend(client_frame(false, 0, b"lo, "));
    bytes.extend(client_frame(true, 0, b"world"));
    let (events, err, out) = feed(&mut conn, &bytes);
    assert_eq!(err, None);
    assert_eq!(
        events,
        vec![
            Event::Ping("are you there".into()),
            Event::Text("Hello, world".into())
        ]
    );
    let mut pong = vec![0x8A, 13];
    pong.extend_from_slice(b"are you there");
    assert_eq!(&out[..], &pong[..]);
}

#[test]
fn auto_pong_can_be_turned_off() {
    let mut conn = Connection::new(Role::Server, Config::default().with_auto_pong(false));
    let (events, _, out) = feed(&mut conn, &client_frame(true, 9, b"p"));
    assert_eq!(events, vec![Event::Ping("p".into())]);
    assert!(out.is_empty());
}

#[test]
fn pong_is_surfaced_as_event() {
    let (events, _, out) = feed(&mut server(), &client_frame(true, 0xA, b"hb"));
    assert_eq!(events, vec![Event::Pong("hb".into())]);
    assert!(out.is_empty());
}

#[test]
fn invalid_utf8_fails_fast_inside_one_frame() {
    // Autobahn 6.4.3: one frame whose payload arrives in chunks; the second
    // chunk is certainly invalid and must fail before the rest arrives.
    let mut payload = "κόσμε".as_bytes().to_vec();
    payload.extend_from_slice(b"\xf4\x90\x80\x80");
    payload.extend_from_slice(b"-edited");
    let bytes = client_frame(true, 1, &payload);
    let mut conn = server();
    let mut out = BytesMut::new();
    let header_and_valid = bytes.len() - 7 - 4;
    let mut input = BytesMut::from(&bytes[..header_and_valid]);
    assert_eq!(conn.read(&mut input, &mut out), Ok(None));
    input.extend_from_slice(&bytes[header_and_valid..header_and_valid + 4]);
    assert_eq!(
        conn.read(&mut input, &mut out),
        Err(ProtocolError::InvalidUtf8)
    );
    assert_eq!(close_code_in(&out), 1007);
}

#[test]
fn invalid_utf8_fails_fast_across_fragments() {
    // Autobahn 6.4.1: the second fragment makes the text invalid; fail
    // before the third arrives.
    let mut bytes = client_frame(false, 1, "κόσμε".as_bytes());
    bytes.extend(client_frame(false, 0, b"\xf4\x90\x80\x80"));
    let (_, err, out) = feed(&mut server(), &bytes);
    assert_eq!(err, Some(ProtocolError::InvalidUtf8));
    assert_eq!(close_code_in(&out), 1007);
}

#[test]
fn text_ending_inside_code_point_is_1007() {
    let mut bytes = client_frame(false, 1, b"ab");
    bytes.extend(client_frame(true, 0, b"\xce"));
    expect_error(&bytes, ProtocolError::InvalidUtf8, 1007);
    expect_error(
        &client_frame(true, 1, b"\xce"),
        ProtocolError::InvalidUtf8,
        1007,
    );
}

#[test]
fn text_split_inside_code_point_across_fragments_is_valid() {
    let text = "𝄞";
    let mut bytes = client_frame(false, 1, &text.as_bytes()[..1]);
    bytes.extend(client_frame(false, 0, &text.as_bytes()[1..3]));
    bytes.extend(client_frame(true, 0, &text.as_bytes()[3..]));
    let (events, err, _) = feed(&mut server(), &bytes);
    assert_eq!(err, None);
    assert_eq!(events, vec![Event::Text(text.into())]);
}

#[test]
fn close_with_one_byte_payload_is_1002() {
    expect_error(
        &client_frame(true, 8, &[0x03]),
        ProtocolError::CloseFrameTooShort,
        1002,
    );
}

#[test]
fn close_with_invalid_code_is_1002() {
    for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
        expect_error(
            &client_frame(true, 8, &code.to_be_bytes()),
            ProtocolError::InvalidCloseCode(code),
            1002,
        );
    }
}

#[test]
fn close_with_non_utf8_reason_is_1007() {
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"\xff\xfe");
    expect_error(
        &client_frame(true, 8, &payload),
        ProtocolError::InvalidCloseReason,
        1007,
    );
}

#[test]
fn valid_close_is_echoed_with_its_code_and_ends_reading() {
    for code in [1000u16, 1001, 1003, 1012, 3000, 4999] {
        let mut conn = server();
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(b"bye");
        let mut bytes = client_frame(true, 8, &payload);
        bytes.extend(client_frame(true, 1, b"after close"));
        let (events, err, out) = feed(&mut conn, &bytes);
        assert_eq!(err, None);
        assert_eq!(
            events,
            vec![Event::Close(Some(CloseFrame {
                code: CloseCode(code),
                reason: "bye".into()
            }))]
        );
        let mut echo = vec![0x88, 2];
        echo.extend_from_slice(&code.to_be_bytes());
        assert_eq!(&out[..], &echo[..]);
        assert!(conn.is_closed());
        assert_eq!(
            conn.send_text("late", &mut BytesMut::new()),
            Err(SendError::Closed)
        );
    }
}

#[test]
fn empty_close_is_answered_with_empty_close() {
    let mut conn = server();
    let (events, _, out) = feed(&mut conn, &client_frame(true, 8, b""));
    assert_eq!(events, vec![Event::Close(None)]);
    assert_eq!(&out[..], &[0x88, 0x00]);
}

#[test]
fn close_state_machine_open_closing_closed() {
    let mut conn = server();
    let mut out = BytesMut::new();
    assert!(conn.is_open());
    conn.close(Some(CloseCode::NORMAL), "done", &mut out)
        .unwrap();
    assert!(!conn.is_open() && conn.close_sent() && !conn.is_closed());
    assert_eq!(&out[..], b"\x88\x06\x03\xe8done");
    // Nothing is sent after close: not data, not a pong for a ping.
    assert_eq!(conn.send_binary(b"x", &mut out), Err(SendError::Closed));
    assert_eq!(conn.close(None, "", &mut out), Err(SendError::Closed));
    let (events, _, replies) = feed(&mut conn, &client_frame(true, 9, b"p"));
    assert_eq!(events, vec![Event::Ping("p".into())]);
    assert!(replies.is_empty());
    // Data still arrives while closing.
    let (events, _, _) = feed(&mut conn, &client_frame(true, 2, b"late data"));
    assert_eq!(events, vec![Event::Binary("late data".into())]);
    // The peer's close completes the handshake without a second close.
    let (events, _, replies) = feed(&mut conn, &client_frame(true, 8, &1000u16.to_be_bytes()));
    assert_eq!(events.len(), 1);
    assert!(replies.is_empty());
    assert!(conn.is_closed());
}

#[test]
fn sending_invalid_close_code_or_long_payloads_is_refused() {
    let mut conn = server();
    let mut out = BytesMut::new();
    assert_eq!(
        conn.close(Some(CloseCode(1005)), "", &mut out),
        Err(SendError::InvalidCloseCode(CloseCode(1005)))
    );
    assert_eq!(
        conn.close(Some(CloseCode::NORMAL), &"x".repeat(124), &mut out),
        Err(SendError::ControlPayloadTooLong)
    );
    assert_eq!(
        conn.ping(&[0; 126], &mut out),
        Err(SendError::ControlPayloadTooLong)
    );
    assert!(out.is_empty());
    assert!(conn.is_open());
}

#[test]
fn streamed_fragments_are_framed_first_continue_last() {
    let mut conn = server();
    let mut out = BytesMut::new();
    conn.send_fragment(MessageKind::Text, b"ab", false, &mut out)
        .unwrap();
    assert_eq!(
        conn.send_text("x", &mut out),
        Err(SendError::FragmentInProgress)
    );
    assert_eq!(
        conn.send_fragment(MessageKind::Binary, b"x", false, &mut out),
        Err(SendError::FragmentKindMismatch)
    );
    conn.ping(b"", &mut out).unwrap();
    conn.send_fragment(MessageKind::Text, b"cd", false, &mut out)
        .unwrap();
    conn.send_fragment(MessageKind::Text, b"e", true, &mut out)
        .unwrap();
    conn.send_text("next", &mut out).unwrap();
    assert_eq!(
        &out[..],
        b"\x01\x02ab\x89\x00\x00\x02cd\x80\x01e\x81\x04next"
    );
}

#[test]
fn client_masks_every_frame_with_fresh_key() {
    let mut client = Connection::new(Role::Client, Config::default());
    let mut out = BytesMut::new();
    let mut keys = std::collections::HashSet::new();
    for _ in 0..64 {
        out.clear();
        client.send_binary(&[0u8; 8], &mut out).unwrap();
        let (header, len) = FrameHeader::parse(&out).unwrap().unwrap();
        let key = header.mask.expect("client frames are masked");
        // Zero bytes masked show the key itself.
        assert_eq!(&out[len..len + 4], &key);
        keys.insert(key);
    }
    assert!(keys.len() > 60, "keys repeat: {}", keys.len());
}

#[test]
fn encode_message_shares_large_payloads_and_masks_in_the_client_role() {
    let mut conn = server();
    let payload = Bytes::from(vec![9u8; 70_000]);
    let frame = conn
        .encode_message(MessageKind::Binary, payload.clone())
        .unwrap();
    assert_eq!(
        &frame.head()[..],
        &[0x82, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]
    );
    // The payload is shared, not copied.
    assert_eq!(frame.body().unwrap().as_ptr(), payload.as_ptr());
    let small = conn
        .encode_message(MessageKind::Text, Bytes::from_static(b"hi"))
        .unwrap();
    assert_eq!(&small.head()[..], &[0x81, 2, b'h', b'i']);
    // A client's frames are masked, whole, and read back by a server.
    let mut client = Connection::new(Role::Client, Config::default());
    let frame = client
        .encode_message(MessageKind::Text, Bytes::from_static(b"hello"))
        .unwrap();
    assert!(frame.body().is_none());
    assert_eq!(frame.head()[1], 0x80 | 5, "mask bit and length");
    assert_ne!(&frame.head()[6..], b"hello", "the payload is masked");
    let ping = client.encode_control(OpCode::Ping, b"p").unwrap();
    assert_eq!(ping[0], 0x89);
    assert!(client.encode_control(OpCode::Ping, &[0; 126]).is_err());
    let mut input = BytesMut::from(&frame.head()[..]);
    input.extend_from_slice(&ping);
    let mut replies = BytesMut::new();
    assert_eq!(
        conn.read(&mut input, &mut replies).unwrap(),
        Some(Event::Text("hello".into()))
    );
    assert_eq!(
        conn.read(&mut input, &mut replies).unwrap(),
        Some(Event::Ping(Bytes::from_static(b"p")))
    );
}

#[test]
fn a_large_client_payload_is_masked_in_place_when_unshared_and_copied_when_shared() {
    let mut client = Connection::new(
        Role::Client,
        Config {
            deflate: crate::DeflateConfig {
                enabled: false,
                ..Default::default()
            },
            ..Config::default()
        },
    );
    let data: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    let read_back = |frame: crate::encode::EncodedFrame| {
        let mut server = server();
        let mut input = BytesMut::from(&frame.head()[..]);
        input.extend_from_slice(frame.body().expect("header and payload apart"));
        server.read(&mut input, &mut BytesMut::new()).unwrap()
    };
    // Unshared: the frame's payload is the caller's buffer, masked.
    let unshared = Bytes::from(data.clone());
    let at = unshared.as_ptr();
    let frame = client
        .encode_message(MessageKind::Binary, unshared)
        .unwrap();
    assert_eq!(frame.body().unwrap().as_ptr(), at, "masked where it was");
    assert_eq!(read_back(frame), Some(Event::Binary(data.clone().into())));
    // Shared: the caller's copy is left as it was.
    let shared = Bytes::from(data.clone());
    let frame = client
        .encode_message(MessageKind::Binary, shared.clone())
        .unwrap();
    assert_ne!(frame.body().unwrap().as_ptr(), shared.as_ptr());
    assert_eq!(&shared[..], &data[..], "the shared payload is untouched");
    assert_eq!(read_back(frame), Some(Event::Binary(data.into())));
}

#[test]
fn encode_message_keeps_the_compression_context_between_messages() {
    let params = |local_nct| DeflateParams {
        local_no_context_takeover: local_nct,
        remote_no_context_takeover: local_nct,
        local_max_window_bits: 15,
        threshold: 0,
        level: 1,
    };
    let mut server = server();
    server.set_deflate(params(false));
    let mut client = Connection::new(Role::Client, Config::default());
    client.set_deflate(params(false));
    let text = Bytes::from("the same words again and again ".repeat(8));
    let first = server
        .encode_message(MessageKind::Text, text.clone())
        .unwrap();
    let second = server
        .encode_message(MessageKind::Text, text.clone())
        .unwrap();
    // The second refers back to the first: much shorter.
    assert!(
        second.len() * 2 < first.len(),
        "{} vs {}",
        second.len(),
        first.len()
    );
    let mut wire = BytesMut::new();
    for frame in [first, second] {
        wire.extend_from_slice(frame.head());
        if let Some(body) = frame.body() {
            wire.extend_from_slice(body);
        }
    }
    for _ in 0..2 {
        let Ok(Some(Event::Text(got))) = client.read(&mut wire, &mut BytesMut::new()) else {
            panic!("expected text");
        };
        assert_eq!(got.as_bytes(), &text[..]);
    }
}

#[test]
fn whole_message_in_one_read_is_returned_without_copy() {
    let bytes = client_frame(true, 2, &[7u8; 1000]);
    let mut input = BytesMut::from(&bytes[..]);
    let base = input.as_ptr() as usize;
    let mut conn = server();
    let Ok(Some(Event::Binary(payload))) = conn.read(&mut input, &mut BytesMut::new()) else {
        panic!("expected a binary message");
    };
    // The payload points into the input buffer, just past the 8-byte header.
    assert_eq!(payload.as_ptr() as usize, base + 8);
    assert_eq!(&payload[..], &[7u8; 1000][..]);
}

#[test]
fn partial_header_consumes_nothing() {
    let bytes = client_frame(true, 2, &[1; 300]);
    let mut conn = server();
    for cut in 0..8 {
        let mut input = BytesMut::from(&bytes[..cut]);
        assert_eq!(conn.read(&mut input, &mut BytesMut::new()), Ok(None));
        assert_eq!(input.len(), cut);
    }
}

#[test]
fn protocol_error_stops_reading_and_sending() {
    let mut conn = server();
    let (_, err, _) = feed(&mut conn, &[0x81, 0x00]);
    assert!(err.is_some());
    let (events, err, out) = feed(&mut conn, &client_frame(true, 1, b"more"));
    assert!(events.is_empty() && err.is_none() && out.is_empty());
    assert_eq!(
        conn.send_text("x", &mut BytesMut::new()),
        Err(SendError::Closed)
    );
}

fn deflate_params() -> DeflateParams {
    DeflateParams {
        local_no_context_takeover: false,
        remote_no_context_takeover: false,
        local_max_window_bits: 15,
        threshold: 0,
        level: 6,
    }
}

fn deflate_server() -> Connection {
    let mut conn = server();
    conn.set_deflate(deflate_params());
    conn
}

/// A client frame with RSV1 set and `payload` as its (already compressed)
/// payload.
fn compressed_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = client_frame(fin, opcode, payload);
    frame[0] |= 0x40;
    frame
}

fn deflated(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    Compressor::new(&deflate_params()).compress(text, &mut out);
    out
}

#[test]
fn rsv1_on_continuation_frame_is_1002_even_with_deflate() {
    let mut bytes = compressed_frame(false, 1, &deflated(b"abc"));
    bytes.extend(compressed_frame(true, 0, b""));
    let (_, err, _) = feed(&mut deflate_server(), &bytes);
    assert_eq!(err, Some(ProtocolError::ReservedBits));
}

#[test]
fn rsv1_on_control_frame_is_1002_even_with_deflate() {
    let (_, err, out) = feed(&mut deflate_server(), &compressed_frame(true, 9, b""));
    assert_eq!(err, Some(ProtocolError::ReservedBits));
    assert_eq!(close_code_in(&out), 1002);
}

#[test]
fn compressed_messages_whole_and_fragmented_are_inflated() {
    let mut conn = deflate_server();
    let whole = deflated("héllo, compressed world".as_bytes());
    let mut bytes = compressed_frame(true, 1, &whole);
    // A fragmented compressed message: RSV1 only on the first frame.
    let second = deflated(&[7u8; 5000]);
    let (a, b) = second.split_at(second.len() / 2);
    bytes.extend(compressed_frame(false, 2, a));
    bytes.extend(client_frame(true, 9, b"ping"));
    bytes.extend(client_frame(true, 0, b));
    // And an uncompressed message on the same connection.
    bytes.extend(client_frame(true, 1, b"plain"));
    for split in [bytes.len(), 7, 1] {
        let mut conn = deflate_server();
        let mut input = BytesMut::new();
        let mut events = Vec::new();
        for piece in bytes.chunks(split) {
            input.extend_from_slice(piece);
            while let Some(event) = conn.read(&mut input, &mut BytesMut::new()).unwrap() {
                events.push(event);
            }
        }
        assert_eq!(
            events,
            vec![
                Event::Text("héllo, compressed world".into()),
                Event::Ping("ping".into()),
                Event::Binary(vec![7u8; 5000].into()),
                Event::Text("plain".into()),
            ],
            "split {split}"
        );
    }
    let _ = &mut conn;
}

#[test]
fn compressed_invalid_utf8_is_1007() {
    let bytes = compressed_frame(true, 1, &deflated(b"ok \xff not ok"));
    let (_, err, out) = feed(&mut deflate_server(), &bytes);
    assert_eq!(err, Some(ProtocolError::InvalidUtf8));
    assert_eq!(close_code_in(&out), 1007);
}

#[test]
fn corrupt_compressed_data_is_1007() {
    let bytes = compressed_frame(true, 2, &[0xff, 0xff, 0xff, 0xff, 0x01]);
    let (_, err, out) = feed(&mut deflate_server(), &bytes);
    assert_eq!(err, Some(ProtocolError::InvalidCompressedData));
    assert_eq!(close_code_in(&out), 1007);
}

#[test]
fn send_compresses_at_threshold_and_client_reads_it() {
    let mut server = Connection::new(Role::Server, Config::default());
    server.set_deflate(DeflateParams {
        threshold: 10,
        ..deflate_params()
    });
    let mut client = Connection::new(Role::Client, Config::default());
    client.set_deflate(deflate_params());
    let mut wire = BytesMut::new();
    server.send_text("short", &mut wire).unwrap();
    assert_eq!(wire[0], 0x81, "below the threshold: no RSV1");
    let long = "long message ".repeat(20);
    let before = wire.len();
    server.send_text(&long, &mut wire).unwrap();
    assert_eq!(wire[before], 0xC1, "RSV1 set");
    assert!(wire.len() - before < long.len() / 2, "compressed");
    let (events, err, _) = feed(&mut client, &wire);
    assert_eq!(err, None);
    assert_eq!(
        events,
        vec![
            Event::Text("short".into()),
            Event::Text(long.as_str().into())
        ]
    );
}

#[test]
fn message_end_names_where_a_message_arriving_in_place_will_end() {
    let mut conn = server();
    let payload = vec![7u8; 70_000];
    let frame = client_frame(true, 0x2, &payload);
    let header_len = frame.len() - payload.len();
    let mut out = BytesMut::new();
    assert_eq!(conn.message_end(), None);
    // Part of the frame: the message waits in place, its end is known.
    let mut input = BytesMut::from(&frame[..1000]);
    assert_eq!(conn.read(&mut input, &mut out).unwrap(), None);
    assert_eq!(conn.message_end(), Some(header_len + payload.len()));
    // The rest: the message is taken, nothing is awaited.
    input.extend_from_slice(&frame[1000..]);
    let event = conn.read(&mut input, &mut out).unwrap();
    assert!(matches!(event, Some(Event::Binary(data)) if data.len() == payload.len()));
    assert_eq!(conn.message_end(), None);
    // A fragmented message is gathered elsewhere: no end to announce.
    let first = client_frame(false, 0x2, &payload[..10]);
    let mut input = BytesMut::from(&first[..]);
    assert_eq!(conn.read(&mut input, &mut out).unwrap(), None);
    assert_eq!(conn.message_end(), None);
}
