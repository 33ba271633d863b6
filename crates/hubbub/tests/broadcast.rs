//! Broadcast under load: every client receives every message exactly once,
//! each sender's messages in order, and a client that stops reading is
//! handled by the backpressure policy without delaying the others.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use common::{start, watchdog};
use hubbub::{Backpressure, CloseCode, Connection, ServerConfig};
use hubbub_proto::handshake::ClientRequest;
use hubbub_proto::{Config, Connection as Proto, Event, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A small client on `hubbub-proto`'s client role.
struct Client {
    stream: TcpStream,
    proto: Proto,
    input: BytesMut,
    out: BytesMut,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Self {
        Self::upgrade(TcpStream::connect(addr).await.unwrap(), addr).await
    }

    /// The opening handshake on a connected stream.
    async fn upgrade(stream: TcpStream, addr: SocketAddr) -> Self {
        let (stream, input, response) =
            common::upgrade_on(stream, ClientRequest::new(addr.to_string(), "/")).await;
        response.unwrap();
        Self {
            stream,
            proto: Proto::new(Role::Client, Config::default()),
            input,
            out: BytesMut::new(),
        }
    }

    /// A client whose socket takes little before the server must queue:
    /// a 4 KiB receive buffer.
    async fn connect_narrow(addr: SocketAddr) -> Self {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        Self::upgrade(socket.connect(addr).await.unwrap(), addr).await
    }

    async fn send(&mut self, text: &str) {
        self.proto.send_text(text, &mut self.out).unwrap();
        self.stream.write_all(&self.out).await.unwrap();
        self.out.clear();
    }

    /// The next event, or `None` when the server closed the connection.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.proto.read(&mut self.input, &mut self.out).unwrap() {
                if !self.out.is_empty() {
                    let _ = self.stream.write_all(&self.out).await;
                    self.out.clear();
                }
                return Some(event);
            }
            if self.stream.read_buf(&mut self.input).await.unwrap_or(0) == 0 {
                return None;
            }
        }
    }
}

/// A relay: every text message goes to every client, sender included.
fn relay(socket: &mut hubbub::Socket) {
    socket.on_message(|conn, text| {
        conn.server().broadcast(text);
    });
}

#[tokio::test]
async fn five_senders_to_500_clients_exactly_once_in_order() {
    const CLIENTS: usize = 500;
    const SENDERS: usize = 5;
    const PER_SENDER: usize = 200;
    watchdog(async {
        let server = start(common::quick(), relay).await;
        let mut clients = Vec::new();
        for _ in 0..CLIENTS {
            clients.push(Client::connect(server.addr).await);
        }
        while server.handle.client_count() < CLIENTS {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut senders: Vec<Client> = clients.drain(..SENDERS).collect();
        let mut readers = Vec::new();
        for mut client in clients {
            readers.push(tokio::spawn(async move {
                let mut next_seq = [0usize; SENDERS];
                for _ in 0..SENDERS * PER_SENDER {
                    let Some(Event::Text(text)) = client.next().await else {
                        panic!("expected a text message");
                    };
                    let (sender, seq) = text.split_once(':').unwrap();
                    let (sender, seq): (usize, usize) =
                        (sender.parse().unwrap(), seq.parse().unwrap());
                    assert_eq!(
                        seq, next_seq[sender],
                        "sender {sender} out of order or duplicated"
                    );
                    next_seq[sender] += 1;
                }
                next_seq
            }));
        }
        // Each sender writes its messages and also reads everything.
        let mut sending = Vec::new();
        for (id, mut sender) in senders.drain(..).enumerate() {
            sending.push(tokio::spawn(async move {
                for seq in 0..PER_SENDER {
                    sender.send(&format!("{id}:{seq}")).await;
                }
                let mut count = 0;
                while count < SENDERS * PER_SENDER {
                    if let Some(Event::Text(_)) = sender.next().await {
                        count += 1;
                    }
                }
                count
            }));
        }
        for task in sending {
            assert_eq!(task.await.unwrap(), SENDERS * PER_SENDER);
        }
        for reader in readers {
            assert_eq!(reader.await.unwrap(), [PER_SENDER; SENDERS]);
        }
        server.stop().await;
    })
    .await;
}

/// Queues of `max_queue_bytes` under `policy`, and short close and
/// shutdown waits (stalled clients never answer a close).
fn bounded(max_queue_bytes: usize, policy: Backpressure) -> ServerConfig {
    ServerConfig::default()
        .with_max_queue_bytes(max_queue_bytes)
        .with_backpressure(policy)
        .with_close_timeout(Duration::from_millis(300))
        .with_shutdown_grace(Duration::from_millis(300))
}

/// Reads up to `messages` texts numbered `0 …` (the number, a space, the
/// rest) and checks they come in order; returns how many came before the
/// end.
async fn read_in_order(mut client: Client, messages: usize) -> usize {
    let mut got = 0;
    while got < messages {
        match client.next().await {
            Some(Event::Text(text)) => {
                let seq: usize = text[..text.find(' ').unwrap()].parse().unwrap();
                assert_eq!(seq, got, "lost or reordered");
                got += 1;
            }
            Some(_) => {}
            None => break,
        }
    }
    got
}

/// Ten readers and one client that never reads; 2,000 broadcasts of 4 KiB
/// (8 MB, more than the kernel's socket buffers can hide).
async fn slow_reader_among_fast(
    policy: Backpressure,
) -> (Vec<usize>, Connection, Client, common::TestServer) {
    const READERS: usize = 10;
    const MESSAGES: usize = 2000;
    let config = bounded(128 * 1024, policy);
    let registry: Arc<Mutex<Vec<Connection>>> = Arc::default();
    let seen = registry.clone();
    let server = start(config, move |socket| {
        seen.lock().unwrap().push(socket.connection().clone())
    })
    .await;
    let stalled = Client::connect(server.addr).await;
    while server.handle.client_count() < 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stalled_conn = registry.lock().unwrap()[0].clone();
    let mut readers = Vec::new();
    for _ in 0..READERS {
        let client = Client::connect(server.addr).await;
        readers.push(tokio::spawn(read_in_order(client, MESSAGES)));
    }
    while server.handle.client_count() < READERS + 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The publisher keeps pace with the readers that do read (as a real
    // one would, watching `buffered_amount`), never with the stalled one.
    let fast: Vec<Connection> = server
        .handle
        .clients()
        .into_iter()
        .filter(|c| c != &stalled_conn)
        .collect();
    let padding = "x".repeat(4096);
    let mut delivered = 0;
    for seq in 0..MESSAGES {
        while fast.iter().any(|c| c.buffered_amount() > 64 * 1024) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        delivered += server.handle.broadcast(format!("{seq} {padding}"));
    }
    let mut counts = Vec::new();
    for reader in readers {
        counts.push(reader.await.unwrap());
    }
    // The stalled client missed some: its queue hit the limit.
    assert!(delivered < (READERS + 1) * MESSAGES, "nothing was refused");
    (counts, stalled_conn, stalled, server)
}

#[tokio::test]
async fn slow_reader_is_closed_with_1008_while_others_get_everything() {
    watchdog(async {
        let (counts, stalled, _client, server) = slow_reader_among_fast(Backpressure::Close).await;
        assert!(counts.iter().all(|&c| c == 2000), "{counts:?}");
        assert!(!stalled.is_open());
        // It never answers the close: it ends at the close timeout, maybe
        // after the ten readers, which drop their connections (1006) once
        // they have everything.
        let closes = server.wait_closes(11).await;
        let by_code: HashMap<u16, usize> = closes.iter().fold(HashMap::new(), |mut m, c| {
            *m.entry(c.code.0).or_default() += 1;
            m
        });
        assert_eq!(
            by_code.get(&CloseCode::POLICY_VIOLATION.0),
            Some(&1),
            "{closes:?}"
        );
        assert_eq!(by_code.get(&1006), Some(&10), "{closes:?}");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn slow_reader_has_sends_refused_while_others_get_everything() {
    watchdog(async {
        let (counts, stalled, _client, server) = slow_reader_among_fast(Backpressure::Refuse).await;
        assert!(counts.iter().all(|&c| c == 2000), "{counts:?}");
        // Readers that finished may have gone; nobody was closed for policy.
        let closes = server.closes.lock().unwrap().clone();
        assert!(
            closes.iter().all(|c| c.code != CloseCode::POLICY_VIOLATION),
            "{closes:?}"
        );
        assert!(stalled.is_open());
        assert!(stalled.buffered_amount() <= 128 * 1024);
        assert!(
            stalled
                .send("x".repeat(200_000))
                .unwrap_err()
                .is_queue_full()
        );
        server.stop().await;
    })
    .await;
}

/// Reads the next whole frame's RSV1 bit and the event it carries.
async fn next_with_rsv1(client: &mut Client) -> (Event, bool) {
    loop {
        if let Ok(Some((header, len))) = hubbub_proto::FrameHeader::parse(&client.input) {
            if client.input.len() >= len + header.payload_len as usize {
                let event = client.next().await.expect("an event");
                return (event, header.rsv1);
            }
        }
        assert!(client.stream.read_buf(&mut client.input).await.unwrap() > 0);
    }
}

#[tokio::test]
async fn compressed_broadcast_reaches_deflate_and_plain_clients() {
    compressed_broadcast(hubbub::DeflateConfig::default()).await;
}

#[tokio::test]
async fn compressed_broadcast_with_context_takeover_on_both_sides() {
    // Each receiver then gets its own compressor, and the client keeps its
    // decompression context across messages.
    let mut deflate = hubbub::DeflateConfig::default();
    deflate.server_no_context_takeover = false;
    deflate.client_no_context_takeover = false;
    compressed_broadcast(deflate).await;
}

async fn compressed_broadcast(deflate: hubbub::DeflateConfig) {
    let keeps_context = !deflate.server_no_context_takeover;
    watchdog(async {
        let config = common::quick()
            .with_protocol_config(hubbub::ProtocolConfig::default().with_deflate(deflate));
        let server = start(config, relay).await;
        let mut clients = Vec::new();
        for deflate in [true, true, false] {
            let mut request = ClientRequest::new(server.addr.to_string(), "/");
            if deflate {
                request = request.extension("permessage-deflate; client_max_window_bits");
            }
            let (stream, input, response) = common::upgrade(server.addr, request).await;
            let response = response.unwrap();
            let mut proto = Proto::new(Role::Client, Config::default());
            match response.extensions.first() {
                Some(answer) => {
                    assert!(deflate);
                    let params = hubbub_proto::deflate::client_params(answer, 64).unwrap();
                    assert_eq!(
                        params.remote_no_context_takeover, !keeps_context,
                        "{answer:?}"
                    );
                    proto.set_deflate(params);
                }
                None => assert!(!deflate, "deflate was not negotiated"),
            }
            clients.push((
                Client {
                    stream,
                    proto,
                    input,
                    out: BytesMut::new(),
                },
                deflate,
            ));
        }
        while server.handle.client_count() < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let text = "compress me, compress me, compress me! ".repeat(50);
        for round in 0..3 {
            let text = format!("{round} {text}");
            assert_eq!(server.handle.broadcast(text.clone()), 3);
            for (client, deflate) in &mut clients {
                let (event, rsv1) = next_with_rsv1(client).await;
                assert_eq!(event, Event::Text(text.as_str().into()));
                assert_eq!(rsv1, *deflate, "compressed exactly for the deflate clients");
            }
        }
        // Short messages stay uncompressed (the default threshold is 64).
        server.handle.broadcast("short");
        for (client, _) in &mut clients {
            let (event, rsv1) = next_with_rsv1(client).await;
            assert_eq!(event, Event::Text("short".into()));
            assert!(!rsv1);
        }
        // A deflate client's compressed message is inflated and relayed.
        let (sender, _) = &mut clients[0];
        sender.proto.send_text(&text, &mut sender.out).unwrap();
        sender.stream.write_all(&sender.out).await.unwrap();
        sender.out.clear();
        for (client, _) in &mut clients {
            let (event, _) = next_with_rsv1(client).await;
            assert_eq!(event, Event::Text(text.as_str().into()));
        }
        server.stop().await;
    })
    .await;
}

/// A thousand subscribers of one topic, a tenth of which never read: 256
/// publishes of 4 KiB (1 MiB each, past what the kernel's buffers of a
/// stalled socket hold). The publisher paces itself on the readers only.
/// Returns what each reader got, the stalled connections, their clients
/// (kept open) and the server.
async fn stalled_tenth_of_a_thousand(
    policy: Backpressure,
) -> (Vec<usize>, Vec<Connection>, Vec<Client>, common::TestServer) {
    const SUBSCRIBERS: usize = 1000;
    const STALLED: usize = 100;
    const MESSAGES: usize = 256;
    let config = bounded(64 * 1024, policy);
    let opened: Arc<Mutex<Vec<Connection>>> = Arc::default();
    let seen = opened.clone();
    // Small socket buffers on both sides (inherited from the listener,
    // and the clients'), so that what a stalled client does not read piles
    // up in its queue rather than in the kernel (whose send buffer on
    // loopback starts at megabytes).
    let listener = tokio::net::TcpSocket::new_v4().unwrap();
    listener.set_send_buffer_size(16 * 1024).unwrap();
    listener.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = listener.listen(1024).unwrap();
    let server = hubbub::Server::from_listener(listener).unwrap();
    let server = common::start_on(server, config, move |socket| {
        socket.connection().subscribe("room").unwrap();
        seen.lock().unwrap().push(socket.connection().clone());
    })
    .await;
    // The stalled ones first, so that their connections are known.
    let mut stalled_clients = Vec::new();
    for _ in 0..STALLED {
        stalled_clients.push(Client::connect_narrow(server.addr).await);
    }
    while opened.lock().unwrap().len() < STALLED {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stalled: Vec<Connection> = opened.lock().unwrap().clone();
    let mut readers = Vec::new();
    for _ in 0..SUBSCRIBERS - STALLED {
        let client = Client::connect(server.addr).await;
        readers.push(tokio::spawn(read_in_order(client, MESSAGES)));
    }
    while server.handle.subscriber_count("room") < SUBSCRIBERS {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let fast: Vec<Connection> = server
        .handle
        .subscribers("room")
        .into_iter()
        .filter(|c| !stalled.contains(c))
        .collect();
    assert_eq!(fast.len(), SUBSCRIBERS - STALLED);
    let padding = "x".repeat(4096);
    let mut delivered = 0;
    for seq in 0..MESSAGES {
        while fast.iter().any(|c| c.buffered_amount() > 32 * 1024) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        delivered += server.handle.publish("room", format!("{seq} {padding}"));
    }
    let mut counts = Vec::new();
    for reader in readers {
        counts.push(reader.await.unwrap());
    }
    // Every reader's publishes were taken; the stalled ones missed some.
    assert!(delivered >= (SUBSCRIBERS - STALLED) * MESSAGES);
    assert!(delivered < SUBSCRIBERS * MESSAGES, "nothing was refused");
    (counts, stalled, stalled_clients, server)
}

#[tokio::test]
async fn a_tenth_of_1000_subscribers_never_reading_are_closed_and_the_rest_get_everything() {
    watchdog(async {
        let (counts, stalled, _clients, server) =
            stalled_tenth_of_a_thousand(Backpressure::Close).await;
        assert_eq!(counts.len(), 900);
        assert!(counts.iter().all(|&c| c == 256), "a reader missed some");
        // Each stalled one is closed by the policy (1008) and ends at the
        // close timeout, since it never answers.
        let policy_closes = || {
            server
                .closes
                .lock()
                .unwrap()
                .iter()
                .filter(|c| c.code == CloseCode::POLICY_VIOLATION)
                .count()
        };
        while policy_closes() < 100 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(policy_closes(), 100);
        assert!(stalled.iter().all(|c| !c.is_open()));
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_tenth_of_1000_subscribers_never_reading_have_publishes_refused_within_their_bound() {
    watchdog(async {
        let (counts, stalled, _clients, server) =
            stalled_tenth_of_a_thousand(Backpressure::Refuse).await;
        assert!(counts.iter().all(|&c| c == 256), "a reader missed some");
        let closes = server.closes.lock().unwrap().clone();
        assert!(
            closes.iter().all(|c| c.code != CloseCode::POLICY_VIOLATION),
            "{closes:?}"
        );
        for conn in &stalled {
            assert!(conn.is_open());
            assert!(conn.buffered_amount() <= 64 * 1024 + 4200);
        }
        // Still subscribed, still refusing what does not fit.
        assert!(server.handle.subscriber_count("room") >= 100);
        assert!(
            stalled[0]
                .send("x".repeat(100_000))
                .unwrap_err()
                .is_queue_full()
        );
        server.stop().await;
    })
    .await;
}
