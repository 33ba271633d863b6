//! The client registry and topics: who receives a broadcast or a publish.
//!
//! Both are maps behind a std `RwLock`: never held across an `.await`, read
//! by every broadcast and publish (which run in parallel), written only when
//! a connection opens, closes, subscribes or unsubscribes. A message is
//! encoded once; each receiver's queue gets the same bytes.

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

use uuid::Uuid;

use crate::hub::{Broker, Member};
use crate::message::Outgoing;

/// A connection in a set of connections, found by its id: the id is the
/// member's own, so an entry is one pointer (a map from id to member would
/// keep the 16-byte id twice, and cost every open connection 16 bytes and
/// more, with the table's spare room).
#[derive(Clone)]
pub(crate) struct ById(pub(crate) Arc<Member>);

impl PartialEq for ById {
    fn eq(&self, other: &Self) -> bool {
        self.0.id() == other.0.id()
    }
}

impl Eq for ById {}

impl Hash for ById {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As `Uuid`'s own hash, which `Borrow<Uuid>` requires.
        self.0.info.id_ref().hash(state);
    }
}

impl Borrow<Uuid> for ById {
    fn borrow(&self) -> &Uuid {
        self.0.info.id_ref()
    }
}

/// Connections by id.
pub(crate) type Members = HashSet<ById>;

/// Open connections by id.
#[derive(Default)]
pub(crate) struct Clients {
    map: RwLock<Members>,
}

impl Clients {
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Members> {
        self.map.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Members> {
        self.map.write().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn insert(&self, member: &Arc<Member>) {
        self.write().replace(ById(member.clone()));
    }

    /// Removes a connection; returns whether it was there.
    pub(crate) fn remove(&self, id: Uuid) -> bool {
        self.write().remove(&id)
    }

    /// Every open connection, at this moment.
    pub(crate) fn all(&self) -> Vec<Arc<Member>> {
        self.read().iter().map(|m| m.0.clone()).collect()
    }

    /// Queues `message` to every client but `except`; returns how many
    /// queues took it.
    pub(crate) fn broadcast(&self, message: &Outgoing, except: Option<Uuid>) -> usize {
        deliver(self.read().iter(), message, except)
    }
}

/// Subscribers by topic.
#[derive(Default)]
pub(crate) struct Topics {
    map: RwLock<TopicMap>,
    /// Told (under the write lock, so in order) when a topic gains its
    /// first or loses its last local subscriber.
    pub(crate) broker: OnceLock<Arc<dyn Broker>>,
}

type TopicMap = HashMap<Box<str>, Members>;

impl Topics {
    fn read(&self) -> RwLockReadGuard<'_, TopicMap> {
        self.map.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, TopicMap> {
        self.map.write().unwrap_or_else(|p| p.into_inner())
    }

    #[expect(
        clippy::mutable_key_type,
        reason = "a member is hashed by its id, which never changes"
    )]
    pub(crate) fn subscribe(&self, topic: &str, member: &Arc<Member>) {
        let mut map = self.write();
        let members = map.entry(topic.into()).or_default();
        let first = members.is_empty();
        members.replace(ById(member.clone()));
        if first && let Some(broker) = self.broker.get() {
            broker.topic_added(topic);
        }
    }

    pub(crate) fn unsubscribe(&self, topic: &str, id: Uuid) {
        let mut map = self.write();
        if let Some(members) = map.get_mut(topic) {
            members.remove(&id);
            if members.is_empty() {
                map.remove(topic);
                if let Some(broker) = self.broker.get() {
                    broker.topic_removed(topic);
                }
            }
        }
    }

    /// Queues `message` to every subscriber of `topic` but `except`.
    pub(crate) fn publish(&self, topic: &str, message: &Outgoing, except: Option<Uuid>) -> usize {
        match self.read().get(topic) {
            Some(members) => deliver(members.iter(), message, except),
            None => 0,
        }
    }

    pub(crate) fn subscriber_count(&self, topic: &str) -> usize {
        self.read().get(topic).map_or(0, HashSet::len)
    }

    pub(crate) fn subscribers(&self, topic: &str) -> Vec<Arc<Member>> {
        self.read()
            .get(topic)
            .map(|m| m.iter().map(|m| m.0.clone()).collect())
            .unwrap_or_default()
    }

    pub(crate) fn names(&self) -> Vec<String> {
        self.read().keys().map(|k| k.to_string()).collect()
    }
}

/// Queues one shared message on each connection. A full queue is that
/// connection's problem (its backpressure policy applies); the others
/// are not delayed.
fn deliver<'a>(
    members: impl Iterator<Item = &'a ById>,
    message: &Outgoing,
    except: Option<Uuid>,
) -> usize {
    members
        .map(|member| &member.0)
        .filter(|member| Some(member.id()) != except)
        .filter(|member| member.enqueue(message).is_ok())
        .count()
}
