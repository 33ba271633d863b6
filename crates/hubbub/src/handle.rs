//! The two public handles: [`Connection`], to one connection, and
//! [`ServerHandle`], to the server. Each reaches the other (a connection's
//! server, a server's connections), so they live together; both are thin
//! fronts on the hub's state.

use std::any::Any;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use hubbub_proto::{
    CloseCode, DeflateParams, MAX_CLOSE_REASON, MAX_CONTROL_PAYLOAD, MessageKind, OpCode, Utf8Bytes,
};
use uuid::Uuid;

use crate::error::{Error, Kind};
use crate::hub::{HubState, Member};
use crate::info::ConnectionInfo;
use crate::message::{Message, Outgoing};

/// A handle to one WebSocket connection: cheap to clone, usable from any
/// task or thread, equal and hashed by connection id.
///
/// Sends never wait: a frame is queued and the connection's driver writes
/// everything queued in one wake-up with one vectored write. The queue is
/// bounded in bytes ([`crate::ServerConfig::max_queue_bytes`]); see
/// [`crate::Backpressure`].
#[derive(Clone)]
pub struct Connection {
    pub(crate) member: Arc<Member>,
}

impl Connection {
    pub(crate) fn new(member: Arc<Member>) -> Self {
        Self { member }
    }

    /// The connection's unique id.
    pub fn id(&self) -> Uuid {
        self.member.id()
    }

    /// What the opening handshake told about the connection.
    pub fn info(&self) -> &ConnectionInfo {
        &self.member.info
    }

    /// Whether sends are still accepted: no close was requested, sent or
    /// received, and the connection has not ended.
    pub fn is_open(&self) -> bool {
        self.member.queue.is_open()
    }

    /// Bytes queued for this connection and not yet written to the socket.
    pub fn buffered_amount(&self) -> usize {
        self.member.queue.buffered()
    }

    /// Queues a text message.
    ///
    /// # Errors
    /// [`Error::is_closed`] once the connection is closing or closed;
    /// [`Error::is_queue_full`] when the queue limit would be passed (with
    /// [`crate::Backpressure::Close`] the connection is also being closed
    /// with 1008, and `on_error` runs).
    pub fn send(&self, text: impl Into<Utf8Bytes>) -> Result<(), Error> {
        self.member
            .send(MessageKind::Text, text.into().into_bytes())
    }

    /// Queues a text or binary [`Message`].
    ///
    /// # Errors
    /// As [`Connection::send`].
    pub fn send_message(&self, message: impl Into<Message>) -> Result<(), Error> {
        match message.into() {
            Message::Text(text) => self.member.send(MessageKind::Text, text.into_bytes()),
            Message::Binary(data) => self.member.send(MessageKind::Binary, data),
        }
    }

    /// Queues a binary message.
    ///
    /// # Errors
    /// As [`Connection::send`].
    pub fn send_binary(&self, data: impl Into<Bytes>) -> Result<(), Error> {
        self.member.send(MessageKind::Binary, data.into())
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

    fn send_control(&self, opcode: OpCode, payload: Bytes) -> Result<(), Error> {
        if payload.len() > MAX_CONTROL_PAYLOAD {
            return Err(Error::new(Kind::PayloadTooLong));
        }
        self.member.send_control(opcode, payload)
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
        self.member.close(code, reason)
    }

    /// The permessage-deflate parameters in force, if negotiated.
    pub fn deflate(&self) -> Option<&DeflateParams> {
        self.member.deflate.as_ref()
    }

    /// Subscribes to `topic`: [`ServerHandle::publish`] to it reaches this
    /// connection. Subscriptions end with the connection.
    ///
    /// # Errors
    /// [`Error::is_closed`] once the connection is closing or closed.
    pub fn subscribe(&self, topic: &str) -> Result<(), Error> {
        self.member.subscribe(topic).map(|_| ())
    }

    /// Unsubscribes from `topic`; returns whether it was subscribed.
    pub fn unsubscribe(&self, topic: &str) -> bool {
        self.member.unsubscribe(topic)
    }

    /// The topics this connection is subscribed to.
    pub fn topics(&self) -> Vec<String> {
        self.member.topics()
    }

    /// Whether this connection is subscribed to `topic`.
    pub fn is_subscribed(&self, topic: &str) -> bool {
        self.member.is_subscribed(topic)
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
        self.member.set_data(Box::new(value));
    }

    /// A copy of the value of type `T`, if one was attached.
    pub fn data<T: Any + Send + Sync + Clone>(&self) -> Option<T> {
        self.with_data(|value: Option<&mut T>| value.cloned())
    }

    /// Runs `f` on the value of type `T` (or `None`), under a lock: keep it
    /// short and do not call back into this connection's data from it.
    pub fn with_data<T: Any + Send + Sync, R>(&self, f: impl FnOnce(Option<&mut T>) -> R) -> R {
        self.member.with_data(f)
    }

    /// Removes the value of type `T`; returns whether there was one.
    pub fn remove_data<T: Any + Send + Sync>(&self) -> bool {
        self.member.remove_data::<T>()
    }

    /// A handle to the server this connection belongs to.
    pub fn server(&self) -> ServerHandle {
        ServerHandle::new(self.member.hub.clone())
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

/// A handle to a running [`crate::Server`]: stop it, or reach its clients,
/// from any task or thread.
#[derive(Clone)]
pub struct ServerHandle {
    pub(crate) hub: Arc<HubState>,
}

impl fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerHandle")
            .field("local_addr", &self.hub.local_addr)
            .field("clients", &self.client_count())
            .finish()
    }
}

impl ServerHandle {
    pub(crate) fn new(hub: Arc<HubState>) -> Self {
        Self { hub }
    }

    /// Sends `message` to every open connection. The frame is encoded once
    /// and shared by every queue. Returns how many connections took it (a
    /// full queue follows its [`crate::Backpressure`] policy and does not
    /// delay the others).
    pub fn broadcast(&self, message: impl Into<Message>) -> usize {
        self.hub
            .clients
            .broadcast(&Outgoing::new(message.into()), None)
    }

    /// As [`ServerHandle::broadcast`], to every connection but `except`.
    pub fn broadcast_except(&self, message: impl Into<Message>, except: &Connection) -> usize {
        let message = Outgoing::new(message.into());
        self.hub.clients.broadcast(&message, Some(except.id()))
    }

    /// Sends `message` to every subscriber of `topic`, encoded once.
    /// Returns how many subscribers took it.
    ///
    /// With a [`crate::Broker`] ([`crate::Server::with_broker`]) the message
    /// goes through the broker to every node, this one included, and the
    /// count returned is this node's subscribers at this moment.
    pub fn publish(&self, topic: &str, message: impl Into<Message>) -> usize {
        self.hub.publish(topic, message.into(), None)
    }

    /// As [`ServerHandle::publish`], to every subscriber but `except`.
    pub fn publish_except(
        &self,
        topic: &str,
        message: impl Into<Message>,
        except: &Connection,
    ) -> usize {
        self.hub.publish(topic, message.into(), Some(except.id()))
    }

    /// Sends `message` to this node's subscribers of `topic` but `except`,
    /// whether or not a broker is attached (a broker delivers with
    /// [`crate::Node::publish_local`], the same thing). Returns how many
    /// subscribers took it.
    pub fn publish_local(
        &self,
        topic: &str,
        message: impl Into<Message>,
        except: Option<Uuid>,
    ) -> usize {
        self.hub.publish_local(topic, message.into(), except)
    }

    /// How many connections of this node are subscribed to `topic`.
    pub fn subscriber_count(&self, topic: &str) -> usize {
        self.hub.topics.subscriber_count(topic)
    }

    /// The connections subscribed to `topic`, at this moment.
    pub fn subscribers(&self, topic: &str) -> Vec<Connection> {
        self.hub
            .topics
            .subscribers(topic)
            .into_iter()
            .map(Connection::new)
            .collect()
    }

    /// The server's metrics in the Prometheus/OpenMetrics text format:
    /// connections open, opened, and closed by close code; messages and
    /// bytes in and out; queue overflows; handshake rejections by status.
    /// Serve it where your scraper looks (`hubbub serve --metrics ADDR`
    /// does).
    pub fn metrics(&self) -> String {
        self.hub.metrics.encode()
    }

    /// The topics with at least one subscriber.
    pub fn topics(&self) -> Vec<String> {
        self.hub.topics.names()
    }

    /// Starts a graceful shutdown: stop accepting, close every connection
    /// with 1001, wait up to [`crate::ServerConfig::shutdown_grace`], then
    /// drop the rest. [`crate::Server::start`] returns once every
    /// connection has ended.
    pub fn shutdown(&self) {
        self.hub.shutdown.cancel();
    }

    /// Whether [`ServerHandle::shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        self.hub.shutdown.is_cancelled()
    }

    /// The address the server listens on (its first listener's;
    /// `0.0.0.0:0` for a server without a listener of its own).
    pub fn local_addr(&self) -> SocketAddr {
        self.hub
            .local_addr
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The open connections, at this moment.
    pub fn clients(&self) -> Vec<Connection> {
        self.hub
            .clients
            .all()
            .into_iter()
            .map(Connection::new)
            .collect()
    }

    /// How many connections are open.
    pub fn client_count(&self) -> usize {
        self.hub.clients.read().len()
    }
}
