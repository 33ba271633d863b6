//! The hub: what a server's connections share. The registry of open
//! connections and topics (with the broker that carries topics to other
//! nodes), the metrics, the clock, the per-address limits, the
//! open-connection permits and the shutdown signal.
//!
//! It knows nothing of sockets, handshakes or drivers: those sit above it
//! and reach it through an `Arc<HubState>`. Each open connection is a
//! [`Member`]: its outbound queue and what handles share about it.

mod broker;
mod member;
mod registry;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use broker::{Broker, Node};
pub(crate) use member::{ACTIVE, Member};
pub(crate) use registry::{Clients, Topics};

use crate::config::ServerConfig;
use crate::limits::PerAddress;
use crate::message::Outgoing;
use crate::metrics::Metrics;
use crate::outbox::Budget;

/// State shared by a server's connections, tasks and handles.
pub(crate) struct HubState {
    /// The address handles report (the first listener's, or whatever the
    /// embedding application says).
    pub(crate) local_addr: Option<SocketAddr>,
    /// Connections' activity times are milliseconds since this (tokio's
    /// clock, so that tests with the clock paused control it too).
    epoch: Instant,
    /// Open connections by id.
    pub(crate) clients: Clients,
    /// Subscribers by topic.
    pub(crate) topics: Topics,
    /// Per-address connection counts and handshake buckets.
    pub(crate) per_address: PerAddress,
    /// Counters for the metrics endpoint.
    pub(crate) metrics: Metrics,
    /// Connections holding a [`Permit`].
    open: AtomicUsize,
    /// Notified when the last permit is given back.
    emptied: tokio::sync::Notify,
    /// Handshakes in progress (holding a [`HandshakePermit`]).
    handshaking: AtomicUsize,
    /// Cancelled to start a graceful shutdown.
    pub(crate) shutdown: CancellationToken,
    /// The bound on bytes queued for sending over every connection.
    pub(crate) budget: Arc<Budget>,
    /// Open connections with permessage-deflate, by the window (bits) this
    /// side compresses with: a broadcast is compressed once, with the
    /// smallest window in use, which every receiver accepts.
    windows: [AtomicUsize; 16],
}

impl HubState {
    /// A hub for a server listening on `local_addr`.
    pub(crate) fn new(local_addr: Option<SocketAddr>) -> Arc<Self> {
        Arc::new(Self {
            local_addr,
            epoch: Instant::now(),
            clients: Clients::default(),
            topics: Topics::default(),
            per_address: PerAddress::default(),
            metrics: Metrics::default(),
            open: AtomicUsize::new(0),
            emptied: tokio::sync::Notify::new(),
            handshaking: AtomicUsize::new(0),
            shutdown: CancellationToken::new(),
            budget: Budget::new(ServerConfig::default().max_total_queue_bytes),
            windows: Default::default(),
        })
    }

    /// Milliseconds since the hub was made (a coarse, cheap clock for
    /// keepalive and rate limits).
    pub(crate) fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// A place among at most `max` open connections, given back when the
    /// permit is dropped (however its holder ends: refusal, panic,
    /// cancellation).
    pub(crate) fn permit(self: &Arc<Self>, max: usize) -> Option<Permit> {
        let mut open = self.open.load(Ordering::Relaxed);
        loop {
            if open >= max {
                return None;
            }
            match self.open.compare_exchange_weak(
                open,
                open + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(Permit(Some(self.clone()))),
                Err(now) => open = now,
            }
        }
    }

    /// The window to compress a broadcast with: the smallest any open
    /// connection compresses with (valid for every larger one), or `own`.
    pub(crate) fn broadcast_window(&self, own: u8) -> u8 {
        (9..=15u8)
            .find(|&bits| self.windows[usize::from(bits)].load(Ordering::Relaxed) > 0)
            .map_or(own, |smallest| smallest.min(own))
    }

    /// A place among the handshakes in progress: at most `max` in all and
    /// `per_ip` from `ip`. Refused, the stream should be dropped at once
    /// (it holds a descriptor and has sent nothing worth an answer yet).
    pub(crate) fn handshake_permit(
        self: &Arc<Self>,
        ip: IpAddr,
        max: usize,
        per_ip: Option<usize>,
    ) -> Option<HandshakePermit> {
        if self.handshaking.fetch_add(1, Ordering::AcqRel) >= max {
            self.handshaking.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let per_ip = match per_ip {
            Some(limit) if !self.per_address.begin_handshake(ip, limit) => {
                self.handshaking.fetch_sub(1, Ordering::AcqRel);
                return None;
            }
            Some(_) => Some(ip),
            None => None,
        };
        Some(HandshakePermit {
            hub: self.clone(),
            ip: per_ip,
        })
    }

    /// Connections holding a permit.
    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Waits until no connection holds a permit.
    pub(crate) async fn emptied(&self) {
        loop {
            let notified = self.emptied.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.open() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Adds an open connection to the registry.
    pub(crate) fn register(&self, member: &Arc<Member>) {
        self.clients.insert(member);
        if let Some(params) = &member.deflate {
            self.windows[usize::from(params.local_max_window_bits & 15)]
                .fetch_add(1, Ordering::Relaxed);
        }
        self.metrics.opened(member.info.http_version());
    }

    /// Forgets a connection that ended, with its subscriptions; after this
    /// it can subscribe to nothing.
    pub(crate) fn unregister(&self, member: &Member) {
        if self.clients.remove(member.id())
            && let Some(params) = &member.deflate
        {
            self.windows[usize::from(params.local_max_window_bits & 15)]
                .fetch_sub(1, Ordering::Relaxed);
        }
        for topic in member.leave_topics() {
            self.topics.unsubscribe(&topic, member.id());
        }
    }

    /// Publishes through the broker when one is attached, else locally.
    pub(crate) fn publish(
        &self,
        topic: &str,
        message: crate::Message,
        except: Option<crate::Uuid>,
    ) -> usize {
        match self.topics.broker.get() {
            Some(broker) => {
                broker.publish(topic, message, except);
                self.topics.subscriber_count(topic)
            }
            None => self.publish_local(topic, message, except),
        }
    }

    /// Queues `message` on this node's subscribers of `topic` but `except`,
    /// encoded once; returns how many took it.
    pub(crate) fn publish_local(
        &self,
        topic: &str,
        message: crate::Message,
        except: Option<crate::Uuid>,
    ) -> usize {
        self.topics.publish(topic, &Outgoing::new(message), except)
    }
}

/// A place among the handshakes in progress (see [`HubState::handshake_permit`]).
pub(crate) struct HandshakePermit {
    hub: Arc<HubState>,
    /// Counted for this address too.
    ip: Option<IpAddr>,
}

impl Drop for HandshakePermit {
    fn drop(&mut self) {
        self.hub.handshaking.fetch_sub(1, Ordering::AcqRel);
        if let Some(ip) = self.ip {
            self.hub.per_address.end_handshake(ip);
        }
    }
}

/// A place among the open connections (see [`HubState::permit`]), given
/// back on drop (`None` once handed over to a [`Held`]).
pub(crate) struct Permit(Option<Arc<HubState>>);

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(hub) = &self.0 {
            hub.release_permit();
        }
    }
}

impl HubState {
    fn release_permit(&self) {
        if self.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.emptied.notify_waiters();
        }
    }
}

/// A connection's place in its address's count, given back on drop
/// (`hub` is `None` once handed over to a [`Held`]).
pub(crate) struct AddressSlot {
    hub: Option<Arc<HubState>>,
    ip: IpAddr,
}

impl AddressSlot {
    pub(crate) fn new(hub: Arc<HubState>, ip: IpAddr) -> Self {
        Self { hub: Some(hub), ip }
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        if let Some(hub) = &self.hub {
            hub.per_address.release(self.ip);
        }
    }
}

/// What an open connection holds until its end, its place among the open
/// connections and in its address's count, as two flags: its driver gives
/// them back through the connection's own hub and address
/// ([`Held::release`]), so that every open connection does not keep two
/// more pointers to the hub and a copy of its address (40 bytes).
#[derive(Default)]
pub(crate) struct Held {
    permit: bool,
    slot: bool,
}

impl Held {
    /// Takes over the places of a connection whose member has the same hub
    /// and, for `slot`, the same client address.
    pub(crate) fn new(mut permit: Permit, slot: Option<AddressSlot>) -> Self {
        Self {
            permit: permit.0.take().is_some(),
            slot: slot.is_some_and(|mut slot| slot.hub.take().is_some()),
        }
    }

    /// Gives the places back, once, to `member`'s hub.
    pub(crate) fn release(&mut self, member: &Member) {
        if std::mem::take(&mut self.permit) {
            member.hub.release_permit();
        }
        if std::mem::take(&mut self.slot) {
            member
                .hub
                .per_address
                .release(member.info.client_addr().ip());
        }
    }
}

impl Drop for HubState {
    fn drop(&mut self) {
        // The hub's background tasks wait on this token: gone, they end.
        self.shutdown.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_are_given_back_however_their_holder_ends() {
        let hub = HubState::new(None);
        let a = hub.permit(2).unwrap();
        let b = hub.permit(2).unwrap();
        assert!(hub.permit(2).is_none());
        drop(a);
        let c = hub.permit(2).unwrap();
        // A holder that panics gives its place back while unwinding.
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _held = c;
            panic!("handshake hook blew up");
        }));
        assert!(panicked.is_err());
        assert_eq!(hub.open(), 1);
        drop(b);
        assert_eq!(hub.open(), 0);
    }
}
