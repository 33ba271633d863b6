//! hubbub nodes on a real Redis Cluster (three masters, three replicas,
//! started here on free ports and killed by pid): 30 rooms spread over the
//! three shards, every message exactly once per subscriber in one offset
//! order per room; a master killed mid-stream (its replica is promoted);
//! a client resuming on another node after the failover.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hubbub::{Message, Server, ServerHandle};
use hubbub_redis::{Position, RedisBroker, RedisConfig};

#[path = "support/redis.rs"]
mod redis_server;
use redis_server::Cluster;

#[path = "../../hubbub/tests/common/peer.rs"]
mod peer;
use peer::{Event, Peer as Ws};

const ROOMS: usize = 30;

/// A node whose clients join the room named by `?room=R` (resuming from
/// `&since=N&epoch=E`) and publish every text they send to it. Deliveries
/// are framed `offset|epoch|text`; notices pass through as JSON.
struct Node {
    addr: SocketAddr,
    handle: ServerHandle,
    broker: Arc<RedisBroker>,
}

async fn node(cluster: &Cluster) -> Node {
    let config = RedisConfig::default()
        .with_presence_ttl(Duration::from_millis(900))
        .with_render(|e| {
            let text = match &e.message {
                Message::Text(t) => t.as_str().to_owned(),
                Message::Binary(_) => "binary".into(),
            };
            Message::from(format!("{}|{}|{text}", e.offset, e.epoch))
        });
    let broker = RedisBroker::cluster(&cluster.urls(), config).unwrap();
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
            let room = get("room").unwrap();
            let since = get("since").zip(get("epoch")).map(|(o, e)| Position {
                offset: o.parse().unwrap(),
                epoch: e,
            });
            broker.resume(conn, &room, since);
        });
        socket.on_message(move |conn, text| {
            let room = conn.topics().pop().unwrap();
            handle.publish(&room, text);
        });
    }));
    Node {
        addr,
        handle,
        broker,
    }
}

fn room(r: usize) -> String {
    format!("r{r}")
}

async fn join(node: &Node, room: &str, extra: &str) -> Ws {
    Ws::connect(&format!("ws://{}/?room={room}{extra}", node.addr)).await
}

/// A delivery as the nodes framed it, or a notice.
#[derive(Debug, Clone, PartialEq)]
enum Got {
    Message {
        offset: u64,
        epoch: String,
        text: String,
    },
    Notice(String),
}

/// Reads until `want(received)` or `limit`.
async fn read_until(ws: &mut Ws, limit: Duration, want: impl Fn(&[Got]) -> bool) -> Vec<Got> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    while !want(&got) {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Event::Text(t)) if t.starts_with('{') => got.push(Got::Notice(t)),
            Ok(Event::Text(t)) => {
                let mut parts = t.splitn(3, '|');
                got.push(Got::Message {
                    offset: parts.next().unwrap().parse().unwrap(),
                    epoch: parts.next().unwrap().to_owned(),
                    text: parts.next().unwrap().to_owned(),
                });
            }
            Ok(Event::Ping(_) | Event::Pong(_)) => {}
            other => panic!("after {} deliveries: {other:?} ({got:?})", got.len()),
        }
    }
    got
}

/// Nothing but pings and pongs arrives for `limit`.
async fn assert_quiet(ws: &mut Ws, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return,
            Ok(Event::Ping(_) | Event::Pong(_)) => {}
            Ok(other) => panic!("a delivery too many: {other:?}"),
        }
    }
}

fn texts(got: &[Got]) -> Vec<&str> {
    got.iter()
        .filter_map(|g| match g {
            Got::Message { text, .. } => Some(text.as_str()),
            Got::Notice(_) => None,
        })
        .collect()
}

/// Each text once; each publisher's (the part before `-`) in its order;
/// offsets strictly increasing (those delivered with one) within one
/// epoch.
fn check_once_in_order(got: &[Got], expected: &HashSet<String>, who: &str) {
    let texts = texts(got);
    let unique: HashSet<&str> = texts.iter().copied().collect();
    assert_eq!(unique.len(), texts.len(), "{who}: a duplicate in {texts:?}");
    let want: HashSet<&str> = expected.iter().map(String::as_str).collect();
    assert_eq!(unique, want, "{who}: not exactly the messages sent");
    let mut last: HashMap<&str, u32> = HashMap::new();
    for text in &texts {
        let (publisher, seq) = text.rsplit_once('-').unwrap();
        let seq: u32 = seq.parse().unwrap();
        if let Some(prev) = last.insert(publisher, seq) {
            assert!(
                prev < seq,
                "{who}: {publisher} out of order ({prev} then {seq})"
            );
        }
    }
    let mut previous: Option<(u64, &str)> = None;
    for g in got {
        if let Got::Message { offset, epoch, .. } = g {
            if *offset == 0 {
                continue;
            }
            if let Some((o, e)) = previous {
                assert!(
                    e != epoch || o < *offset,
                    "{who}: offsets out of order: {o} then {offset}"
                );
            }
            previous = Some((*offset, epoch));
        }
    }
}

async fn wait_members(nodes: &[Node], rooms: usize, per_room: usize) {
    let deadline = Instant::now() + Duration::from_secs(15);
    for node in nodes {
        for r in 0..rooms {
            while node.broker.members(&room(r)) != per_room {
                assert!(
                    Instant::now() < deadline,
                    "room {r}: {} members, want {per_room}",
                    node.broker.members(&room(r))
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The master port serving each room.
fn room_owners(cluster: &Cluster) -> Vec<u16> {
    let owners = cluster.slot_owners();
    (0..ROOMS)
        .map(|r| owners[&cluster.keyslot(&format!("hubbub:{{{}}}:o", room(r)))])
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server: run scripts/test"]
async fn thirty_rooms_over_three_shards_deliver_every_message_once_in_order() {
    let cluster = Cluster::start(3, 1);
    let owners = room_owners(&cluster);
    let shards: HashSet<u16> = owners.iter().copied().collect();
    assert_eq!(shards.len(), 3, "rooms on every shard: {owners:?}");
    let nodes = [
        node(&cluster).await,
        node(&cluster).await,
        node(&cluster).await,
    ];
    // One client per room on every node; each publishes 20 to its room.
    let mut clients: Vec<(usize, usize, Ws)> = Vec::new();
    for r in 0..ROOMS {
        for (n, node) in nodes.iter().enumerate() {
            clients.push((r, n, join(node, &room(r), "").await));
        }
    }
    wait_members(&nodes, ROOMS, 3).await;
    let per = 20;
    for (r, n, ws) in &clients {
        for i in 0..per {
            ws.send(format!("c{r}.{n}-{i}")).unwrap();
        }
    }
    for (r, n, ws) in &mut clients {
        let (r, n) = (*r, *n);
        let expected: HashSet<String> = (0..3)
            .flat_map(|p| (0..per).map(move |i| format!("c{r}.{p}-{i}")))
            .collect();
        let got = read_until(ws, Duration::from_secs(30), |g| g.len() >= expected.len()).await;
        check_once_in_order(&got, &expected, &format!("room {r} node {n}"));
        assert!(
            got.iter()
                .all(|g| matches!(g, Got::Message { offset, .. } if *offset > 0)),
            "room {r} node {n}: every message ordered by Redis"
        );
        assert_quiet(ws, Duration::from_millis(50)).await;
    }
    let _ = &nodes[0].handle;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server: run scripts/test"]
async fn a_master_killed_mid_stream_loses_and_duplicates_nothing_and_resume_works_after() {
    let mut cluster = Cluster::start(3, 1);
    let owners = room_owners(&cluster);
    let nodes = [
        node(&cluster).await,
        node(&cluster).await,
        node(&cluster).await,
    ];
    // Per room: a publisher on node r % 3 and a reader on each other node.
    let mut publishers = Vec::new();
    let mut readers: Vec<(usize, usize, Ws)> = Vec::new();
    for r in 0..ROOMS {
        publishers.push(join(&nodes[r % 3], &room(r), "").await);
        for n in (0..3).filter(|n| *n != r % 3) {
            readers.push((r, n, join(&nodes[n], &room(r), "").await));
        }
    }
    wait_members(&nodes, ROOMS, 3).await;
    let total = 60;
    let sending = tokio::spawn(async move {
        for i in 0..total {
            for (r, ws) in publishers.iter().enumerate() {
                ws.send(format!("p{r}-{i}")).unwrap();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        publishers
    });
    // Kill the master of room 0 a second in.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let victim = owners[0];
    cluster.kill(victim);
    let killed_at = Instant::now();
    let publishers = sending.await.unwrap();
    cluster.wait_ok(Duration::from_secs(30));
    let promoted_after = killed_at.elapsed();
    let hit: Vec<usize> = (0..ROOMS).filter(|r| owners[*r] == victim).collect();
    assert!(!hit.is_empty());

    // Every reader (on a node other than the publisher's) gets every
    // message once, each publisher's in order; what Redis could not keep
    // would be announced by a notice, never dropped silently.
    let mut last_seen: HashMap<(usize, usize), (u64, String)> = HashMap::new();
    for (r, n, ws) in &mut readers {
        let (r, n) = (*r, *n);
        let expected: HashSet<String> = (0..total).map(|i| format!("p{r}-{i}")).collect();
        let got = read_until(ws, Duration::from_secs(30), |g| {
            texts(g).len() >= expected.len()
        })
        .await;
        let notices: Vec<&Got> = got.iter().filter(|g| matches!(g, Got::Notice(_))).collect();
        assert!(notices.is_empty(), "room {r} node {n}: {notices:?}");
        check_once_in_order(&got, &expected, &format!("room {r} node {n}"));
        assert_quiet(ws, Duration::from_millis(50)).await;
        if let Some(Got::Message { offset, epoch, .. }) = got
            .iter()
            .rev()
            .find(|g| matches!(g, Got::Message { offset, .. } if *offset > 0))
        {
            last_seen.insert((r, n), (*offset, epoch.clone()));
        }
    }

    // After the failover: a reader of a room of the killed shard leaves,
    // messages go on, and it comes back on another node from where it
    // was: what it missed, once, then live.
    let r = hit[0];
    let index = readers.iter().position(|(rr, _, _)| *rr == r).unwrap();
    let (_, n, ws) = readers.remove(index);
    ws.close().unwrap();
    let (offset, epoch) = last_seen[&(r, n)].clone();
    for i in total..total + 10 {
        publishers[r].send(format!("p{r}-{i}")).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let other = (0..3).find(|m| *m != n).unwrap();
    let mut back = join(
        &nodes[other],
        &room(r),
        &format!("&since={offset}&epoch={epoch}"),
    )
    .await;
    let missed: HashSet<String> = (total..total + 10).map(|i| format!("p{r}-{i}")).collect();
    let got = read_until(&mut back, Duration::from_secs(15), |g| texts(g).len() >= 10).await;
    check_once_in_order(&got, &missed, "resumed");
    publishers[r].send(format!("p{r}-{}", total + 10)).unwrap();
    let live = read_until(&mut back, Duration::from_secs(15), |g| !texts(g).is_empty()).await;
    assert_eq!(texts(&live), vec![format!("p{r}-{}", total + 10).as_str()]);
    eprintln!("failover: promoted and settled {promoted_after:?} after the kill");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server: run scripts/test"]
async fn a_rooms_slot_migrated_mid_stream_loses_and_duplicates_nothing() {
    let cluster = Cluster::start(3, 0);
    let nodes = [
        node(&cluster).await,
        node(&cluster).await,
        node(&cluster).await,
    ];
    let r = 0;
    let publisher = join(&nodes[0], &room(r), "").await;
    let mut readers = Vec::new();
    for node in &nodes {
        readers.push(join(node, &room(r), "").await);
    }
    wait_members(&nodes, 1, 4).await;
    let total = 100;
    let sending = tokio::spawn(async move {
        for i in 0..total {
            publisher.send(format!("p-{i}")).unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        publisher
    });
    tokio::time::sleep(Duration::from_millis(600)).await;
    // Move the room's slot, keys and all, to another master.
    let key = format!("hubbub:{{{}}}:o", room(r));
    let slot = cluster.keyslot(&key);
    let from = cluster.slot_owners()[&slot];
    let to = *cluster
        .slot_owners()
        .values()
        .find(|port| **port != from)
        .unwrap();
    let migrating = tokio::task::spawn_blocking({
        let cluster = Arc::new(cluster);
        move || {
            cluster.migrate_slot(slot, from, to);
            cluster
        }
    });
    let cluster = migrating.await.unwrap();
    let _publisher = sending.await.unwrap();
    assert_eq!(cluster.slot_owners()[&slot], to, "the slot moved");
    let expected: HashSet<String> = (0..total).map(|i| format!("p-{i}")).collect();
    for (n, ws) in readers.iter_mut().enumerate() {
        let got = read_until(ws, Duration::from_secs(30), |g| {
            texts(g).len() >= expected.len()
        })
        .await;
        // Only where the publisher is: messages it delivered while the
        // slot was moving, and their offsets once Redis ordered them.
        let notices: Vec<&Got> = got
            .iter()
            .filter(|g| matches!(g, Got::Notice(t) if n != 0 || !t.contains(r#""type":"offset""#)))
            .collect();
        assert!(notices.is_empty(), "node {n}: {notices:?}");
        check_once_in_order(&got, &expected, &format!("node {n}"));
        assert_quiet(ws, Duration::from_millis(100)).await;
    }
}
