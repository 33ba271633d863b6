//! The publisher task: runs the ordering script for this node's publishes,
//! in the order they were made, in pipelined batches (one per shard of a
//! cluster, sent side by side); while a shard is unreachable it delivers
//! the publishes bound for it to this node's own subscribers at once,
//! keeps them in a bounded buffer and retries with backoff.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::shards::Shards;
use crate::{Envelope, Inner, Publish, wire};

const BATCH: usize = 64;
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Stands for "no shard known" (the slot map could not be read).
const UNKNOWN: &str = "?";

struct Pending {
    publish: Publish,
    /// This node's sequence number, in the order publishes reached this
    /// task (the script drops a (node, sequence) it has seen).
    seq: u64,
    /// The encoded body.
    body: bytes::Bytes,
    /// Already delivered to this node's subscribers (Redis was down).
    local: bool,
    /// Acknowledged by Redis: leaves the buffer.
    done: bool,
    /// What it counts in [`Inner::queued_bytes`].
    size: usize,
}

/// A shard that failed: when to try it again, and the next wait.
struct Down {
    retry_at: Instant,
    backoff: Duration,
}

struct Publisher {
    inner: Arc<Inner>,
    shards: Shards,
    pending: VecDeque<Pending>,
    down: HashMap<Arc<str>, Down>,
    /// Connections (shard, generation) the script was loaded on.
    loaded: HashSet<(Arc<str>, u64)>,
    dropped: u64,
    seq: u64,
    hash: String,
    /// The offset of this node's last publish Redis ordered, per topic
    /// with subscribers here (until they have it).
    acked: HashMap<String, u64>,
}

impl Publisher {
    fn push(&mut self, publish: Publish) {
        self.seq += 1;
        let size = publish.size();
        let body = wire::encode(self.inner.node, self.seq, publish.except, &publish.message);
        let mut pending = Pending {
            publish,
            seq: self.seq,
            body,
            local: false,
            done: false,
            size,
        };
        if self.is_down(&pending.publish.topic) {
            // Only while a shard is down: is an earlier one of the topic
            // still waiting, not delivered here?
            let topic = &pending.publish.topic;
            let earlier_waits = self
                .pending
                .iter()
                .any(|p| !p.local && !p.done && p.publish.topic == *topic);
            self.deliver_locally(&mut pending, earlier_waits);
        }
        if self.pending.len() >= self.inner.config.publish_buffer.max(1) {
            if let Some(old) = self.pending.pop_front() {
                self.dropped += 1;
                self.forget(&old);
                self.release(old.size);
                tracing::error!(
                    topic = old.publish.topic,
                    dropped = self.dropped,
                    "redis publish buffer full: oldest publish dropped (delivered on this node only)"
                );
            }
        }
        self.pending.push_back(pending);
    }

    /// Whether the shard `topic` is bound for is failing.
    fn is_down(&self, topic: &str) -> bool {
        let owner = self.shards.owner(topic).unwrap_or_else(|| UNKNOWN.into());
        self.down.contains_key(&owner)
    }

    fn forget(&self, pending: &Pending) {
        if pending.local {
            self.inner
                .delivered_locally
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&pending.seq);
        }
    }

    /// The next batch of each shard that is not waiting out a backoff: up
    /// to [`BATCH`] of its publishes, in the order they were made.
    fn batches(&self, now: Instant) -> Vec<(Arc<str>, Vec<usize>)> {
        let mut batches: Vec<(Arc<str>, Vec<usize>)> = Vec::new();
        // Publishes of a topic still waiting for the node's subscription
        // stay (all of them, so their order holds).
        let syncing = self.inner.syncing.lock().unwrap_or_else(|p| p.into_inner());
        for (i, pending) in self.pending.iter().enumerate() {
            let owner = self
                .shards
                .owner(&pending.publish.topic)
                .unwrap_or_else(|| UNKNOWN.into());
            if self.down.get(&owner).is_some_and(|d| d.retry_at > now)
                || (!syncing.is_empty() && syncing.contains(&pending.publish.topic))
            {
                continue;
            }
            match batches.iter_mut().find(|(addr, _)| *addr == owner) {
                Some((_, batch)) if batch.len() < BATCH => batch.push(i),
                Some(_) => {}
                None => batches.push((owner, vec![i])),
            }
        }
        batches
    }

    /// One round: every shard's next batch, side by side.
    async fn round(&mut self) {
        let now = Instant::now();
        let batches = self.batches(now);
        // Connections are made one after the other (each is quick, or
        // fails quickly); the batches then travel together.
        let mut sends = Vec::new();
        for (addr, batch) in batches {
            if &*addr == UNKNOWN {
                // No slot map: read it; the batch goes in the next round.
                match self.shards.refresh().await {
                    Ok(()) => {
                        // A master that failed over is no master now: what
                        // was bound for it goes to its successor.
                        let shards = &self.shards;
                        let was_down = !self.down.is_empty();
                        self.down
                            .retain(|a, _| &**a != UNKNOWN && shards.is_master(a));
                        if was_down && self.down.is_empty() {
                            tracing::info!("redis reachable again: publishing resumed");
                        }
                    }
                    Err(e) => self.settle(&addr, &batch, Err(e)),
                }
                continue;
            }
            match self.prepare(&addr).await {
                Ok(conn) => {
                    let pipe = self.pipeline(&batch);
                    sends.push((addr, batch, conn, pipe));
                }
                Err(e) => self.settle(&addr, &batch, Err(e)),
            }
        }
        let inner = &self.inner;
        let results = futures_util::future::join_all(sends.into_iter().map(
            |(addr, batch, mut conn, pipe)| async move {
                let result = inner.timeout(pipe.query_async(&mut conn)).await;
                (addr, batch, result)
            },
        ))
        .await;
        for (addr, batch, result) in results {
            self.settle(&addr, &batch, result);
        }
        let mut released = 0;
        self.pending.retain(|p| {
            if p.done {
                released += p.size;
            }
            !p.done
        });
        self.release(released);
    }

    /// Whether a publish of `topic`, with no earlier one of the topic
    /// still waiting here, may reach this node's subscribers now, ahead
    /// of Redis: only once they have every publish of this node that Redis
    /// already ordered (else it would overtake them).
    fn may_deliver_locally(&mut self, topic: &str) -> bool {
        match self.acked.get(topic) {
            None => true,
            Some(&offset) if self.inner.delivered(topic) >= offset => {
                self.acked.remove(topic);
                true
            }
            Some(_) => false,
        }
    }

    /// Delivers `pending` to this node's subscribers at once (its shard is
    /// unreachable), if that keeps this node's publishes of its topic in
    /// the order they were made: no earlier one waits, and Redis's copies
    /// of the earlier ones were delivered. Otherwise it waits, and reaches
    /// them through Redis.
    /// `earlier_waits`: an earlier publish of the topic is still pending
    /// and not delivered here. Returns whether it delivered.
    fn deliver_locally(&mut self, pending: &mut Pending, earlier_waits: bool) -> bool {
        let topic = &pending.publish.topic;
        if pending.local {
            return true;
        }
        if earlier_waits || !self.may_deliver_locally(topic) {
            return false;
        }
        pending.local = true;
        let inner = &self.inner;
        let mut delivered = inner
            .delivered_locally
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        delivered.insert(pending.seq);
        // A publish that never comes back (its topic lost every subscriber
        // here meanwhile) must not stay forever: keep the recent ones only.
        let keep = 2 * inner.config.publish_buffer.max(1) as u64;
        if delivered.len() as u64 > keep {
            let floor = pending.seq.saturating_sub(keep);
            delivered.retain(|&seq| seq > floor);
        }
        drop(delivered);
        let p = &pending.publish;
        inner.deliver_local(&Envelope {
            topic: p.topic.clone(),
            offset: 0,
            epoch: String::new(),
            node: inner.node,
            except: p.except,
            message: p.message.clone(),
        });
        true
    }

    /// Delivers locally, in order, the pending publishes bound for shards
    /// that are down and not yet delivered, as far as the order allows.
    fn deliver_held_locally(&mut self) {
        let mut pending = std::mem::take(&mut self.pending);
        let mut waiting: HashSet<String> = HashSet::new();
        for entry in pending.iter_mut() {
            if entry.local || !self.is_down(&entry.publish.topic) {
                continue;
            }
            let earlier_waits = waiting.contains(&entry.publish.topic);
            if !self.deliver_locally(entry, earlier_waits) {
                waiting.insert(entry.publish.topic.clone());
            }
        }
        self.pending = pending;
    }

    /// `bytes` of publishes left the buffer.
    fn release(&self, bytes: usize) {
        self.inner
            .queued_bytes
            .fetch_sub(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// A connection to `addr` with the script loaded.
    async fn prepare(
        &mut self,
        addr: &Arc<str>,
    ) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        let (mut conn, generation) = self.shards.conn_to(addr).await?;
        if !self.loaded.contains(&(addr.clone(), generation)) {
            // A new connection (maybe to a master just promoted, whose
            // script cache is empty).
            let _: String = self
                .inner
                .timeout(
                    redis::cmd("SCRIPT")
                        .arg("LOAD")
                        .arg(wire::PUBLISH_SCRIPT)
                        .query_async(&mut conn),
                )
                .await?;
            self.loaded.insert((addr.clone(), generation));
        }
        Ok(conn)
    }

    /// The ordering script for each publish of `batch`, in order.
    fn pipeline(&self, batch: &[usize]) -> redis::Pipeline {
        let config = &self.inner.config;
        let ttl = config.history_ttl.as_secs().max(1);
        let node = self.inner.node.to_string();
        let command = self.inner.backend.publish_command();
        let mut pipe = redis::pipe();
        for &i in batch {
            let pending = &self.pending[i];
            let p = &pending.publish;
            let epoch = format!("{:016x}", rand::rng().random::<u64>());
            pipe.cmd("EVALSHA")
                .arg(&self.hash)
                .arg(4)
                .arg(self.inner.key(&p.topic, "o"))
                .arg(self.inner.key(&p.topic, "e"))
                .arg(self.inner.key(&p.topic, "s"))
                .arg(self.inner.key(&p.topic, "n"))
                .arg(&node)
                .arg(pending.seq)
                .arg(epoch)
                .arg(&pending.body[..])
                .arg(config.history_len)
                .arg(ttl)
                .arg(self.inner.channel(&p.topic))
                .arg(command);
        }
        pipe
    }

    /// Acts on a shard's result: acknowledged publishes leave the buffer;
    /// on failure the shard is forgotten and waits out a backoff, and its
    /// publishes reach this node's subscribers at once.
    fn settle(
        &mut self,
        addr: &Arc<str>,
        batch: &[usize],
        result: redis::RedisResult<Vec<redis::Value>>,
    ) {
        match result {
            Ok(offsets) => {
                // Those delivered locally are skipped (and forgotten) by the
                // delivery task when they come back through Redis.
                for (&i, offset) in batch.iter().zip(offsets) {
                    let pending = &mut self.pending[i];
                    pending.done = true;
                    let topic = &pending.publish.topic;
                    let redis::Value::Int(offset) = offset else {
                        continue;
                    };
                    let held_here = self
                        .inner
                        .server
                        .get()
                        .is_some_and(|s| s.subscriber_count(topic) > 0);
                    if offset > 0 && held_here {
                        // No new key (and no allocation) per publish once
                        // the topic is known.
                        match self.acked.get_mut(topic.as_str()) {
                            Some(last) => *last = offset as u64,
                            None => {
                                self.acked.insert(topic.clone(), offset as u64);
                            }
                        }
                    }
                }
                if self.acked.len() > 4096 {
                    let inner = &self.inner;
                    self.acked
                        .retain(|topic, offset| inner.delivered(topic) < *offset);
                }
                if self.down.remove(addr).is_some() {
                    tracing::info!(shard = %addr, "redis reachable again: publishing resumed");
                }
            }
            Err(e) => {
                self.shards.forget(addr);
                self.shards.learn(&e);
                let now = Instant::now();
                match self.down.get_mut(addr) {
                    Some(down) => {
                        down.backoff = (down.backoff * 2).min(MAX_BACKOFF);
                        down.retry_at = now + down.backoff;
                    }
                    None => {
                        tracing::warn!(
                            shard = %addr,
                            error = %e,
                            "redis unreachable: publishing on this node only, retrying with backoff"
                        );
                        self.down.insert(
                            addr.clone(),
                            Down {
                                retry_at: now + MIN_BACKOFF,
                                backoff: MIN_BACKOFF,
                            },
                        );
                    }
                }
                self.deliver_held_locally();
            }
        }
    }

    /// When the next round can do something: at once if a publish is
    /// bound for a shard that is not waiting, else when the first wait
    /// ends (`None`: nothing pending).
    fn next_round(&self) -> Option<Instant> {
        if self.pending.is_empty() {
            return None;
        }
        let now = Instant::now();
        let mut earliest: Option<Instant> = None;
        let syncing = self.inner.syncing.lock().unwrap_or_else(|p| p.into_inner());
        for pending in &self.pending {
            let owner = self
                .shards
                .owner(&pending.publish.topic)
                .unwrap_or_else(|| UNKNOWN.into());
            let at = match self.down.get(&owner) {
                Some(down) if down.retry_at > now => down.retry_at,
                // Waiting for the node's subscription (a few milliseconds):
                // look again shortly.
                _ if !syncing.is_empty() && syncing.contains(&pending.publish.topic) => {
                    now + Duration::from_millis(2)
                }
                _ => return Some(now),
            };
            earliest = Some(earliest.map_or(at, |e| e.min(at)));
        }
        earliest
    }
}

pub(crate) async fn run(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<Publish>) {
    let script = redis::Script::new(wire::PUBLISH_SCRIPT);
    let mut publisher = Publisher {
        shards: Shards::new(inner.clone(), None),
        inner,
        pending: VecDeque::new(),
        down: HashMap::new(),
        loaded: HashSet::new(),
        dropped: 0,
        seq: 0,
        hash: script.get_hash().to_owned(),
        acked: HashMap::new(),
    };
    loop {
        match publisher.next_round() {
            None => match rx.recv().await {
                Some(p) => publisher.push(p),
                None => return,
            },
            Some(at) if at > Instant::now() => {
                // Every pending publish waits for a shard to come back:
                // take new publishes meanwhile, and deliver locally those
                // the order now allows (this node caught up with Redis's
                // copies of the earlier ones).
                let check = Instant::now() + Duration::from_millis(20);
                tokio::select! {
                    () = tokio::time::sleep_until(at.min(check)) => {
                        publisher.deliver_held_locally();
                    }
                    p = rx.recv() => match p {
                        Some(p) => publisher.push(p),
                        None => return,
                    },
                }
            }
            Some(_) => {}
        }
        while let Ok(p) = rx.try_recv() {
            publisher.push(p);
        }
        if publisher
            .next_round()
            .is_some_and(|at| at <= Instant::now())
        {
            publisher.round().await;
        }
    }
}
