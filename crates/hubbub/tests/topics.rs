//! Registry, topics and user data through the public API, with real clients.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{client, start, watchdog};
use futures_util::{SinkExt, StreamExt};
use hubbub::{Connection, Message};

type Ws = hubbub::WebSocket;

async fn next_text(ws: &mut Ws) -> String {
    match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
        Ok(Some(Ok(Message::Text(text)))) => text.to_string(),
        other => panic!("expected text, got {other:?}"),
    }
}

/// Nothing arrives within a short while.
async fn silent(ws: &mut Ws) {
    let got = tokio::time::timeout(Duration::from_millis(150), ws.next()).await;
    assert!(got.is_err(), "unexpected {got:?}");
}

#[derive(Clone, Debug, PartialEq)]
struct Nick(String);

#[derive(Clone, Debug, PartialEq)]
struct UserId(u64);

#[tokio::test]
async fn topics_publish_except_unsubscribe_and_cleanup_on_close() {
    watchdog(async {
        let conns: Arc<Mutex<Vec<Connection>>> = Arc::default();
        let seen = conns.clone();
        // Each client subscribes to the topics named in its first message.
        let server = start(common::quick(), move |socket| {
            seen.lock().unwrap().push(socket.connection().clone());
            socket.on_message(|conn, text| {
                for topic in text.split(',') {
                    conn.subscribe(topic).unwrap();
                }
                conn.send("subscribed").unwrap();
            });
        })
        .await;
        let mut a = client(&server.url("/")).await;
        let mut b = client(&server.url("/")).await;
        a.send(Message::from("news,sport")).await.unwrap();
        b.send(Message::from("news")).await.unwrap();
        assert_eq!(next_text(&mut a).await, "subscribed");
        assert_eq!(next_text(&mut b).await, "subscribed");
        let handle = server.handle.clone();
        assert_eq!(handle.subscriber_count("news"), 2);
        assert_eq!(handle.subscriber_count("sport"), 1);

        assert_eq!(handle.publish("news", "headline"), 2);
        assert_eq!(next_text(&mut a).await, "headline");
        assert_eq!(next_text(&mut b).await, "headline");
        assert_eq!(handle.publish("sport", Message::from("goal")), 1);
        assert_eq!(next_text(&mut a).await, "goal");
        silent(&mut b).await;

        let conn_a = conns.lock().unwrap()[0].clone();
        assert_eq!(handle.publish_except("news", "not for a", &conn_a), 1);
        assert_eq!(next_text(&mut b).await, "not for a");
        assert!(conn_a.unsubscribe("news"));
        assert!(!conn_a.unsubscribe("news"));
        assert_eq!(conn_a.topics(), ["sport"]);
        assert_eq!(handle.publish("news", "after unsubscribe"), 1);
        assert_eq!(next_text(&mut b).await, "after unsubscribe");
        silent(&mut a).await;

        assert_eq!(handle.broadcast_except("all but a", &conn_a), 1);
        assert_eq!(handle.broadcast("all"), 2);
        assert_eq!(next_text(&mut b).await, "all but a");
        assert_eq!(next_text(&mut b).await, "all");
        assert_eq!(next_text(&mut a).await, "all");
        assert_eq!(handle.client_count(), 2);

        // Closing drops the subscriptions.
        a.close().await.unwrap();
        server.wait_closes(1).await;
        assert_eq!(handle.subscriber_count("sport"), 0);
        assert!(!handle.topics().contains(&"sport".to_owned()));
        assert_eq!(handle.client_count(), 1);
        assert!(conn_a.subscribe("late").unwrap_err().is_closed());
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn typed_user_data_per_connection() {
    watchdog(async {
        let server = start(common::quick(), |socket| {
            let conn = socket.connection();
            conn.set_data(Nick("anonymous".into()));
            conn.set_data(UserId(7));
            socket.on_message(|conn, text| {
                conn.set_data(Nick(text.to_string()));
                let nick = conn.data::<Nick>().unwrap();
                let id = conn.data::<UserId>().unwrap();
                let missing = conn.data::<String>();
                conn.send(format!("{} {} {:?}", nick.0, id.0, missing))
                    .unwrap();
                assert!(conn.remove_data::<UserId>());
                assert_eq!(conn.data::<UserId>(), None);
                conn.with_data(|id: Option<&mut Nick>| id.unwrap().0.push('!'));
                conn.send(conn.data::<Nick>().unwrap().0).unwrap();
            });
        })
        .await;
        let mut ws = client(&server.url("/")).await;
        ws.send(Message::from("ada")).await.unwrap();
        assert_eq!(next_text(&mut ws).await, "ada 7 None");
        assert_eq!(next_text(&mut ws).await, "ada!");
        server.stop().await;
    })
    .await;
}

/// The server holds its broker and the broker only a weak `Node`: once the
/// server and its handles are gone, so is the server's hold on the broker,
/// and the broker's node delivers to nobody.
#[tokio::test]
async fn dropping_the_server_frees_its_broker() {
    #[derive(Default)]
    struct Keeper(Mutex<Option<hubbub::Node>>);
    impl hubbub::Broker for Keeper {
        fn attach(&self, node: hubbub::Node) {
            *self.0.lock().unwrap() = Some(node);
        }
        fn publish(&self, topic: &str, message: Message, except: Option<hubbub::Uuid>) {
            if let Some(node) = &*self.0.lock().unwrap() {
                node.publish_local(topic, message, except);
            }
        }
        fn topic_added(&self, _: &str) {}
        fn topic_removed(&self, _: &str) {}
    }

    watchdog(async {
        let broker = Arc::new(Keeper::default());
        let server = hubbub::Server::bind("ws://127.0.0.1:0")
            .await
            .unwrap()
            .with_broker(broker.clone());
        let handle = server.handle();
        let task = tokio::spawn(server.start(|_| {}));
        // Attached when the server starts.
        while broker.0.lock().unwrap().is_none() {
            tokio::task::yield_now().await;
        }
        assert_eq!(Arc::strong_count(&broker), 2);
        handle.shutdown();
        task.await.unwrap().unwrap();
        drop(handle);
        assert_eq!(
            Arc::strong_count(&broker),
            1,
            "the server still holds the broker"
        );
        let node = broker.0.lock().unwrap().clone().unwrap();
        assert!(!node.is_alive());
        assert_eq!(node.publish_local("t", "x", None), 0);
    })
    .await;
}
