//! The client registry and topics: who receives a broadcast or a publish.
//!
//! Both are maps behind a std `RwLock`: never held across an `.await`, read
//! by every broadcast and publish (which run in parallel), written only when
//! a connection opens, closes, subscribes or unsubscribes. A message is
//! encoded once; each receiver's queue gets a reference-counted copy of the
//! same bytes.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

use uuid::Uuid;

use crate::broker::Broker;
use crate::connection::Connection;
use crate::message::Outgoing;

/// Open connections by id.
#[derive(Default)]
pub(crate) struct Clients {
    map: RwLock<HashMap<Uuid, Connection>>,
}

impl Clients {
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, HashMap<Uuid, Connection>> {
        self.map.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<Uuid, Connection>> {
        self.map.write().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn insert(&self, conn: &Connection) {
        self.write().insert(conn.id(), conn.clone());
    }

    /// Removes a connection; returns whether it was there.
    pub(crate) fn remove(&self, id: Uuid) -> bool {
        self.write().remove(&id).is_some()
    }

    /// Queues `frame` to every client but `except`; returns how many
    /// queues took it.
    pub(crate) fn broadcast(&self, message: &Outgoing, except: Option<Uuid>) -> usize {
        deliver(self.read().values(), message, except)
    }
}

/// Subscribers by topic.
#[derive(Default)]
pub(crate) struct Topics {
    map: RwLock<HashMap<Box<str>, HashMap<Uuid, Connection>>>,
    /// Told (under the write lock, so in order) when a topic gains its
    /// first or loses its last local subscriber.
    pub(crate) broker: OnceLock<Arc<dyn Broker>>,
}

impl Topics {
    fn read(&self) -> RwLockReadGuard<'_, HashMap<Box<str>, HashMap<Uuid, Connection>>> {
        self.map.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<Box<str>, HashMap<Uuid, Connection>>> {
        self.map.write().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn subscribe(&self, topic: &str, conn: &Connection) {
        let mut map = self.write();
        let members = map.entry(topic.into()).or_default();
        let first = members.is_empty();
        members.insert(conn.id(), conn.clone());
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

    /// Queues `frame` to every subscriber of `topic` but `except`.
    pub(crate) fn publish(&self, topic: &str, message: &Outgoing, except: Option<Uuid>) -> usize {
        match self.read().get(topic) {
            Some(members) => deliver(members.values(), message, except),
            None => 0,
        }
    }

    pub(crate) fn subscriber_count(&self, topic: &str) -> usize {
        self.read().get(topic).map_or(0, HashMap::len)
    }

    pub(crate) fn subscribers(&self, topic: &str) -> Vec<Connection> {
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
    conns: impl Iterator<Item = &'a Connection>,
    message: &Outgoing,
    except: Option<Uuid>,
) -> usize {
    conns
        .filter(|conn| Some(conn.id()) != except)
        .filter(|conn| conn.enqueue_outgoing(message).is_ok())
        .count()
}
