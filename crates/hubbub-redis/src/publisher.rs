//! The publisher task: runs the ordering script for this node's publishes,
//! in the order they were made, in pipelined batches; while Redis is
//! unreachable it delivers them to this node's own subscribers at once,
//! keeps them in a bounded buffer and retries with backoff.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::mpsc;

use crate::{Envelope, Inner, Publish, wire};

const BATCH: usize = 64;
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

struct Pending {
    publish: Publish,
    /// This node's sequence number, in the order publishes reached this
    /// task (the script drops a (node, sequence) it has seen).
    seq: u64,
    /// The encoded body.
    body: bytes::Bytes,
    /// Already delivered to this node's subscribers (Redis was down).
    local: bool,
}

struct Publisher {
    inner: Arc<Inner>,
    pending: VecDeque<Pending>,
    down: bool,
    dropped: u64,
    seq: u64,
}

impl Publisher {
    fn push(&mut self, publish: Publish) {
        self.seq += 1;
        let body = wire::encode(self.inner.node, self.seq, publish.except, &publish.message);
        let mut pending = Pending {
            publish,
            seq: self.seq,
            body,
            local: false,
        };
        if self.down {
            deliver_locally(&self.inner, &mut pending);
        }
        if self.pending.len() >= self.inner.config.publish_buffer.max(1) {
            if let Some(old) = self.pending.pop_front() {
                self.dropped += 1;
                self.forget(&old);
                tracing::error!(
                    topic = old.publish.topic,
                    dropped = self.dropped,
                    "redis publish buffer full: oldest publish dropped (delivered on this node only)"
                );
            }
        }
        self.pending.push_back(pending);
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

    async fn send_batch(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        hash: &str,
    ) -> redis::RedisResult<usize> {
        let n = self.pending.len().min(BATCH);
        let config = &self.inner.config;
        let ttl = config.history_ttl.as_secs().max(1);
        let node = self.inner.node.to_string();
        let mut pipe = redis::pipe();
        for pending in self.pending.iter().take(n) {
            let p = &pending.publish;
            let epoch = format!("{:016x}", rand::rng().random::<u64>());
            pipe.cmd("EVALSHA")
                .arg(hash)
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
                .arg(self.inner.channel(&p.topic));
        }
        let _: Vec<u64> = self.inner.timeout(pipe.query_async(conn)).await?;
        Ok(n)
    }
}

fn deliver_locally(inner: &Inner, pending: &mut Pending) {
    if pending.local {
        return;
    }
    pending.local = true;
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
}

pub(crate) async fn run(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<Publish>) {
    let script = redis::Script::new(wire::PUBLISH_SCRIPT);
    let hash = script.get_hash().to_owned();
    let mut publisher = Publisher {
        inner: inner.clone(),
        pending: VecDeque::new(),
        down: false,
        dropped: 0,
        seq: 0,
    };
    let mut conn: Option<redis::aio::MultiplexedConnection> = None;
    let mut backoff = MIN_BACKOFF;
    loop {
        if publisher.pending.is_empty() {
            match rx.recv().await {
                Some(p) => publisher.push(p),
                None => return,
            }
        }
        while let Ok(p) = rx.try_recv() {
            publisher.push(p);
        }
        let result = async {
            if conn.is_none() {
                let mut fresh = inner.connect().await?;
                let _: String = inner
                    .timeout(
                        redis::cmd("SCRIPT")
                            .arg("LOAD")
                            .arg(wire::PUBLISH_SCRIPT)
                            .query_async(&mut fresh),
                    )
                    .await?;
                conn = Some(fresh);
            }
            let Some(c) = conn.as_mut() else {
                unreachable!("connected above")
            };
            publisher.send_batch(c, &hash).await
        }
        .await;
        match result {
            Ok(n) => {
                // Those delivered locally are skipped (and forgotten) by the
                // delivery task when they come back through Redis.
                publisher.pending.drain(..n);
                if publisher.down {
                    publisher.down = false;
                    tracing::info!("redis reachable again: publishing resumed");
                }
                backoff = MIN_BACKOFF;
            }
            Err(e) => {
                conn = None;
                if !publisher.down {
                    publisher.down = true;
                    tracing::warn!(
                        error = %e,
                        "redis unreachable: publishing on this node only, retrying with backoff"
                    );
                }
                for pending in &mut publisher.pending {
                    deliver_locally(&publisher.inner, pending);
                }
                let sleep = tokio::time::sleep(backoff);
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        () = &mut sleep => break,
                        p = rx.recv() => match p {
                            Some(p) => publisher.push(p),
                            None => return,
                        },
                    }
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
