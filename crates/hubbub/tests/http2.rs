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
    // Small stream windows, a large connection window: a stream the test
    // does not read holds the server back on that stream alone.
    let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(64 * 1024)
        .initial_connection_window_size(16 << 20)
        .handshake(TokioIo::new(tcp))
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

/// `hub.serve_http2` on a listener of its own (cleartext HTTP/2 with prior
/// knowledge): hubbub's HTTP/2 limits, as on its TLS listener.
async fn own_h2_listener(hub: &Hub) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hub = hub.clone();
    let task = tokio::spawn(async move {
        loop {
            let (stream, peer) = listener.accept().await.unwrap();
            tokio::spawn(hub.serve_http2(stream, hubbub::StreamInfo::new(peer).local(addr)));
        }
    });
    (addr, task)
}

/// A raw HTTP/2 client, for what a well-behaved one never sends: frames
/// written by hand (HPACK literals without Huffman or indexing), and the
/// server's frames read back as (type, flags, stream, payload).
struct RawH2 {
    tcp: tokio::net::TcpStream,
    input: BytesMut,
}

const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const GOAWAY: u8 = 7;
const DATA: u8 = 0;

impl RawH2 {
    async fn connect(addr: SocketAddr) -> Self {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        out.extend(frame(4, 0, 0, &[])); // our (empty) SETTINGS
        tcp.write_all(&out).await.unwrap();
        Self {
            tcp,
            input: BytesMut::new(),
        }
    }

    /// An extended CONNECT for a WebSocket on `stream`, with `extra`
    /// fields; `END_HEADERS` set.
    fn connect_frame(stream: u32, extra: &[(&str, &str)]) -> Vec<u8> {
        let mut block = Vec::new();
        let fields = [
            (":method", "CONNECT"),
            (":protocol", "websocket"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "localhost"),
            ("sec-websocket-version", "13"),
        ];
        for (name, value) in fields.iter().chain(extra) {
            literal(&mut block, name, value);
        }
        frame(HEADERS, 0x4, stream, &block)
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.tcp.write_all(bytes).await.unwrap();
    }

    /// The server's next frame; `None` when the connection ended.
    async fn next(&mut self) -> Option<(u8, u8, u32, Vec<u8>)> {
        loop {
            if self.input.len() >= 9 {
                let len = (usize::from(self.input[0]) << 16)
                    | (usize::from(self.input[1]) << 8)
                    | usize::from(self.input[2]);
                if self.input.len() >= 9 + len {
                    let head = self.input.split_to(9);
                    let payload = self.input.split_to(len).to_vec();
                    let stream =
                        u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
                    return Some((head[3], head[4], stream, payload));
                }
            }
            let n = self.tcp.read_buf(&mut self.input).await.ok()?;
            if n == 0 {
                return None;
            }
        }
    }
}

/// One HTTP/2 frame.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK integer with an `n`-bit prefix after `first`'s high bits.
fn hpack_int(out: &mut Vec<u8>, first: u8, n: u32, mut value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// A literal header field without indexing, new name, no Huffman.
fn literal(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(0);
    hpack_int(out, 0, 7, name.len());
    out.extend_from_slice(name.as_bytes());
    hpack_int(out, 0, 7, value.len());
    out.extend_from_slice(value.as_bytes());
}

/// Reads frames until `done` says so or the connection ends; returns what
/// was counted per frame type and whether the connection is still open.
async fn read_frames(
    raw: &mut RawH2,
    mut done: impl FnMut(&std::collections::HashMap<u8, usize>) -> bool,
) -> (std::collections::HashMap<u8, usize>, bool) {
    let mut seen = std::collections::HashMap::new();
    while !done(&seen) {
        let Some((kind, _, _, _)) = raw.next().await else {
            return (seen, false);
        };
        *seen.entry(kind).or_insert(0) += 1;
    }
    (seen, true)
}

/// More CONNECT streams at once than an HTTP/2 connection may have: the
/// ones past the limit are refused (RST_STREAM), the ones within are
/// answered, and the connection stays up; nothing leaks when it ends.
#[tokio::test]
async fn a_flood_of_connect_streams_past_the_limit_is_refused() {
    watchdog(async {
        let (hub, closes) = recorded_echo();
        let (h2, _task) = own_h2_listener(&hub).await;
        let mut raw = RawH2::connect(h2).await;
        let over = hubbub::http2::MAX_STREAMS + 40;
        let mut out = Vec::new();
        for i in 0..over {
            out.extend(RawH2::connect_frame(1 + 2 * i, &[]));
        }
        raw.send(&out).await;
        let (seen, open) = read_frames(&mut raw, |seen| {
            seen.get(&HEADERS).copied().unwrap_or(0) + seen.get(&RST_STREAM).copied().unwrap_or(0)
                >= over as usize
        })
        .await;
        assert!(open, "the connection stays up: {seen:?}");
        let answered = seen.get(&HEADERS).copied().unwrap_or(0);
        let refused = seen.get(&RST_STREAM).copied().unwrap_or(0);
        assert!(answered <= hubbub::http2::MAX_STREAMS as usize, "{seen:?}");
        assert!(refused >= 40, "{seen:?}");
        assert!(hub.client_count() <= hubbub::http2::MAX_STREAMS as usize);
        drop(raw);
        let opened = answered;
        wait_closes(&closes, opened).await;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(closes.lock().unwrap().len(), opened, "on_close once each");
        assert_eq!(hub.client_count(), 0);
        hub.shutdown();
        hub.closed().await;
    })
    .await;
}

/// A header list past the limit (sent as HEADERS and CONTINUATION frames)
/// opens no socket; the connection's socket opened before goes on.
#[tokio::test]
async fn a_headers_bomb_opens_nothing_and_spares_the_open_socket() {
    watchdog(async {
        let (hub, _closes) = recorded_echo();
        let (h2, _task) = own_h2_listener(&hub).await;
        let mut raw = RawH2::connect(h2).await;
        raw.send(&RawH2::connect_frame(1, &[])).await;
        let (seen, _) = read_frames(&mut raw, |seen| seen.contains_key(&HEADERS)).await;
        assert_eq!(seen[&HEADERS], 1);
        // 40 fields of 1 KiB each: far past the 16 KiB header list limit,
        // in frames of at most 16 KiB.
        let mut block = Vec::new();
        for i in 0..40 {
            literal(&mut block, &format!("x-bomb-{i}"), &"b".repeat(1024));
        }
        let mut chunks = block.chunks(16 * 1024).peekable();
        let mut out = Vec::new();
        let first = chunks.next().unwrap();
        out.extend(frame(HEADERS, 0, 3, first));
        while let Some(chunk) = chunks.next() {
            let end = if chunks.peek().is_none() { 0x4 } else { 0 };
            out.extend(frame(9, end, 3, chunk)); // CONTINUATION
        }
        raw.send(&out).await;
        // The answer to stream 3: a refusal (431) or a reset, never a 200.
        let (seen, _) = read_frames(&mut raw, |seen| {
            seen.get(&HEADERS).copied().unwrap_or(0) >= 2
                || seen.contains_key(&RST_STREAM)
                || seen.contains_key(&GOAWAY)
        })
        .await;
        assert!(!seen.is_empty());
        assert_eq!(hub.client_count(), 1, "no socket for the bomb: {seen:?}");
        // Stream 1's WebSocket still echoes.
        let mut ws = hubbub_proto::Connection::new(Role::Client, Config::default());
        let mut out = BytesMut::new();
        ws.send_text("after the bomb", &mut out).unwrap();
        raw.send(&frame(DATA, 0, 1, &out)).await;
        let mut echoed = false;
        while let Some((kind, _, stream, payload)) = raw.next().await {
            if kind == DATA && stream == 1 {
                let mut input = BytesMut::from(&payload[..]);
                let mut replies = BytesMut::new();
                if let Ok(Some(Event::Text(text))) = ws.read(&mut input, &mut replies) {
                    assert_eq!(text.as_str(), "after the bomb");
                    echoed = true;
                    break;
                }
            }
        }
        assert!(echoed, "the open socket was dropped with the bomb");
        hub.shutdown();
    })
    .await;
}

/// DATA past a stream's flow-control window, to a socket whose handler
/// is busy (so nothing reads it): the stream is ended with the error
/// HTTP/2 names, its socket's `on_close` runs once, and others are served.
#[tokio::test]
async fn data_past_the_window_ends_the_stream_and_on_close_runs_once() {
    watchdog(async {
        let closes: Arc<Mutex<Vec<hubbub::CloseInfo>>> = Arc::default();
        let recorded = closes.clone();
        let hub = Hub::builder()
            .with_config(common::quick())
            .build(move |socket| {
                // "wait" keeps the handler busy for a second: the socket is
                // not read meanwhile (and the reset is seen after it).
                socket.on_message_async(|conn, text| async move {
                    if text == "wait" {
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                    let _ = conn.send(text);
                });
                let recorded = recorded.clone();
                socket.on_close(move |_, info| recorded.lock().unwrap().push(info));
            });
        let (h2, _task) = own_h2_listener(&hub).await;
        let mut raw = RawH2::connect(h2).await;
        raw.send(&RawH2::connect_frame(1, &[])).await;
        let (seen, _) = read_frames(&mut raw, |seen| seen.contains_key(&HEADERS)).await;
        assert_eq!(seen[&HEADERS], 1);
        let mut ws = hubbub_proto::Connection::new(Role::Client, Config::default());
        let mut wait = BytesMut::new();
        ws.send_text("wait", &mut wait).unwrap();
        raw.send(&frame(DATA, 0, 1, &wait)).await;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        // Four windows' worth at once, in 16 KiB DATA frames (the payload
        // of a WebSocket frame that never ends).
        let window = hubbub::http2::STREAM_WINDOW as usize;
        let mut out = Vec::new();
        let chunk = vec![0u8; 16 * 1024];
        for _ in 0..(4 * window / chunk.len()) {
            out.extend(frame(DATA, 0, 1, &chunk));
        }
        raw.send(&out).await;
        let (seen, _) = read_frames(&mut raw, |seen| {
            seen.contains_key(&RST_STREAM) || seen.contains_key(&GOAWAY)
        })
        .await;
        assert!(
            seen.contains_key(&RST_STREAM) || seen.contains_key(&GOAWAY),
            "{seen:?}"
        );
        let closed = wait_closes(&closes, 1).await;
        assert!(!closed[0].clean, "{closed:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(closes.lock().unwrap().len(), 1, "on_close once");
        // Someone else is still served.
        let mut sender = h2_connect(h2).await;
        let mut other = open(&mut sender, h2, "/", Some("websocket"), &[VERSION])
            .await
            .unwrap();
        other.send("still serving").await;
        assert_eq!(other.text().await, "still serving");
        hub.shutdown();
    })
    .await;
}

/// One socket of an HTTP/2 connection that is not read (its handler is
/// busy, or its client does not read what it is sent) holds only its own
/// stream's window: the other socket on the same connection keeps its
/// traffic both ways.
#[tokio::test]
async fn a_slow_stream_never_stalls_the_others() {
    watchdog(async {
        let gate = Arc::new(tokio::sync::Notify::new());
        let opened = gate.clone();
        let hub = Hub::builder()
            .with_config(common::quick())
            .build(move |socket| {
                let gate = opened.clone();
                socket.on_message_async(move |conn, text| {
                    let gate = gate.clone();
                    async move {
                        if text == "hold" {
                            gate.notified().await;
                        }
                        let _ = conn.send(text);
                    }
                });
                socket.on_binary(|conn, data| {
                    // "flood": 1 MiB back, far past the client's 64 KiB
                    // stream window (and within the queue's limit).
                    if data.as_ref() == b"flood" {
                        for _ in 0..16 {
                            let _ = conn.send_binary(vec![1u8; 64 << 10]);
                        }
                    }
                });
            });
        let (h2, _task) = own_h2_listener(&hub).await;
        let mut sender = h2_connect(h2).await;
        let mut slow = open(&mut sender, h2, "/", Some("websocket"), &[VERSION])
            .await
            .unwrap();
        let mut other = open(&mut sender, h2, "/", Some("websocket"), &[VERSION])
            .await
            .unwrap();
        // Inbound: the slow socket's handler holds; 200 KiB more is sent
        // to it (within its window: hyper's client waits for window
        // updates beyond).
        slow.send("hold").await;
        let mut out = BytesMut::new();
        for _ in 0..50 {
            slow.proto.send_binary(&[0u8; 4096], &mut out).unwrap();
        }
        slow.io.write_all(&out).await.unwrap();
        for i in 0..20 {
            other.send(&format!("other {i}")).await;
            assert_eq!(other.text().await, format!("other {i}"));
        }
        // Outbound: a third socket is sent 1 MiB that its client does not
        // read; the other socket's echoes still come.
        let mut deaf = open(&mut sender, h2, "/", Some("websocket"), &[VERSION])
            .await
            .unwrap();
        let mut flood = BytesMut::new();
        deaf.proto.send_binary(b"flood", &mut flood).unwrap();
        deaf.io.write_all(&flood).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        // The server holds part of it: its stream's window is full.
        let held: usize = hub.clients().iter().map(Connection::buffered_amount).sum();
        assert!(held > 0, "nothing held back for the deaf socket");
        for i in 0..20 {
            other.send(&format!("still {i}")).await;
            assert_eq!(other.text().await, format!("still {i}"));
        }
        // What the deaf socket was sent is waiting for it, in order.
        for _ in 0..16 {
            match deaf.next().await {
                Event::Binary(data) => assert_eq!(data.len(), 64 << 10),
                other => panic!("{other:?}"),
            }
        }
        // Released, the slow socket answers in order.
        gate.notify_one();
        assert_eq!(slow.text().await, "hold");
        hub.shutdown();
    })
    .await;
}

/// The client's GOAWAY says it opens no more streams; the sockets it has
/// go on (RFC 9113 §6.8) until the connection ends, and then each one's
/// `on_close` runs once.
#[tokio::test]
async fn a_goaway_from_the_client_leaves_its_sockets_open_until_the_end() {
    watchdog(async {
        let (hub, closes) = recorded_echo();
        let (h2, _task) = own_h2_listener(&hub).await;
        let mut raw = RawH2::connect(h2).await;
        raw.send(&RawH2::connect_frame(1, &[])).await;
        raw.send(&RawH2::connect_frame(3, &[])).await;
        let (seen, _) = read_frames(&mut raw, |seen| {
            seen.get(&HEADERS).copied().unwrap_or(0) >= 2
        })
        .await;
        assert_eq!(seen[&HEADERS], 2);
        // GOAWAY: last stream 0 (the server pushes none), NO_ERROR.
        raw.send(&frame(GOAWAY, 0, 0, &[0, 0, 0, 0, 0, 0, 0, 0]))
            .await;
        let mut ws = hubbub_proto::Connection::new(Role::Client, Config::default());
        let mut out = BytesMut::new();
        ws.send_text("after goaway", &mut out).unwrap();
        raw.send(&frame(DATA, 0, 3, &out)).await;
        let mut echoed = false;
        while let Some((kind, _, stream, payload)) = raw.next().await {
            if kind == DATA && stream == 3 {
                let mut input = BytesMut::from(&payload[..]);
                let mut replies = BytesMut::new();
                if let Ok(Some(Event::Text(text))) = ws.read(&mut input, &mut replies) {
                    assert_eq!(text.as_str(), "after goaway");
                    echoed = true;
                    break;
                }
            }
        }
        assert!(echoed, "a socket ended with the client's GOAWAY");
        assert_eq!(hub.client_count(), 2);
        drop(raw);
        wait_closes(&closes, 2).await;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(closes.lock().unwrap().len(), 2, "on_close once each");
        hub.shutdown();
    })
    .await;
}

/// At the hub's shutdown an HTTP/2 connection's sockets are closed with
/// 1001 and the connection itself ends (GOAWAY), so that the server's
/// shutdown does not wait on it.
#[tokio::test]
async fn shutdown_closes_the_sockets_and_ends_the_http2_connection() {
    watchdog(async {
        let (hub, closes) = recorded_echo();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let h2 = listener.local_addr().unwrap();
        let served = hub.clone();
        let connection = tokio::spawn(async move {
            let (stream, peer) = listener.accept().await.unwrap();
            served.serve_http2(stream, peer).await;
        });
        let mut sender = h2_connect(h2).await;
        let mut a = open(&mut sender, h2, "/", Some("websocket"), &[VERSION])
            .await
            .unwrap();
        a.send("hi").await;
        assert_eq!(a.text().await, "hi");
        let began = std::time::Instant::now();
        hub.shutdown();
        match a.next().await {
            Event::Close(Some(frame)) => assert_eq!(frame.code, hubbub::CloseCode::GOING_AWAY),
            other => panic!("{other:?}"),
        }
        // (`next` wrote the client's answer to the close.) The connection
        // ends although its client keeps it.
        connection.await.unwrap();
        drop((a, sender));
        assert!(began.elapsed() < std::time::Duration::from_secs(3));
        wait_closes(&closes, 1).await;
        hub.closed().await;
    })
    .await;
}

/// Inside an axum app served over HTTP/2 (cleartext, prior knowledge):
/// `hubbub::axum::Upgrade` takes the extended CONNECT too, on the same
/// route (`any`) as HTTP/1.1 upgrades.
#[tokio::test]
async fn the_axum_extractor_takes_an_http2_connect() {
    watchdog(async {
        let (hub, _closes) = recorded_echo();
        let app = common::stacks::axum_app(&hub).await;
        let mut sender = h2_connect(app).await;
        let mut ws = open(&mut sender, app, "/chat", Some("websocket"), &[VERSION])
            .await
            .unwrap();
        ws.send("through axum over h2").await;
        assert_eq!(ws.text().await, "through axum over h2");
        let conn = hub.clients().pop().unwrap();
        assert_eq!(conn.info().http_version(), HttpVersion::Http2);
        // A refusal is the RFC's, as on hyper.
        let refused = open(&mut sender, app, "/chat", Some("webtransport"), &[VERSION]).await;
        assert_eq!(refused.err(), Some(501));
        hub.shutdown();
    })
    .await;
}

/// An HTTP/2 connection that holds no socket and answers no request for
/// the handshake timeout is closed (GOAWAY, then the end); one with a
/// socket open stays.
#[tokio::test]
async fn an_idle_http2_connection_is_closed_one_with_a_socket_stays() {
    watchdog(async {
        let hub = Hub::builder()
            .with_config(
                common::quick().with_handshake_timeout(std::time::Duration::from_millis(300)),
            )
            .build(common::echo);
        let (h2, _task) = own_h2_listener(&hub).await;
        // A GET, then nothing.
        let mut idle = RawH2::connect(h2).await;
        let mut block = Vec::new();
        for (name, value) in [
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "localhost"),
        ] {
            literal(&mut block, name, value);
        }
        idle.send(&frame(HEADERS, 0x5, 1, &block)).await;
        let began = std::time::Instant::now();
        let (seen, up) = read_frames(&mut idle, |seen| seen.contains_key(&GOAWAY)).await;
        assert!(
            seen.contains_key(&HEADERS),
            "the GET was answered: {seen:?}"
        );
        assert!(up && seen.contains_key(&GOAWAY), "{seen:?}");
        assert!(began.elapsed() < std::time::Duration::from_secs(5));
        // This client answers no PING: the server drops it after the
        // close timeout instead of waiting for it.
        while idle.next().await.is_some() {}
        assert!(began.elapsed() < std::time::Duration::from_secs(5));
        // With a socket open, the connection stays past the timeout.
        let mut sender = h2_connect(h2).await;
        let mut ws = open(&mut sender, h2, "/", Some("websocket"), &[VERSION])
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
        ws.send("still here").await;
        assert_eq!(ws.text().await, "still here");
        hub.shutdown();
    })
    .await;
}
