//! A Redis backplane for hubbub: a [`hubbub::Broker`] that carries topics
//! across every node attached to the same Redis ([`RedisBroker::new`]) or
//! the same Redis Cluster ([`RedisBroker::cluster`]: each topic lives on
//! the shard that owns its hash slot, with sharded pub/sub, so adding
//! masters adds publish capacity; a failover or a slot migration is
//! followed, and what was missed is filled or reported).
//!
//! - **One order per topic.** A Lua script assigns each publish the topic's
//!   next *offset*, appends it to a capped Redis Stream (the topic's
//!   history) and publishes it on the topic's pub/sub channel, atomically.
//!   A topic's offsets belong to an *epoch*, which changes when its history
//!   is lost (expired, or Redis lost its data).
//! - **Only what is needed.** A node subscribes only to the topics its own
//!   clients hold, and frames each message once for all of them (the
//!   node's [`hubbub::Node::publish_local`]). The subscriber task
//!   never waits on a client: queues are bounded by the server's own
//!   backpressure policy, so Redis never cuts the node's subscription.
//! - **No silent loss.** A node remembers the last offset it delivered per
//!   topic; a jump (a missed pub/sub message, a reconnect) is filled from
//!   the stream, and what the stream no longer holds is reported to the
//!   topic's subscribers as a [`Notice`].
//! - **Resume.** A client that comes back with its last [`Position`] gets
//!   what it missed from the stream, then the live messages, with no
//!   duplicate and no gap ([`RedisBroker::resume`]).
//! - **Redis down.** Local delivery continues (a node's own publishes reach
//!   its own clients at once, in the order they were made), publishes wait
//!   in a buffer bounded in count and in bytes and are retried with
//!   backoff (idempotently: a retried publish is not duplicated), and the
//!   subscriber reconnects, resubscribes and fills the gap. When Redis
//!   orders a message that was delivered locally, the node's subscribers
//!   learn its offset ([`Notice::Offset`]), so a resume does not repeat it.
//! - **Presence.** Each node writes its subscriber count per topic with an
//!   expiry stamped by Redis's own clock (nodes need not agree on the
//!   time), refreshed by a heartbeat; [`RedisBroker::members`] sums the
//!   live entries, so a node killed without a word drops out within
//!   [`RedisConfig::presence_ttl`].
//!
//! ```no_run
//! use hubbub::Server;
//! use hubbub_redis::{RedisBroker, RedisConfig};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let broker = RedisBroker::new("redis://127.0.0.1:6379", RedisConfig::default())?;
//! let server = Server::bind("ws://127.0.0.1:8181").await?.with_broker(broker.clone());
//! let handle = server.handle();
//! server
//!     .start(move |socket| {
//!         let (broker, handle) = (broker.clone(), handle.clone());
//!         socket.on_open(move |conn| broker.resume(conn, "room", None));
//!         socket.on_message(move |conn, text| {
//!             handle.publish_except("room", text, conn);
//!         });
//!     })
//!     .await?;
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

mod delivery;
mod publisher;
mod shards;
mod wire;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use hubbub::{Broker, Connection, Message, Node, Uuid};
use tokio::sync::mpsc;

/// Where a client is in a topic: the last offset it received, and the
/// epoch that offset belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The last offset received.
    pub offset: u64,
    /// The epoch of that offset.
    pub epoch: String,
}

/// A message as it arrives from Redis, before it is framed for the node's
/// subscribers ([`RedisConfig::with_render`]).
#[derive(Debug, Clone)]
pub struct Envelope {
    /// The topic.
    pub topic: String,
    /// The topic's offset of this message (0: delivered locally while Redis
    /// was unreachable; no offset assigned yet).
    pub offset: u64,
    /// The epoch of the offset (empty when `offset` is 0).
    pub epoch: String,
    /// The publishing node.
    pub node: Uuid,
    /// The connection the publisher excluded.
    pub except: Option<Uuid>,
    /// The message as published.
    pub message: Message,
}

/// What the subscribers of a topic are told besides its messages
/// ([`RedisConfig::with_notice`]): that the order could not be kept whole,
/// or where a message they got ahead of Redis now stands.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Notice {
    /// Offsets `from..=to` of `topic` are lost: the history no longer holds
    /// them.
    Gap {
        /// The topic.
        topic: String,
        /// The first missing offset.
        from: u64,
        /// The last missing offset.
        to: u64,
    },
    /// The topic's history started over (expired, or Redis lost its data);
    /// offsets from before mean nothing now.
    EpochChanged {
        /// The topic.
        topic: String,
        /// The new epoch.
        epoch: String,
    },
    /// Redis could not be reached to fetch what a resuming client missed.
    Unavailable {
        /// The topic.
        topic: String,
    },
    /// A message this node delivered while Redis was unreachable (with
    /// offset 0) has now been ordered at `offset`, and the node's
    /// subscribers have every message before it: a client's position in
    /// the topic is now `offset` of `epoch`, so that resuming from there
    /// does not hand it that message a second time.
    Offset {
        /// The topic.
        topic: String,
        /// The message's offset.
        offset: u64,
        /// The epoch of the offset.
        epoch: String,
    },
}

impl Notice {
    /// The topic it is about.
    pub fn topic(&self) -> &str {
        match self {
            Notice::Gap { topic, .. }
            | Notice::EpochChanged { topic, .. }
            | Notice::Unavailable { topic }
            | Notice::Offset { topic, .. } => topic,
        }
    }
}

type Render = dyn Fn(&Envelope) -> Message + Send + Sync;
type RenderNotice = dyn Fn(&Notice) -> Option<Message> + Send + Sync;
type OnPresence = dyn Fn(&Node, &str, usize) + Send + Sync;

/// Settings of a [`RedisBroker`].
#[derive(Clone)]
pub struct RedisConfig {
    /// Prefix of every key and channel (default `hubbub`).
    pub prefix: String,
    /// Entries kept in each topic's history stream (default 1,000).
    pub history_len: usize,
    /// How long an idle topic's history, offset and epoch live (default one
    /// day); refreshed by every publish.
    pub history_ttl: Duration,
    /// Publishes waiting while Redis is unreachable (default 10,000); past
    /// it the oldest is dropped, logged, and reaches only this node.
    pub publish_buffer: usize,
    /// Bytes of publishes on their way to Redis, from the publishing call
    /// until Redis ordered them (default 64 MiB). A publish that would
    /// pass it is refused: it reaches this node's subscribers only, is
    /// counted ([`RedisBroker::refused_publishes`]) and logged (at most
    /// once a second). So a node never holds more than this for Redis,
    /// however fast its clients publish or however long Redis stalls.
    pub max_publish_bytes: usize,
    /// How long a node's presence entry lives without a heartbeat (default
    /// 6 s; the heartbeat runs every third of it).
    pub presence_ttl: Duration,
    /// How long a Redis command may take before the link counts as down
    /// (default 2 s).
    pub command_timeout: Duration,
    render: Option<Arc<Render>>,
    notice: Option<Arc<RenderNotice>>,
    presence: Option<Arc<OnPresence>>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            prefix: "hubbub".into(),
            history_len: 1000,
            history_ttl: Duration::from_secs(86_400),
            publish_buffer: 10_000,
            max_publish_bytes: 64 << 20,
            presence_ttl: Duration::from_secs(6),
            command_timeout: Duration::from_secs(2),
            render: None,
            notice: None,
            presence: None,
        }
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("prefix", &self.prefix)
            .field("history_len", &self.history_len)
            .field("history_ttl", &self.history_ttl)
            .field("publish_buffer", &self.publish_buffer)
            .field("max_publish_bytes", &self.max_publish_bytes)
            .field("presence_ttl", &self.presence_ttl)
            .field("command_timeout", &self.command_timeout)
            .finish_non_exhaustive()
    }
}

impl RedisConfig {
    /// Frames each arriving message for the node's subscribers (default:
    /// the message as published). The chat uses this to put the offset and
    /// epoch into its JSON events.
    pub fn with_render(
        mut self,
        render: impl Fn(&Envelope) -> Message + Send + Sync + 'static,
    ) -> Self {
        self.render = Some(Arc::new(render));
        self
    }

    /// Frames a [`Notice`] for the topic's subscribers, or `None` for
    /// them not to be told (default: a JSON text
    /// `{"type":"gap","topic":…,"from":…,"to":…}`,
    /// `{"type":"epoch","topic":…,"epoch":…}`,
    /// `{"type":"unavailable","topic":…}` or
    /// `{"type":"offset","topic":…,"offset":…,"epoch":…}`).
    pub fn with_notice(
        mut self,
        notice: impl Fn(&Notice) -> Option<Message> + Send + Sync + 'static,
    ) -> Self {
        self.notice = Some(Arc::new(notice));
        self
    }

    /// Called on every heartbeat for each topic whose member count across
    /// the nodes changed, with this node (to tell its clients), the
    /// topic and the count.
    pub fn on_presence(mut self, f: impl Fn(&Node, &str, usize) + Send + Sync + 'static) -> Self {
        self.presence = Some(Arc::new(f));
        self
    }

    /// Sets [`RedisConfig::history_len`].
    pub fn with_history_len(mut self, entries: usize) -> Self {
        self.history_len = entries.max(1);
        self
    }

    /// Sets [`RedisConfig::presence_ttl`].
    pub fn with_presence_ttl(mut self, ttl: Duration) -> Self {
        self.presence_ttl = ttl.max(Duration::from_millis(300));
        self
    }

    /// Sets [`RedisConfig::max_publish_bytes`].
    pub fn with_max_publish_bytes(mut self, bytes: usize) -> Self {
        self.max_publish_bytes = bytes;
        self
    }

    /// Sets [`RedisConfig::prefix`].
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }
}

/// A JSON string literal (for the default notices).
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn default_notice(notice: &Notice) -> Message {
    Message::from(match notice {
        Notice::Gap { topic, from, to } => format!(
            r#"{{"type":"gap","topic":{},"from":{from},"to":{to}}}"#,
            json_string(topic)
        ),
        Notice::EpochChanged { topic, epoch } => format!(
            r#"{{"type":"epoch","topic":{},"epoch":{}}}"#,
            json_string(topic),
            json_string(epoch)
        ),
        Notice::Unavailable { topic } => {
            format!(r#"{{"type":"unavailable","topic":{}}}"#, json_string(topic))
        }
        Notice::Offset {
            topic,
            offset,
            epoch,
        } => format!(
            r#"{{"type":"offset","topic":{},"offset":{offset},"epoch":{}}}"#,
            json_string(topic),
            json_string(epoch)
        ),
    })
}

fn open(url: &str) -> Result<redis::Client, Error> {
    redis::Client::open(url).map_err(|e| Error(format!("redis URL {url:?}: {e}")))
}

/// Errors of [`RedisBroker::new`] and [`RedisBroker::cluster`].
#[derive(Debug)]
pub struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// Work for the delivery task, in order.
pub(crate) enum Command {
    Added(String),
    Removed(String),
    Resume {
        conn: Connection,
        topic: String,
        since: Option<Position>,
    },
}

/// A publish on its way to Redis.
pub(crate) struct Publish {
    pub(crate) topic: String,
    pub(crate) message: Message,
    pub(crate) except: Option<Uuid>,
}

impl Publish {
    /// What it counts against [`RedisConfig::max_publish_bytes`]: its
    /// payload, its topic and the envelope around them.
    pub(crate) fn size(&self) -> usize {
        let payload = match &self.message {
            Message::Text(text) => text.len(),
            Message::Binary(data) => data.len(),
        };
        payload + self.topic.len() + 128
    }
}

/// State shared by the broker's handle and its tasks.
pub(crate) struct Inner {
    pub(crate) node: Uuid,
    pub(crate) config: RedisConfig,
    pub(crate) backend: shards::Backend,
    pub(crate) server: OnceLock<Node>,
    commands: OnceLock<mpsc::UnboundedSender<Command>>,
    publishes: OnceLock<mpsc::UnboundedSender<Publish>>,
    /// Sequence numbers of this node's publishes already delivered to its
    /// own subscribers (while Redis was unreachable): skipped when they
    /// come back through Redis.
    pub(crate) delivered_locally: Mutex<HashSet<u64>>,
    /// Subscribers of each topic on the other nodes, from the last
    /// heartbeat.
    pub(crate) elsewhere: Mutex<HashMap<String, usize>>,
    /// Topics whose members are counted even without local subscribers.
    pub(crate) watched: Mutex<HashSet<String>>,
    /// The last offset of each topic the delivery task handed to this
    /// node's subscribers (the publisher's local deliveries wait for it).
    pub(crate) delivered: Mutex<HashMap<String, u64>>,
    /// Topics whose first local subscriber joined and whose subscription
    /// in Redis is not in place yet: this node's publishes of them wait,
    /// or they would be ordered before the node's baseline and never
    /// reach that subscriber.
    pub(crate) syncing: Mutex<HashSet<String>>,
    /// Bytes of publishes between the publishing call and Redis's answer.
    pub(crate) queued_bytes: AtomicUsize,
    /// Publishes refused because `queued_bytes` was at its bound.
    refused: AtomicU64,
    /// When the last refusal was logged (ms since the broker was made).
    refusal_logged: AtomicU64,
    made: std::time::Instant,
}

impl Inner {
    /// The topic's pub/sub channel (a shard channel in a cluster: same
    /// hash tag as its keys).
    pub(crate) fn channel(&self, topic: &str) -> String {
        self.key(topic, "c")
    }

    pub(crate) fn topic_of<'a>(&self, channel: &'a str) -> Option<&'a str> {
        let tag = channel
            .strip_prefix(self.config.prefix.as_str())?
            .strip_prefix(":{")?
            .strip_suffix("}:c")?;
        Some(tag.strip_prefix('~').unwrap_or(tag))
    }

    /// Marks `topic` as waiting for the node's subscription in Redis, or
    /// not any more.
    pub(crate) fn syncing(&self, topic: &str, waiting: bool) {
        let mut syncing = self.syncing.lock().unwrap_or_else(|p| p.into_inner());
        if waiting {
            syncing.insert(topic.to_owned());
        } else {
            syncing.remove(topic);
        }
    }

    /// The last offset of `topic` handed to this node's subscribers.
    pub(crate) fn delivered(&self, topic: &str) -> u64 {
        self.delivered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(topic)
            .copied()
            .unwrap_or(0)
    }

    /// Subscribers of `topic` on the other nodes, at the last heartbeat.
    pub(crate) fn elsewhere(&self, topic: &str) -> usize {
        self.elsewhere
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(topic)
            .copied()
            .unwrap_or(0)
    }

    /// A key of the topic: `prefix:{topic}:suffix`, the topic as the hash
    /// tag, so that every key of a topic is in one cluster slot. An empty
    /// tag would not count as one, so a topic that is empty or starts
    /// with `~` gets one `~` more (`prefix:{~}:o` for the empty topic).
    pub(crate) fn key(&self, topic: &str, suffix: &str) -> String {
        let escape = if topic.is_empty() || topic.starts_with('~') {
            "~"
        } else {
            ""
        };
        format!("{}:{{{escape}{topic}}}:{suffix}", self.config.prefix)
    }

    pub(crate) fn render(&self, envelope: &Envelope) -> Message {
        match &self.config.render {
            Some(render) => render(envelope),
            None => envelope.message.clone(),
        }
    }

    pub(crate) fn notice(&self, notice: &Notice) -> Option<Message> {
        match &self.config.notice {
            Some(render) => render(notice),
            None => Some(default_notice(notice)),
        }
    }

    /// A publish Redis cannot take now: this node's subscribers get it,
    /// and the refusal is counted and logged (at most once a second).
    fn refuse(&self, publish: Publish) {
        let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        let now = self.made.elapsed().as_millis() as u64;
        let logged = self.refusal_logged.load(Ordering::Relaxed);
        if (refused == 1 || now >= logged + 1000)
            && self
                .refusal_logged
                .compare_exchange(logged, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::error!(
                topic = publish.topic,
                refused,
                max_publish_bytes = self.config.max_publish_bytes,
                "redis publish refused: the bytes on their way to Redis are at their bound; \
                 delivered on this node only"
            );
        }
        self.deliver_local(&Envelope {
            topic: publish.topic,
            offset: 0,
            epoch: String::new(),
            node: self.node,
            except: publish.except,
            message: publish.message,
        });
    }

    /// Delivers an envelope to this node's subscribers.
    pub(crate) fn deliver_local(&self, envelope: &Envelope) {
        if let Some(server) = self.server.get() {
            server.publish_local(&envelope.topic, self.render(envelope), envelope.except);
        }
    }

    pub(crate) async fn timeout<T>(
        &self,
        f: impl Future<Output = redis::RedisResult<T>>,
    ) -> redis::RedisResult<T> {
        match tokio::time::timeout(self.config.command_timeout, f).await {
            Ok(result) => result,
            Err(_) => Err(redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "redis command timed out",
            ))),
        }
    }
}

/// A [`Broker`] on Redis. Attach it with
/// [`hubbub::Server::with_broker`] (from inside the tokio runtime: that is
/// where its tasks start).
pub struct RedisBroker {
    inner: Arc<Inner>,
}

impl fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBroker")
            .field("node", &self.inner.node)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl RedisBroker {
    /// A broker for the Redis at `url` (`redis://host:port[/db]`). Nothing
    /// is connected until the broker is attached to a server; an
    /// unreachable Redis is retried with backoff, while local delivery goes
    /// on.
    ///
    /// # Errors
    /// A URL the `redis` crate cannot read.
    pub fn new(url: &str, config: RedisConfig) -> Result<Arc<Self>, Error> {
        Ok(Self::with_backend(
            shards::Backend::Single(open(url)?),
            config,
        ))
    }

    /// A broker for a Redis Cluster, reached first through any of `urls`
    /// (`redis://host:port`, the seed nodes; the others are found from
    /// `CLUSTER SLOTS`). Each topic's keys carry the topic as their hash
    /// tag, so a topic lives on one shard: its ordering script runs there
    /// and its messages go out with `SPUBLISH` on a shard channel that
    /// nodes `SSUBSCRIBE` to on that shard (Redis 7 or later). Offsets,
    /// history, resume and presence mean what they mean with one Redis. A
    /// shard that fails over or a slot that migrates is found again (the
    /// slot map is read anew), resubscribed, and the gap filled from the
    /// stream or reported.
    ///
    /// # Errors
    /// No URL, or a URL the `redis` crate cannot read.
    pub fn cluster<S: AsRef<str>>(urls: &[S], config: RedisConfig) -> Result<Arc<Self>, Error> {
        if urls.is_empty() {
            return Err(Error("a Redis Cluster needs at least one node URL".into()));
        }
        let seeds = urls
            .iter()
            .map(|url| open(url.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::with_backend(shards::Backend::Cluster(seeds), config))
    }

    fn with_backend(backend: shards::Backend, config: RedisConfig) -> Arc<Self> {
        Arc::new(Self {
            inner: Arc::new(Inner {
                node: Uuid::new_v4(),
                config,
                backend,
                server: OnceLock::new(),
                commands: OnceLock::new(),
                publishes: OnceLock::new(),
                delivered_locally: Mutex::new(HashSet::new()),
                elsewhere: Mutex::new(HashMap::new()),
                watched: Mutex::new(HashSet::new()),
                delivered: Mutex::new(HashMap::new()),
                syncing: Mutex::new(HashSet::new()),
                queued_bytes: AtomicUsize::new(0),
                refused: AtomicU64::new(0),
                refusal_logged: AtomicU64::new(0),
                made: std::time::Instant::now(),
            }),
        })
    }

    /// This node's id (in every envelope it publishes).
    pub fn node_id(&self) -> Uuid {
        self.inner.node
    }

    /// Subscribes `conn` to `topic`. With `since`, it first receives what it
    /// missed after that position from the topic's history, then the live
    /// messages, with no duplicate and no gap; when the history no longer
    /// covers it, a [`Notice::Gap`] says which offsets are lost, and when
    /// the epoch differs, a [`Notice::EpochChanged`]. Without `since`, it
    /// is a plain subscription.
    pub fn resume(&self, conn: &Connection, topic: &str, since: Option<Position>) {
        match self.inner.commands.get() {
            Some(commands) => {
                let _ = commands.send(Command::Resume {
                    conn: conn.clone(),
                    topic: topic.to_owned(),
                    since,
                });
            }
            // Not attached yet: a plain local subscription.
            None => {
                let _ = conn.subscribe(topic);
            }
        }
    }

    /// Counts `topic`'s members across the nodes on every heartbeat even
    /// while this node has no subscriber of it (so that
    /// [`RedisBroker::members`] and the presence callback cover it).
    /// Undone by [`RedisBroker::unwatch`].
    pub fn watch(&self, topic: &str) {
        self.inner
            .watched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(topic.to_owned());
    }

    /// Stops counting a topic that [`RedisBroker::watch`] added (a topic
    /// with local subscribers is still counted).
    pub fn unwatch(&self, topic: &str) {
        self.inner
            .watched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(topic);
    }

    /// Bytes of publishes on their way to Redis now (at most
    /// [`RedisConfig::max_publish_bytes`]).
    pub fn queued_bytes(&self) -> usize {
        self.inner.queued_bytes.load(Ordering::Relaxed)
    }

    /// Publishes refused so far because [`RedisConfig::max_publish_bytes`]
    /// was reached (each reached this node's subscribers only).
    pub fn refused_publishes(&self) -> u64 {
        self.inner.refused.load(Ordering::Relaxed)
    }

    /// Subscribers of `topic` on every node: this node's count now plus the
    /// other nodes' at their last heartbeat (entries of a node that stopped
    /// beating expire after [`RedisConfig::presence_ttl`]).
    pub fn members(&self, topic: &str) -> usize {
        let local = self
            .inner
            .server
            .get()
            .map_or(0, |s| s.subscriber_count(topic));
        local + self.inner.elsewhere(topic)
    }
}

impl Broker for RedisBroker {
    fn attach(&self, server: Node) {
        if self.inner.server.set(server).is_err() {
            tracing::error!("a RedisBroker can serve one server; attach ignored");
            return;
        }
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (publishes, publish_rx) = mpsc::unbounded_channel();
        let _ = self.inner.commands.set(commands);
        let _ = self.inner.publishes.set(publishes);
        tokio::spawn(delivery::run(self.inner.clone(), command_rx));
        tokio::spawn(publisher::run(self.inner.clone(), publish_rx));
        tracing::info!(node = %self.inner.node, "redis broker attached");
    }

    fn publish(&self, topic: &str, message: Message, except: Option<Uuid>) {
        // The sequence number is assigned by the publisher task, which
        // sees publishes in the order they are sent on: numbering here,
        // on the publishing threads, could number them out of that order.
        let publish = Publish {
            topic: topic.to_owned(),
            message,
            except,
        };
        let Some(tx) = self.inner.publishes.get() else {
            tracing::warn!(topic, "publish before the broker was attached: dropped");
            return;
        };
        let inner = &self.inner;
        let size = publish.size();
        let before = inner.queued_bytes.fetch_add(size, Ordering::Relaxed);
        if before + size > inner.config.max_publish_bytes {
            inner.queued_bytes.fetch_sub(size, Ordering::Relaxed);
            inner.refuse(publish);
            return;
        }
        if let Err(unsent) = tx.send(publish) {
            inner.queued_bytes.fetch_sub(size, Ordering::Relaxed);
            inner.refuse(unsent.0);
        }
    }

    fn topic_added(&self, topic: &str) {
        if let Some(commands) = self.inner.commands.get() {
            // Before the subscribe call returns: a publish made after it
            // waits for the node's subscription in Redis.
            self.inner.syncing(topic, true);
            let _ = commands.send(Command::Added(topic.to_owned()));
        }
    }

    fn topic_removed(&self, topic: &str) {
        if let Some(commands) = self.inner.commands.get() {
            let _ = commands.send(Command::Removed(topic.to_owned()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_map_back_to_topics() {
        let broker = RedisBroker::new("redis://127.0.0.1:1", RedisConfig::default()).unwrap();
        let inner = &broker.inner;
        let channel = inner.channel("lobby#json");
        assert_eq!(inner.topic_of(&channel), Some("lobby#json"));
        assert_eq!(inner.topic_of("other:{lobby}:c"), None);
        assert_eq!(inner.topic_of("hubbub:lobby:c"), None);
        assert_eq!(inner.key("a:b", "o"), "hubbub:{a:b}:o");
        for topic in ["{x}", "", "~", "~a", "a~"] {
            assert_eq!(inner.topic_of(&inner.channel(topic)), Some(topic));
        }
        assert_eq!(inner.key("", "o"), "hubbub:{~}:o");
    }

    #[test]
    fn bad_urls_are_refused_with_the_url_in_the_error() {
        let error = RedisBroker::new("http://nope", RedisConfig::default()).unwrap_err();
        assert!(error.to_string().contains("http://nope"), "{error}");
    }

    #[test]
    fn default_notices_are_json() {
        let text = |n: &Notice| match default_notice(n) {
            Message::Text(t) => t.as_str().to_owned(),
            Message::Binary(_) => panic!("binary notice"),
        };
        assert_eq!(
            text(&Notice::Gap {
                topic: "a\"b".into(),
                from: 3,
                to: 9
            }),
            r#"{"type":"gap","topic":"a\"b","from":3,"to":9}"#
        );
        assert_eq!(
            text(&Notice::EpochChanged {
                topic: "t".into(),
                epoch: "e1".into()
            }),
            r#"{"type":"epoch","topic":"t","epoch":"e1"}"#
        );
        assert_eq!(
            text(&Notice::Offset {
                topic: "t".into(),
                offset: 7,
                epoch: "e1".into()
            }),
            r#"{"type":"offset","topic":"t","offset":7,"epoch":"e1"}"#
        );
    }
}
