//! Limits and timeouts over loopback: handshake timeout, connection
//! limits, bad handshakes, keepalive, per-address and message rates.

mod common;

use std::time::Duration;

use common::{Event, Peer, echo, raw_client, read_to_end, start, watchdog};
use hubbub::CloseCode;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use common::quick as cfg;

#[tokio::test]
async fn silent_client_is_dropped_after_handshake_timeout() {
    watchdog(async {
        let config = cfg().with_handshake_timeout(Duration::from_millis(200));
        let server = start(config, echo).await;
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n")
            .await
            .unwrap();
        let started = std::time::Instant::now();
        assert!(read_to_end(&mut stream).await.is_empty());
        assert!(started.elapsed() < Duration::from_secs(5));
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn upgrades_past_max_connections_get_503() {
    watchdog(async {
        let server = start(cfg().with_max_connections(1), echo).await;
        let _first = Peer::connect(&server.url("/")).await;
        assert_eq!(http_status_of_upgrade(&server.url("/")).await, 503);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn bad_handshakes_get_their_status() {
    watchdog(async {
        let server = start(cfg(), echo).await;
        for (request, status) in [
            ("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", "426"),
            (
                "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
                "426",
            ),
            (
                "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n\r\n",
                "400",
            ),
        ] {
            let mut stream = TcpStream::connect(server.addr).await.unwrap();
            stream.write_all(request.as_bytes()).await.unwrap();
            let reply = String::from_utf8(read_to_end(&mut stream).await).unwrap();
            assert!(reply.starts_with(&format!("HTTP/1.1 {status} ")), "{reply}");
        }
        let mut huge = TcpStream::connect(server.addr).await.unwrap();
        let head = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
        let _ = huge.write_all(head.as_bytes()).await;
        let reply = String::from_utf8_lossy(&read_to_end(&mut huge).await).into_owned();
        assert!(reply.starts_with("HTTP/1.1 431 "), "{reply}");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn keepalive_pings_silent_clients_and_keeps_answering_ones() {
    watchdog(async {
        let config = cfg()
            .with_ping_interval(Some(Duration::from_millis(100)))
            .with_idle_timeout(Some(Duration::from_millis(400)));
        let server = start(config, echo).await;
        let mut ws = Peer::connect(&server.url("/")).await;
        // Silent, but reading: the client answers each ping with a pong.
        let mut pings = 0;
        let until = tokio::time::Instant::now() + Duration::from_millis(1200);
        while let Ok(next) = tokio::time::timeout_at(until, ws.next()).await {
            match next {
                Event::Ping(_) => pings += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(pings >= 3, "only {pings} pings");
        assert!(
            server.closes.lock().unwrap().is_empty(),
            "a live client was closed"
        );
        ws.send("still open").unwrap();
        assert_eq!(ws.text().await, "still open");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn dead_client_is_closed_after_idle_timeout() {
    watchdog(async {
        let config = cfg()
            .with_ping_interval(Some(Duration::from_millis(100)))
            .with_idle_timeout(Some(Duration::from_millis(300)));
        let server = start(config, echo).await;
        let (_silent, _) = raw_client(server.addr).await; // never reads, never answers
        let started = std::time::Instant::now();
        let closes = server.wait_closes(1).await;
        assert_eq!(closes[0].code, CloseCode::GOING_AWAY);
        assert_eq!(closes[0].reason, "idle timeout");
        assert!(!closes[0].clean);
        assert!(started.elapsed() < Duration::from_secs(5));
        server.stop().await;
    })
    .await;
}

/// The status of an upgrade's answer: 101, or the refusal's.
async fn http_status_of_upgrade(url: &str) -> u16 {
    match hubbub::client::Client::new(url).connect(|_| {}).await {
        Ok(session) => {
            session.close().unwrap();
            session.closed().await;
            101
        }
        Err(e) => e.status().unwrap_or_else(|| panic!("{e}")),
    }
}

#[tokio::test]
async fn per_ip_connection_limit_answers_429() {
    watchdog(async {
        let server = start(cfg().with_max_connections_per_ip(Some(2)), echo).await;
        let a = Peer::connect(&server.url("/")).await;
        let _b = Peer::connect(&server.url("/")).await;
        assert_eq!(http_status_of_upgrade(&server.url("/")).await, 429);
        a.close().unwrap();
        server.wait_closes(1).await;
        assert_eq!(http_status_of_upgrade(&server.url("/")).await, 101);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn per_ip_handshake_rate_answers_429() {
    watchdog(async {
        let limit = hubbub::RateLimit::new(0.5, 3);
        let server = start(cfg().with_handshake_rate_per_ip(Some(limit)), echo).await;
        for _ in 0..3 {
            assert_eq!(http_status_of_upgrade(&server.url("/")).await, 101);
        }
        assert_eq!(http_status_of_upgrade(&server.url("/")).await, 429);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn message_rate_limit_closes_with_1008() {
    watchdog(async {
        let server = start(
            cfg().with_message_rate(Some(hubbub::RateLimit::new(1.0, 5))),
            echo,
        )
        .await;
        let mut ws = Peer::connect(&server.url("/")).await;
        for i in 0..20 {
            ws.send(i.to_string()).unwrap();
        }
        let mut echoed = 0;
        let code = loop {
            match ws.next().await {
                Event::Text(_) => echoed += 1,
                Event::Close(code, _) => break code,
                other => panic!("unexpected {other:?}"),
            }
        };
        assert_eq!(code, 1008);
        assert_eq!(echoed, 5, "the burst is served, then the connection closes");
        let closes = server.wait_closes(1).await;
        assert_eq!(closes[0].code, CloseCode::POLICY_VIOLATION);
        server.stop().await;
    })
    .await;
}
