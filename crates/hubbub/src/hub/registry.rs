//! The client registry and topics: who receives a broadcast or a publish.
//!
//! Both are maps behind a std `RwLock`: never held across an `.await`, read
//! by every broadcast and publish (which run in parallel), written only when
//! a connection opens, closes, subscribes or unsubscribes. A message is
//! encoded once; each receiver's queue gets the same bytes.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

use uuid::Uuid;

use crate::hub::{Broker, Member};
use crate::message::Outgoing;

/// Open connections by id.
#[derive(Default)]
pub(crate) struct Clients {
    map: RwLock<HashMap<Uuid, Arc<Member>>>,
}

impl Clients {
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, HashMap<Uuid, Arc<Member>>> {
        self.map.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<Uuid, Arc<Member>>> {
        self.map.write().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn insert(&self, member: &Arc<Member>) {
        self.write().insert(member.id(), member.clone());
    }

    /// Removes a connection; returns whether it was there.
    pub(crate) fn remove(&self, id: Uuid) -> bool {
        self.write().remove(&id).is_some()
    }

    /// Every open connection, at this moment.
    pub(crate) fn all(&self) -> Vec<Arc<Member>> {
        self.read().values().cloned().collect()
    }

    /// Queues `message` to every client but `except`; returns how many
    /// queues took it.
    pub(crate) fn broadcast(&self, message: &Outgoing, except: Option<Uuid>) -> usize {
        deliver(self.read().values(), message, except)
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

type TopicMap = HashMap<Box<str>, HashMap<Uuid, Arc<Member>>>;

impl Topics {
    fn read(&self) -> RwLockReadGuard<'_, TopicMap> {
        self.map.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, TopicMap> {
        self.map.write().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn subscribe(&self, topic: &str, member: &Arc<Member>) {
        let mut map = self.write();
        let members = map.entry(topic.into()).or_default();
        let first = members.is_empty();
        members.insert(member.id(), member.clone());
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
            Some(members) => deliver(members.values(), message, except),
            None => 0,
        }
    }

    pub(crate) fn subscriber_count(&self, topic: &str) -> usize {
        self.read().get(topic).map_or(0, HashMap::len)
    }

    pub(crate) fn subscribers(&self, topic: &str) -> Vec<Arc<Member>> {
        self.read()
            .get(topic)
            .map(|m| m.values().cloned().collect())
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
    members: impl Iterator<Item = &'a Arc<Member>>,
    message: &Outgoing,
    except: Option<Uuid>,
) -> usize {
    members
        .filter(|member| Some(member.id()) != except)
        .filter(|member| member.enqueue(message).is_ok())
        .count()
}
