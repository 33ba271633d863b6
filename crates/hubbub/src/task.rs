//! A connection's future, however it came in (hubbub's listener, a stream
//! given to a hub, an upgrade through hyper or HTTP/2, the client): the
//! opening, then the driver until the connection ends (in a slot of a
//! connection set for hubbub's own listeners, a task of its own for the
//! rest). And the hub's
//! background tasks: the keepalive and per-address sweeps, and the
//! graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tracing::Instrument;

use crate::handshake::{Service, Upgraded, handshake};
use crate::hub::{HandshakePermit, Held, HubState};
use crate::info::StreamInfo;
use crate::socket::BoxFuture;

/// Serves one stream of any kind (TCP, TLS, a Unix socket, an in-memory
/// pipe): the opening handshake, to finish by `deadline`, then the driver
/// until the connection ends. `permit`, its place among the handshakes in
/// progress, is given back when the handshake ends. (hubbub's listeners
/// hand [`open_stream`] to a connection set instead; the tests and the
/// fuzz target serve a stream on a task.)
#[cfg(any(test, feature = "__fuzz"))]
pub(crate) fn serve_stream<S>(
    stream: S,
    from: StreamInfo,
    service: Arc<Service>,
    deadline: Instant,
    permit: Option<HandshakePermit>,
) -> impl Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    serve_after(open_stream(stream, from, service, deadline, permit))
}

/// The opening handshake of [`serve_stream`], alone: the upgraded
/// connection, if it opened.
pub(crate) async fn open_stream<S>(
    stream: S,
    from: StreamInfo,
    service: Arc<Service>,
    deadline: Instant,
    permit: Option<HandshakePermit>,
) -> Option<Upgraded<S>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let upgraded = handshake(stream, from, &service, deadline).await;
    drop(permit);
    upgraded
}

/// Runs `opening` (a handshake, however it is done), then the connection
/// it opened until it ends. The driver leaves the registry itself, before
/// `on_close` runs; the permit and the slot are given back when this ends,
/// however it ends.
///
/// Each phase is a boxed future, so that the task itself stays small: the
/// opening's state (timers, parser, buffers, the connection being set up)
/// is freed as soon as it is done, and an open connection keeps only its
/// driver's box, its permit and its address slot. (Binding the opening's
/// result in an `if let` or a `match` would keep a slot for all of it in
/// the task for the connection's whole life: 500 bytes.)
pub(crate) fn serve_after<S, F>(opening: F) -> impl Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Future<Output = Option<Upgraded<S>>> + Send + 'static,
{
    let opening = Box::pin(opening);
    async move {
        let Some(upgraded) = opening.await else {
            return;
        };
        running(upgraded).await;
    }
}

/// [`open_stream`], then the open connection's future ([`running`]): a
/// connection set's opening.
pub(crate) async fn open_running<S>(
    stream: S,
    from: StreamInfo,
    service: Arc<Service>,
    deadline: Instant,
    permit: Option<HandshakePermit>,
) -> Option<BoxFuture>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    open_stream(stream, from, service, deadline, permit)
        .await
        .map(running)
}

/// An upgraded connection's future, boxed, until its end: the driver (in
/// the connection's span when something records it: a disabled span would
/// still take 40 bytes per connection), its permit and its address slot.
/// A connection set ([`crate::set`]) keeps this box alone once the opening
/// is over.
pub(crate) fn running<S>(upgraded: Upgraded<S>) -> BoxFuture
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Upgraded {
        mut driver,
        span,
        _permit,
        _slot,
    } = upgraded;
    driver.hold(Held::new(_permit, _slot));
    if span.is_disabled() {
        Box::pin(driver.run())
    } else {
        Box::pin(driver.run().instrument(span))
    }
}

/// Starts the hub's background tasks, once: the keepalive sweep, the
/// per-address sweep, and the shutdown, which waits for
/// [`HubState::shutdown`] and then closes every connection with 1001,
/// waits up to the grace period, and drops the rest. Whichever way in
/// serves first starts them (inside the runtime); they keep only weak
/// references and end with the hub.
pub(crate) fn start_background(service: &Arc<Service>) {
    service.started.call_once(|| {
        let hub = &service.hub;
        let config = &service.config;
        let keepalive = crate::keepalive::spawn(hub, config);
        let address_sweep = config.handshake_rate_per_ip.map(|rate| {
            let weak = Arc::downgrade(hub);
            tokio::spawn(async move {
                let mut interval = tokio::time::interval(crate::limits::SWEEP_EVERY);
                loop {
                    interval.tick().await;
                    let Some(hub) = weak.upgrade() else { return };
                    hub.per_address.sweep(Some(&rate), hub.now_ms());
                }
            })
        });
        let token = hub.shutdown.clone();
        let weak = Arc::downgrade(hub);
        let grace = config.shutdown_grace;
        tokio::spawn(async move {
            token.cancelled().await;
            if let Some(hub) = weak.upgrade() {
                wind_down(&hub, grace).await;
            }
            keepalive.abort();
            if let Some(task) = address_sweep {
                task.abort();
            }
        });
    });
}

/// The graceful shutdown of every connection of `hub`, however it came in.
async fn wind_down(hub: &HubState, grace: Duration) {
    let members = hub.clients.all();
    tracing::info!(connections = members.len(), "shutting down");
    for member in &members {
        let _ = member.close(hubbub_proto::CloseCode::GOING_AWAY, "server shutdown");
    }
    drop(members);
    if tokio::time::timeout(grace, hub.emptied()).await.is_err() {
        let left = hub.clients.all();
        tracing::warn!(
            connections = left.len(),
            "grace period over: dropping connections"
        );
        for member in &left {
            member.queue.force("dropped at shutdown");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An open connection's task keeps the driver's box, the permit and
    /// the slot, never the opening's state or a second copy of the driver
    /// (which once cost every idle connection 670 bytes).
    #[tokio::test]
    async fn an_open_connection_task_stays_small() {
        let hub = crate::Hub::new(|_| {});
        let (a, _b) = tokio::io::duplex(64);
        let own = serve_stream(
            a,
            StreamInfo::default(),
            hub.service().clone(),
            Instant::now(),
            None,
        );
        assert!(size_of_val(&own) <= 96, "{}", size_of_val(&own));
        let (a, _b) = tokio::io::duplex(64);
        let embedded = hub.serve_stream(a, StreamInfo::default());
        assert!(size_of_val(&embedded) <= 96, "{}", size_of_val(&embedded));
        let request =
            hubbub_proto::handshake::Request::from_parts("GET", "/", 1, Default::default())
                .unwrap();
        let (a, _b) = tokio::io::duplex(64);
        let adopted = hub.serve_upgraded(a, crate::Upgraded::new(request, StreamInfo::default()));
        assert!(size_of_val(&adopted) <= 96, "{}", size_of_val(&adopted));
    }
}
