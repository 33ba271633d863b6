//! The bad-input suite: handshake abuse and frame violations a hardened
//! server must survive. Each case asserts the HTTP status or close code, and
//! afterwards a well-behaved client ("the canary") is still served.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{echo, start, watchdog};
use hubbub::CloseCode;
use hubbub_proto::handshake::ClientRequest;
use hubbub_proto::{FrameHeader, OpCode, apply_mask};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const UPGRADE: &str = "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

/// Sends raw bytes and reads what comes back until the server closes.
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(bytes).await;
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut reply)).await;
    reply
}

fn status(reply: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(reply);
    text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// Upgrades by hand, then sends `frames`; returns the close code the
/// server sent.
async fn close_code_for(addr: SocketAddr, frames: &[u8]) -> Option<u16> {
    replies_to(addr, frames)
        .await
        .into_iter()
        .find(|(opcode, payload)| *opcode == OpCode::Close && payload.len() >= 2)
        .map(|(_, payload)| u16::from_be_bytes([payload[0], payload[1]]))
}

/// Upgrades by hand, then sends `frames`; returns every frame the server
/// sent until it closed the connection.
async fn replies_to(addr: SocketAddr, frames: &[u8]) -> Vec<(OpCode, Vec<u8>)> {
    let (mut stream, input, response) =
        common::upgrade(addr, ClientRequest::new(addr.to_string(), "/")).await;
    response.unwrap();
    let _ = stream.write_all(frames).await;
    let mut reply = input.to_vec();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut reply)).await;
    let mut at = 0;
    let mut replies = Vec::new();
    while let Ok(Some((header, len))) = FrameHeader::parse(&reply[at..]) {
        let payload = &reply[at + len..at + len + header.payload_len as usize];
        replies.push((header.opcode, payload.to_vec()));
        at += len + header.payload_len as usize;
    }
    replies
}

/// Builds a masked frame whose first byte is `b0`.
fn frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    let key = [9, 8, 7, 6];
    let mut header = FrameHeader {
        mask: Some(key),
        ..FrameHeader::new(OpCode::Binary, payload.len() as u64)
    }
    .encode()
    .as_bytes()
    .to_vec();
    header[0] = b0;
    let start = header.len();
    header.extend_from_slice(payload);
    apply_mask(&mut header[start..], key, 0);
    header
}

async fn canary_is_served(url: &str) {
    let mut ws = common::Peer::connect(url).await;
    ws.send("still fine").unwrap();
    assert_eq!(ws.text().await, "still fine");
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

#[tokio::test]
async fn handshake_abuse_gets_the_right_status() {
    watchdog(async {
        let server = start(common::quick(), echo).await;
        let addr = server.addr;
        let many_headers: String = (0..200).map(|i| format!("X-{i}: v\r\n")).collect();
        let cases: Vec<(&str, String, u16)> = vec![
            (
                "version 8",
                UPGRADE.replace("Version: 13", "Version: 8") + "\r\n",
                426,
            ),
            (
                "short key",
                UPGRADE.replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ=") + "\r\n",
                400,
            ),
            (
                "HTTP/1.0",
                UPGRADE.replace("HTTP/1.1", "HTTP/1.0") + "\r\n",
                400,
            ),
            ("POST", UPGRADE.replace("GET", "POST") + "\r\n", 405),
            (
                "oversized header",
                format!("{UPGRADE}X-Big: {}\r\n\r\n", "a".repeat(20_000)),
                431,
            ),
            ("200 headers", format!("{UPGRADE}{many_headers}\r\n"), 431),
            (
                "not HTTP",
                "\x16\x03\x01\x02\x00\x01\x00\x01\x7f\x03\x03\r\n\r\n".to_owned(),
                400,
            ),
            (
                "no Upgrade",
                "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_owned(),
                426,
            ),
        ];
        for (name, request, expected) in cases {
            let reply = exchange(addr, request.as_bytes()).await;
            assert_eq!(
                status(&reply),
                expected,
                "{name}: {}",
                String::from_utf8_lossy(&reply)
            );
        }
        canary_is_served(&server.url("/")).await;
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn slowloris_and_silent_connections_are_dropped_at_the_handshake_timeout() {
    watchdog(async {
        let config = common::quick().with_handshake_timeout(Duration::from_millis(400));
        let server = start(config, echo).await;
        let started = std::time::Instant::now();
        let silent = tokio::spawn(exchange(server.addr, b""));
        let mut slow = TcpStream::connect(server.addr).await.unwrap();
        let mut dropped = false;
        for byte in UPGRADE.bytes() {
            if slow.write_all(&[byte]).await.is_err() {
                dropped = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            if started.elapsed() > Duration::from_secs(3) {
                break;
            }
        }
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), slow.read_to_end(&mut rest)).await;
        assert!(
            dropped || rest.is_empty(),
            "slowloris got an answer: {rest:?}"
        );
        assert!(silent.await.unwrap().is_empty());
        assert!(started.elapsed() < Duration::from_secs(4));
        canary_is_served(&server.url("/")).await;
        server.stop().await;
    })
    .await;
}

/// A message the handler answered goes out before the close that a
/// protocol error later in the same read causes (Autobahn 4.2.3, 5.15).
#[tokio::test]
async fn answers_to_earlier_messages_precede_the_protocol_error_close() {
    watchdog(async {
        let server = start(common::quick(), echo).await;
        let mut input = frame(0x81, b"first");
        input.extend(frame(0x81, b"second"));
        input.extend(frame(0x83, b"reserved opcode"));
        let replies = replies_to(server.addr, &input).await;
        let kinds: Vec<_> = replies
            .iter()
            .map(|(opcode, payload)| match opcode {
                OpCode::Close => format!("close {}", u16::from_be_bytes([payload[0], payload[1]])),
                _ => format!("{opcode:?} {}", String::from_utf8_lossy(payload)),
            })
            .collect();
        assert_eq!(kinds, ["Text first", "Text second", "close 1002"]);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn frame_violations_get_the_right_close_code() {
    watchdog(async {
        let config = common::quick()
            .with_protocol_config(hubbub::ProtocolConfig::default().with_max_message_size(1 << 20));
        let server = start(config, echo).await;
        let addr = server.addr;
        let mut overflow = vec![0x82, 0xFF];
        overflow.extend_from_slice(&u64::MAX.to_be_bytes());
        overflow.extend_from_slice(&[0; 4]);
        let mut huge = vec![0x82, 0xFF];
        huge.extend_from_slice(&(1u64 << 30).to_be_bytes());
        huge.extend_from_slice(&[0; 4]);
        let mut reason = 1000u16.to_be_bytes().to_vec();
        reason.extend_from_slice(b"\xff\xfe");
        let cases: Vec<(&str, Vec<u8>, u16)> = vec![
            ("unmasked", b"\x81\x02hi".to_vec(), 1002),
            ("RSV2", frame(0xA1, b"x"), 1002),
            ("RSV1 without deflate", frame(0xC1, b"x"), 1002),
            ("reserved opcode", frame(0x83, b""), 1002),
            ("close 1005", frame(0x88, &1005u16.to_be_bytes()), 1002),
            ("close 999", frame(0x88, &999u16.to_be_bytes()), 1002),
            ("close of 1 byte", frame(0x88, &[3]), 1002),
            ("close reason not UTF-8", frame(0x88, &reason), 1007),
            ("length overflow", overflow, 1002),
            ("frame over the limit", huge, 1009),
            ("invalid UTF-8", frame(0x81, b"\xc0\xaf"), 1007),
            ("continuation first", frame(0x80, b"x"), 1002),
            ("fragmented ping", frame(0x09, b"x"), 1002),
        ];
        for (name, bytes, expected) in cases {
            assert_eq!(close_code_for(addr, &bytes).await, Some(expected), "{name}");
        }
        canary_is_served(&server.url("/")).await;
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn fragment_flood_is_refused_with_bounded_memory() {
    watchdog(async {
        let config = common::quick()
            .with_protocol_config(hubbub::ProtocolConfig::default().with_max_message_size(1 << 20));
        let server = start(config, echo).await;
        // 100,000 empty fragments, then 2 MiB in one-byte fragments: the
        // empty ones cost nothing, the rest is refused at the 1 MiB limit.
        let mut flood = frame(0x02, b"");
        for _ in 0..100_000 {
            flood.extend(frame(0x00, b""));
        }
        for _ in 0..(2 << 20) {
            flood.extend(frame(0x00, b"z"));
        }
        let before = rss_bytes();
        assert_eq!(close_code_for(server.addr, &flood).await, Some(1009));
        let grown = rss_bytes().saturating_sub(before);
        assert!(grown < 8 << 20, "server grew by {grown} bytes");
        canary_is_served(&server.url("/")).await;
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn abrupt_reset_mid_frame_fires_on_close_and_others_continue() {
    watchdog(async {
        let server = start(common::quick(), echo).await;
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream
            .write_all(format!("{UPGRADE}\r\n").as_bytes())
            .await
            .unwrap();
        let mut head = vec![0u8; 512];
        let _ = stream.read(&mut head).await.unwrap();
        // Half a frame, then a reset.
        let partial = frame(0x82, &[7u8; 1000]);
        stream.write_all(&partial[..500]).await.unwrap();
        #[allow(deprecated, reason = "an abortive close is what this test needs")]
        stream.set_linger(Some(Duration::ZERO)).unwrap();
        drop(stream);
        let closes = server.wait_closes(1).await;
        assert_eq!(closes[0].code, CloseCode::ABNORMAL);
        canary_is_served(&server.url("/")).await;
        server.stop().await;
    })
    .await;
}
