//! The delivery task: one per node, and the only place that hands Redis
//! messages to the node's subscribers, so that per topic they go out in
//! offset order. It subscribes to the topics the node's clients hold (each
//! on the shard that owns it, in a cluster), fills gaps from the history
//! stream, serves resumes in that same order, resubscribes a topic whose
//! shard failed over or moved, and beats the presence heartbeat.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use hubbub::{Connection, Uuid};
use redis::aio::MultiplexedConnection;
use redis::{PushKind, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::shards::{Push, Shards};
use crate::{Command, Envelope, Inner, Notice, Position, wire};

/// An `XRANGE` reply: entry ids and their field/value pairs.
type StreamEntries = Vec<(String, Vec<(String, Vec<u8>)>)>;

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What the node knows of one topic.
#[derive(Default)]
struct TopicState {
    /// The last offset handed to the node's subscribers.
    last: u64,
    /// The epoch of `last` (`None`: not known yet).
    epoch: Option<String>,
    /// Whether `last` was read from Redis (a topic added while Redis was
    /// down has no baseline: it starts at the current offset, and its
    /// subscribers are told that messages may be missing).
    synced: bool,
    /// Added while Redis was unreachable.
    blind: bool,
    /// The connection (shard, generation) the topic is subscribed on;
    /// `None`: to be subscribed (again).
    on: Option<(Arc<str>, u64)>,
    /// The last offsets handed out and who published them: after a
    /// failover, tells an offset the new master gave a second message from
    /// one delivered already.
    recent: VecDeque<(u64, Uuid, u64)>,
}

/// How many recent offsets each topic remembers ([`TopicState::recent`]).
const RECENT: usize = 64;

/// Where history goes: the node's subscribers, or one resuming client.
#[derive(Clone, Copy)]
enum Target<'a> {
    Topic,
    Client(&'a Connection),
}

struct Delivery {
    inner: Arc<Inner>,
    topics: HashMap<String, TopicState>,
    /// The member count last reported to the presence callback, by topic
    /// (held or watched).
    reported: HashMap<String, Option<usize>>,
    shards: Shards,
    /// When to subscribe again the topics that lost their shard.
    retry_at: Option<Instant>,
    backoff: Duration,
    /// Whether a failure was logged and not yet its recovery.
    down: bool,
}

impl Delivery {
    fn send(&mut self, target: Target<'_>, (envelope, seq): &(Envelope, u64)) {
        match target {
            Target::Topic => {
                if let Some(state) = self.topics.get_mut(&envelope.topic) {
                    if state.recent.len() == RECENT {
                        state.recent.pop_front();
                    }
                    state
                        .recent
                        .push_back((envelope.offset, envelope.node, *seq));
                }
                let skip = envelope.node == self.inner.node && self.skip_own(*seq);
                if !skip {
                    self.inner.deliver_local(envelope);
                } else if envelope.offset > 0 {
                    // Delivered here ahead of Redis, with no offset: tell
                    // the subscribers where it stands now.
                    self.notify(
                        Target::Topic,
                        &Notice::Offset {
                            topic: envelope.topic.clone(),
                            offset: envelope.offset,
                            epoch: envelope.epoch.clone(),
                        },
                    );
                }
                // After the delivery: the publisher's local deliveries of
                // later publishes wait for this.
                if envelope.offset > 0 {
                    let mut delivered = self
                        .inner
                        .delivered
                        .lock()
                        .unwrap_or_else(|p| p.into_inner());
                    // No new key (and no allocation) per message once the
                    // topic is known.
                    match delivered.get_mut(envelope.topic.as_str()) {
                        Some(last) => *last = envelope.offset,
                        None => {
                            delivered.insert(envelope.topic.clone(), envelope.offset);
                        }
                    }
                }
            }
            Target::Client(conn) => {
                if envelope.except != Some(conn.id()) {
                    let _ = conn.send_message(self.inner.render(envelope));
                }
            }
        }
    }

    /// Whether this node's own publish `seq` was already delivered here
    /// (while Redis was unreachable); forgets it.
    fn skip_own(&self, seq: u64) -> bool {
        self.inner
            .delivered_locally
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&seq)
    }

    fn notify(&self, target: Target<'_>, notice: &Notice) {
        let topic = notice.topic();
        if !matches!(notice, Notice::Offset { .. }) {
            tracing::warn!(?notice, "redis broker: order could not be kept whole");
        }
        let Some(message) = self.inner.notice(notice) else {
            return;
        };
        match target {
            Target::Topic => {
                if let Some(server) = self.inner.server.get() {
                    server.publish_local(topic, message, None);
                }
            }
            Target::Client(conn) => {
                let _ = conn.send_message(message);
            }
        }
    }

    /// Hands offsets `after+1 ..= upto` of `topic` from the history to
    /// `target`, reporting what the history no longer holds.
    async fn fill(
        &mut self,
        conn: &mut MultiplexedConnection,
        target: Target<'_>,
        topic: &str,
        epoch: &str,
        after: u64,
        upto: u64,
    ) -> redis::RedisResult<()> {
        if upto <= after {
            return Ok(());
        }
        let entries: StreamEntries = self
            .inner
            .timeout(
                redis::cmd("XRANGE")
                    .arg(self.inner.key(topic, "s"))
                    .arg(format!("({after}-0"))
                    .arg(format!("{upto}-0"))
                    .query_async(conn),
            )
            .await?;
        let mut expected = after + 1;
        for (id, fields) in entries {
            let Some(offset) = wire::entry_offset(&id) else {
                continue;
            };
            let Some(body) = fields.into_iter().find(|(k, _)| k == "b").map(|(_, v)| v) else {
                continue;
            };
            if offset > expected {
                self.notify(
                    target,
                    &Notice::Gap {
                        topic: topic.to_owned(),
                        from: expected,
                        to: offset - 1,
                    },
                );
            }
            if let Some(envelope) = envelope(topic, offset, epoch, body.into()) {
                self.send(target, &envelope);
            }
            expected = offset + 1;
        }
        if expected <= upto {
            self.notify(
                target,
                &Notice::Gap {
                    topic: topic.to_owned(),
                    from: expected,
                    to: upto,
                },
            );
        }
        Ok(())
    }

    /// The topic's current offset and epoch in Redis.
    async fn head(
        &self,
        conn: &mut MultiplexedConnection,
        topic: &str,
    ) -> redis::RedisResult<(u64, Option<String>)> {
        let (offset, epoch): (Option<u64>, Option<String>) = self
            .inner
            .timeout(
                redis::pipe()
                    .get(self.inner.key(topic, "o"))
                    .get(self.inner.key(topic, "e"))
                    .query_async(conn),
            )
            .await?;
        Ok((offset.unwrap_or(0), epoch))
    }

    /// Subscribes the node to `topic` on the shard that owns it and brings
    /// it up to date: a topic with a baseline gets what it missed, a new
    /// one starts now.
    async fn sync(&mut self, topic: &str) -> redis::RedisResult<()> {
        let (addr, mut conn, generation) = self.shards.conn(topic).await?;
        let result = self.sync_on(&mut conn, topic).await;
        match &result {
            Ok(()) => {
                if let Some(state) = self.topics.get_mut(topic) {
                    state.on = Some((addr, generation));
                }
            }
            Err(e) => {
                self.fail(&addr);
                self.shards.learn(e);
            }
        }
        result
    }

    async fn sync_on(
        &mut self,
        conn: &mut MultiplexedConnection,
        topic: &str,
    ) -> redis::RedisResult<()> {
        self.inner
            .timeout(
                redis::cmd(self.inner.backend.subscribe_command())
                    .arg(self.inner.channel(topic))
                    .exec_async(conn),
            )
            .await?;
        // Subscribed first, then read the head: whatever is published in
        // between arrives on the channel too and is skipped as already
        // delivered (its offset is at most the head's).
        let (mut offset, epoch) = self.head(conn, topic).await?;
        let state = self.topics.entry(topic.to_owned()).or_default();
        let (after, synced) = (state.last, state.synced);
        let old_epoch = state.epoch.clone();
        if synced && offset < after && epoch.is_some() && epoch == old_epoch {
            // The shard failed over to a replica that had not received
            // every publish: raise its offset to what this node delivered,
            // so that no offset names two messages.
            let raised: i64 = self
                .inner
                .timeout(
                    redis::cmd("EVAL")
                        .arg(wire::RAISE_SCRIPT)
                        .arg(2)
                        .arg(self.inner.key(topic, "o"))
                        .arg(self.inner.key(topic, "e"))
                        .arg(epoch.as_deref().unwrap_or_default())
                        .arg(after)
                        .query_async(conn),
                )
                .await?;
            tracing::warn!(
                topic,
                head = offset,
                delivered = after,
                raised = raised == 1,
                "redis broker: the topic's shard holds fewer offsets than were delivered (failover); offsets raised"
            );
            offset = after;
        }
        let state = self.topics.entry(topic.to_owned()).or_default();
        if !synced {
            state.last = offset;
            state.synced = true;
            state.epoch = epoch;
            if std::mem::take(&mut state.blind) {
                self.notify(
                    Target::Topic,
                    &Notice::Unavailable {
                        topic: topic.to_owned(),
                    },
                );
            }
            return Ok(());
        }
        // What was missed, then the new baseline: if the history cannot be
        // read now, the baseline stays where it was, and the next attempt
        // fills from there (nothing is skipped).
        match (&old_epoch, &epoch) {
            (Some(old), Some(new)) if old != new => {
                self.notify(
                    Target::Topic,
                    &Notice::EpochChanged {
                        topic: topic.to_owned(),
                        epoch: new.clone(),
                    },
                );
                if let Some(state) = self.topics.get_mut(topic) {
                    state.recent.clear();
                }
                self.fill(conn, Target::Topic, topic, new, 0, offset)
                    .await?;
            }
            (_, Some(new)) => {
                self.fill(conn, Target::Topic, topic, new, after, offset)
                    .await?;
            }
            _ => {}
        }
        if let Some(state) = self.topics.get_mut(topic) {
            state.last = offset;
            state.epoch = epoch;
        }
        Ok(())
    }

    /// The connection to `addr` failed or closed: the topics subscribed on
    /// it are subscribed again (wherever they live now) after a backoff.
    fn fail(&mut self, addr: &str) {
        self.shards.forget(addr);
        for state in self.topics.values_mut() {
            if state.on.as_ref().is_some_and(|(a, _)| &**a == addr) {
                state.on = None;
            }
        }
        self.retry_soon();
    }

    /// Schedules [`Delivery::resync`] after the current backoff.
    fn retry_soon(&mut self) {
        if self.retry_at.is_none() {
            self.retry_at = Some(Instant::now() + self.backoff);
            self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Subscribes again every topic that lost its subscription.
    async fn resync(&mut self) {
        self.retry_at = None;
        let lost: Vec<String> = self
            .topics
            .iter()
            .filter(|(_, s)| s.on.is_none())
            .map(|(t, _)| t.clone())
            .collect();
        let mut failed = None;
        for topic in lost {
            if let Err(e) = self.sync(&topic).await {
                failed = Some(e);
            }
        }
        match failed {
            Some(e) => {
                if !self.down {
                    self.down = true;
                    tracing::warn!(error = %e, "redis subscriber link down: reconnecting with backoff");
                }
                self.retry_soon();
            }
            None => {
                self.backoff = MIN_BACKOFF;
                if std::mem::take(&mut self.down) {
                    tracing::info!("redis reachable again: subscriptions restored, gaps filled");
                }
            }
        }
    }

    /// A push from a shard's connection: a message, or news that the
    /// connection closed or the server unsubscribed a channel (its slot
    /// moved to another shard).
    async fn on_push(&mut self, (addr, generation, push): Push) {
        if !self.shards.is_current(&addr, generation) {
            return; // from a connection since replaced
        }
        let channel = match push.data.first() {
            Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(Value::SimpleString(s)) => s.clone(),
            _ => String::new(),
        };
        match push.kind {
            PushKind::Message | PushKind::SMessage => {
                let Some(Value::BulkString(payload)) = push.data.get(1) else {
                    return;
                };
                let Some(topic) = self.inner.topic_of(&channel).map(str::to_owned) else {
                    return;
                };
                if let Err(e) = self.on_message(&addr, &topic, payload).await {
                    tracing::warn!(topic, error = %e, "redis broker: filling a gap failed; resubscribing");
                    self.fail(&addr);
                    self.shards.learn(&e);
                }
            }
            PushKind::Disconnection => {
                if !self.down {
                    self.down = true;
                    tracing::warn!(shard = %addr, "redis subscriber link down: reconnecting with backoff");
                }
                self.fail(&addr);
            }
            PushKind::SUnsubscribe | PushKind::Unsubscribe => {
                // Ours (the topic is gone from `topics` by then), or the
                // server's own: the slot moved away.
                let Some(topic) = self.inner.topic_of(&channel) else {
                    return;
                };
                if let Some(state) = self.topics.get_mut(topic) {
                    if state
                        .on
                        .as_ref()
                        .is_some_and(|(a, g)| *a == addr && *g == generation)
                    {
                        tracing::info!(topic, shard = %addr, "redis broker: the topic's slot moved; resubscribing");
                        state.on = None;
                        self.shards.forget_slots();
                        self.retry_soon();
                    }
                }
            }
            _ => {}
        }
    }

    async fn on_message(
        &mut self,
        addr: &Arc<str>,
        topic: &str,
        payload: &[u8],
    ) -> redis::RedisResult<()> {
        let Some((offset, epoch, body)) = wire::split_published(payload) else {
            tracing::warn!(topic, "redis broker: unreadable message skipped");
            return Ok(());
        };
        let Some(state) = self.topics.get_mut(topic) else {
            return Ok(()); // unsubscribed meanwhile
        };
        if state.on.as_ref().is_none_or(|(a, _)| a != addr) {
            // Not where the topic is subscribed now: its resync fills
            // from the history instead.
            return Ok(());
        }
        let Some(envelope) = envelope(topic, offset, &epoch, body) else {
            return Ok(());
        };
        let mut after = state.last;
        if state.epoch.as_deref() != Some(epoch.as_str()) {
            let changed = state.epoch.is_some();
            state.epoch = Some(epoch.clone());
            if changed {
                after = 0;
                state.last = 0;
                state.recent.clear();
                self.notify(
                    Target::Topic,
                    &Notice::EpochChanged {
                        topic: topic.to_owned(),
                        epoch: epoch.clone(),
                    },
                );
            }
        }
        if offset <= after {
            // Delivered already (filled from history), unless a failover
            // gave this offset to another message before the offsets were
            // raised: that one is new.
            let reused = self.topics.get(topic).is_some_and(|s| {
                s.recent.iter().any(|&(o, node, seq)| {
                    o == offset && (node, seq) != (envelope.0.node, envelope.1)
                }) && !s
                    .recent
                    .iter()
                    .any(|&(_, node, seq)| (node, seq) == (envelope.0.node, envelope.1))
            });
            if reused {
                self.send(Target::Topic, &envelope);
            }
            return Ok(());
        }
        if offset > after + 1 {
            // A missed pub/sub message: fetch it from the history.
            let (mut conn, _) = self.shards.conn_to(addr).await?;
            self.fill(&mut conn, Target::Topic, topic, &epoch, after, offset - 1)
                .await?;
        }
        self.send(Target::Topic, &envelope);
        if let Some(state) = self.topics.get_mut(topic) {
            state.last = offset;
        }
        Ok(())
    }

    async fn on_command(&mut self, command: Command) {
        match command {
            Command::Added(topic) => {
                if !self.topics.contains_key(&topic) {
                    self.topics.insert(topic.clone(), TopicState::default());
                    if self.sync(&topic).await.is_err() {
                        // Redis unreachable: the topic starts without a
                        // baseline, and its subscribers are told when it
                        // is back that messages may be missing.
                        if let Some(state) = self.topics.get_mut(&topic) {
                            state.blind = !state.synced;
                        }
                    }
                }
                // In place, or Redis unreachable (the publisher waits for
                // it anyway): this node's publishes of it may go.
                self.inner.syncing(&topic, false);
            }
            Command::Removed(topic) => {
                let still = self
                    .inner
                    .server
                    .get()
                    .is_some_and(|s| s.subscriber_count(&topic) > 0);
                if still {
                    return;
                }
                self.inner.syncing(&topic, false);
                let Some(state) = self.topics.remove(&topic) else {
                    return;
                };
                self.inner
                    .elsewhere
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&topic);
                self.inner
                    .delivered
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&topic);
                let Some((addr, _)) = state.on else {
                    return;
                };
                let result = async {
                    let (mut conn, _) = self.shards.conn_to(&addr).await?;
                    let mut pipe = redis::pipe();
                    pipe.cmd(self.inner.backend.unsubscribe_command())
                        .arg(self.inner.channel(&topic))
                        .ignore()
                        .hdel(self.inner.key(&topic, "p"), self.inner.node.to_string())
                        .ignore();
                    self.inner.timeout(pipe.exec_async(&mut conn)).await
                }
                .await;
                if result.is_err() {
                    self.fail(&addr);
                }
            }
            Command::Resume { conn, topic, since } => {
                let result = self.history(&conn, &topic, since.as_ref()).await;
                if result.is_err() {
                    // No history to be had: say so, and go on live.
                    if since.is_some() {
                        self.notify(
                            Target::Client(&conn),
                            &Notice::Unavailable {
                                topic: topic.clone(),
                            },
                        );
                    }
                    let state = self.topics.entry(topic.clone()).or_default();
                    if !state.synced {
                        state.blind = true;
                    }
                    self.retry_soon();
                }
                // Nothing else reaches the node's subscribers until this
                // task moves on: the client's next message is the one after
                // the history it was given.
                let _ = conn.subscribe(&topic);
            }
        }
    }

    /// Brings `topic` up to date on this node and hands `conn` what it
    /// missed after `since`.
    async fn history(
        &mut self,
        conn: &Connection,
        topic: &str,
        since: Option<&Position>,
    ) -> redis::RedisResult<()> {
        let subscribed = self
            .topics
            .get(topic)
            .is_some_and(|s| s.synced && s.on.is_some());
        if !subscribed {
            self.topics.entry(topic.to_owned()).or_default();
            self.sync(topic).await?;
        }
        let (last, epoch, addr) = self
            .topics
            .get(topic)
            .map(|s| (s.last, s.epoch.clone(), s.on.clone()))
            .unwrap_or_default();
        let Some(since) = since else {
            return Ok(());
        };
        let (Some(ours), Some((addr, _))) = (epoch, addr) else {
            return Ok(());
        };
        let (mut redis, _) = self.shards.conn_to(&addr).await?;
        let after = if ours == since.epoch {
            since.offset
        } else {
            self.notify(
                Target::Client(conn),
                &Notice::EpochChanged {
                    topic: topic.to_owned(),
                    epoch: ours.clone(),
                },
            );
            0
        };
        let result = self
            .fill(&mut redis, Target::Client(conn), topic, &ours, after, last)
            .await;
        if result.is_err() {
            self.fail(&addr);
        }
        result
    }

    /// Writes this node's counts and reads the others', shard by shard,
    /// with Redis's clock ([`wire::PRESENCE_SCRIPT`]).
    async fn heartbeat(&mut self) {
        let Some(server) = self.inner.server.get().cloned() else {
            return;
        };
        let ttl = self.inner.config.presence_ttl.as_millis().max(1) as u64;
        let node = self.inner.node.to_string();
        let mut topics: Vec<String> = self.topics.keys().cloned().collect();
        let watched: Vec<String> = self
            .inner
            .watched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|t| !self.topics.contains_key(*t))
            .cloned()
            .collect();
        let held = topics.len();
        topics.extend(watched);
        if topics.is_empty() {
            return;
        }
        // Topics by shard, in one pipeline each.
        let mut by_shard: Vec<(Arc<str>, Vec<usize>)> = Vec::new();
        for (i, topic) in topics.iter().enumerate() {
            if self.shards.owner(topic).is_none() && self.shards.refresh().await.is_err() {
                return;
            }
            let Some(owner) = self.shards.owner(topic) else {
                continue;
            };
            match by_shard.iter_mut().find(|(a, _)| *a == owner) {
                Some((_, list)) => list.push(i),
                None => by_shard.push((owner, vec![i])),
            }
        }
        let mut counted = Vec::new();
        for (addr, list) in by_shard {
            let mut pipe = redis::pipe();
            for &i in &list {
                let topic = &topics[i];
                let count = if i < held {
                    server.subscriber_count(topic).to_string()
                } else {
                    String::new()
                };
                pipe.cmd("EVAL")
                    .arg(wire::PRESENCE_SCRIPT)
                    .arg(1)
                    .arg(self.inner.key(topic, "p"))
                    .arg(&node)
                    .arg(count)
                    .arg(ttl);
            }
            let result: redis::RedisResult<Vec<usize>> = async {
                let (mut conn, _) = self.shards.conn_to(&addr).await?;
                self.inner.timeout(pipe.query_async(&mut conn)).await
            }
            .await;
            match result {
                Ok(others) => counted.extend(list.into_iter().zip(others)),
                Err(_) => self.fail(&addr),
            }
        }
        {
            let mut elsewhere = self
                .inner
                .elsewhere
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            for &(i, others) in &counted {
                elsewhere.insert(topics[i].clone(), others);
            }
        }
        // Every count is up to date before anyone is told of one.
        for (i, _) in counted {
            let topic = &topics[i];
            let total = self.inner.elsewhere(topic) + server.subscriber_count(topic);
            let reported = self.reported.entry(topic.clone()).or_default();
            if *reported != Some(total) {
                *reported = Some(total);
                if let Some(on_presence) = &self.inner.config.presence {
                    on_presence(&server, topic, total);
                }
            }
        }
        self.reported.retain(|t, _| topics.contains(t));
    }

    /// Reaches Redis once at start (a single Redis, or the cluster's slot
    /// map).
    async fn probe(&mut self) -> redis::RedisResult<()> {
        match &self.inner.backend {
            crate::shards::Backend::Single(_) => self
                .shards
                .conn_to(&Arc::from(crate::shards::SINGLE))
                .await
                .map(drop),
            crate::shards::Backend::Cluster(_) => self.shards.refresh().await,
        }
    }
}

/// An envelope and the publishing node's sequence number.
fn envelope(topic: &str, offset: u64, epoch: &str, body: bytes::Bytes) -> Option<(Envelope, u64)> {
    let Some(body) = wire::decode(body) else {
        tracing::warn!(topic, offset, "redis broker: undecodable body skipped");
        return None;
    };
    let envelope = Envelope {
        topic: topic.to_owned(),
        offset,
        epoch: epoch.to_owned(),
        node: body.node,
        except: body.except,
        message: body.message,
    };
    Some((envelope, body.seq))
}

pub(crate) async fn run(inner: Arc<Inner>, mut commands: mpsc::UnboundedReceiver<Command>) {
    let (pushes_tx, mut pushes) = mpsc::unbounded_channel();
    let mut delivery = Delivery {
        shards: Shards::new(inner.clone(), Some(pushes_tx)),
        inner: inner.clone(),
        topics: HashMap::new(),
        reported: HashMap::new(),
        retry_at: None,
        backoff: MIN_BACKOFF,
        down: false,
    };
    let mut heartbeat = tokio::time::interval(inner.config.presence_ttl / 3);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Reach Redis before serving the first command, so that a node
    // starting beside a healthy Redis never takes subscriptions blind.
    if let Err(e) = delivery.probe().await {
        tracing::warn!(error = %e, "redis unreachable at start: serving locally, retrying with backoff");
        delivery.down = true;
    }
    loop {
        let retry_at = delivery.retry_at;
        tokio::select! {
            command = commands.recv() => match command {
                Some(command) => delivery.on_command(command).await,
                None => return,
            },
            Some(push) = pushes.recv() => delivery.on_push(push).await,
            () = async { tokio::time::sleep_until(retry_at.unwrap_or_else(Instant::now)).await }, if retry_at.is_some() => {
                delivery.resync().await;
            },
            _ = heartbeat.tick() => delivery.heartbeat().await,
        }
    }
}
