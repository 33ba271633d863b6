//! One open connection as the hub sees it: its outbound queue and what
//! its handles share (info, subscriptions, user data, activity times).

use std::any::Any;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use hubbub_proto::{CloseCode, DeflateParams, MessageKind, OpCode};
use uuid::Uuid;

use crate::config::Backpressure;
use crate::error::{Error, Kind};
use crate::hub::HubState;
use crate::info::ConnectionInfo;
use crate::message::{Outgoing, compress_alone};
use crate::metrics::Count;
use crate::outbox::Queue;

/// `last_seen` value meaning "bytes arrived since the keepalive sweep last
/// looked": a read stores it (no clock read per read), the sweep turns it
/// into its own time.
pub(crate) const ACTIVE: u64 = u64::MAX;

/// A connection's subscriptions.
#[derive(Default)]
struct Subscriptions {
    /// Boxed on the first subscription: 8 bytes, not 48, on connections
    /// that never subscribe.
    #[expect(
        clippy::box_collection,
        reason = "8 bytes instead of 48 per connection"
    )]
    topics: Option<Box<HashSet<Box<str>>>>,
    /// The connection left the hub: no more subscriptions.
    gone: bool,
}

/// One value of a connection's typed user data.
type UserData = Box<dyn Any + Send + Sync>;

/// State shared by a connection's handles, its driver and the hub.
pub(crate) struct Member {
    pub(crate) info: ConnectionInfo,
    pub(crate) queue: Queue,
    /// When bytes last arrived, in the hub's milliseconds, as the keepalive
    /// sweep saw it; [`ACTIVE`] after a read.
    pub(crate) last_seen: AtomicU64,
    /// When the keepalive last pinged, in the hub's milliseconds.
    pub(crate) last_ping: AtomicU64,
    /// When bytes were last written to the peer, as the sweep saw it;
    /// [`ACTIVE`] after a write (the stalled-reader check).
    pub(crate) last_progress: AtomicU64,
    pub(crate) hub: Arc<HubState>,
    /// The lock is taken before the hub's topics lock, never after.
    subscriptions: Mutex<Subscriptions>,
    /// Typed user data, one value per type (boxed when first set: 16
    /// bytes, not 32, on connections that keep none).
    #[expect(
        clippy::box_collection,
        reason = "8 bytes instead of 24 per connection"
    )]
    data: Mutex<Option<Box<Vec<UserData>>>>,
    /// permessage-deflate, when negotiated.
    pub(crate) deflate: Option<DeflateParams>,
    /// The client side of a connection: every frame is masked with a fresh
    /// key, so the driver encodes them all (nothing is encoded ahead or
    /// shared with other queues).
    client: bool,
}

fn relock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update under these locks leaves the data consistent.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Member {
    pub(crate) fn new(
        info: ConnectionInfo,
        hub: Arc<HubState>,
        max_queue_bytes: usize,
        backpressure: Backpressure,
        deflate: Option<DeflateParams>,
    ) -> Self {
        let now = hub.now_ms();
        Self {
            info,
            queue: Queue::new(max_queue_bytes, backpressure, hub.budget.clone()),
            last_seen: AtomicU64::new(now),
            last_ping: AtomicU64::new(now),
            last_progress: AtomicU64::new(now),
            hub,
            subscriptions: Mutex::default(),
            data: Mutex::default(),
            deflate,
            client: false,
        }
    }

    /// As [`Member::new`], for the client side of a connection.
    pub(crate) fn new_client(
        info: ConnectionInfo,
        hub: Arc<HubState>,
        max_queue_bytes: usize,
        backpressure: Backpressure,
        deflate: Option<DeflateParams>,
    ) -> Self {
        Self {
            client: true,
            ..Self::new(info, hub, max_queue_bytes, backpressure, deflate)
        }
    }

    pub(crate) fn id(&self) -> Uuid {
        self.info.id()
    }

    /// Bytes went out to the peer: not a stalled reader.
    pub(crate) fn wrote(&self) {
        self.last_progress.store(ACTIVE, Ordering::Relaxed);
    }

    /// Counts a queued message, or an overflow (logged when it closes).
    fn counted(&self, result: Result<usize, Error>) -> Result<(), Error> {
        let metrics = &self.hub.metrics;
        match result {
            Ok(len) => {
                metrics.add(Count::MessagesOut, 1);
                metrics.add(Count::BytesOut, len as u64);
                Ok(())
            }
            Err(e) => {
                if e.is_queue_full() {
                    metrics.overflowed();
                    if e.close_code().is_some() {
                        tracing::warn!(id = %self.id(), "{e}: closing with 1008");
                    }
                }
                Err(e)
            }
        }
    }

    /// Queues a message for this connection alone: an uncompressed frame is
    /// built straight into the queue; a compressed one is made here, or by
    /// the driver when this side keeps its compression context.
    pub(crate) fn send(&self, kind: MessageKind, payload: Bytes) -> Result<(), Error> {
        if self.client {
            return self.counted(self.queue.push_deferred(kind.opcode(), payload));
        }
        let result = match &self.deflate {
            Some(params) if payload.len() >= params.threshold => {
                if params.local_no_context_takeover {
                    self.queue
                        .push_encoded(&compress_alone(kind, &payload, params), false)
                } else {
                    self.queue.push_deferred(kind.opcode(), payload)
                }
            }
            _ => self.queue.push(kind.opcode(), payload),
        };
        self.counted(result)
    }

    /// Queues a control frame (payload at most 125 bytes, checked by the
    /// caller).
    pub(crate) fn send_control(&self, opcode: OpCode, payload: Bytes) -> Result<(), Error> {
        if self.client {
            return self.counted(self.queue.push_deferred(opcode, payload));
        }
        self.counted(self.queue.push(opcode, payload))
    }

    /// Queues a message shared with other connections in the form this one
    /// needs: plain, compressed once for every receiver of the same window
    /// and level, or compressed with this connection's own context.
    pub(crate) fn enqueue(&self, message: &Outgoing) -> Result<(), Error> {
        if self.client {
            let payload = message.payload.clone();
            return self.counted(self.queue.push_deferred(message.kind.opcode(), payload));
        }
        let result = match &self.deflate {
            Some(params) if message.payload.len() >= params.threshold => {
                if params.local_no_context_takeover {
                    let window = self.hub.broadcast_window(params.local_max_window_bits);
                    let frame = message.compressed(params, window, &self.hub.budget);
                    self.queue.push_encoded(&frame, true)
                } else {
                    self.queue
                        .push_deferred(message.kind.opcode(), message.payload.clone())
                }
            }
            _ => self
                .queue
                .push_encoded(message.plain(&self.hub.budget), true),
        };
        self.counted(result)
    }

    /// Asks the driver to close after what is queued.
    pub(crate) fn close(&self, code: CloseCode, reason: &str) -> Result<(), Error> {
        self.queue.request_close(code, reason)
    }

    /// Subscribes to `topic`; returns whether it was new.
    pub(crate) fn subscribe(self: &Arc<Self>, topic: &str) -> Result<bool, Error> {
        let mut subscriptions = relock(&self.subscriptions);
        if subscriptions.gone || !self.queue.is_open() {
            return Err(Error::new(Kind::Closed));
        }
        let added = subscriptions
            .topics
            .get_or_insert_with(Box::default)
            .insert(topic.into());
        if added {
            // Under this connection's lock: `leave_topics` cannot run in
            // between and miss it.
            self.hub.topics.subscribe(topic, self);
        }
        Ok(added)
    }

    /// Unsubscribes from `topic`; returns whether it was subscribed.
    pub(crate) fn unsubscribe(&self, topic: &str) -> bool {
        let mut subscriptions = relock(&self.subscriptions);
        let was = subscriptions
            .topics
            .as_mut()
            .is_some_and(|topics| topics.remove(topic));
        if was {
            self.hub.topics.unsubscribe(topic, self.id());
        }
        was
    }

    /// Ends every subscription for good (the connection left the hub);
    /// returns the topics it held.
    pub(crate) fn leave_topics(&self) -> Vec<Box<str>> {
        let mut subscriptions = relock(&self.subscriptions);
        subscriptions.gone = true;
        subscriptions
            .topics
            .take()
            .map(|topics| topics.into_iter().collect())
            .unwrap_or_default()
    }

    /// The topics this connection is subscribed to.
    pub(crate) fn topics(&self) -> Vec<String> {
        relock(&self.subscriptions)
            .topics
            .iter()
            .flat_map(|topics| topics.iter())
            .map(|t| t.to_string())
            .collect()
    }

    pub(crate) fn is_subscribed(&self, topic: &str) -> bool {
        relock(&self.subscriptions)
            .topics
            .as_ref()
            .is_some_and(|topics| topics.contains(topic))
    }

    /// Attaches a boxed value, replacing one of the same type.
    pub(crate) fn set_data(&self, value: Box<dyn Any + Send + Sync>) {
        let mut data = relock(&self.data);
        let data = data.get_or_insert_default();
        let type_id = (*value).type_id();
        match data.iter_mut().find(|v| (***v).type_id() == type_id) {
            Some(slot) => *slot = value,
            None => data.push(value),
        }
    }

    /// Runs `f` on the value of type `T` (or `None`), under the data lock.
    pub(crate) fn with_data<T: Any + Send + Sync, R>(
        &self,
        f: impl FnOnce(Option<&mut T>) -> R,
    ) -> R {
        let mut data = relock(&self.data);
        f(data
            .iter_mut()
            .flat_map(|d| d.iter_mut())
            .find_map(|v| v.downcast_mut::<T>()))
    }

    /// Removes the value of type `T`; returns whether there was one.
    pub(crate) fn remove_data<T: Any + Send + Sync>(&self) -> bool {
        let mut data = relock(&self.data);
        let Some(values) = data.as_mut() else {
            return false;
        };
        let before = values.len();
        values.retain(|v| !v.is::<T>());
        let removed = values.len() != before;
        if values.is_empty() {
            *data = None;
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    pub(crate) fn member(hub: &Arc<HubState>) -> Arc<Member> {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let mut head = bytes::BytesMut::from(&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..]);
        let request = hubbub_proto::handshake::RequestParser::new(&Default::default())
            .parse(&mut head)
            .unwrap()
            .unwrap();
        let info = ConnectionInfo::new(addr, addr, request, None);
        Arc::new(Member::new(
            info,
            hub.clone(),
            1 << 20,
            Backpressure::Close,
            None,
        ))
    }

    /// Receivers that asked for different windows (9 to 15 bits) get one
    /// compressed form of a broadcast, made with the smallest window.
    #[test]
    fn a_broadcast_is_compressed_once_whatever_windows_receivers_asked_for() {
        use crate::message::{Message, Outgoing};
        use crate::outbox::Item;
        let hub = HubState::new(None);
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let members: Vec<_> = (9..=15u8)
            .rev()
            .map(|bits| {
                let mut head = bytes::BytesMut::from(&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..]);
                let request = hubbub_proto::handshake::RequestParser::new(&Default::default())
                    .parse(&mut head)
                    .unwrap()
                    .unwrap();
                let params = DeflateParams {
                    local_no_context_takeover: true,
                    remote_no_context_takeover: true,
                    local_max_window_bits: bits,
                    threshold: 0,
                    level: 1,
                };
                let info = ConnectionInfo::new(addr, addr, request, None);
                let member = Arc::new(Member::new(
                    info,
                    hub.clone(),
                    1 << 20,
                    Backpressure::Close,
                    Some(params),
                ));
                hub.register(&member);
                member
            })
            .collect();
        // Incompressible enough to stay a large, shared frame.
        let mut state = 1u32;
        let noise: Vec<u8> = (0..20_000)
            .map(|_| {
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                (state >> 16) as u8
            })
            .collect();
        let message = Outgoing::new(Message::Binary(noise.into()));
        let mut bodies = Vec::new();
        for member in &members {
            member.enqueue(&message).unwrap();
            let mut out = std::collections::VecDeque::new();
            member.queue.drain(&mut out, false);
            let Some(Item::Shared(body)) = out.get(1) else {
                panic!("expected a shared payload: {out:?}");
            };
            bodies.push(body.as_ptr());
        }
        assert!(
            bodies.windows(2).all(|w| w[0] == w[1]),
            "more than one encoding"
        );
        assert_eq!(hub.broadcast_window(15), 9);
        for member in &members {
            hub.unregister(member);
        }
        assert_eq!(hub.broadcast_window(15), 15);
    }

    /// Subscriptions racing with connections leaving the hub never leave a
    /// departed connection in a topic.
    #[test]
    fn subscribing_while_connections_leave_leaves_no_dead_subscriber() {
        for _ in 0..50 {
            let hub = HubState::new(None);
            let members: Vec<_> = (0..8).map(|_| member(&hub)).collect();
            for m in &members {
                hub.register(m);
            }
            let subscribers: Vec<_> = members
                .iter()
                .map(|m| {
                    let m = m.clone();
                    std::thread::spawn(move || {
                        for i in 0..200 {
                            if m.subscribe(&format!("t{}", i % 7)).is_err() {
                                break;
                            }
                        }
                    })
                })
                .collect();
            for m in &members {
                hub.unregister(m);
            }
            for s in subscribers {
                s.join().unwrap();
            }
            assert!(hub.topics.names().is_empty(), "{:?}", hub.topics.names());
            assert!(hub.clients.all().is_empty());
        }
    }
}
#[cfg(test)]
mod sizes {
    /// What every open connection keeps, besides its request's fields and
    /// its slot in a connection set: its shared state and its driver. A
    /// field added to either costs every idle connection (BENCHMARKS.md,
    /// "Idle memory: where it is now"); these bounds make that a decision,
    /// not an accident.
    #[test]
    fn an_open_connections_own_state_stays_small() {
        let member = size_of::<super::Member>();
        let driver = size_of::<crate::driver::Driver<crate::set::SetStream>>();
        assert!(member <= 408, "Member grew to {member} bytes");
        assert!(driver <= 256, "Driver grew to {driver} bytes");
    }
}
