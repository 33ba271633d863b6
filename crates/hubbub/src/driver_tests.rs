//! The driver, the outbox and backpressure without sockets: each test
//! serves one connection over `tokio::io::duplex` with tokio's clock paused
//! (time moves only when every task waits), and plays the client with
//! `hubbub-proto`. Nothing is ordered by sleeping.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use hubbub_proto::handshake::ClientRequest;
use hubbub_proto::{CloseCode, Connection as Proto, Event, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::handshake::Service;
use crate::hub::HubState;
use crate::task::serve_stream;
use crate::{Backpressure, CloseInfo, Decision, Error, ServerConfig, Socket, StreamInfo};

/// What the server's handlers saw.
#[derive(Default)]
struct Seen {
    closes: Vec<CloseInfo>,
    errors: Vec<String>,
}

/// One connection served over an in-memory pipe, and its client.
struct Pipe {
    client: DuplexStream,
    proto: Proto,
    input: BytesMut,
    hub: Arc<HubState>,
    seen: Arc<Mutex<Seen>>,
    task: JoinHandle<()>,
}

const ADDR: &str = "127.0.0.1:4000";

fn service(
    config: ServerConfig,
    setup: impl Fn(&mut Socket) + Send + Sync + 'static,
) -> Arc<Service> {
    Arc::new(Service {
        hub: HubState::new(None),
        protocol: Arc::new(config.protocol.clone()),
        config,
        setup: Box::new(setup),
        http: None,
        hook: None,
        started: std::sync::Once::new(),
    })
}

/// Starts serving one stream with `service`; returns the client's end.
fn serve(service: &Arc<Service>, buffer: usize) -> (DuplexStream, JoinHandle<()>) {
    let (client, server) = tokio::io::duplex(buffer);
    let addr: SocketAddr = ADDR.parse().unwrap();
    let deadline = Instant::now() + service.config.handshake_timeout;
    let task = tokio::spawn(serve_stream(
        server,
        StreamInfo::new(addr).local(addr),
        service.clone(),
        deadline,
        None,
    ));
    (client, task)
}

const REQUEST: &[u8] = b"GET /chat HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\n\r\n";

/// Reads an HTTP response head.
async fn read_head(client: &mut DuplexStream) -> String {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte).await.unwrap() == 0 {
            break;
        }
        got.push(byte[0]);
    }
    String::from_utf8(got).unwrap()
}

/// A service whose connections record their closes and errors in `Seen`,
/// then get `setup`.
fn recorded(
    config: ServerConfig,
    setup: impl Fn(&mut Socket) + Send + Sync + 'static,
) -> (Arc<Service>, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let recorder = seen.clone();
    let service = service(config, move |socket| {
        let (closes, errors) = (recorder.clone(), recorder.clone());
        socket.on_close(move |_, info| closes.lock().unwrap().closes.push(info));
        socket.on_error(move |_, e| errors.lock().unwrap().errors.push(e.to_string()));
        setup(socket);
    });
    (service, seen)
}

impl Pipe {
    /// Serves a connection with `config`; `setup` attaches handlers after
    /// the test's own recorders.
    async fn open(
        config: ServerConfig,
        buffer: usize,
        setup: impl Fn(&mut Socket) + Send + Sync + 'static,
    ) -> Self {
        let (service, seen) = recorded(config, setup);
        Self::connect(&service, seen, buffer).await
    }

    /// One more connection to `service`.
    async fn connect(service: &Arc<Service>, seen: Arc<Mutex<Seen>>, buffer: usize) -> Self {
        let hub = service.hub.clone();
        let (mut client, task) = serve(service, buffer);
        let mut request = BytesMut::new();
        let mut handshake = ClientRequest::new("localhost", "/chat");
        handshake.write(&mut request);
        client.write_all(&request).await.unwrap();
        let mut input = BytesMut::new();
        let config = hubbub_proto::Config::default();
        loop {
            if handshake
                .parse_response(&mut input, &config)
                .unwrap()
                .is_some()
            {
                break;
            }
            let n = client.read_buf(&mut input).await.unwrap();
            assert!(n > 0, "server closed during the handshake");
        }
        Self {
            client,
            proto: Proto::new(Role::Client, config),
            input,
            hub,
            seen,
            task,
        }
    }

    /// The next event from the server, or `None` at end of stream.
    async fn next(&mut self) -> Option<Event> {
        loop {
            let mut replies = BytesMut::new();
            let event = self.proto.read(&mut self.input, &mut replies).unwrap();
            if !replies.is_empty() {
                let _ = self.client.write_all(&replies).await;
            }
            if event.is_some() {
                return event;
            }
            if self.client.read_buf(&mut self.input).await.unwrap() == 0 {
                return None;
            }
        }
    }

    async fn send_text(&mut self, text: &str) {
        let mut out = BytesMut::new();
        self.proto.send_text(text, &mut out).unwrap();
        self.client.write_all(&out).await.unwrap();
    }

    /// Waits for the server's task to end; returns what `on_close` got.
    async fn ended(self) -> (CloseInfo, Arc<Mutex<Seen>>) {
        drop(self.client);
        self.task.await.unwrap();
        let seen = self.seen.lock().unwrap();
        assert_eq!(seen.closes.len(), 1, "on_close exactly once");
        (seen.closes[0].clone(), self.seen.clone())
    }
}

fn text(event: Option<Event>) -> String {
    match event {
        Some(Event::Text(text)) => text.to_string(),
        other => panic!("expected text, got {other:?}"),
    }
}

fn close_code(event: Option<Event>) -> CloseCode {
    match event {
        Some(Event::Close(Some(frame))) => frame.code,
        other => panic!("expected a close, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn echo_and_a_clean_close_from_the_client() {
    let mut pipe = Pipe::open(ServerConfig::default(), 4096, |socket| {
        socket.on_message(|conn, text| {
            let _ = conn.send(text);
        });
    })
    .await;
    pipe.send_text("hello").await;
    assert_eq!(text(pipe.next().await), "hello");
    let mut out = BytesMut::new();
    pipe.proto
        .close(Some(CloseCode::NORMAL), "bye", &mut out)
        .unwrap();
    pipe.client.write_all(&out).await.unwrap();
    assert_eq!(close_code(pipe.next().await), CloseCode::NORMAL);
    let hub = pipe.hub.clone();
    let (info, _) = pipe.ended().await;
    assert_eq!(
        (info.code, info.reason.as_str(), info.clean),
        (CloseCode::NORMAL, "bye", true)
    );
    assert_eq!(hub.clients.all().len(), 0, "left the registry");
}

/// Input that arrives while an async handler runs is held, and each of its
/// messages starts the handler again: every one must be handled, however
/// many come in one read (a handler started from held input was once left
/// unpolled until some other wake-up came).
#[tokio::test]
async fn pipelined_messages_all_reach_an_async_handler() {
    // Each handler waits for a permit the test hands out one at a time, and
    // sends nothing (a send would wake the task by itself): each handler
    // started from held input has to be polled to be woken at all.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (handled, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let permits = gate.clone();
    let mut pipe = Pipe::open(ServerConfig::default(), 64 << 10, move |socket| {
        let (gate, handled) = (permits.clone(), handled.clone());
        socket.on_message_async(move |_, text| {
            let (gate, handled) = (gate.clone(), handled.clone());
            async move {
                gate.acquire().await.unwrap().forget();
                let _ = handled.send(text.to_string());
            }
        });
    })
    .await;
    let mut burst = BytesMut::new();
    for i in 0..5 {
        pipe.proto.send_text(&format!("m{i}"), &mut burst).unwrap();
    }
    pipe.client.write_all(&burst).await.unwrap();
    for i in 0..5 {
        gate.add_permits(1);
        let text = tokio::time::timeout(Duration::from_secs(5), seen.recv())
            .await
            .expect("every pipelined message handled");
        assert_eq!(text.unwrap(), format!("m{i}"));
    }
}

#[tokio::test(start_paused = true)]
async fn keepalive_pings_a_silent_peer_whose_pongs_keep_it_open() {
    let config = ServerConfig::default()
        .with_ping_interval(Some(Duration::from_secs(30)))
        .with_idle_timeout(Some(Duration::from_secs(75)));
    let mut pipe = Pipe::open(config.clone(), 4096, |_| {}).await;
    // The sweep is the server's; started here as `accept::run` does.
    let sweep = crate::keepalive::spawn(&pipe.hub, &config);
    let start = Instant::now();
    // The client's proto answers the ping; a pong is traffic, so the
    // connection is not idle while it answers.
    assert!(matches!(pipe.next().await, Some(Event::Ping(_))));
    let first = start.elapsed();
    assert!(
        first >= Duration::from_secs(30) && first < Duration::from_secs(40),
        "{first:?}"
    );
    assert!(matches!(pipe.next().await, Some(Event::Ping(_))));
    assert!(start.elapsed() >= Duration::from_secs(60));
    sweep.abort();
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_answers_nothing_is_closed_at_the_idle_timeout() {
    let config = ServerConfig::default()
        .with_ping_interval(Some(Duration::from_secs(30)))
        .with_idle_timeout(Some(Duration::from_secs(75)));
    let mut pipe = Pipe::open(config.clone(), 4096, |_| {}).await;
    let sweep = crate::keepalive::spawn(&pipe.hub, &config);
    let start = Instant::now();
    // Raw bytes, never answered (no pong), until the close arrives.
    let mut raw = BytesMut::new();
    let mut reader = Proto::new(Role::Client, Default::default());
    let mut pings = 0;
    let code = 'read: loop {
        assert!(
            pipe.client.read_buf(&mut raw).await.unwrap() > 0,
            "no close frame"
        );
        let mut ignored = BytesMut::new();
        while let Some(event) = reader.read(&mut raw, &mut ignored).unwrap() {
            match event {
                Event::Ping(_) => pings += 1,
                Event::Close(frame) => break 'read frame.unwrap().code,
                other => panic!("{other:?}"),
            }
        }
    };
    sweep.abort();
    assert_eq!(code, CloseCode::GOING_AWAY);
    assert!(pings >= 1);
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(75) && waited < Duration::from_secs(90),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_never_answers_a_close_is_dropped_after_the_close_timeout() {
    let config = ServerConfig::default().with_close_timeout(Duration::from_secs(5));
    let mut pipe = Pipe::open(config, 4096, |socket| {
        socket.on_open(|conn| {
            let _ = conn.send("first");
            let _ = conn.close_with(4000, "done");
        });
    })
    .await;
    let start = Instant::now();
    // What was queued before the close goes out before it.
    assert_eq!(text(pipe.next().await), "first");
    // Read the close without answering it: the client's proto would echo,
    // so read raw bytes from here on.
    let mut rest = pipe.input.to_vec();
    pipe.client.read_to_end(&mut rest).await.unwrap();
    assert_eq!(&rest[..4], &[0x88, 6, 0x0f, 0xa0], "close 4000");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(5) && waited < Duration::from_secs(8),
        "{waited:?}"
    );
    let (info, _) = pipe.ended().await;
    assert_eq!(
        (info.code.0, info.reason.as_str(), info.clean),
        (4000, "done", false)
    );
}

/// One deadline covers the whole handshake: a head trickled over 6 s and a
/// hook that takes 5 s pass a 10 s timeout (each alone would not).
#[tokio::test(start_paused = true)]
async fn one_handshake_deadline_covers_the_head_and_the_hook() {
    let config = ServerConfig::default().with_handshake_timeout(Duration::from_secs(10));
    let mut service = service(config, |_| {});
    Arc::get_mut(&mut service).unwrap().hook = Some(Arc::new(|_| {
        Box::pin(async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Decision::accept()
        })
    }));
    let (mut client, task) = serve(&service, 4096);
    let start = Instant::now();
    client.write_all(&REQUEST[..20]).await.unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    client.write_all(&REQUEST[20..]).await.unwrap();
    let head = read_head(&mut client).await;
    assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(10) && waited < Duration::from_secs(11),
        "{waited:?}"
    );
    drop(client);
    task.await.unwrap();
    assert_eq!(service.hub.clients.all().len(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_silent_client_is_dropped_at_the_handshake_deadline() {
    let config = ServerConfig::default().with_handshake_timeout(Duration::from_secs(3));
    let service = service(config, |_| {});
    let (mut client, task) = serve(&service, 4096);
    let start = Instant::now();
    client.write_all(&REQUEST[..10]).await.unwrap();
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    assert!(start.elapsed() >= Duration::from_secs(3));
    task.await.unwrap();
}

/// A reader that reads nothing fills its queue: under `Close` it is closed
/// with 1008 and `on_error` says why; other connections are unaffected.
#[tokio::test(start_paused = true)]
async fn a_slow_reader_overflows_and_is_closed_under_the_close_policy() {
    let config = ServerConfig::default()
        .with_max_queue_bytes(16 * 1024)
        .with_backpressure(Backpressure::Close);
    let mut pipe = Pipe::open(config, 1024, |socket| {
        socket.on_message(|conn, _| {
            // 64 sends of 1 KiB into a 16 KiB queue, a 1 KiB pipe.
            let refused = (0..64)
                .filter(|_| conn.send("x".repeat(1024)).is_err())
                .count();
            assert!(refused > 0);
        });
    })
    .await;
    pipe.send_text("go").await;
    let mut messages = 0;
    let code = loop {
        match pipe.next().await {
            Some(Event::Text(_)) => messages += 1,
            Some(Event::Close(frame)) => break frame.unwrap().code,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(code, CloseCode::POLICY_VIOLATION);
    assert!(messages < 64, "the queue was dropped: {messages}");
    let (info, seen) = pipe.ended().await;
    assert_eq!(info.code, CloseCode::POLICY_VIOLATION);
    let errors = &seen.lock().unwrap().errors;
    assert!(
        errors.iter().any(|e| e.starts_with("send queue full")),
        "{errors:?}"
    );
}

/// Under `Refuse` the sends past the limit fail, the connection stays open,
/// everything accepted arrives in order, and `on_error` tells.
#[tokio::test(start_paused = true)]
async fn a_slow_reader_is_refused_sends_and_kept_under_the_refuse_policy() {
    let config = ServerConfig::default()
        .with_max_queue_bytes(16 * 1024)
        .with_backpressure(Backpressure::Refuse);
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let record = accepted.clone();
    let mut pipe = Pipe::open(config, 1024, move |socket| {
        let record = record.clone();
        socket.on_message(move |conn, text| {
            if text == "go" {
                for i in 0..64 {
                    let err = conn.send(format!("{i:04}{}", "x".repeat(1020)));
                    if let Err(e) = &err {
                        assert!(e.is_queue_full() && e.close_code().is_none(), "{e}");
                    } else {
                        record.lock().unwrap().push(i);
                    }
                }
            } else {
                let _ = conn.send("still here");
            }
        });
    })
    .await;
    pipe.send_text("go").await;
    // The handler made all its sends before the first one is written.
    let first = text(pipe.next().await);
    let expected = accepted.lock().unwrap().clone();
    assert!(expected.len() < 64 && expected.len() >= 14, "{expected:?}");
    assert_eq!(first[..4], format!("{:04}", expected[0]));
    for i in &expected[1..] {
        assert_eq!(text(pipe.next().await)[..4], format!("{i:04}"));
    }
    pipe.send_text("ping?").await;
    assert_eq!(text(pipe.next().await), "still here");
    assert!(
        pipe.seen
            .lock()
            .unwrap()
            .errors
            .iter()
            .any(|e| e.starts_with("send queue full"))
    );
    let mut out = BytesMut::new();
    pipe.proto
        .close(Some(CloseCode::NORMAL), "", &mut out)
        .unwrap();
    pipe.client.write_all(&out).await.unwrap();
    assert_eq!(close_code(pipe.next().await), CloseCode::NORMAL);
    let (info, _) = pipe.ended().await;
    assert!(info.clean);
}

/// The connection limit is a permit: a panicking setup, a hook refusal and
/// a dropped handshake each give their place back.
#[tokio::test(start_paused = true)]
async fn every_refusal_and_panic_gives_the_connection_slot_back() {
    let config = ServerConfig::default().with_max_connections(1);
    let service = service(config, |socket| {
        if socket.info().path() == "/panic" {
            panic!("setup blew up");
        }
    });
    for path in ["/panic", "/panic", "/ok"] {
        let (mut client, task) = serve(&service, 4096);
        let request = String::from_utf8(REQUEST.to_vec())
            .unwrap()
            .replace("/chat", path);
        client.write_all(request.as_bytes()).await.unwrap();
        let head = read_head(&mut client).await;
        let want = if path == "/ok" {
            "HTTP/1.1 101 "
        } else {
            "HTTP/1.1 500 "
        };
        assert!(head.starts_with(want), "{path}: {head}");
        if path == "/ok" {
            // The one place is taken now: a second connection gets 503.
            let (mut other, other_task) = serve(&service, 4096);
            other.write_all(REQUEST).await.unwrap();
            assert!(read_head(&mut other).await.starts_with("HTTP/1.1 503 "));
            other_task.await.unwrap();
        }
        drop(client);
        task.await.unwrap();
    }
    assert_eq!(service.hub.open(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_handler_panic_closes_with_1011_after_what_was_queued() {
    let mut pipe = Pipe::open(ServerConfig::default(), 4096, |socket| {
        socket.on_message(|conn, _| {
            let _ = conn.send("before");
            panic!("handler blew up");
        });
    })
    .await;
    pipe.send_text("x").await;
    assert_eq!(text(pipe.next().await), "before");
    assert_eq!(close_code(pipe.next().await), CloseCode::INTERNAL_ERROR);
    let (info, seen) = pipe.ended().await;
    assert_eq!(info.code, CloseCode::INTERNAL_ERROR);
    assert!(
        seen.lock()
            .unwrap()
            .errors
            .iter()
            .any(|e| e.contains("handler blew up"))
    );
}

/// A reader that stops reading is dropped after the stall timeout, even
/// while it keeps sending pings; its queue is freed at once.
#[tokio::test(start_paused = true)]
async fn a_stalled_reader_is_dropped_even_while_it_pings() {
    let config = ServerConfig::default()
        .with_stall_timeout(Some(Duration::from_secs(30)))
        .with_ping_interval(None)
        .with_idle_timeout(None);
    let mut pipe = Pipe::open(config.clone(), 1024, |socket| {
        socket.on_open(|conn| {
            let _ = conn.send_binary(vec![0u8; 64 * 1024]);
        });
    })
    .await;
    let sweep = crate::keepalive::spawn(&pipe.hub, &config);
    let start = Instant::now();
    // Pings every 5 s, never a read.
    let mut ping = BytesMut::new();
    pipe.proto.ping(b"alive", &mut ping).unwrap();
    while !pipe.task.is_finished() {
        let _ = pipe.client.write_all(&ping).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(start.elapsed() < Duration::from_secs(60), "not dropped");
    }
    sweep.abort();
    let waited = start.elapsed();
    assert!(waited >= Duration::from_secs(30), "{waited:?}");
    let hub = pipe.hub.clone();
    let (info, _) = pipe.ended().await;
    assert_eq!(info.code, CloseCode::ABNORMAL);
    assert!(info.reason.contains("stalled"), "{}", info.reason);
    assert_eq!(hub.budget.used(), 0, "its queue was freed");
}

/// Past the server-wide budget, sends are refused (the connection stays
/// open), and the sweep closes the connection holding the most bytes with
/// 1013, freeing them.
#[tokio::test(start_paused = true)]
async fn past_the_budget_sends_are_refused_and_the_largest_queue_is_evicted() {
    let config = ServerConfig::default()
        .with_max_total_queue_bytes(100 * 1024)
        .with_max_queue_bytes(1 << 20)
        .with_ping_interval(None)
        .with_idle_timeout(None)
        .with_stall_timeout(None);
    let refused = Arc::new(Mutex::new(Vec::new()));
    let record = refused.clone();
    let (service, seen) = recorded(config.clone(), move |socket| {
        let record = record.clone();
        socket.on_message(move |conn, text| {
            let size: usize = text.parse().unwrap();
            if let Err(e) = conn.send_binary(vec![0u8; size]) {
                record.lock().unwrap().push(e.is_over_budget());
            }
        });
    });
    let sweep = crate::keepalive::spawn(&service.hub, &config);
    // Two readers that never read: 70 KiB for one, then 40 KiB for the
    // other, which passes the 100 KiB budget.
    let mut big = Pipe::connect(&service, seen.clone(), 1024).await;
    let mut small = Pipe::connect(&service, seen.clone(), 1024).await;
    big.send_text("71680").await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    small.send_text("40960").await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        *refused.lock().unwrap(),
        [true],
        "the second send is refused"
    );
    // The big one is closed with 1013 and its bytes given back.
    let code = loop {
        match big.next().await {
            Some(Event::Binary(_)) => {}
            Some(Event::Close(frame)) => break frame.unwrap().code,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(code, CloseCode::TRY_AGAIN_LATER);
    assert!(
        service.hub.budget.used() < 4 * 1024,
        "{}",
        service.hub.budget.used()
    );
    // The other is still open and can be sent to again.
    small.send_text("1000").await;
    assert!(matches!(small.next().await, Some(Event::Binary(b)) if b.len() == 1000));
    sweep.abort();
}

/// The error's close code matches what happened to the connection.
#[test]
fn queue_full_close_code_follows_the_policy() {
    let closing = Error::new(crate::error::Kind::QueueFull {
        buffered: 1,
        max: 1,
        closing: true,
    });
    assert_eq!(closing.close_code(), Some(CloseCode::POLICY_VIOLATION));
}

/// A large message's memory serves the next large message on the same
/// thread once nobody holds it (the handler let it go, or its echo was
/// written), and never while somebody does.
#[tokio::test(flavor = "current_thread")]
async fn large_messages_reuse_memory_that_nobody_holds_and_only_that() {
    const SIZE: usize = 512 << 10;
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let kept = Arc::new(Mutex::new(Vec::new()));
    let keep = kept.clone();
    let mut pipe = Pipe::open(ServerConfig::default(), 64 << 10, move |socket| {
        let (seen_tx, keep) = (seen_tx.clone(), keep.clone());
        socket.on_binary(move |conn, data| {
            let _ = seen_tx.send(data.as_ptr() as usize);
            match data[0] {
                // Echo: the payload is written, then let go.
                b'e' => drop(conn.send_binary(data)),
                // Kept by the application: never to be reused.
                b'k' => keep.lock().unwrap().push(data),
                // Dropped by the handler.
                _ => drop(conn.send("ok")),
            }
        });
    })
    .await;
    let mut addresses = Vec::new();
    for first in [b'd', b'd', b'e', b'd', b'k', b'd'] {
        let mut message = vec![first; SIZE];
        message[SIZE - 1] = b'!';
        let mut out = BytesMut::new();
        pipe.proto.send_binary(&message, &mut out).unwrap();
        pipe.client.write_all(&out).await.unwrap();
        addresses.push(seen.recv().await.unwrap());
        if first != b'k' {
            match pipe.next().await {
                Some(Event::Binary(echo)) => assert_eq!(&echo[..], &message[..]),
                Some(Event::Text(ok)) => assert_eq!(ok, "ok"),
                other => panic!("expected the echo or ok, got {other:?}"),
            }
        }
    }
    // Dropped, then reused; echoed (written), then reused.
    assert_eq!(addresses[1], addresses[0], "a dropped message's memory");
    assert_eq!(addresses[2], addresses[1]);
    assert_eq!(addresses[3], addresses[2], "an echoed message's memory");
    assert_eq!(addresses[4], addresses[3]);
    // The kept message's memory is not the next one's.
    assert_ne!(addresses[5], addresses[4], "memory an application holds");
    let kept = kept.lock().unwrap();
    assert!(kept[0][..SIZE - 1].iter().all(|&b| b == b'k') && kept[0][SIZE - 1] == b'!');
}
