//! The delivery task: one per node, and the only place that hands Redis
//! messages to the node's subscribers, so that per topic they go out in
//! offset order. It owns the pub/sub connection, subscribes to the topics
//! the node's clients hold, fills gaps from the history stream, serves
//! resumes in that same order, reconnects, and beats the presence
//! heartbeat.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use hubbub::Connection;
use redis::AsyncCommands;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

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
}

struct Link {
    sink: PubSubSink,
    stream: PubSubStream,
    conn: MultiplexedConnection,
}

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
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Delivery {
    fn send(&self, target: Target<'_>, (envelope, seq): &(Envelope, u64)) {
        match target {
            Target::Topic => {
                if envelope.node == self.inner.node && self.skip_own(*seq) {
                    return;
                }
                self.inner.deliver_local(envelope);
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
        let message = self.inner.notice(notice);
        let topic = match notice {
            Notice::Gap { topic, .. }
            | Notice::EpochChanged { topic, .. }
            | Notice::Unavailable { topic } => topic,
        };
        tracing::warn!(?notice, "redis broker: order could not be kept whole");
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
        &self,
        link: &mut Link,
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
                    .query_async(&mut link.conn),
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
        link: &mut Link,
        topic: &str,
    ) -> redis::RedisResult<(u64, Option<String>)> {
        let (offset, epoch): (Option<u64>, Option<String>) = self
            .inner
            .timeout(
                redis::pipe()
                    .get(self.inner.key(topic, "o"))
                    .get(self.inner.key(topic, "e"))
                    .query_async(&mut link.conn),
            )
            .await?;
        Ok((offset.unwrap_or(0), epoch))
    }

    /// Subscribes the node to `topic` and brings it up to date: a topic
    /// with a baseline gets what it missed, a new one starts now.
    async fn sync(&mut self, link: &mut Link, topic: &str) -> redis::RedisResult<()> {
        self.inner
            .timeout(link.sink.subscribe(self.inner.channel(topic)))
            .await?;
        // Subscribed first, then read the head: whatever is published in
        // between arrives on the channel too and is skipped as already
        // delivered (its offset is at most the head's).
        let (offset, epoch) = self.head(link, topic).await?;
        let state = self.topics.entry(topic.to_owned()).or_default();
        let (after, synced) = (state.last, state.synced);
        let old_epoch = state.epoch.clone();
        state.last = offset;
        state.synced = true;
        state.epoch = epoch.clone();
        if !synced {
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
        match (&old_epoch, &epoch) {
            (Some(old), Some(new)) if old != new => {
                self.notify(
                    Target::Topic,
                    &Notice::EpochChanged {
                        topic: topic.to_owned(),
                        epoch: new.clone(),
                    },
                );
                self.fill(link, Target::Topic, topic, new, 0, offset).await
            }
            (_, Some(new)) => {
                self.fill(link, Target::Topic, topic, new, after, offset)
                    .await
            }
            _ => Ok(()),
        }
    }

    async fn on_message(&mut self, link: &mut Link, message: redis::Msg) -> redis::RedisResult<()> {
        let Some(topic) = self
            .inner
            .topic_of(message.get_channel_name())
            .map(str::to_owned)
        else {
            return Ok(());
        };
        let Some((offset, epoch, body)) = wire::split_published(message.get_payload_bytes()) else {
            tracing::warn!(topic, "redis broker: unreadable message skipped");
            return Ok(());
        };
        let Some(state) = self.topics.get_mut(&topic) else {
            return Ok(()); // unsubscribed meanwhile
        };
        let mut after = state.last;
        if state.epoch.as_deref() != Some(epoch.as_str()) {
            let changed = state.epoch.is_some();
            state.epoch = Some(epoch.clone());
            if changed {
                after = 0;
                state.last = 0;
                self.notify(
                    Target::Topic,
                    &Notice::EpochChanged {
                        topic: topic.clone(),
                        epoch: epoch.clone(),
                    },
                );
            }
        }
        if offset <= after {
            return Ok(()); // delivered already (filled from history)
        }
        if offset > after + 1 {
            // A missed pub/sub message: fetch it from the history.
            self.fill(link, Target::Topic, &topic, &epoch, after, offset - 1)
                .await?;
        }
        if let Some(envelope) = envelope(&topic, offset, &epoch, body) {
            self.send(Target::Topic, &envelope);
        }
        if let Some(state) = self.topics.get_mut(&topic) {
            state.last = offset;
        }
        Ok(())
    }

    async fn on_command(
        &mut self,
        link: Option<&mut Link>,
        command: Command,
    ) -> redis::RedisResult<()> {
        match command {
            Command::Added(topic) => {
                if self.topics.contains_key(&topic) {
                    return Ok(());
                }
                let blind = link.is_none();
                self.topics.insert(
                    topic.clone(),
                    TopicState {
                        blind,
                        ..TopicState::default()
                    },
                );
                if let Some(link) = link {
                    self.sync(link, &topic).await?;
                }
            }
            Command::Removed(topic) => {
                let still = self
                    .inner
                    .server
                    .get()
                    .is_some_and(|s| s.subscriber_count(&topic) > 0);
                if still || self.topics.remove(&topic).is_none() {
                    return Ok(());
                }
                self.inner
                    .elsewhere
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&topic);
                if let Some(link) = link {
                    self.inner
                        .timeout(link.sink.unsubscribe(self.inner.channel(&topic)))
                        .await?;
                    let _: () = self
                        .inner
                        .timeout(
                            link.conn
                                .hdel(self.inner.key(&topic, "p"), self.inner.node.to_string()),
                        )
                        .await?;
                }
            }
            Command::Resume { conn, topic, since } => {
                let result = match link {
                    Some(link) => self.history(link, &conn, &topic, since.as_ref()).await,
                    None => Ok(false),
                };
                if !matches!(result, Ok(true)) {
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
                }
                // Nothing else reaches the node's subscribers until this
                // task moves on: the client's next message is the one after
                // the history it was given.
                let _ = conn.subscribe(&topic);
                result?;
            }
        }
        Ok(())
    }

    /// Brings `topic` up to date on this node and hands `conn` what it
    /// missed after `since`. `Ok(true)` once done.
    async fn history(
        &mut self,
        link: &mut Link,
        conn: &Connection,
        topic: &str,
        since: Option<&Position>,
    ) -> redis::RedisResult<bool> {
        if !self.topics.get(topic).is_some_and(|s| s.synced) {
            self.topics.entry(topic.to_owned()).or_default();
            self.sync(link, topic).await?;
        }
        let (last, epoch) = self
            .topics
            .get(topic)
            .map(|s| (s.last, s.epoch.clone()))
            .unwrap_or_default();
        match (since, &epoch) {
            (Some(since), Some(ours)) if *ours == since.epoch => {
                self.fill(link, Target::Client(conn), topic, ours, since.offset, last)
                    .await?;
            }
            (Some(_), Some(ours)) => {
                self.notify(
                    Target::Client(conn),
                    &Notice::EpochChanged {
                        topic: topic.to_owned(),
                        epoch: ours.clone(),
                    },
                );
                self.fill(link, Target::Client(conn), topic, ours, 0, last)
                    .await?;
            }
            _ => {}
        }
        Ok(true)
    }

    /// Writes this node's counts and reads the others'.
    async fn heartbeat(&mut self, link: &mut Link) -> redis::RedisResult<()> {
        let Some(server) = self.inner.server.get().cloned() else {
            return Ok(());
        };
        let ttl = self.inner.config.presence_ttl;
        let now = now_ms();
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
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (i, topic) in topics.iter().enumerate() {
            let key = self.inner.key(topic, "p");
            if i < held {
                let entry = format!(
                    "{}:{}",
                    server.subscriber_count(topic),
                    now + ttl.as_millis() as u64
                );
                pipe.hset(&key, &node, entry).ignore();
                pipe.pexpire(&key, (ttl.as_millis() * 2) as i64).ignore();
            }
            pipe.hgetall(&key);
        }
        let all: Vec<HashMap<String, String>> =
            self.inner.timeout(pipe.query_async(&mut link.conn)).await?;
        let mut stale = redis::pipe();
        let mut any_stale = false;
        for (topic, entries) in topics.iter().zip(all) {
            let mut elsewhere = 0;
            for (other, entry) in entries {
                if other == node {
                    continue;
                }
                let parsed = entry
                    .split_once(':')
                    .and_then(|(c, e)| Some((c.parse::<usize>().ok()?, e.parse::<u64>().ok()?)));
                match parsed {
                    Some((count, expires)) if expires > now => elsewhere += count,
                    _ => {
                        stale.hdel(self.inner.key(topic, "p"), other).ignore();
                        any_stale = true;
                    }
                }
            }
            self.inner
                .elsewhere
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(topic.clone(), elsewhere);
        }
        // Every count is up to date before anyone is told of one.
        for topic in &topics {
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
        if any_stale {
            let _: () = self
                .inner
                .timeout(stale.query_async(&mut link.conn))
                .await?;
        }
        Ok(())
    }

    async fn connect(&mut self) -> redis::RedisResult<Link> {
        let pubsub = self
            .inner
            .timeout(self.inner.client.get_async_pubsub())
            .await?;
        let (sink, stream) = pubsub.split();
        let conn = self.inner.connect().await?;
        let mut link = Link { sink, stream, conn };
        let topics: Vec<String> = self.topics.keys().cloned().collect();
        for topic in topics {
            self.sync(&mut link, &topic).await?;
        }
        Ok(link)
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
    let mut delivery = Delivery {
        inner: inner.clone(),
        topics: HashMap::new(),
        reported: HashMap::new(),
    };
    let mut link: Option<Link> = None;
    let mut backoff = MIN_BACKOFF;
    let mut retry_at = Instant::now();
    let mut heartbeat = tokio::time::interval(inner.config.presence_ttl / 3);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Connect before serving the first command, so that a node starting
    // beside a healthy Redis never takes subscriptions blind.
    let mut was_down = false;
    match delivery.connect().await {
        Ok(l) => link = Some(l),
        Err(e) => {
            tracing::warn!(error = %e, "redis unreachable at start: serving locally, retrying with backoff");
            was_down = true;
            retry_at = Instant::now() + backoff;
        }
    }
    loop {
        let result = tokio::select! {
            command = commands.recv() => match command {
                Some(command) => delivery.on_command(link.as_mut(), command).await,
                None => return,
            },
            message = async { link.as_mut()?.stream.next().await }, if link.is_some() => match message {
                Some(message) => {
                    let Some(l) = link.as_mut() else { continue };
                    delivery.on_message(l, message).await
                }
                None => Err(redis::RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "pub/sub connection closed",
                ))),
            },
            () = tokio::time::sleep_until(retry_at), if link.is_none() => {
                match delivery.connect().await {
                    Ok(l) => {
                        link = Some(l);
                        backoff = MIN_BACKOFF;
                        if was_down {
                            tracing::info!("redis reachable again: subscriptions restored, gaps filled");
                        }
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            },
            _ = heartbeat.tick(), if link.is_some() => match link.as_mut() {
                Some(l) => delivery.heartbeat(l).await,
                None => Ok(()),
            },
        };
        if let Err(e) = result {
            if !was_down || link.is_some() {
                tracing::warn!(error = %e, "redis subscriber link down: reconnecting with backoff");
            }
            was_down = true;
            link = None;
            retry_at = Instant::now() + backoff;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        } else if link.is_some() {
            was_down = false;
        }
    }
}
