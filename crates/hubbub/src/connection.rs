//! The connection handle: what handlers and other tasks use to send.

use std::any::Any;
use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use atomic_waker::AtomicWaker;
use bytes::Bytes;
use hubbub_proto::{CloseCode, MAX_CLOSE_REASON, MAX_CONTROL_PAYLOAD, OpCode, Utf8Bytes};
use uuid::Uuid;

use crate::config::Backpressure;
use crate::error::{Error, Kind};
use crate::info::ConnectionInfo;
use crate::message::{COPY_THRESHOLD, Frame, Message, Outgoing, encode_small};
use crate::server::ServerShared;
use hubbub_proto::DeflateParams;
use hubbub_proto::deflate::Compressor;

/// A handle to one WebSocket connection: cheap to clone, usable from any
/// task or thread, equal and hashed by connection id.
///
/// Sends never wait: a frame is queued and the connection's task writes
/// everything queued in one wake-up with one vectored write. The queue is
/// bounded in bytes ([`crate::ServerConfig::max_queue_bytes`]); see
/// [`crate::Backpressure`].
#[derive(Clone)]
pub struct Connection {
    pub(crate) shared: Arc<Shared>,
}

/// State shared between the handles and the connection's task.
pub(crate) struct Shared {
    pub(crate) info: ConnectionInfo,
    /// Frames queued by handles; a std `Mutex` because no `.await` ever
    /// happens while it is held, and holds are a few instructions long.
    pub(crate) outbox: Mutex<Outbox>,
    /// Wakes the connection's task when something is queued.
    pub(crate) waker: AtomicWaker,
    /// The driver is delivering events and moves the outbox into its write
    /// queue before it yields, so a send need not wake it. Set by the
    /// driver without the lock; read by senders, and cleared by the
    /// driver's last drain, under the lock: a sender that sees it set holds
    /// the lock before that drain, so its frame is drained; one that sees
    /// it clear wakes the driver.
    pub(crate) driving: AtomicBool,
    /// Bytes queued or being written, for `buffered_amount` and the limit.
    pub(crate) buffered: AtomicUsize,
    pub(crate) max_queue_bytes: usize,
    pub(crate) backpressure: Backpressure,
    /// When bytes last arrived, in the server's milliseconds, as the
    /// keepalive sweep saw it; [`crate::keepalive::ACTIVE`] after a read.
    pub(crate) last_seen: AtomicU64,
    /// When the keepalive last pinged, in the server's milliseconds.
    pub(crate) last_ping: AtomicU64,
    /// The server, for topics and broadcast.
    pub(crate) server: Arc<ServerShared>,
    /// Topics this connection is subscribed to (usually none or a few).
    /// Boxed on the first subscription: 8 bytes, not 48, on connections
    /// that never subscribe.
    #[allow(clippy::box_collection)] // the point: see above
    pub(crate) topics: Mutex<Option<Box<HashSet<Box<str>>>>>,
    /// Typed user data, one value per type.
    data: Mutex<Vec<Box<dyn Any + Send + Sync>>>,
    /// permessage-deflate, when negotiated.
    pub(crate) deflate: Option<DeflateParams>,
    /// The compressor when this side keeps its context between messages;
    /// locked inside the outbox lock so that compression order is queue
    /// order.
    compressor: Mutex<Option<Box<Compressor>>>,
}

/// What handles have asked the connection's task to do.
#[derive(Default)]
pub(crate) struct Outbox {
    /// Encoded frames, in order; `tail` comes after them.
    pub(crate) frames: VecDeque<Bytes>,
    /// Small frames queued since the last large one, encoded back to back
    /// in one buffer: one allocation and one I/O slice per batch instead of
    /// per frame. The driver takes it whole (the allocation goes with it,
    /// so an idle connection keeps none). Grown exactly, then by doubling:
    /// a full buffer becomes a `Bytes` without another allocation.
    tail: Vec<u8>,
    /// Whether sends are still accepted.
    pub(crate) open: bool,
    /// A close requested by a handle, to send after `frames`.
    pub(crate) close: Option<Box<(CloseCode, String)>>,
    /// Drop the connection now, without waiting (shutdown grace expired).
    pub(crate) force: bool,
}

impl Outbox {
    /// Appends an unmasked frame with a small payload to `tail`; returns
    /// its length on the wire.
    fn push_small(&mut self, opcode: OpCode, payload: &[u8]) -> usize {
        encode_small(&mut self.tail, opcode, false, payload)
    }

    /// Appends a small encoded frame to `tail`; returns its length.
    fn push_encoded(&mut self, frame: &[u8]) -> usize {
        self.tail.extend_from_slice(frame);
        frame.len()
    }

    /// Appends an encoded frame (after `tail`); returns its length.
    fn push_frame(&mut self, frame: Frame) -> usize {
        self.flush_tail();
        let len = frame.len();
        self.frames.push_back(frame.head);
        if let Some(body) = frame.body {
            self.frames.push_back(body);
        }
        len
    }

    /// Moves `tail` to the end of `frames`.
    pub(crate) fn flush_tail(&mut self) {
        if !self.tail.is_empty() {
            let tail = Bytes::from(std::mem::take(&mut self.tail));
            self.frames.push_back(tail);
        }
    }

    /// Drops everything queued; returns the bytes dropped.
    fn clear(&mut self) -> usize {
        let dropped = self.frames.drain(..).map(|f| f.len()).sum::<usize>() + self.tail.len();
        self.tail = Vec::new();
        dropped
    }
}

impl Connection {
    pub(crate) fn new(
        info: ConnectionInfo,
        max_queue_bytes: usize,
        backpressure: Backpressure,
        server: Arc<ServerShared>,
        deflate: Option<DeflateParams>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                info,
                outbox: Mutex::new(Outbox {
                    open: true,
                    ..Outbox::default()
                }),
                waker: AtomicWaker::new(),
                driving: AtomicBool::new(false),
                buffered: AtomicUsize::new(0),
                max_queue_bytes,
                backpressure,
                last_seen: AtomicU64::new(server.now_ms()),
                last_ping: AtomicU64::new(server.now_ms()),
                server,
                topics: Mutex::new(None),
                data: Mutex::new(Vec::new()),
                deflate,
                compressor: Mutex::new(None),
            }),
        }
    }

    /// The connection's unique id.
    pub fn id(&self) -> Uuid {
        self.shared.info.id()
    }

    /// What the opening handshake told about the connection.
    pub fn info(&self) -> &ConnectionInfo {
        &self.shared.info
    }

    /// Whether sends are still accepted: no close was requested, sent or
    /// received, and the connection has not ended.
    pub fn is_open(&self) -> bool {
        self.shared.lock().open
    }

    /// Bytes queued for this connection and not yet written to the socket.
    pub fn buffered_amount(&self) -> usize {
        self.shared.buffered.load(Ordering::Relaxed)
    }

    /// Queues a text message.
    ///
    /// # Errors
    /// [`Error::is_closed`] once the connection is closing or closed;
    /// [`Error::is_queue_full`] when the queue limit would be passed (with
    /// [`crate::Backpressure::Close`] the connection is also being closed
    /// with 1008).
    pub fn send(&self, text: impl Into<Utf8Bytes>) -> Result<(), Error> {
        self.send_owned(OpCode::Text, text.into().into_bytes())
    }

    /// Queues a text or binary [`Message`].
    ///
    /// # Errors
    /// As [`Connection::send`].
    pub fn send_message(&self, message: impl Into<Message>) -> Result<(), Error> {
        match message.into() {
            Message::Text(text) => self.send_owned(OpCode::Text, text.into_bytes()),
            Message::Binary(data) => self.send_owned(OpCode::Binary, data),
        }
    }

    /// Queues a binary message.
    ///
    /// # Errors
    /// As [`Connection::send`].
    pub fn send_binary(&self, data: impl Into<Bytes>) -> Result<(), Error> {
        self.send_owned(OpCode::Binary, data.into())
    }

    /// A message for this connection alone: an uncompressed frame is built
    /// and moved into the queue (no shared encoding to set up or clone);
    /// compression goes the shared way.
    fn send_owned(&self, opcode: OpCode, payload: Bytes) -> Result<(), Error> {
        let compress = self
            .shared
            .deflate
            .as_ref()
            .is_some_and(|params| payload.len() >= params.threshold);
        if compress {
            return self.enqueue_outgoing(&Outgoing::from_parts(opcode, payload));
        }
        self.enqueue_unshared(opcode, payload)
    }

    /// Queues a frame that no other connection shares: a small one is
    /// copied into the outbox's `tail`.
    fn enqueue_unshared(&self, opcode: OpCode, payload: Bytes) -> Result<(), Error> {
        // At most 14 header bytes: the limit check needs no exact figure.
        let estimate = payload.len() + 14;
        if payload.len() <= COPY_THRESHOLD {
            self.enqueue_with(estimate, |outbox| outbox.push_small(opcode, &payload))
        } else {
            self.enqueue_with(estimate, |outbox| {
                outbox.push_frame(Frame::new(opcode, payload))
            })
        }
    }

    /// Queues a ping (payload at most 125 bytes).
    ///
    /// # Errors
    /// As [`Connection::send`], and [`Error::is_invalid_argument`] for a
    /// payload over 125 bytes.
    pub fn ping(&self, payload: impl Into<Bytes>) -> Result<(), Error> {
        self.send_control(OpCode::Ping, payload.into())
    }

    /// Queues an unsolicited pong (payload at most 125 bytes).
    ///
    /// # Errors
    /// As [`Connection::ping`].
    pub fn pong(&self, payload: impl Into<Bytes>) -> Result<(), Error> {
        self.send_control(OpCode::Pong, payload.into())
    }

    /// Starts a normal close (1000). Messages queued before it are sent
    /// first; `on_close` runs when the close handshake ends.
    ///
    /// # Errors
    /// [`Error::is_closed`] if the connection is already closing.
    pub fn close(&self) -> Result<(), Error> {
        self.close_with(CloseCode::NORMAL, "")
    }

    /// Starts a close with `code` and `reason` (at most 123 bytes).
    ///
    /// # Errors
    /// [`Error::is_closed`] if already closing; [`Error::is_invalid_argument`]
    /// for a code that may not be sent (such as 1005 or 1006) or a reason
    /// too long.
    pub fn close_with(&self, code: impl Into<CloseCode>, reason: &str) -> Result<(), Error> {
        let code = code.into();
        if !code.is_sendable() {
            return Err(Error::new(Kind::InvalidCloseCode(code)));
        }
        if reason.len() > MAX_CLOSE_REASON {
            return Err(Error::new(Kind::PayloadTooLong));
        }
        let mut outbox = self.shared.lock();
        if !outbox.open {
            return Err(Error::new(Kind::Closed));
        }
        outbox.open = false;
        outbox.close = Some(Box::new((code, reason.to_owned())));
        drop(outbox);
        self.shared.waker.wake();
        Ok(())
    }

    fn send_control(&self, opcode: OpCode, payload: Bytes) -> Result<(), Error> {
        if payload.len() > MAX_CONTROL_PAYLOAD {
            return Err(Error::new(Kind::PayloadTooLong));
        }
        self.enqueue_unshared(opcode, payload)
    }

    /// The permessage-deflate parameters in force, if negotiated.
    pub fn deflate(&self) -> Option<&DeflateParams> {
        self.shared.deflate.as_ref()
    }

    /// Queues a message in the form this connection needs: plain, shared
    /// compressed, or compressed with this connection's own context.
    pub(crate) fn enqueue_outgoing(&self, message: &Outgoing) -> Result<(), Error> {
        match &self.shared.deflate {
            Some(params) if message.payload.len() >= params.threshold => {
                if params.local_no_context_takeover {
                    self.enqueue(&message.compressed(params))
                } else {
                    let params = *params;
                    // The limit is checked against the uncompressed size,
                    // so that a refused send never advances the context.
                    let estimate = message.payload.len() + 14;
                    self.enqueue_with(estimate, |outbox| {
                        let mut compressor = self
                            .shared
                            .compressor
                            .lock()
                            .unwrap_or_else(|p| p.into_inner());
                        let compressor =
                            compressor.get_or_insert_with(|| Box::new(Compressor::new(&params)));
                        let mut out = Vec::with_capacity(message.payload.len() / 2 + 16);
                        compressor.compress(&message.payload, &mut out);
                        outbox.push_frame(Frame::with_rsv1(message.opcode, out.into(), true))
                    })
                }
            }
            _ => self.enqueue(message.plain()),
        }
    }

    /// Queues an encoded frame, applying the queue limit and policy.
    pub(crate) fn enqueue(&self, frame: &Frame) -> Result<(), Error> {
        if frame.body.is_none() {
            // Small (see `Frame::new`): a copy into the tail costs less
            // than sharing, whose reference count every subscriber's
            // thread would take and drop on one cache line.
            self.enqueue_with(frame.len(), |outbox| outbox.push_encoded(&frame.head))
        } else {
            self.enqueue_with(frame.len(), |outbox| outbox.push_frame(frame.clone()))
        }
    }

    /// Runs `push` (which queues a frame and returns its length) under the
    /// outbox lock, if `estimate` bytes fit the queue limit.
    fn enqueue_with(
        &self,
        estimate: usize,
        push: impl FnOnce(&mut Outbox) -> usize,
    ) -> Result<(), Error> {
        let len = estimate;
        let mut outbox = self.shared.lock();
        if !outbox.open {
            return Err(Error::new(Kind::Closed));
        }
        let buffered = self.shared.buffered.load(Ordering::Relaxed);
        if buffered + len > self.shared.max_queue_bytes {
            let max = self.shared.max_queue_bytes;
            if self.shared.backpressure == Backpressure::Close {
                outbox.open = false;
                self.shared.discard(&mut outbox);
                outbox.close = Some(Box::new((
                    CloseCode::POLICY_VIOLATION,
                    "send queue full".into(),
                )));
                drop(outbox);
                self.shared.waker.wake();
                tracing::warn!(id = %self.id(), buffered, max, "send queue full: closing with 1008");
            }
            self.shared.server.metrics.queue_overflows.inc();
            return Err(Error::new(Kind::QueueFull { buffered, max }));
        }
        let len = push(&mut outbox);
        self.shared.buffered.fetch_add(len, Ordering::Relaxed);
        // The driver, when it is the one running this (a handler answering
        // an event), drains the queue before it yields: waking it would
        // only cost it a poll.
        let wake = !self.shared.driving.load(Ordering::Relaxed);
        drop(outbox);
        let metrics = &self.shared.server.metrics;
        metrics.messages_out.inc();
        metrics.bytes_out.inc_by(len as u64);
        if wake {
            self.shared.waker.wake();
        }
        Ok(())
    }
}

impl Connection {
    /// Subscribes to `topic`: [`crate::ServerHandle::publish`] to it reaches
    /// this connection. Subscriptions end with the connection.
    ///
    /// # Errors
    /// [`Error::is_closed`] once the connection is closing or closed.
    pub fn subscribe(&self, topic: &str) -> Result<(), Error> {
        if !self.is_open() {
            return Err(Error::new(Kind::Closed));
        }
        let added = self
            .shared
            .topics()
            .get_or_insert_with(Box::default)
            .insert(topic.into());
        if added {
            self.shared.server.topics.subscribe(topic, self);
        }
        Ok(())
    }

    /// Unsubscribes from `topic`; returns whether it was subscribed.
    pub fn unsubscribe(&self, topic: &str) -> bool {
        let was = self
            .shared
            .topics()
            .as_mut()
            .is_some_and(|topics| topics.remove(topic));
        if was {
            self.shared.server.topics.unsubscribe(topic, self.id());
        }
        was
    }

    /// The topics this connection is subscribed to.
    pub fn topics(&self) -> Vec<String> {
        self.shared
            .topics()
            .iter()
            .flat_map(|topics| topics.iter())
            .map(|t| t.to_string())
            .collect()
    }

    /// Whether this connection is subscribed to `topic`.
    pub fn is_subscribed(&self, topic: &str) -> bool {
        self.shared
            .topics()
            .as_ref()
            .is_some_and(|topics| topics.contains(topic))
    }

    /// Attaches a value of type `T` (a nickname, a user id…), replacing any
    /// earlier value of the same type.
    ///
    /// ```no_run
    /// # fn f(conn: &hubbub::Connection) {
    /// #[derive(Clone)]
    /// struct Nick(String);
    /// conn.set_data(Nick("ada".into()));
    /// assert_eq!(conn.data::<Nick>().map(|n| n.0), Some("ada".into()));
    /// # }
    /// ```
    pub fn set_data<T: Any + Send + Sync>(&self, value: T) {
        let mut data = self.shared.data.lock().unwrap_or_else(|p| p.into_inner());
        match data.iter_mut().find(|v| v.is::<T>()) {
            Some(slot) => *slot = Box::new(value),
            None => data.push(Box::new(value)),
        }
    }

    /// Attaches an already boxed value, replacing one of the same type.
    pub(crate) fn set_boxed_data(&self, value: Box<dyn Any + Send + Sync>) {
        let mut data = self.shared.data.lock().unwrap_or_else(|p| p.into_inner());
        let type_id = (*value).type_id();
        match data.iter_mut().find(|v| (***v).type_id() == type_id) {
            Some(slot) => *slot = value,
            None => data.push(value),
        }
    }

    /// A copy of the value of type `T`, if one was attached.
    pub fn data<T: Any + Send + Sync + Clone>(&self) -> Option<T> {
        self.with_data(|value: Option<&mut T>| value.cloned())
    }

    /// Runs `f` on the value of type `T` (or `None`), under a lock: keep it
    /// short and do not call back into this connection's data from it.
    pub fn with_data<T: Any + Send + Sync, R>(&self, f: impl FnOnce(Option<&mut T>) -> R) -> R {
        let mut data = self.shared.data.lock().unwrap_or_else(|p| p.into_inner());
        f(data.iter_mut().find_map(|v| v.downcast_mut::<T>()))
    }

    /// Removes the value of type `T`; returns whether there was one.
    pub fn remove_data<T: Any + Send + Sync>(&self) -> bool {
        let mut data = self.shared.data.lock().unwrap_or_else(|p| p.into_inner());
        let before = data.len();
        data.retain(|v| !v.is::<T>());
        data.len() != before
    }

    /// A handle to the server this connection belongs to.
    pub fn server(&self) -> crate::ServerHandle {
        crate::ServerHandle::from_shared(self.shared.server.clone())
    }
}

impl Shared {
    /// Drops everything `outbox` holds (this connection's outbox, locked)
    /// and takes it off the `buffered` total.
    pub(crate) fn discard(&self, outbox: &mut Outbox) {
        let dropped = outbox.clear();
        self.buffered.fetch_sub(dropped, Ordering::Relaxed);
    }

    #[allow(clippy::box_collection)] // see the field
    pub(crate) fn topics(&self) -> MutexGuard<'_, Option<Box<HashSet<Box<str>>>>> {
        self.topics.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Locks the outbox; a poisoned lock is recovered, since every update
    /// under it leaves the outbox consistent.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Outbox> {
        self.outbox
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl PartialEq for Connection {
    fn eq(&self, other: &Self) -> bool {
        self.id() == other.id()
    }
}

impl Eq for Connection {}

impl Hash for Connection {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id().hash(state);
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.id())
            .field("client", &self.info().client_addr())
            .finish()
    }
}
