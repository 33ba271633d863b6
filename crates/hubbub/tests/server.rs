//! The server's API over loopback: echo, connection info, binding,
//! subprotocols. The first test keeps tokio-tungstenite as an independent
//! Rust client (with the Python and Node ones in `interop.rs`); the rest
//! use hubbub's own.

mod common;

use std::sync::{Arc, Mutex};

use common::{Peer, echo, start, watchdog};
use futures_util::{SinkExt, StreamExt};
use hubbub::Server;
use hubbub_proto::handshake::ClientRequest;
use tokio_tungstenite::tungstenite::Message;

use common::quick as cfg;

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

#[tokio::test]
async fn ipv6_wildcard_is_dual_stack() {
    watchdog(async {
        let server = Server::bind("ws://[::]:0").await.unwrap();
        let port = server.local_addr().port();
        let handle = server.handle();
        let task = tokio::spawn(server.start(echo));
        for (url, ipv4) in [
            (format!("ws://127.0.0.1:{port}/"), true),
            (format!("ws://[::1]:{port}/"), false),
        ] {
            let mut ws = Peer::connect(&url).await;
            ws.send("both").unwrap();
            assert_eq!(ws.text().await, "both");
            let conn = handle.clients().pop().unwrap();
            // An IPv4 client is named as IPv4, not as ::ffff:127.0.0.1.
            assert_eq!(conn.info().client_ip().is_ipv4(), ipv4, "{url}");
            assert!(conn.info().client_ip().is_loopback());
            ws.close().unwrap();
            while handle.client_count() > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
        handle.shutdown();
        task.await.unwrap().unwrap();
    })
    .await;
}
