//! WebSockets over HTTP/2 (RFC 8441) through a real hyper HTTP/2 server:
//! several sockets as streams of one HTTP/2 connection, in one room with a
//! socket over HTTP/1.1; the refusals the RFC names; the connection info
//! and metrics. The client here is hyper's HTTP/2 client sending extended
//! CONNECTs, with hubbub-proto's client role for the frames on each stream
//! (Node's `http2` client is the independent peer, in `interop.rs`).

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use common::stacks::{hyper_h2_server, own_listener};
use common::{Peer, watchdog};
use http_body_util::Empty;
use hubbub::{Connection, HttpVersion, Hub, ProtocolConfig};
use hubbub_proto::{Config, Event, Role};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One HTTP/2 connection to `addr` (prior knowledge, cleartext).
async fn h2_connect(addr: SocketAddr) -> SendRequest<Empty<Bytes>> {
    h2_connect_with_task(addr).await.0
}

/// One HTTP/2 connection, and a handle on its TCP socket (shutting it
/// down drops the connection under every stream).
async fn h2_connect_with_task(
    addr: SocketAddr,
) -> (SendRequest<Empty<Bytes>>, std::net::TcpStream) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let handle = tcp.into_std().unwrap();
    let socket = handle.try_clone().unwrap();
    let tcp = tokio::net::TcpStream::from_std(handle).unwrap();
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    (sender, socket)
}

/// A WebSocket on one stream of an HTTP/2 connection.
struct H2Socket {
    io: TokioIo<hyper::upgrade::Upgraded>,
    proto: hubbub_proto::Connection,
    input: BytesMut,
    /// The answer's fields.
    headers: http::HeaderMap,
}

/// An extended CONNECT on `sender` for `path` with `:protocol` (None: left
/// out) and extra fields; the socket, or the refusal's status.
async fn open(
    sender: &mut SendRequest<Empty<Bytes>>,
    authority: SocketAddr,
    path: &str,
    protocol: Option<&'static str>,
    fields: &[(&str, &str)],
) -> Result<H2Socket, u16> {
    let mut request = http::Request::builder()
        .method(http::Method::CONNECT)
        .version(http::Version::HTTP_2)
        .uri(format!("http://{authority}{path}"));
    for (name, value) in fields {
        request = request.header(*name, *value);
    }
    let mut request = request.body(Empty::new()).unwrap();
    if let Some(protocol) = protocol {
        request
            .extensions_mut()
            .insert(hyper::ext::Protocol::from_static(protocol));
    }
    sender.ready().await.unwrap();
    let response = sender.send_request(request).await.unwrap();
    if response.status() != http::StatusCode::OK {
        return Err(response.status().as_u16());
    }
    let headers = response.headers().clone();
    let upgraded = hyper::upgrade::on(response).await.unwrap();
    Ok(H2Socket {
        io: TokioIo::new(upgraded),
        proto: hubbub_proto::Connection::new(Role::Client, Config::default()),
        input: BytesMut::new(),
        headers,
    })
}

const VERSION: (&str, &str) = ("sec-websocket-version", "13");

impl H2Socket {
    async fn send(&mut self, text: &str) {
        let mut out = BytesMut::new();
        self.proto.send_text(text, &mut out).unwrap();
        self.io.write_all(&out).await.unwrap();
    }

    /// The next event from the server (pongs answered by nobody: tests
    /// send no pings).
    async fn next(&mut self) -> Event {
        loop {
            let mut replies = BytesMut::new();
            let event = self.proto.read(&mut self.input, &mut replies).unwrap();
            if !replies.is_empty() {
                self.io.write_all(&replies).await.unwrap();
            }
            if let Some(event) = event {
                return event;
            }
            assert!(
                self.io.read_buf(&mut self.input).await.unwrap() > 0,
                "the stream ended"
            );
        }
    }

    async fn text(&mut self) -> String {
        match self.next().await {
            Event::Text(text) => text.to_string(),
            other => panic!("expected text, got {other:?}"),
        }
    }
}

/// A room: every text is published to all; each connection's info is kept.
fn room(infos: Arc<Mutex<Vec<Connection>>>) -> Hub {
    // Quick: the test's HTTP/2 sockets do not answer the shutdown's close.
    Hub::builder()
        .with_config(common::quick())
        .build(move |socket| {
            let infos = infos.clone();
            socket.on_open(move |conn| {
                let _ = conn.subscribe("room");
                infos.lock().unwrap().push(conn.clone());
            });
            socket.on_message(|conn, text| {
                conn.server().publish("room", text);
            });
        })
}

#[tokio::test]
async fn two_sockets_on_one_http2_connection_chat_with_one_on_http11() {
    watchdog(async {
        let conns: Arc<Mutex<Vec<Connection>>> = Arc::default();
        let hub = room(conns.clone());
        let h2 = hyper_h2_server(&hub).await;
        let own = own_listener(&hub).await;
        let mut sender = h2_connect(h2).await;
        let mut a = open(
            &mut sender,
            h2,
            "/room?who=a",
            Some("websocket"),
            &[VERSION],
        )
        .await
        .unwrap();
        let mut b = open(
            &mut sender,
            h2,
            "/room?who=b",
            Some("websocket"),
            &[VERSION],
        )
        .await
        .unwrap();
        let mut c = Peer::connect(&format!("ws://{own}/room?who=c")).await;
        while hub.subscriber_count("room") < 3 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        a.send("from a over h2").await;
        assert_eq!(b.text().await, "from a over h2");
        assert_eq!(c.text().await, "from a over h2");
        assert_eq!(a.text().await, "from a over h2");
        c.send("from c over h1").unwrap();
        assert_eq!(a.text().await, "from c over h1");
        assert_eq!(b.text().await, "from c over h1");
        assert_eq!(c.text().await, "from c over h1");

        // What the connections know of themselves.
        let conns = conns.lock().unwrap().clone();
        let version = |who: &str| {
            conns
                .iter()
                .find(|c| c.info().query() == Some(&format!("who={who}")[..]))
                .map(|c| c.info().http_version())
                .unwrap()
        };
        assert_eq!(version("a"), HttpVersion::Http2);
        assert_eq!(version("b"), HttpVersion::Http2);
        assert_eq!(version("c"), HttpVersion::Http11);
        let a_info = conns[0].info();
        assert_eq!(a_info.path(), "/room");
        assert_eq!(a_info.request().method(), "CONNECT");
        assert_eq!(a_info.host(), Some(h2.to_string().as_str()));
        let metrics = hub.metrics();
        assert!(
            metrics.contains("hubbub_connections_opened_by_http_total{http=\"2\"} 2"),
            "{metrics}"
        );
        assert!(
            metrics.contains("hubbub_connections_opened_by_http_total{http=\"1.1\"} 1"),
            "{metrics}"
        );

        // A close on one stream ends that socket only.
        let mut out = BytesMut::new();
        a.proto
            .close(Some(hubbub::CloseCode::NORMAL), "bye", &mut out)
            .unwrap();
        a.io.write_all(&out).await.unwrap();
        assert!(matches!(a.next().await, Event::Close(_)));
        b.send("b still here").await;
        assert_eq!(b.text().await, "b still here");
        assert_eq!(c.text().await, "b still here");
        hub.shutdown();
        hub.closed().await;
    })
    .await;
}

#[tokio::test]
async fn refusals_are_the_rfcs_and_leave_the_other_streams_alone() {
    watchdog(async {
        let hub = Hub::builder()
            .with_config(
                common::quick()
                    .with_protocols(["chat"])
                    .with_protocol_config(ProtocolConfig::default()),
            )
            .build(common::echo);
        let h2 = hyper_h2_server(&hub).await;
        let mut sender = h2_connect(h2).await;
        let mut open_one = open(
            &mut sender,
            h2,
            "/",
            Some("websocket"),
            &[VERSION, ("sec-websocket-protocol", "chat")],
        )
        .await
        .unwrap();
        // The subprotocol is agreed as on HTTP/1.1; no HTTP/1.1 fields.
        assert_eq!(open_one.headers["sec-websocket-protocol"], "chat");
        assert!(open_one.headers.get("sec-websocket-accept").is_none());
        assert!(open_one.headers.get("upgrade").is_none());
        let refusals = [
            (Some("webtransport"), vec![VERSION], 501),
            (None, vec![VERSION], 400),
            (Some("websocket"), vec![], 400),
            (Some("websocket"), vec![("sec-websocket-version", "8")], 400),
        ];
        for (protocol, fields, status) in refusals {
            let got = open(&mut sender, h2, "/", protocol, &fields).await;
            assert_eq!(got.err(), Some(status), "{protocol:?} {fields:?}");
        }
        // The socket opened first still works.
        open_one.send("still open").await;
        assert_eq!(open_one.text().await, "still open");
        assert!(hub.metrics().contains("status=\"501\""));
        hub.shutdown();
        hub.closed().await;
    })
    .await;
}

/// An echo hub that records every `on_close`.
fn recorded_echo() -> (Hub, Arc<Mutex<Vec<hubbub::CloseInfo>>>) {
    let closes: Arc<Mutex<Vec<hubbub::CloseInfo>>> = Arc::default();
    let recorded = closes.clone();
    let hub = Hub::builder()
        .with_config(common::quick())
        .build(move |socket| {
            common::echo(socket);
            let recorded = recorded.clone();
            socket.on_close(move |_, info| recorded.lock().unwrap().push(info));
        });
    (hub, closes)
}

async fn wait_closes(closes: &Mutex<Vec<hubbub::CloseInfo>>, n: usize) -> Vec<hubbub::CloseInfo> {
    loop {
        {
            let closes = closes.lock().unwrap();
            if closes.len() >= n {
                return closes.clone();
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// A stream reset in the middle of a message ends that socket alone, with
/// `on_close` once (1006); the connection's other sockets go on.
#[tokio::test]
async fn a_stream_reset_mid_message_ends_only_that_socket() {
    watchdog(async {
        let (hub, closes) = recorded_echo();
        let h2 = hyper_h2_server(&hub).await;
        let mut sender = h2_connect(h2).await;
        let mut a = open(&mut sender, h2, "/", Some("websocket"), &[VERSION])
            .await
            .unwrap();
        let mut b = open(&mut sender, h2, "/", Some("websocket"), &[VERSION])
            .await
            .unwrap();
        // Half of a 1000-byte frame, then the stream is reset (dropping a
        // stream that was not finished resets it).
        let mut out = BytesMut::new();
        a.proto.send_binary(&[7u8; 1000], &mut out).unwrap();
        a.io.write_all(&out[..500]).await.unwrap();
        a.io.flush().await.unwrap();
        drop(a);
        let closed = wait_closes(&closes, 1).await;
        assert_eq!(closed[0].code, hubbub::CloseCode::ABNORMAL, "{closed:?}");
        b.send("b goes on").await;
        assert_eq!(b.text().await, "b goes on");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(closes.lock().unwrap().len(), 1, "on_close once");
        assert_eq!(hub.client_count(), 1);
        hub.shutdown();
        hub.closed().await;
    })
    .await;
}

/// The HTTP/2 connection dropped under open sockets: each one's
/// `on_close` runs once, and the hub is empty.
#[tokio::test]
async fn the_connection_lost_under_open_sockets_closes_each_once() {
    watchdog(async {
        let (hub, closes) = recorded_echo();
        let h2 = hyper_h2_server(&hub).await;
        let (mut sender, connection) = h2_connect_with_task(h2).await;
        let mut sockets = Vec::new();
        for _ in 0..5 {
            let mut ws = open(&mut sender, h2, "/", Some("websocket"), &[VERSION])
                .await
                .unwrap();
            ws.send("hi").await;
            assert_eq!(ws.text().await, "hi");
            sockets.push(ws);
        }
        assert_eq!(hub.client_count(), 5);
        connection.shutdown(std::net::Shutdown::Both).unwrap();
        let closed = wait_closes(&closes, 5).await;
        assert!(closed.iter().all(|c| !c.clean), "{closed:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(closes.lock().unwrap().len(), 5, "on_close once each");
        assert_eq!(hub.client_count(), 0);
        drop(sockets);
        hub.shutdown();
        hub.closed().await;
    })
    .await;
}
