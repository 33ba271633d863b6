//! Where a topic lives: one Redis, or the shard of a Redis Cluster that
//! owns the topic's hash slot, and a connection to it.
//!
//! Every key and channel of a topic carries the topic as its hash tag
//! (`prefix:{topic}:o`, `…:c`), so all of them hash to one slot: the
//! ordering script runs on one shard, and the topic's messages are
//! `SPUBLISH`ed on a shard channel of that same slot.
//!
//! Why not the `redis` crate's cluster client: it serves one-key commands
//! well, but (1) a pipeline goes to one node, so a batch of publishes over
//! many rooms would need a round trip per room, and a retried command
//! could overtake the next one of the same room (the script drops a
//! publish older than one it has seen); (2) it resubscribes sharded
//! channels by itself, after a failing request, without telling which
//! ones: the broker must know when a shard came back, to fill the gap
//! from the stream and to check the new master's offsets. So the broker
//! keeps its own slot map (`CLUSTER SLOTS`) and one multiplexed RESP3
//! connection per master it uses; `MOVED`, `ASK`, `TRYAGAIN` and
//! `CLUSTERDOWN` replies, and a dropped connection, make it refresh the
//! map and retry (publishes are idempotent; a slot that is migrating is
//! retried until the migration is done).

use std::collections::HashMap;
use std::sync::Arc;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, PushInfo};
use tokio::sync::mpsc;

use crate::Inner;

/// Where the broker's Redis is.
#[derive(Clone)]
pub(crate) enum Backend {
    /// One Redis (plain pub/sub).
    Single(redis::Client),
    /// The seed nodes of a Redis Cluster (sharded pub/sub).
    Cluster(Vec<redis::Client>),
}

impl Backend {
    /// The command that publishes on a topic's channel.
    pub(crate) fn publish_command(&self) -> &'static str {
        match self {
            Backend::Single(_) => "PUBLISH",
            Backend::Cluster(_) => "SPUBLISH",
        }
    }

    /// The command that subscribes to a topic's channel.
    pub(crate) fn subscribe_command(&self) -> &'static str {
        match self {
            Backend::Single(_) => "SUBSCRIBE",
            Backend::Cluster(_) => "SSUBSCRIBE",
        }
    }

    /// The command that unsubscribes from a topic's channel.
    pub(crate) fn unsubscribe_command(&self) -> &'static str {
        match self {
            Backend::Single(_) => "UNSUBSCRIBE",
            Backend::Cluster(_) => "SUNSUBSCRIBE",
        }
    }
}

/// A push from a shard's connection, with the shard's address and the
/// connection's generation (a push from a connection since replaced is
/// stale).
pub(crate) type Push = (Arc<str>, u64, PushInfo);

/// The slot of a key (Redis Cluster's CRC16 of the hash tag, mod 16384).
pub(crate) fn slot(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    crc16(tagged) % 16384
}

/// CRC16-CCITT (XModem), the checksum Redis Cluster hashes keys with.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// One task's connections: to the single Redis, or to each cluster master
/// it needed, with the slot map.
pub(crate) struct Shards {
    inner: Arc<Inner>,
    /// Slot ranges and their master's address (cluster only).
    slots: Vec<(u16, u16, Arc<str>)>,
    conns: HashMap<Arc<str>, (MultiplexedConnection, u64)>,
    /// Where the connections' pushes go (the delivery task's subscriptions).
    pushes: Option<mpsc::UnboundedSender<Push>>,
    generation: u64,
    /// [`SINGLE`], made once (`owner` is asked for every pending publish
    /// of every round).
    single: Arc<str>,
}

/// The one address of a single Redis.
pub(crate) const SINGLE: &str = "single";

impl Shards {
    pub(crate) fn new(inner: Arc<Inner>, pushes: Option<mpsc::UnboundedSender<Push>>) -> Self {
        Self {
            inner,
            slots: Vec::new(),
            conns: HashMap::new(),
            pushes,
            generation: 0,
            single: Arc::from(SINGLE),
        }
    }

    /// The address of the shard that owns `topic`, from the slot map
    /// (`None`: not known; [`Shards::refresh`] first).
    pub(crate) fn owner(&self, topic: &str) -> Option<Arc<str>> {
        match &self.inner.backend {
            Backend::Single(_) => Some(self.single.clone()),
            Backend::Cluster(_) => {
                let slot = slot(self.inner.key(topic, "o").as_bytes());
                self.slots
                    .iter()
                    .find(|(start, end, _)| (*start..=*end).contains(&slot))
                    .map(|(_, _, addr)| addr.clone())
            }
        }
    }

    /// The connection to the shard that owns `topic`, connecting (and
    /// reading the slot map) when needed.
    pub(crate) async fn conn(
        &mut self,
        topic: &str,
    ) -> redis::RedisResult<(Arc<str>, MultiplexedConnection, u64)> {
        let addr = match self.owner(topic) {
            Some(addr) => addr,
            None => {
                self.refresh().await?;
                self.owner(topic).ok_or_else(|| {
                    redis::RedisError::from((
                        redis::ErrorKind::ClusterConnectionNotFound,
                        "no master serves the topic's slot",
                    ))
                })?
            }
        };
        let (conn, generation) = self.conn_to(&addr).await?;
        Ok((addr, conn, generation))
    }

    /// The connection to the shard at `addr`, and its generation (a new
    /// connection has a new one).
    pub(crate) async fn conn_to(
        &mut self,
        addr: &Arc<str>,
    ) -> redis::RedisResult<(MultiplexedConnection, u64)> {
        if let Some((conn, generation)) = self.conns.get(addr) {
            return Ok((conn.clone(), *generation));
        }
        let mut info = match &self.inner.backend {
            Backend::Single(client) => client.get_connection_info().clone(),
            Backend::Cluster(seeds) => {
                // The seed's settings (database, credentials), at the
                // master's address.
                let (host, port) = addr.rsplit_once(':').unwrap_or((addr, "6379"));
                seeds[0]
                    .get_connection_info()
                    .clone()
                    .set_addr(redis::ConnectionAddr::Tcp(
                        host.to_owned(),
                        port.parse().unwrap_or(6379),
                    ))
            }
        };
        if self.pushes.is_some() {
            // Subscriptions on a multiplexed connection need RESP3.
            let settings = info
                .redis_settings()
                .clone()
                .set_protocol(redis::ProtocolVersion::RESP3);
            info = info.set_redis_settings(settings);
        }
        let client = redis::Client::open(info)?;
        self.generation += 1;
        let mut config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.inner.config.command_timeout))
            .set_response_timeout(Some(self.inner.config.command_timeout));
        if let Some(pushes) = &self.pushes {
            let (pushes, from, generation) = (pushes.clone(), addr.clone(), self.generation);
            config = config.set_push_sender(move |info: PushInfo| {
                pushes.send((from.clone(), generation, info))
            });
        }
        let conn = self
            .inner
            .timeout(client.get_multiplexed_async_connection_with_config(&config))
            .await?;
        self.conns
            .insert(addr.clone(), (conn.clone(), self.generation));
        Ok((conn, self.generation))
    }

    /// Whether `addr` is a master in the slot map (a single Redis: always).
    pub(crate) fn is_master(&self, addr: &str) -> bool {
        match &self.inner.backend {
            Backend::Single(_) => true,
            Backend::Cluster(_) => self.slots.iter().any(|(_, _, a)| &**a == addr),
        }
    }

    /// Whether `generation` is the current connection to `addr`.
    pub(crate) fn is_current(&self, addr: &str, generation: u64) -> bool {
        self.conns.get(addr).is_some_and(|(_, g)| *g == generation)
    }

    /// Forgets the connection to `addr` (it failed) and, in a cluster,
    /// the slot map (the shard may have moved).
    pub(crate) fn forget(&mut self, addr: &str) {
        self.conns.remove(addr);
        self.slots.clear();
    }

    /// Takes note of a `MOVED` reply: the slot it names is served at the
    /// address it names (ahead of the slot map, which may be older).
    pub(crate) fn learn(&mut self, error: &redis::RedisError) {
        if error.code() != Some("MOVED") {
            return;
        }
        if let Some((addr, slot)) = error.redirect_node() {
            self.slots.insert(0, (slot, slot, Arc::from(addr)));
        }
    }

    /// Forgets the slot map only (a slot moved; its old owner is fine).
    pub(crate) fn forget_slots(&mut self) {
        self.slots.clear();
    }

    /// Reads the slot map from the first seed or known master that
    /// answers (a single Redis has none).
    pub(crate) async fn refresh(&mut self) -> redis::RedisResult<()> {
        let Backend::Cluster(seeds) = &self.inner.backend else {
            return Ok(());
        };
        let mut last_error = None;
        let known: Vec<redis::Client> = seeds.clone();
        for client in &known {
            let reply: redis::RedisResult<redis::Value> = async {
                let mut conn = self
                    .inner
                    .timeout(client.get_multiplexed_async_connection())
                    .await?;
                self.inner
                    .timeout(redis::cmd("CLUSTER").arg("SLOTS").query_async(&mut conn))
                    .await
            }
            .await;
            let seed_host = match client.get_connection_info().addr() {
                redis::ConnectionAddr::Tcp(host, _) => host.clone(),
                _ => "127.0.0.1".to_owned(),
            };
            match reply.and_then(|value| parse_slots(&value, &seed_host)) {
                Ok(slots) if !slots.is_empty() => {
                    // Connections to nodes that are no longer masters of
                    // anything are dropped.
                    self.conns
                        .retain(|addr, _| slots.iter().any(|(_, _, a)| a == addr));
                    self.slots = slots;
                    return Ok(());
                }
                Ok(_) => {
                    last_error = Some(redis::RedisError::from((
                        redis::ErrorKind::ClusterConnectionNotFound,
                        "the cluster serves no slot",
                    )));
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| {
            redis::RedisError::from((redis::ErrorKind::Client, "no cluster seed node given"))
        }))
    }
}

/// `CLUSTER SLOTS`: `[[start, end, [host, port, id, …], replicas…], …]`.
/// A master without a known endpoint (empty or `?`) is taken to be on the
/// seed's host.
fn parse_slots(
    value: &redis::Value,
    seed_host: &str,
) -> redis::RedisResult<Vec<(u16, u16, Arc<str>)>> {
    use redis::Value;
    let bad =
        || redis::RedisError::from((redis::ErrorKind::Parse, "unexpected CLUSTER SLOTS reply"));
    let Value::Array(ranges) = value else {
        return Err(bad());
    };
    let mut slots = Vec::new();
    for range in ranges {
        let Value::Array(fields) = range else {
            return Err(bad());
        };
        let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(master))) =
            (fields.first(), fields.get(1), fields.get(2))
        else {
            return Err(bad());
        };
        let host = match master.first() {
            Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(Value::SimpleString(s)) => s.clone(),
            _ => return Err(bad()),
        };
        let Some(Value::Int(port)) = master.get(1) else {
            return Err(bad());
        };
        let host = if host.is_empty() || host == "?" {
            seed_host.to_owned()
        } else {
            host
        };
        slots.push((
            *start as u16,
            *end as u16,
            Arc::from(format!("{host}:{port}")),
        ));
    }
    Ok(slots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_redis_cluster_hash_tags() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(crc16(b"123456789"), 0x31c3);
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"{user1000}.following"), slot(b"{user1000}.followers"));
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        // An empty tag hashes the whole key.
        assert_eq!(slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") % 16384);
        // Every key and the channel of a topic share one slot.
        let broker =
            crate::RedisBroker::new("redis://127.0.0.1:1", crate::RedisConfig::default()).unwrap();
        for topic in ["lobby", "a}b", "{x}", "", "~"] {
            let keys: Vec<u16> = ["o", "e", "s", "n", "p", "c"]
                .iter()
                .map(|s| slot(broker.inner.key(topic, s).as_bytes()))
                .collect();
            assert!(keys.windows(2).all(|w| w[0] == w[1]), "{topic}: {keys:?}");
        }
    }

    #[test]
    fn cluster_slots_replies_are_read_and_bad_ones_refused() {
        use redis::Value;
        let reply = Value::Array(vec![Value::Array(vec![
            Value::Int(0),
            Value::Int(5460),
            Value::Array(vec![
                Value::BulkString(b"127.0.0.1".to_vec()),
                Value::Int(7000),
                Value::BulkString(b"id".to_vec()),
            ]),
        ])]);
        let slots = parse_slots(&reply, "seed").unwrap();
        assert_eq!(slots, vec![(0, 5460, Arc::from("127.0.0.1:7000"))]);
        assert!(parse_slots(&Value::Int(3), "seed").is_err());
        assert!(parse_slots(&Value::Array(vec![Value::Int(1)]), "seed").is_err());
        let unknown = Value::Array(vec![Value::Array(vec![
            Value::Int(0),
            Value::Int(16383),
            Value::Array(vec![Value::BulkString(b"".to_vec()), Value::Int(7001)]),
        ])]);
        assert_eq!(
            parse_slots(&unknown, "seed").unwrap(),
            vec![(0, 16383, Arc::from("seed:7001"))]
        );
    }
}
