//! `hubbub serve --redis` as a user runs it: three real binaries sharing one
//! real `redis-server`, chatting as one room; one node killed with SIGKILL,
//! its presence expiring and its client resuming on another node from its
//! last offset; and `hubbub serve --redis-cluster` on a real Redis Cluster
//! whose master is killed mid-chat.

use std::time::Duration;

use serde_json::Value;

#[path = "../../hubbub-redis/tests/support/redis.rs"]
#[allow(dead_code)] // restarts are the library tests' business
mod redis_server;
use redis_server::{Cluster, Redis};

#[path = "../../hubbub/tests/common/peer.rs"]
mod peer;
use peer::Peer as Ws;

#[path = "support/serve.rs"]
mod support;
use support::{Serve as Node, serve, serve_with_env};

/// A `hubbub serve --redis` node on a free port; killed when dropped.
async fn node(redis: &Redis) -> Node {
    let mut node = serve(&["--redis", &redis.url()]).await;
    let second = node.lines.next_line().await.unwrap().expect("cluster line");
    assert!(
        second.starts_with("cluster member through redis://"),
        "{second}"
    );
    node
}

async fn join(node: &Node, query: &str) -> Ws {
    Ws::connect(&format!("ws://{}/?{query}", node.addr)).await
}

async fn next_text(ws: &mut Ws) -> String {
    tokio::time::timeout(Duration::from_secs(20), ws.text())
        .await
        .expect("no text message within 20 s")
}

/// Reads JSON events until one satisfies `want`.
async fn until(ws: &mut Ws, want: impl Fn(&Value) -> bool) -> Value {
    loop {
        let event: Value = serde_json::from_str(&next_text(ws).await).unwrap();
        if want(&event) {
            return event;
        }
    }
}

fn is(kind: &str) -> impl Fn(&Value) -> bool + '_ {
    move |e| e["type"] == kind
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server: run scripts/test"]
async fn three_nodes_chat_as_one_room_and_a_killed_nodes_client_resumes_elsewhere() {
    tokio::time::timeout(Duration::from_secs(90), async {
        let redis = Redis::start(false);
        let (one, mut two, three) = (node(&redis).await, node(&redis).await, node(&redis).await);
        let mut a = join(&one, "format=json").await;
        let mut b = join(&two, "format=json").await;
        let mut c = join(&three, "").await;
        for ws in [&mut a, &mut b] {
            until(ws, is("welcome")).await;
        }
        assert_eq!(
            next_text(&mut c).await,
            "You have just joined the conversation."
        );
        // Every node's heartbeat has counted everyone.
        until(&mut a, |e| e["type"] == "presence" && e["count"] == 3).await;

        a.send("hello from one").unwrap();
        let seen = until(&mut b, is("message")).await;
        assert_eq!(seen["text"], "hello from one");
        let (offset, epoch) = (
            seen["offset"].as_u64().unwrap(),
            seen["epoch"].as_str().unwrap().to_owned(),
        );
        let line = loop {
            let line = next_text(&mut c).await;
            if line.contains(" says: ") {
                break line;
            }
        };
        assert!(line.ends_with(" says: hello from one"), "{line}");

        // Node two dies without a word; the room goes on without it.
        two.child.start_kill().unwrap();
        two.child.wait().await.unwrap();
        a.send("while you were away 1").unwrap();
        a.send("while you were away 2").unwrap();
        // Its presence entry expires (TTL 6 s): two members are left.
        until(&mut a, |e| e["type"] == "presence" && e["count"] == 2).await;

        // b comes back on node three from where it was.
        drop(b);
        let mut b = join(&three, &format!("format=json&since={offset}&epoch={epoch}")).await;
        until(&mut b, is("welcome")).await;
        let first = until(&mut b, is("message")).await;
        let second = until(&mut b, is("message")).await;
        assert_eq!(first["text"], "while you were away 1");
        assert_eq!(first["offset"].as_u64(), Some(offset + 1));
        assert_eq!(second["text"], "while you were away 2");
        assert_eq!(second["offset"].as_u64(), Some(offset + 2));
        // Then live, in order, with nothing replayed twice.
        a.send("welcome back").unwrap();
        let live = until(&mut b, |e| e["type"] == "message" || e["type"] == "gap").await;
        assert_eq!(live["text"], "welcome back");
        assert!(live["offset"].as_u64().unwrap() > offset + 2);
    })
    .await
    .expect("watchdog");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server: run scripts/test"]
async fn three_nodes_on_a_redis_cluster_chat_as_one_room_through_a_master_failover() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let mut cluster = Cluster::start(3, 1);
        let urls = cluster.urls().join(",");
        let mut nodes = Vec::new();
        for _ in 0..3 {
            let mut node = serve(&["--redis-cluster", &urls]).await;
            let second = node.lines.next_line().await.unwrap().expect("cluster line");
            assert!(
                second.starts_with("cluster member through redis://"),
                "{second}"
            );
            nodes.push(node);
        }
        let mut clients = Vec::new();
        for node in &nodes {
            let mut ws = join(node, "format=json").await;
            until(&mut ws, is("welcome")).await;
            clients.push(ws);
        }
        until(&mut clients[0], |e| {
            e["type"] == "presence" && e["count"] == 3
        })
        .await;
        clients[0].send("before").unwrap();
        for ws in &mut clients[1..] {
            assert_eq!(until(ws, is("message")).await["text"], "before");
        }
        // The master that holds the lobby's JSON topic dies.
        let owners = cluster.slot_owners();
        let victim = owners[&cluster.keyslot("hubbub:{lobby#json}:o")];
        cluster.kill(victim);
        clients[1].send("during").unwrap();
        cluster.wait_ok(Duration::from_secs(30));
        clients[2].send("after").unwrap();
        // Everyone gets both, once, with increasing offsets (Redis orders
        // the two publishers' messages as they reach it: "during" waited
        // for the new master on its node).
        for (i, ws) in clients.iter_mut().enumerate() {
            let first = until(ws, |e| e["type"] == "message" && e["text"] != "before").await;
            let second = until(ws, is("message")).await;
            let mut texts = [first["text"].as_str(), second["text"].as_str()];
            texts.sort();
            assert_eq!(texts, [Some("after"), Some("during")], "client {i}");
            if let (Some(a), Some(b)) = (first["offset"].as_u64(), second["offset"].as_u64()) {
                assert!(a < b, "client {i}: offsets {a} then {b}");
            }
            let more = tokio::time::timeout(Duration::from_millis(300), async {
                until(ws, is("message")).await
            })
            .await;
            assert!(more.is_err(), "client {i}: a message too many: {more:?}");
        }
    })
    .await
    .expect("watchdog");
}

/// libfaketime's multi-threaded library (Debian's `faketime` package).
fn libfaketime() -> String {
    std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|dir| dir.path().join("faketime/libfaketimeMT.so.1"))
        .find(|path| path.exists())
        .expect("libfaketime (needs faketime: run scripts/test)")
        .display()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server and faketime: run scripts/test"]
async fn member_counts_hold_when_the_nodes_clocks_disagree() {
    tokio::time::timeout(Duration::from_secs(90), async {
        let redis = Redis::start(false);
        let url = redis.url();
        // One node's clock runs 30 s ahead of the other's.
        let lib = libfaketime();
        let mut ahead = serve_with_env(
            &["--redis", &url],
            &[
                ("LD_PRELOAD", &lib),
                ("FAKETIME", "+30s"),
                ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
            ],
        )
        .await;
        let second = ahead
            .lines
            .next_line()
            .await
            .unwrap()
            .expect("cluster line");
        assert!(second.starts_with("cluster member through"), "{second}");
        let on_time = node(&redis).await;
        let mut a = join(&on_time, "format=json").await;
        let mut b = join(&ahead, "format=json").await;
        for ws in [&mut a, &mut b] {
            until(ws, is("welcome")).await;
        }
        // Each counts the other (an expiry stamped by one node's clock and
        // read by the other's would make the node ahead drop the other at
        // once).
        until(&mut a, |e| e["type"] == "presence" && e["count"] == 2).await;
        until(&mut b, |e| e["type"] == "presence" && e["count"] == 2).await;
        // The node ahead dies: it drops out within the presence TTL (6 s)
        // by Redis's clock, not 30 s later.
        ahead.child.start_kill().unwrap();
        ahead.child.wait().await.unwrap();
        let killed = std::time::Instant::now();
        until(&mut a, |e| e["type"] == "presence" && e["count"] == 1).await;
        assert!(
            killed.elapsed() < Duration::from_secs(15),
            "dropped out after {:?}",
            killed.elapsed()
        );
    })
    .await
    .expect("watchdog");
}
