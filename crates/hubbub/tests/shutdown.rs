//! Graceful shutdown over loopback: 1001 to everyone, every `on_close`,
//! and the grace period for peers that never answer.

mod common;

use std::time::Duration;

use common::{echo, raw_client, start, watchdog};
use futures_util::StreamExt;
use hubbub::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use common::quick as cfg;

#[tokio::test]
async fn shutdown_sends_1001_fires_every_on_close_and_returns() {
    watchdog(async {
        let server = start(cfg(), echo).await;
        let mut clients = Vec::new();
        for _ in 0..3 {
            clients.push(
                tokio_tungstenite::connect_async(server.url("/"))
                    .await
                    .unwrap()
                    .0,
            );
        }
        while server.handle.client_count() < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let readers: Vec<_> = clients
            .into_iter()
            .map(|mut ws| {
                tokio::spawn(async move {
                    let code = match ws.next().await {
                        Some(Ok(Message::Close(Some(frame)))) => u16::from(frame.code),
                        other => panic!("expected close, got {other:?}"),
                    };
                    // Keep reading so that the client's close reply is sent.
                    while ws.next().await.is_some() {}
                    code
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
