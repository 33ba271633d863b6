//! The `Stream`/`Sink` view of a connection: ordered echo, both directions
//! bounded (a stream nobody polls stops the socket being read; a sink
//! whose peer does not read waits instead of failing), and how the stream
//! ends.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{client, raw_client, uncompressed_client, watchdog};
use futures_util::{SinkExt, StreamExt};
use hubbub::{Hub, Message, Server, ServerConfig, WebSocket};
use tokio::sync::mpsc;

/// A hub on its own listener whose setup hands each connection's
/// `WebSocket` to the test.
async fn start(config: ServerConfig) -> (Hub, String, mpsc::UnboundedReceiver<WebSocket>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let tx = Mutex::new(tx);
    let hub = Hub::builder().with_config(config).build(move |socket| {
        let _ = tx.lock().unwrap().send(socket.stream());
    });
    let server = Server::bind("ws://127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", server.local_addr());
    tokio::spawn(server.serve(&hub));
    (hub, url, rx)
}

#[tokio::test]
async fn echo_with_stream_and_sink_keeps_order() {
    watchdog(async {
        let (hub, url, mut sockets) = start(ServerConfig::default()).await;
        let mut client = client(&url).await;
        let mut ws = sockets.recv().await.unwrap();
        tokio::spawn(async move {
            while let Some(Ok(message)) = ws.next().await {
                ws.send(message).await.unwrap();
            }
        });
        for i in 0..200 {
            client.send(Message::from(format!("m{i}"))).await.unwrap();
        }
        client
            .send(Message::from(vec![7u8; 100_000]))
            .await
            .unwrap();
        for i in 0..200 {
            assert_eq!(
                client.next().await.unwrap().unwrap(),
                Message::from(format!("m{i}"))
            );
        }
        assert_eq!(
            client.next().await.unwrap().unwrap(),
            Message::from(vec![7u8; 100_000])
        );
        client.close().await.unwrap();
        hub.shutdown();
    })
    .await;
}

#[tokio::test]
async fn a_stream_nobody_polls_stops_reading_the_socket() {
    watchdog(async {
        let (hub, url, mut sockets) = start(ServerConfig::default()).await;
        // Uncompressed: the zeros must fill the socket buffers.
        let (mut sink, _client_stream) = uncompressed_client(&url).await.split();
        let mut ws = sockets.recv().await.unwrap();
        // 64 MiB in 256 KiB messages: far more than the socket buffers and
        // the 16-message channel hold, so the client must block.
        let payload = vec![1u8; 256 << 10];
        let sent = Arc::new(Mutex::new(0usize));
        let counter = sent.clone();
        let writer = tokio::spawn(async move {
            for _ in 0..256 {
                sink.send(Message::from(payload.clone())).await.unwrap();
                *counter.lock().unwrap() += 1;
            }
            sink
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        let stuck_at = *sent.lock().unwrap();
        assert!(stuck_at < 256, "the client was never held back");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(*sent.lock().unwrap(), stuck_at, "no progress while unread");
        // Reading resumes the flow: every message, in order, none lost.
        for _ in 0..256 {
            match ws.next().await.unwrap().unwrap() {
                Message::Binary(data) => assert_eq!(data.len(), 256 << 10),
                other => panic!("{other:?}"),
            }
        }
        let _sink = writer.await.unwrap();
        hub.shutdown();
    })
    .await;
}

#[tokio::test]
async fn a_sink_whose_peer_does_not_read_waits_within_the_queue_limit() {
    watchdog(async {
        let limit = 1 << 20;
        let (hub, url, mut sockets) = start(
            ServerConfig::default()
                .with_max_queue_bytes(limit)
                .with_stall_timeout(None),
        )
        .await;
        let mut client = uncompressed_client(&url).await;
        let mut ws = sockets.recv().await.unwrap();
        let conn = ws.connection().clone();
        let sent = Arc::new(Mutex::new(0usize));
        let counter = sent.clone();
        let writer = tokio::spawn(async move {
            for i in 0..400u32 {
                let mut data = vec![0u8; 64 << 10];
                data[..4].copy_from_slice(&i.to_be_bytes());
                ws.send(Message::Binary(data.into())).await.unwrap();
                *counter.lock().unwrap() += 1;
            }
            ws.flush().await.unwrap();
            ws
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        let stuck_at = *sent.lock().unwrap();
        assert!(stuck_at < 400, "the sink never waited");
        assert!(conn.is_open(), "waiting, not closing with 1008");
        assert!(
            conn.buffered_amount() <= limit,
            "{} bytes queued over a {limit} limit",
            conn.buffered_amount()
        );
        for i in 0..400u32 {
            match client.next().await.unwrap().unwrap() {
                Message::Binary(data) => assert_eq!(data[..4], i.to_be_bytes()),
                other => panic!("{other:?}"),
            }
        }
        let mut ws = writer.await.unwrap();
        assert_eq!(conn.buffered_amount(), 0, "flush waited for the writes");
        ws.close().await.unwrap();
        // A clean close with 1000 ends the client's stream too.
        assert!(client.next().await.is_none());
        hub.shutdown();
    })
    .await;
}

#[tokio::test]
async fn the_stream_ends_cleanly_or_says_how_it_ended() {
    watchdog(async {
        let (hub, url, mut sockets) = start(ServerConfig::default()).await;
        // A clean close: the stream ends.
        let mut client = client(&url).await;
        let mut ws = sockets.recv().await.unwrap();
        client.send(Message::from("last")).await.unwrap();
        client.close().await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::Text("last".into())
        );
        assert!(ws.next().await.is_none());
        // A drop without a close: one error saying 1006, then the end.
        let addr = url
            .trim_start_matches("ws://")
            .trim_end_matches('/')
            .parse()
            .unwrap();
        let (client, _) = raw_client(addr).await;
        let mut ws = sockets.recv().await.unwrap();
        drop(client);
        let error = ws.next().await.unwrap().unwrap_err();
        assert!(error.is_closed());
        assert_eq!(
            error.close_info().unwrap().code,
            hubbub::CloseCode::ABNORMAL
        );
        assert!(ws.next().await.is_none());
        // The sink refuses once the connection is gone.
        assert!(
            ws.send(Message::Text("late".into()))
                .await
                .unwrap_err()
                .is_closed()
        );
        hub.shutdown();
    })
    .await;
}

#[tokio::test]
async fn dropping_a_websocket_closes_its_connection() {
    watchdog(async {
        let (hub, url, mut sockets) = start(ServerConfig::default()).await;
        // The client's stream dropped: the server's stream ends cleanly.
        let dropped = client(&url).await;
        let mut ws = sockets.recv().await.unwrap();
        drop(dropped);
        assert!(ws.next().await.is_none());
        // The server's stream dropped: the client's ends cleanly too.
        let mut client = client(&url).await;
        drop(sockets.recv().await.unwrap());
        assert!(client.next().await.is_none());
        while hub.client_count() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        hub.shutdown();
    })
    .await;
}
