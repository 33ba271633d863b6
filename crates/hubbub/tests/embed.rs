//! hubbub inside other stacks: a hub serving streams it did not accept
//! (an in-memory pipe, a Unix socket, a stream another stack upgraded), a
//! real hyper server and a real axum app on loopback, all sharing one hub
//! with hubbub's own listener. Refusals through axum match the built-in
//! path's status and reason, case by case.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use common::stacks::{axum_app, hyper_server, own_listener};
use common::{Event, Peer, watchdog};
use hubbub::{
    CloseCode, CloseInfo, Connection, Decision, Hub, OriginPolicy, Server, ServerConfig, Socket,
    StreamInfo, Upgraded,
};
use hubbub_proto::handshake::{AcceptResponse, RequestParser};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The seed's chat, as a setup closure over a shared client list.
fn chat(clients: Arc<Mutex<Vec<Connection>>>) -> impl Fn(&mut Socket) + Send + Sync + 'static {
    move |socket| {
        let (open, close, message) = (clients.clone(), clients.clone(), clients.clone());
        socket.on_open(move |conn| {
            let mut all = open.lock().unwrap();
            all.push(conn.clone());
            for c in all.iter() {
                let _ = c.send(if c == conn {
                    "You have just joined the conversation.".to_owned()
                } else {
                    format!("{} joined the conversation.", conn.id())
                });
            }
        });
        socket.on_close(move |conn, _| {
            let mut all = close.lock().unwrap();
            all.retain(|c| c != conn);
            for c in all.iter() {
                let _ = c.send(format!("{} left the chat room.", conn.id()));
            }
        });
        socket.on_message(move |conn, text| {
            for c in message.lock().unwrap().iter() {
                let _ = c.send(format!("{} says: {text}", conn.id()));
            }
        });
    }
}

fn echo(socket: &mut Socket) {
    socket.on_message(|conn, text| {
        let _ = conn.send(text);
    });
}

async fn connect(url: &str) -> Peer {
    Peer::connect(url).await
}

async fn next_text(client: &mut Peer) -> String {
    client.text().await
}

#[tokio::test]
async fn axum_and_own_listener_clients_chat_in_one_room() {
    watchdog(async {
        let clients: Arc<Mutex<Vec<Connection>>> = Arc::default();
        let hub = Hub::new(chat(clients.clone()));
        let via_axum = axum_app(&hub).await;
        let own = own_listener(&hub).await;

        // Plain routes of the app still work.
        let hello = reqwest_like_get(via_axum, "/hello").await;
        assert_eq!(hello, (200, "hello".to_owned()));

        let mut a = connect(&format!("ws://{via_axum}/chat")).await;
        assert_eq!(
            next_text(&mut a).await,
            "You have just joined the conversation."
        );
        let mut b = connect(&format!("ws://{own}/chat")).await;
        assert_eq!(
            next_text(&mut b).await,
            "You have just joined the conversation."
        );
        let joined = next_text(&mut a).await;
        assert!(joined.ends_with(" joined the conversation."), "{joined}");
        let b_id = joined
            .trim_end_matches(" joined the conversation.")
            .to_owned();

        b.send("hi from the own listener").unwrap();
        let expected = format!("{b_id} says: hi from the own listener");
        assert_eq!(next_text(&mut a).await, expected);
        assert_eq!(next_text(&mut b).await, expected);
        assert_eq!(hub.client_count(), 2);

        // The axum connection knows its client's address (ConnectInfo).
        let a_conn = hub
            .clients()
            .into_iter()
            .find(|c| c.id().to_string() != b_id)
            .unwrap();
        assert!(a_conn.info().client_ip().is_loopback());
        assert_eq!(a_conn.info().path(), "/chat");

        a.send("and from axum").unwrap();
        let from_a = next_text(&mut b).await;
        assert_eq!(from_a, format!("{} says: and from axum", a_conn.id()));

        a.close().unwrap();
        assert_eq!(
            next_text(&mut b).await,
            format!("{} left the chat room.", a_conn.id())
        );
        b.close().unwrap();
        hub.shutdown();
        hub.closed().await;
    })
    .await;
}

#[tokio::test]
async fn hyper_server_serves_the_hub_with_topics_shared() {
    watchdog(async {
        let hub = Hub::new(|socket| {
            socket.on_open(|conn| {
                let _ = conn.subscribe("room");
            });
            socket.on_message(|conn, text| {
                conn.server().publish("room", text);
            });
        });
        let via_hyper = hyper_server(&hub).await;
        let own = own_listener(&hub).await;
        assert_eq!(reqwest_like_get(via_hyper, "/other").await.1, "hello");
        let mut a = connect(&format!("ws://{via_hyper}/ws")).await;
        let mut b = connect(&format!("ws://{own}/")).await;
        // Both subscribed (on_open ran for each) before the publish.
        while hub.subscriber_count("room") < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        b.send("to the room").unwrap();
        assert_eq!(next_text(&mut a).await, "to the room");
        assert_eq!(next_text(&mut b).await, "to the room");
        // permessage-deflate is negotiated through hyper too.
        let conn = hub
            .clients()
            .into_iter()
            .find(|c| c.info().path() == "/ws")
            .unwrap();
        assert!(conn.info().client_ip().is_loopback());
        hub.shutdown();
        assert_eq!(a.closed().await.0, 1001);
        assert_eq!(b.closed().await.0, 1001);
        hub.closed().await;
        assert_eq!(hub.client_count(), 0);
    })
    .await;
}

#[tokio::test]
async fn any_stream_an_in_memory_pipe_and_a_unix_socket() {
    watchdog(async {
        let hub = Hub::new(echo);
        // A duplex pipe: no addresses at all.
        let (server_end, client_end) = tokio::io::duplex(4096);
        tokio::spawn(hub.serve_stream(server_end, StreamInfo::default()));
        let mut client = Peer::with_stream(
            hubbub::client::Client::new("ws://localhost/pipe"),
            client_end,
        )
        .await;
        client.send("over a pipe").unwrap();
        assert_eq!(next_text(&mut client).await, "over a pipe");
        let conn = hub.clients().pop().unwrap();
        assert_eq!(conn.info().path(), "/pipe");
        assert!(conn.info().client_ip().is_unspecified());

        // A Unix socket.
        let dir = std::env::temp_dir().join(format!("hubbub-embed-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("ws.sock");
        let _ = std::fs::remove_file(&path);
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let served = hub.clone();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            served.serve_stream(stream, StreamInfo::default()).await;
        });
        let stream = tokio::net::UnixStream::connect(&path).await.unwrap();
        let mut unix =
            Peer::with_stream(hubbub::client::Client::new("ws://localhost/unix"), stream).await;
        unix.send("over a unix socket").unwrap();
        assert_eq!(next_text(&mut unix).await, "over a unix socket");
        assert_eq!(hub.client_count(), 2);
        // A broadcast reaches both, however they came in.
        assert_eq!(hub.broadcast("to all"), 2);
        assert_eq!(next_text(&mut client).await, "to all");
        assert_eq!(next_text(&mut unix).await, "to all");
        client.close().unwrap();
        unix.close().unwrap();
        hub.shutdown();
        hub.closed().await;
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

#[tokio::test]
async fn a_stream_upgraded_elsewhere_joins_the_hub_and_limits_still_apply() {
    watchdog(async {
        let closes: Arc<Mutex<Vec<CloseInfo>>> = Arc::default();
        let recorded = closes.clone();
        let hub = Hub::builder()
            .with_config(ServerConfig::default().with_max_connections(1))
            .build(move |socket| {
                echo(socket);
                let recorded = recorded.clone();
                socket.on_close(move |_, info| recorded.lock().unwrap().push(info));
            });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // "Another stack": reads the head and answers the 101 itself.
        let other = hub.clone();
        tokio::spawn(async move {
            loop {
                let (mut stream, peer) = listener.accept().await.unwrap();
                let hub = other.clone();
                tokio::spawn(async move {
                    let mut parser = RequestParser::new(&Default::default());
                    let mut buf = BytesMut::new();
                    let request = loop {
                        stream.read_buf(&mut buf).await.unwrap();
                        if let Some(request) = parser.parse(&mut buf).unwrap() {
                            break request;
                        }
                    };
                    let accept = request.validate_upgrade().unwrap();
                    let mut head = BytesMut::new();
                    AcceptResponse::new(accept).write(&mut head);
                    stream.write_all(&head).await.unwrap();
                    hub.serve_upgraded(stream, Upgraded::new(request, peer))
                        .await;
                });
            }
        });
        let mut first = connect(&format!("ws://{addr}/adopted?x=1")).await;
        first.send("adopted").unwrap();
        assert_eq!(next_text(&mut first).await, "adopted");
        let conn = hub.clients().pop().unwrap();
        assert_eq!(conn.info().query(), Some("x=1"));
        assert!(conn.info().client_ip().is_loopback());
        // Over the connection limit: the 101 was not ours to refuse, so the
        // hub closes with 1013.
        let mut second = connect(&format!("ws://{addr}/")).await;
        assert_eq!(second.closed().await.0, 1013);
        first.close().unwrap();
        hub.shutdown();
        hub.closed().await;
        assert_eq!(
            closes.lock().unwrap().len(),
            1,
            "only the adopted one opened"
        );
    })
    .await;
}

#[tokio::test]
async fn serving_a_hub_with_a_configured_server_is_an_error() {
    let hub = Hub::new(echo);
    let server = Server::bind("ws://127.0.0.1:0")
        .await
        .unwrap()
        .with_config(ServerConfig::default());
    let error = server.serve(&hub).await.unwrap_err();
    assert!(error.is_invalid_argument(), "{error}");
    assert!(error.to_string().contains("configure the Hub"), "{error}");
}

/// A plain GET with a Content-Length answer (keep-alive or not).
async fn reqwest_like_get(addr: SocketAddr, path: &str) -> (u16, String) {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
}

/// Sends a raw request and reads one response: its status and body.
async fn exchange(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut got = Vec::new();
    let read = async {
        loop {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.unwrap_or(0);
            got.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&got).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if got.len() >= end + 4 + length || n == 0 {
                    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
                    let body = text[end + 4..].chars().take(length).collect();
                    return (status, body);
                }
            }
            if n == 0 {
                return (0, text);
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("an answer within 5 s")
}

const KEY: &str = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

fn upgrade_request(host: SocketAddr, extra: &str) -> String {
    format!(
        "GET /chat HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{extra}\r\n"
    )
}

/// A refusal case: its name, the hub's configuration, the request for a
/// host, the status expected.
type Case = (
    &'static str,
    ServerConfig,
    Box<dyn Fn(SocketAddr) -> String>,
    u16,
);

/// Every refusal the built-in path makes, through axum and through hyper:
/// same status, same one-line reason.
#[tokio::test]
async fn refusals_through_axum_and_hyper_match_the_built_in_path() {
    watchdog(async {
        let big = format!("X-Big: {}\r\n", "a".repeat(20 << 10));
        let cases: Vec<Case> = vec![
            (
                "bad version",
                ServerConfig::default(),
                Box::new(|h| upgrade_request(h, &format!("{KEY}Sec-WebSocket-Version: 8\r\n"))),
                426,
            ),
            (
                "missing key",
                ServerConfig::default(),
                Box::new(|h| upgrade_request(h, "Sec-WebSocket-Version: 13\r\n")),
                400,
            ),
            (
                "plain GET",
                ServerConfig::default(),
                Box::new(|h| format!("GET /chat HTTP/1.1\r\nHost: {h}\r\n\r\n")),
                426,
            ),
            (
                "POST",
                ServerConfig::default(),
                Box::new(|h| {
                    format!(
                        "POST /chat HTTP/1.1\r\nHost: {h}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{KEY}Sec-WebSocket-Version: 13\r\nContent-Length: 0\r\n\r\n"
                    )
                }),
                405,
            ),
            (
                "oversized head",
                ServerConfig::default(),
                Box::new(move |h| upgrade_request(h, &format!("{KEY}Sec-WebSocket-Version: 13\r\n{big}"))),
                431,
            ),
            (
                "disallowed Origin",
                ServerConfig::default().with_origins(OriginPolicy::new()),
                Box::new(|h| {
                    upgrade_request(h, &format!("{KEY}Sec-WebSocket-Version: 13\r\nOrigin: https://evil.example\r\n"))
                }),
                403,
            ),
            (
                "a DNS-rebinding name on loopback",
                ServerConfig::default(),
                Box::new(|h| {
                    upgrade_request(h, &format!("{KEY}Sec-WebSocket-Version: 13\r\n"))
                        .replace(&format!("Host: {h}"), &format!("Host: attacker.test:{}", h.port()))
                }),
                403,
            ),
            (
                "host not allowed",
                ServerConfig::default().with_allowed_hosts(hubbub::HostPolicy::Only(vec!["chat.example".into()])),
                Box::new(|_| {
                    upgrade_request("192.0.2.1:80".parse().unwrap(), &format!("{KEY}Sec-WebSocket-Version: 13\r\n")).replace("Host: 192.0.2.1:80", "Host: evil.example")
                }),
                403,
            ),
        ];
        for (name, config, request, expected) in cases {
            let hub = Hub::builder().with_config(config).build(echo);
            let own = own_listener(&hub).await;
            let via_axum = axum_app(&hub).await;
            let via_hyper = hyper_server(&hub).await;
            let built_in = exchange(own, request(own).as_bytes()).await;
            let axum = exchange(via_axum, request(via_axum).as_bytes()).await;
            let hyper = exchange(via_hyper, request(via_hyper).as_bytes()).await;
            assert_eq!(built_in.0, expected, "{name}: built-in {built_in:?}");
            assert_eq!(axum.0, expected, "{name}: axum {axum:?}");
            assert_eq!(hyper.0, expected, "{name}: hyper {hyper:?}");
            assert_eq!(axum.1, built_in.1, "{name}: the same reason");
            assert_eq!(hyper.1, built_in.1, "{name}: the same reason");
            assert_eq!(axum.1.lines().count(), 1, "{name}: one line: {:?}", axum.1);
            hub.shutdown();
        }
    })
    .await;
}

#[tokio::test]
async fn hook_and_limits_refuse_through_axum_as_on_the_built_in_path() {
    watchdog(async {
        let hub = Hub::builder()
            .with_config(
                ServerConfig::default()
                    .with_max_connections(1)
                    .with_max_connections_per_ip(Some(5)),
            )
            .with_handshake(|hs| async move {
                if hs.request.query() == Some("deny") {
                    Decision::reject(401, "log in first")
                } else {
                    Decision::accept()
                }
            })
            .build(echo);
        let own = own_listener(&hub).await;
        let via_axum = axum_app(&hub).await;
        let hook = |h: SocketAddr| {
            upgrade_request(h, &format!("{KEY}Sec-WebSocket-Version: 13\r\n"))
                .replace("GET /chat ", "GET /chat?deny ")
        };
        let built_in = exchange(own, hook(own).as_bytes()).await;
        let axum = exchange(via_axum, hook(via_axum).as_bytes()).await;
        assert_eq!((built_in.0, axum.0), (401, 401));
        assert_eq!(axum.1, built_in.1);

        // The one place is taken through axum: the next upgrade gets 503
        // on either path.
        let mut held = connect(&format!("ws://{via_axum}/chat")).await;
        held.send("x").unwrap();
        assert_eq!(held.next().await, Event::Text("x".into()));
        let ok = |h: SocketAddr| upgrade_request(h, &format!("{KEY}Sec-WebSocket-Version: 13\r\n"));
        let built_in = exchange(own, ok(own).as_bytes()).await;
        let axum = exchange(via_axum, ok(via_axum).as_bytes()).await;
        assert_eq!((built_in.0, axum.0), (503, 503));
        assert_eq!(axum.1, built_in.1);
        assert!(hub.metrics().contains("503"), "refusals are counted");
        held.close().unwrap();
        hub.shutdown();
        hub.closed().await;
    })
    .await;
}

#[tokio::test]
async fn per_address_limit_through_axum_is_429() {
    watchdog(async {
        let hub = Hub::builder()
            .with_config(ServerConfig::default().with_max_connections_per_ip(Some(1)))
            .build(echo);
        let via_axum = axum_app(&hub).await;
        let own = own_listener(&hub).await;
        let mut held = connect(&format!("ws://{own}/")).await;
        held.send("x").unwrap();
        assert_eq!(held.next().await, Event::Text("x".into()));
        let ok = upgrade_request(via_axum, &format!("{KEY}Sec-WebSocket-Version: 13\r\n"));
        let (status, reason) = exchange(via_axum, ok.as_bytes()).await;
        assert_eq!(status, 429);
        assert_eq!(reason, "too many connections from your address\n");
        hub.shutdown();
    })
    .await;
}

#[tokio::test]
async fn garbage_after_the_101_through_axum_and_hyper_gets_the_built_in_close_code() {
    watchdog(async {
        let hub = Hub::new(echo);
        let via_axum = axum_app(&hub).await;
        let via_hyper = hyper_server(&hub).await;
        let own = own_listener(&hub).await;
        let mut codes = Vec::new();
        for addr in [own, via_axum, via_hyper] {
            let (mut stream, _, response) = common::upgrade(
                addr,
                hubbub_proto::handshake::ClientRequest::new(addr.to_string(), "/chat"),
            )
            .await;
            response.unwrap();
            // An unmasked frame with a reserved opcode.
            stream.write_all(&[0x83, 0x02, b'h', b'i']).await.unwrap();
            let reply = common::read_to_end(&mut stream).await;
            let at = reply
                .iter()
                .position(|&b| b == 0x88)
                .expect("a close frame");
            codes.push(u16::from_be_bytes([reply[at + 2], reply[at + 3]]));
        }
        assert_eq!(codes, [CloseCode::PROTOCOL_ERROR.0; 3]);
        hub.shutdown();
    })
    .await;
}
