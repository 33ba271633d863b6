//! Accepting: the listeners' loop, TLS (and, with the `http2` feature,
//! HTTP/2 for TLS clients that choose it), and each accepted connection's
//! future ([`crate::task`]) handed to a connection set ([`crate::set`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::net::TcpListener;
use tokio::time::{Instant, timeout_at};

use crate::handshake::Service;
use crate::hub::HandshakePermit;
use crate::info::StreamInfo;
use crate::set::{Opening, SetStream, Sets};
use crate::task::{open_running, start_background};
use crate::tls::TlsConfig;

/// A listener and, for `wss://`, its TLS configuration.
pub(crate) type Listener = (TcpListener, Option<TlsConfig>);

/// A listener as the accept loop polls it: accepted sockets are not
/// registered with tokio (their connection set polls them).
type Polled = (AsyncFd<mio::net::TcpListener>, Option<TlsConfig>);

/// The opening of one accepted TCP connection (TLS, then the handshake),
/// boxed; it ends with the open connection's future, which takes its
/// place in the connection set (so an open connection keeps that one box,
/// not the opening's state or the arguments captured for it).
fn open_tcp(
    stream: SetStream,
    from: StreamInfo,
    peer: SocketAddr,
    tls: Option<TlsConfig>,
    service: Arc<Service>,
    permit: HandshakePermit,
) -> Opening {
    // One deadline for TLS, the request head, the hook and the `101`.
    let deadline = Instant::now() + service.config.handshake_timeout;
    match tls {
        None => Box::pin(open_running(stream, from, service, deadline, Some(permit))),
        Some(tls) => Box::pin(async move {
            match timeout_at(deadline, tls.acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    let from = from.secure(true);
                    #[cfg(feature = "http2")]
                    if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                        let http2: crate::socket::BoxFuture = Box::pin(crate::http2::serve(
                            stream,
                            from,
                            service,
                            deadline,
                            Some(permit),
                        ));
                        return Some(http2);
                    }
                    open_running(stream, from, service, deadline, Some(permit)).await
                }
                Ok(Err(e)) => {
                    tracing::info!(%peer, "TLS handshake failed: {e}");
                    None
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timeout: dropping connection");
                    None
                }
            }
        }),
    }
}

/// Waits for a connection on any listener; returns its index.
async fn accept_any(
    listeners: &[Polled],
) -> (usize, std::io::Result<(mio::net::TcpStream, SocketAddr)>) {
    std::future::poll_fn(|cx| {
        for (i, (listener, _)) in listeners.iter().enumerate() {
            loop {
                match listener.poll_read_ready(cx) {
                    Poll::Pending => break,
                    Poll::Ready(Err(e)) => return Poll::Ready((i, Err(e))),
                    Poll::Ready(Ok(mut ready)) => {
                        if let Ok(result) = ready.try_io(|l| l.get_ref().accept()) {
                            return Poll::Ready((i, result));
                        }
                    }
                }
            }
        }
        Poll::Pending
    })
    .await
}

/// The listeners as the accept loop polls them.
fn polled(listeners: Vec<Listener>) -> std::io::Result<Vec<Polled>> {
    listeners
        .into_iter()
        .map(|(listener, tls)| {
            let listener = mio::net::TcpListener::from_std(listener.into_std()?);
            Ok((crate::sys::register(listener)?, tls))
        })
        .collect()
}

/// Accepts on `listeners` until the hub's shutdown, then returns once
/// every connection has ended (the background shutdown closes them;
/// connections still open a grace period and two seconds later, handshakes
/// among them, are dropped).
///
/// # Errors
/// When the connection sets' `epoll` instances cannot be made or the
/// listeners registered (out of descriptors): nothing was served.
pub(crate) async fn run(listeners: Vec<Listener>, service: Arc<Service>) -> std::io::Result<()> {
    let hub = service.hub.clone();
    let config = &service.config;
    let mut sets = Sets::start()?;
    let listeners = polled(listeners)?;
    let mut backoff = Duration::from_millis(10);
    for (listener, tls) in &listeners {
        if let Ok(addr) = listener.get_ref().local_addr() {
            tracing::info!(%addr, tls = tls.is_some(), "listening");
        }
    }
    start_background(&service);
    loop {
        tokio::select! {
            () = hub.shutdown.cancelled() => break,
            (which, accepted) = accept_any(&listeners) => match accepted {
                Ok((stream, peer)) => {
                    backoff = Duration::from_millis(10);
                    // On a dual-stack listener, IPv4 clients arrive as
                    // IPv4-mapped IPv6: name (and count) them as IPv4.
                    let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
                    let Some(permit) = hub.handshake_permit(
                        peer.ip(),
                        config.max_handshakes,
                        config.max_handshakes_per_ip,
                    ) else {
                        // Silent sockets must not starve the others of
                        // descriptors: close it now.
                        hub.metrics.dropped_handshake();
                        tracing::debug!(%peer, "too many handshakes in progress: closed");
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let from = StreamInfo::new(peer).local(stream.local_addr().unwrap_or(peer));
                    let tls = listeners[which].1.clone();
                    let service = service.clone();
                    sets.accept(stream, Box::new(move |stream| {
                        open_tcp(stream, from, peer, tls, service, permit)
                    }));
                }
                Err(e) => {
                    // EMFILE and friends: wait instead of spinning.
                    tracing::warn!("accept failed: {e}; retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            },
        }
    }
    drop(listeners);
    let limit = config.shutdown_grace + Duration::from_secs(2);
    let dropped = sets.finish(limit).await;
    if dropped > 0 {
        tracing::warn!(connections = dropped, "connections still open: dropped");
    }
    tracing::info!("server stopped");
    Ok(())
}
