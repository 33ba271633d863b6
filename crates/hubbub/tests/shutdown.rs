//! Graceful shutdown over loopback: 1001 to everyone, every `on_close`,
//! and the grace period for peers that never answer.

mod common;

use std::time::Duration;

use common::{Peer, echo, raw_client, start, watchdog};
use hubbub::CloseCode;

use common::quick as cfg;

#[tokio::test]
async fn shutdown_sends_1001_fires_every_on_close_and_returns() {
    watchdog(async {
        let server = start(cfg(), echo).await;
        let mut clients = Vec::new();
        for _ in 0..3 {
            clients.push(Peer::connect(&server.url("/")).await);
        }
        while server.handle.client_count() < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let readers: Vec<_> = clients
            .into_iter()
            .map(|mut ws| {
                tokio::spawn(async move {
                    // The client answers the close; its on_close has the
                    // server's code.
                    ws.closed().await.0
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
