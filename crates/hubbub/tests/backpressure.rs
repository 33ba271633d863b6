//! Slow consumers over loopback: the queue bound and both policies.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{raw_client, start, watchdog};
use hubbub::{Backpressure, CloseCode, Connection};
use tokio::net::TcpStream;

use common::quick as cfg;

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
