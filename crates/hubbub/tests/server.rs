//! The server against a real client (tokio-tungstenite) and raw sockets over
//! loopback: API, lifecycle guarantees, limits and policies.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use common::{echo, start, watchdog};
use futures_util::{SinkExt, StreamExt};
use hubbub::{Backpressure, CloseCode, Connection, Server};
use hubbub_proto::handshake::ClientRequest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as TCode;

use common::quick as cfg;

/// Opens a raw TCP connection and completes the upgrade by hand.
async fn raw_client(addr: std::net::SocketAddr) -> (TcpStream, BytesMut) {
    let (stream, buf, response) =
        common::upgrade(addr, ClientRequest::new(addr.to_string(), "/")).await;
    response.unwrap();
    (stream, buf)
}

/// Reads until the server closes the socket; returns everything read.
async fn read_to_end(stream: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let _ = stream.read_to_end(&mut all).await;
    all
}

#[tokio::test]
async fn echo_text_binary_and_connection_info() {
    watchdog(async {
        let seen = Arc::new(Mutex::new(None));
        let seen2 = seen.clone();
        let config = cfg()
            .with_protocols(["v2", "v1"])
            .with_origins(hubbub::OriginPolicy::new().allow("http://localhost"));
        let server = start(config, move |socket| {
            *seen2.lock().unwrap() = Some(socket.info().clone());
            echo(socket);
        })
        .await;
        let mut request =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
                server.url("/room/a?x=1&y=2"),
            )
            .unwrap();
        let headers = request.headers_mut();
        headers.insert("Origin", "http://localhost".parse().unwrap());
        headers.insert("Cookie", "session=abc; theme=dark".parse().unwrap());
        headers.insert("Sec-WebSocket-Protocol", "v1, v2".parse().unwrap());
        let (mut ws, response) = tokio_tungstenite::connect_async(request).await.unwrap();
        assert_eq!(response.headers()["sec-websocket-protocol"], "v1");
        ws.send(Message::text("héllo")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("héllo"));
        ws.send(Message::binary(vec![0u8, 1, 2, 255]))
            .await
            .unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::binary(vec![0u8, 1, 2, 255])
        );
        let big = vec![7u8; 1 << 20];
        ws.send(Message::binary(big.clone())).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(big));

        let info = seen.lock().unwrap().clone().unwrap();
        assert_eq!(info.path(), "/room/a");
        assert_eq!(info.query(), Some("x=1&y=2"));
        assert_eq!(info.origin(), Some("http://localhost"));
        assert_eq!(info.host(), Some(server.addr.to_string().as_str()));
        assert_eq!(info.cookie("theme"), Some("dark"));
        assert_eq!(info.requested_protocols(), ["v1", "v2"]);
        assert_eq!(info.protocol(), Some("v1"));
        assert_eq!(info.client_ip(), server.addr.ip());
        assert_ne!(info.client_port(), server.addr.port());
        assert_eq!(info.local_addr(), server.addr);
        let id = info.id().to_string();
        assert_eq!(id.len(), 36);
        assert_eq!(id, id.to_lowercase());
        assert_eq!(info.id().get_version_num(), 4);
        ws.close(None).await.unwrap();
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn bind_resolves_host_names_ipv6_and_port_zero() {
    watchdog(async {
        let server = Server::bind("ws://localhost:0").await.unwrap();
        assert!(server.local_addr().ip().is_loopback());
        assert_ne!(server.local_addr().port(), 0);
        if let Ok(v6) = Server::bind("ws://[::1]:0").await {
            assert!(v6.local_addr().is_ipv6());
        }
        let err = Server::bind("http://localhost:1").await.err().unwrap();
        assert!(err.is_invalid_argument());
        let taken = Server::bind(&format!("ws://{}", server.local_addr()))
            .await
            .err()
            .unwrap();
        assert!(taken.is_io(), "{taken}");
    })
    .await;
}

#[tokio::test]
async fn on_open_runs_before_any_message_and_messages_stay_in_order() {
    watchdog(async {
        let server = start(cfg(), |socket| {
            let opened = Arc::new(AtomicBool::new(false));
            let flag = opened.clone();
            socket.on_open(move |conn| {
                flag.store(true, Ordering::SeqCst);
                let _ = conn.send("welcome");
            });
            socket.on_message(move |conn, text| {
                assert!(opened.load(Ordering::SeqCst), "message before open");
                let _ = conn.send(text);
            });
        })
        .await;
        // Send right away: the first frame may arrive with the request.
        let (mut ws, _) = tokio_tungstenite::connect_async(server.url("/"))
            .await
            .unwrap();
        for i in 0..1000 {
            ws.feed(Message::text(i.to_string())).await.unwrap();
        }
        ws.flush().await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("welcome"));
        for i in 0..1000 {
            assert_eq!(
                ws.next().await.unwrap().unwrap(),
                Message::text(i.to_string())
            );
        }
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn on_close_once_after_clean_close_with_code_and_reason() {
    watchdog(async {
        let server = start(cfg(), echo).await;
        let (mut ws, _) = tokio_tungstenite::connect_async(server.url("/"))
            .await
            .unwrap();
        ws.close(Some(CloseFrame {
            code: TCode::from(4001),
            reason: "bye".into(),
        }))
        .await
        .unwrap();
        while ws.next().await.is_some() {}
        let closes = server.wait_closes(1).await;
        assert_eq!(closes[0].code, CloseCode(4001));
        assert_eq!(closes[0].reason, "bye");
        assert!(closes[0].clean);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(server.closes.lock().unwrap().len(), 1);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn on_close_fires_on_tcp_reset() {
    watchdog(async {
        let server = start(cfg(), echo).await;
        let (stream, _) = raw_client(server.addr).await;
        #[allow(deprecated, reason = "an abortive close is what this test needs")]
        stream.set_linger(Some(Duration::ZERO)).unwrap();
        drop(stream); // RST
        let closes = server.wait_closes(1).await;
        assert_eq!(closes[0].code, CloseCode::ABNORMAL);
        assert!(!closes[0].clean);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn protocol_error_closes_with_1002_and_fires_on_close() {
    watchdog(async {
        let errors = Arc::new(AtomicUsize::new(0));
        let counted = errors.clone();
        let server = start(cfg(), move |socket| {
            let counted = counted.clone();
            socket.on_error(move |_, e| {
                assert!(e.is_protocol());
                counted.fetch_add(1, Ordering::SeqCst);
            });
        })
        .await;
        let (mut stream, _) = raw_client(server.addr).await;
        stream.write_all(b"\x81\x02hi").await.unwrap(); // unmasked
        let reply = read_to_end(&mut stream).await;
        assert_eq!(&reply[..4], b"\x88\x1c\x03\xea"); // close 1002
        let closes = server.wait_closes(1).await;
        assert_eq!(closes[0].code, CloseCode::PROTOCOL_ERROR);
        assert_eq!(errors.load(Ordering::SeqCst), 1);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn message_over_limit_closes_with_1009() {
    watchdog(async {
        let config = cfg()
            .with_protocol_config(hubbub::ProtocolConfig::default().with_max_message_size(1000));
        let server = start(config, echo).await;
        let (mut ws, _) = tokio_tungstenite::connect_async(server.url("/"))
            .await
            .unwrap();
        ws.send(Message::binary(vec![0u8; 2000])).await.unwrap();
        match ws.next().await.unwrap().unwrap() {
            Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 1009),
            other => panic!("expected close, got {other:?}"),
        }
        let closes = server.wait_closes(1).await;
        assert_eq!(closes[0].code, CloseCode::MESSAGE_TOO_BIG);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn panicking_handler_closes_only_its_connection_with_1011() {
    watchdog(async {
        let server = start(cfg(), |socket| {
            socket.on_message(|conn, text| {
                if text == "boom" {
                    panic!("handler exploded");
                }
                let _ = conn.send(text);
            });
        })
        .await;
        let (mut bad, _) = tokio_tungstenite::connect_async(server.url("/"))
            .await
            .unwrap();
        let (mut good, _) = tokio_tungstenite::connect_async(server.url("/"))
            .await
            .unwrap();
        bad.send(Message::text("boom")).await.unwrap();
        match bad.next().await.unwrap().unwrap() {
            Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 1011),
            other => panic!("expected close, got {other:?}"),
        }
        good.send(Message::text("still here")).await.unwrap();
        assert_eq!(
            good.next().await.unwrap().unwrap(),
            Message::text("still here")
        );
        let closes = server.wait_closes(1).await;
        assert_eq!(closes[0].code, CloseCode::INTERNAL_ERROR);
        server.stop().await;
    })
    .await;
}

/// Events that arrive in one read: what the handlers send goes out in the
/// order of the events, around the protocol's own answers (a pong) and
/// ahead of the close that a panic causes.
#[tokio::test]
async fn sends_pongs_and_a_panic_close_keep_the_order_of_one_read() {
    watchdog(async {
        let server = start(cfg(), |socket| {
            socket.on_message(|conn, text| {
                let _ = conn.send(format!("echo {text}"));
                if text == "boom" {
                    panic!("handler exploded after a send");
                }
            });
        })
        .await;
        let (mut ws, _) = tokio_tungstenite::connect_async(server.url("/"))
            .await
            .unwrap();
        // One flush: the server reads these together.
        ws.feed(Message::text("a")).await.unwrap();
        ws.feed(Message::Ping("p".into())).await.unwrap();
        ws.feed(Message::text("b")).await.unwrap();
        ws.feed(Message::text("boom")).await.unwrap();
        ws.feed(Message::text("never")).await.unwrap();
        ws.flush().await.unwrap();
        let mut got = Vec::new();
        loop {
            match ws.next().await.unwrap().unwrap() {
                Message::Text(text) => got.push(text.to_string()),
                Message::Pong(data) => got.push(format!("pong {}", String::from_utf8_lossy(&data))),
                Message::Close(Some(frame)) => {
                    got.push(format!("close {}", u16::from(frame.code)));
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(
            got,
            ["echo a", "pong p", "echo b", "echo boom", "close 1011"]
        );
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn shutdown_sends_1001_fires_every_on_close_and_returns() {
    watchdog(async {
        let server = start(cfg(), echo).await;
        let mut clients = Vec::new();
        for _ in 0..3 {
            clients.push(
                tokio_tungstenite::connect_async(server.url("/"))
                    .await
                    .unwrap()
                    .0,
            );
        }
        while server.handle.client_count() < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let readers: Vec<_> = clients
            .into_iter()
            .map(|mut ws| {
                tokio::spawn(async move {
                    let code = match ws.next().await {
                        Some(Ok(Message::Close(Some(frame)))) => u16::from(frame.code),
                        other => panic!("expected close, got {other:?}"),
                    };
                    // Keep reading so that the client's close reply is sent.
                    while ws.next().await.is_some() {}
                    code
                })
            })
            .collect();
        let closes = server.closes.clone();
        server.stop().await;
        for reader in readers {
            assert_eq!(reader.await.unwrap(), 1001);
        }
        let closes = closes.lock().unwrap();
        assert_eq!(closes.len(), 3);
        assert!(
            closes
                .iter()
                .all(|c| c.code == CloseCode::GOING_AWAY && c.clean),
            "{closes:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn shutdown_drops_connections_that_never_answer_after_grace() {
    watchdog(async {
        let config = cfg().with_shutdown_grace(Duration::from_millis(200));
        let server = start(config, echo).await;
        let (_silent, _) = raw_client(server.addr).await; // never reads or answers
        while server.handle.client_count() < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let closes = server.closes.clone();
        server.stop().await;
        let closes = closes.lock().unwrap();
        assert_eq!(closes.len(), 1);
        assert_eq!(closes[0].code, CloseCode::GOING_AWAY);
        assert!(!closes[0].clean);
    })
    .await;
}

#[tokio::test]
async fn async_handler_never_blocks_other_connections() {
    watchdog(async {
        let gate = Arc::new(tokio::sync::Notify::new());
        let gate2 = gate.clone();
        let server = start(cfg(), move |socket| {
            let gate = gate2.clone();
            socket.on_message_async(move |conn, text| {
                let gate = gate.clone();
                async move {
                    if text == "wait" {
                        gate.notified().await;
                        let _ = conn.send("released");
                    } else {
                        gate.notify_one();
                        let _ = conn.send(text);
                    }
                }
            });
        })
        .await;
        let (mut a, _) = tokio_tungstenite::connect_async(server.url("/"))
            .await
            .unwrap();
        let (mut b, _) = tokio_tungstenite::connect_async(server.url("/"))
            .await
            .unwrap();
        a.send(Message::text("wait")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        // If A's pending handler blocked B, B would never be answered and
        // A never released.
        b.send(Message::text("go")).await.unwrap();
        assert_eq!(b.next().await.unwrap().unwrap(), Message::text("go"));
        assert_eq!(a.next().await.unwrap().unwrap(), Message::text("released"));
        server.stop().await;
    })
    .await;
}

/// Sends 16 KiB messages to a client that never reads, until the queue
/// limit answers.
async fn fill_queue(conn: &Connection) -> hubbub::Error {
    let payload = bytes::Bytes::from(vec![b'x'; 16 * 1024]);
    for _ in 0..100_000 {
        if let Err(e) = conn.send_binary(payload.clone()) {
            return e;
        }
        tokio::task::yield_now().await;
    }
    panic!("queue never filled");
}

/// A server with a 256 KiB queue limit and one client that never reads:
/// the server, its handle to the client, and the client's socket.
async fn slow_consumer(policy: Backpressure) -> (common::TestServer, Connection, TcpStream) {
    let config = cfg()
        .with_max_queue_bytes(256 * 1024)
        .with_backpressure(policy);
    let conns: Arc<Mutex<Vec<Connection>>> = Arc::default();
    let registry = conns.clone();
    let server = start(config, move |socket| {
        registry.lock().unwrap().push(socket.connection().clone());
    })
    .await;
    let (stream, _) = raw_client(server.addr).await;
    while conns.lock().unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let conn = conns.lock().unwrap()[0].clone();
    (server, conn, stream)
}

#[tokio::test]
async fn overflow_policy_refuse_keeps_connection_and_bounds_queue() {
    watchdog(async {
        let (server, conn, _stream) = slow_consumer(Backpressure::Refuse).await;
        let err = fill_queue(&conn).await;
        assert!(err.is_queue_full(), "{err}");
        assert!(conn.is_open());
        assert!(conn.buffered_amount() <= 256 * 1024);
        assert!(
            conn.send_binary(vec![0u8; 16 * 1024])
                .unwrap_err()
                .is_queue_full()
        );
        // Small control frames still fit.
        conn.ping("p").unwrap();
        assert!(server.closes.lock().unwrap().is_empty());
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn overflow_policy_close_closes_slow_connection_with_1008() {
    watchdog(async {
        let (server, conn, _stream) = slow_consumer(Backpressure::Close).await;
        let err = fill_queue(&conn).await;
        assert!(err.is_queue_full(), "{err}");
        assert!(!conn.is_open());
        assert!(conn.send("more").unwrap_err().is_closed());
        let closes = server.wait_closes(1).await;
        assert_eq!(closes[0].code, CloseCode::POLICY_VIOLATION);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn send_after_close_is_an_error_not_a_panic() {
    watchdog(async {
        // What the handler saw, checked outside it: a panic inside a
        // handler is caught (and the close already asked for would still
        // go out), so an assert there could not fail the test.
        let results = Arc::new(Mutex::new(Vec::new()));
        let record = results.clone();
        let server = start(cfg(), move |socket| {
            let record = record.clone();
            socket.on_message(move |conn, _| {
                let mut results = record.lock().unwrap();
                results.push(conn.close_with(4000, "done").is_ok());
                results.push(conn.send("late").is_err_and(|e| e.is_closed()));
                results.push(conn.close().is_err_and(|e| e.is_closed()));
                results.push(
                    conn.close_with(1005, "")
                        .is_err_and(|e| e.is_invalid_argument()),
                );
            });
        })
        .await;
        let (mut ws, _) = tokio_tungstenite::connect_async(server.url("/"))
            .await
            .unwrap();
        ws.send(Message::text("x")).await.unwrap();
        match ws.next().await.unwrap().unwrap() {
            Message::Close(Some(frame)) => {
                assert_eq!(u16::from(frame.code), 4000);
                assert_eq!(frame.reason.as_str(), "done");
            }
            other => panic!("expected close, got {other:?}"),
        }
        let closes = server.wait_closes(1).await;
        assert_eq!(closes[0].code, CloseCode(4000));
        assert_eq!(*results.lock().unwrap(), [true; 4]);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn silent_client_is_dropped_after_handshake_timeout() {
    watchdog(async {
        let config = cfg().with_handshake_timeout(Duration::from_millis(200));
        let server = start(config, echo).await;
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
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
        let (_first, _) = tokio_tungstenite::connect_async(server.url("/"))
            .await
            .unwrap();
        let err = tokio_tungstenite::connect_async(server.url("/"))
            .await
            .unwrap_err();
        match err {
            tokio_tungstenite::tungstenite::Error::Http(response) => {
                assert_eq!(response.status(), 503)
            }
            other => panic!("expected HTTP 503, got {other:?}"),
        }
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn bad_handshakes_get_their_status() {
    watchdog(async {
        let server = start(cfg(), echo).await;
        for (request, status) in [
            ("GET / HTTP/1.1\r\nHost: x\r\n\r\n", "426"),
            (
                "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
                "426",
            ),
            (
                "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
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
        let (mut ws, _) = tokio_tungstenite::connect_async(server.url("/"))
            .await
            .unwrap();
        // Silent, but reading: tungstenite answers each ping with a pong.
        let mut pings = 0;
        let until = tokio::time::Instant::now() + Duration::from_millis(1200);
        while let Ok(next) = tokio::time::timeout_at(until, ws.next()).await {
            match next {
                Some(Ok(Message::Ping(_))) => pings += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(pings >= 3, "only {pings} pings");
        assert!(
            server.closes.lock().unwrap().is_empty(),
            "a live client was closed"
        );
        ws.send(Message::text("still open")).await.unwrap();
        loop {
            match ws.next().await.unwrap().unwrap() {
                Message::Ping(_) => continue,
                other => {
                    assert_eq!(other, Message::text("still open"));
                    break;
                }
            }
        }
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

#[tokio::test]
async fn subprotocol_order_and_requirement_are_configurable() {
    watchdog(async {
        async fn negotiate(
            config: hubbub::ServerConfig,
            offer: &str,
        ) -> Result<Option<String>, u16> {
            let server = start(config, echo).await;
            let mut request = ClientRequest::new(server.addr.to_string(), "/");
            for protocol in offer.split(", ").filter(|p| !p.is_empty()) {
                request = request.protocol(protocol);
            }
            let result = match common::upgrade(server.addr, request).await.2 {
                Ok(response) => Ok(response.protocol),
                Err(hubbub_proto::handshake::ClientHandshakeError::Status(status)) => Err(status),
                Err(e) => panic!("{e}"),
            };
            server.stop().await;
            result
        }
        let server_list = || cfg().with_protocols(["v3", "v2"]);
        assert_eq!(
            negotiate(server_list(), "v1, v2, v3").await,
            Ok(Some("v2".into()))
        );
        let by_server = server_list().with_protocol_order(hubbub::ProtocolOrder::Server);
        assert_eq!(
            negotiate(by_server, "v1, v2, v3").await,
            Ok(Some("v3".into()))
        );
        assert_eq!(negotiate(server_list(), "v9").await, Ok(None));
        assert_eq!(
            negotiate(server_list().with_require_protocol(true), "v9").await,
            Err(400)
        );
        assert_eq!(
            negotiate(server_list().with_require_protocol(true), "").await,
            Err(400)
        );
    })
    .await;
}

async fn http_status_of_upgrade(url: &str) -> u16 {
    match tokio_tungstenite::connect_async(url).await {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn per_ip_connection_limit_answers_429() {
    watchdog(async {
        let server = start(cfg().with_max_connections_per_ip(Some(2)), echo).await;
        let (a, _) = tokio_tungstenite::connect_async(server.url("/"))
            .await
            .unwrap();
        let (_b, _) = tokio_tungstenite::connect_async(server.url("/"))
            .await
            .unwrap();
        assert_eq!(http_status_of_upgrade(&server.url("/")).await, 429);
        drop(a);
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
        let (mut ws, _) = tokio_tungstenite::connect_async(server.url("/"))
            .await
            .unwrap();
        for i in 0..20 {
            let _ = ws.feed(Message::text(i.to_string())).await;
        }
        let _ = ws.flush().await;
        let mut echoed = 0;
        let code = loop {
            match ws.next().await {
                Some(Ok(Message::Text(_))) => echoed += 1,
                Some(Ok(Message::Close(Some(frame)))) => break u16::from(frame.code),
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

/// A handler's send is written at once even when the next event's async
/// handler is still running: a send made while events are delivered does
/// not wake the connection (the driver drains it itself), so the driver must
/// not go to sleep on an async handler with such sends queued.
#[tokio::test]
async fn a_send_before_a_slow_async_handler_is_not_held_back_by_it() {
    watchdog(async {
        let server = start(cfg(), |socket| {
            socket.on_message(|conn, text| {
                let _ = conn.send(format!("got {text}"));
            });
            // Sends nothing itself: nothing else wakes the connection
            // until it is done.
            socket.on_binary_async(|_, _| async move {
                tokio::time::sleep(Duration::from_millis(1500)).await;
            });
        })
        .await;
        let (mut ws, _) = tokio_tungstenite::connect_async(server.url("/"))
            .await
            .unwrap();
        // One write: the second text waits behind the first slow handler,
        // then is delivered together with the second binary.
        for message in [
            Message::text("a"),
            Message::binary(vec![1]),
            Message::text("b"),
            Message::binary(vec![2]),
        ] {
            ws.feed(message).await.unwrap();
        }
        ws.flush().await.unwrap();
        let began = std::time::Instant::now();
        let mut got = Vec::new();
        while got.len() < 2 {
            if let Some(Ok(Message::Text(t))) = ws.next().await {
                got.push((t.to_string(), began.elapsed()));
            }
        }
        assert_eq!(got[0].0, "got a");
        assert_eq!(got[1].0, "got b");
        // Right after the first slow handler, not after the second.
        assert!(
            got[1].1 < Duration::from_millis(2500),
            "\"got b\" took {:?}",
            got[1].1
        );
    })
    .await;
}
