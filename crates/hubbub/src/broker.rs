//! The seam between a server's topics and the servers beside it.
//!
//! Without a broker (the default) [`ServerHandle::publish`] queues the
//! message on this server's subscribers at once. With one
//! ([`Server::with_broker`](crate::Server::with_broker)) publishes go to the
//! broker instead, which carries them to every node (this one included) and
//! hands them back through [`ServerHandle::publish_local`]; the server tells
//! the broker which topics have local subscribers, so that a node only
//! listens for the topics its own clients hold. `hubbub-redis` is such a
//! broker, on Redis.

use crate::{Message, ServerHandle, Uuid};

/// Carries publishes between servers (nodes).
///
/// Every method is called from the thread that publishes or subscribes and
/// must not block: hand the work to a task.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use hubbub::{Broker, Message, ServerHandle, Uuid};
///
/// /// A broker for one node that keeps a log of what went through it.
/// #[derive(Default)]
/// struct Logged {
///     server: Mutex<Option<ServerHandle>>,
///     log: Mutex<Vec<String>>,
/// }
///
/// impl Broker for Logged {
///     fn attach(&self, server: ServerHandle) {
///         *self.server.lock().unwrap() = Some(server);
///     }
///     fn publish(&self, topic: &str, message: Message, except: Option<Uuid>) {
///         self.log.lock().unwrap().push(topic.to_owned());
///         if let Some(server) = &*self.server.lock().unwrap() {
///             server.publish_local(topic, message, except);
///         }
///     }
///     fn topic_added(&self, _topic: &str) {}
///     fn topic_removed(&self, _topic: &str) {}
/// }
/// # let _: Arc<dyn Broker> = Arc::new(Logged::default());
/// ```
pub trait Broker: Send + Sync + 'static {
    /// Called once, when the broker is attached to a server: the handle
    /// delivers to this node's subscribers ([`ServerHandle::publish_local`]).
    fn attach(&self, server: ServerHandle);

    /// Carries `message` to every subscriber of `topic` on every node but
    /// the connection `except`.
    fn publish(&self, topic: &str, message: Message, except: Option<Uuid>);

    /// `topic` has its first subscriber on this node.
    fn topic_added(&self, topic: &str);

    /// `topic` lost its last subscriber on this node.
    fn topic_removed(&self, topic: &str);
}
