//! The handshake hook and the Origin allow-list, over real sockets.

mod common;

use std::sync::{Arc, Mutex};

use common::{Event, Peer, start, watchdog};
use hubbub::{Accept, Decision, HostPolicy, OriginPolicy, Server, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends an upgrade request with extra header lines; returns the response
/// head.
async fn upgrade(addr: std::net::SocketAddr, extra: &str) -> String {
    upgrade_as(addr, &addr.to_string(), extra).await
}

/// As [`upgrade`], with this `Host`.
async fn upgrade_as(addr: std::net::SocketAddr, host: &str, extra: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /chat HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn origin_allow_list_answers_403_to_other_sites() {
    watchdog(async {
        let policy = OriginPolicy::new()
            .allow("https://*.example.com")
            .allow_same_origin(true)
            .allow_missing(false);
        let server = start(common::quick().with_origins(policy), common::echo).await;
        let addr = server.addr;
        let ok = |r: &str| r.starts_with("HTTP/1.1 101 ");
        assert!(ok(
            &upgrade(addr, "Origin: https://chat.example.com\r\n").await
        ));
        assert!(ok(
            &upgrade(addr, &format!("Origin: http://{addr}\r\n")).await
        ));
        let evil = upgrade(addr, "Origin: https://evil.example.net\r\n").await;
        assert!(evil.starts_with("HTTP/1.1 403 "), "{evil}");
        let missing = upgrade(addr, "").await;
        assert!(missing.starts_with("HTTP/1.1 403 "), "{missing}");
        server.stop().await;
    })
    .await;
}

/// A server built with the library's defaults refuses a cross-site page
/// (cross-site WebSocket hijacking) and accepts its own page and clients
/// without `Origin`.
#[tokio::test]
async fn default_server_refuses_cross_origin_pages() {
    watchdog(async {
        let server = start(ServerConfig::default(), common::echo).await;
        let addr = server.addr;
        let evil = upgrade(addr, "Origin: https://evil.example\r\n").await;
        assert!(evil.starts_with("HTTP/1.1 403 "), "{evil}");
        let same = upgrade(addr, &format!("Origin: http://{addr}\r\n")).await;
        assert!(same.starts_with("HTTP/1.1 101 "), "{same}");
        let none = upgrade(addr, "").await;
        assert!(none.starts_with("HTTP/1.1 101 "), "{none}");
        server.stop().await;
        let any = ServerConfig::default().with_origins(OriginPolicy::any());
        let any = start(any, common::echo).await;
        let evil = upgrade(any.addr, "Origin: https://evil.example\r\n").await;
        assert!(evil.starts_with("HTTP/1.1 101 "), "{evil}");
        any.stop().await;
    })
    .await;
}

/// DNS rebinding: a page on `attacker.test`, pointed at 127.0.0.1, is its
/// own origin ("same origin" as its `Host`), so only the `Host` check
/// refuses it: a server on loopback answers loopback names only, unless
/// told otherwise.
#[tokio::test]
async fn a_rebound_name_is_refused_on_loopback() {
    watchdog(async {
        let server = start(ServerConfig::default(), common::echo).await;
        let (addr, port) = (server.addr, server.addr.port());
        let rebound = upgrade_as(
            addr,
            &format!("attacker.test:{port}"),
            &format!("Origin: http://attacker.test:{port}\r\n"),
        )
        .await;
        assert!(rebound.starts_with("HTTP/1.1 403 "), "{rebound}");
        let local = upgrade_as(
            addr,
            &format!("localhost:{port}"),
            &format!("Origin: http://localhost:{port}\r\n"),
        )
        .await;
        assert!(local.starts_with("HTTP/1.1 101 "), "{local}");
        server.stop().await;

        // Names the operator lists are answered.
        let hosts = HostPolicy::Only(vec!["chat.test".into()]);
        let server = start(
            ServerConfig::default().with_allowed_hosts(hosts),
            common::echo,
        )
        .await;
        let listed = upgrade_as(
            server.addr,
            &format!("chat.test:{}", server.addr.port()),
            "",
        )
        .await;
        assert!(listed.starts_with("HTTP/1.1 101 "), "{listed}");
        server.stop().await;
    })
    .await;
}

#[derive(Clone, Debug, PartialEq)]
struct User(String);

#[tokio::test]
async fn hook_rejects_with_status_and_headers_or_accepts_with_extras() {
    watchdog(async {
        let server = Server::bind("ws://127.0.0.1:0")
            .await
            .unwrap()
            .with_config(common::quick().with_protocols(["v1"]))
            .with_handshake(|hs| async move {
                assert!(!hs.secure);
                assert!(hs.peer.ip().is_loopback());
                match hs
                    .request
                    .cookies()
                    .into_iter()
                    .find(|(n, _)| n == "session")
                {
                    None => Decision::Reject(
                        hubbub::HttpResponse::new(401)
                            .header("WWW-Authenticate", "Cookie")
                            .body("log in first\n"),
                    ),
                    Some((_, token)) if token == "boom" => panic!("hook bug"),
                    Some((_, token)) => Decision::Accept(
                        Accept::new()
                            .header("Set-Cookie", "seen=1")
                            .protocol("v2")
                            .data(User(token)),
                    ),
                }
            });
        let addr = server.local_addr();
        let handle = server.handle();
        let users = Arc::new(Mutex::new(Vec::new()));
        let seen = users.clone();
        let task = tokio::spawn(server.start(move |socket| {
            let seen = seen.clone();
            socket.on_open(move |conn| {
                seen.lock().unwrap().push((
                    conn.data::<User>(),
                    conn.info().protocol().map(str::to_owned),
                ));
                let _ = conn.send("welcome");
            });
        }));

        let refused = upgrade(addr, "").await;
        assert!(refused.starts_with("HTTP/1.1 401 "), "{refused}");
        assert!(refused.contains("WWW-Authenticate: Cookie"), "{refused}");
        let crashed = upgrade(addr, "Cookie: session=boom\r\n").await;
        assert!(crashed.starts_with("HTTP/1.1 500 "), "{crashed}");

        let mut ws = Peer::with(
            hubbub::client::Client::new(format!("ws://{addr}/chat"))
                .header("Cookie", "session=ada")
                .protocol("v1")
                .protocol("v2"),
        )
        .await;
        let response = ws.info().response_headers().unwrap();
        assert_eq!(response.get("set-cookie"), Some("seen=1"));
        assert_eq!(response.get("sec-websocket-protocol"), Some("v2"));
        assert_eq!(ws.info().protocol(), Some("v2"));
        assert_eq!(ws.text().await, "welcome");
        assert_eq!(
            users.lock().unwrap().clone(),
            vec![(Some(User("ada".into())), Some("v2".into()))]
        );
        handle.shutdown();
        task.await.unwrap().unwrap();
    })
    .await;
}

#[tokio::test]
async fn several_endpoints_on_one_port_each_with_its_handlers() {
    watchdog(async {
        let server = start(common::quick(), |socket| match socket.info().path() {
            "/echo" => common::echo(socket),
            "/upper" => socket.on_message(|conn, text| {
                let _ = conn.send(text.to_uppercase());
            }),
            _ => {
                let _ = socket.connection().close_with(4404, "no such endpoint");
            }
        })
        .await;
        for (path, expected) in [("/echo", "Hi"), ("/upper", "HI")] {
            let mut ws = Peer::connect(&server.url(path)).await;
            ws.send("Hi").unwrap();
            assert_eq!(ws.text().await, expected);
        }
        let mut ws = Peer::connect(&server.url("/nope")).await;
        assert_eq!(
            ws.next().await,
            Event::Close(4404, "no such endpoint".into())
        );
        server.stop().await;
    })
    .await;
}
