//! The seam between a server's topics and the servers beside it.
//!
//! Without a broker (the default) [`crate::ServerHandle::publish`] queues
//! the message on this server's subscribers at once. With one
//! ([`Server::with_broker`](crate::Server::with_broker)) publishes go to the
//! broker instead, which carries them to every node (this one included) and
//! hands them back through [`Node::publish_local`]; the server tells the
//! broker which topics have local subscribers, so that a node only listens
//! for the topics its own clients hold. `hubbub-redis` is such a broker, on
//! Redis.
//!
//! The server holds its broker; the broker holds only a [`Node`], a weak
//! handle: dropping the server frees both.

use std::sync::{Arc, Weak};

use crate::hub::HubState;
use crate::message::Message;
use uuid::Uuid;

/// A broker's handle to the node (server) it serves: delivers to this
/// node's subscribers. It does not keep the server alive: once the server
/// is gone its methods deliver to nobody.
#[derive(Clone)]
pub struct Node(Weak<HubState>);

impl Node {
    pub(crate) fn new(hub: &Arc<HubState>) -> Self {
        Self(Arc::downgrade(hub))
    }

    /// Sends `message` to this node's subscribers of `topic` but `except`.
    /// Returns how many took it (0 once the server is gone).
    pub fn publish_local(
        &self,
        topic: &str,
        message: impl Into<Message>,
        except: Option<Uuid>,
    ) -> usize {
        self.0
            .upgrade()
            .map_or(0, |hub| hub.publish_local(topic, message.into(), except))
    }

    /// How many connections of this node are subscribed to `topic`.
    pub fn subscriber_count(&self, topic: &str) -> usize {
        self.0
            .upgrade()
            .map_or(0, |hub| hub.topics.subscriber_count(topic))
    }

    /// Whether the server still exists.
    pub fn is_alive(&self) -> bool {
        self.0.strong_count() > 0
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("alive", &self.is_alive())
            .finish()
    }
}

/// Carries publishes between servers (nodes).
///
/// Every method is called from the thread that publishes or subscribes and
/// must not block: hand the work to a task.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use hubbub::{Broker, Message, Node, Uuid};
///
/// /// A broker for one node that keeps a log of what went through it.
/// #[derive(Default)]
/// struct Logged {
///     node: Mutex<Option<Node>>,
///     log: Mutex<Vec<String>>,
/// }
///
/// impl Broker for Logged {
///     fn attach(&self, node: Node) {
///         *self.node.lock().unwrap() = Some(node);
///     }
///     fn publish(&self, topic: &str, message: Message, except: Option<Uuid>) {
///         self.log.lock().unwrap().push(topic.to_owned());
///         if let Some(node) = &*self.node.lock().unwrap() {
///             node.publish_local(topic, message, except);
///         }
///     }
///     fn topic_added(&self, _topic: &str) {}
///     fn topic_removed(&self, _topic: &str) {}
/// }
/// # let _: Arc<dyn Broker> = Arc::new(Logged::default());
/// ```
pub trait Broker: Send + Sync + 'static {
    /// Called once, when the server starts: the handle delivers to this
    /// node's subscribers ([`Node::publish_local`]).
    fn attach(&self, node: Node);

    /// Carries `message` to every subscriber of `topic` on every node but
    /// the connection `except`.
    fn publish(&self, topic: &str, message: Message, except: Option<Uuid>);

    /// `topic` has its first subscriber on this node.
    fn topic_added(&self, topic: &str);

    /// `topic` lost its last subscriber on this node.
    fn topic_removed(&self, topic: &str);
}
