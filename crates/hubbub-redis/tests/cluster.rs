//! Several hubbub nodes sharing one real `redis-server` (started here on a
//! free port, stopped by pid): delivery exactly once and in order across
//! nodes, exclusion, resume, presence, and a Redis restart mid-stream.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hubbub::{Message, Server, ServerHandle};
use hubbub_redis::{Position, RedisBroker, RedisConfig};

#[path = "support/redis.rs"]
mod redis_server;
use redis_server::Redis;

const TOPIC: &str = "room";

/// A node: a hubbub server whose clients join `room` (resuming from
/// `?since=N&epoch=E`) and publish every text they send; a text starting
/// with `!` is published to everyone but its sender. Deliveries are framed
/// as `offset|epoch|text`.
struct Node {
    addr: SocketAddr,
    handle: ServerHandle,
    broker: Arc<RedisBroker>,
}

async fn node(redis: &Redis) -> Node {
    let config = RedisConfig::default()
        .with_presence_ttl(Duration::from_millis(900))
        .with_render(|e| {
            let text = match &e.message {
                Message::Text(t) => t.as_str().to_owned(),
                Message::Binary(_) => "binary".into(),
            };
            Message::from(format!("{}|{}|{text}", e.offset, e.epoch))
        });
    let broker = RedisBroker::new(&redis.url(), config).unwrap();
    let server = Server::bind("ws://127.0.0.1:0")
        .await
        .unwrap()
        .with_broker(broker.clone());
    let handle = server.handle();
    let addr = server.local_addr();
    let (b, h) = (broker.clone(), handle.clone());
    tokio::spawn(server.start(move |socket| {
        let (broker, handle) = (b.clone(), h.clone());
        socket.on_open(move |conn| {
            let query = conn.info().query().unwrap_or_default().to_owned();
            let get = |k: &str| {
                query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
                    .map(str::to_owned)
            };
            let since = get("since").zip(get("epoch")).map(|(o, e)| Position {
                offset: o.parse().unwrap(),
                epoch: e,
            });
            broker.resume(conn, TOPIC, since);
        });
        socket.on_message(move |conn, text| {
            if text.starts_with('!') {
                handle.publish_except(TOPIC, text, conn);
            } else {
                handle.publish(TOPIC, text);
            }
        });
    }));
    Node {
        addr,
        handle,
        broker,
    }
}

#[path = "../../hubbub/tests/common/peer.rs"]
mod peer;
use peer::{Event, Peer as Ws};

async fn client(addr: SocketAddr, query: &str) -> Ws {
    Ws::connect(&format!("ws://{addr}/?{query}")).await
}

/// A delivery as the test's render framed it.
#[derive(Debug, Clone, PartialEq)]
struct Got {
    offset: u64,
    epoch: String,
    text: String,
}

fn parse(text: &str) -> Got {
    let mut parts = text.splitn(3, '|');
    Got {
        offset: parts.next().unwrap().parse().unwrap(),
        epoch: parts.next().unwrap().to_owned(),
        text: parts.next().unwrap().to_owned(),
    }
}

/// Whether `text` is a `Notice::Offset` (where a message delivered during
/// an outage was ordered: a position, not a message).
fn is_offset_notice(text: &str) -> bool {
    text.starts_with(r#"{"type":"offset""#)
}

/// Reads until `want(received)` or `limit`; panics on a notice other than
/// an offset.
async fn read_until(ws: &mut Ws, limit: Duration, want: impl Fn(&[Got]) -> bool) -> Vec<Got> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    while !want(&got) {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Event::Text(t)) if is_offset_notice(&t) => {}
            Ok(Event::Text(t)) => {
                assert!(!t.starts_with('{'), "unexpected notice: {t}");
                got.push(parse(&t));
            }
            Ok(Event::Ping(_) | Event::Pong(_)) => {}
            other => panic!("after {} messages: {other:?}", got.len()),
        }
    }
    got
}

async fn wait_members(nodes: &[&Node], n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    for node in nodes {
        while node.broker.members(TOPIC) != n {
            assert!(
                Instant::now() < deadline,
                "members: {} (local {}), want {n}",
                node.broker.members(TOPIC),
                node.handle.subscriber_count(TOPIC)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Checks that `got` holds each of `expected` exactly once, each
/// publisher's in its order, with strictly increasing offsets.
fn check(got: &[Got], expected: &[String], who: &str) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for g in got {
        *seen.entry(g.text.as_str()).or_default() += 1;
    }
    for e in expected {
        assert_eq!(
            seen.get(e.as_str()),
            Some(&1),
            "{who}: {e} delivered {:?} times",
            seen.get(e.as_str())
        );
    }
    assert_eq!(got.len(), expected.len(), "{who}: extra deliveries");
    for pair in got.windows(2) {
        assert!(
            pair[0].offset < pair[1].offset,
            "{who}: offsets out of order: {pair:?}"
        );
    }
    // Per publisher (prefix before '-'), sequence numbers increase.
    let mut last: HashMap<&str, u32> = HashMap::new();
    for g in got {
        let (publisher, seq) = g.text.rsplit_once('-').unwrap();
        let seq: u32 = seq.parse().unwrap();
        if let Some(prev) = last.insert(publisher, seq) {
            assert!(
                prev < seq,
                "{who}: {publisher} out of order ({prev} then {seq})"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server: run scripts/test"]
async fn three_nodes_deliver_every_message_once_in_order_and_exclude_the_sender() {
    let redis = Redis::start(false);
    let nodes = [node(&redis).await, node(&redis).await, node(&redis).await];
    let mut clients = Vec::new();
    for node in &nodes {
        for _ in 0..3 {
            clients.push(client(node.addr, "").await);
        }
    }
    wait_members(&nodes.iter().collect::<Vec<_>>(), 9).await;

    // Client 0 of each node publishes 150 to all; client 1 publishes 50 to
    // all but itself.
    let (all, except) = (150, 50);
    for (i, node_clients) in clients.chunks_mut(3).enumerate() {
        for n in 0..all {
            node_clients[0].send(format!("p{i}-{n}")).unwrap();
        }
        for n in 0..except {
            node_clients[1].send(format!("!x{i}-{n}")).unwrap();
        }
    }
    let mut epochs = Vec::new();
    for (c, ws) in clients.iter_mut().enumerate() {
        let (node, slot) = (c / 3, c % 3);
        let mut expected = Vec::new();
        for i in 0..3 {
            expected.extend((0..all).map(|n| format!("p{i}-{n}")));
            if !(i == node && slot == 1) {
                expected.extend((0..except).map(|n| format!("!x{i}-{n}")));
            }
        }
        let n = expected.len();
        let got = read_until(ws, Duration::from_secs(20), |g| g.len() >= n).await;
        check(&got, &expected, &format!("client {c}"));
        epochs.push(got[0].epoch.clone());
        // Nothing more arrives.
        assert_eq!(
            ws.next_within(Duration::from_millis(200)).await,
            None,
            "client {c}: a delivery too many"
        );
    }
    assert!(
        epochs.windows(2).all(|w| w[0] == w[1]),
        "one epoch per topic"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server: run scripts/test"]
async fn a_client_resumes_on_another_node_without_gap_or_duplicate_and_is_told_of_lost_history() {
    let redis = Redis::start(false);
    let (a, b) = (node(&redis).await, node(&redis).await);
    let mut publisher = client(a.addr, "").await;
    let mut reader = client(b.addr, "").await;
    wait_members(&[&a, &b], 2).await;
    for n in 0..20 {
        publisher.send(format!("m-{n}")).unwrap();
    }
    let got = read_until(&mut reader, Duration::from_secs(10), |g| g.len() >= 10).await;
    let last = got[9].clone();
    assert_eq!(last.text, "m-9");
    reader.close().unwrap();
    // More while it is away.
    for n in 20..30 {
        publisher.send(format!("m-{n}")).unwrap();
    }
    read_until(&mut publisher, Duration::from_secs(10), |g| g.len() >= 30).await;

    // Back, on node A this time, from where it was.
    let query = format!("since={}&epoch={}", last.offset, last.epoch);
    let mut back = client(a.addr, &query).await;
    let expected: Vec<String> = (10..30).map(|n| format!("m-{n}")).collect();
    let resumed = read_until(&mut back, Duration::from_secs(10), |g| g.len() >= 20).await;
    check(&resumed, &expected, "resumed");
    assert_eq!(resumed[0].offset, last.offset + 1);
    // Then live, no duplicate.
    publisher.send("m-30").unwrap();
    let live = read_until(&mut back, Duration::from_secs(10), |g| !g.is_empty()).await;
    assert_eq!(live[0].text, "m-30");
    assert_eq!(live[0].offset, resumed[19].offset + 1);

    // A stale epoch: told so, then given the current history.
    let mut stale = client(b.addr, "since=3&epoch=0000000000000000").await;
    let notice = tokio::time::timeout(Duration::from_secs(5), stale.text())
        .await
        .unwrap();
    assert!(notice.contains(r#""type":"epoch""#), "{notice}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server: run scripts/test"]
async fn history_that_was_trimmed_is_reported_as_a_gap() {
    let redis = Redis::start(false);
    let config = RedisConfig::default().with_history_len(5);
    let broker = RedisBroker::new(&redis.url(), config).unwrap();
    let server = Server::bind("ws://127.0.0.1:0")
        .await
        .unwrap()
        .with_broker(broker.clone());
    let (addr, handle) = (server.local_addr(), server.handle());
    let b = broker.clone();
    tokio::spawn(server.start(move |socket| {
        let broker = b.clone();
        socket.on_open(move |conn| {
            let since = conn.info().query().map(|_| Position {
                offset: 1,
                epoch: String::new(),
            });
            broker.resume(conn, TOPIC, since);
        });
    }));
    let mut first = client(addr, "").await;
    // Wait for the node to hold the topic, then publish 20.
    let deadline = Instant::now() + Duration::from_secs(5);
    while handle.subscriber_count(TOPIC) == 0 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for n in 0..20 {
        handle.publish(TOPIC, format!("{n}"));
    }
    let mut last = String::new();
    for _ in 0..20 {
        last = tokio::time::timeout(Duration::from_secs(5), first.text())
            .await
            .unwrap();
    }
    assert_eq!(last, "19");
    // A client that last saw offset 1 of an epoch: the epoch is wrong
    // (empty), so it is told, and then the 5 entries left, with the gap.
    let mut late = client(addr, "x").await;
    let mut texts = Vec::new();
    while texts.len() < 7 {
        match tokio::time::timeout(Duration::from_secs(5), late.next()).await {
            Ok(Event::Text(t)) => texts.push(t),
            other => panic!("{texts:?} then {other:?}"),
        }
    }
    assert!(texts[0].contains(r#""type":"epoch""#), "{texts:?}");
    assert_eq!(
        texts[1], r#"{"type":"gap","topic":"room","from":1,"to":15}"#,
        "{texts:?}"
    );
    assert_eq!(&texts[2..], &["15", "16", "17", "18", "19"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server: run scripts/test"]
async fn a_redis_restart_mid_stream_loses_and_duplicates_nothing() {
    let mut redis = Redis::start(true);
    let (a, b) = (node(&redis).await, node(&redis).await);
    let publisher = client(a.addr, "").await;
    let mut local = client(a.addr, "").await;
    let mut remote = client(b.addr, "").await;
    wait_members(&[&a, &b], 3).await;
    let total = 200;
    let sending = tokio::spawn(async move {
        for n in 0..total {
            publisher.send(format!("r-{n}")).unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        publisher
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.restart();
    let _publisher = sending.await.unwrap();
    let expected: Vec<String> = (0..total).map(|n| format!("r-{n}")).collect();
    for (who, ws) in [("remote", &mut remote), ("local", &mut local)] {
        let got = read_until(ws, Duration::from_secs(30), |g| g.len() >= total).await;
        let texts: Vec<&str> = got.iter().map(|g| g.text.as_str()).collect();
        // Every node, the publisher's own included (which delivered its
        // publishes itself while Redis was down), got every one exactly
        // once, in the order it was published.
        assert_eq!(texts, expected, "{who}");
    }
}

/// A node with `broker` whose clients subscribe to `TOPIC` (and publish
/// nothing), and one client of it, subscribed, once the node's own
/// subscription in Redis is in place.
async fn one_reader(broker: &Arc<RedisBroker>) -> (ServerHandle, Ws) {
    let server = Server::bind("ws://127.0.0.1:0")
        .await
        .unwrap()
        .with_broker(broker.clone());
    let (addr, handle) = (server.local_addr(), server.handle());
    tokio::spawn(server.start(|socket| {
        socket.on_open(|conn| {
            let _ = conn.subscribe(TOPIC);
        });
    }));
    let mut reader = client(addr, "").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while handle.subscriber_count(TOPIC) == 0 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The node delivers a new topic from the moment its Redis
    // subscription is in place: probe until a publish comes back through
    // it, then a last one to drain the probes still on their way.
    loop {
        handle.publish(TOPIC, "probe");
        if let Some(Event::Text(_)) = reader.next_within(Duration::from_millis(100)).await {
            break;
        }
        assert!(Instant::now() < deadline, "the node never subscribed");
    }
    handle.publish(TOPIC, "ready");
    loop {
        let text = tokio::time::timeout(Duration::from_secs(5), reader.text())
            .await
            .expect("ready");
        if text == "ready" {
            break;
        }
    }
    (handle, reader)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server: run scripts/test"]
async fn publishes_bound_for_a_stalled_redis_are_bounded_in_bytes_and_none_is_lost() {
    let redis = Redis::start(false);
    let bound = 256 << 10;
    let config = RedisConfig::default().with_max_publish_bytes(bound);
    let broker = RedisBroker::new(&redis.url(), config).unwrap();
    let (handle, mut reader) = one_reader(&broker).await;
    // Redis stops answering: 1,000 publishes of 4 KiB (4 MiB) pile up on
    // their way to it, 16 times the bound.
    redis.pause();
    let total = 1000;
    let mut most = 0;
    for n in 0..total {
        handle.publish(TOPIC, format!("{n:04}-{}", "x".repeat(4090)));
        most = most.max(broker.queued_bytes());
    }
    assert!(
        most <= bound,
        "{most} bytes queued for Redis, bound {bound}"
    );
    assert!(broker.refused_publishes() > 0, "nothing refused");
    // Every one reaches the node's own subscriber exactly once: the
    // refused ones at once, the others when the node gives up on Redis
    // (the command timeout) or when Redis answers again.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    redis.resume();
    let mut seen = vec![0u32; total];
    let mut counted = 0;
    while counted < total {
        let text = tokio::time::timeout(Duration::from_secs(20), reader.text())
            .await
            .expect("a publish never arrived");
        if !is_offset_notice(&text) {
            seen[text[..4].parse::<usize>().unwrap()] += 1;
            counted += 1;
        }
    }
    assert!(seen.iter().all(|&n| n == 1), "not each exactly once");
    // Nothing more but the offsets of those delivered ahead of Redis.
    while let Some(event) = reader.next_within(Duration::from_millis(500)).await {
        assert!(
            matches!(&event, Event::Text(t) if is_offset_notice(t)),
            "{event:?}"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while broker.queued_bytes() > 0 {
        assert!(
            Instant::now() < deadline,
            "{} bytes never released",
            broker.queued_bytes()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server: run scripts/test"]
async fn a_nodes_own_publishes_keep_their_order_on_it_across_a_redis_outage() {
    let mut redis = Redis::start(true);
    // A slow render (2 ms a message, in the delivery task) keeps the
    // delivery of what Redis ordered behind the publishes: when Redis
    // goes, publishes it acknowledged are still on their way to the
    // node's clients while the next ones are delivered locally.
    let config = RedisConfig::default().with_render(|e| {
        if e.offset > 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
        e.message.clone()
    });
    let broker = RedisBroker::new(&redis.url(), config).unwrap();
    let (handle, mut reader) = one_reader(&broker).await;
    let total = 300;
    let publishing = tokio::spawn(async move {
        for n in 0..total {
            handle.publish(TOPIC, format!("{n}"));
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.restart();
    publishing.await.unwrap();
    let mut got = Vec::new();
    while got.len() < total {
        let text = tokio::time::timeout(Duration::from_secs(30), reader.text())
            .await
            .expect("a publish never arrived");
        // Where those delivered ahead of Redis were ordered: not messages.
        if !is_offset_notice(&text) {
            got.push(text.parse::<usize>().unwrap());
        }
    }
    let first_wrong = got.iter().enumerate().position(|(i, &n)| i != n);
    assert_eq!(
        first_wrong,
        None,
        "own publishes out of order or not once each, from: {:?}",
        first_wrong.map(|i| &got[i..(i + 8).min(total)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server: run scripts/test"]
async fn a_message_delivered_during_an_outage_is_not_handed_again_to_a_client_that_resumes() {
    let mut redis = Redis::start(true);
    let (a, b) = (node(&redis).await, node(&redis).await);
    let publisher = client(a.addr, "").await;
    let mut reader = client(a.addr, "").await;
    wait_members(&[&a], 2).await;
    publisher.send("m-0").unwrap();
    let first = read_until(&mut reader, Duration::from_secs(10), |g| !g.is_empty()).await;
    assert_eq!(first[0].text, "m-0");

    // Redis goes: the next publish reaches the reader from its own node,
    // without an offset.
    redis.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    publisher.send("m-1").unwrap();
    let during = tokio::time::timeout(Duration::from_secs(10), reader.text())
        .await
        .unwrap();
    assert_eq!(during, "0||m-1", "delivered locally, offset 0");

    // Redis is back: m-1 is ordered, and the reader is told where it
    // stands; its position is now m-1's offset.
    redis.restart();
    let notice = tokio::time::timeout(Duration::from_secs(20), reader.text())
        .await
        .unwrap();
    let event: HashMap<String, serde_json::Value> = serde_json::from_str(&notice).unwrap();
    assert_eq!(event["type"], "offset", "{notice}");
    let (offset, epoch) = (
        event["offset"].as_u64().unwrap(),
        event["epoch"].as_str().unwrap().to_owned(),
    );
    assert_eq!(offset, first[0].offset + 1, "{notice}");

    // It resumes on the other node from there: m-1 is not handed again,
    // the next message is.
    reader.close().unwrap();
    let mut back = client(b.addr, &format!("since={offset}&epoch={epoch}")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    publisher.send("m-2").unwrap();
    let got = read_until(&mut back, Duration::from_secs(10), |g| !g.is_empty()).await;
    assert_eq!(got[0].text, "m-2", "{got:?}");
    assert_eq!(got[0].offset, offset + 1);
    assert_eq!(back.next_within(Duration::from_millis(300)).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server: run scripts/test"]
async fn publishes_right_after_the_first_subscription_all_reach_it() {
    let redis = Redis::start(false);
    let broker = RedisBroker::new(&redis.url(), RedisConfig::default()).unwrap();
    let server = Server::bind("ws://127.0.0.1:0")
        .await
        .unwrap()
        .with_broker(broker.clone());
    let addr = server.local_addr();
    // Each client names a fresh topic: it is subscribed, and ten messages
    // are published to it at once, before the node's subscription in
    // Redis can be in place; they must wait for it rather than be ordered
    // before the node's baseline and never arrive.
    tokio::spawn(server.start(|socket| {
        socket.on_open(|conn| {
            let topic = conn.info().query().unwrap_or_default().to_owned();
            conn.subscribe(&topic).unwrap();
            for n in 0..10 {
                conn.server().publish(&topic, format!("{n}"));
            }
        });
    }));
    for t in 0..20 {
        let topic = format!("fresh-{t}");
        let mut ws = client(addr, &topic).await;
        for n in 0..10 {
            let text = tokio::time::timeout(Duration::from_secs(5), ws.text())
                .await
                .unwrap_or_else(|_| panic!("{topic}: message {n} never arrived"));
            assert_eq!(text, n.to_string(), "{topic}");
        }
        ws.close().unwrap();
    }
}
